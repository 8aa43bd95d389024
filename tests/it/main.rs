//! Integration tests against the real local Kafka and ClickHouse
//! (`dev/infra.sh start`). One binary; every test has its own topic, group and database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dataset;
mod faults;
mod ingest;
mod pipeline;
mod query;
mod rowbinary;
mod storage;
