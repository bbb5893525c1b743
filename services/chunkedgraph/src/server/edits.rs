//! Edits: merge, split (multicut or given edges), split preview, undo, redo.
//!
//! Points arrive as `[id, x, y, z]` with the position in nm. PyChunkedGraph looks the
//! supervoxel up in the segmentation at that position when `id` is a root; this server does
//! not read the segmentation yet, so `id` must be the supervoxel (Neuroglancer sends it).

use axum::extract::{Path, State};
use axum::response::Response;
use cg_graph::edit::{EditOptions, EditResult, Point};
use cg_ids::{layer_of, Geometry};
use serde_json::{json, Value};

use super::auth::EditUser;
use super::body::{id_value, json, number_value, IdFormat, Params, RawBody};
use super::error::{ApiError, ApiResult};
use super::Shared;

/// PyChunkedGraph refuses merges whose points lie more than this many chunks apart.
const DEFAULT_CHEBYSHEV_CHUNKS: u32 = 3;

fn point(v: &Value, what: &str, g: &Geometry) -> ApiResult<Point> {
    let arr = v
        .as_array()
        .filter(|a| a.len() == 4)
        .ok_or_else(|| ApiError::bad_request(format!("{what}: {v} is not [id, x, y, z]")))?;
    let id = id_value(&arr[0], what)?;
    g.check(id).map_err(cg_graph::GraphError::from)?;
    if layer_of(id) != 1 {
        return Err(ApiError::bad_request(format!(
            "{what}: {id} is a layer-{} node; send the supervoxel ID under the point \
             (finding it from the position needs the segmentation, which this server does not read)",
            layer_of(id)
        )));
    }
    let mut position_nm = [0.0; 3];
    for (d, x) in position_nm.iter_mut().enumerate() {
        *x = number_value(&arr[d + 1], what)?;
    }
    Ok(Point {
        supervoxel: id,
        position_nm,
    })
}

fn points(body: &Value, key: &str, g: &Geometry) -> ApiResult<Vec<Point>> {
    body.get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "the JSON body needs a \"{key}\" list of [id, x, y, z]"
            ))
        })?
        .iter()
        .map(|v| point(v, key, g))
        .collect()
}

fn edit_answer(r: &EditResult, fmt: IdFormat) -> Response {
    json(&json!({
        "operation_id": fmt.id(r.operation_id),
        "new_root_ids": fmt.list(&r.new_roots),
    }))
}

/// Body `[[sv, x, y, z], [sv, x, y, z]]`.
pub async fn merge(
    State(st): State<Shared>,
    Path(table): Path<String>,
    EditUser(user): EditUser,
    p: Params,
    body: RawBody,
) -> ApiResult<Response> {
    let fmt = p.ids()?;
    let chunks = p
        .int::<u32>("chebyshev_distance")?
        .unwrap_or(DEFAULT_CHEBYSHEV_CHUNKS);
    let v = body.json()?;
    let g = st.graph(&table).await?;
    let pts = v
        .as_array()
        .filter(|a| a.len() == 2)
        .ok_or_else(|| {
            ApiError::bad_request(
                "a merge takes exactly two points: [[id, x, y, z], [id, x, y, z]]",
            )
        })?
        .iter()
        .map(|x| point(x, "merge point", g.geometry()))
        .collect::<ApiResult<Vec<_>>>()?;
    let opts = EditOptions {
        max_merge_distance_chunks: chunks,
        ..Default::default()
    };
    let r = g.merge(&user, pts[0], pts[1], &opts).await?;
    Ok(edit_answer(&r, fmt))
}

/// Body `{"sources": [[sv, x, y, z], ...], "sinks": [...]}`. With `mincut=false` the edges
/// `sources[i]`–`sinks[i]` are removed as given.
pub async fn split(
    State(st): State<Shared>,
    Path(table): Path<String>,
    EditUser(user): EditUser,
    p: Params,
    body: RawBody,
) -> ApiResult<Response> {
    let fmt = p.ids()?;
    let mincut = p.bool("mincut", true)?;
    let v = body.json()?;
    let g = st.graph(&table).await?;
    let sources = points(&v, "sources", g.geometry())?;
    let sinks = points(&v, "sinks", g.geometry())?;
    let opts = EditOptions::default();
    let r = if mincut {
        g.multicut(&user, &sources, &sinks, &opts).await?
    } else {
        if sources.len() != sinks.len() {
            return Err(ApiError::bad_request(format!(
                "a split without mincut removes the edges sources[i]-sinks[i]; got {} sources and {} sinks",
                sources.len(),
                sinks.len()
            )));
        }
        let edges: Vec<[u64; 2]> = sources
            .iter()
            .zip(&sinks)
            .map(|(a, b)| [a.supervoxel, b.supervoxel])
            .collect();
        if edges.iter().any(|e| e[0] == e[1]) {
            return Err(ApiError::bad_request(
                "requested split contains at least 1 self-loop",
            ));
        }
        g.split_edges(&user, &edges, &opts).await?
    };
    Ok(edit_answer(&r, fmt))
}

/// `{"supervoxel_connected_components": [source side, sink side], "illegal_split": false}`.
/// A cut that cannot be made is a 400 with the reason rather than `illegal_split: true`.
pub async fn split_preview(
    State(st): State<Shared>,
    Path(table): Path<String>,
    p: Params,
    body: RawBody,
) -> ApiResult<Response> {
    let fmt = p.ids()?;
    let v = body.json()?;
    let g = st.graph(&table).await?;
    let sources = points(&v, "sources", g.geometry())?;
    let sinks = points(&v, "sinks", g.geometry())?;
    let preview = g
        .split_preview(&sources, &sinks, &EditOptions::default())
        .await?;
    Ok(json(&json!({
        "supervoxel_connected_components": [
            fmt.list(&preview.source_side),
            fmt.list(&preview.sink_side),
        ],
        "illegal_split": false,
    })))
}

fn operation_id(body: &RawBody) -> ApiResult<u64> {
    let v = body.json()?;
    let op = v
        .get("operation_id")
        .ok_or_else(|| ApiError::bad_request("the JSON body needs an \"operation_id\""))?;
    id_value(op, "operation_id")
}

/// Body `{"operation_id": N}`.
pub async fn undo(
    State(st): State<Shared>,
    Path(table): Path<String>,
    EditUser(user): EditUser,
    p: Params,
    body: RawBody,
) -> ApiResult<Response> {
    let fmt = p.ids()?;
    let op = operation_id(&body)?;
    let g = st.graph(&table).await?;
    let r = g.undo(&user, op, &EditOptions::default()).await?;
    Ok(edit_answer(&r, fmt))
}

/// Body `{"operation_id": N}`.
pub async fn redo(
    State(st): State<Shared>,
    Path(table): Path<String>,
    EditUser(user): EditUser,
    p: Params,
    body: RawBody,
) -> ApiResult<Response> {
    let fmt = p.ids()?;
    let op = operation_id(&body)?;
    let g = st.graph(&table).await?;
    let r = g.redo(&user, op, &EditOptions::default()).await?;
    Ok(edit_answer(&r, fmt))
}
