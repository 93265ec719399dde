//! Changes that break a rule of Automerge's clock that Automerge 0.12 does not check on apply
//! (see `CareDocument::clock_violation`): refused from a peer, reported damaged when stored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::num::NonZeroU64;

use automerge::transaction::CommitOptions;
use automerge::{Automerge, Change};

use super::CareDocument;
use super::test_support::{carer, fork_as, journal, rows_with};
use crate::error::ModelError;
use crate::ids::{RecordId, Timestamp};
use crate::model::records::EventBody;
use crate::repo::Repo;
use crate::store::MemoryStore;

/// The journal with genesis and one note by anna.
fn with_note() -> CareDocument {
    let mut doc = CareDocument::new(journal()).unwrap();
    doc.change(&carer("anna"), Timestamp(1_795_000_000_000), |e| {
        e.record(
            RecordId::new("n1").unwrap(),
            EventBody::Note {
                body: "Slept well.".into(),
                corrects: None,
            },
        )
    })
    .unwrap();
    doc
}

/// A change of bo's device with no operations, on the heads of `doc`, its first operation
/// counter moved on by `gap`: its message is well formed and lists no writes.
fn empty_change(doc: &CareDocument, gap: u64) -> Change {
    let (mut fork, message) = fork_as(doc, &carer("bo"));
    let hash = fork.empty_change(CommitOptions::default().with_message(message).with_time(1));
    let mut expanded = fork.get_change_by_hash(&hash).unwrap().decode();
    assert!(expanded.operations.is_empty());
    expanded.start_op = NonZeroU64::new(expanded.start_op.get() + gap).unwrap();
    Change::from(expanded)
}

/// An empty change whose first operation counter leaves a gap after its dependencies'
/// operations: Automerge 0.12 applies it, then saves a document it cannot load back
/// ("invalid changes: missing ops"; found by fuzzing a stored row,
/// `fuzz/regressions/store_load/crash-6b74d89a…`). Refused from a peer, through the document
/// and through a repo (the server's and a device's path); a stored row holding it makes the load
/// a `Corrupt` naming the document.
#[test]
fn an_empty_change_with_a_gap_in_its_counter_is_refused_and_reported_damaged() {
    let doc = with_note();
    let forged = empty_change(&doc, 1);

    // Without the check, Automerge takes it and its save does not load back.
    let mut raw = doc.automerge().clone();
    raw.apply_changes([forged.clone()]).unwrap();
    assert!(Automerge::load(&raw.save()).is_err());

    let mut peer = with_note();
    let outcome = peer.apply_changes(vec![forged.clone()]).unwrap();
    assert!(outcome.applied.is_empty());
    match &outcome.refused[..] {
        [(h, ModelError::Invalid { doc, reason, .. })] => {
            assert_eq!(*h, forged.hash());
            assert_eq!(*doc, journal());
            assert!(reason.contains("no operations"), "{reason}");
        }
        other => panic!("expected one Invalid, got {other:?}"),
    }
    assert_eq!(
        peer.heads(),
        doc.heads(),
        "the refused change left no trace"
    );
    assert!(CareDocument::load(journal(), Some(&peer.save()), &[]).is_ok());

    let mut repo = Repo::new(MemoryStore::new());
    let mut rows = with_note().changes_since(&[]);
    rows.retain(|c| c.message().is_some_and(|m| m != "genesis"));
    let stored = repo.apply_changes(&journal(), rows).unwrap();
    assert!(stored.refused.is_empty());
    let outcome = repo
        .apply_changes(&journal(), vec![forged.clone()])
        .unwrap();
    assert!(outcome.applied.is_empty());
    assert!(matches!(
        &outcome.refused[..],
        [(_, ModelError::Invalid { doc, .. })] if *doc == journal()
    ));
    assert_eq!(repo.get(&journal()).unwrap().heads(), doc.heads());

    match CareDocument::load(journal(), None, &rows_with(&doc, &forged)) {
        Err(ModelError::Corrupt { doc, detail }) => {
            assert_eq!(doc, journal());
            assert!(detail.contains("no operations"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// The rule is no wider than the fault: an empty change that starts right after its
/// dependencies' operations, as Automerge makes one, is taken and survives save and load.
#[test]
fn an_empty_change_that_follows_its_dependencies_is_taken_and_reloads() {
    let doc = with_note();
    let empty = empty_change(&doc, 0);
    let mut peer = with_note();
    let outcome = peer.apply_changes(vec![empty.clone()]).unwrap();
    assert!(outcome.refused.is_empty(), "{:?}", outcome.refused);
    assert_eq!(outcome.applied.len(), 1);
    let again = CareDocument::load(journal(), Some(&peer.save()), &[]).unwrap();
    assert_eq!(again.heads(), peer.heads());
    let loaded = CareDocument::load(journal(), None, &rows_with(&doc, &empty)).unwrap();
    assert_eq!(loaded.heads(), peer.heads());
}
