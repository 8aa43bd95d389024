-- Marks the stored copies of a retried event. A producer that retries a
-- publish can put the same event (same org_id, created_at and id) into Kafka
-- twice; the consumer stores both and the query API collapses them when it
-- reads. The consumer marks every row whose event an earlier Kafka offset of
-- the same partition already holds (looked up in ClickHouse and in the
-- batches still being inserted), so the rollups (migrations 5 to 7) can skip
-- copies as rows arrive. The mark is a pure function of the topic's content:
-- a replayed batch gets the same marks. Rows stored before this migration
-- read as not copies (see docs/analytics.md, "Rollups").
ALTER TABLE ${TABLE}${ON_CLUSTER}
    ADD COLUMN IF NOT EXISTS is_copy Bool DEFAULT false COMMENT 'True for a second (or later) stored copy of an event a producer retried: the same org_id, created_at and id at a later Kafka offset. Filter on NOT is_copy (or count distinct ids) to count events.' AFTER retention_days
