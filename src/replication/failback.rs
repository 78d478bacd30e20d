//! Failback: a former primary that comes back as a secondary may hold commits the new
//! primary never received (acknowledged in async mode before an unplanned failover). The
//! replicator finds them before following, quarantines them and converges the region to
//! the new primary's state.
//!
//! 1. Fork: the highest seq `F` whose record is the same (epoch, op, payload) in both logs;
//!    this region's records `(F, W]` are the diverged ones. They are only taken for a
//!    failback when each has an epoch lower than every record of the primary after `F`
//!    and than the primary's epoch (the primary's log switched epoch at the fork: a
//!    failover happened). Anything else (two logs at the same epoch) is not a failback and
//!    the stream stops, reported, as before.
//! 2. Quarantine: one entry per diverged record ([`QuarantineEntry`]: table or view,
//!    snapshot ids the commit added, table properties it set that the primary's table
//!    lacks or holds with another value, the record itself), stored durably (schema `0004`,
//!    `GET /api/v1/replication/quarantine`). The files those commits wrote stay in this
//!    region's bucket.
//! 3. Converge, like a resync of every catalog the diverged records touched: the primary's
//!    rows of those catalogs (snapshot at its head `H`) with every object they reference
//!    copied here, then one transaction that replaces the rows, removes the diverged
//!    records from the log (the watermark goes back to `F`), removes tenants and
//!    warehouses only the diverged records created, and sets resync floors `H`. The
//!    replicator then follows from `F`.
//!
//! A crash at any step repeats the detection; quarantining is idempotent (seq, epoch).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use iceberg::spec::TableMetadata;

use super::replicator::{PeerRegion, Replication};
use super::resync::{copy_catalog_objects, fetch_changes, fetch_snapshot, read_table_metadata};
use crate::error::CatalogError;
use crate::store::{
    CatalogReplacement, CatalogSelector, CatalogState, Change, ChangeRecord, QuarantineEntry,
    StateSnapshot, StoreError,
};

/// Records compared per page while looking for the fork.
const PAGE: i64 = 500;

/// Why a failback did not happen.
#[derive(Debug)]
pub(crate) enum FailbackError {
    /// Not a failback (the logs diverge at the same epoch, or the primary's log does not
    /// show a failover): the stream must stop.
    NotAFailback(String),
    /// Worth retrying (primary unreachable, storage or database errors).
    Transient(String),
    /// The failback cannot complete (e.g. an object missing at the primary).
    Failed(String),
}

fn from_catalog(e: CatalogError) -> FailbackError {
    match e {
        CatalogError::Unavailable(m) | CatalogError::Storage(m) => FailbackError::Transient(m),
        e => FailbackError::Failed(e.to_string()),
    }
}

fn from_store(e: StoreError) -> FailbackError {
    match e {
        StoreError::Database(e) => FailbackError::Transient(e.to_string()),
        e => FailbackError::Failed(e.to_string()),
    }
}

/// What a failback did.
#[derive(Debug, Clone)]
pub(crate) struct FailbackOutcome {
    pub fork: i64,
    pub quarantined: usize,
}

/// Same record in both logs.
fn same(a: &ChangeRecord, b: &ChangeRecord) -> bool {
    a.seq == b.seq && a.epoch == b.epoch && a.op == b.op && a.payload == b.payload
}

/// The highest seq at or below `top` where both logs hold the same record (0: none).
async fn find_fork(rep: &Replication, peer: &PeerRegion, top: i64) -> Result<i64, FailbackError> {
    let mut top = top;
    while top > 0 {
        let lo = (top - PAGE).max(0);
        let limit = (top - lo) as u32;
        let theirs = fetch_changes(rep.http(), peer, lo, limit)
            .await
            .map_err(from_catalog)?;
        let theirs: HashMap<i64, ChangeRecord> =
            theirs.records.into_iter().map(|r| (r.seq, r)).collect();
        let mine = rep
            .store()
            .changes_after(lo, limit)
            .await
            .map_err(from_store)?;
        if let Some(r) = mine
            .iter()
            .rev()
            .find(|r| r.seq <= top && theirs.get(&r.seq).is_some_and(|t| same(r, t)))
        {
            return Ok(r.seq);
        }
        top = lo;
    }
    Ok(0)
}

