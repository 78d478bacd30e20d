//! Views: create, load, list, replace (commit), drop, rename, register. View metadata files
//! are written to object storage like table metadata; a name is a table or a view.
//!
//! View metadata is built and changed with the `iceberg` crate's [`ViewMetadataBuilder`].
//! The commit path mirrors the tables' one: check the requirements, apply the updates, write
//! the next `NNNNN-<uuid>.metadata.json`, compare-and-swap the pointer in the store, and retry
//! a lost swap against the new metadata while the requirements still hold.

use std::collections::HashMap;

use bytes::Bytes;
use iceberg::spec::{Schema, ViewFormatVersion, ViewMetadata, ViewMetadataBuilder, ViewVersion};
use iceberg::ViewUpdate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::model::TableIdentifier;
use super::{
    backoff, metadata_file_location, metadata_version, storage_err, table_display, validate_name,
    validate_namespace, CatalogService, ResolvedCatalog, MAX_COMMIT_ATTEMPTS,
};
use crate::error::{CatalogError, Result};
use crate::storage::StorageError;
use crate::store::{
    display_namespace, EntityKind, NotFound, Page, PageRequest, PointerSwap, StoreError,
    TableRecord,
};

/// `CreateViewRequest` of the REST spec.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CreateViewRequest {
    pub name: String,
    /// Base location; the catalog picks one when absent or empty.
    #[serde(default)]
    pub location: Option<String>,
    pub schema: Schema,
    /// The first version; its `schema-id` is replaced by the id assigned to `schema`.
    pub view_version: ViewVersion,
    #[serde(default)]
    pub properties: HashMap<String, String>,
}

/// `RegisterViewRequest` of the REST spec.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RegisterViewRequest {
    pub name: String,
    pub metadata_location: String,
}

/// A `ViewRequirement` of the REST spec (the `iceberg` crate has none for views).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ViewRequirement {
    /// `assert-view-uuid`: the view's UUID must equal `uuid`.
    AssertViewUuid { uuid: Uuid },
}

impl ViewRequirement {
    /// Checks the requirement against the view's current metadata; a failure is a
    /// [`CatalogError::CommitFailed`] (409, the client may retry).
    pub fn check(&self, metadata: &ViewMetadata) -> Result<()> {
        match self {
            ViewRequirement::AssertViewUuid { uuid } if *uuid != metadata.uuid() => {
                Err(CatalogError::CommitFailed(format!(
                    "Requirement failed: view UUID does not match: expected {uuid} != {}",
                    metadata.uuid()
                )))
            }
            ViewRequirement::AssertViewUuid { .. } => Ok(()),
        }
    }
}

/// `CommitViewRequest` of the REST spec (the body of replaceView).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CommitViewRequest {
    #[serde(default)]
    pub identifier: Option<TableIdentifier>,
    #[serde(default)]
    pub requirements: Vec<ViewRequirement>,
    #[serde(default)]
    pub updates: Vec<ViewUpdate>,
}

/// A loaded view: its pointer row, its parsed metadata and the metadata file's JSON (served
/// as is, without re-serialization).
#[derive(Debug, Clone)]
pub struct LoadedView {
    pub record: TableRecord,
    pub metadata: ViewMetadata,
    pub json: Bytes,
}

fn no_such_view(ns: &[String], name: &str) -> CatalogError {
    CatalogError::NotFound(NotFound::View(table_display(ns, name)))
}

/// The error for creating a view where an entity of `existing` kind is, worded like the
/// store's own (which answers the same when a concurrent create wins).
fn name_taken(existing: EntityKind, ns: &[String], name: &str) -> CatalogError {
    let ident = table_display(ns, name);
    CatalogError::AlreadyExists(match existing {
        EntityKind::View => format!("View already exists: {ident}"),
        EntityKind::Table => format!("Table with same name already exists: {ident}"),
    })
}

/// A view version must define the view in at least one representation.
fn require_representations(version: &ViewVersion) -> Result<()> {
    if version.representations().is_empty() {
        return Err(CatalogError::bad_request(
            "Invalid view version: it needs at least one representation",
        ));
    }
    Ok(())
}

