//! Partition specs that the reference implementation accepts and the `iceberg` crate's
//! metadata builder refuses.
//!
//! Java binds a spec that arrives in a REST request (`add-spec`, a create request) field by
//! field, without the checks its spec-building API adds on top: a partition field may carry
//! the name of the column it is sourced from whatever its transform (a v1 table's removed
//! field stays in the spec as `void` under its old name), and a column may carry several
//! transforms of one family (`day` and `hour`, two `void`s). The crate's builder refuses
//! both, and it re-binds the default spec on every build, so a table holding such a spec could
//! not even be committed to again.
//!
//! Such fields are therefore *shielded* before the builder sees them: a field keeps its source
//! column and field id, takes a stand-in transform that the builder accepts and a name that
//! records its real name and transform; after the build the real ones are put back. The
//! stand-in depends only on the spec and the schema, so equal specs stay equal and the builder
//! still reuses spec ids. The checks that Java does make are made here, with its messages.

use std::collections::HashSet;

use iceberg::spec::{
    Schema, TableMetadata, Transform, Type, UnboundPartitionField, UnboundPartitionSpec,
};
use iceberg::TableUpdate;
use serde_json::Value;

use crate::error::{CatalogError, Result};

/// Starts (and separates the parts of) a shielded field's name: `\u{1}<transform>\u{1}<name>`.
/// Refused in names that clients send, so a shielded name is never ambiguous.
const MARK: char = '\u{1}';

/// Table metadata as the builder may take it: every spec shielded against the current schema.
pub fn shield_metadata(metadata: TableMetadata) -> Result<TableMetadata> {
    let schema = metadata.current_schema().clone();
    let needs = metadata.partition_specs_iter().any(|spec| {
        let fields: Vec<UnboundPartitionField> =
            spec.fields().iter().cloned().map(Into::into).collect();
        shield_fields(fields, &schema, false).is_ok_and(|(_, changed)| changed)
    });
    if !needs {
        return Ok(metadata);
    }
    let mut json = serde_json::to_value(&metadata).map_err(internal)?;
    edit_spec_fields(&mut json, |fields| {
        let (shielded, _) = shield_fields(fields, &schema, false)?;
        Ok(shielded)
    })?;
    serde_json::from_value(json).map_err(internal)
}

/// The updates of a commit with the specs they add shielded, each against the schema that is
/// current where it is added. Also makes Java's checks on those specs.
pub fn shield_updates(base: &TableMetadata, updates: &[TableUpdate]) -> Result<Vec<TableUpdate>> {
    shield_updates_from(base.current_schema().as_ref().clone(), updates, |id| {
        base.schema_by_id(id).map(|s| s.as_ref().clone())
    })
}

/// As [`shield_updates`], for the updates applied to a table being created with `schema`.
pub fn shield_updates_on(schema: &Schema, updates: Vec<TableUpdate>) -> Result<Vec<TableUpdate>> {
    shield_updates_from(schema.clone(), &updates, |_| None)
}

fn shield_updates_from(
    mut current: Schema,
    updates: &[TableUpdate],
    existing_schema: impl Fn(i32) -> Option<Schema>,
) -> Result<Vec<TableUpdate>> {
    let mut added: Vec<Schema> = Vec::new();
    let mut out = Vec::with_capacity(updates.len());
    for update in updates {
        match update {
            TableUpdate::AddSchema { schema } => added.push(schema.clone()),
            TableUpdate::SetCurrentSchema { schema_id } => {
                let next = if *schema_id == -1 {
                    added.last().cloned()
                } else {
                    added
                        .iter()
                        .rev()
                        .find(|s| s.schema_id() == *schema_id)
                        .cloned()
                        .or_else(|| existing_schema(*schema_id))
                };
                if let Some(s) = next {
                    current = s;
                }
            }
            TableUpdate::AddSpec { spec } => {
                out.push(TableUpdate::AddSpec {
                    spec: shield_spec(spec, &current)?,
                });
                continue;
            }
            _ => {}
        }
        out.push(update.clone());
    }
    Ok(out)
}

