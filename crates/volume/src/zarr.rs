//! A minimal zarr reader (format v2 and v3): regular chunk grids, C or F order, raw, gzip,
//! zlib and (with the `blosc` feature) blosc chunks. Not supported, with an
//! [`Error::Unsupported`] naming the feature: filters, sharded v3 arrays, zstd, crc32c,
//! non-trivial transposes, structured dtypes.

use futures::{StreamExt, TryStreamExt};
use serde_json::Value;

use crate::array::{copy_box, Array};
use crate::dtype::{decode_be, decode_le, DataType, Element};
use crate::error::{corrupt, invalid_meta, Error, Result};
use crate::store::{gunzip_limited, zlib_inflate_limited, Store};

/// A chunk compression this reader understands.
#[derive(Clone, Debug, PartialEq)]
enum Codec {
    Gzip,
    Zlib,
    Blosc,
}

/// An opened zarr array.
#[derive(Debug)]
pub struct ZarrArray {
    store: Store,
    version: u8,
    shape: Vec<usize>,
    chunks: Vec<usize>,
    dtype: DataType,
    big_endian: bool,
    fortran: bool,
    fill: Value,
    codecs: Vec<Codec>,
    // Chunk key = prefix + indices joined by separator.
    key_prefix: String,
    separator: String,
}

fn unsupported(what: impl Into<String>) -> Error {
    Error::Unsupported(what.into())
}

fn usize_list(v: Option<&Value>, what: &str, path: &str) -> Result<Vec<usize>> {
    v.and_then(Value::as_array)
        .ok_or_else(|| invalid_meta(path, format!("missing {what}")))?
        .iter()
        .map(|d| {
            d.as_u64().map(|d| d as usize).ok_or_else(|| {
                invalid_meta(path, format!("{what} must hold non-negative integers"))
            })
        })
        .collect()
}

impl ZarrArray {
    /// Opens the array at `url` (see [`Store::open`]).
    pub async fn open(url: &str) -> Result<ZarrArray> {
        Self::open_store(Store::open(url)?).await
    }

    /// Opens the array rooted at `store`: `zarr.json` (v3) if present, else `.zarray` (v2).
    pub async fn open_store(store: Store) -> Result<ZarrArray> {
        if let Some(b) = store.get("zarr.json").await? {
            let path = store.display_key("zarr.json");
            let meta: Value =
                serde_json::from_slice(&b).map_err(|e| invalid_meta(&path, e.to_string()))?;
            return Self::from_v3(store, &meta, &path);
        }
        if let Some(b) = store.get(".zarray").await? {
            let path = store.display_key(".zarray");
            let meta: Value =
                serde_json::from_slice(&b).map_err(|e| invalid_meta(&path, e.to_string()))?;
            return Self::from_v2(store, &meta, &path);
        }
        Err(Error::NotFound {
            path: store.display_key("zarr.json (or .zarray)"),
        })
    }

