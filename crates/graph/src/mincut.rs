//! Minimum s–t cut by push–relabel (highest-label selection with the gap heuristic), on
//! undirected graphs with real-valued capacities. Used by the multicut split.

use std::collections::VecDeque;

/// An undirected graph of `n` vertices for a min cut.
pub struct FlowGraph {
    n: usize,
    // Arc i and i ^ 1 are the two directions of one undirected edge.
    head: Vec<usize>,
    cap: Vec<f64>,
    adj: Vec<Vec<usize>>,
}

impl FlowGraph {
    pub fn new(n: usize) -> FlowGraph {
        FlowGraph {
            n,
            head: Vec::new(),
            cap: Vec::new(),
            adj: vec![Vec::new(); n],
        }
    }

    /// Adds an undirected edge; returns its index.
    pub fn add_edge(&mut self, a: usize, b: usize, capacity: f64) -> usize {
        let id = self.head.len() / 2;
        self.head.push(b);
        self.cap.push(capacity);
        self.adj[a].push(self.head.len() - 1);
        self.head.push(a);
        self.cap.push(capacity);
        self.adj[b].push(self.head.len() - 1);
        id
    }

    /// Computes a minimum cut between `s` and `t`. Returns the flow value and, for every
    /// vertex, whether it lies on the source side (reachable from `s` in the residual graph).
    pub fn min_cut(mut self, s: usize, t: usize) -> (f64, Vec<bool>) {
        let n = self.n;
        let mut excess = vec![0.0f64; n];
        let mut height = vec![0usize; n];
        let mut count = vec![0usize; 2 * n + 1];
        let mut current = vec![0usize; n];
        // Buckets of active vertices by height, for highest-label selection.
        let mut buckets: Vec<Vec<usize>> = vec![Vec::new(); 2 * n + 1];
        let mut in_bucket = vec![false; n];
        let mut highest = 0usize;

        height[s] = n;
        count[0] = n - 1;
        count[n] = 1;
        let s_arcs = self.adj[s].clone();
        for a in s_arcs {
            let c = self.cap[a];
            if c > 0.0 {
                let v = self.head[a];
                self.cap[a] -= c;
                self.cap[a ^ 1] += c;
                excess[v] += c;
                excess[s] -= c;
                if v != t && !in_bucket[v] {
                    buckets[height[v]].push(v);
                    in_bucket[v] = true;
                }
            }
        }
        loop {
            while highest > 0 && buckets[highest].is_empty() {
                highest -= 1;
            }
            let Some(u) = buckets[highest].pop().or_else(|| buckets[0].pop()) else {
                break;
            };
            in_bucket[u] = false;
            // Discharge u.
            while excess[u] > 1e-12 {
                if current[u] == self.adj[u].len() {
                    // Relabel, with the gap heuristic.
                    let old = height[u];
                    let mut best = usize::MAX;
                    for &a in &self.adj[u] {
                        if self.cap[a] > 1e-12 {
                            best = best.min(height[self.head[a]]);
                        }
                    }
                    count[old] -= 1;
                    if best == usize::MAX {
                        height[u] = 2 * n;
                    } else {
                        height[u] = (best + 1).min(2 * n);
                    }
                    count[height[u]] += 1;
                    current[u] = 0;
                    if count[old] == 0 && old < n {
                        for v in 0..n {
                            if height[v] > old && height[v] < n && v != s {
                                count[height[v]] -= 1;
                                height[v] = n + 1;
                                count[n + 1] += 1;
                            }
                        }
                    }
                    if height[u] >= 2 * n {
                        break;
                    }
                    continue;
                }
                let a = self.adj[u][current[u]];
                let v = self.head[a];
                if self.cap[a] > 1e-12 && height[u] == height[v] + 1 {
                    let d = excess[u].min(self.cap[a]);
                    self.cap[a] -= d;
                    self.cap[a ^ 1] += d;
                    excess[u] -= d;
                    excess[v] += d;
                    if v != s && v != t && !in_bucket[v] {
                        buckets[height[v]].push(v);
                        in_bucket[v] = true;
                        highest = highest.max(height[v]);
                    }
                } else {
                    current[u] += 1;
                }
            }
            if excess[u] > 1e-12 && height[u] < 2 * n && !in_bucket[u] {
                buckets[height[u]].push(u);
                in_bucket[u] = true;
            }
            highest = highest.max(height[u].min(2 * n));
        }
        // The source side: vertices reachable from s through arcs with residual capacity.
        let mut side = vec![false; n];
        let mut queue = VecDeque::from([s]);
        side[s] = true;
        while let Some(u) = queue.pop_front() {
            for &a in &self.adj[u] {
                let v = self.head[a];
                if !side[v] && self.cap[a] > 1e-12 {
                    side[v] = true;
                    queue.push_back(v);
                }
            }
        }
        (excess[t], side)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The cut capacity between the two sides, from the original capacities.
    fn cut_value(edges: &[(usize, usize, f64)], side: &[bool]) -> f64 {
        edges
            .iter()
            .filter(|e| side[e.0] != side[e.1])
            .map(|e| e.2)
            .sum()
    }

    /// The minimum over all 2^n partitions, for small graphs.
    fn brute_force(n: usize, edges: &[(usize, usize, f64)], s: usize, t: usize) -> f64 {
        let mut best = f64::INFINITY;
        for mask in 0u32..(1 << n) {
            let side: Vec<bool> = (0..n).map(|v| mask & (1 << v) != 0).collect();
            if side[s] && !side[t] {
                best = best.min(cut_value(edges, &side));
            }
        }
        best
    }

    #[test]
    fn matches_brute_force_on_random_graphs() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..300 {
            let n = rng.random_range(2..10);
            let m = rng.random_range(1..20);
            let edges: Vec<(usize, usize, f64)> = (0..m)
                .map(|_| {
                    (
                        rng.random_range(0..n),
                        rng.random_range(0..n),
                        rng.random_range(0.0..1.0),
                    )
                })
                .filter(|e| e.0 != e.1)
                .collect();
            let (s, t) = (0, n - 1);
            let mut g = FlowGraph::new(n);
            for &(a, b, c) in &edges {
                g.add_edge(a, b, c);
            }
            let (flow, side) = g.min_cut(s, t);
            let want = brute_force(n, &edges, s, t);
            assert!((flow - want).abs() < 1e-9, "flow {flow} want {want}");
            assert!(side[s] && !side[t]);
            assert!((cut_value(&edges, &side) - want).abs() < 1e-9);
        }
    }

