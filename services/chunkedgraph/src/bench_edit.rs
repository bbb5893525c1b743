//! `chunkedgraph bench edits`: merge, undo and multicut split latencies of the ChunkedGraph
//! library on Google's emulator and ours (separate processes on loopback) and on our store
//! embedded in-process, in one run, with the same graph and the same edits. The neurites are
//! long (about a thousand supervoxels each) so that a split box holds a realistic subgraph.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cg_bigtable::Client;
use cg_graph::edit::{EditOptions, Point};
use cg_graph::ingest::{ingest, IngestOptions, IngestProgress, IngestSource, MemorySource};
use cg_graph::schema::{self, Meta};
use cg_graph::synthetic::{generate, Params, SyntheticGraph};
use cg_graph::ChunkedGraph;
use cg_ids::{Geometry, VoxelBox};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::bench::{percentile, progress, rss_bytes, BackendArgs};

#[derive(clap::Args)]
pub struct EditBench {
    /// Supervoxels in the synthetic graph (about).
    #[arg(long, default_value_t = 1_000_000)]
    supervoxels: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Merges measured (each is then undone, and the undo measured).
    #[arg(long, default_value_t = 200)]
    merges: usize,
    /// Multicut splits measured.
    #[arg(long, default_value_t = 100)]
    splits: usize,
    /// Voxels around the split points that make the split's box.
    #[arg(long, default_value_t = 48)]
    split_margin: u64,
    #[command(flatten)]
    backends: BackendArgs,
}

const TABLE: &str = "bench_edits";

/// Supervoxel indices of one planned edit.
struct Workload {
    synth: SyntheticGraph,
    geometry: Geometry,
    ids: Vec<u64>,
    source: Arc<MemorySource>,
    merges: Vec<(usize, usize)>,
    splits: Vec<(usize, usize)>,
}

fn find(p: &mut [usize], mut x: usize) -> usize {
    while p[x] != x {
        p[x] = p[p[x]];
        x = p[x];
    }
    x
}

impl Workload {
    fn new(args: &EditBench) -> anyhow::Result<Workload> {
        let t = Instant::now();
        let mut params = Params::with_supervoxels(args.seed, args.supervoxels);
        // Long neurites: a thousand supervoxels each instead of a hundred.
        params.steps *= 10;
        params.neurites = (params.neurites / 10).max(1);
        // As many contacts per neurite as the default graph: objects of a few neurites.
        params.contact_rate /= 10.0;
        let synth = generate(&params);
        let geometry = synth.geometry()?;
        let ids = synth.supervoxel_ids(&geometry)?;
        let source = Arc::new(MemorySource::from_synthetic(&synth, &geometry)?);
        println!(
            "generated in {:.1} s: {} supervoxels, {} edges, {} neurites, {} layers",
            t.elapsed().as_secs_f64(),
            ids.len(),
            synth.edges.len(),
            params.neurites,
            geometry.n_layers
        );
        let n = ids.len();
        let mut comp: Vec<usize> = (0..n).collect();
        for e in &synth.edges {
            if SyntheticGraph::is_active(e) {
                let (a, b) = (find(&mut comp, e.a), find(&mut comp, e.b));
                comp[a] = b;
            }
        }
        let comp: Vec<usize> = (0..n).map(|i| find(&mut comp, i)).collect();
        let sv = &synth.supervoxels;
        let mut by_chunk: HashMap<[u32; 3], Vec<usize>> = HashMap::new();
        for (i, s) in sv.iter().enumerate() {
            by_chunk.entry(s.chunk).or_default().push(i);
        }
        let mut rng = StdRng::seed_from_u64(args.seed ^ 0xed17);
        // Merges join objects not yet joined by an earlier planned merge (they are all
        // undone before the splits run).
        let mut joined: Vec<usize> = (0..n).collect();
        let mut merges = Vec::new();
        let mut tries = 0;
        while merges.len() < args.merges && tries < args.merges * 100 {
            tries += 1;
            let i = rng.random_range(0..n);
            let ci = find(&mut joined, comp[i]);
            let near = by_chunk[&sv[i].chunk]
                .iter()
                .copied()
                .filter(|&j| find(&mut joined, comp[j]) != ci)
                .min_by_key(|&j| dist(sv[i].position, sv[j].position));
            if let Some(j) = near {
                let cj = find(&mut joined, comp[j]);
                joined[ci] = cj;
                merges.push((i, j));
            }
        }
        // Splits undo false merges: at an active edge between two neurites, a source in one
        // neurite and a sink in the other, a few supervoxels away from the contact. One split
        // per object.
        let mut members: HashMap<usize, Vec<usize>> = HashMap::new();
        for (i, &c) in comp.iter().enumerate() {
            members.entry(c).or_default().push(i);
        }
        let mut contacts: Vec<(usize, usize)> = synth
            .edges
            .iter()
            .filter(|e| SyntheticGraph::is_active(e) && sv[e.a].neurite != sv[e.b].neurite)
            .map(|e| (e.a, e.b))
            .collect();
        contacts.sort_unstable();
        let mut split_objects: HashSet<usize> = HashSet::new();
        let mut splits = Vec::new();
        for (x, y) in contacts {
            if splits.len() >= args.splits || split_objects.contains(&comp[x]) {
                continue;
            }
            let m = &members[&comp[x]];
            let pick = |at: usize| -> Option<usize> {
                let mut s: Vec<usize> = m
                    .iter()
                    .copied()
                    .filter(|&i| sv[i].neurite == sv[at].neurite)
                    .collect();
                if s.len() < 30 {
                    return None;
                }
                s.sort_by_key(|&i| dist(sv[i].position, sv[at].position));
                Some(s[8])
            };
            if let (Some(a), Some(b)) = (pick(x), pick(y)) {
                split_objects.insert(comp[x]);
                splits.push((a, b));
            }
        }
        println!(
            "planned {} merges and {} splits on distinct objects",
            merges.len(),
            splits.len()
        );
        Ok(Workload {
            synth,
            geometry,
            ids,
            source,
            merges,
            splits,
        })
    }

