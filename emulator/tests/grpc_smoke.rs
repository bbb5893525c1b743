//! The emulator through raw gRPC, in-process and over TCP, with the generated clients.

use std::collections::HashMap;

use admin::bigtable_table_admin_client::BigtableTableAdminClient;
use cg_emulator::{in_process_channel, open, StoreOptions};
use googleapis_tonic_google_bigtable_admin_v2::google::bigtable::admin::v2 as admin;
use googleapis_tonic_google_bigtable_v2::google::bigtable::v2 as pb;
use pb::bigtable_client::BigtableClient;
use tonic::Code;

const PARENT: &str = "projects/p/instances/i";
const TABLE: &str = "projects/p/instances/i/tables/t";

fn set(f: &str, q: &str, ts: i64, v: &str) -> pb::Mutation {
    pb::Mutation {
        mutation: Some(pb::mutation::Mutation::SetCell(pb::mutation::SetCell {
            family_name: f.into(),
            column_qualifier: q.as_bytes().to_vec(),
            timestamp_micros: ts,
            value: v.as_bytes().to_vec(),
        })),
    }
}

async fn setup(
    channel: tonic::transport::Channel,
) -> (
    BigtableClient<tonic::transport::Channel>,
    BigtableTableAdminClient<tonic::transport::Channel>,
) {
    let mut admin = BigtableTableAdminClient::new(channel.clone());
    let mut families = HashMap::new();
    families.insert("a".to_string(), admin::ColumnFamily::default());
    families.insert("b".to_string(), admin::ColumnFamily::default());
    admin
        .create_table(admin::CreateTableRequest {
            parent: PARENT.into(),
            table_id: "t".into(),
            table: Some(admin::Table {
                column_families: families,
                ..Default::default()
            }),
            initial_splits: vec![],
        })
        .await
        .unwrap();
    (BigtableClient::new(channel), admin)
}

async fn read_all(
    data: &mut BigtableClient<tonic::transport::Channel>,
    limit: i64,
) -> Vec<pb::read_rows_response::CellChunk> {
    let mut stream = data
        .read_rows(pb::ReadRowsRequest {
            table_name: TABLE.into(),
            rows_limit: limit,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut chunks = Vec::new();
    while let Some(msg) = stream.message().await.unwrap() {
        chunks.extend(msg.chunks);
    }
    chunks
}

#[tokio::test]
async fn write_read_and_errors_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreOptions::default()).unwrap();
    let (mut data, mut admin) = setup(in_process_channel(store)).await;

    for (k, v) in [("r1", "x"), ("r2", "y"), ("r3", "z")] {
        data.mutate_row(pb::MutateRowRequest {
            table_name: TABLE.into(),
            row_key: k.into(),
            mutations: vec![set("b", "q", 1000, v), set("a", "q", 2000, v)],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let chunks = read_all(&mut data, 0).await;
    assert_eq!(chunks.len(), 6);
    assert_eq!(
        chunks[0].family_name.as_deref(),
        Some("a"),
        "families come back in name order"
    );
    assert_eq!(
        read_all(&mut data, 2).await.len(),
        4,
        "rows_limit stops the scan"
    );

    // A mutation to an unknown family fails whole: the valid SetCell before it is not applied.
    let err = data
        .mutate_row(pb::MutateRowRequest {
            table_name: TABLE.into(),
            row_key: "r9".into(),
            mutations: vec![set("a", "q", 1000, "v"), set("nope", "q", 1000, "v")],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(read_all(&mut data, 0).await.len(), 6);

    let err = data
        .mutate_row(pb::MutateRowRequest {
            table_name: TABLE.into(),
            row_key: "r9".into(),
            mutations: vec![set("a", "q", 1001, "v")],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    let err = admin
        .get_table(admin::GetTableRequest {
            name: format!("{PARENT}/tables/missing"),
            view: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let err = data
        .read_change_stream(pb::ReadChangeStreamRequest {
            table_name: TABLE.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
}

#[tokio::test]
async fn data_survives_reopen_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path(), StoreOptions::default()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(cg_emulator::serve(store, listener, async {
            let _ = stopped.await;
        }));
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let (mut data, _) = setup(channel).await;
        data.mutate_row(pb::MutateRowRequest {
            table_name: TABLE.into(),
            row_key: "k".into(),
            mutations: vec![set("a", "q", 5000, "kept")],
            ..Default::default()
        })
        .await
        .unwrap();
        drop(data);
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
    let store = open(dir.path(), StoreOptions::default()).expect("reopen after the server stopped");
    let mut data = BigtableClient::new(in_process_channel(store));
    let chunks = read_all(&mut data, 0).await;
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].value, b"kept");
}
