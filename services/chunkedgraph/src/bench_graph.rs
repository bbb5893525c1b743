//! `chunkedgraph bench graph`: the ChunkedGraph library (ingest, root lookups, leaves in a
//! box) on Google's emulator and ours, both as separate processes on loopback, and on our
//! store embedded in-process, in the same run with the same graph and the same sampled IDs.
//! Figures are printed, not asserted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cg_bigtable::Client;
use cg_graph::ingest::{ingest, IngestOptions, IngestProgress, IngestSource, MemorySource};
use cg_graph::query::RootQuery;
use cg_graph::schema::{self, Meta};
use cg_graph::synthetic::{generate, Params};
use cg_graph::ChunkedGraph;
use cg_ids::{Geometry, VoxelBox};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::bench::{percentile, progress, rss_bytes, BackendArgs};

#[derive(clap::Args)]
pub struct GraphBench {
    /// Supervoxels in the synthetic graph (about; the generator rounds).
    #[arg(long, default_value_t = 1_000_000)]
    supervoxels: usize,
    /// Seed of the synthetic graph and of the sampled IDs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Single root lookups measured, cold and warm.
    #[arg(long, default_value_t = 2000)]
    samples: usize,
    #[command(flatten)]
    backends: BackendArgs,
    /// Ingest chunk tasks in flight.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

const TABLE: &str = "bench";
const BATCH_SIZES: [usize; 3] = [1_000, 10_000, 100_000];
const LEAVES_QUERIES: usize = 200;
/// Edge of the leaves-query box in voxels, at least two chunks.
const BOX_VOXELS: u64 = 256;

/// Everything every backend gets: the input and the IDs to query, drawn once so the
/// backends answer exactly the same questions.
struct Workload {
    geometry: Geometry,
    source: Arc<MemorySource>,
    supervoxels: usize,
    single: Vec<u64>,
    batches: Vec<Vec<u64>>,
    /// Supervoxels whose root and chunk give the leaves queries.
    leaves_at: Vec<u64>,
}

impl Workload {
    fn new(args: &GraphBench) -> anyhow::Result<Workload> {
        let t = Instant::now();
        let g = generate(&Params::with_supervoxels(args.seed, args.supervoxels));
        let geometry = g.geometry()?;
        let source = Arc::new(MemorySource::from_synthetic(&g, &geometry)?);
        let ids = g.supervoxel_ids(&geometry)?;
        println!(
            "generated in {:.1} s: {} supervoxels, {} edges, {} supervoxel chunks, {} layers, chunk {:?} voxels, volume {:?}",
            t.elapsed().as_secs_f64(),
            source.supervoxels,
            source.edges,
            source.chunks().len(),
            geometry.n_layers,
            g.params.chunk_size,
            g.volume_size(),
        );
        let mut rng = StdRng::seed_from_u64(args.seed ^ 0x5eed);
        let mut pick = |k: usize| -> Vec<u64> {
            rand::seq::index::sample(&mut rng, ids.len(), k.min(ids.len()))
                .into_iter()
                .map(|i| ids[i])
                .collect()
        };
        let single = pick(args.samples);
        let batches = BATCH_SIZES.iter().map(|&k| pick(k)).collect();
        let leaves_at = pick(LEAVES_QUERIES);
        Ok(Workload {
            geometry,
            source,
            supervoxels: ids.len(),
            single,
            batches,
            leaves_at,
        })
    }

