-- Distinct actors per org and day (exact: uniqExact states, merged by
-- uniqExactMerge), kept the way migration 5 keeps the hourly counts: a
-- materialized view from the events table, deduplicated with it, the same
-- partitions, a one-time backfill with the consumers stopped.
SELECT throwIf((SELECT count() FROM consumer_state WHERE written_at > now() - 60) > 0 AND (SELECT count() FROM events) > 0, 'stop the consumers before this migration: it backfills the rollups from the events table') FORMAT Null;
CREATE TABLE IF NOT EXISTS ${TABLE}${ON_CLUSTER}
(
    org_id String CODEC(ZSTD(1)) COMMENT 'The organisation (tenant).',
    day Date COMMENT 'The UTC day of the events'' created_at.',
    retention_days UInt16 COMMENT 'The events'' retention class (the rows go with the events'' partitions).',
    actors AggregateFunction(uniqExact, String) COMMENT 'The distinct non-empty actor_id values of the day: read with uniqExactMerge(actors) and GROUP BY.'
)
ENGINE = ${ENGINE:AggregatingMergeTree}
PARTITION BY ${PARTITION_BY:day}
ORDER BY (org_id, day, retention_days)
TTL day + toIntervalDay(retention_days + 1)
SETTINGS index_granularity = 1024, ttl_only_drop_parts = 1, ${DEDUP_WINDOW} = 10000
${DISTRIBUTED:cityHash64(org_id)};
CREATE MATERIALIZED VIEW IF NOT EXISTS ${DATA:events_daily_actors_mv}${ON_CLUSTER} TO ${DATA:events_daily_actors} AS
SELECT org_id, toDate(created_at) AS day, retention_days, uniqExactState(actor_id) AS actors
FROM ${DATA:events}
WHERE actor_id != ''
GROUP BY org_id, day, retention_days;
TRUNCATE TABLE IF EXISTS ${DATA:events_daily_actors}${ON_CLUSTER};
INSERT INTO events_daily_actors
-- Any number of partitions in one block; no deduplication (a rerun after
-- the truncate inserts the same blocks again, and must).
SETTINGS max_partitions_per_insert_block = 0, insert_deduplicate = 0
SELECT org_id, toDate(created_at) AS day, retention_days, uniqExactState(actor_id) AS actors
FROM events
WHERE actor_id != ''
GROUP BY org_id, day, retention_days
SETTINGS distributed_foreground_insert = 1, max_partitions_per_insert_block = 0
