//! The fields the worker stores in typed columns, read the same way on both sides: ingest refuses
//! with a 400 what these functions refuse, and the worker calls the same functions and keeps a
//! value it cannot use only in the raw JSON (so what ingest answered 202 to is always storable).
//!
//! - Times are RFC 3339 strings, or epoch seconds or milliseconds (as numbers, or strings of
//!   digits), between the years 1 and 9999.
//! - Numbers are JSON numbers; integers may be sent as whole floats.
//! - Identifiers (uid, session, conversation, memory, transcript ids) are non-empty, at most
//!   [`MAX_ID_BYTES`] and free of NUL; an `Idempotency-Key` is at most
//!   [`MAX_IDEMPOTENCY_KEY_BYTES`]. Both bounds keep a key well inside a btree index entry.
//! - No string (nor object key) holds NUL (`\u0000`): neither `jsonb` nor `text` can store it.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::Value;

/// The longest identifier accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// The longest `Idempotency-Key` accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

/// Epoch numbers at or above this magnitude are milliseconds; below it, seconds. 1e11 seconds
/// is the year 5138, 1e11 milliseconds is March 1973: no real time is ambiguous.
const EPOCH_MILLIS_FROM: f64 = 1e11;

/// Why a field's value cannot be used; the caller prefixes the field's path.
pub type Problem = &'static str;

const NOT_A_TIME: Problem = "expected an RFC 3339 time or epoch seconds or milliseconds";
const TIME_OUT_OF_RANGE: Problem = "time is outside the years 1 to 9999";

/// A time: `null` or absent is `None`.
pub fn timestamp(value: &Value) -> Result<Option<DateTime<Utc>>, Problem> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) => time_from_text(text).map(Some),
        Value::Number(number) => epoch(number.as_f64().ok_or(NOT_A_TIME)?).map(Some),
        _ => Err(NOT_A_TIME),
    }
}

fn time_from_text(text: &str) -> Result<DateTime<Utc>, Problem> {
    let text = text.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return in_range(time.with_timezone(&Utc));
    }
    let numeric = !text.is_empty()
        && text
            .bytes()
            .all(|byte| byte.is_ascii_digit() || byte == b'.' || byte == b'-');
    match text.parse::<f64>() {
        Ok(seconds_or_millis) if numeric => epoch(seconds_or_millis),
        _ => Err(NOT_A_TIME),
    }
}

fn epoch(seconds_or_millis: f64) -> Result<DateTime<Utc>, Problem> {
    let millis = if seconds_or_millis.abs() >= EPOCH_MILLIS_FROM {
        seconds_or_millis
    } else {
        seconds_or_millis * 1000.0
    };
    // Beyond ±1e15 ms (year 33658) nothing is in range; the bound also keeps the cast exact.
    if !millis.is_finite() || millis.abs() > 1e15 {
        return Err(TIME_OUT_OF_RANGE);
    }
    let micros = (millis * 1000.0).round() as i64;
    let time = DateTime::from_timestamp_micros(micros).ok_or(TIME_OUT_OF_RANGE)?;
    in_range(time)
}

fn in_range(time: DateTime<Utc>) -> Result<DateTime<Utc>, Problem> {
    let first = NaiveDate::from_ymd_opt(1, 1, 1)
        .expect("a date")
        .and_time(Default::default());
    let after_last = NaiveDate::from_ymd_opt(10_000, 1, 1)
        .expect("a date")
        .and_time(Default::default());
    let naive = time.naive_utc();
    if naive < first || naive >= after_last {
        return Err(TIME_OUT_OF_RANGE);
    }
    Ok(time)
}

/// A number: `null` or absent is `None`.
pub fn number(value: &Value) -> Result<Option<f64>, Problem> {
    match value {
        Value::Null => Ok(None),
        Value::Number(number) => number.as_f64().map(Some).ok_or("expected a number"),
        _ => Err("expected a number"),
    }
}

