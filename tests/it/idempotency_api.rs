//! `Idempotency-Key` against an in-process region: replays of finalized responses (2xx and
//! 4xx), exactly-once effects for sequential and concurrent duplicates, key reuse with a
//! different request (422), invalid keys (400), unfinalized 5xx, and requests without a key.

use std::sync::Arc;

use pangolin::store::{MetadataStore, SqlStore};
use pangolin::testing::TestRegion;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{id_schema, PgDatabase};

const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    fn replayed(&self) -> bool {
        self.headers
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true")
    }
}

struct Fixture {
    region: TestRegion,
    http: reqwest::Client,
}

impl Fixture {
    async fn start(region: TestRegion) -> Fixture {
        Fixture {
            region,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.region.prefix_url(), path)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let mut req = self.http.request(method, self.url(path));
        if let Some(key) = key {
            req = req.header(IDEMPOTENCY_KEY, key);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.expect("request sent");
        Answer {
            status: resp.status(),
            headers: resp.headers().clone(),
            text: resp.text().await.expect("body"),
        }
    }

    async fn post(&self, path: &str, key: Option<&str>, body: &Value) -> Answer {
        self.send(reqwest::Method::POST, path, key, Some(body))
            .await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(reqwest::Method::GET, path, None, None).await
    }

    async fn create_namespace(&self, name: &str) {
        let a = self
            .post("/namespaces", None, &json!({"namespace": [name]}))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    }

    async fn create_table(&self, ns: &str, name: &str) {
        let a = self
            .post(&format!("/namespaces/{ns}/tables"), None, &table_body(name))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    }

    async fn load(&self, ns: &str, table: &str) -> Value {
        let a = self.get(&format!("/namespaces/{ns}/tables/{table}")).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        a.json()
    }

    async fn namespaces(&self) -> Vec<Value> {
        let a = self.get("/namespaces").await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        a.json()["namespaces"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    async fn shutdown(self) {
        self.region.shutdown().await;
    }
}

fn new_key() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn table_body(name: &str) -> Value {
    json!({"name": name, "schema": id_schema()})
}

/// An append-like commit: a property change guarded by nothing, so a duplicate that ran
/// twice would write two metadata versions.
fn set_property_commit(value: &str) -> Value {
    json!({
        "requirements": [],
        "updates": [{"action": "set-properties", "updates": {"written-by": value}}]
    })
}

/// Metadata versions written so far: the metadata log plus the current file.
fn version_count(loaded: &Value) -> usize {
    loaded["metadata"]["metadata-log"]
        .as_array()
        .map_or(0, Vec::len)
        + 1
}

fn assert_error(a: &Answer, status: StatusCode, kind: &str) {
    assert_eq!(a.status, status, "{}", a.text);
    let body = a.json();
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert_eq!(body["error"]["code"], status.as_u16(), "{body}");
}

// ---- cases -----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn config_advertises_the_key_lifetime() {
    let f = Fixture::start(TestRegion::start().await.unwrap()).await;
    let config: Value = f
        .http
        .get(format!("{}/v1/config", f.region.catalog_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["idempotency-key-lifetime"], "PT30M");
    f.shutdown().await;

    let region = TestRegion::start_with(vec![(
        "PANGOLIN_CATALOG__IDEMPOTENCY_KEY_LIFETIME_SECS".into(),
        "86400".into(),
    )])
    .await
    .unwrap();
    let f = Fixture::start(region).await;
    let config: Value = f
        .http
        .get(format!("{}/v1/config", f.region.catalog_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["idempotency-key-lifetime"], "PT24H");
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_namespace_twice_with_one_key_runs_once_and_replays() {
    let f = Fixture::start(TestRegion::start().await.unwrap()).await;
    let key = new_key();
    let body = json!({"namespace": ["sales"], "properties": {"owner": "ann"}});
    let first = f.post("/namespaces", Some(&key), &body).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert!(!first.replayed());
    // The retry is answered from the stored response: 200, not 409.
    let second = f.post("/namespaces", Some(&key), &body).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    assert_eq!(second.text, first.text);
    assert!(second.replayed());
    assert_eq!(
        second.headers.get("content-type"),
        first.headers.get("content-type")
    );
    // The key is case-insensitive (one UUID).
    let upper = f
        .post("/namespaces", Some(&key.to_uppercase()), &body)
        .await;
    assert_eq!(upper.status, StatusCode::OK);
    assert_eq!(upper.text, first.text);
    assert_eq!(f.namespaces().await, vec![json!(["sales"])]);
    // A different key is a different operation: it runs and finds the namespace.
    let other = f.post("/namespaces", Some(&new_key()), &body).await;
    assert_error(&other, StatusCode::CONFLICT, "AlreadyExistsException");
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn update_table_twice_with_one_key_writes_one_version() {
    let f = Fixture::start(TestRegion::start().await.unwrap()).await;
    f.create_namespace("ns").await;
    f.create_table("ns", "t").await;
    let before = version_count(&f.load("ns", "t").await);
    let key = new_key();
    let commit = set_property_commit("first");
    let first = f.post("/namespaces/ns/tables/t", Some(&key), &commit).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let second = f.post("/namespaces/ns/tables/t", Some(&key), &commit).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    assert!(second.replayed());
    assert_eq!(second.text, first.text);
    assert!(first.headers.get("etag").is_some());
    assert_eq!(second.headers.get("etag"), first.headers.get("etag"));
    let loaded = f.load("ns", "t").await;
    assert_eq!(version_count(&loaded), before + 1);
    assert_eq!(
        loaded["metadata-location"],
        first.json()["metadata-location"]
    );
    f.shutdown().await;
}

/// Eight identical commits with one key at once: one runs, the others wait for it and
/// replay its response.
async fn concurrent_duplicates_run_once(f: Fixture) {
    let f = Arc::new(f);
    f.create_namespace("ns").await;
    f.create_table("ns", "t").await;
    let before = version_count(&f.load("ns", "t").await);
    let key = new_key();
    let commit = set_property_commit("racer");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (f, key, commit) = (f.clone(), key.clone(), commit.clone());
        tasks.push(tokio::spawn(async move {
            f.post("/namespaces/ns/tables/t", Some(&key), &commit).await
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    for a in &answers {
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        assert_eq!(
            a.text, answers[0].text,
            "every duplicate gets the same answer"
        );
        assert_eq!(a.headers.get("etag"), answers[0].headers.get("etag"));
    }
    assert_eq!(
        answers.iter().filter(|a| !a.replayed()).count(),
        1,
        "exactly one duplicate ran"
    );
    let loaded = f.load("ns", "t").await;
    assert_eq!(
        version_count(&loaded),
        before + 1,
        "exactly one new version"
    );
    assert_eq!(
        loaded["metadata-location"],
        answers[0].json()["metadata-location"]
    );
    // A sequential retry afterwards replays too.
    let again = f.post("/namespaces/ns/tables/t", Some(&key), &commit).await;
    assert_eq!(again.text, answers[0].text);
    assert_eq!(version_count(&f.load("ns", "t").await), before + 1);
    if let Ok(f) = Arc::try_unwrap(f) {
        f.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_duplicates_write_one_version_on_sqlite() {
    concurrent_duplicates_run_once(Fixture::start(TestRegion::start().await.unwrap()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_duplicates_write_one_version_on_postgres() {
    let db = PgDatabase::create().await;
    let region = TestRegion::start_with_database(&db.url)
        .await
        .expect("region starts");
    concurrent_duplicates_run_once(Fixture::start(region).await).await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_key_with_a_different_request_is_422_and_changes_nothing() {
    let f = Fixture::start(TestRegion::start().await.unwrap()).await;
    f.create_namespace("ns").await;
    f.create_table("ns", "t").await;
    let key = new_key();
    let first = f
        .post(
            "/namespaces/ns/tables/t",
            Some(&key),
            &set_property_commit("a"),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let loaded = f.load("ns", "t").await;

    // Other body, other path, other method: all refused, nothing runs.
    let other_body = f
        .post(
            "/namespaces/ns/tables/t",
            Some(&key),
            &set_property_commit("b"),
        )
        .await;
    assert_error(
        &other_body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "BadRequestException",
    );
    let other_path = f
        .post("/namespaces", Some(&key), &json!({"namespace": ["x"]}))
        .await;
    assert_error(
        &other_path,
        StatusCode::UNPROCESSABLE_ENTITY,
        "BadRequestException",
    );
    let other_method = f
        .send(
            reqwest::Method::DELETE,
            "/namespaces/ns/tables/t",
            Some(&key),
            None,
        )
        .await;
    assert_error(
        &other_method,
        StatusCode::UNPROCESSABLE_ENTITY,
        "BadRequestException",
    );
    assert_eq!(f.load("ns", "t").await, loaded);
    assert_eq!(f.namespaces().await, vec![json!(["ns"])]);
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_key_is_400_and_changes_nothing() {
    let f = Fixture::start(TestRegion::start().await.unwrap()).await;
    let body = json!({"namespace": ["x"]});
    for bad in [
        "not-a-uuid",
        "017f22e279b07cc398c4dc0c0c07398f",
        "{017f22e2-79b0-7cc3-98c4-dc0c0c07398f}",
        "017f22e2-79b0-7cc3-98c4-dc0c0c07398g",
        "",
    ] {
        let a = f.post("/namespaces", Some(bad), &body).await;
        assert_error(&a, StatusCode::BAD_REQUEST, "BadRequestException");
    }
    assert!(f.namespaces().await.is_empty());
    // Reads ignore the header.
    let a = f
        .send(reqwest::Method::GET, "/namespaces", Some("nope"), None)
        .await;
    assert_eq!(a.status, StatusCode::OK);
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_error_is_finalized_and_replayed_after_the_state_changed() {
    let f = Fixture::start(TestRegion::start().await.unwrap()).await;
    let key = new_key();
    let first = f
        .post("/namespaces/later/tables", Some(&key), &table_body("t"))
        .await;
    assert_error(&first, StatusCode::NOT_FOUND, "NoSuchNamespaceException");
    f.create_namespace("later").await;
    // Same key: the stored 404, not a new attempt.
    let retry = f
        .post("/namespaces/later/tables", Some(&key), &table_body("t"))
        .await;
    assert_eq!(retry.status, StatusCode::NOT_FOUND);
    assert_eq!(retry.text, first.text);
    assert!(retry.replayed());
    let a = f.get("/namespaces/later/tables/t").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    // A new key runs it.
    let fresh = f
        .post(
            "/namespaces/later/tables",
            Some(&new_key()),
            &table_body("t"),
        )
        .await;
    assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.text);
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drop_with_one_key_replays_204() {
    let f = Fixture::start(TestRegion::start().await.unwrap()).await;
    f.create_namespace("ns").await;
    f.create_table("ns", "t").await;
    let key = new_key();
    for _ in 0..2 {
        let a = f
            .send(
                reqwest::Method::DELETE,
                "/namespaces/ns/tables/t",
                Some(&key),
                None,
            )
            .await;
        assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text);
        assert!(a.text.is_empty());
    }
    let again = f
        .send(
            reqwest::Method::DELETE,
            "/namespaces/ns/tables/t",
            Some(&new_key()),
            None,
        )
        .await;
    assert_error(&again, StatusCode::NOT_FOUND, "NoSuchTableException");
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_error_is_not_finalized_and_the_retry_runs() {
    let f = Fixture::start(TestRegion::start().await.unwrap()).await;
    // Raise the region's fencing epoch behind the node's back: its next write is refused
    // with 503 (and the node learns the new epoch from that refusal).
    let store = SqlStore::connect(&f.region.config.database.url)
        .await
        .unwrap();
    store.set_epoch(2).await.unwrap();
    store.close().await;
    let key = new_key();
    let body = json!({"namespace": ["ns"]});
    let first = f.post("/namespaces", Some(&key), &body).await;
    assert_error(
        &first,
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailableException",
    );
    let retry = f.post("/namespaces", Some(&key), &body).await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.text);
    assert!(!retry.replayed(), "a 5xx is never replayed");
    let again = f.post("/namespaces", Some(&key), &body).await;
    assert_eq!(again.text, retry.text);
    assert!(again.replayed());
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_header_nothing_changes() {
    let f = Fixture::start(TestRegion::start().await.unwrap()).await;
    let body = json!({"namespace": ["ns"]});
    let first = f.post("/namespaces", None, &body).await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(!first.replayed());
    let second = f.post("/namespaces", None, &body).await;
    assert_error(&second, StatusCode::CONFLICT, "AlreadyExistsException");
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_body_with_a_key_is_413() {
    let region = TestRegion::start_with(vec![(
        "PANGOLIN_CATALOG__MAX_BODY_BYTES".into(),
        "1024".into(),
    )])
    .await
    .unwrap();
    let f = Fixture::start(region).await;
    let big = json!({"namespace": ["ns"], "properties": {"x": "y".repeat(4096)}});
    let a = f.post("/namespaces", Some(&new_key()), &big).await;
    assert_error(&a, StatusCode::PAYLOAD_TOO_LARGE, "BadRequestException");
    assert!(f.namespaces().await.is_empty());
    f.shutdown().await;
}
