//! Raft RPC between voters over HTTP (JSON bodies): `POST /raft/append`, `POST /raft/vote`
//! and `POST /raft/snapshot` (a whole snapshot in one request), served by axum on the
//! voter's listen address and sent with reqwest under per-RPC timeouts.
//!
//! Every outgoing link, Raft RPC and forwarded control request alike, passes the
//! [`LinkFaults`] hook first: tests drop, delay or partition links between voters (and
//! catalog-node clients) in-process, and a hook bridged to the voters' regions
//! ([`LinkFaults::for_regions`]) also applies the process's region link faults
//! ([`crate::faults`], driven by `/api/v1/dev/faults`).

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::io::Cursor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use axum::{Json, Router};
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed,
    StreamingError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend, Snapshot, SnapshotMeta, Vote};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::types::{ControlRaft, NodeId, TypeConfig};

/// What happens to messages on one link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum LinkMode {
    /// Delivered normally.
    #[default]
    None,
    /// Fails at once as if the peer were unreachable.
    Drop,
    /// Delivered after `ms` milliseconds.
    Delay { ms: u64 },
}

#[derive(Debug, Default)]
struct Faults {
    links: HashMap<(NodeId, NodeId), LinkMode>,
    /// Members can only talk among themselves, the others only among themselves.
    partition: Option<BTreeSet<NodeId>>,
}

/// Fault injection on links `(from, to)` between voters (and catalog-node clients, which
/// take ids of their own). Shared behind an `Arc`; checking a link with no fault set costs
/// one atomic load.
#[derive(Debug, Default)]
pub struct LinkFaults {
    active: AtomicBool,
    faults: RwLock<Faults>,
    /// Region of each voter and of this process: links to another region also pass the
    /// process's [`crate::faults`] registry.
    regions: OnceLock<VoterRegions>,
}

#[derive(Debug)]
struct VoterRegions {
    own: String,
    of_voter: HashMap<NodeId, String>,
}

/// A link refused a message ([`LinkMode::Drop`] or a partition).
#[derive(Debug, Clone, thiserror::Error)]
#[error("link {from} -> {to} is down (fault injection)")]
pub struct LinkDown {
    pub from: NodeId,
    pub to: NodeId,
}

impl LinkFaults {
    /// A hook with no fault set.
    pub fn new() -> Arc<LinkFaults> {
        Arc::new(LinkFaults::default())
    }

    /// A hook of a process in region `own` that also applies the process's region link
    /// faults ([`crate::faults::gate`]) to links towards voters of other regions.
    pub fn for_regions(
        own: &str,
        voters: impl IntoIterator<Item = (NodeId, String)>,
    ) -> Arc<LinkFaults> {
        let hook = LinkFaults::default();
        let _ = hook.regions.set(VoterRegions {
            own: own.to_string(),
            of_voter: voters.into_iter().collect(),
        });
        Arc::new(hook)
    }

    fn update(&self, f: impl FnOnce(&mut Faults)) {
        let mut guard = match self.faults.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut guard);
        let active = guard.partition.is_some() || !guard.links.is_empty();
        self.active.store(active, Ordering::Release);
    }

    /// Sets the mode of the one-way link `from -> to`.
    pub fn set_link(&self, from: NodeId, to: NodeId, mode: LinkMode) {
        self.update(|f| {
            if mode == LinkMode::None {
                f.links.remove(&(from, to));
            } else {
                f.links.insert((from, to), mode);
            }
        });
    }

    /// Sets the mode of both directions between `a` and `b`.
    pub fn set_both(&self, a: NodeId, b: NodeId, mode: LinkMode) {
        self.set_link(a, b, mode);
        self.set_link(b, a, mode);
    }

    /// Isolates `members` from everyone else (both directions); replaces any partition.
    pub fn partition(&self, members: impl IntoIterator<Item = NodeId>) {
        let set: BTreeSet<NodeId> = members.into_iter().collect();
        self.update(|f| f.partition = Some(set));
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.update(|f| *f = Faults::default());
    }

    /// The mode of `from -> to` now.
    pub fn check(&self, from: NodeId, to: NodeId) -> LinkMode {
        if !self.active.load(Ordering::Acquire) {
            return LinkMode::None;
        }
        let guard = match self.faults.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(p) = &guard.partition {
            if p.contains(&from) != p.contains(&to) {
                return LinkMode::Drop;
            }
        }
        guard.links.get(&(from, to)).copied().unwrap_or_default()
    }

    /// Applies the link's fault to one message about to be sent: fails for a dropped link,
    /// waits for a delayed one.
    pub async fn pass(&self, from: NodeId, to: NodeId) -> Result<(), LinkDown> {
        match self.check(from, to) {
            LinkMode::None => {}
            LinkMode::Drop => return Err(LinkDown { from, to }),
            LinkMode::Delay { ms } => tokio::time::sleep(Duration::from_millis(ms)).await,
        }
        if let Some(regions) = self.regions.get() {
            if let Some(peer) = regions.of_voter.get(&to).filter(|r| **r != regions.own) {
                crate::faults::gate(peer)
                    .await
                    .map_err(|_| LinkDown { from, to })?;
            }
        }
        Ok(())
    }
}

/// Body of `POST /raft/snapshot`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotRequest {
    pub vote: Vote<NodeId>,
    pub meta: SnapshotMeta<NodeId, BasicNode>,
    pub data: Vec<u8>,
}

