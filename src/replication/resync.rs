//! `resync`: rebuilds one catalog of this (secondary) region from the primary's current
//! state, e.g. a new region or a damaged one.
//!
//! 1. Read the primary's rows of the catalog and its change-log head `H` in one consistent
//!    snapshot (`GET /api/v1/replication/snapshot` at the primary).
//! 2. Make every object those rows reference present in this region's bucket: for each
//!    table every object its current metadata references ([`objects_of_table`]) and the
//!    metadata file, for each view its metadata file (bounded parallelism, size/ETag
//!    compared, only what differs is copied).
//! 3. One transaction ([`AntiEntropyStore::replace_catalogs`]): the catalog's namespaces,
//!    tables and views are replaced by the primary's, and the catalog gets a resync floor
//!    `H`. The watermark does not move: records after it still arrive in order, those of the
//!    catalog up to `H` are logged without being applied (already reflected), so nothing is
//!    lost or applied twice. If the watermark is already past `H` (the replicator applied
//!    meanwhile on another node) the transaction refuses and the resync starts over.
//!
//! A crash before step 3 commits leaves the region as it was (plus copied objects); the
//! resync is simply run again.
//!
//! [`AntiEntropyStore::replace_catalogs`]: crate::store::AntiEntropyStore::replace_catalogs

use futures::stream::{self, StreamExt, TryStreamExt};
use iceberg::spec::TableMetadata;
use serde::{Deserialize, Serialize};

use super::copier::{objects_of_table, CopyError, CopyReport};
use super::replicator::{ChangesPage, PeerRegion, Replication};
use crate::error::CatalogError;
use crate::storage::{ObjectStore, StorageError};
use crate::store::{
    CatalogReplacement, CatalogState, EntityKind, StateSnapshot, StoreError, TableRecord,
};

/// Attempts at the replacement transaction when the watermark keeps moving past the
/// primary's snapshot.
const ATTEMPTS: usize = 3;

/// What `POST /api/v1/replication/resync` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResyncReport {
    pub region: String,
    pub primary: String,
    pub catalog: String,
    pub catalog_id: String,
    /// The primary's change-log head the rebuilt rows reflect.
    pub snapshot_head: i64,
    /// This region's watermark afterwards (records up to `snapshot_head` of the catalog are
    /// logged without being applied when they arrive).
    pub watermark: i64,
    pub namespaces: usize,
    pub tables: usize,
    pub views: usize,
    /// Objects checked (referenced by the rows), copied, and bytes copied.
    pub objects: usize,
    pub objects_copied: usize,
    pub bytes_copied: u64,
}

/// The primary this region follows, and how to reach it; an error when this region is the
/// primary (or standalone) or the primary is not among `[[regions]]`.
pub(crate) fn primary_of(rep: &Replication) -> Result<(String, PeerRegion), CatalogError> {
    match rep.primary_peer() {
        None => Err(CatalogError::Unsupported(format!(
            "region {} follows no primary (standalone, or the primary is not known yet)",
            rep.region()
        ))),
        Some((primary, _)) if primary == rep.region() => Err(CatalogError::bad_request(format!(
            "region {} is the primary: there is nothing to compare it with or rebuild it from",
            rep.region()
        ))),
        Some((primary, None)) => Err(CatalogError::Unavailable(format!(
            "primary region {primary} is not among [[regions]]"
        ))),
        Some((primary, Some(peer))) => Ok((primary, peer)),
    }
}

/// `GET <peer>/api/v1/replication/snapshot?<query>`.
pub(crate) async fn fetch_snapshot(
    http: &reqwest::Client,
    peer: &PeerRegion,
    query: &[(&str, String)],
) -> Result<StateSnapshot, CatalogError> {
    let url = format!(
        "{}/api/v1/replication/snapshot",
        peer.catalog_url.trim_end_matches('/')
    );
    get_json(http, &url, query).await
}

/// `GET <peer>/api/v1/replication/changes?after=..&limit=..` (no waiting).
pub(crate) async fn fetch_changes(
    http: &reqwest::Client,
    peer: &PeerRegion,
    after: i64,
    limit: u32,
) -> Result<ChangesPage, CatalogError> {
    let url = format!(
        "{}/api/v1/replication/changes",
        peer.catalog_url.trim_end_matches('/')
    );
    get_json(
        http,
        &url,
        &[("after", after.to_string()), ("limit", limit.to_string())],
    )
    .await
}

async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    query: &[(&str, String)],
) -> Result<T, CatalogError> {
    crate::faults::gate_url(url)
        .await
        .map_err(|e| CatalogError::Unavailable(format!("cannot reach {url}: {e}")))?;
    let resp = http
        .get(url)
        .query(query)
        .timeout(std::time::Duration::from_secs(60))
        .send()
        .await
        .map_err(|e| CatalogError::Unavailable(format!("cannot reach {url}: {e}")))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        return Err(CatalogError::Unavailable(format!(
            "{url} answered {status}: {body}"
        )));
    }
    resp.json()
        .await
        .map_err(|e| CatalogError::Internal(format!("unexpected answer from {url}: {e}")))
}

