//! Replication between two in-process regions that share nothing: a primary
//! (`TestRegion::start`) and a secondary following it without a control plane
//! (`TestRegion::start_secondary_of`, `[replication] primary`), each with its own SQLite file
//! and embedded S3 endpoint.
//!
//! Covered: namespaces, tables with real Parquet files written by iceberg-rust, commits,
//! rename, drop, views and a table created-and-purged before the secondary saw it all arrive
//! with the primary's ids and pointers and every referenced object in the secondary's bucket
//! (the secondary scans the rows from its own bucket); writes sent to the secondary are
//! forwarded; the change logs are identical; a secondary stopped and restarted mid-stream
//! converges without applying a record twice; a record whose object is missing at the
//! primary stops the stream with the error reported, and resuming after the fix converges;
//! a region whose log does not continue into the primary's refuses to follow it; a planned
//! switchover's catch-up hook waits for the target's watermark. The `_postgres` cases run
//! on fresh PostgreSQL databases of `PANGOLIN_TEST_PG_URL` and fail when it is not set.

use crate::common::{
    append, change_log, connect, create_table, fast_append, get_json, new_namespace, ns_url,
    peer_of, pointer, replication_action as post, scan_ids, short, start_secondary_halting_after,
    status, store_of, view_body, wait_caught_up, wait_status, write_data_file, PgDatabase,
    CATCH_UP,
};

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use iceberg::table::Table;
use iceberg::{Catalog, NamespaceIdent, TableIdent};
use pangolin::control::CatchUp;
use pangolin::replication::{objects_of_table, HttpCatchUp};
use pangolin::storage::ObjectStore;
use pangolin::store::{ApplyOutcome, ReplicationLog, SqlStore};
use pangolin::testing::TestRegion;
use reqwest::StatusCode;
use serde_json::json;

// ---- helpers ---------------------------------------------------------------------------------

/// Every object the table's metadata references, and the metadata file, exist in `store`
/// (manifest lists and manifests are read from `store` itself) with the primary's sizes.
async fn assert_all_objects_present(
    table: &Table,
    secondary: &ObjectStore,
    primary: &ObjectStore,
) -> usize {
    let objects = objects_of_table(secondary, table.metadata())
        .await
        .expect("every manifest list and manifest readable in the secondary");
    let mut all: BTreeSet<String> = objects.into_iter().collect();
    all.insert(
        table
            .metadata_location()
            .expect("metadata location")
            .to_string(),
    );
    for location in &all {
        let here = secondary
            .head(location)
            .await
            .expect("head in secondary")
            .unwrap_or_else(|| panic!("{location} missing in the secondary's bucket"));
        let there = primary
            .head(location)
            .await
            .expect("head in primary")
            .unwrap_or_else(|| panic!("{location} missing in the primary's bucket"));
        assert_eq!(here.size, there.size, "{location}");
    }
    all.len()
}

/// Lets the primary reach the secondary's bucket, so commits forwarded by the secondary
/// (whose files its clients wrote there) are completed at the primary (restarts it on the
/// same addresses).
async fn introduce(primary: TestRegion, secondary: &TestRegion) -> TestRegion {
    let mut primary = primary;
    primary.config.regions = vec![peer_of(secondary)];
    primary.restart().await.expect("restart the primary")
}

// ---- tests -----------------------------------------------------------------------------------

