//! [`SqliteAudit`]: the log in SQLite, appended in the writer's transaction and verified
//! record by record.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::{Connection, OptionalExtension, params};
use sync_core::{DeviceId, PatientId};

use super::row::{Fields, Row, SELECT_COLUMNS, record_hash};
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

/// Collects problems, listing the first [`MAX_PROBLEMS`].
#[derive(Default)]
struct Problems {
    listed: Vec<String>,
    more: u64,
}

impl Problems {
    fn push(&mut self, p: String) {
        if self.listed.len() < MAX_PROBLEMS {
            self.listed.push(p);
        } else {
            self.more += 1;
        }
    }
    fn into_vec(mut self) -> Vec<String> {
        if self.more > 0 {
            self.listed
                .push(format!("... and {} more problems", self.more));
        }
        self.listed
    }
}

impl AuditLog for SqliteAudit {
    fn append(&self, entry: AuditEntry) -> Result<AuditRecord, AuditError> {
        let mut conn = self.conn();
        let tx = db::write_tx(&mut conn)?;
        let record = append_in(&tx, entry)?;
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
        for entry in entries {
            append_in(&tx, entry)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn verify(&self) -> Result<VerifyReport, AuditError> {
        let conn = self.conn();
        // One read transaction: the chain and the head are seen at the same moment even while
        // another process appends.
        let tx = conn.unchecked_transaction()?;
        let mut problems = Problems::default();
        let mut records: u64 = 0;
        let mut expected_seq: u64 = 1;
        let mut expected_prev = GENESIS_PREV.to_owned();
        let mut last_seq: u64 = 0;
        {
            let mut stmt = tx.prepare(&format!("{SELECT_COLUMNS} ORDER BY seq"))?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                records += 1;
                let row = match Row::read(r) {
                    Ok(row) => row,
                    Err(e) => {
                        problems.push(format!(
                            "record #{records} in the file cannot be read ({e}): edited"
                        ));
                        // Its hash is unknown, so the next link cannot be checked either.
                        expected_prev = String::new();
                        expected_seq += 1;
                        continue;
                    }
                };
                let Ok(seq) = u64::try_from(row.seq) else {
                    problems.push(format!("record with negative seq {}: edited", row.seq));
                    expected_prev = row.hash;
                    continue;
                };
                let mut gap = false;
                if seq != expected_seq {
                    gap = true;
                    if seq > expected_seq {
                        let (from, to) = (expected_seq, seq - 1);
                        problems.push(if from == to {
                            format!("record {from} is missing: deleted")
                        } else {
                            format!("records {from} to {to} are missing: deleted")
                        });
                    } else {
                        problems.push(format!("record {seq} is out of order: edited"));
                    }
                }
                if !gap && !expected_prev.is_empty() && row.prev != expected_prev {
                    problems.push(format!(
                        "record {seq}: its link to record {} is broken: \
                         the record before it was deleted or rewritten",
                        seq.saturating_sub(1)
                    ));
                }
                if row.computed_hash(seq) != row.hash {
                    problems.push(format!(
                        "record {seq}: content does not match its hash: edited"
                    ));
                }
                expected_seq = seq.saturating_add(1);
                last_seq = seq;
                expected_prev = row.hash;
            }
        }
        let head = if records == 0 {
            GENESIS_PREV.to_owned()
        } else {
            expected_prev
        };
        let stored: Option<(i64, String)> = tx
            .query_row("SELECT count, hash FROM audit_head WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .unwrap_or(None);
        match stored {
            None => problems.push("the head row is missing or unreadable: edited".into()),
            Some((count, head_hash)) => {
                let count = u64::try_from(count).unwrap_or(u64::MAX);
                if count > last_seq {
                    problems.push(format!(
                        "the log ends at record {last_seq} but {count} were appended: \
                         records at the end were deleted"
                    ));
                } else if count < last_seq {
                    problems.push(format!(
                        "the log holds records up to {last_seq} but only {count} were appended: \
                         records were added outside the log"
                    ));
                } else if head_hash != head {
                    problems.push(format!(
                        "the last record's hash {head} differs from the head {head_hash}: \
                         the last record was rewritten"
                    ));
                }
            }
        }
        drop(tx);
        let problems = problems.into_vec();
        let ok = problems.is_empty();
        if ok {
            tracing::info!(records, head = %head, "audit log verified");
        } else {
            tracing::warn!(records, problems = problems.len(), "audit log is damaged");
        }
        Ok(VerifyReport {
            records,
            ok,
            problems,
            head,
        })
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
    for entry in entries {
        append_in(conn, entry)?;
    }
    Ok(())
}

/// Appends one entry inside an open write transaction (the head row is read and updated in it,
/// so entries appended in one transaction chain in order).
fn append_in(tx: &Connection, mut entry: AuditEntry) -> Result<AuditRecord, AuditError> {
    check_entry(&mut entry)?;
    let (count, prev): (i64, String) = tx
        .prepare_cached("SELECT count, hash FROM audit_head WHERE id = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .ok_or(AuditError::MissingHead)?;
    let seq_i = count
        .checked_add(1)
        .ok_or_else(|| AuditError::BadRow("head count overflows".into()))?;
    let seq = db::to_u64(seq_i, "head count").map_err(AuditError::BadRow)?;
    let device = entry.device.as_ref().map(DeviceId::as_str);
    let patient = entry.patient.as_ref().map(PatientId::as_str);
    let hash = record_hash(
        &prev,
        &Fields {
            seq,
            at_ms: entry.at_ms,
            actor: &entry.actor,
            device,
            action: entry.action.as_str(),
            patient,
            document: entry.document.as_deref(),
            detail: &entry.detail,
        },
    );
    tx.prepare_cached(
        "INSERT INTO audit_log \
             (seq, at_ms, actor, device, action, patient, document, detail, prev, hash) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        seq_i,
        entry.at_ms,
        entry.actor,
        device,
        entry.action.as_str(),
        patient,
        entry.document,
        entry.detail,
        prev,
        hash
    ])?;
    tx.prepare_cached("UPDATE audit_head SET count = ?1, hash = ?2 WHERE id = 1")?
        .execute(params![seq_i, hash])?;
    Ok(AuditRecord {
        seq,
        entry,
        prev,
        hash,
    })
}