/// Largest Raft RPC body accepted (a whole snapshot travels in one request).
const RAFT_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// The axum routes answering Raft RPC for `raft`.
pub fn raft_router(raft: ControlRaft) -> Router {
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .layer(DefaultBodyLimit::max(RAFT_BODY_LIMIT))
        .with_state(raft)
}

async fn append(
    State(raft): State<ControlRaft>,
    Json(req): Json<AppendEntriesRequest<TypeConfig>>,
) -> Json<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>> {
    Json(raft.append_entries(req).await)
}

async fn vote(
    State(raft): State<ControlRaft>,
    Json(req): Json<VoteRequest<NodeId>>,
) -> Json<Result<VoteResponse<NodeId>, RaftError<NodeId>>> {
    Json(raft.vote(req).await)
}

async fn snapshot(
    State(raft): State<ControlRaft>,
    Json(req): Json<SnapshotRequest>,
) -> Json<Result<SnapshotResponse<NodeId>, Fatal<NodeId>>> {
    let snapshot = Snapshot {
        meta: req.meta,
        snapshot: Box::new(Cursor::new(req.data)),
    };
    Json(raft.install_full_snapshot(req.vote, snapshot).await)
}

/// Creates one [`Connection`] per peer for openraft.
#[derive(Clone)]
pub struct Network {
    id: NodeId,
    http: reqwest::Client,
    faults: Arc<LinkFaults>,
    backoff: Duration,
}

impl Network {
    /// Links of voter `id`; `backoff` is the pause before retrying an unreachable peer.
    pub fn new(
        id: NodeId,
        http: reqwest::Client,
        faults: Arc<LinkFaults>,
        backoff: Duration,
    ) -> Network {
        Network {
            id,
            http,
            faults,
            backoff,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            from: self.id,
            target,
            base: format!("http://{}", node.addr),
            http: self.http.clone(),
            faults: self.faults.clone(),
            backoff: self.backoff,
        }
    }
}

/// The link from this voter to one peer.
pub struct Connection {
    from: NodeId,
    target: NodeId,
    base: String,
    http: reqwest::Client,
    faults: Arc<LinkFaults>,
    backoff: Duration,
}

/// Why an RPC got no answer.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error(transparent)]
    Down(#[from] LinkDown),
    #[error("connecting: {0}")]
    Connect(reqwest::Error),
    #[error("rpc failed: {0}")]
    Other(String),
}

impl SendError {
    fn into_rpc<E: std::error::Error>(self) -> RPCError<NodeId, BasicNode, E> {
        match self {
            SendError::Down(_) | SendError::Connect(_) => {
                RPCError::Unreachable(Unreachable::new(&self))
            }
            SendError::Other(_) => RPCError::Network(NetworkError::new(&self)),
        }
    }
}

impl Connection {
    async fn post<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, SendError> {
        self.faults.pass(self.from, self.target).await?;
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .timeout(timeout)
            .json(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    SendError::Connect(e)
                } else {
                    SendError::Other(e.to_string())
                }
            })?;
        if !res.status().is_success() {
            return Err(SendError::Other(format!(
                "{path} answered {}",
                res.status()
            )));
        }
        res.json::<Resp>()
            .await
            .map_err(|e| SendError::Other(e.to_string()))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let res: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> = self
            .post("/raft/append", &rpc, option.hard_ttl())
            .await
            .map_err(SendError::into_rpc)?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        // Snapshots travel whole through `full_snapshot`; openraft never sends chunks here.
        let e = std::io::Error::other("chunked snapshot transfer is not supported");
        Err(RPCError::Network(NetworkError::new(&e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let res: Result<VoteResponse<NodeId>, RaftError<NodeId>> = self
            .post("/raft/vote", &rpc, option.hard_ttl())
            .await
            .map_err(SendError::into_rpc)?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let req = SnapshotRequest {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot.into_inner(),
        };
        let send = self.post::<_, Result<SnapshotResponse<NodeId>, Fatal<NodeId>>>(
            "/raft/snapshot",
            &req,
            option.hard_ttl(),
        );
        let res = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            res = send => res,
        };
        match res {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(fatal)) => Err(StreamingError::RemoteError(RemoteError::new(
                self.target,
                fatal,
            ))),
            Err(e @ (SendError::Down(_) | SendError::Connect(_))) => {
                Err(StreamingError::Unreachable(Unreachable::new(&e)))
            }
            Err(e) => Err(StreamingError::Network(NetworkError::new(&e))),
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(self.backoff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_modes_and_partitions() {
        let f = LinkFaults::new();
        assert_eq!(f.check(1, 2), LinkMode::None);
        f.set_link(1, 2, LinkMode::Drop);
        assert_eq!(f.check(1, 2), LinkMode::Drop);
        assert_eq!(f.check(2, 1), LinkMode::None, "one-way");
        f.set_both(2, 3, LinkMode::Delay { ms: 5 });
        assert_eq!(f.check(3, 2), LinkMode::Delay { ms: 5 });
        f.heal();
        f.partition([1]);
        assert_eq!(f.check(1, 2), LinkMode::Drop);
        assert_eq!(f.check(3, 1), LinkMode::Drop);
        assert_eq!(f.check(2, 3), LinkMode::None, "the majority side talks");
        f.heal();
        assert_eq!(f.check(1, 2), LinkMode::None);
    }
}
