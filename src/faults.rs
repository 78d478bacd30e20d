//! Fault injection on cross-region links, for drills and tests (`[faults] enabled = true`;
//! never in production, see docs/fault-injection.md).
//!
//! One process-wide [`FaultRegistry`] holds the faults of this process's OUTGOING traffic,
//! keyed by the peer region it goes to: `partition` (fails at once, like a refused
//! connection), `drop` (every request fails as if its answer were lost) and `delay` (each
//! request waits `delay_ms` first). Every outgoing cross-region call passes [`gate`] first:
//! Raft RPC and the control client (through [`crate::control::LinkFaults`], which maps voter
//! ids to regions), write forwarding, replication pulls, catch-up probes, and S3 requests to
//! another region's bucket. With no fault set, a gate costs one atomic load.
//!
//! The registry is driven over `GET|PUT|DELETE /api/v1/dev/faults` ([`router`]) on both the
//! catalog and the voter listener; it answers 404 unless faults are enabled. The test-only
//! switch `disable_fencing` makes a node ignore lease expiry when it decides it may commit:
//! the deliberately broken build that failover drills must catch.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

/// Longest accepted `delay_ms` (one minute): longer delays only hide a typo.
pub const MAX_DELAY_MS: u64 = 60_000;

/// `[faults]`: the fault-injection endpoint and the test-only switches.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FaultsSection {
    /// Serve `/api/v1/dev/faults` and honour the faults set through it. Dev and test only.
    #[serde(default)]
    pub enabled: bool,
    /// Test only, honoured only with `enabled`: ignore write-lease expiry when deciding
    /// whether this node may commit (a partitioned old primary keeps committing).
    #[serde(default)]
    pub disable_fencing: bool,
}

/// What happens to requests on a faulty link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultMode {
    /// Every request fails at once with a connection-style error.
    Partition,
    /// Every request fails as if it had been sent and its answer lost.
    Drop,
    /// Every request is sent `delay_ms` late.
    Delay,
}

/// The fault on this process's outgoing traffic to one peer region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkFault {
    /// The peer REGION (`us-east-1`, `eu-west-1`, `witness`).
    pub peer: String,
    pub mode: FaultMode,
    /// Only for `delay`: milliseconds added before each request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

/// Body of `PUT /api/v1/dev/faults` and answer of every verb there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultSet {
    pub links: Vec<LinkFault>,
    /// Answers only: whether `disable_fencing` is in force on this node.
    #[serde(default, skip_deserializing)]
    pub disable_fencing: bool,
}

/// A request refused by an injected fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    #[error("connection refused: link to {peer} is partitioned (fault injection)")]
    Partitioned { peer: String },
    #[error("request to {peer} dropped: no answer (fault injection)")]
    Dropped { peer: String },
}

/// Why a fault set was refused (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fault set: {0}")]
pub struct InvalidFaults(pub String);

/// The link faults of this process, keyed by peer region.
#[derive(Debug, Default)]
pub struct FaultRegistry {
    enabled: AtomicBool,
    fencing_disabled: AtomicBool,
    /// True while at least one link fault is set: the only thing a gate reads otherwise.
    active: AtomicBool,
    links: RwLock<BTreeMap<String, LinkFault>>,
    /// `host:port` of each known peer endpoint → its region, for [`FaultRegistry::gate_url`].
    endpoints: RwLock<HashMap<String, String>>,
}

impl FaultRegistry {
    /// An empty, disabled registry (unit tests; the process uses [`registry`]).
    pub fn new() -> FaultRegistry {
        FaultRegistry::default()
    }

