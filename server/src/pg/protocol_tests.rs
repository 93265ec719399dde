//! The real protocol over the PostgreSQL store: `sync-core`'s `ServerSession` on a
//! `Repo<PgStore>`, phones on in-memory stores, in process. Two "nodes" (each a repo on a
//! connection of its own) share one database: what one stores, the other's feed serves.
//!
//! Each sync opens its node's repo afresh, so no node caches a document another node changed:
//! keeping cached copies right across nodes is a later slice (see ARCHITECTURE.md, Many nodes).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sync_core::model::EventBody;
use sync_core::protocol::{
    AccessPolicy, DeviceConfig, DeviceEvent, DeviceSession, Peer, ServerConfig, ServerSession,
};
use sync_core::repo::Repo;
use sync_core::store::{MemoryStore, Store};
use sync_core::{
    Author, DeviceId, DocumentId, Month, PatientId, RecordId, Role, Timestamp, UserId,
};

use super::testing::TestDatabase;

const NOW: Timestamp = Timestamp(1_795_000_000_000);

struct Everyone;

impl AccessPolicy for Everyone {
    fn may_read(&self, _: &Peer, _: &DocumentId) -> bool {
        true
    }
    fn may_write(&self, _: &Peer, _: &DocumentId) -> bool {
        true
    }
    fn readable_patients(&self, _: &Peer) -> Vec<PatientId> {
        vec![patient()]
    }
}

fn patient() -> PatientId {
    PatientId::new("p-1").unwrap()
}

fn journal() -> DocumentId {
    DocumentId::journal(&patient(), Month::new(2026, 11).unwrap())
}

struct Phone {
    author: Author,
    store: MemoryStore,
}

impl Phone {
    fn new(user: &str, role: Role, device: &str) -> Self {
        Self {
            author: Author::new(
                UserId::new(user).unwrap(),
                role,
                DeviceId::new(device).unwrap(),
            ),
            store: MemoryStore::new(),
        }
    }

    fn note(&self, id: &str) {
        let mut repo = Repo::new(self.store.clone());
        repo.change(&journal(), &self.author, NOW, |e| {
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

    fn has(&self, id: &str) -> bool {
        let mut repo = Repo::new(self.store.clone());
        repo.get(&journal())
            .map(|d| d.event(&RecordId::new(id).unwrap()).is_some())
            .unwrap_or(false)
    }

    /// One connection to `node`: messages both ways until neither side has anything to say.
    fn sync<S: Store>(&self, node: S) -> Vec<DeviceEvent> {
        let mut drepo = Repo::new(self.store.clone());
        let mut srepo = Repo::new(node);
        let mut device = DeviceSession::new(DeviceConfig::default());
        let peer = Peer {
            author: self.author.clone(),
        };
        let mut session = ServerSession::new(peer, ServerConfig::default());
        device.connect(&mut drepo, NOW).unwrap();
        for _ in 0..1000 {
            let mut moved = false;
            while let Some(bytes) = device.poll_transmit() {
                session.handle_bytes(&mut srepo, &Everyone, &bytes, NOW);
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
        std::iter::from_fn(|| device.poll_event()).collect()
    }
}

fn closed(events: &[DeviceEvent]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, DeviceEvent::Closed { .. }))
}

#[test]
fn phones_on_two_nodes_of_one_database_see_each_others_notes() {
    let db = TestDatabase::new();
    let carer = Phone::new("anna", Role::Carer, "phone-a");
    let nurse = Phone::new("nina", Role::Nurse, "phone-n");
    carer.note("a1");
    nurse.note("n1");

    // The carer on node 1, the nurse on node 2, then each on the other node.
    for (phone, node) in [
        (&carer, 1),
        (&nurse, 2),
        (&carer, 1),
        (&nurse, 2),
        (&carer, 2),
    ] {
        let events = phone.sync(db.open());
        assert!(!closed(&events), "node {node}: {events:?}");
    }
    for phone in [&carer, &nurse] {
        assert!(phone.has("a1") && phone.has("n1"));
    }
    // Written on a phone after moving nodes: it reaches the other phone through the other node.
    carer.note("a2");
    assert!(!closed(&carer.sync(db.open())));
    assert!(!closed(&nurse.sync(db.open())));
    assert!(nurse.has("a2"));

    // The server's feed holds every change once, in dense positions.
    let store = db.open();
    let feed = store.feed_after(0, 1000).unwrap();
    let seqs: Vec<u64> = feed.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=feed.len() as u64).collect::<Vec<_>>());
    assert_eq!(store.feed_head().unwrap(), feed.len() as u64);
}
