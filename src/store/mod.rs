//! Metadata store: the catalog's durable rows (tenants, warehouses, catalogs, namespaces,
//! tables and views, the replication change log and the region's fencing epoch).
//!
//! [`MetadataStore`] bundles one trait per area — [`CatalogStore`] (reads of the catalog's
//! entities), [`ReplicationLog`], [`AntiEntropyStore`], [`IdempotencyStore`],
//! [`ReportStore`], [`DrillStore`] — and adds fencing and the write transaction. It has one
//! SQL implementation ([`SqlStore`]) that runs on SQLite (embedded default) and PostgreSQL
//! (production).
//!
//! Every write of catalog state runs in a [`StoreTxn`] ([`MetadataStore::begin`]): it checks
//! the region's fencing epoch once, at its start, holds any number of mutations, and appends
//! each mutation's [`ChangeRecord`] in the same transaction, so a caller composes a write
//! (e.g. a namespace with its missing ancestors) that commits whole or not at all.
//!
//! The change log is the deployment's replication log: a region that is not primary applies
//! the primary's records with [`ReplicationLog::apply_replicated`] (objects first, see
//! `crate::replication`), which appends them to its own log under the same seq in the same
//! transaction, so its watermark is its log's last seq.
//!
//! Besides catalog state, the store keeps region-local bookkeeping that is neither fenced
//! nor replicated: `Idempotency-Key` reservations with their final responses, received
//! metrics reports (bounded per catalog) and the drill history.

use std::collections::HashMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

mod change;
mod sql;
mod txn;

pub use change::{
    ApplyOutcome, BootstrapEntities, Change, ChangeRecord, ReplicationWatermark, TxnPosition,
};
pub use sql::SqlStore;
pub use txn::StoreTxn;

/// Result type of the store layer.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Errors of the store layer. The HTTP layer maps them to the Iceberg error model.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(NotFound),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("Namespace is not empty: {0}")]
    NamespaceNotEmpty(String),
    /// The compare-and-swap of a pointer lost: someone committed in between.
    #[error("Commit conflict: {0}")]
    CommitConflict(String),
    /// The write carried an epoch different from the region's stored fencing epoch.
    #[error("Stale epoch: write carries epoch {carried}, region is at epoch {current}")]
    StaleEpoch { carried: i64, current: i64 },
    #[error("Invalid store argument: {0}")]
    Invalid(String),
    /// The location overlaps (equals, contains or lies inside) another live entity's.
    #[error("{0}")]
    LocationConflict(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

/// What was not found; the message follows the reference server's wording, which clients
/// copy into their own errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotFound {
    #[error("Tenant does not exist: {0}")]
    Tenant(String),
    #[error("Warehouse does not exist: {0}")]
    Warehouse(String),
    #[error("Catalog does not exist: {0}")]
    Catalog(String),
    #[error("Namespace does not exist: {0}")]
    Namespace(String),
    #[error("Table does not exist: {0}")]
    Table(String),
    #[error("View does not exist: {0}")]
    View(String),
}

/// Namespace and identifier parts are joined with this byte in the database (and in the
/// REST URL form, percent-encoded as `%1F`). A part containing it is an invalid identifier.
pub const NAMESPACE_SEPARATOR: char = '\u{1f}';

/// Dotted display form used in error messages (`ns1.ns2`).
pub fn display_namespace(ns: &[String]) -> String {
    ns.join(".")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Warehouse {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// Storage mapping: bucket and key prefix. Per-region endpoints/credentials come from the
    /// region's config, so the same warehouse resolves to each region's own copy.
    pub bucket: String,
    pub key_prefix: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    pub id: String,
    pub tenant_id: String,
    pub warehouse_id: String,
    pub name: String,
    pub properties: HashMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamespaceRecord {
    pub catalog_id: String,
    pub name: Vec<String>,
    pub properties: HashMap<String, String>,
}

/// A table or a view: a name is one or the other, never both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntityKind {
    Table,
    View,
}

impl EntityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Table => "table",
            EntityKind::View => "view",
        }
    }
}

