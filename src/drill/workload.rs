//! The drill's traffic and observation: writers committing through every region's endpoint,
//! readers reading from every region, and a poller sampling the control plane and replication.
//! Everything lands in the [`Recorder`] as events.
//!
//! Each commit is a real Iceberg REST table commit: `set-properties` of a unique key
//! `drill.<run>.<writer>.<n>` on the writer's own table, with an `assert-table-uuid`
//! requirement. It takes the whole commit path (lease and epoch fencing, compare-and-swap of
//! the pointer, change log, a new metadata file that replication copies) without data files,
//! so a drill measures failover, not S3 throughput; writers never conflict with each other
//! (one table each, no requirement on the properties), so every refusal is the deployment's
//! doing; and the id lives in the table's own metadata, so one loadTable of each table on the
//! surviving primary tells which acknowledged commits it holds.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::report::{
    CommitEvent, ControlSample, Event, EventKind, FailoverMark, Outcome, ReadEvent,
    ReplicationSample,
};
use crate::clock::now_ms_unsigned;

pub const COMMIT_TOKEN: &str = "x-pangolin-commit-token";
pub const REGION_HEADER: &str = "x-pangolin-region";

/// The event log of one drill, shared by every task.
#[derive(Default)]
pub struct Recorder {
    events: Mutex<Vec<Event>>,
}

impl Recorder {
    pub fn record(&self, at_ms: u64, kind: EventKind) {
        if let Ok(mut ev) = self.events.lock() {
            ev.push(Event::new(at_ms, kind));
        }
    }

    pub fn now(&self, kind: EventKind) {
        self.record(now_ms_unsigned(), kind)
    }

    pub fn note(&self, message: impl Into<String>) {
        let message = message.into();
        tracing::info!(target: "drill", "{message}");
        self.now(EventKind::Note { message })
    }

    pub fn events(&self) -> Vec<Event> {
        let mut ev = self.events.lock().map(|e| e.clone()).unwrap_or_default();
        ev.sort_by_key(|e| e.at_ms);
        ev
    }
}

/// A region's catalog endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub region: String,
    pub url: String,
}

/// The drill's HTTP view of the deployment.
#[derive(Clone)]
pub struct Deployment {
    pub endpoints: Vec<Endpoint>,
    pub catalog: String,
    pub namespace: String,
    pub run_id: String,
    /// Commits and reads: bounded so a stopped node does not hold a writer forever.
    pub http: reqwest::Client,
    /// Status polls: short.
    pub probe: reqwest::Client,
}

impl Deployment {
    pub fn new(endpoints: Vec<Endpoint>, catalog: &str, run_id: &str) -> Deployment {
        let build = |t: u64| {
            reqwest::Client::builder()
                .timeout(Duration::from_millis(t))
                .connect_timeout(Duration::from_millis(t.min(2000)))
                .build()
                .unwrap_or_default()
        };
        Deployment {
            endpoints,
            catalog: catalog.to_string(),
            namespace: format!("drill_{}", run_id.replace('-', "_")),
            run_id: run_id.to_string(),
            http: build(10_000),
            probe: build(1_500),
        }
    }

