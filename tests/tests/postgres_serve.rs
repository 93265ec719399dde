//! `nara-server serve --database postgres://..`: the real binary on a PostgreSQL database of
//! its own (`nara_tests::pg`; the tests need `NARA_TEST_DATABASE_URL`, see there): the admin
//! API on the PostgreSQL directory, devices syncing through it, the audit log in PostgreSQL;
//! two nodes on one database (fan-out: by the feed listener's notification with the poll of the
//! head out of the way, also after the listener was killed); `/readyz` when the database goes
//! away; a deadlock between a node's group of sync steps and another transaction, which the
//! group survives (it runs again) instead of closing the device's session; a device whose step
//! waits in the database while other devices sync on the node's other sync lanes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use nara_tests::net::{SyncEnd, TestDevice};
use nara_tests::pg::{ServerProcess, TestDb};
use nara_tests::team::{has, journal, note, uid};
use server::audit::{AuditAction, AuditLog};
use server::directory::Directory;
use server::offload::offload;
use server::pg::PgDatabase;
use sync_core::protocol::DeviceEvent;
use sync_core::{PatientId, Role};

/// Organisation norr with carers anna and bo, person p1 (the admin API has no route for these:
/// written to the PostgreSQL directory directly, as the admin CLI will).
fn add_team(url: &str) {
    offload(|| {
        let d = PgDatabase::new(url, None).unwrap().directory().unwrap();
        d.add_org("norr", "Hemtjänst Norr").unwrap();
        d.add_user(&uid("anna"), "Anna", Role::Carer, "norr")
            .unwrap();
        d.add_user(&uid("bo"), "Bo", Role::Carer, "norr").unwrap();
        d.add_patient(&PatientId::new("p1").unwrap(), "P1").unwrap();
    });
}

