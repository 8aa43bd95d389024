//! The alert rules and the dashboard name only metrics the services export.

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use trailhouse_common::metrics::{Family, Kind, BUILD_INFO, READY};

    /// Every metric name a service exports, histograms with their series.
    fn exported() -> BTreeSet<String> {
        let families: Vec<Family> = [
            trailhouse_ingest::metrics::families(),
            trailhouse_consumer::metrics::families(),
            trailhouse_query_api::metrics::families(),
        ]
        .concat();
        let mut names: BTreeSet<String> = [BUILD_INFO, READY]
            .iter()
            .chain(&[
                "process_cpu_seconds_total",
                "process_resident_memory_bytes",
                "process_virtual_memory_bytes",
                "process_open_fds",
                "process_max_fds",
                "process_start_time_seconds",
                "process_threads",
            ])
            .map(|s| s.to_string())
            .collect();
        for f in families {
            names.insert(f.name.to_string());
            if f.kind == Kind::Histogram {
                for s in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{}{s}", f.name));
                }
            }
        }
        names
    }

    /// The metric names in `text`: `trailhouse_…` and `process_…` words.
    fn referenced(text: &str) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
        for (i, _) in text.match_indices(['t', 'p']) {
            let before = text[..i].chars().next_back();
            if before.is_some_and(word) {
                continue;
            }
            let rest = &text[i..];
            if !(rest.starts_with("trailhouse_") || rest.starts_with("process_")) {
                continue;
            }
            let end = rest.find(|c: char| !word(c)).unwrap_or(rest.len());
            found.insert(rest[..end].to_string());
        }
        found
    }

    #[test]
    fn alerts_and_dashboard_name_exported_metrics() {
        let root = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/helm/trailhouse/files/"
        );
        let exported = exported();
        for file in ["alerts.yaml", "dashboard.json"] {
            let text = std::fs::read_to_string(format!("{root}{file}")).expect("file");
            let names = referenced(&text);
            assert!(names.len() > 10, "{file}: {names:?}");
            let unknown: Vec<&String> = names.iter().filter(|n| !exported.contains(*n)).collect();
            assert!(
                unknown.is_empty(),
                "{file} names metrics no service exports: {unknown:?}"
            );
        }
        assert_eq!(
            referenced("rate(trailhouse_a_total[5m]) / x_trailhouse_b + process_cpu_seconds_total"),
            ["process_cpu_seconds_total", "trailhouse_a_total"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        );
    }
}
