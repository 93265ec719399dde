//! The server's per-installation state: what one installation of a device holds is not what
//! another (a copy, under another incarnation) holds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

/// A copy and its original, under two incarnations, both forget a person withdrawn from their
/// user. Access comes back: the original is sent the person's whole history and holds them
/// completely again; the copy, which forgot them too, must be sent it as well.
#[test]
fn a_copy_that_forgot_a_withdrawn_person_is_sent_their_history_when_access_comes_back() {
    let (server, first, nurse) = team();
    first.note("a1");
    sync(&first, &server);
    let copy = first.copy();
    first.note("x1");
    sync(&first, &server);
    // The copy is behind what the server holds from incarnation 0: it goes on under 1.
    let (_, sevents) = sync(&copy, &server);
    assert!(sevents.contains(&ServerEvent::Reincarnated { old: 0, new: 1 }));
    assert_eq!(copy.count("x1"), 1);

    // The carer loses access: both installations are told and forget the person.
    sync_under(&first, &server, usize::MAX, &UNASSIGNED);
    let (devents, sevents) = sync_under(&copy, &server, usize::MAX, &UNASSIGNED);
    assert!(
        devents.contains(&DeviceEvent::Purged { patient: patient() }),
        "{devents:?} {sevents:?}"
    );
    assert_eq!(copy.count("x1"), 0, "forgotten");
    // The nurse writes meanwhile.
    nurse.note("n1");
    sync_under(&nurse, &server, usize::MAX, &UNASSIGNED);

    // Access comes back: the original first, then the copy.
    sync_under(&first, &server, usize::MAX, &ASSIGNED);
    sync_under(&copy, &server, usize::MAX, &ASSIGNED);
    for id in ["a1", "x1", "n1"] {
        assert_eq!(first.count(id), 1, "{id} on the first");
        assert_eq!(copy.count(id), 1, "{id} on the copy");
    }
}

/// A store copied while a withdrawal waits for its pending change: both installations, under
/// one incarnation, forget the person at their next connection. The original gets the history
/// back when access returns, and the server notes that the incarnation holds them completely;
/// the copy, which forgot them afterwards, says so in its hello and is sent the history too.
#[test]
fn a_copy_under_the_same_incarnation_that_forgot_a_person_later_is_sent_their_history() {
    let (server, first, nurse) = team();
    first.note("a1");
    sync(&first, &server);
    // Access is withdrawn while a note waits: refused, and the person is forgotten only at the
    // next connection.
    first.note("late");
    sync_under(&first, &server, usize::MAX, &UNASSIGNED);
    assert_eq!(first.count("a1"), 1, "not forgotten yet");
    let copy = first.copy();
    nurse.note("n1");
    sync_under(&nurse, &server, usize::MAX, &UNASSIGNED);

    let (_, sevents) = sync_under(&first, &server, usize::MAX, &ASSIGNED);
    assert!(
        !sevents.iter().any(|e| matches!(
            e,
            ServerEvent::Reincarnated { .. } | ServerEvent::CopyDetected { .. }
        )),
        "{sevents:?}"
    );
    let (devents, _) = sync_under(&copy, &server, usize::MAX, &ASSIGNED);
    assert!(purged(&devents), "{devents:?}");
    for id in ["a1", "n1"] {
        assert_eq!(first.count(id), 1, "{id} on the first");
        assert_eq!(copy.count(id), 1, "{id} on the copy");
    }
}

/// Two installations of one incarnation, in step at their hellos: what the copy writes while
/// the original is connected is its actor's, but not the original's to hold; it is sent to the
/// original like anyone else's change.
#[test]
fn a_change_a_copy_writes_under_the_shared_incarnation_reaches_the_connected_original() {
    let server = MemoryStore::new();
    let first = Phone::new(author("anna", Role::Carer, "phone-a"));
    first.note("a1");
    sync(&first, &server);
    let copy = first.copy();
    // The original connects and stays connected.
    let mut frepo = Repo::new(first.store.clone());
    let mut srepo = Repo::new(server.clone());
    let (mut device, mut session) = sessions(&first, false);
    device.connect(&mut frepo, NOW).unwrap();
    let mut exchange =
        |device: &mut DeviceSession, session: &mut ServerSession, srepo: &mut Repo<MemoryStore>| {
            pump(device, session, &mut frepo, srepo, &Everyone, usize::MAX);
        };
    exchange(&mut device, &mut session, &mut srepo);
    assert!(device.is_caught_up());
    // The copy writes under the next number of the shared incarnation, and uploads it.
    copy.note("y1");
    let (_, sevents) = sync(&copy, &server);
    assert!(
        sevents
            .iter()
            .any(|e| matches!(e, ServerEvent::Accepted { .. })),
        "{sevents:?}"
    );
    session.feed_advanced(&mut srepo, &Everyone);
    exchange(&mut device, &mut session, &mut srepo);
    assert_eq!(first.count("y1"), 1, "y1 on the original");
}

