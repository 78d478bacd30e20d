//! Object IO: every read and write of table files goes through aws-sdk-s3, whether the
//! endpoint is AWS S3 or Pangolin's embedded S3-compatible endpoint ([`embedded`]).

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

pub mod embedded;

/// Errors of object IO.
///
/// [`StorageError::is_client_error`] tells the errors caused by the location a caller named
/// (answer them 4xx) from failures of the storage itself (5xx). The `Display` of the client
/// errors is fit for a client: the location and S3's own message, never SDK internals.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object not found: {0}")]
    NotFound(String),
    #[error("invalid object location `{0}`: expected s3://bucket/key")]
    InvalidLocation(String),
    /// The location's bucket does not exist (S3 `NoSuchBucket`).
    #[error("bucket `{bucket}` does not exist (location {location})")]
    NoSuchBucket { location: String, bucket: String },
    /// The object storage refused the location's bucket name or key (S3 `InvalidBucketName`,
    /// `KeyTooLongError`, `InvalidObjectName`, `InvalidArgument`; e.g. a key with a `..`
    /// segment on the embedded endpoint). `message` is S3's message, or its error code.
    #[error("object storage refused the location {location}: {message}")]
    InvalidObjectName { location: String, message: String },
    /// Anything else: the storage failed (unreachable, refused the credentials, answered an
    /// internal error...). `message` carries the SDK's whole error context: log it, never
    /// send it to a client.
    #[error("object storage request failed for {location}: {message}")]
    Request { location: String, message: String },
}

impl StorageError {
    /// True when the error comes from the location the caller named (invalid location, no
    /// such bucket, refused key): retrying will not help, and the caller's client should get a
    /// 4xx. [`StorageError::NotFound`] is not included: whether a missing object is the
    /// caller's mistake or lost data depends on the operation, so callers decide.
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            StorageError::InvalidLocation(_)
                | StorageError::NoSuchBucket { .. }
                | StorageError::InvalidObjectName { .. }
        )
    }
}

/// How to reach one region's object storage.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// None: AWS S3's regional endpoint.
    pub endpoint: Option<String>,
    pub region: String,
    /// None: the AWS default credential chain.
    pub credentials: Option<(String, String)>,
    pub path_style: bool,
}

/// A region's object storage.
#[derive(Clone, Debug)]
pub struct ObjectStore {
    client: aws_sdk_s3::Client,
    /// Which S3 service (endpoint, region, credentials) the client talks to; see
    /// [`ObjectStore::same_service`].
    service: ServiceIdentity,
    /// The peer region whose bucket this is, when it is another region's: every request
    /// passes that link's injected faults first ([`crate::faults`]).
    fault_link: Option<std::sync::Arc<str>>,
}

/// Splits `s3://bucket/key` (also `s3a://`, `s3n://`) into bucket and key.
pub fn parse_location(location: &str) -> Result<(&str, &str), StorageError> {
    let rest = ["s3://", "s3a://", "s3n://"]
        .iter()
        .find_map(|p| location.strip_prefix(p))
        .ok_or_else(|| StorageError::InvalidLocation(location.to_string()))?;
    match rest.split_once('/') {
        Some((bucket, key)) if !bucket.is_empty() => Ok((bucket, key)),
        None if !rest.is_empty() => Ok((rest, "")),
        _ => Err(StorageError::InvalidLocation(location.to_string())),
    }
}

/// The injected fault on the link to a peer region's bucket, as a failed request.
async fn pass_fault_link(
    link: &Option<std::sync::Arc<str>>,
    location: &str,
) -> Result<(), StorageError> {
    match link {
        Some(peer) => crate::faults::gate(peer)
            .await
            .map_err(|e| request_error(location, e)),
        None => Ok(()),
    }
}

fn request_error(location: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Request {
        location: location.to_string(),
        message: e.to_string(),
    }
}

