//! Control plane (openraft 0.9, storage v2): which region is primary, write leases,
//! switchover and failover.
//!
//! Three voters (one per catalog region plus a witness) replicate a small state machine
//! ([`ControlState`]): the epoch, the primary region, the write lease, per-region status, the
//! failover history and a switchover in progress. Catalog nodes of the primary region commit
//! only while they hold a fresh write lease ([`WriteLease`]) granted through a Raft write;
//! the control plane activates another primary only after the old lease has expired (plus a
//! margin of two heartbeats), so two regions never hold a valid lease at once.
//!
//! - [`types`]: Raft type config, commands, responses and the state (deterministic apply).
//! - [`log_store`]: the persistent log (`<raft_dir>/raft.db`, SQLite).
//! - [`state_machine`]: the applied state and its JSON snapshots (`<raft_dir>/snapshot.json`).
//! - [`network`]: Raft RPC over HTTP and the [`LinkFaults`] fault-injection hook.
//! - [`api`]: the `/control/v1` HTTP API; followers forward to the leader.
//! - [`client`]: [`ControlClient`] for catalog nodes and operators.
//! - [`lease`]: [`WriteLease`], the node side of the lease.
//!
//! [`ControlPlane::start`] runs one voter: Raft RPC and the control API on `listen`, the
//! cluster membership initialised from the configured voters on first start, and a leader
//! loop that proposes the initial state, resumes a switchover left unfinished by a previous
//! leader and, when `auto_failover_after_ms > 0`, fails over a primary that held no lease
//! for that long to another catalog region whose nodes asked for a lease recently.

pub mod api;
pub mod client;
pub mod lease;
pub mod log_store;
pub mod network;
pub mod state_machine;
pub mod types;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, SnapshotPolicy};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use api::{ControlError, FailoverRequest, LeaseAnswer, LeaseRequest, SwitchoverRequest};
pub use client::{ClientError, ControlClient};
pub use lease::{KnownControl, LeaseGrant, WriteLease, WriteLeaseConfig};
pub use network::{LinkFaults, LinkMode};
pub use types::{
    ControlCommand, ControlRaft, ControlResponse, ControlState, FailoverEvent, Lease, NodeId,
    RegionStatus, Switchover, TypeConfig, WITNESS,
};

use crate::clock::now_ms_unsigned;
use crate::config::ControlSection;
use log_store::LogStore;
use state_machine::StateMachineStore;
use types::RegionInit;

/// Hook of a planned switchover: waits until region `to` has applied everything the old
/// primary `from` committed up to `epoch`. Replication provides the real one later.
#[async_trait]
pub trait CatchUp: Send + Sync + 'static {
    async fn wait_caught_up(&self, from: Option<&str>, to: &str, epoch: u64) -> Result<(), String>;

    /// Before an unforced failover: `Err(why)` when region `to` lags the primary's log by
    /// more than `max_lag_records` (or its lag cannot be read). Default: no replication, no
    /// bound.
    async fn check_failover_lag(&self, _to: &str, _max_lag_records: u64) -> Result<(), String> {
        Ok(())
    }
}

/// [`CatchUp`] that returns at once (no replication yet).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCatchUp;

#[async_trait]
impl CatchUp for NoCatchUp {
    async fn wait_caught_up(&self, _: Option<&str>, _: &str, _: u64) -> Result<(), String> {
        Ok(())
    }
}

/// Optional parts of a voter.
pub struct ControlPlaneOptions {
    /// A listener already bound to the voter's address (tests bind port 0 first); when
    /// absent `section.listen` is bound.
    pub listener: Option<TcpListener>,
    /// Fault injection on this voter's outgoing links.
    pub faults: Arc<LinkFaults>,
    pub catch_up: Arc<dyn CatchUp>,
    /// Longest wait for [`CatchUp`] before a switchover is aborted.
    pub catch_up_timeout: Duration,
    /// Header, body and idle timeouts and connection limit of the voter's listener.
    pub http_limits: crate::http_server::HttpLimits,
}

impl Default for ControlPlaneOptions {
    fn default() -> Self {
        ControlPlaneOptions {
            listener: None,
            faults: LinkFaults::new(),
            catch_up: Arc::new(NoCatchUp),
            catch_up_timeout: Duration::from_secs(60),
            http_limits: crate::http_server::HttpLimits::default(),
        }
    }
}

