//! The SQLite store's own cases (the shared contract is `store::conformance`).

use super::*;

fn fresh() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("store.db")).unwrap();
    (dir, store)
}

/// One store file in a temporary directory; each handle is a connection of its own.
struct File(tempfile::TempDir);
impl crate::store::conformance::Fixture for File {
    type Store = SqliteStore;
    fn open(&self) -> SqliteStore {
        SqliteStore::open(self.0.path().join("store.db")).unwrap()
    }
}

mod conformance {
    crate::store_conformance!(super::File(tempfile::tempdir().unwrap()));
}

/// The server and its admin CLI may open one fresh file at the same moment: every opener
/// succeeds, the migrations run once (before `enable_wal` and the re-check, about one
/// round in ten failed with `SQLITE_BUSY`).
#[test]
fn stores_opened_on_one_fresh_file_at_once_all_open() {
    for _ in 0..50 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let start = std::sync::Barrier::new(4);
        std::thread::scope(|s| {
            let opens: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        SqliteStore::open(&path)
                    })
                })
                .collect();
            for o in opens {
                let store = o.join().unwrap().unwrap();
                let v: i64 = store
                    .conn
                    .pragma_query_value(None, "user_version", |r| r.get(0))
                    .unwrap();
                assert_eq!(v, SCHEMA_VERSION);
            }
        });
    }
}

#[test]
fn a_callers_table_commits_and_rolls_back_with_the_group() {
    let (_dir, mut s) = fresh();
    assert!(s.with_group_connection(|_| ()).is_none(), "no group open");
    s.begin_group().unwrap();
    s.with_group_connection(|c| c.execute_batch("CREATE TABLE mine (x INTEGER)"))
        .unwrap()
        .unwrap();
    s.set_meta("k", b"v").unwrap();
    s.rollback_group();
    assert_eq!(s.meta("k").unwrap(), None);
    s.begin_group().unwrap();
    s.with_group_connection(|c| c.execute_batch("CREATE TABLE mine (x INTEGER)"))
        .unwrap()
        .unwrap();
    // A nested group joins the outer one: its commit commits nothing yet.
    s.begin_group().unwrap();
    s.with_group_connection(|c| c.execute("INSERT INTO mine VALUES (1)", []))
        .unwrap()
        .unwrap();
    s.commit_group().unwrap();
    assert!(s.with_group_connection(|_| ()).is_some(), "still open");
    s.commit_group().unwrap();
    assert!(s.with_group_connection(|_| ()).is_none());
    // An inner rollback undoes the inner group only (the conformance case
    // `an_inner_group_rolls_back_alone`); if SQLite rolled the whole transaction back (as
    // on a full disk), everything goes and the outer commit fails.
    // The same whether the inner group then rolls back or commits.
    for inner_commits in [false, true] {
        s.begin_group().unwrap();
        s.set_meta("k", b"outer").unwrap();
        s.begin_group().unwrap();
        s.with_group_connection(|c| c.execute_batch("ROLLBACK"))
            .unwrap()
            .unwrap();
        if inner_commits {
            assert!(s.commit_group().is_err());
        } else {
            s.rollback_group();
        }
        // A write after the lost transaction does not commit on its own either.
        s.set_meta("after", b"x").unwrap();
        assert!(s.commit_group().is_err());
        assert_eq!(s.meta("k").unwrap(), None);
        assert_eq!(s.meta("after").unwrap(), None);
    }
    // The store is usable afterwards.
    s.set_meta("k", b"later").unwrap();
    assert_eq!(s.meta("k").unwrap().as_deref(), Some(&b"later"[..]));
}

