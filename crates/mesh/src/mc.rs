//! Multilabel marching cubes: every segment of a label block meshed in one pass.
//!
//! ## Grid
//!
//! Voxel centres sit on integer global voxel coordinates (the zmesh / Igneous convention), so
//! a point at voxel coordinates `p` lies at `p × resolution + offset_nm` nm. A cell is the
//! cube between 2×2×2 neighbouring voxel centres; each label present in a cell that does not
//! fill it gets the cell's triangles for the configuration "corner == label". Vertices sit on
//! the midpoints of cell edges whose two voxels differ, i.e. on half-integer coordinates of
//! the global grid, and are computed from those global integers alone. Two chunks that both
//! see an edge therefore produce bit-identical positions for it.
//!
//! ## Chunks
//!
//! A block of `n` voxels along an axis has `n - 1` cells along it. To tile a dataset, mesh
//! each chunk of `s` voxels from a block of `s + 1`: the chunk plus a 1-voxel overlap into
//! the neighbouring chunk on each high face. Chunk `k`'s cells then cover voxel centres
//! `[k·s, (k+1)·s]` and consecutive chunks share exactly the plane of centres between them,
//! where both produce the same boundary loop. A segment fully inside a block comes out
//! closed; one crossing a block face comes out open along that face and closes when the
//! chunks' meshes are stitched (vertices merged by exact position). The outer half voxel of
//! the dataset is not meshed: a segment touching the dataset edge stays open there, unless
//! the caller pads the volume with background.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

use crate::tables::{self, CaseTable, EDGE_CORNERS};
use crate::{Mesh, MeshError};

/// Where a label block sits in the dataset and how big its voxels are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockGeometry {
    /// Global voxel coordinates (x, y, z) of the block's first voxel (`labels[0]`).
    pub origin: [i64; 3],
    /// Voxel size in nm (x, y, z).
    pub resolution: [f64; 3],
    /// Added to every position, nm (x, y, z).
    pub offset_nm: [f64; 3],
}

impl BlockGeometry {
    /// A block at global voxel `origin` with voxels of `resolution` nm and no extra offset.
    pub fn new(origin: [i64; 3], resolution: [f64; 3]) -> Self {
        Self {
            origin,
            resolution,
            offset_nm: [0.0; 3],
        }
    }

    /// Position in nm of a point given in doubled global voxel coordinates (`2·p`, so that
    /// edge midpoints are integers). The one formula every vertex goes through: the same
    /// integers give the same bits, whichever chunk asks.
    pub fn position_nm(&self, doubled: [i64; 3]) -> [f32; 3] {
        std::array::from_fn(|i| {
            (doubled[i] as f64 * 0.5 * self.resolution[i] + self.offset_nm[i]) as f32
        })
    }

    /// The block's six boundary planes in nm, `[low, high]` per axis (x, y, z), for a block
    /// of `shape` (z, y, x): the voxel-centre planes of its first and last voxels, along
    /// which its meshes are cut open. Computed by [`Self::position_nm`], so vertices on them
    /// compare equal exactly.
    pub fn face_planes_nm(&self, shape: [usize; 3]) -> [[f32; 2]; 3] {
        let extent = [shape[2], shape[1], shape[0]];
        let lo = self.position_nm(self.origin.map(|o| 2 * o));
        let hi = self.position_nm(std::array::from_fn(|i| {
            2 * (self.origin[i] + extent[i].max(1) as i64 - 1)
        }));
        std::array::from_fn(|i| [lo[i], hi[i]])
    }

    fn check(&self) -> Result<(), MeshError> {
        if self.resolution.iter().all(|r| r.is_finite() && *r > 0.0)
            && self.offset_nm.iter().all(|o| o.is_finite())
        {
            Ok(())
        } else {
            Err(MeshError::Resolution(self.resolution))
        }
    }
}

/// One segment's mesh.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelMesh {
    pub label: u64,
    pub mesh: Mesh,
}

/// A label type the mesher reads: any unsigned integer up to 64 bits; 0 is background and
/// gets no mesh.
pub trait Label: Copy + Eq + Into<u64> {}
impl<T: Copy + Eq + Into<u64>> Label for T {}

