//! A [`Repo`] that is not the only writer of its store: several repos (server nodes) over one
//! store, each caching documents.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use automerge::{Change, ChangeHash};

use crate::ids::{
    Author, DeviceId, DocumentId, Month, PatientId, RecordId, Role, Timestamp, UserId,
};
use crate::model::records::EventBody;
use crate::repo::Repo;
use crate::store::interleaved::Interleaved;
use crate::store::{MemoryStore, SqliteStore, Store};

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

/// Two nodes (repos) over one store, both holding the journal with a note node one stored.
fn two_nodes_holding_a_note() -> (MemoryStore, Repo<MemoryStore>, Repo<MemoryStore>) {
    let store = MemoryStore::new();
    let mut one = Repo::new(store.clone());
    let mut two = Repo::new(store.clone());
    let first = device_note("anna", "n1", "First.");
    one.apply_changes(&journal(), vec![first.clone()]).unwrap();
    assert!(holds(&mut one, first.hash()) && holds(&mut two, first.hash()));
    (store, one, two)
}

/// A change another node stored is in the document this node serves, though this node had
/// the document cached from before (the server sends changes from its `Repo`: a stale copy
/// skips them).
#[test]
fn a_change_another_node_stored_is_in_the_document_this_node_holds() {
    let (_, mut one, mut two) = two_nodes_holding_a_note();
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

/// A change another node stored reaches this node's cached copy without the whole document
/// being loaded again: its row is read and applied. One folded into a snapshot meanwhile
/// cannot be read alone: then the copy is loaded again.
#[test]
fn a_cached_copy_takes_another_nodes_change_without_loading_again() {
    let (store, mut one, mut two) = two_nodes_holding_a_note();
    let loads = one.documents_loaded();
    let second = device_note("bo", "n2", "Second.");
    two.apply_changes(&journal(), vec![second.clone()]).unwrap();
    assert!(holds(&mut one, second.hash()));
    assert_eq!(one.documents_loaded(), loads, "the copy was loaded again");
    let events = one.get(&journal()).unwrap().events().len();
    assert_eq!(
        events,
        Repo::new(store.clone())
            .get(&journal())
            .unwrap()
            .events()
            .len()
    );

    let third = device_note("cy", "n3", "Third.");
    two.apply_changes(&journal(), vec![third.clone()]).unwrap();
    two.compact(&journal()).unwrap();
    assert!(holds(&mut one, third.hash()));
    assert_eq!(one.documents_loaded(), loads + 1);
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

/// Another node stores a change of a document between this node's validation and its
/// append (on SQLite, two connections to one file): nothing of this node's change is stored,
/// it is validated again against the other's, and refused; the document still loads.
#[test]
fn a_write_raced_by_another_node_is_validated_again_against_its_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    let anna = device_note("anna", "same", "Anna's note.");
    let bo = device_note("bo", "same", "Bo's note.");
    let mut one = Repo::new(Interleaved::new(SqliteStore::open(&path).unwrap()));
    assert!(one.get(&journal()).unwrap().events().is_empty());
    let other = path.clone();
    let anna_change = anna.clone();
    one.store_mut().then(move || {
        let mut two = Repo::new(SqliteStore::open(&other).unwrap());
        let out = two.apply_changes(&journal(), vec![anna_change]).unwrap();
        assert_eq!(out.applied.len(), 1);
    });
    let outcome = one.apply_changes(&journal(), vec![bo.clone()]).unwrap();
    assert_eq!(one.store().waiting(), 0, "the other node wrote");
    assert!(outcome.applied.is_empty(), "{outcome:?}");
    assert_eq!(outcome.refused.len(), 1, "{outcome:?}");
    let mut fresh = Repo::new(SqliteStore::open(&path).unwrap());
    assert!(holds(&mut fresh, anna.hash()) && !holds(&mut fresh, bo.hash()));
}

/// An actor's last sequence number in a document (what the server's fork checks read for each
/// uploaded change) follows the changes this node applies and those another node stored.
#[test]
fn an_actors_last_sequence_number_follows_changes_from_every_node() {
    let store = MemoryStore::new();
    let mut one = Repo::new(store.clone());
    let mut two = Repo::new(store.clone());
    let first = device_note("anna", "n1", "First.");
    let actor = first.actor_id().clone();
    assert_eq!(one.actor_seq(&journal(), &actor).unwrap(), 0);
    assert_eq!(two.actor_seq(&journal(), &actor).unwrap(), 0);
    one.apply_changes(&journal(), vec![first.clone()]).unwrap();
    assert_eq!(one.actor_seq(&journal(), &actor).unwrap(), first.seq());
    // Node two had the document cached, with the actor at 0: it catches up.
    assert_eq!(two.actor_seq(&journal(), &actor).unwrap(), first.seq());
    let other = device_note("bo", "n2", "Second.");
    two.apply_changes(&journal(), vec![other.clone()]).unwrap();
    assert_eq!(
        one.actor_seq(&journal(), other.actor_id()).unwrap(),
        other.seq()
    );
}

/// A device's changes of the journal: its first and `n` notes in a row (as a device's upload
/// after days offline, or a tampered app's).
fn device_notes(user: &str, n: usize) -> Vec<Change> {
    notes_in(&journal(), user, n)
}

/// A device's changes of `doc`: its first and `n` notes in a row.
fn notes_in(doc: &DocumentId, user: &str, n: usize) -> Vec<Change> {
    let mut device = Repo::new(MemoryStore::new());
    for i in 0..n {
        device
            .change(doc, &author(user), NOW, |e| {
                e.record(
                    RecordId::new(format!("{user}-{i}")).unwrap(),
                    EventBody::Note {
                        body: "Visit.".into(),
                        corrects: None,
                    },
                )
            })
            .unwrap();
    }
    device.get(doc).unwrap().automerge().get_changes(&[])
}

/// An append of more changes than a repo reads of the feed to find other writers' changes is
/// stored: the check read its own changes as entries of other writers and called every such
/// append raced, so it was never stored, and inside a group (a server's group of sync steps)
/// the rolled-back inner group failed the whole group on SQLite.
#[test]
fn an_append_larger_than_the_feed_scan_is_stored_alone_and_in_a_group() {
    let notes = super::REFRESH_SCAN + 100;
    let changes = device_notes("anna", notes);
    let n = changes.len();
    let dir = tempfile::tempdir().unwrap();
    let mut alone = Repo::new(SqliteStore::open(dir.path().join("alone.db")).unwrap());
    let out = alone.apply_changes(&journal(), changes.clone()).unwrap();
    // The document's first change is the same on every replica: a new copy holds it already.
    assert_eq!((out.applied.len(), out.refused.len()), (n - 1, 0));
    let mut grouped = Repo::new(SqliteStore::open(dir.path().join("grouped.db")).unwrap());
    let other = device_note("bo", "b1", "Bo's note.");
    let out = grouped
        .grouped(|repo| {
            repo.apply_changes(&journal(), vec![other.clone()])?;
            repo.apply_changes(&journal(), changes.clone())
        })
        .unwrap();
    assert_eq!((out.applied.len(), out.refused.len()), (n - 1, 0));
    let mut fresh = Repo::new(SqliteStore::open(dir.path().join("grouped.db")).unwrap());
    assert_eq!(fresh.get(&journal()).unwrap().events().len(), notes + 1);
}

/// A large append of the repo's own does not make it drop its other cached documents: the next
/// refresh read the append back, and past 1,024 entries dropped every cached document (one
/// device's large upload made every other device's documents load again on the server).
#[test]
fn a_large_append_of_its_own_keeps_the_other_cached_documents() {
    let other = DocumentId::journal(
        &PatientId::new("p-2").unwrap(),
        Month::new(2026, 11).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut repo = Repo::new(SqliteStore::open(dir.path().join("server.db")).unwrap());
    repo.get(&other).unwrap();
    let changes = device_notes("anna", super::REFRESH_SCAN + 100);
    repo.apply_changes(&journal(), changes).unwrap();
    repo.refresh().unwrap();
    assert!(
        repo.loaded.contains_key(&other),
        "the other document was dropped"
    );
    // A rollback of the group it was in drops everything: the positions the repo had read up
    // to are taken back, and another writer's changes take them, which the repo then holds.
    let more = device_notes("bo", 3);
    let seen = repo.seen;
    let rolled_back: Result<(), crate::error::RepoError> = repo.grouped(|repo| {
        repo.apply_changes(&journal(), more.clone())?;
        assert!(repo.seen > seen);
        Err(crate::error::RepoError::Raced { doc: journal() })
    });
    assert!(rolled_back.is_err());
    assert!(repo.get(&other).unwrap().events().is_empty());
    let mut two = Repo::new(SqliteStore::open(dir.path().join("server.db")).unwrap());
    two.apply_changes(&other, notes_in(&other, "cai", 5))
        .unwrap();
    assert_eq!(repo.get(&other).unwrap().events().len(), 5);
}
