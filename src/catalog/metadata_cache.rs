//! Parsed table metadata by metadata location. Metadata files are immutable, so an entry is
//! valid forever; the cache only bounds memory. loadTable serves the cached JSON bytes
//! without re-serializing.

use std::sync::Arc;

use bytes::Bytes;
use iceberg::spec::TableMetadata;

use crate::error::{CatalogError, Result};

/// One metadata file, parsed and as JSON.
#[derive(Debug)]
pub struct CachedMetadata {
    pub metadata: Arc<TableMetadata>,
    pub json: Bytes,
}

impl CachedMetadata {
    /// `json` is the file's content when already at hand; otherwise it is serialized.
    pub fn new(metadata: TableMetadata, json: Option<Bytes>) -> Result<CachedMetadata> {
        let json = match json {
            Some(j) => j,
            None => Bytes::from(metadata_json(&metadata)?),
        };
        Ok(CachedMetadata {
            metadata: Arc::new(metadata),
            json,
        })
    }
}

/// Table metadata as written to a metadata file. Snapshots are listed in the order they were
/// added (sequence number, then timestamp), as the reference implementation keeps them: the
/// `iceberg` crate holds them in a hash map, and clients compare snapshot lists in order.
pub fn metadata_json(metadata: &TableMetadata) -> Result<Vec<u8>> {
    let err = |e: serde_json::Error| {
        CatalogError::Internal(format!("cannot serialize table metadata: {e}"))
    };
    let mut value = serde_json::to_value(metadata).map_err(err)?;
    if let Some(serde_json::Value::Array(snapshots)) = value.get_mut("snapshots") {
        let id = |s: &serde_json::Value| s.get("snapshot-id").and_then(|v| v.as_i64());
        let parents: std::collections::HashMap<i64, i64> = snapshots
            .iter()
            .filter_map(|s| Some((id(s)?, s.get("parent-snapshot-id")?.as_i64()?)))
            .collect();
        // Ancestors within the table: a child sorts after its parent when sequence numbers
        // and timestamps tie (v1 tables, several snapshots in one commit).
        let depth = |mut cur: Option<i64>| {
            let mut d = 0usize;
            while let Some(p) = cur.and_then(|c| parents.get(&c)) {
                d += 1;
                cur = Some(*p);
                if d > parents.len() {
                    break;
                }
            }
            d
        };
        snapshots.sort_by_cached_key(|s| {
            (
                s.get("sequence-number")
                    .and_then(|v| v.as_i64())
                    .unwrap_or(0),
                s.get("timestamp-ms").and_then(|v| v.as_i64()).unwrap_or(0),
                depth(id(s)),
            )
        });
    }
    float_defaults_as_sent(&mut value);
    serde_json::to_vec(&value).map_err(err)
}

/// The `iceberg` crate holds a `float` column's `initial-default` and `write-default` as f32
/// and writes them widened to f64, so a client that sent 22.27 would read back
/// 22.270000457763672. Like the reference implementation, write the shortest decimal that
/// reads back as the same f32. Applies to the `schemas` (and v1 `schema`) of serialized table
/// or view metadata.
pub fn float_defaults_as_sent(metadata: &mut serde_json::Value) {
    for key in ["schemas", "schema"] {
        if let Some(v) = metadata.get_mut(key) {
            shorten_float_defaults(v);
        }
    }
}

fn shorten_float_defaults(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(object) => {
            if object.get("type").and_then(Value::as_str) == Some("float") {
                for key in ["initial-default", "write-default"] {
                    if let Some(Value::Number(n)) = object.get_mut(key) {
                        let shortest = n
                            .as_f64()
                            .and_then(|f| (f as f32).to_string().parse::<f64>().ok())
                            .and_then(serde_json::Number::from_f64);
                        if let Some(shortest) = shortest {
                            *n = shortest;
                        }
                    }
                }
            }
            object.values_mut().for_each(shorten_float_defaults);
        }
        Value::Array(items) => items.iter_mut().for_each(shorten_float_defaults),
        _ => {}
    }
}

/// Bounded cache of [`CachedMetadata`].
pub struct MetadataCache {
    inner: moka::sync::Cache<String, Arc<CachedMetadata>>,
}

impl MetadataCache {
    /// A cache holding at most about `max_bytes` of metadata: an entry weighs four times its
    /// JSON (the bytes served plus the parsed form, which takes a few times the JSON's size).
    pub fn new(max_bytes: u64) -> MetadataCache {
        MetadataCache {
            inner: moka::sync::Cache::builder()
                .max_capacity(max_bytes.max(1))
                .weigher(|_, entry: &Arc<CachedMetadata>| {
                    u32::try_from(entry.json.len().saturating_mul(4)).unwrap_or(u32::MAX)
                })
                .build(),
        }
    }

    pub fn get(&self, location: &str) -> Option<Arc<CachedMetadata>> {
        self.inner.get(location)
    }

    /// Caches metadata read from a file; `json` is the file's content.
    pub fn insert(
        &self,
        location: &str,
        metadata: TableMetadata,
        json: Bytes,
    ) -> Arc<CachedMetadata> {
        self.insert_cached(
            location,
            CachedMetadata {
                metadata: Arc::new(metadata),
                json,
            },
        )
    }

    pub fn insert_cached(&self, location: &str, cached: CachedMetadata) -> Arc<CachedMetadata> {
        let entry = Arc::new(cached);
        self.inner.insert(location.to_string(), entry.clone());
        entry
    }

    pub fn remove(&self, location: &str) {
        self.inner.invalidate(location);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_are_listed_in_the_order_they_were_added() {
        let mut m = serde_json::json!({
            "format-version": 1, "table-uuid": "9c12d441-03fe-4693-9a96-a0705ddf69c1",
            "location": "s3://b/t", "last-updated-ms": 3, "last-column-id": 1,
            "schema": {"type": "struct", "fields": [{"id": 1, "name": "x", "required": false, "type": "long"}]},
            "partition-spec": [], "properties": {}, "current-snapshot-id": 3,
            "snapshots": []
        });
        let snap = |id: i64, parent: Option<i64>, ts: i64| {
            let mut s = serde_json::json!({"snapshot-id": id, "timestamp-ms": ts,
                "manifest-list": format!("s3://b/t/metadata/snap-{id}.avro"),
                "summary": {"operation": "append"}});
            if let Some(p) = parent {
                s["parent-snapshot-id"] = p.into();
            }
            s
        };
        // Same timestamps (one commit adding two snapshots to a v1 table).
        m["snapshots"] =
            serde_json::json!([snap(3, Some(2), 5), snap(1, None, 1), snap(2, Some(1), 5)]);
        let metadata: TableMetadata = serde_json::from_value(m).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&metadata_json(&metadata).unwrap()).unwrap();
        let ids: Vec<i64> = json["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["snapshot-id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids, vec![1, 2, 3]);
    }
}
