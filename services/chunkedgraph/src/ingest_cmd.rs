//! `chunkedgraph ingest`: builds a graph from supervoxel edges (CSV files) or a seeded synthetic
//! graph. Re-running the same command resumes an interrupted ingest: finished chunks are
//! skipped, unfinished ones rewritten with identical cells.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use cg_graph::ingest::{
    ingest, Agglomeration, EdgeKind, IngestOptions, IngestProgress, MemorySource, RawEdge,
};
use cg_graph::schema::{self, Meta};
use cg_graph::ChunkedGraph;
use cg_ids::Geometry;
use indicatif::{ProgressBar, ProgressStyle};

use crate::storage::StorageArgs;

#[derive(clap::Args)]
pub struct IngestArgs {
    #[command(flatten)]
    storage: StorageArgs,
    /// Graph name (the Bigtable table).
    #[arg(long)]
    table: String,
    /// Generate a seeded synthetic graph of about this many supervoxels.
    #[arg(long, conflicts_with = "edges")]
    synthetic: Option<usize>,
    /// Seed of the synthetic graph.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Edges CSV: `sv1,sv2,affinity,area[,kind]`, kind one of in, between, cross (default:
    /// inferred from the chunks, cross when the affinity is `inf`). A header line is allowed.
    #[arg(long, requires_all = ["volume_size", "chunk_size"])]
    edges: Option<PathBuf>,
    /// Supervoxel IDs, one per line; needed only for supervoxels without edges.
    #[arg(long, requires = "edges")]
    supervoxels: Option<PathBuf>,
    /// Agglomeration as component labels, CSV `sv,label`: edges within a component are active.
    #[arg(long, conflicts_with = "threshold", requires = "edges")]
    components: Option<PathBuf>,
    /// Agglomeration as a mean-affinity threshold: edges at or above it are active.
    #[arg(long, default_value_t = 0.5)]
    threshold: f32,
    /// Volume size in voxels, `x,y,z`.
    #[arg(long, value_parser = parse_u64s)]
    volume_size: Option<Triple<u64>>,
    /// Supervoxel chunk size in voxels, `x,y,z`.
    #[arg(long, value_parser = parse_u32s)]
    chunk_size: Option<Triple<u32>>,
    /// Voxel size in nm, `x,y,z`.
    #[arg(long, value_parser = parse_f64s)]
    resolution: Option<Triple<f64>>,
    /// Where the supervoxel volume and meshes live, recorded in the graph's metadata. With
    /// --synthetic, the synthetic graph's supervoxel volume is written there (local path).
    #[arg(long)]
    segmentation_dir: Option<String>,
    /// Chunk tasks in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

#[derive(Clone, Copy, Debug)]
pub struct Triple<T>(pub [T; 3]);

fn parse_triple<T: std::str::FromStr>(s: &str) -> Result<Triple<T>, String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    if parts.len() != 3 {
        return Err(format!("expected x,y,z, got {s:?}"));
    }
    let mut out = Vec::with_capacity(3);
    for p in parts {
        out.push(
            p.parse::<T>()
                .map_err(|_| format!("{p:?} is not a number"))?,
        );
    }
    let arr: [T; 3] = out
        .try_into()
        .map_err(|_| format!("expected x,y,z, got {s:?}"))?;
    Ok(Triple(arr))
}

fn parse_u64s(s: &str) -> Result<Triple<u64>, String> {
    parse_triple(s)
}
pub(crate) fn parse_u32s(s: &str) -> Result<Triple<u32>, String> {
    parse_triple(s)
}
pub(crate) fn parse_f64s(s: &str) -> Result<Triple<f64>, String> {
    parse_triple(s)
}

fn read_lines(path: &Path) -> anyhow::Result<impl Iterator<Item = (usize, String)>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let name = path.display().to_string();
    Ok(BufReader::new(file)
        .lines()
        .enumerate()
        .map_while(move |(i, l)| match l {
            Ok(l) => Some((i + 1, l)),
            Err(e) => {
                tracing::error!("{name}: line {}: {e}", i + 1);
                None
            }
        })
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#')))
}

fn is_header(line: &str) -> bool {
    line.split(',')
        .next()
        .is_some_and(|f| f.trim().parse::<u64>().is_err())
}

