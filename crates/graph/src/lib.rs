//! The ChunkedGraph: an octree of chunks whose layers group supervoxels into ever larger
//! components, up to one root per neuron, stored in Bigtable with every change timestamped.
//!
//! So far this crate holds the seeded synthetic generator used by tests and benchmarks.

pub mod synthetic;
