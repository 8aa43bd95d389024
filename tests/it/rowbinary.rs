//! The consumer's RowBinary encoder against the real server: arbitrary rows
//! go in through the consumer's writer and must read back field for field.

use std::time::Duration;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use trailhouse_consumer::writer::{ClickHouseWriter, RowWriter};
use trailhouse_schemas::retention::RETENTION_CLASSES;
use trailhouse_schemas::rowbinary::EncodedRows;
use trailhouse_schemas::{EventRow, EVENT_COLUMNS};
use trailhouse_tests::TestEnv;

fn text() -> impl Strategy<Value = String> {
    // Any Unicode, including control characters and NUL.
    prop_oneof![Just(String::new()), ".{1,24}", "\\PC{1,8}"]
}

fn map() -> impl Strategy<Value = std::collections::BTreeMap<String, String>> {
    proptest::collection::btree_map(text(), text(), 0..4)
}

fn micros(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t).unwrap_or_default()
}

/// Rows as the consumer writes them. `created_at` stays within the last days
/// (older rows would be dropped by the table's retention TTL on insert).
fn arb_row(now: i64) -> impl Strategy<Value = EventRow> {
    let strings = proptest::collection::vec(text(), 25);
    let numbers = (
        proptest::option::of(any::<u16>()),
        proptest::option::of(-1e12f64..1e12),
        0..(5 * 86_400_000_000i64),
        // DateTime64(6) holds 1900-01-01 to 2299-12-31.
        -2_208_988_800_000_000i64..10_413_791_999_000_000,
        any::<i32>(),
        any::<i64>(),
        proptest::sample::select(RETENTION_CLASSES.to_vec()),
        any::<u128>(),
    );
    (strings, (map(), map(), map()), numbers).prop_map(
        move |(s, (path_params, headers, metadata), n)| {
            let (status, duration, age, received, partition, offset, retention, id) = n;
            let mut s = s.into_iter();
            let mut next = || s.next().unwrap_or_default();
            EventRow {
                org_id: next(),
                created_at: micros(now - age),
                id: uuid::Uuid::from_u128(id),
                environment_id: next(),
                workspace_id: next(),
                workspace_name: next(),
                actor_type: next(),
                actor_id: next(),
                actor_email: next(),
                actor_name: next(),
                auth_type: next(),
                auth_client_id: next(),
                auth_sub: next(),
                auth_app_client_id: next(),
                auth_account_id: next(),
                source: next(),
                action_type: next(),
                action_description: next(),
                resource_type: next(),
                resource_id: next(),
                resource_name: next(),
                request_method: next(),
                request_url: next(),
                request_path: next(),
                request_status: status,
                request_duration_ms: duration,
                request_ip: next(),
                request_user_agent: next(),
                request_query: next(),
                request_path_params: path_params,
                request_headers: headers,
                request_body: next(),
                metadata,
                received_at: micros(received),
                kafka_partition: partition,
                kafka_offset: offset,
                retention_days: retention,
                is_copy: id % 3 == 0,
            }
        },
    )
}

#[test]
fn arbitrary_rows_read_back_exactly() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let env = rt.block_on(TestEnv::clickhouse_only("rowbinary"));
    let writer = ClickHouseWriter::new(env.clickhouse.client(), Duration::from_secs(30));
    let now = Utc::now().timestamp_micros();
    let case = std::sync::atomic::AtomicU32::new(0);
    let config = ProptestConfig {
        cases: 12,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(rows in proptest::collection::vec(arb_row(now), 1..40))| {
        let case = case.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let stored: Vec<EventRow> = rt.block_on(async {
            let client = env.clickhouse.client();
            client.query("TRUNCATE TABLE events").execute().await.expect("truncate");
            let encoded: EncodedRows = rows.iter().collect();
            writer.insert(&encoded, &format!("rowbinary:{case}")).await.expect("insert");
            client
                .query(&format!("SELECT {EVENT_COLUMNS} FROM events ORDER BY kafka_offset, id"))
                .fetch_all::<EventRow>()
                .await
                .expect("select")
        });
        let mut expected = rows.clone();
        expected.sort_by_key(|r| (r.kafka_offset, r.id));
        prop_assert_eq!(stored, expected);
    });
}

#[tokio::test]
async fn a_table_with_other_column_types_refuses_the_insert() {
    // The header names every column and its type: a table whose column
    // changed type is refused, not filled with misread bytes.
    let env = TestEnv::clickhouse_only("rowbinary_mismatch").await;
    let client = env.clickhouse.client();
    client
        .query("ALTER TABLE events MODIFY COLUMN kafka_partition Int64")
        .execute()
        .await
        .expect("alter");
    let writer = ClickHouseWriter::new(client.clone(), Duration::from_secs(30));
    let rows = crate::dataset::rows(&crate::dataset::events(
        "acme",
        10,
        0,
        1,
        crate::dataset::now(),
    ));
    let encoded: EncodedRows = rows.iter().collect();
    let refused = writer.insert(&encoded, "mismatch").await;
    assert!(
        matches!(
            refused,
            Err(trailhouse_consumer::writer::WriteError::Permanent(_))
        ),
        "{refused:?}"
    );
    let n: u64 = client
        .query("SELECT count() FROM events")
        .fetch_one()
        .await
        .expect("count");
    assert_eq!(n, 0);
}
