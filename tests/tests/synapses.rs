//! Synapses end to end: a synthetic graph and its supervoxel volume (`chunkedgraph ingest
//! --synthetic --segmentation-dir`), a synapse CSV in nm loaded with `chunkedgraph synapses
//! ingest` (points mapped through the volume), then `chunkedgraph serve`'s synapse routes
//! checked against a brute-force join: each point's supervoxel from the generator's own
//! segmentation, then its root at T from the library. After a merge through the server the
//! answers change at once, and the old timestamp still gives the old ones.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Command;

use cg_bigtable::{Config, Target};
use cg_graph::query::RootQuery;
use cg_graph::synthetic::SyntheticGraph;
use cg_graph::ChunkedGraph;
use cg_synapse::{Direction, MappedSynapse, SynapseStore};
use cg_tests::grpc_api as pb;
use cg_tests::grpc_api::chunked_graph_client::ChunkedGraphClient;
use cg_tests::{chunkedgraph_bin, EmulatorProcess, ServeProcess};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const TABLE: &str = "syn";

struct Syn {
    id: u64,
    pre_sv: u64,
    post_sv: u64,
}

/// The supervoxel under a voxel, from the generator (not the stored volume).
struct Labels<'a> {
    synth: &'a SyntheticGraph,
    geometry: cg_ids::Geometry,
    chunks: HashMap<[u32; 3], Vec<u64>>,
}

impl Labels<'_> {
    fn at(&mut self, p: [u32; 3]) -> u64 {
        let cs = self.synth.params.chunk_size;
        let c = [p[0] / cs[0], p[1] / cs[1], p[2] / cs[2]];
        let (synth, geometry) = (self.synth, &self.geometry);
        let labels = self
            .chunks
            .entry(c)
            .or_insert_with(|| synth.segmentation_of_chunk(geometry, c).expect("chunk"));
        let l = [p[0] % cs[0], p[1] % cs[1], p[2] % cs[2]];
        labels[(l[0] + cs[0] * (l[1] + cs[1] * l[2])) as usize]
    }
}

/// The brute-force join: each synapse's `[id, pre_sv, post_sv]` with its supervoxels' roots
/// at `t` appended.
async fn joined_at(graph: &ChunkedGraph, rows: &[[u64; 3]], t: i64) -> Vec<[u64; 5]> {
    let svs: Vec<u64> = rows.iter().flat_map(|r| [r[1], r[2]]).collect();
    let roots = graph
        .roots(
            &svs,
            &RootQuery {
                at: Some(t),
                ..Default::default()
            },
        )
        .await
        .expect("roots");
    rows.iter()
        .zip(roots.chunks(2))
        .map(|(&[id, a, b], r)| [id, a, b, r[0], r[1]])
        .collect()
}

/// (id, pre_sv, post_sv, pre_root, post_root) rows of a CSV answer, by header names.
fn csv_rows(text: &str) -> BTreeSet<[u64; 5]> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
    };
    let ix = [
        col("id"),
        col("pre_pt_supervoxel_id"),
        col("post_pt_supervoxel_id"),
        col("pre_pt_root_id"),
        col("post_pt_root_id"),
    ];
    let mut out = BTreeSet::new();
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        assert_eq!(f.len(), header.len(), "{l}");
        assert!(out.insert(ix.map(|i| f[i].parse::<u64>().expect("number"))));
    }
    out
}

