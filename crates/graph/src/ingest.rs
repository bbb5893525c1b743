//! Ingest: builds a graph's layers in Bigtable, chunk by chunk.
//!
//! Layer 2 comes from each supervoxel chunk alone: the components of its active in-chunk
//! edges. Each layer above reads what its 2×2×2 child chunks left without a parent (their
//! *pending* nodes, kept on the child chunk's counter row), joins those whose active
//! cross-chunk edges meet at this layer, and passes the rest up (skip connections).
//!
//! Every task is deterministic (segment numbers follow the smallest child ID) and every cell
//! carries the graph's ingest timestamp, so a task re-run after a crash rewrites identical
//! cells. A task's completion marker is written last; a re-run skips marked chunks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use cg_bigtable::proto::v2::Mutation;
use cg_bigtable::{filter, mutation, ReadRows};
use cg_ids::{layer_of, row_key, ChunkCoord, Geometry};
use futures::StreamExt;

use crate::schema::{self, CrossEdge, PendingNode, StoredEdge};
use crate::synthetic::SyntheticGraph;
use crate::{ChunkedGraph, GraphError, Result};

/// How an edge relates to the chunk grid, as PyChunkedGraph classes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EdgeKind {
    /// Both supervoxels in one chunk.
    InChunk,
    /// A real contact between supervoxels in neighbouring chunks.
    BetweenChunk,
    /// One object cut by a chunk face; always connected, stored with infinite affinity.
    CrossChunk,
}

/// An edge as given to the ingest.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RawEdge {
    pub a: u64,
    pub b: u64,
    pub affinity: f32,
    pub area: u32,
    /// `None`: in-chunk if both ends share a chunk, else cross-chunk if the affinity is
    /// infinite, else between-chunk.
    pub kind: Option<EdgeKind>,
}

/// Which edges the automated agglomeration merged.
#[derive(Clone, Debug)]
pub enum Agglomeration {
    /// Edges with at least this mean affinity are active.
    Threshold(f32),
    /// Component label per supervoxel: edges inside one component are active. Unlabelled
    /// supervoxels join nothing.
    Labels(HashMap<u64, u64>),
}

/// An edge with its agglomeration state, as one chunk task sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InputEdge {
    pub a: u64,
    pub b: u64,
    pub affinity: f32,
    pub area: u32,
    pub active: bool,
}

/// One supervoxel chunk's share of the input: its supervoxels, and every edge with an end
/// among them.
#[derive(Clone, Debug, Default)]
pub struct ChunkInput {
    pub supervoxels: Vec<u64>,
    pub edges: Vec<InputEdge>,
}

/// Where the ingest reads its input from, a supervoxel chunk at a time.
pub trait IngestSource: Send + Sync {
    /// The supervoxel-grid chunks that hold supervoxels.
    fn chunks(&self) -> Vec<ChunkCoord>;
    fn chunk(&self, coord: ChunkCoord) -> Result<ChunkInput>;
}

/// An input held in memory, checked and split by chunk.
pub struct MemorySource {
    chunks: BTreeMap<ChunkCoord, ChunkInput>,
    pub supervoxels: usize,
    pub edges: usize,
}

