//! The SQLite [`Store`]: bundled SQLite, WAL, `synchronous=FULL`, numbered migrations.
//!
//! This is the only module of `sync-core` that knows SQL.

use std::path::Path;

use automerge::ChangeHash;
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    EMPTY_FEED_PROOF, Epoch, FeedEntry, FeedProof, Lease, Origin, Store, StoredDocument,
    doc_id_from_text, hash_from_bytes, next_feed_proof,
};
use crate::error::StoreError;
use crate::ids::{DeviceId, DocumentId};

/// Numbered migrations; the database's `user_version` is the number applied. Each runs in its
/// own transaction together with the bump of `user_version`.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_init.sql"),
    include_str!("../../migrations/0002_feed_meta.sql"),
    include_str!("../../migrations/0003_feed_proof.sql"),
    include_str!("../../migrations/0004_device_leases.sql"),
    include_str!("../../migrations/0005_change_bytes.sql"),
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// A 256-bit key for a store encrypted at rest. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptionKey(pub [u8; 32]);

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncryptionKey(..)")
    }
}

#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    /// Groups opened and not yet closed: a group opened inside another one is a savepoint of
    /// its transaction (rolled back alone), and only the outermost commit commits.
    group_depth: usize,
    /// The group's transaction was lost (an inner group's savepoint could not be rolled back
    /// or released, SQLite having rolled the transaction back on an error): the outer commit
    /// must fail rather than commit what is left.
    group_failed: bool,
    /// The open transaction was begun relaxed ([`Store::begin_relaxed_group`]): the
    /// connection is at `synchronous=NORMAL` until it ends (in WAL mode its `COMMIT` writes
    /// the log and skips the fsync; the next `FULL` commit's fsync covers it, the log being
    /// written in order). SQLite takes the setting only outside a transaction.
    relaxed: bool,
    /// A durable group was opened inside the relaxed one: its commit is followed by a
    /// durable one.
    strict_inside: bool,
    /// The open transaction was begun indivisible ([`Store::begin_indivisible_group`]): the
    /// groups inside it and each write's own atomicity are the transaction's (no savepoints),
    /// and a failure inside it dooms the whole (`group_failed`).
    indivisible: bool,
    /// Relaxed transactions committed without an fsync since open.
    relaxed_commits: u64,
}

/// The meta key a durable commit writes after a relaxed transaction that held durable writes
/// (its fsync covers the relaxed commit before it).
const DURABLE_MARK: &str = "durable_mark";

/// How long opening a store waits for another connection's lock.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Prepared statements kept per connection (see [`SqliteStore::open`]).
const STATEMENT_CACHE: usize = 128;
/// The feed after a position, in order. Its rows are stepped only as far as a caller's limit;
/// no `LIMIT ?`: this SQLite build prepares a statement again whenever the value bound to its
/// `LIMIT` changes (every scan of a sync step did).
const FEED_AFTER: &str = "SELECT seq, doc_id, hash FROM feed WHERE seq > ?1 ORDER BY seq";

