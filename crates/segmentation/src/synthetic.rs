//! Seeded synthetic volumes with ground truth, for tests and benchmarks.
//!
//! [`voronoi`] fills a volume with Voronoi cells (one jittered seed per grid cell) and draws
//! a membrane along the cell faces: the boundary probability falls off as a Gaussian of the
//! distance to the nearest face, plus Gaussian noise. The noise breaks cell interiors into
//! many watershed basins, which the agglomeration has to put back together.
//! [`boundary_from_labels`] draws the same kind of membrane on any label volume (e.g. the
//! NeuroProof ground truth), marking voxels that touch another label.

use crate::rng::SplitMix64;
use crate::{voxel_count, Affinities, Result, SegError};

/// Parameters of a Voronoi volume.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VoronoiParams {
    /// (z, y, x).
    pub shape: [usize; 3],
    /// Seed spacing in voxels: cells are about this wide.
    pub cell: f64,
    /// Membrane half-width (Gaussian σ) in voxels.
    pub membrane: f64,
    /// Standard deviation of the noise added to the boundary probability.
    pub noise: f64,
    pub seed: u64,
}

impl Default for VoronoiParams {
    fn default() -> Self {
        Self {
            shape: [64, 64, 64],
            cell: 16.0,
            membrane: 1.0,
            noise: 0.15,
            seed: 1,
        }
    }
}

/// A synthetic volume: its cells (labels from 1, dense) and a boundary probability map
/// (1 = membrane), both C order (z, y, x).
#[derive(Debug, Clone, PartialEq)]
pub struct Synthetic {
    pub shape: [usize; 3],
    pub cells: Vec<u32>,
    pub boundary: Vec<f32>,
}

impl Synthetic {
    /// Ground truth as EM annotations mark it (and the gala fixture): the cells, with 0 on
    /// voxels that touch another cell. Where exactly a watershed line runs inside a membrane
    /// is not a segmentation error, so scoring ignores those voxels.
    pub fn ground_truth(&self) -> Vec<u32> {
        let touching = touching_another(self.shape, &self.cells);
        self.cells
            .iter()
            .zip(touching)
            .map(|(&c, t)| if t { 0 } else { c })
            .collect()
    }

    /// Affinities from the boundary map (`1 − max(b_u, b_v)`).
    pub fn affinities(&self) -> Result<Affinities> {
        Affinities::from_boundary(self.shape, &self.boundary)
    }
}

