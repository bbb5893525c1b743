//! Disjoint sets over `u32` indices, with path halving and union by size.

#[derive(Debug, Clone)]
pub(crate) struct UnionFind {
    parent: Vec<u32>,
}

impl UnionFind {
    pub(crate) fn new(n: usize) -> Self {
        Self {
            parent: (0..n as u32).collect(),
        }
    }

    pub(crate) fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let grand = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = grand;
            x = grand;
        }
        x
    }

    /// Joins the sets of roots `a` and `b` (both must be roots), making `into` the root.
    pub(crate) fn link(&mut self, child: u32, into: u32) {
        self.parent[child as usize] = into;
    }
}
