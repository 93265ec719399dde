//! A restored phone whose hello carries upload 0 and whose next uploads are written right
//! behind it, before the server has answered (the window of 4; with early frames, before even
//! the WebSocket upgrade is answered): the server answers `Reincarnate` having stored nothing
//! of them, and the device sends them again under its new incarnation. Nothing is lost, and
//! nothing is stored twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

/// One connection of `phone` (uploads of one change each) in which everything the device has
/// to say goes before the server reads any of it, as over a long link. Returns the device's
/// events, the server's, and how many frames the device sent before the server's first.
fn sync_pipelined(
    phone: &Phone,
    server: &MemoryStore,
) -> (Vec<DeviceEvent>, Vec<ServerEvent>, usize) {
    let mut drepo = Repo::new(phone.store.clone());
    let mut srepo = Repo::new(server.clone());
    let mut device = DeviceSession::new(DeviceConfig {
        upload_bytes: 1,
        ..DeviceConfig::default()
    });
    let mut session = ServerSession::new(
        Peer {
            author: phone.author.clone(),
        },
        ServerConfig::default(),
    );
    device.connect(&mut drepo, NOW).unwrap();
    let early: Vec<Vec<u8>> = std::iter::from_fn(|| device.poll_transmit()).collect();
    let before_answer = early.len();
    for bytes in &early {
        session.handle_bytes(&mut srepo, &Everyone, bytes, NOW);
    }
    for _ in 0..1000 {
        let mut moved = false;
        while let Some(bytes) = session.poll_transmit() {
            device.handle_bytes(&mut drepo, &bytes, NOW);
            moved = true;
        }
        while let Some(bytes) = device.poll_transmit() {
            session.handle_bytes(&mut srepo, &Everyone, &bytes, NOW);
            moved = true;
        }
        if !moved {
            break;
        }
    }
    let devents = std::iter::from_fn(|| device.poll_event()).collect();
    let sevents = std::iter::from_fn(|| session.poll_event()).collect();
    (devents, sevents, before_answer)
}

#[test]
fn uploads_written_behind_a_hello_answered_with_reincarnate_are_sent_again_once() {
    let server = MemoryStore::new();
    let phone = Phone::new(author("anna", Role::Carer, "phone-a"));
    let nurse = Phone::new(author("nina", Role::Nurse, "phone-n"));
    phone.note("a1");
    sync(&phone, &server);
    let backup = phone.store.deep_copy().unwrap();
    phone.note("b1");
    sync(&phone, &server);

    // The backup comes back; the carer writes five notes, which go in five uploads.
    let phone = Phone {
        author: phone.author.clone(),
        store: backup,
    };
    for id in ["c1", "c2", "c3", "c4", "c5"] {
        phone.note(id);
    }
    let (devents, sevents, before_answer) = sync_pipelined(&phone, &server);
    // The hello and three uploads behind it (the window of 4) went before any answer.
    assert_eq!(before_answer, 4, "{devents:?}");
    assert!(!closed(&devents), "{devents:?}");
    assert!(
        sevents.contains(&ServerEvent::Reincarnated { old: 0, new: 1 }),
        "{sevents:?}"
    );
    assert!(
        !sevents
            .iter()
            .any(|e| matches!(e, ServerEvent::Refused { .. })),
        "{sevents:?}"
    );
    assert!(Repo::new(phone.store.clone()).pending().unwrap().is_empty());
    sync(&nurse, &server);
    for id in ["a1", "b1", "c1", "c2", "c3", "c4", "c5"] {
        assert_eq!(phone.count(id), 1, "{id} on the phone");
        assert_eq!(count_in(&server, id), 1, "{id} on the server");
        assert_eq!(nurse.count(id), 1, "{id} on the nurse's phone");
    }
}
