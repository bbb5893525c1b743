//! Conformance: one set of scenarios runs against Google's emulator (cbtemulator) and ours.
//! Each scenario records what a client sees as canonical text; the two records must match.
//! Families are sorted within a row (cbtemulator's order is random) and server-assigned
//! timestamps are blanked. Where cbtemulator is known to be wrong (error codes), only
//! "it failed" is compared, and our exact codes are checked separately.

use std::collections::HashMap;

use admin::bigtable_table_admin_client::BigtableTableAdminClient;
use cg_tests::EmulatorProcess;
use googleapis_tonic_google_bigtable_admin_v2::google::bigtable::admin::v2 as admin;
use googleapis_tonic_google_bigtable_v2::google::bigtable::v2 as pb;
use pb::bigtable_client::BigtableClient;
use pb::row_filter::{Chain, Condition, Filter, Interleave};
use tonic::transport::Channel;

/// Family → printed cells of one row; a BTreeMap so families come out sorted.
type FamilyLines = std::collections::BTreeMap<String, Vec<String>>;

const PARENT: &str = "projects/conf/instances/i";

struct Client {
    data: BigtableClient<Channel>,
    admin: BigtableTableAdminClient<Channel>,
    table: String,
    log: Vec<String>,
}

fn f(filter: Filter) -> pb::RowFilter {
    pb::RowFilter {
        filter: Some(filter),
    }
}
fn chain(fs: Vec<pb::RowFilter>) -> pb::RowFilter {
    f(Filter::Chain(Chain { filters: fs }))
}
fn interleave(fs: Vec<pb::RowFilter>) -> pb::RowFilter {
    f(Filter::Interleave(Interleave { filters: fs }))
}
fn condition(
    p: pb::RowFilter,
    t: Option<pb::RowFilter>,
    e: Option<pb::RowFilter>,
) -> pb::RowFilter {
    f(Filter::Condition(Box::new(Condition {
        predicate_filter: Some(Box::new(p)),
        true_filter: t.map(Box::new),
        false_filter: e.map(Box::new),
    })))
}
fn set(fam: &str, q: &str, ts: i64, v: &[u8]) -> pb::Mutation {
    pb::Mutation {
        mutation: Some(pb::mutation::Mutation::SetCell(pb::mutation::SetCell {
            family_name: fam.into(),
            column_qualifier: q.as_bytes().to_vec(),
            timestamp_micros: ts,
            value: v.to_vec(),
        })),
    }
}
fn del_col(fam: &str, q: &str, range: Option<(i64, i64)>) -> pb::Mutation {
    pb::Mutation {
        mutation: Some(pb::mutation::Mutation::DeleteFromColumn(
            pb::mutation::DeleteFromColumn {
                family_name: fam.into(),
                column_qualifier: q.as_bytes().to_vec(),
                time_range: range.map(|(s, e)| pb::TimestampRange {
                    start_timestamp_micros: s,
                    end_timestamp_micros: e,
                }),
            },
        )),
    }
}
fn del_fam(fam: &str) -> pb::Mutation {
    pb::Mutation {
        mutation: Some(pb::mutation::Mutation::DeleteFromFamily(
            pb::mutation::DeleteFromFamily {
                family_name: fam.into(),
            },
        )),
    }
}
fn del_row() -> pb::Mutation {
    pb::Mutation {
        mutation: Some(pb::mutation::Mutation::DeleteFromRow(
            pb::mutation::DeleteFromRow {},
        )),
    }
}
fn range(start: Option<(&str, bool)>, end: Option<(&str, bool)>) -> pb::RowRange {
    use pb::row_range::{EndKey, StartKey};
    pb::RowRange {
        start_key: start.map(|(k, closed)| {
            if closed {
                StartKey::StartKeyClosed(k.into())
            } else {
                StartKey::StartKeyOpen(k.into())
            }
        }),
        end_key: end.map(|(k, closed)| {
            if closed {
                EndKey::EndKeyClosed(k.into())
            } else {
                EndKey::EndKeyOpen(k.into())
            }
        }),
    }
}

/// The `bigtable-features` header value advertising reverse scans, as official clients send.
fn features_header() -> String {
    use prost::Message;
    let flags = pb::FeatureFlags {
        reverse_scans: true,
        ..Default::default()
    };
    let bytes = flags.encode_to_vec();
    // base64url with padding (Go's decoder in cbtemulator insists on it), written out here.
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    out
}

