//! Chunked watershed, region graph and agglomeration that reproduce the whole-volume
//! functions ([`crate::watershed()`], [`crate::agglomerate`]) exactly, task by task.
//!
//! # Tasks
//!
//! A [`TaskTree`] covers the volume with chunks (`chunk_size`, the last ones along an axis
//! may be partial): the leaf tasks. A parent task is a 2×2×2 block of tasks of the level
//! below, up to one root. Each task runs on its own ([`run_task`]): a leaf reads its core box
//! grown by the ghost margin through an [`AffinitySource`]; a parent reads its children's
//! [`TaskOutput`]s (plus small affinity boxes, see below). When the root is done,
//! [`finish`] reads every task's [`GraphPart`] (the basins and contacts it made final) and
//! runs the graph steps once; [`chunk_labels`] then gives each leaf chunk's final
//! supervoxels from its own output, its ancestors' renames and the [`Finished`] graph, so
//! leaves can be finalized in parallel too. All three serialize to bytes (`to_bytes` /
//! `from_bytes`: little-endian, a magic and version, checked lengths), so a pipeline can
//! store them as files and skip finished tasks:
//!
//! ```text
//! for level in 0..tree.levels():  for task in tree.tasks(level):   (in parallel)
//!     out = run_task(src, tree, task, params, children's outputs)  -> task file
//! finished = finish(every task's out.graph, params)                -> one file
//! for leaf in tree.tasks(0):                                         (in parallel)
//!     chunk_labels(leaf's out, ancestors' out.renames, finished)   -> the chunk's labels
//! ```
//!
//! [`run`] (and [`run_streaming`], which hands chunk labels to a callback) does all of it
//! in-process: the tasks of a level in parallel, largest first.
//!
//! # Basins: links, pieces and names
//!
//! The whole-volume watershed gives every voxel one *link* (the neighbour it flows to) or,
//! on a maximum plateau, links to its plateau neighbours; basins are the connected
//! components of the links. A voxel's link depends on its own and its neighbours' edges,
//! except inside a plateau below `T_high`, where the breadth-first division from the exits
//! decides. A voxel at plateau distance `d` from its exit gets its link from the plateau
//! within distance `d` (the tie-breaking chains through the queue stay inside that ball),
//! so in a cut-out it is *certain* when it lies at least `d + 2` voxels from every face where
//! the cut-out ends inside the volume (2: its neighbours' steepest-ascent bytes must be
//! right too). Other voxels are certain at 2 voxels from such faces, except on maximum
//! plateaus below `T_high`, which must not reach that band at all. Plateaus at or above
//! `T_high` are always maxima (a voxel whose best edge is `≥ T_high` keeps only edges
//! `≥ T_high`, which both ends keep), so their links are local. With a ghost of at least 2
//! (smaller ghosts are raised to 2) every core voxel is certain except on plateaus below
//! `T_high` that reach near the cut-out's faces.
//!
//! A leaf labels the connected components of its certain core voxels' links inside the core:
//! *pieces*, named by their first voxel's global raster index + 1. Links that leave the core
//! and uncertain voxels are handed up with the piece names of the core's faces. A parent
//! resolves its children's uncertain voxels by re-running the first watershed steps on
//! boxes around them (per occupied cell of a 32-voxel grid, their bounding box grown by
//! twice the ghost; voxels still uncertain go round again with the margin doubled, and the
//! whole volume leaves nothing uncertain), so the extra reading follows the uncertain
//! voxels, not the parent's box. It then joins the pieces along the links across the faces
//! between its children (a union-find over the open pieces only): a joined piece takes the
//! smallest name (again its first voxel plus one), and the parent records the renames. A
//! piece that no longer touches a face inside the volume, has no link out and no uncertain
//! voxel is a whole-volume basin: it is final.
//!
//! The ghost trades reading against that rework: boundary-derived affinities make small
//! plateaus everywhere (a voxel more membrane-like than its six neighbours has six equal
//! edges), so with
//! a ghost of 2 about 0.2% of the voxels are uncertain and the parents re-run bands along
//! every face (on the 16.8 MV benchmark volume with 64³ chunks, parents cost 2/3 of the
//! leaves); a ghost of 4 leaves a few uncertain voxels (parents 5–15% of the leaves) for
//! 1.2–1.4× the voxels read by a leaf.
//!
//! Contacts (sum, area and maximum of the affinities between two pieces) are summed per
//! piece pair inside each leaf core, and by the parent across the faces between its children
//! (each child hands up its face planes and the affinities across its low faces). A contact
//! between two final basins is final; the others go up and are renamed with the pieces.
//!
//! # Graph steps
//!
//! [`finish`] gathers the final basins (size, first voxel) and contacts of all tasks: the same
//! basin graph, with the same first voxels as tie-breaking keys, that the whole-volume
//! watershed builds. It then runs the same size-dependent single linkage and dust removal,
//! numbers supervoxels by their first voxel + 1 (the whole volume numbers them `1..=K` in the
//! same order) and agglomerates their region graph. This step holds the basin graph of the
//! whole volume (about 40 bytes per basin contact; for the 32.8 MV benchmark volume tens of
//! MB), not voxels. Doing the graph steps in every task instead (size merging with the open
//! pieces frozen, agglomeration with the undecided segments as frozen nodes,
//! [`crate::agglomerate_frozen`], handing up only the undecided part) is exact too, but was
//! slower at this size: with 128³ leaves and `T_low = 0` about two thirds of the basins
//! are still undecided after the leaves (open pieces, and every segment next to one), so
//! parents redo most of the work (parents' CPU 0.13 s → 0.6 s). It is the way for volumes
//! whose basin graph does not fit one machine; two details matter there: ties between
//! equal mean affinities are broken by representatives, so the agglomeration must re-queue
//! contacts whose representative changed, and a frozen node must sort before every
//! supervoxel so that a tie with it freezes instead of merging.
//!
//! # Memory and time
//!
//! A leaf holds its cut-out's affinities (12 bytes a voxel) and about 12 bytes a voxel of
//! working arrays; its output keeps 2 bytes a core voxel (piece indices; 4 when a chunk has
//! more than 65535 pieces) until finalization. Parents touch face planes (8 bytes a face
//! voxel), links, and the uncertain voxels' boxes; in the worst case (a plateau below
//! `T_high` across the whole volume, such as constant affinities) that box grows to the
//! whole volume. Sums of contacts are added in another order than in the whole volume, so
//! they may differ in the last bits of an `f64`.
//!
//! Measured (`examples/bench.rs`, 320³ Voronoi volume = 32.8 MV, 128³ chunks, ghost 4,
//! 2 threads on the 2 shared cores of the development machine at load 2–5): watershed +
//! region graph 12.6–26.6 MV/s wall (the whole volume: 18.2 MV/s, one thread), 1.73–1.87
//! CPU seconds in the leaves, 0.13 in the parents, 0.21 in the serial graph step;
//! agglomeration 135–148 MV/s; peak resident 693–698 MiB with the affinities (375 MiB)
//! resident, 1.85× the input (the whole-volume watershed peaks at 2.2×, 2.5× with its
//! agglomeration and relabelling).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use rustc_hash::FxHashMap;

use crate::affinity::Box3;
use crate::agglomeration::{agglomerate, Agglomeration};
use crate::region_graph::{accumulate_at, contract, RegionEdge, RegionGraph};
use crate::unionfind::UnionFind;
use crate::watershed::{
    divide_plateaus, kept_both_ways, offsets, size_merge, steepest_ascent, WatershedParams, NONE,
    UNRESOLVED,
};
use crate::{voxel_count, Affinities, Result, SegError};

/// Where a task reads affinities from: the whole volume's shape, and any box of it (as a
/// graph of its own: edges leaving the box are dropped, as [`Affinities::crop`] does).
pub trait AffinitySource: Sync {
    fn shape(&self) -> [usize; 3];
    fn read(&self, b: &Box3) -> Result<Affinities>;
}

impl AffinitySource for Affinities {
    fn shape(&self) -> [usize; 3] {
        Affinities::shape(self)
    }

    fn read(&self, b: &Box3) -> Result<Affinities> {
        self.crop(b)
    }
}

/// Parameters of a chunked run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChunkedParams {
    /// Leaf chunk size (z, y, x).
    pub chunk_size: [usize; 3],
    /// Voxels read around a leaf's core (at least 2 are used).
    pub ghost: usize,
    pub watershed: WatershedParams,
    /// Agglomeration threshold (mean affinity).
    pub threshold: f64,
    /// Threads of [`run`] (0: all available).
    pub threads: usize,
}

