//! `chunkedgraph bench bigtable`: our emulator against Google's, as separate processes on
//! loopback, driven by the same gRPC client in the same run. Figures are printed, not asserted.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Subcommand;
use googleapis_tonic_google_bigtable_admin_v2::google::bigtable::admin::v2 as admin;
use googleapis_tonic_google_bigtable_v2::google::bigtable::v2 as pb;
use indicatif::{ProgressBar, ProgressStyle};
use pb::bigtable_client::BigtableClient;
use rand::Rng;
use tonic::transport::Channel;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Our emulator against cbtemulator through the same client.
    Bigtable(BigtableBench),
    /// The ChunkedGraph library (ingest, root and leaves queries) on each backend.
    Graph(crate::bench_graph::GraphBench),
    /// Merge, undo and multicut split latencies on each backend.
    Edits(crate::bench_edit::EditBench),
    /// Synapses of roots and connectivity matrices over 10M synthetic synapses.
    Synapses(crate::bench_synapse::SynapseBench),
}

#[derive(clap::Args)]
pub struct BigtableBench {
    /// Rows written in the throughput phase.
    #[arg(long, default_value_t = 200_000)]
    rows: u64,
    /// Rows per MutateRows request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Point reads, CheckAndMutate calls and scans measured one after another.
    #[arg(long, default_value_t = 3000)]
    samples: usize,
    /// Also write this many small rows to our emulator and report its resident memory.
    #[arg(long, default_value_t = 0)]
    memory_rows: u64,
    /// Google's emulator; found under the gcloud SDK by default.
    #[arg(long)]
    cbtemulator: Option<PathBuf>,
    /// Leave Google's emulator out (for the memory run alone).
    #[arg(long)]
    only_ours: bool,
}

const TABLE: &str = "projects/bench/instances/bench/tables/t";
const CBT_PATHS: &[&str] = &[
    "/usr/lib/google-cloud-sdk/platform/bigtable-emulator/cbtemulator",
    "/usr/share/google-cloud-sdk/platform/bigtable-emulator/cbtemulator",
];