/// Applies one update of a replaceView to the builder. `base_uuid` is the view's UUID before
/// the commit: a view's identity is never re-assigned (the spec calls that unsafe).
fn apply_update(
    builder: ViewMetadataBuilder,
    base_uuid: Uuid,
    update: ViewUpdate,
) -> Result<ViewMetadataBuilder> {
    Ok(match update {
        ViewUpdate::AssignUuid { uuid } if uuid != base_uuid => {
            return Err(CatalogError::bad_request(format!(
                "Cannot reassign the UUID of view {base_uuid} to {uuid}"
            )))
        }
        ViewUpdate::AssignUuid { uuid } => builder.assign_uuid(uuid),
        ViewUpdate::UpgradeFormatVersion { format_version } => {
            builder.upgrade_format_version(format_version)?
        }
        ViewUpdate::AddSchema { schema, .. } => builder.add_schema(schema),
        ViewUpdate::SetLocation { location } if location.trim_end_matches('/').is_empty() => {
            return Err(CatalogError::bad_request(
                "Invalid set-location: the location must not be empty",
            ))
        }
        ViewUpdate::SetLocation { location } => builder.set_location(location),
        ViewUpdate::SetProperties { updates } => builder.set_properties(updates)?,
        ViewUpdate::RemoveProperties { removals } => builder.remove_properties(&removals),
        ViewUpdate::AddViewVersion { view_version } => {
            require_representations(&view_version)?;
            builder.add_version(view_version)?
        }
        ViewUpdate::SetCurrentViewVersion { view_version_id } => {
            builder.set_current_version_id(view_version_id)?
        }
    })
}

/// The metadata that results from applying `updates` to `base`; None when they change nothing.
fn apply_updates(base: ViewMetadata, updates: &[ViewUpdate]) -> Result<Option<ViewMetadata>> {
    let base_uuid = base.uuid();
    let mut builder = ViewMetadataBuilder::new_from_metadata(base);
    for u in updates.iter().cloned() {
        builder = apply_update(builder, base_uuid, u)?;
    }
    let built = builder.build()?;
    Ok((!built.changes.is_empty()).then_some(built.metadata))
}

impl CatalogService {
    /// Names of the views in a namespace (NoSuchNamespace when it is missing).
    pub async fn list_views(
        &self,
        cat: &ResolvedCatalog,
        ns: &[String],
        page: &PageRequest,
    ) -> Result<Page<String>> {
        Ok(self
            .store
            .list_tables(&cat.catalog.id, ns, EntityKind::View, page)
            .await?)
    }

    /// Parsed view metadata and its JSON, read from object storage. View metadata is not
    /// cached: the metadata cache holds table metadata only, and views are loaded rarely.
    async fn view_metadata_at(&self, location: &str) -> Result<(ViewMetadata, Bytes)> {
        let json = self.objects.get(location).await.map_err(|e| match e {
            StorageError::NotFound(l) => {
                CatalogError::Internal(format!("view metadata file missing: {l}"))
            }
            e => CatalogError::Storage(e.to_string()),
        })?;
        let metadata = serde_json::from_slice(&json).map_err(|e| {
            CatalogError::Internal(format!("view metadata file {location} does not parse: {e}"))
        })?;
        Ok((metadata, json))
    }

    /// Serializes view metadata and writes it; answers the JSON written.
    async fn write_view_metadata(&self, location: &str, metadata: &ViewMetadata) -> Result<Bytes> {
        let err = |e: serde_json::Error| {
            CatalogError::Internal(format!("cannot serialize view metadata: {e}"))
        };
        let mut value = serde_json::to_value(metadata).map_err(err)?;
        super::metadata_cache::float_defaults_as_sent(&mut value);
        self.limits.check_properties("View", metadata.properties())?;
        let json = Bytes::from(serde_json::to_vec(&value).map_err(err)?);
        self.limits.check_metadata_size("View", json.len())?;
        self.objects
            .put(location, json.clone())
            .await
            .map_err(storage_err)?;
        Ok(json)
    }

    /// loadView: NoSuchView when the name is missing or names a table.
    pub async fn load_view(
        &self,
        cat: &ResolvedCatalog,
        ns: &[String],
        name: &str,
    ) -> Result<LoadedView> {
        let record = self
            .get_entity(cat, ns, name, EntityKind::View)
            .await?
            .ok_or_else(|| no_such_view(ns, name))?;
        let (metadata, json) = self.view_metadata_at(&record.metadata_location).await?;
        Ok(LoadedView {
            record,
            metadata,
            json,
        })
    }

    /// viewExists: true only for a view (a table of that name does not count).
    pub async fn view_exists(
        &self,
        cat: &ResolvedCatalog,
        ns: &[String],
        name: &str,
    ) -> Result<bool> {
        Ok(self
            .get_entity(cat, ns, name, EntityKind::View)
            .await?
            .is_some())
    }

