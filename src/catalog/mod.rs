//! Catalog domain logic: catalogs resolved from the REST prefix, namespaces, tables and the
//! commit path (requirements checked and updates applied with the `iceberg` crate, metadata
//! written to object storage, pointer compare-and-swapped in the store).
//!
//! Nothing here knows about HTTP; handlers call these methods and map [`CatalogError`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use iceberg::spec::{SortOrder, TableMetadata, TableMetadataBuilder, UnboundPartitionSpec};
use iceberg::{TableCreation, TableRequirement, TableUpdate};

use crate::error::{CatalogError, Result};
use crate::replication::{copy_commit_objects, CopyError, ObjectCopier};
use crate::routing::WriteAuthority;
use crate::storage::{ObjectStore, StorageError};
use crate::store::{
    display_namespace, Catalog, EntityKind, MetadataStore, NotFound, Page, PageRequest,
    PointerSwap, PropertiesUpdate, StoreError, TableRecord, Warehouse, WriteContext,
    NAMESPACE_SEPARATOR,
};

mod fresh_ids;
pub mod locations;
mod metadata_cache;
pub mod model;
mod requirements;
mod spec_compat;
pub mod views;

pub use metadata_cache::{CachedMetadata, MetadataCache};
use model::{CreateTableRequest, TableIdentifier};

/// How often the server re-tries a commit whose pointer swap lost a race, re-checking the
/// requirements against the new metadata each time.
const MAX_COMMIT_ATTEMPTS: u32 = 10;

/// Longest accepted identifier part, in bytes.
const MAX_NAME_BYTES: usize = 255;

/// A catalog with its warehouse, as resolved from a REST prefix.
#[derive(Debug, Clone)]
pub struct ResolvedCatalog {
    pub catalog: Catalog,
    pub warehouse: Warehouse,
}

/// A loaded table: its pointer row and its parsed, cached metadata.
#[derive(Debug, Clone)]
pub struct LoadedTable {
    pub record: TableRecord,
    pub metadata: Arc<CachedMetadata>,
}

/// A table change whose metadata file is written but not yet published.
struct StagedSwap {
    swap: PointerSwap,
    cached: Arc<CachedMetadata>,
}

enum Prepared {
    /// The updates changed nothing: no file written, nothing to publish.
    Unchanged(LoadedTable),
    Swap(StagedSwap),
}

/// What a staged create answers: metadata that was not persisted.
pub enum CreatedTable {
    Committed(LoadedTable),
    Staged(Arc<CachedMetadata>),
}

/// Size bounds on what clients may make the catalog store and keep in memory.
#[derive(Debug, Clone)]
pub struct CatalogLimits {
    pub metadata_cache_bytes: u64,
    /// One property, key plus value.
    pub max_property_bytes: usize,
    /// All properties of one entity, keys plus values.
    pub max_properties_bytes: usize,
    /// One metadata file as written.
    pub max_metadata_bytes: usize,
}

impl From<&crate::config::CatalogSection> for CatalogLimits {
    fn from(c: &crate::config::CatalogSection) -> Self {
        CatalogLimits {
            metadata_cache_bytes: c.metadata_cache_bytes,
            max_property_bytes: c.max_property_bytes,
            max_properties_bytes: c.max_properties_bytes,
            max_metadata_bytes: c.max_metadata_bytes,
        }
    }
}

impl CatalogLimits {
    /// 413 when a property or all of them together are larger than allowed.
    pub fn check_properties<'a>(
        &self,
        what: &str,
        properties: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Result<()> {
        let mut total = 0usize;
        for (k, v) in properties {
            let size = k.len() + v.len();
            if size > self.max_property_bytes {
                let shown: String = k.chars().take(64).collect();
                return Err(CatalogError::PayloadTooLarge(format!(
                    "{what} property {shown:?} is {size} bytes; at most {} bytes per property \
                     (key plus value) are accepted",
                    self.max_property_bytes
                )));
            }
            total += size;
        }
        if total > self.max_properties_bytes {
            return Err(CatalogError::PayloadTooLarge(format!(
                "{what} properties total {total} bytes; at most {} bytes are accepted",
                self.max_properties_bytes
            )));
        }
        Ok(())
    }

    /// 413 when a metadata file would be larger than allowed.
    pub fn check_metadata_size(&self, what: &str, size: usize) -> Result<()> {
        if size > self.max_metadata_bytes {
            return Err(CatalogError::PayloadTooLarge(format!(
                "{what} metadata would be {size} bytes; at most {} bytes are accepted",
                self.max_metadata_bytes
            )));
        }
        Ok(())
    }
}

/// The region's catalog service.
pub struct CatalogService {
    store: Arc<dyn MetadataStore>,
    objects: ObjectStore,
    cache: MetadataCache,
    limits: CatalogLimits,
    tenant_id: String,
    default_catalog: String,
    catalogs: RwLock<HashMap<String, Arc<ResolvedCatalog>>>,
    /// Decides the fencing epoch of local writes and whether a commit may run now.
    authority: Arc<dyn WriteAuthority>,
    /// Object storage of the other regions, to pull the files a forwarded commit references.
    peers: HashMap<String, ObjectStore>,
    copier: ObjectCopier,
}

