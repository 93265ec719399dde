//! An in-memory [`Store`] for simulation. Clones share state, so a simulated device can "crash"
//! (drop its repo and everything unsaved in it) and reopen the same store.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use automerge::ChangeHash;

use super::{Origin, Store, StoredDocument};
use crate::error::StoreError;
use crate::ids::DocumentId;

#[derive(Debug, Default)]
struct Inner {
    docs: BTreeMap<DocumentId, Doc>,
    /// (insertion number, doc, hash) so that `pending` is oldest first like SQLite's.
    pending: BTreeSet<(u64, DocumentId, ChangeHash)>,
    next: u64,
}

#[derive(Debug, Default)]
struct Doc {
    snapshot: Option<Vec<u8>>,
    changes: Vec<(ChangeHash, Vec<u8>)>,
}

#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        self.inner.lock().map_err(|_| StoreError::Poisoned)
    }
}

impl Store for MemoryStore {
    fn documents(&self) -> Result<Vec<DocumentId>, StoreError> {
        Ok(self.lock()?.docs.keys().cloned().collect())
    }

    fn load(&self, doc: &DocumentId) -> Result<Option<StoredDocument>, StoreError> {
        Ok(self.lock()?.docs.get(doc).map(|d| StoredDocument {
            snapshot: d.snapshot.clone(),
            changes: d.changes.clone(),
        }))
    }

    fn append(
        &mut self,
        doc: &DocumentId,
        changes: &[(ChangeHash, &[u8])],
        origin: Origin,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let inner = &mut *inner;
        let d = inner.docs.entry(doc.clone()).or_default();
        for (hash, bytes) in changes {
            if d.changes.iter().any(|(h, _)| h == hash) {
                continue;
            }
            d.changes.push((*hash, bytes.to_vec()));
            if origin == Origin::Local {
                inner.next += 1;
                inner.pending.insert((inner.next, doc.clone(), *hash));
            }
        }
        Ok(())
    }

    fn compact(
        &mut self,
        doc: &DocumentId,
        snapshot: &[u8],
        covered: &[ChangeHash],
    ) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let d = inner.docs.entry(doc.clone()).or_default();
        d.snapshot = Some(snapshot.to_vec());
        d.changes.retain(|(h, _)| !covered.contains(h));
        Ok(())
    }

    fn pending(&self) -> Result<Vec<(DocumentId, ChangeHash)>, StoreError> {
        Ok(self
            .lock()?
            .pending
            .iter()
            .map(|(_, d, h)| (d.clone(), *h))
            .collect())
    }

    fn mark_uploaded(&mut self, doc: &DocumentId, hashes: &[ChangeHash]) -> Result<(), StoreError> {
        self.lock()?
            .pending
            .retain(|(_, d, h)| !(d == doc && hashes.contains(h)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryStore;
    crate::store::conformance::store_conformance!(MemoryStore::new());
}
