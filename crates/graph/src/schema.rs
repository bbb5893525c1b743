//! The Bigtable layout of a graph: families, columns, row keys and cell encodings.
//! `docs/graph-layout.md` explains the choices.

use cg_bigtable::gc;
use cg_bigtable::proto::admin::GcRule;
use cg_ids::Geometry;

use crate::GraphError;

/// Cells written once: children, edges, cross-chunk edges, metadata, op-log entries.
pub const IMMUTABLE: &str = "0";
/// Cells that get a new version per edit: parents, edge states, lineage, op status.
pub const VERSIONED: &str = "1";
/// Root locks.
pub const LOCKS: &str = "2";
/// Counters (ReadModifyWrite, 8-byte big-endian).
pub const COUNTERS: &str = "3";

pub const CHILDREN: &[u8] = b"children";
pub const PARENT: &[u8] = b"parent";
/// Atomic cross-chunk edges of a node, with the layer at which each becomes internal.
pub const CROSS_EDGES: &[u8] = b"cx";
/// A supervoxel's edges (those whose smaller endpoint it is): partner, affinity, area.
pub const EDGES: &[u8] = b"edges";
/// Bitmap over [`EDGES`]: which edges are active.
pub const EDGE_STATE: &[u8] = b"active";
/// Edges added by proofreaders where the data had none (on the smaller end's row): the
/// whole list, one version per edit that changed it.
pub const USER_EDGES: &[u8] = b"user_edges";
/// On an op-log row: the edit's row mutations, written before any of them is applied, so an
/// interrupted edit can be finished by whoever finds it.
pub const PLAN: &[u8] = b"plan";
/// On an op-log row: `pending` until every row of the plan is written, then `done`.
pub const STATUS: &[u8] = b"status";
/// On an op-log row: the roots the edit is about to lock, written before it locks them (with
/// status `locking`), so the locks of an edit that dies before its plan can be released.
pub const LOCKING: &[u8] = b"locking";
/// Lineage: the nodes that replaced this one.
pub const NEW_PARENTS: &[u8] = b"new_parents";
/// Lineage: the nodes this one replaced.
pub const FORMER_PARENTS: &[u8] = b"former_parents";
/// The operation that created this node.
pub const OPERATION: &[u8] = b"operation";
pub const LOCK: &[u8] = b"lock";
pub const COUNTER: &[u8] = b"counter";
/// On a chunk's counter row: the nodes the ingest left without a parent, for the layer above.
pub const PENDING: &[u8] = b"pending";
/// On a chunk's counter row: written last by the ingest; the chunk is complete.
pub const DONE: &[u8] = b"done";
pub const META: &[u8] = b"meta";
pub const ENTRY: &[u8] = b"entry";

pub const META_KEY: &[u8] = b"meta";
pub const OPERATION_COUNTER_KEY: &[u8] = b"ioperations";
/// Op-log rows: this prefix and the operation ID's 20 digits.
pub const OPERATION_PREFIX: u8 = b'o';

/// The families of a graph table and their GC rules.
pub fn families() -> Vec<(&'static str, GcRule)> {
    vec![
        (IMMUTABLE, gc::keep_all()),
        (VERSIONED, gc::keep_all()),
        (LOCKS, gc::max_versions(1)),
        (COUNTERS, gc::max_versions(1)),
    ]
}

/// The graph's metadata, stored as JSON in the `meta` row.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    /// Layout version of this table.
    pub format: u32,
    pub geometry: Geometry,
    /// Timestamp (µs, whole ms) of every cell the ingest writes, so a re-run rewrites
    /// identical cells.
    pub ingest_timestamp_micros: i64,
    /// Where the supervoxel volume and meshes live (a path or URL), if known.
    #[serde(default)]
    pub data_dir: Option<String>,
    /// Free-form description.
    #[serde(default)]
    pub description: String,
}

pub const FORMAT: u32 = 1;

pub fn op_key(op: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(21);
    k.push(OPERATION_PREFIX);
    k.extend_from_slice(&cg_ids::row_key(op));
    k
}

pub fn encode_ids(ids: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ids.len() * 8);
    for id in ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

pub fn decode_ids(bytes: &[u8]) -> Result<Vec<u64>, GraphError> {
    if !bytes.len().is_multiple_of(8) {
        return Err(GraphError::Corrupt(format!(
            "an ID list of {} bytes is not a multiple of 8",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect())
}

pub fn decode_id(bytes: &[u8]) -> Result<u64, GraphError> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| GraphError::Corrupt(format!("an ID cell of {} bytes", bytes.len())))?;
    Ok(u64::from_le_bytes(arr))
}

/// An atomic cross-chunk edge seen from one node: `here` is under the node, `there` is not,
/// and the two first share a chunk at `layer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CrossEdge {
    pub layer: u8,
    pub here: u64,
    pub there: u64,
}

pub fn encode_cross_edges(edges: &[CrossEdge]) -> Vec<u8> {
    let mut out = Vec::with_capacity(edges.len() * 17);
    for e in edges {
        out.push(e.layer);
        out.extend_from_slice(&e.here.to_le_bytes());
        out.extend_from_slice(&e.there.to_le_bytes());
    }
    out
}

