//! ChunkedGraph node IDs and chunk geometry, bit-compatible with PyChunkedGraph.
//!
//! A node ID is 64 bits: `[layer:8][x][y][z][segment]`. The bits given to each chunk
//! coordinate depend on the layer: the root layer's single chunk needs one bit, and each layer
//! below it one more, with a floor of `spatial_bits` (10 by default) at layers 1 and 2. The
//! segment takes what is left. A chunk is therefore a contiguous range of IDs, and a
//! 20-digit zero-padded decimal row key keeps that range contiguous in Bigtable.
//!
//! Layer 1 holds supervoxels; layer 2 the components of supervoxels inside one chunk; each
//! layer above fans in 2×2×2 chunks of the one below, up to a single root chunk.

use std::fmt;

/// Bits of an ID that hold the layer.
pub const LAYER_BITS: u32 = 8;
/// PyChunkedGraph's default floor for the coordinate bits of layers 1 and 2.
pub const DEFAULT_SPATIAL_BITS: u8 = 10;
/// Length of a node row key.
pub const ROW_KEY_LEN: usize = 20;

/// Chunk coordinates (x, y, z) at some layer.
pub type ChunkCoord = [u32; 3];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("layer {0} is outside 1..={1}")]
    Layer(u8, u8),
    #[error("chunk {coord:?} is outside the layer-{layer} grid of {grid:?} chunks")]
    ChunkOutside {
        layer: u8,
        coord: ChunkCoord,
        grid: [u32; 3],
    },
    #[error("segment {segment} does not fit the {bits} segment bits of layer {layer}")]
    Segment { layer: u8, segment: u64, bits: u32 },
    #[error("node ID {0} names layer {1}, which this graph does not have")]
    NodeLayer(u64, u8),
    #[error("node ID {0} lies in chunk {1:?}, outside the volume")]
    NodeChunk(u64, ChunkCoord),
    #[error("row key {0:?} is not a 20-digit node ID")]
    RowKey(String),
    #[error("invalid geometry: {0}")]
    Geometry(String),
}

/// The shape of a graph: volume, chunk size and layer count, and from them every ID's bit
/// layout. Serialized into the graph's metadata row.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Geometry {
    /// Supervoxel chunk size in voxels (x, y, z).
    pub chunk_size: [u32; 3],
    /// Volume size in voxels (x, y, z).
    pub volume_size: [u64; 3],
    /// Voxel coordinate of the volume's first voxel.
    #[serde(default)]
    pub voxel_offset: [i64; 3],
    /// Voxel size in nm.
    #[serde(default = "default_resolution")]
    pub resolution: [f64; 3],
    /// Layer count: 2 + ceil(log2(chunks along the longest axis)).
    pub n_layers: u8,
    /// Floor of coordinate bits at layers 1 and 2.
    #[serde(default = "default_spatial_bits")]
    pub spatial_bits: u8,
}

fn default_resolution() -> [f64; 3] {
    [1.0, 1.0, 1.0]
}

fn default_spatial_bits() -> u8 {
    DEFAULT_SPATIAL_BITS
}

impl Geometry {
    /// The geometry of a volume cut into chunks of `chunk_size`, with PyChunkedGraph's layer
    /// count and default bit floor.
    pub fn new(volume_size: [u64; 3], chunk_size: [u32; 3]) -> Result<Geometry, IdError> {
        if chunk_size.contains(&0) || volume_size.contains(&0) {
            return Err(IdError::Geometry(format!(
                "volume {volume_size:?} and chunk size {chunk_size:?} must be positive"
            )));
        }
        let chunks = (0..3).map(|d| volume_size[d].div_ceil(u64::from(chunk_size[d])));
        let longest = chunks.max().unwrap_or(1);
        let n_layers = 2 + ceil_log2(longest);
        let g = Geometry {
            chunk_size,
            volume_size,
            voxel_offset: [0; 3],
            resolution: default_resolution(),
            n_layers: u8::try_from(n_layers)
                .map_err(|_| IdError::Geometry(format!("{n_layers} layers")))?,
            spatial_bits: DEFAULT_SPATIAL_BITS,
        };
        g.validate()?;
        Ok(g)
    }

