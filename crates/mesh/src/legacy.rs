//! Neuroglancer's precomputed "legacy" (single-resolution) mesh fragment: uncompressed, read
//! by every Neuroglancer and cloud-volume version.
//!
//! Layout, all little-endian: `u32` vertex count `n`; `n × 3` `f32` positions (x, y, z, nm);
//! then `u32` vertex indices, three per triangle, to the end of the fragment.

use crate::{Mesh, MeshError};

/// Encodes `mesh` as a legacy fragment.
pub fn encode(mesh: &Mesh) -> Result<Vec<u8>, MeshError> {
    mesh.validate()?;
    let n = u32::try_from(mesh.vertices.len())
        .map_err(|_| MeshError::TooManyVertices(mesh.vertices.len()))?;
    let mut out = Vec::with_capacity(4 + 12 * mesh.vertices.len() + 12 * mesh.triangles.len());
    out.extend_from_slice(&n.to_le_bytes());
    for v in mesh.vertices.as_flattened() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for i in mesh.triangles.as_flattened() {
        out.extend_from_slice(&i.to_le_bytes());
    }
    Ok(out)
}

/// Decodes a legacy fragment, checking its length and indices.
pub fn decode(bytes: &[u8]) -> Result<Mesh, MeshError> {
    let bad = |why: &str| MeshError::Decode(why.to_string());
    let head: [u8; 4] = bytes
        .get(..4)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| bad("legacy mesh shorter than its 4-byte header"))?;
    let n = u32::from_le_bytes(head) as usize;
    let vertex_end = n
        .checked_mul(12)
        .and_then(|b| b.checked_add(4))
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| bad("legacy mesh shorter than its vertex count says"))?;
    let rest = &bytes[vertex_end..];
    if !rest.len().is_multiple_of(12) {
        return Err(bad("legacy mesh indices are not whole triangles"));
    }
    let word = |b: &[u8]| [b[0], b[1], b[2], b[3]];
    let vertices = bytes[4..vertex_end]
        .chunks_exact(12)
        .map(|c| std::array::from_fn(|i| f32::from_le_bytes(word(&c[4 * i..]))))
        .collect();
    let triangles = rest
        .chunks_exact(12)
        .map(|c| std::array::from_fn(|i| u32::from_le_bytes(word(&c[4 * i..]))))
        .collect();
    let mesh = Mesh {
        vertices,
        triangles,
    };
    mesh.validate()?;
    Ok(mesh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_count_positions_then_indices() {
        let mesh = Mesh {
            vertices: vec![[1.0, 2.0, 3.0], [4.5, -1.0, 0.0], [0.0, 0.0, 8.0]],
            triangles: vec![[0, 1, 2]],
        };
        let bytes = encode(&mesh).unwrap();
        let mut expected = vec![3, 0, 0, 0];
        for f in [1.0f32, 2.0, 3.0, 4.5, -1.0, 0.0, 0.0, 0.0, 8.0] {
            expected.extend_from_slice(&f.to_le_bytes());
        }
        expected.extend_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(bytes, expected);
        assert_eq!(bytes[4..8], [0x00, 0x00, 0x80, 0x3f]);
        assert_eq!(decode(&bytes).unwrap(), mesh);
    }

    #[test]
    fn empty_mesh_is_four_zero_bytes() {
        assert_eq!(encode(&Mesh::default()).unwrap(), vec![0, 0, 0, 0]);
        assert_eq!(decode(&[0, 0, 0, 0]).unwrap(), Mesh::default());
    }

    #[test]
    fn truncated_or_bad_fragments_are_refused() {
        assert!(decode(&[1, 0]).is_err());
        assert!(decode(&[1, 0, 0, 0, 0, 0]).is_err());
        let mut bytes = encode(&Mesh {
            vertices: vec![[0.0; 3]; 3],
            triangles: vec![[0, 1, 2]],
        })
        .unwrap();
        bytes.pop();
        assert!(decode(&bytes).is_err());
        let bad_index = encode(&Mesh {
            vertices: vec![[0.0; 3]; 3],
            triangles: vec![[0, 1, 2]],
        })
        .unwrap();
        let mut bad_index = bad_index;
        let last = bad_index.len() - 4;
        bad_index[last] = 3;
        assert!(matches!(
            decode(&bad_index),
            Err(MeshError::IndexOutOfRange { index: 3, .. })
        ));
        assert!(encode(&Mesh {
            vertices: vec![[0.0; 3]],
            triangles: vec![[0, 0, 1]],
        })
        .is_err());
    }
}
