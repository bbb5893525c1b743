//! Reassembles rows from the ReadRows cell-chunk protocol.

use std::collections::VecDeque;

use crate::error::{Error, Result};
use crate::proto::v2::read_rows_response::{cell_chunk::RowStatus, CellChunk};
use crate::proto::v2::ReadRowsResponse;
use crate::row::{Cell, Column, Family, Row};

/// Never pre-allocate more than this on the strength of a `value_size` hint; a
/// corrupt hint must not be able to exhaust memory before any data arrives.
const MAX_VALUE_RESERVE: usize = 256 << 20;

#[derive(Debug)]
struct PartialCell {
    timestamp_micros: i64,
    labels: Vec<String>,
    value: Vec<u8>,
}

#[derive(Debug)]
struct PartialRow {
    key: Vec<u8>,
    families: Vec<Family>,
    // Chunks omit family and qualifier when unchanged, so the last ones seen carry over.
    family: String,
    qualifier: Vec<u8>,
    cell: Option<PartialCell>,
}

/// State machine over the chunks of one logical scan, across retries.
#[derive(Debug)]
pub(crate) struct RowMerger {
    reversed: bool,
    /// Last committed row key, or a later `last_scanned_row_key`: new rows must come after it.
    last_key: Option<Vec<u8>>,
    row: Option<PartialRow>,
}

fn violation<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::Protocol(msg.into()))
}

impl RowMerger {
    pub(crate) fn new(reversed: bool) -> Self {
        RowMerger {
            reversed,
            last_key: None,
            row: None,
        }
    }

    /// Where a resumed scan must pick up: rows up to and including this key are done.
    pub(crate) fn last_key(&self) -> Option<&[u8]> {
        self.last_key.as_deref()
    }

    /// Drops a row the stream never committed (the stream broke and will be retried).
    pub(crate) fn abandon_row(&mut self) {
        self.row = None;
    }

    /// Call when the stream ends cleanly: a row left open means the server cut it short.
    pub(crate) fn finish(&self) -> Result<()> {
        match &self.row {
            None => Ok(()),
            Some(r) => violation(format!(
                "stream ended inside row {:?} without commit_row",
                String::from_utf8_lossy(&r.key)
            )),
        }
    }

    /// Consumes one response, appending every row it completes to `out`.
    pub(crate) fn push(&mut self, resp: ReadRowsResponse, out: &mut VecDeque<Row>) -> Result<()> {
        for chunk in resp.chunks {
            if let Some(row) = self.push_chunk(chunk)? {
                out.push_back(row);
            }
        }
        if !resp.last_scanned_row_key.is_empty() && self.row.is_none() {
            let key = resp.last_scanned_row_key;
            match &self.last_key {
                Some(last) if key == *last => {}
                Some(last) if !self.in_order(&key, last) => {
                    return violation("last_scanned_row_key moves backwards");
                }
                _ => self.last_key = Some(key),
            }
        }
        Ok(())
    }

    fn in_order(&self, key: &[u8], last: &[u8]) -> bool {
        if self.reversed {
            key < last
        } else {
            key > last
        }
    }