    /// Checks that every chunk of every layer fits its coordinate bits.
    pub fn validate(&self) -> Result<(), IdError> {
        if self.n_layers < 2 {
            return Err(IdError::Geometry("a graph has at least 2 layers".into()));
        }
        if self.chunk_size.contains(&0) {
            return Err(IdError::Geometry("chunk size must be positive".into()));
        }
        if 3 * u32::from(self.bits_per_dim(2)) + LAYER_BITS >= 64 {
            return Err(IdError::Geometry(format!(
                "{} coordinate bits leave no room for segments",
                self.bits_per_dim(2)
            )));
        }
        for layer in 1..=self.n_layers {
            let grid = self.grid(layer);
            let cap = 1u64 << self.bits_per_dim(layer);
            if grid.iter().any(|&g| u64::from(g) > cap) {
                return Err(IdError::Geometry(format!(
                    "layer {layer} has {grid:?} chunks, more than {cap} per axis: too few layers"
                )));
            }
        }
        Ok(())
    }

    /// Coordinate bits per dimension at `layer` (PyChunkedGraph's bitmask).
    pub fn bits_per_dim(&self, layer: u8) -> u8 {
        let layer = layer.max(2);
        let exp = self.n_layers.saturating_sub(layer).max(1);
        if layer == 2 {
            exp.max(self.spatial_bits)
        } else {
            exp
        }
    }

    /// Bits left for the segment at `layer`.
    pub fn segment_bits(&self, layer: u8) -> u32 {
        64 - LAYER_BITS - 3 * u32::from(self.bits_per_dim(layer))
    }

    /// The largest segment number at `layer`.
    pub fn max_segment(&self, layer: u8) -> u64 {
        (1u64 << self.segment_bits(layer)) - 1
    }

    /// Chunks per axis at `layer` (layer 1 and 2 share the supervoxel grid).
    pub fn grid(&self, layer: u8) -> [u32; 3] {
        let shift = u32::from(layer.max(2) - 2);
        std::array::from_fn(|d| {
            let base = self.volume_size[d].div_ceil(u64::from(self.chunk_size[d]));
            let g = base.div_ceil(1u64 << shift.min(63)).max(1);
            u32::try_from(g).unwrap_or(u32::MAX)
        })
    }

    /// The root layer.
    pub fn root_layer(&self) -> u8 {
        self.n_layers
    }

    /// The chunk ID (segment 0) of a chunk.
    pub fn chunk_id(&self, layer: u8, coord: ChunkCoord) -> Result<u64, IdError> {
        if layer == 0 || layer > self.n_layers {
            return Err(IdError::Layer(layer, self.n_layers));
        }
        let grid = self.grid(layer);
        if (0..3).any(|d| coord[d] >= grid[d]) {
            return Err(IdError::ChunkOutside { layer, coord, grid });
        }
        Ok(self.chunk_id_unchecked(layer, coord))
    }

    fn chunk_id_unchecked(&self, layer: u8, coord: ChunkCoord) -> u64 {
        let bits = u32::from(self.bits_per_dim(layer));
        let layer_off = 64 - LAYER_BITS;
        let x_off = layer_off - bits;
        let y_off = x_off - bits;
        let z_off = y_off - bits;
        (u64::from(layer) << layer_off)
            | (u64::from(coord[0]) << x_off)
            | (u64::from(coord[1]) << y_off)
            | (u64::from(coord[2]) << z_off)
    }

    /// A node ID from its chunk ID and segment number.
    pub fn node_id(&self, chunk_id: u64, segment: u64) -> Result<u64, IdError> {
        let layer = layer_of(chunk_id);
        if layer == 0 || layer > self.n_layers {
            return Err(IdError::Layer(layer, self.n_layers));
        }
        if segment > self.max_segment(layer) {
            return Err(IdError::Segment {
                layer,
                segment,
                bits: self.segment_bits(layer),
            });
        }
        Ok(self.chunk_of(chunk_id) | segment)
    }

    /// The chunk ID of any node.
    pub fn chunk_of(&self, id: u64) -> u64 {
        let bits = self.segment_bits(layer_of(id));
        (id >> bits) << bits
    }

    /// The segment number of any node.
    pub fn segment_of(&self, id: u64) -> u64 {
        id & self.max_segment(layer_of(id))
    }

