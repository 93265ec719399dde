//! An in-memory [`Store`] for simulation. Clones share state, so a simulated device can "crash"
//! (drop its repo and everything unsaved in it) and reopen the same store.
//!
//! It can also lose power ([`MemoryStore::track_power_loss`], [`MemoryStore::power_loss`]):
//! a relaxed group's commit ([`Store::begin_relaxed_group`]) is lost then, with every relaxed
//! commit after the last durable one, as SQLite's write-ahead log loses what no fsync covered.
//! It keeps no transactions otherwise: a group's writes are applied as they come, and a
//! rolled-back group keeps them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use automerge::ChangeHash;

use super::{
    EMPTY_FEED_PROOF, Epoch, FeedEntry, FeedProof, Lease, Origin, Store, StoredDocument,
    next_feed_proof,
};
use crate::error::StoreError;
use crate::ids::{DeviceId, DocumentId};

#[derive(Debug, Default, Clone)]
struct Inner {
    docs: BTreeMap<DocumentId, Doc>,
    /// (insertion number, doc, hash) so that `pending` is oldest first like SQLite's.
    pending: BTreeSet<(u64, DocumentId, ChangeHash)>,
    next: u64,
    feed: Vec<FeedEntry>,
    /// The feed's running hash, one per entry.
    proofs: Vec<FeedProof>,
    known: BTreeSet<(DocumentId, ChangeHash)>,
    meta: BTreeMap<String, Vec<u8>>,
    epoch: Epoch,
    /// Each device's newest lease token, its holder and when it was claimed.
    leases: BTreeMap<DeviceId, (u64, String, i64)>,
    /// What a power loss would take, when tracked ([`MemoryStore::track_power_loss`]).
    power: Option<Power>,
}

/// The power-loss model of a tracked store.
#[derive(Debug, Default, Clone)]
struct Power {
    /// The store as of its last durable commit, while relaxed commits came after it (`None`:
    /// everything is durable).
    durable: Option<Box<Inner>>,
    /// Groups open, whether the outermost was opened relaxed, and whether a durable group was
    /// opened inside it (which makes its commit durable, as on SQLite).
    depth: usize,
    relaxed: bool,
    strict_inside: bool,
}

#[derive(Debug, Default, Clone)]
struct Doc {
    snapshot: Option<Vec<u8>>,
    changes: Vec<(ChangeHash, Vec<u8>)>,
}

#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

impl MemoryStore {
    /// A new, empty store whose feed epoch is `epoch` (a simulation chooses it from its seed).
    pub fn with_epoch(epoch: Epoch) -> Self {
        let store = Self::default();
        if let Ok(mut inner) = store.inner.lock() {
            inner.epoch = epoch;
        }
        store
    }

