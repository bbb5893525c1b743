//! The ChunkedGraph over real Bigtable servers: the same ingest on Google's emulator and ours
//! must give cell-for-cell the same table and the same answers, and an ingest killed with
//! SIGKILL and re-run must give the same graph as one that never stopped.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cg_bigtable::{Client, Config, ReadRows, Target};
use cg_graph::ingest::{ingest, IngestOptions, MemorySource};
use cg_graph::query::RootQuery;
use cg_graph::schema::{self, Meta};
use cg_graph::synthetic::{generate, Params, SyntheticGraph};
use cg_graph::ChunkedGraph;
use cg_ids::{layer_of, VoxelBox};
use cg_tests::{chunkedgraph_bin, EmulatorProcess};

type Dump = Vec<(Vec<u8>, String, Vec<u8>, i64, Vec<u8>)>;

/// Every cell of a table, timestamps made relative to the earliest one.
async fn dump(c: &Client, table: &str) -> Dump {
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
    let base = out.iter().map(|c| c.3).min().unwrap_or(0);
    for c in &mut out {
        c.3 -= base;
    }
    // The metadata row holds the absolute ingest time; compare the rest.
    out.retain(|c| c.0 != schema::META_KEY);
    // Servers may return a row's families in any order.
    out.sort();
    out
}

fn components(s: &SyntheticGraph) -> Vec<usize> {
    let mut parent: Vec<usize> = (0..s.supervoxels.len()).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            x = p[x];
        }
        x
    }
    for e in &s.edges {
        if SyntheticGraph::is_active(e) {
            let (a, b) = (find(&mut parent, e.a), find(&mut parent, e.b));
            parent[a] = b;
        }
    }
    (0..s.supervoxels.len())
        .map(|i| find(&mut parent, i))
        .collect()
}

