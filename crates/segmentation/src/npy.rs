//! A minimal NumPy `.npy` reader and writer: little-endian, C order, the dtypes the fixtures
//! and benchmarks use (`u1`, `u4`, `u8`, `i4`, `i8`, `f4`, `f8`). Format versions 1.0 to 3.0
//! are read (they differ only in the width of the header length); 1.0 is written, or 2.0 when
//! the header does not fit 1.0's 16-bit length.

use std::io::Write;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("not a .npy file: {0}")]
    Format(String),
    #[error("dtype {found} where {want} was expected")]
    Dtype { found: String, want: &'static str },
    #[error("unsupported .npy layout: {0}")]
    Unsupported(String),
}

/// An element type of an `.npy` array.
pub trait Element: Copy + Default {
    /// The little-endian `descr` string, e.g. `<f4`.
    const DESCR: &'static str;
    const SIZE: usize;
    fn read_le(bytes: &[u8]) -> Self;
    fn write_le(self, out: &mut Vec<u8>);
}

macro_rules! element {
    ($t:ty, $descr:expr) => {
        impl Element for $t {
            const DESCR: &'static str = $descr;
            const SIZE: usize = std::mem::size_of::<$t>();
            fn read_le(bytes: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(bytes);
                <$t>::from_le_bytes(a)
            }
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    };
}
element!(u8, "|u1");
element!(u32, "<u4");
element!(u64, "<u8");
element!(i32, "<i4");
element!(i64, "<i8");
element!(f32, "<f4");
element!(f64, "<f8");

/// An array read from a file: its shape and values in C order.
#[derive(Debug, Clone, PartialEq)]
pub struct Array<T> {
    pub shape: Vec<usize>,
    pub data: Vec<T>,
}

impl<T> Array<T> {
    /// The shape as (z, y, x), if the array has three axes.
    pub fn shape3(&self) -> Option<[usize; 3]> {
        <[usize; 3]>::try_from(self.shape.as_slice()).ok()
    }
}

/// Reads an `.npy` file whose dtype is exactly `T`.
pub fn read<T: Element>(path: impl AsRef<Path>) -> Result<Array<T>, NpyError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse(&bytes)
}

/// Parses the bytes of an `.npy` file whose dtype is exactly `T`.
pub fn parse<T: Element>(bytes: &[u8]) -> Result<Array<T>, NpyError> {
    let (header, body) = split_header(bytes)?;
    let descr = dict_value(header, "descr")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    // A one-byte dtype may be written with any byte-order mark.
    let same =
        descr == T::DESCR || (T::SIZE == 1 && descr.len() == 3 && descr[1..] == T::DESCR[1..]);
    if !same {
        return Err(NpyError::Dtype {
            found: descr.to_string(),
            want: T::DESCR,
        });
    }
    match dict_value(header, "fortran_order")?.as_str() {
        "False" => {}
        "True" => return Err(NpyError::Unsupported("Fortran order".into())),
        other => return Err(NpyError::Format(format!("fortran_order {other}"))),
    }
    let shape_text = dict_value(header, "shape")?;
    let shape = shape_text
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| NpyError::Format(format!("shape {shape_text}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| NpyError::Format(format!("shape {shape_text} overflows")))?;
    let need = count
        .checked_mul(T::SIZE)
        .ok_or_else(|| NpyError::Format(format!("shape {shape_text} overflows")))?;
    if body.len() < need {
        return Err(NpyError::Format(format!(
            "data holds {} bytes, shape {shape:?} needs {need}",
            body.len()
        )));
    }
    let data = body[..need].chunks_exact(T::SIZE).map(T::read_le).collect();
    Ok(Array { shape, data })
}

/// Writes `data` (C order) as an `.npy` file of the given shape.
pub fn write<T: Element>(
    path: impl AsRef<Path>,
    shape: &[usize],
    data: &[T],
) -> Result<(), NpyError> {
    let path = path.as_ref();
    let count: usize = shape.iter().product();
    if count != data.len() {
        return Err(NpyError::Format(format!(
            "shape {shape:?} needs {count} values, got {}",
            data.len()
        )));
    }
    let shape_text = match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape_text}, }}",
        T::DESCR
    );
    // The preamble (magic, version, length) plus the header is padded with spaces to a
    // multiple of 64 bytes and ends in a newline, so the data is aligned.
    let v1 = dict.len() + 11 < u16::MAX as usize;
    let preamble = if v1 { 10 } else { 12 };
    let total = (preamble + dict.len() + 1).div_ceil(64) * 64;
    while preamble + dict.len() + 1 < total {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = Vec::with_capacity(total + data.len() * T::SIZE);
    out.extend_from_slice(b"\x93NUMPY");
    if v1 {
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&(dict.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    for &v in data {
        v.write_le(&mut out);
    }
    let io = |source| NpyError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::File::create(path).map_err(io)?;
    file.write_all(&out).map_err(io)?;
    Ok(())
}

fn split_header(bytes: &[u8]) -> Result<(&str, &[u8]), NpyError> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(NpyError::Format("missing \\x93NUMPY magic".into()));
    }
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(NpyError::Unsupported(format!("format version {v}"))),
    };
    let end = start + len;
    if bytes.len() < end {
        return Err(NpyError::Format("header runs past the end".into()));
    }
    let header = std::str::from_utf8(&bytes[start..end])
        .map_err(|_| NpyError::Format("header is not text".into()))?;
    Ok((header, &bytes[end..]))
}

