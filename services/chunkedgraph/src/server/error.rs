//! Errors as PyChunkedGraph sends them: JSON `{"code": <status>, "message": "..."}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cg_graph::GraphError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<GraphError> for ApiError {
    fn from(e: GraphError) -> ApiError {
        let status = match &e {
            GraphError::NotFound(_) => StatusCode::NOT_FOUND,
            e if e.is_client_error() => StatusCode::BAD_REQUEST,
            // A root is locked by another edit or was just replaced. Nothing was written and
            // edits name supervoxels, so the same request can simply be sent again: 503 is
            // what caveclient retries on (with backoff) for GET and POST.
            GraphError::Conflict(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        match status {
            StatusCode::INTERNAL_SERVER_ERROR => tracing::error!("{e}"),
            StatusCode::SERVICE_UNAVAILABLE => tracing::info!("{e}"),
            _ => {}
        }
        ApiError::new(status, e.to_string())
    }
}

/// The JSON error body.
pub fn error_response(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "code": status.as_u16(), "message": message });
    let mut resp = (status, format!("{body}\n")).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    // The rest of an oversized body is never read, so the connection cannot carry another
    // request: say so, or a pooling client sends its next request into a dead connection.
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self.status, &self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_errors_map_to_statuses() {
        let status = |e: GraphError| ApiError::from(e).status;
        assert_eq!(
            status(GraphError::NotFound("x".into())),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(GraphError::InvalidInput("x".into())),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(GraphError::Id(cg_ids::IdError::NodeLayer(5, 0))),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(GraphError::Conflict("locked".into())),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(GraphError::Corrupt("x".into())),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let resp = ApiError::from(GraphError::Conflict("locked".into())).into_response();
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
    }
}
