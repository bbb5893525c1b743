//! The supervoxel under each point, read from the precomputed supervoxel volume the pipeline
//! writes (`DATA_DIR/segmentation`, compressed_segmentation; any store `cg-volume` reads).
//! Points are grouped by volume chunk, so each chunk is fetched and decoded once per batch.

use std::collections::HashMap;

use cg_volume::Volume;
use futures::{StreamExt, TryStreamExt};

use crate::{MappedSynapse, Result, Synapse, SynapseError};

/// Chunks fetched and decoded at once.
const CHUNKS_IN_FLIGHT: usize = 8;

/// A supervoxel volume, scale 0.
pub struct SupervoxelVolume {
    volume: Volume,
}

/// What mapping a batch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapReport {
    pub mapped: u64,
    /// Synapses dropped because a point lay outside the volume or on label 0.
    pub dropped: u64,
}

impl SupervoxelVolume {
    /// Opens the volume at `url` (a local path, `file://`, `gs://`, `s3://` or `http(s)://`).
    pub async fn open(url: &str) -> Result<SupervoxelVolume> {
        let volume = Volume::open(url).await?;
        if volume.info().num_channels != 1 {
            return Err(SynapseError::InvalidInput(format!(
                "{url}: a supervoxel volume has one channel, this one {}",
                volume.info().num_channels
            )));
        }
        Ok(SupervoxelVolume { volume })
    }

    pub fn from_volume(volume: Volume) -> SupervoxelVolume {
        SupervoxelVolume { volume }
    }

    /// Voxel size of scale 0 in nm (x, y, z).
    pub fn resolution(&self) -> Result<[f64; 3]> {
        Ok(self.volume.scale(0)?.resolution)
    }

    /// The label under each point (voxels, x y z); 0 outside the volume or where no chunk
    /// was written.
    pub async fn labels_at(&self, points: &[[i64; 3]]) -> Result<Vec<u64>> {
        let scale = self.volume.scale(0)?;
        let bounds = scale.bounds();
        let cs = scale.chunk_size();
        let off = scale.voxel_offset;
        let mut by_chunk: HashMap<[u64; 3], Vec<usize>> = HashMap::new();
        for (i, p) in points.iter().enumerate() {
            if (0..3).all(|d| p[d] >= bounds.min[d] && p[d] < bounds.max[d]) {
                let g = std::array::from_fn(|d| ((p[d] - off[d]) as u64) / cs[d]);
                by_chunk.entry(g).or_default().push(i);
            }
        }
        let mut out = vec![0u64; points.len()];
        let vol = &self.volume;
        let mut reads = futures::stream::iter(by_chunk)
            .map(|(g, idx)| async move {
                let data = vol.read_chunk::<u64>(0, g).await?;
                Ok::<_, cg_volume::Error>((g, idx, data))
            })
            .buffer_unordered(CHUNKS_IN_FLIGHT);
        while let Some((g, idx, data)) = reads.try_next().await? {
            let Some(data) = data else { continue };
            let bbox = scale.chunk_bbox(g);
            let size = bbox.size();
            for i in idx {
                let p = points[i];
                let l = [
                    (p[0] - bbox.min[0]) as u64,
                    (p[1] - bbox.min[1]) as u64,
                    (p[2] - bbox.min[2]) as u64,
                ];
                let at = l[0] + size[0] * (l[1] + size[1] * l[2]);
                out[i] = data.get(at as usize).copied().unwrap_or(0);
            }
        }
        Ok(out)
    }

    /// Maps each synapse's points to supervoxels. Synapses with a point outside the volume
    /// or on label 0 are dropped (counted in the report).
    pub async fn map(&self, synapses: &[Synapse]) -> Result<(Vec<MappedSynapse>, MapReport)> {
        let mut points = Vec::with_capacity(2 * synapses.len());
        for s in synapses {
            points.push(s.pre);
            points.push(s.post);
        }
        let labels = self.labels_at(&points).await?;
        let mut out = Vec::with_capacity(synapses.len());
        let mut report = MapReport::default();
        for (s, l) in synapses.iter().zip(labels.chunks_exact(2)) {
            let narrow = |p: [i64; 3]| p.map(|v| v as i32);
            if l[0] == 0 || l[1] == 0 {
                report.dropped += 1;
                continue;
            }
            out.push(MappedSynapse {
                id: s.id,
                pre_sv: l[0],
                post_sv: l[1],
                pre: narrow(s.pre),
                post: narrow(s.post),
                size: s.size,
                score: s.score,
            });
        }
        report.mapped = out.len() as u64;
        Ok((out, report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cg_volume::{Array, DataType, Encoding, Info, Scale, Store, VolumeType};

    #[tokio::test]
    async fn points_find_their_labels_across_chunks() {
        let scale = Scale::new(
            [20, 12, 8],
            [4.0, 4.0, 40.0],
            [8, 8, 8],
            Encoding::CompressedSegmentation,
        );
        let info = Info::new(VolumeType::Segmentation, DataType::U64, 1, scale);
        let vol = Volume::create(Store::memory(), info).await.unwrap();
        // label = 1 + x + 100 y + 10000 z, so every voxel says where it is.
        let mut data = Vec::new();
        for z in 0..8u64 {
            for y in 0..12u64 {
                for x in 0..20u64 {
                    data.push(1 + x + 100 * y + 10000 * z);
                }
            }
        }
        let arr = Array::new(vec![8, 12, 20], data).unwrap();
        vol.write_box(0, [0, 0, 0], &arr).await.unwrap();
        let sv = SupervoxelVolume::from_volume(vol);
        let pts = [[0, 0, 0], [19, 11, 7], [9, 3, 2], [20, 0, 0], [-1, 0, 0]];
        let got = sv.labels_at(&pts).await.unwrap();
        assert_eq!(
            got,
            vec![1, 1 + 19 + 1100 + 70000, 1 + 9 + 300 + 20000, 0, 0]
        );
        let syn = [
            Synapse {
                id: 1,
                pre: [1, 1, 1],
                post: [2, 2, 2],
                size: 3,
                score: 0.5,
            },
            Synapse {
                id: 2,
                pre: [1, 1, 1],
                post: [99, 2, 2],
                size: 3,
                score: 0.5,
            },
        ];
        let (m, r) = sv.map(&syn).await.unwrap();
        assert_eq!(
            r,
            MapReport {
                mapped: 1,
                dropped: 1
            }
        );
        assert_eq!((m[0].pre_sv, m[0].post_sv), (10102, 20203));
    }
}
