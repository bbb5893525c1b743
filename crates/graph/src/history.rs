//! History: how roots replaced one another across edits, and what the op log says about it,
//! with PyChunkedGraph's semantics (its `lineage.py`, `segmenthistory.py` and the history
//! routes of `app/segmentation/common.py`).
//!
//! Nothing here writes. Every edit stamps all its cells with one timestamp; a root it
//! replaced carries `1:new_parents` (the edit's new roots) and a root it made carries
//! `1:former_parents` (the edit's old roots), so the lineage is a DAG of roots walked one
//! batched read per step. A root's creation time is the timestamp of its `0:children` cell.
//! The operation that made (or replaced) a root is found in the op log: the entry stamped
//! with that time whose `new_roots` (or `old_roots`) hold the root. Roots made by the ingest
//! have no former parents and no operation.
//!
//! Times are µs since the epoch. Bounds follow PyChunkedGraph: the walk into the past stops
//! at roots created *before* `start` (they are kept, their own formers are not), and the
//! walk into the future stops at roots created *after* `end` (kept, their successors not).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use cg_bigtable::{filter, mutation, ReadRows};
use cg_ids::{layer_of, parse_row_key, row_key};
use futures::StreamExt;

use crate::oplog::OperationEntry;
use crate::query::RootQuery;
use crate::schema;
use crate::{ChunkedGraph, GraphError, Result};

/// Rows per ReadRows request in batched lookups; several run at once.
const KEYS_PER_READ: usize = 2000;
const READS_IN_FLIGHT: usize = 8;
/// Up to this many distinct edit times, an op-log scan asks for exactly those times;
/// beyond, for the span between the first and the last.
const EXACT_TIMES: usize = 32;

/// A root in a lineage graph.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LineageNode {
    pub id: u64,
    /// When the root was created (µs): the edit's timestamp, or the ingest's.
    pub timestamp_micros: i64,
    /// The operation that created it; `None` for roots made by the ingest.
    pub operation_id: Option<u64>,
    /// The operation that replaced it, if one did (at any time, whatever the bounds).
    /// PyChunkedGraph's node-link `operation_id` is this one: it is absent for roots that
    /// are still current.
    pub superseded_by: Option<u64>,
}

/// A lineage edge: `source` was replaced by an edit that created `target`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct LineageEdge {
    pub source: u64,
    pub target: u64,
}

/// Roots linked by the edits that replaced them. Nodes are sorted by (creation time, ID),
/// edges by (source, target).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LineageGraph {
    pub nodes: Vec<LineageNode>,
    pub edges: Vec<LineageEdge>,
}

impl LineageGraph {
    pub fn node(&self, id: u64) -> Option<&LineageNode> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

/// PyChunkedGraph's `past_id_mapping`: for each queried root, the roots of its past lineage
/// where the walk stopped (`past_id_map`); for each of those, the one root it became if that
/// is unambiguous (`future_id_map`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PastIdMapping {
    pub past_id_map: BTreeMap<u64, Vec<u64>>,
    pub future_id_map: BTreeMap<u64, u64>,
}

/// One operation in the past of a root, as PyChunkedGraph's tabular change log has it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ChangeLogRow {
    pub operation_id: u64,
    pub timestamp_micros: i64,
    pub user_id: String,
    /// The roots in the lineage graph this operation replaced.
    pub before_root_ids: Vec<u64>,
    /// The roots in the lineage graph it created (only those on the way to the queried
    /// root, as in PyChunkedGraph).
    pub after_root_ids: Vec<u64>,
    /// It activated edges (merges, undone splits, redone merges).
    pub is_merge: bool,
    /// Our op-log kind: `merge`, `split`, `undo` or `redo`. PyChunkedGraph's table has no
    /// such column.
    pub kind: String,
    pub is_undo: bool,
    pub is_redo: bool,
    /// A merge whose supervoxels all lie in the queried root, or a split with a supervoxel
    /// in it (at the root's creation time).
    pub in_neuron: bool,
    /// A merge of supervoxels that were apart at the ingest, or a split whose supervoxels
    /// are still apart at the root's creation time. PyChunkedGraph's `filtered` keeps rows
    /// with `in_neuron && is_relevant`.
    pub is_relevant: bool,
}

