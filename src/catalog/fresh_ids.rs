//! Fresh field ids in the reference implementation's order.
//!
//! A new table's schema gets fresh field ids. The `iceberg` crate (0.10) numbers a map's
//! key, then the key's nested fields, then the value; the Java reference implementation, and
//! PyIceberg which mirrors it client-side, number key and value first and then recurse. For
//! schemas with maps the two differ, and clients that compare schemas by id (PyIceberg's
//! `update_schema` round trips) see different ids than they assigned. This renumbers a freshly
//! built table's metadata into the reference order; schemas without maps are unchanged.

use std::collections::HashMap;

use iceberg::spec::TableMetadata;
use serde_json::Value;

use crate::error::{CatalogError, Result};

/// Renumbers the fields of a single-schema table's metadata in the reference order.
pub fn renumber_like_reference(metadata: TableMetadata) -> Result<TableMetadata> {
    let mut json = serde_json::to_value(&metadata).map_err(internal)?;
    let Some(schemas) = json.get_mut("schemas").and_then(Value::as_array_mut) else {
        return Ok(metadata);
    };
    if schemas.len() != 1 || !contains_map(&schemas[0]) {
        return Ok(metadata);
    }
    let mut ids = HashMap::new();
    let mut next = 1;
    assign_struct(&mut schemas[0], &mut next, &mut ids);
    if ids.iter().all(|(old, new)| old == new) {
        return Ok(metadata);
    }
    if let Some(identifiers) = schemas[0]
        .get_mut("identifier-field-ids")
        .and_then(Value::as_array_mut)
    {
        for id in identifiers {
            remap(id, &ids);
        }
    }
    for (list, field) in [("partition-specs", "fields"), ("sort-orders", "fields")] {
        if let Some(items) = json.get_mut(list).and_then(Value::as_array_mut) {
            for item in items {
                if let Some(fields) = item.get_mut(field).and_then(Value::as_array_mut) {
                    for f in fields {
                        if let Some(src) = f.get_mut("source-id") {
                            remap(src, &ids);
                        }
                    }
                }
            }
        }
    }
    serde_json::from_value(json).map_err(internal)
}

fn internal(e: serde_json::Error) -> CatalogError {
    CatalogError::Internal(format!("cannot renumber fresh field ids: {e}"))
}

fn remap(v: &mut Value, ids: &HashMap<i64, i64>) {
    if let Some(new) = v.as_i64().and_then(|old| ids.get(&old)) {
        *v = Value::from(*new);
    }
}

fn contains_map(v: &Value) -> bool {
    match v {
        Value::Object(o) => {
            o.get("type").and_then(Value::as_str) == Some("map") || o.values().any(contains_map)
        }
        Value::Array(a) => a.iter().any(contains_map),
        _ => false,
    }
}

fn take_id(slot: Option<&mut Value>, next: &mut i64, ids: &mut HashMap<i64, i64>) {
    if let Some(slot) = slot {
        if let Some(old) = slot.as_i64() {
            ids.insert(old, *next);
        }
        *slot = Value::from(*next);
        *next += 1;
    }
}

/// A struct: ids for all its fields first, then each field's type.
fn assign_struct(s: &mut Value, next: &mut i64, ids: &mut HashMap<i64, i64>) {
    let Some(fields) = s.get_mut("fields").and_then(Value::as_array_mut) else {
        return;
    };
    for f in fields.iter_mut() {
        take_id(f.get_mut("id"), next, ids);
    }
    for f in fields.iter_mut() {
        if let Some(t) = f.get_mut("type") {
            assign_type(t, next, ids);
        }
    }
}

fn assign_type(t: &mut Value, next: &mut i64, ids: &mut HashMap<i64, i64>) {
    match t.get("type").and_then(Value::as_str) {
        Some("struct") => assign_struct(t, next, ids),
        Some("list") => {
            take_id(t.get_mut("element-id"), next, ids);
            if let Some(e) = t.get_mut("element") {
                assign_type(e, next, ids);
            }
        }
        Some("map") => {
            take_id(t.get_mut("key-id"), next, ids);
            take_id(t.get_mut("value-id"), next, ids);
            if let Some(k) = t.get_mut("key") {
                assign_type(k, next, ids);
            }
            if let Some(v) = t.get_mut("value") {
                assign_type(v, next, ids);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iceberg::spec::{Schema, SortOrder, TableMetadataBuilder, UnboundPartitionSpec};

    #[test]
    fn map_key_and_value_ids_come_before_their_nested_fields() {
        let schema: Schema = serde_json::from_value(serde_json::json!({
        "type": "struct", "schema-id": 0, "fields": [
            {"id": 1, "name": "id", "required": true, "type": "long"},
            {"id": 2, "name": "m", "required": false, "type": {
                "type": "map", "key-id": 3, "value-id": 4, "value-required": false,
                "key": {"type": "struct", "fields": [
                    {"id": 5, "name": "k", "required": true, "type": "string"}]},
                "value": {"type": "struct", "fields": [
                    {"id": 6, "name": "v", "required": false, "type": "int"}]}
            }}
        ]}))
        .unwrap();
        let built = TableMetadataBuilder::new(
            schema,
            UnboundPartitionSpec::builder().build(),
            SortOrder::unsorted_order(),
            "s3://b/t".into(),
            iceberg::spec::FormatVersion::V2,
            HashMap::new(),
        )
        .unwrap()
        .build()
        .unwrap()
        .metadata;
        let renumbered = renumber_like_reference(built).unwrap();
        let json = serde_json::to_value(renumbered.current_schema()).unwrap();
        let map = &json["fields"][1]["type"];
        assert_eq!(
            (map["key-id"].as_i64(), map["value-id"].as_i64()),
            (Some(3), Some(4))
        );
        assert_eq!(map["key"]["fields"][0]["id"], 5);
        assert_eq!(map["value"]["fields"][0]["id"], 6);
        assert_eq!(renumbered.last_column_id(), 6);
    }
}
