//! `pangolin dev`: the local multi-region deployment on loopback, persistent in a data dir.
//!
//! Runs three child processes of this binary, each `pangolin serve` with one of the built-in
//! region files: us-east-1 (catalog 8181, S3 9000, voter 8190), eu-west-1 (catalog 8281,
//! S3 9100, voter 8290) and the witness voter (8390). A child that dies unexpectedly is
//! restarted after 5 s, as a service manager would; Ctrl-C or SIGTERM stops them
//! all cleanly. Each child's pid is kept in `<data-dir>/dev/<name>.pid` for drills and tests.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// The built-in region files, so `pangolin dev` works from any folder.
pub const US_EAST_1_TOML: &str = include_str!("../regions/us-east-1.toml");
pub const EU_WEST_1_TOML: &str = include_str!("../regions/eu-west-1.toml");
pub const WITNESS_TOML: &str = include_str!("../regions/witness.toml");

/// The dev nodes: (name, built-in config).
pub const DEV_NODES: &[(&str, &str)] = &[
    ("us-east-1", US_EAST_1_TOML),
    ("eu-west-1", EU_WEST_1_TOML),
    ("witness", WITNESS_TOML),
];

/// Pause before restarting a child that died unexpectedly. Longer than a Raft leader lease
/// plus the largest election timeout (1.5 s + 1.5 s in the dev files), so the surviving voters
/// elect a new leader before a killed leader comes back (openraft lets a restarted voter
/// resume its own committed leadership at once).
const RESTART_AFTER: Duration = Duration::from_secs(5);

/// The us-east-1 catalog config as a standalone region (no control plane), for in-process
/// test regions.
pub fn standalone_config(env: Vec<(String, String)>) -> anyhow::Result<Config> {
    let mut config = Config::parse(US_EAST_1_TOML, "regions/us-east-1.toml (built in)", env)?;
    config.control = None;
    config.regions.clear();
    Ok(config)
}

/// Runs until Ctrl-C / SIGTERM, then stops every node cleanly.
pub async fn run(data_dir: PathBuf, fresh: bool) -> anyhow::Result<()> {
    if fresh && data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)
            .with_context(|| format!("cannot wipe {}", data_dir.display()))?;
    }
    let conf_dir = data_dir.join("dev");
    std::fs::create_dir_all(&conf_dir)
        .with_context(|| format!("cannot create {}", conf_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;
    let conf_dir = data_dir.join("dev");
    let exe = std::env::current_exe().context("cannot find the pangolin binary")?;

    let stop = CancellationToken::new();
    let mut supervisors = Vec::new();
    for (name, toml) in DEV_NODES {
        let file = conf_dir.join(format!("{name}.toml"));
        std::fs::write(&file, toml).with_context(|| format!("cannot write {}", file.display()))?;
        supervisors.push(tokio::spawn(supervise(
            name.to_string(),
            exe.clone(),
            file,
            data_dir.clone(),
            stop.clone(),
        )));
    }
    println!(
        "pangolin dev (data in {})\n  us-east-1  catalog http://127.0.0.1:8181  S3 http://127.0.0.1:9000  voter 127.0.0.1:8190\n  eu-west-1  catalog http://127.0.0.1:8281  S3 http://127.0.0.1:9100  voter 127.0.0.1:8290\n  witness    voter 127.0.0.1:8390\n  catalog `demo` in each region; us-east-1 is primary at first start.\nPress Ctrl-C to stop.",
        data_dir.display()
    );
    wait_for_signal().await;
    println!("stopping…");
    stop.cancel();
    for s in supervisors {
        let _ = s.await;
    }
    println!("stopped");
    Ok(())
}

/// Keeps one child running until `stop`; restarts it when it dies on its own.
async fn supervise(
    name: String,
    exe: PathBuf,
    config: PathBuf,
    data_dir: PathBuf,
    stop: CancellationToken,
) {
    let pid_file = data_dir.join("dev").join(format!("{name}.pid"));
    loop {
        let mut child = match spawn_node(&name, &exe, &config, &data_dir) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("[{name}] cannot start: {e:#}");
                tokio::select! {
                    _ = tokio::time::sleep(RESTART_AFTER) => continue,
                    _ = stop.cancelled() => return,
                }
            }
        };
        if let Some(pid) = child.id() {
            let _ = std::fs::write(&pid_file, pid.to_string());
        }
        tokio::select! {
            status = child.wait() => {
                eprintln!("[{name}] exited ({}); restarting in {}s", status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()), RESTART_AFTER.as_secs());
                tokio::select! {
                    _ = tokio::time::sleep(RESTART_AFTER) => {},
                    _ = stop.cancelled() => { let _ = std::fs::remove_file(&pid_file); return; }
                }
            }
            _ = stop.cancelled() => {
                stop_child(&name, &mut child).await;
                let _ = std::fs::remove_file(&pid_file);
                return;
            }
        }
    }
}

fn spawn_node(name: &str, exe: &Path, config: &Path, data_dir: &Path) -> anyhow::Result<Child> {
    let mut child = Command::new(exe)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env("PANGOLIN_DATA_DIR", data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let name = name.to_string();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                println!("[{name}] {line}");
            }
        });
    }
    Ok(child)
}

/// SIGTERM, then SIGKILL if the child has not exited within 10 s.
async fn stop_child(name: &str, child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
        Ok(_) => {}
        Err(_) => {
            eprintln!("[{name}] did not stop in 10s; killing it");
            let _ = child.kill().await;
        }
    }
}

/// Ctrl-C or SIGTERM.
pub async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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
