//! What the primary knows of its secondaries, and sync-mode commits.
//!
//! Every secondary's replicator long-polls `GET /api/v1/replication/changes` with
//! `region=<its region>&applied=<its watermark>` and asks again only after it applied what
//! it got, so each poll tells the primary how far that region has applied. [`SyncReplication`]
//! keeps that per region (with when it last polled and whether a poll is in flight), a ring
//! of this node's recent commits (for the lag in seconds and bytes), and lets a commit in a
//! catalog in `sync` mode wait — on a watch channel, not by polling — until every healthy
//! secondary applied it. A secondary that stays behind past the catalog's `sync_timeout_ms`,
//! or that is unreachable (no poll within `sync_health_window_ms` and none in flight), is
//! handled by the catalog's [`SyncPolicy`]: `block` fails the write with 503 (the commit IS
//! durable at the primary), `degrade` acknowledges it and reports the region degraded until
//! it applied everything acknowledged without it.
//!
//! Reports are trusted only as far as this node can check them ([`SyncReplication::report`]):
//! only the regions of the configured topology may report (nothing is kept for any other
//! name), and a region counts as having applied a seq only when this node has shipped it
//! that seq in a page of the change log — the highest seq shipped to each region is tracked
//! ([`SyncReplication::shipped`]). A known watermark never moves backwards. The peer secret
//! that authenticates reports is checked by the API (`super::api`) before any of this.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::clock::now_ms;
use crate::config::{CatalogReplicationMode, ReplicationMode, ReplicationSection, SyncPolicy};

/// `(epoch, seq)` of a commit, as `x-pangolin-commit-token: <epoch>-<seq>` carries it:
/// `seq` is the primary's change-log head right after the commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitToken {
    pub epoch: i64,
    pub seq: i64,
}

impl fmt::Display for CommitToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch, self.seq)
    }
}

impl FromStr for CommitToken {
    type Err = String;

    fn from_str(s: &str) -> Result<CommitToken, String> {
        let bad = || format!("commit token {s:?} is not <epoch>-<seq>");
        let (epoch, seq) = s.trim().split_once('-').ok_or_else(bad)?;
        let epoch: i64 = epoch.parse().map_err(|_| bad())?;
        let seq: i64 = seq.parse().map_err(|_| bad())?;
        if epoch < 0 || seq < 0 {
            return Err(bad());
        }
        Ok(CommitToken { epoch, seq })
    }
}

/// Recent local commits kept for the lag figures.
const RECENT_COMMITS: usize = 65_536;

/// A secondary region as the primary sees it through its pulls.
#[derive(Debug, Clone)]
struct Secondary {
    /// Highest watermark it reported that this node could check, i.e. at most what this
    /// node shipped it (None: no such report since this node started or its epoch changed).
    applied: Option<i64>,
    /// Highest seq this node put in a page of the change log answered to this region (0:
    /// none yet, since this node started or its epoch changed).
    shipped: i64,
    last_seen: Instant,
    last_seen_ms: Option<i64>,
    in_flight: u32,
    degraded: Option<Degradation>,
}

impl Secondary {
    fn new() -> Secondary {
        Secondary {
            applied: None,
            shipped: 0,
            last_seen: Instant::now(),
            last_seen_ms: None,
            in_flight: 0,
            degraded: None,
        }
    }
}

/// The secondaries, and the fencing epoch of this node's log their figures refer to.
#[derive(Debug, Default)]
struct Secondaries {
    /// Epoch of the change log the watermarks and shipped seqs were learnt under (None:
    /// no pull yet).
    epoch: Option<i64>,
    regions: HashMap<String, Secondary>,
}

/// Why a pull's report was refused (answered 400; nothing is recorded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// Not a region of the configured topology (or this region itself).
    #[error("region {0:?} is not a replication peer of this region: only the regions of the configured topology ([[regions]], replication.followers) may report")]
    UnknownRegion(String),
    /// A watermark this node cannot have caused.
    #[error("{0}")]
    Implausible(String),
}

/// A secondary acknowledged commits went without (policy `degrade`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Degradation {
    pub since_ms: i64,
    pub reason: String,
    /// The highest seq acknowledged without it: degraded until it applied this.
    pub until_seq: i64,
    /// Commits acknowledged without it in this episode.
    pub commits: u64,
}

