//! A copy under the same incarnation as its original completes a person's backfill at the very
//! cursor its original still presents (the backfill brought no feed entry past it): once one of
//! the two is moved to a new incarnation, the one that stays is not taken to hold the person
//! (simulation seed 2148, `copy`; 3076 and 8751, all faults).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

/// The carer's phone, not assigned to the person, catches up (its cursor at the feed's head,
/// nothing of the person on it). Its store is copied. The carer is assigned: the copy connects
/// first and is backfilled the nurse's n1 at that same cursor, so the server holds the person as
/// complete on incarnation 0. The original writes a1 and syncs at the same cursor (the server
/// cannot tell it from the copy); the copy, behind a1's write counter, goes on under incarnation
/// 1. The original, still incarnation 0, must then be sent n1.
#[test]
fn the_installation_left_on_an_incarnation_is_backfilled_what_its_copy_was_sent() {
    let server = MemoryStore::new();
    let nurse = Phone::new(author("nina", Role::Nurse, "phone-n"));
    let phone = Phone::new(author("anna", Role::Carer, "phone-a"));
    let unassigned = Assigned { carer_reads: false };
    let assigned = Assigned { carer_reads: true };
    nurse.note("n1");
    sync_under(&nurse, &server, usize::MAX, &unassigned);
    sync_under(&phone, &server, usize::MAX, &unassigned);
    assert_eq!(phone.count("n1"), 0);
    let copy = Phone {
        author: phone.author.clone(),
        store: phone.store.deep_copy().unwrap(),
    };

    // The copy is backfilled the person's history at the cursor the original has too.
    let (devents, _) = sync_under(&copy, &server, usize::MAX, &assigned);
    assert!(!closed(&devents), "{devents:?}");
    assert_eq!(copy.count("n1"), 1, "n1 backfilled to the copy");

    // The original writes and syncs; the copy is behind what the server holds from
    // incarnation 0, and goes on under incarnation 1.
    phone.note("a1");
    sync_under(&phone, &server, usize::MAX, &assigned);
    let (devents, sevents) = sync_under(&copy, &server, usize::MAX, &assigned);
    assert!(!closed(&devents), "{devents:?}");
    assert!(
        sevents.contains(&ServerEvent::Reincarnated { old: 0, new: 1 }),
        "{sevents:?}"
    );

    // The original, left on incarnation 0, is not taken to hold what its copy was sent.
    let (devents, _) = sync_under(&phone, &server, usize::MAX, &assigned);
    assert!(!closed(&devents), "{devents:?}");
    sync_under(&copy, &server, usize::MAX, &assigned);
    for id in ["n1", "a1"] {
        assert_eq!(phone.count(id), 1, "{id} on the original");
        assert_eq!(copy.count(id), 1, "{id} on the copy");
        assert_eq!(count_in(&server, id), 1, "{id} on the server");
    }
}
