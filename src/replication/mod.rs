//! Replication: copying objects between regions (and, later, shipping the change log).
//!
//! [`copier`] makes sure the objects a table commit references exist in a region's bucket,
//! copying what is missing from another region. The primary uses it at commit time for
//! commits forwarded from a secondary (ARCHITECTURE.md §5 step 0); the replicator uses it in
//! the other direction before applying a change (§8).

pub mod copier;

pub use copier::{
    copy_commit_objects, objects_added_by_commit, CopyError, CopyReport, ObjectCopier,
};
