//! Management API (`/api/v1/...`): operator views of a region's own bookkeeping, answered
//! in the Iceberg error model like the REST API.
//!
//! - `GET /api/v1/catalogs/{catalog}/metrics-reports[?namespace=a%1Fb&table=t&limit=n]`: the
//!   metrics reports clients sent to this region for the catalog's tables, newest first
//!   (`limit` 1..=1000, default 100). Unknown catalog: 404 `NotFoundException`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::AppState;
use crate::catalog::{parse_namespace, validate_name};
use crate::error::CatalogError;
use crate::store::{MetricsReport, MetricsReportQuery};

/// Reports answered when the request names no `limit`.
const DEFAULT_LIMIT: u32 = 100;
/// Largest accepted `limit`.
const MAX_LIMIT: u32 = 1000;

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route(
        "/api/v1/catalogs/{catalog}/metrics-reports",
        get(list_metrics_reports),
    )
}

#[derive(Serialize)]
struct ReportsResponse {
    reports: Vec<ReportEntry>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct ReportEntry {
    namespace: Vec<String>,
    table: String,
    report_type: String,
    received_ms: i64,
    report: serde_json::Value,
}

impl From<MetricsReport> for ReportEntry {
    fn from(r: MetricsReport) -> Self {
        ReportEntry {
            namespace: r.namespace,
            table: r.table,
            report_type: r.report_type,
            received_ms: r.received_ms,
            report: r.report,
        }
    }
}

fn parse_limit(q: &HashMap<String, String>) -> Result<u32, CatalogError> {
    match q.get("limit").filter(|l| !l.is_empty()) {
        None => Ok(DEFAULT_LIMIT),
        Some(l) => match l.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(CatalogError::bad_request(format!(
                "Invalid limit {l:?}: must be an integer from 1 to {MAX_LIMIT}"
            ))),
        },
    }
}

async fn list_metrics_reports(
    State(state): State<Arc<AppState>>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<ReportsResponse>, CatalogError> {
    let Path(catalog) = p.map_err(|e| CatalogError::bad_request(format!("Invalid path: {e}")))?;
    let Query(q) = q.map_err(|e| CatalogError::bad_request(format!("Invalid query: {e}")))?;
    let namespace = match q.get("namespace").filter(|n| !n.is_empty()) {
        Some(n) => Some(parse_namespace(n)?),
        None => None,
    };
    let table = match q.get("table").filter(|t| !t.is_empty()) {
        Some(t) => {
            validate_name("table", t)?;
            Some(t.clone())
        }
        None => None,
    };
    let query = MetricsReportQuery {
        namespace,
        table,
        limit: parse_limit(&q)?,
    };
    let cat = state.catalog.resolve(&catalog).await?;
    let reports = state
        .catalog
        .store()
        .list_metrics_reports(&cat.catalog.id, &query)
        .await?;
    Ok(Json(ReportsResponse {
        reports: reports.into_iter().map(ReportEntry::from).collect(),
    }))
}
