//! The `pangolin` command: `serve` one node, or run the local `dev` deployment.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use pangolin::config::NodeConfig;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "pangolin",
    version,
    about = "Multi-region Apache Iceberg REST catalog"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one catalog node from a region config file.
    Serve {
        /// e.g. regions/us-east-1.toml
        #[arg(long)]
        config: PathBuf,
    },
    /// Operator commands over a catalog node's management API.
    Admin {
        /// Catalog endpoint of any region.
        #[arg(long, global = true, default_value = "http://127.0.0.1:8181")]
        endpoint: String,
        /// Machine-readable output.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: pangolin::admin::AdminCommand,
    },
    /// Failover drills against a running deployment (see docs/drills.md).
    Drill {
        #[command(subcommand)]
        command: pangolin::drill::DrillCommand,
    },
    /// Run the local deployment on loopback (embedded SQLite and S3, no external service).
    Dev {
        /// Where the deployment keeps its state across restarts.
        #[arg(long, default_value = "./pangolin-data")]
        data_dir: PathBuf,
        /// Wipe the data dir first.
        #[arg(long)]
        fresh: bool,
    },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PANGOLIN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("PANGOLIN_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    match Cli::parse().command {
        Command::Serve { config } => {
            let env = std::env::vars().filter(|(k, _)| k.starts_with("PANGOLIN_"));
            let shutdown = CancellationToken::new();
            match NodeConfig::load(&config, env)? {
                NodeConfig::Catalog(config) => {
                    let node = pangolin::server::start(&config, shutdown.clone()).await?;
                    pangolin::dev::wait_for_signal().await;
                    shutdown.cancel();
                    node.wait().await;
                }
                NodeConfig::Voter(config) => {
                    let voter = pangolin::server::start_voter(&config, shutdown.clone()).await?;
                    pangolin::dev::wait_for_signal().await;
                    shutdown.cancel();
                    voter.shutdown().await;
                }
            }
            Ok(())
        }
        Command::Dev { data_dir, fresh } => pangolin::dev::run(data_dir, fresh).await,
        Command::Drill { command } => {
            let code = pangolin::drill::main(command).await?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Command::Admin {
            endpoint,
            json,
            command,
        } => pangolin::admin::run(&endpoint, json, command).await,
    }
}