    /// A box of `BOX_VOXELS` per side centred on the supervoxel's chunk.
    fn box_around(&self, sv: u64) -> VoxelBox {
        let c = self.geometry.chunk_box(1, self.geometry.coords_of(sv));
        let half = BOX_VOXELS / 2;
        let mut min = [0u64; 3];
        let mut max = [0u64; 3];
        for d in 0..3 {
            let centre = (c.min[d] + c.max[d]) / 2;
            min[d] = centre.saturating_sub(half);
            max[d] = min[d] + BOX_VOXELS;
        }
        VoxelBox::new(min, max)
    }
}

/// Latencies of one kind of call, sorted.
struct Latencies(Vec<Duration>);

impl Latencies {
    fn new(mut v: Vec<Duration>) -> Latencies {
        v.sort();
        Latencies(v)
    }
    fn p50(&self) -> Duration {
        percentile(&self.0, 0.5)
    }
    fn p99(&self) -> Duration {
        percentile(&self.0, 0.99)
    }
}

struct Figures {
    ingest: Duration,
    rows_written: u64,
    root_cold: Latencies,
    root_warm: Latencies,
    /// Wall time per batch size in `BATCH_SIZES`.
    batch: Vec<Duration>,
    leaves_cold: Latencies,
    leaves_warm: Latencies,
    leaves_mean: f64,
    /// The server process's resident memory after the queries; none when embedded.
    rss: Option<u64>,
    /// Sum of every answer, wrapping: the backends must agree on it.
    checksum: u64,
}

fn checksum(acc: &mut u64, ids: &[u64]) {
    for &id in ids {
        *acc = acc.wrapping_mul(0x100_0000_01b3).wrapping_add(id);
    }
}

async fn measure(
    name: &str,
    client: Client,
    server_pid: Option<u32>,
    w: &Workload,
    args: &GraphBench,
) -> anyhow::Result<Figures> {
    let graph = ChunkedGraph::create(
        client,
        TABLE,
        Meta {
            format: schema::FORMAT,
            geometry: w.geometry.clone(),
            ingest_timestamp_micros: cg_bigtable::mutation::now_micros(),
            data_dir: None,
            description: "bench".into(),
        },
    )
    .await
    .with_context(|| format!("{name}: creating the graph"))?;

    let bar = progress(1, &format!("{name} ingest"));
    let on_progress = |p: IngestProgress| {
        bar.set_length(p.total);
        bar.set_position(p.done);
        bar.set_message(format!("{name} ingest L{}/{}", p.layer, p.layers));
    };
    let t = Instant::now();
    let source: Arc<dyn IngestSource> = w.source.clone();
    let report = ingest(
        &graph,
        source,
        &IngestOptions {
            concurrency: args.concurrency,
            ..Default::default()
        },
        &on_progress,
    )
    .await
    .with_context(|| format!("{name}: ingest"))?;
    let ingest_time = t.elapsed();
    bar.finish_and_clear();
    println!(
        "{name}: ingest {:.1} s, {:.0} supervoxels/s, {} rows, {} nodes",
        ingest_time.as_secs_f64(),
        w.supervoxels as f64 / ingest_time.as_secs_f64(),
        report.rows_written,
        report.nodes
    );
    let mut sum = 0u64;

    // Cold: every lookup starts from an empty cache, so it pays one round trip per layer.
    let mut cold = Vec::with_capacity(w.single.len());
    for &sv in &w.single {
        graph.clear_cache();
        let t = Instant::now();
        let r = graph.root(sv, None).await?;
        cold.push(t.elapsed());
        checksum(&mut sum, &[r]);
    }
    // Warm: one untimed pass fills the cache, the timed pass asks the same IDs again.
    for &sv in &w.single {
        graph.root(sv, None).await?;
    }
    let mut warm = Vec::with_capacity(w.single.len());
    for &sv in &w.single {
        let t = Instant::now();
        graph.root(sv, None).await?;
        warm.push(t.elapsed());
    }
    let (root_cold, root_warm) = (Latencies::new(cold), Latencies::new(warm));
    println!(
        "{name}: root cold p50 {} p99 {}, warm p50 {} p99 {}",
        fmt_dur(root_cold.p50()),
        fmt_dur(root_cold.p99()),
        fmt_dur(root_warm.p50()),
        fmt_dur(root_warm.p99())
    );

    let mut batch = Vec::new();
    for ids in &w.batches {
        graph.clear_cache();
        let t = Instant::now();
        let roots = graph.roots(ids, &RootQuery::default()).await?;
        let d = t.elapsed();
        checksum(&mut sum, &roots);
        println!(
            "{name}: roots of {} supervoxels in {} ({:.0} ids/s)",
            ids.len(),
            fmt_dur(d),
            ids.len() as f64 / d.as_secs_f64()
        );
        batch.push(d);
    }

    graph.clear_cache();
    let mut queries = Vec::with_capacity(w.leaves_at.len());
    for &sv in &w.leaves_at {
        queries.push((graph.root(sv, None).await?, w.box_around(sv)));
    }
    let mut cold = Vec::with_capacity(queries.len());
    let mut total = 0usize;
    for (root, bbox) in &queries {
        graph.clear_cache();
        let t = Instant::now();
        let leaves = graph.leaves(*root, Some(*bbox), 1).await?;
        cold.push(t.elapsed());
        total += leaves.len();
        checksum(&mut sum, &leaves);
    }
    for (root, bbox) in &queries {
        graph.leaves(*root, Some(*bbox), 1).await?;
    }
    let mut warm = Vec::with_capacity(queries.len());
    for (root, bbox) in &queries {
        let t = Instant::now();
        graph.leaves(*root, Some(*bbox), 1).await?;
        warm.push(t.elapsed());
    }
    let (leaves_cold, leaves_warm) = (Latencies::new(cold), Latencies::new(warm));
    let leaves_mean = total as f64 / queries.len().max(1) as f64;
    println!(
        "{name}: leaves in {BOX_VOXELS}³ box ({leaves_mean:.0} supervoxels on average) cold p50 {} p99 {}, warm p50 {} p99 {}",
        fmt_dur(leaves_cold.p50()),
        fmt_dur(leaves_cold.p99()),
        fmt_dur(leaves_warm.p50()),
        fmt_dur(leaves_warm.p99())
    );

    Ok(Figures {
        ingest: ingest_time,
        rows_written: report.rows_written,
        root_cold,
        root_warm,
        batch,
        leaves_cold,
        leaves_warm,
        leaves_mean,
        rss: server_pid.and_then(rss_bytes),
        checksum: sum,
    })
}

fn fmt_dur(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}

/// One row of the final table: how to print a backend's figure, and the number the ratio
/// column divides.
struct Metric {
    name: String,
    value: Box<dyn Fn(&Figures) -> f64>,
    show: fn(f64) -> String,
}

fn secs(s: f64) -> String {
    fmt_dur(Duration::from_secs_f64(s))
}

fn rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k/s", r / 1e3)
    } else {
        format!("{r:.0} /s")
    }
}

