//! The region graph: one edge per pair of touching segments, carrying the sum, the number
//! (contact area, in affinity edges) and the maximum of the affinities between them.
//!
//! The sum and area give the mean affinity that [`crate::agglomeration`] scores by; the
//! maximum is the single-linkage weight the watershed's size-dependent merging uses. All
//! three are additive or max-combinable, so the graph of merged segments is a contraction
//! of the graph of their parts, with no second pass over the voxels.

use rustc_hash::FxHashMap;

use crate::{Affinities, Result, SegError};

/// One edge of a region graph, between node indices `a < b`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionEdge {
    pub a: u32,
    pub b: u32,
    /// Sum of the affinities of the voxel pairs across the contact.
    pub sum: f64,
    /// Number of voxel pairs (affinity edges) across the contact.
    pub area: u64,
    /// Largest affinity across the contact.
    pub max: f32,
}

impl RegionEdge {
    /// Mean affinity across the contact: waterz's "mean affinity" score.
    pub fn mean(&self) -> f64 {
        self.sum / self.area as f64
    }
}

/// Segments (nodes) and their contacts (edges).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RegionGraph {
    /// Segment ID of each node, ascending.
    pub ids: Vec<u64>,
    /// Voxels of each node.
    pub sizes: Vec<u64>,
    /// One edge per touching pair, `a < b`, sorted by `(a, b)`.
    pub edges: Vec<RegionEdge>,
}

impl RegionGraph {
    /// The region graph of a labelled volume (label 0 is background: no node, no edges).
    pub fn from_labels(shape: [usize; 3], labels: &[u64], affs: &Affinities) -> Result<Self> {
        let n = crate::check_indexable(shape)?;
        if labels.len() != n {
            return Err(SegError::Length {
                what: "labels",
                shape,
                want: n,
                got: labels.len(),
            });
        }
        if affs.shape() != shape {
            return Err(SegError::Param(format!(
                "labels have shape {shape:?}, affinities {:?}",
                affs.shape()
            )));
        }
        // Compact the IDs to 1..=K in ascending order, so nodes come out sorted by ID.
        let mut ids: Vec<u64> = {
            let mut seen = rustc_hash::FxHashSet::default();
            let mut last = 0;
            for &l in labels {
                if l != 0 && l != last {
                    seen.insert(l);
                    last = l;
                }
            }
            seen.into_iter().collect()
        };
        ids.sort_unstable();
        let index: FxHashMap<u64, u32> = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i as u32 + 1))
            .collect();
        let mut compact = vec![0u32; n];
        let (mut last, mut last_idx) = (0u64, 0u32);
        for (c, &l) in compact.iter_mut().zip(labels) {
            if l != last {
                last = l;
                last_idx = if l == 0 { 0 } else { index[&l] };
            }
            *c = last_idx;
        }
        let acc = accumulate(shape, &compact, ids.len(), affs);
        let mut edges = acc.edges;
        sort_edges(&mut edges);
        Ok(Self {
            ids,
            sizes: acc.sizes,
            edges,
        })
    }

    /// The node index of a segment ID.
    pub fn node(&self, id: u64) -> Option<u32> {
        self.ids.binary_search(&id).ok().map(|i| i as u32)
    }

    /// The edge between two segment IDs, if they touch.
    pub fn edge(&self, a: u64, b: u64) -> Option<&RegionEdge> {
        let (a, b) = (self.node(a)?, self.node(b)?);
        let key = (a.min(b), a.max(b));
        self.edges
            .binary_search_by(|e| (e.a, e.b).cmp(&key))
            .ok()
            .map(|i| &self.edges[i])
    }
}

/// Sorts edges by `(a, b)`.
pub(crate) fn sort_edges(edges: &mut [RegionEdge]) {
    edges.sort_unstable_by_key(|e| (e.a, e.b));
}

/// What one pass over a labelled volume learns: per node (label − 1) its size and first voxel
/// (raster index), and the edges between nodes (unsorted).
pub(crate) struct Accumulated {
    pub sizes: Vec<u64>,
    pub first: Vec<u64>,
    pub edges: Vec<RegionEdge>,
}

/// Builds region-graph edges incrementally, keyed by node pair.
#[derive(Default)]
pub(crate) struct EdgeMap {
    index: FxHashMap<u64, u32>,
    pub edges: Vec<RegionEdge>,
}

impl EdgeMap {
    /// Adds a contact between nodes `a != b` of total affinity `sum` over `area` edges.
    #[inline]
    pub fn add(&mut self, a: u32, b: u32, sum: f64, area: u64, max: f32) -> u32 {
        let (a, b) = (a.min(b), a.max(b));
        let key = (a as u64) << 32 | b as u64;
        let next = self.edges.len() as u32;
        let i = *self.index.entry(key).or_insert(next);
        if i == next {
            self.edges.push(RegionEdge {
                a,
                b,
                sum,
                area,
                max,
            });
        } else {
            add_to(&mut self.edges[i as usize], sum, area, max);
        }
        i
    }
}

