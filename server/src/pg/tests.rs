//! The PostgreSQL store against `sync-core`'s conformance suite (the very same cases as the
//! SQLite and in-memory stores), and what is PostgreSQL's own: migrations, and proof that the
//! concurrent-writers case catches the feed a plain sequence gives.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use postgres::{Client, NoTls};
use sync_core::store::conformance::{self, Fixture};
use sync_core::store::{Epoch, FeedEntry, FeedProof, Origin, Store, StoredDocument};
use sync_core::{ChangeHash, DocumentId, StoreError};

use super::testing::{TestDatabase, tls_server};
use super::{PgStore, SCHEMA_VERSION, tls_with_roots};

/// A database of its own per test; each handle is a connection of its own.
struct Database(TestDatabase);

impl Fixture for Database {
    type Store = PgStore;
    fn open(&self) -> PgStore {
        self.0.open()
    }
}

mod conformance_suite {
    sync_core::store_conformance!(super::Database(super::TestDatabase::new()));
}

#[test]
fn a_database_from_a_newer_build_is_refused_and_migrating_twice_is_harmless() {
    let db = TestDatabase::new();
    drop(db.open());
    let mut admin = db.config().connect(NoTls).unwrap();
    admin
        .execute(
            "UPDATE schema_version SET version = $1",
            &[&(SCHEMA_VERSION + 1)],
        )
        .unwrap();
    match PgStore::open_config(db.config()) {
        Err(StoreError::NewerSchema { found, supported }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    admin
        .execute("UPDATE schema_version SET version = $1", &[&SCHEMA_VERSION])
        .unwrap();
    // Opened again (as every node does at start): nothing is applied twice.
    let mut s = db.open();
    s.append(
        &"p-1/careplan".parse().unwrap(),
        &[(ChangeHash([1; 32]), b"x")],
        Origin::Remote,
    )
    .unwrap();
    assert_eq!(db.open().feed_head().unwrap(), 1);
}

#[test]
fn a_fresh_database_is_migrated_by_open() {
    // Not a clone of the template: an empty database, as a first node finds it.
    let db = TestDatabase::new();
    let mut admin = db.config().connect(NoTls).unwrap();
    admin
        .batch_execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        .unwrap();
    let s = db.open();
    assert_eq!(s.feed_head().unwrap(), 0);
    let version: i64 = admin
        .query_one("SELECT version FROM schema_version", &[])
        .unwrap()
        .get(0);
    assert_eq!(version, SCHEMA_VERSION);
    assert_ne!(s.epoch().unwrap(), [0; 16]);
}

#[test]
fn tls_to_postgresql_is_used_and_the_server_certificate_verified() {
    let db = TestDatabase::new();
    let (mut config, ca) = tls_server();
    config.dbname(db.name());
    let mut s = PgStore::open_config_tls(config.clone(), tls_with_roots(&ca).unwrap()).unwrap();
    let doc: DocumentId = "p-1/careplan".parse().unwrap();
    s.append(&doc, &[(ChangeHash([1; 32]), b"x")], Origin::Remote)
        .unwrap();
    assert_eq!(s.feed_head().unwrap(), 1);
    // The store's connection is encrypted.
    let mut admin = db.config().connect(NoTls).unwrap();
    let encrypted: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
             WHERE ssl AND datname = $1",
            &[&db.name()],
        )
        .unwrap()
        .get(0);
    assert_eq!(encrypted, 1);
    // A certificate authority that did not sign the server's certificate: refused.
    let dir = tempfile::tempdir().unwrap();
    let stranger = dir.path().join("other-ca.pem");
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(&stranger, other.cert.pem()).unwrap();
    let refused = PgStore::open_config_tls(config, tls_with_roots(&stranger).unwrap());
    let err = refused.expect_err("a server certificate from an unknown CA was accepted");
    assert!(
        format!("{err:?}").contains("UnknownIssuer"),
        "refused for another reason: {err:?}"
    );
    // A file with no certificate is a clear error, not an empty trust store.
    std::fs::write(&stranger, "not a certificate").unwrap();
    assert!(tls_with_roots(&stranger).is_err());
}

/// The concurrent-writers case has teeth: a feed numbered by a plain sequence, with writers
/// that stay open a little while after taking their positions, makes it fail with missed rows.
#[test]
fn the_concurrent_writers_case_catches_a_sequence_numbered_feed() {
    let db = TestDatabase::new();
    let mut admin = db.config().connect(NoTls).unwrap();
    admin
        .batch_execute(
            "CREATE TABLE naive_feed (
                 seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 doc_id text NOT NULL,
                 hash bytea NOT NULL
             )",
        )
        .unwrap();
    let fixture = Naive {
        db,
        opened: AtomicUsize::new(0),
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        conformance::feed_order_under_concurrent_writers(&fixture)
    }));
    let Err(payload) = outcome else {
        panic!("a sequence-numbered feed passed the concurrent-writers case");
    };
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(message.contains("missed"), "{message}");
}