impl Default for ChunkedParams {
    fn default() -> Self {
        Self {
            chunk_size: [64, 128, 128],
            ghost: 4,
            watershed: WatershedParams::default(),
            threshold: 0.05,
            threads: 0,
        }
    }
}

fn err(msg: impl Into<String>) -> SegError {
    SegError::Chunked(msg.into())
}

/// A task: its level (0 = leaf chunks) and its position among the tasks of that level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId {
    pub level: usize,
    pub index: [usize; 3],
}

/// The task tree over a volume's chunk grid.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskTree {
    shape: [usize; 3],
    chunk: [usize; 3],
    /// Tasks per axis at each level; the last level has one task (none for an empty volume).
    counts: Vec<[usize; 3]>,
}

impl TaskTree {
    pub fn new(shape: [usize; 3], chunk_size: [usize; 3]) -> Result<Self> {
        if chunk_size.contains(&0) {
            return Err(SegError::Param(format!(
                "chunk size {chunk_size:?} has a zero side"
            )));
        }
        let mut counts = Vec::new();
        if voxel_count(shape) > 0 {
            let mut c = [0, 1, 2].map(|a| shape[a].div_ceil(chunk_size[a]));
            counts.push(c);
            while c.iter().any(|&v| v > 1) {
                c = c.map(|v| v.div_ceil(2));
                counts.push(c);
            }
        }
        Ok(Self {
            shape,
            chunk: chunk_size,
            counts,
        })
    }

    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    /// Number of levels (0 for an empty volume).
    pub fn levels(&self) -> usize {
        self.counts.len()
    }

    /// Tasks per axis at a level.
    pub fn counts(&self, level: usize) -> [usize; 3] {
        self.counts[level]
    }

    /// The tasks of a level, in raster order.
    pub fn tasks(&self, level: usize) -> Vec<TaskId> {
        let [cz, cy, cx] = self.counts[level];
        let mut out = Vec::with_capacity(cz * cy * cx);
        for z in 0..cz {
            for y in 0..cy {
                for x in 0..cx {
                    out.push(TaskId {
                        level,
                        index: [z, y, x],
                    });
                }
            }
        }
        out
    }

    /// Number of tasks on all levels.
    pub fn len(&self) -> usize {
        self.counts.iter().map(|&c| voxel_count(c)).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    pub fn root(&self) -> Option<TaskId> {
        (!self.counts.is_empty()).then(|| TaskId {
            level: self.counts.len() - 1,
            index: [0; 3],
        })
    }

    pub fn contains(&self, t: TaskId) -> bool {
        t.level < self.counts.len() && (0..3).all(|a| t.index[a] < self.counts[t.level][a])
    }

    /// The voxels a task is responsible for.
    pub fn core(&self, t: TaskId) -> Box3 {
        let span = self.chunk.map(|c| c << t.level);
        Box3::new(
            [0, 1, 2].map(|a| (t.index[a] * span[a]).min(self.shape[a])),
            [0, 1, 2].map(|a| ((t.index[a] + 1) * span[a]).min(self.shape[a])),
        )
    }

    pub fn parent(&self, t: TaskId) -> Option<TaskId> {
        (t.level + 1 < self.counts.len()).then(|| TaskId {
            level: t.level + 1,
            index: t.index.map(|i| i / 2),
        })
    }

    /// Children of a task, in raster order.
    pub fn children(&self, t: TaskId) -> Vec<TaskId> {
        let mut out = Vec::new();
        if t.level == 0 {
            return out;
        }
        let below = self.counts[t.level - 1];
        for dz in 0..2 {
            for dy in 0..2 {
                for dx in 0..2 {
                    let d = [dz, dy, dx];
                    let index = [0, 1, 2].map(|a| 2 * t.index[a] + d[a]);
                    if (0..3).all(|a| index[a] < below[a]) {
                        out.push(TaskId {
                            level: t.level - 1,
                            index,
                        });
                    }
                }
            }
        }
        out
    }

    /// A task's ancestors, nearest first.
    pub fn ancestors(&self, t: TaskId) -> Vec<TaskId> {
        let mut out = Vec::new();
        let mut cur = t;
        while let Some(p) = self.parent(cur) {
            out.push(p);
            cur = p;
        }
        out
    }
}

/// Summed affinities between two named segments (basins or pieces).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Contact {
    pub a: u64,
    pub b: u64,
    pub sum: f64,
    pub area: u64,
    pub max: f32,
}

/// A link leaving a task's core: from a voxel of piece `name` in direction `dir`
/// (0..3 back along z, y, x; 3..6 forward).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Link {
    name: u64,
    voxel: u64,
    dir: u8,
}

/// Parent code of a maximum-plateau voxel below `T_high` whose plateau reaches near a face
/// of the box: it may not be a maximum in the whole volume.
const FLOODED: u8 = 8;

/// Marks a neighbour outside the core in [`Uncertain::neighbours`].
const OUTSIDE: u64 = u64::MAX;

/// A voxel whose link a leaf could not decide.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Uncertain {
    voxel: u64,
    name: u64,
    /// Piece names of the six neighbours (0: background, [`OUTSIDE`]: outside the core).
    neighbours: [u64; 6],
}

/// What a task hands to its parent.
#[derive(Debug, Clone, PartialEq, Default)]
struct Up {
    /// Open pieces: name and voxels so far.
    pieces: Vec<(u64, u64)>,
    links: Vec<Link>,
    uncertain: Vec<Uncertain>,
    /// Piece names on the core's faces inside the volume (empty otherwise), per axis low
    /// then high, each a plane over the other two axes in C order.
    faces: [Vec<u64>; 6],
    /// Affinities across the low faces (the edge from each face voxel one step back).
    face_affs: [Vec<f32>; 3],
    /// Contacts with at least one open piece.
    contacts: Vec<Contact>,
}

/// The output of one task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOutput {
    pub task: TaskId,
    pub core: Box3,
    /// Leaf only: per core voxel (C order), index into `names` + 1; 0 is background.
    pub labels: PieceLabels,
    /// Leaf only: piece names.
    pub names: Vec<u64>,
    /// Pieces of the children joined here: old name → new name, sorted by old name.
    pub renames: Vec<(u64, u64)>,
    /// What [`finish`] needs from this task.
    pub graph: GraphPart,
    up: Up,
}

/// The basins and contacts a task made final: all that [`finish`] reads of it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GraphPart {
    /// Name (first voxel + 1) and voxels.
    pub basins: Vec<(u64, u64)>,
    /// Contacts between final basins, each pair in one task only.
    pub contacts: Vec<Contact>,
}

/// A leaf's piece indices per core voxel, in 2 bytes a voxel when they fit.
#[derive(Debug, Clone, PartialEq)]
pub enum PieceLabels {
    U16(Vec<u16>),
    U32(Vec<u32>),
}

impl Default for PieceLabels {
    fn default() -> Self {
        Self::U16(Vec::new())
    }
}

