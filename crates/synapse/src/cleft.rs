//! Synapses from a synaptic-cleft probability volume, for detectors that predict clefts
//! rather than partner points.
//!
//! 1. Threshold: voxels with probability ≥ `threshold` are cleft.
//! 2. Connected components of cleft voxels (6-connected); components smaller than
//!    `min_voxels` are dropped. Each remaining component is one synapse: size = its voxel
//!    count, score = its mean probability, ID = `first_id` + its number in scan order (z, y,
//!    x of its first voxel).
//! 3. Partners: every cleft voxel and its six neighbours vote for the supervoxel under them
//!    (label 0 abstains). The two supervoxels with the most votes are the partners (ties:
//!    smaller ID); a cleft touching fewer than two is dropped.
//! 4. Direction. A cleft alone does not say which side is presynaptic. With a polarity map
//!    (any per-voxel score that is higher on the presynaptic side, e.g. a vesicle or
//!    presynaptic-terminal prediction), the partner whose voting voxels have the higher
//!    mean polarity is presynaptic. Without one, the partner with more votes is taken as
//!    presynaptic: deterministic, but only a guess; treat such tables as undirected.
//! 5. Points: for each partner, its voting voxel nearest the cleft's centroid (so the point
//!    lies in that supervoxel).
//!
//! The arrays cover one box in memory (x fastest); clefts cut by the box edge are partial.

use std::collections::{HashMap, VecDeque};

use crate::{MappedSynapse, Result, SynapseError};

#[derive(Clone, Copy, Debug)]
pub struct CleftParams {
    pub threshold: f32,
    pub min_voxels: u32,
    pub first_id: u64,
}

impl Default for CleftParams {
    fn default() -> Self {
        CleftParams {
            threshold: 0.5,
            min_voxels: 10,
            first_id: 0,
        }
    }
}

/// One box of volumes, each x fastest, `shape` = (x, y, z) voxels starting at `offset`.
pub struct CleftInput<'a> {
    pub shape: [usize; 3],
    pub offset: [i64; 3],
    pub probability: &'a [f32],
    pub segmentation: &'a [u64],
    pub polarity: Option<&'a [f32]>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleftReport {
    pub components: u64,
    pub too_small: u64,
    pub without_two_partners: u64,
    pub synapses: u64,
}

#[derive(Default)]
struct Vote {
    count: u64,
    polarity: f64,
    best: Option<(i64, usize)>,
}

