//! The S3 API over [`Store`]: request validation, streaming of bodies, S3 errors.

use std::io::SeekFrom;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use s3s::checksum::ChecksumHasher;
use s3s::crypto::{Checksum as _, Md5};
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3Request, S3Response, S3Result, StdError, TrailingHeaders, S3};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};
use tokio_util::io::ReaderStream;

use super::list::{self, Item, ListQuery, Listing};
use super::store::{
    check_key, hex_md5, internal, is_marker, to_secs, valid_bucket_name, Attributes, ObjectInfo,
    PartInfo, Store, TempPath, UploadInfo, WriteConditions, EMPTY_MD5,
};

const WRITE_BUFFER: usize = 1 << 20;
const READ_CHUNK: usize = 256 * 1024;
const MAX_PART_NUMBER: i32 = 10_000;
/// CompleteMultipartUpload answers with keep-alive whitespace above this total size.
const KEEP_ALIVE_ABOVE: u64 = 16 * 1024 * 1024;

/// `s3s::S3` implementation of the embedded endpoint.
pub(super) struct Backend {
    store: Arc<Store>,
}

impl Backend {
    pub(super) fn new(store: Store) -> Self {
        Backend {
            store: Arc::new(store),
        }
    }

    /// Runs blocking filesystem work off the async runtime.
    async fn blocking<T, F>(&self, f: F) -> S3Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> S3Result<T> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(S3Error::internal_error)?
    }
}

fn check_bucket_name(bucket: &str) -> S3Result<()> {
    if valid_bucket_name(bucket) {
        Ok(())
    } else {
        Err(s3_error!(
            NoSuchBucket,
            "The specified bucket does not exist"
        ))
    }
}

fn body_error(e: StdError) -> S3Error {
    match e.downcast::<S3Error>() {
        Ok(e) => *e,
        Err(e) => {
            tracing::debug!(error = %e, "embedded S3: request body failed");
            let mut err = s3_error!(
                IncompleteBody,
                "The request body could not be read completely"
            );
            err.set_source(e);
            err
        }
    }
}

fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(TABLE[(n >> 18) as usize & 63] as char);
        out.push(TABLE[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            TABLE[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            TABLE[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// Checksums a client sent (headers or trailers) for a body.
#[derive(Default)]
struct ExpectedChecksums {
    crc32: Option<String>,
    crc32c: Option<String>,
    sha1: Option<String>,
    sha256: Option<String>,
    crc64nvme: Option<String>,
    algorithm: Option<String>,
}

impl ExpectedChecksums {
    fn hasher(&self) -> ChecksumHasher {
        let alg = self.algorithm.as_deref().unwrap_or("");
        let wants =
            |given: &Option<String>, name: &str| given.is_some() || alg.eq_ignore_ascii_case(name);
        let mut h = ChecksumHasher::default();
        if wants(&self.crc32, ChecksumAlgorithm::CRC32) {
            h.crc32 = Some(Default::default());
        }
        if wants(&self.crc32c, ChecksumAlgorithm::CRC32C) {
            h.crc32c = Some(Default::default());
        }
        if wants(&self.sha1, ChecksumAlgorithm::SHA1) {
            h.sha1 = Some(Default::default());
        }
        if wants(&self.sha256, ChecksumAlgorithm::SHA256) {
            h.sha256 = Some(Default::default());
        }
        if wants(&self.crc64nvme, ChecksumAlgorithm::CRC64NVME) {
            h.crc64nvme = Some(Default::default());
        }
        h
    }

    /// Compares the computed checksums with the ones sent in headers or trailers.
    fn verify(mut self, computed: &Checksum, trailers: Option<TrailingHeaders>) -> S3Result<()> {
        if let Some(map) = trailers.and_then(|t| t.take()) {
            let get = |name: &str| {
                map.get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            self.crc32 = self.crc32.or_else(|| get("x-amz-checksum-crc32"));
            self.crc32c = self.crc32c.or_else(|| get("x-amz-checksum-crc32c"));
            self.sha1 = self.sha1.or_else(|| get("x-amz-checksum-sha1"));
            self.sha256 = self.sha256.or_else(|| get("x-amz-checksum-sha256"));
            self.crc64nvme = self.crc64nvme.or_else(|| get("x-amz-checksum-crc64nvme"));
        }
        let pairs = [
            ("CRC32", &self.crc32, &computed.checksum_crc32),
            ("CRC32C", &self.crc32c, &computed.checksum_crc32c),
            ("SHA1", &self.sha1, &computed.checksum_sha1),
            ("SHA256", &self.sha256, &computed.checksum_sha256),
            ("CRC64NVME", &self.crc64nvme, &computed.checksum_crc64nvme),
        ];
        for (name, expected, actual) in pairs {
            if let (Some(expected), Some(actual)) = (expected, actual) {
                if expected.trim() != actual {
                    return Err(s3_error!(
                        BadDigest,
                        "The {name} you specified did not match the calculated checksum."
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A request body written to a fsynced temporary file.
struct Received {
    tmp: TempPath,
    md5: [u8; 16],
    size: u64,
    checksums: Checksum,
}

/// Streams a request body to a temporary file, hashing it on the way.
async fn receive(
    store: &Store,
    body: Option<StreamingBlob>,
    content_length: Option<i64>,
    expected: &ExpectedChecksums,
) -> S3Result<Received> {
    let (tmp, file) = store
        .temp_file()
        .map_err(|e| internal("create temporary file", e))?;
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, tokio::fs::File::from_std(file));
    let mut md5 = Md5::new();
    let mut hasher = expected.hasher();
    let mut size = 0u64;
    if let Some(mut body) = body {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(body_error)?;
            md5.update(&chunk);
            hasher.update(&chunk);
            out.write_all(&chunk)
                .await
                .map_err(|e| internal("write temporary file", e))?;
            size += chunk.len() as u64;
        }
    }
    out.flush()
        .await
        .map_err(|e| internal("write temporary file", e))?;
    let file = out.into_inner();
    file.sync_all()
        .await
        .map_err(|e| internal("sync temporary file", e))?;
    drop(file);
    if let Some(len) = content_length {
        if u64::try_from(len).ok() != Some(size) {
            return Err(s3_error!(
                IncompleteBody,
                "You did not provide the number of bytes specified by the Content-Length HTTP header"
            ));
        }
    }
    Ok(Received {
        tmp,
        md5: md5.finalize(),
        size,
        checksums: hasher.finalize(),
    })
}

fn verify_content_md5(content_md5: Option<&str>, md5: &[u8; 16]) -> S3Result<()> {
    if let Some(given) = content_md5 {
        if given.trim() != base64(md5) {
            return Err(s3_error!(
                BadDigest,
                "The Content-MD5 you specified did not match what we received."
            ));
        }
    }
    Ok(())
}

fn etag_matches(cond: &ETagCondition, etag: &str) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value() == etag,
    }
}

/// If-Match / If-None-Match / If-(Un)Modified-Since of a read.
fn check_read_conditions(
    info: &ObjectInfo,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let last_modified = Timestamp::from(to_secs(info.last_modified));
    let failed = || {
        s3_error!(
            PreconditionFailed,
            "At least one of the pre-conditions you specified did not hold"
        )
    };
    if let Some(cond) = if_match {
        if !etag_matches(cond, &info.etag) {
            return Err(failed());
        }
    } else if let Some(t) = if_unmodified_since {
        if last_modified > *t {
            return Err(failed());
        }
    }
    if let Some(cond) = if_none_match {
        if etag_matches(cond, &info.etag) {
            return Err(s3_error!(NotModified));
        }
    } else if let Some(t) = if_modified_since {
        if last_modified <= *t {
            return Err(s3_error!(NotModified));
        }
    }
    Ok(())
}

fn attrs_of(
    content_type: Option<String>,
    content_encoding: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    cache_control: Option<String>,
    metadata: Option<Metadata>,
) -> Attributes {
    Attributes {
        content_type,
        content_encoding,
        content_disposition,
        content_language,
        cache_control,
        metadata: metadata.filter(|m| !m.is_empty()),
    }
}

// ---- listing helpers ------------------------------------------------------------------------

/// Characters kept as they are by `encoding-type=url` (S3 leaves '/' alone).
const URL_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

fn encoder(encoding_type: Option<&EncodingType>) -> impl Fn(String) -> String {
    let url = encoding_type.is_some_and(|e| e.as_str().eq_ignore_ascii_case(EncodingType::URL));
    move |s: String| {
        if url {
            utf8_percent_encode(&s, URL_ENCODE).to_string()
        } else {
            s
        }
    }
}

fn max_keys(given: Option<i32>) -> S3Result<usize> {
    match given {
        None => Ok(1000),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys cannot be negative")),
        Some(n) => Ok((n as usize).min(1000)),
    }
}

fn decode_token(token: &str) -> S3Result<String> {
    hex::decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            s3_error!(
                InvalidArgument,
                "The continuation token provided is incorrect"
            )
        })
}

fn split_listing(
    listing: Listing,
    enc: &impl Fn(String) -> String,
) -> (Option<Vec<Object>>, Option<Vec<CommonPrefix>>) {
    let mut contents = Vec::new();
    let mut prefixes = Vec::new();
    for item in listing.items {
        match item {
            Item::Object(o) => contents.push(Object {
                key: Some(enc(o.key)),
                size: Some(o.size as i64),
                e_tag: Some(ETag::Strong(o.etag)),
                last_modified: Some(Timestamp::from(o.last_modified)),
                storage_class: Some(ObjectStorageClass::from_static(
                    ObjectStorageClass::STANDARD,
                )),
                ..Default::default()
            }),
            Item::Prefix(p) => prefixes.push(CommonPrefix {
                prefix: Some(enc(p)),
            }),
        }
    }
    (
        (!contents.is_empty()).then_some(contents),
        (!prefixes.is_empty()).then_some(prefixes),
    )
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

#[async_trait::async_trait]
impl S3 for Backend {
    // ---- buckets ----------------------------------------------------------------------------

    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let buckets = self.blocking(|s| s.list_buckets()).await?;
        let buckets = buckets
            .into_iter()
            .map(|(name, created)| Bucket {
                name: Some(name),
                creation_date: Some(Timestamp::from(created)),
                bucket_region: None,
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            ..Default::default()
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let bucket = req.input.bucket;
        let location = format!("/{bucket}");
        self.blocking(move |s| s.create_bucket(&bucket)).await?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(location),
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        let bucket = req.input.bucket;
        self.blocking(move |s| s.check_bucket(&bucket).map(|_| ()))
            .await?;
        let region = req
            .region
            .map(|r| r.as_ref().to_string())
            .unwrap_or_else(|| "us-east-1".to_string());
        Ok(S3Response::new(HeadBucketOutput {
            bucket_region: Some(region),
            ..Default::default()
        }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let bucket = req.input.bucket;
        self.blocking(move |s| s.check_bucket(&bucket).map(|_| ()))
            .await?;
        let location_constraint = req
            .region
            .map(|r| r.as_ref().to_string())
            .filter(|r| r != "us-east-1")
            .map(BucketLocationConstraint::from);
        Ok(S3Response::new(GetBucketLocationOutput {
            location_constraint,
        }))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let bucket = req.input.bucket;
        self.blocking(move |s| s.delete_bucket(&bucket)).await?;
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    // ---- objects ----------------------------------------------------------------------------

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        check_bucket_name(&input.bucket)?;
        check_key(&input.key)?;
        let conditions = WriteConditions {
            if_match: input.if_match,
            if_none_match: input.if_none_match,
        };
        let attrs = attrs_of(
            input.content_type,
            input.content_encoding,
            input.content_disposition,
            input.content_language,
            input.cache_control,
            input.metadata,
        );
        let (bucket, key) = (input.bucket, input.key);

        // Fail early, before receiving the body; checked again atomically with the commit.
        {
            let (bucket, key, conditions) = (bucket.clone(), key.clone(), conditions.clone());
            self.blocking(move |s| s.precheck(&bucket, &key, &conditions))
                .await?;
        }

        if is_marker(&key) {
            let received = receive(
                &self.store,
                input.body,
                input.content_length,
                &ExpectedChecksums::default(),
            )
            .await?;
            if received.size != 0 {
                return Err(s3_error!(
                    InvalidRequest,
                    "A key ending in '/' is a folder marker: the embedded S3 endpoint only accepts it empty"
                ));
            }
            self.blocking(move |s| s.put_marker(&bucket, &key, attrs, &conditions))
                .await?;
            return Ok(S3Response::new(PutObjectOutput {
                e_tag: Some(ETag::Strong(EMPTY_MD5.to_string())),
                size: Some(0),
                ..Default::default()
            }));
        }

        let expected = ExpectedChecksums {
            crc32: input.checksum_crc32,
            crc32c: input.checksum_crc32c,
            sha1: input.checksum_sha1,
            sha256: input.checksum_sha256,
            crc64nvme: input.checksum_crc64nvme,
            algorithm: input.checksum_algorithm.map(|a| a.as_str().to_string()),
        };
        let received = receive(&self.store, input.body, input.content_length, &expected).await?;
        verify_content_md5(input.content_md5.as_deref(), &received.md5)?;
        expected.verify(&received.checksums, req.trailing_headers)?;

        let etag = hex_md5(&received.md5);
        let size = received.size;
        let checksums = received.checksums;
        {
            let etag = etag.clone();
            let tmp = received.tmp;
            self.blocking(move |s| s.commit(&bucket, &key, tmp, etag, attrs, &conditions))
                .await?;
        }
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(etag)),
            size: Some(size as i64),
            checksum_crc32: checksums.checksum_crc32,
            checksum_crc32c: checksums.checksum_crc32c,
            checksum_sha1: checksums.checksum_sha1,
            checksum_sha256: checksums.checksum_sha256,
            checksum_crc64nvme: checksums.checksum_crc64nvme,
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        check_bucket_name(&input.bucket)?;
        check_key(&input.key)?;
        let (bucket, key) = (input.bucket.clone(), input.key.clone());
        let (file, info) = self.blocking(move |s| s.open_object(&bucket, &key)).await?;
        check_read_conditions(
            &info,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;

        let (start, len, content_range) = match &input.range {
            None => (0, info.size, None),
            Some(range) => {
                let r = range.check(info.size).map_err(|_| {
                    s3_error!(
                        InvalidRange,
                        "The requested range is not satisfiable (object size {})",
                        info.size
                    )
                })?;
                (
                    r.start,
                    r.end - r.start,
                    Some(format!(
                        "bytes {}-{}/{}",
                        r.start,
                        r.end.saturating_sub(1),
                        info.size
                    )),
                )
            }
        };
        let body = match file {
            Some(file) if len > 0 => {
                let mut file = tokio::fs::File::from_std(file);
                if start > 0 {
                    file.seek(SeekFrom::Start(start))
                        .await
                        .map_err(|e| internal("seek object", e))?;
                }
                StreamingBlob::wrap(ReaderStream::with_capacity(file.take(len), READ_CHUNK))
            }
            _ => StreamingBlob::wrap(futures::stream::empty::<Result<Bytes, std::io::Error>>()),
        };
        let attrs = info.attrs;
        Ok(S3Response::new(GetObjectOutput {
            body: Some(body),
            content_length: Some(len as i64),
            content_range,
            accept_ranges: Some("bytes".to_string()),
            e_tag: Some(ETag::Strong(info.etag)),
            last_modified: Some(Timestamp::from(info.last_modified)),
            content_type: attrs.content_type,
            content_encoding: attrs.content_encoding,
            content_disposition: attrs.content_disposition,
            content_language: attrs.content_language,
            cache_control: attrs.cache_control,
            metadata: attrs.metadata,
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        check_bucket_name(&input.bucket)?;
        check_key(&input.key)?;
        let (bucket, key) = (input.bucket.clone(), input.key.clone());
        let (_file, info) = self.blocking(move |s| s.open_object(&bucket, &key)).await?;
        check_read_conditions(
            &info,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let attrs = info.attrs;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(info.size as i64),
            accept_ranges: Some("bytes".to_string()),
            e_tag: Some(ETag::Strong(info.etag)),
            last_modified: Some(Timestamp::from(info.last_modified)),
            content_type: attrs.content_type,
            content_encoding: attrs.content_encoding,
            content_disposition: attrs.content_disposition,
            content_language: attrs.content_language,
            cache_control: attrs.cache_control,
            metadata: attrs.metadata,
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        check_bucket_name(&input.bucket)?;
        check_key(&input.key)?;
        let (bucket, key) = (input.bucket, input.key);
        self.blocking(move |s| {
            s.check_bucket(&bucket)?;
            s.delete_object(&bucket, &key)
        })
        .await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        check_bucket_name(&input.bucket)?;
        if input.delete.objects.len() > 1000 {
            return Err(s3_error!(
                MalformedXML,
                "The request can delete at most 1000 keys"
            ));
        }
        let quiet = input.delete.quiet.unwrap_or(false);
        let bucket = input.bucket;
        let objects = input.delete.objects;
        let (deleted, errors) = self
            .blocking(move |s| {
                s.check_bucket(&bucket)?;
                let mut deleted = Vec::new();
                let mut errors = Vec::new();
                for object in objects {
                    match check_key(&object.key)
                        .and_then(|()| s.delete_object(&bucket, &object.key))
                    {
                        Ok(()) => deleted.push(DeletedObject {
                            key: Some(object.key),
                            version_id: object.version_id,
                            ..Default::default()
                        }),
                        Err(e) => errors.push(Error {
                            code: Some(e.code().as_str().to_string()),
                            message: e.message().map(str::to_string),
                            key: Some(object.key),
                            version_id: object.version_id,
                        }),
                    }
                }
                Ok((deleted, errors))
            })
            .await?;
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: (!quiet && !deleted.is_empty()).then_some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = req.input;
        let (src_bucket, src_key) = match &input.copy_source {
            CopySource::Bucket { bucket, key, .. } => (bucket.to_string(), key.to_string()),
            _ => {
                return Err(s3_error!(
                    NotImplemented,
                    "Only bucket copy sources are supported"
                ))
            }
        };
        check_bucket_name(&src_bucket)?;
        check_key(&src_key)?;
        check_bucket_name(&input.bucket)?;
        check_key(&input.key)?;
        if is_marker(&src_key) || is_marker(&input.key) {
            return Err(s3_error!(
                InvalidRequest,
                "Folder markers (keys ending in '/') cannot be copied"
            ));
        }
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if src_bucket == input.bucket && src_key == input.key && !replace {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes."
            ));
        }
        let new_attrs = replace.then(|| {
            attrs_of(
                input.content_type.clone(),
                input.content_encoding.clone(),
                input.content_disposition.clone(),
                input.content_language.clone(),
                input.cache_control.clone(),
                input.metadata.clone(),
            )
        });
        let (if_match, if_none_match) = (
            input.copy_source_if_match.clone(),
            input.copy_source_if_none_match.clone(),
        );
        let (bucket, key) = (input.bucket, input.key);
        let (etag, last_modified) = self
            .blocking(move |s| {
                s.check_bucket(&bucket)?;
                let (file, info) = s.open_object(&src_bucket, &src_key)?;
                check_read_conditions(&info, if_match.as_ref(), None, None, None)?;
                if let Some(cond) = &if_none_match {
                    if etag_matches(cond, &info.etag) {
                        return Err(s3_error!(
                            PreconditionFailed,
                            "At least one of the pre-conditions you specified did not hold"
                        ));
                    }
                }
                let file =
                    file.ok_or_else(|| s3_error!(NoSuchKey, "The specified key does not exist."))?;
                let tmp = s.copy_to_temp(file)?;
                let attrs = new_attrs.unwrap_or(info.attrs);
                let last_modified = s.commit(
                    &bucket,
                    &key,
                    tmp,
                    info.etag.clone(),
                    attrs,
                    &WriteConditions::default(),
                )?;
                Ok((info.etag, last_modified))
            })
            .await?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(ETag::Strong(etag)),
                last_modified: Some(Timestamp::from(last_modified)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    // ---- listing ----------------------------------------------------------------------------

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        check_bucket_name(&input.bucket)?;
        let max_keys = max_keys(input.max_keys)?;
        let after = match non_empty(input.continuation_token.clone()) {
            Some(token) => Some(decode_token(&token)?),
            None => non_empty(input.start_after.clone()),
        };
        let query = ListQuery {
            prefix: input.prefix.clone().unwrap_or_default(),
            delimiter: non_empty(input.delimiter.clone()),
            after,
            max_keys,
        };
        let bucket = input.bucket.clone();
        let listing = self
            .blocking(move |s| {
                s.check_bucket(&bucket)?;
                list::list(s, &bucket, &query)
            })
            .await?;
        let next_token = listing
            .truncated
            .then(|| listing.items.last().map(|i| hex::encode(i.key())))
            .flatten();
        let key_count = listing.items.len() as i32;
        let enc = encoder(input.encoding_type.as_ref());
        let (contents, common_prefixes) = split_listing(listing, &enc);
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(enc(input.prefix.unwrap_or_default())),
            delimiter: input.delimiter.map(&enc),
            start_after: input.start_after.map(&enc),
            continuation_token: input.continuation_token,
            next_continuation_token: next_token.clone(),
            is_truncated: Some(next_token.is_some()),
            max_keys: Some(max_keys as i32),
            key_count: Some(key_count),
            encoding_type: input.encoding_type,
            contents,
            common_prefixes,
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        check_bucket_name(&input.bucket)?;
        let max_keys = max_keys(input.max_keys)?;
        let query = ListQuery {
            prefix: input.prefix.clone().unwrap_or_default(),
            delimiter: non_empty(input.delimiter.clone()),
            after: non_empty(input.marker.clone()),
            max_keys,
        };
        let bucket = input.bucket.clone();
        let listing = self
            .blocking(move |s| {
                s.check_bucket(&bucket)?;
                list::list(s, &bucket, &query)
            })
            .await?;
        let enc = encoder(input.encoding_type.as_ref());
        let next_marker = listing
            .truncated
            .then(|| listing.items.last().map(|i| enc(i.key().to_string())))
            .flatten();
        let (contents, common_prefixes) = split_listing(listing, &enc);
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(enc(input.prefix.unwrap_or_default())),
            delimiter: input.delimiter.map(&enc),
            marker: Some(enc(input.marker.unwrap_or_default())),
            is_truncated: Some(next_marker.is_some()),
            next_marker,
            max_keys: Some(max_keys as i32),
            encoding_type: input.encoding_type,
            contents,
            common_prefixes,
            ..Default::default()
        }))
    }

    // ---- multipart uploads ------------------------------------------------------------------

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        check_bucket_name(&input.bucket)?;
        check_key(&input.key)?;
        if is_marker(&input.key) {
            return Err(s3_error!(
                InvalidRequest,
                "A key ending in '/' is a folder marker and cannot be uploaded in parts"
            ));
        }
        let info = UploadInfo {
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            attrs: attrs_of(
                input.content_type,
                input.content_encoding,
                input.content_disposition,
                input.content_language,
                input.cache_control,
                input.metadata,
            ),
            initiated_secs: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        };
        let id = self
            .blocking(move |s| {
                s.check_bucket(&info.bucket)?;
                s.create_upload(&info)
            })
            .await?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id.to_string()),
            checksum_algorithm: input.checksum_algorithm,
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        check_bucket_name(&input.bucket)?;
        check_key(&input.key)?;
        let number = input.part_number;
        if !(1..=MAX_PART_NUMBER).contains(&number) {
            return Err(s3_error!(
                InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive"
            ));
        }
        let (dir, _info) = {
            let (bucket, key, id) = (
                input.bucket.clone(),
                input.key.clone(),
                input.upload_id.clone(),
            );
            self.blocking(move |s| s.load_upload(&bucket, &key, &id))
                .await?
        };
        let expected = ExpectedChecksums {
            crc32: input.checksum_crc32,
            crc32c: input.checksum_crc32c,
            sha1: input.checksum_sha1,
            sha256: input.checksum_sha256,
            crc64nvme: input.checksum_crc64nvme,
            algorithm: input.checksum_algorithm.map(|a| a.as_str().to_string()),
        };
        let received = receive(&self.store, input.body, input.content_length, &expected).await?;
        verify_content_md5(input.content_md5.as_deref(), &received.md5)?;
        expected.verify(&received.checksums, req.trailing_headers)?;
        let etag = hex_md5(&received.md5);
        let part = PartInfo {
            etag: etag.clone(),
            size: received.size,
        };
        let tmp = received.tmp;
        self.blocking(move |s| s.store_part(&dir, number, tmp, &part))
            .await?;
        let checksums = received.checksums;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(etag)),
            checksum_crc32: checksums.checksum_crc32,
            checksum_crc32c: checksums.checksum_crc32c,
            checksum_sha1: checksums.checksum_sha1,
            checksum_sha256: checksums.checksum_sha256,
            checksum_crc64nvme: checksums.checksum_crc64nvme,
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        check_bucket_name(&input.bucket)?;
        check_key(&input.key)?;
        let listed = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default();
        if listed.is_empty() {
            return Err(s3_error!(
                MalformedXML,
                "You must specify at least one part"
            ));
        }
        let mut parts = Vec::with_capacity(listed.len());
        for part in listed {
            let number = part
                .part_number
                .ok_or_else(|| s3_error!(MalformedXML, "A part has no PartNumber"))?;
            if parts.last().is_some_and(|(last, _)| *last >= number) {
                return Err(s3_error!(
                    InvalidPartOrder,
                    "The list of parts was not in ascending order"
                ));
            }
            parts.push((number, part.e_tag.map(|e| e.value().to_string())));
        }
        let conditions = WriteConditions {
            if_match: input.if_match,
            if_none_match: input.if_none_match,
        };
        let (bucket, key, id) = (input.bucket.clone(), input.key.clone(), input.upload_id);
        // Fast checks answer with a plain error status.
        let (dir, info, total) = {
            let (bucket, key, parts, conditions) = (
                bucket.clone(),
                key.clone(),
                parts.clone(),
                conditions.clone(),
            );
            self.blocking(move |s| {
                let (dir, info) = s.load_upload(&bucket, &key, &id)?;
                let total = s.check_parts(&dir, &parts)?;
                s.precheck(&bucket, &key, &conditions)?;
                Ok((dir, info, total))
            })
            .await?
        };
        let store = self.store.clone();
        let finish = async move {
            let (commit_bucket, commit_key) = (bucket.clone(), key.clone());
            let etag = tokio::task::spawn_blocking(move || {
                let (tmp, etag, _size) = store.assemble(&dir, &parts)?;
                store.commit(
                    &commit_bucket,
                    &commit_key,
                    tmp,
                    etag.clone(),
                    info.attrs,
                    &conditions,
                )?;
                if let Err(e) = store.remove_upload(&dir) {
                    tracing::warn!(error = %e, "embedded S3: cannot remove a completed upload");
                }
                Ok::<_, S3Error>(etag)
            })
            .await
            .map_err(S3Error::internal_error)??;
            Ok(CompleteMultipartUploadOutput {
                location: Some(format!("/{bucket}/{key}")),
                bucket: Some(bucket),
                key: Some(key),
                e_tag: Some(ETag::Strong(etag)),
                ..Default::default()
            })
        };
        if total <= KEEP_ALIVE_ABOVE {
            return Ok(S3Response::new(finish.await?));
        }
        // A large upload takes longer to assemble than some clients wait for a response
        // (the AWS C++ SDK under pyarrow: 3 s without data). As S3 does, the 200 status goes
        // out at once and whitespace keeps the connection alive until the result document;
        // a late error then comes as an error document in that 200 response.
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            future: Some(Box::pin(finish)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        check_bucket_name(&input.bucket)?;
        check_key(&input.key)?;
        let (bucket, key, id) = (input.bucket, input.key, input.upload_id);
        self.blocking(move |s| {
            let (dir, _) = s.load_upload(&bucket, &key, &id)?;
            s.remove_upload(&dir)
        })
        .await?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        check_bucket_name(&input.bucket)?;
        check_key(&input.key)?;
        let max_parts = match input.max_parts {
            None => 1000,
            Some(n) if n < 0 => {
                return Err(s3_error!(InvalidArgument, "max-parts cannot be negative"))
            }
            Some(n) => (n as usize).min(1000),
        };
        let marker = input.part_number_marker.unwrap_or(0);
        let (bucket, key, id) = (
            input.bucket.clone(),
            input.key.clone(),
            input.upload_id.clone(),
        );
        let all = self
            .blocking(move |s| {
                let (dir, _) = s.load_upload(&bucket, &key, &id)?;
                s.list_parts(&dir)
            })
            .await?;
        let mut rest = all.into_iter().filter(|p| p.number > marker).peekable();
        let mut parts = Vec::new();
        while parts.len() < max_parts {
            let Some(p) = rest.next() else { break };
            parts.push(Part {
                part_number: Some(p.number),
                e_tag: Some(ETag::Strong(p.info.etag)),
                size: Some(p.info.size as i64),
                last_modified: Some(Timestamp::from(p.last_modified)),
                ..Default::default()
            });
        }
        let truncated = rest.peek().is_some();
        let next_marker = parts.last().and_then(|p| p.part_number);
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: if truncated { next_marker } else { None },
            max_parts: Some(max_parts as i32),
            is_truncated: Some(truncated),
            parts: Some(parts),
            ..Default::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_values() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        // Content-MD5 of empty content.
        assert_eq!(base64(&Md5::checksum(b"")), "1B2M2Y8AsgTpgAmY7PhCfg==");
    }
}
