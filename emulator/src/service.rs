//! gRPC front of the store: Bigtable v2 data API and the table-admin subset, routed by path.
//!
//! The generated crates we use carry client code only, so requests are dispatched here by
//! method path onto tonic's `Grpc` codec driver. Unknown methods get UNIMPLEMENTED.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine as _;
use googleapis_tonic_google_bigtable_admin_v2::google::bigtable::admin::v2 as admin;
use googleapis_tonic_google_bigtable_v2::google::bigtable::v2 as pb;
use prost::Message;
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;
use tonic::server::{Grpc, NamedService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use crate::filter::CompiledFilter;
use crate::row::ReadCell;
use crate::store::{ReadSpec, Store, StoreError};

/// Largest message in either direction: ChunkedGraph reads can be large.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;
/// Rows are batched into responses of about this many bytes.
const RESPONSE_BYTES: usize = 1 << 20;
/// Values larger than this are split over several chunks, as Bigtable does.
const CHUNK_VALUE_BYTES: usize = 1 << 20;

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Status {
        match e {
            StoreError::NotFound(m) => Status::not_found(m),
            StoreError::AlreadyExists(m) => Status::already_exists(m),
            StoreError::InvalidArgument(m) => Status::invalid_argument(m),
            StoreError::FailedPrecondition(m) => Status::failed_precondition(m),
            StoreError::Unimplemented(m) => Status::unimplemented(m),
            e @ StoreError::Engine(_) => Status::internal(e.to_string()),
            e @ StoreError::Corrupt(_) => Status::data_loss(e.to_string()),
        }
    }
}

fn compile(f: &Option<pb::RowFilter>) -> Result<Option<CompiledFilter>, Status> {
    f.as_ref()
        .map(CompiledFilter::compile)
        .transpose()
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("worker failed: {e}")))?
        .map_err(Status::from)
}

/// Whether the client advertised reverse-scan support in the `bigtable-features` header.
fn reverse_scans_advertised<T>(req: &Request<T>) -> bool {
    let Some(v) = req.metadata().get("bigtable-features") else {
        return false;
    };
    let Ok(s) = v.to_str() else { return false };
    let s = s.trim_end_matches('=');
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .and_then(|b| pb::FeatureFlags::decode(b.as_slice()).ok())
        .is_some_and(|f| f.reverse_scans)
}

/// Turns one filtered row into response chunks.
fn push_row(out: &mut Vec<pb::read_rows_response::CellChunk>, key: &[u8], cells: Vec<ReadCell>) {
    use pb::read_rows_response::cell_chunk::RowStatus;
    use pb::read_rows_response::CellChunk;
    let n = cells.len();
    let mut prev: Option<(String, Vec<u8>)> = None;
    for (i, c) in cells.into_iter().enumerate() {
        let first = i == 0;
        let (family_name, qualifier) = match &prev {
            Some((f, q)) if *f == c.family && *q == c.qualifier => (None, None),
            Some((f, _)) if *f == c.family => (None, Some(c.qualifier.clone())),
            _ => (Some(c.family.clone()), Some(c.qualifier.clone())),
        };
        prev = Some((c.family, c.qualifier));
        let last_cell = i + 1 == n;
        let pieces: Vec<&[u8]> = if c.value.len() > CHUNK_VALUE_BYTES {
            c.value.chunks(CHUNK_VALUE_BYTES).collect()
        } else {
            vec![c.value.as_slice()]
        };
        let split = pieces.len() > 1;
        let np = pieces.len();
        for (j, piece) in pieces.into_iter().enumerate() {
            let head = j == 0;
            let tail = j + 1 == np;
            out.push(CellChunk {
                row_key: if first && head {
                    key.to_vec()
                } else {
                    Vec::new()
                },
                family_name: if head { family_name.clone() } else { None },
                qualifier: if head { qualifier.clone() } else { None },
                timestamp_micros: if head { c.ts } else { 0 },
                labels: if head { c.labels.clone() } else { Vec::new() },
                value: piece.to_vec(),
                value_size: if split && !tail {
                    c.value.len() as i32
                } else {
                    0
                },
                row_status: (last_cell && tail).then_some(RowStatus::CommitRow(true)),
            });
        }
    }
}

