//! Neuroglancer's sharded format (`neuroglancer_uint64_sharded_v1`): many (u64 key → bytes)
//! entries packed into a fixed number of shard files, each with a two-level index.
//!
//! A key is hashed (after dropping `preshift_bits` low bits); the low `minishard_bits` of the
//! hash pick the minishard and the next `shard_bits` pick the shard. A shard file starts with
//! the shard index (16 bytes per minishard: start and end of its minishard index, relative to
//! the end of the shard index), followed by entry data and minishard indexes. A minishard
//! index is a `[3, n]` u64 array: delta-coded keys, delta-coded data offsets (each relative to
//! the end of the previous entry), and sizes. Volumes key chunks by their compressed Morton
//! code; meshes and skeletons key by segment ID, so the writer takes any u64 keys.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{corrupt, Error, Result};
use crate::murmur::murmurhash3_x86_128_u64;
use crate::store::{gunzip_limited, gzip_bytes, Store};

/// The `@type` of every sharding specification.
pub const SHARDED_V1: &str = "neuroglancer_uint64_sharded_v1";

// Inflated entries and indexes larger than this are treated as corrupt.
const MAX_INFLATE: usize = 1 << 31;

/// How keys are hashed to shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardHash {
    #[serde(rename = "identity")]
    Identity,
    #[serde(rename = "murmurhash3_x86_128")]
    Murmurhash3X86_128,
}

/// How minishard indexes or entry data are stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataEncoding {
    #[default]
    Raw,
    Gzip,
}

impl DataEncoding {
    fn encode(self, data: &[u8]) -> Vec<u8> {
        match self {
            DataEncoding::Raw => data.to_vec(),
            DataEncoding::Gzip => gzip_bytes(data),
        }
    }

    fn decode(self, data: Bytes) -> std::result::Result<Bytes, String> {
        match self {
            DataEncoding::Raw => Ok(data),
            DataEncoding::Gzip => gunzip_limited(&data, MAX_INFLATE).map(Bytes::from),
        }
    }
}

/// A sharding specification: the `"sharding"` member of a scale, or a mesh/skeleton info.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSpec {
    #[serde(rename = "@type")]
    pub type_: String,
    pub preshift_bits: u32,
    pub hash: ShardHash,
    pub minishard_bits: u32,
    pub shard_bits: u32,
    #[serde(default)]
    pub minishard_index_encoding: DataEncoding,
    #[serde(default)]
    pub data_encoding: DataEncoding,
}

/// Where a key lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShardLocation {
    pub shard: u64,
    pub minishard: u64,
}

impl ShardSpec {
    /// A specification with the given parameters.
    pub fn new(
        preshift_bits: u32,
        hash: ShardHash,
        minishard_bits: u32,
        shard_bits: u32,
        minishard_index_encoding: DataEncoding,
        data_encoding: DataEncoding,
    ) -> Result<ShardSpec> {
        let s = ShardSpec {
            type_: SHARDED_V1.into(),
            preshift_bits,
            hash,
            minishard_bits,
            shard_bits,
            minishard_index_encoding,
            data_encoding,
        };
        s.validate().map_err(Error::InvalidArgument)?;
        Ok(s)
    }

    /// Checks the fields against the format's limits.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.type_ != SHARDED_V1 {
            return Err(format!(
                "sharding @type must be {SHARDED_V1:?}, got {:?}",
                self.type_
            ));
        }
        if self.preshift_bits > 64 {
            return Err(format!("preshift_bits {} > 64", self.preshift_bits));
        }
        // 2^32 minishards would already need a 64 GiB shard index.
        if self.minishard_bits > 32 {
            return Err(format!("minishard_bits {} > 32", self.minishard_bits));
        }
        if self.minishard_bits + self.shard_bits > 64 {
            return Err(format!(
                "minishard_bits + shard_bits = {} > 64",
                self.minishard_bits + self.shard_bits
            ));
        }
        Ok(())
    }

    /// The hashed key: `hash(key >> preshift_bits)`.
    pub fn hash_key(&self, key: u64) -> u64 {
        let shifted = key.checked_shr(self.preshift_bits).unwrap_or(0);
        match self.hash {
            ShardHash::Identity => shifted,
            ShardHash::Murmurhash3X86_128 => murmurhash3_x86_128_u64(shifted, 0),
        }
    }

    /// The shard and minishard holding `key`.
    pub fn locate(&self, key: u64) -> ShardLocation {
        let h = self.hash_key(key);
        let minishard = h & low_mask(self.minishard_bits);
        let shard = h.checked_shr(self.minishard_bits).unwrap_or(0) & low_mask(self.shard_bits);
        ShardLocation { shard, minishard }
    }

    /// Number of shard files.
    pub fn num_shards(&self) -> u64 {
        1u64.checked_shl(self.shard_bits).unwrap_or(0)
    }

    /// Number of minishards per shard.
    pub fn num_minishards(&self) -> u64 {
        1u64 << self.minishard_bits
    }

    /// Bytes of the shard index at the start of each shard file.
    pub fn shard_index_size(&self) -> u64 {
        16 << self.minishard_bits
    }

    /// The shard's file name: lowercase hex padded to `ceil(shard_bits / 4)` digits, plus
    /// `.shard`.
    pub fn shard_file_name(&self, shard: u64) -> String {
        let width = self.shard_bits.div_ceil(4) as usize;
        format!("{shard:0width$x}.shard")
    }
}

