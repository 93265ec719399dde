//! The `store_load` entry point: bytes as a stored snapshot or change row.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use automerge::{Change, ChangeHash};

use crate::error::{ModelError, RepoError};
use crate::model::CareDocument;
use crate::repo::Repo;
use crate::store::{Origin, SqliteStore, Store};

use super::fixtures::{contents, fixture, temp_dir};
use super::prepared::prepared;
use super::reader::Reader;

/// Writes bytes as a stored snapshot or change row of one document into a real SQLite store
/// (holding the whole fixture record) in a temporary file, then opens the store and loads
/// every document.
///
/// Layout: a mode byte, a document byte, then
/// - mode 0: the rest is the document's snapshot;
/// - mode 1: the rest is one more change row (stored under its own hash if it parses);
/// - mode 2: edits `(u16 position, xor byte)...` of the document's valid snapshot;
/// - mode 3: a row byte, a flag byte, then edits of that valid change row (the flag: keep the
///   stored hash, or store under the edited bytes' hash);
/// - mode 4: the document's valid snapshot truncated to a u16 length, then the rest appended.
pub fn store_load(bytes: &[u8]) {
    let fx = fixture();
    let mut r = Reader::new(bytes);
    let mode = r.byte() % 5;
    let target = r.index(fx.docs.len());
    let base = &fx.docs[target];
    let id = &base.id;
    let dir = temp_dir();
    let path = dir.path().join("store.db");
    std::fs::write(&path, &fx.store_files[target]).expect("write the fixture store");
    {
        let mut store = SqliteStore::open(&path).expect("open the fixture store");
        let valid_rows = || -> Vec<(ChangeHash, &[u8])> {
            base.changes
                .iter()
                .map(|c| (c.hash(), c.raw_bytes()))
                .collect()
        };
        let written = match mode {
            0 => store.compact(id, r.rest(), &[]),
            1 => {
                let row = r.rest();
                let hash = Change::from_bytes(row.to_vec())
                    .map(|c| c.hash())
                    .unwrap_or(ChangeHash([0xab; 32]));
                let mut rows = valid_rows();
                rows.push((hash, row));
                store.append(id, &rows, Origin::Remote)
            }
            2 => {
                let mut snap = base.snapshot.clone();
                apply_edits(&mut snap, &mut r);
                store.compact(id, &snap, &[])
            }
            3 => {
                let n = r.index(base.changes.len());
                let rehash = r.byte() % 2 == 1;
                let mut rows = valid_rows();
                let Some(&(hash, bytes)) = rows.get(n) else {
                    return;
                };
                let mut row = bytes.to_vec();
                apply_edits(&mut row, &mut r);
                let hash = if rehash {
                    Change::from_bytes(row.clone()).map_or(hash, |c| c.hash())
                } else {
                    hash
                };
                rows[n] = (hash, &row[..]);
                store.append(id, &rows, Origin::Remote)
            }
            _ => {
                let mut snap = base.snapshot.clone();
                snap.truncate(r.u16() as usize);
                snap.extend_from_slice(r.rest());
                store.compact(id, &snap, &[])
            }
        };
        written.expect("the store takes any bytes");
    }
    let store = SqliteStore::open(&path).expect("the store reopens");
    let mut repo = Repo::new(store);
    match repo.get(id) {
        Ok(doc) => {
            // Whatever loaded validates, and survives its own save and load.
            let saved = doc.save();
            let heads = doc.heads();
            let contents_now = contents(doc);
            let again = CareDocument::load(id.clone(), Some(&saved), &[])
                .unwrap_or_else(|e| panic!("a loaded document does not reload from its save: {e}"));
            assert_eq!(again.heads(), heads, "save and load changed the heads");
            assert_eq!(
                contents(&again),
                contents_now,
                "save and load changed the contents"
            );
        }
        Err(RepoError::Model(e)) => {
            assert_eq!(e.document(), id, "the error names the document");
            assert!(
                !matches!(e, ModelError::Automerge { .. }),
                "damaged bytes must be a typed refusal, not an Automerge failure: {e}"
            );
        }
        Err(e) => panic!("loading damaged bytes gave a store error: {e}"),
    }
    // Every other document is stored as it was (then it loads as it did when prepared), or
    // loads with the same heads.
    let store_file = &prepared().store_files[target];
    for (i, other) in fx.docs.iter().enumerate().filter(|(i, _)| *i != target) {
        let stored = repo
            .store()
            .load(&other.id)
            .unwrap_or_else(|e| panic!("another document no longer reads: {e}"));
        if stored == store_file[i] {
            continue;
        }
        let doc = repo
            .get(&other.id)
            .unwrap_or_else(|e| panic!("another document no longer loads: {e}"));
        assert_eq!(
            doc.heads(),
            prepared().docs[i].heads,
            "another document changed"
        );
    }
}

fn apply_edits(buf: &mut Vec<u8>, r: &mut Reader<'_>) {
    while !r.is_empty() {
        let op = r.byte();
        let pos = r.u16() as usize;
        match op % 4 {
            0 | 1 => {
                let i = pos % buf.len().max(1);
                if let Some(b) = buf.get_mut(i) {
                    *b ^= r.byte() | 1;
                }
            }
            2 => buf.truncate(pos % (buf.len() + 1)),
            _ => {
                let at = pos % (buf.len() + 1);
                let b = r.byte();
                buf.insert(at, b);
            }
        }
    }
}
