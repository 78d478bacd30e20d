-- Pangolin metadata store, SQLite schema v3: replication.
--
-- The change log is one log for the whole deployment: the primary appends to it, every other
-- region mirrors each record it applies under the primary's seq (src/store/sql.rs,
-- apply_replicated). A region's watermark is therefore its change log's last seq; this row
-- keeps it with the apply bookkeeping, updated in the same transaction as every apply.
CREATE TABLE replication_state (
    id                INTEGER PRIMARY KEY CHECK (id = 1),
    -- seq of the last record applied from another region (0: none).
    watermark         INTEGER NOT NULL,
    -- epoch and created_ms (at the committing region) of that record.
    watermark_epoch   INTEGER NOT NULL,
    record_created_ms INTEGER NOT NULL,
    -- When it was applied here (0: never).
    applied_ms        INTEGER NOT NULL,
    -- 1 while an operator has paused the replicator of this region.
    paused            INTEGER NOT NULL
);
INSERT INTO replication_state (id, watermark, watermark_epoch, record_created_ms, applied_ms, paused)
VALUES (1, 0, 0, 0, 0, 0);