    fn push_chunk(&mut self, chunk: CellChunk) -> Result<Option<Row>> {
        let commit = match chunk.row_status {
            Some(RowStatus::ResetRow(true)) => {
                self.reset(&chunk)?;
                return Ok(None);
            }
            Some(RowStatus::CommitRow(c)) => c,
            _ => false,
        };
        if chunk.value_size < 0 {
            return violation("negative value_size");
        }
        let split = chunk.value_size > 0;
        if split && commit {
            return violation("commit_row on a chunk whose cell continues");
        }

        match &mut self.row {
            Some(row) => match &mut row.cell {
                Some(cell) => {
                    if !chunk.row_key.is_empty()
                        || chunk.family_name.is_some()
                        || chunk.qualifier.is_some()
                        || chunk.timestamp_micros != 0
                        || !chunk.labels.is_empty()
                    {
                        return violation("continuation of a split cell repeats cell key fields");
                    }
                    cell.value.extend_from_slice(&chunk.value);
                }
                None => {
                    if !chunk.row_key.is_empty() && chunk.row_key != row.key {
                        return violation("row key changed before commit_row");
                    }
                    match (chunk.family_name, chunk.qualifier) {
                        (Some(f), Some(q)) => {
                            row.family = f;
                            row.qualifier = q;
                        }
                        (Some(_), None) => return violation("new family without a qualifier"),
                        (None, Some(q)) => row.qualifier = q,
                        (None, None) => {}
                    }
                    row.cell = Some(PartialCell {
                        timestamp_micros: chunk.timestamp_micros,
                        labels: chunk.labels,
                        value: chunk.value,
                    });
                }
            },
            None => {
                if chunk.row_key.is_empty() {
                    return violation("new row without a row key");
                }
                if let Some(last) = &self.last_key {
                    if !self.in_order(&chunk.row_key, last) {
                        return violation(format!(
                            "row key {:?} out of order",
                            String::from_utf8_lossy(&chunk.row_key)
                        ));
                    }
                }
                let (Some(family), Some(qualifier)) = (chunk.family_name, chunk.qualifier) else {
                    return violation("new row without family and qualifier");
                };
                self.row = Some(PartialRow {
                    key: chunk.row_key,
                    families: Vec::new(),
                    family,
                    qualifier,
                    cell: Some(PartialCell {
                        timestamp_micros: chunk.timestamp_micros,
                        labels: chunk.labels,
                        value: chunk.value,
                    }),
                });
            }
        }

        let Some(row) = self.row.as_mut() else {
            return violation("internal: no row in progress");
        };
        if split {
            if let Some(cell) = row.cell.as_mut() {
                let want = usize::try_from(chunk.value_size)
                    .unwrap_or(0)
                    .min(MAX_VALUE_RESERVE);
                cell.value.reserve(want.saturating_sub(cell.value.len()));
            }
            return Ok(None);
        }
        if let Some(cell) = row.cell.take() {
            row.add_cell(cell);
        }
        if !commit {
            return Ok(None);
        }
        let Some(row) = self.row.take() else {
            return violation("internal: no row in progress");
        };
        self.last_key = Some(row.key.clone());
        Ok(Some(Row {
            key: row.key,
            families: row.families,
        }))
    }

    fn reset(&mut self, chunk: &CellChunk) -> Result<()> {
        if self.row.is_none() {
            return violation("reset_row with no row in progress");
        }
        if !chunk.row_key.is_empty()
            || chunk.family_name.is_some()
            || chunk.qualifier.is_some()
            || chunk.timestamp_micros != 0
            || !chunk.labels.is_empty()
            || !chunk.value.is_empty()
            || chunk.value_size != 0
        {
            return violation("reset_row chunk carries cell data");
        }
        self.row = None;
        Ok(())
    }
}

