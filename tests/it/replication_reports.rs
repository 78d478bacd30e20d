//! Watermark reports (`GET /api/v1/replication/changes?region=..&applied=..`) between two
//! in-process regions: a primary and a secondary following it without a control plane
//! (`TestRegion::start_secondary_of`), both with the in-process regions' peer secret.
//!
//! Covered: a region outside the configured topology is refused (400) and never appears in
//! the status or the metrics, however many names are tried; a report without the peer
//! secret, or with a wrong one, is refused (401) and changes no watermark; a region with no
//! secret configured refuses every report (its secondary cannot replicate, and says so);
//! with the right secret, a watermark beyond what the primary shipped the region is refused
//! (400) or not counted, so a sync commit the secondary did not apply is still not
//! acknowledged and a degradation is not cleared; sync replication keeps working,
//! also across a restart of the primary.

use crate::common::{
    env, eventually, metrics, post_action, post_namespace, short, status_json as status,
};

use std::time::{Duration, Instant};

use pangolin::dev::TEST_PEER_SECRET;
use pangolin::testing::TestRegion;
use reqwest::StatusCode;
use serde_json::Value;

const SECRET_HEADER: &str = "x-pangolin-peer-secret";

/// The primary's view of secondary `name` (None: not in its status).
async fn secondary_view(http: &reqwest::Client, primary: &TestRegion, name: &str) -> Option<Value> {
    status(http, primary).await["secondaries"]
        .as_array()
        .expect("secondaries")
        .iter()
        .find(|s| s["region"] == name)
        .cloned()
}

/// The watermark the primary counts for eu-west-1 (None: none counted).
async fn counted(http: &reqwest::Client, primary: &TestRegion) -> Option<i64> {
    secondary_view(http, primary, "eu-west-1")
        .await
        .and_then(|s| s["applied"].as_i64())
}