impl PieceLabels {
    fn new(labels: Vec<u32>, count: usize) -> Self {
        if count <= u16::MAX as usize {
            Self::U16(labels.iter().map(|&l| l as u16).collect())
        } else {
            Self::U32(labels)
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Self::U16(v) => v.len(),
            Self::U32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each voxel's entry of `lut`.
    fn map(&self, lut: &[u64]) -> Result<Vec<u64>> {
        let get = |l: usize| {
            lut.get(l)
                .copied()
                .ok_or_else(|| err("leaf label out of range"))
        };
        match self {
            Self::U16(v) => v.iter().map(|&l| get(l as usize)).collect(),
            Self::U32(v) => v.iter().map(|&l| get(l as usize)).collect(),
        }
    }
}

/// The watershed's first steps on a box: every voxel's parent code, and whether it is the
/// same as in the whole volume.
struct Flow {
    shape: [usize; 3],
    affs: Affinities,
    parent: Vec<u8>,
    both: Vec<u8>,
    /// Distance to the exit of plateau voxels the division reached (exits: none).
    levels: FxHashMap<u32, u32>,
    cut_low: [bool; 3],
    cut_high: [bool; 3],
    t_high: f32,
}

impl Flow {
    fn new(affs: Affinities, b: &Box3, volume: [usize; 3], p: &WatershedParams) -> Self {
        let shape = b.shape();
        let bits = steepest_ascent(&affs, p.t_low, p.t_high);
        let both = kept_both_ways(shape, &bits);
        let mut levels = FxHashMap::default();
        let parent = divide_plateaus(shape, bits, &both, Some(&mut levels));
        let cut_low = [0, 1, 2].map(|a| b.start[a] > 0);
        let cut_high = [0, 1, 2].map(|a| b.stop[a] < volume[a]);
        let mut flow = Self {
            shape,
            affs,
            parent,
            both,
            levels,
            cut_low,
            cut_high,
            t_high: p.t_high,
        };
        flow.flood();
        flow
    }

    #[allow(clippy::needless_range_loop)]
    fn face_distance(&self, c: [usize; 3]) -> usize {
        let mut d = usize::MAX;
        for a in 0..3 {
            if self.cut_low[a] {
                d = d.min(c[a]);
            }
            if self.cut_high[a] {
                d = d.min(self.shape[a] - 1 - c[a]);
            }
        }
        d
    }

    /// Marks maximum-plateau voxels below `T_high` connected to one within 1 voxel of a face
    /// ([`FLOODED`]).
    fn flood(&mut self) {
        let mut stack: Vec<u32> = Vec::new();
        let [nz, ny, nx] = self.shape;
        let near =
            |c: usize, len: usize, lo: bool, hi: bool| (lo && c <= 1) || (hi && c + 2 >= len);
        let xs: Vec<usize> = (0..nx)
            .filter(|&x| near(x, nx, self.cut_low[2], self.cut_high[2]))
            .collect();
        for z in 0..nz {
            let fz = near(z, nz, self.cut_low[0], self.cut_high[0]);
            for y in 0..ny {
                let fy = fz || near(y, ny, self.cut_low[1], self.cut_high[1]);
                let row = (z * ny + y) * nx;
                let mut seed = |x: usize| {
                    let i = row + x;
                    // Plateaus at or above T_high are always maxima: only lower ones
                    // can be cut wrongly (and both-way edges never join the two kinds).
                    if self.parent[i] == UNRESOLVED && !self.high(i) {
                        self.parent[i] = FLOODED;
                        stack.push(i as u32);
                    }
                };
                if fy {
                    (0..nx).for_each(&mut seed);
                } else {
                    xs.iter().for_each(|&x| seed(x));
                }
            }
        }
        let off = offsets(self.shape);
        while let Some(i) = stack.pop() {
            let i = i as usize;
            let mut e = self.both[i];
            while e != 0 {
                let d = e.trailing_zeros() as usize;
                e &= e - 1;
                let j = (i as isize + off[d]) as usize;
                if self.parent[j] == UNRESOLVED {
                    self.parent[j] = FLOODED;
                    stack.push(j as u32);
                }
            }
        }
    }

    /// A plateau voxel's distance to its exit (0 for exits and other voxels).
    fn level(&self, i: usize) -> usize {
        self.levels.get(&(i as u32)).map_or(0, |&l| l as usize)
    }

    /// Whether a maximum-plateau voxel's best edge is at or above `T_high`.
    fn high(&self, i: usize) -> bool {
        let d = self.both[i].trailing_zeros() as usize;
        let v = if d < 3 {
            self.affs.channel(d)[i]
        } else {
            let off = offsets(self.shape);
            self.affs.channel(d - 3)[(i as isize + off[d]) as usize]
        };
        v >= self.t_high
    }

    /// Whether voxel `i` (at local coordinates `c`) links as in the whole volume.
    fn certain(&self, i: usize, c: [usize; 3]) -> bool {
        let df = self.face_distance(c);
        match self.parent[i] {
            NONE => df >= 1,
            UNRESOLVED => df >= 2,
            FLOODED => false,
            _ => df >= 2 + self.level(i),
        }
    }

    /// Directions of voxel `i`'s links.
    fn links(&self, i: usize) -> u8 {
        match self.parent[i] {
            NONE => 0,
            UNRESOLVED | FLOODED => self.both[i],
            d => 1 << d,
        }
    }
}

const DIRS: [(usize, bool); 6] = [
    (0, false),
    (1, false),
    (2, false),
    (0, true),
    (1, true),
    (2, true),
];

/// The neighbour of `c` in direction `d`, if inside `[0, shape)`.
fn step(c: [usize; 3], d: usize, shape: [usize; 3]) -> Option<[usize; 3]> {
    let (a, fwd) = DIRS[d];
    let mut n = c;
    if fwd {
        n[a] += 1;
        (n[a] < shape[a]).then_some(n)
    } else {
        n[a] = n[a].checked_sub(1)?;
        Some(n)
    }
}

fn raster(c: [usize; 3], shape: [usize; 3]) -> usize {
    (c[0] * shape[1] + c[1]) * shape[2] + c[2]
}

fn coords(i: u64, shape: [usize; 3]) -> [usize; 3] {
    let i = i as usize;
    [
        i / (shape[1] * shape[2]),
        (i / shape[2]) % shape[1],
        i % shape[2],
    ]
}

/// The two axes other than `a`.
fn others(a: usize) -> [usize; 2] {
    match a {
        0 => [1, 2],
        1 => [0, 2],
        _ => [0, 1],
    }
}

/// Index of global voxel `c` in the plane of `core`'s face across axis `a`.
fn plane_index(core: &Box3, a: usize, c: [usize; 3]) -> usize {
    let [p, q] = others(a);
    (c[p] - core.start[p]) * (core.stop[q] - core.start[q]) + c[q] - core.start[q]
}

/// Which faces of `core` lie inside the volume: `[low, high]` per axis.
fn inner_faces(core: &Box3, volume: [usize; 3]) -> [[bool; 2]; 3] {
    [0, 1, 2].map(|a| [core.start[a] > 0, core.stop[a] < volume[a]])
}

/// Numbers the trees of a pointer forest (`uf[i]` = next voxel, `i` itself at a root,
/// `DONE` for background) in raster order of their first voxel; leaves labels in `uf`.
/// Returns each label's first voxel.
fn number_trees(uf: &mut [u32]) -> Vec<u32> {
    const DONE: u32 = 1 << 31;
    let mut first = Vec::new();
    let mut path: Vec<u32> = Vec::new();
    for i in 0..uf.len() {
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
                first.push(i as u32);
                break first.len() as u32;
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
    first
}

/// A leaf task: the pieces of its core.
fn run_leaf(
    src: &dyn AffinitySource,
    tree: &TaskTree,
    task: TaskId,
    params: &ChunkedParams,
) -> Result<TaskOutput> {
    const DONE: u32 = 1 << 31;
    let volume = tree.shape();
    let core = tree.core(task);
    let cut = core.grown(params.ghost.max(2), volume);
    crate::check_indexable(cut.shape())?;
    let affs = src.read(&cut)?;
    if affs.shape() != cut.shape() {
        return Err(err(format!(
            "source gave shape {:?} for box {cut:?}",
            affs.shape()
        )));
    }
    let flow = Flow::new(affs, &cut, volume, &params.watershed);
    let cs = core.shape();
    let o = [0, 1, 2].map(|a| core.start[a] - cut.start[a]);
    let lshape = flow.shape;
    let n = voxel_count(cs);
    let global = |c: [usize; 3]| raster([0, 1, 2].map(|a| c[a] + core.start[a]), volume) as u64;

    let mut uf: Vec<u32> = Vec::with_capacity(n);
    // Links out of the core (core voxel index, direction) and uncertain core voxels.
    let mut out_links: Vec<(u32, u8)> = Vec::new();
    let mut uncertain: Vec<u32> = Vec::new();
    fn find(uf: &mut [u32], mut x: u32) -> u32 {
        while uf[x as usize] != x {
            let grand = uf[uf[x as usize] as usize];
            uf[x as usize] = grand;
            x = grand;
        }
        x
    }
    let coff = offsets(cs);
    for z in 0..cs[0] {
        for y in 0..cs[1] {
            let i0 = raster([z + o[0], y + o[1], o[2]], lshape);
            let k0 = raster([z, y, 0], cs);
            for x in 0..cs[2] {
                let (i, k) = (i0 + x, k0 + x);
                debug_assert_eq!(uf.len(), k);
                let inside = [
                    z > 0,
                    y > 0,
                    x > 0,
                    z + 1 < cs[0],
                    y + 1 < cs[1],
                    x + 1 < cs[2],
                ];
                let p = flow.parent[i];
                // Core voxels lie at least 2 voxels from the cut-out's faces (see
                // `Flow::certain`): only plateau voxels can be uncertain.
                let certain = match p {
                    NONE | UNRESOLVED => true,
                    FLOODED => false,
                    _ => {
                        flow.both[i] == 0 || {
                            let level = flow.level(i);
                            level == 0 || {
                                let lc = [z + o[0], y + o[1], x + o[2]];
                                flow.face_distance(lc) >= level + 2
                            }
                        }
                    }
                };
                if !certain {
                    uf.push(k as u32);
                    uncertain.push(k as u32);
                    continue;
                }
                match p {
                    NONE => uf.push(DONE),
                    UNRESOLVED => {
                        uf.push(k as u32);
                        // This voxel's root, kept at hand: it is new, and only ever linked
                        // below a smaller root here.
                        let mut rk = k as u32;
                        let mut e = flow.both[i];
                        while e != 0 {
                            let d = e.trailing_zeros() as usize;
                            e &= e - 1;
                            if !inside[d] {
                                out_links.push((k as u32, d as u8));
                            } else if d < 3 {
                                let j = (k as isize + coff[d]) as u32;
                                let rj = find(&mut uf, j);
                                if rj != rk {
                                    uf[rk.max(rj) as usize] = rk.min(rj);
                                    rk = rk.min(rj);
                                }
                            }
                        }
                    }
                    d => {
                        if inside[d as usize] {
                            uf.push((k as isize + coff[d as usize]) as u32);
                        } else {
                            uf.push(k as u32);
                            out_links.push((k as u32, d));
                        }
                    }
                }
            }
        }
    }
    let first = number_trees(&mut uf);
    let labels = uf;
    let count = first.len();
    let names: Vec<u64> = first
        .iter()
        .map(|&f| global(coords(f as u64, cs)) + 1)
        .collect();

    // Contacts and sizes inside the core.
    let acc = accumulate_at(cs, &labels, count, &flow.affs, o);

    let mut open = vec![false; count];
    let mut up = Up::default();
    for &(k, d) in &out_links {
        let l = labels[k as usize] as usize;
        open[l - 1] = true;
        up.links.push(Link {
            name: names[l - 1],
            voxel: global(coords(k as u64, cs)),
            dir: d,
        });
    }
    for &k in &uncertain {
        let c = coords(k as u64, cs);
        let l = labels[k as usize] as usize;
        open[l - 1] = true;
        let mut neighbours = [OUTSIDE; 6];
        for (d, nb) in neighbours.iter_mut().enumerate() {
            if let Some(nc) = step(c, d, cs) {
                let m = labels[raster(nc, cs)] as usize;
                *nb = if m == 0 {
                    0
                } else {
                    open[m - 1] = true;
                    names[m - 1]
                };
            }
        }
        up.uncertain.push(Uncertain {
            voxel: global(c),
            name: names[l - 1],
            neighbours,
        });
    }
    let inner = inner_faces(&core, volume);
    for a in 0..3 {
        let [p, q] = others(a);
        for (side, &is_inner) in inner[a].iter().enumerate() {
            if !is_inner {
                continue;
            }
            let at = if side == 0 { 0 } else { cs[a] - 1 };
            let mut plane = Vec::with_capacity(cs[p] * cs[q]);
            let mut affs_plane = Vec::new();
            for u in 0..cs[p] {
                for v in 0..cs[q] {
                    let mut c = [0; 3];
                    c[a] = at;
                    c[p] = u;
                    c[q] = v;
                    let l = labels[raster(c, cs)] as usize;
                    plane.push(if l == 0 {
                        0
                    } else {
                        open[l - 1] = true;
                        names[l - 1]
                    });
                    if side == 0 {
                        let lc = [0, 1, 2].map(|b| c[b] + o[b]);
                        affs_plane.push(flow.affs.channel(a)[raster(lc, lshape)]);
                    }
                }
            }
            up.faces[2 * a + side] = plane;
            if side == 0 {
                up.face_affs[a] = affs_plane;
            }
        }
    }
    let mut basins = Vec::new();
    for l in 0..count {
        if open[l] {
            up.pieces.push((names[l], acc.sizes[l]));
        } else {
            basins.push((names[l], acc.sizes[l]));
        }
    }
    let mut contacts = Vec::new();
    for e in &acc.edges {
        let c = Contact {
            a: names[e.a as usize],
            b: names[e.b as usize],
            sum: e.sum,
            area: e.area,
            max: e.max,
        };
        if open[e.a as usize] || open[e.b as usize] {
            up.contacts.push(c);
        } else {
            contacts.push(c);
        }
    }
    Ok(TaskOutput {
        task,
        core,
        labels: PieceLabels::new(labels, count),
        names,
        renames: Vec::new(),
        graph: GraphPart { basins, contacts },
        up,
    })
}

/// Decides the links of uncertain voxels (global raster indices) by re-running the first
/// watershed steps on boxes around them: one box per occupied cell of a 32-voxel grid (the
/// voxels' bounding box in that cell, grown by a margin), the margin doubling for voxels
/// still uncertain, until the box is the whole volume if need be.
fn resolve(src: &dyn AffinitySource, params: &ChunkedParams, voxels: &[u64]) -> Result<Vec<u8>> {
    const CELL: usize = 32;
    let volume = src.shape();
    let mut masks = vec![0u8; voxels.len()];
    let mut pending: Vec<usize> = (0..voxels.len()).collect();
    let mut margin = 2 * params.ghost.max(2);
    while !pending.is_empty() {
        let mut cells: FxHashMap<[usize; 3], Vec<usize>> = FxHashMap::default();
        for &i in &pending {
            let c = coords(voxels[i], volume);
            cells.entry(c.map(|v| v / CELL)).or_default().push(i);
        }
        let mut cells: Vec<([usize; 3], Vec<usize>)> = cells.into_iter().collect();
        cells.sort_unstable();
        let mut still = Vec::new();
        for (_, group) in cells {
            let mut lo = volume;
            let mut hi = [0; 3];
            for &i in &group {
                let c = coords(voxels[i], volume);
                for a in 0..3 {
                    lo[a] = lo[a].min(c[a]);
                    hi[a] = hi[a].max(c[a] + 1);
                }
            }
            let b = Box3::new(lo, hi).grown(margin, volume);
            crate::check_indexable(b.shape())?;
            let flow = Flow::new(src.read(&b)?, &b, volume, &params.watershed);
            for &i in &group {
                let c = coords(voxels[i], volume);
                let lc = [0, 1, 2].map(|a| c[a] - b.start[a]);
                let li = raster(lc, flow.shape);
                if flow.certain(li, lc) {
                    masks[i] = flow.links(li);
                } else {
                    still.push(i);
                }
            }
        }
        pending = still;
        margin *= 2;
    }
    Ok(masks)
}

/// Union-find over piece names; a set is named by its smallest name.
struct Pieces {
    index: FxHashMap<u64, u32>,
    names: Vec<u64>,
    sizes: Vec<u64>,
    uf: UnionFind,
}

impl Pieces {
    fn find(&mut self, name: u64) -> Option<u32> {
        let i = *self.index.get(&name)?;
        Some(self.uf.find(i))
    }

    fn join(&mut self, a: u64, b: u64) -> Result<()> {
        let (Some(ra), Some(rb)) = (self.find(a), self.find(b)) else {
            return Err(err(format!("link between {a} and {b}: not an open piece")));
        };
        if ra != rb {
            if self.names[ra as usize] < self.names[rb as usize] {
                self.uf.link(rb, ra);
            } else {
                self.uf.link(ra, rb);
            }
        }
        Ok(())
    }

    /// The current name of a piece (names of pieces closed earlier are kept).
    fn name(&mut self, name: u64) -> u64 {
        match self.find(name) {
            Some(r) => self.names[r as usize],
            None => name,
        }
    }
}

/// Sums contacts by name pair (with a one-pair cache for runs along a face).
#[derive(Default)]
struct ContactMap {
    index: FxHashMap<(u64, u64), u32>,
    list: Vec<Contact>,
}

impl ContactMap {
    fn add(&mut self, a: u64, b: u64, sum: f64, area: u64, max: f32) {
        let key = (a.min(b), a.max(b));
        let next = self.list.len() as u32;
        let i = *self.index.entry(key).or_insert(next);
        if i == next {
            self.list.push(Contact {
                a: key.0,
                b: key.1,
                sum,
                area,
                max,
            });
        } else {
            let c = &mut self.list[i as usize];
            c.sum += sum;
            c.area += area;
            c.max = c.max.max(max);
        }
    }
}

/// A parent task: resolves its children's uncertain voxels and joins their pieces across the
/// faces between them.
#[allow(clippy::needless_range_loop)]
fn run_parent(
    src: &dyn AffinitySource,
    tree: &TaskTree,
    task: TaskId,
    params: &ChunkedParams,
    children: &[&TaskOutput],
) -> Result<TaskOutput> {
    let volume = tree.shape();
    let core = tree.core(task);
    let want = tree.children(task);
    let mut kids: Vec<&TaskOutput> = Vec::with_capacity(want.len());
    for id in &want {
        let Some(k) = children.iter().find(|c| c.task == *id) else {
            return Err(err(format!("task {task:?} lacks child {id:?}")));
        };
        if k.core != tree.core(*id) {
            return Err(err(format!("child {id:?} has core {:?}", k.core)));
        }
        kids.push(k);
    }

    let total: usize = kids.iter().map(|k| k.up.pieces.len()).sum();
    let mut pieces = Pieces {
        index: FxHashMap::with_capacity_and_hasher(total, Default::default()),
        names: Vec::with_capacity(total),
        sizes: Vec::with_capacity(total),
        uf: UnionFind::new(total),
    };
    for k in &kids {
        for &(name, size) in &k.up.pieces {
            pieces.index.insert(name, pieces.names.len() as u32);
            pieces.names.push(name);
            pieces.sizes.push(size);
        }
    }

    let child_at = |c: [usize; 3]| {
        kids.iter()
            .position(|k| (0..3).all(|a| k.core.start[a] <= c[a] && c[a] < k.core.stop[a]))
    };
    let mut open_links: Vec<Link> = Vec::new();
    // Follows a link to the piece it reaches: joins the two, or keeps it open when it
    // leaves this task's core.
    let mut follow = |pieces: &mut Pieces, link: Link| -> Result<()> {
        let c = coords(link.voxel, volume);
        let Some(t) = step(c, link.dir as usize, volume) else {
            return Err(err(format!("link out of the volume from {c:?}")));
        };
        let Some(k) = child_at(t) else {
            open_links.push(link);
            return Ok(());
        };
        let kid = kids[k];
        let (a, fwd) = DIRS[link.dir as usize];
        // Reaching forward lands on the target chunk's low face, and back on its high one.
        let plane = &kid.up.faces[2 * a + usize::from(!fwd)];
        let target = plane
            .get(plane_index(&kid.core, a, t))
            .copied()
            .ok_or_else(|| err(format!("no face plane for {t:?} in {:?}", kid.task)))?;
        if target == 0 {
            return Err(err(format!("link from {c:?} reaches background at {t:?}")));
        }
        pieces.join(link.name, target)
    };
    for k in &kids {
        for &link in &k.up.links {
            follow(&mut pieces, link)?;
        }
    }
    let uncertain: Vec<Uncertain> = kids
        .iter()
        .flat_map(|k| k.up.uncertain.iter().copied())
        .collect();
    if !uncertain.is_empty() {
        let voxels: Vec<u64> = uncertain.iter().map(|u| u.voxel).collect();
        let masks = resolve(src, params, &voxels)?;
        for (u, &mask) in uncertain.iter().zip(&masks) {
            let mut e = mask;
            while e != 0 {
                let d = e.trailing_zeros() as usize;
                e &= e - 1;
                match u.neighbours[d] {
                    OUTSIDE => follow(
                        &mut pieces,
                        Link {
                            name: u.name,
                            voxel: u.voxel,
                            dir: d as u8,
                        },
                    )?,
                    0 => return Err(err(format!("voxel {} links to background", u.voxel))),
                    nb => pieces.join(u.name, nb)?,
                }
            }
        }
    }

    // Contacts across the faces between children.
    let mut contacts = ContactMap::default();
    for lo in &kids {
        for hi in &kids {
            let Some(a) = (0..3).find(|&a| {
                hi.task.index[a] == lo.task.index[a] + 1
                    && (0..3).all(|b| b == a || hi.task.index[b] == lo.task.index[b])
            }) else {
                continue;
            };
            let (pa, pb, affs) = (
                &lo.up.faces[2 * a + 1],
                &hi.up.faces[2 * a],
                &hi.up.face_affs[a],
            );
            if pa.len() != pb.len() || pb.len() != affs.len() {
                return Err(err(format!(
                    "face planes of {:?} and {:?} differ",
                    lo.task, hi.task
                )));
            }
            for ((&x, &y), &v) in pa.iter().zip(pb).zip(affs) {
                if x != 0 && y != 0 && x != y {
                    contacts.add(x, y, v as f64, 1, v);
                }
            }
        }
    }
    let face_contacts = std::mem::take(&mut contacts.list);
    contacts.index.clear();
    for c in kids
        .iter()
        .flat_map(|k| k.up.contacts.iter())
        .chain(&face_contacts)
    {
        let (a, b) = (pieces.name(c.a), pieces.name(c.b));
        if a != b {
            contacts.add(a, b, c.sum, c.area, c.max);
        }
    }
    drop(face_contacts);

    // This task's faces, from its children's.
    let mut up = Up::default();
    let mut open = vec![false; pieces.names.len()];
    let inner = inner_faces(&core, volume);
    for a in 0..3 {
        let [p, q] = others(a);
        let (sp, sq) = (core.stop[p] - core.start[p], core.stop[q] - core.start[q]);
        for side in 0..2 {
            if !inner[a][side] {
                continue;
            }
            let mut plane = vec![0u64; sp * sq];
            let mut affs_plane = if side == 0 {
                vec![0f32; sp * sq]
            } else {
                Vec::new()
            };
            for k in &kids {
                let touches = if side == 0 {
                    k.core.start[a] == core.start[a]
                } else {
                    k.core.stop[a] == core.stop[a]
                };
                if !touches {
                    continue;
                }
                let src_plane = &k.up.faces[2 * a + side];
                let (kp, kq) = (
                    k.core.stop[p] - k.core.start[p],
                    k.core.stop[q] - k.core.start[q],
                );
                if src_plane.len() != kp * kq {
                    return Err(err(format!("child {:?} lacks a face plane", k.task)));
                }
                let (op, oq) = (
                    k.core.start[p] - core.start[p],
                    k.core.start[q] - core.start[q],
                );
                let mut last = (0u64, 0u64);
                for u in 0..kp {
                    for v in 0..kq {
                        let name = src_plane[u * kq + v];
                        let renamed = if name == 0 {
                            0
                        } else if name == last.0 {
                            last.1
                        } else {
                            let r = pieces.find(name).ok_or_else(|| {
                                err(format!("face piece {name} of {:?} is not open", k.task))
                            })?;
                            open[r as usize] = true;
                            last = (name, pieces.names[r as usize]);
                            last.1
                        };
                        plane[(op + u) * sq + oq + v] = renamed;
                    }
                }
                if side == 0 {
                    let src_affs = &k.up.face_affs[a];
                    for u in 0..kp {
                        affs_plane[(op + u) * sq + oq..(op + u) * sq + oq + kq]
                            .copy_from_slice(&src_affs[u * kq..(u + 1) * kq]);
                    }
                }
            }
            up.faces[2 * a + side] = plane;
            if side == 0 {
                up.face_affs[a] = affs_plane;
            }
        }
    }
    for link in open_links {
        let r = pieces
            .find(link.name)
            .ok_or_else(|| err("open link from a closed piece"))?;
        open[r as usize] = true;
        up.links.push(Link {
            name: pieces.names[r as usize],
            ..link
        });
    }

    let n = pieces.names.len();
    let mut size = vec![0u64; n];
    let mut renames = Vec::new();
    for i in 0..n as u32 {
        let r = pieces.uf.find(i) as usize;
        size[r] += pieces.sizes[i as usize];
        if r != i as usize {
            renames.push((pieces.names[i as usize], pieces.names[r]));
        }
    }
    renames.sort_unstable();
    let mut basins = Vec::new();
    for r in 0..n {
        if pieces.uf.find(r as u32) as usize != r {
            continue;
        }
        if open[r] {
            up.pieces.push((pieces.names[r], size[r]));
        } else {
            basins.push((pieces.names[r], size[r]));
        }
    }
    let mut done = Vec::new();
    for c in contacts.list {
        let is_open =
            |pieces: &mut Pieces, name: u64| pieces.find(name).is_some_and(|r| open[r as usize]);
        if is_open(&mut pieces, c.a) || is_open(&mut pieces, c.b) {
            up.contacts.push(c);
        } else {
            done.push(c);
        }
    }
    if tree.parent(task).is_none() && (!up.pieces.is_empty() || !up.links.is_empty()) {
        return Err(err(format!(
            "the root left {} pieces and {} links open",
            up.pieces.len(),
            up.links.len()
        )));
    }
    Ok(TaskOutput {
        task,
        core,
        labels: PieceLabels::default(),
        names: Vec::new(),
        renames,
        graph: GraphPart {
            basins,
            contacts: done,
        },
        up,
    })
}

/// Runs one task: a leaf reads its cut-out from `src`; a parent needs its children's
/// outputs (and reads boxes around their uncertain voxels, if any).
pub fn run_task(
    src: &dyn AffinitySource,
    tree: &TaskTree,
    task: TaskId,
    params: &ChunkedParams,
    children: &[&TaskOutput],
) -> Result<TaskOutput> {
    params.watershed.check()?;
    if src.shape() != tree.shape() {
        return Err(err(format!(
            "source shape {:?}, tree shape {:?}",
            src.shape(),
            tree.shape()
        )));
    }
    if !tree.contains(task) {
        return Err(err(format!("no task {task:?} in this tree")));
    }
    if task.level == 0 {
        let out = run_leaf(src, tree, task, params)?;
        let up = &out.up;
        if tree.parent(task).is_none()
            && !(up.pieces.is_empty() && up.links.is_empty() && up.uncertain.is_empty())
        {
            return Err(err("a single chunk left pieces open"));
        }
        Ok(out)
    } else {
        run_parent(src, tree, task, params, children)
    }
}

/// The graph steps on the final basins of all tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// Basin names, ascending.
    pub basins: Vec<u64>,
    /// Per basin: its supervoxel (0: removed as dust).
    pub supervoxels: Vec<u64>,
    /// Region graph of the supervoxels, named by first voxel + 1 (ascending, so node `i` is
    /// the whole-volume watershed's supervoxel `i + 1`).
    pub graph: RegionGraph,
    pub agglomeration: Agglomeration,
}

impl Finished {
    /// The supervoxel of a basin (0 for dust or an unknown name).
    pub fn supervoxel(&self, basin: u64) -> u64 {
        self.basins
            .binary_search(&basin)
            .map_or(0, |i| self.supervoxels[i])
    }
}

/// Size-dependent single linkage, dust removal and agglomeration on the basins and contacts
/// that every task of a tree made final (their [`TaskOutput::graph`], in any order).
pub fn finish(
    parts: impl IntoIterator<Item = GraphPart>,
    params: &ChunkedParams,
) -> Result<Finished> {
    let (basins, supervoxels, graph) = supervoxel_graph(parts, &params.watershed)?;
    let agglomeration = agglomerate(&graph, params.threshold);
    Ok(Finished {
        basins,
        supervoxels,
        graph,
        agglomeration,
    })
}

/// Basin names, each basin's supervoxel, and the supervoxels' region graph.
fn supervoxel_graph(
    parts: impl IntoIterator<Item = GraphPart>,
    wp: &WatershedParams,
) -> Result<(Vec<u64>, Vec<u64>, RegionGraph)> {
    let mut basins = Vec::new();
    let mut contact_lists = Vec::new();
    for p in parts {
        basins.extend_from_slice(&p.basins);
        contact_lists.push(p.contacts);
    }
    basins.sort_unstable();
    if basins.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(err("a basin is final in two tasks"));
    }
    let names: Vec<u64> = basins.iter().map(|b| b.0).collect();
    let sizes: Vec<u64> = basins.iter().map(|b| b.1).collect();
    drop(basins);
    let keys: Vec<u64> = names.iter().map(|&n| n - 1).collect();
    let node = |name: u64| {
        names
            .binary_search(&name)
            .map(|i| i as u32)
            .map_err(|_| err(format!("contact with unknown basin {name}")))
    };
    // Each pair of basins is final in one task only, which summed all its contacts; a
    // repeated pair would still be harmless (merging twice is a no-op, contraction adds).
    let mut edges = Vec::new();
    // Contacts are freed list by list as they become edges.
    for list in contact_lists {
        for c in list.iter() {
            let (a, b) = (node(c.a)?, node(c.b)?);
            edges.push(RegionEdge {
                a: a.min(b),
                b: a.max(b),
                sum: c.sum,
                area: c.area,
                max: c.max,
            });
        }
    }
    let nodes = names.len();
    let merged = size_merge(&sizes, &keys, &edges, wp, vec![false; nodes]);
    let mut seg_first = vec![u64::MAX; nodes];
    for (&r, &key) in merged.root.iter().zip(&keys) {
        seg_first[r as usize] = seg_first[r as usize].min(key);
    }
    let mut kept: Vec<u32> = (0..nodes as u32)
        .filter(|&r| merged.root[r as usize] == r && !merged.removed(r, wp))
        .collect();
    kept.sort_unstable_by_key(|&r| seg_first[r as usize]);
    let mut number = vec![u32::MAX; nodes];
    for (i, &r) in kept.iter().enumerate() {
        number[r as usize] = i as u32;
    }
    let basin_node: Vec<u32> = (0..nodes)
        .map(|b| number[merged.root[b] as usize])
        .collect();
    let supervoxels = (0..nodes)
        .map(|b| {
            let r = merged.root[b] as usize;
            if number[r] == u32::MAX {
                0
            } else {
                seg_first[r] + 1
            }
        })
        .collect();
    let graph = RegionGraph {
        ids: kept.iter().map(|&r| seg_first[r as usize] + 1).collect(),
        sizes: kept.iter().map(|&r| merged.size[r as usize]).collect(),
        edges: contract(&edges, &basin_node),
    };
    Ok((names, supervoxels, graph))
}

/// The final supervoxels of a leaf chunk's core (C order; 0 = background or dust), from its
/// output, its ancestors' [`TaskOutput::renames`] (nearest first) and the finished graph.
pub fn chunk_labels(
    leaf: &TaskOutput,
    ancestors: &[&[(u64, u64)]],
    finished: &Finished,
) -> Result<Vec<u64>> {
    if leaf.task.level != 0 {
        return Err(err(format!("{:?} is not a leaf", leaf.task)));
    }
    let mut lut = Vec::with_capacity(leaf.names.len() + 1);
    lut.push(0u64);
    for &name in &leaf.names {
        let mut n = name;
        for renames in ancestors {
            if let Ok(i) = renames.binary_search_by_key(&n, |r| r.0) {
                n = renames[i].1;
            }
        }
        lut.push(finished.supervoxel(n));
    }
    leaf.labels.map(&lut)
}

/// Final supervoxels of one leaf chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkLabels {
    pub core: Box3,
    pub labels: Vec<u64>,
}

