//! Preparing a pulled page of change records: every object its table (and view) changes
//! reference made present in this region's bucket, concurrently across the page, before the
//! replicator applies any of it.
//!
//! Over a slow link each change needs several round trips to the primary's bucket (its
//! metadata file, its manifest list, its new manifests, then a HEAD and a GET per object).
//! Done one change after another that bounds the replicator to about one commit per second
//! at 80 ms each way; done for a chunk of the page at once, the round trips of its changes
//! overlap and the rate is bounded by `copy_parallelism` and CPU instead.
//! Three stages, overlapping (each change goes through them as soon as it can), each bounded
//! by the replicator's `copy_parallelism`:
//!
//! 1. read and parse every table change's new metadata file from the primary (at most
//!    `copy_parallelism` reads in flight);
//! 2. list what each change adds over its base — the previous change of the same table in
//!    the page, or this region's current metadata of it for the first one (the page is
//!    applied in order, so that is what the region holds just before the change); at most
//!    `copy_parallelism` changes listed at once;
//! 3. copy what the region lacks, and write each metadata file, with at most
//!    `copy_parallelism` objects in flight across the page.
//!
//! Results are per change, in page order: the replicator applies the changes before the
//! first failure and reports that one (never skipping it). A change whose base failed to
//! prepare is not prepared either (it follows the failure, so it is not applied).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use iceberg::spec::TableMetadata;
use tokio::sync::Semaphore;

use super::copier::{objects_to_replicate, CopyError, ObjectCopier};
use crate::storage::{ObjectStore, StorageError};
use crate::store::{EntityKind, TableRecord};

/// A change of a page whose objects must be present before it is applied.
#[derive(Debug, Clone)]
pub(crate) struct TableChange {
    pub seq: i64,
    /// The row the change creates or moves the pointer of.
    pub pointer: TableRecord,
}

/// A change whose objects are present.
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    /// The parsed new metadata (tables only): the base of the table's next change.
    pub metadata: Option<Arc<TableMetadata>>,
    /// Objects copied (the metadata file included) and their bytes.
    pub copied: usize,
    pub bytes_copied: u64,
}

/// Why a change's objects could not be made present.
#[derive(Debug, Clone)]
pub(crate) struct PrepareError {
    pub message: String,
    /// Will not get better by retrying (missing at the primary, unparsable).
    pub permanent: bool,
}

impl PrepareError {
    fn copy(e: CopyError) -> PrepareError {
        PrepareError {
            permanent: !e.is_transient(),
            message: e.to_string(),
        }
    }

    fn transient(message: String) -> PrepareError {
        PrepareError {
            message,
            permanent: false,
        }
    }
}

/// Where a page's objects come from and go to.
pub(crate) struct PagePreparer<'a> {
    /// The primary's bucket.
    pub source: &'a ObjectStore,
    /// This region's bucket.
    pub dest: &'a ObjectStore,
    pub copier: &'a ObjectCopier,
    /// Requests in flight per stage (`copy_parallelism`).
    pub parallelism: usize,
    /// Objects listed and not yet known to be present here (the status's `objects_pending`).
    pub pending: &'a AtomicU64,
}

/// Stage 1's outcome for a table change: the metadata file's bytes and parsed form.
type Fetched = Result<(Bytes, Arc<TableMetadata>), PrepareError>;

