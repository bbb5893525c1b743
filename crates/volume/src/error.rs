//! The crate's error type.

/// Everything that can go wrong reading or writing a volume.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A URL or path that names no store this crate can open.
    #[error("bad URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// The object store failed (network, permissions, ...).
    #[error("storage error at {path}: {source}")]
    Store {
        path: String,
        #[source]
        source: object_store::Error,
    },
    /// A required object (info file, chunk, array metadata) does not exist.
    #[error("{path} not found")]
    NotFound { path: String },
    /// A local file could not be read or written.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Metadata (info JSON, `.zarray`, `zarr.json`, `.npy` header) that is malformed or
    /// self-contradictory.
    #[error("invalid metadata in {path}: {reason}")]
    InvalidMetadata { path: String, reason: String },
    /// Stored bytes that do not decode: truncated chunks, bad shard indexes, broken gzip.
    #[error("corrupt data in {path}: {reason}")]
    Corrupt { path: String, reason: String },
    /// A valid feature of a format that this crate does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The caller asked for an element type other than the one stored.
    #[error("data type mismatch: stored {stored}, requested {requested}")]
    DataTypeMismatch { stored: String, requested: String },
    /// Bad arguments: boxes out of bounds, shapes that do not match their data.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn corrupt(path: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        path: path.into(),
        reason: reason.into(),
    }
}

pub(crate) fn invalid_meta(path: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::InvalidMetadata {
        path: path.into(),
        reason: reason.into(),
    }
}