/// The catalog's pointer to a table's (or view's) current metadata file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRecord {
    pub id: String,
    pub catalog_id: String,
    pub namespace: Vec<String>,
    pub name: String,
    pub kind: EntityKind,
    pub metadata_location: String,
    /// Incremented by every pointer swap; the compare-and-swap compares it.
    pub version: i64,
    /// The base location (`s3://bucket/key`, no trailing slash) the entity owns alone; empty
    /// for rows written before locations were recorded and not yet filled in.
    #[serde(default)]
    pub location: String,
}

impl TableRecord {
    /// Equal rows, where a record that carries no location (written by an older primary)
    /// matches a row whatever its location.
    pub fn same_row(&self, other: &TableRecord) -> bool {
        let location_matches = self.location.is_empty()
            || other.location.is_empty()
            || self.location == other.location;
        location_matches
            && self.id == other.id
            && self.catalog_id == other.catalog_id
            && self.namespace == other.namespace
            && self.name == other.name
            && self.kind == other.kind
            && self.metadata_location == other.metadata_location
            && self.version == other.version
    }
}

/// A location some live table or view owns: its current location, or one a `set-location`
/// moved it away from (its older files are still there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocationClaim {
    pub table_id: String,
    pub location: String,
    /// True for a location the entity was moved away from.
    pub retired: bool,
}

/// Whether `inner` is `outer` or lies under it (`outer/...`), both without trailing slash.
pub fn location_within(inner: &str, outer: &str) -> bool {
    inner == outer
        || (inner.len() > outer.len()
            && inner.starts_with(outer)
            && inner.as_bytes()[outer.len()] == b'/')
}

/// What a drop removed: the row and the locations it had been moved away from.
#[derive(Debug, Clone, PartialEq)]
pub struct DroppedEntity {
    pub record: TableRecord,
    pub retired_locations: Vec<String>,
}

impl DroppedEntity {
    /// Every location the entity owned when it was dropped.
    pub fn locations(&self) -> Vec<String> {
        std::iter::once(self.record.location.clone())
            .filter(|l| !l.is_empty())
            .chain(self.retired_locations.iter().cloned())
            .collect()
    }
}

/// One pointer move of a commit: from `expected_version` to `new_metadata_location`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointerSwap {
    pub table_id: String,
    pub expected_version: i64,
    pub new_metadata_location: String,
    /// The entity's new base location when the commit moves it (`set-location`): claimed in
    /// the same transaction, the old one kept as retired.
    pub new_location: Option<String>,
}

/// Who writes and under which fencing epoch: every write transaction begins with one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteContext {
    /// Must equal the region's stored epoch, else [`StoreError::StaleEpoch`] and nothing is written.
    pub epoch: i64,
    /// Request id / principal, recorded in the change log.
    pub actor: String,
}

/// Keyset pagination: `token` is the last name of the previous page (opaque to clients, the
/// API layer encodes it); `size` None means everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    pub token: Option<String>,
    pub size: Option<u32>,
}

/// A page of results; `next_token` is None on the last page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_token: Option<String>,
}

/// Result of a namespace properties update, as the REST spec reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PropertiesUpdate {
    pub updated: Vec<String>,
    pub removed: Vec<String>,
    pub missing: Vec<String>,
}

/// A finalized response kept for an `Idempotency-Key`, replayed verbatim to retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status (2xx or deterministic 4xx: those are the finalized ones).
    pub status: u16,
    pub content_type: Option<String>,
    pub etag: Option<String>,
    pub body: Vec<u8>,
}

/// What [`IdempotencyStore::begin_idempotent`] found for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyStart {
    /// The key is now reserved (pending) for this caller, who runs the request and then
    /// calls `complete_idempotent` or `abandon_idempotent` with this `token`.
    Started { token: String },
    /// Another caller holds the reservation and has not finished yet.
    InFlight,
    /// The request already ran to a final response: replay it.
    Completed(StoredResponse),
    /// The key is live but was first used for a different request (other fingerprint).
    KeyReused,
}

