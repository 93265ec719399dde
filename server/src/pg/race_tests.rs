//! A raced append inside a group of sync steps, on PostgreSQL with two "nodes" (two `PgStore`
//! connections to one database): node two stores a change of a document between node one's
//! validation and its append, while node one runs a group of several steps as the server's
//! group commit does (`app/commit.rs`: one transaction, each step in a savepoint). Only the
//! raced append is rolled back (a group inside the group is a savepoint); it is validated
//! again once, and the other steps commit with the group.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use automerge::Change;
use sync_core::error::RepoError;
use sync_core::model::EventBody;
use sync_core::repo::Repo;
use sync_core::store::Store;
use sync_core::{
    Author, DeviceId, DocumentId, Month, PatientId, RecordId, Role, StoreError, Timestamp, UserId,
};

use super::PgStore;
use super::testing::TestDatabase;

const NOW: Timestamp = Timestamp(1_795_000_000_000);

pub(super) fn journal(patient: &str) -> DocumentId {
    DocumentId::journal(
        &PatientId::new(patient).unwrap(),
        Month::new(2026, 11).unwrap(),
    )
}

/// A change a phone of `user` makes: a note under `record` in `patient`'s journal.
pub(super) fn phone_note(user: &str, patient: &str, record: &str) -> Change {
    let author = Author::new(
        UserId::new(user).unwrap(),
        Role::Carer,
        DeviceId::new(format!("phone-{user}")).unwrap(),
    );
    let mut phone = Repo::new(sync_core::store::MemoryStore::new());
    let saved = phone
        .change(&journal(patient), &author, NOW, |e| {
            e.record(
                RecordId::new(record).unwrap(),
                EventBody::Note {
                    body: format!("note {record}"),
                    corrects: None,
                },
            )
        })
        .unwrap();
    phone
        .get(&journal(patient))
        .unwrap()
        .automerge_change(&saved.change.unwrap())
        .unwrap()
}

/// Node one's store: before each group it opens, the next queued writer runs (node two's
/// write), the moment between a repo's validation and its append.
pub(super) type Interleaved = sync_core::store::interleaved::Interleaved<PgStore>;

/// What node one's group did with its three steps.
struct Steps {
    /// The group committed.
    committed: Result<(), RepoError>,
    /// The raced step's own result.
    raced_step: Result<usize, RepoError>,
}

/// Node one runs, in one group, three steps each in a savepoint (as `app/commit.rs` does):
/// (1) a device's state (meta), (2) a phone's note in p-1's journal, raced by node two
/// `races` times with notes of its own in that journal, (3) a note in p-2's journal.
fn group_of_three(db: &TestDatabase, races: usize) -> Steps {
    let mut one = Repo::new(Interleaved::new(db.open()));
    // Node one has p-1's journal cached before the group (as a node serving it would).
    one.apply_changes(&journal("p-1"), vec![phone_note("anna", "p-1", "a0")])
        .unwrap();
    let mut raced_step = None;
    let committed = one.grouped(|repo| {
        let step = |repo: &mut Repo<Interleaved>, sql: &str| {
            repo.store()
                .store
                .with_group_connection(|c| c.batch_execute(sql))
                .ok_or_else(|| StoreError::BadRow("the group is gone".into()))?
                .map_err(super::pg)
                .map_err(RepoError::Store)
        };
        step(repo, "SAVEPOINT nara_step")?;
        repo.store_mut().set_meta("device-state", b"step 1")?;
        step(repo, "RELEASE nara_step")?;

        step(repo, "SAVEPOINT nara_step")?;
        for i in 0..races {
            let other = db.config();
            repo.store_mut().then(move || {
                let mut two = Repo::new(PgStore::open_config(other).unwrap());
                let out = two
                    .apply_changes(
                        &journal("p-1"),
                        // A phone each (one phone's second change would need its first).
                        vec![phone_note(&format!("bo{i}"), "p-1", &format!("b{i}"))],
                    )
                    .unwrap();
                assert_eq!(out.applied.len(), 1);
            });
        }
        let ran = repo.apply_changes(&journal("p-1"), vec![phone_note("cilla", "p-1", "c1")]);
        match &ran {
            Ok(_) => step(repo, "RELEASE nara_step")?,
            Err(_) => step(repo, "ROLLBACK TO nara_step; RELEASE nara_step")?,
        }
        raced_step = Some(ran.map(|o| o.applied.len()));
        assert_eq!(repo.store().waiting(), 0, "node two wrote");

        step(repo, "SAVEPOINT nara_step")?;
        repo.apply_changes(&journal("p-2"), vec![phone_note("anna", "p-2", "a2")])?;
        step(repo, "RELEASE nara_step")?;
        Ok(())
    });
    Steps {
        committed,
        raced_step: raced_step.unwrap_or(Err(RepoError::Store(StoreError::BadRow(
            "the raced step did not run".into(),
        )))),
    }
}

/// Whether a fresh node finds `record` in `patient`'s journal.
fn stored(db: &TestDatabase, patient: &str, record: &str) -> bool {
    let mut fresh = Repo::new(db.open());
    fresh
        .get(&journal(patient))
        .map(|d| d.event(&RecordId::new(record).unwrap()).is_some())
        .unwrap_or(false)
}

/// Raced once: the raced append is rolled back alone and validated again (now against node
/// two's note), and the whole group commits, the raced step's note with it.
#[test]
fn a_raced_step_in_a_group_is_retried_and_the_group_commits() {
    let db = TestDatabase::new();
    let steps = group_of_three(&db, 1);
    steps.committed.unwrap();
    assert_eq!(steps.raced_step.unwrap(), 1, "stored on its second try");
    assert_eq!(
        db.open().meta("device-state").unwrap().as_deref(),
        Some(&b"step 1"[..])
    );
    for (patient, record) in [("p-1", "a0"), ("p-1", "b0"), ("p-1", "c1"), ("p-2", "a2")] {
        assert!(stored(&db, patient, record), "{patient} {record}");
    }
}

/// Raced on its retry too: only that step fails (its session would close); the steps before
/// and after it commit with the group.
#[test]
fn a_step_raced_twice_fails_alone_and_the_others_commit() {
    let db = TestDatabase::new();
    let steps = group_of_three(&db, 2);
    steps.committed.unwrap();
    assert!(
        matches!(steps.raced_step, Err(RepoError::Raced { .. })),
        "{:?}",
        steps.raced_step.map(|_| ())
    );
    assert_eq!(
        db.open().meta("device-state").unwrap().as_deref(),
        Some(&b"step 1"[..])
    );
    assert!(stored(&db, "p-2", "a2"), "the step after it");
    assert!(!stored(&db, "p-1", "c1"), "the raced step stored nothing");
    assert!(stored(&db, "p-1", "b0") && stored(&db, "p-1", "b1"));
}
