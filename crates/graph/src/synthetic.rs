//! Seeded synthetic supervoxel graphs with neurite-like connectivity.
//!
//! Neurites are random walks through a grid of chunks. Each walk is cut into supervoxels of a
//! few steps; a walk that crosses a chunk face is cut there too, and the two pieces are joined
//! by a *cross-chunk* edge (one object split by the chunk boundary, always connected). Pieces
//! of one neurite are joined by strong edges; neurites that pass close to each other get weak
//! contacts, and a few of those are strong: the merge errors proofreaders fix.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What to generate.
#[derive(Clone, Debug)]
pub struct Params {
    pub seed: u64,
    /// Chunks per dimension (x, y, z) at the supervoxel layer.
    pub chunks: [u32; 3],
    /// Chunk size in voxels.
    pub chunk_size: [u32; 3],
    /// Number of neurites.
    pub neurites: usize,
    /// Steps per neurite walk; each step moves one voxel-ish stride.
    pub steps: usize,
    /// Steps per supervoxel before a new one starts.
    pub steps_per_supervoxel: usize,
    /// Probability that a step lands near another neurite and makes a contact edge.
    pub contact_rate: f64,
    /// Fraction of contacts that are strong (false merges in the agglomeration).
    pub false_merge_rate: f64,
}

impl Params {
    /// About `supervoxels` supervoxels in a cube of chunks sized to hold them.
    pub fn with_supervoxels(seed: u64, supervoxels: usize) -> Params {
        let steps_per_supervoxel = 4;
        let steps = 400;
        let neurites = (supervoxels * steps_per_supervoxel / steps).max(1);
        // Keep roughly 200 supervoxels per chunk.
        let chunks_total = (supervoxels / 200).max(1) as f64;
        let side = chunks_total.cbrt().ceil().max(1.0) as u32;
        Params {
            seed,
            chunks: [side, side, side],
            chunk_size: [64, 64, 64],
            neurites,
            steps,
            steps_per_supervoxel,
            contact_rate: 0.02,
            false_merge_rate: 0.05,
        }
    }
}

pub use crate::ingest::EdgeKind;

#[derive(Clone, Debug)]
pub struct Supervoxel {
    /// Chunk coordinates at the supervoxel layer.
    pub chunk: [u32; 3],
    /// Segment number within the chunk, from 1.
    pub segment: u64,
    /// A voxel inside the supervoxel, in global voxel coordinates.
    pub position: [u32; 3],
    /// The neurite it was drawn from: the ground truth for proofreading.
    pub neurite: u32,
}

#[derive(Clone, Debug)]
pub struct Edge {
    /// Indices into [`SyntheticGraph::supervoxels`].
    pub a: usize,
    pub b: usize,
    /// Mean affinity in [0, 1]; infinite for cross-chunk edges.
    pub affinity: f32,
    /// Contact area in voxel faces.
    pub area: u32,
    pub kind: EdgeKind,
}

#[derive(Clone, Debug)]
pub struct SyntheticGraph {
    pub params: Params,
    pub supervoxels: Vec<Supervoxel>,
    pub edges: Vec<Edge>,
}

/// Affinities at or above this join supervoxels in the generated agglomeration.
pub const AGGLOMERATION_THRESHOLD: f32 = 0.5;

impl SyntheticGraph {
    /// Whether the automated agglomeration merges this edge.
    pub fn is_active(edge: &Edge) -> bool {
        edge.kind == EdgeKind::CrossChunk || edge.affinity >= AGGLOMERATION_THRESHOLD
    }

    /// The geometry of a graph holding this one: its chunk grid and chunk size.
    pub fn geometry(&self) -> Result<cg_ids::Geometry, cg_ids::IdError> {
        let s = self.volume_size();
        let size = [u64::from(s[0]), u64::from(s[1]), u64::from(s[2])];
        cg_ids::Geometry::new(size, self.params.chunk_size)
    }

