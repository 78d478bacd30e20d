//! The embedded S3-compatible endpoint (`pangolin::storage::embedded`), driven by aws-sdk-s3.
//!
//! Each test starts its own endpoint on 127.0.0.1:0 over a temporary directory.
//! `pyarrow_compat` (ignored by default) drives it with pyarrow's S3FileSystem, as PyIceberg
//! does; run it with `PANGOLIN_PYTHON=/path/to/venv/bin/python cargo nextest run
//! --run-ignored only embedded_s3::`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use tokio_util::sync::CancellationToken;

const ACCESS_KEY: &str = "pangolin-test";
const SECRET_KEY: &str = "pangolin-test-secret";
const MIB: usize = 1024 * 1024;

struct Endpoint {
    dir: tempfile::TempDir,
    url: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Endpoint {
    async fn start() -> Endpoint {
        let dir = tempfile::tempdir().expect("temporary directory");
        let shutdown = CancellationToken::new();
        let (addr, task) = pangolin::storage::embedded::start(
            "127.0.0.1:0",
            dir.path(),
            ACCESS_KEY,
            SECRET_KEY,
            shutdown.clone(),
        )
        .await
        .expect("start the embedded S3 endpoint");
        Endpoint {
            dir,
            url: format!("http://{addr}"),
            shutdown,
            task,
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn client(&self) -> Client {
        client(&self.url, SECRET_KEY, true)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

fn client(url: &str, secret: &str, when_required: bool) -> Client {
    let mut b = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(ACCESS_KEY, secret, None, None, "test"))
        .endpoint_url(url)
        .force_path_style(true);
    if when_required {
        b = b
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    }
    Client::from_conf(b.build())
}

fn md5_hex(data: &[u8]) -> String {
    use s3s::crypto::Checksum as _;
    hex::encode(s3s::crypto::Md5::checksum(data))
}

fn unquote(etag: Option<&str>) -> String {
    etag.unwrap_or_default().trim_matches('"').to_string()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn put(c: &Client, bucket: &str, key: &str, body: Vec<u8>) {
    c.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {key}: {}", aws_sdk_s3::error::DisplayErrorContext(e)));
}

async fn get(c: &Client, bucket: &str, key: &str) -> Vec<u8> {
    c.get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get {key}: {}", aws_sdk_s3::error::DisplayErrorContext(e)))
        .body
        .collect()
        .await
        .expect("read body")
        .into_bytes()
        .to_vec()
}

async fn list_keys(c: &Client, bucket: &str, prefix: &str) -> Vec<String> {
    let out = c
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .expect("list");
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect()
}

/// Every file (not folder) below `dir`, relative.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out
}

fn status_of<E>(
    err: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

#[tokio::test]
async fn buckets() {
    let ep = Endpoint::start().await;
    let c = ep.client();

    c.create_bucket()
        .bucket("warehouse")
        .send()
        .await
        .expect("create");
    c.head_bucket()
        .bucket("warehouse")
        .send()
        .await
        .expect("head");

    let dup = c
        .create_bucket()
        .bucket("warehouse")
        .send()
        .await
        .unwrap_err();
    assert!(
        dup.as_service_error()
            .unwrap()
            .is_bucket_already_owned_by_you(),
        "{dup:?}"
    );

    let missing = c
        .head_bucket()
        .bucket("nope-nope")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status_of(&missing), Some(404));
    assert!(missing.as_service_error().unwrap().is_not_found());

    let invalid = c
        .create_bucket()
        .bucket("Bad_Name")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status_of(&invalid), Some(400), "{invalid:?}");

    c.create_bucket()
        .bucket("second.bucket")
        .send()
        .await
        .expect("create second");
    let names: Vec<_> = c
        .list_buckets()
        .send()
        .await
        .expect("list buckets")
        .buckets()
        .iter()
        .filter_map(|b| b.name().map(str::to_string))
        .collect();
    assert_eq!(names, ["second.bucket", "warehouse"]);

    // Only empty buckets can be deleted.
    put(&c, "warehouse", "a/b.txt", b"x".to_vec()).await;
    let not_empty = c
        .delete_bucket()
        .bucket("warehouse")
        .send()
        .await
        .unwrap_err();
    assert_eq!(not_empty.code(), Some("BucketNotEmpty"));
    c.delete_object()
        .bucket("warehouse")
        .key("a/b.txt")
        .send()
        .await
        .expect("delete");
    c.delete_bucket()
        .bucket("warehouse")
        .send()
        .await
        .expect("delete bucket");
    assert!(c.head_bucket().bucket("warehouse").send().await.is_err());
    let gone = c
        .delete_bucket()
        .bucket("warehouse")
        .send()
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Some("NoSuchBucket"));

    // A put into a missing bucket.
    let err = c
        .put_object()
        .bucket("warehouse")
        .key("k")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NoSuchBucket"));
    ep.stop().await;
}

#[tokio::test]
async fn object_round_trip_with_long_key() {
    let ep = Endpoint::start().await;
    let c = ep.client();
    c.create_bucket().bucket("bk1").send().await.unwrap();

    // The PyIceberg key that broke s3s-fs, and a longer one with many segments.
    let pyiceberg = "690c/ns/inner/t-80507f7773a346acb20e8b5c0215f139/data/1101/0111/1001/11001110/00000-0-ea777771-213e-48e1-a176-0bac66ad59b5.parquet";
    let many: String =
        (0..50).map(|i| format!("s{i:02}/")).collect::<String>() + "end-of-a-long-key.bin";
    assert!(many.len() > 200, "{}", many.len());
    for key in [
        pyiceberg,
        many.as_str(),
        "plain.txt",
        "with space/and+plus=&?%.txt",
    ] {
        let body = pattern(10_000, key.len() as u8);
        let out = c
            .put_object()
            .bucket("bk1")
            .key(key)
            .content_type("application/x-test")
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {key}: {}", aws_sdk_s3::error::DisplayErrorContext(e)));
        assert_eq!(unquote(out.e_tag()), md5_hex(&body));

        let got = c.get_object().bucket("bk1").key(key).send().await.unwrap();
        assert_eq!(got.content_length(), Some(10_000));
        assert_eq!(unquote(got.e_tag()), md5_hex(&body));
        assert_eq!(got.content_type(), Some("application/x-test"));
        assert!(got.last_modified().is_some());
        assert_eq!(
            got.body.collect().await.unwrap().into_bytes().as_ref(),
            body.as_slice()
        );

        let head = c.head_object().bucket("bk1").key(key).send().await.unwrap();
        assert_eq!(head.content_length(), Some(10_000));
        assert_eq!(unquote(head.e_tag()), md5_hex(&body));
        assert!(head.last_modified().is_some());

        // Stored as a plain file at <root>/<bucket>/<key>.
        assert_eq!(
            std::fs::read(ep.root().join("bk1").join(key)).unwrap(),
            body
        );
    }
    assert_eq!(list_keys(&c, "bk1", "").await.len(), 4);

    // Overwrite, then delete (twice: idempotent).
    put(&c, "bk1", pyiceberg, b"new".to_vec()).await;
    assert_eq!(get(&c, "bk1", pyiceberg).await, b"new");
    for _ in 0..2 {
        c.delete_object()
            .bucket("bk1")
            .key(pyiceberg)
            .send()
            .await
            .expect("delete");
    }
    let head = c
        .head_object()
        .bucket("bk1")
        .key(pyiceberg)
        .send()
        .await
        .unwrap_err();
    assert_eq!(status_of(&head), Some(404));
    assert!(head.as_service_error().unwrap().is_not_found());
    let err = c
        .get_object()
        .bucket("bk1")
        .key(pyiceberg)
        .send()
        .await
        .unwrap_err();
    assert!(err.as_service_error().unwrap().is_no_such_key(), "{err:?}");

    // An empty object.
    put(&c, "bk1", "empty", Vec::new()).await;
    let head = c
        .head_object()
        .bucket("bk1")
        .key("empty")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(0));
    assert_eq!(unquote(head.e_tag()), md5_hex(b""));
    assert!(get(&c, "bk1", "empty").await.is_empty());

    // A key can't also be the folder of another key.
    let err = c
        .put_object()
        .bucket("bk1")
        .key("plain.txt/child")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), Some(400), "{err:?}");
    ep.stop().await;
}

