//! Errors of this crate.

/// What can go wrong meshing, simplifying, encoding or reading a volume.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("label block of shape {shape:?} (z, y, x) needs {expected} labels, got {got}")]
    BlockSize {
        shape: [usize; 3],
        expected: usize,
        got: usize,
    },
    #[error("label block of shape {0:?} (z, y, x) is too large: cell indices must fit in 32 bits")]
    BlockTooLarge([usize; 3]),
    #[error("resolution {0:?} must be finite and positive")]
    Resolution([f64; 3]),
    #[error("mesh has a triangle index {index} but only {vertices} vertices")]
    IndexOutOfRange { index: u32, vertices: usize },
    #[error("mesh has {0} vertices: more than the format can index")]
    TooManyVertices(usize),
    #[error("a Draco fragment needs at least one triangle (skip empty fragments)")]
    EmptyFragment,
    #[error("quantization: {0}")]
    Quantization(String),
    #[error("malformed fragment: {0}")]
    Decode(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}