#[test]
fn a_group_commits_all_its_writes_together_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let doc: DocumentId = "p-1/journal/2026-11".parse().unwrap();
    let h = |n: u8| ChangeHash([n; 32]);
    {
        let mut s = SqliteStore::open(&path).unwrap();
        // Rolled back: neither the change nor the cursor is there.
        s.begin_group().unwrap();
        s.append(&doc, &[(h(1), &b"one"[..])], Origin::Remote)
            .unwrap();
        s.set_meta("cursor", b"1").unwrap();
        s.rollback_group();
        assert!(s.load(&doc).unwrap().is_none());
        assert_eq!(s.meta("cursor").unwrap(), None);
        // Committed: both, and both survive reopening.
        s.begin_group().unwrap();
        s.append(&doc, &[(h(2), &b"two"[..])], Origin::Remote)
            .unwrap();
        s.mark_uploaded(&doc, &[h(2)]).unwrap();
        s.set_meta("cursor", b"2").unwrap();
        s.commit_group().unwrap();
        // Outside a group, every write commits on its own again.
        s.append(&doc, &[(h(3), &b"three"[..])], Origin::Local)
            .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    let stored = s.load(&doc).unwrap().unwrap();
    let hashes: Vec<ChangeHash> = stored.changes.iter().map(|(h, _)| *h).collect();
    assert_eq!(hashes, vec![h(2), h(3)]);
    assert_eq!(s.meta("cursor").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(s.pending().unwrap(), vec![(doc, h(3))]);
}

/// An append that fails part-way (here a trigger refuses its second change) leaves nothing of
/// itself, on its own and inside a group; the group's other writes stay and commit, and the
/// store takes the next append.
#[test]
fn an_append_that_fails_part_way_leaves_nothing_of_itself() {
    let (_dir, mut s) = fresh();
    let doc: DocumentId = "p-1/journal/2026-11".parse().unwrap();
    let h = |n: u8| ChangeHash([n; 32]);
    refuse_hash_nine(&mut s);
    let stored = |s: &SqliteStore| stored_hashes(s, &doc);
    // On its own.
    assert!(
        s.append(
            &doc,
            &[(h(1), &b"one"[..]), (h(9), &b"nine"[..])],
            Origin::Local
        )
        .is_err()
    );
    assert_eq!(stored(&s), Vec::<ChangeHash>::new());
    assert_eq!(s.pending().unwrap(), vec![]);
    assert_eq!(s.feed_head().unwrap(), 0);
    // Inside a group, between two writes of the group.
    s.begin_group().unwrap();
    s.append(&doc, &[(h(2), &b"two"[..])], Origin::Local)
        .unwrap();
    assert!(
        s.append(
            &doc,
            &[(h(3), &b"three"[..]), (h(9), &b"nine"[..])],
            Origin::Local
        )
        .is_err()
    );
    s.set_meta("cursor", b"3").unwrap();
    s.commit_group().unwrap();
    assert_eq!(stored(&s), vec![h(2)]);
    assert_eq!(s.pending().unwrap(), vec![(doc.clone(), h(2))]);
    assert_eq!(s.meta("cursor").unwrap().as_deref(), Some(&b"3"[..]));
    // And the next append goes in after it.
    s.append(&doc, &[(h(4), &b"four"[..])], Origin::Remote)
        .unwrap();
    assert_eq!(stored(&s), vec![h(2), h(4)]);
    assert_eq!(s.feed_head().unwrap(), 2);
}

#[test]
fn an_encrypted_store_is_unreadable_without_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("phone.db");
    let key = EncryptionKey([7; 32]);
    let doc: DocumentId = "p-1/journal/2026-11".parse().unwrap();
    let secret = b"Patient p-1 has a pressure ulcer on the left heel";
    {
        let mut s = SqliteStore::open_encrypted(&path, &key).unwrap();
        s.append(&doc, &[(ChangeHash([1; 32]), secret)], Origin::Local)
            .unwrap();
    }
    // Nothing readable in the files: not the SQLite header, not the document id, not the text.
    let mut raw = std::fs::read(&path).unwrap();
    if let Ok(wal) = std::fs::read(dir.path().join("phone.db-wal")) {
        raw.extend(wal);
    }
    let contains = |needle: &[u8]| raw.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(b"SQLite format 3"));
    assert!(!contains(b"p-1/journal"));
    assert!(!contains(b"pressure ulcer"));
    // Without the key, or with another one: a clear error.
    assert!(matches!(
        SqliteStore::open(&path),
        Err(StoreError::WrongKey)
    ));
    assert!(matches!(
        SqliteStore::open_encrypted(&path, &EncryptionKey([8; 32])),
        Err(StoreError::WrongKey)
    ));
    // With it, everything is there.
    let s = SqliteStore::open_encrypted(&path, &key).unwrap();
    assert_eq!(s.load(&doc).unwrap().unwrap().changes[0].1, secret.to_vec());
    assert_eq!(s.integrity_check().unwrap(), Ok(()));
    assert_eq!(format!("{key:?}"), "EncryptionKey(..)");
}

