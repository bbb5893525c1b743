//! Crash safety: kill -9 our emulator at random moments during a stream of acknowledged
//! writes. After each restart every acknowledged mutation must be there, and no row may be
//! half-mutated.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cg_tests::EmulatorProcess;
use googleapis_tonic_google_bigtable_admin_v2::google::bigtable::admin::v2 as admin;
use googleapis_tonic_google_bigtable_v2::google::bigtable::v2 as pb;
use pb::bigtable_client::BigtableClient;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

const TABLE: &str = "projects/crash/instances/test/tables/t";
const CELLS_PER_ROW: usize = 8;
const ROWS: u64 = 64;
const WRITERS: u64 = 4;

type Cell = (Vec<u8>, Vec<u8>);

/// Highest acknowledged version per row, and the highest version ever attempted.
#[derive(Default)]
struct Ledger {
    acked: HashMap<u64, u64>,
    attempted: HashMap<u64, u64>,
}

fn row_key(r: u64) -> Vec<u8> {
    format!("row{r:04}").into_bytes()
}

/// One atomic rewrite of a row: clear the family, then set every cell to `version`.
fn rewrite(version: u64) -> Vec<pb::Mutation> {
    use pb::mutation::{DeleteFromFamily, Mutation, SetCell};
    let mut m = vec![pb::Mutation {
        mutation: Some(Mutation::DeleteFromFamily(DeleteFromFamily {
            family_name: "f".into(),
        })),
    }];
    for c in 0..CELLS_PER_ROW {
        m.push(pb::Mutation {
            mutation: Some(Mutation::SetCell(SetCell {
                family_name: "f".into(),
                column_qualifier: format!("c{c}").into_bytes(),
                timestamp_micros: 1000,
                value: version.to_be_bytes().to_vec(),
            })),
        });
    }
    m
}

async fn connect(p: &EmulatorProcess) -> Channel {
    tonic::transport::Endpoint::from_shared(p.endpoint())
        .expect("endpoint")
        .connect()
        .await
        .expect("connecting to the emulator")
}

async fn create_table(ch: Channel) {
    let mut a = admin::bigtable_table_admin_client::BigtableTableAdminClient::new(ch);
    let mut families = HashMap::new();
    families.insert("f".to_string(), admin::ColumnFamily::default());
    a.create_table(admin::CreateTableRequest {
        parent: "projects/crash/instances/test".into(),
        table_id: "t".into(),
        table: Some(admin::Table {
            column_families: families,
            ..Default::default()
        }),
        initial_splits: vec![],
    })
    .await
    .expect("create table");
}

/// Reads every row and checks it against the ledger.
async fn verify(ch: Channel, ledger: &Ledger, round: usize) {
    let mut client = BigtableClient::new(ch);
    let mut stream = client
        .read_rows(pb::ReadRowsRequest {
            table_name: TABLE.into(),
            ..Default::default()
        })
        .await
        .expect("read_rows")
        .into_inner();
    // Row key → (qualifier, value) of every cell.
    let mut rows: BTreeMap<Vec<u8>, Vec<Cell>> = BTreeMap::new();
    let mut current = Vec::new();
    let mut qualifier = Vec::new();
    while let Some(msg) = stream.message().await.expect("read stream") {
        for c in msg.chunks {
            if !c.row_key.is_empty() {
                current = c.row_key.clone();
            }
            if let Some(q) = c.qualifier {
                qualifier = q;
            }
            rows.entry(current.clone())
                .or_default()
                .push((qualifier.clone(), c.value));
        }
    }
    for r in 0..ROWS {
        let key = row_key(r);
        let acked = ledger.acked.get(&r).copied();
        let Some(cells) = rows.get(&key) else {
            assert!(
                acked.is_none(),
                "round {round}: row {r} lost; version {acked:?} was acknowledged"
            );
            continue;
        };
        assert_eq!(
            cells.len(),
            CELLS_PER_ROW,
            "round {round}: row {r} is half-mutated: {cells:?}"
        );
        let versions: Vec<u64> = cells
            .iter()
            .map(|(_, v)| u64::from_be_bytes(v.as_slice().try_into().expect("8-byte version")))
            .collect();
        assert!(
            versions.windows(2).all(|w| w[0] == w[1]),
            "round {round}: row {r} mixes versions {versions:?}"
        );
        let v = versions[0];
        if let Some(a) = acked {
            assert!(
                v >= a,
                "round {round}: row {r} has version {v} but {a} was acknowledged"
            );
        }
        let attempted = ledger.attempted.get(&r).copied().unwrap_or(0);
        assert!(
            v <= attempted,
            "round {round}: row {r} has version {v}, never written"
        );
    }
}

