//! Builders for `RowFilter`s. Regex filters take RE2 patterns matched against the
//! whole family/qualifier/value; [`family()`] and [`column()`] match exact names.

use std::ops::Bound;

use crate::proto::v2::row_filter::{Chain, Condition, Filter, Interleave};
use crate::proto::v2::{
    column_range, value_range, ColumnRange, RowFilter, TimestampRange, ValueRange,
};

fn wrap(f: Filter) -> RowFilter {
    RowFilter { filter: Some(f) }
}

/// Applies filters in sequence.
pub fn chain(filters: impl IntoIterator<Item = RowFilter>) -> RowFilter {
    wrap(Filter::Chain(Chain {
        filters: filters.into_iter().collect(),
    }))
}

/// Applies each filter to the whole row and merges their outputs.
pub fn interleave(filters: impl IntoIterator<Item = RowFilter>) -> RowFilter {
    wrap(Filter::Interleave(Interleave {
        filters: filters.into_iter().collect(),
    }))
}

/// `true_filter` if `predicate` yields any cell, else `false_filter`; a missing
/// branch yields nothing.
pub fn condition(
    predicate: RowFilter,
    true_filter: Option<RowFilter>,
    false_filter: Option<RowFilter>,
) -> RowFilter {
    wrap(Filter::Condition(Box::new(Condition {
        predicate_filter: Some(Box::new(predicate)),
        true_filter: true_filter.map(Box::new),
        false_filter: false_filter.map(Box::new),
    })))
}

pub fn pass_all() -> RowFilter {
    wrap(Filter::PassAllFilter(true))
}

pub fn block_all() -> RowFilter {
    wrap(Filter::BlockAllFilter(true))
}

pub fn sink() -> RowFilter {
    wrap(Filter::Sink(true))
}

pub fn row_key_regex(pattern: impl Into<Vec<u8>>) -> RowFilter {
    wrap(Filter::RowKeyRegexFilter(pattern.into()))
}

/// Keeps each row with probability `p`.
pub fn row_sample(p: f64) -> RowFilter {
    wrap(Filter::RowSampleFilter(p))
}

pub fn family_regex(pattern: impl Into<String>) -> RowFilter {
    wrap(Filter::FamilyNameRegexFilter(pattern.into()))
}

/// Exactly one family.
pub fn family(name: &str) -> RowFilter {
    let escaped = escape_regex(name.as_bytes());
    // The escaped form is pure ASCII, so this conversion is lossless.
    family_regex(String::from_utf8_lossy(&escaped).into_owned())
}

pub fn qualifier_regex(pattern: impl Into<Vec<u8>>) -> RowFilter {
    wrap(Filter::ColumnQualifierRegexFilter(pattern.into()))
}

/// Qualifiers within the given bounds, in one family.
pub fn column_range(
    family: impl Into<String>,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
) -> RowFilter {
    wrap(Filter::ColumnRangeFilter(ColumnRange {
        family_name: family.into(),
        start_qualifier: match start {
            Bound::Included(q) => Some(column_range::StartQualifier::StartQualifierClosed(q)),
            Bound::Excluded(q) => Some(column_range::StartQualifier::StartQualifierOpen(q)),
            Bound::Unbounded => None,
        },
        end_qualifier: match end {
            Bound::Included(q) => Some(column_range::EndQualifier::EndQualifierClosed(q)),
            Bound::Excluded(q) => Some(column_range::EndQualifier::EndQualifierOpen(q)),
            Bound::Unbounded => None,
        },
    }))
}

/// Exactly one column.
pub fn column(family: impl Into<String>, qualifier: impl Into<Vec<u8>>) -> RowFilter {
    let q = qualifier.into();
    column_range(family, Bound::Included(q.clone()), Bound::Included(q))
}

/// Cells with `start_micros <= ts < end_micros`; `end_micros == 0` means no upper bound.
pub fn timestamp_range(start_micros: i64, end_micros: i64) -> RowFilter {
    wrap(Filter::TimestampRangeFilter(TimestampRange {
        start_timestamp_micros: start_micros,
        end_timestamp_micros: end_micros,
    }))
}

pub fn value_regex(pattern: impl Into<Vec<u8>>) -> RowFilter {
    wrap(Filter::ValueRegexFilter(pattern.into()))
}

