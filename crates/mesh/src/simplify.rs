//! Mesh simplification with meshoptimizer, keeping chunk faces in place.

use meshopt::SimplifyOptions;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::distance::SurfaceIndex;

use crate::Mesh;

/// How far to simplify.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimplifyParams {
    /// Aim for `triangles / reduction` triangles (100 keeps about 1 %). The error bound wins:
    /// simplification stops earlier when the next collapse would exceed it.
    pub reduction: f32,
    /// Largest allowed deviation in nm: with [`Self::distance_bound`], of every original
    /// vertex from the result; without, as meshoptimizer estimates it (a quadric distance).
    pub max_error_nm: f32,
    /// Vertices with a coordinate equal to one of these planes (nm, `[low, high]` per axis
    /// x, y, z) never move: the faces of the chunk block
    /// ([`crate::BlockGeometry::face_planes_nm`]), where neighbouring chunks' fragments
    /// must keep meeting exactly.
    pub locked_planes: Option<[[f32; 2]; 3]>,
    /// Put back, unsimplified, every connected piece that simplification removed entirely.
    /// meshoptimizer's error is a quadric estimate: a speck smaller than the error bound
    /// (a one-voxel fragment, say) collapses to nothing, which is a large error as a
    /// distance from the original surface. Pieces are small, so this costs few triangles.
    pub keep_components: bool,
    /// Hold `max_error_nm` as a bound on every original vertex's distance to the result: a
    /// fine pass (quadric limit a quarter of the bound) and coarse passes over its result
    /// (0.42 of the bound) that keep what the pass before left too far. About 1.5 times the
    /// time of one pass; off, one pass at the bound, and only the quadric estimate bounds
    /// the error (thin protrusions can retract several times farther).
    pub distance_bound: bool,
}

impl Default for SimplifyParams {
    fn default() -> Self {
        Self {
            reduction: 100.0,
            max_error_nm: 40.0,
            locked_planes: None,
            keep_components: true,
            distance_bound: true,
        }
    }
}

/// A simplified mesh and the error meshoptimizer reports for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Simplified {
    pub mesh: Mesh,
    /// Deviation from the input in nm (meshoptimizer's estimate; 0 when nothing changed).
    pub error_nm: f32,
}

/// Simplifies `mesh`. Vertices on the mesh's open border and on the locked planes stay
/// where they are, so a chunk fragment still meets its neighbours after both are simplified;
/// unused vertices are dropped and the rest keep their order.
pub fn simplify(mesh: &Mesh, params: &SimplifyParams) -> Simplified {
    if mesh.triangles.is_empty() {
        return Simplified {
            mesh: Mesh::default(),
            error_nm: 0.0,
        };
    }
    let mut locks: Vec<bool> = match params.locked_planes {
        Some(planes) => mesh
            .vertices
            .iter()
            .map(|v| (0..3).any(|i| v[i] == planes[i][0] || v[i] == planes[i][1]))
            .collect(),
        None => vec![false; mesh.vertices.len()],
    };
    let s = Simplifier::new(mesh, params);
    let bound = params.max_error_nm.max(0.0);
    if !params.distance_bound || bound == 0.0 {
        let (out, error) = s.pass(s.all(), &locks, bound, false);
        return s.done(s.finish(&out, &locks), error);
    }
    // meshoptimizer costs about the same per input triangle whatever its error limit, and
    // its quadric lets thin parts retract far beyond that limit. So a fine pass (a small
    // share of the bound: rarely anything far) runs once on the full mesh, and a coarse pass
    // runs on its much smaller result, again and again while it leaves original vertices
    // farther than the bound, with what keeps them near locked.
    let fine_limit = bound * FINE_SHARE;
    let mut fine = s.pass(s.all(), &locks, fine_limit, false);
    let mut rounds = 0;
    'fine: while rounds < DISTANCE_ROUNDS {
        let near = Near::new(&s, &fine.0, bound);
        while rounds < DISTANCE_ROUNDS {
            rounds += 1;
            let (out, error) = s.pass(&fine.0, &locks, bound * COARSE_SHARE, true);
            let triangles = s.finish(&out, &locks);
            let far = s.far_vertices(&triangles, bound);
            if far.is_empty() {
                return s.done(triangles, error.max(fine.1));
            }
            if near.lock(&far, &mut locks) {
                // The fine pass itself left some vertex too far: run it again with it locked.
                fine = s.pass(s.all(), &locks, fine_limit, false);
                continue 'fine;
            }
        }
    }
    // Not settled (never seen on real segmentations): the unsimplified mesh is within any bound.
    s.done(mesh.triangles.clone(), 0.0)
}

