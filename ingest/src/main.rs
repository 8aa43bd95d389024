//! The `trailhouse-ingest` binary: parses configuration and runs the service.

use clap::{Parser, Subcommand};
use trailhouse_common::kafka::{ensure_topic, KafkaArgs};
use trailhouse_common::shutdown::Shutdown;
use trailhouse_ingest::{auth, IngestConfig};

#[derive(Parser)]
#[command(
    name = "trailhouse-ingest",
    version,
    about = "Trailhouse ingest service"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    serve: IngestConfig,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the service (the default).
    Serve(Box<IngestConfig>),
    /// Generate a new API key and print it with the hash to configure.
    NewKey {
        /// Org (or service name) the key is for.
        name: String,
    },
    /// Print the hash of an existing key.
    HashKey { key: String },
    /// Create the events topic if it does not exist yet.
    CreateTopic {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        #[arg(long, default_value_t = 1)]
        replication: i32,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = match cli.cmd {
        Some(Cmd::NewKey { name }) => {
            let key = auth::generate_key();
            println!("key:    {key}\nconfig: {name}:{}", auth::hash_key(&key));
            return Ok(());
        }
        Some(Cmd::HashKey { key }) => {
            println!("{}", auth::hash_key(&key));
            return Ok(());
        }
        Some(Cmd::CreateTopic {
            kafka,
            partitions,
            replication,
        }) => {
            kafka.validate()?;
            ensure_topic(&kafka, &kafka.topic, partitions, replication).await?;
            println!("topic {} ready", kafka.topic);
            return Ok(());
        }
        Some(Cmd::Serve(c)) => *c,
        None => cli.serve,
    };
    let _telemetry = trailhouse_common::telemetry::init("trailhouse-ingest")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let shutdown = Shutdown::new();
    shutdown.on_signal();
    trailhouse_ingest::run(config, listener, shutdown).await?;
    Ok(())
}
