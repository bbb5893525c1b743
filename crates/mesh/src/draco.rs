//! Draco (`.drc`) mesh fragments, as Neuroglancer's graphene and precomputed layers read
//! them: our own encoder of the Draco 2.2 bitstream (and a decoder of what it writes).
//!
//! What we write, in the bitstream's terms: a triangular mesh with *sequential* connectivity
//! (index deltas, entropy coded), and one `POSITION` attribute (float32 × 3) through the
//! *quantization* attribute encoder with the *difference* prediction (each vertex from the
//! one before) and entropy-coded corrections; the entropy coder is Draco's rANS "raw symbol"
//! scheme (the crate's `rans` module documents the layout). [`DracoOptions`] can store either part plainly
//! instead. Any Draco decoder reads it. Google's encoder compresses further (edgebreaker
//! connectivity, parallelogram prediction); ours is a third of the precomputed legacy size.
//!
//! ## One grid for all chunks
//!
//! Draco quantizes a position to `q = round((p - origin) / bin)` with
//! `bin = range / (2^bits - 1)` and decodes `origin + q · bin`. With a per-fragment origin and
//! range, the two fragments sharing a chunk face would snap their common vertices to
//! different grids and crack apart. [`GridQuantization`] instead fixes the bin to a whole
//! number of nm (Neuroglancer's `uniform_draco_grid_size`) and the origin to a multiple of it,
//! so every chunk quantizes onto the same global lattice: a point's lattice coordinate is
//! `round(p / bin)` whatever chunk writes it. Decoding is exact in float32 while positions
//! stay below 2^24 nm (16.7 mm).

use crate::{rans, Mesh, MeshError};

/// Geometry of the Draco mesh bitstream version we write.
const VERSION: [u8; 2] = [2, 2];
const TRIANGULAR_MESH: u8 = 1;
const MESH_SEQUENTIAL_ENCODING: u8 = 0;
const ATTRIBUTE_POSITION: u8 = 0;
const DT_FLOAT32: u8 = 9;
const SEQUENTIAL_ATTRIBUTE_ENCODER_QUANTIZATION: u8 = 2;
const PREDICTION_NONE: i8 = -2;
const PREDICTION_DIFFERENCE: i8 = 0;
const PREDICTION_TRANSFORM_WRAP: i8 = 1;
/// Connectivity as entropy-coded index deltas (1 would be plain indices).
const INDICES_COMPRESSED: u8 = 0;
const INDICES_RAW: u8 = 1;
/// Attribute values as entropy-coded symbols (0 would be plain integers).
const VALUES_RAW: u8 = 0;
const VALUES_COMPRESSED: u8 = 1;

/// A position quantization on a lattice of `bin_nm` spacing shared by every chunk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridQuantization {
    /// Quantization bits per component (Draco allows 1..=30).
    pub bits: u8,
    /// Lattice spacing in whole nm: Neuroglancer's `uniform_draco_grid_size`.
    pub bin_nm: u32,
    /// Lattice index of the origin on each axis: `origin_nm = origin_bins × bin_nm`.
    pub origin_bins: [i64; 3],
}

impl GridQuantization {
    /// The quantization of a chunk spanning `lo_nm..=hi_nm` (its vertices' bounds; include
    /// the overlap voxel) on the global lattice of `bin_nm`: the origin is the lattice point at
    /// or below `lo_nm`, and `bits` the fewest that reach past `hi_nm`.
    pub fn for_chunk(lo_nm: [f64; 3], hi_nm: [f64; 3], bin_nm: u32) -> Result<Self, MeshError> {
        if bin_nm == 0 {
            return Err(MeshError::Quantization(
                "bin size must be at least 1 nm".into(),
            ));
        }
        if !(lo_nm.iter().chain(&hi_nm).all(|v| v.is_finite())) {
            return Err(MeshError::Quantization(format!(
                "bounds {lo_nm:?}..{hi_nm:?} are not finite"
            )));
        }
        let bin = bin_nm as f64;
        let origin_bins = lo_nm.map(|v| (v / bin).floor() as i64);
        let span = (0..3)
            .map(|i| ((hi_nm[i] / bin).ceil() as i64 - origin_bins[i]).max(0))
            .max()
            .unwrap_or(0) as u64;
        // 2^bits - 1 bins must cover the span.
        let bits = (64 - span.leading_zeros()).max(1);
        if bits > 30 {
            return Err(MeshError::Quantization(format!(
                "{span} bins of {bin_nm} nm need {bits} bits; Draco allows 30"
            )));
        }
        Ok(Self {
            bits: bits as u8,
            bin_nm,
            origin_bins,
        })
    }

