//! `Idempotency-Key` on mutating requests, per the REST spec's `idempotency-key` parameter.
//!
//! [`middleware`] wraps every `POST`/`PUT`/`DELETE` under `/v1/` that carries the header:
//!
//! - The key must be a UUID in its 36-character hyphenated form (any version; case does not
//!   matter), else 400 `BadRequestException`.
//! - The request's fingerprint is its method, path, query and the SHA-256 of its body (the
//!   body is buffered, bounded by `catalog.max_body_bytes`, and handed on to the handler).
//! - The store reserves the key race-free ([`IdempotencyStore::begin_idempotent`](crate::store::IdempotencyStore::begin_idempotent)):
//!   - free (new, or expired after `catalog.idempotency_key_lifetime_secs`): this request runs;
//!     a 2xx or deterministic 4xx response is stored and finalizes the key, anything else
//!     (5xx, a panic) releases it so that a retry runs again;
//!   - finalized: the stored status, body, `Content-Type` and `ETag` are replayed (with
//!     `Idempotent-Replayed: true`) without running the handler;
//!   - in flight (another request holds it): wait for it, polling every 25 ms for up to
//!     30 s, then replay its response — or run, when it released the key; past 30 s, 409;
//!   - first used by a different request: 422 `BadRequestException`, nothing runs.
//! - The handler runs in a task of its own, so a client that disconnects mid-request does not
//!   cancel it: the response is still stored for the retry.
//! - A reservation whose holder died (node crash) is taken over after a lease of 5 minutes
//!   (or the key lifetime, when shorter).
//! - Keys older than twice the lifetime are purged, at most once a minute, in the background.
//!
//! Not atomic with the mutation: a crash after the mutation committed but before its response
//! was stored leaves the key unfinalized, and the retry runs the operation again (and may get,
//! e.g., 409 `AlreadyExistsException` for a create that did happen).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::FutureExt;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use super::AppState;
use crate::clock::now_ms;
use crate::error::CatalogError;
use crate::store::{IdempotencyStart, MetadataStore, StoredResponse};

/// The request header carrying the key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set (`true`) on a response replayed from a finalized key.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// How often a request waiting for an in-flight duplicate looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// How long a request waits for an in-flight duplicate before answering 409.
const WAIT_LIMIT: Duration = Duration::from_secs(30);
/// After this long a pending reservation is presumed dead (its node crashed) and taken over.
const PENDING_LEASE: Duration = Duration::from_secs(300);
/// Expired keys are purged at most this often (per node).
const PURGE_INTERVAL_MS: i64 = 60_000;

/// Per-node `Idempotency-Key` settings and purge schedule.
#[derive(Debug)]
pub struct Idempotency {
    lifetime: Duration,
    last_purge_ms: AtomicI64,
}

impl Idempotency {
    pub fn new(lifetime: Duration) -> Idempotency {
        Idempotency {
            lifetime,
            last_purge_ms: AtomicI64::new(0),
        }
    }

    /// How long a key is honoured after its first use.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The lifetime as advertised in `/v1/config` (`idempotency-key-lifetime`).
    pub fn lifetime_iso8601(&self) -> String {
        iso8601_duration(self.lifetime.as_secs())
    }

    fn lifetime_ms(&self) -> i64 {
        i64::try_from(self.lifetime.as_millis()).unwrap_or(i64::MAX)
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(PENDING_LEASE.min(self.lifetime).as_millis())
            .unwrap_or(i64::MAX)
            .max(1)
    }

    /// Starts a background purge of keys older than twice the lifetime when the last one is
    /// more than [`PURGE_INTERVAL_MS`] ago.
    fn maybe_purge(&self, store: &Arc<dyn MetadataStore>, now_ms: i64) {
        let last = self.last_purge_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) < PURGE_INTERVAL_MS
            || self
                .last_purge_ms
                .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let cutoff = now_ms.saturating_sub(self.lifetime_ms().saturating_mul(2));
        let store = store.clone();
        tokio::spawn(async move {
            match store.purge_idempotency_keys(cutoff).await {
                Ok(0) => {}
                Ok(purged) => tracing::debug!(purged, "purged expired idempotency keys"),
                Err(e) => tracing::warn!(error = %e, "purging idempotency keys failed"),
            }
        });
    }
}

impl Default for Idempotency {
    fn default() -> Idempotency {
        Idempotency::new(Duration::from_secs(1800))
    }
}

