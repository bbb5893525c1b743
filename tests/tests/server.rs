//! `chunkedgraph serve` over HTTP: a synthetic graph is ingested into our emulator with
//! `chunkedgraph ingest`, the server runs as a process on the same emulator, and its answers
//! are checked against the library's on the same table. Also: gzip both ways, CORS, and
//! JSON errors for bad input with nothing written and the server still up.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};

use cg_bigtable::{Client, Config, ReadRows, Target};
use cg_graph::edit::{EditOptions, Point};
use cg_graph::query::RootQuery;
use cg_graph::synthetic::SyntheticGraph;
use cg_graph::ChunkedGraph;
use cg_ids::VoxelBox;
use cg_tests::{chunkedgraph_bin, EmulatorProcess};
use serde_json::{json, Value};

const TABLE: &str = "g";
const SUPERVOXELS: usize = 4000;
const SEED: u64 = 7;

/// A `chunkedgraph serve` process; killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(emulator: &EmulatorProcess) -> Server {
        let mut child = Command::new(chunkedgraph_bin())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("BIGTABLE_EMULATOR_HOST", emulator.addr.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting chunkedgraph serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("reading the server's first line");
        let addr = line
            .trim()
            .strip_prefix("chunkedgraph serving on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Server { child, base: addr }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/segmentation/api/v1/table/{TABLE}{path}", self.base)
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Setup {
    _emulator: EmulatorProcess,
    _dir: tempfile::TempDir,
    server: Server,
    graph: ChunkedGraph,
    client: Client,
    synth: SyntheticGraph,
    ids: Vec<u64>,
    http: reqwest::Client,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let emulator = EmulatorProcess::ours(dir.path(), &[]);
    let cg_tests::Ingested { synth, ids } = cg_tests::ingest_synthetic(
        TABLE,
        SUPERVOXELS,
        SEED,
        &[],
        &[("BIGTABLE_EMULATOR_HOST", emulator.addr.to_string())],
    );
    let client = Config::new(Target::Emulator(emulator.addr.to_string()))
        .connect()
        .await
        .expect("connect");
    let graph = ChunkedGraph::open(client.clone(), TABLE)
        .await
        .expect("open");
    let server = Server::start(&emulator);
    Setup {
        _emulator: emulator,
        _dir: dir,
        server,
        graph,
        client,
        synth,
        ids,
        http: reqwest::Client::new(),
    }
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }

    /// A 2xx JSON answer.
    fn ok(&self) -> Value {
        assert_eq!(self.status, 200, "{}", String::from_utf8_lossy(&self.body));
        self.json()
    }

    /// An error answer: JSON `{"code", "message"}` with this status; returns the message.
    fn error(&self, status: u16) -> String {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.header("content-type"), "application/json");
        let v = self.json();
        assert_eq!(v["code"], json!(status));
        v["message"].as_str().expect("message").to_string()
    }
}

async fn send(rb: reqwest::RequestBuilder) -> Answer {
    let r = rb.send().await.expect("request");
    Answer {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.bytes().await.expect("body").to_vec(),
    }
}

impl Setup {
    async fn get(&self, path: &str) -> Answer {
        send(self.http.get(self.server.url(path))).await
    }

    /// A POST with a body and no content type, as caveclient and Neuroglancer send them.
    async fn post(&self, path: &str, body: impl Into<Vec<u8>>) -> Answer {
        send(self.http.post(self.server.url(path)).body(body.into())).await
    }

    async fn roots(&self, ids: &[u64]) -> Vec<u64> {
        self.graph
            .roots(ids, &RootQuery::default())
            .await
            .expect("roots")
    }

    fn point(&self, i: usize) -> Point {
        let p = self.synth.supervoxels[i].position;
        Point {
            supervoxel: self.ids[i],
            position_nm: [f64::from(p[0]), f64::from(p[1]), f64::from(p[2])],
        }
    }

    /// `[id, x, y, z]` with the ID as a string, as Neuroglancer sends it.
    fn point_json(&self, i: usize) -> Value {
        let p = self.point(i);
        json!([
            p.supervoxel.to_string(),
            p.position_nm[0],
            p.position_nm[1],
            p.position_nm[2]
        ])
    }

