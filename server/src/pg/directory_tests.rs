//! The directory on PostgreSQL against the directory's conformance suite (the very same cases
//! as the SQLite directory's), and what is PostgreSQL's own: its schema, its codes and secrets
//! stored only hashed, TLS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use postgres::NoTls;
use sync_core::{Role, UserId};

use super::testing::{TestDatabase, tls_server};
use super::{PgDirectory, SCHEMA_VERSION, tls_with_roots};
use crate::directory::conformance::{Fixture, directory_conformance};
use crate::directory::{DeviceCredential, Directory, DirectoryError};

/// A database of its own per test; each handle is a connection of its own.
struct Database(TestDatabase);

impl Fixture for Database {
    type Dir = PgDirectory;
    fn open(&self) -> PgDirectory {
        PgDirectory::open_config(self.0.config()).unwrap()
    }
}

mod conformance_suite {
    super::directory_conformance!(super::Database(super::TestDatabase::new()));
}

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

/// A directory with one carer, Anna, and her enrolled device: the directory, the enrollment
/// code she redeemed, and the device's credential.
fn with_enrolled_carer(db: &TestDatabase) -> (PgDirectory, String, DeviceCredential) {
    let d = PgDirectory::open_config(db.config()).unwrap();
    d.add_org("o1", "Org").unwrap();
    d.add_user(&uid("u-carer"), "Anna", Role::Carer, "o1")
        .unwrap();
    let code = d.enroll(&uid("u-carer"), 0).unwrap();
    let cred = d.redeem(&code, 1).unwrap();
    (d, code, cred)
}

/// Another node's directory write: a connection whose open transaction holds the directory's
/// lock until it runs `ROLLBACK`.
fn hold_directory_lock(db: &TestDatabase) -> postgres::Client {
    let mut other = db.config().connect(NoTls).unwrap();
    other.batch_execute("BEGIN").unwrap();
    other
        .execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&super::directory::DIRECTORY_LOCK],
        )
        .unwrap();
    other
}

#[test]
fn a_database_from_a_newer_build_is_refused_by_the_directory() {
    let db = TestDatabase::new();
    let mut admin = db.config().connect(NoTls).unwrap();
    admin
        .execute(
            "UPDATE schema_version SET version = $1",
            &[&(SCHEMA_VERSION + 1)],
        )
        .unwrap();
    match PgDirectory::open_config(db.config()) {
        Err(DirectoryError::NewerSchema { found, supported }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

#[test]
fn a_fresh_database_gets_the_directory_from_open() {
    // Not a clone of the template: an empty database, as a first node finds it.
    let db = TestDatabase::new();
    let mut admin = db.config().connect(NoTls).unwrap();
    admin
        .batch_execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        .unwrap();
    let d = PgDirectory::open_config(db.config()).unwrap();
    assert_eq!(d.generation().unwrap(), 0);
    d.add_org("o1", "Org").unwrap();
    assert_eq!(d.generation().unwrap(), 1);
    let version: i64 = admin
        .query_one("SELECT version FROM schema_version", &[])
        .unwrap()
        .get(0);
    assert_eq!(version, SCHEMA_VERSION);
}

#[test]
fn codes_and_secrets_are_stored_only_hashed() {
    let db = TestDatabase::new();
    let (_directory, code, cred) = with_enrolled_carer(&db);
    // Every column of every directory table, as text.
    let mut admin = db.config().connect(NoTls).unwrap();
    let mut dump = String::new();
    for table in ["enrollment_codes", "devices"] {
        for row in admin
            .query(&format!("SELECT t::text FROM {table} t"), &[])
            .unwrap()
        {
            dump.push_str(row.get::<_, &str>(0));
        }
    }
    assert!(dump.contains("u-carer"), "the dump reads the rows: {dump}");
    for needle in [&code, &cred.secret, &code.to_lowercase()] {
        assert!(!dump.contains(needle.as_str()), "{needle} stored");
    }
}

#[test]
fn the_directory_connects_over_tls() {
    let (config, ca) = tls_server();
    let tls = tls_with_roots(&ca).unwrap();
    let db = TestDatabase::new();
    let mut config = config;
    config.dbname(db.name());
    let d = PgDirectory::open_config_tls(config, tls).unwrap();
    d.add_org("o1", "Org").unwrap();
    assert_eq!(d.orgs().unwrap().len(), 1);
}

#[test]
fn a_devices_activity_passes_a_directory_write_that_holds_the_lock() {
    let db = TestDatabase::new();
    let (d, _, cred) = with_enrolled_carer(&db);
    let mut held = hold_directory_lock(&db);
    // A write that checks first waits for it (and gives up here, at a short lock timeout)...
    let mut probe = db.config().connect(NoTls).unwrap();
    probe.batch_execute("SET lock_timeout = '200ms'").unwrap();
    assert!(
        probe
            .execute(
                "SELECT pg_advisory_xact_lock($1)",
                &[&super::directory::DIRECTORY_LOCK]
            )
            .is_err(),
        "the lock is held"
    );
    // ...while the device's activity does not wait.
    d.record_connection(&cred.device, 10, Some(3), Some(2))
        .unwrap();
    held.batch_execute("ROLLBACK").unwrap();
    let info = &d.devices().unwrap()[0];
    assert_eq!((info.last_seen_ms, info.cursor), (Some(10), Some(3)));
    assert_eq!(d.waiting().unwrap()[&cred.device].changes, 2);
}

#[test]
fn a_registered_key_offered_again_passes_a_directory_write_that_holds_the_lock() {
    let db = TestDatabase::new();
    let (d, _, cred) = with_enrolled_carer(&db);
    let key = [7u8; 32];
    assert_eq!(
        d.register_key(&cred.device, &key).unwrap(),
        crate::directory::KeyRegistration::Registered
    );
    let mut held = hold_directory_lock(&db);
    // The device connects again and offers the key it registered: answered without waiting for
    // the lock (a write would wait until `held` ends, which only this thread ends).
    let (tx, rx) = std::sync::mpsc::channel();
    let device = cred.device.clone();
    let d2 = PgDirectory::open_config(db.config()).unwrap();
    std::thread::spawn(move || {
        let _ = tx.send(d2.register_key(&device, &key).map_err(|e| e.to_string()));
    });
    let answered = rx.recv_timeout(std::time::Duration::from_secs(20));
    held.batch_execute("ROLLBACK").unwrap();
    assert_eq!(
        answered.expect("register_key waited for the directory's lock"),
        Ok(crate::directory::KeyRegistration::Unchanged)
    );
    // Another key is still decided in a write: kept, and a conflict.
    assert_eq!(
        d.register_key(&cred.device, &[8u8; 32]).unwrap(),
        crate::directory::KeyRegistration::Conflict
    );
    assert_eq!(d.signing_key(&cred.device).unwrap(), Some(key));
}
