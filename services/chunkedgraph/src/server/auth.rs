//! Optional token authentication (`chunkedgraph serve --auth-config FILE`).
//!
//! A token names a user and that user's permission on each table (`view` < `edit` < `admin`,
//! each including the ones before it). Tokens arrive the way CAVE's middle_auth accepts
//! them, which is what caveclient, cloud-volume and Neuroglancer send: the
//! `Authorization: Bearer` header wins over the `middle_auth_token` query parameter, which
//! wins over the `middle_auth_token` cookie (caveclient sends the header and the cookie).
//!
//! Without a config the server is open: everything is allowed and an edit's user is the
//! `X-User-Id` header or `user_id` parameter. With one, the token's user is recorded and
//! those fallbacks are ignored, so nobody can edit under someone else's name.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::json;

use super::body::{json, user_of, Params};
use super::error::{ApiError, ApiResult};
use super::openapi::{access_of, Access};
use super::Shared;

/// The cookie and query parameter middle_auth reads tokens from.
pub const TOKEN_NAME: &str = "middle_auth_token";

/// What a token allows on a table. Ordered: each level includes the ones below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    None,
    View,
    Edit,
    Admin,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::None => "none",
            Permission::View => "view",
            Permission::Edit => "edit",
            Permission::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Permission> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Some(Permission::None),
            "view" => Some(Permission::View),
            "edit" => Some(Permission::Edit),
            "admin" => Some(Permission::Admin),
            _ => None,
        }
    }
}

/// Why an auth config was refused; the message names the file and the entry.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("reading auth config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("auth config {path} is not valid {format}: {message}")]
    Syntax {
        path: PathBuf,
        format: &'static str,
        message: String,
    },
    #[error("auth config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// A user ID may be written as a string or a number (middle_auth's IDs are numbers).
#[derive(Deserialize)]
#[serde(untagged)]
enum UserId {
    Text(String),
    Number(i64),
}

/// One permission or a list of them (middle_auth's `permissions_v2` style); the highest
/// counts.
#[derive(Deserialize)]
#[serde(untagged)]
enum PermissionSpec {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    token: String,
    user_id: UserId,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    permissions: HashMap<String, PermissionSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

/// Who a token belongs to and what it may do.
#[derive(Debug)]
pub struct Identity {
    pub user_id: String,
    pub name: Option<String>,
    /// The `*` entry: tables without their own entry.
    pub default: Permission,
    pub tables: HashMap<String, Permission>,
}

impl Identity {
    /// A table's own entry wins over `*`, so `*` can grant broadly and a table can narrow it.
    pub fn permission(&self, table: &str) -> Permission {
        self.tables.get(table).copied().unwrap_or(self.default)
    }
}

/// The loaded config: token → identity.
#[derive(Debug, Default)]
pub struct AuthConfig {
    tokens: HashMap<String, Arc<Identity>>,
}

impl AuthConfig {
    /// Reads a TOML file, or JSON when the name ends in `.json`.
    pub fn load(path: &Path) -> Result<AuthConfig, AuthConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let parsed: ConfigFile = if is_json {
            serde_json::from_str(&text).map_err(|e| AuthConfigError::Syntax {
                path: path.to_path_buf(),
                format: "JSON",
                message: e.to_string(),
            })?
        } else {
            toml::from_str(&text).map_err(|e| AuthConfigError::Syntax {
                path: path.to_path_buf(),
                format: "TOML",
                message: e.to_string(),
            })?
        };
        AuthConfig::build(parsed).map_err(|message| AuthConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })
    }

    fn build(file: ConfigFile) -> Result<AuthConfig, String> {
        if file.tokens.is_empty() {
            return Err("no [[tokens]] entries: nobody could use the server".into());
        }
        let mut tokens = HashMap::new();
        for (i, entry) in file.tokens.into_iter().enumerate() {
            let token = entry.token.trim().to_string();
            // Tokens travel in headers, cookies and URLs: anything outside visible ASCII
            // would be mangled on the way.
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "tokens[{i}]: a token must be non-empty visible ASCII without spaces"
                ));
            }
            let user_id = match entry.user_id {
                UserId::Text(s) => s.trim().to_string(),
                UserId::Number(n) => n.to_string(),
            };
            if user_id.is_empty() || user_id.len() > 256 {
                return Err(format!(
                    "tokens[{i}]: user_id must have 1 to 256 characters"
                ));
            }
            let mut default = Permission::None;
            let mut tables = HashMap::new();
            for (table, spec) in entry.permissions {
                let names = match spec {
                    PermissionSpec::One(s) => vec![s],
                    PermissionSpec::Many(v) => v,
                };
                let mut level = Permission::None;
                for n in &names {
                    let p = Permission::parse(n).ok_or_else(|| {
                        format!(
                            "tokens[{i}] (user {user_id}): permission {n:?} on table {table:?} \
                             is not one of none, view, edit, admin"
                        )
                    })?;
                    level = level.max(p);
                }
                if table == "*" {
                    default = level;
                } else {
                    tables.insert(table, level);
                }
            }
            let identity = Arc::new(Identity {
                user_id,
                name: entry.name.filter(|n| !n.trim().is_empty()),
                default,
                tables,
            });
            if tokens.insert(token, identity).is_some() {
                return Err(format!("tokens[{i}]: the same token is listed twice"));
            }
        }
        Ok(AuthConfig { tokens })
    }

    pub fn n_tokens(&self) -> usize {
        self.tokens.len()
    }

    pub fn n_users(&self) -> usize {
        self.tokens
            .values()
            .map(|i| i.user_id.as_str())
            .collect::<HashSet<_>>()
            .len()
    }

    /// The identity of a token (public so other front ends, e.g. gRPC, can check tokens).
    pub fn identity(&self, token: &str) -> Option<Arc<Identity>> {
        self.tokens.get(token).cloned()
    }
}

