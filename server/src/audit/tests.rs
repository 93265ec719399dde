//! Tests of `audit`.

use super::chain::{Fields, record_hash};
use super::*;

fn pid(s: &str) -> PatientId {
    PatientId::new(s).unwrap()
}
fn dev(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
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

/// A log with 5 records: 1, 3 and 5 about p-1; 2 about p-2; 4 about nobody.
fn five() -> (tempfile::TempDir, SqliteAudit, Vec<AuditRecord>) {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteAudit::open(&dir.path().join("audit.db")).unwrap();
    let entries = [
        AuditEntry::new(1, "u-anna", AuditAction::Disclose)
            .device(&dev("dev-a"))
            .patient(&pid("p-1"))
            .document("p-1/careplan"),
        AuditEntry::new(2, "u-anna", AuditAction::Accept)
            .device(&dev("dev-a"))
            .patient(&pid("p-2"))
            .document("p-2/journal/2026-11")
            .detail("1 change"),
        AuditEntry::new(3, "u-berit", AuditAction::Refuse)
            .device(&dev("dev-b"))
            .patient(&pid("p-1"))
            .document("p-1/medication")
            .detail("carer may not change a dose"),
        AuditEntry::new(4, "admin", AuditAction::AddOrg).detail("org o1"),
        AuditEntry::new(5, "admin", AuditAction::Assign)
            .patient(&pid("p-1"))
            .detail("u-anna"),
    ];
    let records = entries
        .into_iter()
        .map(|e| log.append(e).unwrap())
        .collect();
    (dir, log, records)
}

fn raw(dir: &tempfile::TempDir) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.path().join("audit.db")).unwrap()
}

fn assert_problem(report: &VerifyReport, needle: &str) {
    assert!(!report.ok, "{report:?}");
    assert!(
        report.problems.iter().any(|p| p.contains(needle)),
        "no problem mentions {needle:?}: {:?}",
        report.problems
    );
}

#[test]
fn an_untouched_chain_verifies() {
    let (dir, log, records) = five();
    assert_eq!(records[0].prev, GENESIS_PREV);
    assert_eq!(records[0].seq, 1);
    for w in records.windows(2) {
        assert_eq!(w[1].prev, w[0].hash);
        assert_eq!(w[1].seq, w[0].seq + 1);
    }
    let report = log.verify().unwrap();
    assert_eq!(
        report,
        VerifyReport {
            records: 5,
            ok: true,
            problems: vec![],
            head: records[4].hash.clone()
        }
    );
    assert_eq!(log.len().unwrap(), 5);
    drop(log);
    // Reopened, the chain continues.
    let log = SqliteAudit::open(&dir.path().join("audit.db")).unwrap();
    let r6 = log
        .append(AuditEntry::new(6, "system", AuditAction::AuthFailed))
        .unwrap();
    assert_eq!((r6.seq, r6.prev.as_str()), (6, records[4].hash.as_str()));
    assert!(log.verify().unwrap().ok);
}

#[test]
fn an_empty_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteAudit::open(&dir.path().join("audit.db")).unwrap();
    let report = log.verify().unwrap();
    assert!(report.ok && report.records == 0 && report.head == GENESIS_PREV);
    assert!(log.is_empty().unwrap());
}

#[test]
fn verify_detects_an_edited_field() {
    for (column, value) in [
        ("detail", "'nothing happened'"),
        ("actor", "'u-someone-else'"),
        ("patient", "'p-2'"),
        ("device", "NULL"),
        ("action", "'read'"),
        ("at_ms", "999"),
    ] {
        let (dir, log, _) = five();
        raw(&dir)
            .execute(
                &format!("UPDATE audit_log SET {column} = {value} WHERE seq = 3"),
                [],
            )
            .unwrap();
        let report = log.verify().unwrap();
        assert_problem(&report, "record 3: content does not match its hash");
        assert_eq!(report.problems.len(), 1, "{column}: {:?}", report.problems);
    }
}

#[test]
fn verify_detects_an_edit_whose_hash_was_recomputed() {
    let (dir, log, records) = five();
    let r = &records[2];
    let forged = record_hash(
        &r.prev,
        &Fields {
            seq: 3,
            at_ms: r.entry.at_ms,
            actor: &r.entry.actor,
            device: Some("dev-b"),
            action: "refuse",
            patient: Some("p-1"),
            document: Some("p-1/medication"),
            detail: "forged",
        },
    );
    raw(&dir)
        .execute(
            "UPDATE audit_log SET detail = 'forged', hash = ?1 WHERE seq = 3",
            [&forged],
        )
        .unwrap();
    assert_problem(&log.verify().unwrap(), "record 4: its link to record 3");
}

