//! Synapses for the ChunkedGraph: one job, the wiring diagram at any timestamp. Synapse
//! detections (a presynaptic point, a postsynaptic point, a size and a score) are mapped to
//! the supervoxels under their points and stored in the graph's own Bigtable table, keyed by
//! supervoxel; queries resolve supervoxels to neurons through the graph at the time asked, so
//! answers follow edits at once and past timestamps give past answers.
//!
//! - [`csv`] reads synapse tables (CSV; Parquet is not read, see there why).
//! - [`mapping`] finds the supervoxel under each point in the precomputed supervoxel volume.
//! - [`cleft`] turns a cleft-probability volume into synapses (threshold, connected
//!   components, partners by the supervoxels on either side).
//! - [`SynapseStore`] writes mapped synapses ([`SynapseStore::write`]) and answers the
//!   synapses of a root, the connectivity matrix of a set of roots and a root's partners
//!   ranked by synapse count ([`query`]).
//! - [`schema`] is the Bigtable layout.
//!
//! Supervoxels never change and roots do, so synapses are keyed by supervoxel: a root's
//! synapses are read from the rows of its supervoxels (its leaves, which are fixed when the
//! root is made), and the partner side is mapped to roots at query time. Each record keeps
//! its partner's root at write time only as a hint, used when it is still a root then.

pub mod cleft;
pub mod csv;
pub mod mapping;
pub mod query;
pub mod schema;
mod store;

pub use query::{Connectivity, Direction, Partner, ResolvedSynapse};
pub use store::{SynapseStore, WriteReport};

use cg_graph::GraphError;

/// A synapse as detected: points in voxels of the supervoxel volume's finest scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Synapse {
    pub id: u64,
    pub pre: [i64; 3],
    pub post: [i64; 3],
    /// Cleft size in voxels (or whatever the detector reports).
    pub size: u32,
    /// The detector's confidence.
    pub score: f32,
}

/// A synapse with the supervoxel under each point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MappedSynapse {
    pub id: u64,
    pub pre_sv: u64,
    pub post_sv: u64,
    pub pre: [i32; 3],
    pub post: [i32; 3],
    pub size: u32,
    pub score: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum SynapseError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error("storage: {0}")]
    Storage(#[from] cg_bigtable::Error),
    #[error("supervoxel volume: {0}")]
    Volume(#[from] cg_volume::Error),
    /// Bad input: the message names the problem (and the line, for files).
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    NotFound(String),
    #[error("the synapse rows hold data this version cannot read: {0}")]
    Corrupt(String),
}

impl SynapseError {
    /// Whether the caller sent something wrong (a 4xx in HTTP terms).
    pub fn is_client_error(&self) -> bool {
        match self {
            SynapseError::Graph(g) => g.is_client_error(),
            SynapseError::InvalidInput(_) | SynapseError::NotFound(_) => true,
            _ => false,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            SynapseError::NotFound(_) | SynapseError::Graph(GraphError::NotFound(_))
        )
    }
}

pub type Result<T, E = SynapseError> = std::result::Result<T, E>;
