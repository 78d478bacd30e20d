//! The REST API over HTTP, as JSON: requests, answers in the error model, the table schemas
//! requests carry, namespace and table URLs.

use pangolin::testing::TestRegion;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Sends `req`: the status and the body as JSON (Null when empty, a string when not JSON).
pub async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let resp = req.send().await.expect("request sent");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

/// GETs `url`: the status and the JSON body (Null when there is none).
pub async fn get_json(http: &reqwest::Client, url: &str) -> (StatusCode, Value) {
    let resp = http.get(url).send().await.expect("request");
    let status = resp.status();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// `body` is an error of type `kind` with code `status` and a message.
pub fn assert_error(body: &Value, status: StatusCode, kind: &str) {
    assert_eq!(body["error"]["type"], kind, "body: {body}");
    assert_eq!(body["error"]["code"], status.as_u16(), "body: {body}");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
}

/// A table schema: `id` long (required), `data` string.
pub fn schema() -> Value {
    json!({"type": "struct", "schema-id": 0, "fields": [
        {"id": 1, "name": "id", "required": true, "type": "long"},
        {"id": 2, "name": "data", "required": false, "type": "string"}
    ]})
}

/// A table schema with one field, `id` long (required).
pub fn id_schema() -> Value {
    json!({"type": "struct", "schema-id": 0, "fields": [
        {"id": 1, "name": "id", "required": true, "type": "long"}
    ]})
}

/// A createView body: view `name` of [`id_schema`], its one version `select 1` with default
/// namespace `ns`.
pub fn view_body(name: &str, ns: &str) -> Value {
    json!({
        "name": name,
        "schema": id_schema(),
        "view-version": {
            "version-id": 1,
            "schema-id": -1,
            "timestamp-ms": 1_700_000_000_000i64,
            "summary": {"engine-name": "test"},
            "default-namespace": [ns],
            "representations": [{"type": "sql", "sql": "select 1", "dialect": "spark"}]
        }
    })
}

/// Creates namespace `name` through the region's REST API (not through iceberg-rust, so the
/// caller sees the answer's status and headers as they are).
pub async fn post_namespace(
    http: &reqwest::Client,
    region: &TestRegion,
    name: &str,
) -> reqwest::Response {
    http.post(format!("{}/namespaces", region.prefix_url()))
        .json(&serde_json::json!({ "namespace": [name] }))
        .send()
        .await
        .expect("the region answers")
}

/// The REST URL of namespace `ns` (its parts joined by the unit separator).
pub fn ns_url(region: &TestRegion, ns: &[&str]) -> String {
    format!("{}/namespaces/{}", region.prefix_url(), ns.join("%1F"))
}

/// `metadata-location` of a table as loadTable answers it (None: 404).
pub async fn pointer(
    http: &reqwest::Client,
    region: &TestRegion,
    ns: &[&str],
    table: &str,
) -> Option<String> {
    let url = format!("{}/tables/{table}", ns_url(region, ns));
    let (s, body) = get_json(http, &url).await;
    match s {
        StatusCode::OK => Some(body["metadata-location"].as_str().unwrap().to_string()),
        StatusCode::NOT_FOUND => None,
        other => panic!("loadTable {url}: {other} {body}"),
    }
}