/// Checks one identifier part: non-empty, bounded, no separator or control bytes.
pub fn validate_name(kind: &str, part: &str) -> Result<()> {
    if part.is_empty() {
        return Err(CatalogError::bad_request(format!(
            "Invalid {kind} name: must not be empty"
        )));
    }
    if part.len() > MAX_NAME_BYTES {
        return Err(CatalogError::bad_request(format!(
            "Invalid {kind} name: longer than {MAX_NAME_BYTES} bytes"
        )));
    }
    if part == "." || part == ".." {
        return Err(CatalogError::bad_request(format!(
            "Invalid {kind} name {part:?}: '.' and '..' are reserved"
        )));
    }
    if part
        .chars()
        .any(|c| c == NAMESPACE_SEPARATOR || c.is_control())
    {
        return Err(CatalogError::bad_request(format!(
            "Invalid {kind} name {part:?}: contains a control character"
        )));
    }
    Ok(())
}

pub fn validate_namespace(ns: &[String]) -> Result<()> {
    if ns.is_empty() {
        return Err(CatalogError::bad_request(
            "Invalid namespace: must have at least one level",
        ));
    }
    ns.iter().try_for_each(|p| validate_name("namespace", p))
}

/// Splits the URL form of a namespace (parts joined by 0x1F) into its parts.
pub fn parse_namespace(raw: &str) -> Result<Vec<String>> {
    let ns: Vec<String> = raw.split(NAMESPACE_SEPARATOR).map(str::to_string).collect();
    validate_namespace(&ns)?;
    Ok(ns)
}

fn table_display(ns: &[String], name: &str) -> String {
    format!("{}.{}", display_namespace(ns), name)
}

/// A path segment safe in an object key: keeps `[A-Za-z0-9._-]`, replaces the rest.
fn key_segment(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// FNV-1a, to spread table locations over hash prefixes (S3 throttles per prefix).
fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    })
}

/// Version number of a metadata file name `NNNNN-<uuid>.metadata.json` (None if not of that form).
fn metadata_version(location: &str) -> Option<u64> {
    let file = location.rsplit('/').next()?;
    let (num, _) = file.split_once('-')?;
    num.parse().ok()
}

fn metadata_file_location(table_location: &str, version: u64) -> String {
    format!(
        "{}/metadata/{version:05}-{}.metadata.json",
        table_location.trim_end_matches('/'),
        uuid::Uuid::new_v4()
    )
}

fn storage_err(e: StorageError) -> CatalogError {
    match e {
        StorageError::NotFound(l) => {
            CatalogError::bad_request(format!("Metadata file does not exist: {l}"))
        }
        StorageError::InvalidLocation(l) => {
            CatalogError::bad_request(format!("Invalid location: {l}"))
        }
        e if e.is_client_error() => CatalogError::bad_request(e.to_string()),
        e => CatalogError::Storage(e.to_string()),
    }
}

impl CatalogService {
    pub fn new(
        store: Arc<dyn MetadataStore>,
        objects: ObjectStore,
        authority: Arc<dyn WriteAuthority>,
        tenant_id: String,
        default_catalog: String,
        limits: CatalogLimits,
    ) -> CatalogService {
        CatalogService {
            store,
            objects,
            cache: MetadataCache::new(limits.metadata_cache_bytes),
            limits,
            tenant_id,
            default_catalog,
            catalogs: RwLock::new(HashMap::new()),
            authority,
            peers: HashMap::new(),
            copier: ObjectCopier::new(16, 5),
        }
    }

    /// The other regions' object storage, by region name.
    pub fn with_peers(mut self, peers: HashMap<String, ObjectStore>) -> CatalogService {
        self.peers = peers;
        self
    }

    /// The object store of `origin` when it is another region with known storage.
    fn origin_store(&self, origin: Option<&str>) -> Result<Option<&ObjectStore>> {
        match origin {
            None => Ok(None),
            Some(o) => match self.peers.get(o) {
                Some(store) => Ok(Some(store)),
                None if self.peers.is_empty() => Ok(None),
                None => Err(CatalogError::bad_request(format!(
                    "Commit forwarded from unknown region {o}"
                ))),
            },
        }
    }

    pub fn authority(&self) -> &Arc<dyn WriteAuthority> {
        &self.authority
    }

    pub fn store(&self) -> &Arc<dyn MetadataStore> {
        &self.store
    }

    pub fn objects(&self) -> &ObjectStore {
        &self.objects
    }

    pub fn limits(&self) -> &CatalogLimits {
        &self.limits
    }

    pub fn default_catalog(&self) -> &str {
        &self.default_catalog
    }

    fn ctx(&self) -> WriteContext {
        WriteContext {
            epoch: self.authority.epoch(),
            actor: "anonymous".into(),
        }
    }

    /// Maps a store error, refreshing the cached epoch when the store says it moved.
    async fn write_err(&self, e: StoreError) -> CatalogError {
        if let StoreError::StaleEpoch { current, .. } = e {
            self.authority.observe_epoch(current);
        }
        e.into()
    }

