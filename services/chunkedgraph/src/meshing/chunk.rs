//! Meshing one layer-2 chunk: every layer-2 node's fragment, cut so that the fragments of a
//! root stitch into one closed surface.
//!
//! The voxels are labelled by their *root*, not by their layer-2 node, so marching cubes
//! puts no surface between two pieces of one neuron, and the chunk's block reaches one voxel
//! past the chunk on every side, so it sees every cell (2×2×2 voxels) with a corner in the
//! chunk. Each triangle is then given to one layer-2 node, the same one whichever chunk
//! computes it: the node of the cell's first corner (z, then y, then x) that carries the
//! triangle's root. A chunk keeps the triangles whose owning corner lies inside it. The
//! fragments of a root therefore partition its global marching-cubes surface, which is
//! closed except at the dataset's edge; simplification keeps every fragment's open border
//! in place and the Draco lattice holds those vertices exactly, so stitched fragments meet
//! without cracks.

use std::collections::{HashMap, HashSet};

use anyhow::Context;
use cg_graph::query::RootQuery;
use cg_graph::ChunkedGraph;
use cg_ids::{ChunkCoord, Geometry};
use cg_mesh::draco::{self, GridQuantization};
use cg_mesh::{mesh_labels, partition_by_owner, simplify, BlockGeometry, Mesh, SimplifyParams};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use cg_volume::{BBox, Volume};

use super::layout::MeshParams;

/// The voxels of a chunk's block and what the graph says about them.
pub struct ChunkBlock {
    /// Volume-relative voxel box of the block (the chunk plus one voxel on each side, clipped).
    pub lo: [i64; 3],
    pub shape: [usize; 3],
    /// Volume-relative voxel box of the chunk itself.
    pub chunk_lo: [i64; 3],
    pub chunk_hi: [i64; 3],
    /// Supervoxels, (z, y, x) C order.
    pub svs: Vec<u64>,
    /// Root and layer-2 node of each supervoxel in the block.
    pub root_of: HashMap<u64, u64>,
    pub l2_of: HashMap<u64, u64>,
}

/// Reads a chunk's block and looks up its supervoxels' roots and layer-2 nodes now.
pub async fn load(
    graph: &ChunkedGraph,
    volume: &ChunkCache,
    coord: ChunkCoord,
) -> anyhow::Result<ChunkBlock> {
    let g = graph.geometry();
    let cb = g.chunk_box(2, coord);
    let chunk_lo: [i64; 3] = cb.min.map(|v| v as i64);
    let chunk_hi: [i64; 3] = cb.max.map(|v| v as i64);
    let lo: [i64; 3] = chunk_lo.map(|v| (v - 1).max(0));
    let hi: [i64; 3] = std::array::from_fn(|d| (chunk_hi[d] + 1).min(g.volume_size[d] as i64));
    let abs = |v: [i64; 3]| -> [i64; 3] { std::array::from_fn(|d| v[d] + g.voxel_offset[d]) };
    let bbox = BBox::new(abs(lo), abs(hi));
    let array = volume
        .read_box(bbox)
        .await
        .with_context(|| format!("reading supervoxels {bbox:?}"))?;
    let shape = bbox.shape_zyx();
    let svs = array;
    // Runs along x repeat a supervoxel: skip them before hashing.
    let mut seen: HashSet<u64> = HashSet::new();
    let mut last = 0u64;
    for &sv in &svs {
        if sv != last && sv != 0 {
            seen.insert(sv);
        }
        last = sv;
    }
    let mut distinct: Vec<u64> = seen.into_iter().collect();
    distinct.sort_unstable();
    // Supervoxels the graph does not know (a volume written for another graph) stay
    // unlabelled rather than failing the chunk.
    let known: Vec<u64> = distinct
        .iter()
        .copied()
        .filter(|&s| g.check(s).is_ok() && cg_ids::layer_of(s) == 1)
        .collect();
    let q = RootQuery {
        fail_to_zero: true,
        ..Default::default()
    };
    let roots = graph.roots(&known, &q).await.context("looking up roots")?;
    let parents = graph
        .parents(&known, None)
        .await
        .context("looking up layer-2 nodes")?;
    let mut root_of = HashMap::with_capacity(known.len());
    let mut l2_of = HashMap::with_capacity(known.len());
    for ((&sv, root), parent) in known.iter().zip(roots).zip(parents) {
        if let (Some(p), true) = (parent, root != 0) {
            root_of.insert(sv, root);
            l2_of.insert(sv, p);
        }
    }
    Ok(ChunkBlock {
        lo,
        shape,
        chunk_lo,
        chunk_hi,
        svs,
        root_of,
        l2_of,
    })
}