pub fn decode_cross_edges(bytes: &[u8]) -> Result<Vec<CrossEdge>, GraphError> {
    if !bytes.len().is_multiple_of(17) {
        return Err(GraphError::Corrupt(format!(
            "a cross-edge list of {} bytes is not a multiple of 17",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(17)
        .map(|c| CrossEdge {
            layer: c[0],
            here: u64::from_le_bytes(c[1..9].try_into().unwrap_or([0; 8])),
            there: u64::from_le_bytes(c[9..17].try_into().unwrap_or([0; 8])),
        })
        .collect())
}

/// One stored supervoxel edge, as kept on the row of its smaller endpoint.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StoredEdge {
    pub partner: u64,
    /// Mean affinity; infinite for a cross-chunk edge (one object cut by a chunk face).
    pub affinity: f32,
    /// Contact area in voxel faces.
    pub area: u32,
}

pub fn encode_edges(edges: &[StoredEdge]) -> Vec<u8> {
    let mut out = Vec::with_capacity(edges.len() * 16);
    for e in edges {
        out.extend_from_slice(&e.partner.to_le_bytes());
        out.extend_from_slice(&e.affinity.to_le_bytes());
        out.extend_from_slice(&e.area.to_le_bytes());
    }
    out
}

pub fn decode_edges(bytes: &[u8]) -> Result<Vec<StoredEdge>, GraphError> {
    if !bytes.len().is_multiple_of(16) {
        return Err(GraphError::Corrupt(format!(
            "an edge list of {} bytes is not a multiple of 16",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(16)
        .map(|c| StoredEdge {
            partner: u64::from_le_bytes(c[0..8].try_into().unwrap_or([0; 8])),
            affinity: f32::from_le_bytes(c[8..12].try_into().unwrap_or([0; 4])),
            area: u32::from_le_bytes(c[12..16].try_into().unwrap_or([0; 4])),
        })
        .collect())
}

pub fn encode_bits(bits: &[bool]) -> Vec<u8> {
    let mut out = vec![0u8; bits.len().div_ceil(8)];
    for (i, &b) in bits.iter().enumerate() {
        if b {
            out[i / 8] |= 1 << (i % 8);
        }
    }
    out
}

pub fn bit(bytes: &[u8], i: usize) -> bool {
    bytes.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

/// A proofreader's edge, as kept on its smaller end's row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserEdge {
    pub partner: u64,
    pub active: bool,
}

pub fn encode_user_edges(edges: &[UserEdge]) -> Vec<u8> {
    let mut out = Vec::with_capacity(edges.len() * 9);
    for e in edges {
        out.extend_from_slice(&e.partner.to_le_bytes());
        out.push(u8::from(e.active));
    }
    out
}

pub fn decode_user_edges(bytes: &[u8]) -> Result<Vec<UserEdge>, GraphError> {
    if !bytes.len().is_multiple_of(9) {
        return Err(GraphError::Corrupt(format!(
            "a user-edge list of {} bytes is not a multiple of 9",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(9)
        .map(|c| UserEdge {
            partner: u64::from_le_bytes(c[0..8].try_into().unwrap_or([0; 8])),
            active: c[8] != 0,
        })
        .collect())
}

/// A pending node: built, but its parent belongs to a layer above the one that built it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingNode {
    pub id: u64,
    /// Its cross-chunk edges that become internal above its layer.
    pub cross: Vec<CrossEdge>,
}

pub fn encode_pending(nodes: &[PendingNode]) -> Vec<u8> {
    let mut out = Vec::new();
    for n in nodes {
        out.extend_from_slice(&n.id.to_le_bytes());
        out.extend_from_slice(&(n.cross.len() as u32).to_le_bytes());
        out.extend_from_slice(&encode_cross_edges(&n.cross));
    }
    out
}

pub fn decode_pending(mut bytes: &[u8]) -> Result<Vec<PendingNode>, GraphError> {
    let bad = || GraphError::Corrupt("truncated pending-node list".into());
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 12 {
            return Err(bad());
        }
        let id = u64::from_le_bytes(bytes[0..8].try_into().map_err(|_| bad())?);
        let n = u32::from_le_bytes(bytes[8..12].try_into().map_err(|_| bad())?) as usize;
        let end = 12 + n * 17;
        if bytes.len() < end {
            return Err(bad());
        }
        out.push(PendingNode {
            id,
            cross: decode_cross_edges(&bytes[12..end])?,
        });
        bytes = &bytes[end..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codecs_round_trip() {
        let ids = vec![1, u64::MAX, 42];
        assert_eq!(decode_ids(&encode_ids(&ids)).unwrap(), ids);
        let cx = vec![CrossEdge {
            layer: 4,
            here: 7,
            there: 9,
        }];
        assert_eq!(decode_cross_edges(&encode_cross_edges(&cx)).unwrap(), cx);
        let edges = vec![StoredEdge {
            partner: 5,
            affinity: f32::INFINITY,
            area: 12,
        }];
        assert_eq!(decode_edges(&encode_edges(&edges)).unwrap(), edges);
        let bits = [true, false, true, true, false, false, false, false, true];
        let enc = encode_bits(&bits);
        assert_eq!(enc.len(), 2);
        for (i, &b) in bits.iter().enumerate() {
            assert_eq!(bit(&enc, i), b);
        }
        let pending = vec![
            PendingNode {
                id: 3,
                cross: cx.clone(),
            },
            PendingNode {
                id: 4,
                cross: vec![],
            },
        ];
        assert_eq!(decode_pending(&encode_pending(&pending)).unwrap(), pending);
        assert!(decode_pending(&[1, 2, 3]).is_err());
        assert!(decode_ids(&[1, 2, 3]).is_err());
        assert!(decode_edges(&[0; 15]).is_err());
    }
}
