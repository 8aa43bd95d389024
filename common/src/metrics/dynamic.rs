//! Gauges whose series come and go with what their owner holds (a
//! consumer's partitions): set while held, removed when let go, which the
//! `metrics` recorder cannot do. They render after the recorder's
//! families, in the same text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, Weak};

use super::{Family, Kind};

/// One gauge family with removable series.
#[derive(Debug)]
pub struct DynamicGauge {
    family: Family,
    series: Mutex<BTreeMap<Vec<String>, f64>>,
}

impl DynamicGauge {
    /// A gauge family; `family` must be a gauge whose labels name the values
    /// given to [`DynamicGauge::set`].
    pub fn new(family: Family) -> Arc<DynamicGauge> {
        debug_assert_eq!(family.kind, Kind::Gauge);
        Arc::new(DynamicGauge {
            family,
            series: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn family(&self) -> Family {
        self.family
    }

    /// Sets the series with these label values (in the family's order).
    pub fn set(&self, values: &[&str], value: f64) {
        if let Ok(mut s) = self.series.lock() {
            s.insert(values.iter().map(|v| v.to_string()).collect(), value);
        }
    }

    /// Removes the series with these label values.
    pub fn remove(&self, values: &[&str]) {
        if let Ok(mut s) = self.series.lock() {
            let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
            s.remove(&key);
        }
    }

    /// Whether a series with these label values exists.
    pub fn contains(&self, values: &[&str]) -> bool {
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        self.series.lock().is_ok_and(|s| s.contains_key(&key))
    }

    /// The label values of every series.
    pub fn series(&self) -> Vec<Vec<String>> {
        self.series
            .lock()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn snapshot(&self) -> BTreeMap<Vec<String>, f64> {
        self.series.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// The dynamic gauges registered with an exporter (held weakly: a gauge
/// whose owner is gone stops rendering).
#[derive(Debug, Default, Clone)]
pub(super) struct Registry(Arc<Mutex<Vec<Weak<DynamicGauge>>>>);

impl Registry {
    pub(super) fn register(&self, gauge: &Arc<DynamicGauge>) {
        if let Ok(mut all) = self.0.lock() {
            all.retain(|w| w.strong_count() > 0);
            all.push(Arc::downgrade(gauge));
        }
    }

    /// The text of every live family; gauges of one name (several owners in
    /// one process) render as one family.
    pub(super) fn render(&self) -> String {
        let live: Vec<Arc<DynamicGauge>> = self
            .0
            .lock()
            .map(|all| all.iter().filter_map(Weak::upgrade).collect())
            .unwrap_or_default();
        let mut by_name: BTreeMap<&'static str, (Family, BTreeMap<Vec<String>, f64>)> =
            BTreeMap::new();
        for g in &live {
            let entry = by_name
                .entry(g.family.name)
                .or_insert_with(|| (g.family, BTreeMap::new()));
            entry.1.extend(g.snapshot());
        }
        let mut text = String::new();
        for (name, (family, series)) in by_name {
            let _ = writeln!(text, "# HELP {name} {}", family.help);
            let _ = writeln!(text, "# TYPE {name} gauge");
            for (values, value) in series {
                let labels: Vec<String> = family
                    .labels
                    .iter()
                    .zip(&values)
                    .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                    .collect();
                let _ = writeln!(text, "{name}{{{}}} {value}", labels.join(","));
            }
        }
        text
    }
}

/// A label value as the text format writes it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_come_and_go_and_owners_merge() {
        let family = Family::gauge("trailhouse_t_lag_messages", "Lag.").labelled(&["partition"]);
        let (a, b) = (DynamicGauge::new(family), DynamicGauge::new(family));
        let registry = Registry::default();
        registry.register(&a);
        registry.register(&b);
        a.set(&["0"], 5.0);
        a.set(&["1"], 7.0);
        b.set(&["2"], 1.0);
        a.remove(&["1"]);
        assert!(!a.contains(&["1"]));
        let text = registry.render();
        assert_eq!(
            text,
            "# HELP trailhouse_t_lag_messages Lag.\n# TYPE trailhouse_t_lag_messages gauge\n\
             trailhouse_t_lag_messages{partition=\"0\"} 5\n\
             trailhouse_t_lag_messages{partition=\"2\"} 1\n"
        );
        drop(b);
        assert!(!registry.render().contains("partition=\"2\""));
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
    }
}
