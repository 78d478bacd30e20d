//! Pangolin's integration tests, in one test binary (`it`): one module per suite, the
//! fixtures they share in `common`. One binary links the whole stack once, where a binary per
//! suite linked it once each. cargo-nextest runs every test in a process of its own (the
//! fault registry and the tracing subscriber are process-wide), as `tests/run` does:
//! `cargo nextest run -E 'binary(it)'`, one suite with `cargo nextest run rest_api::`.

mod common;

mod control_plane;
mod drill_report;
mod embedded_s3;
mod faults;
mod fencing;
mod http_limits;
mod iceberg_rust_client;
mod idempotency_api;
mod locations;
mod metrics_reports_api;
mod object_copier;
mod partition_evolution;
mod replication;
mod replication_anti_entropy;
mod replication_pipeline;
mod replication_reports;
mod replication_sync;
mod rest_api;
mod store_conformance;
mod store_transactions;
mod views_api;
