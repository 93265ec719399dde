//! A server put back to before changes a device holds, acknowledged and proven: one whose
//! author has lost access since is refused and quarantined, not kept silently; a device the
//! server tells to reincarnate hands back what the server lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::ids::Month;
use crate::protocol::wire::RefusalCode;

/// The carer wrote `a1` while assigned; the server acknowledged it, and the carer's cursor
/// proves it. The server is put back to before `a1`, and the carer is taken off the person.
/// The recovery sends nothing of the person's documents, but asks for what the phone holds
/// beyond the server (naming only heads the phone holds): `a1` goes up, is refused
/// `NotPermitted` (audited), and is quarantined on the phone, where its writer is told, instead
/// of being left on the phone with nobody told (simulation seed 342, `SIM_BACKWARDS=server`).
#[test]
fn a_change_a_restored_server_lost_after_its_author_lost_access_is_refused_not_kept_silently() {
    let WroteA1 {
        server,
        phone,
        nurse,
        backup,
        a1,
        devents,
    } = carer_wrote_a1(true);
    assert!(!closed(&devents), "{devents:?}");
    assert_eq!(count_in(&server, "a1"), 1);
    server.restore_from(&backup).unwrap();
    let (devents, sevents) = sync_under(&phone, &server, usize::MAX, &UNASSIGNED);
    assert!(recovered(&sevents), "{sevents:?}");
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
    let quarantined = phone.quarantined();
    assert!(
        not_permitted(&quarantined, &a1),
        "{quarantined:?} {devents:?}"
    );
    // n1, which the server holds, is not refused.
    let n1 = nurse.heads();
    assert!(
        !quarantined.iter().any(|q| n1.contains(&q.change)),
        "{quarantined:?}"
    );
    assert_eq!(count_in(&server, "a1"), 0);
}

/// A note in December's journal (another document than [`journal`]'s, so its Automerge
/// sequence numbers are its own).
pub(super) fn december_note(phone: &Phone, id: &str) {
    let mut repo = Repo::new(phone.store.clone());
    let december = DocumentId::journal(&patient(), Month::new(2026, 12).unwrap());
    repo.change(&december, &phone.author, NOW, |e| {
        e.record(
            RecordId::new(id).unwrap(),
            EventBody::Note {
                body: format!("note {id}"),
                corrects: None,
            },
        )
    })
    .unwrap();
}

/// A store the server tells to reincarnate may hold what the server lost: here a copy wrote
/// `c1`, acknowledged and proven on it, then the server was put back to before `c1`, and the
/// original wrote more under their shared incarnation. The copy, behind the server's count of
/// that incarnation, goes on under a new one; its catch-up starts over as a recovery (not from
/// nothing), which hands `c1` back (simulation seed 669). Before, `c1`, proven, was neither
/// taken back nor handed back, and no other store held it.
#[test]
fn a_reincarnated_store_hands_back_what_a_restored_server_lost() {
    let (server, first, nurse) = team();
    first.note("a1");
    sync(&first, &server);
    let copy = first.copy();
    let backup = server.deep_copy().unwrap();
    copy.note("c1");
    let (devents, _) = sync(&copy, &server);
    assert!(!closed(&devents), "{devents:?}");
    assert_eq!(count_in(&server, "c1"), 1);
    server.restore_from(&backup).unwrap();
    december_note(&first, "x1");
    december_note(&first, "x2");
    sync(&first, &server);
    let (_, sevents) = sync(&copy, &server);
    assert!(
        sevents
            .iter()
            .any(|e| matches!(e, ServerEvent::Reincarnated { .. })),
        "{sevents:?}"
    );
    // Whatever the connection needed (a fork taken back and written again), c1 is back.
    sync(&copy, &server);
    assert_eq!(count_in(&server, "c1"), 1, "c1 on the server");
    sync(&first, &server);
    sync(&nurse, &server);
    for (who, phone) in [("first", &first), ("copy", &copy), ("nurse", &nurse)] {
        for id in ["a1", "c1"] {
            assert_eq!(phone.count(id), 1, "{id} on the {who}");
        }
    }
}
