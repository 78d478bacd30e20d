//! The drill's event log and the report computed from it.
//!
//! Everything a drill observes is an [`Event`] with a wall-clock time stamp (ms since the Unix
//! epoch, the runner's clock): every commit attempt with its acknowledgement, reads, samples of
//! the control plane and of replication, the faults injected and the checks run at the end.
//! [`compute`] is a pure function of that log: the report's numbers can be recomputed from a
//! saved `events.jsonl` and are tested against scripted timelines (`tests/it/drill_report.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

/// One observation of the drill, at `at_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at_ms: u64,
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    pub fn new(at_ms: u64, kind: EventKind) -> Event {
        Event { at_ms, kind }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// The writers start committing (setup is done).
    WorkloadStart(RunInfo),
    /// The writers have stopped.
    WorkloadEnd,
    /// One commit attempt; `at_ms` is when the request was sent.
    Commit(CommitEvent),
    /// One read (loadTable); `at_ms` is when it was sent.
    Read(ReadEvent),
    /// The control plane as seen through one region's catalog endpoint.
    Control(ControlSample),
    /// A change of primary from the control plane's failover history (`at_ms` is the control
    /// plane's own time stamp of it).
    Failover(FailoverMark),
    /// The replication status of one region.
    Replication(ReplicationSample),
    /// A fault injected (or an operator hook / switchover started).
    Fault(FaultMark),
    /// A fault cleared (node restarted, links healed, hook run).
    Heal(FaultMark),
    /// After the workload: the drill ids found in the surviving primary's tables.
    PrimaryContents(PrimaryContents),
    /// After the workload: the quarantine report (commits of a failed-back region that the
    /// new primary never received).
    Quarantine(QuarantineCheck),
    /// After the workload: one round of `verify` over every non-primary region.
    Verify(VerifyRound),
    /// A reaction the scenario waited for (a failover, a catch-up, a restart) and whether it
    /// came within the bound: a drill whose fault never took effect proves nothing.
    Expectation { what: String, met: bool },
    /// Something the runner wants in the log (an error of its own, a step it took).
    Note { message: String },
}

/// What the run is; carried by [`EventKind::WorkloadStart`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub run_id: String,
    pub scenario: String,
    pub writers: u32,
    /// Catalog endpoints, by region.
    pub endpoints: BTreeMap<String, String>,
    /// Synchronous replication: every acknowledged commit must survive (RPO 0).
    pub sync_mode: bool,
    /// The region that was primary when the drill began.
    pub primary: Option<String>,
    pub epoch: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// 2xx: the catalog acknowledged the commit.
    Acked,
    /// An answer refusing it (4xx/5xx).
    Rejected,
    /// No answer (connection refused, timeout): the commit may or may not have happened.
    NoAnswer,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitEvent {
    /// The unique id the commit writes (a table property key).
    pub id: String,
    pub writer: u32,
    /// Region whose endpoint the request was sent to.
    pub endpoint_region: String,
    pub end_ms: u64,
    pub outcome: Outcome,
    pub status: Option<u16>,
    /// `x-pangolin-commit-token` as answered, when any.
    pub token: Option<String>,
    /// `x-pangolin-region`: the region that committed it.
    pub committed_region: Option<String>,
    /// Error type and message of a refusal (truncated).
    pub error: Option<String>,
}

impl CommitEvent {
    /// `(epoch, seq)` of the commit token, when it parses.
    pub fn token_parts(&self) -> Option<(u64, u64)> {
        parse_token(self.token.as_deref()?)
    }
}

