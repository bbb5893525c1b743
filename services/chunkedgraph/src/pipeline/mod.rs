//! `chunkedgraph pipeline`: from affinities (or a boundary map) to a served graph, on one
//! machine (`run`) or as independent tasks (`plan`, `task`) that Kubernetes Indexed Jobs
//! execute, one job per step, the job's completion index choosing its shard of the tasks.
//!
//! Steps, in order (each task leaves a marker in the work directory and is skipped when the
//! marker exists, so re-runs resume and retried pods redo only unfinished tasks):
//!
//! 1. `prepare` (one task): the supervoxel volume's `info` and the graph's table.
//! 2. `segment`: watershed, region graph and mean-affinity agglomeration ([`segment`]).
//! 3. `supervoxels` (a task per chunk): supervoxel IDs, the precomputed supervoxel volume,
//!    and each chunk's contacts ([`supervoxels`]).
//! 4. `ingest-L` for each layer L ≥ 2 (a task per chunk of the layer): the ChunkedGraph,
//!    with every edge's affinity and area and the agglomeration as active edges.

mod grid;
mod input;
mod segment;
mod source;
mod supervoxels;
mod work;

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use cg_graph::ingest::{ingest, IngestOptions};
use cg_graph::schema::{self, Meta};
use cg_graph::ChunkedGraph;
use cg_ids::Geometry;
use cg_segmentation::WatershedParams;
use cg_volume::{DataType, Encoding, Info, Scale, Store, Volume, VolumeType};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use crate::ingest_cmd::{parse_f64s, parse_u32s, Triple};
use crate::storage::StorageArgs;
use grid::{chunk_name, share, Chunk, Grid};
use input::Input;
pub use input::InputKind;
use work::WorkDir;

#[derive(clap::Subcommand)]
pub enum PipelineCommand {
    /// Run every step on this machine (skipping finished tasks) and ingest the result.
    Run(Box<RunArgs>),
    /// Print the steps and their task counts as JSON lines (for the Kubernetes driver).
    Plan(Box<RunArgs>),
    /// Run one shard of one step's tasks (what a Kubernetes Indexed Job's pod runs).
    Task(Box<TaskArgs>),
}

#[derive(clap::Args, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    storage: StorageArgs,
    /// Input: a `.npy` file, a zarr array (path or URL ending in `.zarr`, or `zarr://URL`),
    /// or a precomputed volume (`precomputed://URL` or a folder with an `info`). URLs may be
    /// `file://`, `gs://`, `s3://` or `https://`.
    #[arg(long)]
    input: Option<String>,
    #[arg(long, value_enum)]
    input_kind: Option<InputKind>,
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
    table: Option<String>,
    /// Dataset configuration (TOML); flags given on the command line win.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Supervoxel chunk size, `x,y,z`.
    #[arg(long, value_parser = parse_u32s)]
    chunk_size: Option<Triple<u32>>,
    /// Mean affinity down to which segments are agglomerated.
    #[arg(long)]
    threshold: Option<f64>,
    /// Where task outputs and markers go (a path or a `gs://`/`s3://` URL); the supervoxel
    /// volume goes to `segmentation/` beside them unless `segmentation` is configured.
    /// Default: DATA_DIR/pipeline.
    #[arg(long)]
    work_dir: Option<String>,
    /// Tasks run at once (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
}

#[derive(clap::Args)]
pub struct TaskArgs {
    #[command(flatten)]
    run: RunArgs,
    /// The step, as `plan` names it (`prepare`, `segment`, `supervoxels`, `ingest-2`, ...).
    #[arg(long)]
    step: String,
    /// This pod's shard; Kubernetes sets JOB_COMPLETION_INDEX in Indexed Jobs.
    #[arg(long, env = "JOB_COMPLETION_INDEX", default_value_t = 0)]
    shard_index: u32,
    /// Shards of the step (the job's completions).
    #[arg(long, default_value_t = 1)]
    shard_count: u32,
}

