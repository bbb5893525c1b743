//! From an affinity graph to supervoxels and their agglomeration, and how good the result is.
//!
//! - [`affinity`]: the 3-channel affinity graph (waterz convention) and how to derive it from a
//!   boundary probability map.
//! - [`watershed`]: Zlateski & Seung's watershed on the affinity graph (steepest ascent with
//!   `T_low`/`T_high`, plateau division, basins), then size-dependent single linkage of the
//!   basin graph and dust removal: supervoxels.
//! - [`region_graph`]: for each pair of touching segments the sum, count (contact area) and
//!   maximum of the affinities between them.
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
//! The whole-volume functions are the reference. The chunk variants
//! ([`watershed::watershed_chunk`], [`agglomeration::agglomerate_frozen`]) are built so that a
//! later pipeline can run them per chunk and reproduce the whole-volume result exactly:
//!
//! - Every decision of the watershed about a voxel depends on its own and its neighbours'
//!   edges, except plateau division, which can reach across a whole plateau. A chunk is cut
//!   out with a ghost margin; voxels on a face where the cut-out ends inside the volume miss
//!   an edge, so they, and every plateau they touch, are *uncertain*. A basin with no
//!   uncertain voxel is exactly the whole-volume basin (tested against the whole volume on
//!   tens of thousands of random cuts); the rest are *frozen*.
//! - Size-dependent single linkage visits edges in one global order (affinity, then the global
//!   raster index of the basins' first voxels). An edge from a frozen segment to one smaller
//!   than the size limit freezes it instead of merging (whether it joins depends on what
//!   the chunk cannot see); a segment at or above the limit stays open, since from then on it
//!   only merges because of the other side's size. So the sizes that steer decisions are
//!   never guesses: an unfrozen segment holds exactly the interior basins of its
//!   whole-volume segment (frozen voxels may still join it in a parent), and only unfrozen
//!   segments are removed as dust.
//! - Mean-affinity agglomeration is reducible (a merged edge's score lies between the scores
//!   it combines), so any order that merges a pair whose edge beats all edges around both
//!   ends yields the same hierarchy. Popping an edge to a frozen node freezes the other end;
//!   the merges that remain are exactly such dominant pairs, so unfrozen clusters are final.
//! - Frozen segments are handed up (the next step, not built yet): a parent cuts out the
//!   union of its children (faces between children become interior), re-runs the decisions
//!   on what was frozen and joins the faces, until the root leaves nothing frozen.
//!
//! Unfrozen segments of a chunk are named by their first voxel's global raster index + 1, a
//! name that does not depend on the chunking; only when a parent attaches frozen voxels
//! before that first voxel does the name change, and the parent knows when it does.

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
