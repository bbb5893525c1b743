//! Stage 3's input: the ingest reads each supervoxel chunk's share straight from the work
//! files of stage 2 — the chunk's own edges, and the edges its three high neighbours found
//! across their low faces into it.

use cg_graph::ingest::{ChunkInput, IngestSource};
use cg_graph::GraphError;
use cg_ids::ChunkCoord;

use super::grid::{Chunk, Grid};
use super::supervoxels::read_edges;
use super::work::WorkDir;

pub struct WorkSource {
    work: WorkDir,
    grid: Grid,
    geometry: cg_ids::Geometry,
    chunks: Vec<Chunk>,
    runtime: tokio::runtime::Handle,
}

impl WorkSource {
    /// `chunks`: the supervoxel chunks that hold supervoxels.
    pub fn new(work: WorkDir, grid: Grid, geometry: cg_ids::Geometry, chunks: Vec<Chunk>) -> Self {
        WorkSource {
            work,
            grid,
            geometry,
            chunks,
            runtime: tokio::runtime::Handle::current(),
        }
    }

    async fn load(&self, c: Chunk) -> anyhow::Result<ChunkInput> {
        let own = read_edges(&self.work, c).await?;
        let mut edges = own.edges;
        for xyz in 0..3 {
            let mut n = [i64::from(c[0]), i64::from(c[1]), i64::from(c[2])];
            n[xyz] += 1;
            if !self.grid.contains(n) {
                continue;
            }
            let n = [n[0] as u32, n[1] as u32, n[2] as u32];
            let theirs = read_edges(&self.work, n).await?;
            edges.extend(theirs.edges.into_iter().filter(|e| {
                self.geometry.coords_of(e.a) == c || self.geometry.coords_of(e.b) == c
            }));
        }
        edges.sort_unstable_by_key(|e| (e.a, e.b));
        Ok(ChunkInput {
            supervoxels: own.supervoxels,
            edges,
        })
    }
}

impl IngestSource for WorkSource {
    fn chunks(&self) -> Vec<ChunkCoord> {
        self.chunks.clone()
    }

    fn chunk(&self, coord: ChunkCoord) -> cg_graph::Result<ChunkInput> {
        // The ingest calls this from its tasks on a multi-threaded runtime.
        tokio::task::block_in_place(|| self.runtime.block_on(self.load(coord)))
            .map_err(|e| GraphError::InvalidInput(format!("{e:#}")))
    }
}