/// Puts the database in WAL mode, waiting up to `timeout` for another connection doing the same.
///
/// SQLite does not call the busy handler when a connection that holds a shared lock asks for
/// the exclusive lock the switch to WAL needs (waiting could deadlock), so two processes (or
/// threads) opening a fresh file at once get `SQLITE_BUSY` at once from this pragma, whatever
/// the busy timeout. It is safe to try again: the switch happens once, and on a file already in
/// WAL mode the pragma takes no lock at all. Shared with the server's own databases.
pub fn enable_wal(conn: &Connection, timeout: std::time::Duration) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` and brings its schema up to date.
    /// A store written by a newer build is refused with [`StoreError::NewerSchema`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, None)
    }

    /// Opens (creating if needed) a store encrypted at rest with `key` (SQLCipher: every page,
    /// the WAL included, is encrypted with AES-256 and authenticated). The host app keeps the
    /// key in the platform keystore. A wrong key gives [`StoreError::WrongKey`]; opening an
    /// encrypted store without a key fails the same way.
    pub fn open_encrypted(path: impl AsRef<Path>, key: &EncryptionKey) -> Result<Self, StoreError> {
        Self::open_with(path, Some(key))
    }

    fn open_with(path: impl AsRef<Path>, key: Option<&EncryptionKey>) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        if let Some(key) = key {
            // A raw 256-bit key (no passphrase derivation): x'<64 hex digits>'.
            conn.pragma_update(None, "key", format!("x'{}'", hex::encode(key.0)))?;
        }
        // The first read of the schema is where a wrong key (or a missing one) shows.
        let readable: Result<i64, rusqlite::Error> =
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0));
        if let Err(e) = readable {
            return Err(match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::NotADatabase =>
                {
                    StoreError::WrongKey
                }
                other => other.into(),
            });
        }
        conn.busy_timeout(BUSY_TIMEOUT)?;
        enable_wal(&conn, BUSY_TIMEOUT)?;
        // FULL: a committed transaction survives power loss too, not only a process crash.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Every statement a sync step runs stays prepared: the store's, the audit log's and the
        // server's on this connection are more than rusqlite's default 16, and a cache that
        // evicts prepares them again on every step (SQLite's parser was 4% of the server's
        // time in `latency`).
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let mut store = Self {
            conn,
            group_depth: 0,
            group_failed: false,
            relaxed: false,
            strict_inside: false,
            indivisible: false,
            relaxed_commits: 0,
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let found: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        for (n, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            // IMMEDIATE and a re-check: two processes opening a fresh file at once (the server
            // and its admin CLI) must not both run the same migration.
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let now: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if now > n as i64 {
                continue;
            }
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", n as i64 + 1)?;
            tx.commit()?;
            tracing::info!(version = n + 1, "store migrated");
        }
        self.fill_feed_proofs()
    }

    /// Gives every feed entry written before the proofs existed its running hash, in feed
    /// order, in one transaction (once, on the first open after the migration).
    fn fill_feed_proofs(&mut self) -> Result<(), StoreError> {
        let first: Option<i64> =
            self.conn
                .query_row("SELECT MIN(seq) FROM feed WHERE proof IS NULL", [], |r| {
                    r.get(0)
                })?;
        let Some(first) = first else {
            return Ok(());
        };
        let tx = self.conn.transaction()?;
        let mut prev = proof_below(&tx, first)?;
        {
            let mut rows =
                tx.prepare("SELECT seq, doc_id, hash FROM feed WHERE seq >= ?1 ORDER BY seq")?;
            let rows: Vec<(i64, String, Vec<u8>)> = rows
                .query_map([first], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            let mut update = tx.prepare("UPDATE feed SET proof = ?1 WHERE seq = ?2")?;
            for (seq, doc, hash) in rows {
                prev = next_feed_proof(&prev, &doc_id_from_text(&doc)?, &hash_from_bytes(&hash)?);
                update.execute(params![&prev[..], seq])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// `PRAGMA integrity_check`: `Ok(())` or the problems SQLite reports.
    pub fn integrity_check(&self) -> Result<Result<(), Vec<String>>, StoreError> {
        let mut stmt = self.conn.prepare("PRAGMA integrity_check")?;
        let rows: Vec<String> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(if rows == ["ok"] { Ok(()) } else { Err(rows) })
    }

    /// The store's connection, only while a group is open (between [`Store::begin_group`] and
    /// its commit or rollback), so that a caller's own tables in the same file are written in
    /// the same transaction as the group: they commit, or roll back, with it. `f` must not end
    /// the transaction itself (no `COMMIT`, `ROLLBACK` or `BEGIN`). `None` if no group is open.
    pub fn with_group_connection<T>(&self, f: impl FnOnce(&Connection) -> T) -> Option<T> {
        (self.group_depth > 0 && !self.group_failed && !self.conn.is_autocommit())
            .then(|| f(&self.conn))
    }
}

impl Store for SqliteStore {
    fn documents(&self) -> Result<Vec<DocumentId>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT doc_id FROM documents ORDER BY doc_id")?;
        let ids: Vec<String> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        ids.iter().map(|s| doc_id_from_text(s)).collect()
    }

    fn load(&self, doc: &DocumentId) -> Result<Option<StoredDocument>, StoreError> {
        let key = doc.to_string();
        let snapshot: Option<Option<Vec<u8>>> = self
            .conn
            .prepare_cached("SELECT snapshot FROM documents WHERE doc_id = ?1")?
            .query_row([&key], |r| r.get(0))
            .optional()?;
        let Some(snapshot) = snapshot else {
            return Ok(None);
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT feed.hash, change_bytes.bytes FROM feed
                 JOIN change_bytes ON change_bytes.seq = feed.seq
                 WHERE feed.doc_id = ?1 ORDER BY feed.seq",
        )?;
        let rows: Vec<(Vec<u8>, Vec<u8>)> = stmt
            .query_map([&key], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let changes = rows
            .into_iter()
            .map(|(h, b)| Ok((hash_from_bytes(&h)?, b)))
            .collect::<Result<_, StoreError>>()?;
        Ok(Some(StoredDocument { snapshot, changes }))
    }

    fn append(
        &mut self,
        doc: &DocumentId,
        changes: &[(ChangeHash, &[u8])],
        origin: Origin,
    ) -> Result<(), StoreError> {
        let key = doc.to_string();
        // A savepoint: its own transaction, or part of an open group.
        self.in_savepoint(|tx| {
            tx.prepare_cached("INSERT OR IGNORE INTO documents (doc_id) VALUES (?1)")?
                .execute([&key])?;
            // The bytes under the feed entry's position (`0005_change_bytes.sql`).
            let mut insert =
                tx.prepare_cached("INSERT INTO change_bytes (seq, bytes) VALUES (?1, ?2)")?;
            let mut mark =
                tx.prepare_cached("INSERT OR IGNORE INTO pending (doc_id, hash) VALUES (?1, ?2)")?;
            // Each entry is written with its running hash in one statement: a new row's
            // position is one past the newest (`seq` is the rowid, never chosen by us), so the
            // proof below it is the newest row's, read once (after the first write, so inside
            // the write transaction).
            let mut feed = tx.prepare_cached(
                "INSERT OR IGNORE INTO feed (doc_id, hash, proof) VALUES (?1, ?2, ?3)",
            )?;
            let mut head: Option<(i64, FeedProof)> = None;
            for (hash, bytes) in changes {
                let (head_seq, before) = match head {
                    Some(h) => h,
                    None => feed_top(tx)?,
                };
                let proof = next_feed_proof(&before, doc, hash);
                // Known already (perhaps compacted into the snapshot): the feed remembers it.
                if feed.execute(params![key, &hash.0[..], &proof[..]])? == 0 {
                    head = Some((head_seq, before));
                    continue;
                }
                let seq = tx.last_insert_rowid();
                if seq != head_seq + 1 {
                    // Not one past the newest (SQLite only does that once the rowid is
                    // exhausted): the proof from the entry below it, as it really is.
                    let proof = next_feed_proof(&proof_below(tx, seq)?, doc, hash);
                    tx.prepare_cached("UPDATE feed SET proof = ?1 WHERE seq = ?2")?
                        .execute(params![&proof[..], seq])?;
                    head = None;
                } else {
                    head = Some((seq, proof));
                }
                insert.execute(params![seq, bytes])?;
                if origin == Origin::Local {
                    mark.execute(params![key, &hash.0[..]])?;
                }
            }
            Ok(())
        })
    }

    fn compact(
        &mut self,
        doc: &DocumentId,
        snapshot: &[u8],
        covered: &[ChangeHash],
    ) -> Result<(), StoreError> {
        let key = doc.to_string();
        // A savepoint: its own transaction, or part of an open group.
        let tx = self.conn.savepoint()?;
        tx.prepare_cached(
            "INSERT INTO documents (doc_id, snapshot) VALUES (?1, ?2)
             ON CONFLICT (doc_id) DO UPDATE SET snapshot = excluded.snapshot",
        )?
        .execute(params![key, snapshot])?;
        {
            let mut delete = tx.prepare_cached(
                "DELETE FROM change_bytes
                     WHERE seq = (SELECT seq FROM feed WHERE doc_id = ?1 AND hash = ?2)",
            )?;
            for hash in covered {
                delete.execute(params![key, &hash.0[..]])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn pending(&self) -> Result<Vec<(DocumentId, ChangeHash)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT doc_id, hash FROM pending ORDER BY seq")?;
        let rows: Vec<(String, Vec<u8>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        rows.iter()
            .map(|(d, h)| Ok((doc_id_from_text(d)?, hash_from_bytes(h)?)))
            .collect()
    }

    fn feed_after(&self, after: u64, limit: usize) -> Result<Vec<FeedEntry>, StoreError> {
        self.feed_rows(after, limit)
    }

    fn feed_head(&self) -> Result<u64, StoreError> {
        let head: i64 = self
            .conn
            .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM feed")?
            .query_row([], |r| r.get(0))?;
        Ok(head as u64)
    }

    fn feed_position(
        &self,
        doc: &DocumentId,
        hash: &ChangeHash,
    ) -> Result<Option<u64>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT seq FROM feed WHERE doc_id = ?1 AND hash = ?2")?
            .query_row(params![doc.to_string(), &hash.0[..]], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
            .map(|seq| seq as u64))
    }

    fn epoch(&self) -> Result<Epoch, StoreError> {
        let bytes = self
            .meta("epoch")?
            .ok_or_else(|| StoreError::BadRow("the store has no epoch".into()))?;
        Epoch::try_from(bytes.as_slice())
            .map_err(|_| StoreError::BadRow("epoch is not 16 bytes".into()))
    }

    fn set_epoch(&mut self, epoch: Epoch) -> Result<(), StoreError> {
        self.set_meta("epoch", &epoch)
    }

    fn feed_proof(&self, position: u64) -> Result<FeedProof, StoreError> {
        proof_below(
            &self.conn,
            i64::try_from(position)
                .unwrap_or(i64::MAX)
                .saturating_add(1),
        )
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![key, value])?;
        Ok(())
    }

    fn remove_document(&mut self, doc: &DocumentId) -> Result<(), StoreError> {
        let key = doc.to_string();
        // A savepoint: its own transaction, or part of an open group.
        let tx = self.conn.savepoint()?;
        for sql in [
            "DELETE FROM pending WHERE doc_id = ?1",
            "DELETE FROM change_bytes WHERE seq IN (SELECT seq FROM feed WHERE doc_id = ?1)",
            "DELETE FROM feed WHERE doc_id = ?1",
            "DELETE FROM documents WHERE doc_id = ?1",
        ] {
            tx.prepare_cached(sql)?.execute([&key])?;
        }
        tx.commit()?;
        Ok(())
    }

    fn claim_device(
        &mut self,
        device: &DeviceId,
        holder: &str,
        now_ms: i64,
    ) -> Result<Lease, StoreError> {
        let token: i64 = self
            .conn
            .prepare_cached(
                "INSERT INTO device_leases (device_id, token, holder, claimed_ms)
                 VALUES (?1, 1, ?2, ?3)
                 ON CONFLICT (device_id) DO UPDATE SET token = token + 1,
                     holder = excluded.holder, claimed_ms = excluded.claimed_ms
                 RETURNING token",
            )?
            .query_row(params![device.as_str(), holder, now_ms], |r| r.get(0))?;
        let token =
            u64::try_from(token).map_err(|_| StoreError::BadRow(format!("lease token {token}")))?;
        Ok(Lease { token })
    }

    fn check_lease(&self, device: &DeviceId, token: u64) -> Result<(), StoreError> {
        // In a group this read is inside the group's write transaction (BEGIN IMMEDIATE): a
        // claim, being a write, waits for the group to end.
        let current: Option<i64> = self
            .conn
            .prepare_cached("SELECT token FROM device_leases WHERE device_id = ?1")?
            .query_row([device.as_str()], |r| r.get(0))
            .optional()?;
        match current {
            Some(current) if u64::try_from(current) == Ok(token) => Ok(()),
            _ => Err(StoreError::Fenced {
                device: device.clone(),
                token,
            }),
        }
    }

    fn begin_group(&mut self) -> Result<(), StoreError> {
        if self.group_depth > 0 && self.relaxed {
            self.strict_inside = true;
        }
        self.open_group(false)
    }

    fn begin_relaxed_group(&mut self) -> Result<(), StoreError> {
        self.open_group(true)
    }

    fn begin_indivisible_group(&mut self, relaxed: bool) -> Result<(), StoreError> {
        if self.group_depth > 0 {
            // Inside another group: an ordinary inner group of it.
            return if relaxed {
                self.begin_relaxed_group()
            } else {
                self.begin_group()
            };
        }
        self.open_group(relaxed)?;
        self.indivisible = true;
        Ok(())
    }

    fn commit_group(&mut self) -> Result<(), StoreError> {
        match self.group_depth {
            0 => {}
            1 => {
                self.group_depth = 0;
                if self.group_failed || self.conn.is_autocommit() {
                    // What was written after the transaction went is dropped too. (SQLite
                    // rolls a transaction back itself on some errors: a full disk, I/O.)
                    self.rollback_open();
                    return Err(StoreError::BadRow(
                        "the group's transaction was rolled back before its commit".into(),
                    ));
                }
                if let Err(e) = self.run_cached("COMMIT") {
                    // A failed COMMIT may leave the transaction open: end it, so that the
                    // next write does not join a transaction nobody commits.
                    self.rollback_open();
                    return Err(e.into());
                }
                if self.relaxed {
                    self.end_relaxed()?;
                    if std::mem::take(&mut self.strict_inside) {
                        // Durable writes rode in the relaxed transaction: a durable commit
                        // now (its fsync covers the log up to here).
                        let mark = (self.relaxed_commits + 1).to_le_bytes();
                        self.set_meta(DURABLE_MARK, &mark)?;
                    } else {
                        self.relaxed_commits += 1;
                    }
                }
            }
            depth => {
                self.group_depth -= 1;
                if !self.group_failed && !self.indivisible {
                    let released = self.run_cached(&format!("RELEASE {}", inner_group(depth - 1)));
                    if let Err(e) = released {
                        self.fail_transaction();
                        return Err(e.into());
                    }
                }
            }
        }
        Ok(())
    }

    fn rollback_group(&mut self) {
        match self.group_depth {
            0 | 1 => {
                self.rollback_open();
                self.group_depth = 0;
            }
            depth => {
                // An inner group is a savepoint: it alone rolls back, and the outer group goes
                // on and may commit (as on PostgreSQL). If the savepoint is gone (SQLite rolled
                // the whole transaction back on an error), so is everything: the outer commit
                // fails.
                self.group_depth -= 1;
                if self.group_failed {
                    return;
                }
                if self.indivisible {
                    // No savepoint to go back to: the whole transaction goes, and the outer
                    // commit fails.
                    self.fail_transaction();
                    return;
                }
                let name = inner_group(depth - 1);
                let undone = self
                    .run_cached(&format!("ROLLBACK TO {name}"))
                    .and_then(|()| self.run_cached(&format!("RELEASE {name}")));
                if let Err(e) = undone {
                    tracing::error!(error = %e, "rolling back an inner group of writes failed: the whole group goes");
                    self.fail_transaction();
                }
            }
        }
    }

    fn mark_uploaded(&mut self, doc: &DocumentId, hashes: &[ChangeHash]) -> Result<(), StoreError> {
        let key = doc.to_string();
        // A savepoint: its own transaction, or part of an open group.
        self.in_savepoint(|tx| {
            let mut delete =
                tx.prepare_cached("DELETE FROM pending WHERE doc_id = ?1 AND hash = ?2")?;
            for hash in hashes {
                delete.execute(params![key, &hash.0[..]])?;
            }
            Ok(())
        })
    }
}

/// The savepoint of the group opened inside `depth` others.
fn inner_group(depth: usize) -> String {
    format!("nara_group_{depth}")
}

impl SqliteStore {
    /// Transactions committed without an fsync of their own ([`Store::begin_relaxed_group`])
    /// since this store was opened: what tests of the callers that relax read.
    pub fn relaxed_commits(&self) -> u64 {
        self.relaxed_commits
    }

    /// Opens a group: the transaction (`relaxed`: at `synchronous=NORMAL`) or, inside one, a
    /// savepoint.
    fn open_group(&mut self, relaxed: bool) -> Result<(), StoreError> {
        if self.group_depth == 0 {
            self.group_failed = false;
            self.strict_inside = false;
            self.indivisible = false;
            if self.conn.is_autocommit() {
                if relaxed {
                    self.run_cached("PRAGMA synchronous = NORMAL")?;
                    self.relaxed = true;
                }
                if let Err(e) = self.run_cached("BEGIN IMMEDIATE") {
                    self.end_relaxed()?;
                    return Err(e.into());
                }
            }
        } else if !self.group_failed && !self.indivisible {
            self.run_cached(&format!("SAVEPOINT {}", inner_group(self.group_depth)))?;
        }
        self.group_depth += 1;
        Ok(())
    }

    /// Runs one statement that returns no rows (`BEGIN`, `COMMIT`, a `PRAGMA` that sets) from
    /// the connection's cache of prepared statements: parsing them again each time was a
    /// third of opening a group.
    fn run_cached(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([]).map(drop)
    }

    /// Runs `f` in a savepoint of its own: its own transaction outside a group, a part of the
    /// group that a failure of `f` leaves untouched inside one. Its statements come from the
    /// cache (`Connection::savepoint` parses them each time: with the group's own savepoints
    /// parsed too, 2% of what a phone spent in S8, session 32). Inside an indivisible group
    /// `f` runs in the group's transaction, and its failure dooms the group.
    fn in_savepoint<T>(
        &mut self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.group_depth > 0 && self.indivisible && !self.group_failed {
            let done = f(&self.conn);
            if done.is_err() {
                self.fail_transaction();
            }
            return done;
        }
        self.run_cached("SAVEPOINT nara_write")?;
        let done =
            f(&self.conn).and_then(|v| Ok(self.run_cached("RELEASE nara_write").map(|()| v)?));
        if done.is_err() {
            // As `Savepoint`'s drop: undone, then ended (errors here change nothing: the
            // savepoint is gone with its transaction if SQLite rolled that back).
            let _ = self.run_cached("ROLLBACK TO nara_write");
            let _ = self.run_cached("RELEASE nara_write");
        }
        done
    }

    /// Back to `synchronous=FULL` after a relaxed transaction ended: every other commit
    /// survives power loss. (Outside a transaction the setting cannot fail to change.)
    fn end_relaxed(&mut self) -> Result<(), StoreError> {
        if std::mem::take(&mut self.relaxed) {
            if let Err(e) = self.run_cached("PRAGMA synchronous = FULL") {
                tracing::error!(error = %e, "setting synchronous back to FULL failed");
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// The open group's transaction is lost: rolled back now, with the outer commit to fail.
    /// Writes made meanwhile go into a new transaction that the outer commit rolls back, so
    /// none of them commits on its own.
    fn fail_transaction(&mut self) {
        self.rollback_open();
        self.group_failed = true;
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            tracing::error!(error = %e, "reopening a rolled-back group failed");
        }
    }

    fn rollback_open(&mut self) {
        if !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::error!(error = %e, "rolling back a group of writes failed");
            }
        }
        self.strict_inside = false;
        if let Err(e) = self.end_relaxed() {
            tracing::error!(error = %e, "after a rollback");
        }
    }

    fn feed_rows(&self, after: u64, limit: usize) -> Result<Vec<FeedEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(FEED_AFTER)?;
        let rows: Vec<(i64, String, Vec<u8>)> = stmt
            .query_map(params![after as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .take(limit)
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(seq, d, h)| {
                Ok(FeedEntry {
                    seq: seq as u64,
                    doc: doc_id_from_text(&d)?,
                    hash: hash_from_bytes(&h)?,
                })
            })
            .collect()
    }
}

/// The newest feed entry's position and running hash (0 and [`EMPTY_FEED_PROOF`] if none).
fn feed_top(conn: &Connection) -> Result<(i64, FeedProof), StoreError> {
    let top: Option<(i64, Option<Vec<u8>>)> = conn
        .prepare_cached("SELECT seq, proof FROM feed ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match top {
        None => Ok((0, EMPTY_FEED_PROOF)),
        Some((seq, bytes)) => Ok((
            seq,
            FeedProof::try_from(bytes.unwrap_or_default().as_slice())
                .map_err(|_| StoreError::BadRow("feed proof is not 32 bytes".into()))?,
        )),
    }
}

/// The running hash of the newest feed entry below position `seq` ([`EMPTY_FEED_PROOF`] if none).
fn proof_below(conn: &Connection, seq: i64) -> Result<FeedProof, StoreError> {
    let proof: Option<Option<Vec<u8>>> = conn
        .prepare_cached("SELECT proof FROM feed WHERE seq < ?1 ORDER BY seq DESC LIMIT 1")?
        .query_row([seq], |r| r.get(0))
        .optional()?;
    match proof {
        None => Ok(EMPTY_FEED_PROOF),
        Some(bytes) => FeedProof::try_from(bytes.unwrap_or_default().as_slice())
            .map_err(|_| StoreError::BadRow("feed proof is not 32 bytes".into())),
    }
}

#[cfg(test)]
mod tests;