    pub fn endpoint(&self, region: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.region == region)
    }

    pub fn table_name(writer: u32) -> String {
        format!("w{writer}")
    }

    fn table_url(&self, base: &str, writer: u32) -> String {
        format!(
            "{base}/v1/{}/namespaces/{}/tables/{}",
            self.catalog,
            self.namespace,
            Self::table_name(writer)
        )
    }

    /// Asks an endpoint which region it serves (its control status, else its replication
    /// status).
    pub async fn region_of(http: &reqwest::Client, url: &str) -> anyhow::Result<String> {
        for (path, pointer) in [
            ("/api/v1/control/status", "/node/region"),
            ("/api/v1/replication/status", "/region"),
        ] {
            let resp = http
                .get(format!("{url}{path}"))
                .send()
                .await
                .with_context(|| format!("{url} does not answer"))?;
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            if let Some(r) = v.pointer(pointer).and_then(Value::as_str) {
                return Ok(r.to_string());
            }
        }
        bail!("{url} does not say which region it serves")
    }

    /// The control plane's view: (epoch, primary), from the first endpoint that answers.
    pub async fn control(&self) -> Option<(u64, Option<String>, Value)> {
        for e in &self.endpoints {
            if let Some(s) = self.control_at(e).await {
                return Some(s);
            }
        }
        None
    }

    async fn control_at(&self, e: &Endpoint) -> Option<(u64, Option<String>, Value)> {
        let resp = self
            .probe
            .get(format!("{}/api/v1/control/status", e.url))
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let v: Value = resp.json().await.ok()?;
        let c = v.get("control")?;
        let epoch = c.get("epoch")?.as_u64()?;
        let primary = c.get("primary").and_then(Value::as_str).map(String::from);
        Some((epoch, primary, v))
    }

    /// Creates the drill's namespace and one table per writer (through any endpoint, retrying
    /// while the deployment settles); answers each table's uuid.
    pub async fn setup(&self, writers: u32) -> anyhow::Result<Vec<String>> {
        let mut last = String::new();
        for _attempt in 0..40 {
            for e in &self.endpoints {
                match self.setup_at(&e.url, writers).await {
                    Ok(uuids) => return Ok(uuids),
                    Err(err) => last = format!("{}: {err:#}", e.url),
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        bail!("could not create the drill's tables: {last}")
    }

    async fn setup_at(&self, base: &str, writers: u32) -> anyhow::Result<Vec<String>> {
        let resp = self
            .http
            .post(format!("{base}/v1/{}/namespaces", self.catalog))
            .json(&json!({"namespace": [self.namespace], "properties": {"drill.run": self.run_id}}))
            .send()
            .await?;
        let status = resp.status().as_u16();
        if status != 200 && status != 409 {
            bail!(
                "create namespace: {status} {}",
                resp.text().await.unwrap_or_default()
            );
        }
        let mut uuids = Vec::new();
        for w in 0..writers {
            let create = self
                .http
                .post(format!(
                    "{base}/v1/{}/namespaces/{}/tables",
                    self.catalog, self.namespace
                ))
                .json(&json!({
                    "name": Self::table_name(w),
                    "schema": {"type": "struct", "schema-id": 0, "fields": [
                        {"id": 1, "name": "id", "type": "long", "required": false}
                    ]},
                }))
                .send()
                .await?;
            let status = create.status().as_u16();
            let body: Value = if status == 409 {
                let load = self.http.get(self.table_url(base, w)).send().await?;
                if !load.status().is_success() {
                    bail!("load table {w}: {}", load.status());
                }
                load.json().await?
            } else if status == 200 {
                create.json().await?
            } else {
                bail!(
                    "create table {w}: {status} {}",
                    create.text().await.unwrap_or_default()
                );
            };
            let uuid = body
                .pointer("/metadata/table-uuid")
                .and_then(Value::as_str)
                .context("table metadata without table-uuid")?;
            uuids.push(uuid.to_string());
        }
        Ok(uuids)
    }

    /// One commit of writer `writer`, number `n`, through `endpoint`.
    pub async fn commit(
        &self,
        endpoint: &Endpoint,
        writer: u32,
        uuid: &str,
        n: u64,
    ) -> (u64, CommitEvent) {
        let id = format!("drill.{}.{writer}.{n}", self.run_id);
        let sent = now_ms_unsigned();
        let body = json!({
            "requirements": [{"type": "assert-table-uuid", "uuid": uuid}],
            "updates": [{"action": "set-properties", "updates": {id.clone(): sent.to_string()}}],
        });
        let result = self
            .http
            .post(self.table_url(&endpoint.url, writer))
            .json(&body)
            .send()
            .await;
        let mut ev = CommitEvent {
            id,
            writer,
            endpoint_region: endpoint.region.clone(),
            end_ms: 0,
            outcome: Outcome::NoAnswer,
            status: None,
            token: None,
            committed_region: None,
            error: None,
        };
        match result {
            Ok(resp) => {
                let status = resp.status();
                ev.status = Some(status.as_u16());
                let header = |name: &str| {
                    resp.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(String::from)
                };
                ev.token = header(COMMIT_TOKEN);
                ev.committed_region = header(REGION_HEADER);
                if status.is_success() {
                    ev.outcome = Outcome::Acked;
                    let _ = resp.bytes().await;
                } else {
                    ev.outcome = Outcome::Rejected;
                    let text = resp.text().await.unwrap_or_default();
                    ev.error = Some(error_summary(&text));
                }
            }
            Err(e) => ev.error = Some(format!("{e}").chars().take(200).collect()),
        }
        ev.end_ms = now_ms_unsigned();
        (sent, ev)
    }

    /// The drill ids held by every writer's table at `base` (the primary's endpoint).
    pub async fn ids_at(&self, base: &str, writers: u32) -> anyhow::Result<Vec<String>> {
        let prefix = format!("drill.{}.", self.run_id);
        let mut ids = BTreeSet::new();
        for w in 0..writers {
            let resp = self.http.get(self.table_url(base, w)).send().await?;
            if !resp.status().is_success() {
                bail!("load table w{w}: {}", resp.status());
            }
            let v: Value = resp.json().await?;
            if let Some(props) = v.pointer("/metadata/properties").and_then(Value::as_object) {
                ids.extend(props.keys().filter(|k| k.starts_with(&prefix)).cloned());
            }
        }
        Ok(ids.into_iter().collect())
    }

    /// Each writer table's metadata location at `base`.
    pub async fn locations_at(&self, base: &str, writers: u32) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        for w in 0..writers {
            let resp = self.http.get(self.table_url(base, w)).send().await?;
            if !resp.status().is_success() {
                bail!("load table w{w}: {}", resp.status());
            }
            let v: Value = resp.json().await?;
            out.push(
                v.get("metadata-location")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        Ok(out)
    }
}

/// `type: message` of an Iceberg error body (or the start of the text).
fn error_summary(text: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    let s = match parsed.as_ref().and_then(|v| v.get("error")) {
        Some(e) => format!(
            "{}: {}",
            e.get("type").and_then(Value::as_str).unwrap_or("?"),
            e.get("message").and_then(Value::as_str).unwrap_or("")
        ),
        None => text.to_string(),
    };
    s.chars().take(300).collect()
}

/// Runs `writers` writers until `stop`: writer `i` commits through endpoint `i % n`.
pub fn spawn_writers(
    dep: &Deployment,
    uuids: &[String],
    rec: &Arc<Recorder>,
    stop: &CancellationToken,
    pause_ms: u64,
) -> Vec<tokio::task::JoinHandle<()>> {
    uuids
        .iter()
        .enumerate()
        .map(|(i, uuid)| {
            let dep = dep.clone();
            let rec = rec.clone();
            let stop = stop.clone();
            let uuid = uuid.clone();
            let endpoint = dep.endpoints[i % dep.endpoints.len()].clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.is_cancelled() {
                    let (sent, ev) = dep.commit(&endpoint, i as u32, &uuid, n).await;
                    let failed = ev.outcome != Outcome::Acked;
                    rec.record(sent, EventKind::Commit(ev));
                    n += 1;
                    // Back off a little after a refusal so a down region is not hammered.
                    let wait = if failed { pause_ms.max(100) } else { pause_ms };
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                    }
                }
            })
        })
        .collect()
}

