//! Boundary maps with the defects of real EM predictions, drawn on any label volume (the
//! Voronoi generator's cells or a ground truth such as NeuroProof's).
//!
//! A ConvNet's boundary map is not a clean band: its contrast drifts over micrometres, thin
//! membranes fade out (gaps that cause false merges), mitochondria and organelle walls look
//! like membranes inside a cell (false splits), and whole sections come out weak (focus,
//! staining, cutting artefacts). [`draw`] adds each of these, seeded and reproducible:
//!
//! - a membrane band: Gaussian falloff (σ = `band`) of the distance to the nearest voxel that
//!   touches another label;
//! - correlated noise: a coarse random grid (spacing `noise_scale`) interpolated trilinearly,
//!   amplitude `correlated_noise`, plus white noise `white_noise`;
//! - membrane gaps: balls of radius `gap_radius` centred on membrane voxels (a fraction
//!   `gap_rate` of them) in which the membrane fades to `1 − gap_depth` of its strength;
//! - false membranes: discs (radius `false_radius`, random orientation) inside cells, about
//!   `false_membranes` per million voxels;
//! - weak z-sections: a fraction `weak_sections` of sections whose contrast around 0.5 drops
//!   to `weak_contrast`.

use crate::rng::SplitMix64;
use crate::{voxel_count, Affinities, Result, SegError};

/// Strength of each defect; [`Default`] is a moderately hard volume.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Defects {
    /// Membrane half-width (Gaussian σ) in voxels.
    pub band: f64,
    pub correlated_noise: f64,
    /// Correlation length of the noise in voxels.
    pub noise_scale: f64,
    pub white_noise: f64,
    /// Fraction of membrane voxels at which a gap is centred.
    pub gap_rate: f64,
    pub gap_radius: f64,
    /// How much of the membrane a gap removes at its centre (0..=1).
    pub gap_depth: f64,
    /// False membranes per million voxels.
    pub false_membranes: f64,
    pub false_radius: f64,
    /// Fraction of z-sections drawn with low contrast.
    pub weak_sections: f64,
    /// Contrast left in a weak section (1 = none lost).
    pub weak_contrast: f64,
    pub seed: u64,
}

impl Default for Defects {
    fn default() -> Self {
        Self {
            band: 1.0,
            correlated_noise: 0.15,
            noise_scale: 8.0,
            white_noise: 0.08,
            gap_rate: 0.002,
            gap_radius: 2.5,
            gap_depth: 0.7,
            false_membranes: 20.0,
            false_radius: 4.0,
            weak_sections: 0.05,
            weak_contrast: 0.5,
            seed: 1,
        }
    }
}

impl Defects {
    fn check(&self) -> Result<()> {
        let fields = [
            ("band", self.band),
            ("correlated_noise", self.correlated_noise),
            ("noise_scale", self.noise_scale),
            ("white_noise", self.white_noise),
            ("gap_rate", self.gap_rate),
            ("gap_radius", self.gap_radius),
            ("gap_depth", self.gap_depth),
            ("false_membranes", self.false_membranes),
            ("false_radius", self.false_radius),
            ("weak_sections", self.weak_sections),
            ("weak_contrast", self.weak_contrast),
        ];
        for (name, v) in fields {
            if !(v.is_finite() && v >= 0.0) {
                return Err(SegError::Param(format!("defect {name} = {v} must be ≥ 0")));
            }
        }
        if self.band <= 0.0 || self.noise_scale < 1.0 {
            return Err(SegError::Param(format!(
                "band {} must be > 0 and noise_scale {} ≥ 1",
                self.band, self.noise_scale
            )));
        }
        for (name, v) in [
            ("gap_rate", self.gap_rate),
            ("gap_depth", self.gap_depth),
            ("weak_sections", self.weak_sections),
            ("weak_contrast", self.weak_contrast),
        ] {
            if v > 1.0 {
                return Err(SegError::Param(format!("defect {name} = {v} must be ≤ 1")));
            }
        }
        Ok(())
    }
}

