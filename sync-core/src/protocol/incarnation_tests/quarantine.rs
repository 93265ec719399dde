//! What a device holds quarantined when a copy of its store forks it: a refused change sent
//! again in the recovery after a reincarnation and refused as a fork is taken back and leaves
//! the quarantine. (That one refused anew under another code keeps its first refusal, the
//! other half of seed 306's fix, needs a signed upload refused `BadSignature`: the simulation's
//! seed 306 covers it.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use super::server_put_back::december_note;
use super::*;

/// Everyone reads; nobody writes.
struct ReadOnly;

impl AccessPolicy for ReadOnly {
    fn may_read(&self, _: &Peer, _: &DocumentId) -> bool {
        true
    }
    fn may_write(&self, _: &Peer, _: &DocumentId) -> bool {
        false
    }
    fn readable_patients(&self, _: &Peer) -> Vec<PatientId> {
        vec![patient()]
    }
}

/// Without write access for a while, the carer writes `a1`: refused `NotPermitted`,
/// quarantined. Her phone is copied. With access again, she writes `a2` on top of `a1`:
/// refused as built on a refused change, quarantined too. The copy writes `y2` to December's
/// journal under `a2`'s write counter, and the server takes it. The original, told to
/// reincarnate, recovers and sends what it holds again: `a2` is refused as a fork now and
/// taken out of the document, its record written again under the new incarnation. Nothing
/// stays quarantined that the phone no longer holds, and no change is quarantined twice
/// (simulation seed 306, `SIM_BACKWARDS=copy`). Before, `a2`'s quarantine stayed after it was
/// taken back: a refusal of a change the phone does not hold, never settled.
#[test]
fn a_quarantined_change_taken_back_as_a_fork_leaves_the_quarantine() {
    let server = MemoryStore::new();
    let phone = Phone::new(author("anna", Role::Carer, "phone-a"));
    let nurse = Phone::new(author("nina", Role::Nurse, "phone-n"));
    let assigned = Assigned { carer_reads: true };
    nurse.note("n1");
    sync_under(&nurse, &server, usize::MAX, &assigned);
    sync_under(&phone, &server, usize::MAX, &assigned);
    phone.note("a1");
    sync_under(&phone, &server, usize::MAX, &ReadOnly);
    let copy = Phone {
        author: phone.author.clone(),
        store: phone.store.deep_copy().unwrap(),
    };
    phone.note("a2");
    sync_under(&phone, &server, usize::MAX, &assigned);
    let before = DeviceSession::quarantined(&Repo::new(phone.store.clone())).unwrap();
    assert_eq!(before.len(), 2, "{before:?}");
    december_note(&copy, "y2");
    sync_under(&copy, &server, usize::MAX, &assigned);
    let mut devents = Vec::new();
    for _ in 0..4 {
        devents.extend(sync_under(&phone, &server, usize::MAX, &assigned).0);
    }
    assert!(
        devents
            .iter()
            .any(|e| matches!(e, DeviceEvent::Reincarnated { .. })),
        "{devents:?}"
    );
    let mut repo = Repo::new(phone.store.clone());
    let quarantined = DeviceSession::quarantined(&repo).unwrap();
    let held: BTreeSet<_> = quarantined
        .iter()
        .map(|q| (q.doc.clone(), q.change))
        .collect();
    assert_eq!(
        held.len(),
        quarantined.len(),
        "quarantined once: {quarantined:?}"
    );
    for q in &quarantined {
        let doc = repo.get(&q.doc).unwrap();
        assert!(
            doc.has_change(&q.change),
            "a quarantined change is held: {q:?} {devents:?}"
        );
    }
    assert!(repo.pending().unwrap().is_empty());
    for id in ["n1", "a1", "a2"] {
        assert_eq!(phone.count(id), 1, "{id} on the phone");
    }
}
