//! Failover drills: `pangolin drill list|run`. A drill runs a workload of writers and readers
//! against every region of a running deployment, injects a scenario's faults (through the
//! `pangolin dev` fault endpoint or operator hook commands), checks afterwards that no
//! acknowledged commit was lost and no split-brain commit accepted and that the regions
//! converge, and reports the figures (computed from the event log by [`report::compute`]) as a
//! table, `report.json`, `report.md`, `timeline.svg` and `events.jsonl`, and in the
//! deployment's drill history (`/api/v1/drills`). See docs/drills.md.

pub mod chart;
pub mod checks;
pub mod faults;
pub mod report;
pub mod scenarios;
pub mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use self::faults::FaultInjector;
use self::report::{EventKind, RunInfo};
use self::workload::{Deployment, Endpoint, Recorder};

#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// The scenarios a drill can run.
    List,
    /// Run one drill against a running deployment; exits non-zero when an invariant fails.
    Run(Box<RunArgs>),
    /// Recompute a report from a saved event log (`events.jsonl`) and print it.
    Report {
        /// Path of an events.jsonl written by `drill run`.
        events: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// One of `pangolin drill list`.
    #[arg(long)]
    pub scenario: String,
    /// Catalog endpoint of a region (repeat for each region; default the two of `pangolin dev`).
    #[arg(long = "endpoint")]
    pub endpoints: Vec<String>,
    /// Least workload duration (e.g. 20s, 1m, 1500ms); the scenario's steps may extend it.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Concurrent writers (each has its own table; writer i uses endpoint i mod n).
    #[arg(long, default_value_t = 4)]
    pub writers: u32,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Where report.json, report.md, timeline.svg and events.jsonl go
    /// (default ./drill-reports/<run id>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Catalog the workload writes to.
    #[arg(long, default_value = "demo")]
    pub catalog: String,
    /// The `pangolin dev` supervisor's fault endpoint.
    #[arg(long, default_value = "http://127.0.0.1:8099")]
    pub fault_endpoint: String,
    /// Shell command that injects the fault (real deployments), instead of the dev endpoint.
    /// Gets PANGOLIN_DRILL_ACTION/TARGET/SCENARIO/RUN in its environment.
    #[arg(long)]
    pub fault_cmd: Option<String>,
    /// Shell command that repairs it (restart, heal).
    #[arg(long)]
    pub heal_cmd: Option<String>,
    /// Node name of the witness voter, for voter-loss.
    #[arg(long, default_value = "witness")]
    pub witness: String,
    /// Expect synchronous replication: any acknowledged commit lost fails the drill, even
    /// one the quarantine report lists. Also switched on when the deployment reports sync mode.
    #[arg(long)]
    pub expect_sync: bool,
    /// Bound on waiting for a failover, a restart or a catch-up.
    #[arg(long, default_value = "45s", value_parser = parse_duration)]
    pub react_timeout: Duration,
    /// Bound on waiting, after the workload, for every region to verify equal.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub converge_timeout: Duration,
    /// Pause of each writer between commits.
    #[arg(long, default_value_t = 50)]
    pub pause_ms: u64,
    /// Do not POST the report to the deployment's drill history.
    #[arg(long)]
    pub no_history: bool,
}

/// `20s`, `1m`, `1500ms`, `2` (seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("not a duration: {s}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("not a duration: {s} (use ms, s or m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Runs a drill command; answers the process exit code.
pub async fn main(cmd: DrillCommand) -> anyhow::Result<i32> {
    match cmd {
        DrillCommand::List => {
            for s in scenarios::SCENARIOS {
                println!("{:<20} {}", s.name, s.about);
            }
            Ok(0)
        }
        DrillCommand::Report { events, json } => {
            let text = std::fs::read_to_string(&events)
                .with_context(|| format!("reading {}", events.display()))?;
            let mut ev = Vec::new();
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                ev.push(
                    serde_json::from_str(line)
                        .with_context(|| format!("{}:{}", events.display(), i + 1))?,
                );
            }
            let r = report::compute(&ev);
            print_report(&r, json)?;
            Ok(if r.passed { 0 } else { 1 })
        }
        DrillCommand::Run(args) => {
            let r = run((*args).clone()).await?;
            print_report(&r, args.json)?;
            Ok(if r.passed { 0 } else { 1 })
        }
    }
}

