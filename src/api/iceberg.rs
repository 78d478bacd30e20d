//! The Iceberg REST catalog API (`/v1/...`), per `rest-catalog-open-api.yaml`.
//! `{prefix}` is the catalog name; namespaces in paths are joined by 0x1F (`%1F`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::{BufMut, Bytes, BytesMut};
use sha2::Digest;

use super::{AppState, IcebergJson};
use crate::catalog::model::{
    CommitTableRequest, CommitTransactionRequest, CreateNamespaceRequest, CreateTableRequest,
    ListNamespacesResponse, ListTablesResponse, NamespaceResponse, RegisterTableRequest,
    RenameTableRequest, TableIdentifier, UpdateNamespacePropertiesRequest,
    UpdateNamespacePropertiesResponse,
};
use crate::catalog::{parse_namespace, CachedMetadata, CreatedTable, LoadedTable, ResolvedCatalog};
use crate::error::CatalogError;
use crate::store::{Page, PageRequest};

type ApiResult<T> = Result<T, CatalogError>;
type St = State<Arc<AppState>>;
type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

/// Every operation this server implements, as advertised in `/v1/config` `endpoints`.
/// PyIceberg refuses operations missing here, so it must stay exact.
pub const ENDPOINTS: &[&str] = &[
    "GET /v1/{prefix}/namespaces",
    "POST /v1/{prefix}/namespaces",
    "GET /v1/{prefix}/namespaces/{namespace}",
    "HEAD /v1/{prefix}/namespaces/{namespace}",
    "DELETE /v1/{prefix}/namespaces/{namespace}",
    "POST /v1/{prefix}/namespaces/{namespace}/properties",
    "GET /v1/{prefix}/namespaces/{namespace}/tables",
    "POST /v1/{prefix}/namespaces/{namespace}/tables",
    "GET /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "HEAD /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "POST /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "DELETE /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "POST /v1/{prefix}/namespaces/{namespace}/register",
    "POST /v1/{prefix}/namespaces/{namespace}/tables/{table}/metrics",
    "GET /v1/{prefix}/namespaces/{namespace}/tables/{table}/credentials",
    "POST /v1/{prefix}/tables/rename",
    "POST /v1/{prefix}/transactions/commit",
];

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/config", get(get_config))
        .route(
            "/v1/{prefix}/namespaces",
            get(list_namespaces).post(create_namespace),
        )
        .route(
            "/v1/{prefix}/namespaces/{namespace}",
            get(load_namespace)
                .head(namespace_exists)
                .delete(drop_namespace),
        )
        .route(
            "/v1/{prefix}/namespaces/{namespace}/properties",
            post(update_namespace_properties),
        )
        .route(
            "/v1/{prefix}/namespaces/{namespace}/tables",
            get(list_tables).post(create_table),
        )
        .route(
            "/v1/{prefix}/namespaces/{namespace}/tables/{table}",
            get(load_table)
                .head(table_exists)
                .post(update_table)
                .delete(drop_table),
        )
        .route(
            "/v1/{prefix}/namespaces/{namespace}/register",
            post(register_table),
        )
        .route(
            "/v1/{prefix}/namespaces/{namespace}/tables/{table}/metrics",
            post(report_metrics),
        )
        .route(
            "/v1/{prefix}/namespaces/{namespace}/tables/{table}/credentials",
            get(load_credentials),
        )
        .route("/v1/{prefix}/tables/rename", post(rename_table))
        // Server-side scan planning is not offered (and not advertised in `endpoints`).
        .route(
            "/v1/{prefix}/namespaces/{namespace}/tables/{table}/plan",
            post(scan_planning_unsupported),
        )
        .route(
            "/v1/{prefix}/namespaces/{namespace}/tables/{table}/plan/{plan_id}",
            get(scan_planning_unsupported).delete(scan_planning_unsupported),
        )
        .route(
            "/v1/{prefix}/namespaces/{namespace}/tables/{table}/tasks",
            post(scan_planning_unsupported),
        )
        .route("/v1/{prefix}/transactions/commit", post(commit_transaction))
}

// ---- parameter parsing ------------------------------------------------------------------

pub(super) fn path<T>(p: Result<Path<T>, PathRejection>) -> ApiResult<T> {
    p.map(|Path(v)| v)
        .map_err(|e| CatalogError::bad_request(format!("Invalid path: {e}")))
}

pub(super) fn params(q: Params) -> ApiResult<HashMap<String, String>> {
    q.map(|Query(v)| v)
        .map_err(|e| CatalogError::bad_request(format!("Invalid query: {e}")))
}

