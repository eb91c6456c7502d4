//! The daemon's two log formats (`daemon.log_format`).
//!
//! Every credential (and watch) task runs inside a span carrying
//! `credential` and `kind` (see [`task_span`]), so its log lines name it
//! without each call site repeating the name.
//!
//! - **text**, for people: tracing's usual line with the span in front
//!   (`task{credential=web kind=certificate}:`), and every `sha256:`
//!   fingerprint cut to its first 16 hex digits ([`SHORT_HEX`]), in fields
//!   and messages alike: enough to tell generations apart and to grep for,
//!   without three 64-digit strings per line.
//! - **json**, for machines: one object per line, `timestamp`, `level`,
//!   the span's fields, the event's fields (`message` among them) and
//!   `target`, all at the top level, so `credential` is in every line of a
//!   task (operators filter on it) and fingerprints stay whole (as in
//!   `/status`).

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Hex digits of a fingerprint kept in text logs (64 bits).
pub const SHORT_HEX: usize = 16;

const PREFIX: &str = "sha256:";
const FULL_HEX: usize = 64;

/// The span a credential or watch task runs in, for its whole life.
///
/// At ERROR level so that no filter short of `off` drops it: a disabled
/// span would take `credential` off every line of its task.
pub fn task_span(credential: &str, kind: &str) -> tracing::Span {
    tracing::error_span!("task", credential = %credential, kind = %kind)
}

/// `text` with every `sha256:` + 64 hex digits cut to [`SHORT_HEX`] digits.
pub fn shorten_fingerprints(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(PREFIX) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(PREFIX) {
        let start = i + PREFIX.len();
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let hex = rest
            .bytes()
            .take_while(u8::is_ascii_hexdigit)
            .take(FULL_HEX + 1)
            .count();
        if hex == FULL_HEX {
            out.push_str(&rest[..SHORT_HEX]);
            rest = &rest[FULL_HEX..];
        }
    }
    out.push_str(rest);
    out.into()
}

/// Field formatting of the text format: tracing's default, fingerprints
/// shortened. Used for event and span fields alike.
#[derive(Debug, Default)]
pub struct TextFields;

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut buf = String::new();
        DefaultFields::new().format_fields(Writer::new(&mut buf), fields)?;
        writer.write_str(&shorten_fingerprints(&buf))
    }
}

/// The JSON format: one flat object per line (see the module docs). Span
/// fields must be recorded with [`JsonFields`].
#[derive(Debug, Default)]
pub struct JsonLines;

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = Fields::default();
        fields.push("timestamp", timestamp.into());
        fields.push("level", event.metadata().level().as_str().into());
        // Outermost span first: inner spans and the event's own fields win.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                let Some(f) = ext.get::<FormattedFields<JsonFields>>() else {
                    continue;
                };
                if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&f.fields) {
                    for (k, v) in map {
                        fields.push(&k, v);
                    }
                }
            }
        }
        event.record(&mut fields);
        fields.push("target", event.metadata().target().into());
        let mut line = String::from("{");
        for (i, (k, v)) in fields.0.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            // Strings and JSON values always serialize.
            let _ = write!(line, "{}:{}", serde_json::Value::from(k.as_str()), v);
        }
        line.push('}');
        writeln!(writer, "{line}")
    }
}

/// Fields in first-seen order; a later value of the same name replaces
/// the earlier one in place.
#[derive(Default)]
struct Fields(Vec<(String, serde_json::Value)>);

impl Fields {
    fn push(&mut self, name: &str, value: serde_json::Value) {
        let name = name.strip_prefix("r#").unwrap_or(name);
        match self.0.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = value,
            None => self.0.push((name.to_string(), value)),
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field.name(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field.name(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field.name(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field.name(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field.name(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field.name(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    const A: &str = "sha256:c2a9afef8eb82657d2fdf1db41554fad08b1c9cc4d90f5d01a218a4b57f7047c";
    const B: &str = "sha256:83bd39b4cd0172d9e41a201a9e85e23ef6b3a66a7bd33c26df8401b6fdc3baf5";

    #[test]
    fn only_whole_fingerprints_are_shortened() {
        assert_eq!(
            shorten_fingerprints(&format!("app still serves {A}, not {B}")),
            "app still serves sha256:c2a9afef8eb82657, not sha256:83bd39b4cd0172d9"
        );
        assert_eq!(
            shorten_fingerprints(&format!("\"{A}\"")),
            "\"sha256:c2a9afef8eb82657\""
        );
        // Not a fingerprint: too short, too long, or no hex at all.
        for s in ["sha256:abc", "sha256:", "x sha256: y", &format!("{A}0")] {
            assert_eq!(shorten_fingerprints(s), s);
        }
    }

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buf {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn log_in_a_task() {
        let span = task_span("web", "certificate");
        let _in = span.enter();
        tracing::warn!(
            generation = 3u64,
            fingerprint = A,
            event = "handoff_failed",
            "app still serves {B}"
        );
    }

    #[test]
    fn text_lines_name_the_task_and_shorten_fingerprints() {
        let buf = Buf::default();
        let w = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || w.clone())
            .fmt_fields(TextFields)
            .finish();
        tracing::subscriber::with_default(subscriber, log_in_a_task);
        let text = buf.text();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains("task{credential=web kind=certificate}:"),
            "{text}"
        );
        assert!(
            text.contains("app still serves sha256:83bd39b4cd0172d9 generation=3 fingerprint=\"sha256:c2a9afef8eb82657\" event=\"handoff_failed\""),
            "{text}"
        );
        assert!(
            !text.contains(&A[20..]) && !text.contains(&B[20..]),
            "{text}"
        );
    }

    #[test]
    fn json_lines_are_flat_with_the_task_and_whole_fingerprints() {
        let buf = Buf::default();
        let w = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            log_in_a_task();
            tracing::info!(credential = "other", "outside any task");
        });
        let text = buf.text();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let v = &lines[0];
        assert_eq!(v["credential"], "web", "{v}");
        assert_eq!(v["kind"], "certificate", "{v}");
        assert_eq!(v["level"], "WARN", "{v}");
        assert_eq!(v["generation"], 3, "{v}");
        assert_eq!(v["fingerprint"], A, "{v}");
        assert_eq!(v["message"], format!("app still serves {B}"), "{v}");
        assert_eq!(v["event"], "handoff_failed", "{v}");
        assert_eq!(v["target"], module_path!(), "{v}");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'), "{v}");
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert!(keys.iter().all(|k| !k.starts_with("span")), "{keys:?}");
        assert_eq!(lines[1]["credential"], "other");
        assert!(lines[1].get("kind").is_none(), "{}", lines[1]);
    }
}
