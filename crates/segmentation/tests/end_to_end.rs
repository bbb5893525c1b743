//! Watershed + region graph + agglomeration end to end: on a synthetic volume with known
//! cells, and on the gala fixture (EM image, boundary map from a pixel classifier).

use std::path::PathBuf;

use cg_segmentation::agglomeration::relabel;
use cg_segmentation::synthetic::{voronoi, VoronoiParams};
use cg_segmentation::{agglomerate, evaluate, npy, watershed, Affinities, WatershedParams};

/// `shared/data` beside the repository (CI lays it there), or `$CG_SHARED_DATA`.
fn fixture(name: &str) -> PathBuf {
    let dir = std::env::var_os("CG_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    let p = dir.join(name);
    assert!(
        p.exists(),
        "fixture {} missing: set CG_SHARED_DATA to the shared data folder",
        p.display()
    );
    p
}

#[test]
fn synthetic_cells_are_recovered() {
    let syn = voronoi(&VoronoiParams {
        shape: [48, 64, 64],
        cell: 16.0,
        membrane: 1.0,
        noise: 0.3,
        seed: 3,
    })
    .unwrap();
    let gt = syn.ground_truth();
    let cells = *syn.cells.iter().max().unwrap() as usize;
    let affs = syn.affinities().unwrap();
    // Little size merging: the noise leaves many basins per cell for the agglomeration.
    let ws = WatershedParams {
        t_low: 0.0,
        t_high: 0.99,
        t_merge: 0.9,
        t_size: 20,
        t_dust: 10,
    };
    let seg = watershed(&affs, &ws).unwrap();
    let before = evaluate(&seg.labels, &gt).unwrap();
    assert!(
        seg.graph.ids.len() > 5 * cells,
        "{} supervoxels for {cells} cells",
        seg.graph.ids.len()
    );
    // The supervoxels alone split the cells: it takes the agglomeration to meet the bar.
    assert!(
        before.arand > 0.05 && before.voi_split > 0.4,
        "supervoxels alone: {before:?}"
    );

    let agg = agglomerate(&seg.graph, 0.2);
    let mut labels = seg.labels.clone();
    relabel(&mut labels, &seg.graph, &agg.components);
    let after = evaluate(&labels, &gt).unwrap();
    assert!(after.arand < 0.05, "after agglomeration: {after:?}");
    assert!(after.voi() < 0.2, "{after:?}");
    // One large segment per cell (cells hold about 16³ = 4096 voxels); what else is left
    // is small fragments of membrane.
    let mut sizes = std::collections::HashMap::new();
    for &l in &labels {
        *sizes.entry(l).or_insert(0usize) += 1;
    }
    let large = sizes.values().filter(|&&v| v >= 500).count();
    assert_eq!(
        large,
        cells,
        "{} segments, {large} large, {cells} cells",
        sizes.len()
    );
}

#[test]
fn gala_reaches_the_quality_goal() {
    let boundary = npy::read::<f32>(fixture("gala-train-boundary.npy")).unwrap();
    let gt = npy::read::<u32>(fixture("gala-train-gt.npy")).unwrap();
    let shape = boundary.shape3().unwrap();
    assert_eq!(shape, [50, 100, 200]);
    let affs = Affinities::from_boundary(shape, &boundary.data).unwrap();
    // The defaults are the parameters the bench example found best on this volume.
    let seg = watershed(&affs, &WatershedParams::default()).unwrap();
    let agg = agglomerate(&seg.graph, 0.05);
    let mut labels = seg.labels.clone();
    relabel(&mut labels, &seg.graph, &agg.components);
    let s = evaluate(&labels, &gt.data).unwrap();
    assert!(s.arand <= 0.05, "{s:?}");
    assert!(s.voi() < 0.35, "{s:?}");
    // No voxel is left as background: with T_low = 0 saturated membrane voxels join a
    // neighbouring basin (left at 0 they would form one segment spanning many neurons).
    assert!(labels.iter().all(|&l| l != 0));
}
