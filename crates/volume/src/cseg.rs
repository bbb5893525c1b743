//! Neuroglancer's `compressed_segmentation` encoding (multi-channel form), for u32 and u64.
//!
//! Each channel of a chunk is split into blocks; every block stores a lookup table of its
//! distinct values and, per voxel, an index into that table packed with 0, 1, 2, 4, 8, 16 or
//! 32 bits. Identical tables are shared between blocks. All words are little-endian u32.

use std::collections::HashMap;

use crate::dtype::Element;

/// The label types this encoding supports.
pub trait CsegValue: Element + Ord + std::hash::Hash {
    /// 32-bit words per value (1 for u32, 2 for u64).
    const WORDS: usize;
    fn push_words(self, out: &mut Vec<u32>);
    fn from_words(w: &[u32]) -> Self;
}

impl CsegValue for u32 {
    const WORDS: usize = 1;
    fn push_words(self, out: &mut Vec<u32>) {
        out.push(self);
    }
    fn from_words(w: &[u32]) -> Self {
        w[0]
    }
}

impl CsegValue for u64 {
    const WORDS: usize = 2;
    fn push_words(self, out: &mut Vec<u32>) {
        out.push(self as u32);
        out.push((self >> 32) as u32);
    }
    fn from_words(w: &[u32]) -> Self {
        u64::from(w[0]) | (u64::from(w[1]) << 32)
    }
}

/// Why an encoding or decoding failed.
#[derive(Debug, thiserror::Error)]
pub enum CsegError {
    #[error("chunk too large for compressed_segmentation: offset {0} words exceeds 24 bits")]
    TooLarge(usize),
    #[error("invalid block size {0:?}")]
    BadBlockSize([usize; 3]),
    #[error("{0}")]
    Corrupt(String),
}

fn bits_for(n: usize) -> u32 {
    match n {
        0 | 1 => 0,
        2 => 1,
        3..=4 => 2,
        5..=16 => 4,
        17..=256 => 8,
        257..=65536 => 16,
        _ => 32,
    }
}

/// Encodes `data`, C-ordered `[c, z, y, x]` with `size = [x, y, z]` and `channels`
/// channels, with blocks of `block = [x, y, z]` voxels.
pub fn encode<T: CsegValue>(
    data: &[T],
    size: [usize; 3],
    channels: usize,
    block: [usize; 3],
) -> Result<Vec<u8>, CsegError> {
    if block.contains(&0) {
        return Err(CsegError::BadBlockSize(block));
    }
    let n = size[0] * size[1] * size[2];
    assert_eq!(data.len(), n * channels, "cseg::encode: data length");
    let mut out: Vec<u32> = vec![0; channels];
    for c in 0..channels {
        out[c] = u32::try_from(out.len()).map_err(|_| CsegError::TooLarge(out.len()))?;
        let start = out.len();
        let mut chan = std::mem::take(&mut out);
        encode_channel(&data[c * n..(c + 1) * n], size, block, &mut chan, start)?;
        out = chan;
    }
    let mut bytes = Vec::with_capacity(out.len() * 4);
    for w in out {
        bytes.extend_from_slice(&w.to_le_bytes());
    }
    Ok(bytes)
}

/// Appends one channel's encoding to `out`; offsets inside it count from `base`.
fn encode_channel<T: CsegValue>(
    data: &[T],
    size: [usize; 3],
    block: [usize; 3],
    out: &mut Vec<u32>,
    base: usize,
) -> Result<(), CsegError> {
    let grid: [usize; 3] = std::array::from_fn(|a| size[a].div_ceil(block[a]));
    let nblocks = grid[0] * grid[1] * grid[2];
    let header_at = out.len();
    out.resize(header_at + 2 * nblocks, 0);
    let block_len = block[0] * block[1] * block[2];
    let mut tables: HashMap<Vec<T>, usize> = HashMap::new();
    let mut values: Vec<T> = Vec::with_capacity(block_len);
    let mut bi = 0;
    for gz in 0..grid[2] {
        for gy in 0..grid[1] {
            for gx in 0..grid[0] {
                let origin = [gx * block[0], gy * block[1], gz * block[2]];
                let actual: [usize; 3] = std::array::from_fn(|a| block[a].min(size[a] - origin[a]));
                values.clear();
                for z in 0..actual[2] {
                    for y in 0..actual[1] {
                        let row = ((origin[2] + z) * size[1] + origin[1] + y) * size[0] + origin[0];
                        values.extend_from_slice(&data[row..row + actual[0]]);
                    }
                }
                let mut table = values.clone();
                table.sort_unstable();
                table.dedup();
                let bits = bits_for(table.len());

                let values_at = out.len() - base;
                if bits > 0 {
                    let words = (bits as usize * block_len).div_ceil(32);
                    let first = out.len();
                    out.resize(first + words, 0);
                    let mut i = 0;
                    for z in 0..actual[2] {
                        for y in 0..actual[1] {
                            for x in 0..actual[0] {
                                let v = values[i];
                                i += 1;
                                // The table is sorted, so the index is a binary search.
                                let idx = table.binary_search(&v).unwrap_or(0) as u32;
                                let bit = bits as usize * (x + block[0] * (y + block[1] * z));
                                out[first + bit / 32] |= idx << (bit % 32);
                            }
                        }
                    }
                }
                let table_at = match tables.get(&table) {
                    Some(&at) => at,
                    None => {
                        let at = out.len() - base;
                        for &v in &table {
                            v.push_words(out);
                        }
                        tables.insert(table, at);
                        at
                    }
                };
                if table_at >= 1 << 24 {
                    return Err(CsegError::TooLarge(table_at));
                }
                let values_at =
                    u32::try_from(values_at).map_err(|_| CsegError::TooLarge(values_at))?;
                out[header_at + 2 * bi] = table_at as u32 | (bits << 24);
                out[header_at + 2 * bi + 1] = values_at;
                bi += 1;
            }
        }
    }
    Ok(())
}

