//! `pangolin dev`: the local multi-region deployment on loopback, persistent in a data dir.
//!
//! Runs three child processes of this binary, each `pangolin serve` with one of the built-in
//! region files: us-east-1 (catalog 8181, S3 9000, voter 8190), eu-west-1 (catalog 8281,
//! S3 9100, voter 8290) and the witness voter (8390). A child that dies unexpectedly is
//! restarted after 5 s, as a service manager would; Ctrl-C or SIGTERM stops them
//! all cleanly. Each child's pid is kept in `<data-dir>/dev/<name>.pid`.
//!
//! The supervisor's control endpoint on `127.0.0.1:8099` drives failover drills
//! (docs/fault-injection.md): node lifecycle (`/dev/v1/nodes/{name}/kill|stop|cont|restart`;
//! a node killed there stays down until restarted) and link faults, fanned out to each node's
//! `/api/v1/dev/faults` (children run with `PANGOLIN_FAULTS__ENABLED=true`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::faults::{FaultMode, FaultSet, LinkFault};

/// The built-in region files, so `pangolin dev` works from any folder.
pub const US_EAST_1_TOML: &str = include_str!("../regions/us-east-1.toml");
pub const EU_WEST_1_TOML: &str = include_str!("../regions/eu-west-1.toml");
pub const WITNESS_TOML: &str = include_str!("../regions/witness.toml");

/// The dev nodes: (name, built-in config). A node's name is its region's.
pub const DEV_NODES: &[(&str, &str)] = &[
    ("us-east-1", US_EAST_1_TOML),
    ("eu-west-1", EU_WEST_1_TOML),
    ("witness", WITNESS_TOML),
];

/// Where the supervisor's control endpoint listens.
pub const SUPERVISOR_ADDR: &str = "127.0.0.1:8099";

/// Pause before restarting a child that died unexpectedly. Longer than a Raft leader lease
/// plus the largest election timeout (1.5 s + 1.5 s in the dev files), so the surviving voters
/// elect a new leader before a killed leader comes back (openraft lets a restarted voter
/// resume its own committed leadership at once).
const RESTART_AFTER: Duration = Duration::from_secs(5);

/// Bound of one fault update sent to a node (a SIGSTOPped node never answers).
const FAULT_PUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// The peer secret of in-process test regions ([`standalone_config`]): every such region
/// shares it, so any of them can follow any other. Tests only.
pub const TEST_PEER_SECRET: &str = "pangolin-in-process-test-regions-peer-secret";

/// The region in-process test regions follow from (`TestRegion::start_secondary_of`).
const TEST_FOLLOWER: &str = "eu-west-1";

/// The us-east-1 catalog config as a standalone region (no control plane), for in-process
/// test regions: without `[[regions]]`, it lets `eu-west-1` follow it
/// (`replication.followers`), and it has [`TEST_PEER_SECRET`] unless `env` sets one.
pub fn standalone_config(env: Vec<(String, String)>) -> anyhow::Result<Config> {
    let mut config = Config::parse(US_EAST_1_TOML, "regions/us-east-1.toml (built in)", env)?;
    config.control = None;
    config.regions.clear();
    if config.replication.peer_secret.is_none() {
        config.replication.peer_secret = Some(crate::config::PeerSecret::new(TEST_PEER_SECRET));
    }
    if config.replication.followers.is_empty() && config.region.name != TEST_FOLLOWER {
        config.replication.followers = vec![TEST_FOLLOWER.to_string()];
    }
    Ok(config)
}

/// Where `pangolin dev` keeps the deployment's peer secret (`replication.peer_secret`).
const PEER_SECRET_FILE: &str = "peer_secret";

