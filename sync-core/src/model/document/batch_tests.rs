//! Foreign changes applied as one batch (`batch`): the same outcome as one at a time, each
//! record checked against the author of the change that wrote it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Change, ChangeHash, ROOT, ReadDoc};

use super::ingest::ReadBack;
use super::{CareDocument, ChangeMessage};
use crate::error::ModelError;
use crate::ids::{
    Author, DeviceId, DocumentId, Month, PatientId, RecordId, Role, Timestamp, UserId,
};
use crate::model::records::{Event, EventBody};

fn journal() -> DocumentId {
    DocumentId::journal(
        &PatientId::new("p-1").unwrap(),
        Month::new(2026, 11).unwrap(),
    )
}

fn author(user: &str, role: Role) -> Author {
    Author::new(
        UserId::new(user).unwrap(),
        role,
        DeviceId::new(format!("{user}-phone")).unwrap(),
    )
}

fn rid(s: &str) -> RecordId {
    RecordId::new(s).unwrap()
}

const AT: Timestamp = Timestamp(1_795_000_000_000);

fn note_json(by: &Author, body: &str) -> String {
    serde_json::to_string(&Event {
        body: EventBody::Note {
            body: body.into(),
            corrects: None,
        },
        author: by.clone(),
        at: AT,
        context: Default::default(),
    })
    .unwrap()
}

/// The journal with genesis and one note by anna.
fn with_note() -> CareDocument {
    let mut doc = CareDocument::new(journal()).unwrap();
    doc.change(&author("anna", Role::Carer), AT, |e| {
        e.record(
            rid("n1"),
            EventBody::Note {
                body: "Slept well.".into(),
                corrects: None,
            },
        )
    })
    .unwrap();
    doc
}

/// A change by `by`'s device on `base` (an Automerge document) putting `(id, json)` into
/// `events`, its message listing them, as a hostile or buggy peer could write it.
fn forge(
    base: &automerge::Automerge,
    by: &Author,
    actor: ActorId,
    puts: &[(&str, String)],
) -> (automerge::Automerge, Change) {
    let mut doc = base.fork().with_actor(actor);
    let events = doc.get(ROOT, "events").unwrap().unwrap().1;
    let message = serde_json::to_string(&ChangeMessage {
        author: by.clone(),
        writes: puts.iter().map(|(id, _)| format!("events/{id}")).collect(),
    })
    .unwrap();
    let mut tx = doc.transaction();
    for (id, json) in puts {
        tx.put(&events, *id, json.clone()).unwrap();
    }
    tx.commit_with(
        CommitOptions::default()
            .with_message(message)
            .with_time(AT.0),
    );
    let change = doc.get_last_local_change().unwrap();
    (doc, change)
}

type Summary = (
    Vec<ChangeHash>,
    Vec<(ChangeHash, String)>,
    Vec<ChangeHash>,
    Vec<RecordId>,
);

/// What an apply did, comparable across documents: applied hashes (sorted), refused hashes
/// with their errors (sorted), the heads and the events.
fn summary(doc: &CareDocument, outcome: &super::ApplyOutcome) -> Summary {
    let mut applied: Vec<_> = outcome.applied.iter().map(Change::hash).collect();
    applied.sort();
    let mut refused: Vec<_> = outcome
        .refused
        .iter()
        .map(|(h, e)| (*h, e.to_string()))
        .collect();
    refused.sort();
    (
        applied,
        refused,
        doc.heads(),
        doc.events().keys().cloned().collect(),
    )
}

/// Applies `changes` one call each, in order (so every call goes one at a time): the outcome
/// as it was before batches.
fn one_at_a_time(doc: &mut CareDocument, changes: &[Change]) -> super::ApplyOutcome {
    let mut all = super::ApplyOutcome::default();
    let mut refused: Vec<ChangeHash> = Vec::new();
    for c in changes {
        if c.deps().iter().any(|d| refused.contains(d)) {
            // As one call would report it: the dependant of a refused change.
            all.refused.push((
                c.hash(),
                ModelError::Invalid {
                    doc: journal(),
                    path: format!("change {}", c.hash()),
                    reason: "depends on a refused change".into(),
                },
            ));
            refused.push(c.hash());
            continue;
        }
        let outcome = doc.apply_changes(vec![c.clone()]).unwrap();
        refused.extend(outcome.refused.iter().map(|(h, _)| *h));
        all.applied.extend(outcome.applied);
        all.refused.extend(outcome.refused);
    }
    all
}