#[derive(Clone)]
pub struct BigtableService {
    store: Arc<Store>,
}

impl BigtableService {
    pub fn new(store: Arc<Store>) -> Self {
        BigtableService { store }
    }

    async fn read_rows(
        &self,
        req: Request<pb::ReadRowsRequest>,
    ) -> Result<Response<ReceiverStream<Result<pb::ReadRowsResponse, Status>>>, Status> {
        let reverse_ok = reverse_scans_advertised(&req);
        let r = req.into_inner();
        if r.reversed && !reverse_ok {
            return Err(Status::invalid_argument(
                "reversed scans need the client to advertise reverse_scans in the bigtable-features header",
            ));
        }
        if r.rows_limit < 0 {
            return Err(Status::invalid_argument(format!(
                "rows_limit must not be negative, got {}",
                r.rows_limit
            )));
        }
        let filter = compile(&r.filter)?;
        // Fail before the stream starts, so a missing table is an immediate NOT_FOUND.
        self.store.get_table(&r.table_name)?;
        let store = self.store.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let spec = ReadSpec {
                rows: r.rows.as_ref(),
                filter: filter.as_ref(),
                limit: r.rows_limit as u64,
                reversed: r.reversed,
            };
            let mut chunks = Vec::new();
            let mut bytes = 0usize;
            let res = store.read_rows(&r.table_name, &spec, |key, cells| {
                bytes += key.len()
                    + cells
                        .iter()
                        .map(|c| c.value.len() + c.qualifier.len() + 16)
                        .sum::<usize>();
                push_row(&mut chunks, key, cells);
                if bytes >= RESPONSE_BYTES {
                    bytes = 0;
                    let msg = pb::ReadRowsResponse {
                        chunks: std::mem::take(&mut chunks),
                        ..Default::default()
                    };
                    // A closed channel means the client went away: stop scanning.
                    return tx.blocking_send(Ok(msg)).is_ok();
                }
                true
            });
            match res {
                Ok(()) if !chunks.is_empty() => {
                    let _ = tx.blocking_send(Ok(pb::ReadRowsResponse {
                        chunks,
                        ..Default::default()
                    }));
                }
                Ok(()) => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(Status::from(e)));
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn sample_row_keys(
        &self,
        req: Request<pb::SampleRowKeysRequest>,
    ) -> Result<
        Response<tokio_stream::Iter<std::vec::IntoIter<Result<pb::SampleRowKeysResponse, Status>>>>,
        Status,
    > {
        let r = req.into_inner();
        let store = self.store.clone();
        let samples = blocking(move || store.sample_row_keys(&r.table_name, 64 << 20)).await?;
        let msgs: Vec<_> = samples
            .into_iter()
            .map(|(row_key, offset_bytes)| {
                Ok(pb::SampleRowKeysResponse {
                    row_key,
                    offset_bytes,
                })
            })
            .collect();
        Ok(Response::new(tokio_stream::iter(msgs)))
    }

    async fn mutate_row(
        &self,
        req: Request<pb::MutateRowRequest>,
    ) -> Result<Response<pb::MutateRowResponse>, Status> {
        let r = req.into_inner();
        let store = self.store.clone();
        blocking(move || store.mutate_row(&r.table_name, &r.row_key, &r.mutations)).await?;
        Ok(Response::new(pb::MutateRowResponse {}))
    }

    async fn mutate_rows(
        &self,
        req: Request<pb::MutateRowsRequest>,
    ) -> Result<Response<tokio_stream::Once<Result<pb::MutateRowsResponse, Status>>>, Status> {
        let r = req.into_inner();
        let store = self.store.clone();
        let results = blocking(move || store.mutate_rows(&r.table_name, &r.entries)).await?;
        let entries = results
            .into_iter()
            .enumerate()
            .map(|(i, res)| {
                let status = match res {
                    Ok(()) => googleapis_tonic_google_bigtable_v2::google::rpc::Status::default(),
                    Err(e) => {
                        let s = Status::from(e);
                        googleapis_tonic_google_bigtable_v2::google::rpc::Status {
                            code: s.code() as i32,
                            message: s.message().to_string(),
                            details: vec![],
                        }
                    }
                };
                pb::mutate_rows_response::Entry {
                    index: i as i64,
                    status: Some(status),
                }
            })
            .collect();
        Ok(Response::new(tokio_stream::once(Ok(
            pb::MutateRowsResponse {
                entries,
                rate_limit_info: None,
            },
        ))))
    }

    async fn check_and_mutate_row(
        &self,
        req: Request<pb::CheckAndMutateRowRequest>,
    ) -> Result<Response<pb::CheckAndMutateRowResponse>, Status> {
        let r = req.into_inner();
        let pred = compile(&r.predicate_filter)?;
        let store = self.store.clone();
        let matched = blocking(move || {
            store.check_and_mutate_row(
                &r.table_name,
                &r.row_key,
                pred.as_ref(),
                &r.true_mutations,
                &r.false_mutations,
            )
        })
        .await?;
        Ok(Response::new(pb::CheckAndMutateRowResponse {
            predicate_matched: matched,
        }))
    }

    async fn read_modify_write_row(
        &self,
        req: Request<pb::ReadModifyWriteRowRequest>,
    ) -> Result<Response<pb::ReadModifyWriteRowResponse>, Status> {
        let r = req.into_inner();
        let store = self.store.clone();
        let row =
            blocking(move || store.read_modify_write_row(&r.table_name, &r.row_key, &r.rules))
                .await?;
        Ok(Response::new(pb::ReadModifyWriteRowResponse {
            row: Some(row),
        }))
    }

    async fn ping_and_warm(
        &self,
        _req: Request<pb::PingAndWarmRequest>,
    ) -> Result<Response<pb::PingAndWarmResponse>, Status> {
        Ok(Response::new(pb::PingAndWarmResponse {}))
    }
}

#[derive(Clone)]
pub struct TableAdminService {
    store: Arc<Store>,
}

impl TableAdminService {
    pub fn new(store: Arc<Store>) -> Self {
        TableAdminService { store }
    }

