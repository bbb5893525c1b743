//! Edits: merge, split (given edges, or a multicut), undo and redo.
//!
//! Every edit is a change of supervoxel edge states. The layer-2 nodes at the ends of the
//! changed edges are rebuilt from their supervoxels' active in-chunk edges, and their
//! ancestors layer by layer from cross-chunk edges, exactly as the ingest builds them; every
//! replaced node gets `new_parents`, every moved node a new `parent` version, all stamped
//! with the edit's one timestamp.
//!
//! Life of an edit: take a lock on each root (CheckAndMutateRow, which also proves the root
//! is still current), compute every row mutation, write them to the op-log row with status
//! `pending` (one atomic row write), apply them, mark the op `done`, release the locks. The
//! plan is idempotent, so an edit cut off after its op-log row is finished by whoever finds
//! its expired lock (the next edit on that root, or [`ChunkedGraph::recover`] at start-up).
//! An edit cut off before that row wrote nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use cg_bigtable::proto::v2::{mutate_rows_request, MutateRowsRequest, Mutation};
use cg_bigtable::{filter, mutation, ReadRows};
use cg_ids::{layer_of, row_key, VoxelBox};
use prost::Message;

use crate::events::EditEvent;
use crate::mincut::FlowGraph;
use crate::oplog::OperationEntry;
use crate::query::{RootQuery, SubgraphEdge};
use crate::schema::{self, CrossEdge, StoredEdge, UserEdge};
use crate::{ChunkedGraph, GraphError, Result};

/// A supervoxel and a position in it, in nm.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub supervoxel: u64,
    pub position_nm: [f64; 3],
}

#[derive(Clone, Debug)]
pub struct EditOptions {
    /// How long a root lock holds before another edit may take over (and finish the edit).
    pub lock_expiry_micros: i64,
    /// Voxels added around the points to make the box an edit looks in.
    pub bbox_margin_voxels: [u64; 3],
    /// Merges whose points lie farther apart than this many chunks (on any axis) are refused.
    pub max_merge_distance_chunks: u32,
    /// Testing: stop after writing this many plan rows, as if the process died.
    pub crash_after_rows: Option<usize>,
    /// Testing: stop with the locks taken and no plan written, as if the process died.
    pub crash_before_plan: bool,
}

impl Default for EditOptions {
    fn default() -> Self {
        EditOptions {
            lock_expiry_micros: 60_000_000,
            bbox_margin_voxels: [128, 128, 16],
            max_merge_distance_chunks: 8,
            crash_after_rows: None,
            crash_before_plan: false,
        }
    }
}

/// What an edit did.
#[derive(Clone, Debug, PartialEq)]
pub struct EditResult {
    pub operation_id: u64,
    pub timestamp_micros: i64,
    pub old_roots: Vec<u64>,
    pub new_roots: Vec<u64>,
    pub new_l2_ids: Vec<u64>,
    pub added_edges: Vec<[u64; 2]>,
    pub removed_edges: Vec<[u64; 2]>,
}

/// A multicut computed without writing.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitPreview {
    /// The edges the cut removes.
    pub cut_edges: Vec<[u64; 2]>,
    /// The supervoxels in the box on the sources' side, then on the sinks' side.
    pub source_side: Vec<u64>,
    pub sink_side: Vec<u64>,
}

const INFINITE: f64 = 1e12;

fn pair(a: u64, b: u64) -> [u64; 2] {
    [a.min(b), a.max(b)]
}

/// A node waiting for its parent during a rebuild.
struct Waiting {
    id: u64,
    cross: Vec<CrossEdge>,
}

/// Row mutations of an edit, keyed by row so each row is written once.
#[derive(Default)]
struct Plan {
    rows: BTreeMap<Vec<u8>, Vec<Mutation>>,
}

impl Plan {
    fn set(&mut self, key: Vec<u8>, family: &str, qualifier: &[u8], ts: i64, value: Vec<u8>) {
        self.rows.entry(key).or_default().push(mutation::set_cell(
            family,
            qualifier.to_vec(),
            ts,
            value,
        ));
    }

    fn encode(&self) -> Vec<u8> {
        MutateRowsRequest {
            entries: self
                .rows
                .iter()
                .map(|(k, m)| mutate_rows_request::Entry {
                    row_key: k.clone(),
                    mutations: m.clone(),
                    idempotency: None,
                })
                .collect(),
            ..Default::default()
        }
        .encode_to_vec()
    }
}

/// Segment numbers reserved from a chunk's counter at a time.
const ID_BLOCK: u64 = 32;

/// Per chunk, the reserved segment numbers `[next, end)` this process has not used yet.
#[derive(Default)]
pub(crate) struct IdPool(std::sync::Mutex<HashMap<u64, (u64, u64)>>);

impl IdPool {
    fn take(&self, chunk: u64, n: u64) -> Option<u64> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let slot = m.get_mut(&chunk)?;
        if slot.1 - slot.0 < n {
            return None;
        }
        let first = slot.0;
        slot.0 += n;
        Some(first)
    }

    fn keep(&self, chunk: u64, next: u64, end: u64) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(chunk, (next, end));
    }
}

fn simulated_crash() -> GraphError {
    GraphError::Storage(cg_bigtable::Error::Status {
        code: cg_bigtable::Code::Unavailable,
        message: "simulated crash".into(),
        transport: true,
    })
}

/// Nodes whose row a plan sets a cell of column `qualifier` on.
fn nodes_setting(rows: &[(Vec<u8>, Vec<Mutation>)], qualifier: &[u8]) -> Vec<u64> {
    rows.iter()
        .filter(|(_, mutations)| {
            mutations.iter().any(|m| {
                matches!(&m.mutation, Some(cg_bigtable::proto::v2::mutation::Mutation::SetCell(c))
                    if c.column_qualifier == qualifier)
            })
        })
        .filter_map(|(key, _)| cg_ids::parse_row_key(key).ok())
        .collect()
}

/// Nodes whose cached parent pointers or spans a plan makes stale: those it moves
/// (`parent`), replaces (`new_parents`) or creates (`children`).
fn moved_nodes(rows: &[(Vec<u8>, Vec<Mutation>)]) -> Vec<u64> {
    let mut out = nodes_setting(rows, schema::PARENT);
    out.extend(nodes_setting(rows, schema::NEW_PARENTS));
    out.extend(nodes_setting(rows, schema::CHILDREN));
    out.sort_unstable();
    out.dedup();
    out
}

/// Layer-2 nodes a plan creates: the rows that get a children cell.
fn created_l2(rows: &[(Vec<u8>, Vec<Mutation>)]) -> Vec<u64> {
    let mut out = nodes_setting(rows, schema::CHILDREN);
    out.retain(|&id| layer_of(id) == 2);
    out
}

fn decode_plan(bytes: &[u8]) -> Result<Vec<(Vec<u8>, Vec<Mutation>)>> {
    let req = MutateRowsRequest::decode(bytes)
        .map_err(|e| GraphError::Corrupt(format!("edit plan: {e}")))?;
    Ok(req
        .entries
        .into_iter()
        .map(|e| (e.row_key, e.mutations))
        .collect())
}

