//! Validation of local and foreign changes: hostile or broken changes are refused with a typed
//! error naming the document and the path, leave no trace, and never panic. Also the shared
//! base (deterministic genesis) and damaged stored bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use automerge::transaction::{CommitOptions, Transactable, Transaction};
use automerge::{Change, ObjId, ObjType, ROOT, ReadDoc};
use nara_tests::*;
use sync_core::model::{CareDocument, ChangeMessage, EventBody, Register, RegisterValue};
use sync_core::repo::Repo;
use sync_core::store::{Origin, SqliteStore, Store};
use sync_core::{Author, DocumentId, ModelError, RepoError};

fn journal() -> DocumentId {
    DocumentId::journal(&patient("p-1"), november())
}

fn note(body: &str) -> EventBody {
    EventBody::Note {
        body: body.into(),
        corrects: None,
    }
}

fn with_note() -> CareDocument {
    let mut d = CareDocument::new(journal()).unwrap();
    d.change(&carer("anna"), at(9, 0), |e| {
        e.record(rid("n1"), note("Ate breakfast."))
    })
    .unwrap();
    d
}

fn obj(doc: &automerge::Automerge, name: &str) -> ObjId {
    doc.get(ROOT, name).unwrap().unwrap().1
}

/// Writes a change by hand, bypassing the typed API, as a hostile or buggy peer could.
fn forge(
    base: &CareDocument,
    author: &Author,
    actor: automerge::ActorId,
    writes: &[&str],
    f: impl FnOnce(&mut Transaction<'_>, &ObjId, &ObjId, &ObjId),
) -> Change {
    let mut doc = base.automerge().fork().with_actor(actor);
    let (revisions, events, texts) = (
        obj(&doc, "revisions"),
        obj(&doc, "events"),
        obj(&doc, "texts"),
    );
    let message = serde_json::to_string(&ChangeMessage {
        author: author.clone(),
        writes: writes.iter().map(|s| s.to_string()).collect(),
    })
    .unwrap();
    let mut tx = doc.transaction();
    f(&mut tx, &revisions, &events, &texts);
    tx.commit_with(
        CommitOptions::default()
            .with_message(message)
            .with_time(at(12, 0).0),
    );
    doc.get_last_local_change().unwrap()
}

fn event_json(author: &Author, body: EventBody) -> String {
    serde_json::to_string(&sync_core::model::Event {
        body,
        author: author.clone(),
        at: at(12, 0),
        context: Default::default(),
    })
    .unwrap()
}

/// Applies `change` to `doc`, expects it refused, and checks the document did not move.
fn refused(doc: &mut CareDocument, change: Change) -> ModelError {
    let before = doc.heads();
    let events_before = doc.events().len();
    let mut outcome = doc.apply_changes(vec![change]).unwrap();
    assert!(
        outcome.applied.is_empty(),
        "applied a change that should be refused"
    );
    assert_eq!(outcome.refused.len(), 1);
    assert_eq!(doc.heads(), before, "a refused change left a trace");
    assert_eq!(doc.events().len(), events_before);
    let (_, err) = outcome.refused.remove(0);
    assert_eq!(err.document(), &journal());
    err
}

fn assert_invalid_at(err: &ModelError, path_part: &str) {
    match err {
        ModelError::Invalid { path, .. } => assert!(
            path.contains(path_part),
            "path {path:?} lacks {path_part:?}: {err}"
        ),
        other => panic!("expected Invalid at {path_part}, got {other}"),
    }
}

#[test]
fn genesis_is_the_same_on_every_replica_and_differs_per_document() {
    let a = CareDocument::new(journal()).unwrap();
    let b = CareDocument::new(journal()).unwrap();
    assert_eq!(a.heads(), b.heads());
    assert_eq!(a.save(), b.save());
    let other = CareDocument::new(DocumentId::journal(&patient("p-2"), november())).unwrap();
    assert_ne!(a.heads(), other.heads());
}

#[test]
fn two_replicas_that_start_the_same_month_offline_keep_both_sides_edits() {
    // The Automerge pitfall: two replicas creating the same root objects lose one side's edits.
    // Here both start the November journal independently, offline, and nothing is lost.
    let (mut a, mut b) = (Replica::new(Backend::Memory), Replica::new(Backend::Sqlite));
    a.repo
        .change(&journal(), &carer("anna"), at(9, 0), |e| {
            e.record(rid("na"), note("A"))
        })
        .unwrap();
    b.repo
        .change(&journal(), &carer("bo"), at(9, 1), |e| {
            e.record(rid("nb"), note("B"))
        })
        .unwrap();
    exchange(&mut a, &mut b, &journal());
    for r in [&mut a, &mut b] {
        let d = r.doc(&journal());
        assert!(d.event(&rid("na")).is_some() && d.event(&rid("nb")).is_some());
    }
}

#[test]
fn deleting_a_record_is_refused() {
    let mut target = with_note();
    let anna = carer("anna");
    let c = forge(
        &target,
        &anna,
        anna.actor_id(),
        &["events/n1"],
        |tx, _, events, _| {
            tx.delete(events, "n1").unwrap();
        },
    );
    let err = refused(&mut target, c);
    assert_invalid_at(&err, "events/n1");
    assert!(target.event(&rid("n1")).is_some());
}

#[test]
fn overwriting_a_record_is_refused() {
    let mut target = with_note();
    let anna = carer("anna");
    let json = event_json(&anna, note("Changed after the fact."));
    let c = forge(
        &target,
        &anna,
        anna.actor_id(),
        &["events/n1"],
        |tx, _, events, _| {
            tx.put(events, "n1", json).unwrap();
        },
    );
    let err = refused(&mut target, c);
    assert_invalid_at(&err, "events/n1");
    assert!(err.to_string().contains("immutable"), "{err}");
}

#[test]
fn writing_the_root_or_meta_is_refused() {
    let mut target = with_note();
    let anna = carer("anna");
    let c = forge(&target, &anna, anna.actor_id(), &[], |tx, _, _, _| {
        tx.put_object(ROOT, "events", ObjType::Map).unwrap();
    });
    assert_invalid_at(&refused(&mut target, c), "events");
    let c = forge(&target, &anna, anna.actor_id(), &[], |tx, _, _, _| {
        let meta = tx.get(ROOT, "meta").unwrap().unwrap().1;
        tx.put(&meta, "patient", "p-999").unwrap();
    });
    assert_invalid_at(&refused(&mut target, c), "meta/patient");
}

#[test]
fn a_change_under_another_devices_actor_is_refused() {
    let mut target = with_note();
    let (anna, bo) = (carer("anna"), carer("bo"));
    let json = event_json(&anna, note("Pretending to be Anna."));
    let c = forge(
        &target,
        &anna,
        bo.actor_id(),
        &["events/n2"],
        |tx, _, events, _| {
            tx.put(events, "n2", json).unwrap();
        },
    );
    let err = refused(&mut target, c);
    assert!(err.to_string().contains("actor"), "{err}");
}

#[test]
fn a_change_whose_message_hides_what_it_wrote_is_refused() {
    let mut target = with_note();
    let anna = carer("anna");
    let json = event_json(&anna, note("Hidden."));
    let c = forge(&target, &anna, anna.actor_id(), &[], |tx, _, events, _| {
        tx.put(events, "n2", json).unwrap();
    });
    assert_invalid_at(&refused(&mut target, c), "change message");
}

#[test]
fn a_record_whose_author_is_not_the_changes_author_is_refused() {
    let mut target = with_note();
    let (anna, nina) = (carer("anna"), nurse("nina"));
    let json = event_json(&nina, note("Signed as the nurse."));
    let c = forge(
        &target,
        &anna,
        anna.actor_id(),
        &["events/n2"],
        |tx, _, events, _| {
            tx.put(events, "n2", json).unwrap();
        },
    );
    assert_invalid_at(&refused(&mut target, c), "events/n2/author");
}

#[test]
fn a_record_that_breaks_the_schema_names_the_path() {
    let mut target = with_note();
    let anna = carer("anna");
    let c = forge(
        &target,
        &anna,
        anna.actor_id(),
        &["events/n2"],
        |tx, _, events, _| {
            tx.put(events, "n2", "{\"body\": {\"type\": \"note\"}}")
                .unwrap();
        },
    );
    assert_invalid_at(&refused(&mut target, c), "events/n2");
    let c = forge(
        &target,
        &anna,
        anna.actor_id(),
        &["events/n3"],
        |tx, _, events, _| {
            tx.put_object(events, "n3", ObjType::Map).unwrap();
        },
    );
    assert_invalid_at(&refused(&mut target, c), "events/n3");
}

#[test]
fn a_carer_changing_a_dose_from_another_replica_is_refused() {
    let meds_id = DocumentId::medication(&patient("p-1"));
    let mut meds = CareDocument::new(meds_id.clone()).unwrap();
    let nina = nurse("nina");
    meds.change(&nina, at(7, 0), |e| {
        e.create(
            rid("v1"),
            Register::Order(rid("o1")),
            order("1 tablet", at(7, 0)),
            None,
        )
    })
    .unwrap();
    let anna = carer("anna");
    let rev = sync_core::model::Revision {
        register: Register::Order(rid("o1")),
        supersedes: vec![rid("v1")],
        value: order("2 tablets", at(12, 0)),
        author: anna.clone(),
        at: at(12, 0),
        context: Default::default(),
    };
    let json = serde_json::to_string(&rev).unwrap();
    let c = forge(
        &meds,
        &anna,
        anna.actor_id(),
        &["revisions/v2"],
        |tx, revisions, _, _| {
            tx.put(revisions, "v2", json).unwrap();
        },
    );
    let before = meds.heads();
    let outcome = meds.apply_changes(vec![c]).unwrap();
    assert_eq!(meds.heads(), before);
    match &outcome.refused[..] {
        [(_, ModelError::NotPermitted { doc, path, role })] => {
            assert_eq!(doc, &meds_id);
            assert_eq!(path, "revisions/v2");
            assert_eq!(*role, sync_core::Role::Carer);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(meds.register(&Register::Order(rid("o1"))), sync_core::model::RegisterState::Value(v) if v.id == rid("v1"))
    );
}

#[test]
fn a_text_field_created_without_its_entity_is_refused() {
    let plan_id = DocumentId::care_plan(&patient("p-1"));
    let plan = CareDocument::new(plan_id).unwrap();
    let nina = nurse("nina");
    let mut target = CareDocument::new(plan.id().clone()).unwrap();
    let c = forge(
        &plan,
        &nina,
        nina.actor_id(),
        &["texts/goal/g9/description"],
        |tx, _, _, texts| {
            tx.put_object(texts, "goal/g9/description", ObjType::Text)
                .unwrap();
        },
    );
    let outcome = target.apply_changes(vec![c]).unwrap();
    assert!(outcome.applied.is_empty());
    assert!(
        matches!(&outcome.refused[0].1, ModelError::Invalid { path, .. } if path.contains("goal/g9"))
    );
}

#[test]
fn changes_that_depend_on_a_refused_change_are_refused_too() {
    let mut target = with_note();
    let anna = carer("anna");
    let json = event_json(&anna, note("Changed after the fact."));
    let mut forger = target.automerge().fork().with_actor(anna.actor_id());
    let events = obj(&forger, "events");
    let msg = |w: &str| {
        serde_json::to_string(&ChangeMessage {
            author: anna.clone(),
            writes: vec![w.to_string()],
        })
        .unwrap()
    };
    let mut tx = forger.transaction();
    tx.put(&events, "n1", json).unwrap();
    tx.commit_with(
        CommitOptions::default()
            .with_message(msg("events/n1"))
            .with_time(0),
    );
    let bad = forger.get_last_local_change().unwrap();
    let ok_json = event_json(&anna, note("A fine note."));
    let mut tx = forger.transaction();
    tx.put(&events, "n2", ok_json).unwrap();
    tx.commit_with(
        CommitOptions::default()
            .with_message(msg("events/n2"))
            .with_time(0),
    );
    let dependent = forger.get_last_local_change().unwrap();
    let outcome = target.apply_changes(vec![dependent, bad]).unwrap();
    assert!(outcome.applied.is_empty());
    assert_eq!(outcome.refused.len(), 2);
    assert!(target.event(&rid("n2")).is_none());
}

#[test]
fn a_valid_foreign_change_applies_and_a_duplicate_is_skipped() {
    let source = with_note();
    let mut target = CareDocument::new(journal()).unwrap();
    let changes = source.changes_since(&[]);
    let outcome = target.apply_changes(changes.clone()).unwrap();
    assert_eq!(outcome.applied.len(), 1);
    assert_eq!(outcome.duplicates, 1, "genesis is already there");
    assert!(target.event(&rid("n1")).is_some());
    let again = target.apply_changes(changes).unwrap();
    assert_eq!((again.applied.len(), again.duplicates), (0, 2));
}

#[test]
fn local_edits_are_checked_before_they_are_written() {
    let mut d =
        CareDocument::new(DocumentId::administrations(&patient("p-1"), november())).unwrap();
    let anna = carer("anna");
    let before = d.heads();
    // A slot outside the log's month; a dose not given without a reason; a note in a log.
    let cases: Vec<EventBody> = vec![
        given("o1", &rid("v1"), "2026-12-01T08:00", at(8, 0)),
        EventBody::Administration {
            order: rid("o1"),
            order_revision: rid("v1"),
            slot: "2026-11-24T08:00".into(),
            outcome: sync_core::model::AdministrationOutcome::NotGiven,
            reason: None,
            occurred_at: at(8, 0),
        },
        note("wrong document"),
    ];
    for body in cases {
        let err = d
            .change(&anna, at(8, 0), |e| e.record(rid("x"), body))
            .unwrap_err();
        assert!(
            matches!(err, ModelError::Invalid { ref path, .. } if path.starts_with("events/x")),
            "{err}"
        );
    }
    assert_eq!(d.heads(), before);
    // A failed write inside a change discards the whole change.
    let err = d.change(&anna, at(8, 0), |e| {
        e.record(
            rid("ok"),
            given("o1", &rid("v1"), "2026-11-24T08:00", at(8, 0)),
        )?;
        e.record(
            rid("ok"),
            given("o1", &rid("v1"), "2026-11-24T20:00", at(8, 0)),
        )
    });
    assert!(err.is_err());
    assert_eq!(d.heads(), before);
    // Admins write no clinical content.
    let admin = author("root", sync_core::Role::Admin);
    let err = d.change(&admin, at(8, 0), |e| {
        e.record(
            rid("a"),
            given("o1", &rid("v1"), "2026-11-24T08:00", at(8, 0)),
        )
    });
    assert!(matches!(err, Err(ModelError::NotPermitted { .. })));
    let _ = RegisterValue::DisplayName {
        name: String::new(),
    };
}

#[test]
fn damaged_bytes_in_one_document_do_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nara.db");
    let good = DocumentId::journal(&patient("p-2"), november());
    {
        let mut repo = Repo::new(SqliteStore::open(&path).unwrap());
        for id in [&journal(), &good] {
            repo.change(id, &carer("anna"), at(9, 0), |e| {
                e.record(rid("n1"), note("fine"))
            })
            .unwrap();
        }
    }
    {
        // Damage p-1's stored change: four bytes in the middle.
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mut bytes: Vec<u8> = conn
            .query_row(
                "SELECT bytes FROM change_bytes JOIN feed USING (seq) WHERE doc_id = ?1",
                [journal().to_string()],
                |r| r.get(0),
            )
            .unwrap();
        bytes[20..24].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        conn.execute(
            "UPDATE change_bytes SET bytes = ?1
             WHERE seq = (SELECT seq FROM feed WHERE doc_id = ?2)",
            rusqlite::params![bytes, journal().to_string()],
        )
        .unwrap();
    }
    let mut repo = Repo::new(SqliteStore::open(&path).unwrap());
    match repo.get(&journal()) {
        Err(RepoError::Model(ModelError::Corrupt { doc, .. })) => assert_eq!(doc, journal()),
        other => panic!("expected Corrupt naming the document, got {other:?}"),
    }
    assert!(repo.get(&good).unwrap().event(&rid("n1")).is_some());

    // A damaged snapshot is caught the same way.
    let snap = DocumentId::journal(&patient("p-4"), november());
    repo.change(&snap, &carer("anna"), at(9, 0), |e| {
        e.record(rid("n1"), note("compacted"))
    })
    .unwrap();
    repo.compact(&snap).unwrap();
    drop(repo);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mut bytes: Vec<u8> = conn
            .query_row(
                "SELECT snapshot FROM documents WHERE doc_id = ?1",
                [snap.to_string()],
                |r| r.get(0),
            )
            .unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        conn.execute(
            "UPDATE documents SET snapshot = ?1 WHERE doc_id = ?2",
            rusqlite::params![bytes, snap.to_string()],
        )
        .unwrap();
    }
    let mut repo = Repo::new(SqliteStore::open(&path).unwrap());
    assert!(
        matches!(repo.get(&snap), Err(RepoError::Model(ModelError::Corrupt { ref doc, .. })) if *doc == snap)
    );
    assert!(repo.get(&good).is_ok());

    // Bytes of another document stored under this id are caught too.
    let mut store = SqliteStore::open(&path).unwrap();
    let imposter = DocumentId::journal(&patient("p-3"), november());
    let other = repo.get(&good).unwrap().save();
    store.compact(&imposter, &other, &[]).unwrap();
    store.append(&imposter, &[], Origin::Remote).unwrap();
    let mut repo = Repo::new(store);
    assert!(matches!(
        repo.get(&imposter),
        Err(RepoError::Model(ModelError::WrongDocument { .. }))
    ));
}

