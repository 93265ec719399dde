//! Where documents live between runs: a small [`Store`] trait, a SQLite implementation (the
//! default, on devices and the server) and an in-memory one (for simulation).
//!
//! A store knows bytes and ids, never the model: it cannot tell a journal from an order. The
//! [`crate::repo::Repo`] puts the two together.

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
#[cfg(any(test, feature = "testing"))]
pub mod interleaved;
mod memory;
mod sqlite;

pub use memory::MemoryStore;
pub use sqlite::{EncryptionKey, SqliteStore, enable_wal};

use automerge::ChangeHash;

use crate::error::StoreError;
use crate::ids::{DeviceId, DocumentId};

/// A document as stored: an optional snapshot and the changes appended after it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredDocument {
    pub snapshot: Option<Vec<u8>>,
    /// Changes in the order they were appended, with the hash each was stored under.
    pub changes: Vec<(ChangeHash, Vec<u8>)>,
}

/// Where a change came from. Local changes are marked "not yet uploaded" in the same
/// transaction that stores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Local,
    Remote,
}

/// One entry of a store's change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    /// Position in the feed: 1 for the first change ever stored, then increasing.
    pub seq: u64,
    pub doc: DocumentId,
    pub hash: ChangeHash,
}

/// Names a store's feed: positions are only meaningful within one epoch.
pub type Epoch = [u8; 16];

/// The feed's running hash at a position: it proves which feed history led there.
pub type FeedProof = [u8; 32];

/// The proof at position 0 (an empty feed).
pub const EMPTY_FEED_PROOF: FeedProof = [0; 32];

/// The feed's running hash after appending `(doc, hash)` to a feed whose proof was `prev`:
/// SHA-256("nara-feed\0" || prev || doc id || change hash).
pub fn next_feed_proof(prev: &FeedProof, doc: &DocumentId, hash: &ChangeHash) -> FeedProof {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"nara-feed\0");
    h.update(prev);
    h.update(doc.to_string().as_bytes());
    h.update(hash.0);
    h.finalize().into()
}

/// A device's lease: the right of one connection (on one server node) to write the device's
/// state. Every claim of a device gets a larger `token` than any before it (a fencing token);
/// a write made under an older token is refused with [`StoreError::Fenced`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub token: u64,
}

/// The storage contract. Every method is one transaction: it happens entirely or not at all,
/// and once it returns `Ok` it survives a crash of the process (and, for SQLite, of the
/// machine).
pub trait Store {
    /// Every document the store holds.
    fn documents(&self) -> Result<Vec<DocumentId>, StoreError>;

    /// A document's snapshot and changes, or `None` if the store does not hold it.
    fn load(&self, doc: &DocumentId) -> Result<Option<StoredDocument>, StoreError>;

    /// Appends changes to a document (creating it if new). Changes already stored are skipped.
    /// With [`Origin::Local`] each change is also marked pending upload, in the same transaction.
    fn append(
        &mut self,
        doc: &DocumentId,
        changes: &[(ChangeHash, &[u8])],
        origin: Origin,
    ) -> Result<(), StoreError>;

    /// Replaces the document's snapshot and deletes the stored changes listed in `covered`
    /// (which the snapshot must contain), atomically. Changes not in `covered` stay.
    fn compact(
        &mut self,
        doc: &DocumentId,
        snapshot: &[u8],
        covered: &[ChangeHash],
    ) -> Result<(), StoreError>;

    /// Local changes not yet acknowledged by the server, oldest first.
    fn pending(&self) -> Result<Vec<(DocumentId, ChangeHash)>, StoreError>;

    /// Clears the pending marks of changes the server has acknowledged.
    fn mark_uploaded(&mut self, doc: &DocumentId, hashes: &[ChangeHash]) -> Result<(), StoreError>;

    /// Feed entries after position `after`, oldest first, at most `limit`. Every change newly
    /// stored by [`Store::append`] gets the next position, in the same transaction.
    fn feed_after(&self, after: u64, limit: usize) -> Result<Vec<FeedEntry>, StoreError>;

    /// The position of the newest feed entry (0 if none).
    fn feed_head(&self) -> Result<u64, StoreError>;

