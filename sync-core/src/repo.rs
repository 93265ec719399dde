//! Documents and a store together. A [`Repo`] loads documents on demand, keeps a bounded number
//! in memory, and makes every change durable before it reports it saved.

use std::collections::BTreeMap;

use automerge::{Change, ChangeHash};

use crate::error::{ModelError, RepoError};
use crate::ids::{Author, DocumentId, PatientId, Timestamp};
use crate::model::{ApplyOutcome, CareDocument, Chart, Edit};
use crate::store::{Origin, Store};

/// Documents held in memory by default; past this, the least recently used is dropped (it is
/// all in the store).
pub const DEFAULT_MAX_LOADED: usize = 256;
/// Changes appended to a document before it is compacted into a snapshot.
pub const DEFAULT_COMPACT_AFTER: usize = 128;

/// A change that is durable in the store.
#[derive(Debug)]
pub struct Saved<T> {
    pub value: T,
    /// `None` if the edit wrote nothing.
    pub change: Option<ChangeHash>,
}

#[derive(Debug)]
struct Loaded {
    doc: CareDocument,
    last_used: u64,
    /// Change rows in the store since the last snapshot.
    stored_changes: usize,
}

#[derive(Debug)]
pub struct Repo<S: Store> {
    store: S,
    loaded: BTreeMap<DocumentId, Loaded>,
    clock: u64,
    max_loaded: usize,
    compact_after: usize,
}

impl<S: Store> Repo<S> {
    pub fn new(store: S) -> Self {
        Self {
            store,
            loaded: BTreeMap::new(),
            clock: 0,
            max_loaded: DEFAULT_MAX_LOADED,
            compact_after: DEFAULT_COMPACT_AFTER,
        }
    }

    /// At most `n` (at least 1) documents stay in memory.
    pub fn with_max_loaded(mut self, n: usize) -> Self {
        self.max_loaded = n.max(1);
        self
    }

