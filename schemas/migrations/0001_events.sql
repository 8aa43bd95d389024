-- The audit events table. A template: its dollar-brace placeholders are filled by
-- the layout and topology chosen at migration time (see schemas/src/layout.rs
-- and docs/adr/0003-storage-layout.md).
--
-- ORDER BY (org_id, created_at, id): an org's events for a time range are
-- contiguous, so the primary key prunes to one org whatever the partitioning,
-- and every API reads newest-first (or oldest-first) in key order.
-- PARTITION BY: the fleet layout (default) partitions by (retention class,
-- day), so a day holds a handful of partitions whatever the number of orgs
-- and expiry drops whole partitions; the org-day layout partitions by
-- (org_id, day) for deployments with few tenants.
-- The TTL is a safety net behind the retention job (TTL merges are lazy);
-- with ttl_only_drop_parts it only ever drops whole parts.
-- Skip indexes serve the query API's filters; each one was chosen by the
-- granules it skips (bench `layouts`, ADR 0003). The path index is on
-- lowerUTF8(request_path) because path search ignores case.
-- The deduplication window lets the consumer retry an insert with the same
-- insert_deduplication_token without duplicating rows.
CREATE TABLE IF NOT EXISTS ${TABLE}${ON_CLUSTER}
(
    org_id String CODEC(ZSTD(1)),
    created_at DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    id UUID CODEC(ZSTD(1)),
    environment_id LowCardinality(String),
    workspace_id String CODEC(ZSTD(1)),
    workspace_name String CODEC(ZSTD(1)),
    actor_type LowCardinality(String),
    actor_id String CODEC(ZSTD(1)),
    actor_email String CODEC(ZSTD(1)),
    actor_name String CODEC(ZSTD(1)),
    auth_type LowCardinality(String),
    auth_client_id String CODEC(ZSTD(1)),
    auth_sub String CODEC(ZSTD(1)),
    auth_app_client_id String CODEC(ZSTD(1)),
    auth_account_id String CODEC(ZSTD(1)),
    source LowCardinality(String),
    action_type LowCardinality(String),
    action_description String CODEC(ZSTD(1)),
    resource_type LowCardinality(String),
    resource_id String CODEC(ZSTD(1)),
    resource_name String CODEC(ZSTD(1)),
    request_method LowCardinality(String),
    request_url String CODEC(ZSTD(3)),
    request_path String CODEC(ZSTD(3)),
    request_status Nullable(UInt16),
    request_duration_ms Nullable(Float64) CODEC(Gorilla, ZSTD(1)),
    request_ip String CODEC(ZSTD(1)),
    request_user_agent String CODEC(ZSTD(3)),
    request_query String CODEC(ZSTD(3)),
    request_path_params Map(String, String) CODEC(ZSTD(3)),
    request_headers Map(String, String) CODEC(ZSTD(3)),
    request_body String CODEC(ZSTD(3)),
    metadata Map(String, String) CODEC(ZSTD(3)),
    received_at DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    kafka_partition Int32 CODEC(T64, ZSTD(1)),
    kafka_offset Int64 CODEC(Delta, ZSTD(1)),
    retention_days UInt16 DEFAULT 90,
    INDEX idx_path lowerUTF8(request_path) TYPE ngrambf_v1(3, 16384, 3, 0) GRANULARITY 1,
    INDEX idx_actor_id actor_id TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_actor_email actor_email TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_resource_id resource_id TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_request_ip request_ip TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ${ENGINE:MergeTree}
PARTITION BY ${PARTITION_BY}
ORDER BY (org_id, created_at, id)
TTL toDateTime(created_at) + toIntervalDay(retention_days)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1, ${DEDUP_WINDOW} = 10000
${DISTRIBUTED:cityHash64(org_id)}
