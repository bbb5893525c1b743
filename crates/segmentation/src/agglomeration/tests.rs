use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::rng::SplitMix64;
use crate::RegionEdge;

/// A random graph on `n` nodes with IDs 10, 20, ... (so IDs and indices never coincide).
fn random_graph(rng: &mut SplitMix64, n: usize, p: f64) -> RegionGraph {
    let mut edges = Vec::new();
    for a in 0..n as u32 {
        for b in a + 1..n as u32 {
            if rng.next_f64() < p {
                let area = 1 + rng.below(20);
                let sum = area as f64 * rng.next_f64();
                edges.push(RegionEdge {
                    a,
                    b,
                    sum,
                    area,
                    max: 1.0,
                });
            }
        }
    }
    RegionGraph {
        ids: (1..=n as u64).map(|i| 10 * i).collect(),
        sizes: vec![1; n],
        edges,
    }
}

/// The definition, by brute force: every step recomputes every pair of clusters' mean
/// affinity from the original edges and merges the best pair while it reaches `t`.
fn brute_force(g: &RegionGraph, t: f64) -> (Vec<u64>, Vec<Merge>) {
    let n = g.ids.len();
    let mut comp: Vec<usize> = (0..n).collect();
    let mut merges = Vec::new();
    loop {
        let mut pairs: BTreeMap<(usize, usize), (f64, u64)> = BTreeMap::new();
        for e in &g.edges {
            let (ca, cb) = (comp[e.a as usize], comp[e.b as usize]);
            if ca != cb {
                let p = pairs.entry((ca.min(cb), ca.max(cb))).or_insert((0.0, 0));
                p.0 += e.sum;
                p.1 += e.area;
            }
        }
        let best = pairs
            .iter()
            .map(|(&k, &(s, a))| (s / a as f64, k))
            .max_by(|x, y| x.0.total_cmp(&y.0));
        let Some((score, (ca, cb))) = best else { break };
        if score < t {
            break;
        }
        let rep = |c: usize| {
            (0..n)
                .filter(|&i| comp[i] == c)
                .map(|i| g.ids[i])
                .min()
                .unwrap()
        };
        let (ra, rb) = (rep(ca), rep(cb));
        merges.push(Merge {
            a: ra.min(rb),
            b: ra.max(rb),
            affinity: score,
        });
        for c in comp.iter_mut() {
            if *c == cb {
                *c = ca;
            }
        }
    }
    let reps: Vec<u64> = (0..n)
        .map(|i| {
            (0..n)
                .filter(|&j| comp[j] == comp[i])
                .map(|j| g.ids[j])
                .min()
                .unwrap()
        })
        .collect();
    (reps, merges)
}

#[test]
fn merge_order_matches_brute_force_on_random_graphs() {
    let mut rng = SplitMix64::new(42);
    let mut total_merges = 0;
    for trial in 0..200 {
        let n = 2 + rng.below(30) as usize;
        let p = 0.1 + 0.4 * rng.next_f64();
        let g = random_graph(&mut rng, n, p);
        let t = 0.2 + 0.5 * rng.next_f64();
        let got = agglomerate(&g, t);
        let (reps, merges) = brute_force(&g, t);
        assert_eq!(got.merges.len(), merges.len(), "trial {trial}");
        for (m, w) in got.merges.iter().zip(&merges) {
            assert_eq!((m.a, m.b), (w.a, w.b), "trial {trial}");
            assert!((m.affinity - w.affinity).abs() < 1e-12);
        }
        assert_eq!(got.components, reps, "trial {trial}");
        assert!(got.frozen.iter().all(|f| !f));
        // Scores never increase, so a higher threshold's result is a prefix of the history.
        assert!(got
            .merges
            .windows(2)
            .all(|w| w[0].affinity >= w[1].affinity));
        let higher = t + 0.2;
        assert_eq!(got.components_at(&g, higher), brute_force(&g, higher).0);
        total_merges += merges.len();
    }
    assert!(total_merges > 500, "{total_merges}");
}

