//! Pangolin: a multi-region Apache Iceberg REST catalog.
//!
//! Layers, each depending only on those below it: [`api`] (axum routers) → [`catalog`]
//! (domain logic) → [`store`] (metadata rows) and [`storage`] (objects through aws-sdk-s3).
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod control;
pub mod dev;
pub mod drill;
pub mod error;
pub mod faults;
pub mod http_server;
pub mod metrics;
pub mod replication;
pub mod routing;
pub mod server;
pub mod storage;
pub mod store;
pub mod testing;