    /// Turns the endpoint on; `disable_fencing` is honoured only together with it.
    pub fn enable(&self, disable_fencing: bool) {
        self.enabled.store(true, Ordering::Release);
        self.fencing_disabled
            .store(disable_fencing, Ordering::Release);
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// Whether this node ignores lease expiry (the deliberately broken build).
    pub fn fencing_disabled(&self) -> bool {
        self.is_enabled() && self.fencing_disabled.load(Ordering::Acquire)
    }

    /// Remembers that requests to `url` (its `host:port`) go to `region`.
    pub fn register_endpoint(&self, url: &str, region: &str) {
        if let Some(authority) = authority_of(url) {
            let mut map = match self.endpoints.write() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            map.insert(authority, region.to_string());
        }
    }

    /// Replaces every link fault with `links`; an invalid set changes nothing.
    pub fn set(&self, links: Vec<LinkFault>) -> Result<(), InvalidFaults> {
        let mut next = BTreeMap::new();
        for mut link in links {
            let peer = link.peer.trim().to_string();
            if peer.is_empty() {
                return Err(InvalidFaults("`peer` must name a region".into()));
            }
            match (link.mode, link.delay_ms) {
                (FaultMode::Delay, Some(ms)) if (1..=MAX_DELAY_MS).contains(&ms) => {}
                (FaultMode::Delay, _) => {
                    return Err(InvalidFaults(format!(
                        "link to {peer}: `delay` needs `delay_ms` between 1 and {MAX_DELAY_MS}"
                    )))
                }
                // Meaningless for the other modes: not kept.
                (_, _) => link.delay_ms = None,
            }
            link.peer = peer.clone();
            if next.insert(peer.clone(), link).is_some() {
                return Err(InvalidFaults(format!("peer {peer} is listed twice")));
            }
        }
        let mut guard = match self.links.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        self.active.store(!next.is_empty(), Ordering::Release);
        *guard = next;
        Ok(())
    }

    /// Removes every link fault.
    pub fn clear(&self) {
        let _ = self.set(Vec::new());
    }

    /// The faults set now, ordered by peer.
    pub fn links(&self) -> Vec<LinkFault> {
        let guard = match self.links.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        guard.values().cloned().collect()
    }

    /// The fault on the link to `peer` now, if any.
    pub fn fault(&self, peer: &str) -> Option<LinkFault> {
        if !self.active.load(Ordering::Acquire) {
            return None;
        }
        let guard = match self.links.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        guard.get(peer).cloned()
    }

    /// Applies the fault on the link to `peer` to one request about to be sent: fails it
    /// (partition, drop) or holds it back (delay). Returns at once when no fault is set.
    pub async fn gate(&self, peer: &str) -> Result<(), FaultError> {
        let Some(link) = self.fault(peer) else {
            return Ok(());
        };
        match link.mode {
            FaultMode::Partition => Err(FaultError::Partitioned { peer: link.peer }),
            FaultMode::Drop => Err(FaultError::Dropped { peer: link.peer }),
            FaultMode::Delay => {
                tokio::time::sleep(Duration::from_millis(link.delay_ms.unwrap_or(0))).await;
                Ok(())
            }
        }
    }

    /// [`FaultRegistry::gate`] for a request to `url`, when its `host:port` belongs to a
    /// registered peer region (other URLs pass).
    pub async fn gate_url(&self, url: &str) -> Result<(), FaultError> {
        if !self.active.load(Ordering::Acquire) {
            return Ok(());
        }
        let region = {
            let map = match self.endpoints.read() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            authority_of(url).and_then(|a| map.get(&a).cloned())
        };
        match region {
            Some(r) => self.gate(&r).await,
            None => Ok(()),
        }
    }

    fn answer(&self) -> FaultSet {
        FaultSet {
            links: self.links(),
            disable_fencing: self.fencing_disabled(),
        }
    }
}

/// `host:port` of an `http(s)://host:port/...` URL (or of a bare `host:port`).
fn authority_of(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let authority = rest.split('/').next()?.trim();
    (!authority.is_empty()).then(|| authority.to_ascii_lowercase())
}

static REGISTRY: LazyLock<FaultRegistry> = LazyLock::new(FaultRegistry::new);

/// This process's registry.
pub fn registry() -> &'static FaultRegistry {
    &REGISTRY
}

/// [`FaultRegistry::gate`] of this process's registry: call before each outgoing request to
/// another region.
pub async fn gate(peer_region: &str) -> Result<(), FaultError> {
    REGISTRY.gate(peer_region).await
}

/// [`FaultRegistry::gate_url`] of this process's registry.
pub async fn gate_url(url: &str) -> Result<(), FaultError> {
    REGISTRY.gate_url(url).await
}

