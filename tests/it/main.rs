//! Integration tests against the real local Kafka and ClickHouse
//! (`dev/infra.sh start`). One binary; every test has its own topic, group and database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod analytics;
mod dataset;
mod dedup;
mod demo;
mod faults;
mod ingest;
mod ingest_edges;
mod metrics;
mod pipeline;
mod probes;
mod prometheus;
mod query;
mod redaction;
mod rollups;
mod rowbinary;
mod storage;
mod streams;
mod tenant_sql;
mod traces;
