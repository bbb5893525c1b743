//! `chunkedgraph pipeline run`: from affinities (or a boundary map) to a served graph, on one
//! machine. Stages, each with a completion marker under `DATA_DIR/pipeline/` so a re-run
//! skips what finished:
//!
//! 1. watershed into segments and their region graph, then mean-affinity agglomeration;
//! 2. supervoxels: every segment cut by the chunk grid, one supervoxel per (segment, chunk),
//!    IDs in the graph's layout, written as a precomputed compressed_segmentation volume;
//! 3. the supervoxel graph (in-chunk and between-chunk contacts with mean affinity and area,
//!    cross-chunk links between the pieces of one segment) ingested into the ChunkedGraph,
//!    with the agglomeration as component labels. The ingest itself resumes per chunk.
//!
//! This runs the whole-volume algorithms (the volume must fit in memory); the chunked
//! watershed and agglomeration for volumes that do not are in `cg-segmentation`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use cg_graph::ingest::{ingest, Agglomeration, EdgeKind, IngestOptions, MemorySource, RawEdge};
use cg_graph::schema::{self, Meta};
use cg_graph::ChunkedGraph;
use cg_ids::Geometry;
use cg_segmentation::{agglomerate, watershed, Affinities, WatershedParams};
use cg_volume::{Array, DataType, Encoding, Info, Scale, Store, Volume, VolumeType};

use crate::ingest_cmd::{parse_f64s, parse_u32s, Triple};
use crate::storage::StorageArgs;

#[derive(clap::Subcommand)]
pub enum PipelineCommand {
    /// Run every stage (skipping finished ones) and ingest the result as a graph.
    Run(Box<RunArgs>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum InputKind {
    /// f32 `(3, z, y, x)`: channel 0 links a voxel to the one before it in z, 1 in y, 2 in x.
    Affinities,
    /// f32 `(z, y, x)`, 1 = membrane: affinities are `1 − max(b_u, b_v)`.
    Boundary,
}

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    storage: StorageArgs,
    /// Input `.npy` file (see --input-kind for the layout).
    #[arg(long, required_unless_present = "synthetic")]
    input: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = InputKind::Boundary)]
    input_kind: InputKind,
    /// Instead of --input: a seeded synthetic boundary volume of this size, `x,y,z`.
    #[arg(long, value_parser = parse_u32s, conflicts_with = "input")]
    synthetic: Option<Triple<u32>>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Voxel size in nm, `x,y,z`.
    #[arg(long, value_parser = parse_f64s)]
    resolution: Option<Triple<f64>>,
    /// Graph name (the Bigtable table).
    #[arg(long)]
    table: String,
    /// Dataset configuration (TOML); flags given on the command line win.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Supervoxel chunk size, `x,y,z`.
    #[arg(long, value_parser = parse_u32s)]
    chunk_size: Option<Triple<u32>>,
    /// Mean affinity down to which segments are agglomerated.
    #[arg(long)]
    threshold: Option<f64>,
}

/// `dataset.toml`: every field optional.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    pub chunk_size: Option<[u32; 3]>,
    pub resolution: Option<[f64; 3]>,
    /// Agglomeration threshold (mean affinity).
    pub threshold: Option<f64>,
    pub watershed: Option<WatershedConfig>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatershedConfig {
    pub t_low: Option<f32>,
    pub t_high: Option<f32>,
    pub t_merge: Option<f32>,
    pub t_size: Option<u64>,
    pub t_dust: Option<u64>,
}

const DEFAULT_CHUNK: [u32; 3] = [64, 64, 64];
const DEFAULT_THRESHOLD: f64 = 0.5;

fn stage(msg: &str) {
    eprintln!("pipeline: {msg}");
}

/// Loads the input as (shape z,y,x, affinities).
fn load_input(args: &RunArgs) -> anyhow::Result<Affinities> {
    if let Some(s) = args.synthetic {
        let [x, y, z] = s.0;
        let p = cg_segmentation::synthetic::VoronoiParams {
            shape: [z as usize, y as usize, x as usize],
            seed: args.seed,
            ..Default::default()
        };
        let syn = cg_segmentation::synthetic::voronoi(&p).context("generating the volume")?;
        return Ok(syn.affinities()?);
    }
    let Some(path) = &args.input else {
        bail!("give --input FILE.npy or --synthetic X,Y,Z");
    };
    let arr = cg_volume::npy::read_as::<f32>(path)
        .with_context(|| format!("reading {} as float32 .npy", path.display()))?;
    let shape = arr.shape().to_vec();
    match (args.input_kind, shape.as_slice()) {
        (InputKind::Boundary, &[z, y, x]) => {
            Ok(Affinities::from_boundary([z, y, x], arr.data())?)
        }
        (InputKind::Affinities, &[3, z, y, x]) => Ok(Affinities::new([z, y, x], arr.into_data())?),
        (kind, _) => bail!(
            "{}: shape {shape:?} does not fit --input-kind {kind:?} (boundary: (z, y, x); affinities: (3, z, y, x))",
            path.display()
        ),
    }
}

