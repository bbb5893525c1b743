//! History queries against our emulator in process. One scenario: objects A and B are merged
//! (alice), split apart again (bob), the split is undone (alice) and redone (bob); then an
//! unrelated merge of C and D (carol). Every answer is checked against the IDs and times the
//! edits returned.
//!
//! ```text
//! A ─┐          ┌─ R2 ─┐          ┌─ R5      C ─┐
//!    ├─ R1 (op1)┤      ├─ R4 (op3)┤             ├─ M (op5)
//! B ─┘          └─ R3 ─┘          └─ R6      D ─┘
//!          op2: split           op4: redo of op2
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cg_graph::edit::{EditOptions, EditResult, Point};
use cg_graph::history::{ChangeLogRow, LineageEdge, LineageGraph, LineageNode, UserEdits};
use cg_graph::ingest::{ingest, IngestOptions};
use cg_graph::query::RootQuery;
use cg_graph::{ChunkedGraph, GraphError};

mod common;
use common::{client, fixture, params, Fixture};

fn point(f: &Fixture, i: usize) -> Point {
    let p = f.synth.supervoxels[i].position;
    Point {
        supervoxel: f.ids[i],
        position_nm: [f64::from(p[0]), f64::from(p[1]), f64::from(p[2])],
    }
}

/// Two supervoxels of different objects in one chunk, nearest first, whose roots are not
/// in `avoid`.
async fn neighbours_in_two_objects(f: &Fixture, avoid: &[u64]) -> (usize, usize) {
    let roots = f
        .graph
        .roots(&f.ids, &RootQuery::default())
        .await
        .expect("roots");
    let sv = &f.synth.supervoxels;
    let mut best = None;
    for i in 0..sv.len() {
        for j in (i + 1)..sv.len().min(i + 400) {
            if roots[i] != roots[j]
                && sv[i].chunk == sv[j].chunk
                && !avoid.contains(&roots[i])
                && !avoid.contains(&roots[j])
            {
                let d: u32 = (0..3)
                    .map(|k| sv[i].position[k].abs_diff(sv[j].position[k]))
                    .sum();
                if best.is_none_or(|(_, _, bd)| d < bd) {
                    best = Some((i, j, d));
                }
            }
        }
    }
    let (i, j, _) = best.expect("two objects in one chunk");
    (i, j)
}

