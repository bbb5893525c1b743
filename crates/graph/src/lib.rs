//! The ChunkedGraph: an octree of chunks whose layers group supervoxels into ever larger
//! components, up to one root per neuron, stored in Bigtable with every change timestamped.
//!
//! - [`ChunkedGraph`] opens or creates a graph in a Bigtable table ([`schema`] is the layout).
//! - [`ingest`] builds the layers chunk by chunk from supervoxels, edges and an agglomeration.
//! - [`query`] answers, now or at any past time: the root of a supervoxel, the leaves of a
//!   root (in a box), children, subgraph edges, the layer-2 graph, and version questions.
//! - [`history`] answers history questions: lineage graphs, past and future IDs, change and
//!   merge logs, operation details and a user's operations.
//! - [`edit`] merges and splits (multicut), undoes and redoes, with locks and crash
//!   recovery; [`events`] tells subscribers what each edit changed.
//! - [`hierarchy`] is the in-memory reference builder; [`synthetic`] makes seeded test graphs.

mod cache;
pub mod edit;
pub mod events;
pub mod hierarchy;
pub mod history;
pub mod ingest;
pub mod mincut;
pub mod oplog;
pub mod query;
pub mod schema;
pub mod synthetic;

use std::sync::Arc;

use cg_bigtable::{mutation, Client};
use cg_ids::{Geometry, IdError};

pub use cache::CacheOptions;
pub use schema::Meta;

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("storage: {0}")]
    Storage(#[from] cg_bigtable::Error),
    #[error(transparent)]
    Id(#[from] IdError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error("the table holds data this version cannot read: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Conflict(String),
}

impl GraphError {
    /// Whether the caller sent something wrong (a 4xx in HTTP terms).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            GraphError::Id(_) | GraphError::NotFound(_) | GraphError::InvalidInput(_)
        )
    }
}

pub type Result<T, E = GraphError> = std::result::Result<T, E>;

/// A graph in one Bigtable table, with its process-wide caches. Cheap to clone.
#[derive(Clone)]
pub struct ChunkedGraph {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    table: String,
    meta: Meta,
    cache: cache::Cache,
    events: events::Events,
    ids: edit::IdPool,
}

impl ChunkedGraph {
    /// Creates the table (if missing) and writes the metadata (if absent). Creating a graph
    /// that already exists with the same geometry opens it; a different geometry is refused.
    pub async fn create(client: Client, table: &str, meta: Meta) -> Result<ChunkedGraph> {
        meta.geometry.validate()?;
        if meta.ingest_timestamp_micros % 1000 != 0 || meta.ingest_timestamp_micros <= 0 {
            return Err(GraphError::InvalidInput(format!(
                "ingest timestamp {} µs must be a positive whole millisecond",
                meta.ingest_timestamp_micros
            )));
        }
        let admin = client.admin();
        match admin.create_table(table, &schema::families()).await {
            Ok(_) => {}
            Err(e) if e.code() == cg_bigtable::Code::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
        match read_meta(&client, table).await? {
            Some(existing) => {
                if existing.geometry != meta.geometry {
                    return Err(GraphError::Conflict(format!(
                        "table {table} already holds a graph with another geometry: {:?}",
                        existing.geometry
                    )));
                }
                Ok(Self::with_meta(
                    client,
                    table,
                    existing,
                    CacheOptions::default(),
                ))
            }
            None => {
                let json = serde_json::to_vec(&meta)
                    .map_err(|e| GraphError::InvalidInput(format!("metadata: {e}")))?;
                // Only the first writer's metadata counts.
                let matched = client
                    .check_and_mutate_row(
                        table,
                        schema::META_KEY,
                        Some(cg_bigtable::filter::column(schema::IMMUTABLE, schema::META)),
                        vec![],
                        vec![mutation::set_cell(
                            schema::IMMUTABLE,
                            schema::META,
                            meta.ingest_timestamp_micros,
                            json,
                        )],
                    )
                    .await?;
                if matched {
                    return Box::pin(Self::open(client, table)).await;
                }
                Ok(Self::with_meta(
                    client,
                    table,
                    meta,
                    CacheOptions::default(),
                ))
            }
        }
    }

    /// Opens an existing graph.
    pub async fn open(client: Client, table: &str) -> Result<ChunkedGraph> {
        Self::open_with(client, table, CacheOptions::default()).await
    }

    pub async fn open_with(
        client: Client,
        table: &str,
        cache: CacheOptions,
    ) -> Result<ChunkedGraph> {
        let meta = match read_meta(&client, table).await {
            Ok(Some(m)) => m,
            Ok(None) => {
                return Err(GraphError::NotFound(format!(
                    "table {table} holds no graph metadata"
                )))
            }
            Err(GraphError::Storage(e)) if e.code() == cg_bigtable::Code::NotFound => {
                return Err(GraphError::NotFound(format!(
                    "no graph table named {table}"
                )))
            }
            Err(e) => return Err(e),
        };
        meta.geometry.validate()?;
        Ok(Self::with_meta(client, table, meta, cache))
    }

    fn with_meta(client: Client, table: &str, meta: Meta, cache: CacheOptions) -> ChunkedGraph {
        ChunkedGraph {
            inner: Arc::new(Inner {
                client,
                table: table.to_string(),
                meta,
                cache: cache::Cache::new(cache),
                events: events::Events::new(),
                ids: edit::IdPool::default(),
            }),
        }
    }

    pub fn geometry(&self) -> &Geometry {
        &self.inner.meta.geometry
    }

    pub fn meta(&self) -> &Meta {
        &self.inner.meta
    }

    pub fn table(&self) -> &str {
        &self.inner.table
    }

    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    pub(crate) fn cache(&self) -> &cache::Cache {
        &self.inner.cache
    }

    pub(crate) fn id_pool(&self) -> &edit::IdPool {
        &self.inner.ids
    }

    pub(crate) fn events(&self) -> &events::Events {
        &self.inner.events
    }

    /// Drops every cached cell (for benchmarks that measure cold reads).
    pub fn clear_cache(&self) {
        self.inner.cache.clear();
    }
}

async fn read_meta(client: &Client, table: &str) -> Result<Option<Meta>> {
    let row = client
        .read_row(
            table,
            schema::META_KEY,
            Some(cg_bigtable::filter::chain([
                cg_bigtable::filter::column(schema::IMMUTABLE, schema::META),
                cg_bigtable::filter::cells_per_column_limit(1),
            ])),
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let Some(cell) = row.cell(schema::IMMUTABLE, schema::META) else {
        return Ok(None);
    };
    let meta: Meta = serde_json::from_slice(&cell.value)
        .map_err(|e| GraphError::Corrupt(format!("graph metadata: {e}")))?;
    if meta.format != schema::FORMAT {
        return Err(GraphError::Corrupt(format!(
            "layout version {} (this build reads {})",
            meta.format,
            schema::FORMAT
        )));
    }
    Ok(Some(meta))
}
