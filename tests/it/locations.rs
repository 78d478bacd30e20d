//! Location ownership against an in-process region: a table's location lies inside its
//! warehouse and is its own (no other live table or view equals, contains or lies inside
//! it), so a purge never deletes another table's files; bad locations and names are 400s
//! that change nothing; size limits answer 413.

use pangolin::testing::TestRegion;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{id_schema, send, store_of};

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
                .json(&json!({"namespace": ["db"]})),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        f
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.region.prefix_url(), path)
    }

    async fn create(&self, name: &str, location: Option<&str>) -> (StatusCode, Value) {
        let mut body = json!({"name": name, "schema": id_schema()});
        if let Some(l) = location {
            body["location"] = json!(l);
        }
        send(
            self.http
                .post(self.url("/namespaces/db/tables"))
                .json(&body),
        )
        .await
    }

    async fn load(&self, name: &str) -> (StatusCode, Value) {
        send(
            self.http
                .get(self.url(&format!("/namespaces/db/tables/{name}"))),
        )
        .await
    }

    async fn table_names(&self) -> Vec<String> {
        let (s, b) = send(self.http.get(self.url("/namespaces/db/tables"))).await;
        assert_eq!(s, StatusCode::OK);
        let mut names: Vec<String> = b["identifiers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    }

    /// Puts an object the way a client writes a data file.
    async fn put(&self, location: &str) {
        store_of(&self.region)
            .await
            .put(location, bytes::Bytes::from_static(b"parquet bytes"))
            .await
            .expect("object written");
    }

    async fn exists(&self, location: &str) -> bool {
        store_of(&self.region).await.exists(location).await.unwrap()
    }
}

fn assert_bad_request(s: StatusCode, b: &Value) {
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["error"]["type"], "BadRequestException", "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_table_cannot_be_created_at_inside_or_around_another_tables_location() {
    let f = Fixture::new().await;
    let (s, victim) = f.create("victim", None).await;
    assert_eq!(s, StatusCode::OK, "{victim}");
    let location = victim["metadata"]["location"].as_str().unwrap().to_string();
    let parent = location.rsplit_once('/').unwrap().0.to_string();
    for bad in [
        location.clone(),
        format!("{location}/"),
        format!("{location}/data"),
        parent.clone(),
    ] {
        let (s, b) = f.create("attacker", Some(&bad)).await;
        assert_bad_request(s, &b);
        assert!(
            b["error"]["message"].as_str().unwrap().contains("overlaps"),
            "{bad}: {b}"
        );
    }
    // A sibling whose name merely starts like the victim's location is fine.
    let (s, b) = f.create("sibling", Some(&format!("{location}-2"))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(f.table_names().await, vec!["sibling", "victim"]);
    f.region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn impossible_locations_and_reserved_names_are_client_errors() {
    let f = Fixture::new().await;
    for bad in [
        "s3://other-bucket/x",
        "s3://demo",
        "s3://demo/",
        "s3://demo/a/../b",
        "s3://demo/a/./b",
        "s3://demo//a",
        "file:///etc",
        "/tmp/t",
    ] {
        let (s, b) = f.create("t", Some(bad)).await;
        assert_bad_request(s, &b);
    }
    for bad in ["s3://nob/x.json", "s3://demo/a/../x.metadata.json"] {
        let (s, b) = send(
            f.http
                .post(f.url("/namespaces/db/register"))
                .json(&json!({"name": "r", "metadata-location": bad})),
        )
        .await;
        assert_bad_request(s, &b);
    }
    for ns in [".", ".."] {
        let (s, b) = send(
            f.http
                .post(f.url("/namespaces"))
                .json(&json!({"namespace": [ns]})),
        )
        .await;
        assert_bad_request(s, &b);
        let (s, b) = send(
            f.http
                .post(f.url("/namespaces"))
                .json(&json!({"namespace": ["db", ns]})),
        )
        .await;
        assert_bad_request(s, &b);
    }
    for name in [".", ".."] {
        let (s, b) = f.create(name, None).await;
        assert_bad_request(s, &b);
    }
    assert!(f.table_names().await.is_empty());
    f.region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registering_another_tables_metadata_file_is_refused() {
    let f = Fixture::new().await;
    let (_, victim) = f.create("victim", None).await;
    let file = victim["metadata-location"].as_str().unwrap();
    let (s, b) = send(
        f.http
            .post(f.url("/namespaces/db/register"))
            .json(&json!({"name": "copy", "metadata-location": file})),
    )
    .await;
    assert_bad_request(s, &b);
    assert_eq!(f.table_names().await, vec!["victim"]);
    f.region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn set_location_over_another_table_is_refused_and_changes_nothing() {
    let f = Fixture::new().await;
    let (_, victim) = f.create("victim", None).await;
    let (_, mover) = f.create("mover", None).await;
    let victim_location = victim["metadata"]["location"].as_str().unwrap().to_string();
    let mover_file = mover["metadata-location"].as_str().unwrap().to_string();
    for target in [
        victim_location.clone(),
        format!("{victim_location}/sub"),
        "s3://other-bucket/t".to_string(),
    ] {
        let (s, b) = send(f.http.post(f.url("/namespaces/db/tables/mover")).json(
            &json!({"requirements": [], "updates": [
                {"action": "set-location", "location": target}
            ]}),
        ))
        .await;
        assert_bad_request(s, &b);
        assert_eq!(f.load("mover").await.1["metadata-location"], mover_file);
    }
    // The same refusal inside a multi-table transaction: nothing moves.
    let (s, b) = send(
        f.http
            .post(format!("{}/transactions/commit", f.region.prefix_url()))
            .json(&json!({"table-changes": [{
                "identifier": {"namespace": ["db"], "name": "mover"},
                "requirements": [],
                "updates": [{"action": "set-location", "location": victim_location}]
            }]})),
    )
    .await;
    assert_bad_request(s, &b);
    assert_eq!(f.load("mover").await.1["metadata-location"], mover_file);
    f.region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_moved_tables_old_location_stays_its_own_until_it_is_dropped() {
    let f = Fixture::new().await;
    let (_, mover) = f.create("mover", None).await;
    let old = mover["metadata"]["location"].as_str().unwrap().to_string();
    let new = format!("{old}-moved");
    let (s, b) = send(f.http.post(f.url("/namespaces/db/tables/mover")).json(
        &json!({"requirements": [], "updates": [
            {"action": "set-location", "location": new}
        ]}),
    ))
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // Older snapshots' files are still under the old location.
    let (s, b) = f.create("squatter", Some(&old)).await;
    assert_bad_request(s, &b);
    let (s, _) = send(f.http.delete(f.url("/namespaces/db/tables/mover"))).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = f.create("squatter", Some(&old)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    f.region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_at_one_location_have_one_winner() {
    let f = Fixture::new().await;
    let location = "s3://demo/contested/t";
    let creates = (0..8).map(|i| {
        let http = f.http.clone();
        let url = f.url("/namespaces/db/tables");
        async move {
            send(http.post(url).json(
                &json!({"name": format!("t{i}"), "schema": id_schema(), "location": location}),
            ))
            .await
        }
    });
    let results = futures::future::join_all(creates).await;
    let ok = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!(ok, 1, "{results:?}");
    for (s, b) in results.iter().filter(|(s, _)| *s != StatusCode::OK) {
        assert_bad_request(*s, b);
    }
    assert_eq!(f.table_names().await.len(), 1);
    f.region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_purge_deletes_its_own_files_and_never_another_tables() {
    let f = Fixture::new().await;
    let (_, victim) = f.create("victim", None).await;
    let victim_location = victim["metadata"]["location"].as_str().unwrap().to_string();
    let victim_file = victim["metadata-location"].as_str().unwrap().to_string();
    let victim_data = format!("{victim_location}/data/00000-victim.parquet");
    f.put(&victim_data).await;
    // A table next to the victim's, sharing its name as a prefix.
    let (s, doomed) = f
        .create("doomed", Some(&format!("{victim_location}-doomed")))
        .await;
    assert_eq!(s, StatusCode::OK, "{doomed}");
    let doomed_location = doomed["metadata"]["location"].as_str().unwrap().to_string();
    let doomed_data = format!("{doomed_location}/data/00000-doomed.parquet");
    f.put(&doomed_data).await;
    let (s, b) = send(
        f.http
            .delete(f.url("/namespaces/db/tables/doomed?purgeRequested=true")),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    assert!(
        !f.exists(&doomed_data).await,
        "the purged table's files are gone"
    );
    assert!(
        f.exists(&victim_data).await,
        "the other table's data file stays"
    );
    assert!(
        f.exists(&victim_file).await,
        "the other table's metadata stays"
    );
    let (s, b) = f.load("victim").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    f.region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_properties_and_metadata_are_refused_with_413() {
    let f = Fixture::new().await;
    let (_, t) = f.create("t", None).await;
    let file = t["metadata-location"].as_str().unwrap().to_string();
    let big = "x".repeat(300 * 1024);
    let (s, b) = send(f.http.post(f.url("/namespaces/db/tables/t")).json(
        &json!({"requirements": [], "updates": [
            {"action": "set-properties", "updates": {"k": big}}
        ]}),
    ))
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    assert_eq!(f.load("t").await.1["metadata-location"], file);
    // Many properties, each under the per-property bound, over the total.
    let many: serde_json::Map<String, Value> = (0..8)
        .map(|i| (format!("k{i}"), json!("y".repeat(200 * 1024))))
        .collect();
    let (s, b) = send(f.http.post(f.url("/namespaces/db/tables/t")).json(
        &json!({"requirements": [], "updates": [
            {"action": "set-properties", "updates": many}
        ]}),
    ))
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    assert_eq!(f.load("t").await.1["metadata-location"], file);
    let (s, b) = send(
        f.http
            .post(f.url("/namespaces"))
            .json(&json!({"namespace": ["big"], "properties": {"k": big}})),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    let (s, b) = f.create("big", None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    f.region.shutdown().await;
}
