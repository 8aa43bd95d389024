//! The metric families of a service, declared once: name, type, unit, help
//! and label names. A service describes them at start-up, so every family
//! has its HELP line, and every counter and gauge without labels exists at
//! 0 before its first event (an alert on `rate(x[5m])` needs the series).
//! Histogram buckets are chosen by the name's unit suffix, so every process
//! that shares the recorder (tests start several services in one) gets the
//! same buckets.

mod dynamic;

pub use dynamic::DynamicGauge;

use metrics::Unit;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// What kind of series a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    /// Label names; bounded values only (never an org id).
    pub labels: &'static [&'static str],
    /// Label values (one per label name) whose series exist from the
    /// start, at 0: for counters an alert reads with `rate` or `increase`.
    pub preset: &'static [&'static [&'static str]],
}

impl Family {
    pub const fn counter(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            kind: Kind::Counter,
            help,
            labels: &[],
            preset: &[],
        }
    }

    pub const fn gauge(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            kind: Kind::Gauge,
            help,
            labels: &[],
            preset: &[],
        }
    }

    pub const fn histogram(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            kind: Kind::Histogram,
            help,
            labels: &[],
            preset: &[],
        }
    }

    pub const fn labelled(self, labels: &'static [&'static str]) -> Family {
        Family { labels, ..self }
    }

    /// Series (label values in the order of the names) created at 0.
    pub const fn preset(self, preset: &'static [&'static [&'static str]]) -> Family {
        Family { preset, ..self }
    }

    /// The unit the name's suffix states (Prometheus naming: base units).
    pub fn unit(&self) -> Option<Unit> {
        let stem = self.name.strip_suffix("_total").unwrap_or(self.name);
        if stem.ends_with("_seconds") {
            Some(Unit::Seconds)
        } else if stem.ends_with("_bytes") {
            Some(Unit::Bytes)
        } else {
            None
        }
    }
}

/// Latency buckets, seconds: 1 ms (a cached page) to 60 s (an insert that
/// waits for a slow server).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Size buckets, bytes: 1 KiB to 64 MiB (a consumer batch is up to 32 MiB).
pub const BYTES_BUCKETS: &[f64] = &[
    1024.0, 8192.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 33554432.0, 67108864.0,
];
/// Count buckets (rows, events): 1 to 100,000.
pub const COUNT_BUCKETS: &[f64] = &[1.0, 10.0, 100.0, 1000.0, 5000.0, 10000.0, 50000.0, 100000.0];

/// The request metrics (RED) of one HTTP service: a counter and a latency
/// histogram by `route` (the matched route template, never the raw path),
/// `method` and `status` class (`2xx` … `5xx`). Each service has its own
/// names so that each gets buckets that fit its routes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HttpMetrics {
    pub service: &'static str,
    pub requests: &'static str,
    pub duration: &'static str,
    pub buckets: &'static [f64],
}

/// The labels of the request metrics.
pub const HTTP_LABELS: &[&str] = &["route", "method", "status"];

impl HttpMetrics {
    /// The two families, for the service's catalogue.
    pub const fn families(&self) -> [Family; 2] {
        [
            Family::counter(self.requests, "HTTP requests answered, by route, method and status class.")
                .labelled(HTTP_LABELS),
            Family::histogram(
                self.duration,
                "Time from a request's arrival to its response head, by route, method and status class.",
            )
            .labelled(HTTP_LABELS),
        ]
    }
}

/// The status classes whose request series exist from the start.
pub const PRESET_STATUSES: [&str; 3] = ["2xx", "4xx", "5xx"];

impl HttpMetrics {
    /// Creates the request counters of `method` on each route at 0 for
    /// each of [`PRESET_STATUSES`], so an error-ratio alert sees the first
    /// 5xx as an increase.
    pub fn preset(&self, method: &'static str, routes: impl IntoIterator<Item = &'static str>) {
        let _ = crate::telemetry::metrics_handle();
        for route in routes {
            for status in PRESET_STATUSES {
                metrics::counter!(self.requests, "route" => route, "method" => method, "status" => status)
                    .increment(0);
            }
        }
    }
}

