//! The metadata store's write transaction (`MetadataStore::begin` → `StoreTxn`), on SQLite
//! and PostgreSQL: what a caller composing several mutations may rely on.
//!
//! Every case is written once against `Arc<dyn MetadataStore>` and instantiated for both
//! backends by `on_both_backends!`: `sqlite::<case>` on a fresh file in a temporary
//! directory, `postgres::<case>` on a fresh database created on the server named by
//! `PANGOLIN_TEST_PG_URL` (e.g. `postgres://postgres@127.0.0.1:5432/postgres`) and dropped
//! afterwards. Without that variable the PostgreSQL cases fail; they never skip.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pangolin::store::{
    ChangeRecord, EntityKind, PointerSwap, SqlStore, StoreError, StoreTxn, TxnPosition,
    WriteContext,
};
use pangolin::testing::TestRegion;
use serde_json::json;
use tokio::sync::oneshot;

use crate::common::{ns, Store, StoreHarness};

// ---- harness ---------------------------------------------------------------------------------

macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let harness = super::StoreHarness::sqlite().await;
                    super::$case(&harness).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let harness = super::StoreHarness::postgres().await;
                    super::$case(&harness).await;
                }
            )*
        }
    };
}

on_both_backends!(
    mutations_in_one_transaction_commit_together_with_their_records_in_order,
    transaction_sees_its_own_writes_and_others_see_none_before_commit,
    transaction_dropped_without_commit_leaves_no_rows_records_or_seq,
    failed_mutation_leaves_the_transaction_unusable_and_nothing_written,
    stale_epoch_is_refused_at_begin_and_nothing_is_written,
    epoch_change_waits_for_the_open_transaction,
    concurrent_transactions_creating_one_name_exactly_one_wins,
    concurrent_transactions_claiming_overlapping_locations_exactly_one_wins,
    catalog_creates_a_namespace_and_its_missing_ancestors_in_one_transaction,
);

// ---- helpers ---------------------------------------------------------------------------------

fn ctx() -> WriteContext {
    WriteContext {
        epoch: 1,
        actor: "transactions".into(),
    }
}

fn none() -> HashMap<String, String> {
    HashMap::new()
}

async fn begin(store: &Store) -> Box<dyn StoreTxn> {
    store.begin(&ctx()).await.expect("begin")
}

/// The last seq of the change log (0 when empty).
async fn head(store: &Store) -> i64 {
    store.replication_watermark().await.unwrap().seq
}

async fn changes_since(store: &Store, after: i64) -> Vec<ChangeRecord> {
    store.changes_after(after, 1000).await.unwrap()
}

/// A tenant, warehouse and catalog (one-shot writes); returns the catalog id.
async fn catalog(store: &Store) -> String {
    let tenant = store.create_tenant(&ctx(), "acme").await.unwrap();
    let warehouse = store
        .create_warehouse(&ctx(), &tenant.id, "wh", "bucket", "")
        .await
        .unwrap();
    store
        .create_catalog(&ctx(), &tenant.id, &warehouse.id, "cat", &none())
        .await
        .unwrap()
        .id
}

fn positions(records: &[ChangeRecord]) -> Vec<Option<TxnPosition>> {
    records.iter().map(ChangeRecord::txn_position).collect()
}

fn ops(records: &[ChangeRecord]) -> Vec<&str> {
    records.iter().map(|r| r.op.as_str()).collect()
}

// ---- cases -----------------------------------------------------------------------------------

