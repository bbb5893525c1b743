//! Column-family garbage collection rules (`google.bigtable.admin.v2.GcRule`).
//!
//! A rule decides, for each version of a column, whether it is garbage:
//! * `max_num_versions: N` — every version but the N newest of its column;
//! * `max_age: d` — versions with a timestamp older than `now - d`;
//! * `union` — garbage if any sub-rule says so;
//! * `intersection` — garbage only if every sub-rule says so.
//!
//! An absent rule, an empty union and an empty intersection keep everything. Rules are
//! checked with [`validate`] when a family is created or modified; a rule that would fail
//! validation never deletes anything in [`collect`], so bad input cannot destroy data.

use std::collections::HashMap;

use googleapis_tonic_google_bigtable_admin_v2::google::bigtable::admin::v2::{
    gc_rule::Rule, GcRule,
};

use crate::row::{StoredCell, StoredRow};

/// Why a GC rule was rejected; the admin service answers INVALID_ARGUMENT with this message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GcRuleError {
    #[error("invalid gc_rule: max_num_versions must be at least 1, got {0}")]
    MaxVersions(i32),
    #[error("invalid gc_rule: max_age must be at least 1ms, got {seconds}s {nanos}ns")]
    MaxAge { seconds: i64, nanos: i32 },
}

/// Checks `rule` and all its nested rules.
pub fn validate(rule: &GcRule) -> Result<(), GcRuleError> {
    match &rule.rule {
        None => Ok(()),
        Some(Rule::MaxNumVersions(n)) if *n < 1 => Err(GcRuleError::MaxVersions(*n)),
        Some(Rule::MaxNumVersions(_)) => Ok(()),
        Some(Rule::MaxAge(d)) => {
            let well_formed = (0..1_000_000_000).contains(&d.nanos) && d.seconds >= 0;
            if well_formed && (d.seconds > 0 || d.nanos >= 1_000_000) {
                Ok(())
            } else {
                Err(GcRuleError::MaxAge {
                    seconds: d.seconds,
                    nanos: d.nanos,
                })
            }
        }
        Some(Rule::Intersection(i)) => i.rules.iter().try_for_each(validate),
        Some(Rule::Union(u)) => u.rules.iter().try_for_each(validate),
    }
}

/// Removes the garbage from one column's versions (`cells`, newest first).
pub fn collect(rule: &GcRule, cells: &mut Vec<StoredCell>, now_micros: i64) {
    if rule.rule.is_none() || cells.is_empty() {
        return;
    }
    let mut index = 0;
    cells.retain(|c| {
        let garbage = is_garbage(rule, index, c.ts, now_micros);
        index += 1;
        !garbage
    });
}

/// Applies each family's rule to every column of `row` (families without a rule keep
/// everything), then drops emptied columns and families.
pub fn collect_row(row: &mut StoredRow, rules: &HashMap<String, GcRule>, now_micros: i64) {
    let mut touched = false;
    for (family, columns) in &mut row.families {
        let Some(rule) = rules.get(family) else {
            continue;
        };
        for cells in columns.values_mut() {
            let before = cells.len();
            collect(rule, cells, now_micros);
            touched |= cells.len() != before;
        }
    }
    if touched {
        row.prune();
    }
}

/// Whether the version at `index` (0 = newest) of a column, written at `ts`, is garbage.
fn is_garbage(rule: &GcRule, index: usize, ts: i64, now_micros: i64) -> bool {
    match &rule.rule {
        None => false,
        Some(Rule::MaxNumVersions(n)) => match usize::try_from(*n) {
            Ok(n) if n >= 1 => index >= n,
            _ => false,
        },
        Some(Rule::MaxAge(d)) => match max_age_micros(d) {
            Some(age) => ts < now_micros.saturating_sub(age),
            None => false,
        },
        Some(Rule::Intersection(i)) => {
            !i.rules.is_empty() && i.rules.iter().all(|r| is_garbage(r, index, ts, now_micros))
        }
        Some(Rule::Union(u)) => u.rules.iter().any(|r| is_garbage(r, index, ts, now_micros)),
    }
}

