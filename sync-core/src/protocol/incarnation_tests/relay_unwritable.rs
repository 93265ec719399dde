//! A restored server takes back, from a device that may no longer write the person's records,
//! another's change that only that device still holds, when the change's author vouches for it
//! (simulation seed 2791, all faults).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::protocol::wire::RefusalCode;

/// The nurse reads and writes the person's records; the carer only while assigned. Every
/// device's key is registered.
const SIGNED_ASSIGNED: Signing<Assigned> = Signing(ASSIGNED);
/// [`SIGNED_ASSIGNED`], the carer taken off the person.
const SIGNED_UNASSIGNED: Signing<Assigned> = Signing(UNASSIGNED);

/// The nurse writes `n1`, the carer receives it with the nurse's signature. The server and the
/// nurse's phone are both put back to before `n1`, and the carer is taken off the person: her
/// phone holds the only copy. Her recovery hands `n1` back; the nurse's signature vouches for
/// it and the nurse may write there, so the server takes it, though the carer may not write
/// there any more, and the nurse gets it back. Before, it was refused `NotPermitted` and
/// quarantined on the carer's phone, which had not written it, and the nurse's note was lost
/// to everyone else.
#[test]
fn a_vouched_change_is_taken_back_from_a_device_that_may_no_longer_write_there() {
    let (server, carer, nurse) = team();
    nurse.note("n0");
    sync_signed(&nurse, &server, &SIGNED_ASSIGNED);
    sync_signed(&carer, &server, &SIGNED_ASSIGNED);
    let server_backup = server.deep_copy().unwrap();
    let nurse_backup = nurse.store.deep_copy().unwrap();
    nurse.note("n1");
    sync_signed(&nurse, &server, &SIGNED_ASSIGNED);
    let (devents, _) = sync_signed(&carer, &server, &SIGNED_ASSIGNED);
    assert!(!closed(&devents), "{devents:?}");
    assert_eq!(carer.count("n1"), 1);
    let n1 = carer.heads();

    server.restore_from(&server_backup).unwrap();
    nurse.store.restore_from(&nurse_backup).unwrap();
    let (devents, sevents) = sync_signed(&carer, &server, &SIGNED_UNASSIGNED);
    assert!(recovered(&sevents), "{sevents:?}");
    let quarantined = carer.quarantined();
    assert!(
        !quarantined
            .iter()
            .any(|q| n1.contains(&q.change) && q.code == RefusalCode::NotPermitted),
        "the nurse's n1 is not the carer's to be refused: {quarantined:?} {devents:?}"
    );
    assert_eq!(count_in(&server, "n1"), 1, "{sevents:?}");
    for _ in 0..3 {
        sync_signed(&nurse, &server, &SIGNED_ASSIGNED);
    }
    assert_eq!(nurse.count("n1"), 1, "n1 back on the nurse's phone");
}