    /// Fills in the locations of rows written before locations were recorded, from the
    /// metadata files they point at (a purge purges nothing while any row lacks one).
    pub async fn fill_missing_locations(&self) -> Result<usize> {
        let mut filled = 0;
        let mut unreadable = std::collections::HashSet::new();
        loop {
            let rows = self.store.entities_without_location(500).await?;
            let pending: Vec<_> = rows
                .into_iter()
                .filter(|r| !unreadable.contains(&r.id))
                .collect();
            if pending.is_empty() {
                return Ok(filled);
            }
            for row in pending {
                let location = match self.objects.get(&row.metadata_location).await {
                    Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
                        .ok()
                        .and_then(|v| v["location"].as_str().map(str::to_string)),
                    Err(_) => None,
                };
                match location {
                    Some(l) if !l.trim_end_matches('/').is_empty() => {
                        self.store
                            .fill_location(&row.id, l.trim_end_matches('/'))
                            .await?;
                        filled += 1;
                    }
                    _ => {
                        tracing::warn!(id = %row.id, metadata = %row.metadata_location, "cannot read the location of a table or view; purges stay off until it is known");
                        unreadable.insert(row.id);
                    }
                }
            }
        }
    }

    // ---- catalogs ------------------------------------------------------------------------

    /// The catalog named by a REST prefix (cached; catalogs are created rarely).
    pub async fn resolve(&self, name: &str) -> Result<Arc<ResolvedCatalog>> {
        if let Some(c) = self.catalogs.read().ok().and_then(|m| m.get(name).cloned()) {
            return Ok(c);
        }
        let catalog = self
            .store
            .get_catalog(&self.tenant_id, name)
            .await?
            .ok_or_else(|| CatalogError::NotFound(NotFound::Catalog(name.to_string())))?;
        let warehouse = self
            .store
            .get_warehouse_by_id(&catalog.warehouse_id)
            .await?
            .ok_or_else(|| CatalogError::Internal(format!("catalog {name} has no warehouse")))?;
        let resolved = Arc::new(ResolvedCatalog { catalog, warehouse });
        if let Ok(mut m) = self.catalogs.write() {
            m.insert(name.to_string(), resolved.clone());
        }
        Ok(resolved)
    }

    // ---- namespaces ----------------------------------------------------------------------

    pub async fn create_namespace(
        &self,
        cat: &ResolvedCatalog,
        ns: &[String],
        properties: &HashMap<String, String>,
    ) -> Result<HashMap<String, String>> {
        validate_namespace(ns)?;
        self.limits.check_properties("Namespace", properties)?;
        match self
            .create_namespace_with_ancestors(&cat.catalog.id, ns, properties)
            .await
        {
            Ok(rec) => Ok(rec.properties),
            Err(e) => Err(self.write_err(e).await),
        }
    }

