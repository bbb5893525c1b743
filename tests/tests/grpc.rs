//! `chunkedgraph serve`'s gRPC API (`proto/chunkedgraph.proto`): a synthetic graph is
//! ingested into our emulator with `chunkedgraph ingest`, the server runs as a process on the
//! same emulator, and a tonic client generated from the same proto checks its answers
//! against the library's on the same table: lookups (with ≥100k IDs streamed in batches),
//! edits with their events, history, and status codes for bad input with nothing written
//! and the server still up.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use cg_bigtable::{Client, Config, ReadRows, Target};
use cg_graph::edit::EditOptions;
use cg_graph::query::RootQuery;
use cg_graph::synthetic::SyntheticGraph;
use cg_graph::ChunkedGraph;
use cg_ids::VoxelBox;
use cg_tests::grpc_api::chunked_graph_client::ChunkedGraphClient;
use cg_tests::grpc_api::{self as api};
use cg_tests::{EmulatorProcess, ServeProcess};
use tonic::transport::Channel;
use tonic::Code;

const TABLE: &str = "g";
const SUPERVOXELS: usize = 4000;
const SEED: u64 = 11;
/// How long to wait for an edit event before failing.
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

struct Setup {
    _emulator: EmulatorProcess,
    _dir: tempfile::TempDir,
    server: ServeProcess,
    graph: ChunkedGraph,
    client: Client,
    rpc: ChunkedGraphClient<Channel>,
    synth: SyntheticGraph,
    ids: Vec<u64>,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let emulator = EmulatorProcess::ours(dir.path(), &[]);
    let cg_tests::Ingested { synth, ids } = cg_tests::ingest_synthetic(
        TABLE,
        SUPERVOXELS,
        SEED,
        &[],
        &[("BIGTABLE_EMULATOR_HOST", emulator.addr.to_string())],
    );
    let client = Config::new(Target::Emulator(emulator.addr.to_string()))
        .connect()
        .await
        .expect("connect");
    let graph = ChunkedGraph::open(client.clone(), TABLE)
        .await
        .expect("open");
    let server = ServeProcess::start(
        &[],
        &[("BIGTABLE_EMULATOR_HOST", emulator.addr.to_string())],
    );
    let addr = server
        .grpc
        .clone()
        .expect("the server printed its gRPC address");
    let rpc = ChunkedGraphClient::connect(addr)
        .await
        .expect("connecting to the gRPC API")
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    Setup {
        _emulator: emulator,
        _dir: dir,
        server,
        graph,
        client,
        rpc,
        synth,
        ids,
    }
}

impl Setup {
    async fn roots(&self, ids: &[u64]) -> Vec<u64> {
        self.graph
            .roots(ids, &RootQuery::default())
            .await
            .expect("roots")
    }

    fn point(&self, i: usize) -> api::Point {
        let p = self.synth.supervoxels[i].position;
        api::Point {
            supervoxel_id: self.ids[i],
            x: f64::from(p[0]),
            y: f64::from(p[1]),
            z: f64::from(p[2]),
        }
    }

    async fn root(&self, node_id: u64) -> u64 {
        self.rpc
            .clone()
            .get_root(api::GetRootRequest {
                table: TABLE.into(),
                node_id,
                ..Default::default()
            })
            .await
            .expect("GetRoot")
            .into_inner()
            .root_id
    }

