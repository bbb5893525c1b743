//! What to read (`ReadRows`), and how a broken scan is narrowed for its retry.

use std::ops::{Bound, RangeBounds};

use crate::proto::v2::{row_range, RowFilter, RowRange, RowSet};

/// A ReadRows query: which rows, which cells, how many, which direction.
#[derive(Debug, Clone, Default)]
pub struct ReadRows {
    pub(crate) rows: RowSet,
    pub(crate) filter: Option<RowFilter>,
    pub(crate) limit: i64,
    pub(crate) reversed: bool,
}

impl ReadRows {
    /// Reads the whole table until keys or ranges are added.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.rows.row_keys.push(key.into());
        self
    }

    pub fn keys<K: Into<Vec<u8>>>(mut self, keys: impl IntoIterator<Item = K>) -> Self {
        self.rows.row_keys.extend(keys.into_iter().map(Into::into));
        self
    }

    /// Adds a key range: `a..b`, `a..=b`, `a..`, `..b`, or `(Bound, Bound)`.
    pub fn range(mut self, range: impl RangeBounds<Vec<u8>>) -> Self {
        self.rows.row_ranges.push(row_range(
            range.start_bound().cloned(),
            range.end_bound().cloned(),
        ));
        self
    }

    /// Adds every key starting with `prefix`.
    pub fn prefix(self, prefix: impl Into<Vec<u8>>) -> Self {
        let prefix = prefix.into();
        let end = prefix_end(&prefix).map_or(Bound::Unbounded, Bound::Excluded);
        self.range((Bound::Included(prefix), end))
    }

    /// Replaces keys and ranges with a prebuilt set.
    pub fn row_set(mut self, rows: RowSet) -> Self {
        self.rows = rows;
        self
    }

    pub fn filter(mut self, filter: RowFilter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// At most `n` rows (0: no limit).
    pub fn limit(mut self, n: u64) -> Self {
        self.limit = i64::try_from(n).unwrap_or(i64::MAX);
        self
    }

    /// Scan in descending key order.
    pub fn reversed(mut self, reversed: bool) -> Self {
        self.reversed = reversed;
        self
    }
}

