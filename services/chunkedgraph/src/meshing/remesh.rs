//! Remeshing after edits, inside the server: a bounded queue of layer-2 nodes to mesh and a
//! pool of workers. Every finished edit of a graph enqueues its new layer-2 nodes; a worker
//! meshes them from the supervoxel volume (each chunk once, with the roots as they are now)
//! into `dynamic/`, then stitches the new ancestors up to `max_meshed_layer`. The layer-2
//! fragments alone already make a new root's manifest complete (the manifest descends to
//! children that have fragments); the stitched ancestors make it shorter.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use cg_graph::ChunkedGraph;
use cg_ids::layer_of;
use cg_mesh::Mesh;
use tokio::sync::{broadcast, mpsc};

use super::chunk::{self, ChunkCache};
use super::layout;
use super::store::MeshStore;

/// Jobs (one edit's layer-2 nodes each) waiting at most; beyond, new jobs are refused.
pub const QUEUE_CAPACITY: usize = 1024;

/// Counters of a remesher, for logs and the remesh route.
#[derive(Default, Debug)]
pub struct Stats {
    pub enqueued: AtomicU64,
    pub finished: AtomicU64,
    pub failed: AtomicU64,
    pub refused: AtomicU64,
}

/// A graph's remeshing queue and workers.
pub struct Remesher {
    tx: mpsc::Sender<Vec<u64>>,
    pub stats: Arc<Stats>,
}

/// Why a job was not queued.
#[derive(Debug, thiserror::Error)]
#[error("the remeshing queue is full ({QUEUE_CAPACITY} jobs waiting); try again later")]
pub struct QueueFull;

