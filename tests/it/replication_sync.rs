//! Commit tokens, read-your-writes, sync replication and the metrics endpoint, between two
//! in-process regions (a primary and a secondary following it without a control plane, each
//! with its own SQLite file and embedded S3 endpoint).
//!
//! Covered: every write answer carries `x-pangolin-commit-token` (also a write forwarded by
//! the secondary); a read with a token the secondary has not applied is answered by the
//! primary after the bounded wait, and by the secondary itself once it caught up; in `sync`
//! mode (per-catalog override) every acknowledged commit — real Parquet appends — is already
//! at the secondary when the client gets the answer; policy `block` answers 503 with
//! Retry-After while the secondary's replicator is paused (the commit is durable at the
//! primary); policy `degrade` acknowledges, reports `degraded` in the status and metrics
//! until the secondary catches up; `/metrics` exposes the lag on both sides.

use crate::common::{
    connect, create_table, env, eventually, fast_append, metrics_with_type, new_namespace,
    post_action, post_namespace, short, status_json as status, write_data_file,
};

use std::time::{Duration, Instant};

use iceberg::{Catalog, TableIdent};
use pangolin::testing::TestRegion;
use reqwest::StatusCode;
use serde_json::Value;

const TOKEN: &str = "x-pangolin-commit-token";

/// The region's `/metrics` exposition, in the Prometheus text format.
async fn metrics(http: &reqwest::Client, region: &TestRegion) -> String {
    let (content_type, text) = metrics_with_type(http, region).await;
    assert!(content_type.starts_with("text/plain; version=0.0.4"));
    text
}

/// The value of the sample `name` (with its labels, e.g. `x{a="b"}`) in an exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Waits until the primary has heard from the secondary (its first pull).
async fn wait_known(http: &reqwest::Client, primary: &TestRegion) {
    eventually(
        "the secondary's first pull",
        Duration::from_secs(30),
        || async {
            status(http, primary).await["secondaries"]
                .as_array()
                .is_some_and(|s| !s.is_empty())
        },
    )
    .await;
}

async fn wait_caught_up(http: &reqwest::Client, primary: &TestRegion, secondary: &TestRegion) {
    eventually(
        "the secondary to catch up",
        Duration::from_secs(60),
        || async {
            let head = status(http, primary).await["watermark"].as_i64().unwrap();
            let s = status(http, secondary).await;
            assert_ne!(s["halted"], true, "replication halted: {s}");
            s["watermark"].as_i64().unwrap() >= head
        },
    )
    .await;
}

/// Creates namespace `ns` through `region`; returns the answer's status and headers.
async fn create_namespace(
    http: &reqwest::Client,
    region: &TestRegion,
    ns: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let resp = post_namespace(http, region, ns).await;
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.unwrap_or(Value::Null))
}

/// A primary started with `primary_env` and a secondary following it, once the primary has
/// heard from the secondary.
async fn start_pair(
    http: &reqwest::Client,
    primary_env: &[(&str, &str)],
) -> (TestRegion, TestRegion) {
    let primary = TestRegion::start_with(env(primary_env))
        .await
        .expect("primary");
    let secondary = TestRegion::start_secondary_of(&primary)
        .await
        .expect("secondary");
    wait_known(http, &primary).await;
    (primary, secondary)
}

/// Asserts each `(sample, value)` of the exposition `m`.
fn assert_samples(m: &str, expected: &[(&str, f64)]) {
    for (name, value) in expected {
        assert_eq!(sample(m, name), Some(*value), "{name}: {m}");
    }
}

fn token_of(headers: &reqwest::header::HeaderMap) -> (i64, i64) {
    let raw = headers
        .get(TOKEN)
        .unwrap_or_else(|| panic!("no {TOKEN} in {headers:?}"))
        .to_str()
        .unwrap();
    let (epoch, seq) = raw.split_once('-').expect("<epoch>-<seq>");
    (epoch.parse().unwrap(), seq.parse().unwrap())
}

