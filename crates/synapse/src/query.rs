//! Queries at a timestamp T (µs; `None` is now): the synapses of a root, the connectivity
//! matrix of a set of roots, and a root's partners ranked by synapse count.
//!
//! A root's supervoxels are its leaves, fixed when the root was made; its synapses are the
//! records on those supervoxels' rows. The root must be a root at T (else the caller is told
//! which root its supervoxels had then). The far side of each synapse is mapped to its root
//! at T by its root hint where that is still a root at T, else through the graph (batched,
//! cached root lookups). The connectivity matrix needs no lookups at all: a synapse counts
//! for (A, B) when its far supervoxel is a leaf of B.

use std::collections::{HashMap, HashSet};

use cg_graph::query::RootQuery;
use cg_graph::ChunkedGraph;
use futures::{StreamExt, TryStreamExt};

use crate::schema::{self, Record};
use crate::store::SynapseStore;
use crate::{Result, SynapseError};

/// Leaf walks of one connectivity query in flight at once.
const LEAVES_IN_FLIGHT: usize = 8;

/// Which synapses of a root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The root is presynaptic: its output synapses.
    Output,
    /// The root is postsynaptic: its input synapses.
    Input,
    Both,
}

impl Direction {
    /// `output`/`pre`/`outgoing`, `input`/`post`/`incoming`, or `both`/`all`.
    pub fn parse(s: &str) -> Result<Direction> {
        match s.to_ascii_lowercase().as_str() {
            "output" | "outputs" | "pre" | "outgoing" => Ok(Direction::Output),
            "input" | "inputs" | "post" | "incoming" => Ok(Direction::Input),
            "both" | "all" => Ok(Direction::Both),
            _ => Err(SynapseError::InvalidInput(format!(
                "direction {s:?}: expected output, input or both"
            ))),
        }
    }

    fn sides(self) -> &'static [u8] {
        match self {
            Direction::Output => &[schema::PRE],
            Direction::Input => &[schema::POST],
            Direction::Both => &[schema::PRE, schema::POST],
        }
    }
}

/// A synapse with both sides resolved to roots at the query's time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResolvedSynapse {
    pub id: u64,
    pub pre_sv: u64,
    pub post_sv: u64,
    /// 0 when the supervoxel is not in the graph at T.
    pub pre_root: u64,
    pub post_root: u64,
    /// Points in voxels.
    pub pre: [i32; 3],
    pub post: [i32; 3],
    pub size: u32,
    pub score: f32,
}

/// Synapse counts between roots: `counts[i][j]` synapses from `roots[i]` (presynaptic) onto
/// `roots[j]`, and the sum of their sizes.
#[derive(Clone, Debug, PartialEq)]
pub struct Connectivity {
    pub roots: Vec<u64>,
    pub counts: Vec<Vec<u64>>,
    pub sizes: Vec<Vec<u64>>,
}

/// One partner of a root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partner {
    pub root: u64,
    /// Synapses from the queried root onto this partner.
    pub outputs: u64,
    /// Synapses from this partner onto the queried root.
    pub inputs: u64,
    /// Sum of the sizes of those synapses.
    pub size: u64,
}

impl Partner {
    pub fn total(&self) -> u64 {
        self.outputs + self.inputs
    }
}

/// The roots of supervoxels at `t`; 0 for an ID that is not one.
async fn roots_at(g: &ChunkedGraph, ids: &[u64], t: i64) -> Result<Vec<u64>> {
    Ok(g.roots(
        ids,
        &RootQuery {
            at: Some(t),
            fail_to_zero: true,
            ..Default::default()
        },
    )
    .await?)
}

fn now() -> i64 {
    cg_bigtable::mutation::now_micros()
}

impl SynapseStore {
    /// The supervoxels of the roots (not yet checked to be roots at any time).
    async fn leaves_of(&self, roots: &[u64]) -> Result<Vec<Vec<u64>>> {
        let g = self.graph();
        for &r in roots {
            g.geometry()
                .check(r)
                .map_err(|e| SynapseError::InvalidInput(format!("root {r}: {e}")))?;
        }
        Ok(futures::stream::iter(roots.to_vec())
            .map(|r| {
                let g = g.clone();
                async move { g.leaves(r, None, 1).await }
            })
            .buffered(LEAVES_IN_FLIGHT)
            .try_collect()
            .await?)
    }