/// meshoptimizer's quadric error limit in the fine pass, as a share of the bound: small
/// enough that its result is rarely anywhere near the bound.
const FINE_SHARE: f32 = 0.25;

/// The coarse pass's quadric limit, as a share of the bound: the quadric underestimates how
/// far thin parts retract; those parts are locked and simplified again. Lower keeps more
/// triangles and a smaller mean distance: at 0.42 and a 15 nm bound, the NeuroProof volume
/// gets fewer triangles than zmesh's at its 40 nm setting, with a smaller mean and maximum
/// distance (examples/bench.rs).
const COARSE_SHARE: f32 = 0.42;

/// Coarse passes at most: each later one keeps what the one before left too far.
const DISTANCE_ROUNDS: usize = 8;

/// One mesh being simplified: its original triangles, and what every pass needs of them.
struct Simplifier<'a> {
    mesh: &'a Mesh,
    params: &'a SimplifyParams,
    target: usize,
    /// The vertex-connected piece of each vertex (a representative vertex).
    pieces: Vec<u32>,
}

impl<'a> Simplifier<'a> {
    fn new(mesh: &'a Mesh, params: &'a SimplifyParams) -> Self {
        let n = mesh.triangles.len() * 3;
        Self {
            mesh,
            params,
            target: ((n as f64 / params.reduction.max(1.0) as f64) as usize / 3) * 3,
            pieces: pieces(mesh),
        }
    }

    fn all(&self) -> &'a [u32] {
        self.mesh.triangles.as_flattened()
    }

    /// meshoptimizer on `input` (indices into the original vertices), never moving locked
    /// vertices; `sparse` when `input` uses few of them.
    fn pass(&self, input: &[u32], locks: &[bool], limit: f32, sparse: bool) -> (Vec<u32>, f32) {
        let mut options = SimplifyOptions::LockBorder | SimplifyOptions::ErrorAbsolute;
        if sparse {
            options |= SimplifyOptions::Sparse;
        }
        let mut error = 0.0f32;
        let out = meshopt::simplify_with_locks_decoder(
            input,
            &self.mesh.vertices,
            locks,
            // meshoptimizer asserts (aborts) on a target above the input.
            self.target.min(input.len()),
            limit,
            options,
            Some(&mut error),
        );
        (out, error)
    }

    fn finish(&self, out: &[u32], locks: &[bool]) -> Vec<[u32; 3]> {
        let mut triangles: Vec<[u32; 3]> =
            out.chunks_exact(3).map(|t| [t[0], t[1], t[2]]).collect();
        drop_folded_pairs(&mut triangles, locks);
        if self.params.keep_components {
            let gone = self.vanished(&triangles);
            for t in &self.mesh.triangles {
                if gone[t[0] as usize] {
                    triangles.push(*t);
                }
            }
        }
        triangles
    }

    fn done(&self, triangles: Vec<[u32; 3]>, error_nm: f32) -> Simplified {
        let mut mesh = Mesh {
            vertices: self.mesh.vertices.clone(),
            triangles,
        };
        mesh.compact();
        Simplified { mesh, error_nm }
    }

    /// For each original vertex: whether its piece has no vertex left in `triangles`.
    fn vanished(&self, triangles: &[[u32; 3]]) -> Vec<bool> {
        let mut alive = vec![false; self.pieces.len()];
        for &v in triangles.as_flattened() {
            alive[self.pieces[v as usize] as usize] = true;
        }
        self.pieces
            .iter()
            .map(|&p| p == NO_PIECE || !alive[p as usize])
            .collect()
    }

    /// The original vertices farther than `bound` from `triangles`; not those of pieces
    /// allowed to vanish (without `keep_components`).
    fn far_vertices(&self, triangles: &[[u32; 3]], bound: f32) -> Vec<u32> {
        let mut skip = if self.params.keep_components {
            vec![false; self.pieces.len()]
        } else {
            self.vanished(triangles)
        };
        for &v in triangles.as_flattened() {
            skip[v as usize] = true;
        }
        let index =
            SurfaceIndex::from_parts(&self.mesh.vertices, triangles, 2.0 * f64::from(bound));
        (0..self.mesh.vertices.len() as u32)
            .filter(|&v| {
                // Unused vertices are their own piece, and count as vanished.
                let i = v as usize;
                !skip[i]
                    && self.pieces[i] != NO_PIECE
                    && !index.within(self.mesh.vertices[i], f64::from(bound))
            })
            .collect()
    }
}

