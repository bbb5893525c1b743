//! Read-only lookups: roots, children, leaves, covering nodes, and version questions.

use std::collections::{BTreeSet, HashMap, HashSet};

use axum::extract::{Path, State};
use axum::response::Response;
use cg_bigtable::{filter, mutation, ReadRows};
use cg_graph::query::RootQuery;
use cg_graph::{schema, ChunkedGraph};
use cg_ids::{layer_of, parse_row_key};
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Map, Value};

use super::body::{binary, iso_utc, json, micros_to_seconds, path_id, Params, RawBody};
use super::error::{ApiError, ApiResult};
use super::Shared;

/// Leaf lookups of one request in flight at once.
const LEAVES_IN_FLIGHT: usize = 8;

fn root_query(g: &ChunkedGraph, p: &Params) -> ApiResult<RootQuery> {
    Ok(RootQuery {
        at: p.timestamp("timestamp")?,
        stop_layer: p.layer("stop_layer", g.geometry())?,
        ..Default::default()
    })
}

pub async fn root(
    State(st): State<Shared>,
    Path((table, node)): Path<(String, String)>,
    p: Params,
) -> ApiResult<Response> {
    let id = path_id(&node, "node")?;
    let fmt = p.ids()?;
    let g = st.graph(&table).await?;
    let q = root_query(&g, &p)?;
    let r = g.roots(&[id], &q).await?;
    Ok(json(&json!({ "root_id": fmt.id(r[0]) })))
}

/// Roots in input order. With `fail_to_zero` (the default) unknown IDs, and IDs this graph
/// cannot hold (0, wrong layer or chunk), map to 0 instead of failing the request.
async fn lookup_roots(g: &ChunkedGraph, ids: &[u64], p: &Params) -> ApiResult<Vec<u64>> {
    let mut q = root_query(g, p)?;
    q.fail_to_zero = p.bool("fail_to_zero", true)?;
    if !q.fail_to_zero {
        return Ok(g.roots(ids, &q).await?);
    }
    let valid: Vec<usize> = (0..ids.len())
        .filter(|&i| g.geometry().check(ids[i]).is_ok())
        .collect();
    let sub: Vec<u64> = valid.iter().map(|&i| ids[i]).collect();
    let found = g.roots(&sub, &q).await?;
    let mut out = vec![0u64; ids.len()];
    for (&i, r) in valid.iter().zip(found) {
        out[i] = r;
    }
    Ok(out)
}

pub async fn roots(
    State(st): State<Shared>,
    Path(table): Path<String>,
    p: Params,
    body: RawBody,
) -> ApiResult<Response> {
    let fmt = p.ids()?;
    let ids = body.node_ids(false)?;
    let g = st.graph(&table).await?;
    let r = lookup_roots(&g, &ids, &p).await?;
    if p.get("as_binary") == Some("root_ids") {
        return Ok(binary(&r));
    }
    Ok(json(&json!({ "root_ids": fmt.list(&r) })))
}

pub async fn roots_binary(
    State(st): State<Shared>,
    Path(table): Path<String>,
    p: Params,
    body: RawBody,
) -> ApiResult<Response> {
    let ids = body.u64s()?;
    let g = st.graph(&table).await?;
    Ok(binary(&lookup_roots(&g, &ids, &p).await?))
}

pub async fn children(
    State(st): State<Shared>,
    Path((table, node)): Path<(String, String)>,
    p: Params,
) -> ApiResult<Response> {
    let id = path_id(&node, "node")?;
    let fmt = p.ids()?;
    let g = st.graph(&table).await?;
    let c = g.children(&[id]).await?;
    Ok(json(&json!({ "children_ids": fmt.list(&c[0].ids) })))
}

pub async fn leaves(
    State(st): State<Shared>,
    Path((table, node)): Path<(String, String)>,
    p: Params,
) -> ApiResult<Response> {
    let id = path_id(&node, "node")?;
    let fmt = p.ids()?;
    let g = st.graph(&table).await?;
    let stop = p.layer("stop_layer", g.geometry())?.unwrap_or(1);
    let bbox = p.bounds(g.geometry())?;
    let l = g.leaves(id, bbox, stop).await?;
    Ok(json(&json!({ "leaf_ids": fmt.list(&l) })))
}

