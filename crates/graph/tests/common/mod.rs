//! Shared set-up for the graph tests: our emulator in process, seeded synthetic graphs.
#![allow(dead_code)]

use std::sync::Arc;

use cg_bigtable::{mutation, Client, Config, Target};
use cg_graph::ingest::MemorySource;
use cg_graph::schema::{self, Meta};
use cg_graph::synthetic::{generate, Params, SyntheticGraph};
use std::collections::{HashMap, HashSet};

use cg_graph::edit::EditResult;
use cg_graph::query::RootQuery;
use cg_graph::ChunkedGraph;

pub async fn client(dir: &std::path::Path) -> Client {
    let store = cg_emulator::open(dir, cg_emulator::StoreOptions::default()).expect("open store");
    Config::new(Target::Channel(
        cg_emulator::in_process_channel(store),
        "p".into(),
        "i".into(),
    ))
    .connect()
    .await
    .expect("connect")
}

/// The roots of `ids` at `at` (now for `None`).
pub async fn roots_at(g: &ChunkedGraph, ids: &[u64], at: Option<i64>) -> Vec<u64> {
    g.roots(
        ids,
        &RootQuery {
            at,
            ..Default::default()
        },
    )
    .await
    .expect("roots")
}

pub struct Fixture {
    pub graph: ChunkedGraph,
    pub synth: SyntheticGraph,
    pub ids: Vec<u64>,
    pub source: Arc<MemorySource>,
}

pub async fn fixture(client: Client, table: &str, params: Params) -> Fixture {
    let synth = generate(&params);
    let geometry = synth.geometry().expect("geometry");
    let ids = synth.supervoxel_ids(&geometry).expect("ids");
    let source = Arc::new(MemorySource::from_synthetic(&synth, &geometry).expect("source"));
    let meta = Meta {
        format: schema::FORMAT,
        geometry,
        ingest_timestamp_micros: mutation::now_micros() - 10_000,
        data_dir: None,
        description: "test".into(),
    };
    let graph = ChunkedGraph::create(client, table, meta)
        .await
        .expect("create graph");
    Fixture {
        graph,
        synth,
        ids,
        source,
    }
}

pub fn params(seed: u64, chunks: [u32; 3], neurites: usize) -> Params {
    Params {
        seed,
        chunks,
        chunk_size: [32, 32, 32],
        neurites,
        steps: 300,
        steps_per_supervoxel: 4,
        contact_rate: 0.05,
        false_merge_rate: 0.1,
    }
}

pub struct Dsu(pub Vec<usize>);
impl Dsu {
    pub fn find(&mut self, mut x: usize) -> usize {
        while self.0[x] != x {
            x = self.0[x];
        }
        x
    }
    pub fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        self.0[a] = b;
    }
}

/// Connected components of the active edges, by a plain union-find over the raw input.
pub fn components(s: &SyntheticGraph) -> Vec<usize> {
    let mut d = Dsu((0..s.supervoxels.len()).collect());
    for e in &s.edges {
        if SyntheticGraph::is_active(e) {
            d.union(e.a, e.b);
        }
    }
    (0..s.supervoxels.len()).map(|i| d.find(i)).collect()
}

/// The active edges as the test believes them to be.
pub struct Model {
    pub index: HashMap<u64, usize>,
    pub active: HashSet<[u64; 2]>,
}

impl Model {
    pub fn new(f: &Fixture) -> Model {
        let active = f
            .synth
            .edges
            .iter()
            .filter(|e| SyntheticGraph::is_active(e))
            .map(|e| {
                let (a, b) = (f.ids[e.a], f.ids[e.b]);
                [a.min(b), a.max(b)]
            })
            .collect();
        Model {
            index: f.ids.iter().enumerate().map(|(i, &s)| (s, i)).collect(),
            active,
        }
    }

    pub fn apply(&mut self, r: &EditResult) {
        for e in &r.added_edges {
            self.active.insert(*e);
        }
        for e in &r.removed_edges {
            self.active.remove(e);
        }
    }

    /// Checks that the graph's roots are the model's components.
    pub async fn check(&self, g: &ChunkedGraph, ids: &[u64]) {
        self.check_at(g, ids, None).await
    }

    /// Checks that the graph's roots at `at` are the model's components.
    pub async fn check_at(&self, g: &ChunkedGraph, ids: &[u64], at: Option<i64>) {
        let mut d = Dsu((0..ids.len()).collect());
        for e in &self.active {
            d.union(self.index[&e[0]], self.index[&e[1]]);
        }
        let roots = roots_at(g, ids, at).await;
        let mut by_comp: HashMap<usize, u64> = HashMap::new();
        let mut by_root: HashMap<u64, usize> = HashMap::new();
        for (i, &r) in roots.iter().enumerate() {
            let c = d.find(i);
            assert_eq!(
                *by_comp.entry(c).or_insert(r),
                r,
                "sv {i}: one component, two roots"
            );
            assert_eq!(
                *by_root.entry(r).or_insert(c),
                c,
                "root {r}: two components"
            );
        }
        // And the leaves of every root are its supervoxels.
        let mut distinct: Vec<u64> = roots.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let mut count = 0;
        for &r in &distinct {
            let leaves = g.leaves(r, None, 1).await.expect("leaves");
            for sv in &leaves {
                assert_eq!(roots[self.index[sv]], r, "leaf {sv} of {r}");
            }
            count += leaves.len();
        }
        assert_eq!(count, ids.len());
    }
}
