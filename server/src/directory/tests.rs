//! The directory's conformance suite on SQLite, and what is SQLite's own: the file, its schema.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use sync_core::UserId;

use super::conformance::{Fixture, directory_conformance};
use super::*;

/// A directory in a file of its own per test; each handle opens the file anew.
pub(super) struct SqliteFixture {
    dir: tempfile::TempDir,
}

impl SqliteFixture {
    pub(super) fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("server.db")
    }
}

impl Fixture for SqliteFixture {
    type Dir = SqliteDirectory;
    fn open(&self) -> SqliteDirectory {
        SqliteDirectory::open(&self.path()).unwrap()
    }
}

mod conformance_suite {
    super::directory_conformance!(super::SqliteFixture::new());
}

#[test]
fn codes_and_secrets_are_stored_only_hashed() {
    let f = SqliteFixture::new();
    let d = f.open();
    d.add_org("o1", "Org").unwrap();
    d.add_user(
        &UserId::new("u-carer").unwrap(),
        "Anna",
        sync_core::Role::Carer,
        "o1",
    )
    .unwrap();
    let code = d.enroll(&UserId::new("u-carer").unwrap(), 0).unwrap();
    let cred = d.redeem(&code, 1).unwrap();
    drop(d);
    let raw = std::fs::read(f.path()).unwrap();
    let wal = std::fs::read(f.dir.path().join("server.db-wal")).unwrap_or_default();
    for hay in [&raw, &wal] {
        for needle in [code.as_bytes(), cred.secret.as_bytes()] {
            assert!(!hay.windows(needle.len()).any(|w| w == needle));
        }
    }
}

#[test]
fn a_newer_schema_is_refused() {
    let f = SqliteFixture::new();
    f.open();
    rusqlite::Connection::open(f.path())
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = SqliteDirectory::open(&f.path()).unwrap_err();
    assert!(
        matches!(err, DirectoryError::NewerSchema { found: 99, .. }),
        "{err}"
    );
}
