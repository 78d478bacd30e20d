//! Listing a bucket: a depth-first walk of its folder that yields keys in S3's order
//! (lexicographic by bytes), rolls keys up into common prefixes at the delimiter, and stops
//! after `max_keys` entries.
//!
//! Within a folder, entries are visited sorted by their key, a sub-folder counting as
//! `name/`: every key below `a/` then sorts after `a-b` and before `a0`, as in S3.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use s3s::S3Result;

use super::store::{internal, Store};

pub(super) struct ListQuery {
    pub prefix: String,
    pub delimiter: Option<String>,
    /// Only keys (and common prefixes) after this one.
    pub after: Option<String>,
    pub max_keys: usize,
}

pub(super) struct ObjectEntry {
    pub key: String,
    pub size: u64,
    pub last_modified: SystemTime,
    pub etag: String,
}

pub(super) enum Item {
    Object(ObjectEntry),
    Prefix(String),
}

impl Item {
    pub(super) fn key(&self) -> &str {
        match self {
            Item::Object(o) => &o.key,
            Item::Prefix(p) => p,
        }
    }
}

pub(super) struct Listing {
    pub items: Vec<Item>,
    /// More entries follow the last one.
    pub truncated: bool,
}

enum Flow {
    Continue,
    Stop,
}

/// Lists `bucket` (which must exist).
pub(super) fn list(store: &Store, bucket: &str, query: &ListQuery) -> S3Result<Listing> {
    let bucket_dir = store.bucket_dir(bucket);
    // Start in the deepest folder the prefix names: "a/b/c" starts in "a/b/".
    let start_key = match query.prefix.rfind('/') {
        Some(pos) => &query.prefix[..=pos],
        None => "",
    };
    let empty = Listing {
        items: Vec::new(),
        truncated: false,
    };
    if !start_key.is_empty()
        && start_key[..start_key.len() - 1]
            .split('/')
            .any(|s| matches!(s, "" | "." | ".."))
    {
        // No valid key has such a prefix.
        return Ok(empty);
    }
    let start_dir = bucket_dir.join(start_key.trim_end_matches('/'));
    if !start_dir.is_dir() {
        return Ok(empty);
    }
    let mut walker = Walker::new(store, bucket, bucket_dir, query, false);
    walker
        .run(&start_dir, start_key)
        .map_err(|e| internal("list objects", e))?;
    Ok(Listing {
        items: walker.items,
        truncated: walker.truncated,
    })
}

struct Walker<'a> {
    store: &'a Store,
    bucket: &'a str,
    bucket_dir: PathBuf,
    query: &'a ListQuery,
    /// Only check that some entry exists: no stat, no ETag.
    probe: bool,
    /// `after` is itself a common prefix (a continuation from one): keys below it were
    /// already returned rolled up.
    after_is_prefix: bool,
    items: Vec<Item>,
    truncated: bool,
    last_prefix: Option<String>,
}

impl<'a> Walker<'a> {
    fn new(
        store: &'a Store,
        bucket: &'a str,
        bucket_dir: PathBuf,
        query: &'a ListQuery,
        probe: bool,
    ) -> Self {
        let after_is_prefix = match (&query.after, &query.delimiter) {
            (Some(after), Some(delim)) if !delim.is_empty() && after.starts_with(&query.prefix) => {
                let rest = &after[query.prefix.len()..];
                rest.find(delim.as_str()).map(|p| p + delim.len()) == Some(rest.len())
            }
            _ => false,
        };
        Walker {
            store,
            bucket,
            bucket_dir,
            query,
            probe,
            after_is_prefix,
            items: Vec::new(),
            truncated: false,
            last_prefix: None,
        }
    }

    fn run(&mut self, dir: &Path, dir_key: &str) -> io::Result<()> {
        // The start folder's own marker matches when the prefix names exactly that folder.
        if !dir_key.is_empty()
            && dir_key == self.query.prefix
            && self.after_ok(dir_key)
            && self.store.marker_exists(self.bucket, dir_key)
        {
            if let Flow::Stop = self.emit_marker(dir_key) {
                return Ok(());
            }
        }
        self.walk(dir, dir_key).map(|_| ())
    }

    fn after_ok(&self, key: &str) -> bool {
        self.query.after.as_deref().is_none_or(|a| key > a)
    }

    fn delimiter(&self) -> Option<&str> {
        self.query.delimiter.as_deref().filter(|d| !d.is_empty())
    }

