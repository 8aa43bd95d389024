//! The viewer at `/ui/` in a real browser: `ui/tests/viewer.mjs` drives
//! Debian's chromium through playwright-core against this query API over
//! the test dataset (see that script for the checks) and prints its
//! findings and the first-render time.

use std::process::Command;

use super::*;

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_works_in_a_real_browser() {
    let api = Api::new("q_viewer").await;
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: dev/install.sh installs Debian's chromium"
    );
    assert!(
        root().join("ui/node_modules/playwright-core").exists(),
        "the viewer's npm packages are missing: run dev/build_ui.sh"
    );
    let token = api.admin("org_a");
    let other = api.admin("org_b");
    let noperm = api.token(Tok {
        org: "org_a",
        roles: &["member"],
        ..Tok::default()
    });
    let screenshots = std::env::var("TRAILHOUSE_VIEWER_SCREENSHOTS").ok();
    let url = api.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("node");
        cmd.arg("tests/viewer.mjs")
            .current_dir(root().join("ui"))
            .env("VIEWER_URL", url)
            .env("TOKEN", token)
            .env("TOKEN_OTHER", other)
            .env("TOKEN_NOPERM", noperm)
            .env("SEARCH", "Tickets")
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