struct Supervoxels {
    /// Supervoxel ID per voxel, (z, y, x), 0 for background.
    labels: Vec<u64>,
    /// Segment of each supervoxel.
    segment_of: HashMap<u64, u64>,
}

/// Cuts segments by the chunk grid: one supervoxel per (segment, chunk).
fn cut_by_chunks(shape: [usize; 3], segments: &[u64], g: &Geometry) -> anyhow::Result<Supervoxels> {
    let [nz, ny, nx] = shape;
    let cs = g.chunk_size.map(|c| c as usize);
    let mut next: HashMap<u64, u64> = HashMap::new();
    let mut ids: HashMap<(u64, u64), u64> = HashMap::new();
    let mut segment_of = HashMap::new();
    let mut labels = vec![0u64; segments.len()];
    // Runs along x mostly repeat the last (segment, chunk): remember it instead of hashing.
    let mut last = (0u64, 0u64, 0u64);
    for z in 0..nz {
        for y in 0..ny {
            let row = (z * ny + y) * nx;
            let mut chunk = 0;
            for x in 0..nx {
                if x % cs[0] == 0 {
                    chunk = g.chunk_id(
                        1,
                        [(x / cs[0]) as u32, (y / cs[1]) as u32, (z / cs[2]) as u32],
                    )?;
                }
                let s = segments[row + x];
                if s == 0 {
                    continue;
                }
                if (last.0, last.1) != (s, chunk) {
                    let id = match ids.get(&(s, chunk)) {
                        Some(&id) => id,
                        None => {
                            let n = next.entry(chunk).or_insert(0);
                            *n += 1;
                            let id = g.node_id(chunk, *n)?;
                            ids.insert((s, chunk), id);
                            segment_of.insert(id, s);
                            id
                        }
                    };
                    last = (s, chunk, id);
                }
                labels[row + x] = last.2;
            }
        }
    }
    Ok(Supervoxels { labels, segment_of })
}

/// Contacts between supervoxels: (sum of affinities, area) per pair, and the cross-chunk
/// links between pieces of one segment.
fn supervoxel_edges(shape: [usize; 3], sv: &Supervoxels, affs: &Affinities) -> Vec<RawEdge> {
    let [nz, ny, nx] = shape;
    let mut contacts: HashMap<(u64, u64), (f64, u32)> = HashMap::new();
    let labels = &sv.labels;
    // Channel c of voxel i links it to the voxel one step back along z, y or x.
    let steps = [ny * nx, nx, 1];
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let i = (z * ny + y) * nx + x;
                let a = labels[i];
                if a == 0 {
                    continue;
                }
                for (c, &step) in steps.iter().enumerate() {
                    let back = [z, y, x][c];
                    if back == 0 {
                        continue;
                    }
                    let b = labels[i - step];
                    if b == 0 || b == a {
                        continue;
                    }
                    let key = (a.min(b), a.max(b));
                    let e = contacts.entry(key).or_insert((0.0, 0));
                    e.0 += f64::from(affs.get(c, z, y, x));
                    e.1 += 1;
                }
            }
        }
    }
    let mut edges: Vec<RawEdge> = contacts
        .into_iter()
        .map(|((a, b), (sum, area))| {
            if sv.segment_of[&a] == sv.segment_of[&b] {
                RawEdge {
                    a,
                    b,
                    affinity: f32::INFINITY,
                    area,
                    kind: Some(EdgeKind::CrossChunk),
                }
            } else {
                RawEdge {
                    a,
                    b,
                    affinity: (sum / f64::from(area)) as f32,
                    area,
                    kind: None,
                }
            }
        })
        .collect();
    edges.sort_by_key(|e| (e.a, e.b));
    edges
}

async fn write_volume(
    dir: &Path,
    g: &Geometry,
    shape: [usize; 3],
    labels: Vec<u64>,
) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let abs = dir.canonicalize()?;
    let url = format!("file://{}", abs.display());
    let chunk = g.chunk_size.map(u64::from);
    let mut scale = Scale::new(
        g.volume_size,
        g.resolution,
        chunk,
        Encoding::CompressedSegmentation,
    );
    scale.voxel_offset = g.voxel_offset;
    let info = Info::new(VolumeType::Segmentation, DataType::U64, 1, scale);
    let volume = Volume::create(Store::open(&url)?, info).await?;
    let data = Array::new(shape.to_vec(), labels)?;
    volume
        .write_box(0, g.voxel_offset, &data)
        .await
        .with_context(|| format!("writing the supervoxel volume to {url}"))?;
    Ok(url)
}

fn marker(dir: &Path, name: &str) -> PathBuf {
    dir.join("pipeline").join(format!("{name}.done"))
}

pub async fn run(cmd: PipelineCommand) -> anyhow::Result<()> {
    match cmd {
        PipelineCommand::Run(args) => run_all(*args).await,
    }
}