#[inline]
fn add_to(e: &mut RegionEdge, sum: f64, area: u64, max: f32) {
    e.sum += sum;
    e.area += area;
    e.max = e.max.max(max);
}

/// One pass over `labels` (0 = background, else node `label − 1` of `count`): sizes, first
/// voxels and the contacts across each of the three affinity channels.
pub(crate) fn accumulate(
    shape: [usize; 3],
    labels: &[u32],
    count: usize,
    affs: &Affinities,
) -> Accumulated {
    accumulate_at(shape, labels, count, affs, [0; 3])
}

/// [`accumulate`] for labels of a box at `origin` inside the affinities' volume (edges to
/// voxels outside the box are not read).
pub(crate) fn accumulate_at(
    shape: [usize; 3],
    labels: &[u32],
    count: usize,
    affs: &Affinities,
    origin: [usize; 3],
) -> Accumulated {
    let [nz, ny, nx] = shape;
    let ashape = affs.shape();
    let aff_row =
        |z: usize, y: usize| ((origin[0] + z) * ashape[1] + origin[1] + y) * ashape[2] + origin[2];
    let mut sizes = vec![0u64; count];
    let mut first = vec![u64::MAX; count];
    // Sizes by runs along x: segments are long runs, so this touches `sizes` rarely.
    for row in (0..nz * ny).map(|r| r * nx) {
        let cur = &labels[row..row + nx];
        let mut x = 0;
        while x < nx {
            let a = cur[x];
            let mut end = x + 1;
            while end < nx && cur[end] == a {
                end += 1;
            }
            if a != 0 {
                let node = (a - 1) as usize;
                if sizes[node] == 0 {
                    first[node] = (row + x) as u64;
                }
                sizes[node] += (end - x) as u64;
            }
            x = end;
        }
    }
    let mut map = EdgeMap::default();
    let strides = [ny * nx, nx, 1];
    let chans = [affs.channel(0), affs.channel(1), affs.channel(2)];
    // Contacts are rare: compare a voxel row with the row one step back in blocks (a
    // memcmp) and only look closer where a block differs.
    const BLOCK: usize = 32;
    // The map of all pairs outgrows the cache, and contacts of one pair come scattered over
    // a few slices: gather a slab of slices in a small map first, then fold it into the big
    // one once per pair.
    let slab = (1usize << 18).div_ceil((ny * nx).max(1));
    let mut local = EdgeMap::default();
    for z0 in (0..nz).step_by(slab) {
        for z in z0..(z0 + slab).min(nz) {
            for y in 0..ny {
                let row = (z * ny + y) * nx;
                for (c, &stride) in strides.iter().enumerate() {
                    let (start, has) = match c {
                        0 => (row, z > 0),
                        1 => (row, y > 0),
                        _ => (row + 1, nx > 1),
                    };
                    if !has {
                        continue;
                    }
                    let end = row + nx;
                    let cur = &labels[start..end];
                    let prev = &labels[start - stride..end - stride];
                    let a0 = aff_row(z, y) + (start - row);
                    let aff = &chans[c][a0..a0 + (end - start)];
                    let mut last: (u32, u32, u32) = (0, 0, u32::MAX);
                    let mut k = 0;
                    while k < cur.len() {
                        let e = (k + BLOCK).min(cur.len());
                        if cur[k..e] == prev[k..e] {
                            k = e;
                            continue;
                        }
                        for x in k..e {
                            let (a, b) = (cur[x], prev[x]);
                            if a == b || a == 0 || b == 0 {
                                continue;
                            }
                            let v = aff[x];
                            if last.2 != u32::MAX && last.0 == a && last.1 == b {
                                add_to(&mut local.edges[last.2 as usize], v as f64, 1, v);
                            } else {
                                let edge = local.add(a - 1, b - 1, v as f64, 1, v);
                                last = (a, b, edge);
                            }
                        }
                        k = e;
                    }
                }
            }
        }
        for e in local.edges.drain(..) {
            map.add(e.a, e.b, e.sum, e.area, e.max);
        }
        local.index.clear();
    }
    Accumulated {
        sizes,
        first,
        edges: map.edges,
    }
}

