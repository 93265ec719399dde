//! A [`Repo`] that is not the only writer of its store: several repos (server nodes) over one
//! store, each caching documents.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use automerge::{Change, ChangeHash};

use crate::error::StoreError;
use crate::ids::{
    Author, DeviceId, DocumentId, Month, PatientId, RecordId, Role, Timestamp, UserId,
};
use crate::model::records::EventBody;
use crate::repo::Repo;
use crate::store::{
    Epoch, FeedEntry, FeedProof, MemoryStore, Origin, SqliteStore, Store, StoredDocument,
};

const NOW: Timestamp = Timestamp(1_795_000_000_000);

fn journal() -> DocumentId {
    DocumentId::journal(
        &PatientId::new("p-1").unwrap(),
        Month::new(2026, 11).unwrap(),
    )
}

fn author(user: &str) -> Author {
    Author::new(
        UserId::new(user).unwrap(),
        Role::Carer,
        DeviceId::new(format!("phone-{user}")).unwrap(),
    )
}

/// A change a device of `user` makes on its own store: a note under `record`.
fn device_note(user: &str, record: &str, body: &str) -> Change {
    let mut device = Repo::new(MemoryStore::new());
    let saved = device
        .change(&journal(), &author(user), NOW, |e| {
            e.record(
                RecordId::new(record).unwrap(),
                EventBody::Note {
                    body: body.into(),
                    corrects: None,
                },
            )
        })
        .unwrap();
    device
        .get(&journal())
        .unwrap()
        .automerge_change(&saved.change.unwrap())
        .unwrap()
}

fn holds(repo: &mut Repo<impl Store>, hash: ChangeHash) -> bool {
    repo.get(&journal())
        .unwrap()
        .automerge_change(&hash)
        .is_some()
}

/// A change another node stored is in the document this node serves, though this node had
/// the document cached from before (the server sends changes from its `Repo`: a stale copy
/// skips them).
#[test]
fn a_change_another_node_stored_is_in_the_document_this_node_holds() {
    let store = MemoryStore::new();
    let mut one = Repo::new(store.clone());
    let mut two = Repo::new(store.clone());
    let first = device_note("anna", "n1", "First.");
    one.apply_changes(&journal(), vec![first.clone()]).unwrap();
    assert!(holds(&mut two, first.hash()));
    let second = device_note("bo", "n2", "Second.");
    two.apply_changes(&journal(), vec![second.clone()]).unwrap();
    assert!(
        holds(&mut one, second.hash()),
        "node one serves its stale copy"
    );
    // Its own writes do not make it drop what it holds.
    let third = device_note("cy", "n3", "Third.");
    one.apply_changes(&journal(), vec![third.clone()]).unwrap();
    assert!(holds(&mut one, third.hash()) && holds(&mut two, third.hash()));
}

/// Two nodes each asked to store one record id with two contents: the second validates
/// against the first's write (it refuses), and the document still loads.
#[test]
fn a_record_id_another_node_stored_is_refused_with_other_content() {
    let store = MemoryStore::new();
    let mut one = Repo::new(store.clone());
    let mut two = Repo::new(store.clone());
    assert!(one.get(&journal()).unwrap().events().is_empty());
    assert!(two.get(&journal()).unwrap().events().is_empty());
    let anna = device_note("anna", "same", "Anna's note.");
    let bo = device_note("bo", "same", "Bo's note.");
    let first = one.apply_changes(&journal(), vec![anna.clone()]).unwrap();
    assert_eq!(first.applied.len(), 1);
    let second = two.apply_changes(&journal(), vec![bo.clone()]).unwrap();
    assert!(second.applied.is_empty(), "{second:?}");
    assert_eq!(second.refused.len(), 1, "{second:?}");
    let mut fresh = Repo::new(store.clone());
    assert!(holds(&mut fresh, anna.hash()) && !holds(&mut fresh, bo.hash()));
}

/// A store that lets another writer run once, just before a group of this one's opens: the
/// moment between a repo's validation and its append.
struct Interleaved<S: Store> {
    store: S,
    meanwhile: Option<Box<dyn FnOnce()>>,
}

/// Another node stores a change of a document between this node's validation and its
/// append (on SQLite, two connections to one file): nothing of this node's change is stored,
/// it is validated again against the other's, and refused; the document still loads.
#[test]
fn a_write_raced_by_another_node_is_validated_again_against_its_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    let anna = device_note("anna", "same", "Anna's note.");
    let bo = device_note("bo", "same", "Bo's note.");
    let mut one = Repo::new(Interleaved {
        store: SqliteStore::open(&path).unwrap(),
        meanwhile: None,
    });
    assert!(one.get(&journal()).unwrap().events().is_empty());
    let other = path.clone();
    let anna_change = anna.clone();
    one.store_mut().meanwhile = Some(Box::new(move || {
        let mut two = Repo::new(SqliteStore::open(&other).unwrap());
        let out = two.apply_changes(&journal(), vec![anna_change]).unwrap();
        assert_eq!(out.applied.len(), 1);
    }));
    let outcome = one.apply_changes(&journal(), vec![bo.clone()]).unwrap();
    assert!(one.store().meanwhile.is_none(), "the other node wrote");
    assert!(outcome.applied.is_empty(), "{outcome:?}");
    assert_eq!(outcome.refused.len(), 1, "{outcome:?}");
    let mut fresh = Repo::new(SqliteStore::open(&path).unwrap());
    assert!(holds(&mut fresh, anna.hash()) && !holds(&mut fresh, bo.hash()));
}

impl<S: Store> Store for Interleaved<S> {
    fn claim_device(
        &mut self,
        device: &crate::ids::DeviceId,
        holder: &str,
        now_ms: i64,
    ) -> Result<crate::store::Lease, StoreError> {
        self.store.claim_device(device, holder, now_ms)
    }
    fn check_lease(&self, device: &crate::ids::DeviceId, token: u64) -> Result<(), StoreError> {
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
        if let Some(other_writer) = self.meanwhile.take() {
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
}
