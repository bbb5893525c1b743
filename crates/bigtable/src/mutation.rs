//! Builders for `Mutation`s and `ReadModifyWriteRule`s, plus the 64-bit counter codec.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::proto::v2::{
    mutation, read_modify_write_rule, Mutation, ReadModifyWriteRule, TimestampRange,
};

/// `set_cell` timestamp asking the server to stamp the cell. Such writes are not
/// idempotent, so they are never retried.
pub const SERVER_TIME: i64 = -1;

/// Current wall-clock time in microseconds, truncated to the millisecond
/// granularity Bigtable tables accept.
pub fn now_micros() -> i64 {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    let micros = i64::try_from(micros).unwrap_or(i64::MAX);
    micros - micros % 1000
}

fn wrap(m: mutation::Mutation) -> Mutation {
    Mutation { mutation: Some(m) }
}

/// Writes `value` at `timestamp_micros` (a multiple of 1000, or [`SERVER_TIME`]).
pub fn set_cell(
    family: impl Into<String>,
    qualifier: impl Into<Vec<u8>>,
    timestamp_micros: i64,
    value: impl Into<Vec<u8>>,
) -> Mutation {
    wrap(mutation::Mutation::SetCell(mutation::SetCell {
        family_name: family.into(),
        column_qualifier: qualifier.into(),
        timestamp_micros,
        value: value.into(),
    }))
}

/// Deletes every version of one column.
pub fn delete_from_column(family: impl Into<String>, qualifier: impl Into<Vec<u8>>) -> Mutation {
    wrap(mutation::Mutation::DeleteFromColumn(
        mutation::DeleteFromColumn {
            family_name: family.into(),
            column_qualifier: qualifier.into(),
            time_range: None,
        },
    ))
}

/// Deletes the versions of one column with `start_micros <= ts < end_micros`;
/// `end_micros == 0` means no upper bound.
pub fn delete_from_column_range(
    family: impl Into<String>,
    qualifier: impl Into<Vec<u8>>,
    start_micros: i64,
    end_micros: i64,
) -> Mutation {
    wrap(mutation::Mutation::DeleteFromColumn(
        mutation::DeleteFromColumn {
            family_name: family.into(),
            column_qualifier: qualifier.into(),
            time_range: Some(TimestampRange {
                start_timestamp_micros: start_micros,
                end_timestamp_micros: end_micros,
            }),
        },
    ))
}

pub fn delete_from_family(family: impl Into<String>) -> Mutation {
    wrap(mutation::Mutation::DeleteFromFamily(
        mutation::DeleteFromFamily {
            family_name: family.into(),
        },
    ))
}

pub fn delete_from_row() -> Mutation {
    wrap(mutation::Mutation::DeleteFromRow(
        mutation::DeleteFromRow {},
    ))
}

/// ReadModifyWrite rule appending bytes to the newest value of a column.
pub fn append_value(
    family: impl Into<String>,
    qualifier: impl Into<Vec<u8>>,
    value: impl Into<Vec<u8>>,
) -> ReadModifyWriteRule {
    ReadModifyWriteRule {
        family_name: family.into(),
        column_qualifier: qualifier.into(),
        rule: Some(read_modify_write_rule::Rule::AppendValue(value.into())),
    }
}

/// ReadModifyWrite rule adding to a column holding an 8-byte big-endian integer
/// (a missing column counts as zero).
pub fn increment_amount(
    family: impl Into<String>,
    qualifier: impl Into<Vec<u8>>,
    amount: i64,
) -> ReadModifyWriteRule {
    ReadModifyWriteRule {
        family_name: family.into(),
        column_qualifier: qualifier.into(),
        rule: Some(read_modify_write_rule::Rule::IncrementAmount(amount)),
    }
}

/// The cell encoding `increment_amount` works on.
pub fn encode_i64(v: i64) -> [u8; 8] {
    v.to_be_bytes()
}

/// Reads a counter cell written by `increment_amount` (or `encode_i64`).
pub fn decode_i64(value: &[u8]) -> Result<i64> {
    let bytes: [u8; 8] = value.try_into().map_err(|_| {
        Error::Protocol(format!(
            "counter cell holds {} bytes, expected 8",
            value.len()
        ))
    })?;
    Ok(i64::from_be_bytes(bytes))
}