/// A configuration the voter cannot run with.
#[derive(Debug, thiserror::Error)]
#[error("control plane configuration: {0}")]
pub struct ControlConfigError(String);

/// The catalog regions of the voter set (every voter region but the witness), in order.
pub fn catalog_regions(section: &ControlSection) -> Vec<RegionInit> {
    let mut out: Vec<RegionInit> = Vec::new();
    for v in &section.voters {
        if v.region != WITNESS && !out.iter().any(|r| r.name == v.region) {
            out.push(RegionInit {
                name: v.region.clone(),
                endpoint: Some(v.address.clone()),
            });
        }
    }
    out
}

/// Where requests go.
enum Leader {
    Me,
    Other(NodeId, String),
    Unknown,
}

/// Timing derived from the section.
#[derive(Debug, Clone, Copy)]
struct Timing {
    lease_ms: u64,
    /// Waited after a lease's expiry before another primary is activated.
    margin_ms: u64,
    /// Bound of one Raft write or linearizable read on the leader.
    op: Duration,
    /// Bound of a forwarded switchover or failover.
    admin: Duration,
    catch_up: Duration,
}

/// The shared core of one voter, used by the HTTP handlers and the leader loop.
pub(crate) struct Voter {
    id: NodeId,
    raft: ControlRaft,
    sm: StateMachineStore,
    section: ControlSection,
    timing: Timing,
    http: reqwest::Client,
    faults: Arc<LinkFaults>,
    catch_up: Arc<dyn CatchUp>,
    /// One switchover or failover procedure at a time on this voter.
    admin: tokio::sync::Mutex<()>,
    /// Since when this voter leads, and since when it has seen the current primary.
    leader_since: Mutex<Option<Instant>>,
    primary_seen: Mutex<Option<(String, Instant)>>,
    /// When this voter (as leader) last answered a lease request of each region: the
    /// regions whose catalog nodes are alive, as seen from here.
    lease_requests: Mutex<HashMap<String, Instant>>,
}

/// One running control-plane voter.
pub struct ControlPlane {
    voter: Arc<Voter>,
    local_addr: SocketAddr,
    stop: CancellationToken,
    supervisor: JoinHandle<()>,
}

impl ControlPlane {
    /// Starts the voter of `section` (binds `section.listen`). Stops when `shutdown` is
    /// cancelled or on [`ControlPlane::shutdown`].
    pub async fn start(
        section: &ControlSection,
        shutdown: CancellationToken,
    ) -> anyhow::Result<ControlPlane> {
        Self::start_with(section, ControlPlaneOptions::default(), shutdown).await
    }

    /// [`ControlPlane::start`] with a pre-bound listener, fault hook or catch-up hook.
    pub async fn start_with(
        section: &ControlSection,
        options: ControlPlaneOptions,
        shutdown: CancellationToken,
    ) -> anyhow::Result<ControlPlane> {
        let bad = |m: &str| ControlConfigError(m.to_string());
        let id = section
            .voter_id
            .ok_or_else(|| bad("`control.voter_id` is required on a voter"))?;
        let raft_dir = section
            .raft_dir
            .clone()
            .ok_or_else(|| bad("`control.raft_dir` is required on a voter"))?;
        if !section.voters.iter().any(|v| v.id == id) {
            return Err(bad("`control.voter_id` is not among `control.voters`").into());
        }
        if !catalog_regions(section)
            .iter()
            .any(|r| r.name == section.initial_primary)
        {
            return Err(
                bad("`control.initial_primary` is not a catalog region of the voters").into(),
            );
        }
        if section.heartbeat_ms == 0
            || section.heartbeat_ms >= section.election_timeout_min_ms
            || section.election_timeout_min_ms >= section.election_timeout_max_ms
        {
            return Err(bad(
                "need 0 < heartbeat_ms < election_timeout_min_ms < election_timeout_max_ms",
            )
            .into());
        }
        if section.lease_ms == 0 {
            return Err(bad("`control.lease_ms` must be positive").into());
        }
        let listener = match options.listener {
            Some(l) => l,
            None => {
                let listen = section
                    .listen
                    .as_deref()
                    .ok_or_else(|| bad("`control.listen` is required on a voter"))?;
                TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("binding the control plane to {listen}"))?
            }
        };
        let local_addr = listener.local_addr()?;
        std::fs::create_dir_all(&raft_dir)
            .with_context(|| format!("creating {}", raft_dir.display()))?;
        let log = LogStore::open(&raft_dir).await?;
        let sm = StateMachineStore::open(&raft_dir)?;

