//! Anti-entropy between two in-process regions that share nothing (each with its own
//! database and embedded S3 endpoint): `verify`, `resync`, the failback quarantine, purges
//! propagated to the other region, and a replicator killed mid-copy and mid-apply.
//!
//! The `_postgres` cases run both regions on fresh PostgreSQL databases of
//! `PANGOLIN_TEST_PG_URL` and fail when it is not set.

use crate::common::{
    append, change_log, connect, create_table, get_json, new_namespace, peer_of, pointer, scan_ids,
    status, store_of, view_body, wait_caught_up, wait_status, PgDatabase,
};

use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Output};

use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{Catalog, NamespaceIdent, TableIdent};
use iceberg_catalog_rest::RestCatalog;
use pangolin::replication::{CrashPoint, VerifyReport};
use pangolin::store::{MetadataStore, QuarantineEntry, SqlStore};
use pangolin::testing::TestRegion;
use reqwest::StatusCode;
use serde_json::{json, Value};

// ---- helpers ---------------------------------------------------------------------------------

async fn set_properties(catalog: &RestCatalog, table: &Table, props: &[(&str, &str)]) -> Table {
    let tx = Transaction::new(table);
    let mut action = tx.update_table_properties();
    for (k, v) in props {
        action = action.set(k.to_string(), v.to_string());
    }
    let tx = action.apply(tx).expect("apply property update");
    tx.commit(catalog).await.expect("commit property update")
}

