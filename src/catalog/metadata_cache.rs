//! Parsed table metadata by metadata location. Metadata files are immutable, so an entry is
//! valid forever; the cache only bounds memory. loadTable serves the cached JSON bytes
//! without re-serializing.

use std::sync::Arc;

use bytes::Bytes;
use iceberg::spec::TableMetadata;

use crate::error::{CatalogError, Result};

/// One metadata file, parsed and as JSON.
#[derive(Debug)]
pub struct CachedMetadata {
    pub metadata: Arc<TableMetadata>,
    pub json: Bytes,
}

impl CachedMetadata {
    /// `json` is the file's content when already at hand; otherwise it is serialized.
    pub fn new(metadata: TableMetadata, json: Option<Bytes>) -> Result<CachedMetadata> {
        let json = match json {
            Some(j) => j,
            None => Bytes::from(serde_json::to_vec(&metadata).map_err(|e| {
                CatalogError::Internal(format!("cannot serialize table metadata: {e}"))
            })?),
        };
        Ok(CachedMetadata {
            metadata: Arc::new(metadata),
            json,
        })
    }
}

/// Bounded cache of [`CachedMetadata`].
pub struct MetadataCache {
    inner: moka::sync::Cache<String, Arc<CachedMetadata>>,
}

impl MetadataCache {
    pub fn new(max_entries: u64) -> MetadataCache {
        MetadataCache {
            inner: moka::sync::Cache::new(max_entries.max(1)),
        }
    }

    pub fn get(&self, location: &str) -> Option<Arc<CachedMetadata>> {
        self.inner.get(location)
    }

    /// Caches metadata read from a file; `json` is the file's content.
    pub fn insert(
        &self,
        location: &str,
        metadata: TableMetadata,
        json: Bytes,
    ) -> Arc<CachedMetadata> {
        self.insert_cached(
            location,
            CachedMetadata {
                metadata: Arc::new(metadata),
                json,
            },
        )
    }

    pub fn insert_cached(&self, location: &str, cached: CachedMetadata) -> Arc<CachedMetadata> {
        let entry = Arc::new(cached);
        self.inner.insert(location.to_string(), entry.clone());
        entry
    }

    pub fn remove(&self, location: &str) {
        self.inner.invalidate(location);
    }
}