/// Edits land in distinct milliseconds, so that "just before edit k" is after edit k-1.
async fn pause() {
    tokio::time::sleep(Duration::from_millis(3)).await;
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

fn edges(pairs: &[(u64, u64)]) -> Vec<LineageEdge> {
    let set: BTreeSet<LineageEdge> = pairs
        .iter()
        .map(|&(source, target)| LineageEdge { source, target })
        .collect();
    set.into_iter().collect()
}

fn node_ids(g: &LineageGraph) -> Vec<u64> {
    sorted(g.nodes.iter().map(|n| n.id).collect())
}

struct Scenario {
    f: Fixture,
    ingest_ts: i64,
    /// Supervoxels i (A's side) and j (B's side), and the merge points.
    i: usize,
    j: usize,
    a: u64,
    b: u64,
    r1: u64,
    r2: u64,
    r3: u64,
    r4: u64,
    r5: u64,
    r6: u64,
    c: u64,
    d: u64,
    m: u64,
    merge: EditResult,
    split: EditResult,
    undo: EditResult,
    redo: EditResult,
    carol: EditResult,
}

async fn scenario(dir: &std::path::Path) -> Scenario {
    let f = fixture(client(dir).await, "h", params(1, [4, 3, 2], 30)).await;
    ingest(
        &f.graph,
        f.source.clone(),
        &IngestOptions::default(),
        &|_| {},
    )
    .await
    .expect("ingest");
    let g = f.graph.clone();
    let opts = EditOptions::default();
    let ingest_ts = g.meta().ingest_timestamp_micros;
    let (i, j) = neighbours_in_two_objects(&f, &[]).await;
    let (si, sj) = (f.ids[i], f.ids[j]);
    let ab = g.roots(&[si, sj], &RootQuery::default()).await.expect("ab");
    let (a, b) = (ab[0], ab[1]);
    pause().await;
    let merge = g
        .merge("alice", point(&f, i), point(&f, j), &opts)
        .await
        .expect("merge");
    pause().await;
    let split = g
        .split_edges("bob", &merge.added_edges, &opts)
        .await
        .expect("split");
    let r23 = g
        .roots(&[si, sj], &RootQuery::default())
        .await
        .expect("r23");
    pause().await;
    let undo = g
        .undo("alice", split.operation_id, &opts)
        .await
        .expect("undo");
    pause().await;
    let redo = g
        .redo("bob", split.operation_id, &opts)
        .await
        .expect("redo");
    let r56 = g
        .roots(&[si, sj], &RootQuery::default())
        .await
        .expect("r56");
    pause().await;
    let (k, l) = neighbours_in_two_objects(&f, &r56).await;
    let cd = g
        .roots(&[f.ids[k], f.ids[l]], &RootQuery::default())
        .await
        .expect("cd");
    let carol = g
        .merge("carol", point(&f, k), point(&f, l), &opts)
        .await
        .expect("carol's merge");

    // The edits did what the scenario says.
    assert_eq!(merge.old_roots, sorted(vec![a, b]));
    assert_eq!(merge.new_roots.len(), 1);
    let r1 = merge.new_roots[0];
    assert_eq!(split.old_roots, vec![r1]);
    assert_eq!(split.new_roots, sorted(r23.clone()));
    assert_eq!(undo.old_roots, split.new_roots);
    assert_eq!(undo.new_roots.len(), 1);
    let r4 = undo.new_roots[0];
    assert_eq!(redo.old_roots, vec![r4]);
    assert_eq!(redo.new_roots, sorted(r56.clone()));
    assert_eq!(carol.old_roots, sorted(cd.clone()));
    let times = [
        ingest_ts,
        merge.timestamp_micros,
        split.timestamp_micros,
        undo.timestamp_micros,
        redo.timestamp_micros,
        carol.timestamp_micros,
    ];
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    Scenario {
        ingest_ts,
        i,
        j,
        a,
        b,
        r1,
        r2: r23[0],
        r3: r23[1],
        r4,
        r5: r56[0],
        r6: r56[1],
        c: cd[0],
        d: cd[1],
        m: carol.new_roots[0],
        merge,
        split,
        undo,
        redo,
        carol,
        f,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_of_merge_split_undo_redo() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = scenario(dir.path()).await;
    let g: &ChunkedGraph = &s.f.graph;
    let (op1, op2, op3, op4, op5) = (
        s.merge.operation_id,
        s.split.operation_id,
        s.undo.operation_id,
        s.redo.operation_id,
        s.carol.operation_id,
    );
    let (t1, t2, t3, t4) = (
        s.merge.timestamp_micros,
        s.split.timestamp_micros,
        s.undo.timestamp_micros,
        s.redo.timestamp_micros,
    );
    let (a, b, r1, r2, r3, r4, r5, r6) = (s.a, s.b, s.r1, s.r2, s.r3, s.r4, s.r5, s.r6);

    // ---- lineage graph
    let lineage = g.lineage_graph(&[r5], None, None).await.expect("lineage");
    let node = |id, ts, made: Option<u64>, gone: Option<u64>| LineageNode {
        id,
        timestamp_micros: ts,
        operation_id: made,
        superseded_by: gone,
    };
    let mut want = vec![
        node(a, s.ingest_ts, None, Some(op1)),
        node(b, s.ingest_ts, None, Some(op1)),
        node(r1, t1, Some(op1), Some(op2)),
        node(r2, t2, Some(op2), Some(op3)),
        node(r3, t2, Some(op2), Some(op3)),
        node(r4, t3, Some(op3), Some(op4)),
        node(r5, t4, Some(op4), None),
    ];
    want.sort_by_key(|n| (n.timestamp_micros, n.id));
    assert_eq!(lineage.nodes, want);
    assert_eq!(
        lineage.edges,
        edges(&[
            (a, r1),
            (b, r1),
            (r1, r2),
            (r1, r3),
            (r2, r4),
            (r3, r4),
            (r4, r5)
        ])
    );
    // From R1: its past and its whole future, R6 included.
    let from_r1 = g
        .lineage_graph(&[r1], None, None)
        .await
        .expect("lineage r1");
    assert_eq!(
        node_ids(&from_r1),
        sorted(vec![a, b, r1, r2, r3, r4, r5, r6])
    );
    assert_eq!(
        from_r1.edges,
        edges(&[
            (a, r1),
            (b, r1),
            (r1, r2),
            (r1, r3),
            (r2, r4),
            (r3, r4),
            (r4, r5),
            (r4, r6)
        ])
    );
    assert_eq!(from_r1.node(r6).expect("r6").operation_id, Some(op4));
    // Bounded future: R1 (made before the bound) still leads to R2 and R3, which are kept
    // but not followed (PyChunkedGraph's rule).
    let until = g
        .lineage_graph(&[r1], None, Some(t2 - 1))
        .await
        .expect("bounded future");
    assert_eq!(node_ids(&until), sorted(vec![a, b, r1, r2, r3]));
    assert_eq!(until.edges, edges(&[(a, r1), (b, r1), (r1, r2), (r1, r3)]));
    // Bounded past: R4 (made at the bound) is followed back to R2 and R3, which are not.
    let since = g
        .lineage_graph(&[r5], Some(t3), None)
        .await
        .expect("bounded past");
    assert_eq!(node_ids(&since), sorted(vec![r2, r3, r4, r5]));
    assert_eq!(since.edges, edges(&[(r2, r4), (r3, r4), (r4, r5)]));
    // Several roots at once: the union.
    let both = g
        .lineage_graph(&[r5, s.m], None, None)
        .await
        .expect("two roots");
    assert_eq!(
        node_ids(&both),
        sorted(vec![a, b, r1, r2, r3, r4, r5, s.c, s.d, s.m])
    );

    // ---- past and future IDs
    for (at, want) in [
        (i64::MAX, vec![r5]),
        (t4, vec![r5]),
        (t4 - 1, vec![r4]),
        (t3, vec![r4]),
        (t3 - 1, sorted(vec![r2, r3])),
        (t2, sorted(vec![r2, r3])),
        (t2 - 1, vec![r1]),
        (t1, vec![r1]),
        (t1 - 1, sorted(vec![a, b])),
        (0, sorted(vec![a, b])),
    ] {
        assert_eq!(
            g.past_ids(r5, at).await.expect("past"),
            want,
            "past at {at}"
        );
    }
    for (at, want) in [
        (0, vec![a]),
        (t1 - 1, vec![a]),
        (t1, vec![r1]),
        (t2 - 1, vec![r1]),
        (t2, sorted(vec![r2, r3])),
        (t3, vec![r4]),
        (t4 - 1, vec![r4]),
        (t4, sorted(vec![r5, r6])),
        (i64::MAX, sorted(vec![r5, r6])),
    ] {
        assert_eq!(
            g.future_ids(a, at).await.expect("future"),
            want,
            "future at {at}"
        );
    }
    assert_eq!(g.future_ids(r2, t3).await.expect("r2"), vec![r4]);
    assert_eq!(
        g.past_ids(r6, t3 - 1).await.expect("r6"),
        sorted(vec![r2, r3])
    );

    // ---- past_id_mapping
    let map = g.past_id_mapping(&[s.m], None).await.expect("map m");
    assert_eq!(
        map.past_id_map,
        BTreeMap::from([(s.m, sorted(vec![s.c, s.d]))])
    );
    assert_eq!(map.future_id_map, BTreeMap::from([(s.c, s.m), (s.d, s.m)]));
    // Through splits the future is ambiguous.
    let map = g.past_id_mapping(&[r5], None).await.expect("map r5");
    assert_eq!(map.past_id_map, BTreeMap::from([(r5, sorted(vec![a, b]))]));
    assert!(map.future_id_map.is_empty(), "{map:?}");
    let map = g.past_id_mapping(&[r5], Some(t3)).await.expect("map r5 t3");
    assert_eq!(
        map.past_id_map,
        BTreeMap::from([(r5, sorted(vec![r2, r3]))])
    );
    assert!(map.future_id_map.is_empty(), "{map:?}");
    // An unedited root maps to itself both ways.
    let all = g
        .roots(&s.f.ids, &RootQuery::default())
        .await
        .expect("roots");
    let lineage_roots = [a, b, r5, r6, s.c, s.d, s.m];
    let plain = *all
        .iter()
        .find(|r| !lineage_roots.contains(r))
        .expect("an unedited root");
    let map = g.past_id_mapping(&[plain], None).await.expect("map plain");
    assert_eq!(map.past_id_map, BTreeMap::from([(plain, vec![plain])]));
    assert_eq!(map.future_id_map, BTreeMap::from([(plain, plain)]));

    // ---- tabular change log
    let rows = g.tabular_change_log(r5).await.expect("tabular");
    let row = |op: u64,
               ts: i64,
               user: &str,
               before: Vec<u64>,
               after: Vec<u64>,
               kind: &str,
               is_merge: bool,
               in_neuron: bool| ChangeLogRow {
        operation_id: op,
        timestamp_micros: ts,
        user_id: user.into(),
        before_root_ids: before,
        after_root_ids: after,
        is_merge,
        kind: kind.into(),
        is_undo: kind == "undo",
        is_redo: kind == "redo",
        in_neuron,
        is_relevant: true,
    };
    assert_eq!(
        rows,
        vec![
            row(
                op1,
                t1,
                "alice",
                sorted(vec![a, b]),
                vec![r1],
                "merge",
                true,
                false
            ),
            row(
                op2,
                t2,
                "bob",
                vec![r1],
                sorted(vec![r2, r3]),
                "split",
                false,
                true
            ),
            row(
                op3,
                t3,
                "alice",
                sorted(vec![r2, r3]),
                vec![r4],
                "undo",
                true,
                false
            ),
            row(op4, t4, "bob", vec![r4], vec![r5], "redo", false, true),
        ]
    );
    // R6's log: the same operations, R6 after the redo.
    let rows6 = g.tabular_change_log(r6).await.expect("tabular r6");
    assert_eq!(
        rows6.iter().map(|r| r.operation_id).collect::<Vec<_>>(),
        vec![op1, op2, op3, op4]
    );
    assert_eq!(rows6[3].after_root_ids, vec![r6]);
    // An unedited root has none.
    assert!(g.tabular_change_log(plain).await.expect("plain").is_empty());

    // ---- change log
    let log = g.change_log(r5, None).await.expect("change log");
    assert_eq!((log.n_mergers, log.n_splits), (2, 2));
    assert_eq!(log.operation_ids, vec![op1, op2, op3, op4]);
    let mut past = sorted(vec![a, b]);
    past.extend([r1, r2.min(r3), r2.max(r3), r4]);
    assert_eq!(log.past_ids, past);
    assert_eq!(
        log.user_info,
        BTreeMap::from([
            (
                "alice".to_string(),
                UserEdits {
                    n_mergers: 2,
                    n_splits: 0
                }
            ),
            (
                "bob".to_string(),
                UserEdits {
                    n_mergers: 0,
                    n_splits: 2
                }
            ),
        ])
    );
    // Filtered: only the splits that cut R5 off.
    let filtered = g.change_log_with(r5, None, true).await.expect("filtered");
    assert_eq!((filtered.n_mergers, filtered.n_splits), (0, 2));
    assert_eq!(filtered.operation_ids, vec![op2, op4]);
    assert_eq!(filtered.past_ids, vec![r1, r4]);
    assert_eq!(
        filtered.user_info.keys().collect::<Vec<_>>(),
        vec![&"bob".to_string()]
    );
    // Since the undo: the undo and the redo.
    let recent = g.change_log(r5, Some(t3)).await.expect("since");
    assert_eq!((recent.n_mergers, recent.n_splits), (1, 1));
    assert_eq!(recent.operation_ids, vec![op3, op4]);
    assert_eq!(recent.past_ids, vec![r2.min(r3), r2.max(r3), r4]);
    let none = g.change_log(plain, None).await.expect("plain");
    assert_eq!(
        (none.n_mergers, none.n_splits, none.operation_ids.len()),
        (0, 0, 0)
    );

    // ---- merge log
    let res = g.geometry().resolution;
    let (pi, pj) = (point(&s.f, s.i).position_nm, point(&s.f, s.j).position_nm);
    let vox = |p: [f64; 3]| [0, 1, 2].map(|d| (p[d] / res[d]).trunc() as i64);
    let merges = g.merge_log(r5).await.expect("merge log");
    assert_eq!(merges.len(), 2);
    assert_eq!(merges[0].operation_id, op1);
    assert_eq!(merges[0].user, "alice");
    assert_eq!(merges[0].timestamp_micros, t1);
    assert_eq!(merges[0].added_edges, s.merge.added_edges);
    assert_eq!(merges[0].source_coords_nm, vec![pi]);
    assert_eq!(merges[0].sink_coords_nm, vec![pj]);
    assert_eq!(merges[0].source_coords_voxel, vec![vox(pi)]);
    assert_eq!(merges[0].sink_coords_voxel, vec![vox(pj)]);
    // The undone split re-activated what the split removed; the split had no points.
    assert_eq!(merges[1].operation_id, op3);
    assert_eq!(merges[1].added_edges, s.split.removed_edges);
    assert!(merges[1].source_coords_nm.is_empty() && merges[1].sink_coords_nm.is_empty());
    let carol_log = g.merge_log(s.m).await.expect("carol's merge log");
    assert_eq!(carol_log.len(), 1);
    assert_eq!(carol_log[0].operation_id, op5);
    assert_eq!(carol_log[0].added_edges, s.carol.added_edges);

    // ---- operation details
    let details = g.operation_details(&[op3, op1]).await.expect("details");
    assert_eq!(
        details
            .iter()
            .map(|d| (d.operation_id, d.kind.as_str(), d.user.as_str()))
            .collect::<Vec<_>>(),
        vec![(op3, "undo", "alice"), (op1, "merge", "alice")]
    );
    assert_eq!(details[0].old_roots, sorted(vec![r2, r3]));
    assert_eq!(details[0].new_roots, vec![r4]);
    assert_eq!(details[0].timestamp_micros, t3);
    assert_eq!(
        details[0]
            .extra
            .get("undone_operation")
            .and_then(|v| v.as_u64()),
        Some(op2)
    );
    assert_eq!(details[1].added_edges, s.merge.added_edges);
    let err = g
        .operation_details(&[op1, 999_999])
        .await
        .expect_err("unknown op");
    assert!(
        matches!(&err, GraphError::NotFound(m) if m.contains("999999")),
        "{err}"
    );
    assert!(err.is_client_error());

    // ---- user operations
    let ids = |v: Vec<cg_graph::oplog::OperationEntry>| -> Vec<u64> {
        v.into_iter().map(|e| e.operation_id).collect()
    };
    let uo = |user: Option<&'static str>, start: i64, end: i64, undone: bool| async move {
        ids(g
            .user_operations(user, start, end, undone)
            .await
            .expect("user operations"))
    };
    assert_eq!(uo(Some("alice"), 0, i64::MAX, true).await, vec![op1, op3]);
    assert_eq!(uo(Some("alice"), 0, i64::MAX, false).await, vec![op1]);
    assert_eq!(uo(Some("bob"), 0, i64::MAX, true).await, vec![op2, op4]);
    // The split was undone and then redone: it counts.
    assert_eq!(uo(Some("bob"), 0, i64::MAX, false).await, vec![op2]);
    // Before the redo it was undone.
    assert_eq!(uo(Some("bob"), 0, t4, false).await, Vec::<u64>::new());
    assert_eq!(uo(Some("bob"), 0, t4, true).await, vec![op2]);
    assert_eq!(uo(None, 0, i64::MAX, false).await, vec![op1, op2, op5]);
    assert_eq!(uo(None, t2, t3 + 1, true).await, vec![op2, op3]);
    assert_eq!(uo(Some("carol"), 0, i64::MAX, false).await, vec![op5]);
    assert_eq!(
        uo(Some("nobody"), 0, i64::MAX, true).await,
        Vec::<u64>::new()
    );
    assert!(matches!(
        g.user_operations(None, 10, 5, true).await,
        Err(GraphError::InvalidInput(_))
    ));

    // ---- timestamps
    assert_eq!(g.oldest_timestamp().await.expect("oldest"), s.ingest_ts);
    assert_eq!(g.last_edit(r5).await.expect("last edit r5"), t4);
    assert_eq!(g.last_edit(r1).await.expect("last edit r1"), t1);
    assert_eq!(g.last_edit(a).await.expect("last edit a"), s.ingest_ts);
    assert_eq!(g.last_edit(plain).await.expect("plain"), s.ingest_ts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_refuses_bad_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = fixture(client(dir.path()).await, "b", params(2, [2, 2, 2], 8)).await;
    ingest(
        &f.graph,
        f.source.clone(),
        &IngestOptions::default(),
        &|_| {},
    )
    .await
    .expect("ingest");
    let g = &f.graph;
    let root = g.root(f.ids[0], None).await.expect("root");
    let sv = f.ids[0];
    let client_error = |r: Result<(), GraphError>, id: u64| match r {
        Ok(()) => panic!("accepted {id}"),
        Err(e) => {
            assert!(e.is_client_error(), "{e}");
            assert!(e.to_string().contains(&id.to_string()), "{e}");
            e
        }
    };
    // A supervoxel is not a root.
    let e = client_error(g.last_edit(sv).await.map(|_| ()), sv);
    assert!(matches!(e, GraphError::InvalidInput(_)), "{e}");
    client_error(g.past_ids(sv, 0).await.map(|_| ()), sv);
    client_error(
        g.lineage_graph(&[root, sv], None, None).await.map(|_| ()),
        sv,
    );
    // A root-layer ID nobody made.
    let ghost = root + 100_000;
    let e = client_error(g.last_edit(ghost).await.map(|_| ()), ghost);
    assert!(matches!(e, GraphError::NotFound(_)), "{e}");
    client_error(g.future_ids(ghost, 0).await.map(|_| ()), ghost);
    client_error(g.change_log(ghost, None).await.map(|_| ()), ghost);
    client_error(g.tabular_change_log(ghost).await.map(|_| ()), ghost);
    client_error(g.merge_log(ghost).await.map(|_| ()), ghost);
    client_error(g.past_id_mapping(&[ghost], None).await.map(|_| ()), ghost);
    // Not an ID of this graph at all.
    let e = client_error(g.last_edit(u64::MAX).await.map(|_| ()), u64::MAX);
    assert!(matches!(e, GraphError::Id(_)), "{e}");
    // No edits yet: nothing in the log, the root is its own past and future.
    assert!(g
        .user_operations(None, 0, i64::MAX, true)
        .await
        .expect("ops")
        .is_empty());
    assert_eq!(g.past_ids(root, 0).await.expect("past"), vec![root]);
    assert_eq!(
        g.future_ids(root, i64::MAX).await.expect("future"),
        vec![root]
    );
    let lineage = g.lineage_graph(&[root], None, None).await.expect("lineage");
    assert_eq!(lineage.nodes.len(), 1);
    assert!(lineage.edges.is_empty());
    assert_eq!(lineage.nodes[0].operation_id, None);
    assert_eq!(lineage.nodes[0].superseded_by, None);
}
