//! Watershed on an affinity graph, after Zlateski & Seung (2015), "Image segmentation by
//! size-dependent single linkage clustering of a watershed basin graph".
//!
//! 1. **Steepest ascent.** Each voxel keeps the edges of its largest affinity `m`, plus every
//!    edge of affinity `≥ T_high`; a voxel with `m < T_low` keeps nothing and becomes
//!    background (label 0). So edges `≥ T_high` always connect (both ends keep them) and
//!    edges `< T_low` never do.
//! 2. **Plateaus.** Edges kept by both ends form plateaus. A plateau voxel with a one-way edge
//!    out of the plateau is an exit; a breadth-first search from all exits (in raster order)
//!    hands every plateau voxel to its nearest exit, which divides the plateau evenly. A
//!    plateau without an exit is a maximum: it becomes (the seed of) one basin.
//! 3. **Basins.** Every voxel now points to one neighbour, and pointers climb to a maximum;
//!    the voxels reaching one maximum form a basin.
//! 4. **Size-dependent single linkage.** The basin graph weighs each contact by its largest
//!    affinity. Edges are visited from the largest weight down; an edge joins its two
//!    segments if either is smaller than the size threshold for its weight: `T_size` for
//!    weights `≥ T_merge`, `T_dust` for weights in `[T_low, T_merge)`.
//! 5. **Dust.** Segments still smaller than `T_dust` have no edge `≥ T_low` left to join
//!    through; they are removed (label 0).
//!
//! Ties are broken by a global order: edges of equal weight by the raster index of their
//! basins' first voxels, plateau voxels by raster order. Supervoxels are numbered `1..=K` in
//! raster order of their first voxel.
//!
//! `T_low = 0` (the default) gives every voxel a basin. Affinities derived from a boundary
//! map are exactly 0 all around a saturated membrane voxel (14% of gala's voxels); with
//! `T_low > 0` those become background, and label 0 then counts as one segment spanning
//! every neuron it touches: waterz's defaults (`T_low = 0.0001`) lose ARAND 0.16 on gala
//! that way, against 0.02–0.03 when every voxel is kept.

use crate::affinity::Box3;
use crate::region_graph::{accumulate, contract, RegionEdge, RegionGraph};
use crate::unionfind::UnionFind;
use crate::{voxel_count, Affinities, Result, SegError};

/// Thresholds of the watershed (see the module documentation for their roles).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WatershedParams {
    /// Edges below this never connect; voxels with no edge at or above it are background.
    pub t_low: f32,
    /// Edges at or above this always connect.
    pub t_high: f32,
    /// Edges at or above this join segments smaller than `t_size`.
    pub t_merge: f32,
    pub t_size: u64,
    /// Segments smaller than this join along any edge `≥ t_low`, or are removed.
    pub t_dust: u64,
}

impl Default for WatershedParams {
    /// Tuned on the gala fixture (affinities from its boundary map) for the best adapted
    /// Rand error after mean-affinity agglomeration (ARAND 0.018 at threshold 0.05), by the
    /// `bench` example's `--sweep`. Tuned and scored on the same volume: expect to re-tune
    /// for other data.
    fn default() -> Self {
        Self {
            t_low: 0.0,
            t_high: 0.9,
            t_merge: 0.3,
            t_size: 250,
            t_dust: 100,
        }
    }
}

impl WatershedParams {
    pub(crate) fn check(&self) -> Result<()> {
        let ok = |v: f32| v.is_finite();
        if !(ok(self.t_low) && ok(self.t_high) && ok(self.t_merge)) {
            return Err(SegError::Param(format!(
                "thresholds must be finite: {self:?}"
            )));
        }
        if self.t_low > self.t_high {
            return Err(SegError::Param(format!(
                "t_low {} is above t_high {}",
                self.t_low, self.t_high
            )));
        }
        Ok(())
    }

    /// The size below which a segment joins along an edge of weight `w` (`w ≥ t_low`).
    fn size_limit(&self, w: f32) -> u64 {
        if w >= self.t_merge {
            self.t_size.max(self.t_dust)
        } else {
            self.t_dust
        }
    }
}

