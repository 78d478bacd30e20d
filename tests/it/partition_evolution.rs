//! Partition specs and column defaults as the reference implementation (Java) takes them over
//! REST, against an in-process region: what PyIceberg's own integration tests send
//! (`test_partition_evolution.py`, `test_rest_schema.py::test_initial_default_all_columns`),
//! and specs that stay invalid.

use pangolin::testing::TestRegion;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::send;

/// PyIceberg's `_table()`: id, event_ts, str.
fn event_schema() -> Value {
    json!({"type": "struct", "schema-id": 0, "fields": [
        {"id": 1, "name": "id", "required": false, "type": "long"},
        {"id": 2, "name": "event_ts", "required": false, "type": "timestamp"},
        {"id": 3, "name": "str", "required": false, "type": "string"}
    ]})
}

struct Fixture {
    region: TestRegion,
    http: reqwest::Client,
}

impl Fixture {
    async fn new() -> Fixture {
        let f = Fixture {
            region: TestRegion::start().await.expect("region starts"),
            http: reqwest::Client::new(),
        };
        let (s, b) = send(
            f.http
                .post(f.url("/namespaces"))
                .json(&json!({"namespace": ["default"]})),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        f
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.region.prefix_url(), path)
    }

    fn table_url(name: &str) -> String {
        format!("/namespaces/default/tables/{name}")
    }