    async fn create_table(
        &self,
        req: Request<admin::CreateTableRequest>,
    ) -> Result<Response<admin::Table>, Status> {
        let r = req.into_inner();
        check_table_id(&r.table_id)?;
        let name = format!("{}/tables/{}", r.parent, r.table_id);
        let store = self.store.clone();
        Ok(Response::new(
            blocking(move || store.create_table(&name, r.table)).await?,
        ))
    }

    async fn get_table(
        &self,
        req: Request<admin::GetTableRequest>,
    ) -> Result<Response<admin::Table>, Status> {
        let r = req.into_inner();
        let store = self.store.clone();
        Ok(Response::new(
            blocking(move || store.get_table(&r.name)).await?,
        ))
    }

    async fn list_tables(
        &self,
        req: Request<admin::ListTablesRequest>,
    ) -> Result<Response<admin::ListTablesResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(admin::ListTablesResponse {
            tables: self.store.list_tables(&r.parent),
            next_page_token: String::new(),
        }))
    }

    async fn delete_table(
        &self,
        req: Request<admin::DeleteTableRequest>,
    ) -> Result<Response<()>, Status> {
        let r = req.into_inner();
        let store = self.store.clone();
        blocking(move || store.delete_table(&r.name)).await?;
        Ok(Response::new(()))
    }

    async fn modify_column_families(
        &self,
        req: Request<admin::ModifyColumnFamiliesRequest>,
    ) -> Result<Response<admin::Table>, Status> {
        let r = req.into_inner();
        let store = self.store.clone();
        Ok(Response::new(
            blocking(move || store.modify_column_families(&r.name, &r.modifications)).await?,
        ))
    }

    async fn drop_row_range(
        &self,
        req: Request<admin::DropRowRangeRequest>,
    ) -> Result<Response<()>, Status> {
        use admin::drop_row_range_request::Target;
        let r = req.into_inner();
        let store = self.store.clone();
        let prefix = match r.target {
            Some(Target::RowKeyPrefix(p)) => Some(p),
            Some(Target::DeleteAllDataFromTable(true)) => None,
            _ => {
                return Err(Status::invalid_argument(
                    "drop_row_range needs row_key_prefix or delete_all_data_from_table",
                ))
            }
        };
        blocking(move || store.drop_row_range(&r.name, prefix.as_deref())).await?;
        Ok(Response::new(()))
    }

    async fn generate_consistency_token(
        &self,
        req: Request<admin::GenerateConsistencyTokenRequest>,
    ) -> Result<Response<admin::GenerateConsistencyTokenResponse>, Status> {
        let r = req.into_inner();
        self.store.get_table(&r.name)?;
        Ok(Response::new(admin::GenerateConsistencyTokenResponse {
            consistency_token: format!("token-{}", r.name),
        }))
    }

    async fn check_consistency(
        &self,
        req: Request<admin::CheckConsistencyRequest>,
    ) -> Result<Response<admin::CheckConsistencyResponse>, Status> {
        let r = req.into_inner();
        self.store.get_table(&r.name)?;
        // One replica, writes durable on acknowledgement: always consistent.
        Ok(Response::new(admin::CheckConsistencyResponse {
            consistent: true,
        }))
    }
}