/// One stored `reportMetrics` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsReport {
    pub catalog_id: String,
    pub namespace: Vec<String>,
    pub table: String,
    /// `scan-report` or `commit-report`.
    pub report_type: String,
    /// The report as the client sent it.
    pub report: serde_json::Value,
    pub received_ms: i64,
}

/// One failover drill's report in the region's drill history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    pub id: String,
    pub scenario: String,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub passed: bool,
    /// The whole report (`Null` in listings).
    pub report: serde_json::Value,
    pub received_ms: i64,
}

/// Which stored metrics reports to list (newest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsReportQuery {
    /// Only reports on tables of this namespace.
    pub namespace: Option<Vec<String>>,
    /// Only reports on tables of this name.
    pub table: Option<String>,
    /// At most this many (must be positive).
    pub limit: u32,
}

/// One catalog's rows as a region holds them (see [`AntiEntropyStore::state_snapshot`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogState {
    pub tenant: Tenant,
    pub warehouse: Warehouse,
    pub catalog: Catalog,
    /// Every namespace of the catalog, parents before children.
    pub namespaces: Vec<NamespaceRecord>,
    /// Every table and view of the catalog, by id.
    pub tables: Vec<TableRecord>,
}

/// Which catalogs a [`AntiEntropyStore::state_snapshot`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogSelector {
    All,
    /// Catalogs of this name (in any tenant).
    Name(String),
    /// Catalogs with these ids (ids the region lacks are left out).
    Ids(Vec<String>),
}

/// A consistent read of catalogs and the change-log position it reflects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateSnapshot {
    /// The last seq of the region's change log in that read: the snapshot reflects every
    /// record up to it and none after it.
    pub head: i64,
    /// Epoch of that record (0: empty log).
    pub head_epoch: i64,
    pub catalogs: Vec<CatalogState>,
}

/// What [`AntiEntropyStore::replace_catalogs`] does, in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CatalogReplacement {
    /// The primary's head the replacement rows reflect: records of these catalogs up to it
    /// are logged without being applied when they arrive (a resync floor per catalog).
    pub snapshot_head: i64,
    /// Catalogs whose namespaces, tables and views are replaced by these rows (the catalog
    /// row, its warehouse and tenant are created when missing).
    pub catalogs: Vec<CatalogState>,
    /// Catalogs removed entirely (with their namespaces, tables and views).
    pub remove_catalogs: Vec<String>,
    /// Warehouses and tenants removed (when nothing references them any more).
    pub remove_warehouses: Vec<String>,
    pub remove_tenants: Vec<String>,
    /// Failback: the change-log records after this seq are removed (quarantined before) and
    /// the watermark goes back to it.
    pub truncate_log_after: Option<i64>,
    /// Refuse (`CommitConflict`, nothing written) unless the region's watermark is exactly
    /// this; without it, unless the watermark is at most `snapshot_head`.
    pub expect_watermark: Option<i64>,
}

/// A commit this region holds that the primary never received (failback), as the
/// quarantine report lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineEntry {
    /// The region holding the commit (this one).
    pub region: String,
    /// Catalog name (None for tenants and warehouses).
    pub catalog: Option<String>,
    pub catalog_id: Option<String>,
    /// Namespace of the entity (the namespace itself for namespace changes).
    pub namespace: Vec<String>,
    /// Table or view name (None for namespace, catalog, warehouse, tenant changes).
    pub name: Option<String>,
    /// `table`, `view`, `namespace`, `catalog`, `warehouse` or `tenant`.
    pub kind: String,
    /// The change-log op (`commit_table`, `create_namespace`, ...).
    pub op: String,
    pub seq: i64,
    pub epoch: i64,
    /// The metadata file the commit published (tables and views).
    pub metadata_location: Option<String>,
    /// Snapshots the commit added.
    pub snapshot_ids: Vec<i64>,
    /// Table properties the commit set that the primary's table lacks or holds with
    /// another value (namespace changes: the namespace's properties likewise).
    pub properties: std::collections::BTreeMap<String, String>,
    /// RFC 3339.
    pub detected_at: String,
    /// The change record as committed here.
    pub record: ChangeRecord,
}

