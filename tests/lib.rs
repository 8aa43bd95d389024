//! Test harness: starts ingest, consumer and query API in-process against the
//! real local Kafka and ClickHouse, each test with its own topic, consumer
//! group and database, so tests run in parallel without interfering.
//!
//! `TRAILHOUSE_TEST_KAFKA` (default `127.0.0.1:9092`) and
//! `TRAILHOUSE_TEST_CLICKHOUSE` (default `http://127.0.0.1:8123`) point at the
//! engines that `dev/infra.sh start` runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod faults;
mod monitoring;
pub mod rollups;
pub mod scrape;

use std::time::Duration;

use tokio::net::TcpListener;
use trailhouse_common::clickhouse::{migrate, ClickHouseArgs};
use trailhouse_common::kafka::{ensure_topic, KafkaArgs};
use trailhouse_common::shutdown::Shutdown;
use trailhouse_common::Secret;
use trailhouse_ingest::auth::hash_key;
use trailhouse_query_api::auth::{mint_hs256, Claims};

pub const JWT_SECRET: &str = "integration-test-jwt-secret";
/// The secret of the query API's viewer tokens in tests.
pub const VIEWER_SECRET: &str = "integration-test-viewer-token-secret-0123";
pub const SERVICE_KEY: &str = "thk_integration_service_key";

/// The test tokens' verification settings (HS256 with [`JWT_SECRET`]),
/// with viewer tokens signed by `viewer` when given.
pub fn jwt_args(viewer: Option<&str>) -> trailhouse_query_api::JwtArgs {
    trailhouse_query_api::JwtArgs {
        hs256_secret: Some(Secret::new(JWT_SECRET)),
        public_key_file: None,
        algorithm: trailhouse_query_api::auth::JwtAlgorithm::Rs256,
        issuer: None,
        audience: None,
        max_lifetime_secs: trailhouse_query_api::auth::MAX_LIFETIME_SECS,
        viewer_secret: viewer.map(Secret::new),
        viewer_previous_secret: None,
        viewer_max_lifetime_secs: trailhouse_query_api::viewer_token::DEFAULT_VIEWER_LIFETIME_SECS,
    }
}

