//! `Idempotency-Key` reservations on [`SqlStore`] ([`IdempotencyStore`], schema `0002`):
//! region-local bookkeeping, written without the fence and the change log.
//!
//! `begin_idempotent` first reads the key on the read pool, so a live key (completed, in
//! flight, reused) is answered without a write transaction — waiters poll it cheaply. Only a
//! free key goes on to a write transaction: `INSERT ... ON CONFLICT DO NOTHING` on the
//! primary key reserves it; when the insert conflicts, the row is read (PostgreSQL: `FOR
//! UPDATE`, after the insert waited for any transaction holding it) and re-judged, and an
//! expired or abandoned-by-lease row is taken over by an `UPDATE` on that locked row. So of
//! concurrent callers exactly one gets `Started`.

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{decode_error, new_id, SqlStore};
use crate::store::{IdempotencyStart, IdempotencyStore, Result, StoreError, StoredResponse};

/// The columns [`IdempotencyRow::from_row`] reads.
macro_rules! idempotency_columns {
    () => {
        "fingerprint, state, created_ms, reserved_ms, status, content_type, etag, body"
    };
}

/// A stored idempotency key.
struct IdempotencyRow {
    fingerprint: String,
    created_ms: i64,
    reserved_ms: i64,
    /// Set once the key is completed; None while pending.
    response: Option<StoredResponse>,
}

impl IdempotencyRow {
    fn from_row(row: &AnyRow) -> Result<IdempotencyRow> {
        let state: String = row.try_get("state")?;
        let completed = match state.as_str() {
            "completed" => true,
            "pending" => false,
            other => return Err(decode_error(format!("unknown idempotency state {other:?}"))),
        };
        let response = if completed {
            let status: Option<i64> = row.try_get("status")?;
            let status = status
                .and_then(|s| u16::try_from(s).ok())
                .ok_or_else(|| decode_error("completed idempotency key without a valid status"))?;
            let body: Option<Vec<u8>> = row.try_get("body")?;
            Some(StoredResponse {
                status,
                content_type: row.try_get("content_type")?,
                etag: row.try_get("etag")?,
                body: body.unwrap_or_default(),
            })
        } else {
            None
        };
        Ok(IdempotencyRow {
            fingerprint: row.try_get("fingerprint")?,
            created_ms: row.try_get("created_ms")?,
            reserved_ms: row.try_get("reserved_ms")?,
            response,
        })
    }

    /// The answer for a live key; None when the key is free for the caller: expired (older
    /// than the lifetime), or pending under a reservation older than the lease.
    fn judge(
        self,
        fingerprint: &str,
        now_ms: i64,
        lifetime_ms: i64,
        lease_ms: i64,
    ) -> Option<IdempotencyStart> {
        if self.expired(now_ms, lifetime_ms) {
            return None;
        }
        if self.fingerprint != fingerprint {
            return Some(IdempotencyStart::KeyReused);
        }
        match self.response {
            Some(response) => Some(IdempotencyStart::Completed(response)),
            None if now_ms.saturating_sub(self.reserved_ms) >= lease_ms => None,
            None => Some(IdempotencyStart::InFlight),
        }
    }

    fn expired(&self, now_ms: i64, lifetime_ms: i64) -> bool {
        now_ms.saturating_sub(self.created_ms) >= lifetime_ms
    }
}

#[async_trait]
impl IdempotencyStore for SqlStore {
    async fn begin_idempotent(
        &self,
        key: &str,
        fingerprint: &str,
        now_ms: i64,
        lifetime_ms: i64,
        lease_ms: i64,
    ) -> Result<IdempotencyStart> {
        if key.is_empty() || lifetime_ms <= 0 || lease_ms <= 0 {
            return Err(StoreError::Invalid(
                "an idempotency key needs a name, a positive lifetime and a positive lease".into(),
            ));
        }
        let select = concat!(
            "SELECT ",
            idempotency_columns!(),
            " FROM idempotency_keys WHERE idempotency_key = $1"
        );
        // Fast path: a live key is answered from the read pool.
        let row = sqlx::query(select)
            .bind(key)
            .fetch_optional(&self.read)
            .await?;
        if let Some(row) = row {
            let found = IdempotencyRow::from_row(&row)?;
            if let Some(answer) = found.judge(fingerprint, now_ms, lifetime_ms, lease_ms) {
                return Ok(answer);
            }
        }
        let token = new_id();
        let mut tx = self.begin_write().await?;
        // A concurrent purge may delete the conflicting row between the insert and the
        // read (PostgreSQL): then insert again.
        for _ in 0..3 {
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys (idempotency_key, fingerprint, token, state, \
                 created_ms, reserved_ms) VALUES ($1, $2, $3, 'pending', $4, $4) \
                 ON CONFLICT (idempotency_key) DO NOTHING",
            )
            .bind(key)
            .bind(fingerprint)
            .bind(token.as_str())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 1 {
                tx.commit().await?;
                return Ok(IdempotencyStart::Started { token });
            }
            let row = sqlx::query(locked!(
                self.backend,
                concat!(
                    "SELECT ",
                    idempotency_columns!(),
                    " FROM idempotency_keys WHERE idempotency_key = $1"
                ),
                "FOR UPDATE"
            ))
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else { continue };
            let found = IdempotencyRow::from_row(&row)?;
            // Expired: a new first use. Lease over: the same use, taken over.
            let created_ms = if found.expired(now_ms, lifetime_ms) {
                now_ms
            } else {
                found.created_ms
            };
            if let Some(answer) = found.judge(fingerprint, now_ms, lifetime_ms, lease_ms) {
                return Ok(answer);
            }
            sqlx::query(
                "UPDATE idempotency_keys SET fingerprint = $1, token = $2, state = 'pending', \
                 created_ms = $3, reserved_ms = $4, status = NULL, content_type = NULL, \
                 etag = NULL, body = NULL WHERE idempotency_key = $5",
            )
            .bind(fingerprint)
            .bind(token.as_str())
            .bind(created_ms)
            .bind(now_ms)
            .bind(key)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(IdempotencyStart::Started { token });
        }
        Err(StoreError::Database(sqlx::Error::Protocol(format!(
            "idempotency key {key} kept vanishing while being reserved"
        ))))
    }

    async fn complete_idempotent(
        &self,
        key: &str,
        token: &str,
        response: &StoredResponse,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE idempotency_keys SET state = 'completed', status = $1, content_type = $2, \
             etag = $3, body = $4 \
             WHERE idempotency_key = $5 AND token = $6 AND state = 'pending'",
        )
        .bind(i64::from(response.status))
        .bind(response.content_type.as_deref())
        .bind(response.etag.as_deref())
        .bind(response.body.as_slice())
        .bind(key)
        .bind(token)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(updated == 1)
    }

    async fn abandon_idempotent(&self, key: &str, token: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query(
            "DELETE FROM idempotency_keys \
             WHERE idempotency_key = $1 AND token = $2 AND state = 'pending'",
        )
        .bind(key)
        .bind(token)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(deleted == 1)
    }

    async fn purge_idempotency_keys(&self, older_than_ms: i64) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM idempotency_keys WHERE created_ms < $1")
            .bind(older_than_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted)
    }
}
