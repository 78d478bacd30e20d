-- Pangolin metadata store, SQLite schema v1.
-- Ids are TEXT uuids, JSON is TEXT, times are epoch milliseconds. Namespace names are their
-- parts joined with U+001F; `parent` is the parent's joined name ('' at the top level).

-- The region's fencing epoch: exactly one row.
CREATE TABLE fence (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL
);
INSERT INTO fence (id, epoch) VALUES (1, 1);

CREATE TABLE tenants (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL
);

CREATE TABLE warehouses (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    name       TEXT NOT NULL,
    bucket     TEXT NOT NULL,
    key_prefix TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE catalogs (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    warehouse_id TEXT NOT NULL REFERENCES warehouses (id),
    name         TEXT NOT NULL,
    properties   TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE INDEX catalogs_warehouse ON catalogs (warehouse_id);

CREATE TABLE namespaces (
    catalog_id TEXT NOT NULL REFERENCES catalogs (id),
    name       TEXT NOT NULL,
    parent     TEXT NOT NULL,
    properties TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (catalog_id, name)
);
-- Children of a namespace, in name order (list_namespaces, drop_namespace's emptiness check).
CREATE INDEX namespaces_parent ON namespaces (catalog_id, parent, name);

-- Tables and views share one name space: UNIQUE (catalog_id, namespace, name).
CREATE TABLE tables (
    id                TEXT PRIMARY KEY,
    catalog_id        TEXT NOT NULL,
    namespace         TEXT NOT NULL,
    name              TEXT NOT NULL,
    kind              TEXT NOT NULL CHECK (kind IN ('table', 'view')),
    metadata_location TEXT NOT NULL,
    version           INTEGER NOT NULL,
    created_ms        INTEGER NOT NULL,
    updated_ms        INTEGER NOT NULL,
    UNIQUE (catalog_id, namespace, name),
    FOREIGN KEY (catalog_id, namespace) REFERENCES namespaces (catalog_id, name)
);
-- list_tables: entities of one kind in a namespace, in name order.
CREATE INDEX tables_kind ON tables (catalog_id, namespace, kind, name);

-- Replication outbox. AUTOINCREMENT never reuses a seq; write transactions are serialized
-- (one writer connection, BEGIN IMMEDIATE) and a rolled-back insert rolls back the counter,
-- so seq is gap-free and in commit order.
CREATE TABLE change_log (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    epoch      INTEGER NOT NULL,
    catalog_id TEXT,
    op         TEXT NOT NULL,
    payload    TEXT NOT NULL,
    actor      TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