#[test]
fn verify_detects_a_deleted_middle_record() {
    let (dir, log, _) = five();
    raw(&dir)
        .execute("DELETE FROM audit_log WHERE seq = 3", [])
        .unwrap();
    let report = log.verify().unwrap();
    assert_problem(&report, "record 3 is missing");
    assert_eq!(report.records, 4);
}

#[test]
fn verify_detects_a_deleted_first_record() {
    let (dir, log, _) = five();
    raw(&dir)
        .execute("DELETE FROM audit_log WHERE seq = 1", [])
        .unwrap();
    assert_problem(&log.verify().unwrap(), "record 1 is missing");
}

#[test]
fn verify_detects_a_deleted_last_record() {
    let (dir, log, _) = five();
    raw(&dir)
        .execute("DELETE FROM audit_log WHERE seq = 5", [])
        .unwrap();
    assert_problem(&log.verify().unwrap(), "records at the end were deleted");
}

#[test]
fn verify_detects_a_rewritten_last_record_and_a_missing_head() {
    let (dir, log, _) = five();
    let conn = raw(&dir);
    conn.execute(
        "UPDATE audit_log SET hash = '00', detail = 'x' WHERE seq = 5",
        [],
    )
    .unwrap();
    let report = log.verify().unwrap();
    assert_problem(&report, "record 5: content does not match");
    assert_problem(&report, "the last record was rewritten");
    conn.execute("DELETE FROM audit_head", []).unwrap();
    assert_problem(&log.verify().unwrap(), "head row is missing");
    assert!(matches!(
        log.append(AuditEntry::new(9, "system", AuditAction::Read)),
        Err(AuditError::MissingHead)
    ));
}

/// The documented limit: a cut tail with a rewritten head is only caught against a copy of
/// the head hash kept elsewhere.
#[test]
fn a_cut_tail_with_a_rewritten_head_needs_an_external_head() {
    let (dir, log, records) = five();
    let external = log.verify().unwrap().head;
    let conn = raw(&dir);
    conn.execute("DELETE FROM audit_log WHERE seq >= 4", [])
        .unwrap();
    conn.execute(
        "UPDATE audit_head SET count = 3, hash = ?1",
        [&records[2].hash],
    )
    .unwrap();
    let report = log.verify().unwrap();
    assert!(report.ok, "consistent in itself: {report:?}");
    assert_ne!(report.head, external, "but not with the external head");
}

#[test]
fn export_returns_only_that_patients_records_in_order() {
    let (_dir, log, records) = five();
    let p1 = log.export_patient(&pid("p-1")).unwrap();
    assert_eq!(p1.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 3, 5]);
    assert_eq!(p1[1], records[2]);
    assert_eq!(
        log.export_patient(&pid("p-2")).unwrap(),
        vec![records[1].clone()]
    );
    assert!(log.export_patient(&pid("p-9")).unwrap().is_empty());
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
fn entries_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteAudit::open(&dir.path().join("audit.db")).unwrap();
    assert!(matches!(
        log.append(AuditEntry::new(0, "", AuditAction::Read)),
        Err(AuditError::Invalid(_))
    ));
    let long = "å".repeat(MAX_DETAIL_LEN);
    let r = log
        .append(AuditEntry::new(0, "system", AuditAction::Read).detail(long))
        .unwrap();
    assert!(r.entry.detail.len() <= MAX_DETAIL_LEN);
    assert!(r.entry.detail.ends_with('…'));
    assert!(log.verify().unwrap().ok);
}

#[test]
fn concurrent_appenders_on_one_file_keep_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    SqliteAudit::open(&path).unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let path = &path;
            s.spawn(move || {
                let log = SqliteAudit::open(path).unwrap();
                for i in 0..25 {
                    log.append(
                        AuditEntry::new(i, format!("u-{t}"), AuditAction::Read)
                            .patient(&pid("p-1")),
                    )
                    .unwrap();
                }
            });
        }
    });
    let log = SqliteAudit::open(&path).unwrap();
    let report = log.verify().unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!((report.records, log.len().unwrap()), (100, 100));
    assert_eq!(log.export_patient(&pid("p-1")).unwrap().len(), 100);
}