/// Wall-clock seconds of the stages of [`run`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Timings {
    /// All tasks, per level (level 0: the leaves).
    pub levels: [f64; 16],
    /// Size-dependent single linkage, dust and the supervoxel graph.
    pub graph: f64,
    pub agglomeration: f64,
    /// Every chunk's final labels.
    pub labels: f64,
}

impl Timings {
    pub fn tasks(&self) -> f64 {
        self.levels.iter().sum()
    }
}

/// The result of [`run`].
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkedRun {
    pub tree: TaskTree,
    /// Leaf chunks in raster order.
    pub chunks: Vec<ChunkLabels>,
    pub finished: Finished,
    pub timings: Timings,
}

impl ChunkedRun {
    /// The whole volume's supervoxels (for tests and small volumes).
    pub fn assemble(&self) -> Vec<u64> {
        let shape = self.tree.shape();
        let mut out = vec![0u64; voxel_count(shape)];
        for c in &self.chunks {
            let cs = c.core.shape();
            for z in 0..cs[0] {
                for y in 0..cs[1] {
                    let from = (z * cs[1] + y) * cs[2];
                    let to = raster(
                        [c.core.start[0] + z, c.core.start[1] + y, c.core.start[2]],
                        shape,
                    );
                    out[to..to + cs[2]].copy_from_slice(&c.labels[from..from + cs[2]]);
                }
            }
        }
        out
    }
}

