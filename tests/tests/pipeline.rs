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