        let config = openraft::Config {
            cluster_name: "pangolin-control".into(),
            heartbeat_interval: section.heartbeat_ms,
            election_timeout_min: section.election_timeout_min_ms,
            election_timeout_max: section.election_timeout_max_ms,
            install_snapshot_timeout: (section.election_timeout_max_ms * 4).max(2000),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(1000),
            max_in_snapshot_log_to_keep: 200,
            ..Default::default()
        }
        .validate()?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_millis(section.election_timeout_min_ms))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        let network = network::Network::new(
            id,
            http.clone(),
            options.faults.clone(),
            Duration::from_millis(section.heartbeat_ms * 2),
        );
        let raft = openraft::Raft::new(id, Arc::new(config), network, log.clone(), sm.clone())
            .await
            .context("starting raft")?;

        let op = Duration::from_millis((section.election_timeout_max_ms * 2).max(500));
        let timing = Timing {
            lease_ms: section.lease_ms,
            margin_ms: section.heartbeat_ms * 2,
            op,
            admin: Duration::from_millis(section.lease_ms * 2 + section.heartbeat_ms * 2)
                + options.catch_up_timeout
                + op * 6,
            catch_up: options.catch_up_timeout,
        };
        let voter = Arc::new(Voter {
            id,
            raft: raft.clone(),
            sm,
            section: section.clone(),
            timing,
            http,
            faults: options.faults,
            catch_up: options.catch_up,
            admin: tokio::sync::Mutex::new(()),
            leader_since: Mutex::new(None),
            primary_seen: Mutex::new(None),
            lease_requests: Mutex::new(HashMap::new()),
        });

        let initialized = match raft.is_initialized().await {
            Ok(b) => b,
            Err(e) => {
                let _ = raft.shutdown().await;
                return Err(e.into());
            }
        };
        if !initialized {
            let members: BTreeMap<NodeId, BasicNode> = section
                .voters
                .iter()
                .map(|v| (v.id, BasicNode::new(v.address.clone())))
                .collect();
            // Every voter may do this on first start: openraft refuses it where the log is
            // no longer empty, and identical initial memberships do not conflict.
            if let Err(e) = raft.initialize(members).await {
                tracing::info!(voter = id, error = %e, "raft membership already initialised");
            }
        }

        let stop = shutdown.child_token();
        let router = network::raft_router(raft.clone())
            .merge(api::control_router(voter.clone()))
            .merge(crate::faults::router());
        let server = tokio::spawn(crate::http_server::serve(
            "control plane",
            listener,
            router,
            options.http_limits,
            crate::http_server::iceberg_timeout_answer,
            stop.clone(),
        ));

        let leader_loop = tokio::spawn(leader_loop(voter.clone(), stop.clone()));
        let sup_stop = stop.clone();
        let supervisor = tokio::spawn(async move {
            sup_stop.cancelled().await;
            let _ = leader_loop.await;
            if let Err(e) = raft.shutdown().await {
                tracing::warn!(error = %e, "raft shutdown");
            }
            let mut server = server;
            if tokio::time::timeout(Duration::from_secs(2), &mut server)
                .await
                .is_err()
            {
                server.abort();
            }
            log.close().await;
        });
        tracing::info!(voter = id, addr = %local_addr, "control plane voter started");
        Ok(ControlPlane {
            voter,
            local_addr,
            stop,
            supervisor,
        })
    }

    /// This voter's id.
    pub fn id(&self) -> NodeId {
        self.voter.id
    }

    /// The address Raft RPC and the control API listen on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The Raft handle (metrics, snapshots).
    pub fn raft(&self) -> &ControlRaft {
        &self.voter.raft
    }

    /// The fault hook of this voter's outgoing links.
    pub fn faults(&self) -> &Arc<LinkFaults> {
        &self.voter.faults
    }

    /// Whether this voter currently believes it leads.
    pub fn is_leader(&self) -> bool {
        matches!(self.voter.leader(), Leader::Me)
    }

    /// The leader this voter knows of.
    pub fn current_leader(&self) -> Option<NodeId> {
        self.voter.raft.metrics().borrow().current_leader
    }

    /// The state as applied on this voter: may be stale; use [`ControlPlane::state`] for
    /// decisions.
    pub fn local_state(&self) -> ControlState {
        self.voter.sm.local_state()
    }

    /// Follows the state applied on this voter.
    pub fn subscribe_local(&self) -> tokio::sync::watch::Receiver<ControlState> {
        self.voter.sm.subscribe()
    }

    /// The state, read linearizably (through the leader).
    pub async fn state(&self) -> Result<ControlState, ControlError> {
        self.voter.state(false).await
    }

    /// Grants or renews a lease (through the leader).
    pub async fn renew_lease(&self, req: LeaseRequest) -> Result<LeaseAnswer, ControlError> {
        self.voter.lease(req, false).await
    }

    /// Planned switchover (through the leader).
    pub async fn switchover(&self, req: SwitchoverRequest) -> Result<ControlState, ControlError> {
        self.voter.switchover(req, false).await
    }

    /// Unplanned failover (through the leader).
    pub async fn failover(&self, req: FailoverRequest) -> Result<ControlState, ControlError> {
        self.voter.failover(req, false).await
    }

    /// Stops the voter: the server, the leader loop and Raft; closes the log.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.supervisor.await;
    }
}

