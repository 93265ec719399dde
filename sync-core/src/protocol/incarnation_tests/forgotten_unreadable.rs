//! A hello names the patients its device forgot (backfills to the end of the feed); the server
//! keeps them, per device, in its store, to send their history again. A device that named
//! made-up patients, 10,000 a hello, grew that record without end: only readable patients are
//! noted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use super::*;
use crate::protocol::wire::{self, Backfill, DeviceMessage, Hello};

#[test]
fn a_hello_notes_only_readable_forgotten_patients() {
    let (server, carer, nurse) = team();
    nurse.note("n0");
    sync(&nurse, &server);
    let mut made_up: Vec<PatientId> = (0..2_000)
        .map(|i| PatientId::new(format!("nobody-{i}")).unwrap())
        .collect();
    made_up.push(patient());
    let hello = wire::encode(&DeviceMessage::Hello(Hello {
        cursor: None,
        received: Vec::new(),
        priority: Vec::new(),
        backfill: made_up
            .iter()
            .map(|p| Backfill {
                patient: p.clone(),
                progress: 0,
                until: u64::MAX,
            })
            .collect(),
        upload: Vec::new(),
    }))
    .unwrap();
    let mut srepo = Repo::new(server.clone());
    let (_, mut session) = sessions(&carer, false);
    session.handle_bytes(&mut srepo, &ASSIGNED, &hello, NOW);
    assert!(!session.is_closed());
    let noted: BTreeMap<PatientId, u64> = serde_json::from_slice(
        &srepo
            .store()
            .meta(&format!("refetch/{}", carer.author.device))
            .unwrap()
            .expect("the readable patient is noted"),
    )
    .unwrap();
    assert!(noted.contains_key(&patient()));
    assert_eq!(noted.len(), 1, "made-up patients noted");
}