/// Merges and splits per user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct UserEdits {
    pub n_mergers: u64,
    pub n_splits: u64,
}

/// PyChunkedGraph's change-log summary of a root.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ChangeLog {
    pub n_mergers: u64,
    pub n_splits: u64,
    /// The operations, ascending (PyChunkedGraph spells the key `operations_ids`).
    pub operation_ids: Vec<u64>,
    /// The `before_root_ids` of every operation, in operation order.
    pub past_ids: Vec<u64>,
    pub user_info: BTreeMap<String, UserEdits>,
}

impl ChangeLog {
    /// Sums rows; `filtered` keeps only rows with `in_neuron && is_relevant`.
    pub fn from_rows(rows: &[ChangeLogRow], filtered: bool) -> ChangeLog {
        let mut out = ChangeLog::default();
        for r in rows
            .iter()
            .filter(|r| !filtered || (r.in_neuron && r.is_relevant))
        {
            let user = out.user_info.entry(r.user_id.clone()).or_default();
            if r.is_merge {
                out.n_mergers += 1;
                user.n_mergers += 1;
            } else {
                out.n_splits += 1;
                user.n_splits += 1;
            }
            out.operation_ids.push(r.operation_id);
            out.past_ids.extend(r.before_root_ids.iter().copied());
        }
        out
    }
}

/// A merge in the past of a root: the edges it activated and where it was made.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MergeLogEntry {
    pub operation_id: u64,
    pub timestamp_micros: i64,
    pub user: String,
    pub added_edges: Vec<[u64; 2]>,
    /// The merge's points in nm (first and second point); empty when the op log has none
    /// (an undone split made without points).
    pub source_coords_nm: Vec<[f64; 3]>,
    pub sink_coords_nm: Vec<[f64; 3]>,
    /// The same in voxels (nm / resolution, truncated), as PyChunkedGraph stores them.
    pub source_coords_voxel: Vec<[i64; 3]>,
    pub sink_coords_voxel: Vec<[i64; 3]>,
}

/// What one root row says about its lineage.
#[derive(Clone, Debug)]
struct Links {
    created: i64,
    /// When it was created by an edit, and the roots that edit replaced.
    former: Option<(i64, Vec<u64>)>,
    /// When an edit replaced it, and that edit's new roots.
    new: Option<(i64, Vec<u64>)>,
}

/// The nodes and edges of a lineage walk, with each node's row.
struct Walk {
    links: HashMap<u64, Links>,
    nodes: BTreeSet<u64>,
    edges: BTreeSet<LineageEdge>,
}

impl Walk {
    fn parents_of(&self) -> HashMap<u64, Vec<u64>> {
        let mut m: HashMap<u64, Vec<u64>> = HashMap::new();
        for e in &self.edges {
            m.entry(e.target).or_default().push(e.source);
        }
        m
    }

    fn children_of(&self) -> HashMap<u64, Vec<u64>> {
        let mut m: HashMap<u64, Vec<u64>> = HashMap::new();
        for e in &self.edges {
            m.entry(e.source).or_default().push(e.target);
        }
        m
    }
}

/// Every node reachable from `from` along `next` (not `from` itself, unless on a cycle).
fn reach(from: u64, next: &HashMap<u64, Vec<u64>>) -> BTreeSet<u64> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from];
    while let Some(n) = stack.pop() {
        for &m in next.get(&n).map(Vec::as_slice).unwrap_or(&[]) {
            if seen.insert(m) {
                stack.push(m);
            }
        }
    }
    seen
}

fn points(entry: &OperationEntry, key: &str) -> Vec<[f64; 3]> {
    entry
        .extra
        .get(key)
        .and_then(|v| serde_json::from_value::<Vec<[f64; 3]>>(v.clone()).ok())
        .unwrap_or_default()
}

/// Source and sink points of an entry. A merge records both its points as `source_coords`
/// (first point, second point); they become one source and one sink, as in PyChunkedGraph.
fn merge_points(entry: &OperationEntry) -> (Vec<[f64; 3]>, Vec<[f64; 3]>) {
    let src = points(entry, "source_coords");
    let snk = points(entry, "sink_coords");
    if snk.is_empty() && src.len() == 2 {
        (vec![src[0]], vec![src[1]])
    } else {
        (src, snk)
    }
}

