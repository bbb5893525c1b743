//! NumPy `.npy` files (format versions 1, 2 and 3): read any supported dtype, write
//! little-endian C-ordered arrays.

use std::path::Path;

use crate::array::{Array, DynArray, IntoDyn};
use crate::dtype::{encode_le, DataType, Element};
use crate::error::{invalid_meta, Error, Result};

const MAGIC: &[u8] = b"\x93NUMPY";

/// Parses `.npy` bytes; `name` labels errors.
pub fn from_bytes(bytes: &[u8], name: &str) -> Result<DynArray> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(invalid_meta(name, "not a .npy file (bad magic)"));
    }
    let major = bytes[6];
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(invalid_meta(name, "truncated header"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(invalid_meta(name, format!("unsupported .npy version {v}"))),
    };
    let Some(header) = bytes.get(start..start + header_len) else {
        return Err(invalid_meta(name, "truncated header"));
    };
    let header =
        std::str::from_utf8(header).map_err(|_| invalid_meta(name, "header is not text"))?;
    let h = parse_header(header).map_err(|r| invalid_meta(name, r))?;
    let Some((dtype, big)) = DataType::from_numpy_descr(&h.descr) else {
        return Err(Error::Unsupported(format!(
            "{name}: .npy dtype {:?}",
            h.descr
        )));
    };
    let n = h
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| invalid_meta(name, "shape overflows"))?;
    let body = &bytes[start + header_len..];
    let need = n
        .checked_mul(dtype.size())
        .ok_or_else(|| invalid_meta(name, "shape overflows"))?;
    if body.len() < need {
        return Err(crate::error::corrupt(
            name,
            format!(
                "truncated data: {} bytes, shape {:?} needs {need}",
                body.len(),
                h.shape
            ),
        ));
    }
    let mut data = body[..need].to_vec();
    if big {
        for v in data.chunks_exact_mut(dtype.size()) {
            v.reverse();
        }
    }
    if h.fortran_order {
        // Fortran data is the C-order data of the reversed shape.
        let rev: Vec<usize> = h.shape.iter().rev().copied().collect();
        Ok(DynArray::from_le_bytes(dtype, rev, &data)?.reversed_axes())
    } else {
        DynArray::from_le_bytes(dtype, h.shape, &data)
    }
}

/// Reads a `.npy` file.
pub fn read(path: impl AsRef<Path>) -> Result<DynArray> {
    let path = path.as_ref();
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: name.clone(),
        source,
    })?;
    from_bytes(&bytes, &name)
}

/// Reads a `.npy` file that must hold `T`.
pub fn read_as<T: IntoDyn>(path: impl AsRef<Path>) -> Result<Array<T>> {
    read(path)?.into_typed()
}

/// Encodes an array as `.npy` bytes (version 1 unless the header needs version 2).
pub fn to_bytes<T: Element>(a: &Array<T>) -> Vec<u8> {
    let shape = match a.shape() {
        [] => "()".to_string(),
        [n] => format!("({n},)"),
        s => format!(
            "({})",
            s.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}",
        T::DATA_TYPE.numpy_descr()
    );
    // Pad with spaces and a newline so the data starts on a 64-byte boundary.
    let fixed = if header.len() + 11 > u16::MAX as usize {
        12
    } else {
        10
    };
    let total = (fixed + header.len() + 1).div_ceil(64) * 64;
    header.extend(std::iter::repeat_n(' ', total - fixed - header.len() - 1));
    header.push('\n');
    let mut out = Vec::with_capacity(total + a.data().len() * T::DATA_TYPE.size());
    out.extend_from_slice(MAGIC);
    if fixed == 10 {
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&encode_le(a.data()));
    out
}

/// Writes an array to a `.npy` file.
pub fn write<T: Element>(path: impl AsRef<Path>, a: &Array<T>) -> Result<()> {
    let path = path.as_ref();
    std::fs::write(path, to_bytes(a)).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// Parses the header's Python dict literal (string keys; string, bool and int-tuple values).
fn parse_header(text: &str) -> std::result::Result<Header, String> {
    let mut p = Lit {
        s: text.as_bytes(),
        i: 0,
    };
    p.expect(b'{')?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        p.ws();
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        p.ws();
        p.expect(b':')?;
        p.ws();
        match key.as_str() {
            "descr" => descr = Some(p.string()?),
            "fortran_order" => fortran = Some(p.boolean()?),
            "shape" => shape = Some(p.tuple()?),
            other => return Err(format!("unexpected header key {other:?}")),
        }
        p.ws();
        if !p.eat(b',') {
            p.ws();
            p.expect(b'}')?;
            break;
        }
    }
    Ok(Header {
        descr: descr.ok_or("header lacks 'descr'")?,
        fortran_order: fortran.ok_or("header lacks 'fortran_order'")?,
        shape: shape.ok_or("header lacks 'shape'")?,
    })
}

