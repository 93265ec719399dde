//! Documents and a store together. A [`Repo`] loads documents on demand, keeps a bounded number
//! in memory, and makes every change durable before it reports it saved.
//!
//! Several repos may share one store (server nodes over one database): a repo is never the
//! only writer. Before it uses a cached document it reads the store's feed head, and drops
//! any cached document that lacks a change stored since it last looked (the store's feed
//! records every change stored, in the transaction that stores it), so a document is never
//! served or validated without a change the store holds. A foreign change is validated
//! against the document so refreshed, and its append checks, in the same transaction and
//! after it, that no other writer stored a change of the document meanwhile (else nothing is
//! stored and it is validated again): two writers can never both accept one record id with
//! two contents.

use std::collections::{BTreeMap, BTreeSet};

use automerge::{Change, ChangeHash};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, RepoError};
use crate::ids::{Author, DocumentId, PatientId, Timestamp};
use crate::model::{ApplyOutcome, CareDocument, Chart, Edit};
use crate::store::{Origin, Store};

mod compact;
mod copy;
mod foreign;
mod recent;

/// Documents held in memory by default; past this, the least recently used is dropped (it is
/// all in the store).
pub const DEFAULT_MAX_LOADED: usize = 256;
/// A document is due for compaction into a snapshot once this many changes, or this many bytes
/// of changes, are stored after its snapshot. Compaction runs in [`Repo::maintain`], never
/// inside a write.
pub const DEFAULT_COMPACT_AFTER: usize = 128;
pub const DEFAULT_COMPACT_AFTER_BYTES: usize = 64 * 1024;
/// Feed entries a repo reads at most to learn which cached documents another writer changed;
/// further behind than that, it drops every cached document (each loads again when used).
const REFRESH_SCAN: usize = 1024;
/// Times a foreign change is validated and appended when other writers keep storing changes
/// of its document in between ([`RepoError::Raced`] after that).
const APPLY_ATTEMPTS: usize = 4;
/// As [`APPLY_ATTEMPTS`], inside an open group (a raced append there is retried once).
const GROUP_APPLY_ATTEMPTS: usize = 2;

/// Store meta key of the store's [`Incarnation`].
const INCARNATION_KEY: &str = "incarnation";

/// Which incarnation of a device's store this is, and how many changes it has written under
/// it (docs/protocol.md, "Incarnations"). Kept in store meta, updated in the same transaction
/// as every local change: a change durable means its count durable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incarnation {
    /// 0 for a store that never had another; then the number the server issued.
    pub number: u32,
    /// Changes written under this incarnation (each change message carries its number).
    pub written: u64,
    /// The hash of the last of them.
    pub last: Option<[u8; 32]>,
}

fn forgotten_key(patient: &PatientId) -> String {
    format!("forgotten/{patient}")
}

fn entry_record(
    loaded: &mut BTreeMap<DocumentId, Loaded>,
    id: &DocumentId,
    rows: &[(ChangeHash, usize)],
) {
    if let Some(l) = loaded.get_mut(id) {
        for (h, len) in rows {
            l.record(*h, *len);
        }
    }
}

/// A change that is durable in the store.
#[derive(Debug)]
pub struct Saved<T> {
    pub value: T,
    /// `None` if the edit wrote nothing.
    pub change: Option<ChangeHash>,
}

#[derive(Debug, Clone)]
struct Loaded {
    doc: CareDocument,
    last_used: u64,
    /// Change rows in the store since the last snapshot, and their bytes.
    since_snapshot: Vec<ChangeHash>,
    bytes_since_snapshot: usize,
}

impl Loaded {
    fn record(&mut self, hash: ChangeHash, bytes: usize) {
        self.since_snapshot.push(hash);
        self.bytes_since_snapshot += bytes;
    }
}