/// The dev deployment's peer secret: read from `<conf_dir>/peer_secret`, or generated
/// (256 random bits, hex) and written there (mode 0600) at first start, so restarts keep
/// it. Never printed.
fn dev_peer_secret(conf_dir: &Path) -> anyhow::Result<String> {
    use sha2::Digest as _;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let file = conf_dir.join(PEER_SECRET_FILE);
    if let Ok(text) = std::fs::read_to_string(&file) {
        let secret = text.trim();
        if secret.len() >= 32 && secret.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(secret.to_string());
        }
        eprintln!(
            "[supervisor] {} is not a usable peer secret; generating a new one",
            file.display()
        );
    }
    // Three v4 UUIDs (366 bits from the OS random generator), condensed by SHA-256.
    let mut hash = sha2::Sha256::new();
    for _ in 0..3 {
        hash.update(uuid::Uuid::new_v4().as_bytes());
    }
    let secret = hex::encode(hash.finalize());
    let tmp = conf_dir.join(format!("{PEER_SECRET_FILE}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(secret.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &file).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(secret)
}

/// Lifecycle state of a dev node, as `GET /dev/v1/nodes` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Running,
    /// Not running: killed through the endpoint (down until restarted) or crashed (restarted
    /// after 5 s).
    Killed,
    /// SIGSTOPped (frozen) until `/cont`.
    Stopped,
}

/// One node in `GET /dev/v1/nodes`.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    pub name: String,
    pub pid: Option<u32>,
    pub state: NodeState,
}

/// Requests to a node's supervising task.
#[derive(Debug, Clone, Copy)]
enum Lifecycle {
    /// SIGKILL, and keep it down until `Restart`.
    Kill,
    /// Start it if down, else kill and start.
    Restart,
}

type Reply = oneshot::Sender<Result<(), String>>;

struct DevNode {
    name: String,
    /// The node's `/api/v1/dev/faults` URL (catalog port, or voter port for the witness).
    faults_url: String,
    status: Mutex<(Option<u32>, NodeState)>,
    commands: mpsc::Sender<(Lifecycle, Reply)>,
}

impl DevNode {
    fn view(&self) -> NodeView {
        let (pid, state) = *lock(&self.status);
        NodeView {
            name: self.name.clone(),
            pid,
            state,
        }
    }

