//! `chunkedgraph serve` operations: token auth (`--auth-config`), open mode, Prometheus
//! `/metrics`, `/healthz`, and `/openapi.json` against the router's real routes.
//!
//! Each test ingests a small synthetic graph into embedded storage with `chunkedgraph
//! ingest`, then serves it as a process and talks HTTP to it.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cg_graph::synthetic::SyntheticGraph;
use cg_tests::{chunkedgraph_bin, ServeProcess};
use serde_json::{json, Value};

const TABLE: &str = "g";
const SUPERVOXELS: usize = 1500;
const SEED: u64 = 11;

const EDITOR: &str = "editor-token-1";
const VIEWER: &str = "viewer-token-2";
const OUTSIDER: &str = "outsider-token-3";

/// Three users: an editor of every table (user ID given as a number), a viewer, and one
/// with rights on another table only.
const AUTH_TOML: &str = r#"
[[tokens]]
token = "editor-token-1"
user_id = 1001
name = "Eddie"
permissions = { "*" = "edit" }

[[tokens]]
token = "viewer-token-2"
user_id = "viewer"
permissions = { "*" = "view" }

[[tokens]]
token = "outsider-token-3"
user_id = "outsider"
permissions = { elsewhere = "admin" }
"#;

/// An ingested graph in a temporary data directory.
struct Graph {
    dir: tempfile::TempDir,
    synth: SyntheticGraph,
    ids: Vec<u64>,
}

impl Graph {
    fn ingest() -> Graph {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf-8 path");
        let cg_tests::Ingested { synth, ids } =
            cg_tests::ingest_synthetic(TABLE, SUPERVOXELS, SEED, &["--data-dir", data], &[]);
        Graph { dir, synth, ids }
    }

    fn data_dir(&self) -> &str {
        self.dir.path().to_str().expect("utf-8 temp path")
    }

    fn serve(&self, extra: &[&str]) -> ServeProcess {
        let mut args = vec!["--data-dir", self.data_dir()];
        args.extend_from_slice(extra);
        ServeProcess::start(&args, &[])
    }

    /// `[id, x, y, z]` with the ID as a string, as Neuroglancer sends it.
    fn point_json(&self, i: usize) -> Value {
        let p = self.synth.supervoxels[i].position;
        json!([self.ids[i].to_string(), p[0], p[1], p[2]])
    }
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: not JSON: {}", self.text()))
    }

    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }

    fn ok(&self) -> Value {
        assert_eq!(self.status, 200, "{}", self.text());
        self.json()
    }

    /// A JSON error `{"code", "message"}` with this status; returns the message.
    fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{}", self.text());
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

fn bearer(rb: reqwest::RequestBuilder, token: &str) -> reqwest::RequestBuilder {
    rb.header("Authorization", format!("Bearer {token}"))
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

/// Roots of all supervoxels over HTTP (with a token when given).
async fn roots(
    http: &reqwest::Client,
    server: &ServeProcess,
    ids: &[u64],
    token: Option<&str>,
) -> Vec<u64> {
    let mut rb = http
        .post(server.url(TABLE, "/roots"))
        .body(json!({ "node_ids": ids }).to_string());
    if let Some(t) = token {
        rb = bearer(rb, t);
    }
    ids_of(&send(rb).await.ok()["root_ids"])
}

/// Two supervoxels of different objects in one chunk, near each other (a merge the server
/// accepts).
fn neighbours_in_two_objects(g: &Graph, roots: &[u64]) -> (usize, usize) {
    cg_tests::neighbours_in_two_objects(&g.synth, roots)
}

/// The value of one sample of the Prometheus text format: `name{labels} value`, matching
/// the given labels exactly (label order does not matter).
fn sample_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: HashMap<&str, &str> = labels.iter().copied().collect();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
        if n != name {
            continue;
        }
        let inner = rest.strip_suffix('}').expect("closing brace");
        let mut got = HashMap::new();
        // Values here hold no commas or escaped quotes (route templates, methods, codes).
        for pair in inner.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').expect("label=value");
            got.insert(k, v.trim_matches('"'));
        }
        if got == want {
            return Some(value.parse().expect("sample value"));
        }
    }
    None
}