/// Classifies a failed S3 request on `location` by its S3 error code: the ones caused by the
/// location itself become client errors ([`StorageError::is_client_error`]), everything else a
/// [`StorageError::Request`] with the SDK's full error context (for the log).
fn sdk_error<E>(location: &str, e: E) -> StorageError
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    match e.code() {
        Some("NoSuchBucket") => StorageError::NoSuchBucket {
            location: location.to_string(),
            bucket: parse_location(location)
                .map(|(b, _)| b.to_string())
                .unwrap_or_default(),
        },
        Some(
            code @ ("InvalidBucketName" | "KeyTooLongError" | "InvalidObjectName"
            | "InvalidArgument"),
        ) => StorageError::InvalidObjectName {
            location: location.to_string(),
            message: e.message().unwrap_or(code).to_string(),
        },
        _ => request_error(location, aws_sdk_s3::error::DisplayErrorContext(e)),
    }
}

impl ObjectStore {
    pub async fn connect(settings: &S3Settings) -> ObjectStore {
        let mut builder = match &settings.credentials {
            Some((key, secret)) => aws_sdk_s3::config::Builder::new()
                .behavior_version(BehaviorVersion::latest())
                .credentials_provider(Credentials::new(
                    key.clone(),
                    secret.clone(),
                    None,
                    None,
                    "pangolin-config",
                )),
            None => {
                let shared = aws_config::defaults(BehaviorVersion::latest())
                    .region(Region::new(settings.region.clone()))
                    .load()
                    .await;
                aws_sdk_s3::config::Builder::from(&shared)
            }
        };
        builder = builder
            .region(Region::new(settings.region.clone()))
            .force_path_style(settings.path_style)
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            );
        if let Some(ep) = &settings.endpoint {
            builder = builder.endpoint_url(ep.clone());
        }
        ObjectStore {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            service: ServiceIdentity::of(settings),
            fault_link: None,
        }
    }

    /// This store as the bucket of peer region `peer`: its requests pass the injected
    /// faults of the link to `peer` (fault injection, docs/fault-injection.md).
    pub fn through_fault_link(mut self, peer: &str) -> ObjectStore {
        self.fault_link = Some(std::sync::Arc::from(peer));
        self
    }

    /// Creates the bucket unless it exists (embedded endpoint; AWS buckets are provisioned).
    pub async fn ensure_bucket(&self, bucket: &str) -> Result<(), StorageError> {
        pass_fault_link(&self.fault_link, bucket).await?;
        if self
            .client
            .head_bucket()
            .bucket(bucket)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        match self.client.create_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let svc = e.into_service_error();
                if svc.is_bucket_already_owned_by_you() || svc.is_bucket_already_exists() {
                    Ok(())
                } else {
                    Err(request_error(bucket, svc))
                }
            }
        }
    }

    pub async fn put(&self, location: &str, body: Bytes) -> Result<(), StorageError> {
        pass_fault_link(&self.fault_link, location).await?;
        let (bucket, key) = parse_location(location)?;
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| sdk_error(location, e))?;
        Ok(())
    }

    pub async fn get(&self, location: &str) -> Result<Bytes, StorageError> {
        let data = self
            .get_stream(location)
            .await?
            .body
            .collect()
            .await
            .map_err(|e| request_error(location, e))?;
        Ok(data.into_bytes())
    }

    pub async fn exists(&self, location: &str) -> Result<bool, StorageError> {
        pass_fault_link(&self.fault_link, location).await?;
        let (bucket, key) = parse_location(location)?;
        match self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => {
                let svc = e.into_service_error();
                if svc.is_not_found() {
                    Ok(false)
                } else {
                    Err(sdk_error(location, svc))
                }
            }
        }
    }

    pub async fn delete(&self, location: &str) -> Result<(), StorageError> {
        pass_fault_link(&self.fault_link, location).await?;
        let (bucket, key) = parse_location(location)?;
        self.client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| sdk_error(location, e))?;
        Ok(())
    }

    /// Keys (as full `s3://` locations) under a prefix location.
    pub async fn list(&self, prefix_location: &str) -> Result<Vec<String>, StorageError> {
        pass_fault_link(&self.fault_link, prefix_location).await?;
        let (bucket, prefix) = parse_location(prefix_location)?;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let resp = self
                .client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| sdk_error(prefix_location, e))?;
            for obj in resp.contents() {
                if let Some(k) = obj.key() {
                    out.push(format!("s3://{bucket}/{k}"));
                }
            }
            match resp.next_continuation_token() {
                Some(t) if resp.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Deletes every object under a directory location (`.../`). Returns how many.
    pub async fn delete_prefix(&self, dir_location: &str) -> Result<usize, StorageError> {
        let dir = if dir_location.ends_with('/') {
            dir_location.to_string()
        } else {
            format!("{dir_location}/")
        };
        let keys = self.list(&dir).await?;
        for k in &keys {
            self.delete(k).await?;
        }
        Ok(keys.len())
    }
}