/// Watershed basins before any merging: labels `1..=count`, 0 for background.
#[derive(Debug, Clone, PartialEq)]
pub struct Basins {
    pub shape: [usize; 3],
    pub labels: Vec<u32>,
    pub count: u32,
}

/// Supervoxels of a whole volume and their region graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Segmentation {
    pub shape: [usize; 3],
    /// Supervoxel of each voxel, C order (z, y, x): `1..=K` in raster order of first voxel,
    /// 0 for background and dust.
    pub labels: Vec<u64>,
    /// Region graph of the supervoxels: node `i` is supervoxel `i + 1`.
    pub graph: RegionGraph,
}

/// One chunk's share of a chunked watershed (see the crate documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkSegmentation {
    pub core: Box3,
    /// The box that was computed: `core` grown by the ghost margin, clipped to the volume.
    pub cut: Box3,
    /// Labels of the core box, C order. An unfrozen segment holds exactly the basins its
    /// whole-volume segment holds (a parent may still attach frozen voxels to it) and is
    /// named by its first voxel's global raster index + 1; a frozen one has [`FROZEN_BIT`]
    /// set and a chunk-local number; 0 is background or dust, as in the whole volume.
    pub labels: Vec<u64>,
    /// Region graph of all segments of the cut-out, IDs as in `labels`.
    pub graph: RegionGraph,
    /// Per graph node: whether the segment is frozen (its extent or size depends on voxels
    /// outside the cut-out, so a parent must decide it).
    pub frozen: Vec<bool>,
}

/// Marks chunk-local IDs of frozen segments.
pub const FROZEN_BIT: u64 = 1 << 63;

// Directions: 0..3 step back along z, y, x; 3..6 step forward. Bit d of a voxel's steepest-
// ascent byte says it keeps its edge in direction d.
pub(crate) const fn opposite(d: usize) -> usize {
    (d + 3) % 6
}

pub(crate) fn offsets(shape: [usize; 3]) -> [isize; 6] {
    let [_, ny, nx] = shape;
    let (sz, sy) = ((ny * nx) as isize, nx as isize);
    [-sz, -sy, -1, sz, sy, 1]
}

/// Parent codes: 0..6 is the direction of the voxel this one flows to.
pub(crate) const UNRESOLVED: u8 = 6;
pub(crate) const NONE: u8 = 7;

/// Step 1: the steepest-ascent byte of every voxel.
pub(crate) fn steepest_ascent(affs: &Affinities, t_low: f32, t_high: f32) -> Vec<u8> {
    let shape = affs.shape();
    let [nz, ny, nx] = shape;
    let n = voxel_count(shape);
    let (az, ay, ax) = (affs.channel(0), affs.channel(1), affs.channel(2));
    let sxy = ny * nx;
    let mut bits = vec![0u8; n];
    if n == 0 {
        return bits;
    }
    // Missing neighbours read as -inf, which is never kept; rows are processed without
    // branches so the loop vectorizes.
    let none = vec![f32::NEG_INFINITY; nx];
    let mut xm = vec![f32::NEG_INFINITY; nx];
    let mut xp = vec![f32::NEG_INFINITY; nx];
    for z in 0..nz {
        for y in 0..ny {
            let row = (z * ny + y) * nx;
            let zm = if z > 0 { &az[row..row + nx] } else { &none[..] };
            let zp = if z + 1 < nz {
                &az[row + sxy..row + sxy + nx]
            } else {
                &none[..]
            };
            let ym = if y > 0 { &ay[row..row + nx] } else { &none[..] };
            let yp = if y + 1 < ny {
                &ay[row + nx..row + 2 * nx]
            } else {
                &none[..]
            };
            xm[1..].copy_from_slice(&ax[row + 1..row + nx]);
            xp[..nx - 1].copy_from_slice(&ax[row + 1..row + nx]);
            let out = &mut bits[row..row + nx];
            for x in 0..nx {
                let e = [zm[x], ym[x], xm[x], zp[x], yp[x], xp[x]];
                // f32::max ignores NaN, so a NaN affinity is never kept.
                let m = e[0].max(e[1]).max(e[2]).max(e[3]).max(e[4]).max(e[5]);
                let mut b = 0u8;
                for (d, &v) in e.iter().enumerate() {
                    b |= (((v == m) | (v >= t_high)) as u8) << d;
                }
                out[x] = if m >= t_low { b } else { 0 };
            }
        }
    }
    bits
}

