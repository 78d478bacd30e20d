-- Pangolin metadata store, PostgreSQL schema v2: Idempotency-Key reservations and metrics
-- reports. Region-local bookkeeping: neither fenced nor in the change log.

-- One row per Idempotency-Key: `pending` while its request runs, then `completed` with the
-- final response that retries replay. `created_ms` is the key's first use (the start of its
-- reuse window, and what purging goes by), `reserved_ms` the start of the current
-- reservation (its lease) and `token` the reservation's holder. The key is the primary key:
-- two requests can never both reserve it (a racing INSERT ... ON CONFLICT waits for the
-- other transaction, then sees its row).
CREATE TABLE idempotency_keys (
    idempotency_key TEXT PRIMARY KEY,
    fingerprint     TEXT NOT NULL,
    token           TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'completed')),
    created_ms      BIGINT NOT NULL,
    reserved_ms     BIGINT NOT NULL,
    status          BIGINT,
    content_type    TEXT,
    etag            TEXT,
    body            BYTEA
);
-- purge_idempotency_keys: one index range.
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_ms);

-- Per catalog, the `seq` of its newest metrics report: reports are numbered 1, 2, 3, ... per
-- catalog, so keeping the N newest is one index range delete (`seq <= last_seq - N`). The
-- row is locked by the upsert that numbers a report, so one catalog's reports are numbered
-- (and trimmed) one transaction at a time.
CREATE TABLE metrics_report_seq (
    catalog_id TEXT PRIMARY KEY,
    last_seq   BIGINT NOT NULL
);

CREATE TABLE metrics_reports (
    catalog_id  TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    namespace   TEXT COLLATE "C" NOT NULL,
    table_name  TEXT COLLATE "C" NOT NULL,
    report_type TEXT NOT NULL,
    report      TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (catalog_id, seq)
);
-- Reports on one table (or namespace), newest first.
CREATE INDEX metrics_reports_table ON metrics_reports (catalog_id, namespace, table_name, seq);
