//! Model test: seeded random sequences of merges, splits, undos and redos. After every edit
//! the roots and leaves must be the components of an independently kept set of active edges,
//! every edit must publish its event, and at the end reading at each past edit's time must
//! give back the model as it was then.

use std::collections::HashSet;

use cg_graph::edit::{EditOptions, EditResult, Point};
use cg_graph::events::EditEvent;
use cg_graph::ingest::{ingest, IngestOptions};
use cg_graph::query::RootQuery;
use cg_graph::{CacheOptions, ChunkedGraph, GraphError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod common;
use common::{client, fixture, params, roots_at, Dsu, Fixture, Model};

fn point(f: &Fixture, i: usize) -> Point {
    let p = f.synth.supervoxels[i].position;
    Point {
        supervoxel: f.ids[i],
        position_nm: [f64::from(p[0]), f64::from(p[1]), f64::from(p[2])],
    }
}

/// Component index of every supervoxel under the model.
fn components(model: &Model, n: usize) -> Vec<usize> {
    let mut d = Dsu((0..n).collect());
    for e in &model.active {
        d.union(model.index[&e[0]], model.index[&e[1]]);
    }
    (0..n).map(|i| d.find(i)).collect()
}

enum Kind {
    Merge,
    SplitEdge,
    Multicut,
    Undo,
    Redo,
}

/// Picks and runs one random edit. `Ok(None)`: nothing suitable was found.
async fn random_edit(
    g: &ChunkedGraph,
    f: &Fixture,
    model: &Model,
    rng: &mut StdRng,
    ops: &[u64],
    opts: &EditOptions,
) -> Result<Option<EditResult>, GraphError> {
    let sv = &f.synth.supervoxels;
    let n = f.ids.len();
    let comp = components(model, n);
    let kind = match rng.random_range(0..10) {
        0..=3 => Kind::Merge,
        4..=5 => Kind::SplitEdge,
        6 => Kind::Multicut,
        7..=8 => Kind::Undo,
        _ => Kind::Redo,
    };
    match kind {
        Kind::Merge => {
            for _ in 0..50 {
                let i = rng.random_range(0..n);
                let others: Vec<usize> = (0..n)
                    .filter(|&j| sv[j].chunk == sv[i].chunk && comp[j] != comp[i])
                    .collect();
                if others.is_empty() {
                    continue;
                }
                let j = others[rng.random_range(0..others.len())];
                return g.merge("m", point(f, i), point(f, j), opts).await.map(Some);
            }
            Ok(None)
        }
        Kind::SplitEdge => {
            // An active edge inside one chunk (cross-chunk links cannot be cut by hand).
            let mut inside: Vec<[u64; 2]> = model
                .active
                .iter()
                .copied()
                .filter(|e| sv[model.index[&e[0]]].chunk == sv[model.index[&e[1]]].chunk)
                .collect();
            if inside.is_empty() {
                return Ok(None);
            }
            inside.sort_unstable();
            let e = inside[rng.random_range(0..inside.len())];
            g.split_edges("s", &[e], opts).await.map(Some)
        }
        Kind::Multicut => {
            for _ in 0..50 {
                let i = rng.random_range(0..n);
                let mates: Vec<usize> = (0..n)
                    .filter(|&j| j != i && comp[j] == comp[i])
                    .filter(|&j| (0..3).all(|d| sv[j].chunk[d].abs_diff(sv[i].chunk[d]) <= 1))
                    .collect();
                if mates.len() < 4 {
                    continue;
                }
                let j = mates[rng.random_range(0..mates.len())];
                return g
                    .multicut("c", &[point(f, i)], &[point(f, j)], opts)
                    .await
                    .map(Some);
            }
            Ok(None)
        }
        Kind::Undo | Kind::Redo => {
            if ops.is_empty() {
                return Ok(None);
            }
            let op = ops[rng.random_range(0..ops.len())];
            if matches!(kind, Kind::Undo) {
                g.undo("u", op, opts).await.map(Some)
            } else {
                g.redo("r", op, opts).await.map(Some)
            }
        }
    }
}

/// Among `seen` (every root there ever was), `current_at` finds exactly the roots of the
/// supervoxels at `at`: what synapse root hints rely on.
async fn check_current(g: &ChunkedGraph, ids: &[u64], seen: &HashSet<u64>, at: Option<i64>) {
    let then: HashSet<u64> = roots_at(g, ids, at).await.into_iter().collect();
    let seen: Vec<u64> = seen.iter().copied().collect();
    let current = g.current_at(&seen, at).await.expect("current_at");
    for (r, c) in seen.iter().zip(current) {
        assert_eq!(c, then.contains(r), "root {r} at {at:?}");
    }
}

/// `sole_writer`: the graph is opened as the only writer of its table, so cached parent
/// pointers are trusted and only this process's edits evict them.
async fn run(seed: u64, steps: usize, sole_writer: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = fixture(client(dir.path()).await, "m", params(seed, [3, 3, 2], 24)).await;
    ingest(
        &f.graph,
        f.source.clone(),
        &IngestOptions::default(),
        &|_| {},
    )
    .await
    .expect("ingest");
    let graph = ChunkedGraph::open_with(
        f.graph.client().clone(),
        f.graph.table(),
        CacheOptions {
            sole_writer,
            ..Default::default()
        },
    )
    .await
    .expect("open");
    let g = &graph;
    let mut events = g.subscribe();
    let mut model = Model::new(&f);
    model.check(g, &f.ids).await;
    let mut rng = StdRng::seed_from_u64(seed);
    let opts = EditOptions::default();
    // (timestamp of the edit, active edges after it)
    let mut history: Vec<(i64, HashSet<[u64; 2]>)> = Vec::new();
    let initial = model.active.clone();
    let mut seen: HashSet<u64> = g
        .roots(&f.ids, &RootQuery::default())
        .await
        .expect("roots")
        .into_iter()
        .collect();
    check_current(g, &f.ids, &seen, None).await;
    let ingested = g.meta().ingest_timestamp_micros;
    let all: Vec<u64> = seen.iter().copied().collect();
    let before_ingest = g.current_at(&all, Some(ingested - 1)).await;
    assert!(before_ingest.expect("current_at").iter().all(|c| !c));
    assert!(
        g.current_at(&f.ids[..1], None).await.is_err(),
        "a supervoxel"
    );
    let mut ops: Vec<u64> = Vec::new();
    let (mut applied, mut refused) = (0, 0);
    for step in 0..steps {
        match random_edit(g, &f, &model, &mut rng, &ops, &opts).await {
            Ok(None) => continue,
            Ok(Some(r)) => {
                applied += 1;
                model.apply(&r);
                model.check(g, &f.ids).await;
                // Spans cached before this edit must not survive it.
                seen.extend(r.old_roots.iter().chain(&r.new_roots));
                check_current(g, &f.ids, &seen, None).await;
                let e: EditEvent = events.try_recv().expect("an event per edit");
                assert_eq!(
                    (e.operation_id, &e.old_roots, &e.new_roots, &e.new_l2_ids),
                    (r.operation_id, &r.old_roots, &r.new_roots, &r.new_l2_ids),
                    "step {step}"
                );
                // The layer-2 parents of every touched supervoxel are new.
                let touched: Vec<u64> = r
                    .added_edges
                    .iter()
                    .chain(&r.removed_edges)
                    .flatten()
                    .copied()
                    .collect();
                let l2 = g
                    .roots(
                        &touched,
                        &RootQuery {
                            stop_layer: Some(2),
                            ..Default::default()
                        },
                    )
                    .await
                    .expect("l2 parents");
                for p in l2 {
                    assert!(r.new_l2_ids.contains(&p), "step {step}: {p} not reported");
                }
                ops.push(r.operation_id);
                history.push((r.timestamp_micros, model.active.clone()));
            }
            Err(e) => {
                assert!(e.is_client_error(), "step {step}: {e}");
                refused += 1;
                assert!(
                    events.try_recv().is_err(),
                    "a refused edit published an event"
                );
            }
        }
    }
    eprintln!("seed {seed}: {applied} edits applied, {refused} refused");
    assert!(
        applied >= steps / 3,
        "only {applied} of {steps} edits applied"
    );
    assert!(
        refused > 0,
        "no edit was refused: the refusals are untested"
    );
    // Time travel: just before each edit, and at it, the graph is the model of that time.
    let mut before = initial;
    for (ts, after) in &history {
        let then = Model {
            index: model.index.clone(),
            active: before.clone(),
        };
        then.check_at(g, &f.ids, Some(ts - 1)).await;
        check_current(g, &f.ids, &seen, Some(ts - 1)).await;
        let now = Model {
            index: model.index.clone(),
            active: after.clone(),
        };
        now.check_at(g, &f.ids, Some(*ts)).await;
        check_current(g, &f.ids, &seen, Some(*ts)).await;
        before = after.clone();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_edits_match_the_model_now_and_in_the_past() {
    run(11, 60, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_edits_match_the_model_another_seed() {
    run(12, 60, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_edits_match_the_model_as_sole_writer() {
    run(13, 60, true).await;
}
