//! Chunked meshing end to end: closed meshes, chunk fragments that stitch into exactly the
//! whole-volume mesh, and simplified fragments that still stitch without cracks.

use std::collections::{BTreeMap, HashSet};

use cg_mesh::{mesh_labels, simplify, BlockGeometry, Mesh, SimplifyParams};

/// A seeded xorshift: reproducible volumes without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A `(z, y, x)` volume of `shape` with a background border one voxel thick.
struct Volume {
    shape: [usize; 3],
    labels: Vec<u64>,
}

impl Volume {
    fn new(shape: [usize; 3], mut f: impl FnMut(usize, usize, usize) -> u64) -> Self {
        let [nz, ny, nx] = shape;
        let mut labels = Vec::with_capacity(nz * ny * nx);
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    let border =
                        x == 0 || y == 0 || z == 0 || x == nx - 1 || y == ny - 1 || z == nz - 1;
                    labels.push(if border { 0 } else { f(x, y, z) });
                }
            }
        }
        Self { shape, labels }
    }

    /// Labels drawn at random from `0..=max` per voxel: every cell configuration, ambiguous
    /// faces included, turns up.
    fn noise(shape: [usize; 3], max: u64, seed: u64) -> Self {
        let mut rng = Rng(seed);
        Self::new(shape, |_, _, _| rng.next() % (max + 1))
    }

    /// Blobs: a few labels painted as overlapping balls.
    fn blobs(shape: [usize; 3], seed: u64) -> Self {
        let mut rng = Rng(seed);
        let balls: Vec<([f64; 3], f64, u64)> = (0..12)
            .map(|i| {
                let c = [shape[2], shape[1], shape[0]].map(|n| (rng.next() % n as u64) as f64);
                (c, 2.0 + (rng.next() % 6) as f64, 1 + i % 5)
            })
            .collect();
        Self::new(shape, |x, y, z| {
            let p = [x as f64, y as f64, z as f64];
            balls
                .iter()
                .rev()
                .find(|(c, r, _)| (0..3).map(|i| (p[i] - c[i]).powi(2)).sum::<f64>() <= r * r)
                .map_or(0, |b| b.2)
        })
    }

    /// The sub-block of voxels `lo..hi` (x, y, z, exclusive), in `(z, y, x)` order.
    fn block(&self, lo: [usize; 3], hi: [usize; 3]) -> (Vec<u64>, [usize; 3]) {
        let [_, ny, nx] = self.shape;
        let mut out = Vec::new();
        for z in lo[2]..hi[2] {
            for y in lo[1]..hi[1] {
                let row = (z * ny + y) * nx;
                out.extend_from_slice(&self.labels[row + lo[0]..row + hi[0]]);
            }
        }
        (out, [hi[2] - lo[2], hi[1] - lo[1], hi[0] - lo[0]])
    }
}

const RESOLUTION: [f64; 3] = [4.0, 4.0, 40.0];

/// One chunk's fragments by label, and its block's face planes (nm).
type Chunk = (BTreeMap<u64, Mesh>, [[f32; 2]; 3]);

fn mesh_whole(v: &Volume) -> BTreeMap<u64, Mesh> {
    let geo = BlockGeometry::new([0; 3], RESOLUTION);
    mesh_labels(&v.labels, v.shape, &geo)
        .unwrap()
        .into_iter()
        .map(|m| (m.label, m.mesh))
        .collect()
}

/// Meshes `v` in chunks of `chunk` voxels (x, y, z), each block reaching one voxel into its
/// high neighbours; returns every chunk's fragments per label, with each chunk's face planes.
fn mesh_chunked(v: &Volume, chunk: [usize; 3]) -> Vec<Chunk> {
    let size = [v.shape[2], v.shape[1], v.shape[0]];
    let mut out = Vec::new();
    let starts = |axis: usize| (0..size[axis].saturating_sub(1)).step_by(chunk[axis]);
    for z0 in starts(2) {
        for y0 in starts(1) {
            for x0 in starts(0) {
                let lo = [x0, y0, z0];
                let hi: [usize; 3] = std::array::from_fn(|i| (lo[i] + chunk[i] + 1).min(size[i]));
                let (labels, shape) = v.block(lo, hi);
                let geo = BlockGeometry::new(lo.map(|c| c as i64), RESOLUTION);
                let meshes = mesh_labels(&labels, shape, &geo).unwrap();
                out.push((
                    meshes.into_iter().map(|m| (m.label, m.mesh)).collect(),
                    geo.face_planes_nm(shape),
                ));
            }
        }
    }
    out
}

