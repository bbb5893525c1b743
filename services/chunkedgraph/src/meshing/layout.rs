//! Where meshes live and what their files are called: the graphene mesh layout that
//! Neuroglancer's `graphene://` source and cloud-volume's graphene mesh source read.
//!
//! Under the segmentation volume, in the directory named by the info's `mesh` key:
//!
//! - `info`: `@type: neuroglancer_legacy_mesh`, `mip`, `chunk_size`, and a `sharding`
//!   specification per meshed layer (keys `"2"` ..= `max_meshed_layer`). Our own
//!   `mesh_metadata` rides along; the server copies it into the segmentation info.
//! - `initial/{layer}/{chunk position}-{shard}.shard`: the fragments written by the initial
//!   meshing, one shard file per chunk. The chunk position is the node ID with the layer
//!   byte and the segment bits dropped (cloud-volume's `decode_chunk_position_number`), and
//!   `shard_bits` is 0, so the shard number is always 0.
//! - `dynamic/{id}:0:{x0}-{x1}_{y0}-{y1}_{z0}-{z1}`: one unsharded fragment per node created
//!   after the initial meshing (edits); the box is the node's chunk in voxels, unclipped and
//!   without the voxel offset, as cloud-volume's `compute_filename` builds it. A 0-byte file
//!   records a node that was meshed and has no surface of its own.

use std::path::{Path, PathBuf};

use cg_ids::{layer_of, Geometry, LAYER_BITS};
use cg_volume::{DataEncoding, ShardHash, ShardSpec};
use serde_json::{json, Value};

/// The info's `mesh` key: the mesh directory's name under the segmentation volume.
pub const MESH_DIR: &str = "graphene_meshes";
/// Where initial (sharded) fragments live, inside the mesh directory.
pub const INITIAL_DIR: &str = "initial";
/// Where fragments of nodes made by edits live: `mesh_metadata.unsharded_mesh_dir`.
pub const DYNAMIC_DIR: &str = "dynamic";

/// The meshing parameters a mesh directory was built with (kept in its `info`).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MeshParams {
    /// Draco lattice spacing in whole nm, shared by every fragment and layer.
    pub uniform_draco_grid_size: u32,
    /// The highest layer whose nodes get fragments; above it the manifest lists children.
    pub max_meshed_layer: u8,
    /// Simplification: largest allowed deviation (meshoptimizer's measure), nm.
    pub max_error_nm: f32,
    /// Simplification: target triangle reduction factor.
    pub reduction: f32,
    /// Minishard bits of every layer's sharding.
    pub minishard_bits: u32,
}

impl MeshParams {
    /// Defaults for a graph: a lattice that holds every marching-cubes vertex exactly (the
    /// largest whole nm dividing every half voxel side, at least 1), an error bound of five
    /// of the smallest voxel side, and fragments up to the layer below the roots.
    pub fn for_geometry(g: &Geometry) -> MeshParams {
        MeshParams {
            uniform_draco_grid_size: grid_size(g.resolution),
            max_meshed_layer: g.n_layers.saturating_sub(1).max(2),
            max_error_nm: (5.0 * g.resolution.iter().cloned().fold(f64::INFINITY, f64::min)) as f32,
            reduction: 100.0,
            minishard_bits: 3,
        }
    }

    /// The sharding of every meshed layer: murmurhash, one shard per chunk file (no shard
    /// bits), raw fragment data (clients read fragments by byte range and do not inflate).
    pub fn sharding(&self) -> ShardSpec {
        ShardSpec {
            type_: cg_volume::shard::SHARDED_V1.into(),
            preshift_bits: 0,
            hash: ShardHash::Murmurhash3X86_128,
            minishard_bits: self.minishard_bits,
            shard_bits: 0,
            minishard_index_encoding: DataEncoding::Gzip,
            data_encoding: DataEncoding::Raw,
        }
    }

    /// The segmentation info's `mesh_metadata`.
    pub fn mesh_metadata(&self) -> Value {
        json!({
            "uniform_draco_grid_size": self.uniform_draco_grid_size,
            "max_meshed_layer": self.max_meshed_layer,
            "unsharded_mesh_dir": DYNAMIC_DIR,
        })
    }

    /// The mesh directory's `info`.
    pub fn info_json(&self, g: &Geometry) -> Value {
        let spec = serde_json::to_value(self.sharding()).unwrap_or(Value::Null);
        let sharding: serde_json::Map<String, Value> = (2..=self.max_meshed_layer)
            .map(|l| (l.to_string(), spec.clone()))
            .collect();
        json!({
            "@type": "neuroglancer_legacy_mesh",
            "mip": 0,
            "chunk_size": g.chunk_size,
            "sharding": sharding,
            "mesh_metadata": self.mesh_metadata(),
            "chunkedgraph": self,
        })
    }

    /// Reads the parameters back from a mesh directory's `info`.
    pub fn from_info(info: &Value) -> Option<MeshParams> {
        serde_json::from_value(info.get("chunkedgraph")?.clone()).ok()
    }
}