async fn mutations_in_one_transaction_commit_together_with_their_records_in_order(
    h: &StoreHarness,
) {
    let store = &h.store;
    let before = head(store).await;
    let mut txn = begin(store).await;
    let tenant = txn.create_tenant("acme").await.unwrap();
    let warehouse = txn
        .create_warehouse(&tenant.id, "wh", "bucket", "")
        .await
        .unwrap();
    let cat = txn
        .create_catalog(&tenant.id, &warehouse.id, "cat", &none())
        .await
        .unwrap()
        .id;
    txn.create_namespace(&cat, &ns(&["a"]), &none())
        .await
        .unwrap();
    txn.create_namespace(&cat, &ns(&["a", "b"]), &none())
        .await
        .unwrap();
    let props = HashMap::from([("owner".to_string(), "ops".to_string())]);
    txn.update_namespace_properties(&cat, &ns(&["a"]), &[], &props)
        .await
        .unwrap();
    let table = txn
        .create_entity(
            &cat,
            &ns(&["a", "b"]),
            "t",
            EntityKind::Table,
            "s3://bucket/t/metadata/00000.json",
            "s3://bucket/t",
        )
        .await
        .unwrap();
    txn.commit().await.unwrap();

    let records = changes_since(store, before).await;
    assert_eq!(
        ops(&records),
        [
            "create_tenant",
            "create_warehouse",
            "create_catalog",
            "create_namespace",
            "create_namespace",
            "update_namespace_properties",
            "create_table",
        ]
    );
    let seqs: Vec<i64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (before + 1..=before + 7).collect::<Vec<_>>());
    let expected: Vec<Option<TxnPosition>> = (0..7)
        .map(|i| {
            Some(TxnPosition {
                txn_index: i,
                txn_count: 7,
            })
        })
        .collect();
    assert_eq!(positions(&records), expected, "marked as one transaction");
    for r in &records {
        r.decode().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r.epoch, r.actor.as_str()), (1, "transactions"));
    }
    assert_eq!(
        store
            .get_namespace(&cat, &ns(&["a"]))
            .await
            .unwrap()
            .unwrap()
            .properties,
        props
    );
    assert_eq!(
        store.get_table(&cat, &ns(&["a", "b"]), "t").await.unwrap(),
        Some(table.clone())
    );

    // A second transaction: a pointer swap and a rename, two records of one transaction.
    let before = head(store).await;
    let mut txn = begin(store).await;
    let swapped = txn
        .commit_tables(&[PointerSwap {
            table_id: table.id.clone(),
            expected_version: 1,
            new_metadata_location: "s3://bucket/t/metadata/00001.json".into(),
            new_location: None,
        }])
        .await
        .unwrap();
    assert_eq!(swapped[0].version, 2);
    let renamed = txn
        .rename_entity(
            &cat,
            &ns(&["a", "b"]),
            "t",
            &ns(&["a"]),
            "t2",
            EntityKind::Table,
        )
        .await
        .unwrap();
    assert_eq!((renamed.version, renamed.name.as_str()), (2, "t2"));
    txn.commit().await.unwrap();
    let records = changes_since(store, before).await;
    assert_eq!(ops(&records), ["commit_table", "rename_table"]);
    assert_eq!(
        positions(&records),
        [
            Some(TxnPosition {
                txn_index: 0,
                txn_count: 2
            }),
            Some(TxnPosition {
                txn_index: 1,
                txn_count: 2
            }),
        ]
    );
    let moved = store.get_table(&cat, &ns(&["a"]), "t2").await.unwrap();
    assert_eq!(moved.map(|t| t.version), Some(2));
}

async fn transaction_sees_its_own_writes_and_others_see_none_before_commit(h: &StoreHarness) {
    let store = &h.store;
    let cat = catalog(store).await;
    let before = head(store).await;
    let mut txn = begin(store).await;
    txn.create_namespace(&cat, &ns(&["a"]), &none())
        .await
        .unwrap();
    assert!(
        txn.get_namespace(&cat, &ns(&["a"]))
            .await
            .unwrap()
            .is_some(),
        "the transaction reads its own write"
    );
    assert!(
        store
            .get_namespace(&cat, &ns(&["a"]))
            .await
            .unwrap()
            .is_none(),
        "nobody else does before the commit"
    );
    assert!(changes_since(store, before).await.is_empty());
    txn.commit().await.unwrap();
    assert!(store
        .get_namespace(&cat, &ns(&["a"]))
        .await
        .unwrap()
        .is_some());
    let records = changes_since(store, before).await;
    assert_eq!(ops(&records), ["create_namespace"]);
    assert_eq!(
        records[0].txn_position(),
        None,
        "a record alone is not marked"
    );
}

