-- A min/max index of the Kafka offset, so that a stream catching up from
-- ClickHouse (the streamer's replay) reads an org's events from an offset
-- on without scanning all of them: an org's offsets grow with time, like
-- the sort key. Parts written before this migration have no index and
-- are read whole by such reads until they merge.
ALTER TABLE ${TABLE}${ON_CLUSTER} ADD INDEX IF NOT EXISTS idx_kafka_offset kafka_offset TYPE minmax GRANULARITY 1