fn read_edges(path: &Path) -> anyhow::Result<Vec<RawEdge>> {
    let mut out = Vec::new();
    for (n, line) in read_lines(path)? {
        if n == 1 && is_header(&line) {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let ctx = || format!("{}: line {n}: {line:?}", path.display());
        if f.len() < 4 || f.len() > 5 {
            bail!("{}: expected sv1,sv2,affinity,area[,kind]", ctx());
        }
        let kind = match f.get(4).copied() {
            None | Some("") => None,
            Some("in") => Some(EdgeKind::InChunk),
            Some("between") => Some(EdgeKind::BetweenChunk),
            Some("cross") => Some(EdgeKind::CrossChunk),
            Some(k) => bail!("{}: kind {k:?} is not in, between or cross", ctx()),
        };
        out.push(RawEdge {
            a: f[0].parse().with_context(ctx)?,
            b: f[1].parse().with_context(ctx)?,
            affinity: f[2].parse().with_context(ctx)?,
            area: f[3].parse().with_context(ctx)?,
            kind,
        });
    }
    Ok(out)
}

fn read_ids(path: &Path) -> anyhow::Result<Vec<u64>> {
    let mut out = Vec::new();
    for (n, line) in read_lines(path)? {
        if n == 1 && is_header(&line) {
            continue;
        }
        out.push(
            line.trim()
                .parse()
                .with_context(|| format!("{}: line {n}: {line:?}", path.display()))?,
        );
    }
    Ok(out)
}

fn read_labels(path: &Path) -> anyhow::Result<HashMap<u64, u64>> {
    let mut out = HashMap::new();
    for (n, line) in read_lines(path)? {
        if n == 1 && is_header(&line) {
            continue;
        }
        let ctx = || format!("{}: line {n}: {line:?}", path.display());
        let (sv, label) = line
            .split_once(',')
            .with_context(|| format!("{}: expected sv,label", ctx()))?;
        out.insert(
            sv.trim().parse().with_context(ctx)?,
            label.trim().parse().with_context(ctx)?,
        );
    }
    Ok(out)
}

/// The geometry and input the arguments describe.
type Loaded = (
    Geometry,
    MemorySource,
    Option<cg_graph::synthetic::SyntheticGraph>,
);

fn load(args: &IngestArgs) -> anyhow::Result<Loaded> {
    if let Some(n) = args.synthetic {
        let params = cg_graph::synthetic::Params::with_supervoxels(args.seed, n);
        let g = cg_graph::synthetic::generate(&params);
        let mut geometry = g.geometry()?;
        if let Some(r) = args.resolution {
            geometry.resolution = r.0;
        }
        let source = MemorySource::from_synthetic(&g, &geometry)?;
        return Ok((geometry, source, Some(g)));
    }
    let Some(edges_path) = &args.edges else {
        bail!("nothing to ingest: give --edges FILE (with --volume-size and --chunk-size) or --synthetic N");
    };
    let (Some(volume), Some(chunk)) = (args.volume_size, args.chunk_size) else {
        bail!("--edges needs --volume-size and --chunk-size");
    };
    let mut geometry = Geometry::new(volume.0, chunk.0)?;
    if let Some(r) = args.resolution {
        geometry.resolution = r.0;
    }
    let edges = read_edges(edges_path)?;
    let mut svs: BTreeSet<u64> = edges.iter().flat_map(|e| [e.a, e.b]).collect();
    if let Some(p) = &args.supervoxels {
        svs.extend(read_ids(p)?);
    }
    let agglomeration = match &args.components {
        Some(p) => Agglomeration::Labels(read_labels(p)?),
        None => Agglomeration::Threshold(args.threshold),
    };
    let svs: Vec<u64> = svs.into_iter().collect();
    let source = MemorySource::new(&geometry, &svs, &edges, &agglomeration)?;
    Ok((geometry, source, None))
}

pub async fn run(args: IngestArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let (geometry, source, synthetic) = load(&args)?;
    eprintln!(
        "input: {} supervoxels, {} edges, {} layers, chunk grid {:?}",
        source.supervoxels,
        source.edges,
        geometry.n_layers,
        geometry.grid(2)
    );
    let mut data_dir = args.segmentation_dir.clone();
    // A synthetic graph gets a supervoxel volume to match, written where the data dir says.
    if let (Some(g), Some(dir)) = (&synthetic, &args.segmentation_dir) {
        let local = dir.strip_prefix("file://").unwrap_or(dir);
        if local.contains("://") {
            bail!(
                "--segmentation-dir {dir}: a synthetic segmentation is written to local files only"
            );
        }
        let t = Instant::now();
        let url = crate::synthetic_seg::write(g, &geometry, std::path::Path::new(local), |d, n| {
            if d == n || d % 64 == 0 {
                eprintln!("segmentation: {d}/{n} chunks");
            }
        })
        .await?;
        eprintln!(
            "segmentation written to {url} in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        data_dir = Some(url);
    }
    let (client, backend) = args.storage.connect().await?;
    let mut meta = Meta {
        format: schema::FORMAT,
        geometry,
        ingest_timestamp_micros: cg_bigtable::mutation::now_micros(),
        data_dir,
        description: String::new(),
    };
    if args.synthetic.is_some() {
        meta.description = format!("synthetic graph, seed {}", args.seed);
    }
    let graph = ChunkedGraph::create(client, &args.table, meta)
        .await
        .with_context(|| format!("creating graph {} in {backend}", args.table))?;
    let n_supervoxels = source.supervoxels;
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} ingest [{elapsed_precise}] {bar:40} {pos}/{len} chunks {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let last_logged = std::sync::Mutex::new((0u8, Instant::now()));
    let progress = |p: IngestProgress| {
        bar.set_length(p.total);
        bar.set_position(p.done);
        bar.set_message(format!("layer {}/{}", p.layer, p.layers));
        // Without a terminal, a line per layer and every few seconds.
        if bar.is_hidden() {
            if let Ok(mut last) = last_logged.lock() {
                if last.0 != p.layer || last.1.elapsed().as_secs() >= 5 || p.done == p.total {
                    eprintln!(
                        "ingest: layer {}/{}, {}/{} chunks",
                        p.layer, p.layers, p.done, p.total
                    );
                    *last = (p.layer, Instant::now());
                }
            }
        }
    };
    let t = Instant::now();
    let report = ingest(
        &graph,
        Arc::new(source),
        &IngestOptions {
            concurrency: args.concurrency,
            ..Default::default()
        },
        &progress,
    )
    .await
    .with_context(|| format!("ingesting into {} in {backend}", args.table))?;
    bar.finish_and_clear();
    let secs = t.elapsed().as_secs_f64();
    let run: u64 = report.tasks_run.iter().sum();
    println!(
        "ingested {} into {backend}: {} supervoxels written, {} nodes, {run} chunk tasks run, {} skipped (already complete), {:.1} s ({:.0} supervoxels/s); total {:.1} s",
        args.table,
        report.supervoxels,
        report.nodes,
        report.tasks_skipped,
        secs,
        n_supervoxels as f64 / secs.max(1e-9),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
