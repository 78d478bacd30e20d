//! The write transaction of [`SqlStore`]: [`SqlTxn`] checks the fence when it begins, runs
//! the mutations of catalog state on its one connection, queues each mutation's change
//! record, and appends the records when it commits. The locks each mutation takes on
//! PostgreSQL and the change log's seq are described in the docs of [`super`].
//!
//! Every mutation checks what can fail before it writes, so that a conflict usually writes
//! nothing; but a failed mutation marks the transaction failed all the same (see
//! [`StoreTxn`]), because some checks are the database's own (unique and foreign keys,
//! compare-and-swap row counts) and on PostgreSQL a failed statement aborts the transaction.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use serde_json::{json, Value};
use sqlx::error::ErrorKind;
use sqlx::{Any, AnyConnection, Transaction};

use super::{
    check_name, insert_catalog, insert_tenant, insert_warehouse, is_violation, join_namespace,
    namespace_exists, namespace_not_found, new_id, on_unique, properties_from_json,
    properties_to_json, separator, Backend, SqlStore,
};
use crate::store::{
    display_namespace, Catalog, DroppedEntity, EntityKind, NamespaceRecord, NotFound, PointerSwap,
    PropertiesUpdate, Result, StoreError, StoreTxn, TableRecord, Tenant, Warehouse, WriteContext,
};

mod entities;

/// A mutation's change record, appended when the transaction commits.
struct PendingChange {
    catalog_id: Option<String>,
    op: &'static str,
    payload: Value,
}

/// An open write transaction of a [`SqlStore`].
pub(super) struct SqlTxn {
    backend: Backend,
    /// Rolled back when dropped.
    tx: Transaction<'static, Any>,
    ctx: WriteContext,
    /// When the transaction began: the time of its rows and of its change records.
    now: i64,
    changes: Vec<PendingChange>,
    /// Set by a failed mutation: the transaction can only be dropped.
    failed: bool,
}

