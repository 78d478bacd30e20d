//! Region and node configuration: one typed struct read from `regions/<region>.toml`, with
//! `PANGOLIN_<SECTION>__<KEY>` environment overrides, validated at start with errors that
//! name the bad key.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The whole configuration of one catalog node.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Root for relative paths and the `{data_dir}` placeholder in other values.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    pub region: RegionSection,
    pub catalog: CatalogSection,
    pub database: DatabaseSection,
    pub storage: StorageSection,
    #[serde(default)]
    pub bootstrap: BootstrapSection,
    /// This node's control-plane voter and the voter set. Absent: a standalone region that
    /// is always primary (single-region deployments, tests).
    #[serde(default)]
    pub control: Option<ControlSection>,
    /// Every catalog region of the deployment (including this one), for write forwarding and
    /// for copying objects between regions. Same list in every region's file.
    #[serde(default)]
    pub regions: Vec<RegionPeer>,
    /// The replicator of this region (see docs/replication.md).
    #[serde(default)]
    pub replication: ReplicationSection,
    /// Fault injection for drills and tests (docs/fault-injection.md). Never in production.
    #[serde(default)]
    pub faults: crate::faults::FaultsSection,
}

/// `[replication]`: how this region follows the primary's change log.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationSection {
    /// Run the replicator on this node (it follows the primary while this region is not
    /// primary). With several catalog nodes per region, one replicating node is enough.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A fixed primary region (one of `[[regions]]`) for deployments without a control
    /// plane: this region then follows it and forwards writes to it. Ignored with `[control]`.
    #[serde(default)]
    pub primary: Option<String>,
    /// Change records pulled per request.
    #[serde(default = "default_replication_batch")]
    pub batch_size: u32,
    /// Long-poll wait of one pull when the primary has nothing new, in milliseconds.
    #[serde(default = "default_replication_wait_ms")]
    pub poll_wait_ms: u64,
    /// Attempts at a record failing with a permanent error (missing object at the primary,
    /// unparsable metadata, a change that does not fit) before the stream stops
    /// (`halted`; `POST /api/v1/replication/resume` retries). Transient errors (unreachable
    /// primary, object storage down) are retried without limit.
    #[serde(default = "default_replication_attempts")]
    pub max_record_attempts: u32,
    /// Backoff between attempts: first delay and upper bound, in milliseconds.
    #[serde(default = "default_replication_retry_ms")]
    pub retry_initial_ms: u64,
    #[serde(default = "default_replication_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Objects copied at once.
    #[serde(default = "default_replication_parallelism")]
    pub copy_parallelism: usize,
    /// Longest wait of a planned switchover for its target to catch up (on voters).
    #[serde(default = "default_catch_up_timeout_ms")]
    pub catch_up_timeout_ms: u64,
    /// Default replication mode of every catalog: `async` or `sync` (a commit is
    /// acknowledged only after every healthy secondary applied it).
    #[serde(default)]
    pub mode: ReplicationMode,
    /// What a sync commit does when a secondary stays behind past `sync_timeout_ms` or is
    /// unreachable: `block` (503, the commit stays durable at the primary) or `degrade`.
    #[serde(default)]
    pub sync_policy: SyncPolicy,
    /// Longest wait of a sync commit for the secondaries, in milliseconds.
    #[serde(default = "default_sync_timeout_ms")]
    pub sync_timeout_ms: u64,
    /// A secondary that has not pulled within this window (and has no pull in flight) is
    /// unreachable: sync commits do not wait for it, the policy decides at once.
    #[serde(default = "default_sync_health_window_ms")]
    pub sync_health_window_ms: u64,
    /// Longest wait of a read carrying `x-pangolin-commit-token` at a secondary for its
    /// watermark to reach the token, before the read is forwarded to the primary.
    #[serde(default = "default_read_your_writes_wait_ms")]
    pub read_your_writes_wait_ms: u64,
    /// Per-catalog overrides of `mode`, `sync_policy`, `sync_timeout_ms`, by catalog name.
    #[serde(default)]
    pub catalogs: std::collections::BTreeMap<String, CatalogReplication>,
    /// The deployment's shared secret of region-to-region replication calls (TEMPORARY,
    /// until nodes have identities of their own): the replicator sends it with every call to
    /// a peer's `/api/v1/replication/...` API (header `x-pangolin-peer-secret`), and this
    /// region accepts a watermark report (`changes?region=..&applied=..`) only with it.
    /// Without one, reports are refused (fail closed): every region of a deployment needs
    /// the same value. Never logged or serialized.
    #[serde(default)]
    pub peer_secret: Option<PeerSecret>,
    /// Regions, besides the other `[[regions]]`, that may follow this one and report their
    /// watermark (a primary without a control plane and without `[[regions]]`, whose
    /// secondaries name it in `replication.primary`, e.g. the in-process test regions). A
    /// report naming any other region is refused.
    #[serde(default, deserialize_with = "names_or_list")]
    pub followers: Vec<String>,
}