    /// A new, empty store with a process-unique epoch.
    pub fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut epoch = [0u8; 16];
        epoch[..8].copy_from_slice(&n.to_le_bytes());
        epoch[8..].copy_from_slice(&std::process::id().to_le_bytes().repeat(2));
        Self::with_epoch(epoch)
    }

    /// A copy of everything this store holds now, sharing nothing with it (a backup, or the
    /// store of a copied phone, in simulation).
    pub fn deep_copy(&self) -> Result<MemoryStore, StoreError> {
        let mut inner = self.lock()?.clone();
        if let Some(power) = inner.power.as_mut() {
            // A copy is of the files as they are: all of it durable, no group open.
            *power = Power::default();
        }
        Ok(Self {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    /// Puts this store (and every clone of it) back to what `backup` holds: a store restored
    /// from a backup, in simulation.
    pub fn restore_from(&self, backup: &MemoryStore) -> Result<(), StoreError> {
        let mut contents = backup.lock()?.clone();
        let tracked = self.lock()?.power.is_some();
        contents.power = tracked.then(Power::default);
        *self.lock()? = contents;
        Ok(())
    }

    /// Tracks from now on what a power loss would take (relaxed commits after the last durable
    /// one), for [`MemoryStore::power_loss`].
    pub fn track_power_loss(&self) -> Result<(), StoreError> {
        self.lock()?.power.get_or_insert_with(Power::default);
        Ok(())
    }

    /// The power goes: the store (and every clone of it) goes back to its last durable commit,
    /// and open groups are gone. Whether that took anything. Untracked, nothing goes.
    pub fn power_loss(&self) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        let Some(power) = inner.power.as_mut() else {
            return Ok(false);
        };
        let durable = power.durable.take();
        *power = Power::default();
        match durable {
            Some(state) => {
                *inner = *state;
                inner.power = Some(Power::default());
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        self.inner.lock().map_err(|_| StoreError::Poisoned)
    }

    /// [`MemoryStore::lock`] for a write: outside a group, the write commits durably on its
    /// own, which makes every relaxed commit before it durable too.
    fn write(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        let mut inner = self.lock()?;
        if let Some(power) = inner.power.as_mut()
            && power.depth == 0
        {
            power.durable = None;
        }
        Ok(inner)
    }

    /// Opens a group in the power-loss model.
    fn open_group(&self, relaxed: bool) -> Result<(), StoreError> {
        let mut guard = self.lock()?;
        let inner = &mut *guard;
        let Some(power) = inner.power.as_mut() else {
            return Ok(());
        };
        if power.depth > 0 {
            if power.relaxed && !relaxed {
                power.strict_inside = true;
            }
            power.depth += 1;
            return Ok(());
        }
        power.depth = 1;
        power.relaxed = relaxed;
        power.strict_inside = false;
        if relaxed && power.durable.is_none() {
            // What is durable now: what a power loss during or after this group goes back to.
            let mut before = inner.clone();
            before.power = None;
            if let Some(power) = inner.power.as_mut() {
                power.durable = Some(Box::new(before));
            }
        }
        Ok(())
    }

    /// Ends a group (committed or rolled back: this store keeps its writes either way).
    fn close_group(&self) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        if let Some(power) = inner.power.as_mut() {
            power.depth = power.depth.saturating_sub(1);
            if power.depth == 0 && (!power.relaxed || power.strict_inside) {
                power.durable = None;
            }
        }
        Ok(())
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
        let mut inner = self.write()?;
        let inner = &mut *inner;
        let d = inner.docs.entry(doc.clone()).or_default();
        for (hash, bytes) in changes {
            if !inner.known.insert((doc.clone(), *hash)) {
                continue;
            }
            let seq = inner.feed.len() as u64 + 1;
            let prev = inner.proofs.last().copied().unwrap_or(EMPTY_FEED_PROOF);
            inner.proofs.push(next_feed_proof(&prev, doc, hash));
            inner.feed.push(FeedEntry {
                seq,
                doc: doc.clone(),
                hash: *hash,
            });
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
        let mut inner = self.write()?;
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

    fn feed_after(&self, after: u64, limit: usize) -> Result<Vec<FeedEntry>, StoreError> {
        let inner = self.lock()?;
        let start = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(inner.feed.len());
        Ok(inner.feed[start..].iter().take(limit).cloned().collect())
    }

    fn feed_head(&self) -> Result<u64, StoreError> {
        Ok(self.lock()?.feed.len() as u64)
    }

    fn feed_position(
        &self,
        doc: &DocumentId,
        hash: &ChangeHash,
    ) -> Result<Option<u64>, StoreError> {
        Ok(self
            .lock()?
            .feed
            .iter()
            .find(|e| e.doc == *doc && e.hash == *hash)
            .map(|e| e.seq))
    }

    fn epoch(&self) -> Result<Epoch, StoreError> {
        Ok(self.lock()?.epoch)
    }

    fn set_epoch(&mut self, epoch: Epoch) -> Result<(), StoreError> {
        self.write()?.epoch = epoch;
        Ok(())
    }

    fn feed_proof(&self, position: u64) -> Result<FeedProof, StoreError> {
        let inner = self.lock()?;
        let n = usize::try_from(position)
            .unwrap_or(usize::MAX)
            .min(inner.proofs.len());
        Ok(n.checked_sub(1)
            .and_then(|i| inner.proofs.get(i).copied())
            .unwrap_or(EMPTY_FEED_PROOF))
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock()?.meta.get(key).cloned())
    }

    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.write()?.meta.insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn remove_document(&mut self, doc: &DocumentId) -> Result<(), StoreError> {
        let mut inner = self.write()?;
        inner.docs.remove(doc);
        inner.pending.retain(|(_, d, _)| d != doc);
        inner.known.retain(|(d, _)| d != doc);
        Ok(())
    }

    fn claim_device(
        &mut self,
        device: &DeviceId,
        holder: &str,
        now_ms: i64,
    ) -> Result<Lease, StoreError> {
        let mut inner = self.write()?;
        let lease = inner
            .leases
            .entry(device.clone())
            .or_insert((0, String::new(), 0));
        lease.0 = lease.0.saturating_add(1);
        lease.1 = holder.to_owned();
        lease.2 = now_ms;
        Ok(Lease { token: lease.0 })
    }

    fn check_lease(&self, device: &DeviceId, token: u64) -> Result<(), StoreError> {
        match self.lock()?.leases.get(device) {
            Some((current, _, _)) if *current == token => Ok(()),
            _ => Err(StoreError::Fenced {
                device: device.clone(),
                token,
            }),
        }
    }

    fn mark_uploaded(&mut self, doc: &DocumentId, hashes: &[ChangeHash]) -> Result<(), StoreError> {
        self.write()?
            .pending
            .retain(|(_, d, h)| !(d == doc && hashes.contains(h)));
        Ok(())
    }

    fn begin_group(&mut self) -> Result<(), StoreError> {
        self.open_group(false)
    }

    fn begin_relaxed_group(&mut self) -> Result<(), StoreError> {
        self.open_group(true)
    }

    fn commit_group(&mut self) -> Result<(), StoreError> {
        self.close_group()
    }

    fn rollback_group(&mut self) {
        if let Err(e) = self.close_group() {
            tracing::error!(error = %e, "closing a group of a memory store failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryStore;

    /// Clones of one in-memory store share its state: each is a "connection" to it.
    struct Shared(MemoryStore);
    impl crate::store::conformance::Fixture for Shared {
        type Store = MemoryStore;
        fn open(&self) -> MemoryStore {
            self.0.clone()
        }
        fn transactional(&self) -> bool {
            false
        }
    }

    mod conformance {
        crate::store_conformance!(super::Shared(super::MemoryStore::new()));
    }

    /// A deep copy shares nothing with its store; a restore puts the store, and every clone
    /// of it, back to the copy's contents, feed and meta values included.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_backup_is_a_deep_copy_and_a_restore_puts_it_back() {
        use crate::store::{Origin, Store};
        use automerge::ChangeHash;
        let doc: crate::ids::DocumentId = "p-1/careplan".parse().unwrap();
        let mut store = MemoryStore::with_epoch([7; 16]);
        let clone = store.clone();
        store
            .append(&doc, &[(ChangeHash([1; 32]), b"one")], Origin::Remote)
            .unwrap();
        store.set_meta("cursor", b"1").unwrap();
        let backup = store.deep_copy().unwrap();
        store
            .append(&doc, &[(ChangeHash([2; 32]), b"two")], Origin::Local)
            .unwrap();
        store.set_meta("cursor", b"2").unwrap();
        assert_eq!(backup.load(&doc).unwrap().unwrap().changes.len(), 1);
        assert_eq!(backup.feed_head().unwrap(), 1);
        clone.restore_from(&backup).unwrap();
        let back = store.load(&doc).unwrap().unwrap();
        assert_eq!(back.changes, vec![(ChangeHash([1; 32]), b"one".to_vec())]);
        assert_eq!(store.feed_head().unwrap(), 1);
        assert_eq!(store.meta("cursor").unwrap(), Some(b"1".to_vec()));
        assert!(store.pending().unwrap().is_empty());
        assert_eq!(store.epoch().unwrap(), [7; 16]);
    }

    /// The power-loss model: a relaxed commit is lost with the power until a durable commit
    /// (a group, or a write outside one) follows it; a durable group inside a relaxed one makes
    /// it durable; an untracked store loses nothing.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_power_loss_takes_the_relaxed_commits_after_the_last_durable_one() {
        use crate::store::Store;
        let meta = |s: &MemoryStore, k: &str| s.meta(k).unwrap();
        let mut s = MemoryStore::new();
        s.set_meta("k", b"0").unwrap();
        s.begin_relaxed_group().unwrap();
        s.set_meta("k", b"1").unwrap();
        s.commit_group().unwrap();
        assert!(!s.power_loss().unwrap(), "untracked: nothing goes");
        assert_eq!(meta(&s, "k"), Some(b"1".to_vec()));

        s.track_power_loss().unwrap();
        for v in [b"2", b"3"] {
            s.begin_relaxed_group().unwrap();
            s.set_meta("k", v).unwrap();
            s.commit_group().unwrap();
        }
        let clone = s.clone();
        assert!(clone.power_loss().unwrap());
        assert_eq!(
            meta(&s, "k"),
            Some(b"1".to_vec()),
            "both relaxed commits went"
        );

        s.begin_relaxed_group().unwrap();
        s.set_meta("k", b"4").unwrap();
        s.commit_group().unwrap();
        s.set_meta("other", b"x").unwrap();
        assert!(!s.power_loss().unwrap(), "a durable write covered it");
        assert_eq!(meta(&s, "k"), Some(b"4".to_vec()));

        s.begin_relaxed_group().unwrap();
        s.set_meta("k", b"5").unwrap();
        s.begin_group().unwrap();
        s.set_meta("written", b"y").unwrap();
        s.commit_group().unwrap();
        s.commit_group().unwrap();
        assert!(
            !s.power_loss().unwrap(),
            "a durable group inside made it durable"
        );
        assert_eq!(meta(&s, "k"), Some(b"5".to_vec()));
    }
}
