//! Commit requirements, checked with the reference server's wording: clients (and their
//! tests) match on these messages, e.g. "Requirement failed: current schema changed".

use iceberg::spec::TableMetadata;
use iceberg::TableRequirement;

use crate::error::{CatalogError, Result};

fn failed(msg: String) -> CatalogError {
    CatalogError::CommitFailed(format!("Requirement failed: {msg}"))
}

/// Checks one requirement against the table's current metadata (None: no such table).
pub fn check(req: &TableRequirement, metadata: Option<&TableMetadata>) -> Result<()> {
    let Some(m) = metadata else {
        return match req {
            TableRequirement::NotExist => Ok(()),
            _ => Err(failed("table does not exist".into())),
        };
    };
    match req {
        TableRequirement::NotExist => Err(failed("table already exists".into())),
        TableRequirement::UuidMatch { uuid } => (m.uuid() == *uuid)
            .then_some(())
            .ok_or_else(|| failed(format!("UUID does not match: expected {uuid} != {}", m.uuid()))),
        TableRequirement::RefSnapshotIdMatch { r#ref, snapshot_id } => {
            let current = m.snapshot_for_ref(r#ref).map(|s| s.snapshot_id());
            match (snapshot_id, current) {
                (None, None) => Ok(()),
                (None, Some(_)) => Err(failed(format!("ref {ref} was created concurrently"))),
                (Some(want), None) => Err(failed(format!(
                    "branch or tag {ref} is missing, expected {want}"
                ))),
                (Some(want), Some(have)) if *want == have => Ok(()),
                (Some(want), Some(have)) => Err(failed(format!(
                    "branch or tag {ref} has changed: expected id {want} != {have}"
                ))),
            }
        }
        TableRequirement::LastAssignedFieldIdMatch {
            last_assigned_field_id,
        } => (m.last_column_id() == *last_assigned_field_id)
            .then_some(())
            .ok_or_else(|| {
                failed(format!(
                    "last assigned field id changed: expected id {last_assigned_field_id} != {}",
                    m.last_column_id()
                ))
            }),
        TableRequirement::CurrentSchemaIdMatch { current_schema_id } => {
            (m.current_schema_id() == *current_schema_id)
                .then_some(())
                .ok_or_else(|| {
                    failed(format!(
                        "current schema changed: expected id {current_schema_id} != {}",
                        m.current_schema_id()
                    ))
                })
        }
        TableRequirement::LastAssignedPartitionIdMatch {
            last_assigned_partition_id,
        } => (m.last_partition_id() == *last_assigned_partition_id)
            .then_some(())
            .ok_or_else(|| {
                failed(format!(
                    "last assigned partition id changed: expected id {last_assigned_partition_id} != {}",
                    m.last_partition_id()
                ))
            }),
        TableRequirement::DefaultSpecIdMatch { default_spec_id } => {
            (m.default_partition_spec_id() == *default_spec_id)
                .then_some(())
                .ok_or_else(|| {
                    failed(format!(
                        "default partition spec changed: expected id {default_spec_id} != {}",
                        m.default_partition_spec_id()
                    ))
                })
        }
        TableRequirement::DefaultSortOrderIdMatch {
            default_sort_order_id,
        } => (m.default_sort_order_id() == *default_sort_order_id)
            .then_some(())
            .ok_or_else(|| {
                failed(format!(
                    "default sort order changed: expected id {default_sort_order_id} != {}",
                    m.default_sort_order_id()
                ))
            }),
    }
}
