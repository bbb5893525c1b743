//! The meshing routes: PyChunkedGraph's manifest (which fragments make up a node's mesh, as
//! Neuroglancer's graphene source and cloud-volume read them) and remeshing. Each table with
//! a mesh directory gets a [`Remesher`] when the server opens it, so every edit's new
//! layer-2 nodes are meshed in the background.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cg_graph::ChunkedGraph;
use cg_ids::{layer_of, VoxelBox};
use serde_json::{json, Value};

use super::body::{ids_field, json, path_id, Params, RawBody};
use super::error::{ApiError, ApiResult};
use super::Shared;
use crate::meshing::chunk::ChunkCache;
use crate::meshing::remesh::Remesher;
use crate::meshing::store::{Located, MeshStore};
use crate::meshing::{layout, open_volume};

/// Workers remeshing each table's edits.
const REMESH_WORKERS: usize = 2;

/// A table's meshes as the server sees them.
pub struct TableMeshes {
    pub store: Arc<MeshStore>,
    pub remesher: Arc<Remesher>,
}

/// The tables whose meshes this server knows.
#[derive(Default)]
pub struct Registry {
    tables: Mutex<HashMap<String, Arc<TableMeshes>>>,
    attaching: tokio::sync::Mutex<()>,
}

impl Registry {
    fn cached(&self, table: &str) -> Option<Arc<TableMeshes>> {
        self.tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(table)
            .cloned()
    }

    /// The table's meshes, starting its remesher on first use; `None` when the graph has no
    /// local mesh directory.
    pub async fn attach(&self, g: &ChunkedGraph) -> anyhow::Result<Option<Arc<TableMeshes>>> {
        if let Some(t) = self.cached(g.table()) {
            return Ok(Some(t));
        }
        let _guard = self.attaching.lock().await;
        if let Some(t) = self.cached(g.table()) {
            return Ok(Some(t));
        }
        let Some(seg) = layout::local_data_dir(g.meta().data_dir.as_deref()) else {
            return Ok(None);
        };
        let Some(store) = MeshStore::open(&seg, g.geometry())? else {
            return Ok(None);
        };
        // Remeshing reads few chunks, mostly around recent edits.
        let volume = Arc::new(ChunkCache::new(open_volume(&seg).await?, 64 << 20)?);
        let store = Arc::new(store);
        let remesher = Remesher::start(g.clone(), store.clone(), volume, REMESH_WORKERS);
        let t = Arc::new(TableMeshes { store, remesher });
        self.tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(g.table().to_string(), t.clone());
        tracing::info!(table = g.table(), "meshes attached, remeshing edits");
        Ok(Some(t))
    }

    async fn get(&self, g: &ChunkedGraph) -> ApiResult<Arc<TableMeshes>> {
        match self.attach(g).await {
            Ok(Some(t)) => Ok(t),
            Ok(None) => Err(ApiError::not_found(format!(
                "table {} has no meshes; build them with `chunkedgraph mesh --table {}`",
                g.table(),
                g.table()
            ))),
            Err(e) => Err(internal(e)),
        }
    }
}

fn internal(e: anyhow::Error) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("meshes: {e:#}"))
}

/// The optional JSON body of a manifest request (cloud-volume sends `start_layer` in it,
/// with a GET).
fn optional_body(body: &RawBody) -> ApiResult<Value> {
    if body.0.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let v = body.json()?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the manifest body must be a JSON object",
        ));
    }
    Ok(v)
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|x| x != 0.0),
        Some(Value::String(s)) => {
            matches!(s.to_ascii_lowercase().as_str(), "true" | "1" | "t" | "yes")
        }
        _ => false,
    }
}