/// The age in microseconds (nanoseconds truncated), or `None` for a rule that fails
/// validation.
fn max_age_micros(d: &prost_types::Duration) -> Option<i64> {
    let valid = d.seconds >= 0
        && (0..1_000_000_000).contains(&d.nanos)
        && (d.seconds > 0 || d.nanos >= 1_000_000);
    valid.then(|| {
        d.seconds
            .saturating_mul(1_000_000)
            .saturating_add(i64::from(d.nanos / 1000))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use googleapis_tonic_google_bigtable_admin_v2::google::bigtable::admin::v2::gc_rule::{
        Intersection, Union,
    };

    const SEC: i64 = 1_000_000;
    const NOW: i64 = 1_000 * SEC;

    fn versions(n: i64) -> GcRule {
        GcRule {
            rule: Some(Rule::MaxNumVersions(n as i32)),
        }
    }
    fn age(seconds: i64, nanos: i32) -> GcRule {
        GcRule {
            rule: Some(Rule::MaxAge(prost_types::Duration { seconds, nanos })),
        }
    }
    fn union(rules: Vec<GcRule>) -> GcRule {
        GcRule {
            rule: Some(Rule::Union(Union { rules })),
        }
    }
    fn intersection(rules: Vec<GcRule>) -> GcRule {
        GcRule {
            rule: Some(Rule::Intersection(Intersection { rules })),
        }
    }

    /// One column with versions `ages` seconds old, newest first.
    fn column(ages: &[i64]) -> Vec<StoredCell> {
        ages.iter()
            .map(|a| StoredCell {
                ts: NOW - a * SEC,
                value: a.to_string().into_bytes(),
            })
            .collect()
    }

    /// Ages (seconds) of the versions `rule` keeps out of versions of the given ages.
    fn kept(rule: &GcRule, ages: &[i64]) -> Vec<i64> {
        let mut cells = column(ages);
        collect(rule, &mut cells, NOW);
        cells.iter().map(|c| (NOW - c.ts) / SEC).collect()
    }

    const AGES: [i64; 5] = [1, 5, 10, 50, 100];

    #[test]
    fn absent_rule_keeps_everything() {
        assert_eq!(kept(&GcRule { rule: None }, &AGES), AGES);
        assert_eq!(kept(&union(vec![]), &AGES), AGES);
        assert_eq!(kept(&intersection(vec![]), &AGES), AGES);
        assert!(kept(&versions(1), &[]).is_empty());
    }

    #[test]
    fn max_num_versions_keeps_the_newest() {
        assert_eq!(kept(&versions(1), &AGES), [1]);
        assert_eq!(kept(&versions(3), &AGES), [1, 5, 10]);
        assert_eq!(kept(&versions(5), &AGES), AGES);
        assert_eq!(kept(&versions(50), &AGES), AGES);
    }

    #[test]
    fn max_age_drops_older_cells() {
        assert_eq!(kept(&age(10, 0), &AGES), [1, 5, 10]); // exactly at the cutoff is kept
        assert_eq!(kept(&age(9, 999_999_999), &AGES), [1, 5]);
        assert_eq!(kept(&age(1000, 0), &AGES), AGES);
        assert_eq!(kept(&age(0, 1_000_000), &AGES), Vec::<i64>::new());
        // Sub-microsecond parts are truncated.
        let mut cells = vec![StoredCell {
            ts: NOW - 1001,
            value: vec![],
        }];
        collect(&age(0, 1_000_999), &mut cells, NOW);
        assert!(cells.is_empty());
        let mut cells = vec![StoredCell {
            ts: NOW - 1000,
            value: vec![],
        }];
        collect(&age(0, 1_000_999), &mut cells, NOW);
        assert_eq!(cells.len(), 1);
        // Huge ages saturate instead of overflowing.
        assert_eq!(kept(&age(i64::MAX, 0), &AGES), AGES);
    }

    #[test]
    fn union_is_garbage_if_any_rule_says_so() {
        assert_eq!(kept(&union(vec![versions(3), age(7, 0)]), &AGES), [1, 5]);
        assert_eq!(kept(&union(vec![versions(1), age(70, 0)]), &AGES), [1]);
        assert_eq!(kept(&union(vec![versions(4)]), &AGES), [1, 5, 10, 50]);
    }

    #[test]
    fn intersection_is_garbage_only_if_all_rules_say_so() {
        // Keep at least 2 versions, and anything newer than 7s.
        assert_eq!(
            kept(&intersection(vec![versions(2), age(7, 0)]), &AGES),
            [1, 5]
        );
        assert_eq!(
            kept(&intersection(vec![versions(1), age(7, 0)]), &AGES),
            [1, 5]
        );
        assert_eq!(
            kept(&intersection(vec![versions(4), age(7, 0)]), &AGES),
            [1, 5, 10, 50]
        );
        assert_eq!(kept(&intersection(vec![versions(2)]), &AGES), [1, 5]);
    }

    #[test]
    fn nested_rules() {
        // (versions > 4) OR (older than 30s AND versions > 2)
        let rule = union(vec![
            versions(4),
            intersection(vec![age(30, 0), versions(2)]),
        ]);
        assert_eq!(kept(&rule, &AGES), [1, 5, 10]);
        assert_eq!(kept(&rule, &[1, 40, 45, 50]), [1, 40]);
        assert_eq!(kept(&rule, &[1, 2, 3, 4, 5, 6]), [1, 2, 3, 4]);
        // (versions > 1 OR older than 7s) AND older than 20s
        let rule = intersection(vec![union(vec![versions(1), age(7, 0)]), age(20, 0)]);
        assert_eq!(kept(&rule, &AGES), [1, 5, 10]);
        // An empty nested rule says "not garbage".
        let rule = intersection(vec![versions(1), union(vec![])]);
        assert_eq!(kept(&rule, &AGES), AGES);
        let rule = union(vec![versions(2), intersection(vec![])]);
        assert_eq!(kept(&rule, &AGES), [1, 5]);
    }

    #[test]
    fn validate_rules() {
        for ok in [
            GcRule { rule: None },
            versions(1),
            versions(i32::MAX.into()),
            age(0, 1_000_000),
            age(86_400, 0),
            union(vec![]),
            intersection(vec![versions(1), union(vec![age(1, 5)])]),
        ] {
            assert_eq!(validate(&ok), Ok(()), "{ok:?}");
        }
        assert_eq!(validate(&versions(0)), Err(GcRuleError::MaxVersions(0)));
        assert_eq!(validate(&versions(-3)), Err(GcRuleError::MaxVersions(-3)));
        for (s, n) in [(0, 0), (0, 999_999), (-1, 0), (0, -1), (1, 1_000_000_000)] {
            assert_eq!(
                validate(&age(s, n)),
                Err(GcRuleError::MaxAge {
                    seconds: s,
                    nanos: n
                })
            );
        }
        let nested = union(vec![
            versions(2),
            intersection(vec![age(1, 0), versions(0)]),
        ]);
        assert_eq!(validate(&nested), Err(GcRuleError::MaxVersions(0)));
        assert!(validate(&versions(0))
            .unwrap_err()
            .to_string()
            .contains("max_num_versions"));
    }

    #[test]
    fn invalid_rules_never_delete() {
        assert_eq!(kept(&versions(0), &AGES), AGES);
        assert_eq!(kept(&versions(-1), &AGES), AGES);
        assert_eq!(kept(&age(0, 0), &AGES), AGES);
        assert_eq!(kept(&age(-5, 0), &AGES), AGES);
        assert_eq!(kept(&union(vec![versions(0), versions(2)]), &AGES), [1, 5]);
    }

    #[test]
    fn collect_row_applies_each_family_rule_and_prunes() {
        let mut row = StoredRow::default();
        for (fam, q, a) in [
            ("keep", "q", 100),
            ("keep", "q", 1),
            ("v1", "x", 1),
            ("v1", "x", 2),
            ("v1", "y", 3),
            ("young", "old", 50),
            ("young", "new", 1),
            ("young", "new", 60),
            ("gone", "q", 99),
        ] {
            row.set_cell(fam, q.as_bytes(), NOW - a * SEC, vec![]);
        }
        let rules: HashMap<String, GcRule> = [
            ("v1".to_string(), versions(1)),
            ("young".to_string(), age(10, 0)),
            ("gone".to_string(), age(10, 0)),
        ]
        .into();
        collect_row(&mut row, &rules, NOW);
        let left: Vec<_> = row
            .read_cells()
            .iter()
            .map(|c| {
                format!(
                    "{}:{}@{}",
                    c.family,
                    String::from_utf8_lossy(&c.qualifier),
                    (NOW - c.ts) / SEC
                )
            })
            .collect();
        assert_eq!(
            left,
            ["keep:q@1", "keep:q@100", "v1:x@1", "v1:y@3", "young:new@1"]
        );
        // Emptied columns and families are gone from the structure.
        assert!(!row.families.contains_key("gone"));
        assert!(!row.families["young"].contains_key(b"old".as_slice()));
        // A row GC empties completely is empty.
        let rules: HashMap<String, GcRule> = row
            .families
            .keys()
            .map(|f| (f.clone(), age(0, 1_000_000)))
            .collect();
        collect_row(&mut row, &rules, NOW);
        assert!(row.families.is_empty());
        assert!(row.is_empty());
    }
}