#[tokio::test]
async fn range_reads() {
    let ep = Endpoint::start().await;
    let c = ep.client();
    c.create_bucket().bucket("bk1").send().await.unwrap();
    let body = pattern(1000, 7);
    put(&c, "bk1", "r.bin", body.clone()).await;

    for (range, start, end) in [
        ("bytes=0-0", 0usize, 1usize),
        ("bytes=10-19", 10, 20),
        ("bytes=990-", 990, 1000),
        ("bytes=-25", 975, 1000),
        ("bytes=900-5000", 900, 1000),
        ("bytes=-5000", 0, 1000),
    ] {
        let out = c
            .get_object()
            .bucket("bk1")
            .key("r.bin")
            .range(range)
            .send()
            .await
            .unwrap();
        assert_eq!(out.content_length(), Some((end - start) as i64), "{range}");
        assert_eq!(
            out.content_range(),
            Some(format!("bytes {}-{}/1000", start, end - 1).as_str()),
            "{range}"
        );
        let got = out.body.collect().await.unwrap().into_bytes();
        assert_eq!(got.as_ref(), &body[start..end], "{range}");
    }
    let err = c
        .get_object()
        .bucket("bk1")
        .key("r.bin")
        .range("bytes=1000-")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), Some(416));
    assert_eq!(err.code(), Some("InvalidRange"));
    ep.stop().await;
}