/// Detects, quarantines and converges; see the module docs. `watermark` is this region's
/// log head; the primary's log does not continue it.
pub(crate) async fn failback(
    rep: &Replication,
    primary: &str,
    peer: &PeerRegion,
    watermark: i64,
) -> Result<FailbackOutcome, FailbackError> {
    let head_page = fetch_changes(rep.http(), peer, 0, 1)
        .await
        .map_err(from_catalog)?;
    let (primary_head, primary_epoch) = (head_page.head, head_page.epoch);
    let fork = find_fork(rep, peer, watermark.min(primary_head)).await?;
    // This region's diverged records, and the primary's first record after the fork.
    let mut diverged = Vec::new();
    let mut after = fork;
    loop {
        let page = rep
            .store()
            .changes_after(after, PAGE as u32)
            .await
            .map_err(from_store)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        diverged.extend(page.into_iter().filter(|r| r.seq <= watermark));
        if after >= watermark {
            break;
        }
    }
    let next = fetch_changes(rep.http(), peer, fork, 1)
        .await
        .map_err(from_catalog)?
        .records
        .into_iter()
        .next();
    let newest_here = diverged.iter().map(|r| r.epoch).max().unwrap_or(0);
    let failover_epoch = next
        .as_ref()
        .map_or(primary_epoch, |r| r.epoch)
        .min(primary_epoch);
    if diverged.is_empty() || newest_here >= failover_epoch {
        return Err(FailbackError::NotAFailback(format!(
            "this region's change log reaches seq {watermark} (epoch {newest_here}) but \
             primary {primary}'s does not continue it (head {primary_head}, epoch \
             {primary_epoch}; the logs agree up to seq {fork}): this region holds commits \
             the primary never received, at an epoch not older than the primary's. That is \
             not a failback (which the replicator quarantines by itself) but two primaries \
             at one epoch or another deployment's log; the stream stops"
        )));
    }
    tracing::error!(
        region = %rep.region(), primary, fork, diverged = diverged.len(),
        "failback: this region holds commits the new primary never received; quarantining them"
    );

    let mut catalog_ids: Vec<String> = Vec::new();
    for r in &diverged {
        if let Some(c) = &r.catalog_id {
            if !catalog_ids.contains(c) {
                catalog_ids.push(c.clone());
            }
        }
    }
    let theirs = fetch_snapshot(rep.http(), peer, &[("catalog_ids", catalog_ids.join(","))])
        .await
        .map_err(from_catalog)?;
    let ours = rep
        .store()
        .state_snapshot(&CatalogSelector::Ids(catalog_ids.clone()))
        .await
        .map_err(from_store)?;

    // 2. Quarantine (durable before anything is replaced).
    let entries = quarantine_entries(rep, peer, &diverged, &ours, &theirs).await;
    let added = rep
        .store()
        .add_quarantine(&entries)
        .await
        .map_err(from_store)?;
    tracing::error!(
        region = %rep.region(), primary, quarantined = entries.len(), new = added,
        "failback: commits quarantined (GET /api/v1/replication/quarantine)"
    );

    // 3. Converge.
    let (_, copied) = copy_catalog_objects(rep, peer, &theirs.catalogs)
        .await
        .map_err(from_catalog)?;
    let present: HashSet<&str> = theirs
        .catalogs
        .iter()
        .map(|c| c.catalog.id.as_str())
        .collect();
    let mut replacement = CatalogReplacement {
        snapshot_head: theirs.head,
        catalogs: theirs.catalogs.clone(),
        remove_catalogs: catalog_ids
            .iter()
            .filter(|c| !present.contains(c.as_str()))
            .cloned()
            .collect(),
        truncate_log_after: Some(fork),
        expect_watermark: Some(watermark),
        ..CatalogReplacement::default()
    };
    for r in &diverged {
        match r.decode() {
            Ok(Change::CreateTenant(t)) => replacement.remove_tenants.push(t.id),
            Ok(Change::CreateWarehouse(w)) => replacement.remove_warehouses.push(w.id),
            _ => {}
        }
    }
    let _gate = rep.lock_apply().await;
    rep.store()
        .replace_catalogs(&replacement)
        .await
        .map_err(from_store)?;
    tracing::warn!(
        region = %rep.region(), primary, fork, snapshot_head = theirs.head,
        objects_copied = copied.copied,
        "failback: converged to the primary's state; following it from the fork"
    );
    Ok(FailbackOutcome {
        fork,
        quarantined: entries.len(),
    })
}

