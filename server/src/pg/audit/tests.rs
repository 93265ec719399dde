//! The PostgreSQL audit log against the audit conformance suite (the very cases SQLite runs),
//! and what is PostgreSQL's own: forks refused by the database, appends in the document
//! store's transaction, and several connections storing changes with their records at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::any::Any;

use postgres::NoTls;
use sync_core::ChangeHash;
use sync_core::store::{Origin, Store};

use super::{PgAuditLog, append_on};
use crate::audit::conformance::{Fixture, dev, five, pid};
use crate::audit::{AuditAction, AuditEntry, AuditError, AuditLog};
use crate::pg::PgStore;
use crate::pg::testing::TestDatabase;

/// A database of its own per case; each handle is a connection of its own.
struct Pg(TestDatabase);

impl Pg {
    fn new() -> Self {
        Self(TestDatabase::new())
    }
    fn admin(&self) -> postgres::Client {
        self.0.config().connect(NoTls).unwrap()
    }
}

impl Fixture for Pg {
    type Log = PgAuditLog;
    fn open(&self) -> PgAuditLog {
        PgAuditLog::open_config(self.0.config()).unwrap()
    }
    fn tamper(&self, sql: &str) {
        self.admin().batch_execute(sql).unwrap();
    }
    fn break_writes(&self) -> Box<dyn Any> {
        // The database drops the log's connections and takes no new ones (a restart, a
        // failover, a network cut) until the value returned is dropped: a lost connection is
        // replaced by the next call, so cutting it alone would not break the next write.
        let name = self.0.name().to_owned();
        let mut admin = crate::pg::testing::server_config().connect(NoTls).unwrap();
        admin
            .batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
            .unwrap();
        let cut = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                &[&name],
            )
            .unwrap();
        assert!(!cut.is_empty(), "the log had no connection to cut");
        Box::new(Closed { admin, name })
    }
}

/// Takes connections to the database again when dropped.
struct Closed {
    admin: postgres::Client,
    name: String,
}

impl Drop for Closed {
    fn drop(&mut self) {
        let sql = format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", self.name);
        if let Err(e) = self.admin.batch_execute(&sql) {
            eprintln!("reopening {}: {e}", self.name);
        }
    }
}

mod conformance_suite {
    crate::audit_conformance!(super::Pg::new());
}

fn entry(i: i64, actor: &str) -> AuditEntry {
    AuditEntry::new(i, actor, AuditAction::Accept)
        .device(&dev("dev-a"))
        .patient(&pid("p-1"))
        .document("p-1/journal/2026-11")
}

#[test]
fn the_database_refuses_a_second_record_after_one_record() {
    let f = Pg::new();
    let (log, records) = five(&f);
    // A writer that bypasses the head (another build, a hand-written INSERT) and links a record
    // to record 2, which record 3 already follows: a fork. Refused, whatever its number.
    for seq in [3_i64, 6] {
        let fork = f.admin().execute(
            "INSERT INTO audit_log (seq, at_ms, actor, action, detail, prev, hash)
             VALUES ($1, 0, 'intruder', 'read', '', $2, 'x')",
            &[&seq, &records[1].hash],
        );
        let e = fork.expect_err("a fork was stored");
        assert_eq!(
            e.code(),
            Some(&postgres::error::SqlState::UNIQUE_VIOLATION),
            "{e}"
        );
    }
    assert!(log.verify().unwrap().ok);
    assert_eq!(log.len().unwrap(), 5);
}

/// The sync shell's shape on several nodes: each connection stores a change and its audit
/// record in one store group (or only discloses, with a record), all at once. Every change is
/// in the feed, every record in one chain.
#[test]
fn store_groups_on_several_connections_commit_changes_with_their_records() {
    const THREADS: u8 = 4;
    const STEPS: u8 = 10;
    let db = TestDatabase::new();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let db = &db;
            s.spawn(move || {
                let mut store = db.open();
                let doc = "p-1/journal/2026-11".parse().unwrap();
                for i in 0..STEPS {
                    store.begin_group().unwrap();
                    // Every other step only discloses: its group takes no feed counter, only
                    // the audit head.
                    let mut record = entry(i.into(), &format!("u-{t}"));
                    if i % 2 == 0 {
                        let change = ChangeHash([t * STEPS + i; 32]);
                        store
                            .append(&doc, &[(change, b"c")], Origin::Remote)
                            .unwrap();
                    } else {
                        record.action = AuditAction::Disclose;
                    }
                    let record = vec![record];
                    store
                        .with_group_connection(|c| append_on(c, record))
                        .expect("a group is open")
                        .unwrap();
                    store.commit_group().unwrap();
                }
            });
        }
    });
    let total = u64::from(THREADS) * u64::from(STEPS);
    assert_eq!(db.open().feed_head().unwrap(), total / 2);
    let log = PgAuditLog::open_config(db.config()).unwrap();
    let report = log.verify().unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!((report.records, log.len().unwrap()), (total, total));
}

