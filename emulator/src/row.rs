//! The stored form of one Bigtable row, its binary encoding, and mutations applied to it.

use std::collections::BTreeMap;

/// One version of a cell as stored. `ts` is in microseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCell {
    pub ts: i64,
    pub value: Vec<u8>,
}

/// Qualifier → versions, newest first.
pub type Columns = BTreeMap<Vec<u8>, Vec<StoredCell>>;

/// A row as stored. Families are kept sorted by name so reads have a deterministic family order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredRow {
    pub families: BTreeMap<String, Columns>,
}

/// A cell on its way through the filter pipeline to a reader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadCell {
    pub family: String,
    pub qualifier: Vec<u8>,
    pub ts: i64,
    pub value: Vec<u8>,
    pub labels: Vec<String>,
}

impl StoredRow {
    pub fn is_empty(&self) -> bool {
        self.families
            .values()
            .all(|cols| cols.values().all(Vec::is_empty))
    }

    /// Cells in read order: family name, then qualifier ascending, then timestamp descending.
    pub fn read_cells(&self) -> Vec<ReadCell> {
        let mut out = Vec::new();
        for (family, cols) in &self.families {
            for (qualifier, cells) in cols {
                for c in cells {
                    out.push(ReadCell {
                        family: family.clone(),
                        qualifier: qualifier.clone(),
                        ts: c.ts,
                        value: c.value.clone(),
                        labels: Vec::new(),
                    });
                }
            }
        }
        out
    }

    /// Like [`read_cells`](Self::read_cells), moving the values out instead of copying them.
    pub fn into_read_cells(self) -> Vec<ReadCell> {
        let mut out = Vec::new();
        for (family, cols) in self.families {
            for (qualifier, cells) in cols {
                for c in cells {
                    out.push(ReadCell {
                        family: family.clone(),
                        qualifier: qualifier.clone(),
                        ts: c.ts,
                        value: c.value,
                        labels: Vec::new(),
                    });
                }
            }
        }
        out
    }

    /// Drops empty columns and families so that emptiness is structural.
    pub fn prune(&mut self) {
        for cols in self.families.values_mut() {
            cols.retain(|_, cells| !cells.is_empty());
        }
        self.families.retain(|_, cols| !cols.is_empty());
    }
}