#[derive(Debug)]
pub struct Repo<S: Store> {
    store: S,
    loaded: BTreeMap<DocumentId, Loaded>,
    clock: u64,
    max_loaded: usize,
    compact_after: usize,
    /// The store's feed position up to which every stored change of a cached document is in
    /// its cached copy (see [`Repo::refresh`]).
    seen: u64,
    /// [`Repo::grouped`] calls open now: inside one, a raced append cannot be retried alone.
    group_depth: usize,
    /// Foreign changes applied lately ([`recent`]), served by [`Repo::change_by_hash`].
    recent: recent::RecentChanges,
    /// Documents loaded from the store so far ([`Repo::documents_loaded`]).
    loads: u64,
}

impl<S: Store> Repo<S> {
    pub fn new(store: S) -> Self {
        Self {
            store,
            loaded: BTreeMap::new(),
            clock: 0,
            max_loaded: DEFAULT_MAX_LOADED,
            compact_after: DEFAULT_COMPACT_AFTER,
            seen: 0,
            group_depth: 0,
            recent: recent::RecentChanges::default(),
            loads: 0,
        }
    }

    /// How many times a document was loaded from the store (a whole document read and built
    /// again: the cost a cache saves).
    pub fn documents_loaded(&self) -> u64 {
        self.loads
    }

    /// At most `n` (at least 1) documents stay in memory.
    pub fn with_max_loaded(mut self, n: usize) -> Self {
        self.max_loaded = n.max(1);
        self
    }

    /// At most `n` foreign changes applied lately are kept decoded for
    /// [`Repo::change_by_hash`] (4,096 by default). A server sends each on to every device
    /// that reads it; a device sends no one else's changes on, and keeps none (`0`): copying
    /// each received change into the cache was 3% of a phone's work in a team's morning.
    pub fn with_recent_changes(mut self, n: usize) -> Self {
        self.recent = recent::RecentChanges::with_capacity(n);
        self
    }

    /// A document is due for compaction (by [`Repo::maintain`]) once it has `n` (at least 1)
    /// changes stored since its snapshot.
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

    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Drops every document in memory, to be loaded again from what is stored: for a caller
    /// that rolled back store writes itself (a savepoint inside a group), so that memory never
    /// holds a change the store lost.
    pub fn unload_all(&mut self) {
        self.loaded.clear();
        self.recent.clear();
        // The feed position this repo had read up to may be one the rollback took back (an
        // append of its own it skipped past), to be used again by another change: with nothing
        // cached, the next refresh starts again from the store's head.
        self.seen = 0;
    }

    /// The change `hash` of document `id`: from the changes applied lately if it is one, else
    /// from the document. A hash names one content, so a cached change is the change itself.
    pub fn change_by_hash(
        &mut self,
        id: &DocumentId,
        hash: &ChangeHash,
    ) -> Result<Option<Change>, RepoError> {
        if let Some(c) = self.recent.get(hash) {
            return Ok(Some(c.clone()));
        }
        Ok(self.get(id)?.automerge_change(hash))
    }