/// `GET|POST /meshing/api/v1/table/{table}/manifest/{node}:0`
pub async fn manifest(
    State(st): State<Shared>,
    Path((table, spec)): Path<(String, String)>,
    p: Params,
    body: RawBody,
) -> ApiResult<Response> {
    let (id_s, lod) = spec.split_once(':').ok_or_else(|| {
        ApiError::bad_request(format!("{spec:?} is not {{node_id}}:{{lod}} (e.g. 123:0)"))
    })?;
    let id = path_id(id_s, "node")?;
    if lod.trim() != "0" {
        return Err(ApiError::bad_request(format!(
            "level of detail {lod:?}: only 0 is served"
        )));
    }
    let body = optional_body(&body)?;
    let g = st.graph(&table).await?;
    let geometry = g.geometry();
    geometry
        .check(id)
        .map_err(|e| ApiError::bad_request(format!("node {id}: {e}")))?;
    let meshes = st.meshes.get(&g).await?;
    // The fragments are always checked against the files: both answers are verified ones.
    let _verify = p.bool("verify", false)?;
    let prepend = p.bool("prepend_seg_ids", false)?;
    let return_seg_ids = p.bool("return_seg_ids", false)? || truthy(body.get("return_seg_ids"));
    let mut start_layer = p
        .layer("start_layer", geometry)?
        .unwrap_or(meshes.store.params.max_meshed_layer);
    if let Some(v) = body.get("start_layer") {
        let l = v
            .as_i64()
            .filter(|l| (1..=i64::from(geometry.n_layers)).contains(l));
        start_layer = l.ok_or_else(|| {
            ApiError::bad_request(format!(
                "start_layer {v} is not a layer of this graph (1..={})",
                geometry.n_layers
            ))
        })? as u8;
    }
    let bounds = p.bounds(geometry)?;
    let (seg_ids, fragments) = fragments_of(&g, &meshes.store, id, start_layer, bounds).await?;
    let fragments: Vec<String> = if prepend {
        seg_ids
            .iter()
            .zip(fragments)
            .map(|(s, f)| format!("~{s}:{f}"))
            .collect()
    } else {
        fragments
    };
    let mut out = json!({ "fragments": fragments });
    if return_seg_ids {
        out["seg_ids"] = json!(seg_ids);
    }
    if truthy(body.get("return_seg_id_layers")) {
        out["seg_id_layers"] = json!(seg_ids.iter().map(|&s| layer_of(s)).collect::<Vec<_>>());
    }
    if truthy(body.get("return_seg_chunk_coordinates")) {
        out["seg_chunk_coordinates"] = json!(seg_ids
            .iter()
            .map(|&s| geometry.coords_of(s))
            .collect::<Vec<_>>());
    }
    Ok(json(&out))
}

/// The nodes whose fragments make up `id`'s mesh, and their fragment strings: the
/// descendants at or below `start_layer` (PyChunkedGraph's rule), each replaced by its
/// children while it has no fragment of its own.
pub async fn fragments_of(
    g: &ChunkedGraph,
    store: &MeshStore,
    id: u64,
    start_layer: u8,
    bounds: Option<VoxelBox>,
) -> ApiResult<(Vec<u64>, Vec<String>)> {
    let geometry = g.geometry();
    let keep = |n: u64| {
        bounds
            .as_ref()
            .is_none_or(|b| geometry.chunk_overlaps(layer_of(n), geometry.coords_of(n), b))
    };
    // The starting set.
    let mut frontier = Vec::new();
    if layer_of(id) <= 2 {
        frontier.push(id);
    } else {
        let mut parents = vec![id];
        while !parents.is_empty() {
            let lists = g.children(&parents).await?;
            parents = Vec::new();
            for c in lists.iter().flat_map(|l| l.ids.iter().copied()) {
                if !keep(c) {
                    continue;
                }
                if layer_of(c) <= start_layer {
                    frontier.push(c);
                } else {
                    parents.push(c);
                }
            }
        }
    }
    let (mut seg_ids, mut fragments) = (Vec::new(), Vec::new());
    while !frontier.is_empty() {
        let mut descend = Vec::new();
        for n in frontier {
            match store.locate(n).map_err(internal)? {
                Some(loc @ (Located::Initial { .. } | Located::Dynamic(_))) => {
                    if let Some(f) = loc.fragment() {
                        seg_ids.push(n);
                        fragments.push(f);
                    }
                }
                Some(Located::Empty) => {}
                None if layer_of(n) > 2 => descend.push(n),
                None => {}
            }
        }
        frontier = Vec::new();
        if !descend.is_empty() {
            for list in g.children(&descend).await? {
                frontier.extend(list.ids.iter().copied().filter(|&c| keep(c)));
            }
        }
    }
    Ok((seg_ids, fragments))
}

/// `POST /meshing/api/v1/table/{table}/remeshing` with `{"new_lvl2_ids": [...]}`: queues
/// the layer-2 nodes for meshing (their ancestors are stitched after them); 202.
pub async fn remesh(
    State(st): State<Shared>,
    Path(table): Path<String>,
    body: RawBody,
) -> ApiResult<Response> {
    let ids = ids_field(&body.json()?, "new_lvl2_ids")?;
    let g = st.graph(&table).await?;
    for &id in &ids {
        g.geometry()
            .check(id)
            .map_err(|e| ApiError::bad_request(format!("new_lvl2_ids: {id}: {e}")))?;
        if layer_of(id) != 2 {
            return Err(ApiError::bad_request(format!(
                "new_lvl2_ids: {id} is a layer-{} node, not layer 2",
                layer_of(id)
            )));
        }
    }
    let meshes = st.meshes.get(&g).await?;
    let n = ids.len();
    if n > 0 {
        meshes
            .remesher
            .enqueue(ids)
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    }
    Ok((StatusCode::ACCEPTED, json(&json!({ "queued": n }))).into_response())
}
