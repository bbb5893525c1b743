//! Meshes for Neuroglancer's `graphene://` source and cloud-volume: the initial meshing of a
//! graph (`chunkedgraph mesh`, also the pipeline's last stage), the fragment store the
//! server's manifest reads, and remeshing after edits inside the server.
//!
//! Initial meshing: every layer-2 chunk is meshed from the supervoxel volume ([`chunk`]),
//! one Draco fragment per layer-2 node, written as one shard per chunk under
//! `initial/2/`. Then, layer by layer up to `max_meshed_layer`, every node with more than
//! one child gets its children's fragments stitched into one (vertices merged where they
//! coincide on the shared Draco lattice), again one shard per chunk. A chunk whose shard
//! exists is skipped, so an interrupted run resumes; `initial/complete` marks the end.
//! [`layout`] has the file layout.

pub mod chunk;
pub mod layout;
pub mod remesh;
pub mod store;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use cg_graph::ChunkedGraph;
use cg_ids::layer_of;
use cg_mesh::Mesh;
use cg_volume::Volume;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use crate::storage::StorageArgs;
use layout::{MeshParams, INITIAL_DIR};

#[derive(clap::Args)]
pub struct MeshArgs {
    #[command(flatten)]
    storage: StorageArgs,
    /// The graph to mesh.
    #[arg(long)]
    table: String,
    /// Highest layer that gets fragments (default: the layer below the roots).
    #[arg(long)]
    max_meshed_layer: Option<u8>,
    /// Simplification error bound in nm (default: five times the smallest voxel side).
    #[arg(long)]
    max_error_nm: Option<f32>,
    /// Chunks meshed at once (default: the number of cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Throw away existing meshes and build them again.
    #[arg(long)]
    rebuild: bool,
}

/// How to run an initial meshing.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    pub max_meshed_layer: Option<u8>,
    pub max_error_nm: Option<f32>,
    pub threads: Option<usize>,
    /// Show progress bars (else only log lines).
    pub progress: bool,
}

/// What an initial meshing did.
#[derive(Clone, Debug, Default)]
pub struct BuildReport {
    pub chunks: usize,
    pub fragments: usize,
    pub skipped_chunks: usize,
    pub triangles: u64,
    pub seconds: f64,
    /// Nothing to do: the meshes were complete already.
    pub already_complete: bool,
}

