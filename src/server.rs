//! Starting one region's node: embedded S3 endpoint (embedded default), metadata store,
//! first-start bootstrap, and the HTTP server, all stopped by one cancellation token.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::catalog::CatalogService;
use crate::config::Config;
use crate::config::VoterConfig;
use crate::control::{ControlClient, ControlPlane, WriteLease, WriteLeaseConfig};
use crate::routing::lease::LeaseAuthority;
use crate::routing::{Standalone, WriteAuthority};
use crate::storage::{embedded, ObjectStore, S3Settings};
use crate::store::{MetadataStore, SqlStore, WriteContext};

/// A running region node.
pub struct RunningRegion {
    /// This node's control-plane voter, when it runs one.
    pub voter: Option<ControlPlane>,
    pub catalog_addr: SocketAddr,
    /// Address of the embedded S3 endpoint, when this node runs one.
    pub s3_addr: Option<SocketAddr>,
    /// The S3 endpoint vended to clients.
    pub s3_endpoint: String,
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

/// Tenant, warehouse (with its bucket on an embedded endpoint) and catalog of a fresh region.
/// Returns the tenant id.
async fn bootstrap(
    store: &dyn MetadataStore,
    objects: &ObjectStore,
    config: &Config,
) -> anyhow::Result<String> {
    let b = &config.bootstrap;
    let ctx = WriteContext {
        epoch: store.current_epoch().await?,
        actor: "bootstrap".into(),
    };
    let tenant_id = match store.get_tenant(&b.tenant).await? {
        Some(t) => t.id,
        None => store.create_tenant(&ctx, &b.tenant).await?.id,
    };
    if b.catalog.is_empty() {
        return Ok(tenant_id);
    }
    if config.storage.embedded.is_some() {
        objects
            .ensure_bucket(&b.bucket)
            .await
            .with_context(|| format!("cannot create bucket {}", b.bucket))?;
    }
    let warehouse = match store.get_warehouse(&tenant_id, &b.catalog).await? {
        Some(w) => w,
        None => {
            store
                .create_warehouse(&ctx, &tenant_id, &b.catalog, &b.bucket, "")
                .await?
        }
    };
    if store.get_catalog(&tenant_id, &b.catalog).await?.is_none() {
        store
            .create_catalog(&ctx, &tenant_id, &warehouse.id, &b.catalog, &HashMap::new())
            .await?;
        tracing::info!(catalog = %b.catalog, bucket = %b.bucket, "created bootstrap catalog");
    }
    Ok(tenant_id)
}

/// Starts a region node from its configuration.
pub async fn start(config: &Config, shutdown: CancellationToken) -> anyhow::Result<RunningRegion> {
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
        let (addr, task) =
            embedded::start(&e.listen, &e.root, key, secret, shutdown.clone()).await?;
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
    let authority: Arc<dyn WriteAuthority> = match &config.control {
        None => Arc::new(Standalone::new(store.current_epoch().await?)),
        Some(section) => {
            if section.voter_id.is_some() {
                voter = Some(ControlPlane::start(section, shutdown.clone()).await?);
            }
            let client = ControlClient::from_section(section)?;
            control_client = Some(client.clone());
            let holder = format!("{}/{}", config.region.name, std::process::id());
            let lease = WriteLease::spawn(
                client,
                WriteLeaseConfig::new(config.region.name.clone(), holder, section.lease_ms),
                &shutdown,
            );
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
        peers.insert(peer.name.clone(), ObjectStore::connect(&settings).await);
        let vended = serde_json::to_vec(&peer.vended_storage_properties())?;
        region_storage_json.insert(peer.name.clone(), bytes::Bytes::from(vended));
    }
    let catalog = CatalogService::new(
        store,
        objects,
        authority,
        tenant_id,
        config.bootstrap.catalog.clone(),
        config.catalog.metadata_cache_entries,
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
    let state = Arc::new(state);
    let app = api::router(state);

    let listener = TcpListener::bind(&config.catalog.listen)
        .await
        .with_context(|| format!("catalog cannot listen on {}", config.catalog.listen))?;
    let catalog_addr = listener.local_addr()?;
    let token = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "catalog server failed");
        }
    }));
    tracing::info!(region = %config.region.name, %catalog_addr, "catalog listening");
    Ok(RunningRegion {
        voter,
        catalog_addr,
        s3_addr,
        s3_endpoint: endpoint.unwrap_or_default(),
        shutdown,
        tasks,
    })
}

/// Starts a voter without a catalog (the witness). It stops when `shutdown` fires.
pub async fn start_voter(
    config: &VoterConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<ControlPlane> {
    let voter = ControlPlane::start(&config.control, shutdown).await?;
    tracing::info!(region = %config.region.name, "control-plane voter running");
    Ok(voter)
}
