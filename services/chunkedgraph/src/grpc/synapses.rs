//! The synapse RPCs (`RootSynapses`, `SynapticPartners`, `Connectivity`) over `cg-synapse`.

use cg_graph::ChunkedGraph;
use cg_synapse::{Direction, SynapseError, SynapseStore};
use tonic::{Code, Status};

use super::{graph_status, proto, timestamp, BoxStream};

/// Largest `RootSynapses` batch a client may ask for.
const MAX_BATCH: usize = 1_000_000;

fn status(e: SynapseError) -> Status {
    match e {
        SynapseError::Graph(g) => graph_status(g),
        e if e.is_not_found() => Status::new(Code::NotFound, e.to_string()),
        e if e.is_client_error() => Status::new(Code::InvalidArgument, e.to_string()),
        e => {
            tracing::error!("{e}");
            Status::new(Code::Internal, e.to_string())
        }
    }
}

fn direction(d: i32) -> Result<Direction, Status> {
    match proto::SynapseDirection::try_from(d) {
        Ok(proto::SynapseDirection::Both) => Ok(Direction::Both),
        Ok(proto::SynapseDirection::Output) => Ok(Direction::Output),
        Ok(proto::SynapseDirection::Input) => Ok(Direction::Input),
        Err(_) => Err(Status::invalid_argument(format!(
            "direction {d} is none of BOTH (0), OUTPUT (1), INPUT (2)"
        ))),
    }
}

pub async fn root_synapses(
    g: ChunkedGraph,
    r: proto::RootSynapsesRequest,
) -> Result<BoxStream<proto::SynapseBatch>, Status> {
    let at = timestamp(r.timestamp_micros, "timestamp_micros")?;
    let dir = direction(r.direction)?;
    let batch = match r.batch_size as usize {
        0 => 10_000,
        n if n <= MAX_BATCH => n,
        n => {
            return Err(Status::invalid_argument(format!(
                "batch_size {n} is over {MAX_BATCH}"
            )))
        }
    };
    let rows = SynapseStore::new(g)
        .root_synapses(r.root_id, at, dir)
        .await
        .map_err(status)?;
    let total = rows.len() as u64;
    let batches: Vec<proto::SynapseBatch> = rows
        .chunks(batch)
        .enumerate()
        .map(|(k, c)| proto::SynapseBatch {
            ids: c.iter().map(|s| s.id).collect(),
            pre_supervoxel_ids: c.iter().map(|s| s.pre_sv).collect(),
            post_supervoxel_ids: c.iter().map(|s| s.post_sv).collect(),
            pre_root_ids: c.iter().map(|s| s.pre_root).collect(),
            post_root_ids: c.iter().map(|s| s.post_root).collect(),
            pre_positions: c.iter().flat_map(|s| s.pre).collect(),
            post_positions: c.iter().flat_map(|s| s.post).collect(),
            sizes: c.iter().map(|s| s.size).collect(),
            scores: c.iter().map(|s| s.score).collect(),
            offset: (k * batch) as u64,
            total,
        })
        .collect();
    Ok(Box::pin(futures::stream::iter(batches.into_iter().map(Ok))))
}

pub async fn partners(
    g: ChunkedGraph,
    r: proto::SynapticPartnersRequest,
) -> Result<proto::SynapticPartnersResponse, Status> {
    let at = timestamp(r.timestamp_micros, "timestamp_micros")?;
    let dir = direction(r.direction)?;
    let p = SynapseStore::new(g)
        .partners(r.root_id, at, dir)
        .await
        .map_err(status)?;
    Ok(proto::SynapticPartnersResponse {
        partners: p
            .into_iter()
            .map(|p| proto::SynapticPartner {
                root_id: p.root,
                outputs: p.outputs,
                inputs: p.inputs,
                sum_size: p.size,
            })
            .collect(),
    })
}

pub async fn connectivity(
    g: ChunkedGraph,
    r: proto::ConnectivityRequest,
) -> Result<proto::ConnectivityResponse, Status> {
    if r.root_ids.is_empty() {
        return Err(Status::invalid_argument("root_ids is empty"));
    }
    let at = timestamp(r.timestamp_micros, "timestamp_micros")?;
    let m = SynapseStore::new(g)
        .connectivity(&r.root_ids, at)
        .await
        .map_err(status)?;
    Ok(proto::ConnectivityResponse {
        root_ids: m.roots,
        counts: m.counts.into_iter().flatten().collect(),
        sizes: m.sizes.into_iter().flatten().collect(),
    })
}
