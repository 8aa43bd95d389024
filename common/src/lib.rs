//! What every Trailhouse service shares: telemetry, health and metrics
//! endpoints, shutdown signals, Kafka and ClickHouse connection settings,
//! the HTTP edge every service shares, per-org rate limits, and applying
//! the ClickHouse migrations.

pub mod access;
pub mod clickhouse;
pub mod health;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod ratelimit;
pub mod secret;
pub mod serve;
pub mod shutdown;
pub mod telemetry;

pub use secret::Secret;