/// A secret configuration value: compared, never printed (`Debug` and serialization
/// redact it).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct PeerSecret(String);

impl PeerSecret {
    pub fn new(secret: impl Into<String>) -> PeerSecret {
        PeerSecret(secret.into())
    }

    /// The secret itself, to send it or compare it. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// An empty value counts as no secret.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for PeerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerSecret(<redacted>)")
    }
}

impl Serialize for PeerSecret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// A list of names, or one string of comma-separated names (as an environment override
/// gives it).
fn names_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Names {
        List(Vec<String>),
        One(String),
    }
    Ok(match Names::deserialize(d)? {
        Names::List(v) => v,
        Names::One(s) => s
            .split(',')
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect(),
    })
}

impl ReplicationSection {
    /// The peer secret, when one is configured (an empty value is none).
    pub fn peer_secret(&self) -> Option<&PeerSecret> {
        self.peer_secret.as_ref().filter(|s| !s.is_empty())
    }
}

/// `async`: commits are acknowledged once durable at the primary; `sync`: once every
/// healthy secondary applied them too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationMode {
    #[default]
    Async,
    Sync,
}

/// What a sync-mode commit does when a secondary does not apply it in time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncPolicy {
    /// Answer 503 (with Retry-After); the commit is durable at the primary.
    #[default]
    Block,
    /// Acknowledge, log an ERROR and report the region degraded until it catches up.
    Degrade,
}

/// `[replication.catalogs.<name>]`: one catalog's replication settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogReplication {
    pub mode: Option<ReplicationMode>,
    pub sync_policy: Option<SyncPolicy>,
    pub sync_timeout_ms: Option<u64>,
}

/// The replication settings in force for one catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CatalogReplicationMode {
    pub mode: ReplicationMode,
    pub sync_policy: SyncPolicy,
    pub sync_timeout_ms: u64,
}

impl ReplicationSection {
    /// The mode, policy and timeout of catalog `name` (its override, else the defaults).
    pub fn mode_of(&self, name: &str) -> CatalogReplicationMode {
        let o = self.catalogs.get(name);
        CatalogReplicationMode {
            mode: o.and_then(|c| c.mode).unwrap_or(self.mode),
            sync_policy: o.and_then(|c| c.sync_policy).unwrap_or(self.sync_policy),
            sync_timeout_ms: o
                .and_then(|c| c.sync_timeout_ms)
                .unwrap_or(self.sync_timeout_ms),
        }
    }
}

impl Default for ReplicationSection {
    fn default() -> Self {
        ReplicationSection {
            enabled: true,
            primary: None,
            batch_size: default_replication_batch(),
            poll_wait_ms: default_replication_wait_ms(),
            max_record_attempts: default_replication_attempts(),
            retry_initial_ms: default_replication_retry_ms(),
            retry_max_ms: default_replication_retry_max_ms(),
            copy_parallelism: default_replication_parallelism(),
            catch_up_timeout_ms: default_catch_up_timeout_ms(),
            mode: ReplicationMode::default(),
            sync_policy: SyncPolicy::default(),
            sync_timeout_ms: default_sync_timeout_ms(),
            sync_health_window_ms: default_sync_health_window_ms(),
            read_your_writes_wait_ms: default_read_your_writes_wait_ms(),
            catalogs: Default::default(),
            peer_secret: None,
            followers: Vec::new(),
        }
    }
}