/// One layer-2 node's fragment: its Draco bytes, or `None` when it owns no triangle.
pub struct Fragment {
    pub node: u64,
    pub draco: Option<Vec<u8>>,
}

/// Meshes a loaded block. With `only`, fragments of other nodes are not built.
pub fn mesh_block(
    g: &Geometry,
    block: &ChunkBlock,
    params: &MeshParams,
    only: Option<&HashSet<u64>>,
) -> anyhow::Result<Vec<Fragment>> {
    let [nz, ny, nx] = block.shape;
    let t0 = std::time::Instant::now();
    let labels: Vec<u64> = {
        let mut last = (u64::MAX, 0u64);
        block
            .svs
            .iter()
            .map(|&sv| {
                if sv != last.0 {
                    last = (sv, block.root_of.get(&sv).copied().unwrap_or(0));
                }
                last.1
            })
            .collect()
    };
    let origin: [i64; 3] = std::array::from_fn(|d| block.lo[d] + g.voxel_offset[d]);
    let geom = BlockGeometry::new(origin, g.resolution);
    let meshes = mesh_labels(&labels, block.shape, &geom).context("marching cubes")?;
    let t_mc = t0.elapsed();

    // Each voxel's fragment: its layer-2 node inside the chunk (when wanted), else none.
    // Every node with a voxel in the chunk gets a fragment, maybe an empty one.
    let mut wanted: HashSet<u64> = HashSet::new();
    let mut owner = vec![0u64; block.svs.len()];
    let mut last = (u64::MAX, 0u64);
    for z in 0..nz {
        for y in 0..ny {
            let row = (z * ny + y) * nx;
            let (gy, gz) = (block.lo[1] + y as i64, block.lo[2] + z as i64);
            if gy < block.chunk_lo[1]
                || gy >= block.chunk_hi[1]
                || gz < block.chunk_lo[2]
                || gz >= block.chunk_hi[2]
            {
                continue;
            }
            let x0 = (block.chunk_lo[0] - block.lo[0]) as usize;
            let x1 = (block.chunk_hi[0] - block.lo[0]) as usize;
            for x in x0..x1 {
                let sv = block.svs[row + x];
                if sv != last.0 {
                    let l2 = block
                        .l2_of
                        .get(&sv)
                        .copied()
                        .filter(|l2| only.is_none_or(|o| o.contains(l2)))
                        .unwrap_or(0);
                    if l2 != 0 {
                        wanted.insert(l2);
                    }
                    last = (sv, l2);
                }
                owner[row + x] = last.1;
            }
        }
    }
    let mut owned: HashMap<u64, Mesh> =
        partition_by_owner(&labels, block.shape, &geom, &meshes, &owner)
            .into_iter()
            .collect();
    let t_own = t0.elapsed();
    let simplify_params = SimplifyParams {
        reduction: params.reduction,
        max_error_nm: params.max_error_nm,
        locked_planes: None,
        keep_components: true,
        distance_bound: true,
    };
    let mut out = Vec::with_capacity(wanted.len());
    let mut nodes: Vec<u64> = wanted.into_iter().collect();
    nodes.sort_unstable();
    for node in nodes {
        let Some(mesh) = owned.remove(&node) else {
            out.push(Fragment { node, draco: None });
            continue;
        };
        let simplified = simplify(&mesh, &simplify_params).mesh;
        out.push(Fragment {
            node,
            draco: encode(&simplified, params.uniform_draco_grid_size)?,
        });
    }
    tracing::debug!(
        "block {:?}: labels+mc {:?}, ownership {:?}, simplify+encode {:?}, {} triangles",
        block.shape,
        t_mc,
        t_own - t_mc,
        t0.elapsed() - t_own,
        meshes.iter().map(|m| m.mesh.triangles.len()).sum::<usize>()
    );
    Ok(out)
}

/// A mesh as a Draco fragment on the global lattice; `None` for a mesh without triangles.
pub fn encode(mesh: &Mesh, grid: u32) -> anyhow::Result<Option<Vec<u8>>> {
    if mesh.triangles.is_empty() {
        return Ok(None);
    }
    let q = GridQuantization::for_mesh(mesh, grid).context("quantizing a fragment")?;
    Ok(Some(
        draco::encode(mesh, &q).context("encoding a fragment")?,
    ))
}

/// Decoded chunks by grid cell, and the order they came in (the oldest go first).
type Cached = (HashMap<[u64; 3], Arc<Vec<u64>>>, VecDeque<[u64; 3]>);