    /// Checks that each of `roots` is a root at `t`, given its leaves.
    async fn check_roots(&self, roots: &[u64], leaves: &[Vec<u64>], t: i64) -> Result<()> {
        let g = self.graph();
        // Every leaf of a node has the same root, so one per root tells whether it is one.
        let probes: Vec<u64> = leaves
            .iter()
            .map(|l| l.first().copied().unwrap_or(0))
            .collect();
        let found = roots_at(g, &probes, t).await?;
        for ((&r, &probe), &root_then) in roots.iter().zip(&probes).zip(&found) {
            if root_then != r {
                let then = if probe == 0 || root_then == 0 {
                    "its supervoxels did not exist then".to_string()
                } else {
                    format!("its supervoxels then belonged to root {root_then}")
                };
                return Err(SynapseError::InvalidInput(format!(
                    "{r} is not a root at {t} µs: {then}"
                )));
            }
        }
        Ok(())
    }

    /// The roots at `t` of the partner supervoxels in `far` ((supervoxel, root hint) pairs,
    /// sorted), and how many needed the walk up the graph. A hint that is a root at `t` is
    /// the answer (see [`schema`]); the rest are looked up.
    async fn far_roots(&self, far: &[(u64, u64)], t: i64) -> Result<(HashMap<u64, u64>, usize)> {
        let g = self.graph();
        let top = g.geometry().n_layers;
        let mut hints: Vec<u64> = far
            .iter()
            .map(|&(_, h)| h)
            .filter(|&h| h != 0 && cg_ids::layer_of(h) == top && g.geometry().check(h).is_ok())
            .collect();
        hints.sort_unstable();
        hints.dedup();
        let current = g.current_at(&hints, Some(t)).await?;
        let good: HashSet<u64> = hints
            .into_iter()
            .zip(current)
            .filter_map(|(h, c)| c.then_some(h))
            .collect();
        let mut root_of: HashMap<u64, u64> = HashMap::with_capacity(far.len());
        for &(sv, h) in far {
            if good.contains(&h) {
                root_of.insert(sv, h);
            }
        }
        let mut rest: Vec<u64> = far
            .iter()
            .map(|&(sv, _)| sv)
            .filter(|sv| !root_of.contains_key(sv))
            .collect();
        rest.dedup();
        let roots = roots_at(g, &rest, t).await?;
        let walked = rest.len();
        root_of.extend(rest.into_iter().zip(roots));
        Ok((root_of, walked))
    }

