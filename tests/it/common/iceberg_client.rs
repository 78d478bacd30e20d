//! A region driven with iceberg-rust 0.10: a REST catalog client, the region's object store,
//! real Parquet commits, scans.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use futures::TryStreamExt;
use iceberg::spec::{DataFile, DataFileFormat, NestedField, PrimitiveType, Schema, Type};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use iceberg::{Catalog, CatalogBuilder, NamespaceIdent, TableCreation};
use iceberg_catalog_rest::{
    RestCatalog, RestCatalogBuilder, REST_CATALOG_PROP_URI, REST_CATALOG_PROP_WAREHOUSE,
};
use iceberg_storage_opendal::OpenDalStorageFactory;
use pangolin::storage::{ObjectStore, S3Settings};
use pangolin::testing::TestRegion;

use super::short;

pub async fn connect(region: &TestRegion) -> RestCatalog {
    RestCatalogBuilder::default()
        .with_storage_factory(Arc::new(OpenDalStorageFactory::S3 {
            customized_credential_load: None,
        }))
        .load(
            "pangolin",
            HashMap::from([
                (
                    REST_CATALOG_PROP_URI.to_string(),
                    region.catalog_url.clone(),
                ),
                (
                    REST_CATALOG_PROP_WAREHOUSE.to_string(),
                    region.warehouse.clone(),
                ),
            ]),
        )
        .await
        .expect("build the REST catalog client")
}

/// The region's object storage, as the catalog itself reaches it.
pub async fn store_of(region: &TestRegion) -> ObjectStore {
    ObjectStore::connect(&S3Settings {
        endpoint: Some(region.s3_endpoint.clone()),
        region: region.s3_region.clone(),
        credentials: Some((region.access_key.clone(), region.secret_key.clone())),
        path_style: true,
    })
    .await
}

pub fn table_schema() -> Schema {
    Schema::builder()
        .with_schema_id(0)
        .with_fields(vec![
            NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
            NestedField::optional(2, "name", Type::Primitive(PrimitiveType::String)).into(),
            NestedField::optional(3, "score", Type::Primitive(PrimitiveType::Double)).into(),
        ])
        .build()
        .expect("valid schema")
}

pub fn batch_for(table: &Table, ids: &[i64]) -> RecordBatch {
    let arrow_schema = iceberg::arrow::schema_to_arrow_schema(table.metadata().current_schema())
        .expect("iceberg schema converts to arrow");
    let id_col: ArrayRef = Arc::new(Int64Array::from_iter_values(ids.iter().copied()));
    let names: ArrayRef = Arc::new(StringArray::from_iter(
        ids.iter().map(|i| Some(format!("row {i}"))),
    ));
    let scores: ArrayRef = Arc::new(Float64Array::from_iter(
        ids.iter().map(|i| Some(*i as f64 / 2.0)),
    ));
    RecordBatch::try_new(Arc::new(arrow_schema), vec![id_col, names, scores])
        .expect("record batch matches the table schema")
}

/// Writes one Parquet data file with the given ids under the table's data location.
pub async fn write_data_file(table: &Table, ids: &[i64]) -> Vec<DataFile> {
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    write_batch(table, "d", suffix, batch_for(table, ids)).await
}

/// Writes `batch` as one Parquet data file under the table's data location, named
/// `<file_prefix>-…-<suffix>.parquet`.
pub async fn write_batch(
    table: &Table,
    file_prefix: &str,
    suffix: String,
    batch: RecordBatch,
) -> Vec<DataFile> {
    let metadata = table.metadata();
    let location_generator = DefaultLocationGenerator::new(metadata).expect("location generator");
    let file_name_generator = DefaultFileNameGenerator::new(
        file_prefix.to_string(),
        Some(suffix),
        DataFileFormat::Parquet,
    );
    let parquet_writer_builder = ParquetWriterBuilder::from_table_properties(
        &metadata.table_properties().expect("table properties"),
        metadata.current_schema().clone(),
    );
    let rolling_writer_builder = RollingFileWriterBuilder::new_with_default_file_size(
        parquet_writer_builder,
        table.file_io().clone(),
        location_generator,
        file_name_generator,
    );
    let mut writer = DataFileWriterBuilder::new(rolling_writer_builder)
        .build(None)
        .await
        .expect("build data file writer");
    writer.write(batch).await.expect("write record batch to S3");
    writer.close().await.expect("close data file writer")
}

pub async fn fast_append(catalog: &RestCatalog, table: &Table, files: Vec<DataFile>) -> Table {
    let tx = Transaction::new(table);
    let tx = tx
        .fast_append()
        .add_data_files(files)
        .apply(tx)
        .expect("apply fast append");
    tx.commit(catalog).await.expect("commit fast append")
}

/// Writes `ids` into a new data file and appends it.
pub async fn append(catalog: &RestCatalog, table: &Table, ids: &[i64]) -> Table {
    let files = write_data_file(table, ids).await;
    fast_append(catalog, table, files).await
}

/// Creates a namespace with a short random name starting with `prefix`; its name and ident.
pub async fn new_namespace(
    catalog: &RestCatalog,
    prefix: &str,
    properties: HashMap<String, String>,
) -> (String, NamespaceIdent) {
    let name = short(prefix);
    let namespace = NamespaceIdent::new(name.clone());
    catalog
        .create_namespace(&namespace, properties)
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
    (name, namespace)
}

/// Creates table `name` with [`table_schema`] in `namespace`.
pub async fn create_table(catalog: &RestCatalog, namespace: &NamespaceIdent, name: &str) -> Table {
    catalog
        .create_table(
            namespace,
            TableCreation::builder()
                .name(name.into())
                .schema(table_schema())
                .build(),
        )
        .await
        .unwrap_or_else(|e| panic!("create table {name}: {e}"))
}

/// Every batch a scan of the table's current snapshot returns.
pub async fn scan_batches(table: &Table) -> Vec<RecordBatch> {
    table
        .scan()
        .select_all()
        .build()
        .expect("build scan")
        .to_arrow()
        .await
        .expect("plan scan")
        .try_collect()
        .await
        .expect("read scanned batches")
}

/// The ids a scan of the table returns, sorted.
pub async fn scan_ids(table: &Table) -> Vec<i64> {
    let mut ids: Vec<i64> = scan_batches(table)
        .await
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("id column")
                .values()
                .to_vec()
        })
        .collect();
    ids.sort_unstable();
    ids
}