fn show(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap_or_else(|_| {
        format!(
            "0x{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        )
    })
}

impl Client {
    async fn connect(p: &EmulatorProcess, table_id: &str) -> Client {
        let ch = tonic::transport::Endpoint::from_shared(p.endpoint())
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        Client {
            data: BigtableClient::new(ch.clone()),
            admin: BigtableTableAdminClient::new(ch),
            table: format!("{PARENT}/tables/{table_id}"),
            log: Vec::new(),
        }
    }

    fn note(&mut self, s: String) {
        self.log.push(s);
    }

    async fn mutate(&mut self, step: &str, key: &str, m: Vec<pb::Mutation>) {
        let r = self
            .data
            .mutate_row(pb::MutateRowRequest {
                table_name: self.table.clone(),
                row_key: key.into(),
                mutations: m,
                ..Default::default()
            })
            .await;
        self.note(format!(
            "{step}: {}",
            if r.is_ok() { "ok" } else { "error" }
        ));
    }

    async fn mutate_rows(&mut self, step: &str, entries: Vec<(&str, Vec<pb::Mutation>)>) {
        let req = pb::MutateRowsRequest {
            table_name: self.table.clone(),
            entries: entries
                .into_iter()
                .map(|(k, m)| pb::mutate_rows_request::Entry {
                    row_key: k.into(),
                    mutations: m,
                    idempotency: None,
                })
                .collect(),
            ..Default::default()
        };
        match self.data.mutate_rows(req).await {
            Ok(resp) => {
                let mut s = resp.into_inner();
                let mut statuses = Vec::new();
                while let Ok(Some(m)) = s.message().await {
                    for e in m.entries {
                        statuses.push((e.index, e.status.is_none_or(|s| s.code == 0)));
                    }
                }
                statuses.sort();
                self.note(format!("{step}: {statuses:?}"));
            }
            Err(_) => self.note(format!("{step}: error")),
        }
    }

    async fn read(
        &mut self,
        step: &str,
        rows: Option<pb::RowSet>,
        filter: Option<pb::RowFilter>,
        limit: i64,
        reversed: bool,
    ) {
        let mut req = tonic::Request::new(pb::ReadRowsRequest {
            table_name: self.table.clone(),
            rows,
            filter,
            rows_limit: limit,
            reversed,
            ..Default::default()
        });
        req.metadata_mut().insert(
            "bigtable-features",
            features_header().parse().expect("ascii header"),
        );
        let out = match self.data.read_rows(req).await {
            Err(_) => vec!["error {  }".to_string()],
            Ok(resp) => {
                let mut s = resp.into_inner();
                // Row key → family → lines; rebuilt from chunks, values joined across splits.
                let mut rows: Vec<(Vec<u8>, FamilyLines)> = Vec::new();
                let (mut fam, mut qual, mut ts, mut labels, mut value) =
                    (String::new(), Vec::new(), 0i64, Vec::new(), Vec::new());
                // Google's emulator repeats the row key on every chunk; a row ends at commit.
                let mut new_row = true;
                loop {
                    match s.message().await {
                        Ok(Some(m)) => {
                            for c in m.chunks {
                                if new_row {
                                    rows.push((c.row_key.clone(), Default::default()));
                                    new_row = false;
                                }
                                if matches!(
                                    c.row_status,
                                    Some(pb::read_rows_response::cell_chunk::RowStatus::CommitRow(
                                        true
                                    ))
                                ) {
                                    new_row = true;
                                }
                                if let Some(fname) = c.family_name {
                                    fam = fname;
                                }
                                if let Some(q) = c.qualifier {
                                    qual = q;
                                }
                                if value.is_empty() {
                                    ts = c.timestamp_micros;
                                    labels = c.labels.clone();
                                }
                                value.extend_from_slice(&c.value);
                                if c.value_size > 0 {
                                    continue;
                                }
                                // Server-assigned times differ; the scenario's own are small.
                                let when = if ts > 1_000_000_000_000 {
                                    "server".to_string()
                                } else {
                                    ts.to_string()
                                };
                                let line = format!(
                                    "{}:{} @{} {:?} = {}",
                                    fam,
                                    show(&qual),
                                    when,
                                    labels,
                                    show(&value)
                                );
                                if let Some((_, fams)) = rows.last_mut() {
                                    fams.entry(fam.clone()).or_default().push(line);
                                }
                                value.clear();
                            }
                        }
                        Ok(None) => break,
                        Err(_) => {
                            rows.push((b"error".to_vec(), Default::default()));
                            break;
                        }
                    }
                }
                rows.into_iter()
                    .map(|(k, fams)| {
                        format!(
                            "{} {{ {} }}",
                            show(&k),
                            fams.into_values().flatten().collect::<Vec<_>>().join("; ")
                        )
                    })
                    .collect()
            }
        };
        self.note(format!("{step}:\n  {}", out.join("\n  ")));
    }
}

fn keys(ks: &[&str]) -> Option<pb::RowSet> {
    Some(pb::RowSet {
        row_keys: ks.iter().map(|k| k.as_bytes().to_vec()).collect(),
        row_ranges: vec![],
    })
}
fn ranges(rs: Vec<pb::RowRange>) -> Option<pb::RowSet> {
    Some(pb::RowSet {
        row_keys: vec![],
        row_ranges: rs,
    })
}

async fn create(c: &mut Client, table_id: &str) {
    let mut families = HashMap::new();
    let versions = |n| admin::ColumnFamily {
        gc_rule: Some(admin::GcRule {
            rule: Some(admin::gc_rule::Rule::MaxNumVersions(n)),
        }),
        value_type: None,
    };
    families.insert("cf1".to_string(), admin::ColumnFamily::default());
    families.insert("cf2".to_string(), versions(100));
    families.insert("meta".to_string(), admin::ColumnFamily::default());
    let r = c
        .admin
        .create_table(admin::CreateTableRequest {
            parent: PARENT.into(),
            table_id: table_id.into(),
            table: Some(admin::Table {
                column_families: families,
                ..Default::default()
            }),
            initial_splits: vec![],
        })
        .await;
    c.note(format!(
        "create table: {}",
        if r.is_ok() { "ok" } else { "error" }
    ));
    let t = c
        .admin
        .get_table(admin::GetTableRequest {
            name: c.table.clone(),
            view: 0,
        })
        .await;
    let mut fams: Vec<String> = t
        .map(|t| t.into_inner().column_families.into_keys().collect())
        .unwrap_or_default();
    fams.sort();
    c.note(format!("get table families: {fams:?}"));
}

/// The scenario. Everything a client can observe goes into `c.log`.
async fn scenario(c: &mut Client) {
    create(c, "t").await;

    // Writes: explicit millisecond timestamps so both servers agree.
    for (i, k) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        let v = format!("v{i}");
        c.mutate(
            &format!("set {k}"),
            k,
            vec![
                set("cf1", "x", 1000, v.as_bytes()),
                set("cf1", "y", 2000, b"yy"),
                set("cf2", "z", 3000, b"zz"),
            ],
        )
        .await;
    }
    c.mutate(
        "more versions",
        "a",
        vec![set("cf1", "x", 5000, b"new"), set("cf1", "x", 3000, b"mid")],
    )
    .await;
    c.mutate(
        "same timestamp replaces",
        "b",
        vec![set("cf1", "x", 1000, b"replaced")],
    )
    .await;
    c.mutate(
        "binary key and value",
        "k\u{1}\u{ff}",
        vec![set("meta", "bin", 1000, &[0, 1, 2, 255])],
    )
    .await;
    c.mutate_rows(
        "batch",
        vec![
            ("m1", vec![set("cf1", "x", 1000, b"m1")]),
            ("m2", vec![set("cf1", "x", 1000, b"m2")]),
            ("m1", vec![set("cf1", "y", 1000, b"m1y")]),
        ],
    )
    .await;
    c.mutate(
        "unknown family fails",
        "z",
        vec![set("nope", "x", 1000, b"v")],
    )
    .await;
    c.mutate("empty mutation list fails", "z", vec![]).await;
    c.mutate(
        "micros timestamp fails",
        "z",
        vec![set("cf1", "x", 1001, b"v")],
    )
    .await;

    c.read("full scan", None, None, 0, false).await;
    c.read(
        "row keys",
        keys(&["c", "a", "zz-missing", "a"]),
        None,
        0,
        false,
    )
    .await;
    c.read(
        "closed-open range",
        ranges(vec![range(Some(("b", true)), Some(("d", false)))]),
        None,
        0,
        false,
    )
    .await;
    c.read(
        "open-closed range",
        ranges(vec![range(Some(("b", false)), Some(("d", true)))]),
        None,
        0,
        false,
    )
    .await;
    c.read(
        "unbounded start",
        ranges(vec![range(None, Some(("c", false)))]),
        None,
        0,
        false,
    )
    .await;
    c.read(
        "overlapping ranges and keys",
        Some(pb::RowSet {
            row_keys: vec![b"m2".to_vec(), b"b".to_vec()],
            row_ranges: vec![
                range(Some(("a", true)), Some(("c", true))),
                range(Some(("b", true)), Some(("d", false))),
            ],
        }),
        None,
        0,
        false,
    )
    .await;
    c.read("rows limit", None, None, 2, false).await;
    c.read("reversed", None, None, 0, true).await;
    c.read(
        "reversed ranges with limit",
        ranges(vec![
            range(Some(("b", true)), Some(("m1", true))),
            range(Some(("a", true)), Some(("a", true))),
        ]),
        None,
        3,
        true,
    )
    .await;
    let filters: Vec<(&str, pb::RowFilter)> = vec![
        ("pass all", f(Filter::PassAllFilter(true))),
        ("block all", f(Filter::BlockAllFilter(true))),
        (
            "row key regex",
            f(Filter::RowKeyRegexFilter(b"[a-c]".to_vec())),
        ),
        (
            "row key regex is anchored",
            f(Filter::RowKeyRegexFilter(b"m".to_vec())),
        ),
        (
            "family regex",
            f(Filter::FamilyNameRegexFilter("cf.".into())),
        ),
        (
            "qualifier regex",
            f(Filter::ColumnQualifierRegexFilter(b"x|z".to_vec())),
        ),
        (
            "value regex",
            f(Filter::ValueRegexFilter(b"v[0-2]".to_vec())),
        ),
        (
            "column range",
            f(Filter::ColumnRangeFilter(pb::ColumnRange {
                family_name: "cf1".into(),
                start_qualifier: Some(pb::column_range::StartQualifier::StartQualifierOpen(
                    b"x".to_vec(),
                )),
                end_qualifier: None,
            })),
        ),
        (
            "timestamp range",
            f(Filter::TimestampRangeFilter(pb::TimestampRange {
                start_timestamp_micros: 2000,
                end_timestamp_micros: 5000,
            })),
        ),
        (
            "value range",
            f(Filter::ValueRangeFilter(pb::ValueRange {
                start_value: Some(pb::value_range::StartValue::StartValueClosed(
                    b"v1".to_vec(),
                )),
                end_value: Some(pb::value_range::EndValue::EndValueOpen(b"v4".to_vec())),
            })),
        ),
        ("cells per column", f(Filter::CellsPerColumnLimitFilter(1))),
        // Within one family: cbtemulator walks families in random map order across a row.
        (
            "cells per row limit",
            chain(vec![
                f(Filter::FamilyNameRegexFilter("cf1".into())),
                f(Filter::CellsPerRowLimitFilter(2)),
            ]),
        ),
        (
            "cells per row offset",
            chain(vec![
                f(Filter::FamilyNameRegexFilter("cf1".into())),
                f(Filter::CellsPerRowOffsetFilter(1)),
            ]),
        ),
        ("strip value", f(Filter::StripValueTransformer(true))),
        (
            "chain",
            chain(vec![
                f(Filter::FamilyNameRegexFilter("cf1".into())),
                f(Filter::CellsPerColumnLimitFilter(1)),
                f(Filter::StripValueTransformer(true)),
            ]),
        ),
        (
            "interleave keeps duplicates",
            interleave(vec![
                f(Filter::ColumnQualifierRegexFilter(b"x".to_vec())),
                f(Filter::FamilyNameRegexFilter("cf1".into())),
            ]),
        ),
        (
            "interleave with labels",
            interleave(vec![
                chain(vec![
                    f(Filter::ColumnQualifierRegexFilter(b"y".to_vec())),
                    f(Filter::ApplyLabelTransformer("why".into())),
                ]),
                chain(vec![
                    f(Filter::FamilyNameRegexFilter("cf2".into())),
                    f(Filter::ApplyLabelTransformer("two".into())),
                ]),
            ]),
        ),
        (
            "condition true branch",
            condition(
                f(Filter::ValueRegexFilter(b"new".to_vec())),
                Some(f(Filter::FamilyNameRegexFilter("cf2".into()))),
                Some(f(Filter::BlockAllFilter(true))),
            ),
        ),
        (
            "condition false branch",
            condition(
                f(Filter::ValueRegexFilter(b"nothing".to_vec())),
                Some(f(Filter::BlockAllFilter(true))),
                Some(f(Filter::ColumnQualifierRegexFilter(b"y".to_vec()))),
            ),
        ),
        (
            "condition without false branch",
            condition(
                f(Filter::RowKeyRegexFilter(b"a".to_vec())),
                Some(f(Filter::PassAllFilter(true))),
                None,
            ),
        ),
    ];
    for (name, filter) in filters {
        c.read(&format!("filter {name}"), None, Some(filter), 0, false)
            .await;
    }
    c.read(
        "invalid regex fails",
        None,
        Some(f(Filter::RowKeyRegexFilter(b"(".to_vec()))),
        0,
        false,
    )
    .await;

    // Deletes.
    c.mutate(
        "delete column range",
        "a",
        vec![del_col("cf1", "x", Some((3000, 6000)))],
    )
    .await;
    c.mutate("delete column", "b", vec![del_col("cf1", "y", None)])
        .await;
    c.mutate("delete family", "c", vec![del_fam("cf2")]).await;
    c.mutate("delete row", "d", vec![del_row()]).await;
    c.mutate(
        "delete then set in one mutation",
        "e",
        vec![del_row(), set("cf1", "x", 9000, b"fresh")],
    )
    .await;
    c.read("after deletes", None, None, 0, false).await;

    // CheckAndMutateRow.
    for (name, key, pred) in [
        (
            "predicate matches",
            "a",
            Some(f(Filter::ValueRegexFilter(b"v0".to_vec()))),
        ),
        (
            "predicate misses",
            "a",
            Some(f(Filter::ValueRegexFilter(b"zzz".to_vec()))),
        ),
        ("no predicate, row exists", "b", None),
        ("no predicate, row missing", "nothere", None),
    ] {
        let r = c
            .data
            .check_and_mutate_row(pb::CheckAndMutateRowRequest {
                table_name: c.table.clone(),
                row_key: key.into(),
                predicate_filter: pred,
                true_mutations: vec![set("meta", "cam", 1000, b"true")],
                false_mutations: vec![set("meta", "cam", 1000, b"false")],
                ..Default::default()
            })
            .await;
        let matched = r
            .map(|r| r.into_inner().predicate_matched.to_string())
            .unwrap_or_else(|_| "error".into());
        c.note(format!("check and mutate, {name}: {matched}"));
    }
    c.read(
        "after check and mutate",
        None,
        Some(f(Filter::FamilyNameRegexFilter("meta".into()))),
        0,
        false,
    )
    .await;

    // ReadModifyWrite: values compared, server timestamps blanked.
    use pb::read_modify_write_rule::Rule;
    for (name, key, rules) in [
        (
            "increment missing",
            "ctr",
            vec![(Rule::IncrementAmount(5), "n")],
        ),
        (
            "increment twice in one call",
            "ctr",
            vec![
                (Rule::IncrementAmount(-2), "n"),
                (Rule::IncrementAmount(10), "n"),
            ],
        ),
        (
            "append",
            "ctr",
            vec![
                (Rule::AppendValue(b"ab".to_vec()), "s"),
                (Rule::AppendValue(b"cd".to_vec()), "s"),
            ],
        ),
        (
            "increment a non-counter fails",
            "a",
            vec![(Rule::IncrementAmount(1), "y")],
        ),
    ] {
        let r = c
            .data
            .read_modify_write_row(pb::ReadModifyWriteRowRequest {
                table_name: c.table.clone(),
                row_key: key.into(),
                rules: rules
                    .into_iter()
                    .map(|(rule, q)| pb::ReadModifyWriteRule {
                        family_name: "cf1".into(),
                        column_qualifier: q.into(),
                        rule: Some(rule),
                    })
                    .collect(),
                ..Default::default()
            })
            .await;
        let out = match r {
            Err(_) => "error".to_string(),
            Ok(r) => {
                let row = r.into_inner().row.unwrap_or_default();
                let mut cells: Vec<String> = row
                    .families
                    .iter()
                    .flat_map(|fam| {
                        fam.columns.iter().flat_map(move |col| {
                            col.cells.iter().map(move |cell| {
                                format!(
                                    "{}:{}={}",
                                    fam.name,
                                    show(&col.qualifier),
                                    show(&cell.value)
                                )
                            })
                        })
                    })
                    .collect();
                cells.sort();
                cells.join(", ")
            }
        };
        c.note(format!("read-modify-write, {name}: {out}"));
    }
    c.read(
        "counter row, values only",
        keys(&["ctr"]),
        Some(f(Filter::CellsPerColumnLimitFilter(1))),
        0,
        false,
    )
    .await;
    // SampleRowKeys: both must answer; the samples themselves are server-specific.
    let r = c
        .data
        .sample_row_keys(pb::SampleRowKeysRequest {
            table_name: c.table.clone(),
            ..Default::default()
        })
        .await;
    let mut n = 0;
    if let Ok(resp) = r {
        let mut s = resp.into_inner();
        while let Ok(Some(_)) = s.message().await {
            n += 1;
        }
    }
    c.note(format!("sample row keys answered: {}", n > 0));

    // DropRowRange.
    let r = c
        .admin
        .drop_row_range(admin::DropRowRangeRequest {
            name: c.table.clone(),
            target: Some(admin::drop_row_range_request::Target::RowKeyPrefix(
                b"m".to_vec(),
            )),
        })
        .await;
    c.note(format!("drop prefix m: {}", r.is_ok()));
    c.read(
        "after drop prefix",
        None,
        Some(f(Filter::CellsPerColumnLimitFilter(1))),
        0,
        false,
    )
    .await;

    // Column family admin: a new family is writable; a dropped one is gone.
    let r = c
        .admin
        .modify_column_families(admin::ModifyColumnFamiliesRequest {
            name: c.table.clone(),
            modifications: vec![
                admin::modify_column_families_request::Modification {
                    id: "late".into(),
                    update_mask: None,
                    r#mod: Some(
                        admin::modify_column_families_request::modification::Mod::Create(
                            admin::ColumnFamily::default(),
                        ),
                    ),
                },
                admin::modify_column_families_request::Modification {
                    id: "cf2".into(),
                    update_mask: None,
                    r#mod: Some(
                        admin::modify_column_families_request::modification::Mod::Drop(true),
                    ),
                },
            ],
            ignore_warnings: false,
        })
        .await;
    let mut fams: Vec<String> = r
        .map(|t| t.into_inner().column_families.into_keys().collect())
        .unwrap_or_default();
    fams.sort();
    c.note(format!("modify families: {fams:?}"));
    c.mutate(
        "write new family",
        "a",
        vec![set("late", "q", 1000, b"late")],
    )
    .await;
    c.mutate(
        "write dropped family fails",
        "a",
        vec![set("cf2", "q", 1000, b"x")],
    )
    .await;
    c.read(
        "after family changes",
        keys(&["a", "b"]),
        Some(f(Filter::CellsPerColumnLimitFilter(1))),
        0,
        false,
    )
    .await;

    let r = c
        .admin
        .drop_row_range(admin::DropRowRangeRequest {
            name: c.table.clone(),
            target: Some(admin::drop_row_range_request::Target::DeleteAllDataFromTable(true)),
        })
        .await;
    c.note(format!("truncate: {}", r.is_ok()));
    c.read("after truncate", None, None, 0, false).await;

    let listed = c
        .admin
        .list_tables(admin::ListTablesRequest {
            parent: PARENT.into(),
            ..Default::default()
        })
        .await;
    let names: Vec<String> = listed
        .map(|l| l.into_inner().tables.into_iter().map(|t| t.name).collect())
        .unwrap_or_default();
    c.note(format!("list tables: {names:?}"));
    let r = c
        .admin
        .delete_table(admin::DeleteTableRequest {
            name: c.table.clone(),
        })
        .await;
    c.note(format!("delete table: {}", r.is_ok()));
    c.read("read deleted table fails", None, None, 0, false)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_match_between_google_and_ours() {
    let google = EmulatorProcess::google();
    let dir = tempfile::tempdir().expect("tempdir");
    let ours = EmulatorProcess::ours(dir.path(), &[]);

    let mut g = Client::connect(&google, "t").await;
    let mut o = Client::connect(&ours, "t").await;
    scenario(&mut g).await;
    scenario(&mut o).await;

    assert!(
        g.log.len() > 60,
        "the scenario recorded too little: {}",
        g.log.len()
    );
    let mut diffs = Vec::new();
    for (i, (a, b)) in g.log.iter().zip(&o.log).enumerate() {
        if a != b {
            diffs.push(format!("step {i}\n cbtemulator: {a}\n ours:        {b}"));
        }
    }
    assert_eq!(g.log.len(), o.log.len(), "different number of steps");
    assert!(
        diffs.is_empty(),
        "{} of {} steps differ:\n{}",
        diffs.len(),
        g.log.len(),
        diffs.join("\n")
    );
    eprintln!(
        "conformance: {} steps identical on cbtemulator and ours",
        g.log.len()
    );
}