/// Size and ETag of an object, from a HEAD request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    /// The ETag without its surrounding quotes, when the service returned one.
    pub etag: Option<String>,
}

impl ObjectInfo {
    /// True if the ETag is a multipart-upload ETag (`<md5-of-md5s>-<parts>`), which depends on
    /// how the object was uploaded and so cannot be compared across differently-written copies.
    pub fn has_multipart_etag(&self) -> bool {
        self.etag.as_deref().is_some_and(|e| e.contains('-'))
    }
}

/// An object's body as a stream, with its size and ETag.
pub struct ObjectStream {
    pub info: ObjectInfo,
    pub body: ByteStream,
}

impl std::fmt::Debug for ObjectStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStream")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// How an object was transferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferMethod {
    /// CopyObject (or UploadPartCopy for objects above 5 GiB) inside one S3 service.
    ServerSide,
    /// One streamed PutObject.
    SinglePut,
    /// A streamed multipart upload with this many parts.
    Multipart { parts: u32 },
}

/// Objects larger than this are uploaded with a multipart upload by
/// [`ObjectStore::put_stream`] / [`ObjectStore::copy_from`].
pub const MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
/// Preferred part size of streamed multipart uploads (S3's minimum is 5 MiB; the part size
/// grows for very large objects so that no upload needs more than 10,000 parts).
pub const MULTIPART_PART_SIZE: u64 = 8 * 1024 * 1024;
/// How many parts of one streamed multipart upload are in flight at once. Memory held per
/// upload is bounded by about `(MULTIPART_PARTS_IN_FLIGHT + 1) * part size`.
pub const MULTIPART_PARTS_IN_FLIGHT: usize = 4;
/// CopyObject's size limit; larger objects are copied server-side part by part.
pub const SERVER_SIDE_COPY_MAX: u64 = 5 * 1024 * 1024 * 1024;
/// Part size for server-side multipart copies (UploadPartCopy) of objects above 5 GiB.
const SERVER_SIDE_COPY_PART_SIZE: u64 = 512 * 1024 * 1024;
const MAX_PARTS: u64 = 10_000;
const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

/// Identity of an S3 service as seen by one [`ObjectStore`]: two stores with the same identity
/// can copy between each other server-side. The secret key is kept only as a SHA-256 digest.
#[derive(Clone, PartialEq, Eq)]
struct ServiceIdentity {
    endpoint: Option<String>,
    region: String,
    access_key: Option<String>,
    secret_digest: Option<[u8; 32]>,
}

impl ServiceIdentity {
    fn of(settings: &S3Settings) -> ServiceIdentity {
        use sha2::Digest;
        ServiceIdentity {
            endpoint: settings
                .endpoint
                .as_ref()
                .map(|e| e.trim_end_matches('/').to_ascii_lowercase()),
            region: settings.region.clone(),
            access_key: settings.credentials.as_ref().map(|(k, _)| k.clone()),
            secret_digest: settings
                .credentials
                .as_ref()
                .map(|(_, secret)| sha2::Sha256::digest(secret.as_bytes()).into()),
        }
    }
}

impl std::fmt::Debug for ServiceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceIdentity")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

