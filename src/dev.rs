//! `pangolin dev`: the local deployment on loopback, persistent in a data dir.
//! Today it runs the us-east-1 region (catalog 127.0.0.1:8181, S3 127.0.0.1:9000) in this
//! process; the command keeps its shape as more regions join.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::server;

/// The dev region configuration, compiled in so `pangolin dev` works from any folder.
pub const DEV_REGION_TOML: &str = include_str!("../regions/us-east-1.toml");

/// The dev region's config with its data under `data_dir`.
pub fn dev_config(data_dir: &Path) -> anyhow::Result<Config> {
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("PANGOLIN_"))
        .collect();
    env.push(("PANGOLIN_DATA_DIR".into(), data_dir.display().to_string()));
    Ok(Config::parse(
        DEV_REGION_TOML,
        "regions/us-east-1.toml (built in)",
        env,
    )?)
}

/// Runs until Ctrl-C / SIGTERM, then stops everything cleanly.
pub async fn run(data_dir: PathBuf, fresh: bool) -> anyhow::Result<()> {
    if fresh && data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)
            .with_context(|| format!("cannot wipe {}", data_dir.display()))?;
    }
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;
    let config = dev_config(&data_dir)?;
    let shutdown = CancellationToken::new();
    let region = server::start(&config, shutdown.clone()).await?;
    println!(
        "pangolin dev is running (data in {})\n  {}: catalog http://{}  S3 {}  catalog `{}`\nPress Ctrl-C to stop.",
        data_dir.display(),
        config.region.name,
        region.catalog_addr,
        region.s3_endpoint,
        config.bootstrap.catalog,
    );
    wait_for_signal().await;
    println!("stopping…");
    region.stop().await;
    println!("stopped");
    Ok(())
}

/// Ctrl-C or SIGTERM.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