struct Lit<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lit<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: u8) -> std::result::Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!(
                "expected {:?} at byte {} of the header",
                c as char, self.i
            ))
        }
    }
    fn string(&mut self) -> std::result::Result<String, String> {
        let q = *self.s.get(self.i).ok_or("header ends early")?;
        if q != b'\'' && q != b'"' {
            return Err(format!("expected a string at byte {}", self.i));
        }
        let start = self.i + 1;
        let len = self.s[start..]
            .iter()
            .position(|&c| c == q)
            .ok_or("unterminated string in header")?;
        self.i = start + len + 1;
        Ok(String::from_utf8_lossy(&self.s[start..start + len]).into_owned())
    }
    fn boolean(&mut self) -> std::result::Result<bool, String> {
        for (word, v) in [(&b"True"[..], true), (&b"False"[..], false)] {
            if self.s[self.i..].starts_with(word) {
                self.i += word.len();
                return Ok(v);
            }
        }
        Err(format!("expected True or False at byte {}", self.i))
    }
    fn tuple(&mut self) -> std::result::Result<Vec<usize>, String> {
        self.expect(b'(')?;
        let mut out = Vec::new();
        loop {
            self.ws();
            if self.eat(b')') {
                return Ok(out);
            }
            let start = self.i;
            while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                self.i += 1;
            }
            // Python 2 era headers may write `3L`.
            let digits = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
            out.push(
                digits
                    .parse()
                    .map_err(|_| format!("bad dimension at byte {start}"))?,
            );
            self.eat(b'L');
            self.ws();
            if !self.eat(b',') {
                self.ws();
                self.expect(b')')?;
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_type_and_rank() {
        fn rt<T: IntoDyn>(shape: Vec<usize>, f: impl Fn(usize) -> T) {
            let n: usize = shape.iter().product();
            let a = Array::new(shape, (0..n).map(f).collect()).unwrap();
            let b = to_bytes(&a);
            assert_eq!(b.iter().position(|&c| c == b'\n').unwrap() % 64, 63);
            let back = from_bytes(&b, "t").unwrap().into_typed::<T>().unwrap();
            assert_eq!(back, a);
        }
        rt(vec![3, 4, 5], |i| i as u8);
        rt(vec![7], |i| i as i8 - 3);
        rt(vec![2, 2], |i| i as u16 * 1000);
        rt(vec![2, 3], |i| i as u32 * 100_000);
        rt(vec![], |_| 42u64);
        rt(vec![0, 5], |i| i as i64);
        rt(vec![4, 1], |i| -(i as i32));
        rt(vec![3], |i| i as f32 * 0.5);
        rt(vec![3], |i| i as f64 * 0.25);
    }

    #[test]
    fn reads_handwritten_headers() {
        // Version 1, Fortran order, double-quoted keys and odd spacing.
        let header = "{\"descr\":\"<u2\",\"fortran_order\":True,\"shape\":(2,3)}\n";
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[1, 0]);
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        for v in 0u16..6 {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let a = from_bytes(&b, "f").unwrap().into_typed::<u16>().unwrap();
        // Fortran: element [i, j] is at i + 2j.
        assert_eq!(a.shape(), &[2, 3]);
        assert_eq!(a.data(), &[0, 2, 4, 1, 3, 5]);

        // Version 2, big-endian.
        let header = "{'descr': '>u4', 'fortran_order': False, 'shape': (2,), }\n";
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[2, 0]);
        b.extend_from_slice(&(header.len() as u32).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(&[0, 0, 0, 1, 0, 0, 1, 0]);
        let a = from_bytes(&b, "be").unwrap().into_typed::<u32>().unwrap();
        assert_eq!(a.data(), &[1, 256]);
    }

    #[test]
    fn bad_files_fail_clearly() {
        let good = to_bytes(&Array::new(vec![4], vec![1u32, 2, 3, 4]).unwrap());
        let err = |b: &[u8]| from_bytes(b, "x").unwrap_err().to_string();
        assert!(err(b"hello world").contains("magic"));
        assert!(err(&good[..good.len() - 1]).contains("truncated data"));
        assert!(err(&good[..20]).contains("truncated header"));
        let mut bad = good.clone();
        bad[6] = 9;
        assert!(err(&bad).contains("version 9"));
        let replace = |from: &[u8], to: &[u8]| {
            let at = good.windows(from.len()).position(|w| w == from).unwrap();
            let mut b = good.clone();
            b[at..at + to.len()].copy_from_slice(to);
            b
        };
        assert!(err(&replace(b"<u4", b"<c8")).contains("dtype"));
        assert!(err(&replace(b"'shape'", b"'shapf'")).contains("shapf"));
        assert!(err(&replace(b"False", b"Falsy")).contains("True or False"));
        assert!(matches!(
            from_bytes(&good, "x").unwrap().into_typed::<u64>(),
            Err(Error::DataTypeMismatch { .. })
        ));
    }
}
