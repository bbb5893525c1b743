//! End-to-end against Google's emulator (cbtemulator), started on a free loopback
//! port. Missing emulator is a failure, not a skip.
//!
//! cbtemulator quirks this test tolerates: errors come back as UNKNOWN/INTERNAL
//! rather than precise codes, and family order within a row is random.

use std::net::{TcpListener, TcpStream};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cg_bigtable::mutation::{
    append_value, decode_i64, delete_from_column, delete_from_column_range, delete_from_family,
    delete_from_row, encode_i64, increment_amount, set_cell,
};
use cg_bigtable::{filter, gc, Client, Config, FamilyChange, ReadRows, Row, Target};
use futures::StreamExt as _;

const CBT_PATHS: &[&str] = &[
    "/usr/lib/google-cloud-sdk/platform/bigtable-emulator/cbtemulator",
    "/usr/share/google-cloud-sdk/platform/bigtable-emulator/cbtemulator",
];

struct Emulator {
    child: Child,
    addr: String,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cbtemulator() -> PathBuf {
    if let Some(p) = std::env::var_os("CBTEMULATOR") {
        return PathBuf::from(p);
    }
    CBT_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "cbtemulator not found (looked in {CBT_PATHS:?} and $CBTEMULATOR); \
                 install it with `apt-get install google-cloud-cli-bigtable-emulator`"
            )
        })
}

fn start_emulator() -> Emulator {
    let path = cbtemulator();
    assert!(
        Path::new(&path).exists(),
        "cbtemulator not found at {}; install it with `apt-get install google-cloud-cli-bigtable-emulator`",
        path.display()
    );
    // A port picked free may be taken by another test's emulator before ours binds it; then
    // ours exits and the probe below would reach the other one. Retry with a new port.
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free loopback port")
            .port();
        let child = Command::new(&path)
            .args(["-host", "127.0.0.1", "-port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", path.display()));
        let addr = format!("127.0.0.1:{port}");
        let mut emu = Emulator { child, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&emu.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "cbtemulator did not start listening on {}",
                emu.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(100));
        if matches!(emu.child.try_wait(), Ok(None)) {
            return emu;
        }
    }
    panic!("cbtemulator exited right after starting, 5 times (ports taken?)");
}

async fn client(emu: &Emulator) -> Client {
    Config::new(Target::Emulator(emu.addr.clone()))
        .connect()
        .await
        .expect("connect")
}