/// Loads `--auth-config` and says in the log which mode the server runs in.
pub fn load(path: Option<&Path>) -> anyhow::Result<Option<Arc<AuthConfig>>> {
    let Some(path) = path else {
        // Info, not warn: open is the documented default for local use, and the line is
        // there to be found, not to alarm every run.
        tracing::info!(
            "no --auth-config: open mode, anyone may read and edit; edits are recorded under \
             the X-User-Id header or user_id parameter, else \"anonymous\""
        );
        return Ok(None);
    };
    let config = AuthConfig::load(path)?;
    tracing::info!(
        "token auth on: {} token(s) of {} user(s) from {}",
        config.n_tokens(),
        config.n_users(),
        path.display()
    );
    Ok(Some(Arc::new(config)))
}

/// middle_auth's user-info route, for clients that ask the server who they are.
pub fn routes() -> Router<Shared> {
    Router::new().route("/auth/api/v1/user/cache", get(user_cache))
}

/// Who is calling, put in the request's extensions by [`authorize`].
#[derive(Clone)]
pub enum Caller {
    /// No auth config: anyone may do anything.
    Open,
    User(Arc<Identity>),
}

/// The bearer token of a request, if any. A malformed `Authorization` header is refused
/// rather than ignored, as middle_auth does, so a client bug is not mistaken for "no token".
fn token_of(parts: &Parts) -> ApiResult<Option<String>> {
    if let Some(v) = parts.headers.get(header::AUTHORIZATION) {
        let v = v.to_str().unwrap_or("").trim();
        let token = v
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty());
        return match token {
            Some(t) => Ok(Some(t.to_string())),
            None => Err(ApiError::bad_request(
                "the Authorization header must be \"Bearer <token>\"",
            )),
        };
    }
    if let Some(q) = parts.uri.query() {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q).unwrap_or_default();
        if let Some((_, t)) = pairs
            .into_iter()
            .find(|(k, v)| k == TOKEN_NAME && !v.trim().is_empty())
        {
            return Ok(Some(t.trim().to_string()));
        }
    }
    Ok(cookie(&parts.headers, TOKEN_NAME))
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, v)| k.trim() == name && !v.trim().is_empty())
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
}

