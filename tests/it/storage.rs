//! Storage layouts against the real local ClickHouse: both layouts' DDL, the
//! partition-aware inserts of the org-day layout, the retention job, org
//! deletion, the cluster variant (validated by the server's parser) and the
//! skip indexes the query API's filters rely on.

use std::time::Duration;

use chrono::{NaiveDate, Utc};
use trailhouse_common::clickhouse::{migrate_to, schema_migrations_ddl, MigrateError};
use trailhouse_consumer::storage::{DeleteProgress, Storage};
use trailhouse_consumer::writer::{ClickHouseWriter, RowWriter};
use trailhouse_query_api::query::{build_page, Cond, Field, Filter, Order, Page, Start};
use trailhouse_schemas::layout::{ClusterName, Layout, Target, Topology};
use trailhouse_schemas::migrations::MIGRATIONS;
use trailhouse_schemas::rowbinary::EncodedRows;
use trailhouse_schemas::EventRow;
use trailhouse_tests::TestEnv;

use crate::dataset;

fn target(layout: Layout) -> Target {
    Target {
        layout,
        topology: Topology::SingleNode,
    }
}

/// `n` rows of `org`, spread over `days` days ending today, with `retention` days.
/// `n` rows over `days` days: at the latest noon (UTC) that has passed,
/// minus a second per row, so the rows of each day stay in that day at any
/// time of day (a run just after midnight spread them over one day more).
fn rows_of(org: &str, n: usize, days: i64, retention: u16, seed: u64) -> Vec<EventRow> {
    let now = dataset::now();
    let noon = now
        .date_naive()
        .and_hms_opt(12, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or(now);
    let anchor = if noon <= now {
        noon
    } else {
        noon - chrono::Duration::days(1)
    };
    let mut rows = dataset::rows(&dataset::events(org, n, 0, seed, now));
    for (i, r) in rows.iter_mut().enumerate() {
        r.created_at =
            anchor - chrono::Duration::days(i as i64 % days) - chrono::Duration::seconds(i as i64);
        r.retention_days = retention;
    }
    rows
}

async fn count(env: &TestEnv, sql: &str) -> u64 {
    env.clickhouse
        .client()
        .query(sql)
        .fetch_one::<u64>()
        .await
        .expect(sql)
}

#[tokio::test]
async fn cluster_variant_ddl_parses_on_the_server() {
    let env = TestEnv::clickhouse_only("cluster_ddl").await;
    let client = env.clickhouse.client();
    for layout in [Layout::Fleet, Layout::OrgDay] {
        let t = Target {
            layout,
            topology: Topology::Cluster(ClusterName::new("trailhouse").expect("name")),
        };
        let mut statements = schema_migrations_ddl(&t);
        for m in MIGRATIONS {
            statements.extend(m.statements(&t));
        }
        assert!(statements
            .iter()
            .any(|s| s.contains("ENGINE = Distributed('trailhouse'")));
        assert!(statements
            .iter()
            .any(|s| s.contains("ReplicatedMergeTree(")));
        for stmt in statements {
            let formatted: String = client
                .query("SELECT formatQuery(?)")
                .bind(stmt.trim())
                .fetch_one()
                .await
                .unwrap_or_else(|e| panic!("{} does not parse: {e}\n{stmt}", t.variant()));
            // DDL runs on every node; the rollups' guard and backfill read
            // and write through the Distributed tables instead.
            let ddl = ["CREATE", "ALTER", "TRUNCATE"]
                .iter()
                .any(|k| formatted.starts_with(k));
            assert!(
                !ddl || formatted.contains("ON CLUSTER trailhouse"),
                "{formatted}"
            );
            assert!(
                ddl || formatted.starts_with("SELECT throwIf")
                    || formatted.starts_with("INSERT INTO events_"),
                "{formatted}"
            );
        }
    }
}

#[tokio::test]
async fn a_database_keeps_the_layout_it_was_migrated_to() {
    let env = TestEnv::clickhouse_for("layout_fixed", &target(Layout::OrgDay)).await;
    // Idempotent for the same target...
    let again = migrate_to(&env.clickhouse, &target(Layout::OrgDay))
        .await
        .expect("again");
    assert!(again.applied.is_empty());
    // ...refused for another.
    let err = migrate_to(&env.clickhouse, &target(Layout::Fleet))
        .await
        .unwrap_err();
    assert!(matches!(err, MigrateError::Variant { .. }), "{err}");
    let key: String = env
        .clickhouse
        .client()
        .query("SELECT partition_key FROM system.tables WHERE database = currentDatabase() AND name = 'events'")
        .fetch_one()
        .await
        .expect("partition key");
    assert_eq!(key.replace(' ', ""), "(org_id,toYYYYMMDD(created_at))");
}

#[tokio::test]
async fn org_day_inserts_are_split_under_the_partition_limit_and_deduplicated() {
    let env = TestEnv::clickhouse_for("org_day_split", &target(Layout::OrgDay)).await;
    // 40 orgs x 5 days = 200 partitions in one batch.
    let rows: Vec<EventRow> = (0..40)
        .flat_map(|o| rows_of(&format!("org{o}"), 25, 5, 90, o))
        .collect();
    let timeout = Duration::from_secs(30);
    let rows: EncodedRows = rows.iter().collect();
    // Unsplit, the server refuses the block (more than
    // max_partitions_per_insert_block = 100 partitions) and stores nothing.
    let unsplit =
        ClickHouseWriter::new(env.clickhouse.client(), timeout).with_layout(Layout::OrgDay, 1000);
    let refused = unsplit.insert(&rows, "t:0:0-999:whole").await;
    assert!(
        refused.is_err(),
        "an insert over the partition limit was accepted"
    );
    assert_eq!(count(&env, "SELECT count() FROM events").await, 0);
    // Split into inserts of at most 60 partitions; twice, as a retry would.
    let writer =
        ClickHouseWriter::new(env.clickhouse.client(), timeout).with_layout(Layout::OrgDay, 60);
    writer.insert(&rows, "t:0:0-999").await.expect("insert");
    writer.insert(&rows, "t:0:0-999").await.expect("retry");
    assert_eq!(
        count(&env, "SELECT count() FROM events").await,
        rows.len() as u64
    );
    assert_eq!(
        count(&env, "SELECT count(DISTINCT _partition_id) FROM events").await,
        200
    );
}

#[tokio::test]
async fn the_retention_job_drops_exactly_the_expired_partitions() {
    for layout in [Layout::Fleet, Layout::OrgDay] {
        let env = TestEnv::clickhouse_for(
            &format!("retention_{layout}").replace('-', "_"),
            &target(layout),
        )
        .await;
        // acme keeps 7 days, globex 30; both have 20 days of events.
        let mut rows = rows_of("acme", 400, 20, 7, 1);
        rows.extend(rows_of("globex", 400, 20, 30, 2));
        // The table's TTL would drop the expired parts too, at some merge;
        // stop it so that the job is what is tested.
        for table in [
            "events",
            "events_hourly",
            "events_daily",
            "events_daily_actors",
        ] {
            env.clickhouse
                .client()
                .query(&format!("SYSTEM STOP TTL MERGES {table}"))
                .execute()
                .await
                .expect("stop ttl merges");
        }
        env.insert_rows(&rows).await;
        assert_exact(&env, "before the retention job").await;
        let storage = Storage::open(env.clickhouse.client()).await.expect("open");
        assert_eq!(storage.target().layout, layout);
        let today = Utc::now().date_naive();
        let expired = storage.expired_partitions(today).await.expect("expired");
        let expect_gone = |r: &EventRow| {
            let day = r.created_at.date_naive();
            r.org_id == "acme" && day + chrono::Days::new(7) < today
        };
        let gone: u64 = rows.iter().filter(|r| expect_gone(r)).count() as u64;
        assert!(gone > 0);
        assert_eq!(
            expired.iter().map(|e| e.stat.rows).sum::<u64>(),
            gone,
            "{layout}"
        );
        for e in &expired {
            storage
                .drop_partition(&e.stat.partition_id)
                .await
                .expect("drop");
        }
        let left = count(&env, "SELECT count() FROM events").await;
        assert_eq!(left, rows.len() as u64 - gone, "{layout}");
        // The rollups lost the same days, no more.
        assert_exact(&env, "after the retention job").await;
        let counted = count(&env, "SELECT toUInt64(sum(events)) FROM events_hourly").await;
        assert_eq!(counted, left, "{layout}");
        let oldest_acme: NaiveDate = env
            .clickhouse
            .client()
            .query("SELECT toDate(min(created_at)) FROM events WHERE org_id = 'acme'")
            .fetch_one::<u16>()
            .await
            .map(|days| {
                NaiveDate::from_num_days_from_ce_opt(719_163 + i32::from(days)).expect("date")
            })
            .expect("oldest");
        assert!(oldest_acme + chrono::Days::new(7) >= today, "{oldest_acme}");
        // Nothing else is expired now.
        assert!(storage
            .expired_partitions(today)
            .await
            .expect("again")
            .is_empty());
    }
}

#[tokio::test]
async fn deleting_an_org_removes_all_of_its_rows_and_only_them() {
    for layout in [Layout::Fleet, Layout::OrgDay] {
        let env = TestEnv::clickhouse_for(
            &format!("delete_org_{layout}").replace('-', "_"),
            &target(layout),
        )
        .await;
        let mut rows = rows_of("acme", 3000, 10, 90, 1);
        rows.extend(rows_of("globex", 2000, 10, 90, 2));
        rows.extend(rows_of("o'brien", 100, 3, 90, 3));
        env.insert_rows(&rows).await;
        let storage = Storage::open(env.clickhouse.client()).await.expect("open");
        let mut seen = Vec::new();
        let removed = storage
            .delete_org("acme", Duration::from_secs(120), |p| seen.push(p))
            .await
            .expect("delete");
        assert_eq!(removed, 3000);
        assert_eq!(seen.first(), Some(&DeleteProgress::Found { rows: 3000 }));
        match layout {
            Layout::OrgDay => assert_eq!(
                seen.iter()
                    .filter(|p| matches!(p, DeleteProgress::PartitionDropped { .. }))
                    .count(),
                10
            ),
            Layout::Fleet => assert!(seen.contains(&DeleteProgress::MutationStarted)),
        }
        assert_eq!(
            count(&env, "SELECT count() FROM events WHERE org_id = 'acme'").await,
            0
        );
        assert_eq!(
            count(&env, "SELECT count() FROM events WHERE org_id = 'globex'").await,
            2000
        );
        // Erasure reaches the rollups: no count and no actor of acme is left.
        assert_eq!(storage.count_org_rollups("acme").await.expect("rollups"), 0);
        assert!(storage.count_org_rollups("globex").await.expect("rollups") > 0);
        assert_exact(&env, "after deleting an org").await;
        // A quote in the org id is data, not SQL.
        let removed = storage
            .delete_org("o'brien", Duration::from_secs(120), |_| {})
            .await
            .expect("delete");
        assert_eq!(removed, 100);
        assert_eq!(count(&env, "SELECT count() FROM events").await, 2000);
        // Unknown org: nothing to do.
        assert_eq!(
            storage
                .delete_org("nobody", Duration::from_secs(5), |_| {})
                .await
                .expect("noop"),
            0
        );
    }
}

#[tokio::test]
async fn the_rollups_are_filled_from_the_events_stored_before_them() {
    for layout in [Layout::Fleet, Layout::OrgDay] {
        let name =
            trailhouse_tests::unique_name("t", &format!("backfill_{layout}").replace('-', "_"));
        let url = std::env::var("TRAILHOUSE_TEST_CLICKHOUSE")
            .unwrap_or_else(|_| "http://127.0.0.1:8123".into());
        let ch = trailhouse_common::clickhouse::ClickHouseArgs::local(url, name);
        let t = target(layout);
        // A database of the version before the rollups, with 150 days of
        // events (more partitions than one insert may touch) and copies a
        // retry stored, unmarked.
        trailhouse_common::clickhouse::migrate_with(&ch, &t, &MIGRATIONS[..4])
            .await
            .expect("migrate to 4");
        let mut rows = rows_of("acme", 1500, 150, 365, 1);
        rows.extend(rows_of("globex", 300, 30, 90, 2));
        let copies: Vec<EventRow> = rows.iter().step_by(9).cloned().collect();
        rows.extend(copies);
        let client = ch.client();
        let mut insert = client
            .insert::<EventRow>("events")
            .await
            .expect("insert")
            .with_setting("max_partitions_per_insert_block", "0");
        for r in &rows {
            insert.write(r).await.expect("row");
        }
        insert.end().await.expect("insert end");
        // A consumer that recorded a batch just now: the migration refuses.
        client
            .query("INSERT INTO consumer_state (consumer_group, topic, partition, first_offset, last_offset) VALUES ('g', 't', 0, 0, 9)")
            .execute()
            .await
            .expect("record");
        let err = migrate_to(&ch, &t).await.expect_err("refused");
        assert!(err.to_string().contains("stop the consumers"), "{err}");
        client
            .query("TRUNCATE TABLE consumer_state")
            .execute()
            .await
            .expect("truncate");
        migrate_to(&ch, &t).await.expect("migrate");
        let r = trailhouse_tests::rollups::check(&client)
            .await
            .expect("rollup check");
        assert!(r.exact(), "{layout}: {r:?}");
        assert_eq!(r.raw_events, 1800, "{layout}");
    }
}

/// The rollups agree with the events table.
async fn assert_exact(env: &TestEnv, when: &str) {
    let r = trailhouse_tests::rollups::check(&env.clickhouse.client())
        .await
        .expect("rollup check");
    assert!(r.exact(), "{when}: {r:?}");
    assert!(r.raw_events > 0, "{when}: {r:?}");
}

/// Granules read after the primary key and after the skip index, from
/// `EXPLAIN indexes = 1` of the query API's own SQL.
async fn granules(env: &TestEnv, f: &Filter) -> (u64, u64) {
    let page = Page {
        order: Order::Desc,
        start: Start::First,
        limit: 100,
    };
    let sql = build_page(f, &page);
    let mut q = env
        .clickhouse
        .client()
        .query(&format!("EXPLAIN indexes = 1 {}", sql.text));
    for (name, value) in &sql.params {
        q = q.param(name, value.as_str());
    }
    let lines: Vec<String> = q.fetch_all().await.expect("explain");
    let fractions: Vec<(u64, u64)> = lines
        .iter()
        .filter_map(|l| l.split("Granules: ").nth(1))
        .filter_map(|g| g.split_once('/'))
        .filter_map(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .collect();
    let text = lines.join("\n");
    assert!(text.contains("Skip"), "no skip index used:\n{text}");
    let after_key = fractions.iter().map(|(a, _)| *a).nth(2).expect(&text);
    let after_skip = fractions.last().map(|(a, _)| *a).expect(&text);
    (after_key, after_skip)
}

#[tokio::test]
async fn the_api_filters_skip_granules_with_their_indexes() {
    let env = TestEnv::clickhouse_only("skip_indexes").await;
    // One big org, 30 days; one needle value in a narrow time slice.
    let mut rows = rows_of("acme", 120_000, 30, 90, 7);
    // Values recur within a stretch of time, as an actor's session or a
    // resource's lifetime does.
    rows.sort_by_key(|r| (r.created_at, r.id));
    for (i, r) in rows.iter_mut().enumerate() {
        r.actor_id = format!("user-{}", i / 500);
        r.request_ip = format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256);
        r.resource_id = format!("res-{}", i / 300);
        r.request_path = format!("/api/v1/tickets/{}/comments", i / 200);
    }
    rows[5000].request_path = "/api/v1/Exports/xyzzy-report".into();
    env.insert_rows(&rows).await;
    env.clickhouse
        .client()
        .query("OPTIMIZE TABLE events FINAL")
        .execute()
        .await
        .expect("optimize");
    let base = Filter::new("acme");
    let cases = [
        base.clone().and(Cond::PathContains("XYZZY-rep".into())),
        base.clone()
            .and(Cond::AnyOf(Field::ActorId, vec!["user-10".into()])),
        base.clone()
            .and(Cond::AnyOf(Field::Ip, vec!["10.0.19.136".into()])),
        base.clone()
            .and(Cond::AnyOf(Field::ResourceId, vec!["res-3".into()])),
    ];
    for f in &cases {
        let (after_key, after_skip) = granules(&env, f).await;
        assert!(after_key >= 14, "{f:?}: {after_key}");
        assert!(
            after_skip * 4 <= after_key,
            "{f:?}: {after_skip} of {after_key} granules"
        );
    }
}
