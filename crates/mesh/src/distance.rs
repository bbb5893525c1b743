//! Point-to-surface distances: how far a simplified mesh strays from the original one.

use crate::Mesh;

/// A mesh's triangles bucketed in a uniform grid, for nearest-surface queries.
pub struct SurfaceIndex<'a> {
    vertices: &'a [[f32; 3]],
    triangles: &'a [[u32; 3]],
    cell: f64,
    lo: [f64; 3],
    dims: [i64; 3],
    /// `items[start[c]..start[c + 1]]`: triangles whose bounding box meets cell `c`.
    start: Vec<u32>,
    items: Vec<u32>,
}

impl<'a> SurfaceIndex<'a> {
    /// Indexes `mesh` with cells of `cell_nm` (queries are fastest with cells about the size
    /// of the distances asked about).
    pub fn new(mesh: &'a Mesh, cell_nm: f64) -> Self {
        Self::from_parts(&mesh.vertices, &mesh.triangles, cell_nm)
    }

    /// [`Self::new`] for triangles over a vertex array (unused vertices are ignored).
    pub fn from_parts(vertices: &'a [[f32; 3]], triangles: &'a [[u32; 3]], cell_nm: f64) -> Self {
        let cell = cell_nm.max(1e-3);
        let mut lo = [f32::INFINITY; 3];
        let mut hi = [f32::NEG_INFINITY; 3];
        for &i in triangles.as_flattened() {
            let v = vertices[i as usize];
            for k in 0..3 {
                lo[k] = lo[k].min(v[k]);
                hi[k] = hi[k].max(v[k]);
            }
        }
        if triangles.is_empty() {
            (lo, hi) = ([0.0; 3], [0.0; 3]);
        }
        let lo = lo.map(f64::from);
        let dims: [i64; 3] = std::array::from_fn(|i| ((hi[i] as f64 - lo[i]) / cell).ffloor() + 1);
        let cells = (dims[0] * dims[1] * dims[2]) as usize;
        let cell_of = |p: [f64; 3]| -> [i64; 3] {
            std::array::from_fn(|i| (((p[i] - lo[i]) / cell).ffloor()).clamp(0, dims[i] - 1))
        };
        let mut pairs: Vec<(u32, u32)> = Vec::with_capacity(triangles.len() * 2);
        for (ti, t) in triangles.iter().enumerate() {
            let p = t.map(|i| vertices[i as usize].map(f64::from));
            let a = cell_of(std::array::from_fn(|i| p[0][i].min(p[1][i]).min(p[2][i])));
            let b = cell_of(std::array::from_fn(|i| p[0][i].max(p[1][i]).max(p[2][i])));
            for z in a[2]..=b[2] {
                for y in a[1]..=b[1] {
                    for x in a[0]..=b[0] {
                        pairs.push((((z * dims[1] + y) * dims[0] + x) as u32, ti as u32));
                    }
                }
            }
        }
        // Counting sort by cell.
        let mut start = vec![0u32; cells + 1];
        for &(c, _) in &pairs {
            start[c as usize + 1] += 1;
        }
        for i in 0..cells {
            start[i + 1] += start[i];
        }
        let mut fill = start.clone();
        let mut items = vec![0u32; pairs.len()];
        for (c, t) in pairs {
            items[fill[c as usize] as usize] = t;
            fill[c as usize] += 1;
        }
        Self {
            vertices,
            triangles,
            cell,
            lo,
            dims,
            start,
            items,
        }
    }

    fn triangle(&self, t: u32) -> [[f64; 3]; 3] {
        self.triangles[t as usize].map(|i| self.vertices[i as usize].map(f64::from))
    }

    fn cell_triangles(&self, c: [i64; 3]) -> &[u32] {
        if (0..3).any(|i| c[i] < 0 || c[i] >= self.dims[i]) {
            return &[];
        }
        let k = ((c[2] * self.dims[1] + c[1]) * self.dims[0] + c[0]) as usize;
        &self.items[self.start[k] as usize..self.start[k + 1] as usize]
    }

