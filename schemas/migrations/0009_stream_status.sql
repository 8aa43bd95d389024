-- Each stream's delivery state, written by the streamer that delivers it
-- when it changes (at most every few seconds): where the stream is in each
-- Kafka partition, its counts, last delivery and last error, as JSON. The
-- row inserted last is the state; merges keep only that one.
CREATE TABLE IF NOT EXISTS ${TABLE}${ON_CLUSTER}
(
    org_id String,
    stream_id String,
    version UInt64,
    status String CODEC(ZSTD(1)),
    written_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ${ENGINE:ReplacingMergeTree}
ORDER BY (org_id, stream_id)
${DISTRIBUTED:cityHash64(org_id)}
