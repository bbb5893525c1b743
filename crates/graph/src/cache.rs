//! Process-wide caches. Children, cross-chunk edges and supervoxel edge lists are written
//! once, so they are cached without expiry. Parent pointers and replacements are the only
//! cells that change: a node's parent history (or its span) read at time R is exact for any T
//! up to R minus the edit horizon (no edit still running could write a cell stamped before
//! that), and a tentative answer for later T, which the caller must validate (see `query`).

use std::sync::Arc;

use quick_cache::sync::Cache as Lru;

use crate::schema::{CrossEdge, StoredEdge};

/// Sizes of the caches, in entries, and the edit horizon.
#[derive(Clone, Debug)]
pub struct CacheOptions {
    pub children: usize,
    pub parents: usize,
    pub cross_edges: usize,
    pub edges: usize,
    /// Node spans (creation and replacement times).
    pub spans: usize,
    /// How long an edit may write cells stamped with its start time (the lock lifetime).
    pub edit_horizon_micros: i64,
    /// This process is the only writer of the table (embedded storage): its own edits evict
    /// what they change, so cached parent pointers need no check against storage.
    pub sole_writer: bool,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            children: 1 << 20,
            parents: 1 << 22,
            cross_edges: 1 << 20,
            edges: 1 << 20,
            spans: 1 << 20,
            edit_horizon_micros: 60_000_000,
            sole_writer: false,
        }
    }
}

/// A node's children and when the node was created (the timestamp of its children cell).
#[derive(Debug)]
pub struct ChildList {
    pub created: i64,
    pub ids: Vec<u64>,
}

/// A node's parent versions as read at `read_at`, newest first.
#[derive(Debug)]
pub struct ParentHistory {
    pub read_at: i64,
    pub versions: Vec<(i64, u64)>,
}

impl ParentHistory {
    /// The parent at `t`, if the node had one.
    pub fn at(&self, t: i64) -> Option<u64> {
        self.versions.iter().find(|v| v.0 <= t).map(|v| v.1)
    }
}

/// When a node (layer ≥ 2) was created and first replaced by an edit, as read at `read_at`.
/// `created` is `None` for a node unknown then.
#[derive(Debug)]
pub struct NodeSpan {
    pub read_at: i64,
    pub created: Option<i64>,
    pub replaced: Option<i64>,
}

impl NodeSpan {
    /// Whether the node was part of the graph at `t`, as far as this read saw.
    pub fn current_at(&self, t: i64) -> bool {
        self.created.is_some_and(|c| c <= t) && self.replaced.is_none_or(|r| r > t)
    }

    /// Whether the answer for `t` holds whatever was written after the read: a creation
    /// and a replacement, once stamped, never move.
    pub fn settled_at(&self, t: i64, horizon: i64) -> bool {
        t <= self.read_at - horizon
            || self.created.is_some_and(|c| c > t)
            || self.replaced.is_some_and(|r| r <= t)
    }
}

pub struct Cache {
    pub children: Lru<u64, Arc<ChildList>>,
    pub parents: Lru<u64, Arc<ParentHistory>>,
    pub cross_edges: Lru<u64, Arc<[CrossEdge]>>,
    pub edges: Lru<u64, Arc<[StoredEdge]>>,
    pub spans: Lru<u64, Arc<NodeSpan>>,
    pub horizon: i64,
    pub sole_writer: bool,
    /// Bumped by every edit after it wrote its parent pointers and before it evicts them: a
    /// read that started before the bump must not cache what it read.
    pub epoch: std::sync::atomic::AtomicU64,
}

impl Cache {
    pub fn new(o: CacheOptions) -> Cache {
        Cache {
            children: Lru::new(o.children.max(1)),
            parents: Lru::new(o.parents.max(1)),
            cross_edges: Lru::new(o.cross_edges.max(1)),
            edges: Lru::new(o.edges.max(1)),
            spans: Lru::new(o.spans.max(1)),
            horizon: o.edit_horizon_micros,
            sole_writer: o.sole_writer,
            epoch: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Forgets the parent histories and spans of `ids` after an edit rewrote them.
    pub fn forget_parents(&self, ids: &[u64]) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        for id in ids {
            self.parents.remove(id);
            self.spans.remove(id);
        }
    }

    pub fn clear(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.children.clear();
        self.parents.clear();
        self.cross_edges.clear();
        self.edges.clear();
        self.spans.clear();
    }
}