/// `GET changes?<query>` at `region`, with `secret` in the peer secret header: the status
/// and the body.
async fn changes(
    http: &reqwest::Client,
    region: &TestRegion,
    query: &str,
    secret: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = http.get(format!(
        "{}/api/v1/replication/changes?{query}",
        region.catalog_url
    ));
    if let Some(s) = secret {
        req = req.header(SECRET_HEADER, s);
    }
    let resp = req.send().await.expect("changes request");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn assert_refused(got: &(StatusCode, Value), status: StatusCode, kind: &str, what: &str) {
    assert_eq!(got.0, status, "{what}: {}", got.1);
    assert_eq!(got.1["error"]["type"], kind, "{what}: {}", got.1);
    assert_eq!(got.1["error"]["code"], status.as_u16(), "{what}: {}", got.1);
}

/// A primary started with `primary_env` and a secondary following it, once the primary
/// counts the secondary's watermark as at its head.
async fn start_pair(
    http: &reqwest::Client,
    primary_env: &[(&str, &str)],
) -> (TestRegion, TestRegion) {
    let primary = TestRegion::start_with(env(primary_env))
        .await
        .expect("primary");
    // Short long polls, so that a paused secondary has no pull in flight at the primary
    // (records answered to it would count as shipped to it) once `settle` has passed.
    let secondary = TestRegion::start_secondary_of_with(
        &primary,
        env(&[("PANGOLIN_REPLICATION__POLL_WAIT_MS", "200")]),
    )
    .await
    .expect("secondary");
    wait_counted_at_head(http, &primary).await;
    (primary, secondary)
}

/// Pauses the secondary and waits until its last pull at the primary has ended.
async fn pause_and_settle(http: &reqwest::Client, secondary: &TestRegion) {
    post_action(http, secondary, "pause").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
}

/// Waits until the primary counts eu-west-1 as having applied its whole log; that head.
async fn wait_counted_at_head(http: &reqwest::Client, primary: &TestRegion) -> i64 {
    let started = Instant::now();
    loop {
        let head = status(http, primary).await["watermark"].as_i64().unwrap();
        let counted = counted(http, primary).await;
        if counted == Some(head) {
            return head;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the primary does not count the secondary at its head {head}: {counted:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates namespace `ns` at `region`: the answer's status and body.
async fn create_namespace(
    http: &reqwest::Client,
    region: &TestRegion,
    ns: &str,
) -> (StatusCode, Value) {
    let resp = post_namespace(http, region, ns).await;
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_regions_are_refused_and_never_stored() {
    let http = reqwest::Client::new();
    let (primary, secondary) = start_pair(&http, &[]).await;
    let before = status(&http, &primary).await;
    assert_eq!(
        before["secondaries"].as_array().unwrap().len(),
        1,
        "{before}"
    );

    let long = "g".repeat(4096);
    let own = primary.config.region.name.clone();
    for name in ["ghost-region", long.as_str(), own.as_str(), ""] {
        for secret in [None, Some(TEST_PEER_SECRET)] {
            for query in [
                format!("after=0&region={name}&applied=0"),
                format!("after=0&region={name}&applied=999999999"),
                format!("after=0&region={name}"),
            ] {
                let got = changes(&http, &primary, &query, secret).await;
                assert_refused(
                    &got,
                    StatusCode::BAD_REQUEST,
                    "BadRequestException",
                    &query[..60.min(query.len())],
                );
                let message = got.1["error"]["message"].as_str().unwrap();
                assert!(
                    message.len() < 400,
                    "the name is not echoed in full: {message:.100}"
                );
            }
        }
    }
    // Many invented names: none is kept.
    for i in 0..200 {
        let got = changes(
            &http,
            &primary,
            &format!("after=0&region=ghost-{i}-{}&applied=1", "x".repeat(1000)),
            Some(TEST_PEER_SECRET),
        )
        .await;
        assert_eq!(got.0, StatusCode::BAD_REQUEST, "{}", got.1);
    }
    // `applied` without a region.
    let got = changes(&http, &primary, "after=0&applied=5", Some(TEST_PEER_SECRET)).await;
    assert_refused(
        &got,
        StatusCode::BAD_REQUEST,
        "BadRequestException",
        "applied alone",
    );

    let after = status(&http, &primary).await;
    let names: Vec<&str> = after["secondaries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["region"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["eu-west-1"], "{after}");
    assert_eq!(
        after["secondaries"][0]["applied"], before["secondaries"][0]["applied"],
        "{after}"
    );
    assert!(after.to_string().len() < 16 * 1024, "status stays small");
    let m = metrics(&http, &primary).await;
    assert!(!m.contains("ghost"), "{m}");
    assert!(!m.contains(&long[..64]), "metrics name no invented region");

    // A plain read of the log (no report) stays open for now.
    let got = changes(&http, &primary, "after=0&limit=10", None).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    assert!(got.1["records"].is_array());
    secondary.shutdown().await;
    primary.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reports_without_the_peer_secret_are_refused() {
    let http = reqwest::Client::new();
    let (primary, secondary) = start_pair(&http, &[]).await;
    let (s, body) = create_namespace(&http, &primary, &short("sec")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let head = wait_counted_at_head(&http, &primary).await;
    assert!(head > 0);

    for (secret, what) in [
        (None, "no secret"),
        (Some("not-the-secret-of-this-deployment"), "a wrong secret"),
        (Some(""), "an empty secret"),
        (
            Some(&TEST_PEER_SECRET[..TEST_PEER_SECRET.len() - 1]),
            "a prefix of the secret",
        ),
    ] {
        for query in [
            "after=0&region=eu-west-1&applied=999999999".to_string(),
            format!("after={head}&region=eu-west-1&applied={head}"),
            "after=0&region=eu-west-1&applied=0".to_string(),
            "after=0&region=eu-west-1".to_string(),
            "after=0&applied=3&region=eu-west-1&limit=1".to_string(),
        ] {
            let got = changes(&http, &primary, &query, secret).await;
            assert_refused(
                &got,
                StatusCode::UNAUTHORIZED,
                "NotAuthorizedException",
                &format!("{what}: {query}"),
            );
            let message = got.1["error"]["message"].as_str().unwrap();
            assert!(!message.contains(TEST_PEER_SECRET), "{message}");
        }
    }
    assert_eq!(
        counted(&http, &primary).await,
        Some(head),
        "watermark unchanged"
    );
    assert_eq!(status(&http, &primary).await["degraded"], false);
    // The replicator itself (with the secret) keeps reporting.
    let (s, body) = create_namespace(&http, &primary, &short("sec")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(wait_counted_at_head(&http, &primary).await, head + 1);
    secondary.shutdown().await;
    primary.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_region_without_a_peer_secret_refuses_every_report() {
    let http = reqwest::Client::new();
    let primary = TestRegion::start_with(env(&[("PANGOLIN_REPLICATION__PEER_SECRET", "")]))
        .await
        .expect("primary without a secret");
    assert!(primary.config.replication.peer_secret().is_none());
    let got = changes(
        &http,
        &primary,
        "after=0&region=eu-west-1&applied=0",
        Some(TEST_PEER_SECRET),
    )
    .await;
    assert_refused(
        &got,
        StatusCode::UNAUTHORIZED,
        "NotAuthorizedException",
        "fail closed",
    );
    assert!(
        got.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no replication.peer_secret"),
        "{}",
        got.1
    );
    // Its secondary (which has one) is refused too, and says so in its status.
    let secondary = TestRegion::start_secondary_of(&primary)
        .await
        .expect("secondary");
    eventually(
        "the secondary to report the refusal",
        Duration::from_secs(30),
        || async {
            let s = status(&http, &secondary).await;
            s["last_error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("401") && m.contains("peer_secret"))
        },
    )
    .await;
    let st = status(&http, &primary).await;
    assert_eq!(st["secondaries"], Value::Array(Vec::new()), "{st}");
    secondary.shutdown().await;
    primary.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_watermarks_do_not_acknowledge_sync_commits() {
    let http = reqwest::Client::new();
    let (primary, secondary) = start_pair(
        &http,
        &[
            ("PANGOLIN_REPLICATION__MODE", "sync"),
            ("PANGOLIN_REPLICATION__SYNC_POLICY", "block"),
            ("PANGOLIN_REPLICATION__SYNC_TIMEOUT_MS", "3000"),
        ],
    )
    .await;
    // Sync replication works: acknowledged once the secondary applied it.
    let (s, body) = create_namespace(&http, &primary, &short("ok")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let head = wait_counted_at_head(&http, &primary).await;

    // The secondary stops applying; a sync commit waits for it...
    pause_and_settle(&http, &secondary).await;
    let ns = short("forged");
    let url = format!("{}/namespaces", primary.prefix_url());
    let commit = tokio::spawn({
        let http = http.clone();
        let ns = ns.clone();
        async move {
            let started = Instant::now();
            let resp = http
                .post(url)
                .json(&serde_json::json!({ "namespace": [ns] }))
                .send()
                .await
                .expect("the primary answers");
            let status = resp.status();
            (
                status,
                resp.json::<Value>().await.unwrap_or(Value::Null),
                started.elapsed(),
            )
        }
    });
    let seq = head + 1;
    eventually(
        "the commit to be in the log",
        Duration::from_secs(10),
        || async { status(&http, &primary).await["watermark"].as_i64() == Some(seq) },
    )
    .await;

    // ...while someone holding the secret claims eu-west-1 applied it.
    for _ in 0..5 {
        // Beyond the head.
        let got = changes(
            &http,
            &primary,
            "after=0&region=eu-west-1&applied=999999999",
            Some(TEST_PEER_SECRET),
        )
        .await;
        assert_refused(
            &got,
            StatusCode::BAD_REQUEST,
            "BadRequestException",
            "beyond the head",
        );
        // Never shipped to eu-west-1, and not the pull's `after`.
        for after in [0, head] {
            let got = changes(
                &http,
                &primary,
                &format!("after={after}&region=eu-west-1&applied={seq}"),
                Some(TEST_PEER_SECRET),
            )
            .await;
            assert_refused(
                &got,
                StatusCode::BAD_REQUEST,
                "BadRequestException",
                "beyond what was shipped",
            );
        }
        // `applied` = `after`: a pull like a replicator's after a restart, answered, but
        // not counted.
        let got = changes(
            &http,
            &primary,
            &format!("after={seq}&region=eu-west-1&applied={seq}"),
            Some(TEST_PEER_SECRET),
        )
        .await;
        assert_eq!(got.0, StatusCode::OK, "{}", got.1);
        assert_eq!(counted(&http, &primary).await, Some(head));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (s, body, took) = commit.await.expect("commit task");
    assert_eq!(
        s,
        StatusCode::SERVICE_UNAVAILABLE,
        "the forged report acknowledged it: {body}"
    );
    assert!(took >= Duration::from_millis(2900), "{took:?}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("IS durable") && message.contains("eu-west-1"),
        "{message}"
    );
    assert_eq!(counted(&http, &primary).await, Some(head));

    // Resumed, the secondary applies it for real; sync commits are acknowledged again.
    post_action(&http, &secondary, "resume").await;
    let (s, body) = create_namespace(&http, &primary, &short("after")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(wait_counted_at_head(&http, &primary).await, seq + 1);
    let resp = http
        .get(format!("{}/namespaces/{ns}", secondary.prefix_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    secondary.shutdown().await;
    primary.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_watermarks_do_not_clear_a_degradation() {
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
    let head = wait_counted_at_head(&http, &primary).await;
    pause_and_settle(&http, &secondary).await;
    let (s, body) = create_namespace(&http, &primary, &short("deg")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(status(&http, &primary).await["degraded"], true);
    let seq = head + 1;
    for query in [
        format!("after={seq}&region=eu-west-1&applied={seq}"),
        format!("after=0&region=eu-west-1&applied={seq}"),
        "after=0&region=eu-west-1&applied=999999999".to_string(),
    ] {
        for secret in [None, Some(TEST_PEER_SECRET)] {
            let _ = changes(&http, &primary, &query, secret).await;
        }
    }
    let st = status(&http, &primary).await;
    assert_eq!(
        st["degraded"], true,
        "a forged report cleared the degradation: {st}"
    );
    assert_eq!(counted(&http, &primary).await, Some(head));

    post_action(&http, &secondary, "resume").await;
    eventually(
        "the degradation to clear",
        Duration::from_secs(30),
        || async { status(&http, &primary).await["degraded"] == false },
    )
    .await;
    assert_eq!(counted(&http, &primary).await, Some(seq));
    secondary.shutdown().await;
    primary.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_replication_works_across_a_restart_of_the_primary() {
    let http = reqwest::Client::new();
    let (primary, secondary) = start_pair(
        &http,
        &[
            ("PANGOLIN_REPLICATION__MODE", "sync"),
            ("PANGOLIN_REPLICATION__SYNC_TIMEOUT_MS", "20000"),
        ],
    )
    .await;
    let (s, body) = create_namespace(&http, &primary, &short("pre")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let head = wait_counted_at_head(&http, &primary).await;

    // Restarted, the primary has shipped nothing yet: the secondary's pulls are answered
    // (its report is not counted until something is shipped to it).
    let primary = primary.restart().await.expect("restart the primary");
    eventually(
        "the secondary's pull after the restart",
        Duration::from_secs(30),
        || async {
            secondary_view(&http, &primary, "eu-west-1")
                .await
                .is_some_and(|s| s["healthy"] == true)
        },
    )
    .await;
    assert!(counted(&http, &primary).await.is_none_or(|a| a <= head));

    // A sync commit is acknowledged once the secondary applied it.
    for _ in 0..2 {
        let ns = short("post");
        let (s, body) = create_namespace(&http, &primary, &ns).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let resp = http
            .get(format!("{}/namespaces/{ns}", secondary.prefix_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "acknowledged before the secondary had it"
        );
    }
    assert_eq!(wait_counted_at_head(&http, &primary).await, head + 2);
    secondary.shutdown().await;
    primary.shutdown().await;
}
