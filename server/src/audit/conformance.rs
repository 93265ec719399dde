//! The audit log's contract as one suite of cases, run against every backend with
//! [`audit_conformance!`](crate::audit_conformance): SQLite (`audit/tests.rs`) and PostgreSQL
//! (`pg/audit/tests.rs`). Tampering is done in SQL both databases take alike.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::any::Any;

use super::chain::{Fields, record_hash};
use super::heads::{AuditKey, Exporter, HeadExport};
use super::*;

/// One backend's log, made fresh for each case.
pub(crate) trait Fixture {
    type Log: AuditLog;
    /// A new handle (its own connection) on this fixture's log.
    fn open(&self) -> Self::Log;
    /// Runs `sql` on the log's tables from outside the log, as someone tampering would.
    fn tamper(&self, sql: &str);
    /// Makes writes to the log fail as a real failure does (for SQLite another process holding
    /// the write lock past the busy timeout; for PostgreSQL the log's connections cut) until
    /// what is returned is dropped.
    fn break_writes(&self) -> Box<dyn Any>;
}

/// Runs every case against the fixture `$new` makes (an expression, evaluated per log).
#[macro_export]
macro_rules! audit_conformance {
    ($new:expr) => {
        $crate::audit_conformance!(@cases $new;
            an_untouched_chain_verifies,
            an_empty_log_verifies,
            verify_detects_an_edited_field,
            verify_detects_an_edit_whose_hash_was_recomputed,
            verify_detects_a_deleted_middle_record,
            verify_detects_a_deleted_first_record,
            verify_detects_a_deleted_last_record,
            verify_detects_a_rewritten_last_record_and_a_missing_head,
            a_cut_tail_with_a_rewritten_head_needs_an_external_head,
            export_returns_only_that_patients_records_in_order,
            latest_reads_newest_first,
            entries_are_bounded,
            append_all_is_one_unit,
            concurrent_appenders_keep_one_chain,
            an_append_that_cannot_be_written_fails,
            an_untouched_log_passes_its_signed_heads,
            a_chain_rewritten_after_a_signed_head_fails,
            a_cut_tail_is_caught_by_a_signed_head,
            a_tampered_or_foreign_signed_head_fails,
        );
    };
    (@cases $new:expr; $($case:ident,)*) => {
        $(
            #[test]
            fn $case() {
                $crate::audit::conformance::$case(&|| $new);
            }
        )*
    };
}

pub(crate) fn pid(s: &str) -> PatientId {
    PatientId::new(s).unwrap()
}
pub(crate) fn dev(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}

/// The entries of [`five`]: 1, 3 and 5 about p-1; 2 about p-2; 4 about nobody.
pub(crate) fn five_entries() -> [AuditEntry; 5] {
    [
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
    ]
}

/// A log of [`five_entries`], appended one by one.
pub(crate) fn five<F: Fixture>(f: &F) -> (F::Log, Vec<AuditRecord>) {
    let log = f.open();
    let records = five_entries()
        .into_iter()
        .map(|e| log.append(e).unwrap())
        .collect();
    (log, records)
}

fn assert_problem(report: &VerifyReport, needle: &str) {
    assert!(!report.ok, "{report:?}");
    assert!(
        report.problems.iter().any(|p| p.contains(needle)),
        "no problem mentions {needle:?}: {:?}",
        report.problems
    );
}

pub(crate) fn an_untouched_chain_verifies<F: Fixture>(new: &dyn Fn() -> F) {
    let f = new();
    let (log, records) = five(&f);
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
            head: records[4].hash.clone(),
            signed_heads: 0,
        }
    );
    assert_eq!(log.len().unwrap(), 5);
    drop(log);
    // Reopened, the chain continues.
    let log = f.open();
    let r6 = log
        .append(AuditEntry::new(6, "system", AuditAction::AuthFailed))
        .unwrap();
    assert_eq!((r6.seq, r6.prev.as_str()), (6, records[4].hash.as_str()));
    assert!(log.verify().unwrap().ok);
}