    fn walk(&mut self, dir: &Path, dir_key: &str) -> io::Result<Flow> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            // Removed by a concurrent delete.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Flow::Continue),
            Err(e) => return Err(e),
        };
        let mut children = Vec::new();
        for entry in entries {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let ft = entry.file_type()?;
            if ft.is_dir() {
                children.push((format!("{dir_key}{name}/"), true));
            } else if ft.is_file() {
                children.push((format!("{dir_key}{name}"), false));
            }
        }
        children.sort_unstable();
        for (key, is_dir) in children {
            let flow = if is_dir {
                self.visit_dir(&key)?
            } else {
                self.visit_file(&key)?
            };
            if let Flow::Stop = flow {
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Continue)
    }

    fn visit_dir(&mut self, key: &str) -> io::Result<Flow> {
        let prefix = self.query.prefix.as_str();
        if !(key.starts_with(prefix) || prefix.starts_with(key)) {
            return Ok(Flow::Continue);
        }
        if let Some(after) = self.query.after.as_deref() {
            // Every key below sorts before `after`.
            if key < after && !after.starts_with(key) {
                return Ok(Flow::Continue);
            }
            // Every key below was returned rolled up into `after`.
            if self.after_is_prefix && key.starts_with(after) {
                return Ok(Flow::Continue);
            }
        }
        let path = self.bucket_dir.join(key.trim_end_matches('/'));
        if let Some(delim) = self.delimiter() {
            if key.len() > prefix.len() && key.starts_with(prefix) {
                if let Some(pos) = key[prefix.len()..].find(delim) {
                    let cp = key[..prefix.len() + pos + delim.len()].to_string();
                    return self.emit_prefix_for_dir(cp, &path, key);
                }
            }
        }
        if key.starts_with(prefix)
            && self.after_ok(key)
            && self.store.marker_exists(self.bucket, key)
        {
            if let Flow::Stop = self.emit_marker(key) {
                return Ok(Flow::Stop);
            }
        }
        self.walk(&path, key)
    }

    fn visit_file(&mut self, key: &str) -> io::Result<Flow> {
        let prefix = self.query.prefix.as_str();
        if !key.starts_with(prefix) || !self.after_ok(key) {
            return Ok(Flow::Continue);
        }
        if let Some(delim) = self.delimiter() {
            if let Some(pos) = key[prefix.len()..].find(delim) {
                let cp = &key[..prefix.len() + pos + delim.len()];
                if self.last_prefix.as_deref() == Some(cp)
                    || self.query.after.as_deref() == Some(cp)
                {
                    return Ok(Flow::Continue);
                }
                return Ok(self.emit(|| Some(Item::Prefix(cp.to_string()))));
            }
        }
        let path = self.bucket_dir.join(key);
        if self.probe {
            return Ok(self.emit(|| Some(Item::Prefix(key.to_string()))));
        }
        let (store, bucket) = (self.store, self.bucket);
        Ok(self.emit(|| {
            // Gone (deleted concurrently) or replaced by a folder: skip it.
            let mut file = File::open(&path).ok()?;
            let md = file.metadata().ok().filter(|m| m.is_file())?;
            let etag = match store.describe(bucket, key, &mut file, &md) {
                Ok((etag, _)) => etag,
                Err(e) => {
                    tracing::warn!(error = %e, bucket, key, "embedded S3: cannot read object while listing");
                    return None;
                }
            };
            Some(Item::Object(ObjectEntry {
                key: key.to_string(),
                size: md.len(),
                last_modified: md.modified().unwrap_or(UNIX_EPOCH),
                etag,
            }))
        }))
    }

    /// A folder whose keys all roll up into `cp`: one common prefix, when it holds a key
    /// to return (empty leftover folders hold none).
    fn emit_prefix_for_dir(&mut self, cp: String, path: &Path, dir_key: &str) -> io::Result<Flow> {
        if self.last_prefix.as_deref() == Some(cp.as_str()) {
            return Ok(Flow::Continue);
        }
        let after = match self.query.after.as_deref() {
            Some(after) if cp.as_str() == after => return Ok(Flow::Continue),
            // `after` lies inside this prefix: it counts only if a key below follows `after`.
            Some(after) if cp.as_str() < after => Some(after.to_string()),
            _ => None,
        };
        if !self.has_keys(path, dir_key, after)? {
            return Ok(Flow::Continue);
        }
        Ok(self.emit(|| Some(Item::Prefix(cp))))
    }

    fn emit_marker(&mut self, key: &str) -> Flow {
        if self.probe {
            return self.emit(|| Some(Item::Prefix(key.to_string())));
        }
        let (store, bucket) = (self.store, self.bucket);
        self.emit(|| {
            let info = store.marker_info(bucket, key)?;
            Some(Item::Object(ObjectEntry {
                key: key.to_string(),
                size: 0,
                last_modified: info.last_modified,
                etag: info.etag,
            }))
        })
    }

    /// Whether the folder `path` (key `dir_key`) holds a key (after `after`, when given).
    fn has_keys(&self, path: &Path, dir_key: &str, after: Option<String>) -> io::Result<bool> {
        let query = ListQuery {
            prefix: dir_key.to_string(),
            delimiter: None,
            after,
            max_keys: 1,
        };
        let mut probe = Walker::new(
            self.store,
            self.bucket,
            self.bucket_dir.clone(),
            &query,
            true,
        );
        probe.run(path, dir_key)?;
        Ok(!probe.items.is_empty())
    }

    /// Appends the item `make` builds (None: skip), unless the page is full.
    fn emit(&mut self, make: impl FnOnce() -> Option<Item>) -> Flow {
        if self.items.len() >= self.query.max_keys {
            self.truncated = true;
            return Flow::Stop;
        }
        if let Some(item) = make() {
            if let Item::Prefix(p) = &item {
                self.last_prefix = Some(p.clone());
            }
            self.items.push(item);
            if self.probe {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }
}
