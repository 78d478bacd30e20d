-- Pangolin metadata store, SQLite schema v6: table and view locations.
--
-- A table's (or view's) base location is owned by it alone: no other live entity's location
-- may equal it, lie inside it or contain it (src/store/sql/locations.rs). That is what makes
-- a purge, which deletes everything under the location, safe for every other table.
-- `location` is the entity's current base location without a trailing slash ('' for rows
-- written before this schema until the catalog fills it in from the metadata file).
ALTER TABLE tables ADD COLUMN location TEXT NOT NULL DEFAULT '';
-- Overlap checks: the prefixes of a location (equality) and the range under it.
CREATE INDEX tables_location ON tables (location);

-- Locations an entity had before a `set-location` moved it: its older files are still there
-- (older snapshots reference them), so it keeps owning them until it is dropped.
CREATE TABLE retired_locations (
    table_id TEXT NOT NULL,
    location TEXT NOT NULL,
    PRIMARY KEY (table_id, location)
);
CREATE INDEX retired_locations_location ON retired_locations (location);