    fn point(&self, i: usize) -> Point {
        let p = self.synth.supervoxels[i].position;
        let r = self.geometry.resolution;
        Point {
            supervoxel: self.ids[i],
            position_nm: [
                f64::from(p[0]) * r[0],
                f64::from(p[1]) * r[1],
                f64::from(p[2]) * r[2],
            ],
        }
    }

    /// The box a split around `a` and `b` looks in (as the library makes it).
    fn split_box(&self, a: usize, b: usize, margin: u64) -> VoxelBox {
        let (pa, pb) = (
            self.synth.supervoxels[a].position,
            self.synth.supervoxels[b].position,
        );
        let mut min = [0u64; 3];
        let mut max = [0u64; 3];
        for d in 0..3 {
            let (lo, hi) = (pa[d].min(pb[d]) as u64, pa[d].max(pb[d]) as u64);
            min[d] = lo.saturating_sub(margin);
            max[d] = (hi + margin + 1).min(self.geometry.volume_size[d]);
        }
        VoxelBox::new(min, max)
    }
}

fn dist(a: [u32; 3], b: [u32; 3]) -> u32 {
    (0..3).map(|d| a[d].abs_diff(b[d])).sum()
}

struct Figures {
    ingest: Duration,
    merge: Vec<Duration>,
    undo: Vec<Duration>,
    split: Vec<Duration>,
    split_box_svs: f64,
    refused: usize,
    rss: Option<u64>,
}