/// Ingest answers after Kafka acknowledged every event: milliseconds when
/// healthy, up to the acknowledgement timeout (10 s) when not.
pub const INGEST_HTTP: HttpMetrics = HttpMetrics {
    service: "trailhouse-ingest",
    requests: "trailhouse_ingest_http_requests_total",
    duration: "trailhouse_ingest_http_request_duration_seconds",
    buckets: &[
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ],
};

/// Query pages take tens of milliseconds; exports stream for up to the
/// 30 s request timeout.
pub const QUERY_HTTP: HttpMetrics = HttpMetrics {
    service: "trailhouse-query-api",
    requests: "trailhouse_query_http_requests_total",
    duration: "trailhouse_query_http_request_duration_seconds",
    buckets: &[
        0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ],
};

/// A recorder builder whose histograms get buckets by unit suffix (the
/// request histograms their own); names with no unit suffix (rows, events)
/// get count buckets. No histogram renders as a summary.
pub fn builder() -> Result<PrometheusBuilder, BuildError> {
    let mut b = PrometheusBuilder::new();
    for http in [INGEST_HTTP, QUERY_HTTP] {
        b = b.set_buckets_for_metric(Matcher::Full(http.duration.into()), http.buckets)?;
    }
    b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_bytes".into()), BYTES_BUCKETS)?
        .set_buckets(COUNT_BUCKETS)
}

/// The process-wide exporter: the recorder's handle and the process
/// metrics (`process_cpu_seconds_total`, resident memory, open files,
/// threads, start time), collected at each scrape.
#[derive(Clone)]
pub struct Exporter {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
    dynamic: dynamic::Registry,
}

impl Exporter {
    /// Installs the recorder built by [`builder`]; fails if a recorder is
    /// installed already.
    pub fn install() -> Result<Exporter, BuildError> {
        let handle = builder()?.install_recorder()?;
        let process = metrics_process::Collector::default();
        process.describe();
        Ok(Exporter {
            handle,
            process,
            dynamic: dynamic::Registry::default(),
        })
    }

    /// Renders `gauge` with the other families for as long as it lives.
    pub fn register(&self, gauge: &std::sync::Arc<DynamicGauge>) {
        self.dynamic.register(gauge);
    }

    /// The text exposition format, with the process metrics read now.
    pub fn render(&self) -> String {
        self.process.collect();
        let mut text = self.handle.render();
        text.push_str(&self.dynamic.render());
        text
    }
}

/// Describes every family (HELP and unit) and creates the unlabelled
/// counters and gauges at 0, and `trailhouse_build_info`.
pub fn describe(service: &'static str, families: &[Family]) {
    // Descriptions go to the recorder installed when they are made.
    let _ = crate::telemetry::metrics_handle();
    for f in families {
        let help = f.help;
        match (f.kind, f.unit()) {
            (Kind::Counter, Some(u)) => metrics::describe_counter!(f.name, u, help),
            (Kind::Counter, None) => metrics::describe_counter!(f.name, help),
            (Kind::Gauge, Some(u)) => metrics::describe_gauge!(f.name, u, help),
            (Kind::Gauge, None) => metrics::describe_gauge!(f.name, help),
            (Kind::Histogram, Some(u)) => metrics::describe_histogram!(f.name, u, help),
            (Kind::Histogram, None) => metrics::describe_histogram!(f.name, help),
        }
        let series: Vec<Vec<metrics::Label>> = if f.labels.is_empty() {
            vec![Vec::new()]
        } else {
            f.preset
                .iter()
                .map(|values| {
                    f.labels
                        .iter()
                        .zip(values.iter())
                        .map(|(k, v)| metrics::Label::new(*k, *v))
                        .collect()
                })
                .collect()
        };
        for labels in series {
            match f.kind {
                Kind::Counter => metrics::counter!(f.name, labels).increment(0),
                Kind::Gauge => metrics::gauge!(f.name, labels).increment(0.0),
                Kind::Histogram => {}
            }
        }
    }
    metrics::describe_gauge!(READY, "1 while the service reports ready, else 0.");
    metrics::gauge!(READY).increment(0.0);
    metrics::describe_gauge!(
        BUILD_INFO,
        "Always 1; the labels name the service and its version."
    );
    metrics::gauge!(BUILD_INFO, "service" => service, "version" => env!("CARGO_PKG_VERSION"))
        .set(1.0);
}

