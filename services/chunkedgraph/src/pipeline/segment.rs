//! Stage 1, segmentation: watershed, region graph and mean-affinity agglomeration. It leaves,
//! per supervoxel chunk, the final segment of every voxel (`labels/{chunk}`) and the chunk's
//! sorted segments (`segments/{chunk}`), and the agglomeration (`agglomeration`: segment,
//! component pairs) for the stages after it.

use std::collections::HashMap;

use anyhow::Context;
use cg_segmentation::{agglomerate, watershed, Box3, WatershedParams};

use super::grid::{chunk_name, Chunk, Grid};
use super::input::Input;
use super::work::{Reader, WorkDir, Writer};

pub struct Params {
    pub watershed: WatershedParams,
    pub threshold: f64,
}

pub async fn write_chunk(work: &WorkDir, c: Chunk, labels: Vec<u64>) -> anyhow::Result<()> {
    let mut segments: Vec<u64> = labels.iter().copied().filter(|&s| s != 0).collect();
    segments.sort_unstable();
    segments.dedup();
    let mut w = Writer::default();
    w.u64s(&segments);
    work.put(&format!("segments/{}", chunk_name(c)), w.0)
        .await?;
    let mut w = Writer::default();
    w.u64s(&labels);
    work.put(&format!("labels/{}", chunk_name(c)), w.0).await
}

pub async fn read_segments(work: &WorkDir, c: Chunk) -> anyhow::Result<Vec<u64>> {
    let key = format!("segments/{}", chunk_name(c));
    let bytes = work.get(&key).await?;
    let mut r = Reader::new(&bytes, &key);
    let s = r.u64s()?;
    r.finish()?;
    Ok(s)
}

pub async fn read_labels(work: &WorkDir, grid: &Grid, c: Chunk) -> anyhow::Result<Vec<u64>> {
    let key = format!("labels/{}", chunk_name(c));
    let bytes = work.get(&key).await?;
    let mut r = Reader::new(&bytes, &key);
    let l = r.u64s()?;
    r.finish()?;
    let want: usize = grid.chunk_box(c).shape().iter().product();
    if l.len() != want {
        anyhow::bail!("{key} holds {} voxels, the chunk has {want}", l.len());
    }
    Ok(l)
}

pub async fn write_agglomeration(work: &WorkDir, pairs: &[(u64, u64)]) -> anyhow::Result<()> {
    let mut w = Writer::default();
    w.u64(pairs.len() as u64);
    for &(s, c) in pairs {
        w.u64(s);
        w.u64(c);
    }
    work.put("agglomeration", w.0).await
}

pub async fn read_agglomeration(work: &WorkDir) -> anyhow::Result<HashMap<u64, u64>> {
    let bytes = work.get("agglomeration").await?;
    let mut r = Reader::new(&bytes, "agglomeration");
    let n = r.u64()? as usize;
    let mut out = HashMap::with_capacity(n.min(bytes.len() / 16));
    for _ in 0..n {
        let s = r.u64()?;
        out.insert(s, r.u64()?);
    }
    r.finish()?;
    Ok(out)
}

/// Segments the whole volume in one task.
pub async fn run_whole(
    work: &WorkDir,
    input: &Input,
    grid: &Grid,
    p: &Params,
) -> anyhow::Result<()> {
    let affs = input.read(&Box3::whole(grid.shape)).await?;
    let ws = p.watershed;
    let threshold = p.threshold;
    let (seg, agg) = tokio::task::spawn_blocking(move || {
        let seg = watershed(&affs, &ws).context("watershed")?;
        let agg = agglomerate(&seg.graph, threshold);
        anyhow::Ok((seg, agg))
    })
    .await??;
    let pairs: Vec<(u64, u64)> = seg
        .graph
        .ids
        .iter()
        .copied()
        .zip(agg.components.iter().copied())
        .collect();
    for c in grid.chunks() {
        let b = grid.chunk_box(c);
        let [_, ny, nx] = grid.shape;
        let mut labels = Vec::with_capacity(b.shape().iter().product());
        for z in b.start[0]..b.stop[0] {
            for y in b.start[1]..b.stop[1] {
                let row = (z * ny + y) * nx;
                labels.extend_from_slice(&seg.labels[row + b.start[2]..row + b.stop[2]]);
            }
        }
        write_chunk(work, c, labels).await?;
    }
    write_agglomeration(work, &pairs).await
}
