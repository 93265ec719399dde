//! A restored server takes back, from a device that may no longer write the person's records,
//! another's change that only that device still holds, when the change's author vouches for it
//! (simulation seed 2791, all faults).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::protocol::Signer;
use crate::protocol::wire::RefusalCode;
use crate::signing::{DeviceKey, PublicKey};

fn key_of(device: &DeviceId) -> DeviceKey {
    let mut seed = [7u8; 32];
    for (i, b) in device.as_str().bytes().enumerate() {
        seed[i % 32] ^= b;
    }
    DeviceKey::from_seed(seed)
}

/// The nurse reads and writes the person's records; the carer only while assigned. Every
/// device's key is registered.
struct Signed {
    carer_reads: bool,
}

impl AccessPolicy for Signed {
    fn may_read(&self, peer: &Peer, _: &DocumentId) -> bool {
        peer.author.role == Role::Nurse || self.carer_reads
    }
    fn may_write(&self, peer: &Peer, doc: &DocumentId) -> bool {
        self.may_read(peer, doc)
    }
    fn readable_patients(&self, peer: &Peer) -> Vec<PatientId> {
        if self.may_read(peer, &journal()) {
            vec![patient()]
        } else {
            vec![]
        }
    }
    fn signing_key(&self, device: &DeviceId) -> Option<PublicKey> {
        Some(key_of(device).public())
    }
}

/// One connection of a signing device, run until neither side has anything to say.
fn sync_signed(
    phone: &Phone,
    server: &MemoryStore,
    policy: &Signed,
) -> (Vec<DeviceEvent>, Vec<ServerEvent>) {
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
            session.handle_bytes(&mut srepo, policy, &bytes, NOW);
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

/// The nurse writes `n1`, the carer receives it with the nurse's signature. The server and the
/// nurse's phone are both put back to before `n1`, and the carer is taken off the person: her
/// phone holds the only copy. Her recovery hands `n1` back; the nurse's signature vouches for
/// it and the nurse may write there, so the server takes it, though the carer may not write
/// there any more, and the nurse gets it back. Before, it was refused `NotPermitted` and
/// quarantined on the carer's phone, which had not written it, and the nurse's note was lost
/// to everyone else.
#[test]
fn a_vouched_change_is_taken_back_from_a_device_that_may_no_longer_write_there() {
    let assigned = Signed { carer_reads: true };
    let unassigned = Signed { carer_reads: false };
    let server = MemoryStore::new();
    let carer = Phone::new(author("anna", Role::Carer, "phone-a"));
    let nurse = Phone::new(author("nina", Role::Nurse, "phone-n"));
    nurse.note("n0");
    sync_signed(&nurse, &server, &assigned);
    sync_signed(&carer, &server, &assigned);
    let server_backup = server.deep_copy().unwrap();
    let nurse_backup = nurse.store.deep_copy().unwrap();
    nurse.note("n1");
    sync_signed(&nurse, &server, &assigned);
    let (devents, _) = sync_signed(&carer, &server, &assigned);
    assert!(!closed(&devents), "{devents:?}");
    assert_eq!(carer.count("n1"), 1);
    let n1: Vec<_> = Repo::new(carer.store.clone())
        .get(&journal())
        .unwrap()
        .heads();

    server.restore_from(&server_backup).unwrap();
    nurse.store.restore_from(&nurse_backup).unwrap();
    let (devents, sevents) = sync_signed(&carer, &server, &unassigned);
    assert!(
        sevents
            .iter()
            .any(|e| matches!(e, ServerEvent::Recovered { .. })),
        "{sevents:?}"
    );
    let quarantined = DeviceSession::quarantined(&Repo::new(carer.store.clone())).unwrap();
    assert!(
        !quarantined
            .iter()
            .any(|q| n1.contains(&q.change) && q.code == RefusalCode::NotPermitted),
        "the nurse's n1 is not the carer's to be refused: {quarantined:?} {devents:?}"
    );
    assert_eq!(count_in(&server, "n1"), 1, "{sevents:?}");
    for _ in 0..3 {
        sync_signed(&nurse, &server, &assigned);
    }
    assert_eq!(nurse.count("n1"), 1, "n1 back on the nurse's phone");
}
