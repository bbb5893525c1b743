//! Finding and reading fragments in a mesh directory: initial shards (index cached per
//! file) and dynamic files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::Context;
use cg_ids::{layer_of, Geometry};
use cg_mesh::Mesh;
use cg_volume::shard::decode_minishard_index;
use cg_volume::ShardSpec;
use serde_json::Value;

use super::layout::{self, MeshParams, DYNAMIC_DIR, INITIAL_DIR};

/// Where a node's fragment is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Located {
    /// In an initial shard: file relative to `initial/`, byte offset and size.
    Initial {
        file: String,
        offset: u64,
        size: u64,
    },
    /// A dynamic file, by name.
    Dynamic(String),
    /// Meshed, but the node owns no surface (a 0-byte dynamic file).
    Empty,
}

impl Located {
    /// The fragment string of a manifest, as Neuroglancer and cloud-volume parse it:
    /// `~{layer}/{file}:{offset}:{size}` for initial fragments, the file name for dynamic
    /// ones.
    pub fn fragment(&self) -> Option<String> {
        match self {
            Located::Initial { file, offset, size } => Some(format!("~{file}:{offset}:{size}")),
            Located::Dynamic(name) => Some(name.clone()),
            Located::Empty => None,
        }
    }
}

/// A shard file's keys and their byte ranges, with the file state it was read from.
struct ShardIndex {
    stamp: (u64, Option<SystemTime>),
    entries: HashMap<u64, (u64, u64)>,
}

/// One graph's mesh directory.
pub struct MeshStore {
    pub dir: PathBuf,
    pub params: MeshParams,
    pub geometry: Geometry,
    spec: ShardSpec,
    indexes: Mutex<HashMap<PathBuf, Arc<ShardIndex>>>,
}

impl MeshStore {
    /// Opens the mesh directory of a segmentation directory; `Ok(None)` when it has none.
    pub fn open(segmentation: &Path, geometry: &Geometry) -> anyhow::Result<Option<MeshStore>> {
        let dir = layout::mesh_dir(segmentation);
        let info_path = dir.join("info");
        let bytes = match std::fs::read(&info_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", info_path.display())),
        };
        let info: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not valid JSON", info_path.display()))?;
        let params = MeshParams::from_info(&info)
            .with_context(|| format!("{} has no chunkedgraph parameters", info_path.display()))?;
        Ok(Some(MeshStore::new(dir, params, geometry.clone())))
    }

    pub fn new(dir: PathBuf, params: MeshParams, geometry: Geometry) -> MeshStore {
        MeshStore {
            spec: params.sharding(),
            dir,
            params,
            geometry,
            indexes: Mutex::new(HashMap::new()),
        }
    }

    pub fn dynamic_path(&self, id: u64) -> PathBuf {
        self.dir
            .join(DYNAMIC_DIR)
            .join(layout::dynamic_name(&self.geometry, id))
    }

    pub fn initial_path(&self, id: u64) -> PathBuf {
        self.dir
            .join(INITIAL_DIR)
            .join(layout::initial_shard_name(&self.geometry, id))
    }

    /// Where `id`'s fragment is: a dynamic file first (it replaces any initial one), then
    /// the initial shard of its chunk; `None` if it has none.
    pub fn locate(&self, id: u64) -> anyhow::Result<Option<Located>> {
        let layer = layer_of(id);
        if !(2..=self.params.max_meshed_layer).contains(&layer) {
            return Ok(None);
        }
        let dynamic = self.dynamic_path(id);
        match std::fs::metadata(&dynamic) {
            Ok(m) if m.len() == 0 => return Ok(Some(Located::Empty)),
            Ok(_) => {
                return Ok(Some(Located::Dynamic(layout::dynamic_name(
                    &self.geometry,
                    id,
                ))))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("checking {}", dynamic.display())),
        }
        let path = self.initial_path(id);
        let Some(index) = self.shard_index(&path)? else {
            return Ok(None);
        };
        Ok(index
            .entries
            .get(&id)
            .map(|&(offset, size)| Located::Initial {
                file: layout::initial_shard_name(&self.geometry, id),
                offset,
                size,
            }))
    }