/// Runs `f` on every item on `threads` threads; results in item order.
fn parallel<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    cost: impl Fn(&T) -> usize,
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    // Largest first, so partial chunks at the volume's edges fill the gaps at the end.
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(cost(&items[i])));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<R>>>> =
        Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, items.len().max(1)) {
            s.spawn(|| {
                while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let r = f(&items[i]);
                    let failed = r.is_err();
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                    if failed {
                        next.store(items.len(), Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::with_capacity(items.len());
    for r in results {
        match r {
            Some(r) => out.push(r?),
            None => return Err(err("a task did not run")),
        }
    }
    Ok(out)
}

/// Runs the whole task tree in-process (the tasks of each level in parallel), then the graph
/// steps and every chunk's final labels. `progress(done, total)` counts tasks, the graph step
/// and the chunks' finalization.
pub fn run(
    src: &dyn AffinitySource,
    params: &ChunkedParams,
    progress: impl Fn(usize, usize) + Sync,
) -> Result<ChunkedRun> {
    let chunks = Mutex::new(Vec::new());
    let (tree, finished, timings) = run_streaming(src, params, progress, |c| {
        chunks.lock().unwrap_or_else(|e| e.into_inner()).push(c);
        Ok(())
    })?;
    let mut chunks = chunks.into_inner().unwrap_or_else(|e| e.into_inner());
    chunks.sort_unstable_by_key(|c| c.core.start);
    Ok(ChunkedRun {
        tree,
        chunks,
        finished,
        timings,
    })
}

/// [`run`], handing each chunk's final labels to `sink` (from several threads, in no
/// particular order) instead of keeping them.
pub fn run_streaming(
    src: &dyn AffinitySource,
    params: &ChunkedParams,
    progress: impl Fn(usize, usize) + Sync,
    sink: impl Fn(ChunkLabels) -> Result<()> + Sync,
) -> Result<(TaskTree, Finished, Timings)> {
    params.watershed.check()?;
    let tree = TaskTree::new(src.shape(), params.chunk_size)?;
    let threads = if params.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        params.threads
    };
    let leaves = if tree.is_empty() {
        0
    } else {
        voxel_count(tree.counts(0))
    };
    let total = tree.len() + 1 + leaves;
    let done = AtomicUsize::new(0);
    let tick = || progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);
    let mut timings = Timings::default();
    let mut levels: Vec<Vec<TaskOutput>> = Vec::new();
    for level in 0..tree.levels() {
        let t0 = Instant::now();
        let tasks = tree.tasks(level);
        let below = levels.last();
        let counts_below = (level > 0).then(|| tree.counts(level - 1));
        let cost = |t: &TaskId| voxel_count(tree.core(*t).shape());
        let outs = parallel(&tasks, threads, cost, |&t| {
            let kids: Vec<&TaskOutput> = match (below, counts_below) {
                (Some(below), Some([_, cy, cx])) => tree
                    .children(t)
                    .iter()
                    .map(|c| &below[(c.index[0] * cy + c.index[1]) * cx + c.index[2]])
                    .collect(),
                _ => Vec::new(),
            };
            let out = run_task(src, &tree, t, params, &kids)?;
            tick();
            Ok(out)
        })?;
        if let Some(below) = levels.last_mut() {
            for o in below.iter_mut() {
                o.up = Up::default();
            }
        }
        levels.push(outs);
        timings.levels[level.min(15)] += t0.elapsed().as_secs_f64();
    }
    let t0 = Instant::now();
    let parts: Vec<GraphPart> = levels
        .iter_mut()
        .flatten()
        .map(|o| std::mem::take(&mut o.graph))
        .collect();
    let (basins, supervoxels, graph) = supervoxel_graph(parts, &params.watershed)?;
    timings.graph = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let agglomeration = agglomerate(&graph, params.threshold);
    timings.agglomeration = t0.elapsed().as_secs_f64();
    let finished = Finished {
        basins,
        supervoxels,
        graph,
        agglomeration,
    };
    tick();
    let t0 = Instant::now();
    let mut leaves_out = if levels.is_empty() {
        Vec::new()
    } else {
        std::mem::take(&mut levels[0])
    };
    let index_of = |t: TaskId| {
        let [_, cy, cx] = tree.counts(t.level);
        (t.index[0] * cy + t.index[1]) * cx + t.index[2]
    };
    {
        let cells: Vec<Mutex<Option<TaskOutput>>> =
            leaves_out.drain(..).map(|o| Mutex::new(Some(o))).collect();
        parallel(
            &cells,
            threads,
            |_| 0,
            |cell| {
                let leaf = cell
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .ok_or_else(|| err("leaf taken twice"))?;
                let ancestors: Vec<&[(u64, u64)]> = tree
                    .ancestors(leaf.task)
                    .iter()
                    .map(|a| levels[a.level][index_of(*a)].renames.as_slice())
                    .collect();
                let labels = chunk_labels(&leaf, &ancestors, &finished)?;
                let core = leaf.core;
                drop(leaf);
                sink(ChunkLabels { core, labels })?;
                tick();
                Ok(())
            },
        )?;
    }
    timings.labels = t0.elapsed().as_secs_f64();
    Ok((tree, finished, timings))
}

#[cfg(test)]
mod tests;

/// Little-endian encoding of task outputs (`CGCT`, version 1).
mod codec {
    use super::*;

    pub(super) struct W(pub Vec<u8>);

    impl W {
        pub fn u64(&mut self, v: u64) {
            self.0.extend_from_slice(&v.to_le_bytes());
        }
        pub fn f32(&mut self, v: f32) {
            self.0.extend_from_slice(&v.to_le_bytes());
        }
        pub fn f64(&mut self, v: f64) {
            self.0.extend_from_slice(&v.to_le_bytes());
        }
        pub fn usizes(&mut self, v: &[usize]) {
            for &x in v {
                self.u64(x as u64);
            }
        }
        pub fn len(&mut self, n: usize) {
            self.u64(n as u64);
        }
        pub fn contacts(&mut self, v: &[Contact]) {
            self.len(v.len());
            for c in v {
                self.u64(c.a);
                self.u64(c.b);
                self.f64(c.sum);
                self.u64(c.area);
                self.f32(c.max);
            }
        }
        pub fn pairs(&mut self, v: &[(u64, u64)]) {
            self.len(v.len());
            for &(a, b) in v {
                self.u64(a);
                self.u64(b);
            }
        }
        pub fn u64s(&mut self, v: &[u64]) {
            self.len(v.len());
            for &x in v {
                self.u64(x);
            }
        }
    }

    pub(super) struct R<'a>(pub &'a [u8]);

    impl R<'_> {
        fn take<const N: usize>(&mut self) -> Result<[u8; N]> {
            if self.0.len() < N {
                return Err(err("task output is truncated"));
            }
            let (head, rest) = self.0.split_at(N);
            self.0 = rest;
            Ok(head.try_into().expect("N bytes"))
        }
        pub fn take_u8(&mut self) -> Result<[u8; 1]> {
            self.take()
        }
        pub fn u64(&mut self) -> Result<u64> {
            Ok(u64::from_le_bytes(self.take()?))
        }
        pub fn u16(&mut self) -> Result<u16> {
            Ok(u16::from_le_bytes(self.take()?))
        }
        pub fn u32(&mut self) -> Result<u32> {
            Ok(u32::from_le_bytes(self.take()?))
        }
        pub fn f32(&mut self) -> Result<f32> {
            Ok(f32::from_le_bytes(self.take()?))
        }
        pub fn f64(&mut self) -> Result<f64> {
            Ok(f64::from_le_bytes(self.take()?))
        }
        pub fn usize3(&mut self) -> Result<[usize; 3]> {
            Ok([
                self.u64()? as usize,
                self.u64()? as usize,
                self.u64()? as usize,
            ])
        }
        /// A length, checked against the bytes left (each item takes at least `item` bytes).
        pub fn len(&mut self, item: usize) -> Result<usize> {
            let n = self.u64()?;
            if n.saturating_mul(item as u64) > self.0.len() as u64 {
                return Err(err(format!("task output claims {n} items past its end")));
            }
            Ok(n as usize)
        }
        pub fn contacts(&mut self) -> Result<Vec<Contact>> {
            let n = self.len(36)?;
            (0..n)
                .map(|_| {
                    Ok(Contact {
                        a: self.u64()?,
                        b: self.u64()?,
                        sum: self.f64()?,
                        area: self.u64()?,
                        max: self.f32()?,
                    })
                })
                .collect()
        }
        pub fn pairs(&mut self) -> Result<Vec<(u64, u64)>> {
            let n = self.len(16)?;
            (0..n).map(|_| Ok((self.u64()?, self.u64()?))).collect()
        }
        pub fn u64s(&mut self) -> Result<Vec<u64>> {
            let n = self.len(8)?;
            (0..n).map(|_| self.u64()).collect()
        }
    }
}

