//! Access follows the care relationship, and the audit log records it, end to end over real TLS
//! WebSockets on 127.0.0.1: scenarios S4 (a worker taken off a case) and S5 (a lost phone
//! revoked), an unassigned person neither sent nor writable, a revocation from another process,
//! the admin API, a hand-edited audit log detected, and what a device shows in the person's
//! access log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use nara_tests::net::{SyncEnd, TestDevice, TestServer};
use nara_tests::team::{add_team, assign, audited, has, journal, note, quiet, refused, team, uid};
use nara_tests::*;
use server::audit::{AuditAction, AuditLog};
use server::directory::Directory;
use sync_core::model::EventBody;
use sync_core::protocol::DeviceEvent;
use sync_core::protocol::wire::RefusalCode;
use sync_core::store::{Origin, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_worker_taken_off_a_case_uploads_pending_notes_then_loses_access() {
    let mut server = team().await;
    assign(&server, "anna", "p1");
    assign(&server, "nina", "p1");
    let mut anna = TestDevice::enroll(&server, "anna").await;
    let mut nina = TestDevice::enroll(&server, "nina").await;
    note(
        &mut nina,
        "p1",
        "n-nina-1",
        "Plan reviewed with the family.",
    );
    quiet(nina.sync(&server).await);
    quiet(anna.sync(&server).await);
    assert!(has(&mut anna, "p1", "n-nina-1"));

    // Offline, Anna writes notes; meanwhile she is taken off the case.
    note(&mut anna, "p1", "n-anna-1", "Evening visit: slept well.");
    note(
        &mut anna,
        "p1",
        "n-anna-2",
        "Night visit: needed help to the toilet.",
    );
    server
        .directory
        .unassign(
            &uid("anna"),
            &patient("p1"),
            server.state.ended_now().unwrap(),
        )
        .unwrap();
    server.state.refresh().unwrap();
    let events = quiet(anna.sync(&server).await);

    // Her pending notes are uploaded and kept...
    let kept = server.state.clone();
    let _ = kept;
    let mut check = TestDevice::enroll(&server, "nina").await;
    quiet(check.sync(&server).await);
    let j = check.repo.get(&journal("p1")).unwrap();
    assert!(j.event(&rid("n-anna-1")).is_some() && j.event(&rid("n-anna-2")).is_some());
    assert!(anna.repo.pending().unwrap().is_empty());
    // ...then her phone forgets p1, once nothing of p1 waits for upload: the server stores the
    // Hello's upload before it withdraws, so that is already so when `Withdrawn` arrives (a
    // device with an upload still in flight forgets on its next connection).
    let purged = quiet(anna.sync(&server).await);
    let p1 = patient("p1");
    assert!(
        events
            .iter()
            .chain(&purged)
            .any(|e| matches!(e, DeviceEvent::Purged { patient } if patient == &p1)),
        "{events:?} {purged:?}"
    );
    assert!(
        anna.repo
            .document_ids()
            .unwrap()
            .iter()
            .all(|d| d.patient() != &p1)
    );
    // It was told to.
    assert!(events.iter().any(|e| matches!(e, DeviceEvent::AccessWithdrawn { patients } if patients == &vec![patient("p1")])));

    // The server sends nothing more of p1 to her.
    note(
        &mut nina,
        "p1",
        "n-nina-2",
        "New note after Anna left the case.",
    );
    quiet(nina.sync(&server).await);
    quiet(anna.sync(&server).await);
    assert!(!has(&mut anna, "p1", "n-nina-2"));

    // A later write to p1 is refused by her phone itself...
    let anna_author = anna.author.clone();
    let own_write = anna
        .repo
        .change(&journal("p1"), &anna_author, at(21, 0), |e| {
            e.record(
                rid("n-anna-3"),
                EventBody::Note {
                    body: "After leaving the case.".into(),
                    corrects: None,
                },
            )
        });
    assert!(
        matches!(own_write, Err(sync_core::RepoError::Forgotten { .. })),
        "{own_write:?}"
    );
    // ...and, from a tampered app that writes it anyway, by the server, which logs it.
    let forged = {
        let mut other = sync_core::model::CareDocument::new(journal("p1")).unwrap();
        other
            .change(&anna_author, at(21, 0), |e| {
                e.record(
                    rid("n-anna-4"),
                    EventBody::Note {
                        body: "Tampered app.".into(),
                        corrects: None,
                    },
                )
            })
            .unwrap()
            .change
            .unwrap()
    };
    anna.repo
        .store_mut()
        .append(
            &journal("p1"),
            &[(forged.hash(), forged.raw_bytes())],
            Origin::Local,
        )
        .unwrap();
    anna.reopen();
    let events = quiet(anna.sync(&server).await);
    assert!(refused(&events, RefusalCode::NotPermitted), "{events:?}");
    assert!(audited(&server, "p1", AuditAction::Refuse) >= 1);
    assert!(audited(&server, "p1", AuditAction::Withdraw) >= 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5_a_lost_phone_is_revoked() {
    let mut server = team().await;
    assign(&server, "anna", "p1");
    let mut anna = TestDevice::enroll(&server, "anna").await;
    note(&mut anna, "p1", "n1", "Morning visit.");
    quiet(anna.sync(&server).await);

    // The phone is connected when it is reported lost; the administrator revokes it.
    let device = anna.author.device.clone();
    let token = server.admin_token.clone();
    let revoke = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (status, body) = server
            .https(
                "POST",
                &format!("/v1/admin/devices/{device}/revoke"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
    };
    let (end, ()) = tokio::join!(anna.sync_linger(&server, Duration::from_secs(10)), revoke);
    match end {
        SyncEnd::Closed(events) => assert!(
            events.iter().any(|e| matches!(
                e,
                DeviceEvent::Closed {
                    reason: sync_core::protocol::wire::CloseReason::Revoked,
                    ..
                }
            )),
            "{events:?}"
        ),
        other => panic!("the revoked device's connection was not closed: {other:?}"),
    }
    // From then on its connections are refused, and that is logged.
    match anna.sync(&server).await {
        SyncEnd::Refused(401) => {}
        other => panic!("a revoked device reconnected: {other:?}"),
    }
    // What it uploaded earlier is kept.
    let mut nurse = {
        server
            .directory
            .assign(&uid("nina"), &patient("p1"))
            .unwrap();
        server.state.refresh().unwrap();
        TestDevice::enroll(&server, "nina").await
    };
    quiet(nurse.sync(&server).await);
    assert!(
        nurse
            .repo
            .get(&journal("p1"))
            .unwrap()
            .event(&rid("n1"))
            .is_some()
    );
    let all: Vec<_> = (1..=server.audit.len().unwrap()).collect();
    assert!(!all.is_empty());
    let report = server.audit.verify().unwrap();
    assert!(report.ok, "{report:?}");
    let revocations = server_audit_actions(&server)
        .iter()
        .filter(|a| **a == AuditAction::Revoke)
        .count();
    let refusals = server_audit_actions(&server)
        .iter()
        .filter(|a| **a == AuditAction::AuthFailed)
        .count();
    assert_eq!(revocations, 1);
    assert!(refusals >= 1);
    server.stop().await;
}

/// Every action in the audit log, in order (via the verify-then-export of every patient plus
/// the chain length; the log has no "all records" query, so read it through SQLite).
fn server_audit_actions(server: &TestServer) -> Vec<AuditAction> {
    let conn =
        rusqlite::Connection::open(server::admin_cli::audit_path(server.data.path())).unwrap();
    let mut stmt = conn
        .prepare("SELECT action FROM audit_log ORDER BY seq")
        .unwrap();
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows.iter()
        .map(|a| serde_json::from_value(serde_json::Value::String(a.clone())).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unassigned_patient_is_neither_sent_nor_writable() {
    let mut server = team().await;
    assign(&server, "nina", "p1");
    assign(&server, "nina", "p2");
    assign(&server, "anna", "p1");
    let mut nina = TestDevice::enroll(&server, "nina").await;
    note(
        &mut nina,
        "p2",
        "secret",
        "About p2, whom Anna does not care for.",
    );
    quiet(nina.sync(&server).await);

    let mut anna = TestDevice::enroll(&server, "anna").await;
    // Asking for p2 first changes nothing: it is not hers to read.
    anna.session.set_priority(vec![patient("p2")]);
    note(
        &mut anna,
        "p2",
        "intrusion",
        "Writing to someone else's journal.",
    );
    let events = quiet(anna.sync(&server).await);
    assert!(
        anna.repo
            .document_ids()
            .unwrap()
            .iter()
            .all(|d| d.patient() != &patient("p2") || d.kind() == sync_core::DocKind::Journal)
    );
    assert!(!has(&mut anna, "p2", "secret"));
    assert!(refused(&events, RefusalCode::NotPermitted));
    // Refused, and logged against p2.
    assert!(audited(&server, "p2", AuditAction::Refuse) >= 1);
    quiet(nina.sync(&server).await);
    assert!(!has(&mut nina, "p2", "intrusion"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_detects_a_hand_edited_record() {
    let mut server = team().await;
    assign(&server, "anna", "p1");
    let mut anna = TestDevice::enroll(&server, "anna").await;
    note(&mut anna, "p1", "n1", "Morning visit.");
    quiet(anna.sync(&server).await);
    assert!(server.audit.verify().unwrap().ok);
    let accepted = audited(&server, "p1", AuditAction::Accept);
    assert!(accepted >= 1, "the upload was not audited");
    let data = server.data.path().to_path_buf();
    server.stop().await;

    // Someone with file access rewrites who accepted the change.
    let conn = rusqlite::Connection::open(server::admin_cli::audit_path(&data)).unwrap();
    conn.execute(
        "UPDATE audit_log SET actor = 'someone-else' WHERE action = 'accept'",
        [],
    )
    .unwrap();
    drop(conn);
    let args = server::admin_cli::AdminArgs {
        data: data.clone(),
        database: None,
        database_ca: None,
        json: true,
        command: server::admin_cli::AdminCommand::Audit {
            command: server::admin_cli::AuditCommand::Verify(Default::default()),
        },
    };
    assert!(
        server::admin_cli::run(args).is_err(),
        "audit verify passed an edited log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_assigns_enrolls_and_is_audited() {
    let mut server = team().await;
    let token = server.admin_token.clone();
    let body = r#"{"user":"anna","patient":"p1"}"#;
    let (status, reply) = server
        .https("POST", "/v1/admin/assignments", Some(&token), Some(body))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert!(server.directory.assignments().unwrap()[&uid("anna")].contains(&patient("p1")));
    let (status, reply) = server
        .https(
            "POST",
            "/v1/admin/enrollments",
            Some(&token),
            Some(r#"{"user":"anna"}"#),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains("\"code\""));
    let (status, _) = server
        .https("DELETE", "/v1/admin/assignments", Some(&token), Some(body))
        .await;
    assert_eq!(status, 200);
    assert!(
        !server
            .directory
            .assignments()
            .unwrap()
            .get(&uid("anna"))
            .is_some_and(|s| s.contains(&patient("p1")))
    );
    // Unassigning again is a clear error; a wrong token is refused.
    let (status, reply) = server
        .https("DELETE", "/v1/admin/assignments", Some(&token), Some(body))
        .await;
    assert_eq!(status, 400, "{reply}");
    let (status, _) = server
        .https("POST", "/v1/admin/assignments", Some("wrong"), Some(body))
        .await;
    assert_eq!(status, 401);
    // Each action is audited before it is made; one that then fails gets a second record
    // saying so (the failed unassignment above).
    assert_eq!(audited(&server, "p1", AuditAction::Assign), 1);
    assert_eq!(audited(&server, "p1", AuditAction::Unassign), 3);
    let not_done: Vec<_> = server
        .audit
        .export_patient(&patient("p1"))
        .unwrap()
        .into_iter()
        .filter(|r| r.entry.detail.starts_with("NOT DONE"))
        .collect();
    assert_eq!(not_done.len(), 1, "{not_done:?}");
    assert_eq!(not_done[0].entry.action, AuditAction::Unassign);
    let (status, export) = server
        .https(
            "GET",
            "/v1/admin/audit/export?patient=p1",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        export
            .lines()
            .filter(|l| l.contains("\"assign\"") || l.contains("\"unassign\""))
            .count(),
        4,
        "{export}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_from_another_process_reaches_the_live_connection() {
    let mut server = team().await;
    assign(&server, "anna", "p1");
    let mut anna = TestDevice::enroll(&server, "anna").await;
    quiet(anna.sync(&server).await);
    // `nara-server admin revoke` runs as another process on the same data directory: here, a
    // second handle on the same SQLite file, and no call into the running server.
    let cli = server::directory::SqliteDirectory::open(&server::admin_cli::directory_path(
        server.data.path(),
    ))
    .unwrap();
    let device = anna.author.device.clone();
    let revoke = async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        cli.revoke(&device).unwrap();
    };
    // Stay connected (up to 10 s of quiet) and see the server close the connection.
    let (end, ()) = tokio::join!(anna.sync_linger(&server, Duration::from_secs(10)), revoke);
    assert!(
        matches!(&end, SyncEnd::Closed(events) if events.iter().any(|e| matches!(e, DeviceEvent::Closed { reason: sync_core::protocol::wire::CloseReason::Revoked, .. }))),
        "{end:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_device_shows_is_in_the_persons_access_log() {
    let mut server = team().await;
    assign(&server, "anna", "p1");
    let mut anna = TestDevice::enroll(&server, "anna").await;
    quiet(anna.sync(&server).await);
    sync_core::protocol::DeviceSession::log_read(
        &mut anna.repo,
        &patient("p1"),
        "overview",
        at(10, 0),
    )
    .unwrap();
    quiet(anna.sync(&server).await);
    let log = server.audit.export_patient(&patient("p1")).unwrap();
    let read = log
        .iter()
        .find(|r| r.entry.action == AuditAction::Read)
        .expect("a read record");
    assert_eq!(read.entry.actor, "anna");
    assert_eq!(read.entry.device.as_ref(), Some(&anna.author.device));
    assert!(read.entry.detail.contains("overview"));
    assert!(
        sync_core::protocol::DeviceSession::read_log(&anna.repo)
            .unwrap()
            .is_empty()
    );
    server.stop().await;
}

/// Runs `nara-server admin audit ...` on `data`: what it printed, or its error.
fn audit_admin(
    data: &std::path::Path,
    json: bool,
    command: server::admin_cli::AuditCommand,
) -> Result<String, String> {
    let args = server::admin_cli::AdminArgs {
        data: data.to_path_buf(),
        database: None,
        database_ca: None,
        json,
        command: server::admin_cli::AdminCommand::Audit { command },
    };
    let mut out = Vec::new();
    server::admin_cli::run_to(args, &mut out).map_err(|e| format!("{e:#}"))?;
    Ok(String::from_utf8(out).unwrap())
}

/// `audit verify --public-key KEY` on `data`.
fn verify_with_key(data: &std::path::Path, json: bool, key: &str) -> Result<String, String> {
    audit_admin(
        data,
        json,
        server::admin_cli::AuditCommand::Verify(server::admin_cli::VerifyArgs {
            public_keys: vec![key.to_owned()],
            ..Default::default()
        }),
    )
}

/// The signed heads in the data directory's heads file, in order.
fn exported_heads(data: &std::path::Path) -> Vec<server::audit::heads::SignedHead> {
    std::fs::read_to_string(data.join(server::audit::heads::HEADS_FILE))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_exports_signed_audit_heads_that_audit_verify_checks() {
    let mut server = TestServer::start_exporting_audit_heads(Duration::from_millis(100)).await;
    add_team(&server);
    assign(&server, "anna", "p1");
    let mut anna = TestDevice::enroll(&server, "anna").await;
    note(&mut anna, "p1", "n1", "Morning visit.");
    quiet(anna.sync(&server).await);
    let data = server.data.path().to_path_buf();
    // The periodic export catches up with the head (the device is idle, nothing more is
    // appended while it waits).
    let head = server.audit.head().unwrap();
    assert!(head.seq >= 2, "{head:?}");
    tokio::time::timeout(Duration::from_secs(60), async {
        while !exported_heads(&data).iter().any(|h| h.seq >= head.seq) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the server exported no signed head within 60 s");
    server.stop().await;
    // And at shutdown, the head as it was left.
    let last = exported_heads(&data).pop().unwrap();
    let head = server.audit.head().unwrap();
    assert_eq!((last.seq, &last.hash), (head.seq, &head.hash));

    // An auditor keeps the public key outside the server and verifies with it.
    let public = audit_admin(
        &data,
        false,
        server::admin_cli::AuditCommand::Key { audit_key: None },
    )
    .unwrap()
    .trim()
    .to_owned();
    assert_eq!(last.key, public);
    let v: serde_json::Value =
        serde_json::from_str(&verify_with_key(&data, true, &public).unwrap()).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["signed_heads"].as_u64().unwrap() >= 1, "{v}");

    // Someone with write access to the database rewrites the first accept record and
    // recomputes every hash after it, and the head row: the chain alone cannot tell.
    rewrite_from_first_accept(&server, &data);
    assert!(server.audit.verify().unwrap().ok, "consistent in itself");
    let e = verify_with_key(&data, false, &public).unwrap_err();
    assert!(e.contains(&format!("record {}: its hash", last.seq)), "{e}");
    assert!(e.contains("the chain was rewritten"), "{e}");
}

/// Rewrites the first accept record of `server`'s audit log (in `data`) and recomputes every
/// hash after it, and the head row, as someone with write access to the database could: the
/// chain stays consistent in itself.
fn rewrite_from_first_accept(server: &TestServer, data: &std::path::Path) {
    let mut records = server.audit.latest(&AuditAction::ALL, 10_000).unwrap();
    records.reverse();
    let from = records
        .iter()
        .find(|r| r.entry.action == AuditAction::Accept)
        .unwrap()
        .seq;
    let conn = rusqlite::Connection::open(server::admin_cli::audit_path(data)).unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    let mut prev = records[usize::try_from(from).unwrap() - 2].hash.clone();
    for r in records.iter_mut().filter(|r| r.seq >= from) {
        if r.seq == from {
            r.entry.actor = "someone-else".into();
        }
        r.prev = prev;
        r.hash = r.chain_hash();
        tx.execute(
            "UPDATE audit_log SET actor = ?1, prev = ?2, hash = ?3 WHERE seq = ?4",
            rusqlite::params![r.entry.actor, r.prev, r.hash, i64::try_from(r.seq).unwrap()],
        )
        .unwrap();
        prev = r.hash.clone();
    }
    tx.execute("UPDATE audit_head SET hash = ?1", [&prev])
        .unwrap();
    tx.commit().unwrap();
}

/// The admin API's verification (and the dashboard's) checks the chain against the signed
/// heads the node exported, as `nara-server admin audit verify` does: a chain rewritten with
/// every hash recomputed passes the chain check alone, and fails there.
#[tokio::test]
async fn the_admin_api_verifies_the_chain_against_the_nodes_signed_heads() {
    let server = TestServer::start_exporting_audit_heads(Duration::from_millis(100)).await;
    add_team(&server);
    assign(&server, "anna", "p1");
    let mut anna = TestDevice::enroll(&server, "anna").await;
    note(&mut anna, "p1", "n1", "Morning visit.");
    quiet(anna.sync(&server).await);
    let data = server.data.path().to_path_buf();
    let head = server.audit.head().unwrap();
    tokio::time::timeout(Duration::from_secs(60), async {
        while !exported_heads(&data).iter().any(|h| h.seq >= head.seq) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the server exported no signed head within 60 s");
    let verify = || async {
        let (status, body) = server
            .https_admin(
                "GET",
                "/v1/admin/audit/verify",
                Some(&server.admin_token),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let v = verify().await;
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["signed_heads"].as_u64().unwrap() >= 1, "{v}");

    rewrite_from_first_accept(&server, &data);
    assert!(server.audit.verify().unwrap().ok, "consistent in itself");
    let v = verify().await;
    assert_eq!(v["ok"], false, "{v}");
    let problems = v["problems"].to_string();
    assert!(problems.contains("the chain was rewritten"), "{v}");
}
