//! Starting one region's node: embedded S3 endpoint (embedded default), metadata store,
//! first-start bootstrap, and the HTTP server, all stopped by one cancellation token.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::catalog::CatalogService;
use crate::config::Config;
use crate::config::{ControlSection, VoterConfig};
use crate::control::{
    ControlClient, ControlPlane, ControlPlaneOptions, WriteLease, WriteLeaseConfig,
};
use crate::replication::{HttpCatchUp, PeerRegion, PrimarySource, Replication, StaticPrimary};
use crate::routing::lease::LeaseAuthority;
use crate::routing::{Standalone, WriteAuthority};
use crate::storage::{embedded, ObjectStore, S3Settings};
use crate::store::{MetadataStore, SqlStore};

/// A running region node.
pub struct RunningRegion {
    /// This node's control-plane voter, when it runs one.
    pub voter: Option<ControlPlane>,
    pub catalog_addr: SocketAddr,
    /// Address of the embedded S3 endpoint, when this node runs one.
    pub s3_addr: Option<SocketAddr>,
    /// The S3 endpoint vended to clients.
    pub s3_endpoint: String,
    /// The region's replication (status, verify, resync; test hooks).
    pub replication: Arc<Replication>,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningRegion {
    /// Stops accepting, lets in-flight requests finish, and waits for every task.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.wait().await;
    }

    /// Waits until the node has stopped (after its shutdown token fired).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
        if let Some(v) = self.voter {
            v.shutdown().await;
        }
    }
}

/// Creates the SQLite file's folder so a fresh data dir just works.
fn prepare_sqlite_dir(url: &str) -> anyhow::Result<()> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        if let Some(parent) = std::path::Path::new(path).parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
    }
    Ok(())
}

/// Tenant, warehouse (with its bucket on an embedded endpoint) and catalog of a fresh region,
/// with the same deterministic ids in every region (region-local rows, not in the change
/// log: every region creates them itself, and replicated changes name them by id).
/// Returns the tenant id.
async fn bootstrap(
    store: &dyn MetadataStore,
    objects: &ObjectStore,
    config: &Config,
) -> anyhow::Result<String> {
    let b = &config.bootstrap;
    if !b.catalog.is_empty() && config.storage.embedded.is_some() {
        objects
            .ensure_bucket(&b.bucket)
            .await
            .with_context(|| format!("cannot create bucket {}", b.bucket))?;
    }
    let wanted = crate::replication::bootstrap_entities(b);
    let stored = store.bootstrap(&wanted).await?;
    if let (Some(w), Some(s)) = (&wanted.catalog, &stored.catalog) {
        if w.id != s.id {
            tracing::warn!(
                catalog = %s.name, id = %s.id, expected = %w.id,
                "the bootstrap catalog was created by an older version with a random id; \
                 replication between regions needs the same ids everywhere (start from a fresh data dir)"
            );
        }
    }
    Ok(stored.tenant.id)
}

