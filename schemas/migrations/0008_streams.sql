-- Stream definitions (see the streamer), one row per version of a stream:
-- the latest version of each (org_id, id) is the stream, a `deleted` one
-- is gone. Written by the streamer's API, read by every streamer replica
-- every few seconds; a few rows per tenant. `spec` is the stream as JSON,
-- including its signing secrets and credential: grant this table to the
-- streamer only.
CREATE TABLE IF NOT EXISTS ${TABLE}${ON_CLUSTER}
(
    org_id String,
    id String,
    version UInt64,
    deleted Bool DEFAULT false,
    spec String CODEC(ZSTD(1)),
    written_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ${ENGINE:ReplacingMergeTree}
ORDER BY (org_id, id, version)
${DISTRIBUTED:cityHash64(org_id)}
