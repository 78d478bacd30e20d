//! SQL implementation of the metadata store: [`SqlStore`], one code path for SQLite and
//! PostgreSQL through sqlx's `Any` driver.
//!
//! # Representation
//! Ids are TEXT uuids (v7), JSON (properties, change payloads) is TEXT, times are BIGINT epoch
//! milliseconds. A namespace is stored under its parts joined with [`NAMESPACE_SEPARATOR`],
//! with its parent's joined name (`''` at the top level) so children are one indexed range.
//! Every statement uses `$n` placeholders, which both backends accept.
//!
//! # Backend differences (kept small and explicit)
//! - Schema: `migrations/sqlite` and `migrations/postgres`, embedded and run by
//!   [`SqlStore::connect`].
//! - SQLite: WAL journal, `synchronous = FULL`, `busy_timeout` and `foreign_keys` on every
//!   connection. Reads use a pool of `query_only` connections; writes use a separate pool of
//!   ONE connection and start with `BEGIN IMMEDIATE`, so write transactions are serialized
//!   in-process and a transaction never has to upgrade a read lock (no `SQLITE_BUSY` on
//!   upgrade, no WAL snapshot conflicts).
//! - PostgreSQL: one pool, READ COMMITTED. Rows a write depends on are locked explicitly
//!   (the `locked!` suffixes below; SQLite needs none since its writers are serialized):
//!   every mutation reads the fence row `FOR SHARE` (`set_epoch` takes it `FOR UPDATE`, so an
//!   epoch change waits for in-flight writes and fences every later one); a parent namespace
//!   is read `FOR SHARE` when creating a child and a namespace `FOR UPDATE` when dropping it
//!   or rewriting its properties. Tables reference their namespace by foreign key, so a table
//!   can never be created in (or renamed into) a namespace being dropped. Pointer swaps are a
//!   compare-and-swap `UPDATE ... SET version = version + 1 ... WHERE id = $id AND version =
//!   $expected` whose row count is checked; a multi-table commit updates its rows in table-id
//!   order so two of them cannot deadlock.
//!
//! # Change log
//! Every mutation appends its [`ChangeRecord`] in its own transaction, and `seq` is gap-free
//! and in commit order on both backends, so a replica reading `changes_after(watermark)` never
//! passes a record that commits later. On SQLite `seq` is an `AUTOINCREMENT` key: writes are
//! serialized and a rollback also rolls back the counter. On PostgreSQL (schema `0003`) every
//! append takes its seq from the `change_log_head` row (`UPDATE ... SET seq = seq + 1
//! RETURNING seq`), which stays locked until the transaction ends: seqs are handed out in
//! commit order and a rollback gives its seq back. Mutations append their records after every
//! check that can fail, so that lock is held only for the end of a write. A multi-table commit
//! appends one `commit_table` record per table, each marked with its `txn_index` and
//! `txn_count`.
//!
//! # Replication
//! Schema `0003` adds the region's `replication_state` (watermark, pause flag). Applying
//! records committed by another region, region-local bootstrap with given ids and the
//! watermark live in the [`replication`] submodule; applied records are appended to this
//! region's log under their own seq, so every region's log is a copy of the primary's.
//!
//! # Errors
//! Unique and foreign-key violations that race past the pre-checks are mapped to
//! `AlreadyExists` / `NotFound` / `NamespaceNotEmpty`, never surfaced as database errors.
//!
//! # Idempotency keys and metrics reports
//! Region-local bookkeeping (schema `0002`), written without the fence and the change log.
//! `begin_idempotent` first reads the key on the read pool, so a live key (completed,
//! in flight, reused) is answered without a write transaction — waiters poll it cheaply.
//! Only a free key goes on to a write transaction: `INSERT ... ON CONFLICT DO NOTHING` on
//! the primary key reserves it; when the insert conflicts, the row is read (PostgreSQL:
//! `FOR UPDATE`, after the insert waited for any transaction holding it) and re-judged, and
//! an expired or abandoned-by-lease row is taken over by an `UPDATE` on that locked row. So
//! of concurrent callers exactly one gets `Started`. A metrics report is numbered per
//! catalog by an upsert of its counter row (which serializes one catalog's reports on
//! PostgreSQL), and trimming to the retention is one index range delete.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use async_trait::async_trait;
use serde_json::{json, Value};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::error::ErrorKind;
use sqlx::{Any, AnyConnection, AnyPool, Connection, Executor, Row, Transaction};

use super::{
    display_namespace, ApplyOutcome, BootstrapEntities, Catalog, ChangeRecord, DrillRecord,
    DroppedEntity, EntityKind, LocationClaim, IdempotencyStart, MetadataStore, MetricsReport, MetricsReportQuery,
    NamespaceRecord, NotFound, Page, PageRequest, PointerSwap, PropertiesUpdate,
    ReplicationWatermark, Result, StoreError, StoredResponse, TableRecord, Tenant, Warehouse,
    WriteContext, NAMESPACE_SEPARATOR,
};

/// Read connections of an SQLite store.
const SQLITE_READ_POOL_SIZE: u32 = 8;
/// Connections of a PostgreSQL store (reads and writes share them).
const POSTGRES_POOL_SIZE: u32 = 16;
/// Applied to every SQLite connection (journal_mode is set once, at connect).
const SQLITE_PRAGMAS: &[&str] = &[
    "PRAGMA busy_timeout = 5000",
    "PRAGMA foreign_keys = ON",
    "PRAGMA synchronous = FULL",
];

/// The columns [`table_from_row`] reads.
macro_rules! table_columns {
    () => {
        "id, catalog_id, namespace, name, kind, metadata_location, version, location"
    };
}

/// `$sql` with a PostgreSQL row-lock clause appended; SQLite's writers are serialized, so it
/// needs none (and has no `FOR ...` syntax).
macro_rules! locked {
    ($backend:expr, $sql:expr, $lock:literal) => {
        match $backend {
            Backend::Sqlite => $sql,
            Backend::Postgres => concat!($sql, " ", $lock),
        }
    };
}

mod anti_entropy;
mod locations;
mod replication;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// The SQL metadata store (SQLite or PostgreSQL). See the module docs.
#[derive(Debug, Clone)]
pub struct SqlStore {
    backend: Backend,
    /// Pool for reads outside write transactions.
    read: AnyPool,
    /// Pool for write transactions: one connection on SQLite, the read pool on PostgreSQL.
    write: AnyPool,
}

impl SqlStore {
    /// Connects to `sqlite://path/to/file.db` (created if missing) or `postgres://...` and
    /// applies the backend's embedded migrations.
    pub async fn connect(url: &str) -> Result<SqlStore> {
        sqlx::any::install_default_drivers();
        let scheme = url.split(':').next().unwrap_or_default();
        let store = match scheme {
            "sqlite" => Self::connect_sqlite(url).await?,
            "postgres" | "postgresql" => Self::connect_postgres(url).await?,
            other => {
                return Err(StoreError::Invalid(format!(
                "unsupported metadata store URL scheme `{other}:` (expected sqlite: or postgres:)"
            )))
            }
        };
        tracing::info!(
            backend = store.backend(),
            "metadata store connected and migrated"
        );
        Ok(store)
    }

