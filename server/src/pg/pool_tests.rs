//! The pools of the directory and the audit log (`pool.rs`) on real PostgreSQL: a call does
//! not wait behind another call's open transaction, and a connection whose backend was
//! terminated is replaced before a call gets it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use postgres::NoTls;
use sync_core::PatientId;

use super::PgDirectory;
use super::audit::PgAuditLog;
use super::testing::TestDatabase;
use crate::audit::AuditLog;
use crate::directory::{Backend, Directory};

/// Generous: a call that waits behind a held connection never completes at all.
const WAIT: Duration = Duration::from_secs(60);

/// The backends connected to `db`, other than the asking one.
fn backends(db: &TestDatabase) -> Vec<i32> {
    let mut admin = db.config().connect(NoTls).unwrap();
    admin
        .query(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&db.name()],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Terminates every backend connected to `db` (as an operator or a failover would) and waits
/// until they are gone; returns their pids.
fn kill_backends(db: &TestDatabase) -> Vec<i32> {
    let killed = backends(db);
    assert!(!killed.is_empty(), "nothing connected to kill");
    let mut admin = db.config().connect(NoTls).unwrap();
    for pid in &killed {
        admin
            .execute("SELECT pg_terminate_backend($1)", &[pid])
            .unwrap();
    }
    let deadline = Instant::now() + WAIT;
    while backends(db).iter().any(|p| killed.contains(p)) {
        assert!(Instant::now() < deadline, "terminated backends stayed");
        std::thread::sleep(Duration::from_millis(20));
    }
    killed
}

/// While one call holds a pooled connection in an open write transaction (the directory's
/// lock taken), another call on the same directory still completes: it gets another
/// connection. (On one shared connection it would wait for the first call for ever.)
#[test]
fn a_directory_read_completes_while_another_call_holds_a_connection() {
    let db = TestDatabase::new();
    let dir = Arc::new(PgDirectory::open_pool(db.config(), None, 3).unwrap());
    dir.add_patient(&PatientId::new("p-1").unwrap(), "Person 1")
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = Arc::clone(&dir);
    let held = dir.backend().write(|_rows| {
        // In the write's transaction, on a connection of the pool: a read on another thread.
        std::thread::spawn(move || {
            let _ = tx.send(reader.patients());
        });
        Ok(rx.recv_timeout(WAIT))
    });
    let read = held
        .unwrap()
        .expect("the read completed while another call held a connection");
    assert_eq!(read.unwrap().len(), 1);
}

/// The pool's size is the one configured (the server's `--database-pool`).
#[test]
fn the_pools_have_the_configured_size() {
    let db = TestDatabase::new();
    assert_eq!(
        PgDirectory::open_pool(db.config(), None, 5)
            .unwrap()
            .backend()
            .pool_size(),
        5
    );
    assert!(PgDirectory::open_pool(db.config(), None, 0).is_err());
    assert!(PgAuditLog::open_pool(db.config(), None, super::MAX_POOL_SIZE + 1).is_err());
}

/// A connection whose backend was terminated (`pg_terminate_backend`) is not handed out
/// again: the next call gets a new connection and succeeds.
#[test]
fn a_terminated_backend_is_replaced_in_the_directorys_pool() {
    let db = TestDatabase::new();
    let dir = PgDirectory::open_pool(db.config(), None, 1).unwrap();
    dir.add_patient(&PatientId::new("p-1").unwrap(), "Person 1")
        .unwrap();
    let killed = kill_backends(&db);
    assert_eq!(dir.patients().unwrap().len(), 1, "the call after the kill");
    let now = backends(&db);
    assert!(!now.is_empty() && now.iter().all(|p| !killed.contains(p)));
    // And again, on the replacement.
    assert_eq!(dir.patients().unwrap().len(), 1);
}

/// The same for the audit log's pool.
#[test]
fn a_terminated_backend_is_replaced_in_the_audit_logs_pool() {
    let db = TestDatabase::new();
    let log = PgAuditLog::open_pool(db.config(), None, 1).unwrap();
    let before = log.len().unwrap();
    let killed = kill_backends(&db);
    assert_eq!(log.len().unwrap(), before, "the call after the kill");
    assert!(backends(&db).iter().all(|p| !killed.contains(p)));
    assert!(log.verify().is_ok());
}