/// Decodes a chunk of `size = [x, y, z]` voxels and `channels` channels into C-ordered
/// `[c, z, y, x]` values. Every offset is checked: corrupt input gives an error, never a
/// panic or an out-of-bounds read.
pub fn decode<T: CsegValue>(
    bytes: &[u8],
    size: [usize; 3],
    channels: usize,
    block: [usize; 3],
) -> Result<Vec<T>, CsegError> {
    if block.contains(&0) {
        return Err(CsegError::BadBlockSize(block));
    }
    if !bytes.len().is_multiple_of(4) {
        return Err(CsegError::Corrupt(format!(
            "length {} is not a multiple of 4",
            bytes.len()
        )));
    }
    let words: Vec<u32> = bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if words.len() < channels {
        return Err(CsegError::Corrupt(format!(
            "{} words cannot hold {channels} channel offsets",
            words.len()
        )));
    }
    let n = size[0] * size[1] * size[2];
    let mut out = vec![T::default(); n * channels];
    for c in 0..channels {
        let base = words[c] as usize;
        if base > words.len() {
            return Err(CsegError::Corrupt(format!(
                "channel {c} offset {base} past end ({} words)",
                words.len()
            )));
        }
        decode_channel(&words[base..], size, block, &mut out[c * n..(c + 1) * n])
            .map_err(|e| CsegError::Corrupt(format!("channel {c}: {e}")))?;
    }
    Ok(out)
}

