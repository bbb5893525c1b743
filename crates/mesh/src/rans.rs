//! Draco's entropy coding of integer symbols: the "raw" scheme, an rANS coder over the
//! symbols' own alphabet with its probability table stored in front.
//!
//! Layout (Draco 2.2 `EncodeSymbols` with `SYMBOL_CODING_RAW`): `u8` scheme = 1; `u8` the bit
//! length of the number of distinct symbols, which fixes the rANS precision
//! `clamp(3·len/2, 12, 20)` bits; the table: varint alphabet size, then per symbol its
//! probability as a 1–3 byte varint whose low two bits count the extra bytes, or a byte
//! with low bits `11` standing for a run of up to 64 zero probabilities; then varint byte
//! count and the rANS bytes, whose last 1–4 bytes hold the final state with its own length
//! in the top two bits. Symbols are coded last to first, so the decoder reads them in order.

use crate::MeshError;

const SCHEME_RAW: u8 = 1;
/// Draco's renormalization base multiplier (`l_rans_base = 4 · precision`) and byte I/O.
const L_MULT: u32 = 4;
const IO_BASE: u32 = 256;

fn precision_bits(len: u32) -> u32 {
    (3 * len / 2).clamp(12, 20)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Probabilities summing to `total`, at least 1 for every symbol that occurs.
fn quantize(freq: &[u64], total: u32) -> Vec<u32> {
    let n: u64 = freq.iter().sum();
    let mut prob: Vec<u32> = freq
        .iter()
        .map(|&f| {
            if f == 0 {
                0
            } else {
                ((f as f64 * total as f64 / n as f64).round() as u32).max(1)
            }
        })
        .collect();
    let sum: i64 = prob.iter().map(|&p| p as i64).sum();
    let mut diff = total as i64 - sum;
    if diff > 0 {
        // Give the slack to the most frequent symbol: the smallest relative change.
        if let Some(i) = (0..prob.len()).max_by_key(|&i| prob[i]) {
            prob[i] += diff as u32;
        }
    } else if diff < 0 {
        // Rounding overshot by at most about one per symbol: take it back one at a time
        // from the currently largest probabilities.
        let mut heap: std::collections::BinaryHeap<(u32, usize)> = prob
            .iter()
            .enumerate()
            .filter(|(_, &p)| p > 1)
            .map(|(i, &p)| (p, i))
            .collect();
        while diff < 0 {
            let Some((p, i)) = heap.pop() else { break };
            prob[i] = p - 1;
            diff += 1;
            if p - 1 > 1 {
                heap.push((p - 1, i));
            }
        }
    }
    prob
}

/// Appends `symbols` coded with the raw rANS scheme. Nothing is written for no symbols
/// (as Draco does).
pub(crate) fn encode(symbols: &[u32], out: &mut Vec<u8>) {
    if symbols.is_empty() {
        return;
    }
    let max = symbols.iter().copied().max().unwrap_or(0) as usize;
    let mut freq = vec![0u64; max + 1];
    for &s in symbols {
        freq[s as usize] += 1;
    }
    let unique = freq.iter().filter(|&&f| f > 0).count() as u32;
    let len = 32 - unique.leading_zeros();
    let bits = precision_bits(len);
    let total = 1u32 << bits;
    let prob = quantize(&freq, total);
    let mut cum = Vec::with_capacity(prob.len());
    let mut acc = 0u32;
    for &p in &prob {
        cum.push(acc);
        acc += p;
    }

    out.push(SCHEME_RAW);
    out.push(len as u8);
    varint(out, prob.len() as u64);
    let mut i = 0;
    while i < prob.len() {
        let p = prob[i];
        if p == 0 {
            let mut run = 0;
            while run < 63 && i + run + 1 < prob.len() && prob[i + run + 1] == 0 {
                run += 1;
            }
            out.push(((run as u8) << 2) | 3);
            i += run + 1;
            continue;
        }
        let extra = match p {
            0..64 => 0,
            64..16384 => 1,
            _ => 2,
        };
        out.push(((p << 2) as u8) | extra as u8);
        for b in 0..extra {
            out.push((p >> (8 * (b + 1) - 2)) as u8);
        }
        i += 1;
    }

    let l_base = L_MULT * total;
    let mut state = l_base;
    let mut bytes = Vec::with_capacity(symbols.len());
    for &s in symbols.iter().rev() {
        let (p, c) = (prob[s as usize], cum[s as usize]);
        // Renormalize so the state stays below l_base · 256 after the step.
        while state >= (l_base / total) * IO_BASE * p {
            bytes.push(state as u8);
            state /= IO_BASE;
        }
        state = (state / p) * total + state % p + c;
    }
    let tail = state - l_base;
    match tail {
        0..0x40 => bytes.push(tail as u8),
        0x40..0x4000 => bytes.extend_from_slice(&((1 << 14) | tail as u16).to_le_bytes()),
        0x4000..0x40_0000 => bytes.extend_from_slice(&((2 << 22) | tail).to_le_bytes()[..3]),
        _ => bytes.extend_from_slice(&((3 << 30) | tail).to_le_bytes()),
    }
    varint(out, bytes.len() as u64);
    out.extend_from_slice(&bytes);
}

/// Reads `count` symbols coded by [`encode`] (or by Draco's raw scheme) from `data` at
/// `*at`, advancing it.
pub(crate) fn decode(data: &[u8], at: &mut usize, count: usize) -> Result<Vec<u32>, MeshError> {
    let bad = |why: &str| MeshError::Decode(format!("symbols: {why}"));
    if count == 0 {
        return Ok(Vec::new());
    }
    let mut byte = || -> Result<u8, MeshError> {
        let b = *data.get(*at).ok_or_else(|| bad("truncated"))?;
        *at += 1;
        Ok(b)
    };
    if byte()? != SCHEME_RAW {
        return Err(bad("only the raw rANS scheme is supported"));
    }
    let len = byte()? as u32;
    if !(1..=18).contains(&len) {
        return Err(bad("symbol bit length out of range"));
    }
    let bits = precision_bits(len);
    let total = 1u32 << bits;
    let read_varint = |at: &mut usize| -> Result<u64, MeshError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *data.get(*at).ok_or_else(|| bad("truncated varint"))?;
            *at += 1;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad("varint too long"))
    };
    let n = read_varint(at)? as usize;
    if n / 64 > data.len() {
        return Err(bad("alphabet larger than the fragment"));
    }
    let mut prob = vec![0u32; n];
    let mut i = 0;
    while i < n {
        let b = *data.get(*at).ok_or_else(|| bad("truncated table"))?;
        *at += 1;
        if b & 3 == 3 {
            i += (b >> 2) as usize + 1;
            continue;
        }
        let mut p = (b >> 2) as u32;
        for k in 0..(b & 3) as usize {
            let e = *data.get(*at).ok_or_else(|| bad("truncated table"))?;
            *at += 1;
            p |= (e as u32) << (8 * (k + 1) - 2);
        }
        prob[i] = p;
        i += 1;
    }
    let mut lut = Vec::with_capacity(total as usize);
    let mut cum = Vec::with_capacity(n);
    for (s, &p) in prob.iter().enumerate() {
        cum.push(lut.len() as u32);
        if lut.len() + p as usize > total as usize {
            return Err(bad("probabilities exceed the precision"));
        }
        lut.extend(std::iter::repeat_n(s as u32, p as usize));
    }
    if lut.len() != total as usize {
        return Err(bad("probabilities do not sum to the precision"));
    }
    let size = read_varint(at)? as usize;
    let stream = data
        .get(*at..at.checked_add(size).ok_or_else(|| bad("size overflows"))?)
        .ok_or_else(|| bad("truncated stream"))?;
    *at += size;
    let last = *stream.last().ok_or_else(|| bad("empty stream"))?;
    let k = (last >> 6) as usize + 1;
    if stream.len() < k {
        return Err(bad("truncated final state"));
    }
    let mut word = [0u8; 4];
    word[..k].copy_from_slice(&stream[stream.len() - k..]);
    let mask = (1u32 << (8 * k - 2)) - 1;
    let l_base = L_MULT * total;
    let mut state = (u32::from_le_bytes(word) & mask) + l_base;
    if state >= l_base * IO_BASE {
        return Err(bad("final state out of range"));
    }
    let mut offset = stream.len() - k;
    let mut out = Vec::with_capacity(count.min(data.len() * 8));
    for _ in 0..count {
        while state < l_base && offset > 0 {
            offset -= 1;
            state = state * IO_BASE + stream[offset] as u32;
        }
        let (quo, rem) = (state >> bits, state & (total - 1));
        let s = lut[rem as usize];
        state = quo * prob[s as usize] + rem - cum[s as usize];
        out.push(s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(symbols: &[u32]) -> usize {
        let mut buf = vec![0xAB];
        encode(symbols, &mut buf);
        let mut at = 1;
        assert_eq!(decode(&buf, &mut at, symbols.len()).unwrap(), symbols);
        assert_eq!(at, buf.len());
        buf.len() - 1
    }

    #[test]
    fn skewed_symbols_round_trip_and_compress() {
        let mut x = 12345u64;
        let symbols: Vec<u32> = (0..20000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Mostly small values, occasionally large: like prediction corrections.
                let r = x % 1000;
                if r < 900 {
                    (r % 8) as u32
                } else {
                    (x % 3000) as u32
                }
            })
            .collect();
        let bytes = round_trip(&symbols);
        assert!(
            bytes < symbols.len() * 2,
            "{bytes} bytes for {} symbols",
            symbols.len()
        );
    }

    #[test]
    fn single_and_constant_symbols() {
        round_trip(&[0]);
        round_trip(&[5]);
        round_trip(&[7; 1000]);
        round_trip(&[0, 200000, 3, 200000]);
    }

    #[test]
    fn probabilities_sum_to_the_precision() {
        for freq in [vec![1u64; 3000], vec![1, 0, 0, 1_000_000, 3], vec![0, 0, 9]] {
            let p = quantize(&freq, 4096);
            assert_eq!(p.iter().sum::<u32>(), 4096);
            for (f, p) in freq.iter().zip(&p) {
                assert_eq!(*f > 0, *p > 0);
            }
        }
    }

    #[test]
    fn damaged_streams_are_refused_not_misread() {
        let mut buf = Vec::new();
        encode(&[1, 2, 3, 2, 1], &mut buf);
        for cut in 0..buf.len() {
            let mut at = 0;
            assert!(decode(&buf[..cut], &mut at, 5).is_err(), "cut at {cut}");
        }
        let mut at = 0;
        assert!(decode(&[0, 5], &mut at, 1).is_err());
    }
}