async fn table_with_families(c: &Client, table: &str) {
    c.admin()
        .create_table(
            table,
            &[
                ("f", gc::max_versions(5)),
                (
                    "g",
                    gc::union([gc::max_versions(1), gc::max_age(Duration::from_secs(3600))]),
                ),
            ],
        )
        .await
        .expect("create table");
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn keys(rows: &[Row]) -> Vec<String> {
    rows.iter().map(|r| s(&r.key)).collect()
}

fn values(row: &Row, family: &str, q: &[u8]) -> Vec<(i64, String)> {
    row.column(family, q)
        .map(|c| {
            c.cells
                .iter()
                .map(|c| (c.timestamp_micros, s(&c.value)))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn admin_lifecycle() {
    let emu = start_emulator();
    let c = client(&emu).await;
    let admin = c.admin();
    admin
        .create_table(
            "schema",
            &[
                ("f", gc::max_versions(3)),
                (
                    "g",
                    gc::union([gc::max_age(Duration::from_secs(60)), gc::max_versions(1)]),
                ),
                (
                    "h",
                    gc::intersection([gc::max_age(Duration::from_secs(60)), gc::max_versions(2)]),
                ),
            ],
        )
        .await
        .unwrap();
    admin
        .create_table("other", &[("f", gc::keep_all())])
        .await
        .unwrap();
    assert!(
        admin.create_table("other", &[]).await.is_err(),
        "duplicate create must fail"
    );

    let mut tables = admin.list_tables().await.unwrap();
    tables.sort();
    assert_eq!(tables, ["other", "schema"]);

    let t = admin.get_table("schema").await.unwrap();
    let mut fams: Vec<_> = t.column_families.keys().cloned().collect();
    fams.sort();
    assert_eq!(fams, ["f", "g", "h"]);
    assert_eq!(t.column_families["f"].gc_rule, Some(gc::max_versions(3)));

    let t = admin
        .modify_column_families(
            "schema",
            vec![
                FamilyChange::Create("n".into(), gc::max_versions(1)),
                FamilyChange::Update("f".into(), gc::max_versions(7)),
                FamilyChange::Drop("h".into()),
            ],
        )
        .await
        .unwrap();
    let mut fams: Vec<_> = t.column_families.keys().cloned().collect();
    fams.sort();
    assert_eq!(fams, ["f", "g", "n"]);
    let t = admin.get_table("schema").await.unwrap();
    assert_eq!(t.column_families["f"].gc_rule, Some(gc::max_versions(7)));

    admin.delete_table("other").await.unwrap();
    assert_eq!(admin.list_tables().await.unwrap(), ["schema"]);
    assert!(admin.get_table("other").await.is_err());
    admin.delete_table("schema").await.unwrap();
    assert!(admin.list_tables().await.unwrap().is_empty());
}

#[tokio::test]
async fn writes_reads_and_filters() {
    let emu = start_emulator();
    let c = client(&emu).await;
    table_with_families(&c, "t").await;

    // 50 rows: f:a has three versions, f:b one, g:c one.
    let entries: Vec<_> = (0..50)
        .map(|i| {
            let key = format!("row-{i:03}");
            let muts = vec![
                set_cell("f", "a", 1000, format!("a1-{i}")),
                set_cell("f", "a", 2000, format!("a2-{i}")),
                set_cell("f", "a", 3000, format!("a3-{i}")),
                set_cell("f", "b", 1000, if i % 2 == 0 { "even" } else { "odd" }),
                set_cell("g", "c", 5000, format!("g-{i}")),
            ];
            (key, muts)
        })
        .collect();
    c.mutate_rows("t", entries).await.unwrap();
    c.mutate_row("t", "solo", vec![set_cell("f", "a", 7000, "only")])
        .await
        .unwrap();

    // Full scan, streamed.
    let mut stream = c.read_rows("t", ReadRows::new());
    let mut n = 0;
    let mut prev: Option<Vec<u8>> = None;
    while let Some(row) = stream.next().await {
        let row = row.unwrap();
        if let Some(p) = &prev {
            assert!(*p < row.key);
        }
        prev = Some(row.key.clone());
        n += 1;
    }
    assert_eq!(n, 51);

    // Point read with all versions, newest first.
    let row = c.read_row("t", "row-007", None).await.unwrap().unwrap();
    assert_eq!(
        values(&row, "f", b"a"),
        [
            (3000, "a3-7".into()),
            (2000, "a2-7".into()),
            (1000, "a1-7".into())
        ]
    );
    assert_eq!(row.cell("g", b"c").map(|c| s(&c.value)), Some("g-7".into()));
    let mut fams: Vec<_> = row.families.iter().map(|f| f.name.clone()).collect();
    fams.sort();
    assert_eq!(fams, ["f", "g"]);
    assert!(c.read_row("t", "missing", None).await.unwrap().is_none());

    // rows_limit, key sets, ranges with open and closed bounds, prefix.
    let rows = c
        .read_rows_vec("t", ReadRows::new().limit(5))
        .await
        .unwrap();
    assert_eq!(
        keys(&rows),
        ["row-000", "row-001", "row-002", "row-003", "row-004"]
    );
    let rows = c
        .read_rows_vec("t", ReadRows::new().keys(["row-010", "row-003", "nope"]))
        .await
        .unwrap();
    assert_eq!(keys(&rows), ["row-003", "row-010"]);
    let rows = c
        .read_rows_vec(
            "t",
            ReadRows::new().range((
                Bound::Excluded(b"row-010".to_vec()),
                Bound::Included(b"row-013".to_vec()),
            )),
        )
        .await
        .unwrap();
    assert_eq!(keys(&rows), ["row-011", "row-012", "row-013"]);
    let rows = c
        .read_rows_vec("t", ReadRows::new().range(b"row-048".to_vec()..))
        .await
        .unwrap();
    assert_eq!(keys(&rows), ["row-048", "row-049", "solo"]);
    let rows = c
        .read_rows_vec("t", ReadRows::new().range(..b"row-002".to_vec()))
        .await
        .unwrap();
    assert_eq!(keys(&rows), ["row-000", "row-001"]);
    let rows = c
        .read_rows_vec("t", ReadRows::new().prefix("row-02"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 10);

    // Reversed scans, with and without a limit.
    let rows = c
        .read_rows_vec(
            "t",
            ReadRows::new()
                .range(b"row-010".to_vec()..b"row-014".to_vec())
                .reversed(true),
        )
        .await
        .unwrap();
    assert_eq!(keys(&rows), ["row-013", "row-012", "row-011", "row-010"]);
    let rows = c
        .read_rows_vec("t", ReadRows::new().reversed(true).limit(3))
        .await
        .unwrap();
    assert_eq!(keys(&rows), ["solo", "row-049", "row-048"]);

    let one = |f| ReadRows::new().key("row-004").filter(f);
    let read1 = |f| {
        let c = c.clone();
        async move { c.read_rows_vec("t", one(f)).await.unwrap().pop() }
    };

    // Latest version only.
    let row = read1(filter::cells_per_column_limit(1)).await.unwrap();
    assert_eq!(values(&row, "f", b"a"), [(3000, "a3-4".into())]);
    // Timestamp range [2000, 3000).
    let row = read1(filter::timestamp_range(2000, 3000)).await.unwrap();
    assert_eq!(row.cell_count(), 1);
    assert_eq!(values(&row, "f", b"a"), [(2000, "a2-4".into())]);
    // Exact family / column / qualifier regex / column range.
    let row = read1(filter::family("g")).await.unwrap();
    assert_eq!(row.families.len(), 1);
    assert_eq!(row.families[0].name, "g");
    let row = read1(filter::column("f", "b")).await.unwrap();
    assert_eq!(values(&row, "f", b"b"), [(1000, "even".into())]);
    assert_eq!(row.cell_count(), 1);
    let row = read1(filter::chain([
        filter::family("f"),
        filter::qualifier_regex("a"),
    ]))
    .await
    .unwrap();
    assert_eq!(row.cell_count(), 3);
    let row = read1(filter::column_range(
        "f",
        Bound::Excluded(b"a".to_vec()),
        Bound::Unbounded,
    ))
    .await
    .unwrap();
    assert_eq!(row.cell_count(), 1);
    // Value regex and value range.
    let row = read1(filter::value_regex("a2-.*")).await.unwrap();
    assert_eq!(values(&row, "f", b"a"), [(2000, "a2-4".into())]);
    let row = read1(filter::value_range(
        Bound::Included(b"even".to_vec()),
        Bound::Included(b"even".to_vec()),
    ))
    .await
    .unwrap();
    assert_eq!(row.cell_count(), 1);
    // Strip value keeps cells, empties values.
    let row = read1(filter::strip_value()).await.unwrap();
    assert_eq!(row.cell_count(), 5);
    assert!(row
        .families
        .iter()
        .flat_map(|f| &f.columns)
        .flat_map(|c| &c.cells)
        .all(|c| c.value.is_empty()));
    // Cells per row limit / offset.
    let row = read1(filter::cells_per_row_limit(2)).await.unwrap();
    assert_eq!(row.cell_count(), 2);
    let row = read1(filter::cells_per_row_offset(4)).await.unwrap();
    assert_eq!(row.cell_count(), 1);
    // Pass / block all.
    assert_eq!(read1(filter::pass_all()).await.unwrap().cell_count(), 5);
    assert!(read1(filter::block_all()).await.is_none());
    // Interleave with labels: each branch's cells carry its label.
    let row = read1(filter::interleave([
        filter::chain([filter::column("f", "b"), filter::apply_label("bee")]),
        filter::chain([filter::family("g"), filter::apply_label("gee")]),
    ]))
    .await
    .unwrap();
    assert_eq!(
        row.cell("f", b"b").map(|c| c.labels.clone()),
        Some(vec!["bee".to_owned()])
    );
    assert_eq!(
        row.cell("g", b"c").map(|c| c.labels.clone()),
        Some(vec!["gee".to_owned()])
    );
    // Condition: even rows yield family g, odd rows family f's column b.
    let cond = filter::condition(
        filter::chain([filter::column("f", "b"), filter::value_regex("even")]),
        Some(filter::family("g")),
        Some(filter::column("f", "b")),
    );
    let rows = c
        .read_rows_vec(
            "t",
            ReadRows::new().keys(["row-004", "row-005"]).filter(cond),
        )
        .await
        .unwrap();
    assert_eq!(rows[0].families[0].name, "g");
    assert_eq!(values(&rows[1], "f", b"b"), [(1000, "odd".into())]);
    // Row key regex across the table.
    let rows = c
        .read_rows_vec(
            "t",
            ReadRows::new().filter(filter::chain([
                filter::row_key_regex("row-00[0-2]"),
                filter::strip_value(),
            ])),
        )
        .await
        .unwrap();
    assert_eq!(keys(&rows), ["row-000", "row-001", "row-002"]);

    // Deletes: one version, a column, a family, a row.
    c.mutate_row(
        "t",
        "row-001",
        vec![delete_from_column_range("f", "a", 2000, 3000)],
    )
    .await
    .unwrap();
    let row = c.read_row("t", "row-001", None).await.unwrap().unwrap();
    assert_eq!(
        values(&row, "f", b"a"),
        [(3000, "a3-1".into()), (1000, "a1-1".into())]
    );
    c.mutate_row("t", "row-001", vec![delete_from_column("f", "a")])
        .await
        .unwrap();
    let row = c.read_row("t", "row-001", None).await.unwrap().unwrap();
    assert!(row.column("f", b"a").is_none());
    c.mutate_row("t", "row-001", vec![delete_from_family("g")])
        .await
        .unwrap();
    let row = c.read_row("t", "row-001", None).await.unwrap().unwrap();
    assert!(row.family("g").is_none());
    c.mutate_row("t", "row-001", vec![delete_from_row()])
        .await
        .unwrap();
    assert!(c.read_row("t", "row-001", None).await.unwrap().is_none());

    // A value over tonic's default 4 MiB message limit.
    let big = vec![7u8; 6 << 20];
    c.mutate_row("t", "big", vec![set_cell("f", "blob", 1000, big.clone())])
        .await
        .unwrap();
    let row = c.read_row("t", "big", None).await.unwrap().unwrap();
    assert_eq!(
        row.cell("f", b"blob").map(|c| c.value.len()),
        Some(big.len())
    );

    // A bad write reports the failing entry.
    let err = c
        .mutate_rows(
            "t",
            [
                ("ok-row", vec![set_cell("f", "a", 1000, "x")]),
                ("bad-row", vec![set_cell("nofamily", "a", 1000, "x")]),
            ],
        )
        .await
        .unwrap_err();
    let cg_bigtable::Error::MutateRows { failed, total } = &err else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(*total, 2);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].index, 1);
}

#[tokio::test]
async fn conditional_and_atomic_writes() {
    let emu = start_emulator();
    let c = client(&emu).await;
    table_with_families(&c, "t").await;
    c.mutate_row("t", "k", vec![set_cell("f", "state", 1000, "yes")])
        .await
        .unwrap();

    // Predicate matches: true branch.
    let matched = c
        .check_and_mutate_row(
            "t",
            "k",
            Some(filter::chain([
                filter::column("f", "state"),
                filter::value_regex("yes"),
            ])),
            vec![set_cell("f", "branch", 1000, "true")],
            vec![set_cell("f", "branch", 1000, "false")],
        )
        .await
        .unwrap();
    assert!(matched);
    // Predicate misses: false branch.
    let matched = c
        .check_and_mutate_row(
            "t",
            "k",
            Some(filter::chain([
                filter::column("f", "state"),
                filter::value_regex("no"),
            ])),
            vec![set_cell("f", "branch2", 1000, "true")],
            vec![set_cell("f", "branch2", 1000, "false")],
        )
        .await
        .unwrap();
    assert!(!matched);
    let row = c.read_row("t", "k", None).await.unwrap().unwrap();
    assert_eq!(
        row.cell("f", b"branch").map(|c| s(&c.value)),
        Some("true".into())
    );
    assert_eq!(
        row.cell("f", b"branch2").map(|c| s(&c.value)),
        Some("false".into())
    );
    // No predicate: matches when the row has any cell.
    assert!(c
        .check_and_mutate_row("t", "k", None, vec![set_cell("f", "x", 1000, "1")], vec![])
        .await
        .unwrap());
    assert!(!c
        .check_and_mutate_row(
            "t",
            "empty",
            None,
            vec![],
            vec![set_cell("f", "x", 1000, "1")]
        )
        .await
        .unwrap());
    assert!(c.read_row("t", "empty", None).await.unwrap().is_some());

    // Increments: missing counts as zero; result decodes as i64.
    let row = c
        .read_modify_write_row("t", "ctr", vec![increment_amount("f", "n", 5)])
        .await
        .unwrap();
    assert_eq!(decode_i64(&row.cell("f", b"n").unwrap().value).unwrap(), 5);
    let row = c
        .read_modify_write_row("t", "ctr", vec![increment_amount("f", "n", -2)])
        .await
        .unwrap();
    assert_eq!(decode_i64(&row.cell("f", b"n").unwrap().value).unwrap(), 3);
    let stored = c
        .read_row("t", "ctr", Some(filter::cells_per_column_limit(1)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.cell("f", b"n").unwrap().value, encode_i64(3));

    // Appends, several rules at once.
    c.read_modify_write_row("t", "app", vec![append_value("f", "s", "ab")])
        .await
        .unwrap();
    let row = c
        .read_modify_write_row(
            "t",
            "app",
            vec![append_value("f", "s", "cd"), increment_amount("f", "m", 1)],
        )
        .await
        .unwrap();
    assert_eq!(
        row.cell("f", b"s").map(|c| s(&c.value)),
        Some("abcd".into())
    );
    assert_eq!(decode_i64(&row.cell("f", b"m").unwrap().value).unwrap(), 1);
}

#[tokio::test]
async fn sample_drop_and_delete() {
    let emu = start_emulator();
    let c = client(&emu).await;
    table_with_families(&c, "t").await;
    let entries: Vec<_> = (0..300)
        .map(|i| {
            let prefix = if i % 3 == 0 { "a" } else { "b" };
            (
                format!("{prefix}-{i:04}"),
                vec![set_cell("f", "v", 1000, vec![b'x'; 1024])],
            )
        })
        .collect();
    c.mutate_rows("t", entries).await.unwrap();

    let samples = c.sample_row_keys("t").await.unwrap();
    for w in samples.windows(2) {
        assert!(w[0].offset_bytes <= w[1].offset_bytes);
    }

    c.admin().drop_row_range("t", "a-").await.unwrap();
    let rows = c
        .read_rows_vec("t", ReadRows::new().filter(filter::strip_value()))
        .await
        .unwrap();
    assert_eq!(rows.len(), 200);
    assert!(rows.iter().all(|r| r.key.starts_with(b"b-")));

    assert!(c.admin().drop_row_range("t", "").await.is_err());
    c.admin().drop_all_rows("t").await.unwrap();
    assert!(c
        .read_rows_vec("t", ReadRows::new())
        .await
        .unwrap()
        .is_empty());
    // Schema survives truncation.
    c.mutate_row("t", "again", vec![set_cell("f", "v", 1000, "x")])
        .await
        .unwrap();

    c.admin().delete_table("t").await.unwrap();
    assert!(c.read_rows_vec("t", ReadRows::new()).await.is_err());
}

#[tokio::test]
async fn connects_from_env() {
    let emu = start_emulator();
    // Only this test touches the environment.
    std::env::set_var("BIGTABLE_EMULATOR_HOST", &emu.addr);
    std::env::set_var("BIGTABLE_PROJECT", "envproj");
    std::env::set_var("BIGTABLE_INSTANCE", "envinst");
    let c = Client::from_env().await.unwrap();
    assert_eq!(
        c.table_name("t"),
        "projects/envproj/instances/envinst/tables/t"
    );
    c.admin()
        .create_table("t", &[("f", gc::max_versions(1))])
        .await
        .unwrap();
    c.mutate_row("t", "k", vec![set_cell("f", "q", 1000, "v")])
        .await
        .unwrap();
    assert!(c.read_row("t", "k", None).await.unwrap().is_some());
}
