//! The control HTTP API served by every voter next to Raft RPC (JSON bodies):
//!
//! - `GET  /control/v1/state` → [`ControlState`], read linearizably on the leader.
//! - `POST /control/v1/lease` [`LeaseRequest`] → [`LeaseAnswer`] (a Raft write).
//! - `POST /control/v1/switchover` [`SwitchoverRequest`] → [`ControlState`] after the switch.
//! - `POST /control/v1/failover` [`FailoverRequest`] → [`ControlState`] after the failover.
//!
//! A follower forwards each request to the leader (marked with [`FORWARDED_HEADER`] so it is
//! forwarded at most once). Errors are `{"error": {"message", "type", "code"}}`; 503 answers
//! carry `Retry-After`.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::types::{ControlState, NodeId};
use super::Voter;

/// Marks a request a voter forwarded to the leader.
pub const FORWARDED_HEADER: &str = "x-pangolin-forwarded-by";

/// Body of `POST /control/v1/lease`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRequest {
    pub region: String,
    /// The epoch the node believes current (0 when it does not know yet).
    pub epoch: u64,
    /// Node asking (for the record).
    pub holder: String,
}

/// Answer of `POST /control/v1/lease`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseAnswer {
    pub granted: bool,
    /// Current epoch and primary (also on a refusal: a node learns the epoch this way).
    pub epoch: u64,
    pub primary: Option<String>,
    /// Lease length the control plane granted (or would grant).
    pub lease_ms: u64,
    /// Control-plane expiry of the lease (leader clock, ms since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Body of `POST /control/v1/switchover`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverRequest {
    pub to: String,
    pub actor: String,
    #[serde(default)]
    pub reason: String,
}

/// Body of `POST /control/v1/failover`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverRequest {
    pub to: String,
    /// Bypass the replication lag bound (recorded; the bound itself comes with replication).
    #[serde(default)]
    pub force: bool,
    pub actor: String,
    #[serde(default)]
    pub reason: String,
}

/// The error body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorModel,
}

/// `{"message", "type", "code"}` of an error body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorModel {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub code: u16,
}

/// Everything a control-plane request can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ControlError {
    /// The request is invalid (e.g. an unknown region).
    #[error("{0}")]
    BadRequest(String),
    /// The request conflicts with the state (e.g. another switchover is in progress).
    #[error("{0}")]
    Conflict(String),
    /// No leader is known right now.
    #[error("no control-plane leader: {0}")]
    NoLeader(String),
    /// This voter is not the leader (the request is forwarded when the leader is known).
    #[error("not the control-plane leader (leader: {leader_id:?} at {leader_addr:?})")]
    NotLeader {
        leader_id: Option<NodeId>,
        leader_addr: Option<String>,
    },
    /// The leader could not reach a quorum in time, or a peer was unreachable.
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// An error answered by another voter, passed through.
    #[error("{message}")]
    Remote {
        status: u16,
        kind: String,
        message: String,
    },
}

impl ControlError {
    /// HTTP status and error `type`.
    pub fn status_and_type(&self) -> (StatusCode, String) {
        let unavailable = || {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableException".to_string(),
            )
        };
        match self {
            ControlError::BadRequest(_) => {
                (StatusCode::BAD_REQUEST, "BadRequestException".to_string())
            }
            ControlError::Conflict(_) => (StatusCode::CONFLICT, "ConflictException".to_string()),
            ControlError::NoLeader(_)
            | ControlError::NotLeader { .. }
            | ControlError::Unavailable(_) => unavailable(),
            ControlError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServiceFailureException".to_string(),
            ),
            ControlError::Remote { status, kind, .. } => (
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
                kind.clone(),
            ),
        }
    }

    /// Rebuilds an error from another voter's answer.
    pub fn from_remote(status: u16, body: &[u8]) -> ControlError {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(b) => ControlError::Remote {
                status,
                kind: b.error.kind,
                message: b.error.message,
            },
            Err(_) => ControlError::Remote {
                status,
                kind: "ServiceFailureException".into(),
                message: String::from_utf8_lossy(body).chars().take(500).collect(),
            },
        }
    }
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        let (status, kind) = self.status_and_type();
        let body = ErrorBody {
            error: ErrorModel {
                message: self.to_string(),
                kind,
                code: status.as_u16(),
            },
        };
        let mut res = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}

fn bad_body(e: JsonRejection) -> ControlError {
    ControlError::BadRequest(e.body_text())
}

fn forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key(FORWARDED_HEADER)
}

/// The `/control/v1` routes of a voter.
pub(super) fn control_router(voter: Arc<Voter>) -> Router {
    Router::new()
        .route("/control/v1/state", get(state))
        .route("/control/v1/cluster", get(cluster))
        .route("/control/v1/lease", post(lease))
        .route("/control/v1/switchover", post(switchover))
        .route("/control/v1/failover", post(failover))
        .with_state(voter)
}

async fn state(
    State(voter): State<Arc<Voter>>,
    headers: HeaderMap,
) -> Result<Json<ControlState>, ControlError> {
    voter.state(forwarded(&headers)).await.map(Json)
}

/// This voter's local view of the Raft cluster: its id, the leader it follows, the term and
/// the voter set. Not linearizable (each voter answers for itself); for drills and status.
async fn cluster(State(voter): State<Arc<Voter>>) -> Json<serde_json::Value> {
    let metrics = voter.raft.metrics().borrow().clone();
    let voters: Vec<serde_json::Value> = voter
        .section
        .voters
        .iter()
        .map(|v| serde_json::json!({"id": v.id, "region": v.region, "address": v.address}))
        .collect();
    Json(serde_json::json!({
        "id": voter.id,
        "leader": metrics.current_leader,
        "term": metrics.current_term,
        "state": format!("{:?}", metrics.state),
        "last_applied": metrics.last_applied.map(|l| l.index),
        "voters": voters,
    }))
}

async fn lease(
    State(voter): State<Arc<Voter>>,
    headers: HeaderMap,
    body: Result<Json<LeaseRequest>, JsonRejection>,
) -> Result<Json<LeaseAnswer>, ControlError> {
    let Json(req) = body.map_err(bad_body)?;
    voter.lease(req, forwarded(&headers)).await.map(Json)
}

async fn switchover(
    State(voter): State<Arc<Voter>>,
    headers: HeaderMap,
    body: Result<Json<SwitchoverRequest>, JsonRejection>,
) -> Result<Json<ControlState>, ControlError> {
    let Json(req) = body.map_err(bad_body)?;
    voter.switchover(req, forwarded(&headers)).await.map(Json)
}

async fn failover(
    State(voter): State<Arc<Voter>>,
    headers: HeaderMap,
    body: Result<Json<FailoverRequest>, JsonRejection>,
) -> Result<Json<ControlState>, ControlError> {
    let Json(req) = body.map_err(bad_body)?;
    voter.failover(req, forwarded(&headers)).await.map(Json)
}