fn low_mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// Collects (key → bytes) entries and encodes them into shard files.
#[derive(Clone, Debug)]
pub struct ShardWriter {
    spec: ShardSpec,
    shards: BTreeMap<u64, BTreeMap<u64, Bytes>>,
}

impl ShardWriter {
    /// An empty writer; fails on an invalid spec.
    pub fn new(spec: ShardSpec) -> Result<ShardWriter> {
        spec.validate().map_err(Error::InvalidArgument)?;
        Ok(ShardWriter {
            spec,
            shards: BTreeMap::new(),
        })
    }

    /// The specification.
    pub fn spec(&self) -> &ShardSpec {
        &self.spec
    }

    /// Adds an entry (unencoded bytes; the writer applies `data_encoding`). Returns the
    /// previous bytes under this key, which the new ones replace.
    pub fn insert(&mut self, key: u64, data: impl Into<Bytes>) -> Option<Bytes> {
        let shard = self.spec.locate(key).shard;
        self.shards
            .entry(shard)
            .or_default()
            .insert(key, data.into())
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.shards.values().map(BTreeMap::len).sum()
    }

    /// True when no entry was added.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// The shard numbers that will be written.
    pub fn shards(&self) -> impl Iterator<Item = u64> + '_ {
        self.shards.keys().copied()
    }

    /// Encodes every shard: (file name, file bytes), in shard order.
    pub fn finish(self) -> Vec<(String, Vec<u8>)> {
        self.shards
            .iter()
            .map(|(&shard, entries)| {
                (
                    self.spec.shard_file_name(shard),
                    encode_shard(&self.spec, entries),
                )
            })
            .collect()
    }

    /// Encodes and writes every shard under `store`; returns the file names written.
    pub async fn write(self, store: &Store) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for (name, bytes) in self.finish() {
            store.put(&name, bytes).await?;
            names.push(name);
        }
        Ok(names)
    }
}

/// Encodes one shard file from its entries (keys must all belong to one shard; they are
/// placed by minishard whatever their shard).
pub fn encode_shard(spec: &ShardSpec, entries: &BTreeMap<u64, Bytes>) -> Vec<u8> {
    let mut by_minishard: BTreeMap<u64, Vec<(u64, &Bytes)>> = BTreeMap::new();
    for (&key, data) in entries {
        by_minishard
            .entry(spec.locate(key).minishard)
            .or_default()
            .push((key, data));
    }
    let index_len = spec.shard_index_size() as usize;
    let mut index = vec![0u8; index_len];
    let mut body: Vec<u8> = Vec::new();
    for (ms, list) in by_minishard {
        // Keys arrive sorted (BTreeMap), so key deltas are non-negative.
        let n = list.len();
        let mut table = vec![0u64; 3 * n];
        let mut prev_key = 0u64;
        let mut prev_end = 0u64;
        for (i, (key, data)) in list.into_iter().enumerate() {
            let start = body.len() as u64;
            body.extend_from_slice(&spec.data_encoding.encode(data));
            let size = body.len() as u64 - start;
            table[i] = key - prev_key;
            table[n + i] = start - prev_end;
            table[2 * n + i] = size;
            prev_key = key;
            prev_end = start + size;
        }
        let mut raw = Vec::with_capacity(24 * n);
        for v in table {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        let ms_start = body.len() as u64;
        body.extend_from_slice(&spec.minishard_index_encoding.encode(&raw));
        let ms_end = body.len() as u64;
        let at = 16 * ms as usize;
        index[at..at + 8].copy_from_slice(&ms_start.to_le_bytes());
        index[at + 8..at + 16].copy_from_slice(&ms_end.to_le_bytes());
    }
    index.extend_from_slice(&body);
    index
}

/// One entry of a minishard index: key and absolute byte range in the shard file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinishardEntry {
    pub key: u64,
    pub start: u64,
    pub end: u64,
}