fn print_report(r: &report::DrillReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else {
        print!("{}", r.table());
    }
    Ok(())
}

/// Whether a replication status answer says `catalog` replicates synchronously.
fn says_sync(v: &Value, catalog: &str) -> bool {
    let is_sync = |m: &Value| m.as_str() == Some("sync");
    if let Some(cats) = v.get("catalogs") {
        if let Some(c) = cats.get(catalog) {
            return is_sync(c.get("mode").unwrap_or(c));
        }
        if let Some(arr) = cats.as_array() {
            if let Some(c) = arr
                .iter()
                .find(|c| c["name"] == catalog || c["catalog"] == catalog)
            {
                return is_sync(&c["mode"]);
            }
        }
    }
    v.get("mode").is_some_and(is_sync)
}

/// Runs one drill and answers its report (also written to the out dir and the history).
pub async fn run(args: RunArgs) -> anyhow::Result<report::DrillReport> {
    if !scenarios::known(&args.scenario) {
        bail!(
            "unknown scenario {:?}; `pangolin drill list` shows them",
            args.scenario
        );
    }
    if args.writers == 0 {
        bail!("--writers must be at least 1");
    }
    let run_id = format!(
        "{}_{}",
        chrono::Utc::now().format("%Y%m%d%H%M%S"),
        &uuid::Uuid::new_v4().simple().to_string()[..4]
    );
    let urls = if args.endpoints.is_empty() {
        vec![
            "http://127.0.0.1:8181".to_string(),
            "http://127.0.0.1:8281".to_string(),
        ]
    } else {
        args.endpoints.clone()
    };
    let probe = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let mut endpoints = Vec::new();
    for url in &urls {
        let url = url.trim_end_matches('/').to_string();
        let region = Deployment::region_of(&probe, &url).await?;
        endpoints.push(Endpoint { region, url });
    }
    let dep = Deployment::new(endpoints, &args.catalog, &run_id);
    let (epoch, primary, status) = dep
        .control()
        .await
        .context("no endpoint answers /api/v1/control/status")?;
    let primary =
        primary.context("the control plane names no primary (a switchover is in progress?)")?;
    let secondary = dep
        .endpoints
        .iter()
        .map(|e| e.region.clone())
        .find(|r| *r != primary)
        .context("a drill needs the endpoints of two regions")?;
    let _ = status;

    let faults = match &args.fault_cmd {
        Some(cmd) => FaultInjector::Hooks {
            fault_cmd: cmd.clone(),
            heal_cmd: args.heal_cmd.clone(),
            scenario: args.scenario.clone(),
            run_id: run_id.clone(),
        },
        None => FaultInjector::supervisor(&args.fault_endpoint),
    };
    if args.scenario != "planned-switchover" {
        faults.preflight().await?;
    }

    let mut sync_mode = args.expect_sync;
    if let Some(e) = dep.endpoint(&primary) {
        if let Ok(r) = probe
            .get(format!("{}/api/v1/replication/status", e.url))
            .send()
            .await
        {
            if let Ok(v) = r.json::<Value>().await {
                sync_mode |= says_sync(&v, &args.catalog);
            }
        }
    }

    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("drill-reports").join(&run_id));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;

    eprintln!(
        "drill {run_id}: {} against {} (primary {primary}, epoch {epoch}), {} writers",
        args.scenario,
        dep.endpoints
            .iter()
            .map(|e| format!("{}={}", e.region, e.url))
            .collect::<Vec<_>>()
            .join(" "),
        args.writers
    );
    let uuids = dep.setup(args.writers).await?;

    let rec = Arc::new(Recorder::default());
    let poll_stop = CancellationToken::new();
    let poller = workload::spawn_poller(&dep, &rec, &poll_stop, Duration::from_millis(250));
    // let the poller take its first sample (and learn the history so far)
    tokio::time::sleep(Duration::from_millis(400)).await;

    let started = crate::clock::now_ms_unsigned();
    rec.record(
        started,
        EventKind::WorkloadStart(RunInfo {
            run_id: run_id.clone(),
            scenario: args.scenario.clone(),
            writers: args.writers,
            endpoints: dep
                .endpoints
                .iter()
                .map(|e| (e.region.clone(), e.url.clone()))
                .collect(),
            sync_mode,
            primary: Some(primary.clone()),
            epoch: Some(epoch),
        }),
    );
    let stop = CancellationToken::new();
    let mut tasks = workload::spawn_writers(&dep, &uuids, &rec, &stop, args.pause_ms);
    tasks.extend(workload::spawn_readers(&dep, args.writers, &rec, &stop));

    let quarter = args.duration / 4;
    let ctx = scenarios::ScenarioCtx {
        name: &args.scenario,
        dep: &dep,
        faults: &faults,
        rec: &rec,
        primary: primary.clone(),
        secondary,
        witness: args.witness.clone(),
        warmup: quarter,
        hold: quarter,
        react_timeout: args.react_timeout,
    };
    if let Err(e) = scenarios::run(&ctx).await {
        rec.note(format!("scenario stopped early: {e:#}"));
        rec.now(EventKind::Expectation {
            what: format!("every step of the scenario runs ({e:#})"),
            met: false,
        });
        // never leave a fault behind
        if matches!(faults, FaultInjector::Supervisor { .. }) {
            let _ = faults.apply(&faults::FaultAction::Heal).await;
        }
    }
    // the workload runs at least `duration`, and a quarter of it after the scenario's last step
    let least_end = started + args.duration.as_millis() as u64;
    let cooldown_end = crate::clock::now_ms_unsigned() + quarter.as_millis() as u64;
    let until = least_end.max(cooldown_end);
    tokio::time::sleep(Duration::from_millis(
        until.saturating_sub(crate::clock::now_ms_unsigned()),
    ))
    .await;
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    rec.now(EventKind::WorkloadEnd);

    checks::primary_contents(&dep, args.writers, &rec, args.react_timeout).await;
    // after convergence: a failed-back region quarantines its diverged commits on the way
    checks::converge(&dep, args.writers, &rec, args.converge_timeout).await;
    checks::quarantine(&dep, &rec).await;
    poll_stop.cancel();
    let _ = poller.await;

    let events = rec.events();
    let report = report::compute(&events);
    write_outputs(&out_dir, &report, &events)?;
    eprintln!("drill {run_id}: report in {}", out_dir.display());
    if !args.no_history {
        post_history(&dep, &report).await;
    }
    Ok(report)
}

fn write_outputs(
    dir: &std::path::Path,
    report: &report::DrillReport,
    events: &[report::Event],
) -> anyhow::Result<()> {
    let mut jsonl = String::new();
    for e in events {
        jsonl.push_str(&serde_json::to_string(e)?);
        jsonl.push('\n');
    }
    std::fs::write(dir.join("events.jsonl"), jsonl)?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    std::fs::write(dir.join("report.md"), report.markdown())?;
    std::fs::write(
        dir.join("timeline.svg"),
        chart::timeline_svg(
            &format!("drill {} — {}", report.id, report.scenario),
            events,
        ),
    )?;
    Ok(())
}

/// Stores the report in every region's drill history (each region keeps its own).
async fn post_history(dep: &Deployment, report: &report::DrillReport) {
    for e in &dep.endpoints {
        let r = dep
            .http
            .post(format!("{}/api/v1/drills", e.url))
            .json(report)
            .send()
            .await;
        match r {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => eprintln!(
                "drill history at {}: {} {}",
                e.region,
                r.status(),
                r.text().await.unwrap_or_default()
            ),
            Err(err) => eprintln!("drill history at {}: {err}", e.region),
        }
    }
}
