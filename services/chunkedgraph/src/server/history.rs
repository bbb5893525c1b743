//! History routes over `cg_graph::history`: change logs, merge log, lineage graphs, past IDs,
//! operation details, user operations, last edit.
//!
//! PyChunkedGraph answers some of these with pandas' `DataFrame.to_json()` (columns, each a
//! map from row index to value; times as epoch milliseconds) and the lineage graph with
//! networkx's node-link format; the same shapes are written here.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use cg_graph::history::{ChangeLogRow, LineageGraph};
use cg_graph::oplog::OperationEntry;
use cg_graph::ChunkedGraph;
use cg_ids::Geometry;
use serde_json::{json, Map, Value};

use super::body::{
    ids_field, iso_utc, json, json_text, micros_to_seconds, path_id, IdFormat, Params, RawBody,
};
use super::error::{ApiError, ApiResult};
use super::{v1, Shared};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route(&v1("/root/{root}/change_log"), get(change_log))
        .route(
            &v1("/root/{root}/tabular_change_log"),
            get(tabular_change_log),
        )
        .route(
            &v1("/tabular_change_log_many"),
            get(tabular_change_log_many).post(tabular_change_log_many),
        )
        .route(&v1("/root/{root}/merge_log"), get(merge_log))
        .route(&v1("/root/{root}/lineage_graph"), get(lineage_graph))
        .route(
            &v1("/lineage_graph_multiple"),
            post(lineage_graph_multiple).get(lineage_graph_multiple),
        )
        .route(
            &v1("/past_id_mapping"),
            get(past_id_mapping).post(past_id_mapping),
        )
        .route(&v1("/operation_details"), get(operation_details))
        .route(&v1("/user_operations"), get(user_operations))
        .route(&v1("/root/{root}/last_edit"), get(last_edit))
}

/// A table as pandas writes `DataFrame.to_json()`: `{"column": {"row index": value}}`,
/// columns in the given order.
fn data_frame(index: &[usize], columns: Vec<(&str, Vec<Value>)>) -> String {
    let cols: Vec<String> = columns
        .into_iter()
        .map(|(name, values)| {
            let cells: Vec<String> = index
                .iter()
                .zip(values)
                .map(|(i, v)| format!("\"{i}\":{v}"))
                .collect();
            format!("{}:{{{}}}", json!(name), cells.join(","))
        })
        .collect();
    format!("{{{}}}", cols.join(","))
}

/// PyChunkedGraph's tabular change log of one root. `filtered` keeps the rows that shaped the
/// root (`in_neuron && is_relevant`) and drops those two columns; row labels stay those of
/// the whole table, as pandas' boolean indexing leaves them.
fn change_log_frame(rows: &[ChangeLogRow], filtered: bool) -> String {
    let kept: Vec<(usize, &ChangeLogRow)> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| !filtered || (r.in_neuron && r.is_relevant))
        .collect();
    let index: Vec<usize> = kept.iter().map(|(i, _)| *i).collect();
    let col = |f: &dyn Fn(&ChangeLogRow) -> Value| -> Vec<Value> {
        kept.iter().map(|(_, r)| f(r)).collect()
    };
    let mut columns = vec![
        ("operation_id", col(&|r| json!(r.operation_id))),
        ("timestamp", col(&|r| json!(r.timestamp_micros / 1000))),
        ("user_id", col(&|r| json!(r.user_id))),
        ("before_root_ids", col(&|r| json!(r.before_root_ids))),
        ("after_root_ids", col(&|r| json!(r.after_root_ids))),
        ("is_merge", col(&|r| json!(r.is_merge))),
    ];
    if !filtered {
        columns.push(("in_neuron", col(&|r| json!(r.in_neuron))));
        columns.push(("is_relevant", col(&|r| json!(r.is_relevant))));
    }
    // PyChunkedGraph asks its auth service for names; our user IDs are the names.
    columns.push(("user_name", col(&|r| json!(r.user_id))));
    columns.push(("user_affiliation", col(&|_| json!("unknown"))));
    data_frame(&index, columns)
}

/// `{"n_splits", "n_mergers", "user_info": {user: {"n_splits", "n_mergers"}},
/// "operations_ids", "past_ids"}`; `filtered` defaults to false here (caveclient sends
/// true), `timestamp` bounds the past.
async fn change_log(
    State(st): State<Shared>,
    Path((table, root)): Path<(String, String)>,
    p: Params,
) -> ApiResult<Response> {
    let root = path_id(&root, "root")?;
    let fmt = p.ids()?;
    let filtered = p.bool("filtered", false)?;
    let since = p.timestamp("timestamp")?;
    let g = st.graph(&table).await?;
    let log = g.change_log_with(root, since, filtered).await?;
    let users: Map<String, Value> = log
        .user_info
        .iter()
        .map(|(u, e)| {
            (
                u.clone(),
                json!({ "n_splits": e.n_splits, "n_mergers": e.n_mergers }),
            )
        })
        .collect();
    Ok(json(&json!({
        "n_splits": log.n_splits,
        "n_mergers": log.n_mergers,
        "user_info": users,
        "operations_ids": fmt.list(&log.operation_ids),
        "past_ids": fmt.list(&log.past_ids),
    })))
}