    /// Every cell of the table.
    async fn dump(&self) -> Vec<(Vec<u8>, String, Vec<u8>, i64, Vec<u8>)> {
        let rows = self
            .client
            .read_rows_vec(TABLE, ReadRows::new())
            .await
            .expect("dump");
        let mut out = Vec::new();
        for r in rows {
            for f in r.families {
                for col in f.columns {
                    for c in col.cells {
                        out.push((
                            r.key.clone(),
                            f.name.clone(),
                            col.qualifier.clone(),
                            c.timestamp_micros,
                            c.value,
                        ));
                    }
                }
            }
        }
        out
    }
}

fn ids_of(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap_or_else(|| panic!("{v} is not a list"))
        .iter()
        .map(|x| match x {
            Value::String(s) => s.parse().expect("ID string"),
            _ => x.as_u64().expect("ID"),
        })
        .collect()
}

fn u64s(bytes: &[u8]) -> Vec<u64> {
    assert!(bytes.len().is_multiple_of(8));
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

fn le_bytes(ids: &[u64]) -> Vec<u8> {
    ids.iter().flat_map(|i| i.to_le_bytes()).collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("gunzip");
    out
}

/// A few supervoxels of different roots, and their distinct roots.
async fn sample(s: &Setup) -> (Vec<u64>, Vec<u64>) {
    let svs: Vec<u64> = s.ids.iter().step_by(97).copied().collect();
    let mut roots = s.roots(&svs).await;
    roots.sort_unstable();
    roots.dedup();
    (svs, roots)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_match_the_library() {
    let s = setup().await;
    let g = &s.graph;
    let geo = g.geometry().clone();

    // Generic routes.
    let v = send(
        s.http
            .get(format!("{}/segmentation/api/versions", s.server.base)),
    )
    .await
    .ok();
    assert_eq!(v, json!([0, 1]));
    let info = send(
        s.http
            .get(format!("{}/segmentation/table/{TABLE}/info", s.server.base)),
    )
    .await
    .ok();
    assert_eq!(info["graph"]["n_layers"], json!(geo.n_layers));
    assert_eq!(info["graph"]["chunk_size"], json!(geo.chunk_size));
    assert_eq!(info["graph"]["n_bits_for_layer_id"], json!(8));
    for l in 1..=geo.n_layers {
        assert_eq!(
            info["graph"]["spatial_bit_masks"][l.to_string()],
            json!(geo.bits_per_dim(l))
        );
    }
    assert_eq!(info["scales"][0]["size"], json!(geo.volume_size));
    assert_eq!(info["data_type"], json!("uint64"));
    assert_eq!(info["app"]["supported_api_versions"], json!([0, 1]));

    let (svs, roots) = sample(&s).await;
    assert!(roots.len() > 3, "several objects");
    let lib_roots = s.roots(&svs).await;

    // One root, as a number and as a string; and the layer-2 parent.
    let r = s.get(&format!("/node/{}/root", svs[0])).await.ok();
    assert_eq!(r, json!({ "root_id": lib_roots[0] }));
    let r = s
        .get(&format!(
            "/node/{}/root?int64_as_str=1&stop_layer=2",
            svs[0]
        ))
        .await
        .ok();
    let l2 = g
        .roots(
            &svs[..1],
            &RootQuery {
                stop_layer: Some(2),
                ..Default::default()
            },
        )
        .await
        .expect("l2");
    assert_eq!(r, json!({ "root_id": l2[0].to_string() }));

    // Many roots: JSON (IDs as numbers or strings) and binary; 0 maps to 0.
    let mut body_ids: Vec<Value> = svs.iter().map(|&i| json!(i)).collect();
    body_ids[1] = json!(svs[1].to_string());
    let r = s
        .post("/roots", json!({ "node_ids": body_ids }).to_string())
        .await
        .ok();
    assert_eq!(ids_of(&r["root_ids"]), lib_roots);
    let mut with_zero = svs.clone();
    with_zero.push(0);
    let r = s.post("/roots_binary", le_bytes(&with_zero)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "application/octet-stream");
    let mut expected = lib_roots.clone();
    expected.push(0);
    assert_eq!(u64s(&r.body), expected);

    // Children, leaves (whole and in a box), leaves of many.
    let root = roots[0];
    let kids = g.children(&[root]).await.expect("children");
    let r = s.get(&format!("/node/{root}/children")).await.ok();
    assert_eq!(ids_of(&r["children_ids"]), kids[0].ids);
    let leaves = g.leaves(root, None, 1).await.expect("leaves");
    let r = s.get(&format!("/node/{root}/leaves")).await.ok();
    assert_eq!(ids_of(&r["leaf_ids"]), leaves);
    let cs = geo.chunk_size;
    let bbox = VoxelBox::new([0, 0, 0], [u64::from(cs[0]), u64::from(cs[1]), 5000]);
    let boxed = g.leaves(root, Some(bbox), 1).await.expect("leaves");
    let r = s
        .get(&format!(
            "/node/{root}/leaves?bounds=0-{}_0-{}_0-5000",
            cs[0], cs[1]
        ))
        .await
        .ok();
    assert_eq!(ids_of(&r["leaf_ids"]), boxed);
    let l2s = g.leaves(root, None, 2).await.expect("l2 leaves");
    for path in ["/node/leaves_many", "/leaves_many"] {
        let r = s
            .post(
                &format!("{path}?stop_layer=2&int64_as_str=true"),
                json!({ "node_ids": [root, roots[1]] }).to_string(),
            )
            .await
            .ok();
        assert_eq!(ids_of(&r[root.to_string()]), l2s);
        assert_eq!(
            ids_of(&r[roots[1].to_string()]),
            g.leaves(roots[1], None, 2).await.expect("leaves")
        );
    }

    // Minimal covering nodes: all layer-2 nodes of a root are the root; one is itself.
    let r = s
        .post(
            "/minimal_covering_nodes",
            json!({ "node_ids": l2s }).to_string(),
        )
        .await
        .ok();
    assert_eq!(ids_of(&r), vec![root]);
    if l2s.len() > 1 {
        let r = s
            .post(
                "/minimal_covering_nodes?as_array=1",
                json!({ "node_ids": [l2s[0]] }).to_string(),
            )
            .await;
        assert_eq!(u64s(&r.body), vec![l2s[0]]);
    }

    // Subgraph: all edges among the leaves, affinities as Python writes them.
    let edges = g.subgraph_edges(root, None, None).await.expect("subgraph");
    let r = s.get(&format!("/node/{root}/subgraph")).await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body.clone()).expect("utf8");
    let v: Value = serde_json::from_str(&text.replace("Infinity", "\"inf\"")).expect("json");
    let pairs: Vec<[u64; 2]> = v["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|p| {
            let p = ids_of(p);
            [p[0], p[1]]
        })
        .collect();
    assert_eq!(pairs, edges.iter().map(|e| [e.a, e.b]).collect::<Vec<_>>());
    let affinities: Vec<f32> = v["affinities"]
        .as_array()
        .expect("affinities")
        .iter()
        .map(|a| match a.as_str() {
            Some("inf") => f32::INFINITY,
            _ => a.as_f64().expect("affinity") as f32,
        })
        .collect();
    assert_eq!(
        affinities,
        edges.iter().map(|e| e.affinity).collect::<Vec<_>>()
    );
    assert_eq!(
        v["areas"],
        json!(edges.iter().map(|e| e.area).collect::<Vec<_>>())
    );

    // Layer-2 graph.
    let r = s.get(&format!("/node/{root}/lvl2_graph")).await;
    assert_eq!(r.header("used-bounds"), "False");
    let lib = g.l2_graph(root, None).await.expect("l2 graph");
    assert_eq!(r.ok()["edge_graph"], json!(lib));

    // Layer-2 chunk children, JSON and binary.
    let chunk = geo.chunk_of(l2s[0]);
    let r = s
        .get(&format!("/l2_chunk_children_binary/{chunk}?as_array=true"))
        .await;
    let flat = u64s(&r.body);
    assert!(!flat.is_empty() && flat.len().is_multiple_of(2));
    let mut by_l2: HashMap<u64, Vec<u64>> = HashMap::new();
    for p in flat.chunks(2) {
        by_l2.entry(p[0]).or_default().push(p[1]);
    }
    assert!(by_l2.contains_key(&l2s[0]));
    for (l2, mut svs) in by_l2 {
        assert_eq!(geo.chunk_of(l2), chunk);
        svs.sort_unstable();
        let mut lib = g.children(&[l2]).await.expect("children")[0].ids.clone();
        lib.sort_unstable();
        assert_eq!(svs, lib, "children of {l2}");
    }
    let r = s
        .get(&format!("/l2_chunk_children/{chunk}?as_array=1"))
        .await
        .ok();
    assert_eq!(ids_of(&r["l2_chunk_children"]), flat);

    // Version questions.
    let r = s
        .post("/is_latest_roots", json!({ "node_ids": roots }).to_string())
        .await
        .ok();
    assert_eq!(r["is_latest"], json!(vec![true; roots.len()]));
    let created = g.node_timestamps(&roots).await.expect("timestamps");
    let r = s
        .post("/root_timestamps", json!({ "node_ids": roots }).to_string())
        .await
        .ok();
    let secs: Vec<i64> = r["timestamp"]
        .as_array()
        .expect("timestamps")
        .iter()
        .map(|t| (t.as_f64().expect("seconds") * 1e6).round() as i64)
        .collect();
    assert_eq!(secs, created);
    // A GET with a JSON body (caveclient's is_valid_nodes); 5 is no node of this graph.
    let r = send(
        s.http
            .get(s.server.url("/valid_nodes"))
            .body(json!({ "node_ids": [root, 5, svs[0]] }).to_string()),
    )
    .await
    .ok();
    assert_eq!(ids_of(&r["valid_roots"]), vec![root, svs[0]]);
    let r = s.get("/oldest_timestamp").await.ok();
    assert!(r["iso"].as_str().expect("iso").ends_with("+00:00"));
}

