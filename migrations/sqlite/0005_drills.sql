-- Pangolin metadata store, SQLite schema v5: drill history.
--
-- The reports of failover drills (`pangolin drill run`, docs/drills.md) posted to this
-- region's `/api/v1/drills`. Region-local bookkeeping like metrics reports: neither fenced
-- nor in the change log (a drill posts its report to every region it ran against).
CREATE TABLE drills (
    id          TEXT PRIMARY KEY,
    scenario    TEXT NOT NULL,
    started_ms  INTEGER NOT NULL,
    finished_ms INTEGER NOT NULL,
    passed      INTEGER NOT NULL,
    -- The whole report as JSON.
    report      TEXT NOT NULL,
    received_ms INTEGER NOT NULL
);
-- list_drills: newest first.
CREATE INDEX drills_started ON drills (started_ms);
