//! Edits against our emulator in process. After every edit the roots must equal the connected
//! components of a model of the active edges, kept independently by the test.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cg_graph::edit::{EditOptions, EditResult, Point};
use cg_graph::ingest::{ingest, IngestOptions};
use cg_graph::query::RootQuery;
use cg_graph::GraphError;

mod common;
use common::{client, fixture, params, Fixture, Model};

async fn setup(dir: &std::path::Path, seed: u64) -> Fixture {
    let f = fixture(client(dir).await, "e", params(seed, [4, 3, 2], 30)).await;
    ingest(
        &f.graph,
        f.source.clone(),
        &IngestOptions::default(),
        &|_| {},
    )
    .await
    .expect("ingest");
    f
}

fn point(f: &Fixture, i: usize) -> Point {
    let p = f.synth.supervoxels[i].position;
    Point {
        supervoxel: f.ids[i],
        position_nm: [f64::from(p[0]), f64::from(p[1]), f64::from(p[2])],
    }
}

/// Two supervoxels of different objects, near each other.
async fn neighbours_in_two_objects(f: &Fixture) -> (usize, usize) {
    let roots = f
        .graph
        .roots(&f.ids, &RootQuery::default())
        .await
        .expect("roots");
    let sv = &f.synth.supervoxels;
    let mut best = None;
    for i in 0..sv.len() {
        for j in (i + 1)..sv.len().min(i + 400) {
            if roots[i] != roots[j] && sv[i].chunk == sv[j].chunk {
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

fn opts() -> EditOptions {
    EditOptions::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_split_undo_redo() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = setup(dir.path(), 1).await;
    let g = &f.graph;
    let mut model = Model::new(&f);
    model.check(g, &f.ids).await;
    let (i, j) = neighbours_in_two_objects(&f).await;
    let before = g
        .roots(&[f.ids[i], f.ids[j]], &RootQuery::default())
        .await
        .expect("roots");

    let merged = g
        .merge("alice", point(&f, i), point(&f, j), &opts())
        .await
        .expect("merge");
    assert_eq!(merged.new_roots.len(), 1);
    let mut old = before.clone();
    old.sort_unstable();
    assert_eq!(merged.old_roots, old);
    assert!(!merged.added_edges.is_empty());
    model.apply(&merged);
    model.check(g, &f.ids).await;
    let now = g
        .roots(&[f.ids[i], f.ids[j]], &RootQuery::default())
        .await
        .expect("roots");
    assert_eq!(now, vec![merged.new_roots[0]; 2]);
    // The past is unchanged.
    let then = g
        .roots(
            &[f.ids[i], f.ids[j]],
            &RootQuery {
                at: Some(merged.timestamp_micros - 1000),
                ..Default::default()
            },
        )
        .await
        .expect("roots then");
    assert_eq!(then, before);
    assert_eq!(
        g.is_latest(&[before[0], before[1], merged.new_roots[0]], None)
            .await
            .expect("latest"),
        vec![false, false, true]
    );
    // Merging again is refused.
    let err = g
        .merge("alice", point(&f, i), point(&f, j), &opts())
        .await
        .expect_err("again");
    assert!(matches!(err, GraphError::InvalidInput(_)), "{err}");

    // Split by removing exactly what the merge added.
    let split = g
        .split_edges("bob", &merged.added_edges, &opts())
        .await
        .expect("split");
    model.apply(&split);
    model.check(g, &f.ids).await;
    let after = g
        .roots(&[f.ids[i], f.ids[j]], &RootQuery::default())
        .await
        .expect("roots");
    assert_ne!(after[0], after[1]);

    // Undo the split: merged again. Undo the undo (= redo the split): apart again.
    let undo = g
        .undo("carol", split.operation_id, &opts())
        .await
        .expect("undo");
    assert_eq!(undo.added_edges, split.removed_edges);
    model.apply(&undo);
    model.check(g, &f.ids).await;
    let redo = g
        .undo("carol", undo.operation_id, &opts())
        .await
        .expect("undo of undo");
    assert_eq!(redo.removed_edges, split.removed_edges);
    model.apply(&redo);
    model.check(g, &f.ids).await;
    // Redo the merge itself.
    let again = g
        .redo("dave", merged.operation_id, &opts())
        .await
        .expect("redo merge");
    model.apply(&again);
    model.check(g, &f.ids).await;
    // The op log records every edit with its kind and user.
    let (entry, status) = g.operation(undo.operation_id).await.expect("op");
    assert_eq!(
        (entry.kind.as_str(), entry.user.as_str(), status.as_str()),
        ("undo", "carol", "done")
    );
    // Nothing left to redo once it is applied.
    assert!(g.redo("dave", merged.operation_id, &opts()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multicut_separates_a_false_merge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = setup(dir.path(), 2).await;
    let g = &f.graph;
    let mut model = Model::new(&f);
    let roots = g.roots(&f.ids, &RootQuery::default()).await.expect("roots");
    // A root holding two neurites (a false merge), and a supervoxel of each, far apart
    // inside their own neurite.
    let sv = &f.synth.supervoxels;
    let mut by_root: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, &r) in roots.iter().enumerate() {
        by_root.entry(r).or_default().push(i);
    }
    let mut done = 0;
    for members in by_root.values() {
        let neurites: HashSet<u32> = members.iter().map(|&i| sv[i].neurite).collect();
        if neurites.len() != 2 {
            continue;
        }
        let mut it = neurites.iter();
        let (na, nb) = (*it.next().expect("a"), *it.next().expect("b"));
        let side_a: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&i| sv[i].neurite == na)
            .collect();
        let side_b: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&i| sv[i].neurite == nb)
            .collect();
        if side_a.len() < 6 || side_b.len() < 6 {
            continue;
        }
        let sources = [point(&f, side_a[side_a.len() / 2])];
        let sinks = [point(&f, side_b[side_b.len() / 2])];
        let wide = EditOptions {
            bbox_margin_voxels: [512, 512, 512],
            ..opts()
        };
        let preview = match g.split_preview(&sources, &sinks, &wide).await {
            Ok(p) => p,
            Err(GraphError::InvalidInput(_)) => continue,
            Err(e) => panic!("{e}"),
        };
        assert!(!preview.cut_edges.is_empty());
        let r = g
            .multicut("erin", &sources, &sinks, &wide)
            .await
            .expect("multicut");
        assert_eq!(r.removed_edges, preview.cut_edges, "preview and cut agree");
        model.apply(&r);
        model.check(g, &f.ids).await;
        let after = g
            .roots(
                &[sources[0].supervoxel, sinks[0].supervoxel],
                &RootQuery::default(),
            )
            .await
            .expect("roots");
        assert_ne!(after[0], after[1], "the cut separates source and sink");
        done += 1;
        if done == 2 {
            break;
        }
    }
    assert!(done > 0, "found a false merge to cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_edits_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = setup(dir.path(), 3).await;
    let g = &f.graph;
    let model = Model::new(&f);
    let (i, j) = neighbours_in_two_objects(&f).await;
    let roots = g.roots(&f.ids, &RootQuery::default()).await.expect("roots");
    let same = (0..f.ids.len())
        .find(|&k| k != i && roots[k] == roots[i])
        .expect("same root");
    let msg = |r: Result<EditResult, GraphError>| match r {
        Ok(_) => panic!("accepted"),
        Err(e) => {
            assert!(e.is_client_error(), "{e}");
            e.to_string()
        }
    };
    assert!(msg(g.merge("x", point(&f, i), point(&f, same), &opts()).await).contains("already"));
    let mut far = point(&f, j);
    far.position_nm = [1e9, 0.0, 0.0];
    assert!(msg(g.merge("x", point(&f, i), far, &opts()).await).contains("outside"));
    let near = EditOptions {
        max_merge_distance_chunks: 0,
        ..opts()
    };
    let mut moved = point(&f, j);
    moved.position_nm[0] = if moved.position_nm[0] > 60.0 {
        0.0
    } else {
        120.0
    };
    assert!(msg(g.merge("x", point(&f, i), moved, &near).await).contains("apart"));
    assert!(msg(g.split_edges("x", &[[f.ids[i], f.ids[j]]], &opts()).await).contains("objects"));
    assert!(msg(g
        .multicut("x", &[point(&f, i)], &[point(&f, i)], &opts())
        .await)
    .contains("both"));
    assert!(msg(g
        .multicut("x", &[point(&f, i)], &[point(&f, j)], &opts())
        .await)
    .contains("different objects"));
    assert!(msg(g.multicut("x", &[], &[point(&f, j)], &opts()).await).contains("source"));
    assert!(msg(g.undo("x", 999_999, &opts()).await).contains("999999"));
    let mut bad = point(&f, i);
    bad.supervoxel = u64::MAX;
    assert!(g.merge("x", bad, point(&f, j), &opts()).await.is_err());
    model.check(g, &f.ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edits_serialize_per_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = setup(dir.path(), 4).await;
    let g = f.graph.clone();
    let mut model = Model::new(&f);
    // Several merges at once; some share roots.
    let roots = g.roots(&f.ids, &RootQuery::default()).await.expect("roots");
    let sv = &f.synth.supervoxels;
    let mut pairs = Vec::new();
    let mut k = 0;
    while pairs.len() < 6 && k < f.ids.len() {
        if let Some(j) =
            (k + 1..f.ids.len()).find(|&j| roots[j] != roots[k] && sv[j].chunk == sv[k].chunk)
        {
            pairs.push((k, j));
        }
        k += 37;
    }
    assert!(pairs.len() >= 3);
    let f = Arc::new(f);
    let mut tasks = Vec::new();
    for (a, b) in pairs {
        let (g, f) = (g.clone(), f.clone());
        tasks.push(tokio::spawn(async move {
            // Conflicts are retryable: retry as a client would, with a little jitter.
            let mut conflicts = 0;
            loop {
                match g
                    .merge("p", point(&f, a), point(&f, b), &EditOptions::default())
                    .await
                {
                    Err(GraphError::Conflict(m)) => {
                        assert!(m.contains("retry"), "{m}");
                        conflicts += 1;
                        assert!(conflicts < 200, "still conflicting after 200 tries");
                        let wait = 1 + (a as u64 * 7 + conflicts) % 5;
                        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                    }
                    other => return (other, conflicts),
                }
            }
        }));
    }
    let (mut ok, mut conflicts) = (0, 0);
    for t in tasks {
        let (result, c) = t.await.expect("join");
        conflicts += c;
        match result {
            Ok(r) => {
                model.apply(&r);
                ok += 1;
            }
            // Two pairs that share objects: the later one finds them merged.
            Err(GraphError::InvalidInput(m)) => assert!(m.contains("already"), "{m}"),
            Err(e) => panic!("{e}"),
        }
    }
    eprintln!("{ok} merges, {conflicts} conflicts retried");
    assert!(ok >= 3, "only {ok} merges went through");
    model.check(&g, &f.ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_edits_are_finished_by_the_next_edit_or_recovery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = setup(dir.path(), 5).await;
    let g = &f.graph;
    let mut model = Model::new(&f);
    let (i, j) = neighbours_in_two_objects(&f).await;
    // Cut off after two plan rows: half an edit is on disk.
    let crash = EditOptions {
        crash_after_rows: Some(2),
        lock_expiry_micros: 0,
        ..opts()
    };
    let err = g
        .merge("x", point(&f, i), point(&f, j), &crash)
        .await
        .expect_err("crashed");
    assert!(matches!(err, GraphError::Storage(_)), "{err}");
    // The next edit on that root finds the expired lock and finishes the merge first.
    let expired = EditOptions {
        lock_expiry_micros: 0,
        ..opts()
    };
    let next = g.merge("y", point(&f, i), point(&f, j), &expired).await;
    assert!(
        matches!(&next, Err(GraphError::Conflict(m)) if m.contains("replaced"))
            || matches!(&next, Err(GraphError::InvalidInput(m)) if m.contains("already")),
        "{next:?}"
    );
    let op = g.operations_between(0, i64::MAX).await.expect("ops");
    let first = op.iter().find(|o| o.user == "x").expect("logged");
    assert_eq!(g.operation(first.operation_id).await.expect("op").1, "done");
    for e in &first.added_edges {
        model.active.insert(*e);
    }
    model.check(g, &f.ids).await;

    // Start-up recovery finishes an edit nobody touched since.
    let (a, b) = neighbours_in_two_objects(&f).await;
    g.merge("z", point(&f, a), point(&f, b), &crash)
        .await
        .expect_err("crashed");
    assert_eq!(g.recover(&expired).await.expect("recover"), 1);
    assert_eq!(g.recover(&expired).await.expect("recover again"), 0);
    let ops = g.operations_between(0, i64::MAX).await.expect("ops");
    let z = ops.iter().find(|o| o.user == "z").expect("logged");
    for e in &z.added_edges {
        model.active.insert(*e);
    }
    model.check(g, &f.ids).await;
    // Nothing stays locked: a further edit on the merged root works.
    let (c, d) = neighbours_in_two_objects(&f).await;
    let r = g
        .merge("w", point(&f, c), point(&f, d), &opts())
        .await
        .expect("merge after recovery");
    model.apply(&r);
    model.check(g, &f.ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_of_an_edit_that_died_before_its_plan_are_released() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = setup(dir.path(), 6).await;
    let g = &f.graph;
    let model = Model::new(&f);
    let (i, j) = neighbours_in_two_objects(&f).await;
    let crash = EditOptions {
        crash_before_plan: true,
        ..opts()
    };
    g.merge("x", point(&f, i), point(&f, j), &crash)
        .await
        .expect_err("crashed");
    // The roots stay locked: a live lock (60 s) refuses other edits, retryably.
    let err = g
        .merge("y", point(&f, i), point(&f, j), &opts())
        .await
        .expect_err("locked");
    assert!(
        matches!(&err, GraphError::Conflict(m) if m.contains("retry")),
        "{err}"
    );
    // Within the lock's life, recovery for several processes leaves it alone ...
    assert_eq!(g.recover(&opts()).await.expect("recover"), 0);
    // ... and a process that owns its storage releases it at start-up.
    let owner = EditOptions {
        lock_expiry_micros: 0,
        ..opts()
    };
    assert_eq!(g.recover(&owner).await.expect("recover"), 1);
    assert_eq!(g.recover(&owner).await.expect("again"), 0);
    // Nothing was written but the op-log row; the edit now goes through.
    model.check(g, &f.ids).await;
    let r = g
        .merge("y", point(&f, i), point(&f, j), &opts())
        .await
        .expect("merge after release");
    assert_eq!(r.new_roots.len(), 1);
}