const MAGIC: &[u8; 8] = b"CGCT\x01\0\0\0";
const GRAPH_MAGIC: &[u8; 8] = b"CGCG\x01\0\0\0";
const FINISHED_MAGIC: &[u8; 8] = b"CGCF\x01\0\0\0";

fn strip<'a>(bytes: &'a [u8], magic: &[u8; 8], what: &str) -> Result<codec::R<'a>> {
    bytes
        .strip_prefix(magic)
        .map(codec::R)
        .ok_or_else(|| err(format!("not a {what} (bad magic or version)")))
}

fn at_end(r: &codec::R, what: &str) -> Result<()> {
    if r.0.is_empty() {
        Ok(())
    } else {
        Err(err(format!("{} bytes after the {what}", r.0.len())))
    }
}

impl GraphPart {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = codec::W(GRAPH_MAGIC.to_vec());
        w.pairs(&self.basins);
        w.contacts(&self.contacts);
        w.0
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = strip(bytes, GRAPH_MAGIC, "graph part")?;
        let part = Self {
            basins: r.pairs()?,
            contacts: r.contacts()?,
        };
        at_end(&r, "graph part")?;
        Ok(part)
    }
}

impl Finished {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = codec::W(FINISHED_MAGIC.to_vec());
        w.u64s(&self.basins);
        w.u64s(&self.supervoxels);
        let g = &self.graph;
        w.u64s(&g.ids);
        w.u64s(&g.sizes);
        w.len(g.edges.len());
        for e in &g.edges {
            w.u64(e.a as u64);
            w.u64(e.b as u64);
            w.f64(e.sum);
            w.u64(e.area);
            w.f32(e.max);
        }
        let a = &self.agglomeration;
        w.u64s(&a.components);
        w.len(a.merges.len());
        for m in &a.merges {
            w.u64(m.a);
            w.u64(m.b);
            w.f64(m.affinity);
        }
        w.len(a.frozen.len());
        w.0.extend(a.frozen.iter().map(|&f| f as u8));
        w.0
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = strip(bytes, FINISHED_MAGIC, "finished graph")?;
        let basins = r.u64s()?;
        let supervoxels = r.u64s()?;
        let ids = r.u64s()?;
        let sizes = r.u64s()?;
        let n = r.len(36)?;
        let node = |v: u64| {
            u32::try_from(v)
                .ok()
                .filter(|&i| (i as usize) < ids.len())
                .ok_or_else(|| err(format!("edge to node {v} of {}", ids.len())))
        };
        let edges = (0..n)
            .map(|_| {
                Ok(RegionEdge {
                    a: node(r.u64()?)?,
                    b: node(r.u64()?)?,
                    sum: r.f64()?,
                    area: r.u64()?,
                    max: r.f32()?,
                })
            })
            .collect::<Result<_>>()?;
        let components = r.u64s()?;
        let n = r.len(24)?;
        let merges = (0..n)
            .map(|_| {
                Ok(crate::Merge {
                    a: r.u64()?,
                    b: r.u64()?,
                    affinity: r.f64()?,
                })
            })
            .collect::<Result<_>>()?;
        let n = r.len(1)?;
        let frozen: Vec<bool> = (0..n)
            .map(|_| Ok(r.take_u8()?[0] != 0))
            .collect::<Result<_>>()?;
        at_end(&r, "finished graph")?;
        if supervoxels.len() != basins.len()
            || sizes.len() != ids.len()
            || components.len() != ids.len()
            || frozen.len() != ids.len()
        {
            return Err(err("finished graph: lengths differ"));
        }
        Ok(Self {
            basins,
            supervoxels,
            graph: RegionGraph { ids, sizes, edges },
            agglomeration: Agglomeration {
                components,
                merges,
                frozen,
            },
        })
    }
}

