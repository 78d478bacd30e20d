//! How a drill injects its faults: through the `pangolin dev` supervisor's fault endpoint
//! (`127.0.0.1:8099`, see docs/fault-injection.md), or, against a real deployment, by running
//! operator-supplied hook commands (an AWS FIS experiment, stopping an RDS instance, ...).

use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::json;

/// One fault (or its repair) a scenario asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultAction {
    /// SIGKILL a node (region process or the witness voter); it stays down until restarted.
    Kill(String),
    /// Start a killed node again (or kill and start a running one).
    Restart(String),
    /// Cut every link between a region's node and every other node, both directions.
    Isolate(String),
    /// Clear every link fault on every node.
    Heal,
}

impl FaultAction {
    pub fn name(&self) -> &'static str {
        match self {
            FaultAction::Kill(_) => "kill",
            FaultAction::Restart(_) => "restart",
            FaultAction::Isolate(_) => "isolate",
            FaultAction::Heal => "heal",
        }
    }

    pub fn target(&self) -> Option<&str> {
        match self {
            FaultAction::Kill(t) | FaultAction::Restart(t) | FaultAction::Isolate(t) => Some(t),
            FaultAction::Heal => None,
        }
    }

    /// Whether this action repairs (rather than injects) a fault.
    pub fn is_repair(&self) -> bool {
        matches!(self, FaultAction::Restart(_) | FaultAction::Heal)
    }
}

/// Where faults go.
#[derive(Debug, Clone)]
pub enum FaultInjector {
    /// The `pangolin dev` supervisor's endpoint (C4).
    Supervisor { url: String, http: reqwest::Client },
    /// Shell commands run with `sh -c`; the first injects, the second repairs. The commands get
    /// `PANGOLIN_DRILL_ACTION` (`kill`, `isolate`, `restart`, `heal`), `PANGOLIN_DRILL_TARGET`
    /// (region or node), `PANGOLIN_DRILL_SCENARIO` and `PANGOLIN_DRILL_RUN` in their environment.
    Hooks {
        fault_cmd: String,
        heal_cmd: Option<String>,
        scenario: String,
        run_id: String,
    },
}

impl FaultInjector {
    pub fn supervisor(url: &str) -> FaultInjector {
        FaultInjector::Supervisor {
            url: url.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Checks that faults can be injected at all (the supervisor answers), before the drill
    /// starts its workload.
    pub async fn preflight(&self) -> anyhow::Result<String> {
        match self {
            FaultInjector::Supervisor { url, http } => {
                let resp = http
                    .get(format!("{url}/dev/v1/nodes"))
                    .send()
                    .await
                    .with_context(|| {
                        format!(
                            "the fault endpoint {url} does not answer: is `pangolin dev` running \
                             (with its fault endpoint)? Against a real deployment pass \
                             --fault-cmd/--heal-cmd"
                        )
                    })?;
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                if !status.is_success() {
                    bail!("GET {url}/dev/v1/nodes answered {status}: {body}");
                }
                Ok(body)
            }
            FaultInjector::Hooks { fault_cmd, .. } => Ok(format!("hook: {fault_cmd}")),
        }
    }

    /// Applies `action`; answers a description for the event log.
    pub async fn apply(&self, action: &FaultAction) -> anyhow::Result<String> {
        match self {
            FaultInjector::Supervisor { url, http } => {
                let req = match action {
                    FaultAction::Kill(n) => http.post(format!("{url}/dev/v1/nodes/{n}/kill")),
                    FaultAction::Restart(n) => http.post(format!("{url}/dev/v1/nodes/{n}/restart")),
                    FaultAction::Isolate(r) => {
                        http.post(format!("{url}/dev/v1/regions/{r}/isolate"))
                    }
                    FaultAction::Heal => http.post(format!("{url}/dev/v1/heal")).json(&json!({})),
                };
                let resp = req
                    .send()
                    .await
                    .with_context(|| format!("{} through {url}", action.name()))?;
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                if !status.is_success() {
                    bail!("{} answered {status}: {body}", action.name());
                }
                Ok(format!("supervisor: {status}"))
            }
            FaultInjector::Hooks {
                fault_cmd,
                heal_cmd,
                scenario,
                run_id,
            } => {
                let cmd = if action.is_repair() {
                    match heal_cmd {
                        Some(c) => c,
                        None => return Ok("no --heal-cmd given: nothing run".into()),
                    }
                } else {
                    fault_cmd
                };
                let out = tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(cmd)
                    .env("PANGOLIN_DRILL_ACTION", action.name())
                    .env("PANGOLIN_DRILL_TARGET", action.target().unwrap_or(""))
                    .env("PANGOLIN_DRILL_SCENARIO", scenario)
                    .env("PANGOLIN_DRILL_RUN", run_id)
                    .output()
                    .await
                    .with_context(|| format!("running hook `{cmd}`"))?;
                let tail = |b: &[u8]| {
                    let s = String::from_utf8_lossy(b);
                    s.chars()
                        .rev()
                        .take(400)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<String>()
                };
                if !out.status.success() {
                    bail!(
                        "hook `{cmd}` exited with {}: {}",
                        out.status,
                        tail(&out.stderr)
                    );
                }
                Ok(format!("hook `{cmd}`: {}", tail(&out.stdout).trim()))
            }
        }
    }
}
