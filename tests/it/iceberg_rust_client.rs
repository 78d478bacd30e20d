//! iceberg-rust 0.10 as a client of Pangolin.
//!
//! The catalog and its embedded S3-compatible endpoint are started in-process
//! (`pangolin::testing::TestRegion`). The client is configured only with the
//! catalog URI and the warehouse name: the S3 endpoint, region, credentials and
//! path-style access it uses to write and read data files come from the
//! catalog (`/v1/config` and the table `config` of createTable/loadTable).
//!
//! Covered: create namespace, create table, write a Parquet data file through
//! iceberg's writer stack into the table location, fast-append it with a
//! `Transaction`, reload, scan back to Arrow; a second append; loading a table
//! that does not exist.

use crate::common::{connect, fast_append, scan_batches, table_schema, write_batch};

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use futures::TryStreamExt;
use iceberg::spec::{DataFile, DataFileFormat, Operation, PrimitiveType, Type};
use iceberg::table::Table;
use iceberg::{Catalog, ErrorKind, NamespaceIdent, TableCreation, TableIdent};
use pangolin::testing::TestRegion;

/// One row of the test table: (id, name, score).
type Row = (i64, Option<String>, Option<f64>);

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// Builds an Arrow batch for the table's current schema (with the Parquet
/// field-id metadata the writer needs).
fn batch_for(table: &Table, rows: &[Row]) -> RecordBatch {
    let arrow_schema = iceberg::arrow::schema_to_arrow_schema(table.metadata().current_schema())
        .expect("iceberg schema converts to arrow");
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0)));
    let names: ArrayRef = Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1.clone())));
    let scores: ArrayRef = Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.2)));
    RecordBatch::try_new(Arc::new(arrow_schema), vec![ids, names, scores])
        .expect("record batch matches the table schema")
}

/// Writes `rows` as one Parquet data file under the table's data location.
async fn write_data_file(table: &Table, file_prefix: &str, rows: &[Row]) -> Vec<DataFile> {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    write_batch(table, file_prefix, suffix, batch_for(table, rows)).await
}

/// Scans the whole table and returns its rows sorted by id.
async fn scan_rows(table: &Table) -> Vec<Row> {
    let mut rows = Vec::new();
    for batch in &scan_batches(table).await {
        let ids = batch
            .column_by_name("id")
            .expect("id column")
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("id is Int64");
        let names = batch
            .column_by_name("name")
            .expect("name column")
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("name is Utf8");
        let scores = batch
            .column_by_name("score")
            .expect("score column")
            .as_any()
            .downcast_ref::<Float64Array>()
            .expect("score is Float64");
        for i in 0..batch.num_rows() {
            rows.push((
                ids.value(i),
                (!names.is_null(i)).then(|| names.value(i).to_string()),
                (!scores.is_null(i)).then(|| scores.value(i)),
            ));
        }
    }
    rows.sort_by_key(|r| r.0);
    rows
}

