//! Scores of a segmentation `S` against ground truth `G`, over the voxels where `G ≠ 0`
//! (ground-truth label 0 is boundary or unlabelled and is ignored; segmentation label 0 is
//! scored like any other label, as in CREMI).
//!
//! From the contingency table `n_ij` (voxels in segment `i` and ground-truth object `j`), with
//! row sums `s_i` and column sums `g_j`:
//!
//! - Rand precision `P = Σ n_ij² / Σ s_i²` (of the voxel pairs a segment joins, the share the
//!   ground truth joins too) and Rand recall `R = Σ n_ij² / Σ g_j²`; the adapted Rand error is
//!   `1 − 2PR / (P + R)` (SNEMI3D, CREMI).
//! - Variation of information, in bits: split `H(S|G)` (over-segmentation) and merge
//!   `H(G|S)` (under-segmentation).

use rustc_hash::FxHashMap;

use crate::{Result, SegError};

/// Adapted Rand error and variation of information of a segmentation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    /// `1 −` F-score of Rand precision and recall; 0 is perfect.
    pub arand: f64,
    pub rand_precision: f64,
    pub rand_recall: f64,
    /// `H(S|G)` in bits.
    pub voi_split: f64,
    /// `H(G|S)` in bits.
    pub voi_merge: f64,
    /// Voxels scored (ground truth ≠ 0).
    pub voxels: u64,
}

impl Scores {
    pub fn voi(&self) -> f64 {
        self.voi_split + self.voi_merge
    }
}

/// Scores `seg` against `gt` (same length, same voxel order). With no voxel to score (all of
/// `gt` is 0, or empty input) the errors are 0.
pub fn evaluate<S, G>(seg: &[S], gt: &[G]) -> Result<Scores>
where
    S: Copy + Into<u64>,
    G: Copy + Into<u64>,
{
    if seg.len() != gt.len() {
        return Err(SegError::Param(format!(
            "segmentation has {} voxels, ground truth {}",
            seg.len(),
            gt.len()
        )));
    }
    let mut table: FxHashMap<(u64, u64), u64> = FxHashMap::default();
    // Runs of equal pairs are common along rows; count them before touching the table.
    let mut run: Option<((u64, u64), u64)> = None;
    for (&s, &g) in seg.iter().zip(gt) {
        let (s, g) = (s.into(), g.into());
        if g == 0 {
            continue;
        }
        match &mut run {
            Some((key, count)) if *key == (s, g) => *count += 1,
            _ => {
                if let Some((key, count)) = run.take() {
                    *table.entry(key).or_insert(0) += count;
                }
                run = Some(((s, g), 1));
            }
        }
    }
    if let Some((key, count)) = run {
        *table.entry(key).or_insert(0) += count;
    }
    Ok(from_table(table.into_iter().map(|((s, g), c)| (s, g, c))))
}

