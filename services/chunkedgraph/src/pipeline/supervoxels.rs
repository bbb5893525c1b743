//! Stage 2, supervoxels: per chunk, one supervoxel per segment found in it (IDs in the
//! graph's layout, numbered in segment order), written into the precomputed supervoxel
//! volume, and the chunk's contacts (`edges/{chunk}`): in-chunk ones and those across its
//! three low faces, with the sum of affinities and the area per supervoxel pair. Two pieces
//! of one segment in neighbouring chunks are linked by a cross-chunk edge.
//!
//! A chunk reads the last plane and the segment list of its low neighbours, so it needs only
//! stage 1's outputs, never another chunk of this stage: all chunks run in parallel.

use std::collections::HashMap;

use anyhow::Context;
use cg_graph::ingest::InputEdge;
use cg_ids::Geometry;
use cg_segmentation::Box3;
use cg_volume::{Array, Volume};

use super::grid::{chunk_name, Chunk, Grid};
use super::input::Input;
use super::segment::{read_labels, read_segments};
use super::work::{Reader, WorkDir, Writer};

/// The supervoxels of a chunk and every edge with an end among them that this chunk found.
pub struct ChunkEdges {
    pub supervoxels: Vec<u64>,
    pub edges: Vec<InputEdge>,
}

/// A low neighbour's last plane (facing this chunk) and its segments.
struct LowFace {
    plane: Vec<u64>,
    segments: Vec<u64>,
    chunk: Chunk,
}

fn sv_id(g: &Geometry, c: Chunk, segments: &[u64], s: u64) -> anyhow::Result<u64> {
    let rank = segments
        .binary_search(&s)
        .map_err(|_| anyhow::anyhow!("segment {s} is not listed in chunk {}", chunk_name(c)))?;
    Ok(g.node_id(g.chunk_id(1, c)?, rank as u64 + 1)?)
}

/// Runs the stage for one chunk: writes its part of the volume and `edges/{chunk}`.
pub async fn run_chunk(
    work: &WorkDir,
    input: &Input,
    volume: &Volume,
    grid: &Grid,
    geometry: &Geometry,
    components: &HashMap<u64, u64>,
    c: Chunk,
) -> anyhow::Result<()> {
    let core = grid.chunk_box(c);
    let labels = read_labels(work, grid, c).await?;
    let segments = read_segments(work, c).await?;
    // Low neighbours along z, y, x (array axes): their last plane and segment list.
    let mut low: [Option<LowFace>; 3] = [None, None, None];
    for (axis, slot) in low.iter_mut().enumerate() {
        let xyz = 2 - axis;
        if c[xyz] == 0 {
            continue;
        }
        let mut n = c;
        n[xyz] -= 1;
        let nl = read_labels(work, grid, n).await?;
        let ns = read_segments(work, n).await?;
        *slot = Some(LowFace {
            plane: last_plane(&nl, grid.chunk_box(n).shape(), axis),
            segments: ns,
            chunk: n,
        });
    }
    // Affinities of the core plus one voxel before each low face: the edges across it.
    let pad = [0, 1, 2].map(|a| usize::from(core.start[a] > 0));
    let ext = Box3::new([0, 1, 2].map(|a| core.start[a] - pad[a]), core.stop);
    let affs = input.read(&ext).await?;

    let g = geometry.clone();
    let comps = components.clone();
    let shape = core.shape();
    let (sv_labels, out) = tokio::task::spawn_blocking(move || {
        contacts(&g, c, shape, pad, &labels, &segments, &low, &affs, &comps)
    })
    .await??;

    let [nz, ny, nx] = core.shape();
    let bbox = super::grid::volume_box(&core, geometry.voxel_offset);
    volume
        .write_box(0, bbox.min, &Array::new(vec![nz, ny, nx], sv_labels)?)
        .await
        .with_context(|| format!("writing chunk {} of the supervoxel volume", chunk_name(c)))?;
    work.put(&format!("edges/{}", chunk_name(c)), encode(&out))
        .await
}

/// The last plane along `axis` (0 = z) of a chunk's labels.
fn last_plane(labels: &[u64], shape: [usize; 3], axis: usize) -> Vec<u64> {
    let [nz, ny, nx] = shape;
    match axis {
        0 => labels[(nz - 1) * ny * nx..].to_vec(),
        1 => (0..nz)
            .flat_map(|z| {
                let row = (z * ny + ny - 1) * nx;
                labels[row..row + nx].iter().copied()
            })
            .collect(),
        _ => (0..nz * ny).map(|r| labels[r * nx + nx - 1]).collect(),
    }
}