/// `pageToken` / `pageSize`: paging only when `pageSize` is given. Tokens are hex so any
/// name survives the round trip through a URL.
pub(super) fn page_request(q: &HashMap<String, String>) -> ApiResult<PageRequest> {
    let size = match q.get("pageSize").filter(|s| !s.is_empty()) {
        Some(s) => match s.parse::<u32>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                return Err(CatalogError::bad_request(format!(
                    "Invalid pageSize {s:?}: must be a positive integer"
                )))
            }
        },
        None => None,
    };
    let token = match q.get("pageToken").filter(|s| !s.is_empty()) {
        Some(t) => Some(
            hex::decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| CatalogError::bad_request(format!("Invalid pageToken {t:?}")))?,
        ),
        None => None,
    };
    Ok(PageRequest { token, size })
}

fn encode_token(t: Option<String>) -> Option<String> {
    t.map(hex::encode)
}

fn parse_bool(q: &HashMap<String, String>, key: &str) -> ApiResult<bool> {
    match q.get(key).map(|v| v.to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) if v == "true" => Ok(true),
        Some(v) if v == "false" => Ok(false),
        Some(v) => Err(CatalogError::bad_request(format!(
            "Invalid {key} {v:?}: expected true or false"
        ))),
    }
}

pub(super) async fn catalog(state: &AppState, prefix: &str) -> ApiResult<Arc<ResolvedCatalog>> {
    state.catalog.resolve(prefix).await
}

fn json_response(status: StatusCode, body: Bytes, etag: Option<&str>) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(tag) = etag.and_then(|t| HeaderValue::from_str(t).ok()) {
        h.insert(header::ETAG, tag);
    }
    resp
}

/// Strong ETag of a table state: a hash of its metadata location (files are immutable).
pub(super) fn etag(metadata_location: &str) -> String {
    let digest = sha2::Sha256::digest(metadata_location.as_bytes());
    format!("\"{}\"", hex::encode(&digest[..16]))
}

// ---- config ------------------------------------------------------------------------------

async fn get_config(State(state): St, q: Params) -> ApiResult<Response> {
    let q = params(q)?;
    let name = q
        .get("warehouse")
        .filter(|w| !w.is_empty())
        .cloned()
        .unwrap_or_else(|| state.catalog.default_catalog().to_string());
    let cat = catalog(&state, &name).await.map_err(|e| match e {
        CatalogError::NotFound(_) => {
            CatalogError::NotFound(crate::store::NotFound::Warehouse(name.clone()))
        }
        e => e,
    })?;
    let mut overrides = state.storage_properties.clone();
    overrides.insert("prefix".into(), cat.catalog.name.clone());
    let body = serde_json::json!({
        // Capabilities PyIceberg reads from catalog properties.
        "defaults": {
            "supports_slash_in_identifier": "true",
            "supports_dot_in_identifier": "true",
            "supports_nested_namespaces": "true",
            "supports_purge_table": "true",
            "supports_atomic_concurrent_updates": "true",
            "supports_schema_evolution": "true",
        },
        "overrides": overrides,
        "endpoints": ENDPOINTS.iter().chain(super::views::VIEW_ENDPOINTS).collect::<Vec<_>>(),
        "idempotency-key-lifetime": state.idempotency.lifetime_iso8601(),
    });
    Ok(Json(body).into_response())
}

// ---- namespaces --------------------------------------------------------------------------

async fn list_namespaces(
    State(state): St,
    p: Result<Path<String>, PathRejection>,
    q: Params,
) -> ApiResult<Json<ListNamespacesResponse>> {
    let prefix = path(p)?;
    let q = params(q)?;
    let cat = catalog(&state, &prefix).await?;
    let parent = match q.get("parent").filter(|p| !p.is_empty()) {
        Some(p) => Some(parse_namespace(p)?),
        None => None,
    };
    let page = state
        .catalog
        .list_namespaces(&cat, parent.as_deref(), &page_request(&q)?)
        .await?;
    Ok(Json(ListNamespacesResponse {
        namespaces: page.items,
        next_page_token: encode_token(page.next_token),
    }))
}

async fn create_namespace(
    State(state): St,
    p: Result<Path<String>, PathRejection>,
    IcebergJson(req): IcebergJson<CreateNamespaceRequest>,
) -> ApiResult<Json<NamespaceResponse>> {
    let prefix = path(p)?;
    let cat = catalog(&state, &prefix).await?;
    let properties = state
        .catalog
        .create_namespace(&cat, &req.namespace, &req.properties)
        .await?;
    Ok(Json(NamespaceResponse {
        namespace: req.namespace,
        properties,
    }))
}