/// `trailhouse_ready`: the readiness the service reports (see `health`).
pub const READY: &str = "trailhouse_ready";

/// `trailhouse_build_info{service, version} 1`.
pub const BUILD_INFO: &str = "trailhouse_build_info";

/// Checks a catalogue: Prometheus names, `_total` exactly on counters,
/// no duplicates, no org label. The services' unit tests run it.
pub fn check(families: &[Family]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for f in families {
        let valid = f.name.starts_with("trailhouse_")
            && f.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(format!("{}: not a trailhouse_ snake_case name", f.name));
        }
        if (f.kind == Kind::Counter) != f.name.ends_with("_total") {
            return Err(format!("{}: only counters end in _total", f.name));
        }
        if f.help.trim().is_empty() {
            return Err(format!("{}: no help", f.name));
        }
        if let Some(l) = f.labels.iter().find(|l| l.contains("org")) {
            return Err(format!("{}: label {l} is unbounded", f.name));
        }
        if let Some(p) = f.preset.iter().find(|p| p.len() != f.labels.len()) {
            return Err(format!(
                "{}: preset {p:?} does not match its labels",
                f.name
            ));
        }
        if !seen.insert(f.name) {
            return Err(format!("{}: declared twice", f.name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_come_from_the_name() {
        let cases = [
            ("trailhouse_x_duration_seconds", Some(Unit::Seconds)),
            ("trailhouse_x_bytes_total", Some(Unit::Bytes)),
            ("trailhouse_x_rows_total", None),
        ];
        for (name, unit) in cases {
            assert_eq!(Family::counter(name, "h").unit(), unit, "{name}");
        }
    }

    #[test]
    fn bad_catalogues_are_named() {
        let cases: [(&[Family], &str); 5] = [
            (&[Family::counter("trailhouse_a", "h")], "_total"),
            (&[Family::gauge("trailhouse_a_total", "h")], "_total"),
            (&[Family::counter("other_total", "h")], "snake_case"),
            (
                &[Family::counter("trailhouse_a_total", "h").labelled(&["org_id"])],
                "unbounded",
            ),
            (
                &[
                    Family::counter("trailhouse_a_total", "h"),
                    Family::counter("trailhouse_a_total", "h"),
                ],
                "twice",
            ),
        ];
        for (families, why) in cases {
            let e = check(families).expect_err(why);
            assert!(e.contains(why), "{e}");
        }
        check(&[Family::histogram("trailhouse_a_seconds", "h").labelled(&["route"])])
            .expect("valid");
    }

    #[test]
    fn described_families_render_with_help_and_zero() {
        let recorder = builder().expect("buckets").build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe(
                "test",
                &[
                    Family::counter("trailhouse_t_events_total", "Events seen."),
                    Family::histogram("trailhouse_t_latency_seconds", "Latency."),
                ],
            );
            metrics::histogram!("trailhouse_t_latency_seconds").record(0.003);
        });
        let text = handle.render();
        for want in [
            "# HELP trailhouse_t_events_total Events seen.",
            "trailhouse_t_events_total 0",
            "# TYPE trailhouse_t_latency_seconds histogram",
            "trailhouse_t_latency_seconds_bucket{le=\"0.005\"} 1",
            "trailhouse_build_info{service=\"test\"",
        ] {
            assert!(text.contains(want), "{want} not in:\n{text}");
        }
    }
}