#[tokio::test]
async fn list_objects() {
    let ep = Endpoint::start().await;
    let c = ep.client();
    c.create_bucket().bucket("bk1").send().await.unwrap();
    let keys = [
        "a-c",
        "a/b",
        "a/bc/x",
        "a/bc/y/z",
        "a/bd",
        "a0",
        "t/data/1.parquet",
        "t/data/2.parquet",
        "t/data/3.parquet",
        "t/data/4.parquet",
        "t/data/5.parquet",
        "t/metadata/v1.json",
    ];
    // Put in scrambled order.
    for key in keys.iter().rev() {
        put(&c, "bk1", key, key.as_bytes().to_vec()).await;
    }

    // Lexicographic order as S3, sizes and ETags.
    let out = c.list_objects_v2().bucket("bk1").send().await.unwrap();
    let listed: Vec<_> = out.contents().iter().map(|o| o.key().unwrap()).collect();
    assert_eq!(listed, keys);
    for o in out.contents() {
        let key = o.key().unwrap();
        assert_eq!(o.size(), Some(key.len() as i64));
        assert_eq!(unquote(o.e_tag()), md5_hex(key.as_bytes()));
        assert!(o.last_modified().is_some());
    }
    assert_eq!(out.key_count(), Some(keys.len() as i32));
    assert_eq!(out.is_truncated(), Some(false));

    // Prefix not at a folder boundary.
    assert_eq!(
        list_keys(&c, "bk1", "a/b").await,
        ["a/b", "a/bc/x", "a/bc/y/z", "a/bd"]
    );
    assert_eq!(list_keys(&c, "bk1", "a/bc").await, ["a/bc/x", "a/bc/y/z"]);
    assert_eq!(
        list_keys(&c, "bk1", "a").await,
        ["a-c", "a/b", "a/bc/x", "a/bc/y/z", "a/bd", "a0"]
    );
    assert!(list_keys(&c, "bk1", "nothing/").await.is_empty());
    assert!(list_keys(&c, "bk1", "a/../").await.is_empty());

    // Delimiter: objects and common prefixes.
    let out = c
        .list_objects_v2()
        .bucket("bk1")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let objects: Vec<_> = out.contents().iter().map(|o| o.key().unwrap()).collect();
    let prefixes: Vec<_> = out
        .common_prefixes()
        .iter()
        .map(|p| p.prefix().unwrap())
        .collect();
    assert_eq!(objects, ["a-c", "a0"]);
    assert_eq!(prefixes, ["a/", "t/"]);

    let out = c
        .list_objects_v2()
        .bucket("bk1")
        .prefix("a/b")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let objects: Vec<_> = out.contents().iter().map(|o| o.key().unwrap()).collect();
    let prefixes: Vec<_> = out
        .common_prefixes()
        .iter()
        .map(|p| p.prefix().unwrap())
        .collect();
    assert_eq!(objects, ["a/b", "a/bd"]);
    assert_eq!(prefixes, ["a/bc/"]);

    let out = c
        .list_objects_v2()
        .bucket("bk1")
        .prefix("t/")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    assert!(out.contents().is_empty());
    let prefixes: Vec<_> = out
        .common_prefixes()
        .iter()
        .map(|p| p.prefix().unwrap())
        .collect();
    assert_eq!(prefixes, ["t/data/", "t/metadata/"]);

    // Pagination: max-keys 2 over 5 keys.
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = c
            .list_objects_v2()
            .bucket("bk1")
            .prefix("t/data/")
            .max_keys(2)
            .set_continuation_token(token.clone())
            .send()
            .await
            .unwrap();
        pages.push(
            out.contents()
                .iter()
                .map(|o| o.key().unwrap().to_string())
                .collect::<Vec<_>>(),
        );
        if out.is_truncated() != Some(true) {
            assert!(out.next_continuation_token().is_none());
            break;
        }
        token = out.next_continuation_token().map(str::to_string);
        assert!(token.is_some());
    }
    assert_eq!(
        pages,
        vec![
            vec!["t/data/1.parquet", "t/data/2.parquet"],
            vec!["t/data/3.parquet", "t/data/4.parquet"],
            vec!["t/data/5.parquet"],
        ]
    );

    // Pagination over common prefixes.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = c
            .list_objects_v2()
            .bucket("bk1")
            .delimiter("/")
            .max_keys(1)
            .set_continuation_token(token.clone())
            .send()
            .await
            .unwrap();
        seen.extend(out.contents().iter().map(|o| o.key().unwrap().to_string()));
        seen.extend(
            out.common_prefixes()
                .iter()
                .map(|p| p.prefix().unwrap().to_string()),
        );
        if out.is_truncated() != Some(true) {
            break;
        }
        token = out.next_continuation_token().map(str::to_string);
    }
    assert_eq!(seen, ["a-c", "a/", "a0", "t/"]);

    // start-after.
    let out = c
        .list_objects_v2()
        .bucket("bk1")
        .start_after("a/bc/x")
        .send()
        .await
        .unwrap();
    let listed: Vec<_> = out.contents().iter().map(|o| o.key().unwrap()).collect();
    assert_eq!(listed, &keys[3..]);

    // ListObjects (v1) with a marker.
    let out = c
        .list_objects()
        .bucket("bk1")
        .prefix("t/")
        .marker("t/data/4.parquet")
        .send()
        .await
        .unwrap();
    let listed: Vec<_> = out.contents().iter().map(|o| o.key().unwrap()).collect();
    assert_eq!(listed, ["t/data/5.parquet", "t/metadata/v1.json"]);
    let out = c
        .list_objects()
        .bucket("bk1")
        .max_keys(3)
        .send()
        .await
        .unwrap();
    assert_eq!(out.is_truncated(), Some(true));
    assert_eq!(out.next_marker(), Some("a/bc/x"));

    // A missing bucket.
    let err = c
        .list_objects_v2()
        .bucket("missing")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NoSuchBucket"));
    ep.stop().await;
}

