-- The audit events table.
-- Partitioned by day so that retention drops whole partitions; sorted by
-- (org_id, created_at, id) so that an org's events for a time range are
-- contiguous and every API reads newest-first (or oldest-first) in key order.
-- The deduplication window lets the consumer retry an insert with the same
-- insert_deduplication_token without duplicating rows.
CREATE TABLE IF NOT EXISTS events
(
    org_id String,
    created_at DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    id UUID,
    environment_id LowCardinality(String),
    workspace_id String,
    workspace_name String,
    actor_type LowCardinality(String),
    actor_id String,
    actor_email String,
    actor_name String,
    auth_type LowCardinality(String),
    auth_client_id String,
    auth_sub String,
    auth_app_client_id String,
    auth_account_id String,
    source LowCardinality(String),
    action_type LowCardinality(String),
    action_description String,
    resource_type LowCardinality(String),
    resource_id String,
    resource_name String,
    request_method LowCardinality(String),
    request_url String CODEC(ZSTD(3)),
    request_path String CODEC(ZSTD(3)),
    request_status Nullable(UInt16),
    request_duration_ms Nullable(Float64),
    request_ip String,
    request_user_agent String CODEC(ZSTD(3)),
    request_query String CODEC(ZSTD(3)),
    request_path_params Map(String, String) CODEC(ZSTD(3)),
    request_headers Map(String, String) CODEC(ZSTD(3)),
    request_body String CODEC(ZSTD(3)),
    metadata Map(String, String) CODEC(ZSTD(3)),
    received_at DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    kafka_partition Int32,
    kafka_offset Int64
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(created_at)
ORDER BY (org_id, created_at, id)
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 10000