    /// Each supervoxel's node ID in `geometry`.
    pub fn supervoxel_ids(&self, geometry: &cg_ids::Geometry) -> Result<Vec<u64>, cg_ids::IdError> {
        self.supervoxels
            .iter()
            .map(|sv| geometry.node_id(geometry.chunk_id(1, sv.chunk)?, sv.segment))
            .collect()
    }

    /// Volume size in voxels.
    /// A dense supervoxel segmentation of one chunk, consistent with the graph: every voxel
    /// gets the ID of the supervoxel whose position is nearest along the voxel grid (a
    /// multi-source breadth-first fill from the supervoxel positions, inside the chunk), 0
    /// for a chunk without supervoxels. Voxels are in x-fastest order (x, then y, then z),
    /// as in Neuroglancer's precomputed chunks.
    pub fn segmentation_of_chunk(
        &self,
        geometry: &cg_ids::Geometry,
        chunk: [u32; 3],
    ) -> Result<Vec<u64>, cg_ids::IdError> {
        let cs = self.params.chunk_size;
        let (sx, sy, sz) = (cs[0] as usize, cs[1] as usize, cs[2] as usize);
        let mut labels = vec![0u64; sx * sy * sz];
        let mut queue = std::collections::VecDeque::new();
        let chunk_id = geometry.chunk_id(1, chunk)?;
        for sv in self.supervoxels.iter().filter(|s| s.chunk == chunk) {
            let local = [
                (sv.position[0] - chunk[0] * cs[0]) as usize,
                (sv.position[1] - chunk[1] * cs[1]) as usize,
                (sv.position[2] - chunk[2] * cs[2]) as usize,
            ];
            let i = local[0] + sx * (local[1] + sy * local[2]);
            if labels[i] == 0 {
                labels[i] = geometry.node_id(chunk_id, sv.segment)?;
                queue.push_back(i);
            }
        }
        while let Some(i) = queue.pop_front() {
            let (x, y, z) = (i % sx, (i / sx) % sy, i / (sx * sy));
            let l = labels[i];
            let mut visit = |j: usize| {
                if labels[j] == 0 {
                    labels[j] = l;
                    queue.push_back(j);
                }
            };
            if x > 0 {
                visit(i - 1);
            }
            if x + 1 < sx {
                visit(i + 1);
            }
            if y > 0 {
                visit(i - sx);
            }
            if y + 1 < sy {
                visit(i + sx);
            }
            if z > 0 {
                visit(i - sx * sy);
            }
            if z + 1 < sz {
                visit(i + sx * sy);
            }
        }
        Ok(labels)
    }

    pub fn volume_size(&self) -> [u32; 3] {
        let p = &self.params;
        [
            p.chunks[0] * p.chunk_size[0],
            p.chunks[1] * p.chunk_size[1],
            p.chunks[2] * p.chunk_size[2],
        ]
    }
}

