//! Edits under load and under crashes, through `chunkedgraph serve` processes.
//!
//! - Concurrency: 8 editors spread over 2 server processes on one Bigtable (our emulator)
//!   make over 1000 random edits (acknowledged; about as many more are refused). Every acknowledged edit is in the op log, done, and the final
//!   graph equals a sequential replay of the op log.
//! - Crash: a server on its own embedded storage is SIGKILLed at random moments during edits,
//!   20 times. After each restart no root is locked, no edit is half applied, and every
//!   acknowledged edit is there.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cg_bigtable::{filter, Client, Config, ReadRows, Target};
use cg_graph::oplog::OperationEntry;
use cg_graph::query::RootQuery;
use cg_graph::schema;
use cg_graph::synthetic::{generate, Params, SyntheticGraph};
use cg_graph::ChunkedGraph;
use cg_tests::{EmulatorProcess, ServeProcess};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const TABLE: &str = "load";
const SUPERVOXELS: usize = 3000;
const SEED: u64 = 21;

/// The synthetic graph every process agrees on, and the edits one can try on it.
struct World {
    synth: SyntheticGraph,
    ids: Vec<u64>,
    resolution: [f64; 3],
    /// Supervoxel indices per chunk.
    by_chunk: Vec<Vec<usize>>,
    /// Every input edge inside one chunk (active or not).
    in_chunk: Vec<(usize, usize)>,
}

impl World {
    fn new() -> World {
        let synth = generate(&Params::with_supervoxels(SEED, SUPERVOXELS));
        let geometry = synth.geometry().expect("geometry");
        let ids = synth.supervoxel_ids(&geometry).expect("ids");
        let mut chunks: HashMap<[u32; 3], Vec<usize>> = HashMap::new();
        for (i, s) in synth.supervoxels.iter().enumerate() {
            chunks.entry(s.chunk).or_default().push(i);
        }
        let by_chunk = chunks.into_values().filter(|v| v.len() >= 2).collect();
        let sv = &synth.supervoxels;
        let in_chunk = synth
            .edges
            .iter()
            .filter(|e| sv[e.a].chunk == sv[e.b].chunk)
            .map(|e| (e.a, e.b))
            .collect();
        World {
            resolution: geometry.resolution,
            synth,
            ids,
            by_chunk,
            in_chunk,
        }
    }

    fn point(&self, i: usize) -> Value {
        let p = self.synth.supervoxels[i].position;
        json!([
            self.ids[i].to_string(),
            f64::from(p[0]) * self.resolution[0],
            f64::from(p[1]) * self.resolution[1],
            f64::from(p[2]) * self.resolution[2],
        ])
    }

    fn initial_active(&self) -> HashSet<[u64; 2]> {
        self.synth
            .edges
            .iter()
            .filter(|e| SyntheticGraph::is_active(e))
            .map(|e| pair(self.ids[e.a], self.ids[e.b]))
            .collect()
    }
}

fn pair(a: u64, b: u64) -> [u64; 2] {
    [a.min(b), a.max(b)]
}

#[derive(Debug)]
enum Outcome {
    /// The server answered 200 with this operation.
    Acked(u64),
    /// A 4xx: the edit was refused (409s are retried first).
    Refused,
    /// No answer: the server went away.
    Lost,
}

/// One random edit: a merge, a split (given edge or multicut), or an undo/redo of one of
/// this editor's own operations.
async fn random_edit(
    http: &reqwest::Client,
    base: &str,
    w: &World,
    rng: &mut StdRng,
    mine: &[u64],
) -> Outcome {
    let (path, body) = match rng.random_range(0..10) {
        0..=4 => {
            let chunk = &w.by_chunk[rng.random_range(0..w.by_chunk.len())];
            let a = chunk[rng.random_range(0..chunk.len())];
            let b = chunk[rng.random_range(0..chunk.len())];
            ("/merge", json!([w.point(a), w.point(b)]))
        }
        5..=6 => {
            let (a, b) = w.in_chunk[rng.random_range(0..w.in_chunk.len())];
            (
                "/split?mincut=false",
                json!({"sources": [w.point(a)], "sinks": [w.point(b)]}),
            )
        }
        7 => {
            let chunk = &w.by_chunk[rng.random_range(0..w.by_chunk.len())];
            let a = chunk[rng.random_range(0..chunk.len())];
            let b = chunk[rng.random_range(0..chunk.len())];
            (
                "/split",
                json!({"sources": [w.point(a)], "sinks": [w.point(b)]}),
            )
        }
        k => {
            if mine.is_empty() {
                return Outcome::Refused;
            }
            let op = mine[rng.random_range(0..mine.len())];
            let route = if k == 8 { "/undo" } else { "/redo" };
            (route, json!({ "operation_id": op }))
        }
    };
    for attempt in 0..20 {
        let sent = http
            .post(format!("{base}/segmentation/api/v1/table/{TABLE}{path}"))
            .body(body.to_string())
            .send()
            .await;
        let Ok(resp) = sent else {
            return Outcome::Lost;
        };
        let status = resp.status().as_u16();
        let Ok(text) = resp.text().await else {
            return Outcome::Lost;
        };
        match status {
            200 => {
                let v: Value = serde_json::from_str(&text).expect("edit answer is JSON");
                let op = v["operation_id"]
                    .as_u64()
                    .or_else(|| v["operation_id"].as_str().and_then(|s| s.parse().ok()))
                    .unwrap_or_else(|| panic!("no operation_id in {text}"));
                return Outcome::Acked(op);
            }
            // Another edit holds the root (503 is what caveclient retries): retry.
            409 | 503 => tokio::time::sleep(Duration::from_millis(5 + attempt * 5)).await,
            400 | 404 => return Outcome::Refused,
            s => panic!("{path}: unexpected status {s}: {text}"),
        }
    }
    Outcome::Refused
}

