//! A server put back to before a change it acknowledged to a device that holds no cursor: the
//! device hands the change back, and one refused for what the server lost asks for a recovery.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

/// The phone's first connection: `a1` acknowledged (`Time`, `UploadAck`) and the connection
/// cut before any batch, so the phone holds no cursor; then the server is put back to before
/// `a1` (to `backup`). Nothing in the feed can tell the phone.
fn acknowledged_then_lost(phone: &Phone, server: &MemoryStore, backup: &MemoryStore) {
    phone.note("a1");
    sync_cut(phone, server, 2);
    assert!(Repo::new(phone.store.clone()).pending().unwrap().is_empty());
    server.restore_from(backup).unwrap();
}

fn everyone_holds_each_once(phone: &Phone, nurse: &Phone, server: &MemoryStore) {
    sync(nurse, server);
    for id in ["n1", "a1", "a2"] {
        assert_eq!(count_in(server, id), 1, "{id} on the server");
        assert_eq!(nurse.count(id), 1, "{id} on the nurse's phone");
        assert_eq!(phone.count(id), 1, "{id} on the phone");
    }
}

#[test]
fn a_server_that_lost_an_acknowledged_change_gets_it_back_from_a_device_without_a_cursor() {
    let server = MemoryStore::new();
    let phone = Phone::new(author("anna", Role::Carer, "phone-a"));
    let nurse = Phone::new(author("nina", Role::Nurse, "phone-n"));
    nurse.note("n1");
    sync(&nurse, &server);
    let backup = server.deep_copy().unwrap();
    acknowledged_then_lost(&phone, &server, &backup);
    // a1 is not proven by a catch-up after it: it goes up again, first, and a2 after it.
    phone.note("a2");
    let (devents, sevents) = sync(&phone, &server);
    assert!(!closed(&devents), "{devents:?}");
    assert!(
        !sevents
            .iter()
            .any(|e| matches!(e, ServerEvent::Refused { .. })),
        "{sevents:?}"
    );
    everyone_holds_each_once(&phone, &nurse, &server);
    // Proven now: the next connection sends nothing again.
    let (_, sevents) = sync(&phone, &server);
    assert!(
        !sevents
            .iter()
            .any(|e| matches!(e, ServerEvent::Accepted { .. })),
        "{sevents:?}"
    );
}

#[test]
fn a_device_refused_for_what_the_server_lost_asks_for_a_recovery() {
    let server = MemoryStore::new();
    let phone = Phone::new(author("anna", Role::Carer, "phone-a"));
    let nurse = Phone::new(author("nina", Role::Nurse, "phone-n"));
    nurse.note("n1");
    sync(&nurse, &server);
    let backup = server.deep_copy().unwrap();
    acknowledged_then_lost(&phone, &server, &backup);
    // As a store from a build that kept no unproven changes would be.
    Repo::new(phone.store.clone())
        .store_mut()
        .set_meta("sync.unproven", &[])
        .unwrap();
    phone.note("a2");
    // a2 builds on a1, which the server lacks: refused, and the phone asks for a recovery.
    let (devents, _) = sync(&phone, &server);
    assert!(closed(&devents), "{devents:?}");
    let (devents, sevents) = sync(&phone, &server);
    assert!(!closed(&devents), "{devents:?}");
    assert!(
        sevents
            .iter()
            .any(|e| matches!(e, ServerEvent::Recovered { .. })),
        "{sevents:?}"
    );
    assert!(Repo::new(phone.store.clone()).pending().unwrap().is_empty());
    everyone_holds_each_once(&phone, &nurse, &server);
}