/// `dataset.toml`: every field optional; command-line flags win.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    pub input: Option<String>,
    pub input_kind: Option<InputKind>,
    pub table: Option<String>,
    pub chunk_size: Option<[u32; 3]>,
    pub resolution: Option<[f64; 3]>,
    /// Agglomeration threshold (mean affinity).
    pub threshold: Option<f64>,
    pub work_dir: Option<String>,
    /// Voxels each chunk's watershed reads around it (default 4; more reads more, fewer
    /// leaves more for the parent tasks; the result is the same).
    pub ghost: Option<usize>,
    /// Where the supervoxel volume goes (default: `segmentation/` beside the work directory).
    pub segmentation: Option<String>,
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
const DEFAULT_GHOST: usize = 4;
/// Small work-directory files read at once (segment lists of every chunk).
const READ_CONCURRENCY: usize = 64;

/// Everything a task needs, resolved from flags and config the same way in every process.
struct Run {
    args: RunArgs,
    table: String,
    input: Arc<Input>,
    grid: Grid,
    geometry: Geometry,
    params: segment::Params,
    work: WorkDir,
    segmentation_url: String,
    jobs: usize,
}

fn dir_url(spec: &str) -> anyhow::Result<String> {
    if spec.contains("://") {
        return Ok(spec.trim_end_matches('/').to_string());
    }
    std::fs::create_dir_all(spec).with_context(|| format!("creating {spec}"))?;
    let abs = std::path::Path::new(spec)
        .canonicalize()
        .with_context(|| format!("resolving {spec}"))?;
    Ok(format!("file://{}", abs.display()))
}

