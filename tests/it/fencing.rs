//! Fencing in the store: a commit carrying a stale epoch is refused by the store
//! transaction itself, whatever the node's own lease or epoch view says.

use pangolin::store::{MetadataStore, ReplicationLog, SqlStore};
use pangolin::testing::TestRegion;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::store_of;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commit_with_stale_epoch_is_rejected_by_the_store() {
    let region = TestRegion::start().await.unwrap();
    let http = reqwest::Client::new();
    let prefix = region.prefix_url();
    let schema = json!({"type": "struct", "fields": [
        {"id": 1, "name": "id", "required": true, "type": "long"}]});
    http.post(format!("{prefix}/namespaces"))
        .json(&json!({"namespace": ["ns"]}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let created: Value = http
        .post(format!("{prefix}/namespaces/ns/tables"))
        .json(&json!({"name": "t", "schema": schema}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    // The control plane moved on (epoch 2) behind this node's back: the node still believes
    // epoch 1 and no lease check stops it (a standalone region has none).
    let store = SqlStore::connect(&region.config.database.url)
        .await
        .unwrap();
    store.set_epoch(2).await.unwrap();

    let commit = json!({"requirements": [], "updates": [
        {"action": "set-properties", "updates": {"written": "under-stale-epoch"}}]});
    let resp = http
        .post(format!("{prefix}/namespaces/ns/tables/t"))
        .json(&commit)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "ServiceUnavailableException");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("epoch"),
        "{body}"
    );

    // Nothing was written: same pointer, no property, no change record for the commit.
    let loaded: Value = http
        .get(format!("{prefix}/namespaces/ns/tables/t"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(loaded["metadata-location"], created["metadata-location"]);
    assert!(loaded["metadata"]["properties"].get("written").is_none());
    let changes = store.changes_after(0, 1000).await.unwrap();
    assert!(
        changes.iter().all(|c| c.op != "commit_table"),
        "{changes:?}"
    );
    // The metadata file the refused commit wrote was removed again.
    let objects = store_of(&region).await;
    let location = loaded["metadata"]["location"].as_str().unwrap();
    let files = objects
        .list(&format!("{location}/metadata/"))
        .await
        .unwrap();
    assert_eq!(files.len(), 1, "{files:?}");

    // Having learnt the new epoch, the node commits under it.
    let resp = http
        .post(format!("{prefix}/namespaces/ns/tables/t"))
        .json(&commit)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let changes = store.changes_after(0, 1000).await.unwrap();
    let last = changes.last().unwrap();
    assert_eq!((last.op.as_str(), last.epoch), ("commit_table", 2));
    region.shutdown().await;
}
