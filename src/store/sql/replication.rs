//! The replication side of [`SqlStore`]: region-local bootstrap with given ids, the
//! watermark, and applying change records committed by another region.
//!
//! # One log for the deployment
//! `apply_replicated` appends every applied record to this region's `change_log` under the
//! primary's seq, in the transaction that applies it. So each region's log is a copy of the
//! primary's up to its watermark, the watermark is simply the log's last seq, and after a
//! switchover the new primary continues the same sequence (SQLite's `AUTOINCREMENT` counter
//! follows explicit inserts; PostgreSQL's `change_log_head` row is raised here).
//!
//! # Applying
//! Each change is re-applied with the primary's ids, checked against the state the primary
//! had before it: a commit must find its table at the version before, a create must find
//! its name free, a drop must find its row. An identical row already in place counts as
//! applied (e.g. bootstrap rows, which every region creates itself with the same ids).
//! Anything else means the regions diverged: an error, and nothing of the batch is written.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::error::ErrorKind;
use sqlx::{AnyConnection, Row};

use super::{
    catalog_from_row, check_name, decode_error, ident, insert_catalog, insert_tenant,
    insert_warehouse, is_violation, join_namespace, properties_from_json, properties_to_json,
    table_from_row, warehouse_from_row, Backend, SqlStore,
};
use crate::clock::now_ms;
use crate::store::{
    ApplyOutcome, BootstrapEntities, Catalog, Change, ChangeRecord, NamespaceRecord,
    ReplicationLog, ReplicationWatermark, Result, StoreError, TableRecord, Tenant, Warehouse,
};

/// The error for a change that does not fit this region's state.
fn diverged(seq: i64, message: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid(format!(
        "replicated change {seq} does not apply to this region's state (regions diverged): {message}"
    ))
}