pub(crate) fn copy_error(e: CopyError) -> CatalogError {
    if e.is_transient() {
        CatalogError::Storage(e.to_string())
    } else {
        CatalogError::Internal(e.to_string())
    }
}

pub(crate) fn store_error(e: StoreError) -> CatalogError {
    CatalogError::from(e)
}

/// Every object a table's current metadata references plus the metadata file, listed from
/// `source` (a view: its metadata file).
pub(crate) async fn objects_of_entity(
    source: &ObjectStore,
    table: &TableRecord,
) -> Result<Vec<String>, CopyError> {
    let mut objects = vec![table.metadata_location.clone()];
    if table.kind == EntityKind::View {
        return Ok(objects);
    }
    let metadata = read_table_metadata(source, &table.metadata_location).await?;
    objects.extend(objects_of_table(source, &metadata).await?);
    Ok(objects)
}

/// Reads and parses a table metadata file.
pub(crate) async fn read_table_metadata(
    source: &ObjectStore,
    location: &str,
) -> Result<TableMetadata, CopyError> {
    let bytes = source.get(location).await.map_err(|e| match e {
        StorageError::NotFound(_) => CopyError::MissingAtSource {
            location: location.to_string(),
        },
        e => CopyError::Storage {
            location: location.to_string(),
            source: e,
        },
    })?;
    serde_json::from_slice(&bytes).map_err(|e| CopyError::InvalidMetadata {
        location: location.to_string(),
        message: e.to_string(),
    })
}

/// Makes every object the catalogs' tables and views reference present here, copied from
/// the primary's bucket.
pub(crate) async fn copy_catalog_objects(
    rep: &Replication,
    peer: &PeerRegion,
    catalogs: &[CatalogState],
) -> Result<(usize, CopyReport), CatalogError> {
    let tables: Vec<TableRecord> = catalogs
        .iter()
        .flat_map(|c| c.tables.iter().cloned())
        .collect();
    let lists: Vec<Vec<String>> = stream::iter(tables)
        .map(|t| {
            let source = peer.objects.clone();
            async move { objects_of_entity(&source, &t).await }
        })
        .buffer_unordered(rep.parallelism())
        .try_collect()
        .await
        .map_err(copy_error)?;
    let objects: Vec<String> = lists.into_iter().flatten().collect();
    let report = rep
        .copier()
        .ensure_present(&peer.objects, rep.local_objects(), &objects)
        .await
        .map_err(copy_error)?;
    Ok((objects.len(), report))
}

/// Rebuilds catalog `catalog` (by name) of this region from the primary; see the module docs.
pub async fn resync(rep: &Replication, catalog: &str) -> Result<ResyncReport, CatalogError> {
    let (primary, peer) = primary_of(rep)?;
    // This node's replicator does not apply while the rows are replaced.
    let _gate = rep.lock_apply().await;
    let mut last_conflict = None;
    for attempt in 1..=ATTEMPTS {
        let snapshot =
            fetch_snapshot(rep.http(), &peer, &[("catalog", catalog.to_string())]).await?;
        let [state] = snapshot.catalogs.as_slice() else {
            return Err(match snapshot.catalogs.len() {
                0 => CatalogError::NotFound(crate::store::NotFound::Catalog(catalog.to_string())),
                n => CatalogError::bad_request(format!(
                    "{n} catalogs are named {catalog} at the primary (one per tenant)"
                )),
            });
        };
        let (objects, copied) = copy_catalog_objects(rep, &peer, &snapshot.catalogs).await?;
        let replacement = CatalogReplacement {
            snapshot_head: snapshot.head,
            catalogs: snapshot.catalogs.clone(),
            ..CatalogReplacement::default()
        };
        match rep.store().replace_catalogs(&replacement).await {
            Ok(watermark) => {
                rep.after_resync();
                let count = |k: EntityKind| state.tables.iter().filter(|t| t.kind == k).count();
                let report = ResyncReport {
                    region: rep.region().to_string(),
                    primary: primary.clone(),
                    catalog: state.catalog.name.clone(),
                    catalog_id: state.catalog.id.clone(),
                    snapshot_head: snapshot.head,
                    watermark: watermark.seq,
                    namespaces: state.namespaces.len(),
                    tables: count(EntityKind::Table),
                    views: count(EntityKind::View),
                    objects,
                    objects_copied: copied.copied,
                    bytes_copied: copied.bytes_copied,
                };
                tracing::info!(
                    region = %report.region, catalog, snapshot_head = report.snapshot_head,
                    tables = report.tables, views = report.views,
                    objects_copied = report.objects_copied, "catalog resynced from the primary"
                );
                return Ok(report);
            }
            Err(StoreError::CommitConflict(why)) => {
                tracing::info!(catalog, attempt, %why, "resync raced the replicator; starting over");
                last_conflict = Some(why);
            }
            Err(e) => return Err(store_error(e)),
        }
    }
    Err(CatalogError::Unavailable(format!(
        "resync of {catalog} did not settle in {ATTEMPTS} attempts: {}",
        last_conflict.unwrap_or_default()
    )))
}