/// One reader per region: loads the writers' tables in turn until `stop`.
pub fn spawn_readers(
    dep: &Deployment,
    writers: u32,
    rec: &Arc<Recorder>,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    dep.endpoints
        .iter()
        .cloned()
        .map(|endpoint| {
            let dep = dep.clone();
            let rec = rec.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut w = 0u32;
                while !stop.is_cancelled() {
                    let sent = now_ms_unsigned();
                    let resp = dep.http.get(dep.table_url(&endpoint.url, w)).send().await;
                    let (ok, status) = match resp {
                        Ok(r) => {
                            let s = r.status();
                            let _ = r.bytes().await;
                            (s.is_success(), Some(s.as_u16()))
                        }
                        Err(_) => (false, None),
                    };
                    rec.record(
                        sent,
                        EventKind::Read(ReadEvent {
                            region: endpoint.region.clone(),
                            end_ms: now_ms_unsigned(),
                            ok,
                            status,
                        }),
                    );
                    w = (w + 1) % writers.max(1);
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            })
        })
        .collect()
}

/// Samples every endpoint's control and replication status every `every` until `stop`, and
/// records each new entry of the failover history once.
pub fn spawn_poller(
    dep: &Deployment,
    rec: &Arc<Recorder>,
    stop: &CancellationToken,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let dep = dep.clone();
    let rec = rec.clone();
    let stop = stop.clone();
    tokio::spawn(async move {
        let mut seen_epochs: BTreeSet<u64> = BTreeSet::new();
        let mut first = true;
        while !stop.is_cancelled() {
            let samples =
                futures::future::join_all(dep.endpoints.iter().map(|e| sample(&dep, e))).await;
            for (at, control, repl, history) in samples {
                rec.record(at, EventKind::Control(control));
                rec.record(at, EventKind::Replication(repl));
                for h in history {
                    let Some(epoch) = h.get("epoch").and_then(Value::as_u64) else {
                        continue;
                    };
                    if !seen_epochs.insert(epoch) || first {
                        continue;
                    }
                    let mark = FailoverMark {
                        from: h.get("from").and_then(Value::as_str).map(String::from),
                        to: h
                            .get("to")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        epoch,
                        planned: h.get("planned").and_then(Value::as_bool).unwrap_or(false),
                    };
                    let when = h.get("at_ms").and_then(Value::as_u64).unwrap_or(at);
                    rec.record(when, EventKind::Failover(mark));
                }
            }
            first = false;
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
    })
}

/// `first` history entries are the past: the poller's first round only learns their epochs.
async fn sample(
    dep: &Deployment,
    e: &Endpoint,
) -> (u64, ControlSample, ReplicationSample, Vec<Value>) {
    let at = now_ms_unsigned();
    let (control, repl) = tokio::join!(
        dep.probe
            .get(format!("{}/api/v1/control/status", e.url))
            .send(),
        dep.probe
            .get(format!("{}/api/v1/replication/status", e.url))
            .send()
    );
    let mut c = ControlSample {
        via: e.region.clone(),
        ..Default::default()
    };
    let mut history = Vec::new();
    if let Ok(resp) = control {
        if resp.status().is_success() {
            if let Ok(v) = resp.json::<Value>().await {
                let ctl = &v["control"];
                c.ok = ctl.get("epoch").is_some();
                c.epoch = ctl.get("epoch").and_then(Value::as_u64);
                c.primary = ctl.get("primary").and_then(Value::as_str).map(String::from);
                c.fencing = !ctl["switchover_in_progress"].is_null();
                c.leader = v["cluster"].get("leader").and_then(Value::as_u64);
                c.term = v["cluster"].get("term").and_then(Value::as_u64);
                if let Some(h) = ctl.get("history").and_then(Value::as_array) {
                    history = h.clone();
                }
            }
        }
    }
    let mut r = ReplicationSample {
        region: e.region.clone(),
        ..Default::default()
    };
    if let Ok(resp) = repl {
        if resp.status().is_success() {
            if let Ok(v) = resp.json::<Value>().await {
                r.ok = true;
                r.role = v.get("role").and_then(Value::as_str).map(String::from);
                r.state = v.get("state").and_then(Value::as_str).map(String::from);
                r.watermark = v.get("watermark").and_then(Value::as_i64);
                r.primary_head = v.get("primary_head").and_then(Value::as_i64);
                r.lag_records = v.get("lag_records").and_then(Value::as_i64);
                r.lag_seconds = v.get("lag_seconds").and_then(Value::as_f64);
                r.last_error = v["last_error"]["message"].as_str().map(String::from);
            }
        }
    }
    (at, c, r, history)
}