async fn transaction_dropped_without_commit_leaves_no_rows_records_or_seq(h: &StoreHarness) {
    let store = &h.store;
    let cat = catalog(store).await;
    store
        .create_namespace(&ctx(), &cat, &ns(&["a"]), &none())
        .await
        .unwrap();
    let table = store
        .create_entity(
            &ctx(),
            &cat,
            &ns(&["a"]),
            "t",
            EntityKind::Table,
            "s3://bucket/a/t/v1.json",
            "s3://bucket/a/t",
        )
        .await
        .unwrap();
    let before = head(store).await;

    let mut txn = begin(store).await;
    txn.create_namespace(&cat, &ns(&["b"]), &none())
        .await
        .unwrap();
    txn.create_entity(
        &cat,
        &ns(&["b"]),
        "x",
        EntityKind::View,
        "s3://bucket/b/x/v1.json",
        "s3://bucket/b/x",
    )
    .await
    .unwrap();
    txn.commit_tables(&[PointerSwap {
        table_id: table.id.clone(),
        expected_version: 1,
        new_metadata_location: "s3://bucket/a/t/v2.json".into(),
        new_location: None,
    }])
    .await
    .unwrap();
    txn.drop_entity(&cat, &ns(&["a"]), "t", EntityKind::Table, true)
        .await
        .unwrap();
    drop(txn);

    assert!(store
        .get_namespace(&cat, &ns(&["b"]))
        .await
        .unwrap()
        .is_none());
    assert!(store
        .get_table(&cat, &ns(&["b"]), "x")
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store.get_table(&cat, &ns(&["a"]), "t").await.unwrap(),
        Some(table),
        "pointer and row as before"
    );
    assert!(changes_since(store, before).await.is_empty(), "no record");
    assert_eq!(head(store).await, before);
    assert!(
        store
            .location_claims("s3://bucket/b/x")
            .await
            .unwrap()
            .is_empty(),
        "the location claim went with the transaction"
    );

    // The next write takes the very next seq: the rolled-back one consumed none.
    store
        .create_entity(
            &ctx(),
            &cat,
            &ns(&["a"]),
            "x",
            EntityKind::View,
            "s3://bucket/b/x/v1.json",
            "s3://bucket/b/x",
        )
        .await
        .unwrap();
    let records = changes_since(store, before).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].seq, before + 1);
}

async fn failed_mutation_leaves_the_transaction_unusable_and_nothing_written(h: &StoreHarness) {
    let store = &h.store;
    let cat = catalog(store).await;
    let before = head(store).await;
    let mut txn = begin(store).await;
    txn.create_namespace(&cat, &ns(&["a"]), &none())
        .await
        .unwrap();
    let again = txn.create_namespace(&cat, &ns(&["a"]), &none()).await;
    assert!(
        matches!(again, Err(StoreError::AlreadyExists(_))),
        "{again:?}"
    );
    let next = txn.create_namespace(&cat, &ns(&["b"]), &none()).await;
    assert!(matches!(next, Err(StoreError::Invalid(_))), "{next:?}");
    let committed = txn.commit().await;
    assert!(
        matches!(committed, Err(StoreError::Invalid(_))),
        "{committed:?}"
    );
    assert!(store
        .get_namespace(&cat, &ns(&["a"]))
        .await
        .unwrap()
        .is_none());
    assert!(changes_since(store, before).await.is_empty());

    // A multi-table commit that conflicts on its second table after swapping the first.
    store
        .create_namespace(&ctx(), &cat, &ns(&["n"]), &none())
        .await
        .unwrap();
    let mut ids = Vec::new();
    for name in ["t1", "t2"] {
        let t = store
            .create_table(&ctx(), &cat, &ns(&["n"]), name, EntityKind::Table, "v1")
            .await
            .unwrap();
        ids.push(t.id);
    }
    ids.sort();
    let before = head(store).await;
    let mut txn = begin(store).await;
    let swaps: Vec<PointerSwap> = ids
        .iter()
        .zip([1, 7])
        .map(|(id, expected_version)| PointerSwap {
            table_id: id.clone(),
            expected_version,
            new_metadata_location: "v2".into(),
            new_location: None,
        })
        .collect();
    let conflict = txn.commit_tables(&swaps).await;
    assert!(
        matches!(conflict, Err(StoreError::CommitConflict(_))),
        "{conflict:?}"
    );
    assert!(
        txn.commit().await.is_err(),
        "the half-done swap never lands"
    );
    for name in ["t1", "t2"] {
        let t = store.get_table(&cat, &ns(&["n"]), name).await.unwrap();
        assert_eq!(t.map(|t| t.version), Some(1));
    }
    assert!(changes_since(store, before).await.is_empty());
}

