//! `chunkedgraph synapses`: load synapse tables into a graph's table (`cg-synapse`).
//!
//! - `ingest --csv FILE`: a synapse table (pre point, post point, size, score; see
//!   `cg_synapse::csv` for the columns), points mapped to supervoxels through the supervoxel
//!   volume, written in batches. Re-running the same file rewrites the same cells.
//! - `clefts --cleft URL`: a cleft-probability volume turned into synapses (threshold,
//!   connected components, partners by the supervoxels on either side; `cg_synapse::cleft`).

use std::io::{BufReader, IsTerminal, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use cg_graph::ChunkedGraph;
use cg_synapse::cleft::{synapses_from_clefts, CleftInput, CleftParams};
use cg_synapse::csv::{CsvOptions, CsvReader, Units};
use cg_synapse::mapping::SupervoxelVolume;
use cg_synapse::SynapseStore;
use cg_volume::{DataType, Volume, VolumeOptions};
use indicatif::{ProgressBar, ProgressStyle};

use crate::storage::StorageArgs;

#[derive(clap::Subcommand)]
pub enum SynapsesCommand {
    /// Map a synapse table (CSV) to supervoxels and store it with the graph.
    Ingest(IngestArgs),
    /// Turn a cleft-probability volume into synapses and store them with the graph.
    Clefts(CleftArgs),
}

#[derive(clap::Args)]
pub struct IngestArgs {
    #[command(flatten)]
    storage: StorageArgs,
    /// The graph (Bigtable table).
    #[arg(long)]
    table: String,
    /// The synapse table: a CSV with a header line.
    #[arg(long)]
    csv: PathBuf,
    /// Units of the points: `voxel` (of the supervoxel volume's finest scale) or `nm`.
    #[arg(long, default_value = "voxel")]
    units: String,
    /// The supervoxel volume (precomputed). Default: the graph's data directory, else
    /// DATA_DIR/segmentation.
    #[arg(long)]
    segmentation: Option<String>,
    /// IDs of rows when the CSV has no ID column: first-id + row number.
    #[arg(long, default_value_t = 0)]
    first_id: u64,
    /// Synapses mapped and written per batch.
    #[arg(long, default_value_t = 500_000)]
    batch: usize,
}

#[derive(clap::Args)]
pub struct CleftArgs {
    #[command(flatten)]
    storage: StorageArgs,
    #[arg(long)]
    table: String,
    /// The cleft-probability volume (precomputed, float32 in [0, 1] or uint8 in [0, 255]),
    /// aligned with the supervoxel volume; read whole, so it must fit in memory.
    #[arg(long)]
    cleft: String,
    /// A polarity volume (same types): higher on the presynaptic side.
    #[arg(long)]
    polarity: Option<String>,
    #[arg(long, default_value_t = 0.5)]
    threshold: f32,
    /// Smaller components are noise.
    #[arg(long, default_value_t = 10)]
    min_voxels: u32,
    #[arg(long)]
    segmentation: Option<String>,
    #[arg(long, default_value_t = 0)]
    first_id: u64,
}

pub async fn run(cmd: SynapsesCommand) -> anyhow::Result<()> {
    match cmd {
        SynapsesCommand::Ingest(a) => ingest(a).await,
        SynapsesCommand::Clefts(a) => clefts(a).await,
    }
}

async fn open(
    storage: &StorageArgs,
    table: &str,
    segmentation: Option<&str>,
) -> anyhow::Result<(SynapseStore, String)> {
    let (client, backend) = storage.connect().await?;
    let graph = ChunkedGraph::open(client, table)
        .await
        .with_context(|| format!("opening graph {table} in {backend}"))?;
    let seg = match (segmentation, &graph.meta().data_dir) {
        (Some(s), _) => s.to_string(),
        (None, Some(d)) => d.clone(),
        (None, None) => storage.data_dir.join("segmentation").display().to_string(),
    };
    let store = SynapseStore::new(graph);
    store
        .prepare()
        .await
        .with_context(|| format!("adding the synapse family to {table}"))?;
    Ok((store, seg))
}

/// Counts the bytes read through it, for the progress bar.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

async fn ingest(a: IngestArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let (store, seg_url) = open(&a.storage, &a.table, a.segmentation.as_deref()).await?;
    let volume = SupervoxelVolume::open(&seg_url)
        .await
        .with_context(|| format!("opening the supervoxel volume {seg_url}"))?;
    let units = match a.units.as_str() {
        "voxel" | "voxels" | "vx" => Units::Voxels,
        "nm" => Units::Nanometers(volume.resolution()?),
        u => bail!("--units {u:?}: expected voxel or nm"),
    };
    let file =
        std::fs::File::open(&a.csv).with_context(|| format!("opening {}", a.csv.display()))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let read = Arc::new(AtomicU64::new(0));
    let input = BufReader::with_capacity(
        1 << 20,
        Counting {
            inner: file,
            read: read.clone(),
        },
    );
    let mut reader = CsvReader::new(
        input,
        CsvOptions {
            units,
            first_id: a.first_id,
        },
    );
    let bar = if std::io::stderr().is_terminal() {
        let b = ProgressBar::new(len);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} synapses [{elapsed_precise}] {bar:40} {bytes}/{total_bytes} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let (mut total, mut dropped, mut rows) = (0u64, 0u64, 0u64);
    loop {
        let batch = reader
            .next_batch(a.batch)
            .with_context(|| format!("reading {}", a.csv.display()))?;
        if batch.is_empty() {
            break;
        }
        let (mapped, report) = volume
            .map(&batch)
            .await
            .with_context(|| format!("mapping points through {seg_url}"))?;
        let w = store
            .write(&mapped)
            .await
            .with_context(|| format!("writing synapses to {}", a.table))?;
        total += report.mapped;
        dropped += report.dropped;
        rows += w.rows;
        bar.set_position(read.load(Ordering::Relaxed));
        bar.set_message(format!("{total} stored, {dropped} dropped"));
        if bar.is_hidden() {
            eprintln!(
                "synapses: {total} stored, {dropped} dropped, {:.0}% of the file",
                100.0 * read.load(Ordering::Relaxed) as f64 / len.max(1) as f64
            );
        }
    }
    bar.finish_and_clear();
    println!(
        "stored {total} synapses in {} ({rows} supervoxel rows written), {dropped} dropped (a \
         point outside the volume or on label 0), {:.1} s",
        a.table,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A whole scale-0 volume as f32 in [0, 1], x fastest.
async fn read_probability(url: &str) -> anyhow::Result<(Vec<f32>, cg_volume::BBox)> {
    // Cleft volumes are sparse: chunks never written hold no cleft.
    let vol = Volume::open(url)
        .await
        .with_context(|| format!("opening {url}"))?
        .with_options(VolumeOptions {
            fill_missing: true,
            ..Default::default()
        });
    let bounds = vol.scale(0)?.bounds();
    let data = match vol.info().data_type {
        DataType::F32 => vol.read_box::<f32>(0, bounds).await?.into_data(),
        DataType::U8 => vol
            .read_box::<u8>(0, bounds)
            .await?
            .into_data()
            .into_iter()
            .map(|v| f32::from(v) / 255.0)
            .collect(),
        t => bail!("{url}: a probability volume is float32 or uint8, not {t}"),
    };
    Ok((data, bounds))
}

async fn clefts(a: CleftArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let (store, seg_url) = open(&a.storage, &a.table, a.segmentation.as_deref()).await?;
    let (prob, bounds) = read_probability(&a.cleft).await?;
    let seg = Volume::open(&seg_url)
        .await
        .with_context(|| format!("opening {seg_url}"))?;
    let labels = seg
        .read_box::<u64>(0, bounds)
        .await
        .with_context(|| format!("reading {seg_url} over the cleft volume's bounds {bounds:?}"))?
        .into_data();
    let polarity = match &a.polarity {
        Some(url) => {
            let (p, b) = read_probability(url).await?;
            if b != bounds {
                bail!("{url} covers {b:?}, the cleft volume {bounds:?}");
            }
            Some(p)
        }
        None => None,
    };
    let size = bounds.size();
    let input = CleftInput {
        shape: [size[0] as usize, size[1] as usize, size[2] as usize],
        offset: bounds.min,
        probability: &prob,
        segmentation: &labels,
        polarity: polarity.as_deref(),
    };
    let (synapses, report) = synapses_from_clefts(
        &input,
        &CleftParams {
            threshold: a.threshold,
            min_voxels: a.min_voxels,
            first_id: a.first_id,
        },
    )?;
    store.write(&synapses).await?;
    println!(
        "{} clefts: {} synapses stored in {}, {} below {} voxels, {} without two partners; {:.1} s",
        report.components,
        report.synapses,
        a.table,
        report.too_small,
        a.min_voxels,
        report.without_two_partners,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