fn referenced_op(entry: &OperationEntry) -> Option<u64> {
    let key = match entry.kind.as_str() {
        "undo" => "undone_operation",
        "redo" => "redone_operation",
        _ => return None,
    };
    entry.extra.get(key).and_then(serde_json::Value::as_u64)
}

fn parse_entry(bytes: &[u8], key: &[u8]) -> Result<OperationEntry> {
    serde_json::from_slice(bytes).map_err(|e| {
        GraphError::Corrupt(format!("op-log row {}: {e}", String::from_utf8_lossy(key)))
    })
}

impl ChunkedGraph {
    /// Refuses IDs that are not root-layer IDs of this graph.
    fn check_roots(&self, ids: &[u64]) -> Result<()> {
        let n = self.geometry().n_layers;
        for &id in ids {
            self.geometry().check(id)?;
            let l = layer_of(id);
            if l != n {
                return Err(GraphError::InvalidInput(format!(
                    "{id} is not a root ID: it is at layer {l}, roots are at layer {n}"
                )));
            }
        }
        Ok(())
    }

    /// The lineage cells of root rows. Rows without children (no such node) are left out.
    async fn read_links(&self, ids: &[u64]) -> Result<HashMap<u64, Links>> {
        let mut keys = ids.to_vec();
        keys.sort_unstable();
        keys.dedup();
        let f = filter::interleave([
            filter::chain([
                filter::column(schema::IMMUTABLE, schema::CHILDREN),
                filter::cells_per_column_limit(1),
                filter::strip_value(),
            ]),
            filter::chain([
                filter::column(schema::VERSIONED, schema::FORMER_PARENTS),
                filter::cells_per_column_limit(1),
            ]),
            filter::chain([
                filter::column(schema::VERSIONED, schema::NEW_PARENTS),
                filter::cells_per_column_limit(1),
            ]),
        ]);
        let batches: Vec<Vec<u64>> = keys.chunks(KEYS_PER_READ).map(<[u64]>::to_vec).collect();
        let mut reads = futures::stream::iter(batches)
            .map(|batch| {
                let read = ReadRows::new()
                    .keys(batch.iter().map(|&id| row_key(id).to_vec()))
                    .filter(f.clone());
                self.client().read_rows_vec(self.table(), read)
            })
            .buffer_unordered(READS_IN_FLIGHT);
        let mut out = HashMap::with_capacity(keys.len());
        while let Some(rows) = reads.next().await {
            for row in rows? {
                let id = parse_row_key(&row.key)?;
                let Some(children) = row.cell(schema::IMMUTABLE, schema::CHILDREN) else {
                    continue;
                };
                let ids_of = |q: &[u8]| -> Result<Option<(i64, Vec<u64>)>> {
                    row.cell(schema::VERSIONED, q)
                        .map(|c| Ok((c.timestamp_micros, schema::decode_ids(&c.value)?)))
                        .transpose()
                };
                out.insert(
                    id,
                    Links {
                        created: children.timestamp_micros,
                        former: ids_of(schema::FORMER_PARENTS)?,
                        new: ids_of(schema::NEW_PARENTS)?,
                    },
                );
            }
        }
        Ok(out)
    }

    /// Checks `roots` and reads their rows; a root without a row is not found.
    async fn root_links(&self, roots: &[u64]) -> Result<HashMap<u64, Links>> {
        self.check_roots(roots)?;
        let links = self.read_links(roots).await?;
        if let Some(r) = roots.iter().find(|r| !links.contains_key(r)) {
            return Err(GraphError::NotFound(format!("root {r} does not exist")));
        }
        Ok(links)
    }

