//! A batch reports the flags its changes raised, and only those, also when the flags before
//! it come from the last batch's (`FlagMemo`) and the device changed the patient's documents
//! in between.
#![allow(clippy::unwrap_used)]

use automerge::ChangeHash;

use super::super::{DeviceConfig, DeviceEvent, DeviceSession};
use crate::ids::{
    Author, DeviceId, DocumentId, Month, PatientId, RecordId, Role, Timestamp, UserId,
};
use crate::model::records::{
    AdministrationOutcome, EventBody, MedicationOrder, Register, RegisterValue,
};
use crate::protocol::wire::{Cursor, DocChanges};
use crate::repo::Repo;
use crate::store::MemoryStore;

/// 2026-11-24 00:00 UTC.
const T0: i64 = 1_795_478_400_000;

fn p1() -> PatientId {
    PatientId::new("p-1").unwrap()
}

fn rid(s: &str) -> RecordId {
    RecordId::new(s).unwrap()
}

fn author(user: &str, role: Role) -> Author {
    Author::new(
        UserId::new(user).unwrap(),
        role,
        DeviceId::new(format!("{user}-phone")).unwrap(),
    )
}

fn meds() -> DocumentId {
    DocumentId::medication(&p1())
}

fn log() -> DocumentId {
    DocumentId::administrations(&p1(), Month::new(2026, 11).unwrap())
}

/// Writes `id`, a given dose of order `o-1` (version `r-1`) in `slot`, as `user`.
fn give(repo: &mut Repo<MemoryStore>, user: &str, id: &str, slot: &str) -> ChangeHash {
    repo.change(&log(), &author(user, Role::Carer), Timestamp(T0), |e| {
        e.record(
            rid(id),
            EventBody::Administration {
                order: rid("o-1"),
                order_revision: rid("r-1"),
                slot: slot.into(),
                outcome: AdministrationOutcome::Given,
                reason: None,
                occurred_at: Timestamp(T0),
            },
        )
    })
    .unwrap()
    .change
    .unwrap()
}

/// The server's side: another team's repo whose changes go to the device in batches.
struct Server {
    repo: Repo<MemoryStore>,
    position: u64,
}

impl Server {
    /// A batch of the changes `hashes` of `doc`.
    fn batch(&mut self, doc: &DocumentId, hashes: &[ChangeHash]) -> (Vec<DocChanges>, Cursor) {
        let d = self.repo.get(doc).unwrap();
        let changes: Vec<Vec<u8>> = hashes
            .iter()
            .map(|h| d.automerge_change(h).unwrap().raw_bytes().to_vec())
            .collect();
        let positions = (0..changes.len())
            .map(|_| {
                self.position += 1;
                self.position
            })
            .collect();
        let cursor = Cursor {
            epoch: [7; 16],
            position: self.position,
        };
        (
            vec![DocChanges {
                doc: doc.clone(),
                changes,
                positions,
            }],
            cursor,
        )
    }
}

/// Applies a batch and returns the flags it reported raised.
fn apply(
    session: &mut DeviceSession,
    device: &mut Repo<MemoryStore>,
    (docs, cursor): (Vec<DocChanges>, Cursor),
) -> Vec<String> {
    assert!(
        session
            .store_batch(device, docs, cursor, Vec::new(), None)
            .unwrap()
    );
    let mut raised = Vec::new();
    while let Some(e) = session.poll_event() {
        if let DeviceEvent::FlagRaised { flag, .. } = e {
            raised.push(flag);
        }
    }
    raised
}

#[test]
fn a_batch_reports_only_the_flags_it_raised_when_the_device_wrote_in_between() {
    let mut server = Server {
        repo: Repo::new(MemoryStore::new()),
        position: 0,
    };
    let order = server
        .repo
        .change(&meds(), &author("nina", Role::Nurse), Timestamp(T0), |e| {
            e.create(
                rid("r-1"),
                Register::Order(rid("o-1")),
                RegisterValue::Order(MedicationOrder {
                    drug: "Metoprolol".into(),
                    strength: "50 mg".into(),
                    dose: "1 tablet".into(),
                    route: "oral".into(),
                    times: vec!["08:00".into(), "20:00".into()],
                    start: "2026-11-01".into(),
                    stop: None,
                    delegated: true,
                    window_minutes: None,
                    prn: None,
                    valid_from: Timestamp(T0),
                }),
                None,
            )
        })
        .unwrap()
        .change
        .unwrap();
    let mut device = Repo::new(MemoryStore::new());
    let mut session = DeviceSession::new(DeviceConfig::default());

    // The order, then Bo's 08:00 dose: no flag.
    let b = server.batch(&meds(), &[order]);
    assert!(apply(&mut session, &mut device, b).is_empty());
    let bo = give(&mut server.repo, "bo", "a-bo", "2026-11-24T08:00");
    let b = server.batch(&log(), &[bo]);
    assert!(apply(&mut session, &mut device, b).is_empty());

    // This device's own user gives the 08:00 dose too: the double dose is raised here, by
    // the device's own write, not by a batch.
    device
        .change(&log(), &author("anna", Role::Carer), Timestamp(T0), |e| {
            e.record(
                rid("a-anna"),
                EventBody::Administration {
                    order: rid("o-1"),
                    order_revision: rid("r-1"),
                    slot: "2026-11-24T08:00".into(),
                    outcome: AdministrationOutcome::Given,
                    reason: None,
                    occurred_at: Timestamp(T0),
                },
            )
        })
        .unwrap();

    // Cilla's 20:00 dose arrives: it raises nothing (the 08:00 flag was open before it).
    let cilla = give(&mut server.repo, "cilla", "a-cilla", "2026-11-24T20:00");
    let b = server.batch(&log(), &[cilla]);
    assert_eq!(apply(&mut session, &mut device, b), Vec::<String>::new());

    // Dag's 20:00 dose arrives: it raises the 20:00 double dose, and only that.
    let dag = give(&mut server.repo, "dag", "a-dag", "2026-11-24T20:00");
    let b = server.batch(&log(), &[dag]);
    assert_eq!(
        apply(&mut session, &mut device, b),
        vec!["double-dose/o-1/2026-11-24T20:00".to_owned()]
    );
}
