//! Meshes end to end: `chunkedgraph mesh` on a synthetic graph with its supervoxel volume,
//! then the files and the server's manifest.
//!
//! - Crack-free: the fragments of every root, stitched, form a surface whose only open
//!   edges lie on the dataset's outer faces; so do the manifest's (stitched, higher-layer)
//!   fragments.
//! - Resumable: a removed shard is rebuilt byte for byte by a re-run.
//! - Remeshing: after a merge and a split through the server, the new roots' manifests
//!   become complete (every new layer-2 node meshed) without any other request; the time
//!   from the edit's response to completeness is printed.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cg_bigtable::{Client, Config, Target};
use cg_graph::query::RootQuery;
use cg_graph::ChunkedGraph;
use cg_ids::{layer_of, Geometry};
use cg_mesh::Mesh;
use cg_tests::{chunkedgraph_bin, EmulatorProcess, ServeProcess};
use cg_volume::ShardSpec;
use serde_json::{json, Value};

const TABLE: &str = "meshes";
const SUPERVOXELS: usize = 3000;
const SEED: u64 = 11;
const RESOLUTION: [f64; 3] = [8.0, 8.0, 40.0];

struct Setup {
    dir: tempfile::TempDir,
    emulator: EmulatorProcess,
    graph: ChunkedGraph,
    synth: cg_tests::Ingested,
}

impl Setup {
    fn seg(&self) -> PathBuf {
        self.dir.path().join("segmentation")
    }
    fn meshes(&self) -> PathBuf {
        self.seg().join("graphene_meshes")
    }
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![("BIGTABLE_EMULATOR_HOST", self.emulator.addr.to_string())]
    }
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let emulator = EmulatorProcess::ours(&dir.path().join("bigtable"), &[]);
    let seg = dir.path().join("segmentation");
    let env = [("BIGTABLE_EMULATOR_HOST", emulator.addr.to_string())];
    let synth = cg_tests::ingest_synthetic(
        TABLE,
        SUPERVOXELS,
        SEED,
        &[
            "--segmentation-dir",
            seg.to_str().expect("utf-8 path"),
            "--resolution",
            "8,8,40",
        ],
        &env,
    );
    let client: Client = Config::new(Target::Emulator(emulator.addr.to_string()))
        .connect()
        .await
        .expect("connect");
    let graph = ChunkedGraph::open(client, TABLE).await.expect("open");
    assert_eq!(graph.geometry().resolution, RESOLUTION);
    Setup {
        dir,
        emulator,
        graph,
        synth,
    }
}