/// The edges each voxel keeps that the neighbour keeps too (plateau edges), as a byte like
/// the steepest-ascent byte.
pub(crate) fn kept_both_ways(shape: [usize; 3], bits: &[u8]) -> Vec<u8> {
    let [nz, ny, nx] = shape;
    let sxy = ny * nx;
    let mut both = vec![0u8; bits.len()];
    let zero = vec![0u8; nx];
    for z in 0..nz {
        for y in 0..ny {
            let row = (z * ny + y) * nx;
            let cur = &bits[row..row + nx];
            let zm = if z > 0 {
                &bits[row - sxy..row - sxy + nx]
            } else {
                &zero[..]
            };
            let zp = if z + 1 < nz {
                &bits[row + sxy..row + sxy + nx]
            } else {
                &zero[..]
            };
            let ym = if y > 0 {
                &bits[row - nx..row]
            } else {
                &zero[..]
            };
            let yp = if y + 1 < ny {
                &bits[row + nx..row + 2 * nx]
            } else {
                &zero[..]
            };
            let out = &mut both[row..row + nx];
            for x in 0..nx {
                // Bit d of the neighbour in direction d must hold its edge back: opposite(d).
                let xm = if x > 0 { cur[x - 1] } else { 0 };
                let xp = if x + 1 < nx { cur[x + 1] } else { 0 };
                let back = (zm[x] >> 3 & 1) | (ym[x] >> 4 & 1) << 1 | (xm >> 5 & 1) << 2;
                let fwd = (zp[x] & 1) << 3 | (yp[x] >> 1 & 1) << 4 | (xp >> 2 & 1) << 5;
                out[x] = cur[x] & (back | fwd);
            }
        }
    }
    both
}

/// Step 2: every voxel's parent direction; plateau voxels go to their nearest exit.
/// Consumes the steepest-ascent bytes (the parent codes take their place). With `levels`,
/// records the distance to its exit of each voxel the search reaches (exits, at 0, are not
/// recorded).
pub(crate) fn divide_plateaus(
    shape: [usize; 3],
    mut bits: Vec<u8>,
    both: &[u8],
    mut levels: Option<&mut rustc_hash::FxHashMap<u32, u32>>,
) -> Vec<u8> {
    let off = offsets(shape);
    let mut queue: Vec<u32> = Vec::new();
    for (i, (b, &p)) in bits.iter_mut().zip(both).enumerate() {
        if *b == 0 {
            *b = NONE;
            continue;
        }
        // The first edge kept one way only is the exit; without one the voxel waits for
        // the breadth-first search (or is part of a maximum).
        let one_way = *b & !p;
        *b = if one_way != 0 {
            if p != 0 {
                queue.push(i as u32);
            }
            one_way.trailing_zeros() as u8
        } else {
            UNRESOLVED
        };
    }
    let parent = &mut bits;
    let mut head = 0;
    // The queue holds one distance after the other: `level` is queue[head]'s.
    let (mut level, mut level_end) = (0u32, queue.len());
    while head < queue.len() {
        if head == level_end {
            level += 1;
            level_end = queue.len();
        }
        let i = queue[head] as usize;
        head += 1;
        let mut p = both[i];
        while p != 0 {
            let d = p.trailing_zeros() as usize;
            p &= p - 1;
            let j = (i as isize + off[d]) as usize;
            if parent[j] == UNRESOLVED {
                parent[j] = opposite(d) as u8;
                if let Some(l) = levels.as_deref_mut() {
                    l.insert(j as u32, level + 1);
                }
                queue.push(j as u32);
            }
        }
    }
    bits
}