/// An integer, also when sent as a float (rounded): `null` or absent is `None`.
pub fn integer(value: &Value) -> Result<Option<i64>, Problem> {
    const OUT_OF_RANGE: Problem = "integer is out of range";
    match value {
        Value::Number(number) => match number.as_i64() {
            Some(integer) => Ok(Some(integer)),
            None if number.is_u64() => Err(OUT_OF_RANGE),
            None => {
                let rounded = number.as_f64().ok_or(OUT_OF_RANGE)?.round();
                // i64::MAX as f64 rounds up to 2^63, so the upper bound is exclusive.
                if rounded >= -(2f64.powi(63)) && rounded < 2f64.powi(63) {
                    Ok(Some(rounded as i64))
                } else {
                    Err(OUT_OF_RANGE)
                }
            }
        },
        Value::Null => Ok(None),
        _ => Err("expected an integer"),
    }
}

/// An identifier: non-empty, at most [`MAX_ID_BYTES`], no NUL.
pub fn identifier(id: &str) -> Result<(), Problem> {
    bounded(id, MAX_ID_BYTES, "must be at most 256 bytes")
}

/// An `Idempotency-Key`: non-empty, at most [`MAX_IDEMPOTENCY_KEY_BYTES`], no NUL.
pub fn idempotency_key(key: &str) -> Result<(), Problem> {
    bounded(key, MAX_IDEMPOTENCY_KEY_BYTES, "must be at most 255 bytes")
}

fn bounded(text: &str, most: usize, too_long: Problem) -> Result<(), Problem> {
    if text.trim().is_empty() {
        Err("must not be empty")
    } else if text.len() > most {
        Err(too_long)
    } else if text.contains('\0') {
        Err(NUL)
    } else {
        Ok(())
    }
}

/// The problem of a string holding NUL.
pub const NUL: Problem = "holds a NUL character (\\u0000), which cannot be stored";

/// True when a JSON text may hold a NUL: a `\u0000` escape not itself escaped. JSON cannot
/// carry a raw NUL inside a string, so this finds every NUL a parse of `json` would produce.
pub fn may_hold_nul(json: &[u8]) -> bool {
    memchr::memmem::find_iter(json, b"\\u0000").any(|at| {
        let backslashes = json[..at]
            .iter()
            .rev()
            .take_while(|&&byte| byte == b'\\')
            .count();
        backslashes % 2 == 0
    })
}

/// The path of the first string or key in `value` that holds NUL (`segments[0].text`; `.` for
/// the value itself).
pub fn nul_path(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => text.contains('\0').then(|| ".".to_owned()),
        Value::Array(items) => items.iter().enumerate().find_map(|(index, item)| {
            nul_path(item).map(|rest| join(&format!("[{index}]"), &rest))
        }),
        Value::Object(fields) => fields.iter().find_map(|(name, item)| {
            if name.contains('\0') {
                return Some(name.replace('\0', "\\u0000"));
            }
            nul_path(item).map(|rest| join(name, &rest))
        }),
        _ => None,
    }
}

fn join(head: &str, rest: &str) -> String {
    match rest {
        "." => head.to_owned(),
        _ if rest.starts_with('[') => format!("{head}{rest}"),
        _ => format!("{head}.{rest}"),
    }
}

/// Reads the typed columns of a payload, keeping the first field it could not read.
///
/// Both sides read a payload's columns with one function taking a reader: ingest refuses the
/// body when [`FieldReader::problem`] is set, the worker stores `None` in that column (the value
/// stays in the raw JSON). So the two can never disagree about which fields are checked.
#[derive(Debug, Default)]
pub struct FieldReader {
    problem: Option<(String, Problem)>,
}

impl FieldReader {
    /// Reads the value at `path` (already looked up as `value`) with `read`; `None` when it is
    /// absent, `null` or unreadable.
    pub fn read<T>(
        &mut self,
        path: &str,
        value: Option<&Value>,
        read: fn(&Value) -> Result<Option<T>, Problem>,
    ) -> Option<T> {
        match value.map(read)? {
            Ok(read) => read,
            Err(problem) => {
                self.problem
                    .get_or_insert_with(|| (path.to_owned(), problem));
                None
            }
        }
    }

    /// The first field that could not be read, by path, and why.
    pub fn problem(self) -> Option<(String, Problem)> {
        self.problem
    }
}