/// Decodes a (decompressed) minishard index; offsets become absolute using the shard index
/// size.
pub fn decode_minishard_index(
    raw: &[u8],
    shard_index_size: u64,
) -> std::result::Result<Vec<MinishardEntry>, String> {
    if !raw.len().is_multiple_of(24) {
        return Err(format!(
            "minishard index length {} is not a multiple of 24",
            raw.len()
        ));
    }
    let n = raw.len() / 24;
    let word = |i: usize| u64::from_le_bytes(raw[8 * i..8 * i + 8].try_into().unwrap_or([0; 8]));
    let mut out = Vec::with_capacity(n);
    let mut key = 0u64;
    let mut pos = shard_index_size;
    let overflow = || "minishard index offsets overflow".to_string();
    for i in 0..n {
        key = key.checked_add(word(i)).ok_or_else(overflow)?;
        let start = pos.checked_add(word(n + i)).ok_or_else(overflow)?;
        let end = start.checked_add(word(2 * n + i)).ok_or_else(overflow)?;
        out.push(MinishardEntry { key, start, end });
        pos = end;
    }
    Ok(out)
}

/// Reads single entries from the shard files under a store, caching minishard indexes.
pub struct ShardReader {
    store: Store,
    spec: ShardSpec,
    cache: Mutex<HashMap<ShardLocation, Option<Arc<Vec<MinishardEntry>>>>>,
}

// Cached minishard indexes beyond this are dropped wholesale.
const CACHE_LIMIT: usize = 4096;