async fn get(http: &reqwest::Client, url: String) -> (u16, String) {
    let r = http.get(url).send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_queries_match_a_brute_force_join_and_follow_edits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let emulator = EmulatorProcess::ours(&dir.path().join("bt"), &[]);
    let host = ("BIGTABLE_EMULATOR_HOST", emulator.addr.to_string());
    let seg = dir.path().join("segmentation");
    let seg_arg = seg.display().to_string();
    let cg_tests::Ingested { synth, ids } = cg_tests::ingest_synthetic(
        TABLE,
        3000,
        11,
        &["--segmentation-dir", &seg_arg],
        std::slice::from_ref(&host),
    );
    let geometry = synth.geometry().expect("geometry");
    let size = synth.volume_size();

    // Synapses at random voxels, in nm (voxel centres; the synthetic voxel is 1 nm).
    let mut labels = Labels {
        synth: &synth,
        geometry: geometry.clone(),
        chunks: HashMap::new(),
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut csv = String::from("id,pre_pt_position,post_pt_position,size,score\n");
    let mut syn = Vec::new();
    for k in 0..3000u64 {
        let mut voxel = || [0, 1, 2].map(|d| rng.random_range(0..size[d]));
        let (a, b) = (voxel(), voxel());
        let nm = |p: [u32; 3]| p.map(|v| f64::from(v) + 0.5);
        let (pa, pb) = (nm(a), nm(b));
        csv.push_str(&format!(
            "{},\"[{}, {}, {}]\",\"[{}, {}, {}]\",{},0.5\n",
            1000 + k,
            pa[0],
            pa[1],
            pa[2],
            pb[0],
            pb[1],
            pb[2],
            k % 97
        ));
        let (sa, sb) = (labels.at(a), labels.at(b));
        if sa != 0 && sb != 0 {
            syn.push(Syn {
                id: 1000 + k,
                pre_sv: sa,
                post_sv: sb,
            });
        }
    }
    let csv_path = dir.path().join("synapses.csv");
    std::fs::write(&csv_path, csv).expect("csv");
    let out = Command::new(chunkedgraph_bin())
        .args(["synapses", "ingest", "--table", TABLE, "--units", "nm"])
        .arg("--csv")
        .arg(&csv_path)
        .env(host.0, &host.1)
        .env("RUST_LOG", "warn")
        .output()
        .expect("chunkedgraph synapses ingest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("stored {} synapses", syn.len())),
        "{stdout}"
    );

    let client = Config::new(Target::Emulator(host.1.clone()))
        .connect()
        .await
        .expect("connect");
    let graph = ChunkedGraph::open(client, TABLE).await.expect("open");
    let server = ServeProcess::start(&[], std::slice::from_ref(&host));
    let http = reqwest::Client::new();

    // The brute force: roots of every synapse's supervoxels at t.
    let rows: Vec<[u64; 3]> = syn.iter().map(|s| [s.id, s.pre_sv, s.post_sv]).collect();
    let brute = |t: i64| joined_at(&graph, &rows, t);
    let of_root = |all: &[[u64; 5]], r: u64, dir: &str| -> BTreeSet<[u64; 5]> {
        all.iter()
            .filter(|x| match dir {
                "output" => x[3] == r,
                "input" => x[4] == r,
                _ => x[3] == r || x[4] == r,
            })
            .copied()
            .collect()
    };
    let secs = |t: i64| t as f64 / 1e6;
    let t0 = cg_bigtable::mutation::now_micros();
    let all = brute(t0).await;
    let mut per_root: BTreeMap<u64, usize> = BTreeMap::new();
    for x in &all {
        *per_root.entry(x[3]).or_default() += 1;
        *per_root.entry(x[4]).or_default() += 1;
    }
    let mut busiest: Vec<(usize, u64)> = per_root.iter().map(|(&r, &n)| (n, r)).collect();
    busiest.sort_unstable_by(|a, b| b.cmp(a));
    let roots: Vec<u64> = busiest.iter().take(6).map(|x| x.1).collect();
    let synapses = |r: u64, dir: &str, t: i64, extra: &str| {
        server.url(
            TABLE,
            &format!(
                "/root/{r}/synapses?format=csv&direction={dir}&timestamp={}{extra}",
                secs(t)
            ),
        )
    };
    for &r in &roots {
        for dir in ["output", "input", "both"] {
            let (status, body) = get(&http, synapses(r, dir, t0, "")).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(csv_rows(&body), of_root(&all, r, dir), "root {r} {dir}");
        }
    }
    // JSON says the same, and pages of the CSV add up to the whole.
    let r = roots[0];
    let (_, body) = get(
        &http,
        server.url(TABLE, &format!("/root/{r}/synapses?timestamp={}", secs(t0))),
    )
    .await;
    let v: Value = serde_json::from_str(&body).expect("json");
    let from_json: BTreeSet<[u64; 5]> = v
        .as_array()
        .expect("records")
        .iter()
        .map(|x| {
            [
                "id",
                "pre_pt_supervoxel_id",
                "post_pt_supervoxel_id",
                "pre_pt_root_id",
                "post_pt_root_id",
            ]
            .map(|k| x[k].as_u64().expect("id"))
        })
        .collect();
    assert_eq!(from_json, of_root(&all, r, "both"));
    let first = &v[0]["pre_pt_position"];
    assert!(first.as_array().is_some_and(|a| a.len() == 3), "{first}");
    let mut paged = BTreeSet::new();
    for offset in (0..from_json.len() + 7).step_by(7) {
        let (_, body) = get(
            &http,
            synapses(r, "both", t0, &format!("&offset={offset}&limit=7")),
        )
        .await;
        paged.extend(csv_rows(&body));
    }
    assert_eq!(paged, from_json);

    // Connectivity among the busiest roots, and ranked partners.
    let matrix = |t: i64, set: &[u64]| {
        let http = http.clone();
        let url = server.url(
            TABLE,
            &format!("/synapses/connectivity?timestamp={}", secs(t)),
        );
        let body = json!({ "root_ids": set.iter().map(|r| r.to_string()).collect::<Vec<_>>() });
        async move {
            let r = http
                .post(url)
                .body(body.to_string())
                .send()
                .await
                .expect("post");
            assert_eq!(r.status().as_u16(), 200);
            let v: Value = serde_json::from_str(&r.text().await.expect("body")).expect("json");
            v["counts"].clone()
        }
    };
    let want_matrix = |all: &[[u64; 5]], set: &[u64]| -> Value {
        json!(set
            .iter()
            .map(|&a| set
                .iter()
                .map(|&b| all.iter().filter(|x| x[3] == a && x[4] == b).count())
                .collect::<Vec<_>>())
            .collect::<Vec<_>>())
    };
    assert_eq!(matrix(t0, &roots).await, want_matrix(&all, &roots));
    let (status, body) = get(
        &http,
        server.url(
            TABLE,
            &format!(
                "/root/{r}/synaptic_partners?format=csv&timestamp={}",
                secs(t0)
            ),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut want: BTreeMap<u64, usize> = BTreeMap::new();
    for x in of_root(&all, r, "both") {
        let other = if x[3] == r { x[4] } else { x[3] };
        *want.entry(other).or_default() += 1;
    }
    let got: BTreeMap<u64, usize> = body
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<u64> = l.split(',').map(|v| v.parse().expect("number")).collect();
            (f[0], f[1] as usize)
        })
        .collect();
    assert_eq!(got, want);

    // gRPC answers the same: the synapses in small batches, the matrix, the partners.
    let mut rpc = ChunkedGraphClient::connect(server.grpc.clone().expect("gRPC address"))
        .await
        .expect("gRPC connect");
    let request = |direction: i32| pb::RootSynapsesRequest {
        table: TABLE.into(),
        root_id: r,
        timestamp_micros: t0,
        direction,
        batch_size: 5,
    };
    let mut stream = rpc
        .root_synapses(request(0))
        .await
        .expect("RootSynapses")
        .into_inner();
    let mut from_grpc = BTreeSet::new();
    while let Some(b) = stream.message().await.expect("batch") {
        assert!(b.ids.len() <= 5 && b.pre_positions.len() == 3 * b.ids.len());
        for k in 0..b.ids.len() {
            from_grpc.insert([
                b.ids[k],
                b.pre_supervoxel_ids[k],
                b.post_supervoxel_ids[k],
                b.pre_root_ids[k],
                b.post_root_ids[k],
            ]);
        }
    }
    assert_eq!(from_grpc, from_json);
    let c = rpc
        .connectivity(pb::ConnectivityRequest {
            table: TABLE.into(),
            root_ids: roots.clone(),
            timestamp_micros: t0,
        })
        .await
        .expect("Connectivity")
        .into_inner();
    let flat: Vec<u64> = want_matrix(&all, &roots)
        .as_array()
        .expect("rows")
        .iter()
        .flat_map(|row| {
            row.as_array()
                .expect("row")
                .iter()
                .map(|v| v.as_u64().expect("n"))
        })
        .collect();
    assert_eq!(c.counts, flat);
    let p = rpc
        .synaptic_partners(pb::SynapticPartnersRequest {
            table: TABLE.into(),
            root_id: r,
            timestamp_micros: t0,
            direction: 0,
        })
        .await
        .expect("SynapticPartners")
        .into_inner();
    let got: BTreeMap<u64, usize> = p
        .partners
        .iter()
        .map(|x| (x.root_id, (x.outputs + x.inputs) as usize))
        .collect();
    assert_eq!(got, want);
    let err = rpc
        .root_synapses(request(7))
        .await
        .expect_err("direction 7");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");

    // Merge two of the busiest objects through the server, at neighbouring supervoxels.
    let now_roots = graph
        .roots(&ids, &RootQuery::default())
        .await
        .expect("roots");
    let (i, j) = (0..ids.len())
        .flat_map(|i| ((i + 1)..ids.len().min(i + 400)).map(move |j| (i, j)))
        .find(|&(i, j)| {
            now_roots[i] != now_roots[j]
                && roots.contains(&now_roots[i])
                && roots.contains(&now_roots[j])
                && synth.supervoxels[i].chunk == synth.supervoxels[j].chunk
        })
        .unwrap_or_else(|| cg_tests::neighbours_in_two_objects(&synth, &now_roots));
    let point = |k: usize| {
        let p = synth.supervoxels[k].position;
        json!([ids[k].to_string(), p[0], p[1], p[2]])
    };
    let r = http
        .post(server.url(TABLE, "/merge"))
        .body(json!([point(i), point(j)]).to_string())
        .send()
        .await
        .expect("merge");
    assert_eq!(r.status().as_u16(), 200);
    let merged: Value = serde_json::from_str(&r.text().await.expect("body")).expect("json");
    let new_root = merged["new_root_ids"][0].as_u64().expect("new root");
    let (a, b) = (now_roots[i], now_roots[j]);
    let t1 = cg_bigtable::mutation::now_micros();
    let after = brute(t1).await;
    // At once: the new root's synapses are both objects', with today's roots.
    let (status, body) = get(&http, synapses(new_root, "both", t1, "")).await;
    assert_eq!(status, 200, "{body}");
    let got = csv_rows(&body);
    assert_eq!(got, of_root(&after, new_root, "both"));
    let ids_of = |s: &BTreeSet<[u64; 5]>| s.iter().map(|x| x[0]).collect::<BTreeSet<u64>>();
    let union: BTreeSet<u64> = ids_of(&of_root(&all, a, "both"))
        .union(&ids_of(&of_root(&all, b, "both")))
        .copied()
        .collect();
    assert_eq!(ids_of(&got), union);
    let mut now_set: Vec<u64> = roots
        .iter()
        .copied()
        .filter(|x| *x != a && *x != b)
        .collect();
    now_set.push(new_root);
    assert_eq!(matrix(t1, &now_set).await, want_matrix(&after, &now_set));
    // The old root is gone now, with a clear error; at the old time, the old answers.
    let (status, body) = get(&http, synapses(a, "both", t1, "")).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains(&format!("belonged to root {new_root}")),
        "{body}"
    );
    let (_, body) = get(&http, synapses(a, "both", t0, "")).await;
    assert_eq!(csv_rows(&body), of_root(&all, a, "both"));
    assert_eq!(matrix(t0, &roots).await, want_matrix(&all, &roots));

    // Bad input: clear JSON errors.
    for (url, status, needle) in [
        (synapses(new_root, "sideways", t1, ""), 400, "direction"),
        (synapses(new_root, "both", t1, "&format=xml"), 400, "format"),
        (synapses(new_root, "both", t1, "&limit=x"), 400, "limit"),
        (server.url(TABLE, "/root/abc/synapses"), 400, "abc"),
        (
            server.url(TABLE, &format!("/root/{}/synapses", ids[0])),
            400,
            "is not a root",
        ),
        (
            server.url("nosuchtable", &format!("/root/{new_root}/synapses")),
            404,
            "nosuchtable",
        ),
        (server.url(TABLE, "/synapses/connectivity"), 400, "root_ids"),
        (
            server.url(
                TABLE,
                &format!("/synapses/connectivity?root_ids={new_root},{new_root}"),
            ),
            400,
            "listed twice",
        ),
    ] {
        let (s, body) = get(&http, url.clone()).await;
        assert_eq!(s, status, "{url}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{url}: {body}"));
        let msg = v["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{url}: {msg}");
    }
}

