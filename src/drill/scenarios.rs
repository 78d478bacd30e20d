//! The drill scenarios: what each does to the deployment while the workload runs. Every
//! step is recorded (faults, heals, notes); waiting for the deployment's reaction is bounded,
//! and a reaction that never comes is a note in the log, the report's figures and invariants
//! then tell the rest.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{json, Value};

use super::faults::{FaultAction, FaultInjector};
use super::report::{EventKind, FaultMark};
use super::workload::{Deployment, Recorder};

/// A scenario as `pangolin drill list` shows it.
pub struct ScenarioInfo {
    pub name: &'static str,
    pub about: &'static str,
}

pub const SCENARIOS: &[ScenarioInfo] = &[
    ScenarioInfo {
        name: "planned-switchover",
        about: "planned switchover of the primary to the other region (expect RPO 0, RTO about one lease)",
    },
    ScenarioInfo {
        name: "primary-crash",
        about: "kill the primary region's node (catalog and voter); automatic failover; restart it",
    },
    ScenarioInfo {
        name: "primary-partition",
        about: "cut the primary region off from every other node; it must stop committing (no split brain); heal",
    },
    ScenarioInfo {
        name: "replication-outage",
        about: "cut the secondary region off, then heal: writes continue in the primary, the secondary catches up",
    },
    ScenarioInfo {
        name: "voter-loss",
        about: "kill the witness voter, then restart it: the control plane keeps its quorum, writes continue",
    },
    ScenarioInfo {
        name: "failback",
        about: "partition the primary until the other region takes over, heal, let the old primary converge, switch back",
    },
];

pub fn known(name: &str) -> bool {
    SCENARIOS.iter().any(|s| s.name == name)
}

/// What a scenario works with.
pub struct ScenarioCtx<'a> {
    pub name: &'a str,
    pub dep: &'a Deployment,
    pub faults: &'a FaultInjector,
    pub rec: &'a Recorder,
    pub primary: String,
    pub secondary: String,
    /// Node name of the tie-breaking voter (`witness` in dev).
    pub witness: String,
    /// Workload time before the fault.
    pub warmup: Duration,
    /// How long a fault is held once the deployment has reacted to it.
    pub hold: Duration,
    /// Bound on waiting for a failover / catch-up.
    pub react_timeout: Duration,
}