fn default_replication_batch() -> u32 {
    500
}
fn default_replication_wait_ms() -> u64 {
    10_000
}
fn default_replication_attempts() -> u32 {
    5
}
fn default_replication_retry_ms() -> u64 {
    200
}
fn default_replication_retry_max_ms() -> u64 {
    10_000
}
fn default_replication_parallelism() -> usize {
    // Over a cross-region link (~80 ms each way) the replicator keeps up with a sustained
    // commit load from 64 requests in flight per stage (docs/replication.md, 80 ms figures).
    64
}
fn default_catch_up_timeout_ms() -> u64 {
    60_000
}
fn default_sync_timeout_ms() -> u64 {
    5_000
}
fn default_sync_health_window_ms() -> u64 {
    15_000
}
fn default_read_your_writes_wait_ms() -> u64 {
    2_000
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./pangolin-data")
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegionSection {
    /// Region name, e.g. `us-east-1`.
    pub name: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogSection {
    /// Address the Iceberg REST / management API listens on (`127.0.0.1:0` picks a port).
    pub listen: String,
    /// Largest accepted request body in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Memory the parsed table metadata cache may use, in bytes (an entry weighs four times
    /// its JSON: the file plus its parsed form).
    #[serde(default = "default_cache_bytes")]
    pub metadata_cache_bytes: u64,
    /// Largest table, view or namespace property (key plus value), in bytes.
    #[serde(default = "default_max_property_bytes")]
    pub max_property_bytes: usize,
    /// Largest total of one entity's properties (keys plus values), in bytes.
    #[serde(default = "default_max_properties_bytes")]
    pub max_properties_bytes: usize,
    /// Largest table or view metadata file the catalog writes, in bytes.
    #[serde(default = "default_max_metadata_bytes")]
    pub max_metadata_bytes: usize,
    /// How long an `Idempotency-Key` is honoured after its first use, in seconds
    /// (advertised in `/v1/config` as `idempotency-key-lifetime`).
    #[serde(default = "default_idempotency_key_lifetime")]
    pub idempotency_key_lifetime_secs: u64,
    /// Metrics reports kept per catalog (the oldest are trimmed); 0 stores none.
    #[serde(default = "default_metrics_reports_retention")]
    pub metrics_reports_retention: u64,
    /// Time a client has to send a request's head (request line and headers), in ms: from
    /// the connection's start, or from the first byte of a request on a kept-alive
    /// connection. A late client is disconnected.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// Time a client has to send a request's whole body after its head, in ms. A late body
    /// is answered 408.
    #[serde(default = "default_body_read_timeout_ms")]
    pub body_read_timeout_ms: u64,
    /// A kept-alive connection without a request in progress is closed after this long, in ms.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Connections served at once by the catalog listener (and, each, by the node's embedded
    /// S3 and control-plane listeners); more wait in the accept backlog.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_header_read_timeout_ms() -> u64 {
    crate::http_server::DEFAULT_HEADER_READ_TIMEOUT_MS
}

fn default_body_read_timeout_ms() -> u64 {
    crate::http_server::DEFAULT_BODY_READ_TIMEOUT_MS
}

fn default_idle_timeout_ms() -> u64 {
    crate::http_server::DEFAULT_IDLE_TIMEOUT_MS
}

fn default_max_connections() -> usize {
    crate::http_server::DEFAULT_MAX_CONNECTIONS
}

fn default_max_body() -> usize {
    16 * 1024 * 1024
}

fn default_cache_bytes() -> u64 {
    512 * 1024 * 1024
}

fn default_max_property_bytes() -> usize {
    256 * 1024
}

fn default_max_properties_bytes() -> usize {
    1024 * 1024
}

fn default_max_metadata_bytes() -> usize {
    32 * 1024 * 1024
}

fn default_idempotency_key_lifetime() -> u64 {
    1800
}

fn default_metrics_reports_retention() -> u64 {
    10_000
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// `sqlite://{data_dir}/catalog.db` or `postgres://user@host:5432/db`.
    pub url: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// S3 endpoint this region's nodes and clients use. Omit it with `[storage.embedded]`
    /// to use the embedded endpoint's own address; omit both for AWS S3.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3 region vended to clients (always vended: pyarrow otherwise looks it up online).
    pub region: String,
    /// Static credentials (dev / S3-compatible stores). Without them the AWS default
    /// credential chain is used and nothing secret is vended.
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    #[serde(default = "default_true")]
    pub path_style: bool,
    /// Run Pangolin's own S3-compatible endpoint (embedded default).
    #[serde(default)]
    pub embedded: Option<EmbeddedS3Section>,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedS3Section {
    pub listen: String,
    /// Directory holding one folder per bucket.
    pub root: PathBuf,
}

/// The control plane as seen from one voter (or a catalog-only node, `voter_id` absent).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSection {
    /// This node's voter id; absent on catalog nodes that only talk to the voters.
    #[serde(default)]
    pub voter_id: Option<u64>,
    /// Where this node's voter serves Raft RPC and the control API (`/control/v1/...`).
    #[serde(default)]
    pub listen: Option<String>,
    /// Folder of the voter's persistent Raft log and vote (`{data_dir}` allowed).
    #[serde(default)]
    pub raft_dir: Option<PathBuf>,
    pub voters: Vec<VoterSection>,
    /// Region that is primary when the cluster is first initialised.
    pub initial_primary: String,
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    #[serde(default = "default_election_min_ms")]
    pub election_timeout_min_ms: u64,
    #[serde(default = "default_election_max_ms")]
    pub election_timeout_max_ms: u64,
    /// Write lease of the primary region's nodes; a new primary is activated only after the
    /// old lease has expired.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// Fail over automatically when the primary has held no lease for this long; 0 = never.
    #[serde(default)]
    pub auto_failover_after_ms: u64,
    /// An unforced failover (operator or automatic) is refused when the target region's
    /// replication lags the primary's change log by more than this many records.
    #[serde(default = "default_max_failover_lag")]
    pub max_failover_lag_records: u64,
}

fn default_heartbeat_ms() -> u64 {
    150
}
fn default_election_min_ms() -> u64 {
    750
}
fn default_election_max_ms() -> u64 {
    1500
}
fn default_max_failover_lag() -> u64 {
    100
}
fn default_lease_ms() -> u64 {
    4000
}

/// One control-plane voter.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VoterSection {
    pub id: u64,
    /// Region (or `witness`) the voter runs in.
    pub region: String,
    /// host:port of its Raft RPC / control API.
    pub address: String,
}

/// One catalog region of the deployment.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegionPeer {
    pub name: String,
    /// Base URL of the region's catalog endpoint (write forwarding target).
    pub catalog_url: String,
    /// The region's S3 endpoint and credentials, used to copy objects between regions.
    #[serde(default)]
    pub s3_endpoint: Option<String>,
    pub s3_region: String,
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    #[serde(default = "default_true")]
    pub path_style: bool,
}

