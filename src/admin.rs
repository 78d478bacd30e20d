//! `pangolin admin`: the operator CLI over a catalog node's management API.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::{json, Value};

/// `pangolin admin <area> <verb>`.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Control plane: which region is primary, switchover, failover.
    #[command(subcommand)]
    Control(ControlCommand),
    /// Replication of this region from the primary.
    #[command(subcommand)]
    Replication(ReplicationCommand),
}

#[derive(Debug, Subcommand)]
pub enum ReplicationCommand {
    /// Watermark, primary head, lag, last error of the region behind `--endpoint`.
    Status,
    /// Stop applying the primary's change log (survives restarts).
    Pause,
    /// Resume (also retries a record that halted the stream).
    Resume,
    /// Compare this region with the primary: pointers, and every referenced object present
    /// with the primary's size and ETag. Exits non-zero when they differ.
    Verify {
        /// Only this catalog (default: all).
        #[arg(long)]
        catalog: Option<String>,
    },
    /// Rebuild a catalog of this region from the primary (a new or damaged region).
    Resync {
        #[arg(long)]
        catalog: String,
    },
    /// Commits this region held that the primary never received (failback), by table and
    /// snapshot id.
    Quarantine {
        /// Only entries of this catalog.
        #[arg(long)]
        catalog: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ControlCommand {
    /// Voters' view of the deployment: epoch, primary, lease, regions, history.
    Status,
    /// Planned switchover: fence the primary, wait for the target, flip (no acknowledged write lost).
    Switchover {
        /// Region to make primary.
        #[arg(long)]
        to: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Unplanned failover to a region (the old primary may be unreachable).
    Failover {
        #[arg(long)]
        to: String,
        /// Fail over even when the target lags beyond the configured bound.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        reason: Option<String>,
    },
}

/// Runs one admin command against `endpoint`; prints JSON with `json`, a summary otherwise.
pub async fn run(endpoint: &str, json_out: bool, cmd: AdminCommand) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let base = endpoint.trim_end_matches('/');
    let (answer, kind) = match cmd {
        AdminCommand::Control(ControlCommand::Status) => (
            call(http.get(format!("{base}/api/v1/control/status"))).await?,
            "status",
        ),
        AdminCommand::Control(ControlCommand::Switchover { to, reason }) => (
            call(
                http.post(format!("{base}/api/v1/control/switchover"))
                    .json(&json!({"to": to, "reason": reason, "actor": actor()})),
            )
            .await?,
            "switchover",
        ),
        AdminCommand::Control(ControlCommand::Failover { to, force, reason }) => (
            call(
                http.post(format!("{base}/api/v1/control/failover"))
                    .json(&json!({"to": to, "force": force, "reason": reason, "actor": actor()})),
            )
            .await?,
            "failover",
        ),
        AdminCommand::Replication(ReplicationCommand::Status) => (
            call(http.get(format!("{base}/api/v1/replication/status"))).await?,
            "replication status",
        ),
        AdminCommand::Replication(ReplicationCommand::Pause) => (
            call(http.post(format!("{base}/api/v1/replication/pause"))).await?,
            "replication pause",
        ),
        AdminCommand::Replication(ReplicationCommand::Resume) => (
            call(http.post(format!("{base}/api/v1/replication/resume"))).await?,
            "replication resume",
        ),
        AdminCommand::Replication(ReplicationCommand::Verify { catalog }) => {
            let answer = call(
                http.post(format!("{base}/api/v1/replication/verify"))
                    .json(&json!({ "catalog": catalog })),
            )
            .await?;
            return finish_verify(json_out, &answer);
        }
        AdminCommand::Replication(ReplicationCommand::Resync { catalog }) => (
            call(
                http.post(format!("{base}/api/v1/replication/resync"))
                    .json(&json!({ "catalog": catalog })),
            )
            .await?,
            "replication resync",
        ),
        AdminCommand::Replication(ReplicationCommand::Quarantine { catalog }) => {
            let mut answer =
                call(http.get(format!("{base}/api/v1/replication/quarantine"))).await?;
            if let (Some(c), Some(entries)) = (&catalog, answer["entries"].as_array_mut()) {
                entries.retain(|e| e["catalog"].as_str() == Some(c.as_str()));
            }
            if json_out {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                print_quarantine(&answer);
            }
            return Ok(());
        }
    };
    if json_out {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else if kind.starts_with("replication") {
        print_replication(&answer);
    } else {
        print_control(kind, &answer);
    }
    Ok(())
}

fn actor() -> String {
    std::env::var("USER").map_or_else(|_| "operator".into(), |u| format!("operator:{u}"))
}

async fn call(req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let resp = req
        .send()
        .await
        .context("cannot reach the catalog endpoint")?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let msg = body["error"]["message"]
            .as_str()
            .unwrap_or("no error message");
        bail!("{status}: {msg}");
    }
    Ok(body)
}

fn print_control(kind: &str, answer: &Value) {
    let c = &answer["control"];
    if kind != "status" {
        println!("{kind} done.");
    }
    println!(
        "primary: {}   epoch: {}",
        c["primary"]
            .as_str()
            .unwrap_or("(none: switchover in progress)"),
        c["epoch"]
    );
    if let Some(cluster) = answer.get("cluster").filter(|c| !c.is_null()) {
        println!(
            "control-plane leader: voter {} (term {})",
            cluster["leader"], cluster["term"]
        );
        for v in cluster["voters"].as_array().into_iter().flatten() {
            println!(
                "  voter {} {} at {}",
                v["id"],
                v["region"].as_str().unwrap_or("?"),
                v["address"].as_str().unwrap_or("?")
            );
        }
    }
    match c["lease"].as_object() {
        Some(l) => println!(
            "write lease: {} (epoch {}) held by {}, expires at {} ms",
            l["region"].as_str().unwrap_or("?"),
            l["epoch"],
            l["holder"].as_str().unwrap_or("?"),
            l["expires_at_ms"]
        ),
        None => println!("write lease: none"),
    }
    if let Some(regions) = c["regions"].as_object() {
        for (name, r) in regions {
            println!(
                "  region {name}: voter {}  last lease {}",
                r["endpoint"].as_str().unwrap_or("-"),
                r["last_lease_at_ms"]
            );
        }
    }
    if let Some(history) = c["history"].as_array() {
        for h in history {
            println!(
                "  history: {} -> {} epoch {} ({}) by {}: {}",
                h["from"].as_str().unwrap_or("-"),
                h["to"].as_str().unwrap_or("-"),
                h["epoch"],
                if h["planned"].as_bool() == Some(true) {
                    "planned"
                } else {
                    "unplanned"
                },
                h["actor"].as_str().unwrap_or("-"),
                h["reason"].as_str().unwrap_or("")
            );
        }
    }
    if let Some(node) = answer.get("node") {
        println!(
            "this node: region {} epoch {} writes {}",
            node["region"].as_str().unwrap_or("?"),
            node["epoch"],
            node["route"]["writes"].as_str().unwrap_or("?")
        );
    }
}

/// Prints a verify report; an error (non-zero exit) when the regions differ.
fn finish_verify(json_out: bool, answer: &Value) -> anyhow::Result<()> {
    let differences = answer["differences"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if json_out {
        println!("{}", serde_json::to_string_pretty(answer)?);
    } else {
        println!(
            "region {} vs primary {}: watermark {}, primary head {}",
            answer["region"].as_str().unwrap_or("?"),
            answer["primary"]
                .as_str()
                .unwrap_or("(this region is the primary)"),
            answer["watermark"],
            answer["primary_head"]
        );
        let c = &answer["compared"];
        println!(
            "compared: {} catalogs, {} namespaces, {} tables, {} views, {} objects",
            c["catalogs"], c["namespaces"], c["tables"], c["views"], c["objects"]
        );
        for f in answer["in_flight"].as_array().into_iter().flatten() {
            println!("  in flight (not compared): {}", f.as_str().unwrap_or("?"));
        }
        for d in &differences {
            println!(
                "  DIFFERENT {} {}/{}: {}",
                d["kind"].as_str().unwrap_or("?"),
                d["catalog"].as_str().unwrap_or("?"),
                d["name"].as_str().unwrap_or("?"),
                d["detail"].as_str().unwrap_or("")
            );
        }
    }
    if answer["equal"].as_bool() != Some(true) {
        bail!(
            "the region differs from the primary ({} differences)",
            differences.len()
        );
    }
    if !json_out {
        println!("equal.");
    }
    Ok(())
}

fn print_quarantine(answer: &Value) {
    let entries = answer["entries"].as_array().cloned().unwrap_or_default();
    println!(
        "region {}: {} quarantined commits",
        answer["region"].as_str().unwrap_or("?"),
        entries.len()
    );
    for e in &entries {
        let ns: Vec<&str> = e["namespace"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "  seq {} epoch {} {} {} {}.{}{} snapshots {} properties {} metadata {}",
            e["seq"],
            e["epoch"],
            e["op"].as_str().unwrap_or("?"),
            e["kind"].as_str().unwrap_or("?"),
            e["catalog"].as_str().unwrap_or("-"),
            ns.join("."),
            e["name"]
                .as_str()
                .map(|n| format!(".{n}"))
                .unwrap_or_default(),
            e["snapshot_ids"],
            e["properties"],
            e["metadata_location"].as_str().unwrap_or("-")
        );
    }
}

fn print_replication(answer: &Value) {
    for key in [
        "region",
        "role",
        "state",
        "primary",
        "paused",
        "halted",
        "watermark",
        "primary_head",
        "lag_records",
        "lag_seconds",
        "applied_records",
        "objects_copied",
        "bytes_copied",
        "objects_pending",
        "last_error",
        "catalog",
        "snapshot_head",
        "namespaces",
        "tables",
        "views",
        "objects",
    ] {
        if let Some(v) = answer.get(key) {
            println!("{key}: {v}");
        }
    }
}