#[test]
fn a_batch_with_a_bad_change_in_the_middle_refuses_it_and_its_dependants_only() {
    let base = with_note();
    let people = ["bo", "cara", "dan", "eve", "fay"];
    let mut changes = Vec::new();
    let mut bad = None;
    for (i, name) in people.iter().enumerate() {
        let by = author(name, Role::Carer);
        let (fork, first) = if i == 2 {
            // The middle one overwrites anna's note: records are immutable.
            let (fork, c) = forge(
                &base.doc,
                &by,
                by.actor_id(),
                &[("n1", note_json(&by, "Rewritten."))],
            );
            bad = Some(c.hash());
            (fork, c)
        } else {
            let id = format!("a-{name}");
            forge(
                &base.doc,
                &by,
                by.actor_id(),
                &[(&id, note_json(&by, "Fine."))],
            )
        };
        // Each device writes a second note on top of its first.
        let id = format!("b-{name}");
        let (_, second) = forge(
            &fork,
            &by,
            by.actor_id(),
            &[(&id, note_json(&by, "Later."))],
        );
        changes.push(first);
        changes.push(second);
    }
    let bad = bad.unwrap();

    let mut batched = base.clone();
    let outcome = batched.apply_changes(changes.clone()).unwrap();
    let mut reference = base.clone();
    let expected = one_at_a_time(&mut reference, &changes);
    assert_eq!(summary(&batched, &outcome), summary(&reference, &expected));
    // Relayed by a server (not read back here): checked the same, with the same outcome.
    let mut relayed = base.clone();
    let relayed_outcome = relayed.apply_relayed_changes(changes.clone()).unwrap();
    assert_eq!(
        summary(&relayed, &relayed_outcome),
        summary(&reference, &expected)
    );

    // The bad change and its dependant are refused; the other eight are in.
    assert_eq!(outcome.applied.len(), 8);
    let refused: Vec<ChangeHash> = outcome.refused.iter().map(|(h, _)| *h).collect();
    assert_eq!(refused.len(), 2);
    assert!(refused.contains(&bad));
    let (_, err) = outcome.refused.iter().find(|(h, _)| *h == bad).unwrap();
    assert!(err.to_string().contains("immutable"), "{err}");
    assert!(batched.event(&rid("b-dan")).is_none());
    assert!(batched.event(&rid("a-bo")).is_some() && batched.event(&rid("b-fay")).is_some());
    assert_eq!(
        batched.event(&rid("n1")).unwrap().author,
        author("anna", Role::Carer)
    );
    // The document still saves and loads (a refused change left no trace in it).
    CareDocument::load(journal(), Some(&batched.save()), &[]).unwrap();
}

#[test]
fn a_batch_goes_through_automerge_at_once_or_not_at_all() {
    let base = with_note();
    let (bo, cara) = (author("bo", Role::Carer), author("cara", Role::Carer));
    let (_, good_bo) = forge(
        &base.doc,
        &bo,
        bo.actor_id(),
        &[("x-bo", note_json(&bo, "A"))],
    );
    let (_, good_cara) = forge(
        &base.doc,
        &cara,
        cara.actor_id(),
        &[("x-cara", note_json(&cara, "B"))],
    );
    let (_, bad) = forge(
        &base.doc,
        &cara,
        bo.actor_id(),
        &[("x-bad", note_json(&cara, "C"))],
    );

    // One bad change (an actor not its author's): nothing of the batch is applied.
    let mut doc = base.clone();
    assert!(!doc.apply_batch(&[good_bo.clone(), bad, good_cara.clone()], ReadBack::Here));
    assert_eq!(doc.heads(), base.heads());
    assert_eq!(doc.events().len(), 1);
    assert_eq!(doc.doc.get_changes(&base.heads()).len(), 0);

    // All good: all applied in one go, indexed.
    assert!(doc.apply_batch(&[good_bo.clone(), good_cara.clone()], ReadBack::Here));
    assert!(doc.event(&rid("x-bo")).is_some() && doc.event(&rid("x-cara")).is_some());
    let mut heads = vec![good_bo.hash(), good_cara.hash()];
    heads.sort();
    assert_eq!(doc.heads(), heads);
}

