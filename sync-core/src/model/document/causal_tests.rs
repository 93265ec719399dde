//! A change that names an operation outside its causal past (`causal.rs`): refused from a peer,
//! whether the replica holds that operation or not, and in a batch; an honest edit of another
//! device's text, concurrent with its author's own edit, is taken.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::panic::{AssertUnwindSafe, catch_unwind};

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{Change, ChangeHash, ObjType, ReadDoc};

use super::test_support::{carer, fork_as, journal};
use super::{CareDocument, ChangeMessage, TEXTS, genesis_hash};
use crate::error::ModelError;
use crate::ids::{RecordId, Timestamp};
use crate::model::records::TextKey;
use crate::repo::Repo;
use crate::store::MemoryStore;

const DRAFT: &str = "Slept well, ate well.";

fn draft_key() -> TextKey {
    TextKey::NoteDraft(RecordId::new("d1").unwrap())
}

/// The journal with anna's draft of a note (a text field).
fn with_draft() -> CareDocument {
    let mut doc = CareDocument::new(journal()).unwrap();
    doc.change(&carer("anna"), Timestamp(1_795_000_000_000), |e| {
        e.start_draft(RecordId::new("d1").unwrap(), DRAFT)
    })
    .unwrap();
    doc
}

/// The changes of `doc` after its genesis.
fn after_genesis(doc: &CareDocument) -> Vec<Change> {
    doc.automerge()
        .get_changes(&[])
        .into_iter()
        .filter(|c| c.message().is_some_and(|m| m != "genesis"))
        .collect()
}

/// bo's splice of `text` at the start of anna's draft, made on `doc`'s heads as Automerge
/// makes it; with its dependencies replaced by `deps` if given (what a tampered app could do).
fn bo_splice(doc: &CareDocument, text: &str, deps: Option<Vec<ChangeHash>>) -> Change {
    let (mut fork, _) = fork_as(doc, &carer("bo"));
    let message = serde_json::to_string(&ChangeMessage {
        author: carer("bo"),
        writes: vec![format!("{TEXTS}/{}", draft_key())],
    })
    .unwrap();
    let (_, texts) = fork.get(automerge::ROOT, TEXTS).unwrap().unwrap();
    let (_, draft) = fork.get(&texts, draft_key().to_string()).unwrap().unwrap();
    assert_eq!(fork.object_type(&draft).unwrap(), ObjType::Text);
    fork.splice_text(&draft, 0, 0, text).unwrap();
    let hash = fork
        .commit_with(CommitOptions::default().with_message(message).with_time(1))
        .unwrap();
    let change = fork.get_change_by_hash(&hash).unwrap();
    let Some(deps) = deps else { return change };
    let mut expanded = change.decode();
    expanded.deps = deps;
    expanded.hash = None;
    Change::from(expanded)
}

fn refused_reason(outcome: &super::ApplyOutcome, change: &Change) -> String {
    match &outcome.refused[..] {
        [(h, ModelError::Invalid { doc, reason, .. })] if *h == change.hash() => {
            assert_eq!(*doc, journal());
            reason.clone()
        }
        other => panic!("expected one Invalid for {}, got {other:?}", change.hash()),
    }
}