impl TaskOutput {
    /// The output as bytes (little-endian, self-describing lengths).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = codec::W(Vec::with_capacity(64 + 4 * self.labels.len()));
        w.0.extend_from_slice(MAGIC);
        w.u64(self.task.level as u64);
        w.usizes(&self.task.index);
        w.usizes(&self.core.start);
        w.usizes(&self.core.stop);
        match &self.labels {
            PieceLabels::U16(v) => {
                w.0.push(2);
                w.len(v.len());
                for &l in v {
                    w.0.extend_from_slice(&l.to_le_bytes());
                }
            }
            PieceLabels::U32(v) => {
                w.0.push(4);
                w.len(v.len());
                for &l in v {
                    w.0.extend_from_slice(&l.to_le_bytes());
                }
            }
        }
        w.u64s(&self.names);
        w.pairs(&self.renames);
        w.pairs(&self.graph.basins);
        w.contacts(&self.graph.contacts);
        let up = &self.up;
        w.pairs(&up.pieces);
        w.len(up.links.len());
        for l in &up.links {
            w.u64(l.name);
            w.u64(l.voxel);
            w.0.push(l.dir);
        }
        w.len(up.uncertain.len());
        for u in &up.uncertain {
            w.u64(u.voxel);
            w.u64(u.name);
            for &n in &u.neighbours {
                w.u64(n);
            }
        }
        for f in &up.faces {
            w.u64s(f);
        }
        for f in &up.face_affs {
            w.len(f.len());
            for &v in f {
                w.f32(v);
            }
        }
        w.contacts(&up.contacts);
        w.0
    }

    /// Reads what [`TaskOutput::to_bytes`] wrote.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let rest = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| err("not a task output (bad magic or version)"))?;
        let mut r = codec::R(rest);
        let level = r.u64()? as usize;
        let index = r.usize3()?;
        let core = Box3::new(r.usize3()?, r.usize3()?);
        let labels = match r.take_u8()? {
            [2] => {
                let n = r.len(2)?;
                PieceLabels::U16((0..n).map(|_| r.u16()).collect::<Result<_>>()?)
            }
            [4] => {
                let n = r.len(4)?;
                PieceLabels::U32((0..n).map(|_| r.u32()).collect::<Result<_>>()?)
            }
            [w] => return Err(err(format!("label width {w}"))),
        };
        let names = r.u64s()?;
        let renames = r.pairs()?;
        let basins = r.pairs()?;
        let contacts = r.contacts()?;
        let pieces = r.pairs()?;
        let n = r.len(17)?;
        let links = (0..n)
            .map(|_| {
                let (name, voxel) = (r.u64()?, r.u64()?);
                let [dir] = r.take_u8()?;
                if dir >= 6 {
                    return Err(err(format!("link direction {dir}")));
                }
                Ok(Link { name, voxel, dir })
            })
            .collect::<Result<_>>()?;
        let n = r.len(64)?;
        let uncertain = (0..n)
            .map(|_| {
                let (voxel, name) = (r.u64()?, r.u64()?);
                let mut neighbours = [0u64; 6];
                for nb in &mut neighbours {
                    *nb = r.u64()?;
                }
                Ok(Uncertain {
                    voxel,
                    name,
                    neighbours,
                })
            })
            .collect::<Result<_>>()?;
        let mut faces: [Vec<u64>; 6] = Default::default();
        for f in &mut faces {
            *f = r.u64s()?;
        }
        let mut face_affs: [Vec<f32>; 3] = Default::default();
        for f in &mut face_affs {
            let n = r.len(4)?;
            *f = (0..n).map(|_| r.f32()).collect::<Result<_>>()?;
        }
        let up_contacts = r.contacts()?;
        if !r.0.is_empty() {
            return Err(err(format!("{} bytes after the task output", r.0.len())));
        }
        Ok(Self {
            task: TaskId { level, index },
            core,
            labels,
            names,
            renames,
            graph: GraphPart { basins, contacts },
            up: Up {
                pieces,
                links,
                uncertain,
                faces,
                face_affs,
                contacts: up_contacts,
            },
        })
    }

    /// Voxels this task left uncertain (for its parent to decide).
    pub fn uncertain_voxels(&self) -> usize {
        self.up.uncertain.len()
    }
}