    /// Closes both pools, waiting for checked-out connections to come back.
    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }

    async fn connect_sqlite(url: &str) -> Result<SqlStore> {
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Err(StoreError::Invalid(
                "in-memory SQLite is not supported by the metadata store; use a file".into(),
            ));
        }
        let url = if url.contains("mode=") {
            url.to_owned()
        } else if url.contains('?') {
            format!("{url}&mode=rwc")
        } else {
            format!("{url}?mode=rwc")
        };
        // WAL is a persistent property of the database file: switch it once, on a connection
        // of its own, before any pool holds the file open.
        let mut conn = AnyConnection::connect(&url).await?;
        conn.execute("PRAGMA journal_mode = WAL").await?;
        conn.close().await?;

        let write = AnyPoolOptions::new()
            .max_connections(1)
            .after_connect(|conn, _meta| Box::pin(sqlite_pragmas(conn, false)))
            .connect(&url)
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&write).await?;
        let read = AnyPoolOptions::new()
            .max_connections(SQLITE_READ_POOL_SIZE)
            .after_connect(|conn, _meta| Box::pin(sqlite_pragmas(conn, true)))
            .connect(&url)
            .await?;
        Ok(SqlStore {
            backend: Backend::Sqlite,
            read,
            write,
        })
    }

    async fn connect_postgres(url: &str) -> Result<SqlStore> {
        let pool = AnyPoolOptions::new()
            .max_connections(POSTGRES_POOL_SIZE)
            .connect(url)
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(SqlStore {
            backend: Backend::Postgres,
            read: pool.clone(),
            write: pool,
        })
    }

    /// Starts a write transaction (see the module docs for SQLite's serialization).
    async fn begin(&self) -> Result<Transaction<'static, Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.write.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.write.begin().await?,
        })
    }

    /// Starts a write transaction and checks the write's fencing epoch inside it, holding the
    /// fence row (PostgreSQL: `FOR SHARE`) until the transaction ends.
    async fn begin_fenced(&self, ctx: &WriteContext) -> Result<Transaction<'static, Any>> {
        let mut tx = self.begin().await?;
        let sql = locked!(
            self.backend,
            "SELECT epoch FROM fence WHERE id = 1",
            "FOR SHARE"
        );
        let current: i64 = sqlx::query_scalar(sql).fetch_one(&mut *tx).await?;
        if current != ctx.epoch {
            return Err(StoreError::StaleEpoch {
                carried: ctx.epoch,
                current,
            });
        }
        Ok(tx)
    }

    /// Whether the namespace exists; `lock` takes it `FOR SHARE` on PostgreSQL.
    async fn namespace_exists(
        &self,
        conn: &mut AnyConnection,
        catalog_id: &str,
        joined: &str,
        lock: bool,
    ) -> Result<bool> {
        let sql = if lock {
            locked!(
                self.backend,
                "SELECT 1 FROM namespaces WHERE catalog_id = $1 AND name = $2",
                "FOR SHARE"
            )
        } else {
            "SELECT 1 FROM namespaces WHERE catalog_id = $1 AND name = $2"
        };
        let row = sqlx::query(sql)
            .bind(catalog_id)
            .bind(joined)
            .fetch_optional(conn)
            .await?;
        Ok(row.is_some())
    }

    /// The kind of the entity of that name, whatever it is.
    async fn entity_kind(
        conn: &mut AnyConnection,
        catalog_id: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<EntityKind>> {
        let kind: Option<String> = sqlx::query_scalar(
            "SELECT kind FROM tables WHERE catalog_id = $1 AND namespace = $2 AND name = $3",
        )
        .bind(catalog_id)
        .bind(namespace)
        .bind(name)
        .fetch_optional(conn)
        .await?;
        kind.as_deref().map(parse_kind).transpose()
    }

    /// The error for a pointer swap whose compare-and-swap matched no row.
    async fn swap_conflict(conn: &mut AnyConnection, swap: &PointerSwap) -> Result<StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            table_columns!(),
            " FROM tables WHERE id = $1"
        ))
        .bind(swap.table_id.as_str())
        .fetch_optional(conn)
        .await?;
        Ok(StoreError::CommitConflict(match row {
            Some(row) => {
                let current = table_from_row(&row)?;
                format!(
                    "{} {} is at version {}, the commit expected version {}",
                    kind_title(current.kind),
                    ident(&current.namespace, &current.name),
                    current.version,
                    swap.expected_version
                )
            }
            None => format!("table {} no longer exists", swap.table_id),
        }))
    }
}

async fn sqlite_pragmas(conn: &mut AnyConnection, read_only: bool) -> sqlx::Result<()> {
    for pragma in SQLITE_PRAGMAS {
        conn.execute(*pragma).await?;
    }
    if read_only {
        conn.execute("PRAGMA query_only = ON").await?;
    }
    Ok(())
}

/// Appends one change record on the mutation's transaction. On PostgreSQL the seq comes from
/// the `change_log_head` row, locked until the transaction ends (commit-ordered, gap-free;
/// see `migrations/postgres/0003_replication.sql`); SQLite's writers are serialized, so its
/// `AUTOINCREMENT` key already is.
async fn append_change(
    backend: Backend,
    conn: &mut AnyConnection,
    ctx: &WriteContext,
    catalog_id: Option<&str>,
    op: &str,
    payload: Value,
    now: i64,
) -> Result<()> {
    match backend {
        Backend::Sqlite => {
            sqlx::query(
                "INSERT INTO change_log (epoch, catalog_id, op, payload, actor, created_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(ctx.epoch)
            .bind(catalog_id)
            .bind(op)
            .bind(payload.to_string())
            .bind(ctx.actor.as_str())
            .bind(now)
            .execute(conn)
            .await?;
        }
        Backend::Postgres => {
            let seq: i64 = sqlx::query_scalar(
                "UPDATE change_log_head SET seq = seq + 1 WHERE id = 1 RETURNING seq",
            )
            .fetch_one(&mut *conn)
            .await?;
            sqlx::query(
                "INSERT INTO change_log (seq, epoch, catalog_id, op, payload, actor, created_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(seq)
            .bind(ctx.epoch)
            .bind(catalog_id)
            .bind(op)
            .bind(payload.to_string())
            .bind(ctx.actor.as_str())
            .bind(now)
            .execute(conn)
            .await?;
        }
    }
    Ok(())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn separator() -> String {
    NAMESPACE_SEPARATOR.to_string()
}

/// The stored form of a namespace name; refuses empty names and parts and parts holding the
/// separator.
fn join_namespace(ns: &[String]) -> Result<String> {
    if ns.is_empty() {
        return Err(StoreError::Invalid(
            "a namespace needs at least one part".into(),
        ));
    }
    for part in ns {
        if part.is_empty() {
            return Err(StoreError::Invalid(format!(
                "empty part in namespace {}",
                display_namespace(ns)
            )));
        }
        if part.contains(NAMESPACE_SEPARATOR) {
            return Err(StoreError::Invalid(format!(
                "namespace part {part:?} contains the separator U+001F"
            )));
        }
    }
    Ok(ns.join(&separator()))
}

fn split_namespace(joined: &str) -> Vec<String> {
    joined
        .split(NAMESPACE_SEPARATOR)
        .map(str::to_owned)
        .collect()
}

/// Refuses empty names and names holding the namespace separator.
fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(StoreError::Invalid(format!(
            "{what} name must not be empty"
        )));
    }
    if name.contains(NAMESPACE_SEPARATOR) {
        return Err(StoreError::Invalid(format!(
            "{what} name {name:?} contains the separator U+001F"
        )));
    }
    Ok(())
}

/// `ns1.ns2.name`, the form of table identifiers in messages.
fn ident(ns: &[String], name: &str) -> String {
    format!("{}.{}", display_namespace(ns), name)
}

fn parse_kind(kind: &str) -> Result<EntityKind> {
    match kind {
        "table" => Ok(EntityKind::Table),
        "view" => Ok(EntityKind::View),
        other => Err(decode_error(format!("unknown entity kind {other:?}"))),
    }
}

fn kind_title(kind: EntityKind) -> &'static str {
    match kind {
        EntityKind::Table => "Table",
        EntityKind::View => "View",
    }
}

