//! Another device's change that a restored server lost, handed back by a relay after the
//! author's other installation wrote under the same numbers (the recovery seeds of the
//! simulation: 3007, and 2568, 3220, 3936, 6960, 7749, 7865, 8001, 8011, 9237).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::protocol::Signer;
use crate::signing::{DeviceKey, PublicKey};

/// The key of a device, derived from its id.
fn key_of(device: &DeviceId) -> DeviceKey {
    let mut seed = [7u8; 32];
    for (i, b) in device.as_str().bytes().enumerate() {
        seed[i % 32] ^= b;
    }
    DeviceKey::from_seed(seed)
}

/// Everyone reads and writes everything; the server knows every device's key.
struct Signing;

impl AccessPolicy for Signing {
    fn may_read(&self, _: &Peer, _: &DocumentId) -> bool {
        true
    }
    fn may_write(&self, _: &Peer, _: &DocumentId) -> bool {
        true
    }
    fn readable_patients(&self, _: &Peer) -> Vec<PatientId> {
        vec![patient()]
    }
    fn signing_key(&self, device: &DeviceId) -> Option<PublicKey> {
        Some(key_of(device).public())
    }
}

/// One connection of a signing device, until neither side has anything to say.
fn sync_signed(phone: &Phone, server: &MemoryStore) -> (Vec<DeviceEvent>, Vec<ServerEvent>) {
    let mut drepo = Repo::new(phone.store.clone());
    let mut srepo = Repo::new(server.clone());
    let mut device = DeviceSession::new(DeviceConfig::default());
    device.set_signer(Some(Signer {
        device: phone.author.device.clone(),
        key: key_of(&phone.author.device),
    }));
    let mut session = ServerSession::new(
        Peer {
            author: phone.author.clone(),
        },
        ServerConfig::default(),
    );
    session.set_signing_key(Some(key_of(&phone.author.device).public()));
    device.connect(&mut drepo, NOW).unwrap();
    for _ in 0..1000 {
        let mut moved = false;
        while let Some(bytes) = device.poll_transmit() {
            session.handle_bytes(&mut srepo, &Signing, &bytes, NOW);
            moved = true;
        }
        while let Some(bytes) = session.poll_transmit() {
            device.handle_bytes(&mut drepo, &bytes, NOW);
            moved = true;
        }
        if !moved {
            break;
        }
    }
    let devents = std::iter::from_fn(|| device.poll_event()).collect();
    let sevents = std::iter::from_fn(|| session.poll_event()).collect();
    (devents, sevents)
}

/// Syncs until the session ends without closing itself (a device that closed to recover
/// connects again, as an app does), at most a few times.
fn sync_settled(phone: &Phone, server: &MemoryStore) -> Vec<DeviceEvent> {
    let mut all = Vec::new();
    for _ in 0..4 {
        let (devents, _) = sync_signed(phone, server);
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
    let server = MemoryStore::new();
    let phone = Phone::new(author("anna", Role::Carer, "phone-a"));
    let nurse = Phone::new(author("nina", Role::Nurse, "phone-n"));
    nurse.note("n1");
    sync_signed(&nurse, &server);
    sync_signed(&phone, &server);
    let server_backup = server.deep_copy().unwrap();
    let copy = Phone {
        author: phone.author.clone(),
        store: phone.store.deep_copy().unwrap(),
    };
    copy.note("c1");
    let (devents, sevents) = sync_signed(&copy, &server);
    let (ndevents, _) = sync_signed(&nurse, &server);
    assert_eq!(nurse.count("c1"), 1, "{devents:?} {sevents:?} {ndevents:?}");

    server.restore_from(&server_backup).unwrap();
    phone.note("a1");
    let (devents, sevents) = sync_signed(&phone, &server);
    assert!(!closed(&devents), "{devents:?}");
    assert_eq!(count_in(&server, "a1"), 1, "{sevents:?}");

    // The nurse's phone recovers: `c1` is refused as a fork of its author's history, and
    // taken out; `a1` comes in its place.
    let devents = sync_settled(&nurse, &server);
    assert!(
        DeviceSession::quarantined(&Repo::new(nurse.store.clone()))
            .unwrap()
            .is_empty(),
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