/// Applies a node's `[faults]` section to this process's registry at start (the region is
/// named in the logs). `disable_fencing` without `enabled` is ignored, with a warning.
pub fn configure(section: &FaultsSection, region: &str) {
    if !section.enabled {
        if section.disable_fencing {
            tracing::warn!(
                region,
                "faults.disable_fencing is ignored: it needs faults.enabled = true"
            );
        }
        return;
    }
    REGISTRY.enable(section.disable_fencing);
    tracing::warn!(
        region,
        "fault injection is ENABLED (/api/v1/dev/faults): dev and test only, never in production"
    );
    if section.disable_fencing {
        let msg = "FENCING IS DISABLED (faults.disable_fencing): this node ignores write-lease \
                   expiry and may accept split-brain commits. Deliberately broken build for drills only.";
        tracing::error!(region, "{msg}");
        eprintln!("[{region}] WARNING: {msg}");
    }
}

/// Header naming the region that forwarded a request ([`crate::routing::FORWARDED_BY`]).
const FORWARDED_BY: &str = "x-pangolin-forwarded-by";

/// The peer region an incoming request came from, when it says so: a forwarded write
/// (`x-pangolin-forwarded-by`) or a replicator's pull (`/api/v1/replication/changes?region=`).
fn requesting_region(req: &axum::extract::Request) -> Option<String> {
    if let Some(by) = req
        .headers()
        .get(FORWARDED_BY)
        .and_then(|v| v.to_str().ok())
    {
        return Some(by.to_string());
    }
    if req.uri().path() != "/api/v1/replication/changes" {
        return None;
    }
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("region="))
        .map(str::to_string)
}

/// Middleware of the catalog router: the answer to a request from a peer region travels
/// over this process's link to that peer, so when that link is partitioned or dropping by
/// the time the answer is ready, the answer is lost (the requester gets a 503 instead). The
/// request itself has run, as it would have in a real one-way partition. This also cuts a
/// long poll that was in flight when the fault was set.
pub async fn cut_answers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let peer = if REGISTRY.is_enabled() {
        requesting_region(&req)
    } else {
        None
    };
    let answer = next.run(req).await;
    let Some(peer) = peer else {
        return answer;
    };
    match REGISTRY.fault(&peer).map(|l| l.mode) {
        Some(FaultMode::Partition | FaultMode::Drop) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
            format!("the answer to {peer} was lost: the link to {peer} is cut (fault injection)"),
        ),
        _ => answer,
    }
}

/// `GET|PUT|DELETE /api/v1/dev/faults` over this process's registry; 404 while disabled.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route(
        "/api/v1/dev/faults",
        get(get_faults).put(put_faults).delete(delete_faults),
    )
}

fn error(status: StatusCode, kind: &str, message: String) -> Response {
    let body = serde_json::json!({"error": {
        "message": message,
        "type": kind,
        "code": status.as_u16(),
    }});
    (status, Json(body)).into_response()
}

fn disabled() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "NotFoundException",
        "fault injection is not enabled on this node (faults.enabled)".into(),
    )
}

async fn get_faults() -> Response {
    if !REGISTRY.is_enabled() {
        return disabled();
    }
    Json(REGISTRY.answer()).into_response()
}

async fn put_faults(body: Bytes) -> Response {
    if !REGISTRY.is_enabled() {
        return disabled();
    }
    let set: FaultSet = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequestException",
                format!("Malformed request body: {e}"),
            )
        }
    };
    if let Err(e) = REGISTRY.set(set.links) {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequestException",
            e.to_string(),
        );
    }
    let answer = REGISTRY.answer();
    tracing::warn!(links = ?answer.links, "fault injection: link faults replaced");
    Json(answer).into_response()
}