/// A 401 with the `WWW-Authenticate` challenge clients look for.
fn unauthorized(message: &str, error: Option<&str>) -> Response {
    let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    let challenge = match error {
        Some(e) => format!("Bearer realm=\"chunkedgraph\", error=\"{e}\""),
        None => "Bearer realm=\"chunkedgraph\"".to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// Checks the caller against the route's access rule (see `openapi::ROUTES`) and records
/// who it is for the handlers. Runs after routing, so the route template is known.
pub async fn authorize(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let Some(config) = st.auth.clone() else {
        let mut req = req;
        req.extensions_mut().insert(Caller::Open);
        return next.run(req).await;
    };
    // Preflights carry no credentials; the CORS layer answers them before this runs, and
    // any other OPTIONS is let through the same way middle_auth does.
    if req.method() == Method::OPTIONS {
        return next.run(req).await;
    }
    let access = match req.extensions().get::<MatchedPath>() {
        Some(route) => access_of(route.as_str()),
        // No route matched: the fallback answers 404 and reveals nothing.
        None => Access::Public,
    };
    if access == Access::Public {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let token = match token_of(&parts) {
        Ok(Some(t)) => t,
        Ok(None) => {
            return unauthorized(
                "this server requires a token: send \"Authorization: Bearer <token>\", the \
                 middle_auth_token cookie or the middle_auth_token query parameter",
                None,
            )
        }
        Err(e) => return e.into_response(),
    };
    let Some(identity) = config.identity(&token) else {
        return unauthorized("invalid or unknown token", Some("invalid_token"));
    };
    if let Access::Table(needed) = access {
        let table = match RawPathParams::from_request_parts(&mut parts, &st).await {
            Ok(params) => params
                .iter()
                .find(|(k, _)| *k == "table")
                .map(|(_, v)| v.to_string()),
            Err(_) => None,
        };
        let Some(table) = table else {
            // Only reachable if a route were declared table-scoped without `{table}`:
            // refuse rather than let it through unchecked.
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "this route has no table to check permissions against",
            )
            .into_response();
        };
        let has = identity.permission(&table);
        if has < needed {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "user {} lacks the {} permission on table {table}{}",
                    identity.user_id,
                    needed.as_str(),
                    match has {
                        Permission::None => String::new(),
                        p => format!(" (has {})", p.as_str()),
                    }
                ),
            )
            .into_response();
        }
    }
    parts.extensions.insert(Caller::User(identity));
    next.run(Request::from_parts(parts, body)).await
}

/// The user an edit is recorded under. With auth, the token's user (nothing in the request
/// can override it); without, `X-User-Id` / `user_id` / `anonymous` as before.
pub struct EditUser(pub String);

impl FromRequestParts<Shared> for EditUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &Shared) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Caller>() {
            Some(Caller::User(identity)) => Ok(EditUser(identity.user_id.clone())),
            // With auth on, a missing caller means the request bypassed `authorize`: refuse
            // rather than fall back to a user name the client chose.
            _ if st.auth.is_some() => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this server requires a token",
            )),
            _ => {
                let params = Params::from_request_parts(parts, st).await?;
                Ok(EditUser(user_of(&parts.headers, &params)))
            }
        }
    }
}

/// middle_auth's `GET /auth/api/v1/user/cache`: who the token belongs to and its
/// permissions, in the shape caveclient reads (`id`, `name`, `permissions_v2`).
pub async fn user_cache(State(st): State<Shared>, req: Request) -> Response {
    let caller = req.extensions().get::<Caller>().cloned();
    match caller {
        Some(Caller::User(i)) => {
            let mut perms = serde_json::Map::new();
            for (table, p) in &i.tables {
                perms.insert(table.clone(), json!(implied(*p)));
            }
            perms.insert("*".into(), json!(implied(i.default)));
            json(&json!({
                "id": i.user_id,
                "name": i.name.clone().unwrap_or_else(|| i.user_id.clone()),
                "email": "",
                "admin": false,
                "groups": [],
                "service_account": false,
                "permissions_v2": perms,
            }))
        }
        _ if st.auth.is_none() => json(&json!({
            "id": "anonymous",
            "name": "anonymous",
            "email": "",
            "admin": false,
            "groups": [],
            "service_account": false,
            "permissions_v2": { "*": ["view", "edit", "admin"] },
        })),
        _ => unauthorized("this server requires a token", None),
    }
}