/// Scores from a contingency table given as `(segment, ground truth, voxels)` triples (each
/// pair at most once; ground truth 0 already left out).
pub fn from_table(table: impl IntoIterator<Item = (u64, u64, u64)>) -> Scores {
    let mut rows: FxHashMap<u64, u64> = FxHashMap::default();
    let mut cols: FxHashMap<u64, u64> = FxHashMap::default();
    let mut cells = Vec::new();
    let mut total = 0u64;
    for (s, g, c) in table {
        if c == 0 {
            continue;
        }
        *rows.entry(s).or_insert(0) += c;
        *cols.entry(g).or_insert(0) += c;
        cells.push(c);
        total += c;
    }
    if total == 0 {
        return Scores {
            arand: 0.0,
            rand_precision: 1.0,
            rand_recall: 1.0,
            voi_split: 0.0,
            voi_merge: 0.0,
            voxels: 0,
        };
    }
    let sq = |c: &u64| (*c as f64) * (*c as f64);
    let sum_cells: f64 = cells.iter().map(sq).sum();
    let sum_rows: f64 = rows.values().map(sq).sum();
    let sum_cols: f64 = cols.values().map(sq).sum();
    let precision = sum_cells / sum_rows;
    let recall = sum_cells / sum_cols;
    let f = 2.0 * precision * recall / (precision + recall);

    let n = total as f64;
    // Entropy in bits of counts summing to n.
    let entropy = |counts: &mut dyn Iterator<Item = u64>| -> f64 {
        counts
            .map(|c| {
                let p = c as f64 / n;
                -p * p.log2()
            })
            .sum()
    };
    let h_joint = entropy(&mut cells.iter().copied());
    let h_seg = entropy(&mut rows.values().copied());
    let h_gt = entropy(&mut cols.values().copied());
    Scores {
        arand: 1.0 - f,
        rand_precision: precision,
        rand_recall: recall,
        // Clamped: rounding can leave -1e-16 where the true value is 0.
        voi_split: (h_joint - h_gt).max(0.0),
        voi_merge: (h_joint - h_seg).max(0.0),
        voxels: total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn perfect_and_relabelled_segmentations_score_zero() {
        let gt: Vec<u32> = vec![1, 1, 2, 2, 3, 0];
        let seg: Vec<u64> = vec![7, 7, 9, 9, 4, 4];
        let s = evaluate(&seg, &gt).unwrap();
        assert!(close(s.arand, 0.0) && close(s.voi_split, 0.0) && close(s.voi_merge, 0.0));
        assert_eq!(s.voxels, 5, "the ground-truth-0 voxel is ignored");
    }

    #[test]
    fn a_split_by_hand() {
        // gt: one object of 4 voxels. seg: split 2 + 2.
        // Σn² = 4 + 4 = 8, Σs² = 8, Σg² = 16: P = 1, R = 1/2, F = 2/3, ARAND = 1/3.
        // H(S|G) = 1 bit (each half has p = 1/2), H(G|S) = 0.
        let s = evaluate(&[1u64, 1, 2, 2], &[5u32, 5, 5, 5]).unwrap();
        assert!(evaluate(&[1u64], &[1u32, 2]).is_err());
        assert!(close(s.rand_precision, 1.0));
        assert!(close(s.rand_recall, 0.5));
        assert!(close(s.arand, 1.0 / 3.0));
        assert!(close(s.voi_split, 1.0));
        assert!(close(s.voi_merge, 0.0));
    }

    #[test]
    fn a_merge_by_hand_with_ignored_voxels() {
        // gt 1 1 1 2 | 0 0 (ignored); seg all 8.
        // Σn² = 9 + 1 = 10, Σs² = 16, Σg² = 10: P = 10/16, R = 1, F = 2·(5/8)/(13/8) = 10/13.
        // H(G|S) = H(G) = −(3/4 log 3/4 + 1/4 log 1/4) = 0.8112781244591328 bits.
        let seg = [8u64; 6];
        let gt = [1u32, 1, 1, 2, 0, 0];
        let s = evaluate(&seg, &gt).unwrap();
        assert!(close(s.rand_precision, 10.0 / 16.0));
        assert!(close(s.rand_recall, 1.0));
        assert!(close(s.arand, 1.0 - 10.0 / 13.0));
        assert!(close(s.voi_split, 0.0));
        assert!(close(s.voi_merge, 0.811_278_124_459_132_8));
        assert_eq!(s.voxels, 4);
    }

    #[test]
    fn mixed_errors_by_hand() {
        // gt:  1 1 1 1 2 2
        // seg: a a b b b c
        // n: (a,1)=2 (b,1)=2 (b,2)=1 (c,2)=1; Σn² = 10; s: a 2, b 3, c 1 → 14; g: 4, 2 → 20.
        // P = 10/14, R = 10/20, F = 2·(5/7)(1/2)/((5/7)+(1/2)) = (5/7)/(17/14) = 10/17.
        let seg = [1u64, 1, 2, 2, 2, 3];
        let gt = [1u32, 1, 1, 1, 2, 2];
        let s = evaluate(&seg, &gt).unwrap();
        assert!(close(s.arand, 1.0 - 10.0 / 17.0));
        // H(S,G) = −(2·(1/3)log(1/3) + 2·(1/6)log(1/6)); H(G) = −((2/3)log(2/3) + (1/3)log(1/3));
        // H(S) = −((1/3)log(1/3) + (1/2)log(1/2) + (1/6)log(1/6)).
        let l = |p: f64| -p * p.log2();
        let hj = 2.0 * l(1.0 / 3.0) + 2.0 * l(1.0 / 6.0);
        let hg = l(2.0 / 3.0) + l(1.0 / 3.0);
        let hs = l(1.0 / 3.0) + l(0.5) + l(1.0 / 6.0);
        assert!(close(s.voi_split, hj - hg));
        assert!(close(s.voi_merge, hj - hs));
        // The same from a table, and an empty table scores as perfect.
        let t = from_table([(1, 1, 2), (2, 1, 2), (2, 2, 1), (3, 2, 1)]);
        assert!(close(t.arand, s.arand) && close(t.voi(), s.voi()));
        assert_eq!(from_table([]).arand, 0.0);
    }
}