    /// createView: builds version-0 metadata, writes `00000-<uuid>.metadata.json` and inserts
    /// the pointer; when the insert fails the file is removed again.
    pub async fn create_view(
        &self,
        cat: &ResolvedCatalog,
        ns: &[String],
        req: CreateViewRequest,
    ) -> Result<LoadedView> {
        validate_namespace(ns)?;
        validate_name("view", &req.name)?;
        require_representations(&req.view_version)?;
        if self
            .store
            .get_namespace(&cat.catalog.id, ns)
            .await?
            .is_none()
        {
            return Err(CatalogError::NotFound(NotFound::Namespace(
                display_namespace(ns),
            )));
        }
        if let Some(existing) = self.store.get_table(&cat.catalog.id, ns, &req.name).await? {
            return Err(name_taken(existing.kind, ns, &req.name));
        }
        let location = match req.location {
            Some(l) if !l.trim_end_matches('/').is_empty() => {
                super::locations::check_location(&cat.warehouse, "location", &l)?
            }
            _ => self.default_location(cat, ns, &req.name),
        };
        let metadata = ViewMetadataBuilder::new(
            location,
            req.schema,
            req.view_version,
            ViewFormatVersion::V1,
            req.properties,
        )?
        .build()?
        .metadata;
        let metadata_location = metadata_file_location(metadata.location(), 0);
        let location = metadata.location().to_string();
        self.authority.ensure_can_commit()?;
        let json = self
            .write_view_metadata(&metadata_location, &metadata)
            .await?;
        match self
            .store
            .create_entity(
                &self.ctx(),
                &cat.catalog.id,
                ns,
                &req.name,
                EntityKind::View,
                &metadata_location,
                &location,
            )
            .await
        {
            Ok(record) => Ok(LoadedView {
                record,
                metadata,
                json,
            }),
            Err(e) => {
                self.discard(&metadata_location).await;
                Err(self.write_err(e).await)
            }
        }
    }

    /// registerView: points a new view at an existing view metadata file.
    pub async fn register_view(
        &self,
        cat: &ResolvedCatalog,
        ns: &[String],
        req: &RegisterViewRequest,
    ) -> Result<LoadedView> {
        validate_namespace(ns)?;
        validate_name("view", &req.name)?;
        super::locations::check_location(
            &cat.warehouse,
            "metadata location",
            &req.metadata_location,
        )?;
        let json = self
            .objects
            .get(&req.metadata_location)
            .await
            .map_err(storage_err)?;
        let metadata: ViewMetadata = serde_json::from_slice(&json).map_err(|e| {
            CatalogError::bad_request(format!(
                "Metadata file {} is not valid view metadata: {e}",
                req.metadata_location
            ))
        })?;
        let location =
            super::locations::check_location(&cat.warehouse, "view location", metadata.location())?;
        let record = match self
            .store
            .create_entity(
                &self.ctx(),
                &cat.catalog.id,
                ns,
                &req.name,
                EntityKind::View,
                &req.metadata_location,
                &location,
            )
            .await
        {
            Ok(r) => r,
            Err(e) => return Err(self.write_err(e).await),
        };
        Ok(LoadedView {
            record,
            metadata,
            json,
        })
    }

