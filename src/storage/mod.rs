//! Object IO: every read and write of table files goes through aws-sdk-s3, whether the
//! endpoint is AWS S3 or Pangolin's embedded S3-compatible endpoint ([`embedded`]).

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

pub mod embedded;

/// Errors of object IO.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object not found: {0}")]
    NotFound(String),
    #[error("invalid object location `{0}`: expected s3://bucket/key")]
    InvalidLocation(String),
    #[error("object storage request failed for {location}: {message}")]
    Request { location: String, message: String },
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

fn request_error(location: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Request {
        location: location.to_string(),
        message: e.to_string(),
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
        }
    }

    /// Creates the bucket unless it exists (embedded endpoint; AWS buckets are provisioned).
    pub async fn ensure_bucket(&self, bucket: &str) -> Result<(), StorageError> {
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
        let (bucket, key) = parse_location(location)?;
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| request_error(location, aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    pub async fn get(&self, location: &str) -> Result<Bytes, StorageError> {
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
                    request_error(location, aws_sdk_s3::error::DisplayErrorContext(svc))
                }
            })?;
        let data = out
            .body
            .collect()
            .await
            .map_err(|e| request_error(location, e))?;
        Ok(data.into_bytes())
    }

    pub async fn exists(&self, location: &str) -> Result<bool, StorageError> {
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
                    Err(request_error(
                        location,
                        aws_sdk_s3::error::DisplayErrorContext(svc),
                    ))
                }
            }
        }
    }

    pub async fn delete(&self, location: &str) -> Result<(), StorageError> {
        let (bucket, key) = parse_location(location)?;
        self.client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| request_error(location, aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    /// Keys (as full `s3://` locations) under a prefix location.
    pub async fn list(&self, prefix_location: &str) -> Result<Vec<String>, StorageError> {
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
                .map_err(|e| {
                    request_error(prefix_location, aws_sdk_s3::error::DisplayErrorContext(e))
                })?;
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
}
