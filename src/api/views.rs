//! The view operations of the Iceberg REST API (`/v1/{prefix}/namespaces/{ns}/views…`).

use std::sync::Arc;

use axum::Router;

use super::AppState;

/// The view operations advertised in `/v1/config` `endpoints`.
pub const VIEW_ENDPOINTS: &[&str] = &[];

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
}