/// A `RowRange` from std bounds.
pub fn row_range(start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> RowRange {
    RowRange {
        start_key: match start {
            Bound::Included(k) => Some(row_range::StartKey::StartKeyClosed(k)),
            Bound::Excluded(k) => Some(row_range::StartKey::StartKeyOpen(k)),
            Bound::Unbounded => None,
        },
        end_key: match end {
            Bound::Included(k) => Some(row_range::EndKey::EndKeyClosed(k)),
            Bound::Excluded(k) => Some(row_range::EndKey::EndKeyOpen(k)),
            Bound::Unbounded => None,
        },
    }
}

/// The smallest key greater than every key with this prefix, if one exists.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

// Bigtable reads an empty bound key as "no bound"; every real row key is non-empty.
fn start_bound(r: &RowRange) -> Bound<&[u8]> {
    match &r.start_key {
        Some(row_range::StartKey::StartKeyClosed(k)) if !k.is_empty() => Bound::Included(k),
        Some(row_range::StartKey::StartKeyOpen(k)) if !k.is_empty() => Bound::Excluded(k),
        _ => Bound::Unbounded,
    }
}

fn end_bound(r: &RowRange) -> Bound<&[u8]> {
    match &r.end_key {
        Some(row_range::EndKey::EndKeyClosed(k)) if !k.is_empty() => Bound::Included(k),
        Some(row_range::EndKey::EndKeyOpen(k)) if !k.is_empty() => Bound::Excluded(k),
        _ => Bound::Unbounded,
    }
}

fn owned(b: Bound<&[u8]>) -> Bound<Vec<u8>> {
    b.map(<[u8]>::to_vec)
}

/// The part of `rows` a scan still has to read once every key up to and including
/// `last` (down to it, when reversed) has been seen. `None`: nothing is left.
pub(crate) fn remaining(rows: &RowSet, last: &[u8], reversed: bool) -> Option<RowSet> {
    let resume = Bound::Excluded(last.to_vec());
    if rows.row_keys.is_empty() && rows.row_ranges.is_empty() {
        let range = if reversed {
            row_range(Bound::Unbounded, resume)
        } else {
            row_range(resume, Bound::Unbounded)
        };
        return Some(RowSet {
            row_keys: vec![],
            row_ranges: vec![range],
        });
    }
    let row_keys: Vec<Vec<u8>> = rows
        .row_keys
        .iter()
        .filter(|k| {
            if reversed {
                k.as_slice() < last
            } else {
                k.as_slice() > last
            }
        })
        .cloned()
        .collect();
    let mut row_ranges = Vec::new();
    for r in &rows.row_ranges {
        let (start, end) = (start_bound(r), end_bound(r));
        if reversed {
            let done = match start {
                Bound::Included(s) | Bound::Excluded(s) => s >= last,
                Bound::Unbounded => false,
            };
            if done {
                continue;
            }
            let clip = match end {
                Bound::Unbounded => true,
                Bound::Included(e) => e >= last,
                Bound::Excluded(e) => e > last,
            };
            let end = if clip { resume.clone() } else { owned(end) };
            row_ranges.push(row_range(owned(start), end));
        } else {
            let done = match end {
                Bound::Included(e) | Bound::Excluded(e) => e <= last,
                Bound::Unbounded => false,
            };
            if done {
                continue;
            }
            let clip = match start {
                Bound::Unbounded => true,
                Bound::Included(s) => s <= last,
                Bound::Excluded(s) => s < last,
            };
            let start = if clip { resume.clone() } else { owned(start) };
            row_ranges.push(row_range(start, owned(end)));
        }
    }
    if row_keys.is_empty() && row_ranges.is_empty() {
        // An empty set would mean "whole table" to the server.
        return None;
    }
    Some(RowSet {
        row_keys,
        row_ranges,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    fn bounds(r: &RowRange) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        (owned(start_bound(r)), owned(end_bound(r)))
    }

    #[test]
    fn builder() {
        let r = ReadRows::new()
            .key("a")
            .keys(["b", "c"])
            .range(v("d")..v("f"))
            .range(v("x")..=v("y"))
            .range(v("z")..)
            .prefix("p")
            .limit(5)
            .reversed(true);
        assert_eq!(r.rows.row_keys, vec![v("a"), v("b"), v("c")]);
        assert_eq!(r.rows.row_ranges.len(), 4);
        assert_eq!(
            bounds(&r.rows.row_ranges[0]),
            (Bound::Included(v("d")), Bound::Excluded(v("f")))
        );
        assert_eq!(
            bounds(&r.rows.row_ranges[1]),
            (Bound::Included(v("x")), Bound::Included(v("y")))
        );
        assert_eq!(
            bounds(&r.rows.row_ranges[2]),
            (Bound::Included(v("z")), Bound::Unbounded)
        );
        assert_eq!(
            bounds(&r.rows.row_ranges[3]),
            (Bound::Included(v("p")), Bound::Excluded(v("q")))
        );
        assert_eq!(r.limit, 5);
        assert!(r.reversed);
        assert_eq!(ReadRows::new().limit(u64::MAX).limit, i64::MAX);
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"ab"), Some(v("ac")));
        assert_eq!(prefix_end(&[b'a', 0xff, 0xff]), Some(v("b")));
        assert_eq!(prefix_end(&[0xff]), None);
        assert_eq!(prefix_end(b""), None);
        let r = ReadRows::new().prefix(vec![0xffu8]);
        assert_eq!(
            bounds(&r.rows.row_ranges[0]),
            (Bound::Included(vec![0xff]), Bound::Unbounded)
        );
    }

    #[test]
    fn resume_full_table() {
        let all = RowSet::default();
        let f = remaining(&all, b"k", false).unwrap();
        assert_eq!(
            bounds(&f.row_ranges[0]),
            (Bound::Excluded(v("k")), Bound::Unbounded)
        );
        let r = remaining(&all, b"k", true).unwrap();
        assert_eq!(
            bounds(&r.row_ranges[0]),
            (Bound::Unbounded, Bound::Excluded(v("k")))
        );
    }

    #[test]
    fn resume_forward() {
        let set = ReadRows::new()
            .keys(["a", "c", "e"])
            .range(v("a")..v("b"))
            .range(v("b")..=v("c"))
            .range(v("c")..v("d"))
            .range((Bound::Excluded(v("c")), Bound::Included(v("f"))))
            .range(v("x")..)
            .rows;
        let left = remaining(&set, b"c", false).unwrap();
        assert_eq!(left.row_keys, vec![v("e")]);
        let got: Vec<_> = left.row_ranges.iter().map(bounds).collect();
        assert_eq!(
            got,
            vec![
                (Bound::Excluded(v("c")), Bound::Excluded(v("d"))),
                (Bound::Excluded(v("c")), Bound::Included(v("f"))),
                (Bound::Included(v("x")), Bound::Unbounded),
            ]
        );
        // Empty bound keys mean "unbounded".
        let set = RowSet {
            row_keys: vec![],
            row_ranges: vec![RowRange {
                start_key: Some(row_range::StartKey::StartKeyClosed(vec![])),
                end_key: Some(row_range::EndKey::EndKeyOpen(vec![])),
            }],
        };
        let left = remaining(&set, b"m", false).unwrap();
        assert_eq!(
            bounds(&left.row_ranges[0]),
            (Bound::Excluded(v("m")), Bound::Unbounded)
        );
    }

    #[test]
    fn resume_reversed() {
        let set = ReadRows::new()
            .keys(["a", "c", "e"])
            .range(v("a")..v("b"))
            .range(v("b")..=v("d"))
            .range((Bound::Excluded(v("c")), Bound::Included(v("f"))))
            .range(v("c")..v("z"))
            .range(..v("c"))
            .rows;
        let left = remaining(&set, b"c", true).unwrap();
        assert_eq!(left.row_keys, vec![v("a")]);
        let got: Vec<_> = left.row_ranges.iter().map(bounds).collect();
        assert_eq!(
            got,
            vec![
                (Bound::Included(v("a")), Bound::Excluded(v("b"))),
                (Bound::Included(v("b")), Bound::Excluded(v("c"))),
                (Bound::Unbounded, Bound::Excluded(v("c"))),
            ]
        );
    }

    #[test]
    fn resume_exhausted() {
        let set = ReadRows::new().keys(["a", "b"]).range(v("a")..=v("c")).rows;
        assert!(remaining(&set, b"c", false).is_none());
        assert!(remaining(&set, b"a", true).is_none());
        let set = ReadRows::new().range(v("a")..v("c")).rows;
        assert!(remaining(&set, b"c", false).is_none());
        assert!(remaining(&set, b"b", false).is_some());
    }
}