/// A level and the levels it includes, as middle_auth lists them.
fn implied(p: Permission) -> Vec<&'static str> {
    [Permission::View, Permission::Edit, Permission::Admin]
        .into_iter()
        .filter(|&q| q <= p)
        .map(Permission::as_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_toml(s: &str) -> Result<AuthConfig, String> {
        let file: ConfigFile = toml::from_str(s).map_err(|e| e.to_string())?;
        AuthConfig::build(file)
    }

    #[test]
    fn table_entry_wins_over_wildcard() {
        let c = parse_toml(
            r#"
            [[tokens]]
            token = "t1"
            user_id = 42
            name = "Ada"
            permissions = { "*" = "edit", locked = "view", other = ["view", "admin"] }
            "#,
        )
        .expect("valid config");
        let i = c.identity("t1").expect("known token");
        assert_eq!(i.user_id, "42");
        assert_eq!(i.name.as_deref(), Some("Ada"));
        assert_eq!(i.permission("anything"), Permission::Edit);
        assert_eq!(i.permission("locked"), Permission::View);
        assert_eq!(i.permission("other"), Permission::Admin);
        assert!(c.identity("t2").is_none());
        assert_eq!(implied(Permission::Edit), vec!["view", "edit"]);
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        let err = |s: &str| parse_toml(s).expect_err("refused");
        assert!(err("").contains("no [[tokens]]"));
        assert!(
            err("[[tokens]]\ntoken = \"a\"\nuser_id = \"u\"\npermissions = { x = \"write\" }")
                .contains("\"write\"")
        );
        assert!(err(
            "[[tokens]]\ntoken = \"a\"\nuser_id = \"u\"\n[[tokens]]\ntoken = \"a\"\nuser_id = \"v\""
        )
        .contains("twice"));
        assert!(err("[[tokens]]\ntoken = \"a b\"\nuser_id = \"u\"").contains("visible ASCII"));
        assert!(err("[[tokens]]\ntoken = \"a\"\nuser_id = \"\"").contains("user_id"));
        // A typo in a field name is an error, not a silently ignored setting.
        assert!(
            err("[[tokens]]\ntoken = \"a\"\nuser_id = \"u\"\npermission = {}")
                .contains("permission")
        );
    }

    #[test]
    fn token_sources_in_middle_auth_order() {
        let parts = |b: axum::http::request::Builder| b.body(()).expect("request").into_parts().0;
        let all = parts(
            axum::http::Request::builder()
                .uri("/x?middle_auth_token=fromquery")
                .header("authorization", "Bearer fromheader")
                .header("cookie", "a=b; middle_auth_token=fromcookie"),
        );
        assert_eq!(token_of(&all).ok().flatten().as_deref(), Some("fromheader"));
        let no_header = parts(
            axum::http::Request::builder()
                .uri("/x?middle_auth_token=fromquery")
                .header("cookie", "middle_auth_token=fromcookie"),
        );
        assert_eq!(
            token_of(&no_header).ok().flatten().as_deref(),
            Some("fromquery")
        );
        let cookie_only = parts(
            axum::http::Request::builder()
                .uri("/x")
                .header("cookie", "x=1;middle_auth_token=fromcookie"),
        );
        assert_eq!(
            token_of(&cookie_only).ok().flatten().as_deref(),
            Some("fromcookie")
        );
        let basic = parts(
            axum::http::Request::builder()
                .uri("/x")
                .header("authorization", "Basic abc"),
        );
        assert!(token_of(&basic).is_err());
        let none = parts(axum::http::Request::builder().uri("/x"));
        assert_eq!(token_of(&none).ok().flatten(), None);
    }
}
