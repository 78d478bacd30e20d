//! Location ownership (schema `0006`): a live table or view owns its base location alone.
//! No other live entity's location may equal it, contain it or lie inside it, whether that
//! other location is current or retired (one a `set-location` moved the entity away from;
//! older snapshots still reference files there). A purge deletes what lies under the dropped
//! entity's locations, so this invariant is what keeps one table's purge off another's files.
//!
//! A claim is checked inside the transaction that creates, registers or moves the entity.
//! SQLite serializes its writers; on PostgreSQL every claiming transaction first takes one
//! transaction-scoped advisory lock, so two concurrent claims cannot both pass the check
//! (claims are rare next to commits, which do not take it).
//!
//! Lookups use the `location` indexes: the claims a location lies inside are among its
//! `/`-prefixes (equality), the claims inside it are the range `['L/', 'L0')` ('0' follows
//! '/' in byte order; PostgreSQL compares these columns in the "C" collation).

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{Backend, SqlStore};
use crate::store::{LocationClaim, Result, StoreError, TableRecord};

/// Key of the PostgreSQL advisory lock that serializes location claims.
const CLAIM_LOCK_KEY: i64 = 0x0050_414e_474c_4f43; // "PANGLOC"

/// `location` and every `/`-prefix of it after the scheme (`s3://b`, `s3://b/k1`, ...).
fn prefixes(location: &str) -> Vec<String> {
    let start = location.find("://").map_or(0, |i| i + 3);
    let mut out: Vec<String> = location
        .char_indices()
        .filter(|(i, c)| *c == '/' && *i > start)
        .map(|(i, _)| location[..i].to_string())
        .collect();
    out.push(location.to_string());
    out
}

/// Claims among `table` (`tables` or `retired_locations`) overlapping `location`.
async fn overlapping_in(
    conn: &mut AnyConnection,
    location: &str,
    retired: bool,
) -> Result<Vec<LocationClaim>> {
    let candidates = prefixes(location);
    let placeholders: Vec<String> = (0..candidates.len())
        .map(|i| format!("${}", i + 3))
        .collect();
    let (id_column, table) = if retired {
        ("table_id", "retired_locations")
    } else {
        ("id", "tables")
    };
    let sql = format!(
        "SELECT {id_column} AS table_id, location FROM {table} \
         WHERE (location >= $1 AND location < $2) OR location IN ({})",
        placeholders.join(", ")
    );
    let mut query = sqlx::query(&sql)
        .bind(format!("{location}/"))
        .bind(format!("{location}0"));
    for c in &candidates {
        query = query.bind(c.as_str());
    }
    let rows: Vec<AnyRow> = query.fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|row| {
            Ok(LocationClaim {
                table_id: row.try_get("table_id")?,
                location: row.try_get("location")?,
                retired,
            })
        })
        .collect()
}

/// Every live claim (current and retired) overlapping `location`.
pub(super) async fn overlapping(
    conn: &mut AnyConnection,
    location: &str,
) -> Result<Vec<LocationClaim>> {
    let mut claims = overlapping_in(conn, location, false).await?;
    claims.extend(overlapping_in(conn, location, true).await?);
    Ok(claims)
}

/// Checks, inside a write transaction, that `table_id` may own `location`: no other live
/// entity's claim overlaps it. Takes the claim lock first on PostgreSQL.
pub(super) async fn check_claim(
    backend: Backend,
    conn: &mut AnyConnection,
    table_id: &str,
    location: &str,
) -> Result<()> {
    if location.is_empty() {
        return Ok(());
    }
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CLAIM_LOCK_KEY)
            .execute(&mut *conn)
            .await?;
    }
    let others: Vec<LocationClaim> = overlapping(conn, location)
        .await?
        .into_iter()
        .filter(|c| c.table_id != table_id)
        .collect();
    match others.first() {
        None => Ok(()),
        Some(c) => Err(StoreError::LocationConflict(format!(
            "Location {location} overlaps the location of another table or view ({}): \
             a table's location must not equal, contain or lie inside another's",
            c.location
        ))),
    }
}

/// Keeps `old` as a retired location of `table_id` (moved away from by `set-location`).
pub(super) async fn retire(conn: &mut AnyConnection, table_id: &str, old: &str) -> Result<()> {
    if old.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO retired_locations (table_id, location) VALUES ($1, $2) \
         ON CONFLICT DO NOTHING",
    )
    .bind(table_id)
    .bind(old)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Removes the retired locations of a dropped entity and returns them.
pub(super) async fn release(conn: &mut AnyConnection, table_id: &str) -> Result<Vec<String>> {
    let rows = sqlx::query("DELETE FROM retired_locations WHERE table_id = $1 RETURNING location")
        .bind(table_id)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|r| r.try_get::<String, _>("location").map_err(StoreError::from))
        .collect()
}

impl SqlStore {
    pub(super) async fn claims_overlapping(&self, location: &str) -> Result<Vec<LocationClaim>> {
        let mut conn = self.read.acquire().await?;
        overlapping(&mut conn, location).await
    }

    pub(super) async fn rows_without_location(&self, limit: u32) -> Result<Vec<TableRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            table_columns!(),
            " FROM tables WHERE location = '' ORDER BY id LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(super::table_from_row).collect()
    }

    pub(super) async fn set_missing_location(&self, table_id: &str, location: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE tables SET location = $1 WHERE id = $2 AND location = ''")
            .bind(location)
            .bind(table_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_cover_every_parent_after_the_scheme() {
        assert_eq!(
            prefixes("s3://b/a/c"),
            vec!["s3://b", "s3://b/a", "s3://b/a/c"]
        );
    }
}
