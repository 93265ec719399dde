//! Backup and restore of a data directory: `nara-server admin backup --to DIR` and
//! `nara-server admin restore --from DIR`.
//!
//! A backup is a consistent copy of the server's two databases, `nara.db` (documents, feed and
//! the audit log, which commit together) and `server.db` (the directory: users, assignments,
//! device credentials), taken with SQLite's online backup API while the server runs: each file
//! is copied in one step under a read transaction, so it is a state the database was in, never a
//! torn mix (a file copy of a live WAL database can be). A `backup.json` beside them records when
//! it was taken, the feed's epoch and head, and the audit log's head.
//!
//! A restore (with the server stopped) checks the backup, moves the current databases aside into
//! `before-restore-<time>/` (never deleted: they hold what the restore cuts off), copies the
//! backup in, gives the document store a new feed epoch, and appends a `restore` record to the
//! restored audit log saying what it cut off. The signed audit heads exported for the replaced
//! log (`audit-heads.jsonl`) are moved aside with it. The new epoch is how devices learn that the server
//! went back in time: a cursor of the old epoch is not a position in the new feed, so at its next
//! sync every device starts again from the feed's beginning and hands back what the server lacks
//! of its own changes (`Resync`, see `docs/protocol.md`), instead of trusting a cursor that
//! points past the restored feed's head.
//!
//! Every backup is itself audited (it copies every record), before it is taken.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use sync_core::store::{SqliteStore, Store};

use crate::audit::{AuditAction, AuditEntry, AuditLog};

/// The databases a backup holds, by file name in the data directory. The web views' sessions
/// (`web.db`) are not among them: a restore never brings back a session that was ended since.
pub const DATABASES: [&str; 2] = ["nara.db", "server.db"];
/// The description written beside them.
pub const MANIFEST: &str = "backup.json";

/// What went wrong with a backup or a restore.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("the audit log: {0}")]
    Audit(#[from] crate::audit::AuditError),
    #[error("the document store: {0}")]
    Store(#[from] sync_core::error::StoreError),
}

fn sqlite(path: &Path) -> impl FnOnce(rusqlite::Error) -> BackupError + '_ {
    move |source| BackupError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `backup.json`: what a backup is a copy of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// When it was taken (server time, ms since the epoch).
    pub taken_at_ms: i64,
    /// The document store's feed epoch (hex) and head then.
    pub epoch: String,
    pub feed_head: u64,
    /// The audit log's length and head hash then (what `audit verify` printed).
    pub audit_records: u64,
    pub audit_head: String,
}

/// Copies the databases of `data` into `to` (created owner-only; it must not hold a backup
/// already), audited first in `audit`. Returns what was copied.
pub fn backup(
    data: &Path,
    to: &Path,
    audit: &dyn AuditLog,
    now_ms: i64,
) -> Result<Manifest, BackupError> {
    if to.join(MANIFEST).exists() {
        return Err(BackupError::Invalid(format!(
            "{} already holds a backup: choose an empty directory",
            to.display()
        )));
    }
    crate::datadir::prepare(to).map_err(io(to))?;
    audit.append(
        AuditEntry::new(now_ms, "admin", AuditAction::Backup)
            .detail(format!("backup of the server's stores to {}", to.display())),
    )?;
    for name in DATABASES {
        copy_database(&data.join(name), &to.join(name))?;
    }
    // Described from the copy itself, so the manifest matches what was copied.
    let manifest = describe(to, now_ms)?;
    let path = to.join(MANIFEST);
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BackupError::Invalid(format!("backup.json: {e}")))?;
    std::fs::write(&path, json).map_err(io(&path))?;
    Ok(manifest)
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Restored {
    pub manifest: Manifest,
    /// Where the replaced databases were moved.
    pub moved_aside: PathBuf,
    /// The feed's new epoch (hex).
    pub new_epoch: String,
    /// Audit records of the replaced log that the restored one does not have.
    pub audit_records_cut: u64,
    /// Feed entries of the replaced store that the restored one does not have.
    pub feed_entries_cut: u64,
}