static TABLE: OnceLock<CaseTable> = OnceLock::new();

/// No vertex yet on this edge for this side.
const NONE: u32 = u32::MAX;

/// Multiplicative hashing for label keys: labels are already well spread, and SipHash would
/// cost more than the rest of a cell's work.
#[derive(Default)]
struct LabelHasher(u64);

impl Hasher for LabelHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (v ^ (v >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type LabelMap = HashMap<u64, u32, BuildHasherDefault<LabelHasher>>;

/// Meshes every non-zero label of a block in one pass over its cells.
///
/// `labels` holds `shape = [nz, ny, nx]` voxels in C order: x fastest, then y, then z (a
/// NumPy `(z, y, x)` array, or a Fortran-order `(x, y, z)` one). Meshes come back sorted by
/// label; a label whose voxels fill every cell they touch (impossible unless it fills the
/// block) or that has no cell gets none.
pub fn mesh_labels<L: Label>(
    labels: &[L],
    shape: [usize; 3],
    geometry: &BlockGeometry,
) -> Result<Vec<LabelMesh>, MeshError> {
    geometry.check()?;
    let [nz, ny, nx] = shape;
    let expected = nz
        .checked_mul(ny)
        .and_then(|v| v.checked_mul(nx))
        .ok_or(MeshError::BlockTooLarge(shape))?;
    if labels.len() != expected {
        return Err(MeshError::BlockSize {
            shape,
            expected,
            got: labels.len(),
        });
    }
    if nx.max(ny).max(nz) >= (1 << 30) {
        return Err(MeshError::BlockTooLarge(shape));
    }
    if nx < 2 || ny < 2 || nz < 2 {
        return Ok(Vec::new());
    }
    let table = TABLE.get_or_init(tables::build);
    let mut mesher = Mesher {
        table,
        geometry,
        nx,
        x_edges: [vec![[NONE; 2]; nx * ny], vec![[NONE; 2]; nx * ny]],
        y_edges: [vec![[NONE; 2]; nx * ny], vec![[NONE; 2]; nx * ny]],
        z_edges: vec![[NONE; 2]; nx * ny],
        ids: LabelMap::default(),
        labels: Vec::new(),
        meshes: Vec::new(),
        last: None,
    };
    let plane = nx * ny;
    for z in 0..nz - 1 {
        if z > 0 {
            // Plane z + 1 reuses the cache of plane z - 1; z-edges live one slab only.
            let p1 = (z + 1) & 1;
            mesher.x_edges[p1].fill([NONE; 2]);
            mesher.y_edges[p1].fill([NONE; 2]);
            mesher.z_edges.fill([NONE; 2]);
        }
        for y in 0..ny - 1 {
            let base = z * plane + y * nx;
            let r00 = &labels[base..base + nx];
            let r10 = &labels[base + nx..base + 2 * nx];
            let r01 = &labels[base + plane..base + plane + nx];
            let r11 = &labels[base + plane + nx..base + plane + 2 * nx];
            for x in 0..nx - 1 {
                let c = [
                    r00[x],
                    r00[x + 1],
                    r10[x],
                    r10[x + 1],
                    r01[x],
                    r01[x + 1],
                    r11[x],
                    r11[x + 1],
                ];
                let first = c[0];
                // The common case by far: one label fills the cell and nothing is crossed.
                if c[1] == first
                    && c[2] == first
                    && c[3] == first
                    && c[4] == first
                    && c[5] == first
                    && c[6] == first
                    && c[7] == first
                {
                    continue;
                }
                mesher.cell([x, y, z], &c.map(Into::into));
            }
        }
    }
    let mut out: Vec<LabelMesh> = mesher
        .labels
        .into_iter()
        .zip(mesher.meshes)
        .map(|(label, mesh)| LabelMesh { label, mesh })
        .collect();
    out.sort_unstable_by_key(|m| m.label);
    Ok(out)
}

struct Mesher<'a> {
    table: &'a CaseTable,
    geometry: &'a BlockGeometry,
    nx: usize,
    /// Vertex per x-edge of a voxel plane (by plane parity), for the label of the edge's low
    /// end (`[0]`) and high end (`[1]`); likewise y-edges, and z-edges of the current slab.
    x_edges: [Vec<[u32; 2]>; 2],
    y_edges: [Vec<[u32; 2]>; 2],
    z_edges: Vec<[u32; 2]>,
    ids: LabelMap,
    labels: Vec<u64>,
    meshes: Vec<Mesh>,
    /// The last label looked up and its mesh: neighbouring cells mostly share labels.
    last: Option<(u64, u32)>,
}

impl Mesher<'_> {
    fn mesh_id(&mut self, label: u64) -> u32 {
        if let Some((l, id)) = self.last {
            if l == label {
                return id;
            }
        }
        let next = self.labels.len() as u32;
        let id = *self.ids.entry(label).or_insert(next);
        if id == next {
            self.labels.push(label);
            self.meshes.push(Mesh::default());
        }
        self.last = Some((label, id));
        id
    }

    #[inline(never)]
    fn cell(&mut self, [x, y, z]: [usize; 3], c: &[u64; 8]) {
        for i in 0..8 {
            let label = c[i];
            if label == 0 || c[..i].contains(&label) {
                continue;
            }
            let mut config = 0u8;
            for (j, &l) in c.iter().enumerate() {
                config |= ((l == label) as u8) << j;
            }
            let id = self.mesh_id(label);
            let table = self.table;
            // A loop's triangles share its vertices: look each edge up once per cell.
            let mut ids = [NONE; 12];
            for tri in table.triangles(config) {
                let t = tri.map(|e| {
                    let slot = &mut ids[e as usize];
                    if *slot == NONE {
                        let low_side = c[EDGE_CORNERS[e as usize].0 as usize] == label;
                        *slot = self.vertex(id, [x, y, z], e, low_side);
                    }
                    *slot
                });
                self.meshes[id as usize].triangles.push(t);
            }
        }
    }

    /// The vertex of mesh `id` on cube edge `e` of the cell at `x, y, z`; `low_side` says the
    /// label sits at the edge's low end.
    #[inline]
    fn vertex(&mut self, id: u32, [x, y, z]: [usize; 3], e: u8, low_side: bool) -> u32 {
        let (a, b) = ((e & 1) as usize, ((e >> 1) & 1) as usize);
        let nx = self.nx;
        let slot = match e >> 2 {
            0 => &mut self.x_edges[(z + b) & 1][(y + a) * nx + x],
            1 => &mut self.y_edges[(z + b) & 1][y * nx + x + a],
            _ => &mut self.z_edges[(y + b) * nx + x + a],
        };
        let side = usize::from(!low_side);
        if slot[side] != NONE {
            return slot[side];
        }
        let mesh = &mut self.meshes[id as usize];
        let v = mesh.vertices.len() as u32;
        slot[side] = v;
        let m = tables::edge_midpoint2(e);
        let g = self.geometry.origin;
        let doubled = [
            2 * (g[0] + x as i64) + m[0] as i64,
            2 * (g[1] + y as i64) + m[1] as i64,
            2 * (g[2] + z as i64) + m[2] as i64,
        ];
        mesh.vertices.push(self.geometry.position_nm(doubled));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Block of `n`³ zeros with `label` on the voxels `inside` says.
    fn block(n: usize, mut inside: impl FnMut(usize, usize, usize) -> u64) -> Vec<u64> {
        let mut v = vec![0u64; n * n * n];
        for z in 0..n {
            for y in 0..n {
                for x in 0..n {
                    v[(z * n + y) * n + x] = inside(x, y, z);
                }
            }
        }
        v
    }

    /// Signed volume enclosed by a closed mesh (positive when normals point outwards).
    fn volume(m: &Mesh) -> f64 {
        m.triangles
            .iter()
            .map(|t| {
                let [a, b, c] = t.map(|i| m.vertices[i as usize].map(f64::from));
                (a[0] * (b[1] * c[2] - b[2] * c[1]) - a[1] * (b[0] * c[2] - b[2] * c[0])
                    + a[2] * (b[0] * c[1] - b[1] * c[0]))
                    / 6.0
            })
            .sum()
    }

    /// Triangles as position triples rotated to start at their smallest vertex, so two
    /// meshes' triangles compare regardless of indexing.
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

    fn reversed(set: &HashSet<[[u32; 3]; 3]>) -> HashSet<[[u32; 3]; 3]> {
        set.iter().map(|&[a, b, c]| [a, c, b]).collect()
    }

    #[test]
    fn single_voxel_is_an_octahedron_around_its_centre() {
        let labels = block(3, |x, y, z| if (x, y, z) == (1, 1, 1) { 9 } else { 0 });
        let geo = BlockGeometry {
            origin: [10, 20, 30],
            resolution: [4.0, 4.0, 40.0],
            offset_nm: [1.0, 0.0, 0.0],
        };
        let meshes = mesh_labels(&labels, [3; 3], &geo).unwrap();
        assert_eq!(meshes.len(), 1);
        assert_eq!(meshes[0].label, 9);
        let m = &meshes[0].mesh;
        assert_eq!((m.vertices.len(), m.triangles.len()), (6, 8));
        assert!(m.topology().is_closed());
        let centre = [11.0 * 4.0 + 1.0, 21.0 * 4.0, 31.0 * 40.0];
        let mut expected: Vec<[f32; 3]> = Vec::new();
        for axis in 0..3 {
            for sign in [-1.0, 1.0] {
                let mut p = centre;
                p[axis] += sign * 0.5 * geo.resolution[axis] as f32;
                expected.push(p);
            }
        }
        let mut got = m.vertices.clone();
        let key = |p: &[f32; 3]| p.map(f32::to_bits);
        got.sort_by_key(key);
        expected.sort_by_key(key);
        assert_eq!(got, expected);
        // An octahedron with half-diagonals 2, 2, 20 nm: 4/3 · 2 · 2 · 20.
        assert!((volume(m) - 4.0 / 3.0 * 80.0).abs() < 1e-3, "{}", volume(m));
    }

    #[test]
    fn cube_is_closed_bounded_and_faces_outwards() {
        let labels = block(7, |x, y, z| {
            if (2..5).contains(&x) && (2..5).contains(&y) && (2..5).contains(&z) {
                3
            } else {
                0
            }
        });
        let geo = BlockGeometry::new([0; 3], [8.0, 8.0, 8.0]);
        let meshes = mesh_labels(&labels, [7; 3], &geo).unwrap();
        let m = &meshes[0].mesh;
        assert!(m.topology().is_closed(), "{:?}", m.topology());
        let (lo, hi) = m.bounds().unwrap();
        assert_eq!((lo, hi), ([12.0; 3], [36.0; 3]));
        // The box [1.5, 4.5]³ voxels (27 voxels of 512 nm³) minus its chamfers: 12 edges
        // lose a 1/8-voxel prism along their 2 voxels between centres, and 8 corner octants
        // (1/8 voxel each) keep only a 1/48-voxel tetrahedron.
        let expected = (27.0 - 12.0 * 2.0 / 8.0 - 8.0 * (1.0 / 8.0 - 1.0 / 48.0)) * 512.0;
        assert!(
            (volume(m) - expected).abs() < 1e-2,
            "{} vs {expected}",
            volume(m)
        );
    }

    #[test]
    fn embedded_label_shares_its_surface_with_its_host() {
        // A 2×3×2 box of 5 inside a body of 4, inside background.
        let labels = block(8, |x, y, z| {
            let inner = (3..5).contains(&x) && (2..5).contains(&y) && (3..5).contains(&z);
            let outer = (1..7).contains(&x) && (1..7).contains(&y) && (1..7).contains(&z);
            if inner {
                5
            } else if outer {
                4
            } else {
                0
            }
        });
        let geo = BlockGeometry::new([0; 3], [1.0, 1.0, 1.0]);
        let meshes = mesh_labels(&labels, [8; 3], &geo).unwrap();
        assert_eq!(
            meshes.iter().map(|m| m.label).collect::<Vec<_>>(),
            vec![4, 5]
        );
        let (host, inner) = (&meshes[0].mesh, &meshes[1].mesh);
        assert!(host.topology().is_closed() && inner.topology().is_closed());
        let host_set = triangle_set(host);
        let inner_set = triangle_set(inner);
        // The host's cavity is exactly the inner box's surface, facing the other way.
        assert!(reversed(&inner_set).is_subset(&host_set));
        assert_eq!(
            host_set.len(),
            inner_set.len()
                + triangle_set(
                    &mesh_labels(
                        &block(8, |x, y, z| u64::from(
                            (1..7).contains(&x) && (1..7).contains(&y) && (1..7).contains(&z)
                        )),
                        [8; 3],
                        &geo,
                    )
                    .unwrap()[0]
                        .mesh
                )
                .len()
        );
        assert!(volume(host) > 0.0 && volume(inner) > 0.0);
    }

    #[test]
    fn touching_labels_share_vertices_on_their_interface() {
        // Two boxes side by side along x: 1 on x in 1..4, 2 on x in 4..7.
        let labels = block(8, |x, y, z| {
            let inside = (1..7).contains(&y) && (1..7).contains(&z);
            match x {
                1..4 if inside => 1,
                4..7 if inside => 2,
                _ => 0,
            }
        });
        let geo = BlockGeometry::new([0; 3], [1.0, 1.0, 1.0]);
        let meshes = mesh_labels(&labels, [8; 3], &geo).unwrap();
        let (a, b) = (&meshes[0].mesh, &meshes[1].mesh);
        assert!(a.topology().is_closed() && b.topology().is_closed());
        // Interface triangles (all vertices on the plane x = 3.5) exist in both, reversed.
        let on_plane = |m: &Mesh| -> HashSet<[[u32; 3]; 3]> {
            triangle_set(m)
                .into_iter()
                .filter(|t| t.iter().all(|p| f32::from_bits(p[0]) == 3.5))
                .collect()
        };
        let (ia, ib) = (on_plane(a), on_plane(b));
        assert!(!ia.is_empty());
        assert_eq!(ia, reversed(&ib));
    }

    #[test]
    fn block_edges_stay_open_and_uniform_blocks_have_no_mesh() {
        let full = vec![7u32; 4 * 4 * 4];
        let geo = BlockGeometry::new([0; 3], [1.0; 3]);
        assert!(mesh_labels(&full, [4; 3], &geo).unwrap().is_empty());
        // Half the block: a wall cut open at the block's sides.
        let half: Vec<u32> = (0..64).map(|i| u32::from(i % 4 < 2)).collect();
        let m = &mesh_labels(&half, [4; 3], &geo).unwrap()[0].mesh;
        assert!(m.topology().boundary_edges > 0);
        assert_eq!(m.topology().non_manifold_edges, 0);
    }

    #[test]
    fn bad_shapes_and_resolutions_are_refused() {
        let geo = BlockGeometry::new([0; 3], [1.0; 3]);
        assert!(matches!(
            mesh_labels(&[0u8; 7], [2, 2, 2], &geo),
            Err(MeshError::BlockSize {
                expected: 8,
                got: 7,
                ..
            })
        ));
        let bad = BlockGeometry::new([0; 3], [1.0, 0.0, 1.0]);
        assert!(matches!(
            mesh_labels(&[0u8; 8], [2, 2, 2], &bad),
            Err(MeshError::Resolution(_))
        ));
        assert!(mesh_labels(&[1u8; 4], [1, 2, 2], &geo).unwrap().is_empty());
    }

    #[test]
    fn face_planes_are_the_first_and_last_voxel_centres() {
        let geo = BlockGeometry::new([64, 0, -2], [4.0, 8.0, 40.0]);
        assert_eq!(
            geo.face_planes_nm([3, 5, 65]),
            [[256.0, 512.0], [0.0, 32.0], [-80.0, 0.0]]
        );
    }
}