impl RegionPeer {
    /// The S3 settings a client of this region gets.
    pub fn vended_storage_properties(&self) -> HashMap<String, String> {
        vended_storage(
            self.s3_endpoint.as_deref().unwrap_or(""),
            &self.s3_region,
            self.path_style,
            self.access_key_id
                .as_deref()
                .zip(self.secret_access_key.as_deref()),
        )
    }
}

/// `s3.*` client properties of one region's storage.
fn vended_storage(
    endpoint: &str,
    region: &str,
    path_style: bool,
    credentials: Option<(&str, &str)>,
) -> HashMap<String, String> {
    let mut p = HashMap::new();
    if !endpoint.is_empty() {
        p.insert("s3.endpoint".into(), endpoint.to_string());
    }
    p.insert("s3.region".into(), region.to_string());
    p.insert("client.region".into(), region.to_string());
    p.insert("s3.path-style-access".into(), path_style.to_string());
    if let Some((key, secret)) = credentials {
        p.insert("s3.access-key-id".into(), key.to_string());
        p.insert("s3.secret-access-key".into(), secret.to_string());
    }
    p
}

/// What a fresh region creates at first start.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapSection {
    #[serde(default = "default_name")]
    pub tenant: String,
    /// Catalog created at first start (with a warehouse and bucket of the same name) and
    /// answered by `/v1/config` when a client names no warehouse. Empty: none.
    #[serde(default = "default_catalog")]
    pub catalog: String,
    /// Bucket of the bootstrap warehouse.
    #[serde(default = "default_catalog")]
    pub bucket: String,
}

impl Default for BootstrapSection {
    fn default() -> Self {
        BootstrapSection {
            tenant: default_name(),
            catalog: default_catalog(),
            bucket: default_catalog(),
        }
    }
}

fn default_name() -> String {
    "default".into()
}

fn default_catalog() -> String {
    "demo".into()
}

/// Applies `PANGOLIN_*` overrides to a parsed TOML file.
fn read_table(
    text: &str,
    origin: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<toml::Table, ConfigError> {
    let mut value: toml::Table =
        toml::from_str(text).map_err(|e| ConfigError(format!("{origin}: {e}")))?;
    for (key, val) in env {
        let Some(path) = key.strip_prefix("PANGOLIN_") else {
            continue;
        };
        // Only keys of this file; other PANGOLIN_* variables belong to other tools.
        let first = path.split("__").next().unwrap_or("").to_ascii_lowercase();
        if !CONFIG_ROOTS.contains(&first.as_str()) {
            continue;
        }
        set_path(&mut value, path, &val)
            .map_err(|e| ConfigError(format!("environment {key}: {e}")))?;
    }
    Ok(value)
}

/// A control-plane voter without a catalog (the witness).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VoterConfig {
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    pub region: RegionSection,
    pub control: ControlSection,
    /// The catalog regions, so a planned switchover led by this voter can check that the
    /// target region caught up (their `catalog_url`s; the S3 settings are unused here).
    #[serde(default)]
    pub regions: Vec<RegionPeer>,
    /// Only `catch_up_timeout_ms` matters on a voter without a catalog.
    #[serde(default)]
    pub replication: ReplicationSection,
    /// Fault injection for drills and tests (docs/fault-injection.md). Never in production.
    #[serde(default)]
    pub faults: crate::faults::FaultsSection,
}

