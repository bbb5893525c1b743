//! Synapse queries (`cg-synapse`) at any timestamp: a root's input and output synapses, the
//! connectivity matrix of a set of roots, a root's partners ranked by synapse count. Answers
//! are JSON (records) or CSV (`format=csv`, for `pandas.read_csv`), streamed, with no row
//! cap; `offset` and `limit` page through them (sorted by synapse ID, so pages are stable
//! at a fixed timestamp) and `X-Total-Count` says how many there are in all.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use cg_synapse::{Direction, Partner, ResolvedSynapse, SynapseError, SynapseStore};
use serde_json::json;

use super::body::{ids_field, path_id, IdFormat, Params, RawBody};
use super::error::{ApiError, ApiResult};
use super::{v1, Shared};

/// Rows per streamed piece of an answer.
const ROWS_PER_PIECE: usize = 4096;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route(&v1("/root/{root}/synapses"), get(root_synapses))
        .route(&v1("/root/{root}/synaptic_partners"), get(partners))
        .route(
            &v1("/synapses/connectivity"),
            get(connectivity).post(connectivity),
        )
}

impl From<SynapseError> for ApiError {
    fn from(e: SynapseError) -> ApiError {
        match e {
            SynapseError::Graph(g) => g.into(),
            e if e.is_not_found() => ApiError::not_found(e.to_string()),
            e if e.is_client_error() => ApiError::bad_request(e.to_string()),
            e => {
                tracing::error!("{e}");
                ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

fn format(p: &Params) -> ApiResult<Format> {
    match p.get("format").map(str::to_ascii_lowercase).as_deref() {
        None | Some("json") => Ok(Format::Json),
        Some("csv") => Ok(Format::Csv),
        Some(f) => Err(ApiError::bad_request(format!(
            "format={f:?}: expected json or csv"
        ))),
    }
}

fn direction(p: &Params) -> ApiResult<Direction> {
    Ok(Direction::parse(p.get("direction").unwrap_or("both"))?)
}

/// `offset` and `limit` applied to `n` rows: the range to send.
fn page(p: &Params, n: usize) -> ApiResult<std::ops::Range<usize>> {
    let offset = p.int::<usize>("offset")?.unwrap_or(0).min(n);
    let end = match p.int::<usize>("limit")? {
        Some(l) => offset.saturating_add(l).min(n),
        None => n,
    };
    Ok(offset..end)
}

/// Streams `rows[range]` as a JSON array or CSV with `header`, each row written by
/// `json_row` / `csv_row`.
fn stream<T: Send + Sync + 'static>(
    rows: Vec<T>,
    range: std::ops::Range<usize>,
    fmt: Format,
    header_line: &'static str,
    json_row: fn(&T, &IdFormat, &mut String),
    csv_row: fn(&T, &mut String),
    ids: IdFormat,
) -> Response {
    let total = rows.len();
    let rows = Arc::new(rows);
    let (start, end) = (range.start, range.end);
    let starts: Vec<usize> = (start..end).step_by(ROWS_PER_PIECE).collect();
    let head = match fmt {
        Format::Json => "[".to_string(),
        Format::Csv => format!("{header_line}\n"),
    };
    let tail = match fmt {
        Format::Json => "]\n",
        Format::Csv => "",
    };
    let pieces = futures::stream::iter(starts).map(move |s| {
        let mut out = String::with_capacity(ROWS_PER_PIECE * 160);
        for (k, r) in rows[s..(s + ROWS_PER_PIECE).min(end)].iter().enumerate() {
            match fmt {
                Format::Json => {
                    if s + k > start {
                        out.push(',');
                    }
                    json_row(r, &ids, &mut out);
                }
                Format::Csv => {
                    csv_row(r, &mut out);
                    out.push('\n');
                }
            }
        }
        Ok::<_, std::convert::Infallible>(Bytes::from(out))
    });
    use futures::StreamExt;
    let body = futures::stream::once(async move { Ok(Bytes::from(head)) })
        .chain(pieces)
        .chain(futures::stream::once(async move { Ok(Bytes::from(tail)) }));
    let mut resp = Response::new(Body::from_stream(body));
    let ctype = match fmt {
        Format::Json => "application/json",
        Format::Csv => "text/csv; charset=utf-8",
    };
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp.headers_mut()
        .insert("x-total-count", HeaderValue::from(total as u64));
    resp
}

const SYNAPSE_HEADER: &str = "id,pre_pt_position_x,pre_pt_position_y,pre_pt_position_z,\
post_pt_position_x,post_pt_position_y,post_pt_position_z,pre_pt_supervoxel_id,\
post_pt_supervoxel_id,pre_pt_root_id,post_pt_root_id,size,score";

fn synapse_json(s: &ResolvedSynapse, ids: &IdFormat, out: &mut String) {
    let v = json!({
        "id": ids.id(s.id),
        "pre_pt_position": s.pre,
        "post_pt_position": s.post,
        "pre_pt_supervoxel_id": ids.id(s.pre_sv),
        "post_pt_supervoxel_id": ids.id(s.post_sv),
        "pre_pt_root_id": ids.id(s.pre_root),
        "post_pt_root_id": ids.id(s.post_root),
        "size": s.size,
        "score": s.score,
    });
    let _ = write!(out, "{v}");
}

fn synapse_csv(s: &ResolvedSynapse, out: &mut String) {
    // `{:?}` writes a float with a point ("0.0"), so pandas reads the score column as float.
    let _ = write!(
        out,
        "{},{},{},{},{},{},{},{},{},{},{},{},{:?}",
        s.id,
        s.pre[0],
        s.pre[1],
        s.pre[2],
        s.post[0],
        s.post[1],
        s.post[2],
        s.pre_sv,
        s.post_sv,
        s.pre_root,
        s.post_root,
        s.size,
        s.score
    );
}

/// `GET .../root/{root}/synapses?direction=both|input|output&timestamp=&format=json|csv`
pub async fn root_synapses(
    State(st): State<Shared>,
    Path((table, root)): Path<(String, String)>,
    p: Params,
) -> ApiResult<Response> {
    let root = path_id(&root, "root")?;
    let (dir, fmt, ids) = (direction(&p)?, format(&p)?, p.ids()?);
    let at = p.timestamp("timestamp")?;
    let g = st.graph(&table).await?;
    let rows = SynapseStore::new(g).root_synapses(root, at, dir).await?;
    let range = page(&p, rows.len())?;
    Ok(stream(
        rows,
        range,
        fmt,
        SYNAPSE_HEADER,
        synapse_json,
        synapse_csv,
        ids,
    ))
}

const PARTNER_HEADER: &str = "partner_root_id,n_synapses,n_outputs,n_inputs,sum_size";

fn partner_json(p: &Partner, ids: &IdFormat, out: &mut String) {
    let v = json!({
        "partner_root_id": ids.id(p.root),
        "n_synapses": p.total(),
        "n_outputs": p.outputs,
        "n_inputs": p.inputs,
        "sum_size": p.size,
    });
    let _ = write!(out, "{v}");
}

fn partner_csv(p: &Partner, out: &mut String) {
    let _ = write!(
        out,
        "{},{},{},{},{}",
        p.root,
        p.total(),
        p.outputs,
        p.inputs,
        p.size
    );
}

/// `GET .../root/{root}/synaptic_partners?direction=&timestamp=&format=&limit=`: most
/// synapses first.
pub async fn partners(
    State(st): State<Shared>,
    Path((table, root)): Path<(String, String)>,
    p: Params,
) -> ApiResult<Response> {
    let root = path_id(&root, "root")?;
    let (dir, fmt, ids) = (direction(&p)?, format(&p)?, p.ids()?);
    let at = p.timestamp("timestamp")?;
    let g = st.graph(&table).await?;
    let rows = SynapseStore::new(g).partners(root, at, dir).await?;
    let range = page(&p, rows.len())?;
    Ok(stream(
        rows,
        range,
        fmt,
        PARTNER_HEADER,
        partner_json,
        partner_csv,
        ids,
    ))
}

/// The roots of a connectivity request: `{"root_ids": [...]}` in the body, or
/// `root_ids=1,2,3` in the query.
fn connectivity_roots(p: &Params, body: &RawBody) -> ApiResult<Vec<u64>> {
    if let Some(list) = p.get("root_ids") {
        return list
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                s.trim().parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("root_ids: {:?} is not a node ID", s.trim()))
                })
            })
            .collect();
    }
    if body.0.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "name the roots: a body {\"root_ids\": [...]} or root_ids=1,2,3 in the query",
        ));
    }
    ids_field(&body.json()?, "root_ids")
}

