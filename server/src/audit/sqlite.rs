//! [`SqliteAudit`]: the log in SQLite, appended in the writer's transaction and verified
//! record by record.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::{Connection, OptionalExtension, params};
use sync_core::{DeviceId, PatientId};

use super::chain::{self, Row, Verifier};
use super::*;
use crate::db;

/// The audit log in a SQLite file of its own.
#[derive(Debug)]
pub struct SqliteAudit {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl SqliteAudit {
    /// Opens (creating if needed) the log at `path` and brings its schema up to date.
    /// A file written by a newer build is refused with [`AuditError::NewerSchema`].
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let mut conn = db::connect(path)?;
        let tx = db::write_tx(&mut conn)?;
        schema::ensure(&tx)?;
        tx.commit()?;
        Ok(Self {
            path: path.to_owned(),
            conn: Mutex::new(conn),
        })
    }

    /// Opens the log at `path` (the document store's file) and imports, once, the log kept in
    /// the file of its own at `legacy` if there is one (see [`schema::import_legacy`]).
    pub fn open_importing(path: &Path, legacy: &Path) -> Result<(Self, Imported), AuditError> {
        let log = Self::open(path)?;
        let imported = schema::import_legacy(&mut log.conn(), legacy)?;
        Ok((log, imported))
    }

    /// The file this log lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // An uncommitted transaction rolls back when dropped, so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl AuditLog for SqliteAudit {
    fn append(&self, entry: AuditEntry) -> Result<AuditRecord, AuditError> {
        let mut conn = self.conn();
        let tx = db::write_tx(&mut conn)?;
        let record = append_in(&tx, vec![entry])?.ok_or(AuditError::MissingHead)?;
        tx.commit()?;
        drop(conn);
        tracing::debug!(
            seq = record.seq,
            action = record.entry.action.as_str(),
            "audited"
        );
        Ok(record)
    }

    fn append_all(&self, entries: Vec<AuditEntry>) -> Result<(), AuditError> {
        let mut conn = self.conn();
        let tx = db::write_tx(&mut conn)?;
        append_in(&tx, entries)?;
        tx.commit()?;
        Ok(())
    }

    fn verify_against(&self, heads: &Checkpoints) -> Result<VerifyReport, AuditError> {
        let conn = self.conn();
        // One read transaction: the chain and the head are seen at the same moment even while
        // another process appends.
        let tx = conn.unchecked_transaction()?;
        let mut verifier = Verifier::new(heads);
        {
            let mut stmt = tx.prepare(&format!("{SELECT_COLUMNS} ORDER BY seq"))?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                match read_row(r) {
                    Ok(row) => verifier.row(row),
                    Err(e) => verifier.unreadable(e),
                }
            }
        }
        let stored: Option<(i64, String)> = tx
            .query_row("SELECT count, hash FROM audit_head WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .unwrap_or(None);
        drop(tx);
        Ok(verifier.finish(stored))
    }

    fn export_patient(&self, patient: &PatientId) -> Result<Vec<AuditRecord>, AuditError> {
        query::by_patient(&self.conn(), patient, None)
    }

    fn latest(
        &self,
        actions: &[AuditAction],
        limit: usize,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        query::latest(&self.conn(), actions, limit)
    }

    fn latest_for_patient(
        &self,
        patient: &PatientId,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        query::by_patient(&self.conn(), patient, Some(limit))
    }

    fn head(&self) -> Result<AuditHead, AuditError> {
        let (count, hash): (i64, String) = self
            .conn()
            .prepare_cached("SELECT count, hash FROM audit_head WHERE id = 1")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
            .ok_or(AuditError::MissingHead)?;
        Ok(AuditHead {
            seq: db::to_u64(count, "head count").map_err(AuditError::BadRow)?,
            hash,
        })
    }

    fn len(&self) -> Result<u64, AuditError> {
        let count: i64 = self
            .conn()
            .prepare_cached("SELECT count FROM audit_head WHERE id = 1")?
            .query_row([], |r| r.get(0))
            .optional()?
            .ok_or(AuditError::MissingHead)?;
        db::to_u64(count, "head count").map_err(AuditError::BadRow)
    }
}

/// Appends `entries`, in order, on `conn` inside a write transaction the caller holds open
/// (the sync shell: the store group that stores what the entries record). Nothing is durable
/// until the caller commits; if it rolls back, the records go with what they record.
pub fn append_on(conn: &Connection, entries: Vec<AuditEntry>) -> Result<(), AuditError> {
    if conn.is_autocommit() {
        return Err(AuditError::Invalid(
            "append_on needs an open transaction".into(),
        ));
    }
    append_in(conn, entries)?;
    Ok(())
}

/// Appends `entries`, in order, inside an open write transaction: the head row is read once,
/// each record inserted chained to the one before it, and the head updated once (the same
/// rows as one record at a time, in two statements fewer per record). Returns the last record
/// (`None` for no entries, which writes nothing).
fn append_in(tx: &Connection, entries: Vec<AuditEntry>) -> Result<Option<AuditRecord>, AuditError> {
    if entries.is_empty() {
        return Ok(None);
    }
    let (mut count, mut prev): (i64, String) = tx
        .prepare_cached("SELECT count, hash FROM audit_head WHERE id = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .ok_or(AuditError::MissingHead)?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO audit_log \
             (seq, at_ms, actor, device, action, patient, document, detail, prev, hash) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    let mut last = None;
    for entry in entries {
        let record = chain::link(count, prev, entry)?;
        let seq = chain::seq_to_sql(&record)?;
        let e = &record.entry;
        insert.execute(params![
            seq,
            e.at_ms,
            e.actor,
            e.device.as_ref().map(DeviceId::as_str),
            e.action.as_str(),
            e.patient.as_ref().map(PatientId::as_str),
            e.document,
            e.detail,
            record.prev,
            record.hash
        ])?;
        count = seq;
        prev = record.hash.clone();
        last = Some(record);
    }
    tx.prepare_cached("UPDATE audit_head SET count = ?1, hash = ?2 WHERE id = 1")?
        .execute(params![count, prev])?;
    Ok(last)
}

pub(super) const SELECT_COLUMNS: &str = "SELECT seq, at_ms, actor, device, action, patient, document, detail, prev, hash FROM audit_log";

/// One stored row, unparsed.
pub(super) fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        seq: r.get(0)?,
        at_ms: r.get(1)?,
        actor: r.get(2)?,
        device: r.get(3)?,
        action: r.get(4)?,
        patient: r.get(5)?,
        document: r.get(6)?,
        detail: r.get(7)?,
        prev: r.get(8)?,
        hash: r.get(9)?,
    })
}
