//! Write routing and fencing: which region may commit and under which epoch, and the
//! forwarding of writes that reach a region that is not primary.
//!
//! A [`WriteAuthority`] answers both questions. [`Standalone`] is a single region that is
//! always primary (its epoch comes from its own store); the control plane's lease-backed
//! authority lives in [`crate::control`]. The HTTP middleware [`route_writes`] forwards writes
//! to the primary (same method, path, headers and body; bounded timeout; loop-proof), and the
//! catalog asks [`WriteAuthority::commit_epoch`] right before every store transaction, so a
//! lease that lapsed mid-request still stops the commit.
//!
//! The middleware also implements the replication contract of a request
//! (docs/replication.md): every 2xx answer to a write committed here carries
//! [`COMMIT_TOKEN`] (`<epoch>-<seq>`, `seq` = the change-log head right after the commit); a
//! commit in a catalog in `sync` mode is acknowledged only once every healthy secondary
//! applied it ([`crate::replication::SyncReplication`]), else the catalog's policy decides;
//! and a read carrying a commit token at a secondary is answered there only once the
//! region's watermark reached the token (waiting up to `read_your_writes_wait_ms`), else it
//! is forwarded to the primary.

pub mod lease;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::AppState;
use crate::config::{ReplicationMode, SyncPolicy};
use crate::error::CatalogError;
use crate::replication::sync::{added_bytes_of_commit, policy_name, CommitToken, SyncOutcome};

/// Set on a forwarded request: the region that forwarded it. A request carrying it is
/// never forwarded again.
pub const FORWARDED_BY: &str = "x-pangolin-forwarded-by";
/// The region whose clients wrote the files a forwarded commit references.
pub const ORIGIN_REGION: &str = "x-pangolin-origin-region";
/// On every write response: the region that committed it.
pub const COMMITTED_IN: &str = "x-pangolin-region";
/// On every 2xx write response: `<epoch>-<seq>` of the commit. Sent with a read to a
/// secondary, it asks for an answer at least that new (read-your-writes).
pub const COMMIT_TOKEN: &str = "x-pangolin-commit-token";

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
        return read(&state, req, next).await;
    }
    let forwarded_by = req
        .headers()
        .get(FORWARDED_BY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match state.authority.route() {
        WriteRoute::Local => commit_here(&state, req, next).await,
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

/// The catalog (REST prefix) a `/v1/{prefix}/...` request addresses.
fn catalog_of(path: &str) -> Option<&str> {
    let mut parts = path.strip_prefix("/v1/")?.split('/');
    let prefix = parts.next()?;
    parts.next()?;
    Some(prefix).filter(|p| !p.is_empty())
}

/// updateTable and commitTransaction: the requests that add snapshots.
fn is_commit(method: &Method, path: &str) -> bool {
    if *method != Method::POST {
        return false;
    }
    let parts: Vec<&str> = path.split('/').collect();
    path.ends_with("/transactions/commit")
        || (parts.len() == 7 && parts[3] == "namespaces" && parts[5] == "tables")
}

/// A write this region commits: runs it, stamps the answer with the region and the commit
/// token, and in a `sync` catalog waits for the secondaries.
async fn commit_here(state: &AppState, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let catalog = catalog_of(&path).unwrap_or_default().to_string();
    // The data bytes a commit adds, for the pending-bytes figures (only worth reading the
    // body when some region follows this one).
    let (req, added_bytes) = if state.sync.has_secondaries() && is_commit(req.method(), &path) {
        let (parts, body) = req.into_parts();
        match axum::body::to_bytes(body, state.max_body_bytes).await {
            Ok(bytes) => {
                let added = serde_json::from_slice(&bytes)
                    .map(|v| added_bytes_of_commit(&v))
                    .unwrap_or(0);
                (Request::from_parts(parts, Body::from(bytes)), added)
            }
            Err(e) => {
                return CatalogError::PayloadTooLarge(format!("Request body too large: {e}"))
                    .into_response()
            }
        }
    } else {
        (req, 0)
    };
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&state.region) {
        resp.headers_mut().insert(COMMITTED_IN, v);
    }
    if !resp.status().is_success() {
        return resp;
    }
    let seq = match state.catalog.store().replication_watermark().await {
        Ok(w) => w.seq,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the change-log head for the commit token");
            return resp;
        }
    };
    let token = CommitToken {
        epoch: state.authority.epoch(),
        seq,
    };
    if let Ok(v) = HeaderValue::from_str(&token.to_string()) {
        resp.headers_mut().insert(COMMIT_TOKEN, v);
    }
    state.sync.commit_recorded(seq, added_bytes);
    let mode = state.sync.mode_of(&catalog);
    if mode.mode == ReplicationMode::Sync {
        let metrics = &state.metrics;
        metrics.sync_waits.fetch_add(1, Ordering::Relaxed);
        let timeout = Duration::from_millis(mode.sync_timeout_ms);
        match state.sync.wait_applied(seq, timeout).await {
            SyncOutcome::Replicated { waited } => metrics.sync_wait_seconds.observe(waited),
            SyncOutcome::Behind { waited, laggards } => {
                metrics.sync_wait_seconds.observe(waited);
                let behind = laggards
                    .iter()
                    .map(|l| l.to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                match mode.sync_policy {
                    SyncPolicy::Block => {
                        metrics.sync_blocked.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            region = %state.region, catalog, %token, behind,
                            "sync commit not acknowledged: a secondary did not apply it in time (policy block)"
                        );
                        let message = format!(
                            "The commit IS durable in region {} (commit token {token}) but is not acknowledged: catalog {catalog} replicates in sync mode and secondary region(s) {behind} did not apply it within {} ms (sync_policy {}). Do not re-send the same change blindly: reload the table or view and check whether it is there before retrying.",
                            state.region,
                            mode.sync_timeout_ms,
                            policy_name(mode.sync_policy),
                        );
                        let mut blocked = CatalogError::Unavailable(message).into_response();
                        let h = blocked.headers_mut();
                        let retry = mode.sync_timeout_ms.div_ceil(1000).max(1);
                        h.insert(header::RETRY_AFTER, HeaderValue::from(retry));
                        for name in [COMMITTED_IN, COMMIT_TOKEN] {
                            if let Some(v) = resp.headers().get(name) {
                                h.insert(name, v.clone());
                            }
                        }
                        return blocked;
                    }
                    SyncPolicy::Degrade => {
                        metrics.sync_degraded.fetch_add(1, Ordering::Relaxed);
                        state.sync.degrade(seq, &catalog, &laggards);
                    }
                }
            }
        }
    }
    state
        .metrics
        .commits_acknowledged
        .fetch_add(1, Ordering::Relaxed);
    resp
}

