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
    // The events table is no longer a setting; a deployment that still names
    // another table must not write to `events` without knowing it.
    if let Some(table) = std::env::var_os("TRAILHOUSE_CONSUMER_TABLE") {
        let table = table.to_string_lossy();
        anyhow::ensure!(
            table == trailhouse_schemas::EVENTS_TABLE,
            "TRAILHOUSE_CONSUMER_TABLE={table} is no longer supported: the consumer writes to the \
             `{}` table the migrations create; unset it",
            trailhouse_schemas::EVENTS_TABLE
        );
        tracing::warn!("TRAILHOUSE_CONSUMER_TABLE is no longer a setting and can be unset");
    }
    let listener = tokio::net::TcpListener::bind(cli.config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cli.config.listen))?;
    let shutdown = Shutdown::new();
    shutdown.on_signal();
    trailhouse_consumer::run(cli.config, Some(listener), shutdown).await?;
    Ok(())
}