fn decode_channel<T: CsegValue>(
    w: &[u32],
    size: [usize; 3],
    block: [usize; 3],
    out: &mut [T],
) -> Result<(), String> {
    let grid: [usize; 3] = std::array::from_fn(|a| size[a].div_ceil(block[a]));
    let nblocks = grid[0] * grid[1] * grid[2];
    if w.len() < 2 * nblocks {
        return Err(format!(
            "{nblocks} block headers need {} words, have {}",
            2 * nblocks,
            w.len()
        ));
    }
    let mut bi = 0;
    for gz in 0..grid[2] {
        for gy in 0..grid[1] {
            for gx in 0..grid[0] {
                let h0 = w[2 * bi];
                let values_at = w[2 * bi + 1] as usize;
                bi += 1;
                let table_at = (h0 & 0x00ff_ffff) as usize;
                let bits = h0 >> 24;
                if !matches!(bits, 0 | 1 | 2 | 4 | 8 | 16 | 32) {
                    return Err(format!("block {bi}: invalid encoded bits {bits}"));
                }
                let origin = [gx * block[0], gy * block[1], gz * block[2]];
                let actual: [usize; 3] = std::array::from_fn(|a| block[a].min(size[a] - origin[a]));
                let lookup = |idx: usize| -> Result<T, String> {
                    let at = table_at + idx * T::WORDS;
                    w.get(at..at + T::WORDS)
                        .map(T::from_words)
                        .ok_or_else(|| format!("lookup table entry at word {at} past end"))
                };
                if bits == 0 {
                    let v = lookup(0)?;
                    for z in 0..actual[2] {
                        for y in 0..actual[1] {
                            let row =
                                ((origin[2] + z) * size[1] + origin[1] + y) * size[0] + origin[0];
                            out[row..row + actual[0]].fill(v);
                        }
                    }
                    continue;
                }
                let need = (bits as usize * block[0] * block[1] * block[2]).div_ceil(32);
                if values_at.checked_add(need).is_none_or(|end| end > w.len()) {
                    return Err(format!(
                        "encoded values at word {values_at} (+{need}) past end ({} words)",
                        w.len()
                    ));
                }
                let mask = if bits == 32 {
                    u32::MAX
                } else {
                    (1u32 << bits) - 1
                };
                for z in 0..actual[2] {
                    for y in 0..actual[1] {
                        let row = ((origin[2] + z) * size[1] + origin[1] + y) * size[0] + origin[0];
                        for x in 0..actual[0] {
                            let bit = bits as usize * (x + block[0] * (y + block[1] * z));
                            let idx = (w[values_at + bit / 32] >> (bit % 32)) & mask;
                            out[row + x] = lookup(idx as usize)?;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn words(bytes: &[u8]) -> Vec<u32> {
        bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    /// Hand-checked: a 2x2x2 u32 volume in 2x2x1 blocks. Block 0 is 4,3,5,4: table [3,4,5],
    /// 2 bits, indices 1,0,2,1 packed from bit 0 = 0b01_10_00_01. Block 1 is 1,3,3,3: table
    /// [1,3], 1 bit, indices 0,1,1,1 = 0b1110. Each block's values precede its table.
    #[test]
    fn hand_checked_two_blocks() {
        let data = [4u32, 3, 5, 4, 1, 3, 3, 3];
        let enc = encode(&data, [2, 2, 2], 1, [2, 2, 1]).unwrap();
        let w = words(&enc);
        // channel offset 1; then headers (offsets relative to word 1):
        // block0: table at 5, 2 bits, values at 4; block1: table at 9, 1 bit, values at 8.
        assert_eq!(
            w,
            vec![
                1,
                5 | (2 << 24),
                4,
                9 | (1 << 24),
                8,
                0b0110_0001,
                3,
                4,
                5,
                0b1110,
                1,
                3
            ]
        );
        assert_eq!(decode::<u32>(&enc, [2, 2, 2], 1, [2, 2, 1]).unwrap(), data);
    }

    /// Zero-bit blocks store no values and share identical tables.
    #[test]
    fn hand_checked_shared_tables() {
        let data = [4u32, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4];
        let enc = encode(&data, [2, 2, 4], 1, [2, 2, 1]).unwrap();
        assert_eq!(words(&enc), vec![1, 8, 8, 9, 9, 9, 10, 8, 10, 4, 3]);
        assert_eq!(decode::<u32>(&enc, [2, 2, 4], 1, [2, 2, 1]).unwrap(), data);
    }

    /// A partial block (block 3 wide, volume 2 wide) pads indices with 0.
    #[test]
    fn partial_block_padding() {
        let data = [4u32, 3, 4, 3];
        let enc = encode(&data, [2, 2, 1], 1, [3, 2, 1]).unwrap();
        assert_eq!(words(&enc), vec![1, 3 | (1 << 24), 2, 0b001_001, 3, 4]);
        assert_eq!(decode::<u32>(&enc, [2, 2, 1], 1, [3, 2, 1]).unwrap(), data);
    }

    #[test]
    fn u64_values_split_into_two_words() {
        let v = 0x0000_0001_0000_0002u64;
        let enc = encode(&[v, v], [2, 1, 1], 1, [2, 1, 1]).unwrap();
        assert_eq!(words(&enc), vec![1, 2, 2, 2, 1]);
        assert_eq!(
            decode::<u64>(&enc, [2, 1, 1], 1, [2, 1, 1]).unwrap(),
            vec![v, v]
        );
    }

    #[test]
    fn random_round_trips() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for &(size, channels, block, distinct) in &[
            ([1usize, 2, 1], 1usize, [2usize, 2, 2], 15u64),
            ([4, 4, 5], 3, [2, 2, 2], 15),
            ([17, 9, 5], 2, [8, 4, 1], 3),
            ([16, 16, 16], 1, [8, 8, 8], 300),
            ([9, 10, 11], 1, [4, 4, 4], 1 << 40),
            ([8, 8, 8], 1, [8, 8, 8], 70000),
        ] {
            let n = size[0] * size[1] * size[2] * channels;
            let d64: Vec<u64> = (0..n).map(|_| rng.random_range(0..distinct)).collect();
            let enc = encode(&d64, size, channels, block).unwrap();
            assert_eq!(decode::<u64>(&enc, size, channels, block).unwrap(), d64);
            let d32: Vec<u32> = d64.iter().map(|&v| v as u32).collect();
            let enc = encode(&d32, size, channels, block).unwrap();
            assert_eq!(decode::<u32>(&enc, size, channels, block).unwrap(), d32);
        }
    }

    #[test]
    fn corrupt_input_errors_without_panicking() {
        let data: Vec<u32> = (0..64).map(|i| i % 5).collect();
        let enc = encode(&data, [4, 4, 4], 1, [2, 2, 2]).unwrap();
        for cut in [0, 3, 4, 8, enc.len() / 2, enc.len() - 4] {
            assert!(
                decode::<u32>(&enc[..cut], [4, 4, 4], 1, [2, 2, 2]).is_err(),
                "cut {cut}"
            );
        }
        let mut bad = enc.clone();
        bad[4 + 3] = 3; // encoded bits 3
        assert!(decode::<u32>(&bad, [4, 4, 4], 1, [2, 2, 2]).is_err());
        let mut bad = enc.clone();
        bad[4..7].copy_from_slice(&[0xff, 0xff, 0xff]); // table offset far past the end
        assert!(decode::<u32>(&bad, [4, 4, 4], 1, [2, 2, 2]).is_err());
        let mut bad = enc;
        bad[0..4].copy_from_slice(&1000u32.to_le_bytes()); // channel offset past end
        assert!(decode::<u32>(&bad, [4, 4, 4], 1, [2, 2, 2]).is_err());
        // Random garbage never panics.
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for _ in 0..200 {
            let len = 4 * rng.random_range(0..40);
            let junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let _ = decode::<u64>(&junk, [4, 4, 4], 1, [2, 2, 2]);
        }
    }
}
