//! The precomputed `info` file: [`Info`], its [`Scale`]s and chunk [`Encoding`]s.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::array::BBox;
use crate::dtype::DataType;
use crate::shard::ShardSpec;

/// `"image"` or `"segmentation"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeType {
    Image,
    Segmentation,
}

/// How each chunk's voxels are encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Little-endian values, x fastest, channel slowest.
    Raw,
    /// Neuroglancer's block lookup-table encoding (uint32/uint64 only).
    CompressedSegmentation,
    /// Any other encoding (`jpeg`, `png`, `compresso`, ...): the info round-trips, chunks do
    /// not decode.
    Other(String),
}

impl Encoding {
    /// The name in `info` files.
    pub fn name(&self) -> &str {
        match self {
            Encoding::Raw => "raw",
            Encoding::CompressedSegmentation => "compressed_segmentation",
            Encoding::Other(s) => s,
        }
    }
}

impl Serialize for Encoding {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Encoding {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Ok(match name.to_ascii_lowercase().as_str() {
            "raw" => Encoding::Raw,
            "compressed_segmentation" => Encoding::CompressedSegmentation,
            _ => Encoding::Other(name),
        })
    }
}

// Resolutions are numbers; write integral ones as integers, as cloud-volume does.
fn ser_resolution<S: Serializer>(r: &[f64; 3], s: S) -> Result<S::Ok, S::Error> {
    let vals: Vec<Value> = r
        .iter()
        .map(|&v| {
            if v.fract() == 0.0 && v.abs() < 9.0e15 {
                Value::from(v as i64)
            } else {
                Value::from(v)
            }
        })
        .collect();
    vals.serialize(s)
}

/// One resolution level of a volume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scale {
    /// Directory of this scale's chunks, relative to the info file.
    pub key: String,
    /// Voxels along x, y, z.
    pub size: [u64; 3],
    /// Nanometres per voxel along x, y, z.
    #[serde(serialize_with = "ser_resolution")]
    pub resolution: [f64; 3],
    /// Position of the first voxel, x, y, z.
    #[serde(default)]
    pub voxel_offset: [i64; 3],
    /// Chunk shapes `[x, y, z]`; this crate reads and writes with the first.
    pub chunk_sizes: Vec<[u64; 3]>,
    pub encoding: Encoding,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compressed_segmentation_block_size: Option<[u64; 3]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharding: Option<ShardSpec>,
    /// Members this crate does not interpret (`hidden`, ...), kept on rewrite.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Scale {
    /// A scale with the given geometry; `key` defaults to the resolution joined by `_`.
    pub fn new(
        size: [u64; 3],
        resolution: [f64; 3],
        chunk_size: [u64; 3],
        encoding: Encoding,
    ) -> Scale {
        let key = resolution
            .iter()
            .map(|r| {
                if r.fract() == 0.0 {
                    format!("{}", *r as i64)
                } else {
                    format!("{r}")
                }
            })
            .collect::<Vec<_>>()
            .join("_");
        let block = (encoding == Encoding::CompressedSegmentation).then_some([8, 8, 8]);
        Scale {
            key,
            size,
            resolution,
            voxel_offset: [0, 0, 0],
            chunk_sizes: vec![chunk_size],
            encoding,
            compressed_segmentation_block_size: block,
            sharding: None,
            extra: Map::new(),
        }
    }

    /// The chunk shape in use (the first of `chunk_sizes`).
    pub fn chunk_size(&self) -> [u64; 3] {
        self.chunk_sizes.first().copied().unwrap_or([1, 1, 1])
    }

    /// The voxels of this scale.
    pub fn bounds(&self) -> BBox {
        BBox::from_offset_size(self.voxel_offset, self.size)
    }

    /// Chunks along x, y, z: `ceil(size / chunk_size)`.
    pub fn grid_size(&self) -> [u64; 3] {
        let c = self.chunk_size();
        std::array::from_fn(|a| self.size[a].div_ceil(c[a].max(1)))
    }

    /// The voxels of grid cell `g`, clipped at the volume's upper bound.
    pub fn chunk_bbox(&self, g: [u64; 3]) -> BBox {
        let c = self.chunk_size();
        let b = self.bounds();
        let min: [i64; 3] = std::array::from_fn(|a| b.min[a] + (g[a] * c[a]) as i64);
        let max: [i64; 3] = std::array::from_fn(|a| (min[a] + c[a] as i64).min(b.max[a]));
        BBox { min, max }
    }

    /// The unsharded file name of a chunk: `x0-x1_y0-y1_z0-z1`.
    pub fn chunk_name(bbox: &BBox) -> String {
        format!(
            "{}-{}_{}-{}_{}-{}",
            bbox.min[0], bbox.max[0], bbox.min[1], bbox.max[1], bbox.min[2], bbox.max[2]
        )
    }

    /// Grid cells overlapping `bbox` (which callers clip to the bounds), as `[lo, hi)` per axis.
    pub fn grid_range(&self, bbox: &BBox) -> ([u64; 3], [u64; 3]) {
        let c = self.chunk_size();
        let off = self.voxel_offset;
        let lo = std::array::from_fn(|a| ((bbox.min[a] - off[a]).max(0) as u64) / c[a]);
        let hi = std::array::from_fn(|a| ((bbox.max[a] - off[a]).max(0) as u64).div_ceil(c[a]));
        (lo, hi)
    }
}

