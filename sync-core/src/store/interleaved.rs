//! A store wrapper for tests of writers racing each other (feature `testing`): another writer
//! (another server node, another connection to the same file) runs just before a group of
//! this store's opens, the moment between a repo's validation of foreign changes and its
//! append. Shared by sync-core's repo tests and the server's PostgreSQL race tests.

use std::collections::VecDeque;

use automerge::ChangeHash;

use super::{Epoch, FeedEntry, FeedProof, Lease, Origin, Store, StoredDocument};
use crate::error::StoreError;
use crate::ids::{DeviceId, DocumentId};

/// `store`, with other writers queued to run one before each group it opens.
pub struct Interleaved<S: Store> {
    pub store: S,
    meanwhile: VecDeque<Box<dyn FnOnce()>>,
    before_compact: VecDeque<Box<dyn FnOnce()>>,
}

impl<S: Store + std::fmt::Debug> std::fmt::Debug for Interleaved<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interleaved")
            .field("store", &self.store)
            .field("waiting", &self.waiting())
            .finish()
    }
}

impl<S: Store> Interleaved<S> {
    pub fn new(store: S) -> Self {
        Self {
            store,
            meanwhile: VecDeque::new(),
            before_compact: VecDeque::new(),
        }
    }

    /// Runs `other_writer` just before the next group this store opens that no earlier
    /// writer was queued for.
    pub fn then(&mut self, other_writer: impl FnOnce() + 'static) {
        self.meanwhile.push_back(Box::new(other_writer));
    }

    /// Runs `other_writer` just before the next compaction this store makes that no earlier
    /// writer was queued for (another node storing or compacting meanwhile).
    pub fn before_compact(&mut self, other_writer: impl FnOnce() + 'static) {
        self.before_compact.push_back(Box::new(other_writer));
    }

    /// Writers queued (before groups or compactions) that have not run yet.
    pub fn waiting(&self) -> usize {
        self.meanwhile.len() + self.before_compact.len()
    }
}

impl<S: Store> Store for Interleaved<S> {
    fn claim_device(
        &mut self,
        device: &DeviceId,
        holder: &str,
        now_ms: i64,
    ) -> Result<Lease, StoreError> {
        self.store.claim_device(device, holder, now_ms)
    }
    fn check_lease(&self, device: &DeviceId, token: u64) -> Result<(), StoreError> {
        self.store.check_lease(device, token)
    }
    fn documents(&self) -> Result<Vec<DocumentId>, StoreError> {
        self.store.documents()
    }
    fn load(&self, doc: &DocumentId) -> Result<Option<StoredDocument>, StoreError> {
        self.store.load(doc)
    }
    fn append(
        &mut self,
        doc: &DocumentId,
        changes: &[(ChangeHash, &[u8])],
        origin: Origin,
    ) -> Result<(), StoreError> {
        self.store.append(doc, changes, origin)
    }
    fn compact(
        &mut self,
        doc: &DocumentId,
        snapshot: &[u8],
        covered: &[ChangeHash],
    ) -> Result<(), StoreError> {
        if let Some(other_writer) = self.before_compact.pop_front() {
            other_writer();
        }
        self.store.compact(doc, snapshot, covered)
    }
    fn pending(&self) -> Result<Vec<(DocumentId, ChangeHash)>, StoreError> {
        self.store.pending()
    }
    fn mark_uploaded(&mut self, doc: &DocumentId, hashes: &[ChangeHash]) -> Result<(), StoreError> {
        self.store.mark_uploaded(doc, hashes)
    }
    fn feed_after(&self, after: u64, limit: usize) -> Result<Vec<FeedEntry>, StoreError> {
        self.store.feed_after(after, limit)
    }
    fn feed_head(&self) -> Result<u64, StoreError> {
        self.store.feed_head()
    }
    fn stored_changes(
        &self,
        doc: &DocumentId,
        hashes: &[ChangeHash],
    ) -> Result<Vec<(ChangeHash, Vec<u8>)>, StoreError> {
        self.store.stored_changes(doc, hashes)
    }
    fn feed_position(
        &self,
        doc: &DocumentId,
        hash: &ChangeHash,
    ) -> Result<Option<u64>, StoreError> {
        self.store.feed_position(doc, hash)
    }
    fn epoch(&self) -> Result<Epoch, StoreError> {
        self.store.epoch()
    }
    fn set_epoch(&mut self, epoch: Epoch) -> Result<(), StoreError> {
        self.store.set_epoch(epoch)
    }
    fn feed_proof(&self, position: u64) -> Result<FeedProof, StoreError> {
        self.store.feed_proof(position)
    }
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.meta(key)
    }
    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.store.set_meta(key, value)
    }
    fn remove_document(&mut self, doc: &DocumentId) -> Result<(), StoreError> {
        self.store.remove_document(doc)
    }
    fn begin_group(&mut self) -> Result<(), StoreError> {
        if let Some(other_writer) = self.meanwhile.pop_front() {
            other_writer();
        }
        self.store.begin_group()
    }
    fn commit_group(&mut self) -> Result<(), StoreError> {
        self.store.commit_group()
    }
    fn rollback_group(&mut self) {
        self.store.rollback_group()
    }
    fn begin_relaxed_group(&mut self) -> Result<(), StoreError> {
        if let Some(other_writer) = self.meanwhile.pop_front() {
            other_writer();
        }
        self.store.begin_relaxed_group()
    }
}