fn summary_value<'a>(table: &'a Table, key: &str) -> Option<&'a str> {
    table
        .metadata()
        .current_snapshot()
        .expect("current snapshot")
        .summary()
        .additional_properties
        .get(key)
        .map(String::as_str)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn iceberg_rust_creates_appends_and_scans() {
    let region = TestRegion::start().await.expect("start test region");
    let catalog = connect(&region).await;

    let namespace = NamespaceIdent::new(unique("rust_client"));
    catalog
        .create_namespace(&namespace, HashMap::new())
        .await
        .expect("create namespace");

    let ident = TableIdent::new(namespace.clone(), "events".to_string());
    let created = catalog
        .create_table(
            &namespace,
            TableCreation::builder()
                .name("events".to_string())
                .schema(table_schema())
                .build(),
        )
        .await
        .expect("create table");
    assert_eq!(created.identifier(), &ident);
    assert!(
        created.metadata().location().starts_with("s3://demo/"),
        "table location should be in the warehouse bucket, got {}",
        created.metadata().location()
    );
    assert_eq!(created.metadata().snapshots().count(), 0);
    assert!(created.metadata().current_snapshot().is_none());
    let created_fields: Vec<(String, bool, Type)> = created
        .metadata()
        .current_schema()
        .as_struct()
        .fields()
        .iter()
        .map(|f| (f.name.clone(), f.required, (*f.field_type).clone()))
        .collect();
    assert_eq!(
        created_fields,
        vec![
            ("id".to_string(), true, Type::Primitive(PrimitiveType::Long)),
            (
                "name".to_string(),
                false,
                Type::Primitive(PrimitiveType::String)
            ),
            (
                "score".to_string(),
                false,
                Type::Primitive(PrimitiveType::Double)
            ),
        ]
    );
    // A new table scans as empty.
    assert_eq!(scan_rows(&created).await, Vec::<Row>::new());

    // First append: one Parquet file with three rows (unsorted on purpose).
    let first_rows: Vec<Row> = vec![
        (3, Some("gamma".to_string()), Some(3.5)),
        (1, Some("alpha".to_string()), None),
        (2, None, Some(-2.25)),
    ];
    let first_files = write_data_file(&created, "first", &first_rows).await;
    assert_eq!(first_files.len(), 1, "one data file expected");
    let data_prefix = format!("{}/data/", created.metadata().location());
    assert!(
        first_files[0].file_path().starts_with(&data_prefix),
        "data file {} should be under {data_prefix}",
        first_files[0].file_path()
    );
    assert_eq!(first_files[0].file_format(), DataFileFormat::Parquet);
    assert_eq!(first_files[0].record_count(), 3);

    let committed = fast_append(&catalog, &created, first_files).await;
    assert_eq!(committed.metadata().snapshots().count(), 1);
    assert_ne!(committed.metadata_location(), created.metadata_location());

    let reloaded = catalog.load_table(&ident).await.expect("reload table");
    assert_eq!(reloaded.metadata_location(), committed.metadata_location());
    assert_eq!(reloaded.metadata().snapshots().count(), 1);
    let first_snapshot = reloaded
        .metadata()
        .current_snapshot()
        .expect("current snapshot after first append")
        .clone();
    assert_eq!(first_snapshot.parent_snapshot_id(), None);
    assert_eq!(first_snapshot.summary().operation, Operation::Append);
    assert_eq!(summary_value(&reloaded, "added-records"), Some("3"));
    assert_eq!(summary_value(&reloaded, "total-records"), Some("3"));
    assert_eq!(summary_value(&reloaded, "total-data-files"), Some("1"));
    assert_eq!(
        reloaded
            .metadata()
            .snapshot_for_ref("main")
            .map(|s| s.snapshot_id()),
        Some(first_snapshot.snapshot_id())
    );

    assert_eq!(
        scan_rows(&reloaded).await,
        vec![
            (1, Some("alpha".to_string()), None),
            (2, None, Some(-2.25)),
            (3, Some("gamma".to_string()), Some(3.5)),
        ]
    );

    // Second append on top of the reloaded table: two more rows in a new file.
    let second_rows: Vec<Row> = vec![
        (5, Some("epsilon".to_string()), Some(5.0)),
        (4, Some("delta".to_string()), Some(0.0)),
    ];
    let second_files = write_data_file(&reloaded, "second", &second_rows).await;
    assert_eq!(second_files.len(), 1);
    assert_eq!(second_files[0].record_count(), 2);
    fast_append(&catalog, &reloaded, second_files).await;

    let table = catalog
        .load_table(&ident)
        .await
        .expect("reload after second append");
    assert_eq!(table.metadata().snapshots().count(), 2);
    let second_snapshot = table
        .metadata()
        .current_snapshot()
        .expect("current snapshot after second append");
    assert_ne!(second_snapshot.snapshot_id(), first_snapshot.snapshot_id());
    assert_eq!(
        second_snapshot.parent_snapshot_id(),
        Some(first_snapshot.snapshot_id())
    );
    assert_eq!(summary_value(&table, "added-records"), Some("2"));
    assert_eq!(summary_value(&table, "total-records"), Some("5"));
    assert_eq!(summary_value(&table, "total-data-files"), Some("2"));

    assert_eq!(
        scan_rows(&table).await,
        vec![
            (1, Some("alpha".to_string()), None),
            (2, None, Some(-2.25)),
            (3, Some("gamma".to_string()), Some(3.5)),
            (4, Some("delta".to_string()), Some(0.0)),
            (5, Some("epsilon".to_string()), Some(5.0)),
        ]
    );

    // Time travel to the first snapshot still sees only the first file.
    let old_batches: Vec<RecordBatch> = table
        .scan()
        .snapshot_id(first_snapshot.snapshot_id())
        .select(["id"])
        .build()
        .expect("build time-travel scan")
        .to_arrow()
        .await
        .expect("plan time-travel scan")
        .try_collect()
        .await
        .expect("read time-travel batches");
    let mut old_ids: Vec<i64> = old_batches
        .iter()
        .flat_map(|b| {
            let ids = b
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("id is Int64");
            (0..ids.len()).map(|i| ids.value(i)).collect::<Vec<_>>()
        })
        .collect();
    old_ids.sort();
    assert_eq!(old_ids, vec![1, 2, 3]);

    region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn iceberg_rust_sees_missing_table_as_error() {
    let region = TestRegion::start().await.expect("start test region");
    let catalog = connect(&region).await;

    // Missing table in an existing namespace.
    let namespace = NamespaceIdent::new(unique("rust_missing"));
    catalog
        .create_namespace(&namespace, HashMap::new())
        .await
        .expect("create namespace");
    let missing = TableIdent::new(namespace.clone(), "does_not_exist".to_string());
    let err = catalog
        .load_table(&missing)
        .await
        .expect_err("loading a missing table must fail");
    assert_eq!(
        err.kind(),
        ErrorKind::TableNotFound,
        "unexpected error: {err}"
    );
    assert!(!catalog.table_exists(&missing).await.expect("table_exists"));

    // Missing table in a namespace that does not exist either.
    let nowhere = TableIdent::new(
        NamespaceIdent::new(unique("rust_no_ns")),
        "does_not_exist".to_string(),
    );
    let err = catalog
        .load_table(&nowhere)
        .await
        .expect_err("loading a table of a missing namespace must fail");
    assert_eq!(
        err.kind(),
        ErrorKind::TableNotFound,
        "unexpected error: {err}"
    );

    region.shutdown().await;
}
