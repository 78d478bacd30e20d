//! What suites that drive a `MetadataStore` directly start from and write with.

use std::sync::Arc;

use pangolin::store::{MetadataStore, SqlStore, WriteContext};

use super::PgDatabase;

pub type Store = Arc<dyn MetadataStore>;

/// A fresh store of one backend and what keeps its database alive: a file in a temporary
/// directory (SQLite) or a fresh database on `PANGOLIN_TEST_PG_URL` ([`PgDatabase`]), both
/// removed when the harness is dropped, also when a test panics.
pub struct StoreHarness {
    pub store: Store,
    /// The URL the store was opened with.
    pub url: String,
    _guard: Guard,
}

#[allow(dead_code)] // held for their Drop
enum Guard {
    Sqlite(tempfile::TempDir),
    Postgres(PgDatabase),
}

impl StoreHarness {
    pub async fn sqlite() -> StoreHarness {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("pangolin.db").display());
        let store = SqlStore::connect(&url).await.expect("connect sqlite store");
        StoreHarness {
            store: Arc::new(store),
            url,
            _guard: Guard::Sqlite(dir),
        }
    }

    pub async fn postgres() -> StoreHarness {
        let database = PgDatabase::create().await;
        let store = SqlStore::connect(&database.url)
            .await
            .expect("connect postgres store");
        StoreHarness {
            store: Arc::new(store),
            url: database.url.clone(),
            _guard: Guard::Postgres(database),
        }
    }
}

/// A write at epoch 1 by actor `test`.
pub fn ctx() -> WriteContext {
    WriteContext {
        epoch: 1,
        actor: "test".into(),
    }
}

/// A namespace's parts as the store takes them.
pub fn ns(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| p.to_string()).collect()
}
