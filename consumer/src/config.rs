//! The consumer's configuration: flags and `TRAILHOUSE_CONSUMER_*`
//! variables parsed into typed values; [`ConsumerConfig::validate`] checks
//! only rules across fields.

use std::num::NonZeroUsize;
use std::time::Duration;

use clap::Args;
use trailhouse_common::clickhouse::ClickHouseArgs;
use trailhouse_common::kafka::KafkaArgs;

use crate::batch::BatchLimits;
use crate::dlq::PoisonGuard;
use crate::pipeline::PipelineSettings;
use crate::Error;

/// Configuration of the consumer.
#[derive(Debug, Clone, Args)]
pub struct ConsumerConfig {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_GROUP",
        default_value = "trailhouse-consumer"
    )]
    pub group: String,
    /// Static membership id for rolling deploys (e.g. the pod name).
    #[arg(long, env = "TRAILHOUSE_CONSUMER_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Address of the health and metrics endpoints.
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_LISTEN",
        default_value = "127.0.0.1:8082"
    )]
    pub listen: std::net::SocketAddr,
    /// A batch is sealed at this many rows.
    #[arg(long, env = "TRAILHOUSE_CONSUMER_BATCH_ROWS", default_value = "50000")]
    pub batch_rows: NonZeroUsize,
    /// A batch is sealed at this many bytes of encoded rows (RowBinary).
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_BATCH_BYTES",
        default_value = "33554432"
    )]
    pub batch_bytes: NonZeroUsize,
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_BATCH_AGE_MS",
        default_value_t = 1_000
    )]
    pub batch_age_ms: u64,
    /// Per-attempt insert timeout.
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_INSERT_TIMEOUT_SECS",
        default_value_t = 30
    )]
    pub insert_timeout_secs: u64,
    /// How long a batch is retried before the consumer gives up and exits
    /// (uncommitted, so nothing is lost). Keep it well inside the table's
    /// deduplication window.
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_RETRY_HORIZON_SECS",
        default_value_t = 300
    )]
    pub retry_horizon_secs: u64,
    /// Most table partitions one insert may touch; a batch over it is split
    /// by partition (keep it at or under the server's
    /// `max_partitions_per_insert_block`). Matters for the org-day layout,
    /// which the consumer reads from the migrations table at startup.
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_MAX_PARTITIONS_PER_INSERT",
        default_value = "100"
    )]
    pub max_partitions_per_insert: NonZeroUsize,
    /// How long the drain on shutdown (flush open batches, commit) may take.
    /// Past it the consumer exits without committing what is still open;
    /// those messages are read again by the next owner of the partitions.
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_SHUTDOWN_TIMEOUT_SECS",
        default_value_t = 30
    )]
    pub shutdown_timeout_secs: u64,
    /// Inserts in flight at once (across partitions, in offset order per partition).
    #[arg(long, env = "TRAILHOUSE_CONSUMER_MAX_IN_FLIGHT", default_value = "2")]
    pub max_in_flight: NonZeroUsize,
    /// Dead-letter topic (default: `<topic>.dlq`).
    #[arg(long, env = "TRAILHOUSE_CONSUMER_DLQ_TOPIC")]
    pub dlq_topic: Option<String>,
    /// Messages over which the poison ratio is measured.
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_POISON_WINDOW",
        default_value = "1000"
    )]
    pub poison_window: NonZeroUsize,
    /// Stop (instead of dead-lettering) when more than this share of the
    /// window is poison.
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_POISON_MAX_RATIO",
        default_value_t = 0.1,
        value_parser = ratio
    )]
    pub poison_max_ratio: f64,
    /// Stop when this many poison messages come in a row.
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_POISON_MAX_CONSECUTIVE",
        default_value_t = 100
    )]
    pub poison_max_consecutive: usize,
    /// While inserts are behind, the consumer first stops taking messages
    /// (librdkafka keeps what it fetched, up to `prefetch_kbytes`, then stops
    /// fetching); past this delay it pauses its partitions, which drops
    /// the prefetched messages but keeps rebalances served. See
    /// `backpressure`.
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_PAUSE_AFTER_MS",
        default_value_t = 1000
    )]
    pub pause_after_ms: u64,
    /// Report not-ready after being paused (backpressure) this long.
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_PAUSED_NOT_READY_SECS",
        default_value_t = 60
    )]
    pub paused_not_ready_secs: u64,
    /// Report not-ready once no Kafka broker has been reachable this long
    /// (the consumer keeps retrying, and is ready again at once when one is).
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_BROKER_NOT_READY_SECS",
        default_value_t = 30
    )]
    pub broker_not_ready_secs: u64,
    /// The most a fetch brings of one partition (`max.partition.fetch.bytes`).
    /// Kafka's default of 1 MiB makes a consumer that is behind pay one
    /// broker round trip per ~1 MiB; 4 MiB was 3× the throughput of 1 MiB on
    /// the local broker (docs/benchmarks.md). What is fetched ahead stays
    /// bounded by the prefetch queue either way.
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_FETCH_PARTITION_BYTES",
        default_value = "4194304"
    )]
    pub fetch_partition_bytes: NonZeroUsize,
    /// The most librdkafka fetches ahead of the consumer, in KiB
    /// (`queued.max.messages.kbytes`): read-ahead that waits while inserts
    /// are behind. The decompressed message sets behind it are several times
    /// this, the largest part of the consumer's memory after its batches;
    /// 4 MiB instead of 16 cut peak RSS by 25 MiB at the same throughput
    /// (docs/benchmarks.md).
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_PREFETCH_KBYTES",
        default_value = "4096"
    )]
    pub prefetch_kbytes: NonZeroUsize,
    /// Group session timeout: how long a silent member keeps its partitions.
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_SESSION_TIMEOUT_MS",
        default_value_t = 45_000
    )]
    pub session_timeout_ms: u64,
    /// Test hook: abort the process at the N-th offset commit, after its
    /// batch was inserted and before the commit is sent (the Kafka adapter
    /// applies it; the pipeline knows nothing of it).
    #[arg(long, env = "TRAILHOUSE_CONSUMER_TEST_CRASH_AFTER_INSERT", hide = true)]
    pub test_crash_after_insert: Option<u64>,
}

