//! The request and response quirks of PyChunkedGraph's clients: JSON bodies without a JSON
//! content type (and on GETs), raw little-endian u64 bodies, query flags such as
//! `int64_as_str`, timestamps as UNIX seconds, bounds as `x0-x1_y0-y1_z0-z1`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cg_ids::{Geometry, VoxelBox};
use serde_json::Value;

use super::error::{ApiError, ApiResult};

/// Largest request body accepted, after gzip decompression.
pub const BODY_LIMIT: usize = 32 << 20;

/// The request body as bytes (decompressed), whatever its content type.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(RawBody(b)),
            Err(rej) if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is larger than the {} MiB limit",
                    BODY_LIMIT >> 20
                ),
            )),
            Err(rej) => Err(ApiError::new(
                rej.status(),
                format!("could not read the request body: {}", rej.body_text()),
            )),
        }
    }
}

impl RawBody {
    /// The body as JSON.
    pub fn json(&self) -> ApiResult<Value> {
        if self.0.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request("the request needs a JSON body"));
        }
        serde_json::from_slice(&self.0)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
    }

    /// The body as raw little-endian u64s.
    pub fn u64s(&self) -> ApiResult<Vec<u64>> {
        if !self.0.len().is_multiple_of(8) {
            return Err(ApiError::bad_request(format!(
                "a binary body holds little-endian u64 IDs, but its {} bytes are not a multiple of 8",
                self.0.len()
            )));
        }
        Ok(self
            .0
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect())
    }

    /// `node_ids` from a JSON body `{"node_ids": [...]}`, or from raw u64s if `binary`.
    pub fn node_ids(&self, binary: bool) -> ApiResult<Vec<u64>> {
        if binary {
            return self.u64s();
        }
        ids_field(&self.json()?, "node_ids")
    }
}

/// The query string, parsed once; later values of a repeated key win.
pub struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q)
            .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?;
        Ok(Params(pairs.into_iter().collect()))
    }
}

impl Params {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn bool(&self, key: &str, default: bool) -> ApiResult<bool> {
        match self.get(key).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes" | "t" | "y") => Ok(true),
            Some("false" | "0" | "no" | "f" | "n") => Ok(false),
            Some(v) => Err(ApiError::bad_request(format!(
                "query parameter {key}={v:?} is not a boolean (true/false/1/0)"
            ))),
        }
    }

    pub fn int<T: std::str::FromStr>(&self, key: &str) -> ApiResult<Option<T>> {
        self.get(key)
            .map(|v| {
                v.trim().parse::<T>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "query parameter {key}={v:?} is not a valid integer"
                    ))
                })
            })
            .transpose()
    }

    /// A layer parameter, checked against the graph.
    pub fn layer(&self, key: &str, g: &Geometry) -> ApiResult<Option<u8>> {
        match self.int::<i64>(key)? {
            None => Ok(None),
            Some(l) if l >= 1 && l <= i64::from(g.n_layers) => Ok(Some(l as u8)),
            Some(l) => Err(ApiError::bad_request(format!(
                "{key}={l} is outside this graph's layers 1..={}",
                g.n_layers
            ))),
        }
    }

    /// A UNIX timestamp in seconds (float), as µs.
    pub fn timestamp(&self, key: &str) -> ApiResult<Option<i64>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        seconds_to_micros(v.trim().parse::<f64>().ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "timestamp parameter {key}={v:?} is not a valid unix timestamp (seconds)"
                ))
            })
    }

    /// `int64_as_str`: IDs as decimal strings (JavaScript clients lose bits of big numbers).
    pub fn ids(&self) -> ApiResult<IdFormat> {
        Ok(IdFormat {
            as_str: self.bool("int64_as_str", false)?,
        })
    }

    /// `bounds=x0-x1_y0-y1_z0-z1` in (absolute) voxels, as a volume-relative box.
    pub fn bounds(&self, g: &Geometry) -> ApiResult<Option<VoxelBox>> {
        let Some(s) = self.get("bounds") else {
            return Ok(None);
        };
        let bad =
            || ApiError::bad_request(format!("bounds={s:?} is not x0-x1_y0-y1_z0-z1 in voxels"));
        let axes: Vec<&str> = s.split('_').collect();
        if axes.len() != 3 {
            return Err(bad());
        }
        let mut b = VoxelBox::default();
        for (d, axis) in axes.iter().enumerate() {
            let (lo, hi) = axis.split_once('-').ok_or_else(bad)?;
            let lo: i64 = lo.trim().parse().map_err(|_| bad())?;
            let hi: i64 = hi.trim().parse().map_err(|_| bad())?;
            if hi < lo {
                return Err(ApiError::bad_request(format!(
                    "bounds={s:?}: the upper end of axis {d} is below its lower end"
                )));
            }
            let rel = |v: i64| {
                v.saturating_sub(g.voxel_offset[d])
                    .clamp(0, i64::try_from(g.volume_size[d]).unwrap_or(i64::MAX))
                    as u64
            };
            b.min[d] = rel(lo);
            b.max[d] = rel(hi);
        }
        Ok(Some(b))
    }
}

pub fn seconds_to_micros(s: Option<f64>) -> Option<i64> {
    let s = s?;
    // Rounded, so that a timestamp we sent back (ms precision) reads the same instant.
    let us = (s * 1e6).round();
    (us.is_finite() && (0.0..9.0e18).contains(&us)).then_some(us as i64)
}

