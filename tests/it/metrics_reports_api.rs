//! reportMetrics storage against an in-process region: scan and commit reports are stored,
//! listed back by the management API (newest first, filtered, limited), trimmed to the
//! configured retention; bad reports are 400 and reports on missing tables 404.

use pangolin::testing::TestRegion;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{id_schema, now_ms, send};

struct Fixture {
    region: TestRegion,
    http: reqwest::Client,
}

impl Fixture {
    async fn new() -> Fixture {
        Self::with(Vec::new()).await
    }

    async fn with(overrides: Vec<(String, String)>) -> Fixture {
        Fixture {
            region: TestRegion::start_with(overrides)
                .await
                .expect("region starts"),
            http: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        send(
            self.http
                .post(format!("{}{path}", self.region.prefix_url()))
                .json(body),
        )
        .await
    }

    async fn create_namespace(&self, ns: &[&str]) {
        let (s, b) = self.post("/namespaces", &json!({"namespace": ns})).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }

    async fn create_table(&self, ns: &str, name: &str) {
        let body = json!({"name": name, "schema": id_schema()});
        let (s, b) = self.post(&format!("/namespaces/{ns}/tables"), &body).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }

    async fn report(&self, ns: &str, table: &str, body: &Value) -> (StatusCode, Value) {
        self.post(&format!("/namespaces/{ns}/tables/{table}/metrics"), body)
            .await
    }

    /// `GET /api/v1/catalogs/{catalog}/metrics-reports{query}`.
    async fn list(&self, catalog: &str, query: &str) -> (StatusCode, Value) {
        send(self.http.get(format!(
            "{}/api/v1/catalogs/{catalog}/metrics-reports{query}",
            self.region.catalog_url
        )))
        .await
    }

    /// The stored reports' `snapshot-id`s, as listed.
    async fn listed_ids(&self, query: &str) -> Vec<i64> {
        let (s, b) = self.list(&self.region.warehouse, query).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["reports"]
            .as_array()
            .expect("reports array")
            .iter()
            .map(|r| r["report"]["snapshot-id"].as_i64().expect("snapshot-id"))
            .collect()
    }
}

fn scan_report(table: &str, snapshot_id: i64) -> Value {
    json!({
        "report-type": "scan-report",
        "table-name": table,
        "snapshot-id": snapshot_id,
        "filter": true,
        "schema-id": 0,
        "projected-field-ids": [1],
        "projected-field-names": ["id"],
        "metrics": {"total-planning-duration": {"count": 1, "time-unit": "nanoseconds", "total-duration": 2644235116_i64}},
        "metadata": {"engine": "test"}
    })
}

fn commit_report(table: &str, snapshot_id: i64) -> Value {
    json!({
        "report-type": "commit-report",
        "table-name": table,
        "snapshot-id": snapshot_id,
        "sequence-number": 1,
        "operation": "append",
        "metrics": {"added-data-files": {"unit": "count", "value": 1}}
    })
}

fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, kind: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert_eq!(body["error"]["code"], expected.as_u16(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reports_are_stored_and_listed_newest_first_with_filters() {
    let f = Fixture::new().await;
    f.create_namespace(&["db"]).await;
    f.create_namespace(&["db", "inner"]).await;
    f.create_table("db", "t").await;
    f.create_table("db", "u").await;
    f.create_table("db%1Finner", "t").await;

    let before = now_ms();
    let scan = scan_report("demo.db.t", 1);
    let sent = [
        ("db", "t", scan.clone()),
        ("db", "t", commit_report("demo.db.t", 2)),
        ("db", "u", scan_report("demo.db.u", 3)),
        ("db%1Finner", "t", commit_report("demo.db.inner.t", 4)),
    ];
    for (ns, table, body) in &sent {
        let (s, b) = f.report(ns, table, body).await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
        assert_eq!(b, Value::Null);
    }

    let (s, b) = f.list("demo", "").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let reports = b["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 4);
    // Newest first, with every field.
    let oldest = &reports[3];
    assert_eq!(oldest["namespace"], json!(["db"]));
    assert_eq!(oldest["table"], "t");
    assert_eq!(oldest["report-type"], "scan-report");
    assert_eq!(oldest["report"], scan);
    let received = oldest["received-ms"].as_i64().unwrap();
    assert!(received >= before && received <= now_ms());
    assert_eq!(reports[0]["namespace"], json!(["db", "inner"]));
    assert_eq!(reports[0]["report-type"], "commit-report");
    assert_eq!(f.listed_ids("").await, vec![4, 3, 2, 1]);

    // Filters and limit.
    assert_eq!(f.listed_ids("?namespace=db").await, vec![3, 2, 1]);
    assert_eq!(f.listed_ids("?namespace=db&table=t").await, vec![2, 1]);
    assert_eq!(f.listed_ids("?namespace=db%1Finner").await, vec![4]);
    assert_eq!(f.listed_ids("?table=t").await, vec![4, 2, 1]);
    assert_eq!(f.listed_ids("?limit=2").await, vec![4, 3]);
    assert_eq!(f.listed_ids("?namespace=db&limit=1").await, vec![3]);
    assert!(f.listed_ids("?namespace=nope").await.is_empty());
    f.region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_trims_the_oldest_reports() {
    let f = Fixture::with(vec![(
        "PANGOLIN_CATALOG__METRICS_REPORTS_RETENTION".into(),
        "3".into(),
    )])
    .await;
    f.create_namespace(&["db"]).await;
    f.create_table("db", "t").await;
    f.create_table("db", "u").await;
    for id in 1..=5 {
        let table = if id % 2 == 0 { "u" } else { "t" };
        let (s, b) = f.report("db", table, &scan_report(table, id)).await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    }
    // Per catalog, whatever the table: the three newest.
    assert_eq!(f.listed_ids("").await, vec![5, 4, 3]);
    assert_eq!(f.listed_ids("?limit=1000").await, vec![5, 4, 3]);
    let (s, b) = f.report("db", "t", &commit_report("t", 6)).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    assert_eq!(f.listed_ids("").await, vec![6, 5, 4]);
    f.region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zero_retention_accepts_reports_without_storing_them() {
    let f = Fixture::with(vec![(
        "PANGOLIN_CATALOG__METRICS_REPORTS_RETENTION".into(),
        "0".into(),
    )])
    .await;
    f.create_namespace(&["db"]).await;
    f.create_table("db", "t").await;
    let (s, b) = f.report("db", "t", &scan_report("t", 1)).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    assert!(f.listed_ids("").await.is_empty());
    f.region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_reports_are_400_and_store_nothing() {
    let f = Fixture::new().await;
    f.create_namespace(&["db"]).await;
    f.create_table("db", "t").await;
    let bad = [
        json!({"table-name": "t", "snapshot-id": 1}),
        json!({"report-type": "load-report", "table-name": "t"}),
        json!({"report-type": 7}),
        json!([scan_report("t", 1)]),
        json!("scan-report"),
    ];
    for body in &bad {
        let (s, b) = f.report("db", "t", body).await;
        assert_error(s, &b, StatusCode::BAD_REQUEST, "BadRequestException");
    }
    let (s, b) = send(
        f.http
            .post(format!(
                "{}/namespaces/db/tables/t/metrics",
                f.region.prefix_url()
            ))
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "BadRequestException");
    assert!(f.listed_ids("").await.is_empty());
    f.region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn report_on_a_missing_table_is_404() {
    let f = Fixture::new().await;
    f.create_namespace(&["db"]).await;
    let (s, b) = f.report("db", "nope", &scan_report("nope", 1)).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "NoSuchTableException");
    let (s, b) = f.report("missing", "t", &commit_report("t", 1)).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "NoSuchTableException");
    assert!(f.listed_ids("").await.is_empty());
    f.region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn management_route_answers_errors_in_the_error_model() {
    let f = Fixture::new().await;
    let (s, b) = f.list("nope", "").await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "NotFoundException");
    for query in ["?limit=0", "?limit=1001", "?limit=x", "?namespace=a%1F"] {
        let (s, b) = f.list("demo", query).await;
        assert_error(s, &b, StatusCode::BAD_REQUEST, "BadRequestException");
    }
    f.region.shutdown().await;
}