impl MemorySource {
    /// Checks the input against the geometry and applies the agglomeration. Edges given twice
    /// are merged: active if either is, the larger affinity, the summed area.
    pub fn new(
        geometry: &Geometry,
        supervoxels: &[u64],
        edges: &[RawEdge],
        agglomeration: &Agglomeration,
    ) -> Result<MemorySource> {
        let mut chunks: BTreeMap<ChunkCoord, ChunkInput> = BTreeMap::new();
        let mut known = HashSet::with_capacity(supervoxels.len());
        for &sv in supervoxels {
            geometry.check(sv)?;
            if layer_of(sv) != 1 || geometry.segment_of(sv) == 0 {
                return Err(GraphError::InvalidInput(format!(
                    "{} is not a supervoxel ID (layer 1, segment > 0)",
                    cg_ids::Explain(geometry, sv)
                )));
            }
            if !known.insert(sv) {
                return Err(GraphError::InvalidInput(format!(
                    "supervoxel {sv} is listed twice"
                )));
            }
            chunks
                .entry(geometry.coords_of(sv))
                .or_default()
                .supervoxels
                .push(sv);
        }
        let mut merged: HashMap<(u64, u64), InputEdge> = HashMap::with_capacity(edges.len());
        for (i, e) in edges.iter().enumerate() {
            for v in [e.a, e.b] {
                if !known.contains(&v) {
                    return Err(GraphError::InvalidInput(format!(
                        "edge {i} names supervoxel {v}, which is not in the input"
                    )));
                }
            }
            if e.a == e.b {
                return Err(GraphError::InvalidInput(format!(
                    "edge {i} joins supervoxel {} to itself",
                    e.a
                )));
            }
            if e.affinity.is_nan() {
                return Err(GraphError::InvalidInput(format!(
                    "edge {i} has affinity NaN"
                )));
            }
            let same_chunk = geometry.coords_of(e.a) == geometry.coords_of(e.b);
            let kind = match (e.kind, same_chunk) {
                (None, true) => EdgeKind::InChunk,
                (None, false) if e.affinity == f32::INFINITY => EdgeKind::CrossChunk,
                (None, false) => EdgeKind::BetweenChunk,
                (Some(EdgeKind::InChunk), true) => EdgeKind::InChunk,
                (Some(k @ (EdgeKind::BetweenChunk | EdgeKind::CrossChunk)), false) => k,
                (Some(k), _) => {
                    return Err(GraphError::InvalidInput(format!(
                        "edge {i} ({} – {}) is classed {k:?}, but its ends are {} chunk",
                        e.a,
                        e.b,
                        if same_chunk {
                            "in the same"
                        } else {
                            "in a different"
                        }
                    )))
                }
            };
            let (affinity, active) = match kind {
                EdgeKind::CrossChunk => (f32::INFINITY, true),
                _ => {
                    let active = match agglomeration {
                        Agglomeration::Threshold(t) => e.affinity >= *t,
                        Agglomeration::Labels(labels) => match (labels.get(&e.a), labels.get(&e.b))
                        {
                            (Some(x), Some(y)) => x == y,
                            _ => false,
                        },
                    };
                    (e.affinity, active)
                }
            };
            let key = (e.a.min(e.b), e.a.max(e.b));
            merged
                .entry(key)
                .and_modify(|m| {
                    m.active |= active;
                    m.affinity = m.affinity.max(affinity);
                    m.area = m.area.saturating_add(e.area);
                })
                .or_insert(InputEdge {
                    a: key.0,
                    b: key.1,
                    affinity,
                    area: e.area,
                    active,
                });
        }
        let n_edges = merged.len();
        let mut merged: Vec<InputEdge> = merged.into_values().collect();
        merged.sort_unstable_by_key(|e| (e.a, e.b));
        for e in merged {
            let (ca, cb) = (geometry.coords_of(e.a), geometry.coords_of(e.b));
            if let Some(c) = chunks.get_mut(&ca) {
                c.edges.push(e);
            }
            if ca != cb {
                if let Some(c) = chunks.get_mut(&cb) {
                    c.edges.push(e);
                }
            }
        }
        for c in chunks.values_mut() {
            c.supervoxels.sort_unstable();
        }
        Ok(MemorySource {
            chunks,
            supervoxels: supervoxels.len(),
            edges: n_edges,
        })
    }

    /// A synthetic graph, agglomerated at [`crate::synthetic::AGGLOMERATION_THRESHOLD`].
    pub fn from_synthetic(graph: &SyntheticGraph, geometry: &Geometry) -> Result<MemorySource> {
        let ids = graph.supervoxel_ids(geometry)?;
        let edges: Vec<RawEdge> = graph
            .edges
            .iter()
            .map(|e| RawEdge {
                a: ids[e.a],
                b: ids[e.b],
                affinity: e.affinity,
                area: e.area,
                kind: Some(e.kind),
            })
            .collect();
        MemorySource::new(
            geometry,
            &ids,
            &edges,
            &Agglomeration::Threshold(crate::synthetic::AGGLOMERATION_THRESHOLD),
        )
    }
}