    /// The stored bytes of those of `hashes` (changes of `doc`) that are still change rows (not
    /// folded into a snapshot), in `hashes`' order: what a reader with a cached copy needs of
    /// changes another writer stored. The default reads the whole document; a shared database
    /// reads only those rows.
    fn stored_changes(
        &self,
        doc: &DocumentId,
        hashes: &[ChangeHash],
    ) -> Result<Vec<(ChangeHash, Vec<u8>)>, StoreError> {
        let Some(stored) = self.load(doc)? else {
            return Ok(Vec::new());
        };
        let mut rows: std::collections::BTreeMap<ChangeHash, Vec<u8>> =
            stored.changes.into_iter().collect();
        Ok(hashes
            .iter()
            .filter_map(|h| rows.remove(h).map(|b| (*h, b)))
            .collect())
    }

    /// Where `hash` of `doc` stands in the feed, if the store holds it.
    fn feed_position(&self, doc: &DocumentId, hash: &ChangeHash)
    -> Result<Option<u64>, StoreError>;

    /// This store's feed epoch, fixed when the store was created.
    fn epoch(&self) -> Result<Epoch, StoreError>;

    /// Moves the feed to a new epoch (a server that learnt its feed went back in time), so
    /// every cursor of the old one is recognised as not a position in this feed any more.
    fn set_epoch(&mut self, epoch: Epoch) -> Result<(), StoreError>;

    /// The feed's running hash at `position` (see [`next_feed_proof`]): of the newest entry at
    /// or below it, [`EMPTY_FEED_PROOF`] if none. Stored with each entry, in the same
    /// transaction.
    fn feed_proof(&self, position: u64) -> Result<FeedProof, StoreError>;

    /// A small durable value (cursors, disclosure sets), or `None`.
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Sets a small durable value, in its own transaction.
    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError>;

    /// Deletes a document entirely (snapshot, changes, pending marks, feed entries), in one
    /// transaction: a device forgetting a person it no longer cares for. Never used on the server.
    fn remove_document(&mut self, doc: &DocumentId) -> Result<(), StoreError>;

    /// Claims `device` for `holder` (who serves it now: a node and connection, kept for
    /// operators) at `now_ms`, in its own transaction (or the open group's). The newest claim
    /// always wins: its token is larger than every token the device had before (tokens only
    /// grow, across restarts too), and every older token is fenced from then on. There is no
    /// expiry: a node that died holds nothing once the device connects elsewhere and claims.
    fn claim_device(
        &mut self,
        device: &DeviceId,
        holder: &str,
        now_ms: i64,
    ) -> Result<Lease, StoreError>;

    /// `Ok` if `token` is `device`'s newest lease, else [`StoreError::Fenced`]. Called first in
    /// a group that writes the device's state: a claim by another connection then waits for the
    /// group to commit (PostgreSQL locks the lease row for the transaction; SQLite's group
    /// already holds the one write lock), so every write of the group is made under a lease
    /// that was valid until its commit. Outside a group it is a plain read.
    fn check_lease(&self, device: &DeviceId, token: u64) -> Result<(), StoreError>;

