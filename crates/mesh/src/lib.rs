//! Segment meshes for Neuroglancer: multilabel marching cubes over chunked label blocks,
//! simplification that keeps chunk faces crack-free, and the Draco and precomputed-legacy
//! fragment encodings.
//!
//! The pipeline for one chunk:
//!
//! 1. [`mesh_labels`] meshes every segment of a `(z, y, x)` label block (the chunk plus a
//!    1-voxel overlap on its high faces) in one pass. Vertex positions are functions of global
//!    integer voxel coordinates only, so the fragments of neighbouring chunks meet exactly.
//! 2. [`simplify`] reduces each mesh (meshoptimizer) to a target ratio under a maximum error
//!    in nm, never moving a vertex on the block's faces. meshoptimizer's own error is an
//!    area-weighted quadric estimate that lets thin protrusions retract far beyond it, so by
//!    default ([`SimplifyParams::distance_bound`]) a fine pass runs once over the full mesh
//!    and coarse passes over its result keep, round by round, what they left too far;
//!    [`distance::SurfaceIndex`] measures the real vertex-to-surface distances.
//!    For graph chunks, [`partition_by_owner`] cuts a block's meshes into fragments by which
//!    voxel owns each cell, so overlapping blocks agree on every triangle.
//! 3. [`draco::encode`] writes a Draco fragment quantized on a grid shared by all chunks
//!    ([`draco::GridQuantization`]); [`legacy::encode`] writes the uncompressed
//!    precomputed format.

mod error;
mod mc;
mod mesh;
mod partition;
mod rans;
mod tables;

pub mod distance;
pub mod draco;
pub mod legacy;
mod simplify;

pub use error::MeshError;
pub use mc::{mesh_labels, BlockGeometry, Label, LabelMesh};
pub use mesh::{Mesh, Topology};
pub use partition::partition_by_owner;
pub use simplify::{simplify, simplify_many, Simplified, SimplifyParams};