/// What `pangolin serve --config FILE` runs: a catalog node (with or without a voter), or a
/// voter alone (a file without `[catalog]`).
#[derive(Debug, Clone)]
pub enum NodeConfig {
    Catalog(Box<Config>),
    Voter(Box<VoterConfig>),
}

impl NodeConfig {
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<NodeConfig, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {origin}: {e}")))?;
        let table = read_table(&text, &origin, env)?;
        if table.contains_key("catalog") {
            return Ok(NodeConfig::Catalog(Box::new(Config::from_table(
                table, &origin,
            )?)));
        }
        let mut voter: VoterConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e| ConfigError(format!("{origin}: {e}")))?;
        let dir = voter.data_dir.display().to_string();
        voter.control.expand_data_dir(&dir);
        voter.control.validate()?;
        if voter.control.voter_id.is_none() {
            return Err(ConfigError(
                "`control.voter_id`: a file without [catalog] runs a voter and needs its id".into(),
            ));
        }
        Ok(NodeConfig::Voter(Box::new(voter)))
    }
}

impl ControlSection {
    fn expand_data_dir(&mut self, dir: &str) {
        if let Some(d) = &mut self.raft_dir {
            *d = PathBuf::from(d.display().to_string().replace("{data_dir}", dir));
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("`{key}`: {why}")));
        if self.voters.is_empty() {
            return bad("control.voters", "must list the voters");
        }
        let mut ids = std::collections::HashSet::new();
        for v in &self.voters {
            if !ids.insert(v.id) {
                return bad(
                    "control.voters",
                    &format!("voter id {} is listed twice", v.id),
                );
            }
            if v.address.parse::<SocketAddr>().is_err() && !v.address.contains(':') {
                return bad("control.voters.address", "must be host:port");
            }
        }
        if let Some(id) = self.voter_id {
            if !ids.contains(&id) {
                return bad("control.voter_id", "must be one of control.voters");
            }
            match &self.listen {
                Some(l) if l.parse::<SocketAddr>().is_ok() => {}
                _ => {
                    return bad(
                        "control.listen",
                        "a voter needs an address like 127.0.0.1:8190",
                    )
                }
            }
            if self.raft_dir.is_none() {
                return bad(
                    "control.raft_dir",
                    "a voter needs a folder for its Raft log",
                );
            }
        }
        if self.initial_primary.is_empty() {
            return bad("control.initial_primary", "must name a region");
        }
        if self.election_timeout_min_ms <= self.heartbeat_ms
            || self.election_timeout_max_ms <= self.election_timeout_min_ms
        {
            return bad(
                "control.election_timeout_min_ms",
                "need heartbeat_ms < election_timeout_min_ms < election_timeout_max_ms",
            );
        }
        if self.lease_ms < self.heartbeat_ms * 3 {
            return bad("control.lease_ms", "must be at least 3 heartbeats");
        }
        Ok(())
    }
}

/// Top-level keys that `PANGOLIN_<KEY>` environment variables may override.
const CONFIG_ROOTS: &[&str] = &[
    "control",
    "regions",
    "data_dir",
    "region",
    "catalog",
    "database",
    "storage",
    "bootstrap",
    "replication",
    "faults",
];

/// Bounds of `replication.peer_secret`, in characters.
const MIN_PEER_SECRET_LEN: usize = 16;
const MAX_PEER_SECRET_LEN: usize = 1024;
/// Longest name in `replication.followers`.
const MAX_REGION_NAME_LEN: usize = 128;

/// Keys whose environment override is always a string (a secret made of digits stays one).
const STRING_KEYS: &[&str] = &["replication__peer_secret"];

/// Bounds of `catalog.header_read_timeout_ms`, `body_read_timeout_ms`, `idle_timeout_ms`:
/// 100 ms to 1 hour.
const MIN_HTTP_TIMEOUT_MS: u64 = 100;
const MAX_HTTP_TIMEOUT_MS: u64 = 3_600_000;

/// Longest accepted `catalog.idempotency_key_lifetime_secs`: 7 days.
const MAX_IDEMPOTENCY_KEY_LIFETIME_SECS: u64 = 7 * 24 * 3600;