impl IngestSource for MemorySource {
    fn chunks(&self) -> Vec<ChunkCoord> {
        self.chunks.keys().copied().collect()
    }

    fn chunk(&self, coord: ChunkCoord) -> Result<ChunkInput> {
        Ok(self.chunks.get(&coord).cloned().unwrap_or_default())
    }
}

#[derive(Clone, Debug)]
pub struct IngestOptions {
    /// Chunk tasks in flight at once.
    pub concurrency: usize,
    /// Rows per MutateRows request.
    pub batch_rows: usize,
    /// Run only this layer's tasks (2 = the supervoxel chunks), for distributed ingests that
    /// run one layer at a time. Every task of the layer below must be finished.
    pub layer: Option<u8>,
    /// Run only the tasks `i` with `i % count == index` (in chunk order) of each layer run:
    /// `(index, count)`, e.g. a Kubernetes job's completion index and completions.
    pub shard: Option<(u32, u32)>,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            concurrency: 8,
            batch_rows: 5000,
            layer: None,
            shard: None,
        }
    }
}

/// Progress of a running ingest, reported after every chunk task.
#[derive(Clone, Copy, Debug)]
pub struct IngestProgress {
    pub layer: u8,
    pub layers: u8,
    /// Chunk tasks finished (or found finished) in all layers so far.
    pub done: u64,
    pub total: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Chunk tasks run, per layer (index 0 is layer 2).
    pub tasks_run: Vec<u64>,
    /// Chunk tasks skipped because an earlier run completed them.
    pub tasks_skipped: u64,
    /// Supervoxels written by the tasks run.
    pub supervoxels: u64,
    /// Nodes (layer ≥ 2) created by the tasks run.
    pub nodes: u64,
    pub rows_written: u64,
}

#[derive(Default)]
struct TaskStats {
    supervoxels: u64,
    nodes: u64,
    rows: u64,
}

/// The chunk tasks of every layer, from the supervoxel chunks up to the root chunk.
fn plan(geometry: &Geometry, l2: &[ChunkCoord]) -> Vec<Vec<ChunkCoord>> {
    let mut layers = vec![l2.to_vec()];
    for layer in 3..=geometry.n_layers {
        let below = layers.last().map(Vec::as_slice).unwrap_or(&[]);
        let mut here: Vec<ChunkCoord> = below
            .iter()
            .map(|&c| geometry.ancestor_coords(c, layer - 1, layer))
            .collect();
        here.sort_unstable();
        here.dedup();
        layers.push(here);
    }
    layers
}