    /// Compact a document once it has `n` (at least 1) changes stored since its snapshot.
    pub fn with_compact_after(mut self, n: usize) -> Self {
        self.compact_after = n.max(1);
        self
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn into_store(self) -> S {
        self.store
    }

    /// How many documents are in memory now.
    pub fn loaded(&self) -> usize {
        self.loaded.len()
    }

    /// Every document in the store.
    pub fn document_ids(&self) -> Result<Vec<DocumentId>, RepoError> {
        Ok(self.store.documents()?)
    }

    /// The document `id`, loaded from the store, or its genesis if the store does not hold it.
    pub fn get(&mut self, id: &DocumentId) -> Result<&CareDocument, RepoError> {
        Ok(&self.entry(id)?.doc)
    }

    fn entry(&mut self, id: &DocumentId) -> Result<&mut Loaded, RepoError> {
        self.clock += 1;
        let now = self.clock;
        if !self.loaded.contains_key(id) {
            let (doc, stored_changes) = match self.store.load(id)? {
                Some(stored) => (
                    CareDocument::load(id.clone(), stored.snapshot.as_deref(), &stored.changes)?,
                    stored.changes.len(),
                ),
                None => (CareDocument::new(id.clone())?, 0),
            };
            while self.loaded.len() >= self.max_loaded {
                let Some(oldest) = self
                    .loaded
                    .iter()
                    .min_by_key(|(_, l)| l.last_used)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                self.loaded.remove(&oldest);
            }
            self.loaded.insert(
                id.clone(),
                Loaded {
                    doc,
                    last_used: now,
                    stored_changes,
                },
            );
        }
        let entry = self
            .loaded
            .get_mut(id)
            .ok_or_else(|| ModelError::NotFound {
                doc: id.clone(),
                what: "document",
                id: id.to_string(),
            })?;
        entry.last_used = now;
        Ok(entry)
    }

    /// Makes a local change and commits it, with its pending-upload mark, in one store
    /// transaction before returning. If the store fails, the change is dropped from memory too.
    pub fn change<T>(
        &mut self,
        id: &DocumentId,
        author: &Author,
        at: Timestamp,
        f: impl FnOnce(&mut Edit<'_>) -> Result<T, ModelError>,
    ) -> Result<Saved<T>, RepoError> {
        let entry = self.entry(id)?;
        let local = entry.doc.change(author, at, f)?;
        let Some(change) = local.change else {
            return Ok(Saved {
                value: local.value,
                change: None,
            });
        };
        let hash = change.hash();
        if let Err(e) = self
            .store
            .append(id, &[(hash, change.raw_bytes())], Origin::Local)
        {
            self.loaded.remove(id);
            return Err(e.into());
        }
        self.after_append(id, 1)?;
        Ok(Saved {
            value: local.value,
            change: Some(hash),
        })
    }

    /// Validates and applies foreign changes, then stores those applied. Refused changes are
    /// reported in the outcome and never stored.
    pub fn apply_changes(
        &mut self,
        id: &DocumentId,
        changes: Vec<Change>,
    ) -> Result<ApplyOutcome, RepoError> {
        let entry = self.entry(id)?;
        let outcome = entry.doc.apply_changes(changes)?;
        if !outcome.applied.is_empty() {
            let rows: Vec<(ChangeHash, &[u8])> = outcome
                .applied
                .iter()
                .map(|c| (c.hash(), c.raw_bytes()))
                .collect();
            if let Err(e) = self.store.append(id, &rows, Origin::Remote) {
                self.loaded.remove(id);
                return Err(e.into());
            }
            self.after_append(id, rows.len())?;
        }
        Ok(outcome)
    }

    fn after_append(&mut self, id: &DocumentId, n: usize) -> Result<(), RepoError> {
        let due = self.loaded.get_mut(id).is_some_and(|l| {
            l.stored_changes += n;
            l.stored_changes >= self.compact_after
        });
        if due {
            self.compact(id)?;
        }
        Ok(())
    }

    /// Writes a snapshot of the document and drops the change rows it contains, atomically.
    pub fn compact(&mut self, id: &DocumentId) -> Result<(), RepoError> {
        let entry = self.entry(id)?;
        let snapshot = entry.doc.save();
        let covered: Vec<ChangeHash> = entry
            .doc
            .changes_since(&[])
            .iter()
            .map(Change::hash)
            .collect();
        entry.stored_changes = 0;
        self.store.compact(id, &snapshot, &covered)?;
        Ok(())
    }

    /// Local changes not yet acknowledged by the server.
    pub fn pending(&self) -> Result<Vec<(DocumentId, ChangeHash)>, RepoError> {
        Ok(self.store.pending()?)
    }

    pub fn mark_uploaded(
        &mut self,
        id: &DocumentId,
        hashes: &[ChangeHash],
    ) -> Result<(), RepoError> {
        Ok(self.store.mark_uploaded(id, hashes)?)
    }

    /// Loads every stored document of `patient` (and any given in `also`, e.g. a month not yet
    /// written) and returns their chart: conflicts, flags, slot status.
    pub fn chart(
        &mut self,
        patient: &PatientId,
        also: &[DocumentId],
    ) -> Result<Chart<'_>, RepoError> {
        let mut ids: Vec<DocumentId> = self
            .store
            .documents()?
            .into_iter()
            .filter(|d| d.patient() == patient)
            .collect();
        ids.extend(also.iter().filter(|d| d.patient() == patient).cloned());
        ids.sort();
        ids.dedup();
        if ids.len() > self.max_loaded {
            self.max_loaded = ids.len();
        }
        for id in &ids {
            self.entry(id)?;
        }
        let docs = ids
            .iter()
            .filter_map(|id| self.loaded.get(id).map(|l| &l.doc));
        Ok(Chart::new(patient, docs.collect::<Vec<_>>()))
    }
}