/// Marks a finished label in [`label_basins`]' working array (otherwise a voxel index).
const DONE: u32 = 1 << 31;

/// Step 3: basin labels `1..=count` (0 = background).
///
/// Two raster passes over one `u32` per voxel, which first holds pointers: a voxel that
/// flows somewhere points to that neighbour; maximum-plateau voxels are joined into trees by
/// union-find over their backward plateau edges (a cache-friendly connected-components
/// pass, instead of flooding plateaus that can span whole cells). The second pass follows
/// pointers to a plateau root, numbers roots as they are reached and writes the labels back
/// along the way.
fn label_basins(shape: [usize; 3], both: &[u8], parent: &[u8]) -> (Vec<u32>, u32) {
    let n = both.len();
    let off = offsets(shape);
    let mut uf = vec![0u32; n];
    fn find(uf: &mut [u32], mut x: u32) -> u32 {
        while uf[x as usize] != x {
            let grand = uf[uf[x as usize] as usize];
            uf[x as usize] = grand;
            x = grand;
        }
        x
    }
    for i in 0..n {
        match parent[i] {
            NONE => uf[i] = DONE,
            UNRESOLVED => {
                uf[i] = i as u32;
                // Backward plateau edges only: the forward ones are seen from the other end.
                let mut e = both[i] & 0b111;
                while e != 0 {
                    let d = e.trailing_zeros() as usize;
                    e &= e - 1;
                    let j = (i as isize + off[d]) as u32;
                    let (ri, rj) = (find(&mut uf, i as u32), find(&mut uf, j));
                    if ri != rj {
                        let (lo, hi) = (ri.min(rj), ri.max(rj));
                        uf[hi as usize] = lo;
                    }
                }
            }
            d => uf[i] = (i as isize + off[d as usize]) as u32,
        }
    }
    let mut count = 0u32;
    let mut path: Vec<u32> = Vec::new();
    for i in 0..n {
        if uf[i] & DONE != 0 {
            continue;
        }
        path.clear();
        let mut x = i as u32;
        let label = loop {
            let v = uf[x as usize];
            if v & DONE != 0 {
                break v & !DONE;
            }
            if v == x {
                count += 1;
                break count;
            }
            path.push(x);
            x = v;
        };
        uf[x as usize] = DONE | label;
        for &v in &path {
            uf[v as usize] = DONE | label;
        }
    }
    for v in uf.iter_mut() {
        *v &= !DONE;
    }
    (uf, count)
}

/// Steps 1–3 on one volume: basin labels, their count, and the plateau-edge bytes.
fn basins_with_plateaus(affs: &Affinities, t_low: f32, t_high: f32) -> (Vec<u32>, u32, Vec<u8>) {
    let shape = affs.shape();
    let bits = steepest_ascent(affs, t_low, t_high);
    let both = kept_both_ways(shape, &bits);
    let parent = divide_plateaus(shape, bits, &both, None);
    let (labels, count) = label_basins(shape, &both, &parent);
    (labels, count, both)
}

/// Steps 1–3: the watershed basins of an affinity graph.
pub fn basins(affs: &Affinities, t_low: f32, t_high: f32) -> Result<Basins> {
    let shape = affs.shape();
    crate::check_indexable(shape)?;
    WatershedParams {
        t_low,
        t_high,
        ..Default::default()
    }
    .check()?;
    let (labels, count, _) = basins_with_plateaus(affs, t_low, t_high);
    Ok(Basins {
        shape,
        labels,
        count,
    })
}

/// What size-dependent merging decided, per basin (node of the basin graph).
pub(crate) struct SizeMerge {
    /// Root of each basin's segment.
    pub(crate) root: Vec<u32>,
    /// Per root: voxels, and whether frozen.
    pub(crate) size: Vec<u64>,
    pub(crate) frozen: Vec<bool>,
}