/// A configuration problem, naming the file and key.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Reads a config file, applies `PANGOLIN_*` overrides from `env`, substitutes
    /// `{data_dir}` and validates.
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text, &path.display().to_string(), env)
    }

    /// Like [`Config::load`] from a string; `origin` names it in errors.
    pub fn parse(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let value = read_table(text, origin, env)?;
        Self::from_table(value, origin)
    }

    fn from_table(value: toml::Table, origin: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::Value::Table(value)
            .try_into()
            .map_err(|e| ConfigError(format!("{origin}: {e}")))?;
        config.expand_data_dir();
        config.validate()?;
        Ok(config)
    }

    fn expand_data_dir(&mut self) {
        let dir = self.data_dir.display().to_string();
        let sub = |s: &str| s.replace("{data_dir}", &dir);
        self.database.url = sub(&self.database.url);
        if let Some(e) = &mut self.storage.embedded {
            e.root = PathBuf::from(sub(&e.root.display().to_string()));
        }
        if let Some(c) = &mut self.control {
            c.expand_data_dir(&dir);
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("`{key}`: {why}")));
        if self.region.name.trim().is_empty() {
            return bad("region.name", "must not be empty");
        }
        if self.catalog.listen.parse::<SocketAddr>().is_err() {
            return bad("catalog.listen", "must be an address like 127.0.0.1:8181");
        }
        for (key, ms) in [
            (
                "catalog.header_read_timeout_ms",
                self.catalog.header_read_timeout_ms,
            ),
            (
                "catalog.body_read_timeout_ms",
                self.catalog.body_read_timeout_ms,
            ),
            ("catalog.idle_timeout_ms", self.catalog.idle_timeout_ms),
        ] {
            if !(MIN_HTTP_TIMEOUT_MS..=MAX_HTTP_TIMEOUT_MS).contains(&ms) {
                return bad(
                    key,
                    &format!("must be {MIN_HTTP_TIMEOUT_MS} to {MAX_HTTP_TIMEOUT_MS} (ms)"),
                );
            }
        }
        if !(1..=crate::http_server::MAX_CONNECTIONS_LIMIT).contains(&self.catalog.max_connections)
        {
            return bad(
                "catalog.max_connections",
                &format!("must be 1 to {}", crate::http_server::MAX_CONNECTIONS_LIMIT),
            );
        }
        if self.catalog.idempotency_key_lifetime_secs == 0
            || self.catalog.idempotency_key_lifetime_secs > MAX_IDEMPOTENCY_KEY_LIFETIME_SECS
        {
            return bad(
                "catalog.idempotency_key_lifetime_secs",
                "must be between 1 and 604800 (7 days)",
            );
        }
        if !(self.database.url.starts_with("sqlite:") || self.database.url.starts_with("postgres"))
        {
            return bad("database.url", "must start with sqlite:// or postgres://");
        }
        if self.storage.access_key_id.is_some() != self.storage.secret_access_key.is_some() {
            return bad(
                "storage.access_key_id",
                "access_key_id and secret_access_key go together",
            );
        }
        if let Some(e) = &self.storage.embedded {
            if e.listen.parse::<SocketAddr>().is_err() {
                return bad(
                    "storage.embedded.listen",
                    "must be an address like 127.0.0.1:9000",
                );
            }
            if self.storage.access_key_id.is_none() {
                return bad(
                    "storage.access_key_id",
                    "the embedded S3 endpoint needs static credentials",
                );
            }
        } else if let Some(ep) = &self.storage.endpoint {
            if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                return bad("storage.endpoint", "must be an http(s) URL");
            }
        }
        if !self.bootstrap.catalog.is_empty() && self.bootstrap.bucket.is_empty() {
            return bad("bootstrap.bucket", "must not be empty");
        }
        let mut names = std::collections::HashSet::new();
        for r in &self.regions {
            if !names.insert(r.name.as_str()) {
                return bad("regions", &format!("region {} is listed twice", r.name));
            }
        }
        let r = &self.replication;
        if r.batch_size == 0 || r.batch_size > 10_000 {
            return bad("replication.batch_size", "must be between 1 and 10000");
        }
        if r.max_record_attempts == 0 {
            return bad("replication.max_record_attempts", "must be at least 1");
        }
        if r.copy_parallelism == 0 {
            return bad("replication.copy_parallelism", "must be at least 1");
        }
        if r.sync_timeout_ms == 0 || r.sync_timeout_ms > 600_000 {
            return bad(
                "replication.sync_timeout_ms",
                "must be between 1 and 600000",
            );
        }
        if r.sync_health_window_ms == 0 {
            return bad("replication.sync_health_window_ms", "must be at least 1");
        }
        if r.read_your_writes_wait_ms > 60_000 {
            return bad(
                "replication.read_your_writes_wait_ms",
                "must be at most 60000",
            );
        }
        for (name, c) in &r.catalogs {
            if c.sync_timeout_ms.is_some_and(|t| t == 0 || t > 600_000) {
                return bad(
                    &format!("replication.catalogs.{name}.sync_timeout_ms"),
                    "must be between 1 and 600000",
                );
            }
        }
        if let Some(p) = &r.primary {
            if !names.contains(p.as_str()) {
                return bad("replication.primary", "must be one of [[regions]]");
            }
        }
        if let Some(secret) = r.peer_secret() {
            let s = secret.expose();
            if s.len() < MIN_PEER_SECRET_LEN
                || s.len() > MAX_PEER_SECRET_LEN
                || !s.bytes().all(|b| b.is_ascii_graphic())
            {
                // The value itself is never part of the message.
                return bad(
                    "replication.peer_secret",
                    &format!(
                        "must be {MIN_PEER_SECRET_LEN} to {MAX_PEER_SECRET_LEN} printable ASCII \
                         characters without spaces (e.g. `openssl rand -hex 32`)"
                    ),
                );
            }
        }
        for f in &r.followers {
            if f.trim().is_empty() || f.len() > MAX_REGION_NAME_LEN {
                return bad(
                    "replication.followers",
                    &format!("region names must be 1 to {MAX_REGION_NAME_LEN} characters"),
                );
            }
        }
        if let Some(c) = &self.control {
            c.validate()?;
            if !self.regions.is_empty() && !names.contains(c.initial_primary.as_str()) {
                return bad("control.initial_primary", "must be one of [[regions]]");
            }
            if !names.contains(self.region.name.as_str()) {
                return bad("regions", "must list this node's own region");
            }
        }
        Ok(())
    }

    /// The S3 settings vended to clients in `/v1/config` and table `config`.
    pub fn vended_storage_properties(&self, endpoint: &str) -> HashMap<String, String> {
        vended_storage(
            endpoint,
            &self.storage.region,
            self.storage.path_style,
            self.storage
                .access_key_id
                .as_deref()
                .zip(self.storage.secret_access_key.as_deref()),
        )
    }
}

