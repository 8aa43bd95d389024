//! What analysts get in ClickHouse: a comment on every column of the events
//! table, and the SQL recipes of `docs/analytics.md`, each run against the
//! demo data (posted through ingest and stored by the consumer, as
//! `dev/up.sh` does) and each returning rows.

use trailhouse_tests::TestEnv;

use crate::demo;

/// The ```sql blocks of a Markdown document, with the heading above each.
fn recipes(markdown: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut heading = String::new();
    let mut block: Option<String> = None;
    for line in markdown.lines() {
        match &mut block {
            Some(sql) if line.trim_end() == "```" => {
                out.push((heading.clone(), std::mem::take(sql)));
                block = None;
            }
            Some(sql) => {
                sql.push_str(line);
                sql.push('\n');
            }
            None if line.starts_with("```sql") => block = Some(String::new()),
            None if line.starts_with("## ") => heading = line[3..].trim().to_string(),
            None => {}
        }
    }
    out
}

#[test]
fn recipes_are_read_from_their_blocks() {
    let md = "# T\n## 1. One\n```sql\nSELECT 1\n```\ntext\n## 2. Two\n```sql\nSELECT\n  2\n```\n```sh\nls\n```\n";
    assert_eq!(
        recipes(md),
        vec![
            ("1. One".to_string(), "SELECT 1\n".to_string()),
            ("2. Two".to_string(), "SELECT\n  2\n".to_string()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_column_has_a_comment_and_every_recipe_runs_on_the_demo_data() {
    let mut env = TestEnv::new("analytics", 1).await;
    let client = env.clickhouse.client();
    let uncommented: Vec<String> = client
        .query("SELECT concat(table, '.', name) FROM system.columns WHERE database = currentDatabase() AND table IN ('events', 'events_hourly', 'events_daily', 'events_daily_actors') AND comment = '' ORDER BY table, position")
        .fetch_all()
        .await
        .expect("system.columns");
    assert!(
        uncommented.is_empty(),
        "columns without a comment: {uncommented:?}"
    );
    let columns: u64 = client
        .query("SELECT count() FROM system.columns WHERE database = currentDatabase() AND table = 'events'")
        .fetch_one()
        .await
        .expect("count");
    assert_eq!(columns, 38);

    let ingest = env.start_ingest(&[]).await;
    env.start_consumer();
    env.wait_ready().await;
    demo::load(&env, &ingest).await;
    // The rollups hold the demo data as the events table does.
    let r = trailhouse_tests::rollups::settled(&client, std::time::Duration::from_secs(10))
        .await
        .expect("rollup check");
    assert!(r.exact() && r.raw_events > 0, "{r:?}");
    let doc =
        std::fs::read_to_string(demo::root().join("docs/analytics.md")).expect("docs/analytics.md");
    let all = recipes(&doc);
    assert!(all.len() >= 10, "{} recipes", all.len());
    let mut failures = Vec::new();
    for (name, sql) in &all {
        // As written (`??` is how the client takes a literal `?`), every
        // row read back, so each expression really runs.
        let text = sql.trim().trim_end_matches(';').replace('?', "??");
        let rows = match client.query(&text).fetch_bytes("JSONEachRow") {
            Ok(mut cursor) => cursor
                .collect()
                .await
                .map(|b| b.iter().filter(|c| **c == b'\n').count()),
            Err(e) => Err(e),
        };
        match rows {
            Ok(n) if n > 0 => println!("{n:>6} rows  {name}"),
            Ok(_) => failures.push(format!("{name}: no rows on the demo data")),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "recipes that fail:\n{}",
        failures.join("\n")
    );
    env.stop().await;
}
