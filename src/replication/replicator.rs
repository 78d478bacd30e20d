//! The replicator of one region: follows the primary's change log and applies it locally,
//! objects before rows.
//!
//! Each round reads the region's watermark, long-polls the primary's
//! `GET /api/v1/replication/changes?after=<watermark>` and applies what comes back in order,
//! in whole units. A unit is one record, or the records of one multi-table commit, or —
//! when a table created or committed in the batch is dropped later in the same batch — every
//! record up to that drop (so the table's intermediate pointers are never exposed here and
//! its files, possibly purged at the primary meanwhile, need not be copied). For each record
//! that creates or moves a table pointer, every object the new metadata adds over the
//! table's previous version (the previous change of it in the batch, else the region's
//! current metadata; all of them for a table new here) and the metadata file itself are made
//! present in the local bucket, copied from the primary's — for all the records of a chunk
//! of units at once (`super::pipeline`); only then does
//! [`ReplicationLog::apply_replicated`] apply the chunk's units (those before the first
//! record that could not be prepared) and advance the watermark in one transaction. A crash
//! at any point resumes from the watermark; re-applying is a no-op.
//!
//! Failures: transient ones (primary unreachable, object storage or database errors) are
//! retried with backoff without limit; a record failing with a permanent error (an object
//! missing at the primary, unparsable metadata, a change that does not fit the local state)
//! is retried `max_record_attempts` times, then the stream stops (`halted`) until an operator
//! resumes it. Records are never skipped. Both show in [`Replication::status`] and the logs.
//!
//! Before following a primary (at start and whenever the primary changes) the replicator
//! checks that its own last record is the primary's record of that seq (same epoch, op and
//! payload), and that the primary's log reaches it: otherwise this region holds commits the
//! primary never received. An old primary after an unplanned failover quarantines them and
//! converges ([`super::failback`]); any other divergence stops the stream instead of
//! silently diverging.
//!
//! A drop whose record says the primary purged the table's files (`"purge": true`) also
//! deletes this region's copies, once applied. Records of a catalog rebuilt by a resync up
//! to its floor are logged without copying or applying anything ([`super::resync`]).
//!
//! [`ReplicationLog::apply_replicated`]: crate::store::ReplicationLog::apply_replicated

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iceberg::spec::TableMetadata;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::copier::{CopyReport, ObjectCopier};
use super::pipeline::{PagePreparer, TableChange};
use crate::clock::now_ms;
use crate::config::ReplicationSection;
use crate::control::KnownControl;
use crate::storage::ObjectStore;
use crate::store::{ApplyOutcome, ChangeRecord, EntityKind, MetadataStore, StoreError};

/// One page of a region's change log, as `GET /api/v1/replication/changes` answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangesPage {
    /// The region that answered.
    pub region: String,
    /// The last seq of its log when it answered.
    pub head: i64,
    /// Its fencing epoch.
    pub epoch: i64,
    /// Records with `seq > after`, in order.
    pub records: Vec<ChangeRecord>,
}

/// Records of a pulled page prepared and applied together, per unit of `copy_parallelism`.
const PAGE_CHUNK_PER_PARALLELISM: usize = 4;

/// Where [`Replication::crash_at`] stops the replicator, as a crash of the process would
/// (tests of crash recovery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// After the objects of the next page's table changes are present, before any of
    /// them is applied.
    MidCopy,
    /// Inside the next unit's apply transaction, before it commits (the transaction is
    /// dropped after it started).
    MidApply,
}

/// Another catalog region, as the replicator reaches it.
#[derive(Debug, Clone)]
pub struct PeerRegion {
    pub catalog_url: String,
    pub objects: ObjectStore,
}

/// Where the replicator learns which region is primary.
pub enum PrimarySource {
    /// A standalone region: always primary itself, never replicates.
    Standalone,
    /// A fixed primary (`[replication] primary`).
    Static(String),
    /// The control plane, as the node's write lease last learnt it.
    Control(watch::Receiver<KnownControl>),
}

/// The last failure of the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastError {
    /// The record that failed (None: pulling from the primary failed).
    pub seq: Option<i64>,
    pub message: String,
    /// Permanent errors stop the stream after `max_record_attempts`.
    pub permanent: bool,
    /// Consecutive failed attempts at this record (or pull).
    pub attempts: u32,
    pub at_ms: i64,
}

/// What `GET /api/v1/replication/status` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicationStatus {
    pub region: String,
    /// `primary`, `secondary`, `standalone` (no replication configured) or `unknown` (the
    /// primary is not known yet).
    pub role: String,
    /// What the replicator is doing: `following`, `retrying`, `paused`, `halted`,
    /// `waiting-for-primary`, `primary`, `standalone`, `disabled`, `starting`, `failback`
    /// (quarantining an old primary's diverged commits) or `crashed` (test hook).
    pub state: String,
    /// The primary region this region follows (or is).
    pub primary: Option<String>,
    pub primary_url: Option<String>,
    /// Whether this node runs a replicator (`replication.enabled`).
    pub running: bool,
    /// Paused by an operator (kept across restarts).
    pub paused: bool,
    /// Stopped at a record that kept failing; `resume` retries it.
    pub halted: bool,
    /// Last seq of this region's change log (applied from the primary or committed here).
    pub watermark: i64,
    pub watermark_epoch: i64,
    /// The primary's last seq as last seen (this region's own when primary).
    pub primary_head: Option<i64>,
    /// Records the primary has that this region has not applied.
    pub lag_records: Option<i64>,
    /// Age of the oldest record not applied yet (0 when caught up).
    pub lag_seconds: Option<f64>,
    /// When this region last applied a replicated record (epoch ms).
    pub last_applied_ms: Option<i64>,
    pub last_error: Option<LastError>,
    /// Since this node started: records applied, objects copied, bytes copied.
    pub applied_records: u64,
    pub objects_copied: u64,
    pub bytes_copied: u64,
    /// Objects of the changes being prepared right now that are not known to be present
    /// here yet (listed, being copied).
    #[serde(default)]
    pub objects_pending: u64,
}

