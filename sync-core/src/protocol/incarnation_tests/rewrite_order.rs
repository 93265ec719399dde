//! Records taken back at different moments (at a reincarnation, then as forks) are written
//! again in an order that lets each name what it supersedes (simulation seeds 4584 and 9531,
//! all faults).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::model::records::{GoalStatus, Register, RegisterValue};

fn plan() -> DocumentId {
    DocumentId::care_plan(&patient())
}

fn goal(title: &str) -> RegisterValue {
    RegisterValue::Goal {
        title: title.into(),
        status: GoalStatus::Active,
    }
}

fn rid(id: &str) -> RecordId {
    RecordId::new(id).unwrap()
}

/// The nurse's goal revisions, each superseding the one before.
fn revise(phone: &Phone, id: &str) {
    Repo::new(phone.store.clone())
        .change(&plan(), &phone.author, NOW, |e| {
            e.update(rid(id), Register::Goal(rid("g1")), goal(id))
        })
        .unwrap();
}

fn revision_in(store: &MemoryStore, id: &str) -> bool {
    Repo::new(store.clone())
        .get(&plan())
        .unwrap()
        .revision(&rid(id))
        .is_some()
}

/// A copy of the nurse's store writes revision `c2` (acknowledged, proven), then `c3`
/// superseding it (pending). The server is put back to before `c2`, and the original writes a
/// note under `c2`'s write counter. The copy's recovery hands `c2` back: a fork, so the copy
/// goes on under a new incarnation, taking `c3` back (pending); handed back again, `c2` is
/// refused as a fork of its earlier incarnation and taken back too, after `c3`. Once caught up
/// both are written again: `c3` names `c2`, so `c2` must be written first. Before, the list
/// was written in the order taken back: `c3` was refused ("no revision c2", reported as
/// `RewriteRefused`) and lost.
#[test]
fn a_revision_taken_back_before_the_one_it_supersedes_is_written_again_after_it() {
    let server = MemoryStore::new();
    let first = Phone::new(author("nina", Role::Nurse, "phone-n"));
    Repo::new(first.store.clone())
        .change(&plan(), &first.author, NOW, |e| {
            e.create(rid("g1-v1"), Register::Goal(rid("g1")), goal("g1-v1"), None)
        })
        .unwrap();
    sync(&first, &server);
    let copy = Phone {
        author: first.author.clone(),
        store: first.store.deep_copy().unwrap(),
    };
    let backup = server.deep_copy().unwrap();
    revise(&copy, "c2");
    let (devents, _) = sync(&copy, &server);
    assert!(!closed(&devents), "{devents:?}");
    assert!(revision_in(&server, "c2"));
    // Put back: c2 is gone from the server; the original writes under its counter.
    server.restore_from(&backup).unwrap();
    first.note("x2");
    sync(&first, &server);
    revise(&copy, "c3");
    let mut devents = Vec::new();
    for _ in 0..4 {
        devents.extend(sync(&copy, &server).0);
    }
    assert!(
        !devents
            .iter()
            .any(|e| matches!(e, DeviceEvent::RewriteRefused { .. })),
        "{devents:?}"
    );
    assert!(Repo::new(copy.store.clone()).pending().unwrap().is_empty());
    sync(&first, &server);
    for id in ["c2", "c3"] {
        assert!(revision_in(&server, id), "{id} on the server");
        assert!(revision_in(&copy.store, id), "{id} on the copy");
        assert!(revision_in(&first.store, id), "{id} on the original");
    }
}