impl SizeMerge {
    pub(crate) fn removed(&self, root: u32, params: &WatershedParams) -> bool {
        !self.frozen[root as usize] && self.size[root as usize] < params.t_dust
    }
}

/// Steps 4 and 5 on a basin graph. `keys` orders equal-weight edges (global first voxels);
/// `frozen` marks basins whose fate depends on voxels not seen (chunk mode).
pub(crate) fn size_merge(
    sizes: &[u64],
    keys: &[u64],
    edges: &[RegionEdge],
    params: &WatershedParams,
    mut frozen: Vec<bool>,
) -> SizeMerge {
    let nodes = sizes.len();
    // Sort keys computed once (largest weight first, then the basins' first voxels), so the
    // sort compares plain integers instead of looking keys up at random.
    let mut sorted: Vec<(u32, u64, u64, u32)> = edges
        .iter()
        .enumerate()
        .filter(|(_, e)| e.max >= params.t_low)
        .map(|(i, e)| {
            // The bits of an f32 ordered as `total_cmp` orders the values, then reversed.
            let t = e.max.to_bits();
            let ordered = if t >> 31 == 1 { !t } else { t | 1 << 31 };
            let (ka, kb) = (keys[e.a as usize], keys[e.b as usize]);
            (!ordered, ka.min(kb), ka.max(kb), i as u32)
        })
        .collect();
    sorted.sort_unstable();
    let order: Vec<u32> = sorted.iter().map(|s| s.3).collect();
    drop(sorted);
    let mut uf = UnionFind::new(nodes);
    let mut size = sizes.to_vec();
    let any_frozen = frozen.iter().any(|&f| f);
    let mut start = 0;
    while start < order.len() {
        let w = edges[order[start] as usize].max;
        let mut end = start + 1;
        while end < order.len() && edges[order[end] as usize].max == w {
            end += 1;
        }
        let group = &order[start..end];
        let limit = params.size_limit(w);
        if any_frozen {
            // Meeting a frozen segment (whose true extent is not known here) decides the
            // fate of a segment smaller than the limit: it joins, or not, depending on the
            // unknown. A segment at or above the limit stays open: it only ever merges
            // because of the other side's size (later limits are no larger), so which
            // unfrozen basins it holds is still exact; the frozen side's fate is the
            // parent's to decide. Within one weight the global order of the edges is not
            // known here, so freezing spreads through the whole group first, judged by the
            // sizes at the group's start (sizes only grow: that errs towards freezing).
            loop {
                let mut changed = false;
                for &e in group {
                    let e = &edges[e as usize];
                    let (ra, rb) = (uf.find(e.a), uf.find(e.b));
                    let (fa, fb) = (frozen[ra as usize], frozen[rb as usize]);
                    if ra != rb && fa != fb {
                        let open = if fa { rb } else { ra };
                        if size[open as usize] < limit {
                            frozen[open as usize] = true;
                            changed = true;
                        }
                    }
                }
                if !changed {
                    break;
                }
            }
        }
        for &e in group {
            let e = &edges[e as usize];
            let (ra, rb) = (uf.find(e.a), uf.find(e.b));
            if ra == rb || frozen[ra as usize] || frozen[rb as usize] {
                continue;
            }
            let (sa, sb) = (size[ra as usize], size[rb as usize]);
            if sa < limit || sb < limit {
                let (child, into) = if sa < sb { (ra, rb) } else { (rb, ra) };
                uf.link(child, into);
                size[into as usize] = sa + sb;
            }
        }
        start = end;
    }
    let root = (0..nodes as u32).map(|b| uf.find(b)).collect();
    SizeMerge { root, size, frozen }
}