/// Simulation seed 383 (`SIM_BACKWARDS=copy`): a store copied while its user may not read a
/// person. Access comes back; the original is sent the person's history and the server notes
/// that the incarnation holds them completely. The copy, in step with the original at its
/// hello (same incarnation, same cursor, nothing forgotten), was never sent that history: its
/// cursor is below where the history was completed, so it is sent it too.
#[test]
fn a_copy_under_the_same_incarnation_is_sent_the_history_its_original_was_backfilled_with() {
    let (server, first, nurse) = team();
    nurse.note("n1");
    sync_under(&nurse, &server, usize::MAX, &UNASSIGNED);
    // The carer's phone syncs while she is not assigned: a cursor, nothing of the person.
    sync_under(&first, &server, usize::MAX, &UNASSIGNED);
    assert_eq!(first.count("n1"), 0);
    let copy = first.copy();
    // Assigned again: the original is sent the person's history (and the nurse's next note).
    nurse.note("n2");
    sync_under(&nurse, &server, usize::MAX, &ASSIGNED);
    sync_under(&first, &server, usize::MAX, &ASSIGNED);
    assert_eq!(first.count("n1"), 1);
    let (_, sevents) = sync_under(&copy, &server, usize::MAX, &ASSIGNED);
    assert!(
        !sevents
            .iter()
            .any(|e| matches!(e, ServerEvent::Reincarnated { .. })),
        "in step at its hello: {sevents:?}"
    );
    for id in ["n1", "n2"] {
        assert_eq!(copy.count(id), 1, "{id} on the copy");
    }
}

/// Simulation seed 1122 (`SIM_BACKWARDS=device`): a phone without a cursor (its store put back
/// to before its first catch-up) forgets a person withdrawn from its user. Access comes back:
/// the catch-up from position 0 brings everyone's changes of theirs, and the server, which
/// never sends a device its own changes, must send this one the note it wrote, since it said
/// it forgot them.
#[test]
fn a_phone_without_a_cursor_that_forgot_a_person_gets_its_own_changes_of_theirs_back() {
    let (server, first, nurse) = team();
    nurse.note("n1");
    sync_under(&nurse, &server, usize::MAX, &ASSIGNED);
    first.note("a1");
    // The note reaches the server; nothing reaches the phone (no acknowledgement, no cursor).
    sync_under(&first, &server, 0, &ASSIGNED);
    // Withdrawn: the phone is told, and its note acknowledged, before the connection is cut
    // (three messages: the time, the withdrawal, the acknowledgement; no batch, no cursor).
    let (devents, _) = sync_under(&first, &server, 3, &UNASSIGNED);
    assert!(access_withdrawn(&devents), "{devents:?}");
    assert!(
        DeviceSession::load_state(&Repo::new(first.store.clone()))
            .unwrap()
            .cursor
            .is_none()
    );
    // Its acknowledgement no longer waits for proof (as a store from a build that kept no
    // unproven changes would be): nothing of the person holds the phone back from forgetting
    // them (an unproven `a1` would go up again first, `purge.rs`).
    Repo::new(first.store.clone())
        .store_mut()
        .set_meta("sync.unproven", &[])
        .unwrap();
    // Given back: the phone forgets the person as it connects, then catches up from 0.
    let (devents, _) = sync_under(&first, &server, usize::MAX, &ASSIGNED);
    assert!(purged(&devents), "{devents:?}");
    for id in ["n1", "a1"] {
        assert_eq!(first.count(id), 1, "{id} on the phone");
    }
}
