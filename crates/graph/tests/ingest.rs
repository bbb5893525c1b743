//! Ingest and queries against our emulator in process (real gRPC over in-memory pipes).
//! The same scenarios run against Google's emulator in `tests/tests/graph.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cg_bigtable::{filter, mutation, Client, ReadRows};
use cg_graph::hierarchy;
use cg_graph::ingest::{ingest, IngestOptions, IngestSource, MemorySource};
use cg_graph::query::RootQuery;
use cg_graph::schema::{self, Meta};
use cg_graph::synthetic::SyntheticGraph;
use cg_graph::ChunkedGraph;
use cg_ids::{layer_of, row_key, VoxelBox};

mod common;
use common::{client, components, fixture, params, Dsu, Fixture};

/// Node count per layer under the given roots.
async fn census(graph: &ChunkedGraph, roots: &[u64]) -> HashMap<u8, usize> {
    let mut out = HashMap::new();
    let mut frontier: Vec<u64> = roots.to_vec();
    while !frontier.is_empty() {
        for &n in &frontier {
            *out.entry(layer_of(n)).or_default() += 1;
        }
        let lists = graph.children(&frontier).await.expect("children");
        frontier = lists
            .iter()
            .flat_map(|l| l.ids.iter().copied())
            .filter(|&c| layer_of(c) > 1)
            .collect();
    }
    out
}