/// Puts the backup in `from` back into `data` (the server must be stopped). `new_epoch` is the
/// restored feed's new epoch (random, from the caller: this module draws no randomness).
pub fn restore(
    from: &Path,
    data: &Path,
    new_epoch: [u8; 16],
    now_ms: i64,
) -> Result<Restored, BackupError> {
    let manifest_path = from.join(MANIFEST);
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(&manifest_path).map_err(io(&manifest_path))?)
            .map_err(|e| BackupError::Invalid(format!("{}: {e}", manifest_path.display())))?;
    for name in DATABASES {
        integrity(&from.join(name))?;
    }
    // What the replaced stores held beyond the backup.
    let (old_feed_head, old_audit) = if data.join("nara.db").exists() {
        let old = describe(data, now_ms)?;
        (old.feed_head, old.audit_records)
    } else {
        (0, 0)
    };
    let aside = data.join(format!("before-restore-{now_ms}"));
    crate::datadir::prepare(&aside).map_err(io(&aside))?;
    for name in DATABASES {
        for suffix in ["", "-wal", "-shm"] {
            let file = data.join(format!("{name}{suffix}"));
            if file.exists() {
                let target = aside.join(format!("{name}{suffix}"));
                std::fs::rename(&file, &target).map_err(io(&file))?;
            }
        }
    }
    // The signed heads exported for the replaced log name records the restore cuts off: they
    // go with it (the restored log's own heads start afresh; see `crate::audit::heads`).
    let heads = data.join(crate::audit::heads::HEADS_FILE);
    if heads.exists() {
        let target = aside.join(crate::audit::heads::HEADS_FILE);
        std::fs::rename(&heads, &target).map_err(io(&heads))?;
    }
    for name in DATABASES {
        copy_database(&from.join(name), &data.join(name))?;
    }
    let store_path = data.join("nara.db");
    let mut store = SqliteStore::open(&store_path)?;
    store.set_meta("epoch", &new_epoch)?;
    // The server's own writes (the web views' changes, made as the users' web devices under
    // this store's incarnation) go on under a new incarnation: their actors must not reuse
    // sequence numbers that changes lost with the restore had used already.
    let mut repo = sync_core::repo::Repo::new(store);
    let renew = repo.incarnation().and_then(|i| {
        repo.set_incarnation(&sync_core::repo::Incarnation {
            number: i.number.saturating_add(1),
            written: 0,
            last: None,
        })
    });
    renew.map_err(|e| BackupError::Invalid(format!("renewing the store's incarnation: {e}")))?;
    drop(repo);
    let audit = crate::audit::SqliteAudit::open(&store_path)?;
    let audit_records_cut = old_audit.saturating_sub(manifest.audit_records);
    let feed_entries_cut = old_feed_head.saturating_sub(manifest.feed_head);
    audit.append(
        AuditEntry::new(now_ms, "admin", AuditAction::Restore).detail(format!(
            "restored from the backup taken at {} (audit head then: {} records, {}); the \
         replaced log had {audit_records_cut} records more and the replaced feed \
         {feed_entries_cut} changes more, kept in {}; new feed epoch {}",
            crate::admin_cli::format_ms(manifest.taken_at_ms),
            manifest.audit_records,
            manifest.audit_head,
            aside.display(),
            hex::encode(new_epoch)
        )),
    )?;
    crate::datadir::tighten(data).map_err(io(data))?;
    Ok(Restored {
        manifest,
        moved_aside: aside,
        new_epoch: hex::encode(new_epoch),
        audit_records_cut,
        feed_entries_cut,
    })
}

/// Copies the live database at `src` to a new file at `dst` with SQLite's backup API, in one
/// step (under one read transaction: a consistent state, even while the server writes).
fn copy_database(src: &Path, dst: &Path) -> Result<(), BackupError> {
    if !src.exists() {
        return Err(BackupError::Invalid(format!(
            "{} does not exist",
            src.display()
        )));
    }
    let from =
        Connection::open_with_flags(src, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(sqlite(src))?;
    from.busy_timeout(Duration::from_secs(5))
        .map_err(sqlite(src))?;
    let mut to = Connection::open(dst).map_err(sqlite(dst))?;
    {
        let backup = rusqlite::backup::Backup::new(&from, &mut to).map_err(sqlite(dst))?;
        // -1: every page in one step. Busy (a writer holds the lock) is retried, bounded.
        let mut tries = 0;
        loop {
            match backup.step(-1).map_err(sqlite(src))? {
                rusqlite::backup::StepResult::Done => break,
                _ if tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => {
                    return Err(BackupError::Invalid(format!(
                        "{}: the database stayed busy ({other:?})",
                        src.display()
                    )));
                }
            }
        }
    }
    drop(to);
    integrity(dst)
}

fn integrity(path: &Path) -> Result<(), BackupError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sqlite(path))?;
    let result: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(sqlite(path))?;
    if result == "ok" {
        Ok(())
    } else {
        Err(BackupError::Invalid(format!(
            "{} fails its integrity check: {result}",
            path.display()
        )))
    }
}