impl Run {
    async fn resolve(args: RunArgs) -> anyhow::Result<Run> {
        let config: DatasetConfig = match &args.config {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("{} is not a valid dataset config", p.display()))?
            }
            None => DatasetConfig::default(),
        };
        let Some(table) = args.table.clone().or(config.table.clone()) else {
            bail!("name the graph: --table NAME (or `table` in the dataset config)");
        };
        let kind = args
            .input_kind
            .or(config.input_kind)
            .unwrap_or(InputKind::Boundary);
        let input = match (
            args.synthetic,
            args.input.as_ref().or(config.input.as_ref()),
        ) {
            (Some(s), _) => {
                let [x, y, z] = s.0;
                let p = cg_segmentation::synthetic::VoronoiParams {
                    shape: [z as usize, y as usize, x as usize],
                    seed: args.seed,
                    ..Default::default()
                };
                let syn =
                    cg_segmentation::synthetic::voronoi(&p).context("generating the volume")?;
                Input::Memory(syn.affinities()?)
            }
            (None, Some(spec)) => Input::open(spec, kind).await?,
            (None, None) => {
                bail!("give --input PATH|URL (or `input` in the config) or --synthetic X,Y,Z")
            }
        };
        let shape = input.shape()?;
        if shape.contains(&0) {
            bail!("the input is empty: shape {shape:?} (z, y, x)");
        }
        let chunk = args
            .chunk_size
            .map(|t| t.0)
            .or(config.chunk_size)
            .unwrap_or(DEFAULT_CHUNK);
        if chunk.contains(&0) {
            bail!("chunk size {chunk:?} has a zero");
        }
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
        let [nz, ny, nx] = shape;
        let mut geometry = Geometry::new([nx as u64, ny as u64, nz as u64], chunk)?;
        geometry.resolution = resolution;
        let grid = Grid {
            shape,
            chunk: [chunk[2] as usize, chunk[1] as usize, chunk[0] as usize],
        };
        let data_dir = args.storage.data_dir.clone();
        let work_spec = match args.work_dir.clone().or(config.work_dir.clone()) {
            Some(w) => w,
            None => data_dir.join("pipeline").to_string_lossy().into_owned(),
        };
        let work_url = dir_url(&work_spec)?;
        let segmentation_url = match &config.segmentation {
            Some(s) => dir_url(s)?,
            None if work_url.starts_with("file://") => {
                dir_url(&data_dir.join("segmentation").to_string_lossy())?
            }
            None => format!("{}/segmentation", work_url.trim_end_matches('/')),
        };
        let jobs = args.jobs.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        });
        Ok(Run {
            table,
            input: Arc::new(input),
            grid,
            geometry,
            params: segment::Params {
                watershed: ws,
                threshold,
                ghost: config.ghost.unwrap_or(DEFAULT_GHOST),
            },
            work: WorkDir::open(&work_url)?,
            segmentation_url,
            jobs: jobs.max(1),
            args,
        })
    }

    /// The steps and their task counts (ingest counts are upper bounds: chunks of a layer
    /// without supervoxels below have no task, and their shards find nothing to do).
    fn plan(&self) -> anyhow::Result<Vec<(String, usize)>> {
        let seg = self.segmenter()?;
        let mut steps = vec![("prepare".to_string(), 1)];
        for level in 0..seg.levels() {
            steps.push((format!("segment-{level}"), seg.tree.tasks(level).len()));
        }
        steps.push(("segment-finish".to_string(), 1));
        steps.push(("segment-labels".to_string(), self.grid.chunks().len()));
        steps.push(("supervoxels".to_string(), self.grid.chunks().len()));
        for layer in 2..=self.geometry.n_layers {
            let n: usize = self
                .geometry
                .grid(layer)
                .iter()
                .map(|&c| c as usize)
                .product();
            steps.push((format!("ingest-{layer}"), n));
        }
        Ok(steps)
    }

    fn segmenter(&self) -> anyhow::Result<segment::Segmenter<'_>> {
        segment::Segmenter::new(&self.work, self.input.clone(), &self.grid, &self.params)
    }

    /// Runs `tasks` (named `{step}/{name}`), `jobs` at a time, skipping finished ones.
    async fn tasks<T, F, Fut>(
        &self,
        step: &str,
        tasks: Vec<T>,
        name: impl Fn(&T) -> String,
        f: F,
        bar: &ProgressBar,
    ) -> anyhow::Result<()>
    where
        F: Fn(T) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        bar.set_length(tasks.len() as u64);
        let mut running = futures::stream::iter(tasks)
            .map(|t| {
                let marker = format!("{step}/{}", name(&t));
                let fut = f(t);
                async move {
                    if !self.work.is_done(&marker).await? {
                        fut.await?;
                        self.work.mark_done(&marker).await?;
                    }
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(self.jobs);
        while let Some(r) = running.next().await {
            r?;
            bar.inc(1);
        }
        Ok(())
    }

    /// Every task of `step` must be finished.
    async fn require_all(&self, step: &str, names: Vec<String>) -> anyhow::Result<()> {
        for n in names {
            self.require(&format!("{step}/{n}")).await?;
        }
        Ok(())
    }

    async fn volume(&self) -> anyhow::Result<Volume> {
        Volume::open(&self.segmentation_url)
            .await
            .with_context(|| format!("opening the supervoxel volume {}", self.segmentation_url))
    }

    async fn graph(&self) -> anyhow::Result<ChunkedGraph> {
        let (client, backend) = self.args.storage.connect().await?;
        ChunkedGraph::open(client, &self.table)
            .await
            .with_context(|| format!("opening graph {} in {backend}", self.table))
    }

    async fn prepare(&self) -> anyhow::Result<()> {
        let g = &self.geometry;
        let mut scale = Scale::new(
            g.volume_size,
            g.resolution,
            g.chunk_size.map(u64::from),
            Encoding::CompressedSegmentation,
        );
        scale.voxel_offset = g.voxel_offset;
        let info = Info::new(VolumeType::Segmentation, DataType::U64, 1, scale);
        Volume::create(Store::open(&self.segmentation_url)?, info)
            .await
            .with_context(|| format!("creating the supervoxel volume {}", self.segmentation_url))?;
        let (client, backend) = self.args.storage.connect().await?;
        ChunkedGraph::create(
            client,
            &self.table,
            Meta {
                format: schema::FORMAT,
                geometry: g.clone(),
                ingest_timestamp_micros: ms_now(),
                data_dir: Some(self.segmentation_url.clone()),
                description: "chunkedgraph pipeline".into(),
            },
        )
        .await
        .with_context(|| format!("creating graph {} in {backend}", self.table))?;
        Ok(())
    }

    /// Every chunk with its number of segments, in grid order. One small file per chunk:
    /// read many at once, which matters on a cloud bucket.
    async fn segment_counts(&self) -> anyhow::Result<Vec<(Chunk, usize)>> {
        use futures::{StreamExt, TryStreamExt};
        futures::stream::iter(self.grid.chunks())
            .map(|c| async move {
                let n = segment::read_segments(&self.work, c).await?.len();
                anyhow::Ok((c, n))
            })
            .buffered(READ_CONCURRENCY)
            .try_collect()
            .await
    }

    /// Chunks whose segment lists are not empty.
    async fn occupied_chunks(&self) -> anyhow::Result<Vec<Chunk>> {
        Ok(self
            .segment_counts()
            .await?
            .into_iter()
            .filter(|&(_, n)| n > 0)
            .map(|(c, _)| c)
            .collect())
    }

    /// Runs one shard of a step; `bar` follows its tasks.
    async fn step(&self, step: &str, shard: (u32, u32), bar: &ProgressBar) -> anyhow::Result<()> {
        let (index, count) = shard;
        if count == 0 || index >= count {
            bail!("shard {index} of {count}: the index must be below the count");
        }
        match step {
            "prepare" => {
                if index == 0 {
                    once(&self.work, "prepare", bar, self.prepare()).await?;
                }
            }
            s if s.starts_with("segment-") => self.segment_step(s, shard, bar).await?,
            "supervoxels" => {
                self.require("segment-finish").await?;
                let chunks = self.grid.chunks();
                let names = chunks.iter().map(|&c| chunk_name(c)).collect();
                self.require_all("segment-labels", names).await?;
                let volume = self.volume().await?;
                let components = segment::read_agglomeration(&self.work).await?;
                let (volume, components) = (&volume, &components);
                self.tasks(
                    "supervoxels",
                    share(&chunks, shard),
                    |&c| chunk_name(c),
                    |c| async move {
                        supervoxels::run_chunk(
                            &self.work,
                            &self.input,
                            volume,
                            &self.grid,
                            &self.geometry,
                            components,
                            c,
                        )
                        .await
                    },
                    bar,
                )
                .await?;
            }
            s if s.starts_with("ingest-") => {
                let layer: u8 = s["ingest-".len()..]
                    .parse()
                    .with_context(|| format!("step {s}: no layer number"))?;
                if layer == 2 {
                    let names = self.grid.chunks().iter().map(|&c| chunk_name(c)).collect();
                    self.require_all("supervoxels", names).await?;
                }
                let graph = self.graph().await?;
                let source = source::WorkSource::new(
                    self.work.clone(),
                    self.grid,
                    self.geometry.clone(),
                    self.occupied_chunks().await?,
                );
                let opts = IngestOptions {
                    concurrency: self.jobs.max(2),
                    layer: Some(layer),
                    shard: Some(shard),
                    ..Default::default()
                };
                let b = bar.clone();
                ingest(&graph, Arc::new(source), &opts, &move |p| {
                    b.set_length(p.total);
                    b.set_position(p.done);
                })
                .await
                .with_context(|| format!("ingest of layer {layer}"))?;
            }
            other => bail!(
                "no step {other:?}; the steps are: {}",
                self.plan()?
                    .iter()
                    .map(|(s, _)| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
        Ok(())
    }

    async fn segment_step(
        &self,
        step: &str,
        shard: (u32, u32),
        bar: &ProgressBar,
    ) -> anyhow::Result<()> {
        let seg = self.segmenter()?;
        let task_name = |t: &cg_segmentation::chunked::TaskId| {
            format!("{}_{}_{}", t.index[0], t.index[1], t.index[2])
        };
        match &step["segment-".len()..] {
            "finish" => {
                if shard.0 == 0 {
                    for level in 0..seg.levels() {
                        let names = seg.tree.tasks(level).iter().map(task_name).collect();
                        self.require_all(&format!("segment-{level}"), names).await?;
                    }
                    once(&self.work, "segment-finish", bar, seg.finish()).await?;
                }
            }
            "labels" => {
                self.require("segment-finish").await?;
                let finished = seg.finished().await?;
                let (seg, finished) = (&seg, &finished);
                self.tasks(
                    step,
                    share(&self.grid.chunks(), shard),
                    |&c| chunk_name(c),
                    |c| async move { seg.labels(c, finished).await },
                    bar,
                )
                .await?;
            }
            level => {
                let level: usize = level
                    .parse()
                    .with_context(|| format!("step {step}: no level number"))?;
                if level >= seg.levels() {
                    bail!(
                        "step {step}: the segmentation has levels 0 to {}",
                        seg.levels() - 1
                    );
                }
                if level == 0 {
                    self.require("prepare").await?;
                } else {
                    let names = seg.tree.tasks(level - 1).iter().map(task_name).collect();
                    self.require_all(&format!("segment-{}", level - 1), names)
                        .await?;
                }
                let seg = &seg;
                self.tasks(
                    step,
                    share(&seg.tree.tasks(level), shard),
                    task_name,
                    |t| async move { seg.task(t).await },
                    bar,
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn require(&self, task: &str) -> anyhow::Result<()> {
        if !self.work.is_done(task).await? {
            bail!(
                "{task} is not finished (no marker in {}): run the steps in order",
                self.work.url()
            );
        }
        Ok(())
    }
}

/// A single-task step: run unless its marker exists.
async fn once(
    work: &WorkDir,
    name: &str,
    bar: &ProgressBar,
    f: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    bar.set_length(1);
    if !work.is_done(name).await? {
        f.await?;
        work.mark_done(name).await?;
    }
    bar.inc(1);
    Ok(())
}

/// Now, in whole milliseconds (the graph's timestamps are).
fn ms_now() -> i64 {
    cg_bigtable::mutation::now_micros() / 1000 * 1000
}

fn bar(step: &str) -> ProgressBar {
    let b = ProgressBar::new(1);
    b.set_style(
        ProgressStyle::with_template("{prefix:>14} [{bar:30}] {pos}/{len} {elapsed_precise}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b.set_prefix(step.to_string());
    b
}

pub async fn run(cmd: PipelineCommand) -> anyhow::Result<()> {
    match cmd {
        PipelineCommand::Run(args) => run_all(*args).await,
        PipelineCommand::Plan(args) => {
            let run = Run::resolve(*args).await?;
            for (step, tasks) in run.plan()? {
                println!("{}", serde_json::json!({ "step": step, "tasks": tasks }));
            }
            Ok(())
        }
        PipelineCommand::Task(t) => {
            let started = Instant::now();
            let run = Run::resolve(t.run).await?;
            let b = bar(&t.step);
            run.step(&t.step, (t.shard_index, t.shard_count), &b)
                .await?;
            b.finish();
            eprintln!(
                "pipeline: step {} shard {}/{} done in {:.1} s",
                t.step,
                t.shard_index,
                t.shard_count,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
    }
}

async fn run_all(args: RunArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let run = Run::resolve(args).await?;
    let built = format!("built-{}", run.table);
    if run.work.is_done(&built).await? {
        eprintln!(
            "pipeline: table {} is already built (remove {}/done/{built} to rebuild)",
            run.table,
            run.work.url()
        );
        crate::meshing::pipeline_stage(&run.graph().await?).await?;
        return Ok(());
    }
    let [nz, ny, nx] = run.grid.shape;
    let voxels = (nz * ny * nx) as f64;
    eprintln!(
        "pipeline: {:.1} megavoxels (x, y, z = {nx}, {ny}, {nz}) in {} chunks, work in {}",
        voxels / 1e6,
        run.grid.chunks().len(),
        run.work.url()
    );
    for (step, _) in run.plan()? {
        let t = Instant::now();
        let b = bar(&step);
        run.step(&step, (0, 1), &b).await?;
        b.finish_and_clear();
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "pipeline: {step} in {secs:.1} s ({:.1} MV/s)",
            voxels / 1e6 / secs.max(1e-9)
        );
    }
    run.work.mark_done(&built).await?;
    let graph = run.graph().await?;
    crate::meshing::pipeline_stage(&graph).await?;
    let supervoxels: usize = run.segment_counts().await?.iter().map(|&(_, n)| n).sum();
    println!(
        "pipeline done in {:.1} s: table {} ({supervoxels} supervoxels, {} layers); serve it \
         with: chunkedgraph serve --data-dir {}",
        started.elapsed().as_secs_f64(),
        graph.table(),
        graph.geometry().n_layers,
        run.args.storage.data_dir.display()
    );
    Ok(())
}
