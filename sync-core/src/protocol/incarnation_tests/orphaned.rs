//! Another device's change that a restored server lost, handed back by a relay after the
//! author's other installation wrote under the same numbers (the recovery seeds of the
//! simulation: 3007, and 2568, 3220, 3936, 6960, 7749, 7865, 8001, 8011, 9237).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

/// Everyone reads and writes everything; the server knows every device's key.
const SIGNING: Signing<Everyone> = Signing(Everyone);

/// Syncs until the session ends without closing itself (a device that closed to recover
/// connects again, as an app does), at most a few times.
fn sync_settled(phone: &Phone, server: &MemoryStore) -> Vec<DeviceEvent> {
    let mut all = Vec::new();
    for _ in 0..4 {
        let (devents, _) = sync_signed(phone, server, &SIGNING);
        let again = closed(&devents);
        all.extend(devents);
        if !again {
            break;
        }
    }
    all
}

/// The carer's phone is copied; the copy writes `c1` and syncs, and the nurse's phone receives
/// it. The server is put back to a backup from before `c1`; the original phone, under the same
/// incarnation, writes `a1` under the same sequence number and write counter, and the server
/// stores it. The nurse's phone, recovering with the restored server, hands `c1` back: the
/// server cannot store it beside `a1`. The nurse's phone must take it out (and receive `a1`),
/// not keep it quarantined for ever; the carer's phone writes `c1`'s record again, so that it
/// reaches everyone, once.
#[test]
fn a_handed_back_change_forking_its_authors_history_is_written_again_by_its_author() {
    let (server, phone, nurse) = team();
    nurse.note("n1");
    sync_signed(&nurse, &server, &SIGNING);
    sync_signed(&phone, &server, &SIGNING);
    let server_backup = server.deep_copy().unwrap();
    let copy = phone.copy();
    copy.note("c1");
    let (devents, sevents) = sync_signed(&copy, &server, &SIGNING);
    let (ndevents, _) = sync_signed(&nurse, &server, &SIGNING);
    assert_eq!(nurse.count("c1"), 1, "{devents:?} {sevents:?} {ndevents:?}");

    server.restore_from(&server_backup).unwrap();
    phone.note("a1");
    let (devents, sevents) = sync_signed(&phone, &server, &SIGNING);
    assert!(!closed(&devents), "{devents:?}");
    assert_eq!(count_in(&server, "a1"), 1, "{sevents:?}");

    // The nurse's phone recovers: `c1` is refused as a fork of its author's history, and
    // taken out; `a1` comes in its place.
    let devents = sync_settled(&nurse, &server);
    assert!(
        nurse.quarantined().is_empty(),
        "nothing stays quarantined: {devents:?}"
    );
    assert_eq!(nurse.count("a1"), 1, "{devents:?}");

    // The carer's phone is given `c1` back and writes its record again.
    let devents = sync_settled(&phone, &server);
    assert!(
        devents.contains(&DeviceEvent::Rewritten { records: 1 }),
        "{devents:?}"
    );
    // The copy is behind what the server holds of its incarnation: it goes on under a new
    // one, and does not write `c1` a second time.
    sync_settled(&copy, &server);
    sync_settled(&nurse, &server);
    sync_settled(&phone, &server);
    for id in ["n1", "a1", "c1"] {
        assert_eq!(count_in(&server, id), 1, "{id} on the server");
        assert_eq!(nurse.count(id), 1, "{id} on the nurse's phone");
        assert_eq!(phone.count(id), 1, "{id} on the carer's phone");
        assert_eq!(copy.count(id), 1, "{id} on the copy");
    }
}
