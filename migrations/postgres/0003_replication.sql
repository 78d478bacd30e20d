-- Pangolin metadata store, PostgreSQL schema v3: replication.
--
-- The change log is one log for the whole deployment: the primary appends to it, every other
-- region mirrors each record it applies under the primary's seq (src/store/sql.rs,
-- apply_replicated). A region's watermark is therefore its change log's last seq; this row
-- keeps it with the apply bookkeeping, updated in the same transaction as every apply.
CREATE TABLE replication_state (
    id                INTEGER PRIMARY KEY CHECK (id = 1),
    -- seq of the last record applied from another region (0: none).
    watermark         BIGINT NOT NULL,
    -- epoch and created_ms (at the committing region) of that record.
    watermark_epoch   BIGINT NOT NULL,
    record_created_ms BIGINT NOT NULL,
    -- When it was applied here (0: never).
    applied_ms        BIGINT NOT NULL,
    -- 1 while an operator has paused the replicator of this region.
    paused            INTEGER NOT NULL
);
INSERT INTO replication_state (id, watermark, watermark_epoch, record_created_ms, applied_ms, paused)
VALUES (1, 0, 0, 0, 0, 0);

-- Commit-ordered, gap-free change log seqs. A BIGSERIAL is neither (a rolled-back insert
-- leaves a gap; concurrent transactions commit out of seq order, so a reader could pass seq 8
-- before seq 7 commits and never see 7). From now on every append takes its seq from this
-- row (`UPDATE ... SET seq = seq + 1 RETURNING seq`): the row stays locked until the
-- appending transaction ends, so seqs are handed out in commit order and a rollback gives its
-- seq back.
CREATE TABLE change_log_head (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO change_log_head (id, seq) SELECT 1, COALESCE(MAX(seq), 0) FROM change_log;