impl ShardReader {
    /// A reader for shard files directly under `store`.
    pub fn new(store: Store, spec: ShardSpec) -> Result<ShardReader> {
        spec.validate().map_err(Error::InvalidArgument)?;
        Ok(ShardReader {
            store,
            spec,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The specification.
    pub fn spec(&self) -> &ShardSpec {
        &self.spec
    }

    /// Forgets cached indexes (after shard files were rewritten).
    pub fn clear_cache(&self) {
        if let Ok(mut c) = self.cache.lock() {
            c.clear();
        }
    }

    /// The decoded bytes stored under `key`, or `None` if no shard holds it.
    pub async fn get(&self, key: u64) -> Result<Option<Bytes>> {
        let loc = self.spec.locate(key);
        let file = self.spec.shard_file_name(loc.shard);
        let Some(entries) = self.minishard_index(loc).await? else {
            return Ok(None);
        };
        let Some(e) = entries.iter().find(|e| e.key == key) else {
            return Ok(None);
        };
        let data = self.read_range(&file, e.start..e.end).await?;
        self.spec
            .data_encoding
            .decode(data)
            .map(Some)
            .map_err(|r| corrupt(self.store.display_key(&file), format!("entry {key}: {r}")))
    }

    /// The (cached) minishard index at `loc`; `None` when the shard file or the minishard is
    /// empty or missing.
    pub async fn minishard_index(
        &self,
        loc: ShardLocation,
    ) -> Result<Option<Arc<Vec<MinishardEntry>>>> {
        if let Some(hit) = self.cache.lock().ok().and_then(|c| c.get(&loc).cloned()) {
            return Ok(hit);
        }
        let got = self.load_minishard_index(loc).await?;
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= CACHE_LIMIT {
                c.clear();
            }
            c.insert(loc, got.clone());
        }
        Ok(got)
    }

    async fn load_minishard_index(
        &self,
        loc: ShardLocation,
    ) -> Result<Option<Arc<Vec<MinishardEntry>>>> {
        let file = self.spec.shard_file_name(loc.shard);
        let at = 16 * loc.minishard;
        let Some(idx) = self.read_range_opt(&file, at..at + 16).await? else {
            return Ok(None);
        };
        let start = u64::from_le_bytes(idx[0..8].try_into().unwrap_or([0; 8]));
        let end = u64::from_le_bytes(idx[8..16].try_into().unwrap_or([0; 8]));
        let path = self.store.display_key(&file);
        if end < start {
            return Err(corrupt(
                path,
                format!(
                    "shard index entry {}: end {end} < start {start}",
                    loc.minishard
                ),
            ));
        }
        if start == end {
            return Ok(None);
        }
        let base = self.spec.shard_index_size();
        let (Some(a), Some(b)) = (base.checked_add(start), base.checked_add(end)) else {
            return Err(corrupt(path, "shard index offsets overflow"));
        };
        let raw = self.read_range(&file, a..b).await?;
        let raw = self
            .spec
            .minishard_index_encoding
            .decode(raw)
            .map_err(|r| corrupt(&path, format!("minishard {}: {r}", loc.minishard)))?;
        let entries = decode_minishard_index(&raw, base)
            .map_err(|r| corrupt(&path, format!("minishard {}: {r}", loc.minishard)))?;
        Ok(Some(Arc::new(entries)))
    }

    async fn read_range(&self, file: &str, range: std::ops::Range<u64>) -> Result<Bytes> {
        self.read_range_opt(file, range.clone())
            .await?
            .ok_or_else(|| {
                // The file vanished between the index read and this one.
                Error::NotFound {
                    path: self.store.display_key(file),
                }
            })
    }

    /// A ranged read where a range past the end of the file means a corrupt index.
    async fn read_range_opt(
        &self,
        file: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Option<Bytes>> {
        match self.store.get_range(file, range.clone()).await {
            Ok(Some(b)) if b.len() as u64 == range.end - range.start => Ok(Some(b)),
            Ok(Some(b)) => Err(corrupt(
                self.store.display_key(file),
                format!(
                    "index points at bytes {}..{} past the end of the file ({} bytes there)",
                    range.start,
                    range.end,
                    b.len()
                ),
            )),
            Ok(None) => Ok(None),
            Err(e) => match self.store.size(file).await {
                Ok(Some(size)) if size < range.end => Err(corrupt(
                    self.store.display_key(file),
                    format!(
                        "index points at bytes {}..{} past the end of the {size}-byte file",
                        range.start, range.end
                    ),
                )),
                _ => Err(e),
            },
        }
    }
}

/// Decodes every entry of a whole shard file (decoded data), checking all offsets.
pub fn decode_shard(
    spec: &ShardSpec,
    file: &[u8],
) -> std::result::Result<BTreeMap<u64, Bytes>, String> {
    let base = spec.shard_index_size();
    if (file.len() as u64) < base {
        return Err(format!(
            "file of {} bytes is shorter than its {base}-byte shard index",
            file.len()
        ));
    }
    let file_len = file.len() as u64;
    let slice = |a: u64, b: u64| -> std::result::Result<Bytes, String> {
        if a > b || b > file_len {
            return Err(format!(
                "range {a}..{b} lies outside the {file_len}-byte file"
            ));
        }
        Ok(Bytes::copy_from_slice(&file[a as usize..b as usize]))
    };
    let mut out = BTreeMap::new();
    for ms in 0..spec.num_minishards() {
        let at = (16 * ms) as usize;
        let start = u64::from_le_bytes(file[at..at + 8].try_into().unwrap_or([0; 8]));
        let end = u64::from_le_bytes(file[at + 8..at + 16].try_into().unwrap_or([0; 8]));
        if start == end {
            continue;
        }
        let (Some(a), Some(b)) = (base.checked_add(start), base.checked_add(end)) else {
            return Err(format!("minishard {ms}: offsets overflow"));
        };
        let raw = spec
            .minishard_index_encoding
            .decode(slice(a, b).map_err(|e| format!("minishard {ms} index: {e}"))?)
            .map_err(|e| format!("minishard {ms} index: {e}"))?;
        for e in decode_minishard_index(&raw, base).map_err(|e| format!("minishard {ms}: {e}"))? {
            let data = slice(e.start, e.end).map_err(|r| format!("entry {}: {r}", e.key))?;
            let data = spec
                .data_encoding
                .decode(data)
                .map_err(|r| format!("entry {}: {r}", e.key))?;
            out.entry(e.key).or_insert(data);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(hash: ShardHash, mb: u32, sb: u32, enc: DataEncoding) -> ShardSpec {
        ShardSpec::new(0, hash, mb, sb, enc, enc).unwrap()
    }

    #[test]
    fn parses_neuroglancer_json() {
        let j = r#"{"@type": "neuroglancer_uint64_sharded_v1", "preshift_bits": 9,
            "hash": "murmurhash3_x86_128", "minishard_bits": 6, "shard_bits": 15,
            "minishard_index_encoding": "gzip", "data_encoding": "gzip"}"#;
        let s: ShardSpec = serde_json::from_str(j).unwrap();
        assert_eq!(s.preshift_bits, 9);
        assert_eq!(s.hash, ShardHash::Murmurhash3X86_128);
        assert_eq!(s.data_encoding, DataEncoding::Gzip);
        s.validate().unwrap();
        // Encodings default to raw.
        let j = r#"{"@type": "neuroglancer_uint64_sharded_v1", "preshift_bits": 0,
            "hash": "identity", "minishard_bits": 0, "shard_bits": 0}"#;
        let s: ShardSpec = serde_json::from_str(j).unwrap();
        assert_eq!(s.minishard_index_encoding, DataEncoding::Raw);
        assert!(serde_json::from_str::<ShardSpec>(&j.replace("identity", "md5")).is_err());
        let mut bad = s.clone();
        bad.type_ = "other".into();
        assert!(bad.validate().is_err());
        bad = s;
        bad.minishard_bits = 40;
        assert!(bad.validate().is_err());
    }

    #[test]
    fn locate_and_file_names() {
        let s = ShardSpec::new(
            2,
            ShardHash::Identity,
            3,
            5,
            DataEncoding::Raw,
            DataEncoding::Raw,
        )
        .unwrap();
        // key 0b1_01101_011_01 >> 2 = 0b1_01101_011: minishard 0b011, shard 0b01101.
        #[allow(clippy::unusual_byte_groupings)] // grouped by field: shard, minishard, preshift
        let loc = s.locate(0b1_01101_011_01);
        assert_eq!(
            loc,
            ShardLocation {
                shard: 0b01101,
                minishard: 0b011
            }
        );
        assert_eq!(s.shard_file_name(0x0d), "0d.shard");
        assert_eq!(s.num_shards(), 32);
        assert_eq!(s.shard_index_size(), 128);
        let zero = ShardSpec::new(
            0,
            ShardHash::Identity,
            0,
            0,
            DataEncoding::Raw,
            DataEncoding::Raw,
        )
        .unwrap();
        assert_eq!(zero.shard_file_name(0), "0.shard");
        assert_eq!(
            zero.locate(u64::MAX),
            ShardLocation {
                shard: 0,
                minishard: 0
            }
        );
        let m = ShardSpec::new(
            0,
            ShardHash::Murmurhash3X86_128,
            1,
            4,
            DataEncoding::Raw,
            DataEncoding::Raw,
        )
        .unwrap();
        // hash(0) = 0x4772b084_e028ae41: minishard bit 1, shard bits 0b0000.
        assert_eq!(
            m.locate(0),
            ShardLocation {
                shard: 0,
                minishard: 1
            }
        );
        assert_eq!(m.shard_file_name(3), "3.shard");
    }

    /// Hand-checked single-entry shard with identity hash, one minishard bit.
    #[test]
    fn hand_checked_layout() {
        let s = spec(ShardHash::Identity, 1, 0, DataEncoding::Raw);
        let mut entries = BTreeMap::new();
        entries.insert(5u64, Bytes::from_static(b"abc"));
        entries.insert(3u64, Bytes::from_static(b"zz"));
        let file = encode_shard(&s, &entries);
        // Both keys are odd: minishard 1. Index: 32 bytes; minishard 0 empty.
        assert_eq!(&file[0..16], &[0u8; 16]);
        // Data: "zz" (key 3) at 0..2, "abc" (key 5) at 2..5, then the index [3, 2].
        assert_eq!(&file[32..37], b"zzabc");
        let ms_start = u64::from_le_bytes(file[16..24].try_into().unwrap());
        let ms_end = u64::from_le_bytes(file[24..32].try_into().unwrap());
        assert_eq!((ms_start, ms_end), (5, 5 + 48));
        let words: Vec<u64> = file[37..]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        // keys 3, +2; offsets 0, +0 (right after the previous entry); sizes 2, 3.
        assert_eq!(words, vec![3, 2, 0, 0, 2, 3]);
        let back = decode_shard(&s, &file).unwrap();
        assert_eq!(back, entries);
    }

    #[tokio::test]
    async fn write_and_read_many_entries() {
        for (hash, enc) in [
            (ShardHash::Identity, DataEncoding::Raw),
            (ShardHash::Murmurhash3X86_128, DataEncoding::Gzip),
        ] {
            let s = ShardSpec::new(1, hash, 3, 2, enc, enc).unwrap();
            let store = Store::memory();
            let mut w = ShardWriter::new(s.clone()).unwrap();
            let keys: Vec<u64> = (0..300u64).map(|i| i * 7919 + (i << 40)).collect();
            for &k in &keys {
                w.insert(k, k.to_le_bytes().repeat((k % 5) as usize));
            }
            assert!(w.insert(keys[0], Bytes::from_static(b"replaced")).is_some());
            assert_eq!(w.len(), 300);
            let names = w.write(&store).await.unwrap();
            assert!(names.len() <= 4 && !names.is_empty());
            let r = ShardReader::new(store.clone(), s.clone()).unwrap();
            for &k in &keys[1..] {
                let want = k.to_le_bytes().repeat((k % 5) as usize);
                assert_eq!(r.get(k).await.unwrap().unwrap(), want, "key {k}");
            }
            assert_eq!(r.get(keys[0]).await.unwrap().unwrap(), &b"replaced"[..]);
            assert_eq!(r.get(1).await.unwrap(), None);
            // Whole-file decoding agrees.
            let mut total = 0;
            for n in names {
                let f = store.get(&n).await.unwrap().unwrap();
                total += decode_shard(&s, &f).unwrap().len();
            }
            assert_eq!(total, 300);
        }
    }

    #[tokio::test]
    async fn corrupt_shards_give_clear_errors() {
        let s = spec(ShardHash::Identity, 1, 0, DataEncoding::Raw);
        let store = Store::memory();
        let mut w = ShardWriter::new(s.clone()).unwrap();
        w.insert(1, b"hello".to_vec());
        w.write(&store).await.unwrap();
        let file = store.get("0.shard").await.unwrap().unwrap().to_vec();

        // Truncated inside the shard index.
        store.put("0.shard", file[..20].to_vec()).await.unwrap();
        let r = ShardReader::new(store.clone(), s.clone()).unwrap();
        let e = r.get(1).await.unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert!(decode_shard(&s, &file[..20]).is_err());

        // Minishard index pointing past the end.
        let mut bad = file.clone();
        bad[24..32].copy_from_slice(&10_000u64.to_le_bytes());
        store.put("0.shard", bad.clone()).await.unwrap();
        let r = ShardReader::new(store.clone(), s.clone()).unwrap();
        let e = r.get(1).await.unwrap_err();
        assert!(e.to_string().contains("past the end"), "{e}");
        assert!(decode_shard(&s, &bad).is_err());

        // Minishard index whose length is not a multiple of 24.
        let mut bad = file.clone();
        bad[24..32].copy_from_slice(&(5u64 + 20).to_le_bytes());
        store.put("0.shard", bad).await.unwrap();
        let r = ShardReader::new(store.clone(), s.clone()).unwrap();
        assert!(r
            .get(1)
            .await
            .unwrap_err()
            .to_string()
            .contains("multiple of 24"));

        // End before start.
        let mut bad = file.clone();
        bad[16..24].copy_from_slice(&100u64.to_le_bytes());
        store.put("0.shard", bad).await.unwrap();
        let r = ShardReader::new(store.clone(), s.clone()).unwrap();
        assert!(matches!(r.get(1).await, Err(Error::Corrupt { .. })));

        // Entry data range past the end of the file.
        let mut bad = file.clone();
        let n = bad.len();
        bad[n - 8..].copy_from_slice(&1_000_000u64.to_le_bytes()); // size of entry
        store.put("0.shard", bad).await.unwrap();
        let r = ShardReader::new(store.clone(), s).unwrap();
        assert!(matches!(r.get(1).await, Err(Error::Corrupt { .. })));

        // Missing shard file: no entry, no error.
        let empty = ShardReader::new(
            Store::memory(),
            spec(ShardHash::Identity, 1, 0, DataEncoding::Raw),
        )
        .unwrap();
        assert_eq!(empty.get(1).await.unwrap(), None);
    }
}
