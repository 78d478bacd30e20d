//! The view operations of the Iceberg REST API (`/v1/{prefix}/namespaces/{ns}/views…`,
//! `/v1/{prefix}/views/rename`, `/v1/{prefix}/namespaces/{ns}/register-view`), per
//! `rest-catalog-open-api.yaml`. Error mapping, paging and ETags follow the table handlers.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::{AppState, IcebergJson};
use crate::catalog::model::{ListTablesResponse, RenameTableRequest};
use crate::catalog::parse_namespace;
use crate::catalog::views::{
    CommitViewRequest, CreateViewRequest, LoadedView, RegisterViewRequest,
};
use crate::error::CatalogError;
use crate::store::NotFound;

type ApiResult<T> = Result<T, CatalogError>;
type St = State<Arc<AppState>>;
type Params = Result<Query<HashMap<String, String>>, QueryRejection>;
type NsPath = Result<Path<(String, String)>, PathRejection>;
type ViewPath = Result<Path<(String, String, String)>, PathRejection>;

/// The view operations advertised in `/v1/config` `endpoints`. PyIceberg refuses operations
/// missing there, so this lists exactly the routes of [`router`].
pub const VIEW_ENDPOINTS: &[&str] = &[
    "GET /v1/{prefix}/namespaces/{namespace}/views",
    "POST /v1/{prefix}/namespaces/{namespace}/views",
    "GET /v1/{prefix}/namespaces/{namespace}/views/{view}",
    "HEAD /v1/{prefix}/namespaces/{namespace}/views/{view}",
    "POST /v1/{prefix}/namespaces/{namespace}/views/{view}",
    "DELETE /v1/{prefix}/namespaces/{namespace}/views/{view}",
    "POST /v1/{prefix}/namespaces/{namespace}/register-view",
    "POST /v1/{prefix}/views/rename",
];

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/v1/{prefix}/namespaces/{namespace}/views",
            get(list_views).post(create_view),
        )
        .route(
            "/v1/{prefix}/namespaces/{namespace}/views/{view}",
            get(load_view)
                .head(view_exists)
                .post(replace_view)
                .delete(drop_view),
        )
        .route(
            "/v1/{prefix}/namespaces/{namespace}/register-view",
            post(register_view),
        )
        .route("/v1/{prefix}/views/rename", post(rename_view))
}

use super::iceberg::{
    catalog, etag, identifiers_page, load_table_body, page_request, params, path,
};

/// 200 with a `LoadViewResult` and the view's ETag.
fn view_response(state: &AppState, view: &LoadedView) -> ApiResult<Response> {
    let mut resp = (
        StatusCode::OK,
        load_table_body(
            &state.storage_properties_json,
            Some(&view.record.metadata_location),
            &view.json,
        )?,
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(tag) = HeaderValue::from_str(&etag(&view.record.metadata_location)) {
        h.insert(header::ETAG, tag);
    }
    Ok(resp)
}

// ---- handlers ----------------------------------------------------------------------------

async fn list_views(State(state): St, p: NsPath, q: Params) -> ApiResult<Json<ListTablesResponse>> {
    let (prefix, ns) = path(p)?;
    let ns = parse_namespace(&ns)?;
    let q = params(q)?;
    let cat = catalog(&state, &prefix).await?;
    let page = state
        .catalog
        .list_views(&cat, &ns, &page_request(&q)?)
        .await?;
    Ok(Json(identifiers_page(&ns, page)))
}

async fn create_view(
    State(state): St,
    p: NsPath,
    IcebergJson(req): IcebergJson<CreateViewRequest>,
) -> ApiResult<Response> {
    let (prefix, ns) = path(p)?;
    let ns = parse_namespace(&ns)?;
    let cat = catalog(&state, &prefix).await?;
    let view = state.catalog.create_view(&cat, &ns, req).await?;
    view_response(&state, &view)
}

/// loadView; answers 304 when `If-None-Match` carries the current ETag.
async fn load_view(State(state): St, p: ViewPath, headers: HeaderMap) -> ApiResult<Response> {
    let (prefix, ns, name) = path(p)?;
    let ns = parse_namespace(&ns)?;
    let cat = catalog(&state, &prefix).await?;
    let view = state.catalog.load_view(&cat, &ns, &name).await?;
    let tag = etag(&view.record.metadata_location);
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|inm| inm.split(',').any(|c| c.trim() == tag || c.trim() == "*"));
    if matches {
        let mut resp = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(v) = HeaderValue::from_str(&tag) {
            resp.headers_mut().insert(header::ETAG, v);
        }
        return Ok(resp);
    }
    view_response(&state, &view)
}

/// viewExists: 204, or 404 NoSuchViewException (also when the name is a table).
async fn view_exists(State(state): St, p: ViewPath) -> ApiResult<StatusCode> {
    let (prefix, ns, name) = path(p)?;
    let ns = parse_namespace(&ns)?;
    let cat = catalog(&state, &prefix).await?;
    if state.catalog.view_exists(&cat, &ns, &name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(CatalogError::NotFound(NotFound::View(format!(
            "{}.{name}",
            ns.join(".")
        ))))
    }
}

async fn replace_view(
    State(state): St,
    p: ViewPath,
    IcebergJson(req): IcebergJson<CommitViewRequest>,
) -> ApiResult<Response> {
    let (prefix, ns, name) = path(p)?;
    let ns = parse_namespace(&ns)?;
    if let Some(id) = &req.identifier {
        if id.namespace != ns || id.name != name {
            return Err(CatalogError::bad_request(
                "The identifier in the body does not match the view in the path",
            ));
        }
    }
    let cat = catalog(&state, &prefix).await?;
    let view = state
        .catalog
        .replace_view(&cat, &ns, &name, &req.requirements, &req.updates)
        .await?;
    view_response(&state, &view)
}

async fn drop_view(State(state): St, p: ViewPath) -> ApiResult<StatusCode> {
    let (prefix, ns, name) = path(p)?;
    let ns = parse_namespace(&ns)?;
    let cat = catalog(&state, &prefix).await?;
    state.catalog.drop_view(&cat, &ns, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn register_view(
    State(state): St,
    p: NsPath,
    IcebergJson(req): IcebergJson<RegisterViewRequest>,
) -> ApiResult<Response> {
    let (prefix, ns) = path(p)?;
    let ns = parse_namespace(&ns)?;
    let cat = catalog(&state, &prefix).await?;
    let view = state.catalog.register_view(&cat, &ns, &req).await?;
    view_response(&state, &view)
}

async fn rename_view(
    State(state): St,
    p: Result<Path<String>, PathRejection>,
    IcebergJson(req): IcebergJson<RenameTableRequest>,
) -> ApiResult<StatusCode> {
    let prefix = path(p)?;
    let cat = catalog(&state, &prefix).await?;
    state
        .catalog
        .rename_view(&cat, &req.source, &req.destination)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