async fn embedded_graph(dir: &Path) -> (ChunkedGraph, Client) {
    let store = cg_emulator::open(&dir.join("bigtable"), cg_emulator::StoreOptions::default())
        .expect("open the server's storage");
    let client = Config::new(Target::Channel(
        cg_emulator::in_process_channel(store),
        "chunkedgraph".into(),
        "local".into(),
    ))
    .connect()
    .await
    .expect("connect");
    let graph = ChunkedGraph::open(client.clone(), TABLE)
        .await
        .expect("open graph");
    (graph, client)
}

/// Statuses of every op-log row (including edits that never wrote an entry).
async fn statuses(c: &Client) -> HashMap<u64, String> {
    let rows = c
        .read_rows_vec(
            TABLE,
            ReadRows::new()
                .prefix(vec![schema::OPERATION_PREFIX])
                .filter(filter::chain([
                    filter::column(schema::VERSIONED, schema::STATUS),
                    filter::cells_per_column_limit(1),
                ])),
        )
        .await
        .expect("op log");
    rows.iter()
        .filter_map(|r| {
            let id = cg_ids::parse_row_key(&r.key[1..]).ok()?;
            let s = r.cell(schema::VERSIONED, schema::STATUS)?;
            Some((id, String::from_utf8_lossy(&s.value).into_owned()))
        })
        .collect()
}

/// Rows that hold a lock cell.
async fn locked_rows(c: &Client) -> usize {
    c.read_rows_vec(
        TABLE,
        ReadRows::new().filter(filter::chain([
            filter::family(schema::LOCKS),
            filter::strip_value(),
        ])),
    )
    .await
    .expect("scan locks")
    .len()
}

/// Replays the op log over the ingested edges and checks the graph's roots are exactly the
/// components of the result.
async fn check_replay(g: &ChunkedGraph, w: &World, log: &[OperationEntry]) {
    let mut active = w.initial_active();
    let mut ops: Vec<&OperationEntry> = log.iter().collect();
    ops.sort_by_key(|o| (o.timestamp_micros, o.operation_id));
    for o in ops {
        for e in &o.added_edges {
            active.insert(pair(e[0], e[1]));
        }
        for e in &o.removed_edges {
            active.remove(&pair(e[0], e[1]));
        }
    }
    let index: HashMap<u64, usize> = w.ids.iter().enumerate().map(|(i, &s)| (s, i)).collect();
    let mut parent: Vec<usize> = (0..w.ids.len()).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    for e in &active {
        let (a, b) = (
            find(&mut parent, index[&e[0]]),
            find(&mut parent, index[&e[1]]),
        );
        parent[a] = b;
    }
    let roots = g.roots(&w.ids, &RootQuery::default()).await.expect("roots");
    let mut comp_root: HashMap<usize, u64> = HashMap::new();
    let mut root_comp: HashMap<u64, usize> = HashMap::new();
    for (i, &r) in roots.iter().enumerate() {
        let c = find(&mut parent, i);
        assert_eq!(
            *comp_root.entry(c).or_insert(r),
            r,
            "supervoxel {}: split apart",
            w.ids[i]
        );
        assert_eq!(
            *root_comp.entry(r).or_insert(c),
            c,
            "root {r}: joins two replayed objects"
        );
    }
}