/// `GET|POST .../synapses/connectivity`: `counts[i][j]` synapses from `root_ids[i]` onto
/// `root_ids[j]` at `timestamp` (JSON), or CSV rows `pre_pt_root_id,post_pt_root_id,
/// n_synapses,sum_size` for the non-zero pairs.
pub async fn connectivity(
    State(st): State<Shared>,
    Path(table): Path<String>,
    p: Params,
    body: RawBody,
) -> ApiResult<Response> {
    let (fmt, ids) = (format(&p)?, p.ids()?);
    let roots = connectivity_roots(&p, &body)?;
    if roots.is_empty() {
        return Err(ApiError::bad_request("root_ids is empty"));
    }
    let at = p.timestamp("timestamp")?;
    let g = st.graph(&table).await?;
    let m = SynapseStore::new(g).connectivity(&roots, at).await?;
    match fmt {
        Format::Json => {
            let v = json!({
                "root_ids": ids.list(&m.roots),
                "counts": m.counts,
                "sizes": m.sizes,
            });
            Ok(super::body::json(&v))
        }
        Format::Csv => {
            let mut rows = Vec::new();
            for (i, &a) in m.roots.iter().enumerate() {
                for (j, &b) in m.roots.iter().enumerate() {
                    if m.counts[i][j] > 0 {
                        rows.push([a, b, m.counts[i][j], m.sizes[i][j]]);
                    }
                }
            }
            let range = 0..rows.len();
            Ok(stream(
                rows,
                range,
                fmt,
                "pre_pt_root_id,post_pt_root_id,n_synapses,sum_size",
                |_, _, _| {},
                |r, out| {
                    let _ = write!(out, "{},{},{},{}", r[0], r[1], r[2], r[3]);
                },
                ids,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn synapse_errors_map_to_statuses() {
        let status = |e: SynapseError| ApiError::from(e).status;
        assert_eq!(
            status(SynapseError::InvalidInput("x".into())),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(SynapseError::NotFound("x".into())),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(SynapseError::Graph(cg_graph::GraphError::NotFound(
                "x".into()
            ))),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(SynapseError::Corrupt("x".into())),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