    fn set_status(&self, pid: Option<u32>, state: NodeState) {
        *lock(&self.status) = (pid, state);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// The supervisor: the nodes and the link faults it has set on them.
struct Supervisor {
    nodes: Vec<Arc<DevNode>>,
    /// Wanted faults: node name → peer region → fault. Re-applied when a node restarts.
    faults: Mutex<BTreeMap<String, BTreeMap<String, LinkFault>>>,
    http: reqwest::Client,
}

impl Supervisor {
    fn node(&self, name: &str) -> Option<&Arc<DevNode>> {
        self.nodes.iter().find(|n| n.name == name)
    }

    fn wanted(&self, node: &str) -> FaultSet {
        FaultSet {
            links: lock(&self.faults)
                .get(node)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default(),
            disable_fencing: false,
        }
    }

    /// Sends each node its wanted fault set; answers what every node now has.
    async fn push_all(&self) -> Vec<serde_json::Value> {
        let pushes = self.nodes.iter().map(|n| async move {
            let set = self.wanted(&n.name);
            let outcome = self.push(n, &set).await;
            let mut v = serde_json::json!({"name": n.name, "links": set.links});
            if let Err(e) = outcome {
                v["error"] = serde_json::Value::String(e);
            }
            v
        });
        futures::future::join_all(pushes).await
    }

    async fn push(&self, node: &DevNode, set: &FaultSet) -> Result<(), String> {
        let req = if set.links.is_empty() {
            self.http.delete(&node.faults_url)
        } else {
            self.http.put(&node.faults_url).json(set)
        };
        let resp = req
            .timeout(FAULT_PUSH_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("{} unreachable: {e}", node.faults_url))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            Err(format!("{} answered {status}: {body}", node.faults_url))
        }
    }

    /// After a node (re)started: waits for its endpoint, then gives it its wanted faults.
    async fn reapply_when_up(self: Arc<Self>, node: Arc<DevNode>, stop: CancellationToken) {
        for _ in 0..300 {
            let set = self.wanted(&node.name);
            if set.links.is_empty() {
                return;
            }
            if self.push(&node, &set).await.is_ok() {
                tracing::info!(node = %node.name, "link faults re-applied after restart");
                return;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }
}

/// Runs until Ctrl-C / SIGTERM, then stops every node cleanly.
pub async fn run(data_dir: PathBuf, fresh: bool) -> anyhow::Result<()> {
    if fresh && data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)
            .with_context(|| format!("cannot wipe {}", data_dir.display()))?;
    }
    let conf_dir = data_dir.join("dev");
    std::fs::create_dir_all(&conf_dir)
        .with_context(|| format!("cannot create {}", conf_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;
    let conf_dir = data_dir.join("dev");
    // Region-to-region replication calls carry it (`replication.peer_secret`); an operator's
    // own PANGOLIN_REPLICATION__PEER_SECRET wins (the children inherit it).
    let peer_secret = match std::env::var_os(PEER_SECRET_ENV) {
        Some(_) => None,
        None => Some(Arc::new(dev_peer_secret(&conf_dir)?)),
    };
    let exe = std::env::current_exe().context("cannot find the pangolin binary")?;
    let listener = tokio::net::TcpListener::bind(SUPERVISOR_ADDR)
        .await
        .with_context(|| format!("the dev supervisor cannot listen on {SUPERVISOR_ADDR}"))?;

    let stop = CancellationToken::new();
    let mut nodes = Vec::new();
    let mut receivers = Vec::new();
    for (name, toml) in DEV_NODES {
        let (tx, rx) = mpsc::channel(8);
        nodes.push(Arc::new(DevNode {
            name: name.to_string(),
            faults_url: format!("http://{}/api/v1/dev/faults", node_listen(toml)?),
            status: Mutex::new((None, NodeState::Killed)),
            commands: tx,
        }));
        receivers.push(rx);
    }
    let supervisor = Arc::new(Supervisor {
        nodes: nodes.clone(),
        faults: Mutex::new(BTreeMap::new()),
        http: reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_millis(500))
            .build()?,
    });
    let mut supervisors = Vec::new();
    for ((node, rx), (name, toml)) in nodes.into_iter().zip(receivers).zip(DEV_NODES) {
        let file = conf_dir.join(format!("{name}.toml"));
        std::fs::write(&file, toml).with_context(|| format!("cannot write {}", file.display()))?;
        supervisors.push(tokio::spawn(supervise(
            node,
            rx,
            supervisor.clone(),
            NodeLaunch {
                exe: exe.clone(),
                config: file,
                data_dir: data_dir.clone(),
                peer_secret: peer_secret.clone(),
            },
            stop.clone(),
        )));
    }
    let app = supervisor_router(supervisor);
    let server_stop = stop.clone();
    let server = tokio::spawn(async move {
        let serve =
            axum::serve(listener, app).with_graceful_shutdown(server_stop.cancelled_owned());
        if let Err(e) = serve.await {
            eprintln!("dev supervisor endpoint failed: {e}");
        }
    });
    println!(
        "pangolin dev (data in {})\n  us-east-1  catalog http://127.0.0.1:8181  S3 http://127.0.0.1:9000  voter 127.0.0.1:8190\n  eu-west-1  catalog http://127.0.0.1:8281  S3 http://127.0.0.1:9100  voter 127.0.0.1:8290\n  witness    voter 127.0.0.1:8390\n  supervisor http://{SUPERVISOR_ADDR}/dev/v1/nodes  (kill/stop/restart nodes, isolate regions; docs/fault-injection.md)\n  catalog `demo` in each region; us-east-1 is primary at first start.\n  replication peer secret: {}\nPress Ctrl-C to stop.",
        data_dir.display(),
        match peer_secret {
            Some(_) => format!(
                "{} (kept across restarts)",
                conf_dir.join(PEER_SECRET_FILE).display()
            ),
            None => format!("from {PEER_SECRET_ENV}"),
        }
    );
    wait_for_signal().await;
    println!("stopping…");
    stop.cancel();
    for s in supervisors {
        let _ = s.await;
    }
    let _ = server.await;
    println!("stopped");
    Ok(())
}

/// The address a node's fault endpoint is reached at: its catalog listener, or the voter's
/// for a node without a catalog (the witness).
fn node_listen(toml_text: &str) -> anyhow::Result<String> {
    let table: toml::Table = toml::from_str(toml_text)?;
    let listen = |section: &str| {
        table
            .get(section)
            .and_then(|s| s.get("listen"))
            .and_then(|l| l.as_str())
            .map(str::to_string)
    };
    listen("catalog")
        .or_else(|| listen("control"))
        .context("a built-in region file has neither catalog.listen nor control.listen")
}

/// The environment variable of `replication.peer_secret`.
const PEER_SECRET_ENV: &str = "PANGOLIN_REPLICATION__PEER_SECRET";

/// How a child is started: `<exe> serve --config <config>` on `data_dir`.
struct NodeLaunch {
    exe: PathBuf,
    config: PathBuf,
    data_dir: PathBuf,
    /// Passed as PANGOLIN_REPLICATION__PEER_SECRET (None: the child inherits the
    /// operator's).
    peer_secret: Option<Arc<String>>,
}

/// Keeps one child running until `stop`: restarts it when it dies on its own, and obeys
/// the endpoint's kill and restart.
async fn supervise(
    node: Arc<DevNode>,
    mut commands: mpsc::Receiver<(Lifecycle, Reply)>,
    supervisor: Arc<Supervisor>,
    launch: NodeLaunch,
    stop: CancellationToken,
) {
    let data_dir = &launch.data_dir;
    let name = node.name.clone();
    let pid_file = data_dir.join("dev").join(format!("{name}.pid"));
    // Held down after a kill through the endpoint, until a restart.
    let mut held_down = false;
    // A restart request waiting for the child to be up.
    let mut restart_reply: Option<Reply> = None;
    loop {
        if held_down {
            tokio::select! {
                _ = stop.cancelled() => return,
                cmd = commands.recv() => match cmd {
                    None => return,
                    Some((Lifecycle::Kill, reply)) => { let _ = reply.send(Ok(())); continue; }
                    Some((Lifecycle::Restart, reply)) => { held_down = false; restart_reply = Some(reply); }
                },
            }
        }
        let mut child = match spawn_node(&name, &launch) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("[{name}] cannot start: {e:#}");
                if let Some(reply) = restart_reply.take() {
                    let _ = reply.send(Err(format!("cannot start {name}: {e:#}")));
                }
                tokio::select! {
                    _ = tokio::time::sleep(RESTART_AFTER) => continue,
                    _ = stop.cancelled() => return,
                }
            }
        };
        let pid = child.id();
        if let Some(pid) = pid {
            let _ = std::fs::write(&pid_file, pid.to_string());
        }
        node.set_status(pid, NodeState::Running);
        if let Some(reply) = restart_reply.take() {
            let _ = reply.send(Ok(()));
        }
        tokio::spawn(
            supervisor
                .clone()
                .reapply_when_up(node.clone(), stop.child_token()),
        );
        tokio::select! {
            status = child.wait() => {
                node.set_status(None, NodeState::Killed);
                eprintln!("[{name}] exited ({}); restarting in {}s", status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()), RESTART_AFTER.as_secs());
                tokio::select! {
                    _ = tokio::time::sleep(RESTART_AFTER) => {},
                    cmd = commands.recv() => match cmd {
                        None => return,
                        Some((Lifecycle::Kill, reply)) => { held_down = true; let _ = reply.send(Ok(())); }
                        Some((Lifecycle::Restart, reply)) => restart_reply = Some(reply),
                    },
                    _ = stop.cancelled() => { let _ = std::fs::remove_file(&pid_file); return; }
                }
            }
            cmd = commands.recv() => {
                let Some((what, reply)) = cmd else { return };
                // A stopped (SIGSTOPped) child dies from SIGKILL all the same.
                let _ = child.start_kill();
                let _ = child.wait().await;
                node.set_status(None, NodeState::Killed);
                let _ = std::fs::remove_file(&pid_file);
                match what {
                    Lifecycle::Kill => {
                        eprintln!("[{name}] killed (SIGKILL) through the supervisor endpoint; down until restarted");
                        held_down = true;
                        let _ = reply.send(Ok(()));
                    }
                    Lifecycle::Restart => {
                        eprintln!("[{name}] restarting through the supervisor endpoint");
                        restart_reply = Some(reply);
                    }
                }
            }
            _ = stop.cancelled() => {
                stop_child(&name, &mut child).await;
                let _ = std::fs::remove_file(&pid_file);
                return;
            }
        }
    }
}

