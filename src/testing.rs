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

    /// `{catalog_url}/v1/{warehouse}` — the REST prefix root of the test catalog.
    pub fn prefix_url(&self) -> String {
        format!("{}/v1/{}", self.catalog_url, self.warehouse)
    }

    pub async fn shutdown(self) {
        self.region.stop().await;
    }
}
