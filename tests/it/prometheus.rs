//! A real Prometheus (Debian's `prometheus`) scrapes ingest and a consumer
//! process and evaluates the chart's alert rules, with every duration in
//! them shrunk from minutes to as many double seconds (`[5m]` → `[10s]`,
//! `for: 5m` → `for: 10s`) so that the test takes a minute and a half.
//! Under load, stopping the consumer fires `TrailhouseEventsNotStored`
//! (the consumer's own lag series go with it, so the alert reads what
//! ingest accepts against what the consumers insert), and starting it
//! again resolves the alert.

use std::time::{Duration, Instant};

use serde_json::Value;
use trailhouse_tests::faults::{consumer, free_port, wait_port, Proc};
use trailhouse_tests::TestEnv;

/// The chart's rules with minutes made double seconds.
fn shrunk_rules() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/helm/trailhouse/files/alerts.yaml"
    );
    let text = std::fs::read_to_string(path).expect("alerts.yaml");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    // A duration is digits then `m` after `[` or `for: `.
    while let Some(i) = rest.find(|c: char| c.is_ascii_digit()) {
        let (head, tail) = rest.split_at(i);
        out.push_str(head);
        let digits = tail.chars().take_while(char::is_ascii_digit).count();
        let after = &tail[digits..];
        let is_duration = (head.ends_with('[') || head.ends_with("for: "))
            && after.starts_with('m')
            && !after[1..].starts_with(|c: char| c.is_ascii_alphanumeric());
        let n: u64 = tail[..digits].parse().unwrap_or(0);
        if is_duration {
            out.push_str(&format!("{}s", n * 2));
            rest = &after[1..];
        } else {
            out.push_str(&tail[..digits]);
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

struct Prometheus {
    url: String,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

fn start_prometheus(targets: &[String]) -> Prometheus {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("rules.yaml"), shrunk_rules()).expect("rules");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files: [rules.yaml]\n\
         scrape_configs:\n  - job_name: trailhouse\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).expect("config");
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
    let child = std::process::Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("prometheus (Debian package prometheus; dev/install.sh installs it)");
    assert!(
        wait_port(port, Duration::from_secs(30)),
        "prometheus did not start"
    );
    Prometheus {
        url: format!("http://127.0.0.1:{port}"),
        _proc: Proc::new("prometheus", child),
        _dir: dir,
    }
}

impl Prometheus {
    /// A GET of Prometheus's HTTP API, as JSON.
    async fn api(
        &self,
        http: &reqwest::Client,
        path: &str,
        query: &[(&str, &str)],
    ) -> Option<Value> {
        http.get(format!("{}/api/v1/{path}", self.url))
            .query(query)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    /// The state of `alert` (`pending`, `firing`), or `None`.
    async fn alert(&self, http: &reqwest::Client, alert: &str) -> Option<String> {
        let v = self.api(http, "alerts", &[]).await?;
        v["data"]["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["labels"]["alertname"] == alert)
            .and_then(|a| a["state"].as_str().map(str::to_string))
    }

    /// Waits until `alert` is in `state` (`None`: inactive), up to `secs`.
    async fn wait_alert(
        &self,
        http: &reqwest::Client,
        alert: &str,
        state: Option<&str>,
        secs: u64,
    ) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let now = self.alert(http, alert).await;
            if now.as_deref() == state {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{alert} stayed {now:?}, expected {state:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The value of an instant query with one result.
    async fn query(&self, http: &reqwest::Client, q: &str) -> Option<f64> {
        let v = self.api(http, "query", &[("query", q)]).await?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

#[test]
fn the_rules_are_shrunk_only_where_they_are_durations() {
    let r = shrunk_rules();
    assert!(r.contains("[10s]") && r.contains("for: 10s") && r.contains("for: 30s"));
    assert!(!r.contains("[5m]") && !r.contains("for: 5m"));
    assert!(
        r.contains("> 10000") && r.contains("> 600"),
        "thresholds are kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_alert_fires_when_the_consumer_stops_and_resolves_when_it_returns() {
    let mut env = TestEnv::new("prometheus_alerts", 2).await;
    let ingest = env.start_ingest(&["acme"]).await;
    env.wait_ready().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let consumer_port = free_port();
    let start_consumer = || {
        consumer(
            &env.kafka,
            &env.clickhouse,
            &format!("{}.consumer", env.name),
            &[(
                "TRAILHOUSE_CONSUMER_LISTEN",
                format!("127.0.0.1:{consumer_port}"),
            )],
            &dir.path().join("consumer.log"),
        )
    };
    let mut running = start_consumer();
    assert!(
        wait_port(consumer_port, Duration::from_secs(30)),
        "consumer did not start"
    );
    let prom = start_prometheus(&[
        ingest.trim_start_matches("http://").to_string(),
        format!("127.0.0.1:{consumer_port}"),
    ]);
    // Load: 20 events every 100 ms until the end.
    let load = {
        let (http, url) = (env.http.clone(), ingest.clone());
        tokio::spawn(async move {
            let body = (0..20)
                .map(|i| format!(r#"{{"org_id":"acme","action":{{"type":"user.login"}},"actor":{{"id":"u{i}"}}}}"#))
                .collect::<Vec<_>>()
                .join("\n");
            loop {
                let _ = http
                    .post(format!("{url}/v1/events"))
                    .bearer_auth("key-acme")
                    .header("content-type", "application/x-ndjson")
                    .body(body.clone())
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let http = env.http.clone();
    // Running under load: rows are inserted, the alert stays quiet.
    let deadline = Instant::now() + Duration::from_secs(60);
    while prom
        .query(
            &http,
            "sum(rate(trailhouse_consumer_rows_inserted_total[10s]))",
        )
        .await
        .unwrap_or(0.0)
        <= 0.0
    {
        assert!(Instant::now() < deadline, "prometheus never saw an insert");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(prom.alert(&http, "TrailhouseEventsNotStored").await, None);
    // Stopped: the alert goes pending, then fires.
    running.kill9();
    prom.wait_alert(&http, "TrailhouseEventsNotStored", Some("firing"), 90)
        .await;
    // Back: it resolves.
    let _back = start_consumer();
    prom.wait_alert(&http, "TrailhouseEventsNotStored", None, 90)
        .await;
    load.abort();
    env.stop().await;
}
