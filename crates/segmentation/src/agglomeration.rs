//! Mean-affinity hierarchical agglomeration of a region graph, as waterz scores it by default
//! ("mean affinity"): repeatedly merge the pair of touching segments whose contact has the
//! highest mean affinity (sum / area), combining the merged segment's contacts by adding
//! sums and areas, until the best mean is below a threshold.
//!
//! Contacts live in a priority queue with lazy invalidation: a merge bumps the version of the
//! contacts it rewrites and pushes them again; stale entries are skipped when popped. The
//! smaller adjacency is folded into the larger, so the whole run is `O(E log E)`.
//!
//! A merged contact's mean lies between the means it combines, so merge scores never
//! increase: the merges at or above any higher threshold are a prefix of the history
//! ([`Agglomeration::components_at`]).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

use crate::unionfind::UnionFind;
use crate::{RegionGraph, Result, SegError};

/// One merge: the components represented by `a < b` (each by its smallest segment ID) were
/// joined at mean affinity `affinity`; the result is represented by `a`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Merge {
    pub a: u64,
    pub b: u64,
    pub affinity: f64,
}

/// The outcome of an agglomeration.
#[derive(Debug, Clone, PartialEq)]
pub struct Agglomeration {
    /// Per graph node: its component, named by the smallest segment ID in it.
    pub components: Vec<u64>,
    /// The merges in the order they were made (non-increasing affinity).
    pub merges: Vec<Merge>,
    /// Per graph node: whether its component ended frozen (never without frozen input).
    pub frozen: Vec<bool>,
}

impl Agglomeration {
    /// The components at a threshold at or above the one agglomerated to: the history's
    /// merges of affinity `≥ threshold`, replayed.
    pub fn components_at(&self, graph: &RegionGraph, threshold: f64) -> Vec<u64> {
        let n = graph.ids.len();
        let mut uf = UnionFind::new(n);
        let mut rep: Vec<u64> = graph.ids.clone();
        for m in self.merges.iter().take_while(|m| m.affinity >= threshold) {
            let (Some(a), Some(b)) = (graph.node(m.a), graph.node(m.b)) else {
                continue;
            };
            let (ra, rb) = (uf.find(a), uf.find(b));
            if ra != rb {
                uf.link(rb, ra);
                rep[ra as usize] = rep[ra as usize].min(rep[rb as usize]);
            }
        }
        (0..n as u32).map(|i| rep[uf.find(i) as usize]).collect()
    }
}

/// Maps every voxel's segment ID to its component (IDs not in the graph, e.g. background,
/// are kept).
pub fn relabel(labels: &mut [u64], graph: &RegionGraph, components: &[u64]) {
    let (mut last, mut last_out) = (0u64, 0u64);
    for l in labels.iter_mut() {
        if *l == 0 {
            continue;
        }
        if *l != last {
            last = *l;
            last_out = graph.node(*l).map_or(*l, |i| components[i as usize]);
        }
        *l = last_out;
    }
}

/// Agglomerates the whole graph down to `threshold` (merges while the best mean ≥ it).
pub fn agglomerate(graph: &RegionGraph, threshold: f64) -> Agglomeration {
    run(graph, threshold, vec![false; graph.ids.len()])
}

/// Agglomerates a chunk's graph in which `frozen` nodes may have contacts not in the graph.
/// Popping a contact with a frozen end freezes the other end instead of merging; the
/// unfrozen components at the end are exactly components of the whole graph (see the crate
/// documentation), the frozen ones are for a parent to decide.
pub fn agglomerate_frozen(
    graph: &RegionGraph,
    threshold: f64,
    frozen: &[bool],
) -> Result<Agglomeration> {
    if frozen.len() != graph.ids.len() {
        return Err(SegError::Param(format!(
            "{} frozen flags for {} nodes",
            frozen.len(),
            graph.ids.len()
        )));
    }
    Ok(run(graph, threshold, frozen.to_vec()))
}

struct Edge {
    a: u32,
    b: u32,
    sum: f64,
    area: u64,
    version: u32,
    alive: bool,
}

impl Edge {
    fn mean(&self) -> f64 {
        self.sum / self.area as f64
    }
}

/// A queue entry; valid while its edge is alive and still at `version`.
struct Entry {
    score: f64,
    /// Representatives of the two ends when pushed: breaks ties deterministically.
    key: (u64, u64),
    edge: u32,
    version: u32,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Highest score first; among equal scores the smallest representatives first.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.key.cmp(&self.key))
            .then_with(|| other.edge.cmp(&self.edge))
    }
}