/// The catalog's durable state: every area's trait, plus fencing and the transaction every
/// fenced, logged write runs in. `Arc<dyn MetadataStore>` is what the layers above hold.
///
/// A write is a [`StoreTxn`] from [`MetadataStore::begin`]: the epoch is checked once there,
/// each mutation's change record is appended in the same transaction, and
/// [`StoreTxn::commit`] makes all of it durable at once (dropping the transaction instead
/// writes nothing). The one-shot write methods below are that transaction with a single
/// mutation, for callers that need no more.
#[async_trait]
pub trait MetadataStore:
    CatalogStore + ReplicationLog + AntiEntropyStore + IdempotencyStore + ReportStore + DrillStore
{
    /// Backend name for logs and metrics: `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// The region's current fencing epoch (starts at 1).
    async fn current_epoch(&self) -> Result<i64>;
    /// Raise the region's epoch (control plane only). Lowering it is refused with `Invalid`.
    /// Waits for transactions in flight, and fences every one begun after it.
    async fn set_epoch(&self, epoch: i64) -> Result<()>;

    /// Starts a write transaction under `ctx`: [`StoreError::StaleEpoch`] (nothing written)
    /// unless `ctx.epoch` is the region's epoch, which then cannot change until the
    /// transaction ends. See [`StoreTxn`] for what it holds.
    async fn begin(&self, ctx: &WriteContext) -> Result<Box<dyn StoreTxn>>;

    // One-shot writes: `begin`, one mutation, `commit`. Errors as the StoreTxn method says.

    /// See [`StoreTxn::create_tenant`].
    async fn create_tenant(&self, ctx: &WriteContext, name: &str) -> Result<Tenant> {
        let mut txn = self.begin(ctx).await?;
        let tenant = txn.create_tenant(name).await?;
        txn.commit().await?;
        Ok(tenant)
    }
    /// See [`StoreTxn::create_warehouse`].
    async fn create_warehouse(
        &self,
        ctx: &WriteContext,
        tenant_id: &str,
        name: &str,
        bucket: &str,
        key_prefix: &str,
    ) -> Result<Warehouse> {
        let mut txn = self.begin(ctx).await?;
        let warehouse = txn
            .create_warehouse(tenant_id, name, bucket, key_prefix)
            .await?;
        txn.commit().await?;
        Ok(warehouse)
    }
    /// See [`StoreTxn::create_catalog`].
    async fn create_catalog(
        &self,
        ctx: &WriteContext,
        tenant_id: &str,
        warehouse_id: &str,
        name: &str,
        properties: &HashMap<String, String>,
    ) -> Result<Catalog> {
        let mut txn = self.begin(ctx).await?;
        let catalog = txn
            .create_catalog(tenant_id, warehouse_id, name, properties)
            .await?;
        txn.commit().await?;
        Ok(catalog)
    }
    /// See [`StoreTxn::create_namespace`].
    async fn create_namespace(
        &self,
        ctx: &WriteContext,
        catalog_id: &str,
        name: &[String],
        properties: &HashMap<String, String>,
    ) -> Result<NamespaceRecord> {
        let mut txn = self.begin(ctx).await?;
        let namespace = txn.create_namespace(catalog_id, name, properties).await?;
        txn.commit().await?;
        Ok(namespace)
    }
    /// See [`StoreTxn::drop_namespace`].
    async fn drop_namespace(
        &self,
        ctx: &WriteContext,
        catalog_id: &str,
        name: &[String],
    ) -> Result<()> {
        let mut txn = self.begin(ctx).await?;
        txn.drop_namespace(catalog_id, name).await?;
        txn.commit().await
    }
    /// See [`StoreTxn::update_namespace_properties`].
    async fn update_namespace_properties(
        &self,
        ctx: &WriteContext,
        catalog_id: &str,
        name: &[String],
        removals: &[String],
        updates: &HashMap<String, String>,
    ) -> Result<PropertiesUpdate> {
        let mut txn = self.begin(ctx).await?;
        let update = txn
            .update_namespace_properties(catalog_id, name, removals, updates)
            .await?;
        txn.commit().await?;
        Ok(update)
    }
    /// [`MetadataStore::create_entity`] of a row that owns no location (as rows written before
    /// locations were recorded). The catalog always names one; this is for tools and tests.
    async fn create_table(
        &self,
        ctx: &WriteContext,
        catalog_id: &str,
        namespace: &[String],
        name: &str,
        kind: EntityKind,
        metadata_location: &str,
    ) -> Result<TableRecord> {
        self.create_entity(
            ctx,
            catalog_id,
            namespace,
            name,
            kind,
            metadata_location,
            "",
        )
        .await
    }
    /// See [`StoreTxn::create_entity`].
    #[allow(clippy::too_many_arguments)]
    async fn create_entity(
        &self,
        ctx: &WriteContext,
        catalog_id: &str,
        namespace: &[String],
        name: &str,
        kind: EntityKind,
        metadata_location: &str,
        location: &str,
    ) -> Result<TableRecord> {
        let mut txn = self.begin(ctx).await?;
        let record = txn
            .create_entity(
                catalog_id,
                namespace,
                name,
                kind,
                metadata_location,
                location,
            )
            .await?;
        txn.commit().await?;
        Ok(record)
    }
    /// See [`StoreTxn::commit_tables`].
    async fn commit_tables(
        &self,
        ctx: &WriteContext,
        swaps: &[PointerSwap],
    ) -> Result<Vec<TableRecord>> {
        let mut txn = self.begin(ctx).await?;
        let records = txn.commit_tables(swaps).await?;
        txn.commit().await?;
        Ok(records)
    }
    /// [`MetadataStore::drop_table_purging`] without purge: removes the entity of `kind` and
    /// returns it (NotFound(Table|View) otherwise).
    async fn drop_table(
        &self,
        ctx: &WriteContext,
        catalog_id: &str,
        namespace: &[String],
        name: &str,
        kind: EntityKind,
    ) -> Result<TableRecord> {
        self.drop_table_purging(ctx, catalog_id, namespace, name, kind, false)
            .await
            .map(|dropped| dropped.record)
    }
    /// See [`StoreTxn::drop_entity`].
    #[allow(clippy::too_many_arguments)]
    async fn drop_table_purging(
        &self,
        ctx: &WriteContext,
        catalog_id: &str,
        namespace: &[String],
        name: &str,
        kind: EntityKind,
        purge: bool,
    ) -> Result<DroppedEntity> {
        let mut txn = self.begin(ctx).await?;
        let dropped = txn
            .drop_entity(catalog_id, namespace, name, kind, purge)
            .await?;
        txn.commit().await?;
        Ok(dropped)
    }
    /// See [`StoreTxn::rename_entity`].
    #[allow(clippy::too_many_arguments)]
    async fn rename_table(
        &self,
        ctx: &WriteContext,
        catalog_id: &str,
        from_namespace: &[String],
        from_name: &str,
        to_namespace: &[String],
        to_name: &str,
        kind: EntityKind,
    ) -> Result<TableRecord> {
        let mut txn = self.begin(ctx).await?;
        let record = txn
            .rename_entity(
                catalog_id,
                from_namespace,
                from_name,
                to_namespace,
                to_name,
                kind,
            )
            .await?;
        txn.commit().await?;
        Ok(record)
    }
}

