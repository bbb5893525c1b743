//! The embedded default: our client over an in-process channel to our store, no socket.
//! Data written this way survives closing and reopening the store.

use cg_bigtable::{filter, gc, mutation, Client, Config, ReadRows, Target};

async fn client(dir: &std::path::Path) -> Client {
    let store = cg_emulator::open(dir, cg_emulator::StoreOptions::default()).expect("open store");
    let channel = cg_emulator::in_process_channel(store);
    Config::new(Target::Channel(channel, "p".into(), "i".into()))
        .connect()
        .await
        .expect("connect in-process")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_over_in_process_channel_round_trips_and_persists() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let c = client(dir.path()).await;
        c.admin()
            .create_table("t", &[("f", gc::max_versions(2)), ("g", gc::keep_all())])
            .await
            .expect("create table");
        let rows = (0..500).map(|i| {
            (
                format!("row{i:04}"),
                vec![
                    mutation::set_cell("f", "q", 1000, format!("v{i}")),
                    mutation::set_cell("f", "q", 2000, format!("w{i}")),
                    mutation::set_cell("f", "q", 3000, format!("x{i}")),
                ],
            )
        });
        c.mutate_rows("t", rows).await.expect("mutate_rows");
        let matched = c
            .check_and_mutate_row(
                "t",
                "row0007",
                Some(filter::value_regex("x7")),
                vec![mutation::set_cell("g", "lock", 1000, "held")],
                vec![],
            )
            .await
            .expect("check and mutate");
        assert!(matched);
    }
    // Reopen: the store is closed once every channel to it is gone.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let c = client(dir.path()).await;
    let rows = c
        .read_rows_vec(
            "t",
            ReadRows::new()
                .range("row0005".to_string().into_bytes().."row0010".to_string().into_bytes()),
        )
        .await
        .expect("read");
    assert_eq!(rows.len(), 5);
    let row7 = rows.iter().find(|r| r.key == b"row0007").expect("row0007");
    let versions = &row7.column("f", b"q").expect("f:q").cells;
    assert_eq!(versions.len(), 2, "max_versions(2) keeps the two newest");
    assert_eq!(versions[0].value, b"x7");
    assert_eq!(
        row7.cell("g", b"lock").map(|c| c.value.as_slice()),
        Some(&b"held"[..])
    );
    assert_eq!(
        c.admin().list_tables().await.expect("list"),
        vec!["t".to_string()]
    );
}
