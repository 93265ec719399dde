//! A version-1 device (a plain `Hello`: no feed proof, so no recovery) whose server went back
//! and moved to a new feed epoch: it is told `Resync`, and Automerge's own sync (the fallback)
//! reconciles each document it holds. Its own notes the server lost go back up, one built on
//! another device's note the server lost too once that note is back from its author; nothing
//! of it is lost, nothing is stored twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

/// One connection of `phone` speaking version 1 (as [`sync`] does version 3).
fn sync_v1(phone: &Phone, server: &MemoryStore) -> (Vec<DeviceEvent>, Vec<ServerEvent>) {
    let mut drepo = Repo::new(phone.store.clone());
    let mut srepo = Repo::new(server.clone());
    let (_, mut session) = sessions(phone, false);
    let mut device = DeviceSession::new(DeviceConfig {
        tell_clock: false,
        ..DeviceConfig::default()
    });
    device.connect(&mut drepo, NOW).unwrap();
    pump(
        &mut device,
        &mut session,
        &mut drepo,
        &mut srepo,
        &Everyone,
        usize::MAX,
    );
    assert!(
        device.poll_transmit().is_none() && session.poll_transmit().is_none(),
        "the exchange ends"
    );
    let devents = std::iter::from_fn(|| device.poll_event()).collect();
    let sevents = std::iter::from_fn(|| session.poll_event()).collect();
    (devents, sevents)
}

#[test]
fn a_version_1_device_hands_back_its_notes_after_a_new_epoch() {
    let server = MemoryStore::new();
    let anna = Phone::new(author("anna", Role::Carer, "phone-a"));
    let bo = Phone::new(author("bo", Role::Carer, "phone-b"));
    let cy = Phone::new(author("cy", Role::Carer, "phone-c"));
    // Enough history before the backup that what bo hands back later is under a third of
    // the document: Automerge then sends it as changes (concatenated in one entry), not as
    // the whole document.
    for id in ["n1", "h1", "h2", "h3", "h4", "h5", "h6"] {
        anna.note(id);
    }
    sync(&anna, &server);
    sync_v1(&bo, &server);
    sync(&cy, &server);
    let backup = server.deep_copy().unwrap();
    // After the backup: anna's n2; bo's b1 (on n1 only), then b2, built on n2.
    anna.note("n2");
    sync(&anna, &server);
    bo.note("b1");
    sync_v1(&bo, &server);
    bo.note("b2");
    sync_v1(&bo, &server);
    // Put back, and a new epoch.
    server.restore_from(&backup).unwrap();
    server.clone().set_epoch([9; 16]).unwrap();
    cy.note("c1");
    sync(&cy, &server);
    // bo holds n2 (anna's: not its to hand back), b1 and b2.
    let (devents, sevents) = sync_v1(&bo, &server);
    assert!(!closed(&devents), "{devents:?} {sevents:?}");
    assert_eq!(count_in(&server, "b1"), 1, "b1 is back on the server");
    assert_eq!(
        count_in(&server, "n2"),
        0,
        "not from a device that did not write it"
    );
    assert!(bo.count("c1") == 1);
    // anna recovers: n2 is back; bo's next connection hands b2 back.
    sync(&anna, &server);
    let (devents, _) = sync_v1(&bo, &server);
    assert!(!closed(&devents), "{devents:?}");
    sync(&cy, &server);
    sync(&anna, &server);
    for id in ["n1", "h6", "n2", "b1", "b2", "c1"] {
        assert_eq!(count_in(&server, id), 1, "{id} on the server");
        for phone in [&anna, &bo, &cy] {
            assert_eq!(phone.count(id), 1, "{id} on {:?}", phone.author.user);
        }
    }
}
