//! Limits of the catalog listener against an in-process region, over raw sockets: a client
//! that sends half a request head is disconnected within `catalog.header_read_timeout_ms`, a
//! body that trickles in past `catalog.body_read_timeout_ms` gets 408, a kept-alive
//! connection lives until `catalog.idle_timeout_ms` (not the header timeout), connections
//! beyond `catalog.max_connections` wait in the accept backlog, shutdown does not wait for
//! half-sent heads, and an internal failure answers a request id and no internal detail
//! (which goes to the log under the same id).

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use pangolin::testing::TestRegion;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::get_json;

/// Slack for timing assertions on a loaded 2-core test machine.
const SLACK: Duration = Duration::from_millis(1500);

async fn region_with(limits: &[(&str, &str)]) -> TestRegion {
    let env = limits
        .iter()
        .map(|(k, v)| (format!("PANGOLIN_CATALOG__{k}"), v.to_string()))
        .collect();
    TestRegion::start_with(env).await.expect("region starts")
}

fn addr_of(region: &TestRegion) -> String {
    region.catalog_url.trim_start_matches("http://").to_string()
}

/// Reads until the server closes the connection (or `cap` passes): (time taken, bytes read,
/// whether it closed).
async fn read_until_closed(stream: &mut TcpStream, cap: Duration) -> (Duration, Vec<u8>, bool) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = cap.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return (started.elapsed(), got, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (started.elapsed(), got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one complete answer to a GET (headers plus a `content-length` body).
async fn read_answer(stream: &mut TcpStream, cap: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let started = Instant::now();
    loop {
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return Some(text);
            }
        }
        let left = cap.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
}

const GET_LIVE: &[u8] = b"GET /health/live HTTP/1.1\r\nHost: pangolin\r\n\r\n";

#[tokio::test]
async fn half_sent_heads_are_disconnected_within_the_header_timeout() {
    let region = region_with(&[("HEADER_READ_TIMEOUT_MS", "500")]).await;
    let addr = addr_of(&region);
    let mut clients = Vec::new();
    for i in 0..50 {
        let addr = addr.clone();
        clients.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(&addr).await.unwrap();
            match i % 3 {
                // Half a head, then silence.
                0 => s
                    .write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                    .await
                    .unwrap(),
                // Connected, nothing sent.
                1 => {}
                // A head trickling in byte by byte: the clock does not restart.
                _ => {
                    let (mut r, mut w) = s.into_split();
                    let writer = tokio::spawn(async move {
                        let head = b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: abcdefghijklmnopqrstuvwxyz";
                        for b in head {
                            if w.write_all(&[*b]).await.is_err() {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    });
                    let started = Instant::now();
                    let mut buf = [0u8; 256];
                    let closed = tokio::time::timeout(Duration::from_secs(10), r.read(&mut buf))
                        .await
                        .is_ok();
                    writer.abort();
                    return (started.elapsed(), closed);
                }
            }
            let (took, got, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
            assert!(got.is_empty(), "no answer to an incomplete head: {got:?}");
            (took, closed)
        }));
    }
    for c in clients {
        let (took, closed) = c.await.unwrap();
        assert!(closed, "the connection is still open after {took:?}");
        assert!(
            took < Duration::from_millis(500) + SLACK,
            "held for {took:?} with a 500 ms header timeout"
        );
    }
    // The listener still serves complete requests.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(GET_LIVE).await.unwrap();
    let answer = read_answer(&mut s, Duration::from_secs(5)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    region.shutdown().await;
}

#[tokio::test]
async fn kept_alive_connections_live_until_the_idle_timeout_not_the_header_timeout() {
    let region = region_with(&[
        ("HEADER_READ_TIMEOUT_MS", "500"),
        ("IDLE_TIMEOUT_MS", "2500"),
    ])
    .await;
    let mut s = TcpStream::connect(addr_of(&region)).await.unwrap();
    s.write_all(GET_LIVE).await.unwrap();
    let first = read_answer(&mut s, Duration::from_secs(5)).await.unwrap();
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // Idle for longer than the header timeout: still open.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    s.write_all(GET_LIVE).await.unwrap();
    let second = read_answer(&mut s, Duration::from_secs(5)).await;
    assert!(
        second
            .as_deref()
            .is_some_and(|a| a.starts_with("HTTP/1.1 200")),
        "a kept-alive connection idle for 1.2 s was closed: {second:?}"
    );
    let (took, got, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(closed && got.is_empty(), "{got:?}");
    assert!(
        took >= Duration::from_millis(2000) && took < Duration::from_millis(2500) + SLACK,
        "closed after {took:?} idle with a 2.5 s idle timeout"
    );
    region.shutdown().await;
}

#[tokio::test]
async fn a_body_slower_than_the_body_timeout_gets_408() {
    let region = region_with(&[("BODY_READ_TIMEOUT_MS", "1000")]).await;
    let body = json!({"namespace": ["slow"], "properties": {"k": "v".repeat(200)}}).to_string();
    let head = format!(
        "POST /v1/{}/namespaces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        region.warehouse,
        body.len()
    );
    let s = TcpStream::connect(addr_of(&region)).await.unwrap();
    let (mut r, mut w) = s.into_split();
    w.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        // 10 bytes a second: the whole body would take about 25 s.
        for chunk in body.as_bytes().chunks(1) {
            if w.write_all(chunk).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(15), r.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    };
    let took = started.elapsed();
    writer.abort();
    assert!(closed, "the connection stayed open for {took:?}");
    assert!(
        took < Duration::from_millis(1000) + SLACK,
        "the slow body was accepted for {took:?} with a 1 s body timeout"
    );
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let (headers, json_body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        headers.to_ascii_lowercase().contains("connection: close"),
        "{headers}"
    );
    let id = headers
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("an x-request-id header");
    let v: Value = serde_json::from_str(json_body).unwrap();
    assert_eq!(v["error"]["code"], 408, "{v}");
    assert_eq!(v["error"]["type"], "RequestTimeoutException", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains(id), "{v}");
    // Nothing was created from the partial body.
    let http = reqwest::Client::new();
    let (status, _) = get_json(&http, &format!("{}/namespaces/slow", region.prefix_url())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    region.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_max_connections_wait_in_the_backlog() {
    let region = region_with(&[("MAX_CONNECTIONS", "2")]).await;
    let addr = addr_of(&region);
    // Two kept-alive connections take both slots.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(GET_LIVE).await.unwrap();
        let a = read_answer(&mut s, Duration::from_secs(5)).await.unwrap();
        assert!(a.starts_with("HTTP/1.1 200"), "{a}");
        held.push(s);
    }
    // A third connects (the kernel's backlog takes it) but is not served...
    let mut third = TcpStream::connect(&addr).await.unwrap();
    third.write_all(GET_LIVE).await.unwrap();
    assert_eq!(
        read_answer(&mut third, Duration::from_millis(1500)).await,
        None,
        "a third connection was served while two held the only two slots"
    );
    // ...until a slot frees.
    drop(held.pop());
    let started = Instant::now();
    let a = read_answer(&mut third, Duration::from_secs(5))
        .await
        .expect("the waiting connection is served once a slot frees");
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    assert!(started.elapsed() < SLACK, "{:?}", started.elapsed());
    region.shutdown().await;
}

#[tokio::test]
async fn shutdown_does_not_wait_for_half_sent_heads_or_idle_connections() {
    let region = region_with(&[]).await; // default timeouts: 10 s header, 120 s idle
    let addr = addr_of(&region);
    let mut half = TcpStream::connect(&addr).await.unwrap();
    half.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(GET_LIVE).await.unwrap();
    read_answer(&mut idle, Duration::from_secs(5))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(5), region.shutdown()).await;
    assert!(
        stopped.is_ok(),
        "shutdown took more than 5 s with an idle and a half-sent connection open"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    for s in [&mut half, &mut idle] {
        let (_, _, closed) = read_until_closed(s, Duration::from_secs(2)).await;
        assert!(closed);
    }
}

// --- Internal failures -------------------------------------------------------------------

/// Log lines written by the test process (a tracing subscriber installed once).
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = LogWriter(buf.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter("pangolin=info")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        buf
    })
    .clone()
}

#[derive(Clone)]
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A TCP relay in front of the embedded S3 endpoint, which the test can take down (the
/// region's object storage becomes unreachable: connection refused).
struct S3Relay {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl S3Relay {
    async fn start(target: String) -> S3Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let target = target.clone();
                conns.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        S3Relay { port, task }
    }

    /// Stops listening and cuts every relayed connection.
    fn take_down(self) {
        self.task.abort();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Fragments of SDK and connector internals that must never reach a client.
const INTERNALS: &[&str] = &[
    "SdkError",
    "DispatchFailure",
    "dispatch failure",
    "ConnectorError",
    "ErrorMetadata",
    "Unhandled",
    "SdkBody",
    "ServiceError",
    "Error {",
    "extensions",
    "hyper",
    "127.0.0.1",
    "storage error",
];

fn assert_no_internals(text: &str) {
    for bad in INTERNALS {
        assert!(!text.contains(bad), "`{bad}` in an answer: {text}");
    }
}

/// Checks a 500 answer: generic message naming the request id of its `x-request-id` header.
fn assert_sanitized_500(status: StatusCode, id: Option<&str>, text: &str) -> String {
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{text}");
    assert_no_internals(text);
    let v: Value = serde_json::from_str(text).expect("an Iceberg error model body");
    assert_eq!(v["error"]["type"], "ServiceFailureException", "{v}");
    assert_eq!(v["error"]["code"], 500, "{v}");
    let id = id.expect("an x-request-id header");
    assert_eq!(
        v["error"]["message"],
        format!("Internal server error; request id {id}"),
        "{v}"
    );
    id.to_string()
}

#[tokio::test]
async fn storage_failures_answer_a_request_id_and_log_the_detail() {
    let logs = logs();
    let s3_port = free_port();
    let relay = S3Relay::start(format!("127.0.0.1:{s3_port}")).await;
    let region = TestRegion::start_with(vec![
        (
            "PANGOLIN_STORAGE__EMBEDDED__LISTEN".into(),
            format!("127.0.0.1:{s3_port}"),
        ),
        (
            "PANGOLIN_STORAGE__ENDPOINT".into(),
            format!("http://127.0.0.1:{}", relay.port),
        ),
    ])
    .await
    .expect("region starts");
    let http = reqwest::Client::new();
    let prefix = region.prefix_url();
    let resp = http
        .post(format!("{prefix}/namespaces"))
        .json(&json!({"namespace": ["ns"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Every answer carries a request id.
    let id = resp.headers().get("x-request-id").expect("x-request-id");
    assert!(!id.is_empty());

    // The region's object storage goes away: writing a table's metadata fails.
    relay.take_down();
    let table = json!({"name": "t", "schema": {"type": "struct", "schema-id": 0, "fields": [
        {"id": 1, "name": "id", "required": true, "type": "long"}]}});
    let resp = http
        .post(format!("{prefix}/namespaces/ns/tables"))
        .json(&table)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let header = resp
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap();
    let id = assert_sanitized_500(status, header.as_deref(), &text);

    // The detail is in the log, under the same request id.
    let logged = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    let line = logged
        .lines()
        .find(|l| l.contains(&id) && l.contains("request failed"))
        .unwrap_or_else(|| panic!("no log line of request {id}:\n{logged}"));
    assert!(
        line.contains("dispatch failure") || line.contains("DispatchFailure"),
        "{line}"
    );

    // A caller's own request id is kept (a secondary forwarding a write passes its own).
    let resp = http
        .post(format!("{prefix}/namespaces/ns/tables"))
        .header("x-request-id", "caller-chosen-id.42")
        .json(&table)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let header = resp
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap();
    assert_eq!(
        assert_sanitized_500(status, header.as_deref(), &text),
        "caller-chosen-id.42"
    );
    region.shutdown().await;
}

#[tokio::test]
async fn bad_locations_never_answer_storage_internals() {
    let region = TestRegion::start().await.expect("region starts");
    let http = reqwest::Client::new();
    let prefix = region.prefix_url();
    let resp = http
        .post(format!("{prefix}/namespaces"))
        .json(&json!({"namespace": ["ns"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let schema = json!({"type": "struct", "schema-id": 0, "fields": [
        {"id": 1, "name": "id", "required": true, "type": "long"}]});
    let attempts = [
        (
            "tables",
            json!({"name": "t1", "location": "s3://no-such-bucket/x", "schema": schema}),
        ),
        (
            "register",
            json!({"name": "t2", "metadata-location": "s3://nob/x.json"}),
        ),
        (
            "register",
            json!({"name": "t3", "metadata-location": format!("s3://{}/a/../b.json", region.warehouse)}),
        ),
        (
            "register",
            json!({"name": "t4", "metadata-location": "s3://Bad_Bucket!/b.json"}),
        ),
    ];
    for (op, body) in attempts {
        let resp = http
            .post(format!("{prefix}/namespaces/ns/{op}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let header = resp
            .headers()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_string());
        let text = resp.text().await.unwrap();
        // A client error (400: the catalog checks locations before it touches storage), or
        // else a sanitized 500.
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            assert_sanitized_500(status, header.as_deref(), &text);
        } else {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{op} {body}: {text}");
            for bad in &INTERNALS[..9] {
                assert!(!text.contains(bad), "`{bad}` in {op} {body}: {text}");
            }
        }
    }
    region.shutdown().await;
}
