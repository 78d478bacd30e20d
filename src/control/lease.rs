//! The catalog-node side of the write lease: [`WriteLease`] renews the lease of the node's
//! region every `lease_ms / 3` and tells the node whether it may commit.
//!
//! Validity is measured on the node's monotonic clock from the instant the renewal request
//! was SENT: `valid_until = sent + lease_ms - margin`. The control plane starts its own
//! lease period later (when the leader proposes the grant) and waits for that period (plus
//! a margin) to end before it activates another primary, so the node's view always expires
//! first. A failed renewal changes nothing: the lease simply lapses, so a node cut off from
//! the voters stops committing within one lease period on its own. An explicit refusal
//! (not primary, stale epoch, fenced by a switchover) drops the lease at once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::client::ControlClient;

/// What the node last learnt from the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownControl {
    /// Current epoch (0 until the first answer).
    pub epoch: u64,
    /// Current primary region (None while a switchover fences, or not known yet).
    pub primary: Option<String>,
    /// Lease length the control plane grants.
    pub lease_ms: u64,
}

/// One granted lease as the node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseGrant {
    pub epoch: u64,
    /// When the answer arrived (the lease is usable from here).
    pub received_at: Instant,
    /// End of validity: request sent + lease_ms - margin.
    pub valid_until: Instant,
}

/// Settings of a [`WriteLease`].
#[derive(Debug, Clone)]
pub struct WriteLeaseConfig {
    /// Region of the node.
    pub region: String,
    /// Node name, recorded as the lease holder.
    pub holder: String,
    /// Lease length assumed until the control plane answers (`ControlSection::lease_ms`).
    pub lease_ms: u64,
    /// Subtracted from every validity; default `lease_ms / 10`.
    pub margin: Option<Duration>,
    /// Renewal period; default `lease_ms / 3`.
    pub renew_every: Option<Duration>,
    /// Test only (`faults.disable_fencing`): a granted lease never expires on this node, so
    /// a partitioned old primary keeps committing. The deliberately broken build for drills.
    pub ignore_expiry: bool,
}

impl WriteLeaseConfig {
    pub fn new(region: impl Into<String>, holder: impl Into<String>, lease_ms: u64) -> Self {
        WriteLeaseConfig {
            region: region.into(),
            holder: holder.into(),
            lease_ms,
            margin: None,
            renew_every: None,
            ignore_expiry: false,
        }
    }

    /// Sets [`WriteLeaseConfig::ignore_expiry`].
    pub fn ignoring_expiry(mut self, ignore: bool) -> Self {
        self.ignore_expiry = ignore;
        self
    }
}

#[derive(Debug, Default)]
struct Held {
    lease: Option<(u64, Instant)>,
}

/// The write lease of one catalog node, renewed by a background task.
#[derive(Debug)]
pub struct WriteLease {
    held: Arc<Mutex<Held>>,
    ignore_expiry: bool,
    known: watch::Receiver<KnownControl>,
    grants: broadcast::Sender<LeaseGrant>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl WriteLease {
    /// Starts renewing. The task ends when `shutdown` is cancelled or on [`WriteLease::stop`].
    pub fn spawn(
        client: ControlClient,
        config: WriteLeaseConfig,
        shutdown: &CancellationToken,
    ) -> WriteLease {
        let held = Arc::new(Mutex::new(Held::default()));
        let (known_tx, known) = watch::channel(KnownControl {
            epoch: 0,
            primary: None,
            lease_ms: config.lease_ms,
        });
        let (grants, _) = broadcast::channel(1024);
        let stop = shutdown.child_token();
        let ignore_expiry = config.ignore_expiry;
        if ignore_expiry {
            tracing::error!(
                region = %config.region,
                "write-lease expiry is IGNORED (faults.disable_fencing): split brain possible"
            );
        }
        let task = tokio::spawn(renew_loop(
            client,
            config,
            held.clone(),
            known_tx,
            grants.clone(),
            stop.clone(),
        ));
        WriteLease {
            held,
            ignore_expiry,
            known,
            grants,
            stop,
            task,
        }
    }

    /// The valid lease now: `(epoch, valid_until)`. Commit only while this is `Some` and
    /// with this epoch.
    pub fn current(&self) -> Option<(u64, Instant)> {
        self.held_lease()
            .filter(|(_, until)| self.ignore_expiry || *until > Instant::now())
    }

    /// The last granted lease, even if expired: `(epoch, valid_until)`.
    pub fn held_lease(&self) -> Option<(u64, Instant)> {
        match self.held.lock() {
            Ok(h) => h.lease,
            Err(p) => p.into_inner().lease,
        }
    }

    /// Follows the epoch and primary the node last learnt.
    pub fn known(&self) -> watch::Receiver<KnownControl> {
        self.known.clone()
    }

    /// Every grant from now on (for metrics and tests).
    pub fn subscribe_grants(&self) -> broadcast::Receiver<LeaseGrant> {
        self.grants.subscribe()
    }

    /// Stops renewing and drops the lease.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
        if let Ok(mut h) = self.held.lock() {
            h.lease = None;
        }
    }
}