#[test]
fn a_store_from_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(conn);
    match SqliteStore::open(&path) {
        Err(StoreError::NewerSchema { found, supported }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

#[test]
fn reopening_keeps_data_and_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let doc: DocumentId = "p-1/careplan".parse().unwrap();
    {
        let mut s = SqliteStore::open(&path).unwrap();
        s.append(&doc, &[(ChangeHash([1; 32]), b"x")], Origin::Local)
            .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(
        s.load(&doc).unwrap().unwrap().changes,
        vec![(ChangeHash([1; 32]), b"x".to_vec())]
    );
    assert_eq!(s.integrity_check().unwrap(), Ok(()));
    let v: i64 = s
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
}

#[test]
fn feed_entries_from_before_the_proofs_get_theirs_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let doc: DocumentId = "p-1/careplan".parse().unwrap();
    let (h1, h2) = (ChangeHash([1; 32]), ChangeHash([2; 32]));
    let expected = {
        let mut s = SqliteStore::open(&path).unwrap();
        s.append(&doc, &[(h1, b"x"), (h2, b"y")], Origin::Local)
            .unwrap();
        let expected = s.feed_proof(2).unwrap();
        // As a store written before migration 0003 left them.
        s.conn.execute("UPDATE feed SET proof = NULL", []).unwrap();
        expected
    };
    let mut s = SqliteStore::open(&path).unwrap();
    let p1 = next_feed_proof(&EMPTY_FEED_PROOF, &doc, &h1);
    assert_eq!(s.feed_proof(1).unwrap(), p1);
    assert_eq!(s.feed_proof(2).unwrap(), expected);
    assert_eq!(expected, next_feed_proof(&p1, &doc, &h2));
    // And the chain goes on from them.
    let h3 = ChangeHash([3; 32]);
    s.append(&doc, &[(h3, b"z")], Origin::Remote).unwrap();
    assert_eq!(
        s.feed_proof(3).unwrap(),
        next_feed_proof(&expected, &doc, &h3)
    );
}

/// Scans of the feed from changing positions, with changing limits, reuse one prepared
/// statement: SQLite does not prepare it again for each (it did with a bound `LIMIT`).
#[test]
fn feed_scans_reuse_their_prepared_statement() {
    use rusqlite::StatementStatus;
    let (_dir, mut s) = fresh();
    let d: DocumentId = "p-1/careplan".parse().unwrap();
    for i in 0..50u8 {
        s.append(&d, &[(ChangeHash([i; 32]), b"x")], Origin::Remote)
            .unwrap();
    }
    for i in 0..20u64 {
        let feed = s.feed_after(i, 10 + i as usize).unwrap();
        assert_eq!(feed.len(), 10 + i as usize);
        assert_eq!(feed[0].seq, i + 1);
    }
    assert_eq!(s.feed_after(45, 100).unwrap().len(), 5);
    let stmt = s.conn.prepare_cached(FEED_AFTER).unwrap();
    assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0);
}

/// A relaxed group ([`Store::begin_relaxed_group`]) runs at `synchronous=NORMAL` and commits
/// its writes (they are there for the next connection, as after a crash of the process);
/// the connection is back at `FULL` after its commit or rollback. A durable group opened
/// inside it makes the transaction durable (a durable commit follows); a relaxed group
/// opened inside a durable one is a savepoint of a durable transaction.
#[test]
fn a_relaxed_group_commits_and_every_other_commit_stays_full() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let synchronous = |s: &SqliteStore| -> i64 {
        s.conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap()
    };
    const FULL: i64 = 2;
    const NORMAL: i64 = 1;
    let mut s = SqliteStore::open(&path).unwrap();
    assert_eq!(synchronous(&s), FULL, "FULL from the open");

    s.begin_relaxed_group().unwrap();
    assert_eq!(synchronous(&s), NORMAL, "inside the relaxed group");
    s.set_meta("acked", b"1").unwrap();
    s.begin_relaxed_group().unwrap();
    s.set_meta("inner", b"1").unwrap();
    s.commit_group().unwrap();
    s.commit_group().unwrap();
    assert_eq!(s.relaxed_commits(), 1);
    assert_eq!(synchronous(&s), FULL, "FULL again after the relaxed commit");
    assert_eq!(
        s.meta(DURABLE_MARK).unwrap(),
        None,
        "no durable commit after it"
    );

    s.begin_relaxed_group().unwrap();
    s.set_meta("dropped", b"1").unwrap();
    s.rollback_group();
    assert_eq!(synchronous(&s), FULL, "FULL again after a rollback");

    s.begin_relaxed_group().unwrap();
    s.set_meta("cursor", b"1").unwrap();
    s.begin_group().unwrap();
    s.set_meta("rewritten", b"1").unwrap();
    s.commit_group().unwrap();
    s.commit_group().unwrap();
    assert_eq!(
        s.relaxed_commits(),
        1,
        "a durable group inside made it durable"
    );
    assert!(
        s.meta(DURABLE_MARK).unwrap().is_some(),
        "by a durable commit"
    );
    assert_eq!(synchronous(&s), FULL);

    s.begin_group().unwrap();
    s.begin_relaxed_group().unwrap();
    assert_eq!(
        synchronous(&s),
        FULL,
        "relaxed inside durable stays durable"
    );
    s.set_meta("durable", b"1").unwrap();
    s.commit_group().unwrap();
    s.commit_group().unwrap();
    assert_eq!(s.relaxed_commits(), 1);
    drop(s);

    let s = SqliteStore::open(&path).unwrap();
    for key in ["acked", "inner", "cursor", "rewritten", "durable"] {
        assert_eq!(s.meta(key).unwrap().as_deref(), Some(&b"1"[..]), "{key}");
    }
    assert_eq!(s.meta("dropped").unwrap(), None);
}