    /// Walks the lineage of `roots` into the past (former parents of roots created at or
    /// after `start`) and into the future (new parents of roots created at or before `end`).
    async fn walk_lineage(&self, roots: &[u64], start: i64, end: i64) -> Result<Walk> {
        let mut links = self.root_links(roots).await?;
        let mut nodes: BTreeSet<u64> = roots.iter().copied().collect();
        let mut edges: BTreeSet<LineageEdge> = BTreeSet::new();
        let mut past_seen: HashSet<u64> = nodes.iter().copied().collect();
        let mut future_seen = past_seen.clone();
        let mut past: Vec<u64> = nodes.iter().copied().collect();
        let mut future = past.clone();
        while !past.is_empty() || !future.is_empty() {
            let need: Vec<u64> = past
                .iter()
                .chain(&future)
                .copied()
                .filter(|id| !links.contains_key(id))
                .collect();
            if !need.is_empty() {
                links.extend(self.read_links(&need).await?);
            }
            let mut next_past = Vec::new();
            for &k in &past {
                // A lineage cell naming a root not yet written (an edit in progress) ends
                // the walk there.
                let Some(l) = links.get(&k) else { continue };
                nodes.insert(k);
                if l.created < start {
                    continue;
                }
                for &f in l.former.iter().flat_map(|(_, ids)| ids) {
                    edges.insert(LineageEdge {
                        source: f,
                        target: k,
                    });
                    if past_seen.insert(f) {
                        next_past.push(f);
                    }
                }
            }
            let mut next_future = Vec::new();
            for &k in &future {
                let Some(l) = links.get(&k) else { continue };
                nodes.insert(k);
                if l.created > end {
                    continue;
                }
                for &n in l.new.iter().flat_map(|(_, ids)| ids) {
                    edges.insert(LineageEdge {
                        source: k,
                        target: n,
                    });
                    if future_seen.insert(n) {
                        next_future.push(n);
                    }
                }
            }
            past = next_past;
            future = next_future;
        }
        edges.retain(|e| nodes.contains(&e.source) && nodes.contains(&e.target));
        Ok(Walk {
            links,
            nodes,
            edges,
        })
    }

    /// Op-log entries stamped at one of `times`.
    async fn operations_at(&self, times: &BTreeSet<i64>) -> Result<Vec<OperationEntry>> {
        let (Some(&first), Some(&last)) = (times.first(), times.last()) else {
            return Ok(Vec::new());
        };
        let when = if times.len() > 1 && times.len() <= EXACT_TIMES {
            filter::interleave(times.iter().map(|&t| filter::timestamp_range(t, t + 1)))
        } else {
            filter::timestamp_range(first, last + 1)
        };
        let mut out: Vec<OperationEntry> = self
            .scan_op_log(when, false)
            .await?
            .into_iter()
            .map(|(e, _)| e)
            .collect();
        out.retain(|e| times.contains(&e.timestamp_micros));
        Ok(out)
    }

    /// Op-log entries (and statuses, if asked) whose cells pass `when`, by operation ID.
    async fn scan_op_log(
        &self,
        when: cg_bigtable::proto::v2::RowFilter,
        with_status: bool,
    ) -> Result<Vec<(OperationEntry, String)>> {
        let columns = if with_status {
            filter::interleave([
                filter::column(schema::IMMUTABLE, schema::ENTRY),
                filter::column(schema::VERSIONED, schema::STATUS),
            ])
        } else {
            filter::column(schema::IMMUTABLE, schema::ENTRY)
        };
        let rows = self
            .client()
            .read_rows_vec(
                self.table(),
                ReadRows::new()
                    .prefix(vec![schema::OPERATION_PREFIX])
                    .filter(filter::chain([
                        columns,
                        when,
                        filter::cells_per_column_limit(1),
                    ])),
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let Some(cell) = row.cell(schema::IMMUTABLE, schema::ENTRY) else {
                continue;
            };
            let entry = parse_entry(&cell.value, &row.key)?;
            let status = row
                .cell(schema::VERSIONED, schema::STATUS)
                .map(|c| String::from_utf8_lossy(&c.value).into_owned())
                .unwrap_or_default();
            out.push((entry, status));
        }
        out.sort_by_key(|(e, _)| e.operation_id);
        Ok(out)
    }

