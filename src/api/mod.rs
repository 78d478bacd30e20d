//! HTTP routers. Handlers stay thin: parse, call the domain layer, map the typed error to
//! the Iceberg error model (in [`crate::error`], one place).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::catalog::CatalogService;
use crate::error::CatalogError;
use crate::routing::{self, WriteAuthority};

pub mod control;
pub mod drills;
pub mod iceberg;
pub mod idempotency;
pub mod management;
pub mod request_id;
pub mod views;

/// Shared state of one region's HTTP server.
pub struct AppState {
    pub catalog: CatalogService,
    pub region: String,
    /// S3 settings vended in `/v1/config` and every table `config`.
    pub storage_properties: HashMap<String, String>,
    /// `storage_properties` as JSON, spliced into loadTable responses.
    pub storage_properties_json: Bytes,
    /// Where writes go (this region, or forwarded to the primary).
    pub authority: Arc<dyn WriteAuthority>,
    /// Client for forwarding writes to the primary region.
    pub http: reqwest::Client,
    pub max_body_bytes: usize,
    /// Client of the control plane (None: standalone region).
    pub control: Option<crate::control::ControlClient>,
    /// The storage `config` each other region vends, for answers to forwarded requests.
    pub region_storage_json: HashMap<String, Bytes>,
    /// `Idempotency-Key` lifetime and purge schedule (`catalog.idempotency_key_lifetime_secs`).
    pub idempotency: idempotency::Idempotency,
    /// Metrics reports kept per catalog; 0 stores none (`catalog.metrics_reports_retention`).
    pub metrics_reports_retention: u64,
    /// The region's replication (status, pause, resume); None answers 406.
    pub replication: Option<Arc<crate::replication::Replication>>,
    /// The secondaries as seen from here and the per-catalog replication mode (sync waits).
    pub sync: Arc<crate::replication::SyncReplication>,
    /// Counters exposed by `GET /metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl AppState {
    pub fn new(
        catalog: CatalogService,
        region: String,
        storage_properties: HashMap<String, String>,
        max_body_bytes: usize,
    ) -> AppState {
        let json = serde_json::to_vec(&storage_properties).unwrap_or_else(|_| b"{}".to_vec());
        let region_name = region.clone();
        AppState {
            authority: catalog.authority().clone(),
            catalog,
            region,
            storage_properties,
            storage_properties_json: Bytes::from(json),
            http: reqwest::Client::new(),
            max_body_bytes,
            control: None,
            region_storage_json: HashMap::new(),
            idempotency: idempotency::Idempotency::default(),
            metrics_reports_retention: 10_000,
            replication: None,
            sync: Arc::new(crate::replication::SyncReplication::standalone(region_name)),
            metrics: Arc::default(),
        }
    }

    /// Takes the idempotency key lifetime and the metrics report retention from the
    /// `[catalog]` section (the defaults otherwise).
    pub fn with_catalog_settings(mut self, catalog: &crate::config::CatalogSection) -> AppState {
        self.idempotency = idempotency::Idempotency::new(std::time::Duration::from_secs(
            catalog.idempotency_key_lifetime_secs,
        ));
        self.metrics_reports_retention = catalog.metrics_reports_retention;
        self
    }
}

impl AppState {
    /// The region a forwarded request came from (its clients wrote the files it references).
    pub fn origin_region<'a>(&self, headers: &'a axum::http::HeaderMap) -> Option<&'a str> {
        headers
            .get(routing::ORIGIN_REGION)
            .and_then(|v| v.to_str().ok())
            .filter(|o| *o != self.region)
    }

    /// The storage `config` for the client of a request: its own region's, which for a
    /// forwarded request is the origin region's, so clients keep using their region's bucket.
    pub fn vended_config(&self, headers: &axum::http::HeaderMap) -> &Bytes {
        self.origin_region(headers)
            .and_then(|o| self.region_storage_json.get(o))
            .unwrap_or(&self.storage_properties_json)
    }
}

/// The region's whole HTTP surface.
pub fn router(state: Arc<AppState>) -> Router {
    let max_body_bytes = state.max_body_bytes;
    Router::new()
        .merge(iceberg::router())
        .merge(views::router())
        .merge(management::router())
        .merge(control::router())
        .merge(drills::router())
        .merge(crate::replication::api::router())
        .merge(crate::replication::anti_entropy_api::router())
        .merge(crate::faults::router())
        .route("/metrics", get(crate::metrics::handler))
        .route("/health/live", get(|| async { "ok" }))
        .route("/health/ready", get(ready))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
        // Inside the write routing: a forwarded write is deduplicated by the primary.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            idempotency::middleware,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routing::route_writes,
        ))
        .layer(axum::middleware::from_fn(crate::faults::cut_answers))
        // Outermost: every answer carries the request id, and no internal failure's detail
        // reaches a client.
        .layer(axum::middleware::from_fn(request_id::middleware))
        .with_state(state)
}

/// Ready when the store answers and writes have somewhere to go (this region holds the
/// write lease, or the primary is known and writes are forwarded there).
async fn ready(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> Result<&'static str, CatalogError> {
    state.catalog.store().current_epoch().await?;
    match state.authority.route() {
        routing::WriteRoute::Unavailable(why) => Err(CatalogError::Unavailable(why)),
        _ => Ok("ready"),
    }
}

async fn unknown_route(req: Request) -> CatalogError {
    CatalogError::bad_request(format!(
        "No route for request: {} {}",
        req.method(),
        req.uri().path()
    ))
}

async fn method_not_allowed(req: Request) -> Response {
    let body = serde_json::json!({"error": {
        "message": format!("Method {} is not allowed for {}", req.method(), req.uri().path()),
        "type": "BadRequestException",
        "code": 405,
    }});
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

/// A JSON body whose rejections (malformed JSON, unknown update type, too large) are
/// answered in the Iceberg error model.
pub struct IcebergJson<T>(pub T);

impl<S, T> FromRequest<S> for IcebergJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = CatalogError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                CatalogError::PayloadTooLarge(format!("Request body too large: {e}"))
            } else {
                CatalogError::bad_request(format!("Cannot read request body: {e}"))
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(IcebergJson)
            .map_err(|e| CatalogError::bad_request(format!("Malformed request body: {e}")))
    }
}
