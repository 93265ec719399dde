//! A device stores what one turn of its connection read in one indivisible transaction
//! (`Repo::indivisibly`: no savepoint for each document's write inside it, session 33). A
//! write that fails in that turn closes the session and takes the whole turn with it: nothing
//! of it is stored, the cursor stays, nothing is acknowledged, and the next connection stores
//! it all.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use nara_client::{Device, SyncOptions};
use nara_tests::care::{enroll_runtime, has_note_of, write_note};
use nara_tests::net::TestServer;
use nara_tests::team::{add_team, assign, journal};
use sync_core::store::Store;

/// Runs `sql` on the device's store (a trigger made or dropped).
fn on_store(device: &Device, sql: &str) {
    device.with_repo(|repo| {
        let store = repo.store_mut();
        store.begin_group().unwrap();
        store
            .with_group_connection(|c| c.execute_batch(sql))
            .unwrap()
            .unwrap();
        store.commit_group().unwrap();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_fails_in_a_turn_stores_nothing_of_it_and_the_next_connection_stores_all() {
    let server = TestServer::start().await;
    add_team(&server);
    for user in ["anna", "nina"] {
        for p in ["p1", "p2"] {
            assign(&server, user, p);
        }
    }
    let homes = tempfile::tempdir().unwrap();
    let options = SyncOptions::default();
    let anna = enroll_runtime(&server, &homes.path().join("anna"), "anna", options.clone()).await;
    let nina = enroll_runtime(&server, &homes.path().join("nina"), "nina", options).await;
    nina.sync_once().await.unwrap();

    // Two notes, one for each person, uploaded in this order: the nurse's phone reads them in
    // one batch, the first person's document first.
    write_note(&anna, "p1", "n-1", "Ate breakfast.");
    anna.sync_once().await.unwrap();
    write_note(&anna, "p2", "n-2", "Dressing changed.");
    anna.sync_once().await.unwrap();

    // The nurse's phone cannot store the second person's change (a full disk would do it).
    on_store(
        &nina,
        &format!(
            "CREATE TRIGGER refuse BEFORE INSERT ON change_bytes
             WHEN (SELECT doc_id FROM feed WHERE seq = NEW.seq) = '{}'
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
            journal("p2")
        ),
    );
    let head = nina.with_repo(|r| r.store_mut().feed_head().unwrap());
    assert!(
        nina.sync_once().await.is_err(),
        "the connection ends when its turn cannot be stored"
    );
    // Nothing of the turn: not the first person's change either, and the cursor stays.
    assert!(!has_note_of(&nina, "p1", "Ate breakfast."));
    assert!(!has_note_of(&nina, "p2", "Dressing changed."));
    assert_eq!(nina.with_repo(|r| r.store_mut().feed_head().unwrap()), head);

    // Once the store takes writes again, the next connection stores both.
    on_store(&nina, "DROP TRIGGER refuse");
    nina.sync_once().await.unwrap();
    assert!(has_note_of(&nina, "p1", "Ate breakfast."));
    assert!(has_note_of(&nina, "p2", "Dressing changed."));
}