fn decode_error(message: impl Into<String>) -> StoreError {
    StoreError::Database(sqlx::Error::Decode(message.into().into()))
}

fn entity_not_found(kind: EntityKind, ns: &[String], name: &str) -> StoreError {
    let ident = ident(ns, name);
    StoreError::NotFound(match kind {
        EntityKind::Table => NotFound::Table(ident),
        EntityKind::View => NotFound::View(ident),
    })
}

fn namespace_not_found(ns: &[String]) -> StoreError {
    StoreError::NotFound(NotFound::Namespace(display_namespace(ns)))
}

/// Creating (or renaming to) a `wanted` named `ident` where an `existing` entity is.
fn entity_exists(wanted: EntityKind, existing: EntityKind, ident: &str) -> StoreError {
    StoreError::AlreadyExists(if wanted == existing {
        format!("{} already exists: {ident}", kind_title(existing))
    } else {
        format!(
            "{} with same name already exists: {ident}",
            kind_title(existing)
        )
    })
}

fn is_violation(err: &sqlx::Error, kind: ErrorKind) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.kind() == kind)
}

/// The columns [`IdempotencyRow::from_row`] reads.
macro_rules! idempotency_columns {
    () => {
        "fingerprint, state, created_ms, reserved_ms, status, content_type, etag, body"
    };
}

/// A stored idempotency key.
struct IdempotencyRow {
    fingerprint: String,
    created_ms: i64,
    reserved_ms: i64,
    /// Set once the key is completed; None while pending.
    response: Option<StoredResponse>,
}

impl IdempotencyRow {
    fn from_row(row: &AnyRow) -> Result<IdempotencyRow> {
        let state: String = row.try_get("state")?;
        let completed = match state.as_str() {
            "completed" => true,
            "pending" => false,
            other => return Err(decode_error(format!("unknown idempotency state {other:?}"))),
        };
        let response = if completed {
            let status: Option<i64> = row.try_get("status")?;
            let status = status
                .and_then(|s| u16::try_from(s).ok())
                .ok_or_else(|| decode_error("completed idempotency key without a valid status"))?;
            let body: Option<Vec<u8>> = row.try_get("body")?;
            Some(StoredResponse {
                status,
                content_type: row.try_get("content_type")?,
                etag: row.try_get("etag")?,
                body: body.unwrap_or_default(),
            })
        } else {
            None
        };
        Ok(IdempotencyRow {
            fingerprint: row.try_get("fingerprint")?,
            created_ms: row.try_get("created_ms")?,
            reserved_ms: row.try_get("reserved_ms")?,
            response,
        })
    }

    /// The answer for a live key; None when the key is free for the caller: expired (older
    /// than the lifetime), or pending under a reservation older than the lease.
    fn judge(
        self,
        fingerprint: &str,
        now_ms: i64,
        lifetime_ms: i64,
        lease_ms: i64,
    ) -> Option<IdempotencyStart> {
        if self.expired(now_ms, lifetime_ms) {
            return None;
        }
        if self.fingerprint != fingerprint {
            return Some(IdempotencyStart::KeyReused);
        }
        match self.response {
            Some(response) => Some(IdempotencyStart::Completed(response)),
            None if now_ms.saturating_sub(self.reserved_ms) >= lease_ms => None,
            None => Some(IdempotencyStart::InFlight),
        }
    }

    fn expired(&self, now_ms: i64, lifetime_ms: i64) -> bool {
        now_ms.saturating_sub(self.created_ms) >= lifetime_ms
    }
}

fn metrics_report_from_row(catalog_id: &str, row: &AnyRow) -> Result<MetricsReport> {
    let namespace: String = row.try_get("namespace")?;
    let report: String = row.try_get("report")?;
    Ok(MetricsReport {
        catalog_id: catalog_id.to_owned(),
        namespace: split_namespace(&namespace),
        table: row.try_get("table_name")?,
        report_type: row.try_get("report_type")?,
        report: serde_json::from_str(&report)
            .map_err(|e| decode_error(format!("bad metrics report JSON: {e}")))?,
        received_ms: row.try_get("received_ms")?,
    })
}

/// Maps a unique violation to `AlreadyExists(message())`, other errors to `Database`.
fn on_unique(err: sqlx::Error, message: impl FnOnce() -> String) -> StoreError {
    if is_violation(&err, ErrorKind::UniqueViolation) {
        StoreError::AlreadyExists(message())
    } else {
        StoreError::Database(err)
    }
}

fn properties_to_json(properties: &HashMap<String, String>) -> Result<String> {
    let sorted: BTreeMap<&String, &String> = properties.iter().collect();
    serde_json::to_string(&sorted)
        .map_err(|e| StoreError::Invalid(format!("properties are not serializable: {e}")))
}

fn properties_from_json(text: &str) -> Result<HashMap<String, String>> {
    serde_json::from_str(text).map_err(|e| decode_error(format!("bad properties JSON: {e}")))
}

fn table_from_row(row: &AnyRow) -> Result<TableRecord> {
    let namespace: String = row.try_get("namespace")?;
    let kind: String = row.try_get("kind")?;
    Ok(TableRecord {
        id: row.try_get("id")?,
        catalog_id: row.try_get("catalog_id")?,
        namespace: split_namespace(&namespace),
        name: row.try_get("name")?,
        kind: parse_kind(&kind)?,
        metadata_location: row.try_get("metadata_location")?,
        version: row.try_get("version")?,
        location: row.try_get("location")?,
    })
}

fn table_payload(t: &TableRecord) -> Value {
    json!({
        "id": t.id,
        "catalog_id": t.catalog_id,
        "namespace": t.namespace,
        "name": t.name,
        "kind": t.kind,
        "metadata_location": t.metadata_location,
        "version": t.version,
        "location": t.location,
    })
}

fn warehouse_from_row(row: &AnyRow) -> Result<Warehouse> {
    Ok(Warehouse {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        bucket: row.try_get("bucket")?,
        key_prefix: row.try_get("key_prefix")?,
    })
}

fn catalog_from_row(row: &AnyRow) -> Result<Catalog> {
    let properties: String = row.try_get("properties")?;
    Ok(Catalog {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        warehouse_id: row.try_get("warehouse_id")?,
        name: row.try_get("name")?,
        properties: properties_from_json(&properties)?,
    })
}