    async fn create(&self, name: &str, schema: Value, format_version: &str) -> Value {
        let (s, b) = send(
            self.http
                .post(self.url("/namespaces/default/tables"))
                .json(&json!({
                    "name": name,
                    "schema": schema,
                    "properties": {"format-version": format_version}
                })),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b
    }

    async fn load(&self, name: &str) -> Value {
        let (s, b) = send(self.http.get(self.url(&Self::table_url(name)))).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b
    }

    async fn commit(&self, name: &str, updates: Value) -> (StatusCode, Value) {
        send(
            self.http
                .post(self.url(&Self::table_url(name)))
                .json(&json!({"requirements": [], "updates": updates})),
        )
        .await
    }

    /// Commits `add-spec` + `set-default-spec -1`, as PyIceberg's `update_spec()` does.
    async fn evolve(&self, name: &str, spec_id: i64, fields: Value) -> (StatusCode, Value) {
        self.commit(
            name,
            json!([
                {"action": "add-spec", "spec": {"spec-id": spec_id, "fields": fields}},
                {"action": "set-default-spec", "spec-id": -1}
            ]),
        )
        .await
    }

    async fn evolve_ok(&self, name: &str, spec_id: i64, fields: Value) -> Value {
        let (s, b) = self.evolve(name, spec_id, fields).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b
    }
}

fn spec_by_id(metadata: &Value, id: i64) -> Value {
    metadata["partition-specs"]
        .as_array()
        .expect("partition-specs")
        .iter()
        .find(|s| s["spec-id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no spec {id} in {metadata}"))
}

fn default_spec(metadata: &Value) -> Value {
    let id = metadata["default-spec-id"]
        .as_i64()
        .expect("default-spec-id");
    spec_by_id(metadata, id)
}

fn field(source: i64, id: i64, transform: &str, name: &str) -> Value {
    json!({"source-id": source, "field-id": id, "transform": transform, "name": name})
}

#[tokio::test]
async fn v1_day_and_hour_on_one_column_are_kept_as_sent() {
    let f = Fixture::new().await;
    f.create("hour_to_day", event_schema(), "1").await;
    let daily = field(2, 1000, "day", "daily_partitioned");
    let hourly = field(2, 1001, "hour", "hourly_partitioned");
    f.evolve_ok("hour_to_day", 1, json!([daily])).await;
    let b = f.evolve_ok("hour_to_day", 2, json!([daily, hourly])).await;

    let m = &b["metadata"];
    assert_eq!(m["default-spec-id"], 2, "{m}");
    assert_eq!(default_spec(m)["fields"], json!([daily, hourly]));
    assert_eq!(m["last-partition-id"], 1001);
    assert_eq!(
        m["partition-spec"],
        json!([daily, hourly]),
        "v1 default spec"
    );

    // Later commits re-bind the default spec: they must still go through.
    let (s, b) = f
        .commit(
            "hour_to_day",
            json!([{"action": "set-properties", "updates": {"owner": "me"}}]),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        default_spec(&b["metadata"])["fields"],
        json!([daily, hourly])
    );

    // The metadata file reads back after a restart (not from the cache).
    let f = Fixture {
        region: f.region.restart().await.expect("restart"),
        http: f.http,
    };
    let m = f.load("hour_to_day").await["metadata"].clone();
    assert_eq!(default_spec(&m)["fields"], json!([daily, hourly]));
    assert_eq!(m["properties"]["owner"], "me");
}

#[tokio::test]
async fn v1_removed_identity_field_stays_as_void_under_its_column_name() {
    let f = Fixture::new().await;
    f.create("remove_identity", event_schema(), "1").await;
    f.evolve_ok(
        "remove_identity",
        1,
        json!([field(1, 1000, "identity", "id")]),
    )
    .await;
    // PyIceberg's remove_field("id") on a v1 table.
    let b = f
        .evolve_ok("remove_identity", 2, json!([field(1, 1000, "void", "id")]))
        .await;
    let m = &b["metadata"];
    assert_eq!(m["partition-specs"].as_array().map(Vec::len), Some(3));
    assert_eq!(m["default-spec-id"], 2);
    assert_eq!(
        default_spec(m)["fields"],
        json!([field(1, 1000, "void", "id")])
    );

    // add_identity("id") again: the void field is renamed, the identity comes back.
    let fields = json!([
        field(1, 1000, "void", "id_1000"),
        field(1, 1001, "identity", "id")
    ]);
    let b = f.evolve_ok("remove_identity", 3, fields.clone()).await;
    let m = &b["metadata"];
    assert_eq!(m["partition-specs"].as_array().map(Vec::len), Some(4));
    assert_eq!(m["default-spec-id"], 3);
    assert_eq!(default_spec(m)["fields"], fields);
    assert_eq!(
        spec_by_id(m, 2)["fields"],
        json!([field(1, 1000, "void", "id")]),
        "older specs are kept as they were"
    );

    // Going back to an existing spec reuses its id.
    let b = f
        .evolve_ok("remove_identity", 4, json!([field(1, 1000, "void", "id")]))
        .await;
    assert_eq!(b["metadata"]["default-spec-id"], 2);
    assert_eq!(
        b["metadata"]["partition-specs"].as_array().map(Vec::len),
        Some(4)
    );
}

#[tokio::test]
async fn v1_two_removed_buckets_on_one_column_become_two_voids() {
    let f = Fixture::new().await;
    f.create("remove_buckets", event_schema(), "1").await;
    f.evolve_ok(
        "remove_buckets",
        1,
        json!([
            field(1, 1000, "bucket[16]", "id_bucket_16"),
            field(1, 1001, "bucket[4]", "id_bucket_4")
        ]),
    )
    .await;
    let voids = json!([
        field(1, 1000, "void", "id_bucket_16"),
        field(1, 1001, "void", "id_bucket_4")
    ]);
    let b = f.evolve_ok("remove_buckets", 2, voids.clone()).await;
    assert_eq!(default_spec(&b["metadata"])["fields"], voids);
}

#[tokio::test]
async fn a_new_table_may_be_partitioned_by_day_and_hour_of_one_column() {
    let f = Fixture::new().await;
    let (s, b) = send(
        f.http
            .post(f.url("/namespaces/default/tables"))
            .json(&json!({
                "name": "created_partitioned",
                "schema": event_schema(),
                "partition-spec": {"spec-id": 0, "fields": [
                    {"source-id": 2, "field-id": 1000, "transform": "day", "name": "ts_day"},
                    {"source-id": 2, "field-id": 1001, "transform": "hour", "name": "ts_hour"}
                ]}
            })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        default_spec(&b["metadata"])["fields"],
        json!([
            field(2, 1000, "day", "ts_day"),
            field(2, 1001, "hour", "ts_hour")
        ])
    );
}

#[tokio::test]
async fn a_create_transaction_may_partition_by_day_and_hour_of_one_column() {
    let f = Fixture::new().await;
    let fields = json!([
        field(2, 1000, "day", "ts_day"),
        field(2, 1001, "hour", "ts_hour")
    ]);
    let (s, b) = f
        .commit(
            "created_in_transaction",
            json!([
                {"action": "upgrade-format-version", "format-version": 2},
                {"action": "add-schema", "schema": event_schema(), "last-column-id": 3},
                {"action": "set-current-schema", "schema-id": -1},
                {"action": "add-spec", "spec": {"spec-id": 0, "fields": fields}},
                {"action": "set-default-spec", "spec-id": -1},
                {"action": "add-sort-order", "sort-order": {"order-id": 0, "fields": []}},
                {"action": "set-default-sort-order", "sort-order-id": -1},
                {"action": "set-properties", "updates": {"owner": "me"}}
            ]),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "no assert-create, no table: {b}");
    let (s, b) = send(
        f.http
            .post(f.url(&Fixture::table_url("created_in_transaction")))
            .json(&json!({
                "requirements": [{"type": "assert-create"}],
                "updates": [
                    {"action": "upgrade-format-version", "format-version": 2},
                    {"action": "add-schema", "schema": event_schema(), "last-column-id": 3},
                    {"action": "set-current-schema", "schema-id": -1},
                    {"action": "add-spec", "spec": {"spec-id": 0, "fields": fields}},
                    {"action": "set-default-spec", "spec-id": -1},
                    {"action": "set-properties", "updates": {"owner": "me"}}
                ]
            })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let m = f.load("created_in_transaction").await["metadata"].clone();
    assert_eq!(default_spec(&m)["fields"], fields);
}

#[tokio::test]
async fn invalid_specs_are_refused_and_change_nothing() {
    let f = Fixture::new().await;
    f.create("invalid_specs", event_schema(), "1").await;
    let before = f.load("invalid_specs").await["metadata-location"].clone();
    let cases = [
        (
            json!([field(3, 1000, "hour", "str_hour")]),
            "Invalid source type",
        ),
        (
            json!([field(9, 1000, "day", "nowhere_day")]),
            "Cannot find source column",
        ),
        (
            json!([field(2, 1000, "day", "p"), field(2, 1001, "hour", "p")]),
            "more than once",
        ),
        (
            json!([field(2, 1000, "day", "id")]),
            "sourced from different field",
        ),
        (
            json!([field(9, 1000, "void", "gone")]),
            "Cannot find partition source field",
        ),
        (json!([field(2, 1000, "day", "")]), "empty partition name"),
        (
            json!([field(2, 1000, "day", "\u{1}day\u{1}x")]),
            "control characters",
        ),
        (
            json!([field(2, 1000, "day", "d"), field(2, 1002, "hour", "h")]),
            "sequential",
        ),
    ];
    for (fields, message) in cases {
        let (s, b) = f.evolve("invalid_specs", 1, fields.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{fields}: {b}");
        assert_eq!(b["error"]["type"], "BadRequestException", "{b}");
        assert_eq!(b["error"]["code"], 400, "{b}");
        let got = b["error"]["message"].as_str().unwrap_or_default();
        assert!(
            got.contains(message),
            "{fields}: expected {message:?} in {got:?}"
        );
    }
    let after = f.load("invalid_specs").await;
    assert_eq!(after["metadata-location"], before);
    assert_eq!(
        after["metadata"]["partition-specs"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

/// The v3 schema PyIceberg's `test_initial_default_all_columns[float]` ends with.
fn float_default_schema(schema_id: i64, write_default: f64) -> Value {
    json!({"type": "struct", "schema-id": schema_id, "fields": [
        {"id": 1, "name": "data", "required": true, "type": "float",
         "initial-default": 19.25, "write-default": write_default},
        {"id": 2, "name": "nested", "required": false, "type": {"type": "struct", "fields": [
            {"id": 3, "name": "data", "required": true, "type": "float",
             "initial-default": 19.25, "write-default": write_default}
        ]}}
    ]})
}

fn float_defaults(metadata: &Value) -> Vec<(f64, f64)> {
    let schema = metadata["schemas"]
        .as_array()
        .and_then(|s| {
            s.iter()
                .find(|s| s["schema-id"] == metadata["current-schema-id"])
        })
        .expect("current schema");
    let top = &schema["fields"][0];
    let nested = &schema["fields"][1]["type"]["fields"][0];
    [top, nested]
        .iter()
        .map(|f| {
            (
                f["initial-default"].as_f64().expect("initial-default"),
                f["write-default"].as_f64().expect("write-default"),
            )
        })
        .collect()
}

#[tokio::test]
async fn float_defaults_are_served_as_the_client_sent_them() {
    let f = Fixture::new().await;
    f.create(
        "float_defaults",
        json!({"type": "struct", "schema-id": 0, "fields": []}),
        "3",
    )
    .await;
    let (s, b) = f
        .commit(
            "float_defaults",
            json!([
                {"action": "add-schema", "schema": float_default_schema(1, 22.27)},
                {"action": "set-current-schema", "schema-id": -1}
            ]),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let expected = vec![(19.25, 22.27), (19.25, 22.27)];
    assert_eq!(float_defaults(&b["metadata"]), expected, "commit response");
    assert_eq!(
        float_defaults(&f.load("float_defaults").await["metadata"]),
        expected
    );

    // Also when read back from the metadata file.
    let f = Fixture {
        region: f.region.restart().await.expect("restart"),
        http: f.http,
    };
    assert_eq!(
        float_defaults(&f.load("float_defaults").await["metadata"]),
        expected
    );
}