/// ISO-8601 duration of whole seconds, zero fields left out: `PT30M`, `PT24H`, `PT1H30S`;
/// `PT0S` for zero.
pub fn iso8601_duration(secs: u64) -> String {
    if secs == 0 {
        return "PT0S".into();
    }
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::from("PT");
    for (value, unit) in [(h, 'H'), (m, 'M'), (s, 'S')] {
        if value > 0 {
            out.push_str(&value.to_string());
            out.push(unit);
        }
    }
    out
}

/// Whether the middleware looks at this request at all.
fn applies(method: &Method, path: &str) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::DELETE) && path.starts_with("/v1/")
}

/// The key in its canonical (lower-case, hyphenated) form.
fn parse_key(raw: &HeaderValue) -> Result<String, CatalogError> {
    let invalid = || {
        CatalogError::bad_request(format!(
            "Invalid Idempotency-Key {raw:?}: expected a UUID in its 36-character form, \
             e.g. 017f22e2-79b0-7cc3-98c4-dc0c0c07398f"
        ))
    };
    let text = raw.to_str().map_err(|_| invalid())?;
    if text.len() != 36 {
        return Err(invalid());
    }
    let uuid = uuid::Uuid::try_parse(text).map_err(|_| invalid())?;
    Ok(uuid.hyphenated().to_string())
}

/// SHA-256 (hex) over method, path, query and the body's SHA-256.
fn fingerprint(method: &Method, uri: &Uri, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_str().as_bytes());
    h.update([0]);
    h.update(uri.path().as_bytes());
    h.update([0]);
    h.update(uri.query().unwrap_or("").as_bytes());
    h.update([0]);
    h.update(Sha256::digest(body));
    hex::encode(h.finalize())
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, CatalogError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(
            CatalogError::PayloadTooLarge(format!("Request body too large: {e}")),
        ),
        Err(e) => Err(CatalogError::bad_request(format!(
            "Cannot read request body: {e}"
        ))),
    }
}

/// An error response in the Iceberg error model for the statuses [`CatalogError`] has no
/// variant for.
fn error_response(status: StatusCode, kind: &str, message: String) -> Response {
    let body = serde_json::json!({"error": {
        "message": message,
        "type": kind,
        "code": status.as_u16(),
    }});
    (status, axum::Json(body)).into_response()
}

/// Statuses that finalize a key: success and deterministic client errors (not the
/// transient 408, 425 and 429).
fn is_final(status: StatusCode) -> bool {
    status.is_success()
        || (status.is_client_error()
            && !matches!(
                status,
                StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_EARLY | StatusCode::TOO_MANY_REQUESTS
            ))
}

