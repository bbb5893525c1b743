//! Mesh simplification with meshoptimizer, keeping chunk faces in place.

use meshopt::SimplifyOptions;

use crate::Mesh;

/// How far to simplify.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimplifyParams {
    /// Aim for `triangles / reduction` triangles (100 keeps about 1 %). The error bound wins:
    /// simplification stops earlier when the next collapse would exceed it.
    pub reduction: f32,
    /// Largest allowed deviation in nm, as meshoptimizer measures it (a quadric distance to
    /// the original surface).
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
    /// Hold `max_error_nm` as a bound on every original vertex's distance to the result:
    /// meshoptimizer's quadric error is held to a quarter of it, and vertices a round leaves
    /// farther are kept in another round. About twice the time; off, only the quadric
    /// estimate bounds the error (thin protrusions can retract several times farther).
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
    let indices: &[u32] = mesh.triangles.as_flattened();
    let mut locks: Vec<bool> = match params.locked_planes {
        Some(planes) => mesh
            .vertices
            .iter()
            .map(|v| (0..3).any(|i| v[i] == planes[i][0] || v[i] == planes[i][1]))
            .collect(),
        None => vec![false; mesh.vertices.len()],
    };
    let target = ((indices.len() as f64 / params.reduction.max(1.0) as f64) as usize / 3) * 3;
    let bound = params.max_error_nm.max(0.0);
    let quadric = if params.distance_bound {
        bound * QUADRIC_SHARE
    } else {
        bound
    };
    let mut round = 0;
    loop {
        let mut error = 0.0f32;
        let out = meshopt::simplify_with_locks_decoder(
            indices,
            &mesh.vertices,
            &locks,
            target,
            quadric,
            SimplifyOptions::LockBorder | SimplifyOptions::ErrorAbsolute,
            Some(&mut error),
        );
        let mut triangles: Vec<[u32; 3]> =
            out.chunks_exact(3).map(|t| [t[0], t[1], t[2]]).collect();
        drop_folded_pairs(&mut triangles);
        if params.keep_components {
            restore_vanished_components(mesh, &mut triangles);
        }
        // meshoptimizer's error is a quadric estimate: thin parts can retract far beyond
        // it. Original vertices left farther than the bound from the result are locked
        // (kept), and the simplification runs again; a few rounds settle it.
        round += 1;
        let far = if params.distance_bound && round < DISTANCE_ROUNDS && bound > 0.0 {
            far_vertices(mesh, &triangles, bound, params.keep_components)
        } else {
            Vec::new()
        };
        if far.is_empty() {
            let mut simplified = Mesh {
                vertices: mesh.vertices.clone(),
                triangles,
            };
            simplified.compact();
            return Simplified {
                mesh: simplified,
                error_nm: error,
            };
        }
        for v in far {
            locks[v as usize] = true;
        }
    }
}

/// meshoptimizer's quadric error is held to this share of the bound: the quadric
/// underestimates how far thin parts retract.
const QUADRIC_SHARE: f32 = 0.25;

/// Simplification rounds at most: each later one keeps the vertices the one before left
/// too far from the surface.
const DISTANCE_ROUNDS: usize = 3;

/// The vertices of `mesh` (used by a triangle) farther than `bound` from `triangles`
/// (indices into the same vertices); with `specks` false, not those of vanished pieces.
fn far_vertices(mesh: &Mesh, triangles: &[[u32; 3]], bound: f32, specks: bool) -> Vec<u32> {
    let mut kept = vec![false; mesh.vertices.len()];
    for t in triangles {
        for &v in t {
            kept[v as usize] = true;
        }
    }
    // Pieces allowed to vanish are not measured.
    if !specks {
        for (k, gone) in kept.iter_mut().zip(vanished_pieces(mesh, triangles)) {
            *k |= gone;
        }
    }
    let index =
        crate::distance::SurfaceIndex::from_parts(&mesh.vertices, triangles, f64::from(bound));
    let mut seen = vec![false; mesh.vertices.len()];
    let mut far = Vec::new();
    for t in &mesh.triangles {
        for &v in t {
            let i = v as usize;
            if seen[i] || kept[i] {
                continue;
            }
            seen[i] = true;
            if !index.within(mesh.vertices[i], f64::from(bound)) {
                far.push(v);
            }
        }
    }
    far
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

/// For each vertex of `original`: whether its vertex-connected piece has no vertex left in
/// `triangles` (the piece vanished).
fn vanished_pieces(original: &Mesh, triangles: &[[u32; 3]]) -> Vec<bool> {
    let n = original.vertices.len();
    let mut parent: Vec<u32> = (0..n as u32).collect();
    fn find(parent: &mut [u32], mut v: u32) -> u32 {
        while parent[v as usize] != v {
            let up = parent[parent[v as usize] as usize];
            parent[v as usize] = up;
            v = up;
        }
        v
    }
    for t in &original.triangles {
        let a = find(&mut parent, t[0]);
        for &v in &t[1..] {
            let b = find(&mut parent, v);
            if a != b {
                parent[b as usize] = a;
            }
        }
    }
    let mut alive = vec![false; n];
    for t in triangles {
        for &v in t {
            let r = find(&mut parent, v);
            alive[r as usize] = true;
        }
    }
    (0..n as u32)
        .map(|v| !alive[find(&mut parent, v) as usize])
        .collect()
}

/// Appends the original triangles of every vertex-connected piece of `original` none of whose
/// vertices `triangles` still uses.
fn restore_vanished_components(original: &Mesh, triangles: &mut Vec<[u32; 3]>) {
    let gone = vanished_pieces(original, triangles);
    for t in &original.triangles {
        if gone[t[0] as usize] {
            triangles.push(*t);
        }
    }
}

/// Removes pairs of triangles on the same three vertices facing opposite ways. meshoptimizer
/// occasionally collapses a thin part into such a back-to-back sheet; its two triangles
/// enclose nothing, and their edges would each carry four triangles. Dropping both leaves
/// the surrounding surface closed.
fn drop_folded_pairs(triangles: &mut Vec<[u32; 3]>) {
    use std::collections::HashMap;
    // Rotated to start at the smallest index: (start, next, last) keeps the orientation.
    let canonical = |t: &[u32; 3]| {
        let k = (0..3).min_by_key(|&k| t[k]).unwrap_or(0);
        [t[k], t[(k + 1) % 3], t[(k + 2) % 3]]
    };
    let mut seen: HashMap<[u32; 3], usize> = HashMap::with_capacity(triangles.len());
    let mut dropped = vec![false; triangles.len()];
    for (i, t) in triangles.iter().enumerate() {
        let c = canonical(t);
        let flipped = [c[0], c[2], c[1]];
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
        drop_folded_pairs(&mut t);
        // [8, 9, 7] is [7, 8, 9] again, same way round: not a fold.
        assert_eq!(t, vec![[4, 5, 6], [7, 8, 9], [8, 9, 7]]);
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