/// An indivisible group ([`Store::begin_indivisible_group`]) takes no savepoint inside it: its
/// inner groups and each append are its transaction's. It commits whole; an inner group rolled
/// back, or an append that fails part-way, dooms it (its commit fails and nothing of it is
/// stored, where an ordinary group would commit its other writes), and the store takes the
/// next group. Opened inside an ordinary group, it is an ordinary inner group.
#[test]
fn an_indivisible_group_commits_whole_or_not_at_all() {
    let (_dir, mut s) = fresh();
    let doc: DocumentId = "p-1/journal/2026-11".parse().unwrap();
    let h = |n: u8| ChangeHash([n; 32]);
    refuse_hash_nine(&mut s);
    let stored = |s: &SqliteStore| stored_hashes(s, &doc);

    // All of it commits, its inner group's writes with it.
    s.begin_indivisible_group(false).unwrap();
    s.append(&doc, &[(h(1), &b"one"[..])], Origin::Remote)
        .unwrap();
    s.begin_group().unwrap();
    s.append(&doc, &[(h(2), &b"two"[..])], Origin::Local)
        .unwrap();
    s.commit_group().unwrap();
    s.set_meta("cursor", b"2").unwrap();
    s.commit_group().unwrap();
    assert_eq!(stored(&s), vec![h(1), h(2)]);
    assert_eq!(s.meta("cursor").unwrap().as_deref(), Some(&b"2"[..]));

    // An inner group rolled back takes everything with it (relaxed or not).
    for relaxed in [true, false] {
        s.begin_indivisible_group(relaxed).unwrap();
        s.append(&doc, &[(h(3), &b"three"[..])], Origin::Remote)
            .unwrap();
        s.begin_group().unwrap();
        s.append(&doc, &[(h(4), &b"four"[..])], Origin::Remote)
            .unwrap();
        s.rollback_group();
        s.set_meta("cursor", b"4").unwrap();
        assert!(s.commit_group().is_err());
        assert_eq!(stored(&s), vec![h(1), h(2)]);
        assert_eq!(s.meta("cursor").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(s.feed_head().unwrap(), 2);
    }

    // So does an append that fails part-way.
    s.begin_indivisible_group(false).unwrap();
    s.append(&doc, &[(h(5), &b"five"[..])], Origin::Remote)
        .unwrap();
    assert!(
        s.append(
            &doc,
            &[(h(6), &b"six"[..]), (h(9), &b"nine"[..])],
            Origin::Local
        )
        .is_err()
    );
    s.set_meta("cursor", b"6").unwrap();
    assert!(s.commit_group().is_err());
    assert_eq!(stored(&s), vec![h(1), h(2)]);
    assert_eq!(s.pending().unwrap(), vec![(doc.clone(), h(2))]);
    assert_eq!(s.meta("cursor").unwrap().as_deref(), Some(&b"2"[..]));

    // Inside an ordinary group it is rolled back alone.
    s.begin_group().unwrap();
    s.append(&doc, &[(h(7), &b"seven"[..])], Origin::Remote)
        .unwrap();
    s.begin_indivisible_group(false).unwrap();
    s.append(&doc, &[(h(8), &b"eight"[..])], Origin::Remote)
        .unwrap();
    s.rollback_group();
    s.commit_group().unwrap();
    assert_eq!(stored(&s), vec![h(1), h(2), h(7)]);

    // And the store takes the next write.
    s.append(&doc, &[(h(10), &b"ten"[..])], Origin::Remote)
        .unwrap();
    assert_eq!(stored(&s), vec![h(1), h(2), h(7), h(10)]);
    assert_eq!(s.feed_head().unwrap(), 4);
}

/// A store of schema 4 (each change in a table of its own with its document and hash) opened
/// by this build: each change's bytes move under its feed entry, read back in the order they
/// were stored; a change a snapshot covered stays out; and the store goes on (an append, a
/// change the feed knows not stored again, compaction, a document forgotten).
#[test]
fn a_store_of_schema_4_keeps_every_change_under_its_feed_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let a: DocumentId = "p-1/journal/2026-11".parse().unwrap();
    let b: DocumentId = "p-2/journal/2026-11".parse().unwrap();
    let h = |n: u8| ChangeHash([n; 32]);
    {
        // As schema 4 wrote them.
        let conn = Connection::open(&path).unwrap();
        for sql in &MIGRATIONS[..4] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 4).unwrap();
        for doc in [&a, &b] {
            conn.execute(
                "INSERT INTO documents (doc_id) VALUES (?1)",
                [doc.to_string()],
            )
            .unwrap();
        }
        for (doc, n) in [(&a, 1), (&b, 2), (&a, 3)] {
            conn.execute(
                "INSERT INTO feed (doc_id, hash) VALUES (?1, ?2)",
                params![doc.to_string(), &h(n).0[..]],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO changes (doc_id, hash, bytes) VALUES (?1, ?2, ?3)",
                params![doc.to_string(), &h(n).0[..], vec![n; 3]],
            )
            .unwrap();
        }
        // Compacted into a snapshot: in the feed only.
        conn.execute(
            "INSERT INTO feed (doc_id, hash) VALUES (?1, ?2)",
            params![b.to_string(), &h(4).0[..]],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO pending (doc_id, hash) VALUES (?1, ?2)",
            params![a.to_string(), &h(3).0[..]],
        )
        .unwrap();
    }
    let mut s = SqliteStore::open(&path).unwrap();
    let changes = |s: &SqliteStore, doc: &DocumentId| s.load(doc).unwrap().unwrap().changes;
    assert_eq!(
        changes(&s, &a),
        vec![(h(1), vec![1; 3]), (h(3), vec![3; 3])]
    );
    assert_eq!(changes(&s, &b), vec![(h(2), vec![2; 3])]);
    assert_eq!(s.pending().unwrap(), vec![(a.clone(), h(3))]);
    assert_eq!(s.feed_head().unwrap(), 4);

    s.append(
        &b,
        &[(h(5), &[5u8; 3][..]), (h(4), &b"known"[..])],
        Origin::Remote,
    )
    .unwrap();
    assert_eq!(
        changes(&s, &b),
        vec![(h(2), vec![2; 3]), (h(5), vec![5; 3])]
    );
    assert_eq!(s.feed_head().unwrap(), 5);
    s.compact(&b, b"snapshot", &[h(2)]).unwrap();
    assert_eq!(changes(&s, &b), vec![(h(5), vec![5; 3])]);
    s.remove_document(&a).unwrap();
    assert!(s.load(&a).unwrap().is_none());
    assert_eq!(changes(&s, &b), vec![(h(5), vec![5; 3])]);
}

/// Makes the store refuse (a trigger) to insert the change whose hash is all nines: an append
/// that fails part-way.
fn refuse_hash_nine(s: &mut SqliteStore) {
    s.begin_group().unwrap();
    s.with_group_connection(|c| {
        c.execute_batch(&format!(
            "CREATE TRIGGER refuse BEFORE INSERT ON change_bytes
             WHEN (SELECT hash FROM feed WHERE seq = NEW.seq) = X'{}'
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
            "09".repeat(32)
        ))
    })
    .unwrap()
    .unwrap();
    s.commit_group().unwrap();
}

/// The hashes of `doc`'s stored changes, in their order.
fn stored_hashes(s: &SqliteStore, doc: &DocumentId) -> Vec<ChangeHash> {
    s.load(doc)
        .unwrap()
        .map(|d| d.changes.iter().map(|(h, _)| *h).collect())
        .unwrap_or_default()
}