/// Sets `SECTION__KEY` (case-insensitive, `__` between levels) in a TOML table. Values are
/// parsed as TOML scalars when they look like one, else taken as strings.
fn set_path(root: &mut toml::Table, path: &str, raw: &str) -> Result<(), String> {
    let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
    let (last, parents) = parts.split_last().ok_or("empty key")?;
    let mut table = root;
    for p in parents {
        let entry = table
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{p}` is not a section"))?;
    }
    let value = match raw.parse::<i64>() {
        _ if STRING_KEYS.contains(&parts.join("__").as_str()) => {
            toml::Value::String(raw.to_string())
        }
        Ok(i) => toml::Value::Integer(i),
        Err(_) => match raw {
            "true" => toml::Value::Boolean(true),
            "false" => toml::Value::Boolean(false),
            _ => toml::Value::String(raw.to_string()),
        },
    };
    table.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = include_str!("../regions/us-east-1.toml");

    #[test]
    fn dev_region_file_parses_and_substitutes_data_dir() {
        let env = vec![("PANGOLIN_DATA_DIR".to_string(), "/tmp/x".to_string())];
        let c = Config::parse(DEV, "us-east-1.toml", env).unwrap();
        assert_eq!(c.region.name, "us-east-1");
        assert_eq!(c.database.url, "sqlite:///tmp/x/us-east-1/catalog.db");
        assert_eq!(
            c.storage.embedded.unwrap().root,
            PathBuf::from("/tmp/x/us-east-1/s3")
        );
    }

    #[test]
    fn env_override_replaces_nested_key() {
        let env = vec![(
            "PANGOLIN_CATALOG__LISTEN".to_string(),
            "127.0.0.1:9999".to_string(),
        )];
        let c = Config::parse(DEV, "x", env).unwrap();
        assert_eq!(c.catalog.listen, "127.0.0.1:9999");
    }

    #[test]
    fn unknown_key_is_named_in_the_error() {
        let text = format!("{DEV}\n[extra]\nfoo = 1\n");
        let err = Config::parse(&text, "x", Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("extra"), "{err}");
    }

    #[test]
    fn idempotency_and_metrics_settings_default_and_validate() {
        let c = Config::parse(DEV, "x", Vec::new()).unwrap();
        assert_eq!(c.catalog.idempotency_key_lifetime_secs, 1800);
        assert_eq!(c.catalog.metrics_reports_retention, 10_000);
        let env = vec![(
            "PANGOLIN_CATALOG__IDEMPOTENCY_KEY_LIFETIME_SECS".to_string(),
            "0".to_string(),
        )];
        let err = Config::parse(DEV, "x", env).unwrap_err().to_string();
        assert!(
            err.contains("catalog.idempotency_key_lifetime_secs"),
            "{err}"
        );
    }

    #[test]
    fn bad_listen_address_is_named() {
        let env = vec![("PANGOLIN_CATALOG__LISTEN".to_string(), "nope".to_string())];
        let err = Config::parse(DEV, "x", env).unwrap_err().to_string();
        assert!(err.contains("catalog.listen"), "{err}");
    }

    #[test]
    fn replication_mode_defaults_to_async_with_per_catalog_overrides() {
        let c = Config::parse(DEV, "x", Vec::new()).unwrap();
        assert_eq!(c.replication.mode_of("demo").mode, ReplicationMode::Async);
        assert_eq!(c.replication.read_your_writes_wait_ms, 2000);
        let env = vec![
            ("PANGOLIN_REPLICATION__MODE".to_string(), "sync".to_string()),
            (
                "PANGOLIN_REPLICATION__CATALOGS__DEMO__SYNC_POLICY".to_string(),
                "degrade".to_string(),
            ),
            (
                "PANGOLIN_REPLICATION__CATALOGS__LOGS__MODE".to_string(),
                "async".to_string(),
            ),
        ];
        let c = Config::parse(DEV, "x", env).unwrap();
        let demo = c.replication.mode_of("demo");
        assert_eq!(demo.mode, ReplicationMode::Sync);
        assert_eq!(demo.sync_policy, SyncPolicy::Degrade);
        assert_eq!(demo.sync_timeout_ms, 5000);
        assert_eq!(c.replication.mode_of("logs").mode, ReplicationMode::Async);
        assert_eq!(
            c.replication.mode_of("other").sync_policy,
            SyncPolicy::Block
        );

        for (key, value, named) in [
            ("PANGOLIN_REPLICATION__MODE", "eventually", "mode"),
            (
                "PANGOLIN_REPLICATION__SYNC_TIMEOUT_MS",
                "0",
                "replication.sync_timeout_ms",
            ),
            (
                "PANGOLIN_REPLICATION__CATALOGS__DEMO__SYNC_TIMEOUT_MS",
                "0",
                "replication.catalogs.demo.sync_timeout_ms",
            ),
            (
                "PANGOLIN_REPLICATION__READ_YOUR_WRITES_WAIT_MS",
                "600000",
                "replication.read_your_writes_wait_ms",
            ),
        ] {
            let env = vec![(key.to_string(), value.to_string())];
            let err = Config::parse(DEV, "x", env).unwrap_err().to_string();
            assert!(err.contains(named), "{key}: {err}");
        }
    }

    #[test]
    fn peer_secret_comes_from_the_environment_and_is_never_printed() {
        let c = Config::parse(DEV, "x", Vec::new()).unwrap();
        assert!(c.replication.peer_secret().is_none());
        // Digits stay a string (no leading zero lost).
        let digits = "0123456789012345678901234567890123";
        let env = vec![(
            "PANGOLIN_REPLICATION__PEER_SECRET".to_string(),
            digits.to_string(),
        )];
        let c = Config::parse(DEV, "x", env).unwrap();
        assert_eq!(c.replication.peer_secret().unwrap().expose(), digits);
        let printed = format!("{c:?} {}", toml::to_string(&c.replication).unwrap());
        assert!(!printed.contains(digits), "{printed}");
        // Empty: none (fail closed); too short: refused without echoing it.
        let env = vec![(
            "PANGOLIN_REPLICATION__PEER_SECRET".to_string(),
            String::new(),
        )];
        let c = Config::parse(DEV, "x", env).unwrap();
        assert!(c.replication.peer_secret().is_none());
        let env = vec![(
            "PANGOLIN_REPLICATION__PEER_SECRET".to_string(),
            "short-one".to_string(),
        )];
        let err = Config::parse(DEV, "x", env).unwrap_err().to_string();
        assert!(err.contains("replication.peer_secret"), "{err}");
        assert!(!err.contains("short-one"), "{err}");
        // Followers: a list in the file, comma-separated from the environment.
        let env = vec![(
            "PANGOLIN_REPLICATION__FOLLOWERS".to_string(),
            "eu-west-1, ap-south-1".to_string(),
        )];
        let c = Config::parse(DEV, "x", env).unwrap();
        assert_eq!(c.replication.followers, ["eu-west-1", "ap-south-1"]);
    }
}