/// The whole pipeline on a whole volume: basins, size-dependent single linkage, dust
/// removal; supervoxels numbered in raster order, with their region graph.
pub fn watershed(affs: &Affinities, params: &WatershedParams) -> Result<Segmentation> {
    params.check()?;
    let shape = affs.shape();
    let b = basins(affs, params.t_low, params.t_high)?;
    let acc = accumulate(shape, &b.labels, b.count as usize, affs);
    let merged = size_merge(
        &acc.sizes,
        &acc.first,
        &acc.edges,
        params,
        vec![false; b.count as usize],
    );
    // Number kept segments by their first voxel: the smallest first voxel of their basins.
    let nodes = b.count as usize;
    let mut seg_first = vec![u64::MAX; nodes];
    for basin in 0..nodes {
        let r = merged.root[basin] as usize;
        seg_first[r] = seg_first[r].min(acc.first[basin]);
    }
    let mut kept: Vec<u32> = (0..nodes as u32)
        .filter(|&r| merged.root[r as usize] == r && !merged.removed(r, params))
        .collect();
    kept.sort_unstable_by_key(|&r| seg_first[r as usize]);
    let mut number = vec![u32::MAX; nodes];
    for (i, &r) in kept.iter().enumerate() {
        number[r as usize] = i as u32;
    }
    // Basin → supervoxel node (u32::MAX: removed).
    let basin_node: Vec<u32> = (0..nodes)
        .map(|basin| number[merged.root[basin] as usize])
        .collect();
    let mut lut = vec![0u64; nodes + 1];
    for (basin, &node) in basin_node.iter().enumerate() {
        lut[basin + 1] = if node == u32::MAX { 0 } else { node as u64 + 1 };
    }
    let labels: Vec<u64> = b.labels.iter().map(|&l| lut[l as usize]).collect();
    drop(b);
    let edges = contract(&acc.edges, &basin_node);
    let graph = RegionGraph {
        ids: (1..=kept.len() as u64).collect(),
        sizes: kept.iter().map(|&r| merged.size[r as usize]).collect(),
        edges,
    };
    Ok(Segmentation {
        shape,
        labels,
        graph,
    })
}