/// Reads of the catalog's entities, outside any transaction (each read is one statement or
/// one consistent read).
#[async_trait]
pub trait CatalogStore: Send + Sync + 'static {
    async fn get_tenant(&self, name: &str) -> Result<Option<Tenant>>;
    async fn get_warehouse(&self, tenant_id: &str, name: &str) -> Result<Option<Warehouse>>;
    async fn get_warehouse_by_id(&self, id: &str) -> Result<Option<Warehouse>>;
    async fn get_catalog(&self, tenant_id: &str, name: &str) -> Result<Option<Catalog>>;
    async fn list_catalogs(&self, tenant_id: &str) -> Result<Vec<Catalog>>;
    async fn get_namespace(
        &self,
        catalog_id: &str,
        name: &[String],
    ) -> Result<Option<NamespaceRecord>>;
    /// Direct children of `parent` (top level when None), ordered by name.
    /// NotFound(Namespace) when `parent` is given and does not exist.
    async fn list_namespaces(
        &self,
        catalog_id: &str,
        parent: Option<&[String]>,
        page: &PageRequest,
    ) -> Result<Page<Vec<String>>>;
    /// The entity of that name whatever its kind (callers check `kind`). One indexed read:
    /// this is the loadTable hot path.
    async fn get_table(
        &self,
        catalog_id: &str,
        namespace: &[String],
        name: &str,
    ) -> Result<Option<TableRecord>>;
    /// The table or view with that id.
    async fn get_table_by_id(&self, id: &str) -> Result<Option<TableRecord>>;
    /// Names of the entities of `kind` in the namespace, ordered by name.
    /// NotFound(Namespace) when the namespace is missing.
    async fn list_tables(
        &self,
        catalog_id: &str,
        namespace: &[String],
        kind: EntityKind,
        page: &PageRequest,
    ) -> Result<Page<String>>;
}