/// Answers to a fixed set of queries, for comparing backends.
async fn answers(g: &ChunkedGraph, ids: &[u64]) -> Vec<String> {
    let roots = g.roots(ids, &RootQuery::default()).await.expect("roots");
    let l2 = g
        .roots(
            ids,
            &RootQuery {
                stop_layer: Some(2),
                ..Default::default()
            },
        )
        .await
        .expect("l2");
    let mut out = vec![format!("{roots:?}"), format!("{l2:?}")];
    let mut distinct = roots.clone();
    distinct.sort_unstable();
    distinct.dedup();
    for &r in distinct.iter().take(20) {
        let bbox = VoxelBox::new([0, 0, 0], [48, 48, 48]);
        out.push(format!(
            "{:?}",
            g.leaves(r, Some(bbox), 1).await.expect("leaves")
        ));
        out.push(format!(
            "{:?}",
            g.subgraph_edges(r, None, None).await.expect("subgraph")
        ));
        out.push(format!(
            "{:?}",
            g.l2_graph(r, None).await.expect("l2 graph")
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_graph_on_cbtemulator_and_ours() {
    let synth = generate(&Params {
        seed: 21,
        chunks: [4, 3, 3],
        chunk_size: [32, 32, 32],
        neurites: 30,
        steps: 300,
        steps_per_supervoxel: 4,
        contact_rate: 0.05,
        false_merge_rate: 0.1,
    });
    let geometry = synth.geometry().expect("geometry");
    let ids = synth.supervoxel_ids(&geometry).expect("ids");
    let source = Arc::new(MemorySource::from_synthetic(&synth, &geometry).expect("source"));
    let comp = components(&synth);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut results = Vec::new();
    for (name, server) in [
        ("cbtemulator", EmulatorProcess::google()),
        ("ours", EmulatorProcess::ours(dir.path(), &[])),
    ] {
        let client = Config::new(Target::Emulator(server.addr.to_string()))
            .connect()
            .await
            .expect("connect");
        let meta = Meta {
            format: schema::FORMAT,
            geometry: geometry.clone(),
            ingest_timestamp_micros: cg_bigtable::mutation::now_micros(),
            data_dir: None,
            description: String::new(),
        };
        let g = ChunkedGraph::create(client.clone(), "graph", meta)
            .await
            .expect("create");
        ingest(&g, source.clone(), &IngestOptions::default(), &|_| {})
            .await
            .expect("ingest");
        let roots = g.roots(&ids, &RootQuery::default()).await.expect("roots");
        let mut by_comp: HashMap<usize, u64> = HashMap::new();
        let mut by_root: HashMap<u64, usize> = HashMap::new();
        for (i, &r) in roots.iter().enumerate() {
            assert_eq!(layer_of(r), geometry.n_layers, "{name}");
            assert_eq!(*by_comp.entry(comp[i]).or_insert(r), r, "{name}: sv {i}");
            assert_eq!(
                *by_root.entry(r).or_insert(comp[i]),
                comp[i],
                "{name}: root {r}"
            );
        }
        results.push((name, dump(&client, "graph").await, answers(&g, &ids).await));
    }
    let (ours, google) = (&results[1], &results[0]);
    assert!(!google.1.is_empty());
    assert_eq!(google.1.len(), ours.1.len(), "cell counts");
    if let Some((g, o)) = google.1.iter().zip(&ours.1).find(|(g, o)| g != o) {
        panic!(
            "tables differ between cbtemulator and ours; first difference: row {:?} {}:{:?} at {} vs row {:?} {}:{:?} at {}",
            String::from_utf8_lossy(&g.0),
            g.1,
            String::from_utf8_lossy(&g.2),
            g.3,
            String::from_utf8_lossy(&o.0),
            o.1,
            String::from_utf8_lossy(&o.2),
            o.3
        );
    }
    assert_eq!(
        google.2, ours.2,
        "answers differ between cbtemulator and ours"
    );
}

/// Starts `chunkedgraph ingest` on embedded storage; kills it with SIGKILL once it has
/// reported progress and `after` has passed, or returns its stdout if it finishes first.
fn ingest_cli(data_dir: &Path, kill_after: Option<Duration>) -> Option<String> {
    let mut child = Command::new(chunkedgraph_bin())
        .args([
            "ingest",
            "--table",
            "g",
            "--synthetic",
            "40000",
            "--seed",
            "3",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("BIGTABLE_EMULATOR_HOST")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting chunkedgraph ingest");
    let Some(after) = kill_after else {
        let out = child.wait_with_output().expect("ingest output");
        assert!(
            out.status.success(),
            "ingest failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return Some(String::from_utf8_lossy(&out.stdout).into_owned());
    };
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    // Wait until the ingest is writing chunks.
    for line in lines.by_ref() {
        if line.expect("stderr line").starts_with("ingest: layer") {
            break;
        }
    }
    std::thread::sleep(after);
    let finished = child.try_wait().expect("try_wait").is_some();
    let _ = child.kill();
    let _ = child.wait();
    assert!(!finished, "the ingest finished before it could be killed");
    None
}

async fn dump_embedded(data_dir: &Path) -> Dump {
    let store = cg_emulator::open(&data_dir.join("bigtable"), Default::default()).expect("open");
    let client = Config::new(Target::Channel(
        cg_emulator::in_process_channel(store),
        "chunkedgraph".into(),
        "local".into(),
    ))
    .connect()
    .await
    .expect("connect");
    dump(&client, "g").await
}

fn count(out: &str, what: &str) -> u64 {
    let at = out
        .find(what)
        .unwrap_or_else(|| panic!("{what:?} not in {out:?}"));
    out[..at]
        .split_whitespace()
        .last()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count before {what:?} in {out:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_ingest_resumes_to_the_same_graph() {
    let whole = tempfile::tempdir().expect("tempdir");
    let out = ingest_cli(whole.path(), None).expect("finished");
    assert_eq!(count(&out, "skipped"), 0, "{out}");

    let cut = tempfile::tempdir().expect("tempdir");
    for ms in [150, 600] {
        ingest_cli(cut.path(), Some(Duration::from_millis(ms)));
    }
    let out = ingest_cli(cut.path(), None).expect("finished");
    assert!(
        count(&out, "skipped") > 0,
        "the killed runs completed chunks: {out}"
    );
    assert!(
        count(&out, "chunk tasks run") > 0,
        "the killed runs left work: {out}"
    );

    let (a, b) = (
        dump_embedded(whole.path()).await,
        dump_embedded(cut.path()).await,
    );
    assert!(a.len() > 40_000);
    assert_eq!(a.len(), b.len(), "cell counts");
    assert!(
        a == b,
        "the resumed graph differs from the uninterrupted one"
    );
}
