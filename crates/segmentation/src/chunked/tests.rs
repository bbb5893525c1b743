use super::*;
use crate::rng::SplitMix64;
use crate::synthetic::{voronoi, VoronoiParams};
use crate::watershed;

/// The whole-volume supervoxels renamed as the chunked run names them: first voxel + 1.
fn first_voxel_ids(labels: &[u64]) -> Vec<u64> {
    let mut first = FxHashMap::default();
    for (i, &l) in labels.iter().enumerate() {
        first.entry(l).or_insert(i as u64 + 1);
    }
    labels
        .iter()
        .map(|l| if *l == 0 { 0 } else { first[l] })
        .collect()
}

fn noisy_volume(shape: [usize; 3], seed: u64, quantize: bool) -> Affinities {
    let s = voronoi(&VoronoiParams {
        shape,
        cell: 9.0,
        membrane: 1.0,
        noise: 0.25,
        seed,
    })
    .unwrap();
    let mut affs = s.affinities().unwrap();
    if quantize {
        // Coarse affinities make ties everywhere: plateaus, equal edge weights.
        for v in affs.data_mut() {
            *v = (*v * 8.0).round() / 8.0;
        }
    }
    affs
}

/// Random affinities on four levels: plateaus of every shape and size.
fn plateau_volume(shape: [usize; 3], seed: u64) -> Affinities {
    let mut rng = SplitMix64::new(seed);
    let data = (0..3 * voxel_count(shape))
        .map(|_| 0.2 * (1 + rng.below(4)) as f32)
        .collect();
    Affinities::new(shape, data).unwrap()
}

/// Runs both ways and compares supervoxels, region graph and agglomeration.
fn check(affs: &Affinities, params: &ChunkedParams, what: &str) -> ChunkedRun {
    let whole = watershed(affs, &params.watershed).unwrap();
    let got = run(affs, params, |_, _| {}).unwrap();
    let labels = got.assemble();
    let want = first_voxel_ids(&whole.labels);
    if let Some(i) = (0..labels.len()).find(|&i| labels[i] != want[i]) {
        panic!(
            "{what}: voxel {:?} is {} chunked, {} whole",
            coords(i as u64, affs.shape()),
            labels[i],
            want[i]
        );
    }
    // Ids are first voxels + 1 in ascending order: node i is whole-volume node i.
    let (g, w) = (&got.finished.graph, &whole.graph);
    assert_eq!(g.ids.len(), w.ids.len(), "{what}");
    for (i, &id) in g.ids.iter().enumerate() {
        assert_eq!(want[id as usize - 1], id, "{what}");
        assert_eq!(whole.labels[id as usize - 1], w.ids[i], "{what}");
    }
    assert_eq!(g.sizes, w.sizes, "{what}");
    assert_eq!(g.edges.len(), w.edges.len(), "{what}: edges");
    for (a, b) in g.edges.iter().zip(&w.edges) {
        assert_eq!(
            (a.a, a.b, a.area, a.max),
            (b.a, b.b, b.area, b.max),
            "{what}"
        );
        assert!(
            (a.sum - b.sum).abs() <= 1e-9 * b.sum.abs().max(1.0),
            "{what}"
        );
    }
    let agg = crate::agglomerate(w, params.threshold);
    let ours = &got.finished.agglomeration.components;
    for (i, &theirs) in agg.components.iter().enumerate() {
        // Components are named by their smallest member: map whole ids to first voxels.
        assert_eq!(
            ours[i],
            g.ids[w.node(theirs).unwrap() as usize],
            "{what}: node {i}"
        );
    }
    assert_eq!(
        got.finished.agglomeration.merges.len(),
        agg.merges.len(),
        "{what}"
    );
    got
}

fn ws_params() -> WatershedParams {
    WatershedParams {
        t_low: 0.05,
        t_high: 0.98,
        t_merge: 0.5,
        t_size: 30,
        t_dust: 8,
    }
}