pub(crate) fn an_empty_log_verifies<F: Fixture>(new: &dyn Fn() -> F) {
    let f = new();
    let log = f.open();
    let report = log.verify().unwrap();
    assert!(report.ok && report.records == 0 && report.head == GENESIS_PREV);
    assert!(log.is_empty().unwrap());
}

pub(crate) fn verify_detects_an_edited_field<F: Fixture>(new: &dyn Fn() -> F) {
    for (column, value) in [
        ("detail", "'nothing happened'"),
        ("actor", "'u-someone-else'"),
        ("patient", "'p-2'"),
        ("device", "NULL"),
        ("action", "'read'"),
        ("at_ms", "999"),
    ] {
        let f = new();
        let (log, _) = five(&f);
        f.tamper(&format!(
            "UPDATE audit_log SET {column} = {value} WHERE seq = 3"
        ));
        let report = log.verify().unwrap();
        assert_problem(&report, "record 3: content does not match its hash");
        assert_eq!(report.problems.len(), 1, "{column}: {:?}", report.problems);
    }
}

pub(crate) fn verify_detects_an_edit_whose_hash_was_recomputed<F: Fixture>(new: &dyn Fn() -> F) {
    let f = new();
    let (log, records) = five(&f);
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
    f.tamper(&format!(
        "UPDATE audit_log SET detail = 'forged', hash = '{forged}' WHERE seq = 3"
    ));
    assert_problem(&log.verify().unwrap(), "record 4: its link to record 3");
}

pub(crate) fn verify_detects_a_deleted_middle_record<F: Fixture>(new: &dyn Fn() -> F) {
    let f = new();
    let (log, _) = five(&f);
    f.tamper("DELETE FROM audit_log WHERE seq = 3");
    let report = log.verify().unwrap();
    assert_problem(&report, "record 3 is missing");
    assert_eq!(report.records, 4);
}

pub(crate) fn verify_detects_a_deleted_first_record<F: Fixture>(new: &dyn Fn() -> F) {
    let f = new();
    let (log, _) = five(&f);
    f.tamper("DELETE FROM audit_log WHERE seq = 1");
    assert_problem(&log.verify().unwrap(), "record 1 is missing");
}

pub(crate) fn verify_detects_a_deleted_last_record<F: Fixture>(new: &dyn Fn() -> F) {
    let f = new();
    let (log, _) = five(&f);
    f.tamper("DELETE FROM audit_log WHERE seq = 5");
    assert_problem(&log.verify().unwrap(), "records at the end were deleted");
}

pub(crate) fn verify_detects_a_rewritten_last_record_and_a_missing_head<F: Fixture>(
    new: &dyn Fn() -> F,
) {
    let f = new();
    let (log, _) = five(&f);
    f.tamper("UPDATE audit_log SET hash = '00', detail = 'x' WHERE seq = 5");
    let report = log.verify().unwrap();
    assert_problem(&report, "record 5: content does not match");
    assert_problem(&report, "the last record was rewritten");
    f.tamper("DELETE FROM audit_head");
    assert_problem(&log.verify().unwrap(), "head row is missing");
    assert!(matches!(
        log.append(AuditEntry::new(9, "system", AuditAction::Read)),
        Err(AuditError::MissingHead)
    ));
    assert!(matches!(log.len(), Err(AuditError::MissingHead)));
}

/// The documented limit: a cut tail with a rewritten head is only caught against a copy of
/// the head hash kept elsewhere.
pub(crate) fn a_cut_tail_with_a_rewritten_head_needs_an_external_head<F: Fixture>(
    new: &dyn Fn() -> F,
) {
    let f = new();
    let (log, records) = five(&f);
    let external = log.verify().unwrap().head;
    f.tamper("DELETE FROM audit_log WHERE seq >= 4");
    f.tamper(&format!(
        "UPDATE audit_head SET count = 3, hash = '{}'",
        records[2].hash
    ));
    let report = log.verify().unwrap();
    assert!(report.ok, "consistent in itself: {report:?}");
    assert_ne!(report.head, external, "but not with the external head");
}

