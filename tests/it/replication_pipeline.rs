//! The replicator prepares a pulled page as a whole (every change's objects made present
//! concurrently, a table's changes each listed against the previous one of the page) and
//! applies it in order: a change that cannot be prepared in the middle of a page lets every
//! change before it apply, stops the stream at itself, and nothing after it is applied.

use crate::common::{
    append, change_log, connect, create_table, fast_append, pointer, replication_action as post,
    scan_ids, short, start_secondary_halting_after, status, store_of, wait_caught_up, wait_status,
    write_data_file,
};

use std::collections::HashMap;

use iceberg::{Catalog, NamespaceIdent, TableIdent};
use pangolin::testing::TestRegion;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_change_mid_page_applies_what_precedes_it_and_halts_at_itself() {
    let http = reqwest::Client::new();
    let primary = TestRegion::start().await.expect("start primary");
    let secondary = start_secondary_halting_after(&primary, 2).await;
    let catalog = connect(&primary).await;
    let store_p = store_of(&primary).await;
    let ns = NamespaceIdent::new(short("pipe"));
    let ns_name = ns.as_ref()[0].clone();
    catalog.create_namespace(&ns, HashMap::new()).await.unwrap();
    let a = create_table(&catalog, &ns, "a").await;
    let b = create_table(&catalog, &ns, "b").await;
    wait_caught_up(&http, &primary, &secondary).await;
    let b_before = pointer(&http, &secondary, &[&ns_name], "b").await;

    // One page: two commits of `a` (the second listed against the first), a commit of `b`
    // whose data file is lost at the primary, a third commit of `a`, a namespace.
    post(&http, &secondary, "pause").await;
    let a = append(&catalog, &a, &[1]).await;
    let a = append(&catalog, &a, &[2]).await;
    let a_at_2 = a.metadata_location().map(str::to_string);
    let files = write_data_file(&b, &[10]).await;
    let lost = files[0].file_path().to_string();
    let b_committed = fast_append(&catalog, &b, files).await;
    let b_seq = status(&http, &primary).await.watermark;
    let bytes = store_p.get(&lost).await.unwrap();
    store_p.delete(&lost).await.unwrap();
    let a = append(&catalog, &a, &[3]).await;
    let later = NamespaceIdent::new(short("later"));
    catalog
        .create_namespace(&later, HashMap::new())
        .await
        .unwrap();
    post(&http, &secondary, "resume").await;

    let halted = wait_status(&http, &secondary, "never halted", |s| s.halted).await;
    assert_eq!(
        halted.watermark,
        b_seq - 1,
        "applied up to the failing change"
    );
    let error = halted.last_error.clone().expect("the error is reported");
    assert_eq!(error.seq, Some(b_seq));
    assert!(
        error.permanent && error.message.contains(&lost),
        "{error:?}"
    );
    assert_eq!(pointer(&http, &secondary, &[&ns_name], "a").await, a_at_2);
    assert_eq!(pointer(&http, &secondary, &[&ns_name], "b").await, b_before);
    let reader = connect(&secondary).await;
    assert!(!reader.namespace_exists(&later).await.unwrap());
    // Both commits of `a` before the failure are readable from this region's bucket.
    let here = reader
        .load_table(&TableIdent::new(ns.clone(), "a".into()))
        .await
        .unwrap();
    assert_eq!(scan_ids(&here).await, vec![1, 2]);

    // Fixed at the primary and resumed: the rest applies.
    store_p.put(&lost, bytes).await.unwrap();
    post(&http, &secondary, "resume").await;
    let s = wait_caught_up(&http, &primary, &secondary).await;
    assert!(s.last_error.is_none(), "{s:#?}");
    assert_eq!(
        pointer(&http, &secondary, &[&ns_name], "a")
            .await
            .as_deref(),
        a.metadata_location()
    );
    assert_eq!(
        pointer(&http, &secondary, &[&ns_name], "b")
            .await
            .as_deref(),
        b_committed.metadata_location()
    );
    for (name, ids) in [("a", vec![1, 2, 3]), ("b", vec![10])] {
        let here = reader
            .load_table(&TableIdent::new(ns.clone(), name.into()))
            .await
            .unwrap();
        assert_eq!(scan_ids(&here).await, ids, "{name}");
    }
    assert!(reader.namespace_exists(&later).await.unwrap());
    assert_eq!(
        change_log(&http, &primary).await,
        change_log(&http, &secondary).await
    );

    secondary.shutdown().await;
    primary.shutdown().await;
}