async fn measure(
    name: &str,
    client: Client,
    pid: Option<u32>,
    w: &Workload,
    args: &EditBench,
) -> anyhow::Result<Figures> {
    let graph = ChunkedGraph::create(
        client,
        TABLE,
        Meta {
            format: schema::FORMAT,
            geometry: w.geometry.clone(),
            ingest_timestamp_micros: cg_bigtable::mutation::now_micros() / 1000 * 1000,
            data_dir: None,
            description: "bench edits".into(),
        },
    )
    .await
    .with_context(|| format!("{name}: creating the graph"))?;
    let bar = progress(1, &format!("{name} ingest"));
    let on_progress = |p: IngestProgress| {
        bar.set_length(p.total);
        bar.set_position(p.done);
    };
    let t = Instant::now();
    let source: Arc<dyn IngestSource> = w.source.clone();
    ingest(&graph, source, &IngestOptions::default(), &on_progress)
        .await
        .with_context(|| format!("{name}: ingest"))?;
    let ingest_time = t.elapsed();
    bar.finish_and_clear();
    println!("{name}: ingest {:.1} s", ingest_time.as_secs_f64());

    let opts = EditOptions::default();
    let mut refused = 0;
    let mut merge = Vec::new();
    let mut ops = Vec::new();
    let bar = progress(w.merges.len() as u64, &format!("{name} merges"));
    for &(a, b) in &w.merges {
        let t = Instant::now();
        match graph.merge("bench", w.point(a), w.point(b), &opts).await {
            Ok(r) => {
                merge.push(t.elapsed());
                ops.push(r.operation_id);
            }
            Err(e) if e.is_client_error() => refused += 1,
            Err(e) => return Err(e).context(format!("{name}: merge")),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mut undo = Vec::new();
    for op in ops {
        let t = Instant::now();
        graph
            .undo("bench", op, &opts)
            .await
            .with_context(|| format!("{name}: undo {op}"))?;
        undo.push(t.elapsed());
    }
    let split_opts = EditOptions {
        bbox_margin_voxels: [args.split_margin; 3],
        ..opts
    };
    let mut split = Vec::new();
    let mut box_svs = 0usize;
    let bar = progress(w.splits.len() as u64, &format!("{name} splits"));
    for &(a, b) in &w.splits {
        let t = Instant::now();
        match graph
            .multicut("bench", &[w.point(a)], &[w.point(b)], &split_opts)
            .await
        {
            Ok(r) => {
                split.push(t.elapsed());
                // The old root's leaves in the box: the subgraph the cut worked on.
                let bbox = w.split_box(a, b, args.split_margin);
                box_svs += graph.leaves(r.old_roots[0], Some(bbox), 1).await?.len();
            }
            Err(e) if e.is_client_error() => refused += 1,
            Err(e) => return Err(e).context(format!("{name}: split")),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let figures = Figures {
        ingest: ingest_time,
        split_box_svs: box_svs as f64 / split.len().max(1) as f64,
        merge: sorted(merge),
        undo: sorted(undo),
        split: sorted(split),
        refused,
        rss: pid.and_then(rss_bytes),
    };
    println!(
        "{name}: merge p50 {} p99 {} ({}), undo p50 {} p99 {}, split p50 {} p99 {} ({} done, {:.0} supervoxels in the box), {} refused",
        ms(percentile(&figures.merge, 0.5)),
        ms(percentile(&figures.merge, 0.99)),
        figures.merge.len(),
        ms(percentile(&figures.undo, 0.5)),
        ms(percentile(&figures.undo, 0.99)),
        ms(percentile(&figures.split, 0.5)),
        ms(percentile(&figures.split, 0.99)),
        figures.split.len(),
        figures.split_box_svs,
        figures.refused
    );
    Ok(figures)
}

fn sorted(mut v: Vec<Duration>) -> Vec<Duration> {
    v.sort_unstable();
    v
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn print_table(results: &[(&str, Figures)]) {
    type Get = fn(&Figures) -> String;
    let rows: [(&str, Get); 11] = [
        ("ingest", |f| format!("{:.1} s", f.ingest.as_secs_f64())),
        ("merge p50", |f| ms(percentile(&f.merge, 0.5))),
        ("merge p99", |f| ms(percentile(&f.merge, 0.99))),
        ("undo p50", |f| ms(percentile(&f.undo, 0.5))),
        ("undo p99", |f| ms(percentile(&f.undo, 0.99))),
        ("split p50", |f| ms(percentile(&f.split, 0.5))),
        ("split p99", |f| ms(percentile(&f.split, 0.99))),
        ("edits done (m/u/s)", |f| {
            format!("{}/{}/{}", f.merge.len(), f.undo.len(), f.split.len())
        }),
        ("supervoxels in split box", |f| {
            format!("{:.0}", f.split_box_svs)
        }),
        ("refused", |f| f.refused.to_string()),
        ("server resident MiB", |f| {
            f.rss
                .map_or("-".into(), |b| format!("{:.0}", b as f64 / 1048576.0))
        }),
    ];
    print!("\n{:<26}", "metric");
    for (name, _) in results {
        print!(" {name:>14}");
    }
    println!();
    for (label, get) in rows {
        print!("{label:<26}");
        for (_, f) in results {
            print!(" {:>14}", get(f));
        }
        println!();
    }
    println!(
        "PyChunkedGraph (published): merge p50 940 ms p99 3850 ms; split p50 1820 ms p99 12700 ms"
    );
}

pub async fn run(args: EditBench) -> anyhow::Result<()> {
    let w = Workload::new(&args)?;
    let mut results = Vec::new();
    for name in args.backends.names() {
        let b = args.backends.connect(name).await?;
        let f = measure(b.name, b.client.clone(), b.pid, &w, &args).await?;
        results.push((b.name, f));
    }
    print_table(&results);
    Ok(())
}
