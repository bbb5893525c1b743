//! `chunkedgraph`: the front door. One binary, one subcommand per job.

mod bench;
mod bench_edit;
mod bench_graph;
mod bench_synapse;
mod export;
mod grpc;
mod ingest_cmd;
mod meshing;
mod pipeline;
mod quickstart;
mod server;
mod storage;
mod synapses_cmd;
mod synthesize;
mod synthetic_seg;

// The emulator allocates per row; glibc malloc showed up as a third of write time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "chunkedgraph",
    version,
    about = "Proofreadable connectomes on Bigtable"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// From nothing to a served, proofreadable synthetic dataset: pipeline, links, server.
    Quickstart(quickstart::QuickstartArgs),
    /// Run our durable Bigtable-API server (data API + table admin) on a data directory.
    Emulator(EmulatorArgs),
    /// List the tables in the configured storage.
    Tables(storage::StorageArgs),
    /// Build a graph from supervoxel edges and an agglomeration (or a synthetic graph).
    /// Re-running resumes an interrupted ingest.
    Ingest(Box<ingest_cmd::IngestArgs>),
    /// Serve PyChunkedGraph's HTTP API (Neuroglancer, caveclient, cloud-volume).
    Serve(server::ServeArgs),
    /// The batch pipeline: watershed, agglomeration, supervoxel volume, ingest.
    Pipeline {
        #[command(subcommand)]
        what: pipeline::PipelineCommand,
    },
    /// Synapses: map a synapse table (or cleft volume) to supervoxels and store it.
    Synapses {
        #[command(subcommand)]
        what: synapses_cmd::SynapsesCommand,
    },
    /// Build a graph's meshes (graphene layout) from its supervoxel volume; resumable.
    Mesh(Box<meshing::MeshArgs>),
    /// Make a pipeline input with a known answer: a boundary map or affinities with realistic
    /// defects, drawn on Voronoi cells or on a label volume, and its ground truth.
    Synthesize(Box<synthesize::SynthesizeArgs>),
    /// Write the root-ID segmentation of a box at a timestamp as a `.npy` (uint64, z y x).
    Export(Box<export::ExportArgs>),
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
}

#[derive(clap::Args)]
struct EmulatorArgs {
    /// Where the tables live; created if missing, reused if present.
    #[arg(long, default_value = "chunkedgraph-data/bigtable")]
    data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8086")]
    listen: SocketAddr,
    /// Acknowledge writes before they are fsynced (faster, loses recent writes on power loss).
    #[arg(long)]
    no_fsync: bool,
    /// Refuse what Cloud Bigtable refuses: row keys over 4 KiB, over 100k mutations a request.
    #[arg(long)]
    enforce_limits: bool,
    /// Block cache size in MiB.
    #[arg(long, default_value_t = 64)]
    cache_mib: u64,
}

async fn run_emulator(args: EmulatorArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data directory {}", args.data_dir.display()))?;
    let opts = cg_emulator::StoreOptions {
        sync: !args.no_fsync,
        enforce_limits: args.enforce_limits,
        cache_bytes: args.cache_mib << 20,
    };
    let store = cg_emulator::open(&args.data_dir, opts)
        .with_context(|| format!("opening store in {}", args.data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    // Scripts wait for this line before connecting.
    println!("chunkedgraph emulator listening on {addr}");
    tracing::info!(data_dir = %args.data_dir.display(), "serving Bigtable API");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    cg_emulator::serve(store.clone(), listener, shutdown).await?;
    store.flush()?;
    Ok(())
}

async fn list_tables(storage: storage::StorageArgs) -> anyhow::Result<()> {
    let (client, backend) = storage.connect().await?;
    let tables = client
        .admin()
        .list_tables()
        .await
        .with_context(|| format!("listing tables in {backend}"))?;
    eprintln!("{} table(s) in {backend}", tables.len());
    for t in tables {
        println!("{t}");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async move {
        match cli.command {
            Command::Emulator(args) => run_emulator(args).await,
            Command::Tables(storage) => list_tables(storage).await,
            Command::Ingest(args) => ingest_cmd::run(*args).await,
            Command::Serve(args) => server::run(args).await,
            Command::Pipeline { what } => pipeline::run(what).await,
            Command::Quickstart(args) => quickstart::run(args).await,
            Command::Export(args) => export::run(*args).await,
            Command::Synthesize(args) => synthesize::run(*args),
            Command::Mesh(args) => meshing::run(*args).await,
            Command::Synapses { what } => synapses_cmd::run(what).await,
            Command::Bench { what } => bench::run(what).await,
        }
    })
}
