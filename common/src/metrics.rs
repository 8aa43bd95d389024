//! The metric families of a service, declared once: name, type, unit, help
//! and label names. A service describes them at start-up, so every family
//! has its HELP line, and every counter and gauge without labels exists at
//! 0 before its first event (an alert on `rate(x[5m])` needs the series).
//! Histogram buckets are chosen by the name's unit suffix, so every process
//! that shares the recorder (tests start several services in one) gets the
//! same buckets.

use metrics::Unit;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};

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
}

impl Family {
    pub const fn counter(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            kind: Kind::Counter,
            help,
            labels: &[],
        }
    }

    pub const fn gauge(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            kind: Kind::Gauge,
            help,
            labels: &[],
        }
    }

    pub const fn histogram(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            kind: Kind::Histogram,
            help,
            labels: &[],
        }
    }

    pub const fn labelled(self, labels: &'static [&'static str]) -> Family {
        Family { labels, ..self }
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

/// A recorder builder whose histograms get buckets by unit suffix; names
/// with no unit suffix (rows, events) get count buckets.
pub fn builder() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_bytes".into()), BYTES_BUCKETS)?
        .set_buckets(COUNT_BUCKETS)
}

/// Describes every family (HELP and unit) and creates the unlabelled
/// counters and gauges at 0, and `trailhouse_build_info`.
pub fn describe(service: &'static str, families: &[Family]) {
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
        if f.labels.is_empty() {
            match f.kind {
                Kind::Counter => metrics::counter!(f.name).increment(0),
                Kind::Gauge => metrics::gauge!(f.name).increment(0.0),
                Kind::Histogram => {}
            }
        }
    }
    metrics::describe_gauge!(
        BUILD_INFO,
        "Always 1; the labels name the service and its version."
    );
    metrics::gauge!(BUILD_INFO, "service" => service, "version" => env!("CARGO_PKG_VERSION"))
        .set(1.0);
}

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