    fn from_v2(store: Store, m: &Value, path: &str) -> Result<ZarrArray> {
        if m.get("zarr_format").and_then(Value::as_u64) != Some(2) {
            return Err(invalid_meta(path, "zarr_format must be 2"));
        }
        let shape = usize_list(m.get("shape"), "shape", path)?;
        let chunks = usize_list(m.get("chunks"), "chunks", path)?;
        let descr = m
            .get("dtype")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid_meta(path, "dtype must be a string"))?;
        let (dtype, big_endian) = DataType::from_numpy_descr(descr)
            .ok_or_else(|| unsupported(format!("{path}: zarr dtype {descr:?}")))?;
        let fortran = match m.get("order").and_then(Value::as_str) {
            Some("C") | None => false,
            Some("F") => true,
            Some(o) => return Err(invalid_meta(path, format!("order {o:?}"))),
        };
        match m.get("filters") {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) if a.is_empty() => {}
            Some(f) => return Err(unsupported(format!("{path}: zarr filters {f}"))),
        }
        let codecs = match m.get("compressor") {
            None | Some(Value::Null) => vec![],
            Some(c) => match c.get("id").and_then(Value::as_str) {
                Some("gzip") => vec![Codec::Gzip],
                Some("zlib") => vec![Codec::Zlib],
                Some("blosc") => vec![Codec::Blosc],
                _ => return Err(unsupported(format!("{path}: zarr compressor {c}"))),
            },
        };
        let separator = m
            .get("dimension_separator")
            .and_then(Value::as_str)
            .unwrap_or(".")
            .to_string();
        Self::checked(
            ZarrArray {
                store,
                version: 2,
                shape,
                chunks,
                dtype,
                big_endian,
                fortran,
                fill: m.get("fill_value").cloned().unwrap_or(Value::Null),
                codecs,
                key_prefix: String::new(),
                separator,
            },
            path,
        )
    }

    fn from_v3(store: Store, m: &Value, path: &str) -> Result<ZarrArray> {
        if m.get("zarr_format").and_then(Value::as_u64) != Some(3) {
            return Err(invalid_meta(path, "zarr_format must be 3"));
        }
        if m.get("node_type").and_then(Value::as_str) != Some("array") {
            return Err(invalid_meta(path, "node_type is not \"array\""));
        }
        let shape = usize_list(m.get("shape"), "shape", path)?;
        let name = m.get("data_type").and_then(Value::as_str).ok_or_else(|| {
            unsupported(format!("{path}: zarr data_type {:?}", m.get("data_type")))
        })?;
        let dtype = DataType::from_name(name)
            .ok_or_else(|| unsupported(format!("{path}: zarr data_type {name:?}")))?;
        let grid = m
            .get("chunk_grid")
            .ok_or_else(|| invalid_meta(path, "missing chunk_grid"))?;
        if grid.get("name").and_then(Value::as_str) != Some("regular") {
            return Err(unsupported(format!("{path}: chunk grid {grid}")));
        }
        let chunks = usize_list(
            grid.get("configuration").and_then(|c| c.get("chunk_shape")),
            "chunk_shape",
            path,
        )?;
        let (key_prefix, separator) = match m.get("chunk_key_encoding") {
            None => ("c/".to_string(), "/".to_string()),
            Some(k) => {
                let sep = k
                    .get("configuration")
                    .and_then(|c| c.get("separator"))
                    .and_then(Value::as_str);
                match k.get("name").and_then(Value::as_str) {
                    Some("default") => {
                        let sep = sep.unwrap_or("/");
                        (format!("c{sep}"), sep.to_string())
                    }
                    Some("v2") => (String::new(), sep.unwrap_or(".").to_string()),
                    _ => return Err(unsupported(format!("{path}: chunk key encoding {k}"))),
                }
            }
        };
        match m.get("storage_transformers") {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) if a.is_empty() => {}
            Some(t) => return Err(unsupported(format!("{path}: storage transformers {t}"))),
        }
        let mut big_endian = false;
        let mut fortran = false;
        let mut codecs = Vec::new();
        let mut seen_bytes = false;
        let list = m
            .get("codecs")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid_meta(path, "missing codecs"))?;
        for c in list {
            let name = c.get("name").and_then(Value::as_str).unwrap_or("");
            let conf = c.get("configuration");
            match name {
                "transpose" if !seen_bytes => {
                    let order = usize_list(conf.and_then(|c| c.get("order")), "order", path)?;
                    let nd = shape.len();
                    if order.iter().copied().eq(0..nd) {
                    } else if order.iter().copied().eq((0..nd).rev()) {
                        fortran = !fortran;
                    } else {
                        return Err(unsupported(format!("{path}: transpose {order:?}")));
                    }
                }
                "bytes" => {
                    seen_bytes = true;
                    big_endian = conf.and_then(|c| c.get("endian")).and_then(Value::as_str)
                        == Some("big")
                        && dtype.size() > 1;
                }
                "gzip" if seen_bytes => codecs.push(Codec::Gzip),
                "blosc" if seen_bytes => codecs.push(Codec::Blosc),
                _ => return Err(unsupported(format!("{path}: zarr v3 codec {c}"))),
            }
        }
        if !seen_bytes {
            return Err(invalid_meta(path, "codecs lack the \"bytes\" codec"));
        }
        Self::checked(
            ZarrArray {
                store,
                version: 3,
                shape,
                chunks,
                dtype,
                big_endian,
                fortran,
                fill: m.get("fill_value").cloned().unwrap_or(Value::Null),
                codecs,
                key_prefix,
                separator,
            },
            path,
        )
    }

    fn checked(a: ZarrArray, path: &str) -> Result<ZarrArray> {
        if a.chunks.len() != a.shape.len() {
            return Err(invalid_meta(
                path,
                format!(
                    "chunk shape {:?} and shape {:?} differ in rank",
                    a.chunks, a.shape
                ),
            ));
        }
        if a.chunks.contains(&0) {
            return Err(invalid_meta(
                path,
                format!("chunk shape {:?} has a zero", a.chunks),
            ));
        }
        let n = a
            .chunks
            .iter()
            .try_fold(a.dtype.size(), |acc, &c| acc.checked_mul(c));
        if n.is_none_or(|n| n > 1 << 31) {
            return Err(invalid_meta(
                path,
                format!("chunks of {:?} are too large", a.chunks),
            ));
        }
        Ok(a)
    }

    /// The format version (2 or 3).
    pub fn zarr_format(&self) -> u8 {
        self.version
    }

    /// The array's shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The chunk shape.
    pub fn chunk_shape(&self) -> &[usize] {
        &self.chunks
    }

    /// The element type.
    pub fn data_type(&self) -> DataType {
        self.dtype
    }

    fn chunk_key(&self, idx: &[usize]) -> String {
        if idx.is_empty() {
            return if self.version == 3 && !self.key_prefix.is_empty() {
                "c".into()
            } else {
                "0".into()
            };
        }
        let parts: Vec<String> = idx.iter().map(usize::to_string).collect();
        format!("{}{}", self.key_prefix, parts.join(&self.separator))
    }

    /// The fill value as `T` (zero when null or not representable).
    fn fill<T: Element>(&self) -> T {
        T::from_json(&self.fill).unwrap_or_default()
    }

    /// Reads one whole chunk as C-ordered values of the chunk shape; `None` when missing.
    async fn read_chunk<T: Element>(&self, idx: &[usize]) -> Result<Option<Vec<T>>> {
        let key = self.chunk_key(idx);
        let Some(bytes) = self.store.get(&key).await? else {
            return Ok(None);
        };
        let what = self.store.display_key(&key);
        let n: usize = self.chunks.iter().product();
        let expected = n * self.dtype.size();
        let mut data = bytes.to_vec();
        for c in self.codecs.iter().rev() {
            data = match c {
                Codec::Gzip => gunzip_limited(&data, expected).map_err(|r| corrupt(&what, r))?,
                Codec::Zlib => {
                    zlib_inflate_limited(&data, expected).map_err(|r| corrupt(&what, r))?
                }
                Codec::Blosc => blosc_decompress(&data, expected).map_err(|r| corrupt(&what, r))?,
            };
        }
        if data.len() != expected {
            return Err(corrupt(
                &what,
                format!("chunk holds {} bytes, expected {expected}", data.len()),
            ));
        }
        let values: Vec<T> = if self.big_endian {
            decode_be(&data)
        } else {
            decode_le(&data)
        };
        if self.fortran {
            let rev: Vec<usize> = self.chunks.iter().rev().copied().collect();
            return Ok(Some(Array::new(rev, values)?.reversed_axes().into_data()));
        }
        Ok(Some(values))
    }

    /// Reads the whole array.
    pub async fn read_all<T: Element>(&self) -> Result<Array<T>> {
        let start = vec![0; self.shape.len()];
        let shape = self.shape.clone();
        self.read_region(&start, &shape).await
    }

    /// Reads the region `[start, start + shape)`. Missing chunks read as the fill value.
    /// Arrays of rank above 4 are not supported.
    pub async fn read_region<T: Element>(
        &self,
        start: &[usize],
        shape: &[usize],
    ) -> Result<Array<T>> {
        if T::DATA_TYPE != self.dtype {
            return Err(Error::DataTypeMismatch {
                stored: self.dtype.to_string(),
                requested: T::DATA_TYPE.to_string(),
            });
        }
        let nd = self.shape.len();
        if start.len() != nd || shape.len() != nd {
            return Err(Error::InvalidArgument(format!(
                "region rank differs from the array's ({nd})"
            )));
        }
        if nd > 4 {
            return Err(unsupported(format!("zarr arrays of rank {nd}")));
        }
        if (0..nd).any(|a| {
            start[a]
                .checked_add(shape[a])
                .is_none_or(|e| e > self.shape[a])
        }) {
            return Err(Error::InvalidArgument(format!(
                "region {start:?} + {shape:?} exceeds shape {:?}",
                self.shape
            )));
        }
        let mut out = Array::filled(shape.to_vec(), self.fill::<T>())?;
        if shape.contains(&0) {
            return Ok(out);
        }
        let lo: Vec<usize> = (0..nd).map(|a| start[a] / self.chunks[a]).collect();
        let hi: Vec<usize> = (0..nd)
            .map(|a| (start[a] + shape[a]).div_ceil(self.chunks[a]))
            .collect();
        let mut indices = vec![lo.clone()];
        for a in 0..nd {
            indices = indices
                .into_iter()
                .flat_map(|i| {
                    (lo[a]..hi[a]).map(move |v| {
                        let mut j = i.clone();
                        j[a] = v;
                        j
                    })
                })
                .collect();
        }
        // Pad every shape to 4-d for the box copy.
        let pad = |v: &[usize], fill: usize| -> [usize; 4] {
            let mut o = [fill; 4];
            o[4 - nd..].copy_from_slice(v);
            o
        };
        let out_shape = pad(shape, 1);
        let chunk_shape = pad(&self.chunks, 1);
        let mut results = futures::stream::iter(indices)
            .map(|idx| async move { self.read_chunk::<T>(&idx).await.map(|c| (idx, c)) })
            .buffer_unordered(16);
        while let Some((idx, chunk)) = results.try_next().await? {
            let Some(values) = chunk else { continue };
            let c0: Vec<usize> = (0..nd).map(|a| idx[a] * self.chunks[a]).collect();
            let lo_v: Vec<usize> = (0..nd).map(|a| c0[a].max(start[a])).collect();
            let hi_v: Vec<usize> = (0..nd)
                .map(|a| {
                    (c0[a] + self.chunks[a])
                        .min(start[a] + shape[a])
                        .min(self.shape[a])
                })
                .collect();
            if (0..nd).any(|a| hi_v[a] <= lo_v[a]) {
                continue;
            }
            let src_at: Vec<usize> = (0..nd).map(|a| lo_v[a] - c0[a]).collect();
            let dst_at: Vec<usize> = (0..nd).map(|a| lo_v[a] - start[a]).collect();
            let size: Vec<usize> = (0..nd).map(|a| hi_v[a] - lo_v[a]).collect();
            copy_box(
                &values,
                chunk_shape,
                pad(&src_at, 0),
                out.data_mut(),
                out_shape,
                pad(&dst_at, 0),
                pad(&size, 1),
            );
        }
        Ok(out)
    }
}