/// One secondary in the replication status of the primary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecondaryStatus {
    pub region: String,
    /// The watermark it last reported (None: not heard from since this node started).
    pub applied: Option<i64>,
    /// When it last pulled (epoch ms).
    pub last_seen_ms: Option<i64>,
    /// It pulled within `sync_health_window_ms` or has a pull in flight.
    pub healthy: bool,
    pub degraded: bool,
    pub degradation: Option<Degradation>,
    /// Records of this node's log it has not applied (None: unknown).
    pub lag_records: Option<i64>,
    /// Age of the oldest commit of this node it has not applied (0 when caught up).
    pub lag_seconds: Option<f64>,
    /// Bytes of data files added by commits of this node it has not applied (from the
    /// snapshot summaries' `added-files-size`; an estimate, manifests not counted).
    pub pending_bytes: u64,
}

/// A secondary that did not apply a sync commit in time.
#[derive(Debug, Clone, PartialEq)]
pub struct Laggard {
    pub region: String,
    pub applied: Option<i64>,
    pub healthy: bool,
}

impl fmt::Display for Laggard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.healthy, self.applied) {
            (true, Some(a)) => write!(f, "{} (applied through seq {a})", self.region),
            (true, None) => write!(f, "{} (not heard from yet)", self.region),
            (false, Some(a)) => write!(
                f,
                "{} (unreachable: no pull recently; applied through seq {a})",
                self.region
            ),
            (false, None) => write!(
                f,
                "{} (unreachable: no pull since this node started)",
                self.region
            ),
        }
    }
}

/// How a sync commit ended.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncOutcome {
    /// Every healthy secondary applied it (there may be none).
    Replicated { waited: Duration },
    /// Some did not; the policy decides.
    Behind {
        waited: Duration,
        laggards: Vec<Laggard>,
    },
}

/// A pull in flight; dropping it marks the end of the pull.
pub struct PollGuard<'a> {
    sync: &'a SyncReplication,
    region: String,
}

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        let mut secs = self.sync.lock();
        if let Some(s) = secs.regions.get_mut(&self.region) {
            s.in_flight = s.in_flight.saturating_sub(1);
            s.last_seen = Instant::now();
            s.last_seen_ms = Some(now_ms());
        }
    }
}

/// The secondaries of this node's region and the sync-mode settings.
pub struct SyncReplication {
    region: String,
    settings: ReplicationSection,
    /// The regions that may report: the other `[[regions]]` and `replication.followers`.
    peers: BTreeSet<String>,
    secondaries: Mutex<Secondaries>,
    /// Bumped whenever a secondary reports a newer watermark.
    progress: watch::Sender<u64>,
    /// (seq, committed at ms, data bytes added) of this node's recent commits.
    commits: Mutex<VecDeque<(i64, i64, u64)>>,
}

impl SyncReplication {
    /// `expected`: the other catalog regions of the deployment (`[[regions]]`); they count
    /// as secondaries from the start (a secondary that never pulls is unreachable once the
    /// health window passes). The regions of `settings.followers` count once they pull. No
    /// other region is ever tracked: its pulls are refused.
    pub fn new(
        region: String,
        settings: ReplicationSection,
        expected: impl IntoIterator<Item = String>,
    ) -> SyncReplication {
        let expected: BTreeSet<String> = expected.into_iter().filter(|r| *r != region).collect();
        let regions = expected
            .iter()
            .map(|r| (r.clone(), Secondary::new()))
            .collect();
        let peers = expected
            .into_iter()
            .chain(settings.followers.iter().cloned())
            .filter(|r| *r != region)
            .collect();
        SyncReplication {
            region,
            settings,
            peers,
            secondaries: Mutex::new(Secondaries {
                epoch: None,
                regions,
            }),
            progress: watch::Sender::new(0),
            commits: Mutex::new(VecDeque::new()),
        }
    }

    /// Async everywhere, no secondaries known (a standalone node, tests).
    pub fn standalone(region: String) -> SyncReplication {
        SyncReplication::new(region, ReplicationSection::default(), Vec::new())
    }

    pub fn settings(&self) -> &ReplicationSection {
        &self.settings
    }

    /// The settings in force for catalog `name`.
    pub fn mode_of(&self, name: &str) -> CatalogReplicationMode {
        self.settings.mode_of(name)
    }

    /// The default mode (catalogs without an override).
    pub fn default_mode(&self) -> ReplicationMode {
        self.settings.mode
    }

    /// Whether `region` may pull with a report: one of the configured peers.
    pub fn is_peer(&self, region: &str) -> bool {
        self.peers.contains(region)
    }