/// Assigns `user` to p1 and enrolls a device for them at `node`, both over the admin API.
async fn enroll(node: &ServerProcess, user: &str) -> TestDevice {
    let (status, v) = node
        .admin(
            "POST",
            "/v1/admin/assignments",
            Some(serde_json::json!({ "user": user, "patient": "p1" })),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    enroll_device(node, user).await
}

/// Enrolls a device for `user` at `node`, the code from the admin API.
async fn enroll_device(node: &ServerProcess, user: &str) -> TestDevice {
    let (status, v) = node
        .admin(
            "POST",
            "/v1/admin/enrollments",
            Some(serde_json::json!({ "user": user })),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let code = v["code"].as_str().unwrap();
    TestDevice::enroll_code(node, code, uid(user), Role::Carer).await
}

fn quiet(end: SyncEnd) {
    assert!(matches!(end, SyncEnd::Quiet(_)), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_postgres_enrolls_syncs_and_audits_in_the_database() {
    let db = TestDb::new();
    add_team(&db.url());
    let data = tempfile::tempdir().unwrap();
    let node = ServerProcess::start(data.path(), &db.url());
    assert_eq!(node.status("/readyz").await, 200);

    let mut anna = enroll(&node, "anna").await;
    let mut bo = enroll(&node, "bo").await;
    let (status, v) = node.admin("GET", "/v1/admin/devices", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["devices"].as_array().unwrap().len(), 2, "{v}");

    note(&mut anna, "p1", "n1", "Morning visit, all well.");
    quiet(anna.sync(&node).await);
    quiet(bo.sync(&node).await);
    assert!(has(&mut bo, "p1", "n1"), "bo received anna's note");

    // The audit log is PostgreSQL's: the upload accepted and the disclosure to bo, recorded in
    // the transactions that stored and sent them; and the chain verifies.
    let records = offload(|| {
        let audit = PgDatabase::new(&db.url(), None).unwrap().audit().unwrap();
        audit
            .export_patient(&PatientId::new("p1").unwrap())
            .unwrap()
    });
    let count = |action| records.iter().filter(|r| r.entry.action == action).count();
    assert!(count(AuditAction::Accept) >= 1, "{records:?}");
    assert!(count(AuditAction::Disclose) >= 1, "{records:?}");
    assert!(count(AuditAction::Assign) >= 2, "{records:?}");
    let (status, v) = node.admin("GET", "/v1/admin/audit/verify", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["records"].as_u64().unwrap() >= 6, "{v}");
    // No SQLite store was made beside it.
    assert!(!data.path().join("nara.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_note_stored_through_one_node_reaches_a_device_connected_to_another() {
    let db = TestDb::new();
    add_team(&db.url());
    let (data1, data2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let node1 = ServerProcess::start(data1.path(), &db.url());
    let node2 = ServerProcess::start(data2.path(), &db.url());
    let mut anna = enroll(&node1, "anna").await;
    let mut bo = enroll(&node2, "bo").await;
    quiet(bo.sync(&node2).await);
    assert!(!has(&mut bo, "p1", "n1"));

    pushed_to_bo_while(&node2, &mut bo, async {
        note(&mut anna, "p1", "n1", "Stored through node 1.");
        quiet(anna.sync(&node1).await);
    })
    .await;
    assert!(has(&mut bo, "p1", "n1"), "bo received the note from node 2");
}

/// bo stays connected to `node2` (one connection, up to 2 minutes) until a change to p1's journal is
/// pushed to it; once that connection is open and past bo's first exchange (its hello and
/// catch-up, so that only a push can bring the change), `meanwhile` runs (say anna storing a
/// note through another node). Fails unless something was pushed on that connection.
async fn pushed_to_bo_while(
    node2: &ServerProcess,
    bo: &mut TestDevice,
    meanwhile: impl std::future::Future<Output = ()>,
) {
    let doc = journal("p1");
    let waiting = bo.sync_waiting_for(
        node2,
        |events| {
            events
                .iter()
                .any(|e| matches!(e, DeviceEvent::DocumentUpdated { doc: d } if *d == doc))
        },
        Duration::from_secs(60),
    );
    let then = async {
        for _ in 0..600 {
            let (_, metrics) = nara_tests::net::https_at(
                node2.endpoint.addr,
                &node2.endpoint.fingerprint,
                "GET",
                "/metrics",
                None,
                None,
            )
            .await;
            if metrics.contains("\nnara_connections_open 1\n") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        meanwhile.await;
    };
    // The device's connection stays open as long as the server pings it: bound the wait (well
    // beyond what a busy machine needs, well below a poll of NO_POLL).
    let (end, ()) = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(waiting, then)
    })
    .await
    .unwrap_or_else(|_| panic!("nothing was pushed to bo's connection to node 2 within 2 minutes"));
    match end {
        SyncEnd::Quiet(events) => assert!(
            events
                .iter()
                .any(|e| matches!(e, DeviceEvent::DocumentUpdated { .. })),
            "bo's connection to node 2 got nothing pushed: {events:?}"
        ),
        other => panic!("{other:?}"),
    }
}

/// The nodes' feed listeners on `db` that are listening: connected, with `LISTEN` sent and the
/// head read after it (their last statement that, or the probe of a quiet connection).
fn listening(db: &TestDb) -> i64 {
    db.admin_count(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' \
         AND application_name = '{}' AND query IN ('SELECT seq FROM feed_head', 'SELECT 1')",
        db.name(),
        server::pg::FEED_LISTENER_NAME
    ))
}

/// Waits (up to a minute) until `n` feed listeners listen on `db`.
async fn wait_listening(db: &TestDb, n: i64) {
    for _ in 0..600 {
        if listening(db) == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{n} feed listeners never listened (now {})", listening(db));
}

/// The poll of the feed's head, set so long that it never comes within a test: only the
/// listener's notification can bring another node's change.
const NO_POLL: &[&str] = &["--feed-poll-ms", "3600000"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_poll_the_notification_brings_another_nodes_note_at_once() {
    let db = TestDb::new();
    add_team(&db.url());
    let (data1, data2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let node1 = ServerProcess::start_with(data1.path(), &db.url(), "127.0.0.1:0", NO_POLL);
    let node2 = ServerProcess::start_with(data2.path(), &db.url(), "127.0.0.1:0", NO_POLL);
    let mut anna = enroll(&node1, "anna").await;
    let mut bo = enroll(&node2, "bo").await;
    quiet(bo.sync(&node2).await);
    assert!(!has(&mut bo, "p1", "n1"));
    wait_listening(&db, 2).await;

    pushed_to_bo_while(&node2, &mut bo, async {
        note(&mut anna, "p1", "n1", "Stored through node 1.");
        quiet(anna.sync(&node1).await);
    })
    .await;
    assert!(has(&mut bo, "p1", "n1"), "bo received the note from node 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_killed_connects_again_and_reads_what_it_missed() {
    let db = TestDb::new();
    add_team(&db.url());
    let (data1, data2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let node1 = ServerProcess::start_with(data1.path(), &db.url(), "127.0.0.1:0", NO_POLL);
    let node2 = ServerProcess::start_with(data2.path(), &db.url(), "127.0.0.1:0", NO_POLL);
    let mut anna = enroll(&node1, "anna").await;
    let mut bo = enroll(&node2, "bo").await;
    quiet(bo.sync(&node2).await);
    wait_listening(&db, 2).await;

    // The listeners' backends are terminated and cannot connect again (the database takes no
    // new connections; the nodes' others stay open) while anna stores a note through node 1:
    // its notification reaches nobody. Once they connect again they read the head, and node 2
    // pushes the note to bo.
    let name = db.name().to_owned();
    pushed_to_bo_while(&node2, &mut bo, async {
        db.admin_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"));
        db.admin_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{name}' AND application_name = '{}'",
            server::pg::FEED_LISTENER_NAME
        ));
        let connected = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}' \
             AND application_name = '{}'",
            server::pg::FEED_LISTENER_NAME
        );
        let mut gone = false;
        for _ in 0..600 {
            gone = db.admin_count(&connected) == 0;
            if gone {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(gone, "the listeners' backends never went away");
        note(&mut anna, "p1", "n1", "Stored while no node listened.");
        quiet(anna.sync(&node1).await);
        assert_eq!(
            db.admin_count(&connected),
            0,
            "no listener while the note was stored"
        );
        db.admin_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"));
    })
    .await;
    assert!(has(&mut bo, "p1", "n1"), "bo received the note missed");

    // And the listener listens again: a later note comes by its notification.
    wait_listening(&db, 2).await;
    pushed_to_bo_while(&node2, &mut bo, async {
        note(
            &mut anna,
            "p1",
            "n2",
            "Stored after the listeners came back.",
        );
        quiet(anna.sync(&node1).await);
    })
    .await;
    assert!(has(&mut bo, "p1", "n2"), "bo received the later note");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_once_the_database_is_gone() {
    let db = TestDb::new();
    let data = tempfile::tempdir().unwrap();
    let node = ServerProcess::start(data.path(), &db.url());
    assert_eq!(node.status("/readyz").await, 200);
    assert_eq!(node.status("/healthz").await, 200);
    db.drop_now();
    let mut status = 0;
    for _ in 0..300 {
        status = node.status("/readyz").await;
        if status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 503, "readyz with the database gone");
    // The process still answers: it is alive, only not ready.
    assert_eq!(node.status("/healthz").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_connects_again_once_the_database_is_back() {
    let db = TestDb::new();
    let data = tempfile::tempdir().unwrap();
    let node = ServerProcess::start(data.path(), &db.url());
    db.drop_now();
    let mut status = 0;
    for _ in 0..300 {
        status = node.status("/readyz").await;
        if status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 503, "readyz with the database gone");

    // The database is back (empty: the node migrates it again when it reconnects).
    db.create_again();
    for _ in 0..300 {
        status = node.status("/readyz").await;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "readyz once the database is back");
    add_team(&db.url());
    // A call that meets a lost connection fails; the next one connects again (as a client
    // retries after a 500, or a device after `Internal`).
    let mut assigned = 0;
    for _ in 0..5 {
        let (status, _) = node
            .admin(
                "POST",
                "/v1/admin/assignments",
                Some(serde_json::json!({ "user": "anna", "patient": "p1" })),
            )
            .await;
        assigned = status;
        if status == 200 {
            break;
        }
    }
    assert_eq!(assigned, 200, "an admin call after the database came back");
    let mut anna = enroll_device(&node, "anna").await;
    note(&mut anna, "p1", "n1", "After the database came back.");
    let mut stored = false;
    for _ in 0..5 {
        if let SyncEnd::Quiet(events) = anna.sync(&node).await {
            if events
                .iter()
                .any(|e| matches!(e, DeviceEvent::UploadAcknowledged { .. }))
            {
                stored = true;
                break;
            }
        }
    }
    assert!(stored, "anna's note stored after the database came back");
}

/// Two nodes on one database given one audit key and one heads file (`--audit-key`,
/// `--audit-heads`, exporting every second): both export the one chain's head, and
/// `nara-server admin --database .. audit verify` checks the chain against every line with the
/// public key `admin audit key` prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_export_signed_heads_of_the_one_chain_that_admin_verify_checks() {
    use std::ffi::OsStr;
    let db = TestDb::new();
    add_team(&db.url());
    let shared = tempfile::tempdir().unwrap();
    let (key, heads) = (
        shared.path().join("audit-key"),
        shared.path().join("audit-heads.jsonl"),
    );
    let extra = [
        OsStr::new("--audit-key"),
        key.as_os_str(),
        OsStr::new("--audit-heads"),
        heads.as_os_str(),
        OsStr::new("--audit-heads-every"),
        OsStr::new("1"),
    ];
    let (data1, data2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let node1 = ServerProcess::start_with(data1.path(), &db.url(), "127.0.0.1:0", &extra);
    let node2 = ServerProcess::start_with(data2.path(), &db.url(), "127.0.0.1:0", &extra);
    let mut anna = enroll(&node1, "anna").await;
    let mut bo = enroll(&node2, "bo").await;
    note(&mut anna, "p1", "n1", "Morning visit.");
    quiet(anna.sync(&node1).await);
    quiet(bo.sync(&node2).await);
    assert!(has(&mut bo, "p1", "n1"));
    assert!(
        !data1.path().join("audit-key").exists() && !data2.path().join("audit-key").exists(),
        "the nodes use the one key given"
    );

    // Both nodes export the head once it stopped moving (the devices are idle now).
    let url = db.url();
    let head = offload(|| {
        PgDatabase::new(&url, None)
            .unwrap()
            .audit()
            .unwrap()
            .head()
            .unwrap()
    });
    let at_head = || {
        std::fs::read_to_string(&heads)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<server::audit::heads::SignedHead>(l).ok())
            .filter(|h| h.seq == head.seq && h.hash == head.hash)
            .count()
    };
    tokio::time::timeout(Duration::from_secs(60), async {
        while at_head() < 2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("both nodes exported the head within 60 s");

    let admin = |args: &[&OsStr]| {
        let out = std::process::Command::new(nara_tests::procs::server_binary())
            .args(["admin", "--json", "--database", &db.url()])
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.success(),
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
        )
    };
    let (ok, v) = admin(&[
        OsStr::new("audit"),
        OsStr::new("key"),
        OsStr::new("--audit-key"),
        key.as_os_str(),
    ]);
    assert!(ok, "{v}");
    let public = v["public_key"].as_str().unwrap().to_owned();
    let (ok, v) = admin(&[
        OsStr::new("audit"),
        OsStr::new("verify"),
        OsStr::new("--heads"),
        heads.as_os_str(),
        OsStr::new("--public-key"),
        OsStr::new(&public),
    ]);
    assert!(ok, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["signed_heads"].as_u64().unwrap() >= 2, "{v}");
}

/// A deadlock between a node's group of sync steps and another transaction (another node's
/// group, played here by a connection of the test): the test holds the audit head, the node's
/// group stores anna's note (it holds the feed counter) and waits for the head, then the test
/// asks for the counter. PostgreSQL fails the node's statement (the test's own deadlock check
/// waits a minute, so the node's is the one that fires). The node's group is rolled back whole
/// and runs again once the test committed: anna's sync ends quietly and the note is stored.
/// Before, the step failed and anna's session was closed with `Internal`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_with_another_transaction_does_not_close_the_session() {
    let db = TestDb::new();
    add_team(&db.url());
    let data = tempfile::tempdir().unwrap();
    let node = ServerProcess::start(data.path(), &db.url());
    let mut anna = enroll(&node, "anna").await;
    quiet(anna.sync(&node).await);

    let url = db.url();
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let other = std::thread::spawn(move || {
        let mut c = url
            .parse::<postgres::Config>()
            .unwrap()
            .connect(postgres::NoTls)
            .unwrap();
        c.batch_execute("SET deadlock_timeout = '60s'; BEGIN")
            .unwrap();
        c.query("SELECT count FROM audit_head FOR UPDATE", &[])
            .unwrap();
        held_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        // Waits for the node's group, which waits for the audit head: a deadlock.
        c.query("SELECT seq FROM feed_head FOR UPDATE", &[])
            .unwrap();
        c.batch_execute("COMMIT").unwrap();
    });
    held_rx.recv().unwrap();

    note(&mut anna, "p1", "n1", "Stored through a deadlock.");
    let waiting = db.url();
    let watcher = tokio::task::spawn_blocking(move || {
        let mut c = waiting
            .parse::<postgres::Config>()
            .unwrap()
            .connect(postgres::NoTls)
            .unwrap();
        // The node's group waits for the audit head (a lock not granted), then the test's
        // transaction closes the cycle.
        loop {
            let row = c
                .query_one("SELECT count(*) FROM pg_locks WHERE NOT granted", &[])
                .unwrap();
            if row.get::<_, i64>(0) > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        go_tx.send(()).unwrap();
    });
    let end = anna.sync(&node).await;
    watcher.await.unwrap();
    other.join().unwrap();
    quiet(end);
    let (status, v) = node.admin("GET", "/v1/admin/audit/verify", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    // The note is in the feed, with its Accept record (the upload's group committed).
    let url = db.url();
    let (accepted, in_feed) = offload(move || {
        let mut c = url
            .parse::<postgres::Config>()
            .unwrap()
            .connect(postgres::NoTls)
            .unwrap();
        let n =
            |c: &mut postgres::Client, sql: &str| c.query_one(sql, &[]).unwrap().get::<_, i64>(0);
        (
            n(
                &mut c,
                "SELECT count(*) FROM audit_log WHERE lower(action) LIKE '%accept%'",
            ),
            n(&mut c, "SELECT count(*) FROM feed WHERE seq IS NOT NULL"),
        )
    });
    assert!(accepted >= 1 && in_feed >= 1, "{accepted} {in_feed}");
}

/// Issue 11, hole 9 (one lock for every device): a device whose step waits in the database (here
/// for its lease row, which another transaction holds, as a long upload or a lock would make
/// it wait) holds up no other device. An honest pair uploads and receives meanwhile, on
/// another sync lane of the same node, and a revocation closes a live connection and the admin
/// API answers (neither the policy nor the names' write waits for the held lane); the held
/// device's step goes on once the row is free. With
/// one lane (`--sync-lanes 1`) the pair's steps queue behind the held one, and this fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole9_a_step_waiting_in_the_database_holds_up_no_other_device() {
    let db = TestDb::new();
    add_team(&db.url());
    let data = tempfile::tempdir().unwrap();
    let node = ServerProcess::start(data.path(), &db.url());
    let mut anna = enroll(&node, "anna").await;
    let mut bo = enroll(&node, "bo").await;
    let mut bo2 = enroll_device(&node, "bo").await;
    for d in [&mut anna, &mut bo, &mut bo2] {
        quiet(d.sync(&node).await);
    }

    // Another transaction holds anna's lease row: her next step waits for it.
    let url = db.url();
    let device = anna.author.device.as_str().to_owned();
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let mut c = url
            .parse::<postgres::Config>()
            .unwrap()
            .connect(postgres::NoTls)
            .unwrap();
        c.batch_execute("BEGIN").unwrap();
        c.query(
            "SELECT token FROM device_leases WHERE device_id = $1 FOR UPDATE",
            &[&device],
        )
        .unwrap();
        held_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        c.batch_execute("COMMIT").unwrap();
    });
    held_rx.recv().unwrap();

    note(
        &mut bo,
        "p1",
        "meanwhile",
        "Written while anna's step waits.",
    );
    let url = db.url();
    let pair = async {
        // Anna's step is waiting for the row (a backend of this database waits for a lock).
        // On a blocking thread of its own: anna's sync runs in this task meanwhile.
        let waiting = tokio::task::spawn_blocking(move || {
            let mut c = url
                .parse::<postgres::Config>()
                .unwrap()
                .connect(postgres::NoTls)
                .unwrap();
            for _ in 0..1500 {
                let row = c
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity \
                         WHERE datname = current_database() AND wait_event_type = 'Lock'",
                        &[],
                    )
                    .unwrap();
                if row.get::<_, i64>(0) > 0 {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        })
        .await
        .unwrap();
        assert!(waiting, "anna's step never waited for her lease row");
        // The pair syncs while she waits: bo's upload is stored, bo2 receives it.
        let within = Duration::from_secs(20);
        let up = tokio::time::timeout(within, bo.sync(&node)).await;
        let down = match &up {
            Ok(_) => Some(tokio::time::timeout(within, bo2.sync(&node)).await),
            Err(_) => None,
        };
        if !matches!(down, Some(Ok(_))) {
            release_tx.send(()).unwrap();
            return (up, down, None);
        }
        // bo's phone is revoked while it is connected: its connection closes, and the admin
        // API answers, while anna's step still waits (the answer writes people's names on a
        // lane that is free).
        let id = bo.author.device.to_string();
        let revoke = async {
            // Connected and served first.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let path = format!("/v1/admin/devices/{id}/revoke");
            // Well within anna's sync's patience (10 s of silence), which waits meanwhile.
            tokio::time::timeout(Duration::from_secs(5), node.admin("POST", &path, None)).await
        };
        let linger = tokio::time::timeout(within, bo.sync_linger(&node, within));
        let (end, answered) = tokio::join!(linger, revoke);
        release_tx.send(()).unwrap();
        let (status, v) = answered.expect("the admin API's answer waited for anna's step");
        assert_eq!(status, 200, "{v}");
        (up, down, Some(end))
    };
    let (anna_end, (up, down, revoked)) = tokio::join!(anna.sync(&node), pair);
    holder.join().unwrap();
    let up = up.expect("bo's sync waited for anna's step");
    quiet(up);
    quiet(
        down.expect("bo synced")
            .expect("bo2's sync waited for anna's step"),
    );
    assert!(has(&mut bo2, "p1", "meanwhile"), "bo2 received bo's note");
    let revoked = revoked
        .expect("bo2 synced")
        .expect("bo's revoked connection stayed open while anna's step waited");
    let reason = match &revoked {
        SyncEnd::Closed(events) => events.iter().find_map(|e| match e {
            DeviceEvent::Closed { reason, .. } => Some(*reason),
            _ => None,
        }),
        _ => None,
    };
    assert_eq!(
        reason,
        Some(sync_core::protocol::wire::CloseReason::Revoked),
        "{revoked:?}"
    );

    // Anna's step went on once the row was free; she has the note too, and the log verifies.
    quiet(anna_end);
    if !has(&mut anna, "p1", "meanwhile") {
        quiet(anna.sync(&node).await);
    }
    assert!(has(&mut anna, "p1", "meanwhile"), "anna received bo's note");
    let (status, v) = node.admin("GET", "/v1/admin/audit/verify", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ok"], true, "{v}");
}