/// The library on Google's emulator: the synapse family added to an existing graph table,
/// written, and read back by the same queries, equal to the brute-force join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_store_on_googles_emulator() {
    let emulator = EmulatorProcess::google();
    let host = ("BIGTABLE_EMULATOR_HOST", emulator.addr.to_string());
    let cg_tests::Ingested { synth, ids } =
        cg_tests::ingest_synthetic("gsyn", 2000, 4, &[], std::slice::from_ref(&host));
    let client = Config::new(Target::Emulator(host.1.clone()))
        .connect()
        .await
        .expect("connect");
    let graph = ChunkedGraph::open(client, "gsyn").await.expect("open");
    let store = SynapseStore::new(graph.clone());
    store.prepare().await.expect("add the synapse family");
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let syn: Vec<MappedSynapse> = (1..=1500u64)
        .map(|id| {
            let (a, b) = (
                rng.random_range(0..ids.len()),
                rng.random_range(0..ids.len()),
            );
            let p = |i: usize| synth.supervoxels[i].position.map(|v| v as i32);
            MappedSynapse {
                id,
                pre_sv: ids[a],
                post_sv: ids[b],
                pre: p(a),
                post: p(b),
                size: 1,
                score: 0.5,
            }
        })
        .collect();
    store.write(&syn).await.expect("write");
    let t = cg_bigtable::mutation::now_micros();
    let rows: Vec<[u64; 3]> = syn.iter().map(|s| [s.id, s.pre_sv, s.post_sv]).collect();
    let all = joined_at(&graph, &rows, t).await;
    let mut count: BTreeMap<u64, usize> = BTreeMap::new();
    for x in &all {
        *count.entry(x[3]).or_default() += 1;
        *count.entry(x[4]).or_default() += 1;
    }
    let mut busiest: Vec<(usize, u64)> = count.into_iter().map(|(r, n)| (n, r)).collect();
    busiest.sort_unstable_by(|a, b| b.cmp(a));
    let set: Vec<u64> = busiest.iter().take(5).map(|x| x.1).collect();
    for &r in &set {
        let got: BTreeSet<[u64; 5]> = store
            .root_synapses(r, Some(t), Direction::Both)
            .await
            .expect("root synapses")
            .iter()
            .map(|s| [s.id, s.pre_sv, s.post_sv, s.pre_root, s.post_root])
            .collect();
        let want: BTreeSet<[u64; 5]> = all
            .iter()
            .filter(|x| x[3] == r || x[4] == r)
            .copied()
            .collect();
        assert!(!want.is_empty());
        assert_eq!(got, want, "root {r}");
    }
    let m = store.connectivity(&set, Some(t)).await.expect("matrix");
    for (i, a) in set.iter().enumerate() {
        for (j, b) in set.iter().enumerate() {
            let n = all.iter().filter(|x| x[3] == *a && x[4] == *b).count();
            assert_eq!(m.counts[i][j], n as u64, "{a} -> {b}");
        }
    }
}

