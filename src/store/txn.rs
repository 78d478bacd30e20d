//! The write transaction: every fenced, logged change to catalog state goes through a
//! [`StoreTxn`], so a caller can compose several mutations into one atomic write.
//!
//! What a caller may rely on:
//! - The fencing epoch was checked once, when the transaction began
//!   ([`MetadataStore::begin`](super::MetadataStore::begin)), and cannot change before it
//!   ends: a commit never lands under an epoch other than the one it was begun with.
//! - Each successful mutation's change record is appended in the same transaction, in the
//!   order of the mutations; when there are several, each carries its [`TxnPosition`] so a
//!   replica applies them together.
//! - [`StoreTxn::commit`] makes every mutation and its record durable at once. Dropping the
//!   transaction without committing writes nothing, not even a change-log seq.
//! - A mutation that fails leaves the transaction unusable: later mutations and the commit
//!   are refused with `Invalid`, and the only way on is to drop it and begin another (the
//!   failed mutation may have written part of itself, and on PostgreSQL a failed statement
//!   aborts the whole transaction anyway).
//!
//! Mutations see the transaction's own earlier writes (a namespace created first can be
//! the parent of the next). While a transaction is open it holds a write connection (on
//! SQLite, the only one), so keep it short and do no network IO while holding it.
//!
//! [`TxnPosition`]: super::TxnPosition

use std::collections::HashMap;

use async_trait::async_trait;

use super::{
    Catalog, DroppedEntity, EntityKind, NamespaceRecord, PointerSwap, PropertiesUpdate, Result,
    TableRecord, Tenant, Warehouse,
};

/// An open write transaction of the metadata store; see the module docs.
#[async_trait]
pub trait StoreTxn: Send {
    /// AlreadyExists when a tenant of that name exists.
    async fn create_tenant(&mut self, name: &str) -> Result<Tenant>;
    /// NotFound(Tenant) when the tenant is missing; AlreadyExists when it has a warehouse of
    /// that name.
    async fn create_warehouse(
        &mut self,
        tenant_id: &str,
        name: &str,
        bucket: &str,
        key_prefix: &str,
    ) -> Result<Warehouse>;
    /// NotFound(Tenant), NotFound(Warehouse) when the warehouse is missing or belongs to
    /// another tenant; AlreadyExists when the tenant has a catalog of that name.
    async fn create_catalog(
        &mut self,
        tenant_id: &str,
        warehouse_id: &str,
        name: &str,
        properties: &HashMap<String, String>,
    ) -> Result<Catalog>;

    /// The namespace as this transaction sees it (its own writes included).
    async fn get_namespace(
        &mut self,
        catalog_id: &str,
        name: &[String],
    ) -> Result<Option<NamespaceRecord>>;
    /// Fails with NotFound(Namespace(parent)) when a nested namespace's parent is missing,
    /// NotFound(Catalog) when a top-level namespace's catalog is, AlreadyExists when the
    /// namespace exists.
    async fn create_namespace(
        &mut self,
        catalog_id: &str,
        name: &[String],
        properties: &HashMap<String, String>,
    ) -> Result<NamespaceRecord>;
    /// NamespaceNotEmpty when it holds tables, views or child namespaces.
    async fn drop_namespace(&mut self, catalog_id: &str, name: &[String]) -> Result<()>;
    /// Removes `removals` and sets `updates` (a key in both is `Invalid`); the change record
    /// carries the whole property map afterwards.
    async fn update_namespace_properties(
        &mut self,
        catalog_id: &str,
        name: &[String],
        removals: &[String],
        updates: &HashMap<String, String>,
    ) -> Result<PropertiesUpdate>;

    /// Creates a table or view at version 1. AlreadyExists when a table OR view of that name
    /// exists; NotFound(Namespace) when the namespace is missing; LocationConflict when
    /// `location` equals, contains or lies inside a location another live entity owns
    /// (checked in this transaction, so two concurrent creates cannot both claim one). An
    /// empty `location` claims nothing.
    async fn create_entity(
        &mut self,
        catalog_id: &str,
        namespace: &[String],
        name: &str,
        kind: EntityKind,
        metadata_location: &str,
        location: &str,
    ) -> Result<TableRecord>;
    /// Moves every pointer or fails: each swap compares the version (`CommitConflict` when
    /// any moved) and bumps it; a swap with a new location claims it and keeps the old one as
    /// retired. Returns the new records in input order.
    async fn commit_tables(&mut self, swaps: &[PointerSwap]) -> Result<Vec<TableRecord>>;
    /// Removes the entity of `kind` (NotFound(Table|View) otherwise) with its retired
    /// locations, and returns them. Its change record says whether the files are purged
    /// (`"purge": true`), so that other regions purge their copies.
    async fn drop_entity(
        &mut self,
        catalog_id: &str,
        namespace: &[String],
        name: &str,
        kind: EntityKind,
        purge: bool,
    ) -> Result<DroppedEntity>;
    /// NotFound(Table|View) for the source, NotFound(Namespace) for a missing destination
    /// namespace, AlreadyExists when the destination name is taken by a table or a view.
    async fn rename_entity(
        &mut self,
        catalog_id: &str,
        from_namespace: &[String],
        from_name: &str,
        to_namespace: &[String],
        to_name: &str,
        kind: EntityKind,
    ) -> Result<TableRecord>;

    /// Appends the change records and commits. Refused (`Invalid`, nothing written) after a
    /// failed mutation.
    async fn commit(self: Box<Self>) -> Result<()>;
}