/// Reverse scans return exactly the forward rows, backwards, and need the feature header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_scans_mirror_forward_scans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ours = EmulatorProcess::ours(dir.path(), &[]);
    let mut c = Client::connect(&ours, "t").await;
    create(&mut c, "t").await;
    for k in ["a", "b", "c", "d", "e", "f"] {
        c.mutate(
            "set",
            k,
            vec![
                set("cf1", "x", 1000, k.as_bytes()),
                set("cf2", "y", 2000, b"y"),
            ],
        )
        .await;
    }
    let set_ = ranges(vec![
        range(Some(("b", false)), Some(("e", true))),
        range(Some(("a", true)), Some(("a", true))),
    ]);
    c.log.clear();
    c.read("forward", set_.clone(), None, 0, false).await;
    c.read("reverse", set_.clone(), None, 0, true).await;
    c.read("reverse limited", set_, None, 2, true).await;
    let lines = |i: usize| {
        c.log[i]
            .lines()
            .skip(1)
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let forward = lines(0);
    let mut backward = lines(1);
    assert_eq!(forward.len(), 4, "{forward:?}");
    backward.reverse();
    assert_eq!(forward, backward);
    assert_eq!(lines(2), lines(1)[..2].to_vec());

    // Without the feature header, a reversed read is refused as Cloud Bigtable does.
    let err = c
        .data
        .read_rows(pb::ReadRowsRequest {
            table_name: c.table.clone(),
            reversed: true,
            ..Default::default()
        })
        .await;
    let err = match err {
        Err(e) => e,
        Ok(resp) => resp
            .into_inner()
            .message()
            .await
            .expect_err("refused without bigtable-features"),
    };
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

/// Where Google's emulator is wrong, ours must be right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_gives_precise_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ours = EmulatorProcess::ours(dir.path(), &["--enforce-limits"]);
    let mut c = Client::connect(&ours, "t").await;
    create(&mut c, "t").await;
    let code = |r: Result<tonic::Response<pb::MutateRowResponse>, tonic::Status>| {
        r.expect_err("must fail").code()
    };
    let req = |key: Vec<u8>, m: Vec<pb::Mutation>| pb::MutateRowRequest {
        table_name: c.table.clone(),
        row_key: key,
        mutations: m,
        ..Default::default()
    };
    let unknown = req(b"k".to_vec(), vec![set("nope", "q", 1000, b"v")]);
    let micros = req(b"k".to_vec(), vec![set("cf1", "q", 1001, b"v")]);
    let long_key = req(vec![b'k'; 4097], vec![set("cf1", "q", 1000, b"v")]);
    let empty = req(b"k".to_vec(), vec![]);
    assert_eq!(
        code(c.data.mutate_row(unknown).await),
        tonic::Code::NotFound
    );
    assert_eq!(
        code(c.data.mutate_row(micros).await),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        code(c.data.mutate_row(long_key).await),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        code(c.data.mutate_row(empty).await),
        tonic::Code::InvalidArgument
    );
    let missing = c
        .data
        .mutate_row(pb::MutateRowRequest {
            table_name: format!("{PARENT}/tables/missing"),
            row_key: b"k".to_vec(),
            mutations: vec![set("cf1", "q", 1000, b"v")],
            ..Default::default()
        })
        .await;
    assert_eq!(code(missing), tonic::Code::NotFound);
    let err = c
        .data
        .read_change_stream(pb::ReadChangeStreamRequest {
            table_name: c.table.clone(),
            ..Default::default()
        })
        .await
        .expect_err("unimplemented");
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    let dup = c
        .admin
        .create_table(admin::CreateTableRequest {
            parent: PARENT.into(),
            table_id: "t".into(),
            table: None,
            initial_splits: vec![],
        })
        .await;
    assert_eq!(
        dup.expect_err("duplicate").code(),
        tonic::Code::AlreadyExists
    );
}