#[derive(Debug, Default, Clone)]
struct Progress {
    state: &'static str,
    last_primary: Option<String>,
    primary_head: Option<i64>,
    /// (seq, created_ms) of the last pulled batch, for the lag in seconds.
    pulled: Vec<(i64, i64)>,
    last_error: Option<LastError>,
    halted: bool,
    /// The primary whose log was checked to continue this region's.
    verified_primary: Option<String>,
    applied_records: u64,
    objects_copied: u64,
    bytes_copied: u64,
}

/// Why a round stopped.
#[derive(Debug)]
struct RoundError {
    seq: Option<i64>,
    message: String,
    permanent: bool,
}

impl RoundError {
    fn transient(seq: Option<i64>, message: impl Into<String>) -> RoundError {
        RoundError {
            seq,
            message: message.into(),
            permanent: false,
        }
    }

    fn permanent(seq: Option<i64>, message: impl Into<String>) -> RoundError {
        RoundError {
            seq,
            message: message.into(),
            permanent: true,
        }
    }

    fn store(seq: Option<i64>, e: StoreError) -> RoundError {
        RoundError {
            seq,
            permanent: !matches!(e, StoreError::Database(_)),
            message: e.to_string(),
        }
    }
}

/// The client of every call this region makes to a peer's `/api/v1/replication/...` API
/// (pulls, continuity checks, verify, resync, failback): it sends the deployment's peer
/// secret on each (`x-pangolin-peer-secret`, marked sensitive so it is never printed).
fn peer_client(settings: &ReplicationSection) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(secret) = settings.peer_secret() {
        match reqwest::header::HeaderValue::from_str(secret.expose()) {
            Ok(mut v) => {
                v.set_sensitive(true);
                headers.insert(super::api::PEER_SECRET_HEADER, v);
            }
            // Config validation refuses such values; the secret itself is not logged.
            Err(_) => tracing::error!("replication.peer_secret is not a valid header value"),
        }
    }
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .default_headers(headers)
        .build()
        .unwrap_or_default()
}

/// What a pull tells the primary about this region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pull {
    /// Nothing: a probe (continuity check, lag refresh) whose records are not applied.
    Probe,
    /// `region`: records this region will apply (the rest of a multi-table commit), so the
    /// primary counts them as shipped to it.
    Ship,
    /// `region` and `applied` (= `after`, the watermark): the main pull, once this region's
    /// log is known to continue the primary's.
    Report,
}

/// A region's replication: the replicator task and its status, pause and resume.
pub struct Replication {
    region: String,
    store: Arc<dyn MetadataStore>,
    local: ObjectStore,
    peers: HashMap<String, PeerRegion>,
    source: PrimarySource,
    settings: ReplicationSection,
    http: reqwest::Client,
    copier: ObjectCopier,
    progress: Mutex<Progress>,
    paused: AtomicBool,
    running: AtomicBool,
    wake: Notify,
    shutdown: CancellationToken,
    /// The metadata last replicated per table id (location, parsed): the base of the
    /// table's next change, without reading it back.
    recent: moka::sync::Cache<String, (String, Arc<TableMetadata>)>,
    /// Held while rows are applied or replaced (resync, failback), so those never interleave
    /// on this node.
    apply_gate: tokio::sync::Mutex<()>,
    /// Test hook: where the replicator stops as if the process were killed.
    crash_at: Mutex<Option<CrashPoint>>,
    crashed: AtomicBool,
    /// This region's watermark as the replicator last read or advanced it: sent to the
    /// primary with every pull (sync mode), awaited by read-your-writes.
    applied: watch::Sender<i64>,
    /// Failed attempts (pulls and records) since the node started, for metrics.
    errors: AtomicU64,
    /// See [`ReplicationStatus::objects_pending`].
    objects_pending: AtomicU64,
}