pub fn value_range(start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> RowFilter {
    wrap(Filter::ValueRangeFilter(ValueRange {
        start_value: match start {
            Bound::Included(v) => Some(value_range::StartValue::StartValueClosed(v)),
            Bound::Excluded(v) => Some(value_range::StartValue::StartValueOpen(v)),
            Bound::Unbounded => None,
        },
        end_value: match end {
            Bound::Included(v) => Some(value_range::EndValue::EndValueClosed(v)),
            Bound::Excluded(v) => Some(value_range::EndValue::EndValueOpen(v)),
            Bound::Unbounded => None,
        },
    }))
}

pub fn cells_per_row_offset(n: i32) -> RowFilter {
    wrap(Filter::CellsPerRowOffsetFilter(n))
}

pub fn cells_per_row_limit(n: i32) -> RowFilter {
    wrap(Filter::CellsPerRowLimitFilter(n))
}

/// The newest `n` cells of each column.
pub fn cells_per_column_limit(n: i32) -> RowFilter {
    wrap(Filter::CellsPerColumnLimitFilter(n))
}

/// Replaces every value with the empty string (keys-only reads).
pub fn strip_value() -> RowFilter {
    wrap(Filter::StripValueTransformer(true))
}

pub fn apply_label(label: impl Into<String>) -> RowFilter {
    wrap(Filter::ApplyLabelTransformer(label.into()))
}

/// Escapes bytes so an RE2 (Latin-1 mode) pattern matches them literally.
pub fn escape_regex(literal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(literal.len() * 2);
    for &b in literal {
        if b.is_ascii_alphanumeric() || b == b'_' {
            out.push(b);
        } else if b.is_ascii_graphic() || b == b' ' {
            out.extend_from_slice(&[b'\\', b]);
        } else {
            // Control and high bytes: spell them out so no raw byte reaches the parser.
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_filters() {
        let f = chain([family("f"), cells_per_column_limit(1)]);
        let Some(Filter::Chain(c)) = f.filter else {
            panic!("not a chain");
        };
        assert_eq!(c.filters.len(), 2);
        assert_eq!(
            c.filters[1].filter,
            Some(Filter::CellsPerColumnLimitFilter(1))
        );

        let f = condition(pass_all(), Some(strip_value()), None);
        let Some(Filter::Condition(c)) = f.filter else {
            panic!("not a condition");
        };
        assert_eq!(
            c.predicate_filter.map(|p| p.filter),
            Some(Some(Filter::PassAllFilter(true)))
        );
        assert!(c.true_filter.is_some());
        assert!(c.false_filter.is_none());

        let f = interleave([block_all(), sink(), apply_label("x")]);
        assert!(matches!(f.filter, Some(Filter::Interleave(ref i)) if i.filters.len() == 3));
    }

    #[test]
    fn ranges() {
        let f = column_range(
            "f",
            Bound::Included(b"a".to_vec()),
            Bound::Excluded(b"c".to_vec()),
        );
        assert_eq!(
            f.filter,
            Some(Filter::ColumnRangeFilter(ColumnRange {
                family_name: "f".into(),
                start_qualifier: Some(column_range::StartQualifier::StartQualifierClosed(
                    b"a".to_vec()
                )),
                end_qualifier: Some(column_range::EndQualifier::EndQualifierOpen(b"c".to_vec())),
            }))
        );
        let f = column("f", "q");
        let Some(Filter::ColumnRangeFilter(r)) = f.filter else {
            panic!("not a column range");
        };
        assert_eq!(
            r.start_qualifier,
            Some(column_range::StartQualifier::StartQualifierClosed(
                b"q".to_vec()
            ))
        );
        assert_eq!(
            r.end_qualifier,
            Some(column_range::EndQualifier::EndQualifierClosed(
                b"q".to_vec()
            ))
        );
        let f = value_range(Bound::Excluded(b"a".to_vec()), Bound::Unbounded);
        assert_eq!(
            f.filter,
            Some(Filter::ValueRangeFilter(ValueRange {
                start_value: Some(value_range::StartValue::StartValueOpen(b"a".to_vec())),
                end_value: None,
            }))
        );
        assert_eq!(
            timestamp_range(1000, 0).filter,
            Some(Filter::TimestampRangeFilter(TimestampRange {
                start_timestamp_micros: 1000,
                end_timestamp_micros: 0
            }))
        );
    }

    #[test]
    fn simple_filters() {
        assert_eq!(
            row_key_regex("a.*").filter,
            Some(Filter::RowKeyRegexFilter(b"a.*".to_vec()))
        );
        assert_eq!(
            qualifier_regex("q").filter,
            Some(Filter::ColumnQualifierRegexFilter(b"q".to_vec()))
        );
        assert_eq!(
            value_regex("v").filter,
            Some(Filter::ValueRegexFilter(b"v".to_vec()))
        );
        assert_eq!(
            family_regex("f.*").filter,
            Some(Filter::FamilyNameRegexFilter("f.*".into()))
        );
        assert_eq!(row_sample(0.5).filter, Some(Filter::RowSampleFilter(0.5)));
        assert_eq!(
            cells_per_row_limit(2).filter,
            Some(Filter::CellsPerRowLimitFilter(2))
        );
        assert_eq!(
            cells_per_row_offset(3).filter,
            Some(Filter::CellsPerRowOffsetFilter(3))
        );
        assert_eq!(
            strip_value().filter,
            Some(Filter::StripValueTransformer(true))
        );
    }

    #[test]
    fn escaping() {
        assert_eq!(escape_regex(b"ab_9"), b"ab_9");
        assert_eq!(escape_regex(b"a.b*"), b"a\\.b\\*");
        assert_eq!(escape_regex(&[0, b'\n', 0xff]), b"\\x00\\x0a\\xff");
        assert_eq!(
            family("a-b").filter,
            Some(Filter::FamilyNameRegexFilter("a\\-b".into()))
        );
    }
}