/// The fine pass's result, indexed to find what keeps a vertex near it.
struct Near<'a> {
    vertices: &'a [[f32; 3]],
    triangles: &'a [[u32; 3]],
    kept: Vec<bool>,
    index: SurfaceIndex<'a>,
    bound: f32,
}

impl<'a> Near<'a> {
    fn new(s: &Simplifier<'a>, fine: &'a [u32], bound: f32) -> Self {
        let vertices = &s.mesh.vertices[..];
        let triangles = fine.as_chunks::<3>().0;
        Self {
            vertices,
            triangles,
            kept: used_vertices(vertices.len(), fine),
            index: SurfaceIndex::from_parts(vertices, triangles, f64::from(bound)),
            bound,
        }
    }

    /// Locks what keeps each `far` vertex near the surface without going back to the full
    /// mesh: the corners of the fine triangle nearest it and, when the fine pass kept the
    /// vertex, the fine triangles around it (a vertex locked alone can still go, folded into
    /// a back-to-back sheet, and a wider lock settles in fewer rounds). Returns whether some
    /// far vertex is that far from the fine result too.
    fn lock(&self, far: &[u32], locks: &mut [bool]) -> bool {
        let mut refine = false;
        let mut fans = FxHashSet::default();
        for &v in far {
            let i = v as usize;
            match self.index.nearest(self.vertices[i], f64::from(self.bound)) {
                Some((t, _)) => {
                    for &c in &self.triangles[t as usize] {
                        locks[c as usize] = true;
                    }
                    if self.kept[i] {
                        fans.insert(v);
                    }
                }
                None => {
                    locks[i] = true;
                    refine = true;
                }
            }
        }
        if !fans.is_empty() {
            for t in self
                .triangles
                .iter()
                .filter(|t| t.iter().any(|v| fans.contains(v)))
            {
                for &c in t {
                    locks[c as usize] = true;
                }
            }
        }
        refine
    }
}

/// The piece of an unused vertex.
const NO_PIECE: u32 = u32::MAX;

/// For each vertex of `mesh`, a representative of its vertex-connected piece
/// ([`NO_PIECE`] for unused vertices).
fn pieces(mesh: &Mesh) -> Vec<u32> {
    let n = mesh.vertices.len();
    let mut parent: Vec<u32> = (0..n as u32).collect();
    fn find(parent: &mut [u32], mut v: u32) -> u32 {
        while parent[v as usize] != v {
            let up = parent[parent[v as usize] as usize];
            parent[v as usize] = up;
            v = up;
        }
        v
    }
    let mut used = vec![false; n];
    for t in &mesh.triangles {
        let a = find(&mut parent, t[0]);
        used[t[0] as usize] = true;
        for &v in &t[1..] {
            used[v as usize] = true;
            let b = find(&mut parent, v);
            if a != b {
                parent[b as usize] = a;
            }
        }
    }
    (0..n as u32)
        .map(|v| {
            if used[v as usize] {
                find(&mut parent, v)
            } else {
                NO_PIECE
            }
        })
        .collect()
}

