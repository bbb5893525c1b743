//! The pipeline end to end: `chunkedgraph pipeline run` on a 512×512×128 synthetic volume,
//! then `chunkedgraph serve` on its output. The served roots of the written supervoxels must
//! reproduce the volume's ground truth, and leaves must hold the supervoxels seen.

use std::collections::{HashMap, HashSet};
use std::process::Command;

use cg_segmentation::synthetic::{voronoi, VoronoiParams};
use cg_tests::{chunkedgraph_bin, ServeProcess};
use cg_volume::{BBox, Volume};
use serde_json::{json, Value};

const SIZE: [usize; 3] = [512, 512, 128]; // x, y, z
const SEED: u64 = 5;

fn pipeline(data: &str) -> String {
    let out = Command::new(chunkedgraph_bin())
        .args(["pipeline", "run", "--table", "p", "--data-dir", data])
        .args([
            "--synthetic",
            &format!("{},{},{}", SIZE[0], SIZE[1], SIZE[2]),
        ])
        .args(["--seed", &SEED.to_string()])
        .env("RUST_LOG", "warn")
        .output()
        .expect("running chunkedgraph pipeline");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "pipeline failed: {err}");
    err + &String::from_utf8_lossy(&out.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_output_is_served_and_matches_the_ground_truth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8").to_string();
    let log = pipeline(&data);
    assert!(log.contains("pipeline done"), "{log}");
    // A re-run finds everything done.
    assert!(pipeline(&data).contains("already built"));

    // Export the root-ID segmentation of the test box before the server takes the storage.
    let (min, max) = ([100i64, 100, 20], [260i64, 260, 100]);
    let exported = dir.path().join("roots.npy");
    let out = Command::new(chunkedgraph_bin())
        .args(["export", "--table", "p", "--data-dir", &data])
        .arg("--bbox")
        .arg(format!(
            "{},{},{},{},{},{}",
            min[0], min[1], min[2], max[0], max[1], max[2]
        ))
        .arg("--out")
        .arg(&exported)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running chunkedgraph export");
    assert!(
        out.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported = cg_volume::npy::read_as::<u64>(&exported).expect("read the export");

    let server = ServeProcess::start(&["--data-dir", &data], &[]);
    let http = reqwest::Client::new();
    // The supervoxels of a box that crosses chunk faces, read back from the written volume.
    let volume = Volume::open(&format!("file://{data}/segmentation"))
        .await
        .expect("open the supervoxel volume");
    let svs = volume
        .read_box::<u64>(0, BBox::new(min, max))
        .await
        .expect("read a box");
    let distinct: Vec<u64> = {
        let mut d: Vec<u64> = svs.data().iter().copied().filter(|&s| s != 0).collect();
        d.sort_unstable();
        d.dedup();
        d
    };
    assert!(
        distinct.len() > 20,
        "only {} supervoxels in the box",
        distinct.len()
    );
    let answer: Value = http
        .post(server.url("p", "/roots"))
        .body(json!({ "node_ids": distinct }).to_string())
        .send()
        .await
        .expect("roots")
        .text()
        .await
        .map(|t| serde_json::from_str(&t).expect("roots JSON"))
        .expect("roots body");
    let roots: Vec<u64> = answer["root_ids"]
        .as_array()
        .expect("root_ids")
        .iter()
        .map(|v| v.as_u64().expect("id"))
        .collect();
    let root_of: HashMap<u64, u64> = distinct
        .iter()
        .copied()
        .zip(roots.iter().copied())
        .collect();

    // Ground truth of the same box, from the same generator.
    let [sx, sy, sz] = SIZE;
    let syn = voronoi(&VoronoiParams {
        shape: [sz, sy, sx],
        seed: SEED,
        ..Default::default()
    })
    .expect("synthetic volume");
    let truth = syn.ground_truth();
    let [bx, by, bz] = [
        (max[0] - min[0]) as usize,
        (max[1] - min[1]) as usize,
        (max[2] - min[2]) as usize,
    ];
    let mut seg = Vec::with_capacity(bx * by * bz);
    let mut gt = Vec::with_capacity(bx * by * bz);
    for z in 0..bz {
        for y in 0..by {
            for x in 0..bx {
                let sv = svs.data()[(z * by + y) * bx + x];
                seg.push(if sv == 0 { 0 } else { root_of[&sv] });
                let (gz, gy, gx) = (
                    z + min[2] as usize,
                    y + min[1] as usize,
                    x + min[0] as usize,
                );
                gt.push(u64::from(truth[(gz * sy + gy) * sx + gx]));
            }
        }
    }
    assert_eq!(exported.shape(), [bz, by, bx], "export shape (z, y, x)");
    assert!(
        exported.data() == seg.as_slice(),
        "the export differs from the served roots of the supervoxel volume"
    );
    let scores = cg_segmentation::evaluate(&seg, &gt).expect("scores");
    eprintln!("served roots against the ground truth: {scores:?}");
    assert!(scores.arand < 0.05, "adapted Rand error {}", scores.arand);

    // The leaves of a root hold every supervoxel of the box that maps to it.
    let root = roots[0];
    let leaves: Value = http
        .get(server.url("p", &format!("/node/{root}/leaves")))
        .send()
        .await
        .expect("leaves")
        .text()
        .await
        .map(|t| serde_json::from_str(&t).expect("leaves JSON"))
        .expect("leaves body");
    let leaves: HashSet<u64> = leaves["leaf_ids"]
        .as_array()
        .expect("leaf_ids")
        .iter()
        .map(|v| v.as_u64().expect("id"))
        .collect();
    for (sv, r) in &root_of {
        assert_eq!(
            leaves.contains(sv),
            *r == root,
            "supervoxel {sv} of root {r}"
        );
    }
}

/// Writes a (z, y, x) float32 array as an uncompressed zarr v2 array, chunked.
fn write_zarr(dir: &std::path::Path, shape: [usize; 3], chunk: [usize; 3], data: &[f32]) {
    std::fs::create_dir_all(dir).expect("zarr dir");
    let meta = json!({
        "zarr_format": 2, "shape": shape, "chunks": chunk, "dtype": "<f4",
        "compressor": null, "fill_value": 0.0, "order": "C", "filters": null
    });
    std::fs::write(dir.join(".zarray"), meta.to_string()).expect("write .zarray");
    let grid = [0, 1, 2].map(|a| shape[a].div_ceil(chunk[a]));
    for cz in 0..grid[0] {
        for cy in 0..grid[1] {
            for cx in 0..grid[2] {
                let mut bytes = Vec::with_capacity(chunk.iter().product::<usize>() * 4);
                for z in 0..chunk[0] {
                    for y in 0..chunk[1] {
                        for x in 0..chunk[2] {
                            let g = [cz * chunk[0] + z, cy * chunk[1] + y, cx * chunk[2] + x];
                            let v = if (0..3).all(|a| g[a] < shape[a]) {
                                data[(g[0] * shape[1] + g[1]) * shape[2] + g[2]]
                            } else {
                                0.0
                            };
                            bytes.extend_from_slice(&v.to_le_bytes());
                        }
                    }
                }
                std::fs::write(dir.join(format!("{cz}.{cy}.{cx}")), bytes).expect("chunk");
            }
        }
    }
}

/// Runs a `chunkedgraph pipeline plan` command: its (step, tasks) lines.
fn plan_steps(mut plan: Command) -> Vec<(String, u64)> {
    let out = plan.output().expect("pipeline plan");
    assert!(
        out.status.success(),
        "plan failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("plan line is JSON");
            (
                v["step"].as_str().expect("step").to_string(),
                v["tasks"].as_u64().expect("tasks"),
            )
        })
        .collect()
}