fn stitch_label(chunks: &[Chunk], label: u64) -> Mesh {
    Mesh::stitch(chunks.iter().filter_map(|(m, _)| m.get(&label)))
}

/// Triangles as position triples starting at their smallest vertex (orientation kept).
fn triangle_set(m: &Mesh) -> HashSet<[[u32; 3]; 3]> {
    m.triangles
        .iter()
        .map(|t| {
            let p = t.map(|i| m.vertices[i as usize].map(f32::to_bits));
            let k = (0..3).min_by_key(|&k| p[k]).unwrap_or(0);
            [p[k], p[(k + 1) % 3], p[(k + 2) % 3]]
        })
        .collect()
}

#[test]
fn labels_inside_the_block_are_closed_manifolds() {
    for seed in 1..4 {
        // Binary noise hits all 256 cell cases many times over.
        for v in [
            Volume::noise([9, 10, 11], 3, seed),
            Volume::noise([24, 24, 24], 1, seed),
            Volume::blobs([20, 24, 28], seed),
        ] {
            let meshes = mesh_whole(&v);
            assert!(!meshes.is_empty());
            for (label, m) in &meshes {
                let topo = m.topology();
                assert!(topo.is_closed(), "seed {seed} label {label}: {topo:?}");
                assert_eq!(topo.boundary_edges, 0);
            }
        }
    }
}

#[test]
fn label_crossing_a_chunk_face_stitches_closed() {
    // One ball straddling the face x = 8 between two chunks of 8 voxels.
    let v = Volume::new([12, 12, 18], |x, y, z| {
        let d2 = (x as f64 - 8.3).powi(2) + (y as f64 - 5.5).powi(2) + (z as f64 - 5.5).powi(2);
        u64::from(d2 <= 16.0) * 42
    });
    let chunks = mesh_chunked(&v, [8, 12, 12]);
    assert_eq!(chunks.len(), 3);
    let (left, right) = (&chunks[0].0[&42], &chunks[1].0[&42]);
    // Each fragment is open along the shared face, and only there.
    for (fragment, chunk) in [(left, &chunks[0]), (right, &chunks[1])] {
        assert!(fragment.topology().boundary_edges > 0);
        let on_face: HashSet<u32> = fragment
            .triangles
            .iter()
            .flat_map(|t| t.iter().copied())
            .filter(|&i| fragment.vertices[i as usize][0] == 8.0 * RESOLUTION[0] as f32)
            .collect();
        assert!(!on_face.is_empty());
        assert!(chunk.1[0].contains(&32.0));
    }
    let stitched = Mesh::stitch([left, right]);
    assert_eq!(stitched.topology().boundary_edges, 0);
    assert!(stitched.topology().is_closed(), "{:?}", stitched.topology());
    assert_eq!(triangle_set(&stitched), triangle_set(&mesh_whole(&v)[&42]));
}

#[test]
fn chunked_meshes_stitch_into_the_whole_volume_mesh() {
    // Chunk corners and edges too: 2×3×2 chunks of uneven size over noise and blobs.
    for (seed, v) in [
        (1, Volume::noise([13, 11, 14], 4, 7)),
        (2, Volume::blobs([22, 25, 27], 9)),
    ] {
        let whole = mesh_whole(&v);
        let chunks = mesh_chunked(&v, [8, 5, 7]);
        for (label, m) in &whole {
            let stitched = stitch_label(&chunks, *label);
            assert!(
                stitched.topology().is_closed(),
                "case {seed} label {label}: {:?}",
                stitched.topology()
            );
            assert_eq!(
                stitched.vertices.len(),
                m.vertices.len(),
                "case {seed} label {label}"
            );
            assert_eq!(
                triangle_set(&stitched),
                triangle_set(m),
                "case {seed} label {label}"
            );
        }
    }
}