    /// Distance from `p` to the surface, if some triangle lies within `limit`.
    pub fn distance(&self, p: [f32; 3], limit: f64) -> Option<f64> {
        self.nearest(p, limit).map(|(_, d)| d)
    }

    /// The triangle nearest `p` (its index in the indexed triangles) and its distance, if
    /// one lies within `limit`.
    pub fn nearest(&self, p: [f32; 3], limit: f64) -> Option<(u32, f64)> {
        let p = p.map(f64::from);
        let c: [i64; 3] = std::array::from_fn(|i| ((p[i] - self.lo[i]) / self.cell).ffloor());
        let mut best = (u32::MAX, f64::INFINITY);
        let rings = (limit / self.cell).ceil() as i64 + 1;
        for r in 0..=rings {
            for z in c[2] - r..=c[2] + r {
                for y in c[1] - r..=c[1] + r {
                    for x in c[0] - r..=c[0] + r {
                        let shell =
                            (z - c[2]).abs() == r || (y - c[1]).abs() == r || (x - c[0]).abs() == r;
                        if shell {
                            for &t in self.cell_triangles([x, y, z]) {
                                let d = point_triangle_distance(p, self.triangle(t));
                                if d < best.1 {
                                    best = (t, d);
                                }
                            }
                        }
                    }
                }
            }
            // Every triangle within r cells of p's cell has been seen.
            if best.1 <= r as f64 * self.cell {
                break;
            }
        }
        (best.1 <= limit).then_some(best)
    }

