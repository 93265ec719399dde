//! Two installations of one incarnation that were in step at their hellos, forking later in a
//! connection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

/// A copy whose hello was in step writes, on its open connection, under the number the other
/// installation used meanwhile: that upload forks what the server holds, and is handled as a
/// fork at the hello (nothing of it stored, a new incarnation, the record written again).
#[test]
fn a_copy_that_forks_mid_connection_goes_on_under_a_new_incarnation_and_loses_nothing() {
    let server = MemoryStore::new();
    let first = Phone::new(author("anna", Role::Carer, "phone-a"));
    let nurse = Phone::new(author("nina", Role::Nurse, "phone-n"));
    first.note("a1");
    sync(&first, &server);
    let copy = Phone {
        author: first.author.clone(),
        store: first.store.deep_copy().unwrap(),
    };
    let mut crepo = Repo::new(copy.store.clone());
    let mut srepo = Repo::new(server.clone());
    let mut device = DeviceSession::new(DeviceConfig::default());
    let mut session = ServerSession::new(
        Peer {
            author: copy.author.clone(),
        },
        ServerConfig::default(),
    );
    let mut pump = |device: &mut DeviceSession, crepo: &mut Repo<MemoryStore>| {
        for _ in 0..1000 {
            let mut moved = false;
            while let Some(bytes) = device.poll_transmit() {
                session.handle_bytes(&mut srepo, &Everyone, &bytes, NOW);
                moved = true;
            }
            while let Some(bytes) = session.poll_transmit() {
                device.handle_bytes(crepo, &bytes, NOW);
                moved = true;
            }
            if !moved {
                break;
            }
        }
        std::iter::from_fn(|| session.poll_event()).collect::<Vec<_>>()
    };
    device.connect(&mut crepo, NOW).unwrap();
    let sevents = pump(&mut device, &mut crepo);
    assert!(device.is_caught_up(), "{sevents:?}");
    // The first installation writes and uploads under the next number...
    first.note("x1");
    sync(&first, &server);
    // ...and the copy, still connected, writes under the same number.
    crepo
        .change(&journal(), &copy.author, NOW, |e| {
            e.record(
                RecordId::new("y1").unwrap(),
                EventBody::Note {
                    body: "note y1".into(),
                    corrects: None,
                },
            )
        })
        .unwrap();
    device.local_change(&mut crepo).unwrap();
    let sevents = pump(&mut device, &mut crepo);
    let devents: Vec<DeviceEvent> = std::iter::from_fn(|| device.poll_event()).collect();
    assert!(!closed(&devents), "{devents:?}");
    assert!(sevents.contains(&ServerEvent::Reincarnated { old: 0, new: 1 }));
    assert!(sevents.contains(&ServerEvent::CopyDetected {
        incarnation: 0,
        later: 1
    }));
    assert!(
        !sevents
            .iter()
            .any(|e| matches!(e, ServerEvent::Refused { .. })),
        "{sevents:?}"
    );
    assert!(devents.contains(&DeviceEvent::Reincarnated {
        incarnation: 1,
        records: 1
    }));
    assert!(devents.contains(&DeviceEvent::Rewritten { records: 1 }));
    assert!(crepo.pending().unwrap().is_empty());
    drop(crepo);
    // Reported once, when the first installation comes back too.
    first.note("x2");
    let (_, sevents) = sync(&first, &server);
    assert!(
        !sevents
            .iter()
            .any(|e| matches!(e, ServerEvent::CopyDetected { .. })),
        "{sevents:?}"
    );
    sync(&copy, &server);
    sync(&nurse, &server);
    for id in ["a1", "x1", "x2", "y1"] {
        for (who, p) in [("first", &first), ("copy", &copy), ("nurse", &nurse)] {
            assert_eq!(p.count(id), 1, "{id} on {who}");
        }
        assert_eq!(count_in(&server, id), 1, "{id} on the server");
    }
}

/// The server is put back and loses two notes the original had written and had acknowledged;
/// a copy made before them writes under their numbers. The original's notes are forks now,
/// and so is everything of its own built on them (acknowledged or pending): all of it is taken
/// back and written again, nothing stays quarantined or pending.
#[test]
fn own_changes_built_on_forked_ones_are_taken_back_with_them() {
    let server = MemoryStore::new();
    let first = Phone::new(author("anna", Role::Carer, "phone-a"));
    let nurse = Phone::new(author("nina", Role::Nurse, "phone-n"));
    first.note("a1");
    sync(&first, &server);
    let copy = Phone {
        author: first.author.clone(),
        store: first.store.deep_copy().unwrap(),
    };
    let backup = server.deep_copy().unwrap();
    first.note("a2");
    first.note("a3");
    sync(&first, &server);
    // The server is put back: a2 and a3 are gone from it. The copy writes under their numbers.
    let server = backup;
    copy.note("y2");
    sync(&copy, &server);
    // The original writes on top of what it holds, and syncs (more than once: a recovery, a
    // reincarnation and the rewrites may each take a connection).
    first.note("a4");
    for _ in 0..4 {
        sync(&first, &server);
    }
    sync(&copy, &server);
    sync(&nurse, &server);
    assert!(Repo::new(first.store.clone()).pending().unwrap().is_empty());
    for id in ["a1", "a2", "a3", "a4", "y2"] {
        assert_eq!(first.count(id), 1, "{id} on the first");
        assert_eq!(nurse.count(id), 1, "{id} on the nurse's phone");
        assert_eq!(count_in(&server, id), 1, "{id} on the server");
    }
}
