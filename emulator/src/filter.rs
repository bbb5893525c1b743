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
        Filter::RowKeyRegexFilter(re) => Node::RowKeyRegex(build_regex("row_key_regex_filter", re)?),
        Filter::RowSampleFilter(p) => {
            // NaN fails both comparisons and is rejected too.
            if !(*p > 0.0 && *p < 1.0) {
                return invalid("row_sample_filter", format!("{p} is not strictly between 0 and 1"));
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
    fn eval(&self, key: &[u8], mut cells: Vec<ReadCell>, sink: &mut Vec<ReadCell>) -> Vec<ReadCell> {
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
                let matched = !predicate.eval(key, cells.clone(), &mut Vec::new()).is_empty();
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
                    b'C' if in_class => return Err("\\C is not allowed in a character class".into()),
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
                if pat.get(i) == Some(&b'?') && !matches!(pat.get(i + 1), Some(b'P' | b'<' | b':')) {
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
