//! The log line: one JSON object with `timestamp`, `level`, `target`, the
//! event's fields at the top level (`message` among them), the current
//! span as `span` (its name and fields), and that span's `trace_id` and
//! `span_id` whenever there is one, so a line can be found from a trace
//! and a trace from a line.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OtelData;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use super::throttle::{self, Throttle, Verdict};

/// The JSON line formatter (with [`JsonFields`] for span fields). WARN
/// and ERROR lines go through a [`Throttle`], except access lines (one per
/// request, always).
#[derive(Debug, Default)]
pub struct JsonLines {
    throttle: Throttle,
}

/// Targets never throttled: one access line per request, and every failed
/// authentication with its peer (lines that differ only in the peer's
/// address would otherwise count as repeats).
const UNTHROTTLED: [&str; 2] = ["trailhouse::access", "trailhouse::auth"];

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
        let meta = event.metadata();
        let mut fields = Map::new();
        event.record(&mut Fields(&mut fields));
        let mut repeated = 0;
        if *meta.level() <= tracing::Level::WARN && !UNTHROTTLED.contains(&meta.target()) {
            let text = format!(
                "{} {} {}",
                meta.level(),
                meta.target(),
                Value::Object(fields.clone())
            );
            match self
                .throttle
                .check(throttle::key(&text), std::time::Instant::now())
            {
                Verdict::Drop => return Ok(()),
                Verdict::Show { repeated: n } => repeated = n,
            }
        }
        // The event's fields first: the line's own keys win a clash.
        let mut line = fields;
        if repeated > 0 {
            line.insert("repeated".into(), repeated.into());
        }
        line.insert(
            "timestamp".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        if let Some(span) = ctx.lookup_current() {
            let ext = span.extensions();
            let mut fields = ext
                .get::<FormattedFields<JsonFields>>()
                .and_then(|f| serde_json::from_str::<Map<String, Value>>(f.as_str()).ok())
                .unwrap_or_default();
            fields.insert("name".into(), span.name().into());
            line.insert("span".into(), Value::Object(fields));
            if let Some(otel) = ext.get::<OtelData>() {
                if let (Some(t), Some(s)) = (otel.trace_id(), otel.span_id()) {
                    if t != opentelemetry::TraceId::INVALID {
                        line.insert("trace_id".into(), t.to_string().into());
                        line.insert("span_id".into(), s.to_string().into());
                    }
                }
            }
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Puts an event's fields into the line, numbers as numbers.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = self.0.lock() {
                v.extend_from_slice(b);
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(buf: &Buf) -> Vec<Value> {
        let text = buf.0.lock().map(|v| v.clone()).unwrap_or_default();
        String::from_utf8_lossy(&text)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
            .collect()
    }

    #[test]
    fn lines_carry_fields_span_and_trace_ids() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOff)
            .build();
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("t")))
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(JsonFields::new())
                    .event_format(JsonLines::default())
                    .with_writer(move || writer.clone()),
            );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(n = 3, level = "forged", "outside");
            let span = tracing::info_span!("request", route = "/v1/events");
            let _e = span.enter();
            tracing::warn!(latency_ms = 1.5, ok = true, "inside");
            // The same line again at once is left out; an access line never is.
            tracing::warn!(latency_ms = 2.5, ok = true, "inside");
            tracing::error!(target: "trailhouse::access", status = 500, "request");
            tracing::error!(target: "trailhouse::access", status = 500, "request");
        });
        let got = lines(&buf);
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(
            (got[2]["status"].clone(), got[3]["status"].clone()),
            (500.into(), 500.into())
        );
        assert_eq!(got[0]["message"], "outside");
        assert_eq!(got[0]["n"], 3);
        assert_eq!(
            got[0]["level"], "INFO",
            "an event field cannot forge the line's keys"
        );
        assert!(got[0].get("trace_id").is_none());
        assert_eq!(got[1]["level"], "WARN");
        assert_eq!(got[1]["latency_ms"], 1.5);
        assert_eq!(got[1]["ok"], true);
        assert_eq!(got[1]["span"]["name"], "request");
        assert_eq!(got[1]["span"]["route"], "/v1/events");
        let trace = got[1]["trace_id"].as_str().unwrap_or("");
        let span = got[1]["span_id"].as_str().unwrap_or("");
        assert_eq!((trace.len(), span.len()), (32, 16), "{:?}", got[1]);
    }
}
