//! Test harness for cross-crate scenarios: starts Google's emulator and ours as real
//! processes on free loopback ports, and cleans them up.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The client (and messages) generated from `proto/chunkedgraph.proto` by `build.rs`, for
/// calling `chunkedgraph serve`'s gRPC API.
pub mod grpc_api {
    tonic::include_proto!("chunkedgraph.v1");
}

/// Where Debian's `google-cloud-cli-bigtable-emulator` puts Google's emulator.
const CBT_PATHS: &[&str] = &[
    "/usr/lib/google-cloud-sdk/platform/bigtable-emulator/cbtemulator",
    "/usr/share/google-cloud-sdk/platform/bigtable-emulator/cbtemulator",
];

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    l.local_addr().expect("local address").port()
}

/// The path of Google's emulator, or a panic that says how to install it.
pub fn cbtemulator_path() -> PathBuf {
    if let Ok(p) = std::env::var("CBTEMULATOR") {
        return PathBuf::from(p);
    }
    for p in CBT_PATHS {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    if let Ok(out) = Command::new("which").arg("cbtemulator").output() {
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !s.is_empty() {
            return PathBuf::from(s);
        }
    }
    panic!(
        "Google's Bigtable emulator (cbtemulator) was not found. Install it with \
         `apt-get install google-cloud-cli-bigtable-emulator`, or set CBTEMULATOR to its path."
    );
}

/// The `chunkedgraph` binary built from this workspace, or a panic that says how to build it.
pub fn chunkedgraph_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CHUNKEDGRAPH_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    for profile in ["debug", "release"] {
        let p = target.join(profile).join("chunkedgraph");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "the chunkedgraph binary was not found under {}; build it first with \
         `cargo build -p chunkedgraph`, or set CHUNKEDGRAPH_BIN",
        target.display()
    );
}

fn wait_for_port(addr: SocketAddr, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening on {addr}: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not listen on {addr} within 30 s");
}

/// An emulator process; killed with SIGKILL when dropped.
pub struct EmulatorProcess {
    pub addr: SocketAddr,
    child: Child,
}

impl EmulatorProcess {
    /// Google's emulator on a free port.
    pub fn google() -> EmulatorProcess {
        let port = free_port();
        let mut child = Command::new(cbtemulator_path())
            .args(["-host", "127.0.0.1", "-port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting cbtemulator");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        wait_for_port(addr, &mut child, "cbtemulator");
        EmulatorProcess { addr, child }
    }

    /// Our emulator on a free port, storing in `data_dir`.
    pub fn ours(data_dir: &Path, extra: &[&str]) -> EmulatorProcess {
        let port = free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut child = Command::new(chunkedgraph_bin())
            .arg("emulator")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(addr.to_string())
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting chunkedgraph emulator");
        // The emulator prints one line once it listens.
        if let Some(out) = child.stdout.take() {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
        }
        wait_for_port(addr, &mut child, "chunkedgraph emulator");
        EmulatorProcess { addr, child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of a process in bytes, from /proc.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A `chunkedgraph serve` process; SIGKILLed when dropped.
pub struct ServeProcess {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// The gRPC API, `http://127.0.0.1:PORT`; `None` when the server runs without it.
    pub grpc: Option<String>,
    child: Child,
}

impl ServeProcess {
    /// Serves the storage named by `args` (e.g. `--data-dir DIR`) and `envs` (e.g.
    /// `BIGTABLE_EMULATOR_HOST`) on a free port.
    pub fn start(args: &[&str], envs: &[(&str, String)]) -> ServeProcess {
        let mut cmd = Command::new(chunkedgraph_bin());
        // gRPC on an ephemeral port too (the default with `--listen` port 0), so that
        // several servers can run at once.
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("starting chunkedgraph serve");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line)
            .expect("reading the server's first line");
        let base = line
            .trim()
            .strip_prefix("chunkedgraph serving on ")
            .unwrap_or_else(|| panic!("unexpected first line from chunkedgraph serve: {line:?}"))
            .to_string();
        // The second line: `chunkedgraph gRPC on ADDR` or `chunkedgraph gRPC off`.
        let mut line = String::new();
        out.read_line(&mut line)
            .expect("reading the server's second line");
        let grpc = match line.trim() {
            "chunkedgraph gRPC off" => None,
            l => Some(format!(
                "http://{}",
                l.strip_prefix("chunkedgraph gRPC on ")
                    .unwrap_or_else(|| panic!(
                        "unexpected second line from chunkedgraph serve: {line:?}"
                    ))
            )),
        };
        ServeProcess { base, grpc, child }
    }

    /// The URL of a route under `/segmentation/api/v1/table/{table}`.
    pub fn url(&self, table: &str, path: &str) -> String {
        format!("{}/segmentation/api/v1/table/{table}{path}", self.base)
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: whatever the server was doing stops mid-way.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A synthetic graph ingested by `chunkedgraph ingest --synthetic`, as the tests know it.
pub struct Ingested {
    pub synth: cg_graph::synthetic::SyntheticGraph,
    /// Supervoxel ID of each synthetic supervoxel, in the generator's order.
    pub ids: Vec<u64>,
}

/// Runs `chunkedgraph ingest --table TABLE --synthetic N --seed SEED` with extra `args`
/// (e.g. `--data-dir DIR`) and `envs` (e.g. `BIGTABLE_EMULATOR_HOST`), and regenerates the
/// same graph in-process. Without a `BIGTABLE_EMULATOR_HOST` in `envs` the variable is
/// removed, so the ingest goes to the embedded store.
pub fn ingest_synthetic(
    table: &str,
    supervoxels: usize,
    seed: u64,
    args: &[&str],
    envs: &[(&str, String)],
) -> Ingested {
    let mut cmd = Command::new(chunkedgraph_bin());
    cmd.args(["ingest", "--table", table])
        .args(["--synthetic", &supervoxels.to_string()])
        .args(["--seed", &seed.to_string()])
        .args(args)
        .env_remove("BIGTABLE_EMULATOR_HOST")
        .env("RUST_LOG", "warn");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running chunkedgraph ingest");
    assert!(
        out.status.success(),
        "ingest failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let params = cg_graph::synthetic::Params::with_supervoxels(seed, supervoxels);
    let synth = cg_graph::synthetic::generate(&params);
    let geometry = synth.geometry().expect("geometry");
    let ids = synth.supervoxel_ids(&geometry).expect("ids");
    Ingested { synth, ids }
}

/// Two supervoxels (indices) of different objects (`roots[i]`, one per supervoxel) in one
/// chunk, nearest each other: a merge the graph accepts.
pub fn neighbours_in_two_objects(
    synth: &cg_graph::synthetic::SyntheticGraph,
    roots: &[u64],
) -> (usize, usize) {
    let sv = &synth.supervoxels;
    let mut best = None;
    for i in 0..sv.len() {
        for j in (i + 1)..sv.len().min(i + 400) {
            if roots[i] != roots[j] && sv[i].chunk == sv[j].chunk {
                let d: u32 = (0..3)
                    .map(|k| sv[i].position[k].abs_diff(sv[j].position[k]))
                    .sum();
                if best.is_none_or(|(_, _, bd)| d < bd) {
                    best = Some((i, j, d));
                }
            }
        }
    }
    let (i, j, _) = best.expect("two objects in one chunk");
    (i, j)
}