    /// Runs `f` with all its store writes committed together: one transaction (one fsync
    /// instead of one per document), all or nothing. Nothing in `f` is durable before this
    /// returns `Ok`, so `f` must not acknowledge anything itself (a received batch: its changes
    /// and cursor land together, then the caller acknowledges). If `f` or the commit fails, the
    /// writes roll back and every document in memory is dropped, to be loaded again from what
    /// is stored: memory never holds a change the store lost.
    pub fn grouped<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, RepoError>,
    ) -> Result<T, RepoError> {
        self.grouped_as(false, f)
    }

    /// [`Repo::grouped`] for writes that only record what the server holds durably and tells
    /// again (`relaxed`: [`Store::begin_relaxed_group`], a commit without its own fsync), or a
    /// durable group (`relaxed == false`).
    pub fn grouped_as<T>(
        &mut self,
        relaxed: bool,
        f: impl FnOnce(&mut Self) -> Result<T, RepoError>,
    ) -> Result<T, RepoError> {
        if relaxed {
            self.store.begin_relaxed_group()?;
        } else {
            self.store.begin_group()?;
        }
        self.in_group(f)
    }

    /// [`Repo::grouped_as`] for an `f` that any error inside fails as a whole, as it fails the
    /// group ([`Store::begin_indivisible_group`]: no savepoint for each document's write
    /// inside). A write that fails inside `f` and that `f` goes past (a raced append it
    /// validates again) makes the commit fail: nothing of `f` is stored.
    pub fn indivisibly<T>(
        &mut self,
        relaxed: bool,
        f: impl FnOnce(&mut Self) -> Result<T, RepoError>,
    ) -> Result<T, RepoError> {
        self.store.begin_indivisible_group(relaxed)?;
        self.in_group(f)
    }

    /// Runs `f` in the group just opened: commits it, or rolls it back and drops every
    /// document in memory.
    fn in_group<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, RepoError>,
    ) -> Result<T, RepoError> {
        self.group_depth += 1;
        let result = f(self).and_then(|v| {
            self.store.commit_group()?;
            Ok(v)
        });
        self.group_depth -= 1;
        if result.is_err() {
            self.store.rollback_group();
            self.unload_all();
        }
        result
    }

    /// Automerge's sync message for `id` and a peer in `state`.
    pub fn sync_generate(
        &mut self,
        id: &DocumentId,
        state: &mut automerge::sync::State,
    ) -> Result<Option<automerge::sync::Message>, RepoError> {
        Ok(self.entry(id)?.doc.sync_generate(state)?)
    }

    /// Receives a peer's sync message for `id`: its changes go through validation and the store
    /// like any foreign change, after `accept` (e.g. the server's author check) has filtered them.
    pub fn sync_receive(
        &mut self,
        id: &DocumentId,
        state: &mut automerge::sync::State,
        message: automerge::sync::Message,
        accept: impl FnMut(&Change) -> bool,
    ) -> Result<ApplyOutcome, RepoError> {
        let changes = self.entry(id)?.doc.sync_receive(state, message)?;
        let changes: Vec<Change> = changes.into_iter().filter(accept).collect();
        self.apply_changes(id, changes)
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

    /// The last sequence number of `actor` in document `id` (0 if it wrote nothing there), as
    /// the cached copy keeps it ([`CareDocument::actor_seq`]).
    pub fn actor_seq(
        &mut self,
        id: &DocumentId,
        actor: &automerge::ActorId,
    ) -> Result<u64, RepoError> {
        Ok(self.entry(id)?.doc.actor_seq(actor))
    }

    /// Catches up with what other writers of the store (other server nodes) stored since this
    /// repo last looked: a cached document that lacks changes the store's feed lists since
    /// then takes them from the store (`catch_up`), or, if it cannot, is dropped, to be
    /// loaded again from the store. One read of the feed head when nothing was stored; bounded
    /// (past [`REFRESH_SCAN`] entries, or a feed that went back, every cached document is
    /// dropped).
    pub fn refresh(&mut self) -> Result<(), RepoError> {
        let head = self.store.feed_head()?;
        if head == self.seen {
            return Ok(());
        }
        if head < self.seen || head - self.seen > REFRESH_SCAN as u64 {
            self.loaded.clear();
            self.seen = head;
            return Ok(());
        }
        let entries = self.store.feed_after(self.seen, REFRESH_SCAN)?;
        let mut missing: BTreeMap<DocumentId, Vec<ChangeHash>> = BTreeMap::new();
        for e in &entries {
            let stale = self
                .loaded
                .get(&e.doc)
                .is_some_and(|l| !l.doc.has_change(&e.hash));
            if stale {
                missing.entry(e.doc.clone()).or_default().push(e.hash);
            }
        }
        for (doc, hashes) in missing {
            if !self.catch_up(&doc, &hashes)? {
                tracing::debug!(%doc, "another writer changed a cached document: reloading it");
                self.loaded.remove(&doc);
            }
        }
        let last = entries.last().map_or(head, |e| e.seq);
        self.seen = if entries.len() == REFRESH_SCAN {
            last
        } else {
            last.max(head)
        };
        Ok(())
    }

    /// Applies to the cached copy of `doc` the changes `hashes` (in feed order) that another
    /// writer stored since this repo last looked: read from the store and applied as foreign
    /// changes are (checked; the writer validated them against the same document), which costs
    /// far less than loading the whole document again (a three-node morning reloaded its few
    /// busy documents some 300 times). `false` if the copy could not take all of them (a row
    /// folded into a snapshot meanwhile, a change refused, Automerge failed): the caller then
    /// drops the copy, to be loaded again from the store.
    fn catch_up(&mut self, doc: &DocumentId, hashes: &[ChangeHash]) -> Result<bool, RepoError> {
        let rows = self.store.stored_changes(doc, hashes)?;
        if rows.len() != hashes.len() {
            return Ok(false);
        }
        let mut changes = Vec::with_capacity(rows.len());
        for (hash, bytes) in &rows {
            match Change::from_bytes(bytes.clone()) {
                Ok(c) if c.hash() == *hash => changes.push(c),
                _ => return Ok(false),
            }
        }
        let Some(entry) = self.loaded.get_mut(doc) else {
            return Ok(false);
        };
        let taken = match entry.doc.apply_changes(changes) {
            Ok(outcome) if !entry.doc.is_poisoned() && outcome.applied.len() == hashes.len() => {
                outcome.applied
            }
            // Part of it may be in the copy now: the copy goes.
            _ => return Ok(false),
        };
        for (hash, bytes) in &rows {
            entry.record(*hash, bytes.len());
        }
        self.recent.remember(&taken);
        Ok(true)
    }

    fn entry(&mut self, id: &DocumentId) -> Result<&mut Loaded, RepoError> {
        self.refresh()?;
        self.cached_entry(id)
    }

    /// The document from memory, or loaded from the store, without [`Repo::refresh`].
    fn cached_entry(&mut self, id: &DocumentId) -> Result<&mut Loaded, RepoError> {
        self.clock += 1;
        let now = self.clock;
        if !self.loaded.contains_key(id) {
            self.loads += 1;
            let (doc, since_snapshot, bytes_since_snapshot) = match self.store.load(id)? {
                Some(stored) => (
                    CareDocument::load(id.clone(), stored.snapshot.as_deref(), &stored.changes)?,
                    stored.changes.iter().map(|(h, _)| *h).collect(),
                    stored.changes.iter().map(|(_, b)| b.len()).sum(),
                ),
                None => (CareDocument::new(id.clone())?, Vec::new(), 0),
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
                    since_snapshot,
                    bytes_since_snapshot,
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

    /// This store's incarnation and its write counter.
    pub fn incarnation(&self) -> Result<Incarnation, RepoError> {
        Ok(match self.store.meta(INCARNATION_KEY)? {
            Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            None => Incarnation::default(),
        })
    }

    /// Sets this store's incarnation (a new one, from the server, with nothing written yet).
    pub fn set_incarnation(&mut self, incarnation: &Incarnation) -> Result<(), RepoError> {
        let bytes = serde_json::to_vec(incarnation).unwrap_or_default();
        self.store.set_meta(INCARNATION_KEY, &bytes)?;
        Ok(())
    }

    /// Makes a local change and commits it, with its pending-upload mark and the store's write
    /// counter, in one store transaction before returning. The change is made under the
    /// store's current incarnation, as its next write (`author`'s are replaced by them). If the store fails, the
    /// change is dropped from memory too.
    pub fn change<T>(
        &mut self,
        id: &DocumentId,
        author: &Author,
        at: Timestamp,
        f: impl FnOnce(&mut Edit<'_>) -> Result<T, ModelError>,
    ) -> Result<Saved<T>, RepoError> {
        if self.is_forgotten(id.patient())? {
            return Err(RepoError::Forgotten {
                patient: id.patient().clone(),
            });
        }
        let mut incarnation = self.incarnation()?;
        let n = incarnation.written + 1;
        let author = author.in_incarnation(incarnation.number).with_write(n);
        let entry = self.entry(id)?;
        let local = entry.doc.change(&author, at, f)?;
        let Some(change) = local.change else {
            return Ok(Saved {
                value: local.value,
                change: None,
            });
        };
        let hash = change.hash();
        let len = change.raw_bytes().len();
        incarnation.written = n;
        incarnation.last = Some(hash.0);
        let counter = serde_json::to_vec(&incarnation).unwrap_or_default();
        let stored = self.store.begin_group().and_then(|()| {
            self.store
                .append(id, &[(hash, change.raw_bytes())], Origin::Local)
                .and_then(|()| self.store.set_meta(INCARNATION_KEY, &counter))
                .and_then(|()| self.store.commit_group())
        });
        if let Err(e) = stored {
            self.store.rollback_group();
            self.loaded.remove(id);
            return Err(e.into());
        }
        entry_record(&mut self.loaded, id, &[(hash, len)]);
        Ok(Saved {
            value: local.value,
            change: Some(hash),
        })
    }

    /// Local changes to several documents written together (a visit's journal entries and
    /// doses, saved at its end): one Automerge change per document, `f` writing each, all
    /// committed in one store transaction with their pending marks and the write counter, all
    /// or nothing. A failure in `f` or in the store leaves nothing of any of them, in the store
    /// or in memory. Returns each document's change (`None` where `f` wrote nothing).
    pub fn change_together(
        &mut self,
        ids: &[DocumentId],
        author: &Author,
        at: Timestamp,
        mut f: impl FnMut(&DocumentId, &mut Edit<'_>) -> Result<(), ModelError>,
    ) -> Result<Vec<Option<ChangeHash>>, RepoError> {
        let mut distinct: BTreeSet<&DocumentId> = BTreeSet::new();
        if let Some(twice) = ids.iter().find(|id| !distinct.insert(id)) {
            return Err(ModelError::Invalid {
                doc: twice.clone(),
                path: String::new(),
                reason: "the document is named twice in one write".into(),
            }
            .into());
        }
        for id in ids {
            if self.is_forgotten(id.patient())? {
                return Err(RepoError::Forgotten {
                    patient: id.patient().clone(),
                });
            }
        }
        let mut incarnation = self.incarnation()?;
        let mut made: Vec<(DocumentId, Change)> = Vec::new();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let n = incarnation.written + 1;
            let author = author.in_incarnation(incarnation.number).with_write(n);
            let local = match self
                .entry(id)
                .and_then(|entry| Ok(entry.doc.change(&author, at, |e| f(id, e))?))
            {
                Ok(local) => local,
                Err(e) => {
                    // The documents changed so far hold changes that will never be stored.
                    for (done, _) in &made {
                        self.loaded.remove(done);
                    }
                    self.loaded.remove(id);
                    return Err(e);
                }
            };
            match local.change {
                Some(change) => {
                    incarnation.written = n;
                    incarnation.last = Some(change.hash().0);
                    out.push(Some(change.hash()));
                    made.push((id.clone(), change));
                }
                None => out.push(None),
            }
        }
        if made.is_empty() {
            return Ok(out);
        }
        let counter = serde_json::to_vec(&incarnation).unwrap_or_default();
        let stored = self.store.begin_group().and_then(|()| {
            for (id, change) in &made {
                self.store
                    .append(id, &[(change.hash(), change.raw_bytes())], Origin::Local)?;
            }
            self.store.set_meta(INCARNATION_KEY, &counter)?;
            self.store.commit_group()
        });
        if let Err(e) = stored {
            self.store.rollback_group();
            for (id, _) in &made {
                self.loaded.remove(id);
            }
            return Err(e.into());
        }
        for (id, change) in &made {
            entry_record(
                &mut self.loaded,
                id,
                &[(change.hash(), change.raw_bytes().len())],
            );
        }
        Ok(out)
    }

    /// Removes changes of `id` from this store (and memory): the document is rebuilt from its
    /// other changes. A change in `drop` that a kept change builds on is kept (the server must
    /// hold it, since another replica built on it). Returns the changes removed. Used only when
    /// a device goes on under a new incarnation and takes back what it had not uploaded
    /// (docs/protocol.md, "Incarnations"); the caller writes those records again.
    pub fn drop_changes(
        &mut self,
        id: &DocumentId,
        drop: &BTreeSet<ChangeHash>,
    ) -> Result<BTreeSet<ChangeHash>, RepoError> {
        let all = self.entry(id)?.doc.changes_since(&[]);
        let mut dropped: BTreeSet<ChangeHash> = all
            .iter()
            .map(Change::hash)
            .filter(|h| drop.contains(h))
            .collect();
        loop {
            let mut changed = false;
            for c in &all {
                if !dropped.contains(&c.hash()) {
                    for d in c.deps() {
                        changed |= dropped.remove(d);
                    }
                }
            }
            if !changed {
                break;
            }
        }
        if dropped.is_empty() {
            return Ok(dropped);
        }
        let genesis = crate::model::genesis_hash(id)?;
        let kept: Vec<(ChangeHash, &[u8])> = all
            .iter()
            .filter(|c| c.hash() != genesis && !dropped.contains(&c.hash()))
            .map(|c| (c.hash(), c.raw_bytes()))
            .collect();
        // Changes kept that waited for upload still do.
        let pending: BTreeSet<ChangeHash> = self
            .store
            .pending()?
            .into_iter()
            .filter(|(doc, _)| doc == id)
            .map(|(_, h)| h)
            .collect();
        self.loaded.remove(id);
        self.store.remove_document(id)?;
        for run in kept.chunk_by(|a, b| pending.contains(&a.0) == pending.contains(&b.0)) {
            let origin = if pending.contains(&run[0].0) {
                Origin::Local
            } else {
                Origin::Remote
            };
            self.store.append(id, run, origin)?;
        }
        Ok(dropped)
    }

    /// Forgets every document of `patient` (memory and store), unless some local change to
    /// them is still waiting for upload: then nothing is removed and `Ok(false)` is returned.
    /// Until [`Repo::remember_patient`], local writes for the patient are refused
    /// ([`RepoError::Forgotten`]): the device's own earlier changes are gone, and writing from
    /// scratch would reuse their Automerge sequence numbers.
    pub fn forget_patient(&mut self, patient: &PatientId) -> Result<bool, RepoError> {
        if self
            .store
            .pending()?
            .iter()
            .any(|(d, _)| d.patient() == patient)
        {
            return Ok(false);
        }
        self.store.set_meta(&forgotten_key(patient), b"1")?;
        for doc in self
            .store
            .documents()?
            .into_iter()
            .filter(|d| d.patient() == patient)
        {
            self.loaded.remove(&doc);
            self.store.remove_document(&doc)?;
        }
        self.loaded.retain(|d, _| d.patient() != patient);
        Ok(true)
    }

    /// The patient's whole history is back on the device: it may be written again.
    pub fn remember_patient(&mut self, patient: &PatientId) -> Result<(), RepoError> {
        if self.is_forgotten(patient)? {
            self.store.set_meta(&forgotten_key(patient), b"")?;
        }
        Ok(())
    }

    /// Whether the patient was forgotten and not remembered since.
    pub fn is_forgotten(&self, patient: &PatientId) -> Result<bool, RepoError> {
        Ok(self
            .store
            .meta(&forgotten_key(patient))?
            .is_some_and(|v| !v.is_empty()))
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
        let stored = self.store.documents()?;
        self.chart_among(patient, &stored, also)
    }

    /// [`Repo::chart`] from a list of the store's documents read before (`stored`, which may
    /// name other patients' documents), for a caller that makes several charts at once.
    pub fn chart_among(
        &mut self,
        patient: &PatientId,
        stored: &[DocumentId],
        also: &[DocumentId],
    ) -> Result<Chart<'_>, RepoError> {
        let mut ids: Vec<DocumentId> = stored
            .iter()
            .chain(also)
            .filter(|d| d.patient() == patient)
            .cloned()
            .collect();
        ids.sort();
        ids.dedup();
        if ids.len() > self.max_loaded {
            self.max_loaded = ids.len();
        }
        // One refresh for all: a refresh between two loads could drop one loaded before.
        self.refresh()?;
        for id in &ids {
            self.cached_entry(id)?;
        }
        let docs = ids
            .iter()
            .filter_map(|id| self.loaded.get(id).map(|l| &l.doc));
        Ok(Chart::new(patient, docs.collect::<Vec<_>>()))
    }
}

#[cfg(test)]
#[path = "repo_tests.rs"]
mod tests;
