use super::*;
use crate::rng::SplitMix64;
use crate::synthetic::{voronoi, VoronoiParams};

/// A 1 × 1 × (k+1) line whose x affinities between voxel i and i+1 are `edges[i]`.
fn line(edges: &[f32]) -> Affinities {
    let n = edges.len() + 1;
    let mut data = vec![0f32; 3 * n];
    data[2 * n + 1..].copy_from_slice(edges);
    Affinities::new([1, 1, n], data).unwrap()
}

/// No merging, no dust: the watershed basins numbered in raster order.
fn plain(t_low: f32, t_high: f32) -> WatershedParams {
    WatershedParams {
        t_low,
        t_high,
        t_merge: 2.0,
        t_size: 0,
        t_dust: 0,
    }
}

#[test]
fn two_basins_on_a_line() {
    // Maxima 0.9 (voxels 0–1) and 0.95 (voxels 4–5); voxel 2 climbs to 1, voxels 3 and 6
    // climb to 4 and 5; the 0.2 edge between 2 and 3 is the watershed line.
    let affs = line(&[0.9, 0.8, 0.2, 0.7, 0.95, 0.6]);
    let seg = watershed(&affs, &plain(0.0001, 0.9999)).unwrap();
    assert_eq!(seg.labels, vec![1, 1, 1, 2, 2, 2, 2]);
    assert_eq!(seg.graph.ids, vec![1, 2]);
    assert_eq!(seg.graph.sizes, vec![3, 4]);
    assert_eq!(seg.graph.edges.len(), 1);
    let e = seg.graph.edges[0];
    assert_eq!((e.a, e.b, e.area, e.max), (0, 1, 1, 0.2));
    assert!((e.sum - 0.2).abs() < 1e-7);
}

#[test]
fn a_plateau_between_two_maxima_is_divided_evenly() {
    // Voxels 2..=6 form a plateau at 0.5 with exits at 2 (towards the maximum 0–1) and 6
    // (towards 7–8). Breadth-first from both exits: 3 goes with 2, 5 with 6, and 4, equally
    // far from both, with the exit first in raster order (2).
    let affs = line(&[0.9, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.9]);
    let b = basins(&affs, 0.0001, 0.9999).unwrap();
    assert_eq!(b.count, 2);
    assert_eq!(b.labels, vec![1, 1, 1, 1, 1, 2, 2, 2, 2]);
    // One step longer: the plateau 2..=7 splits 3 | 3.
    let affs = line(&[0.9, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.9]);
    let b = basins(&affs, 0.0001, 0.9999).unwrap();
    assert_eq!(b.labels, vec![1, 1, 1, 1, 1, 2, 2, 2, 2, 2]);
}

#[test]
fn a_plateau_without_exit_is_one_basin() {
    // 1 × 3 × 3, every edge 0.5: all voxels keep all their edges both ways.
    let shape = [1, 3, 3];
    let mut data = vec![0.5f32; 27];
    for (i, v) in data.iter_mut().enumerate() {
        if !has_back_neighbour(shape, i / 9, i % 9) {
            *v = 0.0;
        }
    }
    let affs = Affinities::new(shape, data).unwrap();
    let b = basins(&affs, 0.0001, 0.9999).unwrap();
    assert_eq!((b.count, b.labels), (1, vec![1; 9]));
}

fn has_back_neighbour(shape: [usize; 3], c: usize, i: usize) -> bool {
    crate::affinity::has_neighbour(shape, c, i)
}

