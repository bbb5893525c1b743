//! The ChunkedGraph: an octree of chunks whose layers group supervoxels into ever larger
//! components, up to one root per neuron, stored in Bigtable with every change timestamped.
//!
//! So far: the in-memory layer builder ([`hierarchy`]) and the seeded synthetic generator
//! ([`synthetic`]) used by tests and benchmarks.

pub mod hierarchy;
pub mod synthetic;
