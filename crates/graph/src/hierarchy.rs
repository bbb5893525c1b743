//! Builds the layer hierarchy of a ChunkedGraph in memory, from supervoxels and their active
//! edges. It is the reference the chunked, storage-backed ingest is checked against, and it
//! ingests small graphs directly.
//!
//! Layer 2 holds the connected components of active edges inside one chunk. An active edge
//! between chunks a and b becomes internal at the first layer whose chunk holds both: layer
//! `2 + k` for the smallest k with `a >> k == b >> k` in every dimension. A node gets its parent
//! at the lowest layer where it still has such an edge (a skip connection), or at the root
//! layer if it has none, so there are no chains of single-child nodes.

use std::collections::HashMap;

/// Chunk coordinates at some layer.
pub type ChunkCoord = [u32; 3];

/// One node built by [`build`]. Children are indices into [`Hierarchy::nodes`]; layer-2 nodes
/// list supervoxels (indices into the input) instead.
#[derive(Clone, Debug)]
pub struct Node {
    pub layer: u8,
    pub chunk: ChunkCoord,
    pub children: Vec<usize>,
    pub parent: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct Hierarchy {
    pub n_layers: u8,
    pub nodes: Vec<Node>,
    /// The layer-2 node of each supervoxel.
    pub l2_of: Vec<usize>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HierarchyError {
    #[error("edge {0} names supervoxel {1}, but there are only {2}")]
    UnknownSupervoxel(usize, usize, usize),
    #[error(
        "edge between chunks {0:?} and {1:?} only meets at layer {2}, above the root layer {3}"
    )]
    TooFewLayers(ChunkCoord, ChunkCoord, u8, u8),
}

/// The layer at which chunks `a` and `b` (supervoxel-layer coordinates) share a chunk.
pub fn meeting_layer(a: ChunkCoord, b: ChunkCoord) -> u8 {
    let mut k = 0u8;
    while (0..3).any(|d| (a[d] >> k) != (b[d] >> k)) {
        k += 1;
    }
    2 + k
}

fn chunk_at(layer: u8, c: ChunkCoord) -> ChunkCoord {
    let s = u32::from(layer.saturating_sub(2));
    [c[0] >> s, c[1] >> s, c[2] >> s]
}

struct Dsu {
    parent: Vec<usize>,
}

impl Dsu {
    fn new(n: usize) -> Dsu {
        Dsu {
            parent: (0..n).collect(),
        }
    }
    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }
    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            self.parent[a.max(b)] = a.min(b);
        }
    }
}

