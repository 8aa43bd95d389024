//! A scrape of a service's `/metrics`: validated by Prometheus's own parser
//! and linter (`promtool check metrics`, from Debian's `prometheus`), then
//! read into families for the tests' checks.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};

use trailhouse_common::metrics::{Family, Kind};

/// One sample: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// One family of the scrape.
#[derive(Debug, Clone, Default)]
pub struct Scraped {
    pub kind: String,
    pub help: String,
    pub samples: Vec<Sample>,
}

/// The families of one scrape, by name.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub text: String,
    pub families: BTreeMap<String, Scraped>,
}

/// Fetches `{url}/metrics`, has `promtool check metrics` validate it (any
/// parse error or lint problem fails the test) and parses it.
pub async fn scrape(http: &reqwest::Client, url: &str) -> Scrape {
    let resp = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics");
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = resp.text().await.expect("metrics text");
    promtool_check(&text);
    Scrape {
        families: parse(&text),
        text,
    }
}

/// Runs `promtool check metrics` on `text`; panics with its findings.
pub fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; dev/install.sh installs it)");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).expect("write to promtool");
    }
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n--- scraped:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The family a sample name belongs to (`_bucket`, `_sum`, `_count` of a
/// histogram).
fn family_of<'a>(families: &BTreeMap<String, Scraped>, sample: &'a str) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(stem) = sample.strip_suffix(suffix) {
            if families.get(stem).is_some_and(|f| f.kind == "histogram") {
                return stem;
            }
        }
    }
    sample
}

/// Parses the text format (what promtool accepted).
pub fn parse(text: &str) -> BTreeMap<String, Scraped> {
    let mut families: BTreeMap<String, Scraped> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            families.entry(name.into()).or_default().help = help.into();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            families.entry(name.into()).or_default().kind = kind.into();
        } else if !line.starts_with('#') {
            let sample = parse_sample(line);
            let family = family_of(&families, &sample.name).to_string();
            families.entry(family).or_default().samples.push(sample);
        }
    }
    families
}

fn parse_sample(line: &str) -> Sample {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => (line, ""),
    };
    let mut labels = BTreeMap::new();
    let mut rest = rest;
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        let (mut key, mut value, mut in_value, mut escaped) =
            (String::new(), String::new(), false, false);
        let mut end = body.len();
        for (i, c) in chars.by_ref() {
            match (in_value, escaped, c) {
                (true, true, 'n') => {
                    value.push('\n');
                    escaped = false;
                }
                (true, true, c) => {
                    value.push(c);
                    escaped = false;
                }
                (true, false, '\\') => escaped = true,
                (true, false, '"') => {
                    labels.insert(std::mem::take(&mut key), std::mem::take(&mut value));
                    in_value = false;
                }
                (true, false, c) => value.push(c),
                (false, _, '"') => in_value = true,
                (false, _, '}') => {
                    end = i + 1;
                    break;
                }
                (false, _, '=' | ',' | ' ') => {}
                (false, _, c) => key.push(c),
            }
        }
        rest = &body[end..];
    }
    let value = rest
        .split_whitespace()
        .next()
        .map(|v| match v {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or(f64::NAN),
        })
        .unwrap_or(f64::NAN);
    Sample {
        name: name.to_string(),
        labels,
        value,
    }
}

impl Scrape {
    /// The value of the sample `name` with exactly these labels.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let family = self.families.get(family_of(&self.families, name))?;
        family
            .samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// The sum of every sample named `name` (over its labels).
    pub fn sum(&self, name: &str) -> f64 {
        self.families
            .get(family_of(&self.families, name))
            .map_or(0.0, |f| {
                f.samples
                    .iter()
                    .filter(|s| s.name == name)
                    .map(|s| s.value)
                    .sum()
            })
    }

