//! `cg-load`: load on a live `chunkedgraph serve` over HTTP, the way clients send it.
//!
//! By default it builds its own world: ingests a seeded synthetic graph into a temporary data
//! directory with `chunkedgraph ingest`, starts `chunkedgraph serve` on it (the binary next to
//! this one), and then runs two phases with `--concurrency` keep-alive clients:
//!
//! 1. root lookups only (`GET .../node/{sv}/root` for random supervoxels): requests/s, p50, p99;
//! 2. the same lookups while editors merge two neighbouring objects and split them again with
//!    a multicut: lookup latency under edits, merge and split p50/p99.
//!
//! Figures are printed, not asserted.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cg_graph::synthetic::{generate, Params, SyntheticGraph};
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(name = "cg-load", about = "Load on a live chunkedgraph server")]
struct Args {
    /// Supervoxels in the synthetic graph.
    #[arg(long, default_value_t = 100_000)]
    supervoxels: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Clients sending lookups at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Editors during the mixed phase (each merges, then splits, back to back).
    #[arg(long, default_value_t = 2)]
    editors: usize,
    /// The `chunkedgraph` binary (default: next to this one).
    #[arg(long)]
    chunkedgraph: Option<PathBuf>,
}

const TABLE: &str = "load";

struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chunkedgraph_bin(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(p) = &args.chunkedgraph {
        return Ok(p.clone());
    }
    let me = std::env::current_exe().context("locating cg-load")?;
    let p = me.with_file_name("chunkedgraph");
    if !p.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p chunkedgraph`, or pass --chunkedgraph",
            p.display()
        );
    }
    Ok(p)
}

fn start(args: &Args) -> anyhow::Result<Server> {
    let bin = chunkedgraph_bin(args)?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().to_string_lossy().into_owned();
    let t = Instant::now();
    let out = Command::new(&bin)
        .args(["ingest", "--table", TABLE, "--data-dir", &data])
        .args(["--synthetic", &args.supervoxels.to_string()])
        .args(["--seed", &args.seed.to_string()])
        .env("RUST_LOG", "warn")
        .output()
        .context("running chunkedgraph ingest")?;
    if !out.status.success() {
        bail!("ingest failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    println!(
        "ingested {} supervoxels in {:.1} s",
        args.supervoxels,
        t.elapsed().as_secs_f64()
    );
    let mut child = Command::new(&bin)
        .args(["serve", "--data-dir", &data, "--listen", "127.0.0.1:0"])
        .args(["--grpc-listen", "off"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting chunkedgraph serve")?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)?;
    }
    let base = line
        .trim()
        .strip_prefix("chunkedgraph serving on ")
        .with_context(|| format!("unexpected first line from the server: {line:?}"))?
        .to_string();
    Ok(Server {
        child,
        base,
        _dir: dir,
    })
}

struct World {
    synth: SyntheticGraph,
    ids: Vec<u64>,
    resolution: [f64; 3],
    /// Pairs of neighbouring supervoxels in one chunk, in different objects.
    pairs: Vec<(usize, usize)>,
}

impl World {
    fn new(args: &Args) -> anyhow::Result<World> {
        let synth = generate(&Params::with_supervoxels(args.seed, args.supervoxels));
        let geometry = synth.geometry()?;
        let ids = synth.supervoxel_ids(&geometry)?;
        let n = ids.len();
        let mut parent: Vec<usize> = (0..n).collect();
        fn find(p: &mut [usize], mut x: usize) -> usize {
            while p[x] != x {
                p[x] = p[p[x]];
                x = p[x];
            }
            x
        }
        for e in &synth.edges {
            if SyntheticGraph::is_active(e) {
                let (a, b) = (find(&mut parent, e.a), find(&mut parent, e.b));
                parent[a] = b;
            }
        }
        let sv = &synth.supervoxels;
        // Inactive in-chunk edges join two objects that touch: natural merge candidates.
        let mut pairs: Vec<(usize, usize)> = synth
            .edges
            .iter()
            .filter(|e| !SyntheticGraph::is_active(e) && sv[e.a].chunk == sv[e.b].chunk)
            .map(|e| (e.a, e.b))
            .filter(|&(a, b)| find(&mut parent, a) != find(&mut parent, b))
            .collect();
        pairs.sort_unstable();
        pairs.dedup();
        Ok(World {
            resolution: geometry.resolution,
            synth,
            ids,
            pairs,
        })
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
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Lookup clients until `stop`; returns every latency.
async fn lookups(
    base: Arc<String>,
    world: Arc<World>,
    concurrency: usize,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<Duration>> {
    let mut tasks = Vec::new();
    for k in 0..concurrency {
        let (base, world, stop) = (base.clone(), world.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut rng = StdRng::seed_from_u64(k as u64);
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let sv = world.ids[rng.random_range(0..world.ids.len())];
                let url = format!("{base}/segmentation/api/v1/table/{TABLE}/node/{sv}/root");
                let t = Instant::now();
                let resp = http.get(&url).send().await?;
                let status = resp.status();
                let body = resp.bytes().await?;
                if !status.is_success() {
                    bail!("{url}: {status}: {}", String::from_utf8_lossy(&body));
                }
                lat.push(t.elapsed());
            }
            Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort_unstable();
    Ok(all)
}

#[derive(Default)]
struct EditFigures {
    merge: Vec<Duration>,
    split: Vec<Duration>,
    refused: usize,
}

/// Merge a pair, then split it again with a multicut between the same points.
async fn editors(
    base: Arc<String>,
    world: Arc<World>,
    editors: usize,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<EditFigures> {
    let mut tasks = Vec::new();
    for k in 0..editors {
        let (base, world, stop) = (base.clone(), world.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut f = EditFigures::default();
            let mut i = k;
            while !stop.load(Ordering::Relaxed) && i < world.pairs.len() {
                let (a, b) = world.pairs[i];
                i += editors;
                let url = |route: &str| format!("{base}/segmentation/api/v1/table/{TABLE}/{route}");
                let t = Instant::now();
                let r = http
                    .post(url("merge"))
                    .body(json!([world.point(a), world.point(b)]).to_string())
                    .send()
                    .await?;
                if !r.status().is_success() {
                    f.refused += 1;
                    continue;
                }
                r.bytes().await?;
                f.merge.push(t.elapsed());
                let t = Instant::now();
                let r = http
                    .post(url("split"))
                    .body(
                        json!({"sources": [world.point(a)], "sinks": [world.point(b)]}).to_string(),
                    )
                    .send()
                    .await?;
                if r.status().is_success() {
                    r.bytes().await?;
                    f.split.push(t.elapsed());
                } else {
                    f.refused += 1;
                }
            }
            anyhow::Ok(f)
        }));
    }
    let mut all = EditFigures::default();
    for t in tasks {
        let f = t.await??;
        all.merge.extend(f.merge);
        all.split.extend(f.split);
        all.refused += f.refused;
    }
    all.merge.sort_unstable();
    all.split.sort_unstable();
    Ok(all)
}

async fn phase(
    base: &Arc<String>,
    world: &Arc<World>,
    args: &Args,
    editors_n: usize,
) -> anyhow::Result<(Vec<Duration>, EditFigures, f64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let t = Instant::now();
    let look = tokio::spawn(lookups(
        base.clone(),
        world.clone(),
        args.concurrency,
        stop.clone(),
    ));
    let edit = tokio::spawn(editors(
        base.clone(),
        world.clone(),
        editors_n,
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let lat = look.await??;
    let edits = edit.await??;
    Ok((lat, edits, t.elapsed().as_secs_f64()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = start(&args)?;
    let world = Arc::new(World::new(&args)?);
    let base = Arc::new(server.base.clone());
    println!(
        "server {} ; {} supervoxels, {} merge candidates; {} clients, {} s per phase",
        server.base,
        world.ids.len(),
        world.pairs.len(),
        args.concurrency,
        args.seconds
    );
    // Warm-up: the server's caches hold every supervoxel's path to its root (a serving
    // server's steady state), and every client's connection is open.
    {
        let http = reqwest::Client::new();
        let t = Instant::now();
        for batch in world.ids.chunks(10_000) {
            let r = http
                .post(format!("{base}/segmentation/api/v1/table/{TABLE}/roots"))
                .body(json!({ "node_ids": batch }).to_string())
                .send()
                .await?;
            if !r.status().is_success() {
                bail!("warm-up roots: {}", r.status());
            }
            r.bytes().await?;
        }
        println!(
            "warm-up: roots of all {} supervoxels in {:.2} s",
            world.ids.len(),
            t.elapsed().as_secs_f64()
        );
        let stop = Arc::new(AtomicBool::new(false));
        let warm = tokio::spawn(lookups(
            base.clone(),
            world.clone(),
            args.concurrency,
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, Ordering::Relaxed);
        warm.await??;
    }
    let (lat, _, secs) = phase(&base, &world, &args, 0).await?;
    println!(
        "lookups only:  {:>8.0} requests/s  p50 {}  p99 {}  ({} requests)",
        lat.len() as f64 / secs,
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        lat.len()
    );
    let (lat, edits, secs) = phase(&base, &world, &args, args.editors).await?;
    println!(
        "with edits:    {:>8.0} requests/s  p50 {}  p99 {}  ({} requests)",
        lat.len() as f64 / secs,
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        lat.len()
    );
    println!(
        "  merges: {} p50 {} p99 {}; splits: {} p50 {} p99 {}; {} refused",
        edits.merge.len(),
        ms(percentile(&edits.merge, 0.5)),
        ms(percentile(&edits.merge, 0.99)),
        edits.split.len(),
        ms(percentile(&edits.split, 0.5)),
        ms(percentile(&edits.split, 0.99)),
        edits.refused
    );
    Ok(())
}