#[cfg(feature = "blosc")]
fn blosc_decompress(data: &[u8], expected: usize) -> std::result::Result<Vec<u8>, String> {
    if data.len() < 16 {
        return Err("blosc frame shorter than its 16-byte header".into());
    }
    // Check the declared size before decompressing, so a corrupt header cannot allocate.
    let nbytes = u32::from_le_bytes([data[4], data[5], data[6], data[7]]) as usize;
    if nbytes != expected {
        return Err(format!(
            "blosc frame declares {nbytes} bytes, expected {expected}"
        ));
    }
    // The decoder is young; contain any panic on malformed input as an error.
    std::panic::catch_unwind(|| blusc::convenience::blosc1_decompress(data))
        .map_err(|_| "blosc decoder failed on malformed input".to_string())?
        .map_err(|e| format!("blosc: {e}"))
}

#[cfg(not(feature = "blosc"))]
fn blosc_decompress(_data: &[u8], _expected: usize) -> std::result::Result<Vec<u8>, String> {
    Err("blosc chunks need cg-volume's `blosc` feature".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::encode_le;
    use crate::store::gzip_bytes;

    async fn v2_array(compressor: &str, order: &str, sep: Option<&str>) -> (Store, Array<u16>) {
        let store = Store::memory();
        let shape = [5usize, 7, 3];
        let sep_json = sep
            .map(|s| format!(", \"dimension_separator\": \"{s}\""))
            .unwrap_or_default();
        let meta = format!(
            r#"{{"zarr_format": 2, "shape": [5, 7, 3], "chunks": [2, 3, 3], "dtype": "<u2",
               "compressor": {compressor}, "fill_value": 9, "order": "{order}", "filters": null{sep_json}}}"#
        );
        store.put(".zarray", meta.into_bytes()).await.unwrap();
        let n: usize = shape.iter().product();
        let full = Array::new(shape.to_vec(), (0..n as u16).collect()).unwrap();
        for cz in 0..3 {
            for cy in 0..3 {
                if (cz, cy) == (2, 2) {
                    continue; // missing chunk: fill value
                }
                let mut vals = vec![0u16; 18];
                for z in 0..2 {
                    for y in 0..3 {
                        for x in 0..3 {
                            let v = full.get(&[cz * 2 + z, cy * 3 + y, x]).unwrap_or(0);
                            let i = if order == "F" {
                                z + 2 * (y + 3 * x)
                            } else {
                                (z * 3 + y) * 3 + x
                            };
                            vals[i] = v;
                        }
                    }
                }
                let raw = encode_le(&vals);
                let data = match compressor {
                    "null" => raw,
                    c if c.contains("gzip") => gzip_bytes(&raw),
                    _ => {
                        use std::io::Write;
                        let mut e = flate2::write::ZlibEncoder::new(
                            Vec::new(),
                            flate2::Compression::default(),
                        );
                        e.write_all(&raw).unwrap();
                        e.finish().unwrap()
                    }
                };
                let s = sep.unwrap_or(".");
                store.put(&format!("{cz}{s}{cy}{s}0"), data).await.unwrap();
            }
        }
        let mut want = full;
        for z in 4..5 {
            for y in 6..7 {
                for x in 0..3 {
                    want.set(&[z, y, x], 9);
                }
            }
        }
        (store, want)
    }

    #[tokio::test]
    async fn v2_codecs_orders_and_separators() {
        for (comp, order, sep) in [
            ("null", "C", None),
            (r#"{"id": "gzip", "level": 5}"#, "C", Some("/")),
            (r#"{"id": "zlib", "level": 1}"#, "F", None),
        ] {
            let (store, want) = v2_array(comp, order, sep).await;
            let a = ZarrArray::open_store(store).await.unwrap();
            assert_eq!(a.zarr_format(), 2);
            assert_eq!(a.read_all::<u16>().await.unwrap(), want, "{comp} {order}");
            let r = a.read_region::<u16>(&[1, 2, 1], &[3, 4, 2]).await.unwrap();
            assert_eq!(r.get(&[0, 0, 0]), want.get(&[1, 2, 1]));
            assert_eq!(r.get(&[2, 3, 1]), want.get(&[3, 5, 2]));
            assert!(a.read_region::<u16>(&[0, 0, 0], &[6, 1, 1]).await.is_err());
            assert!(matches!(
                a.read_all::<u32>().await,
                Err(Error::DataTypeMismatch { .. })
            ));
        }
    }

    #[tokio::test]
    async fn v3_default_keys_and_gzip() {
        let store = Store::memory();
        let meta = r#"{"zarr_format": 3, "node_type": "array", "shape": [4, 4],
            "data_type": "uint32", "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2, 4]}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": 0, "codecs": [{"name": "bytes", "configuration": {"endian": "big"}},
            {"name": "gzip", "configuration": {"level": 1}}]}"#;
        store
            .put("zarr.json", meta.as_bytes().to_vec())
            .await
            .unwrap();
        let vals: Vec<u8> = (0u32..8).flat_map(|v| v.to_be_bytes()).collect();
        store.put("c/0/0", gzip_bytes(&vals)).await.unwrap();
        let a = ZarrArray::open_store(store.clone()).await.unwrap();
        let got = a.read_all::<u32>().await.unwrap();
        assert_eq!(
            got.data(),
            &[0, 1, 2, 3, 4, 5, 6, 7, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        // A truncated chunk is a clear error.
        store.put("c/0/0", gzip_bytes(&vals[..30])).await.unwrap();
        let e = a.read_all::<u32>().await.unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    }

    #[tokio::test]
    async fn unsupported_features_are_named() {
        let store = Store::memory();
        let meta = r#"{"zarr_format": 3, "node_type": "array", "shape": [4], "data_type": "uint8",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [4]}},
            "fill_value": 0, "codecs": [{"name": "sharding_indexed", "configuration": {}}]}"#;
        store
            .put("zarr.json", meta.as_bytes().to_vec())
            .await
            .unwrap();
        let e = ZarrArray::open_store(store).await.unwrap_err();
        assert!(e.to_string().contains("sharding_indexed"), "{e}");
        let store = Store::memory();
        store
            .put(
                ".zarray",
                br#"{"zarr_format": 2, "shape": [4], "chunks": [4], "dtype": "<u1",
                "compressor": {"id": "lzma"}, "fill_value": 0, "order": "C", "filters": null}"#
                    .to_vec(),
            )
            .await
            .unwrap();
        let e = ZarrArray::open_store(store).await.unwrap_err();
        assert!(e.to_string().contains("lzma"), "{e}");
        assert!(matches!(
            ZarrArray::open_store(Store::memory()).await,
            Err(Error::NotFound { .. })
        ));
        let store = Store::memory();
        store.put(".zarray", b"{broken".to_vec()).await.unwrap();
        assert!(matches!(
            ZarrArray::open_store(store).await,
            Err(Error::InvalidMetadata { .. })
        ));
    }

    #[cfg(feature = "blosc")]
    #[tokio::test]
    async fn v2_blosc_round_trip_and_corruption() {
        let store = Store::memory();
        store
            .put(
                ".zarray",
                br#"{"zarr_format": 2, "shape": [64], "chunks": [64], "dtype": "<u8",
                "compressor": {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1},
                "fill_value": 0, "order": "C", "filters": null}"#
                    .to_vec(),
            )
            .await
            .unwrap();
        let vals: Vec<u64> = (0..64).map(|i| i * i).collect();
        let frame = blusc::convenience::blosc1_compress(&encode_le(&vals)).unwrap();
        store.put("0", frame.clone()).await.unwrap();
        let a = ZarrArray::open_store(store.clone()).await.unwrap();
        assert_eq!(a.read_all::<u64>().await.unwrap().data(), &vals[..]);
        store.put("0", frame[..10].to_vec()).await.unwrap();
        assert!(matches!(
            a.read_all::<u64>().await,
            Err(Error::Corrupt { .. })
        ));
        let mut bad = frame;
        bad[4..8].copy_from_slice(&(1u32 << 30).to_le_bytes());
        store.put("0", bad).await.unwrap();
        assert!(matches!(
            a.read_all::<u64>().await,
            Err(Error::Corrupt { .. })
        ));
    }

    /// Garbage after a plausible header yields errors (or some bytes), never a panic.
    #[cfg(feature = "blosc")]
    #[test]
    fn blosc_garbage_does_not_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let expected = 512;
        for i in 0..500 {
            let len = rng.random_range(16..200);
            let mut junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            junk[0] = 2;
            junk[4..8].copy_from_slice(&(expected as u32).to_le_bytes());
            if i % 2 == 0 {
                junk[12..16].copy_from_slice(&(len as u32).to_le_bytes());
            }
            if let Ok(out) = blosc_decompress(&junk, expected) {
                assert!(out.len() <= expected);
            }
        }
    }
}
