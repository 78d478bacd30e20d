-- Pangolin metadata store, SQLite schema v4: anti-entropy (verify, resync, failback).
--
-- Region-local bookkeeping, neither fenced nor replicated (src/store/sql/anti_entropy.rs).

-- Commits this region holds that the primary never received (an old primary after an
-- unplanned failover in async mode), kept for the operator's report before the region
-- converges to the primary's state. `entry` is the report entry (JSON), `record` the
-- change record itself as it was committed here.
CREATE TABLE replication_quarantine (
    seq         INTEGER NOT NULL,
    epoch       INTEGER NOT NULL,
    catalog_id  TEXT,
    detected_ms INTEGER NOT NULL,
    entry       TEXT NOT NULL,
    PRIMARY KEY (seq, epoch)
);

-- A catalog rebuilt from the primary's state at seq `seq` (resync): replicated records of
-- that catalog up to `seq` are already reflected and are logged without being applied.
-- A row is deleted once the watermark passes it.
CREATE TABLE replication_resync_floor (
    catalog_id TEXT PRIMARY KEY,
    seq        INTEGER NOT NULL
);