    /// The graph of a walk, each node with the operations that made and replaced it, and
    /// those operations by ID.
    async fn annotate(&self, walk: &Walk) -> Result<(LineageGraph, HashMap<u64, OperationEntry>)> {
        let mut times = BTreeSet::new();
        for id in &walk.nodes {
            let l = &walk.links[id];
            if l.former.is_some() {
                times.insert(l.created);
            }
            if let Some((t, _)) = &l.new {
                times.insert(*t);
            }
        }
        let ops = self.operations_at(&times).await?;
        let mut at: HashMap<i64, Vec<&OperationEntry>> = HashMap::new();
        for o in &ops {
            at.entry(o.timestamp_micros).or_default().push(o);
        }
        let mut nodes = Vec::with_capacity(walk.nodes.len());
        for &id in &walk.nodes {
            let l = &walk.links[&id];
            let operation_id = l.former.as_ref().and_then(|_| {
                at.get(&l.created)?
                    .iter()
                    .find(|o| o.new_roots.contains(&id))
                    .map(|o| o.operation_id)
            });
            let superseded_by = l.new.as_ref().and_then(|(t, new)| {
                at.get(t)?
                    .iter()
                    .find(|o| {
                        o.old_roots.contains(&id) || new.iter().any(|n| o.new_roots.contains(n))
                    })
                    .map(|o| o.operation_id)
            });
            nodes.push(LineageNode {
                id,
                timestamp_micros: l.created,
                operation_id,
                superseded_by,
            });
        }
        nodes.sort_by_key(|n| (n.timestamp_micros, n.id));
        let graph = LineageGraph {
            nodes,
            edges: walk.edges.iter().copied().collect(),
        };
        let ops = ops.into_iter().map(|o| (o.operation_id, o)).collect();
        Ok((graph, ops))
    }

    /// The lineage graph of `roots`: their past back to `start` and their future up to `end`
    /// (µs; `None`: unbounded / now), every edge from a replaced root to a root the same
    /// edit created. As PyChunkedGraph, the walk keeps the first roots beyond each bound
    /// (roots created before `start` whose successors are after it; successors created after
    /// `end` of roots created before it).
    pub async fn lineage_graph(
        &self,
        roots: &[u64],
        start: Option<i64>,
        end: Option<i64>,
    ) -> Result<LineageGraph> {
        let end = end.unwrap_or_else(mutation::now_micros);
        let walk = self
            .walk_lineage(roots, start.unwrap_or(i64::MIN), end)
            .await?;
        Ok(self.annotate(&walk).await?.0)
    }

    /// The roots that `root` came from that existed at `at`: its past lineage walked back
    /// while roots were created after `at`. `[root]` if it already existed at `at`; roots
    /// made by the ingest end every walk (so a time before the ingest gives those).
    pub async fn past_ids(&self, root: u64, at: i64) -> Result<Vec<u64>> {
        let mut links = self.root_links(&[root]).await?;
        let mut out = BTreeSet::new();
        let mut seen: HashSet<u64> = HashSet::from([root]);
        let mut frontier = vec![root];
        while !frontier.is_empty() {
            let need: Vec<u64> = frontier
                .iter()
                .copied()
                .filter(|id| !links.contains_key(id))
                .collect();
            if !need.is_empty() {
                links.extend(self.read_links(&need).await?);
            }
            let mut next = Vec::new();
            for k in frontier {
                let Some(l) = links.get(&k) else { continue };
                match &l.former {
                    Some((_, formers)) if l.created > at => {
                        next.extend(formers.iter().copied().filter(|f| seen.insert(*f)));
                    }
                    _ => {
                        out.insert(k);
                    }
                }
            }
            frontier = next;
        }
        Ok(out.into_iter().collect())
    }

    /// The roots that `root` became that existed at `at`: its future lineage walked forward
    /// through the edits stamped at or before `at`. `[root]` if it was not yet replaced then.
    pub async fn future_ids(&self, root: u64, at: i64) -> Result<Vec<u64>> {
        let mut links = self.root_links(&[root]).await?;
        let mut out = BTreeSet::new();
        let mut seen: HashSet<u64> = HashSet::from([root]);
        let mut frontier = vec![root];
        while !frontier.is_empty() {
            let need: Vec<u64> = frontier
                .iter()
                .copied()
                .filter(|id| !links.contains_key(id))
                .collect();
            if !need.is_empty() {
                links.extend(self.read_links(&need).await?);
            }
            let mut next = Vec::new();
            for k in frontier {
                let Some(l) = links.get(&k) else { continue };
                match &l.new {
                    Some((t, new)) if *t <= at => {
                        next.extend(new.iter().copied().filter(|n| seen.insert(*n)));
                    }
                    _ => {
                        out.insert(k);
                    }
                }
            }
            frontier = next;
        }
        Ok(out.into_iter().collect())
    }