/// A precomputed volume's `info` file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Info {
    #[serde(rename = "@type", default, skip_serializing_if = "Option::is_none")]
    pub at_type: Option<String>,
    #[serde(rename = "type")]
    pub volume_type: VolumeType,
    pub data_type: DataType,
    pub num_channels: u32,
    pub scales: Vec<Scale>,
    /// Members this crate does not interpret (`mesh`, `skeletons`, ...), kept on rewrite.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Info {
    /// A one-scale info.
    pub fn new(
        volume_type: VolumeType,
        data_type: DataType,
        num_channels: u32,
        scale: Scale,
    ) -> Info {
        Info {
            at_type: Some("neuroglancer_multiscale_volume".into()),
            volume_type,
            data_type,
            num_channels,
            scales: vec![scale],
            extra: Map::new(),
        }
    }

    /// Parses and validates an info file.
    pub fn from_json(bytes: &[u8]) -> Result<Info, String> {
        let info: Info = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        info.validate()?;
        Ok(info)
    }

    /// The info as pretty JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain data to a Vec cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Checks what the spec requires and what reading chunks relies on.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(t) = &self.at_type {
            if t != "neuroglancer_multiscale_volume" {
                return Err(format!(
                    "@type must be neuroglancer_multiscale_volume, got {t:?}"
                ));
            }
        }
        if self.num_channels == 0 {
            return Err("num_channels must be at least 1".into());
        }
        if self.scales.is_empty() {
            return Err("no scales".into());
        }
        for (i, s) in self.scales.iter().enumerate() {
            let at = |m: String| format!("scale {i} ({:?}): {m}", s.key);
            if s.key.is_empty() {
                return Err(at("empty key".into()));
            }
            let Some(c) = s.chunk_sizes.first() else {
                return Err(at("no chunk_sizes".into()));
            };
            if c.contains(&0) {
                return Err(at(format!("chunk size {c:?} has a zero")));
            }
            if s.resolution.iter().any(|r| !r.is_finite() || *r <= 0.0) {
                return Err(at(format!("bad resolution {:?}", s.resolution)));
            }
            if (0..3).any(|a| s.voxel_offset[a].checked_add(s.size[a] as i64).is_none())
                || s.size.iter().any(|&v| v > i64::MAX as u64 / 2)
            {
                return Err(at("size or voxel_offset too large".into()));
            }
            match (&s.encoding, s.compressed_segmentation_block_size) {
                (Encoding::CompressedSegmentation, None) => {
                    return Err(at(
                        "compressed_segmentation needs compressed_segmentation_block_size".into(),
                    ))
                }
                (Encoding::CompressedSegmentation, Some(b)) => {
                    if b.contains(&0) {
                        return Err(at(format!("block size {b:?} has a zero")));
                    }
                    if !matches!(self.data_type, DataType::U32 | DataType::U64) {
                        return Err(at(format!(
                            "compressed_segmentation needs uint32 or uint64, not {}",
                            self.data_type
                        )));
                    }
                }
                _ => {}
            }
            if let Some(sh) = &s.sharding {
                sh.validate().map_err(at)?;
                if s.chunk_sizes.len() != 1 {
                    return Err(at("a sharded scale must have exactly one chunk size".into()));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CV_INFO: &str = r#"{
      "@type": "neuroglancer_multiscale_volume",
      "data_type": "uint64", "mesh": "mesh", "num_channels": 1, "type": "segmentation",
      "scales": [{
        "chunk_sizes": [[64, 64, 64]], "compressed_segmentation_block_size": [8, 8, 8],
        "encoding": "compressed_segmentation", "key": "8_8_40", "resolution": [8, 8, 40],
        "size": [1000, 700, 33], "voxel_offset": [-10, 0, 5], "hidden": false
      }, {
        "chunk_sizes": [[128, 128, 16]], "encoding": "RAW", "key": "16_16_40",
        "resolution": [16, 16, 40.5], "size": [500, 350, 33],
        "sharding": {"@type": "neuroglancer_uint64_sharded_v1", "preshift_bits": 3,
          "hash": "identity", "minishard_bits": 2, "shard_bits": 1}
      }]
    }"#;

    #[test]
    fn parses_and_round_trips_with_unknown_members() {
        let info = Info::from_json(CV_INFO.as_bytes()).unwrap();
        assert_eq!(info.data_type, DataType::U64);
        assert_eq!(info.extra.get("mesh"), Some(&Value::from("mesh")));
        let s0 = &info.scales[0];
        assert_eq!(s0.encoding, Encoding::CompressedSegmentation);
        assert_eq!(s0.extra.get("hidden"), Some(&Value::from(false)));
        assert_eq!(info.scales[1].encoding, Encoding::Raw);
        assert!(info.scales[1].sharding.is_some());
        let again = Info::from_json(&info.to_json()).unwrap();
        assert_eq!(again, info);
        let text = String::from_utf8(info.to_json()).unwrap();
        assert!(text.contains("\"resolution\": [\n        8,"), "{text}");
        assert!(text.contains("40.5"));
    }

    #[test]
    fn chunk_geometry_clips_at_the_edge() {
        let info = Info::from_json(CV_INFO.as_bytes()).unwrap();
        let s = &info.scales[0];
        assert_eq!(s.grid_size(), [16, 11, 1]);
        let last = s.chunk_bbox([15, 10, 0]);
        assert_eq!(last, BBox::new([950, 640, 5], [990, 700, 38]));
        assert_eq!(Scale::chunk_name(&last), "950-990_640-700_5-38");
        assert_eq!(
            Scale::chunk_name(&s.chunk_bbox([0, 0, 0])),
            "-10-54_0-64_5-38"
        );
        let (lo, hi) = s.grid_range(&BBox::new([53, 0, 5], [55, 1, 6]));
        assert_eq!((lo, hi), ([0, 0, 0], [2, 1, 1]));
    }

    #[test]
    fn rejects_bad_infos_with_reasons() {
        let bad = |from: &str, to: &str| Info::from_json(CV_INFO.replace(from, to).as_bytes());
        assert!(bad("\"num_channels\": 1", "\"num_channels\": 0")
            .unwrap_err()
            .contains("num_channels"));
        assert!(bad("\"uint64\"", "\"uint7\"")
            .unwrap_err()
            .contains("data_type"));
        assert!(
            bad(", \"compressed_segmentation_block_size\": [8, 8, 8]", "")
                .unwrap_err()
                .contains("block_size")
        );
        assert!(bad("\"uint64\"", "\"uint8\"")
            .unwrap_err()
            .contains("uint32 or uint64"));
        assert!(bad("[[64, 64, 64]]", "[[64, 0, 64]]")
            .unwrap_err()
            .contains("zero"));
        assert!(bad("[[128, 128, 16]]", "[[128, 128, 16], [64, 64, 64]]")
            .unwrap_err()
            .contains("exactly one"));
        assert!(bad("\"minishard_bits\": 2", "\"minishard_bits\": 99").is_err());
        assert!(Info::from_json(b"{not json").is_err());
        assert!(Info::from_json(b"{}").is_err());
    }

    #[test]
    fn new_scale_defaults() {
        let s = Scale::new(
            [10, 10, 10],
            [4.0, 4.0, 40.0],
            [8, 8, 8],
            Encoding::CompressedSegmentation,
        );
        assert_eq!(s.key, "4_4_40");
        assert_eq!(s.compressed_segmentation_block_size, Some([8, 8, 8]));
        let info = Info::new(VolumeType::Segmentation, DataType::U32, 1, s);
        info.validate().unwrap();
    }
}