/// The synapses of the clefts in one box.
pub fn synapses_from_clefts(
    input: &CleftInput<'_>,
    params: &CleftParams,
) -> Result<(Vec<MappedSynapse>, CleftReport)> {
    let [sx, sy, sz] = input.shape;
    let n = sx * sy * sz;
    if input.probability.len() != n
        || input.segmentation.len() != n
        || input.polarity.is_some_and(|p| p.len() != n)
    {
        return Err(SynapseError::InvalidInput(format!(
            "cleft volumes must all hold {n} voxels ({sx} x {sy} x {sz})"
        )));
    }
    let coords = |i: usize| [i % sx, (i / sx) % sy, i / (sx * sy)];
    let neighbours = |i: usize| {
        let [x, y, z] = coords(i);
        let mut out = [usize::MAX; 6];
        if x > 0 {
            out[0] = i - 1;
        }
        if x + 1 < sx {
            out[1] = i + 1;
        }
        if y > 0 {
            out[2] = i - sx;
        }
        if y + 1 < sy {
            out[3] = i + sx;
        }
        if z > 0 {
            out[4] = i - sx * sy;
        }
        if z + 1 < sz {
            out[5] = i + sx * sy;
        }
        out
    };
    let cleft = |i: usize| input.probability[i] >= params.threshold;
    let mut comp = vec![u32::MAX; n];
    let mut report = CleftReport::default();
    let mut out = Vec::new();
    let mut queue = VecDeque::new();
    let mut voxels: Vec<usize> = Vec::new();
    for start in 0..n {
        if !cleft(start) || comp[start] != u32::MAX {
            continue;
        }
        let label = report.components as u32;
        report.components += 1;
        voxels.clear();
        comp[start] = label;
        queue.push_back(start);
        while let Some(i) = queue.pop_front() {
            voxels.push(i);
            for j in neighbours(i) {
                if j != usize::MAX && comp[j] == u32::MAX && cleft(j) {
                    comp[j] = label;
                    queue.push_back(j);
                }
            }
        }
        if (voxels.len() as u64) < u64::from(params.min_voxels) {
            report.too_small += 1;
            continue;
        }
        let mut centre = [0f64; 3];
        let mut prob = 0f64;
        for &i in &voxels {
            let c = coords(i);
            for d in 0..3 {
                centre[d] += c[d] as f64;
            }
            prob += f64::from(input.probability[i]);
        }
        let k = voxels.len() as f64;
        let centre = centre.map(|v| v / k);
        let mut votes: HashMap<u64, Vote> = HashMap::new();
        for &i in &voxels {
            for j in std::iter::once(i).chain(neighbours(i)) {
                if j == usize::MAX || input.segmentation[j] == 0 {
                    continue;
                }
                let v = votes.entry(input.segmentation[j]).or_default();
                v.count += 1;
                v.polarity += input.polarity.map_or(0.0, |p| f64::from(p[j]));
                let c = coords(j);
                // Squared distance in quarter voxels, as an integer for a total order.
                let dist: i64 = (0..3)
                    .map(|d| {
                        let e = ((c[d] as f64 - centre[d]) * 4.0) as i64;
                        e * e
                    })
                    .sum();
                if v.best.is_none_or(|b| (dist, j) < b) {
                    v.best = Some((dist, j));
                }
            }
        }
        let mut ranked: Vec<(u64, Vote)> = votes.into_iter().collect();
        ranked.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(&b.0)));
        if ranked.len() < 2 {
            report.without_two_partners += 1;
            continue;
        }
        let (mut pre, mut post) = (&ranked[0], &ranked[1]);
        if input.polarity.is_some() {
            let mean = |v: &Vote| v.polarity / v.count as f64;
            if mean(&post.1) > mean(&pre.1) {
                std::mem::swap(&mut pre, &mut post);
            }
        }
        let point = |v: &Vote| {
            let c = coords(v.best.map_or(0, |b| b.1));
            std::array::from_fn(|d| (input.offset[d] + c[d] as i64) as i32)
        };
        out.push(MappedSynapse {
            id: params.first_id + report.components,
            pre_sv: pre.0,
            post_sv: post.0,
            pre: point(&pre.1),
            post: point(&post.1),
            size: voxels.len() as u32,
            score: (prob / k) as f32,
        });
    }
    report.synapses = out.len() as u64;
    Ok((out, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two cells meeting at x = 5 (label 7 left, 9 right), a cleft slab on the boundary,
    /// a speck of noise, and a cleft inside cell 7 alone.
    fn scene() -> ([usize; 3], Vec<f32>, Vec<u64>, Vec<f32>) {
        let shape = [10, 6, 6];
        let n = 360;
        let mut prob = vec![0.0f32; n];
        let mut seg = vec![0u64; n];
        let mut pol = vec![0.0f32; n];
        for z in 0..6 {
            for y in 0..6 {
                for x in 0..10 {
                    let i = x + 10 * (y + 6 * z);
                    seg[i] = if x < 5 { 7 } else { 9 };
                    // Cell 9 is presynaptic: its side has the vesicles.
                    pol[i] = if x >= 5 { 0.8 } else { 0.1 };
                    if (x == 4 || x == 5) && (1..4).contains(&y) && (1..4).contains(&z) {
                        prob[i] = 0.9;
                    }
                }
            }
        }
        prob[9 + 10 * (5 + 6 * 5)] = 0.95; // a lone voxel
        for y in 0..3 {
            prob[1 + 10 * (y + 6 * 5)] = 0.7; // three voxels, deep in cell 7
        }
        (shape, prob, seg, pol)
    }

    #[test]
    fn clefts_become_synapses_between_the_cells_on_either_side() {
        let (shape, prob, seg, pol) = scene();
        let mut input = CleftInput {
            shape,
            offset: [100, 200, 300],
            probability: &prob,
            segmentation: &seg,
            polarity: Some(&pol),
        };
        let params = CleftParams {
            threshold: 0.5,
            min_voxels: 2,
            first_id: 1000,
        };
        let (syn, report) = synapses_from_clefts(&input, &params).unwrap();
        assert_eq!(report.components, 3);
        assert_eq!(report.too_small, 1);
        assert_eq!(report.without_two_partners, 1);
        assert_eq!(syn.len(), 1);
        let s = syn[0];
        assert_eq!(
            (s.pre_sv, s.post_sv),
            (9, 7),
            "polarity picks the presynaptic side"
        );
        assert_eq!(s.size, 18);
        assert!((s.score - 0.9).abs() < 1e-6);
        assert_eq!(s.id, 1001);
        // Points lie in their supervoxels, next to the cleft, in global voxels.
        assert!(s.pre[0] - 100 >= 5 && s.post[0] - 100 < 5, "{s:?}");
        assert!((201..204).contains(&s.pre[1]) && (301..304).contains(&s.pre[2]));
        // Without polarity, equal votes: the smaller ID comes first.
        input.polarity = None;
        let (syn, _) = synapses_from_clefts(&input, &params).unwrap();
        assert_eq!((syn[0].pre_sv, syn[0].post_sv), (7, 9));
        let bad = CleftInput {
            shape: [2, 2, 2],
            offset: [0; 3],
            probability: &prob,
            segmentation: &seg,
            polarity: None,
        };
        assert!(synapses_from_clefts(&bad, &params).is_err());
    }
}