/// bo's splice into anna's draft, made on the draft and then claiming to depend on the genesis
/// alone. Without the check, a replica holding the draft (the server) takes it, and a replica
/// that meets it before the draft (a phone catching up) fails inside Automerge.
#[test]
fn a_splice_into_a_text_outside_its_causal_past_is_refused() {
    let doc = with_draft();
    let genesis = genesis_hash(&journal()).unwrap();
    let forged = bo_splice(&doc, "Bo: ", Some(vec![genesis]));

    let mut raw = doc.automerge().clone();
    raw.apply_changes([forged.clone()]).unwrap();
    let mut raw = CareDocument::new(journal()).unwrap().automerge().clone();
    let applied = catch_unwind(AssertUnwindSafe(|| raw.apply_changes([forged.clone()])));
    assert!(!matches!(applied, Ok(Ok(()))), "Automerge took it");

    // A replica that holds the draft.
    let mut peer = with_draft();
    let outcome = peer.apply_changes(vec![forged.clone()]).unwrap();
    assert!(outcome.applied.is_empty());
    let reason = refused_reason(&outcome, &forged);
    assert!(
        reason.contains("not among its dependencies or their history"),
        "{reason}"
    );
    assert_eq!(
        peer.heads(),
        doc.heads(),
        "the refused change left no trace"
    );
    assert_eq!(peer.text(&draft_key()).as_deref(), Some(DRAFT));

    // A replica that does not hold it yet: refused, not poisoned, and the draft still comes.
    let mut fresh = CareDocument::new(journal()).unwrap();
    let outcome = fresh.apply_changes(vec![forged.clone()]).unwrap();
    let reason = refused_reason(&outcome, &forged);
    assert!(reason.contains("does not hold"), "{reason}");
    assert!(!fresh.is_poisoned());
    let outcome = fresh.apply_changes(after_genesis(&doc)).unwrap();
    assert!(outcome.refused.is_empty(), "{:?}", outcome.refused);
    assert_eq!(fresh.heads(), doc.heads());

    // In one batch with the draft: the draft is taken, the splice refused.
    let mut fresh = CareDocument::new(journal()).unwrap();
    let mut both = vec![forged.clone()];
    both.extend(after_genesis(&doc));
    let outcome = fresh.apply_changes(both).unwrap();
    assert_eq!(outcome.applied.len(), 1);
    refused_reason(&outcome, &forged);
    assert_eq!(fresh.heads(), doc.heads());

    // Through a repo (the server's and a device's path): nothing stored.
    let mut repo = Repo::new(MemoryStore::new());
    let stored = repo.apply_changes(&journal(), after_genesis(&doc)).unwrap();
    assert!(stored.refused.is_empty());
    let outcome = repo
        .apply_changes(&journal(), vec![forged.clone()])
        .unwrap();
    assert!(outcome.applied.is_empty());
    refused_reason(&outcome, &forged);
    assert_eq!(repo.get(&journal()).unwrap().heads(), doc.heads());
}

/// The rule is no wider than the fault: bo's edit of anna's draft on the change that created
/// it is taken after anna's own concurrent edit (the change then names operations of a change
/// it depends on, beside one it does not), and in one batch with the draft by a replica that
/// held neither; both edits survive a save and a load.
#[test]
fn an_edit_of_another_devices_text_on_its_history_is_taken() {
    let doc = with_draft();
    let bo = bo_splice(&doc, "Bo: ", None);
    let mut anna_copy = with_draft();
    let anna = anna_copy
        .change(&carer("anna"), Timestamp(1_795_000_100_000), |e| {
            e.set_text(&draft_key(), &format!("{DRAFT} Walked."))
        })
        .unwrap()
        .change
        .unwrap();

    let mut peer = with_draft();
    let outcome = peer.apply_changes(vec![anna.clone()]).unwrap();
    assert!(outcome.refused.is_empty(), "{:?}", outcome.refused);
    let outcome = peer.apply_changes(vec![bo.clone()]).unwrap();
    assert!(outcome.refused.is_empty(), "{:?}", outcome.refused);
    assert_eq!(outcome.applied.len(), 1);
    let merged = format!("Bo: {DRAFT} Walked.");
    assert_eq!(peer.text(&draft_key()), Some(merged.clone()));
    let again = CareDocument::load(journal(), Some(&peer.save()), &[]).unwrap();
    assert_eq!(again.heads(), peer.heads());
    assert_eq!(again.text(&draft_key()), Some(merged));

    let mut fresh = CareDocument::new(journal()).unwrap();
    let mut batch = after_genesis(&doc);
    batch.push(bo.clone());
    let outcome = fresh.apply_changes(batch).unwrap();
    assert!(outcome.refused.is_empty(), "{:?}", outcome.refused);
    assert_eq!(outcome.applied.len(), 2);
    assert_eq!(fresh.text(&draft_key()), Some(format!("Bo: {DRAFT}")));
}