/// Runs (or resumes) the ingest of `source` into `graph`.
pub async fn ingest(
    graph: &ChunkedGraph,
    source: Arc<dyn IngestSource>,
    options: &IngestOptions,
    progress: &(dyn Fn(IngestProgress) + Send + Sync),
) -> Result<IngestReport> {
    let geometry = graph.geometry().clone();
    let mut l2 = source.chunks();
    l2.sort_unstable();
    l2.dedup();
    for &c in &l2 {
        geometry.chunk_id(1, c)?;
    }
    let plan = plan(&geometry, &l2);
    if let Some((index, count)) = options.shard {
        if count == 0 || index >= count {
            return Err(GraphError::InvalidInput(format!(
                "shard {index} of {count}: the index must be below the count"
            )));
        }
    }
    let last = geometry.n_layers.max(2);
    if let Some(l) = options.layer {
        if !(2..=last).contains(&l) {
            return Err(GraphError::InvalidInput(format!(
                "layer {l}: this graph builds layers 2 to {last}"
            )));
        }
        if l > 2 {
            let below = &plan[l as usize - 3];
            let finished = finished_chunks(graph, l - 1, below).await?;
            if finished.len() < below.len() {
                return Err(GraphError::InvalidInput(format!(
                    "layer {}: {} of {} chunk tasks are not finished; run that layer first",
                    l - 1,
                    below.len() - finished.len(),
                    below.len()
                )));
            }
        }
    }
    // This run's share of each layer, in chunk order; `plan` stays whole for the upper
    // tasks, which look up which child chunks exist.
    let share: Vec<Vec<ChunkCoord>> = plan
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, chunks)| {
            let layer = i as u8 + 2;
            if options.layer.is_some_and(|l| l != layer) {
                return Vec::new();
            }
            match options.shard {
                Some((index, count)) => chunks
                    .into_iter()
                    .enumerate()
                    .filter(|(k, _)| *k as u64 % u64::from(count) == u64::from(index))
                    .map(|(_, c)| c)
                    .collect(),
                None => chunks,
            }
        })
        .collect();
    let total: u64 = share.iter().map(|l| l.len() as u64).sum();
    let mut report = IngestReport::default();
    let mut done = 0u64;
    for (i, chunks) in share.iter().enumerate() {
        let layer = i as u8 + 2;
        let finished = finished_chunks(graph, layer, chunks).await?;
        done += finished.len() as u64;
        report.tasks_skipped += finished.len() as u64;
        progress(IngestProgress {
            layer,
            layers: geometry.n_layers,
            done,
            total,
        });
        let todo: Vec<ChunkCoord> = chunks
            .iter()
            .copied()
            .filter(|c| !finished.contains(c))
            .collect();
        let below: Arc<HashSet<ChunkCoord>> = Arc::new(if layer > 2 {
            plan[i - 1].iter().copied().collect()
        } else {
            HashSet::new()
        });
        let mut run = 0u64;
        let mut tasks = futures::stream::iter(todo)
            .map(|coord| {
                let graph = graph.clone();
                let source = source.clone();
                let below = below.clone();
                let batch = options.batch_rows.max(1);
                AbortOnDrop(tokio::spawn(async move {
                    if layer == 2 {
                        let input = source.chunk(coord)?;
                        layer2_task(&graph, coord, input, batch).await
                    } else {
                        upper_task(&graph, layer, coord, &below, batch).await
                    }
                }))
            })
            .buffer_unordered(options.concurrency.max(1));
        while let Some(joined) = tasks.next().await {
            let stats =
                joined.map_err(|e| GraphError::Conflict(format!("ingest task failed: {e}")))??;
            report.supervoxels += stats.supervoxels;
            report.nodes += stats.nodes;
            report.rows_written += stats.rows;
            run += 1;
            done += 1;
            progress(IngestProgress {
                layer,
                layers: geometry.n_layers,
                done,
                total,
            });
        }
        report.tasks_run.push(run);
    }
    Ok(report)
}

/// A spawned chunk task that stops when the ingest is dropped, so an abandoned ingest
/// writes nothing more.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

/// Which of `chunks` (at `layer`) carry a completion marker.
async fn finished_chunks(
    graph: &ChunkedGraph,
    layer: u8,
    chunks: &[ChunkCoord],
) -> Result<HashSet<ChunkCoord>> {
    let g = graph.geometry();
    let mut by_key = HashMap::with_capacity(chunks.len());
    for &c in chunks {
        by_key.insert(cg_ids::counter_key(g.chunk_id(layer, c)?), c);
    }
    let mut out = HashSet::new();
    let keys: Vec<Vec<u8>> = by_key.keys().cloned().collect();
    for batch in keys.chunks(10_000) {
        let rows = graph
            .client()
            .read_rows_vec(
                graph.table(),
                ReadRows::new()
                    .keys(batch.iter().cloned())
                    .filter(filter::chain([
                        filter::column(schema::IMMUTABLE, schema::DONE),
                        filter::cells_per_column_limit(1),
                        filter::strip_value(),
                    ])),
            )
            .await?;
        for row in rows {
            if let Some(c) = by_key.get(&row.key) {
                out.insert(*c);
            }
        }
    }
    Ok(out)
}

struct Dsu(Vec<usize>);