/// The edges of a graph after mapping each node through `map` (`u32::MAX` removes it):
/// parallel edges are combined (sums and areas added, maxima taken), self-loops dropped.
pub(crate) fn contract(edges: &[RegionEdge], map: &[u32]) -> Vec<RegionEdge> {
    let mut out = EdgeMap::default();
    for e in edges {
        let (a, b) = (map[e.a as usize], map[e.b as usize]);
        if a != u32::MAX && b != u32::MAX && a != b {
            out.add(a, b, e.sum, e.area, e.max);
        }
    }
    let mut edges = out.edges;
    sort_edges(&mut edges);
    edges
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force: every voxel pair along each channel, straight from the definition.
    fn brute(
        shape: [usize; 3],
        labels: &[u64],
        affs: &Affinities,
    ) -> Vec<(u64, u64, f64, u64, f32)> {
        let [nz, ny, nx] = shape;
        let mut m: std::collections::BTreeMap<(u64, u64), (f64, u64, f32)> = Default::default();
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    let i = (z * ny + y) * nx + x;
                    let nbrs = [
                        (z > 0).then(|| i - ny * nx),
                        (y > 0).then(|| i - nx),
                        (x > 0).then(|| i - 1),
                    ];
                    for (c, j) in nbrs.iter().enumerate() {
                        let Some(j) = *j else { continue };
                        let (a, b) = (labels[i], labels[j]);
                        if a == 0 || b == 0 || a == b {
                            continue;
                        }
                        let v = affs.get(c, z, y, x);
                        let e = m.entry((a.min(b), a.max(b))).or_insert((0.0, 0, f32::MIN));
                        e.0 += v as f64;
                        e.1 += 1;
                        e.2 = e.2.max(v);
                    }
                }
            }
        }
        m.into_iter()
            .map(|((a, b), (s, n, mx))| (a, b, s, n, mx))
            .collect()
    }

    #[test]
    fn hand_made_contacts() {
        // One z plane, 2 × 3:   5 5 9
        //                       5 7 9
        let shape = [1, 2, 3];
        let labels = vec![5, 5, 9, 5, 7, 9];
        let mut data = vec![0f32; 18];
        // x channel (offset 12): (0,1)-(0,2) is 5|9, (1,0)-(1,1) is 5|7, (1,1)-(1,2) is 7|9.
        data[12 + 2] = 0.25;
        data[12 + 4] = 0.5;
        data[12 + 5] = 0.75;
        // y channel (offset 6): (0,1)-(1,1) is 5|7, (0,2)-(1,2) is 9|9.
        data[6 + 4] = 0.125;
        data[6 + 5] = 0.9;
        let affs = Affinities::new(shape, data).unwrap();
        let g = RegionGraph::from_labels(shape, &labels, &affs).unwrap();
        assert_eq!(g.ids, vec![5, 7, 9]);
        assert_eq!(g.sizes, vec![3, 1, 2]);
        assert_eq!(g.edges.len(), 3);
        let e57 = g.edge(7, 5).unwrap();
        assert_eq!((e57.sum, e57.area, e57.max), (0.625, 2, 0.5));
        assert!((e57.mean() - 0.3125).abs() < 1e-12);
        let e59 = g.edge(5, 9).unwrap();
        assert_eq!((e59.sum, e59.area, e59.max), (0.25, 1, 0.25));
        let e79 = g.edge(7, 9).unwrap();
        assert_eq!((e79.sum, e79.area, e79.max), (0.75, 1, 0.75));
        assert!(g.edge(5, 6).is_none());
    }

    #[test]
    fn matches_brute_force_on_random_volumes() {
        let mut rng = crate::rng::SplitMix64::new(3);
        for _ in 0..20 {
            let shape = [
                1 + rng.below(5) as usize,
                1 + rng.below(6) as usize,
                1 + rng.below(7) as usize,
            ];
            let n = crate::voxel_count(shape);
            let labels: Vec<u64> = (0..n).map(|_| rng.below(5) * 1000).collect();
            let affs =
                Affinities::new(shape, (0..3 * n).map(|_| rng.next_f32()).collect()).unwrap();
            let g = RegionGraph::from_labels(shape, &labels, &affs).unwrap();
            let got: Vec<_> = g
                .edges
                .iter()
                .map(|e| {
                    (
                        g.ids[e.a as usize],
                        g.ids[e.b as usize],
                        e.sum,
                        e.area,
                        e.max,
                    )
                })
                .collect();
            let want = brute(shape, &labels, &affs);
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert_eq!((g.0, g.1, g.3, g.4), (w.0, w.1, w.3, w.4));
                assert!((g.2 - w.2).abs() < 1e-9);
            }
            for (id, size) in g.ids.iter().zip(&g.sizes) {
                assert_eq!(*size as usize, labels.iter().filter(|&&l| l == *id).count());
            }
        }
    }

    #[test]
    fn contraction_adds_sums_and_areas_and_keeps_the_max() {
        let edges = vec![
            RegionEdge {
                a: 0,
                b: 2,
                sum: 1.0,
                area: 2,
                max: 0.6,
            },
            RegionEdge {
                a: 1,
                b: 2,
                sum: 0.5,
                area: 1,
                max: 0.5,
            },
            RegionEdge {
                a: 0,
                b: 1,
                sum: 3.0,
                area: 4,
                max: 0.9,
            },
            RegionEdge {
                a: 2,
                b: 3,
                sum: 0.2,
                area: 1,
                max: 0.2,
            },
        ];
        // 0 and 1 become node 0, 2 becomes 1, 3 is removed.
        let out = contract(&edges, &[0, 0, 1, u32::MAX]);
        assert_eq!(
            out,
            vec![RegionEdge {
                a: 0,
                b: 1,
                sum: 1.5,
                area: 3,
                max: 0.6
            }]
        );
    }
}
