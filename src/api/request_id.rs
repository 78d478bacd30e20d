//! Request ids and the answers of internal failures.
//!
//! Every request gets an id: the caller's `x-request-id` when it is a plausible one (1 to 128
//! characters of `A-Z a-z 0-9 . _ : -`, so a forwarded write keeps the id the secondary gave
//! it), otherwise a fresh UUIDv7. The id is in a tracing span around the request, in the
//! `x-request-id` header of the answer, and in the message of every internal failure.
//!
//! An internal failure (any 5xx but 503) answers a generic message with the request id;
//! its detail (storage and SDK errors, database errors) goes to the log only, with the same
//! id. [`crate::error::CatalogError`] does this itself and marks its answer [`Sanitized`];
//! [`middleware`] does it for any other 5xx answer. 503 answers keep their message: they
//! tell the client why to retry and where.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

/// The request id header, on requests and answers.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Largest internal-failure body read into the log.
const MAX_LOGGED_BODY: usize = 64 * 1024;

tokio::task_local! {
    static CURRENT: Arc<str>;
}

/// Marks an answer whose internal failure was already logged and replaced by the generic
/// message.
#[derive(Debug, Clone, Copy)]
pub struct Sanitized;

/// The id of the request being served by this task, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(|id| id.to_string()).ok()
}

/// The id of the request being served, or a fresh one outside a request.
pub fn current_or_new() -> String {
    current().unwrap_or_else(new_id)
}

/// A fresh request id (UUIDv7: sortable by time).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The message of an internal failure, all a client is told about it.
pub fn internal_error_message(id: &str) -> String {
    format!("Internal server error; request id {id}")
}

/// Whether an answer with this status is an internal failure (5xx other than 503).
pub fn is_internal_failure(status: StatusCode) -> bool {
    status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE
}

/// The answer to an internal failure, in the Iceberg error model: generic message, request id.
pub fn internal_error_response(status: StatusCode, id: &str) -> Response {
    let body = serde_json::json!({"error": {
        "message": internal_error_message(id),
        "type": "ServiceFailureException",
        "code": status.as_u16(),
    }});
    let mut resp = (status, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert(HEADER, v);
    }
    resp.extensions_mut().insert(Sanitized);
    resp
}

/// The caller's id, when it is a plausible one.
fn acceptable(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    ok.then(|| s.to_string())
}

/// Gives the request its id (request header, task-local, tracing span, answer header) and
/// replaces the body of any internal failure not already sanitized.
pub async fn middleware(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(acceptable)
        .unwrap_or_else(new_id);
    let value = HeaderValue::from_str(&id).expect("request ids are visible ASCII");
    req.headers_mut().insert(HEADER, value.clone());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
    );
    let mut resp = CURRENT
        .scope(Arc::from(id.as_str()), next.run(req))
        .instrument(span.clone())
        .await;
    if is_internal_failure(resp.status()) && resp.extensions().get::<Sanitized>().is_none() {
        resp = sanitize(resp, &id).instrument(span).await;
    }
    resp.headers_mut().insert(HEADER, value);
    resp
}

/// Logs an internal failure's answer and replaces its body by the generic one.
async fn sanitize(resp: Response, id: &str) -> Response {
    let status = resp.status();
    let (parts, body) = resp.into_parts();
    let detail = match axum::body::to_bytes(body, MAX_LOGGED_BODY).await {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => format!("(body not readable: {e})"),
    };
    tracing::error!(request_id = %id, status = status.as_u16(), detail = %detail, "request failed");
    let mut out = internal_error_response(status, id);
    for (name, value) in parts.headers.iter() {
        if name != CONTENT_LENGTH && name != CONTENT_TYPE && !out.headers().contains_key(name) {
            out.headers_mut().append(name, value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plausible_caller_ids_are_kept_others_replaced() {
        for ok in ["abc", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "a.b_c:d-e"] {
            assert_eq!(
                acceptable(&HeaderValue::from_static(ok)).as_deref(),
                Some(ok)
            );
        }
        let long = "a".repeat(129);
        for bad in ["", "a b", "a\"b", "<script>", long.as_str()] {
            let v = HeaderValue::from_str(bad).unwrap();
            assert_eq!(acceptable(&v), None, "{bad}");
        }
    }

    #[test]
    fn internal_failures_are_5xx_but_503() {
        assert!(is_internal_failure(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(is_internal_failure(StatusCode::BAD_GATEWAY));
        assert!(!is_internal_failure(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!is_internal_failure(StatusCode::BAD_REQUEST));
    }
}