/// Characters escaped in the key of an `x-amz-copy-source` header.
const COPY_SOURCE_KEY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn copy_source(bucket: &str, key: &str) -> String {
    format!(
        "{bucket}/{}",
        percent_encoding::utf8_percent_encode(key, COPY_SOURCE_KEY)
    )
}

fn unquote_etag(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

fn size_from(location: &str, length: Option<i64>) -> Result<u64, StorageError> {
    length
        .and_then(|l| u64::try_from(l).ok())
        .ok_or_else(|| request_error(location, "response carries no valid Content-Length"))
}

fn to_i64(location: &str, n: u64) -> Result<i64, StorageError> {
    i64::try_from(n).map_err(|_| request_error(location, format!("size {n} out of range")))
}

/// Part size for a streamed multipart upload of `size` bytes.
fn part_size_for(size: u64) -> u64 {
    let needed = size.div_ceil(MAX_PARTS);
    let mib = 1024 * 1024;
    MULTIPART_PART_SIZE
        .max(needed.div_ceil(mib) * mib)
        .max(MIN_PART_SIZE)
}

impl ObjectStore {
    /// True if `other` talks to the same S3 service with the same credentials (same endpoint,
    /// region and access key), so objects can be copied between the two with CopyObject.
    pub fn same_service(&self, other: &ObjectStore) -> bool {
        self.service == other.service
    }

    /// Size and ETag of an object; `None` if it does not exist.
    pub async fn head(&self, location: &str) -> Result<Option<ObjectInfo>, StorageError> {
        pass_fault_link(&self.fault_link, location).await?;
        let (bucket, key) = parse_location(location)?;
        match self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectInfo {
                size: size_from(location, out.content_length())?,
                etag: out.e_tag().map(unquote_etag),
            })),
            Err(e) => {
                let svc = e.into_service_error();
                if svc.is_not_found() {
                    Ok(None)
                } else {
                    Err(sdk_error(location, svc))
                }
            }
        }
    }

    /// Opens an object for streaming reads.
    pub async fn get_stream(&self, location: &str) -> Result<ObjectStream, StorageError> {
        pass_fault_link(&self.fault_link, location).await?;
        let (bucket, key) = parse_location(location)?;
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                let svc = e.into_service_error();
                if svc.is_no_such_key() {
                    StorageError::NotFound(location.to_string())
                } else {
                    sdk_error(location, svc)
                }
            })?;
        Ok(ObjectStream {
            info: ObjectInfo {
                size: size_from(location, out.content_length())?,
                etag: out.e_tag().map(unquote_etag),
            },
            body: out.body,
        })
    }

    /// Writes an object of exactly `size` bytes from a stream, without holding it in memory:
    /// one PutObject up to [`MULTIPART_THRESHOLD`], otherwise a multipart upload with bounded
    /// part size and at most [`MULTIPART_PARTS_IN_FLIGHT`] parts in flight. A stream that
    /// yields more or fewer than `size` bytes fails the write (and aborts the upload).
    pub async fn put_stream(
        &self,
        location: &str,
        body: ByteStream,
        size: u64,
    ) -> Result<TransferMethod, StorageError> {
        pass_fault_link(&self.fault_link, location).await?;
        let (bucket, key) = parse_location(location)?;
        if size <= MULTIPART_THRESHOLD {
            self.client
                .put_object()
                .bucket(bucket)
                .key(key)
                .content_length(to_i64(location, size)?)
                .body(body)
                .send()
                .await
                .map_err(|e| sdk_error(location, e))?;
            return Ok(TransferMethod::SinglePut);
        }
        let upload_id = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| sdk_error(location, e))?
            .upload_id()
            .map(str::to_string)
            .ok_or_else(|| {
                request_error(location, "CreateMultipartUpload returned no upload id")
            })?;
        let result = self
            .upload_parts(location, bucket, key, &upload_id, body, size)
            .await;
        match result {
            Ok(parts) => {
                let count = u32::try_from(parts.len()).unwrap_or(u32::MAX);
                self.complete_multipart(location, bucket, key, &upload_id, parts)
                    .await?;
                Ok(TransferMethod::Multipart { parts: count })
            }
            Err(e) => {
                self.abort_multipart(location, bucket, key, &upload_id)
                    .await;
                Err(e)
            }
        }
    }

    /// Reads `body` into parts of bounded size and uploads them, a few at a time.
    async fn upload_parts(
        &self,
        location: &str,
        bucket: &str,
        key: &str,
        upload_id: &str,
        mut body: ByteStream,
        size: u64,
    ) -> Result<Vec<aws_sdk_s3::types::CompletedPart>, StorageError> {
        let part_size = usize::try_from(part_size_for(size))
            .map_err(|_| request_error(location, "part size out of range"))?;
        let mut in_flight: tokio::task::JoinSet<
            Result<aws_sdk_s3::types::CompletedPart, StorageError>,
        > = tokio::task::JoinSet::new();
        let mut completed = Vec::new();
        let mut buffer = bytes::BytesMut::with_capacity(part_size);
        let mut part_number: i32 = 1;
        let mut received: u64 = 0;
        loop {
            let chunk = body
                .try_next()
                .await
                .map_err(|e| request_error(location, format!("reading the source body: {e}")))?;
            let done = chunk.is_none();
            if let Some(chunk) = chunk {
                received += chunk.len() as u64;
                if received > size {
                    return Err(request_error(
                        location,
                        format!("source body is longer than the expected {size} bytes"),
                    ));
                }
                buffer.extend_from_slice(&chunk);
            }
            while buffer.len() >= part_size || (done && !buffer.is_empty()) {
                let take = buffer.len().min(part_size);
                let part = buffer.split_to(take).freeze();
                while in_flight.len() >= MULTIPART_PARTS_IN_FLIGHT {
                    completed.push(join_part(location, in_flight.join_next().await)?);
                }
                in_flight.spawn(upload_part(
                    self.client.clone(),
                    location.to_string(),
                    bucket.to_string(),
                    key.to_string(),
                    upload_id.to_string(),
                    part_number,
                    part,
                ));
                part_number += 1;
            }
            if done {
                break;
            }
        }
        if received != size {
            return Err(request_error(
                location,
                format!("source body ended after {received} of {size} bytes"),
            ));
        }
        while !in_flight.is_empty() {
            completed.push(join_part(location, in_flight.join_next().await)?);
        }
        completed.sort_by_key(|p| p.part_number());
        Ok(completed)
    }

    async fn complete_multipart(
        &self,
        location: &str,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: Vec<aws_sdk_s3::types::CompletedPart>,
    ) -> Result<(), StorageError> {
        let upload = aws_sdk_s3::types::CompletedMultipartUpload::builder()
            .set_parts(Some(parts))
            .build();
        if let Err(e) = self
            .client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(upload)
            .send()
            .await
        {
            self.abort_multipart(location, bucket, key, upload_id).await;
            return Err(request_error(
                location,
                aws_sdk_s3::error::DisplayErrorContext(e),
            ));
        }
        Ok(())
    }

    async fn abort_multipart(&self, location: &str, bucket: &str, key: &str, upload_id: &str) {
        if let Err(e) = self
            .client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            tracing::warn!(
                %location,
                upload_id,
                error = %aws_sdk_s3::error::DisplayErrorContext(e),
                "could not abort a failed multipart upload; a bucket lifecycle rule must clean it up"
            );
        }
    }

    /// Streams an object of `size` bytes from `source` (another region's store) into this
    /// store, through this process, without holding the whole object in memory.
    pub async fn copy_from(
        &self,
        source: &ObjectStore,
        source_location: &str,
        dest_location: &str,
        size: u64,
    ) -> Result<TransferMethod, StorageError> {
        let stream = source.get_stream(source_location).await?;
        if stream.info.size != size {
            return Err(request_error(
                source_location,
                format!(
                    "source object has {} bytes, expected {size}",
                    stream.info.size
                ),
            ));
        }
        self.put_stream(dest_location, stream.body, size).await
    }

    /// Copies an object of `size` bytes inside this store's S3 service with CopyObject
    /// (UploadPartCopy parts above 5 GiB); no bytes pass through this process. Use only when
    /// the source store is [`ObjectStore::same_service`] as this one.
    pub async fn server_side_copy(
        &self,
        source_location: &str,
        dest_location: &str,
        size: u64,
    ) -> Result<TransferMethod, StorageError> {
        let (src_bucket, src_key) = parse_location(source_location)?;
        let (bucket, key) = parse_location(dest_location)?;
        let source = copy_source(src_bucket, src_key);
        if size <= SERVER_SIDE_COPY_MAX {
            self.client
                .copy_object()
                .bucket(bucket)
                .key(key)
                .copy_source(source)
                .send()
                .await
                .map_err(|e| {
                    request_error(dest_location, aws_sdk_s3::error::DisplayErrorContext(e))
                })?;
            return Ok(TransferMethod::ServerSide);
        }
        let upload_id = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| request_error(dest_location, aws_sdk_s3::error::DisplayErrorContext(e)))?
            .upload_id()
            .map(str::to_string)
            .ok_or_else(|| {
                request_error(dest_location, "CreateMultipartUpload returned no upload id")
            })?;
        let mut parts = Vec::new();
        let mut offset = 0u64;
        let mut part_number = 1i32;
        while offset < size {
            let end = (offset + SERVER_SIDE_COPY_PART_SIZE).min(size) - 1;
            let out = self
                .client
                .upload_part_copy()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .part_number(part_number)
                .copy_source(&source)
                .copy_source_range(format!("bytes={offset}-{end}"))
                .send()
                .await;
            match out {
                Ok(out) => parts.push(
                    aws_sdk_s3::types::CompletedPart::builder()
                        .part_number(part_number)
                        .set_e_tag(
                            out.copy_part_result()
                                .and_then(|r| r.e_tag())
                                .map(str::to_string),
                        )
                        .build(),
                ),
                Err(e) => {
                    self.abort_multipart(dest_location, bucket, key, &upload_id)
                        .await;
                    return Err(request_error(
                        dest_location,
                        aws_sdk_s3::error::DisplayErrorContext(e),
                    ));
                }
            }
            offset = end + 1;
            part_number += 1;
        }
        let count = u32::try_from(parts.len()).unwrap_or(u32::MAX);
        self.complete_multipart(dest_location, bucket, key, &upload_id, parts)
            .await?;
        Ok(TransferMethod::Multipart { parts: count })
    }
}

