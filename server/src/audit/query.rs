//! The audit log's reads by person and by action (`SqliteAudit`'s queries).

use rusqlite::{Connection, params};
use sync_core::PatientId;

use super::chain::Row;
use super::sqlite::{SELECT_COLUMNS, read_row};
use super::{AuditAction, AuditError, AuditRecord};

/// Every record about `patient` in order; with `limit`, the latest `limit`, newest first.
pub(super) fn by_patient(
    conn: &Connection,
    patient: &PatientId,
    limit: Option<usize>,
) -> Result<Vec<AuditRecord>, AuditError> {
    let rows: Vec<Row> = match limit {
        None => conn
            .prepare_cached(&format!("{SELECT_COLUMNS} WHERE patient = ?1 ORDER BY seq"))?
            .query_map([patient.as_str()], read_row)?
            .collect::<Result<_, _>>()?,
        Some(limit) => conn
            .prepare_cached(&format!(
                "{SELECT_COLUMNS} WHERE patient = ?1 ORDER BY seq DESC LIMIT ?2"
            ))?
            .query_map(
                params![patient.as_str(), i64::try_from(limit).unwrap_or(i64::MAX)],
                read_row,
            )?
            .collect::<Result<_, _>>()?,
    };
    rows.into_iter().map(Row::into_record).collect()
}

/// The latest `limit` records whose action is one of `actions`, newest first.
pub(super) fn latest(
    conn: &Connection,
    actions: &[AuditAction],
    limit: usize,
) -> Result<Vec<AuditRecord>, AuditError> {
    let names: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
    let names = serde_json::to_string(&names).map_err(|e| AuditError::Invalid(e.to_string()))?;
    let rows: Vec<Row> = conn
        .prepare_cached(&format!(
            "{SELECT_COLUMNS} WHERE action IN (SELECT value FROM json_each(?1)) \
             ORDER BY seq DESC LIMIT ?2"
        ))?
        .query_map(
            params![names, i64::try_from(limit).unwrap_or(i64::MAX)],
            read_row,
        )?
        .collect::<Result<_, _>>()?;
    rows.into_iter().map(Row::into_record).collect()
}