    /// Opens a group: the writes that follow, until [`Store::commit_group`], commit together
    /// (one transaction, one fsync) instead of each on its own. Used for a received batch,
    /// whose changes and cursor must land together anyway. A store without transactions (the
    /// in-memory one) ignores groups.
    fn begin_group(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Commits the open group; once it returns `Ok`, every write in it survives a crash.
    fn commit_group(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Drops every write of the open group. A group opened inside another one is rolled back
    /// alone (a savepoint, on SQLite and PostgreSQL): the outer group goes on and may commit.
    /// If the database lost the whole transaction meanwhile, the outer group's commit fails.
    fn rollback_group(&mut self) {}

    /// Opens a group whose writes record only what the peer holds durably and tells again
    /// when asked (an acknowledgement of an upload, a cursor moved past nothing new). Its
    /// commit survives a crash of the process but need not survive a power loss: no fsync of
    /// its own. Stores keep commits in order, so the next durable commit makes it durable
    /// too; a power loss takes at most the last relaxed groups, which leaves the state of a
    /// connection cut before their message arrived. A group opened inside it with
    /// [`Store::begin_group`] makes the whole transaction durable again; opened inside a
    /// durable group, it is durable. Stores without the distinction open a plain group.
    fn begin_relaxed_group(&mut self) -> Result<(), StoreError> {
        self.begin_group()
    }

    /// Opens a group (relaxed or not, as [`Store::begin_relaxed_group`] and
    /// [`Store::begin_group`]) that commits whole or not at all, for a caller that fails the
    /// whole group on any error inside it anyway (a device storing a run of batches). The
    /// groups opened inside it, and each write's own atomicity, are its transaction's: no
    /// savepoint each (on SQLite a savepoint per document copied every page it touched and
    /// freed the copies again, 5% of what a phone spent in S8). So an inner group rolled back,
    /// or a write that fails part-way, dooms the whole: its commit fails and nothing of it is
    /// stored. Opened inside another group it is an ordinary inner group. Stores without
    /// savepoints to spare open a plain group.
    fn begin_indivisible_group(&mut self, relaxed: bool) -> Result<(), StoreError> {
        if relaxed {
            self.begin_relaxed_group()
        } else {
            self.begin_group()
        }
    }
}

fn hash_from_bytes(bytes: &[u8]) -> Result<ChangeHash, StoreError> {
    ChangeHash::try_from(bytes).map_err(|e| StoreError::BadRow(format!("change hash: {e}")))
}

fn doc_id_from_text(text: &str) -> Result<DocumentId, StoreError> {
    text.parse()
        .map_err(|e| StoreError::BadRow(format!("document id: {e}")))
}

impl<S: Store + ?Sized> Store for Box<S> {
    fn documents(&self) -> Result<Vec<DocumentId>, StoreError> {
        (**self).documents()
    }
    fn load(&self, doc: &DocumentId) -> Result<Option<StoredDocument>, StoreError> {
        (**self).load(doc)
    }
    fn append(
        &mut self,
        doc: &DocumentId,
        changes: &[(ChangeHash, &[u8])],
        origin: Origin,
    ) -> Result<(), StoreError> {
        (**self).append(doc, changes, origin)
    }
    fn compact(
        &mut self,
        doc: &DocumentId,
        snapshot: &[u8],
        covered: &[ChangeHash],
    ) -> Result<(), StoreError> {
        (**self).compact(doc, snapshot, covered)
    }
    fn pending(&self) -> Result<Vec<(DocumentId, ChangeHash)>, StoreError> {
        (**self).pending()
    }
    fn mark_uploaded(&mut self, doc: &DocumentId, hashes: &[ChangeHash]) -> Result<(), StoreError> {
        (**self).mark_uploaded(doc, hashes)
    }
    fn feed_after(&self, after: u64, limit: usize) -> Result<Vec<FeedEntry>, StoreError> {
        (**self).feed_after(after, limit)
    }
    fn feed_head(&self) -> Result<u64, StoreError> {
        (**self).feed_head()
    }
    fn stored_changes(
        &self,
        doc: &DocumentId,
        hashes: &[ChangeHash],
    ) -> Result<Vec<(ChangeHash, Vec<u8>)>, StoreError> {
        (**self).stored_changes(doc, hashes)
    }
    fn feed_position(
        &self,
        doc: &DocumentId,
        hash: &ChangeHash,
    ) -> Result<Option<u64>, StoreError> {
        (**self).feed_position(doc, hash)
    }
    fn epoch(&self) -> Result<Epoch, StoreError> {
        (**self).epoch()
    }
    fn set_epoch(&mut self, epoch: Epoch) -> Result<(), StoreError> {
        (**self).set_epoch(epoch)
    }
    fn feed_proof(&self, position: u64) -> Result<FeedProof, StoreError> {
        (**self).feed_proof(position)
    }
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).meta(key)
    }
    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        (**self).set_meta(key, value)
    }
    fn remove_document(&mut self, doc: &DocumentId) -> Result<(), StoreError> {
        (**self).remove_document(doc)
    }
    fn claim_device(
        &mut self,
        device: &DeviceId,
        holder: &str,
        now_ms: i64,
    ) -> Result<Lease, StoreError> {
        (**self).claim_device(device, holder, now_ms)
    }
    fn check_lease(&self, device: &DeviceId, token: u64) -> Result<(), StoreError> {
        (**self).check_lease(device, token)
    }
    fn begin_group(&mut self) -> Result<(), StoreError> {
        (**self).begin_group()
    }
    fn commit_group(&mut self) -> Result<(), StoreError> {
        (**self).commit_group()
    }
    fn rollback_group(&mut self) {
        (**self).rollback_group()
    }
    fn begin_relaxed_group(&mut self) -> Result<(), StoreError> {
        (**self).begin_relaxed_group()
    }
    fn begin_indivisible_group(&mut self, relaxed: bool) -> Result<(), StoreError> {
        (**self).begin_indivisible_group(relaxed)
    }
}