    /// The quantization for a mesh's own bounds.
    pub fn for_mesh(mesh: &Mesh, bin_nm: u32) -> Result<Self, MeshError> {
        let (lo, hi) = mesh.bounds().unwrap_or(([0.0; 3], [0.0; 3]));
        Self::for_chunk(lo.map(f64::from), hi.map(f64::from), bin_nm)
    }

    fn max_quantized(&self) -> u32 {
        ((1u64 << self.bits) - 1) as u32
    }

    /// Draco's `quantization_range`: `(2^bits - 1) × bin_nm`.
    pub fn range_nm(&self) -> f32 {
        (self.max_quantized() as f64 * self.bin_nm as f64) as f32
    }

    /// Draco's `quantization_origin` in nm.
    pub fn origin_nm(&self) -> [f32; 3] {
        self.origin_bins
            .map(|b| (b as f64 * self.bin_nm as f64) as f32)
    }

    /// The lattice value of coordinate `v` on axis `axis`, relative to the origin; `None`
    /// outside the quantized box.
    fn quantize(&self, v: f32, axis: usize) -> Option<u32> {
        // Round on the global lattice first, so the answer does not depend on the origin.
        let global = (v as f64 / self.bin_nm as f64).round() as i64;
        let q = global.checked_sub(self.origin_bins[axis])?;
        u32::try_from(q).ok().filter(|&q| q <= self.max_quantized())
    }

    /// Where `v` lands after an encode / decode round trip (as Draco's decoder computes it).
    pub fn snap(&self, v: [f32; 3]) -> Option<[f32; 3]> {
        let origin = self.origin_nm();
        let delta = self.range_nm() / self.max_quantized() as f32;
        let mut out = [0.0; 3];
        for i in 0..3 {
            out[i] = self.quantize(v[i], i)? as f32 * delta + origin[i];
        }
        Some(out)
    }
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Encodes `mesh` as a Draco fragment on the lattice of `quantization`. Every vertex must lie
/// inside the quantized box; each lands on its nearest lattice point. A mesh without
/// triangles is refused: Google's decoder rejects an empty mesh and reads one without faces
/// as a point cloud.
pub fn encode(mesh: &Mesh, quantization: &GridQuantization) -> Result<Vec<u8>, MeshError> {
    encode_with(mesh, quantization, &DracoOptions::default())
}

/// Which parts of a fragment are entropy coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DracoOptions {
    /// Index deltas through rANS (else plain indices of the smallest width).
    pub compress_connectivity: bool,
    /// Positions predicted from the previous vertex, corrections through rANS (else plain
    /// quantized integers).
    pub compress_positions: bool,
}

impl Default for DracoOptions {
    fn default() -> Self {
        Self {
            compress_connectivity: true,
            compress_positions: true,
        }
    }
}