    /// [`SyncReplication::is_peer`], as the error a refused report gets.
    pub fn check_peer(&self, region: &str) -> Result<(), ReportError> {
        match self.is_peer(region) {
            true => Ok(()),
            false => Err(ReportError::UnknownRegion(clip(region))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Secondaries> {
        match self.secondaries.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn commits(&self) -> std::sync::MutexGuard<'_, VecDeque<(i64, i64, u64)>> {
        match self.commits.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// A secondary `region` pulls records after `after`, reporting (when `applied` is
    /// given) that it applied through `applied`; `head` and `epoch` are this node's change
    /// log head and fencing epoch now. Hold the guard for the duration of the pull, then
    /// call [`SyncReplication::shipped`] with what the page carried.
    ///
    /// A region that is not a configured peer is refused and nothing is recorded for it.
    /// A report is checked against what this node shipped that region (`shipped`):
    ///
    /// - `applied` ≤ shipped: the region was sent every record through `applied`; the
    ///   watermark is raised to it (never lowered: a lower report is ignored), which may end
    ///   sync waits and a degradation.
    /// - shipped < `applied` = `after` ≤ `head`: accepted as a pull (the region is healthy)
    ///   but NOT counted. This is how every replicator pulls (it reports the watermark it
    ///   asks records after), and right after this node started, or after its epoch changed,
    ///   nothing was shipped yet, so a legitimate replicator is here until its next page.
    ///   Counting it would let any caller claim records it was never sent (`after` is the
    ///   caller's word): a sync commit is acknowledged only once the region reports a seq
    ///   this node really sent it. Refusing it would stop every replicator after a restart.
    /// - anything else (`applied` beyond `head`, or beyond what was shipped and not the
    ///   `after` of the pull, or negative) is refused.
    ///
    /// The figures belong to one epoch of this node's log: when the epoch changed (this
    /// node became primary again after a switchover or failover, its log possibly rewound
    /// by a failback meanwhile), the watermarks and shipped seqs learnt before are dropped.
    pub fn report(
        &self,
        region: &str,
        after: i64,
        applied: Option<i64>,
        head: i64,
        epoch: i64,
    ) -> Result<PollGuard<'_>, ReportError> {
        self.check_peer(region)?;
        let advanced = {
            let mut secs = self.lock();
            if secs.epoch != Some(epoch) {
                if secs.epoch.is_some() {
                    tracing::info!(
                        region = %self.region, epoch,
                        "fencing epoch changed: the secondaries' watermarks are learnt again"
                    );
                    for s in secs.regions.values_mut() {
                        s.applied = None;
                        s.shipped = 0;
                    }
                }
                secs.epoch = Some(epoch);
            }
            let shipped = secs.regions.get(region).map_or(0, |s| s.shipped);
            let verified = match applied {
                None => None,
                Some(a) if a < 0 => {
                    return Err(ReportError::Implausible(format!(
                        "applied must not be negative (got {a})"
                    )))
                }
                Some(a) if a > head => {
                    return Err(ReportError::Implausible(format!(
                        "region {region} reports applied through seq {a}, beyond the head of \
                         this region's change log ({head})"
                    )))
                }
                Some(a) if a <= shipped => Some(a),
                Some(a) if a == after => None,
                Some(a) => {
                    return Err(ReportError::Implausible(format!(
                        "region {region} reports applied through seq {a}, but this node has \
                         shipped it records only through seq {shipped}"
                    )))
                }
            };
            let s = secs
                .regions
                .entry(region.to_string())
                .or_insert_with(Secondary::new);
            s.in_flight += 1;
            s.last_seen = Instant::now();
            s.last_seen_ms = Some(now_ms());
            // Never backwards: a region rebuilt meanwhile reports less than before, but
            // everything it reported before had been shipped to it, and a sync commit waits
            // for a seq above what was shipped when it committed, so an old high value
            // cannot acknowledge it.
            let advanced = match verified {
                Some(a) if s.applied.is_none_or(|known| a > known) => {
                    s.applied = Some(a);
                    true
                }
                _ => false,
            };
            if let (Some(known), Some(d)) = (s.applied, &s.degraded) {
                if known >= d.until_seq {
                    tracing::warn!(
                        region = %self.region, secondary = region, applied = known,
                        commits = d.commits, since_ms = d.since_ms,
                        "secondary caught up: sync replication no longer degraded"
                    );
                    s.degraded = None;
                }
            }
            advanced
        };
        if advanced {
            self.progress.send_modify(|v| *v = v.wrapping_add(1));
        }
        Ok(PollGuard {
            sync: self,
            region: region.to_string(),
        })
    }

    /// This node answered `region` a page of its change log under `epoch` whose records end
    /// at `last_seq`: the region may now report up to it.
    pub fn shipped(&self, region: &str, epoch: i64, last_seq: i64) {
        let mut secs = self.lock();
        if secs.epoch != Some(epoch) {
            // The epoch changed during the pull: the next pull starts over.
            return;
        }
        if let Some(s) = secs.regions.get_mut(region) {
            s.shipped = s.shipped.max(last_seq);
        }
    }

    /// Whether any region pulls (or is expected to pull) this node's log.
    pub fn has_secondaries(&self) -> bool {
        !self.lock().regions.is_empty()
    }

    /// Records a commit of this node (for the lag in seconds and bytes).
    pub fn commit_recorded(&self, seq: i64, added_bytes: u64) {
        let mut c = self.commits();
        if c.back().is_some_and(|(s, _, _)| *s >= seq) {
            return;
        }
        if c.len() >= RECENT_COMMITS {
            c.pop_front();
        }
        c.push_back((seq, now_ms(), added_bytes));
    }

    fn healthy(&self, s: &Secondary) -> bool {
        s.in_flight > 0
            || s.last_seen.elapsed() <= Duration::from_millis(self.settings.sync_health_window_ms)
    }

    /// Secondaries that have not applied `seq`.
    fn behind(&self, seq: i64) -> Vec<Laggard> {
        let secs = self.lock();
        let mut v: Vec<Laggard> = secs
            .regions
            .iter()
            .filter(|(_, s)| s.applied.is_none_or(|a| a < seq))
            .map(|(r, s)| Laggard {
                region: r.clone(),
                applied: s.applied,
                healthy: self.healthy(s),
            })
            .collect();
        v.sort_by(|a, b| a.region.cmp(&b.region));
        v
    }

    /// Waits until every healthy secondary applied `seq`, at most `timeout`. Unreachable
    /// secondaries are not waited for (they are returned as laggards at once).
    pub async fn wait_applied(&self, seq: i64, timeout: Duration) -> SyncOutcome {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.progress.subscribe();
        loop {
            rx.borrow_and_update();
            let laggards = self.behind(seq);
            let waiting = laggards.iter().any(|l| l.healthy);
            if laggards.is_empty() {
                return SyncOutcome::Replicated {
                    waited: started.elapsed(),
                };
            }
            if !waiting || tokio::time::Instant::now() >= deadline {
                return SyncOutcome::Behind {
                    waited: started.elapsed(),
                    laggards,
                };
            }
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {}
                // A secondary may turn unreachable while we wait.
                _ = tokio::time::sleep(Duration::from_millis(self.settings.sync_health_window_ms)) => {}
            }
        }
    }

    /// Policy `degrade`: commit `seq` was acknowledged without `laggards`. Logs an ERROR
    /// when a region's degradation starts.
    pub fn degrade(&self, seq: i64, catalog: &str, laggards: &[Laggard]) {
        let mut secs = self.lock();
        for l in laggards {
            let Some(s) = secs.regions.get_mut(&l.region) else {
                continue;
            };
            match &mut s.degraded {
                Some(d) => {
                    d.until_seq = d.until_seq.max(seq);
                    d.commits += 1;
                }
                None => {
                    let reason = format!(
                        "commit seq {seq} in catalog {catalog} acknowledged without {l} \
                         (sync_policy degrade)"
                    );
                    tracing::error!(
                        region = %self.region, secondary = %l.region, seq, catalog,
                        "sync replication DEGRADED: {reason}; acknowledged commits may be lost \
                         if this region fails before the secondary catches up"
                    );
                    s.degraded = Some(Degradation {
                        since_ms: now_ms(),
                        reason,
                        until_seq: seq,
                        commits: 1,
                    });
                }
            }
        }
    }

    /// Whether any secondary is degraded now.
    pub fn degraded(&self) -> bool {
        self.lock().regions.values().any(|s| s.degraded.is_some())
    }

    /// Every known secondary, with its lag behind `head` (this region's log head).
    pub fn secondaries(&self, head: i64) -> Vec<SecondaryStatus> {
        let secs: Vec<(String, Secondary)> = self
            .lock()
            .regions
            .iter()
            .map(|(r, s)| (r.clone(), s.clone()))
            .collect();
        let commits = self.commits();
        let now = now_ms();
        let mut out: Vec<SecondaryStatus> = secs
            .into_iter()
            .map(|(region, s)| {
                let lag_records = s.applied.map(|a| (head - a).max(0));
                let (lag_seconds, pending_bytes) = match s.applied {
                    None => (None, commits.iter().map(|c| c.2).sum()),
                    Some(a) if a >= head => (Some(0.0), 0),
                    Some(a) => {
                        // The ring is in seq order: skip what it applied.
                        let start = commits.partition_point(|c| c.0 <= a);
                        let oldest = commits.get(start).map(|c| c.1);
                        let bytes = commits.range(start..).map(|c| c.2).sum();
                        (oldest.map(|at| (now - at).max(0) as f64 / 1000.0), bytes)
                    }
                };
                SecondaryStatus {
                    healthy: self.healthy(&s),
                    degraded: s.degraded.is_some(),
                    degradation: s.degraded,
                    applied: s.applied,
                    last_seen_ms: s.last_seen_ms,
                    lag_records,
                    lag_seconds,
                    pending_bytes,
                    region,
                }
            })
            .collect();
        out.sort_by(|a, b| a.region.cmp(&b.region));
        out
    }
}

/// A region name as an error message may repeat it: at most 64 characters.
fn clip(name: &str) -> String {
    match name.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &name[..i]),
        None => name.to_string(),
    }
}

