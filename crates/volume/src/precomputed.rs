//! Neuroglancer precomputed volumes: [`Volume`] reads and writes boxes of voxels through the
//! chunk files (unsharded) or shard files (sharded) of a scale.

use std::any::Any;
use std::collections::BTreeMap;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::array::{copy_box, Array, BBox};
use crate::cseg;
use crate::dtype::{decode_le, encode_le, DataType, Element};
use crate::error::{corrupt, invalid_meta, Error, Result};
use crate::info::{Encoding, Info, Scale};
use crate::morton::compressed_morton_code;
use crate::shard::{decode_shard, encode_shard, ShardReader};
use crate::store::{gunzip_limited, looks_gzipped, Store};

/// Reading and writing behaviour.
#[derive(Clone, Debug)]
pub struct VolumeOptions {
    /// Treat missing chunks as zeros (otherwise reading one is [`Error::NotFound`]). Sharded
    /// volumes usually omit empty chunks, so servers will want this on.
    pub fill_missing: bool,
    /// Gzip unsharded chunk files on write (as `name.gz` locally, Content-Encoding remotely),
    /// as cloud-volume does by default. Sharded scales use their `data_encoding` instead.
    pub gzip: bool,
    /// Chunk or shard requests in flight at once.
    pub concurrency: usize,
}

impl Default for VolumeOptions {
    fn default() -> Self {
        VolumeOptions {
            fill_missing: false,
            gzip: true,
            concurrency: 16,
        }
    }
}

/// A precomputed volume: its info, its store, and readers for sharded scales.
pub struct Volume {
    store: Store,
    info: Info,
    options: VolumeOptions,
    shard_readers: Vec<Option<ShardReader>>,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume")
            .field("store", &self.store)
            .field("info", &self.info)
            .finish()
    }
}

impl Volume {
    /// Opens the volume at `url` (see [`Store::open`]) by reading its `info`.
    pub async fn open(url: &str) -> Result<Volume> {
        Self::open_store(Store::open(url)?).await
    }

    /// Opens the volume rooted at `store`.
    pub async fn open_store(store: Store) -> Result<Volume> {
        let Some((bytes, gz)) = store.get_with_gz_fallback("info").await? else {
            return Err(Error::NotFound {
                path: store.display_key("info"),
            });
        };
        let bytes = if gz || looks_gzipped(&bytes) {
            Bytes::from(
                gunzip_limited(&bytes, 64 << 20)
                    .map_err(|r| corrupt(store.display_key("info"), r))?,
            )
        } else {
            bytes
        };
        let info =
            Info::from_json(&bytes).map_err(|r| invalid_meta(store.display_key("info"), r))?;
        Self::with_info(store, info)
    }

    /// Creates (or overwrites) the volume's `info` at `store` and opens it.
    pub async fn create(store: Store, info: Info) -> Result<Volume> {
        info.validate()
            .map_err(|r| invalid_meta(store.display_key("info"), r))?;
        store.put("info", info.to_json()).await?;
        Self::with_info(store, info)
    }

    fn with_info(store: Store, info: Info) -> Result<Volume> {
        let mut shard_readers = Vec::with_capacity(info.scales.len());
        for s in &info.scales {
            shard_readers.push(match &s.sharding {
                Some(spec) => Some(ShardReader::new(store.child(&s.key)?, spec.clone())?),
                None => None,
            });
        }
        Ok(Volume {
            store,
            info,
            options: VolumeOptions::default(),
            shard_readers,
        })
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: VolumeOptions) -> Volume {
        self.options = options;
        self
    }

    /// The current options.
    pub fn options(&self) -> &VolumeOptions {
        &self.options
    }