#[test]
fn t_low_cuts_and_t_high_joins() {
    // The 0.05 edge is below T_low = 0.1: never followed, even with a huge size threshold.
    let affs = line(&[0.9, 0.05, 0.9]);
    let params = WatershedParams {
        t_low: 0.1,
        t_high: 0.9999,
        t_merge: 0.0,
        t_size: 1000,
        t_dust: 0,
    };
    assert_eq!(watershed(&affs, &params).unwrap().labels, vec![1, 1, 2, 2]);
    // A voxel whose best edge is below T_low is background.
    let affs = line(&[0.9, 0.05]);
    assert_eq!(watershed(&affs, &params).unwrap().labels, vec![1, 1, 0]);
    // Two maxima (0.99) joined by 0.95: two basins, unless 0.95 reaches T_high.
    let affs = line(&[0.99, 0.95, 0.99]);
    assert_eq!(basins(&affs, 0.0001, 0.9999).unwrap().count, 2);
    assert_eq!(basins(&affs, 0.0001, 0.95).unwrap().count, 1);
    assert!(watershed(&affs, &plain(0.5, 0.4)).is_err());
    assert!(watershed(&affs, &plain(f32::NAN, 0.4)).is_err());
}

#[test]
fn empty_and_single_voxel_volumes() {
    for shape in [[0, 3, 3], [2, 3, 0], [0, 0, 0]] {
        let affs = Affinities::new(shape, vec![]).unwrap();
        let seg = watershed(&affs, &WatershedParams::default()).unwrap();
        assert!(seg.labels.is_empty() && seg.graph.ids.is_empty());
    }
    // One voxel has no edge at all: background whatever T_low is (there is no maximum to
    // keep), and so is dust-free.
    let affs = Affinities::new([1, 1, 1], vec![0.0; 3]).unwrap();
    let seg = watershed(&affs, &plain(0.0, 0.9)).unwrap();
    assert_eq!(seg.labels, vec![0]);
}

#[test]
fn size_dependent_merging_and_dust() {
    // Basins of 3 and 4 voxels touching at 0.2.
    let affs = line(&[0.9, 0.8, 0.2, 0.7, 0.95, 0.6]);
    let run = |t_low, t_merge, t_size, t_dust| {
        let p = WatershedParams {
            t_low,
            t_high: 0.9999,
            t_merge,
            t_size,
            t_dust,
        };
        watershed(&affs, &p).unwrap().labels
    };
    // Edge ≥ T_merge and a side smaller than T_size: merged.
    assert_eq!(run(0.0001, 0.1, 4, 0), vec![1; 7]);
    // Neither side smaller than T_size (3 < 3 is false): kept apart.
    assert_eq!(run(0.0001, 0.1, 3, 0), vec![1, 1, 1, 2, 2, 2, 2]);
    // Edge below T_merge: no size merge.
    assert_eq!(run(0.0001, 0.3, 100, 0), vec![1, 1, 1, 2, 2, 2, 2]);
    // Dust (< 4 voxels) connected at or above T_low joins its neighbour...
    assert_eq!(run(0.0001, 0.3, 0, 4), vec![1; 7]);
    // ...and is removed when its only edge is below T_low.
    assert_eq!(run(0.25, 0.3, 0, 4), vec![0, 0, 0, 1, 1, 1, 1]);
    // Both below T_dust and apart: both removed.
    assert_eq!(run(0.25, 0.3, 0, 5), vec![0; 7]);
}