#[test]
fn task_tree_covers_the_volume() {
    let tree = TaskTree::new([20, 33, 8], [8, 8, 8]).unwrap();
    assert_eq!(tree.counts(0), [3, 5, 1]);
    assert_eq!(tree.levels(), 4);
    let root = tree.root().unwrap();
    assert_eq!(tree.core(root), Box3::whole([20, 33, 8]));
    let mut covered = vec![0u8; 20 * 33 * 8];
    for t in tree.tasks(0) {
        let b = tree.core(t);
        for z in b.start[0]..b.stop[0] {
            for y in b.start[1]..b.stop[1] {
                for x in b.start[2]..b.stop[2] {
                    covered[raster([z, y, x], [20, 33, 8])] += 1;
                }
            }
        }
        assert_eq!(tree.ancestors(t).last(), Some(&root));
    }
    assert!(covered.iter().all(|&c| c == 1));
    for level in 1..tree.levels() {
        for t in tree.tasks(level) {
            let kids = tree.children(t);
            assert!(!kids.is_empty());
            let n: usize = kids
                .iter()
                .map(|&k| voxel_count(tree.core(k).shape()))
                .sum();
            assert_eq!(n, voxel_count(tree.core(t).shape()));
            assert!(kids.iter().all(|&k| tree.parent(k) == Some(t)));
        }
    }
    assert!(TaskTree::new([4, 4, 4], [0, 1, 1]).is_err());
    assert!(TaskTree::new([0, 4, 4], [2, 2, 2]).unwrap().is_empty());
}

#[test]
fn chunked_equals_whole_on_noisy_volumes() {
    let shape = [30, 40, 36];
    for (seed, quantize) in [(1, false), (2, true)] {
        let affs = noisy_volume(shape, seed, quantize);
        for (chunk, ghost) in [
            ([8, 8, 8], 2),
            ([16, 24, 20], 3),
            ([32, 32, 32], 5),
            ([7, 13, 11], 2),
            ([64, 64, 64], 2),
            ([30, 8, 36], 0),
        ] {
            let params = ChunkedParams {
                chunk_size: chunk,
                ghost,
                watershed: ws_params(),
                threshold: 0.3,
                threads: 2,
            };
            check(
                &affs,
                &params,
                &format!("seed {seed} chunk {chunk:?} ghost {ghost}"),
            );
        }
    }
}

#[test]
fn chunked_equals_whole_on_plateaus() {
    for seed in 3..6 {
        let affs = plateau_volume([14, 20, 24], seed);
        for (chunk, ghost) in [([4, 5, 6], 2), ([8, 8, 8], 4), ([5, 20, 7], 3)] {
            for ws in [
                WatershedParams {
                    t_low: 0.05,
                    t_high: 0.98,
                    t_merge: 2.0,
                    t_size: 0,
                    t_dust: 0,
                },
                WatershedParams {
                    t_low: 0.3,
                    t_high: 0.7,
                    t_merge: 0.5,
                    t_size: 20,
                    t_dust: 5,
                },
            ] {
                let params = ChunkedParams {
                    chunk_size: chunk,
                    ghost,
                    watershed: ws,
                    threshold: 0.5,
                    threads: 2,
                };
                check(
                    &affs,
                    &params,
                    &format!("plateaus {seed} {chunk:?}+{ghost} {ws:?}"),
                );
            }
        }
    }
}