#[tokio::test]
async fn multipart_upload() {
    let ep = Endpoint::start().await;
    let c = ep.client();
    c.create_bucket().bucket("bk1").send().await.unwrap();
    let key = "690c/ns/inner/t-80507f7773a346acb20e8b5c0215f139/data/1101/0111/1001/11001110/00000-0-ea777771-213e-48e1-a176-0bac66ad59b5.parquet";

    let up = c
        .create_multipart_upload()
        .bucket("bk1")
        .key(key)
        .content_type("application/vnd.apache.parquet")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap().to_string();
    let parts = [pattern(5 * MIB, 1), pattern(5 * MIB, 2), pattern(12_345, 3)];
    let mut completed = Vec::new();
    let mut digests = Vec::new();
    // Upload out of order: the order of CompleteMultipartUpload counts.
    for i in [2usize, 0, 1] {
        let out = c
            .upload_part()
            .bucket("bk1")
            .key(key)
            .upload_id(&id)
            .part_number(i as i32 + 1)
            .body(ByteStream::from(parts[i].clone()))
            .send()
            .await
            .unwrap();
        assert_eq!(unquote(out.e_tag()), md5_hex(&parts[i]));
    }
    for (i, part) in parts.iter().enumerate() {
        use s3s::crypto::Checksum as _;
        digests.extend_from_slice(&s3s::crypto::Md5::checksum(part));
        completed.push(
            CompletedPart::builder()
                .part_number(i as i32 + 1)
                .e_tag(format!("\"{}\"", md5_hex(part)))
                .build(),
        );
    }

    let listed = c
        .list_parts()
        .bucket("bk1")
        .key(key)
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    let numbers: Vec<_> = listed
        .parts()
        .iter()
        .map(|p| p.part_number().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert_eq!(listed.parts()[2].size(), Some(12_345));

    // Nothing visible before completion.
    assert!(list_keys(&c, "bk1", "").await.is_empty());

    let done = c
        .complete_multipart_upload()
        .bucket("bk1")
        .key(key)
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let etag = unquote(done.e_tag());
    assert_eq!(etag, format!("{}-3", md5_hex(&digests)));

    let all = parts.concat();
    assert_eq!(get(&c, "bk1", key).await, all);
    let head = c.head_object().bucket("bk1").key(key).send().await.unwrap();
    assert_eq!(head.content_length(), Some(all.len() as i64));
    assert_eq!(unquote(head.e_tag()), etag);
    assert_eq!(head.content_type(), Some("application/vnd.apache.parquet"));
    let ranged = c
        .get_object()
        .bucket("bk1")
        .key(key)
        .range(format!("bytes={}-{}", 5 * MIB - 2, 5 * MIB + 1))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ranged.body.collect().await.unwrap().into_bytes().as_ref(),
        &all[5 * MIB - 2..5 * MIB + 2]
    );

    // The upload is gone.
    let err = c
        .list_parts()
        .bucket("bk1")
        .key(key)
        .upload_id(&id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NoSuchUpload"));
    // No temporary or upload files are left behind.
    assert!(files_below(&ep.root().join(".tmp")).is_empty());
    assert!(files_below(&ep.root().join(".uploads")).is_empty());

    // A missing part, a wrong ETag, a too-small part, then abort.
    let id = c
        .create_multipart_upload()
        .bucket("bk1")
        .key("m2")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    for (n, body) in [(1, pattern(100, 1)), (2, pattern(100, 2))] {
        c.upload_part()
            .bucket("bk1")
            .key("m2")
            .upload_id(&id)
            .part_number(n)
            .body(ByteStream::from(body))
            .send()
            .await
            .unwrap();
    }
    let complete = |parts: Vec<CompletedPart>| {
        c.complete_multipart_upload()
            .bucket("bk1")
            .key("m2")
            .upload_id(&id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
    };
    let err = complete(vec![
        CompletedPart::builder()
            .part_number(1)
            .e_tag(md5_hex(&pattern(100, 1)))
            .build(),
        CompletedPart::builder()
            .part_number(3)
            .e_tag("\"00000000000000000000000000000000\"")
            .build(),
    ])
    .await
    .unwrap_err();
    assert_eq!(err.code(), Some("InvalidPart"), "{err:?}");
    let err = complete(vec![CompletedPart::builder()
        .part_number(1)
        .e_tag("\"00000000000000000000000000000000\"")
        .build()])
    .await
    .unwrap_err();
    assert_eq!(err.code(), Some("InvalidPart"), "{err:?}");
    let err = complete(vec![
        CompletedPart::builder()
            .part_number(1)
            .e_tag(md5_hex(&pattern(100, 1)))
            .build(),
        CompletedPart::builder()
            .part_number(2)
            .e_tag(md5_hex(&pattern(100, 2)))
            .build(),
    ])
    .await
    .unwrap_err();
    assert_eq!(err.code(), Some("EntityTooSmall"), "{err:?}");
    c.abort_multipart_upload()
        .bucket("bk1")
        .key("m2")
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    let err = c
        .upload_part()
        .bucket("bk1")
        .key("m2")
        .upload_id(&id)
        .part_number(3)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NoSuchUpload"));
    let err = c
        .abort_multipart_upload()
        .bucket("bk1")
        .key("m2")
        .upload_id("not-a-uuid/../..")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NoSuchUpload"));
    assert_eq!(list_keys(&c, "bk1", "").await, [key]);
    ep.stop().await;
}

async fn upload_parts(c: &Client, key: &str, parts: &[Vec<u8>]) -> (String, Vec<CompletedPart>) {
    let id = c
        .create_multipart_upload()
        .bucket("bk1")
        .key(key)
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    let uploads = parts.iter().enumerate().map(|(i, body)| {
        let (c, id) = (c.clone(), id.clone());
        let body = body.clone();
        async move {
            let out = c
                .upload_part()
                .bucket("bk1")
                .key(key)
                .upload_id(&id)
                .part_number(i as i32 + 1)
                .body(ByteStream::from(body))
                .send()
                .await
                .unwrap();
            CompletedPart::builder()
                .part_number(i as i32 + 1)
                .e_tag(out.e_tag().unwrap())
                .build()
        }
    });
    let completed = futures::future::join_all(uploads).await;
    (id, completed)
}

async fn complete(
    c: &Client,
    key: &str,
    id: &str,
    parts: Vec<CompletedPart>,
) -> Result<
    String,
    aws_sdk_s3::error::SdkError<
        aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadError,
    >,
> {
    c.complete_multipart_upload()
        .bucket("bk1")
        .key(key)
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .map(|out| unquote(out.e_tag()))
}

/// A large upload completes behind keep-alive whitespace; a part changed on disk after its
/// upload is found while assembling: before the response for a small upload (InvalidPart),
/// after the 200 status for a large one (an error document in the 200 response).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_keep_alive_and_late_errors() {
    let ep = Endpoint::start().await;
    let c = ep.client();
    c.create_bucket().bucket("bk1").send().await.unwrap();

    let big: Vec<Vec<u8>> = (0..4).map(|i| pattern(5 * MIB, i)).collect();
    let (id, parts) = upload_parts(&c, "big/one", &big).await;
    let etag = complete(&c, "big/one", &id, parts).await.expect("complete");
    assert!(etag.ends_with("-4"), "{etag}");
    assert_eq!(get(&c, "bk1", "big/one").await, big.concat());

    let small = [pattern(1000, 1)];
    let (id, parts) = upload_parts(&c, "small/tampered", &small).await;
    let part = ep.root().join(".uploads").join(&id).join("part-00001");
    std::fs::write(&part, pattern(1000, 2)).unwrap();
    let err = complete(&c, "small/tampered", &id, parts)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidPart"), "{err:?}");

    let (id, parts) = upload_parts(&c, "big/tampered", &big).await;
    let part = ep.root().join(".uploads").join(&id).join("part-00002");
    std::fs::write(&part, pattern(5 * MIB, 9)).unwrap();
    assert!(complete(&c, "big/tampered", &id, parts).await.is_err());

    assert_eq!(list_keys(&c, "bk1", "").await, ["big/one"]);
    ep.stop().await;
}

#[tokio::test]
async fn copy_object() {
    let ep = Endpoint::start().await;
    let c = ep.client();
    c.create_bucket().bucket("bk1").send().await.unwrap();
    c.create_bucket().bucket("bk2").send().await.unwrap();
    let body = pattern(70_000, 9);
    c.put_object()
        .bucket("bk1")
        .key("src/one.bin")
        .content_type("application/x-one")
        .metadata("owner", "pangolin")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();

    let out = c
        .copy_object()
        .bucket("bk1")
        .key("dst/one.bin")
        .copy_source("bk1/src/one.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(
        unquote(out.copy_object_result().unwrap().e_tag()),
        md5_hex(&body)
    );
    let out = c
        .copy_object()
        .bucket("bk2")
        .key("x/y/z.bin")
        .copy_source("bk1/src/one.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(
        unquote(out.copy_object_result().unwrap().e_tag()),
        md5_hex(&body)
    );

    for (bucket, key) in [("bk1", "dst/one.bin"), ("bk2", "x/y/z.bin")] {
        let got = c.get_object().bucket(bucket).key(key).send().await.unwrap();
        assert_eq!(got.content_type(), Some("application/x-one"));
        assert_eq!(
            got.metadata()
                .and_then(|m| m.get("owner"))
                .map(String::as_str),
            Some("pangolin")
        );
        assert_eq!(
            got.body.collect().await.unwrap().into_bytes().as_ref(),
            body.as_slice()
        );
    }

    // Replacing the metadata.
    c.copy_object()
        .bucket("bk1")
        .key("src/one.bin")
        .copy_source("bk1/src/one.bin")
        .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
        .content_type("text/plain")
        .send()
        .await
        .unwrap();
    let head = c
        .head_object()
        .bucket("bk1")
        .key("src/one.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("text/plain"));
    assert_eq!(head.content_length(), Some(70_000));

    let err = c
        .copy_object()
        .bucket("bk1")
        .key("k")
        .copy_source("bk1/missing")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NoSuchKey"), "{err:?}");
    ep.stop().await;
}

#[tokio::test]
async fn deletes_leave_no_empty_folders() {
    let ep = Endpoint::start().await;
    let c = ep.client();
    c.create_bucket().bucket("bk1").send().await.unwrap();
    put(&c, "bk1", "t/data/a/b/c/1.parquet", b"1".to_vec()).await;
    put(&c, "bk1", "t/data/a/2.parquet", b"2".to_vec()).await;
    put(&c, "bk1", "t/metadata/v1.json", b"3".to_vec()).await;

    c.delete_object()
        .bucket("bk1")
        .key("t/data/a/b/c/1.parquet")
        .send()
        .await
        .unwrap();
    assert!(!ep.root().join("bk1/t/data/a/b").exists());
    assert!(ep.root().join("bk1/t/data/a").is_dir());

    let out = c
        .delete_objects()
        .bucket("bk1")
        .delete(
            Delete::builder()
                .objects(
                    ObjectIdentifier::builder()
                        .key("t/data/a/2.parquet")
                        .build()
                        .unwrap(),
                )
                .objects(
                    ObjectIdentifier::builder()
                        .key("t/metadata/v1.json")
                        .build()
                        .unwrap(),
                )
                .objects(
                    ObjectIdentifier::builder()
                        .key("never/existed")
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(out.deleted().len(), 3);
    assert!(out.errors().is_empty());

    assert!(list_keys(&c, "bk1", "").await.is_empty());
    let out = c
        .list_objects_v2()
        .bucket("bk1")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    assert!(out.contents().is_empty() && out.common_prefixes().is_empty());
    assert_eq!(std::fs::read_dir(ep.root().join("bk1")).unwrap().count(), 0);
    ep.stop().await;
}

#[tokio::test]
async fn folder_markers() {
    let ep = Endpoint::start().await;
    let c = ep.client();
    c.create_bucket().bucket("bk1").send().await.unwrap();
    put(&c, "bk1", "dir/", Vec::new()).await;
    let head = c
        .head_object()
        .bucket("bk1")
        .key("dir/")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(0));
    assert_eq!(list_keys(&c, "bk1", "").await, ["dir/"]);

    put(&c, "bk1", "dir/sub/file", b"x".to_vec()).await;
    assert_eq!(list_keys(&c, "bk1", "").await, ["dir/", "dir/sub/file"]);
    let out = c
        .list_objects_v2()
        .bucket("bk1")
        .prefix("dir/")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let objects: Vec<_> = out.contents().iter().map(|o| o.key().unwrap()).collect();
    let prefixes: Vec<_> = out
        .common_prefixes()
        .iter()
        .map(|p| p.prefix().unwrap())
        .collect();
    assert_eq!(objects, ["dir/"]);
    assert_eq!(prefixes, ["dir/sub/"]);

    // Deleting the child keeps the marked folder.
    c.delete_object()
        .bucket("bk1")
        .key("dir/sub/file")
        .send()
        .await
        .unwrap();
    assert_eq!(list_keys(&c, "bk1", "").await, ["dir/"]);
    assert!(ep.root().join("bk1/dir").is_dir());
    c.delete_object()
        .bucket("bk1")
        .key("dir/")
        .send()
        .await
        .unwrap();
    assert!(list_keys(&c, "bk1", "").await.is_empty());
    assert!(!ep.root().join("bk1/dir").exists());
    let err = c
        .head_object()
        .bucket("bk1")
        .key("dir/")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), Some(404));
    ep.stop().await;
}

#[tokio::test]
async fn rejects_bad_signatures_and_keys() {
    let ep = Endpoint::start().await;
    let c = ep.client();
    c.create_bucket().bucket("bk1").send().await.unwrap();

    let bad = client(&ep.url, "wrong-secret", true);
    let err = bad
        .list_objects_v2()
        .bucket("bk1")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), Some(403), "{err:?}");
    let err = bad
        .put_object()
        .bucket("bk1")
        .key("k")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), Some(403), "{err:?}");
    assert!(list_keys(&c, "bk1", "").await.is_empty());

    // Anonymous requests are rejected too.
    let resp = reqwest::get(format!("{}/bk1?list-type=2", ep.url))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);

    for key in ["a/../../escape", "../escape", "a//b", "./a", "a/./b"] {
        let err = c
            .put_object()
            .bucket("bk1")
            .key(key)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap_err();
        let status = status_of(&err).unwrap_or(0);
        assert!((400..500).contains(&status), "{key}: {err:?}");
    }
    let long = "k".repeat(300);
    let err = c
        .put_object()
        .bucket("bk1")
        .key(&long)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("KeyTooLongError"), "{err:?}");
    assert!(!ep.root().join("escape").exists());
    assert!(list_keys(&c, "bk1", "").await.is_empty());
    ep.stop().await;
}