/// Parses `x-pangolin-commit-token: <epoch>-<seq>`.
pub fn parse_token(token: &str) -> Option<(u64, u64)> {
    let (e, s) = token.trim().split_once('-')?;
    Some((e.parse().ok()?, s.parse().ok()?))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadEvent {
    pub region: String,
    pub end_ms: u64,
    pub ok: bool,
    pub status: Option<u16>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ControlSample {
    /// Region whose endpoint answered (or did not).
    pub via: String,
    /// False when the endpoint did not answer; the other fields are then empty.
    pub ok: bool,
    pub epoch: Option<u64>,
    pub primary: Option<String>,
    /// A switchover (or the fence of a failover) is in progress.
    pub fencing: bool,
    /// Raft leader (voter id) and term as the answering node's voter sees them.
    pub leader: Option<u64>,
    pub term: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailoverMark {
    pub from: Option<String>,
    pub to: String,
    pub epoch: u64,
    pub planned: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicationSample {
    pub region: String,
    pub ok: bool,
    pub role: Option<String>,
    pub state: Option<String>,
    pub watermark: Option<i64>,
    pub primary_head: Option<i64>,
    pub lag_records: Option<i64>,
    pub lag_seconds: Option<f64>,
    /// The replicator's last error, when it reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultMark {
    /// e.g. `kill`, `isolate`, `switchover`, `hook`, `restart`, `heal`.
    pub action: String,
    pub target: Option<String>,
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PrimaryContents {
    pub region: String,
    /// False when the primary's tables could not be read: nothing can be said about loss.
    pub ok: bool,
    pub ids: Vec<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QuarantineCheck {
    /// False when no quarantine report could be read.
    pub available: bool,
    /// Drill ids listed in the report's `properties`.
    pub ids: Vec<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VerifyRound {
    pub regions: Vec<RegionVerify>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegionVerify {
    pub region: String,
    /// How it was compared: `verify` (the replication verify API) or `pointers` (drill tables'
    /// metadata locations compared through loadTable, when verify is not served).
    pub method: String,
    pub equal: bool,
    /// Every pointer the region serves resolves to an object present in the region.
    pub pointers_resolve: bool,
    pub differences: Vec<serde_json::Value>,
    pub error: Option<String>,
}

// ---- the report ------------------------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DrillReport {
    pub id: String,
    pub scenario: String,
    pub started_ms: u64,
    pub finished_ms: u64,
    pub passed: bool,
    pub sync_mode: bool,
    pub writers: u32,
    pub primary_before: Option<String>,
    pub primary_after: Option<String>,
    pub epoch_before: Option<u64>,
    pub epoch_after: Option<u64>,
    /// First fault, relative to the workload start.
    pub fault_at_ms: Option<u64>,
    pub writes: WriteCounts,
    pub writes_by_region: BTreeMap<String, WriteCounts>,
    pub reads_by_region: BTreeMap<String, ReadCounts>,
    /// Fault → first sign of the control plane reacting (fence, new epoch, new Raft leader).
    pub time_to_detect_ms: Option<u64>,
    /// Detection → new primary active at a new epoch (or, without a change of primary, fault
    /// → new Raft leader).
    pub election_ms: Option<u64>,
    /// Longest window of the workload with no acknowledged write.
    pub rto_ms: u64,
    pub rto_window: Option<(u64, u64)>,
    /// Acknowledged commits missing from the surviving primary.
    pub rpo_lost: usize,
    pub rpo_lost_ids: Vec<String>,
    /// Of those, the ones the quarantine report lists.
    pub quarantined_ids: Vec<String>,
    /// Lost and not listed anywhere: silent loss.
    pub unreported_lost_ids: Vec<String>,
    /// Commits refused because the region was fenced (lease or epoch), 503.
    pub stale_epoch_rejected: usize,
    /// Commits acknowledged under an epoch older than one already established when the
    /// request was sent (or by a region that was no longer primary).
    pub split_brain_accepted: usize,
    pub split_brain_ids: Vec<String>,
    /// Replication lag of each secondary in the last sample before the fault.
    pub lag_at_cut: Vec<LagAtCut>,
    /// Workload end → every region verifies equal with the primary.
    pub time_to_converge_ms: Option<u64>,
    pub invariants: Vec<Invariant>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteCounts {
    pub attempted: usize,
    pub acked: usize,
    pub rejected: usize,
    pub no_answer: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadCounts {
    pub attempted: usize,
    pub ok: usize,
    pub failed: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LagAtCut {
    pub region: String,
    pub records: Option<i64>,
    pub seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invariant {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// Whether a refusal is the fencing of a region that may not commit (lease or epoch).
fn is_fencing_refusal(c: &CommitEvent) -> bool {
    if c.outcome != Outcome::Rejected || c.status != Some(503) {
        return false;
    }
    let e = c.error.as_deref().unwrap_or("").to_ascii_lowercase();
    [
        "epoch",
        "lease",
        "fenc",
        "may not commit",
        "not the primary",
        "no primary",
    ]
    .iter()
    .any(|w| e.contains(w))
}

/// Computes the report from the event log. Pure: same events, same report.
pub fn compute(events: &[Event]) -> DrillReport {
    let mut events: Vec<&Event> = events.iter().collect();
    events.sort_by_key(|e| e.at_ms);

    let mut r = DrillReport::default();
    let mut start = None;
    let mut end = None;
    for e in &events {
        match &e.kind {
            EventKind::WorkloadStart(info) if start.is_none() => {
                start = Some(e.at_ms);
                r.id = info.run_id.clone();
                r.scenario = info.scenario.clone();
                r.sync_mode = info.sync_mode;
                r.writers = info.writers;
                r.primary_before = info.primary.clone();
                r.epoch_before = info.epoch;
            }
            EventKind::WorkloadEnd => end = Some(e.at_ms),
            _ => {}
        }
    }
    let start = start.unwrap_or_else(|| events.first().map_or(0, |e| e.at_ms));
    let end = end.unwrap_or_else(|| events.last().map_or(start, |e| e.at_ms));
    r.started_ms = start;
    r.finished_ms = events.last().map_or(end, |e| e.at_ms).max(end);

    let commits: Vec<(u64, &CommitEvent)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Commit(c) => Some((e.at_ms, c)),
            _ => None,
        })
        .collect();
    let controls: Vec<(u64, &ControlSample)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Control(c) if c.ok => Some((e.at_ms, c)),
            _ => None,
        })
        .collect();
    let failovers: Vec<(u64, &FailoverMark)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Failover(f) => Some((e.at_ms, f)),
            _ => None,
        })
        .collect();
    let fault_at = events.iter().find_map(|e| match e.kind {
        EventKind::Fault(_) => Some(e.at_ms),
        _ => None,
    });
    r.fault_at_ms = fault_at.map(|f| f.saturating_sub(start));

    // ---- counts
    for (_, c) in &commits {
        let by = r
            .writes_by_region
            .entry(c.endpoint_region.clone())
            .or_default();
        for w in [&mut r.writes, by] {
            w.attempted += 1;
            match c.outcome {
                Outcome::Acked => w.acked += 1,
                Outcome::Rejected => w.rejected += 1,
                Outcome::NoAnswer => w.no_answer += 1,
            }
        }
    }
    for e in &events {
        if let EventKind::Read(rd) = &e.kind {
            let c = r.reads_by_region.entry(rd.region.clone()).or_default();
            c.attempted += 1;
            if rd.ok {
                c.ok += 1;
            } else {
                c.failed += 1;
            }
        }
    }
    r.stale_epoch_rejected = commits
        .iter()
        .filter(|(_, c)| is_fencing_refusal(c))
        .count();

    // ---- epochs: when each was first known (control samples, failover marks, ack tokens)
    let mut established: BTreeMap<u64, u64> = BTreeMap::new();
    let mut know = |epoch: u64, at: u64| {
        let t = established.entry(epoch).or_insert(at);
        *t = (*t).min(at);
    };
    for (at, c) in &controls {
        if let Some(ep) = c.epoch {
            know(ep, *at);
        }
    }
    for (at, f) in &failovers {
        know(f.epoch, *at);
    }
    for (_, c) in &commits {
        if c.outcome == Outcome::Acked {
            if let Some((ep, _)) = c.token_parts() {
                know(ep, c.end_ms);
            }
        }
    }
    // primary of each epoch, as observed
    let mut primary_of: HashMap<u64, String> = HashMap::new();
    for (_, c) in &controls {
        if let (Some(ep), Some(p)) = (c.epoch, &c.primary) {
            primary_of.entry(ep).or_insert_with(|| p.clone());
        }
    }
    for (_, f) in &failovers {
        primary_of.entry(f.epoch).or_insert_with(|| f.to.clone());
    }
    if let (Some(ep), Some(p)) = (r.epoch_before, &r.primary_before) {
        primary_of.entry(ep).or_insert_with(|| p.clone());
    }

    // ---- split brain: an ack under an epoch older than one known before the request started;
    // without a token, an ack by a region that was not the primary of the newest epoch known
    // before the request started.
    for (sent, c) in &commits {
        if c.outcome != Outcome::Acked {
            continue;
        }
        let newest_known = established
            .iter()
            .filter(|(_, t)| **t < *sent)
            .map(|(e, _)| *e)
            .max();
        let stale = match (c.token_parts(), newest_known) {
            (Some((ep, _)), Some(known)) => ep < known,
            (None, Some(known)) => match (&c.committed_region, primary_of.get(&known)) {
                (Some(region), Some(primary)) => region != primary,
                _ => false,
            },
            _ => false,
        };
        if stale {
            r.split_brain_ids.push(c.id.clone());
        }
    }
    r.split_brain_accepted = r.split_brain_ids.len();

    // ---- RTO: the longest stretch of the workload without an acknowledged write
    let mut acks: Vec<u64> = commits
        .iter()
        .filter(|(_, c)| c.outcome == Outcome::Acked)
        .map(|(_, c)| c.end_ms.clamp(start, end))
        .collect();
    acks.sort_unstable();
    let mut prev = start;
    let mut best = (0u64, None);
    for t in acks.iter().copied().chain(std::iter::once(end)) {
        if t.saturating_sub(prev) > best.0 {
            best = (t - prev, Some((prev - start, t - start)));
        }
        prev = prev.max(t);
    }
    r.rto_ms = best.0;
    r.rto_window = best.1;

    // ---- detection and election
    if let Some(fault) = fault_at {
        let before = controls
            .iter()
            .rev()
            .find(|(at, _)| *at <= fault)
            .map(|(_, c)| *c);
        let epoch0 = before.and_then(|c| c.epoch).or(r.epoch_before).unwrap_or(0);
        let primary0 = before
            .and_then(|c| c.primary.clone())
            .or(r.primary_before.clone());
        let leader0 = before.and_then(|c| c.leader);
        let after = |at: &u64| *at >= fault;
        let detect_sample = controls.iter().filter(|(at, _)| after(at)).find(|(_, c)| {
            c.fencing
                || c.epoch.is_some_and(|e| e > epoch0)
                || (c.primary.is_some() && c.primary != primary0)
                || (leader0.is_some() && c.leader.is_some() && c.leader != leader0)
        });
        let elected = controls
            .iter()
            .filter(|(at, _)| after(at))
            .find(|(_, c)| c.epoch.is_some_and(|e| e > epoch0) && c.primary.is_some())
            .map(|(at, _)| *at);
        let elected_mark = failovers
            .iter()
            .filter(|(at, f)| after(at) && f.epoch > epoch0)
            .map(|(at, _)| *at)
            .min();
        let elected = match (elected, elected_mark) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let detected = match (detect_sample.map(|(at, _)| *at), elected) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        r.time_to_detect_ms = detected.map(|d| d - fault);
        r.election_ms = match (detected, elected) {
            (Some(d), Some(e)) => Some(e - d),
            _ => controls
                .iter()
                .filter(|(at, _)| after(at))
                .find(|(_, c)| leader0.is_some() && c.leader.is_some() && c.leader != leader0)
                .map(|(at, _)| at - fault),
        };

        // ---- lag at the cut: each region's last sample before the fault
        let mut last: BTreeMap<&str, &ReplicationSample> = BTreeMap::new();
        for e in &events {
            if e.at_ms > fault {
                break;
            }
            if let EventKind::Replication(s) = &e.kind {
                if s.ok && s.role.as_deref() != Some("primary") {
                    last.insert(&s.region, s);
                }
            }
        }
        r.lag_at_cut = last
            .values()
            .map(|s| LagAtCut {
                region: s.region.clone(),
                records: s.lag_records,
                seconds: s.lag_seconds,
            })
            .collect();
    }
    if let Some((_, c)) = controls.last() {
        r.epoch_after = c.epoch;
        r.primary_after = c.primary.clone();
    }
    if let Some(ep) = r.epoch_after {
        if let Some(f) = failovers.iter().rev().find(|(_, f)| f.epoch > ep) {
            r.epoch_after = Some(f.1.epoch);
            r.primary_after = Some(f.1.to.clone());
        }
    }

    // ---- RPO
    let contents = events.iter().rev().find_map(|e| match &e.kind {
        EventKind::PrimaryContents(p) => Some(p),
        _ => None,
    });
    let quarantine = events.iter().rev().find_map(|e| match &e.kind {
        EventKind::Quarantine(q) => Some(q),
        _ => None,
    });
    let acked_ids: Vec<&str> = commits
        .iter()
        .filter(|(_, c)| c.outcome == Outcome::Acked)
        .map(|(_, c)| c.id.as_str())
        .collect();
    let mut invariants = Vec::new();
    match contents {
        Some(p) if p.ok => {
            let present: BTreeSet<&str> = p.ids.iter().map(String::as_str).collect();
            let listed: BTreeSet<&str> = quarantine
                .map(|q| q.ids.iter().map(String::as_str).collect())
                .unwrap_or_default();
            for id in &acked_ids {
                if !present.contains(id) {
                    r.rpo_lost_ids.push(id.to_string());
                    if listed.contains(id) {
                        r.quarantined_ids.push(id.to_string());
                    } else {
                        r.unreported_lost_ids.push(id.to_string());
                    }
                }
            }
            r.rpo_lost = r.rpo_lost_ids.len();
            let (passed, detail) = if r.sync_mode {
                (
                    r.rpo_lost == 0,
                    format!(
                        "sync mode: {} of {} acknowledged commits missing from primary {}",
                        r.rpo_lost,
                        acked_ids.len(),
                        p.region
                    ),
                )
            } else {
                (
                    r.unreported_lost_ids.is_empty(),
                    format!(
                        "{} of {} acknowledged commits missing from primary {}, {} of them \
                         listed in the quarantine report",
                        r.rpo_lost,
                        acked_ids.len(),
                        p.region,
                        r.quarantined_ids.len()
                    ),
                )
            };
            invariants.push(Invariant {
                name: "acknowledged_commits_survive".into(),
                passed,
                detail,
            });
        }
        other => invariants.push(Invariant {
            name: "acknowledged_commits_survive".into(),
            passed: false,
            detail: format!(
                "the surviving primary's tables could not be read: {}",
                other
                    .and_then(|p| p.error.clone())
                    .unwrap_or_else(|| "no check ran".into())
            ),
        }),
    }
    invariants.push(Invariant {
        name: "no_split_brain_writes".into(),
        passed: r.split_brain_accepted == 0,
        detail: format!(
            "{} commits acknowledged under a stale epoch",
            r.split_brain_accepted
        ),
    });

    // ---- convergence and pointers
    let rounds: Vec<(u64, &VerifyRound)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Verify(v) => Some((e.at_ms, v)),
            _ => None,
        })
        .collect();
    let converged = rounds
        .iter()
        .find(|(_, v)| !v.regions.is_empty() && v.regions.iter().all(|x| x.equal));
    r.time_to_converge_ms = converged.map(|(at, _)| at.saturating_sub(end));
    let last_round = rounds.last().map(|(_, v)| *v);
    let pointer_failures: Vec<String> = last_round
        .map(|v| {
            v.regions
                .iter()
                .filter(|x| !x.pointers_resolve)
                .map(|x| x.region.clone())
                .collect()
        })
        .unwrap_or_default();
    invariants.push(Invariant {
        name: "pointers_resolve".into(),
        passed: last_round.is_some() && pointer_failures.is_empty(),
        detail: match last_round {
            None => "no verify ran".into(),
            Some(_) if pointer_failures.is_empty() => {
                "every region's pointers resolve to objects present in the region".into()
            }
            Some(_) => format!("unresolved pointers in {}", pointer_failures.join(", ")),
        },
    });
    invariants.push(Invariant {
        name: "regions_converge".into(),
        passed: converged.is_some(),
        detail: match (converged, last_round) {
            (Some(_), _) => format!(
                "every region equal to the primary {} ms after the workload ended",
                r.time_to_converge_ms.unwrap_or(0)
            ),
            (None, None) => "no verify ran".into(),
            (None, Some(v)) => {
                let diff: Vec<String> = v
                    .regions
                    .iter()
                    .filter(|x| !x.equal)
                    .map(|x| {
                        format!(
                            "{} ({} differences{})",
                            x.region,
                            x.differences.len(),
                            x.error
                                .as_ref()
                                .map(|e| format!(", {e}"))
                                .unwrap_or_default()
                        )
                    })
                    .collect();
                format!("not converged: {}", diff.join("; "))
            }
        },
    });
    let expectations: Vec<(&String, bool)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Expectation { what, met } => Some((what, *met)),
            _ => None,
        })
        .collect();
    if !expectations.is_empty() {
        let missed: Vec<&str> = expectations
            .iter()
            .filter(|(_, met)| !met)
            .map(|(w, _)| w.as_str())
            .collect();
        invariants.push(Invariant {
            name: "scenario_took_effect".into(),
            passed: missed.is_empty(),
            detail: if missed.is_empty() {
                format!("all {} expected reactions seen", expectations.len())
            } else {
                format!("not seen within the bound: {}", missed.join("; "))
            },
        });
    }
    r.passed = invariants.iter().all(|i| i.passed);
    r.invariants = invariants;
    r
}

fn opt_ms(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{:.1} s", v as f64 / 1000.0))
}

impl DrillReport {
    /// The key figures as (name, value) rows, for the table and the Markdown.
    pub fn rows(&self) -> Vec<(&'static str, String)> {
        let lag = if self.lag_at_cut.is_empty() {
            "-".to_string()
        } else {
            self.lag_at_cut
                .iter()
                .map(|l| {
                    format!(
                        "{}: {} records / {}",
                        l.region,
                        l.records.map_or("?".into(), |r| r.to_string()),
                        l.seconds.map_or("?".into(), |s| format!("{s:.2} s"))
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        vec![
            ("scenario", self.scenario.clone()),
            (
                "replication mode",
                if self.sync_mode { "sync" } else { "async" }.into(),
            ),
            (
                "primary",
                format!(
                    "{} (epoch {}) -> {} (epoch {})",
                    self.primary_before.as_deref().unwrap_or("?"),
                    self.epoch_before.map_or("?".into(), |e| e.to_string()),
                    self.primary_after.as_deref().unwrap_or("?"),
                    self.epoch_after.map_or("?".into(), |e| e.to_string())
                ),
            ),
            (
                "writes",
                format!(
                    "{} attempted, {} acked, {} rejected, {} unanswered",
                    self.writes.attempted,
                    self.writes.acked,
                    self.writes.rejected,
                    self.writes.no_answer
                ),
            ),
            ("fault at", opt_ms(self.fault_at_ms)),
            ("time to detect", opt_ms(self.time_to_detect_ms)),
            ("election time", opt_ms(self.election_ms)),
            ("RTO (longest write gap)", opt_ms(Some(self.rto_ms))),
            (
                "RPO (acked commits lost)",
                format!(
                    "{} ({} quarantined, {} unreported)",
                    self.rpo_lost,
                    self.quarantined_ids.len(),
                    self.unreported_lost_ids.len()
                ),
            ),
            (
                "stale-epoch writes rejected",
                self.stale_epoch_rejected.to_string(),
            ),
            (
                "split-brain writes accepted",
                self.split_brain_accepted.to_string(),
            ),
            ("replication lag at the cut", lag),
            ("time to converge", opt_ms(self.time_to_converge_ms)),
        ]
    }

    /// The table printed on stdout.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let rows = self.rows();
        let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        out.push_str(&format!("drill {} ({})\n", self.id, self.scenario));
        for (k, v) in &rows {
            out.push_str(&format!("  {k:<w$}  {v}\n"));
        }
        out.push_str("invariants:\n");
        for i in &self.invariants {
            out.push_str(&format!(
                "  [{}] {}: {}\n",
                if i.passed { "PASS" } else { "FAIL" },
                i.name,
                i.detail
            ));
        }
        out.push_str(if self.passed {
            "result: PASSED\n"
        } else {
            "result: FAILED\n"
        });
        out
    }

    /// The report as Markdown (`report.md`).
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "# Drill `{}`: {}\n\nResult: **{}**\n\n| figure | value |\n|---|---|\n",
            self.id,
            self.scenario,
            if self.passed { "PASSED" } else { "FAILED" }
        );
        for (k, v) in self.rows() {
            out.push_str(&format!("| {k} | {} |\n", v.replace('|', "\\|")));
        }
        out.push_str("\n## Invariants\n\n");
        for i in &self.invariants {
            out.push_str(&format!(
                "- {} **{}**: {}\n",
                if i.passed { "PASS" } else { "FAIL" },
                i.name,
                i.detail
            ));
        }
        let list = |title: &str, ids: &[String]| {
            if ids.is_empty() {
                String::new()
            } else {
                format!(
                    "\n## {title}\n\n{}\n",
                    ids.iter().map(|i| format!("- `{i}`\n")).collect::<String>()
                )
            }
        };
        out.push_str(&list("Acknowledged commits lost (RPO)", &self.rpo_lost_ids));
        out.push_str(&list("Split-brain commits", &self.split_brain_ids));
        out.push_str(
            "\n## Writes and reads by region\n\n| region | writes acked | rejected | unanswered | reads ok | reads failed |\n|---|---|---|---|---|---|\n",
        );
        let regions: BTreeSet<&String> = self
            .writes_by_region
            .keys()
            .chain(self.reads_by_region.keys())
            .collect();
        for region in regions {
            let w = self
                .writes_by_region
                .get(region)
                .cloned()
                .unwrap_or_default();
            let rd = self
                .reads_by_region
                .get(region)
                .cloned()
                .unwrap_or_default();
            out.push_str(&format!(
                "| {region} | {} | {} | {} | {} | {} |\n",
                w.acked, w.rejected, w.no_answer, rd.ok, rd.failed
            ));
        }
        out.push_str("\n![timeline](timeline.svg)\n");
        out
    }
}
