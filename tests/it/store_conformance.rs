//! Conformance suite of the metadata store.
//!
//! Every case is written once against `Arc<dyn MetadataStore>` and instantiated for both
//! backends by `conformance!`: `sqlite::<case>` on a fresh file in a temporary directory,
//! `postgres::<case>` on a fresh database created on the server named by
//! `PANGOLIN_TEST_PG_URL` (e.g. `postgres://postgres@127.0.0.1:5432/postgres`) and dropped
//! afterwards. Without that variable the PostgreSQL cases fail; they never skip.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use pangolin::store::{
    Catalog, ChangeRecord, EntityKind, IdempotencyStart, MetricsReport, MetricsReportQuery,
    NotFound, Page, PageRequest, PointerSwap, SqlStore, StoreError, StoredResponse, TableRecord,
    Tenant, Warehouse, WriteContext, NAMESPACE_SEPARATOR,
};
use sqlx::Connection;

use crate::common::{database_url, ns, Store, StoreHarness};

// ---- harness ---------------------------------------------------------------------------------

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let harness = super::StoreHarness::sqlite().await;
                    super::$case(harness.store.clone()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let harness = super::StoreHarness::postgres().await;
                    super::$case(harness.store.clone()).await;
                }
            )*
        }
    };
}

conformance!(
    backend_name_is_known,
    tenant_warehouse_catalog_create_get_and_duplicate,
    namespace_create_get_and_duplicate,
    namespace_nested_requires_parent,
    namespace_invalid_names_are_refused,
    namespace_list_top_level_and_children_paginated,
    namespace_drop_refuses_non_empty_then_drops,
    namespace_properties_update_reports_updated_removed_missing,
    namespace_properties_conflicting_key_is_invalid,
    namespace_concurrent_creates_one_wins_rest_already_exist,
    table_create_get_and_duplicate,
    table_and_view_names_clash_both_ways,
    table_list_by_kind_paginated,
    table_list_in_missing_namespace_is_not_found,
    table_concurrent_creates_one_wins_rest_already_exist,
    commit_cas_success_bumps_version,
    commit_stale_expected_version_conflicts_and_keeps_pointer,
    commit_multi_table_with_one_stale_swap_changes_nothing,
    commit_of_vanished_table_conflicts,
    commit_sixteen_racers_from_same_version_exactly_one_wins,
    commit_concurrent_cas_loops_all_land,
    drop_table_and_view,
    rename_table_within_and_across_namespaces,
    rename_table_refusals,
    stale_epoch_fences_every_mutation,
    set_epoch_only_raises,
    change_log_records_every_mutation_once,
    change_log_failed_mutations_append_nothing,
    idempotency_begin_complete_and_replay,
    idempotency_concurrent_begin_exactly_one_started,
    idempotency_abandon_lets_the_next_caller_run,
    idempotency_expired_key_is_new_and_the_old_holder_loses_it,
    idempotency_stale_reservation_is_taken_over_after_the_lease,
    idempotency_purge_removes_only_old_keys,
    metrics_reports_record_list_filter_and_trim,
    metrics_reports_concurrent_records_keep_the_retention,
    metrics_reports_bad_arguments_are_invalid,
);

// ---- helpers ---------------------------------------------------------------------------------

fn ctx() -> WriteContext {
    WriteContext {
        epoch: 1,
        actor: "conformance".into(),
    }
}

fn props(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn page(token: Option<&str>, size: Option<u32>) -> PageRequest {
    PageRequest {
        token: token.map(str::to_owned),
        size,
    }
}

struct Fixture {
    tenant: Tenant,
    warehouse: Warehouse,
    catalog: Catalog,
}

/// Tenant `acme`, warehouse `wh`, catalog `cat`.
async fn fixture(store: &Store) -> Fixture {
    let tenant = store.create_tenant(&ctx(), "acme").await.expect("tenant");
    let warehouse = store
        .create_warehouse(&ctx(), &tenant.id, "wh", "bucket", "prefix/")
        .await
        .expect("warehouse");
    let catalog = store
        .create_catalog(
            &ctx(),
            &tenant.id,
            &warehouse.id,
            "cat",
            &props(&[("owner", "data")]),
        )
        .await
        .expect("catalog");
    Fixture {
        tenant,
        warehouse,
        catalog,
    }
}

/// Fixture plus namespace `db` holding table `db.t` (version 1, `s3://b/t/v1.json`).
async fn fixture_with_table(store: &Store) -> (Fixture, TableRecord) {
    let f = fixture(store).await;
    store
        .create_namespace(&ctx(), &f.catalog.id, &ns(&["db"]), &HashMap::new())
        .await
        .expect("ns");
    let table = store
        .create_table(
            &ctx(),
            &f.catalog.id,
            &ns(&["db"]),
            "t",
            EntityKind::Table,
            "s3://b/t/v1.json",
        )
        .await
        .expect("table");
    (f, table)
}

async fn changes(store: &Store) -> Vec<ChangeRecord> {
    store.changes_after(0, u32::MAX).await.expect("changes")
}

async fn ops(store: &Store) -> Vec<String> {
    changes(store).await.into_iter().map(|c| c.op).collect()
}

fn swap(table: &TableRecord, expected_version: i64, location: &str) -> PointerSwap {
    PointerSwap {
        table_id: table.id.clone(),
        expected_version,
        new_metadata_location: location.to_owned(),
        new_location: None,
    }
}

/// Walks every page of `list`, asserting that pages terminate.
async fn all_pages<T, F, Fut>(size: u32, mut list: F) -> Vec<Vec<T>>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: std::future::Future<Output = Page<T>>,
{
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..100 {
        let page = list(page(token.as_deref(), Some(size))).await;
        assert!(
            page.items.len() <= size as usize,
            "page larger than requested"
        );
        pages.push(page.items);
        match page.next_token {
            Some(next) => token = Some(next),
            None => return pages,
        }
    }
    panic!("pagination did not terminate");
}

macro_rules! assert_err {
    ($result:expr, $pattern:pat $(if $guard:expr)?) => {
        match $result {
            Err($pattern) $(if $guard)? => {}
            other => panic!("expected {}, got {:?}", stringify!($pattern), other),
        }
    };
}

// ---- cases -----------------------------------------------------------------------------------

async fn backend_name_is_known(store: Store) {
    assert!(["sqlite", "postgres"].contains(&store.backend()));
    assert_eq!(store.current_epoch().await.unwrap(), 1);
}

async fn tenant_warehouse_catalog_create_get_and_duplicate(store: Store) {
    let f = fixture(&store).await;
    assert_eq!(
        store.get_tenant("acme").await.unwrap(),
        Some(f.tenant.clone())
    );
    assert_eq!(store.get_tenant("nobody").await.unwrap(), None);
    assert_err!(store.create_tenant(&ctx(), "acme").await, StoreError::AlreadyExists(m) if m == "Tenant already exists: acme");

    assert_eq!(f.warehouse.bucket, "bucket");
    assert_eq!(f.warehouse.key_prefix, "prefix/");
    assert_eq!(f.warehouse.tenant_id, f.tenant.id);
    assert_eq!(
        store.get_warehouse(&f.tenant.id, "wh").await.unwrap(),
        Some(f.warehouse.clone())
    );
    assert_eq!(
        store.get_warehouse_by_id(&f.warehouse.id).await.unwrap(),
        Some(f.warehouse.clone())
    );
    assert_eq!(
        store.get_warehouse(&f.tenant.id, "other").await.unwrap(),
        None
    );
    assert_eq!(store.get_warehouse_by_id("no-such-id").await.unwrap(), None);
    assert_err!(
        store.create_warehouse(&ctx(), &f.tenant.id, "wh", "b2", "").await,
        StoreError::AlreadyExists(m) if m == "Warehouse already exists: wh"
    );
    assert_err!(
        store
            .create_warehouse(&ctx(), "no-such-tenant", "wh", "b", "")
            .await,
        StoreError::NotFound(NotFound::Tenant(_))
    );

    assert_eq!(f.catalog.properties, props(&[("owner", "data")]));
    assert_eq!(
        store.get_catalog(&f.tenant.id, "cat").await.unwrap(),
        Some(f.catalog.clone())
    );
    assert_eq!(store.get_catalog(&f.tenant.id, "nope").await.unwrap(), None);
    assert_err!(
        store.create_catalog(&ctx(), &f.tenant.id, &f.warehouse.id, "cat", &HashMap::new()).await,
        StoreError::AlreadyExists(m) if m == "Catalog already exists: cat"
    );
    let early = store
        .create_catalog(
            &ctx(),
            &f.tenant.id,
            &f.warehouse.id,
            "a-first",
            &HashMap::new(),
        )
        .await
        .unwrap();
    let names: Vec<String> = store
        .list_catalogs(&f.tenant.id)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["a-first", "cat"]);
    assert_eq!(store.list_catalogs("no-such-tenant").await.unwrap(), vec![]);
    assert_ne!(early.id, f.catalog.id);

    // A warehouse of another tenant can't back this tenant's catalog.
    let other = store.create_tenant(&ctx(), "other").await.unwrap();
    assert_err!(
        store
            .create_catalog(&ctx(), &other.id, &f.warehouse.id, "cat", &HashMap::new())
            .await,
        StoreError::NotFound(NotFound::Warehouse(_))
    );
    // Catalog names are per tenant.
    let other_wh = store
        .create_warehouse(&ctx(), &other.id, "wh", "b", "")
        .await
        .unwrap();
    store
        .create_catalog(&ctx(), &other.id, &other_wh.id, "cat", &HashMap::new())
        .await
        .unwrap();
}

