//! The cross-region object copier (`pangolin::replication::copier`) between two in-process
//! regions, each with its own catalog and embedded S3 endpoint (bucket `demo`).
//!
//! Real Iceberg objects are produced with iceberg-rust 0.10 against region A (Parquet data
//! files, manifests and manifest lists of two fast-appends), as tests/it/iceberg_rust_client.rs
//! does. Covered: the objects a commit adds (checked against region A's bucket listing),
//! copying them to region B byte for byte, a second run copying nothing, a missing source
//! object (data file or manifest list) failing with an error naming it, a 40 MiB object
//! streamed as a multipart upload, a stale destination object being replaced, and the
//! server-side copy path between two buckets of one S3 endpoint.

use crate::common::{connect, fast_append, short, store_of, table_schema, write_data_file};

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use iceberg::spec::{SnapshotReference, SnapshotRetention};
use iceberg::table::Table;
use iceberg::{Catalog, NamespaceIdent, TableCreation, TableUpdate};
use pangolin::replication::{
    copy_commit_objects, objects_added_by_commit, CopyError, ObjectCopier,
};
use pangolin::storage::ObjectStore;
use pangolin::testing::TestRegion;
use sha2::{Digest, Sha256};

/// The updates a REST commit carries for a fast-append that produced `table`'s current
/// snapshot: AddSnapshot + SetSnapshotRef(main).
fn append_updates(table: &Table) -> Vec<TableUpdate> {
    let snapshot = table
        .metadata()
        .current_snapshot()
        .expect("current snapshot")
        .as_ref()
        .clone();
    let snapshot_id = snapshot.snapshot_id();
    vec![
        TableUpdate::AddSnapshot { snapshot },
        TableUpdate::SetSnapshotRef {
            ref_name: "main".to_string(),
            reference: SnapshotReference::new(
                snapshot_id,
                SnapshotRetention::branch(None, None, None),
            ),
        },
    ]
}

/// Every object under the table location except metadata JSON files (which the committing
/// catalog writes itself).
async fn table_objects(store: &ObjectStore, table: &Table) -> BTreeSet<String> {
    store
        .list(&format!("{}/", table.metadata().location()))
        .await
        .expect("list table objects")
        .into_iter()
        .filter(|l| !l.ends_with(".metadata.json"))
        .collect()
}

fn as_set(v: &[String]) -> BTreeSet<String> {
    let set: BTreeSet<String> = v.iter().cloned().collect();
    assert_eq!(set.len(), v.len(), "duplicates in {v:?}");
    set
}

async fn assert_same_bytes(a: &ObjectStore, b: &ObjectStore, locations: &BTreeSet<String>) {
    for l in locations {
        let in_a = a
            .get(l)
            .await
            .unwrap_or_else(|e| panic!("read {l} in A: {e}"));
        let in_b = b
            .get(l)
            .await
            .unwrap_or_else(|e| panic!("read {l} in B: {e}"));
        assert!(in_a == in_b, "{l} differs between the regions");
    }
}

async fn total_size(store: &ObjectStore, locations: &BTreeSet<String>) -> u64 {
    let mut total = 0;
    for l in locations {
        total += store
            .head(l)
            .await
            .expect("head")
            .unwrap_or_else(|| panic!("{l} missing"))
            .size;
    }
    total
}