    /// The chunk coordinates of any node or chunk ID.
    pub fn coords_of(&self, id: u64) -> ChunkCoord {
        let bits = u32::from(self.bits_per_dim(layer_of(id)));
        let mask = (1u64 << bits) - 1;
        let x_off = 64 - LAYER_BITS - bits;
        let y_off = x_off - bits;
        let z_off = y_off - bits;
        [
            ((id >> x_off) & mask) as u32,
            ((id >> y_off) & mask) as u32,
            ((id >> z_off) & mask) as u32,
        ]
    }

    /// Checks that an ID names a layer and chunk of this graph (not that the node exists).
    pub fn check(&self, id: u64) -> Result<(), IdError> {
        let layer = layer_of(id);
        if layer == 0 || layer > self.n_layers {
            return Err(IdError::NodeLayer(id, layer));
        }
        let c = self.coords_of(id);
        let grid = self.grid(layer);
        if (0..3).any(|d| c[d] >= grid[d]) {
            return Err(IdError::NodeChunk(id, c));
        }
        Ok(())
    }

    /// The coordinates at `to` of the chunk holding chunk `coord` of layer `from`.
    pub fn ancestor_coords(&self, coord: ChunkCoord, from: u8, to: u8) -> ChunkCoord {
        let shift = u32::from(to.max(2).saturating_sub(from.max(2)));
        [coord[0] >> shift, coord[1] >> shift, coord[2] >> shift]
    }

    /// The chunk ID at layer `to` that holds node `id`.
    pub fn ancestor_chunk(&self, id: u64, to: u8) -> u64 {
        let c = self.ancestor_coords(self.coords_of(id), layer_of(id), to);
        self.chunk_id_unchecked(to, c)
    }

    /// The layer at which two supervoxel-grid chunks first share a chunk.
    pub fn meeting_layer(&self, a: ChunkCoord, b: ChunkCoord) -> u8 {
        let mut k = 0u8;
        while (0..3).any(|d| (a[d] >> k) != (b[d] >> k)) {
            k += 1;
        }
        2 + k
    }

    /// The chunks of layer `layer - 1` under a chunk of `layer` (up to 8, fewer at the edge).
    pub fn child_chunks(&self, layer: u8, coord: ChunkCoord) -> Vec<ChunkCoord> {
        if layer <= 2 {
            return vec![coord];
        }
        let grid = self.grid(layer - 1);
        let mut out = Vec::with_capacity(8);
        for dx in 0..2 {
            for dy in 0..2 {
                for dz in 0..2 {
                    let c = [coord[0] * 2 + dx, coord[1] * 2 + dy, coord[2] * 2 + dz];
                    if (0..3).all(|d| c[d] < grid[d]) {
                        out.push(c);
                    }
                }
            }
        }
        out
    }

    /// The voxel box `[min, max)` a chunk covers, clipped to the volume, in volume-relative
    /// voxels.
    pub fn chunk_box(&self, layer: u8, coord: ChunkCoord) -> VoxelBox {
        let shift = u32::from(layer.max(2) - 2);
        let span = |d: usize| u64::from(self.chunk_size[d]) << shift;
        let min: [u64; 3] = std::array::from_fn(|d| u64::from(coord[d]) * span(d));
        let max = std::array::from_fn(|d| (min[d] + span(d)).min(self.volume_size[d]));
        VoxelBox { min, max }
    }

    /// Whether a chunk overlaps a voxel box (volume-relative voxels).
    pub fn chunk_overlaps(&self, layer: u8, coord: ChunkCoord, bbox: &VoxelBox) -> bool {
        let c = self.chunk_box(layer, coord);
        (0..3).all(|d| c.min[d] < bbox.max[d] && bbox.min[d] < c.max[d])
    }

    /// The supervoxel-grid chunk that holds a voxel, if it is inside the volume.
    pub fn chunk_at_voxel(&self, voxel: [u64; 3]) -> Option<ChunkCoord> {
        let mut c = [0; 3];
        for d in 0..3 {
            if voxel[d] >= self.volume_size[d] {
                return None;
            }
            c[d] = u32::try_from(voxel[d] / u64::from(self.chunk_size[d])).ok()?;
        }
        Some(c)
    }
}