async fn run_all(args: RunArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let config: DatasetConfig = match &args.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str(&text)
                .with_context(|| format!("{} is not a valid dataset config", p.display()))?
        }
        None => DatasetConfig::default(),
    };
    let data_dir = args.storage.data_dir.clone();
    std::fs::create_dir_all(data_dir.join("pipeline"))?;
    let chunk = args
        .chunk_size
        .map(|t| t.0)
        .or(config.chunk_size)
        .unwrap_or(DEFAULT_CHUNK);
    let resolution = args
        .resolution
        .map(|t| t.0)
        .or(config.resolution)
        .unwrap_or([1.0; 3]);
    let threshold = args
        .threshold
        .or(config.threshold)
        .unwrap_or(DEFAULT_THRESHOLD);
    let mut ws = WatershedParams::default();
    if let Some(w) = &config.watershed {
        ws.t_low = w.t_low.unwrap_or(ws.t_low);
        ws.t_high = w.t_high.unwrap_or(ws.t_high);
        ws.t_merge = w.t_merge.unwrap_or(ws.t_merge);
        ws.t_size = w.t_size.unwrap_or(ws.t_size);
        ws.t_dust = w.t_dust.unwrap_or(ws.t_dust);
    }
    let done = marker(&data_dir, &format!("ingest-{}", args.table));
    if done.exists() {
        stage(&format!(
            "table {} is already built (remove {} to rebuild)",
            args.table,
            done.display()
        ));
        return Ok(());
    }

    let t = Instant::now();
    let affs = load_input(&args)?;
    let shape = affs.shape();
    let voxels = shape.iter().product::<usize>() as f64;
    stage(&format!(
        "input {shape:?} (z, y, x), {:.1} megavoxels, in {:.1} s",
        voxels / 1e6,
        t.elapsed().as_secs_f64()
    ));

    let t = Instant::now();
    let seg = watershed(&affs, &ws).context("watershed")?;
    stage(&format!(
        "watershed: {} segments, {} contacts in {:.1} s ({:.1} MV/s)",
        seg.graph.ids.len(),
        seg.graph.edges.len(),
        t.elapsed().as_secs_f64(),
        voxels / 1e6 / t.elapsed().as_secs_f64()
    ));
    let t = Instant::now();
    let agg = agglomerate(&seg.graph, threshold);
    let component: HashMap<u64, u64> = seg
        .graph
        .ids
        .iter()
        .copied()
        .zip(agg.components.iter().copied())
        .collect();
    stage(&format!(
        "agglomeration at {threshold}: {} merges in {:.2} s",
        agg.merges.len(),
        t.elapsed().as_secs_f64()
    ));

    let [nz, ny, nx] = shape;
    let mut geometry = Geometry::new([nx as u64, ny as u64, nz as u64], chunk)?;
    geometry.resolution = resolution;
    let t = Instant::now();
    let sv = cut_by_chunks(shape, &seg.labels, &geometry)?;
    let edges = supervoxel_edges(shape, &sv, &affs);
    drop(affs);
    let labels: HashMap<u64, u64> = sv
        .segment_of
        .iter()
        .map(|(&id, s)| (id, component[s]))
        .collect();
    let mut ids: Vec<u64> = sv.segment_of.keys().copied().collect();
    ids.sort_unstable();
    stage(&format!(
        "supervoxels: {} in {} chunks, {} edges, in {:.1} s",
        ids.len(),
        geometry
            .grid(1)
            .iter()
            .map(|&c| u64::from(c))
            .product::<u64>(),
        edges.len(),
        t.elapsed().as_secs_f64()
    ));

    let t = Instant::now();
    let seg_dir = data_dir.join("segmentation");
    let url = write_volume(&seg_dir, &geometry, shape, sv.labels).await?;
    std::fs::write(marker(&data_dir, "segmentation"), url.as_bytes())?;
    stage(&format!(
        "supervoxel volume written to {url} in {:.1} s",
        t.elapsed().as_secs_f64()
    ));

    let t = Instant::now();
    let source = MemorySource::new(&geometry, &ids, &edges, &Agglomeration::Labels(labels))?;
    let (client, backend) = args.storage.connect().await?;
    let graph = ChunkedGraph::create(
        client,
        &args.table,
        Meta {
            format: schema::FORMAT,
            geometry,
            ingest_timestamp_micros: cg_bigtable::mutation::now_micros(),
            data_dir: Some(url),
            description: "chunkedgraph pipeline".into(),
        },
    )
    .await
    .with_context(|| format!("creating graph {} in {backend}", args.table))?;
    let report = ingest(&graph, Arc::new(source), &IngestOptions::default(), &|p| {
        if p.done == p.total {
            stage(&format!("ingest: layer {}/{} done", p.layer, p.layers));
        }
    })
    .await
    .context("ingest")?;
    std::fs::write(&done, b"")?;
    stage(&format!(
        "ingested {} supervoxels, {} nodes into {backend} in {:.1} s",
        report.supervoxels,
        report.nodes,
        t.elapsed().as_secs_f64()
    ));
    println!(
        "pipeline done in {:.1} s: table {} ({} supervoxels); serve it with: chunkedgraph serve --data-dir {}",
        started.elapsed().as_secs_f64(),
        args.table,
        report.supervoxels,
        data_dir.display()
    );
    Ok(())
}
