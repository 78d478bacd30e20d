//! loadTable throughput and latency benchmark.
//!
//! Starts an in-process region (SQLite by default, PostgreSQL with `--postgres URL`), creates
//! `--tables N` tables, then for `--seconds S` runs `--concurrency C` closed-loop clients
//! loading random tables. For reference it then serves the very same response bytes from a
//! bare axum handler and measures that with the same load. Prints requests/s and latency
//! percentiles for both, and the ratio.
//!
//! ```sh
//! cargo run --release --example bench_load_table -- --tables 1000 --seconds 10
//! cargo run --release --example bench_load_table -- --postgres postgres://postgres@127.0.0.1:5432/postgres
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pangolin::testing::TestRegion;
use serde_json::json;

struct Args {
    tables: usize,
    seconds: u64,
    concurrency: usize,
    postgres: Option<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        tables: 1000,
        seconds: 10,
        concurrency: 32,
        postgres: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let val = it.next().unwrap_or_default();
        match flag.as_str() {
            "--tables" => a.tables = val.parse().expect("--tables N"),
            "--seconds" => a.seconds = val.parse().expect("--seconds S"),
            "--concurrency" => a.concurrency = val.parse().expect("--concurrency C"),
            "--postgres" => a.postgres = Some(val),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

struct Figures {
    requests: usize,
    rps: f64,
    p50: Duration,
    p95: Duration,
    p99: Duration,
}

async fn load(urls: Arc<Vec<String>>, seconds: u64, concurrency: usize) -> Figures {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("client");
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (client, urls, stop) = (client.clone(), urls.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = w * 7919;
            while !stop.load(Ordering::Relaxed) {
                i = (i + 104_729) % urls.len();
                let t = Instant::now();
                let resp = client.get(&urls[i]).send().await.expect("request");
                assert!(resp.status().is_success(), "status {}", resp.status());
                let _ = resp.bytes().await.expect("body");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Figures {
        requests: all.len(),
        rps: all.len() as f64 / elapsed,
        p50: pct(0.50),
        p95: pct(0.95),
        p99: pct(0.99),
    }
}

fn print(name: &str, f: &Figures) {
    println!(
        "{name:<28} {:>8} req  {:>9.0} req/s  p50 {:>7.2} ms  p95 {:>7.2} ms  p99 {:>7.2} ms",
        f.requests,
        f.rps,
        f.p50.as_secs_f64() * 1e3,
        f.p95.as_secs_f64() * 1e3,
        f.p99.as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args();
    let mut bench_db = None;
    let region = match &args.postgres {
        Some(url) => {
            let db = format!("pangolin_bench_{}", uuid::Uuid::new_v4().simple());
            let admin = sqlx::PgPool::connect(url).await?;
            sqlx::query(&format!("CREATE DATABASE {db}"))
                .execute(&admin)
                .await?;
            let base = url.rsplit_once('/').map(|(b, _)| b).unwrap_or(url);
            let region = TestRegion::start_with_database(&format!("{base}/{db}")).await?;
            bench_db = Some((admin, db));
            region
        }
        None => TestRegion::start().await?,
    };
    let backend = if args.postgres.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let http = reqwest::Client::new();
    let prefix = region.prefix_url();
    http.post(format!("{prefix}/namespaces"))
        .json(&json!({"namespace": ["bench"]}))
        .send()
        .await?
        .error_for_status()?;
    let schema = json!({"type": "struct", "fields": [
        {"id": 1, "name": "id", "required": true, "type": "long"},
        {"id": 2, "name": "data", "required": false, "type": "string"}]});
    let created = Instant::now();
    let mut urls = Vec::with_capacity(args.tables);
    for chunk in (0..args.tables).collect::<Vec<_>>().chunks(64) {
        let mut batch = Vec::new();
        for i in chunk {
            let (http, prefix, schema) = (http.clone(), prefix.clone(), schema.clone());
            let name = format!("t{i:06}");
            batch.push(tokio::spawn(async move {
                http.post(format!("{prefix}/namespaces/bench/tables"))
                    .json(&json!({"name": name, "schema": schema}))
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map(|_| name)
            }));
        }
        for b in batch {
            let name = b.await??;
            urls.push(format!("{prefix}/namespaces/bench/tables/{name}"));
        }
    }
    println!(
        "backend {backend}: created {} tables in {:.1}s; load {}s x {} clients",
        args.tables,
        created.elapsed().as_secs_f64(),
        args.seconds,
        args.concurrency
    );
    let urls = Arc::new(urls);
    // Warm the metadata cache and connection pools.
    load(urls.clone(), 1, args.concurrency).await;
    let catalog = load(urls.clone(), args.seconds, args.concurrency).await;
    print(&format!("loadTable ({backend})"), &catalog);

    // Reference: a bare axum server returning the same bytes.
    let body: Bytes = http.get(&urls[0]).send().await?.bytes().await?;
    let app = axum::Router::new().route(
        "/v1/{prefix}/namespaces/{ns}/tables/{table}",
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let bare_addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    let bare_urls: Vec<String> = urls
        .iter()
        .map(|u| u.replace(&region.catalog_url, &format!("http://{bare_addr}")))
        .collect();
    let bare = load(Arc::new(bare_urls), args.seconds, args.concurrency).await;
    print("bare axum, same bytes", &bare);
    println!("ratio loadTable / bare axum: {:.2}", catalog.rps / bare.rps);
    region.shutdown().await;
    if let Some((admin, db)) = bench_db {
        sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)"))
            .execute(&admin)
            .await?;
    }
    Ok(())
}