impl Replication {
    /// The replication of region `region` (its store and bucket), following the primary
    /// `source` names among `peers` (every other catalog region). Nothing runs until
    /// [`Replication::spawn`].
    pub fn new(
        region: String,
        store: Arc<dyn MetadataStore>,
        local: ObjectStore,
        peers: HashMap<String, PeerRegion>,
        source: PrimarySource,
        settings: ReplicationSection,
        shutdown: CancellationToken,
    ) -> Replication {
        let http = peer_client(&settings);
        let copier = ObjectCopier::new(settings.copy_parallelism, 5).with_backoff(
            Duration::from_millis(settings.retry_initial_ms.max(1)),
            Duration::from_millis(settings.retry_max_ms.max(1)),
        );
        Replication {
            region,
            store,
            local,
            peers,
            source,
            settings,
            http,
            copier,
            progress: Mutex::new(Progress {
                state: "starting",
                ..Progress::default()
            }),
            paused: AtomicBool::new(false),
            running: AtomicBool::new(false),
            wake: Notify::new(),
            shutdown,
            recent: moka::sync::Cache::new(1024),
            apply_gate: tokio::sync::Mutex::new(()),
            crash_at: Mutex::new(None),
            crashed: AtomicBool::new(false),
            applied: watch::Sender::new(0),
            errors: AtomicU64::new(0),
            objects_pending: AtomicU64::new(0),
        }
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    // ---- for verify, resync and failback (crate::replication::{verify,resync,failback}) ----

    /// The primary as currently known, and how to reach it (None: not among the peers).
    pub(crate) fn primary_peer(&self) -> Option<(String, Option<PeerRegion>)> {
        let primary = self.known_primary()?;
        let peer = self.peers.get(&primary).cloned();
        Some((primary, peer))
    }

    /// Test hook: the replicator task stops at `point` of the next unit it applies, as if
    /// the process were killed there (status `state`: `crashed`); a restart of the node
    /// recovers. Not for production use.
    pub fn crash_at(&self, point: CrashPoint) {
        *self.crash_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(point);
    }

    fn crash_now(&self, point: CrashPoint) -> bool {
        let mut at = self.crash_at.lock().unwrap_or_else(|p| p.into_inner());
        if *at == Some(point) {
            *at = None;
            self.crashed.store(true, Ordering::Release);
            tracing::warn!(region = %self.region, ?point, "replicator stopped at a crash point (test hook)");
            return true;
        }
        false
    }

    /// Whether this node's replicator is applying the primary's log (running, not paused,
    /// not halted, not stopped).
    pub(crate) fn is_following(&self) -> bool {
        self.running.load(Ordering::Acquire)
            && !self.paused.load(Ordering::Acquire)
            && !self.crashed.load(Ordering::Acquire)
            && !self.progress().halted
    }

    pub(crate) fn store(&self) -> &Arc<dyn MetadataStore> {
        &self.store
    }

    pub(crate) fn local_objects(&self) -> &ObjectStore {
        &self.local
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub(crate) fn copier(&self) -> &ObjectCopier {
        &self.copier
    }

    pub(crate) fn parallelism(&self) -> usize {
        self.settings.copy_parallelism.max(1)
    }

    pub(crate) async fn lock_apply(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.apply_gate.lock().await
    }

    /// After a resync: a halted stream is retried (its record may be reflected now) and the
    /// primary's log is checked again before following.
    pub(crate) fn after_resync(&self) {
        {
            let mut p = self.progress();
            p.halted = false;
            if let Some(e) = &mut p.last_error {
                e.attempts = 0;
            }
            p.verified_primary = None;
        }
        self.wake.notify_one();
    }

    /// This region's watermark as this node's replicator last saw it, updated as it applies.
    pub fn subscribe_applied(&self) -> watch::Receiver<i64> {
        self.applied.subscribe()
    }

    /// Failed replication attempts (pulls and records) since the node started.
    pub fn errors_total(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    fn note_applied(&self, seq: i64) {
        self.applied
            .send_if_modified(|v| std::mem::replace(v, seq) != seq);
    }

    /// Cancelled when the node stops (long polls end early).
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        match self.progress.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn set_state(&self, state: &'static str) {
        self.progress().state = state;
    }

    /// The primary as currently known (for the control plane: the last one named, also
    /// while a switchover fences it).
    fn known_primary(&self) -> Option<String> {
        match &self.source {
            PrimarySource::Standalone => None,
            PrimarySource::Static(p) => Some(p.clone()),
            PrimarySource::Control(rx) => {
                let named = rx.borrow().primary.clone();
                let mut progress = self.progress();
                if let Some(p) = &named {
                    progress.last_primary = Some(p.clone());
                }
                named.or_else(|| progress.last_primary.clone())
            }
        }
    }

    /// Starts the replicator task; it stops with the node's shutdown token.
    pub fn spawn(self: &Arc<Self>) -> JoinHandle<()> {
        if self.settings.peer_secret().is_none() && !self.peers.is_empty() {
            tracing::error!(
                region = %self.region,
                "replication.peer_secret is not set: a primary refuses this region's pulls \
                 (401) and it cannot replicate; set the same secret in every region \
                 (PANGOLIN_REPLICATION__PEER_SECRET)"
            );
        }
        self.running.store(true, Ordering::Release);
        let me = self.clone();
        tokio::spawn(async move { me.run().await })
    }

    /// Pauses the replicator (persisted: it stays paused across restarts). A unit being
    /// applied is abandoned (it is re-applied from the watermark on resume).
    pub async fn pause(&self) -> Result<(), StoreError> {
        self.store.set_replication_paused(true).await?;
        self.paused.store(true, Ordering::Release);
        self.wake.notify_one();
        tracing::info!(region = %self.region, "replication paused");
        Ok(())
    }

    /// Resumes a paused or halted replicator: the failing record is tried again.
    pub async fn resume(&self) -> Result<(), StoreError> {
        self.store.set_replication_paused(false).await?;
        self.paused.store(false, Ordering::Release);
        {
            let mut p = self.progress();
            p.halted = false;
            if let Some(e) = &mut p.last_error {
                e.attempts = 0;
            }
            p.verified_primary = None;
        }
        self.wake.notify_one();
        tracing::info!(region = %self.region, "replication resumed");
        Ok(())
    }

    /// The replication status of this region.
    pub async fn status(&self) -> Result<ReplicationStatus, StoreError> {
        let wm = self.store.replication_watermark().await?;
        let primary = self.known_primary();
        let running = self.running.load(Ordering::Acquire);
        let p = self.progress().clone();
        let role = match (&self.source, &primary) {
            (PrimarySource::Standalone, _) => "standalone",
            (_, Some(x)) if *x == self.region => "primary",
            (_, Some(_)) => "secondary",
            (_, None) => "unknown",
        };
        let primary_url = primary
            .as_ref()
            .and_then(|x| self.peers.get(x))
            .map(|peer| peer.catalog_url.clone());
        let state = if !running {
            match role {
                "standalone" => "standalone",
                "primary" => "primary",
                _ => "disabled",
            }
        } else {
            p.state
        };
        let (primary_head, lag_records, lag_seconds) = match role {
            "primary" | "standalone" => (Some(wm.seq), Some(0), Some(0.0)),
            _ => match p.primary_head {
                None => (None, None, None),
                Some(head) => {
                    let lag = (head - wm.seq).max(0);
                    let seconds = if lag == 0 {
                        0.0
                    } else {
                        // The oldest record not applied yet, else (it was not pulled yet) the
                        // last applied one, which is older than it.
                        let created = p
                            .pulled
                            .iter()
                            .find(|(seq, _)| *seq > wm.seq)
                            .map(|(_, c)| *c)
                            .unwrap_or(wm.created_ms);
                        if created > 0 {
                            (now_ms() - created).max(0) as f64 / 1000.0
                        } else {
                            0.0
                        }
                    };
                    (Some(head), Some(lag), Some(seconds))
                }
            },
        };
        Ok(ReplicationStatus {
            region: self.region.clone(),
            role: role.to_string(),
            state: state.to_string(),
            primary,
            primary_url,
            running,
            paused: wm.paused || self.paused.load(Ordering::Acquire),
            halted: p.halted,
            watermark: wm.seq,
            watermark_epoch: wm.epoch,
            primary_head,
            lag_records,
            lag_seconds,
            last_applied_ms: (wm.applied_ms > 0).then_some(wm.applied_ms),
            last_error: p.last_error,
            applied_records: p.applied_records,
            objects_copied: p.objects_copied,
            bytes_copied: p.bytes_copied,
            objects_pending: self.objects_pending.load(Ordering::Relaxed),
        })
    }

    /// Waits for a wake-up (pause, resume), shutdown, or `at_most`.
    async fn idle(&self, at_most: Duration) {
        tokio::select! {
            _ = self.shutdown.cancelled() => {}
            _ = self.wake.notified() => {}
            _ = tokio::time::sleep(at_most) => {}
        }
    }

    /// Returns when the control plane names a primary other than `current`.
    async fn primary_moved(&self, current: Option<&str>) {
        match &self.source {
            PrimarySource::Control(rx) => {
                let mut rx = rx.clone();
                loop {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                    let named = rx.borrow_and_update().primary.clone();
                    if let Some(p) = named {
                        if current != Some(p.as_str()) {
                            return;
                        }
                    }
                }
            }
            _ => std::future::pending().await,
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        let initial = self.settings.retry_initial_ms.max(1);
        let ms = initial
            .saturating_mul(2u64.saturating_pow(failures.saturating_sub(1)))
            .min(self.settings.retry_max_ms.max(initial));
        Duration::from_millis(ms)
    }

    async fn run(self: Arc<Self>) {
        match self.store.replication_watermark().await {
            Ok(wm) => {
                self.paused.store(wm.paused, Ordering::Release);
                self.note_applied(wm.seq);
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the replication state"),
        }
        let mut failures = 0u32;
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            if self.paused.load(Ordering::Acquire) {
                self.set_state("paused");
                self.idle(Duration::from_secs(2)).await;
                // Another node of the region may have resumed it.
                if let Ok(wm) = self.store.replication_watermark().await {
                    if !wm.paused && self.paused.swap(false, Ordering::AcqRel) {
                        tracing::info!(region = %self.region, "replication resumed (store)");
                    }
                    // Keep the lag figures current while paused.
                    if self.paused.load(Ordering::Acquire) {
                        self.refresh_head(wm.seq).await;
                    }
                }
                continue;
            }
            if self.progress().halted {
                self.set_state("halted");
                self.idle(Duration::from_secs(5)).await;
                continue;
            }
            let primary = self.known_primary();
            let Some(primary) = primary else {
                self.set_state(match self.source {
                    PrimarySource::Standalone => "standalone",
                    _ => "waiting-for-primary",
                });
                tokio::select! {
                    _ = self.primary_moved(None) => {}
                    _ = self.idle(Duration::from_secs(1)) => {}
                }
                continue;
            };
            if primary == self.region {
                // While primary, this region writes records of its own: when it follows
                // another region again, its log must be checked against that region's
                // (failback) even if it followed the same region before.
                self.progress().verified_primary = None;
                self.set_state("primary");
                tokio::select! {
                    _ = self.primary_moved(Some(&primary)) => {}
                    _ = self.idle(Duration::from_secs(5)) => {}
                }
                continue;
            }
            let Some(peer) = self.peers.get(&primary).cloned() else {
                self.record_failure(RoundError::transient(
                    None,
                    format!("primary region {primary} is not among [[regions]]; cannot follow it"),
                ));
                self.idle(Duration::from_secs(5)).await;
                continue;
            };
            let outcome = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = self.wake.notified() => continue,
                _ = self.primary_moved(Some(&primary)) => continue,
                r = self.round(&primary, &peer) => r,
            };
            if self.crashed.load(Ordering::Acquire) {
                self.set_state("crashed");
                return;
            }
            match outcome {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    self.record_failure(e);
                    if !self.progress().halted {
                        self.set_state("retrying");
                        self.idle(self.backoff(failures)).await;
                    }
                }
            }
        }
        tracing::info!(region = %self.region, "replicator stopped");
    }

    /// Reads the primary's head and next record (for the lag) without applying anything.
    async fn refresh_head(&self, watermark: i64) {
        let Some(primary) = self.known_primary().filter(|p| *p != self.region) else {
            return;
        };
        let Some(peer) = self.peers.get(&primary) else {
            return;
        };
        if let Ok(page) = self.fetch(peer, watermark, 1, 0, Pull::Probe).await {
            let mut p = self.progress();
            p.primary_head = Some(page.head);
            p.pulled = page.records.iter().map(|r| (r.seq, r.created_ms)).collect();
        }
    }

    fn record_failure(&self, e: RoundError) {
        let max = self.settings.max_record_attempts;
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut p = self.progress();
        let attempts = match &p.last_error {
            Some(last) if last.seq == e.seq => last.attempts.saturating_add(1),
            _ => 1,
        };
        let halt = e.permanent && attempts >= max;
        match e.seq {
            Some(seq) if halt => tracing::error!(
                region = %self.region, seq, attempts, error = %e.message,
                "replication HALTED: record keeps failing; fix the cause, then POST /api/v1/replication/resume"
            ),
            seq => tracing::warn!(
                region = %self.region, ?seq, attempts, permanent = e.permanent, error = %e.message,
                "replication attempt failed; retrying"
            ),
        }
        if halt {
            p.halted = true;
        }
        p.last_error = Some(LastError {
            seq: e.seq,
            message: e.message,
            permanent: e.permanent,
            attempts,
            at_ms: now_ms(),
        });
    }

    /// One pull and the application of what it brought.
    async fn round(&self, primary: &str, peer: &PeerRegion) -> Result<(), RoundError> {
        let wm = self
            .store
            .replication_watermark()
            .await
            .map_err(|e| RoundError::store(None, e))?;
        self.note_applied(wm.seq);
        if wm.paused {
            self.paused.store(true, Ordering::Release);
            return Ok(());
        }
        // Verified per primary AND epoch: any change of epoch (a failover, a switchover, this
        // region having been primary meanwhile) checks the logs' continuity again.
        let key = match &self.source {
            PrimarySource::Control(rx) => format!("{primary}@{}", rx.borrow().epoch),
            _ => primary.to_string(),
        };
        let verified = self.progress().verified_primary.as_deref() == Some(key.as_str());
        if !verified {
            let rewritten = self.check_continuity(primary, peer, wm.seq).await?;
            self.progress().verified_primary = Some(key);
            if rewritten {
                // The watermark went back to the fork: start over from it.
                return Ok(());
            }
        }
        self.set_state("following");
        let mut page = self
            .fetch(
                peer,
                wm.seq,
                self.settings.batch_size,
                self.settings.poll_wait_ms,
                Pull::Report,
            )
            .await?;
        {
            let mut p = self.progress();
            p.primary_head = Some(page.head);
            p.pulled = page.records.iter().map(|r| (r.seq, r.created_ms)).collect();
            if p.last_error.as_ref().is_some_and(|e| e.seq.is_none()) {
                p.last_error = None;
            }
        }
        let Some(first) = page.records.first() else {
            return Ok(());
        };
        if first.seq != wm.seq + 1 {
            tracing::warn!(
                region = %self.region, watermark = wm.seq, next = first.seq,
                "the primary's change log has no records between the watermark and the next one"
            );
        }
        self.complete_last_transaction(peer, &mut page.records)
            .await?;
        let started = Instant::now();
        let mut applied = 0usize;
        let units = plan_units(&page.records);
        // A backlog is prepared and applied in chunks of whole units, so that it lands in
        // steps (and a crash loses less work) rather than all at the end of the page.
        let chunk_records = PAGE_CHUNK_PER_PARALLELISM * self.parallelism();
        let mut from = 0;
        while from < units.len() {
            let mut to = from + 1;
            while to < units.len() && units[to].end - units[from].start <= chunk_records {
                to += 1;
            }
            applied += self
                .apply_units(peer, &page.records, &units[from..to])
                .await?;
            from = to;
        }
        if applied > 0 {
            let last = page.records.last().map_or(0, |r| r.seq);
            tracing::info!(
                region = %self.region, primary, records = applied, watermark = last,
                primary_head = page.head, took_ms = started.elapsed().as_millis() as u64,
                "applied replicated changes"
            );
        }
        Ok(())
    }

    async fn fetch(
        &self,
        peer: &PeerRegion,
        after: i64,
        limit: u32,
        wait_ms: u64,
        pull: Pull,
    ) -> Result<ChangesPage, RoundError> {
        let url = format!(
            "{}/api/v1/replication/changes?after={after}&limit={limit}&wait_ms={wait_ms}",
            peer.catalog_url.trim_end_matches('/')
        );
        crate::faults::gate_url(&url).await.map_err(|e| {
            RoundError::transient(None, format!("cannot pull changes from {url}: {e}"))
        })?;
        let mut req = self.http.get(&url);
        // `region` and `applied` tell the primary how far this region has applied (sync mode).
        // Only the main pull reports, which runs once this region's log is known to continue
        // the primary's: a former primary checking continuity (failback) holds records the
        // primary never had, and its watermark must not count as applied there. It reports
        // the watermark it asks records after (`applied` = `after`): the primary counts it
        // once it has shipped this region that far (see `SyncReplication::report`). The
        // peer secret travels in a default header of `self.http`.
        match pull {
            Pull::Probe => {}
            Pull::Ship => req = req.query(&[("region", self.region.as_str())]),
            Pull::Report => {
                req = req
                    .query(&[("region", self.region.as_str())])
                    .query(&[("applied", after)]);
            }
        }
        let resp = req
            .timeout(Duration::from_millis(wait_ms) + Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| {
                RoundError::transient(None, format!("cannot pull changes from {url}: {e}"))
            })?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(RoundError::transient(
                None,
                format!("pulling changes from {url} answered {status}: {body}"),
            ));
        }
        resp.json::<ChangesPage>()
            .await
            .map_err(|e| RoundError::transient(None, format!("bad change page from {url}: {e}")))
    }

    /// Checks that this region's log continues into `primary`'s. When it does not and this
    /// region is an old primary holding commits the new primary never received, runs the
    /// failback (quarantine, converge: see `super::failback`) and returns true (the log was
    /// rewritten); any other divergence stops the stream.
    async fn check_continuity(
        &self,
        primary: &str,
        peer: &PeerRegion,
        watermark: i64,
    ) -> Result<bool, RoundError> {
        if watermark == 0 {
            return Ok(false);
        }
        let local = self
            .store
            .changes_after(watermark - 1, 1)
            .await
            .map_err(|e| RoundError::store(None, e))?;
        let Some(mine) = local.into_iter().next().filter(|r| r.seq == watermark) else {
            return Ok(false);
        };
        let page = self.fetch(peer, watermark - 1, 1, 0, Pull::Probe).await?;
        let continues = match page.records.first() {
            _ if page.head < watermark => false,
            Some(theirs) if theirs.seq == watermark => {
                theirs.epoch == mine.epoch && theirs.op == mine.op && theirs.payload == mine.payload
            }
            _ => {
                tracing::warn!(
                    region = %self.region, primary, watermark,
                    "the primary has no record at this region's watermark; continuing unchecked"
                );
                true
            }
        };
        if continues {
            return Ok(false);
        }
        self.set_state("failback");
        match super::failback::failback(self, primary, peer, watermark).await {
            Ok(outcome) => {
                tracing::warn!(
                    region = %self.region, primary, fork = outcome.fork,
                    quarantined = outcome.quarantined,
                    "failback complete: diverged commits quarantined, region converged"
                );
                Ok(true)
            }
            Err(super::failback::FailbackError::Transient(m)) => Err(RoundError::transient(
                Some(watermark),
                format!("failback: {m}"),
            )),
            Err(super::failback::FailbackError::NotAFailback(m)) => {
                Err(RoundError::permanent(Some(watermark), m))
            }
            Err(super::failback::FailbackError::Failed(m)) => Err(RoundError::permanent(
                Some(watermark),
                format!("failback could not complete: {m}"),
            )),
        }
    }

    /// Pulls the rest of a multi-table commit cut by the batch limit, or drops its part.
    async fn complete_last_transaction(
        &self,
        peer: &PeerRegion,
        records: &mut Vec<ChangeRecord>,
    ) -> Result<(), RoundError> {
        for _ in 0..100 {
            let Some(last) = records.last() else {
                return Ok(());
            };
            let missing = match last.txn_position() {
                Some(p) if p.txn_index + 1 < p.txn_count => p.txn_count - p.txn_index - 1,
                _ => return Ok(()),
            };
            let more = self.fetch(peer, last.seq, missing, 0, Pull::Ship).await?;
            if more.records.is_empty() {
                break;
            }
            records.extend(more.records);
        }
        // Still incomplete: leave that transaction for the next round.
        while let Some(last) = records.last() {
            match last.txn_position() {
                Some(p) if p.txn_index + 1 < p.txn_count => {
                    let start = records.len() - 1 - p.txn_index as usize;
                    records.truncate(start);
                }
                _ => break,
            }
        }
        Ok(())
    }

    /// Makes the objects of the units' table changes present (concurrently across the
    /// units: see `super::pipeline`), then applies the units in order — every unit before
    /// the first change that could not be prepared, in one transaction — and reports that
    /// change. `units` are consecutive ranges of `records`. Returns how many records were
    /// applied.
    async fn apply_units(
        &self,
        peer: &PeerRegion,
        records: &[ChangeRecord],
        units: &[Range<usize>],
    ) -> Result<usize, RoundError> {
        let (Some(first_unit), Some(last_unit)) = (units.first(), units.last()) else {
            return Ok(0);
        };
        let span = first_unit.start..last_unit.end;
        // Catalogs rebuilt by a resync already reflect their records up to the floor: no
        // objects to copy for those (the store logs them without applying them).
        let floors = self
            .store
            .resync_floors()
            .await
            .map_err(|e| RoundError::store(Some(records[span.start].seq), e))?;
        // The table changes to prepare, and the index of each one's record.
        let mut changes = Vec::new();
        let mut at = Vec::new();
        for unit in units {
            let unit_records = &records[unit.clone()];
            for (k, record) in unit_records.iter().enumerate() {
                // Undecodable records are refused (with their message) by the store below.
                let Ok(change) = record.decode() else {
                    continue;
                };
                let Some(pointer) = change.pointer() else {
                    continue;
                };
                if floors
                    .get(&pointer.catalog_id)
                    .is_some_and(|floor| record.seq <= *floor)
                {
                    continue;
                }
                if dropped_later(unit_records, k, &pointer.id) {
                    tracing::debug!(seq = record.seq, table = %pointer.id, "dropped later in the unit; no objects to copy");
                    continue;
                }
                at.push(unit.start + k);
                changes.push(TableChange {
                    seq: record.seq,
                    pointer: pointer.clone(),
                });
            }
        }
        let started = Instant::now();
        let preparer = PagePreparer {
            source: &peer.objects,
            dest: &self.local,
            copier: &self.copier,
            parallelism: self.parallelism(),
            pending: &self.objects_pending,
        };
        let prepared = preparer
            .prepare(&changes, |id| async move { self.local_metadata(&id).await })
            .await;
        // Records before `ready` have their objects present here.
        let mut ready = span.end;
        let mut failure = None;
        let mut copies: HashMap<usize, (usize, u64)> = HashMap::new();
        for ((&index, change), result) in at.iter().zip(&changes).zip(prepared) {
            match result {
                Ok(p) => {
                    if let Some(metadata) = p.metadata {
                        self.recent.insert(
                            change.pointer.id.clone(),
                            (change.pointer.metadata_location.clone(), metadata),
                        );
                    }
                    copies.insert(index, (p.copied, p.bytes_copied));
                }
                Err(e) => {
                    ready = index;
                    failure = Some(RoundError {
                        seq: Some(change.seq),
                        message: e.message,
                        permanent: e.permanent,
                    });
                    break;
                }
            }
        }
        if !changes.is_empty() {
            tracing::debug!(
                region = %self.region, changes = changes.len(), ready = ready - span.start,
                took_ms = started.elapsed().as_millis() as u64, "objects of the changes present"
            );
        }
        if at.first().is_some_and(|&i| i < ready) && self.crash_now(CrashPoint::MidCopy) {
            return Err(RoundError::transient(
                Some(records[at[0]].seq),
                "crashed mid-copy",
            ));
        }
        let copied_in = |range: &Range<usize>| {
            let mut report = CopyReport::default();
            for (_, (n, bytes)) in copies.iter().filter(|(i, _)| range.contains(i)) {
                report.copied += n;
                report.bytes_copied += bytes;
            }
            report
        };
        let ready_units: Vec<Range<usize>> = units
            .iter()
            .take_while(|u| u.end <= ready)
            .cloned()
            .collect();
        let mut applied = 0;
        if let (Some(first), Some(last)) = (ready_units.first(), ready_units.last()) {
            let range = first.start..last.end;
            match self
                .apply_records(&records[range.clone()], copied_in(&range))
                .await
            {
                Ok(n) => applied = n,
                // Which unit does not fit: apply them one by one up to it.
                Err(e) if e.permanent && ready_units.len() > 1 => {
                    tracing::debug!(error = %e.message, "the units do not apply together; one by one");
                    for unit in &ready_units {
                        applied += self
                            .apply_records(&records[unit.clone()], copied_in(unit))
                            .await?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(applied),
        }
    }

    /// Applies records whose objects are present (whole units), with the watermark in the
    /// same transaction, then purges what their drops purged at the primary. Returns how
    /// many records were applied.
    async fn apply_records(
        &self,
        records: &[ChangeRecord],
        copied: CopyReport,
    ) -> Result<usize, RoundError> {
        let first = records.first().map(|r| r.seq);
        let gate = self.apply_gate.lock().await;
        if self.crash_now(CrashPoint::MidApply) {
            let apply = self.store.apply_replicated(records);
            tokio::pin!(apply);
            for _ in 0..2 {
                if futures::poll!(&mut apply).is_ready() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            return Err(RoundError::transient(first, "crashed mid-apply"));
        }
        let outcome = self.store.apply_replicated(records).await;
        drop(gate);
        if matches!(outcome, Ok(ApplyOutcome::Applied { .. })) {
            for record in records.iter().filter(|r| is_purging_drop(r)) {
                self.purge_dropped(record).await;
            }
        }
        match outcome {
            Ok(ApplyOutcome::Applied { watermark }) => {
                self.note_applied(watermark);
                let mut p = self.progress();
                p.applied_records += records.len() as u64;
                p.objects_copied += copied.copied as u64;
                p.bytes_copied += copied.bytes_copied;
                if p.last_error
                    .as_ref()
                    .and_then(|e| e.seq)
                    .is_some_and(|seq| seq <= watermark)
                {
                    p.last_error = None;
                }
                tracing::debug!(
                    region = %self.region, first = ?first, watermark,
                    objects = copied.copied, bytes = copied.bytes_copied, "applied"
                );
                Ok(records.len())
            }
            Ok(ApplyOutcome::AlreadyApplied { .. }) => Ok(0),
            Err(e) => Err(RoundError::store(first, e)),
        }
    }

    /// Deletes this region's copies of the files of a table dropped with `purgeRequested`
    /// at the primary (after the drop applied here, as the primary does: a crash in between
    /// leaves unreferenced files, never a pointer to missing files).
    async fn purge_dropped(&self, record: &ChangeRecord) {
        let Some(metadata_location) = record.payload["metadata_location"].as_str() else {
            return;
        };
        let mut owned: Vec<String> = record.payload["retired_locations"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        match record.payload["location"].as_str() {
            Some(location) if !location.is_empty() => owned.push(location.to_string()),
            // A record from a primary that did not record locations: the metadata says.
            _ => match super::resync::read_table_metadata(&self.local, metadata_location).await {
                Ok(metadata) => owned.push(metadata.location().trim_end_matches('/').to_string()),
                Err(_) => match metadata_location.rsplit_once("/metadata/") {
                    Some((root, _)) => owned.push(root.to_string()),
                    None => {
                        tracing::warn!(
                            seq = record.seq,
                            metadata_location,
                            "cannot tell the dropped table's location; its files stay"
                        );
                        return;
                    }
                },
            },
        }
        // The same rule as the primary's, against this region's own rows.
        match crate::catalog::locations::purge_locations(self.store.as_ref(), &self.local, &owned)
            .await
        {
            Ok(outcome) => {
                if !outcome.skipped_locations.is_empty() || outcome.kept > 0 {
                    tracing::warn!(region = %self.region, seq = record.seq, skipped = ?outcome.skipped_locations, kept = outcome.kept, "purge left files another table or view owns here");
                }
                tracing::info!(region = %self.region, seq = record.seq, locations = ?owned, objects = outcome.deleted, "purged the dropped table's files here")
            }
            Err(e) => {
                tracing::warn!(region = %self.region, seq = record.seq, locations = ?owned, error = %e, "purging the dropped table's files failed; they stay as unreferenced files")
            }
        }
    }

    /// The region's current metadata of a table, when it has the table and can read it.
    async fn local_metadata(&self, table_id: &str) -> Option<Arc<TableMetadata>> {
        let record = self.store.get_table_by_id(table_id).await.ok()??;
        if record.kind != EntityKind::Table {
            return None;
        }
        if let Some((location, metadata)) = self.recent.get(table_id) {
            if location == record.metadata_location {
                return Some(metadata);
            }
        }
        let bytes = match self.local.get(&record.metadata_location).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(table = %table_id, error = %e, "cannot read this region's metadata of the table; copying all of its objects");
                return None;
            }
        };
        serde_json::from_slice(&bytes).ok().map(Arc::new)
    }
}

/// A `drop_table` of a table whose files the primary purged.
fn is_purging_drop(record: &ChangeRecord) -> bool {
    record.op == "drop_table"
        && record.payload["purge"].as_bool() == Some(true)
        && record.payload["kind"].as_str() == Some("table")
}

/// Whether a `drop_table` of `table_id` follows record `k` in `records`.
fn dropped_later(records: &[ChangeRecord], k: usize, table_id: &str) -> bool {
    records[k + 1..]
        .iter()
        .any(|r| r.op == "drop_table" && r.payload["id"].as_str() == Some(table_id))
}

/// Splits a batch into units applied in one transaction each: single records, the records
/// of one multi-table commit, and spans from a table's create/commit to its drop later in
/// the batch (see the module docs).
fn plan_units(records: &[ChangeRecord]) -> Vec<Range<usize>> {
    let n = records.len();
    // End (exclusive) of the transaction each record belongs to.
    let mut txn_end = vec![0usize; n];
    let mut i = 0;
    while i < n {
        let len = match records[i].txn_position() {
            Some(p) if p.txn_index == 0 => {
                let count = (p.txn_count as usize).min(n - i);
                // Only as far as the following records really continue the transaction.
                let mut len = 1;
                while len < count
                    && records[i + len]
                        .txn_position()
                        .is_some_and(|q| q.txn_index as usize == len && q.txn_count == p.txn_count)
                {
                    len += 1;
                }
                len
            }
            _ => 1,
        };
        for end in &mut txn_end[i..i + len] {
            *end = i + len;
        }
        i += len;
    }
    let pointer_id = |r: &ChangeRecord| -> Option<String> {
        matches!(r.op.as_str(), "create_table" | "commit_table")
            .then(|| r.payload["id"].as_str().map(str::to_string))
            .flatten()
    };
    let mut units = Vec::new();
    let mut start = 0;
    while start < n {
        let mut end = txn_end[start];
        let mut k = start;
        while k < end {
            if let Some(id) = pointer_id(&records[k]) {
                if let Some(d) = (k + 1..n).find(|&d| {
                    records[d].op == "drop_table"
                        && records[d].payload["id"].as_str() == Some(id.as_str())
                }) {
                    end = end.max(txn_end[d]);
                }
            }
            k += 1;
        }
        units.push(start..end);
        start = end;
    }
    units
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(seq: i64, op: &str, payload: serde_json::Value) -> ChangeRecord {
        ChangeRecord {
            seq,
            epoch: 1,
            catalog_id: Some("c".into()),
            op: op.into(),
            payload,
            actor: "t".into(),
            created_ms: 1,
        }
    }

    #[test]
    fn units_keep_transactions_together_and_span_create_to_drop() {
        let records = vec![
            rec(1, "create_namespace", json!({})),
            rec(2, "create_table", json!({"id": "a"})),
            rec(
                3,
                "commit_table",
                json!({"id": "b", "txn_index": 0, "txn_count": 2}),
            ),
            rec(
                4,
                "commit_table",
                json!({"id": "c", "txn_index": 1, "txn_count": 2}),
            ),
            rec(
                5,
                "commit_table",
                json!({"id": "a", "txn_index": 0, "txn_count": 1}),
            ),
            rec(6, "drop_table", json!({"id": "a"})),
            rec(7, "create_table", json!({"id": "d"})),
        ];
        let units = plan_units(&records);
        assert_eq!(units, vec![0..1, 1..6, 6..7]);
        assert!(dropped_later(&records, 1, "a"));
        assert!(!dropped_later(&records, 5, "a"));
        assert!(!dropped_later(&records, 2, "b"));

        let plain = vec![
            rec(1, "create_table", json!({"id": "a"})),
            rec(
                2,
                "commit_table",
                json!({"id": "x", "txn_index": 0, "txn_count": 2}),
            ),
            rec(
                3,
                "commit_table",
                json!({"id": "y", "txn_index": 1, "txn_count": 2}),
            ),
        ];
        assert_eq!(plan_units(&plain), vec![0..1, 1..3]);
        // A transaction cut by the batch end stays one unit of what is there.
        assert_eq!(plan_units(&plain[..2]), vec![0..1, 1..2]);
    }
}