pub fn micros_to_seconds(us: i64) -> f64 {
    us as f64 / 1e6
}

/// How IDs are written in JSON answers.
#[derive(Clone, Copy)]
pub struct IdFormat {
    pub as_str: bool,
}

impl IdFormat {
    pub fn id(&self, id: u64) -> Value {
        if self.as_str {
            Value::String(id.to_string())
        } else {
            Value::from(id)
        }
    }

    pub fn list(&self, ids: &[u64]) -> Value {
        Value::Array(ids.iter().map(|&i| self.id(i)).collect())
    }

    pub fn pairs(&self, pairs: &[[u64; 2]]) -> Value {
        Value::Array(pairs.iter().map(|p| self.list(p)).collect())
    }
}

/// An ID in a JSON body: a non-negative integer or its decimal string (Neuroglancer sends
/// strings).
pub fn id_value(v: &Value, what: &str) -> ApiResult<u64> {
    let parsed = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| ApiError::bad_request(format!("{what}: {v} is not a node ID")))
}

pub fn id_list(v: &Value, what: &str) -> ApiResult<Vec<u64>> {
    let arr = v
        .as_array()
        .ok_or_else(|| ApiError::bad_request(format!("{what} must be a list of IDs")))?;
    arr.iter().map(|x| id_value(x, what)).collect()
}

/// `body[key]` as a list of IDs.
pub fn ids_field(body: &Value, key: &str) -> ApiResult<Vec<u64>> {
    let v = body
        .get(key)
        .ok_or_else(|| ApiError::bad_request(format!("the JSON body needs a \"{key}\" list")))?;
    id_list(v, key)
}

/// A number in a JSON body (coordinates): a number or its decimal string.
pub fn number_value(v: &Value, what: &str) -> ApiResult<f64> {
    let parsed = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    parsed
        .filter(|x| x.is_finite())
        .ok_or_else(|| ApiError::bad_request(format!("{what}: {v} is not a number")))
}

/// A compact JSON answer with PyChunkedGraph's trailing newline.
pub fn json(v: &Value) -> Response {
    json_text(format!("{v}\n"))
}

pub fn json_text(text: String) -> Response {
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Raw little-endian u64s.
pub fn binary(ids: &[u64]) -> Response {
    let mut out = Vec::with_capacity(ids.len() * 8);
    for id in ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
    let mut resp = out.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp
}

/// A float as Python's `json.dumps` writes it (it allows `Infinity` and `NaN`, which
/// cross-chunk edge affinities use).
pub fn python_float(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        if x > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        // Shortest round-trip digits, like Python's repr (exponent spelling may differ).
        serde_json::Number::from_f64(x)
            .map(|n| n.to_string())
            .unwrap_or_else(|| "NaN".into())
    }
}

/// The user an edit is recorded under: `X-User-Id` (set by an auth proxy) or the `user_id`
/// query parameter, else `anonymous`.
pub fn user_of(headers: &axum::http::HeaderMap, params: &Params) -> String {
    let from_header = headers
        .get("x-user-id")
        .or_else(|| headers.get("x-forwarded-user"))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    from_header
        .or_else(|| params.get("user_id"))
        .map(|s| s.chars().take(256).collect())
        .unwrap_or_else(|| "anonymous".into())
}

/// A UTC time as Python's `datetime.isoformat(delimiter)` writes an aware datetime:
/// `2024-05-06 07:08:09.123000+00:00` (no fraction when it is zero).
pub fn iso_utc(micros: i64, delimiter: &str) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut s = format!(
        "{year:04}-{month:02}-{day:02}{delimiter}{:02}:{:02}:{:02}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    );
    if frac != 0 {
        s.push_str(&format!(".{frac:06}"));
    }
    s.push_str("+00:00");
    s
}

/// A node ID from a URL path segment.
pub fn path_id(s: &str, what: &str) -> ApiResult<u64> {
    s.trim()
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{what} {s:?} is not a node ID")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_matches_python() {
        // datetime.fromtimestamp(0, UTC).isoformat(" ")
        assert_eq!(iso_utc(0, " "), "1970-01-01 00:00:00+00:00");
        // datetime.fromtimestamp(1709251199.5, UTC).isoformat("T")
        assert_eq!(
            iso_utc(1_709_251_199_500_000, "T"),
            "2024-02-29T23:59:59.500000+00:00"
        );
        assert_eq!(
            iso_utc(951_782_400_000_001, " "),
            "2000-02-29 00:00:00.000001+00:00"
        );
    }

    #[test]
    fn timestamps_round_trip_at_ms() {
        let us = 1_700_000_000_123_000;
        assert_eq!(seconds_to_micros(Some(micros_to_seconds(us))), Some(us));
        assert_eq!(seconds_to_micros(Some(f64::NAN)), None);
        assert_eq!(seconds_to_micros(Some(-1.0)), None);
    }

    #[test]
    fn python_floats() {
        assert_eq!(python_float(f64::INFINITY), "Infinity");
        assert_eq!(python_float(0.5), "0.5");
        assert_eq!(python_float(f64::from(0.3f32)), "0.30000001192092896");
    }
}
