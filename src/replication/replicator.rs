//! The replicator of one region: follows the primary's change log and applies it locally,
//! objects before rows.
//!
//! Each round reads the region's watermark, long-polls the primary's
//! `GET /api/v1/replication/changes?after=<watermark>` and applies what comes back in order,
//! one unit at a time. A unit is one record, or the records of one multi-table commit, or —
//! when a table created or committed in the batch is dropped later in the same batch — every
//! record up to that drop (so the table's intermediate pointers are never exposed here and
//! its files, possibly purged at the primary meanwhile, need not be copied). For each record
//! that creates or moves a table pointer, every object the new metadata adds over the
//! region's current metadata of that table (all of them for a table new here) and the
//! metadata file itself are made present in the local bucket, copied from the primary's;
//! only then does [`MetadataStore::apply_replicated`] apply the unit and advance the
//! watermark in one transaction. A crash at any point resumes from the watermark; re-applying
//! is a no-op.
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
//! primary never received (an old primary after an unplanned failover) and it stops instead
//! of silently diverging.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iceberg::spec::TableMetadata;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::copier::{objects_to_replicate, CopyError, CopyReport, ObjectCopier};
use crate::config::ReplicationSection;
use crate::control::KnownControl;
use crate::storage::{ObjectStore, StorageError};
use crate::store::{
    ApplyOutcome, ChangeRecord, EntityKind, MetadataStore, StoreError, TableRecord,
};

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
    /// `waiting-for-primary`, `primary`, `standalone`, `disabled` or `starting`.
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

    fn copy(seq: i64, e: CopyError) -> RoundError {
        RoundError {
            seq: Some(seq),
            permanent: !e.is_transient(),
            message: e.to_string(),
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

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
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
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
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
        }
    }

    pub fn region(&self) -> &str {
        &self.region
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
            Ok(wm) => self.paused.store(wm.paused, Ordering::Release),
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
        if let Ok(page) = self.fetch(peer, watermark, 1, 0).await {
            let mut p = self.progress();
            p.primary_head = Some(page.head);
            p.pulled = page.records.iter().map(|r| (r.seq, r.created_ms)).collect();
        }
    }

    fn record_failure(&self, e: RoundError) {
        let max = self.settings.max_record_attempts;
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
        if wm.paused {
            self.paused.store(true, Ordering::Release);
            return Ok(());
        }
        let verified = self.progress().verified_primary.as_deref() == Some(primary);
        if !verified {
            self.check_continuity(primary, peer, wm.seq).await?;
            self.progress().verified_primary = Some(primary.to_string());
        }
        self.set_state("following");
        let mut page = self
            .fetch(
                peer,
                wm.seq,
                self.settings.batch_size,
                self.settings.poll_wait_ms,
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
        for unit in plan_units(&page.records) {
            applied += self.apply_unit(peer, &page.records[unit]).await?;
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
    ) -> Result<ChangesPage, RoundError> {
        let url = format!(
            "{}/api/v1/replication/changes?after={after}&limit={limit}&wait_ms={wait_ms}",
            peer.catalog_url.trim_end_matches('/')
        );
        let resp = self
            .http
            .get(&url)
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

    /// Refuses to follow `primary` when this region's log does not continue into its log.
    async fn check_continuity(
        &self,
        primary: &str,
        peer: &PeerRegion,
        watermark: i64,
    ) -> Result<(), RoundError> {
        if watermark == 0 {
            return Ok(());
        }
        let local = self
            .store
            .changes_after(watermark - 1, 1)
            .await
            .map_err(|e| RoundError::store(None, e))?;
        let Some(mine) = local.into_iter().next().filter(|r| r.seq == watermark) else {
            return Ok(());
        };
        let page = self.fetch(peer, watermark - 1, 1, 0).await?;
        if page.head < watermark {
            return Err(RoundError::permanent(
                Some(watermark),
                format!(
                    "this region's change log reaches seq {watermark} but primary {primary}'s ends \
                     at {}: this region holds commits the primary never received (an old primary \
                     after a failover?); they must be quarantined before it can follow {primary} \
                     (not automated yet)",
                    page.head
                ),
            ));
        }
        match page.records.first() {
            Some(theirs) if theirs.seq == watermark => {
                if theirs.epoch != mine.epoch
                    || theirs.op != mine.op
                    || theirs.payload != mine.payload
                {
                    return Err(RoundError::permanent(
                        Some(watermark),
                        format!(
                            "record {watermark} differs between this region (epoch {}, {}) and \
                             primary {primary} (epoch {}, {}): the regions diverged; this region's \
                             commits from seq {watermark} on must be quarantined (not automated yet)",
                            mine.epoch, mine.op, theirs.epoch, theirs.op
                        ),
                    ));
                }
            }
            _ => tracing::warn!(
                region = %self.region, primary, watermark,
                "the primary has no record at this region's watermark; continuing unchecked"
            ),
        }
        Ok(())
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
            let more = self.fetch(peer, last.seq, missing, 0).await?;
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

    /// Copies the unit's objects, then applies it. Returns how many records were applied.
    async fn apply_unit(
        &self,
        peer: &PeerRegion,
        records: &[ChangeRecord],
    ) -> Result<usize, RoundError> {
        let mut bases: HashMap<String, Arc<TableMetadata>> = HashMap::new();
        let mut copied = CopyReport::default();
        for (k, record) in records.iter().enumerate() {
            // Undecodable records are refused (with their message) by the store below.
            let Ok(change) = record.decode() else {
                continue;
            };
            let Some(pointer) = change.pointer() else {
                continue;
            };
            if dropped_later(records, k, &pointer.id) {
                tracing::debug!(seq = record.seq, table = %pointer.id, "dropped later in the unit; no objects to copy");
                continue;
            }
            let report = self
                .ensure_objects(peer, record.seq, pointer, &mut bases)
                .await?;
            copied.copied += report.copied;
            copied.bytes_copied += report.bytes_copied;
        }
        let first = records.first().map(|r| r.seq);
        match self.store.apply_replicated(records).await {
            Ok(ApplyOutcome::Applied { watermark }) => {
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

    /// Makes the objects of a table's (or view's) new metadata present in the local bucket:
    /// first what the metadata references that the region lacks, then the metadata file.
    async fn ensure_objects(
        &self,
        peer: &PeerRegion,
        seq: i64,
        pointer: &TableRecord,
        bases: &mut HashMap<String, Arc<TableMetadata>>,
    ) -> Result<CopyReport, RoundError> {
        let location = pointer.metadata_location.clone();
        if pointer.kind == EntityKind::View {
            return self
                .copier
                .ensure_present(&peer.objects, &self.local, &[location])
                .await
                .map_err(|e| RoundError::copy(seq, e));
        }
        let started = Instant::now();
        let bytes = peer.objects.get(&location).await.map_err(|e| match e {
            StorageError::NotFound(_) => RoundError::permanent(
                Some(seq),
                format!("metadata file {location} is missing in the primary's bucket"),
            ),
            StorageError::InvalidLocation(_) => RoundError::permanent(Some(seq), e.to_string()),
            e => RoundError::transient(Some(seq), e.to_string()),
        })?;
        let new: TableMetadata = serde_json::from_slice(&bytes).map_err(|e| {
            RoundError::permanent(
                Some(seq),
                format!("metadata file {location} does not parse: {e}"),
            )
        })?;
        let read_ms = started.elapsed().as_millis() as u64;
        let base = match bases.get(&pointer.id) {
            Some(b) => Some(b.clone()),
            None => self.local_metadata(&pointer.id).await,
        };
        let base_ms = started.elapsed().as_millis() as u64;
        let objects = objects_to_replicate(&peer.objects, base.as_deref(), &new)
            .await
            .map_err(|e| RoundError::copy(seq, e))?;
        let listed_ms = started.elapsed().as_millis() as u64;
        // The metadata file is referenced by nothing until the pointer moves, so it is
        // written alongside the objects (its bytes are at hand already).
        let size = bytes.len() as u64;
        let put_metadata = async {
            match self.local.head(&location).await {
                Ok(Some(info)) if info.size == size => Ok(0u64),
                _ => self.local.put(&location, bytes).await.map(|()| size),
            }
        };
        let (report, metadata) = tokio::join!(
            self.copier
                .ensure_present(&peer.objects, &self.local, &objects),
            put_metadata
        );
        let mut report = report.map_err(|e| RoundError::copy(seq, e))?;
        let written = metadata.map_err(|e| {
            RoundError::transient(Some(seq), format!("cannot write {location} here: {e}"))
        })?;
        if written > 0 {
            report.copied += 1;
            report.bytes_copied += written;
        }
        tracing::debug!(
            seq, table = %pointer.id, objects = objects.len(), copied = report.copied,
            read_ms, base_ms, listed_ms, total_ms = started.elapsed().as_millis() as u64,
            "objects of the change present"
        );
        let new = Arc::new(new);
        self.recent
            .insert(pointer.id.clone(), (location.clone(), new.clone()));
        bases.insert(pointer.id.clone(), new);
        Ok(report)
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
