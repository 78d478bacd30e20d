//! On-disk layout of the embedded S3 endpoint.
//!
//! ```text
//! <root>/<bucket>/<key>                 object bytes, key segments are directories
//! <root>/.meta/<bucket>/<hh>/<sha>.json object metadata (ETag, content type, ...), by SHA-256 of the key
//! <root>/.uploads/<upload-id>/          multipart uploads: upload.json, part-NNNNN(.json)
//! <root>/.tmp/                          temporary files, emptied at start
//! ```
//!
//! Bucket names never start with '.', so the internal folders never collide with a bucket.
//! Metadata lives outside the bucket folders, so it never shows up in listings and never
//! collides with an object path; keyed by a hash, its file names have a fixed length whatever
//! the key length.
//!
//! Objects are immutable files: a write goes to a temporary file that is fsynced and then
//! renamed over the object path, so a reader (which keeps its open file) sees either the old
//! or the new content, never a mix. The metadata is written before that rename and records
//! the fingerprint (size, mtime, inode) of the file it describes: metadata that does not
//! match the file (crash between the two steps, a file copied in by hand) is ignored and the
//! ETag is recomputed from the content, then stored again.
//!
//! A key ending in '/' is a directory marker (as made by pyarrow and opendal's `create_dir`):
//! its directory exists and its metadata says so. Deleting a key removes the folders it leaves
//! empty, unless they hold a marker.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::fs::{self, File};
use std::hash::{Hash, Hasher};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use s3s::crypto::{Checksum as _, Md5};
use s3s::dto::ETagCondition;
use s3s::{s3_error, S3Error, S3Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// ETag of empty content (directory markers).
pub(super) const EMPTY_MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";
/// S3's key length limit, in bytes.
const MAX_KEY_BYTES: usize = 1024;
/// Usual filesystem limit of one path segment, in bytes.
const MAX_SEGMENT_BYTES: usize = 255;
/// S3's minimum size of every part of a multipart upload but the last.
pub(super) const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
const LOCK_STRIPES: usize = 64;
const COPY_BUFFER: usize = 1 << 20;
/// Multipart uploads older than this are removed at start.
const STALE_UPLOAD: Duration = Duration::from_secs(7 * 24 * 3600);

/// Logs an unexpected IO error and turns it into a 500.
pub(super) fn internal(context: &str, e: io::Error) -> S3Error {
    tracing::error!(error = %e, "embedded S3: {context}");
    S3Error::internal_error(e)
}

pub(super) fn hex_md5(digest: &[u8]) -> String {
    hex::encode(digest)
}

/// Validates a bucket name: 3-63 characters, lowercase letters, digits, '-' and '.',
/// starting and ending with a letter or digit.
pub(super) fn valid_bucket_name(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..")
}

/// Validates an object key: it must map to a path below its bucket folder.
pub(super) fn check_key(key: &str) -> S3Result<()> {
    if key.is_empty() {
        return Err(s3_error!(InvalidArgument, "the object key is empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(s3_error!(
            KeyTooLongError,
            "the object key is longer than {MAX_KEY_BYTES} bytes"
        ));
    }
    if key.contains('\0') {
        return Err(s3_error!(
            InvalidArgument,
            "the object key contains a NUL character"
        ));
    }
    if key.starts_with('/') {
        return Err(s3_error!(InvalidArgument, "the object key starts with '/'"));
    }
    let body = key.strip_suffix('/').unwrap_or(key);
    for segment in body.split('/') {
        match segment {
            "" => {
                return Err(s3_error!(
                    InvalidArgument,
                    "the object key has an empty path segment ('//')"
                ))
            }
            "." | ".." => {
                return Err(s3_error!(
                    InvalidArgument,
                    "the object key has a '{segment}' path segment"
                ))
            }
            s if s.len() > MAX_SEGMENT_BYTES => {
                return Err(s3_error!(
                    KeyTooLongError,
                    "a path segment of the object key is longer than {MAX_SEGMENT_BYTES} bytes"
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// A key ending in '/' is a directory marker.
pub(super) fn is_marker(key: &str) -> bool {
    key.ends_with('/')
}

fn conflict(key: &str) -> S3Error {
    s3_error!(
        InvalidRequest,
        "object key `{key}` conflicts with an existing object or key prefix: the embedded S3 endpoint \
         stores keys as files and folders, so a key cannot also be the folder of another key"
    )
}

/// Identity of one object file: it changes whenever the object is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Fingerprint {
    size: u64,
    mtime_secs: u64,
    mtime_nanos: u32,
    ino: u64,
}

impl Fingerprint {
    pub(super) fn of(md: &fs::Metadata) -> Self {
        let mtime = md
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default();
        #[cfg(unix)]
        let ino = std::os::unix::fs::MetadataExt::ino(md);
        #[cfg(not(unix))]
        let ino = 0;
        Fingerprint {
            size: md.len(),
            mtime_secs: mtime.as_secs(),
            mtime_nanos: mtime.subsec_nanos(),
            ino,
        }
    }
}

/// Standard and user attributes kept with an object.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Attributes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<HashMap<String, String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ObjectMeta {
    key: String,
    etag: String,
    /// The file this metadata describes; None for a directory marker.
    #[serde(default)]
    fingerprint: Option<Fingerprint>,
    #[serde(default)]
    attrs: Attributes,
}

/// What a read needs to know about an object.
#[derive(Debug, Clone)]
pub(super) struct ObjectInfo {
    pub size: u64,
    pub last_modified: SystemTime,
    pub etag: String,
    pub attrs: Attributes,
}

/// Preconditions of a write (If-Match / If-None-Match), checked atomically with the commit.
#[derive(Debug, Default, Clone)]
pub(super) struct WriteConditions {
    pub if_match: Option<ETagCondition>,
    pub if_none_match: Option<ETagCondition>,
}

impl WriteConditions {
    fn is_empty(&self) -> bool {
        self.if_match.is_none() && self.if_none_match.is_none()
    }

    pub(super) fn check(&self, current_etag: Option<&str>) -> S3Result<()> {
        if let Some(cond) = &self.if_none_match {
            let hit = match (cond, current_etag) {
                (_, None) => false,
                (ETagCondition::Any, Some(_)) => true,
                (ETagCondition::ETag(e), Some(cur)) => e.value() == cur,
            };
            if hit {
                return Err(s3_error!(
                    PreconditionFailed,
                    "At least one of the pre-conditions you specified did not hold"
                ));
            }
        }
        if let Some(cond) = &self.if_match {
            let ok = match (cond, current_etag) {
                (_, None) => false,
                (ETagCondition::Any, Some(_)) => true,
                (ETagCondition::ETag(e), Some(cur)) => e.value() == cur,
            };
            if !ok {
                return Err(s3_error!(
                    PreconditionFailed,
                    "At least one of the pre-conditions you specified did not hold"
                ));
            }
        }
        Ok(())
    }
}

/// A file under `.tmp`, removed on drop unless it was renamed into place.
pub(super) struct TempPath {
    path: PathBuf,
    persisted: bool,
}

impl TempPath {
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    fn persist_to(mut self, dest: &Path) -> io::Result<()> {
        fs::rename(&self.path, dest)?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A multipart upload in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct UploadInfo {
    pub bucket: String,
    pub key: String,
    #[serde(default)]
    pub attrs: Attributes,
    #[serde(default)]
    pub initiated_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct PartInfo {
    pub etag: String,
    pub size: u64,
}

/// One uploaded part, as listed by ListParts.
pub(super) struct PartEntry {
    pub number: i32,
    pub info: PartInfo,
    pub last_modified: SystemTime,
}

pub(super) struct Store {
    root: PathBuf,
    tmp_dir: PathBuf,
    meta_dir: PathBuf,
    uploads_dir: PathBuf,
    /// Striped per-key locks around commits, deletes and metadata repair.
    locks: Vec<Mutex<()>>,
}

impl Store {
    /// Opens (creating if needed) the store at `root` and empties its temporary folder.
    pub(super) fn open(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root)?;
        let root = root.canonicalize()?;
        let tmp_dir = root.join(".tmp");
        match fs::remove_dir_all(&tmp_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        fs::create_dir_all(&tmp_dir)?;
        let meta_dir = root.join(".meta");
        fs::create_dir_all(&meta_dir)?;
        let uploads_dir = root.join(".uploads");
        fs::create_dir_all(&uploads_dir)?;
        remove_stale_uploads(&uploads_dir);
        Ok(Store {
            root,
            tmp_dir,
            meta_dir,
            uploads_dir,
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
        })
    }

    fn lock(&self, bucket: &str, key: &str) -> MutexGuard<'_, ()> {
        let mut h = DefaultHasher::new();
        (bucket, key).hash(&mut h);
        let stripe = &self.locks[(h.finish() as usize) % self.locks.len()];
        stripe
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    // ---- paths ----------------------------------------------------------------------------

    pub(super) fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.root.join(bucket)
    }

    /// Path of a (validated) key; a directory marker maps to its folder.
    pub(super) fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.bucket_dir(bucket).join(key.trim_end_matches('/'))
    }

    fn meta_path(&self, bucket: &str, key: &str) -> PathBuf {
        let digest = hex::encode(Sha256::digest(key.as_bytes()));
        self.meta_dir
            .join(bucket)
            .join(&digest[..2])
            .join(format!("{digest}.json"))
    }

    /// Creates an empty temporary file.
    pub(super) fn temp_file(&self) -> io::Result<(TempPath, File)> {
        let path = self.tmp_dir.join(Uuid::new_v4().simple().to_string());
        let file = File::options().write(true).create_new(true).open(&path)?;
        Ok((
            TempPath {
                path,
                persisted: false,
            },
            file,
        ))
    }

    fn write_json_atomic(&self, dest: &Path, value: &impl Serialize) -> io::Result<()> {
        let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
        let (tmp, mut file) = self.temp_file()?;
        file.write_all(&bytes)?;
        drop(file);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        tmp.persist_to(dest)
    }

    // ---- buckets --------------------------------------------------------------------------

    /// Fails with NoSuchBucket unless the bucket exists.
    pub(super) fn check_bucket(&self, bucket: &str) -> S3Result<PathBuf> {
        if !valid_bucket_name(bucket) {
            return Err(s3_error!(
                NoSuchBucket,
                "The specified bucket does not exist"
            ));
        }
        let dir = self.bucket_dir(bucket);
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(s3_error!(
                NoSuchBucket,
                "The specified bucket does not exist"
            ))
        }
    }

    pub(super) fn list_buckets(&self) -> S3Result<Vec<(String, SystemTime)>> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.root).map_err(|e| internal("list buckets", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| internal("list buckets", e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !valid_bucket_name(&name) {
                continue;
            }
            let Ok(md) = entry.metadata() else { continue };
            if !md.is_dir() {
                continue;
            }
            let created = md
                .created()
                .or_else(|_| md.modified())
                .unwrap_or(UNIX_EPOCH);
            out.push((name, created));
        }
        out.sort();
        Ok(out)
    }

    pub(super) fn create_bucket(&self, bucket: &str) -> S3Result<()> {
        if !valid_bucket_name(bucket) {
            return Err(s3_error!(
                InvalidBucketName,
                "The specified bucket is not valid"
            ));
        }
        match fs::create_dir(self.bucket_dir(bucket)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(s3_error!(
                BucketAlreadyOwnedByYou,
                "Your previous request to create the named bucket succeeded and you already own it"
            )),
            Err(e) => Err(internal("create bucket", e)),
        }
    }

    /// Deletes an empty bucket (folders left without objects do not count).
    pub(super) fn delete_bucket(&self, bucket: &str) -> S3Result<()> {
        let dir = self.check_bucket(bucket)?;
        let not_empty = || {
            s3_error!(
                BucketNotEmpty,
                "The bucket you tried to delete is not empty"
            )
        };
        if self
            .remove_empty_tree(bucket, &dir, "")
            .map_err(|e| internal("delete bucket", e))?
        {
            return Err(not_empty());
        }
        match fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => return Err(not_empty()),
            Err(e) => return Err(internal("delete bucket", e)),
        }
        match fs::remove_dir_all(self.meta_dir.join(bucket)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(error = %e, bucket, "embedded S3: cannot remove bucket metadata")
            }
        }
        Ok(())
    }

    /// Removes the empty folders below `dir`; true when an object (or marker) was found.
    fn remove_empty_tree(&self, bucket: &str, dir: &Path, dir_key: &str) -> io::Result<bool> {
        let mut found = false;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let ft = entry.file_type()?;
            if !ft.is_dir() {
                return Ok(true);
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let sub_key = format!("{dir_key}{name}/");
            if self.marker_exists(bucket, &sub_key)
                || self.remove_empty_tree(bucket, &entry.path(), &sub_key)?
            {
                found = true;
                continue;
            }
            match fs::remove_dir(entry.path()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => found = true,
                Err(e) => return Err(e),
            }
        }
        Ok(found)
    }

    // ---- metadata -------------------------------------------------------------------------

    fn read_meta(&self, bucket: &str, key: &str) -> Option<ObjectMeta> {
        let path = self.meta_path(bucket, key);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "embedded S3: cannot read object metadata");
                return None;
            }
        };
        match serde_json::from_slice::<ObjectMeta>(&bytes) {
            Ok(m) if m.key == key => Some(m),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "embedded S3: corrupt object metadata");
                None
            }
        }
    }

    fn write_meta(&self, bucket: &str, meta: &ObjectMeta) -> io::Result<()> {
        self.write_json_atomic(&self.meta_path(bucket, &meta.key), meta)
    }

    fn remove_meta(&self, bucket: &str, key: &str) -> io::Result<()> {
        match fs::remove_file(self.meta_path(bucket, key)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Whether the directory marker `dir_key` (ending in '/') exists.
    pub(super) fn marker_exists(&self, bucket: &str, dir_key: &str) -> bool {
        self.meta_path(bucket, dir_key).is_file()
    }

    /// The marker `dir_key`'s info, when it exists.
    pub(super) fn marker_info(&self, bucket: &str, dir_key: &str) -> Option<ObjectInfo> {
        let path = self.meta_path(bucket, dir_key);
        let last_modified = fs::metadata(&path).and_then(|m| m.modified()).ok()?;
        let meta = self.read_meta(bucket, dir_key)?;
        if !self.object_path(bucket, dir_key).is_dir() {
            return None;
        }
        Some(ObjectInfo {
            size: 0,
            last_modified,
            etag: EMPTY_MD5.to_string(),
            attrs: meta.attrs,
        })
    }

    /// ETag and attributes of the object file `file` (opened from `key`'s path): from its
    /// metadata when that describes this very file, else computed from the content (the
    /// file is left positioned at its start) and stored again.
    pub(super) fn describe(
        &self,
        bucket: &str,
        key: &str,
        file: &mut File,
        md: &fs::Metadata,
    ) -> io::Result<(String, Attributes)> {
        self.describe_inner(bucket, key, file, md, false)
    }

    fn describe_inner(
        &self,
        bucket: &str,
        key: &str,
        file: &mut File,
        md: &fs::Metadata,
        lock_held: bool,
    ) -> io::Result<(String, Attributes)> {
        let fp = Fingerprint::of(md);
        if let Some(meta) = self.read_meta(bucket, key) {
            if meta.fingerprint == Some(fp) {
                return Ok((meta.etag, meta.attrs));
            }
        }
        let etag = md5_of(file)?;
        file.seek(SeekFrom::Start(0))?;
        // Store it for next time, unless the object was replaced meanwhile.
        let _guard = (!lock_held).then(|| self.lock(bucket, key));
        let current = fs::metadata(self.object_path(bucket, key)).map(|m| Fingerprint::of(&m));
        if current.ok() == Some(fp) {
            let meta = ObjectMeta {
                key: key.to_string(),
                etag: etag.clone(),
                fingerprint: Some(fp),
                attrs: Attributes::default(),
            };
            if let Err(e) = self.write_meta(bucket, &meta) {
                tracing::warn!(error = %e, bucket, key, "embedded S3: cannot store recomputed metadata");
            }
        }
        Ok((etag, Attributes::default()))
    }

    /// Opens an object for reading. The file is None for a directory marker.
    pub(super) fn open_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> S3Result<(Option<File>, ObjectInfo)> {
        self.open_object_inner(bucket, key, false)
    }

    fn open_object_inner(
        &self,
        bucket: &str,
        key: &str,
        lock_held: bool,
    ) -> S3Result<(Option<File>, ObjectInfo)> {
        self.check_bucket(bucket)?;
        let no_such_key = || s3_error!(NoSuchKey, "The specified key does not exist.");
        if is_marker(key) {
            return self
                .marker_info(bucket, key)
                .map(|info| (None, info))
                .ok_or_else(no_such_key);
        }
        let mut file = match File::open(self.object_path(bucket, key)) {
            Ok(f) => f,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                return Err(no_such_key())
            }
            Err(e) => return Err(internal("open object", e)),
        };
        let md = file.metadata().map_err(|e| internal("stat object", e))?;
        if !md.is_file() {
            return Err(no_such_key());
        }
        let (etag, attrs) = self
            .describe_inner(bucket, key, &mut file, &md, lock_held)
            .map_err(|e| internal("read object", e))?;
        let last_modified = md.modified().unwrap_or(UNIX_EPOCH);
        Ok((
            Some(file),
            ObjectInfo {
                size: md.len(),
                last_modified,
                etag,
                attrs,
            },
        ))
    }

    /// The current ETag of a key, None when it does not exist (called with the key's lock held).
    fn current_etag(&self, bucket: &str, key: &str) -> S3Result<Option<String>> {
        match self.open_object_inner(bucket, key, true) {
            Ok((_, info)) => Ok(Some(info.etag)),
            Err(e) if *e.code() == s3s::S3ErrorCode::NoSuchKey => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Checks write preconditions ahead of a write (they are checked again at its commit).
    pub(super) fn precheck(
        &self,
        bucket: &str,
        key: &str,
        conditions: &WriteConditions,
    ) -> S3Result<()> {
        self.check_bucket(bucket)?;
        if conditions.is_empty() {
            return Ok(());
        }
        let _guard = self.lock(bucket, key);
        conditions.check(self.current_etag(bucket, key)?.as_deref())
    }

    // ---- writes ---------------------------------------------------------------------------

    /// Moves a complete, fsynced temporary file into place as `key`, after writing its
    /// metadata. Returns the object's last-modified time.
    pub(super) fn commit(
        &self,
        bucket: &str,
        key: &str,
        tmp: TempPath,
        etag: String,
        attrs: Attributes,
        conditions: &WriteConditions,
    ) -> S3Result<SystemTime> {
        let md = fs::metadata(tmp.path()).map_err(|e| internal("stat temporary file", e))?;
        let meta = ObjectMeta {
            key: key.to_string(),
            etag,
            fingerprint: Some(Fingerprint::of(&md)),
            attrs,
        };
        let dest = self.object_path(bucket, key);

        let _guard = self.lock(bucket, key);
        self.check_bucket(bucket)?;
        if !conditions.is_empty() {
            conditions.check(self.current_etag(bucket, key)?.as_deref())?;
        }
        self.write_meta(bucket, &meta)
            .map_err(|e| internal("write object metadata", e))?;
        let mut tmp = Some(tmp);
        for attempt in 0.. {
            self.make_parent(bucket, key, &dest)?;
            match fs::rename(tmp.as_ref().expect("temporary file").path(), &dest) {
                Ok(()) => {
                    if let Some(mut t) = tmp.take() {
                        t.persisted = true;
                    }
                    break;
                }
                // A concurrent delete removed the (then empty) parent folder: make it again.
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < 8 => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::IsADirectory | io::ErrorKind::DirectoryNotEmpty
                    ) || dest.is_dir() =>
                {
                    // An empty leftover folder may be replaced; a folder with content may not.
                    let marker = format!("{key}/");
                    if attempt < 8
                        && !self.marker_exists(bucket, &marker)
                        && fs::remove_dir(&dest).is_ok()
                    {
                        continue;
                    }
                    let _ = self.remove_meta(bucket, key);
                    return Err(conflict(key));
                }
                Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
                    let _ = self.remove_meta(bucket, key);
                    return Err(conflict(key));
                }
                Err(e) => return Err(internal("rename object into place", e)),
            }
        }
        Ok(md.modified().unwrap_or_else(|_| SystemTime::now()))
    }

    fn make_parent(&self, bucket: &str, key: &str, dest: &Path) -> S3Result<()> {
        let Some(parent) = dest.parent() else {
            return Ok(());
        };
        match fs::create_dir_all(parent) {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::AlreadyExists | io::ErrorKind::NotADirectory
                ) =>
            {
                let _ = self.remove_meta(bucket, key);
                Err(conflict(key))
            }
            Err(e) => Err(internal("create object folder", e)),
        }
    }

    /// Creates the directory marker `key` (ending in '/').
    pub(super) fn put_marker(
        &self,
        bucket: &str,
        key: &str,
        attrs: Attributes,
        conditions: &WriteConditions,
    ) -> S3Result<SystemTime> {
        let dir = self.object_path(bucket, key);
        let _guard = self.lock(bucket, key);
        self.check_bucket(bucket)?;
        if !conditions.is_empty() {
            conditions.check(self.marker_exists(bucket, key).then_some(EMPTY_MD5))?;
        }
        match fs::create_dir_all(&dir) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::AlreadyExists | io::ErrorKind::NotADirectory
                ) =>
            {
                return Err(conflict(key))
            }
            Err(e) => return Err(internal("create marker folder", e)),
        }
        let meta = ObjectMeta {
            key: key.to_string(),
            etag: EMPTY_MD5.to_string(),
            fingerprint: None,
            attrs,
        };
        self.write_meta(bucket, &meta)
            .map_err(|e| internal("write marker metadata", e))?;
        Ok(SystemTime::now())
    }

    /// Deletes a key (no error when it does not exist) and the folders it leaves empty.
    pub(super) fn delete_object(&self, bucket: &str, key: &str) -> S3Result<()> {
        let path = self.object_path(bucket, key);
        let _guard = self.lock(bucket, key);
        if is_marker(key) {
            self.remove_meta(bucket, key)
                .map_err(|e| internal("delete marker", e))?;
            // Fails harmlessly when the folder still has content.
            let _ = fs::remove_dir(&path);
        } else {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound
                            | io::ErrorKind::NotADirectory
                            | io::ErrorKind::IsADirectory
                    ) || path.is_dir() => {}
                Err(e) => return Err(internal("delete object", e)),
            }
            self.remove_meta(bucket, key)
                .map_err(|e| internal("delete object metadata", e))?;
        }
        self.prune_parents(bucket, key);
        Ok(())
    }

    /// Removes the empty folders above `key`, up to the bucket folder or a directory marker.
    fn prune_parents(&self, bucket: &str, key: &str) {
        let bucket_dir = self.bucket_dir(bucket);
        let mut k = key.trim_end_matches('/');
        while let Some(pos) = k.rfind('/') {
            let dir_key = &k[..pos];
            if self.marker_exists(bucket, &format!("{dir_key}/")) {
                break;
            }
            match fs::remove_dir(bucket_dir.join(dir_key)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => break,
            }
            k = dir_key;
        }
    }

    // ---- multipart uploads ----------------------------------------------------------------

    pub(super) fn create_upload(&self, info: &UploadInfo) -> S3Result<Uuid> {
        let id = Uuid::new_v4();
        let dir = self.uploads_dir.join(id.to_string());
        fs::create_dir_all(&dir).map_err(|e| internal("create upload", e))?;
        self.write_json_atomic(&dir.join("upload.json"), info)
            .map_err(|e| internal("create upload", e))?;
        Ok(id)
    }

    /// The folder and description of an upload, checked against its bucket and key.
    pub(super) fn load_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> S3Result<(PathBuf, UploadInfo)> {
        let no_such_upload = || {
            s3_error!(
                NoSuchUpload,
                "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."
            )
        };
        let id = Uuid::parse_str(upload_id).map_err(|_| no_such_upload())?;
        let dir = self.uploads_dir.join(id.to_string());
        let bytes = match fs::read(dir.join("upload.json")) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(no_such_upload()),
            Err(e) => return Err(internal("read upload", e)),
        };
        let info: UploadInfo = serde_json::from_slice(&bytes)
            .map_err(|e| internal("read upload", io::Error::other(e)))?;
        if info.bucket != bucket || info.key != key {
            return Err(no_such_upload());
        }
        Ok((dir, info))
    }

    fn part_path(dir: &Path, number: i32) -> PathBuf {
        dir.join(format!("part-{number:05}"))
    }

    /// Stores an uploaded part (complete temporary file).
    pub(super) fn store_part(
        &self,
        dir: &Path,
        number: i32,
        tmp: TempPath,
        info: &PartInfo,
    ) -> S3Result<()> {
        let gone = || s3_error!(NoSuchUpload, "The specified upload does not exist.");
        if !dir.is_dir() {
            return Err(gone());
        }
        let part = Self::part_path(dir, number);
        let mut info_path = part.clone().into_os_string();
        info_path.push(".json");
        self.write_json_atomic(Path::new(&info_path), info)
            .map_err(|e| internal("store part", e))?;
        match tmp.persist_to(&part) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(gone()),
            Err(e) => Err(internal("store part", e)),
        }
    }

    pub(super) fn list_parts(&self, dir: &Path) -> S3Result<Vec<PartEntry>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| internal("list parts", e))? {
            let entry = entry.map_err(|e| internal("list parts", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(number) = name
                .strip_prefix("part-")
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(md) = entry.metadata() else { continue };
            let mut info_path = entry.path().into_os_string();
            info_path.push(".json");
            let info = fs::read(&info_path)
                .ok()
                .and_then(|b| serde_json::from_slice::<PartInfo>(&b).ok())
                .filter(|i| i.size == md.len());
            let info = match info {
                Some(i) => i,
                None => {
                    let mut f = File::open(entry.path()).map_err(|e| internal("list parts", e))?;
                    PartInfo {
                        etag: md5_of(&mut f).map_err(|e| internal("list parts", e))?,
                        size: md.len(),
                    }
                }
            };
            out.push(PartEntry {
                number,
                info,
                last_modified: md.modified().unwrap_or(UNIX_EPOCH),
            });
        }
        out.sort_by_key(|p| p.number);
        Ok(out)
    }

    /// Checks the listed parts (ascending numbers, optional expected ETags) of an upload
    /// before assembling them: all exist with the listed ETags, and all but the last are
    /// big enough. Returns the total size.
    pub(super) fn check_parts(&self, dir: &Path, parts: &[(i32, Option<String>)]) -> S3Result<u64> {
        let mut sizes = Vec::with_capacity(parts.len());
        for (number, expected) in parts {
            let path = Self::part_path(dir, *number);
            let size = match fs::metadata(&path) {
                Ok(md) => md.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(invalid_part(*number, "was not uploaded"))
                }
                Err(e) => return Err(internal("check upload parts", e)),
            };
            let mut info_path = path.into_os_string();
            info_path.push(".json");
            let stored = fs::read(&info_path)
                .ok()
                .and_then(|b| serde_json::from_slice::<PartInfo>(&b).ok());
            if let Some(stored) = stored.filter(|p| p.size == size) {
                if !etags_match(expected, &stored.etag) {
                    return Err(invalid_part(*number, "has another ETag"));
                }
            }
            sizes.push((*number, size));
        }
        if let Some((number, size)) = sizes[..sizes.len().saturating_sub(1)]
            .iter()
            .find(|(_, size)| *size < MIN_PART_SIZE)
        {
            return Err(s3_error!(
                EntityTooSmall,
                "Your proposed upload is smaller than the minimum allowed object size: part {number} has {size} bytes"
            ));
        }
        Ok(sizes.iter().map(|(_, size)| size).sum())
    }

    /// Concatenates the listed parts into a fsynced temporary file, checking their ETags.
    /// Returns it with the multipart ETag and the total size.
    pub(super) fn assemble(
        &self,
        dir: &Path,
        parts: &[(i32, Option<String>)],
    ) -> S3Result<(TempPath, String, u64)> {
        let (tmp, file) = self
            .temp_file()
            .map_err(|e| internal("assemble upload", e))?;
        let mut out = io::BufWriter::with_capacity(COPY_BUFFER, file);
        let mut buf = vec![0u8; COPY_BUFFER];
        let mut digests = Vec::with_capacity(parts.len() * 16);
        let mut total = 0u64;
        for (number, expected) in parts {
            let mut part = match File::open(Self::part_path(dir, *number)) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(invalid_part(*number, "was not uploaded"))
                }
                Err(e) => return Err(internal("assemble upload", e)),
            };
            let mut md5 = Md5::new();
            loop {
                let n = part
                    .read(&mut buf)
                    .map_err(|e| internal("assemble upload", e))?;
                if n == 0 {
                    break;
                }
                md5.update(&buf[..n]);
                out.write_all(&buf[..n])
                    .map_err(|e| internal("assemble upload", e))?;
                total += n as u64;
            }
            let digest = md5.finalize();
            if !etags_match(expected, &hex_md5(&digest)) {
                return Err(invalid_part(*number, "has another ETag"));
            }
            digests.extend_from_slice(&digest);
        }
        let file = out
            .into_inner()
            .map_err(|e| internal("assemble upload", e.into_error()))?;
        file.sync_all()
            .map_err(|e| internal("assemble upload", e))?;
        drop(file);
        let etag = format!("{}-{}", hex_md5(&Md5::checksum(&digests)), parts.len());
        Ok((tmp, etag, total))
    }

    pub(super) fn remove_upload(&self, dir: &Path) -> S3Result<()> {
        match fs::remove_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(s3_error!(
                NoSuchUpload,
                "The specified upload does not exist."
            )),
            Err(e) => Err(internal("remove upload", e)),
        }
    }

    // ---- copy -----------------------------------------------------------------------------

    /// Copies an open object file into a fsynced temporary file.
    pub(super) fn copy_to_temp(&self, mut src: File) -> S3Result<TempPath> {
        let (tmp, mut file) = self.temp_file().map_err(|e| internal("copy object", e))?;
        io::copy(&mut src, &mut file).map_err(|e| internal("copy object", e))?;
        file.sync_all().map_err(|e| internal("copy object", e))?;
        Ok(tmp)
    }
}