/// `{"<node id>": [leaves], ...}` for `{"node_ids": [...]}`.
pub async fn leaves_many(
    State(st): State<Shared>,
    Path(table): Path<String>,
    p: Params,
    body: RawBody,
) -> ApiResult<Response> {
    let fmt = p.ids()?;
    let ids = body.node_ids(false)?;
    let g = st.graph(&table).await?;
    let stop = p.layer("stop_layer", g.geometry())?.unwrap_or(1);
    let bbox = p.bounds(g.geometry())?;
    let unique: BTreeSet<u64> = ids.iter().copied().collect();
    let found: Vec<(u64, Vec<u64>)> = futures::stream::iter(unique)
        .map(|id| {
            let g = g.clone();
            async move { g.leaves(id, bbox, stop).await.map(|l| (id, l)) }
        })
        .buffered(LEAVES_IN_FLIGHT)
        .try_collect()
        .await?;
    let out: Map<String, Value> = found
        .into_iter()
        .map(|(id, l)| (id.to_string(), fmt.list(&l)))
        .collect();
    Ok(json(&Value::Object(out)))
}

/// The fewest nodes whose leaves (at the lowest input layer) are exactly the inputs' leaves:
/// a node is replaced by its parent while the parent's leaves are all covered.
async fn covering_nodes(g: &ChunkedGraph, ids: &[u64], at: Option<i64>) -> ApiResult<Vec<u64>> {
    let Some(min_layer) = ids.iter().map(|&i| layer_of(i)).min() else {
        return Ok(Vec::new());
    };
    for &id in ids {
        g.geometry().check(id).map_err(cg_graph::GraphError::from)?;
    }
    let top = g.geometry().n_layers;
    let mut covered: HashSet<u64> = HashSet::new();
    for &id in ids {
        covered.extend(g.leaves(id, None, min_layer).await?);
    }
    let mut queue: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); usize::from(top) + 1];
    for &id in ids {
        queue[usize::from(layer_of(id))].insert(id);
    }
    let mut out: BTreeSet<(u8, u64)> = BTreeSet::new();
    for layer in min_layer..top {
        let current: Vec<u64> = std::mem::take(&mut queue[usize::from(layer)])
            .into_iter()
            .collect();
        if current.is_empty() {
            continue;
        }
        let parents = g
            .roots(
                &current,
                &RootQuery {
                    at,
                    stop_layer: Some(layer + 1),
                    fail_to_zero: true,
                    ..Default::default()
                },
            )
            .await?;
        let mut by_parent: HashMap<u64, Vec<u64>> = HashMap::new();
        for (&node, &parent) in current.iter().zip(&parents) {
            if parent == 0 || parent == node {
                // No parent at this time: the node itself is part of the cover.
                out.insert((layer, node));
            } else {
                by_parent.entry(parent).or_default().push(node);
            }
        }
        for (parent, kids) in by_parent {
            let under = g.leaves(parent, None, min_layer).await?;
            if under.iter().all(|l| covered.contains(l)) {
                queue[usize::from(layer_of(parent))].insert(parent);
            } else {
                // The parent reaches outside: keep its queued children (these and any
                // queued at other layers).
                let all = g.children(&[parent]).await?;
                for &c in &all[0].ids {
                    let l = layer_of(c);
                    if l > layer && queue[usize::from(l)].contains(&c) {
                        out.insert((l, c));
                    }
                }
                for k in kids {
                    out.insert((layer, k));
                }
            }
        }
    }
    // Whole roots are covered too (PyChunkedGraph's loop stops below the root layer).
    for &r in &queue[usize::from(top)] {
        out.insert((top, r));
    }
    Ok(out.into_iter().map(|(_, id)| id).collect())
}

