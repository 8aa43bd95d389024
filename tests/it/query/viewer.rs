//! The viewer at `/ui/` and embedded in another origin's page, in a real
//! browser: `ui/tests/viewer.mjs` drives Debian's chromium through
//! playwright-core (see that script for the checks) and prints its
//! findings and the first-render time. The query API runs over the test
//! dataset with the whole pipeline beside it, so live tail sees an event
//! posted to the ingest API, and the screenshots show the demo data
//! (`dev/demo_data.py`'s org_acme), posted the same way.

use std::process::Command;

use trailhouse_query_api::config::CorsOrigins;
use trailhouse_tests::{TestEnv, VIEWER_SECRET};

use super::*;
use crate::demo::{self, root};

/// A port free now, for the embedding page's server (the query API's CORS
/// origin must name it before that server starts).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_works_in_a_real_browser() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: dev/install.sh installs Debian's chromium"
    );
    assert!(
        root().join("ui/node_modules/playwright-core").exists(),
        "the viewer's npm packages are missing: run dev/build_ui.sh"
    );
    let mut env = TestEnv::new("q_viewer", 1).await;
    let now = dataset::now();
    env.insert_rows(&dataset::rows(&dataset::events("org_a", 1200, 60, 1, now)))
        .await;
    env.insert_rows(&dataset::rows(&dataset::events("org_b", 400, 20, 2, now)))
        .await;
    let ingest = env.start_ingest(&["org_a"]).await;
    env.start_consumer();
    let portal = format!("http://127.0.0.1:{}", free_port());
    let origin = portal.clone();
    let url = env
        .start_query_api_with(move |c| c.cors_allowed_origins = CorsOrigins(vec![origin]))
        .await;
    env.wait_ready().await;
    demo::load(&env, &ingest).await;
    let api = Api {
        env,
        url,
        a: Vec::new(),
        b: Vec::new(),
        now,
    };
    let token = api.admin("org_a");
    let other = api.admin("org_b");
    let demo_token = api.admin(demo::ORG);
    let noperm = api.token(Tok {
        org: "org_a",
        roles: &["member"],
        ..Tok::default()
    });
    let screenshots = std::env::var("TRAILHOUSE_VIEWER_SCREENSHOTS").ok();
    let (url, ingest_url) = (api.url.clone(), ingest.clone());
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("node");
        cmd.arg("tests/viewer.mjs")
            .current_dir(root().join("ui"))
            .env("VIEWER_URL", url)
            .env("TOKEN", token)
            .env("TOKEN_OTHER", other)
            .env("TOKEN_NOPERM", noperm)
            .env("TOKEN_DEMO", demo_token)
            .env("SEARCH", "Tickets")
            .env("INGEST_URL", ingest_url)
            .env("INGEST_KEY", "key-org_a")
            .env("PORTAL_URL", portal)
            .env("VIEWER_SECRET", VIEWER_SECRET)
            .env("CHROMIUM", chromium);
        if let Some(dir) = screenshots {
            cmd.env("SCREENSHOTS", dir);
        }
        cmd.output()
    })
    .await
    .expect("join")
    .expect("node runs (Node.js 20 or newer)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "viewer checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    api.env.stop().await;
}