impl SqlTxn {
    /// Starts a write transaction and checks the write's fencing epoch inside it, holding
    /// the fence row (PostgreSQL: `FOR SHARE`) until the transaction ends.
    pub(super) async fn begin(store: &SqlStore, ctx: &WriteContext) -> Result<SqlTxn> {
        let mut tx = store.begin_write().await?;
        let sql = locked!(
            store.backend,
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
        Ok(SqlTxn {
            backend: store.backend,
            tx,
            ctx: ctx.clone(),
            now: crate::clock::now_ms(),
            changes: Vec::new(),
            failed: false,
        })
    }

    /// Queues the change record of a mutation that succeeded.
    fn log(&mut self, catalog_id: Option<&str>, op: &'static str, payload: Value) {
        self.changes.push(PendingChange {
            catalog_id: catalog_id.map(str::to_owned),
            op,
            payload,
        });
    }

    fn usable(&self) -> Result<()> {
        if self.failed {
            return Err(StoreError::Invalid(
                "a mutation of this transaction failed: drop the transaction and begin another"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Marks the transaction failed when a mutation's `result` is an error.
    fn settle<T>(&mut self, result: Result<T>) -> Result<T> {
        self.failed |= result.is_err();
        result
    }

    async fn create_tenant_rows(&mut self, name: &str) -> Result<Tenant> {
        check_name("tenant", name)?;
        let exists = || format!("Tenant already exists: {name}");
        let tenant = Tenant {
            id: new_id(),
            name: name.to_owned(),
        };
        let found = sqlx::query("SELECT 1 FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *self.tx)
            .await?;
        if found.is_some() {
            return Err(StoreError::AlreadyExists(exists()));
        }
        insert_tenant(&mut self.tx, &tenant, self.now)
            .await
            .map_err(|e| on_unique(e, exists))?;
        let payload = json!({ "id": tenant.id, "name": tenant.name });
        self.log(None, "create_tenant", payload);
        Ok(tenant)
    }

    /// NotFound(Tenant) unless the tenant exists.
    async fn require_tenant(&mut self, tenant_id: &str) -> Result<()> {
        let tenant = sqlx::query("SELECT 1 FROM tenants WHERE id = $1")
            .bind(tenant_id)
            .fetch_optional(&mut *self.tx)
            .await?;
        match tenant {
            Some(_) => Ok(()),
            None => Err(StoreError::NotFound(NotFound::Tenant(tenant_id.to_owned()))),
        }
    }

    async fn create_warehouse_rows(
        &mut self,
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
        self.require_tenant(tenant_id).await?;
        let found = sqlx::query("SELECT 1 FROM warehouses WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .fetch_optional(&mut *self.tx)
            .await?;
        if found.is_some() {
            return Err(StoreError::AlreadyExists(exists()));
        }
        insert_warehouse(&mut self.tx, &warehouse, self.now)
            .await
            .map_err(|e| on_unique(e, exists))?;
        let payload = json!({
            "id": warehouse.id,
            "tenant_id": warehouse.tenant_id,
            "name": warehouse.name,
            "bucket": warehouse.bucket,
            "key_prefix": warehouse.key_prefix,
        });
        self.log(None, "create_warehouse", payload);
        Ok(warehouse)
    }

    async fn create_catalog_rows(
        &mut self,
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
        self.require_tenant(tenant_id).await?;
        // The warehouse must belong to the same tenant.
        let warehouse = sqlx::query("SELECT 1 FROM warehouses WHERE id = $1 AND tenant_id = $2")
            .bind(warehouse_id)
            .bind(tenant_id)
            .fetch_optional(&mut *self.tx)
            .await?;
        if warehouse.is_none() {
            return Err(StoreError::NotFound(NotFound::Warehouse(
                warehouse_id.to_owned(),
            )));
        }
        let found = sqlx::query("SELECT 1 FROM catalogs WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .fetch_optional(&mut *self.tx)
            .await?;
        if found.is_some() {
            return Err(StoreError::AlreadyExists(exists()));
        }
        insert_catalog(&mut self.tx, &catalog, properties_json, self.now)
            .await
            .map_err(|e| on_unique(e, exists))?;
        let payload = json!({
            "id": catalog.id,
            "tenant_id": catalog.tenant_id,
            "warehouse_id": catalog.warehouse_id,
            "name": catalog.name,
            "properties": catalog.properties,
        });
        self.log(Some(&catalog.id), "create_catalog", payload);
        Ok(catalog)
    }

    async fn read_namespace(
        &mut self,
        catalog_id: &str,
        name: &[String],
    ) -> Result<Option<NamespaceRecord>> {
        let joined = join_namespace(name)?;
        let properties: Option<String> = sqlx::query_scalar(
            "SELECT properties FROM namespaces WHERE catalog_id = $1 AND name = $2",
        )
        .bind(catalog_id)
        .bind(joined)
        .fetch_optional(&mut *self.tx)
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

    async fn create_namespace_row(
        &mut self,
        catalog_id: &str,
        name: &[String],
        properties: &HashMap<String, String>,
    ) -> Result<NamespaceRecord> {
        let joined = join_namespace(name)?;
        let parent = &name[..name.len() - 1];
        let parent_joined = parent.join(&separator());
        let exists = || format!("Namespace already exists: {}", display_namespace(name));
        let properties_json = properties_to_json(properties)?;
        if parent.is_empty() {
            let catalog = sqlx::query("SELECT 1 FROM catalogs WHERE id = $1")
                .bind(catalog_id)
                .fetch_optional(&mut *self.tx)
                .await?;
            if catalog.is_none() {
                return Err(StoreError::NotFound(NotFound::Catalog(
                    catalog_id.to_owned(),
                )));
            }
        } else if !namespace_exists(self.backend, &mut self.tx, catalog_id, &parent_joined, true)
            .await?
        {
            return Err(namespace_not_found(parent));
        }
        if namespace_exists(self.backend, &mut self.tx, catalog_id, &joined, false).await? {
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
        .bind(self.now)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| on_unique(e, exists))?;
        let payload = json!({
            "catalog_id": catalog_id,
            "namespace": name,
            "properties": properties,
        });
        self.log(Some(catalog_id), "create_namespace", payload);
        Ok(NamespaceRecord {
            catalog_id: catalog_id.to_owned(),
            name: name.to_vec(),
            properties: properties.clone(),
        })
    }

    async fn drop_namespace_row(&mut self, catalog_id: &str, name: &[String]) -> Result<()> {
        let joined = join_namespace(name)?;
        let not_empty = || StoreError::NamespaceNotEmpty(display_namespace(name));
        let sql = locked!(
            self.backend,
            "SELECT 1 FROM namespaces WHERE catalog_id = $1 AND name = $2",
            "FOR UPDATE"
        );
        let found = sqlx::query(sql)
            .bind(catalog_id)
            .bind(joined.as_str())
            .fetch_optional(&mut *self.tx)
            .await?;
        if found.is_none() {
            return Err(namespace_not_found(name));
        }
        let child =
            sqlx::query("SELECT 1 FROM namespaces WHERE catalog_id = $1 AND parent = $2 LIMIT 1")
                .bind(catalog_id)
                .bind(joined.as_str())
                .fetch_optional(&mut *self.tx)
                .await?;
        let entity =
            sqlx::query("SELECT 1 FROM tables WHERE catalog_id = $1 AND namespace = $2 LIMIT 1")
                .bind(catalog_id)
                .bind(joined.as_str())
                .fetch_optional(&mut *self.tx)
                .await?;
        if child.is_some() || entity.is_some() {
            return Err(not_empty());
        }
        sqlx::query("DELETE FROM namespaces WHERE catalog_id = $1 AND name = $2")
            .bind(catalog_id)
            .bind(joined.as_str())
            .execute(&mut *self.tx)
            .await
            .map_err(|e| {
                if is_violation(&e, ErrorKind::ForeignKeyViolation) {
                    not_empty()
                } else {
                    StoreError::Database(e)
                }
            })?;
        let payload = json!({ "catalog_id": catalog_id, "namespace": name });
        self.log(Some(catalog_id), "drop_namespace", payload);
        Ok(())
    }

    async fn update_namespace_row(
        &mut self,
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
        let sql = locked!(
            self.backend,
            "SELECT properties FROM namespaces WHERE catalog_id = $1 AND name = $2",
            "FOR UPDATE"
        );
        let current: Option<String> = sqlx::query_scalar(sql)
            .bind(catalog_id)
            .bind(joined.as_str())
            .fetch_optional(&mut *self.tx)
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
        sqlx::query(
            "UPDATE namespaces SET properties = $1, updated_ms = $2 \
             WHERE catalog_id = $3 AND name = $4",
        )
        .bind(properties_to_json(&properties)?)
        .bind(self.now)
        .bind(catalog_id)
        .bind(joined.as_str())
        .execute(&mut *self.tx)
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
        self.log(Some(catalog_id), "update_namespace_properties", payload);
        Ok(result)
    }
}

#[async_trait]
impl StoreTxn for SqlTxn {
    async fn create_tenant(&mut self, name: &str) -> Result<Tenant> {
        self.usable()?;
        let result = self.create_tenant_rows(name).await;
        self.settle(result)
    }

    async fn create_warehouse(
        &mut self,
        tenant_id: &str,
        name: &str,
        bucket: &str,
        key_prefix: &str,
    ) -> Result<Warehouse> {
        self.usable()?;
        let result = self
            .create_warehouse_rows(tenant_id, name, bucket, key_prefix)
            .await;
        self.settle(result)
    }

    async fn create_catalog(
        &mut self,
        tenant_id: &str,
        warehouse_id: &str,
        name: &str,
        properties: &HashMap<String, String>,
    ) -> Result<Catalog> {
        self.usable()?;
        let result = self
            .create_catalog_rows(tenant_id, warehouse_id, name, properties)
            .await;
        self.settle(result)
    }

    async fn get_namespace(
        &mut self,
        catalog_id: &str,
        name: &[String],
    ) -> Result<Option<NamespaceRecord>> {
        self.usable()?;
        let result = self.read_namespace(catalog_id, name).await;
        self.settle(result)
    }

    async fn create_namespace(
        &mut self,
        catalog_id: &str,
        name: &[String],
        properties: &HashMap<String, String>,
    ) -> Result<NamespaceRecord> {
        self.usable()?;
        let result = self
            .create_namespace_row(catalog_id, name, properties)
            .await;
        self.settle(result)
    }

    async fn drop_namespace(&mut self, catalog_id: &str, name: &[String]) -> Result<()> {
        self.usable()?;
        let result = self.drop_namespace_row(catalog_id, name).await;
        self.settle(result)
    }

    async fn update_namespace_properties(
        &mut self,
        catalog_id: &str,
        name: &[String],
        removals: &[String],
        updates: &HashMap<String, String>,
    ) -> Result<PropertiesUpdate> {
        self.usable()?;
        let result = self
            .update_namespace_row(catalog_id, name, removals, updates)
            .await;
        self.settle(result)
    }

    async fn create_entity(
        &mut self,
        catalog_id: &str,
        namespace: &[String],
        name: &str,
        kind: EntityKind,
        metadata_location: &str,
        location: &str,
    ) -> Result<TableRecord> {
        self.usable()?;
        let result = self
            .create_entity_row(
                catalog_id,
                namespace,
                name,
                kind,
                metadata_location,
                location,
            )
            .await;
        self.settle(result)
    }

    async fn commit_tables(&mut self, swaps: &[PointerSwap]) -> Result<Vec<TableRecord>> {
        self.usable()?;
        let result = self.swap_pointers(swaps).await;
        self.settle(result)
    }

    async fn drop_entity(
        &mut self,
        catalog_id: &str,
        namespace: &[String],
        name: &str,
        kind: EntityKind,
        purge: bool,
    ) -> Result<DroppedEntity> {
        self.usable()?;
        let result = self
            .drop_entity_row(catalog_id, namespace, name, kind, purge)
            .await;
        self.settle(result)
    }

    async fn rename_entity(
        &mut self,
        catalog_id: &str,
        from_namespace: &[String],
        from_name: &str,
        to_namespace: &[String],
        to_name: &str,
        kind: EntityKind,
    ) -> Result<TableRecord> {
        self.usable()?;
        let result = self
            .rename_entity_row(
                catalog_id,
                from_namespace,
                from_name,
                to_namespace,
                to_name,
                kind,
            )
            .await;
        self.settle(result)
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.usable()?;
        let SqlTxn {
            backend,
            mut tx,
            ctx,
            now,
            changes,
            ..
        } = *self;
        let txn_count = changes.len();
        for (txn_index, change) in changes.into_iter().enumerate() {
            let mut payload = change.payload;
            if txn_count > 1 {
                payload["txn_index"] = json!(txn_index);
                payload["txn_count"] = json!(txn_count);
            }
            let catalog_id = change.catalog_id.as_deref();
            append_change(backend, &mut tx, &ctx, catalog_id, change.op, payload, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Appends one change record on the transaction. On PostgreSQL the seq comes from the
/// `change_log_head` row, locked until the transaction ends (commit-ordered, gap-free; see
/// `migrations/postgres/0003_replication.sql`); SQLite's writers are serialized, so its
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
