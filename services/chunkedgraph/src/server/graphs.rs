//! Graph-shaped answers: the supervoxel subgraph of a node and its layer-2 graph.

use std::collections::HashSet;

use axum::extract::{Path, State};
use axum::http::HeaderValue;
use axum::response::Response;
use serde_json::json;

use super::body::{json, json_text, path_id, python_float, Params};
use super::error::ApiResult;
use super::Shared;

/// `{"nodes": [[sv, sv], ...], "affinities": [...], "areas": [...]}`: every supervoxel edge
/// with both ends under the node (in `bounds`), active or not, and proofreaders' edges.
/// Written by hand because cross-chunk affinities are infinite, which Python's JSON (and so
/// PyChunkedGraph and caveclient) spells `Infinity`.
pub async fn subgraph(
    State(st): State<Shared>,
    Path((table, node)): Path<(String, String)>,
    p: Params,
) -> ApiResult<Response> {
    let id = path_id(&node, "node")?;
    let fmt = p.ids()?;
    let g = st.graph(&table).await?;
    let bbox = p.bounds(g.geometry())?;
    let at = p.timestamp("timestamp")?;
    let edges = g.subgraph_edges(id, bbox, at).await?;
    let pairs: Vec<[u64; 2]> = edges.iter().map(|e| [e.a, e.b]).collect();
    let affinities: Vec<String> = edges
        .iter()
        .map(|e| python_float(f64::from(e.affinity)))
        .collect();
    let areas: Vec<String> = edges.iter().map(|e| e.area.to_string()).collect();
    Ok(json_text(format!(
        "{{\"nodes\":{},\"affinities\":[{}],\"areas\":[{}]}}\n",
        fmt.pairs(&pairs),
        affinities.join(","),
        areas.join(",")
    )))
}

/// `{"edge_graph": [[l2, l2], ...]}`; with `bounds`, only layer-2 nodes whose chunk meets
/// the box. The `Used-Bounds` header tells caveclient whether the bounds were applied.
pub async fn lvl2_graph(
    State(st): State<Shared>,
    Path((table, node)): Path<(String, String)>,
    p: Params,
) -> ApiResult<Response> {
    let id = path_id(&node, "node")?;
    let fmt = p.ids()?;
    let g = st.graph(&table).await?;
    let bbox = p.bounds(g.geometry())?;
    let at = p.timestamp("timestamp")?;
    let mut edges = g.l2_graph(id, at).await?;
    if let Some(b) = bbox {
        let inside: HashSet<u64> = g.leaves(id, Some(b), 2).await?.into_iter().collect();
        edges.retain(|e| inside.contains(&e[0]) && inside.contains(&e[1]));
    }
    let mut resp = json(&json!({ "edge_graph": fmt.pairs(&edges) }));
    resp.headers_mut().insert(
        "Used-Bounds",
        HeaderValue::from_static(if bbox.is_some() { "True" } else { "False" }),
    );
    Ok(resp)
}