    /// Reads and decodes `id`'s fragment; `None` when it has none (or an empty one).
    pub fn read(&self, id: u64) -> anyhow::Result<Option<Mesh>> {
        let bytes = match self.locate(id)? {
            None | Some(Located::Empty) => return Ok(None),
            Some(Located::Dynamic(_)) => {
                let p = self.dynamic_path(id);
                std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?
            }
            Some(Located::Initial { offset, size, .. }) => {
                use std::io::{Read, Seek, SeekFrom};
                let p = self.initial_path(id);
                let mut f =
                    std::fs::File::open(&p).with_context(|| format!("opening {}", p.display()))?;
                f.seek(SeekFrom::Start(offset))?;
                let mut buf = vec![0u8; size as usize];
                f.read_exact(&mut buf)
                    .with_context(|| format!("reading {} at {offset}", p.display()))?;
                buf
            }
        };
        let mesh = cg_mesh::draco::decode(&bytes)
            .with_context(|| format!("decoding the fragment of {id}"))?;
        Ok(Some(mesh))
    }

    /// The index of a shard file, re-read when the file changed; `None` if it is missing.
    fn shard_index(&self, path: &Path) -> anyhow::Result<Option<Arc<ShardIndex>>> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("checking {}", path.display())),
        };
        let stamp = (meta.len(), meta.modified().ok());
        if let Some(ix) = self.lock().get(path) {
            if ix.stamp == stamp {
                return Ok(Some(ix.clone()));
            }
        }
        let file = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let entries = index_entries(&self.spec, &file)
            .map_err(|e| anyhow::anyhow!("shard {}: {e}", path.display()))?;
        let ix = Arc::new(ShardIndex { stamp, entries });
        self.lock().insert(path.to_path_buf(), ix.clone());
        Ok(Some(ix))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Arc<ShardIndex>>> {
        self.indexes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every key of a shard file with its (offset, size), from the shard and minishard indexes.
pub fn index_entries(spec: &ShardSpec, file: &[u8]) -> Result<HashMap<u64, (u64, u64)>, String> {
    let base = spec.shard_index_size();
    if (file.len() as u64) < base {
        return Err(format!(
            "{} bytes is shorter than the {base}-byte shard index",
            file.len()
        ));
    }
    let word = |at: usize| u64::from_le_bytes(file[at..at + 8].try_into().unwrap_or([0; 8]));
    let mut out = HashMap::new();
    for ms in 0..spec.num_minishards() as usize {
        let (start, end) = (word(16 * ms), word(16 * ms + 8));
        if start == end {
            continue;
        }
        let (a, b) = (base.saturating_add(start), base.saturating_add(end));
        if a > b || b > file.len() as u64 {
            return Err(format!("minishard {ms} index lies outside the file"));
        }
        let raw = &file[a as usize..b as usize];
        let raw = match spec.minishard_index_encoding {
            cg_volume::DataEncoding::Raw => raw.to_vec(),
            cg_volume::DataEncoding::Gzip => {
                use std::io::Read;
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(raw)
                    .take(1 << 30)
                    .read_to_end(&mut out)
                    .map_err(|e| format!("minishard {ms} index: {e}"))?;
                out
            }
        };
        for e in decode_minishard_index(&raw, base)? {
            if e.end > file.len() as u64 {
                return Err(format!("entry {} lies outside the file", e.key));
            }
            out.insert(e.key, (e.start, e.end - e.start));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn shard_index_gives_each_fragment_byte_range() {
        let g = Geometry::new([256, 256, 256], [64, 64, 64]).unwrap();
        let params = MeshParams::for_geometry(&g);
        let spec = params.sharding();
        let entries: BTreeMap<u64, bytes::Bytes> = (1..40u64)
            .map(|k| (k * 7919, bytes::Bytes::from(vec![k as u8; k as usize])))
            .collect();
        let file = cg_volume::shard::encode_shard(&spec, &entries);
        let index = index_entries(&spec, &file).unwrap();
        assert_eq!(index.len(), entries.len());
        for (key, data) in &entries {
            let (off, size) = index[key];
            assert_eq!(&file[off as usize..(off + size) as usize], &data[..]);
        }
        assert!(index_entries(&spec, &file[..10]).is_err());
    }

    #[test]
    fn fragment_strings_are_what_clients_parse() {
        let initial = Located::Initial {
            file: "2/1025-0.shard".into(),
            offset: 165,
            size: 217,
        };
        assert_eq!(
            initial.fragment().as_deref(),
            Some("~2/1025-0.shard:165:217")
        );
        let dynamic = Located::Dynamic("5:0:0-64_0-64_0-64".into());
        assert_eq!(dynamic.fragment().as_deref(), Some("5:0:0-64_0-64_0-64"));
        assert_eq!(Located::Empty.fragment(), None);
    }

    #[test]
    fn missing_directory_means_no_meshes() {
        let dir = tempfile::tempdir().unwrap();
        let g = Geometry::new([64, 64, 64], [64, 64, 64]).unwrap();
        assert!(MeshStore::open(dir.path(), &g).unwrap().is_none());
    }
}
