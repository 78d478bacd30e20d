//! In-process regions for integration tests: a fresh data dir, ports picked by the OS.

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::server::{self, RunningRegion};

/// A region node running inside the test process.
pub struct TestRegion {
    /// REST catalog root, e.g. `http://127.0.0.1:41234`.
    pub catalog_url: String,
    /// Embedded S3-compatible endpoint (path-style).
    pub s3_endpoint: String,
    pub s3_region: String,
    pub access_key: String,
    pub secret_key: String,
    /// Catalog name (= REST prefix = `warehouse` client property) and its bucket.
    pub warehouse: String,
    pub config: Config,
    region: RunningRegion,
    _dir: tempfile::TempDir,
}

impl TestRegion {
    /// Fresh region on SQLite in a temp dir.
    pub async fn start() -> anyhow::Result<TestRegion> {
        Self::start_with(Vec::new()).await
    }

    /// Fresh region on the given database URL (e.g. a fresh PostgreSQL database).
    pub async fn start_with_database(url: &str) -> anyhow::Result<TestRegion> {
        Self::start_with(vec![("PANGOLIN_DATABASE__URL".into(), url.into())]).await
    }

    /// Fresh region with extra `PANGOLIN_*` overrides.
    pub async fn start_with(overrides: Vec<(String, String)>) -> anyhow::Result<TestRegion> {
        let dir = tempfile::tempdir()?;
        let mut env = vec![
            (
                "PANGOLIN_DATA_DIR".to_string(),
                dir.path().display().to_string(),
            ),
            (
                "PANGOLIN_CATALOG__LISTEN".to_string(),
                "127.0.0.1:0".to_string(),
            ),
            (
                "PANGOLIN_STORAGE__EMBEDDED__LISTEN".to_string(),
                "127.0.0.1:0".to_string(),
            ),
        ];
        env.extend(overrides);
        let config = crate::dev::standalone_config(env)?;
        Self::launch(config, dir).await
    }

    /// Starts a node of `config` on the data dir `dir`.
    async fn launch(config: Config, dir: tempfile::TempDir) -> anyhow::Result<TestRegion> {
        let region = server::start(&config, CancellationToken::new()).await?;
        Ok(TestRegion {
            catalog_url: format!("http://{}", region.catalog_addr),
            s3_endpoint: region.s3_endpoint.clone(),
            s3_region: config.storage.region.clone(),
            access_key: config.storage.access_key_id.clone().unwrap_or_default(),
            secret_key: config.storage.secret_access_key.clone().unwrap_or_default(),
            warehouse: config.bootstrap.catalog.clone(),
            config,
            region,
            _dir: dir,
        })
    }

    /// A fresh region `eu-west-1` (SQLite, its own embedded S3 endpoint) that follows
    /// `primary` without a control plane (`[replication] primary`): it replicates the
    /// primary's change log and objects, and forwards writes to it.
    pub async fn start_secondary_of(primary: &TestRegion) -> anyhow::Result<TestRegion> {
        Self::start_secondary_of_with(primary, Vec::new()).await
    }

    /// [`TestRegion::start_secondary_of`] with extra `PANGOLIN_*` overrides (e.g.
    /// `PANGOLIN_REPLICATION__MAX_RECORD_ATTEMPTS`, `PANGOLIN_DATABASE__URL`).
    pub async fn start_secondary_of_with(
        primary: &TestRegion,
        overrides: Vec<(String, String)>,
    ) -> anyhow::Result<TestRegion> {
        let dir = tempfile::tempdir()?;
        let mut env = vec![
            (
                "PANGOLIN_DATA_DIR".to_string(),
                dir.path().display().to_string(),
            ),
            (
                "PANGOLIN_CATALOG__LISTEN".to_string(),
                "127.0.0.1:0".to_string(),
            ),
            (
                "PANGOLIN_STORAGE__EMBEDDED__LISTEN".to_string(),
                "127.0.0.1:0".to_string(),
            ),
            ("PANGOLIN_REGION__NAME".to_string(), "eu-west-1".to_string()),
            (
                "PANGOLIN_STORAGE__REGION".to_string(),
                "eu-west-1".to_string(),
            ),
            (
                "PANGOLIN_DATABASE__URL".to_string(),
                format!("sqlite://{}/eu-west-1/catalog.db", dir.path().display()),
            ),
        ];
        env.extend(overrides);
        let mut config = crate::dev::standalone_config(env)?;
        config.regions = vec![crate::config::RegionPeer {
            name: primary.config.region.name.clone(),
            catalog_url: primary.catalog_url.clone(),
            s3_endpoint: Some(primary.s3_endpoint.clone()),
            s3_region: primary.s3_region.clone(),
            access_key_id: Some(primary.access_key.clone()),
            secret_access_key: Some(primary.secret_key.clone()),
            path_style: true,
        }];
        config.replication.primary = Some(primary.config.region.name.clone());
        Self::launch(config, dir).await
    }

    /// Stops the node and starts it again on the same data dir and addresses (a crash of
    /// the node as far as its durable state goes: whatever it had not committed is lost).
    pub async fn restart(self) -> anyhow::Result<TestRegion> {
        let TestRegion {
            mut config,
            region,
            _dir: dir,
            ..
        } = self;
        config.catalog.listen = region.catalog_addr.to_string();
        if let (Some(e), Some(addr)) = (&mut config.storage.embedded, region.s3_addr) {
            e.listen = addr.to_string();
        }
        region.stop().await;
        Self::launch(config, dir).await
    }

    /// The region's data dir (SQLite file, embedded S3 objects).
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// The region's node (its addresses).
    pub fn node(&self) -> &RunningRegion {
        &self.region
    }

    /// `{catalog_url}/v1/{warehouse}` — the REST prefix root of the test catalog.
    pub fn prefix_url(&self) -> String {
        format!("{}/v1/{}", self.catalog_url, self.warehouse)
    }

    pub async fn shutdown(self) {
        self.region.stop().await;
    }
}
