//! Replication: the change log shipped from the primary region to the others, the objects
//! its table commits reference copied first (docs/replication.md).
//!
//! - [`copier`] makes sure the objects a table commit references exist in a region's bucket,
//!   copying what is missing from another region. The primary uses it at commit time for
//!   commits forwarded from a secondary (ARCHITECTURE.md §5 step 0); the replicator uses it in
//!   the other direction before applying a change (§8).
//! - [`replicator`]: [`Replication`], the task that follows the primary's change log and
//!   applies it (objects before rows, one transaction with the watermark), with its status,
//!   pause and resume.
//! - [`api`]: `/api/v1/replication/{changes,status,pause,resume}` on the catalog port.
//! - [`sync`]: [`SyncReplication`], the secondaries' applied watermarks as the primary
//!   learns them from their pulls, sync-mode commit waits, and [`CommitToken`].
//! - [`verify`], [`resync`], [`failback`] and their API [`anti_entropy_api`]: compare a
//!   region with the primary, rebuild a catalog from it, and quarantine an old primary's
//!   unreplicated commits before converging it.
//! - `pipeline`: how the replicator makes a pulled page's objects present, concurrently
//!   across the page, before applying it.
//! - [`catch_up`]: [`HttpCatchUp`], the hook a planned switchover waits on.
//! - [`ids`]: deterministic ids of the bootstrap entities, equal in every region.
//! - [`follower`]: [`StaticPrimary`], the write authority of a region following a fixed
//!   primary (no control plane).

pub mod anti_entropy_api;
pub mod api;
pub mod catch_up;
pub mod copier;
pub mod failback;
pub mod follower;
pub mod ids;
mod pipeline;
pub mod replicator;
pub mod resync;
pub mod sync;
pub mod verify;

pub use catch_up::HttpCatchUp;
pub use copier::{
    copy_commit_objects, objects_added_by_commit, objects_of_table, objects_to_replicate,
    CopyError, CopyReport, ObjectCopier,
};
pub use follower::StaticPrimary;
pub use ids::{bootstrap_entities, deterministic_id};
pub use replicator::{
    ChangesPage, CrashPoint, LastError, PeerRegion, PrimarySource, Replication, ReplicationStatus,
};
pub use resync::ResyncReport;
pub use sync::{CommitToken, SyncReplication};
pub use verify::{Difference, VerifyReport};
