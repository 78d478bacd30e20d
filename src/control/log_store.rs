//! The persistent Raft log of one voter: entries, vote, committed log id and last purged log
//! id in a dedicated SQLite file (`<raft_dir>/raft.db`).
//!
//! The file runs in WAL mode with `synchronous = FULL`, so a transaction is on disk when its
//! commit returns; [`RaftLogStorage::append`] reports the entries flushed only after that.
//! One connection serialises every access. Entries and metadata are stored as JSON text.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    Entry, LogId, OptionalSend, RaftLogId, RaftLogReader, StorageError, StorageIOError, Vote,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::types::{NodeId, TypeConfig};

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_PURGED: &str = "last_purged";

/// Failure to open the log file.
#[derive(Debug, thiserror::Error)]
#[error("raft log {path}: {source}")]
pub struct OpenLogError {
    path: String,
    #[source]
    source: sqlx::Error,
}

/// The SQLite-backed Raft log. Cheap to clone (a pool handle); clones share the file.
#[derive(Clone, Debug)]
pub struct LogStore {
    pool: SqlitePool,
}

type StoreResult<T> = Result<T, StorageError<NodeId>>;

fn read_err(e: &(impl std::error::Error + 'static)) -> StorageError<NodeId> {
    StorageIOError::read_logs(e).into()
}

fn write_err(e: &(impl std::error::Error + 'static)) -> StorageError<NodeId> {
    StorageIOError::write_logs(e).into()
}

/// `[start, end)` of a range of log indexes, clamped to SQLite's integer range.
fn index_bounds(range: &impl RangeBounds<u64>) -> (i64, i64) {
    let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let start = match range.start_bound() {
        Bound::Included(s) => clamp(*s),
        Bound::Excluded(s) => clamp(s.saturating_add(1)),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => clamp(e.saturating_add(1)),
        Bound::Excluded(e) => clamp(*e),
        Bound::Unbounded => i64::MAX,
    };
    (start, end)
}

fn index_i64(index: u64) -> i64 {
    i64::try_from(index).unwrap_or(i64::MAX)
}

impl LogStore {
    /// Opens (creating if needed) `<dir>/raft.db`.
    pub async fn open(dir: &Path) -> Result<LogStore, OpenLogError> {
        let path = dir.join("raft.db");
        let wrap = |source| OpenLogError {
            path: path.display().to_string(),
            source,
        };
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(wrap)?;
        for ddl in [
            "CREATE TABLE IF NOT EXISTS raft_log (idx INTEGER PRIMARY KEY, entry TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS raft_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        ] {
            sqlx::query(ddl).execute(&pool).await.map_err(wrap)?;
        }
        Ok(LogStore { pool })
    }

    /// Closes the file (after the Raft task that used it has stopped).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> StoreResult<Option<T>> {
        let row: Option<(String,)> = sqlx::query_as("SELECT value FROM raft_meta WHERE key = ?1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| read_err(&e))?;
        match row {
            None => Ok(None),
            Some((text,)) => serde_json::from_str(&text).map_err(|e| read_err(&e)),
        }
    }

    async fn write_meta<T: serde::Serialize>(&self, key: &str, value: &T) -> StoreResult<()> {
        let text = serde_json::to_string(value).map_err(|e| write_err(&e))?;
        sqlx::query(
            "INSERT INTO raft_meta (key, value) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(text)
        .execute(&self.pool)
        .await
        .map_err(|e| write_err(&e))?;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry<TypeConfig>>> {
        let (start, end) = index_bounds(&range);
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT entry FROM raft_log WHERE idx >= ?1 AND idx < ?2 ORDER BY idx")
                .bind(start)
                .bind(end)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| read_err(&e))?;
        let mut entries = Vec::with_capacity(rows.len());
        for (text,) in rows {
            entries.push(serde_json::from_str(&text).map_err(|e| read_err(&e))?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StoreResult<LogState<TypeConfig>> {
        let last_purged: Option<LogId<NodeId>> = self.read_meta(KEY_PURGED).await?;
        let last: Option<(String,)> =
            sqlx::query_as("SELECT entry FROM raft_log ORDER BY idx DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| read_err(&e))?;
        let last_log_id = match last {
            Some((text,)) => {
                let entry: Entry<TypeConfig> =
                    serde_json::from_str(&text).map_err(|e| read_err(&e))?;
                Some(*entry.get_log_id())
            }
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StoreResult<()> {
        self.write_meta(KEY_VOTE, vote)
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> StoreResult<Option<Vote<NodeId>>> {
        self.read_meta(KEY_VOTE)
            .await
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StoreResult<()> {
        self.write_meta(KEY_COMMITTED, &committed).await
    }

    async fn read_committed(&mut self) -> StoreResult<Option<LogId<NodeId>>> {
        Ok(self
            .read_meta::<Option<LogId<NodeId>>>(KEY_COMMITTED)
            .await?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StoreResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows = Vec::new();
        for e in entries {
            let text = serde_json::to_string(&e).map_err(|err| write_err(&err))?;
            rows.push((index_i64(e.get_log_id().index), text));
        }
        let result: Result<(), sqlx::Error> = async {
            let mut tx = self.pool.begin().await?;
            for (idx, text) in rows {
                sqlx::query("INSERT OR REPLACE INTO raft_log (idx, entry) VALUES (?1, ?2)")
                    .bind(idx)
                    .bind(text)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        }
        .await;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write_err(&e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        sqlx::query("DELETE FROM raft_log WHERE idx >= ?1")
            .bind(index_i64(log_id.index))
            .execute(&self.pool)
            .await
            .map_err(|e| write_err(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        // Record the purge point first: a crash in between leaves entries that are merely
        // ignored, never a log that claims entries it no longer has.
        self.write_meta(KEY_PURGED, &log_id).await?;
        sqlx::query("DELETE FROM raft_log WHERE idx <= ?1")
            .bind(index_i64(log_id.index))
            .execute(&self.pool)
            .await
            .map_err(|e| write_err(&e))?;
        Ok(())
    }
}
