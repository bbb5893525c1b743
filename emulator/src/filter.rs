//! Bigtable `RowFilter` evaluation.
//!
//! A request's filter is compiled once ([`CompiledFilter::compile`]: validation, regexes built)
//! and then applied to every row it reads ([`CompiledFilter::apply`]). The semantics follow the
//! doc comments of `google.bigtable.v2.RowFilter`, which are the spec:
//!
//! * cells flow through the tree in read order (family, qualifier ascending, timestamp
//!   descending) and every node hands its parent cells in that order;
//! * an interleave runs each sub-filter on its own copy of the input and merges the outputs
//!   back into read order, keeping duplicates;
//! * a sink sends the cells that reach it straight to the final output, whatever the filters
//!   around it do afterwards;
//! * regexes are RE2 in raw-byte (Latin-1) mode and must match the whole input.

use std::cmp::Ordering;
use std::ops::Bound;

use googleapis_tonic_google_bigtable_v2::google::bigtable::v2::{
    column_range, row_filter::Filter, value_range, ColumnRange, RowFilter, TimestampRange,
    ValueRange,
};
use prost::Message;
use regex::bytes::{Regex, RegexBuilder};

use crate::row::ReadCell;

/// Bigtable's limit on how deeply chains, interleaves and conditions may nest.
const MAX_DEPTH: usize = 20;
/// Bigtable's limit on the serialized size of a filter.
const MAX_FILTER_BYTES: usize = 20 * 1024;
/// Bigtable's limit on the length of a label.
const MAX_LABEL_CHARS: usize = 15;

/// Why a filter was rejected; the service answers INVALID_ARGUMENT with this message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct FilterError {
    /// The `RowFilter` field at fault, as named in the proto (e.g. `value_regex_filter`).
    pub field: &'static str,
    pub reason: String,
}

fn invalid<T>(field: &'static str, reason: impl Into<String>) -> Result<T, FilterError> {
    Err(FilterError {
        field,
        reason: reason.into(),
    })
}

/// A validated filter with its regexes built, ready to be applied to many rows.
#[derive(Clone, Debug)]
pub struct CompiledFilter {
    root: Node,
}

impl CompiledFilter {
    /// Validates `filter` and builds it. A `RowFilter` with no filter set, anywhere in the tree,
    /// is rejected; a request without any filter should simply not compile one.
    pub fn compile(filter: &RowFilter) -> Result<CompiledFilter, FilterError> {
        let size = filter.encoded_len();
        if size > MAX_FILTER_BYTES {
            return invalid(
                "filter",
                format!("serialized size {size} bytes exceeds the limit of {MAX_FILTER_BYTES}"),
            );
        }
        Ok(CompiledFilter {
            root: compile_node(filter, 0, false)?,
        })
    }

    /// Filters one row. `cells` must be in read order (as from `StoredRow::read_cells`); the
    /// result is in the order a reader gets it, duplicates (from interleaves and sinks) included.
    pub fn apply(&self, row_key: &[u8], cells: Vec<ReadCell>) -> Vec<ReadCell> {
        let mut sink = Vec::new();
        let mut out = self.root.eval(row_key, cells, &mut sink);
        if !sink.is_empty() {
            out.append(&mut sink);
            out.sort_by(read_order);
        }
        out
    }
}

/// Read order: family and qualifier ascending, newest first. Ties (duplicates) keep their
/// relative order because every sort below is stable.
fn read_order(a: &ReadCell, b: &ReadCell) -> Ordering {
    a.family
        .cmp(&b.family)
        .then_with(|| a.qualifier.cmp(&b.qualifier))
        .then_with(|| b.ts.cmp(&a.ts))
}

#[derive(Clone, Debug)]
enum Node {
    PassAll,
    BlockAll,
    Sink,
    Chain(Vec<Node>),
    Interleave(Vec<Node>),
    Condition {
        predicate: Box<Node>,
        on_true: Option<Box<Node>>,
        on_false: Option<Box<Node>>,
    },
    RowKeyRegex(Regex),
    RowSample(f64),
    FamilyRegex(Regex),
    QualifierRegex(Regex),
    ColumnRange {
        family: String,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
    },
    TimestampRange {
        start: i64,
        /// Exclusive; `None` is infinity.
        end: Option<i64>,
    },
    ValueRegex(Regex),
    ValueRange {
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
    },
    RowOffset(usize),
    RowLimit(usize),
    ColumnLimit(usize),
    StripValue,
    Label(String),
}

