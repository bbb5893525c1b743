//! The graph's data directory over HTTP: the supervoxel volume (precomputed) and mesh files,
//! so a browser or cloud-volume needs nothing but the server. Range requests get 206, and a
//! chunk stored gzipped (`name.gz`, cloud-volume's convention) is sent as `name` with
//! `Content-Encoding: gzip`.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use tower::ServiceExt;
use tower_http::services::ServeDir;

use super::error::{ApiError, ApiResult};
use super::Shared;

/// The local directory a `data_dir` names (`file://...` or a plain path); `None` for object
/// stores and HTTP, which clients read directly.
pub fn local_dir(data_dir: Option<&str>) -> Option<&str> {
    let d = data_dir?.trim();
    if d.is_empty() {
        return None;
    }
    match d.strip_prefix("file://") {
        Some(p) => Some(p),
        None if d.contains("://") => None,
        None => Some(d),
    }
}

/// What the info reports as `data_dir`: our own data route when the files are local (as
/// seen by the client, from its Host header), else the configured URL.
pub fn public_data_dir(data_dir: Option<&str>, table: &str, headers: &HeaderMap) -> String {
    if local_dir(data_dir).is_none() {
        return data_dir.unwrap_or("").to_string();
    }
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(axum::http::header::HOST))
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .filter(|s| *s == "https")
        .unwrap_or("http");
    format!("{scheme}://{host}/segmentation/table/{table}/data")
}

/// `GET /segmentation/table/{table}/data/{*path}`
pub async fn file(
    State(st): State<Shared>,
    Path((table, path)): Path<(String, String)>,
    mut req: Request,
) -> ApiResult<Response> {
    let g = st.graph(&table).await?;
    let Some(dir) = local_dir(g.meta().data_dir.as_deref()) else {
        return Err(ApiError::not_found(format!(
            "table {table} keeps its data at {:?}, not on this server",
            g.meta().data_dir.as_deref().unwrap_or("")
        )));
    };
    // ServeDir refuses `..` and resolves the rest under `dir`.
    let uri: Uri = format!("/{path}")
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{path:?} is not a valid file path")))?;
    *req.uri_mut() = uri;
    let service = ServeDir::new(dir).precompressed_gzip();
    let resp = match service.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    Ok(resp.map(Body::new))
}
