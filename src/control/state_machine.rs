//! The control-plane state machine: applies [`ControlCommand`]s to a [`ControlState`] and
//! snapshots the whole state as JSON.
//!
//! The applied state lives in memory. Every snapshot (built here or installed from the
//! leader) is also written to `<raft_dir>/snapshot.json` (temp file, fsync, rename) before it
//! is reported, so openraft purges no log entry that is not covered by a snapshot on disk. A
//! restarted voter loads that snapshot and openraft re-applies the committed log after it.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::types::{ControlCommand, ControlResponse, ControlState, NodeId, TypeConfig};

const SNAPSHOT_FILE: &str = "snapshot.json";

type StoreResult<T> = Result<T, StorageError<NodeId>>;

/// Everything a snapshot holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct StateMachineData {
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, BasicNode>,
    state: ControlState,
}

/// The snapshot file: its meta and the serialized [`StateMachineData`].
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: String,
}

/// Failure to load the snapshot file at start.
#[derive(Debug, thiserror::Error)]
pub enum LoadSnapshotError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("decoding {path}: {source}")]
    Decode {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    data: RwLock<StateMachineData>,
    snapshot: tokio::sync::Mutex<Option<StoredSnapshot>>,
    snapshot_seq: AtomicU64,
    /// When this voter applied the last granted lease of each region (local clock; not
    /// replicated, only for the leader's failure detector).
    grants_seen: Mutex<HashMap<String, Instant>>,
    state_tx: watch::Sender<ControlState>,
}

/// The state machine of one voter. Cheap to clone; clones share the state.
#[derive(Debug, Clone)]
pub struct StateMachineStore {
    inner: Arc<Inner>,
}

fn sm_read_err(e: &(impl std::error::Error + 'static)) -> StorageError<NodeId> {
    StorageIOError::read_state_machine(e).into()
}

fn write_file_durably(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
    // Make the rename itself durable.
    std::fs::File::open(dir)?.sync_all()
}

impl StateMachineStore {
    /// Opens the state machine of `dir`, starting from `<dir>/snapshot.json` when present.
    pub fn open(dir: &Path) -> Result<StateMachineStore, LoadSnapshotError> {
        let path = dir.join(SNAPSHOT_FILE);
        let (data, snapshot) = match std::fs::read(&path) {
            Ok(bytes) => {
                let decode = |source| LoadSnapshotError::Decode {
                    path: path.display().to_string(),
                    source,
                };
                let stored: StoredSnapshot = serde_json::from_slice(&bytes).map_err(decode)?;
                let data: StateMachineData = serde_json::from_str(&stored.data).map_err(decode)?;
                (data, Some(stored))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (StateMachineData::default(), None)
            }
            Err(source) => {
                return Err(LoadSnapshotError::Io {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        let (state_tx, _) = watch::channel(data.state.clone());
        Ok(StateMachineStore {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                data: RwLock::new(data),
                snapshot: tokio::sync::Mutex::new(snapshot),
                snapshot_seq: AtomicU64::new(0),
                grants_seen: Mutex::new(HashMap::new()),
                state_tx,
            }),
        })
    }

    /// This voter's applied state: NOT linearizable on its own (see
    /// `ControlPlane::state`), only as fresh as what this voter has applied.
    pub fn local_state(&self) -> ControlState {
        match self.inner.data.read() {
            Ok(d) => d.state.clone(),
            Err(poisoned) => poisoned.into_inner().state.clone(),
        }
    }

    /// Follows the applied state.
    pub fn subscribe(&self) -> watch::Receiver<ControlState> {
        self.inner.state_tx.subscribe()
    }

    /// When this voter applied the last lease granted to `region`, if it has seen one since
    /// it started.
    pub fn last_grant_seen(&self, region: &str) -> Option<Instant> {
        self.inner
            .grants_seen
            .lock()
            .ok()
            .and_then(|m| m.get(region).copied())
    }

    fn with_data<T>(&self, f: impl FnOnce(&mut StateMachineData) -> T) -> T {
        match self.inner.data.write() {
            Ok(mut d) => f(&mut d),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    fn publish(&self) {
        let state = self.local_state();
        self.inner.state_tx.send_replace(state);
    }

    async fn persist(&self, stored: &StoredSnapshot) -> StoreResult<()> {
        let sig = Some(stored.meta.signature());
        let bytes = serde_json::to_vec(stored)
            .map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
        let dir = self.inner.dir.clone();
        tokio::task::spawn_blocking(move || write_file_durably(&dir, &bytes))
            .await
            .map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?
            .map_err(|e| StorageIOError::write_snapshot(sig, &e))?;
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StoreResult<Snapshot<TypeConfig>> {
        let (text, last_applied, last_membership) = self.with_data(|d| {
            (
                serde_json::to_string(&*d),
                d.last_applied,
                d.last_membership.clone(),
            )
        });
        let text = text.map_err(|e| sm_read_err(&e))?;
        let seq = self.inner.snapshot_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{seq}", l.leader_id, l.index),
            None => format!("--{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership,
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: text,
        };
        self.persist(&stored).await?;
        let bytes = stored.data.clone().into_bytes();
        *self.inner.snapshot.lock().await = Some(stored);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> StoreResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        Ok(self.with_data(|d| (d.last_applied, d.last_membership.clone())))
    }

    async fn apply<I>(&mut self, entries: I) -> StoreResult<Vec<ControlResponse>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut granted = Vec::new();
        let responses = self.with_data(|d| {
            let mut out = Vec::new();
            for entry in entries {
                d.last_applied = Some(entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => None,
                    EntryPayload::Normal(cmd) => {
                        let r = d.state.apply(&cmd);
                        if let (true, ControlCommand::GrantLease { region, .. }) = (r.applied, &cmd)
                        {
                            granted.push(region.clone());
                        }
                        Some(r)
                    }
                    EntryPayload::Membership(m) => {
                        d.last_membership = StoredMembership::new(Some(entry.log_id), m);
                        None
                    }
                };
                out.push(response.unwrap_or_else(|| ControlResponse {
                    applied: true,
                    reason: None,
                    epoch: d.state.epoch,
                    primary: d.state.primary.clone(),
                    lease_expires_at_ms: None,
                }));
            }
            out
        });
        if !granted.is_empty() {
            if let Ok(mut seen) = self.inner.grants_seen.lock() {
                let now = Instant::now();
                for region in granted {
                    seen.insert(region, now);
                }
            }
        }
        self.publish();
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StoreResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StoreResult<()> {
        let sig = Some(meta.signature());
        let text = String::from_utf8(snapshot.into_inner())
            .map_err(|e| StorageIOError::read_snapshot(sig.clone(), &e))?;
        let mut data: StateMachineData = serde_json::from_str(&text)
            .map_err(|e| StorageIOError::read_snapshot(sig.clone(), &e))?;
        // The meta is authoritative for what the snapshot covers.
        data.last_applied = meta.last_log_id;
        data.last_membership = meta.last_membership.clone();
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: text,
        };
        self.persist(&stored).await?;
        self.with_data(|d| *d = data);
        *self.inner.snapshot.lock().await = Some(stored);
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StoreResult<Option<Snapshot<TypeConfig>>> {
        Ok(self.inner.snapshot.lock().await.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone().into_bytes())),
        }))
    }
}
