//! The streamer's typed configuration (clap: a bad value is a CLI error
//! naming it).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use trailhouse_common::clickhouse::ClickHouseArgs;
use trailhouse_common::kafka::KafkaArgs;
use trailhouse_query_api::access::RolePermissions;
use trailhouse_query_api::config::JwtArgs;

use crate::spec::Allow;
use crate::worker::Pace;

/// Role → permission grants of the Streams API by default.
pub const DEFAULT_ROLE_PERMISSIONS: &str = "owner:manageStreams,admin:manageStreams";

/// Configuration of the streamer.
#[derive(Debug, Clone, Args)]
pub struct StreamerConfig {
    /// Address of the Streams API, health and metrics.
    #[arg(
        long,
        env = "TRAILHOUSE_STREAMER_LISTEN",
        default_value = "127.0.0.1:8084"
    )]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    #[command(flatten)]
    pub jwt: JwtArgs,
    /// Role → permission grants, `role:permission` pairs separated by commas.
    #[arg(
        long,
        env = "TRAILHOUSE_STREAMER_ROLE_PERMISSIONS",
        default_value = DEFAULT_ROLE_PERMISSIONS,
        value_parser = RolePermissions::parse
    )]
    pub role_permissions: RolePermissions,
    /// The streamer's consumer group (one per deployment: it reads the topic once).
    #[arg(
        long,
        env = "TRAILHOUSE_STREAMER_GROUP",
        default_value = "trailhouse-streamer"
    )]
    pub group: String,
    /// The consumer's group: its committed offsets say what is in ClickHouse,
    /// so how far a stream may catch up from there.
    #[arg(
        long,
        env = "TRAILHOUSE_STREAMER_CONSUMER_GROUP",
        default_value = "trailhouse-consumer"
    )]
    pub consumer_group: String,
    /// Live events one stream may hold before it continues from ClickHouse instead.
    #[arg(
        long,
        env = "TRAILHOUSE_STREAMER_INBOX_EVENTS",
        default_value_t = 10_000
    )]
    pub inbox_events: usize,
    /// Reads of stored events (streams catching up) in flight at once.
    #[arg(long, env = "TRAILHOUSE_STREAMER_HISTORY_READS", default_value_t = 4)]
    pub history_reads: usize,
    /// How often stream definitions are read, in milliseconds.
    #[arg(long, env = "TRAILHOUSE_STREAMER_REFRESH_MS", default_value_t = 2000)]
    pub refresh_ms: u64,
    /// How often statuses are written and offsets committed, in milliseconds.
    #[arg(long, env = "TRAILHOUSE_STREAMER_FLUSH_MS", default_value_t = 1000)]
    pub flush_ms: u64,
    /// The first retry delay of a failed delivery, in milliseconds (it doubles).
    #[arg(
        long,
        env = "TRAILHOUSE_STREAMER_RETRY_FIRST_MS",
        default_value_t = 200
    )]
    pub retry_first_ms: u64,
    /// The longest retry delay, in seconds.
    #[arg(long, env = "TRAILHOUSE_STREAMER_RETRY_MAX_SECS", default_value_t = 30)]
    pub retry_max_secs: u64,
    /// Accept `http://` destinations (development only).
    #[arg(long, env = "TRAILHOUSE_STREAMER_ALLOW_HTTP", default_value_t = false)]
    pub allow_http: bool,
    /// Accept loopback and private addresses as destinations (development only).
    #[arg(
        long,
        env = "TRAILHOUSE_STREAMER_ALLOW_PRIVATE",
        default_value_t = false
    )]
    pub allow_private: bool,
    /// Accept `file://` object stores (development and tests).
    #[arg(
        long,
        env = "TRAILHOUSE_STREAMER_ALLOW_LOCAL_FILES",
        default_value_t = false
    )]
    pub allow_local_files: bool,
    /// Static group membership id (e.g. the pod name of a StatefulSet): a
    /// restarted member takes its partitions back without a rebalance.
    #[arg(long, env = "TRAILHOUSE_STREAMER_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Kafka session timeout of the streamer's group member, in milliseconds:
    /// how long a member that died keeps its partitions.
    #[arg(
        long,
        env = "TRAILHOUSE_STREAMER_SESSION_TIMEOUT_MS",
        default_value_t = 45_000
    )]
    pub session_timeout_ms: u32,
    /// Cloud object store URL prefixes streams may write under, comma
    /// separated (e.g. `s3://audit-exports/,gs://audit-exports/`); the
    /// streamer writes with its own cloud identity. Empty: none.
    #[arg(
        long,
        env = "TRAILHOUSE_STREAMER_OBJECT_STORE_PREFIXES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub object_store_prefixes: Vec<String>,
    /// Seconds to drain on shutdown.
    #[arg(
        long,
        env = "TRAILHOUSE_STREAMER_SHUTDOWN_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub shutdown_timeout_secs: u64,
}

impl StreamerConfig {
    pub fn allow(&self) -> Allow {
        Allow {
            http: self.allow_http,
            private: self.allow_private,
            local_files: self.allow_local_files,
            object_prefixes: self
                .object_store_prefixes
                .iter()
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
        }
    }

    pub fn pace(&self) -> Pace {
        Pace {
            first_delay: Duration::from_millis(self.retry_first_ms.max(1)),
            max_delay: Duration::from_secs(self.retry_max_secs.max(1)),
            ..Pace::default()
        }
    }
}