/// One test's isolated slice of the infrastructure.
pub struct TestEnv {
    pub name: String,
    pub kafka: KafkaArgs,
    pub clickhouse: ClickHouseArgs,
    pub shutdown: Shutdown,
    pub http: reqwest::Client,
    pub ingest_url: Option<String>,
    pub query_url: Option<String>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A name no other test run uses: `<prefix>_<test>_<pid>_<nanos>`.
pub fn unique_name(prefix: &str, test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000)
        .unwrap_or_default();
    format!("{prefix}_{test}_{}_{nanos}", std::process::id())
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

impl TestEnv {
    /// Creates the topic (`partitions`) and the migrated database for `test`.
    pub async fn new(test: &str, partitions: i32) -> TestEnv {
        let brokers =
            std::env::var("TRAILHOUSE_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
        TestEnv::with_brokers(test, &brokers, partitions).await
    }

    /// Like [`TestEnv::new`], on the given Kafka brokers (e.g. a broker of
    /// the test's own that it stops and starts).
    pub async fn with_brokers(test: &str, brokers: &str, partitions: i32) -> TestEnv {
        init_logs();
        let name = unique_name("t", test);
        let ch = std::env::var("TRAILHOUSE_TEST_CLICKHOUSE")
            .unwrap_or_else(|_| "http://127.0.0.1:8123".into());
        let kafka = KafkaArgs::local(brokers.to_string(), format!("{name}.events"));
        ensure_topic(&kafka, &kafka.topic, partitions, 1)
            .await
            .expect("create topic (is dev/infra.sh start running?)");
        let clickhouse = ClickHouseArgs::local(ch, name.clone());
        migrate(&clickhouse).await.expect("migrate");
        TestEnv {
            name,
            kafka,
            clickhouse,
            shutdown: Shutdown::new(),
            http: reqwest::Client::new(),
            ingest_url: None,
            query_url: None,
            tasks: Vec::new(),
        }
    }

    /// A migrated database only (no topic): for tests of the query API that
    /// write their rows straight into ClickHouse.
    pub async fn clickhouse_only(test: &str) -> TestEnv {
        TestEnv::clickhouse_for(test, &trailhouse_schemas::layout::Target::default()).await
    }

    /// A database migrated to `target` only (no topic).
    pub async fn clickhouse_for(
        test: &str,
        target: &trailhouse_schemas::layout::Target,
    ) -> TestEnv {
        init_logs();
        let name = unique_name("t", test);
        let ch = std::env::var("TRAILHOUSE_TEST_CLICKHOUSE")
            .unwrap_or_else(|_| "http://127.0.0.1:8123".into());
        let clickhouse = ClickHouseArgs::local(ch, name.clone());
        trailhouse_common::clickhouse::migrate_to(&clickhouse, target)
            .await
            .expect("migrate");
        TestEnv {
            kafka: KafkaArgs::local("127.0.0.1:1", format!("{name}.unused")),
            name,
            clickhouse,
            shutdown: Shutdown::new(),
            http: reqwest::Client::new(),
            ingest_url: None,
            query_url: None,
            tasks: Vec::new(),
        }
    }

    /// Writes rows straight into the events table.
    pub async fn insert_rows(&self, rows: &[trailhouse_schemas::EventRow]) {
        let client = self.clickhouse.client();
        for chunk in rows.chunks(20_000) {
            let mut insert = client
                .insert::<trailhouse_schemas::EventRow>(trailhouse_schemas::EVENTS_TABLE)
                .await
                .expect("insert");
            for r in chunk {
                insert.write(r).await.expect("write row");
            }
            insert.end().await.expect("insert end");
        }
    }

    /// A token with every claim chosen by the caller.
    pub fn token_for(&self, claims: Claims) -> String {
        mint_hs256(JWT_SECRET.as_bytes(), &claims).expect("mint")
    }

    /// Ingest keys: `key-<org>` for each org, plus [`SERVICE_KEY`].
    pub async fn start_ingest(&mut self, orgs: &[&str]) -> String {
        self.start_ingest_with(orgs, |_| {}).await
    }

    /// [`TestEnv::start_ingest`] with the configuration adjusted by `adjust`.
    pub async fn start_ingest_with(
        &mut self,
        orgs: &[&str],
        adjust: impl FnOnce(&mut trailhouse_ingest::IngestConfig),
    ) -> String {
        let keys = orgs
            .iter()
            .map(|o| format!("{o}:{}", hash_key(&format!("key-{o}"))))
            .collect::<Vec<_>>()
            .join(",");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let mut config = trailhouse_ingest::IngestConfig {
            listen: listener.local_addr().expect("addr"),
            kafka: self.kafka.clone(),
            keys: keys.parse().expect("keys"),
            service_keys: format!("gateway:{}", hash_key(SERVICE_KEY))
                .parse()
                .expect("service keys"),
            max_body_bytes: 16 * 1024 * 1024,
            max_batch_events: 5000,
            max_message_bytes: 1_000_000,
            max_backfill_days: None,
            compression: "none".parse().expect("compression"),
            ack_timeout_ms: 10_000,
            max_in_flight: 256,
            redact: "defaults".parse().expect("rules"),
            redact_opaque_body: "mask".parse().expect("policy"),
            retention_default_days: "90".parse().expect("retention class"),
            retention_orgs: Default::default(),
            rate_limit: "off".parse().expect("rate"),
            rate_limit_overrides: Default::default(),
            shutdown_timeout_secs: 5,
        };
        adjust(&mut config);
        let shutdown = self.shutdown.clone();
        self.tasks.push(tokio::spawn(async move {
            trailhouse_ingest::run(config, listener, shutdown)
                .await
                .expect("ingest run");
        }));
        self.ingest_url = Some(url.clone());
        url
    }

    pub fn consumer_config(&self) -> trailhouse_consumer::ConsumerConfig {
        let nz = |n: usize| std::num::NonZeroUsize::new(n).expect("positive");
        trailhouse_consumer::ConsumerConfig {
            kafka: self.kafka.clone(),
            clickhouse: self.clickhouse.clone(),
            group: format!("{}.consumer", self.name),
            instance_id: None,
            listen: "127.0.0.1:0".parse().expect("addr"),
            batch_rows: nz(5_000),
            batch_bytes: nz(16 * 1024 * 1024),
            batch_age_ms: 1000,
            insert_timeout_secs: 30,
            retry_horizon_secs: 60,
            max_partitions_per_insert: nz(100),
            shutdown_timeout_secs: 20,
            max_in_flight: nz(2),
            dlq_topic: None,
            poison_window: nz(1000),
            poison_max_ratio: 0.1,
            poison_max_consecutive: 100,
            pause_after_ms: 1000,
            paused_not_ready_secs: 60,
            broker_not_ready_secs: 30,
            test_crash_after_insert: None,
            session_timeout_ms: 10_000,
            fetch_partition_bytes: nz(4 << 20),
            prefetch_kbytes: nz(4 << 10),
        }
    }

    pub fn start_consumer(&mut self) {
        let config = self.consumer_config();
        let shutdown = self.shutdown.clone();
        self.tasks.push(tokio::spawn(async move {
            trailhouse_consumer::run(config, None, shutdown)
                .await
                .expect("consumer run");
        }));
    }

    /// [`TestEnv::start_consumer`] serving health and metrics; returns its URL.
    pub async fn start_consumer_serving(&mut self) -> String {
        self.start_consumer_serving_with(|_| {}).await
    }

    /// [`TestEnv::start_consumer_serving`] with the configuration adjusted.
    pub async fn start_consumer_serving_with(
        &mut self,
        adjust: impl FnOnce(&mut trailhouse_consumer::ConsumerConfig),
    ) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let mut config = self.consumer_config();
        adjust(&mut config);
        let shutdown = self.shutdown.clone();
        self.tasks.push(tokio::spawn(async move {
            trailhouse_consumer::run(config, Some(listener), shutdown)
                .await
                .expect("consumer run");
        }));
        url
    }