/// Draws a defective boundary map (1 = membrane, C order z, y, x) over `labels`.
pub fn draw<L: Copy + PartialEq>(shape: [usize; 3], labels: &[L], d: &Defects) -> Result<Vec<f32>> {
    d.check()?;
    let n = crate::check_indexable(shape)?;
    if labels.len() != n {
        return Err(SegError::Length {
            what: "labels",
            shape,
            want: n,
            got: labels.len(),
        });
    }
    let [nz, ny, nx] = shape;
    let strides = [ny * nx, nx, 1];
    let mut rng = SplitMix64::new(d.seed);

    // Distance (in voxels, chamfer) to the nearest voxel touching another label.
    let reach = (3.0 * d.band).ceil() as usize + 1;
    let touching = crate::synthetic::touching_another(shape, labels);
    let mut dist: Vec<f32> = touching
        .iter()
        .map(|&t| if t { 0.5 } else { f32::INFINITY })
        .collect();
    let membrane: Vec<usize> = (0..n).filter(|&i| dist[i] == 0.5).collect();
    chamfer(shape, &mut dist, reach as f32);

    let sigma2 = 2.0 * d.band * d.band;
    let mut b: Vec<f32> = dist
        .iter()
        .map(|&t| {
            let t = f64::from(t);
            (-t * t / sigma2).exp() as f32
        })
        .collect();

    // Gaps: fade the membrane in balls centred on membrane voxels.
    let gaps = (membrane.len() as f64 * d.gap_rate).round() as usize;
    for _ in 0..gaps {
        let c = membrane[rng.below(membrane.len() as u64) as usize];
        let centre = [c / strides[0], (c / nx) % ny, c % nx].map(|v| v as f64);
        for_ball(shape, centre, d.gap_radius, |i, r| {
            let fade = d.gap_depth * (1.0 - r / d.gap_radius.max(1e-9));
            b[i] *= (1.0 - fade).clamp(0.0, 1.0) as f32;
        });
    }

    // False membranes: discs inside cells, as bright as a real membrane at their plane.
    let discs = (n as f64 / 1e6 * d.false_membranes).round() as usize;
    for _ in 0..discs {
        let centre = [nz, ny, nx].map(|s| rng.next_f64() * s as f64);
        let normal = {
            let v = [rng.gaussian(), rng.gaussian(), rng.gaussian()];
            let len = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt().max(1e-9);
            v.map(|c| c / len)
        };
        let radius = d.false_radius + reach as f64;
        for_ball(shape, centre, radius, |i, _| {
            let p = [i / strides[0], (i / nx) % ny, i % nx].map(|v| v as f64);
            let rel = [0, 1, 2].map(|a| p[a] - centre[a]);
            let h = rel[0] * normal[0] + rel[1] * normal[1] + rel[2] * normal[2];
            let along = (rel.iter().map(|v| v * v).sum::<f64>() - h * h)
                .max(0.0)
                .sqrt();
            if along <= d.false_radius {
                let v = (-h * h / sigma2).exp() as f32;
                b[i] = b[i].max(v);
            }
        });
    }

    // Correlated noise: a coarse lattice of Gaussian values, interpolated.
    if d.correlated_noise > 0.0 {
        let s = d.noise_scale;
        let g = shape.map(|v| (v as f64 / s).ceil() as usize + 2);
        let lattice: Vec<f64> = (0..voxel_count(g)).map(|_| rng.gaussian()).collect();
        let at = |z: usize, y: usize, x: usize| lattice[(z * g[1] + y) * g[2] + x];
        for z in 0..nz {
            let (fz, tz) = split(z, s);
            for y in 0..ny {
                let (fy, ty) = split(y, s);
                for x in 0..nx {
                    let (fx, tx) = split(x, s);
                    let mut v = 0.0;
                    for (dz, wz) in [(0, 1.0 - tz), (1, tz)] {
                        for (dy, wy) in [(0, 1.0 - ty), (1, ty)] {
                            for (dx, wx) in [(0, 1.0 - tx), (1, tx)] {
                                v += wz * wy * wx * at(fz + dz, fy + dy, fx + dx);
                            }
                        }
                    }
                    b[(z * ny + y) * nx + x] += (d.correlated_noise * v) as f32;
                }
            }
        }
    }
    if d.white_noise > 0.0 {
        for v in b.iter_mut() {
            *v += (d.white_noise * rng.gaussian()) as f32;
        }
    }

    // Weak sections: contrast around 0.5 shrinks.
    for z in 0..nz {
        if rng.next_f64() < d.weak_sections {
            let k = d.weak_contrast as f32;
            for v in &mut b[z * strides[0]..(z + 1) * strides[0]] {
                *v = 0.5 + (*v - 0.5) * k;
            }
        }
    }
    for v in b.iter_mut() {
        *v = v.clamp(0.0, 1.0);
    }
    Ok(b)
}

