//! Volume formats for the pipeline and the server: Neuroglancer precomputed volumes (info,
//! `raw` and `compressed_segmentation` chunks, optional gzip, unsharded and sharded), the
//! sharded format on its own (also for meshes and skeletons), `.npy` files and a minimal zarr
//! v2/v3 reader, over local files and object stores (GCS, S3, HTTP) with an async API.
//!
//! # Axis conventions
//!
//! Arrays ([`Array`]) are C-ordered with shape `[z, y, x]`, or `[c, z, y, x]` for several
//! channels, like the `.npy` fixtures: memory holds x fastest, which is exactly Neuroglancer's
//! Fortran-ordered `[x, y, z, c]` chunk layout. Coordinates, sizes and boxes ([`BBox`], the
//! fields of [`Info`] and [`Scale`]) are `[x, y, z]`, as in precomputed `info` files.
//! [`Array::reversed_axes`] turns a `[z, y, x]` array into an `[x, y, z]` one and back;
//! [`BBox::shape_zyx`] gives the array shape of a box.
//!
//! # Storage conventions
//!
//! Unsharded chunks are written gzipped by default ([`VolumeOptions::gzip`]): as `name.gz`
//! on local disk (cloud-volume's convention), with `Content-Encoding: gzip` on GCS/S3. Reads
//! accept plain files, `.gz` files and gzip bodies served undecoded. Sharded scales put their
//! chunks, keyed by compressed Morton code, in `{shard}.shard` files ([`ShardWriter`],
//! [`ShardReader`]) and use the spec's `data_encoding`.
//!
//! # Limits
//!
//! Chunk encodings other than `raw` and `compressed_segmentation` (jpeg, png, compresso)
//! are parsed in the info but do not decode; only the first of a scale's `chunk_sizes` is
//! used; writes to a chunk or shard that another writer is rewriting race (last wins). The
//! zarr reader lists its own limits in [`zarr`].
//!
//! ```no_run
//! # async fn demo() -> cg_volume::Result<()> {
//! use cg_volume::{BBox, Volume};
//! let vol = Volume::open("gs://bucket/segmentation").await?;
//! let labels = vol.read_box::<u64>(0, BBox::new([0, 0, 0], [64, 64, 32])).await?;
//! assert_eq!(labels.shape(), &[32, 64, 64]); // z, y, x
//! # Ok(()) }
//! ```

mod array;
pub mod cseg;
mod dtype;
mod error;
mod info;
pub mod morton;
pub mod murmur;
pub mod npy;
mod precomputed;
pub mod shard;
mod store;
pub mod zarr;

pub use array::{Array, BBox, DynArray, IntoDyn};
pub use dtype::{DataType, Element};
pub use error::{Error, Result};
pub use info::{Encoding, Info, Scale, VolumeType};
pub use precomputed::{Volume, VolumeOptions};
pub use shard::{DataEncoding, ShardHash, ShardReader, ShardSpec, ShardWriter};
pub use store::Store;
pub use zarr::ZarrArray;