fn compile_node(f: &RowFilter, depth: usize, in_condition: bool) -> Result<Node, FilterError> {
    let Some(kind) = &f.filter else {
        return invalid("filter", "a RowFilter must set one of its filters");
    };
    let nested = |field: &'static str| {
        if depth >= MAX_DEPTH {
            invalid(
                field,
                format!("filters may not be nested more than {MAX_DEPTH} levels deep"),
            )
        } else {
            Ok(depth + 1)
        }
    };
    Ok(match kind {
        Filter::Chain(chain) => {
            let depth = nested("chain")?;
            let labelled = chain.filters.iter().filter(|f| contains_label(f)).count();
            if labelled > 1 {
                return invalid(
                    "chain",
                    "at most one sub-filter of a chain may contain an apply_label_transformer \
                     (a cell can carry only one label)",
                );
            }
            let mut nodes = chain
                .filters
                .iter()
                .map(|f| compile_node(f, depth, in_condition))
                .collect::<Result<Vec<_>, _>>()?;
            match nodes.len() {
                0 => Node::PassAll,
                1 => nodes.pop().expect("one node"),
                _ => Node::Chain(nodes),
            }
        }
        Filter::Interleave(interleave) => {
            let depth = nested("interleave")?;
            let mut nodes = interleave
                .filters
                .iter()
                .map(|f| compile_node(f, depth, in_condition))
                .collect::<Result<Vec<_>, _>>()?;
            match nodes.len() {
                0 => Node::BlockAll,
                1 => nodes.pop().expect("one node"),
                _ => Node::Interleave(nodes),
            }
        }
        Filter::Condition(cond) => {
            let depth = nested("condition")?;
            let Some(predicate) = &cond.predicate_filter else {
                return invalid("condition", "predicate_filter must be set");
            };
            let branch = |f: &Option<Box<RowFilter>>| {
                f.as_deref()
                    .map(|f| compile_node(f, depth, true).map(Box::new))
                    .transpose()
            };
            Node::Condition {
                predicate: Box::new(compile_node(predicate, depth, true)?),
                on_true: branch(&cond.true_filter)?,
                on_false: branch(&cond.false_filter)?,
            }
        }
        Filter::Sink(set) => {
            if !set {
                return invalid("sink", "must be true if set");
            }
            if in_condition {
                return invalid("sink", "cannot be used within a condition");
            }
            Node::Sink
        }
        Filter::PassAllFilter(set) => {
            if !set {
                return invalid("pass_all_filter", "must be true if set");
            }
            Node::PassAll
        }
        Filter::BlockAllFilter(set) => {
            if !set {
                return invalid("block_all_filter", "must be true if set");
            }
            Node::BlockAll
        }
        Filter::RowKeyRegexFilter(re) => {
            Node::RowKeyRegex(build_regex("row_key_regex_filter", re)?)
        }
        Filter::RowSampleFilter(p) => {
            // NaN fails both comparisons and is rejected too.
            if !(*p > 0.0 && *p < 1.0) {
                return invalid(
                    "row_sample_filter",
                    format!("{p} is not strictly between 0 and 1"),
                );
            }
            Node::RowSample(*p)
        }
        Filter::FamilyNameRegexFilter(re) => {
            const FIELD: &str = "family_name_regex_filter";
            if re.contains(':') {
                return invalid(FIELD, "the regex must not contain ':'");
            }
            Node::FamilyRegex(build_regex(FIELD, re.as_bytes())?)
        }
        Filter::ColumnQualifierRegexFilter(re) => {
            Node::QualifierRegex(build_regex("column_qualifier_regex_filter", re)?)
        }
        Filter::ColumnRangeFilter(ColumnRange {
            family_name,
            start_qualifier,
            end_qualifier,
        }) => {
            if family_name.is_empty() {
                return invalid("column_range_filter", "family_name must be set");
            }
            use column_range::{EndQualifier, StartQualifier};
            Node::ColumnRange {
                family: family_name.clone(),
                start: match start_qualifier {
                    None => Bound::Unbounded,
                    Some(StartQualifier::StartQualifierClosed(q)) => Bound::Included(q.clone()),
                    Some(StartQualifier::StartQualifierOpen(q)) => Bound::Excluded(q.clone()),
                },
                end: match end_qualifier {
                    None => Bound::Unbounded,
                    Some(EndQualifier::EndQualifierClosed(q)) => Bound::Included(q.clone()),
                    Some(EndQualifier::EndQualifierOpen(q)) => Bound::Excluded(q.clone()),
                },
            }
        }
        Filter::TimestampRangeFilter(TimestampRange {
            start_timestamp_micros,
            end_timestamp_micros,
        }) => Node::TimestampRange {
            start: *start_timestamp_micros,
            end: (*end_timestamp_micros != 0).then_some(*end_timestamp_micros),
        },
        Filter::ValueRegexFilter(re) => Node::ValueRegex(build_regex("value_regex_filter", re)?),
        Filter::ValueRangeFilter(ValueRange {
            start_value,
            end_value,
        }) => {
            use value_range::{EndValue, StartValue};
            Node::ValueRange {
                start: match start_value {
                    None => Bound::Unbounded,
                    Some(StartValue::StartValueClosed(v)) => Bound::Included(v.clone()),
                    Some(StartValue::StartValueOpen(v)) => Bound::Excluded(v.clone()),
                },
                end: match end_value {
                    None => Bound::Unbounded,
                    Some(EndValue::EndValueClosed(v)) => Bound::Included(v.clone()),
                    Some(EndValue::EndValueOpen(v)) => Bound::Excluded(v.clone()),
                },
            }
        }
        Filter::CellsPerRowOffsetFilter(n) => {
            Node::RowOffset(non_negative("cells_per_row_offset_filter", *n)?)
        }
        Filter::CellsPerRowLimitFilter(n) => {
            Node::RowLimit(non_negative("cells_per_row_limit_filter", *n)?)
        }
        Filter::CellsPerColumnLimitFilter(n) => {
            Node::ColumnLimit(non_negative("cells_per_column_limit_filter", *n)?)
        }
        Filter::StripValueTransformer(set) => {
            if !set {
                return invalid("strip_value_transformer", "must be true if set");
            }
            Node::StripValue
        }
        Filter::ApplyLabelTransformer(label) => {
            let ok = !label.is_empty()
                && label.len() <= MAX_LABEL_CHARS
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return invalid(
                    "apply_label_transformer",
                    format!("{label:?} must be 1 to {MAX_LABEL_CHARS} characters of [a-z0-9-]"),
                );
            }
            Node::Label(label.clone())
        }
    })
}

fn non_negative(field: &'static str, n: i32) -> Result<usize, FilterError> {
    usize::try_from(n).or_else(|_| invalid(field, format!("{n} is negative")))
}

/// Whether cells leaving `f` may carry a label `f` applied. A condition's predicate does not
/// count: its output is only tested for emptiness.
fn contains_label(f: &RowFilter) -> bool {
    match &f.filter {
        Some(Filter::ApplyLabelTransformer(_)) => true,
        Some(Filter::Chain(c)) => c.filters.iter().any(contains_label),
        Some(Filter::Interleave(i)) => i.filters.iter().any(contains_label),
        Some(Filter::Condition(c)) => [&c.true_filter, &c.false_filter]
            .into_iter()
            .any(|b| b.as_deref().is_some_and(contains_label)),
        _ => false,
    }
}