async fn stale_epoch_is_refused_at_begin_and_nothing_is_written(h: &StoreHarness) {
    let store = &h.store;
    let cat = catalog(store).await;
    store.set_epoch(2).await.unwrap();
    let before = head(store).await;
    match store.begin(&ctx()).await {
        Err(StoreError::StaleEpoch { carried, current }) => {
            assert_eq!((carried, current), (1, 2));
        }
        Err(e) => panic!("expected StaleEpoch, got {e}"),
        Ok(_) => panic!("a transaction under a stale epoch began"),
    }
    // The one-shot writes are the same transaction: refused before anything is written.
    let one_shot = store
        .create_namespace(&ctx(), &cat, &ns(&["a"]), &none())
        .await;
    assert!(
        matches!(one_shot, Err(StoreError::StaleEpoch { .. })),
        "{one_shot:?}"
    );
    assert!(store
        .get_namespace(&cat, &ns(&["a"]))
        .await
        .unwrap()
        .is_none());
    assert!(changes_since(store, before).await.is_empty());

    let current = WriteContext { epoch: 2, ..ctx() };
    let mut txn = store.begin(&current).await.unwrap();
    txn.create_namespace(&cat, &ns(&["a"]), &none())
        .await
        .unwrap();
    txn.commit().await.unwrap();
    let records = changes_since(store, before).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].epoch, 2);
}

async fn epoch_change_waits_for_the_open_transaction(h: &StoreHarness) {
    let store = &h.store;
    let cat = catalog(store).await;
    let before = head(store).await;
    let mut txn = begin(store).await;
    let raise = {
        let store = store.clone();
        tokio::spawn(async move { store.set_epoch(2).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !raise.is_finished(),
        "the epoch cannot move under an open transaction"
    );
    txn.create_namespace(&cat, &ns(&["a"]), &none())
        .await
        .unwrap();
    txn.commit().await.unwrap();
    raise.await.unwrap().unwrap();
    assert_eq!(store.current_epoch().await.unwrap(), 2);
    let records = changes_since(store, before).await;
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].epoch, 1,
        "committed under the epoch it began with"
    );
    assert!(matches!(
        store.begin(&ctx()).await.err(),
        Some(StoreError::StaleEpoch { .. })
    ));
}