/// Safe to send twice: anything but a server-stamped or aggregating write.
pub(crate) fn is_idempotent(m: &Mutation) -> bool {
    match &m.mutation {
        Some(mutation::Mutation::SetCell(s)) => s.timestamp_micros != SERVER_TIME,
        Some(mutation::Mutation::AddToCell(_)) | Some(mutation::Mutation::MergeToCell(_)) => false,
        _ => true,
    }
}

/// Rejects what the server would reject anyway, with a clearer message.
pub(crate) fn validate(mutations: &[Mutation]) -> Result<()> {
    if mutations.is_empty() {
        return Err(Error::InvalidArgument("no mutations given".into()));
    }
    for m in mutations {
        match &m.mutation {
            None => return Err(Error::InvalidArgument("empty mutation".into())),
            Some(mutation::Mutation::SetCell(s))
                if s.timestamp_micros != SERVER_TIME
                    && (s.timestamp_micros < 0 || s.timestamp_micros % 1000 != 0) =>
            {
                return Err(Error::InvalidArgument(format!(
                    "set_cell timestamp {} is not a non-negative multiple of 1000 micros (or -1)",
                    s.timestamp_micros
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_fill_fields() {
        let m = set_cell("f", b"q".to_vec(), 5000, "v");
        assert_eq!(
            m.mutation,
            Some(mutation::Mutation::SetCell(mutation::SetCell {
                family_name: "f".into(),
                column_qualifier: b"q".to_vec(),
                timestamp_micros: 5000,
                value: b"v".to_vec(),
            }))
        );
        let Some(mutation::Mutation::DeleteFromColumn(d)) =
            delete_from_column_range("f", "q", 1000, 3000).mutation
        else {
            panic!("wrong mutation kind");
        };
        assert_eq!(
            d.time_range,
            Some(TimestampRange {
                start_timestamp_micros: 1000,
                end_timestamp_micros: 3000
            })
        );
        let Some(mutation::Mutation::DeleteFromColumn(d)) = delete_from_column("f", "q").mutation
        else {
            panic!("wrong mutation kind");
        };
        assert_eq!(d.time_range, None);
        assert!(matches!(
            delete_from_family("f").mutation,
            Some(mutation::Mutation::DeleteFromFamily(ref d)) if d.family_name == "f"
        ));
        assert!(matches!(
            delete_from_row().mutation,
            Some(mutation::Mutation::DeleteFromRow(_))
        ));
        assert_eq!(
            increment_amount("f", "c", -3).rule,
            Some(read_modify_write_rule::Rule::IncrementAmount(-3))
        );
        assert_eq!(
            append_value("f", "c", "xy").rule,
            Some(read_modify_write_rule::Rule::AppendValue(b"xy".to_vec()))
        );
    }

    #[test]
    fn counter_codec() {
        for v in [0, 1, -1, i64::MAX, i64::MIN, 0x0102_0304_0506_0708] {
            assert_eq!(decode_i64(&encode_i64(v)).unwrap(), v);
        }
        assert_eq!(encode_i64(1), [0, 0, 0, 0, 0, 0, 0, 1]);
        assert!(decode_i64(b"short").is_err());
        assert!(decode_i64(&[0; 9]).is_err());
    }

    #[test]
    fn idempotency_and_validation() {
        assert!(is_idempotent(&set_cell("f", "q", 1000, "v")));
        assert!(!is_idempotent(&set_cell("f", "q", SERVER_TIME, "v")));
        assert!(is_idempotent(&delete_from_row()));
        assert!(validate(&[set_cell("f", "q", 1000, "v"), set_cell("f", "q", -1, "v")]).is_ok());
        assert!(validate(&[set_cell("f", "q", 1001, "v")]).is_err());
        assert!(validate(&[set_cell("f", "q", -5000, "v")]).is_err());
        assert!(validate(&[]).is_err());
        assert!(validate(&[Mutation { mutation: None }]).is_err());
        let now = now_micros();
        assert!(now > 1_600_000_000_000_000 && now % 1000 == 0);
    }
}