impl Node {
    fn eval(
        &self,
        key: &[u8],
        mut cells: Vec<ReadCell>,
        sink: &mut Vec<ReadCell>,
    ) -> Vec<ReadCell> {
        // No filter makes cells out of nothing, and a sink given nothing outputs nothing.
        if cells.is_empty() {
            return cells;
        }
        match self {
            Node::PassAll => cells,
            Node::BlockAll => Vec::new(),
            Node::Sink => {
                sink.append(&mut cells);
                cells
            }
            Node::Chain(nodes) => {
                for node in nodes {
                    cells = node.eval(key, cells, sink);
                }
                cells
            }
            Node::Interleave(nodes) => {
                let mut out = Vec::new();
                let mut parts = 0;
                let last = nodes.len() - 1;
                for (i, node) in nodes.iter().enumerate() {
                    let input = if i == last {
                        std::mem::take(&mut cells)
                    } else {
                        cells.clone()
                    };
                    let part = node.eval(key, input, sink);
                    if !part.is_empty() {
                        parts += 1;
                        out.extend(part);
                    }
                }
                if parts > 1 {
                    // Each part is already in read order; a stable sort merges the runs and
                    // keeps duplicates in sub-filter order.
                    out.sort_by(read_order);
                }
                out
            }
            Node::Condition {
                predicate,
                on_true,
                on_false,
            } => {
                // Sinks are rejected inside conditions, so the predicate's sink stays empty;
                // the predicate's output (labels included) is only tested for emptiness.
                let matched = !predicate
                    .eval(key, cells.clone(), &mut Vec::new())
                    .is_empty();
                match if matched { on_true } else { on_false } {
                    Some(branch) => branch.eval(key, cells, sink),
                    None => Vec::new(),
                }
            }
            Node::RowKeyRegex(re) => {
                if re.is_match(key) {
                    cells
                } else {
                    Vec::new()
                }
            }
            Node::RowSample(p) => {
                if rand::random::<f64>() < *p {
                    cells
                } else {
                    Vec::new()
                }
            }
            Node::FamilyRegex(re) => {
                retain_cached(
                    &mut cells,
                    |a, b| a.family == b.family,
                    |c| re.is_match(c.family.as_bytes()),
                );
                cells
            }
            Node::QualifierRegex(re) => {
                retain_cached(
                    &mut cells,
                    |a, b| a.qualifier == b.qualifier,
                    |c| re.is_match(&c.qualifier),
                );
                cells
            }
            Node::ColumnRange { family, start, end } => {
                cells.retain(|c| c.family == *family && in_range(&c.qualifier, start, end));
                cells
            }
            Node::TimestampRange { start, end } => {
                cells.retain(|c| c.ts >= *start && end.is_none_or(|end| c.ts < end));
                cells
            }
            Node::ValueRegex(re) => {
                cells.retain(|c| re.is_match(&c.value));
                cells
            }
            Node::ValueRange { start, end } => {
                cells.retain(|c| in_range(&c.value, start, end));
                cells
            }
            Node::RowOffset(n) => {
                if *n >= cells.len() {
                    Vec::new()
                } else {
                    cells.drain(..*n);
                    cells
                }
            }
            Node::RowLimit(n) => {
                cells.truncate(*n);
                cells
            }
            Node::ColumnLimit(n) => {
                let mut seen = 0usize;
                let mut keep = Vec::with_capacity(cells.len());
                for (i, c) in cells.iter().enumerate() {
                    if i == 0 || !same_column(&cells[i - 1], c) {
                        seen = 0;
                    }
                    seen += 1;
                    keep.push(seen <= *n);
                }
                let mut keep = keep.into_iter();
                cells.retain(|_| keep.next().unwrap_or(false));
                cells
            }
            Node::StripValue => {
                for c in &mut cells {
                    c.value = Vec::new();
                }
                cells
            }
            Node::Label(label) => {
                for c in &mut cells {
                    c.labels.push(label.clone());
                }
                cells
            }
        }
    }
}

fn same_column(a: &ReadCell, b: &ReadCell) -> bool {
    a.qualifier == b.qualifier && a.family == b.family
}

/// Keeps the cells passing `test`, reusing the previous cell's verdict when `same` says the
/// test would see the same input (cells of one column sit next to each other in read order).
fn retain_cached(
    cells: &mut Vec<ReadCell>,
    same: impl Fn(&ReadCell, &ReadCell) -> bool,
    test: impl Fn(&ReadCell) -> bool,
) {
    let mut keep = Vec::with_capacity(cells.len());
    for (i, c) in cells.iter().enumerate() {
        let verdict = match i.checked_sub(1) {
            Some(p) if same(&cells[p], c) => keep[p],
            _ => test(c),
        };
        keep.push(verdict);
    }
    let mut keep = keep.into_iter();
    cells.retain(|_| keep.next().unwrap_or(false));
}

fn in_range(v: &[u8], start: &Bound<Vec<u8>>, end: &Bound<Vec<u8>>) -> bool {
    let above = match start {
        Bound::Included(s) => v >= s.as_slice(),
        Bound::Excluded(s) => v > s.as_slice(),
        Bound::Unbounded => true,
    };
    let below = match end {
        Bound::Included(e) => v <= e.as_slice(),
        Bound::Excluded(e) => v < e.as_slice(),
        Bound::Unbounded => true,
    };
    above && below
}

/// Builds an RE2 pattern as a whole-input matcher over raw bytes.
fn build_regex(field: &'static str, pattern: &[u8]) -> Result<Regex, FilterError> {
    let translated = translate_re2(pattern).or_else(|reason| invalid(field, reason))?;
    RegexBuilder::new(&format!("^(?:{translated})$"))
        .unicode(false)
        .octal(true)
        .build()
        .or_else(|e| invalid(field, e.to_string()))
}

fn push_byte_escape(out: &mut String, b: u8) {
    out.push_str(&format!("\\x{b:02X}"));
}