/// One mutation of a racing transaction.
#[derive(Clone, Copy)]
enum Mutation {
    /// A top-level namespace of that name.
    Namespace(&'static str),
    /// A table in namespace `n` with that name and location.
    Table(&'static str, &'static str),
}

impl Mutation {
    async fn apply(self, txn: &mut dyn StoreTxn, cat: &str) -> Result<(), StoreError> {
        match self {
            Mutation::Namespace(name) => {
                txn.create_namespace(cat, &ns(&[name]), &none()).await?;
            }
            Mutation::Table(name, location) => {
                let metadata = format!("{location}/metadata/00000.json");
                txn.create_entity(
                    cat,
                    &ns(&["n"]),
                    name,
                    EntityKind::Table,
                    &metadata,
                    location,
                )
                .await?;
            }
        }
        Ok(())
    }
}

/// Runs `first` in a transaction held open for a while after its mutation, and `second` in
/// another transaction begun once `first` made its mutation (on PostgreSQL it runs into the
/// open transaction; SQLite serializes them). Returns the first's commit and the second's
/// error (it must lose, and then cannot commit).
async fn race(
    store: &Store,
    cat: &str,
    first: Mutation,
    second: Mutation,
) -> (Result<(), StoreError>, StoreError) {
    let (mutated, wait) = oneshot::channel();
    let a = {
        let (store, cat) = (store.clone(), cat.to_string());
        tokio::spawn(async move {
            let mut txn = begin(&store).await;
            first.apply(txn.as_mut(), &cat).await?;
            let _ = mutated.send(());
            tokio::time::sleep(Duration::from_millis(300)).await;
            txn.commit().await
        })
    };
    let b = {
        let (store, cat) = (store.clone(), cat.to_string());
        tokio::spawn(async move {
            wait.await.expect("the first transaction made its mutation");
            let mut txn = begin(&store).await;
            let err = second
                .apply(txn.as_mut(), &cat)
                .await
                .expect_err("the second transaction must lose");
            assert!(txn.commit().await.is_err(), "and cannot commit after it");
            err
        })
    };
    (a.await.unwrap(), b.await.unwrap())
}

async fn concurrent_transactions_creating_one_name_exactly_one_wins(h: &StoreHarness) {
    let store = &h.store;
    let cat = catalog(store).await;
    let before = head(store).await;
    let x = Mutation::Namespace("x");
    let (won, lost) = race(store, &cat, x, x).await;
    won.expect("the first transaction commits");
    assert!(matches!(lost, StoreError::AlreadyExists(_)), "{lost:?}");
    let records = changes_since(store, before).await;
    assert_eq!(
        ops(&records),
        ["create_namespace"],
        "one record, the winner's"
    );
}

async fn concurrent_transactions_claiming_overlapping_locations_exactly_one_wins(h: &StoreHarness) {
    let store = &h.store;
    let cat = catalog(store).await;
    store
        .create_namespace(&ctx(), &cat, &ns(&["n"]), &none())
        .await
        .unwrap();
    let before = head(store).await;
    let (won, lost) = race(
        store,
        &cat,
        Mutation::Table("outer", "s3://bucket/n/t"),
        Mutation::Table("inner", "s3://bucket/n/t/inner"),
    )
    .await;
    won.expect("the first claim commits");
    assert!(matches!(lost, StoreError::LocationConflict(_)), "{lost:?}");
    assert!(store
        .get_table(&cat, &ns(&["n"]), "inner")
        .await
        .unwrap()
        .is_none());
    let records = changes_since(store, before).await;
    assert_eq!(ops(&records), ["create_table"]);
}

async fn catalog_creates_a_namespace_and_its_missing_ancestors_in_one_transaction(
    h: &StoreHarness,
) {
    let region = if h.url.starts_with("postgres") {
        TestRegion::start_with_database(&h.url).await.unwrap()
    } else {
        TestRegion::start().await.unwrap()
    };
    let store: Store = Arc::new(
        SqlStore::connect(&region.config.database.url)
            .await
            .unwrap(),
    );
    let http = reqwest::Client::new();
    let prefix = region.prefix_url();
    http.post(format!("{prefix}/namespaces"))
        .json(&json!({"namespace": ["a"]}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let before = head(&store).await;
    http.post(format!("{prefix}/namespaces"))
        .json(&json!({"namespace": ["a", "b", "c", "d"], "properties": {"k": "v"}}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let records = changes_since(&store, before).await;
    assert_eq!(ops(&records), ["create_namespace"; 3]);
    let created: Vec<serde_json::Value> = records
        .iter()
        .map(|r| r.payload["namespace"].clone())
        .collect();
    assert_eq!(
        created,
        [
            json!(["a", "b"]),
            json!(["a", "b", "c"]),
            json!(["a", "b", "c", "d"])
        ]
    );
    let expected: Vec<Option<TxnPosition>> = (0..3)
        .map(|i| {
            Some(TxnPosition {
                txn_index: i,
                txn_count: 3,
            })
        })
        .collect();
    assert_eq!(
        positions(&records),
        expected,
        "ancestors and namespace: one transaction"
    );

    // Concurrent creates under one missing ancestor: each creates it or finds it (on
    // PostgreSQL, a transaction that loses the race for it tries again), none fails.
    let before = head(&store).await;
    let creates = (0..8).map(|i| {
        let (http, url) = (http.clone(), format!("{prefix}/namespaces"));
        async move {
            let body = json!({"namespace": ["r", format!("c{i}")]});
            http.post(url).json(&body).send().await.unwrap()
        }
    });
    for response in futures::future::join_all(creates).await {
        let status = response.status();
        assert!(
            status.is_success(),
            "{status}: {}",
            response.text().await.unwrap()
        );
    }
    let records = changes_since(&store, before).await;
    let ancestor = records
        .iter()
        .filter(|r| r.payload["namespace"] == json!(["r"]))
        .count();
    assert_eq!(
        (records.len(), ancestor),
        (9, 1),
        "the ancestor once, each child once"
    );
    region.shutdown().await;
}
