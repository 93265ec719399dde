//! The admin service on SQLite: an action is recorded before it is made, a refused one gets
//! its `NOT DONE` record with the same text, and nothing is done unaudited.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use sync_core::{PatientId, Role, UserId};

use super::*;
use crate::audit::SqliteAudit;
use crate::directory::SqliteDirectory;

fn service(dir: &std::path::Path) -> (AdminService, Arc<SqliteAudit>) {
    let directory = Arc::new(SqliteDirectory::open(&dir.join("server.db")).unwrap());
    let audit = Arc::new(SqliteAudit::open(&dir.join("nara.db")).unwrap());
    (AdminService::new(directory, audit.clone()), audit)
}

#[test]
fn a_refused_action_is_recorded_then_marked_not_done_with_the_same_text() {
    let tmp = tempfile::tempdir().unwrap();
    let (admin, audit) = service(tmp.path());
    let (nina, p1) = (UserId::new("nina").unwrap(), PatientId::new("p1").unwrap());
    admin.add_org("admin", 1, "norr", "Norr").unwrap();
    admin
        .add_user("admin", 2, &nina, "Nina", Role::Nurse, "norr")
        .unwrap();
    // No such person yet: refused by the directory, after its record.
    let err = admin
        .set_assignment("admin", 3, 0, &nina, &p1, true)
        .unwrap_err();
    assert!(err.is_refusal() && !err.is_unaudited(), "{err}");
    let records = audit.export_patient(&p1).unwrap();
    let details: Vec<_> = records.iter().map(|r| r.entry.detail.as_str()).collect();
    let text = texts::assignment(&nina, true);
    assert_eq!(details.len(), 2, "{details:?}");
    assert_eq!(details[0], text);
    assert!(details[1].starts_with("NOT DONE (") && details[1].ends_with(&text));
    assert!(audit.verify().unwrap().ok);
}

#[test]
fn nothing_is_done_or_read_unaudited() {
    let tmp = tempfile::tempdir().unwrap();
    let (admin, audit) = service(tmp.path());
    admin.add_org("admin", 1, "norr", "Norr").unwrap();
    // The log's file refuses every new record from now on.
    rusqlite::Connection::open(tmp.path().join("nara.db"))
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON audit_log
                 BEGIN SELECT RAISE(ABORT, 'the audit disk is full'); END;",
        )
        .unwrap();
    let p1 = PatientId::new("p1").unwrap();
    let err = admin.add_patient("admin", 2, &p1, "Astrid").unwrap_err();
    assert!(matches!(err, AdminError::Unaudited(_)), "{err}");
    assert!(admin.directory().patients().unwrap().is_empty());
    let err = admin.devices("admin", 3).unwrap_err();
    assert!(matches!(err, AdminError::UnauditedRead(_)), "{err}");
    let err = admin.audit_export("admin", 4, &p1).unwrap_err();
    assert!(matches!(err, AdminError::UnauditedRead(_)), "{err}");
    assert_eq!(audit.len().unwrap(), 1);
}