/// The log's last record: (seq, epoch, created_ms).
async fn last_logged(conn: &mut AnyConnection) -> Result<Option<(i64, i64, i64)>> {
    let row =
        sqlx::query("SELECT seq, epoch, created_ms FROM change_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(conn)
            .await?;
    row.map(|r| {
        Ok((
            r.try_get("seq")?,
            r.try_get("epoch")?,
            r.try_get("created_ms")?,
        ))
    })
    .transpose()
}

/// The replication_state row, locked on PostgreSQL when `lock` (serializes appliers).
pub(super) async fn state_row(
    backend: Backend,
    conn: &mut AnyConnection,
    lock: bool,
) -> Result<ReplicationWatermark> {
    let sql = if lock {
        locked!(
            backend,
            "SELECT watermark, watermark_epoch, record_created_ms, applied_ms, \
             CAST(paused AS BIGINT) AS paused FROM replication_state WHERE id = 1",
            "FOR UPDATE"
        )
    } else {
        "SELECT watermark, watermark_epoch, record_created_ms, applied_ms, \
         CAST(paused AS BIGINT) AS paused FROM replication_state WHERE id = 1"
    };
    let row = sqlx::query(sql).fetch_one(&mut *conn).await?;
    let paused: i64 = row.try_get("paused")?;
    let mut w = ReplicationWatermark {
        seq: row.try_get("watermark")?,
        epoch: row.try_get("watermark_epoch")?,
        created_ms: row.try_get("record_created_ms")?,
        applied_ms: row.try_get("applied_ms")?,
        paused: paused != 0,
    };
    // Records committed here (while primary) are in the log, not in the state row.
    if let Some((seq, epoch, created_ms)) = last_logged(conn).await? {
        if seq > w.seq {
            w.seq = seq;
            w.epoch = epoch;
            w.created_ms = created_ms;
        }
    }
    Ok(w)
}

#[async_trait]
impl ReplicationLog for SqlStore {
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

    async fn bootstrap(&self, wanted: &BootstrapEntities) -> Result<BootstrapEntities> {
        check_name("tenant", &wanted.tenant.name)?;
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT id, name FROM tenants WHERE name = $1")
            .bind(wanted.tenant.name.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let tenant = match row {
            Some(row) => Tenant {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
            },
            None => {
                insert_tenant(&mut tx, &wanted.tenant, now).await?;
                wanted.tenant.clone()
            }
        };
        let warehouse = match &wanted.warehouse {
            None => None,
            Some(w) => {
                check_name("warehouse", &w.name)?;
                let row = sqlx::query(
                    "SELECT id, tenant_id, name, bucket, key_prefix FROM warehouses \
                     WHERE tenant_id = $1 AND name = $2",
                )
                .bind(tenant.id.as_str())
                .bind(w.name.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                Some(match row {
                    Some(row) => warehouse_from_row(&row)?,
                    None => {
                        let w = Warehouse {
                            tenant_id: tenant.id.clone(),
                            ..w.clone()
                        };
                        insert_warehouse(&mut tx, &w, now).await?;
                        w
                    }
                })
            }
        };
        let catalog = match &wanted.catalog {
            None => None,
            Some(c) => {
                check_name("catalog", &c.name)?;
                let row = sqlx::query(
                    "SELECT id, tenant_id, warehouse_id, name, properties FROM catalogs \
                     WHERE tenant_id = $1 AND name = $2",
                )
                .bind(tenant.id.as_str())
                .bind(c.name.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                Some(match row {
                    Some(row) => catalog_from_row(&row)?,
                    None => {
                        let c = Catalog {
                            tenant_id: tenant.id.clone(),
                            warehouse_id: warehouse
                                .as_ref()
                                .map_or_else(|| c.warehouse_id.clone(), |w| w.id.clone()),
                            ..c.clone()
                        };
                        insert_catalog(&mut tx, &c, properties_to_json(&c.properties)?, now)
                            .await?;
                        c
                    }
                })
            }
        };
        tx.commit().await?;
        Ok(BootstrapEntities {
            tenant,
            warehouse,
            catalog,
        })
    }

    async fn replication_watermark(&self) -> Result<ReplicationWatermark> {
        let mut conn = self.read.acquire().await?;
        state_row(self.backend, &mut conn, false).await
    }

    async fn set_replication_paused(&self, paused: bool) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE replication_state SET paused = $1 WHERE id = 1")
            .bind(i32::from(paused))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn apply_replicated(&self, records: &[ChangeRecord]) -> Result<ApplyOutcome> {
        if records.windows(2).any(|w| w[0].seq >= w[1].seq) {
            return Err(StoreError::Invalid(
                "replicated records must be in ascending seq order".into(),
            ));
        }
        let mut tx = self.begin_write().await?;
        let current = state_row(self.backend, &mut tx, true).await?;
        let Some(last) = records.last() else {
            return Ok(ApplyOutcome::AlreadyApplied {
                watermark: current.seq,
            });
        };
        if last.seq <= current.seq {
            return Ok(ApplyOutcome::AlreadyApplied {
                watermark: current.seq,
            });
        }
        // Another applier (a second node of the region) may have applied a prefix: apply
        // the rest. Appliers apply whole transactions, so the watermark is at a boundary.
        let records: Vec<&ChangeRecord> = records.iter().filter(|r| r.seq > current.seq).collect();
        let changes = records
            .iter()
            .map(|r| r.decode().map_err(StoreError::Invalid))
            .collect::<Result<Vec<Change>>>()?;
        // The fence first: same lock order as local commits (fence, rows, log head).
        let epoch = records.iter().map(|r| r.epoch).max().unwrap_or(0);
        sqlx::query("UPDATE fence SET epoch = $1 WHERE id = 1 AND epoch < $1")
            .bind(epoch)
            .execute(&mut *tx)
            .await?;
        // Catalogs rebuilt by a resync reflect their records up to the floor already.
        let floors: HashMap<String, i64> =
            sqlx::query("SELECT catalog_id, seq FROM replication_resync_floor")
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| Ok((r.try_get("catalog_id")?, r.try_get("seq")?)))
                .collect::<Result<_>>()?;
        for (record, change) in records.iter().copied().zip(&changes) {
            let reflected = record
                .catalog_id
                .as_ref()
                .and_then(|c| floors.get(c))
                .is_some_and(|floor| record.seq <= *floor);
            if !reflected {
                apply_change(&mut tx, record, change).await?;
            }
            sqlx::query(
                "INSERT INTO change_log (seq, epoch, catalog_id, op, payload, actor, created_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(record.seq)
            .bind(record.epoch)
            .bind(record.catalog_id.as_deref())
            .bind(record.op.as_str())
            .bind(record.payload.to_string())
            .bind(record.actor.as_str())
            .bind(record.created_ms)
            .execute(&mut *tx)
            .await?;
        }
        if self.backend == Backend::Postgres {
            sqlx::query("UPDATE change_log_head SET seq = $1 WHERE id = 1 AND seq < $1")
                .bind(last.seq)
                .execute(&mut *tx)
                .await?;
        }
        if !floors.is_empty() {
            sqlx::query("DELETE FROM replication_resync_floor WHERE seq <= $1")
                .bind(last.seq)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "UPDATE replication_state SET watermark = $1, watermark_epoch = $2, \
             record_created_ms = $3, applied_ms = $4 WHERE id = 1",
        )
        .bind(last.seq)
        .bind(last.epoch)
        .bind(last.created_ms)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ApplyOutcome::Applied {
            watermark: last.seq,
        })
    }
}

/// Maps a constraint violation that raced past the checks to a divergence error.
fn constraint(seq: i64, what: &str) -> impl FnOnce(sqlx::Error) -> StoreError + '_ {
    move |e| {
        if is_violation(&e, ErrorKind::UniqueViolation)
            || is_violation(&e, ErrorKind::ForeignKeyViolation)
        {
            diverged(seq, format!("{what}: {e}"))
        } else {
            StoreError::Database(e)
        }
    }
}

async fn table_row(conn: &mut AnyConnection, id: &str) -> Result<Option<TableRecord>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        table_columns!(),
        " FROM tables WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(table_from_row).transpose()
}

async fn namespace_properties(
    conn: &mut AnyConnection,
    catalog_id: &str,
    joined: &str,
) -> Result<Option<HashMap<String, String>>> {
    let p: Option<String> =
        sqlx::query_scalar("SELECT properties FROM namespaces WHERE catalog_id = $1 AND name = $2")
            .bind(catalog_id)
            .bind(joined)
            .fetch_optional(conn)
            .await?;
    p.as_deref().map(properties_from_json).transpose()
}

/// The id of the table or view named so, if any.
async fn entity_id(
    conn: &mut AnyConnection,
    catalog_id: &str,
    joined: &str,
    name: &str,
) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM tables WHERE catalog_id = $1 AND namespace = $2 AND name = $3",
    )
    .bind(catalog_id)
    .bind(joined)
    .bind(name)
    .fetch_optional(conn)
    .await?)
}