#[allow(clippy::too_many_arguments)]
fn contacts(
    g: &Geometry,
    c: Chunk,
    shape: [usize; 3],
    pad: [usize; 3],
    labels: &[u64],
    segments: &[u64],
    low: &[Option<LowFace>; 3],
    affs: &cg_segmentation::Affinities,
    components: &HashMap<u64, u64>,
) -> anyhow::Result<(Vec<u64>, ChunkEdges)> {
    let [nz, ny, nx] = shape;
    let eshape = affs.shape();
    let mut svs = Vec::with_capacity(segments.len());
    for &s in segments {
        svs.push(sv_id(g, c, segments, s)?);
    }
    let sv_labels: Vec<u64> = labels
        .iter()
        .map(|&s| {
            if s == 0 {
                0
            } else {
                // Listed by construction: every label of the chunk is in its segment list.
                segments.binary_search(&s).map(|r| svs[r]).unwrap_or(0)
            }
        })
        .collect();
    // Per supervoxel pair (smaller first): sum of affinities, area, and the two segments.
    let mut acc: HashMap<(u64, u64), (f64, u32, u64, u64)> = HashMap::new();
    let mut add = |a: u64, sa: u64, b: u64, sb: u64, w: f32| {
        let (k, s) = if a < b {
            ((a, b), (sa, sb))
        } else {
            ((b, a), (sb, sa))
        };
        let e = acc.entry(k).or_insert((0.0, 0, s.0, s.1));
        e.0 += f64::from(w);
        e.1 += 1;
    };
    let mut neighbour_ids: [HashMap<u64, u64>; 3] = Default::default();
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let i = (z * ny + y) * nx + x;
                let s = labels[i];
                if s == 0 {
                    continue;
                }
                let p = [z, y, x];
                let e = [z + pad[0], y + pad[1], x + pad[2]];
                for axis in 0..3 {
                    let w = affs.get(axis, e[0], e[1], e[2]);
                    if p[axis] > 0 {
                        let step = [ny * nx, nx, 1][axis];
                        let t = labels[i - step];
                        if t != 0 && t != s {
                            add(sv_labels[i], s, sv_labels[i - step], t, w);
                        }
                    } else if let Some(face) = &low[axis] {
                        // Index into the neighbour's last plane (the other two axes).
                        let j = match axis {
                            0 => y * nx + x,
                            1 => z * nx + x,
                            _ => z * ny + y,
                        };
                        let t = face.plane[j];
                        if t == 0 {
                            continue;
                        }
                        let id = match neighbour_ids[axis].get(&t) {
                            Some(&id) => id,
                            None => {
                                let id = sv_id(g, face.chunk, &face.segments, t)?;
                                neighbour_ids[axis].insert(t, id);
                                id
                            }
                        };
                        add(sv_labels[i], s, id, t, w);
                    }
                }
            }
        }
    }
    debug_assert!(eshape.iter().zip(shape).all(|(&e, s)| e >= s));
    let mut edges: Vec<InputEdge> = acc
        .into_iter()
        .map(|((a, b), (sum, area, sa, sb))| {
            if sa == sb {
                InputEdge {
                    a,
                    b,
                    affinity: f32::INFINITY,
                    area,
                    active: true,
                }
            } else {
                let active = matches!(
                    (components.get(&sa), components.get(&sb)),
                    (Some(x), Some(y)) if x == y
                );
                InputEdge {
                    a,
                    b,
                    affinity: (sum / f64::from(area)) as f32,
                    area,
                    active,
                }
            }
        })
        .collect();
    edges.sort_unstable_by_key(|e| (e.a, e.b));
    Ok((
        sv_labels,
        ChunkEdges {
            supervoxels: svs,
            edges,
        },
    ))
}

fn encode(e: &ChunkEdges) -> Vec<u8> {
    let mut w = Writer::default();
    w.u64s(&e.supervoxels);
    w.u64(e.edges.len() as u64);
    for x in &e.edges {
        w.u64(x.a);
        w.u64(x.b);
        w.f32(x.affinity);
        w.u32(x.area);
        w.u32(u32::from(x.active));
    }
    w.0
}

pub async fn read_edges(work: &WorkDir, c: Chunk) -> anyhow::Result<ChunkEdges> {
    let key = format!("edges/{}", chunk_name(c));
    let bytes = work.get(&key).await?;
    let mut r = Reader::new(&bytes, &key);
    let supervoxels = r.u64s()?;
    let n = r.u64()? as usize;
    let mut edges = Vec::with_capacity(n.min(bytes.len() / 28));
    for _ in 0..n {
        edges.push(InputEdge {
            a: r.u64()?,
            b: r.u64()?,
            affinity: r.f32()?,
            area: r.u32()?,
            active: r.u32()? != 0,
        });
    }
    r.finish()?;
    Ok(ChunkEdges { supervoxels, edges })
}
