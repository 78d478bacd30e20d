//! The anti-entropy side of [`SqlStore`] (schema `0004`): consistent snapshots of catalogs,
//! replacing a catalog's rows with another region's (resync, failback), resync floors, the
//! failback quarantine; and the location bookkeeping of [`AntiEntropyStore`], whose queries
//! live in [`super::locations`].
//!
//! # Resync floors
//! `replace_catalogs` rebuilds catalogs from the primary's state at its head `H` without
//! moving the region's watermark `W` (the log stays a copy of the primary's): records
//! `(W, H]` still arrive through the replicator. Those of a rebuilt catalog are reflected in
//! its new rows already, so the catalog gets a floor `H` and `apply_replicated` logs its
//! records up to `H` without applying them (nothing applied twice, nothing lost); records
//! of other catalogs apply as usual. A floor is deleted once the watermark passes it.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::replication::state_row;
use super::{
    catalog_from_row, insert_catalog, insert_tenant, insert_warehouse, join_namespace,
    properties_from_json, properties_to_json, split_namespace, table_from_row, warehouse_from_row,
    Backend, SqlStore,
};
use crate::clock::now_ms;
use crate::store::{
    AntiEntropyStore, CatalogReplacement, CatalogSelector, CatalogState, LocationClaim,
    NamespaceRecord, QuarantineEntry, ReplicationWatermark, Result, StateSnapshot, StoreError,
    TableRecord, Tenant,
};

#[async_trait]
impl AntiEntropyStore for SqlStore {
    async fn state_snapshot(&self, selector: &CatalogSelector) -> Result<StateSnapshot> {
        let mut tx = self.read.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        let head = state_row(self.backend, &mut tx, false).await?;
        let rows = match selector {
            CatalogSelector::All => sqlx::query(
                "SELECT id, tenant_id, warehouse_id, name, properties FROM catalogs ORDER BY id",
            )
            .fetch_all(&mut *tx)
            .await?,
            CatalogSelector::Name(name) => {
                sqlx::query(
                    "SELECT id, tenant_id, warehouse_id, name, properties FROM catalogs \
                     WHERE name = $1 ORDER BY id",
                )
                .bind(name.as_str())
                .fetch_all(&mut *tx)
                .await?
            }
            CatalogSelector::Ids(ids) => {
                let mut rows = Vec::new();
                for id in ids {
                    if let Some(row) = sqlx::query(
                        "SELECT id, tenant_id, warehouse_id, name, properties FROM catalogs \
                         WHERE id = $1",
                    )
                    .bind(id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?
                    {
                        rows.push(row);
                    }
                }
                rows
            }
        };
        let mut catalogs = Vec::with_capacity(rows.len());
        for row in &rows {
            let catalog = catalog_from_row(row)?;
            let tenant_row = sqlx::query("SELECT id, name FROM tenants WHERE id = $1")
                .bind(catalog.tenant_id.as_str())
                .fetch_one(&mut *tx)
                .await?;
            let tenant = Tenant {
                id: tenant_row.try_get("id")?,
                name: tenant_row.try_get("name")?,
            };
            let warehouse = warehouse_from_row(
                &sqlx::query(
                    "SELECT id, tenant_id, name, bucket, key_prefix FROM warehouses WHERE id = $1",
                )
                .bind(catalog.warehouse_id.as_str())
                .fetch_one(&mut *tx)
                .await?,
            )?;
            let namespaces = sqlx::query(
                "SELECT name, properties FROM namespaces WHERE catalog_id = $1 ORDER BY name",
            )
            .bind(catalog.id.as_str())
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| namespace_from_row(&catalog.id, r))
            .collect::<Result<Vec<_>>>()?;
            let tables = sqlx::query(concat!(
                "SELECT ",
                table_columns!(),
                " FROM tables WHERE catalog_id = $1 ORDER BY id"
            ))
            .bind(catalog.id.as_str())
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(table_from_row)
            .collect::<Result<Vec<_>>>()?;
            catalogs.push(CatalogState {
                tenant,
                warehouse,
                catalog,
                namespaces,
                tables,
            });
        }
        tx.commit().await?;
        Ok(StateSnapshot {
            head: head.seq,
            head_epoch: head.epoch,
            catalogs,
        })
    }