/// Rewrites an RE2 pattern in Latin-1 mode (each pattern byte is one character, each
/// character matches one byte) into the `regex` crate's syntax with Unicode off:
///
/// * bytes >= 0x80 become `\xHH`, so non-UTF-8 patterns work and match byte for byte;
/// * `\C` (any byte) becomes `(?s:.)`; `\Q...\E` quoting is expanded;
/// * inside a class, `[` (other than `[:name:]`), `&` and `~` are literal in RE2 but
///   special in `regex`, so they are escaped; a `]` first in a class is literal;
/// * an unmatched `)` is rejected here, since the caller wraps the result in `^(?:…)$` and
///   `a)|(b` would otherwise escape the anchors;
/// * only RE2's flags (`i`, `m`, `s`, `U`) are accepted.
fn translate_re2(pat: &[u8]) -> Result<String, String> {
    let mut out = String::with_capacity(pat.len() + 8);
    let mut depth = 0usize;
    let mut in_class = false;
    // Position right after `[` or `[^`, where `]` is a literal.
    let mut class_start = false;
    let mut i = 0;
    while i < pat.len() {
        let b = pat[i];
        let at_class_start = std::mem::take(&mut class_start);
        i += 1;
        match b {
            b'\\' => {
                let Some(&e) = pat.get(i) else {
                    return Err("trailing backslash".into());
                };
                i += 1;
                match e {
                    b'C' if in_class => {
                        return Err("\\C is not allowed in a character class".into())
                    }
                    b'C' => out.push_str("(?s:.)"),
                    b'Q' if !in_class => {
                        while i < pat.len() {
                            if pat[i] == b'\\' && pat.get(i + 1) == Some(&b'E') {
                                i += 2;
                                break;
                            }
                            if pat[i].is_ascii_alphanumeric() {
                                out.push(pat[i] as char);
                            } else {
                                push_byte_escape(&mut out, pat[i]);
                            }
                            i += 1;
                        }
                    }
                    e if e >= 0x80 => push_byte_escape(&mut out, e),
                    e => {
                        out.push('\\');
                        out.push(e as char);
                    }
                }
            }
            _ if b >= 0x80 => push_byte_escape(&mut out, b),
            b'[' if in_class => {
                // `[:name:]` or `[:^name:]`; any other `[` is a literal.
                let name = pat[i..]
                    .strip_prefix(b":")
                    .map(|rest| rest.strip_prefix(b"^").unwrap_or(rest))
                    .map(|rest| rest.iter().take_while(|c| c.is_ascii_alphabetic()).count());
                let posix_len = match name {
                    Some(n) if n > 0 => {
                        let negated = usize::from(pat.get(i + 1) == Some(&b'^'));
                        let len = 1 + negated + n;
                        pat[i + len..].starts_with(b":]").then_some(len + 2)
                    }
                    _ => None,
                };
                match posix_len {
                    Some(len) => {
                        out.push('[');
                        out.extend(pat[i..i + len].iter().map(|&c| c as char));
                        i += len;
                    }
                    None => out.push_str("\\["),
                }
            }
            b']' if in_class && at_class_start => out.push_str("\\]"),
            b']' if in_class => {
                in_class = false;
                out.push(']');
            }
            b'&' | b'~' if in_class => {
                out.push('\\');
                out.push(b as char);
            }
            b'[' => {
                in_class = true;
                class_start = true;
                out.push('[');
                if pat.get(i) == Some(&b'^') {
                    out.push('^');
                    i += 1;
                }
            }
            b'(' if !in_class => {
                depth += 1;
                out.push('(');
                if pat.get(i) == Some(&b'?') && !matches!(pat.get(i + 1), Some(b'P' | b'<' | b':'))
                {
                    let flags: Vec<u8> = pat[i + 1..]
                        .iter()
                        .copied()
                        .take_while(|c| c.is_ascii_alphabetic() || *c == b'-')
                        .collect();
                    if let Some(bad) = flags.iter().find(|c| !b"imsU-".contains(c)) {
                        return Err(format!("unsupported flag {:?}", *bad as char));
                    }
                }
            }
            b')' if !in_class => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| "unmatched ')'".to_string())?;
                out.push(')');
            }
            _ => out.push(b as char),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::StoredRow;
    use googleapis_tonic_google_bigtable_v2::google::bigtable::v2::row_filter::{
        Chain, Condition, Interleave,
    };

    fn rf(filter: Filter) -> RowFilter {
        RowFilter {
            filter: Some(filter),
        }
    }
    fn chain(filters: Vec<RowFilter>) -> RowFilter {
        rf(Filter::Chain(Chain { filters }))
    }
    fn interleave(filters: Vec<RowFilter>) -> RowFilter {
        rf(Filter::Interleave(Interleave { filters }))
    }
    fn cond(pred: Option<RowFilter>, t: Option<RowFilter>, f: Option<RowFilter>) -> RowFilter {
        rf(Filter::Condition(Box::new(Condition {
            predicate_filter: pred.map(Box::new),
            true_filter: t.map(Box::new),
            false_filter: f.map(Box::new),
        })))
    }
    fn pass() -> RowFilter {
        rf(Filter::PassAllFilter(true))
    }
    fn block() -> RowFilter {
        rf(Filter::BlockAllFilter(true))
    }
    fn sink() -> RowFilter {
        rf(Filter::Sink(true))
    }
    fn family(re: &str) -> RowFilter {
        rf(Filter::FamilyNameRegexFilter(re.into()))
    }
    fn qual(re: &[u8]) -> RowFilter {
        rf(Filter::ColumnQualifierRegexFilter(re.to_vec()))
    }
    fn value(re: &[u8]) -> RowFilter {
        rf(Filter::ValueRegexFilter(re.to_vec()))
    }
    fn key(re: &[u8]) -> RowFilter {
        rf(Filter::RowKeyRegexFilter(re.to_vec()))
    }
    fn label(l: &str) -> RowFilter {
        rf(Filter::ApplyLabelTransformer(l.into()))
    }
    fn strip() -> RowFilter {
        rf(Filter::StripValueTransformer(true))
    }
    fn col_limit(n: i32) -> RowFilter {
        rf(Filter::CellsPerColumnLimitFilter(n))
    }
    fn row_limit(n: i32) -> RowFilter {
        rf(Filter::CellsPerRowLimitFilter(n))
    }
    fn row_offset(n: i32) -> RowFilter {
        rf(Filter::CellsPerRowOffsetFilter(n))
    }
    fn ts_range(start: i64, end: i64) -> RowFilter {
        rf(Filter::TimestampRangeFilter(TimestampRange {
            start_timestamp_micros: start,
            end_timestamp_micros: end,
        }))
    }

    /// Row "r1":
    ///   a:q1 @3000=v13 @1000=v11
    ///   a:q2 @2000=v22
    ///   b:q1 @5000=v15
    ///   b:zz @4000=""
    fn row() -> Vec<ReadCell> {
        let mut r = StoredRow::default();
        r.set_cell("a", b"q1", 1000, b"v11".to_vec());
        r.set_cell("a", b"q1", 3000, b"v13".to_vec());
        r.set_cell("a", b"q2", 2000, b"v22".to_vec());
        r.set_cell("b", b"q1", 5000, b"v15".to_vec());
        r.set_cell("b", b"zz", 4000, Vec::new());
        r.read_cells()
    }

    fn cell(family: &str, qualifier: &[u8], ts: i64, value: &[u8]) -> ReadCell {
        ReadCell {
            family: family.into(),
            qualifier: qualifier.to_vec(),
            ts,
            value: value.to_vec(),
            labels: Vec::new(),
        }
    }

    /// Renders cells as `family:qualifier@ts[labels]` for compact assertions.
    fn show(cells: &[ReadCell]) -> Vec<String> {
        cells
            .iter()
            .map(|c| {
                let mut s = format!(
                    "{}:{}@{}",
                    c.family,
                    String::from_utf8_lossy(&c.qualifier),
                    c.ts / 1000
                );
                if !c.labels.is_empty() {
                    s.push_str(&format!("[{}]", c.labels.join(",")));
                }
                s
            })
            .collect()
    }

    fn run_on(f: &RowFilter, key: &[u8], cells: Vec<ReadCell>) -> Vec<String> {
        show(
            &CompiledFilter::compile(f)
                .expect("filter compiles")
                .apply(key, cells),
        )
    }

    fn run(f: &RowFilter) -> Vec<String> {
        run_on(f, b"r1", row())
    }

    fn err(f: &RowFilter) -> FilterError {
        CompiledFilter::compile(f).expect_err("filter is rejected")
    }

    const ALL: [&str; 5] = ["a:q1@3", "a:q1@1", "a:q2@2", "b:q1@5", "b:zz@4"];

    #[test]
    fn unset_filter_is_rejected_anywhere() {
        let unset = RowFilter { filter: None };
        assert_eq!(err(&unset).field, "filter");
        assert_eq!(err(&chain(vec![pass(), unset.clone()])).field, "filter");
        assert_eq!(
            err(&interleave(vec![unset.clone(), pass()])).field,
            "filter"
        );
        assert_eq!(
            err(&cond(Some(pass()), Some(unset.clone()), None)).field,
            "filter"
        );
        assert_eq!(err(&cond(Some(unset), None, None)).field, "filter");
        assert_eq!(err(&cond(None, Some(pass()), None)).field, "condition");
    }

    #[test]
    fn pass_all_and_block_all() {
        assert_eq!(run(&pass()), ALL);
        assert!(run(&block()).is_empty());
        assert_eq!(
            err(&rf(Filter::PassAllFilter(false))).field,
            "pass_all_filter"
        );
        assert_eq!(
            err(&rf(Filter::BlockAllFilter(false))).field,
            "block_all_filter"
        );
        assert_eq!(
            err(&rf(Filter::StripValueTransformer(false))).field,
            "strip_value_transformer"
        );
        assert_eq!(err(&rf(Filter::Sink(false))).field, "sink");
    }

    #[test]
    fn empty_input_gives_empty_output() {
        for f in [
            pass(),
            sink(),
            interleave(vec![pass(), pass()]),
            cond(Some(block()), None, Some(pass())),
        ] {
            assert!(run_on(&f, b"r1", Vec::new()).is_empty());
        }
    }

    #[test]
    fn chain_is_sequential_and_empty_chain_passes_all() {
        assert_eq!(run(&chain(vec![])), ALL);
        assert_eq!(
            run(&chain(vec![family("a")])),
            ["a:q1@3", "a:q1@1", "a:q2@2"]
        );
        assert_eq!(
            run(&chain(vec![family("a"), qual(b"q1"), col_limit(1)])),
            ["a:q1@3"]
        );
        // Order matters: the limit applies to what the previous filter let through.
        assert_eq!(
            run(&chain(vec![row_limit(2), family("b")])),
            Vec::<String>::new()
        );
        assert_eq!(
            run(&chain(vec![family("b"), row_limit(2)])),
            ["b:q1@5", "b:zz@4"]
        );
        assert!(run(&chain(vec![pass(), block(), pass()])).is_empty());
    }

    #[test]
    fn interleave_keeps_duplicates_in_read_order() {
        assert!(run(&interleave(vec![])).is_empty());
        assert_eq!(
            run(&interleave(vec![family("a")])),
            ["a:q1@3", "a:q1@1", "a:q2@2"]
        );
        assert_eq!(
            run(&interleave(vec![pass(), pass()])),
            [
                "a:q1@3", "a:q1@3", "a:q1@1", "a:q1@1", "a:q2@2", "a:q2@2", "b:q1@5", "b:q1@5",
                "b:zz@4", "b:zz@4"
            ]
        );
        // Outputs of different branches are merged back into read order.
        assert_eq!(
            run(&interleave(vec![
                family("b"),
                qual(b"q2"),
                ts_range(3000, 0)
            ])),
            ["a:q1@3", "a:q2@2", "b:q1@5", "b:q1@5", "b:zz@4", "b:zz@4"]
        );
        // Each branch sees the full input, not what the other branches left.
        assert_eq!(
            run(&interleave(vec![
                chain(vec![col_limit(1), label("new")]),
                block(),
                row_offset(4)
            ])),
            [
                "a:q1@3[new]",
                "a:q2@2[new]",
                "b:q1@5[new]",
                "b:zz@4[new]",
                "b:zz@4"
            ]
        );
        // Duplicates count separately in the limits that follow.
        assert_eq!(
            run(&chain(vec![interleave(vec![pass(), pass()]), col_limit(1)])),
            ["a:q1@3", "a:q2@2", "b:q1@5", "b:zz@4"]
        );
        assert_eq!(
            run(&chain(vec![interleave(vec![pass(), pass()]), row_limit(3)])),
            ["a:q1@3", "a:q1@3", "a:q1@1"]
        );
        assert_eq!(
            run(&chain(vec![
                interleave(vec![pass(), pass()]),
                row_offset(7)
            ])),
            ["b:q1@5", "b:zz@4", "b:zz@4"]
        );
    }

    #[test]
    fn interleave_doc_example() {
        // The example in the Interleave doc comment, over three input cells of row "r".
        let input = vec![
            cell("far", b"bar", 7, b"a"),
            cell("far", b"blah", 5, b"x"),
            cell("foo", b"bar", 10, b"x"),
            cell("foo", b"bar", 10, b"z"),
            cell("foo", b"blah", 11, b"z"),
        ];
        // f(0) yields foo,bar,10,x and foo,blah,11,z; f(1) foo,bar,10,z and far,blah,5,x;
        // f(2) far,bar,7,a and far,blah,5,x.
        let f = interleave(vec![
            chain(vec![
                family("foo"),
                interleave(vec![chain(vec![qual(b"bar"), value(b"x")]), qual(b"blah")]),
            ]),
            interleave(vec![
                chain(vec![qual(b"bar"), value(b"z")]),
                chain(vec![qual(b"blah"), family("far")]),
            ]),
            family("far"),
        ]);
        let out = CompiledFilter::compile(&f).unwrap().apply(b"r", input);
        let got: Vec<_> = out
            .iter()
            .map(|c| {
                format!(
                    "{},{},{},{}",
                    c.family,
                    String::from_utf8_lossy(&c.qualifier),
                    c.ts,
                    String::from_utf8_lossy(&c.value)
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                "far,bar,7,a",
                "far,blah,5,x",
                "far,blah,5,x",
                "foo,bar,10,x",
                "foo,bar,10,z",
                "foo,blah,11,z"
            ]
        );
    }

    #[test]
    fn condition_branches() {
        let has_b = family("b");
        assert_eq!(
            run(&cond(Some(has_b.clone()), Some(family("a")), Some(block()))),
            ["a:q1@3", "a:q1@1", "a:q2@2"]
        );
        assert_eq!(
            run(&cond(Some(family("c")), Some(pass()), Some(qual(b"zz")))),
            ["b:zz@4"]
        );
        // A missing branch yields nothing.
        assert!(run(&cond(Some(has_b.clone()), None, Some(pass()))).is_empty());
        assert!(run(&cond(Some(family("c")), Some(pass()), None)).is_empty());
        assert!(run(&cond(Some(has_b), None, None)).is_empty());
        // The branches see the condition's input, not the predicate's output.
        assert_eq!(
            run(&cond(Some(qual(b"zz")), Some(row_limit(1)), None)),
            ["a:q1@3"]
        );
        // Labels applied in the predicate are not output.
        assert_eq!(
            run(&cond(
                Some(chain(vec![family("a"), label("p")])),
                Some(col_limit(1)),
                None
            )),
            ["a:q1@3", "a:q2@2", "b:q1@5", "b:zz@4"]
        );
        // The row key counts: the predicate is evaluated per row.
        let f = cond(Some(key(b"r1")), Some(pass()), Some(block()));
        assert_eq!(run_on(&f, b"r1", row()).len(), 5);
        assert!(run_on(&f, b"r2", row()).is_empty());
        // Inside a chain, the condition acts on the intermediate row.
        assert_eq!(
            run(&chain(vec![
                family("b"),
                cond(Some(qual(b"q1")), Some(strip()), None),
                row_limit(1)
            ])),
            ["b:q1@5"]
        );
    }

    #[test]
    fn sink_doc_example() {
        // Chain(FamilyRegex("A"), Interleave(All(), Chain(Label("foo"), Sink())), QualifierRegex("B"))
        let input = vec![
            cell("A", b"A", 1, b"w"),
            cell("A", b"B", 2, b"x"),
            cell("B", b"B", 4, b"z"),
        ];
        let f = chain(vec![
            family("A"),
            interleave(vec![pass(), chain(vec![label("foo"), sink()])]),
            qual(b"B"),
        ]);
        let out = CompiledFilter::compile(&f).unwrap().apply(b"r", input);
        let mut got: Vec<_> = out
            .iter()
            .map(|c| {
                format!(
                    "{},{},{},{},{:?}",
                    c.family,
                    String::from_utf8_lossy(&c.qualifier),
                    c.ts,
                    String::from_utf8_lossy(&c.value),
                    c.labels
                )
            })
            .collect();
        // The two A:B copies may come in either order; everything else is in read order.
        assert_eq!(got[0], r#"A,A,1,w,["foo"]"#);
        got[1..].sort();
        assert_eq!(got[1..], [r#"A,B,2,x,["foo"]"#, "A,B,2,x,[]"]);
    }

    #[test]
    fn sink_bypasses_the_rest_of_the_chain() {
        assert_eq!(run(&sink()), ALL);
        assert_eq!(
            run(&chain(vec![family("b"), sink(), block()])),
            ["b:q1@5", "b:zz@4"]
        );
        // Sunk cells skip enclosing chains at every level, and merge with the normal output.
        let f = chain(vec![
            interleave(vec![
                chain(vec![qual(b"q2"), label("s"), sink()]),
                family("b"),
            ]),
            row_limit(1),
        ]);
        assert_eq!(run(&f), ["a:q2@2[s]", "b:q1@5"]);
        // A sink in each of two branches outputs both copies.
        let f = interleave(vec![
            chain(vec![qual(b"zz"), sink()]),
            chain(vec![qual(b"zz"), sink()]),
        ]);
        assert_eq!(run(&f), ["b:zz@4", "b:zz@4"]);
    }

    #[test]
    fn sink_is_rejected_inside_conditions() {
        for f in [
            cond(Some(sink()), Some(pass()), None),
            cond(Some(pass()), Some(chain(vec![pass(), sink()])), None),
            cond(Some(pass()), None, Some(interleave(vec![pass(), sink()]))),
            chain(vec![pass(), cond(Some(pass()), Some(sink()), None)]),
        ] {
            let e = err(&f);
            assert_eq!(e.field, "sink");
            assert!(e.to_string().contains("condition"), "{e}");
        }
    }

    #[test]
    fn row_key_regex_is_anchored_and_binary() {
        assert_eq!(run_on(&key(b"r1"), b"r1", row()).len(), 5);
        assert!(run_on(&key(b"r"), b"r1", row()).is_empty());
        assert!(run_on(&key(b"1"), b"r1", row()).is_empty());
        assert!(run_on(&key(b"r1"), b"xr1", row()).is_empty());
        assert_eq!(run_on(&key(b"r.*"), b"r1", row()).len(), 5);
        // `.` does not match `\n`; `\C` matches any byte.
        assert!(run_on(&key(b"a.b"), b"a\nb", row()).is_empty());
        assert_eq!(run_on(&key(b"a\\Cb"), b"a\nb", row()).len(), 5);
        assert_eq!(run_on(&key(b"\\C*"), b"\xff\x00\n", row()).len(), 5);
        // Non-UTF-8 bytes in the pattern match themselves.
        assert_eq!(run_on(&key(b"\xff\xfe"), b"\xff\xfe", row()).len(), 5);
        assert!(run_on(&key(b"\xff\xfe"), b"\xff\xff", row()).is_empty());
        assert_eq!(run_on(&key(b"[\xf0-\xff]+"), b"\xf1\xff", row()).len(), 5);
        assert!(err(&key(b"("))
            .to_string()
            .starts_with("invalid row_key_regex_filter: "));
    }

    #[test]
    fn row_sample() {
        for bad in [0.0, 1.0, -0.5, 2.0, f64::NAN] {
            assert_eq!(
                err(&rf(Filter::RowSampleFilter(bad))).field,
                "row_sample_filter"
            );
        }
        let rare = CompiledFilter::compile(&rf(Filter::RowSampleFilter(1e-12))).unwrap();
        let common = CompiledFilter::compile(&rf(Filter::RowSampleFilter(1.0 - 1e-12))).unwrap();
        let half = CompiledFilter::compile(&rf(Filter::RowSampleFilter(0.5))).unwrap();
        let mut kept = 0;
        for _ in 0..2000 {
            assert!(rare.apply(b"r", row()).is_empty());
            assert_eq!(common.apply(b"r", row()).len(), 5);
            // All cells of a row or none.
            match half.apply(b"r", row()).len() {
                0 => {}
                5 => kept += 1,
                n => panic!("row sample kept {n} of 5 cells"),
            }
        }
        assert!(
            (700..1300).contains(&kept),
            "kept {kept} of 2000 rows at p=0.5"
        );
    }

    #[test]
    fn family_regex_is_anchored() {
        let mut r = StoredRow::default();
        for fam in ["f", "ff", "xf", "g"] {
            r.set_cell(fam, b"q", 1000, b"v".to_vec());
        }
        let on = |re: &str| run_on(&family(re), b"r", r.read_cells());
        assert_eq!(on("f"), ["f:q@1"]);
        assert_eq!(on("f+"), ["f:q@1", "ff:q@1"]);
        assert_eq!(on("f|g"), ["f:q@1", "g:q@1"]);
        assert_eq!(on(".f"), ["ff:q@1", "xf:q@1"]);
        assert!(on("").is_empty());
        assert!(on("h").is_empty());
        let e = err(&family("a:b"));
        assert_eq!(e.field, "family_name_regex_filter");
        let e = err(&family("[a"));
        assert!(
            e.to_string()
                .starts_with("invalid family_name_regex_filter: "),
            "{e}"
        );
    }

    #[test]
    fn qualifier_regex_is_anchored_and_binary() {
        assert_eq!(run(&qual(b"q1")), ["a:q1@3", "a:q1@1", "b:q1@5"]);
        assert!(run(&qual(b"q")).is_empty());
        assert!(run(&qual(b"1")).is_empty());
        assert_eq!(run(&qual(b"q.")), ["a:q1@3", "a:q1@1", "a:q2@2", "b:q1@5"]);
        // Alternation stays inside the anchors.
        assert_eq!(run(&qual(b"z|q2")), ["a:q2@2"]);
        assert_eq!(run(&qual(b"zz|q")), ["b:zz@4"]);
        // A stray `)` cannot break out of the anchors.
        assert_eq!(err(&qual(b"q)|(z")).field, "column_qualifier_regex_filter");
        let mut r = StoredRow::default();
        r.set_cell("f", b"\x00\xff", 1000, vec![]);
        r.set_cell("f", b"a\nb", 1000, vec![]);
        r.set_cell("f", "é".as_bytes(), 1000, vec![]);
        let on = |re: &[u8]| run_on(&qual(re), b"r", r.read_cells()).len();
        assert_eq!(on(b"\\x00\\xff"), 1);
        assert_eq!(on(b"\x00\xff"), 1);
        assert_eq!(on(b"\\C\\C"), 2);
        assert_eq!(on(b".."), 2); // `é` is two bytes; `a\nb` has a newline
        assert_eq!(on(b"a.b"), 0);
        assert_eq!(on(b"a\\Cb"), 1);
        assert_eq!(on(b"a\\nb"), 1);
        assert_eq!(on("é".as_bytes()), 1);
        assert_eq!(on(b"\\xC3\\xA9"), 1);
        assert_eq!(on(b"(?s).*"), 3);
        assert_eq!(on(b".*"), 2);
    }

    #[test]
    fn column_range() {
        use column_range::{EndQualifier as E, StartQualifier as S};
        let range = |fam: &str, s: Option<S>, e: Option<E>| {
            rf(Filter::ColumnRangeFilter(ColumnRange {
                family_name: fam.into(),
                start_qualifier: s,
                end_qualifier: e,
            }))
        };
        let q = |s: &str| s.as_bytes().to_vec();
        assert_eq!(run(&range("a", None, None)), ["a:q1@3", "a:q1@1", "a:q2@2"]);
        assert_eq!(run(&range("b", None, None)), ["b:q1@5", "b:zz@4"]);
        assert!(run(&range("c", None, None)).is_empty());
        assert_eq!(
            run(&range(
                "a",
                Some(S::StartQualifierClosed(q("q1"))),
                Some(E::EndQualifierOpen(q("q2")))
            )),
            ["a:q1@3", "a:q1@1"]
        );
        assert_eq!(
            run(&range(
                "a",
                Some(S::StartQualifierOpen(q("q1"))),
                Some(E::EndQualifierClosed(q("q2")))
            )),
            ["a:q2@2"]
        );
        assert!(run(&range(
            "a",
            Some(S::StartQualifierOpen(q("q1"))),
            Some(E::EndQualifierOpen(q("q2")))
        ))
        .is_empty());
        assert_eq!(
            run(&range(
                "a",
                Some(S::StartQualifierClosed(q("q1"))),
                Some(E::EndQualifierClosed(q("q2")))
            )),
            ["a:q1@3", "a:q1@1", "a:q2@2"]
        );
        assert_eq!(
            run(&range("b", Some(S::StartQualifierClosed(q("r"))), None)),
            ["b:zz@4"]
        );
        assert_eq!(
            run(&range("b", None, Some(E::EndQualifierOpen(q("r"))))),
            ["b:q1@5"]
        );
        // An empty lower bound includes the empty qualifier.
        let mut r = StoredRow::default();
        r.set_cell("a", b"", 1000, vec![]);
        let f = range(
            "a",
            Some(S::StartQualifierClosed(vec![])),
            Some(E::EndQualifierOpen(q("a"))),
        );
        assert_eq!(run_on(&f, b"r", r.read_cells()), ["a:@1"]);
        // A reversed range matches nothing.
        assert!(run(&range(
            "a",
            Some(S::StartQualifierClosed(q("q2"))),
            Some(E::EndQualifierClosed(q("q1")))
        ))
        .is_empty());
        assert_eq!(err(&range("", None, None)).field, "column_range_filter");
    }

    #[test]
    fn timestamp_range_is_half_open() {
        assert_eq!(run(&ts_range(0, 0)), ALL);
        assert_eq!(run(&ts_range(2000, 4000)), ["a:q1@3", "a:q2@2"]);
        assert_eq!(run(&ts_range(3000, 0)), ["a:q1@3", "b:q1@5", "b:zz@4"]);
        assert_eq!(run(&ts_range(0, 1001)), ["a:q1@1"]);
        assert!(run(&ts_range(0, 1000)).is_empty());
        assert!(run(&ts_range(4000, 2000)).is_empty());
    }

    #[test]
    fn value_regex_and_range() {
        assert_eq!(run(&value(b"v1.")), ["a:q1@3", "a:q1@1", "b:q1@5"]);
        assert_eq!(run(&value(b"")), ["b:zz@4"]);
        assert!(run(&value(b"v")).is_empty());
        assert!(run(&value(b"1")).is_empty());
        assert_eq!(err(&value(b"a{2,1}")).field, "value_regex_filter");
        use value_range::{EndValue as E, StartValue as S};
        let range = |s: Option<S>, e: Option<E>| {
            rf(Filter::ValueRangeFilter(ValueRange {
                start_value: s,
                end_value: e,
            }))
        };
        let v = |s: &str| s.as_bytes().to_vec();
        assert_eq!(run(&range(None, None)), ALL);
        assert_eq!(
            run(&range(
                Some(S::StartValueClosed(v("v13"))),
                Some(E::EndValueOpen(v("v22")))
            )),
            ["a:q1@3", "b:q1@5"]
        );
        assert_eq!(
            run(&range(
                Some(S::StartValueOpen(v("v13"))),
                Some(E::EndValueClosed(v("v22")))
            )),
            ["a:q2@2", "b:q1@5"]
        );
        assert_eq!(run(&range(None, Some(E::EndValueOpen(v("v"))))), ["b:zz@4"]);
        assert_eq!(
            run(&range(
                Some(S::StartValueOpen(vec![])),
                Some(E::EndValueOpen(v("v12")))
            )),
            ["a:q1@1"]
        );
        assert_eq!(
            run(&range(Some(S::StartValueClosed(v("v2"))), None)),
            ["a:q2@2"]
        );
    }

    #[test]
    fn offsets_and_limits() {
        assert_eq!(run(&row_offset(0)), ALL);
        assert_eq!(run(&row_offset(3)), ["b:q1@5", "b:zz@4"]);
        assert!(run(&row_offset(5)).is_empty());
        assert!(run(&row_offset(50)).is_empty());
        assert!(run(&row_limit(0)).is_empty());
        assert_eq!(run(&row_limit(2)), ["a:q1@3", "a:q1@1"]);
        assert_eq!(run(&row_limit(9)), ALL);
        assert!(run(&col_limit(0)).is_empty());
        assert_eq!(run(&col_limit(1)), ["a:q1@3", "a:q2@2", "b:q1@5", "b:zz@4"]);
        assert_eq!(run(&col_limit(2)), ALL);
        // Same qualifier in two families is two columns.
        assert_eq!(
            run(&chain(vec![qual(b"q1"), col_limit(1)])),
            ["a:q1@3", "b:q1@5"]
        );
        assert_eq!(
            run(&chain(vec![row_offset(1), row_limit(2)])),
            ["a:q1@1", "a:q2@2"]
        );
        for (f, field) in [
            (row_offset(-1), "cells_per_row_offset_filter"),
            (row_limit(-1), "cells_per_row_limit_filter"),
            (col_limit(-1), "cells_per_column_limit_filter"),
        ] {
            assert_eq!(err(&f).field, field);
        }
    }

    #[test]
    fn strip_value_and_label() {
        let out = CompiledFilter::compile(&chain(vec![strip(), label("x-1")]))
            .unwrap()
            .apply(b"r", row());
        assert_eq!(out.len(), 5);
        assert!(out
            .iter()
            .all(|c| c.value.is_empty() && c.labels == ["x-1"]));
        // Values pass through untouched otherwise.
        let out = CompiledFilter::compile(&pass()).unwrap().apply(b"r", row());
        assert_eq!(out, row());
        for bad in ["", "Upper", "has space", "sixteen-chars-xx", "under_score"] {
            assert_eq!(err(&label(bad)).field, "apply_label_transformer", "{bad:?}");
        }
        assert!(CompiledFilter::compile(&label("fifteen-chars-x")).is_ok());
    }

    #[test]
    fn at_most_one_label_per_cell() {
        // Two labels in sequence are rejected, however deeply nested.
        for f in [
            chain(vec![label("a"), label("b")]),
            chain(vec![label("a"), pass(), chain(vec![pass(), label("b")])]),
            chain(vec![interleave(vec![label("a"), pass()]), label("b")]),
            chain(vec![label("a"), cond(Some(pass()), None, Some(label("b")))]),
            interleave(vec![pass(), chain(vec![label("a"), label("b")])]),
        ] {
            assert_eq!(err(&f).field, "chain");
        }
        // Labels on separate copies are fine, and so are predicate labels.
        assert_eq!(
            run(&chain(vec![
                family("b"),
                interleave(vec![label("a"), label("b")])
            ])),
            ["b:q1@5[a]", "b:q1@5[b]", "b:zz@4[a]", "b:zz@4[b]"]
        );
        assert_eq!(
            run(&chain(vec![
                cond(Some(label("p")), Some(qual(b"zz")), None),
                label("b")
            ])),
            ["b:zz@4[b]"]
        );
    }

    #[test]
    fn nested_combinations() {
        // Newest cell of every column in family "a", labelled, plus the values of older
        // versions stripped, capped at 3 cells.
        let f = chain(vec![
            family("a"),
            interleave(vec![
                chain(vec![col_limit(1), label("latest")]),
                chain(vec![row_offset(1), strip()]),
            ]),
            row_limit(3),
        ]);
        let out = CompiledFilter::compile(&f).unwrap().apply(b"r1", row());
        assert_eq!(show(&out), ["a:q1@3[latest]", "a:q1@1", "a:q2@2[latest]"]);
        assert_eq!(out[0].value, b"v13");
        assert!(out[1].value.is_empty());
        // A condition choosing between two interleaves.
        let f = cond(
            Some(chain(vec![family("b"), value(b"v15")])),
            Some(interleave(vec![
                qual(b"zz"),
                chain(vec![family("a"), col_limit(1)]),
            ])),
            Some(block()),
        );
        assert_eq!(run(&f), ["a:q1@3", "a:q2@2", "b:zz@4"]);
        let f = cond(
            Some(chain(vec![family("b"), value(b"nope")])),
            Some(pass()),
            Some(chain(vec![ts_range(4000, 0), strip()])),
        );
        assert_eq!(run(&f), ["b:q1@5", "b:zz@4"]);
        // Conditions nested in conditions.
        let inner = cond(Some(qual(b"q2")), Some(row_limit(1)), Some(block()));
        let f = cond(Some(family("a")), Some(inner), None);
        assert_eq!(run(&f), ["a:q1@3"]);
    }

    #[test]
    fn nesting_depth_is_limited() {
        let mut f = pass();
        for _ in 0..MAX_DEPTH {
            f = chain(vec![f, pass()]);
        }
        assert_eq!(run(&f), ALL);
        let e = err(&interleave(vec![f, block()]));
        assert!(e.to_string().contains("nested more than 20"), "{e}");
        let big = chain((0..6000).map(|_| pass()).collect());
        let e = CompiledFilter::compile(&big).map(|_| ()).unwrap_err();
        assert_eq!(e.field, "filter");
    }

    #[test]
    fn re2_translation() {
        let t = |p: &[u8]| translate_re2(p);
        assert_eq!(t(b"a\\Cb").unwrap(), "a(?s:.)b");
        assert_eq!(t(b"\xe9").unwrap(), "\\xE9");
        assert_eq!(t(b"\\Qa.b*\\E+").unwrap(), "a\\x2Eb\\x2A+");
        assert_eq!(t(b"[]a]").unwrap(), "[\\]a]");
        assert_eq!(t(b"[^]a]").unwrap(), "[^\\]a]");
        assert_eq!(t(b"[[a]").unwrap(), "[\\[a]");
        assert_eq!(t(b"[[:alpha:]_]").unwrap(), "[[:alpha:]_]");
        assert_eq!(t(b"[[:^digit:]]").unwrap(), "[[:^digit:]]");
        assert_eq!(t(b"[a&&b]").unwrap(), "[a\\&\\&b]");
        assert_eq!(t(b"[(]").unwrap(), "[(]");
        assert!(t(b"a)").is_err());
        assert!(t(b"(?x)a").is_err());
        assert!(t(b"\\").is_err());
        assert!(t(b"[\\C]").is_err());
        assert!(t(b"(?i)a(?-s:b)(?P<n>c)(?:d)").is_ok());
        // The translations compile and behave as RE2 does.
        let m = |p: &[u8], s: &[u8]| build_regex("value_regex_filter", p).unwrap().is_match(s);
        assert!(m(b"\\Qa.b\\E", b"a.b"));
        assert!(!m(b"\\Qa.b\\E", b"axb"));
        assert!(m(b"\\Qa.b", b"a.b"));
        assert!(m(b"[]]", b"]"));
        assert!(m(b"[[]", b"["));
        assert!(m(b"[&~]+", b"&~&"));
        assert!(m(b"[a&&b]", b"&"));
        assert!(m(b"[[:digit:]]+", b"123"));
        assert!(m(b"\\101", b"A"));
        assert!(m(b"(?i)abc", b"AbC"));
        assert!(m(b"a(?U)b+", b"abbb"));
        assert!(m(b"\\d+", b"42"));
        assert!(!m(b"\\w", b"\xe9"));
        assert!(m(b"[\\x00-\\xff]*", b"\x00\xff\n"));
    }

    #[test]
    fn error_messages_name_the_field() {
        let e = err(&qual(b"*"));
        assert!(
            e.to_string()
                .starts_with("invalid column_qualifier_regex_filter: "),
            "{e}"
        );
        let e = err(&chain(vec![label("a"), label("b")]));
        assert!(e.to_string().starts_with("invalid chain: "), "{e}");
    }
}
