//! The replication API on the catalog port (`/api/v1/replication/...`), answered in the
//! Iceberg error model:
//!
//! - `GET changes?after=<seq>&limit=<n>&wait_ms=<ms>`: this region's change log after `after`
//!   (`limit` 1..=10000, default 500), as a [`ChangesPage`]. A long poll: it answers as soon
//!   as records exist, else after `wait_ms` (at most 60000, default 0) with none. A
//!   secondary's replicator adds `region=<its region>&applied=<its watermark>`: the primary
//!   learns how far each secondary applied (sync mode, lag metrics). Such a report is taken
//!   only from a region of the configured topology (else 400, nothing recorded), with the
//!   deployment's peer secret in `x-pangolin-peer-secret` (else 401, nothing recorded;
//!   refused altogether when this region has no `replication.peer_secret`), and only up to
//!   what this node shipped that region (see [`super::sync::SyncReplication::report`]). A
//!   read without `region`/`applied` needs no secret for now.
//! - `GET status`: [`super::ReplicationStatus`] of this region, plus the replication mode
//!   of its catalogs and, on the primary, its secondaries (applied watermark, health,
//!   degraded).
//! - `POST pause`, `POST resume`: stop / restart this region's replicator (pause persists
//!   across restarts; resume also retries a halted stream). Both answer the new status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::replicator::{ChangesPage, Replication, ReplicationStatus};
use super::sync::SecondaryStatus;
use crate::api::AppState;
use crate::config::{CatalogReplicationMode, ReplicationMode};
use crate::error::CatalogError;

/// Records answered when the request names no `limit`.
const DEFAULT_LIMIT: u32 = 500;
const MAX_LIMIT: u32 = 10_000;
const MAX_WAIT_MS: u64 = 60_000;
/// How often a long poll looks for new records (the log may be written by any node of the
/// region, so it is read, not notified).
const POLL_EVERY: Duration = Duration::from_millis(25);

/// Header carrying the deployment's peer secret (`replication.peer_secret`) on
/// region-to-region replication calls. A stand-in until nodes have identities.
pub const PEER_SECRET_HEADER: &str = "x-pangolin-peer-secret";

/// Whether `given` equals `expected`, in time independent of where they differ and of
/// their lengths (both are hashed first, then every byte of the digests is compared).
fn secrets_equal(given: &[u8], expected: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(given), Sha256::digest(expected));
    let diff = a.iter().zip(b.iter()).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Checks the peer secret of a request that reports for a region. Fails closed: without a
/// configured secret no report is accepted. The secret is never logged or echoed.
fn authenticate_peer(state: &AppState, headers: &HeaderMap) -> Result<(), CatalogError> {
    let Some(expected) = state.sync.settings().peer_secret() else {
        return Err(CatalogError::NotAuthorized(format!(
            "region {} has no replication.peer_secret configured: replication reports are refused",
            state.region
        )));
    };
    let given = headers.get(PEER_SECRET_HEADER).map(|v| v.as_bytes());
    match given {
        Some(given) if secrets_equal(given, expected.expose().as_bytes()) => Ok(()),
        Some(_) => Err(CatalogError::NotAuthorized(format!(
            "replication report refused: wrong {PEER_SECRET_HEADER}"
        ))),
        None => Err(CatalogError::NotAuthorized(format!(
            "replication reports need the deployment's peer secret in {PEER_SECRET_HEADER} \
             (replication.peer_secret)"
        ))),
    }
}

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/replication/changes", get(changes))
        .route("/api/v1/replication/status", get(status))
        .route("/api/v1/replication/pause", post(pause))
        .route("/api/v1/replication/resume", post(resume))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangesQuery {
    #[serde(default)]
    after: i64,
    limit: Option<u32>,
    wait_ms: Option<u64>,
    /// The pulling secondary's region and watermark.
    region: Option<String>,
    applied: Option<i64>,
}