/// `chunkedgraph synapses clefts`: a cleft drawn on the face between two supervoxels of the
/// synthetic volume becomes one synapse between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleft_volume_becomes_synapses() {
    use cg_volume::{Array, DataType, Encoding, Info, Scale, Store, Volume, VolumeType};
    let dir = tempfile::tempdir().expect("tempdir");
    let emulator = EmulatorProcess::ours(&dir.path().join("bt"), &[]);
    let host = ("BIGTABLE_EMULATOR_HOST", emulator.addr.to_string());
    let seg = dir.path().join("segmentation").display().to_string();
    let cg_tests::Ingested { synth, .. } = cg_tests::ingest_synthetic(
        "cleft",
        600,
        5,
        &["--segmentation-dir", &seg],
        std::slice::from_ref(&host),
    );
    let geometry = synth.geometry().expect("geometry");
    let cs = synth.params.chunk_size.map(|v| v as usize);
    let labels = synth
        .segmentation_of_chunk(&geometry, [0, 0, 0])
        .expect("labels");
    let at = |x: usize, y: usize, z: usize| labels[x + cs[0] * (y + cs[1] * z)];
    // A face x | x+1 with one supervoxel on each side over a 5x5 patch, two voxels deep.
    let (x, y, z) = (2..cs[0] - 3)
        .flat_map(|x| (2..cs[1] - 2).flat_map(move |y| (2..cs[2] - 2).map(move |z| (x, y, z))))
        .find(|&(x, y, z)| {
            let (a, b) = (at(x, y, z), at(x + 1, y, z));
            a != b
                && (y - 2..=y + 2).all(|yy| {
                    (z - 2..=z + 2).all(|zz| {
                        at(x - 1, yy, zz) == a
                            && at(x, yy, zz) == a
                            && at(x + 1, yy, zz) == b
                            && at(x + 2, yy, zz) == b
                    })
                })
        })
        .expect("a flat face between two supervoxels");
    let (a, b) = (at(x, y, z), at(x + 1, y, z));
    // The cleft: 3x3 on each side of the face, in a float32 volume over the same bounds.
    let size = geometry.volume_size;
    let info = Info::new(
        VolumeType::Image,
        DataType::F32,
        1,
        Scale::new(size, geometry.resolution, [64, 64, 64], Encoding::Raw),
    );
    let cleft_dir = dir.path().join("clefts");
    std::fs::create_dir_all(&cleft_dir).expect("mkdir");
    let url = format!("file://{}", cleft_dir.display());
    let vol = Volume::create(Store::open(&url).expect("store"), info)
        .await
        .expect("create");
    let mut patch = vec![0.0f32; 2 * 3 * 3];
    patch.iter_mut().for_each(|v| *v = 0.9);
    let arr = Array::new(vec![3, 3, 2], patch).expect("array");
    vol.write_box(0, [x as i64, y as i64 - 1, z as i64 - 1], &arr)
        .await
        .expect("write cleft");
    let out = Command::new(chunkedgraph_bin())
        .args(["synapses", "clefts", "--table", "cleft", "--cleft", &url])
        .args(["--min-voxels", "4", "--first-id", "500"])
        .env(host.0, &host.1)
        .env("RUST_LOG", "warn")
        .output()
        .expect("chunkedgraph synapses clefts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 clefts: 1 synapses stored"), "{stdout}");
    let client = Config::new(Target::Emulator(host.1.clone()))
        .connect()
        .await
        .expect("connect");
    let graph = ChunkedGraph::open(client, "cleft").await.expect("open");
    let root = graph.root(a, None).await.expect("root");
    let got = SynapseStore::new(graph)
        .root_synapses(root, None, Direction::Both)
        .await
        .expect("synapses");
    assert_eq!(got.len(), 1, "{got:?}");
    let s = got[0];
    // Equal votes and no polarity: the smaller supervoxel is taken as presynaptic.
    assert_eq!((s.id, s.pre_sv, s.post_sv), (501, a.min(b), a.max(b)));
    assert_eq!(s.size, 18);
}
