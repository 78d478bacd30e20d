//! Control-plane operations on the catalog port (`/api/v1/control/...`), for operators and
//! `pangolin admin control`: status, planned switchover, unplanned failover. The node relays
//! them to the control-plane voters; a standalone region answers 406.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{AppState, IcebergJson};
use crate::control::{ClientError, ControlClient};
use crate::error::CatalogError;
use crate::routing::WriteRoute;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/control/status", get(status))
        .route("/api/v1/control/switchover", post(switchover))
        .route("/api/v1/control/failover", post(failover))
}

fn client(state: &AppState) -> Result<&ControlClient, CatalogError> {
    state.control.as_ref().ok_or_else(|| {
        CatalogError::Unsupported(format!(
            "region {} runs without a control plane (standalone)",
            state.region
        ))
    })
}

fn control_err(e: ClientError) -> CatalogError {
    match e.status() {
        Some(400) | Some(404) | Some(409) | Some(422) => CatalogError::bad_request(e.to_string()),
        _ => CatalogError::Unavailable(format!("control plane: {e}")),
    }
}

/// The control-plane state (linearizable read) plus this node's own view.
async fn status(State(state): State<Arc<AppState>>) -> Result<Json<Value>, CatalogError> {
    let client = client(&state)?;
    let control = client.state().await.map_err(control_err)?;
    let cluster = client.cluster().await.ok();
    let route = match state.authority.route() {
        WriteRoute::Local => json!({"writes": "local"}),
        WriteRoute::Forward {
            region,
            catalog_url,
        } => {
            json!({"writes": "forwarded", "to": region, "catalog_url": catalog_url})
        }
        WriteRoute::Unavailable(why) => json!({"writes": "unavailable", "why": why}),
    };
    Ok(Json(json!({
        "control": control,
        "cluster": cluster,
        "node": {
            "region": state.region,
            "epoch": state.authority.epoch(),
            "route": route,
        }
    })))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct SwitchoverBody {
    to: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    actor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FailoverBody {
    to: String,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    actor: Option<String>,
}

async fn switchover(
    State(state): State<Arc<AppState>>,
    IcebergJson(body): IcebergJson<SwitchoverBody>,
) -> Result<Json<Value>, CatalogError> {
    let actor = body.actor.unwrap_or_else(|| "operator".into());
    let reason = body.reason.unwrap_or_else(|| "planned switchover".into());
    let after = client(&state)?
        .switchover(&body.to, &actor, &reason)
        .await
        .map_err(control_err)?;
    Ok(Json(json!({ "control": after })))
}

async fn failover(
    State(state): State<Arc<AppState>>,
    IcebergJson(body): IcebergJson<FailoverBody>,
) -> Result<Json<Value>, CatalogError> {
    let actor = body.actor.unwrap_or_else(|| "operator".into());
    let reason = body.reason.unwrap_or_else(|| "operator failover".into());
    let after = client(&state)?
        .failover(&body.to, body.force, &actor, &reason)
        .await
        .map_err(control_err)?;
    Ok(Json(json!({ "control": after })))
}