impl Dsu {
    fn new(n: usize) -> Dsu {
        Dsu((0..n).collect())
    }
    fn find(&mut self, mut x: usize) -> usize {
        while self.0[x] != x {
            self.0[x] = self.0[self.0[x]];
            x = self.0[x];
        }
        x
    }
    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            self.0[a.max(b)] = a.min(b);
        }
    }
    /// Groups of members, ordered by their smallest member (members are 0..n in order).
    fn groups(&mut self) -> Vec<Vec<usize>> {
        let mut index: HashMap<usize, usize> = HashMap::new();
        let mut out: Vec<Vec<usize>> = Vec::new();
        for i in 0..self.0.len() {
            let r = self.find(i);
            let g = *index.entry(r).or_insert_with(|| {
                out.push(Vec::new());
                out.len() - 1
            });
            out[g].push(i);
        }
        out
    }
}

fn set(qualifier: &[u8], family: &str, ts: i64, value: Vec<u8>) -> Mutation {
    mutation::set_cell(family, qualifier.to_vec(), ts, value)
}

async fn write_rows(
    graph: &ChunkedGraph,
    rows: Vec<(Vec<u8>, Vec<Mutation>)>,
    batch: usize,
) -> Result<u64> {
    let n = rows.len() as u64;
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let part: Vec<_> = rows.by_ref().take(batch).collect();
        graph.client().mutate_rows(graph.table(), part).await?;
    }
    Ok(n)
}

/// Writes a chunk's counter, pending nodes and completion marker in one atomic row write.
async fn finish_chunk(
    graph: &ChunkedGraph,
    chunk_id: u64,
    segments: u64,
    pending: &[PendingNode],
) -> Result<()> {
    let ts = graph.meta().ingest_timestamp_micros;
    let segments = i64::try_from(segments).unwrap_or(i64::MAX);
    graph
        .client()
        .mutate_row(
            graph.table(),
            cg_ids::counter_key(chunk_id),
            vec![
                set(
                    schema::COUNTER,
                    schema::COUNTERS,
                    ts,
                    segments.to_be_bytes().to_vec(),
                ),
                set(
                    schema::PENDING,
                    schema::IMMUTABLE,
                    ts,
                    schema::encode_pending(pending),
                ),
                set(schema::DONE, schema::IMMUTABLE, ts, b"1".to_vec()),
            ],
        )
        .await?;
    Ok(())
}

