//! The view operations of the Iceberg REST API against an in-process region: create, load,
//! list, exists, replace (commit path), rename, drop, register; tables and views sharing one
//! name space; versioned metadata files in the bucket; advertised endpoints.

use pangolin::testing::TestRegion;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{assert_error, now_ms, schema, send, store_of};

/// A view version as clients send it (`schema-id` -1: the schema added with it).
fn view_version(id: i64, sql: &str) -> Value {
    json!({
        "version-id": id,
        "schema-id": -1,
        "timestamp-ms": now_ms(),
        "summary": {"engine-name": "test"},
        "default-namespace": ["ns"],
        "representations": [{"type": "sql", "sql": sql, "dialect": "spark"}]
    })
}

struct Fixture {
    region: TestRegion,
    http: reqwest::Client,
}

impl Fixture {
    async fn new() -> Fixture {
        Fixture {
            region: TestRegion::start().await.expect("region starts"),
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.region.prefix_url(), path)
    }

    async fn create_namespace(&self, ns: &str) {
        let (s, b) = send(
            self.http
                .post(self.url("/namespaces"))
                .json(&json!({"namespace": [ns]})),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }

    async fn try_create_view(&self, ns: &str, name: &str) -> (StatusCode, Value) {
        send(
            self.http
                .post(self.url(&format!("/namespaces/{ns}/views")))
                .json(&json!({
                    "name": name,
                    "schema": schema(),
                    "view-version": view_version(1, "select * from ns.t"),
                    "properties": {"comment": "first"}
                })),
        )
        .await
    }

    async fn create_view(&self, ns: &str, name: &str) -> Value {
        let (s, b) = self.try_create_view(ns, name).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b
    }

    async fn create_table(&self, ns: &str, name: &str) -> (StatusCode, Value) {
        send(
            self.http
                .post(self.url(&format!("/namespaces/{ns}/tables")))
                .json(&json!({"name": name, "schema": schema()})),
        )
        .await
    }

    async fn load_view(&self, ns: &str, name: &str) -> (StatusCode, Value) {
        send(
            self.http
                .get(self.url(&format!("/namespaces/{ns}/views/{name}"))),
        )
        .await
    }

    async fn load_table(&self, ns: &str, name: &str) -> (StatusCode, Value) {
        send(
            self.http
                .get(self.url(&format!("/namespaces/{ns}/tables/{name}"))),
        )
        .await
    }

    async fn head(&self, path: &str) -> StatusCode {
        self.http
            .head(self.url(path))
            .send()
            .await
            .expect("request sent")
            .status()
    }

    async fn replace(&self, ns: &str, name: &str, body: Value) -> (StatusCode, Value) {
        send(
            self.http
                .post(self.url(&format!("/namespaces/{ns}/views/{name}")))
                .json(&body),
        )
        .await
    }

    async fn rename(&self, from: (&str, &str), to: (&str, &str)) -> (StatusCode, Value) {
        send(self.http.post(self.url("/views/rename")).json(&json!({
            "source": {"namespace": [from.0], "name": from.1},
            "destination": {"namespace": [to.0], "name": to.1}
        })))
        .await
    }

    async fn objects(&self) -> pangolin::storage::ObjectStore {
        store_of(&self.region).await
    }
}

/// A replaceView that adds a new schema and version and makes it current.
fn new_version_commit(uuid: &Value, sql: &str) -> Value {
    json!({
        "requirements": [{"type": "assert-view-uuid", "uuid": uuid}],
        "updates": [
            {"action": "add-schema", "schema": {"type": "struct", "schema-id": 1, "fields": [
                {"id": 1, "name": "id", "required": true, "type": "long"}
            ]}},
            {"action": "add-view-version", "view-version": view_version(2, sql)},
            {"action": "set-current-view-version", "view-version-id": -1}
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_load_exists_and_drop() {
    let f = Fixture::new().await;
    f.create_namespace("ns").await;
    let created = f.create_view("ns", "v").await;
    let loc0 = created["metadata-location"].as_str().unwrap().to_string();
    assert!(loc0.starts_with("s3://demo/"), "{loc0}");
    assert!(loc0.contains("/metadata/00000-"), "{loc0}");
    assert!(loc0.ends_with(".metadata.json"), "{loc0}");
    assert_eq!(
        created["config"]["s3.endpoint"],
        f.region.s3_endpoint.as_str()
    );
    let m = &created["metadata"];
    assert_eq!(m["format-version"], 1);
    assert_eq!(m["current-version-id"], 1);
    assert_eq!(m["properties"]["comment"], "first");
    assert_eq!(m["versions"][0]["schema-id"], 0, "{m}");
    assert_eq!(
        m["versions"][0]["representations"][0]["sql"],
        "select * from ns.t"
    );
    assert!(m["view-uuid"].is_string());

    let resp = f
        .http
        .get(f.url("/namespaces/ns/views/v"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let tag = resp.headers()["etag"].to_str().unwrap().to_string();
    let loaded: Value = resp.json().await.unwrap();
    assert_eq!(loaded["metadata-location"], loc0.as_str());
    assert_eq!(loaded["metadata"], created["metadata"]);
    assert_eq!(loaded["config"]["s3.region"], "us-east-1");
    let resp = f
        .http
        .get(f.url("/namespaces/ns/views/v"))
        .header("If-None-Match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);

    assert_eq!(
        f.head("/namespaces/ns/views/v").await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        f.head("/namespaces/ns/views/nope").await,
        StatusCode::NOT_FOUND
    );

    let (s, b) = f.try_create_view("ns", "v").await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_error(&b, s, "AlreadyExistsException");
    assert_eq!(b["error"]["message"], "View already exists: ns.v");

    let (s, _) = send(f.http.delete(f.url("/namespaces/ns/views/v"))).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = f.load_view("ns", "v").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&b, s, "NoSuchViewException");
    assert_eq!(b["error"]["message"], "View does not exist: ns.v");
    let (s, b) = send(f.http.delete(f.url("/namespaces/ns/views/v"))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&b, s, "NoSuchViewException");
    assert_eq!(
        f.head("/namespaces/ns/views/v").await,
        StatusCode::NOT_FOUND
    );
    f.region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_and_missing_namespaces() {
    let f = Fixture::new().await;
    let (s, b) = f.try_create_view("nope", "v").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&b, s, "NoSuchNamespaceException");
    let (s, b) = send(f.http.get(f.url("/namespaces/nope/views"))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&b, s, "NoSuchNamespaceException");
    let (s, b) = f.load_view("nope", "v").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&b, s, "NoSuchViewException");

    f.create_namespace("ns").await;
    let mut no_sql = view_version(1, "x");
    no_sql["representations"] = json!([]);
    for body in [
        json!({"name": "v", "schema": schema()}),
        json!({"name": "", "schema": schema(), "view-version": view_version(1, "select 1")}),
        json!({"name": "v", "schema": schema(), "view-version": no_sql}),
    ] {
        let (s, b) = send(f.http.post(f.url("/namespaces/ns/views")).json(&body)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body} -> {b}");
        assert_error(&b, s, "BadRequestException");
    }
    let (s, b) = f
        .replace("ns", "missing", json!({"requirements": [], "updates": []}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&b, s, "NoSuchViewException");
    let (s, b) = send(f.http.get(f.url("/namespaces/ns/views?pageSize=0"))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&b, s, "BadRequestException");
    f.region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_views_pages_and_excludes_tables() {
    let f = Fixture::new().await;
    f.create_namespace("ns").await;
    for name in ["a", "b", "c", "d", "e"] {
        f.create_view("ns", name).await;
    }
    let (s, _) = f.create_table("ns", "t").await;
    assert_eq!(s, StatusCode::OK);

    let (s, b) = send(f.http.get(f.url("/namespaces/ns/views"))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let names: Vec<&str> = b["identifiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "c", "d", "e"]);
    assert_eq!(b["identifiers"][0]["namespace"], json!(["ns"]));
    assert!(b["next-page-token"].is_null());

    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = f.url("/namespaces/ns/views?pageSize=2");
        if let Some(t) = &token {
            url.push_str(&format!("&pageToken={t}"));
        }
        let (s, b) = send(f.http.get(url)).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        pages += 1;
        let ids = b["identifiers"].as_array().unwrap();
        assert!(ids.len() <= 2);
        seen.extend(ids.iter().map(|i| i["name"].as_str().unwrap().to_string()));
        match b["next-page-token"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);
    assert!((3..=4).contains(&pages), "{pages} pages");

    let (_, b) = send(f.http.get(f.url("/namespaces/ns/tables"))).await;
    assert_eq!(
        b["identifiers"],
        json!([{"namespace": ["ns"], "name": "t"}])
    );
    f.region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replace_adds_a_version_and_checks_the_view_uuid() {
    let f = Fixture::new().await;
    f.create_namespace("ns").await;
    let created = f.create_view("ns", "v").await;
    let uuid = created["metadata"]["view-uuid"].clone();
    let loc0 = created["metadata-location"].as_str().unwrap().to_string();

    let (s, b) = f
        .replace(
            "ns",
            "v",
            new_version_commit(&json!("00000000-0000-0000-0000-000000000000"), "select 2"),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_error(&b, s, "CommitFailedException");
    let (_, loaded) = f.load_view("ns", "v").await;
    assert_eq!(loaded["metadata-location"], loc0.as_str());

    for invalid in [
        json!({"updates": [{"action": "set-current-view-version", "view-version-id": 7}]}),
        json!({"updates": [{"action": "assign-uuid", "uuid": "00000000-0000-0000-0000-000000000001"}]}),
        json!({"updates": [{"action": "add-snapshot", "snapshot": {}}]}),
        json!({"requirements": [{"type": "assert-table-uuid", "uuid": uuid}], "updates": []}),
        json!({"identifier": {"namespace": ["ns"], "name": "other"}, "updates": []}),
    ] {
        let (s, b) = f.replace("ns", "v", invalid.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{invalid} -> {b}");
        assert_error(&b, s, "BadRequestException");
    }
    let (_, loaded) = f.load_view("ns", "v").await;
    assert_eq!(loaded["metadata-location"], loc0.as_str());

    let (s, b) = f
        .replace("ns", "v", new_version_commit(&uuid, "select 2"))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let loc1 = b["metadata-location"].as_str().unwrap().to_string();
    assert!(loc1.contains("/metadata/00001-"), "{loc1}");
    let m = &b["metadata"];
    assert_eq!(m["view-uuid"], uuid);
    assert_eq!(m["current-version-id"], 2);
    assert_eq!(m["versions"].as_array().unwrap().len(), 2);
    assert_eq!(m["version-log"].as_array().unwrap().len(), 2);
    let current = m["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version-id"] == 2)
        .unwrap();
    assert_eq!(current["schema-id"], 1);
    assert_eq!(current["representations"][0]["sql"], "select 2");
    assert!(b["config"].is_object());

    let (s, b) = f
        .replace(
            "ns",
            "v",
            json!({"requirements": [{"type": "assert-view-uuid", "uuid": uuid}],
                   "updates": [{"action": "set-properties", "updates": {"owner": "me"}},
                               {"action": "remove-properties", "removals": ["comment"]}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["metadata"]["properties"], json!({"owner": "me"}));
    let loc2 = b["metadata-location"].as_str().unwrap().to_string();
    assert!(loc2.contains("/metadata/00002-"), "{loc2}");

    // An empty commit changes nothing and writes no file.
    let (s, b) = f.replace("ns", "v", json!({"updates": []})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["metadata-location"], loc2.as_str());

    let (_, loaded) = f.load_view("ns", "v").await;
    assert_eq!(loaded["metadata-location"], loc2.as_str());
    let location = loaded["metadata"]["location"].as_str().unwrap();
    let mut files = f
        .objects()
        .await
        .list(&format!("{location}/metadata/"))
        .await
        .unwrap();
    files.sort();
    assert_eq!(files, [loc0, loc1, loc2], "failed commits leave no file");
    f.region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_replaces_lose_no_update() {
    let f = Fixture::new().await;
    f.create_namespace("ns").await;
    let created = f.create_view("ns", "v").await;
    let uuid = created["metadata"]["view-uuid"].clone();
    let writers = 8;
    let mut tasks = Vec::new();
    for i in 0..writers {
        let http = f.http.clone();
        let url = f.url("/namespaces/ns/views/v");
        let body = json!({
            "requirements": [{"type": "assert-view-uuid", "uuid": uuid}],
            "updates": [{"action": "set-properties", "updates": {format!("k{i}"): "v"}}]
        });
        tasks.push(tokio::spawn(async move {
            send(http.post(url).json(&body)).await
        }));
    }
    for t in tasks {
        let (s, b) = t.await.unwrap();
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let (_, loaded) = f.load_view("ns", "v").await;
    for i in 0..writers {
        assert_eq!(loaded["metadata"]["properties"][format!("k{i}")], "v");
    }
    let loc = loaded["metadata-location"].as_str().unwrap();
    assert!(loc.contains(&format!("/metadata/{writers:05}-")), "{loc}");
    f.region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tables_and_views_share_one_name_space() {
    let f = Fixture::new().await;
    f.create_namespace("ns").await;
    let (s, _) = f.create_table("ns", "t").await;
    assert_eq!(s, StatusCode::OK);
    f.create_view("ns", "v").await;

    let (s, b) = f.try_create_view("ns", "t").await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_error(&b, s, "AlreadyExistsException");
    assert_eq!(
        b["error"]["message"],
        "Table with same name already exists: ns.t"
    );
    let (s, b) = f.create_table("ns", "v").await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_error(&b, s, "AlreadyExistsException");
    assert_eq!(
        b["error"]["message"],
        "View with same name already exists: ns.v"
    );

    // Each endpoint sees only its own kind.
    let (s, b) = f.load_table("ns", "v").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&b, s, "NoSuchTableException");
    let (s, b) = f.load_view("ns", "t").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&b, s, "NoSuchViewException");
    assert_eq!(b["error"]["message"], "View does not exist: ns.t");
    assert_eq!(
        f.head("/namespaces/ns/tables/v").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        f.head("/namespaces/ns/views/t").await,
        StatusCode::NOT_FOUND
    );
    let (s, b) = send(f.http.delete(f.url("/namespaces/ns/views/t"))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&b, s, "NoSuchViewException");
    let (s, b) = send(f.http.delete(f.url("/namespaces/ns/tables/v"))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&b, s, "NoSuchTableException");
    let (s, b) = f
        .replace("ns", "t", json!({"requirements": [], "updates": []}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&b, s, "NoSuchViewException");

    // Renames check the kind of the source and the whole name space at the destination.
    let (s, b) = f.rename(("ns", "t"), ("ns", "t2")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&b, s, "NoSuchViewException");
    let (s, b) = f.rename(("ns", "v"), ("ns", "t")).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_error(&b, s, "AlreadyExistsException");
    let (s, b) = send(f.http.post(f.url("/tables/rename")).json(&json!({
        "source": {"namespace": ["ns"], "name": "t"},
        "destination": {"namespace": ["ns"], "name": "v"}
    })))
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_error(&b, s, "AlreadyExistsException");

    // Both survived all of that.
    assert_eq!(f.load_table("ns", "t").await.0, StatusCode::OK);
    assert_eq!(f.load_view("ns", "v").await.0, StatusCode::OK);
    f.region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rename_moves_the_view_and_checks_the_destination() {
    let f = Fixture::new().await;
    f.create_namespace("ns").await;
    f.create_namespace("other").await;
    let created = f.create_view("ns", "v").await;

    let (s, b) = f.rename(("ns", "v"), ("missing", "w")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&b, s, "NoSuchNamespaceException");
    let (s, b) = f.rename(("ns", "nope"), ("ns", "w")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&b, s, "NoSuchViewException");

    let (s, b) = f.rename(("ns", "v"), ("other", "w")).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    assert_eq!(f.load_view("ns", "v").await.0, StatusCode::NOT_FOUND);
    let (s, loaded) = f.load_view("other", "w").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(loaded["metadata-location"], created["metadata-location"]);
    f.region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn register_view_points_at_an_existing_metadata_file() {
    let f = Fixture::new().await;
    f.create_namespace("ns").await;
    let created = f.create_view("ns", "v").await;
    let location = created["metadata-location"].as_str().unwrap();
    let register = |name: &str, location: &str| {
        f.http
            .post(f.url("/namespaces/ns/register-view"))
            .json(&json!({"name": name, "metadata-location": location}))
    };

    let (s, b) = send(register("v", location)).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_error(&b, s, "AlreadyExistsException");

    // The file's view owns its location: a second live view there is refused.
    let (s, b) = send(register("again", location)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_error(&b, s, "BadRequestException");
    // Once the view is dropped, its metadata file can be registered again.
    let (s, _) = send(f.http.delete(f.url("/namespaces/ns/views/v"))).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = send(register("again", location)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["metadata-location"], location);
    assert_eq!(b["metadata"], created["metadata"]);
    assert_eq!(f.load_view("ns", "again").await.0, StatusCode::OK);

    let (_, table) = f.create_table("ns", "t").await;
    let table_location = table["metadata-location"].as_str().unwrap();
    for bad in [table_location, "s3://demo/nowhere/00000-x.metadata.json"] {
        let (s, b) = send(register("bad", bad)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad} -> {b}");
        assert_error(&b, s, "BadRequestException");
    }
    assert_eq!(f.load_view("ns", "bad").await.0, StatusCode::NOT_FOUND);
    f.region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn config_advertises_the_view_endpoints() {
    let f = Fixture::new().await;
    let (s, b) = send(f.http.get(format!("{}/v1/config", f.region.catalog_url))).await;
    assert_eq!(s, StatusCode::OK);
    let endpoints: Vec<&str> = b["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    for e in pangolin::api::views::VIEW_ENDPOINTS {
        assert!(endpoints.contains(e), "{e} missing from {endpoints:?}");
    }
    for e in [
        "GET /v1/{prefix}/namespaces/{namespace}/views",
        "POST /v1/{prefix}/namespaces/{namespace}/views",
        "GET /v1/{prefix}/namespaces/{namespace}/views/{view}",
        "HEAD /v1/{prefix}/namespaces/{namespace}/views/{view}",
        "POST /v1/{prefix}/namespaces/{namespace}/views/{view}",
        "DELETE /v1/{prefix}/namespaces/{namespace}/views/{view}",
        "POST /v1/{prefix}/views/rename",
    ] {
        assert!(endpoints.contains(&e), "{e} missing from {endpoints:?}");
    }
    f.region.shutdown().await;
}