fn set_lease(held: &Mutex<Held>, lease: Option<(u64, Instant)>) {
    let mut h = match held.lock() {
        Ok(h) => h,
        Err(p) => p.into_inner(),
    };
    h.lease = match (h.lease, lease) {
        // Same epoch: never shorten (answers can arrive out of order only across restarts).
        (Some((e1, u1)), Some((e2, u2))) if e1 == e2 => Some((e2, u1.max(u2))),
        (_, new) => new,
    };
}

async fn renew_loop(
    client: ControlClient,
    config: WriteLeaseConfig,
    held: Arc<Mutex<Held>>,
    known_tx: watch::Sender<KnownControl>,
    grants: broadcast::Sender<LeaseGrant>,
    stop: CancellationToken,
) {
    let mut epoch = 0u64;
    let mut lease_ms = config.lease_ms;
    loop {
        // At most one immediate retry per period: after learning a new epoch.
        for _attempt in 0..2 {
            let sent = Instant::now();
            let answer = tokio::select! {
                _ = stop.cancelled() => return,
                a = client.renew_lease(&config.region, epoch, &config.holder) => a,
            };
            match answer {
                Ok(a) => {
                    lease_ms = a.lease_ms.max(1);
                    let margin = config
                        .margin
                        .unwrap_or(Duration::from_millis(lease_ms / 10));
                    known_tx.send_if_modified(|k| {
                        let next = KnownControl {
                            epoch: a.epoch,
                            primary: a.primary.clone(),
                            lease_ms,
                        };
                        let changed = *k != next;
                        *k = next;
                        changed
                    });
                    if a.granted {
                        let valid_until =
                            sent + Duration::from_millis(lease_ms).saturating_sub(margin);
                        set_lease(&held, Some((a.epoch, valid_until)));
                        let _ = grants.send(LeaseGrant {
                            epoch: a.epoch,
                            received_at: Instant::now(),
                            valid_until,
                        });
                        epoch = a.epoch;
                        break;
                    }
                    set_lease(&held, None);
                    let retry =
                        a.primary.as_deref() == Some(config.region.as_str()) && a.epoch != epoch;
                    epoch = a.epoch;
                    if !retry {
                        break;
                    }
                    tracing::debug!(region = %config.region, epoch, "learnt the epoch; asking again");
                }
                Err(e) => {
                    tracing::debug!(region = %config.region, error = %e, "lease renewal failed");
                    break;
                }
            }
        }
        let period = config
            .renew_every
            .unwrap_or(Duration::from_millis((lease_ms / 3).max(1)));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lease that expired a second ago, on a node whose voters never answer.
    async fn expired_lease(ignore_expiry: bool) -> WriteLease {
        let client = ControlClient::new(vec!["127.0.0.1:1".into()]).unwrap();
        let config =
            WriteLeaseConfig::new("us-east-1", "node", 4000).ignoring_expiry(ignore_expiry);
        let lease = WriteLease::spawn(client, config, &CancellationToken::new());
        let past = Instant::now() - Duration::from_secs(1);
        set_lease(&lease.held, Some((3, past)));
        lease
    }

    #[tokio::test]
    async fn an_expired_lease_is_not_current() {
        let lease = expired_lease(false).await;
        assert_eq!(lease.current(), None);
        assert_eq!(lease.held_lease().map(|(e, _)| e), Some(3));
        lease.stop().await;
    }

    #[tokio::test]
    async fn with_fencing_disabled_an_expired_lease_stays_current() {
        let lease = expired_lease(true).await;
        assert_eq!(lease.current().map(|(e, _)| e), Some(3));
        lease.stop().await;
    }
}
