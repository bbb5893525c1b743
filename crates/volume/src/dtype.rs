//! Element types: the runtime [`DataType`] tag and the [`Element`] trait that ties Rust scalar
//! types to it.

use std::fmt;

/// The element type of an array or volume, as named by the formats this crate reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
}

impl DataType {
    /// Every supported type, for lookups by name.
    pub const ALL: [DataType; 10] = [
        DataType::U8,
        DataType::I8,
        DataType::U16,
        DataType::I16,
        DataType::U32,
        DataType::I32,
        DataType::U64,
        DataType::I64,
        DataType::F32,
        DataType::F64,
    ];

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DataType::U8 | DataType::I8 => 1,
            DataType::U16 | DataType::I16 => 2,
            DataType::U32 | DataType::I32 | DataType::F32 => 4,
            DataType::U64 | DataType::I64 | DataType::F64 => 8,
        }
    }

    /// The name used by precomputed `info` files and zarr v3 (`uint32`, `float32`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DataType::U8 => "uint8",
            DataType::I8 => "int8",
            DataType::U16 => "uint16",
            DataType::I16 => "int16",
            DataType::U32 => "uint32",
            DataType::I32 => "int32",
            DataType::U64 => "uint64",
            DataType::I64 => "int64",
            DataType::F32 => "float32",
            DataType::F64 => "float64",
        }
    }

    /// Parses a precomputed / zarr v3 name; case-insensitive as Neuroglancer's spec requires.
    pub fn from_name(name: &str) -> Option<DataType> {
        let lower = name.to_ascii_lowercase();
        DataType::ALL.into_iter().find(|t| t.name() == lower)
    }

    /// The little-endian NumPy type string (`<u4`, `|u1`, ...), as written in `.npy` headers
    /// and zarr v2 `dtype`.
    pub fn numpy_descr(self) -> &'static str {
        match self {
            DataType::U8 => "|u1",
            DataType::I8 => "|i1",
            DataType::U16 => "<u2",
            DataType::I16 => "<i2",
            DataType::U32 => "<u4",
            DataType::I32 => "<i4",
            DataType::U64 => "<u8",
            DataType::I64 => "<i8",
            DataType::F32 => "<f4",
            DataType::F64 => "<f8",
        }
    }

    /// Parses a NumPy type string. Returns the type and whether it is big-endian; one-byte
    /// types accept any byte-order mark.
    pub fn from_numpy_descr(descr: &str) -> Option<(DataType, bool)> {
        let (order, code) = descr.split_at(descr.len().min(1));
        let big = match order {
            "<" | "|" | "=" => false,
            ">" => true,
            _ => return None,
        };
        let t = match code {
            "u1" | "B" => DataType::U8,
            "i1" | "b" => DataType::I8,
            "u2" => DataType::U16,
            "i2" => DataType::I16,
            "u4" => DataType::U32,
            "i4" => DataType::I32,
            "u8" => DataType::U64,
            "i8" => DataType::I64,
            "f4" => DataType::F32,
            "f8" => DataType::F64,
            _ => return None,
        };
        Some((t, big && t.size() > 1))
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for DataType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for DataType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        DataType::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown data_type {name:?}")))
    }
}

/// A scalar type that arrays and volumes can hold.
pub trait Element: Copy + Default + PartialEq + fmt::Debug + Send + Sync + 'static {
    /// The runtime tag of this type.
    const DATA_TYPE: DataType;
    /// Reads one value from exactly `size_of::<Self>()` little-endian bytes.
    fn from_le_slice(bytes: &[u8]) -> Self;
    /// Appends the little-endian bytes of `self`.
    fn push_le(self, out: &mut Vec<u8>);
    /// The value from a JSON number (a zarr `fill_value`); `None` if it does not fit.
    fn from_json(value: &serde_json::Value) -> Option<Self>;
}

macro_rules! int_element {
    ($t:ty, $dt:expr, $get:ident) => {
        impl Element for $t {
            const DATA_TYPE: DataType = $dt;
            fn from_le_slice(bytes: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(bytes);
                <$t>::from_le_bytes(a)
            }
            fn push_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn from_json(value: &serde_json::Value) -> Option<Self> {
                value.$get().and_then(|v| <$t>::try_from(v).ok())
            }
        }
    };
}

