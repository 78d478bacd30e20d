//! The mutations of tables and views in a [`SqlTxn`]: create (with its location claim),
//! pointer swaps (with `set-location` moves), drop (releasing retired locations) and rename.

use std::collections::HashSet;

use serde_json::{json, Value};
use sqlx::error::ErrorKind;
use sqlx::AnyConnection;

use super::super::{
    check_name, entity_exists, entity_not_found, ident, is_violation, join_namespace, kind_title,
    locations, namespace_exists, namespace_not_found, new_id, on_unique, parse_kind,
    table_from_row, table_payload,
};
use super::SqlTxn;
use crate::store::{DroppedEntity, EntityKind, PointerSwap, Result, StoreError, TableRecord};

impl SqlTxn {
    pub(super) async fn create_entity_row(
        &mut self,
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
        // The foreign key to the namespace row keeps a concurrent drop_namespace out.
        if !namespace_exists(self.backend, &mut self.tx, catalog_id, &joined, false).await? {
            return Err(namespace_not_found(namespace));
        }
        if let Some(existing) = entity_kind(&mut self.tx, catalog_id, &joined, name).await? {
            return Err(entity_exists(kind, existing, &ident));
        }
        locations::check_claim(self.backend, &mut self.tx, &record.id, location).await?;
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
        .bind(self.now)
        .bind(location)
        .execute(&mut *self.tx)
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
        self.log(Some(catalog_id), "create_table", table_payload(&record));
        Ok(record)
    }

    pub(super) async fn swap_pointers(
        &mut self,
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
        let mut records = Vec::with_capacity(swaps.len());
        for index in order {
            let swap = &swaps[index];
            self.move_location(swap).await?;
            let row = sqlx::query(concat!(
                "UPDATE tables SET version = version + 1, metadata_location = $1, updated_ms = $2 \
                 WHERE id = $3 AND version = $4 RETURNING ",
                table_columns!()
            ))
            .bind(swap.new_metadata_location.as_str())
            .bind(self.now)
            .bind(swap.table_id.as_str())
            .bind(swap.expected_version)
            .fetch_optional(&mut *self.tx)
            .await?;
            match row {
                Some(row) => records.push((index, table_from_row(&row)?)),
                None => return Err(swap_conflict(&mut self.tx, swap).await?),
            }
        }
        records.sort_by_key(|(index, _)| *index);
        let records: Vec<TableRecord> = records.into_iter().map(|(_, record)| record).collect();
        // Logged after every swap succeeded: a conflict logs nothing.
        let txn_count = records.len();
        for (txn_index, record) in records.iter().enumerate() {
            let mut payload = table_payload(record);
            payload["txn_index"] = json!(txn_index);
            payload["txn_count"] = json!(txn_count);
            self.log(Some(&record.catalog_id), "commit_table", payload);
        }
        Ok(records)
    }

    /// A swap that moves its entity (`set-location`): claims the new location and keeps the
    /// old one as retired.
    async fn move_location(&mut self, swap: &PointerSwap) -> Result<()> {
        let Some(new_location) = &swap.new_location else {
            return Ok(());
        };
        let current: Option<String> =
            sqlx::query_scalar("SELECT location FROM tables WHERE id = $1")
                .bind(swap.table_id.as_str())
                .fetch_optional(&mut *self.tx)
                .await?;
        let Some(old) = current.filter(|current| current != new_location) else {
            return Ok(());
        };
        locations::check_claim(self.backend, &mut self.tx, &swap.table_id, new_location).await?;
        locations::retire(&mut self.tx, &swap.table_id, &old).await?;
        sqlx::query("UPDATE tables SET location = $1 WHERE id = $2")
            .bind(new_location.as_str())
            .bind(swap.table_id.as_str())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub(super) async fn drop_entity_row(
        &mut self,
        catalog_id: &str,
        namespace: &[String],
        name: &str,
        kind: EntityKind,
        purge: bool,
    ) -> Result<DroppedEntity> {
        let joined = join_namespace(namespace)?;
        let row = sqlx::query(concat!(
            "DELETE FROM tables WHERE catalog_id = $1 AND namespace = $2 AND name = $3 \
             AND kind = $4 RETURNING ",
            table_columns!()
        ))
        .bind(catalog_id)
        .bind(joined)
        .bind(name)
        .bind(kind.as_str())
        .fetch_optional(&mut *self.tx)
        .await?;
        let Some(row) = row else {
            return Err(entity_not_found(kind, namespace, name));
        };
        let record = table_from_row(&row)?;
        let retired_locations = locations::release(&mut self.tx, &record.id).await?;
        let mut payload = table_payload(&record);
        if purge {
            payload["purge"] = Value::Bool(true);
        }
        if !retired_locations.is_empty() {
            payload["retired_locations"] = json!(retired_locations);
        }
        self.log(Some(catalog_id), "drop_table", payload);
        Ok(DroppedEntity {
            record,
            retired_locations,
        })
    }

    pub(super) async fn rename_entity_row(
        &mut self,
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
            .fetch_optional(&mut *self.tx)
            .await?;
        let Some(row) = row else {
            return Err(entity_not_found(kind, from_namespace, from_name));
        };
        let mut record = table_from_row(&row)?;
        // The foreign key to the destination namespace keeps a concurrent drop out.
        if !namespace_exists(self.backend, &mut self.tx, catalog_id, &to_joined, false).await? {
            return Err(namespace_not_found(to_namespace));
        }
        if let Some(existing) = entity_kind(&mut self.tx, catalog_id, &to_joined, to_name).await? {
            return Err(entity_exists(kind, existing, &to_ident));
        }
        sqlx::query("UPDATE tables SET namespace = $1, name = $2, updated_ms = $3 WHERE id = $4")
            .bind(to_joined.as_str())
            .bind(to_name)
            .bind(self.now)
            .bind(record.id.as_str())
            .execute(&mut *self.tx)
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
        self.log(Some(catalog_id), "rename_table", payload);
        Ok(record)
    }
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