    async fn replace_catalogs(&self, r: &CatalogReplacement) -> Result<ReplicationWatermark> {
        let mut tx = self.begin_write().await?;
        let current = state_row(self.backend, &mut tx, true).await?;
        match r.expect_watermark {
            Some(w) if current.seq != w => {
                return Err(StoreError::CommitConflict(format!(
                    "the region's watermark moved to {} (expected {w})",
                    current.seq
                )))
            }
            None if current.seq > r.snapshot_head => {
                return Err(StoreError::CommitConflict(format!(
                    "the region's watermark {} is past the snapshot's head {}",
                    current.seq, r.snapshot_head
                )))
            }
            _ => {}
        }
        if let Some(after) = r.truncate_log_after {
            truncate_log(self.backend, &mut tx, after).await?;
        }
        let now = now_ms();
        let replaced: Vec<&str> = r.catalogs.iter().map(|c| c.catalog.id.as_str()).collect();
        for id in replaced
            .iter()
            .copied()
            .chain(r.remove_catalogs.iter().map(String::as_str))
        {
            sqlx::query(
                "DELETE FROM retired_locations WHERE table_id IN \
                 (SELECT id FROM tables WHERE catalog_id = $1)",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM tables WHERE catalog_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM namespaces WHERE catalog_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        for id in &r.remove_catalogs {
            sqlx::query("DELETE FROM catalogs WHERE id = $1")
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        for state in &r.catalogs {
            ensure_catalog(&mut tx, state, now).await?;
            for ns in &state.namespaces {
                let joined = join_namespace(&ns.name)?;
                let parent = join_namespace(&ns.name[..ns.name.len() - 1]).unwrap_or_default();
                sqlx::query(
                    "INSERT INTO namespaces (catalog_id, name, parent, properties, created_ms, \
                     updated_ms) VALUES ($1, $2, $3, $4, $5, $5)",
                )
                .bind(state.catalog.id.as_str())
                .bind(joined)
                .bind(parent)
                .bind(properties_to_json(&ns.properties)?)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            for t in &state.tables {
                sqlx::query(
                    "INSERT INTO tables (id, catalog_id, namespace, name, kind, \
                     metadata_location, version, created_ms, updated_ms, location) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)",
                )
                .bind(t.id.as_str())
                .bind(state.catalog.id.as_str())
                .bind(join_namespace(&t.namespace)?)
                .bind(t.name.as_str())
                .bind(t.kind.as_str())
                .bind(t.metadata_location.as_str())
                .bind(t.version)
                .bind(now)
                .bind(t.location.as_str())
                .execute(&mut *tx)
                .await?;
            }
        }
        for id in &r.remove_warehouses {
            sqlx::query(
                "DELETE FROM warehouses WHERE id = $1 \
                 AND NOT EXISTS (SELECT 1 FROM catalogs WHERE warehouse_id = $1)",
            )
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        }
        for id in &r.remove_tenants {
            sqlx::query(
                "DELETE FROM tenants WHERE id = $1 \
                 AND NOT EXISTS (SELECT 1 FROM catalogs WHERE tenant_id = $1) \
                 AND NOT EXISTS (SELECT 1 FROM warehouses WHERE tenant_id = $1)",
            )
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        }
        let after = state_row(self.backend, &mut tx, false).await?;
        if r.snapshot_head > after.seq {
            for id in replaced
                .iter()
                .copied()
                .chain(r.remove_catalogs.iter().map(String::as_str))
            {
                sqlx::query(
                    "INSERT INTO replication_resync_floor (catalog_id, seq) VALUES ($1, $2) \
                     ON CONFLICT (catalog_id) DO UPDATE SET seq = excluded.seq",
                )
                .bind(id)
                .bind(r.snapshot_head)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(after)
    }

    async fn resync_floors(&self) -> Result<HashMap<String, i64>> {
        let rows = sqlx::query("SELECT catalog_id, seq FROM replication_resync_floor")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("catalog_id")?, r.try_get("seq")?)))
            .collect()
    }

    async fn add_quarantine(&self, entries: &[QuarantineEntry]) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let mut added = 0;
        for e in entries {
            let entry = serde_json::to_string(e)
                .map_err(|e| StoreError::Invalid(format!("quarantine entry: {e}")))?;
            added += sqlx::query(
                "INSERT INTO replication_quarantine (seq, epoch, catalog_id, detected_ms, entry) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (seq, epoch) DO NOTHING",
            )
            .bind(e.seq)
            .bind(e.epoch)
            .bind(e.catalog_id.as_deref())
            .bind(now_ms())
            .bind(entry)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(added)
    }

    async fn list_quarantine(&self) -> Result<Vec<QuarantineEntry>> {
        let rows = sqlx::query("SELECT entry FROM replication_quarantine ORDER BY seq, epoch")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get("entry")?;
                serde_json::from_str(&text)
                    .map_err(|e| StoreError::Invalid(format!("unreadable quarantine entry: {e}")))
            })
            .collect()
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
}

fn namespace_from_row(catalog_id: &str, row: &AnyRow) -> Result<NamespaceRecord> {
    let name: String = row.try_get("name")?;
    let properties: String = row.try_get("properties")?;
    Ok(NamespaceRecord {
        catalog_id: catalog_id.to_string(),
        name: split_namespace(&name),
        properties: properties_from_json(&properties)?,
    })
}

/// Removes the log's records after `after` and puts the watermark and the seq counter back
/// to it, so the next record (applied or committed here) is `after + 1`.
async fn truncate_log(backend: Backend, conn: &mut AnyConnection, after: i64) -> Result<()> {
    sqlx::query("DELETE FROM change_log WHERE seq > $1")
        .bind(after)
        .execute(&mut *conn)
        .await?;
    let last = sqlx::query(
        "SELECT seq, epoch, created_ms FROM change_log WHERE seq <= $1 ORDER BY seq DESC LIMIT 1",
    )
    .bind(after)
    .fetch_optional(&mut *conn)
    .await?;
    let (seq, epoch, created) = match last {
        Some(r) => (
            r.try_get::<i64, _>("seq")?,
            r.try_get::<i64, _>("epoch")?,
            r.try_get::<i64, _>("created_ms")?,
        ),
        None => (0, 0, 0),
    };
    sqlx::query(
        "UPDATE replication_state SET watermark = $1, watermark_epoch = $2, \
         record_created_ms = $3 WHERE id = 1",
    )
    .bind(seq)
    .bind(epoch)
    .bind(created)
    .execute(&mut *conn)
    .await?;
    match backend {
        Backend::Sqlite => {
            sqlx::query("UPDATE sqlite_sequence SET seq = $1 WHERE name = 'change_log'")
                .bind(seq)
                .execute(&mut *conn)
                .await?;
        }
        Backend::Postgres => {
            sqlx::query("UPDATE change_log_head SET seq = $1 WHERE id = 1")
                .bind(seq)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// Creates the catalog's tenant, warehouse and catalog rows where missing (same ids) and
/// brings an existing catalog row to the other region's properties.
async fn ensure_catalog(conn: &mut AnyConnection, state: &CatalogState, now: i64) -> Result<()> {
    let t = &state.tenant;
    let found: Option<String> = sqlx::query_scalar("SELECT name FROM tenants WHERE id = $1")
        .bind(t.id.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    if found.is_none() {
        insert_tenant(conn, t, now)
            .await
            .map_err(|e| conflict("tenant", &t.name, e))?;
    }
    let w = &state.warehouse;
    let found = sqlx::query("SELECT id FROM warehouses WHERE id = $1")
        .bind(w.id.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    if found.is_none() {
        insert_warehouse(conn, w, now)
            .await
            .map_err(|e| conflict("warehouse", &w.name, e))?;
    }
    let c = &state.catalog;
    let found = sqlx::query(
        "SELECT id, tenant_id, warehouse_id, name, properties FROM catalogs WHERE id = $1",
    )
    .bind(c.id.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    match found {
        Some(row) if catalog_from_row(&row)? == *c => {}
        Some(_) => {
            sqlx::query(
                "UPDATE catalogs SET tenant_id = $1, warehouse_id = $2, name = $3, \
                 properties = $4 WHERE id = $5",
            )
            .bind(c.tenant_id.as_str())
            .bind(c.warehouse_id.as_str())
            .bind(c.name.as_str())
            .bind(properties_to_json(&c.properties)?)
            .bind(c.id.as_str())
            .execute(&mut *conn)
            .await
            .map_err(|e| conflict("catalog", &c.name, e))?;
        }
        None => {
            insert_catalog(conn, c, properties_to_json(&c.properties)?, now)
                .await
                .map_err(|e| conflict("catalog", &c.name, e))?;
        }
    }
    Ok(())
}

/// A row of another region that collides with a different row of this one (same name,
/// other id): the regions diverged beyond what a resync of the catalog repairs.
fn conflict(what: &str, name: &str, e: sqlx::Error) -> StoreError {
    StoreError::Invalid(format!(
        "cannot take over {what} {name} from the primary: {e} (a {what} of that name with \
         another id exists here)"
    ))
}