fn mesh_cmd(s: &Setup) -> String {
    let out = Command::new(chunkedgraph_bin())
        .args(["mesh", "--table", TABLE])
        .envs(s.env())
        .env("RUST_LOG", "warn")
        .output()
        .expect("running chunkedgraph mesh");
    assert!(
        out.status.success(),
        "chunkedgraph mesh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Every fragment of the initial shards, decoded, by node.
fn read_initial(meshes: &Path) -> HashMap<u64, Mesh> {
    let info: Value =
        serde_json::from_slice(&std::fs::read(meshes.join("info")).expect("mesh info"))
            .expect("mesh info JSON");
    let mut out = HashMap::new();
    for (layer, spec) in info["sharding"].as_object().expect("sharding per layer") {
        let spec: ShardSpec = serde_json::from_value(spec.clone()).expect("sharding spec");
        let dir = meshes.join("initial").join(layer);
        for entry in std::fs::read_dir(&dir).expect("layer directory") {
            let path = entry.expect("entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            assert!(
                name.ends_with("-0.shard"),
                "{name}: shard files are named {{chunk position}}-0.shard"
            );
            let file = std::fs::read(&path).expect("shard");
            let entries = cg_volume::shard::decode_shard(&spec, &file).expect("shard decodes");
            for (id, bytes) in entries {
                assert_eq!(
                    layer_of(id).to_string(),
                    *layer,
                    "{id} filed under layer {layer}"
                );
                let mesh = cg_mesh::draco::decode(&bytes).expect("fragment decodes");
                out.insert(id, mesh);
            }
        }
    }
    out
}

/// Open edges of a stitched mesh that do not lie on the dataset's outer faces (the voxel
/// centre planes of the first and last voxels, where marching cubes leaves every segment
/// open), and the total number of open edges.
fn inner_open_edges(mesh: &Mesh, g: &Geometry) -> (usize, usize) {
    let mut uses: HashMap<(u32, u32), i32> = HashMap::new();
    for t in &mesh.triangles {
        for k in 0..3 {
            let (a, b) = (t[k], t[(k + 1) % 3]);
            *uses.entry((a.min(b), a.max(b))).or_default() += 1;
        }
    }
    let on_edge = |v: [f32; 3]| {
        (0..3).any(|d| {
            let lo = (g.voxel_offset[d] as f64 * g.resolution[d]) as f32;
            let hi =
                ((g.voxel_offset[d] + g.volume_size[d] as i64 - 1) as f64 * g.resolution[d]) as f32;
            v[d] == lo || v[d] == hi
        })
    };
    let open: Vec<(u32, u32)> = uses
        .iter()
        .filter(|(_, &n)| n == 1)
        .map(|(&e, _)| e)
        .collect();
    let inner = open
        .iter()
        .filter(|&&(a, b)| {
            !(on_edge(mesh.vertices[a as usize]) && on_edge(mesh.vertices[b as usize]))
        })
        .count();
    (inner, open.len())
}

fn in_volume(mesh: &Mesh, g: &Geometry) -> bool {
    mesh.vertices.iter().all(|v| {
        (0..3).all(|d| {
            let lo = g.voxel_offset[d] as f64 * g.resolution[d];
            let hi = (g.voxel_offset[d] + g.volume_size[d] as i64) as f64 * g.resolution[d];
            (lo..=hi).contains(&f64::from(v[d]))
        })
    })
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{e}: not JSON: {}", String::from_utf8_lossy(bytes)))
}

/// The manifest's answer: (seg_ids, fragments).
async fn manifest(http: &reqwest::Client, base: &str, root: u64) -> (Vec<u64>, Vec<String>) {
    let url = format!(
        "{base}/meshing/api/v1/table/{TABLE}/manifest/{root}:0?verify=True&return_seg_ids=1"
    );
    let r = http.get(url).send().await.expect("manifest");
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.bytes().await.map(|b| json_of(&b)).expect("manifest JSON");
    let ids = v["seg_ids"]
        .as_array()
        .expect("seg_ids")
        .iter()
        .map(|x| x.as_u64().expect("id"))
        .collect();
    let frags = v["fragments"]
        .as_array()
        .expect("fragments")
        .iter()
        .map(|x| x.as_str().expect("string").to_string())
        .collect();
    (ids, frags)
}

/// Reads a manifest fragment as the clients do: `~{layer}/{file}:{offset}:{size}` by byte
/// range from `initial/`, any other name from `dynamic/`, through the server's data route.
async fn fetch_fragment(http: &reqwest::Client, base: &str, fragment: &str) -> Mesh {
    let data = format!("{base}/segmentation/table/{TABLE}/data/graphene_meshes");
    let bytes = if let Some(rest) = fragment.strip_prefix('~') {
        let parts: Vec<&str> = rest.split(':').collect();
        assert_eq!(parts.len(), 3, "{fragment}");
        let (off, size): (u64, u64) = (
            parts[1].parse().expect("offset"),
            parts[2].parse().expect("size"),
        );
        let r = http
            .get(format!("{data}/initial/{}", parts[0]))
            .header("Range", format!("bytes={off}-{}", off + size - 1))
            .send()
            .await
            .expect("initial fragment");
        assert_eq!(r.status().as_u16(), 206, "{fragment}");
        r.bytes().await.expect("bytes").to_vec()
    } else {
        let r = http
            .get(format!("{data}/dynamic/{fragment}"))
            .send()
            .await
            .expect("dynamic fragment");
        assert_eq!(r.status().as_u16(), 200, "{fragment}");
        r.bytes().await.expect("bytes").to_vec()
    };
    cg_mesh::draco::decode(&bytes).unwrap_or_else(|e| panic!("{fragment}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_meshes_are_crack_free_resumable_and_remeshed_after_edits() {
    let s = setup().await;
    let g = s.graph.geometry().clone();
    let out = mesh_cmd(&s);
    assert!(out.contains("meshed"), "{out}");
    let fragments = read_initial(&s.meshes());
    assert!(!fragments.is_empty());

    // Every root: its layer-2 fragments stitch into a surface open only at the dataset edge.
    let svs = &s.synth.ids;
    let roots = s
        .graph
        .roots(svs, &RootQuery::default())
        .await
        .expect("roots");
    let distinct: HashSet<u64> = roots.iter().copied().collect();
    let mut crossing = 0;
    let mut by_size = Vec::new();
    for &root in &distinct {
        let l2 = s.graph.leaves(root, None, 2).await.expect("leaves");
        let parts: Vec<&Mesh> = l2.iter().filter_map(|id| fragments.get(id)).collect();
        assert!(!parts.is_empty(), "root {root} has no fragment");
        for p in &parts {
            assert!(
                in_volume(p, &g),
                "a fragment of {root} lies outside the volume"
            );
        }
        let chunks: HashSet<u64> = l2.iter().map(|&id| g.chunk_of(id)).collect();
        crossing += usize::from(chunks.len() > 1);
        by_size.push((std::cmp::Reverse(l2.len()), root));
        let stitched = Mesh::stitch(parts.iter().copied());
        let (inner, open) = inner_open_edges(&stitched, &g);
        assert_eq!(
            inner, 0,
            "root {root} ({} layer-2 nodes in {} chunks): {inner} of {open} open edges inside the volume",
            l2.len(),
            chunks.len()
        );
    }
    assert!(crossing >= 5, "only {crossing} roots cross chunk faces");

    // Resumable: a lost shard (and the completion mark) comes back identical.
    let victim = std::fs::read_dir(s.meshes().join("initial/2"))
        .expect("layer 2")
        .map(|e| e.expect("entry").path())
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a shard");
    let before = std::fs::read(&victim).expect("shard");
    std::fs::remove_file(&victim).expect("remove shard");
    std::fs::remove_file(s.meshes().join("initial/complete")).expect("remove mark");
    mesh_cmd(&s);
    assert_eq!(std::fs::read(&victim).expect("rebuilt shard"), before);
    assert!(mesh_cmd(&s).contains("complete already"));

    // The server: info, manifests (stitched higher-layer fragments) and fragments by range.
    // Remeshing jobs log their own durations at debug level.
    let mut env = s.env();
    env.push((
        "RUST_LOG",
        std::env::var("CG_TEST_SERVE_LOG").unwrap_or_else(|_| "warn".into()),
    ));
    let server = ServeProcess::start(&[], &env);
    let base = server.base.clone();
    let http = reqwest::Client::new();
    let info: Value = http
        .get(format!("{base}/segmentation/table/{TABLE}/info"))
        .send()
        .await
        .expect("info")
        .bytes()
        .await
        .map(|b| json_of(&b))
        .expect("info JSON");
    assert_eq!(info["mesh"], "graphene_meshes");
    assert_eq!(info["mesh_metadata"]["uniform_draco_grid_size"], json!(4));
    assert_eq!(info["mesh_metadata"]["unsharded_mesh_dir"], "dynamic");
    let max_layer = info["mesh_metadata"]["max_meshed_layer"]
        .as_u64()
        .expect("max_meshed_layer") as u8;
    let mut higher = 0;
    by_size.sort();
    for &(_, root) in by_size.iter().take(12) {
        let (ids, frags) = manifest(&http, &base, root).await;
        assert_eq!(ids.len(), frags.len());
        higher += ids.iter().filter(|&&i| layer_of(i) > 2).count();
        assert!(ids.iter().all(|&i| layer_of(i) <= max_layer));
        let mut parts = Vec::new();
        for f in &frags {
            parts.push(fetch_fragment(&http, &base, f).await);
        }
        let stitched = Mesh::stitch(parts.iter());
        let (inner, open) = inner_open_edges(&stitched, &g);
        assert_eq!(
            inner, 0,
            "manifest of {root}: {inner} of {open} open edges inside"
        );
        // prepend_seg_ids: `~{seg}:` before each fragment, as Neuroglancer asks.
        let v: Value = http
            .get(format!(
                "{base}/meshing/api/v1/table/{TABLE}/manifest/{root}:0?verify=1&prepend_seg_ids=1"
            ))
            .send()
            .await
            .expect("manifest")
            .bytes()
            .await
            .map(|b| json_of(&b))
            .expect("JSON");
        let expected: Vec<String> = ids
            .iter()
            .zip(&frags)
            .map(|(i, f)| format!("~{i}:{f}"))
            .collect();
        assert_eq!(v["fragments"], json!(expected));
    }
    assert!(
        higher > 0,
        "no stitched higher-layer fragment in any manifest"
    );

    // Bad requests: clear 4xx JSON errors.
    for (path, status) in [
        ("/manifest/abc:0", 400),
        ("/manifest/123", 400),
        (&format!("/manifest/{}:1", roots[0]), 400),
        (&format!("/manifest/{}:0?bounds=1-2", roots[0]), 400),
    ] {
        let r = http
            .get(format!("{base}/meshing/api/v1/table/{TABLE}{path}"))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status().as_u16(), status, "{path}");
        let v: Value = r.bytes().await.map(|b| json_of(&b)).expect("JSON error");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    // Remeshing: a merge, then a split of the same pair.
    let (i, j) = cg_tests::neighbours_in_two_objects(&s.synth.synth, &roots);
    let point = |k: usize| {
        let p = s.synth.synth.supervoxels[k].position;
        json!([
            svs[k].to_string(),
            f64::from(p[0]) * RESOLUTION[0],
            f64::from(p[1]) * RESOLUTION[1],
            f64::from(p[2]) * RESOLUTION[2]
        ])
    };
    // Three rounds of merging and splitting the pair: each edit makes new layer-2 nodes.
    let mut latencies = Vec::new();
    for _ in 0..3 {
        let edits = [
            ("/merge", json!([point(i), point(j)])),
            (
                "/split",
                json!({ "sources": [point(i)], "sinks": [point(j)] }),
            ),
        ];
        for (route, body) in edits {
            let r = http
                .post(format!("{base}/segmentation/api/v1/table/{TABLE}{route}"))
                .body(body.to_string())
                .send()
                .await
                .expect("edit");
            let answered = Instant::now();
            let status = r.status().as_u16();
            let v = r.bytes().await.map(|b| json_of(&b)).expect("edit JSON");
            assert_eq!(status, 200, "{route}: {v}");
            let new_roots: Vec<u64> = v["new_root_ids"]
                .as_array()
                .expect("new_root_ids")
                .iter()
                .map(|x| x.as_u64().expect("id"))
                .collect();
            assert_eq!(new_roots.len(), if route == "/merge" { 1 } else { 2 });
            for &root in &new_roots {
                wait_complete(&s, &fragments, &http, &base, root, Duration::from_secs(120)).await;
            }
            // Until every new root is complete.
            latencies.push(answered.elapsed());
        }
    }
    latencies.sort();
    eprintln!(
        "remesh latency, edit response to complete manifests ({} edits): p50 {:?}, max {:?}",
        latencies.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
}

/// Polls a root's manifest until every layer-2 node under it is covered by a listed
/// fragment or was meshed empty; returns how long it took.
async fn wait_complete(
    s: &Setup,
    initial: &HashMap<u64, Mesh>,
    http: &reqwest::Client,
    base: &str,
    root: u64,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    let l2: HashSet<u64> = s
        .graph
        .leaves(root, None, 2)
        .await
        .expect("leaves")
        .into_iter()
        .collect();
    // Nodes from the ingest were all offered to the initial meshing; one missing from its
    // chunk's shard owns no triangle.
    let ids: Vec<u64> = l2.iter().copied().collect();
    let made = s.graph.node_timestamps(&ids).await.expect("timestamps");
    let ingest = s.graph.meta().ingest_timestamp_micros;
    let surfaceless: HashSet<u64> = ids
        .iter()
        .zip(made)
        .filter(|&(id, t)| t <= ingest && !initial.contains_key(id))
        .map(|(&id, _)| id)
        .collect();
    loop {
        let (ids, frags) = manifest(http, base, root).await;
        let mut covered = HashSet::new();
        for &id in &ids {
            covered.extend(s.graph.leaves(id, None, 2).await.expect("leaves"));
        }
        let dynamic = s.meshes().join("dynamic");
        let missing: Vec<u64> = l2
            .iter()
            .copied()
            .filter(|id| !covered.contains(id))
            // Meshed, with no surface of its own.
            .filter(|id| !surfaceless.contains(id) && !empty_dynamic(&dynamic, *id))
            .collect();
        if missing.is_empty() {
            for f in &frags {
                fetch_fragment(http, base, f).await;
            }
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "root {root}: {} of {} layer-2 nodes still without meshes after {limit:?}",
            missing.len(),
            l2.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn empty_dynamic(dir: &Path, id: u64) -> bool {
    let prefix = format!("{id}:0:");
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten().any(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix))
                && e.metadata().is_ok_and(|m| m.len() == 0)
        })
    })
}