fn spawn_node(name: &str, launch: &NodeLaunch) -> anyhow::Result<Child> {
    let mut child = Command::new(&launch.exe)
        .arg("serve")
        .arg("--config")
        .arg(&launch.config)
        .env("PANGOLIN_DATA_DIR", &launch.data_dir)
        .envs(
            launch
                .peer_secret
                .as_deref()
                .map(|s| (PEER_SECRET_ENV, s.as_str())),
        )
        .envs(
            std::env::var_os("PANGOLIN_FAULTS__ENABLED")
                .is_none()
                .then_some(("PANGOLIN_FAULTS__ENABLED", "true")),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let name = name.to_string();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                println!("[{name}] {line}");
            }
        });
    }
    Ok(child)
}

/// SIGTERM, then SIGKILL if the child has not exited within 10 s. A SIGSTOPped child is
/// continued first so that it can handle the SIGTERM.
async fn stop_child(name: &str, child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
        Ok(_) => {}
        Err(_) => {
            eprintln!("[{name}] did not stop in 10s; killing it");
            let _ = child.kill().await;
        }
    }
}

/// Ctrl-C or SIGTERM.
pub async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

/// The supervisor's control endpoint (contract in docs/fault-injection.md).
fn supervisor_router(supervisor: Arc<Supervisor>) -> Router {
    Router::new()
        .route("/dev/v1/nodes", get(list_nodes))
        .route("/dev/v1/nodes/{name}/{action}", post(node_action))
        .route("/dev/v1/regions/{name}/isolate", post(isolate_region))
        .route("/dev/v1/links", post(set_link))
        .route("/dev/v1/heal", post(heal))
        .route("/dev/v1/faults", get(list_faults))
        .with_state(supervisor)
}