    /// The parsed info.
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// The store holding the volume.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Scale `i`, or an error naming the valid range.
    pub fn scale(&self, i: usize) -> Result<&Scale> {
        self.info.scales.get(i).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "scale {i} does not exist ({} scales)",
                self.info.scales.len()
            ))
        })
    }

    /// The chunk ID (compressed Morton code) of grid cell `g` in a sharded scale.
    pub fn chunk_id(&self, scale: usize, g: [u64; 3]) -> Result<u64> {
        let s = self.scale(scale)?;
        compressed_morton_code(g, s.grid_size()).ok_or_else(|| {
            Error::InvalidArgument(format!("grid cell {g:?} outside grid {:?}", s.grid_size()))
        })
    }

    /// The key of grid cell `g`'s chunk file in an unsharded scale, e.g. `8_8_8/0-64_0-64_0-64`.
    pub fn chunk_key(&self, scale: usize, g: [u64; 3]) -> Result<String> {
        let s = self.scale(scale)?;
        Ok(format!("{}/{}", s.key, Scale::chunk_name(&s.chunk_bbox(g))))
    }

    fn check_type<T: Element>(&self) -> Result<()> {
        if T::DATA_TYPE != self.info.data_type {
            return Err(Error::DataTypeMismatch {
                stored: self.info.data_type.to_string(),
                requested: T::DATA_TYPE.to_string(),
            });
        }
        Ok(())
    }

    /// Reads grid cell `g` of a scale, decoded as C-ordered `[c, z, y, x]` values over the
    /// cell's clipped box. `None` when the chunk does not exist.
    pub async fn read_chunk<T: Element>(
        &self,
        scale: usize,
        g: [u64; 3],
    ) -> Result<Option<Vec<T>>> {
        self.check_type::<T>()?;
        let s = self.scale(scale)?;
        let grid = s.grid_size();
        if (0..3).any(|a| g[a] >= grid[a]) {
            return Err(Error::InvalidArgument(format!(
                "grid cell {g:?} outside grid {grid:?}"
            )));
        }
        let bbox = s.chunk_bbox(g);
        match &self.shard_readers[scale] {
            Some(reader) => {
                let id = self.chunk_id(scale, g)?;
                let Some(bytes) = reader.get(id).await? else {
                    return Ok(None);
                };
                let what = format!(
                    "{} (chunk {id} of {})",
                    Scale::chunk_name(&bbox),
                    self.store.display_key(&s.key)
                );
                self.decode_chunk(s, &bbox, bytes, false, &what).map(Some)
            }
            None => {
                let key = format!("{}/{}", s.key, Scale::chunk_name(&bbox));
                let Some((bytes, gz)) = self.store.get_with_gz_fallback(&key).await? else {
                    return Ok(None);
                };
                let what = self.store.display_key(&key);
                self.decode_chunk(s, &bbox, bytes, gz, &what).map(Some)
            }
        }
    }

    fn decode_chunk<T: Element>(
        &self,
        s: &Scale,
        bbox: &BBox,
        bytes: Bytes,
        gz: bool,
        what: &str,
    ) -> Result<Vec<T>> {
        let c = self.info.num_channels as usize;
        let size = bbox.size();
        let voxels = c * (size[0] * size[1] * size[2]) as usize;
        let expected = voxels * T::DATA_TYPE.size();
        // Compressed segmentation can exceed raw size (32-bit indices plus tables).
        let limit = match s.encoding {
            Encoding::Raw => expected,
            _ => 4 * expected + 1024,
        };
        // A gzip stream served without decoding (Content-Encoding) still starts with the magic;
        // a raw chunk of exactly the expected size is taken as-is even if it does too.
        let sniffed =
            looks_gzipped(&bytes) && !(s.encoding == Encoding::Raw && bytes.len() == expected);
        let bytes = if gz || sniffed {
            Bytes::from(gunzip_limited(&bytes, limit).map_err(|r| corrupt(what, r))?)
        } else {
            bytes
        };
        match &s.encoding {
            Encoding::Raw => {
                if bytes.len() != expected {
                    return Err(corrupt(
                        what,
                        format!(
                            "raw chunk of {} bytes, expected {expected} ({c} x {size:?} {})",
                            bytes.len(),
                            T::DATA_TYPE
                        ),
                    ));
                }
                Ok(decode_le(&bytes))
            }
            Encoding::CompressedSegmentation => {
                let block = s.compressed_segmentation_block_size.unwrap_or([8, 8, 8]);
                let block = block.map(|v| v as usize);
                let size = size.map(|v| v as usize);
                let decoded: Box<dyn Any> = match T::DATA_TYPE {
                    DataType::U32 => Box::new(cseg::decode::<u32>(&bytes, size, c, block)),
                    DataType::U64 => Box::new(cseg::decode::<u64>(&bytes, size, c, block)),
                    other => {
                        return Err(Error::Unsupported(format!(
                            "compressed_segmentation of {other}"
                        )))
                    }
                };
                match decoded.downcast::<std::result::Result<Vec<T>, cseg::CsegError>>() {
                    Ok(r) => (*r).map_err(|e| corrupt(what, e.to_string())),
                    Err(_) => Err(Error::Unsupported("compressed_segmentation type".into())),
                }
            }
            Encoding::Other(name) => Err(Error::Unsupported(format!("chunk encoding {name:?}"))),
        }
    }

    fn encode_chunk<T: Element>(&self, s: &Scale, bbox: &BBox, values: Vec<T>) -> Result<Vec<u8>> {
        match &s.encoding {
            Encoding::Raw => Ok(encode_le(&values)),
            Encoding::CompressedSegmentation => {
                let block = s
                    .compressed_segmentation_block_size
                    .unwrap_or([8, 8, 8])
                    .map(|v| v as usize);
                let size = bbox.size().map(|v| v as usize);
                let c = self.info.num_channels as usize;
                // T is u32 or u64 here (the info was validated); recover the concrete type.
                let any: Box<dyn Any> = Box::new(values);
                let r = if let Some(v) = any.downcast_ref::<Vec<u32>>() {
                    cseg::encode(v, size, c, block)
                } else if let Some(v) = any.downcast_ref::<Vec<u64>>() {
                    cseg::encode(v, size, c, block)
                } else {
                    return Err(Error::Unsupported(format!(
                        "compressed_segmentation of {}",
                        T::DATA_TYPE
                    )));
                };
                r.map_err(|e| Error::InvalidArgument(e.to_string()))
            }
            Encoding::Other(name) => Err(Error::Unsupported(format!("chunk encoding {name:?}"))),
        }
    }

    /// Reads the voxels of `bbox` (x, y, z coordinates, inside the scale's bounds) as an array
    /// of shape `[z, y, x]`, or `[c, z, y, x]` when the volume has several channels.
    pub async fn read_box<T: Element>(&self, scale: usize, bbox: BBox) -> Result<Array<T>> {
        self.check_type::<T>()?;
        let s = self.scale(scale)?;
        let c = self.info.num_channels as usize;
        if !bbox.is_empty() && !s.bounds().contains_box(&bbox) {
            return Err(Error::InvalidArgument(format!(
                "box {bbox:?} is not inside the scale's bounds {:?}",
                s.bounds()
            )));
        }
        let out_shape = shape4(&bbox, c);
        let mut out = vec![T::default(); out_shape.iter().product()];
        if !bbox.is_empty() {
            let cells = cells(s, &bbox);
            let mut results = futures::stream::iter(cells)
                .map(|g| async move { self.read_chunk::<T>(scale, g).await.map(|v| (g, v)) })
                .buffer_unordered(self.options.concurrency.max(1));
            while let Some((g, chunk)) = results.try_next().await? {
                let cb = s.chunk_bbox(g);
                let Some(values) = chunk else {
                    if self.options.fill_missing {
                        continue;
                    }
                    return Err(Error::NotFound {
                        path: self.chunk_location(scale, g),
                    });
                };
                let inter = cb.intersection(&bbox);
                copy_box(
                    &values,
                    shape4(&cb, c),
                    offset4(&inter, &cb),
                    &mut out,
                    out_shape,
                    offset4(&inter, &bbox),
                    shape4(&inter, c),
                );
            }
        }
        let shape = if c == 1 {
            out_shape[1..].to_vec()
        } else {
            out_shape.to_vec()
        };
        Array::new(shape, out)
    }

    fn chunk_location(&self, scale: usize, g: [u64; 3]) -> String {
        match (&self.shard_readers[scale], self.chunk_id(scale, g)) {
            (Some(_), Ok(id)) => format!(
                "chunk {id} ({}) in the shards of {}",
                Scale::chunk_name(&self.info.scales[scale].chunk_bbox(g)),
                self.store.display_key(&self.info.scales[scale].key)
            ),
            _ => self
                .chunk_key(scale, g)
                .map(|k| self.store.display_key(&k))
                .unwrap_or_default(),
        }
    }

    /// Writes `data` (shape `[z, y, x]`, or `[c, z, y, x]`) with its first voxel at `offset`
    /// (x, y, z). Chunks the box covers only in part are read, patched and rewritten (missing
    /// ones start as zeros); in sharded scales every touched shard file is rewritten whole.
    /// Concurrent writers to the same chunk or shard race: the last one wins.
    pub async fn write_box<T: Element>(
        &self,
        scale: usize,
        offset: [i64; 3],
        data: &Array<T>,
    ) -> Result<()> {
        self.check_type::<T>()?;
        let s = self.scale(scale)?;
        let c = self.info.num_channels as usize;
        let sh = data.shape();
        let (dc, zyx) = match sh.len() {
            3 if c == 1 => (1, [sh[0], sh[1], sh[2]]),
            4 => (sh[0], [sh[1], sh[2], sh[3]]),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "array of shape {sh:?} for a {c}-channel volume: want [z, y, x] or [c, z, y, x]"
                )))
            }
        };
        if dc != c {
            return Err(Error::InvalidArgument(format!(
                "array has {dc} channels, the volume {c}"
            )));
        }
        let bbox = BBox::from_offset_size(offset, [zyx[2] as u64, zyx[1] as u64, zyx[0] as u64]);
        if bbox.is_empty() {
            return Ok(());
        }
        if !s.bounds().contains_box(&bbox) {
            return Err(Error::InvalidArgument(format!(
                "box {bbox:?} is not inside the scale's bounds {:?}",
                s.bounds()
            )));
        }
        let cells = cells(s, &bbox);
        match &self.shard_readers[scale] {
            None => {
                futures::stream::iter(cells)
                    .map(|g| self.write_unsharded_chunk(scale, g, &bbox, data.data()))
                    .buffer_unordered(self.options.concurrency.max(1))
                    .try_collect::<Vec<()>>()
                    .await?;
            }
            Some(reader) => {
                let spec = reader.spec().clone();
                let mut by_shard: BTreeMap<u64, Vec<([u64; 3], u64)>> = BTreeMap::new();
                for g in cells {
                    let id = self.chunk_id(scale, g)?;
                    by_shard
                        .entry(spec.locate(id).shard)
                        .or_default()
                        .push((g, id));
                }
                let result = futures::stream::iter(by_shard)
                    .map(|(shard, list)| self.write_shard(scale, shard, list, &bbox, data.data()))
                    .buffer_unordered(self.options.concurrency.clamp(1, 4))
                    .try_collect::<Vec<()>>()
                    .await;
                reader.clear_cache();
                result?;
            }
        }
        Ok(())
    }

    /// The values of chunk `cb` after writing `src` (covering `bbox`) over `existing`.
    fn patched_chunk<T: Element>(
        &self,
        cb: &BBox,
        bbox: &BBox,
        src: &[T],
        existing: Option<Vec<T>>,
    ) -> Vec<T> {
        let c = self.info.num_channels as usize;
        let cshape = shape4(cb, c);
        let mut values = existing.unwrap_or_else(|| vec![T::default(); cshape.iter().product()]);
        let inter = cb.intersection(bbox);
        copy_box(
            src,
            shape4(bbox, c),
            offset4(&inter, bbox),
            &mut values,
            cshape,
            offset4(&inter, cb),
            shape4(&inter, c),
        );
        values
    }

    async fn write_unsharded_chunk<T: Element>(
        &self,
        scale: usize,
        g: [u64; 3],
        bbox: &BBox,
        src: &[T],
    ) -> Result<()> {
        let s = &self.info.scales[scale];
        let cb = s.chunk_bbox(g);
        let existing = if bbox.contains_box(&cb) {
            None
        } else {
            self.read_chunk::<T>(scale, g).await?
        };
        let values = self.patched_chunk(&cb, bbox, src, existing);
        let encoded = self.encode_chunk(s, &cb, values)?;
        let key = format!("{}/{}", s.key, Scale::chunk_name(&cb));
        self.store
            .put_maybe_gzip(&key, encoded, self.options.gzip)
            .await
    }

    async fn write_shard<T: Element>(
        &self,
        scale: usize,
        shard: u64,
        cells: Vec<([u64; 3], u64)>,
        bbox: &BBox,
        src: &[T],
    ) -> Result<()> {
        let s = &self.info.scales[scale];
        let Some(spec) = &s.sharding else {
            return Err(Error::InvalidArgument("scale is not sharded".into()));
        };
        let dir = self.store.child(&s.key)?;
        let name = spec.shard_file_name(shard);
        let mut entries = match dir.get(&name).await? {
            Some(file) => {
                decode_shard(spec, &file).map_err(|r| corrupt(dir.display_key(&name), r))?
            }
            None => BTreeMap::new(),
        };
        for (g, id) in cells {
            let cb = s.chunk_bbox(g);
            let existing = match entries.get(&id) {
                Some(bytes) if !bbox.contains_box(&cb) => {
                    let what = format!("chunk {id} of {}", dir.display_key(&name));
                    Some(self.decode_chunk::<T>(s, &cb, bytes.clone(), false, &what)?)
                }
                _ => None,
            };
            let values = self.patched_chunk(&cb, bbox, src, existing);
            entries.insert(id, Bytes::from(self.encode_chunk(s, &cb, values)?));
        }
        dir.put(&name, encode_shard(spec, &entries)).await
    }
}

/// `[c, z, y, x]` extent of a box.
fn shape4(b: &BBox, c: usize) -> [usize; 4] {
    let [z, y, x] = b.shape_zyx();
    [c, z, y, x]
}

/// `[0, z, y, x]` position of `inner`'s corner inside `outer`.
fn offset4(inner: &BBox, outer: &BBox) -> [usize; 4] {
    [
        0,
        (inner.min[2] - outer.min[2]) as usize,
        (inner.min[1] - outer.min[1]) as usize,
        (inner.min[0] - outer.min[0]) as usize,
    ]
}

/// Grid cells of scale `s` overlapping `bbox`.
fn cells(s: &Scale, bbox: &BBox) -> Vec<[u64; 3]> {
    let (lo, hi) = s.grid_range(bbox);
    let mut out = Vec::new();
    for z in lo[2]..hi[2] {
        for y in lo[1]..hi[1] {
            for x in lo[0]..hi[0] {
                out.push([x, y, z]);
            }
        }
    }
    out
}
