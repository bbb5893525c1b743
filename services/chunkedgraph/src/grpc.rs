//! `chunkedgraph serve`'s gRPC API (`proto/chunkedgraph.proto`, package `chunkedgraph.v1`):
//! the HTTP API's lookups, edits and history over the same table cache, plus streamed bulk
//! root lookups and a stream of finished edits.
//!
//! Everything goes through `cg_graph`; errors become gRPC statuses whose messages are the
//! library's (see [`graph_status`]).

use std::pin::Pin;
use std::time::Duration;

use cg_bigtable::mutation;
use cg_graph::edit::{EditOptions, EditResult, Point};
use cg_graph::events::EditEvent;
use cg_graph::query::RootQuery;
use cg_graph::{ChunkedGraph, GraphError};
use cg_ids::{Geometry, VoxelBox};
use futures::{Stream, StreamExt};
use tokio::sync::{broadcast, watch};
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::server::Shared;

mod synapses;

/// The code generated from `proto/chunkedgraph.proto`.
pub mod proto {
    tonic::include_proto!("chunkedgraph.v1");
}

use proto::chunked_graph_server::{ChunkedGraph as ChunkedGraphApi, ChunkedGraphServer};

/// The largest message either way: 8M IDs in one unary `GetRoots` (the HTTP body limit is
/// 32 MiB). More IDs than that belong in `StreamRoots`.
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// `StreamRoots` batches looked up at once; answers still go out in request order.
const STREAM_BATCHES_IN_FLIGHT: usize = 4;

/// PyChunkedGraph refuses merges whose points lie more than this many chunks apart.
const DEFAULT_MERGE_DISTANCE_CHUNKS: u32 = 3;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The gRPC service over the server's shared table cache.
pub struct Service {
    state: Shared,
    /// Turns true when the server shuts down: edit subscriptions, which never end on their
    /// own, end then so that graceful shutdown does not wait for them forever.
    shutdown: watch::Receiver<bool>,
}

/// Serves the API on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Shared,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let service = ChunkedGraphServer::new(Service {
        state,
        shutdown: shutdown.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        // Subscribers may sit idle for hours; keepalives find the dead ones.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, stopped(shutdown))
        .await?;
    Ok(())
}

/// Resolves once `shutdown` turns true.
pub(crate) async fn stopped(mut shutdown: watch::Receiver<bool>) {
    // A dropped sender means the server is going away too.
    let _ = shutdown.wait_for(|&s| s).await;
}

/// The status for a library error. Bad input is the caller's to fix; a conflict (a root
/// locked by another edit, or replaced meanwhile) wrote nothing and the same call can be
/// sent again, which is what UNAVAILABLE tells gRPC clients and their retry policies.
pub fn graph_status(e: GraphError) -> Status {
    let code = match &e {
        GraphError::NotFound(_) => Code::NotFound,
        GraphError::Id(_) | GraphError::InvalidInput(_) => Code::InvalidArgument,
        GraphError::Conflict(_) => Code::Unavailable,
        GraphError::Storage(s) => match s.code() {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted => Code::Unavailable,
            _ => Code::Internal,
        },
        GraphError::Corrupt(_) => Code::Internal,
    };
    match code {
        Code::Internal => tracing::error!("{e}"),
        Code::Unavailable => tracing::info!("{e}"),
        _ => {}
    }
    Status::new(code, e.to_string())
}

fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}

/// A request timestamp: 0 is "now" (`None`), negative is refused.
fn timestamp(micros: i64, what: &str) -> Result<Option<i64>, Status> {
    match micros {
        0 => Ok(None),
        t if t > 0 => Ok(Some(t)),
        t => Err(invalid(format!(
            "{what}={t} is not a time: send µs since the UNIX epoch (0: now)"
        ))),
    }
}