fn ingest(envs: &[(&str, String)], args: &[&str]) {
    cg_tests::ingest_synthetic(TABLE, SUPERVOXELS, SEED, args, envs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_editors_on_two_servers_lose_nothing() {
    const EDITORS: usize = 8;
    const EDITS_EACH: usize = 300;
    let dir = tempfile::tempdir().expect("tempdir");
    let emulator = EmulatorProcess::ours(dir.path(), &[]);
    let env = [("BIGTABLE_EMULATOR_HOST", emulator.addr.to_string())];
    ingest(&env, &[]);
    let servers = Arc::new([
        ServeProcess::start(&[], &env),
        ServeProcess::start(&[], &env),
    ]);
    let world = Arc::new(World::new());
    let mut tasks = Vec::new();
    for k in 0..EDITORS {
        let (servers, world) = (servers.clone(), world.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut rng = StdRng::seed_from_u64(1000 + k as u64);
            let mut mine = Vec::new();
            let mut refused = 0;
            for _ in 0..EDITS_EACH {
                let base = &servers[k % 2].base;
                match random_edit(&http, base, &world, &mut rng, &mine).await {
                    Outcome::Acked(op) => mine.push(op),
                    Outcome::Refused => refused += 1,
                    Outcome::Lost => panic!("a server stopped answering"),
                }
            }
            (mine, refused)
        }));
    }
    let mut acked: Vec<u64> = Vec::new();
    let mut refused = 0;
    for t in tasks {
        let (mine, r) = t.await.expect("editor");
        acked.extend(mine);
        refused += r;
    }
    eprintln!(
        "{} edits tried: {} acknowledged, {refused} refused",
        EDITORS * EDITS_EACH,
        acked.len()
    );
    assert!(
        acked.len() >= 1000,
        "too few edits went through: {}",
        acked.len()
    );

    let client = Config::new(Target::Emulator(emulator.addr.to_string()))
        .connect()
        .await
        .expect("connect");
    let g = ChunkedGraph::open(client.clone(), TABLE)
        .await
        .expect("open");
    let log = g.operations_between(0, i64::MAX).await.expect("op log");
    let st = statuses(&client).await;
    let logged: HashSet<u64> = log.iter().map(|o| o.operation_id).collect();
    for op in &acked {
        assert!(
            logged.contains(op),
            "acknowledged operation {op} is not in the op log"
        );
        assert_eq!(st[op], "done", "acknowledged operation {op}");
    }
    // Nothing was written that nobody acknowledged, and nothing is left pending or locked.
    let mut sorted = acked.clone();
    sorted.sort_unstable();
    let mut in_log: Vec<u64> = logged.into_iter().collect();
    in_log.sort_unstable();
    assert_eq!(
        in_log, sorted,
        "the op log holds exactly the acknowledged edits"
    );
    assert_eq!(locked_rows(&client).await, 0, "a root stayed locked");
    check_replay(&g, &world, &log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_edits_twenty_times() {
    const ROUNDS: usize = 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path").to_string();
    ingest(&[], &["--data-dir", &data]);
    let world = Arc::new(World::new());
    let mut rng = StdRng::seed_from_u64(77);
    let mut acked_all: Vec<u64> = Vec::new();
    let mut cut_off = 0;
    for round in 0..ROUNDS {
        let server = Arc::new(tokio::sync::Mutex::new(Some(ServeProcess::start(
            &["--data-dir", &data],
            &[],
        ))));
        let mut tasks = Vec::new();
        for k in 0..4u64 {
            let (server, world) = (server.clone(), world.clone());
            let seed = (round as u64) * 100 + k;
            tasks.push(tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut rng = StdRng::seed_from_u64(seed);
                let mut mine: Vec<u64> = Vec::new();
                loop {
                    let base = {
                        let guard = server.lock().await;
                        match guard.as_ref() {
                            Some(s) => s.base.clone(),
                            None => break,
                        }
                    };
                    match random_edit(&http, &base, &world, &mut rng, &mine).await {
                        Outcome::Acked(op) => mine.push(op),
                        Outcome::Refused => {}
                        Outcome::Lost => break,
                    }
                }
                mine
            }));
        }
        // Let edits run, then pull the plug at a random moment.
        tokio::time::sleep(Duration::from_millis(rng.random_range(150..900))).await;
        if let Some(s) = server.lock().await.take() {
            s.kill9();
        }
        for t in tasks {
            acked_all.extend(t.await.expect("editor"));
        }
        // What the crash left behind, before anyone recovers it.
        {
            let (_, client) = embedded_graph(dir.path()).await;
            let st = statuses(&client).await;
            if st.values().any(|s| s == "pending" || s == "locking") {
                cut_off += 1;
            }
        }
        // Restart: the first request opens the table and recovers.
        let server = ServeProcess::start(&["--data-dir", &data], &[]);
        let info = reqwest::get(format!("{}/segmentation/table/{TABLE}/info", server.base))
            .await
            .expect("info after restart");
        assert_eq!(info.status(), 200, "round {round}: info after restart");
        server.kill9();
        let (g, client) = embedded_graph(dir.path()).await;
        assert_eq!(
            locked_rows(&client).await,
            0,
            "round {round}: a root stayed locked"
        );
        let st = statuses(&client).await;
        let open: Vec<_> = st
            .iter()
            .filter(|(_, s)| s.as_str() == "pending" || s.as_str() == "locking")
            .collect();
        assert!(
            open.is_empty(),
            "round {round}: unfinished edits after restart: {open:?}"
        );
        for op in &acked_all {
            assert_eq!(
                st.get(op).map(String::as_str),
                Some("done"),
                "round {round}: acknowledged operation {op}"
            );
        }
        let log = g.operations_between(0, i64::MAX).await.expect("op log");
        check_replay(&g, &world, &log).await;
    }
    eprintln!(
        "{ROUNDS} kills, {cut_off} of them with an edit cut off mid-way; {} edits acknowledged",
        acked_all.len()
    );
    assert!(cut_off >= 5, "only {cut_off} kills landed during an edit");
    assert!(acked_all.len() >= 40, "too few edits went through");
}