const ROOT_ROUTE: &str = "/segmentation/api/v1/table/{table}/node/{node}/root";
const MERGE_ROUTE: &str = "/segmentation/api/v1/table/{table}/merge";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_gate_reads_and_edits() {
    let g = Graph::ingest();
    let conf_dir = tempfile::tempdir().expect("tempdir");
    let conf = conf_dir.path().join("auth.toml");
    std::fs::write(&conf, AUTH_TOML).expect("writing auth config");
    let server = g.serve(&["--auth-config", conf.to_str().expect("utf-8")]);
    let http = reqwest::Client::new();
    let sv = g.ids[0];
    let root_url = server.url(TABLE, &format!("/node/{sv}/root"));

    // No token: 401 with the challenge and a message that says how to send one; CORS
    // headers still there so a browser can read it.
    let r = send(
        http.get(&root_url)
            .header("Origin", "https://neuroglancer.example"),
    )
    .await;
    let msg = r.error(401);
    assert!(msg.contains("middle_auth_token"), "{msg}");
    assert!(r.header("www-authenticate").starts_with("Bearer"));
    assert_eq!(r.header("access-control-allow-origin"), "*");
    // Unknown token, and a header that is not a bearer token.
    let r = send(bearer(http.get(&root_url), "no-such-token")).await;
    assert!(r.error(401).contains("unknown token"));
    assert!(r.header("www-authenticate").contains("invalid_token"));
    let r = send(
        http.get(&root_url)
            .header("Authorization", "Basic dXNlcjpwdw=="),
    )
    .await;
    assert!(r.error(400).contains("Bearer"));

    // The viewer's token works in the header, the cookie and the query parameter, and all
    // three give the same answer.
    let by_header = send(bearer(http.get(&root_url), VIEWER)).await.ok();
    let by_cookie = send(
        http.get(&root_url)
            .header("Cookie", format!("other=1; middle_auth_token={VIEWER}")),
    )
    .await
    .ok();
    let by_query = send(http.get(format!("{root_url}?middle_auth_token={VIEWER}")))
        .await
        .ok();
    assert!(by_header["root_id"].as_u64().is_some_and(|r| r != 0));
    assert_eq!(by_header, by_cookie);
    assert_eq!(by_header, by_query);

    // A token for another table only: 403 naming the table and the permission.
    let msg = send(bearer(http.get(&root_url), OUTSIDER)).await.error(403);
    assert!(
        msg.contains("view") && msg.contains(&format!("table {TABLE}")),
        "{msg}"
    );

    // Routes without a table need no token.
    let v = send(http.get(format!("{}/segmentation/api/versions", server.base)))
        .await
        .ok();
    assert_eq!(v, json!([0, 1]));
    let v = send(http.get(format!("{}/healthz", server.base)))
        .await
        .ok();
    assert_eq!(v, json!({ "status": "ok" }));
    // An unknown path is a 404, not a 401.
    send(http.get(format!("{}/nothing/here", server.base)))
        .await
        .error(404);

    // CORS preflight of an edit needs no token.
    let r = send(
        http.request(reqwest::Method::OPTIONS, server.url(TABLE, "/merge"))
            .header("Origin", "https://neuroglancer.example")
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization,content-type",
            ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("access-control-allow-origin"), "*");
    assert!(r
        .header("access-control-allow-headers")
        .contains("authorization"));

    // The viewer may not merge: 403 naming edit and the table, and nothing changes.
    let before = roots(&http, &server, &g.ids, Some(VIEWER)).await;
    let (i, j) = neighbours_in_two_objects(&g, &before);
    let merge_body = json!([g.point_json(i), g.point_json(j)]).to_string();
    let msg = send(bearer(
        http.post(server.url(TABLE, "/merge"))
            .body(merge_body.clone()),
        VIEWER,
    ))
    .await
    .error(403);
    assert!(
        msg.contains("edit") && msg.contains(&format!("table {TABLE}")) && msg.contains("viewer"),
        "{msg}"
    );
    assert_eq!(roots(&http, &server, &g.ids, Some(VIEWER)).await, before);
    // Without a token at all: 401, nothing changes either.
    send(
        http.post(server.url(TABLE, "/merge"))
            .body(merge_body.clone()),
    )
    .await
    .error(401);
    // A split preview only reads: the viewer is not refused for lack of a permission.
    let r = send(bearer(
        http.post(server.url(TABLE, "/graph/split_preview"))
            .body(json!({ "sources": [g.point_json(i)], "sinks": [g.point_json(j)] }).to_string()),
        VIEWER,
    ))
    .await;
    assert!(![401, 403].contains(&r.status), "{}", r.text());

    // The editor merges, with the token in the cookie and a forged user in the header and
    // the query: the op log records the token's user.
    let r = send(
        http.post(server.url(TABLE, "/merge?user_id=mallory"))
            .header("Cookie", format!("middle_auth_token={EDITOR}"))
            .header("X-User-Id", "mallory")
            .body(merge_body),
    )
    .await
    .ok();
    let op = r["operation_id"].as_u64().expect("operation_id");
    let after = roots(&http, &server, &g.ids, Some(EDITOR)).await;
    assert_eq!(after[i], after[j], "merged");
    assert_eq!(ids_of(&r["new_root_ids"]), vec![after[i]]);
    let v = send(bearer(
        http.get(server.url(TABLE, &format!("/operation_details?operation_ids=[{op}]"))),
        VIEWER,
    ))
    .await
    .ok();
    assert_eq!(v[op.to_string()]["user"], json!("1001"));
    let v = send(bearer(
        http.get(server.url(TABLE, "/user_operations?user_id=mallory")),
        VIEWER,
    ))
    .await
    .ok();
    assert_eq!(v["operation_id"], json!({}), "nothing recorded as mallory");
    // Undo by the editor is recorded under the editor too.
    let r = send(bearer(
        http.post(server.url(TABLE, "/undo"))
            .header("X-User-Id", "mallory")
            .body(json!({ "operation_id": op }).to_string()),
        EDITOR,
    ))
    .await
    .ok();
    let undo = r["operation_id"].as_u64().expect("operation_id");
    let v = send(bearer(
        http.get(server.url(TABLE, &format!("/operation_details?operation_ids=[{undo}]"))),
        VIEWER,
    ))
    .await
    .ok();
    assert_eq!(v[undo.to_string()]["user"], json!("1001"));
    let now = roots(&http, &server, &g.ids, Some(VIEWER)).await;
    assert_ne!(now[i], now[j], "the undo split them again");

    // Who am I, middle_auth style.
    let v = send(bearer(
        http.get(format!("{}/auth/api/v1/user/cache", server.base)),
        EDITOR,
    ))
    .await
    .ok();
    assert_eq!(v["id"], json!("1001"));
    assert_eq!(v["name"], json!("Eddie"));
    assert_eq!(v["permissions_v2"]["*"], json!(["view", "edit"]));
    send(http.get(format!("{}/auth/api/v1/user/cache", server.base)))
        .await
        .error(401);

    // The edit counter saw the refused merges and the accepted one.
    let text = send(http.get(format!("{}/metrics", server.base)))
        .await
        .text();
    let edits = |outcome: &str| {
        sample_value(
            &text,
            "chunkedgraph_edits_total",
            &[("kind", "merge"), ("outcome", outcome)],
        )
    };
    assert_eq!(edits("ok"), Some(1.0), "{text}");
    assert_eq!(edits("rejected"), Some(2.0), "{text}");
    assert_eq!(
        sample_value(
            &text,
            "chunkedgraph_http_requests_total",
            &[("method", "POST"), ("route", MERGE_ROUTE), ("code", "403")],
        ),
        Some(1.0)
    );
}

