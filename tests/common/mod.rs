//! Helpers shared by the integration tests that drive a region with iceberg-rust 0.10 (a
//! REST catalog client, the region's object store, real Parquet commits, scans) and by the
//! replication suites (a secondary's status, change log and pointers over HTTP, fresh
//! PostgreSQL databases).
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
use pangolin::config::RegionPeer;
use pangolin::replication::ReplicationStatus;
use pangolin::storage::{ObjectStore, S3Settings};
use pangolin::store::ChangeRecord;
use pangolin::testing::TestRegion;
use reqwest::StatusCode;
use serde_json::Value;

/// How long a secondary may take to catch up with its primary.
pub const CATCH_UP: Duration = Duration::from_secs(60);

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

/// Short random names, so object keys stay short.
pub fn short(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
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
    let metadata = table.metadata();
    let location_generator = DefaultLocationGenerator::new(metadata).expect("location generator");
    let file_name_generator = DefaultFileNameGenerator::new(
        "d".to_string(),
        Some(uuid::Uuid::new_v4().simple().to_string()[..8].to_string()),
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
    writer
        .write(batch_for(table, ids))
        .await
        .expect("write record batch to S3");
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

// ---- a region over HTTP ----------------------------------------------------------------------

/// GETs `url`: the status and the JSON body (Null when there is none).
pub async fn get_json(http: &reqwest::Client, url: &str) -> (StatusCode, Value) {
    let resp = http.get(url).send().await.expect("request");
    let status = resp.status();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Polls `check` every 50 ms until it holds; panics after `timeout`, naming `what` it waited
/// for.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates namespace `name` through the region's REST API (not through iceberg-rust, so the
/// caller sees the answer's status and headers as they are).
pub async fn post_namespace(
    http: &reqwest::Client,
    region: &TestRegion,
    name: &str,
) -> reqwest::Response {
    http.post(format!("{}/namespaces", region.prefix_url()))
        .json(&serde_json::json!({ "namespace": [name] }))
        .send()
        .await
        .expect("the region answers")
}

/// The region's `/api/v1/replication/status`.
pub async fn status(http: &reqwest::Client, region: &TestRegion) -> ReplicationStatus {
    let url = format!("{}/api/v1/replication/status", region.catalog_url);
    let resp = http.get(&url).send().await.expect("status request");
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.expect("status body")
}

/// Waits until the secondary applied everything the primary has; panics (with the status)
/// when the stream halts or after [`CATCH_UP`].
pub async fn wait_caught_up(
    http: &reqwest::Client,
    primary: &TestRegion,
    secondary: &TestRegion,
) -> ReplicationStatus {
    let started = Instant::now();
    loop {
        let head = status(http, primary).await.watermark;
        let s = status(http, secondary).await;
        if s.watermark >= head && s.lag_records == Some(0) {
            return s;
        }
        assert!(!s.halted, "replication halted: {s:#?}");
        assert!(
            started.elapsed() < CATCH_UP,
            "secondary did not catch up with head {head} in {CATCH_UP:?}: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `POST /api/v1/replication/{action}` (pause, resume): the region's status after it.
pub async fn replication_action(
    http: &reqwest::Client,
    region: &TestRegion,
    action: &str,
) -> ReplicationStatus {
    let url = format!("{}/api/v1/replication/{action}", region.catalog_url);
    let resp = http.post(&url).send().await.expect("request");
    assert_eq!(resp.status(), reqwest::StatusCode::OK, "{action}");
    resp.json().await.expect("status body")
}

/// Polls the region's status every 20 ms until `reached` holds; panics (naming `what`, with
/// the status) after [`CATCH_UP`].
pub async fn wait_status(
    http: &reqwest::Client,
    region: &TestRegion,
    what: &str,
    reached: impl Fn(&ReplicationStatus) -> bool,
) -> ReplicationStatus {
    let started = Instant::now();
    loop {
        let s = status(http, region).await;
        if reached(&s) {
            return s;
        }
        assert!(started.elapsed() < CATCH_UP, "{what}: {s:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The region's whole change log.
pub async fn change_log(http: &reqwest::Client, region: &TestRegion) -> Vec<ChangeRecord> {
    let url = format!(
        "{}/api/v1/replication/changes?after=0&limit=10000",
        region.catalog_url
    );
    let (s, body) = get_json(http, &url).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    serde_json::from_value(body["records"].clone()).expect("change records")
}

/// The REST URL of namespace `ns` (its parts joined by the unit separator).
pub fn ns_url(region: &TestRegion, ns: &[&str]) -> String {
    format!("{}/namespaces/{}", region.prefix_url(), ns.join("%1F"))
}

/// `metadata-location` of a table as loadTable answers it (None: 404).
pub async fn pointer(
    http: &reqwest::Client,
    region: &TestRegion,
    ns: &[&str],
    table: &str,
) -> Option<String> {
    let url = format!("{}/tables/{table}", ns_url(region, ns));
    let (s, body) = get_json(http, &url).await;
    match s {
        StatusCode::OK => Some(body["metadata-location"].as_str().unwrap().to_string()),
        StatusCode::NOT_FOUND => None,
        other => panic!("loadTable {url}: {other} {body}"),
    }
}

/// How other regions reach `region` (catalog and S3).
pub fn peer_of(region: &TestRegion) -> RegionPeer {
    RegionPeer {
        name: region.config.region.name.clone(),
        catalog_url: region.catalog_url.clone(),
        s3_endpoint: Some(region.s3_endpoint.clone()),
        s3_region: region.s3_region.clone(),
        access_key_id: Some(region.access_key.clone()),
        secret_access_key: Some(region.secret_key.clone()),
        path_style: true,
    }
}

// ---- PostgreSQL -------------------------------------------------------------------------------

/// A fresh database on the server `PANGOLIN_TEST_PG_URL` names; fails loudly without it.
pub struct PgDatabase {
    /// The new database's URL (the server URL's query string kept).
    pub url: String,
    pub admin: sqlx::PgPool,
    pub name: String,
    /// The server URL it was created on.
    server: String,
}

impl PgDatabase {
    pub async fn create() -> PgDatabase {
        let server = std::env::var("PANGOLIN_TEST_PG_URL").expect(
            "PANGOLIN_TEST_PG_URL must name a PostgreSQL server for the _postgres tests \
             (e.g. postgres://postgres@127.0.0.1:5432/postgres; tests/run sets it)",
        );
        let name = format!("pangolin_test_{}", uuid::Uuid::new_v4().simple());
        let admin = sqlx::PgPool::connect(&server)
            .await
            .expect("PostgreSQL reachable");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("create database");
        PgDatabase {
            url: database_url(&server, &name),
            admin,
            name,
            server,
        }
    }

    /// Drops the database now (best effort: its name is random). Dropping the value does
    /// the same, also when a test panics.
    pub async fn drop(self) {
        let _ = sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&self.admin)
        .await;
    }
}

impl Drop for PgDatabase {
    /// A task spawned here would die with the test's runtime, so the database is dropped
    /// from a thread of its own, waited for.
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(admin) = sqlx::PgPool::connect(&server).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&admin)
                        .await;
                    admin.close().await;
                }
            });
        })
        .join();
    }
}

/// `server` with its database path replaced by `name`; a query string is kept.
fn database_url(server: &str, name: &str) -> String {
    let (base, query) = server
        .split_once('?')
        .map_or((server, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let root = match base.rfind('/') {
        Some(i) if i >= authority_start => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}
