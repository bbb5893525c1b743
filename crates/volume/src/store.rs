//! Where volumes live: local directories and object stores (GCS, S3, HTTP, memory) behind one
//! async key-value interface, with the gzip conventions of Neuroglancer and cloud-volume.

use std::io::Read;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{Attribute, Attributes, ObjectStore, ObjectStoreExt, PutOptions, PutPayload};

use crate::error::{Error, Result};

/// An object store plus a key prefix: the root of a volume or array.
///
/// Keys are `/`-separated and relative to the root. On local and in-memory stores a gzipped
/// object is written as `key.gz` (cloud-volume's file backend convention); on remote stores it
/// is written under `key` with `Content-Encoding: gzip`, as Neuroglancer expects from a server.
/// Reads accept both.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: Vec<String>,
    url: String,
    // Whether gzip is stored as `.gz` files (local, memory) rather than Content-Encoding.
    suffix_gzip: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("url", &self.url).finish()
    }
}

fn bad_url(url: &str, reason: impl Into<String>) -> Error {
    Error::BadUrl {
        url: url.to_string(),
        reason: reason.into(),
    }
}

/// Strips a Neuroglancer data-source scheme (`precomputed://`, `zarr://`, ...).
fn strip_source_scheme(url: &str) -> &str {
    for s in ["precomputed://", "zarr://", "zarr2://", "zarr3://", "n5://"] {
        if let Some(rest) = url.strip_prefix(s) {
            return rest;
        }
    }
    url
}

fn split_segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

impl Store {
    /// Opens a store from a URL: a plain path or `file://` (local files), `memory://` (a new
    /// empty in-memory store), `gs://bucket/path` and `s3://bucket/path` (credentials from the
    /// environment, as `object_store`'s builders read them), or `http(s)://host/path`
    /// (read-only in practice). A leading `precomputed://` or `zarr://` is ignored.
    pub fn open(url: &str) -> Result<Store> {
        Self::open_with(url, false)
    }

    /// Like [`Store::open`], but sends unsigned requests to GCS and S3: for public buckets
    /// without credentials.
    pub fn open_anonymous(url: &str) -> Result<Store> {
        Self::open_with(url, true)
    }

