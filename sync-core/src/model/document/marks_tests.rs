//! Mark operations: Nära Sync writes none (text fields take plain splices), and Automerge 0.12
//! takes one that has no effect without a patch, then saves a document that does not load
//! (found by fuzzing a stored row, `fuzz/regressions/store_load/crash-mark-end-before-begin`):
//! refused from a peer, reported damaged when stored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use automerge::marks::{ExpandMark, Mark};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{Automerge, Change, ObjType, ReadDoc};

use super::test_support::{carer, fork_as, journal, rows_with};
use super::{CareDocument, TEXTS};
use crate::error::ModelError;
use crate::ids::{RecordId, Timestamp};

/// The journal with anna's draft of a note (a text field).
fn with_draft() -> CareDocument {
    let mut doc = CareDocument::new(journal()).unwrap();
    doc.change(&carer("anna"), Timestamp(1_795_000_000_000), |e| {
        e.start_draft(RecordId::new("d1").unwrap(), "Slept well, ate well.")
    })
    .unwrap();
    doc
}

/// A change of anna's device on the heads of `doc`: a mark over the draft whose end operation
/// comes before its begin (Automerge's API writes them the other way round; the two actions
/// are swapped in the encoded change).
fn end_before_begin(doc: &CareDocument) -> Change {
    let (mut fork, message) = fork_as(doc, &carer("anna"));
    let (_, texts) = fork.get(automerge::ROOT, TEXTS).unwrap().unwrap();
    let (_, draft) = fork.get(&texts, "draft/d1").unwrap().unwrap();
    assert_eq!(fork.object_type(&draft).unwrap(), ObjType::Text);
    fork.mark(
        &draft,
        Mark::new("bold".into(), true, 2, 5),
        ExpandMark::None,
    )
    .unwrap();
    let hash = fork
        .commit_with(CommitOptions::default().with_message(message).with_time(1))
        .unwrap();
    let mut expanded = fork.get_change_by_hash(&hash).unwrap().decode();
    assert_eq!(expanded.operations.len(), 2);
    let (a, b) = (
        expanded.operations[0].action.clone(),
        expanded.operations[1].action.clone(),
    );
    expanded.operations[0].action = b;
    expanded.operations[1].action = a;
    expanded.hash = None;
    Change::from(expanded)
}

#[test]
fn a_mark_whose_end_comes_first_is_refused_and_reported_damaged() {
    let doc = with_draft();
    let forged = end_before_begin(&doc);

    // Without the check, Automerge takes it and its save does not load back.
    let mut raw = doc.automerge().clone();
    raw.apply_changes([forged.clone()]).unwrap();
    assert!(Automerge::load(&raw.save()).is_err());

    // A stored row holding it: the load is a `Corrupt` naming the document.
    match CareDocument::load(journal(), None, &rows_with(&doc, &forged)) {
        Err(ModelError::Corrupt { doc, detail }) => {
            assert_eq!(doc, journal());
            assert!(detail.contains("mark"), "{detail}");
        }
        other => panic!("expected Corrupt, got {:?}", other.map(|d| d.heads())),
    }

    // From a peer it is refused (and was: its mark also shows in the patch), leaving no trace.
    let mut peer = with_draft();
    let outcome = peer.apply_changes(vec![forged.clone()]).unwrap();
    assert!(outcome.applied.is_empty());
    match &outcome.refused[..] {
        [(h, ModelError::Invalid { reason, .. })] => {
            assert_eq!(*h, forged.hash());
            assert!(
                reason.contains("mark") || reason.contains("plain text"),
                "{reason}"
            );
        }
        other => panic!("expected one Invalid, got {other:?}"),
    }
    assert_eq!(peer.heads(), doc.heads());
    // Its save still loads.
    assert!(CareDocument::load(journal(), Some(&peer.save()), &[]).is_ok());
}