pub(crate) fn export_returns_only_that_patients_records_in_order<F: Fixture>(new: &dyn Fn() -> F) {
    let f = new();
    let (log, records) = five(&f);
    let p1 = log.export_patient(&pid("p-1")).unwrap();
    assert_eq!(p1.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 3, 5]);
    assert_eq!(p1[1], records[2]);
    assert_eq!(
        log.export_patient(&pid("p-2")).unwrap(),
        vec![records[1].clone()]
    );
    assert!(log.export_patient(&pid("p-9")).unwrap().is_empty());
}

pub(crate) fn latest_reads_newest_first<F: Fixture>(new: &dyn Fn() -> F) {
    let f = new();
    let (log, records) = five(&f);
    let seqs = |rs: Vec<AuditRecord>| rs.iter().map(|r| r.seq).collect::<Vec<_>>();
    let p1 = log.latest_for_patient(&pid("p-1"), 2).unwrap();
    assert_eq!(p1[0], records[4]);
    assert_eq!(seqs(p1), vec![5, 3]);
    assert_eq!(
        seqs(log.latest_for_patient(&pid("p-1"), 10).unwrap()),
        vec![5, 3, 1]
    );
    let refusals = [AuditAction::Refuse, AuditAction::AddOrg, AuditAction::Read];
    assert_eq!(seqs(log.latest(&refusals, 10).unwrap()), vec![4, 3]);
    assert_eq!(seqs(log.latest(&refusals, 1).unwrap()), vec![4]);
    assert!(log.latest(&[], 10).unwrap().is_empty());
}

pub(crate) fn entries_are_bounded<F: Fixture>(new: &dyn Fn() -> F) {
    let f = new();
    let log = f.open();
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
    assert_eq!(log.export_patient(&pid("p-1")).unwrap(), vec![]);
    assert!(log.verify().unwrap().ok);
}

/// Several entries in one append go in together, or not at all.
pub(crate) fn append_all_is_one_unit<F: Fixture>(new: &dyn Fn() -> F) {
    let f = new();
    let log = f.open();
    log.append_all(five_entries().to_vec()).unwrap();
    assert_eq!(log.len().unwrap(), 5);
    let mut bad = five_entries().to_vec();
    bad[3].actor = String::new();
    assert!(matches!(log.append_all(bad), Err(AuditError::Invalid(_))));
    log.append_all(Vec::new()).unwrap();
    let report = f.open().verify().unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records, 5, "nothing of the refused batch is kept");
    // The same records as five appends one by one: the chain does not depend on batching.
    let g = new();
    let (_, one_by_one) = five(&g);
    assert_eq!(report.head, one_by_one[4].hash);
}

/// Appenders on their own handles (connections, or processes and nodes) at once: one chain,
/// every record in it once, no two records after the same one.
pub(crate) fn concurrent_appenders_keep_one_chain<F: Fixture + Sync>(new: &dyn Fn() -> F) {
    const THREADS: usize = 4;
    let f = new();
    drop(f.open());
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let f = &f;
            s.spawn(move || {
                let log = f.open();
                for i in 0..15 {
                    log.append(
                        AuditEntry::new(i, format!("u-{t}"), AuditAction::Read)
                            .patient(&pid("p-1")),
                    )
                    .unwrap();
                }
                let batch = (0..10)
                    .map(|i| {
                        AuditEntry::new(i, format!("u-{t}"), AuditAction::Read)
                            .patient(&pid("p-1"))
                            .detail("batch")
                    })
                    .collect();
                log.append_all(batch).unwrap();
            });
        }
    });
    let log = f.open();
    let report = log.verify().unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!((report.records, log.len().unwrap()), (100, 100));
    let all = log.export_patient(&pid("p-1")).unwrap();
    assert_eq!(all.len(), 100);
    assert_eq!(all[0].prev, GENESIS_PREV);
    for w in all.windows(2) {
        assert_eq!((w[1].seq, &w[1].prev), (w[0].seq + 1, &w[0].hash));
    }
    // Each batch of 10 went in as one unit: its records follow one another.
    for t in 0..THREADS {
        let actor = format!("u-{t}");
        let batch: Vec<u64> = all
            .iter()
            .filter(|r| r.entry.actor == actor && r.entry.detail == "batch")
            .map(|r| r.seq)
            .collect();
        assert_eq!(batch.len(), 10);
        assert_eq!(batch[9] - batch[0], 9, "{actor}'s batch was interleaved");
    }
}

