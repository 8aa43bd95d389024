-- Event counts per org and hour, by action, status class, auth type and
-- source: what GET /v1/stats reads when a request's filter and grouping
-- allow it, and what analysts read for dashboards.
--
-- A materialized view adds the counts of every block inserted into events,
-- copies skipped (is_copy, migration 4). The consumer inserts with
-- deduplicate_blocks_in_dependent_materialized_views = 1, so a replayed
-- batch that ClickHouse drops by its insert_deduplication_token is dropped
-- from the view's table too (it has a deduplication window of its own).
-- Partitioned like the events table on the same values, so a retention drop
-- or an org-day drop of an events partition drops the same partition id
-- here. AggregatingMergeTree: rows of one key are summed by merges, so a
-- reader always sums (sum(events) ... GROUP BY). Granules of 1,024 rows:
-- an org's rows of one partition are a few hundred, and a read of one org
-- reads whole granules of every partition of its range.
--
-- Creating the view on a table that holds events backfills the counts of
-- the rows already there, once, each event once (copies stored before
-- migration 4 are not marked; a copy shares its event's hour and values, so
-- distinct (created_at, id) per group counts it once; the backfill holds
-- every key in memory, about 40 bytes an event). The consumers must be
-- stopped meanwhile: an insert during the backfill would be counted twice
-- or not at all. The first statement refuses to run while a consumer
-- recorded a batch in the last minute and the events table is not empty.
SELECT throwIf((SELECT count() FROM consumer_state WHERE written_at > now() - 60) > 0 AND (SELECT count() FROM events) > 0, 'stop the consumers before this migration: it backfills the rollups from the events table') FORMAT Null;
CREATE TABLE IF NOT EXISTS ${TABLE}${ON_CLUSTER}
(
    org_id String CODEC(ZSTD(1)) COMMENT 'The organisation (tenant) counted.',
    hour DateTime('UTC') CODEC(Delta, ZSTD(1)) COMMENT 'The start of the hour (UTC) of the events'' created_at.',
    action_type LowCardinality(String) COMMENT 'The events'' action_type.',
    status_class LowCardinality(String) COMMENT 'The HTTP status class (2xx, 3xx, 4xx, 5xx); empty for events without a status.',
    auth_type LowCardinality(String) COMMENT 'The events'' auth_type.',
    source LowCardinality(String) COMMENT 'The events'' source.',
    retention_days UInt16 COMMENT 'The events'' retention class (the rows go with the events'' partitions).',
    events SimpleAggregateFunction(sum, UInt64) COMMENT 'Events counted (copies of a retried event once): always read as sum(events) with GROUP BY, rows of one key are summed only by merges.'
)
ENGINE = ${ENGINE:AggregatingMergeTree}
PARTITION BY ${PARTITION_BY:hour}
ORDER BY (org_id, hour, action_type, status_class, auth_type, source, retention_days)
TTL hour + toIntervalDay(retention_days) + toIntervalHour(1)
SETTINGS index_granularity = 1024, ttl_only_drop_parts = 1, ${DEDUP_WINDOW} = 10000
${DISTRIBUTED:cityHash64(org_id)};
CREATE MATERIALIZED VIEW IF NOT EXISTS ${DATA:events_hourly_mv}${ON_CLUSTER} TO ${DATA:events_hourly} AS
SELECT
    org_id,
    toStartOfHour(created_at) AS hour,
    action_type,
    if(isNull(request_status), '', concat(toString(intDiv(assumeNotNull(request_status), 100)), 'xx')) AS status_class,
    auth_type,
    source,
    retention_days,
    count() AS events
FROM ${DATA:events}
WHERE NOT is_copy
GROUP BY org_id, hour, action_type, status_class, auth_type, source, retention_days;
TRUNCATE TABLE IF EXISTS ${DATA:events_hourly}${ON_CLUSTER};
INSERT INTO events_hourly
-- Any number of partitions in one block; no deduplication (a rerun after
-- the truncate inserts the same blocks again, and must).
SETTINGS max_partitions_per_insert_block = 0, insert_deduplicate = 0
SELECT
    org_id,
    toStartOfHour(created_at) AS hour,
    action_type,
    if(isNull(request_status), '', concat(toString(intDiv(assumeNotNull(request_status), 100)), 'xx')) AS status_class,
    auth_type,
    source,
    retention_days,
    uniqExact(created_at, id) AS events
FROM events
GROUP BY org_id, hour, action_type, status_class, auth_type, source, retention_days
SETTINGS distributed_foreground_insert = 1, max_partitions_per_insert_block = 0