#[test]
fn bad_auth_configs_stop_the_server_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "typo.toml",
            "[[tokens]]\ntoken = \"t\"\nuser_id = \"u\"\npermissions = { \"*\" = \"write\" }\n",
            "\"write\"",
        ),
        ("broken.json", "{\"tokens\": [", "not valid JSON"),
        ("missing.toml", "", "no [[tokens]]"),
    ];
    for (name, text, expect) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        let out = Command::new(chunkedgraph_bin())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--auth-config")
            .arg(&path)
            .env_remove("BIGTABLE_EMULATOR_HOST")
            .env("RUST_LOG", "warn")
            .output()
            .expect("running chunkedgraph serve");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: started anyway");
        assert!(
            stderr.contains(expect) && stderr.contains(name),
            "{name}: {stderr}"
        );
    }
}

/// Starts `chunkedgraph serve` on `g` without auth, returns its base URL and its log up to
/// the moment it listens (read after killing it).
fn open_server_log(g: &Graph) -> String {
    let mut child = Command::new(chunkedgraph_bin())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--data-dir", g.data_dir()])
        .env_remove("BIGTABLE_EMULATOR_HOST")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting chunkedgraph serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    assert!(line.starts_with("chunkedgraph serving on "), "{line:?}");
    let _ = child.kill();
    let _ = child.wait();
    let mut log = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut log)
        .expect("reading the log");
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_mode_metrics_health_and_openapi() {
    let g = Graph::ingest();
    // Open mode says so at start-up.
    let log = open_server_log(&g);
    assert!(log.contains("open mode"), "{log}");

    let server = g.serve(&[]);
    let http = reqwest::Client::new();

    // Anyone reads and edits; the user comes from X-User-Id, then user_id, else anonymous.
    let before = roots(&http, &server, &g.ids, None).await;
    let (i, j) = neighbours_in_two_objects(&g, &before);
    let r = send(
        http.post(server.url(TABLE, "/merge"))
            .header("X-User-Id", "tester")
            .body(json!([g.point_json(i), g.point_json(j)]).to_string()),
    )
    .await
    .ok();
    let merge = r["operation_id"].as_u64().expect("operation_id");
    let r = send(
        http.post(server.url(TABLE, "/undo?user_id=param-user"))
            .body(json!({ "operation_id": merge }).to_string()),
    )
    .await
    .ok();
    let undo = r["operation_id"].as_u64().expect("operation_id");
    let r = send(
        http.post(server.url(TABLE, "/redo"))
            .body(json!({ "operation_id": merge }).to_string()),
    )
    .await
    .ok();
    let redo = r["operation_id"].as_u64().expect("operation_id");
    let v = send(http.get(server.url(
        TABLE,
        &format!("/operation_details?operation_ids=[{merge},{undo},{redo}]"),
    )))
    .await
    .ok();
    assert_eq!(v[merge.to_string()]["user"], json!("tester"));
    assert_eq!(v[undo.to_string()]["user"], json!("param-user"));
    assert_eq!(v[redo.to_string()]["user"], json!("anonymous"));
    let v = send(http.get(format!("{}/auth/api/v1/user/cache", server.base)))
        .await
        .ok();
    assert_eq!(v["id"], json!("anonymous"));

    // Health, with and without the storage check.
    let v = send(http.get(format!("{}/healthz", server.base)))
        .await
        .ok();
    assert_eq!(v, json!({ "status": "ok" }));
    let v = send(http.get(format!("{}/healthz?storage=true", server.base)))
        .await
        .ok();
    assert_eq!(v["storage"], json!("ok"));
    assert!(v["tables"].as_u64().is_some_and(|n| n >= 1), "{v}");
    assert!(
        send(http.get(format!("{}/healthz?storage=maybe", server.base)))
            .await
            .error(400)
            .contains("storage")
    );

    // The latency histogram of the root route counts exactly the requests made to it, by
    // status class, under the route template (not the raw path).
    for k in 0..3 {
        send(http.get(server.url(TABLE, &format!("/node/{}/root", g.ids[k]))))
            .await
            .ok();
    }
    send(http.get(server.url(TABLE, "/node/notanid/root")))
        .await
        .error(400);
    let m = send(http.get(format!("{}/metrics", server.base))).await;
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").starts_with("text/plain"));
    let text = m.text();
    let hist = |status: &str, suffix: &str, le: Option<&str>| {
        let mut labels = vec![("method", "GET"), ("route", ROOT_ROUTE), ("status", status)];
        if let Some(le) = le {
            labels.push(("le", le));
        }
        sample_value(
            &text,
            &format!("chunkedgraph_http_request_duration_seconds{suffix}"),
            &labels,
        )
    };
    assert_eq!(hist("2xx", "_count", None), Some(3.0), "{text}");
    assert_eq!(hist("2xx", "_bucket", Some("+Inf")), Some(3.0));
    assert!(hist("2xx", "_sum", None).is_some_and(|s| s > 0.0));
    assert_eq!(hist("4xx", "_count", None), Some(1.0));
    assert!(
        !text.contains("/node/notanid/root") && !text.contains(&g.ids[0].to_string()),
        "raw paths must not become labels"
    );
    assert_eq!(
        sample_value(
            &text,
            "chunkedgraph_edits_total",
            &[("kind", "merge"), ("outcome", "ok")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample_value(
            &text,
            "chunkedgraph_edits_total",
            &[("kind", "undo"), ("outcome", "ok")]
        ),
        Some(1.0)
    );

    // The API description lists exactly the router's routes and methods ...
    let doc = send(http.get(format!("{}/openapi.json", server.base)))
        .await
        .ok();
    assert_eq!(doc["openapi"], json!("3.0.3"));
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            let item = item.as_object().expect("path item");
            item.iter().map(move |(method, op)| {
                assert!(
                    op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                    "{method} {path} has no description"
                );
                assert!(op["parameters"].is_array(), "{method} {path}");
                for name in path
                    .split('/')
                    .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                {
                    assert!(
                        op["parameters"]
                            .as_array()
                            .expect("parameters")
                            .iter()
                            .any(|p| p["name"] == json!(name) && p["in"] == json!("path")),
                        "{method} {path}: path parameter {name} undocumented"
                    );
                }
                (path.clone(), method.to_ascii_uppercase())
            })
        })
        .collect();
    // OpenAPI has no rest-of-path parameters: axum's `{*name}` is documented as `{name}`.
    let routed: BTreeSet<(String, String)> = router_routes()
        .into_iter()
        .map(|(p, m)| (p.replace("{*", "{"), m))
        .collect();
    let missing: Vec<_> = routed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routed).collect();
    assert!(
        missing.is_empty(),
        "routes not in /openapi.json: {missing:?}"
    );
    assert!(extra.is_empty(), "documented but not routed: {extra:?}");

    // ... and each documented route and method really reaches a handler: no fallback 404
    // ("no route for") and no 405. Bodies are empty, so edits are refused before writing.
    let root = before[0];
    for (path, method) in &documented {
        let url = format!(
            "{}{}",
            server.base,
            path.replace("{table}", TABLE)
                .replace("{node}", &root.to_string())
                .replace("{root}", &root.to_string())
                .replace("{chunk}", &g.ids[0].to_string())
                .replace("{path}", "info")
        );
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let r = send(http.request(m, &url)).await;
        assert_ne!(r.status, 405, "{method} {path}: {}", r.text());
        assert!(
            !(r.status == 404 && r.text().contains("no route for")),
            "{method} {path}: {}",
            r.text()
        );
    }
}

