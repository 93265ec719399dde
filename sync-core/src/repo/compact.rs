//! Compaction: a document's change rows replaced by a snapshot, and the idle upkeep that
//! compacts the loaded documents that are due.

use super::{DEFAULT_COMPACT_AFTER_BYTES, Repo};
use crate::error::{ModelError, RepoError};
use crate::ids::DocumentId;
use crate::model::CareDocument;
use crate::store::Store;

impl<S: Store> Repo<S> {
    /// Writes a snapshot of the document and drops, atomically, the change rows stored since
    /// the previous snapshot (the new snapshot contains them all).
    ///
    /// The snapshot must load back to the same document (heads and records) before any change
    /// row is dropped: a document that Automerge can hold but whose save it cannot read again
    /// (seen from damaged stored bytes, found by fuzzing) keeps its rows and stays uncompacted.
    pub fn compact(&mut self, id: &DocumentId) -> Result<(), RepoError> {
        self.refresh()?;
        let validated_at = self.seen;
        let entry = self.cached_entry(id)?;
        // Automerge 0.12 panics saving a document that took a change it cannot read back (a
        // device does not read back what a server relayed: `ReadBack::Upstream`). Caught, it
        // is a snapshot that does not load back: the rows are kept and the copy is loaded again.
        let Ok(snapshot) = crate::model::panic_guard::catch(|| entry.doc.save()) else {
            tracing::error!(%id, "Automerge failed saving the document: not compacted");
            self.loaded.remove(id);
            return Err(RepoError::Model(ModelError::Corrupt {
                doc: id.clone(),
                detail: "Automerge failed saving it; the change rows are kept".into(),
            }));
        };
        let reloaded = CareDocument::load(id.clone(), Some(&snapshot), &[]);
        let same = reloaded.as_ref().is_ok_and(|d| {
            d.heads() == entry.doc.heads()
                && d.events().len() == entry.doc.events().len()
                && d.revisions().len() == entry.doc.revisions().len()
        });
        if !same {
            tracing::error!(%id, "a snapshot does not load back to its document: not compacted");
            return Err(RepoError::Model(ModelError::Corrupt {
                doc: id.clone(),
                detail: "its snapshot does not load back; the change rows are kept".into(),
            }));
        }
        let covered = std::mem::take(&mut entry.since_snapshot);
        entry.bytes_since_snapshot = 0;
        // Another writer of the store (a server node) may have stored a change of it since and
        // compacted it into a snapshot of its own, deleting its row: this snapshot, without
        // it, must not replace that one (the change would be gone from the document).
        let written = self.write_unraced(id, validated_at, &[], |store| {
            store.compact(id, &snapshot, &covered)
        });
        if let Err(e) = written {
            // Compacted later, from a copy loaded again.
            self.loaded.remove(id);
            return Err(e);
        }
        Ok(())
    }

    /// Background upkeep, for when the app or server is idle: compacts up to `max_docs` loaded
    /// documents that are due. Returns how many were compacted.
    pub fn maintain(&mut self, max_docs: usize) -> Result<usize, RepoError> {
        let due: Vec<DocumentId> = self
            .loaded
            .iter()
            .filter(|(_, l)| {
                l.since_snapshot.len() >= self.compact_after
                    || l.bytes_since_snapshot >= DEFAULT_COMPACT_AFTER_BYTES
            })
            .map(|(id, _)| id.clone())
            .take(max_docs)
            .collect();
        let mut compacted = 0;
        for id in &due {
            match self.compact(id) {
                Ok(()) => compacted += 1,
                // Kept as it is (logged in `compact`); the others are still compacted.
                Err(RepoError::Model(_)) => {}
                // Another writer changed it meanwhile: compacted at a later turn.
                Err(RepoError::Raced { .. }) => {
                    tracing::debug!(%id, "another writer changed the document while it was compacted: later");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(compacted)
    }
}
