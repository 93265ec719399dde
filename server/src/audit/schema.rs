//! Where the audit log lives: its tables in the document store's file (`DATA/nara.db`), and the
//! one-time import of a log kept in a file of its own (`DATA/audit.db`, before this layout).
//!
//! The tables are versioned by a row of their own (`audit_schema`), not by `PRAGMA
//! user_version`, which belongs to the document store in the same file.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension};

use super::{AuditError, GENESIS_PREV};
use crate::db;

/// The audit schema version this build writes.
const VERSION: i64 = 1;

const SCHEMA_V1: &str = r#"
CREATE TABLE audit_log (
    seq      INTEGER PRIMARY KEY,
    at_ms    INTEGER NOT NULL,
    actor    TEXT NOT NULL,
    device   TEXT,
    action   TEXT NOT NULL,
    patient  TEXT,
    document TEXT,
    detail   TEXT NOT NULL,
    prev     TEXT NOT NULL,
    hash     TEXT NOT NULL
) STRICT;
CREATE INDEX audit_by_patient ON audit_log (patient, seq) WHERE patient IS NOT NULL;

-- One row: how many records the log holds and the hash of the last one.
CREATE TABLE audit_head (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    count INTEGER NOT NULL,
    hash  TEXT NOT NULL
) STRICT;

-- One row: the audit schema's version, and the file a log was imported from (if one was).
CREATE TABLE audit_schema (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    version  INTEGER NOT NULL,
    imported TEXT
) STRICT;
"#;

/// Creates the audit tables if they are not there yet. Runs inside the caller's write
/// transaction (so two processes opening a fresh file do not both create them). The head row
/// is inserted only with the tables: a head deleted later stays missing (tampering shows).
pub(crate) fn ensure(conn: &Connection) -> Result<(), AuditError> {
    let version: Option<i64> = if table_exists(conn, "audit_schema")? {
        conn.query_row("SELECT version FROM audit_schema WHERE id = 1", [], |r| {
            r.get(0)
        })
        .optional()?
    } else {
        None
    };
    match version {
        Some(found) if found > VERSION => Err(AuditError::NewerSchema {
            found,
            supported: VERSION,
        }),
        Some(_) => Ok(()),
        None => {
            conn.execute_batch(SCHEMA_V1)?;
            conn.execute(
                "INSERT INTO audit_head (id, count, hash) VALUES (1, 0, ?1)",
                [GENESIS_PREV],
            )?;
            conn.execute(
                "INSERT INTO audit_schema (id, version) VALUES (1, ?1)",
                [VERSION],
            )?;
            Ok(())
        }
    }
}

fn table_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

/// What [`import_legacy`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Imported {
    /// No old log file.
    Nothing,
    /// This many records were copied, and the old file was renamed to the path given.
    Records(u64, PathBuf),
}

/// Copies a log kept in a file of its own (`legacy`, the layout before the log moved into the
/// document store) into `conn`'s file, record for record: the same sequence numbers, `prev`
/// links and hashes (they cover the records, not the file), and the same head. Done once: the
/// copy and a marker commit in one transaction, then the old file is renamed to
/// `<name>.imported` (kept, never deleted). If the new file already holds records of another
/// log, nothing is copied and opening fails: two chains are never merged.
pub(crate) fn import_legacy(conn: &mut Connection, legacy: &Path) -> Result<Imported, AuditError> {
    if !legacy.exists() {
        return Ok(Imported::Nothing);
    }
    let renamed = legacy.with_extension("db.imported");
    let tx = db::write_tx(conn)?;
    let marker: Option<String> = tx
        .query_row("SELECT imported FROM audit_schema WHERE id = 1", [], |r| {
            r.get(0)
        })
        .optional()?
        .flatten();
    let mut copied = 0u64;
    if marker.is_none() {
        let count: i64 = tx
            .query_row("SELECT count FROM audit_head WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?
            .ok_or(AuditError::MissingHead)?;
        if count != 0 {
            return Err(AuditError::Invalid(format!(
                "{} holds an audit log and so does the document store: merge them by hand",
                legacy.display()
            )));
        }
        let old = db::connect(legacy)?;
        let (old_count, old_hash): (i64, String) = old
            .query_row("SELECT count, hash FROM audit_head WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?
            .ok_or(AuditError::MissingHead)?;
        {
            let mut read = old.prepare(
                "SELECT seq, at_ms, actor, device, action, patient, document, detail, prev, hash \
                 FROM audit_log ORDER BY seq",
            )?;
            let mut write = tx.prepare(
                "INSERT INTO audit_log \
                 (seq, at_ms, actor, device, action, patient, document, detail, prev, hash) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            let mut rows = read.query([])?;
            while let Some(r) = rows.next()? {
                let values: [rusqlite::types::Value; 10] = [
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                ];
                write.execute(rusqlite::params_from_iter(values))?;
                copied += 1;
            }
        }
        tx.execute(
            "UPDATE audit_head SET count = ?1, hash = ?2 WHERE id = 1",
            rusqlite::params![old_count, old_hash],
        )?;
        tx.execute(
            "UPDATE audit_schema SET imported = ?1 WHERE id = 1",
            [legacy.display().to_string()],
        )?;
    }
    tx.commit()?;
    // Imported now or on an earlier open that stopped before the rename.
    std::fs::rename(legacy, &renamed)
        .map_err(|e| AuditError::Invalid(format!("renaming {}: {e}", legacy.display())))?;
    tracing::warn!(
        from = %legacy.display(),
        records = copied,
        kept_as = %renamed.display(),
        "the audit log was imported into the document store's file"
    );
    Ok(Imported::Records(copied, renamed))
}