impl ConsumerConfig {
    pub fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_rows: self.batch_rows.get(),
            max_bytes: self.batch_bytes.get(),
            max_age: Duration::from_millis(self.batch_age_ms),
        }
    }

    /// What the pipeline needs of the configuration.
    pub fn pipeline(&self) -> PipelineSettings {
        PipelineSettings {
            topic: self.kafka.topic.clone(),
            limits: self.limits(),
            horizon: Duration::from_secs(self.retry_horizon_secs),
            max_in_flight: self.max_in_flight,
            poison: PoisonGuard::new(
                self.poison_window.get(),
                self.poison_max_ratio,
                self.poison_max_consecutive,
            ),
        }
    }

    /// The dead-letter topic.
    pub fn dlq_topic(&self) -> String {
        self.dlq_topic
            .clone()
            .unwrap_or_else(|| format!("{}.dlq", self.kafka.topic))
    }

    /// Rules that no single value's parser can check: the connection
    /// settings' combinations (SASL needs its credentials, the database
    /// name is an identifier).
    pub fn validate(&self) -> Result<(), Error> {
        self.kafka
            .validate()
            .map_err(|e| Error::Config(e.to_string()))?;
        self.clickhouse
            .validate()
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(())
    }
}

/// A share between 0 and 1.
fn ratio(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s} is not within 0..1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        config: ConsumerConfig,
    }

    fn parse(args: &[&str]) -> Result<ConsumerConfig, String> {
        Cli::try_parse_from(std::iter::once("consumer").chain(args.iter().copied()))
            .map(|c| c.config)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_parse_and_validate() {
        let c = parse(&[]).expect("defaults");
        assert_eq!(c.batch_rows.get(), 50_000);
        assert_eq!(c.batch_bytes.get(), 32 * 1024 * 1024);
        assert_eq!(c.max_in_flight.get(), 2);
        assert_eq!(
            c.fetch_partition_bytes.get(),
            crate::kafka::DEFAULT_FETCH_PARTITION_BYTES
        );
        assert_eq!(
            c.prefetch_kbytes.get(),
            crate::kafka::DEFAULT_PREFETCH_KBYTES
        );
        assert_eq!(
            c.max_partitions_per_insert.get(),
            crate::writer::MAX_PARTITIONS_PER_INSERT
        );
        assert_eq!(c.dlq_topic(), "trailhouse.events.dlq");
        c.validate().expect("valid");
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        let cases: &[(&[&str], &str)] = &[
            (&["--batch-rows", "0"], "--batch-rows"),
            (&["--batch-bytes=-1"], "-1"),
            (&["--max-in-flight", "0"], "--max-in-flight"),
            (
                &["--max-partitions-per-insert", "0"],
                "--max-partitions-per-insert",
            ),
            (&["--poison-max-ratio", "1.5"], "1.5"),
            (&["--poison-max-ratio", "lots"], "lots"),
            (
                &["--kafka-security-protocol", "carrier-pigeon"],
                "carrier-pigeon",
            ),
            (&["--clickhouse-compression", "brotli"], "brotli"),
        ];
        for (args, named) in cases {
            let e = parse(args).expect_err(&format!("{args:?} must be refused"));
            assert!(e.contains(named), "{args:?}: {e}");
        }
    }

    #[test]
    fn cross_field_rules() {
        let c = parse(&["--kafka-security-protocol", "sasl_ssl"]).expect("parses");
        assert!(c.validate().is_err(), "SASL without credentials");
        let c = parse(&["--clickhouse-database", "a;b"]).expect("parses");
        assert!(c.validate().is_err(), "database name");
    }
}
