-- Pangolin metadata store, SQLite schema v2: Idempotency-Key reservations and metrics
-- reports. Region-local bookkeeping: neither fenced nor in the change log.

-- One row per Idempotency-Key: `pending` while its request runs, then `completed` with the
-- final response that retries replay. `created_ms` is the key's first use (the start of its
-- reuse window, and what purging goes by), `reserved_ms` the start of the current
-- reservation (its lease) and `token` the reservation's holder. The key is the primary key:
-- two requests can never both reserve it.
CREATE TABLE idempotency_keys (
    idempotency_key TEXT PRIMARY KEY,
    fingerprint     TEXT NOT NULL,
    token           TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'completed')),
    created_ms      INTEGER NOT NULL,
    reserved_ms     INTEGER NOT NULL,
    status          INTEGER,
    content_type    TEXT,
    etag            TEXT,
    body            BLOB
);
-- purge_idempotency_keys: one index range.
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_ms);

-- Per catalog, the `seq` of its newest metrics report: reports are numbered 1, 2, 3, ... per
-- catalog, so keeping the N newest is one index range delete (`seq <= last_seq - N`).
CREATE TABLE metrics_report_seq (
    catalog_id TEXT PRIMARY KEY,
    last_seq   INTEGER NOT NULL
);

CREATE TABLE metrics_reports (
    catalog_id  TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    namespace   TEXT NOT NULL,
    table_name  TEXT NOT NULL,
    report_type TEXT NOT NULL,
    report      TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (catalog_id, seq)
);
-- Reports on one table (or namespace), newest first.
CREATE INDEX metrics_reports_table ON metrics_reports (catalog_id, namespace, table_name, seq);
