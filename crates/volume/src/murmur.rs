//! MurmurHash3_x86_128, the hash of the `murmurhash3_x86_128` sharding option.

const C1: u32 = 0x239b_961b;
const C2: u32 = 0xab0e_9789;
const C3: u32 = 0x38b3_4ae5;
const C4: u32 = 0xa1e3_8b93;

fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

// Per-lane mixing of one 32-bit input word: (multiplier, rotation, multiplier).
const LANE: [(u32, u32, u32); 4] = [(C1, 15, C2), (C2, 16, C3), (C3, 17, C4), (C4, 18, C1)];

fn mix_k(lane: usize, k: u32) -> u32 {
    let (a, r, b) = LANE[lane];
    k.wrapping_mul(a).rotate_left(r).wrapping_mul(b)
}

/// MurmurHash3_x86_128 of `data` with `seed`: the four 32-bit words `h1..h4`. As bytes, the
/// hash is those words little-endian, in order.
pub fn murmurhash3_x86_128(data: &[u8], seed: u32) -> [u32; 4] {
    let mut h = [seed; 4];
    let mut blocks = data.chunks_exact(16);
    for block in &mut blocks {
        let k: [u32; 4] = std::array::from_fn(|i| {
            u32::from_le_bytes([
                block[4 * i],
                block[4 * i + 1],
                block[4 * i + 2],
                block[4 * i + 3],
            ])
        });
        // Each lane: mix in its word, rotate, add the next lane, scale and offset.
        const ROT: [u32; 4] = [19, 17, 15, 13];
        const ADD: [u32; 4] = [0x561c_cd1b, 0x0bca_a747, 0x96cd_1c35, 0x32ac_3b17];
        for i in 0..4 {
            h[i] ^= mix_k(i, k[i]);
            h[i] = h[i]
                .rotate_left(ROT[i])
                .wrapping_add(h[(i + 1) % 4])
                .wrapping_mul(5)
                .wrapping_add(ADD[i]);
        }
    }
    let tail = blocks.remainder();
    let mut k = [0u32; 4];
    for (i, &b) in tail.iter().enumerate() {
        k[i / 4] ^= u32::from(b) << (8 * (i % 4));
    }
    for lane in 0..tail.len().div_ceil(4) {
        h[lane] ^= mix_k(lane, k[lane]);
    }

    let len = data.len() as u32;
    for v in &mut h {
        *v ^= len;
    }
    add_round(&mut h);
    for v in &mut h {
        *v = fmix32(*v);
    }
    add_round(&mut h);
    h
}

fn add_round(h: &mut [u32; 4]) {
    h[0] = h[0]
        .wrapping_add(h[1])
        .wrapping_add(h[2])
        .wrapping_add(h[3]);
    h[1] = h[1].wrapping_add(h[0]);
    h[2] = h[2].wrapping_add(h[0]);
    h[3] = h[3].wrapping_add(h[0]);
}

/// The sharding hash: MurmurHash3_x86_128 (seed 0) of `key`'s 8 little-endian bytes, low 64
/// bits of the result read little-endian (`h2 << 32 | h1`).
pub fn murmurhash3_x86_128_u64(key: u64, seed: u32) -> u64 {
    let h = murmurhash3_x86_128(&key.to_le_bytes(), seed);
    (u64::from(h[1]) << 32) | u64::from(h[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SMHasher's verification value for MurmurHash3_x86_128: hash keys `[0..i)` with seed
    /// `256 - i` for i in 0..256, concatenate the hashes, hash that with seed 0, and read the
    /// first 4 bytes little-endian.
    #[test]
    fn smhasher_verification_value() {
        let key: Vec<u8> = (0..=255u8).collect();
        let mut hashes = Vec::with_capacity(16 * 256);
        for i in 0..256usize {
            for w in murmurhash3_x86_128(&key[..i], 256 - i as u32) {
                hashes.extend_from_slice(&w.to_le_bytes());
            }
        }
        let f = murmurhash3_x86_128(&hashes, 0);
        assert_eq!(f[0], 0xB3EC_E62A);
    }

    /// Published vectors for 8-byte inputs (the sharding case), per seed.
    #[test]
    fn eight_byte_vectors() {
        let cases: [(u64, u32, u32, u32); 9] = [
            (0, 0, 0xe028ae41, 0x4772b084),
            (0, 1, 0x5ad58a7e, 0x54337108),
            (0, 2, 0x64010da2, 0x62e8bc17),
            (1, 0, 0x16d4ce9a, 0xe8bd67d6),
            (1, 1, 0x4b7ab8c6, 0xeb555955),
            (1, 2, 0xeb2301be, 0x48e12494),
            (42, 0, 0x5119f47a, 0xc20b94f9),
            (42, 1, 0xd6b51bca, 0xa25ad86b),
            (42, 2, 0x2d83d9c7, 0x082115eb),
        ];
        for (key, seed, h1, h2) in cases {
            let h = murmurhash3_x86_128(&key.to_le_bytes(), seed);
            assert_eq!(
                (h[0], h[1], h[2], h[3]),
                (h1, h2, h2, h2),
                "key {key} seed {seed}"
            );
            assert_eq!(
                murmurhash3_x86_128_u64(key, seed),
                (u64::from(h2) << 32) | u64::from(h1)
            );
        }
    }

    /// Short strings covering every tail length class.
    #[test]
    fn string_vectors() {
        let cases: [(&[u8], u32, [u32; 4]); 6] = [
            (b"", 0, [0, 0, 0, 0]),
            (b"", 1, [0x88c4adec, 0x54d201b9, 0x54d201b9, 0x54d201b9]),
            (
                b"a",
                0x9747b28c,
                [0x084ef944, 0x21a1186e, 0x21a1186e, 0x21a1186e],
            ),
            (
                b"abcd",
                0x9747b28c,
                [0x4795c529, 0xcec1885e, 0xcec1885e, 0xcec1885e],
            ),
            (
                b"Hello, world!",
                0x9747b28c,
                [0x756d5460, 0xbb872216, 0xb7d48b7c, 0x53c8c636],
            ),
            (
                "\u{3c0}\u{3c0}\u{3c0}\u{3c0}\u{3c0}\u{3c0}\u{3c0}\u{3c0}".as_bytes(),
                0x9747b28c,
                [0xaf2ad325, 0x3a74df88, 0x38cc7534, 0xf197cc0d],
            ),
        ];
        for (data, seed, want) in cases {
            assert_eq!(murmurhash3_x86_128(data, seed), want, "{data:?}");
        }
    }
}
