//! Fixtures for the hostile-client tests (`tests/tests/hostile*.rs`): a world of an honest pair
//! of devices and a hostile one on the real server, the honest pair's rounds that must keep
//! converging during an attack, and the audit log as rows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use server::Limits;
use server::audit::AuditLog;
use server::directory::Directory;
use sync_core::protocol::wire::DocChanges;
use sync_core::{Author, DocumentId};

use crate::net::{TestDevice, TestServer};
use crate::patient;
use crate::team::add_team;
pub use crate::team::{has, journal, note, quiet, uid};

/// Generous bound on anything the tests wait for; reaching it fails the test.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Short timeouts so that the tests wait for outcomes, not for production defaults. The ping
/// interval stays above the 300 ms a `TestDevice` lingers when quiet.
pub fn short() -> Limits {
    Limits {
        // Generous: a busy 2-core machine running many tests at once is slow to handshake.
        handshake_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(3),
        ping_interval: Duration::from_millis(700),
        idle_timeout: Duration::from_secs(2),
        send_timeout: Duration::from_secs(1),
        ..Limits::default()
    }
}

/// Carers anna and bo (bo is the hostile one), nurse nina; patients p1, p2. Bo cares for p1;
/// the honest pair, nina and anna, for p2.
#[derive(Debug)]
pub struct World {
    pub server: TestServer,
    pub nina: TestDevice,
    pub anna: TestDevice,
    pub bo: TestDevice,
}

pub async fn world(limits: Limits) -> World {
    world_on(TestServer::start_with(limits).await).await
}

/// The same world on a server already started (with an admin listener of its own, say).
pub async fn world_on(server: TestServer) -> World {
    add_team(&server);
    let d = &server.directory;
    d.assign(&uid("bo"), &patient("p1")).unwrap();
    d.assign(&uid("nina"), &patient("p1")).unwrap();
    d.assign(&uid("nina"), &patient("p2")).unwrap();
    d.assign(&uid("anna"), &patient("p2")).unwrap();
    server.state.refresh().unwrap();
    let mut nina = TestDevice::enroll(&server, "nina").await;
    let mut anna = TestDevice::enroll(&server, "anna").await;
    let bo = TestDevice::enroll(&server, "bo").await;
    quiet(nina.sync(&server).await);
    quiet(anna.sync(&server).await);
    World {
        server,
        nina,
        anna,
        bo,
    }
}

/// Runs `hostile` while the honest pair keeps syncing: nina writes a note about p2, both sync,
/// and anna must have it, round after round until the hostile part is done (at least one
/// round during it, and one after). Returns the hostile part's result.
pub async fn with_honest_pair<T>(
    server: &TestServer,
    nina: &mut TestDevice,
    anna: &mut TestDevice,
    tag: &str,
    hostile: impl Future<Output = T>,
) -> T {
    let done = AtomicBool::new(false);
    let honest = async {
        let mut round = 0;
        loop {
            let finished = done.load(Ordering::SeqCst);
            round += 1;
            let id = format!("{tag}-{round}");
            note(nina, "p2", &id, "Visit during the attack: all well.");
            quiet(nina.sync(server).await);
            quiet(anna.sync(server).await);
            assert!(
                has(anna, "p2", &id),
                "the honest device did not receive note {id}"
            );
            if finished {
                return round;
            }
        }
    };
    let hostile = async {
        let out = hostile.await;
        done.store(true, Ordering::SeqCst);
        out
    };
    let (rounds, out) = tokio::time::timeout(PATIENCE, async { tokio::join!(honest, hostile) })
        .await
        .expect("the test did not finish in time");
    assert!(rounds >= 2);
    // Everyone converged: nina and anna hold the same journal of p2.
    let a = anna.repo.get(&journal("p2")).unwrap().events().len();
    let n = nina.repo.get(&journal("p2")).unwrap().events().len();
    assert_eq!(a, n);
    out
}

// ---- the audit log ----

#[derive(Debug)]
pub struct Row {
    pub action: String,
    pub device: Option<String>,
    pub patient: Option<String>,
    pub detail: String,
}

pub fn audit_rows(server: &TestServer) -> Vec<Row> {
    let conn =
        rusqlite::Connection::open(server::admin_cli::audit_path(server.data.path())).unwrap();
    let mut stmt = conn
        .prepare("SELECT action, device, patient, detail FROM audit_log ORDER BY seq")
        .unwrap();
    stmt.query_map([], |r| {
        Ok(Row {
            action: r.get(0)?,
            device: r.get(1)?,
            patient: r.get(2)?,
            detail: r.get(3)?,
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// The details of `action` records about `device`, waiting (within `PATIENCE`) until there are
/// at least `n` of them: the server audits a close just after sending it. The chain verifies.
pub async fn audited(server: &TestServer, action: &str, device: &Author, n: usize) -> Vec<String> {
    let device = device.device.to_string();
    let found = tokio::time::timeout(PATIENCE, async {
        loop {
            let rows: Vec<String> = audit_rows(server)
                .into_iter()
                .filter(|r| r.action == action && r.device.as_deref() == Some(device.as_str()))
                .map(|r| r.detail)
                .collect();
            if rows.len() >= n {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("fewer than {n} {action} records for {device}"));
    let report = server.audit.verify().unwrap();
    assert!(report.ok, "{report:?}");
    found
}

/// Waits until the server holds no sync connection.
pub async fn no_connections_left(server: &TestServer) {
    tokio::time::timeout(PATIENCE, async {
        while server
            .state
            .metrics()
            .connections_open
            .load(Ordering::SeqCst)
            > 0
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a sync connection was left open");
}

/// The bytes of the device's changes not yet uploaded to `doc`, in the order it made them
/// (what a tampered app would send as it likes).
pub fn pending(device: &mut TestDevice, doc: &DocumentId) -> Vec<Vec<u8>> {
    let hashes: Vec<sync_core::ChangeHash> = device
        .repo
        .pending()
        .unwrap()
        .into_iter()
        .filter(|(d, _)| d == doc)
        .map(|(_, h)| h)
        .collect();
    let d = device.repo.get(doc).unwrap();
    hashes
        .iter()
        .map(|h| d.automerge_change(h).unwrap().raw_bytes().to_vec())
        .collect()
}

pub fn changes(doc: DocumentId, changes: Vec<Vec<u8>>) -> Vec<DocChanges> {
    vec![DocChanges {
        doc,
        changes,
        positions: Vec::new(),
    }]
}

/// The server's document store (with the audit tables), opened beside it.
pub fn raw_db(server: &TestServer) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(server.audit.path()).unwrap();
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    conn
}

/// Breaks the audit store for real: with its head row gone every append fails
/// (`MissingHead`), while the document tables in the same file still take writes.
pub fn break_audit(server: &TestServer) -> (i64, String) {
    let conn = raw_db(server);
    let head: (i64, String) = conn
        .query_row("SELECT count, hash FROM audit_head WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    conn.execute("DELETE FROM audit_head", []).unwrap();
    head
}

pub fn repair_audit(server: &TestServer, head: (i64, String)) {
    let conn = raw_db(server);
    // The head as the chain now ends (nothing may have been appended meanwhile).
    let last: (i64, String) = conn
        .query_row(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        last, head,
        "records were appended while the audit store was broken"
    );
    conn.execute(
        "INSERT INTO audit_head (id, count, hash) VALUES (1, ?1, ?2)",
        rusqlite::params![head.0, head.1],
    )
    .unwrap();
}