async fn apply_change(
    conn: &mut AnyConnection,
    record: &ChangeRecord,
    change: &Change,
) -> Result<()> {
    let seq = record.seq;
    let at = record.created_ms;
    match change {
        Change::CreateTenant(t) => {
            let rows = sqlx::query("SELECT id, name FROM tenants WHERE id = $1 OR name = $2")
                .bind(t.id.as_str())
                .bind(t.name.as_str())
                .fetch_all(&mut *conn)
                .await?;
            if let Some(row) = rows.first() {
                let found = Tenant {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                };
                if found == *t && rows.len() == 1 {
                    return Ok(());
                }
                return Err(diverged(
                    seq,
                    format!(
                        "tenant {} ({}) vs here {} ({})",
                        t.name, t.id, found.name, found.id
                    ),
                ));
            }
            insert_tenant(conn, t, at)
                .await
                .map_err(constraint(seq, "tenant"))?;
        }
        Change::CreateWarehouse(w) => {
            let rows = sqlx::query(
                "SELECT id, tenant_id, name, bucket, key_prefix FROM warehouses \
                 WHERE id = $1 OR (tenant_id = $2 AND name = $3)",
            )
            .bind(w.id.as_str())
            .bind(w.tenant_id.as_str())
            .bind(w.name.as_str())
            .fetch_all(&mut *conn)
            .await?;
            if let Some(row) = rows.first() {
                let found = warehouse_from_row(row)?;
                if found == *w && rows.len() == 1 {
                    return Ok(());
                }
                return Err(diverged(
                    seq,
                    format!(
                        "warehouse {} ({}) vs here {} ({})",
                        w.name, w.id, found.name, found.id
                    ),
                ));
            }
            insert_warehouse(conn, w, at)
                .await
                .map_err(constraint(seq, "warehouse (its tenant is missing here?)"))?;
        }
        Change::CreateCatalog(c) => {
            let rows = sqlx::query(
                "SELECT id, tenant_id, warehouse_id, name, properties FROM catalogs \
                 WHERE id = $1 OR (tenant_id = $2 AND name = $3)",
            )
            .bind(c.id.as_str())
            .bind(c.tenant_id.as_str())
            .bind(c.name.as_str())
            .fetch_all(&mut *conn)
            .await?;
            if let Some(row) = rows.first() {
                let found = catalog_from_row(row)?;
                if found == *c && rows.len() == 1 {
                    return Ok(());
                }
                return Err(diverged(
                    seq,
                    format!(
                        "catalog {} ({}) vs here {} ({}); every region's [bootstrap] must match",
                        c.name, c.id, found.name, found.id
                    ),
                ));
            }
            insert_catalog(conn, c, properties_to_json(&c.properties)?, at)
                .await
                .map_err(constraint(
                    seq,
                    "catalog (its tenant or warehouse is missing here?)",
                ))?;
        }
        Change::CreateNamespace(n) => create_namespace(conn, seq, at, n).await?,
        Change::UpdateNamespaceProperties(n) => {
            let joined = join_namespace(&n.name)?;
            let updated = sqlx::query(
                "UPDATE namespaces SET properties = $1, updated_ms = $2 \
                 WHERE catalog_id = $3 AND name = $4",
            )
            .bind(properties_to_json(&n.properties)?)
            .bind(at)
            .bind(n.catalog_id.as_str())
            .bind(joined.as_str())
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if updated == 0 {
                return Err(diverged(
                    seq,
                    format!("namespace {} does not exist here", n.name.join(".")),
                ));
            }
        }
        Change::DropNamespace {
            catalog_id,
            namespace,
        } => {
            let joined = join_namespace(namespace)?;
            let child = sqlx::query(
                "SELECT 1 FROM namespaces WHERE catalog_id = $1 AND parent = $2 LIMIT 1",
            )
            .bind(catalog_id.as_str())
            .bind(joined.as_str())
            .fetch_optional(&mut *conn)
            .await?;
            let entity = sqlx::query(
                "SELECT 1 FROM tables WHERE catalog_id = $1 AND namespace = $2 LIMIT 1",
            )
            .bind(catalog_id.as_str())
            .bind(joined.as_str())
            .fetch_optional(&mut *conn)
            .await?;
            if child.is_some() || entity.is_some() {
                return Err(diverged(
                    seq,
                    format!("namespace {} is not empty here", namespace.join(".")),
                ));
            }
            let deleted = sqlx::query("DELETE FROM namespaces WHERE catalog_id = $1 AND name = $2")
                .bind(catalog_id.as_str())
                .bind(joined.as_str())
                .execute(&mut *conn)
                .await
                .map_err(constraint(seq, "namespace"))?
                .rows_affected();
            if deleted == 0 {
                return Err(diverged(
                    seq,
                    format!("namespace {} does not exist here", namespace.join(".")),
                ));
            }
        }
        Change::CreateTable(t) => {
            let joined = join_namespace(&t.namespace)?;
            if let Some(found) = table_row(conn, &t.id).await? {
                if found.same_row(t) {
                    return Ok(());
                }
                return Err(diverged(
                    seq,
                    format!(
                        "{} {} already exists here as {found:?}",
                        t.kind.as_str(),
                        t.id
                    ),
                ));
            }
            if namespace_properties(conn, &t.catalog_id, &joined)
                .await?
                .is_none()
            {
                return Err(diverged(
                    seq,
                    format!("namespace {} does not exist here", t.namespace.join(".")),
                ));
            }
            if let Some(other) = entity_id(conn, &t.catalog_id, &joined, &t.name).await? {
                return Err(diverged(
                    seq,
                    format!(
                        "{} is taken here by entity {other}",
                        ident(&t.namespace, &t.name)
                    ),
                ));
            }
            sqlx::query(
                "INSERT INTO tables (id, catalog_id, namespace, name, kind, metadata_location, \
                 version, created_ms, updated_ms, location) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)",
            )
            .bind(t.id.as_str())
            .bind(t.catalog_id.as_str())
            .bind(joined.as_str())
            .bind(t.name.as_str())
            .bind(t.kind.as_str())
            .bind(t.metadata_location.as_str())
            .bind(t.version)
            .bind(at)
            .bind(t.location.as_str())
            .execute(&mut *conn)
            .await
            .map_err(constraint(seq, "table"))?;
        }
        Change::CommitTable(t) => {
            let joined = join_namespace(&t.namespace)?;
            // A commit that moved the entity (`set-location`): it keeps owning the old one.
            if !t.location.is_empty() {
                if let Some(found) = table_row(conn, &t.id).await? {
                    if found.version == t.version - 1 && found.location != t.location {
                        super::locations::retire(conn, &t.id, &found.location).await?;
                        sqlx::query("UPDATE tables SET location = $1 WHERE id = $2")
                            .bind(t.location.as_str())
                            .bind(t.id.as_str())
                            .execute(&mut *conn)
                            .await?;
                    }
                }
            }
            let updated = sqlx::query(
                "UPDATE tables SET metadata_location = $1, version = $2, updated_ms = $3 \
                 WHERE id = $4 AND version = $5 AND kind = $6 AND catalog_id = $7 \
                 AND namespace = $8 AND name = $9",
            )
            .bind(t.metadata_location.as_str())
            .bind(t.version)
            .bind(at)
            .bind(t.id.as_str())
            .bind(t.version - 1)
            .bind(t.kind.as_str())
            .bind(t.catalog_id.as_str())
            .bind(joined.as_str())
            .bind(t.name.as_str())
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if updated == 0 {
                return match table_row(conn, &t.id).await? {
                    Some(found) if found.same_row(t) => Ok(()),
                    Some(found) => Err(diverged(
                        seq,
                        format!(
                            "{} {} is at version {} ({}) here; the change moves it from version {} to {}",
                            t.kind.as_str(),
                            ident(&found.namespace, &found.name),
                            found.version,
                            found.metadata_location,
                            t.version - 1,
                            t.version
                        ),
                    )),
                    None => Err(diverged(
                        seq,
                        format!(
                            "{} {} ({}) does not exist here",
                            t.kind.as_str(),
                            ident(&t.namespace, &t.name),
                            t.id
                        ),
                    )),
                };
            }
        }
        Change::DropTable(t) => {
            super::locations::release(conn, &t.id).await?;
            let deleted = sqlx::query("DELETE FROM tables WHERE id = $1 AND kind = $2")
                .bind(t.id.as_str())
                .bind(t.kind.as_str())
                .execute(&mut *conn)
                .await?
                .rows_affected();
            if deleted == 0 {
                return Err(diverged(
                    seq,
                    format!(
                        "{} {} ({}) does not exist here",
                        t.kind.as_str(),
                        ident(&t.namespace, &t.name),
                        t.id
                    ),
                ));
            }
        }
        Change::RenameTable {
            record: t,
            from_namespace,
            from_name,
        } => {
            let from_joined = join_namespace(from_namespace)?;
            let to_joined = join_namespace(&t.namespace)?;
            match table_row(conn, &t.id).await? {
                Some(found) if found.same_row(t) => return Ok(()),
                Some(found)
                    if found.namespace == *from_namespace
                        && found.name == *from_name
                        && found.kind == t.kind => {}
                Some(found) => {
                    return Err(diverged(
                        seq,
                        format!(
                            "{} {} is named {} here, not {}",
                            t.kind.as_str(),
                            t.id,
                            ident(&found.namespace, &found.name),
                            ident(from_namespace, from_name)
                        ),
                    ))
                }
                None => {
                    return Err(diverged(
                        seq,
                        format!("{} {} does not exist here", t.kind.as_str(), t.id),
                    ))
                }
            }
            if namespace_properties(conn, &t.catalog_id, &to_joined)
                .await?
                .is_none()
            {
                return Err(diverged(
                    seq,
                    format!("namespace {} does not exist here", t.namespace.join(".")),
                ));
            }
            if let Some(other) = entity_id(conn, &t.catalog_id, &to_joined, &t.name).await? {
                return Err(diverged(
                    seq,
                    format!(
                        "{} is taken here by entity {other}",
                        ident(&t.namespace, &t.name)
                    ),
                ));
            }
            sqlx::query(
                "UPDATE tables SET namespace = $1, name = $2, updated_ms = $3 \
                 WHERE id = $4 AND namespace = $5 AND name = $6",
            )
            .bind(to_joined.as_str())
            .bind(t.name.as_str())
            .bind(at)
            .bind(t.id.as_str())
            .bind(from_joined.as_str())
            .bind(from_name.as_str())
            .execute(&mut *conn)
            .await
            .map_err(constraint(seq, "rename"))?;
        }
    }
    Ok(())
}