/// Builds the hierarchy. `chunks[i]` is supervoxel i's chunk; `active` lists the active edges
/// as pairs of supervoxel indices. The root layer is `n_layers`.
pub fn build(
    chunks: &[ChunkCoord],
    active: &[(usize, usize)],
    n_layers: u8,
) -> Result<Hierarchy, HierarchyError> {
    let n = chunks.len();
    // Edge lists split by the layer at which each edge becomes internal.
    let mut in_chunk = Vec::new();
    let mut cross: Vec<(u8, usize, usize)> = Vec::new();
    for (i, &(a, b)) in active.iter().enumerate() {
        for v in [a, b] {
            if v >= n {
                return Err(HierarchyError::UnknownSupervoxel(i, v, n));
            }
        }
        let layer = meeting_layer(chunks[a], chunks[b]);
        if layer == 2 {
            in_chunk.push((a, b));
        } else if layer > n_layers {
            return Err(HierarchyError::TooFewLayers(
                chunks[a], chunks[b], layer, n_layers,
            ));
        } else {
            cross.push((layer, a, b));
        }
    }

    // Layer 2: components of in-chunk edges.
    let mut dsu = Dsu::new(n);
    for &(a, b) in &in_chunk {
        dsu.union(a, b);
    }
    let mut nodes: Vec<Node> = Vec::new();
    let mut l2_of = vec![usize::MAX; n];
    let mut by_rep: HashMap<usize, usize> = HashMap::new();
    for sv in 0..n {
        let rep = dsu.find(sv);
        let node = *by_rep.entry(rep).or_insert_with(|| {
            nodes.push(Node {
                layer: 2,
                chunk: chunks[sv],
                children: Vec::new(),
                parent: None,
            });
            nodes.len() - 1
        });
        nodes[node].children.push(sv);
        l2_of[sv] = node;
    }

    // The topmost node built so far for each supervoxel, and each node's cross edges.
    let mut top: Vec<usize> = l2_of.clone();
    let mut node_cross: Vec<Vec<(u8, usize, usize)>> = vec![Vec::new(); nodes.len()];
    for &(layer, a, b) in &cross {
        node_cross[l2_of[a]].push((layer, a, b));
        node_cross[l2_of[b]].push((layer, b, a));
    }
    let parent_layer = |edges: &[(u8, usize, usize)], above: u8| {
        edges
            .iter()
            .map(|e| e.0)
            .filter(|&l| l > above)
            .min()
            .unwrap_or(n_layers)
    };
    let mut waiting: Vec<usize> = (0..nodes.len()).collect();

    for layer in 3..=n_layers {
        // Nodes whose parent belongs at this layer, grouped by their chunk at this layer.
        let (here, later): (Vec<usize>, Vec<usize>) = waiting
            .iter()
            .partition(|&&v| parent_layer(&node_cross[v], nodes[v].layer) == layer);
        waiting = later;
        if here.is_empty() {
            continue;
        }
        let index: HashMap<usize, usize> = here.iter().enumerate().map(|(i, &v)| (v, i)).collect();
        let mut dsu = Dsu::new(here.len());
        for (i, &v) in here.iter().enumerate() {
            for &(l, _, other_sv) in &node_cross[v] {
                if l == layer {
                    if let Some(&j) = index.get(&top[other_sv]) {
                        dsu.union(i, j);
                    }
                }
            }
        }
        let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
        for (i, &v) in here.iter().enumerate() {
            groups.entry(dsu.find(i)).or_default().push(v);
        }
        let mut groups: Vec<Vec<usize>> = groups.into_values().collect();
        groups.sort_unstable();
        for children in groups {
            let chunk = chunk_at(layer, nodes[children[0]].chunk_at_l2(&nodes));
            let id = nodes.len();
            let mut edges = Vec::new();
            for &c in &children {
                nodes[c].parent = Some(id);
                edges.extend(node_cross[c].iter().copied().filter(|e| e.0 > layer));
            }
            nodes.push(Node {
                layer,
                chunk,
                children,
                parent: None,
            });
            node_cross.push(edges);
            if layer < n_layers {
                waiting.push(id);
            }
        }
        // Re-point supervoxels at their new top nodes.
        for sv in 0..n {
            while let Some(p) = nodes[top[sv]].parent {
                top[sv] = p;
            }
        }
    }
    Ok(Hierarchy {
        n_layers,
        nodes,
        l2_of,
    })
}

impl Node {
    /// The supervoxel-layer chunk of any descendant: layer-L chunks are shifts of it.
    fn chunk_at_l2(&self, nodes: &[Node]) -> ChunkCoord {
        let mut n = self;
        while n.layer > 2 {
            n = &nodes[n.children[0]];
        }
        n.chunk
    }
}

impl Hierarchy {
    /// The root of a supervoxel.
    pub fn root_of(&self, sv: usize) -> usize {
        let mut n = self.l2_of[sv];
        while let Some(p) = self.nodes[n].parent {
            n = p;
        }
        n
    }

