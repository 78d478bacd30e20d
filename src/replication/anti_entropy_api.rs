//! Anti-entropy API on the catalog port (`/api/v1/replication/...`), in the Iceberg error
//! model:
//!
//! - `POST verify` (body `{"catalog": "demo"}`, optional: all catalogs): [`VerifyReport`]
//!   comparing this region with the primary.
//! - `POST resync` (body `{"catalog": "demo"}`): rebuilds the catalog here from the
//!   primary; [`ResyncReport`].
//! - `GET quarantine`: `{"entries": [QuarantineEntry...]}`, the commits this region held
//!   that the primary never received (failback).
//! - `GET snapshot?catalog=<name>` or `?catalog_ids=<id>,<id>`: this region's rows of those
//!   catalogs (all without either) and its change-log head, read consistently; what verify,
//!   resync and failback read from the primary.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::replicator::Replication;
use super::resync::{resync, ResyncReport};
use super::verify::{verify, VerifyReport};
use crate::api::AppState;
use crate::error::CatalogError;
use crate::store::{CatalogSelector, StateSnapshot};

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/replication/verify", post(verify_handler))
        .route("/api/v1/replication/resync", post(resync_handler))
        .route("/api/v1/replication/quarantine", get(quarantine))
        .route("/api/v1/replication/snapshot", get(snapshot))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogBody {
    catalog: Option<String>,
}

fn parse_body(body: &Bytes) -> Result<CatalogBody, CatalogError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(CatalogBody::default());
    }
    let parsed: CatalogBody = serde_json::from_slice(body)
        .map_err(|e| CatalogError::bad_request(format!("Malformed request body: {e}")))?;
    if parsed.catalog.as_deref().is_some_and(str::is_empty) {
        return Err(CatalogError::bad_request("catalog must not be empty"));
    }
    Ok(parsed)
}

fn replication(state: &AppState) -> Result<&Arc<Replication>, CatalogError> {
    state.replication.as_ref().ok_or_else(|| {
        CatalogError::Unsupported(format!("region {} runs no replication", state.region))
    })
}

async fn verify_handler(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<VerifyReport>, CatalogError> {
    let body = parse_body(&body)?;
    Ok(Json(
        verify(replication(&state)?, body.catalog.as_deref()).await?,
    ))
}

async fn resync_handler(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<ResyncReport>, CatalogError> {
    let body = parse_body(&body)?;
    let Some(catalog) = body.catalog else {
        return Err(CatalogError::bad_request(
            "resync needs the catalog to rebuild: {\"catalog\": \"<name>\"}",
        ));
    };
    Ok(Json(resync(replication(&state)?, &catalog).await?))
}

async fn quarantine(State(state): State<Arc<AppState>>) -> Result<Json<Value>, CatalogError> {
    let entries = state.catalog.store().list_quarantine().await?;
    Ok(Json(json!({ "region": state.region, "entries": entries })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotQuery {
    catalog: Option<String>,
    catalog_ids: Option<String>,
}

async fn snapshot(
    State(state): State<Arc<AppState>>,
    query: Result<Query<SnapshotQuery>, QueryRejection>,
) -> Result<Json<StateSnapshot>, CatalogError> {
    let Query(q) = query.map_err(|e| CatalogError::bad_request(format!("Invalid query: {e}")))?;
    let selector = match (q.catalog, q.catalog_ids) {
        (Some(_), Some(_)) => {
            return Err(CatalogError::bad_request(
                "give either catalog or catalog_ids",
            ))
        }
        (Some(name), None) => CatalogSelector::Name(name),
        (None, Some(ids)) => CatalogSelector::Ids(
            ids.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        ),
        (None, None) => CatalogSelector::All,
    };
    Ok(Json(state.catalog.store().state_snapshot(&selector).await?))
}
