//! The fields of a span, as the JSON object the JSON log lines carry, written in one pass.
//!
//! `tracing_subscriber`'s `JsonFields` gathers a span's fields into a map of `serde_json::Value`s
//! and then serializes the map, for every span made, whether or not anything is logged in it.
//! Ingest makes one span per request, and that was about 4 % of a request's CPU (README,
//! Performance). [`JsonSpanFields`] writes the same object straight through serde_json's
//! serializer. The JSON event formatter reads it back as it read `JsonFields`' object.

use std::fmt;

use serde::ser::{SerializeMap, Serializer as _};
use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// Formats span fields as one JSON object. Fields keep the order they were recorded in; one
/// recorded again later (`Span::record`) is appended, and a reader of the object keeps the last
/// value of a name, as it did with `JsonFields`' map.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonSpanFields;

impl<'writer> FormatFields<'writer> for JsonSpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        writer.write_str(&object(|entries| fields.record(entries))?)
    }

    fn add_fields(
        &self,
        current: &'writer mut tracing_subscriber::fmt::FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let added = object(|entries| fields.record(entries))?;
        append(&mut current.fields, &added);
        Ok(())
    }
}

/// The JSON object of the entries `record` writes.
fn object(record: impl FnOnce(&mut Entries<'_>)) -> Result<String, fmt::Error> {
    let mut out = Vec::with_capacity(128);
    let mut serializer = serde_json::Serializer::new(&mut out);
    let mut entries = Entries {
        map: serializer.serialize_map(None).map_err(|_| fmt::Error)?,
        failed: false,
    };
    record(&mut entries);
    if entries.failed {
        return Err(fmt::Error);
    }
    entries.map.end().map_err(|_| fmt::Error)?;
    String::from_utf8(out).map_err(|_| fmt::Error)
}

/// Appends the entries of the object `added` to the object `current` (empty or `{...}`).
fn append(current: &mut String, added: &str) {
    let added_entries = &added[1..added.len() - 1];
    if added_entries.is_empty() {
        return;
    }
    if current.len() <= 2 {
        *current = added.to_owned();
        return;
    }
    current.pop();
    current.push(',');
    current.push_str(added_entries);
    current.push('}');
}

/// A visitor that writes each field as an entry of the map being serialized.
struct Entries<'a> {
    map: serde_json::ser::Compound<'a, &'a mut Vec<u8>, serde_json::ser::CompactFormatter>,
    failed: bool,
}

impl Entries<'_> {
    fn entry(&mut self, name: &str, value: &(impl serde::Serialize + ?Sized)) {
        if self.map.serialize_entry(name, value).is_err() {
            self.failed = true;
        }
    }
}

/// A `Debug` value serialized as the string it formats to, without an intermediate `String`.
struct AsDebugString<'a>(&'a dyn fmt::Debug);

impl serde::Serialize for AsDebugString<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{:?}", self.0))
    }
}

impl Visit for Entries<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // Not a finite number: `null`, as `JsonFields` wrote it.
        self.entry(field.name(), &value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field.name(), &value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field.name(), &value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field.name(), &value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field.name(), value);
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.entry(field.name(), value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        self.entry(
            name.strip_prefix("r#").unwrap_or(name),
            &AsDebugString(value),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A log destination the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The JSON log lines written while `log` runs, under the subscriber `init_tracing` makes.
    fn lines_of(log: impl FnOnce()) -> Vec<serde_json::Value> {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .fmt_fields(JsonSpanFields)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str(line).expect("each line is JSON"))
            .collect()
    }

    #[test]
    fn a_spans_fields_reach_the_log_line_as_json_values() {
        let lines = lines_of(|| {
            let method = "POST";
            let span = tracing::info_span!(
                "request",
                request_id = "a \"quoted\"\nid\u{1}",
                method = %method,
                attempt = 3_u64,
                late = -2_i64,
                ratio = f64::NAN,
                fresh = true,
                r#type = ?"omi",
                route = tracing::field::Empty,
            );
            span.record("route", "/v1/omi/transcript");
            span.record("attempt", 4_u64);
            span.in_scope(|| tracing::info!("inside"));
        });
        assert_eq!(lines.len(), 1);
        let span = &lines[0]["span"];
        assert_eq!(span["name"], "request");
        assert_eq!(span["request_id"], "a \"quoted\"\nid\u{1}");
        assert_eq!(span["method"], "POST");
        assert_eq!(span["attempt"], 4, "the value recorded last");
        assert_eq!(span["late"], -2);
        assert_eq!(span["ratio"], serde_json::Value::Null);
        assert_eq!(span["fresh"], true);
        assert_eq!(span["type"], "\"omi\"");
        assert_eq!(span["route"], "/v1/omi/transcript");
        assert_eq!(lines[0]["message"], "inside");
    }

    #[test]
    fn fields_recorded_later_are_appended_to_the_object() {
        let mut fields = String::new();
        append(&mut fields, "{}");
        assert_eq!(fields, "");
        append(&mut fields, r#"{"a":1}"#);
        assert_eq!(fields, r#"{"a":1}"#);
        append(&mut fields, "{}");
        append(&mut fields, r#"{"b":"x","a":2}"#);
        assert_eq!(fields, r#"{"a":1,"b":"x","a":2}"#);
    }
}