/// The quarantine entry of each diverged record.
async fn quarantine_entries(
    rep: &Replication,
    peer: &PeerRegion,
    diverged: &[ChangeRecord],
    ours: &StateSnapshot,
    theirs: &StateSnapshot,
) -> Vec<QuarantineEntry> {
    let names: HashMap<&str, &str> = ours
        .catalogs
        .iter()
        .chain(&theirs.catalogs)
        .map(|c| (c.catalog.id.as_str(), c.catalog.name.as_str()))
        .collect();
    let primary_catalogs: HashMap<&str, &CatalogState> = theirs
        .catalogs
        .iter()
        .map(|c| (c.catalog.id.as_str(), c))
        .collect();
    // The metadata each diverged commit published, per table, as the walk goes.
    let mut published: HashMap<String, Arc<TableMetadata>> = HashMap::new();
    let mut primary_tables: HashMap<String, Option<Arc<TableMetadata>>> = HashMap::new();
    let detected_at = chrono::Utc::now().to_rfc3339();
    let mut entries = Vec::with_capacity(diverged.len());
    for r in diverged {
        let catalog_id = r.catalog_id.clone();
        let mut entry = QuarantineEntry {
            region: rep.region().to_string(),
            catalog: catalog_id
                .as_deref()
                .and_then(|c| names.get(c))
                .map(|n| n.to_string()),
            catalog_id: catalog_id.clone(),
            namespace: Vec::new(),
            name: None,
            kind: String::new(),
            op: r.op.clone(),
            seq: r.seq,
            epoch: r.epoch,
            metadata_location: None,
            snapshot_ids: Vec::new(),
            properties: BTreeMap::new(),
            detected_at: detected_at.clone(),
            record: r.clone(),
        };
        match r.decode() {
            Ok(Change::CreateTenant(t)) => {
                entry.kind = "tenant".into();
                entry.name = Some(t.name);
            }
            Ok(Change::CreateWarehouse(w)) => {
                entry.kind = "warehouse".into();
                entry.name = Some(w.name);
            }
            Ok(Change::CreateCatalog(c)) => {
                entry.kind = "catalog".into();
                entry.catalog = Some(c.name.clone());
                entry.name = Some(c.name);
                entry.properties = c.properties.into_iter().collect();
            }
            Ok(Change::CreateNamespace(n)) | Ok(Change::UpdateNamespaceProperties(n)) => {
                entry.kind = "namespace".into();
                let at_primary = primary_catalogs
                    .get(n.catalog_id.as_str())
                    .and_then(|c| c.namespaces.iter().find(|x| x.name == n.name))
                    .map(|x| &x.properties);
                entry.properties = n
                    .properties
                    .iter()
                    .filter(|(k, v)| at_primary.and_then(|p| p.get(*k)) != Some(*v))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                entry.namespace = n.name;
            }
            Ok(Change::DropNamespace { namespace, .. }) => {
                entry.kind = "namespace".into();
                entry.namespace = namespace;
            }
            Ok(Change::DropTable(t)) => {
                entry.kind = t.kind.as_str().into();
                entry.namespace = t.namespace;
                entry.name = Some(t.name);
                entry.metadata_location = Some(t.metadata_location);
            }
            Ok(Change::RenameTable { record: t, .. }) => {
                entry.kind = t.kind.as_str().into();
                entry.namespace = t.namespace;
                entry.name = Some(t.name);
                entry.metadata_location = Some(t.metadata_location);
            }
            Ok(Change::CreateTable(t)) | Ok(Change::CommitTable(t)) => {
                entry.kind = t.kind.as_str().into();
                entry.namespace = t.namespace.clone();
                entry.name = Some(t.name.clone());
                entry.metadata_location = Some(t.metadata_location.clone());
                if t.kind == crate::store::EntityKind::Table {
                    let local = rep.local_objects();
                    match read_table_metadata(local, &t.metadata_location).await {
                        Ok(new) => {
                            let base = match published.get(&t.id) {
                                Some(b) => Some(b.clone()),
                                None => predecessor(local, &new).await,
                            };
                            let primary_md = match primary_tables.get(&t.id) {
                                Some(m) => m.clone(),
                                None => {
                                    let m = primary_metadata(peer, theirs, &t.id).await;
                                    primary_tables.insert(t.id.clone(), m.clone());
                                    m
                                }
                            };
                            let (snapshots, properties) =
                                added_by(&new, base.as_deref(), primary_md.as_deref());
                            entry.snapshot_ids = snapshots;
                            entry.properties = properties;
                            published.insert(t.id.clone(), Arc::new(new));
                        }
                        Err(e) => tracing::warn!(
                            seq = r.seq, error = %e,
                            "cannot read a quarantined commit's metadata; listed without snapshots"
                        ),
                    }
                }
            }
            Err(e) => {
                entry.kind = "unknown".into();
                tracing::warn!(seq = r.seq, error = %e, "undecodable record quarantined as is");
            }
        }
        entries.push(entry);
    }
    entries
}