/// Every task on its own, outputs passed as bytes, as separate processes would.
#[test]
fn tasks_run_separately_through_bytes() {
    let affs = noisy_volume([24, 30, 28], 7, true);
    let params = ChunkedParams {
        chunk_size: [8, 10, 9],
        ghost: 2,
        watershed: ws_params(),
        threshold: 0.3,
        threads: 1,
    };
    let tree = TaskTree::new(affs.shape(), params.chunk_size).unwrap();
    let mut stored: FxHashMap<TaskId, Vec<u8>> = FxHashMap::default();
    let mut uncertain = 0;
    for level in 0..tree.levels() {
        for t in tree.tasks(level) {
            let kids: Vec<TaskOutput> = tree
                .children(t)
                .iter()
                .map(|c| TaskOutput::from_bytes(&stored[c]).unwrap())
                .collect();
            let refs: Vec<&TaskOutput> = kids.iter().collect();
            let out = run_task(&affs, &tree, t, &params, &refs).unwrap();
            uncertain += out.uncertain_voxels();
            let bytes = out.to_bytes();
            assert_eq!(TaskOutput::from_bytes(&bytes).unwrap(), out);
            assert!(TaskOutput::from_bytes(&bytes[..bytes.len() - 1]).is_err());
            stored.insert(t, bytes);
        }
    }
    // Quantized affinities leave plateaus across the chunk faces for the parents.
    assert!(uncertain > 0);
    let outs: Vec<TaskOutput> = (0..tree.levels())
        .flat_map(|l| tree.tasks(l))
        .map(|t| TaskOutput::from_bytes(&stored[&t]).unwrap())
        .collect();
    // The graph step reads only the graph parts; its result travels as bytes too.
    let parts = outs.iter().map(|o| {
        let bytes = o.graph.to_bytes();
        GraphPart::from_bytes(&bytes).unwrap()
    });
    let finished = finish(parts, &params).unwrap();
    let bytes = finished.to_bytes();
    let finished = Finished::from_bytes(&bytes).unwrap();
    assert!(Finished::from_bytes(&bytes[..bytes.len() - 3]).is_err());
    let agg = crate::agglomerate(&finished.graph, params.threshold);
    assert_eq!(finished.agglomeration, agg);
    let whole = first_voxel_ids(&watershed(&affs, &params.watershed).unwrap().labels);
    let shape = affs.shape();
    for leaf in outs.iter().filter(|o| o.task.level == 0) {
        let anc: Vec<&[(u64, u64)]> = tree
            .ancestors(leaf.task)
            .iter()
            .map(|a| {
                outs.iter()
                    .find(|o| o.task == *a)
                    .unwrap()
                    .renames
                    .as_slice()
            })
            .collect();
        let labels = chunk_labels(leaf, &anc, &finished).unwrap();
        let b = leaf.core;
        let cs = b.shape();
        for (k, &l) in labels.iter().enumerate() {
            let c = coords(k as u64, cs);
            let g = raster([0, 1, 2].map(|a| c[a] + b.start[a]), shape);
            assert_eq!(l, whole[g], "voxel {g}");
        }
    }
    assert!(TaskOutput::from_bytes(b"nonsense").is_err());
    assert!(GraphPart::from_bytes(b"CGCG\x01\0\0\0\xff").is_err());
}

#[test]
fn tiny_random_volumes_and_chunks() {
    // Three affinity levels on small volumes: plateaus cross every chunk face in every
    // way, and uncertain voxels sit deep inside chunks of a few voxels. CG_FUZZ_SEEDS runs
    // more.
    let seeds = std::env::var("CG_FUZZ_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300u64);
    for seed in 0..seeds {
        let mut rng = SplitMix64::new(seed);
        let shape = [0, 1, 2].map(|_| 1 + rng.below(9) as usize);
        let data = (0..3 * voxel_count(shape))
            .map(|_| 0.2 * (1 + rng.below(3)) as f32)
            .collect();
        let affs = Affinities::new(shape, data).unwrap();
        let params = ChunkedParams {
            chunk_size: [0, 1, 2].map(|_| 1 + rng.below(5) as usize),
            ghost: rng.below(4) as usize,
            watershed: WatershedParams {
                t_low: 0.3,
                t_high: 0.5 + 0.2 * rng.below(2) as f32,
                t_merge: 0.3,
                t_size: rng.below(6),
                t_dust: rng.below(3),
            },
            threshold: 0.3,
            threads: 2,
        };
        check(
            &affs,
            &params,
            &format!("seed {seed}: {shape:?} {params:?}"),
        );
    }
}

/// `shared/data` beside the repository (CI lays it there), or `$CG_SHARED_DATA`.
fn fixture(name: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("CG_SHARED_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data")
        });
    let p = dir.join(name);
    assert!(
        p.exists(),
        "fixture {} missing: set CG_SHARED_DATA to the shared data folder",
        p.display()
    );
    p
}