/// The watershed of one chunk: `core` grown by `ghost` voxels (clipped to the volume) is cut
/// out and segmented; segments that might differ from the whole-volume result are frozen.
/// Unfrozen segments in the core are exactly whole-volume segments (see the crate docs).
pub fn watershed_chunk(
    affs: &Affinities,
    core: Box3,
    ghost: usize,
    params: &WatershedParams,
) -> Result<ChunkSegmentation> {
    params.check()?;
    let shape = affs.shape();
    core.check(shape)?;
    let cut = core.grown(ghost, shape);
    crate::check_indexable(cut.shape())?;
    let local = affs.crop(&cut)?;
    let lshape = cut.shape();
    let n = voxel_count(lshape);
    let (mut labels, mut count, both) = basins_with_plateaus(&local, params.t_low, params.t_high);
    let off = offsets(lshape);
    let [lz, ly, lx] = lshape;

    // A voxel on a face where the cut-out ends inside the volume lacks its outside edge, so
    // it may keep edges it would not keep in the whole volume. Its neighbours' own choices
    // are right, and an edge kept both ways in the whole volume is kept both ways here too
    // (dropping an edge only lowers a voxel's maximum); but an edge may look kept both ways
    // here when it is not, making a false plateau. So the face voxels and every voxel
    // joined to them by edges kept both ways (their whole plateaus, whose division depends
    // on all of them) are uncertain; every other voxel flows where it flows in the whole
    // volume.
    let cut_low = [0, 1, 2].map(|a| cut.start[a] > 0);
    let cut_high = [0, 1, 2].map(|a| cut.stop[a] < shape[a]);
    let mut uncertain = vec![false; n];
    let mut queue: Vec<u32> = Vec::new();
    for z in 0..lz {
        for y in 0..ly {
            for x in 0..lx {
                let c = [z, y, x];
                let on_face = (0..3)
                    .any(|a| (cut_low[a] && c[a] == 0) || (cut_high[a] && c[a] + 1 == lshape[a]));
                if on_face {
                    let i = (z * ly + y) * lx + x;
                    uncertain[i] = true;
                    queue.push(i as u32);
                    // A face voxel may be background only for want of its outside edge:
                    // make it a (frozen) basin of its own instead.
                    if labels[i] == 0 {
                        count += 1;
                        labels[i] = count;
                    }
                }
            }
        }
    }
    while let Some(i) = queue.pop() {
        let i = i as usize;
        let mut e = both[i];
        while e != 0 {
            let d = e.trailing_zeros() as usize;
            e &= e - 1;
            let j = (i as isize + off[d]) as usize;
            if !uncertain[j] {
                uncertain[j] = true;
                queue.push(j as u32);
            }
        }
    }
    // A basin without uncertain voxels is exactly its whole-volume basin: its voxels flow as
    // in the whole volume, and a voxel outside it that flows into it in the whole volume
    // flows into it here too (a certain one for sure; an uncertain one's edge to a certain
    // voxel is judged the same both ways, or it would be a plateau edge and flood the
    // certain voxel). So freezing every basin holding an uncertain voxel is enough.
    let mut frozen = vec![false; count as usize];
    for (&u, &l) in uncertain.iter().zip(&labels) {
        if u && l != 0 {
            frozen[l as usize - 1] = true;
        }
    }
    drop(uncertain);
    drop(both);

    let acc = accumulate(lshape, &labels, count as usize, &local);
    let [_, gy, gx] = shape;
    let global = |local_index: u64| {
        let i = local_index as usize;
        let (z, y, x) = (i / (ly * lx), (i / lx) % ly, i % lx);
        (((cut.start[0] + z) * gy + cut.start[1] + y) * gx + cut.start[2] + x) as u64
    };
    let keys: Vec<u64> = acc.first.iter().map(|&f| global(f)).collect();
    let merged = size_merge(&acc.sizes, &keys, &acc.edges, params, frozen);

    let nodes = count as usize;
    let mut seg_key = vec![u64::MAX; nodes];
    for (&r, &key) in merged.root.iter().zip(&keys) {
        seg_key[r as usize] = seg_key[r as usize].min(key);
    }
    let mut frozen_number = 0u64;
    let mut seg_id = vec![0u64; nodes];
    for r in 0..nodes as u32 {
        if merged.root[r as usize] != r || merged.removed(r, params) {
            continue;
        }
        seg_id[r as usize] = if merged.frozen[r as usize] {
            frozen_number += 1;
            FROZEN_BIT | frozen_number
        } else {
            seg_key[r as usize] + 1
        };
    }
    let basin_id: Vec<u64> = (0..nodes)
        .map(|basin| seg_id[merged.root[basin] as usize])
        .collect();
    let mut ids: Vec<u64> = seg_id.iter().copied().filter(|&id| id != 0).collect();
    ids.sort_unstable();
    let node_of = |id: u64| ids.binary_search(&id).map_or(u32::MAX, |i| i as u32);
    let basin_node: Vec<u32> = basin_id.iter().map(|&id| node_of(id)).collect();
    let mut sizes = vec![0u64; ids.len()];
    let mut frozen_nodes = vec![false; ids.len()];
    for (r, &id) in seg_id.iter().enumerate() {
        if id != 0 {
            let node = node_of(id) as usize;
            sizes[node] = merged.size[r];
            frozen_nodes[node] = merged.frozen[r];
        }
    }
    let edges = contract(&acc.edges, &basin_node);

    let cshape = core.shape();
    let mut core_labels = Vec::with_capacity(voxel_count(cshape));
    for z in 0..cshape[0] {
        for y in 0..cshape[1] {
            let row = ((core.start[0] - cut.start[0] + z) * ly + core.start[1] - cut.start[1] + y)
                * lx
                + core.start[2]
                - cut.start[2];
            core_labels.extend(labels[row..row + cshape[2]].iter().map(|&l| {
                if l == 0 {
                    0
                } else {
                    basin_id[l as usize - 1]
                }
            }));
        }
    }
    Ok(ChunkSegmentation {
        core,
        cut,
        labels: core_labels,
        graph: RegionGraph { ids, sizes, edges },
        frozen: frozen_nodes,
    })
}

#[cfg(test)]
mod tests;
