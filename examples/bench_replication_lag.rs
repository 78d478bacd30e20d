//! Replication lag under a sustained commit load, across a slow link.
//!
//! Starts two in-process regions: the primary `us-east-1` and a secondary `eu-west-1` that
//! reaches the primary's catalog AND S3 endpoint only through a TCP proxy adding `--delay-ms`
//! (default 80) in each direction. `--writers` clients (default 4) each append a small
//! Parquet file to their own table at the primary and commit, in a closed loop (or every
//! `--interval-ms`), for `--seconds` (default 20). Meanwhile a sampler reads both regions'
//! watermarks every 20 ms. Prints the commit throughput, the lag in records (per sample) and
//! in seconds (per commit: from its commit at the primary to the first sample that saw it
//! applied at the secondary) as p50/p95/p99/max, and how long the secondary needed to drain
//! after the load stopped. A figure-printing command, not a test. `PANGOLIN_LOG` (a tracing
//! filter, e.g. `pangolin::replication=debug`) turns on the nodes' logs.
//!
//! `--parallelism P` sets the secondary's `replication.copy_parallelism` (requests in flight
//! per stage of the replicator's page preparation; default 16).
//!
//! With `--sync` the primary runs every catalog in sync mode (each commit waits for the
//! secondary), and the commit latency shows what that costs.
//!
//! ```sh
//! cargo run --release --example bench_replication_lag -- --writers 4 --seconds 20 --delay-ms 80
//! cargo run --release --example bench_replication_lag -- --sync
//! ```

#[path = "../tests/it/common/mod.rs"]
#[allow(dead_code, unused_imports)] // the test fixtures, of which this uses a few
mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iceberg::{Catalog, NamespaceIdent, TableCreation};
use pangolin::config::RegionPeer;
use pangolin::server::{self, RunningRegion};
use pangolin::testing::TestRegion;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

struct Args {
    writers: usize,
    seconds: u64,
    delay_ms: u64,
    interval_ms: u64,
    sync: bool,
    /// The secondary's `replication.copy_parallelism` (None: the default).
    parallelism: Option<u64>,
}

fn parse_args() -> Args {
    let mut a = Args {
        writers: 4,
        seconds: 20,
        delay_ms: 80,
        interval_ms: 0,
        sync: false,
        parallelism: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--sync" {
            a.sync = true;
            continue;
        }
        let mut value = || {
            it.next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{flag} needs a number"))
        };
        match flag.as_str() {
            "--writers" => a.writers = value() as usize,
            "--seconds" => a.seconds = value(),
            "--delay-ms" => a.delay_ms = value(),
            "--interval-ms" => a.interval_ms = value(),
            "--parallelism" => a.parallelism = Some(value()),
            other => panic!(
                "unknown argument {other}; use --writers N --seconds S --delay-ms D --interval-ms I --parallelism P [--sync]"
            ),
        }
    }
    a
}

// ---- a TCP proxy adding a fixed delay each way --------------------------------------------

/// Listens on a free port and relays every connection to `target`, each chunk delivered
/// `delay` after it was read (pipelined: the delay adds latency, not a bandwidth cap).
async fn delay_proxy(target: SocketAddr, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
    let addr = listener.local_addr().expect("proxy addr");
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(outbound) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::join!(pipe(ri, wo, delay), pipe(ro, wi, delay));
            });
        }
    });
    addr
}