/// A spec of a request (create, `add-spec`), checked as Java does and shielded.
pub fn shield_spec(spec: &UnboundPartitionSpec, schema: &Schema) -> Result<UnboundPartitionSpec> {
    let (fields, changed) = shield_fields(spec.fields().to_vec(), schema, true)?;
    if !changed {
        return Ok(spec.clone());
    }
    let mut json = serde_json::to_value(spec).map_err(internal)?;
    json["fields"] = serde_json::to_value(fields).map_err(internal)?;
    serde_json::from_value(json).map_err(internal)
}

/// Puts the real names and transforms of shielded fields back.
pub fn unshield(metadata: TableMetadata) -> Result<TableMetadata> {
    let shielded = metadata
        .partition_specs_iter()
        .any(|spec| spec.fields().iter().any(|f| f.name.starts_with(MARK)));
    if !shielded {
        return Ok(metadata);
    }
    let mut json = serde_json::to_value(&metadata).map_err(internal)?;
    edit_spec_fields(&mut json, |fields| {
        fields.into_iter().map(unshield_field).collect()
    })?;
    serde_json::from_value(json).map_err(internal)
}

/// Applies `edit` to the fields of every spec of serialized metadata (`partition-specs`, and a
/// v1 table's `partition-spec`).
fn edit_spec_fields(
    json: &mut Value,
    mut edit: impl FnMut(Vec<UnboundPartitionField>) -> Result<Vec<UnboundPartitionField>>,
) -> Result<()> {
    let mut edit_list = |list: &mut Value| -> Result<()> {
        let fields: Vec<UnboundPartitionField> =
            serde_json::from_value(list.take()).map_err(internal)?;
        *list = serde_json::to_value(edit(fields)?).map_err(internal)?;
        Ok(())
    };
    if let Some(Value::Array(specs)) = json.get_mut("partition-specs") {
        for fields in specs.iter_mut().filter_map(|s| s.get_mut("fields")) {
            edit_list(fields)?;
        }
    }
    // A v1 table's default spec, kept in step.
    if let Some(list @ Value::Array(_)) = json.get_mut("partition-spec") {
        edit_list(list)?;
    }
    Ok(())
}

fn unshield_field(mut field: UnboundPartitionField) -> Result<UnboundPartitionField> {
    let Some(rest) = field.name.strip_prefix(MARK) else {
        return Ok(field);
    };
    let (transform, name) = rest
        .split_once(MARK)
        .ok_or_else(|| CatalogError::Internal(format!("malformed shielded name {rest:?}")))?;
    field.transform = transform.parse().map_err(|e: iceberg::Error| {
        CatalogError::Internal(format!("shielded transform {transform:?}: {e}"))
    })?;
    field.name = name.to_string();
    Ok(field)
}

/// Shields the fields the builder would refuse and Java accepts. With `check`, first makes the
/// checks Java makes when it binds a spec from a request. Returns whether anything changed.
fn shield_fields(
    fields: Vec<UnboundPartitionField>,
    schema: &Schema,
    check: bool,
) -> Result<(Vec<UnboundPartitionField>, bool)> {
    if check {
        check_like_reference(&fields, schema)?;
    }
    // A field is shielded when it is named like its own source column without being an
    // identity, or when an earlier field already has its source and transform family.
    let mut shield = vec![false; fields.len()];
    let mut used: HashSet<(i32, String)> = HashSet::new();
    for (i, f) in fields.iter().enumerate() {
        let Some(source) = schema.field_by_id(f.source_id) else {
            continue; // the builder's own error says it best
        };
        if f.name.contains(MARK) {
            continue;
        }
        let named_like_source = f.transform != Transform::Identity
            && schema
                .field_by_name(&f.name)
                .is_some_and(|column| column.id == source.id);
        if named_like_source || !used.insert((f.source_id, f.transform.dedup_name())) {
            shield[i] = true;
        }
    }
    if !shield.contains(&true) {
        return Ok((fields, false));
    }
    // Stand-ins must not collide with the fields the builder sees as they are.
    let mut used: HashSet<(i32, String)> = fields
        .iter()
        .zip(&shield)
        .filter(|(_, s)| !**s)
        .map(|(f, _)| (f.source_id, f.transform.dedup_name()))
        .collect();
    let mut out = Vec::with_capacity(fields.len());
    for (mut f, shielded) in fields.into_iter().zip(shield) {
        if shielded {
            let source_type = schema
                .field_by_id(f.source_id)
                .map(|s| s.field_type.as_ref().clone())
                .ok_or_else(|| CatalogError::Internal("shielded field lost its source".into()))?;
            let stand_in = stand_ins()
                .find(|t| {
                    !used.contains(&(f.source_id, t.dedup_name()))
                        && (*t == Transform::Void
                            || (source_type.is_primitive() && t.result_type(&source_type).is_ok()))
                })
                .ok_or_else(|| {
                    CatalogError::Unsupported(format!(
                        "Cannot keep partition field {}: source column {} has more partition \
                         fields of one transform family than Pangolin can store",
                        f.name, f.source_id
                    ))
                })?;
            used.insert((f.source_id, stand_in.dedup_name()));
            f.name = format!("{MARK}{}{MARK}{}", f.transform, f.name);
            f.transform = stand_in;
        }
        out.push(f);
    }
    Ok((out, true))
}