int_element!(u8, DataType::U8, as_u64);
int_element!(i8, DataType::I8, as_i64);
int_element!(u16, DataType::U16, as_u64);
int_element!(i16, DataType::I16, as_i64);
int_element!(u32, DataType::U32, as_u64);
int_element!(i32, DataType::I32, as_i64);
int_element!(u64, DataType::U64, as_u64);
int_element!(i64, DataType::I64, as_i64);

macro_rules! float_element {
    ($t:ty, $dt:expr) => {
        impl Element for $t {
            const DATA_TYPE: DataType = $dt;
            fn from_le_slice(bytes: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(bytes);
                <$t>::from_le_bytes(a)
            }
            fn push_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn from_json(value: &serde_json::Value) -> Option<Self> {
                // zarr writes non-finite fill values as strings.
                match value.as_str() {
                    Some("NaN") => Some(<$t>::NAN),
                    Some("Infinity") => Some(<$t>::INFINITY),
                    Some("-Infinity") => Some(<$t>::NEG_INFINITY),
                    _ => value.as_f64().map(|v| v as $t),
                }
            }
        }
    };
}

float_element!(f32, DataType::F32);
float_element!(f64, DataType::F64);

/// Decodes little-endian bytes into values; `bytes.len()` must be a multiple of the size.
pub(crate) fn decode_le<T: Element>(bytes: &[u8]) -> Vec<T> {
    bytes
        .chunks_exact(T::DATA_TYPE.size())
        .map(T::from_le_slice)
        .collect()
}

/// Decodes big-endian bytes into values.
pub(crate) fn decode_be<T: Element>(bytes: &[u8]) -> Vec<T> {
    let n = T::DATA_TYPE.size();
    bytes
        .chunks_exact(n)
        .map(|c| {
            let mut le: Vec<u8> = c.to_vec();
            le.reverse();
            T::from_le_slice(&le)
        })
        .collect()
}

/// Encodes values as little-endian bytes.
pub(crate) fn encode_le<T: Element>(values: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * T::DATA_TYPE.size());
    for v in values {
        v.push_le(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_case_insensitively() {
        for t in DataType::ALL {
            assert_eq!(DataType::from_name(t.name()), Some(t));
            assert_eq!(DataType::from_name(&t.name().to_ascii_uppercase()), Some(t));
            assert_eq!(
                DataType::from_numpy_descr(t.numpy_descr()),
                Some((t, false))
            );
        }
        assert_eq!(DataType::from_name("complex64"), None);
        assert_eq!(
            DataType::from_numpy_descr(">u4"),
            Some((DataType::U32, true))
        );
        assert_eq!(
            DataType::from_numpy_descr(">u1"),
            Some((DataType::U8, false))
        );
        assert_eq!(DataType::from_numpy_descr("<c8"), None);
    }

    #[test]
    fn le_and_be_decode() {
        let bytes = [1u8, 0, 0, 0, 0, 0, 0, 2];
        assert_eq!(decode_le::<u32>(&bytes), vec![1, 0x0200_0000]);
        assert_eq!(decode_be::<u32>(&bytes), vec![0x0100_0000, 2]);
        assert_eq!(encode_le(&[1u32, 0x0200_0000]), bytes.to_vec());
        assert_eq!(decode_le::<f32>(&1.5f32.to_le_bytes()), vec![1.5]);
    }

    #[test]
    fn json_fill_values() {
        assert_eq!(u8::from_json(&serde_json::json!(255)), Some(255));
        assert_eq!(u8::from_json(&serde_json::json!(256)), None);
        assert_eq!(i32::from_json(&serde_json::json!(-3)), Some(-3));
        assert!(f32::from_json(&serde_json::json!("NaN")).is_some_and(f32::is_nan));
        assert_eq!(f64::from_json(&serde_json::json!(0.5)), Some(0.5));
    }
}