/// Generates a graph; the same parameters give the same graph.
pub fn generate(params: &Params) -> SyntheticGraph {
    let mut rng = StdRng::seed_from_u64(params.seed);
    let size = [
        params.chunks[0] * params.chunk_size[0],
        params.chunks[1] * params.chunk_size[1],
        params.chunks[2] * params.chunk_size[2],
    ];
    let chunk_of = |p: [u32; 3]| {
        [
            p[0] / params.chunk_size[0],
            p[1] / params.chunk_size[1],
            p[2] / params.chunk_size[2],
        ]
    };
    let n_chunks = (params.chunks[0] * params.chunks[1] * params.chunks[2]) as usize;
    let chunk_index =
        |c: [u32; 3]| (c[0] + params.chunks[0] * (c[1] + params.chunks[1] * c[2])) as usize;
    let mut next_segment = vec![1u64; n_chunks];
    let mut supervoxels: Vec<Supervoxel> = Vec::new();
    let mut edges: Vec<Edge> = Vec::new();
    // Coarse spatial hash of where supervoxels are, for contacts between neurites.
    const CELL: u32 = 8;
    let mut cells: std::collections::HashMap<[u32; 3], Vec<usize>> = Default::default();

    let mut new_sv = |pos: [u32; 3], neurite: u32, supervoxels: &mut Vec<Supervoxel>| {
        let chunk = chunk_of(pos);
        let ci = chunk_index(chunk);
        let segment = next_segment[ci];
        next_segment[ci] += 1;
        supervoxels.push(Supervoxel {
            chunk,
            segment,
            position: pos,
            neurite,
        });
        supervoxels.len() - 1
    };

    for neurite in 0..params.neurites as u32 {
        let mut pos = [
            rng.random_range(0..size[0]),
            rng.random_range(0..size[1]),
            rng.random_range(0..size[2]),
        ];
        // A persistent heading makes walks look like neurites rather than blobs.
        let mut dir = [0i32; 3];
        dir[rng.random_range(0..3)] = if rng.random_bool(0.5) { 1 } else { -1 };
        let mut current = new_sv(pos, neurite, &mut supervoxels);
        let mut steps_in_sv = 0;
        for _ in 0..params.steps {
            if rng.random_bool(0.15) {
                dir = [0; 3];
                dir[rng.random_range(0..3)] = if rng.random_bool(0.5) { 1 } else { -1 };
            }
            let stride = rng.random_range(2..6) as i64;
            let mut next = pos;
            for d in 0..3 {
                let v = i64::from(pos[d]) + i64::from(dir[d]) * stride;
                if v < 0 || v >= i64::from(size[d]) {
                    dir[d] = -dir[d];
                    continue;
                }
                next[d] = v as u32;
            }
            let crossed = chunk_of(next) != chunk_of(pos);
            steps_in_sv += 1;
            if crossed || steps_in_sv >= params.steps_per_supervoxel {
                let sv = new_sv(next, neurite, &mut supervoxels);
                let kind = if !crossed {
                    EdgeKind::InChunk
                } else if rng.random_bool(0.7) {
                    EdgeKind::CrossChunk
                } else {
                    EdgeKind::BetweenChunk
                };
                let affinity = match kind {
                    EdgeKind::CrossChunk => f32::INFINITY,
                    _ => rng.random_range(0.6..1.0),
                };
                edges.push(Edge {
                    a: current,
                    b: sv,
                    affinity,
                    area: rng.random_range(20..400),
                    kind,
                });
                current = sv;
                steps_in_sv = 0;
            }
            pos = next;
            let cell = [pos[0] / CELL, pos[1] / CELL, pos[2] / CELL];
            if rng.random_bool(params.contact_rate) {
                if let Some(other) = cells
                    .get(&cell)
                    .and_then(|v| v.iter().rev().find(|&&o| supervoxels[o].neurite != neurite))
                {
                    let other = *other;
                    let same_chunk = supervoxels[other].chunk == supervoxels[current].chunk;
                    let adjacent = supervoxels[other]
                        .chunk
                        .iter()
                        .zip(supervoxels[current].chunk.iter())
                        .all(|(a, b)| a.abs_diff(*b) <= 1);
                    if same_chunk || adjacent {
                        let strong = rng.random_bool(params.false_merge_rate);
                        edges.push(Edge {
                            a: current,
                            b: other,
                            affinity: if strong {
                                rng.random_range(0.5..0.8)
                            } else {
                                rng.random_range(0.0..0.45)
                            },
                            area: rng.random_range(5..80),
                            kind: if same_chunk {
                                EdgeKind::InChunk
                            } else {
                                EdgeKind::BetweenChunk
                            },
                        });
                    }
                }
            }
            cells.entry(cell).or_default().push(current);
        }
    }
    SyntheticGraph {
        params: params.clone(),
        supervoxels,
        edges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Params {
        Params {
            seed: 7,
            chunks: [3, 3, 2],
            chunk_size: [32, 32, 32],
            neurites: 20,
            steps: 200,
            steps_per_supervoxel: 4,
            contact_rate: 0.05,
            false_merge_rate: 0.1,
        }
    }

    #[test]
    fn segmentation_of_a_chunk_holds_its_supervoxels_and_only_them() {
        let g = generate(&small());
        let geometry = g.geometry().expect("geometry");
        let ids = g.supervoxel_ids(&geometry).expect("ids");
        let chunk = g.supervoxels[0].chunk;
        let labels = g.segmentation_of_chunk(&geometry, chunk).expect("labels");
        let cs = g.params.chunk_size;
        assert_eq!(labels.len(), (cs[0] * cs[1] * cs[2]) as usize);
        let here: std::collections::HashSet<u64> = g
            .supervoxels
            .iter()
            .zip(&ids)
            .filter(|(s, _)| s.chunk == chunk)
            .map(|(_, &id)| id)
            .collect();
        assert!(
            labels.iter().all(|l| here.contains(l)),
            "a voxel outside the chunk's supervoxels"
        );
        // Each supervoxel owns the voxel at its position (unless another one sits there).
        let sv = &g.supervoxels[0];
        let local = [
            sv.position[0] - chunk[0] * cs[0],
            sv.position[1] - chunk[1] * cs[1],
            sv.position[2] - chunk[2] * cs[2],
        ];
        let i = (local[0] + cs[0] * (local[1] + cs[1] * local[2])) as usize;
        assert_eq!(labels[i], ids[0]);
    }

    #[test]
    fn same_seed_same_graph() {
        let a = generate(&small());
        let b = generate(&small());
        assert_eq!(a.supervoxels.len(), b.supervoxels.len());
        assert_eq!(a.edges.len(), b.edges.len());
        for (x, y) in a.edges.iter().zip(&b.edges) {
            assert_eq!((x.a, x.b, x.area, x.kind), (y.a, y.b, y.area, y.kind));
        }
        let mut p = small();
        p.seed = 8;
        let c = generate(&p);
        assert!(c
            .edges
            .iter()
            .zip(&a.edges)
            .any(|(x, y)| (x.a, x.b) != (y.a, y.b)));
    }

    #[test]
    fn edges_are_classed_by_the_chunk_grid() {
        let g = generate(&small());
        assert!(g.edges.len() > 100);
        let mut seen = [0usize; 3];
        for e in &g.edges {
            let (a, b) = (&g.supervoxels[e.a], &g.supervoxels[e.b]);
            assert_ne!(e.a, e.b);
            match e.kind {
                EdgeKind::InChunk => {
                    assert_eq!(a.chunk, b.chunk);
                    seen[0] += 1;
                }
                EdgeKind::BetweenChunk | EdgeKind::CrossChunk => {
                    assert_ne!(a.chunk, b.chunk);
                    assert!(a
                        .chunk
                        .iter()
                        .zip(&b.chunk)
                        .all(|(x, y)| x.abs_diff(*y) <= 1));
                    seen[if e.kind == EdgeKind::CrossChunk { 2 } else { 1 }] += 1;
                }
            }
            if e.kind == EdgeKind::CrossChunk {
                assert!(e.affinity.is_infinite());
                assert_eq!(a.neurite, b.neurite);
            }
        }
        assert!(seen.iter().all(|&n| n > 0), "every kind occurs: {seen:?}");
    }

    #[test]
    fn segments_are_dense_per_chunk() {
        let g = generate(&small());
        let mut by_chunk: std::collections::HashMap<[u32; 3], Vec<u64>> = Default::default();
        for sv in &g.supervoxels {
            by_chunk.entry(sv.chunk).or_default().push(sv.segment);
            let size = g.volume_size();
            assert!((0..3).all(|d| sv.position[d] < size[d]));
        }
        for (_, mut segs) in by_chunk {
            segs.sort_unstable();
            assert_eq!(segs, (1..=segs.len() as u64).collect::<Vec<_>>());
        }
    }

    #[test]
    fn sized_constructor_hits_the_target() {
        let g = generate(&Params::with_supervoxels(1, 20_000));
        let n = g.supervoxels.len();
        assert!((15_000..30_000).contains(&n), "{n} supervoxels");
        // Strong contacts merge some neurites: the agglomeration is not the ground truth.
        assert!(g.edges.iter().any(|e| SyntheticGraph::is_active(e)
            && g.supervoxels[e.a].neurite != g.supervoxels[e.b].neurite));
    }
}
