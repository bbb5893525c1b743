//! From an affinity graph to supervoxels and their agglomeration, and how good the result is.
//!
//! - [`affinity`]: the 3-channel affinity graph (waterz convention) and how to derive it from a
//!   boundary probability map.
//! - [`watershed`](mod@watershed): Zlateski & Seung's watershed on the affinity graph (steepest ascent with
//!   `T_low`/`T_high`, plateau division, basins), then size-dependent single linkage of the
//!   basin graph and dust removal: supervoxels.
//! - [`region_graph`]: for each pair of touching segments the sum, count (contact area) and
//!   maximum of the affinities between them.
//! - [`chunked`]: the same, as a tree of chunk tasks that can run as separate processes, with
//!   the same result.
//! - [`agglomeration`]: waterz-style mean-affinity hierarchical agglomeration of a region graph
//!   down to a threshold, with its merge history.
//! - [`metrics`]: adapted Rand error and variation of information against ground truth.
//! - [`synthetic`]: seeded Voronoi volumes with ground truth and noisy boundary maps.
//! - [`defects`]: boundary maps with the defects of real predictions (gaps, false membranes,
//!   correlated noise, weak sections) over any label volume.
//! - [`npy`]: a minimal `.npy` reader and writer for fixtures and benchmarks.
//!
//! Volumes are C-order arrays with axes (z, y, x); a shape is `[nz, ny, nx]`.
//!
//! # Chunked exactness
//!
//! The whole-volume functions are the reference. [`chunked`] runs them as a tree of tasks
//! (leaf chunks with a ghost margin, then 2×2×2 parents up to one root) and reproduces
//! them exactly: the same supervoxels (named by first voxel's global raster index + 1
//! instead of `1..=K`, the same order), the same region graph (sums up to the last bits
//! of an `f64`) and the same agglomeration. Tested against the whole volume on noisy,
//! quantized (plateaus everywhere), tiny random and gala volumes, for many chunk shapes.
//!
//! - Every decision of the watershed about a voxel's link depends on its own and its
//!   neighbours' edges, except plateau division, which can reach across a plateau. A voxel
//!   at plateau distance `d` from its exit is decided by the plateau within `d` of it, so a
//!   cut-out decides it exactly when it lies `d + 2` voxels inside the cut-out's faces (and
//!   a maximum plateau below `T_high` exactly when it stays 2 voxels inside). Leaves label
//!   the components of their core's certain links (*pieces*); parents re-run the undecided
//!   voxels on boxes around them and join pieces along links across their children's
//!   faces; a piece that touches no face inside the volume is a whole-volume basin. The
//!   basin graph (contacts summed per pair inside leaves and across faces by parents) is
//!   then the whole volume's, and size-dependent single linkage, dust removal and
//!   agglomeration run on it once ([`chunked::finish`]).
//! - The older per-chunk variants ([`watershed::watershed_chunk`],
//!   [`agglomeration::agglomerate_frozen`]) decide what they can inside one chunk and
//!   *freeze* the rest: a basin with an uncertain voxel (the whole plateau touching a face)
//!   is frozen; size-dependent single linkage visits edges in one global order (affinity,
//!   then the global raster index of the basins' first voxels), and an edge from a frozen
//!   segment to one smaller than the size limit freezes it instead of merging, while a
//!   segment at or above the limit stays open (from then on it only merges because of the
//!   other side's size), so an unfrozen segment holds exactly the interior basins of its
//!   whole-volume segment; mean-affinity agglomeration is reducible (a merged edge's score
//!   lies between the scores it combines), so popping an edge to a frozen node freezes the
//!   other end and the unfrozen clusters are final. They are the building blocks for
//!   making the graph steps of [`chunked`] hierarchical too (today they hold the whole
//!   basin graph in one task).

pub mod affinity;
pub mod agglomeration;
pub mod chunked;
pub mod defects;
pub mod metrics;
pub mod npy;
pub mod region_graph;
pub mod rng;
pub mod synthetic;
mod unionfind;
pub mod watershed;

pub use affinity::{Affinities, Box3};
pub use agglomeration::{agglomerate, agglomerate_frozen, Agglomeration, Merge};
pub use metrics::{evaluate, Scores};
pub use region_graph::{RegionEdge, RegionGraph};
pub use watershed::{watershed, ChunkSegmentation, Segmentation, WatershedParams};

/// What can go wrong with the inputs of this crate.
#[derive(Debug, thiserror::Error)]
pub enum SegError {
    #[error("{what} holds {got} values, but shape {shape:?} needs {want}")]
    Length {
        what: &'static str,
        shape: [usize; 3],
        want: usize,
        got: usize,
    },
    #[error("shape {0:?} has more voxels than this crate indexes (2^31 - 1)")]
    TooLarge([usize; 3]),
    #[error("box {start:?}..{stop:?} is empty or outside the volume {shape:?}")]
    Box {
        start: [usize; 3],
        stop: [usize; 3],
        shape: [usize; 3],
    },
    #[error("invalid parameter: {0}")]
    Param(String),
    #[error("chunked segmentation: {0}")]
    Chunked(String),
    #[error(transparent)]
    Npy(#[from] npy::NpyError),
}

pub type Result<T, E = SegError> = std::result::Result<T, E>;

/// Number of voxels of a shape.
pub fn voxel_count(shape: [usize; 3]) -> usize {
    shape[0] * shape[1] * shape[2]
}

/// Checks that a volume of `shape` can be indexed with 31-bit voxel indices, which the
/// watershed uses to halve the memory of its queues (the 32nd bit marks finished labels).
pub(crate) fn check_indexable(shape: [usize; 3]) -> Result<usize> {
    let n = shape[0]
        .checked_mul(shape[1])
        .and_then(|v| v.checked_mul(shape[2]))
        .ok_or(SegError::TooLarge(shape))?;
    if n >= (1usize << 31) {
        return Err(SegError::TooLarge(shape));
    }
    Ok(n)
}
