//! The change log's records: what every fenced write appends in its transaction, and what a
//! region that is not primary applies
//! ([`apply_replicated`](super::ReplicationLog::apply_replicated)). A record's payload is
//! JSON so that an older region can name the op it cannot apply; [`Change`] is the decoded
//! form.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{Catalog, EntityKind, NamespaceRecord, TableRecord, Tenant, Warehouse};

/// One entry of the replication outbox, appended in the same transaction as its mutation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeRecord {
    /// Strictly increasing, gap-free order of commits within one region's log.
    pub seq: i64,
    pub epoch: i64,
    pub catalog_id: Option<String>,
    /// e.g. `create_namespace`, `commit_table`, `drop_table`, `rename_table`.
    pub op: String,
    /// Enough to re-apply the change elsewhere (entity ids, names, new pointer).
    pub payload: serde_json::Value,
    pub actor: String,
    pub created_ms: i64,
}

/// A change record decoded into what it changes (see [`ChangeRecord::decode`]). The payloads
/// are the JSON the SQL store writes for each op.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    CreateTenant(Tenant),
    CreateWarehouse(Warehouse),
    CreateCatalog(Catalog),
    CreateNamespace(NamespaceRecord),
    /// Carries the namespace's whole property map after the update.
    UpdateNamespaceProperties(NamespaceRecord),
    DropNamespace {
        catalog_id: String,
        namespace: Vec<String>,
    },
    /// The new row (version 1), from createTable, registerTable or createView.
    CreateTable(TableRecord),
    /// The row after one pointer swap (its new version and metadata location).
    CommitTable(TableRecord),
    /// The row that was removed.
    DropTable(TableRecord),
    /// The row at its new name.
    RenameTable {
        record: TableRecord,
        from_namespace: Vec<String>,
        from_name: String,
    },
}

impl Change {
    /// The table or view row a change creates or moves the pointer of (whose files must be
    /// present before the change is applied elsewhere).
    pub fn pointer(&self) -> Option<&TableRecord> {
        match self {
            Change::CreateTable(r) | Change::CommitTable(r) => Some(r),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct NamespacePayload {
    catalog_id: String,
    namespace: Vec<String>,
    #[serde(default)]
    properties: HashMap<String, String>,
}

#[derive(Deserialize)]
struct RenamePayload {
    id: String,
    catalog_id: String,
    kind: EntityKind,
    from_namespace: Vec<String>,
    from_name: String,
    to_namespace: Vec<String>,
    to_name: String,
    metadata_location: String,
    version: i64,
    #[serde(default)]
    location: String,
}

/// Position of a record inside a transaction that appended several (a multi-table commit
/// appends one `commit_table` record per table; a [`StoreTxn`](super::StoreTxn) composing
/// several mutations one record per mutation): `txn_index` 0..`txn_count`. A replica applies
/// the records of one transaction together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnPosition {
    pub txn_index: u32,
    pub txn_count: u32,
}

impl ChangeRecord {
    /// Decodes the payload of a known op. An unknown op or a payload that does not match
    /// its op is an error naming the record (a newer primary's record; upgrade this region).
    pub fn decode(&self) -> std::result::Result<Change, String> {
        fn parse<T: serde::de::DeserializeOwned>(
            r: &ChangeRecord,
        ) -> std::result::Result<T, String> {
            serde_json::from_value(r.payload.clone()).map_err(|e| {
                format!(
                    "change record {} ({}) has an unexpected payload: {e}",
                    r.seq, r.op
                )
            })
        }
        Ok(match self.op.as_str() {
            "create_tenant" => Change::CreateTenant(parse(self)?),
            "create_warehouse" => Change::CreateWarehouse(parse(self)?),
            "create_catalog" => Change::CreateCatalog(parse(self)?),
            "create_namespace" | "update_namespace_properties" => {
                let p: NamespacePayload = parse(self)?;
                let record = NamespaceRecord {
                    catalog_id: p.catalog_id,
                    name: p.namespace,
                    properties: p.properties,
                };
                if self.op == "create_namespace" {
                    Change::CreateNamespace(record)
                } else {
                    Change::UpdateNamespaceProperties(record)
                }
            }
            "drop_namespace" => {
                let p: NamespacePayload = parse(self)?;
                Change::DropNamespace {
                    catalog_id: p.catalog_id,
                    namespace: p.namespace,
                }
            }
            "create_table" => Change::CreateTable(parse(self)?),
            "commit_table" => Change::CommitTable(parse(self)?),
            "drop_table" => Change::DropTable(parse(self)?),
            "rename_table" => {
                let p: RenamePayload = parse(self)?;
                Change::RenameTable {
                    record: TableRecord {
                        id: p.id,
                        catalog_id: p.catalog_id,
                        namespace: p.to_namespace,
                        name: p.to_name,
                        kind: p.kind,
                        metadata_location: p.metadata_location,
                        version: p.version,
                        location: p.location,
                    },
                    from_namespace: p.from_namespace,
                    from_name: p.from_name,
                }
            }
            other => {
                return Err(format!(
                "change record {} has op {other:?}, which this version of Pangolin cannot apply",
                self.seq
            ))
            }
        })
    }

    /// Where the record sits in a multi-record transaction; None for a record alone.
    pub fn txn_position(&self) -> Option<TxnPosition> {
        let p: TxnPosition = serde_json::from_value(self.payload.clone()).ok()?;
        (p.txn_count > 1 && p.txn_index < p.txn_count).then_some(p)
    }
}

/// A region's position in the deployment's change log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationWatermark {
    /// Highest seq this region's database holds: the last record applied from another
    /// region, or committed here while primary (0: none).
    pub seq: i64,
    /// Epoch of that record.
    pub epoch: i64,
    /// When that record was committed, at the region that committed it (0: no record).
    pub created_ms: i64,
    /// When the last replicated record was applied here (0: never).
    pub applied_ms: i64,
    /// Whether an operator paused this region's replicator (kept across restarts).
    pub paused: bool,
}

/// What [`apply_replicated`](super::ReplicationLog::apply_replicated) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The records were applied; the watermark is now this seq.
    Applied { watermark: i64 },
    /// Every record was at or below the watermark already (applied before): nothing done.
    AlreadyApplied { watermark: i64 },
}

/// The entities a region creates at first start (`[bootstrap]`), with the ids they get.
/// See [`ReplicationLog::bootstrap`](super::ReplicationLog::bootstrap).
#[derive(Debug, Clone, PartialEq)]
pub struct BootstrapEntities {
    pub tenant: Tenant,
    pub warehouse: Option<Warehouse>,
    pub catalog: Option<Catalog>,
}
