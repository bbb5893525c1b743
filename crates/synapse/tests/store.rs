//! Synapses on a synthetic graph in our emulator (in process), checked against a brute-force
//! join (each synapse's supervoxels, then their roots at T), before and after edits.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use cg_bigtable::{mutation, Config, Target};
use cg_graph::edit::{EditOptions, Point};
use cg_graph::ingest::{ingest, IngestOptions, MemorySource};
use cg_graph::query::RootQuery;
use cg_graph::schema::{self, Meta};
use cg_graph::synthetic::{generate, Params};
use cg_graph::ChunkedGraph;
use cg_synapse::schema::{self as syn, Record};
use cg_synapse::{Direction, MappedSynapse, SynapseStore};
use rand::{Rng, SeedableRng};

struct Setup {
    store: SynapseStore,
    ids: Vec<u64>,
    positions: Vec<[u32; 3]>,
    synapses: Vec<MappedSynapse>,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = cg_emulator::open(dir.path(), cg_emulator::StoreOptions::default()).expect("store");
    let client = Config::new(Target::Channel(
        cg_emulator::in_process_channel(store),
        "p".into(),
        "i".into(),
    ))
    .connect()
    .await
    .expect("connect");
    let params = Params {
        seed: 5,
        chunks: [3, 3, 2],
        chunk_size: [32, 32, 32],
        neurites: 40,
        steps: 300,
        steps_per_supervoxel: 4,
        contact_rate: 0.05,
        false_merge_rate: 0.1,
    };
    let synth = generate(&params);
    let geometry = synth.geometry().expect("geometry");
    let ids = synth.supervoxel_ids(&geometry).expect("ids");
    let source = std::sync::Arc::new(MemorySource::from_synthetic(&synth, &geometry).expect("src"));
    let meta = Meta {
        format: schema::FORMAT,
        geometry,
        ingest_timestamp_micros: mutation::now_micros() / 1000 * 1000 - 10_000,
        data_dir: None,
        description: "synapse test".into(),
    };
    let graph = ChunkedGraph::create(client, "syn", meta)
        .await
        .expect("create");
    ingest(&graph, source, &IngestOptions::default(), &|_| {})
        .await
        .expect("ingest");
    // Synapses between random supervoxels, some autapses and repeated pairs among them.
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let n = ids.len();
    let mut synapses = Vec::new();
    for id in 1..=4000u64 {
        let a = rng.random_range(0..n);
        let b = if id % 50 == 0 {
            a
        } else {
            rng.random_range(0..n)
        };
        let p = |i: usize| synth.supervoxels[i].position.map(|v| v as i32);
        synapses.push(MappedSynapse {
            id: id * 7,
            pre_sv: ids[a],
            post_sv: ids[b],
            pre: p(a),
            post: p(b),
            size: rng.random_range(1..500),
            score: rng.random_range(0.0..1.0),
        });
    }
    let s = SynapseStore::new(graph);
    s.prepare().await.expect("prepare");
    s.prepare().await.expect("prepare twice");
    let (first, second) = synapses.split_at(2500);
    s.write(first).await.expect("write");
    s.write(second).await.expect("write");
    // Idempotent: the same batch again changes nothing.
    s.write(first).await.expect("rewrite");
    // A synapse stored as before root hints existed: records cells only.
    let old = MappedSynapse {
        id: 1,
        pre_sv: ids[1],
        post_sv: ids[n - 2],
        pre: [1, 2, 3],
        post: [4, 5, 6],
        size: 77,
        score: 0.5,
    };
    let record = |partner: u64| Record {
        id: old.id,
        partner,
        pre: old.pre,
        post: old.post,
        size: old.size,
        score: old.score,
    };
    for (sv, side, partner) in [
        (old.pre_sv, syn::PRE, old.post_sv),
        (old.post_sv, syn::POST, old.pre_sv),
    ] {
        s.graph()
            .client()
            .mutate_row(
                s.graph().table(),
                syn::row_key(sv),
                vec![mutation::set_cell(
                    syn::FAMILY,
                    syn::qualifier(side, old.id),
                    s.graph().meta().ingest_timestamp_micros,
                    syn::encode_records(&[record(partner)]),
                )],
            )
            .await
            .expect("write without hints");
    }
    synapses.push(old);
    Setup {
        store: s,
        ids,
        positions: synth.supervoxels.iter().map(|s| s.position).collect(),
        synapses,
        _dir: dir,
    }
}