impl Voter {
    fn leader(&self) -> Leader {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        match m.current_leader {
            Some(id) if id == self.id => Leader::Me,
            Some(id) => match m.membership_config.membership().get_node(&id) {
                Some(node) => Leader::Other(id, node.addr.clone()),
                None => Leader::Unknown,
            },
            None => Leader::Unknown,
        }
    }

    /// Runs `local` here when this voter leads, else forwards the request to the leader
    /// (once: a forwarded request is never forwarded again).
    async fn route<T, B, F>(
        &self,
        forwarded: bool,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
        local: F,
    ) -> Result<T, ControlError>
    where
        T: DeserializeOwned,
        B: Serialize,
        F: std::future::Future<Output = Result<T, ControlError>>,
    {
        match self.leader() {
            Leader::Me => match local.await {
                Err(ControlError::NotLeader {
                    leader_id: Some(id),
                    leader_addr: Some(addr),
                }) if !forwarded && id != self.id => {
                    self.forward(id, &addr, path, body, timeout).await
                }
                other => other,
            },
            Leader::Other(id, addr) if !forwarded => {
                self.forward(id, &addr, path, body, timeout).await
            }
            Leader::Other(id, addr) => Err(ControlError::NotLeader {
                leader_id: Some(id),
                leader_addr: Some(addr),
            }),
            Leader::Unknown => Err(ControlError::NoLeader(format!(
                "voter {} knows no leader",
                self.id
            ))),
        }
    }

    async fn forward<T: DeserializeOwned, B: Serialize>(
        &self,
        leader: NodeId,
        addr: &str,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<T, ControlError> {
        let unavailable =
            |e: String| ControlError::Unavailable(format!("leader {leader} at {addr}: {e}"));
        let attempt = async {
            self.faults
                .pass(self.id, leader)
                .await
                .map_err(|e| e.to_string())?;
            let url = format!("http://{addr}{path}");
            let req = match body {
                Some(b) => self.http.post(url).json(b),
                None => self.http.get(url),
            };
            let res = req
                .header(api::FORWARDED_HEADER, self.id.to_string())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = res.status().as_u16();
            let bytes = res.bytes().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((status, bytes))
        };
        // The whole forward, an injected delay included, is bounded by `timeout`.
        let (status, bytes) = tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| unavailable(format!("no answer within {timeout:?}")))?
            .map_err(unavailable)?;
        if (200..300).contains(&status) {
            serde_json::from_slice(&bytes)
                .map_err(|e| ControlError::Internal(format!("leader answer: {e}")))
        } else {
            Err(ControlError::from_remote(status, &bytes))
        }
    }

    async fn state(&self, forwarded: bool) -> Result<ControlState, ControlError> {
        let path = "/control/v1/state";
        self.route::<_, (), _>(
            forwarded,
            path,
            None,
            self.timing.op,
            self.linearizable_state(),
        )
        .await
    }

    async fn lease(&self, req: LeaseRequest, forwarded: bool) -> Result<LeaseAnswer, ControlError> {
        let path = "/control/v1/lease";
        self.route(
            forwarded,
            path,
            Some(&req),
            self.timing.op,
            self.lease_local(&req),
        )
        .await
    }

    async fn switchover(
        &self,
        req: SwitchoverRequest,
        forwarded: bool,
    ) -> Result<ControlState, ControlError> {
        let path = "/control/v1/switchover";
        let local = self.switchover_local(&req);
        self.route(forwarded, path, Some(&req), self.timing.admin, local)
            .await
    }

