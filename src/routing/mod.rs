//! Write routing and fencing: which region may commit and under which epoch, and the
//! forwarding of writes that reach a region that is not primary.
//!
//! A [`WriteAuthority`] answers both questions. [`Standalone`] is a single region that is
//! always primary (its epoch comes from its own store); the control plane's lease-backed
//! authority lives in [`crate::control`]. The HTTP middleware [`route_writes`] forwards writes
//! to the primary (same method, path, headers and body; bounded timeout; loop-proof), and the
//! catalog asks [`WriteAuthority::commit_epoch`] right before every store transaction, so a
//! lease that lapsed mid-request still stops the commit.

pub mod lease;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::AppState;
use crate::error::CatalogError;

/// Set on a forwarded request: the region that forwarded it. A request carrying it is
/// never forwarded again.
pub const FORWARDED_BY: &str = "x-pangolin-forwarded-by";
/// The region whose clients wrote the files a forwarded commit references.
pub const ORIGIN_REGION: &str = "x-pangolin-origin-region";
/// On every write response: the region that committed it.
pub const COMMITTED_IN: &str = "x-pangolin-region";

/// Longest time a forwarded write may take before the client gets a 503.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a write arriving at this node goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteRoute {
    /// This region is primary and holds a valid write lease.
    Local,
    /// Another region is primary.
    Forward { region: String, catalog_url: String },
    /// No region may commit right now (switchover fencing, no lease, no primary known).
    Unavailable(String),
}

/// Decides where writes go and under which fencing epoch a local commit runs.
pub trait WriteAuthority: Send + Sync + 'static {
    fn route(&self) -> WriteRoute;
    /// The fencing epoch local writes carry (the store refuses any other).
    fn epoch(&self) -> i64;
    /// Checked right before a commit's store transaction: `Unavailable` when this region
    /// may no longer commit (e.g. its lease lapsed while the request was running).
    fn ensure_can_commit(&self) -> Result<(), CatalogError>;
    /// The store reported a newer epoch than the one a write carried.
    fn observe_epoch(&self, current: i64);
}

/// A single region that is always primary; the epoch is its store's.
pub struct Standalone {
    epoch: AtomicI64,
}

impl Standalone {
    pub fn new(epoch: i64) -> Standalone {
        Standalone {
            epoch: AtomicI64::new(epoch),
        }
    }
}

impl WriteAuthority for Standalone {
    fn route(&self) -> WriteRoute {
        WriteRoute::Local
    }

    fn epoch(&self) -> i64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn ensure_can_commit(&self) -> Result<(), CatalogError> {
        Ok(())
    }

    fn observe_epoch(&self, current: i64) {
        self.epoch.fetch_max(current, Ordering::AcqRel);
    }
}

/// Requests that change catalog state and therefore go to the primary. Metrics reports are
/// recorded by the region that receives them.
pub fn is_catalog_write(method: &Method, path: &str) -> bool {
    let mutating = matches!(*method, Method::POST | Method::PUT | Method::DELETE);
    mutating && path.starts_with("/v1/") && !path.ends_with("/metrics")
}

/// Middleware: runs writes here when this region is primary, forwards them otherwise.
pub async fn route_writes(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    if !is_catalog_write(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let forwarded_by = req
        .headers()
        .get(FORWARDED_BY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match state.authority.route() {
        WriteRoute::Local => {
            let mut resp = next.run(req).await;
            if let Ok(v) = HeaderValue::from_str(&state.region) {
                resp.headers_mut().insert(COMMITTED_IN, v);
            }
            resp
        }
        WriteRoute::Forward { region, catalog_url } => match forwarded_by {
            Some(by) => CatalogError::Unavailable(format!(
                "write forwarded by {by} reached {}, which is not primary (primary: {region}); retry",
                state.region
            ))
            .into_response(),
            None => forward(&state, req, &region, &catalog_url)
                .await
                .unwrap_or_else(IntoResponse::into_response),
        },
        WriteRoute::Unavailable(why) => CatalogError::Unavailable(why).into_response(),
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

/// Sends the request to the primary and relays its answer.
async fn forward(
    state: &AppState,
    req: Request,
    region: &str,
    catalog_url: &str,
) -> Result<Response, CatalogError> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, state.max_body_bytes)
        .await
        .map_err(|e| CatalogError::PayloadTooLarge(format!("Request body too large: {e}")))?;
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let url = format!("{}{path}", catalog_url.trim_end_matches('/'));
    let mut out = state
        .http
        .request(parts.method.clone(), &url)
        .timeout(FORWARD_TIMEOUT)
        .body(body);
    for (name, value) in parts.headers.iter() {
        if !is_hop_by_hop(name) {
            out = out.header(name, value);
        }
    }
    out = out.header(FORWARDED_BY, &state.region);
    if !parts.headers.contains_key(ORIGIN_REGION) {
        out = out.header(ORIGIN_REGION, &state.region);
    }
    let resp = out.send().await.map_err(|e| {
        CatalogError::Unavailable(format!(
            "primary region {region} is not reachable at {catalog_url}: {e}"
        ))
    })?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.map_err(|e| {
        CatalogError::Unavailable(format!("primary region {region} broke off its answer: {e}"))
    })?;
    let mut relayed = Response::builder().status(status);
    for (name, value) in headers.iter() {
        if !is_hop_by_hop(name) {
            relayed = relayed.header(name, value);
        }
    }
    relayed
        .body(Body::from(bytes))
        .map_err(|e| CatalogError::Internal(format!("cannot relay the primary's answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_mutating_catalog_requests_except_metrics() {
        assert!(is_catalog_write(&Method::POST, "/v1/demo/namespaces"));
        assert!(is_catalog_write(
            &Method::DELETE,
            "/v1/demo/namespaces/a/tables/t"
        ));
        assert!(!is_catalog_write(&Method::GET, "/v1/demo/namespaces"));
        assert!(!is_catalog_write(
            &Method::POST,
            "/v1/demo/namespaces/a/tables/t/metrics"
        ));
        assert!(!is_catalog_write(
            &Method::POST,
            "/api/v1/control/switchover"
        ));
    }

    #[test]
    fn standalone_is_always_primary_and_learns_newer_epochs() {
        let s = Standalone::new(1);
        assert_eq!(s.route(), WriteRoute::Local);
        s.observe_epoch(3);
        s.observe_epoch(2);
        assert_eq!(s.epoch(), 3);
    }
}
