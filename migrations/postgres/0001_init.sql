-- Pangolin metadata store, PostgreSQL schema v1.
-- Ids are TEXT uuids, JSON is TEXT, times are epoch milliseconds. Namespace names are their
-- parts joined with U+001F; `parent` is the parent's joined name ('' at the top level).
-- Name columns use the "C" collation so ordering (and keyset pagination) is byte order, the
-- same as SQLite's BINARY collation, whatever the database's default collation is.

-- The region's fencing epoch: exactly one row. Mutations lock it FOR SHARE, set_epoch
-- FOR UPDATE, so an epoch change waits for in-flight writes and fences all later ones.
CREATE TABLE fence (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch BIGINT NOT NULL
);
INSERT INTO fence (id, epoch) VALUES (1, 1);

CREATE TABLE tenants (
    id         TEXT PRIMARY KEY,
    name       TEXT COLLATE "C" NOT NULL UNIQUE,
    created_ms BIGINT NOT NULL
);

CREATE TABLE warehouses (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    name       TEXT COLLATE "C" NOT NULL,
    bucket     TEXT NOT NULL,
    key_prefix TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE catalogs (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    warehouse_id TEXT NOT NULL REFERENCES warehouses (id),
    name         TEXT COLLATE "C" NOT NULL,
    properties   TEXT NOT NULL,
    created_ms   BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE INDEX catalogs_warehouse ON catalogs (warehouse_id);

CREATE TABLE namespaces (
    catalog_id TEXT NOT NULL REFERENCES catalogs (id),
    name       TEXT COLLATE "C" NOT NULL,
    parent     TEXT COLLATE "C" NOT NULL,
    properties TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (catalog_id, name)
);
-- Children of a namespace, in name order (list_namespaces, drop_namespace's emptiness check).
CREATE INDEX namespaces_parent ON namespaces (catalog_id, parent, name);

-- Tables and views share one name space: UNIQUE (catalog_id, namespace, name).
CREATE TABLE tables (
    id                TEXT PRIMARY KEY,
    catalog_id        TEXT NOT NULL,
    namespace         TEXT COLLATE "C" NOT NULL,
    name              TEXT COLLATE "C" NOT NULL,
    kind              TEXT NOT NULL CHECK (kind IN ('table', 'view')),
    metadata_location TEXT NOT NULL,
    version           BIGINT NOT NULL,
    created_ms        BIGINT NOT NULL,
    updated_ms        BIGINT NOT NULL,
    UNIQUE (catalog_id, namespace, name),
    FOREIGN KEY (catalog_id, namespace) REFERENCES namespaces (catalog_id, name)
);
-- list_tables: entities of one kind in a namespace, in name order.
CREATE INDEX tables_kind ON tables (catalog_id, namespace, kind, name);

-- Replication outbox. BIGSERIAL is strictly increasing but, being non-transactional, may
-- leave a gap when a transaction rolls back after its insert, and concurrent transactions
-- may commit out of seq order (see src/store/sql.rs).
CREATE TABLE change_log (
    seq        BIGSERIAL PRIMARY KEY,
    epoch      BIGINT NOT NULL,
    catalog_id TEXT,
    op         TEXT NOT NULL,
    payload    TEXT NOT NULL,
    actor      TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
