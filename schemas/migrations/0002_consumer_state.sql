-- The consumer's batch ranges, one row per batch, written before the batch
-- is inserted into `events`. After a crash or a rebalance the next owner of a
-- partition reads the ranges at or after the offset it resumes from and
-- re-forms exactly those batches, with the same deduplication tokens, so an
-- insert that succeeded before the crash is dropped by ClickHouse instead of
-- being repeated. Old ranges expire; only the last few minutes matter.
-- A template like 0001 (placeholders filled by the topology).
CREATE TABLE IF NOT EXISTS ${TABLE}${ON_CLUSTER}
(
    consumer_group String,
    topic String,
    partition Int32,
    first_offset Int64,
    last_offset Int64,
    written_at DateTime DEFAULT now()
)
ENGINE = ${ENGINE:ReplacingMergeTree}
ORDER BY (consumer_group, topic, partition, first_offset)
TTL written_at + INTERVAL 7 DAY
${DISTRIBUTED:cityHash64(consumer_group, topic, partition)}
