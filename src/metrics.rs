//! `GET /metrics` on the catalog port: Prometheus text exposition (format 0.0.4), written by
//! hand. Counters are atomics bumped on the request path; a scrape reads them, the
//! replicator's in-memory progress and the region's watermark (one database read).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::api::AppState;
use crate::config::ReplicationMode;
use crate::error::CatalogError;
use crate::routing::WriteRoute;

/// Upper bounds (seconds) of the sync-wait histogram buckets.
const WAIT_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A histogram of durations with fixed buckets.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; WAIT_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (bound, bucket) in WAIT_BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, bucket) in WAIT_BUCKETS.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Counters of one catalog node.
#[derive(Default)]
pub struct Metrics {
    /// Writes committed here and acknowledged (2xx) to the client.
    pub commits_acknowledged: AtomicU64,
    /// Sync-mode commits that waited for secondaries.
    pub sync_waits: AtomicU64,
    /// Sync-mode commits answered 503 because a secondary stayed behind (policy block).
    pub sync_blocked: AtomicU64,
    /// Sync-mode commits acknowledged without a secondary (policy degrade).
    pub sync_degraded: AtomicU64,
    pub sync_wait_seconds: Histogram,
    /// Reads carrying a commit token answered here after (possibly) waiting.
    pub read_your_writes_local: AtomicU64,
    /// Reads carrying a commit token forwarded to the primary (watermark too low in time).
    pub read_your_writes_forwarded: AtomicU64,
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn gauge_header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `GET /metrics`.
pub async fn handler(
    State(state): State<Arc<AppState>>,
) -> Result<impl IntoResponse, CatalogError> {
    let body = render(&state).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    ))
}