async fn writer(
    ch: Channel,
    ledger: Arc<Mutex<Ledger>>,
    lane: u64,
    seed: u64,
    next_version: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut client = BigtableClient::new(ch);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    loop {
        let batch = rng.random_bool(0.5);
        let n = if batch { rng.random_range(2..16) } else { 1 };
        let mut entries = Vec::new();
        {
            let mut l = ledger.lock().expect("ledger");
            for _ in 0..n {
                // Each writer owns the rows r ≡ lane (mod WRITERS), so a row's versions are
                // written one after another and the newest acknowledged one must win.
                let r = rng.random_range(0..ROWS / WRITERS) * WRITERS + lane;
                if entries.iter().any(|(rr, _)| *rr == r) {
                    continue;
                }
                let v = next_version.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let a = l.attempted.entry(r).or_default();
                *a = (*a).max(v);
                entries.push((r, v));
            }
        }
        let ok: Vec<(u64, u64)> = if batch {
            let req = pb::MutateRowsRequest {
                table_name: TABLE.into(),
                entries: entries
                    .iter()
                    .map(|(r, v)| pb::mutate_rows_request::Entry {
                        row_key: row_key(*r),
                        mutations: rewrite(*v),
                        idempotency: None,
                    })
                    .collect(),
                ..Default::default()
            };
            let Ok(resp) = client.mutate_rows(req).await else {
                return;
            };
            let mut stream = resp.into_inner();
            let mut ok = Vec::new();
            loop {
                match stream.message().await {
                    Ok(Some(m)) => {
                        for e in m.entries {
                            if e.status.is_none_or(|s| s.code == 0) {
                                ok.push(entries[e.index as usize]);
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
            ok
        } else {
            let (r, v) = entries[0];
            let req = pb::MutateRowRequest {
                table_name: TABLE.into(),
                row_key: row_key(r),
                mutations: rewrite(v),
                ..Default::default()
            };
            if client.mutate_row(req).await.is_err() {
                return;
            }
            entries
        };
        let mut l = ledger.lock().expect("ledger");
        for (r, v) in ok {
            let a = l.acked.entry(r).or_default();
            *a = (*a).max(v);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill9() {
    let kills: usize = std::env::var("CG_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let next_version = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let mut total_acked = 0usize;
    for round in 0..=kills {
        let proc = EmulatorProcess::ours(dir.path(), &[]);
        let ch = connect(&proc).await;
        if round == 0 {
            create_table(ch.clone()).await;
        }
        {
            // Verify against the ledger as it stood at the kill.
            let snapshot = {
                let l = ledger.lock().expect("ledger");
                Ledger {
                    acked: l.acked.clone(),
                    attempted: l.attempted.clone(),
                }
            };
            verify(ch.clone(), &snapshot, round).await;
            total_acked = snapshot.acked.len();
        }
        if round == kills {
            break;
        }
        let writers: Vec<_> = (0..WRITERS)
            .map(|i| {
                tokio::spawn(writer(
                    ch.clone(),
                    ledger.clone(),
                    i,
                    round as u64 * 16 + i,
                    next_version.clone(),
                ))
            })
            .collect();
        let wait = rand::rng().random_range(30..300);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        proc.kill9();
        for w in writers {
            let _ = w.await;
        }
    }
    let versions = next_version.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        versions > 100,
        "too few writes were attempted ({versions}) for the test to mean anything"
    );
    eprintln!("crash test: {kills} kills, {versions} versions written, {total_acked} rows with acknowledged writes");
}