/// The `LIMIT` of a keyset page query: one more than the page, to know whether another
/// page follows.
fn page_limit(page: &PageRequest) -> Result<i64> {
    match page.size {
        None => Ok(i64::MAX),
        Some(0) => Err(StoreError::Invalid("page size must be positive".into())),
        Some(size) => Ok(i64::from(size) + 1),
    }
}

/// Cuts the extra row fetched by [`page_limit`]; the token is the last returned name.
fn finish_page<T>(
    mut names: Vec<String>,
    page: &PageRequest,
    item: impl Fn(String) -> T,
) -> Page<T> {
    let next_token = match page.size {
        Some(size) if names.len() > size as usize => {
            names.truncate(size as usize);
            names.last().cloned()
        }
        _ => None,
    };
    Page {
        items: names.into_iter().map(item).collect(),
        next_token,
    }
}

#[async_trait]
impl MetadataStore for SqlStore {
    fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    // ---- fencing -------------------------------------------------------------------------

    async fn current_epoch(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT epoch FROM fence WHERE id = 1")
            .fetch_one(&self.read)
            .await?)
    }

    async fn set_epoch(&self, epoch: i64) -> Result<()> {
        let mut tx = self.begin().await?;
        let sql = locked!(
            self.backend,
            "SELECT epoch FROM fence WHERE id = 1",
            "FOR UPDATE"
        );
        let current: i64 = sqlx::query_scalar(sql).fetch_one(&mut *tx).await?;
        if epoch < current {
            return Err(StoreError::Invalid(format!(
                "the fencing epoch only rises: region is at epoch {current}, refusing {epoch}"
            )));
        }
        if epoch > current {
            sqlx::query("UPDATE fence SET epoch = $1 WHERE id = 1")
                .bind(epoch)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    // ---- tenants, warehouses, catalogs ---------------------------------------------------

    async fn create_tenant(&self, ctx: &WriteContext, name: &str) -> Result<Tenant> {
        check_name("tenant", name)?;
        let exists = || format!("Tenant already exists: {name}");
        let tenant = Tenant {
            id: new_id(),
            name: name.to_owned(),
        };
        let now = now_ms();
        let mut tx = self.begin_fenced(ctx).await?;
        let found = sqlx::query("SELECT 1 FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        if found.is_some() {
            return Err(StoreError::AlreadyExists(exists()));
        }
        sqlx::query("INSERT INTO tenants (id, name, created_ms) VALUES ($1, $2, $3)")
            .bind(tenant.id.as_str())
            .bind(name)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| on_unique(e, exists))?;
        let payload = json!({ "id": tenant.id, "name": tenant.name });
        append_change(
            self.backend,
            &mut tx,
            ctx,
            None,
            "create_tenant",
            payload,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(tenant)
    }

    async fn get_tenant(&self, name: &str) -> Result<Option<Tenant>> {
        let row = sqlx::query("SELECT id, name FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.read)
            .await?;
        row.map(|row| {
            Ok(Tenant {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
            })
        })
        .transpose()
    }

    async fn create_warehouse(
        &self,
        ctx: &WriteContext,
        tenant_id: &str,
        name: &str,
        bucket: &str,
        key_prefix: &str,
    ) -> Result<Warehouse> {
        check_name("warehouse", name)?;
        let exists = || format!("Warehouse already exists: {name}");
        let warehouse = Warehouse {
            id: new_id(),
            tenant_id: tenant_id.to_owned(),
            name: name.to_owned(),
            bucket: bucket.to_owned(),
            key_prefix: key_prefix.to_owned(),
        };
        let now = now_ms();
        let mut tx = self.begin_fenced(ctx).await?;
        let tenant = sqlx::query("SELECT 1 FROM tenants WHERE id = $1")
            .bind(tenant_id)
            .fetch_optional(&mut *tx)
            .await?;
        if tenant.is_none() {
            return Err(StoreError::NotFound(NotFound::Tenant(tenant_id.to_owned())));
        }
        let found = sqlx::query("SELECT 1 FROM warehouses WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        if found.is_some() {
            return Err(StoreError::AlreadyExists(exists()));
        }
        sqlx::query(
            "INSERT INTO warehouses (id, tenant_id, name, bucket, key_prefix, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(warehouse.id.as_str())
        .bind(tenant_id)
        .bind(name)
        .bind(bucket)
        .bind(key_prefix)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| on_unique(e, exists))?;
        let payload = json!({
            "id": warehouse.id,
            "tenant_id": warehouse.tenant_id,
            "name": warehouse.name,
            "bucket": warehouse.bucket,
            "key_prefix": warehouse.key_prefix,
        });
        append_change(
            self.backend,
            &mut tx,
            ctx,
            None,
            "create_warehouse",
            payload,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(warehouse)
    }

    async fn get_warehouse(&self, tenant_id: &str, name: &str) -> Result<Option<Warehouse>> {
        let row = sqlx::query(
            "SELECT id, tenant_id, name, bucket, key_prefix FROM warehouses \
             WHERE tenant_id = $1 AND name = $2",
        )
        .bind(tenant_id)
        .bind(name)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(warehouse_from_row).transpose()
    }

    async fn get_warehouse_by_id(&self, id: &str) -> Result<Option<Warehouse>> {
        let row = sqlx::query(
            "SELECT id, tenant_id, name, bucket, key_prefix FROM warehouses WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(warehouse_from_row).transpose()
    }

    async fn create_catalog(
        &self,
        ctx: &WriteContext,
        tenant_id: &str,
        warehouse_id: &str,
        name: &str,
        properties: &HashMap<String, String>,
    ) -> Result<Catalog> {
        check_name("catalog", name)?;
        let exists = || format!("Catalog already exists: {name}");
        let properties_json = properties_to_json(properties)?;
        let catalog = Catalog {
            id: new_id(),
            tenant_id: tenant_id.to_owned(),
            warehouse_id: warehouse_id.to_owned(),
            name: name.to_owned(),
            properties: properties.clone(),
        };
        let now = now_ms();
        let mut tx = self.begin_fenced(ctx).await?;
        let tenant = sqlx::query("SELECT 1 FROM tenants WHERE id = $1")
            .bind(tenant_id)
            .fetch_optional(&mut *tx)
            .await?;
        if tenant.is_none() {
            return Err(StoreError::NotFound(NotFound::Tenant(tenant_id.to_owned())));
        }
        // The warehouse must belong to the same tenant.
        let warehouse = sqlx::query("SELECT 1 FROM warehouses WHERE id = $1 AND tenant_id = $2")
            .bind(warehouse_id)
            .bind(tenant_id)
            .fetch_optional(&mut *tx)
            .await?;
        if warehouse.is_none() {
            return Err(StoreError::NotFound(NotFound::Warehouse(
                warehouse_id.to_owned(),
            )));
        }
        let found = sqlx::query("SELECT 1 FROM catalogs WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        if found.is_some() {
            return Err(StoreError::AlreadyExists(exists()));
        }
        sqlx::query(
            "INSERT INTO catalogs (id, tenant_id, warehouse_id, name, properties, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(catalog.id.as_str())
        .bind(tenant_id)
        .bind(warehouse_id)
        .bind(name)
        .bind(properties_json)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| on_unique(e, exists))?;
        let payload = json!({
            "id": catalog.id,
            "tenant_id": catalog.tenant_id,
            "warehouse_id": catalog.warehouse_id,
            "name": catalog.name,
            "properties": catalog.properties,
        });
        append_change(
            self.backend,
            &mut tx,
            ctx,
            Some(&catalog.id),
            "create_catalog",
            payload,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(catalog)
    }

    async fn get_catalog(&self, tenant_id: &str, name: &str) -> Result<Option<Catalog>> {
        let row = sqlx::query(
            "SELECT id, tenant_id, warehouse_id, name, properties FROM catalogs \
             WHERE tenant_id = $1 AND name = $2",
        )
        .bind(tenant_id)
        .bind(name)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(catalog_from_row).transpose()
    }

    async fn list_catalogs(&self, tenant_id: &str) -> Result<Vec<Catalog>> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, warehouse_id, name, properties FROM catalogs \
             WHERE tenant_id = $1 ORDER BY name",
        )
        .bind(tenant_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(catalog_from_row).collect()
    }

    // ---- namespaces ----------------------------------------------------------------------

    async fn create_namespace(
        &self,
        ctx: &WriteContext,
        catalog_id: &str,
        name: &[String],
        properties: &HashMap<String, String>,
    ) -> Result<NamespaceRecord> {
        let joined = join_namespace(name)?;
        let parent = &name[..name.len() - 1];
        let parent_joined = parent.join(&separator());
        let exists = || format!("Namespace already exists: {}", display_namespace(name));
        let properties_json = properties_to_json(properties)?;
        let now = now_ms();
        let mut tx = self.begin_fenced(ctx).await?;
        if parent.is_empty() {
            let catalog = sqlx::query("SELECT 1 FROM catalogs WHERE id = $1")
                .bind(catalog_id)
                .fetch_optional(&mut *tx)
                .await?;
            if catalog.is_none() {
                return Err(StoreError::NotFound(NotFound::Catalog(
                    catalog_id.to_owned(),
                )));
            }
        } else if !self
            .namespace_exists(&mut tx, catalog_id, &parent_joined, true)
            .await?
        {
            return Err(namespace_not_found(parent));
        }
        if self
            .namespace_exists(&mut tx, catalog_id, &joined, false)
            .await?
        {
            return Err(StoreError::AlreadyExists(exists()));
        }
        sqlx::query(
            "INSERT INTO namespaces (catalog_id, name, parent, properties, created_ms, updated_ms) \
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(catalog_id)
        .bind(joined.as_str())
        .bind(parent_joined.as_str())
        .bind(properties_json)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| on_unique(e, exists))?;
        let payload = json!({
            "catalog_id": catalog_id,
            "namespace": name,
            "properties": properties,
        });
        append_change(
            self.backend,
            &mut tx,
            ctx,
            Some(catalog_id),
            "create_namespace",
            payload,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(NamespaceRecord {
            catalog_id: catalog_id.to_owned(),
            name: name.to_vec(),
            properties: properties.clone(),
        })
    }

    async fn get_namespace(
        &self,
        catalog_id: &str,
        name: &[String],
    ) -> Result<Option<NamespaceRecord>> {
        let joined = join_namespace(name)?;
        let properties: Option<String> = sqlx::query_scalar(
            "SELECT properties FROM namespaces WHERE catalog_id = $1 AND name = $2",
        )
        .bind(catalog_id)
        .bind(joined)
        .fetch_optional(&self.read)
        .await?;
        properties
            .map(|p| {
                Ok(NamespaceRecord {
                    catalog_id: catalog_id.to_owned(),
                    name: name.to_vec(),
                    properties: properties_from_json(&p)?,
                })
            })
            .transpose()
    }

    async fn list_namespaces(
        &self,
        catalog_id: &str,
        parent: Option<&[String]>,
        page: &PageRequest,
    ) -> Result<Page<Vec<String>>> {
        let limit = page_limit(page)?;
        let parent_joined = match parent.filter(|p| !p.is_empty()) {
            Some(parent) => {
                let joined = join_namespace(parent)?;
                let mut conn = self.read.acquire().await?;
                if !self
                    .namespace_exists(&mut conn, catalog_id, &joined, false)
                    .await?
                {
                    return Err(namespace_not_found(parent));
                }
                joined
            }
            None => String::new(),
        };
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM namespaces WHERE catalog_id = $1 AND parent = $2 AND name > $3 \
             ORDER BY name LIMIT $4",
        )
        .bind(catalog_id)
        .bind(parent_joined)
        .bind(page.token.as_deref().unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        Ok(finish_page(names, page, |name| split_namespace(&name)))
    }

    async fn drop_namespace(
        &self,
        ctx: &WriteContext,
        catalog_id: &str,
        name: &[String],
    ) -> Result<()> {
        let joined = join_namespace(name)?;
        let not_empty = || StoreError::NamespaceNotEmpty(display_namespace(name));
        let now = now_ms();
        let mut tx = self.begin_fenced(ctx).await?;
        let sql = locked!(
            self.backend,
            "SELECT 1 FROM namespaces WHERE catalog_id = $1 AND name = $2",
            "FOR UPDATE"
        );
        let found = sqlx::query(sql)
            .bind(catalog_id)
            .bind(joined.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if found.is_none() {
            return Err(namespace_not_found(name));
        }
        let child =
            sqlx::query("SELECT 1 FROM namespaces WHERE catalog_id = $1 AND parent = $2 LIMIT 1")
                .bind(catalog_id)
                .bind(joined.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let entity =
            sqlx::query("SELECT 1 FROM tables WHERE catalog_id = $1 AND namespace = $2 LIMIT 1")
                .bind(catalog_id)
                .bind(joined.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        if child.is_some() || entity.is_some() {
            return Err(not_empty());
        }
        sqlx::query("DELETE FROM namespaces WHERE catalog_id = $1 AND name = $2")
            .bind(catalog_id)
            .bind(joined.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if is_violation(&e, ErrorKind::ForeignKeyViolation) {
                    not_empty()
                } else {
                    StoreError::Database(e)
                }
            })?;
        let payload = json!({ "catalog_id": catalog_id, "namespace": name });
        append_change(
            self.backend,
            &mut tx,
            ctx,
            Some(catalog_id),
            "drop_namespace",
            payload,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn update_namespace_properties(
        &self,
        ctx: &WriteContext,
        catalog_id: &str,
        name: &[String],
        removals: &[String],
        updates: &HashMap<String, String>,
    ) -> Result<PropertiesUpdate> {
        let joined = join_namespace(name)?;
        let conflicting: BTreeSet<&String> = removals
            .iter()
            .filter(|k| updates.contains_key(*k))
            .collect();
        if !conflicting.is_empty() {
            let keys: Vec<&str> = conflicting.into_iter().map(String::as_str).collect();
            return Err(StoreError::Invalid(format!(
                "Duplicate key to update and remove: {}",
                keys.join(", ")
            )));
        }
        let now = now_ms();
        let mut tx = self.begin_fenced(ctx).await?;
        let sql = locked!(
            self.backend,
            "SELECT properties FROM namespaces WHERE catalog_id = $1 AND name = $2",
            "FOR UPDATE"
        );
        let current: Option<String> = sqlx::query_scalar(sql)
            .bind(catalog_id)
            .bind(joined.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(current) = current else {
            return Err(namespace_not_found(name));
        };
        let mut properties = properties_from_json(&current)?;
        let mut removed = BTreeSet::new();
        let mut missing = BTreeSet::new();
        for key in removals {
            if properties.remove(key).is_some() {
                removed.insert(key.clone());
            } else if !removed.contains(key) {
                missing.insert(key.clone());
            }
        }
        let mut updated: Vec<String> = updates.keys().cloned().collect();
        updated.sort();
        properties.extend(updates.iter().map(|(k, v)| (k.clone(), v.clone())));
        sqlx::query("UPDATE namespaces SET properties = $1, updated_ms = $2 WHERE catalog_id = $3 AND name = $4")
            .bind(properties_to_json(&properties)?)
            .bind(now)
            .bind(catalog_id)
            .bind(joined.as_str())
            .execute(&mut *tx)
            .await?;
        let result = PropertiesUpdate {
            updated,
            removed: removed.into_iter().collect(),
            missing: missing.into_iter().collect(),
        };
        let payload = json!({
            "catalog_id": catalog_id,
            "namespace": name,
            "removed": result.removed,
            "updates": updates,
            "properties": properties,
        });
        append_change(
            self.backend,
            &mut tx,
            ctx,
            Some(catalog_id),
            "update_namespace_properties",
            payload,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(result)
    }

    // ---- tables and views ----------------------------------------------------------------

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
        let joined = join_namespace(namespace)?;
        check_name(kind.as_str(), name)?;
        let ident = ident(namespace, name);
        let record = TableRecord {
            id: new_id(),
            catalog_id: catalog_id.to_owned(),
            namespace: namespace.to_vec(),
            name: name.to_owned(),
            kind,
            metadata_location: metadata_location.to_owned(),
            version: 1,
            location: location.to_owned(),
        };
        let now = now_ms();
        let mut tx = self.begin_fenced(ctx).await?;
        // The foreign key to the namespace row keeps a concurrent drop_namespace out.
        if !self
            .namespace_exists(&mut tx, catalog_id, &joined, false)
            .await?
        {
            return Err(namespace_not_found(namespace));
        }
        if let Some(existing) = Self::entity_kind(&mut tx, catalog_id, &joined, name).await? {
            return Err(entity_exists(kind, existing, &ident));
        }
        locations::check_claim(self.backend, &mut tx, &record.id, location).await?;
        sqlx::query(
            "INSERT INTO tables (id, catalog_id, namespace, name, kind, metadata_location, \
             version, created_ms, updated_ms, location) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)",
        )
        .bind(record.id.as_str())
        .bind(catalog_id)
        .bind(joined.as_str())
        .bind(name)
        .bind(kind.as_str())
        .bind(metadata_location)
        .bind(record.version)
        .bind(now)
        .bind(location)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_violation(&e, ErrorKind::ForeignKeyViolation) {
                namespace_not_found(namespace)
            } else {
                on_unique(e, || {
                    format!("{} already exists: {ident}", kind_title(kind))
                })
            }
        })?;
        append_change(
            self.backend,
            &mut tx,
            ctx,
            Some(catalog_id),
            "create_table",
            table_payload(&record),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn get_table(
        &self,
        catalog_id: &str,
        namespace: &[String],
        name: &str,
    ) -> Result<Option<TableRecord>> {
        let joined = join_namespace(namespace)?;
        let row = sqlx::query(concat!(
            "SELECT ",
            table_columns!(),
            " FROM tables WHERE catalog_id = $1 AND namespace = $2 AND name = $3"
        ))
        .bind(catalog_id)
        .bind(joined)
        .bind(name)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(table_from_row).transpose()
    }

    async fn list_tables(
        &self,
        catalog_id: &str,
        namespace: &[String],
        kind: EntityKind,
        page: &PageRequest,
    ) -> Result<Page<String>> {
        let joined = join_namespace(namespace)?;
        let limit = page_limit(page)?;
        let mut conn = self.read.acquire().await?;
        if !self
            .namespace_exists(&mut conn, catalog_id, &joined, false)
            .await?
        {
            return Err(namespace_not_found(namespace));
        }
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM tables WHERE catalog_id = $1 AND namespace = $2 AND kind = $3 \
             AND name > $4 ORDER BY name LIMIT $5",
        )
        .bind(catalog_id)
        .bind(joined)
        .bind(kind.as_str())
        .bind(page.token.as_deref().unwrap_or(""))
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
        Ok(finish_page(names, page, |name| name))
    }

    async fn commit_tables(
        &self,
        ctx: &WriteContext,
        swaps: &[PointerSwap],
    ) -> Result<Vec<TableRecord>> {
        let mut seen = HashSet::new();
        for swap in swaps {
            if !seen.insert(swap.table_id.as_str()) {
                return Err(StoreError::Invalid(format!(
                    "table {} appears twice in one commit",
                    swap.table_id
                )));
            }
        }
        // Update in table-id order so concurrent multi-table commits lock rows in the same
        // order (no deadlocks on PostgreSQL); answer in input order.
        let mut order: Vec<usize> = (0..swaps.len()).collect();
        order.sort_by(|a, b| swaps[*a].table_id.cmp(&swaps[*b].table_id));
        let now = now_ms();
        let mut tx = self.begin_fenced(ctx).await?;
        let mut records = Vec::with_capacity(swaps.len());
        for index in order {
            let swap = &swaps[index];
            let moved_from = match &swap.new_location {
                Some(new_location) => {
                    let current: Option<String> =
                        sqlx::query_scalar("SELECT location FROM tables WHERE id = $1")
                            .bind(swap.table_id.as_str())
                            .fetch_optional(&mut *tx)
                            .await?;
                    match current {
                        Some(current) if current != *new_location => {
                            locations::check_claim(
                                self.backend,
                                &mut tx,
                                &swap.table_id,
                                new_location,
                            )
                            .await?;
                            Some(current)
                        }
                        _ => None,
                    }
                }
                None => None,
            };
            if let Some(old) = &moved_from {
                locations::retire(&mut tx, &swap.table_id, old).await?;
                sqlx::query("UPDATE tables SET location = $1 WHERE id = $2")
                    .bind(swap.new_location.as_deref().unwrap_or_default())
                    .bind(swap.table_id.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            let row = sqlx::query(concat!(
                "UPDATE tables SET version = version + 1, metadata_location = $1, updated_ms = $2 \
                 WHERE id = $3 AND version = $4 RETURNING ",
                table_columns!()
            ))
            .bind(swap.new_metadata_location.as_str())
            .bind(now)
            .bind(swap.table_id.as_str())
            .bind(swap.expected_version)
            .fetch_optional(&mut *tx)
            .await?;
            match row {
                Some(row) => records.push((index, table_from_row(&row)?)),
                None => return Err(Self::swap_conflict(&mut tx, swap).await?),
            }
        }
        records.sort_by_key(|(index, _)| *index);
        let records: Vec<TableRecord> = records.into_iter().map(|(_, record)| record).collect();
        // Appended after every swap succeeded: a conflict writes no record.
        let txn_count = records.len();
        for (txn_index, record) in records.iter().enumerate() {
            let mut payload = table_payload(record);
            payload["txn_index"] = json!(txn_index);
            payload["txn_count"] = json!(txn_count);
            append_change(
                self.backend,
                &mut tx,
                ctx,
                Some(&record.catalog_id),
                "commit_table",
                payload,
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(records)
    }

    async fn drop_table(
        &self,
        ctx: &WriteContext,
        catalog_id: &str,
        namespace: &[String],
        name: &str,
        kind: EntityKind,
    ) -> Result<TableRecord> {
        self.drop_entity(ctx, catalog_id, namespace, name, kind, false)
            .await
            .map(|dropped| dropped.record)
    }

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
        let from_joined = join_namespace(from_namespace)?;
        let to_joined = join_namespace(to_namespace)?;
        check_name(kind.as_str(), to_name)?;
        let to_ident = ident(to_namespace, to_name);
        let now = now_ms();
        let mut tx = self.begin_fenced(ctx).await?;
        let sql = locked!(
            self.backend,
            concat!(
                "SELECT ",
                table_columns!(),
                " FROM tables WHERE catalog_id = $1 AND namespace = $2 AND name = $3 AND kind = $4"
            ),
            "FOR UPDATE"
        );
        let row = sqlx::query(sql)
            .bind(catalog_id)
            .bind(from_joined)
            .bind(from_name)
            .bind(kind.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Err(entity_not_found(kind, from_namespace, from_name));
        };
        let mut record = table_from_row(&row)?;
        // The foreign key to the destination namespace keeps a concurrent drop out.
        if !self
            .namespace_exists(&mut tx, catalog_id, &to_joined, false)
            .await?
        {
            return Err(namespace_not_found(to_namespace));
        }
        if let Some(existing) = Self::entity_kind(&mut tx, catalog_id, &to_joined, to_name).await? {
            return Err(entity_exists(kind, existing, &to_ident));
        }
        sqlx::query("UPDATE tables SET namespace = $1, name = $2, updated_ms = $3 WHERE id = $4")
            .bind(to_joined.as_str())
            .bind(to_name)
            .bind(now)
            .bind(record.id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if is_violation(&e, ErrorKind::ForeignKeyViolation) {
                    namespace_not_found(to_namespace)
                } else {
                    on_unique(e, || {
                        format!("{} already exists: {to_ident}", kind_title(kind))
                    })
                }
            })?;
        record.namespace = to_namespace.to_vec();
        record.name = to_name.to_owned();
        let payload = json!({
            "id": record.id,
            "catalog_id": catalog_id,
            "kind": kind,
            "from_namespace": from_namespace,
            "from_name": from_name,
            "to_namespace": to_namespace,
            "to_name": to_name,
            "metadata_location": record.metadata_location,
            "version": record.version,
            "location": record.location,
        });
        append_change(
            self.backend,
            &mut tx,
            ctx,
            Some(catalog_id),
            "rename_table",
            payload,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    // ---- replication outbox --------------------------------------------------------------

    async fn changes_after(&self, after: i64, limit: u32) -> Result<Vec<ChangeRecord>> {
        let rows = sqlx::query(
            "SELECT seq, epoch, catalog_id, op, payload, actor, created_ms FROM change_log \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                let payload: String = row.try_get("payload")?;
                Ok(ChangeRecord {
                    seq: row.try_get("seq")?,
                    epoch: row.try_get("epoch")?,
                    catalog_id: row.try_get("catalog_id")?,
                    op: row.try_get("op")?,
                    payload: serde_json::from_str(&payload)
                        .map_err(|e| decode_error(format!("bad change payload JSON: {e}")))?,
                    actor: row.try_get("actor")?,
                    created_ms: row.try_get("created_ms")?,
                })
            })
            .collect()
    }

    // ---- replication (apply side) --------------------------------------------------------

    async fn bootstrap(&self, wanted: &BootstrapEntities) -> Result<BootstrapEntities> {
        self.bootstrap_entities(wanted).await
    }

    async fn replication_watermark(&self) -> Result<ReplicationWatermark> {
        self.watermark().await
    }

    async fn apply_replicated(&self, records: &[ChangeRecord]) -> Result<ApplyOutcome> {
        self.apply_records(records).await
    }

    async fn set_replication_paused(&self, paused: bool) -> Result<()> {
        self.set_paused(paused).await
    }

    async fn get_table_by_id(&self, id: &str) -> Result<Option<TableRecord>> {
        self.table_by_id(id).await
    }

    // ---- anti-entropy --------------------------------------------------------------------

    async fn drop_table_purging(
        &self,
        ctx: &WriteContext,
        catalog_id: &str,
        namespace: &[String],
        name: &str,
        kind: EntityKind,
        purge: bool,
    ) -> Result<DroppedEntity> {
        self.drop_entity(ctx, catalog_id, namespace, name, kind, purge)
            .await
    }

    async fn location_claims(&self, location: &str) -> Result<Vec<LocationClaim>> {
        self.claims_overlapping(location).await
    }

    async fn entities_without_location(&self, limit: u32) -> Result<Vec<TableRecord>> {
        self.rows_without_location(limit).await
    }

    async fn fill_location(&self, table_id: &str, location: &str) -> Result<()> {
        self.set_missing_location(table_id, location).await
    }

    async fn state_snapshot(
        &self,
        selector: &crate::store::CatalogSelector,
    ) -> Result<crate::store::StateSnapshot> {
        self.snapshot(selector).await
    }

    async fn replace_catalogs(
        &self,
        replacement: &crate::store::CatalogReplacement,
    ) -> Result<ReplicationWatermark> {
        self.replace(replacement).await
    }

    async fn resync_floors(&self) -> Result<HashMap<String, i64>> {
        self.floors().await
    }

    async fn add_quarantine(&self, entries: &[crate::store::QuarantineEntry]) -> Result<u64> {
        self.quarantine(entries).await
    }

    async fn list_quarantine(&self) -> Result<Vec<crate::store::QuarantineEntry>> {
        self.quarantined().await
    }

    // ---- idempotency keys ----------------------------------------------------------------

    async fn begin_idempotent(
        &self,
        key: &str,
        fingerprint: &str,
        now_ms: i64,
        lifetime_ms: i64,
        lease_ms: i64,
    ) -> Result<IdempotencyStart> {
        if key.is_empty() || lifetime_ms <= 0 || lease_ms <= 0 {
            return Err(StoreError::Invalid(
                "an idempotency key needs a name, a positive lifetime and a positive lease".into(),
            ));
        }
        let select = concat!(
            "SELECT ",
            idempotency_columns!(),
            " FROM idempotency_keys WHERE idempotency_key = $1"
        );
        // Fast path: a live key is answered from the read pool.
        let row = sqlx::query(select)
            .bind(key)
            .fetch_optional(&self.read)
            .await?;
        if let Some(row) = row {
            let found = IdempotencyRow::from_row(&row)?;
            if let Some(answer) = found.judge(fingerprint, now_ms, lifetime_ms, lease_ms) {
                return Ok(answer);
            }
        }
        let token = new_id();
        let mut tx = self.begin().await?;
        // A concurrent purge may delete the conflicting row between the insert and the
        // read (PostgreSQL): then insert again.
        for _ in 0..3 {
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys (idempotency_key, fingerprint, token, state, \
                 created_ms, reserved_ms) VALUES ($1, $2, $3, 'pending', $4, $4) \
                 ON CONFLICT (idempotency_key) DO NOTHING",
            )
            .bind(key)
            .bind(fingerprint)
            .bind(token.as_str())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 1 {
                tx.commit().await?;
                return Ok(IdempotencyStart::Started { token });
            }
            let row = sqlx::query(locked!(
                self.backend,
                concat!(
                    "SELECT ",
                    idempotency_columns!(),
                    " FROM idempotency_keys WHERE idempotency_key = $1"
                ),
                "FOR UPDATE"
            ))
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else { continue };
            let found = IdempotencyRow::from_row(&row)?;
            // Expired: a new first use. Lease over: the same use, taken over.
            let created_ms = if found.expired(now_ms, lifetime_ms) {
                now_ms
            } else {
                found.created_ms
            };
            if let Some(answer) = found.judge(fingerprint, now_ms, lifetime_ms, lease_ms) {
                return Ok(answer);
            }
            sqlx::query(
                "UPDATE idempotency_keys SET fingerprint = $1, token = $2, state = 'pending', \
                 created_ms = $3, reserved_ms = $4, status = NULL, content_type = NULL, \
                 etag = NULL, body = NULL WHERE idempotency_key = $5",
            )
            .bind(fingerprint)
            .bind(token.as_str())
            .bind(created_ms)
            .bind(now_ms)
            .bind(key)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(IdempotencyStart::Started { token });
        }
        Err(StoreError::Database(sqlx::Error::Protocol(format!(
            "idempotency key {key} kept vanishing while being reserved"
        ))))
    }

    async fn complete_idempotent(
        &self,
        key: &str,
        token: &str,
        response: &StoredResponse,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let updated = sqlx::query(
            "UPDATE idempotency_keys SET state = 'completed', status = $1, content_type = $2, \
             etag = $3, body = $4 \
             WHERE idempotency_key = $5 AND token = $6 AND state = 'pending'",
        )
        .bind(i64::from(response.status))
        .bind(response.content_type.as_deref())
        .bind(response.etag.as_deref())
        .bind(response.body.as_slice())
        .bind(key)
        .bind(token)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(updated == 1)
    }

    async fn abandon_idempotent(&self, key: &str, token: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        let deleted = sqlx::query(
            "DELETE FROM idempotency_keys \
             WHERE idempotency_key = $1 AND token = $2 AND state = 'pending'",
        )
        .bind(key)
        .bind(token)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(deleted == 1)
    }

    async fn purge_idempotency_keys(&self, older_than_ms: i64) -> Result<u64> {
        let mut tx = self.begin().await?;
        let deleted = sqlx::query("DELETE FROM idempotency_keys WHERE created_ms < $1")
            .bind(older_than_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted)
    }

    // ---- metrics reports -----------------------------------------------------------------

    async fn record_metrics_report(&self, report: &MetricsReport, retention: u64) -> Result<()> {
        if retention == 0 {
            return Err(StoreError::Invalid(
                "metrics report retention must be positive".into(),
            ));
        }
        let retention = i64::try_from(retention).unwrap_or(i64::MAX);
        let joined = join_namespace(&report.namespace)?;
        check_name("table", &report.table)?;
        let json = serde_json::to_string(&report.report)
            .map_err(|e| StoreError::Invalid(format!("report is not serializable: {e}")))?;
        let mut tx = self.begin().await?;
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO metrics_report_seq (catalog_id, last_seq) VALUES ($1, 1) \
             ON CONFLICT (catalog_id) DO UPDATE SET last_seq = metrics_report_seq.last_seq + 1 \
             RETURNING last_seq",
        )
        .bind(report.catalog_id.as_str())
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO metrics_reports (catalog_id, seq, namespace, table_name, report_type, \
             report, received_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(report.catalog_id.as_str())
        .bind(seq)
        .bind(joined)
        .bind(report.table.as_str())
        .bind(report.report_type.as_str())
        .bind(json)
        .bind(report.received_ms)
        .execute(&mut *tx)
        .await?;
        if seq > retention {
            sqlx::query("DELETE FROM metrics_reports WHERE catalog_id = $1 AND seq <= $2")
                .bind(report.catalog_id.as_str())
                .bind(seq - retention)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_metrics_reports(
        &self,
        catalog_id: &str,
        query: &MetricsReportQuery,
    ) -> Result<Vec<MetricsReport>> {
        if query.limit == 0 {
            return Err(StoreError::Invalid("limit must be positive".into()));
        }
        let namespace = query.namespace.as_deref().map(join_namespace).transpose()?;
        let mut sql = String::from(
            "SELECT namespace, table_name, report_type, report, received_ms \
             FROM metrics_reports WHERE catalog_id = $1",
        );
        let mut next = 2;
        if namespace.is_some() {
            sql.push_str(&format!(" AND namespace = ${next}"));
            next += 1;
        }
        if query.table.is_some() {
            sql.push_str(&format!(" AND table_name = ${next}"));
            next += 1;
        }
        sql.push_str(&format!(" ORDER BY seq DESC LIMIT ${next}"));
        let mut select = sqlx::query(&sql).bind(catalog_id);
        if let Some(namespace) = namespace {
            select = select.bind(namespace);
        }
        if let Some(table) = &query.table {
            select = select.bind(table.as_str());
        }
        let rows = select
            .bind(i64::from(query.limit))
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|row| metrics_report_from_row(catalog_id, row))
            .collect()
    }

    async fn record_drill(&self, drill: &DrillRecord) -> Result<()> {
        if drill.id.is_empty() || drill.id.len() > 200 {
            return Err(StoreError::Invalid(
                "a drill id must be 1 to 200 characters".into(),
            ));
        }
        let report = serde_json::to_string(&drill.report)
            .map_err(|e| StoreError::Invalid(format!("report is not serializable: {e}")))?;
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM drills WHERE id = $1")
            .bind(drill.id.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO drills (id, scenario, started_ms, finished_ms, passed, report, \
             received_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(drill.id.as_str())
        .bind(drill.scenario.as_str())
        .bind(drill.started_ms)
        .bind(drill.finished_ms)
        .bind(i64::from(drill.passed))
        .bind(report)
        .bind(drill.received_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_drills(&self, limit: u32) -> Result<Vec<DrillRecord>> {
        if limit == 0 {
            return Err(StoreError::Invalid("limit must be positive".into()));
        }
        let rows = sqlx::query(
            "SELECT id, scenario, started_ms, finished_ms, passed, received_ms FROM drills \
             ORDER BY started_ms DESC, id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| drill_from_row(row, Value::Null))
            .collect()
    }

    async fn get_drill(&self, id: &str) -> Result<Option<DrillRecord>> {
        let row = sqlx::query(
            "SELECT id, scenario, started_ms, finished_ms, passed, received_ms, report \
             FROM drills WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        row.map(|row| {
            let text: String = row.try_get("report")?;
            let report = serde_json::from_str(&text)
                .map_err(|e| StoreError::Invalid(format!("stored drill report: {e}")))?;
            drill_from_row(&row, report)
        })
        .transpose()
    }
}

fn drill_from_row(row: &AnyRow, report: Value) -> Result<DrillRecord> {
    Ok(DrillRecord {
        id: row.try_get("id")?,
        scenario: row.try_get("scenario")?,
        started_ms: row.try_get("started_ms")?,
        finished_ms: row.try_get("finished_ms")?,
        passed: row.try_get::<i64, _>("passed")? != 0,
        report,
        received_ms: row.try_get("received_ms")?,
    })
}