#[test]
fn hand_made_order_and_edge_combination() {
    // Path 10 – 20 – 30 with a weak direct contact 10 – 30.
    //   10–20: 0.9 (area 1); 20–30: sum 1.6 over 2 (0.8); 10–30: 0.1 over 2 (0.05).
    // First 10+20 at 0.9; then {10,20}–30 combines 1.6 + 0.1 over 4 = 0.425.
    let g = RegionGraph {
        ids: vec![10, 20, 30],
        sizes: vec![1, 1, 1],
        edges: vec![
            RegionEdge {
                a: 0,
                b: 1,
                sum: 0.9,
                area: 1,
                max: 0.9,
            },
            RegionEdge {
                a: 0,
                b: 2,
                sum: 0.1,
                area: 2,
                max: 0.05,
            },
            RegionEdge {
                a: 1,
                b: 2,
                sum: 1.6,
                area: 2,
                max: 0.8,
            },
        ],
    };
    let a = agglomerate(&g, 0.5);
    assert_eq!(
        a.merges,
        vec![Merge {
            a: 10,
            b: 20,
            affinity: 0.9
        }]
    );
    assert_eq!(a.components, vec![10, 10, 30]);
    let a = agglomerate(&g, 0.4);
    assert_eq!(a.merges.len(), 2);
    assert!((a.merges[1].affinity - 0.425).abs() < 1e-12);
    assert_eq!((a.merges[1].a, a.merges[1].b), (10, 30));
    assert_eq!(a.components, vec![10, 10, 10]);
    assert_eq!(a.components_at(&g, 0.5), vec![10, 10, 30]);
    let mut labels = vec![0, 30, 20, 10, 99];
    relabel(&mut labels, &g, &a.components_at(&g, 0.5));
    assert_eq!(labels, vec![0, 30, 10, 10, 99]);
    // A duplicated contact is folded into one.
    let mut dup = g.clone();
    dup.edges.push(RegionEdge {
        a: 2,
        b: 1,
        sum: 0.0,
        area: 2,
        max: 0.0,
    });
    assert!((agglomerate(&dup, 0.0).merges[1].affinity - 1.7 / 6.0).abs() < 1e-12);
}

#[test]
fn frozen_borders_leave_unfrozen_clusters_exact() {
    // Cut a random graph: the nodes of a subset with contacts outside it are frozen. Each
    // cluster that ends unfrozen must be a cluster of the whole graph.
    let mut rng = SplitMix64::new(9);
    let mut checked = 0;
    for trial in 0..500 {
        let n = 4 + rng.below(40) as usize;
        let p = 0.05 + 0.2 * rng.next_f64();
        let g = random_graph(&mut rng, n, p);
        let t = 0.3 + 0.4 * rng.next_f64();
        let whole = agglomerate(&g, t);
        let inside: Vec<bool> = (0..n).map(|_| rng.next_f64() < 0.85).collect();
        let local_nodes: Vec<usize> = (0..n).filter(|&i| inside[i]).collect();
        let index: BTreeMap<usize, u32> = local_nodes
            .iter()
            .enumerate()
            .map(|(k, &i)| (i, k as u32))
            .collect();
        let mut frozen = vec![false; local_nodes.len()];
        let mut edges = Vec::new();
        for e in &g.edges {
            let (a, b) = (e.a as usize, e.b as usize);
            match (index.get(&a), index.get(&b)) {
                (Some(&la), Some(&lb)) => edges.push(RegionEdge { a: la, b: lb, ..*e }),
                (Some(&la), None) => frozen[la as usize] = true,
                (None, Some(&lb)) => frozen[lb as usize] = true,
                (None, None) => {}
            }
        }
        let local = RegionGraph {
            ids: local_nodes.iter().map(|&i| g.ids[i]).collect(),
            sizes: vec![1; local_nodes.len()],
            edges,
        };
        let part = agglomerate_frozen(&local, t, &frozen).unwrap();
        let mut local_clusters: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
        for (k, &c) in part.components.iter().enumerate() {
            if !part.frozen[k] {
                local_clusters.entry(c).or_default().insert(local.ids[k]);
            }
        }
        let mut global_clusters: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
        for (i, &c) in whole.components.iter().enumerate() {
            global_clusters.entry(c).or_default().insert(g.ids[i]);
        }
        for (rep, members) in &local_clusters {
            assert_eq!(
                global_clusters.get(rep),
                Some(members),
                "trial {trial}: unfrozen cluster {rep}"
            );
            if members.len() > 1 {
                checked += 1;
            }
        }
        // Frozen ends stay frozen together: a frozen flag is per cluster.
        for (k, &c) in part.components.iter().enumerate() {
            let root = part.components.iter().position(|&x| x == c).unwrap();
            assert_eq!(part.frozen[k], part.frozen[root]);
        }
    }
    assert!(checked > 100, "only {checked} merged unfrozen clusters");
    let g = random_graph(&mut SplitMix64::new(1), 3, 1.0);
    assert!(agglomerate_frozen(&g, 0.5, &[false]).is_err());
}