/// A Voronoi volume (see the module documentation).
pub fn voronoi(p: &VoronoiParams) -> Result<Synthetic> {
    let shape = p.shape;
    let n = crate::check_indexable(shape)?;
    if !(p.cell >= 2.0 && p.cell.is_finite()) {
        return Err(SegError::Param(format!(
            "cell spacing {} must be ≥ 2",
            p.cell
        )));
    }
    if !(p.membrane > 0.0 && p.noise >= 0.0) {
        return Err(SegError::Param(format!(
            "membrane {} must be > 0 and noise {} ≥ 0",
            p.membrane, p.noise
        )));
    }
    let grid = shape.map(|s| (s as f64 / p.cell).ceil().max(1.0) as usize);
    if voxel_count(grid) >= u32::MAX as usize {
        return Err(SegError::Param("too many cells".into()));
    }
    let mut rng = SplitMix64::new(p.seed);
    // One seed per grid cell, jittered within the middle 40% of the cell on each axis: then a
    // voxel's nearest seed is always in its own or an adjacent grid cell (own seed is at most
    // 0.7·√3 ≈ 1.21 cells away, any seed two cells off at least 1.3), so 27 candidates give
    // the exact Voronoi label and every cell is convex, hence connected.
    let seeds: Vec<[f64; 3]> = (0..voxel_count(grid))
        .map(|g| {
            let c = [
                g / (grid[1] * grid[2]),
                (g / grid[2]) % grid[1],
                g % grid[2],
            ];
            c.map(|ci| (ci as f64 + 0.3 + 0.4 * rng.next_f64()) * p.cell)
        })
        .collect();
    let mut cells = vec![0u32; n];
    let mut boundary = vec![0f32; n];
    let two_sigma2 = 2.0 * p.membrane * p.membrane;
    // Faces beyond 3σ add under 0.012 to the boundary: they are not looked for.
    let reach = 3.0 * p.membrane;
    // Candidates for the voxels of one grid cell: every seed that can be their nearest (all
    // within the adjacent cells) or own a face within `reach` of them. A voxel's own seed is
    // at most 1.22 cells away, so a face's other seed is at most 1.22 cells + 2·reach away
    // (the bisector distance is at least half the difference of the two seed distances).
    let mut cand: Vec<(u32, [f64; 3])> = Vec::with_capacity(125);
    let limit = 1.22 * p.cell + 2.0 * reach;
    let [nz, ny, nx] = shape;
    let mut cand_cell = usize::MAX;
    for z in 0..nz {
        let gz = ((z as f64 / p.cell) as usize).min(grid[0] - 1);
        for y in 0..ny {
            let gy = ((y as f64 / p.cell) as usize).min(grid[1] - 1);
            for x in 0..nx {
                let gx = ((x as f64 / p.cell) as usize).min(grid[2] - 1);
                let g = [gz, gy, gx];
                let cell_index = (gz * grid[1] + gy) * grid[2] + gx;
                if cell_index != cand_cell {
                    cand_cell = cell_index;
                    cand.clear();
                    let lo = g.map(|c| c.saturating_sub(2));
                    let hi = [0, 1, 2].map(|a| (g[a] + 2).min(grid[a] - 1));
                    for cz in lo[0]..=hi[0] {
                        for cy in lo[1]..=hi[1] {
                            for cx in lo[2]..=hi[2] {
                                let t = (cz * grid[1] + cy) * grid[2] + cx;
                                let s = seeds[t];
                                // Distance from the seed to this grid cell's box.
                                let d2: f64 = (0..3)
                                    .map(|a| {
                                        let (b0, b1) =
                                            (g[a] as f64 * p.cell, (g[a] + 1) as f64 * p.cell);
                                        let d = (b0 - s[a]).max(s[a] - b1).max(0.0);
                                        d * d
                                    })
                                    .sum();
                                if d2 < limit * limit {
                                    cand.push((t as u32, s));
                                }
                            }
                        }
                    }
                }
                let pos = [z as f64, y as f64, x as f64];
                let d2 = |s: &[f64; 3]| {
                    (0..3)
                        .map(|a| (pos[a] - s[a]) * (pos[a] - s[a]))
                        .sum::<f64>()
                };
                let mut dist2 = [0f64; 125];
                let mut best = (f64::MAX, 0usize);
                for (k, (_, s)) in cand.iter().enumerate() {
                    let d = d2(s);
                    dist2[k] = d;
                    if d < best.0 {
                        best = (d, k);
                    }
                }
                let own = cand[best.1].1;
                let own_d = best.0.sqrt();
                // Distance to the nearest face of the (convex) cell: the nearest bisector
                // plane, (|p − t|² − |p − s|²) / (2 |s − t|).
                let mut face = reach;
                for (k, (_, t)) in cand.iter().enumerate() {
                    if k == best.1 || dist2[k].sqrt() - own_d >= 2.0 * face {
                        continue;
                    }
                    face = face.min((dist2[k] - best.0) / (2.0 * seed_dist2(&own, t).sqrt()));
                }
                let i = (z * ny + y) * nx + x;
                cells[i] = cand[best.1].0 + 1;
                let b = (-face * face / two_sigma2).exp() + p.noise * rng.gaussian();
                boundary[i] = b.clamp(0.0, 1.0) as f32;
            }
        }
    }
    Ok(Synthetic {
        shape,
        cells,
        boundary,
    })
}

fn seed_dist2(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    (0..3).map(|k| (a[k] - b[k]) * (a[k] - b[k])).sum()
}

/// Per voxel (C order): whether a 6-neighbour has another label. The caller checks that
/// `labels` fills `shape`.
pub fn touching_another<L: PartialEq>(shape: [usize; 3], labels: &[L]) -> Vec<bool> {
    let [nz, ny, nx] = shape;
    let strides = [ny * nx, nx, 1];
    let mut out = vec![false; labels.len()];
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let i = (z * ny + y) * nx + x;
                for (c, back) in [z > 0, y > 0, x > 0].into_iter().enumerate() {
                    if back && labels[i] != labels[i - strides[c]] {
                        out[i] = true;
                        out[i - strides[c]] = true;
                    }
                }
            }
        }
    }
    out
}

