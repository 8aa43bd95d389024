//! Trailhouse query API: bearer-token scoped reads of audit events.
//!
//! Pure cores: [`query`] (filters → parameterised SQL) and [`cursor`]
//! (signed keyset cursors). [`store`] is the port to ClickHouse; [`dialect`]
//! holds the thin adapters of each API dialect; [`api`] the HTTP edge and
//! [`error`] its one error → status table.

pub mod access;
pub mod api;
pub mod auth;
pub mod cursor;
pub mod dialect;
pub mod error;
pub mod params;
pub mod query;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::net::TcpListener;
use trailhouse_common::clickhouse::ClickHouseArgs;
use trailhouse_common::health::Health;
use trailhouse_common::serve::{serve_until, spawn_probe};
use trailhouse_common::shutdown::Shutdown;
use trailhouse_common::Secret;

pub use api::{app, AppState};

/// Configuration of the query API.
#[derive(Debug, Clone, Args)]
pub struct QueryConfig {
    #[arg(
        long,
        env = "TRAILHOUSE_QUERY_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    #[command(flatten)]
    pub jwt: JwtArgs,
    /// Secret that signs page cursors.
    #[arg(long, env = "TRAILHOUSE_CURSOR_SECRET", hide_env_values = true)]
    pub cursor_secret: Secret,
    /// Role → permission grants, `role:permission` pairs separated by commas.
    #[arg(
        long,
        env = "TRAILHOUSE_QUERY_ROLE_PERMISSIONS",
        default_value = access::DEFAULT_ROLE_PERMISSIONS
    )]
    pub role_permissions: String,
    /// Request headers the organisation audit log's details view may show
    /// (comma separated; `Authorization` and `Cookie` never are).
    #[arg(
        long,
        env = "TRAILHOUSE_QUERY_DETAIL_HEADERS",
        default_value = access::DEFAULT_DETAIL_HEADERS
    )]
    pub detail_headers: String,
    /// Base of absolute URLs in responses (e.g. `https://audit.example.com`);
    /// from the request's Host / X-Forwarded-* headers when unset.
    #[arg(long, env = "TRAILHOUSE_QUERY_PUBLIC_URL")]
    pub public_url: Option<String>,
    #[arg(
        long,
        env = "TRAILHOUSE_QUERY_SHUTDOWN_TIMEOUT_SECS",
        default_value_t = 20
    )]
    pub shutdown_timeout_secs: u64,
}

/// How bearer tokens are verified.
#[derive(Debug, Clone, Args)]
pub struct JwtArgs {
    /// HS256 shared secret (local use).
    #[arg(
        long = "jwt-hs256-secret",
        env = "TRAILHOUSE_JWT_HS256_SECRET",
        hide_env_values = true
    )]
    pub hs256_secret: Option<Secret>,
    /// PEM file with the RS256/ES256 public key (production).
    #[arg(long = "jwt-public-key-file", env = "TRAILHOUSE_JWT_PUBLIC_KEY_FILE")]
    pub public_key_file: Option<std::path::PathBuf>,
    /// `RS256` or `ES256`, with --jwt-public-key-file.
    #[arg(
        long = "jwt-algorithm",
        env = "TRAILHOUSE_JWT_ALGORITHM",
        default_value = "RS256"
    )]
    pub algorithm: String,
    #[arg(long = "jwt-issuer", env = "TRAILHOUSE_JWT_ISSUER")]
    pub issuer: Option<String>,
    #[arg(long = "jwt-audience", env = "TRAILHOUSE_JWT_AUDIENCE")]
    pub audience: Option<String>,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl JwtArgs {
    pub fn verifier(&self) -> Result<auth::Verifier, Error> {
        let v = match (&self.hs256_secret, &self.public_key_file) {
            (Some(_), Some(_)) => {
                return Err(Error::Config(
                    "configure either an HS256 secret or a public key, not both".into(),
                ))
            }
            (Some(s), None) if s.expose().len() >= 16 => {
                auth::Verifier::hs256(s.expose().as_bytes())
            }
            (Some(_), None) => {
                return Err(Error::Config(
                    "the HS256 secret must be at least 16 bytes".into(),
                ))
            }
            (None, Some(path)) => {
                let pem = std::fs::read(path)?;
                auth::Verifier::public_key(&self.algorithm, &pem)
                    .map_err(|e| Error::Config(e.to_string()))?
            }
            (None, None) => return Err(Error::Config("no JWT key configured".into())),
        };
        Ok(v.expect_issuer_audience(self.issuer.as_deref(), self.audience.as_deref()))
    }
}

/// Runs the service on `listener` until `shutdown` fires.
pub async fn run(
    config: QueryConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), Error> {
    config
        .clickhouse
        .validate()
        .map_err(|e| Error::Config(e.to_string()))?;
    if config.cursor_secret.expose().len() < 16 {
        return Err(Error::Config(
            "the cursor secret must be at least 16 bytes".into(),
        ));
    }
    let access = access::Access::parse(&config.role_permissions, &config.detail_headers)
        .map_err(|e| Error::Config(e.to_string()))?;
    if let Some(u) = &config.public_url {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            return Err(Error::Config(
                "the public URL must start with http:// or https://".into(),
            ));
        }
    }
    let health = Health::new();
    let state = Arc::new(AppState {
        store: store::ClickHouseStore::new(config.clickhouse.client()),
        verifier: config.jwt.verifier()?,
        cursors: cursor::CursorCodec::new(config.cursor_secret.expose().as_bytes()),
        access,
        health: health.clone(),
        public_url: config.public_url.clone(),
    });
    let client = config.clickhouse.client();
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