/// Everything written at the primary arrives at the secondary, objects first.
async fn writes_at_the_primary_appear_at_the_secondary(primary: TestRegion, secondary: TestRegion) {
    let http = reqwest::Client::new();
    let catalog = connect(&primary).await;
    let store_p = store_of(&primary).await;
    let store_s = store_of(&secondary).await;

    // Namespaces: nested, with properties updated.
    let (ns, namespace) =
        new_namespace(&catalog, "r", HashMap::from([("owner".into(), "a".into())])).await;
    let child = NamespaceIdent::from_strs([ns.as_str(), "child"]).unwrap();
    catalog
        .create_namespace(&child, HashMap::new())
        .await
        .expect("create child namespace");
    let resp = http
        .post(format!("{}/properties", ns_url(&primary, &[&ns])))
        .json(&json!({"updates": {"owner": "b"}, "removals": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // A table with two appends of real Parquet files.
    let created = create_table(&catalog, &namespace, "t").await;
    let t1 = append(&catalog, &created, &[1, 2, 3]).await;
    let t2 = append(&catalog, &t1, &[4, 5]).await;

    // Renamed, dropped, and a table created, filled and purged in a row.
    let other = create_table(&catalog, &namespace, "before").await;
    append(&catalog, &other, &[10]).await;
    catalog
        .rename_table(
            &TableIdent::new(namespace.clone(), "before".into()),
            &TableIdent::new(child.clone(), "after".into()),
        )
        .await
        .expect("rename");
    let doomed = create_table(&catalog, &namespace, "doomed").await;
    append(&catalog, &doomed, &[99]).await;
    catalog
        .drop_table(&TableIdent::new(namespace.clone(), "doomed".into()))
        .await
        .expect("drop");
    // A purge deletes the files at once: a secondary that had not seen the table yet must
    // not need them (paused here, so it sees the whole life of the table in one batch).
    post(&http, &secondary, "pause").await;
    let purged = create_table(&catalog, &namespace, "purged").await;
    append(&catalog, &purged, &[7]).await;
    catalog
        .purge_table(&TableIdent::new(namespace.clone(), "purged".into()))
        .await
        .expect("purge");
    post(&http, &secondary, "resume").await;

    // A view.
    let resp = http
        .post(format!("{}/views", ns_url(&primary, &[&ns])))
        .json(&view_body("v", &ns))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "{}",
        resp.text().await.unwrap()
    );

    let s = wait_caught_up(&http, &primary, &secondary).await;
    assert_eq!(s.role, "secondary");
    assert_eq!(s.state, "following");
    assert_eq!(s.primary.as_deref(), Some("us-east-1"));
    assert_eq!(s.primary_url.as_deref(), Some(primary.catalog_url.as_str()));
    assert_eq!(s.lag_seconds, Some(0.0));
    assert!(s.last_error.is_none(), "{s:#?}");
    // The counters move right after the apply transaction that moved the watermark: wait
    // for them rather than race them.
    let s = wait_status(&http, &secondary, "records applied counted", |s| {
        s.applied_records > 10
    })
    .await;
    assert!(s.applied_records > 10, "{s:#?}");

    // Same pointers.
    for (ns_path, name) in [
        (vec![ns.as_str()], "t"),
        (vec![ns.as_str(), "child"], "after"),
    ] {
        let p = pointer(&http, &primary, &ns_path, name).await;
        assert!(p.is_some());
        assert_eq!(
            p,
            pointer(&http, &secondary, &ns_path, name).await,
            "{name}"
        );
    }
    for gone in ["before", "doomed", "purged"] {
        assert_eq!(
            pointer(&http, &secondary, &[&ns], gone).await,
            None,
            "{gone}"
        );
    }
    let (s, p_view) = get_json(&http, &format!("{}/views/v", ns_url(&primary, &[&ns]))).await;
    assert_eq!(s, StatusCode::OK);
    let (s, s_view) = get_json(&http, &format!("{}/views/v", ns_url(&secondary, &[&ns]))).await;
    assert_eq!(s, StatusCode::OK, "{s_view}");
    assert_eq!(p_view["metadata-location"], s_view["metadata-location"]);
    let view_location = s_view["metadata-location"].as_str().unwrap();
    assert!(store_s.head(view_location).await.unwrap().is_some());

    // Namespaces and their properties.
    let (_, props) = get_json(&http, &ns_url(&secondary, &[&ns])).await;
    assert_eq!(props["properties"]["owner"], "b");
    let (s, _) = get_json(&http, &ns_url(&secondary, &[&ns, "child"])).await;
    assert_eq!(s, StatusCode::OK);

    // Every object the tables reference is in the secondary's bucket, and a client of the
    // secondary (vended the secondary's S3 endpoint) reads the rows from there.
    let reader = connect(&secondary).await;
    let t_here = reader
        .load_table(&TableIdent::new(namespace.clone(), "t".into()))
        .await
        .expect("load at the secondary");
    assert_eq!(
        t_here.metadata_location(),
        t2.metadata_location(),
        "same metadata file"
    );
    let objects = assert_all_objects_present(&t_here, &store_s, &store_p).await;
    assert!(
        objects >= 7,
        "2 manifest lists, 2 manifests, 2 data files, metadata: {objects}"
    );
    assert_eq!(scan_ids(&t_here).await, vec![1, 2, 3, 4, 5]);
    let after = reader
        .load_table(&TableIdent::new(child.clone(), "after".into()))
        .await
        .expect("load renamed table at the secondary");
    assert_all_objects_present(&after, &store_s, &store_p).await;
    assert_eq!(scan_ids(&after).await, vec![10]);

    // One log: the secondary's is the primary's, record for record.
    let log_p = change_log(&http, &primary).await;
    let log_s = change_log(&http, &secondary).await;
    assert!(!log_p.is_empty());
    assert_eq!(log_p, log_s);

    // A write sent to the secondary is forwarded to the primary and comes back.
    let via = NamespaceIdent::new(short("via"));
    reader
        .create_namespace(&via, HashMap::new())
        .await
        .expect("create namespace through the secondary");
    assert!(catalog.namespace_exists(&via).await.unwrap());
    wait_caught_up(&http, &primary, &secondary).await;
    assert!(reader.namespace_exists(&via).await.unwrap());
    // ... and so does a commit written through the secondary: its files go to the
    // secondary's bucket, the primary pulls them, the replicator finds them present.
    let t3 = append(&reader, &t_here, &[6]).await;
    wait_caught_up(&http, &primary, &secondary).await;
    assert_eq!(
        pointer(&http, &primary, &[&ns], "t").await.as_deref(),
        t3.metadata_location()
    );
    assert_eq!(
        pointer(&http, &secondary, &[&ns], "t").await.as_deref(),
        t3.metadata_location()
    );
    let t_primary = catalog
        .load_table(&TableIdent::new(namespace.clone(), "t".into()))
        .await
        .unwrap();
    assert_eq!(scan_ids(&t_primary).await, vec![1, 2, 3, 4, 5, 6]);

    // The primary's own status.
    let p = status(&http, &primary).await;
    assert_eq!(p.role, "standalone");
    assert_eq!(p.lag_records, Some(0));

    secondary.shutdown().await;
    primary.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_at_the_primary_appear_at_the_secondary_sqlite() {
    let primary = TestRegion::start().await.expect("start primary");
    let secondary = TestRegion::start_secondary_of(&primary)
        .await
        .expect("start secondary");
    let primary = introduce(primary, &secondary).await;
    writes_at_the_primary_appear_at_the_secondary(primary, secondary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_at_the_primary_appear_at_the_secondary_postgres() {
    let (primary_db, secondary_db) = (PgDatabase::create().await, PgDatabase::create().await);
    let primary = TestRegion::start_with_database(&primary_db.url)
        .await
        .expect("start primary on PostgreSQL");
    let secondary = TestRegion::start_secondary_of_with(
        &primary,
        vec![("PANGOLIN_DATABASE__URL".into(), secondary_db.url.clone())],
    )
    .await
    .expect("start secondary on PostgreSQL");
    let primary = introduce(primary, &secondary).await;
    writes_at_the_primary_appear_at_the_secondary(primary, secondary).await;
    primary_db.drop().await;
    secondary_db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_secondary_restarted_mid_stream_converges_without_applying_twice() {
    let http = reqwest::Client::new();
    let primary = TestRegion::start().await.expect("start primary");
    let mut secondary = TestRegion::start_secondary_of_with(
        &primary,
        vec![("PANGOLIN_REPLICATION__BATCH_SIZE".into(), "3".into())],
    )
    .await
    .expect("start secondary");
    let catalog = connect(&primary).await;

    // Pause, so the secondary has a backlog to work through.
    let paused = post(&http, &secondary, "pause").await;
    assert!(paused.paused);
    let ns = NamespaceIdent::new(short("m"));
    catalog.create_namespace(&ns, HashMap::new()).await.unwrap();
    let mut table = create_table(&catalog, &ns, "t").await;
    let mut expected = Vec::new();
    for i in 0..8 {
        table = append(&catalog, &table, &[i]).await;
        expected.push(i);
        catalog
            .create_namespace(
                &NamespaceIdent::new(format!("{}-{i}", ns.as_ref()[0])),
                HashMap::new(),
            )
            .await
            .unwrap();
    }
    let head = status(&http, &primary).await.watermark;
    assert!(head >= 18, "{head}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = status(&http, &secondary).await;
    assert_eq!(s.state, "paused");
    let before = s.watermark;

    // A paused region stays paused across a restart.
    secondary = secondary.restart().await.expect("restart while paused");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = status(&http, &secondary).await;
    assert!(s.paused, "{s:#?}");
    assert_eq!(s.watermark, before);

    // Resume and stop it in the middle of the backlog (a crash as far as the data dir goes).
    post(&http, &secondary, "resume").await;
    let started = Instant::now();
    loop {
        let s = status(&http, &secondary).await;
        if s.watermark > before + 3 {
            break;
        }
        assert!(started.elapsed() < CATCH_UP, "no progress: {s:#?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    secondary = secondary.restart().await.expect("restart mid-stream");
    let mid = status(&http, &secondary).await.watermark;
    assert!(
        mid < head,
        "still behind after the restart: {mid} of {head}"
    );

    let s = wait_caught_up(&http, &primary, &secondary).await;
    assert_eq!(s.watermark, head);
    // Each record exactly once: the logs are equal (seq is the log's key).
    let log_p = change_log(&http, &primary).await;
    let log_s = change_log(&http, &secondary).await;
    assert_eq!(log_p, log_s);
    assert_eq!(
        pointer(&http, &secondary, &[&ns.as_ref()[0]], "t")
            .await
            .as_deref(),
        table.metadata_location()
    );
    let reader = connect(&secondary).await;
    let here = reader
        .load_table(&TableIdent::new(ns.clone(), "t".into()))
        .await
        .unwrap();
    assert_eq!(scan_ids(&here).await, expected);

    // Applying records again is a no-op.
    let db = format!(
        "sqlite://{}/eu-west-1/catalog.db",
        secondary.data_dir().display()
    );
    let store = SqlStore::connect(&db)
        .await
        .expect("open the secondary's store");
    assert_eq!(
        store.apply_replicated(&log_p[..3]).await.unwrap(),
        ApplyOutcome::AlreadyApplied { watermark: head }
    );
    assert_eq!(
        store.apply_replicated(&log_p).await.unwrap(),
        ApplyOutcome::AlreadyApplied { watermark: head }
    );
    assert_eq!(store.replication_watermark().await.unwrap().seq, head);
    store.close().await;

    secondary.shutdown().await;
    primary.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_whose_object_is_missing_stops_the_stream_until_fixed() {
    let http = reqwest::Client::new();
    let primary = TestRegion::start().await.expect("start primary");
    let secondary = start_secondary_halting_after(&primary, 3).await;
    let catalog = connect(&primary).await;
    let store_p = store_of(&primary).await;

    let ns = NamespaceIdent::new(short("x"));
    catalog.create_namespace(&ns, HashMap::new()).await.unwrap();
    let table = create_table(&catalog, &ns, "t").await;
    wait_caught_up(&http, &primary, &secondary).await;
    let old_pointer = pointer(&http, &secondary, &[&ns.as_ref()[0]], "t").await;
    assert!(old_pointer.is_some());

    // Commit a data file, then lose it at the primary before the secondary copies it.
    post(&http, &secondary, "pause").await;
    let files = write_data_file(&table, &[1, 2]).await;
    let lost = files[0].file_path().to_string();
    let committed = fast_append(&catalog, &table, files).await;
    let commit_seq = status(&http, &primary).await.watermark;
    let bytes = store_p.get(&lost).await.unwrap();
    store_p.delete(&lost).await.unwrap();
    let later = NamespaceIdent::new(short("later"));
    catalog
        .create_namespace(&later, HashMap::new())
        .await
        .unwrap();
    post(&http, &secondary, "resume").await;

    let halted = wait_status(&http, &secondary, "never halted", |s| s.halted).await;
    assert_eq!(halted.state, "halted");
    assert_eq!(
        halted.watermark,
        commit_seq - 1,
        "stopped before the record"
    );
    let error = halted.last_error.clone().expect("the error is reported");
    assert_eq!(error.seq, Some(commit_seq));
    assert!(error.permanent);
    assert_eq!(error.attempts, 3);
    assert!(error.message.contains(&lost), "{error:?}");
    assert_eq!(halted.lag_records, Some(2));
    // The failed copies are no longer counted as pending.
    assert_eq!(halted.objects_pending, 0, "{halted:#?}");
    // Nothing after it was applied, and the old pointer is still served.
    assert_eq!(
        pointer(&http, &secondary, &[&ns.as_ref()[0]], "t").await,
        old_pointer
    );
    let reader = connect(&secondary).await;
    assert!(!reader.namespace_exists(&later).await.unwrap());
    // It stays halted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = status(&http, &secondary).await;
    assert!(s.halted && s.watermark == commit_seq - 1, "{s:#?}");

    // Fixed at the primary, resumed: converges.
    store_p.put(&lost, bytes).await.unwrap();
    let resumed = post(&http, &secondary, "resume").await;
    assert!(!resumed.halted);
    let s = wait_caught_up(&http, &primary, &secondary).await;
    assert!(s.last_error.is_none(), "{s:#?}");
    assert_eq!(
        pointer(&http, &secondary, &[&ns.as_ref()[0]], "t")
            .await
            .as_deref(),
        committed.metadata_location()
    );
    let here = reader
        .load_table(&TableIdent::new(ns.clone(), "t".into()))
        .await
        .unwrap();
    assert_eq!(scan_ids(&here).await, vec![1, 2]);
    assert!(reader.namespace_exists(&later).await.unwrap());

    secondary.shutdown().await;
    primary.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_region_whose_log_does_not_continue_the_primarys_refuses_to_follow() {
    let http = reqwest::Client::new();
    let first = TestRegion::start().await.expect("start first primary");
    let mut secondary = TestRegion::start_secondary_of(&first)
        .await
        .expect("start secondary");
    let catalog = connect(&first).await;
    for i in 0..3 {
        catalog
            .create_namespace(&NamespaceIdent::new(format!("n{i}")), HashMap::new())
            .await
            .unwrap();
    }
    wait_caught_up(&http, &first, &secondary).await;

    // Another primary with a shorter, different log: following it would silently diverge.
    let other = TestRegion::start().await.expect("start other primary");
    connect(&other)
        .await
        .create_namespace(&NamespaceIdent::new("elsewhere".into()), HashMap::new())
        .await
        .unwrap();
    secondary.config.regions[0].catalog_url = other.catalog_url.clone();
    secondary.config.regions[0].s3_endpoint = Some(other.s3_endpoint.clone());
    secondary.config.replication.max_record_attempts = 1;
    secondary = secondary
        .restart()
        .await
        .expect("restart against the other primary");
    let s = wait_status(&http, &secondary, "never halted", |s| s.halted).await;
    let message = s.last_error.expect("reported").message;
    assert!(message.contains("never received"), "{message}");
    assert_eq!(s.watermark, 3);
    let reader = connect(&secondary).await;
    assert!(!reader
        .namespace_exists(&NamespaceIdent::new("elsewhere".into()))
        .await
        .unwrap());

    secondary.shutdown().await;
    other.shutdown().await;
    first.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn switchover_catch_up_waits_for_the_targets_watermark() {
    let http = reqwest::Client::new();
    let primary = TestRegion::start().await.expect("start primary");
    let secondary = TestRegion::start_secondary_of(&primary)
        .await
        .expect("start secondary");
    let regions = vec![
        pangolin::config::RegionPeer {
            name: "us-east-1".into(),
            catalog_url: primary.catalog_url.clone(),
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            access_key_id: None,
            secret_access_key: None,
            path_style: true,
        },
        pangolin::config::RegionPeer {
            name: "eu-west-1".into(),
            catalog_url: secondary.catalog_url.clone(),
            s3_endpoint: None,
            s3_region: "eu-west-1".into(),
            access_key_id: None,
            secret_access_key: None,
            path_style: true,
        },
    ];
    let catch_up = HttpCatchUp::new(&regions, Duration::from_millis(1500));

    post(&http, &secondary, "pause").await;
    connect(&primary)
        .await
        .create_namespace(&NamespaceIdent::new("s".into()), HashMap::new())
        .await
        .unwrap();
    let err = catch_up
        .wait_caught_up(Some("us-east-1"), "eu-west-1", 1)
        .await
        .expect_err("a paused target does not catch up");
    assert!(err.contains("paused") && err.contains("seq 0 of"), "{err}");

    post(&http, &secondary, "resume").await;
    catch_up
        .wait_caught_up(Some("us-east-1"), "eu-west-1", 1)
        .await
        .expect("caught up once resumed");
    assert_eq!(
        status(&http, &secondary).await.watermark,
        status(&http, &primary).await.watermark
    );
    // No old primary: nothing to wait for.
    catch_up.wait_caught_up(None, "eu-west-1", 1).await.unwrap();

    secondary.shutdown().await;
    primary.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_changes_long_poll_answers_when_a_record_arrives() {
    let http = reqwest::Client::new();
    let primary = TestRegion::start().await.expect("start primary");
    let head = status(&http, &primary).await.watermark;
    let url = format!(
        "{}/api/v1/replication/changes?after={head}&limit=10&wait_ms=200",
        primary.catalog_url
    );
    let started = Instant::now();
    let (s, page) = get_json(&http, &url).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(page["records"], json!([]));
    assert_eq!(page["head"], head);
    assert!(started.elapsed() >= Duration::from_millis(200));

    let waiting = {
        let http = http.clone();
        let url = format!(
            "{}/api/v1/replication/changes?after={head}&limit=10&wait_ms=20000",
            primary.catalog_url
        );
        tokio::spawn(async move { get_json(&http, &url).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    connect(&primary)
        .await
        .create_namespace(&NamespaceIdent::new("poked".into()), HashMap::new())
        .await
        .unwrap();
    let (s, page) = waiting.await.unwrap();
    assert_eq!(s, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(page["records"][0]["op"], "create_namespace");
    assert_eq!(page["records"][0]["seq"], head + 1);
    assert_eq!(page["region"], "us-east-1");

    for bad in ["after=-1", "limit=0", "limit=100000", "after=x", "nope=1"] {
        let (s, body) = get_json(
            &http,
            &format!("{}/api/v1/replication/changes?{bad}", primary.catalog_url),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    primary.shutdown().await;
}

// ---- the store's apply side, on SQLite and PostgreSQL ------------------------------------------

mod store_apply {
    use std::collections::HashMap;
    use std::sync::Arc;

    use crate::common::{ctx, ns, PgDatabase, Store};
    use pangolin::replication::bootstrap_entities;
    use pangolin::store::{
        ApplyOutcome, ChangeRecord, EntityKind, PointerSwap, SqlStore, StoreError,
    };

    /// Two fresh stores (primary, replica) of one backend, bootstrapped alike; the temp dir
    /// or databases live as long as the guard.
    struct Pair {
        primary: Store,
        replica: Store,
        catalog_id: String,
        _guard: Box<dyn std::any::Any + Send>,
    }

    async fn sqlite_pair() -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str| format!("sqlite://{}", dir.path().join(name).display());
        let primary: Store = Arc::new(SqlStore::connect(&open("p.db")).await.unwrap());
        let replica: Store = Arc::new(SqlStore::connect(&open("r.db")).await.unwrap());
        pair(primary, replica, Box::new(dir)).await
    }

    async fn postgres_pair() -> Pair {
        let (p, r) = (PgDatabase::create().await, PgDatabase::create().await);
        let primary: Store = Arc::new(SqlStore::connect(&p.url).await.unwrap());
        let replica: Store = Arc::new(SqlStore::connect(&r.url).await.unwrap());
        // Dropping them (with the pair) drops the databases.
        let guard = (p, r);
        pair(primary, replica, Box::new(guard)).await
    }

    async fn pair(primary: Store, replica: Store, guard: Box<dyn std::any::Any + Send>) -> Pair {
        let wanted = bootstrap_entities(&Default::default());
        let a = primary.bootstrap(&wanted).await.unwrap();
        let b = replica.bootstrap(&wanted).await.unwrap();
        assert_eq!(a, b, "same ids in both stores");
        assert_eq!(a, wanted);
        // Bootstrapping is idempotent and writes no change record.
        assert_eq!(primary.bootstrap(&wanted).await.unwrap(), a);
        assert!(primary.changes_after(0, 10).await.unwrap().is_empty());
        Pair {
            primary,
            replica,
            catalog_id: a.catalog.unwrap().id,
            _guard: guard,
        }
    }

    async fn log(store: &Store) -> Vec<ChangeRecord> {
        store.changes_after(0, u32::MAX).await.unwrap()
    }

    async fn applies_the_primarys_log_with_its_ids(p: Pair) {
        let (primary, replica, cat) = (&p.primary, &p.replica, p.catalog_id.as_str());
        let c = ctx();
        primary
            .create_namespace(
                &c,
                cat,
                &ns(&["a"]),
                &HashMap::from([("k".into(), "v".into())]),
            )
            .await
            .unwrap();
        primary
            .create_namespace(&c, cat, &ns(&["a", "b"]), &HashMap::new())
            .await
            .unwrap();
        primary
            .update_namespace_properties(
                &c,
                cat,
                &ns(&["a"]),
                &["k".into()],
                &HashMap::from([("x".into(), "y".into())]),
            )
            .await
            .unwrap();
        let t = primary
            .create_table(
                &c,
                cat,
                &ns(&["a"]),
                "t",
                EntityKind::Table,
                "s3://b/t/1.json",
            )
            .await
            .unwrap();
        let u = primary
            .create_table(
                &c,
                cat,
                &ns(&["a"]),
                "u",
                EntityKind::Table,
                "s3://b/u/1.json",
            )
            .await
            .unwrap();
        let v = primary
            .create_table(
                &c,
                cat,
                &ns(&["a"]),
                "v",
                EntityKind::View,
                "s3://b/v/1.json",
            )
            .await
            .unwrap();
        primary
            .commit_tables(
                &c,
                &[
                    PointerSwap {
                        table_id: t.id.clone(),
                        expected_version: 1,
                        new_metadata_location: "s3://b/t/2.json".into(),
                        new_location: None,
                    },
                    PointerSwap {
                        table_id: u.id.clone(),
                        expected_version: 1,
                        new_metadata_location: "s3://b/u/2.json".into(),
                        new_location: None,
                    },
                ],
            )
            .await
            .unwrap();
        primary
            .commit_tables(
                &c,
                &[PointerSwap {
                    table_id: v.id.clone(),
                    expected_version: 1,
                    new_metadata_location: "s3://b/v/2.json".into(),
                    new_location: None,
                }],
            )
            .await
            .unwrap();
        primary
            .rename_table(
                &c,
                cat,
                &ns(&["a"]),
                "u",
                &ns(&["a", "b"]),
                "w",
                EntityKind::Table,
            )
            .await
            .unwrap();
        primary
            .drop_table(&c, cat, &ns(&["a"]), "v", EntityKind::View)
            .await
            .unwrap();
        primary
            .create_namespace(&c, cat, &ns(&["gone"]), &HashMap::new())
            .await
            .unwrap();
        primary
            .drop_namespace(&c, cat, &ns(&["gone"]))
            .await
            .unwrap();
        let records = log(primary).await;
        assert_eq!(records.len(), 13);
        // The multi-table commit is marked as one transaction.
        let multi: Vec<_> = records.iter().filter_map(|r| r.txn_position()).collect();
        assert_eq!(multi.len(), 2);
        for r in &records {
            r.decode().unwrap_or_else(|e| panic!("{e}"));
        }
        let seqs: Vec<i64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(
            seqs,
            (seqs[0]..seqs[0] + 13).collect::<Vec<_>>(),
            "gap-free"
        );

        // In three pieces, the second twice.
        let head = records.last().unwrap().seq;
        assert_eq!(
            replica.apply_replicated(&records[..4]).await.unwrap(),
            ApplyOutcome::Applied {
                watermark: records[3].seq
            }
        );
        assert_eq!(
            replica.apply_replicated(&records[4..8]).await.unwrap(),
            ApplyOutcome::Applied {
                watermark: records[7].seq
            }
        );
        assert_eq!(
            replica.apply_replicated(&records[4..8]).await.unwrap(),
            ApplyOutcome::AlreadyApplied {
                watermark: records[7].seq
            }
        );
        // Records another applier already applied are skipped.
        assert_eq!(
            replica.apply_replicated(&records[6..10]).await.unwrap(),
            ApplyOutcome::Applied {
                watermark: records[9].seq
            }
        );
        assert_eq!(
            replica.apply_replicated(&records[8..]).await.unwrap(),
            ApplyOutcome::Applied { watermark: head }
        );
        assert!(matches!(
            replica
                .apply_replicated(&[records[2].clone(), records[1].clone()])
                .await,
            Err(StoreError::Invalid(_))
        ));

        // Same state, same ids, same log.
        for (n, name) in [(ns(&["a"]), "t"), (ns(&["a", "b"]), "w")] {
            let here = replica.get_table(cat, &n, name).await.unwrap();
            assert!(here.is_some(), "{name}");
            assert_eq!(here, primary.get_table(cat, &n, name).await.unwrap());
        }
        assert_eq!(
            replica.get_table(cat, &ns(&["a"]), "v").await.unwrap(),
            None
        );
        assert_eq!(
            replica.get_table(cat, &ns(&["a"]), "u").await.unwrap(),
            None
        );
        assert_eq!(
            replica.get_namespace(cat, &ns(&["a"])).await.unwrap(),
            primary.get_namespace(cat, &ns(&["a"])).await.unwrap()
        );
        assert_eq!(
            replica.get_namespace(cat, &ns(&["gone"])).await.unwrap(),
            None
        );
        assert_eq!(log(replica).await, records);
        let wm = replica.replication_watermark().await.unwrap();
        assert_eq!(wm.seq, head);
        assert!(wm.applied_ms > 0);
        assert_eq!(primary.replication_watermark().await.unwrap().seq, head);
        assert_eq!(
            replica
                .get_table_by_id(&t.id)
                .await
                .unwrap()
                .unwrap()
                .version,
            2
        );

        // Divergence: a commit that does not fit applies nothing of its batch.
        let before = log(replica).await;
        primary
            .create_namespace(&c, cat, &ns(&["z"]), &HashMap::new())
            .await
            .unwrap();
        primary
            .commit_tables(
                &c,
                &[PointerSwap {
                    table_id: t.id.clone(),
                    expected_version: 2,
                    new_metadata_location: "s3://b/t/3.json".into(),
                    new_location: None,
                }],
            )
            .await
            .unwrap();
        let mut next = primary.changes_after(head, 10).await.unwrap();
        assert_eq!(next.len(), 2);
        next[1].payload["version"] = serde_json::json!(5);
        let err = replica.apply_replicated(&next).await.unwrap_err();
        assert!(err.to_string().contains("diverged"), "{err}");
        assert_eq!(log(replica).await, before);
        assert_eq!(replica.get_namespace(cat, &ns(&["z"])).await.unwrap(), None);
        let unknown = ChangeRecord {
            op: "create_user".into(),
            ..next[0].clone()
        };
        let err = replica.apply_replicated(&[unknown]).await.unwrap_err();
        assert!(err.to_string().contains("create_user"), "{err}");

        // Promoted, the replica continues the same sequence; the epoch followed the records.
        assert_eq!(replica.current_epoch().await.unwrap(), 1);
        replica
            .create_namespace(&c, cat, &ns(&["local"]), &HashMap::new())
            .await
            .unwrap();
        let mine = replica.changes_after(head, 10).await.unwrap();
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].seq, head + 1);

        // Pause is kept.
        replica.set_replication_paused(true).await.unwrap();
        assert!(replica.replication_watermark().await.unwrap().paused);
        replica.set_replication_paused(false).await.unwrap();
        assert!(!replica.replication_watermark().await.unwrap().paused);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn applies_the_primarys_log_with_its_ids_sqlite() {
        applies_the_primarys_log_with_its_ids(sqlite_pair().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn applies_the_primarys_log_with_its_ids_postgres() {
        applies_the_primarys_log_with_its_ids(postgres_pair().await).await;
    }

    /// PostgreSQL hands out seqs in commit order without gaps, also under concurrency.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_change_log_is_gap_free_under_concurrency() {
        let p = postgres_pair().await;
        let mut tasks = Vec::new();
        for i in 0..40 {
            let store = p.primary.clone();
            let cat = p.catalog_id.clone();
            tasks.push(tokio::spawn(async move {
                let name = vec![format!("n{}", i % 20)];
                // Half of them conflict (AlreadyExists) and append nothing.
                let _ = store
                    .create_namespace(&ctx(), &cat, &name, &HashMap::new())
                    .await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let records = log(&p.primary).await;
        assert_eq!(records.len(), 20);
        let seqs: Vec<i64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=20).collect::<Vec<i64>>());
    }
}