/// Two supervoxels of different objects in one chunk, near each other.
async fn neighbours_in_two_objects(s: &Setup) -> (usize, usize) {
    let roots = s.roots(&s.ids).await;
    cg_tests::neighbours_in_two_objects(&s.synth, &roots)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_through_http() {
    let s = setup().await;
    let g = &s.graph;
    let (i, j) = neighbours_in_two_objects(&s).await;
    let (a, b) = (s.ids[i], s.ids[j]);
    let before = s.roots(&[a, b]).await;
    assert_ne!(before[0], before[1]);
    let t0 = cg_bigtable::mutation::now_micros();

    // Merge, with the user from the header.
    let r = send(
        s.http
            .post(s.server.url("/merge?int64_as_str=1"))
            .header("X-User-Id", "tester")
            .body(json!([s.point_json(i), s.point_json(j)]).to_string()),
    )
    .await
    .ok();
    let op: u64 = r["operation_id"]
        .as_str()
        .expect("operation_id as a string")
        .parse()
        .expect("number");
    let new_roots = ids_of(&r["new_root_ids"]);
    let after = s.roots(&[a, b]).await;
    assert_eq!(after[0], after[1], "merged");
    assert_eq!(new_roots, vec![after[0]]);
    let (entry, status) = g.operation(op).await.expect("op-log entry");
    assert_eq!((entry.user.as_str(), status.as_str()), ("tester", "done"));

    // The old roots are no longer latest; latest timestamps say when they were replaced.
    let r = s
        .post(
            "/is_latest_roots",
            json!({ "node_ids": [before[0], after[0]] }).to_string(),
        )
        .await
        .ok();
    assert_eq!(r["is_latest"], json!([false, true]));
    let r = s
        .post(
            "/root_timestamps?latest=true",
            json!({ "node_ids": [before[0]] }).to_string(),
        )
        .await
        .ok();
    let replaced = (r["timestamp"][0].as_f64().expect("seconds") * 1e6).round() as i64;
    assert_eq!(replaced, entry.timestamp_micros);

    // Delta roots over the edit agree with the library.
    let t1 = cg_bigtable::mutation::now_micros() + 1000;
    let r = s
        .get(&format!(
            "/delta_roots?timestamp_past={}&timestamp_future={}",
            t0 as f64 / 1e6,
            t1 as f64 / 1e6
        ))
        .await
        .ok();
    let (new, old) = g.delta_roots(t0, t1).await.expect("delta roots");
    assert_eq!(ids_of(&r["new_roots"]), new);
    assert_eq!(ids_of(&r["old_roots"]), old);
    assert_eq!(new, vec![after[0]]);

    // Undo, then redo.
    let r = s
        .post("/undo", json!({ "operation_id": op }).to_string())
        .await
        .ok();
    let undone = s.roots(&[a, b]).await;
    assert_ne!(undone[0], undone[1], "undone");
    assert_eq!(
        {
            let mut v = ids_of(&r["new_root_ids"]);
            v.sort_unstable();
            v
        },
        {
            let mut v = undone.clone();
            v.sort_unstable();
            v
        }
    );
    s.post(
        "/redo",
        json!({ "operation_id": op.to_string() }).to_string(),
    )
    .await
    .ok();
    let redone = s.roots(&[a, b]).await;
    assert_eq!(redone[0], redone[1], "redone");

    // Split preview and split: the preview is the library's, and the split makes it.
    let roots = s.roots(&s.ids).await;
    let mut by_root: HashMap<u64, Vec<usize>> = HashMap::new();
    for (k, &r) in roots.iter().enumerate() {
        by_root.entry(r).or_default().push(k);
    }
    let mut candidates: Vec<(usize, usize)> = Vec::new();
    for members in by_root.values() {
        if members.len() < 8 {
            continue;
        }
        let sv = &s.synth.supervoxels;
        let neurites: HashSet<u32> = members.iter().map(|&k| sv[k].neurite).collect();
        if neurites.len() == 2 {
            let mut it = neurites.iter();
            let (na, nb) = (*it.next().expect("a"), *it.next().expect("b"));
            let side = |n: u32| -> Vec<usize> {
                members
                    .iter()
                    .copied()
                    .filter(|&k| sv[k].neurite == n)
                    .collect()
            };
            let (sa, sb) = (side(na), side(nb));
            candidates.push((sa[sa.len() / 2], sb[sb.len() / 2]));
        }
    }
    // The merged pair itself is a candidate too.
    candidates.push((i, j));
    let mut split_done = false;
    for (src, snk) in candidates {
        let lib = g
            .split_preview(&[s.point(src)], &[s.point(snk)], &EditOptions::default())
            .await;
        let body =
            json!({ "sources": [s.point_json(src)], "sinks": [s.point_json(snk)] }).to_string();
        let r = s.post("/graph/split_preview", body.clone()).await;
        let Ok(lib) = lib else {
            // The library refuses this cut: so must the server, with a reason.
            r.error(400);
            continue;
        };
        let v = r.ok();
        assert_eq!(v["illegal_split"], json!(false));
        assert_eq!(
            ids_of(&v["supervoxel_connected_components"][0]),
            lib.source_side
        );
        assert_eq!(
            ids_of(&v["supervoxel_connected_components"][1]),
            lib.sink_side
        );
        let r = s.post("/split", body).await.ok();
        let op: u64 = r["operation_id"].as_u64().expect("operation_id");
        let (entry, _) = g.operation(op).await.expect("op-log entry");
        assert_eq!(entry.user, "anonymous");
        assert_eq!(entry.removed_edges, lib.cut_edges);
        let sides = s.roots(&[s.ids[src], s.ids[snk]]).await;
        assert_ne!(sides[0], sides[1], "split");
        let mut new = ids_of(&r["new_root_ids"]);
        new.sort_unstable();
        assert!(new.contains(&sides[0]) && new.contains(&sides[1]));
        split_done = true;
        break;
    }
    assert!(split_done, "some split preview was accepted");

    // History of the merged object, against the library.
    let root = s.roots(&[a]).await[0];
    let lineage = g.lineage_graph(&[root], None, None).await.expect("lineage");
    assert!(
        lineage.edges.len() >= 2,
        "merge, undo and redo made a lineage"
    );
    let check_lineage = |v: &Value| {
        assert_eq!(v["directed"], json!(true));
        let nodes = v["nodes"].as_array().expect("nodes");
        assert_eq!(nodes.len(), lineage.nodes.len());
        for (n, lib) in nodes.iter().zip(&lineage.nodes) {
            assert_eq!(n["id"], json!(lib.id));
            assert_eq!(
                (n["timestamp"].as_f64().expect("seconds") * 1e6).round() as i64,
                lib.timestamp_micros
            );
            assert_eq!(
                n.get("operation_id").and_then(Value::as_u64),
                lib.superseded_by
            );
        }
        let links: Vec<(u64, u64)> = v["links"]
            .as_array()
            .expect("links")
            .iter()
            .map(|l| {
                (
                    l["source"].as_u64().expect("source"),
                    l["target"].as_u64().expect("target"),
                )
            })
            .collect();
        let lib_links: Vec<(u64, u64)> =
            lineage.edges.iter().map(|e| (e.source, e.target)).collect();
        assert_eq!(links, lib_links);
    };
    check_lineage(&s.get(&format!("/root/{root}/lineage_graph")).await.ok());
    check_lineage(
        &s.post(
            "/lineage_graph_multiple",
            json!({ "root_ids": [root] }).to_string(),
        )
        .await
        .ok(),
    );

    for filtered in [false, true] {
        let lib = g
            .change_log_with(root, None, filtered)
            .await
            .expect("change log");
        let v = s
            .get(&format!("/root/{root}/change_log?filtered={filtered}"))
            .await
            .ok();
        assert_eq!(v["n_mergers"], json!(lib.n_mergers));
        assert_eq!(v["n_splits"], json!(lib.n_splits));
        assert_eq!(ids_of(&v["operations_ids"]), lib.operation_ids);
        assert_eq!(ids_of(&v["past_ids"]), lib.past_ids);
    }
    let rows = g.tabular_change_log(root).await.expect("tabular");
    assert!(!rows.is_empty());
    let table = s
        .get(&format!("/root/{root}/tabular_change_log?filtered=false"))
        .await
        .ok();
    let ops: Vec<u64> = (0..rows.len())
        .map(|k| table["operation_id"][k.to_string()].as_u64().expect("op"))
        .collect();
    assert_eq!(ops, rows.iter().map(|r| r.operation_id).collect::<Vec<_>>());
    assert_eq!(
        table["timestamp"]["0"].as_i64(),
        Some(rows[0].timestamp_micros / 1000)
    );
    let many = send(
        s.http
            .get(s.server.url("/tabular_change_log_many?filtered=false"))
            .body(json!({ "root_ids": [root] }).to_string()),
    )
    .await
    .ok();
    let inner: Value =
        serde_json::from_str(many[root.to_string()].as_str().expect("a JSON string"))
            .expect("json");
    assert_eq!(inner, table);

    let merges = g.merge_log(root).await.expect("merge log");
    let v = s.get(&format!("/root/{root}/merge_log")).await.ok();
    let edges: Vec<Vec<Vec<u64>>> =
        serde_json::from_value(v["merge_edges"].clone()).expect("edges");
    assert_eq!(
        edges,
        merges
            .iter()
            .map(|m| m.added_edges.iter().map(|e| e.to_vec()).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    );

    let lib = g.past_id_mapping(&[root], None).await.expect("past ids");
    let v = send(
        s.http
            .get(s.server.url("/past_id_mapping"))
            .body(json!({ "root_ids": [root] }).to_string()),
    )
    .await
    .ok();
    assert_eq!(
        ids_of(&v["past_id_map"][root.to_string()]),
        lib.past_id_map[&root]
    );
    assert_eq!(
        v["future_id_map"].as_object().expect("map").len(),
        lib.future_id_map.len()
    );

    let v = s
        .get(&format!("/operation_details?operation_ids=[{op}]"))
        .await
        .ok();
    assert_eq!(v[op.to_string()]["user"], json!("tester"));
    assert_eq!(ids_of(&v[op.to_string()]["roots"]), new_roots);
    assert_eq!(v[op.to_string()]["added_edges"], json!(entry.added_edges));
    let lib = g
        .user_operations(Some("tester"), 0, i64::MAX / 2, false)
        .await
        .expect("user operations");
    let v = s.get("/user_operations?user_id=tester").await.ok();
    let listed: Vec<u64> = (0..lib.len())
        .map(|k| v["operation_id"][k.to_string()].as_u64().expect("op"))
        .collect();
    assert_eq!(
        listed,
        lib.iter().map(|e| e.operation_id).collect::<Vec<_>>()
    );
    assert!(listed.contains(&op), "the redone merge counts");
    let made = g.last_edit(root).await.expect("last edit");
    let v = s
        .get(&format!("/root/{root}/last_edit?delimiter=T"))
        .await
        .ok();
    let iso = v["iso"].as_str().expect("iso");
    assert!(iso.contains('T') && iso.ends_with("+00:00"), "{iso}");
    assert_eq!(
        made,
        lineage.node(root).expect("root node").timestamp_micros
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_and_bad_input() {
    let mut s = setup().await;
    let (svs, roots) = sample(&s).await;
    let root = roots[0];

    // gzip out: same bytes once decompressed.
    let plain = s.get(&format!("/node/{root}/leaves")).await;
    let zipped = send(
        s.http
            .get(s.server.url(&format!("/node/{root}/leaves")))
            .header("Accept-Encoding", "gzip"),
    )
    .await;
    assert_eq!(zipped.header("content-encoding"), "gzip");
    assert_eq!(gunzip(&zipped.body), plain.body);
    // gzip in: a compressed binary body.
    let r = send(
        s.http
            .post(s.server.url("/roots_binary"))
            .header("Content-Encoding", "gzip")
            .body(gzip(&le_bytes(&svs))),
    )
    .await;
    assert_eq!(u64s(&r.body), s.roots(&svs).await);

    // CORS on answers and errors; preflight and bare OPTIONS.
    let r = send(
        s.http
            .get(s.server.url(&format!("/node/{root}/children")))
            .header("Origin", "https://neuroglancer.example"),
    )
    .await;
    assert_eq!(r.header("access-control-allow-origin"), "*");
    assert!(r
        .header("access-control-expose-headers")
        .to_lowercase()
        .contains("content-range"));
    let r = send(
        s.http
            .request(reqwest::Method::OPTIONS, s.server.url("/roots"))
            .header("Origin", "https://neuroglancer.example")
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization,content-type",
            ),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), "*");
    assert!(r
        .header("access-control-allow-headers")
        .contains("authorization"));
    let r = send(
        s.http
            .request(reqwest::Method::OPTIONS, s.server.url("/merge")),
    )
    .await;
    assert_eq!(r.status, 200);

    // Bad input: JSON errors naming the problem, nothing written, server up.
    let before = s.dump().await;
    let (i, j) = neighbours_in_two_objects(&s).await;
    let all_roots = s.roots(&s.ids).await;
    let same = (0..s.ids.len()).find(|&k| k != i && all_roots[k] == all_roots[i]);
    let cases: Vec<(Answer, u16, &str)> = vec![
        (s.post("/merge", "{not json").await, 400, "malformed JSON"),
        (s.post("/merge", "").await, 400, "JSON body"),
        (
            s.post("/merge", json!([s.point_json(i)]).to_string()).await,
            400,
            "two points",
        ),
        (
            s.post(
                "/merge",
                json!([["banana", 1, 2, 3], s.point_json(j)]).to_string(),
            )
            .await,
            400,
            "not a node ID",
        ),
        (
            s.post(
                "/merge",
                json!([[s.ids[i], -5.0e9, 1, 1], s.point_json(j)]).to_string(),
            )
            .await,
            400,
            "outside the volume",
        ),
        (
            s.post(
                "/merge",
                json!([[root.to_string(), 1, 1, 1], s.point_json(j)]).to_string(),
            )
            .await,
            400,
            "supervoxel",
        ),
        (
            s.post("/roots", json!({ "node_ids": "x" }).to_string())
                .await,
            400,
            "list of IDs",
        ),
        (
            s.post("/roots", json!({ "ids": [1] }).to_string()).await,
            400,
            "node_ids",
        ),
        (
            s.post("/roots_binary", vec![1u8; 12]).await,
            400,
            "multiple of 8",
        ),
        (
            s.post("/undo", json!({ "operation_id": 987654 }).to_string())
                .await,
            404,
            "does not exist",
        ),
        (
            s.get(&format!("/node/{}/children", root + 1_000_000)).await,
            404,
            "does not exist",
        ),
        (s.get("/node/12abc/root").await, 400, "not a node ID"),
        (
            s.get(&format!("/node/{}/root?stop_layer=99", svs[0])).await,
            400,
            "stop_layer",
        ),
        (
            s.get(&format!("/node/{}/root?timestamp=yesterday", svs[0]))
                .await,
            400,
            "timestamp",
        ),
        (
            s.get(&format!("/node/{root}/leaves?bounds=1-2_3")).await,
            400,
            "bounds",
        ),
        (
            s.get(&format!(
                "/l2_chunk_children/{}",
                s.graph.geometry().chunk_of(root)
            ))
            .await,
            400,
            "level 2",
        ),
        (s.get("/delta_roots").await, 400, "timestamp_past"),
        (
            s.post("/roots_binary", vec![0u8; 33 << 20]).await,
            413,
            "limit",
        ),
        (
            send(
                s.http
                    .post(s.server.url("/roots"))
                    .header("Content-Encoding", "gzip")
                    .body("not gzip at all"),
            )
            .await,
            400,
            "body",
        ),
        (s.get("/no_such_route").await, 404, "no route"),
        (
            send(s.http.delete(s.server.url("/roots"))).await,
            405,
            "DELETE",
        ),
        (
            send(
                s.http
                    .get(format!("{}/segmentation/table/nope/info", s.server.base)),
            )
            .await,
            404,
            "nope",
        ),
    ];
    for (k, (answer, status, needle)) in cases.iter().enumerate() {
        let msg = answer.error(*status);
        assert!(
            msg.contains(needle),
            "case {k}: {msg:?} does not mention {needle:?}"
        );
    }
    // A merge of one object with itself is refused too.
    if let Some(k) = same {
        let msg = s
            .post(
                "/merge",
                json!([s.point_json(i), s.point_json(k)]).to_string(),
            )
            .await
            .error(400);
        assert!(msg.contains("already"), "{msg}");
    }
    assert!(s.server.alive(), "the server is still running");
    assert_eq!(s.dump().await, before, "bad requests wrote nothing");
    let r = s.get(&format!("/node/{}/root", svs[0])).await.ok();
    assert_eq!(
        r["root_id"],
        json!(s.roots(&svs[..1]).await[0]),
        "and still answers"
    );

    // An edit on a root another edit holds locked: 503 with Retry-After, which caveclient
    // retries. (The other edit "died" holding its locks.)
    let crash = EditOptions {
        crash_before_plan: true,
        ..Default::default()
    };
    s.graph
        .merge("crashed", s.point(i), s.point(j), &crash)
        .await
        .expect_err("crashed");
    let r = s
        .post(
            "/merge",
            json!([s.point_json(i), s.point_json(j)]).to_string(),
        )
        .await;
    let msg = r.error(503);
    assert!(msg.contains("lock"), "{msg}");
    assert_eq!(r.header("retry-after"), "1");
}

/// Neuroglancer's graphene source (2.41.2) fails to open the whole layer when the info names
/// a mesh directory whose `info` is missing (the 404 there becomes "Expected JSON object"):
/// the info names `mesh` only once the mesh directory has its info.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_names_the_mesh_directory_only_once_meshes_exist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let emulator = EmulatorProcess::ours(&dir.path().join("bigtable"), &[]);
    let seg = dir.path().join("segmentation");
    let env = [("BIGTABLE_EMULATOR_HOST", emulator.addr.to_string())];
    cg_tests::ingest_synthetic(
        TABLE,
        500,
        SEED,
        &["--segmentation-dir", seg.to_str().expect("utf-8 path")],
        &env,
    );
    let server = cg_tests::ServeProcess::start(&[], &env);
    let http = reqwest::Client::new();
    let info = || async {
        let r = http
            .get(format!("{}/segmentation/table/{TABLE}/info", server.base))
            .send()
            .await
            .expect("info");
        assert_eq!(r.status(), 200);
        serde_json::from_slice::<Value>(&r.bytes().await.expect("info body")).expect("info JSON")
    };
    let before = info().await;
    assert!(
        before["data_dir"]
            .as_str()
            .is_some_and(|d| d.ends_with("/data")),
        "{before}"
    );
    assert!(
        before.get("mesh").is_none(),
        "mesh named without meshes: {before}"
    );

    // What `chunkedgraph mesh` leaves: the mesh directory with its info.
    std::fs::create_dir_all(seg.join("graphene_meshes")).expect("mesh dir");
    std::fs::write(
        seg.join("graphene_meshes").join("info"),
        r#"{"@type": "neuroglancer_legacy_mesh"}"#,
    )
    .expect("mesh info");
    let after = info().await;
    assert_eq!(after["mesh"], "graphene_meshes");
    let mesh_info = http
        .get(format!(
            "{}/{}/info",
            after["data_dir"].as_str().expect("data_dir"),
            after["mesh"].as_str().expect("mesh")
        ))
        .send()
        .await
        .expect("mesh info");
    assert_eq!(mesh_info.status(), 200);
}
