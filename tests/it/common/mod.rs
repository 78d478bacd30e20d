//! Fixtures shared by the suites of the `it` test binary (and by
//! `examples/bench_replication_lag.rs`, which includes this module by path). Everything is
//! re-exported here, so a suite writes `use crate::common::{send, PgDatabase, ...}`:
//!
//! - `rest`: the REST API over HTTP as JSON: [`send`], [`get_json`], [`assert_error`], the
//!   table schemas requests carry, namespace and table URLs, a table's pointer;
//! - `iceberg_client`: a region driven with iceberg-rust 0.10 (a REST catalog client, the
//!   region's object store, Parquet appends, scans);
//! - `replication`: a region's replication status, actions, change log and `/metrics` over
//!   HTTP, waiting for a secondary to catch up, secondaries that give up quickly;
//! - `pg`: [`PgDatabase`], a fresh PostgreSQL database on `PANGOLIN_TEST_PG_URL`;
//! - `store`: what store-level suites write with ([`ctx`], [`ns`]).

mod iceberg_client;
mod pg;
mod replication;
mod rest;
mod store;

pub use iceberg_client::*;
pub use pg::*;
pub use replication::*;
pub use rest::*;
pub use store::*;

use std::time::{Duration, Instant};

/// Short random names, so object keys stay short.
pub fn short(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Environment overrides for `TestRegion::start_with` and friends.
pub fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Milliseconds since the epoch, as request bodies carry them (`timestamp-ms`).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Polls `check` every 50 ms until it holds; panics after `timeout`, naming `what` it waited
/// for.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