/// A request layer: 0 is "not given".
fn layer(l: u32, what: &str, g: &Geometry) -> Result<Option<u8>, Status> {
    match u8::try_from(l) {
        Ok(0) => Ok(None),
        Ok(l) if l <= g.n_layers => Ok(Some(l)),
        _ => Err(invalid(format!(
            "{what}={l} is outside this graph's layers 1..={}",
            g.n_layers
        ))),
    }
}

/// A dataset voxel box as the library's volume-relative one, clipped to the volume.
fn voxel_box(b: &proto::BoundingBox, g: &Geometry) -> Result<VoxelBox, Status> {
    if b.min.len() != 3 || b.max.len() != 3 {
        return Err(invalid(format!(
            "bounds need three coordinates in min and in max; got {} and {}",
            b.min.len(),
            b.max.len()
        )));
    }
    let mut out = VoxelBox::default();
    for d in 0..3 {
        if b.max[d] < b.min[d] {
            return Err(invalid(format!(
                "bounds: the upper end of axis {d} ({}) is below its lower end ({})",
                b.max[d], b.min[d]
            )));
        }
        let size = i64::try_from(g.volume_size[d]).unwrap_or(i64::MAX);
        // Clamped to [0, size], so the cast cannot wrap.
        let rel = |v: i64| v.saturating_sub(g.voxel_offset[d]).clamp(0, size) as u64;
        out.min[d] = rel(b.min[d]);
        out.max[d] = rel(b.max[d]);
    }
    Ok(out)
}

fn point(p: &proto::Point) -> Point {
    Point {
        supervoxel: p.supervoxel_id,
        position_nm: [p.x, p.y, p.z],
    }
}

fn edges(pairs: &[[u64; 2]]) -> Vec<proto::Edge> {
    pairs
        .iter()
        .map(|e| proto::Edge { a: e[0], b: e[1] })
        .collect()
}

fn edit_response(r: EditResult) -> proto::EditResponse {
    proto::EditResponse {
        operation_id: r.operation_id,
        timestamp_micros: r.timestamp_micros,
        old_root_ids: r.old_roots,
        new_root_ids: r.new_roots,
        new_l2_ids: r.new_l2_ids,
        added_edges: edges(&r.added_edges),
        removed_edges: edges(&r.removed_edges),
    }
}

fn edit_event(e: EditEvent, missed: u64) -> proto::EditEvent {
    proto::EditEvent {
        table: e.table,
        operation_id: e.operation_id,
        timestamp_micros: e.timestamp_micros,
        kind: e.kind,
        old_root_ids: e.old_roots,
        new_root_ids: e.new_roots,
        new_l2_ids: e.new_l2_ids,
        recovered: e.recovered,
        missed,
    }
}