#[tokio::test]
async fn conditional_and_verified_writes() {
    let ep = Endpoint::start().await;
    let c = ep.client();
    c.create_bucket().bucket("bk1").send().await.unwrap();

    c.put_object()
        .bucket("bk1")
        .key("once")
        .if_none_match("*")
        .body(ByteStream::from_static(b"first"))
        .send()
        .await
        .unwrap();
    let err = c
        .put_object()
        .bucket("bk1")
        .key("once")
        .if_none_match("*")
        .body(ByteStream::from_static(b"second"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), Some(412), "{err:?}");
    assert_eq!(get(&c, "bk1", "once").await, b"first");

    // If-Match on reads.
    let etag = md5_hex(b"first");
    c.get_object()
        .bucket("bk1")
        .key("once")
        .if_match(format!("\"{etag}\""))
        .send()
        .await
        .unwrap();
    let err = c
        .get_object()
        .bucket("bk1")
        .key("once")
        .if_match("\"0123\"")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), Some(412), "{err:?}");

    // A Content-MD5 that does not match: rejected, nothing stored.
    let err = c
        .put_object()
        .bucket("bk1")
        .key("digest")
        .content_md5("1B2M2Y8AsgTpgAmY7PhCfg==")
        .body(ByteStream::from_static(b"not empty"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("BadDigest"), "{err:?}");
    assert!(c
        .head_object()
        .bucket("bk1")
        .key("digest")
        .send()
        .await
        .is_err());
    c.put_object()
        .bucket("bk1")
        .key("digest")
        .content_md5("1B2M2Y8AsgTpgAmY7PhCfg==")
        .body(ByteStream::from_static(b""))
        .send()
        .await
        .unwrap();
    assert!(files_below(&ep.root().join(".tmp")).is_empty());
    ep.stop().await;
}