struct Naive {
    db: TestDatabase,
    opened: AtomicUsize,
}

impl Fixture for Naive {
    type Store = NaiveStore;
    fn open(&self) -> NaiveStore {
        // Every other writer stays open for a while after numbering its rows, as a busy
        // server's transactions do.
        let n = self.opened.fetch_add(1, Ordering::Relaxed);
        NaiveStore {
            client: Mutex::new(self.db.config().connect(NoTls).unwrap()),
            linger: Duration::from_millis(if n % 2 == 1 { 8 } else { 0 }),
        }
    }
}

/// Only what the concurrent-writers case uses: grouped appends and `feed_after`, over a feed
/// numbered by an identity column.
struct NaiveStore {
    client: Mutex<Client>,
    linger: Duration,
}

fn unsupported<T>() -> Result<T, StoreError> {
    Err(StoreError::BadRow("not part of this test double".into()))
}

impl Store for NaiveStore {
    fn claim_device(
        &mut self,
        _: &sync_core::DeviceId,
        _: &str,
        _: i64,
    ) -> Result<sync_core::store::Lease, StoreError> {
        unsupported()
    }
    fn check_lease(&self, _: &sync_core::DeviceId, _: u64) -> Result<(), StoreError> {
        unsupported()
    }
    fn append(
        &mut self,
        doc: &DocumentId,
        changes: &[(ChangeHash, &[u8])],
        _origin: Origin,
    ) -> Result<(), StoreError> {
        let client = self.client.get_mut().unwrap();
        for (hash, _) in changes {
            client
                .execute(
                    "INSERT INTO naive_feed (doc_id, hash) VALUES ($1, $2)",
                    &[&doc.to_string(), &&hash.0[..]],
                )
                .map_err(super::pg)?;
        }
        std::thread::sleep(self.linger);
        Ok(())
    }
    fn feed_after(&self, after: u64, limit: usize) -> Result<Vec<FeedEntry>, StoreError> {
        let rows = self
            .client
            .lock()
            .unwrap()
            .query(
                "SELECT seq, doc_id, hash FROM naive_feed WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&(after as i64), &(limit as i64)],
            )
            .map_err(super::pg)?;
        Ok(rows
            .iter()
            .map(|r| FeedEntry {
                seq: r.get::<_, i64>(0) as u64,
                doc: r.get::<_, &str>(1).parse().unwrap(),
                hash: ChangeHash::try_from(r.get::<_, &[u8]>(2)).unwrap(),
            })
            .collect())
    }
    fn begin_group(&mut self) -> Result<(), StoreError> {
        self.client
            .get_mut()
            .unwrap()
            .batch_execute("BEGIN")
            .map_err(super::pg)
    }
    fn commit_group(&mut self) -> Result<(), StoreError> {
        self.client
            .get_mut()
            .unwrap()
            .batch_execute("COMMIT")
            .map_err(super::pg)
    }
    fn rollback_group(&mut self) {
        self.client
            .get_mut()
            .unwrap()
            .batch_execute("ROLLBACK")
            .unwrap();
    }
    fn documents(&self) -> Result<Vec<DocumentId>, StoreError> {
        unsupported()
    }
    fn load(&self, _: &DocumentId) -> Result<Option<StoredDocument>, StoreError> {
        unsupported()
    }
    fn compact(&mut self, _: &DocumentId, _: &[u8], _: &[ChangeHash]) -> Result<(), StoreError> {
        unsupported()
    }
    fn pending(&self) -> Result<Vec<(DocumentId, ChangeHash)>, StoreError> {
        unsupported()
    }
    fn mark_uploaded(&mut self, _: &DocumentId, _: &[ChangeHash]) -> Result<(), StoreError> {
        unsupported()
    }
    fn feed_head(&self) -> Result<u64, StoreError> {
        unsupported()
    }
    fn feed_position(&self, _: &DocumentId, _: &ChangeHash) -> Result<Option<u64>, StoreError> {
        unsupported()
    }
    fn epoch(&self) -> Result<Epoch, StoreError> {
        unsupported()
    }
    fn set_epoch(&mut self, _: Epoch) -> Result<(), StoreError> {
        unsupported()
    }
    fn feed_proof(&self, _: u64) -> Result<FeedProof, StoreError> {
        unsupported()
    }
    fn meta(&self, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
        unsupported()
    }
    fn set_meta(&mut self, _: &str, _: &[u8]) -> Result<(), StoreError> {
        unsupported()
    }
    fn remove_document(&mut self, _: &DocumentId) -> Result<(), StoreError> {
        unsupported()
    }
}

