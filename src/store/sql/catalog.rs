//! Reads of the catalog's entities on [`SqlStore`] ([`CatalogStore`]): point reads by name or
//! id on the read pool (`get_table` is the loadTable hot path: one indexed read), and keyset
//! pages of namespaces and entities.

use async_trait::async_trait;
use sqlx::Row;

use super::{
    catalog_from_row, join_namespace, namespace_exists, namespace_not_found, properties_from_json,
    split_namespace, table_from_row, warehouse_from_row, SqlStore,
};
use crate::store::{
    Catalog, CatalogStore, EntityKind, NamespaceRecord, Page, PageRequest, Result, StoreError,
    TableRecord, Tenant, Warehouse,
};

#[async_trait]
impl CatalogStore for SqlStore {
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
                if !namespace_exists(self.backend, &mut conn, catalog_id, &joined, false).await? {
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

    async fn get_table_by_id(&self, id: &str) -> Result<Option<TableRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            table_columns!(),
            " FROM tables WHERE id = $1"
        ))
        .bind(id)
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
        if !namespace_exists(self.backend, &mut conn, catalog_id, &joined, false).await? {
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