/// Middleware: see the module docs.
pub async fn middleware(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if !applies(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let Some(raw) = req.headers().get(IDEMPOTENCY_KEY) else {
        return next.run(req).await;
    };
    let key = match parse_key(raw) {
        Ok(key) => key,
        Err(e) => return e.into_response(),
    };
    let (parts, body) = req.into_parts();
    let body = match read_body(body, state.max_body_bytes).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let fingerprint = fingerprint(&parts.method, &parts.uri, &body);
    let req = Request::from_parts(parts, Body::from(body));
    run(&state, key, fingerprint, req, next)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn run(
    state: &AppState,
    key: String,
    fingerprint: String,
    req: Request,
    next: Next,
) -> Result<Response, CatalogError> {
    let store = state.catalog.store().clone();
    let settings = &state.idempotency;
    settings.maybe_purge(&store, now_ms());
    let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
    loop {
        let start = store
            .begin_idempotent(
                &key,
                &fingerprint,
                now_ms(),
                settings.lifetime_ms(),
                settings.lease_ms(),
            )
            .await?;
        match start {
            IdempotencyStart::Started { token } => {
                return Ok(execute(store, key, token, req, next).await)
            }
            IdempotencyStart::Completed(stored) => return Ok(replay(stored)),
            IdempotencyStart::KeyReused => {
                return Ok(error_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "BadRequestException",
                    format!(
                        "Idempotency-Key {key} was already used for a different request \
                         (method, path, query or body differ); use a new key for a new operation"
                    ),
                ))
            }
            IdempotencyStart::InFlight => {
                if tokio::time::Instant::now() >= deadline {
                    return Ok(error_response(
                        StatusCode::CONFLICT,
                        "CommitFailedException",
                        format!(
                            "A request with Idempotency-Key {key} is still in progress after \
                             {}s; retry later with the same key",
                            WAIT_LIMIT.as_secs()
                        ),
                    ));
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
    }
}

/// Runs the handler under the reservation `token` and finalizes or releases the key. The
/// handler runs in its own task: a client disconnect must not cancel it half-way.
async fn execute(
    store: Arc<dyn MetadataStore>,
    key: String,
    token: String,
    req: Request,
    next: Next,
) -> Response {
    let task = async move {
        let resp = match AssertUnwindSafe(next.run(req)).catch_unwind().await {
            Ok(resp) => resp,
            Err(_) => {
                release(&store, &key, &token).await;
                return CatalogError::Internal("the request handler panicked".into())
                    .into_response();
            }
        };
        let (parts, body) = resp.into_parts();
        let bytes = match axum::body::to_bytes(body, usize::MAX).await {
            Ok(bytes) => bytes,
            Err(e) => {
                release(&store, &key, &token).await;
                return CatalogError::Internal(format!("cannot read the response body: {e}"))
                    .into_response();
            }
        };
        if is_final(parts.status) {
            let header_text = |name| {
                parts
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let stored = StoredResponse {
                status: parts.status.as_u16(),
                content_type: header_text(header::CONTENT_TYPE),
                etag: header_text(header::ETAG),
                body: bytes.to_vec(),
            };
            match store.complete_idempotent(&key, &token, &stored).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!(
                    key = %key,
                    "idempotency reservation was lost before the response was stored"
                ),
                Err(e) => {
                    tracing::error!(key = %key, error = %e, "cannot store the idempotent response");
                    release(&store, &key, &token).await;
                }
            }
        } else {
            release(&store, &key, &token).await;
        }
        Response::from_parts(parts, Body::from(bytes))
    };
    match tokio::spawn(task.instrument(tracing::Span::current())).await {
        Ok(resp) => resp,
        Err(e) => CatalogError::Internal(format!("the request task failed: {e}")).into_response(),
    }
}

/// Releases a reservation without a final response; a failure only delays retries until
/// the reservation's lease ends.
async fn release(store: &Arc<dyn MetadataStore>, key: &str, token: &str) {
    if let Err(e) = store.abandon_idempotent(key, token).await {
        tracing::warn!(key = %key, error = %e, "cannot release an idempotency key");
    }
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut resp = (status, Body::from(stored.body)).into_response();
    let h = resp.headers_mut();
    if let Some(v) = stored
        .content_type
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Some(v) = stored
        .etag
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        h.insert(header::ETAG, v);
    }
    h.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_iso8601() {
        assert_eq!(iso8601_duration(1800), "PT30M");
        assert_eq!(iso8601_duration(86_400), "PT24H");
        assert_eq!(iso8601_duration(3630), "PT1H30S");
        assert_eq!(iso8601_duration(45), "PT45S");
        assert_eq!(iso8601_duration(0), "PT0S");
    }

    #[test]
    fn keys_must_be_36_character_uuids() {
        let ok = HeaderValue::from_static("017F22E2-79B0-7CC3-98C4-DC0C0C07398F");
        assert_eq!(
            parse_key(&ok).unwrap(),
            "017f22e2-79b0-7cc3-98c4-dc0c0c07398f"
        );
        for bad in [
            "017f22e279b07cc398c4dc0c0c07398f",
            "{017f22e2-79b0-7cc3-98c4-dc0c0c07398f}",
            "not-a-uuid-not-a-uuid-not-a-uuid-xx",
            "",
        ] {
            assert!(parse_key(&HeaderValue::from_static(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn fingerprint_covers_method_path_query_and_body() {
        let uri: Uri = "/v1/demo/namespaces?x=1".parse().unwrap();
        let base = fingerprint(&Method::POST, &uri, b"{}");
        assert_eq!(base, fingerprint(&Method::POST, &uri, b"{}"));
        assert_ne!(base, fingerprint(&Method::PUT, &uri, b"{}"));
        assert_ne!(base, fingerprint(&Method::POST, &uri, b"{ }"));
        let other: Uri = "/v1/demo/namespaces?x=2".parse().unwrap();
        assert_ne!(base, fingerprint(&Method::POST, &other, b"{}"));
    }

    #[test]
    fn finality_follows_the_spec() {
        assert!(is_final(StatusCode::OK));
        assert!(is_final(StatusCode::NO_CONTENT));
        assert!(is_final(StatusCode::CONFLICT));
        assert!(is_final(StatusCode::NOT_FOUND));
        assert!(!is_final(StatusCode::TOO_MANY_REQUESTS));
        assert!(!is_final(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(!is_final(StatusCode::SERVICE_UNAVAILABLE));
    }
}