#[test]
fn chunked_equals_whole_on_gala() {
    let boundary = crate::npy::read::<f32>(fixture("gala-train-boundary.npy")).unwrap();
    let shape = boundary.shape3().unwrap();
    let affs = Affinities::from_boundary(shape, &boundary.data).unwrap();
    let params = ChunkedParams {
        chunk_size: [16, 32, 48],
        ghost: 4,
        watershed: WatershedParams::default(),
        threshold: 0.05,
        threads: 2,
    };
    let got = check(&affs, &params, "gala");
    let n = got.finished.graph.ids.len();
    assert!(n > 50, "{n} supervoxels");
}

#[test]
fn progress_counts_every_step_and_bad_input_is_refused() {
    let affs = noisy_volume([12, 14, 16], 9, false);
    let params = ChunkedParams {
        chunk_size: [5, 6, 7],
        ghost: 3,
        watershed: ws_params(),
        threshold: 0.3,
        threads: 2,
    };
    let seen = Mutex::new(Vec::new());
    let got = run(&affs, &params, |done, total| {
        seen.lock().unwrap().push((done, total))
    })
    .unwrap();
    let mut seen = seen.into_inner().unwrap();
    seen.sort_unstable();
    let total = got.tree.len() + 1 + got.chunks.len();
    assert_eq!(seen, (1..=total).map(|d| (d, total)).collect::<Vec<_>>());

    let tree = TaskTree::new(affs.shape(), params.chunk_size).unwrap();
    let root = tree.root().unwrap();
    // A parent without its children, a task outside the tree, a source of another shape.
    assert!(run_task(&affs, &tree, root, &params, &[]).is_err());
    let outside = TaskId {
        level: 0,
        index: [9, 0, 0],
    };
    assert!(run_task(&affs, &tree, outside, &params, &[]).is_err());
    let other = TaskTree::new([4, 4, 4], params.chunk_size).unwrap();
    assert!(run_task(&affs, &other, other.root().unwrap(), &params, &[]).is_err());
    let bad = ChunkedParams {
        chunk_size: [0, 1, 1],
        ..params
    };
    assert!(run(&affs, &bad, |_, _| {}).is_err());
    // An empty volume has no tasks and no supervoxels.
    let empty = Affinities::new([0, 3, 3], vec![]).unwrap();
    let got = run(&empty, &params, |_, _| {}).unwrap();
    assert!(got.chunks.is_empty() && got.finished.graph.ids.is_empty());
}

#[test]
fn tiny_boundary_maps_with_saturated_membranes() {
    // Affinities from coarse boundary maps, with every voxel kept (T_low = 0): saturated
    // membrane makes sheets of zero-affinity plateaus, and a voxel above its neighbours has
    // six equal edges, as on real data.
    let seeds = std::env::var("CG_FUZZ_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200u64);
    for seed in 0..seeds {
        let mut rng = SplitMix64::new(1000 + seed);
        let shape = [0, 1, 2].map(|_| 2 + rng.below(10) as usize);
        let boundary: Vec<f32> = (0..voxel_count(shape))
            .map(|_| 0.25 * rng.below(5) as f32)
            .collect();
        let affs = Affinities::from_boundary(shape, &boundary).unwrap();
        let params = ChunkedParams {
            chunk_size: [0, 1, 2].map(|_| 2 + rng.below(5) as usize),
            ghost: 2 + rng.below(3) as usize,
            watershed: WatershedParams {
                t_low: 0.0,
                t_high: 0.9,
                t_merge: 0.3,
                t_size: rng.below(12),
                t_dust: rng.below(4),
            },
            threshold: 0.3,
            threads: 2,
        };
        check(
            &affs,
            &params,
            &format!("seed {seed}: {shape:?} {params:?}"),
        );
    }
}