async fn namespace_create_get_and_duplicate(store: Store) {
    let f = fixture(&store).await;
    let cat = &f.catalog.id;
    let created = store
        .create_namespace(&ctx(), cat, &ns(&["db"]), &props(&[("k", "v")]))
        .await
        .unwrap();
    assert_eq!(created.name, ns(&["db"]));
    assert_eq!(created.catalog_id, *cat);
    let loaded = store
        .get_namespace(cat, &ns(&["db"]))
        .await
        .unwrap()
        .expect("namespace");
    assert_eq!(loaded, created);
    assert_eq!(loaded.properties, props(&[("k", "v")]));
    assert_eq!(
        store.get_namespace(cat, &ns(&["other"])).await.unwrap(),
        None
    );
    assert_err!(
        store.create_namespace(&ctx(), cat, &ns(&["db"]), &HashMap::new()).await,
        StoreError::AlreadyExists(m) if m == "Namespace already exists: db"
    );
    assert_err!(
        store
            .create_namespace(&ctx(), "no-such-catalog", &ns(&["db"]), &HashMap::new())
            .await,
        StoreError::NotFound(NotFound::Catalog(_))
    );
    // Namespaces are per catalog.
    let other = store
        .create_catalog(
            &ctx(),
            &f.tenant.id,
            &f.warehouse.id,
            "other",
            &HashMap::new(),
        )
        .await
        .unwrap();
    store
        .create_namespace(&ctx(), &other.id, &ns(&["db"]), &HashMap::new())
        .await
        .unwrap();
}

async fn namespace_nested_requires_parent(store: Store) {
    let f = fixture(&store).await;
    let cat = &f.catalog.id;
    assert_err!(
        store.create_namespace(&ctx(), cat, &ns(&["a", "b"]), &HashMap::new()).await,
        StoreError::NotFound(NotFound::Namespace(m)) if m == "a"
    );
    store
        .create_namespace(&ctx(), cat, &ns(&["a"]), &HashMap::new())
        .await
        .unwrap();
    assert_err!(
        store.create_namespace(&ctx(), cat, &ns(&["a", "b", "c"]), &HashMap::new()).await,
        StoreError::NotFound(NotFound::Namespace(m)) if m == "a.b"
    );
    store
        .create_namespace(&ctx(), cat, &ns(&["a", "b"]), &HashMap::new())
        .await
        .unwrap();
    store
        .create_namespace(&ctx(), cat, &ns(&["a", "b", "c"]), &HashMap::new())
        .await
        .unwrap();
    assert!(store
        .get_namespace(cat, &ns(&["a", "b", "c"]))
        .await
        .unwrap()
        .is_some());
    assert_err!(
        store.create_namespace(&ctx(), cat, &ns(&["a", "b"]), &HashMap::new()).await,
        StoreError::AlreadyExists(m) if m == "Namespace already exists: a.b"
    );
}

async fn namespace_invalid_names_are_refused(store: Store) {
    let f = fixture(&store).await;
    let cat = &f.catalog.id;
    let with_separator = vec![format!("a{NAMESPACE_SEPARATOR}b")];
    for bad in [vec![], ns(&[""]), with_separator] {
        assert_err!(
            store
                .create_namespace(&ctx(), cat, &bad, &HashMap::new())
                .await,
            StoreError::Invalid(_)
        );
    }
    assert_err!(
        store.list_namespaces(cat, None, &page(None, Some(0))).await,
        StoreError::Invalid(_)
    );
    assert_eq!(changes(&store).await.len(), 3, "only the fixture wrote");
}