    pub async fn start_query_api(&mut self) -> String {
        self.start_query_api_with(|_| {}).await
    }

    /// [`TestEnv::start_query_api`] with the configuration adjusted by
    /// `adjust`. Tests walk many pages, so the harness sets no rate limit;
    /// the tests of the limits set their own.
    pub async fn start_query_api_with(
        &mut self,
        adjust: impl FnOnce(&mut trailhouse_query_api::QueryConfig),
    ) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let config = trailhouse_query_api::QueryConfig {
            listen: listener.local_addr().expect("addr"),
            clickhouse: self.clickhouse.clone(),
            jwt: jwt_args(Some(VIEWER_SECRET)),
            cursor_secret: Some(Secret::new("integration-test-cursor-secret")),
            role_permissions: trailhouse_query_api::access::RolePermissions::default(),
            detail_headers: trailhouse_query_api::access::DEFAULT_DETAIL_HEADERS.into(),
            public_url: None,
            trusted_proxies: Default::default(),
            viewer: true,
            cors_allowed_origins: Default::default(),
            limits: trailhouse_query_api::config::QueryLimits {
                rate_limit: "off".parse().expect("rate"),
                ..Default::default()
            },
            shutdown_timeout_secs: 5,
        };
        let mut config = config;
        adjust(&mut config);
        let shutdown = self.shutdown.clone();
        self.tasks.push(tokio::spawn(async move {
            trailhouse_query_api::run(config, listener, shutdown)
                .await
                .expect("query api run");
        }));
        self.query_url = Some(url.clone());
        url
    }

    /// Starts the streamer (every development allowance on, fast flushes);
    /// returns its URL.
    pub async fn start_streamer(&mut self) -> String {
        self.start_streamer_with(|_| {}).await
    }