async fn tabular_change_log(
    State(st): State<Shared>,
    Path((table, root)): Path<(String, String)>,
    p: Params,
) -> ApiResult<Response> {
    let root = path_id(&root, "root")?;
    let filtered = p.bool("filtered", true)?;
    let g = st.graph(&table).await?;
    let rows = g.tabular_change_log(root).await?;
    Ok(json_text(change_log_frame(&rows, filtered)))
}

/// Body `{"root_ids": [...]}`; answers `{"<root>": "<DataFrame JSON>"}` (the tables as JSON
/// strings, which caveclient parses a second time).
async fn tabular_change_log_many(
    State(st): State<Shared>,
    Path(table): Path<String>,
    p: Params,
    body: RawBody,
) -> ApiResult<Response> {
    let filtered = p.bool("filtered", true)?;
    let roots = ids_field(&body.json()?, "root_ids")?;
    let g = st.graph(&table).await?;
    let mut out = Map::new();
    for r in roots {
        let rows = g.tabular_change_log(r).await?;
        out.insert(
            r.to_string(),
            Value::String(change_log_frame(&rows, filtered)),
        );
    }
    Ok(json(&Value::Object(out)))
}

fn voxels(nm: &[[f64; 3]], g: &Geometry) -> Vec<[i64; 3]> {
    nm.iter()
        .map(|p| [0, 1, 2].map(|d| (p[d] / g.resolution[d]).trunc() as i64))
        .collect()
}

/// `{"merge_edges": [[[sv, sv], ...] per merge], "merge_edge_coords": [[sources, sinks] per
/// merge]}`, coordinates in voxels.
async fn merge_log(
    State(st): State<Shared>,
    Path((table, root)): Path<(String, String)>,
    p: Params,
) -> ApiResult<Response> {
    let root = path_id(&root, "root")?;
    let fmt = p.ids()?;
    let g = st.graph(&table).await?;
    let log = g.merge_log(root).await?;
    let edges: Vec<Value> = log.iter().map(|m| fmt.pairs(&m.added_edges)).collect();
    let coords: Vec<Value> = log
        .iter()
        .map(|m| json!([m.source_coords_voxel, m.sink_coords_voxel]))
        .collect();
    Ok(json(
        &json!({ "merge_edges": edges, "merge_edge_coords": coords }),
    ))
}

/// networkx's node-link form: nodes `{"timestamp": seconds, "operation_id": op, "id": root}`
/// (`operation_id`: the edit that replaced the root, absent while it is current), links
/// `{"source", "target"}` from a replaced root to a root the same edit made.
fn node_link(graph: &LineageGraph, fmt: IdFormat) -> Value {
    let nodes: Vec<Value> = graph
        .nodes
        .iter()
        .map(|n| {
            let mut m = Map::new();
            m.insert(
                "timestamp".into(),
                json!(micros_to_seconds(n.timestamp_micros)),
            );
            if let Some(op) = n.superseded_by {
                m.insert("operation_id".into(), fmt.id(op));
            }
            m.insert("id".into(), fmt.id(n.id));
            Value::Object(m)
        })
        .collect();
    let links: Vec<Value> = graph
        .edges
        .iter()
        .map(|e| json!({ "source": fmt.id(e.source), "target": fmt.id(e.target) }))
        .collect();
    json!({
        "directed": true,
        "multigraph": false,
        "graph": {},
        "nodes": nodes,
        "links": links,
    })
}

async fn lineage(g: &ChunkedGraph, roots: &[u64], p: &Params) -> ApiResult<Response> {
    let fmt = p.ids()?;
    let past = p.timestamp("timestamp_past")?;
    let future = p.timestamp("timestamp_future")?;
    let graph = g.lineage_graph(roots, past, future).await?;
    Ok(json(&node_link(&graph, fmt)))
}

async fn lineage_graph(
    State(st): State<Shared>,
    Path((table, root)): Path<(String, String)>,
    p: Params,
) -> ApiResult<Response> {
    let root = path_id(&root, "root")?;
    let g = st.graph(&table).await?;
    lineage(&g, &[root], &p).await
}

/// Body `{"root_ids": [...]}`.
async fn lineage_graph_multiple(
    State(st): State<Shared>,
    Path(table): Path<String>,
    p: Params,
    body: RawBody,
) -> ApiResult<Response> {
    let roots = ids_field(&body.json()?, "root_ids")?;
    let g = st.graph(&table).await?;
    lineage(&g, &roots, &p).await
}

/// Body `{"root_ids": [...]}`; `{"past_id_map": {"<root>": [past roots]}, "future_id_map":
/// {"<past root>": root}}` over the lineage from `timestamp_past` to now.
async fn past_id_mapping(
    State(st): State<Shared>,
    Path(table): Path<String>,
    p: Params,
    body: RawBody,
) -> ApiResult<Response> {
    let fmt = p.ids()?;
    let roots = ids_field(&body.json()?, "root_ids")?;
    let past = p.timestamp("timestamp_past")?;
    let g = st.graph(&table).await?;
    let m = g.past_id_mapping(&roots, past).await?;
    let past_map: Map<String, Value> = m
        .past_id_map
        .iter()
        .map(|(k, v)| (k.to_string(), fmt.list(v)))
        .collect();
    let future_map: Map<String, Value> = m
        .future_id_map
        .iter()
        .map(|(k, v)| (k.to_string(), fmt.id(*v)))
        .collect();
    Ok(json(
        &json!({ "past_id_map": past_map, "future_id_map": future_map }),
    ))
}

