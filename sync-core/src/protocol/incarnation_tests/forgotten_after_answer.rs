//! A person withdrawn from a carer is forgotten only once the server's answer to the hello
//! shows it was not put back: a server restored to before it stored her last notes answers
//! with a recovery, which hands them back first (simulation `state_goes_backwards` seeds 669
//! and 156: under the grace, a note written after the withdrawal was stored and acknowledged,
//! the server was put back, and the phone forgot the person as it connected again).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

/// Taken off the person, still allowed to upload what she wrote (the grace): the carer may no
/// longer read the person, her writes are taken.
struct Grace;

impl AccessPolicy for Grace {
    fn may_read(&self, peer: &Peer, _: &DocumentId) -> bool {
        peer.author.role == Role::Nurse
    }
    fn may_write(&self, _: &Peer, _: &DocumentId) -> bool {
        true
    }
    fn readable_patients(&self, peer: &Peer) -> Vec<PatientId> {
        if peer.author.role == Role::Nurse {
            vec![patient()]
        } else {
            vec![]
        }
    }
}

/// The carer writes `a2` and, uploading it, is told she was taken off the person; the server
/// takes `a2` under the grace and acknowledges it (so the person waited to be forgotten). The
/// server is then put back to before `a1` and `a2`, and the grace ends. Her next connection
/// must not forget the person before the server's answer: it answers with a recovery, and `a2`
/// goes up again (refused `NotPermitted`, quarantined on the phone, where she is told). Before,
/// the phone forgot the person at the start of the connection: `a2` was gone from both.
#[test]
fn a_note_taken_under_the_grace_survives_a_server_put_back_before_it() {
    let WroteA1 {
        server,
        phone,
        backup,
        ..
    } = carer_wrote_a1(false);
    phone.note("a2");
    let a2 = phone.heads();
    let (devents, _) = sync_under(&phone, &server, usize::MAX, &Grace);
    assert!(access_withdrawn(&devents), "{devents:?}");
    assert!(!closed(&devents), "{devents:?}");
    assert_eq!(count_in(&server, "a2"), 1, "a2 taken under the grace");

    server.restore_from(&backup).unwrap();
    let mut devents = Vec::new();
    let mut sevents = Vec::new();
    for _ in 0..3 {
        let (d, s) = sync_under(&phone, &server, usize::MAX, &UNASSIGNED);
        assert!(!closed(&d), "{d:?}");
        devents.extend(d);
        sevents.extend(s);
    }
    assert!(recovered(&sevents), "{sevents:?}");
    let quarantined = phone.quarantined();
    assert!(
        count_in(&server, "a2") == 1 || not_permitted(&quarantined, &a2),
        "a2 is on the server or refused and quarantined on the phone: {quarantined:?} \
         {devents:?}"
    );
    assert!(
        purged(&devents),
        "forgotten once it was asked about: {devents:?}"
    );
}
