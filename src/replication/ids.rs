//! Deterministic ids for the entities every region creates by itself at first start
//! (`[bootstrap]`), so that they carry the same ids in every region and the primary's change
//! records (which name them by id) apply everywhere.

use sha2::{Digest, Sha256};

use crate::config::BootstrapSection;
use crate::store::{BootstrapEntities, Catalog, Tenant, Warehouse};

/// A name-based UUID (version 8, the first 16 bytes of SHA-256 of `pangolin:<kind>:<name>`):
/// the same in every region for the same kind and name.
pub fn deterministic_id(kind: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("pangolin:{kind}:{name}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// The bootstrap tenant, warehouse and catalog of `[bootstrap]` with their deterministic ids
/// (warehouse and catalog ids are scoped by the tenant name). No warehouse or catalog when
/// `bootstrap.catalog` is empty.
pub fn bootstrap_entities(b: &BootstrapSection) -> BootstrapEntities {
    let tenant = Tenant {
        id: deterministic_id("tenant", &b.tenant),
        name: b.tenant.clone(),
    };
    if b.catalog.is_empty() {
        return BootstrapEntities {
            tenant,
            warehouse: None,
            catalog: None,
        };
    }
    let scoped = format!("{}/{}", b.tenant, b.catalog);
    let warehouse = Warehouse {
        id: deterministic_id("warehouse", &scoped),
        tenant_id: tenant.id.clone(),
        name: b.catalog.clone(),
        bucket: b.bucket.clone(),
        key_prefix: String::new(),
    };
    let catalog = Catalog {
        id: deterministic_id("catalog", &scoped),
        tenant_id: tenant.id.clone(),
        warehouse_id: warehouse.id.clone(),
        name: b.catalog.clone(),
        properties: Default::default(),
    };
    BootstrapEntities {
        tenant,
        warehouse: Some(warehouse),
        catalog: Some(catalog),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_uuids_distinct_per_kind_and_name() {
        let a = deterministic_id("tenant", "default");
        assert_eq!(a, deterministic_id("tenant", "default"));
        assert_ne!(a, deterministic_id("catalog", "default"));
        assert_ne!(a, deterministic_id("tenant", "other"));
        let parsed = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(parsed.get_version_num(), 8);
    }

    #[test]
    fn bootstrap_entities_hang_together() {
        let b = BootstrapSection::default();
        let e = bootstrap_entities(&b);
        let w = e.warehouse.unwrap();
        let c = e.catalog.unwrap();
        assert_eq!(w.tenant_id, e.tenant.id);
        assert_eq!(c.warehouse_id, w.id);
        assert_eq!(c.name, "demo");
        assert_eq!(w.bucket, "demo");
        let none = bootstrap_entities(&BootstrapSection {
            catalog: String::new(),
            ..BootstrapSection::default()
        });
        assert!(none.catalog.is_none() && none.warehouse.is_none());
    }
}
