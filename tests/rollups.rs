//! The rollups held to the events table: every group of the hourly and
//! daily counts and every day of the distinct actors, computed again from the raw rows
//! (each event once, copies collapsed), compared in one query each.

use clickhouse::Client;

/// How the rollups compare with the raw table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RollupCheck {
    /// Events in the hourly rollup, and events (distinct) in the raw table.
    pub rollup_events: u64,
    pub raw_events: u64,
    /// Groups (org, hour, action, status class, auth type, source) whose
    /// counts differ, on either side.
    pub mismatched_groups: u64,
    /// The same by day, in the daily rollup.
    pub mismatched_daily_groups: u64,
    /// Org-days whose distinct actors differ.
    pub mismatched_actor_days: u64,
    /// Rows marked as copies in the raw table.
    pub copies: u64,
}

impl RollupCheck {
    pub fn exact(&self) -> bool {
        self.rollup_events == self.raw_events
            && self.mismatched_groups == 0
            && self.mismatched_daily_groups == 0
            && self.mismatched_actor_days == 0
    }
}

const STATUS_CLASS: &str = "if(isNull(request_status), '', concat(toString(intDiv(assumeNotNull(request_status), 100)), 'xx'))";

/// Compares the rollups of the client's database with its events table.
pub async fn check(client: &Client) -> clickhouse::error::Result<RollupCheck> {
    let (rollup_events, raw_events, copies): (u64, u64, u64) = client
        .query(
            "SELECT toUInt64(ifNull((SELECT sum(events) FROM events_hourly), 0)), \
             toUInt64(ifNull((SELECT uniqExact(org_id, created_at, id) FROM events), 0)), \
             toUInt64(ifNull((SELECT count() FROM events WHERE is_copy), 0))",
        )
        .fetch_one()
        .await?;
    let groups = |table: &str, time: &str, of: &str| {
        format!(
            "SELECT count() FROM ( \
               SELECT org_id, {time}, action_type, status_class, auth_type, source, sum(events) AS n \
               FROM {table} GROUP BY org_id, {time}, action_type, status_class, auth_type, source \
             ) AS r FULL OUTER JOIN ( \
               SELECT org_id, {of}(created_at) AS {time}, action_type, {STATUS_CLASS} AS status_class, \
                      auth_type, source, uniqExact(created_at, id) AS n \
               FROM events GROUP BY org_id, {time}, action_type, status_class, auth_type, source \
             ) AS e USING (org_id, {time}, action_type, status_class, auth_type, source) \
             WHERE r.n != e.n SETTINGS join_use_nulls = 0"
        )
    };
    let mismatched_groups: u64 = client
        .query(&groups("events_hourly", "hour", "toStartOfHour"))
        .fetch_one()
        .await?;
    let mismatched_daily_groups: u64 = client
        .query(&groups("events_daily", "day", "toDate"))
        .fetch_one()
        .await?;
    let mismatched_actor_days: u64 = client
        .query(
            "SELECT count() FROM ( \
               SELECT org_id, day, uniqExactMerge(actors) AS n FROM events_daily_actors GROUP BY org_id, day \
             ) AS r FULL OUTER JOIN ( \
               SELECT org_id, toDate(created_at) AS day, uniqExact(actor_id) AS n \
               FROM events WHERE actor_id != '' GROUP BY org_id, day \
             ) AS e USING (org_id, day) WHERE r.n != e.n SETTINGS join_use_nulls = 0",
        )
        .fetch_one()
        .await?;
    Ok(RollupCheck {
        rollup_events,
        raw_events,
        mismatched_groups,
        mismatched_daily_groups,
        mismatched_actor_days,
        copies,
    })
}

/// [`check`] until the rollups agree or `timeout` passes (the last check).
/// A block is visible in `events` a moment before the same INSERT has
/// written it to the rollups: ClickHouse writes the table's part, then each
/// view's, so a reader racing a running insert sees them apart.
pub async fn settled(
    client: &Client,
    timeout: std::time::Duration,
) -> clickhouse::error::Result<RollupCheck> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let r = check(client).await?;
        if r.exact() || std::time::Instant::now() >= deadline {
            return Ok(r);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