/// A boundary map for any label volume: 1 on voxels with a 6-neighbour of another label (or
/// of label 0), 0 elsewhere, plus Gaussian noise of standard deviation `noise`, clamped to
/// `[0, 1]`.
pub fn boundary_from_labels<L: Copy + PartialEq>(
    shape: [usize; 3],
    labels: &[L],
    noise: f64,
    seed: u64,
) -> Result<Vec<f32>> {
    let n = voxel_count(shape);
    if labels.len() != n {
        return Err(SegError::Length {
            what: "labels",
            shape,
            want: n,
            got: labels.len(),
        });
    }
    let membrane = touching_another(shape, labels);
    let mut rng = SplitMix64::new(seed);
    Ok(membrane
        .iter()
        .map(|&m| {
            let b = if m { 1.0 } else { 0.0 } + noise * rng.gaussian();
            b.clamp(0.0, 1.0) as f32
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voronoi_cells_are_nearest_seed_regions_and_reproducible() {
        let p = VoronoiParams {
            shape: [20, 24, 28],
            cell: 8.0,
            membrane: 1.0,
            noise: 0.0,
            seed: 5,
        };
        let a = voronoi(&p).unwrap();
        let b = voronoi(&p).unwrap();
        assert_eq!(a, b);
        let c = voronoi(&VoronoiParams { seed: 6, ..p }).unwrap();
        assert_ne!(a.cells, c.cells);
        // Every cell's voxels form one 6-connected piece (cells are convex).
        let n = a.cells.len();
        let mut seen = vec![false; n];
        let mut pieces = std::collections::HashMap::new();
        let [nz, ny, nx] = p.shape;
        for s in 0..n {
            if seen[s] {
                continue;
            }
            *pieces.entry(a.cells[s]).or_insert(0) += 1;
            let mut stack = vec![s];
            seen[s] = true;
            while let Some(i) = stack.pop() {
                let (z, y, x) = (i / (ny * nx), (i / nx) % ny, i % nx);
                let mut nb = Vec::new();
                if z > 0 {
                    nb.push(i - ny * nx)
                }
                if z + 1 < nz {
                    nb.push(i + ny * nx)
                }
                if y > 0 {
                    nb.push(i - nx)
                }
                if y + 1 < ny {
                    nb.push(i + nx)
                }
                if x > 0 {
                    nb.push(i - 1)
                }
                if x + 1 < nx {
                    nb.push(i + 1)
                }
                for j in nb {
                    if !seen[j] && a.cells[j] == a.cells[i] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        assert!(pieces.len() > 20, "{} cells", pieces.len());
        assert!(pieces.values().all(|&k| k == 1), "a cell in several pieces");
        // Without noise the membrane is bright exactly where labels change.
        let strides = [ny * nx, nx, 1];
        let mut across = Vec::new();
        for i in 0..n {
            let (z, y, x) = (i / (ny * nx), (i / nx) % ny, i % nx);
            for (c, ok) in [z > 0, y > 0, x > 0].into_iter().enumerate() {
                if ok && a.cells[i] != a.cells[i - strides[c]] {
                    across.push(a.boundary[i].max(a.boundary[i - strides[c]]));
                }
            }
        }
        // The two voxels of a contact lie within one step of the face between them, so the
        // nearer is within half a step: b ≥ exp(−0.5²/2) ≈ 0.88.
        assert!(
            across.iter().all(|&b| b > 0.88),
            "a contact without membrane"
        );
        let mean_all = a.boundary.iter().sum::<f32>() / n as f32;
        assert!(mean_all < 0.6, "membrane everywhere: {mean_all}");
        // The ground truth blanks exactly the voxels touching another cell.
        let gt = a.ground_truth();
        for (i, &g) in gt.iter().enumerate() {
            let (z, y, x) = (i / (ny * nx), (i / nx) % ny, i % nx);
            let nb = [
                (z > 0).then(|| i - ny * nx),
                (z + 1 < nz).then(|| i + ny * nx),
                (y > 0).then(|| i - nx),
                (y + 1 < ny).then(|| i + nx),
                (x > 0).then(|| i - 1),
                (x + 1 < nx).then(|| i + 1),
            ];
            let touches = nb.into_iter().flatten().any(|j| a.cells[j] != a.cells[i]);
            assert_eq!(g, if touches { 0 } else { a.cells[i] });
        }
    }

    #[test]
    fn label_membranes() {
        let labels = [1u32, 1, 2, 2, 2, 3];
        let b = boundary_from_labels([1, 1, 6], &labels, 0.0, 1).unwrap();
        assert_eq!(b, vec![0.0, 1.0, 1.0, 0.0, 1.0, 1.0]);
        assert!(boundary_from_labels([1, 1, 5], &labels, 0.0, 1).is_err());
    }
}