async fn namespace_list_top_level_and_children_paginated(store: Store) {
    let f = fixture(&store).await;
    let cat = f.catalog.id.clone();
    for name in [
        &["c"][..],
        &["a"],
        &["b"],
        &["a", "y"],
        &["a", "x"],
        &["a", "z"],
        &["a", "y", "deep"],
    ] {
        store
            .create_namespace(&ctx(), &cat, &ns(name), &HashMap::new())
            .await
            .unwrap();
    }
    let all = store
        .list_namespaces(&cat, None, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(all.items, vec![ns(&["a"]), ns(&["b"]), ns(&["c"])]);
    assert_eq!(all.next_token, None);

    let list = |parent: Option<Vec<String>>| {
        let store = store.clone();
        let cat = cat.clone();
        move |req: PageRequest| {
            let store = store.clone();
            let cat = cat.clone();
            let parent = parent.clone();
            async move {
                store
                    .list_namespaces(&cat, parent.as_deref(), &req)
                    .await
                    .unwrap()
            }
        }
    };
    assert_eq!(
        all_pages(1, list(None)).await,
        vec![vec![ns(&["a"])], vec![ns(&["b"])], vec![ns(&["c"])]]
    );
    assert_eq!(
        all_pages(2, list(None)).await,
        vec![vec![ns(&["a"]), ns(&["b"])], vec![ns(&["c"])]]
    );
    assert_eq!(
        all_pages(3, list(None)).await,
        vec![vec![ns(&["a"]), ns(&["b"]), ns(&["c"])]]
    );
    assert_eq!(
        all_pages(10, list(None)).await,
        vec![vec![ns(&["a"]), ns(&["b"]), ns(&["c"])]]
    );

    // Children of `a` (not the grandchild a.y.deep), tokens are full joined names.
    let first = store
        .list_namespaces(&cat, Some(&ns(&["a"])), &page(None, Some(2)))
        .await
        .unwrap();
    assert_eq!(first.items, vec![ns(&["a", "x"]), ns(&["a", "y"])]);
    assert_eq!(
        first.next_token.as_deref(),
        Some(format!("a{NAMESPACE_SEPARATOR}y").as_str())
    );
    let second = store
        .list_namespaces(
            &cat,
            Some(&ns(&["a"])),
            &page(first.next_token.as_deref(), Some(2)),
        )
        .await
        .unwrap();
    assert_eq!(second.items, vec![ns(&["a", "z"])]);
    assert_eq!(second.next_token, None);
    assert_eq!(
        all_pages(1, list(Some(ns(&["a"])))).await,
        vec![
            vec![ns(&["a", "x"])],
            vec![ns(&["a", "y"])],
            vec![ns(&["a", "z"])]
        ]
    );
    assert_eq!(
        all_pages(2, list(Some(ns(&["a", "y"])))).await,
        vec![vec![ns(&["a", "y", "deep"])]]
    );
    let leaf = store
        .list_namespaces(&cat, Some(&ns(&["b"])), &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(leaf.items, Vec::<Vec<String>>::new());
    assert_eq!(leaf.next_token, None);
    assert_err!(
        store.list_namespaces(&cat, Some(&ns(&["nope"])), &PageRequest::default()).await,
        StoreError::NotFound(NotFound::Namespace(m)) if m == "nope"
    );
}

async fn namespace_drop_refuses_non_empty_then_drops(store: Store) {
    let f = fixture(&store).await;
    let cat = &f.catalog.id;
    store
        .create_namespace(&ctx(), cat, &ns(&["a"]), &HashMap::new())
        .await
        .unwrap();
    store
        .create_namespace(&ctx(), cat, &ns(&["a", "b"]), &HashMap::new())
        .await
        .unwrap();
    assert_err!(
        store.drop_namespace(&ctx(), cat, &ns(&["a"])).await,
        StoreError::NamespaceNotEmpty(m) if m == "a"
    );
    store
        .drop_namespace(&ctx(), cat, &ns(&["a", "b"]))
        .await
        .unwrap();
    assert_eq!(
        store.get_namespace(cat, &ns(&["a", "b"])).await.unwrap(),
        None
    );

    store
        .create_table(&ctx(), cat, &ns(&["a"]), "t", EntityKind::Table, "s3://t")
        .await
        .unwrap();
    assert_err!(
        store.drop_namespace(&ctx(), cat, &ns(&["a"])).await,
        StoreError::NamespaceNotEmpty(_)
    );
    store
        .drop_table(&ctx(), cat, &ns(&["a"]), "t", EntityKind::Table)
        .await
        .unwrap();

    store
        .create_table(&ctx(), cat, &ns(&["a"]), "v", EntityKind::View, "s3://v")
        .await
        .unwrap();
    assert_err!(
        store.drop_namespace(&ctx(), cat, &ns(&["a"])).await,
        StoreError::NamespaceNotEmpty(_)
    );
    store
        .drop_table(&ctx(), cat, &ns(&["a"]), "v", EntityKind::View)
        .await
        .unwrap();

    store
        .drop_namespace(&ctx(), cat, &ns(&["a"]))
        .await
        .unwrap();
    assert_eq!(store.get_namespace(cat, &ns(&["a"])).await.unwrap(), None);
    assert_err!(
        store.drop_namespace(&ctx(), cat, &ns(&["a"])).await,
        StoreError::NotFound(NotFound::Namespace(m)) if m == "a"
    );
    // The name is free again.
    store
        .create_namespace(&ctx(), cat, &ns(&["a"]), &HashMap::new())
        .await
        .unwrap();
}

async fn namespace_properties_update_reports_updated_removed_missing(store: Store) {
    let f = fixture(&store).await;
    let cat = &f.catalog.id;
    let name = ns(&["db"]);
    store
        .create_namespace(
            &ctx(),
            cat,
            &name,
            &props(&[("k1", "v1"), ("k2", "v2"), ("k5", "v5")]),
        )
        .await
        .unwrap();
    let result = store
        .update_namespace_properties(
            &ctx(),
            cat,
            &name,
            &ns(&["k5", "k3", "k1", "k3"]),
            &props(&[("k4", "v4"), ("k2", "v2b")]),
        )
        .await
        .unwrap();
    assert_eq!(result.updated, ["k2", "k4"]);
    assert_eq!(result.removed, ["k1", "k5"]);
    assert_eq!(result.missing, ["k3"]);
    let loaded = store.get_namespace(cat, &name).await.unwrap().unwrap();
    assert_eq!(loaded.properties, props(&[("k2", "v2b"), ("k4", "v4")]));

    let empty = store
        .update_namespace_properties(&ctx(), cat, &name, &[], &HashMap::new())
        .await
        .unwrap();
    assert!(empty.updated.is_empty() && empty.removed.is_empty() && empty.missing.is_empty());

    assert_err!(
        store.update_namespace_properties(&ctx(), cat, &ns(&["nope"]), &[], &props(&[("a", "b")])).await,
        StoreError::NotFound(NotFound::Namespace(m)) if m == "nope"
    );
}

async fn namespace_properties_conflicting_key_is_invalid(store: Store) {
    let f = fixture(&store).await;
    let cat = &f.catalog.id;
    let name = ns(&["db"]);
    store
        .create_namespace(&ctx(), cat, &name, &props(&[("k", "v")]))
        .await
        .unwrap();
    let before = changes(&store).await.len();
    assert_err!(
        store
            .update_namespace_properties(&ctx(), cat, &name, &ns(&["k", "x"]), &props(&[("k", "new"), ("y", "1")]))
            .await,
        StoreError::Invalid(m) if m.contains('k')
    );
    let loaded = store.get_namespace(cat, &name).await.unwrap().unwrap();
    assert_eq!(loaded.properties, props(&[("k", "v")]));
    assert_eq!(changes(&store).await.len(), before);
}

async fn namespace_concurrent_creates_one_wins_rest_already_exist(store: Store) {
    let f = fixture(&store).await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = store.clone();
        let cat = f.catalog.id.clone();
        tasks.push(tokio::spawn(async move {
            store
                .create_namespace(&ctx(), &cat, &ns(&["race"]), &HashMap::new())
                .await
        }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::AlreadyExists(m)) => assert_eq!(m, "Namespace already exists: race"),
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(
        ops(&store)
            .await
            .iter()
            .filter(|op| *op == "create_namespace")
            .count(),
        1
    );
}

async fn table_create_get_and_duplicate(store: Store) {
    let (f, table) = fixture_with_table(&store).await;
    let cat = &f.catalog.id;
    assert_eq!(table.catalog_id, *cat);
    assert_eq!(table.namespace, ns(&["db"]));
    assert_eq!(table.name, "t");
    assert_eq!(table.kind, EntityKind::Table);
    assert_eq!(table.metadata_location, "s3://b/t/v1.json");
    assert_eq!(table.version, 1);
    assert_eq!(
        store.get_table(cat, &ns(&["db"]), "t").await.unwrap(),
        Some(table.clone())
    );
    assert_eq!(store.get_table(cat, &ns(&["db"]), "u").await.unwrap(), None);
    assert_eq!(
        store.get_table(cat, &ns(&["nope"]), "t").await.unwrap(),
        None
    );
    assert_err!(
        store.create_table(&ctx(), cat, &ns(&["db"]), "t", EntityKind::Table, "s3://other").await,
        StoreError::AlreadyExists(m) if m == "Table already exists: db.t"
    );
    assert_err!(
        store.create_table(&ctx(), cat, &ns(&["nope"]), "t", EntityKind::Table, "s3://x").await,
        StoreError::NotFound(NotFound::Namespace(m)) if m == "nope"
    );
    // Nested namespaces and the same name elsewhere.
    store
        .create_namespace(&ctx(), cat, &ns(&["db", "inner"]), &HashMap::new())
        .await
        .unwrap();
    let nested = store
        .create_table(
            &ctx(),
            cat,
            &ns(&["db", "inner"]),
            "t",
            EntityKind::Table,
            "s3://n",
        )
        .await
        .unwrap();
    assert_ne!(nested.id, table.id);
    assert_eq!(
        store
            .get_table(cat, &ns(&["db", "inner"]), "t")
            .await
            .unwrap(),
        Some(nested)
    );
    assert_err!(
        store.create_table(&ctx(), cat, &ns(&["db", "inner"]), "t", EntityKind::Table, "s3://n").await,
        StoreError::AlreadyExists(m) if m == "Table already exists: db.inner.t"
    );
    assert_eq!(
        store.get_table(cat, &ns(&["db"]), "t").await.unwrap(),
        Some(table)
    );
}

async fn table_and_view_names_clash_both_ways(store: Store) {
    let (f, _table) = fixture_with_table(&store).await;
    let cat = &f.catalog.id;
    let db = ns(&["db"]);
    assert_err!(
        store.create_table(&ctx(), cat, &db, "t", EntityKind::View, "s3://v").await,
        StoreError::AlreadyExists(m) if m == "Table with same name already exists: db.t"
    );
    let view = store
        .create_table(&ctx(), cat, &db, "v", EntityKind::View, "s3://v1")
        .await
        .unwrap();
    assert_eq!(view.kind, EntityKind::View);
    assert_eq!(view.version, 1);
    assert_err!(
        store.create_table(&ctx(), cat, &db, "v", EntityKind::Table, "s3://t").await,
        StoreError::AlreadyExists(m) if m == "View with same name already exists: db.v"
    );
    assert_err!(
        store.create_table(&ctx(), cat, &db, "v", EntityKind::View, "s3://v2").await,
        StoreError::AlreadyExists(m) if m == "View already exists: db.v"
    );
    // get_table returns the entity whatever its kind.
    assert_eq!(store.get_table(cat, &db, "v").await.unwrap(), Some(view));
}

async fn table_list_by_kind_paginated(store: Store) {
    let f = fixture(&store).await;
    let cat = f.catalog.id.clone();
    let db = ns(&["db"]);
    store
        .create_namespace(&ctx(), &cat, &db, &HashMap::new())
        .await
        .unwrap();
    store
        .create_namespace(&ctx(), &cat, &ns(&["db", "child"]), &HashMap::new())
        .await
        .unwrap();
    for name in ["t3", "t1", "t5", "t2", "t4"] {
        store
            .create_table(&ctx(), &cat, &db, name, EntityKind::Table, "s3://t")
            .await
            .unwrap();
    }
    for name in ["v2", "v1"] {
        store
            .create_table(&ctx(), &cat, &db, name, EntityKind::View, "s3://v")
            .await
            .unwrap();
    }
    store
        .create_table(
            &ctx(),
            &cat,
            &ns(&["db", "child"]),
            "t0",
            EntityKind::Table,
            "s3://t",
        )
        .await
        .unwrap();

    let list = |kind: EntityKind| {
        let store = store.clone();
        let cat = cat.clone();
        move |req: PageRequest| {
            let store = store.clone();
            let cat = cat.clone();
            async move {
                store
                    .list_tables(&cat, &ns(&["db"]), kind, &req)
                    .await
                    .unwrap()
            }
        }
    };
    let all = store
        .list_tables(&cat, &db, EntityKind::Table, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(all.items, ["t1", "t2", "t3", "t4", "t5"]);
    assert_eq!(all.next_token, None);
    assert_eq!(
        all_pages(2, list(EntityKind::Table)).await,
        vec![vec!["t1", "t2"], vec!["t3", "t4"], vec!["t5"]]
    );
    assert_eq!(
        all_pages(1, list(EntityKind::Table)).await,
        vec![vec!["t1"], vec!["t2"], vec!["t3"], vec!["t4"], vec!["t5"]]
    );
    assert_eq!(
        all_pages(5, list(EntityKind::Table)).await,
        vec![vec!["t1", "t2", "t3", "t4", "t5"]]
    );
    assert_eq!(
        all_pages(2, list(EntityKind::View)).await,
        vec![vec!["v1", "v2"]]
    );
    assert_eq!(
        all_pages(1, list(EntityKind::View)).await,
        vec![vec!["v1"], vec!["v2"]]
    );

    let first = store
        .list_tables(&cat, &db, EntityKind::Table, &page(None, Some(2)))
        .await
        .unwrap();
    assert_eq!(first.next_token.as_deref(), Some("t2"));
    let rest = store
        .list_tables(&cat, &db, EntityKind::Table, &page(Some("t2"), None))
        .await
        .unwrap();
    assert_eq!(rest.items, ["t3", "t4", "t5"]);
    assert_eq!(rest.next_token, None);

    let empty = store
        .list_tables(
            &cat,
            &ns(&["db", "child"]),
            EntityKind::View,
            &PageRequest::default(),
        )
        .await
        .unwrap();
    assert!(empty.items.is_empty());
    assert_eq!(empty.next_token, None);
}

async fn table_list_in_missing_namespace_is_not_found(store: Store) {
    let f = fixture(&store).await;
    for kind in [EntityKind::Table, EntityKind::View] {
        assert_err!(
            store.list_tables(&f.catalog.id, &ns(&["nope", "deeper"]), kind, &PageRequest::default()).await,
            StoreError::NotFound(NotFound::Namespace(m)) if m == "nope.deeper"
        );
    }
}

async fn table_concurrent_creates_one_wins_rest_already_exist(store: Store) {
    let f = fixture(&store).await;
    store
        .create_namespace(&ctx(), &f.catalog.id, &ns(&["db"]), &HashMap::new())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        let cat = f.catalog.id.clone();
        let kind = if i % 2 == 0 {
            EntityKind::Table
        } else {
            EntityKind::View
        };
        tasks.push(tokio::spawn(async move {
            store
                .create_table(&ctx(), &cat, &ns(&["db"]), "race", kind, "s3://r")
                .await
        }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::AlreadyExists(m)) => assert!(m.ends_with("exists: db.race"), "{m}"),
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(
        ops(&store)
            .await
            .iter()
            .filter(|op| *op == "create_table")
            .count(),
        1
    );
}

async fn commit_cas_success_bumps_version(store: Store) {
    let (f, table) = fixture_with_table(&store).await;
    let committed = store
        .commit_tables(&ctx(), &[swap(&table, 1, "s3://b/t/v2.json")])
        .await
        .unwrap();
    assert_eq!(committed.len(), 1);
    assert_eq!(committed[0].version, 2);
    assert_eq!(committed[0].metadata_location, "s3://b/t/v2.json");
    assert_eq!(committed[0].id, table.id);
    assert_eq!(committed[0].name, "t");
    let loaded = store
        .get_table(&f.catalog.id, &ns(&["db"]), "t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded, committed[0]);
    let again = store
        .commit_tables(&ctx(), &[swap(&table, 2, "s3://b/t/v3.json")])
        .await
        .unwrap();
    assert_eq!(again[0].version, 3);
    assert_eq!(store.commit_tables(&ctx(), &[]).await.unwrap(), vec![]);
}

async fn commit_stale_expected_version_conflicts_and_keeps_pointer(store: Store) {
    let (f, table) = fixture_with_table(&store).await;
    store
        .commit_tables(&ctx(), &[swap(&table, 1, "s3://b/t/v2.json")])
        .await
        .unwrap();
    assert_err!(
        store.commit_tables(&ctx(), &[swap(&table, 1, "s3://b/t/stale.json")]).await,
        StoreError::CommitConflict(m) if m.contains("db.t")
    );
    assert_err!(
        store
            .commit_tables(&ctx(), &[swap(&table, 7, "s3://b/t/future.json")])
            .await,
        StoreError::CommitConflict(_)
    );
    let loaded = store
        .get_table(&f.catalog.id, &ns(&["db"]), "t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded.version, 2);
    assert_eq!(loaded.metadata_location, "s3://b/t/v2.json");
}

async fn commit_multi_table_with_one_stale_swap_changes_nothing(store: Store) {
    let (f, t1) = fixture_with_table(&store).await;
    let cat = &f.catalog.id;
    let db = ns(&["db"]);
    let t2 = store
        .create_table(&ctx(), cat, &db, "t2", EntityKind::Table, "s3://t2/v1")
        .await
        .unwrap();
    let t3 = store
        .create_table(&ctx(), cat, &db, "t3", EntityKind::Table, "s3://t3/v1")
        .await
        .unwrap();
    store
        .commit_tables(&ctx(), &[swap(&t2, 1, "s3://t2/v2")])
        .await
        .unwrap();
    let before = changes(&store).await.len();

    assert_err!(
        store
            .commit_tables(&ctx(), &[swap(&t1, 1, "s3://t1/x"), swap(&t2, 1, "s3://t2/x"), swap(&t3, 1, "s3://t3/x")])
            .await,
        StoreError::CommitConflict(m) if m.contains("db.t2")
    );
    let load = |name: &'static str| {
        let store = store.clone();
        let cat = cat.clone();
        async move {
            store
                .get_table(&cat, &ns(&["db"]), name)
                .await
                .unwrap()
                .unwrap()
        }
    };
    assert_eq!(load("t").await, t1);
    assert_eq!(load("t2").await.version, 2);
    assert_eq!(load("t2").await.metadata_location, "s3://t2/v2");
    assert_eq!(load("t3").await, t3);
    assert_eq!(
        changes(&store).await.len(),
        before,
        "a failed commit appends nothing"
    );

    // All current: every pointer moves, results in input order.
    let committed = store
        .commit_tables(
            &ctx(),
            &[
                swap(&t3, 1, "s3://t3/v2"),
                swap(&t1, 1, "s3://t1/v2"),
                swap(&t2, 2, "s3://t2/v3"),
            ],
        )
        .await
        .unwrap();
    let summary: Vec<(&str, i64, &str)> = committed
        .iter()
        .map(|t| (t.name.as_str(), t.version, t.metadata_location.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("t3", 2, "s3://t3/v2"),
            ("t", 2, "s3://t1/v2"),
            ("t2", 3, "s3://t2/v3")
        ]
    );
    assert_eq!(load("t").await.version, 2);
    assert_eq!(load("t2").await.version, 3);
    assert_eq!(load("t3").await.version, 2);
    let new_ops = ops(&store).await.split_off(before);
    assert_eq!(new_ops, ["commit_table", "commit_table", "commit_table"]);

    // The same table twice in one commit is refused.
    assert_err!(
        store
            .commit_tables(&ctx(), &[swap(&t1, 2, "s3://a"), swap(&t1, 3, "s3://b")])
            .await,
        StoreError::Invalid(_)
    );
}

async fn commit_of_vanished_table_conflicts(store: Store) {
    let (f, table) = fixture_with_table(&store).await;
    store
        .drop_table(&ctx(), &f.catalog.id, &ns(&["db"]), "t", EntityKind::Table)
        .await
        .unwrap();
    assert_err!(
        store
            .commit_tables(&ctx(), &[swap(&table, 1, "s3://b/t/v2.json")])
            .await,
        StoreError::CommitConflict(_)
    );
}

async fn commit_sixteen_racers_from_same_version_exactly_one_wins(store: Store) {
    let (f, table) = fixture_with_table(&store).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        let barrier = barrier.clone();
        let swap = swap(&table, 1, &format!("s3://b/t/racer-{i}.json"));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            (i, store.commit_tables(&ctx(), &[swap]).await)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (i, Ok(records)) => {
                assert_eq!(records[0].version, 2);
                winners.push(i);
            }
            (_, Err(StoreError::CommitConflict(_))) => {}
            (_, Err(e)) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one racer wins");
    let loaded = store
        .get_table(&f.catalog.id, &ns(&["db"]), "t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded.version, 2);
    assert_eq!(
        loaded.metadata_location,
        format!("s3://b/t/racer-{}.json", winners[0])
    );
    assert_eq!(
        ops(&store)
            .await
            .iter()
            .filter(|op| *op == "commit_table")
            .count(),
        1
    );
}

async fn commit_concurrent_cas_loops_all_land(store: Store) {
    const TASKS: usize = 16;
    const COMMITS: usize = 5;
    let (f, table) = fixture_with_table(&store).await;
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = store.clone();
        let cat = f.catalog.id.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0usize;
            for commit in 0..COMMITS {
                loop {
                    let current = store
                        .get_table(&cat, &ns(&["db"]), "t")
                        .await
                        .unwrap()
                        .unwrap();
                    let location = format!("s3://b/t/{task}-{commit}.json");
                    match store
                        .commit_tables(&ctx(), &[swap(&current, current.version, &location)])
                        .await
                    {
                        Ok(records) => {
                            assert_eq!(records[0].version, current.version + 1);
                            break;
                        }
                        Err(StoreError::CommitConflict(_)) => conflicts += 1,
                        Err(e) => panic!("unexpected error: {e:?}"),
                    }
                    assert!(conflicts < 10_000, "CAS loop starves");
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let total = (TASKS * COMMITS) as i64;
    let loaded = store
        .get_table(&f.catalog.id, &ns(&["db"]), "t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded.version, 1 + total);

    let commits: Vec<ChangeRecord> = changes(&store)
        .await
        .into_iter()
        .filter(|c| c.op == "commit_table" && c.payload["id"] == table.id.as_str())
        .collect();
    assert_eq!(commits.len() as i64, total);
    let versions: BTreeSet<i64> = commits
        .iter()
        .map(|c| c.payload["version"].as_i64().unwrap())
        .collect();
    assert_eq!(
        versions,
        (2..=1 + total).collect::<BTreeSet<i64>>(),
        "every version committed once"
    );
}

async fn drop_table_and_view(store: Store) {
    let (f, table) = fixture_with_table(&store).await;
    let cat = &f.catalog.id;
    let db = ns(&["db"]);
    let view = store
        .create_table(&ctx(), cat, &db, "v", EntityKind::View, "s3://v")
        .await
        .unwrap();
    // Kind must match.
    assert_err!(
        store.drop_table(&ctx(), cat, &db, "t", EntityKind::View).await,
        StoreError::NotFound(NotFound::View(m)) if m == "db.t"
    );
    assert_err!(
        store.drop_table(&ctx(), cat, &db, "v", EntityKind::Table).await,
        StoreError::NotFound(NotFound::Table(m)) if m == "db.v"
    );
    assert_eq!(
        store
            .drop_table(&ctx(), cat, &db, "t", EntityKind::Table)
            .await
            .unwrap(),
        table
    );
    assert_eq!(store.get_table(cat, &db, "t").await.unwrap(), None);
    assert_err!(
        store.drop_table(&ctx(), cat, &db, "t", EntityKind::Table).await,
        StoreError::NotFound(NotFound::Table(m)) if m == "db.t"
    );
    assert_eq!(
        store
            .drop_table(&ctx(), cat, &db, "v", EntityKind::View)
            .await
            .unwrap(),
        view
    );
    assert_eq!(store.get_table(cat, &db, "v").await.unwrap(), None);
    assert_err!(
        store
            .drop_table(&ctx(), cat, &ns(&["nope"]), "t", EntityKind::Table)
            .await,
        StoreError::NotFound(_)
    );
    // The name is free again, with a fresh id and version.
    let again = store
        .create_table(&ctx(), cat, &db, "t", EntityKind::Table, "s3://t2")
        .await
        .unwrap();
    assert_ne!(again.id, table.id);
    assert_eq!(again.version, 1);
}

async fn rename_table_within_and_across_namespaces(store: Store) {
    let (f, table) = fixture_with_table(&store).await;
    let cat = &f.catalog.id;
    let db = ns(&["db"]);
    let other = ns(&["other", "inner"]);
    store
        .create_namespace(&ctx(), cat, &ns(&["other"]), &HashMap::new())
        .await
        .unwrap();
    store
        .create_namespace(&ctx(), cat, &other, &HashMap::new())
        .await
        .unwrap();
    let moved = store
        .commit_tables(&ctx(), &[swap(&table, 1, "s3://b/t/v2.json")])
        .await
        .unwrap();

    let renamed = store
        .rename_table(&ctx(), cat, &db, "t", &db, "t_new", EntityKind::Table)
        .await
        .unwrap();
    assert_eq!(renamed.name, "t_new");
    assert_eq!(renamed.id, table.id);
    assert_eq!(renamed.version, 2);
    assert_eq!(renamed.metadata_location, moved[0].metadata_location);
    assert_eq!(store.get_table(cat, &db, "t").await.unwrap(), None);
    assert_eq!(
        store.get_table(cat, &db, "t_new").await.unwrap(),
        Some(renamed)
    );

    let across = store
        .rename_table(&ctx(), cat, &db, "t_new", &other, "t", EntityKind::Table)
        .await
        .unwrap();
    assert_eq!(across.namespace, other);
    assert_eq!(across.name, "t");
    assert_eq!(
        store.get_table(cat, &other, "t").await.unwrap(),
        Some(across.clone())
    );
    assert_eq!(store.get_table(cat, &db, "t_new").await.unwrap(), None);
    let listed = store
        .list_tables(cat, &other, EntityKind::Table, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.items, ["t"]);
    // The old namespace is empty and can go; the table still commits by id.
    store.drop_namespace(&ctx(), cat, &db).await.unwrap();
    let committed = store
        .commit_tables(&ctx(), &[swap(&across, 2, "s3://b/t/v3.json")])
        .await
        .unwrap();
    assert_eq!(committed[0].namespace, other);
    assert_eq!(committed[0].version, 3);

    // Views rename too.
    store
        .create_table(&ctx(), cat, &other, "v", EntityKind::View, "s3://v")
        .await
        .unwrap();
    let view = store
        .rename_table(
            &ctx(),
            cat,
            &other,
            "v",
            &ns(&["other"]),
            "v2",
            EntityKind::View,
        )
        .await
        .unwrap();
    assert_eq!(view.kind, EntityKind::View);
    assert_eq!(
        store.get_table(cat, &ns(&["other"]), "v2").await.unwrap(),
        Some(view)
    );
}

async fn rename_table_refusals(store: Store) {
    let (f, table) = fixture_with_table(&store).await;
    let cat = &f.catalog.id;
    let db = ns(&["db"]);
    store
        .create_table(&ctx(), cat, &db, "t2", EntityKind::Table, "s3://t2")
        .await
        .unwrap();
    store
        .create_table(&ctx(), cat, &db, "v", EntityKind::View, "s3://v")
        .await
        .unwrap();
    let before = changes(&store).await.len();

    assert_err!(
        store.rename_table(&ctx(), cat, &db, "t", &db, "t2", EntityKind::Table).await,
        StoreError::AlreadyExists(m) if m == "Table already exists: db.t2"
    );
    assert_err!(
        store.rename_table(&ctx(), cat, &db, "t", &db, "v", EntityKind::Table).await,
        StoreError::AlreadyExists(m) if m == "View with same name already exists: db.v"
    );
    assert_err!(
        store.rename_table(&ctx(), cat, &db, "v", &db, "t", EntityKind::View).await,
        StoreError::AlreadyExists(m) if m == "Table with same name already exists: db.t"
    );
    assert_err!(
        store.rename_table(&ctx(), cat, &db, "t", &ns(&["nope"]), "t", EntityKind::Table).await,
        StoreError::NotFound(NotFound::Namespace(m)) if m == "nope"
    );
    assert_err!(
        store.rename_table(&ctx(), cat, &db, "missing", &db, "x", EntityKind::Table).await,
        StoreError::NotFound(NotFound::Table(m)) if m == "db.missing"
    );
    assert_err!(
        store.rename_table(&ctx(), cat, &db, "t", &db, "x", EntityKind::View).await,
        StoreError::NotFound(NotFound::View(m)) if m == "db.t"
    );
    assert_eq!(store.get_table(cat, &db, "t").await.unwrap(), Some(table));
    assert_eq!(store.get_table(cat, &db, "x").await.unwrap(), None);
    assert_eq!(changes(&store).await.len(), before);
}

async fn stale_epoch_fences_every_mutation(store: Store) {
    let (f, table) = fixture_with_table(&store).await;
    let cat = f.catalog.id.clone();
    let db = ns(&["db"]);
    store
        .create_namespace(&ctx(), &cat, &ns(&["empty"]), &props(&[("k", "v")]))
        .await
        .unwrap();
    store.set_epoch(2).await.unwrap();
    assert_eq!(store.current_epoch().await.unwrap(), 2);
    let before = changes(&store).await;

    for carried in [1, 3] {
        let stale = WriteContext {
            epoch: carried,
            actor: "old-primary".into(),
        };
        macro_rules! fenced {
            ($call:expr) => {
                assert_err!($call, StoreError::StaleEpoch { carried: c, current: 2 } if c == carried)
            };
        }
        fenced!(store.create_tenant(&stale, "t2").await);
        fenced!(
            store
                .create_warehouse(&stale, &f.tenant.id, "wh2", "b", "")
                .await
        );
        fenced!(
            store
                .create_catalog(
                    &stale,
                    &f.tenant.id,
                    &f.warehouse.id,
                    "cat2",
                    &HashMap::new()
                )
                .await
        );
        fenced!(
            store
                .create_namespace(&stale, &cat, &ns(&["ns2"]), &HashMap::new())
                .await
        );
        fenced!(store.drop_namespace(&stale, &cat, &ns(&["empty"])).await);
        fenced!(
            store
                .update_namespace_properties(
                    &stale,
                    &cat,
                    &ns(&["empty"]),
                    &ns(&["k"]),
                    &props(&[("x", "y")])
                )
                .await
        );
        fenced!(
            store
                .create_table(&stale, &cat, &db, "t2", EntityKind::Table, "s3://t2")
                .await
        );
        fenced!(
            store
                .commit_tables(&stale, &[swap(&table, 1, "s3://b/t/v2.json")])
                .await
        );
        fenced!(
            store
                .drop_table(&stale, &cat, &db, "t", EntityKind::Table)
                .await
        );
        fenced!(
            store
                .rename_table(&stale, &cat, &db, "t", &db, "t3", EntityKind::Table)
                .await
        );
    }

    assert_eq!(store.get_tenant("t2").await.unwrap(), None);
    assert_eq!(
        store.get_warehouse(&f.tenant.id, "wh2").await.unwrap(),
        None
    );
    assert_eq!(store.get_catalog(&f.tenant.id, "cat2").await.unwrap(), None);
    assert_eq!(
        store.get_namespace(&cat, &ns(&["ns2"])).await.unwrap(),
        None
    );
    let empty = store
        .get_namespace(&cat, &ns(&["empty"]))
        .await
        .unwrap()
        .expect("not dropped");
    assert_eq!(empty.properties, props(&[("k", "v")]));
    assert_eq!(store.get_table(&cat, &db, "t2").await.unwrap(), None);
    assert_eq!(store.get_table(&cat, &db, "t3").await.unwrap(), None);
    assert_eq!(
        store.get_table(&cat, &db, "t").await.unwrap(),
        Some(table.clone())
    );
    assert_eq!(
        changes(&store).await,
        before,
        "a fenced write appends no change record"
    );

    // Writes carrying the current epoch go through, and are logged under it.
    let current = WriteContext {
        epoch: 2,
        actor: "new-primary".into(),
    };
    store
        .commit_tables(&current, &[swap(&table, 1, "s3://b/t/v2.json")])
        .await
        .unwrap();
    let last = changes(&store).await.pop().unwrap();
    assert_eq!(
        (last.op.as_str(), last.epoch, last.actor.as_str()),
        ("commit_table", 2, "new-primary")
    );
}

async fn set_epoch_only_raises(store: Store) {
    assert_eq!(store.current_epoch().await.unwrap(), 1);
    store.set_epoch(3).await.unwrap();
    assert_eq!(store.current_epoch().await.unwrap(), 3);
    assert_err!(store.set_epoch(2).await, StoreError::Invalid(_));
    assert_err!(store.set_epoch(0).await, StoreError::Invalid(_));
    assert_eq!(store.current_epoch().await.unwrap(), 3);
    store.set_epoch(3).await.unwrap();
    store.set_epoch(4).await.unwrap();
    assert_eq!(store.current_epoch().await.unwrap(), 4);
}

async fn change_log_records_every_mutation_once(store: Store) {
    let (f, t) = fixture_with_table(&store).await;
    let cat = &f.catalog.id;
    let db = ns(&["db"]);
    store
        .create_namespace(&ctx(), cat, &ns(&["db", "sub"]), &HashMap::new())
        .await
        .unwrap();
    store
        .update_namespace_properties(&ctx(), cat, &db, &[], &props(&[("k", "v")]))
        .await
        .unwrap();
    let v = store
        .create_table(&ctx(), cat, &db, "v", EntityKind::View, "s3://v1")
        .await
        .unwrap();
    let t2 = store
        .create_table(&ctx(), cat, &db, "t2", EntityKind::Table, "s3://t2")
        .await
        .unwrap();
    store
        .commit_tables(&ctx(), &[swap(&t, 1, "s3://t/v2")])
        .await
        .unwrap();
    store
        .commit_tables(
            &ctx(),
            &[
                swap(&t, 2, "s3://t/v3"),
                swap(&t2, 1, "s3://t2/v2"),
                swap(&v, 1, "s3://v2"),
            ],
        )
        .await
        .unwrap();
    store
        .rename_table(
            &ctx(),
            cat,
            &db,
            "t2",
            &ns(&["db", "sub"]),
            "moved",
            EntityKind::Table,
        )
        .await
        .unwrap();
    store
        .drop_table(&ctx(), cat, &ns(&["db", "sub"]), "moved", EntityKind::Table)
        .await
        .unwrap();
    store
        .drop_namespace(&ctx(), cat, &ns(&["db", "sub"]))
        .await
        .unwrap();

    let log = changes(&store).await;
    let ops: Vec<&str> = log.iter().map(|c| c.op.as_str()).collect();
    assert_eq!(
        ops,
        [
            "create_tenant",
            "create_warehouse",
            "create_catalog",
            "create_namespace",
            "create_table",
            "create_namespace",
            "update_namespace_properties",
            "create_table",
            "create_table",
            "commit_table",
            "commit_table",
            "commit_table",
            "commit_table",
            "rename_table",
            "drop_table",
            "drop_namespace",
        ]
    );
    assert!(
        log.windows(2).all(|w| w[0].seq < w[1].seq),
        "seq strictly increasing"
    );
    for change in &log {
        assert_eq!(change.epoch, 1);
        assert_eq!(change.actor, "conformance");
        assert!(change.created_ms > 0);
        let expected_catalog = !matches!(change.op.as_str(), "create_tenant" | "create_warehouse");
        assert_eq!(
            change.catalog_id.as_deref() == Some(cat.as_str()),
            expected_catalog,
            "{change:?}"
        );
    }

    // Payloads carry enough to re-apply.
    assert_eq!(log[0].payload["name"], "acme");
    assert_eq!(log[0].payload["id"], f.tenant.id.as_str());
    assert_eq!(log[1].payload["bucket"], "bucket");
    assert_eq!(log[1].payload["key_prefix"], "prefix/");
    assert_eq!(log[2].payload["properties"]["owner"], "data");
    assert_eq!(log[2].payload["warehouse_id"], f.warehouse.id.as_str());
    assert_eq!(log[3].payload["namespace"], serde_json::json!(["db"]));
    assert_eq!(log[4].payload["kind"], "table");
    assert_eq!(log[4].payload["metadata_location"], "s3://b/t/v1.json");
    assert_eq!(log[6].payload["properties"]["k"], "v");
    assert_eq!(log[7].payload["kind"], "view");
    let commit = &log[10];
    assert_eq!(commit.payload["id"], t.id.as_str());
    assert_eq!(commit.payload["catalog_id"], cat.as_str());
    assert_eq!(commit.payload["namespace"], serde_json::json!(["db"]));
    assert_eq!(commit.payload["name"], "t");
    assert_eq!(commit.payload["kind"], "table");
    assert_eq!(commit.payload["metadata_location"], "s3://t/v3");
    assert_eq!(commit.payload["version"], 3);
    assert_eq!(log[12].payload["kind"], "view");
    assert_eq!(
        log[13].payload["to_namespace"],
        serde_json::json!(["db", "sub"])
    );
    assert_eq!(log[13].payload["to_name"], "moved");
    assert_eq!(log[13].payload["from_name"], "t2");
    assert_eq!(log[14].payload["id"], t2.id.as_str());

    // changes_after pages by seq.
    let after = store.changes_after(log[4].seq, 3).await.unwrap();
    assert_eq!(after, log[5..8].to_vec());
    assert_eq!(store.changes_after(log[15].seq, 10).await.unwrap(), vec![]);
}

async fn change_log_failed_mutations_append_nothing(store: Store) {
    let (f, t) = fixture_with_table(&store).await;
    let cat = &f.catalog.id;
    let db = ns(&["db"]);
    store
        .create_namespace(&ctx(), cat, &ns(&["db", "sub"]), &HashMap::new())
        .await
        .unwrap();
    let before = changes(&store).await;
    assert!(store.create_tenant(&ctx(), "acme").await.is_err());
    assert!(store
        .create_warehouse(&ctx(), &f.tenant.id, "wh", "b", "")
        .await
        .is_err());
    assert!(store
        .create_catalog(
            &ctx(),
            &f.tenant.id,
            &f.warehouse.id,
            "cat",
            &HashMap::new()
        )
        .await
        .is_err());
    assert!(store
        .create_namespace(&ctx(), cat, &db, &HashMap::new())
        .await
        .is_err());
    assert!(store
        .create_namespace(&ctx(), cat, &ns(&["x", "y"]), &HashMap::new())
        .await
        .is_err());
    assert!(store.drop_namespace(&ctx(), cat, &db).await.is_err());
    assert!(store
        .drop_namespace(&ctx(), cat, &ns(&["nope"]))
        .await
        .is_err());
    assert!(store
        .update_namespace_properties(&ctx(), cat, &ns(&["nope"]), &[], &props(&[("a", "b")]))
        .await
        .is_err());
    assert!(store
        .create_table(&ctx(), cat, &db, "t", EntityKind::View, "s3://x")
        .await
        .is_err());
    assert!(store
        .commit_tables(&ctx(), &[swap(&t, 5, "s3://x")])
        .await
        .is_err());
    assert!(store
        .drop_table(&ctx(), cat, &db, "nope", EntityKind::Table)
        .await
        .is_err());
    assert!(store
        .rename_table(
            &ctx(),
            cat,
            &db,
            "t",
            &ns(&["nope"]),
            "t",
            EntityKind::Table
        )
        .await
        .is_err());
    assert!(store.set_epoch(0).await.is_err());
    assert_eq!(changes(&store).await, before);

    // And the next successful mutation continues the sequence.
    store
        .commit_tables(&ctx(), &[swap(&t, 1, "s3://t/v2")])
        .await
        .unwrap();
    let after = changes(&store).await;
    assert_eq!(after.len(), before.len() + 1);
    assert!(after[after.len() - 1].seq > after[after.len() - 2].seq);
}

// ---- idempotency keys --------------------------------------------------------------------

const KEY: &str = "017f22e2-79b0-7cc3-98c4-dc0c0c07398f";
/// Lifetime and lease of the idempotency cases (times are explicit, in ms).
const LIFETIME: i64 = 1_800_000;
const LEASE: i64 = 300_000;

fn response(status: u16, body: &str) -> StoredResponse {
    StoredResponse {
        status,
        content_type: Some("application/json".into()),
        etag: Some("\"abc\"".into()),
        body: body.as_bytes().to_vec(),
    }
}

async fn begin(store: &Store, key: &str, fingerprint: &str, now: i64) -> IdempotencyStart {
    store
        .begin_idempotent(key, fingerprint, now, LIFETIME, LEASE)
        .await
        .expect("begin_idempotent")
}

fn token(start: IdempotencyStart) -> String {
    match start {
        IdempotencyStart::Started { token } => token,
        other => panic!("expected Started, got {other:?}"),
    }
}

async fn idempotency_begin_complete_and_replay(store: Store) {
    let t = token(begin(&store, KEY, "fp", 1_000).await);
    assert_eq!(
        begin(&store, KEY, "fp", 1_001).await,
        IdempotencyStart::InFlight
    );
    assert_eq!(
        begin(&store, KEY, "other", 1_002).await,
        IdempotencyStart::KeyReused
    );
    // Only the holder completes.
    assert!(!store
        .complete_idempotent(KEY, "not-the-token", &response(200, "{}"))
        .await
        .unwrap());
    let stored = response(200, r#"{"namespace":["a"]}"#);
    assert!(store.complete_idempotent(KEY, &t, &stored).await.unwrap());
    // Completed once: a second completion or an abandon changes nothing.
    assert!(!store
        .complete_idempotent(KEY, &t, &response(500, "x"))
        .await
        .unwrap());
    assert!(!store.abandon_idempotent(KEY, &t).await.unwrap());
    assert_eq!(
        begin(&store, KEY, "fp", 2_000).await,
        IdempotencyStart::Completed(stored.clone())
    );
    assert_eq!(
        begin(&store, KEY, "other", 2_000).await,
        IdempotencyStart::KeyReused
    );
    // A response without content type, ETag or body survives the round trip too.
    let other_key = "017f22e2-79b0-7cc3-98c4-dc0c0c073990";
    let t2 = token(begin(&store, other_key, "fp", 3_000).await);
    let empty = StoredResponse {
        status: 204,
        content_type: None,
        etag: None,
        body: Vec::new(),
    };
    assert!(store
        .complete_idempotent(other_key, &t2, &empty)
        .await
        .unwrap());
    assert_eq!(
        begin(&store, other_key, "fp", 3_001).await,
        IdempotencyStart::Completed(empty)
    );
    // Binary bodies are kept byte for byte.
    let bin_key = "017f22e2-79b0-7cc3-98c4-dc0c0c073991";
    let t3 = token(begin(&store, bin_key, "fp", 3_000).await);
    let binary = StoredResponse {
        status: 409,
        content_type: None,
        etag: None,
        body: (0..=255u8).collect(),
    };
    assert!(store
        .complete_idempotent(bin_key, &t3, &binary)
        .await
        .unwrap());
    assert_eq!(
        begin(&store, bin_key, "fp", 3_001).await,
        IdempotencyStart::Completed(binary)
    );
}

async fn idempotency_concurrent_begin_exactly_one_started(store: Store) {
    const RACERS: usize = 16;
    let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for _ in 0..RACERS {
        let store = store.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            begin(&store, KEY, "fp", 1_000).await
        }));
    }
    let mut tokens = Vec::new();
    let mut in_flight = 0;
    for task in tasks {
        match task.await.unwrap() {
            IdempotencyStart::Started { token } => tokens.push(token),
            IdempotencyStart::InFlight => in_flight += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(tokens.len(), 1, "exactly one racer reserves the key");
    assert_eq!(in_flight, RACERS - 1);
    let stored = response(200, "{}");
    assert!(store
        .complete_idempotent(KEY, &tokens[0], &stored)
        .await
        .unwrap());
    assert_eq!(
        begin(&store, KEY, "fp", 1_001).await,
        IdempotencyStart::Completed(stored)
    );

    // Racers on an expired key: again exactly one takes it over.
    let mut tasks = Vec::new();
    let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
    for _ in 0..RACERS {
        let store = store.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            begin(&store, KEY, "new-fp", 1_000 + LIFETIME).await
        }));
    }
    let mut started = 0;
    for task in tasks {
        match task.await.unwrap() {
            IdempotencyStart::Started { .. } => started += 1,
            IdempotencyStart::InFlight => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(started, 1, "exactly one racer takes over the expired key");
}

async fn idempotency_abandon_lets_the_next_caller_run(store: Store) {
    let t = token(begin(&store, KEY, "fp", 1_000).await);
    assert!(!store
        .abandon_idempotent(KEY, "not-the-token")
        .await
        .unwrap());
    assert_eq!(
        begin(&store, KEY, "fp", 1_001).await,
        IdempotencyStart::InFlight
    );
    assert!(store.abandon_idempotent(KEY, &t).await.unwrap());
    let t2 = token(begin(&store, KEY, "fp", 1_002).await);
    assert_ne!(t, t2);
    // The old holder can neither complete nor release the new reservation.
    assert!(!store
        .complete_idempotent(KEY, &t, &response(200, "{}"))
        .await
        .unwrap());
    assert!(!store.abandon_idempotent(KEY, &t).await.unwrap());
    assert_eq!(
        begin(&store, KEY, "fp", 1_003).await,
        IdempotencyStart::InFlight
    );
}

async fn idempotency_expired_key_is_new_and_the_old_holder_loses_it(store: Store) {
    let t = token(begin(&store, KEY, "fp", 1_000).await);
    assert!(store
        .complete_idempotent(KEY, &t, &response(200, "{}"))
        .await
        .unwrap());
    // Live until the lifetime has passed since the first use.
    assert!(matches!(
        begin(&store, KEY, "fp", 1_000 + LIFETIME - 1).await,
        IdempotencyStart::Completed(_)
    ));
    assert_eq!(
        begin(&store, KEY, "other", 1_000 + LIFETIME - 1).await,
        IdempotencyStart::KeyReused
    );
    // Expired: new, whatever the fingerprint; its window starts again.
    let now = 1_000 + LIFETIME;
    let t2 = token(begin(&store, KEY, "other", now).await);
    assert_eq!(
        begin(&store, KEY, "other", now + 1).await,
        IdempotencyStart::InFlight
    );
    assert_eq!(
        begin(&store, KEY, "fp", now + 1).await,
        IdempotencyStart::KeyReused
    );
    // A pending reservation that expires is taken over too; its holder then loses it.
    let later = now + LIFETIME;
    let t3 = token(begin(&store, KEY, "third", later).await);
    assert!(!store
        .complete_idempotent(KEY, &t2, &response(200, "{}"))
        .await
        .unwrap());
    assert!(!store.abandon_idempotent(KEY, &t2).await.unwrap());
    assert!(store
        .complete_idempotent(KEY, &t3, &response(201, "{}"))
        .await
        .unwrap());
    assert_eq!(
        begin(&store, KEY, "third", later + 1).await,
        IdempotencyStart::Completed(response(201, "{}"))
    );
}

async fn idempotency_stale_reservation_is_taken_over_after_the_lease(store: Store) {
    let t = token(begin(&store, KEY, "fp", 1_000).await);
    assert_eq!(
        begin(&store, KEY, "fp", 1_000 + LEASE - 1).await,
        IdempotencyStart::InFlight
    );
    // A different request never takes over, not even a stale reservation.
    assert_eq!(
        begin(&store, KEY, "other", 1_000 + LEASE).await,
        IdempotencyStart::KeyReused
    );
    let t2 = token(begin(&store, KEY, "fp", 1_000 + LEASE).await);
    assert_ne!(t, t2);
    assert!(!store
        .complete_idempotent(KEY, &t, &response(200, "old"))
        .await
        .unwrap());
    assert!(store
        .complete_idempotent(KEY, &t2, &response(200, "new"))
        .await
        .unwrap());
    // The takeover kept the first use: the key still expires LIFETIME after 1_000.
    assert!(matches!(
        begin(&store, KEY, "fp", 1_000 + LIFETIME - 1).await,
        IdempotencyStart::Completed(_)
    ));
    assert!(matches!(
        begin(&store, KEY, "other", 1_000 + LIFETIME).await,
        IdempotencyStart::Started { .. }
    ));
}

async fn idempotency_purge_removes_only_old_keys(store: Store) {
    let keys = [
        "017f22e2-79b0-7cc3-98c4-000000000001",
        "017f22e2-79b0-7cc3-98c4-000000000002",
        "017f22e2-79b0-7cc3-98c4-000000000003",
    ];
    for (i, key) in keys.iter().enumerate() {
        let now = 1_000 * (i as i64 + 1);
        let t = token(begin(&store, key, "fp", now).await);
        if i != 1 {
            assert!(store
                .complete_idempotent(key, &t, &response(200, "{}"))
                .await
                .unwrap());
        }
    }
    // Keys first used before 2_500: the first (completed) and the second (pending).
    assert_eq!(store.purge_idempotency_keys(2_500).await.unwrap(), 2);
    assert_eq!(store.purge_idempotency_keys(2_500).await.unwrap(), 0);
    assert!(matches!(
        begin(&store, keys[0], "other", 4_000).await,
        IdempotencyStart::Started { .. }
    ));
    assert!(matches!(
        begin(&store, keys[1], "other", 4_000).await,
        IdempotencyStart::Started { .. }
    ));
    assert!(matches!(
        begin(&store, keys[2], "fp", 4_000).await,
        IdempotencyStart::Completed(_)
    ));
}

// ---- metrics reports -------------------------------------------------------------------------

fn report(catalog_id: &str, namespace: &[&str], table: &str, n: i64) -> MetricsReport {
    MetricsReport {
        catalog_id: catalog_id.to_owned(),
        namespace: ns(namespace),
        table: table.to_owned(),
        report_type: if n % 2 == 0 {
            "scan-report".into()
        } else {
            "commit-report".into()
        },
        report: serde_json::json!({"table-name": table, "snapshot-id": n, "metrics": {}}),
        received_ms: 1_000 + n,
    }
}

fn query(namespace: Option<&[&str]>, table: Option<&str>, limit: u32) -> MetricsReportQuery {
    MetricsReportQuery {
        namespace: namespace.map(ns),
        table: table.map(str::to_owned),
        limit,
    }
}

fn snapshot_ids(reports: &[MetricsReport]) -> Vec<i64> {
    reports
        .iter()
        .map(|r| r.report["snapshot-id"].as_i64().unwrap())
        .collect()
}

async fn metrics_reports_record_list_filter_and_trim(store: Store) {
    let f = fixture(&store).await;
    let cat = f.catalog.id.as_str();
    let changes_before = changes(&store).await.len();
    store
        .record_metrics_report(&report(cat, &["db"], "t", 0), 100)
        .await
        .unwrap();
    store
        .record_metrics_report(&report(cat, &["db"], "u", 1), 100)
        .await
        .unwrap();
    store
        .record_metrics_report(&report(cat, &["db", "inner"], "t", 2), 100)
        .await
        .unwrap();
    store
        .record_metrics_report(&report(cat, &["db"], "t", 3), 100)
        .await
        .unwrap();
    store
        .record_metrics_report(&report("other-catalog", &["db"], "t", 4), 100)
        .await
        .unwrap();
    // Bookkeeping, not catalog state: nothing in the change log.
    assert_eq!(changes(&store).await.len(), changes_before);

    let all = store
        .list_metrics_reports(cat, &query(None, None, 100))
        .await
        .unwrap();
    assert_eq!(snapshot_ids(&all), vec![3, 2, 1, 0], "newest first");
    assert_eq!(all[0], report(cat, &["db"], "t", 3));
    assert_eq!(all[1].namespace, ns(&["db", "inner"]));
    assert_eq!(
        snapshot_ids(
            &store
                .list_metrics_reports(cat, &query(Some(&["db"]), Some("t"), 100))
                .await
                .unwrap()
        ),
        vec![3, 0]
    );
    assert_eq!(
        snapshot_ids(
            &store
                .list_metrics_reports(cat, &query(Some(&["db"]), None, 100))
                .await
                .unwrap()
        ),
        vec![3, 1, 0]
    );
    assert_eq!(
        snapshot_ids(
            &store
                .list_metrics_reports(cat, &query(None, Some("t"), 100))
                .await
                .unwrap()
        ),
        vec![3, 2, 0]
    );
    assert_eq!(
        snapshot_ids(
            &store
                .list_metrics_reports(cat, &query(None, None, 2))
                .await
                .unwrap()
        ),
        vec![3, 2]
    );
    assert!(store
        .list_metrics_reports("nobody", &query(None, None, 10))
        .await
        .unwrap()
        .is_empty());

    // Retention 2: the oldest are trimmed on insert, per catalog only.
    store
        .record_metrics_report(&report(cat, &["db"], "t", 5), 2)
        .await
        .unwrap();
    assert_eq!(
        snapshot_ids(
            &store
                .list_metrics_reports(cat, &query(None, None, 100))
                .await
                .unwrap()
        ),
        vec![5, 3]
    );
    assert_eq!(
        snapshot_ids(
            &store
                .list_metrics_reports("other-catalog", &query(None, None, 100))
                .await
                .unwrap()
        ),
        vec![4]
    );
}

async fn metrics_reports_concurrent_records_keep_the_retention(store: Store) {
    const WRITERS: i64 = 8;
    const EACH: i64 = 10;
    const RETENTION: u64 = 25;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                store
                    .record_metrics_report(&report("cat", &["db"], "t", w * 100 + i), RETENTION)
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let kept = store
        .list_metrics_reports("cat", &query(None, None, 1000))
        .await
        .unwrap();
    assert_eq!(kept.len() as u64, RETENTION);
    let unique: BTreeSet<i64> = snapshot_ids(&kept).into_iter().collect();
    assert_eq!(unique.len() as u64, RETENTION);
}

async fn metrics_reports_bad_arguments_are_invalid(store: Store) {
    assert_err!(
        store
            .record_metrics_report(&report("cat", &["db"], "t", 0), 0)
            .await,
        StoreError::Invalid(_)
    );
    assert_err!(
        store
            .record_metrics_report(&report("cat", &[], "t", 0), 10)
            .await,
        StoreError::Invalid(_)
    );
    assert_err!(
        store
            .list_metrics_reports("cat", &query(None, None, 0))
            .await,
        StoreError::Invalid(_)
    );
    assert_err!(
        store.begin_idempotent(KEY, "fp", 0, 0, LEASE).await,
        StoreError::Invalid(_)
    );
}

// ---- SQLite only -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reopen_keeps_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let (f, table, last_seq) = {
        let store: Store = Arc::new(SqlStore::connect(&url).await.expect("first open"));
        let (f, table) = fixture_with_table(&store).await;
        let table = store
            .commit_tables(&ctx(), &[swap(&table, 1, "s3://b/t/v2.json")])
            .await
            .unwrap()
            .remove(0);
        store.set_epoch(5).await.unwrap();
        let last_seq = changes(&store).await.last().unwrap().seq;
        (f, table, last_seq)
    };
    let reopened = SqlStore::connect(&url).await.expect("reopen");
    let store: Store = Arc::new(reopened.clone());
    assert_eq!(store.backend(), "sqlite");
    assert_eq!(store.current_epoch().await.unwrap(), 5);
    assert_eq!(
        store.get_tenant("acme").await.unwrap(),
        Some(f.tenant.clone())
    );
    assert_eq!(
        store.get_catalog(&f.tenant.id, "cat").await.unwrap(),
        Some(f.catalog.clone())
    );
    assert_eq!(
        store
            .get_table(&f.catalog.id, &ns(&["db"]), "t")
            .await
            .unwrap(),
        Some(table)
    );
    assert_eq!(changes(&store).await.last().unwrap().seq, last_seq);
    // Still writable after reopening, and the log continues.
    let next = WriteContext {
        epoch: 5,
        actor: "reopened".into(),
    };
    store
        .create_namespace(&next, &f.catalog.id, &ns(&["later"]), &HashMap::new())
        .await
        .unwrap();
    assert_eq!(changes(&store).await.last().unwrap().seq, last_seq + 1);
    reopened.close().await;

    // The file is in WAL mode (a persistent property of the file).
    let mut raw = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn unsupported_url_scheme_is_invalid() {
    assert!(matches!(
        SqlStore::connect("mysql://localhost/x").await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        SqlStore::connect("sqlite::memory:").await,
        Err(StoreError::Invalid(_))
    ));
}

#[test]
fn with_database_replaces_the_path() {
    assert_eq!(
        database_url("postgres://u@h:5432/postgres", "x"),
        "postgres://u@h:5432/x"
    );
    assert_eq!(
        database_url("postgres://u@h:5432", "x"),
        "postgres://u@h:5432/x"
    );
    assert_eq!(
        database_url("postgres://u:p@h/db?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
}