/// [`encode`] with a choice of what to entropy code. Fragments are at least 3 bytes per
/// triangle: Google's decoder insists on that much data after the header, and zeros pad
/// the end of a fragment that compressed below it.
pub fn encode_with(
    mesh: &Mesh,
    quantization: &GridQuantization,
    options: &DracoOptions,
) -> Result<Vec<u8>, MeshError> {
    mesh.validate()?;
    if mesh.triangles.is_empty() {
        return Err(MeshError::EmptyFragment);
    }
    let n = mesh.vertices.len();
    if n >= 1 << 31 {
        return Err(MeshError::TooManyVertices(n));
    }
    let mut out = Vec::with_capacity(64 + n * 6 + mesh.triangles.len() * 6);
    out.extend_from_slice(b"DRACO");
    out.extend_from_slice(&VERSION);
    out.push(TRIANGULAR_MESH);
    out.push(MESH_SEQUENTIAL_ENCODING);
    out.extend_from_slice(&0u16.to_le_bytes()); // flags: no metadata

    // Connectivity: each index as its difference from the one before, the sign in the low
    // bit, entropy coded.
    varint(&mut out, mesh.triangles.len() as u64);
    varint(&mut out, n as u64);
    let after_counts = out.len();
    if options.compress_connectivity {
        out.push(INDICES_COMPRESSED);
        let mut last = 0i64;
        let deltas: Vec<u32> = mesh
            .triangles
            .as_flattened()
            .iter()
            .map(|&i| {
                let d = i as i64 - last;
                last = i as i64;
                ((d.unsigned_abs() as u32) << 1) | u32::from(d < 0)
            })
            .collect();
        rans::encode(&deltas, &mut out);
    } else {
        out.push(INDICES_RAW);
        for &i in mesh.triangles.as_flattened() {
            match n {
                0..256 => out.push(i as u8),
                256..65536 => out.extend_from_slice(&(i as u16).to_le_bytes()),
                65536..2097152 => varint(&mut out, i as u64),
                _ => out.extend_from_slice(&i.to_le_bytes()),
            }
        }
    }

    // One attributes encoder holding one attribute: the positions.
    out.push(1);
    varint(&mut out, 1);
    out.extend_from_slice(&[ATTRIBUTE_POSITION, DT_FLOAT32, 3, 0]);
    varint(&mut out, 0); // unique id
    out.push(SEQUENTIAL_ATTRIBUTE_ENCODER_QUANTIZATION);

    // Values: quantized integers predicted from the previous vertex (Draco's difference
    // prediction; the first from zero clamped into [min, max]), the corrections sign-folded
    // into symbols (2·c for c ≥ 0, 2·|c| − 1 below) and entropy coded. The corrections never
    // leave [min − max, max − min], so the decoder's wrap-around never fires.
    let mut quantized = Vec::with_capacity(n * 3);
    for v in &mesh.vertices {
        for (axis, &c) in v.iter().enumerate() {
            let q = quantization.quantize(c, axis).ok_or_else(|| {
                MeshError::Quantization(format!(
                    "vertex {v:?} is outside the quantized box from {:?} nm, {} nm wide",
                    quantization.origin_nm(),
                    quantization.range_nm()
                ))
            })?;
            quantized.push(q as i32);
        }
    }
    let lo = quantized.iter().copied().min().unwrap_or(0);
    let hi = quantized.iter().copied().max().unwrap_or(0);
    let fold = |c: i32| {
        if c >= 0 {
            (c as u32) << 1
        } else {
            (((-c - 1) as u32) << 1) | 1
        }
    };
    if !options.compress_positions {
        out.push(PREDICTION_NONE as u8);
        out.push(VALUES_RAW);
        let symbols: Vec<u32> = quantized.iter().map(|&q| fold(q)).collect();
        let widest = symbols.iter().fold(0u32, |a, &s| a | s);
        let width = (32 - widest.leading_zeros()).div_ceil(8).max(1) as usize;
        out.push(width as u8);
        for s in symbols {
            out.extend_from_slice(&s.to_le_bytes()[..width]);
        }
    } else {
        let symbols: Vec<u32> = (0..quantized.len())
            .map(|i| {
                let predicted = if i < 3 {
                    0i32.clamp(lo, hi)
                } else {
                    quantized[i - 3]
                };
                let c = quantized[i] - predicted;
                if c >= 0 {
                    (c as u32) << 1
                } else {
                    (((-c - 1) as u32) << 1) | 1
                }
            })
            .collect();
        out.push(PREDICTION_DIFFERENCE as u8);
        out.push(PREDICTION_TRANSFORM_WRAP as u8);
        out.push(VALUES_COMPRESSED);
        rans::encode(&symbols, &mut out);
        // The wrap transform's bounds are the prediction's data.
        out.extend_from_slice(&lo.to_le_bytes());
        out.extend_from_slice(&hi.to_le_bytes());
    }
    // The quantization transform's parameters follow the values.
    for o in quantization.origin_nm() {
        out.extend_from_slice(&o.to_le_bytes());
    }
    out.extend_from_slice(&quantization.range_nm().to_le_bytes());
    out.push(quantization.bits);
    // Google's decoder refuses a mesh unless at least 3 bytes per face follow the counts (a
    // sanity check written for plain indices); well-compressed fragments need padding.
    let needed = after_counts + 3 * mesh.triangles.len();
    if out.len() < needed {
        out.resize(needed, 0);
    }
    Ok(out)
}

