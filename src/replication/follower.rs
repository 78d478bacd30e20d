//! [`StaticPrimary`]: the write authority of a region that follows a fixed primary
//! (`[replication] primary`, deployments and tests without a control plane). It never commits
//! itself: every write is forwarded to the primary, whose change log this region applies.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::error::CatalogError;
use crate::routing::{WriteAuthority, WriteRoute};

/// Forwards every write to a fixed primary region.
pub struct StaticPrimary {
    primary: String,
    catalog_url: String,
    epoch: AtomicI64,
}

impl StaticPrimary {
    pub fn new(primary: String, catalog_url: String, epoch: i64) -> StaticPrimary {
        StaticPrimary {
            primary,
            catalog_url,
            epoch: AtomicI64::new(epoch),
        }
    }
}

impl WriteAuthority for StaticPrimary {
    fn route(&self) -> WriteRoute {
        WriteRoute::Forward {
            region: self.primary.clone(),
            catalog_url: self.catalog_url.clone(),
        }
    }

    fn epoch(&self) -> i64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn ensure_can_commit(&self) -> Result<(), CatalogError> {
        Err(CatalogError::Unavailable(format!(
            "this region follows {}; writes go there",
            self.primary
        )))
    }

    fn observe_epoch(&self, current: i64) {
        self.epoch.fetch_max(current, Ordering::AcqRel);
    }
}
