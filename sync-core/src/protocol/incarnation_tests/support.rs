//! What several incarnation tests share beyond the basics in `incarnation_tests.rs`: the team
//! (a server, a carer's phone and a nurse's), copies of a phone, the carer assigned to the
//! person or not, and signing devices (each device's key, derived from its id, known to the
//! server).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use automerge::ChangeHash;

use super::*;
use crate::protocol::QuarantinedChange;
use crate::protocol::wire::RefusalCode;
use crate::signing::{DeviceKey, PublicKey};

/// A server that holds nothing yet, the carer's phone (`anna`, `phone-a`) and the nurse's
/// (`nina`, `phone-n`).
pub(super) fn team() -> (MemoryStore, Phone, Phone) {
    (
        MemoryStore::new(),
        Phone::new(author("anna", Role::Carer, "phone-a")),
        Phone::new(author("nina", Role::Nurse, "phone-n")),
    )
}

/// The carer assigned to the person: she reads and writes their records.
pub(super) const ASSIGNED: Assigned = Assigned { carer_reads: true };
/// The carer taken off the person.
pub(super) const UNASSIGNED: Assigned = Assigned { carer_reads: false };

impl Phone {
    /// Another installation of this phone: its store copied as it is now.
    pub(super) fn copy(&self) -> Phone {
        Phone {
            author: self.author.clone(),
            store: self.store.deep_copy().unwrap(),
        }
    }

    /// The journal's heads on this phone.
    pub(super) fn heads(&self) -> Vec<ChangeHash> {
        Repo::new(self.store.clone())
            .get(&journal())
            .unwrap()
            .heads()
    }

    /// What this phone holds quarantined.
    pub(super) fn quarantined(&self) -> Vec<QuarantinedChange> {
        DeviceSession::quarantined(&Repo::new(self.store.clone())).unwrap()
    }
}

/// The key of a device, derived from its id.
pub(super) fn key_of(device: &DeviceId) -> DeviceKey {
    let mut seed = [7u8; 32];
    for (i, b) in device.as_str().bytes().enumerate() {
        seed[i % 32] ^= b;
    }
    DeviceKey::from_seed(seed)
}

/// `P`, with every device's key registered.
pub(super) struct Signing<P>(pub(super) P);

impl<P: AccessPolicy> AccessPolicy for Signing<P> {
    fn may_read(&self, peer: &Peer, doc: &DocumentId) -> bool {
        self.0.may_read(peer, doc)
    }
    fn may_write(&self, peer: &Peer, doc: &DocumentId) -> bool {
        self.0.may_write(peer, doc)
    }
    fn readable_patients(&self, peer: &Peer) -> Vec<PatientId> {
        self.0.readable_patients(peer)
    }
    fn write_horizon(&self, peer: &Peer, doc: &DocumentId) -> Option<u64> {
        self.0.write_horizon(peer, doc)
    }
    fn signing_key(&self, device: &DeviceId) -> Option<PublicKey> {
        Some(key_of(device).public())
    }
}

/// One connection of a signing device (it signs its uploads, the server knows its key), run
/// until neither side has anything to say.
pub(super) fn sync_signed<P: AccessPolicy>(
    phone: &Phone,
    server: &MemoryStore,
    policy: &Signing<P>,
) -> (Vec<DeviceEvent>, Vec<ServerEvent>) {
    sync_as(phone, server, usize::MAX, policy, true)
}

/// Whether the server told of a recovery.
pub(super) fn recovered(events: &[ServerEvent]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, ServerEvent::Recovered { .. }))
}

/// Whether the device was told it may no longer read a person.
pub(super) fn access_withdrawn(events: &[DeviceEvent]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, DeviceEvent::AccessWithdrawn { .. }))
}

/// Whether the device forgot a person.
pub(super) fn purged(events: &[DeviceEvent]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, DeviceEvent::Purged { .. }))
}

/// [`carer_wrote_a1`]'s team and what it left.
pub(super) struct WroteA1 {
    pub(super) server: MemoryStore,
    pub(super) phone: Phone,
    pub(super) nurse: Phone,
    /// The server before `a1`.
    pub(super) backup: MemoryStore,
    /// The journal's heads on the carer's phone once it wrote `a1`.
    pub(super) a1: Vec<ChangeHash>,
    /// The device's events of the connection that uploaded `a1`.
    pub(super) devents: Vec<DeviceEvent>,
}

/// The nurse writes `n1`; the carer, assigned, syncs and writes `a1`, which the server stores.
/// The server is backed up before `a1`: before the carer's phone first synced if
/// `backup_before_carer`, else right after.
pub(super) fn carer_wrote_a1(backup_before_carer: bool) -> WroteA1 {
    let (server, phone, nurse) = team();
    nurse.note("n1");
    sync_under(&nurse, &server, usize::MAX, &ASSIGNED);
    let mut backup = None;
    if backup_before_carer {
        backup = Some(server.deep_copy().unwrap());
    }
    sync_under(&phone, &server, usize::MAX, &ASSIGNED);
    let backup = backup.unwrap_or_else(|| server.deep_copy().unwrap());
    phone.note("a1");
    let a1 = phone.heads();
    let (devents, _) = sync_under(&phone, &server, usize::MAX, &ASSIGNED);
    WroteA1 {
        server,
        phone,
        nurse,
        backup,
        a1,
        devents,
    }
}

/// Whether one of `changes` of the journal is in `quarantined`, refused `NotPermitted`.
pub(super) fn not_permitted(quarantined: &[QuarantinedChange], changes: &[ChangeHash]) -> bool {
    quarantined.iter().any(|q| {
        q.doc == journal() && changes.contains(&q.change) && q.code == RefusalCode::NotPermitted
    })
}

/// Commits in the write-ahead log at `wal` since it last restarted (frames whose "database size
/// after commit" is set, under the log's current salts).
pub(super) fn commits(wal: &std::path::Path) -> usize {
    let b = std::fs::read(wal).unwrap_or_default();
    if b.len() < 32 {
        return 0;
    }
    let word = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let page = word(8) as usize;
    let salt = &b[16..24];
    let (mut n, mut at) = (0, 32);
    while at + 24 + page <= b.len() && &b[at + 8..at + 16] == salt {
        if word(at + 4) != 0 {
            n += 1;
        }
        at += 24 + page;
    }
    n
}
