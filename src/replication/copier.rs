//! Cross-region object copier.
//!
//! Table locations are identical in every region (same bucket name and keys; each region has
//! its own S3 endpoint), so a location such as `s3://demo/ab12/ns/t-…/data/x.parquet` names
//! "the same object" in every region's [`ObjectStore`].
//!
//! - [`ObjectCopier::ensure_present`] makes a set of locations exist in a destination store,
//!   copying what is missing (or differs in size/ETag) from a source store: server-side
//!   (CopyObject) when both stores are the same S3 service, otherwise streamed through this
//!   process (one PutObject, or a multipart upload for large objects, never buffering a whole
//!   large object). Bounded parallelism, retries with exponential backoff on transient
//!   errors, and the size is verified after every copy. An object missing in the source is an
//!   error naming it: a region must never publish a pointer to a missing file.
//! - [`objects_added_by_commit`] lists every object a commit adds: the manifest list of each
//!   new snapshot, the manifests that snapshot added, the data and delete files those
//!   manifests add, and statistics files. The manifest lists and manifests are read from the
//!   source region (where the client wrote them).
//! - [`copy_commit_objects`] combines both.
//! - [`objects_of_table`] lists every object a table's metadata references (a table new to a
//!   region) and [`objects_to_replicate`] what a region holding an older version of a table
//!   lacks for a newer one; the replicator uses them before applying a change.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use iceberg::spec::{FormatVersion, Manifest, ManifestList, ManifestStatus, TableMetadata};
use iceberg::TableUpdate;

use crate::storage::{ObjectInfo, ObjectStore, StorageError, TransferMethod};

/// How many manifests of one commit are read (and parsed) at once.
const MANIFEST_READ_PARALLELISM: usize = 8;

/// Errors of the object copier.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The object exists neither in the source nor in the destination region.
    #[error("object {location} is missing in the source region; refusing to reference it")]
    MissingAtSource { location: String },
    /// After a copy, the destination does not hold an object of the source's size.
    #[error(
        "copy of {location} did not verify: expected {expected} bytes, destination has {actual:?}"
    )]
    SizeMismatch {
        location: String,
        expected: u64,
        actual: Option<u64>,
    },
    /// An object storage request failed (after the retries, for transient errors).
    #[error("object storage failed for {location}: {source}")]
    Storage {
        location: String,
        #[source]
        source: StorageError,
    },
    /// A manifest list or manifest could not be parsed.
    #[error("cannot read Iceberg metadata file {location}: {message}")]
    InvalidMetadata { location: String, message: String },
}

impl CopyError {
    /// The object location the error is about.
    pub fn location(&self) -> &str {
        match self {
            CopyError::MissingAtSource { location }
            | CopyError::SizeMismatch { location, .. }
            | CopyError::Storage { location, .. }
            | CopyError::InvalidMetadata { location, .. } => location,
        }
    }

    /// Errors worth retrying: failed requests and unverified copies. A missing source object,
    /// an invalid location or an unparsable file will not get better.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CopyError::SizeMismatch { .. }
                | CopyError::Storage {
                    source: StorageError::Request { .. },
                    ..
                }
        )
    }

    fn storage(location: &str, e: StorageError) -> CopyError {
        match e {
            StorageError::NotFound(_) => CopyError::MissingAtSource {
                location: location.to_string(),
            },
            source => CopyError::Storage {
                location: location.to_string(),
                source,
            },
        }
    }
}

/// What [`ObjectCopier::ensure_present`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Objects copied to the destination.
    pub copied: usize,
    /// Objects the destination already had (same size, and same ETag where comparable).
    pub already_present: usize,
    /// Bytes copied (sum of the sizes of the copied objects).
    pub bytes_copied: u64,
    /// Of `copied`: how many were copied server-side (CopyObject).
    pub server_side: usize,
    /// Of `copied`: how many were streamed as multipart uploads.
    pub multipart: usize,
}