async fn post(
    http: &reqwest::Client,
    region: &TestRegion,
    action: &str,
    body: Value,
) -> (StatusCode, Value) {
    let url = format!("{}/api/v1/replication/{action}", region.catalog_url);
    let resp = http.post(&url).json(&body).send().await.expect("request");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn verify(http: &reqwest::Client, region: &TestRegion) -> VerifyReport {
    let (s, body) = post(http, region, "verify", json!({"catalog": "demo"})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    serde_json::from_value(body).expect("verify report")
}

/// A client of `region` loads `table` (by its identifier) with the same metadata file, and a
/// scan of it returns `ids`; the table as loaded there.
async fn assert_serves(region: &TestRegion, table: &Table, ids: &[i64]) -> Table {
    let here = connect(region)
        .await
        .load_table(table.identifier())
        .await
        .unwrap();
    assert_eq!(here.metadata_location(), table.metadata_location());
    assert_eq!(scan_ids(&here).await, ids);
    here
}

/// Drops table `name` of namespace `ns` through the REST API, purging its files if `purge`.
async fn drop_table(
    http: &reqwest::Client,
    region: &TestRegion,
    ns: &str,
    name: &str,
    purge: bool,
) {
    let resp = http
        .delete(format!(
            "{}/namespaces/{ns}/tables/{name}?purgeRequested={purge}",
            region.prefix_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
}

/// The region's quarantine report (`GET /api/v1/replication/quarantine`).
async fn quarantine(http: &reqwest::Client, region: &TestRegion) -> Value {
    let url = format!("{}/api/v1/replication/quarantine", region.catalog_url);
    let (s, body) = get_json(http, &url).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body
}

/// Runs `pangolin admin --endpoint <region> <args>`.
fn admin(region: &TestRegion, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pangolin"))
        .args(["admin", "--endpoint", &region.catalog_url])
        .args(args)
        .output()
        .expect("run pangolin admin")
}

fn db_override(url: Option<&str>) -> Vec<(String, String)> {
    url.map(|u| vec![("PANGOLIN_DATABASE__URL".to_string(), u.to_string())])
        .unwrap_or_default()
}

async fn start_primary(db: Option<&str>) -> TestRegion {
    match db {
        Some(url) => TestRegion::start_with_database(url).await,
        None => TestRegion::start().await,
    }
    .expect("start primary")
}

/// Two tests of each two-region scenario `$scenario(primary_db, secondary_db)`: `$sqlite` on
/// SQLite files, `$postgres` on two fresh PostgreSQL databases.
macro_rules! on_sqlite_and_postgres {
    ($($scenario:ident => ($sqlite:ident, $postgres:ident)),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $sqlite() {
            $scenario(None, None).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $postgres() {
            let (a, b) = (PgDatabase::create().await, PgDatabase::create().await);
            $scenario(Some(&a.url), Some(&b.url)).await;
            a.drop().await;
            b.drop().await;
        }
    )*};
}

// ---- resync + verify -------------------------------------------------------------------------

/// A region that never replicated (bootstrap rows only) is rebuilt by `resync`; `verify`
/// then finds it equal, a damaged object is reported and repaired by another resync, and
/// records committed after the resync's snapshot are applied on top of it (those before
/// it are logged, not applied twice).
async fn resync_into_an_empty_region_then_verify_finds_it_equal(
    primary_db: Option<&str>,
    secondary_db: Option<&str>,
) {
    let http = reqwest::Client::new();
    let primary = start_primary(primary_db).await;
    let catalog = connect(&primary).await;

    // Content: nested namespaces with properties, two tables with data, a renamed table,
    // a view, and a table dropped with purge.
    let (ns, namespace) = new_namespace(
        &catalog,
        "rs",
        HashMap::from([("owner".into(), "a".into())]),
    )
    .await;
    let child = NamespaceIdent::from_strs([ns.as_str(), "child"]).unwrap();
    catalog
        .create_namespace(&child, HashMap::new())
        .await
        .unwrap();
    let mut a = create_table(&catalog, &namespace, "a").await;
    for i in 0..3 {
        a = append(&catalog, &a, &[i, i + 100]).await;
    }
    let b = create_table(&catalog, &child, "b").await;
    let b = append(&catalog, &b, &[7]).await;
    catalog
        .rename_table(
            &TableIdent::new(child.clone(), "b".into()),
            &TableIdent::new(child.clone(), "b2".into()),
        )
        .await
        .unwrap();
    let gone = create_table(&catalog, &namespace, "gone").await;
    append(&catalog, &gone, &[1]).await;
    drop_table(&http, &primary, &ns, "gone", true).await;
    let resp = http
        .post(format!("{}/namespaces/{ns}/views", primary.prefix_url()))
        .json(&view_body("v", &ns))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // An empty region: its replicator does not run.
    let mut overrides = db_override(secondary_db);
    overrides.push(("PANGOLIN_REPLICATION__ENABLED".into(), "false".into()));
    let mut secondary = TestRegion::start_secondary_of_with(&primary, overrides)
        .await
        .expect("start the empty region");
    let before = verify(&http, &secondary).await;
    assert!(!before.equal);
    assert_eq!(before.watermark, 0);
    // It lags by the primary's whole log: nothing of demo can be compared.
    assert_eq!(before.differences.len(), 1, "{before:#?}");
    assert_eq!(before.differences[0].kind, "lag");
    assert!(!before.in_flight.is_empty());

    // Bad input changes nothing.
    let (s, body) = post(&http, &secondary, "resync", json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    let (s, body) = post(&http, &secondary, "resync", json!({"catalog": "nope"})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    let (s, body) = post(&http, &primary, "resync", json!({"catalog": "demo"})).await;
    // A standalone primary follows no one: nothing to resync from.
    assert_eq!(s, StatusCode::NOT_ACCEPTABLE, "{body}");

    let head = status(&http, &primary).await.watermark;
    let (s, report) = post(&http, &secondary, "resync", json!({"catalog": "demo"})).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["snapshot_head"], head);
    assert_eq!(report["tables"], 2);
    assert_eq!(report["views"], 1);
    assert_eq!(report["namespaces"], 2);
    assert!(report["objects_copied"].as_u64().unwrap() > 0, "{report}");

    let after = verify(&http, &secondary).await;
    assert!(after.equal, "{after:#?}");
    assert!(after.in_flight.is_empty(), "{after:#?}");
    assert_eq!(after.compared.tables, 2);
    assert_eq!(after.compared.views, 1);
    assert!(after.compared.objects >= 12, "{after:#?}");
    let here = assert_serves(&secondary, &a, &[0, 1, 2, 100, 101, 102]).await;
    let reader = connect(&secondary).await;
    let b2 = reader
        .load_table(&TableIdent::new(child.clone(), "b2".into()))
        .await
        .unwrap();
    assert_eq!(b2.metadata_location(), b.metadata_location());

    // Damage: an object lost in this region is reported, and a resync brings it back.
    let store_s = store_of(&secondary).await;
    let lost = here
        .metadata()
        .current_snapshot()
        .unwrap()
        .manifest_list()
        .to_string();
    store_s.delete(&lost).await.unwrap();
    let damaged = verify(&http, &secondary).await;
    assert!(!damaged.equal);
    assert!(
        damaged
            .differences
            .iter()
            .any(|d| d.kind == "object-missing" && d.name == lost),
        "{damaged:#?}"
    );
    // The CLI prints the difference and exits non-zero.
    let out = admin(&secondary, &["replication", "verify", "--catalog", "demo"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&lost),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (s, report) = post(&http, &secondary, "resync", json!({"catalog": "demo"})).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert!(verify(&http, &secondary).await.equal);

    // Commits after the snapshot, then the replicator runs: it goes through the whole log;
    // demo's records up to the snapshot are logged without being applied again.
    let a = append(&catalog, &a, &[50]).await;
    let resp = http
        .post(format!(
            "{}/namespaces/{ns}/properties",
            primary.prefix_url()
        ))
        .json(&json!({"updates": {"owner": "b"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    secondary.config.replication.enabled = true;
    secondary = secondary
        .restart()
        .await
        .expect("restart with the replicator");
    wait_caught_up(&http, &primary, &secondary).await;
    assert_eq!(
        change_log(&http, &primary).await,
        change_log(&http, &secondary).await
    );
    let v = verify(&http, &secondary).await;
    assert!(v.equal, "{v:#?}");
    assert_eq!(v.watermark, v.primary_head);
    assert_serves(&secondary, &a, &[0, 1, 2, 50, 100, 101, 102]).await;
    let reader = connect(&secondary).await;
    assert_eq!(
        reader.get_namespace(&namespace).await.unwrap().properties()["owner"],
        "b"
    );

    secondary.shutdown().await;
    primary.shutdown().await;
}

// ---- failback --------------------------------------------------------------------------------

/// us-east-1 is primary with eu-west-1 following it asynchronously. eu-west-1 is paused,
/// us-east-1 acknowledges K = 3 more commits, then eu-west-1 becomes primary (epoch 2)
/// and commits itself. us-east-1 comes back following eu-west-1: the 3 commits are
/// quarantined (by table, snapshot id and the properties the new primary lacks), the region
/// converges, and verify finds it equal.
async fn failback_quarantines_what_the_new_primary_never_received(
    a_db: Option<&str>,
    b_db: Option<&str>,
) {
    let http = reqwest::Client::new();
    let mut old = start_primary(a_db).await;
    let mut new = TestRegion::start_secondary_of_with(&old, db_override(b_db))
        .await
        .expect("start eu-west-1");
    let catalog = connect(&old).await;
    let (ns, namespace) = new_namespace(&catalog, "fb", HashMap::new()).await;
    let table = create_table(&catalog, &namespace, "t").await;
    let table = append(&catalog, &table, &[1]).await;
    wait_caught_up(&http, &old, &new).await;
    let (s, _) = post(&http, &new, "pause", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let fork = status(&http, &new).await.watermark;

    // K = 3 acknowledged commits eu-west-1 never receives.
    let t1 = append(&catalog, &table, &[2]).await;
    let t2 = append(&catalog, &t1, &[3]).await;
    let t3 = set_properties(&catalog, &t2, &[("lost.key", "x"), ("kept.key", "same")]).await;
    let snapshot = |t: &Table| t.metadata().current_snapshot().unwrap().snapshot_id();
    let (s1, s2) = (snapshot(&t1), snapshot(&t2));
    assert_eq!(status(&http, &old).await.watermark, fork + 3);
    let lost_metadata = t3.metadata_location().unwrap().to_string();

    // Unplanned failover: eu-west-1 becomes primary at epoch 2 and commits.
    let store_b = SqlStore::connect(&new.config.database.url).await.unwrap();
    store_b.set_epoch(2).await.unwrap();
    store_b.close().await;
    new.config.replication.primary = None;
    new = new.restart().await.expect("eu-west-1 as primary");
    let catalog_b = connect(&new).await;
    let ident = TableIdent::new(namespace.clone(), "t".into());
    let tb = catalog_b.load_table(&ident).await.unwrap();
    let tb = append(&catalog_b, &tb, &[10]).await;
    let tb = set_properties(&catalog_b, &tb, &[("kept.key", "same")]).await;

    // The old primary comes back as a secondary of the new one.
    old.config.regions = vec![peer_of(&new)];
    old.config.replication.primary = Some(new.config.region.name.clone());
    old = old.restart().await.expect("us-east-1 following eu-west-1");
    wait_caught_up(&http, &new, &old).await;

    // Exactly the 3 commits, by table and snapshot id.
    let body = quarantine(&http, &old).await;
    let entries: Vec<QuarantineEntry> =
        serde_json::from_value(body["entries"].clone()).expect("quarantine entries");
    assert_eq!(entries.len(), 3, "{body:#}");
    for (k, e) in entries.iter().enumerate() {
        assert_eq!(e.seq, fork + 1 + k as i64);
        assert_eq!(e.epoch, 1);
        assert_eq!(e.region, old.config.region.name);
        assert_eq!(e.catalog.as_deref(), Some("demo"));
        assert_eq!(e.namespace, vec![ns.clone()]);
        assert_eq!(e.name.as_deref(), Some("t"));
        assert_eq!(e.kind, "table");
        assert_eq!(e.op, "commit_table");
    }
    assert_eq!(entries[0].snapshot_ids, vec![s1]);
    assert_eq!(entries[1].snapshot_ids, vec![s2]);
    assert!(entries[2].snapshot_ids.is_empty());
    assert!(entries[0].properties.is_empty(), "{:?}", entries[0]);
    assert_eq!(
        entries[2].properties,
        BTreeMap::from([("lost.key".to_string(), "x".to_string())])
    );
    assert_eq!(
        entries[2].metadata_location.as_deref(),
        Some(lost_metadata.as_str())
    );
    // The quarantined commits' files stay in the old primary's bucket.
    let store_a = store_of(&old).await;
    assert!(store_a.head(&lost_metadata).await.unwrap().is_some());

    // The CLI exports the same report.
    let out = admin(&old, &["--json", "replication", "quarantine"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).expect("JSON from the CLI");
    assert_eq!(cli["entries"], body["entries"]);

    // Converged: same log, same pointer, same rows; verify finds no difference.
    assert_eq!(change_log(&http, &new).await, change_log(&http, &old).await);
    assert_eq!(
        pointer(&http, &old, &[&ns], "t").await.as_deref(),
        tb.metadata_location()
    );
    let v = verify(&http, &old).await;
    assert!(v.equal, "{v:#?}");
    let here = connect(&old).await.load_table(&ident).await.unwrap();
    assert_eq!(scan_ids(&here).await, vec![1, 10]);
    let out = admin(&old, &["replication", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Idempotent: a restart quarantines nothing more and stays equal; new commits flow.
    old = old.restart().await.unwrap();
    let tb = append(&catalog_b, &tb, &[11]).await;
    wait_caught_up(&http, &new, &old).await;
    let body = quarantine(&http, &old).await;
    assert_eq!(body["entries"].as_array().unwrap().len(), 3);
    assert_eq!(
        pointer(&http, &old, &[&ns], "t").await.as_deref(),
        tb.metadata_location()
    );
    assert!(verify(&http, &old).await.equal);

    old.shutdown().await;
    new.shutdown().await;
}

// Both scenarios above, each on SQLite and on PostgreSQL.
on_sqlite_and_postgres! {
    resync_into_an_empty_region_then_verify_finds_it_equal => (
        resync_into_an_empty_region_then_verify_finds_it_equal_sqlite,
        resync_into_an_empty_region_then_verify_finds_it_equal_postgres
    ),
    failback_quarantines_what_the_new_primary_never_received => (
        failback_quarantines_what_the_new_primary_never_received_sqlite,
        failback_quarantines_what_the_new_primary_never_received_postgres
    ),
}

// ---- purge -----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_purged_drop_deletes_the_files_in_the_other_region_too() {
    let http = reqwest::Client::new();
    let primary = TestRegion::start().await.unwrap();
    let secondary = TestRegion::start_secondary_of(&primary).await.unwrap();
    let catalog = connect(&primary).await;
    let store_s = store_of(&secondary).await;
    let (ns, namespace) = new_namespace(&catalog, "pg", HashMap::new()).await;
    let mut locations = HashMap::new();
    for name in ["purged", "kept"] {
        let t = create_table(&catalog, &namespace, name).await;
        append(&catalog, &t, &[1, 2]).await;
        locations.insert(name, t.metadata().location().to_string());
    }
    wait_caught_up(&http, &primary, &secondary).await;
    for name in ["purged", "kept"] {
        let files = store_s
            .list(&format!("{}/", locations[name]))
            .await
            .unwrap();
        assert!(files.len() >= 4, "{name}: {files:?}");
    }

    for (name, purge) in [("purged", true), ("kept", false)] {
        drop_table(&http, &primary, &ns, name, purge).await;
    }
    wait_caught_up(&http, &primary, &secondary).await;
    assert_eq!(pointer(&http, &secondary, &[&ns], "purged").await, None);
    assert_eq!(pointer(&http, &secondary, &[&ns], "kept").await, None);
    let purged = store_s
        .list(&format!("{}/", locations["purged"]))
        .await
        .unwrap();
    assert!(purged.is_empty(), "left in the secondary: {purged:?}");
    let kept = store_s
        .list(&format!("{}/", locations["kept"]))
        .await
        .unwrap();
    assert!(
        kept.len() >= 4,
        "a drop without purge keeps the files: {kept:?}"
    );
    let drop = change_log(&http, &primary)
        .await
        .into_iter()
        .rfind(|r| r.op == "drop_table" && r.payload["name"] == "purged")
        .unwrap();
    assert_eq!(drop.payload["purge"], true);
    assert!(verify(&http, &secondary).await.equal);

    secondary.shutdown().await;
    primary.shutdown().await;
}

// ---- crash safety ----------------------------------------------------------------------------

/// The replicator is stopped (as a killed process would be) after copying a commit's
/// objects but before applying it, and inside the apply transaction; a restart converges,
/// no record is applied twice, verify finds the region equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replicator_killed_mid_copy_or_mid_apply_converges() {
    let http = reqwest::Client::new();
    let primary = TestRegion::start().await.unwrap();
    let mut secondary = TestRegion::start_secondary_of(&primary).await.unwrap();
    let catalog = connect(&primary).await;
    let (ns, namespace) = new_namespace(&catalog, "cr", HashMap::new()).await;
    let mut table = create_table(&catalog, &namespace, "t").await;
    wait_caught_up(&http, &primary, &secondary).await;
    let mut expected = Vec::new();
    for (i, point) in [CrashPoint::MidCopy, CrashPoint::MidApply]
        .into_iter()
        .enumerate()
    {
        let before = pointer(&http, &secondary, &[&ns], "t").await;
        let watermark = status(&http, &secondary).await.watermark;
        secondary.node().replication.crash_at(point);
        let i = i as i64;
        table = append(&catalog, &table, &[i]).await;
        expected.push(i);
        catalog
            .create_namespace(&NamespaceIdent::new(format!("{ns}-{i}")), HashMap::new())
            .await
            .unwrap();
        wait_status(
            &http,
            &secondary,
            &format!("{point:?} never reached"),
            |s| s.state == "crashed",
        )
        .await;
        if point == CrashPoint::MidCopy {
            // Objects copied, nothing applied: the old pointer is still served.
            assert_eq!(pointer(&http, &secondary, &[&ns], "t").await, before);
            assert_eq!(status(&http, &secondary).await.watermark, watermark);
        }
        secondary = secondary.restart().await.expect("restart after the crash");
        wait_caught_up(&http, &primary, &secondary).await;
    }
    assert_eq!(
        change_log(&http, &primary).await,
        change_log(&http, &secondary).await
    );
    assert_eq!(
        pointer(&http, &secondary, &[&ns], "t").await.as_deref(),
        table.metadata_location()
    );
    let here = connect(&secondary)
        .await
        .load_table(&TableIdent::new(namespace.clone(), "t".into()))
        .await
        .unwrap();
    assert_eq!(scan_ids(&here).await, expected);
    let v = verify(&http, &secondary).await;
    assert!(v.equal, "{v:#?}");

    secondary.shutdown().await;
    primary.shutdown().await;
}

// ---- the store's anti-entropy methods --------------------------------------------------------

mod store_level {
    use super::*;
    use crate::common::ctx;
    use pangolin::store::{
        AntiEntropyStore, CatalogReplacement, CatalogSelector, CatalogStore, ReplicationLog,
        StoreError,
    };

    fn ns(name: &str) -> Vec<String> {
        vec![name.to_string()]
    }

    /// Log truncation (failback) lets the next local commit continue at the fork + 1;
    /// records of a resynced catalog up to its floor are logged, not applied; a refused
    /// replacement changes nothing; quarantining is idempotent.
    async fn replacements_floors_and_quarantine(a: SqlStore, b1: SqlStore, b2: SqlStore) {
        let t = a.create_tenant(&ctx(), "t").await.unwrap();
        let w = a
            .create_warehouse(&ctx(), &t.id, "w", "bucket", "")
            .await
            .unwrap();
        let c = a
            .create_catalog(&ctx(), &t.id, &w.id, "c", &HashMap::new())
            .await
            .unwrap();
        for n in ["n1", "n2", "n3"] {
            a.create_namespace(&ctx(), &c.id, &ns(n), &HashMap::new())
                .await
                .unwrap();
        }
        let at6 = a
            .state_snapshot(&CatalogSelector::Ids(vec![c.id.clone()]))
            .await
            .unwrap();
        assert_eq!(at6.head, 6);
        assert_eq!(at6.catalogs[0].namespaces.len(), 3);
        a.create_namespace(&ctx(), &c.id, &ns("n4"), &HashMap::new())
            .await
            .unwrap();
        a.update_namespace_properties(
            &ctx(),
            &c.id,
            &ns("n4"),
            &[],
            &HashMap::from([("k".to_string(), "v".to_string())]),
        )
        .await
        .unwrap();
        a.create_namespace(&ctx(), &c.id, &ns("n5"), &HashMap::new())
            .await
            .unwrap();
        let log = a.changes_after(0, 100).await.unwrap();
        assert_eq!(log.len(), 9);

        // Failback-style truncation: b1 goes back to seq 4 and continues at 5.
        b1.apply_replicated(&log[..6]).await.unwrap();
        let refused = b1
            .replace_catalogs(&CatalogReplacement {
                snapshot_head: 6,
                catalogs: at6.catalogs.clone(),
                truncate_log_after: Some(4),
                expect_watermark: Some(5),
                ..CatalogReplacement::default()
            })
            .await;
        assert!(
            matches!(refused, Err(StoreError::CommitConflict(_))),
            "{refused:?}"
        );
        assert_eq!(b1.replication_watermark().await.unwrap().seq, 6);
        let wm = b1
            .replace_catalogs(&CatalogReplacement {
                snapshot_head: 6,
                catalogs: at6.catalogs.clone(),
                truncate_log_after: Some(4),
                expect_watermark: Some(6),
                ..CatalogReplacement::default()
            })
            .await
            .unwrap();
        assert_eq!(wm.seq, 4);
        assert_eq!(b1.changes_after(0, 100).await.unwrap(), log[..4].to_vec());
        assert_eq!(b1.resync_floors().await.unwrap()[&c.id], 6);
        b1.create_namespace(&ctx(), &c.id, &ns("here"), &HashMap::new())
            .await
            .unwrap();
        let seqs: Vec<i64> = b1
            .changes_after(0, 100)
            .await
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5], "gap-free after the truncation");

        // Resync floors: b2 holds up to 4, gets the rows as of seq 6 but a floor of 8.
        b2.apply_replicated(&log[..4]).await.unwrap();
        b2.replace_catalogs(&CatalogReplacement {
            snapshot_head: 8,
            catalogs: at6.catalogs.clone(),
            ..CatalogReplacement::default()
        })
        .await
        .unwrap();
        assert_eq!(b2.replication_watermark().await.unwrap().seq, 4);
        for r in &log[4..] {
            b2.apply_replicated(std::slice::from_ref(r)).await.unwrap();
        }
        // Records 7 and 8 (n4) were under the floor: logged, not applied; 9 applied.
        assert!(b2.get_namespace(&c.id, &ns("n4")).await.unwrap().is_none());
        assert!(b2.get_namespace(&c.id, &ns("n5")).await.unwrap().is_some());
        assert!(b2.resync_floors().await.unwrap().is_empty());
        assert_eq!(b2.changes_after(0, 100).await.unwrap(), log);

        // Quarantine: idempotent by (seq, epoch).
        let entry = QuarantineEntry {
            region: "r".into(),
            catalog: Some("c".into()),
            catalog_id: Some(c.id.clone()),
            namespace: ns("n4"),
            name: None,
            kind: "namespace".into(),
            op: log[6].op.clone(),
            seq: 7,
            epoch: 1,
            metadata_location: None,
            snapshot_ids: vec![],
            properties: BTreeMap::new(),
            detected_at: "2026-01-01T00:00:00Z".into(),
            record: log[6].clone(),
        };
        assert_eq!(
            b2.add_quarantine(std::slice::from_ref(&entry))
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            b2.add_quarantine(std::slice::from_ref(&entry))
                .await
                .unwrap(),
            0
        );
        assert_eq!(b2.list_quarantine().await.unwrap(), vec![entry]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replacements_floors_and_quarantine_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let open = |n: &str| {
            let url = format!("sqlite://{}/{n}.db", dir.path().display());
            async move { SqlStore::connect(&url).await.unwrap() }
        };
        replacements_floors_and_quarantine(open("a").await, open("b1").await, open("b2").await)
            .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replacements_floors_and_quarantine_postgres() {
        let dbs = [
            PgDatabase::create().await,
            PgDatabase::create().await,
            PgDatabase::create().await,
        ];
        let open = |d: &PgDatabase| {
            let url = d.url.clone();
            async move { SqlStore::connect(&url).await.unwrap() }
        };
        let (a, b1, b2) = (
            open(&dbs[0]).await,
            open(&dbs[1]).await,
            open(&dbs[2]).await,
        );
        replacements_floors_and_quarantine(a.clone(), b1.clone(), b2.clone()).await;
        for s in [a, b1, b2] {
            s.close().await;
        }
        for d in dbs {
            d.drop().await;
        }
    }
}