/// Every `(path, method)` the router registers, read from the server's source: each
/// `.route(PATH, METHODS)` in `services/chunkedgraph/src/server/*.rs`, where PATH is a
/// string literal or `&v1("...")` (under `/segmentation/api/v1/table/{table}`).
fn router_routes() -> BTreeSet<(String, String)> {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("services/chunkedgraph/src/server");
    let mut out = BTreeSet::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    for file in files {
        let src = std::fs::read_to_string(&file).expect("source");
        let mut rest = src.as_str();
        while let Some(at) = rest.find(".route(") {
            let call = &rest[at + ".route(".len()..];
            // The call's text up to its closing parenthesis.
            let mut depth = 1usize;
            let mut end = call.len();
            for (k, c) in call.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = k;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let args = &call[..end];
            rest = &call[end..];
            let a = args.trim_start();
            let (path, after) = if let Some(s) = a.strip_prefix("&v1(\"") {
                let (p, tail) = s.split_once('"').expect("closing quote");
                (format!("/segmentation/api/v1/table/{{table}}{p}"), tail)
            } else if let Some(s) = a.strip_prefix('"') {
                let (p, tail) = s.split_once('"').expect("closing quote");
                (p.to_string(), tail)
            } else {
                panic!(
                    "{}: cannot read the path of .route({args}); extend router_routes()",
                    file.display()
                );
            };
            let mut methods = 0;
            for m in ["get", "post", "put", "delete", "patch"] {
                let needle = format!("{m}(");
                for (k, _) in after.match_indices(&needle) {
                    let prev = after[..k].chars().next_back();
                    if prev.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':')) {
                        out.insert((path.clone(), m.to_ascii_uppercase()));
                        methods += 1;
                    }
                }
            }
            assert!(
                methods > 0,
                "{}: no method in .route({args})",
                file.display()
            );
        }
    }
    assert!(out.len() > 30, "found only {} routes: {out:?}", out.len());
    out
}