/// An op-log entry with PyChunkedGraph's attribute names: `user`, `roots` (the new roots),
/// `timestamp` (as Python prints a datetime), `added_edges` / `removed_edges`, the points
/// in voxels as `source_coords` / `sink_coords`, and the undone or redone operation.
fn details(e: &OperationEntry, g: &Geometry, fmt: IdFormat) -> Value {
    let mut m = Map::new();
    m.insert("operation_id".into(), fmt.id(e.operation_id));
    m.insert("user".into(), json!(e.user));
    m.insert("roots".into(), fmt.list(&e.new_roots));
    m.insert("old_roots".into(), fmt.list(&e.old_roots));
    m.insert("timestamp".into(), json!(iso_utc(e.timestamp_micros, " ")));
    if !e.added_edges.is_empty() {
        m.insert("added_edges".into(), fmt.pairs(&e.added_edges));
    }
    if !e.removed_edges.is_empty() {
        m.insert("removed_edges".into(), fmt.pairs(&e.removed_edges));
    }
    let pts = |key: &str| -> Vec<[f64; 3]> {
        e.extra
            .get(key)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    };
    let (mut src, mut snk) = (pts("source_coords"), pts("sink_coords"));
    // A merge records its two points as sources; PyChunkedGraph has one source, one sink.
    if snk.is_empty() && src.len() == 2 && e.kind == "merge" {
        snk = vec![src[1]];
        src.truncate(1);
    }
    if !src.is_empty() || !snk.is_empty() {
        m.insert("source_coords".into(), json!(voxels(&src, g)));
        m.insert("sink_coords".into(), json!(voxels(&snk, g)));
    }
    for (ours, theirs) in [
        ("undone_operation", "undo_operation_id"),
        ("redone_operation", "redo_operation_id"),
    ] {
        if let Some(op) = e.extra.get(ours).and_then(Value::as_u64) {
            m.insert(theirs.into(), fmt.id(op));
        }
    }
    Value::Object(m)
}

/// `?operation_ids=[1,2]` (a JSON list in the query); `{"<op>": {details}}`.
async fn operation_details(
    State(st): State<Shared>,
    Path(table): Path<String>,
    p: Params,
) -> ApiResult<Response> {
    let fmt = p.ids()?;
    let raw = p.get("operation_ids").unwrap_or("[]");
    let v: Value = serde_json::from_str(raw).map_err(|e| {
        ApiError::bad_request(format!("operation_ids={raw:?} is not a JSON list: {e}"))
    })?;
    let ops = super::body::id_list(&v, "operation_ids")?;
    let g = st.graph(&table).await?;
    let entries = g.operation_details(&ops).await?;
    let out: Map<String, Value> = entries
        .iter()
        .map(|e| (e.operation_id.to_string(), details(e, g.geometry(), fmt)))
        .collect();
    Ok(json(&Value::Object(out)))
}

/// `{"operation_id": {row: op}, "timestamp": {row: ms}}` (a pandas table) of the operations
/// of `user_id` (everyone's if absent) between `start_time` and `end_time`; undo/redo and
/// undone operations only with `include_undone` (caveclient sends `include_undo`).
async fn user_operations(
    State(st): State<Shared>,
    Path(table): Path<String>,
    p: Params,
) -> ApiResult<Response> {
    let user = p.get("user_id").map(str::to_string);
    let start = p.timestamp("start_time")?.unwrap_or(0);
    let end = p
        .timestamp("end_time")?
        .unwrap_or_else(cg_bigtable::mutation::now_micros);
    let include = p.bool("include_undone", false)? || p.bool("include_undo", false)?;
    let g = st.graph(&table).await?;
    let ops = g
        .user_operations(user.as_deref(), start, end, include)
        .await?;
    let index: Vec<usize> = (0..ops.len()).collect();
    Ok(json_text(data_frame(
        &index,
        vec![
            (
                "operation_id",
                ops.iter().map(|e| json!(e.operation_id)).collect(),
            ),
            (
                "timestamp",
                ops.iter()
                    .map(|e| json!(e.timestamp_micros / 1000))
                    .collect(),
            ),
        ],
    )))
}

/// `{"iso": ...}`: when the root was made (by an edit, or the ingest).
async fn last_edit(
    State(st): State<Shared>,
    Path((table, root)): Path<(String, String)>,
    p: Params,
) -> ApiResult<Response> {
    let root = path_id(&root, "root")?;
    let delimiter = p.get("delimiter").unwrap_or(" ").to_string();
    let g = st.graph(&table).await?;
    let t = g.last_edit(root).await?;
    Ok(json(&json!({ "iso": iso_utc(t, &delimiter) })))
}