impl Remesher {
    /// Starts `workers` workers for a graph's meshes and subscribes them to its edits.
    pub fn start(
        graph: ChunkedGraph,
        store: Arc<MeshStore>,
        volume: Arc<ChunkCache>,
        workers: usize,
    ) -> Arc<Remesher> {
        let (tx, rx) = mpsc::channel::<Vec<u64>>(QUEUE_CAPACITY);
        let stats = Arc::new(Stats::default());
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..workers.max(1) {
            let rx = rx.clone();
            let (graph, store, volume, stats) =
                (graph.clone(), store.clone(), volume.clone(), stats.clone());
            tokio::spawn(async move {
                loop {
                    let job = { rx.lock().await.recv().await };
                    let Some(ids) = job else { break };
                    let t = Instant::now();
                    match remesh(&graph, &store, &volume, &ids).await {
                        Ok(n) => {
                            stats.finished.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(
                                table = graph.table(),
                                "remeshed {} layer-2 node(s), {n} fragment(s) in {:.0} ms",
                                ids.len(),
                                t.elapsed().as_secs_f64() * 1e3
                            );
                        }
                        Err(e) => {
                            stats.failed.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(table = graph.table(), "remeshing {ids:?}: {e:#}");
                        }
                    }
                }
            });
        }
        let remesher = Arc::new(Remesher { tx, stats });
        let mut events = graph.subscribe();
        let weak = Arc::downgrade(&remesher);
        let table = graph.table().to_string();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(ev) => {
                        let Some(r) = weak.upgrade() else { break };
                        if ev.new_l2_ids.is_empty() {
                            continue;
                        }
                        if let Err(e) = r.enqueue(ev.new_l2_ids) {
                            tracing::warn!(table, "operation {}: {e}", ev.operation_id);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(table, "remeshing missed {n} edit event(s)");
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        remesher
    }

    /// Queues layer-2 nodes for meshing.
    pub fn enqueue(&self, l2_ids: Vec<u64>) -> Result<(), QueueFull> {
        match self.tx.try_send(l2_ids) {
            Ok(()) => {
                self.stats.enqueued.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(_) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                Err(QueueFull)
            }
        }
    }
}

/// Meshes layer-2 nodes into `dynamic/` and stitches their ancestors; returns the number
/// of fragment files written.
pub async fn remesh(
    graph: &ChunkedGraph,
    store: &MeshStore,
    volume: &ChunkCache,
    l2_ids: &[u64],
) -> anyhow::Result<usize> {
    let g = graph.geometry();
    let mut by_chunk: BTreeMap<u64, HashSet<u64>> = BTreeMap::new();
    for &id in l2_ids {
        if layer_of(id) == 2 && g.check(id).is_ok() {
            by_chunk.entry(g.chunk_of(id)).or_default().insert(id);
        }
    }
    let mut written = 0;
    let mut meshes: HashMap<u64, Option<Arc<Mesh>>> = HashMap::new();
    for (chunk_id, ids) in by_chunk {
        let block = chunk::load(graph, volume, g.coords_of(chunk_id)).await?;
        let (g2, params) = (g.clone(), store.params);
        let fragments = tokio::task::spawn_blocking(move || {
            chunk::mesh_block(&g2, &block, &params, Some(&ids))
        })
        .await
        .context("meshing task")??;
        for f in fragments {
            let bytes = f.draco.unwrap_or_default();
            let mesh = if bytes.is_empty() {
                None
            } else {
                Some(Arc::new(cg_mesh::draco::decode(&bytes)?))
            };
            let path = store.dynamic_path(f.node);
            layout::write_atomic(&path, &bytes)
                .with_context(|| format!("writing {}", path.display()))?;
            meshes.insert(f.node, mesh);
            written += 1;
        }
    }
    // The new ancestors, lowest layer first.
    let mut ancestors: BTreeMap<u8, HashSet<u64>> = BTreeMap::new();
    let mut frontier: Vec<u64> = l2_ids.to_vec();
    while !frontier.is_empty() {
        let parents = graph.parents(&frontier, None).await?;
        frontier = parents
            .into_iter()
            .flatten()
            .filter(|&p| layer_of(p) <= store.params.max_meshed_layer)
            .collect();
        frontier.sort_unstable();
        frontier.dedup();
        for &p in &frontier {
            ancestors.entry(layer_of(p)).or_default().insert(p);
        }
    }
    for nodes in ancestors.into_values() {
        for node in nodes {
            let children = graph.children(&[node]).await?[0].ids.clone();
            if children.len() < 2 {
                continue;
            }
            let mut parts = Vec::new();
            for c in children {
                if let Some(m) = resolve(graph, store, &mut meshes, c).await? {
                    parts.push(m);
                }
            }
            if parts.is_empty() {
                continue;
            }
            let refs: Vec<&Mesh> = parts.iter().map(|m| m.as_ref()).collect();
            let stitched = super::stitch(&refs);
            if let Some(bytes) = chunk::encode(&stitched, store.params.uniform_draco_grid_size)? {
                let path = store.dynamic_path(node);
                layout::write_atomic(&path, &bytes)
                    .with_context(|| format!("writing {}", path.display()))?;
                meshes.insert(node, Some(Arc::new(cg_mesh::draco::decode(&bytes)?)));
                written += 1;
            }
        }
    }
    Ok(written)
}

/// A node's mesh: its own fragment, or its children's stitched (not stored).
async fn resolve(
    graph: &ChunkedGraph,
    store: &MeshStore,
    cache: &mut HashMap<u64, Option<Arc<Mesh>>>,
    node: u64,
) -> anyhow::Result<Option<Arc<Mesh>>> {
    // An explicit stack instead of recursion: async recursion needs boxing.
    let mut stack = vec![(node, false)];
    while let Some((n, expanded)) = stack.pop() {
        if cache.contains_key(&n) {
            continue;
        }
        if !expanded {
            if let Some(m) = store.read(n)? {
                cache.insert(n, Some(Arc::new(m)));
                continue;
            }
            if layer_of(n) <= 2 {
                cache.insert(n, None);
                continue;
            }
            let children = graph.children(&[n]).await?[0].ids.clone();
            stack.push((n, true));
            stack.extend(children.into_iter().map(|c| (c, false)));
            continue;
        }
        let children = graph.children(&[n]).await?[0].ids.clone();
        let parts: Vec<Arc<Mesh>> = children
            .iter()
            .filter_map(|c| cache.get(c).cloned().flatten())
            .collect();
        let mesh = match parts.len() {
            0 => None,
            1 => Some(parts[0].clone()),
            _ => {
                let refs: Vec<&Mesh> = parts.iter().map(|m| m.as_ref()).collect();
                Some(Arc::new(super::stitch(&refs)))
            }
        };
        cache.insert(n, mesh);
    }
    Ok(cache.get(&node).cloned().flatten())
}
