//! The pipeline's work directory: task outputs and completion markers, on local disk or in a
//! bucket (any `cg_volume::Store` URL), so that tasks of one run may execute in different
//! processes or pods.
//!
//! A task writes its outputs first and its marker last; a task whose marker exists is
//! skipped, and one that crashed before its marker is redone from scratch (its outputs are
//! deterministic, so a partial earlier attempt is simply overwritten).

use anyhow::Context;
use bytes::Bytes;
use cg_volume::Store;

#[derive(Clone)]
pub struct WorkDir {
    store: Store,
}

impl WorkDir {
    pub fn open(url: &str) -> anyhow::Result<WorkDir> {
        if let Some(path) = url.strip_prefix("file://") {
            std::fs::create_dir_all(path).with_context(|| format!("creating {path}"))?;
        }
        let store = Store::open(url).with_context(|| format!("opening work directory {url}"))?;
        Ok(WorkDir { store })
    }

    pub fn url(&self) -> &str {
        self.store.url()
    }

    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.store
            .put(key, bytes)
            .await
            .with_context(|| format!("writing {}", self.store.display_key(key)))
    }

    pub async fn get(&self, key: &str) -> anyhow::Result<Bytes> {
        self.store
            .get(key)
            .await
            .with_context(|| format!("reading {}", self.store.display_key(key)))?
            .with_context(|| {
                format!(
                    "{} is missing: did the stage that writes it finish?",
                    self.store.display_key(key)
                )
            })
    }

    pub async fn is_done(&self, task: &str) -> anyhow::Result<bool> {
        let key = format!("done/{task}");
        Ok(self
            .store
            .size(&key)
            .await
            .with_context(|| format!("checking {}", self.store.display_key(&key)))?
            .is_some())
    }

    pub async fn mark_done(&self, task: &str) -> anyhow::Result<()> {
        self.put(&format!("done/{task}"), Vec::new()).await
    }
}

/// Little-endian writer for the work files.
#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f32(&mut self, v: f32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64s(&mut self, v: &[u64]) {
        self.u64(v.len() as u64);
        self.0.reserve(v.len() * 8);
        self.0.extend(v.iter().flat_map(|x| x.to_le_bytes()));
    }
}

/// Reader for what [`Writer`] wrote; a short or corrupt file is an error naming `what`.
pub struct Reader<'a> {
    bytes: &'a [u8],
    what: &'a str,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8], what: &'a str) -> Self {
        Reader { bytes, what }
    }

    fn take<const N: usize>(&mut self) -> anyhow::Result<[u8; N]> {
        if self.bytes.len() < N {
            anyhow::bail!("{} is truncated", self.what);
        }
        let (head, rest) = self.bytes.split_at(N);
        self.bytes = rest;
        let mut out = [0u8; N];
        out.copy_from_slice(head);
        Ok(out)
    }
    pub fn u64(&mut self) -> anyhow::Result<u64> {
        self.take::<8>().map(u64::from_le_bytes)
    }
    pub fn u32(&mut self) -> anyhow::Result<u32> {
        self.take::<4>().map(u32::from_le_bytes)
    }
    pub fn f32(&mut self) -> anyhow::Result<f32> {
        self.take::<4>().map(f32::from_le_bytes)
    }
    pub fn u64s(&mut self) -> anyhow::Result<Vec<u64>> {
        let n = self.u64()? as usize;
        if self.bytes.len() / 8 < n {
            anyhow::bail!("{} is truncated", self.what);
        }
        let (head, rest) = self.bytes.split_at(n * 8);
        self.bytes = rest;
        Ok(head
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect())
    }
    pub fn finish(&self) -> anyhow::Result<()> {
        if !self.bytes.is_empty() {
            anyhow::bail!("{} has {} trailing bytes", self.what, self.bytes.len());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let mut w = Writer::default();
        w.u64(7);
        w.u64s(&[1, 2, 3]);
        w.f32(0.5);
        w.u32(9);
        let mut r = Reader::new(&w.0, "test file");
        assert_eq!(r.u64().expect("u64"), 7);
        assert_eq!(r.u64s().expect("u64s"), vec![1, 2, 3]);
        assert_eq!(r.f32().expect("f32"), 0.5);
        assert_eq!(r.u32().expect("u32"), 9);
        r.finish().expect("all read");
        let short = &w.0[..w.0.len() - 2];
        let mut r = Reader::new(short, "test file");
        r.u64().expect("u64");
        r.u64s().expect("u64s");
        r.f32().expect("f32");
        let err = r.u32().expect_err("truncated");
        assert!(err.to_string().contains("test file is truncated"));
        let mut huge = Writer::default();
        huge.u64(u64::MAX);
        assert!(Reader::new(&huge.0, "x").u64s().is_err());
    }
}
