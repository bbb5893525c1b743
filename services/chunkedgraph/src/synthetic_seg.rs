//! The supervoxel volume of a synthetic graph, written as Neuroglancer precomputed
//! (compressed_segmentation, gzip) so viewers and cloud-volume can read it like a pipeline's.

use std::path::Path;

use anyhow::Context;
use cg_graph::synthetic::SyntheticGraph;
use cg_ids::Geometry;
use cg_volume::{Array, DataType, Encoding, Info, Scale, Store, Volume, VolumeType};

/// Writes the segmentation under `dir` (created if missing) and returns its URL
/// (`file:///abs/path`), which the graph's metadata records as `data_dir`.
pub async fn write(
    g: &SyntheticGraph,
    geometry: &Geometry,
    dir: &Path,
    on_chunk: impl Fn(usize, usize),
) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let abs = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let url = format!("file://{}", abs.display());
    let cs = g.params.chunk_size;
    let chunk = [u64::from(cs[0]), u64::from(cs[1]), u64::from(cs[2])];
    let scale = Scale::new(
        geometry.volume_size,
        geometry.resolution,
        chunk,
        Encoding::CompressedSegmentation,
    );
    let info = Info::new(VolumeType::Segmentation, DataType::U64, 1, scale);
    let store = Store::open(&url).with_context(|| format!("opening {url}"))?;
    let volume = Volume::create(store, info)
        .await
        .with_context(|| format!("writing the info in {url}"))?;
    let chunks = g.params.chunks;
    let total = (chunks[0] * chunks[1] * chunks[2]) as usize;
    let mut done = 0;
    for z in 0..chunks[2] {
        for y in 0..chunks[1] {
            for x in 0..chunks[0] {
                let labels = g.segmentation_of_chunk(geometry, [x, y, z])?;
                let data =
                    Array::new(vec![cs[2] as usize, cs[1] as usize, cs[0] as usize], labels)?;
                let offset = [
                    i64::from(x * cs[0]),
                    i64::from(y * cs[1]),
                    i64::from(z * cs[2]),
                ];
                volume
                    .write_box(0, offset, &data)
                    .await
                    .with_context(|| format!("writing chunk {x},{y},{z} in {url}"))?;
                done += 1;
                on_chunk(done, total);
            }
        }
    }
    Ok(url)
}