    async fn failover(
        &self,
        req: FailoverRequest,
        forwarded: bool,
    ) -> Result<ControlState, ControlError> {
        let path = "/control/v1/failover";
        let local = self.failover_local(&req);
        self.route(forwarded, path, Some(&req), self.timing.admin, local)
            .await
    }

    /// Linearizable read: confirms leadership with a quorum, waits until this voter has
    /// applied everything committed before, then reads.
    async fn linearizable_state(&self) -> Result<ControlState, ControlError> {
        match tokio::time::timeout(self.timing.op, self.raft.ensure_linearizable()).await {
            Err(_) => Err(ControlError::Unavailable(
                "no quorum confirmed the leader in time".into(),
            )),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(ControlError::NotLeader {
                    leader_id: f.leader_id,
                    leader_addr: f.leader_node.map(|n| n.addr),
                })
            }
            Ok(Err(e)) => Err(ControlError::Unavailable(e.to_string())),
            Ok(Ok(_)) => Ok(self.sm.local_state()),
        }
    }

    /// Proposes `cmd` and waits until it is committed and applied here.
    async fn propose(&self, cmd: ControlCommand) -> Result<ControlResponse, ControlError> {
        match tokio::time::timeout(self.timing.op, self.raft.client_write(cmd)).await {
            Err(_) => Err(ControlError::Unavailable(
                "the write was not committed in time".into(),
            )),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(ControlError::NotLeader {
                    leader_id: f.leader_id,
                    leader_addr: f.leader_node.map(|n| n.addr),
                })
            }
            Ok(Err(RaftError::APIError(e))) => Err(ControlError::Internal(e.to_string())),
            Ok(Err(RaftError::Fatal(e))) => Err(ControlError::Unavailable(e.to_string())),
            Ok(Ok(res)) => Ok(res.data),
        }
    }

    /// Grants through a Raft write; a request the applied state refuses anyway (a secondary
    /// region, a stale epoch, a fenced primary) is answered from that state without one.
    /// A refusal is always safe, even from a view that is a little stale.
    async fn lease_local(&self, req: &LeaseRequest) -> Result<LeaseAnswer, ControlError> {
        if let Ok(mut seen) = self.lease_requests.lock() {
            seen.insert(req.region.clone(), Instant::now());
        }
        let st = self.sm.local_state();
        if let Some(reason) = st.lease_refusal(&req.region, req.epoch) {
            return Ok(LeaseAnswer {
                granted: false,
                epoch: st.epoch,
                primary: st.primary,
                lease_ms: self.timing.lease_ms,
                expires_at_ms: None,
                reason: Some(reason),
            });
        }
        let res = self
            .propose(ControlCommand::GrantLease {
                region: req.region.clone(),
                epoch: req.epoch,
                holder: req.holder.clone(),
                now_ms: now_ms_unsigned(),
                lease_ms: self.timing.lease_ms,
            })
            .await?;
        Ok(LeaseAnswer {
            granted: res.applied,
            epoch: res.epoch,
            primary: res.primary,
            lease_ms: self.timing.lease_ms,
            expires_at_ms: res.lease_expires_at_ms,
            reason: res.reason,
        })
    }

    async fn lock_admin(&self) -> Result<tokio::sync::MutexGuard<'_, ()>, ControlError> {
        tokio::time::timeout(self.timing.admin, self.admin.lock())
            .await
            .map_err(|_| {
                ControlError::Unavailable("another switchover or failover is still running".into())
            })
    }

    async fn switchover_local(
        &self,
        req: &SwitchoverRequest,
    ) -> Result<ControlState, ControlError> {
        let _guard = self.lock_admin().await?;
        let st = self.linearizable_state().await?;
        if !st.knows_region(&req.to) {
            return Err(ControlError::BadRequest(format!(
                "unknown catalog region {}",
                req.to
            )));
        }
        match &st.switchover_in_progress {
            None if st.primary.as_deref() == Some(req.to.as_str()) => return Ok(st),
            None => {
                let res = self
                    .propose(ControlCommand::BeginSwitchover {
                        to: req.to.clone(),
                        actor: req.actor.clone(),
                        reason: req.reason.clone(),
                        now_ms: now_ms_unsigned(),
                        planned: true,
                        force: false,
                    })
                    .await?;
                if !res.applied {
                    return Err(ControlError::Conflict(res.reason.unwrap_or_default()));
                }
                tracing::info!(to = %req.to, actor = %req.actor, "switchover begun: primary fenced");
            }
            // A retry of the same switchover resumes it.
            Some(s) if s.to == req.to && s.planned => {}
            Some(s) => {
                return Err(ControlError::Conflict(format!(
                    "a {} to {} is in progress",
                    if s.planned { "switchover" } else { "failover" },
                    s.to
                )))
            }
        }
        self.drive_in_progress().await
    }

    async fn failover_local(&self, req: &FailoverRequest) -> Result<ControlState, ControlError> {
        let _guard = self.lock_admin().await?;
        let st = self.linearizable_state().await?;
        if !st.knows_region(&req.to) {
            return Err(ControlError::BadRequest(format!(
                "unknown catalog region {}",
                req.to
            )));
        }
        if st.primary.as_deref() != Some(req.to.as_str()) && !req.force {
            self.catch_up
                .check_failover_lag(&req.to, self.section.max_failover_lag_records)
                .await
                .map_err(|why| {
                    ControlError::Conflict(format!(
                        "failover to {} refused: {why}; use force to fail over anyway",
                        req.to
                    ))
                })?;
        }
        match &st.switchover_in_progress {
            None if st.primary.as_deref() == Some(req.to.as_str()) => return Ok(st),
            None => {
                let res = self
                    .propose(ControlCommand::BeginSwitchover {
                        to: req.to.clone(),
                        actor: req.actor.clone(),
                        reason: req.reason.clone(),
                        now_ms: now_ms_unsigned(),
                        planned: false,
                        force: req.force,
                    })
                    .await?;
                if !res.applied {
                    return Err(ControlError::Conflict(res.reason.unwrap_or_default()));
                }
                tracing::warn!(to = %req.to, actor = %req.actor, "failover begun: primary fenced");
            }
            // Already fenced (a switchover or failover in progress): this failover takes
            // over and decides the target.
            Some(_) => {}
        }
        self.wait_lease_expired().await?;
        self.activate_failover(&req.to, req.force, &req.actor, &req.reason)
            .await
    }

    async fn activate_failover(
        &self,
        to: &str,
        force: bool,
        actor: &str,
        reason: &str,
    ) -> Result<ControlState, ControlError> {
        let res = self
            .propose(ControlCommand::Failover {
                to: to.to_string(),
                force,
                actor: actor.to_string(),
                reason: reason.to_string(),
                now_ms: now_ms_unsigned(),
            })
            .await?;
        if !res.applied {
            return Err(ControlError::Conflict(res.reason.unwrap_or_default()));
        }
        tracing::warn!(to, epoch = res.epoch, actor, "failover done");
        Ok(self.sm.local_state())
    }

    /// Finishes the switchover (or failover fence) in progress: waits for the old lease to
    /// expire, for the target to catch up (planned only), then activates the target.
    async fn drive_in_progress(&self) -> Result<ControlState, ControlError> {
        let Some(s) = self.sm.local_state().switchover_in_progress else {
            return Ok(self.sm.local_state());
        };
        self.wait_lease_expired().await?;
        if !s.planned {
            return self
                .activate_failover(&s.to, s.forced, &s.actor, &s.reason)
                .await;
        }
        let caught_up = tokio::time::timeout(
            self.timing.catch_up,
            self.catch_up
                .wait_caught_up(s.from.as_deref(), &s.to, s.epoch),
        )
        .await
        .unwrap_or_else(|_| Err("timed out".into()));
        if let Err(why) = caught_up {
            let reason = format!("{} did not catch up: {why}", s.to);
            let _ = self
                .propose(ControlCommand::AbortSwitchover {
                    reason: reason.clone(),
                    now_ms: now_ms_unsigned(),
                })
                .await?;
            return Err(ControlError::Conflict(format!(
                "switchover aborted: {reason}"
            )));
        }
        let res = self
            .propose(ControlCommand::CompleteSwitchover {
                to: s.to.clone(),
                epoch: s.epoch,
                now_ms: now_ms_unsigned(),
            })
            .await?;
        if !res.applied {
            return Err(ControlError::Conflict(res.reason.unwrap_or_default()));
        }
        tracing::info!(to = %s.to, epoch = res.epoch, "switchover done");
        Ok(self.sm.local_state())
    }

    /// Waits (on this voter's wall clock) until the last granted lease has expired plus
    /// the safety margin. The primary is fenced, so the lease no longer moves.
    async fn wait_lease_expired(&self) -> Result<(), ControlError> {
        let t = self.timing;
        let give_up = Instant::now() + Duration::from_millis(t.lease_ms * 2 + t.margin_ms + 1000);
        loop {
            let deadline = self
                .sm
                .local_state()
                .lease
                .map(|l| l.expires_at_ms.saturating_add(t.margin_ms))
                .unwrap_or(0);
            let now = now_ms_unsigned();
            if now >= deadline {
                return Ok(());
            }
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ControlError::Unavailable(
                    "the old lease did not expire in time (clock jump?)".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(deadline - now).min(left)).await;
        }
    }

    fn note_leadership(&self, leading: bool) -> Option<Instant> {
        let mut since = match self.leader_since.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match (leading, *since) {
            (true, None) => *since = Some(Instant::now()),
            (false, _) => *since = None,
            _ => {}
        }
        *since
    }

    /// Since when this voter has seen `primary` as the primary.
    fn primary_seen_since(&self, primary: &str) -> Instant {
        let mut seen = match self.primary_seen.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match &*seen {
            Some((p, at)) if p == primary => *at,
            _ => {
                let now = Instant::now();
                *seen = Some((primary.to_string(), now));
                now
            }
        }
    }

    /// One round of the leader's duties.
    async fn leader_duties(&self, leader_since: Instant) -> Result<(), ControlError> {
        let st = self.sm.local_state();
        if !st.initialized {
            let res = self
                .propose(ControlCommand::Initialize {
                    primary: self.section.initial_primary.clone(),
                    regions: catalog_regions(&self.section),
                    now_ms: now_ms_unsigned(),
                })
                .await?;
            if res.applied {
                tracing::info!(primary = ?res.primary, epoch = res.epoch, "control plane initialised");
            }
            return Ok(());
        }
        if st.switchover_in_progress.is_some() {
            // Left by a previous leader or a failed request: finish it.
            if let Ok(_guard) = self.admin.try_lock() {
                self.drive_in_progress().await?;
            }
            return Ok(());
        }
        let after = self.section.auto_failover_after_ms;
        let Some(primary) = st.primary.clone() else {
            return Ok(());
        };
        let seen_since = self.primary_seen_since(&primary);
        if after == 0 {
            return Ok(());
        }
        let last = [
            Some(leader_since),
            Some(seen_since),
            self.sm.last_grant_seen(&primary),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(leader_since);
        let silent = last.elapsed();
        if silent < Duration::from_millis(after) {
            return Ok(());
        }
        // Only to a region whose catalog nodes asked for a lease recently (they poll even
        // while secondary): failing over to a region without nodes would stop all writes.
        let alive_within = Duration::from_millis(after.max(self.timing.lease_ms));
        let alive = |region: &str| {
            self.lease_requests
                .lock()
                .ok()
                .and_then(|m| m.get(region).copied())
                .is_some_and(|at| at.elapsed() < alive_within)
        };
        let Some(target) = catalog_regions(&self.section)
            .into_iter()
            .map(|r| r.name)
            .find(|r| *r != primary && alive(r))
        else {
            tracing::debug!(%primary, "primary silent but no other region's nodes are alive");
            return Ok(());
        };
        if self.admin.try_lock().is_err() {
            return Ok(());
        }
        let reason = format!("primary held no lease for {} ms", silent.as_millis());
        tracing::warn!(%primary, %target, %reason, "automatic failover");
        self.failover_local(&FailoverRequest {
            to: target,
            force: false,
            actor: "auto".into(),
            reason,
        })
        .await
        .map(|_| ())
    }
}

async fn leader_loop(voter: Arc<Voter>, stop: CancellationToken) {
    let tick = Duration::from_millis(voter.section.heartbeat_ms.clamp(10, 500));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        let leading =
            matches!(voter.leader(), Leader::Me) && voter.raft.metrics().borrow().state.is_leader();
        let Some(since) = voter.note_leadership(leading) else {
            continue;
        };
        let duties = voter.leader_duties(since);
        tokio::select! {
            _ = stop.cancelled() => return,
            res = duties => {
                if let Err(e) = res {
                    tracing::debug!(voter = voter.id, error = %e, "leader duties");
                }
            }
        }
    }
}
