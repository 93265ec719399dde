//! An upload may name one document in several parts (an older device splits it; a hostile one
//! may split it into a part per change). Every check the server makes of a document's changes
//! (signatures verified, their coverage, forks) then ran once per part, each over every
//! signature of the document: a part per change with a signature per change made the work
//! grow with the square of the upload. It now runs once per document.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;

use super::*;
use crate::protocol::wire::{self, DeviceMessage, DocChanges, ServerMessage};
use crate::signing::PublicKey;

/// The nurse's notes the carer hands back, each in a part of its own with its own signature.
const NOTES: usize = 24;

/// [`Signing`]`<Assigned>`, counting the lookups of a device's key (one per signature
/// checked).
struct Counting<'a> {
    inner: Signing<Assigned>,
    lookups: &'a Cell<usize>,
}

impl AccessPolicy for Counting<'_> {
    fn may_read(&self, peer: &Peer, doc: &DocumentId) -> bool {
        self.inner.may_read(peer, doc)
    }
    fn may_write(&self, peer: &Peer, doc: &DocumentId) -> bool {
        self.inner.may_write(peer, doc)
    }
    fn readable_patients(&self, peer: &Peer) -> Vec<PatientId> {
        self.inner.readable_patients(peer)
    }
    fn write_horizon(&self, peer: &Peer, doc: &DocumentId) -> Option<u64> {
        self.inner.write_horizon(peer, doc)
    }
    fn signing_key(&self, device: &DeviceId) -> Option<PublicKey> {
        self.lookups.set(self.lookups.get() + 1);
        self.inner.signing_key(device)
    }
}

/// The nurse writes notes the server never got (her phone was lost before it synced); the
/// carer's phone holds them with the nurse's signatures and hands them back, one part per
/// note. Each is taken, as from one part, and each signature is checked a bounded number of
/// times: before, each part checked all of them, three times over (1,728 lookups for 24 notes).
#[test]
fn a_document_split_into_a_part_per_change_is_checked_once() {
    let (server, carer, nurse) = team();
    let signed = Signing(ASSIGNED);
    nurse.note("n0");
    sync_signed(&nurse, &server, &signed);
    sync_signed(&carer, &server, &signed);
    let held = carer.heads();
    for i in 0..NOTES {
        nurse.note(&format!("m{i}"));
    }
    let notes = Repo::new(nurse.store.clone())
        .get(&journal())
        .unwrap()
        .automerge()
        .get_changes(&held);
    assert_eq!(notes.len(), NOTES);
    let device = &nurse.author.device;
    let key = key_of(device);
    let docs: Vec<DocChanges> = notes
        .iter()
        .map(|c| DocChanges {
            doc: journal(),
            changes: vec![c.raw_bytes().to_vec()],
            positions: Vec::new(),
        })
        .collect();
    let signatures = notes
        .iter()
        .map(|c| key.sign_heads(device, &journal(), &[c.hash()]))
        .collect();

    // The carer's connection, serving after its hello.
    let lookups = Cell::new(0);
    let policy = Counting {
        inner: Signing(ASSIGNED),
        lookups: &lookups,
    };
    let Open {
        mut session,
        mut srepo,
        ..
    } = open(&carer, &server, usize::MAX, &policy, true);
    let before = lookups.get();
    let upload = wire::encode(&DeviceMessage::Upload3 {
        upload: 1,
        docs,
        signatures,
    })
    .unwrap();
    session.handle_bytes(&mut srepo, &policy, &upload, NOW);
    let answers: Vec<ServerMessage> = std::iter::from_fn(|| session.poll_transmit())
        .map(|b| wire::decode(&b).unwrap())
        .collect();
    assert!(
        answers
            .iter()
            .any(|m| matches!(m, ServerMessage::UploadAck { refused, .. } if refused.is_empty())),
        "every note taken: {answers:?}"
    );
    for i in 0..NOTES {
        assert_eq!(count_in(&server, &format!("m{i}")), 1, "m{i} on the server");
    }
    let checked = lookups.get() - before;
    assert!(
        checked <= 4 * NOTES,
        "{checked} key lookups for {NOTES} signatures"
    );
}
