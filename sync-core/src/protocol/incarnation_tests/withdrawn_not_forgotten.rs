//! A server put back to before a change a device holds, acknowledged and proven, whose author
//! was taken off the person and told so, but has not forgotten the person yet (a change of
//! theirs was still on its way up): the recovery asks about that person too, so the change goes
//! up and is refused, instead of being forgotten with the person and nobody told (simulation
//! seeds 6346 and 7347, all faults).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

/// The carer wrote `a1`, acknowledged and proven. She wrote `a2` and, uploading it, was told
/// she was taken off the person; the connection was cut before `a2`'s acknowledgement, so the
/// person waits to be forgotten until `a2` is answered. The server is put back to before `a1`.
/// Her next connection recovers: `a1`, which the server lost, must go up (refused
/// `NotPermitted`, audited) and stay quarantined on the phone, where she is told, before the
/// person is forgotten. Before, the recovery skipped a person waiting to be forgotten: `a1`
/// was neither handed back nor refused, and went with the person.
#[test]
fn a_change_a_restored_server_lost_is_refused_before_its_withdrawn_person_is_forgotten() {
    let WroteA1 {
        server,
        phone,
        backup,
        a1,
        devents,
        ..
    } = carer_wrote_a1(true);
    assert!(!closed(&devents), "{devents:?}");
    assert_eq!(count_in(&server, "a1"), 1);

    // Taken off the person while `a2` goes up: the withdrawal arrives, the acknowledgement
    // does not.
    phone.note("a2");
    let (devents, _) = sync_under(&phone, &server, 2, &UNASSIGNED);
    assert!(access_withdrawn(&devents), "{devents:?}");
    assert!(
        !purged(&devents),
        "a2 is on its way up: the person is not forgotten yet: {devents:?}"
    );

    server.restore_from(&backup).unwrap();
    let mut events = Vec::new();
    for _ in 0..3 {
        let (devents, sevents) = sync_under(&phone, &server, usize::MAX, &UNASSIGNED);
        events.extend(sevents);
        assert!(!closed(&devents), "{devents:?}");
    }
    assert!(recovered(&events), "{events:?}");
    let quarantined = phone.quarantined();
    assert!(
        not_permitted(&quarantined, &a1),
        "a1, lost by the server, is refused and quarantined on the phone: {quarantined:?} \
         {events:?}"
    );
    assert_eq!(count_in(&server, "a1"), 0);
}

/// The carer wrote `a1`, acknowledged and proven; the server is put back to a backup taken
/// after she was first sent the person, but before `a1`, and she is taken off the person. Her
/// next connection recovers, and the server, which remembers disclosing the person to her,
/// also tells her of the withdrawal, with nothing of hers waiting to go up. The recovery asks
/// about the person all the same: it is forgotten only at the next connection, after `a1` went
/// up and was refused `NotPermitted` and quarantined. Before, the withdrawal forgot the person
/// in the middle of the recovery, `a1` with it (simulation seed 7011, all faults).
#[test]
fn a_withdrawal_in_the_middle_of_a_recovery_forgets_nothing_before_it_is_refused() {
    let WroteA1 {
        server,
        phone,
        backup,
        a1,
        devents,
        ..
    } = carer_wrote_a1(false);
    assert!(!closed(&devents), "{devents:?}");
    assert_eq!(count_in(&server, "a1"), 1);

    server.restore_from(&backup).unwrap();
    let (devents, sevents) = sync_under(&phone, &server, usize::MAX, &UNASSIGNED);
    assert!(recovered(&sevents), "{sevents:?}");
    assert!(access_withdrawn(&devents), "{devents:?}");
    let quarantined = phone.quarantined();
    assert!(
        not_permitted(&quarantined, &a1),
        "a1, lost by the server, is refused and quarantined on the phone: {quarantined:?} \
         {devents:?}"
    );
    // The next connection forgets the person.
    let (devents, _) = sync_under(&phone, &server, usize::MAX, &UNASSIGNED);
    assert!(purged(&devents), "{devents:?}");
}

/// As above, with the recovery cut right after the withdrawal arrived: the next connection,
/// which resumes the recovery, does not forget the person before the recovery has asked about
/// them.
#[test]
fn a_recovery_cut_after_a_withdrawal_forgets_nothing_before_it_is_refused() {
    let WroteA1 {
        server,
        phone,
        backup,
        a1,
        ..
    } = carer_wrote_a1(false);
    assert_eq!(count_in(&server, "a1"), 1);

    server.restore_from(&backup).unwrap();
    // Time, Recover, Withdrawn: then the connection is cut.
    let (devents, _) = sync_under(&phone, &server, 3, &UNASSIGNED);
    assert!(access_withdrawn(&devents), "{devents:?}");
    let mut events = Vec::new();
    for _ in 0..2 {
        let (devents, _) = sync_under(&phone, &server, usize::MAX, &UNASSIGNED);
        events.extend(devents);
    }
    let quarantined = phone.quarantined();
    assert!(
        not_permitted(&quarantined, &a1),
        "a1, lost by the server, is refused and quarantined on the phone: {quarantined:?} \
         {events:?}"
    );
    assert!(purged(&events), "{events:?}");
}
