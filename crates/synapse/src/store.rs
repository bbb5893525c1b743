//! Writing synapses, and reading the rows of supervoxels.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use cg_bigtable::{filter, mutation, FamilyChange, ReadRows};
use cg_graph::query::RootQuery;
use cg_graph::ChunkedGraph;
use futures::{StreamExt, TryStreamExt};

use crate::schema::{self, Record};
use crate::{MappedSynapse, Result, SynapseError};

/// Rows per MutateRows / ReadRows request, and requests in flight.
const ROWS_PER_WRITE: usize = 2000;
const WRITES_IN_FLIGHT: usize = 4;
const KEYS_PER_READ: usize = 1000;
const READS_IN_FLIGHT: usize = 8;

/// The synapses of one graph. Cheap to clone.
#[derive(Clone)]
pub struct SynapseStore {
    graph: ChunkedGraph,
}

/// What a write did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteReport {
    pub synapses: u64,
    pub rows: u64,
    pub cells: u64,
}

impl SynapseStore {
    pub fn new(graph: ChunkedGraph) -> SynapseStore {
        SynapseStore { graph }
    }

    pub fn graph(&self) -> &ChunkedGraph {
        &self.graph
    }

    /// Adds the synapse family to the graph's table if it is missing (graphs are created
    /// without it). Needed once before the first write; reads work without it.
    pub async fn prepare(&self) -> Result<()> {
        let admin = self.graph.client().admin();
        let table = admin.get_table(self.graph.table()).await?;
        if table.column_families.contains_key(schema::FAMILY) {
            return Ok(());
        }
        let change = FamilyChange::Create(schema::FAMILY.into(), cg_bigtable::gc::max_versions(1));
        match admin
            .modify_column_families(self.graph.table(), vec![change])
            .await
        {
            Ok(_) => Ok(()),
            // Another writer added it first.
            Err(e) if e.code() == cg_bigtable::Code::AlreadyExists => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Stores synapses on the rows of their supervoxels (see [`schema`]), each with its
    /// partner's root now as a hint for queries. Synapses with a supervoxel 0 (a point
    /// outside every supervoxel) are refused: drop them first. Idempotent: writing the same
    /// batch again rewrites the same cells (with the hints of then).
    pub async fn write(&self, synapses: &[MappedSynapse]) -> Result<WriteReport> {
        let g = self.graph.geometry();
        for s in synapses {
            for sv in [s.pre_sv, s.post_sv] {
                g.check(sv).map_err(|e| {
                    SynapseError::InvalidInput(format!("synapse {}: supervoxel {sv}: {e}", s.id))
                })?;
                if cg_ids::layer_of(sv) != 1 {
                    return Err(SynapseError::InvalidInput(format!(
                        "synapse {}: {sv} is not a supervoxel",
                        s.id
                    )));
                }
            }
        }
        // Each record carries its partner's root now as a hint for queries (see `schema`).
        let mut svs: Vec<u64> = synapses
            .iter()
            .flat_map(|s| [s.pre_sv, s.post_sv])
            .collect();
        svs.sort_unstable();
        svs.dedup();
        let roots = self
            .graph
            .roots(
                &svs,
                &RootQuery {
                    fail_to_zero: true,
                    ..Default::default()
                },
            )
            .await?;
        let root_of: HashMap<u64, u64> = svs.into_iter().zip(roots).collect();
        let hint = |sv: u64| root_of.get(&sv).copied().unwrap_or(0);
        // (supervoxel, side) -> (record, partner's root) sorted by ID.
        let mut groups: BTreeMap<(u64, u8), Vec<(Record, u64)>> = BTreeMap::new();
        for s in synapses {
            let mut r = Record {
                id: s.id,
                partner: s.post_sv,
                pre: s.pre,
                post: s.post,
                size: s.size,
                score: s.score,
            };
            groups
                .entry((s.pre_sv, schema::PRE))
                .or_default()
                .push((r, hint(s.post_sv)));
            r.partner = s.pre_sv;
            groups
                .entry((s.post_sv, schema::POST))
                .or_default()
                .push((r, hint(s.pre_sv)));
        }
        let ts = self.graph.meta().ingest_timestamp_micros;
        let mut rows: Vec<(Vec<u8>, Vec<cg_bigtable::proto::v2::Mutation>)> = Vec::new();
        let mut report = WriteReport {
            synapses: synapses.len() as u64,
            ..Default::default()
        };
        let mut last_sv = None;
        for ((sv, side), mut recs) in groups {
            recs.sort_unstable_by_key(|r| r.0.id);
            let cells = recs.chunks(schema::RECORDS_PER_CELL).flat_map(|c| {
                let (records, hints): (Vec<Record>, Vec<u64>) = c.iter().copied().unzip();
                let first = records[0].id;
                [
                    mutation::set_cell(
                        schema::FAMILY,
                        schema::qualifier(side, first),
                        ts,
                        schema::encode_records(&records),
                    ),
                    mutation::set_cell(
                        schema::FAMILY,
                        schema::hints_qualifier(side, first),
                        ts,
                        schema::encode_hints(&hints),
                    ),
                ]
            });
            if last_sv != Some(sv) {
                rows.push((schema::row_key(sv), Vec::new()));
                last_sv = Some(sv);
            }
            if let Some(row) = rows.last_mut() {
                row.1.extend(cells);
            }
        }
        report.rows = rows.len() as u64;
        report.cells = rows.iter().map(|r| r.1.len() as u64).sum();
        let mut batches = Vec::new();
        while !rows.is_empty() {
            let rest = rows.split_off(rows.len().min(ROWS_PER_WRITE));
            batches.push(std::mem::replace(&mut rows, rest));
        }
        // Each request owns what it needs, so the stream is Send for any caller.
        futures::stream::iter(batches)
            .map(|batch| {
                let client = self.graph.client().clone();
                let table = self.graph.table().to_string();
                async move { client.mutate_rows(&table, batch).await }
            })
            .buffer_unordered(WRITES_IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(report)
    }

    /// The records on the rows of `svs` for `sides` (`PRE`, `POST` or both), calling `f`
    /// with each row's supervoxel, side, record and the record's root hint (0: none, and
    /// always without `hints`). Rows are read in parallel batches; `f` sees them in no
    /// particular order.
    pub(crate) async fn for_each_record(
        &self,
        svs: &[u64],
        sides: &[u8],
        hints: bool,
        mut f: impl FnMut(u64, u8, Record, u64),
    ) -> Result<()> {
        let mut keys: Vec<u64> = svs.to_vec();
        keys.sort_unstable();
        keys.dedup();
        let side_filter = |s: u8| {
            filter::column_range(
                schema::FAMILY,
                Bound::Included(vec![s]),
                Bound::Excluded(vec![s + 1]),
            )
        };
        let mut f_sides = match sides {
            [one] => side_filter(*one),
            _ => filter::family(schema::FAMILY),
        };
        if !hints {
            // Records qualifiers only (side + 8 bytes): their hints would be read for nothing.
            f_sides = filter::chain([f_sides, filter::qualifier_regex(&b"(?s).{9}"[..])]);
        }
        let batches: Vec<Vec<u64>> = keys.chunks(KEYS_PER_READ).map(<[u64]>::to_vec).collect();
        let mut reads = futures::stream::iter(batches)
            .map(|batch| {
                let read = ReadRows::new()
                    .keys(batch.iter().map(|&sv| schema::row_key(sv)))
                    .filter(f_sides.clone());
                let client = self.graph.client().clone();
                let table = self.graph.table().to_string();
                async move { client.read_rows_vec(&table, read).await }
            })
            .buffer_unordered(READS_IN_FLIGHT);
        while let Some(rows) = reads.next().await {
            for row in rows? {
                let sv = schema::parse_row_key(&row.key)?;
                for fam in &row.families {
                    // Hints cells by the qualifier of their records cell.
                    let hint_cells: HashMap<&[u8], &[u8]> = fam
                        .columns
                        .iter()
                        .filter(|c| schema::parse_qualifier(&c.qualifier).is_some_and(|q| q.1))
                        .filter_map(|c| {
                            let q = &c.qualifier[..c.qualifier.len() - 1];
                            Some((q, c.cells.first()?.value.as_slice()))
                        })
                        .collect();
                    for col in &fam.columns {
                        let Some((side, false)) = schema::parse_qualifier(&col.qualifier) else {
                            continue;
                        };
                        if !sides.contains(&side) {
                            continue;
                        }
                        if let Some(cell) = col.cells.first() {
                            let n = cell.value.len() / schema::RECORD_BYTES;
                            let h = hint_cells
                                .get(col.qualifier.as_slice())
                                .map(|b| schema::decode_hints(b, n))
                                .unwrap_or_default();
                            let mut i = 0;
                            schema::for_each_record(&cell.value, |r| {
                                f(sv, side, r, h.get(i).copied().unwrap_or(0));
                                i += 1;
                            })?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
