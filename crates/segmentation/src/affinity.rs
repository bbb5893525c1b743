//! The affinity graph: how strongly each voxel belongs with its neighbour.
//!
//! Convention (waterz, zwatershed and the fixtures' README): an affinity graph of a volume of
//! shape `[nz, ny, nx]` has three channels, stored channel-major as an array of shape
//! `[3, nz, ny, nx]`. Channel `c` of voxel `v` is the affinity between `v` and `v − e_c`,
//! where `e_0` is one step in z, `e_1` in y and `e_2` in x. The first plane along a channel's
//! own axis has no neighbour there; those values are ignored (and written as 0 here).
//! Affinities lie in `[0, 1]`; 1 means surely the same object.

use crate::{voxel_count, Result, SegError};

/// A box of voxels `start..stop` per axis, (z, y, x).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Box3 {
    pub start: [usize; 3],
    pub stop: [usize; 3],
}

impl Box3 {
    pub fn new(start: [usize; 3], stop: [usize; 3]) -> Self {
        Self { start, stop }
    }

    /// The whole volume of a shape.
    pub fn whole(shape: [usize; 3]) -> Self {
        Self::new([0; 3], shape)
    }

    pub fn shape(&self) -> [usize; 3] {
        [0, 1, 2].map(|a| self.stop[a].saturating_sub(self.start[a]))
    }

    pub fn is_empty(&self) -> bool {
        (0..3).any(|a| self.stop[a] <= self.start[a])
    }

    /// Whether the box is non-empty and lies inside a volume of `shape`.
    pub fn fits(&self, shape: [usize; 3]) -> bool {
        !self.is_empty() && (0..3).all(|a| self.stop[a] <= shape[a])
    }

    /// The box grown by `margin` on every side, clipped to a volume of `shape`.
    pub fn grown(&self, margin: usize, shape: [usize; 3]) -> Self {
        Self::new(
            [0, 1, 2].map(|a| self.start[a].saturating_sub(margin)),
            [0, 1, 2].map(|a| (self.stop[a] + margin).min(shape[a])),
        )
    }

    pub(crate) fn check(&self, shape: [usize; 3]) -> Result<()> {
        if self.fits(shape) {
            Ok(())
        } else {
            Err(SegError::Box {
                start: self.start,
                stop: self.stop,
                shape,
            })
        }
    }
}

/// A 3-channel affinity graph (see the module documentation for the convention).
#[derive(Debug, Clone, PartialEq)]
pub struct Affinities {
    shape: [usize; 3],
    data: Vec<f32>,
}

impl Affinities {
    /// Wraps channel-major data of shape `[3, nz, ny, nx]`.
    pub fn new(shape: [usize; 3], data: Vec<f32>) -> Result<Self> {
        let want = 3 * voxel_count(shape);
        if data.len() != want {
            return Err(SegError::Length {
                what: "affinity data",
                shape,
                want,
                got: data.len(),
            });
        }
        Ok(Self { shape, data })
    }

    /// Affinities from a boundary probability map (1 = membrane):
    /// `aff(u, v) = 1 − max(b_u, b_v)`, the rule the fixtures' README and waterz's users apply.
    pub fn from_boundary(shape: [usize; 3], boundary: &[f32]) -> Result<Self> {
        let n = voxel_count(shape);
        if boundary.len() != n {
            return Err(SegError::Length {
                what: "boundary map",
                shape,
                want: n,
                got: boundary.len(),
            });
        }
        let [nz, ny, nx] = shape;
        let mut data = vec![0f32; 3 * n];
        let (az, rest) = data.split_at_mut(n);
        let (ay, ax) = rest.split_at_mut(n);
        let edge = |a: f32, b: f32| 1.0 - a.max(b);
        for z in 0..nz {
            for y in 0..ny {
                let row = (z * ny + y) * nx;
                let b = &boundary[row..row + nx];
                if z > 0 {
                    let prev = &boundary[row - ny * nx..row - ny * nx + nx];
                    for x in 0..nx {
                        az[row + x] = edge(b[x], prev[x]);
                    }
                }
                if y > 0 {
                    let prev = &boundary[row - nx..row];
                    for x in 0..nx {
                        ay[row + x] = edge(b[x], prev[x]);
                    }
                }
                for x in 1..nx {
                    ax[row + x] = edge(b[x], b[x - 1]);
                }
            }
        }
        Ok(Self { shape, data })
    }

    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    pub fn voxels(&self) -> usize {
        voxel_count(self.shape)
    }

    /// All three channels, channel-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// One channel (0 = z, 1 = y, 2 = x) as a C-order volume.
    pub fn channel(&self, c: usize) -> &[f32] {
        let n = self.voxels();
        &self.data[c * n..(c + 1) * n]
    }

    /// Channel `c` at voxel (z, y, x): the affinity with the voxel one step back along `c`.
    pub fn get(&self, c: usize, z: usize, y: usize, x: usize) -> f32 {
        let [_, ny, nx] = self.shape;
        self.data[c * self.voxels() + (z * ny + y) * nx + x]
    }