/// The supervoxel volume with its most recently decoded chunks kept: a block reads the 27
/// chunks around its own, and its neighbours read most of the same ones.
pub struct ChunkCache {
    volume: Volume,
    cached: Mutex<Cached>,
    capacity: usize,
}

impl ChunkCache {
    /// Keeps up to `bytes` of decoded chunks.
    pub fn new(volume: Volume, bytes: usize) -> anyhow::Result<ChunkCache> {
        let c = volume.scale(0)?.chunk_size();
        let chunk_bytes = (c[0] * c[1] * c[2] * 8).max(1) as usize;
        Ok(ChunkCache {
            volume,
            cached: Mutex::new((HashMap::new(), VecDeque::new())),
            capacity: (bytes / chunk_bytes).max(27),
        })
    }

    async fn chunk(&self, g: [u64; 3]) -> anyhow::Result<Arc<Vec<u64>>> {
        if let Some(c) = self.lock().0.get(&g) {
            return Ok(c.clone());
        }
        let s = self.volume.scale(0)?;
        let n = s.chunk_bbox(g).volume() as usize;
        // A chunk never written is background.
        let data = self
            .volume
            .read_chunk::<u64>(0, g)
            .await?
            .unwrap_or_else(|| vec![0; n]);
        anyhow::ensure!(
            data.len() == n,
            "chunk {g:?} holds {} voxels, not {n}",
            data.len()
        );
        let data = Arc::new(data);
        let mut guard = self.lock();
        let (map, order) = &mut *guard;
        if map.insert(g, data.clone()).is_none() {
            order.push_back(g);
        }
        while order.len() > self.capacity {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
        Ok(data)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.cached.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The voxels of `bbox` (absolute x, y, z, inside the volume) in (z, y, x) C order.
    pub async fn read_box(&self, bbox: BBox) -> anyhow::Result<Vec<u64>> {
        let s = self.volume.scale(0)?;
        let [sx, sy, sz] = bbox.size().map(|v| v as usize);
        let mut out = vec![0u64; sx * sy * sz];
        let (lo, hi) = s.grid_range(&bbox);
        for gz in lo[2]..hi[2] {
            for gy in lo[1]..hi[1] {
                for gx in lo[0]..hi[0] {
                    let g = [gx, gy, gz];
                    let cb = s.chunk_bbox(g);
                    let data = self.chunk(g).await?;
                    let part = cb.intersection(&bbox);
                    let [cx, cy, _] = cb.size().map(|v| v as usize);
                    let w = (part.max[0] - part.min[0]) as usize;
                    for z in part.min[2]..part.max[2] {
                        for y in part.min[1]..part.max[1] {
                            let src = (((z - cb.min[2]) as usize * cy) + (y - cb.min[1]) as usize)
                                * cx
                                + (part.min[0] - cb.min[0]) as usize;
                            let dst = (((z - bbox.min[2]) as usize * sy)
                                + (y - bbox.min[1]) as usize)
                                * sx
                                + (part.min[0] - bbox.min[0]) as usize;
                            out[dst..dst + w].copy_from_slice(&data[src..src + w]);
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use cg_volume::{Array, DataType, Encoding, Info, Scale, Store, VolumeType};

    use super::*;

    /// The cache assembles the same boxes as the volume reads, across chunk faces, at the
    /// clipped upper edge, and with a cache too small to hold them all.
    #[tokio::test]
    async fn cached_boxes_match_the_volume() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let size = [40u64, 36, 20];
        let scale = Scale::new(
            size,
            [8.0, 8.0, 40.0],
            [16, 16, 8],
            Encoding::CompressedSegmentation,
        );
        let info = Info::new(VolumeType::Segmentation, DataType::U64, 1, scale);
        let volume = Volume::create(Store::open(&url).unwrap(), info)
            .await
            .unwrap();
        let n = (size[0] * size[1] * size[2]) as usize;
        let data: Vec<u64> = (0..n as u64).map(|i| i / 7 + 1).collect();
        let array = Array::new(vec![20, 36, 40], data).unwrap();
        volume.write_box(0, [0, 0, 0], &array).await.unwrap();
        let cache = ChunkCache::new(Volume::open(&url).await.unwrap(), 0).unwrap();
        for (lo, hi) in [
            ([0, 0, 0], [40, 36, 20]),
            ([15, 15, 7], [33, 17, 9]),
            ([31, 20, 15], [40, 36, 20]),
            ([0, 0, 0], [1, 1, 1]),
        ] {
            let b = BBox::new(lo, hi);
            let want = volume.read_box::<u64>(0, b).await.unwrap().into_data();
            assert_eq!(cache.read_box(b).await.unwrap(), want, "{b:?}");
        }
    }
}
