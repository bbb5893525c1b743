//! Read queries, now or at any past time T (µs; `None` is now).
//!
//! Time travel is Bigtable's own: a node's parent is its newest `parent` version stamped at
//! or before T. Root lookups walk up one layer per round trip, batched over all the IDs of a
//! query. Cached parent histories newer than the edit horizon are checked in one extra
//! round trip: every node the walk reached through them must not have been superseded by T
//! (an edit that changes any parent pointer supersedes the old parent).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cg_bigtable::{filter, mutation, ReadRows, Row};
use cg_ids::{layer_of, parse_row_key, row_key, VoxelBox};
use futures::StreamExt;

use crate::cache::{ChildList, NodeSpan, ParentHistory};
use crate::schema::{self, CrossEdge, StoredEdge};
use crate::{ChunkedGraph, GraphError, Result};

/// Rows per ReadRows request in batched lookups; several run at once.
const KEYS_PER_READ: usize = 2000;
const READS_IN_FLIGHT: usize = 8;

/// How to look up roots.
#[derive(Clone, Copy, Debug, Default)]
pub struct RootQuery {
    /// Time of the lookup (µs); `None` is now.
    pub at: Option<i64>,
    /// Stop at this layer instead of the root layer.
    pub stop_layer: Option<u8>,
    /// With skip connections a walk can jump over `stop_layer`: `true` returns the node
    /// above it (PyChunkedGraph's default), `false` the last node below it.
    pub no_ceil: bool,
    /// Unknown IDs give 0 instead of an error.
    pub fail_to_zero: bool,
}

/// One supervoxel edge of a subgraph.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SubgraphEdge {
    pub a: u64,
    pub b: u64,
    pub affinity: f32,
    pub area: u32,
    pub active: bool,
    /// Added by a proofreader (affinity 1, area 0), not found in the data.
    pub user: bool,
}

/// The versioned edge cells of one supervoxel row at some time.
#[derive(Clone, Debug, Default)]
pub(crate) struct EdgeState {
    pub active: Vec<u8>,
    pub user: Vec<schema::UserEdge>,
}

fn now() -> i64 {
    mutation::now_micros()
}

impl ChunkedGraph {
    fn at(&self, at: Option<i64>) -> i64 {
        at.unwrap_or_else(now)
    }

    /// Reads rows by node ID, in parallel batches.
    async fn read_nodes(
        &self,
        ids: &[u64],
        f: cg_bigtable::proto::v2::RowFilter,
    ) -> Result<Vec<Row>> {
        let mut keys: Vec<u64> = ids.to_vec();
        keys.sort_unstable();
        keys.dedup();
        let batches: Vec<Vec<u64>> = keys.chunks(KEYS_PER_READ).map(<[u64]>::to_vec).collect();
        let mut reads = futures::stream::iter(batches)
            .map(|batch| {
                let read = ReadRows::new()
                    .keys(batch.iter().map(|&id| row_key(id).to_vec()))
                    .filter(f.clone());
                self.client().read_rows_vec(self.table(), read)
            })
            .buffer_unordered(READS_IN_FLIGHT);
        let mut out = Vec::with_capacity(keys.len());
        while let Some(rows) = reads.next().await {
            out.extend(rows?);
        }
        Ok(out)
    }

    fn check_ids(&self, ids: &[u64]) -> Result<()> {
        for &id in ids {
            self.geometry().check(id)?;
        }
        Ok(())
    }

    /// Every parent version of `ids`, read now and cached.
    async fn fetch_parent_histories(
        &self,
        ids: &[u64],
    ) -> Result<HashMap<u64, Arc<ParentHistory>>> {
        let read_at = now();
        let epoch = self.cache().epoch.load(std::sync::atomic::Ordering::SeqCst);
        let rows = self
            .read_nodes(ids, filter::column(schema::VERSIONED, schema::PARENT))
            .await?;
        let mut out: HashMap<u64, Arc<ParentHistory>> = HashMap::with_capacity(ids.len());
        for row in rows {
            let id = parse_row_key(&row.key)?;
            let mut versions = Vec::new();
            if let Some(col) = row.column(schema::VERSIONED, schema::PARENT) {
                for c in &col.cells {
                    versions.push((c.timestamp_micros, schema::decode_id(&c.value)?));
                }
            }
            out.insert(id, Arc::new(ParentHistory { read_at, versions }));
        }
        for &id in ids {
            out.entry(id).or_insert_with(|| {
                Arc::new(ParentHistory {
                    read_at,
                    versions: Vec::new(),
                })
            });
        }
        // An edit finished during the read may have evicted what we hold: don't cache it.
        let unchanged = self.cache().epoch.load(std::sync::atomic::Ordering::SeqCst) == epoch;
        for (&id, h) in out.iter().filter(|_| unchanged) {
            self.cache().parents.insert(id, h.clone());
        }
        Ok(out)
    }

