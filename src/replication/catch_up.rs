//! [`HttpCatchUp`]: the [`CatchUp`] hook of a planned switchover. It waits until the target
//! region's watermark reaches the old primary's last seq, reading both through the regions'
//! `GET /api/v1/replication/status` (the old primary is fenced by then, so its log no longer
//! grows, but it is re-read on every poll anyway).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::replicator::ReplicationStatus;
use crate::config::RegionPeer;
use crate::control::CatchUp;

/// Polls the catalog regions' replication status until the target caught up.
pub struct HttpCatchUp {
    catalog_urls: HashMap<String, String>,
    http: reqwest::Client,
    poll: Duration,
    /// Gives up (with the reason) after this long; set a little below the control plane's
    /// own catch-up timeout so the reason reaches the operator.
    give_up_after: Duration,
}

impl HttpCatchUp {
    /// Over the catalog regions `regions`, giving up after `timeout` minus a margin.
    pub fn new(regions: &[RegionPeer], timeout: Duration) -> HttpCatchUp {
        HttpCatchUp {
            catalog_urls: regions
                .iter()
                .map(|r| (r.name.clone(), r.catalog_url.clone()))
                .collect(),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            poll: Duration::from_millis(100),
            give_up_after: timeout.saturating_sub(Duration::from_millis(500)),
        }
    }

    async fn status(&self, region: &str) -> Result<ReplicationStatus, String> {
        let base = self
            .catalog_urls
            .get(region)
            .ok_or_else(|| format!("region {region} is not among [[regions]]"))?;
        let url = format!("{}/api/v1/replication/status", base.trim_end_matches('/'));
        crate::faults::gate(region)
            .await
            .map_err(|e| format!("{url} unreachable: {e}"))?;
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("{url} unreachable: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{url} answered {}", resp.status()));
        }
        resp.json()
            .await
            .map_err(|e| format!("{url} answered an unexpected body: {e}"))
    }
}

#[async_trait]
impl CatchUp for HttpCatchUp {
    async fn check_failover_lag(&self, to: &str, max_lag_records: u64) -> Result<(), String> {
        let target = self.status(to).await?;
        match target.lag_records {
            Some(lag) if lag <= max_lag_records as i64 => Ok(()),
            Some(lag) => Err(format!(
                "{to} lags the primary's change log by {lag} records (bound {max_lag_records})"
            )),
            None => Err(format!("the replication lag of {to} is unknown")),
        }
    }

    async fn wait_caught_up(&self, from: Option<&str>, to: &str, epoch: u64) -> Result<(), String> {
        let Some(from) = from.filter(|f| *f != to) else {
            return Ok(());
        };
        let started = Instant::now();
        loop {
            let last = match (self.status(from).await, self.status(to).await) {
                (Ok(old), Ok(target)) => {
                    if target.watermark >= old.watermark {
                        tracing::info!(
                            from,
                            to,
                            epoch,
                            seq = old.watermark,
                            waited_ms = started.elapsed().as_millis() as u64,
                            "switchover target caught up"
                        );
                        return Ok(());
                    }
                    let mut why = format!(
                        "{to} applied up to seq {} of {from}'s {}",
                        target.watermark, old.watermark
                    );
                    if target.paused {
                        why.push_str(&format!("; replication in {to} is paused"));
                    }
                    if target.halted {
                        why.push_str(&format!("; replication in {to} is halted"));
                    }
                    if let Some(e) = &target.last_error {
                        why.push_str(&format!("; its last error: {}", e.message));
                    }
                    why
                }
                (Err(e), _) => format!("cannot read the old primary's head: {e}"),
                (_, Err(e)) => format!("cannot read {to}'s watermark: {e}"),
            };
            if started.elapsed() >= self.give_up_after {
                return Err(last);
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}