pub async fn minimal_covering_nodes(
    State(st): State<Shared>,
    Path(table): Path<String>,
    p: Params,
    body: RawBody,
) -> ApiResult<Response> {
    let fmt = p.ids()?;
    let ids = body.node_ids(p.bool("is_binary", false)?)?;
    let at = p.timestamp("timestamp")?;
    let g = st.graph(&table).await?;
    let nodes = covering_nodes(&g, &ids, at).await?;
    if p.bool("as_array", false)? {
        return Ok(binary(&nodes));
    }
    Ok(json(&fmt.list(&nodes)))
}

pub async fn is_latest_roots(
    State(st): State<Shared>,
    Path(table): Path<String>,
    p: Params,
    body: RawBody,
) -> ApiResult<Response> {
    let ids = body.node_ids(p.bool("is_binary", false)?)?;
    let at = p.timestamp("timestamp")?;
    let g = st.graph(&table).await?;
    let latest = g.is_latest(&ids, at).await?;
    Ok(json(&json!({ "is_latest": latest })))
}

/// `{"timestamp": [seconds]}`: each node's creation time, or with `latest` the last moment
/// it was current (the query time for nodes still current, else when an edit replaced it).
pub async fn root_timestamps(
    State(st): State<Shared>,
    Path(table): Path<String>,
    p: Params,
    body: RawBody,
) -> ApiResult<Response> {
    let ids = body.node_ids(p.bool("is_binary", false)?)?;
    let latest = p.bool("latest", false)?;
    let at = p.timestamp("timestamp")?;
    let g = st.graph(&table).await?;
    let stamps: Vec<f64> = if latest {
        let t = at.unwrap_or_else(mutation::now_micros);
        let current = g.is_latest(&ids, Some(t)).await?;
        let gone: Vec<u64> = ids
            .iter()
            .zip(&current)
            .filter(|(_, &c)| !c)
            .map(|(&id, _)| id)
            .collect();
        let when = g.replaced_times(&gone, Some(t)).await?;
        ids.iter()
            .zip(&current)
            .map(|(id, &c)| {
                micros_to_seconds(if c {
                    t
                } else {
                    when.get(id).copied().unwrap_or(t)
                })
            })
            .collect()
    } else {
        g.node_timestamps(&ids)
            .await?
            .into_iter()
            .map(micros_to_seconds)
            .collect()
    };
    Ok(json(&json!({ "timestamp": stamps })))
}

/// Roots replaced (`old_roots`) and created (`new_roots`) by edits between
/// `timestamp_past` and `timestamp_future` (default now).
pub async fn delta_roots(
    State(st): State<Shared>,
    Path(table): Path<String>,
    p: Params,
) -> ApiResult<Response> {
    let fmt = p.ids()?;
    let past = p
        .timestamp("timestamp_past")?
        .ok_or_else(|| ApiError::bad_request("timestamp parameter timestamp_past is mandatory"))?;
    let future = p
        .timestamp("timestamp_future")?
        .unwrap_or_else(mutation::now_micros);
    let g = st.graph(&table).await?;
    let (new, old) = g.delta_roots(past, future).await?;
    Ok(json(
        &json!({ "old_roots": fmt.list(&old), "new_roots": fmt.list(&new) }),
    ))
}

/// `{"valid_roots": [...]}`: the given nodes that exist and were created within
/// `[start_timestamp, end_timestamp]` (defaults: the beginning, now).
pub async fn valid_nodes(
    State(st): State<Shared>,
    Path(table): Path<String>,
    p: Params,
    body: RawBody,
) -> ApiResult<Response> {
    let fmt = p.ids()?;
    let ids = body.node_ids(p.bool("is_binary", false)?)?;
    let start = p.timestamp("start_timestamp")?.unwrap_or(0);
    let end = p
        .timestamp("end_timestamp")?
        .unwrap_or_else(mutation::now_micros);
    let g = st.graph(&table).await?;
    // IDs this graph cannot hold are simply not valid.
    let possible: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|&id| g.geometry().check(id).is_ok())
        .collect();
    let valid = g.valid_nodes(&possible, start, end).await?;
    Ok(json(&json!({ "valid_roots": fmt.list(&valid) })))
}

