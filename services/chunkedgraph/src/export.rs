//! `chunkedgraph export`: the root-ID segmentation of a box at a timestamp, as a `.npy`
//! (uint64, axes z, y, x). The supervoxels come from the graph's precomputed volume
//! (`data_dir` in its metadata); each distinct supervoxel is looked up once, in one batch.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use cg_graph::query::RootQuery;
use cg_graph::ChunkedGraph;
use cg_volume::{Array, BBox, Volume};

use crate::storage::StorageArgs;

#[derive(clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    storage: StorageArgs,
    /// Graph name (the Bigtable table).
    #[arg(long)]
    table: String,
    /// Time of the segmentation: UNIX seconds (fractions allowed). Default: now.
    #[arg(long)]
    timestamp: Option<f64>,
    /// Box in voxels, `x0,y0,z0,x1,y1,z1` (end exclusive). Default: the whole volume.
    #[arg(long, value_parser = parse_bbox)]
    bbox: Option<BBox>,
    /// The supervoxel volume, when the graph's metadata names none (or to override it).
    #[arg(long, value_name = "URL")]
    segmentation: Option<String>,
    /// Output `.npy` file.
    #[arg(long)]
    out: PathBuf,
}

fn parse_bbox(s: &str) -> Result<BBox, String> {
    let v: Vec<i64> = s
        .split(',')
        .map(|p| p.trim().parse::<i64>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{s:?}: {e}; expected x0,y0,z0,x1,y1,z1"))?;
    let [x0, y0, z0, x1, y1, z1] = v[..] else {
        return Err(format!("{s:?}: expected 6 numbers x0,y0,z0,x1,y1,z1"));
    };
    if x1 <= x0 || y1 <= y0 || z1 <= z0 {
        return Err(format!(
            "{s:?}: the box is empty (each end must exceed its start)"
        ));
    }
    Ok(BBox::new([x0, y0, z0], [x1, y1, z1]))
}

pub async fn run(args: ExportArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let (client, backend) = args.storage.connect().await?;
    let graph = ChunkedGraph::open(client, &args.table)
        .await
        .with_context(|| format!("opening graph {} in {backend}", args.table))?;
    let url = match (&args.segmentation, &graph.meta().data_dir) {
        (Some(u), _) => u.clone(),
        (None, Some(u)) => u.clone(),
        (None, None) => bail!(
            "graph {} names no supervoxel volume; pass --segmentation URL",
            args.table
        ),
    };
    let volume = Volume::open(&url)
        .await
        .with_context(|| format!("opening the supervoxel volume {url}"))?;
    let bounds = volume.scale(0)?.bounds();
    let bbox = args.bbox.unwrap_or(bounds);
    if !bounds.contains_box(&bbox) {
        bail!(
            "box {:?}..{:?} is outside the volume {:?}..{:?}",
            bbox.min,
            bbox.max,
            bounds.min,
            bounds.max
        );
    }
    let at = match args.timestamp {
        Some(t) if !t.is_finite() || t < 0.0 => bail!("--timestamp {t} is not a UNIX time"),
        Some(t) => Some((t * 1e6) as i64),
        None => None,
    };

    let t = Instant::now();
    let svs: Array<u64> = volume
        .read_box(0, bbox)
        .await
        .with_context(|| format!("reading {:?}..{:?} from {url}", bbox.min, bbox.max))?;
    let mut distinct: Vec<u64> = svs.data().iter().copied().filter(|&v| v != 0).collect();
    distinct.sort_unstable();
    distinct.dedup();
    eprintln!(
        "export: {} voxels, {} supervoxels read in {:.1} s",
        svs.data().len(),
        distinct.len(),
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let q = RootQuery {
        at,
        ..Default::default()
    };
    let roots = graph
        .roots(&distinct, &q)
        .await
        .context("looking up the roots of the supervoxels")?;
    let root_of: HashMap<u64, u64> = distinct.iter().copied().zip(roots).collect();
    let shape = svs.shape().to_vec();
    let data: Vec<u64> = svs
        .data()
        .iter()
        .map(|&v| if v == 0 { 0 } else { root_of[&v] })
        .collect();
    let distinct_roots = {
        let mut r: Vec<u64> = root_of.values().copied().collect();
        r.sort_unstable();
        r.dedup();
        r.len()
    };
    eprintln!(
        "export: {distinct_roots} roots looked up in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let out = Array::new(shape, data)?;
    cg_volume::npy::write(&args.out, &out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {} ({:?}, uint64, z y x) in {:.1} s",
        args.out.display(),
        out.shape(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_bbox;

    #[test]
    fn bbox_needs_six_increasing_numbers() {
        let b = parse_bbox("0,1,2,10,11,12").expect("valid");
        assert_eq!((b.min, b.max), ([0, 1, 2], [10, 11, 12]));
        assert!(parse_bbox("0,1,2,10,11").is_err());
        assert!(parse_bbox("0,1,2,0,11,12").is_err());
        assert!(parse_bbox("a,1,2,3,4,5").is_err());
    }
}