fn run(graph: &RegionGraph, threshold: f64, mut frozen: Vec<bool>) -> Agglomeration {
    let n = graph.ids.len();
    let mut rep: Vec<u64> = graph.ids.clone();
    let mut edges: Vec<Edge> = Vec::with_capacity(graph.edges.len());
    let mut adj: Vec<FxHashMap<u32, u32>> = vec![FxHashMap::default(); n];
    let mut heap = BinaryHeap::new();
    let push = |heap: &mut BinaryHeap<Entry>, rep: &[u64], edges: &[Edge], e: u32| {
        let edge = &edges[e as usize];
        let score = edge.mean();
        // A contact below the threshold can only rise by combining with a better one,
        // which pushes it again; leaving it out keeps the queue small.
        if score >= threshold {
            let (ra, rb) = (rep[edge.a as usize], rep[edge.b as usize]);
            heap.push(Entry {
                score,
                key: (ra.min(rb), ra.max(rb)),
                edge: e,
                version: edge.version,
            });
        }
    };
    for e in &graph.edges {
        if e.a == e.b || e.area == 0 {
            continue;
        }
        edges.push(Edge {
            a: e.a,
            b: e.b,
            sum: e.sum,
            area: e.area,
            version: 0,
            alive: true,
        });
        let id = edges.len() as u32 - 1;
        // A graph built elsewhere might list a pair twice: fold duplicates together.
        if let Some(&old) = adj[e.a as usize].get(&e.b) {
            let (sum, area) = (e.sum, e.area);
            let o = &mut edges[old as usize];
            o.sum += sum;
            o.area += area;
            edges[id as usize].alive = false;
            continue;
        }
        adj[e.a as usize].insert(e.b, id);
        adj[e.b as usize].insert(e.a, id);
    }
    for e in 0..edges.len() as u32 {
        if edges[e as usize].alive {
            push(&mut heap, &rep, &edges, e);
        }
    }
    let mut uf = UnionFind::new(n);
    let mut merges = Vec::new();
    while let Some(top) = heap.pop() {
        let edge = &edges[top.edge as usize];
        if !edge.alive || edge.version != top.version {
            continue;
        }
        let (a, b) = (edge.a, edge.b);
        if frozen[a as usize] || frozen[b as usize] {
            // What this contact becomes depends on merges outside the graph.
            frozen[a as usize] = true;
            frozen[b as usize] = true;
            continue;
        }
        let (ra, rb) = (rep[a as usize], rep[b as usize]);
        merges.push(Merge {
            a: ra.min(rb),
            b: ra.max(rb),
            affinity: top.score,
        });
        edges[top.edge as usize].alive = false;
        let (big, small) = if adj[a as usize].len() >= adj[b as usize].len() {
            (a, b)
        } else {
            (b, a)
        };
        adj[big as usize].remove(&small);
        rep[big as usize] = rep[big as usize].min(rep[small as usize]);
        let small_adj = std::mem::take(&mut adj[small as usize]);
        for (nbr, e2) in small_adj {
            if nbr == big {
                continue;
            }
            adj[nbr as usize].remove(&small);
            if let Some(&e1) = adj[big as usize].get(&nbr) {
                let (sum, area) = (edges[e2 as usize].sum, edges[e2 as usize].area);
                edges[e2 as usize].alive = false;
                let kept = &mut edges[e1 as usize];
                kept.sum += sum;
                kept.area += area;
                kept.version += 1;
                push(&mut heap, &rep, &edges, e1);
            } else {
                let moved = &mut edges[e2 as usize];
                if moved.a == small {
                    moved.a = big;
                } else {
                    moved.b = big;
                }
                moved.version += 1;
                adj[big as usize].insert(nbr, e2);
                adj[nbr as usize].insert(big, e2);
                push(&mut heap, &rep, &edges, e2);
            }
        }
        uf.link(small, big);
    }
    let mut components = Vec::with_capacity(n);
    let mut frozen_out = Vec::with_capacity(n);
    for i in 0..n as u32 {
        let r = uf.find(i) as usize;
        components.push(rep[r]);
        frozen_out.push(frozen[r]);
    }
    Agglomeration {
        components,
        merges,
        frozen: frozen_out,
    }
}

#[cfg(test)]
mod tests;