    /// Parents at `t`, and whether each answer came from a cache entry too young to be sure.
    pub(crate) async fn parents_at(
        &self,
        ids: &[u64],
        t: i64,
        use_cache: bool,
    ) -> Result<(HashMap<u64, Option<u64>>, HashSet<u64>)> {
        let mut out = HashMap::with_capacity(ids.len());
        let mut tentative = HashSet::new();
        let mut missing = Vec::new();
        let horizon = self.cache().horizon;
        for &id in ids {
            match self.cache().parents.get(&id).filter(|_| use_cache) {
                Some(h) => {
                    if t > h.read_at - horizon && !self.cache().sole_writer {
                        tentative.insert(id);
                    }
                    out.insert(id, h.at(t));
                }
                None => missing.push(id),
            }
        }
        if !missing.is_empty() {
            for (id, h) in self.fetch_parent_histories(&missing).await? {
                out.insert(id, h.at(t));
            }
        }
        Ok((out, tentative))
    }

    /// Children lists (cached; they never change). Layer-1 nodes have none; other unknown
    /// nodes are an error.
    pub async fn children(&self, ids: &[u64]) -> Result<Vec<Arc<ChildList>>> {
        self.check_ids(ids)?;
        let mut found: HashMap<u64, Arc<ChildList>> = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        for &id in ids {
            if layer_of(id) == 1 {
                continue;
            }
            match self.cache().children.get(&id) {
                Some(c) => {
                    found.insert(id, c);
                }
                None => missing.push(id),
            }
        }
        if !missing.is_empty() {
            let rows = self
                .read_nodes(
                    &missing,
                    filter::chain([
                        filter::column(schema::IMMUTABLE, schema::CHILDREN),
                        filter::cells_per_column_limit(1),
                    ]),
                )
                .await?;
            for row in rows {
                let id = parse_row_key(&row.key)?;
                if let Some(c) = row.cell(schema::IMMUTABLE, schema::CHILDREN) {
                    let list = Arc::new(ChildList {
                        created: c.timestamp_micros,
                        ids: schema::decode_ids(&c.value)?,
                    });
                    self.cache().children.insert(id, list.clone());
                    found.insert(id, list);
                }
            }
        }
        let empty = Arc::new(ChildList {
            created: 0,
            ids: Vec::new(),
        });
        ids.iter()
            .map(|id| {
                if layer_of(*id) == 1 {
                    return Ok(empty.clone());
                }
                found
                    .get(id)
                    .cloned()
                    .ok_or_else(|| GraphError::NotFound(format!("node {id} does not exist")))
            })
            .collect()
    }

    /// The parent of each node at `at`, or `None` for a root (or a node that did not exist).
    pub async fn parents(&self, ids: &[u64], at: Option<i64>) -> Result<Vec<Option<u64>>> {
        self.check_ids(ids)?;
        let t = self.at(at);
        let (map, tentative) = self.parents_at(ids, t, true).await?;
        let targets: Vec<u64> = tentative.iter().filter_map(|id| map[id]).collect();
        if !self.superseded(&targets, t).await?.is_empty() {
            let (map, _) = self.parents_at(ids, t, false).await?;
            return Ok(ids.iter().map(|id| map[id]).collect());
        }
        Ok(ids.iter().map(|id| map[id]).collect())
    }