/// The brute force: every synapse's supervoxels' roots at `t`.
async fn brute(s: &Setup, t: i64) -> Vec<(MappedSynapse, u64, u64)> {
    let g = s.store.graph();
    let mut svs: Vec<u64> = s
        .synapses
        .iter()
        .flat_map(|x| [x.pre_sv, x.post_sv])
        .collect();
    svs.sort_unstable();
    svs.dedup();
    let roots = g
        .roots(
            &svs,
            &RootQuery {
                at: Some(t),
                ..Default::default()
            },
        )
        .await
        .expect("roots");
    let root: HashMap<u64, u64> = svs.into_iter().zip(roots).collect();
    s.synapses
        .iter()
        .map(|x| (*x, root[&x.pre_sv], root[&x.post_sv]))
        .collect()
}

type Key = (u64, u64, u64, u64, u64);

fn expected(all: &[(MappedSynapse, u64, u64)], root: u64, dir: Direction) -> BTreeSet<Key> {
    all.iter()
        .filter(|(_, a, b)| match dir {
            Direction::Output => *a == root,
            Direction::Input => *b == root,
            Direction::Both => *a == root || *b == root,
        })
        .map(|(x, a, b)| (x.id, x.pre_sv, x.post_sv, *a, *b))
        .collect()
}

async fn answer(s: &Setup, root: u64, t: i64, dir: Direction) -> BTreeSet<Key> {
    let got = s
        .store
        .root_synapses(root, Some(t), dir)
        .await
        .expect("root synapses");
    let set: BTreeSet<Key> = got
        .iter()
        .map(|x| (x.id, x.pre_sv, x.post_sv, x.pre_root, x.post_root))
        .collect();
    assert_eq!(set.len(), got.len(), "no synapse twice");
    set
}

/// Synapses, matrix and partners of `roots` at `t` equal the brute force.
async fn check(s: &Setup, roots: &[u64], t: i64) {
    let all = brute(s, t).await;
    for &r in roots {
        for dir in [Direction::Output, Direction::Input, Direction::Both] {
            assert_eq!(
                answer(s, r, t, dir).await,
                expected(&all, r, dir),
                "root {r} {dir:?}"
            );
        }
        let mut want: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for (_, a, b) in &all {
            if *a == r {
                want.entry(*b).or_default().0 += 1;
            } else if *b == r {
                want.entry(*a).or_default().1 += 1;
            }
        }
        let partners = s
            .store
            .partners(r, Some(t), Direction::Both)
            .await
            .expect("partners");
        let got: BTreeMap<u64, (u64, u64)> = partners
            .iter()
            .map(|p| (p.root, (p.outputs, p.inputs)))
            .collect();
        assert_eq!(got, want, "partners of {r}");
        assert!(partners.windows(2).all(|w| w[0].total() >= w[1].total()));
    }
    let m = s.store.connectivity(roots, Some(t)).await.expect("matrix");
    for (i, &a) in roots.iter().enumerate() {
        for (j, &b) in roots.iter().enumerate() {
            let want: Vec<&MappedSynapse> = all
                .iter()
                .filter(|(_, x, y)| *x == a && *y == b)
                .map(|(x, _, _)| x)
                .collect();
            assert_eq!(m.counts[i][j], want.len() as u64, "{a} -> {b}");
            let size: u64 = want.iter().map(|x| u64::from(x.size)).sum();
            assert_eq!(m.sizes[i][j], size);
        }
    }
}

