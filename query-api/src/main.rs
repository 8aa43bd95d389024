//! The `trailhouse-query-api` binary: serves the API, or mints a local token.

use clap::{Parser, Subcommand};
use trailhouse_common::shutdown::Shutdown;
use trailhouse_query_api::auth::{mint_hs256, Claims};
use trailhouse_query_api::{viewer_token, QueryConfig};

#[derive(Parser)]
#[command(name = "trailhouse-query-api", version, about = "Trailhouse query API")]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    serve: QueryConfig,
}

/// Whose log a minted token reads.
#[derive(clap::Args)]
struct Scope {
    #[arg(long)]
    org: String,
    #[arg(long)]
    environment: Option<String>,
    #[arg(long)]
    workspace: Option<String>,
}

impl Scope {
    /// The claims of a token of this scope for `sub`, valid `ttl` seconds.
    fn claims(self, sub: String, roles: Vec<String>, permissions: Vec<String>, ttl: i64) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            sub,
            org_id: self.org,
            environment_id: self.environment,
            workspace_id: self.workspace,
            roles,
            permissions,
            exp: now + ttl,
            iat: now,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the service (the default).
    Serve(Box<QueryConfig>),
    /// Mint an HS256 token for local use.
    MintToken {
        #[arg(long, env = "TRAILHOUSE_JWT_HS256_SECRET", hide_env_values = true)]
        secret: String,
        #[command(flatten)]
        scope: Scope,
        #[arg(long, default_value = "local-user")]
        sub: String,
        /// Comma-separated roles, e.g. `admin,workbench`.
        #[arg(long, default_value = "")]
        roles: String,
        /// Comma-separated permissions, e.g. `viewAuditLog`.
        #[arg(long, default_value = "")]
        permissions: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl: i64,
    },
    /// Mint a viewer token (read-only, short-lived) as a platform's backend
    /// would for the embedded viewer.
    MintViewerToken {
        #[arg(
            long,
            env = "TRAILHOUSE_QUERY_VIEWER_TOKEN_SECRET",
            hide_env_values = true
        )]
        secret: String,
        #[command(flatten)]
        scope: Scope,
        /// The signed-in user the token is for (in the access log).
        #[arg(long)]
        sub: String,
        /// Lifetime in seconds (the query API refuses more than its viewer
        /// lifetime, 900 s by default).
        #[arg(long, default_value_t = viewer_token::DEFAULT_VIEWER_LIFETIME_SECS)]
        ttl: i64,
    },
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(String::from)
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = match cli.cmd {
        Some(Cmd::MintToken {
            secret,
            scope,
            sub,
            roles,
            permissions,
            ttl,
        }) => {
            let claims = scope.claims(sub, list(&roles), list(&permissions), ttl);
            println!("{}", mint_hs256(secret.as_bytes(), &claims)?);
            return Ok(());
        }
        Some(Cmd::MintViewerToken {
            secret,
            scope,
            sub,
            ttl,
        }) => {
            let permissions = viewer_token::VIEWER_PERMISSIONS.map(String::from).to_vec();
            let claims = scope.claims(sub, Vec::new(), permissions, ttl);
            let token = viewer_token::mint_viewer_token(secret.as_bytes(), &claims)?;
            println!("{token}");
            return Ok(());
        }
        Some(Cmd::Serve(c)) => *c,
        None => cli.serve,
    };
    let _telemetry = trailhouse_common::telemetry::init("trailhouse-query-api")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let shutdown = Shutdown::new();
    shutdown.on_signal();
    trailhouse_query_api::run(config, listener, shutdown).await?;
    Ok(())
}