/// Starts a region node from its configuration.
pub async fn start(config: &Config, shutdown: CancellationToken) -> anyhow::Result<RunningRegion> {
    crate::faults::configure(&config.faults, &config.region.name);
    for r in &config.regions {
        crate::faults::registry().register_endpoint(&r.catalog_url, &r.name);
    }
    let mut tasks = Vec::new();
    let mut s3_addr = None;
    let mut endpoint = config.storage.endpoint.clone();
    if let Some(e) = &config.storage.embedded {
        let (key, secret) = config
            .storage
            .access_key_id
            .as_deref()
            .zip(config.storage.secret_access_key.as_deref())
            .context("the embedded S3 endpoint needs storage.access_key_id and secret")?;
        let limits = crate::http_server::HttpLimits::from_catalog(&config.catalog).for_uploads();
        let (addr, task) =
            embedded::start_with_limits(&e.listen, &e.root, key, secret, limits, shutdown.clone())
                .await?;
        s3_addr = Some(addr);
        tasks.push(task);
        endpoint.get_or_insert_with(|| format!("http://{addr}"));
    }
    let settings = S3Settings {
        endpoint: endpoint.clone(),
        region: config.storage.region.clone(),
        credentials: config
            .storage
            .access_key_id
            .clone()
            .zip(config.storage.secret_access_key.clone()),
        path_style: config.storage.path_style,
    };
    let objects = ObjectStore::connect(&settings).await;

    prepare_sqlite_dir(&config.database.url)?;
    let store: Arc<dyn MetadataStore> = Arc::new(
        SqlStore::connect(&config.database.url)
            .await
            .with_context(|| format!("cannot open metadata store {}", config.database.url))?,
    );
    let tenant_id = bootstrap(store.as_ref(), &objects, config).await?;

    let mut voter = None;
    let mut control_client = None;
    let mut primary_source = PrimarySource::Standalone;
    let static_primary = config
        .replication
        .primary
        .as_ref()
        .filter(|p| **p != config.region.name)
        .and_then(|p| config.regions.iter().find(|r| r.name == *p));
    let authority: Arc<dyn WriteAuthority> = match &config.control {
        None => match static_primary {
            Some(p) => {
                primary_source = PrimarySource::Static(p.name.clone());
                Arc::new(StaticPrimary::new(
                    p.name.clone(),
                    p.catalog_url.clone(),
                    store.current_epoch().await?,
                ))
            }
            None => Arc::new(Standalone::new(store.current_epoch().await?)),
        },
        Some(section) => {
            if section.voter_id.is_some() {
                voter = Some(start_control_voter(section, config, shutdown.clone()).await?);
            }
            let client = ControlClient::from_section(section)?.with_faults(
                voter_links(section, &config.region.name),
                section.voter_id.unwrap_or(0),
            );
            control_client = Some(client.clone());
            let holder = format!("{}/{}", config.region.name, std::process::id());
            let lease = WriteLease::spawn(
                client,
                WriteLeaseConfig::new(config.region.name.clone(), holder, section.lease_ms)
                    .ignoring_expiry(crate::faults::registry().fencing_disabled()),
                &shutdown,
            );
            primary_source = PrimarySource::Control(lease.known());
            let urls = config
                .regions
                .iter()
                .map(|r| (r.name.clone(), r.catalog_url.clone()))
                .collect();
            Arc::new(
                LeaseAuthority::start(
                    config.region.name.clone(),
                    lease,
                    urls,
                    store.clone(),
                    shutdown.clone(),
                )
                .await?,
            )
        }
    };
    let mut peers = HashMap::new();
    let mut region_storage_json = HashMap::new();
    for peer in config
        .regions
        .iter()
        .filter(|r| r.name != config.region.name)
    {
        let settings = S3Settings {
            endpoint: peer.s3_endpoint.clone(),
            region: peer.s3_region.clone(),
            credentials: peer
                .access_key_id
                .clone()
                .zip(peer.secret_access_key.clone()),
            path_style: peer.path_style,
        };
        let objects = ObjectStore::connect(&settings).await;
        peers.insert(peer.name.clone(), objects.through_fault_link(&peer.name));
        let vended = serde_json::to_vec(&peer.vended_storage_properties())?;
        region_storage_json.insert(peer.name.clone(), bytes::Bytes::from(vended));
    }
    let replication_peers = config
        .regions
        .iter()
        .filter_map(|r| {
            peers.get(&r.name).map(|objects| {
                (
                    r.name.clone(),
                    PeerRegion {
                        catalog_url: r.catalog_url.clone(),
                        objects: objects.clone(),
                    },
                )
            })
        })
        .collect();
    let replication = Arc::new(Replication::new(
        config.region.name.clone(),
        store.clone(),
        objects.clone(),
        replication_peers,
        primary_source,
        config.replication.clone(),
        shutdown.clone(),
    ));
    if config.replication.enabled {
        tasks.push(replication.spawn());
    }
    let catalog = CatalogService::new(
        store,
        objects,
        authority,
        tenant_id,
        config.bootstrap.catalog.clone(),
        crate::catalog::CatalogLimits::from(&config.catalog),
    )
    .with_peers(peers);
    let vended = config.vended_storage_properties(endpoint.as_deref().unwrap_or(""));
    let mut state = AppState::new(
        catalog,
        config.region.name.clone(),
        vended,
        config.catalog.max_body_bytes,
    )
    .with_catalog_settings(&config.catalog);
    state.control = control_client;
    state.region_storage_json = region_storage_json;
    state.replication = Some(replication.clone());
    state.sync = Arc::new(crate::replication::SyncReplication::new(
        config.region.name.clone(),
        config.replication.clone(),
        config.regions.iter().map(|r| r.name.clone()),
    ));
    let state = Arc::new(state);
    let filler = state.clone();
    tasks.push(tokio::spawn(async move {
        match filler.catalog.fill_missing_locations().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(entities = n, "recorded the locations of older tables and views"),
            Err(e) => tracing::warn!(error = %e, "could not record the locations of older tables and views"),
        }
    }));
    let app = api::router(state);

    let listener = TcpListener::bind(&config.catalog.listen)
        .await
        .with_context(|| format!("catalog cannot listen on {}", config.catalog.listen))?;
    let catalog_addr = listener.local_addr()?;
    let limits = crate::http_server::HttpLimits::from_catalog(&config.catalog);
    crate::http_server::warn_if_above_open_file_limit(limits.max_connections);
    tasks.push(tokio::spawn(crate::http_server::serve(
        "catalog",
        listener,
        app,
        limits,
        crate::http_server::iceberg_timeout_answer,
        shutdown.clone(),
    )));
    tracing::info!(region = %config.region.name, %catalog_addr, "catalog listening");
    Ok(RunningRegion {
        voter,
        catalog_addr,
        s3_addr,
        s3_endpoint: endpoint.unwrap_or_default(),
        replication,
        shutdown,
        tasks,
    })
}