    /// Of `ids`, those replaced by an edit stamped at or before `t`.
    async fn superseded(&self, ids: &[u64], t: i64) -> Result<HashSet<u64>> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let rows = self
            .read_nodes(
                ids,
                filter::chain([
                    filter::column(schema::VERSIONED, schema::NEW_PARENTS),
                    filter::timestamp_range(0, t.saturating_add(1)),
                    filter::cells_per_column_limit(1),
                    filter::strip_value(),
                ]),
            )
            .await?;
        rows.iter()
            .map(|r| parse_row_key(&r.key).map_err(GraphError::from))
            .collect()
    }

    /// The root of one node.
    pub async fn root(&self, id: u64, at: Option<i64>) -> Result<u64> {
        let r = self
            .roots(
                &[id],
                &RootQuery {
                    at,
                    ..Default::default()
                },
            )
            .await?;
        Ok(r[0])
    }

    /// The roots (or the ancestors at `stop_layer`) of many nodes, in input order.
    pub async fn roots(&self, ids: &[u64], q: &RootQuery) -> Result<Vec<u64>> {
        self.check_ids(ids)?;
        let t = self.at(q.at);
        match self.walk_up(ids, t, q, true).await? {
            Some(out) => Ok(out),
            None => Ok(self.walk_up(ids, t, q, false).await?.unwrap_or_default()),
        }
    }

    /// One walk; `None` if a cached pointer turned out stale (the caller walks again
    /// without the cache).
    async fn walk_up(
        &self,
        ids: &[u64],
        t: i64,
        q: &RootQuery,
        use_cache: bool,
    ) -> Result<Option<Vec<u64>>> {
        let n_layers = self.geometry().n_layers;
        let stop = q.stop_layer.unwrap_or(n_layers).clamp(1, n_layers);
        let mut cur: Vec<u64> = ids.to_vec();
        let mut open: Vec<usize> = (0..ids.len())
            .filter(|&i| layer_of(ids[i]) < stop)
            .collect();
        // Nodes no parent pointer vouches for: they must exist at t on their own.
        let mut unvouched: HashSet<u64> = (0..ids.len())
            .filter(|&i| layer_of(ids[i]) >= stop)
            .map(|i| ids[i])
            .collect();
        let mut checked: HashSet<u64> = HashSet::new();
        let mut unknown: Vec<usize> = Vec::new();
        while !open.is_empty() {
            let mut need: Vec<u64> = open.iter().map(|&i| cur[i]).collect();
            need.sort_unstable();
            need.dedup();
            let (parents, tentative) = self.parents_at(&need, t, use_cache).await?;
            for id in &tentative {
                checked.insert(parents[id].unwrap_or(*id));
            }
            let mut next = Vec::with_capacity(open.len());
            for i in open {
                match parents[&cur[i]] {
                    None if layer_of(cur[i]) == 1 => unknown.push(i),
                    None => {
                        if cur[i] == ids[i] {
                            unvouched.insert(cur[i]);
                        }
                    }
                    Some(p) => {
                        let lp = layer_of(p);
                        if lp < stop {
                            cur[i] = p;
                            next.push(i);
                        } else if lp == stop || !q.no_ceil {
                            cur[i] = p;
                        }
                    }
                }
            }
            open = next;
        }
        let checked: Vec<u64> = checked.into_iter().collect();
        if use_cache && !self.superseded(&checked, t).await?.is_empty() {
            return Ok(None);
        }
        let created = self
            .creation_times_any_layer(&unvouched.iter().copied().collect::<Vec<_>>())
            .await?;
        for (i, c) in cur.iter().enumerate() {
            if unvouched.contains(c) && created.get(c).is_none_or(|&t0| t0 > t) {
                unknown.push(i);
            }
        }
        for i in unknown {
            if q.fail_to_zero {
                cur[i] = 0;
            } else {
                return Err(GraphError::NotFound(format!(
                    "node {} did not exist at {t} µs",
                    ids[i]
                )));
            }
        }
        Ok(Some(cur))
    }

    /// Creation time of layer ≥ 2 nodes (the timestamp of their children cell). Unknown
    /// nodes are missing from the map.
    async fn creation_times(&self, ids: &[u64]) -> Result<HashMap<u64, i64>> {
        let upper: Vec<u64> = ids.iter().copied().filter(|&i| layer_of(i) > 1).collect();
        let mut out = HashMap::with_capacity(upper.len());
        let mut missing = Vec::new();
        for &id in &upper {
            match self.cache().children.get(&id) {
                Some(c) => {
                    out.insert(id, c.created);
                }
                None => missing.push(id),
            }
        }
        if !missing.is_empty() {
            for (id, c) in missing.iter().zip(self.children_lenient(&missing).await?) {
                if let Some(c) = c {
                    out.insert(*id, c.created);
                }
            }
        }
        Ok(out)
    }

    /// Like [`children`](Self::children), with `None` for unknown nodes.
    async fn children_lenient(&self, ids: &[u64]) -> Result<Vec<Option<Arc<ChildList>>>> {
        let mut out = Vec::with_capacity(ids.len());
        let known: HashSet<u64> = {
            let rows = self
                .read_nodes(
                    ids,
                    filter::chain([
                        filter::column(schema::IMMUTABLE, schema::CHILDREN),
                        filter::cells_per_column_limit(1),
                        filter::strip_value(),
                    ]),
                )
                .await?;
            rows.iter()
                .map(|r| parse_row_key(&r.key))
                .collect::<Result<_, _>>()?
        };
        let present: Vec<u64> = ids.iter().copied().filter(|i| known.contains(i)).collect();
        let lists = self.children(&present).await?;
        let mut by_id: HashMap<u64, Arc<ChildList>> = present.into_iter().zip(lists).collect();
        for id in ids {
            out.push(by_id.remove(id));
        }
        Ok(out)
    }

    /// The nodes under `id` at `stop_layer` or below (1: supervoxels), optionally only those
    /// whose chunk overlaps `bbox` (volume-relative voxels). Children never change, so this
    /// needs no timestamp: the leaves of a node are fixed when it is created.
    pub async fn leaves(
        &self,
        id: u64,
        bbox: Option<VoxelBox>,
        stop_layer: u8,
    ) -> Result<Vec<u64>> {
        self.check_ids(&[id])?;
        let g = self.geometry();
        let stop = stop_layer.max(1);
        if layer_of(id) <= stop {
            return Ok(vec![id]);
        }
        let keep = |n: u64| {
            bbox.as_ref()
                .is_none_or(|b| g.chunk_overlaps(layer_of(n), g.coords_of(n), b))
        };
        let mut out = Vec::new();
        let mut frontier = vec![id];
        while !frontier.is_empty() {
            let lists = self.children(&frontier).await?;
            let mut next = Vec::new();
            for list in lists {
                for &c in &list.ids {
                    if !keep(c) {
                        continue;
                    }
                    if layer_of(c) <= stop {
                        out.push(c);
                    } else {
                        next.push(c);
                    }
                }
            }
            frontier = next;
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Stored edges of supervoxels (those each is the smaller end of), cached.
    pub(crate) async fn stored_edges(
        &self,
        svs: &[u64],
    ) -> Result<HashMap<u64, Arc<[StoredEdge]>>> {
        let mut out = HashMap::with_capacity(svs.len());
        let mut missing = Vec::new();
        for &sv in svs {
            match self.cache().edges.get(&sv) {
                Some(e) => {
                    out.insert(sv, e);
                }
                None => missing.push(sv),
            }
        }
        if !missing.is_empty() {
            let rows = self
                .read_nodes(
                    &missing,
                    filter::chain([
                        filter::column(schema::IMMUTABLE, schema::EDGES),
                        filter::cells_per_column_limit(1),
                    ]),
                )
                .await?;
            let mut got: HashMap<u64, Arc<[StoredEdge]>> = HashMap::new();
            for row in rows {
                let id = parse_row_key(&row.key)?;
                if let Some(c) = row.cell(schema::IMMUTABLE, schema::EDGES) {
                    got.insert(id, schema::decode_edges(&c.value)?.into());
                }
            }
            for sv in missing {
                let e = got.remove(&sv).unwrap_or_else(|| Arc::from(Vec::new()));
                self.cache().edges.insert(sv, e.clone());
                out.insert(sv, e);
            }
        }
        Ok(out)
    }

    /// Edge-state bitmaps and user edges of supervoxels at `t`.
    pub(crate) async fn edge_states(&self, svs: &[u64], t: i64) -> Result<HashMap<u64, EdgeState>> {
        let rows = self
            .read_nodes(
                svs,
                filter::chain([
                    filter::interleave([
                        filter::column(schema::VERSIONED, schema::EDGE_STATE),
                        filter::column(schema::VERSIONED, schema::USER_EDGES),
                    ]),
                    filter::timestamp_range(0, t.saturating_add(1)),
                    filter::cells_per_column_limit(1),
                ]),
            )
            .await?;
        let mut out = HashMap::with_capacity(rows.len());
        for row in rows {
            let mut st = EdgeState::default();
            if let Some(c) = row.cell(schema::VERSIONED, schema::EDGE_STATE) {
                st.active = c.value.clone();
            }
            if let Some(c) = row.cell(schema::VERSIONED, schema::USER_EDGES) {
                st.user = schema::decode_user_edges(&c.value)?;
            }
            out.insert(parse_row_key(&row.key)?, st);
        }
        Ok(out)
    }

    /// The supervoxel edges among the leaves of `id` (inside `bbox`, if given), with
    /// affinity, area and whether each was active at `at`.
    pub async fn subgraph_edges(
        &self,
        id: u64,
        bbox: Option<VoxelBox>,
        at: Option<i64>,
    ) -> Result<Vec<SubgraphEdge>> {
        let t = self.at(at);
        let svs = self.leaves(id, bbox, 1).await?;
        self.edges_among(&svs, t).await
    }

    /// The stored edges with both ends in `svs`, with their state at `t`.
    pub async fn edges_among(&self, svs: &[u64], t: i64) -> Result<Vec<SubgraphEdge>> {
        let set: HashSet<u64> = svs.iter().copied().collect();
        let (edges, states) = futures::try_join!(self.stored_edges(svs), self.edge_states(svs, t))?;
        let mut out = Vec::new();
        for &sv in svs {
            let state = states.get(&sv);
            if let Some(list) = edges.get(&sv) {
                for (i, e) in list.iter().enumerate() {
                    if set.contains(&e.partner) {
                        out.push(SubgraphEdge {
                            a: sv,
                            b: e.partner,
                            affinity: e.affinity,
                            area: e.area,
                            active: state.is_some_and(|s| schema::bit(&s.active, i)),
                            user: false,
                        });
                    }
                }
            }
            for u in state.map(|s| s.user.as_slice()).unwrap_or(&[]) {
                if set.contains(&u.partner) {
                    out.push(SubgraphEdge {
                        a: sv,
                        b: u.partner,
                        affinity: 1.0,
                        area: 0,
                        active: u.active,
                        user: true,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Cross-chunk edges of nodes (cached; written once).
    pub(crate) async fn cross_edges(&self, ids: &[u64]) -> Result<HashMap<u64, Arc<[CrossEdge]>>> {
        let mut out = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        for &id in ids {
            match self.cache().cross_edges.get(&id) {
                Some(e) => {
                    out.insert(id, e);
                }
                None => missing.push(id),
            }
        }
        if !missing.is_empty() {
            let rows = self
                .read_nodes(
                    &missing,
                    filter::chain([
                        filter::column(schema::IMMUTABLE, schema::CROSS_EDGES),
                        filter::cells_per_column_limit(1),
                    ]),
                )
                .await?;
            let mut got: HashMap<u64, Arc<[CrossEdge]>> = HashMap::new();
            for row in rows {
                let id = parse_row_key(&row.key)?;
                if let Some(c) = row.cell(schema::IMMUTABLE, schema::CROSS_EDGES) {
                    got.insert(id, schema::decode_cross_edges(&c.value)?.into());
                }
            }
            for id in missing {
                let e = got.remove(&id).unwrap_or_else(|| Arc::from(Vec::new()));
                self.cache().cross_edges.insert(id, e.clone());
                out.insert(id, e);
            }
        }
        Ok(out)
    }

    /// The layer-2 graph of a node at `at`: pairs of its layer-2 nodes joined by an active
    /// cross-chunk edge, each pair once, smaller ID first.
    pub async fn l2_graph(&self, id: u64, at: Option<i64>) -> Result<Vec<[u64; 2]>> {
        let l2s = self.leaves(id, None, 2).await?;
        let set: HashSet<u64> = l2s.iter().copied().collect();
        let cross = self.cross_edges(&l2s).await?;
        let mut partners: Vec<u64> = cross
            .values()
            .flat_map(|v| v.iter().map(|e| e.there))
            .collect();
        partners.sort_unstable();
        partners.dedup();
        let partner_l2 = self
            .roots(
                &partners,
                &RootQuery {
                    at,
                    stop_layer: Some(2),
                    fail_to_zero: true,
                    ..Default::default()
                },
            )
            .await?;
        let l2_of: HashMap<u64, u64> = partners.into_iter().zip(partner_l2).collect();
        let mut out: Vec<[u64; 2]> = Vec::new();
        for (&a, edges) in &cross {
            for e in edges.iter() {
                if let Some(&b) = l2_of.get(&e.there) {
                    if b != a && set.contains(&b) {
                        out.push([a.min(b), a.max(b)]);
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Whether each node (above layer 1) was part of the graph at `at`: created at or
    /// before it and not replaced by an edit stamped at or before it. For a root-layer node
    /// that is whether it was a root then, and then every supervoxel it was ever made of had
    /// it as root (its leaves never change, and an edit moving any of them replaces it).
    /// Unknown nodes were not. Spans are cached: as only writer, or for `at` older than the
    /// edit horizon, a cached span answers without storage; otherwise it is read again.
    pub async fn current_at(&self, ids: &[u64], at: Option<i64>) -> Result<Vec<bool>> {
        self.check_ids(ids)?;
        if let Some(&id) = ids.iter().find(|&&id| layer_of(id) < 2) {
            return Err(GraphError::InvalidInput(format!(
                "{id} is a supervoxel: spans are kept for layer 2 and above"
            )));
        }
        let t = self.at(at);
        let horizon = self.cache().horizon;
        let mut known: HashMap<u64, bool> = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        for &id in ids {
            match self.cache().spans.get(&id) {
                Some(s) if self.cache().sole_writer || s.settled_at(t, horizon) => {
                    known.insert(id, s.current_at(t));
                }
                _ => missing.push(id),
            }
        }
        if !missing.is_empty() {
            for (id, s) in self.fetch_spans(&missing).await? {
                known.insert(id, s.current_at(t));
            }
        }
        Ok(ids
            .iter()
            .map(|id| known.get(id).copied().unwrap_or(false))
            .collect())
    }

    /// Creation and first replacement times of `ids`, read now and cached.
    async fn fetch_spans(&self, ids: &[u64]) -> Result<HashMap<u64, Arc<NodeSpan>>> {
        let read_at = now();
        let epoch = self.cache().epoch.load(std::sync::atomic::Ordering::SeqCst);
        // Timestamps only: the children cell's is the creation, new_parents' the replacement.
        let rows = self
            .read_nodes(
                ids,
                filter::chain([
                    filter::interleave([
                        filter::chain([
                            filter::column(schema::IMMUTABLE, schema::CHILDREN),
                            filter::cells_per_column_limit(1),
                        ]),
                        filter::column(schema::VERSIONED, schema::NEW_PARENTS),
                    ]),
                    filter::strip_value(),
                ]),
            )
            .await?;
        let mut out: HashMap<u64, Arc<NodeSpan>> = HashMap::with_capacity(ids.len());
        for row in rows {
            let id = parse_row_key(&row.key)?;
            let created = row
                .cell(schema::IMMUTABLE, schema::CHILDREN)
                .map(|c| c.timestamp_micros);
            // Replaced once; more versions come from an undone edit being redone.
            let replaced = row
                .column(schema::VERSIONED, schema::NEW_PARENTS)
                .and_then(|c| c.cells.iter().map(|c| c.timestamp_micros).min());
            out.insert(
                id,
                Arc::new(NodeSpan {
                    read_at,
                    created,
                    replaced,
                }),
            );
        }
        for &id in ids {
            out.entry(id).or_insert_with(|| {
                Arc::new(NodeSpan {
                    read_at,
                    created: None,
                    replaced: None,
                })
            });
        }
        // An edit finished during the read may have evicted what we hold: don't cache it.
        let unchanged = self.cache().epoch.load(std::sync::atomic::Ordering::SeqCst) == epoch;
        for (&id, s) in out.iter().filter(|_| unchanged) {
            self.cache().spans.insert(id, s.clone());
        }
        Ok(out)
    }

    /// Whether each node was not yet replaced by an edit at `at`.
    pub async fn is_latest(&self, ids: &[u64], at: Option<i64>) -> Result<Vec<bool>> {
        self.check_ids(ids)?;
        let gone = self.superseded(ids, self.at(at)).await?;
        Ok(ids.iter().map(|id| !gone.contains(id)).collect())
    }

    /// When each node was replaced by an edit stamped at or before `at` (µs; `None`: now):
    /// the time of the first such edit, for the nodes that were replaced.
    pub async fn replaced_times(&self, ids: &[u64], at: Option<i64>) -> Result<HashMap<u64, i64>> {
        self.check_ids(ids)?;
        let t = self.at(at);
        let rows = self
            .read_nodes(
                ids,
                filter::chain([
                    filter::column(schema::VERSIONED, schema::NEW_PARENTS),
                    filter::timestamp_range(0, t.saturating_add(1)),
                    filter::strip_value(),
                ]),
            )
            .await?;
        let mut out = HashMap::with_capacity(rows.len());
        for row in rows {
            let id = parse_row_key(&row.key)?;
            // A node is replaced once; more versions would come from a replaced edit being
            // undone and redone, and the first is when it stopped being current.
            if let Some(col) = row.column(schema::VERSIONED, schema::NEW_PARENTS) {
                if let Some(first) = col.cells.iter().map(|c| c.timestamp_micros).min() {
                    out.insert(id, first);
                }
            }
        }
        Ok(out)
    }

    /// When each node was created (µs). Unknown nodes are an error.
    pub async fn node_timestamps(&self, ids: &[u64]) -> Result<Vec<i64>> {
        self.check_ids(ids)?;
        let created = self.creation_times_any_layer(ids).await?;
        ids.iter()
            .map(|id| {
                created
                    .get(id)
                    .copied()
                    .ok_or_else(|| GraphError::NotFound(format!("node {id} does not exist")))
            })
            .collect()
    }

    async fn creation_times_any_layer(&self, ids: &[u64]) -> Result<HashMap<u64, i64>> {
        let mut out = self.creation_times(ids).await?;
        let svs: Vec<u64> = ids.iter().copied().filter(|&i| layer_of(i) == 1).collect();
        if !svs.is_empty() {
            let hist = self.fetch_parent_histories(&svs).await?;
            for (id, h) in hist {
                if let Some(first) = h.versions.last() {
                    out.insert(id, first.0);
                }
            }
        }
        Ok(out)
    }

    /// Of `ids`, those created within `[start, end]` (µs).
    pub async fn valid_nodes(&self, ids: &[u64], start: i64, end: i64) -> Result<Vec<u64>> {
        self.check_ids(ids)?;
        let created = self.creation_times_any_layer(ids).await?;
        Ok(ids
            .iter()
            .copied()
            .filter(|id| created.get(id).is_some_and(|&c| c >= start && c <= end))
            .collect())
    }

    /// Roots created by edits in `[start, end)` that are still current at `end`, and roots
    /// that existed at `start` and were replaced by edits in the window.
    pub async fn delta_roots(&self, start: i64, end: i64) -> Result<(Vec<u64>, Vec<u64>)> {
        let ops = self.operations_between(start, end).await?;
        let mut new: Vec<u64> = ops
            .iter()
            .flat_map(|o| o.new_roots.iter().copied())
            .collect();
        let mut old: Vec<u64> = ops
            .iter()
            .flat_map(|o| o.old_roots.iter().copied())
            .collect();
        new.sort_unstable();
        new.dedup();
        old.sort_unstable();
        old.dedup();
        let latest = self.is_latest(&new, Some(end.saturating_sub(1))).await?;
        let new: Vec<u64> = new
            .into_iter()
            .zip(latest)
            .filter_map(|(r, l)| l.then_some(r))
            .collect();
        let created = self.creation_times(&old).await?;
        let old: Vec<u64> = old
            .into_iter()
            .filter(|r| created.get(r).is_some_and(|&c| c < start))
            .collect();
        Ok((new, old))
    }
}