/// Reads fragments laid out as [`encode`] writes them (sequential connectivity, one
/// quantized position attribute, raw values); anything else is refused, not misread.
pub fn decode(bytes: &[u8]) -> Result<Mesh, MeshError> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(5)? != b"DRACO" {
        return Err(MeshError::Decode("no DRACO magic".into()));
    }
    let head = r.take(6)?;
    if head[..4]
        != [
            VERSION[0],
            VERSION[1],
            TRIANGULAR_MESH,
            MESH_SEQUENTIAL_ENCODING,
        ]
        || head[4..] != [0, 0]
    {
        return Err(MeshError::Decode(format!("unsupported header {head:?}")));
    }
    let faces = r.varint()? as usize;
    let n = r.varint()? as usize;
    if faces >= 1 << 31 || n >= 1 << 31 {
        return Err(MeshError::Decode(format!("{faces} faces, {n} points")));
    }
    // Entropy-coded data has no size floor; cap what a damaged count can reserve.
    let mut triangles = Vec::with_capacity(faces.min(bytes.len()));
    match r.byte()? {
        INDICES_COMPRESSED => {
            let deltas = rans::decode(bytes, &mut r.at, faces * 3)?;
            let mut last = 0i64;
            let mut flat = deltas.iter().map(|&s| {
                let d = (s >> 1) as i64;
                last += if s & 1 == 1 { -d } else { d };
                last as u32
            });
            for _ in 0..faces {
                triangles.push(std::array::from_fn(|_| flat.next().unwrap_or(u32::MAX)));
            }
        }
        INDICES_RAW => {
            for _ in 0..faces {
                let mut t = [0u32; 3];
                for i in &mut t {
                    *i = match n {
                        0..256 => r.byte()? as u32,
                        256..65536 => u16::from_le_bytes([r.byte()?, r.byte()?]) as u32,
                        65536..2097152 => r.varint()? as u32,
                        _ => u32::from_le_bytes([r.byte()?, r.byte()?, r.byte()?, r.byte()?]),
                    };
                }
                triangles.push(t);
            }
        }
        other => return Err(MeshError::Decode(format!("connectivity method {other}"))),
    }
    if r.byte()? != 1 || r.varint()? != 1 {
        return Err(MeshError::Decode("expected one attribute".into()));
    }
    let desc = r.take(4)?;
    if desc != [ATTRIBUTE_POSITION, DT_FLOAT32, 3, 0] {
        return Err(MeshError::Decode(format!("unsupported attribute {desc:?}")));
    }
    r.varint()?;
    if r.byte()? != SEQUENTIAL_ATTRIBUTE_ENCODER_QUANTIZATION {
        return Err(MeshError::Decode("attribute is not quantized".into()));
    }
    let prediction = r.byte()? as i8;
    if prediction != PREDICTION_NONE
        && (prediction != PREDICTION_DIFFERENCE || r.byte()? as i8 != PREDICTION_TRANSFORM_WRAP)
    {
        return Err(MeshError::Decode(format!("prediction method {prediction}")));
    }
    let symbols = match r.byte()? {
        VALUES_COMPRESSED => rans::decode(bytes, &mut r.at, n * 3)?,
        VALUES_RAW => {
            let width = r.byte()? as usize;
            if !(1..=4).contains(&width) {
                return Err(MeshError::Decode(format!("{width}-byte values")));
            }
            let mut symbols = Vec::with_capacity(n.min(bytes.len()) * 3);
            for _ in 0..n * 3 {
                let mut word = [0u8; 4];
                word[..width].copy_from_slice(r.take(width)?);
                symbols.push(u32::from_le_bytes(word));
            }
            symbols
        }
        other => return Err(MeshError::Decode(format!("value coding {other}"))),
    };
    // Undo the sign folding: odd symbols are negative.
    let mut values: Vec<i64> = symbols
        .iter()
        .map(|&s| {
            if s & 1 == 1 {
                -((s >> 1) as i64) - 1
            } else {
                (s >> 1) as i64
            }
        })
        .collect();
    if prediction == PREDICTION_DIFFERENCE {
        let lo = i32::from_le_bytes([r.byte()?, r.byte()?, r.byte()?, r.byte()?]) as i64;
        let hi = i32::from_le_bytes([r.byte()?, r.byte()?, r.byte()?, r.byte()?]) as i64;
        if lo > hi {
            return Err(MeshError::Decode("wrap bounds reversed".into()));
        }
        let span = hi - lo + 1;
        for i in 0..values.len() {
            let predicted = if i < 3 {
                0i64.clamp(lo, hi)
            } else {
                values[i - 3].clamp(lo, hi)
            };
            let mut v = predicted + values[i];
            if v > hi {
                v -= span;
            } else if v < lo {
                v += span;
            }
            values[i] = v;
        }
    }
    let mut origin = [0f32; 3];
    for o in &mut origin {
        *o = f32::from_le_bytes([r.byte()?, r.byte()?, r.byte()?, r.byte()?]);
    }
    let range = f32::from_le_bytes([r.byte()?, r.byte()?, r.byte()?, r.byte()?]);
    let bits = r.byte()?;
    if !(1..=30).contains(&bits) {
        return Err(MeshError::Decode(format!("{bits} quantization bits")));
    }
    let delta = range / ((1u32 << bits) - 1) as f32;
    let vertices = values
        .chunks_exact(3)
        .map(|q| std::array::from_fn(|i| q[i] as f32 * delta + origin[i]))
        .collect();
    let mesh = Mesh {
        vertices,
        triangles,
    };
    mesh.validate()?;
    Ok(mesh)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MeshError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| MeshError::Decode(format!("truncated at byte {}", self.at)))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn byte(&mut self) -> Result<u8, MeshError> {
        Ok(self.take(1)?[0])
    }
    fn varint(&mut self) -> Result<u64, MeshError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(MeshError::Decode("varint too long".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(offset: f32) -> Mesh {
        Mesh {
            vertices: vec![
                [offset, 0.0, 0.0],
                [offset + 10.0, 0.0, 0.0],
                [offset + 10.0, 10.0, 0.0],
                [offset, 10.0, 4.0],
            ],
            triangles: vec![[0, 1, 2], [0, 2, 3]],
        }
    }

    #[test]
    fn header_and_layout_bytes() {
        let q = GridQuantization::for_chunk([0.0; 3], [16.0; 3], 2).unwrap();
        let bytes = encode(&square(0.0), &q).unwrap();
        assert_eq!(&bytes[..11], b"DRACO\x02\x02\x01\x00\x00\x00");
        // 2 faces, 4 points, entropy-coded index deltas in the raw rANS scheme.
        assert_eq!(&bytes[11..16], &[2, 4, INDICES_COMPRESSED, 1, 3]);
        // 8 bins reach 16 nm: 4 bits, range 15 bins = 30 nm; the file ends with the
        // origin, range and bits, after the wrap bounds (0 and 5 bins).
        assert_eq!(q.bits, 4);
        let tail = &bytes[bytes.len() - 25..];
        assert_eq!(&tail[..8], &[0, 0, 0, 0, 5, 0, 0, 0]);
        assert_eq!(&tail[8..20], &[0; 12]);
        assert_eq!(&tail[20..24], &30f32.to_le_bytes());
        assert_eq!(tail[24], 4);
        let back = decode(&bytes).unwrap();
        assert_eq!(back.triangles, square(0.0).triangles);
    }

    #[test]
    fn round_trip_snaps_to_the_lattice() {
        let q = GridQuantization::for_chunk([-7.0, 0.0, 0.0], [40.0; 3], 4).unwrap();
        assert_eq!(q.origin_bins, [-2, 0, 0]);
        let mut mesh = square(-7.0);
        mesh.vertices[3][2] = 5.0;
        let back = decode(&encode(&mesh, &q).unwrap()).unwrap();
        assert_eq!(back.triangles, mesh.triangles);
        for (a, b) in mesh.vertices.iter().zip(&back.vertices) {
            assert_eq!(q.snap(*a).unwrap(), *b);
            for i in 0..3 {
                assert!((a[i] - b[i]).abs() <= 2.0, "{a:?} -> {b:?}");
                assert_eq!(b[i] % 4.0, 0.0);
            }
        }
    }

    #[test]
    fn shared_vertices_quantize_alike_in_every_chunk() {
        // Two chunks with different origins and extents see the same face vertices.
        let a = GridQuantization::for_chunk([0.0; 3], [1032.0; 3], 5).unwrap();
        let b =
            GridQuantization::for_chunk([1024.0, 0.0, 0.0], [2056.0, 1032.0, 1032.0], 5).unwrap();
        for k in 0..2000 {
            let v = [1024.0, k as f32 * 0.5, (k % 97) as f32 * 4.0 + 2.0];
            assert_eq!(a.snap(v).unwrap(), b.snap(v).unwrap(), "{v:?}");
        }
    }

    #[test]
    fn wide_meshes_use_wider_indices() {
        for n in [300usize, 70000] {
            let mesh = Mesh {
                vertices: (0..n)
                    .map(|i| [(i % 1000) as f32, (i / 1000) as f32, 0.0])
                    .collect(),
                triangles: vec![[0, (n - 2) as u32, (n - 1) as u32]],
            };
            let q = GridQuantization::for_mesh(&mesh, 1).unwrap();
            let back = decode(&encode(&mesh, &q).unwrap()).unwrap();
            assert_eq!(back, mesh);
        }
    }

    #[test]
    fn every_coding_round_trips_and_pads_to_three_bytes_a_face() {
        let mesh = Mesh {
            vertices: (0..400)
                .map(|i| [(i % 20) as f32 * 4.0, (i / 20) as f32 * 4.0, 8.0])
                .collect(),
            triangles: (0..19u32)
                .flat_map(|r| {
                    (0..19u32).flat_map(move |c| {
                        let v = r * 20 + c;
                        [[v, v + 1, v + 20], [v + 1, v + 21, v + 20]]
                    })
                })
                .collect(),
        };
        let q = GridQuantization::for_mesh(&mesh, 2).unwrap();
        let mut sizes = Vec::new();
        for c in [false, true] {
            for p in [false, true] {
                let options = DracoOptions {
                    compress_connectivity: c,
                    compress_positions: p,
                };
                let bytes = encode_with(&mesh, &q, &options).unwrap();
                assert_eq!(decode(&bytes).unwrap(), mesh, "{options:?}");
                assert!(bytes.len() >= 3 * mesh.triangles.len());
                sizes.push(bytes.len());
            }
        }
        // Plain, positions coded, indices coded, both (the last two padded to 3 bytes a face).
        assert!(
            sizes[3] <= sizes[2] && sizes[2] < sizes[1] && sizes[1] < sizes[0],
            "{sizes:?}"
        );
    }

    #[test]
    fn vertices_outside_the_box_are_refused() {
        let q = GridQuantization::for_chunk([0.0; 3], [10.0; 3], 1).unwrap();
        assert!(matches!(
            encode(&square(100.0), &q),
            Err(MeshError::Quantization(_))
        ));
        assert!(GridQuantization::for_chunk([0.0; 3], [1e12; 3], 1).is_err());
        assert!(matches!(
            encode(&Mesh::default(), &q),
            Err(MeshError::EmptyFragment)
        ));
        assert!(GridQuantization::for_chunk([0.0; 3], [1.0; 3], 0).is_err());
    }

    #[test]
    fn garbage_is_refused() {
        let q = GridQuantization::for_chunk([0.0; 3], [16.0; 3], 2).unwrap();
        let bytes = encode(&square(0.0), &q).unwrap();
        for cut in [0, 5, 12, 25, bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode(b"PLY....").is_err());
    }
}