fn metrics(supervoxels: usize, batches: &[Vec<u64>]) -> Vec<Metric> {
    let lat = |name: &str, f: fn(&Figures) -> Duration| Metric {
        name: name.to_string(),
        value: Box::new(move |x| f(x).as_secs_f64()),
        show: secs,
    };
    let mut m = vec![
        Metric {
            name: "ingest supervoxels/s".into(),
            value: Box::new(move |f| supervoxels as f64 / f.ingest.as_secs_f64()),
            show: rate,
        },
        lat("ingest time", |f| f.ingest),
        Metric {
            name: "ingest rows written".into(),
            value: Box::new(|f| f.rows_written as f64),
            show: |v| format!("{v:.0}"),
        },
        lat("root cold p50", |f| f.root_cold.p50()),
        lat("root cold p99", |f| f.root_cold.p99()),
        lat("root warm p50", |f| f.root_warm.p50()),
        lat("root warm p99", |f| f.root_warm.p99()),
    ];
    for (i, ids) in batches.iter().enumerate() {
        let n = ids.len() as f64;
        m.push(Metric {
            name: format!("roots batch {}", ids.len()),
            value: Box::new(move |f| f.batch[i].as_secs_f64()),
            show: secs,
        });
        m.push(Metric {
            name: format!("roots batch {} ids/s", ids.len()),
            value: Box::new(move |f| n / f.batch[i].as_secs_f64()),
            show: rate,
        });
    }
    m.extend([
        lat("leaves box cold p50", |f| f.leaves_cold.p50()),
        lat("leaves box cold p99", |f| f.leaves_cold.p99()),
        lat("leaves box warm p50", |f| f.leaves_warm.p50()),
        lat("leaves box warm p99", |f| f.leaves_warm.p99()),
        Metric {
            name: "leaves per box (mean)".into(),
            value: Box::new(|f| f.leaves_mean),
            show: |v| format!("{v:.0}"),
        },
        Metric {
            name: "server resident MiB".into(),
            value: Box::new(|f| f.rss.map_or(f64::NAN, |b| b as f64 / (1u64 << 20) as f64)),
            show: |v| {
                if v.is_nan() {
                    "-".into()
                } else {
                    format!("{v:.0}")
                }
            },
        },
    ]);
    m
}

fn print_table(w: &Workload, results: &[(&str, Figures)]) {
    println!(
        "\n{} supervoxels, {} layers; {} single lookups, {} leaves queries in a {BOX_VOXELS}³ voxel box; ours fsyncs every write\n",
        w.supervoxels,
        w.geometry.n_layers,
        w.single.len(),
        w.leaves_at.len()
    );
    let ours = results.iter().position(|r| r.0 == "ours");
    let google = results.iter().position(|r| r.0 == "cbtemulator");
    print!("{:<26}", "metric");
    for (name, _) in results {
        print!(" {name:>14}");
    }
    if ours.is_some() && google.is_some() {
        print!(" {:>18}", "ours/cbtemulator");
    }
    println!();
    for m in metrics(w.supervoxels, &w.batches) {
        print!("{:<26}", m.name);
        for (_, f) in results {
            print!(" {:>14}", (m.show)((m.value)(f)));
        }
        if let (Some(o), Some(g)) = (ours, google) {
            print!(
                " {:>17.2}x",
                (m.value)(&results[o].1) / (m.value)(&results[g].1)
            );
        }
        println!();
    }
    // Per-ID cost of the largest batch over the smallest: 1.0 is linear scaling.
    if let (Some(first), Some(last)) = (w.batches.first(), w.batches.last()) {
        let (i, j) = (0, w.batches.len() - 1);
        for (name, f) in results {
            let small = f.batch[i].as_secs_f64() / first.len() as f64;
            let large = f.batch[j].as_secs_f64() / last.len() as f64;
            println!(
                "{name}: per-id cost of {} vs {} roots: {:.2}x (1.0 = linear; below 1.0 = cheaper per id in bigger batches)",
                last.len(),
                first.len(),
                large / small
            );
        }
    }
    let sums: Vec<u64> = results.iter().map(|r| r.1.checksum).collect();
    if sums.windows(2).all(|p| p[0] == p[1]) {
        println!("all backends gave the same roots and leaves");
    } else {
        println!("WARNING: the backends disagree on roots or leaves: {sums:x?}");
    }
}

pub async fn run(args: GraphBench) -> anyhow::Result<()> {
    let w = Workload::new(&args)?;
    let mut results = Vec::new();
    for name in args.backends.names() {
        let b = args.backends.connect(name).await?;
        let f = measure(b.name, b.client.clone(), b.pid, &w, &args).await?;
        results.push((b.name, f));
    }
    print_table(&w, &results);
    Ok(())
}