    fn open_with(url: &str, anonymous: bool) -> Result<Store> {
        let orig = url;
        let url = strip_source_scheme(url.trim());
        if url.is_empty() {
            return Err(bad_url(orig, "empty"));
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Self::local(std::path::Path::new(url), orig);
        };
        match scheme {
            "file" => Self::local(std::path::Path::new(rest), orig),
            "memory" => Ok(Store {
                inner: Arc::new(object_store::memory::InMemory::new()),
                prefix: split_segments(rest),
                url: orig.to_string(),
                suffix_gzip: true,
            }),
            "gs" | "s3" => {
                let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(bad_url(orig, "no bucket"));
                }
                let built: std::result::Result<Arc<dyn ObjectStore>, object_store::Error> =
                    if scheme == "gs" {
                        object_store::gcp::GoogleCloudStorageBuilder::from_env()
                            .with_bucket_name(bucket)
                            .with_skip_signature(anonymous)
                            .build()
                            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
                    } else {
                        object_store::aws::AmazonS3Builder::from_env()
                            .with_bucket_name(bucket)
                            .with_skip_signature(anonymous)
                            .build()
                            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
                    };
                let inner = built.map_err(|e| bad_url(orig, e.to_string()))?;
                Ok(Store {
                    inner,
                    prefix: split_segments(path),
                    url: orig.to_string(),
                    suffix_gzip: false,
                })
            }
            "http" | "https" => {
                let parsed = url::Url::parse(url).map_err(|e| bad_url(orig, e.to_string()))?;
                let mut base = parsed.clone();
                base.set_path("/");
                base.set_query(None);
                let inner = object_store::http::HttpBuilder::new()
                    .with_url(base.as_str())
                    .build()
                    .map_err(|e| bad_url(orig, e.to_string()))?;
                let path = percent_decode(parsed.path());
                Ok(Store {
                    inner: Arc::new(inner),
                    prefix: split_segments(&path),
                    url: orig.to_string(),
                    suffix_gzip: false,
                })
            }
            other => Err(bad_url(orig, format!("unsupported scheme {other:?}"))),
        }
    }

    fn local(path: &std::path::Path, orig: &str) -> Result<Store> {
        let abs = std::path::absolute(path).map_err(|e| bad_url(orig, e.to_string()))?;
        let p = Path::from_absolute_path(&abs).map_err(|e| bad_url(orig, e.to_string()))?;
        Ok(Store {
            inner: Arc::new(object_store::local::LocalFileSystem::new()),
            prefix: p.parts().map(|s| s.as_ref().to_string()).collect(),
            url: orig.to_string(),
            suffix_gzip: true,
        })
    }

    /// A store over an existing `object_store` implementation, rooted at `prefix`.
    /// `gzip_as_suffix` chooses `key.gz` files (true) or Content-Encoding (false) for gzip.
    pub fn from_object_store(
        inner: Arc<dyn ObjectStore>,
        prefix: &str,
        gzip_as_suffix: bool,
    ) -> Store {
        Store {
            inner,
            prefix: split_segments(prefix),
            url: prefix.to_string(),
            suffix_gzip: gzip_as_suffix,
        }
    }

    /// A new empty in-memory store (tests, scratch).
    pub fn memory() -> Store {
        Store {
            inner: Arc::new(object_store::memory::InMemory::new()),
            prefix: Vec::new(),
            url: "memory://".into(),
            suffix_gzip: true,
        }
    }

    /// The URL this store was opened from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The underlying object store.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// A store rooted at `sub` below this one (`..` segments allowed within the root).
    pub fn child(&self, sub: &str) -> Result<Store> {
        let prefix = self.resolve(sub)?;
        Ok(Store {
            inner: self.inner.clone(),
            url: format!("{}/{}", self.url.trim_end_matches('/'), sub),
            prefix,
            suffix_gzip: self.suffix_gzip,
        })
    }

    fn resolve(&self, key: &str) -> Result<Vec<String>> {
        // `..` may climb above this store's prefix (a scale key like `../other`), but not
        // above the object store's root.
        let mut parts = self.prefix.clone();
        for seg in key.split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    if parts.is_empty() {
                        return Err(Error::InvalidArgument(format!(
                            "key {key:?} leaves the root of {}",
                            self.url
                        )));
                    }
                    parts.pop();
                }
                s => parts.push(s.to_string()),
            }
        }
        Ok(parts)
    }

    fn path(&self, key: &str) -> Result<Path> {
        let parts = self.resolve(key)?;
        Ok(Path::from_iter(parts.iter().map(String::as_str)))
    }

    /// A printable location for errors.
    pub fn display_key(&self, key: &str) -> String {
        format!("{}/{}", self.url.trim_end_matches('/'), key)
    }

    fn err(&self, key: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } => Error::NotFound {
                path: self.display_key(key),
            },
            source => Error::Store {
                path: self.display_key(key),
                source,
            },
        }
    }

    /// The object's bytes, or `None` if it does not exist. No decompression.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let path = self.path(key)?;
        let res = match self.inner.get(&path).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err(key, e)),
        };
        match res.bytes().await {
            Ok(b) => Ok(Some(b)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(key, e)),
        }
    }

    /// Bytes `range` of the object, or `None` if it does not exist. Like an HTTP range
    /// request, a range running past the end of the object may come back short (or fail,
    /// depending on the backend); callers check the length.
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Option<Bytes>> {
        if range.start >= range.end {
            return Ok(Some(Bytes::new()));
        }
        let path = self.path(key)?;
        match self.inner.get_range(&path, range).await {
            Ok(b) => Ok(Some(b)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(key, e)),
        }
    }

    /// The object's size in bytes, or `None` if it does not exist.
    pub async fn size(&self, key: &str) -> Result<Option<u64>> {
        let path = self.path(key)?;
        match self.inner.head(&path).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(key, e)),
        }
    }

    /// Writes the object atomically (readers see the old or the new bytes, never a mix).
    pub async fn put(&self, key: &str, bytes: impl Into<Bytes>) -> Result<()> {
        let path = self.path(key)?;
        self.inner
            .put(&path, PutPayload::from_bytes(bytes.into()))
            .await
            .map(|_| ())
            .map_err(|e| self.err(key, e))
    }

    /// Deletes the object; deleting a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match self.inner.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(key, e)),
        }
    }

    /// Writes `data` under `key`, gzip-compressed when `gzip` is set (as `key.gz` or with
    /// Content-Encoding, by store kind). Removes the other spelling so reads cannot find a
    /// stale copy.
    pub async fn put_maybe_gzip(&self, key: &str, data: Vec<u8>, gzip: bool) -> Result<()> {
        if !gzip {
            self.put(key, data).await?;
            if self.suffix_gzip {
                self.delete(&format!("{key}.gz")).await?;
            }
            return Ok(());
        }
        let compressed = gzip_bytes(&data);
        if self.suffix_gzip {
            let gz = format!("{key}.gz");
            self.put(&gz, compressed).await?;
            self.delete(key).await
        } else {
            let path = self.path(key)?;
            let mut attributes = Attributes::new();
            attributes.insert(Attribute::ContentEncoding, "gzip".into());
            let opts = PutOptions {
                attributes,
                ..Default::default()
            };
            self.inner
                .put_opts(&path, PutPayload::from_bytes(compressed.into()), opts)
                .await
                .map(|_| ())
                .map_err(|e| self.err(key, e))
        }
    }

    /// Reads `key`, falling back to `key.gz`. Returns the stored bytes and whether they came
    /// from a `.gz` object (which callers must gunzip). Objects stored with
    /// Content-Encoding may arrive still compressed; callers sniff for that.
    pub async fn get_with_gz_fallback(&self, key: &str) -> Result<Option<(Bytes, bool)>> {
        if let Some(b) = self.get(key).await? {
            return Ok(Some((b, false)));
        }
        Ok(self.get(&format!("{key}.gz")).await?.map(|b| (b, true)))
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True when `b` starts with the gzip magic number.
pub(crate) fn looks_gzipped(b: &[u8]) -> bool {
    b.len() >= 2 && b[0] == 0x1f && b[1] == 0x8b
}

/// Gzip-compresses `data` (level 6, like cloud-volume and gzip's default).
pub(crate) fn gzip_bytes(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// Gunzips `data`, refusing output longer than `limit` bytes (a guard against corrupt or
/// hostile input that would inflate without bound).
pub(crate) fn gunzip_limited(data: &[u8], limit: usize) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut dec = flate2::read::MultiGzDecoder::new(data).take(limit as u64 + 1);
    dec.read_to_end(&mut out)
        .map_err(|e| format!("bad gzip: {e}"))?;
    if out.len() > limit {
        return Err(format!("gzip inflates past the expected {limit} bytes"));
    }
    Ok(out)
}

/// Inflates a zlib stream with the same guard.
pub(crate) fn zlib_inflate_limited(
    data: &[u8],
    limit: usize,
) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut dec = flate2::read::ZlibDecoder::new(data).take(limit as u64 + 1);
    dec.read_to_end(&mut out)
        .map_err(|e| format!("bad zlib stream: {e}"))?;
    if out.len() > limit {
        return Err(format!(
            "zlib stream inflates past the expected {limit} bytes"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_open_the_right_backends() {
        assert!(Store::open("memory://a/b").is_ok());
        assert!(Store::open("/tmp/x").is_ok());
        assert!(Store::open("precomputed://file:///tmp/x").is_ok());
        assert!(Store::open("relative/dir").is_ok());
        assert!(Store::open("https://example.org/data/vol").is_ok());
        assert!(matches!(
            Store::open("ftp://x/y"),
            Err(Error::BadUrl { .. })
        ));
        assert!(matches!(Store::open(""), Err(Error::BadUrl { .. })));
        assert!(matches!(Store::open("gs:///x"), Err(Error::BadUrl { .. })));
        let s = Store::open_anonymous("gs://bucket/some/path").unwrap();
        assert_eq!(s.prefix, vec!["some", "path"]);
        let h = Store::open("https://example.org/a%20b/vol/").unwrap();
        assert_eq!(h.prefix, vec!["a b", "vol"]);
    }

    #[test]
    fn keys_resolve_dot_dot_within_root() {
        let s = Store::open("memory://root/vol").unwrap();
        assert_eq!(s.resolve("8_8_8/0-64_0-64_0-64").unwrap().len(), 4);
        assert_eq!(s.resolve("../other/x").unwrap(), vec!["root", "other", "x"]);
        assert!(s.resolve("../../../x").is_err());
    }

    #[tokio::test]
    async fn put_get_range_delete_and_gzip() {
        let s = Store::memory();
        assert_eq!(s.get("a").await.unwrap(), None);
        s.put("a", b"hello world".to_vec()).await.unwrap();
        assert_eq!(s.get("a").await.unwrap().unwrap(), &b"hello world"[..]);
        assert_eq!(
            s.get_range("a", 6..11).await.unwrap().unwrap(),
            &b"world"[..]
        );
        let short = s.get_range("a", 6..40).await;
        assert!(short.is_err() || short.unwrap().unwrap().len() == 5);
        assert_eq!(s.get_range("missing", 0..4).await.unwrap(), None);
        assert_eq!(s.size("a").await.unwrap(), Some(11));

        s.put_maybe_gzip("c", b"chunk".to_vec(), true)
            .await
            .unwrap();
        assert_eq!(s.get("c").await.unwrap(), None);
        let (b, gz) = s.get_with_gz_fallback("c").await.unwrap().unwrap();
        assert!(gz && looks_gzipped(&b));
        assert_eq!(gunzip_limited(&b, 100).unwrap(), b"chunk");
        assert!(gunzip_limited(&b, 3).is_err());
        // Rewriting uncompressed removes the stale .gz.
        s.put_maybe_gzip("c", b"plain".to_vec(), false)
            .await
            .unwrap();
        assert_eq!(s.get("c.gz").await.unwrap(), None);
        assert_eq!(
            s.get_with_gz_fallback("c").await.unwrap().unwrap(),
            (Bytes::from_static(b"plain"), false)
        );
        s.delete("c").await.unwrap();
        s.delete("c").await.unwrap();
        assert_eq!(s.get_with_gz_fallback("c").await.unwrap(), None);
    }

    #[tokio::test]
    async fn local_files_and_children() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path().to_str().unwrap()).unwrap();
        let c = s.child("scale/sub").unwrap();
        c.put("x", b"1".to_vec()).await.unwrap();
        assert!(dir.path().join("scale/sub/x").exists());
        assert_eq!(s.get("scale/sub/x").await.unwrap().unwrap(), &b"1"[..]);
        c.put_maybe_gzip("y", b"2".to_vec(), true).await.unwrap();
        assert!(dir.path().join("scale/sub/y.gz").exists());
        let short = s.get_range("scale/sub/x", 0..5).await;
        assert!(short.is_err() || short.unwrap().unwrap().len() == 1);
    }

    #[test]
    fn truncated_gzip_is_an_error() {
        let z = gzip_bytes(&[7u8; 1000]);
        assert!(gunzip_limited(&z[..z.len() / 2], 2000).is_err());
        assert!(gunzip_limited(b"not gzip", 2000).is_err());
    }
}
