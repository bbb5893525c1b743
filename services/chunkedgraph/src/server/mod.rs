//! `chunkedgraph serve`: PyChunkedGraph's HTTP API (the `segmentation` routes that
//! Neuroglancer, caveclient and cloud-volume use) over our graphs.
//!
//! Tables are opened by name on first use and cached; opening one finishes any edit that a
//! crash cut off. Every answer carries CORS headers, gzip goes both ways, and every error is
//! JSON `{"code", "message"}`.

mod auth;
mod body;
mod data;
mod edits;
mod error;
mod graphs;
mod history;
mod lookups;
mod meshing;
mod metrics;
mod openapi;
mod synapses;
mod versions;

use std::collections::HashMap;
use std::future::IntoFuture;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use cg_graph::edit::EditOptions;
use cg_graph::ChunkedGraph;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};
use tower_http::decompression::RequestDecompressionLayer;

use crate::storage::StorageArgs;
use error::{error_response, ApiError, ApiResult};

#[derive(clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    storage: StorageArgs,
    /// Token authentication: a TOML (or `.json`) file of tokens, their users and per-table
    /// permissions (see the README). Without it the server is open: anyone may read and edit.
    #[arg(long, value_name = "FILE")]
    auth_config: Option<std::path::PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Address of the gRPC API (`proto/chunkedgraph.proto`), or `off`. Default: the host of
    /// `--listen`, port + 1 (127.0.0.1:8001; an ephemeral port when `--listen` has port 0);
    /// off with `--auth-config`, since gRPC has no token authentication yet.
    #[arg(long, value_name = "ADDR")]
    grpc_listen: Option<String>,
}

impl ServeArgs {
    /// Where to serve gRPC; `None` when it is off.
    fn grpc_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        // An open gRPC port next to an authenticated HTTP API would bypass the tokens.
        let authenticated = self.auth_config.is_some();
        match self.grpc_listen.as_deref() {
            Some("off") => Ok(None),
            Some(_) if authenticated => anyhow::bail!(
                "--grpc-listen with --auth-config: the gRPC API has no token authentication \
                 yet, so it would let anyone read and edit; drop one of the two"
            ),
            None if authenticated => {
                tracing::warn!("gRPC is off: it has no token authentication yet");
                Ok(None)
            }
            Some(a) => a
                .parse()
                .map(Some)
                .with_context(|| format!("--grpc-listen {a:?} is neither HOST:PORT nor \"off\"")),
            None => {
                let mut addr = self.listen;
                if addr.port() != 0 {
                    let port = addr.port().checked_add(1).context(
                        "--listen uses port 65535, so gRPC has no port + 1: pass --grpc-listen",
                    )?;
                    addr.set_port(port);
                }
                Ok(Some(addr))
            }
        }
    }
}

/// What every handler shares: the storage client and the graphs opened so far.
pub struct AppState {
    client: cg_bigtable::Client,
    tables: Mutex<HashMap<String, ChunkedGraph>>,
    /// Held while a table is being opened, so it is opened (and recovered) once.
    opening: tokio::sync::Mutex<()>,
    /// True when this process is the only one on its storage (embedded): every lock found
    /// at start-up belongs to a dead process and is released at once.
    sole_owner: bool,
    /// Token authentication; `None` is open mode.
    auth: Option<Arc<auth::AuthConfig>>,
    /// Meshes of the tables opened so far, with their remeshers.
    meshes: meshing::Registry,
}

pub type Shared = Arc<AppState>;

impl AppState {
    pub fn new(client: cg_bigtable::Client, sole_owner: bool) -> AppState {
        AppState {
            client,
            tables: Mutex::new(HashMap::new()),
            opening: tokio::sync::Mutex::new(()),
            sole_owner,
            auth: None,
            meshes: meshing::Registry::default(),
        }
    }

    /// Turns token authentication on (`Some`) or leaves the server open (`None`).
    pub fn with_auth(mut self, auth: Option<Arc<auth::AuthConfig>>) -> AppState {
        self.auth = auth;
        self
    }

    fn cached(&self, table: &str) -> Option<ChunkedGraph> {
        self.tables.lock().ok()?.get(table).cloned()
    }

