//! The supervoxel chunk grid of a run: which box each chunk covers, and the names of the
//! per-chunk work files.

use cg_segmentation::Box3;

/// Chunk coordinates (x, y, z), as the graph numbers chunks.
pub type Chunk = [u32; 3];

#[derive(Clone, Copy, Debug)]
pub struct Grid {
    /// Volume shape (z, y, x).
    pub shape: [usize; 3],
    /// Chunk size (z, y, x).
    pub chunk: [usize; 3],
}

impl Grid {
    /// Chunks per axis (x, y, z).
    pub fn counts(&self) -> [u32; 3] {
        let n = |a: usize| self.shape[a].div_ceil(self.chunk[a]) as u32;
        [n(2), n(1), n(0)]
    }

    /// Every chunk, in x-fastest order (the order shards are dealt in).
    pub fn chunks(&self) -> Vec<Chunk> {
        let [cx, cy, cz] = self.counts();
        let mut out = Vec::with_capacity((cx * cy * cz) as usize);
        for z in 0..cz {
            for y in 0..cy {
                for x in 0..cx {
                    out.push([x, y, z]);
                }
            }
        }
        out
    }

    /// The voxels (z, y, x) of a chunk, clipped to the volume.
    pub fn chunk_box(&self, c: Chunk) -> Box3 {
        let start = [
            c[2] as usize * self.chunk[0],
            c[1] as usize * self.chunk[1],
            c[0] as usize * self.chunk[2],
        ];
        let stop = [0, 1, 2].map(|a| (start[a] + self.chunk[a]).min(self.shape[a]));
        Box3::new(start, stop)
    }

    pub fn contains(&self, c: [i64; 3]) -> bool {
        let n = self.counts();
        (0..3).all(|a| c[a] >= 0 && c[a] < i64::from(n[a]))
    }
}

/// A box of array voxels (z, y, x from 0) as a precomputed volume's box (x, y, z from the
/// volume's voxel offset).
pub fn volume_box(b: &Box3, offset: [i64; 3]) -> cg_volume::BBox {
    let at = |p: [usize; 3]| [0, 1, 2].map(|a| offset[a] + p[2 - a] as i64);
    cg_volume::BBox::new(at(b.start), at(b.stop))
}

pub fn chunk_name(c: Chunk) -> String {
    format!("{}_{}_{}", c[0], c[1], c[2])
}

/// Tasks `i` with `i % count == index`: one pod's share of a stage.
pub fn share<T: Clone>(all: &[T], shard: (u32, u32)) -> Vec<T> {
    let (index, count) = shard;
    all.iter()
        .enumerate()
        .filter(|(i, _)| (*i as u64) % u64::from(count.max(1)) == u64::from(index))
        .map(|(_, t)| t.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_chunks_at_the_high_edges() {
        let g = Grid {
            shape: [10, 20, 33],
            chunk: [8, 16, 16],
        };
        assert_eq!(g.counts(), [3, 2, 2]);
        assert_eq!(g.chunks().len(), 12);
        let b = g.chunk_box([2, 1, 1]);
        assert_eq!((b.start, b.stop), ([8, 16, 32], [10, 20, 33]));
        let total: usize = g
            .chunks()
            .iter()
            .map(|&c| g.chunk_box(c).shape().iter().product::<usize>())
            .sum();
        assert_eq!(total, 10 * 20 * 33);
        let all: Vec<u32> = (0..10).collect();
        let mut dealt: Vec<u32> = (0..3).flat_map(|i| share(&all, (i, 3))).collect();
        dealt.sort_unstable();
        assert_eq!(dealt, all);
        let v = volume_box(&Box3::new([1, 2, 3], [4, 5, 6]), [10, 20, 30]);
        assert_eq!((v.min, v.max), ([13, 22, 31], [16, 25, 34]));
    }
}