/// The whole exposition of this node.
pub async fn render(state: &AppState) -> Result<String, CatalogError> {
    let m = &state.metrics;
    let region = label(&state.region);
    let mut out = String::with_capacity(4096);
    let is_primary = matches!(state.authority.route(), WriteRoute::Local);

    gauge_header(
        &mut out,
        "pangolin_is_primary",
        "1 when this region commits writes itself",
    );
    let _ = writeln!(
        out,
        "pangolin_is_primary{{region=\"{region}\"}} {}",
        is_primary as u8
    );
    gauge_header(
        &mut out,
        "pangolin_epoch",
        "Fencing epoch this node's writes carry",
    );
    let _ = writeln!(
        out,
        "pangolin_epoch{{region=\"{region}\"}} {}",
        state.authority.epoch()
    );
    counter(
        &mut out,
        "pangolin_commits_acknowledged_total",
        "Writes committed by this node and acknowledged with 2xx",
        m.commits_acknowledged.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "pangolin_sync_waits_total",
        "Sync-mode commits that waited for the secondaries",
        m.sync_waits.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "pangolin_sync_blocked_total",
        "Sync-mode commits answered 503 because a secondary stayed behind (policy block; the commit is durable at the primary)",
        m.sync_blocked.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "pangolin_sync_degraded_commits_total",
        "Sync-mode commits acknowledged without a secondary (policy degrade)",
        m.sync_degraded.load(Ordering::Relaxed),
    );
    m.sync_wait_seconds.render(
        &mut out,
        "pangolin_sync_wait_seconds",
        "Time sync-mode commits waited for the secondaries",
    );
    counter(
        &mut out,
        "pangolin_read_your_writes_local_total",
        "Reads with a commit token answered by this region",
        m.read_your_writes_local.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "pangolin_read_your_writes_forwarded_total",
        "Reads with a commit token forwarded to the primary because this region had not applied it in time",
        m.read_your_writes_forwarded.load(Ordering::Relaxed),
    );

    gauge_header(
        &mut out,
        "pangolin_sync_mode",
        "1 for a catalog in sync replication mode (catalogs named in the configuration; catalog=\"*\" is the default)",
    );
    let sync = &state.sync;
    let _ = writeln!(
        out,
        "pangolin_sync_mode{{catalog=\"*\"}} {}",
        (sync.default_mode() == ReplicationMode::Sync) as u8
    );
    for name in sync.settings().catalogs.keys() {
        let _ = writeln!(
            out,
            "pangolin_sync_mode{{catalog=\"{}\"}} {}",
            label(name),
            (sync.mode_of(name).mode == ReplicationMode::Sync) as u8
        );
    }

    let Some(replication) = &state.replication else {
        return Ok(out);
    };
    // The only database read of a scrape: the region's watermark.
    let status = replication.status().await?;
    gauge_header(
        &mut out,
        "pangolin_replication_watermark",
        "Last seq of this region's change log (applied here, or committed here while primary)",
    );
    let _ = writeln!(
        out,
        "pangolin_replication_watermark{{region=\"{region}\"}} {}",
        status.watermark
    );

    // This region behind its primary (on a secondary).
    if status.role == "secondary" || status.role == "unknown" {
        let primary = label(status.primary.as_deref().unwrap_or(""));
        gauge_header(
            &mut out,
            "pangolin_replication_lag_records",
            "Records the primary has that this region has not applied",
        );
        if let Some(lag) = status.lag_records {
            let _ = writeln!(
                out,
                "pangolin_replication_lag_records{{primary_region=\"{primary}\"}} {lag}"
            );
        }
        gauge_header(
            &mut out,
            "pangolin_replication_lag_seconds",
            "Age of the oldest record of the primary not applied here (0 when caught up)",
        );
        if let Some(lag) = status.lag_seconds {
            let _ = writeln!(
                out,
                "pangolin_replication_lag_seconds{{primary_region=\"{primary}\"}} {lag}"
            );
        }
    }
    gauge_header(
        &mut out,
        "pangolin_replication_halted",
        "1 when the stream stopped at a record that keeps failing",
    );
    let _ = writeln!(out, "pangolin_replication_halted {}", status.halted as u8);
    gauge_header(
        &mut out,
        "pangolin_replication_paused",
        "1 when an operator paused the replicator",
    );
    let _ = writeln!(out, "pangolin_replication_paused {}", status.paused as u8);
    gauge_header(
        &mut out,
        "pangolin_replication_objects_pending",
        "Objects of the changes being prepared that are not known to be present here yet",
    );
    let _ = writeln!(
        out,
        "pangolin_replication_objects_pending {}",
        status.objects_pending
    );
    counter(
        &mut out,
        "pangolin_replication_applied_records_total",
        "Replicated records applied by this node",
        status.applied_records,
    );
    counter(
        &mut out,
        "pangolin_replication_objects_copied_total",
        "Objects copied into this region's bucket by the replicator",
        status.objects_copied,
    );
    counter(
        &mut out,
        "pangolin_replication_bytes_copied_total",
        "Bytes copied into this region's bucket by the replicator",
        status.bytes_copied,
    );
    counter(
        &mut out,
        "pangolin_replication_errors_total",
        "Failed replication attempts (pulls and records)",
        replication.errors_total(),
    );

    // The secondaries behind this region (on the primary).
    let secondaries = sync.secondaries(status.watermark);
    if !secondaries.is_empty() {
        for (name, help) in [
            ("pangolin_replication_secondary_lag_records", "Records of this region's log a secondary has not applied"),
            ("pangolin_replication_secondary_lag_seconds", "Age of the oldest commit of this node a secondary has not applied"),
            ("pangolin_replication_secondary_pending_bytes", "Data bytes added by commits of this node a secondary has not applied (snapshot summaries)"),
            ("pangolin_replication_secondary_healthy", "1 when the secondary pulled within the health window"),
            ("pangolin_replication_secondary_degraded", "1 while sync commits are acknowledged without the secondary (policy degrade)"),
        ] {
            gauge_header(&mut out, name, help);
            for s in &secondaries {
                let value = match name {
                    "pangolin_replication_secondary_lag_records" => match s.lag_records {
                        Some(v) => v.to_string(),
                        None => continue,
                    },
                    "pangolin_replication_secondary_lag_seconds" => match s.lag_seconds {
                        Some(v) => v.to_string(),
                        None => continue,
                    },
                    "pangolin_replication_secondary_pending_bytes" => s.pending_bytes.to_string(),
                    "pangolin_replication_secondary_healthy" => (s.healthy as u8).to_string(),
                    _ => (s.degraded as u8).to_string(),
                };
                let _ = writeln!(
                    out,
                    "{name}{{secondary_region=\"{}\"}} {value}",
                    label(&s.region)
                );
            }
        }
    }
    Ok(out)
}
