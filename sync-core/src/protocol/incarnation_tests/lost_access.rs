//! A server put back to before a change it had acknowledged and proven, whose author has lost
//! access since: the change is not kept silently on its author's device.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::protocol::wire::RefusalCode;

/// The carer wrote `a1` while assigned; the server acknowledged it, and the carer's cursor
/// proves it. The server is put back to before `a1`, and the carer is taken off the person.
/// The recovery sends nothing of the person's documents, but asks for what the phone holds
/// beyond the server (naming only heads the phone holds): `a1` goes up, is refused
/// `NotPermitted` (audited), and is quarantined on the phone, where its writer is told, instead
/// of being left on the phone with nobody told (simulation seed 342, `SIM_BACKWARDS=server`).
#[test]
fn a_change_a_restored_server_lost_after_its_author_lost_access_is_refused_not_kept_silently() {
    let server = MemoryStore::new();
    let phone = Phone::new(author("anna", Role::Carer, "phone-a"));
    let nurse = Phone::new(author("nina", Role::Nurse, "phone-n"));
    let unassigned = Assigned { carer_reads: false };
    let assigned = Assigned { carer_reads: true };
    nurse.note("n1");
    sync_under(&nurse, &server, usize::MAX, &assigned);
    let backup = server.deep_copy().unwrap();
    sync_under(&phone, &server, usize::MAX, &assigned);
    phone.note("a1");
    let a1 = Repo::new(phone.store.clone())
        .get(&journal())
        .unwrap()
        .heads();
    let (devents, _) = sync_under(&phone, &server, usize::MAX, &assigned);
    assert!(!closed(&devents), "{devents:?}");
    assert_eq!(count_in(&server, "a1"), 1);
    server.restore_from(&backup).unwrap();
    let (devents, sevents) = sync_under(&phone, &server, usize::MAX, &unassigned);
    assert!(
        sevents
            .iter()
            .any(|e| matches!(e, ServerEvent::Recovered { .. })),
        "{sevents:?}"
    );
    assert!(
        sevents.iter().any(|e| matches!(
            e,
            ServerEvent::Refused {
                code: RefusalCode::NotPermitted,
                ..
            }
        )),
        "the refusal is audited: {sevents:?}"
    );
    let quarantined = DeviceSession::quarantined(&Repo::new(phone.store.clone())).unwrap();
    assert!(
        quarantined.iter().any(|q| q.doc == journal()
            && a1.contains(&q.change)
            && q.code == RefusalCode::NotPermitted),
        "{quarantined:?} {devents:?}"
    );
    // n1, which the server holds, is not refused.
    let n1: Vec<_> = Repo::new(nurse.store.clone())
        .get(&journal())
        .unwrap()
        .heads();
    assert!(
        !quarantined.iter().any(|q| n1.contains(&q.change)),
        "{quarantined:?}"
    );
    assert_eq!(count_in(&server, "a1"), 0);
}