/// Transforms the builder accepts on a column, each of its own family.
fn stand_ins() -> impl Iterator<Item = Transform> {
    let wide = (0..256u32).map(|k| i32::MAX as u32 - k);
    [Transform::Void, Transform::Unknown, Transform::Identity]
        .into_iter()
        .chain(wide.clone().map(Transform::Bucket))
        .chain(wide.map(Transform::Truncate))
}

/// What Java's `PartitionSpec.Builder` checks when it binds a spec received in a request
/// (`add(sourceId, fieldId, name, transform)`, then `checkCompatibility`).
fn check_like_reference(fields: &[UnboundPartitionField], schema: &Schema) -> Result<()> {
    let mut names = HashSet::new();
    for f in fields {
        if f.name.is_empty() {
            return Err(CatalogError::bad_request(format!(
                "Cannot use empty partition name: {}",
                f.name
            )));
        }
        if f.name.contains(MARK) || f.name.chars().any(char::is_control) {
            return Err(CatalogError::bad_request(format!(
                "Invalid partition name {:?}: control characters are not allowed",
                f.name
            )));
        }
        if let Some(column) = schema.field_by_name(&f.name) {
            if column.id != f.source_id {
                return Err(CatalogError::bad_request(format!(
                    "Cannot create identity partition sourced from different field in schema: {}",
                    f.name
                )));
            }
        }
        if !names.insert(f.name.as_str()) {
            return Err(CatalogError::bad_request(format!(
                "Cannot use partition name more than once: {}",
                f.name
            )));
        }
        if f.transform == Transform::Void {
            continue;
        }
        let Some(source) = schema.field_by_id(f.source_id) else {
            return Err(CatalogError::bad_request(format!(
                "Cannot find source column for partition field: {} ({}: {})",
                f.name, f.source_id, f.transform
            )));
        };
        let source_type: &Type = &source.field_type;
        if !source_type.is_primitive() {
            return Err(CatalogError::bad_request(format!(
                "Cannot partition by non-primitive source field: {source_type}"
            )));
        }
        if f.transform.result_type(source_type).is_err() {
            return Err(CatalogError::bad_request(format!(
                "Invalid source type {source_type} for transform: {}",
                f.transform
            )));
        }
    }
    Ok(())
}