/// An audit append that fails in a store group fails the group: the change it was to record
/// is not stored either. Without a group there is no connection to append on.
#[test]
fn a_failed_audit_append_in_a_store_group_keeps_nothing() {
    let db = TestDatabase::new();
    let mut store: PgStore = db.open();
    let doc = "p-1/careplan".parse().unwrap();
    assert!(
        store.with_group_connection(|_| ()).is_none(),
        "no group open"
    );
    // Outside a transaction: refused, nothing written.
    let mut plain = db.config().connect(NoTls).unwrap();
    assert!(matches!(
        append_on(&mut plain, vec![entry(1, "u-anna")]),
        Err(AuditError::Invalid(_))
    ));
    // The head row gone (tampering): the append fails, the group rolls back as the sync shell
    // does on any error.
    plain.batch_execute("DELETE FROM audit_head").unwrap();
    store.begin_group().unwrap();
    store
        .append(&doc, &[(ChangeHash([7; 32]), b"c")], Origin::Remote)
        .unwrap();
    let appended = store
        .with_group_connection(|c| append_on(c, vec![entry(1, "u-anna")]))
        .unwrap();
    assert!(matches!(appended, Err(AuditError::MissingHead)));
    store.rollback_group();
    assert_eq!(
        store.feed_head().unwrap(),
        0,
        "the change went with its record"
    );
    assert!(store.load(&doc).unwrap().is_none());
    // With the head back, both commit together.
    plain
        .batch_execute("INSERT INTO audit_head (count, hash) VALUES (0, repeat('0', 64))")
        .unwrap();
    store.begin_group().unwrap();
    store
        .append(&doc, &[(ChangeHash([7; 32]), b"c")], Origin::Remote)
        .unwrap();
    store
        .with_group_connection(|c| append_on(c, vec![entry(1, "u-anna"), entry(2, "u-anna")]))
        .unwrap()
        .unwrap();
    store.commit_group().unwrap();
    assert_eq!(store.feed_head().unwrap(), 1);
    let log = PgAuditLog::open_config(db.config()).unwrap();
    assert_eq!(log.len().unwrap(), 2);
    assert!(log.verify().unwrap().ok);
}

/// The log's tables come with the store's numbered migrations: a log opened on a database a
/// newer build migrated is refused, as the store is.
#[test]
fn a_log_on_a_database_from_a_newer_build_is_refused() {
    let db = TestDatabase::new();
    let mut admin = db.config().connect(NoTls).unwrap();
    admin
        .execute(
            "UPDATE schema_version SET version = $1",
            &[&(crate::pg::SCHEMA_VERSION + 1)],
        )
        .unwrap();
    match PgAuditLog::open_config(db.config()) {
        Err(AuditError::NewerSchema { found, supported }) => {
            assert_eq!(
                (found, supported),
                (crate::pg::SCHEMA_VERSION + 1, crate::pg::SCHEMA_VERSION)
            );
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

/// A group whose first step only records (a disclosure) holds the feed counter from that first
/// append on, as a group that stores a change does: hot rows in one order (the counter, then
/// the audit head). Holding the audit head alone, a later step of the group waiting for the
/// counter deadlocked with another node's group holding the counter and waiting for the head.
#[test]
fn an_audit_append_in_a_store_group_takes_the_feed_counter_first() {
    let db = TestDatabase::new();
    let mut store: PgStore = db.open();
    store.begin_group().unwrap();
    let mut record = entry(1, "u-anna");
    record.action = AuditAction::Disclose;
    store
        .with_group_connection(|c| append_on(c, vec![record]))
        .expect("a group is open")
        .unwrap();
    let mut other = db.config().connect(NoTls).unwrap();
    let taken = other.batch_execute("SELECT 1 FROM feed_head FOR UPDATE NOWAIT");
    let e = taken.expect_err("the feed counter was free while the group held the audit head");
    assert_eq!(
        e.code(),
        Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE),
        "{e}"
    );
    store.commit_group().unwrap();
    other
        .batch_execute("SELECT 1 FROM feed_head FOR UPDATE NOWAIT")
        .unwrap();
}