async fn create_namespace(
    conn: &mut AnyConnection,
    seq: i64,
    at: i64,
    n: &NamespaceRecord,
) -> Result<()> {
    let joined = join_namespace(&n.name)?;
    if let Some(found) = namespace_properties(conn, &n.catalog_id, &joined).await? {
        if found == n.properties {
            return Ok(());
        }
        return Err(diverged(
            seq,
            format!("namespace {} already exists here", n.name.join(".")),
        ));
    }
    let parent = &n.name[..n.name.len() - 1];
    let parent_joined = parent.join(&crate::store::NAMESPACE_SEPARATOR.to_string());
    if parent.is_empty() {
        let catalog = sqlx::query("SELECT 1 FROM catalogs WHERE id = $1")
            .bind(n.catalog_id.as_str())
            .fetch_optional(&mut *conn)
            .await?;
        if catalog.is_none() {
            return Err(diverged(
                seq,
                format!(
                    "catalog {} does not exist here; every region's [bootstrap] must match",
                    n.catalog_id
                ),
            ));
        }
    } else if namespace_properties(conn, &n.catalog_id, &parent_joined)
        .await?
        .is_none()
    {
        return Err(diverged(
            seq,
            format!("parent namespace {} does not exist here", parent.join(".")),
        ));
    }
    sqlx::query(
        "INSERT INTO namespaces (catalog_id, name, parent, properties, created_ms, updated_ms) \
         VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(n.catalog_id.as_str())
    .bind(joined.as_str())
    .bind(parent_joined.as_str())
    .bind(properties_to_json(&n.properties)?)
    .bind(at)
    .execute(&mut *conn)
    .await
    .map_err(constraint(seq, "namespace"))?;
    Ok(())
}