fn internal(e: serde_json::Error) -> CatalogError {
    CatalogError::Internal(format!("cannot rewrite partition specs: {e}"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use iceberg::spec::{
        FormatVersion, NestedField, PrimitiveType, SortOrder, TableMetadataBuilder, Type,
    };

    use super::*;

    fn schema() -> Schema {
        Schema::builder()
            .with_fields(vec![
                NestedField::optional(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
                NestedField::optional(2, "ts", Type::Primitive(PrimitiveType::Timestamp)).into(),
                NestedField::optional(3, "ratio", Type::Primitive(PrimitiveType::Float)).into(),
            ])
            .build()
            .expect("schema")
    }

    fn spec(fields: &[(i32, i32, &str, &str)]) -> UnboundPartitionSpec {
        serde_json::from_value(serde_json::json!({
            "spec-id": 1,
            "fields": fields.iter().map(|(source, id, transform, name)| serde_json::json!({
                "source-id": source, "field-id": id, "transform": transform, "name": name
            })).collect::<Vec<_>>()
        }))
        .expect("spec")
    }

    fn build_v1(spec: &UnboundPartitionSpec) -> Result<TableMetadata> {
        let metadata = TableMetadataBuilder::new(
            schema(),
            shield_spec(spec, &schema())?,
            SortOrder::unsorted_order(),
            "s3://bucket/t".into(),
            FormatVersion::V1,
            HashMap::new(),
        )?
        .build()?
        .metadata;
        unshield(metadata)
    }

    #[test]
    fn specs_the_builder_accepts_pass_through_unchanged() {
        let plain = spec(&[
            (1, 1000, "bucket[16]", "id_bucket"),
            (2, 1001, "day", "ts_day"),
        ]);
        assert_eq!(shield_spec(&plain, &schema()).expect("shield"), plain);
    }

    #[test]
    fn shielded_fields_come_back_as_sent() {
        let sent = spec(&[
            (2, 1000, "day", "ts_day"),
            (2, 1001, "hour", "ts_hour"),
            (1, 1002, "void", "id"),
            (3, 1003, "void", "ratio"),
            (3, 1004, "void", "ratio_2"),
        ]);
        let shielded = shield_spec(&sent, &schema()).expect("shield");
        assert_ne!(shielded, sent);
        assert_eq!(
            shield_spec(&sent, &schema()).expect("shield"),
            shielded,
            "deterministic"
        );
        let metadata = build_v1(&sent).expect("built");
        let got: Vec<UnboundPartitionField> = metadata
            .default_partition_spec()
            .fields()
            .iter()
            .cloned()
            .map(Into::into)
            .collect();
        assert_eq!(got, sent.fields());
        // A builder taking the stored metadata again sees shielded specs only.
        let again = shield_metadata(metadata).expect("shield metadata");
        assert!(again
            .default_partition_spec()
            .fields()
            .iter()
            .any(|f| f.name.starts_with(MARK)));
        assert_eq!(
            unshield(again)
                .expect("unshield")
                .default_partition_spec()
                .fields()
                .len(),
            5
        );
    }

    #[test]
    fn a_float_column_holds_at_most_three_transform_families() {
        // Only identity, void and unknown take a float: a fourth family cannot be stood in for.
        let three = spec(&[
            (3, 1000, "identity", "ratio_id"),
            (3, 1001, "void", "ratio_a"),
            (3, 1002, "void", "ratio_b"),
        ]);
        assert!(build_v1(&three).is_ok());
        let four = spec(&[
            (3, 1000, "identity", "ratio_id"),
            (3, 1001, "void", "ratio_a"),
            (3, 1002, "void", "ratio_b"),
            (3, 1003, "void", "ratio"),
        ]);
        let err = shield_spec(&four, &schema()).expect_err("no stand-in left");
        assert!(matches!(err, CatalogError::Unsupported(_)), "{err}");
    }

    #[test]
    fn what_java_refuses_is_refused() {
        for (fields, message) in [
            (vec![(2, 1000, "day", "")], "empty partition name"),
            (
                vec![(2, 1000, "day", "d"), (2, 1001, "hour", "d")],
                "more than once",
            ),
            (vec![(2, 1000, "day", "id")], "different field"),
            (vec![(9, 1000, "day", "x")], "Cannot find source column"),
            (vec![(1, 1000, "hour", "id_hour")], "Invalid source type"),
            (
                vec![(1, 1000, "void", "\u{1}void\u{1}id")],
                "control characters",
            ),
        ] {
            let err = shield_spec(&spec(&fields), &schema()).expect_err(message);
            assert!(err.to_string().contains(message), "{err} lacks {message:?}");
        }
    }
}