/// [`draw`], then affinities `1 − max(b_u, b_v)`.
pub fn affinities<L: Copy + PartialEq>(
    shape: [usize; 3],
    labels: &[L],
    d: &Defects,
) -> Result<Affinities> {
    Affinities::from_boundary(shape, &draw(shape, labels, d)?)
}

/// Lattice cell and fraction of a coordinate on a lattice of spacing `s`.
fn split(v: usize, s: f64) -> (usize, f64) {
    let f = v as f64 / s;
    (f.floor() as usize, f - f.floor())
}

/// Calls `f(index, distance)` for every voxel within `radius` of `centre` (z, y, x).
fn for_ball(shape: [usize; 3], centre: [f64; 3], radius: f64, mut f: impl FnMut(usize, f64)) {
    let [nz, ny, nx] = shape;
    let lo = centre.map(|c| (c - radius).floor().max(0.0) as usize);
    let hi = [0, 1, 2].map(|a| ((centre[a] + radius).ceil().max(0.0) as usize).min(shape[a] - 1));
    if nz == 0 || ny == 0 || nx == 0 {
        return;
    }
    for z in lo[0]..=hi[0] {
        for y in lo[1]..=hi[1] {
            for x in lo[2]..=hi[2] {
                let r = ((z as f64 - centre[0]).powi(2)
                    + (y as f64 - centre[1]).powi(2)
                    + (x as f64 - centre[2]).powi(2))
                .sqrt();
                if r <= radius {
                    f((z * ny + y) * nx + x, r);
                }
            }
        }
    }
}