impl PartialRow {
    fn add_cell(&mut self, cell: PartialCell) {
        let cell = Cell {
            timestamp_micros: cell.timestamp_micros,
            value: cell.value,
            labels: cell.labels,
        };
        let fi = match self.families.iter().rposition(|f| f.name == self.family) {
            Some(i) => i,
            None => {
                self.families.push(Family {
                    name: self.family.clone(),
                    columns: Vec::new(),
                });
                self.families.len() - 1
            }
        };
        let family = &mut self.families[fi];
        match family.columns.last_mut() {
            Some(col) if col.qualifier == self.qualifier => col.cells.push(cell),
            _ => family.columns.push(Column {
                qualifier: self.qualifier.clone(),
                cells: vec![cell],
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test chunk: `row_key`, optional family/qualifier, ts, value.
    fn chunk(key: &str, fam: Option<&str>, q: Option<&str>, ts: i64, val: &str) -> CellChunk {
        CellChunk {
            row_key: key.as_bytes().to_vec(),
            family_name: fam.map(str::to_owned),
            qualifier: q.map(|q| q.as_bytes().to_vec()),
            timestamp_micros: ts,
            labels: vec![],
            value: val.as_bytes().to_vec(),
            value_size: 0,
            row_status: None,
        }
    }

    fn commit(mut c: CellChunk) -> CellChunk {
        c.row_status = Some(RowStatus::CommitRow(true));
        c
    }

    fn split(mut c: CellChunk, total: i32) -> CellChunk {
        c.value_size = total;
        c
    }

    fn cont(val: &str) -> CellChunk {
        chunk("", None, None, 0, val)
    }

    fn reset() -> CellChunk {
        CellChunk {
            row_status: Some(RowStatus::ResetRow(true)),
            ..Default::default()
        }
    }

    fn resp(chunks: Vec<CellChunk>) -> ReadRowsResponse {
        ReadRowsResponse {
            chunks,
            ..Default::default()
        }
    }

    fn run(reversed: bool, responses: Vec<Vec<CellChunk>>) -> Result<Vec<Row>> {
        let mut m = RowMerger::new(reversed);
        let mut out = VecDeque::new();
        for r in responses {
            m.push(resp(r), &mut out)?;
        }
        m.finish()?;
        Ok(out.into())
    }

    /// Flattens rows to (key, family, qualifier, ts, value, labels) for compact asserts.
    fn flat(rows: &[Row]) -> Vec<(String, String, String, i64, String, Vec<String>)> {
        let mut v = vec![];
        for r in rows {
            for f in &r.families {
                for c in &f.columns {
                    for cell in &c.cells {
                        v.push((
                            String::from_utf8_lossy(&r.key).into_owned(),
                            f.name.clone(),
                            String::from_utf8_lossy(&c.qualifier).into_owned(),
                            cell.timestamp_micros,
                            String::from_utf8_lossy(&cell.value).into_owned(),
                            cell.labels.clone(),
                        ));
                    }
                }
            }
        }
        v
    }

    fn t(
        k: &str,
        f: &str,
        q: &str,
        ts: i64,
        v: &str,
    ) -> (String, String, String, i64, String, Vec<String>) {
        (k.into(), f.into(), q.into(), ts, v.into(), vec![])
    }

    fn expect_err(reversed: bool, responses: Vec<Vec<CellChunk>>, needle: &str) {
        match run(reversed, responses) {
            Err(Error::Protocol(m)) => assert!(m.contains(needle), "error {m:?} lacks {needle:?}"),
            other => panic!("expected protocol error containing {needle:?}, got {other:?}"),
        }
    }

    #[test]
    fn single_cell() {
        let rows = run(
            false,
            vec![vec![commit(chunk(
                "RK",
                Some("A"),
                Some("C"),
                100,
                "value-VAL",
            ))]],
        )
        .unwrap();
        assert_eq!(flat(&rows), vec![t("RK", "A", "C", 100, "value-VAL")]);
    }

    #[test]
    fn empty_stream_and_empty_value() {
        assert!(run(false, vec![]).unwrap().is_empty());
        assert!(run(false, vec![vec![]]).unwrap().is_empty());
        let rows = run(
            false,
            vec![vec![commit(chunk("RK", Some("A"), Some(""), 0, ""))]],
        )
        .unwrap();
        assert_eq!(flat(&rows), vec![t("RK", "A", "", 0, "")]);
    }

    #[test]
    fn carries_family_and_qualifier() {
        let rows = run(
            false,
            vec![vec![
                chunk("RK", Some("A"), Some("C"), 100, "v1"),
                chunk("", None, None, 99, "v2"),
                chunk("", None, Some("D"), 98, "v3"),
                chunk("RK", Some("B"), Some("E"), 97, "v4"),
                commit(chunk("", None, None, 96, "v5")),
            ]],
        )
        .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            flat(&rows),
            vec![
                t("RK", "A", "C", 100, "v1"),
                t("RK", "A", "C", 99, "v2"),
                t("RK", "A", "D", 98, "v3"),
                t("RK", "B", "E", 97, "v4"),
                t("RK", "B", "E", 96, "v5"),
            ]
        );
        let r = &rows[0];
        assert_eq!(r.families.len(), 2);
        assert_eq!(r.families[0].columns.len(), 2);
        assert_eq!(r.families[0].columns[0].cells.len(), 2);
        assert_eq!(r.cell("B", b"E").map(|c| c.timestamp_micros), Some(97));
        assert_eq!(r.cell_count(), 5);
    }

    #[test]
    fn families_keep_arrival_order_and_regroup() {
        let rows = run(
            false,
            vec![vec![
                chunk("RK", Some("z"), Some("q"), 1, "a"),
                chunk("", Some("a"), Some("q"), 1, "b"),
                commit(chunk("", Some("z"), Some("r"), 1, "c")),
            ]],
        )
        .unwrap();
        let names: Vec<_> = rows[0].families.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["z", "a"]);
        assert_eq!(rows[0].families[0].columns.len(), 2);
    }

    #[test]
    fn split_value_across_chunks_and_responses() {
        let rows = run(
            false,
            vec![
                vec![split(chunk("RK", Some("A"), Some("C"), 100, "val"), 9)],
                vec![split(cont("ue-"), 9)],
                vec![commit(cont("VAL"))],
            ],
        )
        .unwrap();
        assert_eq!(flat(&rows), vec![t("RK", "A", "C", 100, "value-VAL")]);
    }

    #[test]
    fn split_value_then_more_cells() {
        let rows = run(
            false,
            vec![vec![
                split(chunk("RK", Some("A"), Some("C"), 100, "v"), 2),
                cont("1"),
                split(chunk("", None, Some("D"), 50, "w"), 2),
                commit(cont("2")),
            ]],
        )
        .unwrap();
        assert_eq!(
            flat(&rows),
            vec![t("RK", "A", "C", 100, "v1"), t("RK", "A", "D", 50, "w2")]
        );
    }

    #[test]
    fn huge_value_size_hint_is_capped() {
        let rows = run(
            false,
            vec![vec![
                split(chunk("RK", Some("A"), Some("C"), 1, "x"), i32::MAX),
                commit(cont("y")),
            ]],
        )
        .unwrap();
        assert_eq!(flat(&rows), vec![t("RK", "A", "C", 1, "xy")]);
    }

    #[test]
    fn labels_are_kept() {
        let mut c = chunk("RK", Some("A"), Some("C"), 1, "v");
        c.labels = vec!["L1".into()];
        let mut d = chunk("", None, None, 0, "w");
        d.labels = vec!["L2".into()];
        let rows = run(false, vec![vec![c, commit(d)]]).unwrap();
        let cells = &rows[0].families[0].columns[0].cells;
        assert_eq!(cells[0].labels, ["L1"]);
        assert_eq!(cells[1].labels, ["L2"]);
    }

    #[test]
    fn multiple_rows_in_one_response() {
        let rows = run(
            false,
            vec![
                vec![
                    commit(chunk("RK1", Some("A"), Some("C"), 100, "v1")),
                    commit(chunk("RK2", Some("A"), Some("C"), 100, "v2")),
                    chunk("RK3", Some("B"), Some("D"), 1, "v3"),
                ],
                vec![commit(chunk("", None, None, 0, "v4"))],
            ],
        )
        .unwrap();
        assert_eq!(
            flat(&rows),
            vec![
                t("RK1", "A", "C", 100, "v1"),
                t("RK2", "A", "C", 100, "v2"),
                t("RK3", "B", "D", 1, "v3"),
                t("RK3", "B", "D", 0, "v4"),
            ]
        );
    }

    #[test]
    fn reset_discards_partial_row() {
        let rows = run(
            false,
            vec![vec![
                chunk("RK", Some("A"), Some("C"), 100, "stale"),
                reset(),
                commit(chunk("RK", Some("A"), Some("C"), 101, "fresh")),
            ]],
        )
        .unwrap();
        assert_eq!(flat(&rows), vec![t("RK", "A", "C", 101, "fresh")]);
    }

    #[test]
    fn reset_inside_split_cell_then_other_row() {
        let rows = run(
            false,
            vec![
                vec![split(chunk("RK", Some("A"), Some("C"), 1, "ab"), 4)],
                vec![reset()],
                vec![commit(chunk("RK2", Some("B"), Some("D"), 2, "x"))],
            ],
        )
        .unwrap();
        assert_eq!(flat(&rows), vec![t("RK2", "B", "D", 2, "x")]);
    }

    #[test]
    fn reset_then_resumes_carryover_from_new_row() {
        // After a reset the next chunk starts a new row and must name family and qualifier.
        expect_err(
            false,
            vec![vec![
                chunk("RK", Some("A"), Some("C"), 1, "v"),
                reset(),
                commit(chunk("RK", None, None, 1, "v")),
            ]],
            "without family",
        );
    }

    #[test]
    fn reversed_rows_descend() {
        let rows = run(
            true,
            vec![vec![
                commit(chunk("RK3", Some("A"), Some("C"), 1, "a")),
                commit(chunk("RK2", Some("A"), Some("C"), 1, "b")),
            ]],
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        expect_err(
            true,
            vec![vec![
                commit(chunk("RK2", Some("A"), Some("C"), 1, "a")),
                commit(chunk("RK3", Some("A"), Some("C"), 1, "b")),
            ]],
            "out of order",
        );
    }

    #[test]
    fn last_scanned_row_key_advances_resume_point() {
        let mut m = RowMerger::new(false);
        let mut out = VecDeque::new();
        m.push(
            resp(vec![commit(chunk("a", Some("A"), Some("C"), 1, "v"))]),
            &mut out,
        )
        .unwrap();
        assert_eq!(m.last_key(), Some(&b"a"[..]));
        m.push(
            ReadRowsResponse {
                last_scanned_row_key: b"m".to_vec(),
                ..Default::default()
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(m.last_key(), Some(&b"m"[..]));
        // A row at or before the scanned key would be a duplicate.
        let err = m.push(
            resp(vec![commit(chunk("k", Some("A"), Some("C"), 1, "v"))]),
            &mut out,
        );
        assert!(matches!(err, Err(Error::Protocol(_))));
        // Scanned key going backwards is a violation too.
        let mut m = RowMerger::new(false);
        m.push(
            resp(vec![commit(chunk("m", Some("A"), Some("C"), 1, "v"))]),
            &mut out,
        )
        .unwrap();
        let err = m.push(
            ReadRowsResponse {
                last_scanned_row_key: b"b".to_vec(),
                ..Default::default()
            },
            &mut out,
        );
        assert!(matches!(err, Err(Error::Protocol(_))));
    }

    #[test]
    fn abandon_row_allows_restart_of_same_key() {
        let mut m = RowMerger::new(false);
        let mut out = VecDeque::new();
        m.push(
            resp(vec![commit(chunk("a", Some("A"), Some("C"), 1, "v"))]),
            &mut out,
        )
        .unwrap();
        m.push(
            resp(vec![chunk("b", Some("A"), Some("C"), 1, "partial")]),
            &mut out,
        )
        .unwrap();
        assert!(m.finish().is_err());
        m.abandon_row();
        m.finish().unwrap();
        m.push(
            resp(vec![commit(chunk("b", Some("A"), Some("C"), 1, "whole"))]),
            &mut out,
        )
        .unwrap();
        assert_eq!(flat(&Vec::from(out))[1], t("b", "A", "C", 1, "whole"));
    }

    #[test]
    fn invalid_no_commit_at_end() {
        expect_err(
            false,
            vec![vec![chunk("RK", Some("A"), Some("C"), 1, "v")]],
            "without commit_row",
        );
        expect_err(
            false,
            vec![vec![split(chunk("RK", Some("A"), Some("C"), 1, "v"), 5)]],
            "without commit_row",
        );
    }

    #[test]
    fn invalid_no_commit_between_rows() {
        expect_err(
            false,
            vec![vec![
                chunk("RK", Some("A"), Some("C"), 1, "v"),
                commit(chunk("RK2", Some("A"), Some("C"), 1, "v")),
            ]],
            "row key changed",
        );
    }

    #[test]
    fn invalid_duplicate_or_backwards_row() {
        expect_err(
            false,
            vec![vec![
                commit(chunk("RK", Some("A"), Some("C"), 1, "v")),
                commit(chunk("RK", Some("A"), Some("C"), 1, "v")),
            ]],
            "out of order",
        );
        expect_err(
            false,
            vec![vec![
                commit(chunk("RK2", Some("A"), Some("C"), 1, "v")),
                commit(chunk("RK1", Some("A"), Some("C"), 1, "v")),
            ]],
            "out of order",
        );
    }

    #[test]
    fn invalid_new_row_missing_parts() {
        expect_err(
            false,
            vec![vec![commit(chunk("", Some("A"), Some("C"), 1, "v"))]],
            "without a row key",
        );
        expect_err(
            false,
            vec![vec![commit(chunk("RK", None, Some("C"), 1, "v"))]],
            "without family",
        );
        expect_err(
            false,
            vec![vec![commit(chunk("RK", Some("A"), None, 1, "v"))]],
            "without family",
        );
    }

    #[test]
    fn invalid_family_without_qualifier() {
        expect_err(
            false,
            vec![vec![
                chunk("RK", Some("A"), Some("C"), 1, "v"),
                commit(chunk("", Some("B"), None, 1, "v")),
            ]],
            "without a qualifier",
        );
    }

    #[test]
    fn invalid_reset() {
        expect_err(false, vec![vec![reset()]], "no row in progress");
        let mut bad = reset();
        bad.value = b"x".to_vec();
        expect_err(
            false,
            vec![vec![chunk("RK", Some("A"), Some("C"), 1, "v"), bad]],
            "carries cell data",
        );
        let mut bad = reset();
        bad.row_key = b"RK".to_vec();
        expect_err(
            false,
            vec![vec![chunk("RK", Some("A"), Some("C"), 1, "v"), bad]],
            "carries cell data",
        );
        // Committing a row then resetting: nothing is in progress any more.
        expect_err(
            false,
            vec![vec![
                commit(chunk("RK", Some("A"), Some("C"), 1, "v")),
                reset(),
            ]],
            "no row in progress",
        );
    }

    #[test]
    fn invalid_commit_inside_split_cell() {
        expect_err(
            false,
            vec![vec![commit(split(
                chunk("RK", Some("A"), Some("C"), 1, "v"),
                5,
            ))]],
            "cell continues",
        );
        expect_err(
            false,
            vec![vec![
                split(chunk("RK", Some("A"), Some("C"), 1, "v"), 5),
                commit(split(cont("w"), 5)),
            ]],
            "cell continues",
        );
    }

    #[test]
    fn invalid_continuation_with_key_fields() {
        for bad in [
            chunk("RK", None, None, 0, "x"),
            chunk("", Some("A"), None, 0, "x"),
            chunk("", None, Some("C"), 0, "x"),
            chunk("", None, None, 7, "x"),
        ] {
            expect_err(
                false,
                vec![vec![
                    split(chunk("RK", Some("A"), Some("C"), 1, "v"), 5),
                    commit(bad),
                ]],
                "repeats cell key",
            );
        }
        let mut bad = cont("x");
        bad.labels = vec!["l".into()];
        expect_err(
            false,
            vec![vec![
                split(chunk("RK", Some("A"), Some("C"), 1, "v"), 5),
                commit(bad),
            ]],
            "repeats cell key",
        );
    }

    #[test]
    fn invalid_negative_value_size() {
        expect_err(
            false,
            vec![vec![split(chunk("RK", Some("A"), Some("C"), 1, "v"), -1)]],
            "negative",
        );
    }
}