#[test]
fn an_entity_id_created_on_two_replicas_is_refused_not_merged() {
    // Entity ids are unique (UUIDs in the app). Should two replicas still create the same
    // order, the second creation is refused rather than silently merging two text fields.
    let meds_id = DocumentId::medication(&patient("p-1"));
    let (mut a, mut b) = (
        CareDocument::new(meds_id.clone()).unwrap(),
        CareDocument::new(meds_id).unwrap(),
    );
    a.change(&nurse("nils"), at(7, 0), |e| {
        e.create(
            rid("v-a"),
            Register::Order(rid("o1")),
            order("1 tablet", at(7, 0)),
            Some("with food"),
        )
    })
    .unwrap();
    b.change(&nurse("nora"), at(7, 1), |e| {
        e.create(
            rid("v-b"),
            Register::Order(rid("o1")),
            order("2 tablets", at(7, 1)),
            None,
        )
    })
    .unwrap();
    let outcome = a.apply_changes(b.changes_since(&[])).unwrap();
    assert!(outcome.applied.is_empty());
    assert!(
        matches!(&outcome.refused[..], [(_, ModelError::Invalid { path, .. })] if path == "texts/order/o1/instructions")
    );
    assert!(a.revision(&rid("v-b")).is_none());
}

/// A change whose first operation counter does not count past its dependencies' operations
/// (Automerge applies it, then saves a document it cannot load back: found by fuzzing a stored
/// row, `fuzz/regressions/store_load/crash-2b16fa27…`) is refused when a peer sends it, and
/// reported as damaged when a stored row holds it.
#[test]
fn a_change_whose_operation_counter_goes_back_is_refused_and_reported_damaged() {
    // Another writer than the note's, so that no operation id collides (Automerge asserts on
    // that, caught elsewhere): only the counter is wrong.
    let mut doc = with_note();
    let good = doc
        .change(&carer("bo"), at(9, 1), |e| {
            e.record(rid("n2"), note("Walked."))
        })
        .unwrap()
        .change
        .unwrap();
    let mut base = with_note();
    let mut expanded = good.decode();
    expanded.start_op = std::num::NonZeroU64::new(expanded.start_op.get() - 1).unwrap();
    let forged = Change::from(expanded);
    assert_ne!(forged.hash(), good.hash());
    let err = refused(&mut base, forged.clone());
    assert!(
        err.to_string().contains("operation counter"),
        "refused for its counter: {err}"
    );
    // The same change as a stored row: a typed error naming the document, not a document
    // whose snapshot does not load.
    let mut rows: Vec<_> = with_note()
        .automerge()
        .get_changes(&[])
        .iter()
        .filter(|c| c.message().is_some_and(|m| m != "genesis"))
        .map(|c| (c.hash(), c.raw_bytes().to_vec()))
        .collect();
    rows.push((forged.hash(), forged.raw_bytes().to_vec()));
    match CareDocument::load(journal(), None, &rows) {
        Err(ModelError::Corrupt { doc, detail }) => {
            assert_eq!(doc, journal());
            assert!(detail.contains("operation counter"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}
