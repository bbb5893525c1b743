//! The generic routes: a table's graphene `info`, and the API and server versions.

use axum::extract::{Path, State};
use axum::response::Response;
use cg_ids::{Geometry, LAYER_BITS};
use serde_json::{json, Map, Value};

use super::body::json;
use super::error::{ApiError, ApiResult};
use super::Shared;

/// API versions served: 0 is the legacy API (cloud-volume's "1.0"), 1 is `api/v1`.
/// cloud-volume picks the newest; only v1 routes exist here.
const API_VERSIONS: [u32; 2] = [0, 1];

/// The PyChunkedGraph version whose API this server follows. caveclient gates some methods
/// on it (e.g. `minimal_covering_nodes` needs >= 2.18).
pub const PCG_VERSION: &str = "2.21.1";

pub async fn api_versions() -> Response {
    json(&json!(API_VERSIONS))
}

pub async fn version() -> Response {
    json(&json!(PCG_VERSION))
}

/// A number as an integer when it is one (resolutions are usually whole nm).
fn num(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

fn scale_key(res: &[f64; 3]) -> String {
    res.iter()
        .map(|&r| num(r).to_string())
        .collect::<Vec<_>>()
        .join("_")
}

/// The info PyChunkedGraph serves: the watershed volume's precomputed info (here made from
/// the graph's geometry) plus the graph fields cloud-volume's graphene frontend reads.
pub fn info_json(g: &Geometry, data_dir: Option<&str>) -> Value {
    let masks: Map<String, Value> = (1..=g.n_layers)
        .map(|l| (l.to_string(), json!(g.bits_per_dim(l))))
        .collect();
    let resolution: Vec<Value> = g.resolution.iter().map(|&r| num(r)).collect();
    json!({
        "@type": "neuroglancer_multiscale_volume",
        "type": "segmentation",
        "data_type": "uint64",
        "num_channels": 1,
        "scales": [{
            "key": scale_key(&g.resolution),
            "resolution": resolution,
            "size": g.volume_size,
            "voxel_offset": g.voxel_offset,
            "chunk_sizes": [g.chunk_size],
            // The supervoxel volume is written by the pipeline (a later issue); raw is what
            // it is planned to write.
            "encoding": "raw",
        }],
        "data_dir": data_dir.unwrap_or(""),
        "chunks_start_at_voxel_offset": true,
        "graph": {
            "chunk_size": g.chunk_size,
            // PyChunkedGraph sends this constant; clients do not read it.
            "bounding_box": [2048, 2048, 512],
            "n_bits_for_layer_id": LAYER_BITS,
            "cv_mip": 0,
            "n_layers": g.n_layers,
            "spatial_bit_masks": masks,
        },
        "app": { "supported_api_versions": API_VERSIONS },
        "sharded_mesh": true,
        "verify_mesh": false,
        "mesh": "graphene_meshes",
    })
}

pub async fn info(
    State(st): State<Shared>,
    Path(table): Path<String>,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    let g = st.graph(&table).await?;
    let data_dir = super::data::public_data_dir(g.meta().data_dir.as_deref(), &table, &headers);
    let mut info = info_json(g.geometry(), Some(&data_dir));
    // The watershed volume's own scales (encoding, block size, sharding) when we hold it:
    // clients read its chunks with them.
    if let Some(dir) = super::data::local_dir(g.meta().data_dir.as_deref()) {
        let path = std::path::Path::new(dir).join("info");
        if let Ok(bytes) = tokio::fs::read(&path).await {
            let ws: Value = serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    format!("{} is not valid JSON: {e}", path.display()),
                )
            })?;
            if let Some(scales) = ws.get("scales") {
                info["scales"] = scales.clone();
            }
        }
        // Meshes, once `chunkedgraph mesh` (or the pipeline) made them: cloud-volume reads
        // the Draco grid and the meshed layers from here.
        let mesh_info = std::path::Path::new(dir)
            .join(crate::meshing::layout::MESH_DIR)
            .join("info");
        match tokio::fs::read(&mesh_info).await {
            Ok(bytes) => {
                if let Ok(m) = serde_json::from_slice::<Value>(&bytes) {
                    if let Some(meta) = m.get("mesh_metadata") {
                        info["mesh_metadata"] = meta.clone();
                    }
                }
            }
            // No meshes (yet): Neuroglancer's graphene source (2.41.2) fails to open the whole
            // layer when the info names a mesh directory whose info is missing, so name none.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(o) = info.as_object_mut() {
                    o.remove("mesh");
                }
            }
            Err(_) => {}
        }
    }
    Ok(json(&info))
}
