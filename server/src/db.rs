//! Shared SQLite plumbing for the server's own tables (directory, audit).
//!
//! The audit tables live in the document store's file and are versioned apart (see
//! `audit::schema`); they use [`connect`], not the `user_version` migrations.
//!
//! Every file is opened the same way as `sync-core`'s store: WAL, `synchronous=FULL`, foreign
//! keys on, a 5 s busy timeout, and numbered migrations tracked in `PRAGMA user_version`, each
//! applied in its own transaction. Several processes (the running server and `nara-server
//! admin`) may have the same file open at once: WAL lets readers run beside one writer, the busy
//! timeout makes a second writer wait, and every write transaction starts `IMMEDIATE` so that
//! it takes the write lock up front instead of failing half way through with `SQLITE_BUSY`.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior};

/// How long a connection waits for another connection's write lock.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("schema version {found} is newer than this build supports ({supported})")]
    NewerSchema { found: i64, supported: i64 },
}

/// Opens (creating if needed) the SQLite file at `path` and applies `migrations` (SQL batches,
/// numbered from 1) that are not applied yet. `what` names the database in logs.
pub(crate) fn open(
    path: &Path,
    what: &'static str,
    migrations: &[&str],
) -> Result<Connection, OpenError> {
    let mut conn = connect(path)?;
    migrate(&mut conn, what, migrations)?;
    Ok(conn)
}

/// Opens (creating if needed) the SQLite file at `path` with the settings above, without
/// migrations (for tables that share a file whose `user_version` belongs to someone else).
pub(crate) fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    sync_core::store::enable_wal(&conn, BUSY_TIMEOUT)?;
    // FULL: a committed transaction survives power loss too, not only a process crash.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

fn migrate(
    conn: &mut Connection,
    what: &'static str,
    migrations: &[&str],
) -> Result<(), OpenError> {
    let supported = i64::try_from(migrations.len()).unwrap_or(i64::MAX);
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > supported {
        return Err(OpenError::NewerSchema { found, supported });
    }
    for (n, sql) in migrations
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0))
    {
        // IMMEDIATE and a re-check: two processes opening a fresh file at once must not both
        // run the same migration.
        let tx = write_tx(conn)?;
        let now: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let version = i64::try_from(n).unwrap_or(i64::MAX).saturating_add(1);
        if now >= version {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::info!(database = what, version, "migrated");
    }
    Ok(())
}

/// Begins a write transaction that holds the write lock from its first statement.
pub(crate) fn write_tx(conn: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

/// Converts a stored integer that must not be negative.
pub(crate) fn to_u64(v: i64, what: &str) -> Result<u64, String> {
    u64::try_from(v).map_err(|_| format!("{what}: negative value {v}"))
}

/// Converts a number to SQLite's integer type.
pub(crate) fn to_i64(v: u64, what: &str) -> Result<i64, String> {
    i64::try_from(v).map_err(|_| format!("{what}: {v} is too large"))
}

/// Compares two byte strings in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_schema_is_refused_and_migrations_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let m = ["CREATE TABLE a (x INTEGER);", "CREATE TABLE b (y INTEGER);"];
        open(&path, "x", &m).unwrap();
        // Reopening applies nothing twice.
        open(&path, "x", &m).unwrap();
        let err = open(&path, "x", &m[..1]).unwrap_err();
        assert!(
            matches!(
                err,
                OpenError::NewerSchema {
                    found: 2,
                    supported: 1
                }
            ),
            "{err}"
        );
    }

    /// Four connections opening one fresh file at once all succeed (the switch to WAL does not
    /// wait for the busy handler; it failed about one round in ten before `enable_wal`).
    #[test]
    fn connections_opening_a_fresh_file_at_once_all_succeed() {
        let m = ["CREATE TABLE a (x INTEGER);", "CREATE TABLE b (y INTEGER);"];
        for _ in 0..100 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("x.db");
            let start = std::sync::Barrier::new(4);
            std::thread::scope(|s| {
                let opens: Vec<_> = (0..4)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            open(&path, "x", &m)
                        })
                    })
                    .collect();
                for o in opens {
                    let conn = o.join().unwrap().unwrap();
                    let mode: String = conn
                        .pragma_query_value(None, "journal_mode", |r| r.get(0))
                        .unwrap();
                    assert_eq!(mode, "wal");
                }
            });
        }
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