async fn check_graph(f: &Fixture) {
    let g = &f.graph;
    let n_layers = g.geometry().n_layers;
    let roots = g.roots(&f.ids, &RootQuery::default()).await.expect("roots");
    // Every supervoxel has one root, at the root layer.
    assert!(roots.iter().all(|&r| layer_of(r) == n_layers));
    // Roots are the connected components of the active edges.
    let comp = components(&f.synth);
    let mut root_of_comp: HashMap<usize, u64> = HashMap::new();
    let mut comp_of_root: HashMap<u64, usize> = HashMap::new();
    for (i, &r) in roots.iter().enumerate() {
        assert_eq!(*root_of_comp.entry(comp[i]).or_insert(r), r, "sv {i}");
        assert_eq!(
            *comp_of_root.entry(r).or_insert(comp[i]),
            comp[i],
            "root {r}"
        );
    }
    // The leaves of all roots partition the supervoxels.
    let distinct: Vec<u64> = {
        let mut d = roots.clone();
        d.sort_unstable();
        d.dedup();
        d
    };
    let mut seen = HashSet::new();
    for &r in &distinct {
        for sv in g.leaves(r, None, 1).await.expect("leaves") {
            assert!(seen.insert(sv), "supervoxel {sv} under two roots");
        }
    }
    assert_eq!(seen.len(), f.ids.len());
    // The chunked ingest builds the same layers as the in-memory reference.
    let chunks: Vec<[u32; 3]> = f.synth.supervoxels.iter().map(|s| s.chunk).collect();
    let active: Vec<(usize, usize)> = f
        .synth
        .edges
        .iter()
        .filter(|e| SyntheticGraph::is_active(e))
        .map(|e| (e.a, e.b))
        .collect();
    let h = hierarchy::build(&chunks, &active, n_layers).expect("reference");
    let mut expected: HashMap<u8, usize> = HashMap::new();
    for n in &h.nodes {
        *expected.entry(n.layer).or_default() += 1;
    }
    assert_eq!(census(g, &distinct).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_builds_the_connected_components() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = client(dir.path()).await;
    // Grids: one chunk (2 layers), odd sizes, and a deeper one.
    for (i, (chunks, neurites)) in [([1, 1, 1], 8), ([3, 2, 1], 20), ([5, 3, 4], 40)]
        .into_iter()
        .enumerate()
    {
        let f = fixture(
            c.clone(),
            &format!("g{i}"),
            params(i as u64, chunks, neurites),
        )
        .await;
        let report = ingest(
            &f.graph,
            f.source.clone(),
            &IngestOptions::default(),
            &|_| {},
        )
        .await
        .expect("ingest");
        assert_eq!(report.supervoxels as usize, f.ids.len());
        check_graph(&f).await;
        // A cold cache gives the same answers.
        f.graph.clear_cache();
        check_graph(&f).await;
    }
}

/// Every cell of the table, with timestamps.
async fn dump(c: &Client, table: &str) -> Vec<(Vec<u8>, String, Vec<u8>, i64, Vec<u8>)> {
    let rows = c.read_rows_vec(table, ReadRows::new()).await.expect("dump");
    let mut out = Vec::new();
    for r in rows {
        for f in r.families {
            for col in f.columns {
                for cell in col.cells {
                    out.push((
                        r.key.clone(),
                        f.name.clone(),
                        col.qualifier.clone(),
                        cell.timestamp_micros,
                        cell.value,
                    ));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_ingest_resumes_to_the_same_graph() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = client(dir.path()).await;
    let p = params(11, [4, 4, 2], 40);
    let whole = fixture(c.clone(), "whole", p.clone()).await;
    ingest(
        &whole.graph,
        whole.source.clone(),
        &IngestOptions::default(),
        &|_| {},
    )
    .await
    .expect("ingest");

    let cut = fixture(c.clone(), "cut", p).await;
    // Same ingest timestamp as the uninterrupted run, so the dumps compare cell for cell.
    let meta = Meta {
        ingest_timestamp_micros: whole.graph.meta().ingest_timestamp_micros,
        ..cut.graph.meta().clone()
    };
    c.admin().delete_table("cut").await.expect("drop");
    let cut_graph = ChunkedGraph::create(c.clone(), "cut", meta)
        .await
        .expect("create");
    // Abandon the ingest part-way, several times at different points, then finish it.
    for stop_after in [3u64, 10, 20] {
        let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let notify = Arc::new(tokio::sync::Notify::new());
        let (s2, n2) = (seen.clone(), notify.clone());
        let progress = move |p: cg_graph::ingest::IngestProgress| {
            s2.store(p.done, std::sync::atomic::Ordering::SeqCst);
            if p.done >= stop_after {
                n2.notify_one();
            }
        };
        let opts = IngestOptions {
            concurrency: 2,
            batch_rows: 7,
            ..Default::default()
        };
        tokio::select! {
            r = ingest(&cut_graph, cut.source.clone(), &opts, &progress) => { r.expect("ingest"); }
            _ = notify.notified() => {}
        }
    }
    let report = ingest(
        &cut_graph,
        cut.source.clone(),
        &IngestOptions::default(),
        &|_| {},
    )
    .await
    .expect("resume");
    assert!(report.tasks_skipped > 0, "{report:?}");
    assert!(
        report.tasks_run.iter().sum::<u64>() > 0,
        "the cut runs left work: {report:?}"
    );
    assert_eq!(dump(&c, "whole").await, dump(&c, "cut").await);
    // A finished ingest re-run does nothing.
    let again = ingest(
        &cut_graph,
        cut.source.clone(),
        &IngestOptions::default(),
        &|_| {},
    )
    .await
    .expect("rerun");
    assert_eq!(again.tasks_run.iter().sum::<u64>(), 0);
    assert_eq!(dump(&c, "whole").await, dump(&c, "cut").await);
}

/// A distributed ingest runs one layer at a time, each in shards (a Kubernetes Indexed Job
/// per layer); the table must come out cell for cell like a one-process ingest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_layer_by_layer_ingest_equals_the_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = client(dir.path()).await;
    let p = params(13, [4, 4, 2], 40);
    let whole = fixture(c.clone(), "whole", p.clone()).await;
    ingest(
        &whole.graph,
        whole.source.clone(),
        &IngestOptions::default(),
        &|_| {},
    )
    .await
    .expect("ingest");
    let n_layers = whole.graph.geometry().n_layers;
    assert!(n_layers >= 4, "{n_layers} layers");

    let sharded = fixture(c.clone(), "sharded", p).await;
    let meta = Meta {
        ingest_timestamp_micros: whole.graph.meta().ingest_timestamp_micros,
        ..sharded.graph.meta().clone()
    };
    c.admin().delete_table("sharded").await.expect("drop");
    let g = ChunkedGraph::create(c.clone(), "sharded", meta)
        .await
        .expect("create");
    let run = |layer: u8, shard: (u32, u32)| {
        let g = g.clone();
        let source = sharded.source.clone();
        async move {
            let opts = IngestOptions {
                layer: Some(layer),
                shard: Some(shard),
                ..Default::default()
            };
            ingest(&g, source, &opts, &|_| {}).await
        }
    };
    // Layer 3 before layer 2 is complete is refused, naming the unfinished layer.
    run(2, (0, 3)).await.expect("layer 2, shard 0");
    let err = run(3, (0, 1)).await.expect_err("layer 3 too early");
    assert!(err.to_string().contains("layer 2"), "{err}");
    for i in 1..3 {
        run(2, (i, 3)).await.expect("layer 2");
    }
    for layer in 3..=n_layers {
        // Shards in reverse order and one run twice: order and repeats do not matter.
        for i in (0..2).rev() {
            run(layer, (i, 2)).await.expect("upper layer");
        }
        let again = run(layer, (0, 2)).await.expect("repeat");
        assert_eq!(again.tasks_run.iter().sum::<u64>(), 0, "{again:?}");
    }
    assert_eq!(dump(&c, "whole").await, dump(&c, "sharded").await);
    assert!(
        run(2, (3, 3)).await.is_err(),
        "index must be below the count"
    );
    assert!(run(n_layers + 1, (0, 1)).await.is_err(), "no such layer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_answer_like_the_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = client(dir.path()).await;
    let f = fixture(c.clone(), "q", params(5, [4, 3, 3], 30)).await;
    ingest(
        &f.graph,
        f.source.clone(),
        &IngestOptions::default(),
        &|_| {},
    )
    .await
    .expect("ingest");
    let g = &f.graph;
    let geo = g.geometry().clone();
    let n_layers = geo.n_layers;
    assert!(n_layers >= 4);
    let roots = g.roots(&f.ids, &RootQuery::default()).await.expect("roots");

    // stop_layer: 2 gives the parent; ceil lands at or above, no_ceil at or below.
    let parents = g.parents(&f.ids, None).await.expect("parents");
    let l2 = g
        .roots(
            &f.ids,
            &RootQuery {
                stop_layer: Some(2),
                ..Default::default()
            },
        )
        .await
        .expect("stop 2");
    assert_eq!(
        l2,
        parents
            .iter()
            .map(|p| p.expect("parent"))
            .collect::<Vec<_>>()
    );
    let ceil = g
        .roots(
            &f.ids,
            &RootQuery {
                stop_layer: Some(3),
                ..Default::default()
            },
        )
        .await
        .expect("ceil");
    let floor = g
        .roots(
            &f.ids,
            &RootQuery {
                stop_layer: Some(3),
                no_ceil: true,
                ..Default::default()
            },
        )
        .await
        .expect("floor");
    assert!(ceil.iter().all(|&n| layer_of(n) >= 3));
    assert!(floor.iter().all(|&n| layer_of(n) <= 3 && layer_of(n) >= 2));
    assert!(
        ceil.iter().zip(&floor).any(|(a, b)| a != b),
        "skip connections exist"
    );
    assert!(ceil
        .iter()
        .zip(&floor)
        .all(|(a, b)| layer_of(*a) != 3 || a == b));

    // Unknown supervoxels: an error naming them, or 0 with fail_to_zero.
    let chunk = geo.chunk_id(1, [0, 0, 0]).expect("chunk");
    let ghost = geo.node_id(chunk, 999_999).expect("id");
    let err = g.root(ghost, None).await.expect_err("unknown");
    assert!(err.to_string().contains(&ghost.to_string()), "{err}");
    assert!(err.is_client_error());
    let z = g
        .roots(
            &[f.ids[0], ghost],
            &RootQuery {
                fail_to_zero: true,
                ..Default::default()
            },
        )
        .await
        .expect("fail to zero");
    assert_eq!(z, vec![roots[0], 0]);
    assert!(g.root(u64::MAX, None).await.is_err());
    // Before the ingest nothing existed.
    let before = g.meta().ingest_timestamp_micros - 1000;
    assert!(g.root(f.ids[0], Some(before)).await.is_err());

    // Leaves in a box: the root's supervoxels whose chunk overlaps the box.
    let big = {
        let mut count: HashMap<u64, usize> = HashMap::new();
        for r in &roots {
            *count.entry(*r).or_default() += 1;
        }
        count.into_iter().max_by_key(|x| x.1).expect("a root").0
    };
    let all = g.leaves(big, None, 1).await.expect("leaves");
    let bbox = VoxelBox::new([0, 0, 0], [40, 70, 64]);
    let inside = g.leaves(big, Some(bbox), 1).await.expect("leaves in box");
    let expected: Vec<u64> = all
        .iter()
        .copied()
        .filter(|&sv| geo.chunk_overlaps(1, geo.coords_of(sv), &bbox))
        .collect();
    assert_eq!(inside, expected);
    assert!(!inside.is_empty() && inside.len() < all.len());
    // Leaves at layer 2 are the parents of the leaves.
    let l2_leaves: HashSet<u64> = g
        .leaves(big, None, 2)
        .await
        .expect("l2")
        .into_iter()
        .collect();
    let want: HashSet<u64> = g
        .parents(&all, None)
        .await
        .expect("parents")
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(l2_leaves, want);

    // Subgraph edges: exactly the input edges among the leaves, with their state.
    let sub = g.subgraph_edges(big, None, None).await.expect("subgraph");
    let leafset: HashSet<u64> = all.iter().copied().collect();
    let mut want: HashMap<(u64, u64), (bool, u32)> = HashMap::new();
    for e in &f.synth.edges {
        let (a, b) = (f.ids[e.a], f.ids[e.b]);
        if leafset.contains(&a) && leafset.contains(&b) {
            let k = (a.min(b), a.max(b));
            let entry = want.entry(k).or_insert((false, 0));
            entry.0 |= SyntheticGraph::is_active(e);
            entry.1 += e.area;
        }
    }
    let got: HashMap<(u64, u64), (bool, u32)> = sub
        .iter()
        .map(|e| ((e.a, e.b), (e.active, e.area)))
        .collect();
    assert_eq!(got, want);
    assert!(sub.iter().any(|e| !e.active), "inactive edges are kept too");

    // The layer-2 graph connects all of the root's layer-2 nodes.
    let l2g = g.l2_graph(big, None).await.expect("l2 graph");
    let nodes: Vec<u64> = l2_leaves.iter().copied().collect();
    let index: HashMap<u64, usize> = nodes.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut d = Dsu((0..nodes.len()).collect());
    for [a, b] in &l2g {
        d.union(index[a], index[b]);
    }
    let r0 = d.find(0);
    assert!(
        (0..nodes.len()).all(|i| d.find(i) == r0),
        "layer-2 graph is connected"
    );

    // Timestamps and versions.
    let ts = g
        .node_timestamps(&[big, f.ids[0]])
        .await
        .expect("timestamps");
    assert_eq!(ts, vec![g.meta().ingest_timestamp_micros; 2]);
    assert_eq!(g.is_latest(&[big], None).await.expect("latest"), vec![true]);
    let ingest_ts = g.meta().ingest_timestamp_micros;
    assert_eq!(
        g.valid_nodes(&[big, ghost], ingest_ts, ingest_ts + 1000)
            .await
            .expect("valid"),
        vec![big]
    );
    assert!(g
        .valid_nodes(&[big], 0, ingest_ts - 1)
        .await
        .expect("valid")
        .is_empty());
}

/// Writes a merge of two roots the way an edit does: a new root over both roots' children,
/// new parent versions, lineage and an op-log entry, all at one timestamp.
async fn fake_merge(g: &ChunkedGraph, r1: u64, r2: u64, ts: i64) -> u64 {
    let geo = g.geometry();
    let c = g.client();
    let root_chunk = geo.chunk_of(r1);
    let counter = c
        .read_modify_write_row(
            g.table(),
            cg_ids::counter_key(root_chunk),
            vec![mutation::increment_amount(
                schema::COUNTERS,
                schema::COUNTER,
                1,
            )],
        )
        .await
        .expect("counter");
    let seg = mutation::decode_i64(
        &counter
            .cell(schema::COUNTERS, schema::COUNTER)
            .expect("cell")
            .value,
    )
    .expect("i64") as u64;
    let r3 = geo.node_id(root_chunk, seg).expect("id");
    let lists = g.children(&[r1, r2]).await.expect("children");
    let kids: Vec<u64> = lists.iter().flat_map(|l| l.ids.iter().copied()).collect();
    let mut rows = vec![(
        row_key(r3).to_vec(),
        vec![
            mutation::set_cell(
                schema::IMMUTABLE,
                schema::CHILDREN,
                ts,
                schema::encode_ids(&kids),
            ),
            mutation::set_cell(
                schema::VERSIONED,
                schema::FORMER_PARENTS,
                ts,
                schema::encode_ids(&[r1, r2]),
            ),
        ],
    )];
    for k in &kids {
        rows.push((
            row_key(*k).to_vec(),
            vec![mutation::set_cell(
                schema::VERSIONED,
                schema::PARENT,
                ts,
                r3.to_le_bytes().to_vec(),
            )],
        ));
    }
    for r in [r1, r2] {
        rows.push((
            row_key(r).to_vec(),
            vec![mutation::set_cell(
                schema::VERSIONED,
                schema::NEW_PARENTS,
                ts,
                schema::encode_ids(&[r3]),
            )],
        ));
    }
    let entry = cg_graph::oplog::OperationEntry {
        operation_id: 1,
        timestamp_micros: ts,
        kind: "merge".into(),
        old_roots: vec![r1, r2],
        new_roots: vec![r3],
        ..Default::default()
    };
    rows.push((
        schema::op_key(1),
        vec![mutation::set_cell(
            schema::IMMUTABLE,
            schema::ENTRY,
            ts,
            serde_json::to_vec(&entry).expect("json"),
        )],
    ));
    c.mutate_rows(g.table(), rows).await.expect("write edit");
    r3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_at_a_timestamp_see_the_graph_of_that_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = client(dir.path()).await;
    let f = fixture(c.clone(), "t", params(9, [3, 3, 2], 25)).await;
    ingest(
        &f.graph,
        f.source.clone(),
        &IngestOptions::default(),
        &|_| {},
    )
    .await
    .expect("ingest");
    let g = &f.graph;
    // Warm the caches with current answers.
    let before = g.roots(&f.ids, &RootQuery::default()).await.expect("roots");
    let r1 = before[0];
    let sv2 = (0..f.ids.len())
        .find(|&i| before[i] != r1)
        .expect("two roots");
    let r2 = before[sv2];
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let t_edit = mutation::now_micros();
    let r3 = fake_merge(g, r1, r2, t_edit).await;
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;

    // Now: the cached chains are detected stale and re-read.
    let after = g
        .roots(&f.ids, &RootQuery::default())
        .await
        .expect("roots now");
    for i in 0..f.ids.len() {
        let want = if before[i] == r1 || before[i] == r2 {
            r3
        } else {
            before[i]
        };
        assert_eq!(after[i], want, "sv {i}");
    }
    // Just before the edit: the old roots.
    let past = g
        .roots(
            &f.ids,
            &RootQuery {
                at: Some(t_edit - 1000),
                ..Default::default()
            },
        )
        .await
        .expect("roots before");
    assert_eq!(past, before);
    // Roots of the old roots themselves; the new root did not exist before the edit.
    assert_eq!(g.root(r1, Some(t_edit - 1000)).await.expect("old"), r1);
    assert!(g.root(r3, Some(t_edit - 1000)).await.is_err());
    assert_eq!(g.root(r3, None).await.expect("new"), r3);

    assert_eq!(
        g.is_latest(&[r1, r2, r3], None).await.expect("latest"),
        vec![false, false, true]
    );
    assert_eq!(
        g.is_latest(&[r1, r2], Some(t_edit - 1000))
            .await
            .expect("latest then"),
        vec![true, true]
    );
    assert_eq!(g.node_timestamps(&[r3]).await.expect("ts"), vec![t_edit]);
    let (new, old) = g.delta_roots(t_edit, t_edit + 1000).await.expect("delta");
    assert_eq!(new, vec![r3]);
    let mut want_old = vec![r1, r2];
    want_old.sort_unstable();
    assert_eq!(old, want_old);
    let (new, old) = g.delta_roots(0, t_edit).await.expect("delta before");
    assert!(new.is_empty() && old.is_empty());
    assert_eq!(
        g.valid_nodes(&[r1, r3], t_edit, t_edit)
            .await
            .expect("valid"),
        vec![r3]
    );
    let mut leaves = g.leaves(r3, None, 1).await.expect("leaves");
    let mut want: Vec<u64> = g.leaves(r1, None, 1).await.expect("l1");
    want.extend(g.leaves(r2, None, 1).await.expect("l2"));
    leaves.sort_unstable();
    want.sort_unstable();
    assert_eq!(leaves, want);
    // The op log lists the edit.
    let ops = g.operations_between(t_edit, t_edit + 1).await.expect("ops");
    assert_eq!(ops.len(), 1);
    let _ = filter::pass_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_reason() {
    use cg_graph::ingest::{Agglomeration, RawEdge};
    let geo = cg_ids::Geometry::new([64, 64, 64], [32, 32, 32]).expect("geometry");
    let a = geo
        .node_id(geo.chunk_id(1, [0, 0, 0]).expect("c"), 1)
        .expect("id");
    let b = geo
        .node_id(geo.chunk_id(1, [1, 0, 0]).expect("c"), 1)
        .expect("id");
    let edge = |a, b, kind| RawEdge {
        a,
        b,
        affinity: 0.9,
        area: 1,
        kind,
    };
    let agg = Agglomeration::Threshold(0.5);
    let err = |r: cg_graph::Result<MemorySource>| match r {
        Ok(_) => panic!("accepted bad input"),
        Err(e) => e.to_string(),
    };
    let e = err(MemorySource::new(&geo, &[a, a], &[], &agg));
    assert!(e.contains("twice"), "{e}");
    assert!(
        err(MemorySource::new(&geo, &[a], &[edge(a, b, None)], &agg)).contains("not in the input")
    );
    assert!(err(MemorySource::new(&geo, &[a], &[edge(a, a, None)], &agg)).contains("itself"));
    assert!(err(MemorySource::new(
        &geo,
        &[a, b],
        &[edge(a, b, Some(cg_graph::ingest::EdgeKind::InChunk))],
        &agg
    ))
    .contains("InChunk"));
    assert!(err(MemorySource::new(&geo, &[(2 << 56) | 5], &[], &agg)).contains("supervoxel"));
    let ok =
        MemorySource::new(&geo, &[a, b], &[edge(a, b, None), edge(b, a, None)], &agg).expect("ok");
    assert_eq!(ok.edges, 1);
    assert_eq!(ok.chunks().len(), 2);
}