/// Starts this node's control-plane voter; a planned switchover it leads waits for the
/// target region to catch up ([`HttpCatchUp`] over `[[regions]]`).
async fn start_control_voter(
    section: &ControlSection,
    config: &Config,
    shutdown: CancellationToken,
) -> anyhow::Result<ControlPlane> {
    let timeout = Duration::from_millis(config.replication.catch_up_timeout_ms);
    let options = ControlPlaneOptions {
        faults: voter_links(section, &config.region.name),
        catch_up: Arc::new(HttpCatchUp::new(&config.regions, timeout)),
        catch_up_timeout: timeout,
        http_limits: crate::http_server::HttpLimits::from_catalog(&config.catalog),
        ..Default::default()
    };
    ControlPlane::start_with(section, options, shutdown).await
}

/// Starts a voter without a catalog (the witness). It stops when `shutdown` fires. A
/// switchover it leads checks catch-up through the `[[regions]]` of its file (none listed:
/// it does not wait).
pub async fn start_voter(
    config: &VoterConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<ControlPlane> {
    let timeout = Duration::from_millis(config.replication.catch_up_timeout_ms);
    let catch_up: Arc<dyn crate::control::CatchUp> = if config.regions.is_empty() {
        tracing::warn!(
            "no [[regions]] in the voter's file: planned switchovers it leads will not wait for replication"
        );
        Arc::new(crate::control::NoCatchUp)
    } else {
        Arc::new(HttpCatchUp::new(&config.regions, timeout))
    };
    crate::faults::configure(&config.faults, &config.region.name);
    for r in &config.regions {
        crate::faults::registry().register_endpoint(&r.catalog_url, &r.name);
    }
    let options = ControlPlaneOptions {
        faults: voter_links(&config.control, &config.region.name),
        catch_up,
        catch_up_timeout: timeout,
        ..Default::default()
    };
    let voter = ControlPlane::start_with(&config.control, options, shutdown).await?;
    tracing::info!(region = %config.region.name, "control-plane voter running");
    Ok(voter)
}

/// The fault hook of this process's links to the voters: the region link faults
/// ([`crate::faults`]) apply to voters of other regions.
fn voter_links(section: &ControlSection, region: &str) -> Arc<crate::control::LinkFaults> {
    crate::control::LinkFaults::for_regions(
        region,
        section.voters.iter().map(|v| (v.id, v.region.clone())),
    )
}
