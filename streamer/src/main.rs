//! The `trailhouse-streamer` binary: parses configuration and runs the streamer.

use clap::Parser;
use trailhouse_common::shutdown::Shutdown;
use trailhouse_streamer::StreamerConfig;

#[derive(Parser)]
#[command(
    name = "trailhouse-streamer",
    version,
    about = "Trailhouse streamer: per-tenant audit-log streams to SIEMs, webhooks and buckets"
)]
struct Cli {
    #[command(flatten)]
    config: StreamerConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = trailhouse_common::telemetry::init("trailhouse-streamer")?;
    let listener = tokio::net::TcpListener::bind(cli.config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cli.config.listen))?;
    let shutdown = Shutdown::new();
    shutdown.on_signal();
    trailhouse_streamer::run(cli.config, listener, shutdown).await?;
    Ok(())
}