async fn layer2_task(
    graph: &ChunkedGraph,
    coord: ChunkCoord,
    mut input: ChunkInput,
    batch: usize,
) -> Result<TaskStats> {
    let g = graph.geometry();
    let ts = graph.meta().ingest_timestamp_micros;
    input.supervoxels.sort_unstable();
    input.supervoxels.dedup();
    let svs = &input.supervoxels;
    for &sv in svs {
        if layer_of(sv) != 1 || g.coords_of(sv) != coord {
            return Err(GraphError::InvalidInput(format!(
                "supervoxel {} is not in chunk {coord:?}",
                cg_ids::Explain(g, sv)
            )));
        }
    }
    let index: HashMap<u64, usize> = svs.iter().enumerate().map(|(i, &s)| (s, i)).collect();
    let mut dsu = Dsu::new(svs.len());
    let mut cross: Vec<(usize, CrossEdge)> = Vec::new();
    let mut stored: BTreeMap<usize, Vec<(StoredEdge, bool)>> = BTreeMap::new();
    for e in &input.edges {
        let (ia, ib) = (index.get(&e.a).copied(), index.get(&e.b).copied());
        let lo = e.a.min(e.b);
        match (ia, ib) {
            (Some(x), Some(y)) => {
                if e.active {
                    dsu.union(x, y);
                }
            }
            (Some(_), None) | (None, Some(_)) => {
                let (here, there) = if ia.is_some() { (e.a, e.b) } else { (e.b, e.a) };
                if e.active {
                    let layer = g.meeting_layer(g.coords_of(here), g.coords_of(there));
                    if layer > g.n_layers {
                        return Err(GraphError::InvalidInput(format!(
                            "edge {here} – {there} meets above the root layer"
                        )));
                    }
                    cross.push((index[&here], CrossEdge { layer, here, there }));
                }
            }
            (None, None) => {
                return Err(GraphError::InvalidInput(format!(
                    "edge {} – {} has no end in chunk {coord:?}",
                    e.a, e.b
                )))
            }
        }
        if let Some(&i) = index.get(&lo) {
            let partner = e.a.max(e.b);
            stored.entry(i).or_default().push((
                StoredEdge {
                    partner,
                    affinity: e.affinity,
                    area: e.area,
                },
                e.active,
            ));
        }
    }
    let groups = dsu.groups();
    let chunk_id = g.chunk_id(2, coord)?;
    let mut l2_of = vec![0u64; svs.len()];
    let mut rows: Vec<(Vec<u8>, Vec<Mutation>)> = Vec::with_capacity(svs.len() + groups.len());
    let mut node_cross: Vec<Vec<CrossEdge>> = vec![Vec::new(); groups.len()];
    let mut ids = Vec::with_capacity(groups.len());
    for (gi, members) in groups.iter().enumerate() {
        let id = g.node_id(chunk_id, gi as u64 + 1)?;
        ids.push(id);
        for &m in members {
            l2_of[m] = id;
        }
    }
    let group_of: HashMap<u64, usize> = ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    for (i, e) in cross {
        node_cross[group_of[&l2_of[i]]].push(e);
    }
    for (i, &sv) in svs.iter().enumerate() {
        let mut m = vec![set(
            schema::PARENT,
            schema::VERSIONED,
            ts,
            l2_of[i].to_le_bytes().to_vec(),
        )];
        if let Some(list) = stored.get_mut(&i) {
            list.sort_unstable_by_key(|e| e.0.partner);
            let edges: Vec<StoredEdge> = list.iter().map(|e| e.0).collect();
            let bits: Vec<bool> = list.iter().map(|e| e.1).collect();
            m.push(set(
                schema::EDGES,
                schema::IMMUTABLE,
                ts,
                schema::encode_edges(&edges),
            ));
            m.push(set(
                schema::EDGE_STATE,
                schema::VERSIONED,
                ts,
                schema::encode_bits(&bits),
            ));
        }
        rows.push((row_key(sv).to_vec(), m));
    }
    let mut pending = Vec::with_capacity(groups.len());
    for (gi, members) in groups.iter().enumerate() {
        let children: Vec<u64> = members.iter().map(|&m| svs[m]).collect();
        let cx = &mut node_cross[gi];
        cx.sort_unstable();
        cx.dedup();
        let mut m = vec![set(
            schema::CHILDREN,
            schema::IMMUTABLE,
            ts,
            schema::encode_ids(&children),
        )];
        if !cx.is_empty() {
            m.push(set(
                schema::CROSS_EDGES,
                schema::IMMUTABLE,
                ts,
                schema::encode_cross_edges(cx),
            ));
        }
        rows.push((row_key(ids[gi]).to_vec(), m));
        if g.n_layers > 2 {
            pending.push(PendingNode {
                id: ids[gi],
                cross: std::mem::take(cx),
            });
        }
    }
    let written = write_rows(graph, rows, batch).await?;
    finish_chunk(graph, chunk_id, groups.len() as u64, &pending).await?;
    Ok(TaskStats {
        supervoxels: svs.len() as u64,
        nodes: groups.len() as u64,
        rows: written + 1,
    })
}