fn check_table_id(id: &str) -> Result<(), Status> {
    let mut chars = id.chars();
    let ok = id.len() <= 50
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "invalid table id {id:?}: use 1-50 characters from [_a-zA-Z0-9][-_.a-zA-Z0-9]*"
        )))
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

fn grpc<Resp, Req>() -> Grpc<ProstCodec<Resp, Req>>
where
    Resp: Message + Send + 'static,
    Req: Message + Default + Send + 'static,
{
    Grpc::new(ProstCodec::default())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
}

macro_rules! unary {
    ($svc:expr, $req:expr, $method:ident, $Req:ty, $Resp:ty) => {{
        let svc = $svc.clone();
        Box::pin(async move {
            let f = tower::service_fn(move |r: Request<$Req>| {
                let svc = svc.clone();
                async move { svc.$method(r).await }
            });
            Ok(grpc::<$Resp, $Req>().unary(f, $req).await)
        }) as BoxFuture
    }};
}

macro_rules! streaming {
    ($svc:expr, $req:expr, $method:ident, $Req:ty, $Resp:ty) => {{
        let svc = $svc.clone();
        Box::pin(async move {
            let f = tower::service_fn(move |r: Request<$Req>| {
                let svc = svc.clone();
                async move { svc.$method(r).await }
            });
            Ok(grpc::<$Resp, $Req>().server_streaming(f, $req).await)
        }) as BoxFuture
    }};
}

fn unimplemented(path: &str) -> BoxFuture {
    let status = Status::unimplemented(format!(
        "{path} is not implemented by the chunkedgraph emulator"
    ));
    Box::pin(async move { Ok(status.into_http()) })
}