    /// Whether some triangle lies within `bound` of `p` (stops at the first one found).
    pub fn within(&self, p: [f32; 3], bound: f64) -> bool {
        let p = p.map(f64::from);
        let bound2 = bound * bound;
        let a: [i64; 3] =
            std::array::from_fn(|i| ((p[i] - bound - self.lo[i]) / self.cell).ffloor());
        let b: [i64; 3] =
            std::array::from_fn(|i| ((p[i] + bound - self.lo[i]) / self.cell).ffloor());
        // Nearest cells first: most points sit on or right next to the surface.
        let own: [i64; 3] = std::array::from_fn(|i| ((p[i] - self.lo[i]) / self.cell).ffloor());
        if self
            .cell_triangles(own)
            .iter()
            .any(|&t| point_triangle_distance_squared(p, self.triangle(t)) <= bound2)
        {
            return true;
        }
        for z in a[2]..=b[2] {
            for y in a[1]..=b[1] {
                for x in a[0]..=b[0] {
                    if [x, y, z] != own
                        && self.cell_triangles([x, y, z]).iter().any(|&t| {
                            point_triangle_distance_squared(p, self.triangle(t)) <= bound2
                        })
                    {
                        return true;
                    }
                }
            }
        }
        false
    }
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// Distance from `p` to the closest point of triangle `abc`, found by which region of the
/// triangle's Voronoi diagram (vertex, edge or face) holds `p`.
pub fn point_triangle_distance(p: [f64; 3], t: [[f64; 3]; 3]) -> f64 {
    point_triangle_distance_squared(p, t).sqrt()
}

/// The square of [`point_triangle_distance`] (no square root: bounds are compared squared).
fn point_triangle_distance_squared(p: [f64; 3], [a, b, c]: [[f64; 3]; 3]) -> f64 {
    let (ab, ac, ap) = (sub(b, a), sub(c, a), sub(p, a));
    let at = |u: f64, v: f64| -> f64 {
        let q = [
            a[0] + ab[0] * u + ac[0] * v,
            a[1] + ab[1] * u + ac[1] * v,
            a[2] + ab[2] * u + ac[2] * v,
        ];
        let d = sub(p, q);
        dot(d, d)
    };
    let (d1, d2) = (dot(ab, ap), dot(ac, ap));
    if d1 <= 0.0 && d2 <= 0.0 {
        return at(0.0, 0.0);
    }
    let bp = sub(p, b);
    let (d3, d4) = (dot(ab, bp), dot(ac, bp));
    if d3 >= 0.0 && d4 <= d3 {
        return at(1.0, 0.0);
    }
    let vc = d1 * d4 - d3 * d2;
    if vc <= 0.0 && d1 >= 0.0 && d3 <= 0.0 {
        return at(d1 / (d1 - d3), 0.0);
    }
    let cp = sub(p, c);
    let (d5, d6) = (dot(ab, cp), dot(ac, cp));
    if d6 >= 0.0 && d5 <= d6 {
        return at(0.0, 1.0);
    }
    let vb = d5 * d2 - d1 * d6;
    if vb <= 0.0 && d2 >= 0.0 && d6 <= 0.0 {
        return at(0.0, d2 / (d2 - d6));
    }
    let va = d3 * d6 - d5 * d4;
    if va <= 0.0 && (d4 - d3) >= 0.0 && (d5 - d6) >= 0.0 {
        let w = (d4 - d3) / ((d4 - d3) + (d5 - d6));
        return at(1.0 - w, w);
    }
    let denom = va + vb + vc;
    if denom.abs() < 1e-30 {
        // A degenerate (zero-area) triangle: its vertices are as close as it gets.
        return at(0.0, 0.0).min(at(1.0, 0.0)).min(at(0.0, 1.0));
    }
    at(vb / denom, vc / denom)
}

/// `floor` without a libm call (the default x86-64 target has no rounding instruction).
trait FastFloor {
    fn ffloor(self) -> i64;
}

impl FastFloor for f64 {
    #[inline]
    fn ffloor(self) -> i64 {
        let t = self as i64;
        if (t as f64) > self {
            t - 1
        } else {
            t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: [[f64; 3]; 3] = [[0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 4.0, 0.0]];

    #[test]
    fn distances_to_face_edges_and_corners() {
        assert_eq!(point_triangle_distance([1.0, 1.0, 3.0], T), 3.0);
        assert_eq!(point_triangle_distance([-3.0, -4.0, 0.0], T), 5.0);
        assert_eq!(point_triangle_distance([2.0, -2.0, 0.0], T), 2.0);
        let d = point_triangle_distance([3.0, 3.0, 0.0], T);
        assert!((d - 2f64.sqrt()).abs() < 1e-12, "{d}");
        assert_eq!(point_triangle_distance([1.0, 1.0, 0.0], T), 0.0);
    }

    #[test]
    fn index_finds_the_nearest_triangle_and_answers_bounds() {
        let mesh = Mesh {
            vertices: vec![
                [0.0, 0.0, 0.0],
                [40.0, 0.0, 0.0],
                [0.0, 40.0, 0.0],
                [100.0, 100.0, 50.0],
            ],
            triangles: vec![[0, 1, 2], [1, 3, 2]],
        };
        let index = SurfaceIndex::new(&mesh, 10.0);
        for p in [
            [5.0f32, 5.0, 7.0],
            [-20.0, 3.0, 0.0],
            [60.0, 70.0, 30.0],
            [300.0, 0.0, 0.0],
        ] {
            let brute = mesh
                .triangles
                .iter()
                .map(|t| {
                    point_triangle_distance(
                        p.map(f64::from),
                        t.map(|i| mesh.vertices[i as usize].map(f64::from)),
                    )
                })
                .fold(f64::INFINITY, f64::min);
            assert_eq!(index.distance(p, 500.0), Some(brute), "{p:?}");
            let (t, d) = index.nearest(p, 500.0).unwrap();
            let tri = mesh.triangles[t as usize].map(|i| mesh.vertices[i as usize].map(f64::from));
            assert_eq!(
                (d, point_triangle_distance(p.map(f64::from), tri)),
                (brute, brute)
            );
            assert!(index.within(p, brute + 1e-9), "{p:?}");
            assert!(!index.within(p, brute * 0.99 - 1e-9), "{p:?}");
            assert_eq!(index.distance(p, brute * 0.99 - 1e-9), None);
        }
    }
}
