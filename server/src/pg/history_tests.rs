//! The database's history on real PostgreSQL (`history.rs`): recorded at the first connection,
//! a different one moves the feed to a new epoch once (audited), also with three nodes
//! connecting at once, and when a node connects again after losing its connection.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use postgres::{Client, NoTls};
use sync_core::store::Store;

use super::history::{DatabaseHistory, HistoryCheck, check};
use super::testing::TestDatabase;

fn admin(db: &TestDatabase) -> Client {
    db.config().connect(NoTls).unwrap()
}

fn recorded(c: &mut Client) -> Option<DatabaseHistory> {
    let row = c
        .query_one(
            "SELECT system_identifier, timeline, database_oid FROM feed_history",
            &[],
        )
        .unwrap();
    Some(DatabaseHistory {
        system_identifier: row.get::<_, Option<i64>>(0)?,
        timeline: row.get::<_, Option<i64>>(1)?,
        database_oid: row.get::<_, Option<i64>>(2)?,
    })
}

/// The `new-epoch` records' texts.
fn new_epoch_records(c: &mut Client) -> Vec<String> {
    c.query(
        "SELECT detail FROM audit_log WHERE action = 'new-epoch' ORDER BY seq",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// As a restore into a database whose history differs from the one recorded: the recorded
/// timeline is not the database's.
fn pretend_restored(c: &mut Client) {
    c.batch_execute("UPDATE feed_history SET timeline = timeline + 7")
        .unwrap();
}

#[test]
fn the_first_connection_records_the_history_and_keeps_the_epoch() {
    let db = TestDatabase::new();
    let mut c = admin(&db);
    assert_eq!(
        recorded(&mut c),
        None,
        "a clone of the template records its own"
    );
    let store = db.open();
    let history = recorded(&mut c).expect("recorded at the first connection");
    let epoch = store.epoch().unwrap();
    assert_eq!(check(&mut c).unwrap(), HistoryCheck::Same(history));
    drop(db.open());
    assert_eq!(store.epoch().unwrap(), epoch);
    assert!(new_epoch_records(&mut c).is_empty());
}

#[test]
fn another_history_moves_the_feed_to_a_new_epoch_once_even_with_three_nodes_at_once() {
    let db = TestDatabase::new();
    let mut c = admin(&db);
    let old = db.open().epoch().unwrap();
    let history = recorded(&mut c).unwrap();
    pretend_restored(&mut c);
    // Three nodes start together.
    let stores: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3).map(|_| s.spawn(|| db.open())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let epochs: Vec<_> = stores.iter().map(|s| s.epoch().unwrap()).collect();
    assert!(epochs.iter().all(|e| *e == epochs[0]), "{epochs:?}");
    assert_ne!(epochs[0], old, "a new epoch");
    assert_eq!(
        recorded(&mut c),
        Some(history),
        "the database's own history"
    );
    let records = new_epoch_records(&mut c);
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(
        records[0].contains(&hex::encode(epochs[0])) && records[0].contains(&hex::encode(old)),
        "{records:?}"
    );
    // Nodes starting later find it recorded.
    drop(db.open());
    assert_eq!(new_epoch_records(&mut c).len(), 1);
    assert_eq!(db.open().epoch().unwrap(), epochs[0]);
}

#[test]
fn a_node_that_connects_again_after_losing_its_connection_checks_the_history() {
    let db = TestDatabase::new();
    let mut c = admin(&db);
    let store = db.open();
    let old = store.epoch().unwrap();
    let device = sync_core::DeviceId::new("d-anna").unwrap();
    let mut claimer = db.open();
    let lease = claimer.claim_device(&device, "node-1/conn-1", 1).unwrap();
    store.check_lease(&device, lease.token).unwrap();
    pretend_restored(&mut c);
    // The node's connection is lost (the primary went away), then the database is back.
    c.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
        &[],
    )
    .unwrap();
    // The call that meets the loss fails; the next one connects again.
    let mut epoch = store.epoch();
    for _ in 0..50 {
        if epoch.is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        epoch = store.epoch();
    }
    let epoch = epoch.unwrap();
    assert_ne!(
        epoch, old,
        "the node found the new history when it connected again"
    );
    assert_eq!(new_epoch_records(&mut c).len(), 1);
    // A session from before the move is fenced; a new claim is past every old token.
    assert!(store.check_lease(&device, lease.token).is_err());
    // The claimer's connection was lost too: its first call fails, the next one reconnects.
    let again = claimer
        .claim_device(&device, "node-2/conn-1", 2)
        .or_else(|_| claimer.claim_device(&device, "node-2/conn-1", 2))
        .unwrap();
    assert!(again.token > lease.token + 1);
    store.check_lease(&device, again.token).unwrap();
}

#[test]
fn admin_new_epoch_on_the_database_moves_the_feed_audited() {
    let db = TestDatabase::new();
    let mut c = admin(&db);
    let old = db.open().epoch().unwrap();
    let url = format!(
        "{} dbname={}",
        std::env::var(super::testing::URL_VAR).unwrap(),
        db.name()
    );
    let data = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    crate::admin_cli::run_to(
        crate::admin_cli::AdminArgs {
            data: data.path().to_path_buf(),
            database: Some(url),
            database_ca: None,
            json: true,
            command: crate::admin_cli::AdminCommand::NewEpoch,
        },
        &mut out,
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let new = db.open().epoch().unwrap();
    assert_ne!(new, old);
    assert_eq!(v["epoch"], hex::encode(new));
    let rows = c
        .query(
            "SELECT actor, detail FROM audit_log WHERE action = 'new-epoch'",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, &str>(0), "admin");
    assert!(rows[0].get::<_, &str>(1).contains(&hex::encode(new)));
}
