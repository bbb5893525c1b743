//! `chunkedgraph synthesize`: pipeline inputs with a known answer. Labels come from the seeded
//! Voronoi generator or from a label volume (e.g. a dense ground truth); the boundary map
//! gets the defects of real predictions (`cg_segmentation::defects`). Writes the input
//! (`--out`, a boundary map or affinities) and the ground truth it was drawn from.

use std::path::PathBuf;

use anyhow::{bail, Context};
use cg_segmentation::defects::{self, Defects};
use cg_segmentation::synthetic::{voronoi, VoronoiParams};
use cg_volume::{Array, DynArray};

use crate::ingest_cmd::{parse_u32s, Triple};
use crate::pipeline::InputKind;

#[derive(clap::Args)]
pub struct SynthesizeArgs {
    /// Voronoi cells of this size, `x,y,z`.
    #[arg(long, value_parser = parse_u32s, required_unless_present = "labels")]
    size: Option<Triple<u32>>,
    /// Or: draw on this label volume (`.npy`, integer, (z, y, x)); 0 counts as a label too.
    #[arg(long, conflicts_with = "size")]
    labels: Option<PathBuf>,
    /// Mean cell width of the Voronoi volume, voxels.
    #[arg(long, default_value_t = 16.0)]
    cell: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// No defects: a clean membrane band with light white noise.
    #[arg(long)]
    clean: bool,
    /// Scale every defect's strength (rates, noise amplitudes) by this factor.
    #[arg(long, default_value_t = 1.0)]
    severity: f64,
    /// What to write: a boundary map (z, y, x) or affinities (3, z, y, x), float32.
    #[arg(long, value_enum, default_value_t = InputKind::Boundary)]
    kind: InputKind,
    /// Output `.npy`.
    #[arg(long)]
    out: PathBuf,
    /// Where to write the ground truth (uint32, (z, y, x); 0 on voxels touching another
    /// label, as EM annotations mark membranes).
    #[arg(long)]
    ground_truth: Option<PathBuf>,
}

fn read_labels(path: &PathBuf) -> anyhow::Result<([usize; 3], Vec<u64>)> {
    let arr = cg_volume::npy::read(path).with_context(|| format!("reading {}", path.display()))?;
    let shape = arr.shape().to_vec();
    let [z, y, x] = shape[..] else {
        bail!("{}: shape {shape:?} is not (z, y, x)", path.display());
    };
    fn widen<T: Copy + cg_volume::Element>(a: &Array<T>, f: impl Fn(T) -> u64) -> Vec<u64> {
        a.data().iter().map(|&v| f(v)).collect()
    }
    // Signed labels keep their identity through the cast; only equality matters here.
    let data = match &arr {
        DynArray::U8(a) => widen(a, u64::from),
        DynArray::I8(a) => widen(a, |v| v as u64),
        DynArray::U16(a) => widen(a, u64::from),
        DynArray::I16(a) => widen(a, |v| v as u64),
        DynArray::U32(a) => widen(a, u64::from),
        DynArray::I32(a) => widen(a, |v| v as u64),
        DynArray::U64(a) => a.data().to_vec(),
        DynArray::I64(a) => widen(a, |v| v as u64),
        other => bail!(
            "{}: labels must be integers, not {}",
            path.display(),
            other.data_type()
        ),
    };
    Ok(([z, y, x], data))
}

pub fn run(args: SynthesizeArgs) -> anyhow::Result<()> {
    if !(args.severity.is_finite() && args.severity >= 0.0) {
        bail!("--severity {} must be ≥ 0", args.severity);
    }
    let (shape, labels): ([usize; 3], Vec<u64>) = match (&args.labels, args.size) {
        (Some(p), _) => read_labels(p)?,
        (None, Some(s)) => {
            let [x, y, z] = s.0;
            let syn = voronoi(&VoronoiParams {
                shape: [z as usize, y as usize, x as usize],
                cell: args.cell,
                seed: args.seed,
                noise: 0.0,
                ..Default::default()
            })?;
            (syn.shape, syn.cells.iter().map(|&c| u64::from(c)).collect())
        }
        (None, None) => bail!("give --size X,Y,Z or --labels FILE.npy"),
    };
    let base = Defects {
        seed: args.seed,
        ..Default::default()
    };
    let k = args.severity;
    let d = if args.clean {
        Defects {
            correlated_noise: 0.0,
            gap_rate: 0.0,
            false_membranes: 0.0,
            weak_sections: 0.0,
            ..base
        }
    } else {
        Defects {
            correlated_noise: base.correlated_noise * k,
            white_noise: base.white_noise * k,
            gap_rate: (base.gap_rate * k).min(1.0),
            false_membranes: base.false_membranes * k,
            weak_sections: (base.weak_sections * k).min(1.0),
            ..base
        }
    };
    let boundary = defects::draw(shape, &labels, &d)?;
    let out = match args.kind {
        InputKind::Boundary => Array::new(shape.to_vec(), boundary)?,
        InputKind::Affinities => {
            let a = cg_segmentation::Affinities::from_boundary(shape, &boundary)?;
            let mut s = vec![3];
            s.extend(shape);
            Array::new(s, a.into_data())?
        }
    };
    cg_volume::npy::write(&args.out, &out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    if let Some(gt) = &args.ground_truth {
        let truth = ground_truth(shape, &labels);
        cg_volume::npy::write(gt, &Array::new(shape.to_vec(), truth)?)
            .with_context(|| format!("writing {}", gt.display()))?;
    }
    println!(
        "wrote {} ({:?} {:?}, float32){}",
        args.out.display(),
        args.kind,
        out.shape(),
        args.ground_truth
            .as_ref()
            .map(|g| format!(" and the ground truth {}", g.display()))
            .unwrap_or_default()
    );
    Ok(())
}

/// Labels renumbered densely from 1 (in order of first appearance), 0 on voxels that touch
/// another label.
fn ground_truth(shape: [usize; 3], labels: &[u64]) -> Vec<u32> {
    let touching = cg_segmentation::synthetic::touching_another(shape, labels);
    let mut ids = std::collections::HashMap::new();
    labels
        .iter()
        .zip(touching)
        .map(|(l, t)| {
            let n = ids.len() as u32 + 1;
            let id = *ids.entry(*l).or_insert(n);
            if t {
                0
            } else {
                id
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::ground_truth;

    #[test]
    fn ground_truth_blanks_contacts_and_renumbers() {
        let labels = [7u64, 7, 7, 9, 9, 9];
        assert_eq!(ground_truth([1, 1, 6], &labels), vec![1, 1, 0, 0, 2, 2]);
    }
}