/// The change log as the replication log: reading it, applying another region's records,
/// and the region-local replication state (watermark, pause flag, bootstrap rows).
#[async_trait]
pub trait ReplicationLog: Send + Sync + 'static {
    /// Change records with `seq > after`, in order, at most `limit`.
    async fn changes_after(&self, after: i64, limit: u32) -> Result<Vec<ChangeRecord>>;
    /// Creates the bootstrap entities that do not exist yet (looked up by name: tenant by
    /// name, warehouse and catalog by tenant and name) with the given ids, in one
    /// transaction, and returns the entities as stored (an existing entity keeps its id; a
    /// new warehouse or catalog is attached to the stored tenant and warehouse). Every region
    /// derives the same ids from the same names, so regions agree on them without
    /// replicating anything: these rows are region-local setup, written without the fence
    /// and without change records.
    async fn bootstrap(&self, wanted: &BootstrapEntities) -> Result<BootstrapEntities>;
    /// The region's position in the change log (see [`ReplicationWatermark`]).
    async fn replication_watermark(&self) -> Result<ReplicationWatermark>;
    /// Applies change records committed by another region, in one transaction with the new
    /// watermark: each change is applied with the primary's ids, the record itself is
    /// appended to this region's change log under its own seq (so every region's log is a
    /// copy of the primary's) and the fencing epoch is raised to the records' epoch. Records
    /// must be in ascending seq order and hold whole transactions. Idempotent: records at or
    /// below the watermark are skipped, and when that is all of them nothing is done
    /// ([`ApplyOutcome::AlreadyApplied`]). A change that does not fit the region's state (e.g. a
    /// commit whose table is at another version; a name taken by another id) fails with
    /// `CommitConflict`/`Invalid`/`NotFound` and applies nothing: the regions diverged. An
    /// identical row already in place counts as applied.
    async fn apply_replicated(&self, records: &[ChangeRecord]) -> Result<ApplyOutcome>;
    /// Records that an operator paused (true) or resumed (false) this region's replicator.
    async fn set_replication_paused(&self, paused: bool) -> Result<()>;
}