fn dev_error(status: StatusCode, message: impl Into<String>) -> Response {
    let kind = match status {
        StatusCode::NOT_FOUND => "NotFoundException",
        StatusCode::CONFLICT => "ConflictException",
        StatusCode::BAD_REQUEST => "BadRequestException",
        _ => "ServiceUnavailableException",
    };
    let body = serde_json::json!({"error": {
        "message": message.into(),
        "type": kind,
        "code": status.as_u16(),
    }});
    (status, Json(body)).into_response()
}

async fn list_nodes(State(sup): State<Arc<Supervisor>>) -> Json<Vec<NodeView>> {
    Json(sup.nodes.iter().map(|n| n.view()).collect())
}

async fn node_action(
    State(sup): State<Arc<Supervisor>>,
    UrlPath((name, action)): UrlPath<(String, String)>,
) -> Response {
    let Some(node) = sup.node(&name).cloned() else {
        return dev_error(StatusCode::NOT_FOUND, format!("no dev node named {name}"));
    };
    match action.as_str() {
        "kill" | "restart" => {
            let what = if action == "kill" {
                Lifecycle::Kill
            } else {
                Lifecycle::Restart
            };
            let (tx, rx) = oneshot::channel();
            if node.commands.send((what, tx)).await.is_err() {
                return dev_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the supervisor is stopping",
                );
            }
            match tokio::time::timeout(Duration::from_secs(30), rx).await {
                Ok(Ok(Ok(()))) => Json(node.view()).into_response(),
                Ok(Ok(Err(e))) => dev_error(StatusCode::SERVICE_UNAVAILABLE, e),
                _ => dev_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{action} of {name} did not finish in 30 s"),
                ),
            }
        }
        "stop" | "cont" => {
            let (signal, from, to) = if action == "stop" {
                (Signal::SIGSTOP, NodeState::Running, NodeState::Stopped)
            } else {
                (Signal::SIGCONT, NodeState::Stopped, NodeState::Running)
            };
            let mut status = lock(&node.status);
            let (pid, state) = *status;
            let Some(pid) = pid else {
                return dev_error(StatusCode::CONFLICT, format!("{name} is not running"));
            };
            if state != from && state != to {
                return dev_error(StatusCode::CONFLICT, format!("{name} is {state:?}"));
            }
            if let Err(e) = kill(Pid::from_raw(pid as i32), signal) {
                return dev_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot signal {name} (pid {pid}): {e}"),
                );
            }
            status.1 = to;
            drop(status);
            eprintln!("[{name}] {signal:?} through the supervisor endpoint");
            Json(node.view()).into_response()
        }
        _ => dev_error(
            StatusCode::NOT_FOUND,
            format!("unknown action {action}: kill, stop, cont or restart"),
        ),
    }
}