async fn load_namespace(
    State(state): St,
    p: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Json<NamespaceResponse>> {
    let (prefix, ns) = path(p)?;
    let ns = parse_namespace(&ns)?;
    let cat = catalog(&state, &prefix).await?;
    let properties = state.catalog.load_namespace(&cat, &ns).await?;
    Ok(Json(NamespaceResponse {
        namespace: ns,
        properties,
    }))
}

async fn namespace_exists(
    State(state): St,
    p: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<StatusCode> {
    let (prefix, ns) = path(p)?;
    let ns = parse_namespace(&ns)?;
    let cat = catalog(&state, &prefix).await?;
    state.catalog.load_namespace(&cat, &ns).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn drop_namespace(
    State(state): St,
    p: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<StatusCode> {
    let (prefix, ns) = path(p)?;
    let ns = parse_namespace(&ns)?;
    let cat = catalog(&state, &prefix).await?;
    state.catalog.drop_namespace(&cat, &ns).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn update_namespace_properties(
    State(state): St,
    p: Result<Path<(String, String)>, PathRejection>,
    IcebergJson(req): IcebergJson<UpdateNamespacePropertiesRequest>,
) -> ApiResult<Json<UpdateNamespacePropertiesResponse>> {
    let (prefix, ns) = path(p)?;
    let ns = parse_namespace(&ns)?;
    let cat = catalog(&state, &prefix).await?;
    let u = state
        .catalog
        .update_namespace_properties(&cat, &ns, &req.removals, &req.updates)
        .await?;
    Ok(Json(UpdateNamespacePropertiesResponse {
        updated: u.updated,
        removed: u.removed,
        missing: u.missing,
    }))
}

// ---- tables ------------------------------------------------------------------------------

async fn list_tables(
    State(state): St,
    p: Result<Path<(String, String)>, PathRejection>,
    q: Params,
) -> ApiResult<Json<ListTablesResponse>> {
    let (prefix, ns) = path(p)?;
    let ns = parse_namespace(&ns)?;
    let q = params(q)?;
    let cat = catalog(&state, &prefix).await?;
    let page = state
        .catalog
        .list_tables(&cat, &ns, &page_request(&q)?)
        .await?;
    Ok(Json(identifiers_page(&ns, page)))
}

/// A page of table or view names as `ListTablesResponse` identifiers.
pub(super) fn identifiers_page(ns: &[String], page: Page<String>) -> ListTablesResponse {
    ListTablesResponse {
        identifiers: page
            .items
            .into_iter()
            .map(|name| TableIdentifier {
                namespace: ns.to_vec(),
                name,
            })
            .collect(),
        next_page_token: encode_token(page.next_token),
    }
}

/// `LoadTableResult` assembled from cached bytes: no re-serialization of the metadata.
pub(super) fn load_table_body(
    config: &[u8],
    metadata_location: Option<&str>,
    metadata_json: &[u8],
) -> ApiResult<Bytes> {
    let location = match metadata_location {
        Some(l) => serde_json::to_vec(l).map_err(|e| CatalogError::Internal(e.to_string()))?,
        None => b"null".to_vec(),
    };
    let mut b = BytesMut::with_capacity(metadata_json.len() + location.len() + config.len() + 64);
    b.put_slice(b"{\"metadata-location\":");
    b.put_slice(&location);
    b.put_slice(b",\"metadata\":");
    b.put_slice(metadata_json);
    b.put_slice(b",\"config\":");
    b.put_slice(config);
    b.put_slice(b"}");
    Ok(b.freeze())
}

/// Metadata JSON restricted to the snapshots that refs point at (`snapshots=refs`).
fn metadata_with_referenced_snapshots(m: &CachedMetadata) -> ApiResult<Vec<u8>> {
    let mut v: serde_json::Value =
        serde_json::from_slice(&m.json).map_err(|e| CatalogError::Internal(e.to_string()))?;
    let mut referenced: std::collections::HashSet<i64> = v
        .get("refs")
        .and_then(|r| r.as_object())
        .map(|refs| {
            refs.values()
                .filter_map(|r| r.get("snapshot-id").and_then(|id| id.as_i64()))
                .collect()
        })
        .unwrap_or_default();
    if let Some(id) = v.get("current-snapshot-id").and_then(|id| id.as_i64()) {
        referenced.insert(id);
    }
    if let Some(serde_json::Value::Array(snaps)) = v.get_mut("snapshots") {
        snaps.retain(|s| {
            s.get("snapshot-id")
                .and_then(|id| id.as_i64())
                .is_some_and(|id| referenced.contains(&id))
        });
    }
    serde_json::to_vec(&v).map_err(|e| CatalogError::Internal(e.to_string()))
}

fn loaded_table_response(config: &[u8], t: &LoadedTable) -> ApiResult<Response> {
    let body = load_table_body(config, Some(&t.record.metadata_location), &t.metadata.json)?;
    Ok(json_response(
        StatusCode::OK,
        body,
        Some(&etag(&t.record.metadata_location)),
    ))
}

async fn create_table(
    State(state): St,
    p: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    IcebergJson(req): IcebergJson<CreateTableRequest>,
) -> ApiResult<Response> {
    let (prefix, ns) = path(p)?;
    let ns = parse_namespace(&ns)?;
    let cat = catalog(&state, &prefix).await?;
    let config = state.vended_config(&headers);
    match state.catalog.create_table(&cat, &ns, req).await? {
        CreatedTable::Committed(t) => loaded_table_response(config, &t),
        CreatedTable::Staged(m) => Ok(json_response(
            StatusCode::OK,
            load_table_body(config, None, &m.json)?,
            None,
        )),
    }
}

async fn load_table(
    State(state): St,
    p: Result<Path<(String, String, String)>, PathRejection>,
    q: Params,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (prefix, ns, table) = path(p)?;
    let ns = parse_namespace(&ns)?;
    let q = params(q)?;
    let cat = catalog(&state, &prefix).await?;
    let t = state.catalog.load_table(&cat, &ns, &table).await?;
    let tag = etag(&t.record.metadata_location);
    if let Some(inm) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        if inm.split(',').any(|c| c.trim() == tag || c.trim() == "*") {
            let mut resp = StatusCode::NOT_MODIFIED.into_response();
            if let Ok(v) = HeaderValue::from_str(&tag) {
                resp.headers_mut().insert(header::ETAG, v);
            }
            return Ok(resp);
        }
    }
    match q.get("snapshots").map(String::as_str) {
        None | Some("all") => loaded_table_response(&state.storage_properties_json, &t),
        Some("refs") => {
            let json = metadata_with_referenced_snapshots(&t.metadata)?;
            let body = load_table_body(
                &state.storage_properties_json,
                Some(&t.record.metadata_location),
                &json,
            )?;
            Ok(json_response(StatusCode::OK, body, Some(&tag)))
        }
        Some(other) => Err(CatalogError::bad_request(format!(
            "Invalid snapshots {other:?}: expected all or refs"
        ))),
    }
}

async fn table_exists(
    State(state): St,
    p: Result<Path<(String, String, String)>, PathRejection>,
) -> ApiResult<StatusCode> {
    let (prefix, ns, table) = path(p)?;
    let ns = parse_namespace(&ns)?;
    let cat = catalog(&state, &prefix).await?;
    if state.catalog.table_exists(&cat, &ns, &table).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(CatalogError::NotFound(crate::store::NotFound::Table(
            format!("{}.{table}", ns.join(".")),
        )))
    }
}

async fn update_table(
    State(state): St,
    p: Result<Path<(String, String, String)>, PathRejection>,
    headers: HeaderMap,
    IcebergJson(req): IcebergJson<CommitTableRequest>,
) -> ApiResult<Response> {
    let (prefix, ns, table) = path(p)?;
    let ns = parse_namespace(&ns)?;
    if let Some(id) = &req.identifier {
        if id.namespace != ns || id.name != table {
            return Err(CatalogError::bad_request(
                "The identifier in the body does not match the table in the path",
            ));
        }
    }
    let cat = catalog(&state, &prefix).await?;
    let t = state
        .catalog
        .commit_table(
            &cat,
            &ns,
            &table,
            req.requirements,
            req.updates,
            state.origin_region(&headers),
        )
        .await?;
    let location = serde_json::to_vec(&t.record.metadata_location)
        .map_err(|e| CatalogError::Internal(e.to_string()))?;
    let mut b = BytesMut::with_capacity(t.metadata.json.len() + location.len() + 40);
    b.put_slice(b"{\"metadata-location\":");
    b.put_slice(&location);
    b.put_slice(b",\"metadata\":");
    b.put_slice(&t.metadata.json);
    b.put_slice(b"}");
    Ok(json_response(
        StatusCode::OK,
        b.freeze(),
        Some(&etag(&t.record.metadata_location)),
    ))
}

async fn drop_table(
    State(state): St,
    p: Result<Path<(String, String, String)>, PathRejection>,
    q: Params,
) -> ApiResult<StatusCode> {
    let (prefix, ns, table) = path(p)?;
    let ns = parse_namespace(&ns)?;
    let q = params(q)?;
    let purge = parse_bool(&q, "purgeRequested")?;
    let cat = catalog(&state, &prefix).await?;
    state.catalog.drop_table(&cat, &ns, &table, purge).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn register_table(
    State(state): St,
    p: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    IcebergJson(req): IcebergJson<RegisterTableRequest>,
) -> ApiResult<Response> {
    let (prefix, ns) = path(p)?;
    let ns = parse_namespace(&ns)?;
    let cat = catalog(&state, &prefix).await?;
    let t = state
        .catalog
        .register_table(&cat, &ns, &req.name, &req.metadata_location, req.overwrite)
        .await?;
    loaded_table_response(state.vended_config(&headers), &t)
}

async fn rename_table(
    State(state): St,
    p: Result<Path<String>, PathRejection>,
    IcebergJson(req): IcebergJson<RenameTableRequest>,
) -> ApiResult<StatusCode> {
    let prefix = path(p)?;
    let cat = catalog(&state, &prefix).await?;
    state
        .catalog
        .rename_table(&cat, &req.source, &req.destination)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Stores a scan or commit report (the newest `catalog.metrics_reports_retention` per
/// catalog are kept; the management API lists them). The body must be an object whose
/// `report-type` is `scan-report` or `commit-report`, about an existing table.
async fn report_metrics(
    State(state): St,
    p: Result<Path<(String, String, String)>, PathRejection>,
    IcebergJson(report): IcebergJson<serde_json::Map<String, serde_json::Value>>,
) -> ApiResult<StatusCode> {
    let (prefix, ns, table) = path(p)?;
    let ns = parse_namespace(&ns)?;
    let report_type = match report.get("report-type") {
        Some(serde_json::Value::String(t)) if t == "scan-report" || t == "commit-report" => {
            t.clone()
        }
        Some(other) => {
            return Err(CatalogError::bad_request(format!(
                "Invalid report-type {other}: expected \"scan-report\" or \"commit-report\""
            )))
        }
        None => {
            return Err(CatalogError::bad_request(
                "Invalid metrics report: missing report-type",
            ))
        }
    };
    let cat = catalog(&state, &prefix).await?;
    if !state.catalog.table_exists(&cat, &ns, &table).await? {
        return Err(CatalogError::NotFound(crate::store::NotFound::Table(
            format!("{}.{table}", ns.join(".")),
        )));
    }
    tracing::debug!(table = %table, kind = %report_type, "metrics report");
    if state.metrics_reports_retention > 0 {
        let record = crate::store::MetricsReport {
            catalog_id: cat.catalog.id.clone(),
            namespace: ns,
            table,
            report_type,
            report: serde_json::Value::Object(report),
            received_ms: crate::clock::now_ms(),
        };
        state
            .catalog
            .store()
            .record_metrics_report(&record, state.metrics_reports_retention)
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn commit_transaction(
    State(state): St,
    p: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    IcebergJson(req): IcebergJson<CommitTransactionRequest>,
) -> ApiResult<StatusCode> {
    let prefix = path(p)?;
    let cat = catalog(&state, &prefix).await?;
    let changes = req
        .table_changes
        .into_iter()
        .map(|c| {
            let id = c.identifier.ok_or_else(|| {
                CatalogError::bad_request("Every table change of a transaction needs an identifier")
            })?;
            Ok((id, c.requirements, c.updates))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    state
        .catalog
        .commit_transaction(&cat, changes, state.origin_region(&headers))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// loadCredentials: the region's storage settings for the table's location.
async fn load_credentials(
    State(state): St,
    p: Result<Path<(String, String, String)>, PathRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let (prefix, ns, table) = path(p)?;
    let ns = parse_namespace(&ns)?;
    let cat = catalog(&state, &prefix).await?;
    let t = state.catalog.load_table(&cat, &ns, &table).await?;
    Ok(Json(serde_json::json!({
        "storage-credentials": [{
            "prefix": t.metadata.metadata.location(),
            "config": state.storage_properties,
        }]
    })))
}

/// planTableScan, fetchPlanningResult, cancelPlanning, fetchScanTasks: clients plan scans
/// themselves.
async fn scan_planning_unsupported() -> CatalogError {
    CatalogError::Unsupported(
        "Server-side scan planning is not supported; plan the scan in the client".into(),
    )
}