/// The metadata a commit's metadata replaced (the last `metadata-log` entry), if readable.
async fn predecessor(
    local: &crate::storage::ObjectStore,
    new: &TableMetadata,
) -> Option<Arc<TableMetadata>> {
    let previous = new.metadata_log().last()?;
    read_table_metadata(local, &previous.metadata_file)
        .await
        .ok()
        .map(Arc::new)
}

/// The primary's current metadata of a table (None: it has no such table).
async fn primary_metadata(
    peer: &PeerRegion,
    theirs: &StateSnapshot,
    table_id: &str,
) -> Option<Arc<TableMetadata>> {
    let record = theirs
        .catalogs
        .iter()
        .flat_map(|c| &c.tables)
        .find(|t| t.id == table_id)?;
    read_table_metadata(&peer.objects, &record.metadata_location)
        .await
        .ok()
        .map(Arc::new)
}

/// Snapshot ids `new` adds over `base`, and the properties it sets over `base` that
/// `primary` lacks or holds with another value.
fn added_by(
    new: &TableMetadata,
    base: Option<&TableMetadata>,
    primary: Option<&TableMetadata>,
) -> (Vec<i64>, BTreeMap<String, String>) {
    let mut snapshots: Vec<i64> = new
        .snapshots()
        .map(|s| s.snapshot_id())
        .filter(|id| base.is_none_or(|b| b.snapshot_by_id(*id).is_none()))
        .collect();
    snapshots.sort_unstable();
    let properties = new
        .properties()
        .iter()
        .filter(|(k, v)| base.is_none_or(|b| b.properties().get(*k) != Some(*v)))
        .filter(|(k, v)| primary.is_none_or(|p| p.properties().get(*k) != Some(*v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (snapshots, properties)
}