    /// The synapses of `root` at `at` in direction `dir`, sorted by synapse ID. With
    /// [`Direction::Both`], a synapse with both points in the root appears once.
    pub async fn root_synapses(
        &self,
        root: u64,
        at: Option<i64>,
        dir: Direction,
    ) -> Result<Vec<ResolvedSynapse>> {
        let t = at.unwrap_or_else(now);
        let started = std::time::Instant::now();
        let leaves = self.leaves_of(&[root]).await?;
        let leaves_done = started.elapsed();
        let own: HashSet<u64> = leaves[0].iter().copied().collect();
        let mut found: Vec<(u64, u8, Record)> = Vec::new();
        // (partner supervoxel, root hint) of the far sides.
        let mut far: Vec<(u64, u64)> = Vec::new();
        // The root check and the reads of its rows do not depend on each other.
        let read = self.for_each_record(&leaves[0], dir.sides(), true, |sv, side, r, hint| {
            // An autapse is on both rows: keep its presynaptic copy.
            if dir == Direction::Both && side == schema::POST && own.contains(&r.partner) {
                return;
            }
            if !own.contains(&r.partner) {
                far.push((r.partner, hint));
            }
            found.push((sv, side, r));
        });
        let one = [root];
        futures::try_join!(self.check_roots(&one, &leaves, t), read)?;
        let rows_done = started.elapsed();
        far.sort_unstable();
        far.dedup();
        let (root_of, walked) = self.far_roots(&far, t).await?;
        tracing::debug!(
            root,
            supervoxels = leaves[0].len(),
            synapses = found.len(),
            partner_supervoxels = root_of.len(),
            walked,
            "leaves {:?}, rows {:?}, partner roots {:?}",
            leaves_done,
            rows_done - leaves_done,
            started.elapsed() - rows_done
        );
        let resolve = |sv: u64| {
            if own.contains(&sv) {
                root
            } else {
                root_of.get(&sv).copied().unwrap_or(0)
            }
        };
        let mut out: Vec<ResolvedSynapse> = found
            .into_iter()
            .map(|(sv, side, r)| {
                let (pre_sv, post_sv) = if side == schema::PRE {
                    (sv, r.partner)
                } else {
                    (r.partner, sv)
                };
                ResolvedSynapse {
                    id: r.id,
                    pre_sv,
                    post_sv,
                    pre_root: resolve(pre_sv),
                    post_root: resolve(post_sv),
                    pre: r.pre,
                    post: r.post,
                    size: r.size,
                    score: r.score,
                }
            })
            .collect();
        out.sort_unstable_by_key(|s| (s.id, s.pre_sv, s.post_sv));
        Ok(out)
    }

    /// The synapse counts among `roots` at `at` (each must be a root then, and appear once).
    pub async fn connectivity(&self, roots: &[u64], at: Option<i64>) -> Result<Connectivity> {
        let mut seen = HashSet::with_capacity(roots.len());
        for &r in roots {
            if !seen.insert(r) {
                return Err(SynapseError::InvalidInput(format!(
                    "root {r} is listed twice"
                )));
            }
        }
        let t = at.unwrap_or_else(now);
        let leaves = self.leaves_of(roots).await?;
        self.check_roots(roots, &leaves, t).await?;
        let mut index: HashMap<u64, u32> =
            HashMap::with_capacity(leaves.iter().map(Vec::len).sum());
        for (i, l) in leaves.iter().enumerate() {
            for &sv in l {
                index.insert(sv, i as u32);
            }
        }
        let n = roots.len();
        let mut counts = vec![vec![0u64; n]; n];
        let mut sizes = vec![vec![0u64; n]; n];
        let all: Vec<u64> = index.keys().copied().collect();
        self.for_each_record(&all, &[schema::PRE], false, |sv, _, r, _| {
            if let (Some(&i), Some(&j)) = (index.get(&sv), index.get(&r.partner)) {
                counts[i as usize][j as usize] += 1;
                sizes[i as usize][j as usize] += u64::from(r.size);
            }
        })
        .await?;
        Ok(Connectivity {
            roots: roots.to_vec(),
            counts,
            sizes,
        })
    }

    /// The roots `root` shares synapses with at `at` (in direction `dir`), most synapses
    /// first (ties by root ID). Synapses whose far side is in no root then are left out.
    pub async fn partners(
        &self,
        root: u64,
        at: Option<i64>,
        dir: Direction,
    ) -> Result<Vec<Partner>> {
        let syn = self.root_synapses(root, at, dir).await?;
        let mut by_root: HashMap<u64, Partner> = HashMap::new();
        for s in &syn {
            let (other, out) = if s.pre_root == root && dir != Direction::Input {
                (s.post_root, true)
            } else {
                (s.pre_root, false)
            };
            if other == 0 {
                continue;
            }
            let p = by_root.entry(other).or_insert(Partner {
                root: other,
                outputs: 0,
                inputs: 0,
                size: 0,
            });
            if out {
                p.outputs += 1;
            } else {
                p.inputs += 1;
            }
            p.size += u64::from(s.size);
        }
        let mut out: Vec<Partner> = by_root.into_values().collect();
        out.sort_unstable_by(|a, b| b.total().cmp(&a.total()).then(a.root.cmp(&b.root)));
        Ok(out)
    }
}
