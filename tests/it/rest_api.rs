//! The Iceberg REST API against an in-process region: error model, bad input that changes
//! nothing, commit semantics, concurrency, ETags, paging, purge.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use pangolin::testing::TestRegion;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{assert_error, now_ms, schema, send, store_of, PgDatabase};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

struct Fixture {
    region: TestRegion,
    http: reqwest::Client,
}

impl Fixture {
    async fn new() -> Fixture {
        Fixture {
            region: TestRegion::start().await.expect("region starts"),
            http: client(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.region.prefix_url(), path)
    }

    async fn create_namespace(&self, ns: &[&str]) {
        let (s, b) = send(
            self.http
                .post(self.url("/namespaces"))
                .json(&json!({"namespace": ns})),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }

    async fn create_table(&self, ns: &str, name: &str) -> Value {
        let (s, b) = send(
            self.http
                .post(self.url(&format!("/namespaces/{ns}/tables")))
                .json(&json!({"name": name, "schema": schema()})),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b
    }

    async fn load(&self, ns: &str, name: &str) -> (StatusCode, Value) {
        send(
            self.http
                .get(self.url(&format!("/namespaces/{ns}/tables/{name}"))),
        )
        .await
    }

    async fn commit(&self, ns: &str, name: &str, body: Value) -> (StatusCode, Value) {
        send(
            self.http
                .post(self.url(&format!("/namespaces/{ns}/tables/{name}")))
                .json(&body),
        )
        .await
    }
}

/// An append as PyIceberg sends it: add-snapshot + set-snapshot-ref, guarded by the ref.
fn append_commit(metadata: &Value, snapshot_id: i64) -> Value {
    let parent = metadata["current-snapshot-id"]
        .as_i64()
        .filter(|id| *id >= 0);
    let seq = metadata["last-sequence-number"].as_i64().unwrap_or(0) + 1;
    let location = metadata["location"].as_str().unwrap_or_default();
    let mut snapshot = json!({
        "snapshot-id": snapshot_id,
        "sequence-number": seq,
        "timestamp-ms": now_ms(),
        "manifest-list": format!("{location}/metadata/snap-{snapshot_id}.avro"),
        "summary": {"operation": "append"},
        "schema-id": 0
    });
    if let Some(p) = parent {
        snapshot["parent-snapshot-id"] = json!(p);
    }
    json!({
        "requirements": [{"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": parent}],
        "updates": [
            {"action": "add-snapshot", "snapshot": snapshot},
            {"action": "set-snapshot-ref", "ref-name": "main", "type": "branch", "snapshot-id": snapshot_id}
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn config_answers_prefix_and_region_storage_without_warehouse() {
    let f = Fixture::new().await;
    let (s, b) = send(f.http.get(format!("{}/v1/config", f.region.catalog_url))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["overrides"]["prefix"], "demo");
    assert_eq!(b["overrides"]["s3.endpoint"], f.region.s3_endpoint.as_str());
    assert_eq!(b["overrides"]["s3.region"], "us-east-1");
    assert!(b["defaults"].is_object());
    let (s, b) = send(
        f.http
            .get(format!("{}/v1/config?warehouse=nope", f.region.catalog_url)),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&b, s, "NoSuchWarehouseException");
    f.region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_commit_and_load_write_versioned_metadata_files() {
    let f = Fixture::new().await;
    f.create_namespace(&["ns"]).await;
    let created = f.create_table("ns", "t").await;
    let loc0 = created["metadata-location"].as_str().unwrap().to_string();
    assert!(loc0.contains("/metadata/00000-"), "{loc0}");
    assert!(loc0.starts_with("s3://demo/"), "{loc0}");
    assert_eq!(
        created["config"]["s3.endpoint"],
        f.region.s3_endpoint.as_str()
    );

    let (s, b) = f
        .commit("ns", "t", append_commit(&created["metadata"], 11))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let loc1 = b["metadata-location"].as_str().unwrap();
    assert!(loc1.contains("/metadata/00001-"), "{loc1}");
    assert_eq!(b["metadata"]["current-snapshot-id"], 11);

    let (s, loaded) = f.load("ns", "t").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(loaded["metadata-location"], loc1);
    assert_eq!(loaded["metadata"]["metadata-log"][0]["metadata-file"], loc0);
    f.region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn load_table_answers_304_for_matching_etag() {
    let f = Fixture::new().await;
    f.create_namespace(&["ns"]).await;
    f.create_table("ns", "t").await;
    let resp = f
        .http
        .get(f.url("/namespaces/ns/tables/t"))
        .send()
        .await
        .unwrap();
    let tag = resp.headers()["etag"].to_str().unwrap().to_string();
    let resp = f
        .http
        .get(f.url("/namespaces/ns/tables/t"))
        .header("If-None-Match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    let other = f
        .http
        .get(f.url("/namespaces/ns/tables/t"))
        .header("If-None-Match", "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    f.region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_4xx_in_the_error_model_and_changes_nothing() {
    let f = Fixture::new().await;
    f.create_namespace(&["ns"]).await;
    let created = f.create_table("ns", "t").await;
    let before = created["metadata-location"].clone();

    // Malformed JSON.
    let (s, b) = send(
        f.http
            .post(f.url("/namespaces/ns/tables/t"))
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&b, s, "BadRequestException");

    // Unknown update type.
    let (s, b) = f
        .commit(
            "ns",
            "t",
            json!({"requirements": [], "updates": [{"action": "explode"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&b, s, "BadRequestException");

    // Unknown requirement type.
    let (s, b) = f
        .commit(
            "ns",
            "t",
            json!({"requirements": [{"type": "assert-moon-phase"}], "updates": []}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&b, s, "BadRequestException");

    // A valid update that the metadata rules reject (unknown schema id).
    let (s, b) = f
        .commit(
            "ns",
            "t",
            json!({"requirements": [], "updates": [{"action": "set-current-schema", "schema-id": 42}]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_error(&b, s, "BadRequestException");

    // Invalid identifiers.
    let (s, b) = send(
        f.http
            .post(f.url("/namespaces"))
            .json(&json!({"namespace": ["ok", ""]})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&b, s, "BadRequestException");
    let (s, b) = send(
        f.http
            .post(f.url("/namespaces/ns/tables"))
            .json(&json!({"name": "", "schema": schema()})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&b, s, "BadRequestException");
    let (s, b) = send(
        f.http
            .post(f.url("/namespaces"))
            .json(&json!({"namespace": []})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&b, s, "BadRequestException");

    // Oversized body.
    let huge = "x".repeat(f.region.config.catalog.max_body_bytes + 1);
    let (s, b) = send(
        f.http
            .post(f.url("/namespaces"))
            .header("content-type", "application/json")
            .body(format!("{{\"namespace\":[\"{huge}\"]}}")),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&b, s, "BadRequestException");

    // Unknown catalog.
    let (s, b) = send(
        f.http
            .get(format!("{}/v1/nope/namespaces", f.region.catalog_url)),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(b["error"]["code"], 404);

    // Unknown route.
    let (s, b) = send(
        f.http
            .get(format!("{}/v1/demo/whatever", f.region.catalog_url)),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&b, s, "BadRequestException");

    // Nothing changed.
    let (_, loaded) = f.load("ns", "t").await;
    assert_eq!(loaded["metadata-location"], before);
    let (_, list) = send(f.http.get(f.url("/namespaces"))).await;
    assert_eq!(list["namespaces"], json!([["ns"]]));
    let (_, tables) = send(f.http.get(f.url("/namespaces/ns/tables"))).await;
    assert_eq!(
        tables["identifiers"],
        json!([{"namespace": ["ns"], "name": "t"}])
    );
    f.region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_requirement_is_409_and_keeps_the_pointer() {
    let f = Fixture::new().await;
    f.create_namespace(&["ns"]).await;
    let created = f.create_table("ns", "t").await;
    let (s, b) = f
        .commit(
            "ns",
            "t",
            json!({"requirements": [{"type": "assert-table-uuid", "uuid": "00000000-0000-0000-0000-000000000000"}],
                   "updates": [{"action": "set-properties", "updates": {"a": "b"}}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_error(&b, s, "CommitFailedException");
    let (_, loaded) = f.load("ns", "t").await;
    assert_eq!(loaded["metadata-location"], created["metadata-location"]);
    assert!(loaded["metadata"]["properties"].get("a").is_none());
    f.region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_objects_answer_the_reference_exceptions() {
    let f = Fixture::new().await;
    let (s, b) = f.load("nope", "t").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&b, s, "NoSuchTableException");
    f.create_namespace(&["ns"]).await;
    let (s, b) = f.load("ns", "t").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&b, s, "NoSuchTableException");
    assert_eq!(b["error"]["message"], "Table does not exist: ns.t");
    let (s, b) = send(f.http.get(f.url("/namespaces/zzz"))).await;
    assert_error(&b, s, "NoSuchNamespaceException");
    assert_eq!(b["error"]["message"], "Namespace does not exist: zzz");
    f.create_table("ns", "t").await;
    let (s, b) = send(
        f.http
            .post(f.url("/namespaces/ns/tables"))
            .json(&json!({"name": "t", "schema": schema()})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_error(&b, s, "AlreadyExistsException");
    let (s, b) = send(f.http.delete(f.url("/namespaces/ns"))).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_error(&b, s, "NamespaceNotEmptyException");
    f.region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nested_namespaces_list_by_parent_with_pages() {
    let f = Fixture::new().await;
    f.create_namespace(&["a"]).await;
    for child in ["c1", "c2", "c3"] {
        f.create_namespace(&["a", child]).await;
    }
    let (s, b) = send(f.http.get(f.url("/namespaces?parent=a"))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        b["namespaces"],
        json!([["a", "c1"], ["a", "c2"], ["a", "c3"]])
    );
    assert!(b["next-page-token"].is_null());

    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut url = f.url("/namespaces?parent=a&pageSize=2");
        if let Some(t) = &token {
            url.push_str(&format!("&pageToken={t}"));
        }
        let (_, b) = send(f.http.get(url)).await;
        for ns in b["namespaces"].as_array().unwrap() {
            seen.push(ns.clone());
        }
        match b["next-page-token"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        vec![json!(["a", "c1"]), json!(["a", "c2"]), json!(["a", "c3"])]
    );
    // Namespace URL form: parts joined by %1F.
    let (s, b) = send(f.http.get(f.url("/namespaces/a%1Fc2"))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["namespace"], json!(["a", "c2"]));
    f.region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn staged_create_is_published_by_its_commit() {
    let f = Fixture::new().await;
    f.create_namespace(&["ns"]).await;
    let (s, staged) = send(
        f.http
            .post(f.url("/namespaces/ns/tables"))
            .json(&json!({"name": "st", "schema": schema(), "stage-create": true})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{staged}");
    assert!(staged["metadata-location"].is_null());
    let (s, _) = f.load("ns", "st").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a staged table is not visible");
    let m = &staged["metadata"];
    let commit = json!({
        "requirements": [{"type": "assert-create"}],
        "updates": [
            {"action": "assign-uuid", "uuid": m["table-uuid"]},
            {"action": "upgrade-format-version", "format-version": 2},
            {"action": "add-schema", "schema": schema()},
            {"action": "set-current-schema", "schema-id": -1},
            {"action": "add-spec", "spec": {"fields": []}},
            {"action": "set-default-spec", "spec-id": -1},
            {"action": "add-sort-order", "sort-order": {"order-id": 0, "fields": []}},
            {"action": "set-default-sort-order", "sort-order-id": -1},
            {"action": "set-location", "location": m["location"]},
            {"action": "set-properties", "updates": {"owner": "me"}}
        ]
    });
    let (s, b) = f.commit("ns", "st", commit.clone()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["metadata"]["table-uuid"], m["table-uuid"]);
    assert_eq!(b["metadata"]["properties"]["owner"], "me");
    assert!(b["metadata-location"]
        .as_str()
        .unwrap()
        .contains("/metadata/00000-"));
    let (s, _) = f.load("ns", "st").await;
    assert_eq!(s, StatusCode::OK);
    // The same create again now fails its assert-create.
    let (s, b) = f.commit("ns", "st", commit).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    f.region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drop_with_purge_deletes_files_and_without_keeps_them() {
    let f = Fixture::new().await;
    f.create_namespace(&["ns"]).await;
    let objects = store_of(&f.region).await;
    for (name, purge) in [("kept", false), ("purged", true)] {
        let t = f.create_table("ns", name).await;
        let location = t["metadata"]["location"].as_str().unwrap().to_string();
        let data = format!("{location}/data/file.parquet");
        objects
            .put(&data, bytes::Bytes::from_static(b"PAR1"))
            .await
            .unwrap();
        assert_eq!(
            objects.list(&format!("{location}/")).await.unwrap().len(),
            2
        );
        let (s, _) = send(f.http.delete(f.url(&format!(
            "/namespaces/ns/tables/{name}?purgeRequested={}",
            if purge { "True" } else { "false" }
        ))))
        .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let left = objects.list(&format!("{location}/")).await.unwrap();
        if purge {
            assert!(left.is_empty(), "{left:?}");
        } else {
            assert_eq!(left.len(), 2);
        }
        let (s, _) = f.load("ns", name).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
    f.region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rename_moves_the_table_and_checks_the_destination() {
    let f = Fixture::new().await;
    f.create_namespace(&["a"]).await;
    f.create_namespace(&["b"]).await;
    f.create_table("a", "t").await;
    let rename = |to_ns: &str, to: &str| json!({"source": {"namespace": ["a"], "name": "t"}, "destination": {"namespace": [to_ns], "name": to}});
    let (s, b) = send(
        f.http
            .post(f.url("/tables/rename"))
            .json(&rename("zzz", "t")),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    assert_error(&b, s, "NoSuchNamespaceException");
    let (s, _) = send(
        f.http
            .post(f.url("/tables/rename"))
            .json(&rename("b", "t2")),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(f.load("a", "t").await.0, StatusCode::NOT_FOUND);
    assert_eq!(f.load("b", "t2").await.0, StatusCode::OK);
    f.region.shutdown().await;
}

/// 16 writers append to one table, each retrying on 409 as clients do: every acknowledged
/// snapshot is in the final history exactly once.
async fn concurrent_appends_lose_nothing(region: TestRegion) {
    let f = Arc::new(Fixture {
        region,
        http: client(),
    });
    f.create_namespace(&["ns"]).await;
    f.create_table("ns", "hot").await;
    const WRITERS: i64 = 16;
    const APPENDS: i64 = 4;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..APPENDS {
                let id = 1000 + w * 100 + i;
                loop {
                    let (_, loaded) = f.load("ns", "hot").await;
                    let (s, b) = f
                        .commit("ns", "hot", append_commit(&loaded["metadata"], id))
                        .await;
                    match s {
                        StatusCode::OK => {
                            acked.push(id);
                            break;
                        }
                        StatusCode::CONFLICT => continue,
                        other => panic!("unexpected {other}: {b}"),
                    }
                }
            }
            acked
        }));
    }
    let mut acked = HashSet::new();
    for t in tasks {
        for id in t.await.unwrap() {
            assert!(acked.insert(id), "snapshot {id} acknowledged twice");
        }
    }
    assert_eq!(acked.len() as i64, WRITERS * APPENDS);
    let (_, loaded) = f.load("ns", "hot").await;
    let m = &loaded["metadata"];
    let by_id: HashMap<i64, &Value> = m["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["snapshot-id"].as_i64().unwrap(), s))
        .collect();
    // Walk main's ancestry: it must be exactly the acknowledged snapshots, each once.
    let mut chain = Vec::new();
    let mut cur = m["current-snapshot-id"].as_i64();
    while let Some(id) = cur {
        chain.push(id);
        cur = by_id[&id]["parent-snapshot-id"].as_i64();
    }
    let unique: HashSet<i64> = chain.iter().copied().collect();
    assert_eq!(
        unique.len(),
        chain.len(),
        "a snapshot appears twice in history"
    );
    assert_eq!(unique, acked);
    assert_eq!(m["last-sequence-number"], WRITERS * APPENDS);
    Arc::try_unwrap(f).ok().unwrap().region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_writers_lose_no_update_on_sqlite() {
    concurrent_appends_lose_nothing(TestRegion::start().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_writers_lose_no_update_on_postgres() {
    let db = PgDatabase::create().await;
    let region = TestRegion::start_with_database(&db.url).await.unwrap();
    concurrent_appends_lose_nothing(region).await;
    db.drop().await;
}

fn table_change(ns: &str, name: &str, metadata: &Value, snapshot_id: i64) -> Value {
    let mut c = append_commit(metadata, snapshot_id);
    c["identifier"] = json!({"namespace": [ns], "name": name});
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transaction_with_one_failed_requirement_changes_no_table() {
    let f = Fixture::new().await;
    f.create_namespace(&["ns"]).await;
    let a = f.create_table("ns", "a").await;
    let b = f.create_table("ns", "b").await;
    let mut bad = table_change("ns", "b", &b["metadata"], 22);
    bad["requirements"] =
        json!([{"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": 999}]);
    let body = json!({"table-changes": [table_change("ns", "a", &a["metadata"], 21), bad]});
    let (s, e) = send(f.http.post(f.url("/transactions/commit")).json(&body)).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert_error(&e, s, "CommitFailedException");
    for (name, before) in [("a", &a), ("b", &b)] {
        let (_, now) = f.load("ns", name).await;
        assert_eq!(
            now["metadata-location"], before["metadata-location"],
            "{name} moved"
        );
    }
    let good = json!({"table-changes": [
        table_change("ns", "a", &a["metadata"], 21),
        table_change("ns", "b", &b["metadata"], 22)]});
    let (s, e) = send(f.http.post(f.url("/transactions/commit")).json(&good)).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{e}");
    assert_eq!(
        f.load("ns", "a").await.1["metadata"]["current-snapshot-id"],
        21
    );
    assert_eq!(
        f.load("ns", "b").await.1["metadata"]["current-snapshot-id"],
        22
    );
    f.region.shutdown().await;
}

/// Transactions over overlapping pairs of tables, retried on 409: every acknowledged
/// transaction's snapshots are in both tables' histories, nothing else is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_overlapping_transactions_lose_nothing() {
    let f = Arc::new(Fixture::new().await);
    f.create_namespace(&["ns"]).await;
    let tables = ["a", "b", "c"];
    for t in tables {
        f.create_table("ns", t).await;
    }
    let mut tasks = Vec::new();
    for w in 0..6i64 {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..4i64 {
                let pair = [tables[(w % 3) as usize], tables[((w + 1) % 3) as usize]];
                let ids = [10_000 + w * 100 + i * 2, 10_000 + w * 100 + i * 2 + 1];
                loop {
                    let mut changes = Vec::new();
                    for (t, id) in pair.iter().zip(ids) {
                        let (_, loaded) = f.load("ns", t).await;
                        changes.push(table_change("ns", t, &loaded["metadata"], id));
                    }
                    let (s, b) = send(
                        f.http
                            .post(f.url("/transactions/commit"))
                            .json(&json!({"table-changes": changes})),
                    )
                    .await;
                    match s {
                        StatusCode::NO_CONTENT => {
                            acked.push((pair[0], ids[0]));
                            acked.push((pair[1], ids[1]));
                            break;
                        }
                        StatusCode::CONFLICT => continue,
                        other => panic!("unexpected {other}: {b}"),
                    }
                }
            }
            acked
        }));
    }
    let mut expected: HashMap<&str, HashSet<i64>> = HashMap::new();
    for t in tasks {
        for (table, id) in t.await.unwrap() {
            expected.entry(table).or_default().insert(id);
        }
    }
    for t in tables {
        let (_, loaded) = f.load("ns", t).await;
        let m = &loaded["metadata"];
        let parents: HashMap<i64, Option<i64>> = m["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["snapshot-id"].as_i64().unwrap(),
                    s["parent-snapshot-id"].as_i64(),
                )
            })
            .collect();
        let mut chain = HashSet::new();
        let mut cur = m["current-snapshot-id"].as_i64();
        while let Some(id) = cur {
            assert!(chain.insert(id), "snapshot {id} twice in {t}");
            cur = parents[&id];
        }
        assert_eq!(chain, expected[t], "history of {t}");
    }
    Arc::try_unwrap(f).ok().unwrap().region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn load_credentials_vends_the_region_storage_for_the_table_location() {
    let f = Fixture::new().await;
    f.create_namespace(&["ns"]).await;
    let t = f.create_table("ns", "t").await;
    let (s, b) = send(f.http.get(f.url("/namespaces/ns/tables/t/credentials"))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let cred = &b["storage-credentials"][0];
    assert_eq!(cred["prefix"], t["metadata"]["location"]);
    assert_eq!(cred["config"]["s3.endpoint"], f.region.s3_endpoint.as_str());
    assert_eq!(
        cred["config"]["s3.access-key-id"],
        f.region.access_key.as_str()
    );
    let (s, b) = send(f.http.get(f.url("/namespaces/ns/tables/zz/credentials"))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&b, s, "NoSuchTableException");
    f.region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spec_edge_cases_answer_documented_statuses() {
    let f = Fixture::new().await;
    // The spec's own example: a nested namespace in an empty catalog; ancestors are created.
    let (s, b) = send(
        f.http
            .post(f.url("/namespaces"))
            .json(&json!({"namespace": ["accounting", "tax"], "properties": {"owner": "Hank"}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, top) = send(f.http.get(f.url("/namespaces"))).await;
    assert_eq!(top["namespaces"], json!([["accounting"]]));

    // A key both removed and updated: 422, nothing changed.
    let (s, b) = send(
        f.http
            .post(f.url("/namespaces/accounting%1Ftax/properties"))
            .json(&json!({"removals": ["owner"], "updates": {"owner": "x"}})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    let (_, ns) = send(f.http.get(f.url("/namespaces/accounting%1Ftax"))).await;
    assert_eq!(ns["properties"]["owner"], "Hank");

    // write-order without its read-only order-id.
    let (s, b) = send(
        f.http
            .post(f.url("/namespaces/accounting/tables"))
            .json(&json!({
                "name": "sorted", "schema": schema(),
                "write-order": {"fields": [{"source-id": 1, "transform": "identity",
                                             "direction": "asc", "null-order": "nulls-first"}]}
            })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["metadata"]["default-sort-order-id"], 1);

    // registerTable with overwrite moves an existing table to the registered file.
    let other = f.create_table("accounting", "other").await;
    let file = other["metadata-location"].as_str().unwrap();
    // While `other` is live it owns the file's location: no second table may point there.
    let (s, b) = send(
        f.http
            .post(f.url("/namespaces/accounting/register"))
            .json(&json!({"name": "sorted", "metadata-location": file, "overwrite": true})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, _) = send(f.http.delete(f.url("/namespaces/accounting/tables/other"))).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = send(
        f.http
            .post(f.url("/namespaces/accounting/register"))
            .json(&json!({"name": "sorted", "metadata-location": file, "overwrite": true})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        f.load("accounting", "sorted").await.1["metadata-location"],
        file
    );
    let (s, _) = send(
        f.http
            .post(f.url("/namespaces/accounting/register"))
            .json(&json!({"name": "sorted", "metadata-location": file})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);

    // Server-side scan planning is not offered.
    let (s, b) = send(
        f.http
            .post(f.url("/namespaces/accounting/tables/sorted/plan"))
            .json(&json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_ACCEPTABLE);
    assert_error(&b, s, "UnsupportedOperationException");
    f.region.shutdown().await;
}
