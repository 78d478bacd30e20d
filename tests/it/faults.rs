//! Fault injection between in-process regions (docs/fault-injection.md): a link fault set
//! through `/api/v1/dev/faults` stops write forwarding, replication pulls, S3 access to the
//! peer's bucket and Raft RPC to the peer's voter until it is cleared, and a delay adds
//! latency. The fault registry is process-wide, as in a real node: run these with
//! cargo-nextest (one process per test), as tests/run does.

use crate::common::{env, eventually, post_namespace};

use std::time::{Duration, Instant};

use bytes::Bytes;
use pangolin::control::LinkFaults;
use pangolin::faults::{self, FaultMode, LinkFault};
use pangolin::storage::{ObjectStore, S3Settings, StorageError};
use pangolin::testing::TestRegion;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn enabled() -> Vec<(String, String)> {
    vec![("PANGOLIN_FAULTS__ENABLED".into(), "true".into())]
}

/// A primary and a secondary following it, both with the fault endpoint enabled;
/// `secondary_env` is added to the secondary's environment.
async fn start_pair(secondary_env: &[(&str, &str)]) -> (TestRegion, TestRegion) {
    let primary = TestRegion::start_with(enabled())
        .await
        .expect("start primary");
    let mut overrides = enabled();
    overrides.extend(env(secondary_env));
    let secondary = TestRegion::start_secondary_of_with(&primary, overrides)
        .await
        .expect("start secondary");
    (primary, secondary)
}

/// A partition of the link to `peer`.
fn partition(peer: &str) -> LinkFault {
    LinkFault {
        peer: peer.into(),
        mode: FaultMode::Partition,
        delay_ms: None,
    }
}

/// The JSON body of the answer to `request`.
async fn json_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

fn faults_url(region: &TestRegion) -> String {
    format!("{}/api/v1/dev/faults", region.catalog_url)
}

/// Creates namespace `name` through `region`; the status and the committing region.
async fn create_namespace(
    http: &reqwest::Client,
    region: &TestRegion,
    name: &str,
) -> (StatusCode, Option<String>) {
    let resp = post_namespace(http, region, name).await;
    let committed_in = resp
        .headers()
        .get("x-pangolin-region")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (resp.status(), committed_in)
}

async fn namespace_exists(http: &reqwest::Client, region: &TestRegion, name: &str) -> bool {
    http.get(format!("{}/namespaces/{name}", region.prefix_url()))
        .send()
        .await
        .expect("the region answers")
        .status()
        == StatusCode::OK
}

async fn set_faults(http: &reqwest::Client, region: &TestRegion, body: Value) -> Value {
    let resp = http
        .put(faults_url(region))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "PUT faults {body}");
    resp.json().await.unwrap()
}

