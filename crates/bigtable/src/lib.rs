//! The one way chunkedgraph talks to Bigtable: a gRPC client for the data and
//! table-admin APIs that works the same against Google's emulator, Cloud
//! Bigtable, or a caller-supplied channel (our in-process emulator).
//!
//! ```no_run
//! # async fn demo() -> cg_bigtable::Result<()> {
//! use cg_bigtable::{filter, mutation, Client, Config, ReadRows, Target};
//!
//! let client = Config::new(Target::Emulator("127.0.0.1:8086".into())).connect().await?;
//! client
//!     .mutate_row("t", "row1", vec![mutation::set_cell("f", "q", mutation::now_micros(), "v")])
//!     .await?;
//! let rows = client
//!     .read_rows_vec("t", ReadRows::new().prefix("row").filter(filter::cells_per_column_limit(1)))
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Scans are streamed and resumed after the last committed row when a retryable
//! error breaks them; MutateRows re-sends only the entries that failed
//! retryably. Calls that are not idempotent (CheckAndMutateRow,
//! ReadModifyWriteRow, writes stamped with server time) are sent once.

mod admin;
mod client;
mod error;
pub mod filter;
mod merger;
pub mod mutation;
mod read;
mod retry;
mod row;
mod transport;

pub use admin::{gc, FamilyChange, TableAdmin};
pub use client::{Client, Config, RowStream, SampleRowKey, Target};
pub use error::{Error, FailedMutation, Result};
pub use read::{row_range, ReadRows};
pub use retry::RetryPolicy;
pub use row::{Cell, Column, Family, Row};
pub use tonic::transport::Channel;
pub use tonic::Code;

/// The generated protocol types, for building anything the helpers do not cover.
pub mod proto {
    pub use googleapis_tonic_google_bigtable_admin_v2::google::bigtable::admin::v2 as admin;
    pub use googleapis_tonic_google_bigtable_v2::google::bigtable::v2;
    pub use googleapis_tonic_google_bigtable_v2::google::rpc;
}
