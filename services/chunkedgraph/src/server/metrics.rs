//! Operations: Prometheus metrics (`/metrics`), health (`/healthz`), and one log event per
//! request.
//!
//! Requests are labelled by route template (`/segmentation/api/v1/table/{table}/merge`), not
//! the raw path, so the number of series stays bounded whatever clients send; requests no
//! route matched share the label `unmatched`.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use serde_json::json;
use tracing::Instrument;

use super::body::{json, Params};
use super::error::{ApiError, ApiResult};
use super::Shared;

/// How long `/healthz?storage=true` waits for the storage.
const STORAGE_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The route label of requests no route matched.
const UNMATCHED: &str = "unmatched";

struct Metrics {
    registry: Registry,
    latency: HistogramVec,
    requests: IntCounterVec,
    in_flight: IntGauge,
    edits: IntCounterVec,
}

impl Metrics {
    fn new() -> prometheus::Result<Metrics> {
        // Our own registry rather than the process-global default: nothing else in the
        // process can collide with or pollute these names.
        let registry = Registry::new();
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "chunkedgraph_http_request_duration_seconds",
                "Time from a request's arrival to its response headers, by route template.",
            )
            // From cached point lookups (sub-ms) to large edits and subgraphs (seconds).
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["method", "route", "status"],
        )?;
        let requests = IntCounterVec::new(
            Opts::new(
                "chunkedgraph_http_requests_total",
                "Requests answered, by route template and exact status code.",
            ),
            &["method", "route", "code"],
        )?;
        let in_flight = IntGauge::new(
            "chunkedgraph_http_requests_in_flight",
            "Requests being handled now.",
        )?;
        let edits = IntCounterVec::new(
            Opts::new(
                "chunkedgraph_edits_total",
                "Edit requests by kind (merge, split, split_preview, undo, redo) and outcome \
                 (ok; rejected: 4xx; conflict: 503, the root was locked; error: other 5xx).",
            ),
            &["kind", "outcome"],
        )?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(edits.clone()))?;
        Ok(Metrics {
            registry,
            latency,
            requests,
            in_flight,
            edits,
        })
    }
}

/// `None` only if the metric definitions above were invalid, which the unit test rules out;
/// the server then runs without metrics rather than refusing to start.
static METRICS: LazyLock<Option<Metrics>> = LazyLock::new(|| match Metrics::new() {
    Ok(m) => Some(m),
    Err(e) => {
        tracing::error!("metrics disabled: {e}");
        None
    }
});

/// A method label from a fixed set: arbitrary extension methods would each add series.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::OPTIONS => "OPTIONS",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

fn status_class(s: StatusCode) -> &'static str {
    match s.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The edit a route makes, for the edit counter.
fn edit_kind(route: &str) -> Option<&'static str> {
    let last = route.rsplit('/').next()?;
    match last {
        "merge" => Some("merge"),
        "split" => Some("split"),
        "split_preview" => Some("split_preview"),
        "undo" => Some("undo"),
        "redo" => Some("redo"),
        _ => None,
    }
}

fn edit_outcome(s: StatusCode) -> &'static str {
    if s.is_success() {
        "ok"
    } else if s == StatusCode::SERVICE_UNAVAILABLE {
        "conflict"
    } else if s.is_client_error() {
        "rejected"
    } else {
        "error"
    }
}

/// Lowers the in-flight gauge even when the request future is dropped (client went away).
struct InFlight;

impl InFlight {
    fn start() -> InFlight {
        if let Some(m) = METRICS.as_ref() {
            m.in_flight.inc();
        }
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(m) = METRICS.as_ref() {
            m.in_flight.dec();
        }
    }
}

/// Times and counts every request and logs it: 5xx other than 503 at warn, 4xx and 503 at
/// info, the rest at debug so that normal traffic does not flood the log.
pub async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(req.method());
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
    let span = tracing::info_span!("http", method, route);
    let _in_flight = InFlight::start();
    let resp = next.run(req).instrument(span.clone()).await;
    let elapsed = start.elapsed();
    let status = resp.status();
    if let Some(m) = METRICS.as_ref() {
        m.latency
            .with_label_values(&[method, route, status_class(status)])
            .observe(elapsed.as_secs_f64());
        m.requests
            .with_label_values(&[method, route, status.as_str()])
            .inc();
        if let Some(kind) = edit_kind(route).filter(|_| method == "POST") {
            m.edits
                .with_label_values(&[kind, edit_outcome(status)])
                .inc();
        }
    }
    let latency_ms = elapsed.as_secs_f64() * 1e3;
    let code = status.as_u16();
    span.in_scope(|| {
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(status = code, latency_ms, "request failed");
        } else if status.is_client_error() || status.is_server_error() {
            tracing::info!(status = code, latency_ms, "request refused");
        } else {
            tracing::debug!(status = code, latency_ms, "request");
        }
    });
    resp
}

/// `GET /metrics`: the text exposition format.
async fn metrics() -> ApiResult<Response> {
    let Some(m) = METRICS.as_ref() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics are disabled (see the startup log)",
        ));
    };
    let encoder = TextEncoder::new();
    let mut out = Vec::new();
    encoder
        .encode(&m.registry.gather(), &mut out)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut resp = out.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(resp)
}

/// `GET /healthz`: 200 `{"status": "ok"}` while the process serves. With `storage=true`
/// the storage must also answer (a table listing) within 5 s, else 503: a readiness probe.
async fn healthz(State(st): State<Shared>, p: Params) -> ApiResult<Response> {
    if !p.bool("storage", false)? {
        return Ok(json(&json!({ "status": "ok" })));
    }
    let admin = st.client.admin();
    match tokio::time::timeout(STORAGE_CHECK_TIMEOUT, admin.list_tables()).await {
        Ok(Ok(tables)) => Ok(json(&json!({
            "status": "ok",
            "storage": "ok",
            "tables": tables.len(),
        }))),
        Ok(Err(e)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("storage unreachable: {e}"),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "storage did not answer within {} s",
                STORAGE_CHECK_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// Health, metrics and the API description.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(super::openapi::openapi_json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_register_and_encode() {
        let m = METRICS.as_ref().expect("metric definitions are valid");
        m.latency
            .with_label_values(&["GET", "/x/{table}", "2xx"])
            .observe(0.003);
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&m.registry.gather(), &mut out)
            .expect("encode");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.contains(
            "chunkedgraph_http_request_duration_seconds_bucket{method=\"GET\",route=\"/x/{table}\",status=\"2xx\",le=\"0.005\"} 1"
        ));
    }

    #[test]
    fn labels() {
        assert_eq!(
            edit_kind("/segmentation/api/v1/table/{table}/merge"),
            Some("merge")
        );
        assert_eq!(
            edit_kind("/segmentation/api/v1/table/{table}/graph/split_preview"),
            Some("split_preview")
        );
        assert_eq!(edit_kind("/segmentation/api/v1/table/{table}/roots"), None);
        assert_eq!(edit_outcome(StatusCode::SERVICE_UNAVAILABLE), "conflict");
        assert_eq!(edit_outcome(StatusCode::BAD_REQUEST), "rejected");
        assert_eq!(status_class(StatusCode::NOT_FOUND), "4xx");
        assert_eq!(
            method_label(&Method::from_bytes(b"BREW").expect("method")),
            "other"
        );
    }
}
