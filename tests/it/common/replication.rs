//! A region's replication over HTTP: its status, actions, change log and `/metrics`, waiting
//! for a secondary to catch up, how peers reach a region, secondaries that give up quickly.

use std::time::{Duration, Instant};

use pangolin::config::RegionPeer;
use pangolin::replication::ReplicationStatus;
use pangolin::store::ChangeRecord;
use pangolin::testing::TestRegion;
use reqwest::StatusCode;
use serde_json::Value;

use super::get_json;

/// How long a secondary may take to catch up with its primary.
pub const CATCH_UP: Duration = Duration::from_secs(60);

/// The region's `/api/v1/replication/status`, as JSON.
pub async fn status_json(http: &reqwest::Client, region: &TestRegion) -> Value {
    let url = format!("{}/api/v1/replication/status", region.catalog_url);
    let resp = http.get(&url).send().await.expect("status request");
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.expect("status body")
}

/// The region's `/api/v1/replication/status`.
pub async fn status(http: &reqwest::Client, region: &TestRegion) -> ReplicationStatus {
    serde_json::from_value(status_json(http, region).await).expect("status body")
}

/// Waits until the secondary applied everything the primary has; panics (with the status)
/// when the stream halts or after [`CATCH_UP`].
pub async fn wait_caught_up(
    http: &reqwest::Client,
    primary: &TestRegion,
    secondary: &TestRegion,
) -> ReplicationStatus {
    let started = Instant::now();
    loop {
        let head = status(http, primary).await.watermark;
        let s = status(http, secondary).await;
        if s.watermark >= head && s.lag_records == Some(0) {
            return s;
        }
        assert!(!s.halted, "replication halted: {s:#?}");
        assert!(
            started.elapsed() < CATCH_UP,
            "secondary did not catch up with head {head} in {CATCH_UP:?}: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `POST /api/v1/replication/{action}` (pause, resume), which must answer 200: the answer.
pub async fn post_action(
    http: &reqwest::Client,
    region: &TestRegion,
    action: &str,
) -> reqwest::Response {
    let url = format!("{}/api/v1/replication/{action}", region.catalog_url);
    let resp = http.post(&url).send().await.expect("request");
    assert_eq!(resp.status(), StatusCode::OK, "{action}");
    resp
}

/// `POST /api/v1/replication/{action}` (pause, resume): the region's status after it.
pub async fn replication_action(
    http: &reqwest::Client,
    region: &TestRegion,
    action: &str,
) -> ReplicationStatus {
    let resp = post_action(http, region, action).await;
    resp.json().await.expect("status body")
}

/// Polls the region's status every 20 ms until `reached` holds; panics (naming `what`, with
/// the status) after [`CATCH_UP`].
pub async fn wait_status(
    http: &reqwest::Client,
    region: &TestRegion,
    what: &str,
    reached: impl Fn(&ReplicationStatus) -> bool,
) -> ReplicationStatus {
    let started = Instant::now();
    loop {
        let s = status(http, region).await;
        if reached(&s) {
            return s;
        }
        assert!(started.elapsed() < CATCH_UP, "{what}: {s:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The region's whole change log.
pub async fn change_log(http: &reqwest::Client, region: &TestRegion) -> Vec<ChangeRecord> {
    let url = format!(
        "{}/api/v1/replication/changes?after=0&limit=10000",
        region.catalog_url
    );
    let (s, body) = get_json(http, &url).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    serde_json::from_value(body["records"].clone()).expect("change records")
}

/// The region's `/metrics` exposition (which must answer 200) and its content type.
pub async fn metrics_with_type(http: &reqwest::Client, region: &TestRegion) -> (String, String) {
    let resp = http
        .get(format!("{}/metrics", region.catalog_url))
        .send()
        .await
        .expect("metrics request");
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (content_type, resp.text().await.expect("metrics body"))
}

/// The region's `/metrics` exposition (which must answer 200).
pub async fn metrics(http: &reqwest::Client, region: &TestRegion) -> String {
    metrics_with_type(http, region).await.1
}

/// How other regions reach `region` (catalog and S3).
pub fn peer_of(region: &TestRegion) -> RegionPeer {
    RegionPeer {
        name: region.config.region.name.clone(),
        catalog_url: region.catalog_url.clone(),
        s3_endpoint: Some(region.s3_endpoint.clone()),
        s3_region: region.s3_region.clone(),
        access_key_id: Some(region.access_key.clone()),
        secret_access_key: Some(region.secret_key.clone()),
        path_style: true,
    }
}

/// A secondary following `primary` that retries a failing record after 20 ms (at most
/// 100 ms) and halts the stream at it after `attempts` attempts.
pub async fn start_secondary_halting_after(primary: &TestRegion, attempts: u32) -> TestRegion {
    TestRegion::start_secondary_of_with(
        primary,
        vec![
            (
                "PANGOLIN_REPLICATION__MAX_RECORD_ATTEMPTS".into(),
                attempts.to_string(),
            ),
            ("PANGOLIN_REPLICATION__RETRY_INITIAL_MS".into(), "20".into()),
            ("PANGOLIN_REPLICATION__RETRY_MAX_MS".into(), "100".into()),
        ],
    )
    .await
    .expect("start secondary")
}