impl ChunkedGraph {
    fn voxel_of(&self, p: &Point) -> Result<[u64; 3]> {
        let g = self.geometry();
        let mut v = [0u64; 3];
        for (d, out) in v.iter_mut().enumerate() {
            let x = p.position_nm[d] / g.resolution[d] - g.voxel_offset[d] as f64;
            if !x.is_finite() || x < 0.0 || x >= g.volume_size[d] as f64 {
                return Err(GraphError::InvalidInput(format!(
                    "point {:?} nm is outside the volume",
                    p.position_nm
                )));
            }
            *out = x as u64;
        }
        Ok(v)
    }

    fn bbox_around(&self, voxels: &[[u64; 3]], margin: [u64; 3]) -> VoxelBox {
        let g = self.geometry();
        let mut b = VoxelBox::new([u64::MAX; 3], [0; 3]);
        for v in voxels {
            for d in 0..3 {
                b.min[d] = b.min[d].min(v[d].saturating_sub(margin[d]));
                b.max[d] = b.max[d].max((v[d] + margin[d] + 1).min(g.volume_size[d]));
            }
        }
        b
    }

    fn check_supervoxels(&self, svs: &[u64]) -> Result<()> {
        for &sv in svs {
            self.geometry().check(sv)?;
            if layer_of(sv) != 1 {
                return Err(GraphError::InvalidInput(format!(
                    "{sv} is not a supervoxel ID"
                )));
            }
        }
        Ok(())
    }

    async fn latest_roots(&self, svs: &[u64]) -> Result<Vec<u64>> {
        self.roots(svs, &RootQuery::default()).await
    }

    /// Merges the objects of two points: activates the inactive edges between them inside a
    /// box around the points, or adds a user edge between the two supervoxels if there are
    /// none.
    pub async fn merge(
        &self,
        user: &str,
        a: Point,
        b: Point,
        opts: &EditOptions,
    ) -> Result<EditResult> {
        self.check_supervoxels(&[a.supervoxel, b.supervoxel])?;
        let (va, vb) = (self.voxel_of(&a)?, self.voxel_of(&b)?);
        let g = self.geometry();
        for d in 0..3 {
            let limit = u64::from(opts.max_merge_distance_chunks) * u64::from(g.chunk_size[d]);
            if va[d].abs_diff(vb[d]) > limit {
                return Err(GraphError::InvalidInput(format!(
                    "the merge points are {} voxels apart on axis {d}, more than the {} chunks allowed",
                    va[d].abs_diff(vb[d]),
                    opts.max_merge_distance_chunks
                )));
            }
        }
        let roots = self.latest_roots(&[a.supervoxel, b.supervoxel]).await?;
        if roots[0] == roots[1] {
            return Err(GraphError::InvalidInput(format!(
                "supervoxels {} and {} already belong to one object, {}",
                a.supervoxel, b.supervoxel, roots[0]
            )));
        }
        let bbox = self.bbox_around(&[va, vb], opts.bbox_margin_voxels);
        let mut extra = serde_json::Map::new();
        extra.insert(
            "source_coords".into(),
            serde_json::json!([a.position_nm, b.position_nm]),
        );
        self.run_edit(user, "merge", &roots, opts, extra, |graph, t| {
            let (a, b, roots) = (a.supervoxel, b.supervoxel, roots.clone());
            Box::pin(async move {
                let (side_a, side_b) = futures::try_join!(
                    graph.leaves(roots[0], Some(bbox), 1),
                    graph.leaves(roots[1], Some(bbox), 1)
                )?;
                let in_a: HashSet<u64> = side_a.iter().copied().collect();
                let mut all = side_a;
                all.extend(side_b);
                let mut added: Vec<[u64; 2]> = graph
                    .edges_among(&all, t)
                    .await?
                    .into_iter()
                    .filter(|e| !e.active && in_a.contains(&e.a) != in_a.contains(&e.b))
                    .map(|e| pair(e.a, e.b))
                    .collect();
                if added.is_empty() {
                    added.push(pair(a, b));
                }
                Ok((added, Vec::new()))
            })
        })
        .await
    }

    /// Removes exactly the given edges (a split without min cut). Every edge must be active
    /// and inside one object; cross-chunk edges (one object cut by a chunk face) cannot be
    /// removed.
    pub async fn split_edges(
        &self,
        user: &str,
        edges: &[[u64; 2]],
        opts: &EditOptions,
    ) -> Result<EditResult> {
        if edges.is_empty() {
            return Err(GraphError::InvalidInput("no edges to remove".into()));
        }
        let svs: Vec<u64> = edges.iter().flatten().copied().collect();
        self.check_supervoxels(&svs)?;
        let roots = self.latest_roots(&svs).await?;
        let mut distinct = roots.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() != 1 {
            return Err(GraphError::InvalidInput(format!(
                "the edges to remove span {} objects ({distinct:?}); a split works inside one",
                distinct.len()
            )));
        }
        let edges: Vec<[u64; 2]> = edges.iter().map(|e| pair(e[0], e[1])).collect();
        let extra = serde_json::Map::new();
        self.run_edit(user, "split", &distinct, opts, extra, |graph, t| {
            let edges = edges.clone();
            Box::pin(async move {
                let svs: Vec<u64> = edges.iter().flatten().copied().collect();
                let current = graph.edges_among(&svs, t).await?;
                let active: HashMap<[u64; 2], &SubgraphEdge> = current
                    .iter()
                    .filter(|e| e.active)
                    .map(|e| (pair(e.a, e.b), e))
                    .collect();
                for e in &edges {
                    match active.get(e) {
                        None => {
                            return Err(GraphError::InvalidInput(format!(
                                "there is no active edge between {} and {}",
                                e[0], e[1]
                            )))
                        }
                        Some(s) if s.affinity.is_infinite() => {
                            return Err(GraphError::InvalidInput(format!(
                                "{} – {} joins one object cut by a chunk face and cannot be removed",
                                e[0], e[1]
                            )))
                        }
                        Some(_) => {}
                    }
                }
                Ok((Vec::new(), edges))
            })
        })
        .await
    }

    /// Splits one object between sources and sinks along a minimum cut of the affinities of
    /// its active edges inside a box around the points.
    pub async fn multicut(
        &self,
        user: &str,
        sources: &[Point],
        sinks: &[Point],
        opts: &EditOptions,
    ) -> Result<EditResult> {
        let (root, bbox) = self.multicut_scope(sources, sinks, opts).await?;
        let mut extra = serde_json::Map::new();
        extra.insert(
            "source_coords".into(),
            serde_json::json!(sources.iter().map(|p| p.position_nm).collect::<Vec<_>>()),
        );
        extra.insert(
            "sink_coords".into(),
            serde_json::json!(sinks.iter().map(|p| p.position_nm).collect::<Vec<_>>()),
        );
        let src: Vec<u64> = sources.iter().map(|p| p.supervoxel).collect();
        let snk: Vec<u64> = sinks.iter().map(|p| p.supervoxel).collect();
        self.run_edit(user, "split", &[root], opts, extra, |graph, t| {
            let (src, snk) = (src.clone(), snk.clone());
            Box::pin(async move {
                let cut = graph.compute_cut(root, bbox, &src, &snk, t).await?;
                Ok((Vec::new(), cut.cut_edges))
            })
        })
        .await
    }

