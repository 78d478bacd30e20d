//! The catalog's domain error and its one mapping to the Iceberg REST error model
//! (`{"error":{"message","type","code"}}`). Exception type names are the Java simple names
//! clients choose their exceptions by.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::{NotFound, StoreError};

/// Result type of the catalog domain layer.
pub type Result<T> = std::result::Result<T, CatalogError>;

/// Everything the domain layer can fail with. The HTTP layer turns it into a response in
/// [`CatalogError::into_response`] and nowhere else.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{0}")]
    NotFound(NotFound),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    NamespaceNotEmpty(String),
    #[error("{0}")]
    CommitFailed(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Well-formed but contradictory (e.g. a property both removed and updated).
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Unsupported(String),
    /// This region may not write now (stale fencing epoch, no lease): retry later or elsewhere.
    #[error("{0}")]
    Unavailable(String),
    /// Object storage failed before anything was published: nothing changed.
    #[error("storage error: {0}")]
    Storage(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// The caller did not prove it may do this (401 `NotAuthorizedException`).
    #[error("{0}")]
    NotAuthorized(String),
}

impl CatalogError {
    pub fn bad_request(msg: impl Into<String>) -> Self {
        CatalogError::BadRequest(msg.into())
    }

    /// (HTTP status, Iceberg error `type`).
    fn status_and_type(&self) -> (StatusCode, &'static str) {
        match self {
            CatalogError::NotFound(nf) => (
                StatusCode::NOT_FOUND,
                match nf {
                    NotFound::Table(_) => "NoSuchTableException",
                    NotFound::View(_) => "NoSuchViewException",
                    NotFound::Namespace(_) => "NoSuchNamespaceException",
                    NotFound::Warehouse(_) => "NoSuchWarehouseException",
                    NotFound::Catalog(_) | NotFound::Tenant(_) => "NotFoundException",
                },
            ),
            CatalogError::AlreadyExists(_) => (StatusCode::CONFLICT, "AlreadyExistsException"),
            CatalogError::NamespaceNotEmpty(_) => {
                (StatusCode::CONFLICT, "NamespaceNotEmptyException")
            }
            CatalogError::CommitFailed(_) => (StatusCode::CONFLICT, "CommitFailedException"),
            CatalogError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequestException"),
            CatalogError::Unprocessable(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "UnprocessableEntityException",
            ),
            CatalogError::PayloadTooLarge(_) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "BadRequestException")
            }
            CatalogError::Unsupported(_) => {
                (StatusCode::NOT_ACCEPTABLE, "UnsupportedOperationException")
            }
            CatalogError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableException",
            ),
            CatalogError::Storage(_) | CatalogError::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "ServiceFailureException")
            }
            CatalogError::NotAuthorized(_) => (StatusCode::UNAUTHORIZED, "NotAuthorizedException"),
        }
    }
}

impl From<StoreError> for CatalogError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(nf) => CatalogError::NotFound(nf),
            StoreError::AlreadyExists(m) => CatalogError::AlreadyExists(m),
            StoreError::NamespaceNotEmpty(m) => {
                CatalogError::NamespaceNotEmpty(format!("Namespace is not empty: {m}"))
            }
            StoreError::CommitConflict(m) => CatalogError::CommitFailed(m),
            e @ StoreError::StaleEpoch { .. } => CatalogError::Unavailable(format!(
                "this region may not commit: {e}; retry against the primary region"
            )),
            StoreError::Invalid(m) => CatalogError::BadRequest(m),
            StoreError::LocationConflict(m) => CatalogError::BadRequest(m),
            e @ (StoreError::Database(_) | StoreError::Migration(_)) => {
                CatalogError::Internal(e.to_string())
            }
        }
    }
}

impl From<iceberg::Error> for CatalogError {
    fn from(e: iceberg::Error) -> Self {
        match e.kind() {
            iceberg::ErrorKind::CatalogCommitConflicts => CatalogError::CommitFailed(e.to_string()),
            iceberg::ErrorKind::TableNotFound => {
                CatalogError::NotFound(NotFound::Table(e.message().to_string()))
            }
            iceberg::ErrorKind::FeatureUnsupported => CatalogError::Unsupported(e.to_string()),
            _ => CatalogError::BadRequest(e.to_string()),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorModel<'a>,
}

#[derive(Serialize)]
struct ErrorModel<'a> {
    message: String,
    #[serde(rename = "type")]
    kind: &'a str,
    code: u16,
}

impl IntoResponse for CatalogError {
    fn into_response(self) -> Response {
        let (status, kind) = self.status_and_type();
        if crate::api::request_id::is_internal_failure(status) {
            // The detail (storage, SDK, database errors) goes to the log only; the client
            // gets the request id to quote.
            let id = crate::api::request_id::current_or_new();
            tracing::error!(request_id = %id, error = %self, "request failed");
            return crate::api::request_id::internal_error_response(status, &id);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(error = %self, "request refused for now");
        }
        let body = ErrorBody {
            error: ErrorModel {
                message: self.to_string(),
                kind,
                code: status.as_u16(),
            },
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}
