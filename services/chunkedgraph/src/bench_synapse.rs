//! `chunkedgraph bench synapses`: a synthetic graph and synthetic synapses (10 million by
//! default, both points in random supervoxels) in one backend, then the synapses of roots
//! with about `--target` synapses, and connectivity matrices among `--matrix` such roots,
//! first with cold caches, then warm (and the roots once more, each on a fresh handle).
//! Every answer is checked against the synapse counts known from the generation. Figures
//! are printed, not asserted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cg_graph::ingest::{ingest, IngestOptions, IngestSource, MemorySource};
use cg_graph::query::RootQuery;
use cg_graph::schema::{self, Meta};
use cg_graph::synthetic::{generate, Params};
use cg_graph::{CacheOptions, ChunkedGraph};
use cg_synapse::{Direction, MappedSynapse, SynapseStore};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::bench::{percentile, progress};

#[derive(clap::Args)]
pub struct SynapseBench {
    /// Supervoxels in the synthetic graph (about).
    #[arg(long, default_value_t = 1_000_000)]
    supervoxels: usize,
    /// Synthetic synapses.
    #[arg(long, default_value_t = 10_000_000)]
    synapses: u64,
    /// Synapses per write batch (each batch adds one cell per supervoxel side it touches).
    #[arg(long, default_value_t = 2_500_000)]
    batch: u64,
    /// Roots queried: those whose synapse count (in + out) is nearest `--target`.
    #[arg(long, default_value_t = 60)]
    samples: usize,
    #[arg(long, default_value_t = 10_000)]
    target: u64,
    /// Roots per connectivity matrix (the `--matrix` roots nearest `--target`).
    #[arg(long, default_value_t = 100)]
    matrix: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// `embedded` (our store in process, as `chunkedgraph serve --data-dir` runs it) or
    /// `ours` (our emulator as a separate process, over loopback gRPC).
    #[arg(long, default_value = "embedded")]
    backend: String,
    /// Keep the embedded store in DIR, and on a later run with the same DIR (and the same
    /// `--supervoxels`, `--synapses`, `--batch` and `--seed`) reuse the graph and synapses
    /// it holds instead of writing them again: for iterating on the queries.
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
}

const TABLE: &str = "bench_synapses";

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn stats(name: &str, mut v: Vec<Duration>) -> Duration {
    v.sort();
    let p50 = percentile(&v, 0.5);
    println!(
        "{name}: p50 {} p90 {} p99 {} max {} (n = {})",
        ms(p50),
        ms(percentile(&v, 0.9)),
        ms(percentile(&v, 0.99)),
        ms(v.last().copied().unwrap_or_default()),
        v.len()
    );
    p50
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Times the synapses of `root` (both directions, now) and checks their count.
async fn timed_root_synapses(s: &SynapseStore, root: u64, want: u64) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let syn = s.root_synapses(root, None, Direction::Both).await?;
    let took = t.elapsed();
    anyhow::ensure!(
        syn.len() as u64 == want,
        "root {root}: {} synapses, generated {want}",
        syn.len()
    );
    Ok(took)
}

