-- Event counts per org and day, by the hourly rollup's dimensions: what
-- GET /v1/stats reads for the whole days of a range in day buckets (a day
-- of the hourly rollup is 24 rows per key, and a busy org has many keys an
-- hour). Kept as migration 5 keeps the hourly counts: a materialized view
-- from the events table, copies skipped, deduplicated with the consumer's
-- inserts, the same partitions, a one-time backfill with the consumers
-- stopped.
SELECT throwIf((SELECT count() FROM consumer_state WHERE written_at > now() - 60) > 0 AND (SELECT count() FROM events) > 0, 'stop the consumers before this migration: it backfills the rollups from the events table') FORMAT Null;
CREATE TABLE IF NOT EXISTS ${TABLE}${ON_CLUSTER}
(
    org_id String CODEC(ZSTD(1)) COMMENT 'The organisation (tenant) counted.',
    day Date COMMENT 'The UTC day of the events'' created_at.',
    action_type LowCardinality(String) COMMENT 'The events'' action_type.',
    status_class LowCardinality(String) COMMENT 'The HTTP status class (2xx, 3xx, 4xx, 5xx); empty for events without a status.',
    auth_type LowCardinality(String) COMMENT 'The events'' auth_type.',
    source LowCardinality(String) COMMENT 'The events'' source.',
    retention_days UInt16 COMMENT 'The events'' retention class (the rows go with the events'' partitions).',
    events SimpleAggregateFunction(sum, UInt64) COMMENT 'Events counted (copies of a retried event once): always read as sum(events) with GROUP BY, rows of one key are summed only by merges.'
)
ENGINE = ${ENGINE:AggregatingMergeTree}
PARTITION BY ${PARTITION_BY:day}
ORDER BY (org_id, day, action_type, status_class, auth_type, source, retention_days)
TTL day + toIntervalDay(retention_days + 1)
SETTINGS index_granularity = 1024, ttl_only_drop_parts = 1, ${DEDUP_WINDOW} = 10000
${DISTRIBUTED:cityHash64(org_id)};
CREATE MATERIALIZED VIEW IF NOT EXISTS ${DATA:events_daily_mv}${ON_CLUSTER} TO ${DATA:events_daily} AS
SELECT
    org_id,
    toDate(created_at) AS day,
    action_type,
    if(isNull(request_status), '', concat(toString(intDiv(assumeNotNull(request_status), 100)), 'xx')) AS status_class,
    auth_type,
    source,
    retention_days,
    count() AS events
FROM ${DATA:events}
WHERE NOT is_copy
GROUP BY org_id, day, action_type, status_class, auth_type, source, retention_days;
TRUNCATE TABLE IF EXISTS ${DATA:events_daily}${ON_CLUSTER};
INSERT INTO events_daily
-- Any number of partitions in one block; no deduplication (a rerun after
-- the truncate inserts the same blocks again, and must).
SETTINGS max_partitions_per_insert_block = 0, insert_deduplicate = 0
SELECT
    org_id,
    toDate(created_at) AS day,
    action_type,
    if(isNull(request_status), '', concat(toString(intDiv(assumeNotNull(request_status), 100)), 'xx')) AS status_class,
    auth_type,
    source,
    retention_days,
    uniqExact(created_at, id) AS events
FROM events
GROUP BY org_id, day, action_type, status_class, auth_type, source, retention_days
SETTINGS distributed_foreground_insert = 1, max_partitions_per_insert_block = 0