/// Which of `n` vertices `indices` uses.
fn used_vertices(n: usize, indices: &[u32]) -> Vec<bool> {
    let mut used = vec![false; n];
    for &i in indices {
        used[i as usize] = true;
    }
    used
}

/// Simplifies many meshes on `threads` threads (at least one), largest first so the threads
/// finish together; results come back in input order.
pub fn simplify_many(meshes: &[&Mesh], params: &SimplifyParams, threads: usize) -> Vec<Simplified> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let mut order: Vec<usize> = (0..meshes.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(meshes[i].triangles.len()));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Simplified>>> = Mutex::new(vec![None; meshes.len()]);
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, meshes.len().max(1)) {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&i) = order.get(k) else { break };
                let s = simplify(meshes[i], params);
                // A panic elsewhere poisons the lock; the results are still whole entries.
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(s);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|s| {
            s.unwrap_or_else(|| Simplified {
                mesh: Mesh::default(),
                error_nm: 0.0,
            })
        })
        .collect()
}

/// Removes pairs of triangles on the same three vertices facing opposite ways. meshoptimizer
/// occasionally collapses a thin part into such a back-to-back sheet; its two triangles
/// enclose nothing, and their edges would each carry four triangles. Dropping both leaves
/// the surrounding surface closed. A pair on three `locked` vertices stays: those were
/// locked to keep the surface there.
fn drop_folded_pairs(triangles: &mut Vec<[u32; 3]>, locked: &[bool]) {
    // Rotated to start at the smallest index: (start, next, last) keeps the orientation.
    let canonical = |t: &[u32; 3]| {
        let k = (0..3).min_by_key(|&k| t[k]).unwrap_or(0);
        [t[k], t[(k + 1) % 3], t[(k + 2) % 3]]
    };
    let mut seen: FxHashMap<[u32; 3], usize> = FxHashMap::default();
    seen.reserve(triangles.len());
    let mut dropped = vec![false; triangles.len()];
    for (i, t) in triangles.iter().enumerate() {
        let c = canonical(t);
        let flipped = [c[0], c[2], c[1]];
        if t.iter().all(|&v| locked.get(v as usize) == Some(&true)) {
            continue;
        }
        if let Some(j) = seen.remove(&flipped) {
            dropped[i] = true;
            dropped[j] = true;
        } else {
            seen.insert(c, i);
        }
    }
    let mut i = 0;
    triangles.retain(|_| {
        i += 1;
        !dropped[i - 1]
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{mesh_labels, BlockGeometry};

    /// A ball of radius `r` voxels centred in a block of `n`³.
    fn ball(n: usize, r: f64) -> Vec<u32> {
        let c = (n as f64 - 1.0) / 2.0;
        let mut v = vec![0u32; n * n * n];
        for z in 0..n {
            for y in 0..n {
                for x in 0..n {
                    let d =
                        ((x as f64 - c).powi(2) + (y as f64 - c).powi(2) + (z as f64 - c).powi(2))
                            .sqrt();
                    if d <= r {
                        v[(z * n + y) * n + x] = 7;
                    }
                }
            }
        }
        v
    }

    #[test]
    fn ball_shrinks_within_the_error_and_stays_closed() {
        let n = 40;
        let geo = BlockGeometry::new([0; 3], [8.0, 8.0, 8.0]);
        let meshes = mesh_labels(&ball(n, 15.0), [n; 3], &geo).unwrap();
        let mesh = &meshes[0].mesh;
        let s = simplify(
            mesh,
            &SimplifyParams {
                reduction: 20.0,
                max_error_nm: 16.0,
                locked_planes: None,
                keep_components: true,
                distance_bound: true,
            },
        );
        assert!(
            s.mesh.triangles.len() * 4 < mesh.triangles.len(),
            "{} -> {}",
            mesh.triangles.len(),
            s.mesh.triangles.len()
        );
        assert!(s.error_nm <= 16.0, "{}", s.error_nm);
        assert!(s.mesh.topology().is_closed(), "{:?}", s.mesh.topology());
        // Every kept vertex is an original one.
        for v in &s.mesh.vertices {
            assert!(mesh.vertices.contains(v));
        }
    }

    #[test]
    fn zero_error_bound_keeps_curved_surface() {
        let n = 20;
        let geo = BlockGeometry::new([0; 3], [4.0, 4.0, 40.0]);
        let meshes = mesh_labels(&ball(n, 6.0), [n; 3], &geo).unwrap();
        let s = simplify(
            &meshes[0].mesh,
            &SimplifyParams {
                reduction: 100.0,
                max_error_nm: 0.0,
                locked_planes: None,
                keep_components: true,
                distance_bound: true,
            },
        );
        // Only exactly coplanar patches may merge; the ball keeps most of its triangles.
        assert!(s.mesh.triangles.len() * 3 > meshes[0].mesh.triangles.len());
        assert_eq!(s.error_nm, 0.0);
    }

    #[test]
    fn back_to_back_pairs_are_dropped() {
        let mut t = vec![
            [0, 1, 2],
            [1, 3, 2],
            [2, 3, 1],
            [4, 5, 6],
            [0, 2, 1],
            [7, 8, 9],
            [8, 9, 7],
        ];
        drop_folded_pairs(&mut t, &[]);
        // [8, 9, 7] is [7, 8, 9] again, same way round: not a fold.
        assert_eq!(t, vec![[4, 5, 6], [7, 8, 9], [8, 9, 7]]);
        // A fold on three locked vertices was locked there on purpose.
        let mut t = vec![[0, 1, 2], [0, 2, 1], [3, 4, 5], [3, 5, 4]];
        drop_folded_pairs(&mut t, &[true, true, true, false, true, true]);
        assert_eq!(t, vec![[0, 1, 2], [0, 2, 1]]);
    }

    /// Random blobs and one-voxel-thin random walks (neurites) of a few labels.
    fn tangle(n: usize, seed: u64) -> Vec<u32> {
        let mut state = seed;
        let mut next = move |m: usize| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as usize) % m
        };
        let mut v = vec![0u32; n * n * n];
        for label in 1..=6u32 {
            let c = [next(n), next(n), next(n)];
            let r = 2 + next(n / 4);
            for z in 0..n {
                for y in 0..n {
                    for x in 0..n {
                        let d2 = [x, y, z]
                            .iter()
                            .zip(c)
                            .map(|(&a, b)| (a as i64 - b as i64).pow(2))
                            .sum::<i64>();
                        if d2 <= (r * r) as i64 {
                            v[(z * n + y) * n + x] = label;
                        }
                    }
                }
            }
            let mut p = c;
            for _ in 0..4 * n {
                let axis = next(3);
                p[axis] = (p[axis] + n + next(3) - 1) % n;
                v[(p[2] * n + p[1]) * n + p[0]] = label;
            }
        }
        v
    }

    #[test]
    fn every_original_vertex_stays_within_the_bound() {
        let n = 36;
        let geo = BlockGeometry::new([0; 3], [8.0, 8.0, 8.0]);
        for seed in 1..=3 {
            let labels = tangle(n, seed);
            let meshes = mesh_labels(&labels, [n; 3], &geo).unwrap();
            for bound in [4.0f32, 12.0, 30.0] {
                for reduction in [1.0, 100.0] {
                    for lm in &meshes {
                        let params = SimplifyParams {
                            reduction,
                            max_error_nm: bound,
                            locked_planes: Some(geo.face_planes_nm([n; 3])),
                            keep_components: true,
                            distance_bound: true,
                        };
                        let s = simplify(&lm.mesh, &params).mesh;
                        assert!(s.triangles.len() <= lm.mesh.triangles.len());
                        let topo = s.topology();
                        assert_eq!(topo.misoriented_edges, 0, "{topo:?}");
                        let index = crate::distance::SurfaceIndex::new(&s, f64::from(bound));
                        for v in &lm.mesh.vertices {
                            assert!(
                                index.within(*v, f64::from(bound) + 1e-3),
                                "seed {seed} label {} bound {bound}: {v:?} left too far",
                                lm.label
                            );
                        }
                        // Locked faces keep every vertex on them.
                        for v in lm.mesh.vertices.iter().filter(|v| {
                            let planes = geo.face_planes_nm([n; 3]);
                            (0..3).any(|i| v[i] == planes[i][0] || v[i] == planes[i][1])
                        }) {
                            assert!(s.vertices.contains(v), "face vertex {v:?} moved");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn distance_bound_keeps_thin_spikes() {
        // A ball with a one-voxel-thin spike: the quadric estimate lets the spike retract.
        let n = 40;
        let mut labels = ball(n, 9.0);
        let c = n / 2;
        for x in c..n - 2 {
            labels[(c * n + c) * n + x] = 7;
        }
        let geo = BlockGeometry::new([0; 3], [8.0; 3]);
        let mesh = &mesh_labels(&labels, [n; 3], &geo).unwrap()[0].mesh;
        let bound = 16.0;
        let s = simplify(
            mesh,
            &SimplifyParams {
                max_error_nm: bound,
                ..Default::default()
            },
        )
        .mesh;
        assert!(s.triangles.len() * 4 < mesh.triangles.len());
        // Watertight; kept vertices may pinch it (an edge of four triangles).
        let topo = s.topology();
        assert_eq!(
            (topo.boundary_edges, topo.misoriented_edges),
            (0, 0),
            "{topo:?}"
        );
        let index = crate::distance::SurfaceIndex::new(&s, f64::from(bound));
        for v in &mesh.vertices {
            assert!(
                index.within(*v, f64::from(bound)),
                "{v:?} left beyond {bound} nm"
            );
        }
    }

    #[test]
    fn specks_survive_only_when_asked() {
        // A big ball and a one-voxel speck of the same label.
        let n = 40;
        let mut labels = ball(n, 15.0);
        labels[(2 * n + 2) * n + 2] = 7;
        let geo = BlockGeometry::new([0; 3], [8.0; 3]);
        let mesh = &mesh_labels(&labels, [n; 3], &geo).unwrap()[0].mesh;
        let speck = [16.0f32, 16.0, 20.0];
        assert!(mesh.vertices.contains(&speck));
        let mut params = SimplifyParams {
            reduction: 100.0,
            max_error_nm: 40.0,
            locked_planes: None,
            keep_components: false,
            distance_bound: true,
        };
        assert!(!simplify(mesh, &params).mesh.vertices.contains(&speck));
        params.keep_components = true;
        let kept = simplify(mesh, &params).mesh;
        assert!(kept.vertices.contains(&speck));
        assert!(kept.topology().is_closed());
    }

    #[test]
    fn many_meshes_on_threads_match_one_by_one() {
        let geo = BlockGeometry::new([0; 3], [8.0; 3]);
        let meshes: Vec<Mesh> = [6.0, 9.0, 12.0]
            .iter()
            .map(|&r| {
                mesh_labels(&ball(30, r), [30; 3], &geo)
                    .unwrap()
                    .remove(0)
                    .mesh
            })
            .collect();
        let refs: Vec<&Mesh> = meshes.iter().collect();
        let params = SimplifyParams::default();
        let many = simplify_many(&refs, &params, 3);
        for (m, s) in meshes.iter().zip(&many) {
            assert_eq!(*s, simplify(m, &params));
        }
        assert!(simplify_many(&[], &params, 4).is_empty());
    }

    #[test]
    fn empty_mesh_stays_empty() {
        let s = simplify(&Mesh::default(), &SimplifyParams::default());
        assert!(s.mesh.triangles.is_empty());
    }
}
