//! [`ControlClient`]: how catalog nodes and operators talk to the control plane. It tries the
//! voters in turn (starting with the last one that answered) under short timeouts, so the
//! caller does not care which voter leads: followers forward to the leader.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::api::{ErrorBody, FailoverRequest, LeaseAnswer, LeaseRequest, SwitchoverRequest};
use super::network::LinkFaults;
use super::types::{ControlState, NodeId};
use crate::config::ControlSection;

/// What a control-plane call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// No voter gave an answer (all unreachable, timed out or without a leader).
    #[error("control plane unavailable: {0}")]
    Unavailable(String),
    /// A voter refused the request (4xx/5xx other than 503).
    #[error("control plane refused ({status} {kind}): {message}")]
    Api {
        status: u16,
        kind: String,
        message: String,
    },
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Setup(String),
}

impl ClientError {
    /// HTTP status of an [`ClientError::Api`] refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Client of the control API of a set of voters.
#[derive(Clone, Debug)]
pub struct ControlClient {
    voters: Vec<String>,
    voter_ids: Vec<Option<NodeId>>,
    http: reqwest::Client,
    preferred: Arc<AtomicUsize>,
    timeout: Duration,
    admin_timeout: Duration,
    faults: Option<(Arc<LinkFaults>, NodeId)>,
}

enum Verb<'a, B> {
    Get,
    Post(&'a B),
}

impl ControlClient {
    /// A client of the voters at `voters` (`host:port`), with a 1 s timeout per voter for
    /// state and lease calls and 60 s for switchover and failover.
    pub fn new(voters: Vec<String>) -> Result<ControlClient, ClientError> {
        let n = voters.len();
        Self::build(voters, vec![None; n])
    }

    /// A client of the voters of `section` (keeps their ids for fault injection).
    pub fn from_section(section: &ControlSection) -> Result<ControlClient, ClientError> {
        Self::build(
            section.voters.iter().map(|v| v.address.clone()).collect(),
            section.voters.iter().map(|v| Some(v.id)).collect(),
        )
    }

    fn build(
        voters: Vec<String>,
        voter_ids: Vec<Option<NodeId>>,
    ) -> Result<ControlClient, ClientError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_millis(500))
            .build()
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(ControlClient {
            voters,
            voter_ids,
            http,
            preferred: Arc::new(AtomicUsize::new(0)),
            timeout: Duration::from_secs(1),
            admin_timeout: Duration::from_secs(60),
            faults: None,
        })
    }

    /// Timeout of one state or lease request to one voter.
    pub fn with_timeout(mut self, timeout: Duration) -> ControlClient {
        self.timeout = timeout;
        self
    }

    /// Timeout of one switchover or failover request to one voter (they wait for the old
    /// lease to expire).
    pub fn with_admin_timeout(mut self, timeout: Duration) -> ControlClient {
        self.admin_timeout = timeout;
        self
    }

    /// Passes every request through `faults` as link `self_id -> voter id` (tests, dev).
    pub fn with_faults(mut self, faults: Arc<LinkFaults>, self_id: NodeId) -> ControlClient {
        self.faults = Some((faults, self_id));
        self
    }

    /// The voters' addresses.
    pub fn voters(&self) -> &[String] {
        &self.voters
    }

    /// The control-plane state, read linearizably on the leader.
    pub async fn state(&self) -> Result<ControlState, ClientError> {
        self.call::<(), _>("/control/v1/state", Verb::Get, self.timeout)
            .await
    }

    /// One reachable voter's view of the cluster (id, leader, term, voters).
    pub async fn cluster(&self) -> Result<serde_json::Value, ClientError> {
        self.call::<(), _>("/control/v1/cluster", Verb::Get, self.timeout)
            .await
    }

    /// Asks for (or renews) the write lease of `region`. `epoch` is the epoch the node
    /// believes current; a refusal answers the current one.
    pub async fn renew_lease(
        &self,
        region: &str,
        epoch: u64,
        holder: &str,
    ) -> Result<LeaseAnswer, ClientError> {
        let body = LeaseRequest {
            region: region.to_string(),
            epoch,
            holder: holder.to_string(),
        };
        self.call("/control/v1/lease", Verb::Post(&body), self.timeout)
            .await
    }

    /// Planned switchover of the primary to `to`; answers the state after the switch.
    pub async fn switchover(
        &self,
        to: &str,
        actor: &str,
        reason: &str,
    ) -> Result<ControlState, ClientError> {
        let body = SwitchoverRequest {
            to: to.to_string(),
            actor: actor.to_string(),
            reason: reason.to_string(),
        };
        self.call(
            "/control/v1/switchover",
            Verb::Post(&body),
            self.admin_timeout,
        )
        .await
    }

    /// Unplanned failover to `to`; answers the state after it.
    pub async fn failover(
        &self,
        to: &str,
        force: bool,
        actor: &str,
        reason: &str,
    ) -> Result<ControlState, ClientError> {
        let body = FailoverRequest {
            to: to.to_string(),
            force,
            actor: actor.to_string(),
            reason: reason.to_string(),
        };
        self.call(
            "/control/v1/failover",
            Verb::Post(&body),
            self.admin_timeout,
        )
        .await
    }

    /// One request to voter `idx`: its status and body.
    async fn attempt<B: Serialize>(
        &self,
        idx: usize,
        path: &str,
        verb: &Verb<'_, B>,
    ) -> Result<(u16, bytes::Bytes), String> {
        if let (Some((faults, me)), Some(Some(id))) = (&self.faults, self.voter_ids.get(idx)) {
            faults.pass(*me, *id).await.map_err(|e| e.to_string())?;
        }
        let url = format!("http://{}{path}", self.voters[idx]);
        let req = match verb {
            Verb::Get => self.http.get(url),
            Verb::Post(body) => self.http.post(url).json(body),
        };
        let res = req.send().await.map_err(|e| e.to_string())?;
        let status = res.status().as_u16();
        let bytes = res.bytes().await.map_err(|e| e.to_string())?;
        Ok((status, bytes))
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        verb: Verb<'_, B>,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let n = self.voters.len();
        if n == 0 {
            return Err(ClientError::Unavailable("no voters configured".into()));
        }
        let first = self.preferred.load(Ordering::Relaxed) % n;
        let mut failures = Vec::new();
        for i in 0..n {
            let idx = (first + i) % n;
            let addr = &self.voters[idx];
            // The whole attempt, an injected delay included, is bounded by `timeout`.
            let attempt = tokio::time::timeout(timeout, self.attempt(idx, path, &verb));
            let (status, bytes) = match attempt.await {
                Ok(Ok(answer)) => answer,
                Ok(Err(e)) => {
                    failures.push(format!("{addr}: {e}"));
                    continue;
                }
                Err(_) => {
                    failures.push(format!("{addr}: no answer within {timeout:?}"));
                    continue;
                }
            };
            if (200..300).contains(&status) {
                self.preferred.store(idx, Ordering::Relaxed);
                return serde_json::from_slice(&bytes).map_err(|e| ClientError::Api {
                    status,
                    kind: "DecodeError".into(),
                    message: e.to_string(),
                });
            }
            let (kind, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(b) => (b.error.kind, b.error.message),
                Err(_) => (
                    "Unknown".to_string(),
                    String::from_utf8_lossy(&bytes).chars().take(500).collect(),
                ),
            };
            if status == 503 {
                failures.push(format!("{addr}: {message}"));
                continue;
            }
            return Err(ClientError::Api {
                status,
                kind,
                message,
            });
        }
        Err(ClientError::Unavailable(failures.join("; ")))
    }
}