/// The largest whole number of nm dividing every half voxel side (so marching-cubes vertices,
/// which sit on half-voxel positions, are lattice points), at least 1.
pub fn grid_size(resolution: [f64; 3]) -> u32 {
    let halves: Option<Vec<u64>> = resolution
        .iter()
        .map(|&r| {
            let h = r / 2.0;
            (h >= 1.0 && h.fract() == 0.0 && h < 1e9).then_some(h as u64)
        })
        .collect();
    let Some(halves) = halves else { return 1 };
    let gcd = |mut a: u64, mut b: u64| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    halves.into_iter().fold(0, gcd).max(1) as u32
}

/// cloud-volume's chunk position number: the ID without its layer byte and segment bits.
pub fn chunk_position_number(g: &Geometry, id: u64) -> u64 {
    let keep = u64::MAX >> LAYER_BITS;
    (id & keep) >> g.segment_bits(layer_of(id))
}

/// The initial shard file of a node's chunk, relative to `initial/`: `{layer}/{pos}-0.shard`.
pub fn initial_shard_name(g: &Geometry, id: u64) -> String {
    format!("{}/{}-0.shard", layer_of(id), chunk_position_number(g, id))
}

/// A node's dynamic fragment name: `{id}:0:{x0}-{x1}_{y0}-{y1}_{z0}-{z1}`.
pub fn dynamic_name(g: &Geometry, id: u64) -> String {
    let layer = layer_of(id);
    let shift = u32::from(layer.max(2) - 2);
    let c = g.coords_of(id);
    let span: [u64; 3] = std::array::from_fn(|d| u64::from(g.chunk_size[d]) << shift);
    let lo: [u64; 3] = std::array::from_fn(|d| u64::from(c[d]) * span[d]);
    format!(
        "{id}:0:{}-{}_{}-{}_{}-{}",
        lo[0],
        lo[0] + span[0],
        lo[1],
        lo[1] + span[1],
        lo[2],
        lo[2] + span[2]
    )
}

/// The local directory a graph's `data_dir` names (`file://` URL or plain path); `None` for
/// remote stores, where this process cannot write meshes.
pub fn local_data_dir(data_dir: Option<&str>) -> Option<PathBuf> {
    let d = data_dir?.trim();
    if d.is_empty() {
        return None;
    }
    match d.strip_prefix("file://") {
        Some(p) => Some(PathBuf::from(p)),
        None if d.contains("://") => None,
        None => Some(PathBuf::from(d)),
    }
}

/// The mesh directory of a segmentation directory.
pub fn mesh_dir(segmentation: &Path) -> PathBuf {
    segmentation.join(MESH_DIR)
}

/// Writes `bytes` to `path` through a temporary file and a rename, so readers never see a
/// half-written file and a crash leaves either the old file or the new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry() -> Geometry {
        let mut g = Geometry::new([512, 512, 128], [64, 64, 64]).unwrap();
        g.resolution = [8.0, 8.0, 40.0];
        g
    }

    #[test]
    fn grid_holds_half_voxels() {
        assert_eq!(grid_size([8.0, 8.0, 40.0]), 4);
        assert_eq!(grid_size([4.0, 4.0, 40.0]), 2);
        assert_eq!(grid_size([1.0, 1.0, 1.0]), 1);
        assert_eq!(grid_size([7.5, 8.0, 40.0]), 1);
    }

    #[test]
    fn names_match_cloud_volume() {
        let g = geometry();
        let chunk = g.chunk_id(2, [3, 1, 1]).unwrap();
        let id = g.node_id(chunk, 17).unwrap();
        let bits = g.bits_per_dim(2) as u32;
        let pos = (3u64 << (2 * bits)) | (1 << bits) | 1;
        assert_eq!(chunk_position_number(&g, id), pos);
        assert_eq!(initial_shard_name(&g, id), format!("2/{pos}-0.shard"));
        assert_eq!(
            dynamic_name(&g, id),
            format!("{id}:0:192-256_64-128_64-128")
        );
        // Higher layers double the box per layer.
        let l3 = g.node_id(g.chunk_id(3, [1, 0, 0]).unwrap(), 2).unwrap();
        assert_eq!(dynamic_name(&g, l3), format!("{l3}:0:128-256_0-128_0-128"));
    }

    #[test]
    fn info_has_a_sharding_per_meshed_layer() {
        let g = geometry();
        let p = MeshParams::for_geometry(&g);
        let info = p.info_json(&g);
        let sharding = info["sharding"].as_object().unwrap();
        let keys: Vec<u8> = sharding.keys().map(|k| k.parse().unwrap()).collect();
        assert_eq!(keys.len(), usize::from(p.max_meshed_layer) - 1);
        assert_eq!(sharding["2"]["@type"], "neuroglancer_uint64_sharded_v1");
        assert_eq!(sharding["2"]["data_encoding"], "raw");
        assert_eq!(MeshParams::from_info(&info), Some(p));
        assert_eq!(info["mesh_metadata"]["uniform_draco_grid_size"], 4);
    }
}
