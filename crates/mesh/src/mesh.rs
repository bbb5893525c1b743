//! The triangle mesh type and the topology checks used to prove meshes closed and stitchable.

use std::collections::HashMap;

use crate::MeshError;

/// An indexed triangle mesh: positions in nm (x, y, z) and counter-clockwise triangles whose
/// right-hand normal points out of the segment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mesh {
    pub vertices: Vec<[f32; 3]>,
    pub triangles: Vec<[u32; 3]>,
}

/// How far a mesh is from a closed, consistently oriented 2-manifold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Topology {
    /// Undirected edges used by exactly one triangle (holes, or an open chunk face).
    pub boundary_edges: usize,
    /// Undirected edges used by more than two triangles.
    pub non_manifold_edges: usize,
    /// Edges whose two triangles run along them in the same direction (flipped orientation).
    pub misoriented_edges: usize,
}

impl Topology {
    /// A closed, consistently oriented surface: every edge has exactly two triangles that
    /// traverse it in opposite directions.
    pub fn is_closed(&self) -> bool {
        *self == Topology::default()
    }
}

impl Mesh {
    /// Checks that every index names a vertex.
    pub fn validate(&self) -> Result<(), MeshError> {
        for t in &self.triangles {
            for &i in t {
                if i as usize >= self.vertices.len() {
                    return Err(MeshError::IndexOutOfRange {
                        index: i,
                        vertices: self.vertices.len(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Counts boundary, non-manifold and misoriented edges.
    pub fn topology(&self) -> Topology {
        // Per undirected edge: (triangles along lo→hi, triangles along hi→lo).
        let mut edges: HashMap<(u32, u32), (u32, u32)> =
            HashMap::with_capacity(self.triangles.len() * 3 / 2);
        for t in &self.triangles {
            for k in 0..3 {
                let (a, b) = (t[k], t[(k + 1) % 3]);
                let entry = edges.entry((a.min(b), a.max(b))).or_default();
                if a < b {
                    entry.0 += 1;
                } else {
                    entry.1 += 1;
                }
            }
        }
        let mut topo = Topology::default();
        for &(fwd, back) in edges.values() {
            match fwd + back {
                1 => topo.boundary_edges += 1,
                2 if fwd != 1 => topo.misoriented_edges += 1,
                2 => {}
                _ => topo.non_manifold_edges += 1,
            }
        }
        topo
    }

    /// Joins meshes into one, merging vertices with bit-identical positions: how neighbouring
    /// chunks' fragments of one segment are stitched.
    pub fn stitch<'a>(meshes: impl IntoIterator<Item = &'a Mesh>) -> Mesh {
        let mut out = Mesh::default();
        let mut seen: HashMap<[u32; 3], u32> = HashMap::new();
        for mesh in meshes {
            let remap: Vec<u32> = mesh
                .vertices
                .iter()
                .map(|v| {
                    *seen.entry(v.map(f32::to_bits)).or_insert_with(|| {
                        out.vertices.push(*v);
                        (out.vertices.len() - 1) as u32
                    })
                })
                .collect();
            out.triangles
                .extend(mesh.triangles.iter().map(|t| t.map(|i| remap[i as usize])));
        }
        out
    }

    /// Drops vertices no triangle uses, keeping the order of the rest.
    pub fn compact(&mut self) {
        let mut remap = vec![u32::MAX; self.vertices.len()];
        let mut kept = Vec::new();
        for t in &mut self.triangles {
            for i in t.iter_mut() {
                let r = &mut remap[*i as usize];
                if *r == u32::MAX {
                    *r = kept.len() as u32;
                    kept.push(self.vertices[*i as usize]);
                }
                *i = *r;
            }
        }
        self.vertices = kept;
    }

    /// Axis-aligned bounds (min, max) of the vertices, or `None` for an empty mesh.
    pub fn bounds(&self) -> Option<([f32; 3], [f32; 3])> {
        let first = *self.vertices.first()?;
        Some(self.vertices.iter().fold((first, first), |(lo, hi), v| {
            (
                [lo[0].min(v[0]), lo[1].min(v[1]), lo[2].min(v[2])],
                [hi[0].max(v[0]), hi[1].max(v[1]), hi[2].max(v[2])],
            )
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tetrahedron() -> Mesh {
        Mesh {
            vertices: vec![[0.0; 3], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            triangles: vec![[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]],
        }
    }

    #[test]
    fn tetrahedron_is_closed() {
        assert!(tetrahedron().topology().is_closed());
    }

    #[test]
    fn missing_face_leaves_three_boundary_edges() {
        let mut m = tetrahedron();
        m.triangles.pop();
        assert_eq!(m.topology().boundary_edges, 3);
    }

    #[test]
    fn flipped_face_is_misoriented() {
        let mut m = tetrahedron();
        m.triangles[3] = [1, 3, 2];
        assert_eq!(m.topology().misoriented_edges, 3);
    }

    #[test]
    fn stitching_merges_identical_positions_only() {
        let a = Mesh {
            vertices: vec![[0.0; 3], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
            triangles: vec![[0, 1, 2]],
        };
        let b = Mesh {
            vertices: vec![[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]],
            triangles: vec![[0, 1, 2]],
        };
        let s = Mesh::stitch([&a, &b]);
        assert_eq!(s.vertices.len(), 4);
        assert_eq!(s.triangles, vec![[0, 1, 2], [1, 3, 2]]);
        assert_eq!(s.topology().boundary_edges, 4);
    }

    #[test]
    fn validate_rejects_out_of_range_indices() {
        let mut m = tetrahedron();
        m.triangles.push([0, 1, 9]);
        assert!(matches!(
            m.validate(),
            Err(MeshError::IndexOutOfRange { index: 9, .. })
        ));
    }

    #[test]
    fn compact_drops_unused_vertices() {
        let mut m = tetrahedron();
        m.vertices.push([5.0; 3]);
        m.triangles.pop();
        m.compact();
        assert_eq!(m.vertices.len(), 4);
        m.triangles.truncate(1);
        m.compact();
        assert_eq!(m.vertices.len(), 3);
        assert_eq!(m.triangles, vec![[0, 1, 2]]);
    }
}