async fn get_namespace(
    http: &reqwest::Client,
    region: &TestRegion,
    ns: &str,
    token: Option<&str>,
) -> StatusCode {
    let mut req = http.get(format!("{}/namespaces/{ns}", region.prefix_url()));
    if let Some(t) = token {
        req = req.header(TOKEN, t);
    }
    req.send().await.expect("load namespace").status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commit_tokens_give_read_your_writes_at_a_secondary() {
    let http = reqwest::Client::new();
    let primary = TestRegion::start().await.expect("primary");
    let secondary = TestRegion::start_secondary_of_with(
        &primary,
        env(&[("PANGOLIN_REPLICATION__READ_YOUR_WRITES_WAIT_MS", "300")]),
    )
    .await
    .expect("secondary");

    // A write at the primary carries its region and token; seq is the log head.
    let ns1 = short("ryw");
    let (s, h, body) = create_namespace(&http, &primary, &ns1).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(h["x-pangolin-region"], "us-east-1");
    let (epoch, seq1) = token_of(&h);
    assert!(epoch >= 0);
    assert_eq!(
        seq1,
        status(&http, &primary).await["watermark"].as_i64().unwrap()
    );
    wait_caught_up(&http, &primary, &secondary).await;

    // With the secondary paused, a write forwarded by it carries the primary's token...
    post_action(&http, &secondary, "pause").await;
    let ns2 = short("ryw");
    let (s, h, body) = create_namespace(&http, &secondary, &ns2).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(h["x-pangolin-region"], "us-east-1");
    let (_, seq2) = token_of(&h);
    assert!(seq2 > seq1, "{seq2} > {seq1}");
    let token2 = h[TOKEN].to_str().unwrap().to_string();

    // ...the secondary alone does not have the namespace; with the token the read waits,
    // then the primary answers.
    assert_eq!(
        get_namespace(&http, &secondary, &ns2, None).await,
        StatusCode::NOT_FOUND
    );
    let started = Instant::now();
    assert_eq!(
        get_namespace(&http, &secondary, &ns2, Some(&token2)).await,
        StatusCode::OK
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    let m = metrics(&http, &secondary).await;
    assert_eq!(
        sample(&m, "pangolin_read_your_writes_forwarded_total"),
        Some(1.0),
        "{m}"
    );
    // A token already applied is served here.
    let token1 = format!("{epoch}-{seq1}");
    assert_eq!(
        get_namespace(&http, &secondary, &ns1, Some(&token1)).await,
        StatusCode::OK
    );
    // A malformed token is a bad request.
    assert_eq!(
        get_namespace(&http, &secondary, &ns1, Some("yesterday")).await,
        StatusCode::BAD_REQUEST
    );

    // Resumed, the secondary answers the token itself.
    post_action(&http, &secondary, "resume").await;
    wait_caught_up(&http, &primary, &secondary).await;
    assert_eq!(
        get_namespace(&http, &secondary, &ns2, Some(&token2)).await,
        StatusCode::OK
    );
    assert_samples(
        &metrics(&http, &secondary).await,
        &[
            ("pangolin_read_your_writes_forwarded_total", 1.0),
            ("pangolin_read_your_writes_local_total", 2.0),
        ],
    );
    secondary.shutdown().await;
    primary.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_commit_is_acknowledged_only_after_the_secondary_applied_it() {
    let http = reqwest::Client::new();
    // Sync through the per-catalog override (the default stays async).
    let (primary, secondary) = start_pair(
        &http,
        &[
            ("PANGOLIN_REPLICATION__CATALOGS__DEMO__MODE", "sync"),
            ("PANGOLIN_REPLICATION__SYNC_TIMEOUT_MS", "20000"),
        ],
    )
    .await;
    let st = status(&http, &primary).await;
    assert_eq!(st["mode"], "async", "{st}");
    assert_eq!(st["catalogs"]["demo"]["mode"], "sync", "{st}");
    assert_eq!(st["catalogs"]["demo"]["sync_policy"], "block", "{st}");

    let catalog = connect(&primary).await;
    let (ns_name, ns) = new_namespace(&catalog, "sync", Default::default()).await;
    let ident = TableIdent::new(ns.clone(), "events".into());
    let mut table = create_table(&catalog, &ns, "events").await;
    let url = format!(
        "{}/namespaces/{}/tables/events",
        secondary.prefix_url(),
        ns_name
    );
    for round in 0..5i64 {
        let files = write_data_file(&table, &[round * 10, round * 10 + 1]).await;
        table = fast_append(&catalog, &table, files).await;
        // Right after the acknowledgement, without a token: the secondary has it.
        let resp = http.get(&url).send().await.expect("load at the secondary");
        assert_eq!(resp.status(), StatusCode::OK, "round {round}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            body["metadata-location"].as_str(),
            table.metadata_location(),
            "round {round}: the secondary lags an acknowledged sync commit"
        );
    }
    assert!(catalog.table_exists(&ident).await.unwrap());
    let m = metrics(&http, &primary).await;
    assert!(
        sample(&m, "pangolin_sync_waits_total").unwrap() >= 7.0,
        "{m}"
    );
    assert!(sample(&m, "pangolin_sync_wait_seconds_count").unwrap() >= 7.0);
    assert_samples(
        &m,
        &[
            ("pangolin_sync_blocked_total", 0.0),
            ("pangolin_sync_degraded_commits_total", 0.0),
            ("pangolin_sync_mode{catalog=\"demo\"}", 1.0),
            (
                "pangolin_replication_secondary_lag_records{secondary_region=\"eu-west-1\"}",
                0.0,
            ),
            ("pangolin_is_primary{region=\"us-east-1\"}", 1.0),
        ],
    );
    secondary.shutdown().await;
    primary.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_block_policy_fails_the_write_while_the_secondary_is_paused() {
    let http = reqwest::Client::new();
    let (primary, secondary) = start_pair(
        &http,
        &[
            ("PANGOLIN_REPLICATION__MODE", "sync"),
            ("PANGOLIN_REPLICATION__SYNC_POLICY", "block"),
            ("PANGOLIN_REPLICATION__SYNC_TIMEOUT_MS", "500"),
        ],
    )
    .await;
    let (s, _, body) = create_namespace(&http, &primary, &short("ok")).await;
    assert_eq!(s, StatusCode::OK, "{body}");

    post_action(&http, &secondary, "pause").await;
    let ns = short("blocked");
    let started = Instant::now();
    let (s, h, body) = create_namespace(&http, &primary, &ns).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(h["retry-after"], "1");
    assert!(h.contains_key(TOKEN));
    assert_eq!(body["error"]["type"], "ServiceUnavailableException");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("IS durable"), "{message}");
    assert!(message.contains("eu-west-1"), "{message}");
    // The commit is durable at the primary.
    assert_eq!(
        get_namespace(&http, &primary, &ns, None).await,
        StatusCode::OK
    );
    let m = metrics(&http, &primary).await;
    assert_eq!(sample(&m, "pangolin_sync_blocked_total"), Some(1.0), "{m}");

    // Resumed, the secondary catches up and writes are acknowledged again.
    post_action(&http, &secondary, "resume").await;
    let (s, _, body) = create_namespace(&http, &primary, &short("after")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        get_namespace(&http, &secondary, &ns, None).await,
        StatusCode::OK
    );
    secondary.shutdown().await;
    primary.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_degrade_policy_acknowledges_and_reports_the_degradation_and_lag() {
    let http = reqwest::Client::new();
    let (primary, secondary) = start_pair(
        &http,
        &[
            ("PANGOLIN_REPLICATION__MODE", "sync"),
            ("PANGOLIN_REPLICATION__SYNC_POLICY", "degrade"),
            ("PANGOLIN_REPLICATION__SYNC_TIMEOUT_MS", "300"),
        ],
    )
    .await;
    assert_eq!(status(&http, &primary).await["degraded"], false);

    post_action(&http, &secondary, "pause").await;
    for _ in 0..3 {
        let (s, h, body) = create_namespace(&http, &primary, &short("deg")).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        token_of(&h);
    }
    let st = status(&http, &primary).await;
    assert_eq!(st["degraded"], true, "{st}");
    assert!(st["degraded_since_ms"].as_i64().unwrap() > 0);
    assert!(
        st["degraded_reason"]
            .as_str()
            .unwrap()
            .contains("eu-west-1"),
        "{st}"
    );
    let sec = &st["secondaries"][0];
    assert_eq!(sec["region"], "eu-west-1");
    assert_eq!(sec["degraded"], true);
    assert_eq!(sec["lag_records"], 3, "{st}");
    assert_samples(
        &metrics(&http, &primary).await,
        &[
            ("pangolin_sync_degraded_commits_total", 3.0),
            (
                "pangolin_replication_secondary_degraded{secondary_region=\"eu-west-1\"}",
                1.0,
            ),
            (
                "pangolin_replication_secondary_lag_records{secondary_region=\"eu-west-1\"}",
                3.0,
            ),
        ],
    );
    // The secondary sees its own lag once its paused replicator refreshed the head.
    eventually(
        "the secondary's lag metric",
        Duration::from_secs(10),
        || async {
            let m = metrics(&http, &secondary).await;
            sample(
                &m,
                "pangolin_replication_lag_records{primary_region=\"us-east-1\"}",
            ) == Some(3.0)
                && sample(&m, "pangolin_replication_paused") == Some(1.0)
        },
    )
    .await;

    // Caught up again: no longer degraded, no lag.
    post_action(&http, &secondary, "resume").await;
    wait_caught_up(&http, &primary, &secondary).await;
    eventually(
        "the degradation to clear",
        Duration::from_secs(30),
        || async { status(&http, &primary).await["degraded"] == false },
    )
    .await;
    let m = metrics(&http, &secondary).await;
    assert_eq!(
        sample(
            &m,
            "pangolin_replication_lag_records{primary_region=\"us-east-1\"}"
        ),
        Some(0.0),
        "{m}"
    );
    assert!(sample(&m, "pangolin_replication_applied_records_total").unwrap() >= 3.0);
    // Caught up and idle: nothing being copied.
    assert_eq!(
        sample(&m, "pangolin_replication_objects_pending"),
        Some(0.0),
        "{m}"
    );
    secondary.shutdown().await;
    primary.shutdown().await;
}