/// Two-pass chamfer distance over the 26-neighbourhood (weights 1, √2, √3), capped at `cap`
/// (beyond it the band is invisible anyway).
fn chamfer(shape: [usize; 3], dist: &mut [f32], cap: f32) {
    let [nz, ny, nx] = shape;
    let w = |dz: i64, dy: i64, dx: i64| ((dz * dz + dy * dy + dx * dx) as f32).sqrt();
    // Forward pass looks at neighbours already visited (lexicographically before), backward
    // at those after.
    let mut before = Vec::new();
    for dz in -1i64..=1 {
        for dy in -1i64..=1 {
            for dx in -1i64..=1 {
                if (dz, dy, dx) < (0, 0, 0) {
                    before.push((dz, dy, dx, w(dz, dy, dx)));
                }
            }
        }
    }
    let (nz, ny, nx) = (nz as i64, ny as i64, nx as i64);
    let pass = |dist: &mut [f32], forward: bool| {
        for zi in 0..nz {
            let z = if forward { zi } else { nz - 1 - zi };
            for yi in 0..ny {
                let y = if forward { yi } else { ny - 1 - yi };
                for xi in 0..nx {
                    let x = if forward { xi } else { nx - 1 - xi };
                    let i = ((z * ny + y) * nx + x) as usize;
                    let mut best = dist[i];
                    for &(dz, dy, dx, wt) in &before {
                        let (dz, dy, dx) = if forward {
                            (dz, dy, dx)
                        } else {
                            (-dz, -dy, -dx)
                        };
                        let (a, b, c) = (z + dz, y + dy, x + dx);
                        if a < 0 || b < 0 || c < 0 || a >= nz || b >= ny || c >= nx {
                            continue;
                        }
                        let v = dist[((a * ny + b) * nx + c) as usize] + wt;
                        if v < best {
                            best = v;
                        }
                    }
                    dist[i] = best.min(cap);
                }
            }
        }
    };
    pass(dist, true);
    pass(dist, false);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slabs(shape: [usize; 3], width: usize) -> Vec<u32> {
        let [nz, ny, nx] = shape;
        let mut l = vec![0u32; nz * ny * nx];
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    l[(z * ny + y) * nx + x] = (x / width) as u32 + 1;
                }
            }
        }
        l
    }

    fn clean() -> Defects {
        Defects {
            correlated_noise: 0.0,
            white_noise: 0.0,
            gap_rate: 0.0,
            false_membranes: 0.0,
            weak_sections: 0.0,
            ..Default::default()
        }
    }

    #[test]
    fn clean_band_is_bright_at_contacts_and_dark_inside() {
        let shape = [4, 6, 20];
        let b = draw(shape, &slabs(shape, 10), &clean()).unwrap();
        let at = |z: usize, y: usize, x: usize| b[(z * 6 + y) * 20 + x];
        assert!(at(2, 3, 9) > 0.85 && at(2, 3, 10) > 0.85, "contact voxels");
        assert!(at(2, 3, 5) < 0.01 && at(2, 3, 15) < 0.01, "cell interiors");
        assert!(at(2, 3, 8) < at(2, 3, 9), "falls off away from the contact");
    }

    #[test]
    fn each_defect_does_what_it_says_and_seeds_reproduce() {
        let shape = [24, 32, 40];
        let labels = slabs(shape, 10);
        let base = draw(shape, &labels, &clean()).unwrap();
        let mean_at_contacts = |b: &[f32]| {
            let mut s = 0.0;
            let mut k = 0;
            for (i, &v) in b.iter().enumerate() {
                let x = i % 40;
                if x % 10 == 9 {
                    s += v;
                    k += 1;
                }
            }
            s / k as f32
        };
        let gaps = draw(
            shape,
            &labels,
            &Defects {
                gap_rate: 0.05,
                ..clean()
            },
        )
        .unwrap();
        assert!(mean_at_contacts(&gaps) < mean_at_contacts(&base) - 0.05);
        let false_m = draw(
            shape,
            &labels,
            &Defects {
                false_membranes: 2000.0,
                ..clean()
            },
        )
        .unwrap();
        let bright_inside = |b: &[f32]| {
            b.iter()
                .enumerate()
                .filter(|(i, &v)| (i % 40) % 10 == 4 && v > 0.5)
                .count()
        };
        assert_eq!(bright_inside(&base), 0);
        assert!(
            bright_inside(&false_m) > 0,
            "no false membrane inside a cell"
        );
        let weak = draw(
            shape,
            &labels,
            &Defects {
                weak_sections: 1.0,
                weak_contrast: 0.5,
                ..clean()
            },
        )
        .unwrap();
        assert!(weak.iter().all(|&v| (0.25..=0.75).contains(&v)));
        let noisy = Defects::default();
        assert_eq!(
            draw(shape, &labels, &noisy).unwrap(),
            draw(shape, &labels, &noisy).unwrap()
        );
        assert_ne!(
            draw(shape, &labels, &noisy).unwrap(),
            draw(shape, &labels, &Defects { seed: 2, ..noisy }).unwrap()
        );
        let a = affinities(shape, &labels, &noisy).unwrap();
        assert_eq!(a.shape(), shape);
    }

    #[test]
    fn bad_parameters_are_refused() {
        let l = vec![1u32; 8];
        for d in [
            Defects {
                band: 0.0,
                ..clean()
            },
            Defects {
                gap_depth: 1.5,
                ..clean()
            },
            Defects {
                white_noise: f64::NAN,
                ..clean()
            },
        ] {
            assert!(draw([2, 2, 2], &l, &d).is_err(), "{d:?}");
        }
        assert!(draw([2, 2, 3], &l, &clean()).is_err(), "wrong length");
    }
}