    /// Holds the scrape to the catalogue of the services in the process:
    /// every declared family is of its type, with its help and exactly its
    /// labels (histograms: and `le`); counters and gauges without labels,
    /// and preset series, exist (at 0 before their first event); every
    /// `trailhouse_` family exported is declared; no label is an org.
    pub fn check_catalogue(&self, catalogue: &[Family]) {
        for f in catalogue {
            let kind = match f.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            let Some(got) = self.families.get(f.name) else {
                let must =
                    f.kind != Kind::Histogram && (f.labels.is_empty() || !f.preset.is_empty());
                assert!(!must, "{} is missing:\n{}", f.name, self.text);
                continue;
            };
            assert_eq!(got.kind, kind, "{}", f.name);
            assert_eq!(got.help, f.help, "{}", f.name);
            let mut declared: BTreeSet<&str> = f.labels.iter().copied().collect();
            if f.kind == Kind::Histogram {
                declared.insert("le");
            }
            for s in &got.samples {
                let names: BTreeSet<&str> = s
                    .labels
                    .keys()
                    .map(String::as_str)
                    .filter(|l| {
                        !(f.kind == Kind::Histogram && s.name.ends_with("_sum") && *l == "le")
                    })
                    .collect();
                let expected: BTreeSet<&str> =
                    if f.kind == Kind::Histogram && !s.name.ends_with("_bucket") {
                        f.labels.iter().copied().collect()
                    } else {
                        declared.clone()
                    };
                assert_eq!(names, expected, "labels of {}", s.name);
            }
            for preset in f.preset {
                let labels: Vec<(&str, &str)> = f
                    .labels
                    .iter()
                    .copied()
                    .zip(preset.iter().copied())
                    .collect();
                assert!(
                    self.value(f.name, &labels).is_some(),
                    "{} {labels:?} is not there from the start",
                    f.name
                );
            }
        }
        let declared: BTreeSet<&str> = catalogue.iter().map(|f| f.name).collect();
        for name in self
            .families
            .keys()
            .filter(|n| n.starts_with("trailhouse_"))
        {
            let common = [
                trailhouse_common::metrics::BUILD_INFO,
                trailhouse_common::metrics::READY,
            ];
            assert!(
                declared.contains(name.as_str()) || common.contains(&name.as_str()),
                "{name} is exported but not in the catalogue"
            );
        }
        for (name, f) in &self.families {
            for s in &f.samples {
                assert!(
                    !s.labels.keys().any(|k| k.contains("org")),
                    "{name} has an org label"
                );
            }
        }
    }

    /// Checks what every service exports besides its catalogue: build info
    /// naming `service`, and the process metrics.
    pub fn check_common(&self, service: &str) {
        let build = self
            .families
            .get("trailhouse_build_info")
            .expect("build info");
        assert!(
            build
                .samples
                .iter()
                .any(
                    |s| s.labels.get("service").map(String::as_str) == Some(service)
                        && s.value == 1.0
                ),
            "build info of {service}:\n{}",
            self.text
        );
        assert!(
            self.families.contains_key("trailhouse_ready"),
            "trailhouse_ready missing"
        );
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(self.families.contains_key(name), "{name} missing");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_escaped_labels_parse() {
        let text = "# HELP a_total A.\n# TYPE a_total counter\na_total{route=\"/v1/{id}\",x=\"q\\\"t,\"} 3\n\
                    # HELP h_seconds H.\n# TYPE h_seconds histogram\nh_seconds_bucket{le=\"+Inf\"} 2\nh_seconds_sum 0.5\nh_seconds_count 2\n";
        let s = Scrape {
            families: parse(text),
            text: text.into(),
        };
        assert_eq!(
            s.value("a_total", &[("route", "/v1/{id}"), ("x", "q\"t,")]),
            Some(3.0)
        );
        assert_eq!(s.value("h_seconds_bucket", &[("le", "+Inf")]), Some(2.0));
        assert_eq!(s.value("h_seconds_count", &[]), Some(2.0));
        assert_eq!(s.families["h_seconds"].samples.len(), 3);
    }
}