/// `a` and `b` label the voxels the same way up to names, with 0 (background) kept as 0.
fn same_partition(a: &[u64], b: &[u64], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: sizes");
    let (mut ab, mut ba) = (HashMap::new(), HashMap::new());
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x == 0, y == 0, "{what}: background differs at voxel {i}");
        assert_eq!(
            *ab.entry(x).or_insert(y),
            y,
            "{what}: object {x} split at voxel {i}"
        );
        assert_eq!(
            *ba.entry(y).or_insert(x),
            x,
            "{what}: objects merged at voxel {i}"
        );
    }
}

fn export_all(data: &str, out: &std::path::Path) -> Vec<u64> {
    let o = Command::new(chunkedgraph_bin())
        .args(["export", "--table", "k", "--data-dir", data, "--out"])
        .arg(out)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running chunkedgraph export");
    assert!(
        o.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    cg_volume::npy::read_as::<u64>(out)
        .expect("read the export")
        .into_data()
}

/// The distributed path: every step of `pipeline plan` run as separate processes, one per
/// shard as a Kubernetes Indexed Job's pods would (JOB_COMPLETION_INDEX), shards out of
/// order, one shard run twice (a retried pod) and one killed mid-way and rerun (a preempted
/// pod), on a zarr input; the graph must come out as `pipeline run` builds it from the same
/// volume in one process.
#[test]
fn tasks_run_as_indexed_jobs_build_the_same_graph() {
    let size = [96usize, 80, 48]; // x, y, z
    let chunk = "32,32,16";
    let syn = voronoi(&VoronoiParams {
        shape: [size[2], size[1], size[0]],
        seed: 3,
        ..Default::default()
    })
    .expect("synthetic volume");
    let dir = tempfile::tempdir().expect("tempdir");
    let zarr = dir.path().join("boundary.zarr");
    write_zarr(
        &zarr,
        [size[2], size[1], size[0]],
        [16, 32, 32],
        &syn.boundary,
    );

    // One process, from the same volume generated in memory.
    let one = dir.path().join("one");
    let one = one.to_str().expect("utf-8");
    let out = Command::new(chunkedgraph_bin())
        .args(["pipeline", "run", "--table", "k", "--data-dir", one])
        .args([
            "--synthetic",
            &format!("{},{},{}", size[0], size[1], size[2]),
        ])
        .args(["--seed", "3", "--chunk-size", "48,40,24"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("pipeline run");
    assert!(
        out.status.success(),
        "pipeline run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let many = dir.path().join("many");
    let many = many.to_str().expect("utf-8").to_string();
    let common = |cmd: &mut Command| {
        cmd.args(["--table", "k", "--data-dir", &many])
            .arg("--input")
            .arg(&zarr)
            .args(["--input-kind", "boundary", "--chunk-size", chunk])
            .env("RUST_LOG", "warn");
    };
    let mut plan = Command::new(chunkedgraph_bin());
    plan.args(["pipeline", "plan"]);
    common(&mut plan);
    let steps = plan_steps(plan);
    let names: Vec<&str> = steps.iter().map(|(s, _)| s.as_str()).collect();
    // prepare, segment-0.. (chunks, then parents up to the root), segment-finish,
    // segment-labels, supervoxels, ingest-2..
    assert_eq!(names[0], "prepare");
    let finish = names
        .iter()
        .position(|&s| s == "segment-finish")
        .expect("segment-finish step");
    assert!(finish >= 3, "at least two segmentation levels: {names:?}");
    for (level, name) in names[1..finish].iter().enumerate() {
        assert_eq!(*name, format!("segment-{level}"));
    }
    assert_eq!(
        names[finish + 1..finish + 3],
        ["segment-labels", "supervoxels"]
    );
    assert!(
        names[finish + 3..].iter().all(|s| s.starts_with("ingest-")),
        "{names:?}"
    );

    let task = |step: &str, index: u64, count: u64| {
        let mut cmd = Command::new(chunkedgraph_bin());
        cmd.args(["pipeline", "task", "--step", step])
            .args(["--shard-count", &count.to_string()])
            .env("JOB_COMPLETION_INDEX", index.to_string());
        common(&mut cmd);
        cmd
    };
    // A later step before its inputs exist is refused with a reason.
    let early = task("supervoxels", 0, 1).output().expect("early task");
    assert!(!early.status.success());
    assert!(
        String::from_utf8_lossy(&early.stderr).contains("not finished"),
        "{}",
        String::from_utf8_lossy(&early.stderr)
    );
    for (step, tasks) in &steps {
        let count = (*tasks).clamp(1, 3);
        for index in (0..count).rev() {
            if step == "supervoxels" && index == count - 1 {
                // A preempted pod: killed as soon as it started, then run again.
                let mut child = task(step, index, count).spawn().expect("spawn");
                std::thread::sleep(std::time::Duration::from_millis(300));
                let _ = child.kill();
                let _ = child.wait();
            }
            let out = task(step, index, count).output().expect("task");
            assert!(
                out.status.success(),
                "step {step} shard {index}/{count} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // A retried pod finds its work done.
        let again = task(step, 0, count).output().expect("retry");
        assert!(again.status.success(), "retry of {step} failed");
    }

    // Both runs (other chunk sizes, one process or many) serve exactly the whole-volume
    // watershed + agglomeration, up to the naming of the objects.
    let affs = syn.affinities().expect("affinities");
    let ws = cg_segmentation::watershed(&affs, &cg_segmentation::WatershedParams::default())
        .expect("watershed");
    let agg = cg_segmentation::agglomerate(&ws.graph, 0.5);
    let component: HashMap<u64, u64> = ws
        .graph
        .ids
        .iter()
        .copied()
        .zip(agg.components.iter().copied())
        .collect();
    let whole: Vec<u64> = ws
        .labels
        .iter()
        .map(|&l| if l == 0 { 0 } else { component[&l] })
        .collect();
    let a = export_all(one, &dir.path().join("one.npy"));
    let b = export_all(&many, &dir.path().join("many.npy"));
    assert_eq!(a.len(), size.iter().product::<usize>());
    same_partition(&whole, &a, "one process, chunks 48×40×24");
    same_partition(&whole, &b, "tasks, chunks 32×32×16");
    let roots: HashSet<u64> = a.iter().copied().filter(|&r| r != 0).collect();
    assert!(roots.len() > 10, "only {} roots", roots.len());
}

/// `chunkedgraph synthesize` draws realistic defects (gaps, false membranes, noise, weak
/// sections): the pipeline must still recover the cells, but measurably less well than on a
/// clean membrane map of the same cells.
#[test]
fn synthesized_defects_make_the_volume_harder_but_recoverable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |name: &str| dir.path().join(name);
    let run = |args: &[&str]| {
        let out = Command::new(chunkedgraph_bin())
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("running chunkedgraph");
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let s = |x: &std::path::Path| x.to_str().expect("utf-8").to_string();
    run(&[
        "synthesize",
        "--size",
        "128,128,64",
        "--seed",
        "4",
        "--out",
        &s(&p("def.npy")),
        "--ground-truth",
        &s(&p("gt.npy")),
    ]);
    run(&[
        "synthesize",
        "--size",
        "128,128,64",
        "--seed",
        "4",
        "--clean",
        "--out",
        &s(&p("clean.npy")),
    ]);
    let gt = cg_volume::npy::read_as::<u32>(p("gt.npy")).expect("ground truth");
    assert_eq!(gt.shape(), [64, 128, 128]);
    let mut scores = Vec::new();
    for name in ["clean", "def"] {
        let data = s(&p(&format!("data-{name}")));
        run(&[
            "pipeline",
            "run",
            "--input",
            &s(&p(&format!("{name}.npy"))),
            "--table",
            "k",
            "--data-dir",
            &data,
            "--chunk-size",
            "64,64,32",
            // Noise lowers mean affinities inside cells: agglomerate further than the
            // default 0.5 (which leaves ARAND ≈ 0.18 here, all splits).
            "--threshold",
            "0.3",
        ]);
        let roots = export_all(&data, &p(&format!("roots-{name}.npy")));
        let sc = cg_segmentation::evaluate(&roots, gt.data()).expect("scores");
        eprintln!("{name}: {sc:?}");
        scores.push(sc.arand);
    }
    assert!(scores[0] < 0.01, "clean volume: ARAND {}", scores[0]);
    assert!(
        scores[1] > scores[0] && scores[1] < 0.05,
        "defects: ARAND {} (clean {})",
        scores[1],
        scores[0]
    );
}

/// `deploy/k8s/run.sh --dry-run` renders one Indexed Job per planned step, in order, with
/// every template field filled and completions = min(tasks, --shards).
#[test]
fn kubernetes_driver_renders_a_job_per_step() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("dataset.toml");
    std::fs::write(
        &config,
        format!(
            "table = \"k8s\"\ninput = \"{}\"\ninput_kind = \"boundary\"\nchunk_size = [32, 32, 16]\nwork_dir = \"{}\"\nsegmentation = \"{}\"\n",
            {
                let syn = voronoi(&VoronoiParams {
                    shape: [40, 70, 90],
                    seed: 2,
                    ..Default::default()
                })
                .expect("synthetic");
                let p = dir.path().join("b.npy");
                cg_volume::npy::write(
                    &p,
                    &cg_volume::Array::new(vec![40, 70, 90], syn.boundary).expect("array"),
                )
                .expect("write");
                p.display().to_string()
            },
            dir.path().join("work").display(),
            dir.path().join("seg").display(),
        ),
    )
    .expect("config");
    let mut plan = Command::new(chunkedgraph_bin());
    plan.args(["pipeline", "plan", "--config"]).arg(&config);
    let steps = plan_steps(plan);
    let out = Command::new("bash")
        .arg(root.join("deploy/k8s/run.sh"))
        .arg("--config")
        .arg(&config)
        .args([
            "--image",
            "example/chunkedgraph:test",
            "--name",
            "t1",
            "--shards",
            "4",
        ])
        .arg("--dry-run")
        .env("CHUNKEDGRAPH", chunkedgraph_bin())
        .output()
        .expect("run.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "run.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("${"), "an unfilled field:\n{text}");
    let docs: Vec<&str> = text.split("\n---\n").skip(1).collect();
    assert_eq!(docs.len(), steps.len(), "{text}");
    for (doc, (step, tasks)) in docs.iter().zip(&steps) {
        assert!(doc.contains(&format!("name: cg-t1-{step}\n")), "{doc}");
        assert!(doc.contains("completionMode: Indexed"), "{doc}");
        let completions = (*tasks).clamp(1, 4);
        assert!(
            doc.contains(&format!("completions: {completions}\n")),
            "{step}: {doc}"
        );
        assert!(doc.contains(&format!("- {step}\n")), "{doc}");
    }
    // Bad arguments are refused with a reason.
    let bad = Command::new("bash")
        .arg(root.join("deploy/k8s/run.sh"))
        .args([
            "--config",
            "/nonexistent",
            "--image",
            "x",
            "--name",
            "t1",
            "--dry-run",
        ])
        .output()
        .expect("run.sh");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--config"));
}