    #[test]
    fn cuts_the_weak_link_of_a_chain() {
        let mut g = FlowGraph::new(5);
        for (i, c) in [0.9, 0.8, 0.1, 0.7].iter().enumerate() {
            g.add_edge(i, i + 1, *c);
        }
        let (flow, side) = g.min_cut(0, 4);
        assert!((flow - 0.1).abs() < 1e-12);
        assert_eq!(side, vec![true, true, true, false, false]);
    }

    #[test]
    fn large_grid_is_fast_and_exact() {
        // A 60×60 grid with a weak column in the middle.
        let w = 60;
        let mut g = FlowGraph::new(w * w + 2);
        let id = |x: usize, y: usize| y * w + x;
        let mut edges = Vec::new();
        for y in 0..w {
            for x in 0..w {
                if x + 1 < w {
                    let c = if x == w / 2 { 0.01 } else { 1.0 };
                    edges.push((id(x, y), id(x + 1, y), c));
                }
                if y + 1 < w {
                    edges.push((id(x, y), id(x, y + 1), 1.0));
                }
            }
        }
        let (s, t) = (w * w, w * w + 1);
        for &(a, b, c) in &edges {
            g.add_edge(a, b, c);
        }
        for y in 0..w {
            g.add_edge(s, id(0, y), 1e9);
            g.add_edge(t, id(w - 1, y), 1e9);
        }
        let (flow, side) = g.min_cut(s, t);
        assert!((flow - 0.01 * w as f64).abs() < 1e-6, "{flow}");
        assert!(side[id(w / 2, 3)] && !side[id(w / 2 + 1, 3)]);
    }
}
