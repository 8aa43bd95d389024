//! The demo data of `dev/demo_data.py`, posted through the ingest API as
//! `dev/up.sh` does, for the tests that hold something to it (the viewer's
//! screenshots, the analytics recipes).

use std::process::Command;
use std::time::Duration;

use trailhouse_tests::{TestEnv, SERVICE_KEY};

/// The demo org the tests use, and how many events the demo gives it.
pub const ORG: &str = "org_acme";
pub const EVENTS: u64 = 3000;

pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Posts [`ORG`]'s demo data to `ingest` and waits until the consumer has
/// stored all of it.
pub async fn load(env: &TestEnv, ingest: &str) {
    let out = Command::new("python3")
        .args([
            "dev/demo_data.py",
            "--url",
            ingest,
            "--key",
            SERVICE_KEY,
            "--orgs",
            ORG,
        ])
        .current_dir(root())
        .output()
        .expect("python3 runs dev/demo_data.py");
    assert!(
        out.status.success(),
        "demo data: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let stored = env
            .clickhouse
            .client()
            .query("SELECT count() FROM events WHERE org_id = ?")
            .bind(ORG)
            .fetch_one::<u64>()
            .await
            .unwrap_or(0);
        if stored >= EVENTS {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "demo data stored: {stored} of {EVENTS}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
