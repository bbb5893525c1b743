//! History routes (change logs, lineage, past IDs, operation details). They need
//! `cg_graph::history`, which is not there yet.

use axum::Router;

use super::Shared;

pub fn routes() -> Router<Shared> {
    Router::new()
}
