//! Tests of `audit`: the conformance suite on SQLite, and what is SQLite's own (the import of
//! a log kept in a file of its own, appends in the document store's transaction).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::any::Any;
use std::path::PathBuf;

use super::conformance::{self, Fixture, pid};
use super::*;

/// A log in a file of its own in a temporary directory; each handle is a connection.
struct Sqlite {
    dir: tempfile::TempDir,
}

impl Sqlite {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self) -> PathBuf {
        self.dir.path().join("audit.db")
    }
}

impl Fixture for Sqlite {
    type Log = SqliteAudit;
    fn open(&self) -> SqliteAudit {
        SqliteAudit::open(&self.path()).unwrap()
    }
    fn tamper(&self, sql: &str) {
        rusqlite::Connection::open(self.path())
            .unwrap()
            .execute_batch(sql)
            .unwrap();
    }
    fn break_writes(&self) -> Box<dyn Any> {
        // Another process holds the write lock: the log's appends wait out its busy timeout
        // and fail.
        let holder = rusqlite::Connection::open(self.path()).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        Box::new(holder)
    }
}

mod conformance_suite {
    crate::audit_conformance!(super::Sqlite::new());
}

fn five() -> (tempfile::TempDir, SqliteAudit, Vec<AuditRecord>) {
    let f = Sqlite::new();
    let (log, records) = conformance::five(&f);
    (f.dir, log, records)
}

#[test]
fn a_log_kept_in_its_own_file_is_imported_once_with_its_chain() {
    let (dir, old, records) = five();
    drop(old);
    let legacy = dir.path().join("audit.db");
    let store = dir.path().join("nara.db");
    let (log, imported) = SqliteAudit::open_importing(&store, &legacy).unwrap();
    assert_eq!(
        imported,
        schema::Imported::Records(5, dir.path().join("audit.db.imported"))
    );
    assert!(!legacy.exists());
    let report = log.verify().unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(log.len().unwrap(), 5);
    assert_eq!(
        log.export_patient(&pid("p-1")).unwrap(),
        records
            .iter()
            .filter(|r| r.entry.patient == Some(pid("p-1")))
            .cloned()
            .collect::<Vec<_>>()
    );
    // The chain goes on from the imported head.
    log.append(AuditEntry::new(6, "admin", AuditAction::AddOrg).detail("org o2"))
        .unwrap();
    assert!(log.verify().unwrap().ok);
    drop(log);
    // Opened again: nothing more to import.
    let (log, imported) = SqliteAudit::open_importing(&store, &legacy).unwrap();
    assert_eq!(imported, schema::Imported::Nothing);
    assert_eq!(log.len().unwrap(), 6);
}

#[test]
fn records_serialize_flat_with_kebab_case_actions() {
    let (_dir, _log, records) = five();
    let v = serde_json::to_value(&records[1]).unwrap();
    assert_eq!(v["seq"], 2);
    assert_eq!(v["action"], "accept");
    assert_eq!(v["actor"], "u-anna");
    assert_eq!(v["device"], "dev-a");
    assert_eq!(v["patient"], "p-2");
    assert_eq!(v["prev"], records[0].hash.as_str());
    let back: AuditRecord = serde_json::from_value(v).unwrap();
    assert_eq!(back, records[1]);
    assert_eq!(
        serde_json::to_value(AuditAction::AuthFailed).unwrap(),
        "auth-failed"
    );
    for a in AuditAction::ALL {
        assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        assert_eq!(a.as_str().parse::<AuditAction>().unwrap(), a);
    }
}

#[test]
fn append_on_writes_in_the_callers_transaction_only() {
    let f = Sqlite::new();
    let log = f.open();
    let mut conn = crate::db::connect(&f.path()).unwrap();
    let entries = || conformance::five_entries().to_vec();
    assert!(matches!(
        append_on(&conn, entries()),
        Err(AuditError::Invalid(_))
    ));
    // Rolled back: the records go with the transaction.
    let tx = crate::db::write_tx(&mut conn).unwrap();
    append_on(&tx, entries()).unwrap();
    drop(tx);
    assert_eq!(log.len().unwrap(), 0);
    let tx = crate::db::write_tx(&mut conn).unwrap();
    append_on(&tx, entries()).unwrap();
    tx.commit().unwrap();
    assert_eq!(log.len().unwrap(), 5);
    assert!(log.verify().unwrap().ok);
}