/// The roots with the most synapses at `t`.
async fn busiest(s: &Setup, t: i64, k: usize) -> Vec<u64> {
    let mut n: HashMap<u64, usize> = HashMap::new();
    for (_, a, b) in brute(s, t).await {
        *n.entry(a).or_default() += 1;
        *n.entry(b).or_default() += 1;
    }
    let mut v: Vec<(usize, u64)> = n.into_iter().map(|(r, c)| (c, r)).collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    v.into_iter().take(k).map(|(_, r)| r).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_match_the_brute_force_and_follow_edits() {
    let mut s = setup().await;
    let g = s.store.graph().clone();
    let t0 = mutation::now_micros();
    let roots = busiest(&s, t0, 8).await;
    check(&s, &roots, t0).await;

    // Bad input: a supervoxel, an unknown node, a repeated root.
    let err = s
        .store
        .root_synapses(s.ids[0], None, Direction::Both)
        .await
        .unwrap_err();
    assert!(
        err.is_client_error() && err.to_string().contains("is not a root"),
        "{err}"
    );
    assert!(s
        .store
        .connectivity(&[roots[0], roots[0]], None)
        .await
        .unwrap_err()
        .to_string()
        .contains("listed twice"));

    // Merge two objects that both have synapses.
    let now_roots = g.roots(&s.ids, &RootQuery::default()).await.expect("roots");
    let (i, j) = (0..s.ids.len())
        .flat_map(|i| ((i + 1)..s.ids.len().min(i + 300)).map(move |j| (i, j)))
        .find(|&(i, j)| {
            now_roots[i] != now_roots[j]
                && roots.contains(&now_roots[i])
                && roots.contains(&now_roots[j])
                && g.geometry().chunk_of(s.ids[i]) == g.geometry().chunk_of(s.ids[j])
        })
        .or_else(|| {
            (0..s.ids.len())
                .flat_map(|i| ((i + 1)..s.ids.len().min(i + 300)).map(move |j| (i, j)))
                .find(|&(i, j)| {
                    now_roots[i] != now_roots[j]
                        && roots.contains(&now_roots[i])
                        && g.geometry().chunk_of(s.ids[i]) == g.geometry().chunk_of(s.ids[j])
                })
        })
        .expect("two objects in one chunk");
    let point = |k: usize| Point {
        supervoxel: s.ids[k],
        position_nm: s.positions[k].map(f64::from),
    };
    let (a, b) = (now_roots[i], now_roots[j]);
    let before_a = answer(&s, a, t0, Direction::Both).await;
    let before_b = answer(&s, b, t0, Direction::Both).await;
    assert!(!before_a.is_empty() && !before_b.is_empty());
    let merged = g
        .merge("t", point(i), point(j), &EditOptions::default())
        .await
        .expect("merge");
    let new = merged.new_roots[0];
    let t1 = mutation::now_micros();
    // At once: the new root has both objects' synapses, with roots of now.
    let after = answer(&s, new, t1, Direction::Both).await;
    let ids = |set: &BTreeSet<Key>| set.iter().map(|k| k.0).collect::<BTreeSet<u64>>();
    let union: BTreeSet<u64> = ids(&before_a).union(&ids(&before_b)).copied().collect();
    assert_eq!(ids(&after), union);
    let mut now_set: Vec<u64> = roots
        .iter()
        .copied()
        .filter(|r| *r != a && *r != b)
        .collect();
    now_set.push(new);
    check(&s, &now_set, t1).await;
    let err = s
        .store
        .root_synapses(a, None, Direction::Both)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!("belonged to root {new}")),
        "{err}"
    );
    // The old timestamp still gives the old answer.
    assert_eq!(answer(&s, a, t0, Direction::Both).await, before_a);
    // Synapses written after the merge carry the merged root as their partners' hint: before the merge
    // (t0) and after its undo (t2) it is no root, and the walk up the graph must answer.
    let mut rng = rand::rngs::StdRng::seed_from_u64(10);
    let under_new: Vec<usize> = g
        .roots(&s.ids, &RootQuery::default())
        .await
        .expect("roots")
        .iter()
        .enumerate()
        .filter_map(|(k, &r)| (r == new).then_some(k))
        .collect();
    let extra: Vec<MappedSynapse> = (0..300u64)
        .map(|k| {
            let a = under_new[rng.random_range(0..under_new.len())];
            let b = rng.random_range(0..s.ids.len());
            let (pre, post) = if k % 2 == 0 { (a, b) } else { (b, a) };
            MappedSynapse {
                id: 100_000 + k,
                pre_sv: s.ids[pre],
                post_sv: s.ids[post],
                pre: [0, 0, 0],
                post: [1, 1, 1],
                size: 3,
                score: 0.1,
            }
        })
        .collect();
    s.store.write(&extra).await.expect("write after the merge");
    s.synapses.extend(extra);
    check(&s, &roots, t0).await;

    // A split (the merge undone) shows at once too.
    let undone = g
        .undo("t", merged.operation_id, &EditOptions::default())
        .await
        .expect("undo");
    let t2 = mutation::now_micros();
    let mut split_set: Vec<u64> = now_set.iter().copied().filter(|r| *r != new).collect();
    split_set.extend(&undone.new_roots);
    check(&s, &split_set, t2).await;
    check(&s, &now_set, t1).await;
}