    /// Creates `ns` and, first, its missing ancestors (empty properties, as the spec's own
    /// example creates `accounting.tax` in an empty catalog), all in one store transaction:
    /// no ancestor is ever left without the namespace it was created for. An ancestor that
    /// another writer creates between this transaction's check and its insert fails the
    /// attempt; the next attempt finds it (each ancestor can race once).
    async fn create_namespace_with_ancestors(
        &self,
        catalog_id: &str,
        ns: &[String],
        properties: &HashMap<String, String>,
    ) -> std::result::Result<crate::store::NamespaceRecord, StoreError> {
        let mut attempts_left = ns.len();
        'attempt: loop {
            attempts_left -= 1;
            let mut txn = self.store.begin(&self.ctx()).await?;
            for depth in 1..ns.len() {
                let ancestor = &ns[..depth];
                if txn.get_namespace(catalog_id, ancestor).await?.is_some() {
                    continue;
                }
                match txn
                    .create_namespace(catalog_id, ancestor, &HashMap::new())
                    .await
                {
                    Ok(_) => {}
                    Err(StoreError::AlreadyExists(_)) if attempts_left > 0 => continue 'attempt,
                    Err(e) => return Err(e),
                }
            }
            let record = txn.create_namespace(catalog_id, ns, properties).await?;
            txn.commit().await?;
            return Ok(record);
        }
    }

    pub async fn load_namespace(
        &self,
        cat: &ResolvedCatalog,
        ns: &[String],
    ) -> Result<HashMap<String, String>> {
        self.store
            .get_namespace(&cat.catalog.id, ns)
            .await?
            .map(|r| r.properties)
            .ok_or_else(|| CatalogError::NotFound(NotFound::Namespace(display_namespace(ns))))
    }

    pub async fn list_namespaces(
        &self,
        cat: &ResolvedCatalog,
        parent: Option<&[String]>,
        page: &PageRequest,
    ) -> Result<Page<Vec<String>>> {
        Ok(self
            .store
            .list_namespaces(&cat.catalog.id, parent, page)
            .await?)
    }

    pub async fn drop_namespace(&self, cat: &ResolvedCatalog, ns: &[String]) -> Result<()> {
        match self
            .store
            .drop_namespace(&self.ctx(), &cat.catalog.id, ns)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => Err(self.write_err(e).await),
        }
    }

    pub async fn update_namespace_properties(
        &self,
        cat: &ResolvedCatalog,
        ns: &[String],
        removals: &[String],
        updates: &HashMap<String, String>,
    ) -> Result<PropertiesUpdate> {
        if let Some(k) = removals.iter().find(|k| updates.contains_key(*k)) {
            return Err(CatalogError::Unprocessable(format!(
                "Property {k:?} is both removed and updated"
            )));
        }
        if !updates.is_empty() {
            let mut merged = self.load_namespace(cat, ns).await?;
            for k in removals {
                merged.remove(k);
            }
            merged.extend(updates.iter().map(|(k, v)| (k.clone(), v.clone())));
            self.limits.check_properties("Namespace", &merged)?;
        }
        match self
            .store
            .update_namespace_properties(&self.ctx(), &cat.catalog.id, ns, removals, updates)
            .await
        {
            Ok(u) => Ok(u),
            Err(e) => Err(self.write_err(e).await),
        }
    }

    // ---- tables --------------------------------------------------------------------------

    pub async fn list_tables(
        &self,
        cat: &ResolvedCatalog,
        ns: &[String],
        page: &PageRequest,
    ) -> Result<Page<String>> {
        Ok(self
            .store
            .list_tables(&cat.catalog.id, ns, EntityKind::Table, page)
            .await?)
    }

    /// `s3://<bucket>/<prefix><4 hex>/<namespace…>/<table>-<uuid>`.
    fn default_location(&self, cat: &ResolvedCatalog, ns: &[String], name: &str) -> String {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut path: Vec<String> = ns.iter().map(|p| key_segment(p)).collect();
        path.push(format!("{}-{id}", key_segment(name)));
        let joined = path.join("/");
        let hash = fnv1a(&format!("{joined}/{id}")) & 0xffff;
        let prefix = cat.warehouse.key_prefix.trim_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        format!("s3://{}/{prefix}{hash:04x}/{joined}", cat.warehouse.bucket)
    }

    async fn get_entity(
        &self,
        cat: &ResolvedCatalog,
        ns: &[String],
        name: &str,
        kind: EntityKind,
    ) -> Result<Option<TableRecord>> {
        Ok(self
            .store
            .get_table(&cat.catalog.id, ns, name)
            .await?
            .filter(|r| r.kind == kind))
    }

    fn no_such_table(ns: &[String], name: &str) -> CatalogError {
        CatalogError::NotFound(NotFound::Table(table_display(ns, name)))
    }

    /// Parsed metadata for a pointer, from the cache or object storage.
    pub async fn metadata_at(&self, location: &str) -> Result<Arc<CachedMetadata>> {
        if let Some(m) = self.cache.get(location) {
            return Ok(m);
        }
        let bytes = self.objects.get(location).await.map_err(|e| match e {
            StorageError::NotFound(l) => {
                CatalogError::Internal(format!("metadata file missing: {l}"))
            }
            e => CatalogError::Storage(e.to_string()),
        })?;
        let metadata: TableMetadata = serde_json::from_slice(&bytes).map_err(|e| {
            CatalogError::Internal(format!("metadata file {location} does not parse: {e}"))
        })?;
        Ok(self.cache.insert(location, metadata, bytes))
    }

    pub async fn load_table(
        &self,
        cat: &ResolvedCatalog,
        ns: &[String],
        name: &str,
    ) -> Result<LoadedTable> {
        let record = self
            .get_entity(cat, ns, name, EntityKind::Table)
            .await?
            .ok_or_else(|| Self::no_such_table(ns, name))?;
        let metadata = self.metadata_at(&record.metadata_location).await?;
        Ok(LoadedTable { record, metadata })
    }

    pub async fn table_exists(
        &self,
        cat: &ResolvedCatalog,
        ns: &[String],
        name: &str,
    ) -> Result<bool> {
        Ok(self
            .get_entity(cat, ns, name, EntityKind::Table)
            .await?
            .is_some())
    }

    pub async fn create_table(
        &self,
        cat: &ResolvedCatalog,
        ns: &[String],
        req: CreateTableRequest,
    ) -> Result<CreatedTable> {
        validate_name("table", &req.name)?;
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
            return Err(CatalogError::AlreadyExists(match existing.kind {
                EntityKind::Table => {
                    format!("Table already exists: {}", table_display(ns, &req.name))
                }
                EntityKind::View => format!(
                    "View with same name already exists: {}",
                    table_display(ns, &req.name)
                ),
            }));
        }
        let location = match req.location {
            Some(l) if !l.is_empty() => locations::check_location(&cat.warehouse, "location", &l)?,
            _ => self.default_location(cat, ns, &req.name),
        };
        let mut properties = req.properties;
        let format_version = take_format_version(&mut properties)?;
        properties
            .entry("write.object-storage.enabled".into())
            .or_insert_with(|| "true".into());
        // As the reference implementation does for every new table.
        properties
            .entry("write.parquet.compression-codec".into())
            .or_insert_with(|| "zstd".into());
        let partition_spec = req
            .partition_spec
            .map(|spec| spec_compat::shield_spec(&spec, &req.schema))
            .transpose()?;
        let creation = TableCreation::builder()
            .name(req.name.clone())
            .location(location.clone())
            .schema(req.schema)
            .partition_spec_opt(partition_spec)
            .sort_order_opt(req.write_order)
            .properties(properties)
            .format_version(format_version.unwrap_or(iceberg::spec::FormatVersion::V2))
            .build();
        let metadata = fresh_ids::renumber_like_reference(spec_compat::unshield(
            TableMetadataBuilder::from_table_creation(creation)?
                .build()?
                .metadata,
        )?)?;
        if req.stage_create {
            return Ok(CreatedTable::Staged(Arc::new(CachedMetadata::new(
                metadata, None,
            )?)));
        }
        let metadata_location = metadata_file_location(&location, 0);
        self.publish_new(cat, ns, &req.name, metadata, metadata_location)
            .await
            .map(CreatedTable::Committed)
    }

    /// Writes a version-0 metadata file and inserts the pointer; on failure the file is
    /// removed again so no pointer ever names a missing file and no orphan stays behind.
    async fn publish_new(
        &self,
        cat: &ResolvedCatalog,
        ns: &[String],
        name: &str,
        metadata: TableMetadata,
        metadata_location: String,
    ) -> Result<LoadedTable> {
        let location = locations::check_location(&cat.warehouse, "location", metadata.location())?;
        self.authority.ensure_can_commit()?;
        let cached = self.write_metadata(&metadata_location, metadata).await?;
        match self
            .store
            .create_entity(
                &self.ctx(),
                &cat.catalog.id,
                ns,
                name,
                EntityKind::Table,
                &metadata_location,
                &location,
            )
            .await
        {
            Ok(record) => Ok(LoadedTable {
                record,
                metadata: cached,
            }),
            Err(e) => {
                self.discard(&metadata_location).await;
                Err(self.write_err(e).await)
            }
        }
    }

    async fn write_metadata(
        &self,
        location: &str,
        metadata: TableMetadata,
    ) -> Result<Arc<CachedMetadata>> {
        self.limits
            .check_properties("Table", metadata.properties())?;
        let cached = CachedMetadata::new(metadata, None)?;
        self.limits
            .check_metadata_size("Table", cached.json.len())?;
        self.objects
            .put(location, cached.json.clone())
            .await
            .map_err(storage_err)?;
        Ok(self.cache.insert_cached(location, cached))
    }

    async fn discard(&self, location: &str) {
        self.cache.remove(location);
        if let Err(e) = self.objects.delete(location).await {
            tracing::warn!(%location, error = %e, "could not remove unpublished metadata file");
        }
    }

    pub async fn register_table(
        &self,
        cat: &ResolvedCatalog,
        ns: &[String],
        name: &str,
        metadata_location: &str,
        overwrite: bool,
    ) -> Result<LoadedTable> {
        validate_name("table", name)?;
        locations::check_location(&cat.warehouse, "metadata location", metadata_location)?;
        if let Ok(Some(info)) = self.objects.head(metadata_location).await {
            self.limits
                .check_metadata_size("Registered table", usize::try_from(info.size).unwrap_or(usize::MAX))?;
        }
        let bytes = self
            .objects
            .get(metadata_location)
            .await
            .map_err(storage_err)?;
        let metadata: TableMetadata = serde_json::from_slice(&bytes).map_err(|e| {
            CatalogError::bad_request(format!(
                "Metadata file {metadata_location} is not valid table metadata: {e}"
            ))
        })?;
        let location =
            locations::check_location(&cat.warehouse, "table location", metadata.location())?;
        let cached = self.cache.insert(metadata_location, metadata, bytes);
        if overwrite {
            if let Some(existing) = self.store.get_table(&cat.catalog.id, ns, name).await? {
                if existing.kind != EntityKind::Table {
                    return Err(CatalogError::AlreadyExists(format!(
                        "View with same name already exists: {}",
                        table_display(ns, name)
                    )));
                }
                // Point the existing table at the registered file (compare-and-swap).
                let staged = StagedSwap {
                    swap: PointerSwap {
                        table_id: existing.id.clone(),
                        expected_version: existing.version,
                        new_metadata_location: metadata_location.to_string(),
                        new_location: Some(location.clone()),
                    },
                    cached,
                };
                let swaps = vec![staged.swap.clone()];
                self.authority.ensure_can_commit()?;
                return match self.store.commit_tables(&self.ctx(), &swaps).await {
                    Ok(mut records) => Ok(LoadedTable {
                        record: records.pop().ok_or_else(|| {
                            CatalogError::Internal("commit returned no record".into())
                        })?,
                        metadata: staged.cached,
                    }),
                    Err(e) => Err(self.write_err(e).await),
                };
            }
        }
        let record = match self
            .store
            .create_entity(
                &self.ctx(),
                &cat.catalog.id,
                ns,
                name,
                EntityKind::Table,
                metadata_location,
                &location,
            )
            .await
        {
            Ok(r) => r,
            Err(e) => return Err(self.write_err(e).await),
        };
        Ok(LoadedTable {
            record,
            metadata: cached,
        })
    }

    pub async fn rename_table(
        &self,
        cat: &ResolvedCatalog,
        from: &TableIdentifier,
        to: &TableIdentifier,
    ) -> Result<()> {
        self.rename_entity(cat, from, to, EntityKind::Table).await
    }

    /// Renames a table or a view (within or across namespaces of one catalog).
    pub(crate) async fn rename_entity(
        &self,
        cat: &ResolvedCatalog,
        from: &TableIdentifier,
        to: &TableIdentifier,
        kind: EntityKind,
    ) -> Result<()> {
        validate_namespace(&from.namespace)?;
        validate_namespace(&to.namespace)?;
        validate_name(kind.as_str(), &to.name)?;
        match self
            .store
            .rename_table(
                &self.ctx(),
                &cat.catalog.id,
                &from.namespace,
                &from.name,
                &to.namespace,
                &to.name,
                kind,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(self.write_err(e).await),
        }
    }

    /// Drops the pointer, then (with `purge`) deletes the objects under the locations the
    /// table owned that no other live table or view covers (see [`locations`]). A crash
    /// between the two leaves unreferenced files, never a pointer to missing files.
    pub async fn drop_table(
        &self,
        cat: &ResolvedCatalog,
        ns: &[String],
        name: &str,
        purge: bool,
    ) -> Result<()> {
        let dropped = match self
            .store
            .drop_table_purging(
                &self.ctx(),
                &cat.catalog.id,
                ns,
                name,
                EntityKind::Table,
                purge,
            )
            .await
        {
            Ok(r) => r,
            Err(e) => return Err(self.write_err(e).await),
        };
        self.cache.remove(&dropped.record.metadata_location);
        if purge {
            let owned = dropped.locations();
            let outcome =
                locations::purge_locations(self.store.as_ref(), &self.objects, &owned)
                    .await
                    .map_err(CatalogError::Storage)?;
            if !outcome.skipped_locations.is_empty() || outcome.kept > 0 {
                tracing::warn!(
                    table = %table_display(ns, name),
                    skipped = ?outcome.skipped_locations,
                    kept = outcome.kept,
                    "purge left files another table or view owns"
                );
            }
            tracing::info!(table = %table_display(ns, name), objects = outcome.deleted, "purged table files");
        }
        Ok(())
    }

    /// Checks requirements against the table's current metadata, applies the updates and
    /// writes the next metadata file. Nothing is published yet.
    async fn prepare_update(
        &self,
        warehouse: &Warehouse,
        record: TableRecord,
        requirements: &[TableRequirement],
        updates: &[TableUpdate],
        origin: Option<&ObjectStore>,
    ) -> Result<Prepared> {
        let base = self.metadata_at(&record.metadata_location).await?;
        for r in requirements {
            requirements::check(r, Some(&base.metadata))?;
        }
        // Specs that Java takes from requests and the builder would refuse go through it
        // shielded (see `spec_compat`).
        let mut builder = TableMetadataBuilder::new_from_metadata(
            spec_compat::shield_metadata((*base.metadata).clone())?,
            Some(record.metadata_location.clone()),
        );
        for u in spec_compat::shield_updates(&base.metadata, updates)? {
            builder = u.apply(builder)?;
        }
        let mut built = builder.build()?;
        built.metadata = spec_compat::unshield(built.metadata)?;
        if built.changes.is_empty() && updates.is_empty() {
            return Ok(Prepared::Unchanged(LoadedTable {
                record,
                metadata: base,
            }));
        }
        if let Some(source) = origin {
            // Files written by a client of another region must be here before we publish.
            let report =
                copy_commit_objects(&self.copier, source, &self.objects, &base.metadata, updates)
                    .await
                    .map_err(copy_err)?;
            if report.copied > 0 {
                tracing::info!(
                    copied = report.copied,
                    bytes = report.bytes_copied,
                    "pulled the commit's objects from its origin region"
                );
            }
        }
        let moved_to = if built.metadata.location() != base.metadata.location() {
            Some(locations::check_location(
                warehouse,
                "location",
                built.metadata.location(),
            )?)
        } else {
            None
        };
        let version = metadata_version(&record.metadata_location).map_or(1, |v| v + 1);
        let new_location = metadata_file_location(built.metadata.location(), version);
        let cached = self.write_metadata(&new_location, built.metadata).await?;
        Ok(Prepared::Swap(StagedSwap {
            swap: PointerSwap {
                table_id: record.id.clone(),
                expected_version: record.version,
                new_metadata_location: new_location,
                new_location: moved_to,
            },
            cached,
        }))
    }

    async fn discard_staged(&self, staged: &[StagedSwap]) {
        for s in staged {
            self.discard(&s.swap.new_metadata_location).await;
        }
    }

    /// Publishes staged swaps in one store transaction. `Ok(None)`: a pointer moved since
    /// the swaps were prepared (files already discarded); the caller retries.
    async fn publish_swaps(&self, staged: Vec<StagedSwap>) -> Result<Option<Vec<LoadedTable>>> {
        let swaps: Vec<PointerSwap> = staged.iter().map(|s| s.swap.clone()).collect();
        if let Err(e) = self.authority.ensure_can_commit() {
            self.discard_staged(&staged).await;
            return Err(e);
        }
        match self.store.commit_tables(&self.ctx(), &swaps).await {
            Ok(records) => Ok(Some(
                records
                    .into_iter()
                    .zip(staged)
                    .map(|(record, s)| LoadedTable {
                        record,
                        metadata: s.cached,
                    })
                    .collect(),
            )),
            Err(StoreError::CommitConflict(msg)) => {
                self.discard_staged(&staged).await;
                tracing::debug!(%msg, "pointer swap lost a race; retrying");
                Ok(None)
            }
            Err(e) => {
                self.discard_staged(&staged).await;
                Err(self.write_err(e).await)
            }
        }
    }

    /// updateTable: check requirements, apply updates, write the next metadata file, swap
    /// the pointer. A lost swap is retried against the new metadata while the requirements
    /// still hold; otherwise 409 CommitFailedException.
    pub async fn commit_table(
        &self,
        cat: &ResolvedCatalog,
        ns: &[String],
        name: &str,
        requirements: Vec<TableRequirement>,
        updates: Vec<TableUpdate>,
        origin: Option<&str>,
    ) -> Result<LoadedTable> {
        validate_namespace(ns)?;
        validate_name("table", name)?;
        let origin = self.origin_store(origin)?;
        for attempt in 1..=MAX_COMMIT_ATTEMPTS {
            let Some(record) = self.get_entity(cat, ns, name, EntityKind::Table).await? else {
                if requirements.contains(&TableRequirement::NotExist) {
                    return self
                        .commit_staged_create(cat, ns, name, &requirements, updates, origin)
                        .await;
                }
                return Err(Self::no_such_table(ns, name));
            };
            let staged = match self
                .prepare_update(&cat.warehouse, record, &requirements, &updates, origin)
                .await?
            {
                Prepared::Unchanged(t) => return Ok(t),
                Prepared::Swap(s) => s,
            };
            if let Some(mut tables) = self.publish_swaps(vec![staged]).await? {
                return tables
                    .pop()
                    .ok_or_else(|| CatalogError::Internal("commit returned no record".into()));
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
        Err(CatalogError::CommitFailed(format!(
            "Commit of {} failed after {MAX_COMMIT_ATTEMPTS} attempts under contention",
            table_display(ns, name)
        )))
    }

    /// commitTransaction: every table change is prepared, then all pointers move in one
    /// store transaction, or none does. Lost races are retried as a whole.
    pub async fn commit_transaction(
        &self,
        cat: &ResolvedCatalog,
        changes: Vec<(TableIdentifier, Vec<TableRequirement>, Vec<TableUpdate>)>,
        origin: Option<&str>,
    ) -> Result<()> {
        let origin = self.origin_store(origin)?;
        if changes.is_empty() {
            return Err(CatalogError::bad_request(
                "A transaction needs at least one table change",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (id, reqs, _) in &changes {
            validate_namespace(&id.namespace)?;
            validate_name("table", &id.name)?;
            if !seen.insert((id.namespace.clone(), id.name.clone())) {
                return Err(CatalogError::bad_request(format!(
                    "Table {} appears more than once in the transaction",
                    table_display(&id.namespace, &id.name)
                )));
            }
            if reqs.contains(&TableRequirement::NotExist) {
                return Err(CatalogError::bad_request(
                    "Creating tables (assert-create) inside commitTransaction is not supported",
                ));
            }
        }
        for attempt in 1..=MAX_COMMIT_ATTEMPTS {
            let mut staged = Vec::new();
            let mut failure = None;
            for (id, reqs, ups) in &changes {
                let prepared = match self
                    .get_entity(cat, &id.namespace, &id.name, EntityKind::Table)
                    .await
                {
                    Ok(Some(record)) => {
                        self.prepare_update(&cat.warehouse, record, reqs, ups, origin)
                            .await
                    }
                    Ok(None) => Err(Self::no_such_table(&id.namespace, &id.name)),
                    Err(e) => Err(e),
                };
                match prepared {
                    Ok(Prepared::Swap(s)) => staged.push(s),
                    Ok(Prepared::Unchanged(_)) => {}
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = failure {
                self.discard_staged(&staged).await;
                return Err(e);
            }
            if staged.is_empty() || self.publish_swaps(staged).await?.is_some() {
                return Ok(());
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
        Err(CatalogError::CommitFailed(format!(
            "Transaction failed after {MAX_COMMIT_ATTEMPTS} attempts under contention"
        )))
    }

    /// Commit of a staged create (`assert-create`): the table is built from the updates.
    async fn commit_staged_create(
        &self,
        cat: &ResolvedCatalog,
        ns: &[String],
        name: &str,
        requirements: &[TableRequirement],
        updates: Vec<TableUpdate>,
        origin: Option<&ObjectStore>,
    ) -> Result<LoadedTable> {
        for r in requirements {
            requirements::check(r, None)?;
        }
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
        let default_location = self.default_location(cat, ns, name);
        if let Some(source) = origin {
            // A create transaction may carry snapshots whose files its client wrote in its own
            // region: pull them here first. The base is the table without its snapshots.
            let without_snapshots: Vec<TableUpdate> = updates
                .iter()
                .filter(|u| {
                    !matches!(
                        u,
                        TableUpdate::AddSnapshot { .. } | TableUpdate::SetSnapshotRef { .. }
                    )
                })
                .cloned()
                .collect();
            let base =
                metadata_from_create_updates(without_snapshots, || default_location.clone())?;
            copy_commit_objects(&self.copier, source, &self.objects, &base, &updates)
                .await
                .map_err(copy_err)?;
        }
        let metadata = metadata_from_create_updates(updates, || default_location)?;
        let location = metadata_file_location(metadata.location(), 0);
        self.publish_new(cat, ns, name, metadata, location)
            .await
            .map_err(|e| match e {
                CatalogError::AlreadyExists(m) => {
                    CatalogError::CommitFailed(format!("Requirement failed: {m}"))
                }
                e => e,
            })
    }
}

/// The reserved `format-version` table property chooses the format version at creation and
/// is not stored as a property (as the reference implementation does).
fn take_format_version(
    properties: &mut HashMap<String, String>,
) -> Result<Option<iceberg::spec::FormatVersion>> {
    use iceberg::spec::FormatVersion;
    match properties.remove("format-version").as_deref() {
        None => Ok(None),
        Some("1") => Ok(Some(FormatVersion::V1)),
        Some("2") => Ok(Some(FormatVersion::V2)),
        Some("3") => Ok(Some(FormatVersion::V3)),
        Some(other) => Err(CatalogError::bad_request(format!(
            "Invalid format-version {other:?}: expected 1, 2 or 3"
        ))),
    }
}

fn copy_err(e: CopyError) -> CatalogError {
    match e {
        CopyError::MissingAtSource { location } => CatalogError::bad_request(format!(
            "The commit references {location}, which exists in no region"
        )),
        e => CatalogError::Storage(e.to_string()),
    }
}

fn backoff(attempt: u32) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let base = 2u64.saturating_pow(attempt.min(8)).min(200);
    Duration::from_millis(base + u64::from(nanos % 10))
}

/// Builds a new table's metadata from the updates of a staged-create commit: the first
/// schema, spec, sort order, location, format version and uuid form the table, later
/// updates (e.g. a first snapshot) are applied on top.
fn metadata_from_create_updates(
    updates: Vec<TableUpdate>,
    default_location: impl FnOnce() -> String,
) -> Result<TableMetadata> {
    let mut schema = None;
    let mut spec: Option<UnboundPartitionSpec> = None;
    let mut order: Option<SortOrder> = None;
    let mut location = None;
    let mut format_version = None;
    let mut uuid = None;
    let mut properties = HashMap::new();
    let mut rest = Vec::new();
    let (mut current_schema_set, mut default_spec_set, mut default_order_set) =
        (false, false, false);
    for u in updates {
        match u {
            TableUpdate::AddSchema { schema: s } if schema.is_none() => schema = Some(s),
            TableUpdate::SetCurrentSchema { schema_id: -1 }
                if schema.is_some() && rest.is_empty() && !current_schema_set =>
            {
                current_schema_set = true
            }
            TableUpdate::AddSpec { spec: s } if spec.is_none() && rest.is_empty() => spec = Some(s),
            TableUpdate::SetDefaultSpec { spec_id: -1 }
                if spec.is_some() && rest.is_empty() && !default_spec_set =>
            {
                default_spec_set = true
            }
            TableUpdate::AddSortOrder { sort_order } if order.is_none() && rest.is_empty() => {
                order = Some(sort_order)
            }
            TableUpdate::SetDefaultSortOrder { sort_order_id: -1 }
                if order.is_some() && rest.is_empty() && !default_order_set =>
            {
                default_order_set = true
            }
            TableUpdate::SetLocation { location: l } if location.is_none() => location = Some(l),
            TableUpdate::UpgradeFormatVersion { format_version: v } if format_version.is_none() => {
                format_version = Some(v)
            }
            TableUpdate::AssignUuid { uuid: u } if uuid.is_none() => uuid = Some(u),
            TableUpdate::SetProperties { updates } if rest.is_empty() => properties.extend(updates),
            other => rest.push(other),
        }
    }
    let from_properties = take_format_version(&mut properties)?;
    let format_version = format_version.or(from_properties);
    let schema = schema.ok_or_else(|| {
        CatalogError::bad_request("Creating a table requires an add-schema update")
    })?;
    let location = location
        .filter(|l| !l.is_empty())
        .unwrap_or_else(default_location);
    let spec = match spec {
        Some(spec) => spec_compat::shield_spec(&spec, &schema)?,
        None => UnboundPartitionSpec::builder().build(),
    };
    let rest = spec_compat::shield_updates_on(&schema, rest)?;
    let mut builder = TableMetadataBuilder::new(
        schema,
        spec,
        order.unwrap_or(SortOrder::unsorted_order()),
        location.trim_end_matches('/').to_string(),
        format_version.unwrap_or(iceberg::spec::FormatVersion::V2),
        properties,
    )?;
    if let Some(u) = uuid {
        builder = builder.assign_uuid(u);
    }
    for u in rest {
        builder = u.apply(builder)?;
    }
    spec_compat::unshield(builder.build()?.metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_versions_are_read_from_file_names() {
        assert_eq!(
            metadata_version("s3://b/t/metadata/00007-0a1b.metadata.json"),
            Some(7)
        );
        assert_eq!(metadata_version("s3://b/t/metadata/v3.metadata.json"), None);
    }

    #[test]
    fn identifiers_with_control_bytes_are_rejected() {
        assert!(validate_name("table", "ok name").is_ok());
        assert!(validate_name("table", "").is_err());
        assert!(validate_name("table", "a\u{1f}b").is_err());
        assert!(validate_name("table", &"x".repeat(300)).is_err());
        assert!(parse_namespace("a\u{1f}b").unwrap() == vec!["a", "b"]);
    }

    #[test]
    fn key_segments_are_object_key_safe() {
        assert_eq!(key_segment("a b/c%d"), "a_b_c_d");
    }
}
