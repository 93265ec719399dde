//! A write counter used by a refused change after a restore: the server keeps the change it
//! stored under the counter, and a copy of the restored store, which lacks that change, is sent
//! it (simulation seed 1923, all faults).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

/// October's journal of the person: no one may write there.
fn october() -> DocumentId {
    DocumentId::journal(&patient(), Month::new(2026, 10).unwrap())
}

/// Everyone reads and writes the person's records, except October's journal, closed to writes.
struct OctoberClosed;

impl AccessPolicy for OctoberClosed {
    fn may_read(&self, _: &Peer, _: &DocumentId) -> bool {
        true
    }
    fn may_write(&self, _: &Peer, doc: &DocumentId) -> bool {
        *doc != october()
    }
    fn readable_patients(&self, _: &Peer) -> Vec<PatientId> {
        vec![patient()]
    }
}

/// The phone writes a1 and a2 (counters 1 and 2 of incarnation 0) and syncs; it is put back to
/// a backup holding a1 only, and writes under counter 2 a note the server refuses. A copy of the
/// restored store is made before it syncs. The restored phone syncs first: it is reincarnated,
/// and its refused change under counter 2 must not replace a2 as the change the server holds
/// for that counter. The copy, under incarnation 0 and lacking a2, is behind: it goes on under
/// a new incarnation and receives a2, rather than being taken as holding it.
#[test]
fn a_refused_change_under_a_used_counter_does_not_hide_the_stored_one_from_a_copy() {
    let server = MemoryStore::new();
    let phone = Phone::new(author("anna", Role::Carer, "phone-a"));
    phone.note("a1");
    let backup = phone.store.deep_copy().unwrap();
    phone.note("a2");
    let (_, sevents) = sync_under(&phone, &server, usize::MAX, &OctoberClosed);
    assert!(
        !sevents
            .iter()
            .any(|e| matches!(e, ServerEvent::Refused { .. })),
        "{sevents:?}"
    );
    assert_eq!(count_in(&server, "a2"), 1);

    // Put back to the backup; a note into the closed month uses counter 2 again.
    let restored = Phone {
        author: phone.author.clone(),
        store: backup,
    };
    Repo::new(restored.store.clone())
        .change(&october(), &restored.author, NOW, |e| {
            e.record(
                RecordId::new("r1").unwrap(),
                EventBody::Note {
                    body: "note r1".into(),
                    corrects: None,
                },
            )
        })
        .unwrap();
    let copy = Phone {
        author: restored.author.clone(),
        store: restored.store.deep_copy().unwrap(),
    };
    let (devents, sevents) = sync_under(&restored, &server, usize::MAX, &OctoberClosed);
    assert!(!closed(&devents), "{devents:?}");
    assert!(sevents.contains(&ServerEvent::Reincarnated { old: 0, new: 1 }));
    assert!(
        sevents
            .iter()
            .any(|e| matches!(e, ServerEvent::Refused { .. })),
        "the note into the closed month is refused: {sevents:?}"
    );
    assert_eq!(restored.count("a2"), 1);

    // The copy: a second installation of incarnation 0, behind what the server holds from it.
    let (devents, sevents) = sync_under(&copy, &server, usize::MAX, &OctoberClosed);
    assert!(!closed(&devents), "{devents:?}");
    assert!(
        sevents.contains(&ServerEvent::CopyDetected {
            incarnation: 0,
            later: 1
        }),
        "{sevents:?}"
    );
    assert!(
        sevents.contains(&ServerEvent::Reincarnated { old: 0, new: 2 }),
        "the copy lacks a2, which the server holds under counter 2: {sevents:?}"
    );
    sync_under(&copy, &server, usize::MAX, &OctoberClosed);
    for id in ["a1", "a2"] {
        assert_eq!(copy.count(id), 1, "{id} on the copy");
        assert_eq!(restored.count(id), 1, "{id} on the restored phone");
        assert_eq!(count_in(&server, id), 1, "{id} on the server");
    }
}
