//! The operation log: one JSON entry per edit, on row `o` + the operation ID's 20 digits.

use cg_bigtable::{filter, ReadRows};

use crate::schema;
use crate::{ChunkedGraph, GraphError, Result};

/// What an edit did, as recorded in the op log. Fields later layouts add are defaulted.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OperationEntry {
    pub operation_id: u64,
    /// The edit's timestamp (µs, whole ms): every cell it wrote carries it.
    pub timestamp_micros: i64,
    #[serde(default)]
    pub user: String,
    /// `merge`, `split`, `undo` or `redo`.
    #[serde(default)]
    pub kind: String,
    /// Roots the edit replaced.
    #[serde(default)]
    pub old_roots: Vec<u64>,
    /// Roots the edit created.
    #[serde(default)]
    pub new_roots: Vec<u64>,
    /// Supervoxel edges the edit activated.
    #[serde(default)]
    pub added_edges: Vec<[u64; 2]>,
    /// Supervoxel edges the edit deactivated.
    #[serde(default)]
    pub removed_edges: Vec<[u64; 2]>,
    #[serde(default, flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ChunkedGraph {
    /// Op-log entries whose timestamp lies in `[start, end)` (µs).
    pub async fn operations_between(&self, start: i64, end: i64) -> Result<Vec<OperationEntry>> {
        let rows = self
            .client()
            .read_rows_vec(
                self.table(),
                ReadRows::new()
                    .prefix(vec![schema::OPERATION_PREFIX])
                    .filter(filter::chain([
                        filter::column(schema::IMMUTABLE, schema::ENTRY),
                        filter::timestamp_range(start.max(0), end.max(0)),
                        filter::cells_per_column_limit(1),
                    ])),
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            if let Some(cell) = row.cell(schema::IMMUTABLE, schema::ENTRY) {
                let entry: OperationEntry = serde_json::from_slice(&cell.value).map_err(|e| {
                    GraphError::Corrupt(format!(
                        "op-log row {}: {e}",
                        String::from_utf8_lossy(&row.key)
                    ))
                })?;
                out.push(entry);
            }
        }
        Ok(out)
    }
}