/// A half-open box of voxels, `[min, max)` per axis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VoxelBox {
    pub min: [u64; 3],
    pub max: [u64; 3],
}

impl VoxelBox {
    pub fn new(min: [u64; 3], max: [u64; 3]) -> VoxelBox {
        VoxelBox { min, max }
    }

    pub fn is_empty(&self) -> bool {
        (0..3).any(|d| self.min[d] >= self.max[d])
    }
}

/// The layer of a node or chunk ID.
pub fn layer_of(id: u64) -> u8 {
    (id >> (64 - LAYER_BITS)) as u8
}

fn ceil_log2(n: u64) -> u32 {
    if n <= 1 {
        0
    } else {
        64 - (n - 1).leading_zeros()
    }
}

/// A node's row key: the ID as 20 zero-padded decimal digits, which sort like the integers.
pub fn row_key(id: u64) -> [u8; ROW_KEY_LEN] {
    let mut out = [b'0'; ROW_KEY_LEN];
    let mut v = id;
    let mut i = ROW_KEY_LEN;
    while v > 0 {
        i -= 1;
        out[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out
}

/// The node ID in a row key made by [`row_key`].
pub fn parse_row_key(key: &[u8]) -> Result<u64, IdError> {
    let bad = || IdError::RowKey(String::from_utf8_lossy(key).into_owned());
    if key.len() != ROW_KEY_LEN || !key.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let mut v: u64 = 0;
    for &b in key {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or_else(bad)?;
    }
    Ok(v)
}

/// A chunk's segment-counter row key: `i` and the chunk ID's 20 digits.
pub fn counter_key(chunk_id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + ROW_KEY_LEN);
    k.push(b'i');
    k.extend_from_slice(&row_key(chunk_id));
    k
}

/// The row-key range `[start, end)` of all nodes of a chunk.
pub fn chunk_key_range(geometry: &Geometry, chunk_id: u64) -> (Vec<u8>, Vec<u8>) {
    let layer = layer_of(chunk_id);
    let start = geometry.chunk_of(chunk_id);
    let last = start | geometry.max_segment(layer);
    let mut end = row_key(last).to_vec();
    end.push(0);
    (row_key(start).to_vec(), end)
}

/// An ID printed with its layer, chunk and segment, for messages.
pub struct Explain<'a>(pub &'a Geometry, pub u64);