/// The text of one value of the header's Python dict literal, e.g. `'<f4'`, `False` or
/// `(50, 100, 200)`. The header is machine-written, so a small scanner is enough.
fn dict_value(header: &str, key: &str) -> Result<String, NpyError> {
    let missing = || NpyError::Format(format!("header has no '{key}': {header}"));
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))
        .ok_or_else(missing)?;
    let rest = &header[at + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':').ok_or_else(missing)?;
    let rest = rest.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')').map(|i| i + 1)
    } else {
        rest.find([',', '}'])
    }
    .ok_or_else(missing)?;
    Ok(rest[..end].trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_header_alignment() {
        let dir = std::env::temp_dir().join(format!("cg-seg-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.npy");
        let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5).collect();
        write(&path, &[2, 3, 4], &data).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            (bytes.len() - 24 * 4) % 64,
            0,
            "data starts 64-byte aligned"
        );
        let back: Array<f32> = read(&path).unwrap();
        assert_eq!(back.shape, vec![2, 3, 4]);
        assert_eq!(back.shape3(), Some([2, 3, 4]));
        assert_eq!(back.data, data);
        let err = read::<u32>(&path).unwrap_err();
        assert!(matches!(err, NpyError::Dtype { .. }), "{err}");
        write(&path, &[3], &[1u64, 2, 3]).unwrap();
        assert_eq!(read::<u64>(&path).unwrap().shape, vec![3]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The bytes numpy writes for a small array with the given header dict.
    fn numpy_bytes(dict: &str, payload: &[u8]) -> Vec<u8> {
        let mut header = dict.to_string();
        while !(10 + header.len() + 1).is_multiple_of(64) {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn parses_a_numpy_written_header() {
        // As numpy writes np.array([[1, 2]], dtype=np.uint32).
        let payload = [1u32.to_le_bytes(), 2u32.to_le_bytes()].concat();
        let bytes = numpy_bytes(
            "{'descr': '<u4', 'fortran_order': False, 'shape': (1, 2), }",
            &payload,
        );
        let a: Array<u32> = parse(&bytes).unwrap();
        assert_eq!(a.shape, vec![1, 2]);
        assert_eq!(a.data, vec![1, 2]);
        // Truncated data, Fortran order and big-endian data are refused, not misread.
        assert!(matches!(
            parse::<u32>(&bytes[..bytes.len() - 1]),
            Err(NpyError::Format(_))
        ));
        let fortran = numpy_bytes(
            "{'descr': '<u4', 'fortran_order': True, 'shape': (1, 2), }",
            &payload,
        );
        assert!(matches!(
            parse::<u32>(&fortran),
            Err(NpyError::Unsupported(_))
        ));
        let big = numpy_bytes(
            "{'descr': '>u4', 'fortran_order': False, 'shape': (1, 2), }",
            &payload,
        );
        assert!(matches!(parse::<u32>(&big), Err(NpyError::Dtype { .. })));
        // uint8 is written '|u1' by numpy; a scalar has shape ().
        let bytes = numpy_bytes(
            "{'descr': '|u1', 'fortran_order': False, 'shape': (), }",
            &[7],
        );
        let a: Array<u8> = parse(&bytes).unwrap();
        assert_eq!((a.shape.len(), a.data), (0, vec![7]));
        assert!(parse::<u32>(b"not an npy file").is_err());
    }
}
