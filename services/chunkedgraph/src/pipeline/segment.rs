//! Stage 1, segmentation: `cg_segmentation::chunked`'s exact chunked watershed, region graph
//! and mean-affinity agglomeration, as steps: `segment-0` (a task per chunk), `segment-1`...
//! (2×2×2 parents, up to the root), `segment-finish` (size merging, dust, agglomeration on the
//! final basins) and `segment-labels` (a task per chunk). It leaves, per supervoxel chunk,
//! the final supervoxel of every voxel (`labels/{chunk}`; named by first voxel as in the
//! whole-volume watershed) and the chunk's sorted supervoxels (`segments/{chunk}`), and the
//! agglomeration (`agglomeration`: segment, component pairs) for the stages after it.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use cg_segmentation::chunked::{
    chunk_labels, finish, run_task, AffinitySource, ChunkedParams, Finished, GraphPart, TaskId,
    TaskOutput, TaskTree,
};
use cg_segmentation::{Affinities, Box3, SegError, WatershedParams};

use super::grid::{chunk_name, Chunk, Grid};
use super::input::Input;
use super::work::{Reader, WorkDir, Writer};

pub struct Params {
    pub watershed: WatershedParams,
    pub threshold: f64,
    /// Voxels read around each chunk (the chunked watershed's ghost margin).
    pub ghost: usize,
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

/// A step's work file for a task of the chunked segmentation.
fn task_key(t: TaskId) -> String {
    format!("segment/{}/{}", t.level, task_file(t))
}

fn task_file(t: TaskId) -> String {
    format!("{}_{}_{}", t.index[0], t.index[1], t.index[2])
}

/// What `segment-finish` reads of a task: the basins and contacts it made final.
fn graph_key(t: TaskId) -> String {
    format!("segment-graph/{}/{}", t.level, task_file(t))
}

/// The input as the chunked segmentation reads it: from a blocking thread, so async reads
/// block on the runtime.
struct Source {
    input: Arc<Input>,
    shape: [usize; 3],
    runtime: tokio::runtime::Handle,
}

impl AffinitySource for Source {
    fn shape(&self) -> [usize; 3] {
        self.shape
    }

    fn read(&self, b: &Box3) -> cg_segmentation::Result<Affinities> {
        if let Input::Memory(a) = &*self.input {
            return a.crop(b);
        }
        self.runtime
            .block_on(self.input.read(b))
            .map_err(|e| SegError::Chunked(format!("reading the input: {e:#}")))
    }
}

pub struct Segmenter<'a> {
    pub work: &'a WorkDir,
    pub input: Arc<Input>,
    pub grid: &'a Grid,
    pub params: ChunkedParams,
    pub tree: TaskTree,
}

impl<'a> Segmenter<'a> {
    pub fn new(
        work: &'a WorkDir,
        input: Arc<Input>,
        grid: &'a Grid,
        p: &Params,
    ) -> anyhow::Result<Self> {
        let params = ChunkedParams {
            chunk_size: grid.chunk,
            ghost: p.ghost,
            watershed: p.watershed,
            threshold: p.threshold,
            threads: 1,
        };
        let tree = TaskTree::new(grid.shape, grid.chunk)?;
        Ok(Segmenter {
            work,
            input,
            grid,
            params,
            tree,
        })
    }

    pub fn levels(&self) -> usize {
        self.tree.levels()
    }

    async fn output(&self, t: TaskId) -> anyhow::Result<TaskOutput> {
        let key = task_key(t);
        let bytes = self.work.get(&key).await?;
        TaskOutput::from_bytes(&bytes).with_context(|| format!("{key} is corrupt"))
    }

    /// One task of level `t.level`: reads its children's outputs, writes its own.
    pub async fn task(&self, t: TaskId) -> anyhow::Result<()> {
        let mut children = Vec::new();
        for c in self.tree.children(t) {
            children.push(self.output(c).await?);
        }
        let src = Source {
            input: self.input.clone(),
            shape: self.grid.shape,
            runtime: tokio::runtime::Handle::current(),
        };
        let (tree, params) = (self.tree.clone(), self.params);
        // CPU work on a blocking thread, where the source may block on the runtime for reads.
        let out = tokio::task::spawn_blocking(move || {
            let refs: Vec<&TaskOutput> = children.iter().collect();
            run_task(&src, &tree, t, &params, &refs)
        })
        .await?
        .with_context(|| format!("segmentation task {t:?}"))?;
        self.work.put(&graph_key(t), out.graph.to_bytes()).await?;
        self.work.put(&task_key(t), out.to_bytes()).await
    }

    /// The graph steps on every task's final basins: writes each basin's supervoxel
    /// (`finished`) and the agglomeration.
    pub async fn finish(&self) -> anyhow::Result<()> {
        let mut parts = Vec::with_capacity(self.tree.len());
        for level in 0..self.tree.levels() {
            for t in self.tree.tasks(level) {
                let key = graph_key(t);
                let bytes = self.work.get(&key).await?;
                let part =
                    GraphPart::from_bytes(&bytes).with_context(|| format!("{key} is corrupt"))?;
                parts.push(part);
            }
        }
        let params = self.params;
        let finished = tokio::task::spawn_blocking(move || finish(parts, &params))
            .await?
            .context("size merging, dust removal and agglomeration")?;
        self.work.put("finished", finished.to_bytes()).await?;
        let pairs: Vec<(u64, u64)> = finished
            .graph
            .ids
            .iter()
            .copied()
            .zip(finished.agglomeration.components.iter().copied())
            .collect();
        write_agglomeration(self.work, &pairs).await
    }

    /// Reads what [`Self::finish`] wrote, in the shape `chunk_labels` takes.
    pub async fn finished(&self) -> anyhow::Result<Finished> {
        let bytes = self.work.get("finished").await?;
        Finished::from_bytes(&bytes).context("finished is corrupt")
    }

    /// A chunk's final supervoxels, from its leaf output and its ancestors' renames.
    pub async fn labels(&self, c: Chunk, finished: &Finished) -> anyhow::Result<()> {
        let leaf_id = TaskId {
            level: 0,
            index: [c[2] as usize, c[1] as usize, c[0] as usize],
        };
        let leaf = self.output(leaf_id).await?;
        let mut ancestors = Vec::new();
        for a in self.tree.ancestors(leaf_id) {
            ancestors.push(self.output(a).await?);
        }
        let renames: Vec<&[(u64, u64)]> = ancestors.iter().map(|a| a.renames.as_slice()).collect();
        let labels = chunk_labels(&leaf, &renames, finished)
            .with_context(|| format!("final labels of chunk {}", chunk_name(c)))?;
        let want: usize = self.grid.chunk_box(c).shape().iter().product();
        if labels.len() != want {
            anyhow::bail!(
                "chunk {}: the segmentation gave {} voxels for a chunk of {want}",
                chunk_name(c),
                labels.len()
            );
        }
        write_chunk(self.work, c, labels).await
    }
}
