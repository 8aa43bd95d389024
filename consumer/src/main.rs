//! The `trailhouse-consumer` binary: parses configuration and runs the consumer.

use clap::Parser;
use trailhouse_common::shutdown::Shutdown;
use trailhouse_consumer::ConsumerConfig;

#[derive(Parser)]
#[command(
    name = "trailhouse-consumer",
    version,
    about = "Trailhouse Kafka → ClickHouse consumer"
)]
struct Cli {
    #[command(flatten)]
    config: ConsumerConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = trailhouse_common::telemetry::init("trailhouse-consumer")?;
    let listener = tokio::net::TcpListener::bind(cli.config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cli.config.listen))?;
    let shutdown = Shutdown::new();
    shutdown.on_signal();
    trailhouse_consumer::run(cli.config, Some(listener), shutdown).await?;
    Ok(())
}
