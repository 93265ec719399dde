//! Several server nodes on one database (issue 12, slice 4: leases). One node serves a device
//! at a time: a connection claims the device's lease in the store when it opens, and every
//! step of a session first checks its lease in the step's transaction, so a node whose
//! connection of the device is superseded (the phone moved to another node while the old link
//! lingers) stores nothing more of it and closes that connection as `Superseded`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use nara_tests::net::TestDevice;
use nara_tests::raw::Raw;
use nara_tests::team::{assign, has, journal, note, quiet, team};
use server::audit::{AuditAction, AuditLog};
use sync_core::ChangeHash;
use sync_core::protocol::wire::{CloseReason, DeviceMessage, DocChanges, ServerMessage};
use sync_core::store::{SqliteStore, Store};

/// The bytes of the change `hash` of `doc` in `device`'s store.
fn change_bytes(device: &TestDevice, hash: &ChangeHash) -> Vec<u8> {
    let stored = device.repo.store().load(&journal("p1")).unwrap().unwrap();
    stored
        .changes
        .into_iter()
        .find(|(h, _)| h == hash)
        .map(|(_, bytes)| bytes)
        .expect("the change is in the device's store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_moved_to_another_node_is_fenced_on_the_first() {
    let mut one = team().await;
    let mut two = one.another_node().await;
    assign(&one, "anna", "p1");
    assign(&one, "bo", "p1");
    two.state.refresh().unwrap();
    let mut anna = TestDevice::enroll(&one, "anna").await;
    let mut bo = TestDevice::enroll(&one, "bo").await;
    note(&mut anna, "p1", "before", "Breakfast eaten.");
    quiet(anna.sync(&one).await);

    // A second installation of anna's phone (same credential) writes a note that only the old
    // connection will carry; it never connects itself.
    let mut ghost = anna.copied();
    note(
        &mut ghost,
        "p1",
        "ghost",
        "Written after the phone moved on.",
    );
    let (_, ghost_hash) = ghost.repo.pending().unwrap().pop().unwrap();
    let ghost_change = change_bytes(&ghost, &ghost_hash);

    // The phone's connection to node 1 stays open, served (its hello answered)...
    let mut old = Raw::connect(&one, &anna).await;
    old.hello(Vec::new()).await;
    let first = old.message().await;
    assert!(
        matches!(first, Some(ServerMessage::UploadAck { upload: 0, .. })),
        "node 1 serves the old connection: {first:?}"
    );
    // ... while the phone connects to node 2 with the same credential, and syncs there.
    quiet(anna.sync(&two).await);

    // Node 1's next step for the old connection is fenced: it stores nothing of the upload
    // (which it would store otherwise: a valid change of anna's) and closes the connection as
    // superseded.
    old.send(&DeviceMessage::Upload {
        upload: 1,
        docs: vec![DocChanges {
            doc: journal("p1"),
            changes: vec![ghost_change],
            positions: Vec::new(),
        }],
    })
    .await;
    let (reason, before) = old.refusal().await;
    assert_eq!(reason, CloseReason::Superseded, "after {before:?}");
    assert!(
        !before
            .iter()
            .any(|m| matches!(m, ServerMessage::UploadAck { .. })),
        "the fenced upload was acknowledged: {before:?}"
    );
    let store = SqliteStore::open(one.data.path().join("nara.db")).unwrap();
    assert_eq!(
        store.feed_position(&journal("p1"), &ghost_hash).unwrap(),
        None,
        "a fenced node stored the old connection's upload"
    );
    // Audited, as the device's connection closed on node 1.
    let closes = one.audit.latest(&[AuditAction::Disconnect], 50).unwrap();
    assert!(
        closes
            .iter()
            .any(|r| r.entry.device.as_ref() == Some(&anna.author.device)
                && r.entry.detail.contains("Superseded")),
        "no audit record of the fenced connection: {closes:?}"
    );

    // The device converges through node 2, and so does another device of p1's team.
    note(&mut anna, "p1", "via-two", "Walked to the shop.");
    quiet(anna.sync(&two).await);
    assert!(has(&mut anna, "p1", "before") && has(&mut anna, "p1", "via-two"));
    quiet(bo.sync(&two).await);
    assert!(has(&mut bo, "p1", "before") && has(&mut bo, "p1", "via-two"));
    assert!(!has(&mut bo, "p1", "ghost"));
    // And the phone may come back to node 1 later: a new connection claims the device again.
    note(&mut anna, "p1", "back-on-one", "Slept well.");
    quiet(anna.sync(&one).await);
    quiet(bo.sync(&two).await);
    assert!(has(&mut bo, "p1", "back-on-one"));
    two.stop().await;
    one.stop().await;
}