/// A write that fails returns its error: never a record reported as kept that is not, never a
/// half-written batch.
pub(crate) fn an_append_that_cannot_be_written_fails<F: Fixture>(new: &dyn Fn() -> F) {
    let f = new();
    let (log, records) = five(&f);
    let before = log.verify().unwrap();
    let broken = f.break_writes();
    let entry = || AuditEntry::new(6, "admin", AuditAction::Revoke).device(&dev("dev-x"));
    assert!(log.append(entry()).is_err(), "an append went unreported");
    assert!(log.append_all(vec![entry(), entry()]).is_err());
    drop(broken);
    drop(log);
    let log = f.open();
    assert_eq!(log.verify().unwrap(), before, "nothing was written");
    let r6 = log.append(entry()).unwrap();
    assert_eq!((r6.seq, r6.prev.as_str()), (6, records[4].hash.as_str()));
    assert!(log.verify().unwrap().ok);
}

/// An exporter of signed heads into a heads file in a directory of its own, with its key.
pub(crate) struct Heads {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) exporter: Exporter,
    pub(crate) public: ed25519_dalek::VerifyingKey,
}

impl Heads {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (key, made) = AuditKey::load_or_create(&dir.path().join(heads::KEY_FILE)).unwrap();
        assert!(made);
        let public = key.public();
        let exporter = Exporter::new(HeadExport {
            key,
            file: dir.path().join(heads::HEADS_FILE),
            every: heads::DEFAULT_EVERY,
        });
        Self {
            dir,
            exporter,
            public,
        }
    }
    pub(crate) fn file(&self) -> std::path::PathBuf {
        self.dir.path().join(heads::HEADS_FILE)
    }
    pub(crate) fn export(&mut self, log: &dyn AuditLog) -> heads::SignedHead {
        self.exporter
            .export(log, 1_800_000_000_000)
            .unwrap()
            .unwrap()
    }
    pub(crate) fn checkpoints(&self) -> Checkpoints {
        Checkpoints::load(&[self.file()], &[self.public]).unwrap()
    }
}

/// Rewrites records `from..` of `records` as someone with write access to the database would
/// to hide an edit: record `from` gets a new detail, and it and every later record a hash
/// recomputed with the chain's own function, the head row too. The chain stays consistent in
/// itself.
pub(crate) fn rewrite_from(
    tamper: &dyn Fn(&str),
    records: &[AuditRecord],
    from: u64,
    detail: &str,
) {
    let mut prev = records[usize::try_from(from).unwrap() - 2].hash.clone();
    for r in records.iter().filter(|r| r.seq >= from) {
        let mut r = r.clone();
        if r.seq == from {
            r.entry.detail = detail.to_owned();
        }
        r.prev = prev;
        r.hash = r.chain_hash();
        tamper(&format!(
            "UPDATE audit_log SET detail = '{}', prev = '{}', hash = '{}' WHERE seq = {}",
            r.entry.detail, r.prev, r.hash, r.seq
        ));
        prev = r.hash;
    }
    let last = records.last().unwrap().seq;
    tamper(&format!(
        "UPDATE audit_head SET count = {last}, hash = '{prev}'"
    ));
}