impl PagePreparer<'_> {
    /// Makes the objects of `changes` (in page order) present here; one result per change.
    /// `local_base(table id)` is this region's current metadata of a table (None: the table
    /// is new here, or unreadable: everything it references is copied).
    pub async fn prepare<F, Fut>(
        &self,
        changes: &[TableChange],
        local_base: F,
    ) -> Vec<Result<Prepared, PrepareError>>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Option<Arc<TableMetadata>>>,
    {
        let parallelism = self.parallelism.max(1);
        let started = Instant::now();
        // One bound per stage, so that the stages overlap: a change is listed as soon as its
        // metadata (and its base's) is read, and copied as soon as it is listed. The
        // semaphores are fair, so the page's earlier changes go first at every stage.
        let fetching = Semaphore::new(parallelism);
        let listing = Semaphore::new(parallelism);
        let copying = Semaphore::new(parallelism);
        let (fetching, listing, copying) = (&fetching, &listing, &copying);

        // 1. Every table change's new metadata, shared: it is also the base of the table's
        // next change in the page.
        let fetches: Vec<Option<Shared<BoxFuture<'_, Fetched>>>> = (0..changes.len())
            .map(|i| {
                let c = &changes[i];
                (c.pointer.kind != EntityKind::View).then(|| {
                    async move {
                        let _permit = fetching.acquire().await;
                        self.fetch_metadata(&c.pointer.metadata_location).await
                    }
                    .boxed()
                    .shared()
                })
            })
            .collect();
        let mut previous: HashMap<&str, usize> = HashMap::new();
        let mut base_of: Vec<Option<usize>> = Vec::with_capacity(changes.len());
        for (i, c) in changes.iter().enumerate() {
            base_of.push(previous.insert(c.pointer.id.as_str(), i));
        }
        let local_base = &local_base;
        let chains = (0..changes.len()).map(|i| {
            let c = &changes[i];
            let fetch = fetches[i].clone();
            let base_fetch = base_of[i].and_then(|j| fetches[j].clone().map(|f| (j, f)));
            async move {
                let Some(fetch) = fetch else {
                    let _pending = Pending::new(self.pending, 1);
                    return self.make_present(c, &[], None, copying).await;
                };
                let (bytes, new) = fetch.await?;
                // 2. What the change adds over its base: the previous change of the same
                // table in the page (present here by the time this one applies), else this
                // region's current metadata of the table.
                let base = match base_fetch {
                    Some((j, f)) => match f.await {
                        Ok((_, m)) => Some(m),
                        Err(_) => {
                            return Err(PrepareError::transient(format!(
                                "the table's previous change (seq {}) is not prepared",
                                changes[j].seq
                            )))
                        }
                    },
                    None => local_base(c.pointer.id.clone()).await,
                };
                let objects = {
                    let _permit = listing.acquire().await;
                    objects_to_replicate(self.source, base.as_deref(), &new)
                        .await
                        .map_err(PrepareError::copy)?
                };
                // 3. Copy (the objects and the metadata file).
                let _pending = Pending::new(self.pending, objects.len() as u64 + 1);
                self.make_present(c, &objects, Some((bytes, new)), copying)
                    .await
            }
        });
        let prepared = futures::future::join_all(chains).await;
        tracing::debug!(
            changes = changes.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "page prepared"
        );
        prepared
    }

    /// Reads and parses a metadata file from the primary's bucket.
    async fn fetch_metadata(&self, location: &str) -> Fetched {
        let bytes = self.source.get(location).await.map_err(|e| match e {
            StorageError::NotFound(_) => PrepareError {
                message: format!("metadata file {location} is missing in the primary's bucket"),
                permanent: true,
            },
            StorageError::InvalidLocation(_) => PrepareError {
                message: e.to_string(),
                permanent: true,
            },
            e => PrepareError::transient(e.to_string()),
        })?;
        let parsed: TableMetadata = serde_json::from_slice(&bytes).map_err(|e| PrepareError {
            message: format!("metadata file {location} does not parse: {e}"),
            permanent: true,
        })?;
        Ok((bytes, Arc::new(parsed)))
    }

    /// Copies one change's objects and writes its metadata file (a view's is copied).
    async fn make_present(
        &self,
        change: &TableChange,
        objects: &[String],
        metadata: Option<(Bytes, Arc<TableMetadata>)>,
        permits: &Semaphore,
    ) -> Result<Prepared, PrepareError> {
        let location = &change.pointer.metadata_location;
        let Some((bytes, parsed)) = metadata else {
            // A view: its metadata file is all it references.
            let _permit = permits.acquire().await;
            let report = self
                .copier
                .ensure_present(self.source, self.dest, std::slice::from_ref(location))
                .await
                .map_err(PrepareError::copy)?;
            return Ok(Prepared {
                metadata: None,
                copied: report.copied,
                bytes_copied: report.bytes_copied,
            });
        };
        // The metadata file is referenced by nothing until the pointer moves, so it is
        // written alongside the objects (its bytes are at hand already).
        let size = bytes.len() as u64;
        let put_metadata = async {
            let _permit = permits.acquire().await;
            match self.dest.head(location).await {
                Ok(Some(info)) if info.size == size => Ok(0u64),
                _ => self.dest.put(location, bytes).await.map(|()| size),
            }
        };
        let copy_objects = async {
            if objects.is_empty() {
                return Ok(Default::default());
            }
            let wanted = objects
                .len()
                .min(self.copier.parallelism())
                .min(self.parallelism.max(1));
            let wanted = u32::try_from(wanted).unwrap_or(u32::MAX).max(1);
            let _permits = permits.acquire_many(wanted).await;
            self.copier
                .ensure_present(self.source, self.dest, objects)
                .await
        };
        let (report, written) = tokio::join!(copy_objects, put_metadata);
        let mut report = report.map_err(PrepareError::copy)?;
        let written = written
            .map_err(|e| PrepareError::transient(format!("cannot write {location} here: {e}")))?;
        if written > 0 {
            report.copied += 1;
            report.bytes_copied += written;
        }
        tracing::debug!(
            seq = change.seq, table = %change.pointer.id, objects = objects.len(),
            copied = report.copied, "objects of the change present"
        );
        Ok(Prepared {
            metadata: Some(parsed),
            copied: report.copied,
            bytes_copied: report.bytes_copied,
        })
    }
}

/// Counts objects as pending while a change's copy runs (also when it fails or is dropped).
struct Pending<'a> {
    counter: &'a AtomicU64,
    n: u64,
}

impl<'a> Pending<'a> {
    fn new(counter: &'a AtomicU64, n: u64) -> Pending<'a> {
        counter.fetch_add(n, Ordering::Relaxed);
        Pending { counter, n }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.n, Ordering::Relaxed);
    }
}