    /// The cut [`multicut`](Self::multicut) would make, without writing anything.
    pub async fn split_preview(
        &self,
        sources: &[Point],
        sinks: &[Point],
        opts: &EditOptions,
    ) -> Result<SplitPreview> {
        let (root, bbox) = self.multicut_scope(sources, sinks, opts).await?;
        let src: Vec<u64> = sources.iter().map(|p| p.supervoxel).collect();
        let snk: Vec<u64> = sinks.iter().map(|p| p.supervoxel).collect();
        self.compute_cut(root, bbox, &src, &snk, mutation::now_micros())
            .await
    }

    async fn multicut_scope(
        &self,
        sources: &[Point],
        sinks: &[Point],
        opts: &EditOptions,
    ) -> Result<(u64, VoxelBox)> {
        if sources.is_empty() || sinks.is_empty() {
            return Err(GraphError::InvalidInput(
                "a split needs at least one source and one sink".into(),
            ));
        }
        let all: Vec<&Point> = sources.iter().chain(sinks).collect();
        let svs: Vec<u64> = all.iter().map(|p| p.supervoxel).collect();
        self.check_supervoxels(&svs)?;
        let src: HashSet<u64> = sources.iter().map(|p| p.supervoxel).collect();
        if let Some(p) = sinks.iter().find(|p| src.contains(&p.supervoxel)) {
            return Err(GraphError::InvalidInput(format!(
                "supervoxel {} is both a source and a sink",
                p.supervoxel
            )));
        }
        let voxels = all
            .iter()
            .map(|p| self.voxel_of(p))
            .collect::<Result<Vec<_>>>()?;
        let roots = self.latest_roots(&svs).await?;
        let mut distinct = roots.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() != 1 {
            return Err(GraphError::InvalidInput(format!(
                "sources and sinks belong to {} different objects ({distinct:?}); a split works inside one",
                distinct.len()
            )));
        }
        Ok((
            distinct[0],
            self.bbox_around(&voxels, opts.bbox_margin_voxels),
        ))
    }