async fn upper_task(
    graph: &ChunkedGraph,
    layer: u8,
    coord: ChunkCoord,
    below: &HashSet<ChunkCoord>,
    batch: usize,
) -> Result<TaskStats> {
    let g = graph.geometry();
    let ts = graph.meta().ingest_timestamp_micros;
    let children_chunks: Vec<ChunkCoord> = g
        .child_chunks(layer, coord)
        .into_iter()
        .filter(|c| below.contains(c))
        .collect();
    let mut keys = Vec::with_capacity(children_chunks.len());
    for &c in &children_chunks {
        keys.push(cg_ids::counter_key(g.chunk_id(layer - 1, c)?));
    }
    let rows = graph
        .client()
        .read_rows_vec(
            graph.table(),
            ReadRows::new().keys(keys.clone()).filter(filter::chain([
                filter::family(schema::IMMUTABLE),
                filter::cells_per_column_limit(1),
            ])),
        )
        .await?;
    let mut pending: Vec<PendingNode> = Vec::new();
    let mut complete = 0;
    for row in &rows {
        if row.cell(schema::IMMUTABLE, schema::DONE).is_none() {
            continue;
        }
        complete += 1;
        if let Some(cell) = row.cell(schema::IMMUTABLE, schema::PENDING) {
            pending.extend(schema::decode_pending(&cell.value)?);
        }
    }
    if complete != keys.len() {
        return Err(GraphError::Conflict(format!(
            "layer {layer} chunk {coord:?}: {} of its {} child chunks are not complete",
            keys.len() - complete,
            keys.len()
        )));
    }
    pending.sort_unstable_by_key(|p| p.id);
    let parent_layer =
        |p: &PendingNode| p.cross.iter().map(|e| e.layer).min().unwrap_or(g.n_layers);
    let mut holder: HashMap<u64, usize> = HashMap::new();
    for (i, p) in pending.iter().enumerate() {
        for e in &p.cross {
            holder.insert(e.here, i);
        }
    }
    let here: Vec<usize> = (0..pending.len())
        .filter(|&i| parent_layer(&pending[i]) == layer)
        .collect();
    let slot: HashMap<usize, usize> = here.iter().enumerate().map(|(s, &i)| (i, s)).collect();
    let mut dsu = Dsu::new(here.len());
    for (s, &i) in here.iter().enumerate() {
        for e in &pending[i].cross {
            if e.layer != layer {
                continue;
            }
            let other = holder
                .get(&e.there)
                .and_then(|j| slot.get(j))
                .ok_or_else(|| {
                    GraphError::Corrupt(format!(
                        "cross-chunk edge {} – {} at layer {layer} has no partner node in chunk {coord:?}",
                        e.here, e.there
                    ))
                })?;
            dsu.union(s, *other);
        }
    }
    let groups = dsu.groups();
    let chunk_id = g.chunk_id(layer, coord)?;
    let mut rows: Vec<(Vec<u8>, Vec<Mutation>)> = Vec::new();
    let mut out: Vec<PendingNode> = Vec::new();
    for (gi, members) in groups.iter().enumerate() {
        let id = g.node_id(chunk_id, gi as u64 + 1)?;
        let children: Vec<u64> = members.iter().map(|&s| pending[here[s]].id).collect();
        let mut cx: Vec<CrossEdge> = members
            .iter()
            .flat_map(|&s| pending[here[s]].cross.iter())
            .filter(|e| e.layer > layer)
            .copied()
            .collect();
        cx.sort_unstable();
        cx.dedup();
        let mut m = vec![set(
            schema::CHILDREN,
            schema::IMMUTABLE,
            ts,
            schema::encode_ids(&children),
        )];
        if !cx.is_empty() {
            m.push(set(
                schema::CROSS_EDGES,
                schema::IMMUTABLE,
                ts,
                schema::encode_cross_edges(&cx),
            ));
        }
        rows.push((row_key(id).to_vec(), m));
        for &c in &children {
            rows.push((
                row_key(c).to_vec(),
                vec![set(
                    schema::PARENT,
                    schema::VERSIONED,
                    ts,
                    id.to_le_bytes().to_vec(),
                )],
            ));
        }
        if layer < g.n_layers {
            out.push(PendingNode { id, cross: cx });
        }
    }
    if layer < g.n_layers {
        let in_here: HashSet<usize> = here.iter().copied().collect();
        for (i, p) in pending.into_iter().enumerate() {
            if !in_here.contains(&i) {
                out.push(p);
            }
        }
    }
    let written = write_rows(graph, rows, batch).await?;
    finish_chunk(graph, chunk_id, groups.len() as u64, &out).await?;
    Ok(TaskStats {
        supervoxels: 0,
        nodes: groups.len() as u64,
        rows: written + 1,
    })
}