/// Anti-entropy (verify, resync, failback) and location bookkeeping: whole-catalog reads and
/// replacements, resync floors, the failback quarantine, and location claims.
#[async_trait]
pub trait AntiEntropyStore: Send + Sync + 'static {
    /// The selected catalogs' rows and the change-log head, read consistently (one
    /// snapshot: PostgreSQL `REPEATABLE READ`, SQLite one read transaction).
    async fn state_snapshot(&self, selector: &CatalogSelector) -> Result<StateSnapshot>;
    /// Replaces catalogs' rows with another region's (resync, failback) in one transaction;
    /// see [`CatalogReplacement`]. Returns the watermark afterwards.
    async fn replace_catalogs(
        &self,
        replacement: &CatalogReplacement,
    ) -> Result<ReplicationWatermark>;
    /// Resync floors: per catalog id, the seq up to which its replicated records are
    /// reflected already.
    async fn resync_floors(&self) -> Result<HashMap<String, i64>>;
    /// Adds quarantine entries; an entry already there (same seq and epoch) is kept.
    /// Returns how many were new.
    async fn add_quarantine(&self, entries: &[QuarantineEntry]) -> Result<u64>;
    /// Every quarantine entry, by seq.
    async fn list_quarantine(&self) -> Result<Vec<QuarantineEntry>>;
    /// Live location claims (current and retired) that equal `location`, contain it or lie
    /// inside it.
    async fn location_claims(&self, location: &str) -> Result<Vec<LocationClaim>>;
    /// Rows written before locations were recorded (empty location), at most `limit`.
    async fn entities_without_location(&self, limit: u32) -> Result<Vec<TableRecord>>;
    /// Fills in the location of a row that has none (region-local: derived from the
    /// metadata file the row points at, neither fenced nor logged).
    async fn fill_location(&self, table_id: &str, location: &str) -> Result<()>;
}

/// `Idempotency-Key` reservations and their final responses. Region-local request
/// bookkeeping, not catalog state: not fenced, not in the change log.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Looks up `key` and reserves it when it is free, race-free: of concurrent callers with
    /// a free key exactly one gets `Started`. A key is free when unknown, when first used
    /// `lifetime_ms` or more before `now_ms` (expired: treated as new, whatever its
    /// fingerprint), or when it is pending and its reservation is `lease_ms` or more old (the
    /// holder is presumed dead and the caller takes over). Otherwise: `KeyReused` when
    /// `fingerprint` differs, else `Completed` or `InFlight`.
    async fn begin_idempotent(
        &self,
        key: &str,
        fingerprint: &str,
        now_ms: i64,
        lifetime_ms: i64,
        lease_ms: i64,
    ) -> Result<IdempotencyStart>;
    /// Finalizes the reservation `token` of `key` with its response. False (and nothing
    /// written) when the reservation was lost meanwhile (expired and taken over, purged).
    async fn complete_idempotent(
        &self,
        key: &str,
        token: &str,
        response: &StoredResponse,
    ) -> Result<bool>;
    /// Releases the pending reservation `token` of `key` without a final response, so the
    /// next request with the key runs again. False when it was not (or no longer) held.
    async fn abandon_idempotent(&self, key: &str, token: &str) -> Result<bool>;
    /// Deletes every key first used before `older_than_ms`; returns how many.
    async fn purge_idempotency_keys(&self, older_than_ms: i64) -> Result<u64>;
}

/// Received metrics reports. Region-local telemetry, not catalog state: not fenced, not in
/// the change log.
#[async_trait]
pub trait ReportStore: Send + Sync + 'static {
    /// Stores a report and trims its catalog's reports to the `retention` newest
    /// (`retention` must be positive).
    async fn record_metrics_report(&self, report: &MetricsReport, retention: u64) -> Result<()>;
    /// The catalog's stored reports matching `query`, newest first.
    async fn list_metrics_reports(
        &self,
        catalog_id: &str,
        query: &MetricsReportQuery,
    ) -> Result<Vec<MetricsReport>>;
}

/// The region's failover drill history. Region-local, like metrics reports: not fenced, not
/// in the change log.
#[async_trait]
pub trait DrillStore: Send + Sync + 'static {
    /// Stores a drill report; a report with the same id replaces the stored one.
    async fn record_drill(&self, drill: &DrillRecord) -> Result<()>;
    /// Summaries of the stored drills (without their reports), newest first.
    async fn list_drills(&self, limit: u32) -> Result<Vec<DrillRecord>>;
    /// One stored drill with its report.
    async fn get_drill(&self, id: &str) -> Result<Option<DrillRecord>>;
}
