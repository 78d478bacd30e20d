//! SQL implementation of the metadata store: [`SqlStore`], one code path for SQLite and
//! PostgreSQL through sqlx's `Any` driver.
//!
//! # Layout
//! This file: connecting, the fence, and the helpers every area shares. The write
//! transaction and its mutations: [`txn`]. Reads of the catalog's entities: [`catalog`].
//! The replication log and apply: [`replication`]. Anti-entropy: [`anti_entropy`]. Location
//! claims: [`locations`]. Idempotency keys: [`idempotency`]. Metrics reports and drills:
//! [`reports`].
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
//!   (the `locked!` suffixes; SQLite needs none since its writers are serialized): every
//!   write transaction reads the fence row `FOR SHARE` when it begins (`set_epoch` takes it
//!   `FOR UPDATE`, so an epoch change waits for open write transactions and fences every
//!   later one); a parent namespace is read `FOR SHARE` when creating a child and a
//!   namespace `FOR UPDATE` when dropping it or rewriting its properties. Tables reference
//!   their namespace by foreign key, so a table can never be created in (or renamed into) a
//!   namespace being dropped. Pointer swaps are a compare-and-swap `UPDATE ... SET version =
//!   version + 1 ... WHERE id = $id AND version = $expected` whose row count is checked; one
//!   `commit_tables` updates its rows in table-id order so two multi-table commits cannot
//!   deadlock (a transaction that moves several pointers does it in one call for that
//!   reason). Location claims take a transaction-scoped advisory lock ([`locations`]).
//!
//! # Change log
//! A write transaction appends its mutations' [`ChangeRecord`]s when it commits, in the
//! order of the mutations, and `seq` is gap-free and in commit order on both backends, so a
//! replica reading `changes_after(watermark)` never passes a record that commits later. On
//! SQLite `seq` is an `AUTOINCREMENT` key: writes are serialized and a rollback also rolls
//! back the counter. On PostgreSQL (schema `0003`) every append takes its seq from the
//! `change_log_head` row (`UPDATE ... SET seq = seq + 1 RETURNING seq`), which stays locked
//! until the transaction ends: seqs are handed out in commit order and a rollback gives its
//! seq back. Records are appended at commit, after every check of every mutation, so that
//! lock is held only for the end of a write. When a transaction appends several records,
//! each is marked with its `txn_index` and `txn_count` (a multi-table commit's
//! `commit_table` records carry theirs also when alone).
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

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use serde_json::{json, Value};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::error::ErrorKind;
use sqlx::{Any, AnyConnection, AnyPool, Connection, Executor, Row, Transaction};

use super::{
    display_namespace, Catalog, EntityKind, MetadataStore, NotFound, Result, StoreError, StoreTxn,
    TableRecord, Tenant, Warehouse, WriteContext, NAMESPACE_SEPARATOR,
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
            crate::store::sql::Backend::Sqlite => $sql,
            crate::store::sql::Backend::Postgres => concat!($sql, " ", $lock),
        }
    };
}

mod anti_entropy;
mod catalog;
mod idempotency;
mod locations;
mod replication;
mod reports;
mod txn;

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

    /// Starts a write transaction without the fence (region-local bookkeeping, replication
    /// apply, anti-entropy); see the module docs for SQLite's serialization.
    async fn begin_write(&self) -> Result<Transaction<'static, Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.write.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.write.begin().await?,
        })
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

#[async_trait]
impl MetadataStore for SqlStore {
    fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    async fn current_epoch(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT epoch FROM fence WHERE id = 1")
            .fetch_one(&self.read)
            .await?)
    }

    async fn set_epoch(&self, epoch: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
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

    async fn begin(&self, ctx: &WriteContext) -> Result<Box<dyn StoreTxn>> {
        Ok(Box::new(txn::SqlTxn::begin(self, ctx).await?))
    }
}

/// Whether the namespace exists; `lock` takes it `FOR SHARE` on PostgreSQL.
async fn namespace_exists(
    backend: Backend,
    conn: &mut AnyConnection,
    catalog_id: &str,
    joined: &str,
    lock: bool,
) -> Result<bool> {
    let sql = if lock {
        locked!(
            backend,
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

/// Inserts a tenant row with the given id (both regions use the same ids).
async fn insert_tenant(
    conn: &mut AnyConnection,
    t: &Tenant,
    at: i64,
) -> std::result::Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO tenants (id, name, created_ms) VALUES ($1, $2, $3)")
        .bind(t.id.as_str())
        .bind(t.name.as_str())
        .bind(at)
        .execute(&mut *conn)
        .await
        .map(drop)
}

/// Inserts a warehouse row with the given id.
async fn insert_warehouse(
    conn: &mut AnyConnection,
    w: &Warehouse,
    at: i64,
) -> std::result::Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO warehouses (id, tenant_id, name, bucket, key_prefix, created_ms) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(w.id.as_str())
    .bind(w.tenant_id.as_str())
    .bind(w.name.as_str())
    .bind(w.bucket.as_str())
    .bind(w.key_prefix.as_str())
    .bind(at)
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// Inserts a catalog row with the given id (`properties` as stored: JSON text).
async fn insert_catalog(
    conn: &mut AnyConnection,
    c: &Catalog,
    properties: String,
    at: i64,
) -> std::result::Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO catalogs (id, tenant_id, warehouse_id, name, properties, created_ms) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(c.id.as_str())
    .bind(c.tenant_id.as_str())
    .bind(c.warehouse_id.as_str())
    .bind(c.name.as_str())
    .bind(properties)
    .bind(at)
    .execute(&mut *conn)
    .await
    .map(drop)
}
