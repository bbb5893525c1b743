//! How synapses sit in the graph's Bigtable table.
//!
//! | row key | family `s` | value |
//! |---|---|---|
//! | `s` + supervoxel ID (20 digits) | `o` + first synapse ID (u64 BE): synapses whose presynaptic point lies in this supervoxel | packed [`Record`]s |
//! | | `i` + first synapse ID: synapses whose postsynaptic point lies in it | packed records |
//! | | either of those + `r` | root hints: the partner supervoxel's root when the records were written (u64 LE, one per record) |
//!
//! Each record is stored twice, on the rows of both its supervoxels, so one read of a
//! root's supervoxel rows gives every synapse of the root with both points and the partner
//! supervoxel. Supervoxel IDs carry their chunk in the high bits, so the synapses of one
//! supervoxel chunk are one contiguous key range (`s` + chunk range) as well.
//!
//! A write groups its synapses by supervoxel and side and stores each group, sorted by ID,
//! in cells of at most [`RECORDS_PER_CELL`] records, named by the group's first ID: writing
//! the same synapses again rewrites the same cells (the family keeps one version), and
//! writing other synapses adds cells next to them.
//!
//! Root hints spare most root lookups: a hinted root that is still a root at the query's
//! time T is the partner's root at T (see `ChunkedGraph::current_at`); a stale hint (an edit
//! replaced that root, or T is before it was made) falls back to the walk up the graph. A
//! records cell without a hints cell of the same length has no hints.

use crate::{Result, SynapseError};

/// The synapse family (one version per cell).
pub const FAMILY: &str = "s";
pub const ROW_PREFIX: u8 = b's';
/// Column prefix: the row's supervoxel is the presynaptic (output) side.
pub const PRE: u8 = b'o';
/// Column prefix: the row's supervoxel is the postsynaptic (input) side.
pub const POST: u8 = b'i';
/// Records per cell (48 bytes each: cells stay under 200 KiB).
pub const RECORDS_PER_CELL: usize = 4096;
pub const RECORD_BYTES: usize = 48;
/// Qualifier suffix of a records cell's root hints.
pub const HINTS: u8 = b'r';

pub fn row_key(sv: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + cg_ids::ROW_KEY_LEN);
    k.push(ROW_PREFIX);
    k.extend_from_slice(&cg_ids::row_key(sv));
    k
}

pub fn parse_row_key(key: &[u8]) -> Result<u64> {
    match key.split_first() {
        Some((&ROW_PREFIX, rest)) => cg_ids::parse_row_key(rest)
            .map_err(|e| SynapseError::Corrupt(format!("synapse row key: {e}"))),
        _ => Err(SynapseError::Corrupt(format!(
            "{:?} is not a synapse row key",
            String::from_utf8_lossy(key)
        ))),
    }
}

pub fn qualifier(side: u8, first_id: u64) -> Vec<u8> {
    let mut q = Vec::with_capacity(9);
    q.push(side);
    q.extend_from_slice(&first_id.to_be_bytes());
    q
}

/// The qualifier of the root hints of the records cell `qualifier(side, first_id)`.
pub fn hints_qualifier(side: u8, first_id: u64) -> Vec<u8> {
    let mut q = qualifier(side, first_id);
    q.push(HINTS);
    q
}

/// What a column in the family holds: records or root hints on `side`, named by the
/// records cell's qualifier; `None` for a qualifier of neither shape.
pub fn parse_qualifier(q: &[u8]) -> Option<(u8, bool)> {
    match q {
        [side, _, _, _, _, _, _, _, _] => Some((*side, false)),
        [side, _, _, _, _, _, _, _, _, HINTS] => Some((*side, true)),
        _ => None,
    }
}

pub fn encode_hints(roots: &[u64]) -> Vec<u8> {
    roots.iter().flat_map(|r| r.to_le_bytes()).collect()
}