    /// PyChunkedGraph's `past_id_mapping` (`SegmentHistory.past_future_id_mapping`) over the
    /// lineage graph of `roots` from `past` to now: `past_id_map[r]` are the roots without
    /// formers in the graph among r's ancestors (`[r]` if it has none); `future_id_map[p]`
    /// is the single root p leads to, left out where a split makes that ambiguous.
    pub async fn past_id_mapping(&self, roots: &[u64], past: Option<i64>) -> Result<PastIdMapping> {
        let walk = self
            .walk_lineage(roots, past.unwrap_or(i64::MIN), mutation::now_micros())
            .await?;
        let parents = walk.parents_of();
        let children = walk.children_of();
        let in_degree = |n: u64| parents.get(&n).map_or(0, Vec::len);
        let out_degree = |n: u64| children.get(&n).map_or(0, Vec::len);
        let mut out = PastIdMapping::default();
        let mut distinct: Vec<u64> = roots.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        for &r in &distinct {
            let ancestors = reach(r, &parents);
            let first: Vec<u64> = if ancestors.is_empty() {
                vec![r]
            } else {
                ancestors
                    .into_iter()
                    .filter(|&a| in_degree(a) == 0)
                    .collect()
            };
            out.past_id_map.insert(r, first);
        }
        let past_ids: BTreeSet<u64> = out.past_id_map.values().flatten().copied().collect();
        for p in past_ids {
            let mut desc = reach(p, &children);
            desc.insert(p);
            let leaves: Vec<u64> = desc
                .iter()
                .copied()
                .filter(|&d| out_degree(d) == 0)
                .collect();
            // As PyChunkedGraph: a node with exactly two successors, or several ends, is
            // ambiguous.
            if desc.iter().any(|&d| out_degree(d) == 2) || leaves.len() != 1 {
                continue;
            }
            let through_split = desc
                .iter()
                .filter(|&&d| out_degree(d) == 1)
                .any(|d| in_degree(children[d][0]) == 1);
            if !through_split {
                out.future_id_map.insert(p, leaves[0]);
            }
        }
        Ok(out)
    }