impl fmt::Display for Explain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Explain(g, id) = *self;
        write!(
            f,
            "{id} (layer {}, chunk {:?}, segment {})",
            layer_of(id),
            g.coords_of(id),
            g.segment_of(id)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn layer_count_follows_volume() {
        assert_eq!(
            Geometry::new([512, 512, 64], [512, 512, 64])
                .unwrap()
                .n_layers,
            2
        );
        assert_eq!(
            Geometry::new([1024, 512, 64], [512, 512, 64])
                .unwrap()
                .n_layers,
            3
        );
        assert_eq!(
            Geometry::new([1500, 512, 64], [512, 512, 64])
                .unwrap()
                .n_layers,
            4
        );
        // FlyWire-like: ~ 1000 chunks along x.
        let g = Geometry::new([256 * 1000, 256 * 500, 512 * 14], [256, 256, 512]).unwrap();
        assert_eq!(g.n_layers, 12);
    }

    #[test]
    fn bitmasks_match_pychunkedgraph() {
        // n_layers = 7: layers 7..3 get max(1, 7 - i), layer 2 and 1 get max(10, 5).
        let g = Geometry {
            n_layers: 7,
            ..Geometry::new([64 * 32; 3], [64; 3]).unwrap()
        };
        let bits: Vec<u8> = (1..=7).map(|l| g.bits_per_dim(l)).collect();
        assert_eq!(bits, vec![10, 10, 4, 3, 2, 1, 1]);
        assert_eq!(g.segment_bits(2), 64 - 8 - 30);
        // A known PyChunkedGraph layer-2 chunk id, 7 layers, 10 bits: chunk (1, 2, 3).
        let id = g.chunk_id(2, [1, 2, 3]).unwrap();
        assert_eq!(id, (2u64 << 56) | (1 << 46) | (2 << 36) | (3 << 26));
    }

    #[test]
    fn ids_round_trip() {
        let g = Geometry::new([64 * 40, 64 * 17, 64 * 5], [64; 3]).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..10_000 {
            let layer = rng.random_range(1..=g.n_layers);
            let grid = g.grid(layer);
            let c = [
                rng.random_range(0..grid[0]),
                rng.random_range(0..grid[1]),
                rng.random_range(0..grid[2]),
            ];
            let seg = rng.random_range(0..=g.max_segment(layer));
            let chunk = g.chunk_id(layer, c).unwrap();
            let id = g.node_id(chunk, seg).unwrap();
            assert_eq!(layer_of(id), layer);
            assert_eq!(g.coords_of(id), c);
            assert_eq!(g.segment_of(id), seg);
            assert_eq!(g.chunk_of(id), chunk);
            g.check(id).unwrap();
            assert_eq!(parse_row_key(&row_key(id)).unwrap(), id);
            let (lo, hi) = chunk_key_range(&g, chunk);
            let k = row_key(id).to_vec();
            assert!(lo <= k && k < hi);
        }
    }

    #[test]
    fn row_keys_sort_like_ids() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut ids: Vec<u64> = (0..1000).map(|_| rng.random()).collect();
        ids.push(u64::MAX);
        ids.push(0);
        let mut keys: Vec<[u8; 20]> = ids.iter().map(|&i| row_key(i)).collect();
        ids.sort_unstable();
        keys.sort_unstable();
        for (i, k) in ids.iter().zip(&keys) {
            assert_eq!(parse_row_key(k).unwrap(), *i);
        }
        assert_eq!(&row_key(42), b"00000000000000000042");
    }

    #[test]
    fn rejects_what_does_not_fit() {
        let g = Geometry::new([64 * 4; 3], [64; 3]).unwrap();
        assert!(matches!(
            g.chunk_id(2, [4, 0, 0]),
            Err(IdError::ChunkOutside { .. })
        ));
        assert!(matches!(g.chunk_id(9, [0, 0, 0]), Err(IdError::Layer(..))));
        let chunk = g.chunk_id(2, [0, 0, 0]).unwrap();
        assert!(matches!(
            g.node_id(chunk, g.max_segment(2) + 1),
            Err(IdError::Segment { .. })
        ));
        assert!(g.check(9u64 << 56).is_err());
        assert!(parse_row_key(b"123").is_err());
        assert!(parse_row_key(b"9999999999999999999x").is_err());
        assert!(parse_row_key(b"99999999999999999999").is_err());
    }

    #[test]
    fn ancestry_and_meeting_layers() {
        let g = Geometry::new([64 * 8; 3], [64; 3]).unwrap();
        assert_eq!(g.n_layers, 5);
        assert_eq!(g.meeting_layer([0, 0, 0], [1, 0, 0]), 3);
        assert_eq!(g.meeting_layer([1, 0, 0], [2, 0, 0]), 4);
        assert_eq!(g.meeting_layer([3, 3, 3], [4, 3, 3]), 5);
        let sv_chunk = g.chunk_id(1, [5, 6, 7]).unwrap();
        let sv = g.node_id(sv_chunk, 3).unwrap();
        assert_eq!(g.coords_of(g.ancestor_chunk(sv, 2)), [5, 6, 7]);
        assert_eq!(g.coords_of(g.ancestor_chunk(sv, 4)), [1, 1, 1]);
        assert_eq!(g.coords_of(g.ancestor_chunk(sv, 5)), [0, 0, 0]);
        assert_eq!(g.child_chunks(3, [3, 3, 3]).len(), 8);
        let b = g.chunk_box(3, [1, 0, 0]);
        assert_eq!(b.min, [128, 0, 0]);
        assert_eq!(b.max, [256, 128, 128]);
        assert!(g.chunk_overlaps(3, [1, 0, 0], &VoxelBox::new([200, 0, 0], [201, 1, 1])));
        assert!(!g.chunk_overlaps(3, [1, 0, 0], &VoxelBox::new([256, 0, 0], [300, 1, 1])));
    }

    #[test]
    fn geometry_is_json() {
        let g = Geometry::new([1000, 1000, 100], [256, 256, 64]).unwrap();
        let s = serde_json::to_string(&g).unwrap();
        let back: Geometry = serde_json::from_str(&s).unwrap();
        assert_eq!(back, g);
    }
}