async fn upload_part(
    client: aws_sdk_s3::Client,
    location: String,
    bucket: String,
    key: String,
    upload_id: String,
    part_number: i32,
    body: Bytes,
) -> Result<aws_sdk_s3::types::CompletedPart, StorageError> {
    let len = body.len();
    let out = client
        .upload_part()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .part_number(part_number)
        .content_length(to_i64(&location, len as u64)?)
        .body(ByteStream::from(body))
        .send()
        .await
        .map_err(|e| {
            request_error(
                &location,
                format!(
                    "part {part_number}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                ),
            )
        })?;
    Ok(aws_sdk_s3::types::CompletedPart::builder()
        .part_number(part_number)
        .set_e_tag(out.e_tag().map(str::to_string))
        .build())
}

fn join_part(
    location: &str,
    joined: Option<
        Result<Result<aws_sdk_s3::types::CompletedPart, StorageError>, tokio::task::JoinError>,
    >,
) -> Result<aws_sdk_s3::types::CompletedPart, StorageError> {
    match joined {
        Some(Ok(part)) => part,
        Some(Err(e)) => Err(request_error(location, format!("part upload task: {e}"))),
        None => Err(request_error(location, "no part upload in flight")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_split_into_bucket_and_key() {
        assert_eq!(
            parse_location("s3://b/a/c.json").unwrap(),
            ("b", "a/c.json")
        );
        assert_eq!(parse_location("s3a://b/k").unwrap(), ("b", "k"));
        assert!(parse_location("file:///tmp/x").is_err());
        assert!(parse_location("s3:///k").is_err());
    }

    #[test]
    fn part_sizes_stay_within_s3_limits() {
        assert_eq!(part_size_for(40 * 1024 * 1024), MULTIPART_PART_SIZE);
        let huge = 5 * 1024 * 1024 * 1024 * 1024u64; // 5 TiB, S3's object size limit
        let part = part_size_for(huge);
        assert!(huge.div_ceil(part) <= MAX_PARTS);
        assert!(part >= MIN_PART_SIZE);
    }

    #[test]
    fn copy_source_escapes_the_key_but_not_slashes() {
        assert_eq!(
            copy_source("demo", "ab12/ns/t x/data/a+b.parquet"),
            "demo/ab12/ns/t%20x/data/a%2Bb.parquet"
        );
    }

    #[test]
    fn multipart_etags_are_recognised() {
        let info = |etag: &str| ObjectInfo {
            size: 1,
            etag: Some(etag.to_string()),
        };
        assert!(info("9b2cf535f27731c974343645a3985328-3").has_multipart_etag());
        assert!(!info("9b2cf535f27731c974343645a3985328").has_multipart_etag());
    }

    #[test]
    fn same_service_compares_endpoint_region_and_credentials() {
        let settings = |endpoint: &str, key: &str, secret: &str| S3Settings {
            endpoint: Some(endpoint.to_string()),
            region: "us-east-1".to_string(),
            credentials: Some((key.to_string(), secret.to_string())),
            path_style: true,
        };
        let a = ServiceIdentity::of(&settings("http://127.0.0.1:9000/", "k", "TOPSECRET"));
        assert_eq!(
            a,
            ServiceIdentity::of(&settings("http://127.0.0.1:9000", "k", "TOPSECRET"))
        );
        assert_ne!(
            a,
            ServiceIdentity::of(&settings("http://127.0.0.1:9001", "k", "TOPSECRET"))
        );
        assert_ne!(
            a,
            ServiceIdentity::of(&settings("http://127.0.0.1:9000", "k", "OTHER"))
        );
        assert!(!format!("{a:?}").contains("TOPSECRET"));
    }

    #[test]
    fn location_errors_are_client_errors_with_clean_messages() {
        use aws_sdk_s3::error::ErrorMetadata;
        use aws_sdk_s3::operation::get_object::GetObjectError;
        let s3 = |code: &str, message: Option<&str>| {
            let mut m = ErrorMetadata::builder().code(code);
            if let Some(message) = message {
                m = m.message(message);
            }
            GetObjectError::generic(m.build())
        };
        let e = sdk_error(
            "s3://nob/x.json",
            s3("NoSuchBucket", Some("The specified bucket does not exist")),
        );
        assert!(e.is_client_error(), "{e:?}");
        assert!(
            matches!(&e, StorageError::NoSuchBucket { bucket, .. } if bucket == "nob"),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "bucket `nob` does not exist (location s3://nob/x.json)"
        );
        let e = sdk_error(
            "s3://demo/a/../b",
            s3(
                "InvalidArgument",
                Some("the object key has a '..' path segment"),
            ),
        );
        assert!(e.is_client_error(), "{e:?}");
        assert_eq!(
            e.to_string(),
            "object storage refused the location s3://demo/a/../b: the object key has a '..' path segment"
        );
        let e = sdk_error("s3://Bad!/b", s3("InvalidBucketName", None));
        assert!(e.is_client_error(), "{e:?}");
        assert!(e.to_string().ends_with(": InvalidBucketName"), "{e}");
        assert!(!e.to_string().contains("ErrorMetadata"), "{e}");
        // A failure of the storage itself stays a server error.
        let e = sdk_error("s3://demo/x", s3("InternalError", Some("disk on fire")));
        assert!(!e.is_client_error(), "{e:?}");
        assert!(matches!(e, StorageError::Request { .. }), "{e:?}");
        assert!(StorageError::InvalidLocation("x".into()).is_client_error());
        assert!(!StorageError::NotFound("s3://demo/x".into()).is_client_error());
    }
}