    async fn compute_cut(
        &self,
        root: u64,
        bbox: VoxelBox,
        sources: &[u64],
        sinks: &[u64],
        t: i64,
    ) -> Result<SplitPreview> {
        let mut svs = self.leaves(root, Some(bbox), 1).await?;
        svs.extend(sources.iter().chain(sinks));
        svs.sort_unstable();
        svs.dedup();
        let edges: Vec<SubgraphEdge> = self
            .edges_among(&svs, t)
            .await?
            .into_iter()
            .filter(|e| e.active)
            .collect();
        let index: HashMap<u64, usize> = svs.iter().enumerate().map(|(i, &s)| (s, i)).collect();
        let n = svs.len();
        let mut adj: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n];
        for (k, e) in edges.iter().enumerate() {
            let (a, b) = (index[&e.a], index[&e.b]);
            adj[a].push((b, k));
            adj[b].push((a, k));
        }
        let src: Vec<usize> = sources.iter().map(|s| index[s]).collect();
        let snk: Vec<usize> = sinks.iter().map(|s| index[s]).collect();
        let reach = |from: &[usize], blocked: &HashSet<usize>, cut: &HashSet<usize>| {
            let mut seen = vec![false; n];
            let mut q: VecDeque<usize> = from.iter().copied().collect();
            for &s in from {
                seen[s] = true;
            }
            while let Some(u) = q.pop_front() {
                for &(v, k) in &adj[u] {
                    if !seen[v] && !blocked.contains(&v) && !cut.contains(&k) {
                        seen[v] = true;
                        q.push_back(v);
                    }
                }
            }
            seen
        };
        let none = HashSet::new();
        let from_src = reach(&src, &none, &none);
        if !snk.iter().any(|&s| from_src[s]) {
            return Err(GraphError::InvalidInput(
                "the sources and sinks are not connected inside the box around them; nothing to cut".into(),
            ));
        }
        // Keep each side in one piece: paths joining the sources (avoiding sinks), and the
        // sinks (avoiding sources), get infinite capacity.
        let mut reinforced: HashSet<usize> = HashSet::new();
        let sink_set: HashSet<usize> = snk.iter().copied().collect();
        let src_set: HashSet<usize> = src.iter().copied().collect();
        for (group, avoid) in [(&src, &sink_set), (&snk, &src_set)] {
            for &target in group.iter().skip(1) {
                if let Some(path) = shortest_path(&adj, group[0], target, avoid) {
                    reinforced.extend(path);
                }
            }
        }
        let mut flow = FlowGraph::new(n + 2);
        let (s, t_node) = (n, n + 1);
        for (k, e) in edges.iter().enumerate() {
            let cap = if reinforced.contains(&k) || e.affinity.is_infinite() {
                INFINITE
            } else {
                f64::from(e.affinity.max(0.0)) + 1e-6
            };
            flow.add_edge(index[&e.a], index[&e.b], cap);
        }
        for &v in &src {
            flow.add_edge(s, v, INFINITE);
        }
        for &v in &snk {
            flow.add_edge(t_node, v, INFINITE);
        }
        let (value, side) = flow.min_cut(s, t_node);
        let cut: Vec<usize> = (0..edges.len())
            .filter(|&k| side[index[&edges[k].a]] != side[index[&edges[k].b]])
            .collect();
        if cut.is_empty() {
            return Err(GraphError::InvalidInput("the cut is empty".into()));
        }
        if value >= INFINITE / 2.0 {
            return Err(GraphError::InvalidInput(
                "no cut separates the sources from the sinks without breaking one side apart; try points farther apart".into(),
            ));
        }
        let cut_set: HashSet<usize> = cut.iter().copied().collect();
        let src_side = reach(&src, &none, &cut_set);
        if snk.iter().any(|&v| src_side[v]) {
            return Err(GraphError::InvalidInput(
                "the cut does not separate the sources from the sinks".into(),
            ));
        }
        let snk_side = reach(&snk, &none, &cut_set);
        let src_count = src_side.iter().filter(|&&x| x).count();
        let snk_count = snk_side.iter().filter(|&&x| x).count();
        let only_labelled = src_count == src_set.len() || snk_count == sink_set.len();
        if only_labelled && n > src_count + snk_count {
            return Err(GraphError::InvalidInput(
                "the cut only isolates the labelled supervoxels; place the points deeper inside each side".into(),
            ));
        }
        Ok(SplitPreview {
            cut_edges: cut.iter().map(|&k| pair(edges[k].a, edges[k].b)).collect(),
            source_side: (0..n).filter(|&i| src_side[i]).map(|i| svs[i]).collect(),
            sink_side: (0..n).filter(|&i| snk_side[i]).map(|i| svs[i]).collect(),
        })
    }

    /// The op-log entry of an operation.
    pub async fn operation(&self, id: u64) -> Result<(OperationEntry, String)> {
        let row = self
            .client()
            .read_row(
                self.table(),
                schema::op_key(id),
                Some(filter::chain([
                    filter::interleave([
                        filter::column(schema::IMMUTABLE, schema::ENTRY),
                        filter::column(schema::VERSIONED, schema::STATUS),
                    ]),
                    filter::cells_per_column_limit(1),
                ])),
            )
            .await?
            .ok_or_else(|| GraphError::NotFound(format!("operation {id} does not exist")))?;
        let entry = row
            .cell(schema::IMMUTABLE, schema::ENTRY)
            .ok_or_else(|| GraphError::NotFound(format!("operation {id} does not exist")))?;
        let entry: OperationEntry = serde_json::from_slice(&entry.value)
            .map_err(|e| GraphError::Corrupt(format!("operation {id}: {e}")))?;
        let status = row
            .cell(schema::VERSIONED, schema::STATUS)
            .map(|c| String::from_utf8_lossy(&c.value).into_owned())
            .unwrap_or_default();
        Ok((entry, status))
    }

    /// Reverts an operation: re-activates what it removed and removes what it added. Undoing
    /// an undo redoes the original.
    pub async fn undo(&self, user: &str, op: u64, opts: &EditOptions) -> Result<EditResult> {
        let (entry, status) = self.operation(op).await?;
        if status != "done" {
            return Err(GraphError::InvalidInput(format!(
                "operation {op} is {status:?}, not done"
            )));
        }
        if entry.kind == "undo" {
            let target = undone(&entry)?;
            return self.replay(user, "redo", target, false, opts).await;
        }
        self.replay(user, "undo", op, true, opts).await
    }

    /// Applies an operation's edge changes again. Redoing an undo undoes again.
    pub async fn redo(&self, user: &str, op: u64, opts: &EditOptions) -> Result<EditResult> {
        let (entry, status) = self.operation(op).await?;
        if status != "done" {
            return Err(GraphError::InvalidInput(format!(
                "operation {op} is {status:?}, not done"
            )));
        }
        if entry.kind == "undo" {
            let target = undone(&entry)?;
            return self.replay(user, "undo", target, true, opts).await;
        }
        self.replay(user, "redo", op, false, opts).await
    }

    async fn replay(
        &self,
        user: &str,
        kind: &str,
        op: u64,
        invert: bool,
        opts: &EditOptions,
    ) -> Result<EditResult> {
        let (entry, _) = self.operation(op).await?;
        let (want_on, want_off) = if invert {
            (entry.removed_edges.clone(), entry.added_edges.clone())
        } else {
            (entry.added_edges.clone(), entry.removed_edges.clone())
        };
        let svs: Vec<u64> = want_on.iter().chain(&want_off).flatten().copied().collect();
        if svs.is_empty() {
            return Err(GraphError::InvalidInput(format!(
                "operation {op} changed no edges"
            )));
        }
        let mut roots = self.latest_roots(&svs).await?;
        roots.sort_unstable();
        roots.dedup();
        let mut extra = serde_json::Map::new();
        let key = if kind == "undo" {
            "undone_operation"
        } else {
            "redone_operation"
        };
        extra.insert(key.into(), serde_json::json!(op));
        self.run_edit(user, kind, &roots, opts, extra, |graph, t| {
            let (want_on, want_off) = (want_on.clone(), want_off.clone());
            Box::pin(async move {
                let svs: Vec<u64> = want_on.iter().chain(&want_off).flatten().copied().collect();
                let active: HashSet<[u64; 2]> = graph
                    .edges_among(&svs, t)
                    .await?
                    .into_iter()
                    .filter(|e| e.active)
                    .map(|e| pair(e.a, e.b))
                    .collect();
                let on: Vec<[u64; 2]> = want_on
                    .into_iter()
                    .filter(|e| !active.contains(e))
                    .collect();
                let off: Vec<[u64; 2]> = want_off
                    .into_iter()
                    .filter(|e| active.contains(e))
                    .collect();
                if on.is_empty() && off.is_empty() {
                    return Err(GraphError::InvalidInput(format!(
                        "operation {op}'s edges are already as it would leave them"
                    )));
                }
                Ok((on, off))
            })
        })
        .await
    }

    /// Finishes every edit that was cut off after writing its plan (status `pending`), and
    /// releases the locks of every edit cut off before it (status `locking`), once their
    /// locks have expired. With `lock_expiry_micros: 0` it takes every such edit at once:
    /// right for a process that owns its storage alone, at start-up. Returns how many edits
    /// it finished or released.
    pub async fn recover(&self, opts: &EditOptions) -> Result<usize> {
        let rows = self
            .client()
            .read_rows_vec(
                self.table(),
                ReadRows::new()
                    .prefix(vec![schema::OPERATION_PREFIX])
                    .filter(filter::chain([
                        filter::interleave([
                            filter::column(schema::VERSIONED, schema::STATUS),
                            filter::column(schema::VERSIONED, schema::LOCKING),
                        ]),
                        filter::cells_per_column_limit(1),
                    ])),
            )
            .await?;
        let mut recovered = 0;
        for row in rows {
            let Some(status) = row.cell(schema::VERSIONED, schema::STATUS) else {
                continue;
            };
            let pending = status.value == b"pending";
            if !pending && status.value != b"locking" {
                continue;
            }
            let id = cg_ids::parse_row_key(&row.key[1..])?;
            let mut roots = match row.cell(schema::VERSIONED, schema::LOCKING) {
                Some(c) => schema::decode_ids(&c.value)?,
                None => Vec::new(),
            };
            if pending {
                roots.extend(self.operation(id).await?.0.old_roots);
                roots.sort_unstable();
                roots.dedup();
            }
            let now = mutation::now_micros();
            let mut live = false;
            for &r in &roots {
                if let Some((holder, at)) = self.lock_of(r).await? {
                    if holder == id && at > now - opts.lock_expiry_micros {
                        live = true;
                    }
                }
            }
            if live {
                continue;
            }
            if pending {
                self.finish(id, &roots).await?;
            } else {
                tracing::warn!(
                    op = id,
                    "releasing the locks of an edit cut off before its plan"
                );
                for &r in &roots {
                    self.unlock(r, id).await?;
                }
                self.set_status(id, b"aborted").await?;
            }
            recovered += 1;
        }
        Ok(recovered)
    }

    async fn set_status(&self, op: u64, status: &[u8]) -> Result<()> {
        self.client()
            .mutate_row(
                self.table(),
                schema::op_key(op),
                vec![mutation::set_cell(
                    schema::VERSIONED,
                    schema::STATUS.to_vec(),
                    mutation::now_micros(),
                    status.to_vec(),
                )],
            )
            .await?;
        Ok(())
    }

    /// The lock on a root: the operation holding it and when it was taken.
    async fn lock_of(&self, root: u64) -> Result<Option<(u64, i64)>> {
        let row = self
            .client()
            .read_row(
                self.table(),
                row_key(root).to_vec(),
                Some(filter::chain([
                    filter::column(schema::LOCKS, schema::LOCK),
                    filter::cells_per_column_limit(1),
                ])),
            )
            .await?;
        let Some(cell) = row
            .as_ref()
            .and_then(|r| r.cell(schema::LOCKS, schema::LOCK))
        else {
            return Ok(None);
        };
        let op = std::str::from_utf8(&cell.value)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| GraphError::Corrupt(format!("lock on {root}")))?;
        Ok(Some((op, cell.timestamp_micros)))
    }

    /// Completes operation `op` from its plan (if it has one), marks it done and releases its
    /// locks on `roots`.
    async fn finish(&self, op: u64, roots: &[u64]) -> Result<()> {
        let mut recovered = None;
        let row = self
            .client()
            .read_row(
                self.table(),
                schema::op_key(op),
                Some(filter::chain([
                    filter::interleave([
                        filter::column(schema::IMMUTABLE, schema::PLAN),
                        filter::column(schema::VERSIONED, schema::STATUS),
                    ]),
                    filter::cells_per_column_limit(1),
                ])),
            )
            .await?;
        if let Some(row) = row {
            if let (Some(plan), Some(status)) = (
                row.cell(schema::IMMUTABLE, schema::PLAN),
                row.cell(schema::VERSIONED, schema::STATUS),
            ) {
                if status.value != b"done" {
                    tracing::warn!(op, "finishing an interrupted edit");
                    let rows = decode_plan(&plan.value)?;
                    let new_l2_ids = created_l2(&rows);
                    self.client().mutate_rows(self.table(), rows).await?;
                    recovered = Some(new_l2_ids);
                    // As in a live edit: locks go before `done`.
                    for &r in roots {
                        self.unlock(r, op).await?;
                    }
                    self.client()
                        .mutate_row(
                            self.table(),
                            schema::op_key(op),
                            vec![mutation::set_cell(
                                schema::VERSIONED,
                                schema::STATUS.to_vec(),
                                status.timestamp_micros,
                                b"done".to_vec(),
                            )],
                        )
                        .await?;
                }
            }
        }
        // A replayed edit released its locks above, before `done`.
        if recovered.is_none() {
            for &r in roots {
                self.unlock(r, op).await?;
            }
        }
        self.clear_cache_parents();
        if let Some(new_l2_ids) = recovered {
            let (entry, _) = self.operation(op).await?;
            self.events().publish(EditEvent {
                table: self.table().to_string(),
                operation_id: op,
                timestamp_micros: entry.timestamp_micros,
                kind: entry.kind,
                old_roots: entry.old_roots,
                new_roots: entry.new_roots,
                new_l2_ids,
                recovered: true,
            });
        }
        Ok(())
    }

    fn clear_cache_parents(&self) {
        self.cache().forget_parents(&[]);
        self.cache().parents.clear();
        self.cache().spans.clear();
    }

    async fn unlock(&self, root: u64, op: u64) -> Result<()> {
        self.client()
            .check_and_mutate_row(
                self.table(),
                row_key(root).to_vec(),
                Some(filter::chain([
                    filter::column(schema::LOCKS, schema::LOCK),
                    filter::cells_per_column_limit(1),
                    filter::value_regex(op.to_string().into_bytes()),
                ])),
                vec![mutation::delete_from_column(
                    schema::LOCKS,
                    schema::LOCK.to_vec(),
                )],
                vec![],
            )
            .await?;
        Ok(())
    }

    /// Locks a root for `op`. Fails if another edit holds a live lock, or if the root is no
    /// longer current (both retryable with fresh roots). An expired lock's edit is finished
    /// first.
    async fn lock(&self, root: u64, op: u64, opts: &EditOptions) -> Result<()> {
        let now = mutation::now_micros();
        if let Some((holder, at)) = self.lock_of(root).await? {
            if at <= now - opts.lock_expiry_micros && holder != op {
                let (entry, _) = match self.operation(holder).await {
                    Ok(e) => e,
                    Err(GraphError::NotFound(_)) => (OperationEntry::default(), String::new()),
                    Err(e) => return Err(e),
                };
                let mut roots = entry.old_roots.clone();
                roots.push(root);
                self.finish(holder, &roots).await?;
            }
        }
        let busy = filter::interleave([
            filter::chain([
                filter::column(schema::LOCKS, schema::LOCK),
                filter::timestamp_range(now - opts.lock_expiry_micros + 1000, 0),
            ]),
            filter::column(schema::VERSIONED, schema::NEW_PARENTS),
        ]);
        let matched = self
            .client()
            .check_and_mutate_row(
                self.table(),
                row_key(root).to_vec(),
                Some(busy),
                vec![],
                vec![mutation::set_cell(
                    schema::LOCKS,
                    schema::LOCK.to_vec(),
                    now,
                    op.to_string().into_bytes(),
                )],
            )
            .await?;
        if matched {
            let reason = if self.is_latest(&[root], None).await?[0] {
                "another edit holds it"
            } else {
                "it was replaced by another edit"
            };
            return Err(GraphError::Conflict(format!(
                "cannot lock root {root}: {reason}; retry with the current root"
            )));
        }
        Ok(())
    }

    async fn next_operation_id(&self) -> Result<u64> {
        let row = self
            .client()
            .read_modify_write_row(
                self.table(),
                schema::OPERATION_COUNTER_KEY,
                vec![mutation::increment_amount(
                    schema::COUNTERS,
                    schema::COUNTER.to_vec(),
                    1,
                )],
            )
            .await?;
        let cell = row
            .cell(schema::COUNTERS, schema::COUNTER)
            .ok_or_else(|| GraphError::Corrupt("operation counter".into()))?;
        Ok(mutation::decode_i64(&cell.value)? as u64)
    }

    /// Reserves `n` new segment numbers in a chunk; returns the first. Numbers come from
    /// blocks this process reserved earlier when it can; gaps left by a process that exits
    /// are harmless.
    async fn allocate(&self, chunk_id: u64, n: u64) -> Result<u64> {
        if let Some(first) = self.id_pool().take(chunk_id, n) {
            return Ok(first);
        }
        let want = n.max(ID_BLOCK);
        let first = self.reserve(chunk_id, want).await?;
        self.id_pool().keep(chunk_id, first + n, first + want);
        Ok(first)
    }

    /// Reserves `n` segment numbers from a chunk's counter; returns the first.
    async fn reserve(&self, chunk_id: u64, n: u64) -> Result<u64> {
        let row = self
            .client()
            .read_modify_write_row(
                self.table(),
                cg_ids::counter_key(chunk_id),
                vec![mutation::increment_amount(
                    schema::COUNTERS,
                    schema::COUNTER.to_vec(),
                    n as i64,
                )],
            )
            .await?;
        let cell = row
            .cell(schema::COUNTERS, schema::COUNTER)
            .ok_or_else(|| GraphError::Corrupt("segment counter".into()))?;
        let last = mutation::decode_i64(&cell.value)? as u64;
        if last > self.geometry().max_segment(layer_of(chunk_id)) {
            return Err(GraphError::Conflict(format!(
                "chunk {} has no segment IDs left",
                chunk_id
            )));
        }
        Ok(last + 1 - n)
    }

    /// Locks `roots`, lets `decide` pick the edge changes (reading at the edit's time), plans
    /// and writes the edit, and unlocks.
    async fn run_edit<F>(
        &self,
        user: &str,
        kind: &str,
        roots: &[u64],
        opts: &EditOptions,
        extra: serde_json::Map<String, serde_json::Value>,
        decide: F,
    ) -> Result<EditResult>
    where
        F: for<'a> FnOnce(
            &'a ChunkedGraph,
            i64,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<Output = Result<(Vec<[u64; 2]>, Vec<[u64; 2]>)>>
                    + Send
                    + 'a,
            >,
        >,
    {
        let started = std::time::Instant::now();
        let op = self.next_operation_id().await?;
        let mut roots = roots.to_vec();
        roots.sort_unstable();
        roots.dedup();
        // Intent before locks: recovery can release the locks of an edit that dies before
        // it writes its plan.
        let now = mutation::now_micros();
        self.client()
            .mutate_row(
                self.table(),
                schema::op_key(op),
                vec![
                    mutation::set_cell(
                        schema::VERSIONED,
                        schema::LOCKING.to_vec(),
                        now,
                        schema::encode_ids(&roots),
                    ),
                    mutation::set_cell(
                        schema::VERSIONED,
                        schema::STATUS.to_vec(),
                        now,
                        b"locking".to_vec(),
                    ),
                ],
            )
            .await?;
        // All locks at once: a lock attempt never waits, so there is no deadlock to avoid.
        let attempts =
            futures::future::join_all(roots.iter().map(|&r| self.lock(r, op, opts))).await;
        if let Some(i) = attempts.iter().position(Result::is_err) {
            for (&r, a) in roots.iter().zip(&attempts) {
                if a.is_ok() {
                    let _ = self.unlock(r, op).await;
                }
            }
            let _ = self.set_status(op, b"aborted").await;
            let mut attempts = attempts;
            return Err(attempts.swap_remove(i).expect_err("an error"));
        }
        let locked_after = started.elapsed();
        let mut committed = false;
        let result = self
            .locked_edit(op, user, kind, &roots, opts, extra, decide, &mut committed)
            .await;
        // Once the plan is written the edit will happen: an error after that leaves the locks
        // for whoever finishes it.
        if result.is_err() && !committed {
            for &r in &roots {
                let _ = self.unlock(r, op).await;
            }
            let _ = self.set_status(op, b"aborted").await;
        }
        tracing::debug!(
            op,
            kind,
            ok = result.is_ok(),
            lock_ms = locked_after.as_secs_f64() * 1e3,
            total_ms = started.elapsed().as_secs_f64() * 1e3,
            "edit"
        );
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn locked_edit<F>(
        &self,
        op: u64,
        user: &str,
        kind: &str,
        roots: &[u64],
        opts: &EditOptions,
        extra: serde_json::Map<String, serde_json::Value>,
        decide: F,
        committed: &mut bool,
    ) -> Result<EditResult>
    where
        F: for<'a> FnOnce(
            &'a ChunkedGraph,
            i64,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<Output = Result<(Vec<[u64; 2]>, Vec<[u64; 2]>)>>
                    + Send
                    + 'a,
            >,
        >,
    {
        // Stamp after the locks, so no cell of an earlier edit on these roots is newer.
        let ts = mutation::now_micros();
        let read_at = ts - 1;
        let clock = std::time::Instant::now();
        let (added, removed) = decide(self, read_at).await?;
        let decided = clock.elapsed();
        let mut plan = Plan::default();
        let summary = self
            .plan_edge_change(&mut plan, ts, read_at, &added, &removed)
            .await?;
        let planned = clock.elapsed();
        let entry = OperationEntry {
            operation_id: op,
            timestamp_micros: ts,
            user: user.to_string(),
            kind: kind.to_string(),
            old_roots: summary.old_roots.clone(),
            new_roots: summary.new_roots.clone(),
            added_edges: added.clone(),
            removed_edges: removed.clone(),
            extra,
        };
        let json = serde_json::to_vec(&entry)
            .map_err(|e| GraphError::Corrupt(format!("operation entry: {e}")))?;
        if opts.crash_before_plan {
            // A dead process cleans nothing up.
            *committed = true;
            return Err(simulated_crash());
        }
        // The plan goes first, in one atomic row write: from here the edit will happen.
        self.client()
            .mutate_row(
                self.table(),
                schema::op_key(op),
                vec![
                    mutation::set_cell(schema::IMMUTABLE, schema::ENTRY.to_vec(), ts, json),
                    mutation::set_cell(schema::IMMUTABLE, schema::PLAN.to_vec(), ts, plan.encode()),
                    mutation::set_cell(
                        schema::VERSIONED,
                        schema::STATUS.to_vec(),
                        ts,
                        b"pending".to_vec(),
                    ),
                ],
            )
            .await?;
        *committed = true;
        let mut rows: Vec<(Vec<u8>, Vec<Mutation>)> = plan.rows.into_iter().collect();
        let summary_rows = rows.len();
        if let Some(n) = opts.crash_after_rows {
            rows.truncate(n);
            let moved = moved_nodes(&rows);
            self.client().mutate_rows(self.table(), rows).await?;
            self.cache().forget_parents(&moved);
            return Err(simulated_crash());
        }
        let moved = moved_nodes(&rows);
        self.client().mutate_rows(self.table(), rows).await?;
        self.cache().forget_parents(&moved);
        // Unlock before `done`: a process killed in between leaves the op pending with no
        // lock, and recovery replays the (already applied, idempotent) plan and marks it.
        // The other order could leave a done op holding a lock nobody would release.
        futures::future::try_join_all(roots.iter().map(|&r| self.unlock(r, op))).await?;
        self.client()
            .mutate_row(
                self.table(),
                schema::op_key(op),
                vec![mutation::set_cell(
                    schema::VERSIONED,
                    schema::STATUS.to_vec(),
                    ts,
                    b"done".to_vec(),
                )],
            )
            .await?;
        tracing::debug!(
            op,
            decide_ms = decided.as_secs_f64() * 1e3,
            plan_ms = (planned - decided).as_secs_f64() * 1e3,
            write_ms = (clock.elapsed() - planned).as_secs_f64() * 1e3,
            rows = summary_rows,
            "edit phases"
        );
        self.events().publish(EditEvent {
            table: self.table().to_string(),
            operation_id: op,
            timestamp_micros: ts,
            kind: kind.to_string(),
            old_roots: summary.old_roots.clone(),
            new_roots: summary.new_roots.clone(),
            new_l2_ids: summary.new_l2.clone(),
            recovered: false,
        });
        Ok(EditResult {
            operation_id: op,
            timestamp_micros: ts,
            old_roots: summary.old_roots,
            new_roots: summary.new_roots,
            new_l2_ids: summary.new_l2,
            added_edges: added,
            removed_edges: removed,
        })
    }

    /// Plans the rows that activate `added` and deactivate `removed` and rebuild the nodes
    /// above them.
    async fn plan_edge_change(
        &self,
        plan: &mut Plan,
        ts: i64,
        t: i64,
        added: &[[u64; 2]],
        removed: &[[u64; 2]],
    ) -> Result<Summary> {
        let g = self.geometry().clone();
        let ends: Vec<u64> = added.iter().chain(removed).flatten().copied().collect();
        let ends_l2 = self
            .roots(
                &ends,
                &RootQuery {
                    at: Some(t),
                    stop_layer: Some(2),
                    ..Default::default()
                },
            )
            .await?;
        let mut old_l2: Vec<u64> = ends_l2;
        old_l2.sort_unstable();
        old_l2.dedup();

        // Edge states: new bitmap / user-edge versions on the smaller ends' rows.
        let lows: Vec<u64> = {
            let mut v: Vec<u64> = added.iter().chain(removed).map(|e| e[0]).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let stored = self.stored_edges(&lows).await?;
        let mut states = self.edge_states(&lows, t).await?;
        let mut changed_bits: BTreeSet<u64> = BTreeSet::new();
        let mut changed_user: BTreeSet<u64> = BTreeSet::new();
        for (e, on) in added
            .iter()
            .map(|e| (e, true))
            .chain(removed.iter().map(|e| (e, false)))
        {
            let list: &[StoredEdge] = stored.get(&e[0]).map(|v| &v[..]).unwrap_or(&[]);
            let st = states.entry(e[0]).or_default();
            if let Some(i) = list.iter().position(|s| s.partner == e[1]) {
                let need = i / 8 + 1;
                if st.active.len() < need {
                    st.active.resize(need, 0);
                }
                if on {
                    st.active[i / 8] |= 1 << (i % 8);
                } else {
                    st.active[i / 8] &= !(1 << (i % 8));
                }
                changed_bits.insert(e[0]);
            } else if let Some(u) = st.user.iter_mut().find(|u| u.partner == e[1]) {
                u.active = on;
                changed_user.insert(e[0]);
            } else if on {
                st.user.push(UserEdge {
                    partner: e[1],
                    active: true,
                });
                changed_user.insert(e[0]);
            } else {
                return Err(GraphError::InvalidInput(format!(
                    "there is no edge between {} and {}",
                    e[0], e[1]
                )));
            }
        }
        for sv in &changed_bits {
            plan.set(
                row_key(*sv).to_vec(),
                schema::VERSIONED,
                schema::EDGE_STATE,
                ts,
                states[sv].active.clone(),
            );
        }
        for sv in &changed_user {
            plan.set(
                row_key(*sv).to_vec(),
                schema::VERSIONED,
                schema::USER_EDGES,
                ts,
                schema::encode_user_edges(&states[sv].user),
            );
        }

        // New layer-2 nodes: the old ones' supervoxels regrouped by active in-chunk edges.
        let lists = self.children(&old_l2).await?;
        let old_cross = self.cross_edges(&old_l2).await?;
        let svs: Vec<u64> = lists.iter().flat_map(|l| l.ids.iter().copied()).collect();
        let index: HashMap<u64, usize> = svs.iter().enumerate().map(|(i, &s)| (s, i)).collect();
        let removed_set: HashSet<[u64; 2]> = removed.iter().copied().collect();
        let mut active: Vec<[u64; 2]> = self
            .edges_among(&svs, t)
            .await?
            .into_iter()
            .filter(|e| e.active && !removed_set.contains(&pair(e.a, e.b)))
            .map(|e| pair(e.a, e.b))
            .collect();
        active.extend(added.iter().copied());
        let mut dsu: Vec<usize> = (0..svs.len()).collect();
        fn find(d: &mut [usize], mut x: usize) -> usize {
            while d[x] != x {
                d[x] = d[d[x]];
                x = d[x];
            }
            x
        }
        let mut cross_new: Vec<CrossEdge> = Vec::new();
        for e in &active {
            let (Some(&a), Some(&b)) = (index.get(&e[0]), index.get(&e[1])) else {
                continue;
            };
            if g.coords_of(e[0]) == g.coords_of(e[1]) {
                let (ra, rb) = (find(&mut dsu, a), find(&mut dsu, b));
                if ra != rb {
                    dsu[ra.max(rb)] = ra.min(rb);
                }
            }
        }
        for e in added {
            let (ca, cb) = (g.coords_of(e[0]), g.coords_of(e[1]));
            if ca != cb {
                let layer = g.meeting_layer(ca, cb);
                cross_new.push(CrossEdge {
                    layer,
                    here: e[0],
                    there: e[1],
                });
                cross_new.push(CrossEdge {
                    layer,
                    here: e[1],
                    there: e[0],
                });
            }
        }
        let mut groups: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
        for (i, &sv) in svs.iter().enumerate() {
            let r = find(&mut dsu, i);
            groups.entry(r).or_default().push(sv);
        }
        let mut all_cross: Vec<CrossEdge> =
            old_cross.values().flat_map(|v| v.iter().copied()).collect();
        all_cross.retain(|c| !removed_set.contains(&pair(c.here, c.there)));
        all_cross.extend(cross_new);
        let mut cross_by_sv: HashMap<u64, Vec<CrossEdge>> = HashMap::new();
        for c in all_cross {
            cross_by_sv.entry(c.here).or_default().push(c);
        }
        // Allocate IDs per chunk.
        let mut by_chunk: BTreeMap<u64, Vec<Vec<u64>>> = BTreeMap::new();
        for (_, mut members) in groups {
            members.sort_unstable();
            let chunk = g.ancestor_chunk(members[0], 2);
            by_chunk.entry(chunk).or_default().push(members);
        }
        let mut waiting: Vec<Waiting> = Vec::new();
        let mut new_l2 = Vec::new();
        let firsts = futures::future::try_join_all(
            by_chunk
                .iter()
                .map(|(&chunk, comps)| self.allocate(chunk, comps.len() as u64)),
        )
        .await?;
        for ((chunk, comps), first) in by_chunk.into_iter().zip(firsts) {
            for (k, members) in comps.into_iter().enumerate() {
                let id = g.node_id(chunk, first + k as u64)?;
                let mut cx: Vec<CrossEdge> = members
                    .iter()
                    .flat_map(|sv| cross_by_sv.get(sv).into_iter().flatten().copied())
                    .collect();
                cx.sort_unstable();
                cx.dedup();
                let key = row_key(id).to_vec();
                plan.set(
                    key.clone(),
                    schema::IMMUTABLE,
                    schema::CHILDREN,
                    ts,
                    schema::encode_ids(&members),
                );
                if !cx.is_empty() {
                    plan.set(
                        key,
                        schema::IMMUTABLE,
                        schema::CROSS_EDGES,
                        ts,
                        schema::encode_cross_edges(&cx),
                    );
                }
                for sv in &members {
                    plan.set(
                        row_key(*sv).to_vec(),
                        schema::VERSIONED,
                        schema::PARENT,
                        ts,
                        id.to_le_bytes().to_vec(),
                    );
                }
                new_l2.push(id);
                waiting.push(Waiting { id, cross: cx });
            }
        }
        let (old_roots, new_roots) = self.rebuild_above(plan, ts, t, &old_l2, waiting).await?;
        Ok(Summary {
            old_roots,
            new_roots,
            new_l2,
        })
    }

    /// Replaces every ancestor of `old_l2` (at `t`): the new nodes in `waiting` and the
    /// children the replaced ancestors leave behind are joined layer by layer along their
    /// cross-chunk edges. Returns the old and new roots.
    async fn rebuild_above(
        &self,
        plan: &mut Plan,
        ts: i64,
        t: i64,
        old_l2: &[u64],
        mut waiting: Vec<Waiting>,
    ) -> Result<(Vec<u64>, Vec<u64>)> {
        let g = self.geometry().clone();
        let n_layers = g.n_layers;
        // The replaced nodes: the old layer-2 nodes and all their ancestors.
        let mut replaced: BTreeSet<u64> = old_l2.iter().copied().collect();
        let mut frontier: Vec<u64> = old_l2.to_vec();
        let mut old_roots: BTreeSet<u64> = BTreeSet::new();
        while !frontier.is_empty() {
            let (parents, _) = self.parents_at(&frontier, t, false).await?;
            let mut next = Vec::new();
            for &n in &frontier {
                match parents.get(&n).copied().flatten() {
                    Some(p) => {
                        if replaced.insert(p) {
                            next.push(p);
                        }
                    }
                    None => {
                        old_roots.insert(n);
                    }
                }
            }
            frontier = next;
        }
        // Children the replaced ancestors leave behind need new parents.
        let upper: Vec<u64> = replaced
            .iter()
            .copied()
            .filter(|&n| layer_of(n) > 2)
            .collect();
        let lists = self.children(&upper).await?;
        let orphans: Vec<u64> = lists
            .iter()
            .flat_map(|l| l.ids.iter().copied())
            .filter(|c| !replaced.contains(c))
            .collect();
        let orphan_cross = self.cross_edges(&orphans).await?;
        for o in orphans {
            let cross = orphan_cross.get(&o).map(|v| v.to_vec()).unwrap_or_default();
            waiting.push(Waiting { id: o, cross });
        }
        let mut new_roots = Vec::new();
        if n_layers == 2 {
            new_roots = waiting.iter().map(|w| w.id).collect();
        }
        for layer in 3..=n_layers {
            let parent_layer = |w: &Waiting| {
                w.cross
                    .iter()
                    .map(|e| e.layer)
                    .filter(|&l| l > layer_of(w.id))
                    .min()
                    .unwrap_or(n_layers)
            };
            let holder: HashMap<u64, usize> = waiting
                .iter()
                .enumerate()
                .flat_map(|(i, w)| w.cross.iter().map(move |e| (e.here, i)))
                .collect();
            let here: Vec<usize> = (0..waiting.len())
                .filter(|&i| parent_layer(&waiting[i]) == layer)
                .collect();
            if here.is_empty() {
                continue;
            }
            let slot: HashMap<usize, usize> =
                here.iter().enumerate().map(|(s, &i)| (i, s)).collect();
            let mut dsu: Vec<usize> = (0..here.len()).collect();
            fn find(d: &mut [usize], mut x: usize) -> usize {
                while d[x] != x {
                    d[x] = d[d[x]];
                    x = d[x];
                }
                x
            }
            for (s, &i) in here.iter().enumerate() {
                for e in &waiting[i].cross {
                    if e.layer != layer {
                        continue;
                    }
                    let other = holder.get(&e.there).and_then(|j| slot.get(j)).ok_or_else(|| {
                        GraphError::Corrupt(format!(
                            "rebuilding layer {layer}: the far end of cross-chunk edge {} – {} is not among the nodes being rebuilt",
                            e.here, e.there
                        ))
                    })?;
                    let (a, b) = (find(&mut dsu, s), find(&mut dsu, *other));
                    if a != b {
                        dsu[a.max(b)] = a.min(b);
                    }
                }
            }
            let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for (s, &i) in here.iter().enumerate() {
                let r = find(&mut dsu, s);
                groups.entry(r).or_default().push(i);
            }
            let mut by_chunk: BTreeMap<u64, Vec<Vec<usize>>> = BTreeMap::new();
            for (_, members) in groups {
                let chunk = g.ancestor_chunk(waiting[members[0]].id, layer);
                by_chunk.entry(chunk).or_default().push(members);
            }
            let mut made = Vec::new();
            let firsts = futures::future::try_join_all(
                by_chunk
                    .iter()
                    .map(|(&chunk, comps)| self.allocate(chunk, comps.len() as u64)),
            )
            .await?;
            for ((chunk, comps), first) in by_chunk.into_iter().zip(firsts) {
                for (k, members) in comps.into_iter().enumerate() {
                    let id = g.node_id(chunk, first + k as u64)?;
                    let mut children: Vec<u64> = members.iter().map(|&i| waiting[i].id).collect();
                    children.sort_unstable();
                    let mut cx: Vec<CrossEdge> = members
                        .iter()
                        .flat_map(|&i| waiting[i].cross.iter().copied())
                        .filter(|e| e.layer > layer)
                        .collect();
                    cx.sort_unstable();
                    cx.dedup();
                    let key = row_key(id).to_vec();
                    plan.set(
                        key.clone(),
                        schema::IMMUTABLE,
                        schema::CHILDREN,
                        ts,
                        schema::encode_ids(&children),
                    );
                    if !cx.is_empty() {
                        plan.set(
                            key,
                            schema::IMMUTABLE,
                            schema::CROSS_EDGES,
                            ts,
                            schema::encode_cross_edges(&cx),
                        );
                    }
                    for c in &children {
                        plan.set(
                            row_key(*c).to_vec(),
                            schema::VERSIONED,
                            schema::PARENT,
                            ts,
                            id.to_le_bytes().to_vec(),
                        );
                    }
                    made.push(Waiting { id, cross: cx });
                }
            }
            let used: HashSet<usize> = here.into_iter().collect();
            let mut rest: Vec<Waiting> = Vec::new();
            for (i, w) in waiting.into_iter().enumerate() {
                if !used.contains(&i) {
                    rest.push(w);
                }
            }
            if layer == n_layers {
                new_roots = made.iter().map(|w| w.id).collect();
            }
            rest.extend(made);
            waiting = rest;
        }
        new_roots.sort_unstable();
        let old_roots: Vec<u64> = old_roots.into_iter().collect();
        for &n in &replaced {
            plan.set(
                row_key(n).to_vec(),
                schema::VERSIONED,
                schema::NEW_PARENTS,
                ts,
                schema::encode_ids(&new_roots),
            );
        }
        for &r in &new_roots {
            plan.set(
                row_key(r).to_vec(),
                schema::VERSIONED,
                schema::FORMER_PARENTS,
                ts,
                schema::encode_ids(&old_roots),
            );
        }
        Ok((old_roots, new_roots))
    }
}

struct Summary {
    old_roots: Vec<u64>,
    new_roots: Vec<u64>,
    new_l2: Vec<u64>,
}

fn undone(entry: &OperationEntry) -> Result<u64> {
    entry
        .extra
        .get("undone_operation")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| {
            GraphError::Corrupt(format!("undo {} names no operation", entry.operation_id))
        })
}

/// Edge indices of a shortest path from `a` to `b` that avoids `avoid`.
fn shortest_path(
    adj: &[Vec<(usize, usize)>],
    a: usize,
    b: usize,
    avoid: &HashSet<usize>,
) -> Option<Vec<usize>> {
    let mut prev: Vec<Option<(usize, usize)>> = vec![None; adj.len()];
    let mut seen = vec![false; adj.len()];
    seen[a] = true;
    let mut q = VecDeque::from([a]);
    while let Some(u) = q.pop_front() {
        if u == b {
            let mut path = Vec::new();
            let mut v = b;
            while let Some((p, k)) = prev[v] {
                path.push(k);
                v = p;
            }
            return Some(path);
        }
        for &(v, k) in &adj[u] {
            if !seen[v] && !avoid.contains(&v) {
                seen[v] = true;
                prev[v] = Some((u, k));
                q.push_back(v);
            }
        }
    }
    None
}