/// aws-sdk-s3's default checksum behaviour: CRC32 trailers in aws-chunked bodies.
#[tokio::test]
async fn default_sdk_checksums() {
    let ep = Endpoint::start().await;
    let c = client(&ep.url, SECRET_KEY, false);
    c.create_bucket().bucket("bk1").send().await.unwrap();
    let body = pattern(300_000, 5);
    put(&c, "bk1", "crc/obj", body.clone()).await;
    assert_eq!(get(&c, "bk1", "crc/obj").await, body);

    let id = c
        .create_multipart_upload()
        .bucket("bk1")
        .key("crc/mp")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    let mut parts = Vec::new();
    for (n, data) in [(1, pattern(5 * MIB, 1)), (2, pattern(1000, 2))] {
        let out = c
            .upload_part()
            .bucket("bk1")
            .key("crc/mp")
            .upload_id(&id)
            .part_number(n)
            .body(ByteStream::from(data))
            .send()
            .await
            .unwrap();
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(out.e_tag().unwrap())
                .set_checksum_crc32(out.checksum_crc32().map(str::to_string))
                .build(),
        );
    }
    c.complete_multipart_upload()
        .bucket("bk1")
        .key("crc/mp")
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(get(&c, "bk1", "crc/mp").await.len(), 5 * MIB + 1000);

    let del = c
        .delete_objects()
        .bucket("bk1")
        .delete(
            Delete::builder()
                .objects(ObjectIdentifier::builder().key("crc/obj").build().unwrap())
                .objects(ObjectIdentifier::builder().key("crc/mp").build().unwrap())
                .quiet(true)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert!(del.errors().is_empty());
    assert!(list_keys(&c, "bk1", "").await.is_empty());
    ep.stop().await;
}

