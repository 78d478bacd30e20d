//! What suites that drive a `MetadataStore` directly write with.

use pangolin::store::WriteContext;

/// A write at epoch 1 by actor `test`.
pub fn ctx() -> WriteContext {
    WriteContext {
        epoch: 1,
        actor: "test".into(),
    }
}

/// A namespace's parts as the store takes them.
pub fn ns(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| p.to_string()).collect()
}
