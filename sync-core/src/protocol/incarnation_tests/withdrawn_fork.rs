//! A copy's change that a restored server lost, held by another device, while the original
//! wrote another change under the same actor and sequence number: the server withdraws the
//! copy's change from the relay once the copy has written its records again, and the relay
//! takes the original's (simulation seed 1868, all faults; 3220 for a relay holding the only
//! copy of the records).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::protocol::wire::{RefusalCode, WITHDRAWN_FORK_DETAIL};

fn heads(store: &MemoryStore) -> Vec<automerge::ChangeHash> {
    let mut h = Repo::new(store.clone()).get(&journal()).unwrap().heads();
    h.sort();
    h
}

fn withdrawn(sevents: &[ServerEvent]) -> bool {
    sevents.iter().any(|e| {
        matches!(
            e,
            ServerEvent::Refused { code: RefusalCode::Invalid, detail, .. }
                if detail.starts_with(WITHDRAWN_FORK_DETAIL)
        )
    })
}

/// The carer's phone and a copy of its store (one incarnation, one actor). The copy writes c1;
/// the server stores it and the nurse's phone receives it. The server is put back to before
/// c1, and the original writes p1 under the same actor and sequence number, which the server
/// stores. The nurse's phone, recovering, hands c1 back: no replica can hold it beside p1, but
/// nobody has written its record again yet (the nurse's phone may hold its only copy), so it
/// stays there. The copy, behind p1's write counter, goes on under a new incarnation and writes
/// c1's record again. Then the nurse's phone, sent p1, recovers again: c1 is refused as a
/// withdrawn fork, taken out, and p1 and c1's record written again come. Everyone ends with
/// both records once, and the same journal.
#[test]
fn a_fork_a_relay_holds_is_withdrawn_once_its_author_wrote_its_record_again() {
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

    // The nurse's phone recovers; c1's record is nowhere else: it stays.
    let (_, sevents) = sync(&nurse, &server);
    assert!(!withdrawn(&sevents), "{sevents:?}");
    assert_eq!(
        nurse.count("c1"),
        1,
        "c1 kept while its record is nowhere else"
    );

    // The copy goes on under a new incarnation and writes c1's record again.
    for _ in 0..3 {
        sync(&copy, &server);
    }
    assert_eq!(count_in(&server, "c1"), 1, "c1's record written again");

    // The nurse's phone, recovering again, has c1 withdrawn and takes p1 and c1 again.
    let mut sevents = Vec::new();
    for _ in 0..3 {
        sevents.extend(sync(&nurse, &server).1);
    }
    assert!(withdrawn(&sevents), "{sevents:?}");
    assert!(
        DeviceSession::quarantined(&Repo::new(nurse.store.clone()))
            .unwrap()
            .is_empty(),
        "nothing quarantined"
    );
    sync(&phone, &server);
    sync(&copy, &server);
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
