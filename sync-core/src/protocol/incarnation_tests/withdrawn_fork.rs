//! A copy's change that a restored server lost, held by another device, while the original
//! wrote another change under the same actor and sequence number: the server withdraws the
//! copy's change from the relay, which then takes the original's, and the copy writes its
//! records again (simulation seed 1868, all faults).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::protocol::wire::{RefusalCode, WITHDRAWN_FORK_DETAIL};

fn heads(store: &MemoryStore) -> Vec<automerge::ChangeHash> {
    let mut h = Repo::new(store.clone()).get(&journal()).unwrap().heads();
    h.sort();
    h
}

/// The carer's phone and a copy of its store (one incarnation, one actor). The copy writes c1;
/// the server stores it and the nurse's phone receives it. The server is put back to before
/// c1, and the original writes p1 under the same actor and sequence number, which the server
/// stores. The nurse's phone, recovering, hands c1 back: no replica can hold it beside p1, so
/// the server refuses it as a withdrawn fork and the nurse's phone takes it out and takes p1.
/// The copy, behind p1's write counter, goes on under a new incarnation and writes c1's record
/// again. Everyone ends with both records once, and the same journal.
#[test]
fn a_fork_a_relay_holds_is_withdrawn_and_its_record_written_again_by_its_author() {
    let server = MemoryStore::new();
    let phone = Phone::new(author("anna", Role::Carer, "phone-a"));
    let nurse = Phone::new(author("nina", Role::Nurse, "phone-n"));
    sync(&phone, &server);
    sync(&nurse, &server);
    let copy = Phone {
        author: phone.author.clone(),
        store: phone.store.deep_copy().unwrap(),
    };
    let backup = server.deep_copy().unwrap();
    copy.note("c1");
    let (devents, _) = sync(&copy, &server);
    assert!(!closed(&devents), "{devents:?}");
    sync(&nurse, &server);
    assert_eq!(nurse.count("c1"), 1, "c1 reached the nurse's phone");

    // The server is put back; the original writes under c1's actor and sequence number.
    server.restore_from(&backup).unwrap();
    phone.note("p1");
    let (devents, _) = sync(&phone, &server);
    assert!(!closed(&devents), "{devents:?}");
    assert_eq!(count_in(&server, "p1"), 1);

    // The nurse's phone recovers: c1 is withdrawn from it, and p1 comes.
    let (devents, sevents) = sync(&nurse, &server);
    assert!(
        sevents.iter().any(|e| matches!(
            e,
            ServerEvent::Refused { code: RefusalCode::Invalid, detail, .. }
                if detail.starts_with(WITHDRAWN_FORK_DETAIL)
        )),
        "{sevents:?}"
    );
    assert!(!closed(&devents), "{devents:?}");
    assert_eq!(nurse.count("c1"), 0, "c1 withdrawn");
    assert_eq!(nurse.count("p1"), 1, "p1 taken");
    assert!(
        DeviceSession::quarantined(&Repo::new(nurse.store.clone()))
            .unwrap()
            .is_empty(),
        "nothing quarantined"
    );

    // The copy goes on under a new incarnation and writes c1's record again.
    for _ in 0..3 {
        sync(&copy, &server);
    }
    sync(&nurse, &server);
    sync(&phone, &server);
    for id in ["c1", "p1"] {
        assert_eq!(count_in(&server, id), 1, "{id} on the server");
        assert_eq!(nurse.count(id), 1, "{id} on the nurse's phone");
        assert_eq!(phone.count(id), 1, "{id} on the original");
        assert_eq!(copy.count(id), 1, "{id} on the copy");
    }
    assert_eq!(heads(&nurse.store), heads(&server));
    assert_eq!(heads(&phone.store), heads(&server));
    assert_eq!(heads(&copy.store), heads(&server));
}