impl CopyReport {
    fn record(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::AlreadyPresent => self.already_present += 1,
            Outcome::Copied { bytes, method } => {
                self.copied += 1;
                self.bytes_copied += bytes;
                match method {
                    TransferMethod::ServerSide => self.server_side += 1,
                    TransferMethod::Multipart { .. } => self.multipart += 1,
                    TransferMethod::SinglePut => {}
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    AlreadyPresent,
    Copied { bytes: u64, method: TransferMethod },
}

/// Copies objects between two regions' stores; see the module docs.
#[derive(Debug, Clone)]
pub struct ObjectCopier {
    parallelism: usize,
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl Default for ObjectCopier {
    /// 16 objects at once, 5 attempts per object, backoff from 200 ms up to 10 s.
    fn default() -> Self {
        ObjectCopier::new(16, 5)
    }
}

impl ObjectCopier {
    /// A copier handling up to `parallelism` objects at once and trying each object up to
    /// `max_attempts` times (both at least 1).
    pub fn new(parallelism: usize, max_attempts: u32) -> ObjectCopier {
        ObjectCopier {
            parallelism: parallelism.max(1),
            max_attempts: max_attempts.max(1),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }

    /// Sets the backoff before the second attempt (doubled for each further attempt, with
    /// jitter) and its upper bound.
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> ObjectCopier {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    pub fn parallelism(&self) -> usize {
        self.parallelism
    }

    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Makes every location exist in `dest`, copying it from `source` where `dest` lacks it
    /// or holds a different object (size, or ETag when both are known and neither is a
    /// multipart ETag). Locations are the same in both stores. An object the destination
    /// has but the source lacks counts as present; one missing in both fails with
    /// [`CopyError::MissingAtSource`]. Stops starting new copies at
    /// the first failure and returns the first failure (in `locations` order); all failures
    /// are logged.
    pub async fn ensure_present(
        &self,
        source: &ObjectStore,
        dest: &ObjectStore,
        locations: &[String],
    ) -> Result<CopyReport, CopyError> {
        let pairs: Vec<(String, String)> =
            locations.iter().map(|l| (l.clone(), l.clone())).collect();
        self.ensure_present_mapped(source, dest, &pairs).await
    }

    /// Like [`ObjectCopier::ensure_present`] for `(source location, destination location)`
    /// pairs, for stores whose buckets are named differently (e.g. two buckets of one S3
    /// service). The error of a pair names its destination location when the copy failed,
    /// and its source location when the source object is missing.
    pub async fn ensure_present_mapped(
        &self,
        source: &ObjectStore,
        dest: &ObjectStore,
        pairs: &[(String, String)],
    ) -> Result<CopyReport, CopyError> {
        let mut seen = HashSet::new();
        let unique: Vec<(String, String)> =
            pairs.iter().filter(|p| seen.insert(*p)).cloned().collect();
        let failed = Arc::new(AtomicBool::new(false));
        // Owned captures only: futures borrowing from the caller defeat the compiler's Send
        // inference for the (axum) futures that await this one.
        let mut results: Vec<(usize, Option<Result<Outcome, CopyError>>)> =
            stream::iter(unique.into_iter().enumerate())
                .map(|(i, (src, dst))| {
                    let (copier, source, dest, failed) =
                        (self.clone(), source.clone(), dest.clone(), failed.clone());
                    async move {
                        if failed.load(Ordering::Relaxed) {
                            return (i, None);
                        }
                        let result = copier.ensure_one(&source, &dest, &src, &dst).await;
                        if result.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        (i, Some(result))
                    }
                })
                .buffer_unordered(self.parallelism)
                .collect()
                .await;
        results.sort_by_key(|(i, _)| *i);

        let mut report = CopyReport::default();
        let mut first_error = None;
        let mut failures = 0usize;
        let mut skipped = 0usize;
        for (_, result) in results {
            match result {
                Some(Ok(outcome)) => report.record(outcome),
                Some(Err(e)) => {
                    failures += 1;
                    tracing::error!(location = e.location(), error = %e, "object copy failed");
                    first_error.get_or_insert(e);
                }
                None => skipped += 1,
            }
        }
        if let Some(e) = first_error {
            tracing::error!(
                failures,
                skipped,
                copied = report.copied,
                already_present = report.already_present,
                "objects not made present"
            );
            return Err(e);
        }
        tracing::info!(
            copied = report.copied,
            already_present = report.already_present,
            bytes_copied = report.bytes_copied,
            server_side = report.server_side,
            multipart = report.multipart,
            "objects present in the destination"
        );
        Ok(report)
    }

    /// One object, with retries.
    async fn ensure_one(
        &self,
        source: &ObjectStore,
        dest: &ObjectStore,
        src: &str,
        dst: &str,
    ) -> Result<Outcome, CopyError> {
        self.retrying(dst, || self.ensure_one_attempt(source, dest, src, dst))
            .await
    }

    async fn ensure_one_attempt(
        &self,
        source: &ObjectStore,
        dest: &ObjectStore,
        src: &str,
        dst: &str,
    ) -> Result<Outcome, CopyError> {
        let (dest_info, source_info) = tokio::join!(dest.head(dst), source.head(src));
        let dest_info = dest_info.map_err(|e| CopyError::storage(dst, e))?;
        let source_info = source_info.map_err(|e| CopyError::storage(src, e))?;
        let source_info = match (source_info, &dest_info) {
            (Some(s), _) => s,
            (None, Some(_)) => {
                // The goal (present in the destination) holds; nothing to compare against.
                tracing::warn!(
                    source = src,
                    dest = dst,
                    "object missing in the source but present in the destination; keeping it"
                );
                return Ok(Outcome::AlreadyPresent);
            }
            (None, None) => {
                return Err(CopyError::MissingAtSource {
                    location: src.to_string(),
                })
            }
        };
        if let Some(d) = &dest_info {
            if same_object(&source_info, d) {
                tracing::debug!(location = dst, size = d.size, "already present");
                return Ok(Outcome::AlreadyPresent);
            }
            tracing::info!(
                location = dst,
                source_size = source_info.size,
                dest_size = d.size,
                "destination holds a different object; replacing it"
            );
        }
        let size = source_info.size;
        let method = if source.same_service(dest) && src != dst {
            dest.server_side_copy(src, dst, size).await
        } else {
            dest.copy_from(source, src, dst, size).await
        };
        let method = method.map_err(|e| match e {
            StorageError::NotFound(_) => CopyError::MissingAtSource {
                location: src.to_string(),
            },
            e => CopyError::Storage {
                location: dst.to_string(),
                source: e,
            },
        })?;
        let copied = dest
            .head(dst)
            .await
            .map_err(|e| CopyError::storage(dst, e))?;
        match copied {
            Some(info) if info.size == size => {
                tracing::debug!(location = dst, size, ?method, "copied");
                Ok(Outcome::Copied {
                    bytes: size,
                    method,
                })
            }
            other => Err(CopyError::SizeMismatch {
                location: dst.to_string(),
                expected: size,
                actual: other.map(|i| i.size),
            }),
        }
    }

    /// Runs `op` until it succeeds, fails with a permanent error, or `max_attempts` is used up.
    async fn retrying<T, F, Fut>(&self, location: &str, mut op: F) -> Result<T, CopyError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CopyError>>,
    {
        let mut attempt = 1u32;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && attempt < self.max_attempts => {
                    let delay = self.backoff(attempt);
                    tracing::warn!(
                        %location,
                        attempt,
                        max_attempts = self.max_attempts,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        error = %e,
                        "transient object storage error; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => {
                    if attempt > 1 {
                        tracing::error!(%location, attempts = attempt, error = %e, "giving up");
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Exponential backoff after failed attempt `attempt` (1-based), with "equal jitter":
    /// between half and all of the exponential delay.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.max_backoff);
        let jitter = f64::from(uuid::Uuid::new_v4().as_u128() as u16) / f64::from(u16::MAX);
        exp.mul_f64(0.5 + 0.5 * jitter)
    }
}

/// Whether two HEADs describe the same object: same size, and same ETag when both are known
/// and neither is a multipart ETag (those depend on how the object was uploaded).
pub(crate) fn same_object(source: &ObjectInfo, dest: &ObjectInfo) -> bool {
    if source.size != dest.size {
        return false;
    }
    match (&source.etag, &dest.etag) {
        (Some(a), Some(b)) if !source.has_multipart_etag() && !dest.has_multipart_etag() => a == b,
        _ => true,
    }
}

/// Every object location a commit adds, deduplicated, in a stable order: for each new
/// snapshot (`AddSnapshot`) its manifest list, the manifests it added
/// (`added_snapshot_id` = the snapshot) and the data/delete files with status ADDED in them;
/// and the files of `SetStatistics` / `SetPartitionStatistics`. Manifest lists and manifests
/// are read from `source`. `base` is the table metadata before the commit: snapshots it
/// already has are skipped, and its format version (raised by `UpgradeFormatVersion` updates
/// of the commit) selects the manifest-list schema. Manifests of earlier snapshots are
/// assumed present already. The metadata JSON written by the commit is not included.
pub async fn objects_added_by_commit(
    source: &ObjectStore,
    base: &TableMetadata,
    updates: &[TableUpdate],
) -> Result<Vec<String>, CopyError> {
    let mut format_version = base.format_version();
    let mut out = Vec::new();
    for update in updates {
        match update {
            TableUpdate::UpgradeFormatVersion {
                format_version: upgraded,
            } if *upgraded > format_version => format_version = *upgraded,
            TableUpdate::AddSnapshot { snapshot } => {
                let snapshot_id = snapshot.snapshot_id();
                if base.snapshot_by_id(snapshot_id).is_some() {
                    tracing::debug!(snapshot_id, "snapshot already in the base metadata");
                    continue;
                }
                let list_location = snapshot.manifest_list().to_string();
                let list = read_manifest_list(source, &list_location, format_version).await?;
                out.push(list_location);
                let added: Vec<String> = list
                    .consume_entries()
                    .into_iter()
                    .filter(|m| m.added_snapshot_id == snapshot_id)
                    .map(|m| m.manifest_path)
                    .collect();
                let files: Vec<Vec<String>> = stream::iter(added.clone())
                    .map(|location| {
                        let source = source.clone();
                        async move { added_files_of_manifest(&source, &location).await }
                    })
                    .buffered(MANIFEST_READ_PARALLELISM)
                    .try_collect()
                    .await?;
                tracing::debug!(
                    snapshot_id,
                    manifests = added.len(),
                    files = files.iter().map(Vec::len).sum::<usize>(),
                    "objects added by snapshot"
                );
                out.extend(added);
                out.extend(files.into_iter().flatten());
            }
            TableUpdate::SetStatistics { statistics } => {
                out.push(statistics.statistics_path.clone());
            }
            TableUpdate::SetPartitionStatistics {
                partition_statistics,
            } => {
                out.push(partition_statistics.statistics_path.clone());
            }
            _ => {}
        }
    }
    let mut seen = HashSet::new();
    out.retain(|l| seen.insert(l.clone()));
    Ok(out)
}

/// [`objects_added_by_commit`], then [`ObjectCopier::ensure_present`] for those objects.
pub async fn copy_commit_objects(
    copier: &ObjectCopier,
    source: &ObjectStore,
    dest: &ObjectStore,
    base: &TableMetadata,
    updates: &[TableUpdate],
) -> Result<CopyReport, CopyError> {
    let objects = objects_added_by_commit(source, base, updates).await?;
    tracing::debug!(objects = objects.len(), "objects added by the commit");
    copier.ensure_present(source, dest, &objects).await
}

/// Every object a table's metadata references (besides the metadata JSON itself): the
/// manifest list of every snapshot, every manifest those lists name, the live (ADDED or
/// EXISTING) data and delete files of those manifests, and the statistics and partition
/// statistics files. Deduplicated, in a stable order; lists and manifests are read from
/// `source`. For a table new to a region (create, register, first replication).
pub async fn objects_of_table(
    source: &ObjectStore,
    metadata: &TableMetadata,
) -> Result<Vec<String>, CopyError> {
    let format_version = metadata.format_version();
    let mut out = Vec::new();
    let mut manifests = Vec::new();
    let mut seen_manifests = HashSet::new();
    for snapshot in metadata.snapshots() {
        let list_location = snapshot.manifest_list().to_string();
        let list = read_manifest_list(source, &list_location, format_version).await?;
        out.push(list_location);
        for m in list.consume_entries() {
            if seen_manifests.insert(m.manifest_path.clone()) {
                manifests.push(m.manifest_path);
            }
        }
    }
    let files: Vec<Vec<String>> = stream::iter(manifests.clone())
        .map(|location| {
            let source = source.clone();
            async move { live_files_of_manifest(&source, &location).await }
        })
        .buffered(MANIFEST_READ_PARALLELISM)
        .try_collect()
        .await?;
    out.extend(manifests);
    out.extend(files.into_iter().flatten());
    out.extend(
        metadata
            .statistics_iter()
            .map(|s| s.statistics_path.clone()),
    );
    out.extend(
        metadata
            .partition_statistics_iter()
            .map(|s| s.statistics_path.clone()),
    );
    let mut seen = HashSet::new();
    out.retain(|l| seen.insert(l.clone()));
    Ok(out)
}

/// The objects a region holding the table at `base` (None: not at all) needs to expose
/// `new`: with a base, [`objects_added_by_commit`] for `AddSnapshot` updates of every
/// snapshot of `new` that `base` lacks plus the statistics files `base` lacks; without one,
/// [`objects_of_table`]. The metadata JSON itself is not included.
pub async fn objects_to_replicate(
    source: &ObjectStore,
    base: Option<&TableMetadata>,
    new: &TableMetadata,
) -> Result<Vec<String>, CopyError> {
    let Some(base) = base else {
        return objects_of_table(source, new).await;
    };
    let mut updates = Vec::new();
    if new.format_version() > base.format_version() {
        updates.push(TableUpdate::UpgradeFormatVersion {
            format_version: new.format_version(),
        });
    }
    for snapshot in new.snapshots() {
        if base.snapshot_by_id(snapshot.snapshot_id()).is_none() {
            updates.push(TableUpdate::AddSnapshot {
                snapshot: snapshot.as_ref().clone(),
            });
        }
    }
    let known: HashSet<&str> = base
        .statistics_iter()
        .map(|s| s.statistics_path.as_str())
        .chain(
            base.partition_statistics_iter()
                .map(|s| s.statistics_path.as_str()),
        )
        .collect();
    for statistics in new.statistics_iter() {
        if !known.contains(statistics.statistics_path.as_str()) {
            updates.push(TableUpdate::SetStatistics {
                statistics: statistics.clone(),
            });
        }
    }
    for partition_statistics in new.partition_statistics_iter() {
        if !known.contains(partition_statistics.statistics_path.as_str()) {
            updates.push(TableUpdate::SetPartitionStatistics {
                partition_statistics: partition_statistics.clone(),
            });
        }
    }
    objects_added_by_commit(source, base, &updates).await
}

/// Reads a whole (small) metadata object from the source, retrying transient errors.
async fn read_object(source: &ObjectStore, location: &str) -> Result<Bytes, CopyError> {
    ObjectCopier::default()
        .retrying(location, || async {
            source
                .get(location)
                .await
                .map_err(|e| CopyError::storage(location, e))
        })
        .await
}

async fn read_manifest_list(
    source: &ObjectStore,
    location: &str,
    format_version: FormatVersion,
) -> Result<ManifestList, CopyError> {
    let bytes = read_object(source, location).await?;
    let location = location.to_string();
    let parsed = tokio::task::spawn_blocking(move || {
        // The format version in effect selects the schema; fall back to the others in case
        // the list was written under a different one.
        let mut versions = vec![format_version];
        versions.extend(
            [FormatVersion::V1, FormatVersion::V2, FormatVersion::V3]
                .into_iter()
                .filter(|v| *v != format_version),
        );
        let mut first_error = None;
        for version in versions {
            match ManifestList::parse_with_version(&bytes, version) {
                Ok(list) => return Ok(list),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.map_or_else(|| "no format version to try".to_string(), |e| e.to_string()))
    })
    .await;
    match parsed {
        Ok(Ok(list)) => Ok(list),
        Ok(Err(message)) => Err(CopyError::InvalidMetadata { location, message }),
        Err(e) => Err(CopyError::InvalidMetadata {
            location,
            message: format!("manifest list parser task failed: {e}"),
        }),
    }
}

/// The data/delete files a manifest adds (entries with status ADDED).
async fn added_files_of_manifest(
    source: &ObjectStore,
    location: &str,
) -> Result<Vec<String>, CopyError> {
    let bytes = read_object(source, location).await?;
    let parsed = tokio::task::spawn_blocking(move || {
        Manifest::parse_avro(&bytes).map(|manifest| {
            manifest
                .entries()
                .iter()
                .filter(|entry| entry.status() == ManifestStatus::Added)
                .map(|entry| entry.file_path().to_string())
                .collect::<Vec<String>>()
        })
    })
    .await;
    match parsed {
        Ok(Ok(files)) => Ok(files),
        Ok(Err(e)) => Err(CopyError::InvalidMetadata {
            location: location.to_string(),
            message: e.to_string(),
        }),
        Err(e) => Err(CopyError::InvalidMetadata {
            location: location.to_string(),
            message: format!("manifest parser task failed: {e}"),
        }),
    }
}

/// The data/delete files a manifest still holds (entries ADDED or EXISTING).
async fn live_files_of_manifest(
    source: &ObjectStore,
    location: &str,
) -> Result<Vec<String>, CopyError> {
    let bytes = read_object(source, location).await?;
    let parsed = tokio::task::spawn_blocking(move || {
        Manifest::parse_avro(&bytes).map(|manifest| {
            manifest
                .entries()
                .iter()
                .filter(|entry| entry.status() != ManifestStatus::Deleted)
                .map(|entry| entry.file_path().to_string())
                .collect::<Vec<String>>()
        })
    })
    .await;
    match parsed {
        Ok(Ok(files)) => Ok(files),
        Ok(Err(e)) => Err(CopyError::InvalidMetadata {
            location: location.to_string(),
            message: e.to_string(),
        }),
        Err(e) => Err(CopyError::InvalidMetadata {
            location: location.to_string(),
            message: format!("manifest parser task failed: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(size: u64, etag: Option<&str>) -> ObjectInfo {
        ObjectInfo {
            size,
            etag: etag.map(str::to_string),
        }
    }

    #[test]
    fn objects_compare_by_size_and_comparable_etags() {
        assert!(same_object(&info(3, Some("a")), &info(3, Some("a"))));
        assert!(!same_object(&info(3, Some("a")), &info(3, Some("b"))));
        assert!(!same_object(&info(3, None), &info(4, None)));
        assert!(same_object(&info(3, None), &info(3, Some("b"))));
        // Multipart ETags depend on the upload, not only the content.
        assert!(same_object(&info(3, Some("a-2")), &info(3, Some("b"))));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let copier = ObjectCopier::new(1, 10)
            .with_backoff(Duration::from_millis(100), Duration::from_millis(1000));
        let first = copier.backoff(1);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        let third = copier.backoff(3);
        assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
        let late = copier.backoff(30);
        assert!(late >= Duration::from_millis(500) && late <= Duration::from_millis(1000));
    }

    #[tokio::test]
    async fn transient_errors_are_retried_up_to_max_attempts() {
        let copier = ObjectCopier::new(1, 3)
            .with_backoff(Duration::from_millis(1), Duration::from_millis(2));
        let transient = || CopyError::SizeMismatch {
            location: "s3://b/k".into(),
            expected: 1,
            actual: None,
        };
        let mut calls = 0;
        let result: Result<(), _> = copier
            .retrying("s3://b/k", || {
                calls += 1;
                async { Err(transient()) }
            })
            .await;
        assert!(matches!(result, Err(CopyError::SizeMismatch { .. })));
        assert_eq!(calls, 3);

        let mut calls = 0;
        let result = copier
            .retrying("s3://b/k", || {
                calls += 1;
                let n = calls;
                async move {
                    if n < 2 {
                        Err(transient())
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!(result.ok(), Some(2));

        let mut calls = 0;
        let result: Result<(), _> = copier
            .retrying("s3://b/k", || {
                calls += 1;
                async {
                    Err(CopyError::MissingAtSource {
                        location: "s3://b/k".into(),
                    })
                }
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls, 1, "permanent errors are not retried");
    }

    #[test]
    fn only_request_failures_and_unverified_copies_are_retried() {
        let request = CopyError::Storage {
            location: "s3://b/k".into(),
            source: StorageError::Request {
                location: "s3://b/k".into(),
                message: "connection reset".into(),
            },
        };
        assert!(request.is_transient());
        assert!(CopyError::SizeMismatch {
            location: "s3://b/k".into(),
            expected: 1,
            actual: None
        }
        .is_transient());
        assert!(!CopyError::MissingAtSource {
            location: "s3://b/k".into()
        }
        .is_transient());
        assert!(!CopyError::storage("x", StorageError::InvalidLocation("x".into())).is_transient());
    }
}