/// `#[serde(deserialize_with)]` for an optional time read with [`timestamp`].
pub fn deserialize_timestamp<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    let value = Value::deserialize(deserializer)?;
    timestamp(&value).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn time(value: Value) -> Result<Option<String>, Problem> {
        timestamp(&value).map(|time| time.map(|time| time.to_rfc3339()))
    }

    #[test]
    fn times_are_rfc3339_or_epoch_seconds_or_milliseconds() {
        let expected = Some("2024-04-05T19:34:38+00:00".to_owned());
        for sent in [
            json!("2024-04-05T19:34:38Z"),
            json!("2024-04-05T21:34:38+02:00"),
            json!(1712345678),
            json!(1712345678.0),
            json!(1712345678000u64),
            json!("1712345678"),
        ] {
            assert_eq!(time(sent.clone()), Ok(expected.clone()), "{sent}");
        }
        assert_eq!(time(json!(null)), Ok(None));
        assert_eq!(
            time(json!(1712345678.25)).unwrap().unwrap(),
            "2024-04-05T19:34:38.250+00:00"
        );
    }

    #[test]
    fn anything_else_is_not_a_time() {
        for sent in [
            json!("yesterday"),
            json!(""),
            json!("2024-13-01T00:00:00Z"),
            json!(true),
            json!({"seconds": 1}),
            json!([1]),
            json!(1e300),
            json!(-1e300),
            json!(u64::MAX),
            json!(1e15 * 1000.0),
            json!("10000-01-01T00:00:00Z"),
            json!(-62_135_596_801i64),
        ] {
            assert!(time(sent.clone()).is_err(), "{sent} was read as a time");
        }
        assert!(
            time(json!(-62_135_596_800i64)).is_ok(),
            "0001-01-01 is in range"
        );
        assert!(time(json!("9999-12-31T23:59:59Z")).is_ok());
    }

    #[test]
    fn numbers_must_be_numbers_and_integers_may_be_whole_floats() {
        assert_eq!(number(&json!(88.24)), Ok(Some(88.24)));
        assert_eq!(number(&json!(null)), Ok(None));
        assert!(number(&json!("88")).is_err());
        assert_eq!(integer(&json!(27000)), Ok(Some(27000)));
        assert_eq!(integer(&json!(27000.4)), Ok(Some(27000)));
        assert!(integer(&json!(u64::MAX)).is_err());
        assert!(integer(&json!(1e19)).is_err());
        assert!(integer(&json!("27000")).is_err());
        assert!(integer(&json!([])).is_err());
    }

    #[test]
    fn identifiers_are_bounded_and_free_of_nul() {
        assert!(identifier("c0a8f6d2").is_ok());
        assert!(identifier(&"a".repeat(256)).is_ok());
        assert!(identifier(&"a".repeat(257)).is_err());
        assert!(identifier(" ").is_err());
        assert!(identifier("a\0b").is_err());
        assert!(idempotency_key(&"k".repeat(255)).is_ok());
        assert!(idempotency_key(&"k".repeat(256)).is_err());
    }

    #[test]
    fn nul_escapes_are_found_and_named_but_escaped_backslashes_are_not_nul() {
        let body = br#"{"segments": [{"text": "a\u0000b"}]}"#;
        assert!(may_hold_nul(body));
        let value: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(nul_path(&value).as_deref(), Some("segments[0].text"));
        let literal = br#"{"text": "a\\u0000b"}"#;
        assert!(!may_hold_nul(literal));
        assert!(may_hold_nul(br#"{"text": "a\\\u0000b"}"#));
        let key: Value = serde_json::from_str(r#"{"a": {"k\u0000": 1}}"#).unwrap();
        assert_eq!(nul_path(&key).as_deref(), Some("a.k\\u0000"));
        assert_eq!(nul_path(&json!({"a": ["x"]})), None);
    }

    #[test]
    fn a_field_reader_keeps_the_first_problem_and_reads_the_rest() {
        let object = json!({"a": "x", "b": 2, "c": "y"});
        let mut reader = FieldReader::default();
        assert_eq!(reader.read("a", object.get("a"), number), None);
        assert_eq!(reader.read("b", object.get("b"), number), Some(2.0));
        assert_eq!(reader.read("c", object.get("c"), number), None);
        assert_eq!(reader.read("d", object.get("d"), number), None);
        assert_eq!(
            reader.problem(),
            Some(("a".to_owned(), "expected a number"))
        );
    }
}
