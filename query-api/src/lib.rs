//! Trailhouse query API: bearer-token scoped reads of audit events.
//!
//! Pure cores: [`query`] (filters → parameterised SQL) and [`cursor`]
//! (signed keyset cursors). [`store`] is the port to ClickHouse and
//! [`keyset`] the one keyset-page read every cursor mode shares. [`state`]
//! holds what handlers share (state, token extractor, absolute URLs);
//! [`dialect`] the thin adapters of each API dialect, each with its own
//! routes; [`scope`] is the one rule that turns a token's claims into the
//! filter every dialect starts from; [`guard`] admits authenticated
//! requests (per-org rate limit, per-org and service query slots); [`api`]
//! merges the routes into the router and [`error`] is its one error →
//! status table. [`config`] is the typed configuration.

pub mod access;
pub mod api;
pub mod auth;
pub mod config;
pub mod cursor;
pub mod dialect;
pub mod error;
#[cfg(test)]
mod fuzz;
pub mod guard;
pub mod keyset;
pub mod metrics;
pub mod openapi;
pub mod params;
pub mod query;
pub mod scope;
pub mod state;
pub mod store;
pub mod ui;
pub mod viewer_token;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use trailhouse_common::health::Health;
use trailhouse_common::serve::{serve_until, spawn_probe};
use trailhouse_common::shutdown::Shutdown;

pub use api::app;
pub use config::{JwtArgs, QueryConfig};
pub use state::AppState;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the service on `listener` until `shutdown` fires.
pub async fn run(
    config: QueryConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), Error> {
    config.validate()?;
    let access = access::Access::new(
        config.role_permissions.clone(),
        config.detail_headers.clone(),
    );
    let health = Health::new();
    let read_client = store::read_client(config.clickhouse.client(), &config.limits.clickhouse());
    let state = Arc::new(AppState {
        store: store::ClickHouseStore::new(read_client.clone()),
        verifier: config.jwt.verifier()?,
        cursors: cursor::CursorCodec::new(
            config
                .cursor_secret
                .as_ref()
                .map(|s| s.expose().as_bytes())
                .unwrap_or_default(),
        ),
        access,
        health: health.clone(),
        public_url: config.public_url.as_ref().map(|u| u.as_str().to_string()),
        trusted_proxies: config.trusted_proxies.clone(),
        max_page_bytes: config.limits.max_page_bytes(),
        guard: config.limits.guard(),
        viewer: config.viewer,
        cors_origins: config.cors_allowed_origins.0.clone(),
    });
    let client = read_client;
    let probe = spawn_probe(
        health.clone(),
        shutdown.clone(),
        Duration::from_secs(5),
        move || {
            let client = client.clone();
            async move { client.query("SELECT 1").execute().await.is_ok() }
        },
    );
    tracing::info!(addr = %listener.local_addr()?, "query api listening");
    let deadline = Duration::from_secs(config.shutdown_timeout_secs);
    serve_until(listener, app(state), shutdown, health, deadline).await;
    probe.abort();
    Ok(())
}