/// Readers during overwrites see the old or the new object whole, never a mix or a part.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overwrites_are_atomic() {
    let ep = Endpoint::start().await;
    let c = ep.client();
    c.create_bucket().bucket("bk1").send().await.unwrap();
    let old_len = 10 * MIB;
    let new_len = 10 * MIB + 12_345;
    let versions = Arc::new([vec![b'o'; old_len], vec![b'n'; new_len]]);
    let etags = Arc::new([md5_hex(&versions[0]), md5_hex(&versions[1])]);
    put(&c, "bk1", "big/object.bin", versions[0].clone()).await;

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (c, stop, reads, etags) = (c.clone(), stop.clone(), reads.clone(), etags.clone());
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let out = c
                    .get_object()
                    .bucket("bk1")
                    .key("big/object.bin")
                    .send()
                    .await
                    .expect("get during overwrite");
                let declared = out.content_length().unwrap() as usize;
                let etag = unquote(out.e_tag());
                let data = out.body.collect().await.expect("body").into_bytes();
                assert_eq!(data.len(), declared);
                let version = usize::from(data.len() != old_len);
                let (expect_len, byte) = [(old_len, b'o'), (new_len, b'n')][version];
                assert_eq!(
                    data.len(),
                    expect_len,
                    "a length other than the old or the new one"
                );
                assert!(data.iter().all(|b| *b == byte), "mixed content");
                assert_eq!(etag, etags[version], "ETag of another version");
                let head = c
                    .head_object()
                    .bucket("bk1")
                    .key("big/object.bin")
                    .send()
                    .await
                    .expect("head");
                let len = head.content_length().unwrap() as usize;
                assert!(len == old_len || len == new_len, "head length {len}");
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for i in 0..4 {
        put(&c, "bk1", "big/object.bin", versions[(i + 1) % 2].clone()).await;
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.expect("reader");
    }
    assert!(reads.load(Ordering::Relaxed) > 0);
    assert_eq!(get(&c, "bk1", "big/object.bin").await.len(), old_len);
    ep.stop().await;
}