async fn changes(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<ChangesQuery>, QueryRejection>,
) -> Result<Json<ChangesPage>, CatalogError> {
    let Query(q) = query.map_err(|e| CatalogError::bad_request(format!("Invalid query: {e}")))?;
    if q.after < 0 {
        return Err(CatalogError::bad_request("after must not be negative"));
    }
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(CatalogError::bad_request(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let store = state.catalog.store();
    // A pull naming its region (with or without its watermark) is a replicator's: from a
    // configured region (400 otherwise), carrying the peer secret (401 otherwise). Both are
    // checked before anything is recorded.
    let reporter = match (&q.region, q.applied) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(CatalogError::bad_request(
                "applied needs the reporting region (region=<name>)",
            ))
        }
        (Some(region), _) => {
            state
                .sync
                .check_peer(region)
                .map_err(|e| CatalogError::bad_request(e.to_string()))?;
            authenticate_peer(&state, &headers)?;
            Some(region.as_str())
        }
    };
    let report_epoch = match reporter {
        Some(_) => Some(store.current_epoch().await?),
        None => None,
    };
    let _poll = match (reporter, report_epoch) {
        (Some(region), Some(epoch)) => {
            let head = store.replication_watermark().await?.seq;
            Some(
                state
                    .sync
                    .report(region, q.after, q.applied, head, epoch)
                    .map_err(|e| CatalogError::bad_request(e.to_string()))?,
            )
        }
        _ => None,
    };
    let deadline = Instant::now() + Duration::from_millis(q.wait_ms.unwrap_or(0).min(MAX_WAIT_MS));
    let shutdown = state
        .replication
        .as_ref()
        .map(|r| r.shutdown_token().clone())
        .unwrap_or_default();
    let records = loop {
        let records = store.changes_after(q.after, limit).await?;
        let now = Instant::now();
        if !records.is_empty() || now >= deadline || shutdown.is_cancelled() {
            break records;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL_EVERY.min(deadline - now)) => {}
            _ = shutdown.cancelled() => {}
        }
    };
    let head = store.replication_watermark().await?.seq;
    let head = records.last().map_or(head, |r| r.seq.max(head));
    if let (Some(region), Some(epoch), Some(last)) = (reporter, report_epoch, records.last()) {
        // Only records really put in the page count as shipped; an empty page ships
        // nothing (the region's `after` is its own word).
        state.sync.shipped(region, epoch, last.seq);
    }
    Ok(Json(ChangesPage {
        region: state.region.clone(),
        head,
        epoch: store.current_epoch().await?,
        records,
    }))
}

fn replication(state: &AppState) -> Result<&Arc<Replication>, CatalogError> {
    state.replication.as_ref().ok_or_else(|| {
        CatalogError::Unsupported(format!("region {} runs no replication", state.region))
    })
}

/// The status answered by the API: the replicator's, the catalogs' modes and (on the
/// primary) the secondaries.
#[derive(Debug, Serialize)]
pub struct StatusResponse {
    #[serde(flatten)]
    pub status: ReplicationStatus,
    /// The default replication mode (`async` or `sync`).
    pub mode: ReplicationMode,
    /// Per catalog (this region's catalogs and those configured): mode, policy, timeout.
    pub catalogs: BTreeMap<String, CatalogReplicationMode>,
    /// Sync commits are being acknowledged without some secondary (policy `degrade`).
    pub degraded: bool,
    /// Since when, and why (the earliest degraded secondary).
    pub degraded_since_ms: Option<i64>,
    pub degraded_reason: Option<String>,
    /// The regions pulling this region's log (as this node saw them).
    pub secondaries: Vec<SecondaryStatus>,
}

async fn full_status(state: &AppState) -> Result<StatusResponse, CatalogError> {
    let status = replication(state)?.status().await?;
    let store = state.catalog.store();
    let mut catalogs = BTreeMap::new();
    for name in state.sync.settings().catalogs.keys() {
        catalogs.insert(name.clone(), state.sync.mode_of(name));
    }
    let default = state.catalog.default_catalog();
    if !default.is_empty() {
        if let Ok(resolved) = state.catalog.resolve(default).await {
            for c in store.list_catalogs(&resolved.catalog.tenant_id).await? {
                catalogs.insert(c.name.clone(), state.sync.mode_of(&c.name));
            }
        }
    }
    let secondaries = state.sync.secondaries(status.watermark);
    let first = secondaries
        .iter()
        .filter_map(|s| s.degradation.as_ref())
        .min_by_key(|d| d.since_ms);
    Ok(StatusResponse {
        mode: state.sync.default_mode(),
        catalogs,
        degraded: first.is_some(),
        degraded_since_ms: first.map(|d| d.since_ms),
        degraded_reason: first.map(|d| d.reason.clone()),
        secondaries,
        status,
    })
}

async fn status(State(state): State<Arc<AppState>>) -> Result<Json<StatusResponse>, CatalogError> {
    Ok(Json(full_status(&state).await?))
}

async fn pause(State(state): State<Arc<AppState>>) -> Result<Json<StatusResponse>, CatalogError> {
    replication(&state)?.pause().await?;
    Ok(Json(full_status(&state).await?))
}

async fn resume(State(state): State<Arc<AppState>>) -> Result<Json<StatusResponse>, CatalogError> {
    replication(&state)?.resume().await?;
    Ok(Json(full_status(&state).await?))
}