    /// The graph in `table`, opened (and recovered) on first use.
    pub async fn graph(&self, table: &str) -> ApiResult<ChunkedGraph> {
        if let Some(g) = self.cached(table) {
            return Ok(g);
        }
        if !valid_table_name(table) {
            return Err(ApiError::bad_request(format!(
                "{table:?} is not a table name (letters, digits, '_', '-', '.'; at most 50)"
            )));
        }
        let _guard = self.opening.lock().await;
        if let Some(g) = self.cached(table) {
            return Ok(g);
        }
        let cache = cg_graph::CacheOptions {
            sole_writer: self.sole_owner,
            ..Default::default()
        };
        let g = ChunkedGraph::open_with(self.client.clone(), table, cache).await?;
        // Edits a crash cut off are finished before anyone reads the table. A failure here
        // does not block reads: the next edit on an affected root finishes it too.
        let recover = EditOptions {
            lock_expiry_micros: if self.sole_owner {
                0
            } else {
                EditOptions::default().lock_expiry_micros
            },
            ..Default::default()
        };
        match g.recover(&recover).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(table, "finished {n} interrupted edit(s)"),
            Err(e) => tracing::warn!(table, "recovering interrupted edits: {e}"),
        }
        if let Ok(mut t) = self.tables.lock() {
            t.insert(table.to_string(), g.clone());
        }
        // Before any edit can run on it, so every edit's new nodes get meshed.
        if let Err(e) = self.meshes.attach(&g).await {
            tracing::warn!(table, "meshes not served: {e:#}");
        }
        tracing::info!(table, "opened graph");
        Ok(g)
    }
}