    /// The affinities of the voxels in `b`, as a graph of its own: edges to voxels outside
    /// the box fall on the box's first planes and are dropped (set to 0).
    pub fn crop(&self, b: &Box3) -> Result<Affinities> {
        b.check(self.shape)?;
        let shape = b.shape();
        let n = voxel_count(shape);
        let [_, ny, nx] = self.shape;
        // Rows appended in order: no zero-filling of what is then overwritten.
        let mut data = Vec::with_capacity(3 * n);
        for c in 0..3 {
            let src = self.channel(c);
            for z in 0..shape[0] {
                for y in 0..shape[1] {
                    let from = ((b.start[0] + z) * ny + b.start[1] + y) * nx + b.start[2];
                    data.extend_from_slice(&src[from..from + shape[2]]);
                }
            }
            let dst = &mut data[c * n..(c + 1) * n];
            // The first plane along c links to voxels outside the box.
            let (sy, sx) = (shape[1] * shape[2], shape[2]);
            match c {
                0 => dst[..sy].fill(0.0),
                1 => {
                    for plane in dst.chunks_mut(sy) {
                        plane[..sx].fill(0.0);
                    }
                }
                _ => {
                    for row in dst.chunks_mut(sx) {
                        row[0] = 0.0;
                    }
                }
            }
        }
        Ok(Affinities { shape, data })
    }
}

/// Whether voxel `i` of a volume of `shape` has a neighbour one step back along axis `c`.
#[inline]
#[cfg(test)]
pub(crate) fn has_neighbour(shape: [usize; 3], c: usize, i: usize) -> bool {
    let [_, ny, nx] = shape;
    match c {
        0 => i >= ny * nx,
        1 => !(i / nx).is_multiple_of(ny),
        _ => !i.is_multiple_of(nx),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_to_affinities_follows_the_waterz_convention() {
        // 2 × 2 × 3 volume; b = index / 10 so every pair is distinguishable.
        let shape = [2, 2, 3];
        let b: Vec<f32> = (0..12).map(|i| i as f32 / 10.0).collect();
        let a = Affinities::from_boundary(shape, &b).unwrap();
        let idx = |z: usize, y: usize, x: usize| (z * 2 + y) * 3 + x;
        for z in 0..2 {
            for y in 0..2 {
                for x in 0..3 {
                    let v = b[idx(z, y, x)];
                    let want_z = if z > 0 {
                        1.0 - v.max(b[idx(z - 1, y, x)])
                    } else {
                        0.0
                    };
                    let want_y = if y > 0 {
                        1.0 - v.max(b[idx(z, y - 1, x)])
                    } else {
                        0.0
                    };
                    let want_x = if x > 0 {
                        1.0 - v.max(b[idx(z, y, x - 1)])
                    } else {
                        0.0
                    };
                    assert_eq!(a.get(0, z, y, x), want_z, "z at {z},{y},{x}");
                    assert_eq!(a.get(1, z, y, x), want_y, "y at {z},{y},{x}");
                    assert_eq!(a.get(2, z, y, x), want_x, "x at {z},{y},{x}");
                }
            }
        }
        // Concrete value: voxel (1,1,2) has b = 1.1 clipped by nothing, its x neighbour 1.0.
        assert!((a.get(2, 1, 1, 2) - (1.0 - 1.1)).abs() < 1e-6);
        assert!(Affinities::from_boundary(shape, &b[..11]).is_err());
        assert!(Affinities::new(shape, vec![0.0; 35]).is_err());
    }

    #[test]
    fn crop_keeps_inner_edges_and_drops_edges_leaving_the_box() {
        let shape = [3, 4, 5];
        let n = 60;
        let data: Vec<f32> = (0..3 * n).map(|i| i as f32).collect();
        let a = Affinities::new(shape, data).unwrap();
        let b = Box3::new([1, 1, 2], [3, 4, 5]);
        let c = a.crop(&b).unwrap();
        assert_eq!(c.shape(), [2, 3, 3]);
        for ch in 0..3 {
            for z in 0..2 {
                for y in 0..3 {
                    for x in 0..3 {
                        let local = [z, y, x];
                        let want = if local[ch] == 0 {
                            0.0
                        } else {
                            a.get(ch, z + 1, y + 1, x + 2)
                        };
                        assert_eq!(c.get(ch, z, y, x), want);
                    }
                }
            }
        }
        assert!(a.crop(&Box3::new([0, 0, 0], [4, 1, 1])).is_err());
        assert!(a.crop(&Box3::new([1, 0, 0], [1, 1, 1])).is_err());
        assert_eq!(
            Box3::new([1, 1, 1], [2, 2, 2]).grown(2, shape),
            Box3::new([0, 0, 0], [3, 4, 4])
        );
    }
}