#[test]
fn records_in_a_batch_from_two_authors_are_checked_against_their_own_author() {
    let base = with_note();
    let (anna, nina) = (author("anna", Role::Carer), author("nina", Role::Nurse));

    // Each writes a note of their own: both in, each with its author.
    let (_, by_anna) = forge(
        &base.doc,
        &anna,
        anna.actor_id(),
        &[("na", note_json(&anna, "Anna's"))],
    );
    let (_, by_nina) = forge(
        &base.doc,
        &nina,
        nina.actor_id(),
        &[("nn", note_json(&nina, "Nina's"))],
    );
    let mut doc = base.clone();
    let outcome = doc.apply_changes(vec![by_anna, by_nina]).unwrap();
    assert_eq!((outcome.applied.len(), outcome.refused.len()), (2, 0));
    assert_eq!(doc.event(&rid("na")).unwrap().author, anna);
    assert_eq!(doc.event(&rid("nn")).unwrap().author, nina);

    // Each change carries a record signed by the other: were the records attributed to the
    // wrong change, both would pass. Both are refused, as one at a time refuses them.
    let (_, anna_as_nina) = forge(
        &base.doc,
        &anna,
        anna.actor_id(),
        &[("fa", note_json(&nina, "Signed as Nina"))],
    );
    let (_, nina_as_anna) = forge(
        &base.doc,
        &nina,
        nina.actor_id(),
        &[("fn", note_json(&anna, "Signed as Anna"))],
    );
    let mut doc = base.clone();
    let changes = vec![anna_as_nina, nina_as_anna];
    assert!(!doc.apply_batch(&changes, ReadBack::Here));
    let outcome = doc.apply_changes(changes.clone()).unwrap();
    let mut reference = base.clone();
    let expected = one_at_a_time(&mut reference, &changes);
    assert_eq!(summary(&doc, &outcome), summary(&reference, &expected));
    assert_eq!(outcome.refused.len(), 2);
    for (_, err) in &outcome.refused {
        assert!(
            matches!(err, ModelError::Invalid { path, .. } if path.ends_with("/author")),
            "{err}"
        );
    }

    // A mixed batch: anna's own note with nina's forged one: anna's in, nina's out.
    let (_, fine) = forge(
        &base.doc,
        &anna,
        anna.actor_id(),
        &[("ok", note_json(&anna, "Fine"))],
    );
    let (_, forged) = forge(
        &base.doc,
        &nina,
        nina.actor_id(),
        &[("no", note_json(&anna, "Signed as Anna"))],
    );
    let mut doc = base.clone();
    let outcome = doc
        .apply_changes(vec![forged.clone(), fine.clone()])
        .unwrap();
    assert_eq!(
        outcome.applied.iter().map(Change::hash).collect::<Vec<_>>(),
        vec![fine.hash()]
    );
    assert_eq!(outcome.refused.len(), 1);
    assert_eq!(outcome.refused[0].0, forged.hash());
    assert!(doc.event(&rid("ok")).is_some() && doc.event(&rid("no")).is_none());
}

/// `people`'s devices each write `n` notes on `base`, one change each, each on its previous
/// one: the chains in the order a device uploads them.
fn chains(base: &CareDocument, people: &[&str], n: usize) -> Vec<Change> {
    let mut changes = Vec::new();
    for name in people {
        let by = author(name, Role::Carer);
        let mut fork = base.doc.clone();
        for k in 0..n {
            let id = format!("{name}-{k}");
            let (next, c) = forge(&fork, &by, by.actor_id(), &[(&id, note_json(&by, "Done."))]);
            fork = next;
            changes.push(c);
        }
    }
    changes
}

#[test]
fn chains_of_changes_go_through_automerge_in_one_batch() {
    let base = with_note();
    let changes = chains(&base, &["bo", "cara", "dan"], 4);

    // In one go: each change is checked after its predecessor, against it.
    let mut doc = base.clone();
    assert!(doc.apply_batch(&changes, ReadBack::Here));
    assert_eq!(doc.events().len(), 1 + 12);
    assert_eq!(doc.doc.get_changes(&base.heads()).len(), 12);

    // The same outcome as one at a time, whatever order they arrive in.
    let mut shuffled = changes.clone();
    shuffled.reverse();
    let mut batched = base.clone();
    let outcome = batched.apply_changes(shuffled).unwrap();
    let mut reference = base.clone();
    let expected = one_at_a_time(&mut reference, &changes);
    assert_eq!(summary(&batched, &outcome), summary(&reference, &expected));
    assert_eq!(outcome.applied.len(), 12);
    // Relayed by a server: one batch all the same, not read back, the same outcome.
    let mut shuffled = changes.clone();
    shuffled.reverse();
    let mut relayed = base.clone();
    let relayed_outcome = relayed.apply_relayed_changes(shuffled).unwrap();
    assert_eq!(
        summary(&relayed, &relayed_outcome),
        summary(&reference, &expected)
    );
    CareDocument::load(journal(), Some(&relayed.save()), &[]).unwrap();
    // The next change of each actor is checked against the last of its chain.
    let by = author("bo", Role::Carer);
    let mut fork = base.doc.clone();
    fork.apply_changes(changes.iter().take(4).cloned()).unwrap();
    let (_, next) = forge(
        &fork,
        &by,
        by.actor_id(),
        &[("bo-4", note_json(&by, "Later."))],
    );
    let outcome = batched.apply_changes(vec![next]).unwrap();
    assert_eq!((outcome.applied.len(), outcome.refused.len()), (1, 0));
    CareDocument::load(journal(), Some(&batched.save()), &[]).unwrap();
}