    /// replaceView: check requirements, apply updates, write the next metadata file, swap
    /// the pointer. A lost swap is retried against the new metadata while the requirements
    /// still hold; a failed requirement is 409 CommitFailedException, an invalid update 400.
    pub async fn replace_view(
        &self,
        cat: &ResolvedCatalog,
        ns: &[String],
        name: &str,
        requirements: &[ViewRequirement],
        updates: &[ViewUpdate],
    ) -> Result<LoadedView> {
        validate_namespace(ns)?;
        validate_name("view", name)?;
        for attempt in 1..=MAX_COMMIT_ATTEMPTS {
            let base = self.load_view(cat, ns, name).await?;
            for r in requirements {
                r.check(&base.metadata)?;
            }
            let Some(metadata) = apply_updates(base.metadata.clone(), updates)? else {
                return Ok(base);
            };
            let version = metadata_version(&base.record.metadata_location).map_or(1, |v| v + 1);
            let moved_to = if metadata.location() != base.metadata.location() {
                Some(super::locations::check_location(
                    &cat.warehouse,
                    "location",
                    metadata.location(),
                )?)
            } else {
                None
            };
            let new_location = metadata_file_location(metadata.location(), version);
            let json = self.write_view_metadata(&new_location, &metadata).await?;
            let swap = PointerSwap {
                table_id: base.record.id.clone(),
                expected_version: base.record.version,
                new_metadata_location: new_location.clone(),
                new_location: moved_to,
            };
            if let Err(e) = self.authority.ensure_can_commit() {
                self.discard(&new_location).await;
                return Err(e);
            }
            match self.store.commit_tables(&self.ctx(), &[swap]).await {
                Ok(mut records) => {
                    let record = records.pop().ok_or_else(|| {
                        CatalogError::Internal("commit returned no record".into())
                    })?;
                    return Ok(LoadedView {
                        record,
                        metadata,
                        json,
                    });
                }
                Err(StoreError::CommitConflict(msg)) => {
                    self.discard(&new_location).await;
                    tracing::debug!(%msg, "view pointer swap lost a race; retrying");
                }
                Err(e) => {
                    self.discard(&new_location).await;
                    return Err(self.write_err(e).await);
                }
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
        Err(CatalogError::CommitFailed(format!(
            "Commit of view {} failed after {MAX_COMMIT_ATTEMPTS} attempts under contention",
            table_display(ns, name)
        )))
    }

    /// dropView: removes the pointer; the metadata files stay (like a table drop without purge).
    pub async fn drop_view(&self, cat: &ResolvedCatalog, ns: &[String], name: &str) -> Result<()> {
        match self
            .store
            .drop_table(&self.ctx(), &cat.catalog.id, ns, name, EntityKind::View)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(self.write_err(e).await),
        }
    }

    /// renameView: NoSuchView for a missing source (or a table), NoSuchNamespace for a missing
    /// destination namespace, AlreadyExists when a table or view holds the destination name.
    pub async fn rename_view(
        &self,
        cat: &ResolvedCatalog,
        from: &TableIdentifier,
        to: &TableIdentifier,
    ) -> Result<()> {
        self.rename_entity(cat, from, to, EntityKind::View).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> ViewMetadata {
        serde_json::from_value(serde_json::json!({
            "view-uuid": "fa6506c3-7681-40c8-86dc-e36561f83385",
            "format-version": 1,
            "location": "s3://b/v",
            "current-version-id": 1,
            "versions": [{
                "version-id": 1, "schema-id": 0, "timestamp-ms": 1_700_000_000_000_i64,
                "summary": {}, "default-namespace": ["ns"],
                "representations": [{"type": "sql", "sql": "select 1", "dialect": "spark"}]
            }],
            "version-log": [{"version-id": 1, "timestamp-ms": 1_700_000_000_000_i64}],
            "schemas": [{"type": "struct", "schema-id": 0, "fields": [
                {"id": 1, "name": "x", "required": false, "type": "int"}
            ]}],
            "properties": {}
        }))
        .expect("valid view metadata")
    }

    fn updates(v: serde_json::Value) -> Vec<ViewUpdate> {
        serde_json::from_value(v).expect("valid updates")
    }

    #[test]
    fn requirements_parse_and_check_the_uuid() {
        let m = view();
        let ok: ViewRequirement = serde_json::from_value(
            serde_json::json!({"type": "assert-view-uuid", "uuid": m.uuid()}),
        )
        .expect("parses");
        assert!(ok.check(&m).is_ok());
        let bad = ViewRequirement::AssertViewUuid { uuid: Uuid::nil() };
        assert!(matches!(bad.check(&m), Err(CatalogError::CommitFailed(_))));
    }

    #[test]
    fn add_version_and_set_current_last_added() {
        let built = apply_updates(
            view(),
            &updates(serde_json::json!([
                {"action": "add-schema", "schema": {"type": "struct", "schema-id": 1, "fields": [
                    {"id": 1, "name": "y", "required": false, "type": "long"}]}},
                {"action": "add-view-version", "view-version": {
                    "version-id": 2, "schema-id": -1, "timestamp-ms": 1_700_000_001_000_i64,
                    "summary": {}, "default-namespace": ["ns"],
                    "representations": [{"type": "sql", "sql": "select 2", "dialect": "spark"}]}},
                {"action": "set-current-view-version", "view-version-id": -1}
            ])),
        )
        .expect("applies")
        .expect("changes the view");
        assert_eq!(built.current_version_id(), 2);
        assert_eq!(built.current_version().schema_id(), 1);
        assert_eq!(built.history().len(), 2);
    }

    #[test]
    fn invalid_updates_are_bad_requests() {
        for u in [
            serde_json::json!([{"action": "set-current-view-version", "view-version-id": 9}]),
            serde_json::json!([{"action": "assign-uuid", "uuid": Uuid::nil()}]),
            serde_json::json!([{"action": "set-location", "location": ""}]),
        ] {
            assert!(
                matches!(
                    apply_updates(view(), &updates(u.clone())),
                    Err(CatalogError::BadRequest(_))
                ),
                "{u}"
            );
        }
    }

    #[test]
    fn no_op_updates_change_nothing() {
        let m = view();
        let built = apply_updates(
            m.clone(),
            &updates(serde_json::json!([
                {"action": "assign-uuid", "uuid": m.uuid()},
                {"action": "set-current-view-version", "view-version-id": 1}
            ])),
        )
        .expect("applies");
        assert!(built.is_none());
    }
}