async fn list_faults(State(sup): State<Arc<Supervisor>>) -> Json<serde_json::Value> {
    let nodes: Vec<_> = sup
        .nodes
        .iter()
        .map(|n| serde_json::json!({"name": n.name, "links": sup.wanted(&n.name).links}))
        .collect();
    Json(serde_json::json!({ "nodes": nodes }))
}

async fn isolate_region(
    State(sup): State<Arc<Supervisor>>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    if sup.node(&name).is_none() {
        return dev_error(StatusCode::NOT_FOUND, format!("no dev node named {name}"));
    }
    {
        let mut wanted = lock(&sup.faults);
        for other in sup.nodes.iter().filter(|n| n.name != name) {
            for (from, to) in [(&name, &other.name), (&other.name, &name)] {
                wanted.entry(from.clone()).or_default().insert(
                    to.clone(),
                    LinkFault {
                        peer: to.clone(),
                        mode: FaultMode::Partition,
                        delay_ms: None,
                    },
                );
            }
        }
    }
    eprintln!("[supervisor] isolating {name} from every other node");
    Json(serde_json::json!({ "nodes": sup.push_all().await })).into_response()
}

/// Body of `POST /dev/v1/links`: one direction.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkRequest {
    from: String,
    to: String,
    /// `partition`, `drop`, `delay`, or `none` to clear the link.
    mode: String,
    #[serde(default)]
    delay_ms: Option<u64>,
}

async fn set_link(State(sup): State<Arc<Supervisor>>, body: axum::body::Bytes) -> Response {
    let req: LinkRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return dev_error(
                StatusCode::BAD_REQUEST,
                format!("Malformed request body: {e}"),
            )
        }
    };
    for n in [&req.from, &req.to] {
        if sup.node(n).is_none() {
            return dev_error(StatusCode::BAD_REQUEST, format!("no dev node named {n}"));
        }
    }
    if req.from == req.to {
        return dev_error(StatusCode::BAD_REQUEST, "`from` and `to` must differ");
    }
    let mode = match req.mode.as_str() {
        "none" => None,
        "partition" => Some(FaultMode::Partition),
        "drop" => Some(FaultMode::Drop),
        "delay" => Some(FaultMode::Delay),
        other => {
            return dev_error(
                StatusCode::BAD_REQUEST,
                format!("unknown mode {other}: partition, drop, delay or none"),
            )
        }
    };
    let link = mode.map(|mode| LinkFault {
        peer: req.to.clone(),
        mode,
        delay_ms: (mode == FaultMode::Delay).then_some(req.delay_ms.unwrap_or(0)),
    });
    if let Some(l) = &link {
        // Same rules as the nodes': refuse here rather than half-apply.
        if let Err(e) = crate::faults::FaultRegistry::new().set(vec![l.clone()]) {
            return dev_error(StatusCode::BAD_REQUEST, e.to_string());
        }
    }
    {
        let mut wanted = lock(&sup.faults);
        let links = wanted.entry(req.from.clone()).or_default();
        match link {
            Some(l) => {
                links.insert(req.to.clone(), l);
            }
            None => {
                links.remove(&req.to);
            }
        }
    }
    eprintln!("[supervisor] link {} -> {}: {}", req.from, req.to, req.mode);
    Json(serde_json::json!({ "nodes": sup.push_all().await })).into_response()
}

async fn heal(State(sup): State<Arc<Supervisor>>) -> Response {
    lock(&sup.faults).clear();
    eprintln!("[supervisor] healing every link");
    Json(serde_json::json!({ "nodes": sup.push_all().await })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_endpoints_of_the_dev_nodes_come_from_their_files() {
        let urls: Vec<String> = DEV_NODES
            .iter()
            .map(|(_, toml)| node_listen(toml).unwrap())
            .collect();
        assert_eq!(
            urls,
            ["127.0.0.1:8181", "127.0.0.1:8281", "127.0.0.1:8390"],
            "catalog ports, and the voter port of the witness"
        );
    }
}