/// `chunkedgraph mesh`.
pub async fn run(args: MeshArgs) -> anyhow::Result<()> {
    let (client, backend) = args.storage.connect().await?;
    let graph = ChunkedGraph::open(client, &args.table)
        .await
        .with_context(|| format!("opening graph {} in {backend}", args.table))?;
    if args.rebuild {
        let seg = segmentation_dir(&graph)?;
        let dir = layout::mesh_dir(&seg);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    let opts = BuildOptions {
        max_meshed_layer: args.max_meshed_layer,
        max_error_nm: args.max_error_nm,
        threads: args.threads,
        progress: true,
    };
    let r = build(&graph, &opts).await?;
    if r.already_complete {
        println!("meshes of {} are complete already", args.table);
    } else {
        println!(
            "meshed {}: {} chunks ({} resumed), {} fragments, {} triangles in {:.1} s",
            args.table, r.chunks, r.skipped_chunks, r.fragments, r.triangles, r.seconds
        );
    }
    Ok(())
}

/// The graph's local segmentation directory, or an error saying why meshes cannot be made.
pub fn segmentation_dir(graph: &ChunkedGraph) -> anyhow::Result<PathBuf> {
    layout::local_data_dir(graph.meta().data_dir.as_deref()).with_context(|| {
        format!(
            "graph {} has no local supervoxel volume (data_dir {:?}); meshing reads the \
             volume the pipeline or `ingest --segmentation-dir` writes",
            graph.table(),
            graph.meta().data_dir.as_deref().unwrap_or("")
        )
    })
}

/// Opens the supervoxel volume of a segmentation directory.
pub async fn open_volume(seg: &Path) -> anyhow::Result<Volume> {
    let url = format!("file://{}", seg.display());
    Volume::open(&url)
        .await
        .with_context(|| format!("opening the supervoxel volume {url}"))
}

fn progress_bar(show: bool, len: u64, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let template =
        format!("{{spinner}} mesh {what} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {{msg}}");
    bar.set_style(
        ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn threads(opts: &BuildOptions) -> usize {
    opts.threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1)
}

/// Builds (or resumes) a graph's initial meshes under its segmentation directory. The
/// pipeline's last stage and `chunkedgraph mesh` call this.
pub async fn build(graph: &ChunkedGraph, opts: &BuildOptions) -> anyhow::Result<BuildReport> {
    let started = Instant::now();
    let g = graph.geometry().clone();
    let seg = segmentation_dir(graph)?;
    let dir = layout::mesh_dir(&seg);
    let complete = dir.join(INITIAL_DIR).join("complete");
    if complete.exists() {
        return Ok(BuildReport {
            already_complete: true,
            ..Default::default()
        });
    }
    // Parameters of a resumed run win: its fragments were made with them.
    let params = match store::MeshStore::open(&seg, &g)? {
        Some(s) => s.params,
        None => {
            let mut p = MeshParams::for_geometry(&g);
            if let Some(l) = opts.max_meshed_layer {
                anyhow::ensure!(
                    (2..=g.n_layers).contains(&l),
                    "--max-meshed-layer {l} is outside 2..={}",
                    g.n_layers
                );
                p.max_meshed_layer = l;
            }
            if let Some(e) = opts.max_error_nm {
                anyhow::ensure!(e.is_finite() && e >= 0.0, "--max-error-nm {e} is not >= 0");
                p.max_error_nm = e;
            }
            let info = serde_json::to_vec_pretty(&p.info_json(&g))?;
            layout::write_atomic(&dir.join("info"), &info)
                .with_context(|| format!("writing {}", dir.join("info").display()))?;
            p
        }
    };
    let volume = Arc::new(chunk::ChunkCache::new(
        open_volume(&seg).await?,
        CACHE_BYTES,
    )?);
    let mesh_store = Arc::new(store::MeshStore::new(dir.clone(), params, g.clone()));
    let mut report = BuildReport::default();
    let n = threads(opts);

    // Layer 2.
    let grid = g.grid(2);
    let coords: Vec<[u32; 3]> = (0..grid[2])
        .flat_map(|z| (0..grid[1]).flat_map(move |y| (0..grid[0]).map(move |x| [x, y, z])))
        .collect();
    let bar = progress_bar(opts.progress, coords.len() as u64, "layer 2");
    let mut meshes: HashMap<u64, Arc<Mesh>> = HashMap::new();
    let mut results = futures::stream::iter(coords.into_iter().map(|c| {
        let graph = graph.clone();
        let volume = volume.clone();
        let mesh_store = mesh_store.clone();
        async move { layer2_chunk(&graph, &volume, &mesh_store, c).await }
    }))
    .buffer_unordered(n);
    while let Some(r) = results.next().await {
        let r = r?;
        report.chunks += 1;
        report.skipped_chunks += usize::from(r.resumed);
        for (id, m) in r.meshes {
            report.fragments += 1;
            report.triangles += m.triangles.len() as u64;
            meshes.insert(id, Arc::new(m));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    tracing::info!(
        "layer 2: {} chunks, {} fragments in {:.1} s",
        report.chunks,
        report.fragments,
        started.elapsed().as_secs_f64()
    );

    // Higher layers: the ancestors of every layer-2 node up to the meshed layer.
    let mut frontier: Vec<u64> = meshes.keys().copied().collect();
    frontier.sort_unstable();
    frontier.dedup();
    let mut by_layer: BTreeMap<u8, HashSet<u64>> = BTreeMap::new();
    while !frontier.is_empty() {
        let parents = graph.parents(&frontier, None).await?;
        let mut next: Vec<u64> = parents
            .into_iter()
            .flatten()
            .filter(|&p| layer_of(p) <= params.max_meshed_layer)
            .collect();
        next.sort_unstable();
        next.dedup();
        for &p in &next {
            by_layer.entry(layer_of(p)).or_default().insert(p);
        }
        frontier = next;
    }
    for (&layer, nodes) in &by_layer {
        let t = Instant::now();
        let nodes: Vec<u64> = nodes.iter().copied().collect();
        let lists = graph.children(&nodes).await?;
        let mut by_chunk: BTreeMap<u64, Vec<(u64, Vec<u64>)>> = BTreeMap::new();
        for (&node, list) in nodes.iter().zip(lists) {
            by_chunk
                .entry(g.chunk_of(node))
                .or_default()
                .push((node, list.ids.clone()));
        }
        let bar = progress_bar(
            opts.progress,
            by_chunk.len() as u64,
            &format!("layer {layer}"),
        );
        let shared = Arc::new(meshes);
        let mut results = futures::stream::iter(by_chunk.into_values().map(|nodes| {
            let shared = shared.clone();
            let mesh_store = mesh_store.clone();
            async move {
                tokio::task::spawn_blocking(move || stitch_chunk(&mesh_store, &shared, nodes))
                    .await
                    .context("stitching task")?
            }
        }))
        .buffer_unordered(n);
        let mut made = Vec::new();
        while let Some(r) = results.next().await {
            let r = r?;
            report.chunks += 1;
            report.skipped_chunks += usize::from(r.resumed);
            made.extend(r.meshes);
            bar.inc(1);
        }
        drop(results);
        bar.finish_and_clear();
        meshes = Arc::try_unwrap(shared).unwrap_or_else(|a| (*a).clone());
        let stitched = made.iter().filter(|(_, _, own)| *own).count();
        for (id, m, own) in made {
            if own {
                report.fragments += 1;
                report.triangles += m.triangles.len() as u64;
            }
            meshes.insert(id, m);
        }
        tracing::info!(
            "layer {layer}: {stitched} stitched fragments in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    layout::write_atomic(&complete, b"")?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Decoded supervoxel chunks kept while meshing (a block reads 27 chunks; its neighbours
/// share most of them).
pub const CACHE_BYTES: usize = 256 << 20;

struct ChunkResult {
    resumed: bool,
    meshes: Vec<(u64, Mesh)>,
}

/// Meshes one layer-2 chunk into its shard, or reads back the shard a previous run wrote.
async fn layer2_chunk(
    graph: &ChunkedGraph,
    volume: &chunk::ChunkCache,
    mesh_store: &store::MeshStore,
    coord: [u32; 3],
) -> anyhow::Result<ChunkResult> {
    let g = graph.geometry();
    let chunk_id = g.chunk_id(2, coord)?;
    let path = mesh_store.initial_path(chunk_id);
    if path.exists() {
        return Ok(ChunkResult {
            resumed: true,
            meshes: read_shard(mesh_store, &path)?,
        });
    }
    let t = Instant::now();
    let block = chunk::load(graph, volume, coord).await?;
    let loaded = t.elapsed().as_secs_f64();
    let g2 = g.clone();
    let params = mesh_store.params;
    let fragments =
        tokio::task::spawn_blocking(move || chunk::mesh_block(&g2, &block, &params, None))
            .await
            .context("meshing task")??;
    tracing::debug!(
        "chunk {coord:?}: loaded in {:.0} ms, meshed in {:.0} ms",
        loaded * 1e3,
        (t.elapsed().as_secs_f64() - loaded) * 1e3
    );
    let mut entries = BTreeMap::new();
    let mut meshes = Vec::new();
    for f in fragments {
        if let Some(bytes) = f.draco {
            meshes.push((f.node, cg_mesh::draco::decode(&bytes)?));
            entries.insert(f.node, Bytes::from(bytes));
        }
    }
    write_shard(mesh_store, &path, &entries)?;
    Ok(ChunkResult {
        resumed: false,
        meshes,
    })
}

fn write_shard(
    mesh_store: &store::MeshStore,
    path: &Path,
    entries: &BTreeMap<u64, Bytes>,
) -> anyhow::Result<()> {
    let file = cg_volume::shard::encode_shard(&mesh_store.params.sharding(), entries);
    layout::write_atomic(path, &file).with_context(|| format!("writing {}", path.display()))
}

/// Every fragment of a shard file, decoded.
fn read_shard(mesh_store: &store::MeshStore, path: &Path) -> anyhow::Result<Vec<(u64, Mesh)>> {
    let file = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let entries = cg_volume::shard::decode_shard(&mesh_store.params.sharding(), &file)
        .map_err(|e| anyhow::anyhow!("shard {}: {e}", path.display()))?;
    entries
        .into_iter()
        .map(|(id, bytes)| {
            let m = cg_mesh::draco::decode(&bytes)
                .with_context(|| format!("decoding {id} in {}", path.display()))?;
            Ok((id, m))
        })
        .collect()
}

struct StitchResult {
    resumed: bool,
    /// (node, mesh, whether it has a fragment of its own).
    meshes: Vec<(u64, Arc<Mesh>, bool)>,
}

/// Stitches the nodes of one higher-layer chunk into its shard. A node with one child gets
/// no fragment of its own (the manifest lists the child instead), but stands for the
/// child's mesh in the layers above.
fn stitch_chunk(
    mesh_store: &store::MeshStore,
    meshes: &HashMap<u64, Arc<Mesh>>,
    nodes: Vec<(u64, Vec<u64>)>,
) -> anyhow::Result<StitchResult> {
    let Some(&(first, _)) = nodes.first() else {
        return Ok(StitchResult {
            resumed: false,
            meshes: Vec::new(),
        });
    };
    let path = mesh_store.initial_path(first);
    let existing: Option<HashMap<u64, Mesh>> = if path.exists() {
        Some(read_shard(mesh_store, &path)?.into_iter().collect())
    } else {
        None
    };
    let mut out = Vec::new();
    let mut entries = BTreeMap::new();
    for (node, children) in nodes {
        let parts: Vec<&Mesh> = children
            .iter()
            .filter_map(|c| meshes.get(c).map(|m| m.as_ref()))
            .collect();
        if parts.is_empty() {
            continue;
        }
        if children.len() == 1 {
            if let Some(m) = meshes.get(&children[0]) {
                out.push((node, m.clone(), false));
            }
            continue;
        }
        if let Some(existing) = &existing {
            if let Some(m) = existing.get(&node) {
                out.push((node, Arc::new(m.clone()), true));
            }
            continue;
        }
        let stitched = stitch(&parts);
        if let Some(bytes) = chunk::encode(&stitched, mesh_store.params.uniform_draco_grid_size)? {
            // What clients decode, so the layers above stitch exactly that.
            let decoded = cg_mesh::draco::decode(&bytes)?;
            entries.insert(node, Bytes::from(bytes));
            out.push((node, Arc::new(decoded), true));
        }
    }
    let resumed = existing.is_some();
    if !resumed {
        write_shard(mesh_store, &path, &entries)?;
    }
    Ok(StitchResult {
        resumed,
        meshes: out,
    })
}

/// Children's fragments as one mesh, with coinciding vertices merged.
pub fn stitch(parts: &[&Mesh]) -> Mesh {
    let mut m = Mesh::stitch(parts.iter().copied());
    m.compact();
    m
}

/// The pipeline's last stage (also run by `quickstart`): builds the initial meshes, or
/// says they are complete; a graph without a local supervoxel volume is skipped.
pub async fn pipeline_stage(graph: &ChunkedGraph) -> anyhow::Result<()> {
    if segmentation_dir(graph).is_err() {
        eprintln!("pipeline: meshes skipped (no local supervoxel volume)");
        return Ok(());
    }
    let opts = BuildOptions {
        progress: true,
        ..Default::default()
    };
    let r = build(graph, &opts).await.context("meshing")?;
    if r.already_complete {
        eprintln!("pipeline: meshes are complete");
    } else {
        eprintln!(
            "pipeline: meshes: {} fragments, {} triangles in {:.1} s",
            r.fragments, r.triangles, r.seconds
        );
    }
    Ok(())
}