async fn replication_error(http: &reqwest::Client, region: &TestRegion) -> Option<String> {
    let status =
        json_of(http.get(format!("{}/api/v1/replication/status", region.catalog_url))).await;
    status["last_error"]["message"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_fault_endpoint_exists_only_when_enabled() {
    let http = reqwest::Client::new();
    let region = TestRegion::start().await.expect("start region");
    let resp = http.get(faults_url(&region)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], 404, "{body}");
    let put = http
        .put(faults_url(&region))
        .json(&json!({"links": [{"peer": "eu-west-1", "mode": "partition"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::NOT_FOUND);
    assert!(
        faults::registry().links().is_empty(),
        "a disabled endpoint set a fault"
    );
    region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_fault_sets_are_refused_and_change_nothing() {
    let http = reqwest::Client::new();
    let region = TestRegion::start_with(enabled())
        .await
        .expect("start region");
    let first = json!({"links": [{"peer": "eu-west-1", "mode": "delay", "delay_ms": 5}]});
    set_faults(&http, &region, first.clone()).await;
    for bad in [
        json!({"links": [{"peer": "eu-west-1", "mode": "delay"}]}),
        json!({"links": [{"peer": "eu-west-1", "mode": "sever"}]}),
        json!({"links": [{"peer": "", "mode": "drop"}]}),
        json!({"links": [{"peer": "witness", "mode": "drop"}, {"peer": "witness", "mode": "partition"}]}),
        json!({"link": []}),
    ] {
        let resp = http
            .put(faults_url(&region))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["type"], "BadRequestException", "{body}");
    }
    let now = json_of(http.get(faults_url(&region))).await;
    assert_eq!(now["links"], first["links"]);
    let cleared = json_of(http.delete(faults_url(&region))).await;
    assert_eq!(cleared["links"], json!([]));
    region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_stops_forwarding_and_replication_until_healed() {
    let http = reqwest::Client::new();
    // Short long-polls: a pull already in flight when the partition starts is not cut, so
    // the test waits for the next one to be refused.
    let (primary, secondary) = start_pair(&[("PANGOLIN_REPLICATION__POLL_WAIT_MS", "200")]).await;

    let (status, region) = create_namespace(&http, &secondary, "before").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        region.as_deref(),
        Some("us-east-1"),
        "forwarded to the primary"
    );

    let answer = set_faults(
        &http,
        &secondary,
        json!({"links": [{"peer": "us-east-1", "mode": "partition"}]}),
    )
    .await;
    assert_eq!(answer["links"][0]["mode"], "partition");

    // Forwarding fails at once with a retryable 503; nothing is committed.
    let (status, _) = create_namespace(&http, &secondary, "cut_off").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!namespace_exists(&http, &primary, "cut_off").await);

    // The secondary's replicator reports the injected fault; what the primary commits now
    // does not reach the secondary.
    eventually(
        "the replicator to report the partition",
        Duration::from_secs(20),
        || async {
            replication_error(&http, &secondary)
                .await
                .is_some_and(|e| e.contains("fault injection"))
        },
    )
    .await;
    let (status, _) = create_namespace(&http, &primary, "during").await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!namespace_exists(&http, &secondary, "during").await);

    // Healed: both work again.
    let resp = http.delete(faults_url(&secondary)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (status, region) = create_namespace(&http, &secondary, "after").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(region.as_deref(), Some("us-east-1"));
    eventually(
        "replication to resume after the heal",
        Duration::from_secs(30),
        || async {
            namespace_exists(&http, &secondary, "during").await
                && namespace_exists(&http, &secondary, "after").await
        },
    )
    .await;

    secondary.shutdown().await;
    primary.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delay_adds_latency_to_forwarded_writes() {
    let http = reqwest::Client::new();
    let (primary, secondary) = start_pair(&[]).await;
    set_faults(
        &http,
        &secondary,
        json!({"links": [{"peer": "us-east-1", "mode": "delay", "delay_ms": 400}]}),
    )
    .await;
    let started = Instant::now();
    let (status, region) = create_namespace(&http, &secondary, "slow").await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::OK, "a delayed link still delivers");
    assert_eq!(region.as_deref(), Some("us-east-1"));
    assert!(
        took >= Duration::from_millis(400),
        "the forwarded write took {took:?}, less than the injected delay"
    );
    // A write at the primary itself crosses no link and is not delayed by the secondary's
    // fault (no bound asserted: only that it commits).
    let (status, _) = create_namespace(&http, &primary, "local").await;
    assert_eq!(status, StatusCode::OK);
    secondary.shutdown().await;
    primary.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_bucket_behind_a_partition_is_unreachable_until_healed() {
    let region = TestRegion::start().await.expect("start region");
    let settings = S3Settings {
        endpoint: Some(region.s3_endpoint.clone()),
        region: region.s3_region.clone(),
        credentials: Some((region.access_key.clone(), region.secret_key.clone())),
        path_style: true,
    };
    let local = ObjectStore::connect(&settings).await;
    let peer = ObjectStore::connect(&settings)
        .await
        .through_fault_link("us-east-1");
    let location = format!("s3://{}/faults/object.bin", region.warehouse);
    local
        .put(&location, Bytes::from_static(b"0123456789"))
        .await
        .unwrap();

    faults::registry()
        .set(vec![partition("us-east-1")])
        .unwrap();
    for outcome in [
        peer.head(&location).await.map(|_| ()),
        peer.get(&location).await.map(|_| ()),
        peer.get_stream(&location).await.map(|_| ()),
    ] {
        match outcome {
            Err(StorageError::Request { message, .. }) => {
                assert!(message.contains("partitioned"), "{message}")
            }
            other => panic!("expected a failed request, got {other:?}"),
        }
    }
    // The region's own store is not behind the link.
    assert_eq!(local.head(&location).await.unwrap().unwrap().size, 10);

    faults::registry().clear();
    assert_eq!(peer.get(&location).await.unwrap().as_ref(), b"0123456789");
    region.shutdown().await;
}

#[tokio::test]
async fn region_faults_reach_the_links_to_other_regions_voters() {
    let links = LinkFaults::for_regions(
        "us-east-1",
        [
            (1, "us-east-1".to_string()),
            (2, "eu-west-1".to_string()),
            (3, "witness".to_string()),
        ],
    );
    faults::registry()
        .set(vec![partition("eu-west-1"), partition("us-east-1")])
        .unwrap();
    assert!(links.pass(1, 2).await.is_err(), "link to eu-west-1's voter");
    assert!(
        links.pass(1, 3).await.is_ok(),
        "the witness link is untouched"
    );
    assert!(
        links.pass(0, 1).await.is_ok(),
        "the own region's voter is not behind a cross-region link"
    );
    faults::registry().clear();
    assert!(links.pass(1, 2).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answers_to_a_cut_off_peer_are_lost_even_mid_poll() {
    let http = reqwest::Client::new();
    // Default long polls (10 s): the secondary's pull is in flight when the cut starts.
    let (primary, secondary) = start_pair(&[]).await;
    let (status, _) = create_namespace(&http, &secondary, "before").await;
    assert_eq!(status, StatusCode::OK);
    eventually("replication to start", Duration::from_secs(20), || {
        namespace_exists(&http, &secondary, "before")
    })
    .await;

    // The primary's link to eu-west-1 is cut (one way: eu-west-1 still reaches us-east-1).
    // In one process the registry is shared, so this is set directly: the primary's node
    // would get it through its own /api/v1/dev/faults.
    faults::registry()
        .set(vec![partition("eu-west-1")])
        .unwrap();

    // A forwarded write runs at the primary, but its answer is lost.
    let (status, _) = create_namespace(&http, &secondary, "unacknowledged").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(namespace_exists(&http, &primary, "unacknowledged").await);

    // A commit at the primary wakes the pull already in flight; its answer is lost too.
    let (status, _) = create_namespace(&http, &primary, "during").await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!namespace_exists(&http, &secondary, "during").await);

    faults::registry().clear();
    eventually(
        "replication to resume after the heal",
        Duration::from_secs(30),
        || namespace_exists(&http, &secondary, "during"),
    )
    .await;
    secondary.shutdown().await;
    primary.shutdown().await;
}