/// A read: served here, unless it carries a commit token this region has not applied yet
/// (waits up to `read_your_writes_wait_ms`, then forwards it to the primary).
async fn read(state: &AppState, mut req: Request, next: Next) -> Response {
    let Some(raw) = req.headers().get(COMMIT_TOKEN) else {
        return next.run(req).await;
    };
    if !req.uri().path().starts_with("/v1/") || req.headers().contains_key(FORWARDED_BY) {
        return next.run(req).await;
    }
    let token: CommitToken = match raw.to_str().map_err(|e| e.to_string()).and_then(str::parse) {
        Ok(t) => t,
        Err(e) => {
            return CatalogError::bad_request(format!("Invalid {COMMIT_TOKEN} header: {e}"))
                .into_response()
        }
    };
    let route = state.authority.route();
    if route == WriteRoute::Local {
        return next.run(req).await;
    }
    let wait = Duration::from_millis(state.sync.settings().read_your_writes_wait_ms);
    if reached(state, token.seq, wait).await {
        state
            .metrics
            .read_your_writes_local
            .fetch_add(1, Ordering::Relaxed);
        return next.run(req).await;
    }
    match route {
        WriteRoute::Forward { region, catalog_url } => {
            state
                .metrics
                .read_your_writes_forwarded
                .fetch_add(1, Ordering::Relaxed);
            // The primary vends the storage of the request's origin region; this region's
            // bucket may lack the files of the commit, so the client reads the primary's.
            if let Ok(v) = HeaderValue::from_str(&region) {
                req.headers_mut().insert(ORIGIN_REGION, v);
            }
            forward(state, req, &region, &catalog_url)
                .await
                .unwrap_or_else(IntoResponse::into_response)
        }
        WriteRoute::Unavailable(why) => CatalogError::Unavailable(format!(
            "region {} has not applied commit token {token} yet and no primary can answer instead: {why}",
            state.region
        ))
        .into_response(),
        WriteRoute::Local => next.run(req).await,
    }
}

/// Whether this region's watermark reaches `seq`, waiting at most `wait`: woken by this
/// node's replicator as it applies, and re-reading the store (another node of the region
/// may be the one applying) every 100 ms.
async fn reached(state: &AppState, seq: i64, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut applied = state.replication.as_ref().map(|r| r.subscribe_applied());
    loop {
        if let Some(rx) = &mut applied {
            if *rx.borrow_and_update() >= seq {
                return true;
            }
        }
        match state.catalog.store().replication_watermark().await {
            Ok(w) if w.seq >= seq => return true,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the watermark for a read-your-writes check");
                return false;
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let nap = tokio::time::sleep((deadline - now).min(Duration::from_millis(100)));
        match &mut applied {
            Some(rx) => {
                tokio::select! {
                    r = rx.changed() => if r.is_err() { applied = None; },
                    _ = nap => {}
                }
            }
            None => nap.await,
        }
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
    crate::faults::gate(region).await.map_err(|e| {
        CatalogError::Unavailable(format!(
            "primary region {region} is not reachable at {catalog_url}: {e}"
        ))
    })?;
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
    fn commits_and_their_catalog_are_recognised() {
        assert_eq!(catalog_of("/v1/demo/namespaces"), Some("demo"));
        assert_eq!(catalog_of("/v1/config"), None);
        assert!(is_commit(&Method::POST, "/v1/demo/namespaces/a/tables/t"));
        assert!(is_commit(&Method::POST, "/v1/demo/transactions/commit"));
        assert!(!is_commit(&Method::POST, "/v1/demo/namespaces/a/tables"));
        assert!(!is_commit(
            &Method::DELETE,
            "/v1/demo/namespaces/a/tables/t"
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