fn noisy_volume(seed: u64, quantize: bool) -> (Affinities, Vec<u32>) {
    let s = voronoi(&VoronoiParams {
        shape: [18, 26, 30],
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
    (affs, s.ground_truth())
}

/// Random affinities on four levels: plateaus of every shape and size.
fn plateau_volume(seed: u64) -> Affinities {
    let mut rng = SplitMix64::new(seed);
    let shape = [14, 20, 24];
    let data = (0..3 * voxel_count(shape))
        .map(|_| 0.2 * (1 + rng.below(4)) as f32)
        .collect();
    Affinities::new(shape, data).unwrap()
}

fn six_connected(shape: [usize; 3], labels: &[u64]) -> bool {
    let [nz, ny, nx] = shape;
    let n = labels.len();
    let mut seen = vec![false; n];
    let mut done = std::collections::HashSet::new();
    for s in 0..n {
        if seen[s] || labels[s] == 0 {
            continue;
        }
        if !done.insert(labels[s]) {
            return false;
        }
        let mut stack = vec![s];
        seen[s] = true;
        while let Some(i) = stack.pop() {
            let (z, y, x) = (i / (ny * nx), (i / nx) % ny, i % nx);
            let nb = [
                (z > 0).then(|| i - ny * nx),
                (z + 1 < nz).then(|| i + ny * nx),
                (y > 0).then(|| i - nx),
                (y + 1 < ny).then(|| i + nx),
                (x > 0).then(|| i - 1),
                (x + 1 < nx).then(|| i + 1),
            ];
            for j in nb.into_iter().flatten() {
                if !seen[j] && labels[j] == labels[i] {
                    seen[j] = true;
                    stack.push(j);
                }
            }
        }
    }
    true
}

#[test]
fn invariants_on_noisy_volumes() {
    for (seed, quantize) in [(1, false), (2, true), (3, true)] {
        let (affs, _) = noisy_volume(seed, quantize);
        let shape = affs.shape();
        let params = WatershedParams {
            t_low: 0.05,
            t_high: 0.98,
            t_merge: 0.5,
            t_size: 30,
            t_dust: 8,
        };
        let b = basins(&affs, params.t_low, params.t_high).unwrap();
        let seg = watershed(&affs, &params).unwrap();
        assert!(b.count as usize > seg.graph.ids.len(), "merging happened");
        // Segments are connected and numbered in raster order of their first voxel.
        assert!(six_connected(shape, &seg.labels));
        let mut next = 1;
        for &l in &seg.labels {
            if l == next {
                next += 1;
            }
            assert!(l < next, "label {l} before {next}");
        }
        assert_eq!(next - 1, seg.graph.ids.len() as u64);
        // Every segment is a union of basins (merging never cuts a basin).
        let mut of_basin = std::collections::HashMap::new();
        for (l, s) in b.labels.iter().zip(&seg.labels) {
            if *s != 0 {
                assert_eq!(*of_basin.entry(*l).or_insert(*s), *s);
            }
        }
        // The contracted region graph equals the one computed from the voxels.
        let direct = RegionGraph::from_labels(shape, &seg.labels, &affs).unwrap();
        assert_eq!(direct.ids, seg.graph.ids);
        assert_eq!(direct.sizes, seg.graph.sizes);
        assert_eq!(direct.edges.len(), seg.graph.edges.len());
        for (d, s) in direct.edges.iter().zip(&seg.graph.edges) {
            assert_eq!((d.a, d.b, d.area, d.max), (s.a, s.b, s.area, s.max));
            assert!((d.sum - s.sum).abs() < 1e-6 * d.area as f64);
        }
        // What single linkage guarantees at the end: no edge ≥ T_merge joins a segment
        // smaller than T_size; no edge ≥ T_low touches dust; no dust is left.
        for e in &seg.graph.edges {
            let (sa, sb) = (seg.graph.sizes[e.a as usize], seg.graph.sizes[e.b as usize]);
            if e.max >= params.t_merge {
                assert!(
                    sa >= params.t_size && sb >= params.t_size,
                    "{e:?} {sa} {sb}"
                );
            }
            if e.max >= params.t_low {
                assert!(sa >= params.t_dust && sb >= params.t_dust);
            }
        }
        assert!(seg.graph.sizes.iter().all(|&s| s >= params.t_dust));
    }
}

/// The whole-volume segment IDs a chunk should report: first voxel's raster index + 1.
fn first_voxel_ids(labels: &[u64]) -> Vec<u64> {
    let mut first = std::collections::HashMap::new();
    for (i, &l) in labels.iter().enumerate() {
        first.entry(l).or_insert(i as u64 + 1);
    }
    labels
        .iter()
        .map(|l| if *l == 0 { 0 } else { first[l] })
        .collect()
}

#[test]
fn chunks_agree_with_the_whole_volume_on_unfrozen_segments() {
    let mut rng = SplitMix64::new(11);
    let mut unfrozen_seen = 0usize;
    for (seed, quantize) in [(4, false), (5, true)] {
        let (affs, _) = noisy_volume(seed, quantize);
        let shape = affs.shape();
        let params = WatershedParams {
            t_low: 0.05,
            t_high: 0.98,
            t_merge: 0.5,
            t_size: 30,
            t_dust: 8,
        };
        let whole = watershed(&affs, &params).unwrap();
        let want = first_voxel_ids(&whole.labels);

        // A chunk whose ghost covers the volume freezes nothing and is the whole result.
        let all = watershed_chunk(&affs, Box3::whole(shape), 0, &params).unwrap();
        assert!(all.frozen.iter().all(|f| !f));
        assert_eq!(all.labels, want);

        for _ in 0..12 {
            let start = [0, 1, 2].map(|a| rng.below(shape[a] as u64 - 4) as usize);
            let stop = [0, 1, 2].map(|a| {
                let len = 4 + rng.below((shape[a] - start[a] - 4) as u64 + 1) as usize;
                start[a] + len
            });
            let core = Box3::new(start, stop);
            let ghost = rng.below(8) as usize;
            let chunk = watershed_chunk(&affs, core, ghost, &params).unwrap();
            let cs = core.shape();
            assert_eq!(chunk.labels.len(), voxel_count(cs));
            let frozen_ids: std::collections::HashSet<u64> = chunk
                .graph
                .ids
                .iter()
                .zip(&chunk.frozen)
                .filter(|(_, &f)| f)
                .map(|(&id, _)| id)
                .collect();
            // An unfrozen label covers part of exactly one whole-volume segment, a different
            // one for each label; that segment's other core voxels can only be frozen ones
            // (which a parent may attach). Label 0 is exactly whole-volume 0.
            let mut unfrozen: std::collections::HashMap<u64, u64> = Default::default();
            let mut claimed: std::collections::HashMap<u64, u64> = Default::default();
            let at = |z: usize, y: usize, x: usize| {
                let l = chunk.labels[(z * cs[1] + y) * cs[2] + x];
                let g = (((start[0] + z) * shape[1]) + start[1] + y) * shape[2] + start[2] + x;
                (l, want[g])
            };
            for z in 0..cs[0] {
                for y in 0..cs[1] {
                    for x in 0..cs[2] {
                        let (l, w) = at(z, y, x);
                        if l & FROZEN_BIT != 0 {
                            assert!(frozen_ids.contains(&l));
                            continue;
                        }
                        if l == 0 {
                            assert_eq!(w, 0, "chunk background at {:?} of {core:?}", [z, y, x]);
                            continue;
                        }
                        assert!(!frozen_ids.contains(&l));
                        assert_ne!(w, 0, "unfrozen {l} is whole-volume background");
                        assert_eq!(*unfrozen.entry(l).or_insert(w), w, "{l} spans segments");
                        assert_eq!(*claimed.entry(w).or_insert(l), l, "{w} split in a chunk");
                    }
                }
            }
            for z in 0..cs[0] {
                for y in 0..cs[1] {
                    for x in 0..cs[2] {
                        let (l, w) = at(z, y, x);
                        if let Some(&owner) = claimed.get(&w) {
                            assert!(l == owner || l & FROZEN_BIT != 0, "{w}: {l} vs {owner}");
                        }
                    }
                }
            }
            unfrozen_seen += unfrozen.len();
        }
    }
    assert!(
        unfrozen_seen > 20,
        "only {unfrozen_seen} unfrozen segments checked"
    );
}

#[test]
fn chunk_basins_are_exactly_the_whole_volume_basins() {
    // Without merging, an unfrozen basin must be the whole-volume basin voxel for voxel,
    // named alike. Many small basins and (quantized) many plateaus make this a sharp test of
    // which voxels a cut-out can trust.
    let mut rng = SplitMix64::new(12);
    let mut checked = 0usize;
    for seed in 6..12 {
        let affs = if seed < 9 {
            noisy_volume(seed, seed > 6).0
        } else {
            plateau_volume(seed)
        };
        let shape = affs.shape();
        let params = plain(0.05, 0.98);
        let want = first_voxel_ids(&watershed(&affs, &params).unwrap().labels);
        for _ in 0..30 {
            let start = [0, 1, 2].map(|a| rng.below(shape[a] as u64 - 6) as usize);
            let stop = [0, 1, 2]
                .map(|a| start[a] + 6 + rng.below((shape[a] - start[a] - 6) as u64 + 1) as usize);
            let core = Box3::new(start, stop);
            let ghost = rng.below(5) as usize;
            let chunk = watershed_chunk(&affs, core, ghost, &params).unwrap();
            let cs = core.shape();
            let mut seen = std::collections::HashSet::new();
            for z in 0..cs[0] {
                for y in 0..cs[1] {
                    for x in 0..cs[2] {
                        let l = chunk.labels[(z * cs[1] + y) * cs[2] + x];
                        let g =
                            (((start[0] + z) * shape[1]) + start[1] + y) * shape[2] + start[2] + x;
                        if l & FROZEN_BIT == 0 {
                            assert_eq!(l, want[g], "voxel {:?} of {core:?}+{ghost}", [z, y, x]);
                            seen.insert(l);
                        } else {
                            // The whole-volume basin of a frozen voxel is not reported
                            // unfrozen anywhere in this chunk.
                            assert!(!chunk.graph.ids.contains(&want[g]) || want[g] == 0);
                        }
                    }
                }
            }
            checked += seen.len();
        }
    }
    assert!(checked > 500, "only {checked} unfrozen basins checked");
}

#[test]
fn tiny_random_cuts_never_disagree() {
    // Many tiny volumes with three affinity levels (plateaus everywhere) cut once along
    // one axis: the configurations where a cut creates a false plateau exit or hides a real
    // one are rare in larger volumes but common here.
    let params = plain(0.05, 0.98);
    let mut unfrozen = 0;
    for seed in 0..20_000u64 {
        let mut rng = SplitMix64::new(seed);
        let shape = [
            1 + rng.below(3) as usize,
            2 + rng.below(4) as usize,
            3 + rng.below(5) as usize,
        ];
        let data = (0..3 * voxel_count(shape))
            .map(|_| 0.2 * (1 + rng.below(3)) as f32)
            .collect();
        let affs = Affinities::new(shape, data).unwrap();
        let want = first_voxel_ids(&watershed(&affs, &params).unwrap().labels);
        let a = rng.below(3) as usize;
        if shape[a] < 2 {
            continue;
        }
        let (mut start, mut stop) = ([0; 3], shape);
        let at = 1 + rng.below(shape[a] as u64 - 1) as usize;
        if rng.below(2) == 0 {
            stop[a] = at;
        } else {
            start[a] = at;
        }
        let core = Box3::new(start, stop);
        let chunk = watershed_chunk(&affs, core, 0, &params).unwrap();
        let cs = core.shape();
        for (k, &l) in chunk.labels.iter().enumerate() {
            let (z, y, x) = (k / (cs[1] * cs[2]), (k / cs[2]) % cs[1], k % cs[2]);
            let g = (((start[0] + z) * shape[1]) + start[1] + y) * shape[2] + start[2] + x;
            if l & FROZEN_BIT == 0 {
                assert_eq!(l, want[g], "seed {seed}: {shape:?} cut to {core:?}");
                unfrozen += 1;
            } else {
                assert!(
                    want[g] == 0 || !chunk.graph.ids.contains(&want[g]),
                    "seed {seed}: basin {} lost a voxel",
                    want[g]
                );
            }
        }
    }
    assert!(unfrozen > 30_000, "{unfrozen}");
}