async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0
                || tx
                    .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
            {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

// ---- regions ------------------------------------------------------------------------------

/// A secondary `eu-west-1` following `primary`, reaching it at `catalog_url` / `s3_endpoint`.
async fn start_secondary(
    primary: &TestRegion,
    catalog_url: String,
    s3_endpoint: String,
    dir: &tempfile::TempDir,
    parallelism: Option<u64>,
) -> RunningRegion {
    let mut env = vec![
        (
            "PANGOLIN_DATA_DIR".to_string(),
            dir.path().display().to_string(),
        ),
        (
            "PANGOLIN_CATALOG__LISTEN".to_string(),
            "127.0.0.1:0".to_string(),
        ),
        (
            "PANGOLIN_STORAGE__EMBEDDED__LISTEN".to_string(),
            "127.0.0.1:0".to_string(),
        ),
        ("PANGOLIN_REGION__NAME".to_string(), "eu-west-1".to_string()),
        (
            "PANGOLIN_STORAGE__REGION".to_string(),
            "eu-west-1".to_string(),
        ),
        (
            "PANGOLIN_DATABASE__URL".to_string(),
            format!("sqlite://{}/eu-west-1/catalog.db", dir.path().display()),
        ),
    ];
    if let Some(p) = parallelism {
        env.push((
            "PANGOLIN_REPLICATION__COPY_PARALLELISM".to_string(),
            p.to_string(),
        ));
    }
    let mut config = pangolin::dev::standalone_config(env).expect("secondary config");
    config.regions = vec![RegionPeer {
        name: primary.config.region.name.clone(),
        catalog_url,
        s3_endpoint: Some(s3_endpoint),
        s3_region: primary.s3_region.clone(),
        access_key_id: Some(primary.access_key.clone()),
        secret_access_key: Some(primary.secret_key.clone()),
        path_style: true,
    }];
    config.replication.primary = Some(primary.config.region.name.clone());
    server::start(&config, CancellationToken::new())
        .await
        .expect("start the secondary")
}

async fn watermark(http: &reqwest::Client, catalog_url: &str) -> Option<i64> {
    let url = format!("{catalog_url}/api/v1/replication/status");
    let body: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
    body["watermark"].as_i64()
}

fn percentiles(mut v: Vec<f64>) -> String {
    if v.is_empty() {
        return "n/a".into();
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| v[(((v.len() - 1) as f64) * p).round() as usize];
    format!(
        "p50 {:.3}  p95 {:.3}  p99 {:.3}  max {:.3}  (n={})",
        at(0.50),
        at(0.95),
        at(0.99),
        v[v.len() - 1],
        v.len()
    )
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = parse_args();
    // `PANGOLIN_LOG=pangolin::replication=debug` shows where each commit's time goes.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("PANGOLIN_LOG") {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let delay = Duration::from_millis(args.delay_ms);
    let http = reqwest::Client::new();

    let overrides = if args.sync {
        vec![("PANGOLIN_REPLICATION__MODE".to_string(), "sync".to_string())]
    } else {
        Vec::new()
    };
    let primary = TestRegion::start_with(overrides)
        .await
        .expect("start the primary");
    let catalog_proxy = delay_proxy(primary.node().catalog_addr, delay).await;
    let s3_proxy = delay_proxy(primary.node().s3_addr.expect("embedded S3"), delay).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let secondary = start_secondary(
        &primary,
        format!("http://{catalog_proxy}"),
        format!("http://{s3_proxy}"),
        &dir,
        args.parallelism,
    )
    .await;
    let secondary_url = format!("http://{}", secondary.catalog_addr);

    // One table per writer.
    let catalog = Arc::new(common::connect(&primary).await);
    let ns = NamespaceIdent::new(common::short("bench"));
    catalog
        .create_namespace(&ns, HashMap::new())
        .await
        .expect("create namespace");
    let mut tables = Vec::new();
    for w in 0..args.writers {
        let creation = TableCreation::builder()
            .name(format!("t{w}"))
            .schema(common::table_schema())
            .build();
        tables.push(
            catalog
                .create_table(&ns, creation)
                .await
                .expect("create table"),
        );
    }
    // Start from a caught-up secondary.
    let head = watermark(&http, &primary.catalog_url).await.unwrap_or(0);
    while watermark(&http, &secondary_url).await.unwrap_or(0) < head {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "primary us-east-1 -> secondary eu-west-1 over a link adding {} ms each way (catalog and S3); \
         {} mode; {} writers, {} s, {}",
        args.delay_ms,
        if args.sync { "sync" } else { "async" },
        args.writers,
        args.seconds,
        if args.interval_ms == 0 {
            "closed loop".to_string()
        } else {
            format!("one commit per writer every {} ms", args.interval_ms)
        }
    );

    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let started = Instant::now();
    let mut writers = Vec::new();
    for (w, table) in tables.into_iter().enumerate() {
        let latencies = latencies.clone();
        let (catalog, stop, commits, failures) = (
            catalog.clone(),
            stop.clone(),
            commits.clone(),
            failures.clone(),
        );
        let interval = Duration::from_millis(args.interval_ms);
        writers.push(tokio::spawn(async move {
            let mut table = table;
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let began = Instant::now();
                let files = common::write_data_file(&table, &[w as i64 * 1_000_000 + n]).await;
                let tx = iceberg::transaction::Transaction::new(&table);
                let action = iceberg::transaction::ApplyTransactionAction::apply(
                    tx.fast_append().add_data_files(files),
                    tx,
                );
                match action {
                    Ok(tx) => match tx.commit(catalog.as_ref()).await {
                        Ok(t) => {
                            if let Ok(mut l) = latencies.lock() {
                                l.push(began.elapsed().as_secs_f64());
                            }
                            table = t;
                            commits.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            eprintln!("writer {w}: commit failed: {e}");
                            table = catalog
                                .load_table(table.identifier())
                                .await
                                .expect("reload");
                        }
                    },
                    Err(e) => panic!("writer {w}: {e}"),
                }
                n += 1;
                if let Some(rest) = interval.checked_sub(began.elapsed()) {
                    tokio::time::sleep(rest).await;
                }
            }
        }));
    }

    // Sampler: both watermarks every 20 ms; when each seq was first seen committed at the
    // primary and applied at the secondary.
    let mut lag_records = Vec::new();
    let mut committed_at: HashMap<i64, Instant> = HashMap::new();
    let mut applied_at: HashMap<i64, Instant> = HashMap::new();
    let (mut last_p, mut last_s) = (head, head);
    let load_ends = started + Duration::from_secs(args.seconds);
    let mut drained_at = None;
    loop {
        let now = Instant::now();
        if now >= load_ends && !stop.swap(true, Ordering::Relaxed) {
            println!("load stopped; waiting for the secondary to drain");
        }
        let (p, s) = tokio::join!(
            watermark(&http, &primary.catalog_url),
            watermark(&http, &secondary_url)
        );
        let at = Instant::now();
        if let Some(p) = p {
            for seq in last_p + 1..=p {
                committed_at.insert(seq, at);
            }
            last_p = last_p.max(p);
        }
        if let Some(s) = s {
            for seq in last_s + 1..=s {
                applied_at.insert(seq, at);
            }
            last_s = last_s.max(s);
        }
        if at < load_ends {
            lag_records.push((last_p - last_s).max(0) as f64);
        }
        if stop.load(Ordering::Relaxed) && writers.iter().all(|w| w.is_finished()) {
            let final_head = watermark(&http, &primary.catalog_url)
                .await
                .unwrap_or(last_p);
            if last_s >= final_head {
                drained_at = Some(at);
                break;
            }
            if at > load_ends + Duration::from_secs(300) {
                println!("the secondary did not drain within 5 minutes");
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let load_seconds = args.seconds as f64;
    let total = commits.load(Ordering::Relaxed);
    let lag_seconds: Vec<f64> = committed_at
        .iter()
        .filter_map(|(seq, c)| {
            applied_at
                .get(seq)
                .map(|a| a.saturating_duration_since(*c).as_secs_f64())
        })
        .collect();
    println!(
        "commits: {total} in {load_seconds:.0} s = {:.1} commits/s ({} failed)",
        total as f64 / load_seconds,
        failures.load(Ordering::Relaxed)
    );
    let latencies = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    println!(
        "commit latency at the primary (write file + commit), seconds: {}",
        percentiles(latencies)
    );
    println!(
        "lag, records (per 20 ms sample): {}",
        percentiles(lag_records)
    );
    println!(
        "lag, seconds (per commit, ±20 ms): {}",
        percentiles(lag_seconds)
    );
    if let Some(d) = drained_at {
        println!(
            "drained {:.2} s after the load stopped",
            d.saturating_duration_since(load_ends).as_secs_f64()
        );
    }
    let status: Value = http
        .get(format!("{secondary_url}/api/v1/replication/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("status body");
    println!(
        "secondary: applied {} records, copied {} objects / {} bytes, halted {}",
        status["applied_records"],
        status["objects_copied"],
        status["bytes_copied"],
        status["halted"]
    );
    secondary.stop().await;
    primary.shutdown().await;
}