/// Sum of `added-files-size` over the snapshots a commit request adds (updateTable or
/// transaction body); 0 when none says.
pub fn added_bytes_of_commit(body: &serde_json::Value) -> u64 {
    fn of_updates(updates: Option<&serde_json::Value>) -> u64 {
        updates
            .and_then(|u| u.as_array())
            .into_iter()
            .flatten()
            .filter(|u| u["action"] == "add-snapshot")
            .filter_map(|u| {
                let v = &u["snapshot"]["summary"]["added-files-size"];
                v.as_str()
                    .and_then(|s| s.parse::<u64>().ok())
                    .or_else(|| v.as_u64())
            })
            .sum()
    }
    match body.get("table-changes").and_then(|c| c.as_array()) {
        Some(changes) => changes.iter().map(|c| of_updates(c.get("updates"))).sum(),
        None => of_updates(body.get("updates")),
    }
}

/// The policy name as configuration spells it.
pub fn policy_name(p: SyncPolicy) -> &'static str {
    match p {
        SyncPolicy::Block => "block",
        SyncPolicy::Degrade => "degrade",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_tokens_round_trip_and_reject_garbage() {
        let t: CommitToken = "3-42".parse().unwrap();
        assert_eq!(t, CommitToken { epoch: 3, seq: 42 });
        assert_eq!(t.to_string(), "3-42");
        for bad in ["", "3", "3-", "-4", "a-1", "1-b", "1-2-3", "-1-2"] {
            assert!(bad.parse::<CommitToken>().is_err(), "{bad}");
        }
    }

    fn with_eu() -> SyncReplication {
        SyncReplication::new(
            "us".into(),
            ReplicationSection::default(),
            vec!["us".to_string(), "eu".to_string()],
        )
    }

    /// A pull of `region` after `after` reporting `applied`, at head `head`, epoch 1, that
    /// ships records through `ships` (if any).
    fn pull(
        sync: &SyncReplication,
        region: &str,
        after: i64,
        applied: i64,
        head: i64,
        ships: Option<i64>,
    ) -> Result<(), ReportError> {
        let guard = sync.report(region, after, Some(applied), head, 1)?;
        if let Some(last) = ships {
            sync.shipped(region, 1, last);
        }
        drop(guard);
        Ok(())
    }

    fn applied_of(sync: &SyncReplication, region: &str) -> Option<i64> {
        sync.secondaries(0)
            .into_iter()
            .find(|s| s.region == region)
            .and_then(|s| s.applied)
    }

    #[tokio::test]
    async fn sync_wait_ends_when_every_secondary_reports_the_seq() {
        let sync = SyncReplication::new("us".into(), ReplicationSection::default(), Vec::new());
        // No secondaries: nothing to wait for.
        assert!(matches!(
            sync.wait_applied(5, Duration::from_secs(5)).await,
            SyncOutcome::Replicated { .. }
        ));
        let sync = with_eu();
        pull(&sync, "eu", 0, 0, 5, Some(5)).unwrap();
        pull(&sync, "eu", 5, 4, 5, None).unwrap();
        let waiter = sync.wait_applied(5, Duration::from_secs(30));
        let reporter = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            pull(&sync, "eu", 5, 5, 6, Some(6)).unwrap();
        };
        let (outcome, ()) = tokio::join!(waiter, reporter);
        assert!(
            matches!(outcome, SyncOutcome::Replicated { .. }),
            "{outcome:?}"
        );
        let late = sync.wait_applied(6, Duration::from_millis(30)).await;
        match late {
            SyncOutcome::Behind { laggards, .. } => {
                assert_eq!(laggards.len(), 1);
                assert_eq!(laggards[0].applied, Some(5));
                assert!(laggards[0].healthy);
                sync.degrade(6, "demo", &laggards);
            }
            o => panic!("{o:?}"),
        }
        assert!(sync.degraded());
        pull(&sync, "eu", 6, 6, 6, None).unwrap();
        assert!(!sync.degraded());
    }

    #[test]
    fn only_configured_regions_may_report_and_nothing_is_kept_for_others() {
        let settings = ReplicationSection {
            followers: vec!["ap".to_string()],
            ..Default::default()
        };
        let sync = SyncReplication::new("us".into(), settings, vec!["eu".to_string()]);
        for name in ["ghost", "us", "", &"x".repeat(4096)] {
            assert!(
                matches!(
                    sync.report(name, 0, Some(0), 10, 1),
                    Err(ReportError::UnknownRegion(_))
                ),
                "{name:.20}"
            );
            assert!(matches!(
                sync.report(name, 0, None, 10, 1),
                Err(ReportError::UnknownRegion(_))
            ));
        }
        let Err(err) = sync.report(&"x".repeat(4096), 0, None, 10, 1) else {
            panic!("a 4 KB name is refused");
        };
        assert!(err.to_string().len() < 400, "{err}");
        // Listed regions count from the start, followers once they pull.
        let names = |sync: &SyncReplication| -> Vec<String> {
            sync.secondaries(0).into_iter().map(|s| s.region).collect()
        };
        assert_eq!(names(&sync), ["eu"]);
        pull(&sync, "ap", 0, 0, 10, None).unwrap();
        assert_eq!(names(&sync), ["ap", "eu"]);
    }

    #[tokio::test]
    async fn a_watermark_counts_only_up_to_what_was_shipped_and_never_goes_back() {
        let sync = with_eu();
        // Beyond the head, or beyond what was shipped and not the pull's `after`: refused.
        assert!(pull(&sync, "eu", 0, 11, 10, None).is_err());
        assert!(pull(&sync, "eu", 0, 10, 10, None).is_err());
        assert!(pull(&sync, "eu", 0, -1, 10, None).is_err());
        assert_eq!(applied_of(&sync, "eu"), None);
        // applied = after (a replicator after this node's restart): a pull, not counted.
        pull(&sync, "eu", 10, 10, 10, None).unwrap();
        assert_eq!(applied_of(&sync, "eu"), None);
        assert!(matches!(
            sync.wait_applied(10, Duration::from_millis(30)).await,
            SyncOutcome::Behind { .. }
        ));
        // Shipped through 12, then reported: counted.
        pull(&sync, "eu", 10, 10, 12, Some(12)).unwrap();
        pull(&sync, "eu", 12, 12, 12, None).unwrap();
        assert_eq!(applied_of(&sync, "eu"), Some(12));
        // Lower reports do not lower it; a report beyond the shipped 12 is refused.
        pull(&sync, "eu", 12, 3, 12, None).unwrap();
        assert_eq!(applied_of(&sync, "eu"), Some(12));
        assert!(pull(&sync, "eu", 12, 13, 13, None).is_err());
        assert!(pull(&sync, "eu", 14, 14, 13, None).is_err());
        assert_eq!(applied_of(&sync, "eu"), Some(12));
        // A new epoch: the figures are learnt again.
        let g = sync.report("eu", 12, Some(12), 12, 2).unwrap();
        drop(g);
        assert_eq!(applied_of(&sync, "eu"), None);
        // Shipping under an old epoch counts for nothing.
        sync.shipped("eu", 1, 12);
        assert!(sync.report("eu", 0, Some(12), 12, 2).is_err());
    }

    #[test]
    fn added_bytes_are_summed_over_added_snapshots() {
        let body = serde_json::json!({"updates": [
            {"action": "add-snapshot", "snapshot": {"summary": {"added-files-size": "100"}}},
            {"action": "set-snapshot-ref"},
        ]});
        assert_eq!(added_bytes_of_commit(&body), 100);
        let txn = serde_json::json!({"table-changes": [body.clone(), body]});
        assert_eq!(added_bytes_of_commit(&txn), 200);
    }
}
