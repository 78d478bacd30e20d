//! Region-local telemetry on [`SqlStore`]: received metrics reports ([`ReportStore`], schema
//! `0002`) and the drill history ([`DrillStore`], schema `0005`), written without the fence
//! and the change log.
//!
//! A metrics report is numbered per catalog by an upsert of its counter row (which
//! serializes one catalog's reports on PostgreSQL), and trimming to the retention is one
//! index range delete.

use async_trait::async_trait;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{check_name, decode_error, join_namespace, split_namespace, SqlStore};
use crate::store::{
    DrillRecord, DrillStore, MetricsReport, MetricsReportQuery, ReportStore, Result, StoreError,
};

#[async_trait]
impl ReportStore for SqlStore {
    async fn record_metrics_report(&self, report: &MetricsReport, retention: u64) -> Result<()> {
        if retention == 0 {
            return Err(StoreError::Invalid(
                "metrics report retention must be positive".into(),
            ));
        }
        let retention = i64::try_from(retention).unwrap_or(i64::MAX);
        let joined = join_namespace(&report.namespace)?;
        check_name("table", &report.table)?;
        let json = serde_json::to_string(&report.report)
            .map_err(|e| StoreError::Invalid(format!("report is not serializable: {e}")))?;
        let mut tx = self.begin_write().await?;
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO metrics_report_seq (catalog_id, last_seq) VALUES ($1, 1) \
             ON CONFLICT (catalog_id) DO UPDATE SET last_seq = metrics_report_seq.last_seq + 1 \
             RETURNING last_seq",
        )
        .bind(report.catalog_id.as_str())
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO metrics_reports (catalog_id, seq, namespace, table_name, report_type, \
             report, received_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(report.catalog_id.as_str())
        .bind(seq)
        .bind(joined)
        .bind(report.table.as_str())
        .bind(report.report_type.as_str())
        .bind(json)
        .bind(report.received_ms)
        .execute(&mut *tx)
        .await?;
        if seq > retention {
            sqlx::query("DELETE FROM metrics_reports WHERE catalog_id = $1 AND seq <= $2")
                .bind(report.catalog_id.as_str())
                .bind(seq - retention)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_metrics_reports(
        &self,
        catalog_id: &str,
        query: &MetricsReportQuery,
    ) -> Result<Vec<MetricsReport>> {
        if query.limit == 0 {
            return Err(StoreError::Invalid("limit must be positive".into()));
        }
        let namespace = query.namespace.as_deref().map(join_namespace).transpose()?;
        let mut sql = String::from(
            "SELECT namespace, table_name, report_type, report, received_ms \
             FROM metrics_reports WHERE catalog_id = $1",
        );
        let mut next = 2;
        if namespace.is_some() {
            sql.push_str(&format!(" AND namespace = ${next}"));
            next += 1;
        }
        if query.table.is_some() {
            sql.push_str(&format!(" AND table_name = ${next}"));
            next += 1;
        }
        sql.push_str(&format!(" ORDER BY seq DESC LIMIT ${next}"));
        let mut select = sqlx::query(&sql).bind(catalog_id);
        if let Some(namespace) = namespace {
            select = select.bind(namespace);
        }
        if let Some(table) = &query.table {
            select = select.bind(table.as_str());
        }
        let rows = select
            .bind(i64::from(query.limit))
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|row| metrics_report_from_row(catalog_id, row))
            .collect()
    }
}

#[async_trait]
impl DrillStore for SqlStore {
    async fn record_drill(&self, drill: &DrillRecord) -> Result<()> {
        if drill.id.is_empty() || drill.id.len() > 200 {
            return Err(StoreError::Invalid(
                "a drill id must be 1 to 200 characters".into(),
            ));
        }
        let report = serde_json::to_string(&drill.report)
            .map_err(|e| StoreError::Invalid(format!("report is not serializable: {e}")))?;
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM drills WHERE id = $1")
            .bind(drill.id.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO drills (id, scenario, started_ms, finished_ms, passed, report, \
             received_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(drill.id.as_str())
        .bind(drill.scenario.as_str())
        .bind(drill.started_ms)
        .bind(drill.finished_ms)
        .bind(i64::from(drill.passed))
        .bind(report)
        .bind(drill.received_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_drills(&self, limit: u32) -> Result<Vec<DrillRecord>> {
        if limit == 0 {
            return Err(StoreError::Invalid("limit must be positive".into()));
        }
        let rows = sqlx::query(
            "SELECT id, scenario, started_ms, finished_ms, passed, received_ms FROM drills \
             ORDER BY started_ms DESC, id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| drill_from_row(row, Value::Null))
            .collect()
    }

    async fn get_drill(&self, id: &str) -> Result<Option<DrillRecord>> {
        let row = sqlx::query(
            "SELECT id, scenario, started_ms, finished_ms, passed, received_ms, report \
             FROM drills WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        row.map(|row| {
            let text: String = row.try_get("report")?;
            let report = serde_json::from_str(&text)
                .map_err(|e| StoreError::Invalid(format!("stored drill report: {e}")))?;
            drill_from_row(&row, report)
        })
        .transpose()
    }
}

fn metrics_report_from_row(catalog_id: &str, row: &AnyRow) -> Result<MetricsReport> {
    let namespace: String = row.try_get("namespace")?;
    let report: String = row.try_get("report")?;
    Ok(MetricsReport {
        catalog_id: catalog_id.to_owned(),
        namespace: split_namespace(&namespace),
        table: row.try_get("table_name")?,
        report_type: row.try_get("report_type")?,
        report: serde_json::from_str(&report)
            .map_err(|e| decode_error(format!("bad metrics report JSON: {e}")))?,
        received_ms: row.try_get("received_ms")?,
    })
}

fn drill_from_row(row: &AnyRow, report: Value) -> Result<DrillRecord> {
    Ok(DrillRecord {
        id: row.try_get("id")?,
        scenario: row.try_get("scenario")?,
        started_ms: row.try_get("started_ms")?,
        finished_ms: row.try_get("finished_ms")?,
        passed: row.try_get::<i64, _>("passed")? != 0,
        report,
        received_ms: row.try_get("received_ms")?,
    })
}
