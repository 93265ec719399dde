//! What the device does on each message from the server commits at most once (one fsync): an
//! upload's acknowledgement (changes marked uploaded, kept as unproven) and the batch that ends
//! a catch-up (its changes, the cursor, the unproven changes it proves). Counted in SQLite's
//! write-ahead log of a real store: one commit frame per transaction that wrote.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::store::SqliteStore;

#[test]
fn each_message_from_the_server_costs_the_device_at_most_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("phone.db");
    let wal = dir.path().join("phone.db-wal");
    let mut drepo = Repo::new(SqliteStore::open(&path).unwrap());
    let mut srepo = Repo::new(MemoryStore::new());
    let phone = author("anna", Role::Carer, "phone-a");
    let mut device = DeviceSession::new(DeviceConfig::default());
    let mut session = ServerSession::new(
        Peer {
            author: phone.clone(),
        },
        ServerConfig::default(),
    );
    device.connect(&mut drepo, NOW).unwrap();
    // Handles everything in flight both ways, the server's feed woken after each upload (as
    // the server does for every session); returns the most commits one message cost.
    let mut pump =
        |device: &mut DeviceSession, drepo: &mut Repo<SqliteStore>, handled: &mut usize| {
            let mut most = 0;
            for _ in 0..100 {
                let mut moved = false;
                while let Some(bytes) = device.poll_transmit() {
                    session.handle_bytes(&mut srepo, &Everyone, &bytes, NOW);
                    session.feed_advanced(&mut srepo, &Everyone);
                    moved = true;
                }
                while let Some(bytes) = session.poll_transmit() {
                    let before = commits(&wal);
                    device.handle_bytes(drepo, &bytes, NOW);
                    most = most.max(commits(&wal) - before);
                    *handled += 1;
                    moved = true;
                }
                if !moved {
                    break;
                }
            }
            most
        };
    let mut handled = 0;
    pump(&mut device, &mut drepo, &mut handled);
    for n in 0..3 {
        drepo
            .change(&journal(), &phone, NOW, |e| {
                e.record(
                    RecordId::new(format!("n{n}")).unwrap(),
                    EventBody::Note {
                        body: format!("note {n}"),
                        corrects: None,
                    },
                )
            })
            .unwrap();
        device.local_change(&mut drepo).unwrap();
        let mut handled = 0;
        let most = pump(&mut device, &mut drepo, &mut handled);
        // The acknowledgement and the batch that moves the cursor past the change.
        assert!(handled >= 2, "edit {n}: {handled} messages from the server");
        assert_eq!(most, 1, "edit {n}: a message cost {most} commits");
    }
    assert!(drepo.pending().unwrap().is_empty());
    let events: Vec<DeviceEvent> = std::iter::from_fn(|| device.poll_event()).collect();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, DeviceEvent::Closed { .. })),
        "{events:?}"
    );
}
