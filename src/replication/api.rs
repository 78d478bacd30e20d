//! The replication API on the catalog port (`/api/v1/replication/...`), answered in the
//! Iceberg error model:
//!
//! - `GET changes?after=<seq>&limit=<n>&wait_ms=<ms>`: this region's change log after `after`
//!   (`limit` 1..=10000, default 500), as a [`ChangesPage`]. A long poll: it answers as soon
//!   as records exist, else after `wait_ms` (at most 60000, default 0) with none.
//! - `GET status`: [`super::ReplicationStatus`] of this region.
//! - `POST pause`, `POST resume`: stop / restart this region's replicator (pause persists
//!   across restarts; resume also retries a halted stream). Both answer the new status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::replicator::{ChangesPage, Replication, ReplicationStatus};
use crate::api::AppState;
use crate::error::CatalogError;

/// Records answered when the request names no `limit`.
const DEFAULT_LIMIT: u32 = 500;
const MAX_LIMIT: u32 = 10_000;
const MAX_WAIT_MS: u64 = 60_000;
/// How often a long poll looks for new records (the log may be written by any node of the
/// region, so it is read, not notified).
const POLL_EVERY: Duration = Duration::from_millis(25);

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
}

async fn changes(
    State(state): State<Arc<AppState>>,
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
    let deadline = Instant::now() + Duration::from_millis(q.wait_ms.unwrap_or(0).min(MAX_WAIT_MS));
    let store = state.catalog.store();
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

async fn status(
    State(state): State<Arc<AppState>>,
) -> Result<Json<ReplicationStatus>, CatalogError> {
    Ok(Json(replication(&state)?.status().await?))
}

async fn pause(
    State(state): State<Arc<AppState>>,
) -> Result<Json<ReplicationStatus>, CatalogError> {
    let r = replication(&state)?;
    r.pause().await?;
    Ok(Json(r.status().await?))
}

async fn resume(
    State(state): State<Arc<AppState>>,
) -> Result<Json<ReplicationStatus>, CatalogError> {
    let r = replication(&state)?;
    r.resume().await?;
    Ok(Json(r.status().await?))
}