/// `{"iso": ...}`: the earliest time the graph can be read at (its ingest; PyChunkedGraph
/// answers half a second before its first edit).
pub async fn oldest_timestamp(
    State(st): State<Shared>,
    Path(table): Path<String>,
    p: Params,
) -> ApiResult<Response> {
    let delimiter = p.get("delimiter").unwrap_or(" ").to_string();
    let g = st.graph(&table).await?;
    let t = g.oldest_timestamp().await?;
    Ok(json(&json!({ "iso": iso_utc(t, &delimiter) })))
}

/// The layer-2 nodes of a layer-2 chunk that existed at `timestamp`, with their supervoxels.
async fn chunk_children(
    g: &ChunkedGraph,
    chunk: &str,
    p: &Params,
) -> ApiResult<Vec<(u64, Vec<u64>)>> {
    let id = path_id(chunk, "chunk")?;
    g.geometry().check(id).map_err(cg_graph::GraphError::from)?;
    if layer_of(id) != 2 {
        return Err(ApiError::bad_request(format!(
            "this function only accepts level 2 chunks, the chunk requested is a level {} chunk",
            layer_of(id)
        )));
    }
    let t = p
        .timestamp("timestamp")?
        .unwrap_or_else(mutation::now_micros);
    let (start, end) = cg_ids::chunk_key_range(g.geometry(), id);
    let rows = g
        .client()
        .read_rows_vec(
            g.table(),
            ReadRows::new().range(start..end).filter(filter::chain([
                filter::column(schema::IMMUTABLE, schema::CHILDREN),
                filter::timestamp_range(0, t.saturating_add(1)),
                filter::cells_per_column_limit(1),
            ])),
        )
        .await
        .map_err(cg_graph::GraphError::from)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let Ok(node) = parse_row_key(&row.key) else {
            continue;
        };
        if let Some(c) = row.cell(schema::IMMUTABLE, schema::CHILDREN) {
            out.push((node, schema::decode_ids(&c.value)?));
        }
    }
    Ok(out)
}

fn flatten(pairs: &[(u64, Vec<u64>)]) -> Vec<u64> {
    let mut flat = Vec::new();
    for (l2, svs) in pairs {
        for &sv in svs {
            flat.push(*l2);
            flat.push(sv);
        }
    }
    flat
}

/// `{"l2_chunk_children": ...}`: with `as_array`, the flat list `[l2, sv, l2, sv, ...]`;
/// otherwise `{"<l2>": [svs]}` (PyChunkedGraph sends a pickle there, which is Python-only).
pub async fn l2_chunk_children(
    State(st): State<Shared>,
    Path((table, chunk)): Path<(String, String)>,
    p: Params,
) -> ApiResult<Response> {
    let fmt = p.ids()?;
    let g = st.graph(&table).await?;
    let pairs = chunk_children(&g, &chunk, &p).await?;
    let value = if p.bool("as_array", false)? {
        fmt.list(&flatten(&pairs))
    } else {
        Value::Object(
            pairs
                .iter()
                .map(|(l2, svs)| (l2.to_string(), fmt.list(svs)))
                .collect(),
        )
    };
    Ok(json(&json!({ "l2_chunk_children": value })))
}

/// The flat `[l2, sv, ...]` list as raw u64s (cloud-volume's `get_chunk_mappings`).
pub async fn l2_chunk_children_binary(
    State(st): State<Shared>,
    Path((table, chunk)): Path<(String, String)>,
    p: Params,
) -> ApiResult<Response> {
    if !p.bool("as_array", true)? {
        return Err(ApiError::bad_request(
            "only as_array=true is served here (PyChunkedGraph sends a Python pickle otherwise)",
        ));
    }
    let g = st.graph(&table).await?;
    let pairs = chunk_children(&g, &chunk, &p).await?;
    Ok(binary(&flatten(&pairs)))
}