/// Why a stored row could not be decoded: the file is corrupt or from another format.
#[derive(Debug, thiserror::Error)]
#[error("corrupt stored row: {0}")]
pub struct DecodeError(&'static str);

impl DecodeError {
    pub fn new(why: &'static str) -> Self {
        DecodeError(why)
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self
                .buf
                .split_first()
                .ok_or(DecodeError("truncated varint"))?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError("varint too long"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = usize::try_from(self.varint()?).map_err(|_| DecodeError("length overflow"))?;
        if n > self.buf.len() {
            return Err(DecodeError("truncated bytes"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        if self.buf.len() < 8 {
            return Err(DecodeError("truncated timestamp"));
        }
        let (head, rest) = self.buf.split_at(8);
        self.buf = rest;
        let mut a = [0u8; 8];
        a.copy_from_slice(head);
        Ok(i64::from_be_bytes(a))
    }
}

const FORMAT_VERSION: u8 = 1;

impl StoredRow {
    /// Compact binary form: a version byte, then length-prefixed families, columns and cells.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(FORMAT_VERSION);
        put_varint(&mut out, self.families.len() as u64);
        for (family, cols) in &self.families {
            put_bytes(&mut out, family.as_bytes());
            put_varint(&mut out, cols.len() as u64);
            for (qualifier, cells) in cols {
                put_bytes(&mut out, qualifier);
                put_varint(&mut out, cells.len() as u64);
                for c in cells {
                    out.extend_from_slice(&c.ts.to_be_bytes());
                    put_bytes(&mut out, &c.value);
                }
            }
        }
        out
    }

    pub fn decode(buf: &[u8]) -> Result<StoredRow, DecodeError> {
        let (&version, rest) = buf.split_first().ok_or(DecodeError("empty"))?;
        if version != FORMAT_VERSION {
            return Err(DecodeError("unknown format version"));
        }
        let mut r = Reader { buf: rest };
        let mut row = StoredRow::default();
        for _ in 0..r.varint()? {
            let name = std::str::from_utf8(r.bytes()?)
                .map_err(|_| DecodeError("family name is not UTF-8"))?
                .to_string();
            let mut cols = Columns::new();
            for _ in 0..r.varint()? {
                let qualifier = r.bytes()?.to_vec();
                let n = r.varint()?;
                let mut cells = Vec::with_capacity(n.min(1024) as usize);
                for _ in 0..n {
                    let ts = r.i64()?;
                    cells.push(StoredCell {
                        ts,
                        value: r.bytes()?.to_vec(),
                    });
                }
                cols.insert(qualifier, cells);
            }
            row.families.insert(name, cols);
        }
        if !r.buf.is_empty() {
            return Err(DecodeError("trailing bytes"));
        }
        Ok(row)
    }

    /// Writes one cell version; a version with the same timestamp is replaced, as in Bigtable.
    pub fn set_cell(&mut self, family: &str, qualifier: &[u8], ts: i64, value: Vec<u8>) {
        let cells = self
            .families
            .entry(family.to_string())
            .or_default()
            .entry(qualifier.to_vec())
            .or_default();
        match cells.binary_search_by(|c| ts.cmp(&c.ts)) {
            Ok(i) => cells[i].value = value,
            Err(i) => cells.insert(i, StoredCell { ts, value }),
        }
    }

    /// Deletes versions with `start <= ts < end` (`end == 0` means no upper bound).
    pub fn delete_cells(&mut self, family: &str, qualifier: &[u8], start: i64, end: i64) {
        if let Some(cells) = self
            .families
            .get_mut(family)
            .and_then(|cols| cols.get_mut(qualifier))
        {
            cells.retain(|c| !(c.ts >= start && (end == 0 || c.ts < end)));
        }
        self.prune();
    }

    /// The newest version of a cell, if any.
    pub fn latest(&self, family: &str, qualifier: &[u8]) -> Option<&StoredCell> {
        self.families.get(family)?.get(qualifier)?.first()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_roundtrip_and_order() {
        let mut row = StoredRow::default();
        row.set_cell("b", b"q", 1000, b"x".to_vec());
        row.set_cell("a", b"q2", 2000, vec![0; 300]);
        row.set_cell("a", b"q2", 5000, b"newer".to_vec());
        row.set_cell("a", b"q1", 1000, vec![]);
        row.set_cell("a", b"q2", 5000, b"replaced".to_vec());
        let back = StoredRow::decode(&row.encode()).unwrap();
        assert_eq!(back, row);
        let cells = back.read_cells();
        let order: Vec<_> = cells
            .iter()
            .map(|c| (c.family.as_str(), c.qualifier.as_slice(), c.ts))
            .collect();
        assert_eq!(
            order,
            vec![
                ("a", &b"q1"[..], 1000),
                ("a", &b"q2"[..], 5000),
                ("a", &b"q2"[..], 2000),
                ("b", &b"q"[..], 1000)
            ]
        );
        assert_eq!(cells[1].value, b"replaced");
    }

    #[test]
    fn decode_rejects_garbage() {
        assert!(StoredRow::decode(&[]).is_err());
        assert!(StoredRow::decode(&[9, 0]).is_err());
        assert!(StoredRow::decode(&[1, 1, 5, b'a']).is_err());
        let mut ok = StoredRow::default();
        ok.set_cell("f", b"q", 0, b"v".to_vec());
        let mut enc = ok.encode();
        enc.push(0);
        assert!(StoredRow::decode(&enc).is_err());
    }

    #[test]
    fn delete_range_is_half_open() {
        let mut row = StoredRow::default();
        for ts in [1000, 2000, 3000] {
            row.set_cell("f", b"q", ts, vec![]);
        }
        row.delete_cells("f", b"q", 2000, 3000);
        let ts: Vec<_> = row.read_cells().iter().map(|c| c.ts).collect();
        assert_eq!(ts, vec![3000, 1000]);
        row.delete_cells("f", b"q", 0, 0);
        assert!(row.families.is_empty());
    }
}