/// The feed and audit heads of the stores in `dir`.
fn describe(dir: &Path, now_ms: i64) -> Result<Manifest, BackupError> {
    let path = dir.join("nara.db");
    let store = SqliteStore::open(&path)?;
    let epoch = hex::encode(store.epoch()?);
    let feed_head = store.feed_head()?;
    drop(store);
    let audit = crate::audit::SqliteAudit::open(&path)?;
    let report = audit.verify()?;
    Ok(Manifest {
        taken_at_ms: now_ms,
        epoch,
        feed_head,
        audit_records: report.records,
        audit_head: report.head,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::audit::SqliteAudit;
    use crate::directory::{Directory, SqliteDirectory};
    use sync_core::store::Origin;
    use sync_core::{ChangeHash, DocumentId, PatientId};

    fn doc() -> DocumentId {
        "p-1/journal/2026-11".parse().unwrap()
    }

    /// A data directory whose store, feed, directory and audit log all hold something.
    fn data_with(dir: &Path, changes: u8) {
        let mut store = SqliteStore::open(dir.join("nara.db")).unwrap();
        for n in 0..changes {
            store
                .append(&doc(), &[(ChangeHash([n; 32]), &[n][..])], Origin::Remote)
                .unwrap();
        }
        drop(store);
        let audit = SqliteAudit::open(&dir.join("nara.db")).unwrap();
        for n in 0..changes {
            audit
                .append(
                    AuditEntry::new(i64::from(n), "u-anna", AuditAction::Accept)
                        .patient(&PatientId::new("p-1").unwrap()),
                )
                .unwrap();
        }
        let directory = SqliteDirectory::open(&dir.join("server.db")).unwrap();
        directory.add_org(&format!("org-{changes}"), "Org").unwrap();
    }

    #[test]
    fn a_restore_puts_the_backup_back_under_a_new_epoch_and_says_what_it_cut_off() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir(&data).unwrap();
        data_with(&data, 3);
        let audit = SqliteAudit::open(&data.join("nara.db")).unwrap();
        let to = tmp.path().join("backup");
        let manifest = backup(&data, &to, &audit, 1_000).unwrap();
        assert_eq!(manifest.feed_head, 3);
        // The backup's own record is in the copy (audited before it was taken).
        assert_eq!(manifest.audit_records, 4);
        drop(audit);
        // A second backup into the same directory is refused.
        let audit = SqliteAudit::open(&data.join("nara.db")).unwrap();
        assert!(backup(&data, &to, &audit, 1_001).is_err());
        drop(audit);
        // Life goes on after the backup: 2 more changes and 2 more records (and another org).
        let mut store = SqliteStore::open(data.join("nara.db")).unwrap();
        let old_epoch = store.epoch().unwrap();
        for n in 10..12u8 {
            store
                .append(&doc(), &[(ChangeHash([n; 32]), &[n][..])], Origin::Remote)
                .unwrap();
        }
        drop(store);
        data_with(&data, 0);
        let audit = SqliteAudit::open(&data.join("nara.db")).unwrap();
        audit
            .append(AuditEntry::new(5, "admin", AuditAction::AddOrg))
            .unwrap();
        // The server had exported its signed head at record 5, which the restore cuts off.
        let (key, _) = crate::audit::heads::AuditKey::load_or_create(
            &data.join(crate::audit::heads::KEY_FILE),
        )
        .unwrap();
        let heads_file = data.join(crate::audit::heads::HEADS_FILE);
        crate::audit::heads::append(&heads_file, &key.sign(&audit.head().unwrap(), 5)).unwrap();
        drop(audit);

        let restored = restore(&to, &data, [7; 16], 2_000).unwrap();
        assert_eq!(restored.feed_entries_cut, 2);
        assert_eq!(restored.audit_records_cut, 1);
        let store = SqliteStore::open(data.join("nara.db")).unwrap();
        assert_eq!(store.feed_head().unwrap(), 3);
        assert_eq!(store.epoch().unwrap(), [7; 16]);
        assert_ne!(store.epoch().unwrap(), old_epoch);
        // The server's own writes (web sessions) go on under a new incarnation of its store.
        let repo = sync_core::repo::Repo::new(store);
        assert_eq!(repo.incarnation().unwrap().number, 1);
        drop(repo);
        let audit = SqliteAudit::open(&data.join("nara.db")).unwrap();
        let report = audit.verify().unwrap();
        assert!(report.ok, "{report:?}");
        assert_eq!(report.records, 5, "the backup's 4 and the restore's own");
        let directory = SqliteDirectory::open(&data.join("server.db")).unwrap();
        assert!(
            directory.add_org("org-3", "Org").is_err(),
            "the backup's org is back"
        );
        assert!(
            directory.add_org("org-0", "Org").is_ok(),
            "the later org is gone"
        );
        // What was replaced is kept.
        assert!(restored.moved_aside.join("nara.db").exists());
        assert!(restored.moved_aside.join("server.db").exists());
        // With the replaced log's signed heads: the restored log verifies against the heads
        // file the server starts afresh.
        assert!(!heads_file.exists());
        let old_heads = restored.moved_aside.join(crate::audit::heads::HEADS_FILE);
        let c = crate::audit::Checkpoints::load(&[old_heads], &[key.public()]).unwrap();
        assert!(
            !audit.verify_against(&c).unwrap().ok,
            "the cut is seen against them"
        );
    }

    #[test]
    fn a_damaged_backup_is_not_restored() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir(&data).unwrap();
        data_with(&data, 2);
        let audit = SqliteAudit::open(&data.join("nara.db")).unwrap();
        let to = tmp.path().join("backup");
        backup(&data, &to, &audit, 1_000).unwrap();
        drop(audit);
        std::fs::write(to.join("server.db"), b"not a database").unwrap();
        assert!(restore(&to, &data, [7; 16], 2_000).is_err());
        // Nothing was touched.
        assert_eq!(
            SqliteStore::open(data.join("nara.db"))
                .unwrap()
                .feed_head()
                .unwrap(),
            2
        );
    }
}