    pub fn roots(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].parent.is_none())
    }

    /// Supervoxels under a node.
    pub fn leaves(&self, node: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut stack = vec![node];
        while let Some(v) = stack.pop() {
            if self.nodes[v].layer == 2 {
                out.extend(&self.nodes[v].children);
            } else {
                stack.extend(&self.nodes[v].children);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{generate, Params, SyntheticGraph};

    #[test]
    fn meeting_layers() {
        assert_eq!(meeting_layer([0, 0, 0], [0, 0, 0]), 2);
        assert_eq!(meeting_layer([0, 0, 0], [1, 0, 0]), 3);
        assert_eq!(meeting_layer([1, 0, 0], [2, 0, 0]), 4);
        assert_eq!(meeting_layer([3, 3, 3], [4, 3, 3]), 5);
    }

    #[test]
    fn skip_connections_and_single_root_layer() {
        // Four supervoxels in chunks along x: 0-1 joined inside chunk 0, 1-2 across chunks
        // 0 and 1 (layer 3), 3 alone in chunk 3.
        let chunks = [[0, 0, 0], [0, 0, 0], [1, 0, 0], [3, 0, 0]];
        let h = build(&chunks, &[(0, 1), (1, 2)], 5).expect("build");
        let r0 = h.root_of(0);
        assert_eq!(r0, h.root_of(2));
        assert_ne!(r0, h.root_of(3));
        for r in h.roots() {
            assert_eq!(h.nodes[r].layer, 5, "every root sits at the root layer");
        }
        // The loner skips straight from layer 2 to the root layer.
        let l2 = h.l2_of[3];
        let p = h.nodes[l2].parent.expect("parent");
        assert_eq!(h.nodes[p].layer, 5);
        // The joined pair meets at layer 3, then skips to the root.
        let l3 = h.nodes[h.l2_of[0]].parent.expect("parent");
        assert_eq!(h.nodes[l3].layer, 3);
        assert_eq!(h.nodes[l3].parent, Some(r0));
        assert!(h
            .nodes
            .iter()
            .all(|n| n.layer == 2 || n.children.len() > 1 || n.parent.is_none()));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            build(&[[0, 0, 0]], &[(0, 5)], 4).unwrap_err(),
            HierarchyError::UnknownSupervoxel(0, 5, 1)
        );
        assert!(matches!(
            build(&[[0, 0, 0], [4, 0, 0]], &[(0, 1)], 4),
            Err(HierarchyError::TooFewLayers(..))
        ));
    }

    /// The property the ingest must hold: roots are the connected components of the active
    /// edges, computed here by an independent union-find, and leaves partition the supervoxels.
    #[test]
    fn roots_are_connected_components() {
        for seed in 0..4 {
            let mut p = Params::with_supervoxels(seed, 5_000);
            p.chunks = [4, 3, 2];
            let g = generate(&p);
            let chunks: Vec<ChunkCoord> = g.supervoxels.iter().map(|s| s.chunk).collect();
            let active: Vec<(usize, usize)> = g
                .edges
                .iter()
                .filter(|e| SyntheticGraph::is_active(e))
                .map(|e| (e.a, e.b))
                .collect();
            let h = build(&chunks, &active, 4).expect("build");

            let mut dsu = Dsu::new(chunks.len());
            for &(a, b) in &active {
                dsu.union(a, b);
            }
            let mut root_of_component: HashMap<usize, usize> = HashMap::new();
            for sv in 0..chunks.len() {
                let root = h.root_of(sv);
                let comp = dsu.find(sv);
                assert_eq!(
                    *root_of_component.entry(comp).or_insert(root),
                    root,
                    "seed {seed}: sv {sv}"
                );
            }
            let roots: Vec<usize> = h.roots().collect();
            assert_eq!(roots.len(), root_of_component.len());
            let mut seen = vec![false; chunks.len()];
            for r in roots {
                for sv in h.leaves(r) {
                    assert!(!seen[sv], "supervoxel {sv} under two roots");
                    seen[sv] = true;
                }
            }
            assert!(seen.iter().all(|&s| s));
            // Every node's chunk contains its children's chunks.
            for node in &h.nodes {
                if node.layer > 2 {
                    for &c in &node.children {
                        let child = &h.nodes[c];
                        assert_eq!(
                            chunk_at(node.layer, child.chunk_at_l2(&h.nodes)),
                            node.chunk
                        );
                    }
                }
            }
        }
    }
}