/// A group of sync steps, each in its savepoint, one rolled back: the counter row is written
/// once, at commit (`counter.rs`), and the step rolled back takes its position with it.
#[test]
fn a_group_writes_the_feed_counter_once_and_a_rolled_back_step_leaves_no_gap() {
    use crate::store::ServerStore;
    use sync_core::store::{EMPTY_FEED_PROOF, next_feed_proof};

    let db = TestDatabase::new();
    let mut s = db.open();
    let doc: DocumentId = "p-1/careplan".parse().unwrap();
    s.begin_group().unwrap();
    for (i, keep) in [(1u8, true), (2, false), (3, true), (4, true)] {
        s.begin_step().unwrap();
        s.append(&doc, &[(ChangeHash([i; 32]), b"x")], Origin::Remote)
            .unwrap();
        s.end_step(keep).unwrap();
    }
    // Inside the group the store's head counts the group's rows, and its reads see them.
    assert_eq!(s.feed_head().unwrap(), 3);
    assert_eq!(
        s.feed_position(&doc, &ChangeHash([4; 32])).unwrap(),
        Some(3)
    );
    // The row itself has not been written yet, not even as a version of this transaction.
    let (row, updates) = s
        .with_group_connection(|c| {
            let row: i64 = c
                .query_one("SELECT seq FROM feed_head", &[])
                .unwrap()
                .get(0);
            let updates: i64 = c
                .query_one(
                    "SELECT coalesce(sum(n_tup_upd), 0)::bigint FROM pg_stat_xact_user_tables
                     WHERE relname = 'feed_head'",
                    &[],
                )
                .unwrap()
                .get(0);
            (row, updates)
        })
        .unwrap();
    assert_eq!((row, updates), (0, 0));
    s.commit_group().unwrap();

    let other = db.open();
    assert_eq!(other.feed_head().unwrap(), 3);
    let feed = other.feed_after(0, 10).unwrap();
    let got: Vec<(u64, u8)> = feed.iter().map(|e| (e.seq, e.hash.0[0])).collect();
    assert_eq!(got, [(1, 1), (2, 3), (3, 4)]);
    let mut proof = EMPTY_FEED_PROOF;
    for i in [1u8, 3, 4] {
        proof = next_feed_proof(&proof, &doc, &ChangeHash([i; 32]));
    }
    assert_eq!(other.feed_proof(3).unwrap(), proof);
    // The next transaction numbers on from the row as committed.
    let mut s = db.open();
    s.append(&doc, &[(ChangeHash([5; 32]), b"x")], Origin::Remote)
        .unwrap();
    assert_eq!(
        other.feed_position(&doc, &ChangeHash([5; 32])).unwrap(),
        Some(4)
    );
}