fn invalid_part(number: i32, why: &str) -> S3Error {
    s3_error!(
        InvalidPart,
        "One or more of the specified parts could not be found or did not match: part {number} {why}"
    )
}

fn etags_match(expected: &Option<String>, actual: &str) -> bool {
    expected
        .as_deref()
        .is_none_or(|e| e.eq_ignore_ascii_case(actual))
}

/// Removes the multipart uploads started more than [`STALE_UPLOAD`] ago (never completed
/// nor aborted: a client crashed), and unreadable ones.
fn remove_stale_uploads(uploads_dir: &Path) {
    let Ok(entries) = fs::read_dir(uploads_dir) else {
        return;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    for entry in entries.flatten() {
        let started = fs::read(entry.path().join("upload.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<UploadInfo>(&b).ok())
            .map(|u| u.initiated_secs);
        let stale = started.is_none_or(|t| now.saturating_sub(t) > STALE_UPLOAD.as_secs());
        if stale {
            if let Err(e) = fs::remove_dir_all(entry.path()) {
                tracing::warn!(error = %e, path = %entry.path().display(), "embedded S3: cannot remove a stale upload");
            }
        }
    }
}

/// Hex MD5 of a file's content from its current position.
fn md5_of(file: &mut File) -> io::Result<String> {
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; COPY_BUFFER];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
    }
    Ok(hex_md5(&md5.finalize()))
}

/// Time truncated to whole seconds (HTTP date precision).
pub(super) fn to_secs(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(check_key("a/b/c.parquet").is_ok());
        assert!(check_key("a/b/").is_ok());
        assert!(check_key(&"x/".repeat(300)).is_ok());
        for bad in ["", "/a", "a//b", "a/../b", "..", "a/./b", "a\0b", "//"] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            *check_key(&"a".repeat(1025)).unwrap_err().code(),
            s3s::S3ErrorCode::KeyTooLongError
        );
        assert_eq!(
            *check_key(&"a".repeat(256)).unwrap_err().code(),
            s3s::S3ErrorCode::KeyTooLongError
        );
    }

    #[test]
    fn bucket_names() {
        for ok in ["abc", "my-bucket", "a.b.c", "warehouse1"] {
            assert!(valid_bucket_name(ok), "{ok}");
        }
        for bad in [
            "ab",
            ".abc",
            "abc.",
            "-abc",
            "ABC",
            "a_b",
            "a..b",
            &"a".repeat(64),
        ] {
            assert!(!valid_bucket_name(bad), "{bad}");
        }
    }
}
