//! Where tables and views may live, and what a purge may delete.
//!
//! A location a client names (createTable `location`, a registered metadata file, a
//! `set-location` update) must lie strictly inside its catalog's warehouse storage
//! (`s3://<bucket>/<key prefix>/...`) and be a plain path: `s3://`, no empty, `.` or `..`
//! segments, no control characters. The store then checks, in the transaction that claims
//! it, that no other live table or view owns an overlapping location
//! (`store::sql::locations`).
//!
//! A purge deletes only objects under the locations the dropped entity owned, and of those
//! only what no other live entity's location covers (rows written before locations were
//! recorded could overlap). Files the table references outside its own locations (a custom
//! `write.data.path`) are left in place: the catalog cannot prove that no one else uses them.
//! The primary and every secondary apply this rule against their own rows.

use crate::error::{CatalogError, Result};
use crate::storage::ObjectStore;
use crate::store::{location_within, MetadataStore, Warehouse};

/// S3 keys are at most 1024 bytes; leave room for `metadata/<version>-<uuid>.metadata.json`
/// and data file names under the location.
const MAX_LOCATION_BYTES: usize = 768;

/// `s3://<bucket>/<prefix>`: the storage a warehouse's tables live in.
pub fn warehouse_root(warehouse: &Warehouse) -> String {
    let prefix = warehouse.key_prefix.trim_matches('/');
    if prefix.is_empty() {
        format!("s3://{}", warehouse.bucket)
    } else {
        format!("s3://{}/{prefix}", warehouse.bucket)
    }
}

/// Checks that `location` is a plain `s3://` path strictly inside the warehouse; returns it
/// without trailing slashes.
pub fn check_location(warehouse: &Warehouse, what: &str, location: &str) -> Result<String> {
    let trimmed = location.trim_end_matches('/');
    let root = warehouse_root(warehouse);
    let invalid = |why: &str| {
        CatalogError::bad_request(format!("Invalid {what} {location:?}: {why}"))
    };
    if trimmed.len() > MAX_LOCATION_BYTES {
        return Err(invalid(&format!(
            "longer than {MAX_LOCATION_BYTES} bytes"
        )));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(invalid("contains a control character"));
    }
    let Some(path) = trimmed.strip_prefix("s3://") else {
        return Err(invalid(&format!(
            "must be an s3:// location inside the warehouse storage {root}/"
        )));
    };
    if path
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return Err(invalid(
            "must not contain empty, '.' or '..' path segments",
        ));
    }
    if trimmed == root || !location_within(trimmed, &root) {
        return Err(invalid(&format!(
            "must lie inside the warehouse storage {root}/"
        )));
    }
    Ok(trimmed.to_string())
}

/// What a purge did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PurgeOutcome {
    pub deleted: usize,
    /// Objects under the dropped entity's locations left because another live entity owns them.
    pub kept: usize,
    /// Locations not purged at all because another live entity's location covers them.
    pub skipped_locations: Vec<String>,
}

/// Deletes the objects under `locations` (the locations a dropped entity owned) that no
/// other live entity's location covers. Call it after the drop is committed: a crash in
/// between leaves unreferenced files, never a pointer to missing files.
pub async fn purge_locations(
    store: &dyn MetadataStore,
    objects: &ObjectStore,
    locations: &[String],
) -> std::result::Result<PurgeOutcome, String> {
    let mut outcome = PurgeOutcome::default();
    if !store
        .entities_without_location(1)
        .await
        .map_err(|e| e.to_string())?
        .is_empty()
    {
        // An entity whose location is not known yet could lie anywhere: purge nothing.
        outcome.skipped_locations = locations.to_vec();
        return Ok(outcome);
    }
    for location in locations {
        let location = location.trim_end_matches('/');
        let root_only = crate::storage::parse_location(location)
            .map(|(_, key)| key.trim_matches('/').is_empty())
            .unwrap_or(true);
        if root_only {
            outcome.skipped_locations.push(location.to_string());
            continue;
        }
        let claims = store
            .location_claims(location)
            .await
            .map_err(|e| e.to_string())?;
        if claims.iter().any(|c| location_within(location, &c.location)) {
            outcome.skipped_locations.push(location.to_string());
            continue;
        }
        let inner: Vec<&str> = claims.iter().map(|c| c.location.as_str()).collect();
        if inner.is_empty() {
            outcome.deleted += objects
                .delete_prefix(location)
                .await
                .map_err(|e| e.to_string())?;
            continue;
        }
        let keys = objects
            .list(&format!("{location}/"))
            .await
            .map_err(|e| e.to_string())?;
        for key in keys {
            if inner.iter().any(|c| location_within(&key, c)) {
                outcome.kept += 1;
            } else {
                objects.delete(&key).await.map_err(|e| e.to_string())?;
                outcome.deleted += 1;
            }
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warehouse(prefix: &str) -> Warehouse {
        Warehouse {
            id: "w".into(),
            tenant_id: "t".into(),
            name: "demo".into(),
            bucket: "demo".into(),
            key_prefix: prefix.into(),
        }
    }

    #[test]
    fn locations_must_lie_strictly_inside_the_warehouse() {
        let w = warehouse("");
        assert_eq!(
            check_location(&w, "location", "s3://demo/a/b/").unwrap(),
            "s3://demo/a/b"
        );
        for bad in [
            "s3://demo",
            "s3://demo/",
            "s3://other/x",
            "s3://demox/a",
            "s3a://demo/a",
            "/tmp/x",
            "s3://demo/a/../b",
            "s3://demo/a/./b",
            "s3://demo//a",
            "s3://demo/a\u{0}b",
        ] {
            assert!(check_location(&w, "location", bad).is_err(), "{bad}");
        }
        let w = warehouse("/tenants/acme/");
        assert!(check_location(&w, "location", "s3://demo/tenants/acme/t").is_ok());
        assert!(check_location(&w, "location", "s3://demo/tenants/acme").is_err());
        assert!(check_location(&w, "location", "s3://demo/tenants/acmeco/t").is_err());
    }
}