pub(crate) fn an_untouched_log_passes_its_signed_heads<F: Fixture>(new: &dyn Fn() -> F) {
    let f = new();
    let mut heads = Heads::new();
    let log = f.open();
    let entries = five_entries();
    for e in entries.iter().take(2).cloned() {
        log.append(e).unwrap();
    }
    assert_eq!(heads.export(&log).seq, 2);
    // Unmoved: nothing more is exported.
    assert!(heads.exporter.export(&log, 1).unwrap().is_none());
    for e in entries.iter().skip(2).cloned() {
        log.append(e).unwrap();
    }
    let h = heads.export(&log);
    assert_eq!((h.seq, h.hash.clone()), (5, log.head().unwrap().hash));
    let report = log.verify_against(&heads.checkpoints()).unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.signed_heads, 2);
    // The log goes on past its last exported head.
    log.append(AuditEntry::new(6, "system", AuditAction::AuthFailed))
        .unwrap();
    assert!(log.verify_against(&heads.checkpoints()).unwrap().ok);
}

pub(crate) fn a_chain_rewritten_after_a_signed_head_fails<F: Fixture>(new: &dyn Fn() -> F) {
    let f = new();
    let mut heads = Heads::new();
    let log = f.open();
    let mut records = Vec::new();
    for e in five_entries() {
        records.push(log.append(e).unwrap());
        if records.len() == 2 {
            heads.export(&log);
        }
    }
    heads.export(&log);
    assert!(log.verify_against(&heads.checkpoints()).unwrap().ok);
    rewrite_from(
        &|sql| f.tamper(sql),
        &records,
        3,
        "a refusal that never happened",
    );
    // The rewrite is consistent in itself: the chain alone cannot tell.
    assert!(log.verify().unwrap().ok);
    let report = log.verify_against(&heads.checkpoints()).unwrap();
    assert_problem(&report, "record 5: its hash");
    assert_problem(&report, "rewritten at or before record 5");
    // The head at record 2 still holds: the rewrite is after it.
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.signed_heads, 2);
}

pub(crate) fn a_cut_tail_is_caught_by_a_signed_head<F: Fixture>(new: &dyn Fn() -> F) {
    let f = new();
    let mut heads = Heads::new();
    let (log, records) = five(&f);
    heads.export(&log);
    f.tamper("DELETE FROM audit_log WHERE seq >= 4");
    f.tamper(&format!(
        "UPDATE audit_head SET count = 3, hash = '{}'",
        records[2].hash
    ));
    assert!(log.verify().unwrap().ok);
    let report = log.verify_against(&heads.checkpoints()).unwrap();
    assert_problem(&report, "record 5 is named by the signed head");
    assert_problem(&report, "records were deleted");
}

pub(crate) fn a_tampered_or_foreign_signed_head_fails<F: Fixture>(new: &dyn Fn() -> F) {
    let f = new();
    let mut heads = Heads::new();
    let (log, _) = five(&f);
    let signed = heads.export(&log);
    // A line altered after signing (its time moved), one signed by a key not trusted, and one
    // that is not a head at all.
    let altered = heads::SignedHead {
        at_ms: signed.at_ms + 1,
        ..signed.clone()
    };
    let (other, _) = AuditKey::load_or_create(&heads.dir.path().join("other-key")).unwrap();
    let foreign = other.sign(&log.head().unwrap(), 1);
    let mut text = std::fs::read_to_string(heads.file()).unwrap();
    text.push_str(&serde_json::to_string(&altered).unwrap());
    text.push('\n');
    text.push_str(&serde_json::to_string(&foreign).unwrap());
    text.push_str("\nnot json\n");
    std::fs::write(heads.file(), text).unwrap();
    let report = log.verify_against(&heads.checkpoints()).unwrap();
    assert_problem(&report, "line 2: the signature does not verify");
    assert_problem(&report, "line 3: signed by key");
    assert_problem(&report, "line 4: not a signed head");
    assert_eq!(report.problems.len(), 3, "{:?}", report.problems);
    assert_eq!(report.signed_heads, 1);
}
