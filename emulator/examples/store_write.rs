//! Engine-only write throughput, without gRPC: `cargo run --release --example store_write`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::time::Instant;

use cg_emulator::{open, StoreOptions};
use googleapis_tonic_google_bigtable_admin_v2::google::bigtable::admin::v2 as admin;
use googleapis_tonic_google_bigtable_v2::google::bigtable::v2 as pb;

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), StoreOptions::default()).expect("open");
    let mut families = HashMap::new();
    families.insert("f".to_string(), admin::ColumnFamily::default());
    let name = "projects/p/instances/i/tables/t";
    store
        .create_table(
            name,
            Some(admin::Table {
                column_families: families,
                ..Default::default()
            }),
        )
        .expect("create");
    let rows = 200_000u64;
    let t = Instant::now();
    for start in (0..rows).step_by(1000) {
        let entries: Vec<_> = (start..start + 1000)
            .map(|k| pb::mutate_rows_request::Entry {
                row_key: format!("{k:020}").into_bytes(),
                mutations: vec![pb::Mutation {
                    mutation: Some(pb::mutation::Mutation::SetCell(pb::mutation::SetCell {
                        family_name: "f".into(),
                        column_qualifier: b"q".to_vec(),
                        timestamp_micros: 1000,
                        value: vec![b'v'; 100],
                    })),
                }],
                idempotency: None,
            })
            .collect();
        store.mutate_rows(name, &entries).expect("write");
    }
    println!(
        "{:.0} rows/s engine-only, one writer",
        rows as f64 / t.elapsed().as_secs_f64()
    );
}