/// The hints of a records cell of `records` records; empty if they do not match it (a
/// records cell rewritten without hints keeps none).
pub fn decode_hints(bytes: &[u8], records: usize) -> Vec<u64> {
    if bytes.len() != records * 8 {
        return Vec::new();
    }
    bytes.chunks_exact(8).map(|c| u64_at(c, 0)).collect()
}

/// One synapse as stored on one of its supervoxels' rows; the row says which supervoxel
/// and the column which side it is on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Record {
    pub id: u64,
    /// The supervoxel on the other side.
    pub partner: u64,
    /// Points in voxels.
    pub pre: [i32; 3],
    pub post: [i32; 3],
    pub size: u32,
    pub score: f32,
}

pub fn encode_records(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.len() * RECORD_BYTES);
    for r in records {
        out.extend_from_slice(&r.id.to_le_bytes());
        out.extend_from_slice(&r.partner.to_le_bytes());
        for v in r.pre.iter().chain(&r.post) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&r.size.to_le_bytes());
        out.extend_from_slice(&r.score.to_le_bytes());
    }
    out
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Calls `f` for every record of a cell, without collecting them.
pub fn for_each_record(bytes: &[u8], mut f: impl FnMut(Record)) -> Result<()> {
    if !bytes.len().is_multiple_of(RECORD_BYTES) {
        return Err(SynapseError::Corrupt(format!(
            "a synapse cell of {} bytes is not a multiple of {RECORD_BYTES}",
            bytes.len()
        )));
    }
    for c in bytes.chunks_exact(RECORD_BYTES) {
        let i32_at = |at: usize| u32_at(c, at) as i32;
        f(Record {
            id: u64_at(c, 0),
            partner: u64_at(c, 8),
            pre: [i32_at(16), i32_at(20), i32_at(24)],
            post: [i32_at(28), i32_at(32), i32_at(36)],
            size: u32_at(c, 40),
            score: f32::from_bits(u32_at(c, 44)),
        });
    }
    Ok(())
}

pub fn decode_records(bytes: &[u8]) -> Result<Vec<Record>> {
    let mut out = Vec::with_capacity(bytes.len() / RECORD_BYTES);
    for_each_record(bytes, |r| out.push(r))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_keys_round_trip() {
        let r = Record {
            id: u64::MAX - 3,
            partner: 72057594037927937,
            pre: [1, -2, 3],
            post: [i32::MAX, 0, -7],
            size: 99,
            score: 0.25,
        };
        let bytes = encode_records(&[r, r]);
        assert_eq!(bytes.len(), 2 * RECORD_BYTES);
        assert_eq!(decode_records(&bytes).unwrap(), vec![r, r]);
        assert!(decode_records(&bytes[1..]).is_err());
        assert_eq!(parse_row_key(&row_key(12345)).unwrap(), 12345);
        assert!(parse_row_key(b"o00000000000000000001").is_err());
        // Big-endian qualifiers sort like the IDs.
        assert!(qualifier(PRE, 255) < qualifier(PRE, 256));
    }

    #[test]
    fn hints_round_trip_and_name_their_records_cell() {
        let hints = [7u64, 0, u64::MAX];
        assert_eq!(decode_hints(&encode_hints(&hints), 3), hints);
        // A hints cell that does not match its records cell gives none.
        assert!(decode_hints(&encode_hints(&hints), 2).is_empty());
        assert_eq!(parse_qualifier(&qualifier(POST, 9)), Some((POST, false)));
        assert_eq!(
            parse_qualifier(&hints_qualifier(POST, 9)),
            Some((POST, true))
        );
        assert_eq!(parse_qualifier(b"o12"), None);
        // The hints sort right after their records, inside the side's column range.
        assert!(hints_qualifier(PRE, 5) > qualifier(PRE, 5));
        assert!(hints_qualifier(PRE, 5) < qualifier(PRE, 6));
        assert!(hints_qualifier(PRE, u64::MAX) < vec![PRE + 1]);
    }
}