/// Deterministic pseudo-random bytes (xorshift64*), so compression-free and not all zeros.
fn pseudo_random(len: usize, seed: u64) -> Bytes {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commit_objects_are_found_and_copied_to_another_region() {
    let region_a = TestRegion::start().await.expect("start region A");
    let region_b = TestRegion::start().await.expect("start region B");
    let store_a = store_of(&region_a).await;
    let store_b = store_of(&region_b).await;
    assert!(!store_a.same_service(&store_b));
    store_b.ensure_bucket("demo").await.expect("bucket in B");
    let catalog = connect(&region_a).await;

    let namespace = NamespaceIdent::new(short("c"));
    catalog
        .create_namespace(&namespace, HashMap::new())
        .await
        .expect("create namespace");
    let created = catalog
        .create_table(
            &namespace,
            TableCreation::builder()
                .name("t".to_string())
                .schema(table_schema())
                .build(),
        )
        .await
        .expect("create table");
    let location = created.metadata().location().to_string();
    assert!(location.starts_with("s3://demo/"), "{location}");
    let before = table_objects(&store_a, &created).await;

    // Commit 1: two Parquet files in one fast-append.
    let mut files = write_data_file(&created, &[1, 2, 3]).await;
    files.extend(write_data_file(&created, &[4, 5]).await);
    assert_eq!(files.len(), 2);
    let data_files_1: BTreeSet<String> = files.iter().map(|f| f.file_path().to_string()).collect();
    let t1 = fast_append(&catalog, &created, files).await;
    let after_1 = table_objects(&store_a, &t1).await;
    let expected_1: BTreeSet<String> = after_1.difference(&before).cloned().collect();

    let updates_1 = append_updates(&t1);
    let objects_1 = objects_added_by_commit(&store_a, created.metadata(), &updates_1)
        .await
        .expect("objects added by commit 1");
    let found_1 = as_set(&objects_1);
    assert_eq!(
        found_1, expected_1,
        "commit 1 objects vs the bucket listing"
    );
    // Exactly: the manifest list, one new manifest, the two data files.
    let snapshot_1 = t1
        .metadata()
        .current_snapshot()
        .expect("snapshot 1")
        .clone();
    assert_eq!(objects_1.len(), 4, "{objects_1:?}");
    assert_eq!(objects_1[0], snapshot_1.manifest_list());
    assert!(data_files_1.is_subset(&found_1));
    let manifests_1: Vec<&String> = objects_1
        .iter()
        .filter(|l| l.ends_with(".avro") && l.as_str() != snapshot_1.manifest_list())
        .collect();
    assert_eq!(manifests_1.len(), 1, "{objects_1:?}");

    // Commit 2: one more file on top of commit 1.
    let files_2 = write_data_file(&t1, &[6, 7]).await;
    let data_files_2: BTreeSet<String> =
        files_2.iter().map(|f| f.file_path().to_string()).collect();
    let t2 = fast_append(&catalog, &t1, files_2).await;
    let after_2 = table_objects(&store_a, &t2).await;
    let expected_2: BTreeSet<String> = after_2.difference(&after_1).cloned().collect();
    let updates_2 = append_updates(&t2);
    let objects_2 = objects_added_by_commit(&store_a, t1.metadata(), &updates_2)
        .await
        .expect("objects added by commit 2");
    let found_2 = as_set(&objects_2);
    assert_eq!(
        found_2, expected_2,
        "commit 2 objects vs the bucket listing"
    );
    assert_eq!(objects_2.len(), 3, "{objects_2:?}");
    assert!(data_files_2.is_subset(&found_2));
    // The manifest of commit 1 (re-listed in snapshot 2's manifest list) is not re-added.
    assert!(found_1.is_disjoint(&found_2));

    // Both snapshots against the metadata before either: the union.
    let both: Vec<TableUpdate> = vec![
        TableUpdate::AddSnapshot {
            snapshot: snapshot_1.as_ref().clone(),
        },
        TableUpdate::AddSnapshot {
            snapshot: t2
                .metadata()
                .current_snapshot()
                .expect("s2")
                .as_ref()
                .clone(),
        },
    ];
    let all = as_set(
        &objects_added_by_commit(&store_a, created.metadata(), &both)
            .await
            .expect("objects of both snapshots"),
    );
    assert_eq!(all, after_2.difference(&before).cloned().collect());
    // Snapshots the base already has add nothing.
    assert!(objects_added_by_commit(&store_a, t2.metadata(), &both)
        .await
        .expect("nothing new")
        .is_empty());

    // Copy commit 1, then commit 2, to region B.
    let copier = ObjectCopier::new(4, 3);
    let report_1 = copy_commit_objects(&copier, &store_a, &store_b, created.metadata(), &updates_1)
        .await
        .expect("copy commit 1");
    assert_eq!(report_1.copied, 4);
    assert_eq!(report_1.already_present, 0);
    assert_eq!(report_1.server_side, 0);
    assert_eq!(report_1.bytes_copied, total_size(&store_a, &found_1).await);
    let report_2 = copy_commit_objects(&copier, &store_a, &store_b, t1.metadata(), &updates_2)
        .await
        .expect("copy commit 2");
    assert_eq!(report_2.copied, 3);
    assert_eq!(report_2.bytes_copied, total_size(&store_a, &found_2).await);

    assert_eq!(
        table_objects(&store_b, &t2).await,
        all,
        "B holds exactly the copies"
    );
    assert_same_bytes(&store_a, &store_b, &all).await;

    // A second run finds everything present.
    let all_vec: Vec<String> = all.iter().cloned().collect();
    let again = copier
        .ensure_present(&store_a, &store_b, &all_vec)
        .await
        .expect("second run");
    assert_eq!(again.copied, 0);
    assert_eq!(again.already_present, all.len());
    assert_eq!(again.bytes_copied, 0);

    // A data file missing in both regions: the copy fails naming it.
    let lost = data_files_2.iter().next().expect("a data file").clone();
    store_a.delete(&lost).await.expect("delete in A");
    store_b.delete(&lost).await.expect("delete in B");
    let err = copy_commit_objects(&copier, &store_a, &store_b, t1.metadata(), &updates_2)
        .await
        .expect_err("a missing data file must fail the copy");
    assert!(
        matches!(&err, CopyError::MissingAtSource { location } if *location == lost),
        "unexpected error: {err:?}"
    );
    assert!(err.to_string().contains(&lost), "{err}");

    // A manifest list missing in the source: listing the commit's objects fails naming it.
    let list_2 = t2
        .metadata()
        .current_snapshot()
        .expect("s2")
        .manifest_list()
        .to_string();
    store_a
        .delete(&list_2)
        .await
        .expect("delete manifest list in A");
    let err = objects_added_by_commit(&store_a, t1.metadata(), &updates_2)
        .await
        .expect_err("a missing manifest list must fail");
    assert!(
        matches!(&err, CopyError::MissingAtSource { location } if *location == list_2),
        "unexpected error: {err:?}"
    );

    region_a.shutdown().await;
    region_b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_source_objects_fail_with_their_location() {
    let region_a = TestRegion::start().await.expect("start region A");
    let region_b = TestRegion::start().await.expect("start region B");
    let store_a = store_of(&region_a).await;
    let store_b = store_of(&region_b).await;
    store_b.ensure_bucket("demo").await.expect("bucket in B");

    let dir = format!("s3://demo/{}", short("m"));
    let present = format!("{dir}/present.bin");
    let missing = format!("{dir}/missing.parquet");
    store_a
        .put(&present, Bytes::from_static(b"hello"))
        .await
        .expect("put");
    let copier = ObjectCopier::new(2, 3);
    let err = copier
        .ensure_present(&store_a, &store_b, &[present.clone(), missing.clone()])
        .await
        .expect_err("missing source object");
    assert!(
        matches!(&err, CopyError::MissingAtSource { location } if *location == missing),
        "unexpected error: {err:?}"
    );
    assert!(err.to_string().contains(&missing), "{err}");
    assert!(!store_b.exists(&missing).await.expect("exists"));

    // An invalid location is a permanent error, not retried forever.
    let err = copier
        .ensure_present(&store_a, &store_b, &["file:///etc/passwd".to_string()])
        .await
        .expect_err("invalid location");
    assert!(err.to_string().contains("file:///etc/passwd"), "{err}");

    region_a.shutdown().await;
    region_b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_objects_are_streamed_as_multipart_uploads() {
    let region_a = TestRegion::start().await.expect("start region A");
    let region_b = TestRegion::start().await.expect("start region B");
    let store_a = store_of(&region_a).await;
    let store_b = store_of(&region_b).await;
    store_b.ensure_bucket("demo").await.expect("bucket in B");

    // 40 MiB plus a tail, so the last part is short.
    let size = 40 * 1024 * 1024 + 12_345;
    let body = pseudo_random(size, 0x5eed);
    let digest = sha256(&body);
    let location = format!("s3://demo/{}/big.bin", short("l"));
    store_a
        .put(&location, body)
        .await
        .expect("put large object in A");

    let copier = ObjectCopier::new(2, 3);
    let report = copier
        .ensure_present(&store_a, &store_b, std::slice::from_ref(&location))
        .await
        .expect("copy large object");
    assert_eq!(report.copied, 1);
    assert_eq!(report.multipart, 1, "{report:?}");
    assert_eq!(report.bytes_copied, size as u64);
    let info = store_b
        .head(&location)
        .await
        .expect("head")
        .expect("present");
    assert_eq!(info.size, size as u64);
    let copy = store_b.get(&location).await.expect("read copy");
    assert_eq!(sha256(&copy), digest);

    let again = copier
        .ensure_present(&store_a, &store_b, std::slice::from_ref(&location))
        .await
        .expect("second run");
    assert_eq!((again.copied, again.already_present), (0, 1));

    // A stale object of another size at the destination is replaced.
    let small = format!("s3://demo/{}/small.bin", short("l"));
    store_a
        .put(&small, pseudo_random(1000, 7))
        .await
        .expect("put in A");
    store_b
        .put(&small, Bytes::from_static(b"stale"))
        .await
        .expect("put stale in B");
    let report = copier
        .ensure_present(&store_a, &store_b, std::slice::from_ref(&small))
        .await
        .expect("replace stale object");
    assert_eq!((report.copied, report.multipart), (1, 0));
    assert_eq!(
        store_b.get(&small).await.expect("read"),
        store_a.get(&small).await.expect("read")
    );

    region_a.shutdown().await;
    region_b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_service_copies_server_side() {
    let region = TestRegion::start().await.expect("start region");
    let store = store_of(&region).await;
    let same = store_of(&region).await;
    assert!(store.same_service(&same));
    store
        .ensure_bucket("demo-copy")
        .await
        .expect("second bucket");

    let key = format!("{}/data/x.parquet", short("s"));
    let src = format!("s3://demo/{key}");
    let dst = format!("s3://demo-copy/{key}");
    let body = pseudo_random(3 * 1024 * 1024 + 7, 42);
    store.put(&src, body.clone()).await.expect("put source");

    let copier = ObjectCopier::new(2, 3);
    let report = copier
        .ensure_present_mapped(&store, &same, &[(src.clone(), dst.clone())])
        .await
        .expect("server-side copy");
    assert_eq!(report.copied, 1);
    assert_eq!(report.server_side, 1, "{report:?}");
    assert_eq!(report.bytes_copied, body.len() as u64);
    assert_eq!(same.get(&dst).await.expect("read copy"), body);
    let again = copier
        .ensure_present_mapped(&store, &same, &[(src.clone(), dst.clone())])
        .await
        .expect("second run");
    assert_eq!((again.copied, again.already_present), (0, 1));

    // The ObjectStore primitive directly, on a key with characters that need escaping.
    let odd_src = format!("s3://demo/{}/a b+c=d.avro", short("s"));
    let odd_dst = odd_src.replacen("s3://demo/", "s3://demo-copy/", 1);
    store
        .put(&odd_src, Bytes::from_static(b"odd key"))
        .await
        .expect("put odd key");
    store
        .server_side_copy(&odd_src, &odd_dst, 7)
        .await
        .expect("server-side copy of an odd key");
    assert_eq!(
        same.get(&odd_dst).await.expect("read odd copy"),
        Bytes::from_static(b"odd key")
    );

    region.shutdown().await;
}