#[test]
fn a_chain_rewriting_its_own_record_is_not_batched_and_leaves_the_document_as_it_was() {
    let base = with_note();
    let by = author("bo", Role::Carer);
    let (fork, first) = forge(
        &base.doc,
        &by,
        by.actor_id(),
        &[("x", note_json(&by, "First."))],
    );
    // Its second change rewrites the first's record: two writers of one key, told before the
    // batch goes to Automerge (`Writers::contested`).
    let (_, second) = forge(
        &fork,
        &by,
        by.actor_id(),
        &[("x", note_json(&by, "Again."))],
    );
    let others = chains(&base, &["cara"], 2);
    let mut changes = vec![first.clone(), second.clone()];
    changes.extend(others.iter().cloned());

    let mut doc = base.clone();
    assert!(!doc.apply_batch(&changes, ReadBack::Here));
    assert_eq!(doc.heads(), base.heads());
    assert_eq!(doc.events().len(), 1);
    assert_eq!(doc.doc.get_changes(&base.heads()).len(), 0);

    // Applied change by change instead: the rewrite alone is refused, as one at a time.
    let outcome = doc.apply_changes(changes.clone()).unwrap();
    let mut reference = base.clone();
    let expected = one_at_a_time(&mut reference, &changes);
    assert_eq!(summary(&doc, &outcome), summary(&reference, &expected));
    assert_eq!(outcome.applied.len(), 3);
    assert_eq!(outcome.refused.len(), 1);
    assert_eq!(outcome.refused[0].0, second.hash());
    assert_eq!(
        doc.event(&rid("x")).unwrap().body,
        EventBody::Note {
            body: "First.".into(),
            corrects: None,
        }
    );
    CareDocument::load(journal(), Some(&doc.save()), &[]).unwrap();
}

/// A batch refused after Automerge took it (a change overwrites a record the document held):
/// the document is rebuilt to where it was, not poisoned, and the changes then go one at a
/// time. Before, a copy of the whole document was made before every batch for this.
#[test]
fn a_batch_refused_after_automerge_took_it_is_rebuilt_to_where_it_was() {
    let base = with_note();
    let by = author("bo", Role::Carer);
    let (fork, fine) = forge(
        &base.doc,
        &by,
        by.actor_id(),
        &[("a-bo", note_json(&by, "Fine."))],
    );
    let (_, rewrite) = forge(
        &fork,
        &by,
        by.actor_id(),
        &[("n1", note_json(&by, "Rewritten."))],
    );
    let changes = vec![fine.clone(), rewrite.clone()];

    let mut doc = base.clone();
    assert!(!doc.apply_batch(&changes, ReadBack::Here));
    assert!(!doc.is_poisoned());
    assert_eq!(doc.heads(), base.heads());
    assert_eq!(doc.doc.get_changes(&base.heads()).len(), 0);
    assert_eq!(doc.events().len(), 1);
    assert_eq!(doc.save(), base.save());

    let outcome = doc.apply_changes(changes.clone()).unwrap();
    let mut reference = base.clone();
    let expected = one_at_a_time(&mut reference, &changes);
    assert_eq!(summary(&doc, &outcome), summary(&reference, &expected));
    assert_eq!(outcome.applied.len(), 1);
    assert_eq!(outcome.refused[0].0, rewrite.hash());
    assert!(doc.event(&rid("a-bo")).is_some());
    CareDocument::load(journal(), Some(&doc.save()), &[]).unwrap();
}
