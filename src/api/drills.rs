//! The drill history on the catalog port (`/api/v1/drills`), kept per region:
//!
//! - `POST /api/v1/drills`: stores a report of `pangolin drill run` (its `id`, `scenario`,
//!   `started_ms`, `finished_ms`, `passed` are required; the whole body is kept). Posting the
//!   same id again replaces it. Answers `{"id": ...}`.
//! - `GET /api/v1/drills[?limit=n]`: `{"drills": [{id, scenario, started_ms, finished_ms,
//!   passed, received_ms}]}`, newest first (`limit` 1..=1000, default 100).
//! - `GET /api/v1/drills/{id}`: the stored report, 404 `NotFoundException` when unknown.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{AppState, IcebergJson};
use crate::error::CatalogError;
use crate::store::DrillRecord;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/drills", get(list).post(record))
        .route("/api/v1/drills/{id}", get(show))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<u32>,
}

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a Value, CatalogError> {
    v.get(name)
        .ok_or_else(|| CatalogError::bad_request(format!("drill report without `{name}`")))
}

fn ms(v: &Value, name: &str) -> Result<i64, CatalogError> {
    field(v, name)?.as_i64().filter(|n| *n >= 0).ok_or_else(|| {
        CatalogError::bad_request(format!("`{name}` must be a non-negative integer"))
    })
}

async fn record(
    State(state): State<Arc<AppState>>,
    IcebergJson(report): IcebergJson<Value>,
) -> Result<Json<Value>, CatalogError> {
    let text = |name: &str| -> Result<String, CatalogError> {
        field(&report, name)?
            .as_str()
            .filter(|s| !s.is_empty())
            .map(String::from)
            .ok_or_else(|| {
                CatalogError::bad_request(format!("`{name}` must be a non-empty string"))
            })
    };
    let drill = DrillRecord {
        id: text("id")?,
        scenario: text("scenario")?,
        started_ms: ms(&report, "started_ms")?,
        finished_ms: ms(&report, "finished_ms")?,
        passed: field(&report, "passed")?
            .as_bool()
            .ok_or_else(|| CatalogError::bad_request("`passed` must be a boolean"))?,
        received_ms: crate::clock::now_ms(),
        report,
    };
    state.catalog.store().record_drill(&drill).await?;
    Ok(Json(json!({"id": drill.id})))
}

async fn list(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, CatalogError> {
    let Query(q) = query.map_err(|e| CatalogError::bad_request(format!("Invalid query: {e}")))?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(CatalogError::bad_request(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let drills = state.catalog.store().list_drills(limit).await?;
    let drills: Vec<Value> = drills
        .into_iter()
        .map(|d| {
            json!({"id": d.id, "scenario": d.scenario, "started_ms": d.started_ms,
                   "finished_ms": d.finished_ms, "passed": d.passed, "received_ms": d.received_ms})
        })
        .collect();
    Ok(Json(json!({ "drills": drills })))
}

async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, CatalogError> {
    Ok(match state.catalog.store().get_drill(&id).await? {
        Some(d) => Json(d.report).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {
                "message": format!("No drill with id {id}"),
                "type": "NotFoundException",
                "code": 404,
            }})),
        )
            .into_response(),
    })
}