/// The editing user: the request's, else the `x-user-id` metadata, else `anonymous` (as the
/// HTTP API's `X-User-Id`).
fn user_of<T>(req: &Request<T>, given: &str) -> String {
    if !given.is_empty() {
        return given.to_string();
    }
    req.metadata()
        .get("x-user-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .unwrap_or("anonymous")
        .to_string()
}

/// Roots in input order; with `fail_to_zero`, unknown IDs and IDs this graph cannot hold
/// (0, wrong layer or chunk) give 0 instead of failing.
async fn lookup_roots(g: &ChunkedGraph, ids: &[u64], q: &RootQuery) -> Result<Vec<u64>, Status> {
    if !q.fail_to_zero {
        return g.roots(ids, q).await.map_err(graph_status);
    }
    let valid: Vec<usize> = (0..ids.len())
        .filter(|&i| g.geometry().check(ids[i]).is_ok())
        .collect();
    let sub: Vec<u64> = valid.iter().map(|&i| ids[i]).collect();
    let found = g.roots(&sub, q).await.map_err(graph_status)?;
    let mut out = vec![0u64; ids.len()];
    for (&i, r) in valid.iter().zip(found) {
        out[i] = r;
    }
    Ok(out)
}

impl Service {
    /// The graph in `table`, opened (and recovered) on first use, shared with HTTP.
    async fn graph(&self, table: &str) -> Result<ChunkedGraph, Status> {
        self.state.graph(table).await.map_err(|e| {
            let code = match e.status.as_u16() {
                400 => Code::InvalidArgument,
                404 => Code::NotFound,
                503 => Code::Unavailable,
                _ => Code::Internal,
            };
            Status::new(code, e.message)
        })
    }
}

/// Checks that a later `StreamRoots` message agrees with the first on the stream's settings.
fn same_settings(
    first: &proto::StreamRootsRequest,
    m: &proto::StreamRootsRequest,
) -> Result<(), Status> {
    let differs = (!m.table.is_empty() && m.table != first.table)
        || (m.timestamp_micros != 0 && m.timestamp_micros != first.timestamp_micros)
        || (m.stop_layer != 0 && m.stop_layer != first.stop_layer)
        || (m.fail_to_zero && !first.fail_to_zero);
    if differs {
        return Err(invalid(
            "StreamRoots: table, timestamp_micros, stop_layer and fail_to_zero come from the \
             first message; a later message set them differently",
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl ChunkedGraphApi for Service {
    async fn get_root(
        &self,
        req: Request<proto::GetRootRequest>,
    ) -> Result<Response<proto::GetRootResponse>, Status> {
        let r = req.into_inner();
        let g = self.graph(&r.table).await?;
        let q = RootQuery {
            at: timestamp(r.timestamp_micros, "timestamp_micros")?,
            stop_layer: layer(r.stop_layer, "stop_layer", g.geometry())?,
            ..Default::default()
        };
        let roots = g.roots(&[r.node_id], &q).await.map_err(graph_status)?;
        Ok(Response::new(proto::GetRootResponse { root_id: roots[0] }))
    }

    async fn get_roots(
        &self,
        req: Request<proto::GetRootsRequest>,
    ) -> Result<Response<proto::GetRootsResponse>, Status> {
        let r = req.into_inner();
        let g = self.graph(&r.table).await?;
        let q = RootQuery {
            at: timestamp(r.timestamp_micros, "timestamp_micros")?,
            stop_layer: layer(r.stop_layer, "stop_layer", g.geometry())?,
            fail_to_zero: r.fail_to_zero,
            ..Default::default()
        };
        let root_ids = lookup_roots(&g, &r.node_ids, &q).await?;
        Ok(Response::new(proto::GetRootsResponse { root_ids }))
    }

    type StreamRootsStream = BoxStream<proto::StreamRootsResponse>;

    async fn stream_roots(
        &self,
        req: Request<Streaming<proto::StreamRootsRequest>>,
    ) -> Result<Response<Self::StreamRootsStream>, Status> {
        let mut input = req.into_inner();
        let Some(first) = input.message().await? else {
            return Ok(Response::new(Box::pin(futures::stream::empty())));
        };
        let g = self.graph(&first.table).await?;
        // "Now" is fixed here, so every batch reads the same snapshot even while edits land.
        let at = timestamp(first.timestamp_micros, "timestamp_micros")?
            .unwrap_or_else(mutation::now_micros);
        let q = RootQuery {
            at: Some(at),
            stop_layer: layer(first.stop_layer, "stop_layer", g.geometry())?,
            fail_to_zero: first.fail_to_zero,
            ..Default::default()
        };
        let settings = proto::StreamRootsRequest {
            node_ids: Vec::new(),
            ..first.clone()
        };
        let batches = futures::stream::once(async move { Ok(first) })
            .chain(input)
            .map(move |m| {
                let m = m?;
                same_settings(&settings, &m)?;
                Ok::<_, Status>(m.node_ids)
            })
            // Each batch's position in the whole stream.
            .scan(0u64, |next, batch| {
                let batch = batch.map(|ids| {
                    let offset = *next;
                    *next += ids.len() as u64;
                    (offset, ids)
                });
                futures::future::ready(Some(batch))
            });
        let answers = batches
            .map(move |batch| {
                let g = g.clone();
                async move {
                    let (offset, ids) = batch?;
                    let root_ids = lookup_roots(&g, &ids, &q).await?;
                    Ok(proto::StreamRootsResponse { root_ids, offset })
                }
            })
            .buffered(STREAM_BATCHES_IN_FLIGHT)
            // The first failure ends the stream: later answers would leave a gap.
            .scan(false, |failed, answer: Result<_, Status>| {
                let out = if *failed {
                    None
                } else {
                    *failed = answer.is_err();
                    Some(answer)
                };
                futures::future::ready(out)
            });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn get_children(
        &self,
        req: Request<proto::GetChildrenRequest>,
    ) -> Result<Response<proto::GetChildrenResponse>, Status> {
        let r = req.into_inner();
        let g = self.graph(&r.table).await?;
        let children = g.children(&[r.node_id]).await.map_err(graph_status)?;
        Ok(Response::new(proto::GetChildrenResponse {
            children_ids: children[0].ids.clone(),
        }))
    }

    async fn get_leaves(
        &self,
        req: Request<proto::GetLeavesRequest>,
    ) -> Result<Response<proto::GetLeavesResponse>, Status> {
        let r = req.into_inner();
        let g = self.graph(&r.table).await?;
        let stop = layer(r.stop_layer, "stop_layer", g.geometry())?.unwrap_or(1);
        let bbox = r
            .bounds
            .as_ref()
            .map(|b| voxel_box(b, g.geometry()))
            .transpose()?;
        let leaf_ids = g
            .leaves(r.node_id, bbox, stop)
            .await
            .map_err(graph_status)?;
        Ok(Response::new(proto::GetLeavesResponse { leaf_ids }))
    }

    async fn merge(
        &self,
        req: Request<proto::MergeRequest>,
    ) -> Result<Response<proto::EditResponse>, Status> {
        let user = user_of(&req, &req.get_ref().user);
        let r = req.into_inner();
        let [a, b] = r.points.as_slice() else {
            return Err(invalid(format!(
                "a merge takes exactly two points, one in each object; got {}",
                r.points.len()
            )));
        };
        let g = self.graph(&r.table).await?;
        let opts = EditOptions {
            max_merge_distance_chunks: match r.max_distance_chunks {
                0 => DEFAULT_MERGE_DISTANCE_CHUNKS,
                n => n,
            },
            ..Default::default()
        };
        let done = g
            .merge(&user, point(a), point(b), &opts)
            .await
            .map_err(graph_status)?;
        Ok(Response::new(edit_response(done)))
    }

    async fn split(
        &self,
        req: Request<proto::SplitRequest>,
    ) -> Result<Response<proto::EditResponse>, Status> {
        let user = user_of(&req, &req.get_ref().user);
        let r = req.into_inner();
        let opts = EditOptions::default();
        if !r.edges.is_empty() {
            if !r.sources.is_empty() || !r.sinks.is_empty() {
                return Err(invalid(
                    "a split takes either edges to remove or sources and sinks, not both",
                ));
            }
            if let Some(e) = r.edges.iter().find(|e| e.a == e.b) {
                return Err(invalid(format!(
                    "edge {} – {} is a self-loop; there is nothing to remove",
                    e.a, e.b
                )));
            }
            let pairs: Vec<[u64; 2]> = r.edges.iter().map(|e| [e.a, e.b]).collect();
            let g = self.graph(&r.table).await?;
            let done = g
                .split_edges(&user, &pairs, &opts)
                .await
                .map_err(graph_status)?;
            return Ok(Response::new(edit_response(done)));
        }
        let sources: Vec<Point> = r.sources.iter().map(point).collect();
        let sinks: Vec<Point> = r.sinks.iter().map(point).collect();
        let g = self.graph(&r.table).await?;
        let done = g
            .multicut(&user, &sources, &sinks, &opts)
            .await
            .map_err(graph_status)?;
        Ok(Response::new(edit_response(done)))
    }

    async fn split_preview(
        &self,
        req: Request<proto::SplitPreviewRequest>,
    ) -> Result<Response<proto::SplitPreviewResponse>, Status> {
        let r = req.into_inner();
        let sources: Vec<Point> = r.sources.iter().map(point).collect();
        let sinks: Vec<Point> = r.sinks.iter().map(point).collect();
        let g = self.graph(&r.table).await?;
        let p = g
            .split_preview(&sources, &sinks, &EditOptions::default())
            .await
            .map_err(graph_status)?;
        Ok(Response::new(proto::SplitPreviewResponse {
            source_side: p.source_side,
            sink_side: p.sink_side,
            cut_edges: edges(&p.cut_edges),
        }))
    }

    async fn undo(
        &self,
        req: Request<proto::OperationRequest>,
    ) -> Result<Response<proto::EditResponse>, Status> {
        let user = user_of(&req, &req.get_ref().user);
        let r = req.into_inner();
        let g = self.graph(&r.table).await?;
        let done = g
            .undo(&user, r.operation_id, &EditOptions::default())
            .await
            .map_err(graph_status)?;
        Ok(Response::new(edit_response(done)))
    }

    async fn redo(
        &self,
        req: Request<proto::OperationRequest>,
    ) -> Result<Response<proto::EditResponse>, Status> {
        let user = user_of(&req, &req.get_ref().user);
        let r = req.into_inner();
        let g = self.graph(&r.table).await?;
        let done = g
            .redo(&user, r.operation_id, &EditOptions::default())
            .await
            .map_err(graph_status)?;
        Ok(Response::new(edit_response(done)))
    }

    async fn is_latest_roots(
        &self,
        req: Request<proto::IsLatestRootsRequest>,
    ) -> Result<Response<proto::IsLatestRootsResponse>, Status> {
        let r = req.into_inner();
        let at = timestamp(r.timestamp_micros, "timestamp_micros")?;
        let g = self.graph(&r.table).await?;
        let is_latest = g.is_latest(&r.node_ids, at).await.map_err(graph_status)?;
        Ok(Response::new(proto::IsLatestRootsResponse { is_latest }))
    }

    async fn root_timestamps(
        &self,
        req: Request<proto::RootTimestampsRequest>,
    ) -> Result<Response<proto::RootTimestampsResponse>, Status> {
        let r = req.into_inner();
        let at = timestamp(r.timestamp_micros, "timestamp_micros")?;
        let g = self.graph(&r.table).await?;
        let timestamps_micros = if r.latest {
            let t = at.unwrap_or_else(mutation::now_micros);
            let current = g
                .is_latest(&r.node_ids, Some(t))
                .await
                .map_err(graph_status)?;
            let gone: Vec<u64> = r
                .node_ids
                .iter()
                .zip(&current)
                .filter(|(_, &c)| !c)
                .map(|(&id, _)| id)
                .collect();
            let when = g
                .replaced_times(&gone, Some(t))
                .await
                .map_err(graph_status)?;
            r.node_ids
                .iter()
                .zip(&current)
                .map(|(id, &c)| {
                    if c {
                        t
                    } else {
                        when.get(id).copied().unwrap_or(t)
                    }
                })
                .collect()
        } else {
            g.node_timestamps(&r.node_ids).await.map_err(graph_status)?
        };
        Ok(Response::new(proto::RootTimestampsResponse {
            timestamps_micros,
        }))
    }

    async fn delta_roots(
        &self,
        req: Request<proto::DeltaRootsRequest>,
    ) -> Result<Response<proto::DeltaRootsResponse>, Status> {
        let r = req.into_inner();
        let start = timestamp(r.start_micros, "start_micros")?
            .ok_or_else(|| invalid("start_micros is required: the window's start in µs"))?;
        let end = timestamp(r.end_micros, "end_micros")?.unwrap_or_else(mutation::now_micros);
        if end < start {
            return Err(invalid(format!(
                "the window [{start}, {end}) µs ends before it starts"
            )));
        }
        let g = self.graph(&r.table).await?;
        let (new_roots, old_roots) = g.delta_roots(start, end).await.map_err(graph_status)?;
        Ok(Response::new(proto::DeltaRootsResponse {
            new_roots,
            old_roots,
        }))
    }

    async fn lineage_graph(
        &self,
        req: Request<proto::LineageGraphRequest>,
    ) -> Result<Response<proto::LineageGraphResponse>, Status> {
        let r = req.into_inner();
        let past = timestamp(r.past_micros, "past_micros")?;
        let future = timestamp(r.future_micros, "future_micros")?;
        let g = self.graph(&r.table).await?;
        let lineage = g
            .lineage_graph(&r.root_ids, past, future)
            .await
            .map_err(graph_status)?;
        Ok(Response::new(proto::LineageGraphResponse {
            nodes: lineage
                .nodes
                .iter()
                .map(|n| proto::LineageNode {
                    id: n.id,
                    timestamp_micros: n.timestamp_micros,
                    operation_id: n.operation_id.unwrap_or(0),
                    superseded_by: n.superseded_by.unwrap_or(0),
                })
                .collect(),
            edges: lineage
                .edges
                .iter()
                .map(|e| proto::LineageEdge {
                    source: e.source,
                    target: e.target,
                })
                .collect(),
        }))
    }

    async fn past_ids(
        &self,
        req: Request<proto::PastIdsRequest>,
    ) -> Result<Response<proto::PastIdsResponse>, Status> {
        let r = req.into_inner();
        let past = timestamp(r.past_micros, "past_micros")?;
        let g = self.graph(&r.table).await?;
        let m = g
            .past_id_mapping(&r.root_ids, past)
            .await
            .map_err(graph_status)?;
        Ok(Response::new(proto::PastIdsResponse {
            past_id_map: m
                .past_id_map
                .into_iter()
                .map(|(k, ids)| (k, proto::NodeList { ids }))
                .collect(),
            future_id_map: m.future_id_map.into_iter().collect(),
        }))
    }

    async fn change_log(
        &self,
        req: Request<proto::ChangeLogRequest>,
    ) -> Result<Response<proto::ChangeLogResponse>, Status> {
        let r = req.into_inner();
        let since = timestamp(r.since_micros, "since_micros")?;
        let g = self.graph(&r.table).await?;
        let log = g
            .change_log_with(r.root_id, since, r.filtered)
            .await
            .map_err(graph_status)?;
        Ok(Response::new(proto::ChangeLogResponse {
            n_mergers: log.n_mergers,
            n_splits: log.n_splits,
            operation_ids: log.operation_ids,
            past_ids: log.past_ids,
            user_info: log
                .user_info
                .into_iter()
                .map(|(u, e)| {
                    (
                        u,
                        proto::UserEdits {
                            n_mergers: e.n_mergers,
                            n_splits: e.n_splits,
                        },
                    )
                })
                .collect(),
        }))
    }

    async fn operation_details(
        &self,
        req: Request<proto::OperationDetailsRequest>,
    ) -> Result<Response<proto::OperationDetailsResponse>, Status> {
        let r = req.into_inner();
        let g = self.graph(&r.table).await?;
        let entries = g
            .operation_details(&r.operation_ids)
            .await
            .map_err(graph_status)?;
        let operations = entries
            .into_iter()
            .map(|e| {
                let target_operation_id = ["undone_operation", "redone_operation"]
                    .iter()
                    .find_map(|k| e.extra.get(*k).and_then(serde_json::Value::as_u64))
                    .unwrap_or(0);
                proto::Operation {
                    operation_id: e.operation_id,
                    timestamp_micros: e.timestamp_micros,
                    user: e.user,
                    kind: e.kind,
                    old_root_ids: e.old_roots,
                    new_root_ids: e.new_roots,
                    added_edges: edges(&e.added_edges),
                    removed_edges: edges(&e.removed_edges),
                    target_operation_id,
                    extra_json: serde_json::Value::Object(e.extra).to_string(),
                }
            })
            .collect();
        Ok(Response::new(proto::OperationDetailsResponse {
            operations,
        }))
    }

    type SubscribeEditsStream = BoxStream<proto::EditEvent>;

    async fn subscribe_edits(
        &self,
        req: Request<proto::SubscribeEditsRequest>,
    ) -> Result<Response<Self::SubscribeEditsStream>, Status> {
        let r = req.into_inner();
        let g = self.graph(&r.table).await?;
        // Subscribed before the response (and so its headers) goes out: a client that has
        // the response sees every edit finished after that.
        let events = g.subscribe();
        let shutdown = self.shutdown.clone();
        let stream = futures::stream::unfold(events, move |mut events| {
            let shutdown = shutdown.clone();
            async move {
                let mut missed = 0u64;
                loop {
                    let got = tokio::select! {
                        got = events.recv() => got,
                        () = stopped(shutdown.clone()) => return None,
                    };
                    match got {
                        Ok(e) => return Some((Ok(edit_event(e, missed)), events)),
                        Err(broadcast::error::RecvError::Lagged(n)) => missed += n,
                        // The graph is gone: nothing more will come.
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    type RootSynapsesStream = BoxStream<proto::SynapseBatch>;

    async fn root_synapses(
        &self,
        req: Request<proto::RootSynapsesRequest>,
    ) -> Result<Response<Self::RootSynapsesStream>, Status> {
        let r = req.into_inner();
        let g = self.graph(&r.table).await?;
        Ok(Response::new(synapses::root_synapses(g, r).await?))
    }

    async fn synaptic_partners(
        &self,
        req: Request<proto::SynapticPartnersRequest>,
    ) -> Result<Response<proto::SynapticPartnersResponse>, Status> {
        let r = req.into_inner();
        let g = self.graph(&r.table).await?;
        Ok(Response::new(synapses::partners(g, r).await?))
    }

    async fn connectivity(
        &self,
        req: Request<proto::ConnectivityRequest>,
    ) -> Result<Response<proto::ConnectivityResponse>, Status> {
        let r = req.into_inner();
        let g = self.graph(&r.table).await?;
        Ok(Response::new(synapses::connectivity(g, r).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_errors_map_to_codes() {
        let code = |e: GraphError| graph_status(e).code();
        assert_eq!(code(GraphError::NotFound("x".into())), Code::NotFound);
        assert_eq!(
            code(GraphError::InvalidInput("x".into())),
            Code::InvalidArgument
        );
        assert_eq!(
            code(GraphError::Id(cg_ids::IdError::NodeLayer(5, 0))),
            Code::InvalidArgument
        );
        assert_eq!(
            code(GraphError::Conflict("locked".into())),
            Code::Unavailable
        );
        assert_eq!(code(GraphError::Corrupt("x".into())), Code::Internal);
        let status = graph_status(GraphError::NotFound("node 5 does not exist".into()));
        assert_eq!(status.message(), "node 5 does not exist");
    }

    #[test]
    fn timestamps_and_layers() {
        assert_eq!(timestamp(0, "t").ok(), Some(None));
        assert_eq!(timestamp(5, "t").ok(), Some(Some(5)));
        assert_eq!(
            timestamp(-1, "t").map_err(|s| s.code()),
            Err(Code::InvalidArgument)
        );
    }

    #[test]
    fn stream_settings_must_agree() {
        let first = proto::StreamRootsRequest {
            table: "a".into(),
            timestamp_micros: 7,
            ..Default::default()
        };
        let same = proto::StreamRootsRequest::default();
        assert!(same_settings(&first, &same).is_ok());
        let other = proto::StreamRootsRequest {
            table: "b".into(),
            ..Default::default()
        };
        assert_eq!(
            same_settings(&first, &other).map_err(|s| s.code()),
            Err(Code::InvalidArgument)
        );
    }
}