#[test]
fn simplification_keeps_chunk_face_vertices_and_stitches_crack_free() {
    let v = Volume::blobs([40, 48, 52], 5);
    let chunks = mesh_chunked(&v, [16, 16, 12]);
    // Without the distance bound: its extra locked vertices may pinch the surface anywhere,
    // which the last check below allows only on the faces. The bounded run follows.
    let params = |planes| SimplifyParams {
        reduction: 50.0,
        max_error_nm: 12.0,
        locked_planes: Some(planes),
        keep_components: true,
        distance_bound: false,
    };
    let mut simplified: Vec<Chunk> = Vec::new();
    let mut before = 0;
    let mut after = 0;
    for (meshes, planes) in &chunks {
        let mut out = BTreeMap::new();
        for (label, m) in meshes {
            let s = simplify(m, &params(*planes));
            assert!(s.error_nm <= 12.0);
            // Every vertex on a face plane survives, at the same position.
            let on_face = |p: &[f32; 3]| (0..3).any(|i| planes[i].contains(&p[i]));
            let kept: HashSet<[u32; 3]> = s
                .mesh
                .vertices
                .iter()
                .map(|p| p.map(f32::to_bits))
                .collect();
            for p in m.vertices.iter().filter(|p| on_face(p)) {
                assert!(
                    kept.contains(&p.map(f32::to_bits)),
                    "label {label}: face vertex {p:?} lost"
                );
            }
            // And the open border is unchanged, edge for edge.
            assert_eq!(border_edges(&s.mesh), border_edges(m), "label {label}");
            before += m.triangles.len();
            after += s.mesh.triangles.len();
            out.insert(*label, s.mesh);
        }
        simplified.push((out, *planes));
    }
    assert!(after * 3 < before, "{before} -> {after}");
    for label in mesh_whole(&v).keys() {
        let stitched = stitch_label(&simplified, *label);
        let topo = stitched.topology();
        assert_eq!(topo.boundary_edges, 0, "label {label}: {topo:?}");
        assert_eq!(topo.misoriented_edges, 0, "label {label}: {topo:?}");
        // A fragment may come to touch its chunk face along an edge between two locked face
        // vertices (meshoptimizer joins them through the interior), and the neighbour has
        // that edge too: a pinch, watertight but non-manifold. It can happen only there.
        for (a, b) in non_manifold_edges(&stitched) {
            let on_face = |p: [f32; 3]| {
                simplified
                    .iter()
                    .any(|(_, pl)| (0..3).any(|i| pl[i].contains(&p[i])))
            };
            assert!(
                on_face(a) && on_face(b),
                "label {label}: non-manifold edge {a:?} {b:?} off the faces"
            );
        }
    }
    // With the distance bound (the default): still crack-free and consistently oriented.
    let bounded: Vec<Chunk> = chunks
        .iter()
        .map(|(meshes, planes)| {
            let p = SimplifyParams {
                distance_bound: true,
                ..params(*planes)
            };
            let out = meshes
                .iter()
                .map(|(label, m)| (*label, simplify(m, &p).mesh))
                .collect();
            (out, *planes)
        })
        .collect();
    for label in mesh_whole(&v).keys() {
        let topo = stitch_label(&bounded, *label).topology();
        assert_eq!(topo.boundary_edges, 0, "label {label}: {topo:?}");
        assert_eq!(topo.misoriented_edges, 0, "label {label}: {topo:?}");
    }
}

/// Undirected edges with more than two triangles, as positions.
fn non_manifold_edges(m: &Mesh) -> Vec<([f32; 3], [f32; 3])> {
    let mut count = std::collections::HashMap::new();
    for t in &m.triangles {
        for k in 0..3 {
            let (a, b) = (t[k], t[(k + 1) % 3]);
            *count.entry((a.min(b), a.max(b))).or_insert(0) += 1;
        }
    }
    count
        .into_iter()
        .filter(|&(_, n)| n > 2)
        .map(|((a, b), _)| (m.vertices[a as usize], m.vertices[b as usize]))
        .collect()
}

/// Boundary edges as position pairs (direction kept).
fn border_edges(m: &Mesh) -> HashSet<([u32; 3], [u32; 3])> {
    let mut directed = HashSet::new();
    for t in &m.triangles {
        for k in 0..3 {
            directed.insert((t[k], t[(k + 1) % 3]));
        }
    }
    directed
        .iter()
        .filter(|(a, b)| !directed.contains(&(*b, *a)))
        .map(|&(a, b)| {
            (
                m.vertices[a as usize].map(f32::to_bits),
                m.vertices[b as usize].map(f32::to_bits),
            )
        })
        .collect()
}