pub(crate) struct Server {
    pub(crate) name: &'static str,
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

pub(crate) fn wait_listening(child: &mut Child, addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("server exited before listening on {addr}: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("server did not listen on {addr} within 30 s")
}

pub(crate) fn start_ours() -> anyhow::Result<Server> {
    let dir = tempfile::tempdir()?;
    let addr = free_addr()?;
    let mut child = Command::new(std::env::current_exe()?)
        .arg("emulator")
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--listen")
        .arg(addr.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("starting our emulator")?;
    wait_listening(&mut child, addr)?;
    Ok(Server {
        name: "chunkedgraph",
        child,
        addr,
        _dir: Some(dir),
    })
}

pub(crate) fn start_google(path: Option<&Path>) -> anyhow::Result<Server> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => CBT_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .context("cbtemulator not found: apt-get install google-cloud-cli-bigtable-emulator, or pass --cbtemulator")?,
    };
    let addr = free_addr()?;
    let mut child = Command::new(&path)
        .args(["-host", "127.0.0.1", "-port", &addr.port().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", path.display()))?;
    wait_listening(&mut child, addr)?;
    Ok(Server {
        name: "cbtemulator",
        child,
        addr,
        _dir: None,
    })
}

async fn channel(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await?,
    )
}

async fn create_table(ch: Channel) -> anyhow::Result<()> {
    let mut a = admin::bigtable_table_admin_client::BigtableTableAdminClient::new(ch);
    let mut families = HashMap::new();
    families.insert("f".to_string(), admin::ColumnFamily::default());
    a.create_table(admin::CreateTableRequest {
        parent: "projects/bench/instances/bench".into(),
        table_id: "t".into(),
        table: Some(admin::Table {
            column_families: families,
            ..Default::default()
        }),
        initial_splits: vec![],
    })
    .await?;
    Ok(())
}

fn key(i: u64) -> Vec<u8> {
    format!("{i:020}").into_bytes()
}

fn set_cell(value: Vec<u8>) -> pb::Mutation {
    pb::Mutation {
        mutation: Some(pb::mutation::Mutation::SetCell(pb::mutation::SetCell {
            family_name: "f".into(),
            column_qualifier: b"q".to_vec(),
            timestamp_micros: 1000,
            value,
        })),
    }
}

pub(crate) fn progress(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>28} [{bar:30}] {pos}/{len} {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_message(what.to_string());
    pb
}

/// Writes rows `0..rows` with `writers` concurrent MutateRows streams; returns rows/s.
async fn write_rows(
    ch: &Channel,
    rows: u64,
    batch: usize,
    writers: usize,
    value_len: usize,
    label: &str,
) -> anyhow::Result<f64> {
    let bar = progress(rows, label);
    let start = Instant::now();
    let per = rows.div_ceil(writers as u64);
    let mut tasks = Vec::new();
    for w in 0..writers as u64 {
        let ch = ch.clone();
        let bar = bar.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = BigtableClient::new(ch)
                .max_decoding_message_size(256 << 20)
                .max_encoding_message_size(256 << 20);
            let (lo, hi) = (w * per, ((w + 1) * per).min(rows));
            let mut i = lo;
            while i < hi {
                let end = (i + batch as u64).min(hi);
                let entries = (i..end)
                    .map(|k| pb::mutate_rows_request::Entry {
                        row_key: key(k),
                        mutations: vec![set_cell(vec![b'v'; value_len])],
                        idempotency: None,
                    })
                    .collect();
                let mut stream = client
                    .mutate_rows(pb::MutateRowsRequest {
                        table_name: TABLE.into(),
                        entries,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                while let Some(m) = stream.message().await? {
                    if let Some(bad) = m
                        .entries
                        .iter()
                        .find(|e| e.status.as_ref().is_some_and(|s| s.code != 0))
                    {
                        anyhow::bail!("entry {} failed: {:?}", bad.index, bad.status);
                    }
                }
                bar.inc(end - i);
                i = end;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    bar.finish_and_clear();
    Ok(rows as f64 / start.elapsed().as_secs_f64())
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Reads a row set to the end and counts the cells that came back.
async fn read_cells(
    client: &mut BigtableClient<Channel>,
    rows: pb::RowSet,
    limit: i64,
) -> anyhow::Result<usize> {
    let mut s = client
        .read_rows(pb::ReadRowsRequest {
            table_name: TABLE.into(),
            rows: Some(rows),
            rows_limit: limit,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut n = 0;
    while let Some(m) = s.message().await? {
        n += m.chunks.len();
    }
    Ok(n)
}

struct Figures {
    write_rows_s: f64,
    read_p50: Duration,
    read_p99: Duration,
    scan_10k: Duration,
    cam_p50: Duration,
}

async fn measure(server: &Server, args: &BigtableBench) -> anyhow::Result<Figures> {
    let ch = channel(server.addr).await?;
    create_table(ch.clone()).await?;
    let write_rows_s = write_rows(
        &ch,
        args.rows,
        args.batch,
        args.writers,
        100,
        &format!("{} MutateRows", server.name),
    )
    .await?;
    let mut client = BigtableClient::new(ch.clone()).max_decoding_message_size(256 << 20);
    let mut rng = rand::rng();

    let mut lat = Vec::with_capacity(args.samples);
    for _ in 0..args.samples {
        let k = key(rng.random_range(0..args.rows));
        let rows = pb::RowSet {
            row_keys: vec![k],
            row_ranges: vec![],
        };
        let t = Instant::now();
        let n = read_cells(&mut client, rows, 0).await?;
        lat.push(t.elapsed());
        if n != 1 {
            bail!("{}: point read returned {n} cells", server.name);
        }
    }
    lat.sort();
    let (read_p50, read_p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));

    let mut scans = Vec::new();
    for _ in 0..5 {
        let start = rng.random_range(0..args.rows.saturating_sub(10_000).max(1));
        let rows = pb::RowSet {
            row_keys: vec![],
            row_ranges: vec![pb::RowRange {
                start_key: Some(pb::row_range::StartKey::StartKeyClosed(key(start))),
                end_key: None,
            }],
        };
        let t = Instant::now();
        let n = read_cells(&mut client, rows, 10_000).await?;
        scans.push(t.elapsed());
        if n != 10_000.min(args.rows as usize) {
            bail!("{}: scan returned {n} cells", server.name);
        }
    }
    scans.sort();

    let mut cam = Vec::with_capacity(args.samples);
    for i in 0..args.samples {
        let t = Instant::now();
        client
            .check_and_mutate_row(pb::CheckAndMutateRowRequest {
                table_name: TABLE.into(),
                row_key: format!("lock{i}").into_bytes(),
                predicate_filter: None,
                true_mutations: vec![],
                false_mutations: vec![set_cell(b"locked".to_vec())],
                ..Default::default()
            })
            .await?;
        cam.push(t.elapsed());
    }
    cam.sort();
    Ok(Figures {
        write_rows_s,
        read_p50,
        read_p99,
        scan_10k: percentile(&scans, 0.5),
        cam_p50: percentile(&cam, 0.5),
    })
}

pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

pub(crate) fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

async fn bigtable(args: BigtableBench) -> anyhow::Result<()> {
    let mut results = Vec::new();
    let ours = start_ours()?;
    results.push((ours.name, measure(&ours, &args).await?));
    drop(ours);
    if !args.only_ours {
        let google = start_google(args.cbtemulator.as_deref())?;
        results.push((google.name, measure(&google, &args).await?));
    }
    println!(
        "\n{} rows of 100 B, batches of {}, {} writers; {} samples; ours fsyncs every write\n",
        args.rows, args.batch, args.writers, args.samples
    );
    println!(
        "{:<14} {:>14} {:>12} {:>12} {:>12} {:>14}",
        "server", "MutateRows", "read p50", "read p99", "scan 10k", "CheckAndMut p50"
    );
    for (name, f) in &results {
        println!(
            "{:<14} {:>9.0} rows/s {:>12} {:>12} {:>9.1} ms {:>14}",
            name,
            f.write_rows_s,
            us(f.read_p50),
            us(f.read_p99),
            f.scan_10k.as_secs_f64() * 1e3,
            us(f.cam_p50)
        );
    }
    if let [(_, a), (_, b)] = results.as_slice() {
        println!(
            "\nratio ours/cbtemulator: writes {:.2}x, read p50 {:.2}x, scan {:.2}x, CheckAndMutate p50 {:.2}x (lower latency ratio is better)",
            a.write_rows_s / b.write_rows_s,
            a.read_p50.as_secs_f64() / b.read_p50.as_secs_f64(),
            a.scan_10k.as_secs_f64() / b.scan_10k.as_secs_f64(),
            a.cam_p50.as_secs_f64() / b.cam_p50.as_secs_f64()
        );
    }

    if args.memory_rows > 0 {
        let ours = start_ours()?;
        let ch = channel(ours.addr).await?;
        create_table(ch.clone()).await?;
        let rate = write_rows(
            &ch,
            args.memory_rows,
            args.batch,
            args.writers,
            8,
            "memory-run MutateRows",
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss = rss_bytes(ours.child.id()).context("reading the emulator's resident memory")?;
        println!(
            "\nmemory: {} rows of 8 B written at {:.0} rows/s; our emulator's resident memory {:.0} MiB ({:.1} B/row)",
            args.memory_rows,
            rate,
            rss as f64 / (1 << 20) as f64,
            rss as f64 / args.memory_rows as f64
        );
    }
    Ok(())
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Bigtable(args) => bigtable(args).await,
        BenchCommand::Graph(args) => crate::bench_graph::run(args).await,
        BenchCommand::Edits(args) => crate::bench_edit::run(args).await,
        BenchCommand::Synapses(args) => crate::bench_synapse::run(args).await,
    }
}

/// Which storage backends a library benchmark runs on, in this order: Google's emulator and
/// ours as processes on loopback, then our store embedded in-process.
#[derive(clap::Args)]
pub(crate) struct BackendArgs {
    /// Google's emulator; found under the gcloud SDK by default.
    #[arg(long)]
    cbtemulator: Option<PathBuf>,
    /// Leave Google's emulator out.
    #[arg(long)]
    only_ours: bool,
    /// Leave our emulator process out.
    #[arg(long)]
    skip_ours: bool,
    /// Leave the in-process store out.
    #[arg(long)]
    skip_embedded: bool,
}

/// A backend ready for a benchmark; its server (or store directory) lives as long as this.
pub(crate) struct Connected {
    pub(crate) name: &'static str,
    pub(crate) client: cg_bigtable::Client,
    /// The server process, for its resident memory; `None` when embedded.
    pub(crate) pid: Option<u32>,
    _server: Option<Server>,
    _dir: Option<tempfile::TempDir>,
}

impl BackendArgs {
    pub(crate) fn names(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.only_ours {
            out.push("cbtemulator");
        }
        if !self.skip_ours {
            out.push("ours");
        }
        if !self.skip_embedded {
            out.push("embedded");
        }
        out
    }

    /// Starts (or opens) the named backend and connects a client to it.
    pub(crate) async fn connect(&self, name: &'static str) -> anyhow::Result<Connected> {
        use anyhow::Context;
        use cg_bigtable::{Config, Target};
        let server = match name {
            "cbtemulator" => start_google(self.cbtemulator.as_deref())?,
            "ours" => start_ours()?,
            _ => {
                let dir = tempfile::tempdir()?;
                let store = cg_emulator::open(dir.path(), cg_emulator::StoreOptions::default())
                    .context("opening the embedded store")?;
                let client = Config::new(Target::Channel(
                    cg_emulator::in_process_channel(store),
                    "bench".into(),
                    "bench".into(),
                ))
                .connect()
                .await?;
                return Ok(Connected {
                    name,
                    client,
                    pid: None,
                    _server: None,
                    _dir: Some(dir),
                });
            }
        };
        let client = Config::new(Target::Emulator(server.addr.to_string()))
            .connect()
            .await
            .with_context(|| format!("connecting to {name} at {}", server.addr))?;
        Ok(Connected {
            name,
            client,
            pid: Some(server.child.id()),
            _server: Some(server),
            _dir: None,
        })
    }
}