    /// [`TestEnv::start_streamer`] with the configuration adjusted.
    pub async fn start_streamer_with(
        &mut self,
        adjust: impl FnOnce(&mut trailhouse_streamer::StreamerConfig),
    ) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let mut config = self.streamer_config(listener.local_addr().expect("addr"));
        adjust(&mut config);
        let shutdown = self.shutdown.clone();
        self.tasks.push(tokio::spawn(async move {
            trailhouse_streamer::run(config, listener, shutdown)
                .await
                .expect("streamer run");
        }));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !self
            .http
            .get(format!("{url}/health/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(tokio::time::Instant::now() < deadline, "streamer not ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        url
    }

    /// The streamer's configuration in tests.
    pub fn streamer_config(
        &self,
        listen: std::net::SocketAddr,
    ) -> trailhouse_streamer::StreamerConfig {
        trailhouse_streamer::StreamerConfig {
            listen,
            kafka: self.kafka.clone(),
            clickhouse: self.clickhouse.clone(),
            jwt: jwt_args(None),
            role_permissions: trailhouse_query_api::access::RolePermissions::parse(
                trailhouse_streamer::config::DEFAULT_ROLE_PERMISSIONS,
            )
            .expect("grants"),
            group: format!("{}.streamer", self.name),
            consumer_group: format!("{}.consumer", self.name),
            inbox_events: 10_000,
            history_reads: 4,
            refresh_ms: 300,
            flush_ms: 200,
            retry_first_ms: 100,
            retry_max_secs: 2,
            allow_http: true,
            allow_private: true,
            allow_local_files: true,
            object_store_prefixes: Vec::new(),
            instance_id: None,
            session_timeout_ms: 10_000,
            shutdown_timeout_secs: 5,
        }
    }

    /// Starts all three services.
    pub async fn start_all(&mut self, orgs: &[&str]) {
        self.start_ingest(orgs).await;
        self.start_consumer();
        self.start_query_api().await;
        self.wait_ready().await;
    }

    /// Waits until the HTTP services report ready.
    pub async fn wait_ready(&self) {
        for url in self.ingest_url.iter().chain(self.query_url.iter()) {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let ok = self
                    .http
                    .get(format!("{url}/health/ready"))
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false);
                if ok {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{url} never became ready"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// A token for `org` with the given roles and permissions.
    pub fn token(&self, org: &str, roles: &[&str], permissions: &[&str]) -> String {
        mint_hs256(
            JWT_SECRET.as_bytes(),
            &Claims {
                sub: "tester".into(),
                org_id: org.into(),
                environment_id: None,
                workspace_id: None,
                roles: roles.iter().map(|s| s.to_string()).collect(),
                permissions: permissions.iter().map(|s| s.to_string()).collect(),
                exp: chrono::Utc::now().timestamp() + 3600,
                iat: 0,
            },
        )
        .expect("mint")
    }

    /// Sum of the high watermarks of the test topic: how many messages it holds.
    pub fn topic_message_count(&self) -> i64 {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let c: BaseConsumer = self
            .kafka
            .client_config()
            .set("group.id", format!("{}.probe", self.name))
            .create()
            .expect("consumer");
        let md = c
            .fetch_metadata(Some(&self.kafka.topic), Duration::from_secs(10))
            .expect("metadata");
        let mut total = 0;
        for t in md.topics() {
            for p in t.partitions() {
                let (lo, hi) = c
                    .fetch_watermarks(&self.kafka.topic, p.id(), Duration::from_secs(10))
                    .expect("watermarks");
                total += hi - lo;
            }
        }
        total
    }

    /// Every message of the test topic: payload and `traceparent` header.
    pub fn read_topic(&self) -> Vec<(Vec<u8>, Option<String>)> {
        self.read_topic_named(&self.kafka.topic)
    }

    /// Every message of `topic` on the test's brokers: payload and `traceparent`.
    pub fn read_topic_named(&self, topic: &str) -> Vec<(Vec<u8>, Option<String>)> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::message::{Headers, Message};
        use rdkafka::{Offset, TopicPartitionList};
        let c: BaseConsumer = self
            .kafka
            .client_config()
            .set("group.id", format!("{}.reader", self.name))
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let md = c
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let mut assignment = TopicPartitionList::new();
        let mut remaining = 0;
        for p in md.topics().iter().flat_map(|t| t.partitions()) {
            let (lo, hi) = c
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .expect("watermarks");
            remaining += hi - lo;
            assignment
                .add_partition_offset(topic, p.id(), Offset::Beginning)
                .expect("assign");
        }
        c.assign(&assignment).expect("assign");
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while (out.len() as i64) < remaining {
            assert!(
                std::time::Instant::now() < deadline,
                "topic not read in time"
            );
            match c.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => {
                    let tp = m.headers().and_then(|h| {
                        h.iter()
                            .find(|x| x.key == "traceparent")
                            .and_then(|x| x.value)
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                    });
                    out.push((m.payload().unwrap_or_default().to_vec(), tp));
                }
                Some(Err(e)) => panic!("read: {e}"),
                None => {}
            }
        }
        out
    }

    /// Stops the services and waits for them to drain.
    pub async fn stop(mut self) {
        self.shutdown.trigger();
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
    }
}