    /// The operations in the past of `root` (back to `since`), one row each, by operation ID.
    async fn change_rows(&self, root: u64, since: Option<i64>) -> Result<Vec<ChangeLogRow>> {
        let walk = self
            .walk_lineage(&[root], since.unwrap_or(i64::MIN), mutation::now_micros())
            .await?;
        let (graph, ops) = self.annotate(&walk).await?;
        let parents = walk.parents_of();
        let children = walk.children_of();
        let ancestors = reach(root, &parents);
        let by_id: HashMap<u64, &LineageNode> = graph.nodes.iter().map(|n| (n.id, n)).collect();
        let mut replaced: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for n in &graph.nodes {
            if let Some(op) = n.superseded_by {
                replaced.entry(op).or_default().push(n.id);
            }
        }
        let past_ops: BTreeSet<u64> = ancestors
            .iter()
            .filter_map(|a| by_id.get(a).and_then(|n| n.superseded_by))
            .collect();
        let mut entries = Vec::with_capacity(past_ops.len());
        for op in past_ops {
            let entry = ops.get(&op).ok_or_else(|| {
                GraphError::Corrupt(format!("operation {op} is missing from the op log"))
            })?;
            let is_merge = !entry.added_edges.is_empty();
            let edges = if is_merge {
                &entry.added_edges
            } else {
                &entry.removed_edges
            };
            let svs: Vec<u64> = edges.iter().flatten().copied().collect();
            entries.push((entry, is_merge, svs));
        }
        // Roots of the edited supervoxels when `root` was made, and at the ingest.
        let mut svs: Vec<u64> = entries.iter().flat_map(|e| e.2.iter().copied()).collect();
        svs.sort_unstable();
        svs.dedup();
        let lookup = |at: i64| {
            let svs = &svs;
            async move {
                let q = RootQuery {
                    at: Some(at),
                    fail_to_zero: true,
                    ..Default::default()
                };
                self.roots(svs, &q).await
            }
        };
        let created = walk.links[&root].created;
        let (then, original) = if svs.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            futures::try_join!(lookup(created), lookup(self.meta().ingest_timestamp_micros))?
        };
        let then: HashMap<u64, u64> = svs.iter().copied().zip(then).collect();
        let original: HashMap<u64, u64> = svs.iter().copied().zip(original).collect();
        let mut rows = Vec::with_capacity(entries.len());
        for (entry, is_merge, svs) in entries {
            let before = replaced
                .get(&entry.operation_id)
                .cloned()
                .unwrap_or_default();
            let after: BTreeSet<u64> = before
                .iter()
                .flat_map(|b| children.get(b).into_iter().flatten().copied())
                .collect();
            let distinct = |m: &HashMap<u64, u64>| -> usize {
                svs.iter().map(|s| m[s]).collect::<HashSet<u64>>().len()
            };
            let (in_neuron, is_relevant) = if is_merge {
                (
                    svs.iter().all(|s| then[s] == root),
                    distinct(&original) != 1,
                )
            } else {
                (svs.iter().any(|s| then[s] == root), distinct(&then) != 1)
            };
            rows.push(ChangeLogRow {
                operation_id: entry.operation_id,
                timestamp_micros: entry.timestamp_micros,
                user_id: entry.user.clone(),
                before_root_ids: before,
                after_root_ids: after.into_iter().collect(),
                is_merge,
                kind: entry.kind.clone(),
                is_undo: entry.kind == "undo",
                is_redo: entry.kind == "redo",
                in_neuron,
                is_relevant,
            });
        }
        Ok(rows)
    }

    /// PyChunkedGraph's change-log summary of `root` over its past lineage back to `since`
    /// (µs; `None`: all), unfiltered (the route's default).
    pub async fn change_log(&self, root: u64, since: Option<i64>) -> Result<ChangeLog> {
        self.change_log_with(root, since, false).await
    }

    /// [`change_log`](Self::change_log), optionally `filtered` to the operations that shaped
    /// this root (`in_neuron && is_relevant`, caveclient's default).
    pub async fn change_log_with(
        &self,
        root: u64,
        since: Option<i64>,
        filtered: bool,
    ) -> Result<ChangeLog> {
        let rows = self.change_rows(root, since).await?;
        Ok(ChangeLog::from_rows(&rows, filtered))
    }

    /// PyChunkedGraph's tabular change log of `root`: every operation in its past lineage, by
    /// operation ID (which follows time), unfiltered; filter on `in_neuron && is_relevant`
    /// for the route's default `filtered=true`.
    pub async fn tabular_change_log(&self, root: u64) -> Result<Vec<ChangeLogRow>> {
        self.change_rows(root, None).await
    }

    /// The merges (operations that activated edges) in the past lineage of `root`, by
    /// operation ID. An undo or redo without points of its own takes those of the operation
    /// it replays.
    pub async fn merge_log(&self, root: u64) -> Result<Vec<MergeLogEntry>> {
        let walk = self
            .walk_lineage(&[root], i64::MIN, mutation::now_micros())
            .await?;
        let (graph, ops) = self.annotate(&walk).await?;
        let ancestors = reach(root, &walk.parents_of());
        let past_ops: BTreeSet<u64> = graph
            .nodes
            .iter()
            .filter(|n| ancestors.contains(&n.id))
            .filter_map(|n| n.superseded_by)
            .collect();
        let res = self.geometry().resolution;
        let voxels = |pts: &[[f64; 3]]| -> Vec<[i64; 3]> {
            pts.iter()
                .map(|p| [0, 1, 2].map(|d| (p[d] / res[d]).trunc() as i64))
                .collect()
        };
        let mut out = Vec::new();
        for op in past_ops {
            let entry = ops.get(&op).ok_or_else(|| {
                GraphError::Corrupt(format!("operation {op} is missing from the op log"))
            })?;
            if entry.added_edges.is_empty() {
                continue;
            }
            let (mut src, mut snk) = merge_points(entry);
            if src.is_empty() && snk.is_empty() {
                if let Some(target) = referenced_op(entry) {
                    let (replayed, _) = self.operation(target).await?;
                    (src, snk) = merge_points(&replayed);
                }
            }
            out.push(MergeLogEntry {
                operation_id: op,
                timestamp_micros: entry.timestamp_micros,
                user: entry.user.clone(),
                added_edges: entry.added_edges.clone(),
                source_coords_voxel: voxels(&src),
                sink_coords_voxel: voxels(&snk),
                source_coords_nm: src,
                sink_coords_nm: snk,
            });
        }
        Ok(out)
    }

    /// The op-log entries of `ops`, in the order asked. An unknown operation is not found.
    pub async fn operation_details(&self, ops: &[u64]) -> Result<Vec<OperationEntry>> {
        let mut keys: Vec<u64> = ops.to_vec();
        keys.sort_unstable();
        keys.dedup();
        let mut found: HashMap<u64, OperationEntry> = HashMap::with_capacity(keys.len());
        for batch in keys.chunks(KEYS_PER_READ) {
            let rows = self
                .client()
                .read_rows_vec(
                    self.table(),
                    ReadRows::new()
                        .keys(batch.iter().map(|&op| schema::op_key(op)))
                        .filter(filter::chain([
                            filter::column(schema::IMMUTABLE, schema::ENTRY),
                            filter::cells_per_column_limit(1),
                        ])),
                )
                .await?;
            for row in rows {
                if let Some(cell) = row.cell(schema::IMMUTABLE, schema::ENTRY) {
                    let id = parse_row_key(row.key.get(1..).unwrap_or_default())?;
                    found.insert(id, parse_entry(&cell.value, &row.key)?);
                }
            }
        }
        ops.iter()
            .map(|op| {
                found
                    .get(op)
                    .cloned()
                    .ok_or_else(|| GraphError::NotFound(format!("operation {op} does not exist")))
            })
            .collect()
    }

    /// The operations of `user` (`None`: everyone's) stamped in `[start, end)` (µs), by
    /// operation ID. Unless `include_undone`, leaves out undo and redo entries and the
    /// operations undone as of `end` (by anyone, and not redone since), as PyChunkedGraph's
    /// `user_operations` intends. Edits still being written are included.
    pub async fn user_operations(
        &self,
        user: Option<&str>,
        start: i64,
        end: i64,
        include_undone: bool,
    ) -> Result<Vec<OperationEntry>> {
        if end < start {
            return Err(GraphError::InvalidInput(format!(
                "the window [{start}, {end}) µs ends before it starts"
            )));
        }
        if end <= 0 || start == end {
            return Ok(Vec::new());
        }
        let logged = self
            .scan_op_log(filter::timestamp_range(0, end), true)
            .await?;
        let mut undone: HashSet<u64> = HashSet::new();
        for (e, status) in &logged {
            if status != "done" {
                continue;
            }
            match (e.kind.as_str(), referenced_op(e)) {
                ("undo", Some(op)) => {
                    undone.insert(op);
                }
                ("redo", Some(op)) => {
                    undone.remove(&op);
                }
                _ => {}
            }
        }
        Ok(logged
            .into_iter()
            .map(|(e, _)| e)
            .filter(|e| e.timestamp_micros >= start && e.timestamp_micros < end)
            .filter(|e| user.is_none_or(|u| e.user == u))
            .filter(|e| {
                include_undone
                    || !(e.kind == "undo" || e.kind == "redo" || undone.contains(&e.operation_id))
            })
            .collect())
    }

    /// The earliest time of the graph (µs): its ingest timestamp. (PyChunkedGraph answers
    /// the first operation's time less 500 ms, which is later than its ingest.)
    pub async fn oldest_timestamp(&self) -> Result<i64> {
        Ok(self.meta().ingest_timestamp_micros)
    }

    /// When `root` was made (µs): the time of the edit that created it, or the ingest's.
    pub async fn last_edit(&self, root: u64) -> Result<i64> {
        let links = self.root_links(&[root]).await?;
        Ok(links[&root].created)
    }
}