async fn delete_faults() -> Response {
    if !REGISTRY.is_enabled() {
        return disabled();
    }
    REGISTRY.clear();
    tracing::warn!("fault injection: every link fault cleared");
    Json(REGISTRY.answer()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(peer: &str, mode: FaultMode, delay_ms: Option<u64>) -> LinkFault {
        LinkFault {
            peer: peer.into(),
            mode,
            delay_ms,
        }
    }

    #[tokio::test]
    async fn no_fault_passes_and_partition_fails_fast() {
        let r = FaultRegistry::new();
        assert_eq!(r.gate("eu-west-1").await, Ok(()));
        r.set(vec![link("eu-west-1", FaultMode::Partition, None)])
            .unwrap();
        assert_eq!(
            r.gate("eu-west-1").await,
            Err(FaultError::Partitioned {
                peer: "eu-west-1".into()
            })
        );
        assert_eq!(r.gate("witness").await, Ok(()), "other links untouched");
    }

    #[tokio::test]
    async fn drop_fails_every_request_and_clear_heals() {
        let r = FaultRegistry::new();
        r.set(vec![link("us-east-1", FaultMode::Drop, None)])
            .unwrap();
        for _ in 0..3 {
            assert!(matches!(
                r.gate("us-east-1").await,
                Err(FaultError::Dropped { .. })
            ));
        }
        r.clear();
        assert_eq!(r.gate("us-east-1").await, Ok(()));
        assert!(r.links().is_empty());
    }

    #[tokio::test]
    async fn delay_holds_each_request_back() {
        let r = FaultRegistry::new();
        r.set(vec![link("eu-west-1", FaultMode::Delay, Some(60))])
            .unwrap();
        let started = std::time::Instant::now();
        r.gate("eu-west-1").await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(60));
    }

    #[test]
    fn put_replaces_the_whole_set() {
        let r = FaultRegistry::new();
        r.set(vec![
            link("eu-west-1", FaultMode::Partition, None),
            link("witness", FaultMode::Drop, None),
        ])
        .unwrap();
        r.set(vec![link("witness", FaultMode::Delay, Some(5))])
            .unwrap();
        assert_eq!(r.links(), vec![link("witness", FaultMode::Delay, Some(5))]);
    }

    #[test]
    fn invalid_sets_change_nothing() {
        let r = FaultRegistry::new();
        let before = vec![link("eu-west-1", FaultMode::Partition, None)];
        r.set(before.clone()).unwrap();
        let bad = [
            vec![link("", FaultMode::Drop, None)],
            vec![link("witness", FaultMode::Delay, None)],
            vec![link("witness", FaultMode::Delay, Some(0))],
            vec![link("witness", FaultMode::Delay, Some(MAX_DELAY_MS + 1))],
            vec![
                link("witness", FaultMode::Drop, None),
                link("witness", FaultMode::Partition, None),
            ],
        ];
        for set in bad {
            assert!(r.set(set.clone()).is_err(), "{set:?} accepted");
            assert_eq!(r.links(), before);
        }
    }

    #[test]
    fn delay_ms_is_dropped_from_other_modes() {
        let r = FaultRegistry::new();
        r.set(vec![link("witness", FaultMode::Drop, Some(10))])
            .unwrap();
        assert_eq!(r.links(), vec![link("witness", FaultMode::Drop, None)]);
    }

    #[test]
    fn contract_body_parses() {
        let body = r#"{"links":[{"peer":"eu-west-1","mode":"partition"},
            {"peer":"witness","mode":"delay","delay_ms":80}]}"#;
        let set: FaultSet = serde_json::from_str(body).unwrap();
        assert_eq!(set.links[1], link("witness", FaultMode::Delay, Some(80)));
        assert!(
            serde_json::from_str::<FaultSet>(r#"{"links":[{"peer":"x","mode":"cut"}]}"#).is_err()
        );
    }

    #[tokio::test]
    async fn urls_of_registered_peers_are_gated() {
        let r = FaultRegistry::new();
        r.register_endpoint("http://127.0.0.1:8181", "us-east-1");
        r.set(vec![link("us-east-1", FaultMode::Partition, None)])
            .unwrap();
        assert!(r
            .gate_url("http://127.0.0.1:8181/api/v1/replication/changes?after=1")
            .await
            .is_err());
        assert_eq!(r.gate_url("http://127.0.0.1:8281/x").await, Ok(()));
    }

    #[test]
    fn fencing_switch_needs_faults_enabled() {
        let r = FaultRegistry::new();
        assert!(!r.fencing_disabled());
        r.enable(true);
        assert!(r.fencing_disabled());
    }
}