pub async fn run(args: SynapseBench) -> anyhow::Result<()> {
    println!(
        "{} cores, load average {} at the start",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load()
    );
    let (client, _keep) = connect(&args.backend, args.data_dir.as_deref()).await?;
    let reuse = client
        .admin()
        .list_tables()
        .await?
        .iter()
        .any(|t| t == TABLE);
    let t = Instant::now();
    let synth = generate(&Params::with_supervoxels(args.seed, args.supervoxels));
    let geometry = synth.geometry()?;
    let ids = synth.supervoxel_ids(&geometry)?;
    let source: Arc<dyn IngestSource> = Arc::new(MemorySource::from_synthetic(&synth, &geometry)?);
    let meta = Meta {
        format: schema::FORMAT,
        geometry,
        ingest_timestamp_micros: cg_bigtable::mutation::now_micros() / 1000 * 1000,
        data_dir: None,
        description: "synapse bench".into(),
    };
    let graph = if reuse {
        println!("reusing the graph and synapses in --data-dir");
        ChunkedGraph::open(client.clone(), TABLE).await?
    } else {
        let graph = ChunkedGraph::create(client.clone(), TABLE, meta).await?;
        let bar = progress(1, "graph ingest");
        ingest(&graph, source, &IngestOptions::default(), &|p| {
            bar.set_length(p.total);
            bar.set_position(p.done);
        })
        .await
        .context("ingesting the synthetic graph")?;
        bar.finish_and_clear();
        graph
    };
    println!(
        "graph: {} supervoxels, {} layers, ingested in {:.1} s",
        ids.len(),
        graph.geometry().n_layers,
        t.elapsed().as_secs_f64()
    );
    let roots = graph.roots(&ids, &RootQuery::default()).await?;

    // Synapses: both points in uniformly random supervoxels, at their positions.
    let store = SynapseStore::new(graph.clone());
    store.prepare().await?;
    let mut rng = StdRng::seed_from_u64(args.seed ^ 0x5_1a95e);
    let mut count: HashMap<u64, u64> = HashMap::new();
    let mut pair: HashMap<(u64, u64), u64> = HashMap::new();
    let bar = progress(args.synapses, "synapse ingest");
    let t = Instant::now();
    let mut next_id = 1u64;
    while next_id <= args.synapses {
        let n = args.batch.min(args.synapses - next_id + 1);
        let mut batch = Vec::with_capacity(n as usize);
        for id in next_id..next_id + n {
            let (a, b) = (
                rng.random_range(0..ids.len()),
                rng.random_range(0..ids.len()),
            );
            let p = |i: usize| synth.supervoxels[i].position.map(|v| v as i32);
            batch.push(MappedSynapse {
                id,
                pre_sv: ids[a],
                post_sv: ids[b],
                pre: p(a),
                post: p(b),
                size: rng.random_range(10..1000),
                score: rng.random_range(0.0..1.0),
            });
            *count.entry(roots[a]).or_default() += 1;
            if roots[a] != roots[b] {
                *count.entry(roots[b]).or_default() += 1;
            }
            *pair.entry((roots[a], roots[b])).or_default() += 1;
        }
        if !reuse {
            store.write(&batch).await?;
        }
        next_id += n;
        bar.set_position(next_id - 1);
    }
    bar.finish_and_clear();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "synapses: {} {} in {secs:.1} s ({:.0}/s), {} roots",
        args.synapses,
        if reuse { "counted (reused)" } else { "written" },
        args.synapses as f64 / secs,
        count.len()
    );
    drop(synth);

    // The roots nearest the target size.
    let mut by_size: Vec<(u64, u64)> = count.iter().map(|(&r, &c)| (r, c)).collect();
    by_size.sort_unstable_by_key(|&(r, c)| (c.abs_diff(args.target), r));
    let picked: Vec<(u64, u64)> = by_size.iter().take(args.samples).copied().collect();
    let (lo, hi) = picked
        .iter()
        .fold((u64::MAX, 0), |(l, h), &(_, c)| (l.min(c), h.max(c)));
    println!(
        "queried roots: {} with {lo}..={hi} synapses each (largest root: {})",
        picked.len(),
        by_size.iter().map(|x| x.1).max().unwrap_or(0)
    );

    // A fresh handle: nothing cached, as in a server that just opened the table.
    let embedded = args.backend == "embedded";
    let fresh = || {
        ChunkedGraph::open_with(
            client.clone(),
            TABLE,
            CacheOptions {
                sole_writer: embedded,
                ..Default::default()
            },
        )
    };
    let g = fresh().await?;
    let s = SynapseStore::new(g.clone());
    let mut times = [Vec::new(), Vec::new()];
    for pass in times.iter_mut() {
        for &(root, want) in &picked {
            pass.push(timed_root_synapses(&s, root, want).await?);
        }
    }
    println!("load average {}", load());
    let [cold, warm] = times;
    let p50_cold = stats("synapses of a root, first query (cold caches)", cold);
    let p50_warm = stats("synapses of a root, again (warm caches)", warm);
    // Stricter: every root on a handle of its own, so no query finds what another cached
    // (the first pass shares its caches across roots, as a server does).
    let mut alone = Vec::new();
    for &(root, want) in &picked {
        let s = SynapseStore::new(fresh().await?);
        alone.push(timed_root_synapses(&s, root, want).await?);
    }
    let p50_alone = stats("synapses of a root, each on a fresh handle", alone);
    let mut pt = Vec::new();
    for &(root, _) in &picked {
        let t = Instant::now();
        let p = s.partners(root, None, Direction::Both).await?;
        pt.push(t.elapsed());
        anyhow::ensure!(!p.is_empty(), "root {root} has no partners");
    }
    stats("partners of a root, ranked (warm)", pt);

    // Matrices: disjoint sets of roots near the target, each first cold, then again warm.
    let sets: Vec<Vec<u64>> = by_size
        .iter()
        .skip(args.samples)
        .map(|x| x.0)
        .collect::<Vec<_>>()
        .chunks(args.matrix)
        .filter(|c| c.len() == args.matrix)
        .take(3)
        .map(<[u64]>::to_vec)
        .collect();
    let g = fresh().await?;
    let s = SynapseStore::new(g);
    let (mut mcold, mut mwarm) = (Vec::new(), Vec::new());
    for set in &sets {
        for out in [&mut mcold, &mut mwarm] {
            let t = Instant::now();
            let m = s.connectivity(set, None).await?;
            out.push(t.elapsed());
            for (i, a) in set.iter().enumerate() {
                for (j, b) in set.iter().enumerate() {
                    let want = pair.get(&(*a, *b)).copied().unwrap_or(0);
                    anyhow::ensure!(m.counts[i][j] == want, "matrix {a}->{b}");
                }
            }
        }
    }
    let total: u64 = sets
        .iter()
        .flatten()
        .map(|r| count.get(r).copied().unwrap_or(0))
        .sum();
    println!(
        "{} matrices of {}x{} roots ({} synapses on their roots in all)",
        sets.len(),
        args.matrix,
        args.matrix,
        total
    );
    let m_cold = stats("connectivity matrix, cold", mcold);
    let m_warm = stats("connectivity matrix, warm", mwarm);
    println!(
        "summary: root with ~{} synapses p50 {} cold / {} warm / {} each on a fresh handle (target <= 50 ms); {}x{} matrix p50 {} cold / {} warm (target <= 1 s); load average {}",
        args.target,
        ms(p50_cold),
        ms(p50_warm),
        ms(p50_alone),
        args.matrix,
        args.matrix,
        ms(m_cold),
        ms(m_warm),
        load()
    );
    Ok(())
}

/// The backend's client, and whatever must live as long as it.
async fn connect(
    backend: &str,
    data_dir: Option<&std::path::Path>,
) -> anyhow::Result<(cg_bigtable::Client, Box<dyn std::any::Any>)> {
    use cg_bigtable::{Config, Target};
    match backend {
        "embedded" => {
            let dir = tempfile::tempdir()?;
            let path = data_dir.unwrap_or(dir.path());
            let store = cg_emulator::open(path, cg_emulator::StoreOptions::default())
                .context("opening the embedded store")?;
            let client = Config::new(Target::Channel(
                cg_emulator::in_process_channel(store),
                "bench".into(),
                "bench".into(),
            ))
            .connect()
            .await?;
            Ok((client, Box::new(dir)))
        }
        "ours" if data_dir.is_some() => anyhow::bail!("--data-dir needs --backend embedded"),
        "ours" => {
            let server = crate::bench::start_ours()?;
            let client = Config::new(Target::Emulator(server.addr.to_string()))
                .connect()
                .await?;
            Ok((client, Box::new(server)))
        }
        b => anyhow::bail!("--backend {b:?}: expected embedded or ours"),
    }
}
