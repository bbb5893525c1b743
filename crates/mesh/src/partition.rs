//! Cutting a block's label meshes into fragments by who owns each marching-cubes cell, so
//! that blocks which overlap agree on every triangle's fragment.
//!
//! A triangle lies in one cell (2×2×2 voxels); its owner is the cell's first corner, in
//! z, then y, then x order, that carries the triangle's label. Every block that contains the
//! cell computes the same corner, so a caller that keeps, in each block, only the triangles
//! whose owning voxel it is responsible for partitions the global surface: no triangle is
//! lost or kept twice where blocks overlap.

use std::collections::HashMap;

use crate::{BlockGeometry, LabelMesh, Mesh};

/// Splits `meshes` (from [`crate::mesh_labels`] on `labels` of `shape`, z y x, with
/// `geometry`) into fragments keyed by `owner[voxel]` of each triangle's owning voxel; key
/// 0 drops the triangle. Fragments come back sorted by key, vertices in first-use order.
pub fn partition_by_owner(
    labels: &[u64],
    shape: [usize; 3],
    geometry: &BlockGeometry,
    meshes: &[LabelMesh],
    owner: &[u64],
) -> Vec<(u64, Mesh)> {
    let [nz, ny, nx] = shape;
    if nz < 2 || ny < 2 || nx < 2 || labels.len() != nz * ny * nx || owner.len() != labels.len() {
        return Vec::new();
    }
    let extent = [nx as i64, ny as i64, nz as i64];
    let index = |p: [i64; 3]| (p[2] as usize * ny + p[1] as usize) * nx + p[0] as usize;
    let mut out: Vec<(u64, Mesh)> = Vec::new();
    let mut slot: HashMap<u64, usize> = HashMap::new();
    for lm in meshes {
        // Doubled block-local coordinates: every vertex is on a half-voxel position.
        let doubled: Vec<[i64; 3]> = lm
            .mesh
            .vertices
            .iter()
            .map(|v| {
                std::array::from_fn(|d| {
                    ((f64::from(v[d]) - geometry.offset_nm[d]) * 2.0 / geometry.resolution[d])
                        .round() as i64
                        - 2 * geometry.origin[d]
                })
            })
            .collect();
        // Per fragment touched by this label: its index in `out` and a vertex remap.
        let mut remaps: HashMap<u64, Vec<u32>> = HashMap::new();
        for t in &lm.mesh.triangles {
            let cell: [i64; 3] = std::array::from_fn(|d| {
                let s: i64 = t.iter().map(|&i| doubled[i as usize][d]).sum();
                s.div_euclid(6).clamp(0, extent[d] - 2)
            });
            let mut key = 0;
            'corners: for dz in 0..2 {
                for dy in 0..2 {
                    for dx in 0..2 {
                        let i = index([cell[0] + dx, cell[1] + dy, cell[2] + dz]);
                        if labels[i] == lm.label {
                            key = owner[i];
                            break 'corners;
                        }
                    }
                }
            }
            if key == 0 {
                continue;
            }
            let k = *slot.entry(key).or_insert_with(|| {
                out.push((key, Mesh::default()));
                out.len() - 1
            });
            let remap = remaps
                .entry(key)
                .or_insert_with(|| vec![u32::MAX; lm.mesh.vertices.len()]);
            let mesh = &mut out[k].1;
            let tri = t.map(|v| {
                let r = &mut remap[v as usize];
                if *r == u32::MAX {
                    mesh.vertices.push(lm.mesh.vertices[v as usize]);
                    *r = (mesh.vertices.len() - 1) as u32;
                }
                *r
            });
            mesh.triangles.push(tri);
        }
    }
    out.sort_by_key(|(k, _)| *k);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh_labels;

    /// A label crossing the boundary between two overlapping blocks: each block keeps the
    /// triangles owned by its own voxels, and the two halves stitch into the closed surface.
    #[test]
    fn overlapping_blocks_partition_the_surface() {
        // 8 × 6 × 6 voxels (x, y, z); label 7 is a box from x = 1 to 6 inside a background
        // of 0, padded so the surface is closed.
        let (nx, ny, nz) = (8usize, 6usize, 6usize);
        let mut labels = vec![0u64; nx * ny * nz];
        for z in 1..5 {
            for y in 1..5 {
                for x in 1..7 {
                    labels[(z * ny + y) * nx + x] = 7;
                }
            }
        }
        let whole =
            mesh_labels(&labels, [nz, ny, nx], &BlockGeometry::new([0; 3], [1.0; 3])).unwrap();
        let total = whole[0].mesh.triangles.len();
        // Blocks x in [0, 5] and [3, 7] (both hold the x = 3..=4 cells' voxels); block A
        // owns voxels x < 4, block B the rest.
        let mut halves = Vec::new();
        for (x0, x1, own) in [(0usize, 6usize, 0..4), (3, 8, 4..8)] {
            let w = x1 - x0;
            let mut sub = Vec::new();
            let mut owner = Vec::new();
            for z in 0..nz {
                for y in 0..ny {
                    for x in x0..x1 {
                        sub.push(labels[(z * ny + y) * nx + x]);
                        owner.push(if own.contains(&x) { 1 } else { 0 });
                    }
                }
            }
            let g = BlockGeometry::new([x0 as i64, 0, 0], [1.0; 3]);
            let m = mesh_labels(&sub, [nz, ny, w], &g).unwrap();
            let parts = partition_by_owner(&sub, [nz, ny, w], &g, &m, &owner);
            assert_eq!(parts.len(), 1);
            halves.push(parts[0].1.clone());
        }
        assert_eq!(
            halves[0].triangles.len() + halves[1].triangles.len(),
            total,
            "every triangle kept exactly once"
        );
        assert!(halves[0].topology().boundary_edges > 0);
        let stitched = Mesh::stitch([&halves[0], &halves[1]]);
        assert!(stitched.topology().is_closed(), "{:?}", stitched.topology());
    }
}