/// Bigtable's table-ID rule.
fn valid_table_name(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 50
        && !t.starts_with(['-', '.'])
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

const V1: &str = "/segmentation/api/v1/table/{table}";

fn v1(path: &str) -> String {
    format!("{V1}{path}")
}

/// The routes, without the outer layers.
fn routes() -> Router<Shared> {
    // Routes that read a body take GET and POST: clients send JSON bodies with GETs too.
    Router::new()
        .route("/segmentation/api/versions", get(versions::api_versions))
        .route("/segmentation/api/version", get(versions::version))
        .route("/segmentation/table/{table}/info", get(versions::info))
        .route("/segmentation/table/{table}/data/{*path}", get(data::file))
        // Lookups.
        .route(&v1("/node/{node}/root"), get(lookups::root))
        .route(&v1("/roots"), post(lookups::roots))
        .route(&v1("/roots_binary"), post(lookups::roots_binary))
        .route(&v1("/node/{node}/children"), get(lookups::children))
        .route(&v1("/node/{node}/leaves"), get(lookups::leaves))
        .route(
            &v1("/node/leaves_many"),
            post(lookups::leaves_many).get(lookups::leaves_many),
        )
        .route(
            &v1("/leaves_many"),
            post(lookups::leaves_many).get(lookups::leaves_many),
        )
        .route(
            &v1("/minimal_covering_nodes"),
            post(lookups::minimal_covering_nodes).get(lookups::minimal_covering_nodes),
        )
        .route(
            &v1("/is_latest_roots"),
            post(lookups::is_latest_roots).get(lookups::is_latest_roots),
        )
        .route(
            &v1("/root_timestamps"),
            post(lookups::root_timestamps).get(lookups::root_timestamps),
        )
        .route(&v1("/delta_roots"), get(lookups::delta_roots))
        .route(
            &v1("/valid_nodes"),
            get(lookups::valid_nodes).post(lookups::valid_nodes),
        )
        .route(&v1("/oldest_timestamp"), get(lookups::oldest_timestamp))
        .route(
            &v1("/l2_chunk_children/{chunk}"),
            get(lookups::l2_chunk_children),
        )
        .route(
            &v1("/l2_chunk_children_binary/{chunk}"),
            get(lookups::l2_chunk_children_binary),
        )
        // Graphs.
        .route(&v1("/node/{node}/subgraph"), get(graphs::subgraph))
        .route(&v1("/node/{node}/lvl2_graph"), get(graphs::lvl2_graph))
        // Edits.
        .route(&v1("/merge"), post(edits::merge))
        .route(&v1("/split"), post(edits::split))
        .route(&v1("/graph/split_preview"), post(edits::split_preview))
        .route(&v1("/undo"), post(edits::undo))
        .route(&v1("/redo"), post(edits::redo))
        // Meshes.
        .route(
            "/meshing/api/v1/table/{table}/manifest/{node}",
            get(meshing::manifest).post(meshing::manifest),
        )
        .route(
            "/meshing/api/v1/table/{table}/remeshing",
            post(meshing::remesh),
        )
        .merge(history::routes())
        .merge(synapses::routes())
        .merge(metrics::routes())
        .merge(auth::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// The whole service: routes, body limit, gzip both ways, CORS (which also answers every
/// OPTIONS), JSON errors, no panics.
pub fn app(state: Shared) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods(AllowMethods::mirror_request())
        // Mirrored rather than `*`: the wildcard does not cover `Authorization`.
        .allow_headers(AllowHeaders::mirror_request())
        // x-total-count: the size of a paged synapse answer.
        .expose_headers([
            header::CONTENT_RANGE,
            header::WWW_AUTHENTICATE,
            header::HeaderName::from_static("x-total-count"),
        ])
        .max_age(std::time::Duration::from_secs(3600));
    routes()
        // Innermost, after routing: it needs the route template and the `{table}` parameter,
        // and its 401/403 answers still get CORS headers (browsers must be able to read them).
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .layer(DefaultBodyLimit::max(body::BODY_LIMIT))
        .layer(RequestDecompressionLayer::new().gzip(true))
        .layer(middleware::from_fn(json_errors))
        .layer(CompressionLayer::new().gzip(true))
        .layer(cors)
        .layer(CatchPanicLayer::custom(panic_response))
        // Outermost: times the whole request and sees the final status, panics included.
        .layer(middleware::from_fn(metrics::track))
        .with_state(state)
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not take {method}", uri.path()),
    )
}

/// Turns any error that is not JSON yet (framework rejections, unsupported encodings) into
/// PyChunkedGraph's error JSON.
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 64 << 10)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    let message = if status == StatusCode::UNSUPPORTED_MEDIA_TYPE && text.is_empty() {
        "unsupported Content-Encoding: send gzip or an uncompressed body".to_string()
    } else if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut out = error_response(status, &message);
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        out.headers_mut().insert(header::ALLOW, allow.clone());
    }
    out
}

fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    tracing::error!("handler panicked: {detail}");
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!("internal error: {detail}"),
    )
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    // Before touching storage: a bad config should stop the server at once.
    let auth = auth::load(args.auth_config.as_deref())?;
    let (client, backend) = args.storage.connect().await?;
    let sole_owner = matches!(backend, crate::storage::Backend::Embedded(_));
    let state = Arc::new(AppState::new(client, sole_owner).with_auth(auth));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let grpc_listener = match args.grpc_addr()? {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("binding {a} for gRPC"))?,
        ),
        None => None,
    };
    // Scripts and tests wait for this line.
    println!("chunkedgraph serving on http://{addr}");
    // Always a second line, so a reader waiting for it never hangs. Not println!: readers
    // that only wanted the first line may have closed the pipe, and a failed write must not
    // take the server down.
    let grpc_line = match &grpc_listener {
        Some(l) => format!("chunkedgraph gRPC on {}", l.local_addr()?),
        None => "chunkedgraph gRPC off".to_string(),
    };
    let _ = writeln!(std::io::stdout(), "{grpc_line}");
    tracing::info!("serving graphs from {backend}");
    // One signal stops both servers.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let http = axum::serve(listener, app(state.clone()))
        .with_graceful_shutdown(crate::grpc::stopped(stopped.clone()))
        .into_future();
    let grpc = async {
        match grpc_listener {
            Some(l) => crate::grpc::serve(l, state, stopped).await,
            None => Ok(()),
        }
    };
    tokio::try_join!(async { http.await.context("serving HTTP") }, async {
        grpc.await.context("serving gRPC")
    })?;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
