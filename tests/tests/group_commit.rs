//! Group commit of sync steps (issue 13): the steps of several devices' sessions that wait
//! while the store is busy are stored, with their audit records, in one transaction, and each
//! device is answered only once that transaction has committed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use nara_tests::net::TestDevice;
use nara_tests::team::{assign, audited, has, note, quiet, team};
use server::audit::AuditAction;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_of_two_devices_waiting_together_commit_together() {
    let mut server = team().await;
    assign(&server, "anna", "p1");
    assign(&server, "bo", "p2");
    let mut anna = TestDevice::enroll(&server, "anna").await;
    let mut bo = TestDevice::enroll(&server, "bo").await;
    note(&mut anna, "p1", "anna-note", "Walked to the shop.");
    note(&mut bo, "p2", "bo-note", "Slept well.");

    // Something else holds the server's store (as a long step or compaction would); both
    // devices connect meanwhile, and their first steps wait.
    let metrics = server.state.metrics();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let state = server.state.clone();
    let holder = std::thread::spawn(move || {
        state.with_store_held(|| {
            held_tx.send(()).unwrap();
            released.recv().unwrap();
        })
    });
    held_rx.recv().unwrap();
    let steps_before = metrics.sync_steps.load(Ordering::Relaxed);
    let commits_before = metrics.step_commits.load(Ordering::Relaxed);
    let waiting = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while metrics.steps_waiting.load(Ordering::Relaxed) < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the two devices' steps never queued"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        release.send(()).unwrap();
    };
    let (a, b, ()) = tokio::join!(anna.sync(&server), bo.sync(&server), waiting);
    quiet(a);
    quiet(b);
    holder.join().unwrap();

    // Both uploads are stored with their audit records, and fewer commits were made than
    // steps: the two waiting steps went into one.
    let steps = metrics.sync_steps.load(Ordering::Relaxed) - steps_before;
    let commits = metrics.step_commits.load(Ordering::Relaxed) - commits_before;
    assert!(
        steps >= 4,
        "each device's hello and upload are steps: {steps}"
    );
    assert!(
        commits < steps,
        "{commits} commits for {steps} steps: the waiting steps were not committed together"
    );
    assert_eq!(audited(&server, "p1", AuditAction::Accept), 1);
    assert_eq!(audited(&server, "p2", AuditAction::Accept), 1);
    // The server holds anna's note: a device given p1 since receives it.
    assign(&server, "bo", "p1");
    quiet(bo.sync(&server).await);
    assert!(has(&mut bo, "p1", "anna-note"));
    server.stop().await;
}

/// A connection claims its device's lease in the step of the device's first message, in that
/// step's commit, not in a step (a commit, an fsync) of its own before it: a sync takes one
/// step per message the device sent. Each connection still claims: the next one fences it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_claims_its_lease_in_the_commit_of_its_first_message() {
    use sync_core::store::{SqliteStore, Store};
    let mut server = team().await;
    assign(&server, "anna", "p1");
    let mut anna = TestDevice::enroll(&server, "anna").await;
    note(&mut anna, "p1", "anna-note", "Walked to the shop.");
    quiet(anna.sync(&server).await);

    // Nothing to upload, nothing to receive: the hello and what answers the server's reply.
    let metrics = server.state.metrics();
    let steps_before = metrics.sync_steps.load(Ordering::Relaxed);
    let messages_before = metrics.messages_in.load(Ordering::Relaxed);
    quiet(anna.sync(&server).await);
    let steps = metrics.sync_steps.load(Ordering::Relaxed) - steps_before;
    let messages = metrics.messages_in.load(Ordering::Relaxed) - messages_before;
    assert!(messages >= 1, "the device sent its hello");
    assert_eq!(
        steps, messages,
        "one step per message from the device, the lease's claim in the first"
    );

    // Two connections, two claims: the second's token fenced the first's.
    let store = SqliteStore::open(server.data.path().join("nara.db")).unwrap();
    let device = &anna.author.device;
    assert!(
        store.check_lease(device, 1).is_err(),
        "the first connection's claim is fenced"
    );
    store
        .check_lease(device, 2)
        .expect("the second connection claimed the lease");
    server.stop().await;
}