/// The `.meta` sidecars may be lost or stale: ETags are then recomputed from the content.
#[tokio::test]
async fn lost_metadata_is_recomputed() {
    let ep = Endpoint::start().await;
    let c = ep.client();
    c.create_bucket().bucket("bk1").send().await.unwrap();
    put(&c, "bk1", "a/b", b"hello".to_vec()).await;
    std::fs::remove_dir_all(ep.root().join(".meta")).unwrap();
    // A file copied in by hand.
    std::fs::create_dir_all(ep.root().join("bk1/manual")).unwrap();
    std::fs::write(ep.root().join("bk1/manual/file.txt"), b"by hand").unwrap();

    let head = c
        .head_object()
        .bucket("bk1")
        .key("a/b")
        .send()
        .await
        .unwrap();
    assert_eq!(unquote(head.e_tag()), md5_hex(b"hello"));
    let out = c.list_objects_v2().bucket("bk1").send().await.unwrap();
    let listed: Vec<_> = out
        .contents()
        .iter()
        .map(|o| (o.key().unwrap(), unquote(o.e_tag())))
        .collect();
    assert_eq!(
        listed,
        [
            ("a/b", md5_hex(b"hello")),
            ("manual/file.txt", md5_hex(b"by hand"))
        ]
    );
    ep.stop().await;
}

/// pyarrow's S3FileSystem (PyIceberg's FileIO) against the endpoint. Needs a Python with
/// pyarrow: `PANGOLIN_PYTHON`, else `$HOME/.cache/pangolin/venv/bin/python`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Python with pyarrow"]
async fn pyarrow_compat() {
    let python = std::env::var("PANGOLIN_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/pangolin/venv/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let ep = Endpoint::start().await;
    ep.client()
        .create_bucket()
        .bucket("warehouse")
        .send()
        .await
        .unwrap();
    let endpoint = ep.url.trim_start_matches("http://").to_string();
    let out = tokio::process::Command::new(&python)
        .arg("-c")
        .arg(PYARROW_SCRIPT)
        .env("S3_ENDPOINT", endpoint)
        .env("S3_KEY", ACCESS_KEY)
        .env("S3_SECRET", SECRET_KEY)
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {python}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pyarrow script failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("PYARROW OK"), "{stdout}\n{stderr}");
    ep.stop().await;
}

const PYARROW_SCRIPT: &str = r#"
import os
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

fs = pafs.S3FileSystem(
    endpoint_override=os.environ["S3_ENDPOINT"], scheme="http",
    access_key=os.environ["S3_KEY"], secret_key=os.environ["S3_SECRET"], region="us-east-1",
)
base = "warehouse/690c/ns/inner/t-80507f7773a346acb20e8b5c0215f139/data/1101/0111/1001/11001110"
path = base + "/00000-0-ea777771-213e-48e1-a176-0bac66ad59b5.parquet"

# > 16 MiB through open_output_stream: a multipart upload, completed behind keep-alive.
chunk = bytes(range(256)) * 4096  # 1 MiB
with fs.open_output_stream(path) as f:
    for i in range(21):
        f.write(chunk)
    f.write(b"tail")
size = 21 * len(chunk) + 4
info = fs.get_file_info(path)
assert info.type == pafs.FileType.File, info
assert info.size == size, (info.size, size)
with fs.open_input_file(path) as f:
    assert f.size() == size
    f.seek(5 * len(chunk) - 3)
    assert f.read(6) == chunk[-3:] + chunk[:3]
with fs.open_input_stream(path) as f:
    data = f.read()
assert data == chunk * 21 + b"tail"

# A small file, directories, listing.
with fs.open_output_stream(base + "/small.txt") as f:
    f.write(b"small")
assert fs.get_file_info(base).type == pafs.FileType.Directory
assert fs.get_file_info("warehouse/690c/ns").type == pafs.FileType.Directory
assert fs.get_file_info("warehouse/690c/nope").type == pafs.FileType.NotFound
listed = sorted(i.path for i in fs.get_file_info(pafs.FileSelector("warehouse/690c", recursive=True)) if i.type == pafs.FileType.File)
assert listed == sorted([path, base + "/small.txt"]), listed

# Parquet round trip, as PyIceberg writes data files.
table = pa.table({"id": list(range(1000)), "name": [f"n{i}" for i in range(1000)]})
pq.write_table(table, "warehouse/t/data/p.parquet", filesystem=fs)
assert pq.read_table("warehouse/t/data/p.parquet", filesystem=fs).equals(table)

# move (copy + delete), create_dir, delete_file, delete_dir.
fs.move(base + "/small.txt", "warehouse/moved/small.txt")
with fs.open_input_stream("warehouse/moved/small.txt") as f:
    assert f.read() == b"small"
fs.create_dir("warehouse/made/dir")
assert fs.get_file_info("warehouse/made/dir").type == pafs.FileType.Directory
fs.delete_file(path)
assert fs.get_file_info(path).type == pafs.FileType.NotFound
fs.delete_dir("warehouse/690c")
assert fs.get_file_info("warehouse/690c").type == pafs.FileType.NotFound
fs.delete_dir("warehouse/t")
fs.delete_dir("warehouse/moved")
fs.delete_dir("warehouse/made")
left = [i.path for i in fs.get_file_info(pafs.FileSelector("warehouse", recursive=True))]
assert left == [], left
print("PYARROW OK")
"#;
