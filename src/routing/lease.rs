//! The write authority of a region under the control plane: commit here only while this
//! node holds a valid write lease; otherwise forward to the primary the control plane names.
//!
//! Every epoch the node learns is also written into the region's own store (`set_epoch` only
//! raises), so a commit still carrying an older epoch is refused by the store transaction
//! itself, whatever the lease check said.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{WriteAuthority, WriteRoute};
use crate::control::lease::WriteLease;
use crate::error::CatalogError;
use crate::store::MetadataStore;

/// Lease-backed [`WriteAuthority`].
pub struct LeaseAuthority {
    region: String,
    lease: WriteLease,
    /// Catalog URL of every region, for forwarding.
    catalog_urls: HashMap<String, String>,
    /// The epoch the region's store holds, as last written or observed.
    store_epoch: Arc<AtomicI64>,
}

impl LeaseAuthority {
    /// Starts following the control plane: every newer epoch is written to `store`.
    pub async fn start(
        region: String,
        lease: WriteLease,
        catalog_urls: HashMap<String, String>,
        store: Arc<dyn MetadataStore>,
        shutdown: CancellationToken,
    ) -> Result<LeaseAuthority, CatalogError> {
        let store_epoch = Arc::new(AtomicI64::new(store.current_epoch().await?));
        let mut known = lease.known();
        let synced = store_epoch.clone();
        tokio::spawn(async move {
            loop {
                let epoch = known.borrow_and_update().epoch as i64;
                if epoch > synced.load(Ordering::Acquire) {
                    match store.set_epoch(epoch).await {
                        Ok(()) => {
                            synced.fetch_max(epoch, Ordering::AcqRel);
                            tracing::info!(epoch, "region store fenced at the new epoch");
                        }
                        Err(e) => tracing::warn!(error = %e, epoch, "cannot raise the store epoch"),
                    }
                }
                tokio::select! {
                    changed = known.changed() => if changed.is_err() { break },
                    _ = shutdown.cancelled() => break,
                }
            }
        });
        Ok(LeaseAuthority {
            region,
            lease,
            catalog_urls,
            store_epoch,
        })
    }

    /// The lease, if valid and the store already fenced at its epoch.
    fn usable_lease(&self) -> Option<i64> {
        let (epoch, _) = self.lease.current()?;
        let epoch = epoch as i64;
        (self.store_epoch.load(Ordering::Acquire) == epoch).then_some(epoch)
    }
}

impl WriteAuthority for LeaseAuthority {
    fn route(&self) -> WriteRoute {
        if self.usable_lease().is_some() {
            return WriteRoute::Local;
        }
        let known = self.lease.known().borrow().clone();
        match known.primary {
            Some(p) if p == self.region => WriteRoute::Unavailable(format!(
                "{} is primary but this node holds no valid write lease yet (epoch {})",
                self.region, known.epoch
            )),
            Some(p) => match self.catalog_urls.get(&p) {
                Some(url) => WriteRoute::Forward {
                    region: p,
                    catalog_url: url.clone(),
                },
                None => WriteRoute::Unavailable(format!(
                    "primary region {p} has no catalog_url in [[regions]]"
                )),
            },
            None => WriteRoute::Unavailable(
                "no primary region right now (switchover in progress or control plane unreachable)"
                    .into(),
            ),
        }
    }

    fn epoch(&self) -> i64 {
        self.lease
            .held_lease()
            .map(|(e, _)| e as i64)
            .unwrap_or_else(|| self.store_epoch.load(Ordering::Acquire))
    }

    fn ensure_can_commit(&self) -> Result<(), CatalogError> {
        self.usable_lease().map(|_| ()).ok_or_else(|| {
            CatalogError::Unavailable(format!(
                "{} lost its write lease before the commit; retry",
                self.region
            ))
        })
    }

    fn observe_epoch(&self, current: i64) {
        self.store_epoch.fetch_max(current, Ordering::AcqRel);
    }
}