    /// Every cell of the table.
    async fn dump(&self) -> Vec<(Vec<u8>, String, Vec<u8>, i64, Vec<u8>)> {
        let rows = self
            .client
            .read_rows_vec(TABLE, ReadRows::new())
            .await
            .expect("dump");
        let mut out = Vec::new();
        for r in rows {
            for f in r.families {
                for col in f.columns {
                    for c in col.cells {
                        out.push((
                            r.key.clone(),
                            f.name.clone(),
                            col.qualifier.clone(),
                            c.timestamp_micros,
                            c.value,
                        ));
                    }
                }
            }
        }
        out
    }
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

fn pairs(edges: &[api::Edge]) -> Vec<[u64; 2]> {
    edges.iter().map(|e| [e.a, e.b]).collect()
}

async fn next_event(events: &mut tonic::Streaming<api::EditEvent>) -> api::EditEvent {
    tokio::time::timeout(EVENT_TIMEOUT, events.message())
        .await
        .expect("an edit event within the timeout")
        .expect("the event stream")
        .expect("an event, not the end of the stream")
}

/// Two supervoxels of different objects in one chunk, near each other.
async fn neighbours_in_two_objects(s: &Setup) -> (usize, usize) {
    let roots = s.roots(&s.ids).await;
    cg_tests::neighbours_in_two_objects(&s.synth, &roots)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_match_the_library() {
    let s = setup().await;
    let g = &s.graph;
    let geo = g.geometry().clone();
    let mut rpc = s.rpc.clone();
    let lib_roots = s.roots(&s.ids).await;
    let distinct = {
        let mut r = lib_roots.clone();
        r.sort_unstable();
        r.dedup();
        r
    };
    assert!(distinct.len() > 3, "several objects");

    // One root, and the layer-2 parent.
    assert_eq!(s.root(s.ids[0]).await, lib_roots[0]);
    let l2 = rpc
        .get_root(api::GetRootRequest {
            table: TABLE.into(),
            node_id: s.ids[0],
            stop_layer: 2,
            ..Default::default()
        })
        .await
        .expect("GetRoot stop_layer 2")
        .into_inner()
        .root_id;
    let lib_l2 = g
        .roots(
            &s.ids[..1],
            &RootQuery {
                stop_layer: Some(2),
                ..Default::default()
            },
        )
        .await
        .expect("l2");
    assert_eq!(l2, lib_l2[0]);

    // Many roots in one call; with fail_to_zero, 0 and unknown IDs map to 0.
    let r = rpc
        .get_roots(api::GetRootsRequest {
            table: TABLE.into(),
            node_ids: s.ids.clone(),
            ..Default::default()
        })
        .await
        .expect("GetRoots")
        .into_inner();
    assert_eq!(r.root_ids, lib_roots);
    let unknown = s.ids.iter().max().expect("ids") + 1;
    let r = rpc
        .get_roots(api::GetRootsRequest {
            table: TABLE.into(),
            node_ids: vec![s.ids[5], 0, unknown],
            fail_to_zero: true,
            ..Default::default()
        })
        .await
        .expect("GetRoots fail_to_zero")
        .into_inner();
    assert_eq!(r.root_ids, vec![lib_roots[5], 0, 0]);

    // Streamed: 120k IDs in 12 batches (every supervoxel 30 times, in a scrambled order,
    // and zeros), answered in order, batch by batch.
    let n = 120_000usize;
    let order: Vec<usize> = (0..n).map(|k| (k * 7919) % s.ids.len()).collect();
    let mut all: Vec<u64> = order.iter().map(|&k| s.ids[k]).collect();
    for k in (0..n).step_by(1000) {
        all[k] = 0;
    }
    let expected: Vec<u64> = all
        .iter()
        .zip(&order)
        .map(|(&id, &k)| if id == 0 { 0 } else { lib_roots[k] })
        .collect();
    let batch = 10_000;
    let requests: Vec<api::StreamRootsRequest> = all
        .chunks(batch)
        .enumerate()
        .map(|(b, ids)| api::StreamRootsRequest {
            // Settings in the first message only, as the proto allows.
            table: if b == 0 { TABLE.into() } else { String::new() },
            node_ids: ids.to_vec(),
            fail_to_zero: b == 0,
            ..Default::default()
        })
        .collect();
    let mut answers = rpc
        .stream_roots(futures::stream::iter(requests))
        .await
        .expect("StreamRoots")
        .into_inner();
    let mut got: Vec<u64> = Vec::with_capacity(n);
    let mut batches = 0;
    while let Some(a) = answers.message().await.expect("StreamRoots answer") {
        assert_eq!(a.offset, got.len() as u64, "answers come in request order");
        assert_eq!(a.root_ids.len(), batch);
        got.extend(a.root_ids);
        batches += 1;
    }
    assert_eq!(batches, n / batch);
    assert_eq!(got.len(), n);
    assert_eq!(got, expected);

    // Children, leaves (whole, in a box, at layer 2), of the object of a supervoxel in the
    // first chunk column (so that the box below holds some of its leaves).
    let first = s
        .synth
        .supervoxels
        .iter()
        .position(|sv| sv.chunk[0] == 0 && sv.chunk[1] == 0)
        .expect("a supervoxel in the first chunk column");
    let root = lib_roots[first];
    let kids = g.children(&[root]).await.expect("children");
    let r = rpc
        .get_children(api::GetChildrenRequest {
            table: TABLE.into(),
            node_id: root,
        })
        .await
        .expect("GetChildren")
        .into_inner();
    assert_eq!(r.children_ids, kids[0].ids);
    let leaves = |node_id, stop_layer, bounds| {
        let mut rpc = rpc.clone();
        async move {
            rpc.get_leaves(api::GetLeavesRequest {
                table: TABLE.into(),
                node_id,
                stop_layer,
                bounds,
            })
            .await
            .expect("GetLeaves")
            .into_inner()
            .leaf_ids
        }
    };
    assert_eq!(
        leaves(root, 0, None).await,
        g.leaves(root, None, 1).await.expect("leaves")
    );
    assert_eq!(
        leaves(root, 2, None).await,
        g.leaves(root, None, 2).await.expect("l2 leaves")
    );
    let cs = geo.chunk_size;
    let bbox = VoxelBox::new([0, 0, 0], [u64::from(cs[0]), u64::from(cs[1]), 5000]);
    let boxed = g.leaves(root, Some(bbox), 1).await.expect("boxed leaves");
    let off = geo.voxel_offset;
    let bounds = api::BoundingBox {
        min: off.to_vec(),
        max: vec![
            off[0] + i64::from(cs[0]),
            off[1] + i64::from(cs[1]),
            off[2] + 5000,
        ],
    };
    assert!(!boxed.is_empty(), "the root reaches into the box");
    assert_eq!(leaves(root, 0, Some(bounds)).await, boxed);

    // Version questions.
    let r = rpc
        .is_latest_roots(api::IsLatestRootsRequest {
            table: TABLE.into(),
            node_ids: distinct.clone(),
            ..Default::default()
        })
        .await
        .expect("IsLatestRoots")
        .into_inner();
    assert_eq!(r.is_latest, vec![true; distinct.len()]);
    let r = rpc
        .root_timestamps(api::RootTimestampsRequest {
            table: TABLE.into(),
            node_ids: distinct.clone(),
            ..Default::default()
        })
        .await
        .expect("RootTimestamps")
        .into_inner();
    assert_eq!(
        r.timestamps_micros,
        g.node_timestamps(&distinct).await.expect("timestamps")
    );
    assert!(s.server.grpc.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_events_and_history() {
    let s = setup().await;
    let g = &s.graph;
    let mut rpc = s.rpc.clone();
    let (i, j) = neighbours_in_two_objects(&s).await;
    let (a, b) = (s.ids[i], s.ids[j]);
    let before = s.roots(&[a, b]).await;
    assert_ne!(before[0], before[1]);
    let t0 = cg_bigtable::mutation::now_micros();

    // Subscribed before any edit: every edit below must arrive, in order.
    let mut events = rpc
        .subscribe_edits(api::SubscribeEditsRequest {
            table: TABLE.into(),
        })
        .await
        .expect("SubscribeEdits")
        .into_inner();

    // Merge, with the user from the metadata.
    let mut req = tonic::Request::new(api::MergeRequest {
        table: TABLE.into(),
        points: vec![s.point(i), s.point(j)],
        ..Default::default()
    });
    req.metadata_mut()
        .insert("x-user-id", "tester".parse().expect("metadata"));
    let merged = rpc.merge(req).await.expect("Merge").into_inner();
    let after = s.roots(&[a, b]).await;
    assert_eq!(after[0], after[1], "merged");
    assert_eq!(merged.new_root_ids, vec![after[0]]);
    assert_eq!(sorted(merged.old_root_ids.clone()), sorted(before.clone()));
    assert!(!merged.added_edges.is_empty());
    let (entry, status) = g
        .operation(merged.operation_id)
        .await
        .expect("op-log entry");
    assert_eq!((entry.user.as_str(), status.as_str()), ("tester", "done"));
    assert_eq!(entry.timestamp_micros, merged.timestamp_micros);
    assert_eq!(entry.added_edges, pairs(&merged.added_edges));

    let e = next_event(&mut events).await;
    assert_eq!(e.operation_id, merged.operation_id);
    assert_eq!(e.kind, "merge");
    assert_eq!(e.table, TABLE);
    assert_eq!(e.new_root_ids, vec![after[0]]);
    assert_eq!(sorted(e.old_root_ids.clone()), sorted(before.clone()));
    assert_eq!(e.new_l2_ids, merged.new_l2_ids);
    assert!(!e.new_l2_ids.is_empty());
    assert_eq!(e.timestamp_micros, merged.timestamp_micros);
    assert_eq!((e.recovered, e.missed), (false, 0));

    // The old roots are no longer latest; latest timestamps say when they were replaced.
    let r = rpc
        .is_latest_roots(api::IsLatestRootsRequest {
            table: TABLE.into(),
            node_ids: vec![before[0], after[0]],
            ..Default::default()
        })
        .await
        .expect("IsLatestRoots")
        .into_inner();
    assert_eq!(r.is_latest, vec![false, true]);
    let r = rpc
        .root_timestamps(api::RootTimestampsRequest {
            table: TABLE.into(),
            node_ids: vec![before[0], after[0]],
            latest: true,
            ..Default::default()
        })
        .await
        .expect("RootTimestamps latest")
        .into_inner();
    assert_eq!(r.timestamps_micros[0], merged.timestamp_micros);
    assert!(
        r.timestamps_micros[1] > merged.timestamp_micros,
        "still current: now"
    );

    // Delta roots over the merge agree with the library.
    let t1 = cg_bigtable::mutation::now_micros() + 1000;
    let r = rpc
        .delta_roots(api::DeltaRootsRequest {
            table: TABLE.into(),
            start_micros: t0,
            end_micros: t1,
        })
        .await
        .expect("DeltaRoots")
        .into_inner();
    let (new, old) = g.delta_roots(t0, t1).await.expect("delta roots");
    assert_eq!((r.new_roots.clone(), r.old_roots), (new, old));
    assert_eq!(r.new_roots, vec![after[0]]);

    // Undo, then redo.
    let undone = rpc
        .undo(api::OperationRequest {
            table: TABLE.into(),
            operation_id: merged.operation_id,
            ..Default::default()
        })
        .await
        .expect("Undo")
        .into_inner();
    let roots = s.roots(&[a, b]).await;
    assert_ne!(roots[0], roots[1], "undone");
    assert_eq!(sorted(undone.new_root_ids.clone()), sorted(roots.clone()));
    let e = next_event(&mut events).await;
    assert_eq!(
        (e.operation_id, e.kind.as_str()),
        (undone.operation_id, "undo")
    );
    assert_eq!(sorted(e.new_root_ids), sorted(roots));
    let redone = rpc
        .redo(api::OperationRequest {
            table: TABLE.into(),
            user: "redoer".into(),
            operation_id: merged.operation_id,
        })
        .await
        .expect("Redo")
        .into_inner();
    let roots = s.roots(&[a, b]).await;
    assert_eq!(roots[0], roots[1], "redone");
    assert_eq!(redone.new_root_ids, vec![roots[0]]);
    let e = next_event(&mut events).await;
    assert_eq!(
        (e.operation_id, e.kind.as_str()),
        (redone.operation_id, "redo")
    );
    let (entry, _) = g
        .operation(redone.operation_id)
        .await
        .expect("op-log entry");
    assert_eq!(entry.user, "redoer");

    // Split preview is the library's; the multicut split makes it.
    let lib = g
        .split_preview(
            &[cg_graph::edit::Point {
                supervoxel: a,
                position_nm: [s.point(i).x, s.point(i).y, s.point(i).z],
            }],
            &[cg_graph::edit::Point {
                supervoxel: b,
                position_nm: [s.point(j).x, s.point(j).y, s.point(j).z],
            }],
            &EditOptions::default(),
        )
        .await
        .expect("the library previews a cut of the merge it just made");
    let preview = rpc
        .split_preview(api::SplitPreviewRequest {
            table: TABLE.into(),
            sources: vec![s.point(i)],
            sinks: vec![s.point(j)],
        })
        .await
        .expect("SplitPreview")
        .into_inner();
    assert_eq!(preview.source_side, lib.source_side);
    assert_eq!(preview.sink_side, lib.sink_side);
    assert_eq!(pairs(&preview.cut_edges), lib.cut_edges);
    let split = rpc
        .split(api::SplitRequest {
            table: TABLE.into(),
            sources: vec![s.point(i)],
            sinks: vec![s.point(j)],
            ..Default::default()
        })
        .await
        .expect("Split (multicut)")
        .into_inner();
    assert_eq!(pairs(&split.removed_edges), lib.cut_edges);
    let sides = s.roots(&[a, b]).await;
    assert_ne!(sides[0], sides[1], "split");
    assert_eq!(sorted(split.new_root_ids.clone()), sorted(sides.clone()));
    let e = next_event(&mut events).await;
    assert_eq!(
        (e.operation_id, e.kind.as_str()),
        (split.operation_id, "split")
    );
    assert_eq!(sorted(e.new_root_ids), sorted(sides));
    let (entry, _) = g.operation(split.operation_id).await.expect("op-log entry");
    assert_eq!(entry.user, "anonymous");

    // Merge again, then split by removing exactly the edges that merge added.
    let merged2 = rpc
        .merge(api::MergeRequest {
            table: TABLE.into(),
            points: vec![s.point(i), s.point(j)],
            ..Default::default()
        })
        .await
        .expect("Merge again")
        .into_inner();
    assert_eq!(
        next_event(&mut events).await.operation_id,
        merged2.operation_id
    );
    let split2 = rpc
        .split(api::SplitRequest {
            table: TABLE.into(),
            edges: merged2.added_edges.clone(),
            ..Default::default()
        })
        .await
        .expect("Split (edges)")
        .into_inner();
    let mut removed = pairs(&split2.removed_edges);
    let mut added = pairs(&merged2.added_edges);
    removed.sort_unstable();
    added.sort_unstable();
    assert_eq!(removed, added, "exactly the given edges");
    let sides = s.roots(&[a, b]).await;
    assert_ne!(sides[0], sides[1], "split by edges");
    let e = next_event(&mut events).await;
    assert_eq!(
        (e.operation_id, e.kind.as_str()),
        (split2.operation_id, "split")
    );

    // History of a's object, against the library.
    let root = sides[0];
    let lineage = rpc
        .lineage_graph(api::LineageGraphRequest {
            table: TABLE.into(),
            root_ids: vec![root],
            ..Default::default()
        })
        .await
        .expect("LineageGraph")
        .into_inner();
    let lib = g.lineage_graph(&[root], None, None).await.expect("lineage");
    assert!(lib.edges.len() >= 6, "six edits made a lineage");
    let nodes: Vec<(u64, i64, Option<u64>, Option<u64>)> = lineage
        .nodes
        .iter()
        .map(|n| {
            (
                n.id,
                n.timestamp_micros,
                (n.operation_id != 0).then_some(n.operation_id),
                (n.superseded_by != 0).then_some(n.superseded_by),
            )
        })
        .collect();
    let lib_nodes: Vec<(u64, i64, Option<u64>, Option<u64>)> = lib
        .nodes
        .iter()
        .map(|n| (n.id, n.timestamp_micros, n.operation_id, n.superseded_by))
        .collect();
    assert_eq!(nodes, lib_nodes);
    let edges: Vec<(u64, u64)> = lineage.edges.iter().map(|e| (e.source, e.target)).collect();
    let lib_edges: Vec<(u64, u64)> = lib.edges.iter().map(|e| (e.source, e.target)).collect();
    assert_eq!(edges, lib_edges);

    let past = rpc
        .past_ids(api::PastIdsRequest {
            table: TABLE.into(),
            root_ids: vec![root],
            past_micros: t0,
        })
        .await
        .expect("PastIds")
        .into_inner();
    let lib = g
        .past_id_mapping(&[root], Some(t0))
        .await
        .expect("past ids");
    let past_map: HashMap<u64, Vec<u64>> = past
        .past_id_map
        .into_iter()
        .map(|(k, v)| (k, v.ids))
        .collect();
    let lib_past: HashMap<u64, Vec<u64>> = lib.past_id_map.into_iter().collect();
    assert_eq!(past_map, lib_past);
    assert!(
        past_map[&root].contains(&before[0]),
        "a's object before the edits is in its past: {past_map:?}"
    );
    let future: HashMap<u64, u64> = past.future_id_map.into_iter().collect();
    assert_eq!(future, lib.future_id_map.into_iter().collect());

    let log = rpc
        .change_log(api::ChangeLogRequest {
            table: TABLE.into(),
            root_id: root,
            ..Default::default()
        })
        .await
        .expect("ChangeLog")
        .into_inner();
    let lib = g
        .change_log_with(root, None, false)
        .await
        .expect("change log");
    assert_eq!(
        (
            log.n_mergers,
            log.n_splits,
            &log.operation_ids,
            &log.past_ids
        ),
        (
            lib.n_mergers,
            lib.n_splits,
            &lib.operation_ids,
            &lib.past_ids
        )
    );
    assert!(log.operation_ids.contains(&merged.operation_id));
    assert_eq!(
        log.user_info["tester"].n_mergers,
        lib.user_info["tester"].n_mergers
    );

    let ops = vec![split.operation_id, merged.operation_id, undone.operation_id];
    let details = rpc
        .operation_details(api::OperationDetailsRequest {
            table: TABLE.into(),
            operation_ids: ops.clone(),
        })
        .await
        .expect("OperationDetails")
        .into_inner();
    let lib = g.operation_details(&ops).await.expect("details");
    assert_eq!(details.operations.len(), 3);
    for (d, e) in details.operations.iter().zip(&lib) {
        assert_eq!(d.operation_id, e.operation_id);
        assert_eq!(d.timestamp_micros, e.timestamp_micros);
        assert_eq!(
            (d.user.as_str(), d.kind.as_str()),
            (e.user.as_str(), e.kind.as_str())
        );
        assert_eq!(
            (&d.old_root_ids, &d.new_root_ids),
            (&e.old_roots, &e.new_roots)
        );
        assert_eq!(pairs(&d.added_edges), e.added_edges);
        assert_eq!(pairs(&d.removed_edges), e.removed_edges);
        let extra: serde_json::Value = serde_json::from_str(&d.extra_json).expect("extra JSON");
        assert_eq!(extra, serde_json::Value::Object(e.extra.clone()));
    }
    // The undo names the merge it reverted.
    assert_eq!(
        details.operations[2].target_operation_id,
        merged.operation_id
    );
    assert_eq!(details.operations[1].target_operation_id, 0);
}

/// The status of a call that must fail.
fn refused<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> tonic::Status {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(s) => s,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_status_codes() {
    let mut s = setup().await;
    let mut rpc = s.rpc.clone();
    let cells = s.dump().await;
    let root = s.root(s.ids[0]).await;
    let unknown_sv = s.ids.iter().max().expect("ids") + 1;
    // Roots get consecutive IDs in the one top chunk: past the largest there is none.
    let unknown_text = unknown_sv.to_string();
    let unknown_root = s.roots(&s.ids).await.into_iter().max().expect("roots") + 1;
    let get_root =
        |table: &str, node_id: u64, stop_layer: u32, timestamp_micros: i64| api::GetRootRequest {
            table: table.into(),
            node_id,
            stop_layer,
            timestamp_micros,
        };

    let cases: Vec<(tonic::Status, Code, &str)> = vec![
        (
            refused(rpc.get_root(get_root("nope", s.ids[0], 0, 0)).await),
            Code::NotFound,
            "nope",
        ),
        (
            refused(rpc.get_root(get_root("bad/name", s.ids[0], 0, 0)).await),
            Code::InvalidArgument,
            "table name",
        ),
        (
            refused(rpc.get_root(get_root(TABLE, 0, 0, 0)).await),
            Code::InvalidArgument,
            "0",
        ),
        (
            refused(rpc.get_root(get_root(TABLE, unknown_sv, 0, 0)).await),
            Code::NotFound,
            &unknown_text,
        ),
        (
            refused(rpc.get_root(get_root(TABLE, s.ids[0], 99, 0)).await),
            Code::InvalidArgument,
            "stop_layer=99",
        ),
        (
            refused(rpc.get_root(get_root(TABLE, s.ids[0], 0, -5)).await),
            Code::InvalidArgument,
            "timestamp_micros=-5",
        ),
        (
            refused(
                rpc.get_roots(api::GetRootsRequest {
                    table: TABLE.into(),
                    node_ids: vec![s.ids[0], unknown_sv],
                    ..Default::default()
                })
                .await,
            ),
            Code::NotFound,
            "did not exist",
        ),
        (
            refused(
                rpc.get_leaves(api::GetLeavesRequest {
                    table: TABLE.into(),
                    node_id: root,
                    bounds: Some(api::BoundingBox {
                        min: vec![0, 0],
                        max: vec![1, 1, 1],
                    }),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "bounds",
        ),
        (
            refused(
                rpc.get_children(api::GetChildrenRequest {
                    table: TABLE.into(),
                    node_id: unknown_root,
                })
                .await,
            ),
            Code::NotFound,
            "does not exist",
        ),
        // Edits: nothing to merge, one point, two points of one object, a split without
        // points, a split with both points and edges, a self-loop, an unknown operation.
        (
            refused(
                rpc.merge(api::MergeRequest {
                    table: TABLE.into(),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "exactly two points",
        ),
        (
            refused(
                rpc.merge(api::MergeRequest {
                    table: TABLE.into(),
                    points: vec![s.point(0)],
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "got 1",
        ),
        (
            refused(
                rpc.merge(api::MergeRequest {
                    table: TABLE.into(),
                    points: vec![s.point(0), s.point(0)],
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "already belong to one object",
        ),
        (
            refused(
                rpc.merge(api::MergeRequest {
                    table: "nope".into(),
                    points: vec![s.point(0), s.point(1)],
                    ..Default::default()
                })
                .await,
            ),
            Code::NotFound,
            "nope",
        ),
        (
            refused(
                rpc.split(api::SplitRequest {
                    table: TABLE.into(),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "source",
        ),
        (
            refused(
                rpc.split(api::SplitRequest {
                    table: TABLE.into(),
                    sources: vec![s.point(0)],
                    edges: vec![api::Edge {
                        a: s.ids[0],
                        b: s.ids[1],
                    }],
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "not both",
        ),
        (
            refused(
                rpc.split(api::SplitRequest {
                    table: TABLE.into(),
                    edges: vec![api::Edge {
                        a: s.ids[0],
                        b: s.ids[0],
                    }],
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "self-loop",
        ),
        (
            refused(
                rpc.undo(api::OperationRequest {
                    table: TABLE.into(),
                    operation_id: 424242,
                    ..Default::default()
                })
                .await,
            ),
            Code::NotFound,
            "operation 424242",
        ),
        (
            refused(
                rpc.delta_roots(api::DeltaRootsRequest {
                    table: TABLE.into(),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "start_micros",
        ),
        (
            refused(
                rpc.operation_details(api::OperationDetailsRequest {
                    table: TABLE.into(),
                    operation_ids: vec![7],
                })
                .await,
            ),
            Code::NotFound,
            "operation 7",
        ),
        (
            refused(
                rpc.subscribe_edits(api::SubscribeEditsRequest {
                    table: "nope".into(),
                })
                .await,
            ),
            Code::NotFound,
            "nope",
        ),
    ];
    for (status, code, needle) in &cases {
        assert_eq!(status.code(), *code, "{status:?}");
        assert!(
            status.message().contains(needle),
            "{:?} does not mention {needle:?}",
            status.message()
        );
    }

    // A stream whose second batch names another table: the first batch is answered, then
    // the stream ends with INVALID_ARGUMENT.
    let requests = vec![
        api::StreamRootsRequest {
            table: TABLE.into(),
            node_ids: s.ids[..10].to_vec(),
            ..Default::default()
        },
        api::StreamRootsRequest {
            table: "other".into(),
            node_ids: s.ids[10..20].to_vec(),
            ..Default::default()
        },
    ];
    let mut answers = rpc
        .stream_roots(futures::stream::iter(requests))
        .await
        .expect("StreamRoots")
        .into_inner();
    let first = answers
        .message()
        .await
        .expect("the first batch")
        .expect("an answer");
    assert_eq!(first.root_ids, s.roots(&s.ids[..10]).await);
    let status = answers.message().await.expect_err("the second batch fails");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("first message"), "{status:?}");
    // A stream whose batch holds an invalid ID without fail_to_zero fails with its status.
    let mut answers = rpc
        .stream_roots(futures::stream::iter(vec![api::StreamRootsRequest {
            table: TABLE.into(),
            node_ids: vec![s.ids[0], 0],
            ..Default::default()
        }]))
        .await
        .expect("StreamRoots")
        .into_inner();
    let status = answers.message().await.expect_err("an invalid ID");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // An empty stream is answered with an empty stream.
    let mut answers = rpc
        .stream_roots(futures::stream::iter(Vec::<api::StreamRootsRequest>::new()))
        .await
        .expect("StreamRoots")
        .into_inner();
    assert!(answers.message().await.expect("end").is_none());

    // Nothing was written, and the server is still up and answering.
    assert_eq!(s.dump().await, cells, "refused edits wrote nothing");
    assert!(s.server.alive(), "the server survived the bad input");
    assert_eq!(s.root(s.ids[0]).await, root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_subscriptions() {
    let mut s = setup().await;
    let mut events = s
        .rpc
        .clone()
        .subscribe_edits(api::SubscribeEditsRequest {
            table: TABLE.into(),
        })
        .await
        .expect("SubscribeEdits")
        .into_inner();
    // SIGTERM: a graceful shutdown, which must not wait for the subscription forever.
    let killed = Command::new("kill")
        .args(["-TERM", &s.server.pid().to_string()])
        .status()
        .expect("running kill");
    assert!(killed.success());
    let end = tokio::time::timeout(EVENT_TIMEOUT, events.message())
        .await
        .expect("the subscription ends with the server");
    assert!(
        matches!(end, Ok(None) | Err(_)),
        "no event, only the end: {end:?}"
    );
    let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
    while s.server.alive() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server exits after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