impl tower::Service<http::Request<Body>> for BigtableService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> BoxFuture {
        let path = req.uri().path().to_string();
        match path.rsplit('/').next().unwrap_or_default() {
            "ReadRows" => streaming!(
                self,
                req,
                read_rows,
                pb::ReadRowsRequest,
                pb::ReadRowsResponse
            ),
            "SampleRowKeys" => streaming!(
                self,
                req,
                sample_row_keys,
                pb::SampleRowKeysRequest,
                pb::SampleRowKeysResponse
            ),
            "MutateRow" => unary!(
                self,
                req,
                mutate_row,
                pb::MutateRowRequest,
                pb::MutateRowResponse
            ),
            "MutateRows" => streaming!(
                self,
                req,
                mutate_rows,
                pb::MutateRowsRequest,
                pb::MutateRowsResponse
            ),
            "CheckAndMutateRow" => unary!(
                self,
                req,
                check_and_mutate_row,
                pb::CheckAndMutateRowRequest,
                pb::CheckAndMutateRowResponse
            ),
            "ReadModifyWriteRow" => unary!(
                self,
                req,
                read_modify_write_row,
                pb::ReadModifyWriteRowRequest,
                pb::ReadModifyWriteRowResponse
            ),
            "PingAndWarm" => unary!(
                self,
                req,
                ping_and_warm,
                pb::PingAndWarmRequest,
                pb::PingAndWarmResponse
            ),
            _ => unimplemented(&path),
        }
    }
}

impl NamedService for BigtableService {
    const NAME: &'static str = "google.bigtable.v2.Bigtable";
}

impl tower::Service<http::Request<Body>> for TableAdminService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> BoxFuture {
        let path = req.uri().path().to_string();
        match path.rsplit('/').next().unwrap_or_default() {
            "CreateTable" => unary!(
                self,
                req,
                create_table,
                admin::CreateTableRequest,
                admin::Table
            ),
            "GetTable" => unary!(self, req, get_table, admin::GetTableRequest, admin::Table),
            "ListTables" => unary!(
                self,
                req,
                list_tables,
                admin::ListTablesRequest,
                admin::ListTablesResponse
            ),
            "DeleteTable" => unary!(self, req, delete_table, admin::DeleteTableRequest, ()),
            "ModifyColumnFamilies" => unary!(
                self,
                req,
                modify_column_families,
                admin::ModifyColumnFamiliesRequest,
                admin::Table
            ),
            "DropRowRange" => unary!(self, req, drop_row_range, admin::DropRowRangeRequest, ()),
            "GenerateConsistencyToken" => unary!(
                self,
                req,
                generate_consistency_token,
                admin::GenerateConsistencyTokenRequest,
                admin::GenerateConsistencyTokenResponse
            ),
            "CheckConsistency" => unary!(
                self,
                req,
                check_consistency,
                admin::CheckConsistencyRequest,
                admin::CheckConsistencyResponse
            ),
            _ => unimplemented(&path),
        }
    }
}

impl NamedService for TableAdminService {
    const NAME: &'static str = "google.bigtable.admin.v2.BigtableTableAdmin";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(f: &str, q: &[u8], ts: i64, v: Vec<u8>) -> ReadCell {
        ReadCell {
            family: f.into(),
            qualifier: q.to_vec(),
            ts,
            value: v,
            labels: vec![],
        }
    }

    #[test]
    fn chunks_carry_family_and_qualifier_only_on_change() {
        let mut out = Vec::new();
        push_row(
            &mut out,
            b"k",
            vec![
                cell("a", b"q", 2000, b"x".to_vec()),
                cell("a", b"q", 1000, b"y".to_vec()),
                cell("b", b"q", 1000, b"z".to_vec()),
            ],
        );
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].row_key, b"k");
        assert_eq!(out[0].family_name.as_deref(), Some("a"));
        assert!(
            out[1].family_name.is_none() && out[1].qualifier.is_none() && out[1].row_key.is_empty()
        );
        assert_eq!(out[2].family_name.as_deref(), Some("b"));
        assert!(out[2].row_status.is_some() && out[1].row_status.is_none());
    }

    #[test]
    fn large_values_are_split() {
        let mut out = Vec::new();
        let big = vec![7u8; CHUNK_VALUE_BYTES * 2 + 5];
        push_row(&mut out, b"k", vec![cell("a", b"q", 0, big.clone())]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].value_size as usize, big.len());
        assert_eq!(out[2].value_size, 0);
        let joined: Vec<u8> = out.iter().flat_map(|c| c.value.clone()).collect();
        assert_eq!(joined, big);
        assert!(out[2].row_status.is_some());
    }
}