impl ScenarioCtx<'_> {
    async fn fault(&self, action: FaultAction) -> anyhow::Result<()> {
        let mark = |detail: String| FaultMark {
            action: action.name().to_string(),
            target: action.target().map(String::from),
            detail,
        };
        // Time stamp the fault at the moment it is asked for.
        let at = crate::clock::now_ms_unsigned();
        match self.faults.apply(&action).await {
            Ok(detail) => {
                let m = mark(detail);
                self.rec.record(
                    at,
                    if action.is_repair() {
                        EventKind::Heal(m)
                    } else {
                        EventKind::Fault(m)
                    },
                );
                Ok(())
            }
            Err(e) => {
                self.rec.note(format!("{} failed: {e:#}", action.name()));
                Err(e)
            }
        }
    }

    /// Waits until the control plane names `region` primary; false on timeout.
    async fn wait_primary(&self, region: &str) -> bool {
        let deadline = Instant::now() + self.react_timeout;
        while Instant::now() < deadline {
            if let Some((epoch, Some(p), _)) = self.dep.control().await {
                if p == region {
                    self.rec
                        .note(format!("{region} is primary at epoch {epoch}"));
                    self.expect(format!("{region} becomes primary"), true);
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.expect(
            format!(
                "{region} becomes primary (not within {} s)",
                self.react_timeout.as_secs()
            ),
            false,
        );
        false
    }

    /// Waits until `region` answers `/health/ready`.
    async fn wait_ready(&self, region: &str) -> bool {
        let Some(e) = self.dep.endpoint(region) else {
            return false;
        };
        let deadline = Instant::now() + self.react_timeout;
        while Instant::now() < deadline {
            if let Ok(r) = self
                .dep
                .probe
                .get(format!("{}/health/ready", e.url))
                .send()
                .await
            {
                if r.status().is_success() {
                    self.expect(format!("{region} ready again"), true);
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.expect(
            format!(
                "{region} ready again (not within {} s)",
                self.react_timeout.as_secs()
            ),
            false,
        );
        false
    }

    /// Waits until `region` has applied everything the primary has (lag 0). While the
    /// writers run, a secondary that applies more slowly than they commit may never get
    /// there; `required` makes that a failed expectation, else only a note (the checks after
    /// the workload wait for convergence anyway).
    async fn wait_caught_up(&self, region: &str, required: bool) -> bool {
        let Some(e) = self.dep.endpoint(region) else {
            return false;
        };
        let deadline = Instant::now() + self.react_timeout;
        let mut resynced = false;
        while Instant::now() < deadline {
            if let Ok(r) = self
                .dep
                .probe
                .get(format!("{}/api/v1/replication/status", e.url))
                .send()
                .await
            {
                if let Ok(v) = r.json::<Value>().await {
                    if v["role"] == "secondary" && v["lag_records"].as_i64() == Some(0) {
                        self.expect(format!("{region} catches up"), true);
                        return true;
                    }
                    // A diverged log (commits the new primary never got) halts the
                    // replicator; after they are quarantined, resync converges the region.
                    if v["halted"].as_bool() == Some(true) && !resynced {
                        resynced = true;
                        let r = self
                            .dep
                            .http
                            .post(format!("{}/api/v1/replication/resync", e.url))
                            .timeout(Duration::from_secs(60))
                            .json(&json!({"catalog": self.dep.catalog}))
                            .send()
                            .await;
                        let what = match r {
                            Ok(r) => r.status().to_string(),
                            Err(err) => err.to_string(),
                        };
                        self.rec.note(format!(
                            "{region} replication halted: resync requested ({what})"
                        ));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let what = format!(
            "{region} catches up (not within {} s)",
            self.react_timeout.as_secs()
        );
        if required {
            self.expect(what, false);
        } else {
            self.rec.note(what);
        }
        false
    }

    /// Planned switchover to `to` through the management API.
    async fn switchover(&self, to: &str) -> anyhow::Result<()> {
        let at = crate::clock::now_ms_unsigned();
        let mut last = String::new();
        for e in &self.dep.endpoints {
            let resp = self
                .dep
                .http
                .post(format!("{}/api/v1/control/switchover", e.url))
                .timeout(Duration::from_secs(60))
                .json(&json!({"to": to, "reason": format!("drill {}", self.dep.run_id), "actor": "drill"}))
                .send()
                .await;
            match resp {
                Ok(r) if r.status().is_success() => {
                    self.rec.record(
                        at,
                        EventKind::Fault(FaultMark {
                            action: "switchover".into(),
                            target: Some(to.to_string()),
                            detail: format!("asked through {}", e.region),
                        }),
                    );
                    return Ok(());
                }
                Ok(r) => {
                    last = format!(
                        "{}: {} {}",
                        e.region,
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )
                }
                Err(err) => last = format!("{}: {err}", e.region),
            }
        }
        self.rec.note(format!("switchover to {to} failed: {last}"));
        bail!("switchover to {to} failed: {last}")
    }

    fn expect(&self, what: String, met: bool) {
        self.rec.now(EventKind::Expectation { what, met });
    }

    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await
    }
}

/// Runs the scenario's steps (the workload runs meanwhile).
pub async fn run(ctx: &ScenarioCtx<'_>) -> anyhow::Result<()> {
    let (p, s) = (ctx.primary.clone(), ctx.secondary.clone());
    ctx.sleep(ctx.warmup).await;
    match ctx.name {
        "planned-switchover" => {
            ctx.switchover(&s).await?;
            ctx.wait_primary(&s).await;
            ctx.sleep(ctx.hold).await;
        }
        "primary-crash" => {
            ctx.fault(FaultAction::Kill(p.clone())).await?;
            ctx.wait_primary(&s).await;
            ctx.sleep(ctx.hold).await;
            ctx.fault(FaultAction::Restart(p.clone())).await?;
            ctx.wait_ready(&p).await;
        }
        "primary-partition" => {
            ctx.fault(FaultAction::Isolate(p.clone())).await?;
            ctx.wait_primary(&s).await;
            ctx.sleep(ctx.hold).await;
            ctx.fault(FaultAction::Heal).await?;
            ctx.wait_ready(&p).await;
        }
        "replication-outage" => {
            ctx.fault(FaultAction::Isolate(s.clone())).await?;
            ctx.sleep(ctx.hold).await;
            ctx.fault(FaultAction::Heal).await?;
            ctx.wait_caught_up(&s, false).await;
        }
        "voter-loss" => {
            ctx.fault(FaultAction::Kill(ctx.witness.clone())).await?;
            ctx.sleep(ctx.hold).await;
            ctx.fault(FaultAction::Restart(ctx.witness.clone())).await?;
        }
        "failback" => {
            ctx.fault(FaultAction::Isolate(p.clone())).await?;
            ctx.wait_primary(&s).await;
            ctx.sleep(ctx.hold).await;
            ctx.fault(FaultAction::Heal).await?;
            ctx.wait_ready(&p).await;
            // the switchover itself waits for the target's catch-up
            ctx.wait_caught_up(&p, false).await;
            ctx.switchover(&p).await?;
            ctx.wait_primary(&p).await;
            ctx.sleep(ctx.hold).await;
        }
        other => bail!("unknown scenario {other}"),
    }
    Ok(())
}
