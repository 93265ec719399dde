//! The server end to end, over real TLS WebSockets on 127.0.0.1: scenarios S4 and S5 of
//! `shared/SCENARIOS.md`, and hostile devices (unassigned patients, foreign actors, a carer
//! changing a dose, a revoked device, plaintext HTTP, a hand-edited audit log).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ROOT, ReadDoc};
use nara_tests::net::{SyncEnd, TestDevice, TestServer};
use nara_tests::*;
use server::audit::{AuditAction, AuditLog};
use server::directory::Directory;
use sync_core::model::{ChangeMessage, EventBody, Register, Revision};
use sync_core::protocol::DeviceEvent;
use sync_core::protocol::wire::RefusalCode;
use sync_core::store::{Origin, Store};
use sync_core::{DocumentId, PatientId, Role, UserId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

/// An organisation with carers anna and bo, nurse nina, and patients p1, p2.
async fn setup() -> TestServer {
    let server = TestServer::start().await;
    let d = &server.directory;
    d.add_org("hemtjanst-norr", "Hemtjänst Norr").unwrap();
    d.add_user(&uid("anna"), "Anna", Role::Carer, "hemtjanst-norr")
        .unwrap();
    d.add_user(&uid("bo"), "Bo", Role::Carer, "hemtjanst-norr")
        .unwrap();
    d.add_user(&uid("nina"), "Nina", Role::Nurse, "hemtjanst-norr")
        .unwrap();
    for p in ["p1", "p2"] {
        d.add_patient(&patient(p), p).unwrap();
    }
    server
}

fn assign(server: &TestServer, user: &str, p: &str) {
    server.directory.assign(&uid(user), &patient(p)).unwrap();
    server.state.refresh().unwrap();
}

fn journal(p: &PatientId) -> DocumentId {
    DocumentId::journal(p, november())
}

fn note(device: &mut TestDevice, p: &str, id: &str, body: &str) {
    let author = device.author.clone();
    device
        .repo
        .change(&journal(&patient(p)), &author, at(9, 0), |e| {
            e.record(
                rid(id),
                EventBody::Note {
                    body: body.into(),
                    corrects: None,
                },
            )
        })
        .unwrap();
}

fn quiet(end: SyncEnd) -> Vec<DeviceEvent> {
    match end {
        SyncEnd::Quiet(events) => events,
        other => panic!("expected a completed sync, got {other:?}"),
    }
}

fn audited(server: &TestServer, p: &str, action: AuditAction) -> usize {
    server
        .audit
        .export_patient(&patient(p))
        .unwrap()
        .iter()
        .filter(|r| r.entry.action == action)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_over_https_and_plain_http_is_refused() {
    let mut server = setup().await;
    let (status, body) = server.https("GET", "/healthz", None, None).await;
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, _) = server.https("GET", "/readyz", None, None).await;
    assert_eq!(status, 200);
    let (status, body) = server.https("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(body.contains("\"/v1/sync\""));
    // Plain HTTP to the TLS port gets no HTTP answer: the handshake fails and the socket closes.
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut buf))
        .await
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"),
        "plaintext was answered"
    );
    // Admin routes need the admin token.
    let (status, _) = server.https("GET", "/v1/admin/devices", None, None).await;
    assert_eq!(status, 401);
    let (status, body) = server
        .https(
            "GET",
            "/v1/admin/devices",
            Some(&server.admin_token.clone()),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_worker_taken_off_a_case_uploads_pending_notes_then_loses_access() {
    let mut server = setup().await;
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
    assert!(
        anna.repo
            .get(&journal(&patient("p1")))
            .unwrap()
            .event(&rid("n-nina-1"))
            .is_some()
    );

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
        .unassign(&uid("anna"), &patient("p1"))
        .unwrap();
    server.state.refresh().unwrap();
    let events = quiet(anna.sync(&server).await);

    // Her pending notes are uploaded and kept...
    let kept = server.state.clone();
    let _ = kept;
    let mut check = TestDevice::enroll(&server, "nina").await;
    quiet(check.sync(&server).await);
    let j = check.repo.get(&journal(&patient("p1"))).unwrap();
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
    assert!(
        anna.repo
            .get(&journal(&patient("p1")))
            .unwrap()
            .event(&rid("n-nina-2"))
            .is_none()
    );

    // A later write to p1 is refused by her phone itself...
    let anna_author = anna.author.clone();
    let refused = anna
        .repo
        .change(&journal(&p1), &anna_author, at(21, 0), |e| {
            e.record(
                rid("n-anna-3"),
                EventBody::Note {
                    body: "After leaving the case.".into(),
                    corrects: None,
                },
            )
        });
    assert!(
        matches!(refused, Err(sync_core::RepoError::Forgotten { .. })),
        "{refused:?}"
    );
    // ...and, from a tampered app that writes it anyway, by the server, which logs it.
    let forged = {
        let mut other = sync_core::model::CareDocument::new(journal(&p1)).unwrap();
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
            &journal(&p1),
            &[(forged.hash(), forged.raw_bytes())],
            Origin::Local,
        )
        .unwrap();
    anna.reopen();
    let events = quiet(anna.sync(&server).await);
    assert!(
        events.iter().any(
            |e| matches!(e, DeviceEvent::ChangeRefused(q) if q.code == RefusalCode::NotPermitted)
        ),
        "{events:?}"
    );
    assert!(audited(&server, "p1", AuditAction::Refuse) >= 1);
    assert!(audited(&server, "p1", AuditAction::Withdraw) >= 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5_a_lost_phone_is_revoked() {
    let mut server = setup().await;
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
            .get(&journal(&patient("p1")))
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
    let mut server = setup().await;
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
    assert!(
        anna.repo
            .get(&journal(&patient("p2")))
            .unwrap()
            .event(&rid("secret"))
            .is_none()
    );
    assert!(events.iter().any(
        |e| matches!(e, DeviceEvent::ChangeRefused(q) if q.code == RefusalCode::NotPermitted)
    ));
    // Refused, and logged against p2.
    assert!(audited(&server, "p2", AuditAction::Refuse) >= 1);
    quiet(nina.sync(&server).await);
    assert!(
        nina.repo
            .get(&journal(&patient("p2")))
            .unwrap()
            .event(&rid("intrusion"))
            .is_none()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_under_another_devices_actor_is_refused() {
    let mut server = setup().await;
    assign(&server, "anna", "p1");
    assign(&server, "bo", "p1");
    let mut anna = TestDevice::enroll(&server, "anna").await;
    let mut bo = TestDevice::enroll(&server, "bo").await;
    // Anna writes a note she has not uploaded; Bo's phone gets hold of its bytes and uploads
    // them as if they were its own.
    note(&mut anna, "p1", "n-anna", "Anna's note.");
    let doc = journal(&patient("p1"));
    let (hash, bytes) = {
        let pending = anna.repo.pending().unwrap()[0].1;
        let d = anna.repo.get(&doc).unwrap();
        let c = d.automerge_change(&pending).unwrap();
        (c.hash(), c.raw_bytes().to_vec())
    };
    bo.repo
        .store_mut()
        .append(&doc, &[(hash, &bytes)], Origin::Local)
        .unwrap();
    bo.reopen();
    let events = quiet(bo.sync(&server).await);
    assert!(
        events.iter().any(
            |e| matches!(e, DeviceEvent::ChangeRefused(q) if q.code == RefusalCode::ForeignAuthor)
        ),
        "{events:?}"
    );
    assert!(audited(&server, "p1", AuditAction::Refuse) >= 1);
    // Anna's own phone uploads it fine.
    quiet(anna.sync(&server).await);
    quiet(bo.sync(&server).await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carer_changing_a_dose_is_refused() {
    let mut server = setup().await;
    assign(&server, "anna", "p1");
    assign(&server, "nina", "p1");
    let mut nina = TestDevice::enroll(&server, "nina").await;
    let meds = DocumentId::medication(&patient("p1"));
    let nurse_author = nina.author.clone();
    nina.repo
        .change(&meds, &nurse_author, at(7, 0), |e| {
            e.create(
                rid("v1"),
                Register::Order(rid("o1")),
                order("1 tablet", at(7, 0)),
                None,
            )
        })
        .unwrap();
    quiet(nina.sync(&server).await);
    let mut anna = TestDevice::enroll(&server, "anna").await;
    quiet(anna.sync(&server).await);

    // Her app would refuse; a tampered app writes the revision by hand and uploads it.
    let carer = anna.author.clone();
    let rev = Revision {
        register: Register::Order(rid("o1")),
        supersedes: vec![rid("v1")],
        value: order("4 tablets", at(8, 0)),
        author: carer.clone(),
        at: at(8, 0),
        context: Default::default(),
    };
    let change = {
        let base = anna.repo.get(&meds).unwrap().automerge();
        let mut forged = base.fork().with_actor(carer.actor_id());
        let revisions = forged.get(ROOT, "revisions").unwrap().unwrap().1;
        let mut tx = forged.transaction();
        tx.put(&revisions, "v2", serde_json::to_string(&rev).unwrap())
            .unwrap();
        let msg = serde_json::to_string(&ChangeMessage {
            author: carer.clone(),
            writes: vec!["revisions/v2".into()],
        })
        .unwrap();
        tx.commit_with(
            CommitOptions::default()
                .with_message(msg)
                .with_time(at(8, 0).0),
        );
        forged.get_last_local_change().unwrap()
    };
    anna.repo
        .store_mut()
        .append(&meds, &[(change.hash(), change.raw_bytes())], Origin::Local)
        .unwrap();
    anna.reopen();
    let events = quiet(anna.sync(&server).await);
    assert!(
        events.iter().any(
            |e| matches!(e, DeviceEvent::ChangeRefused(q) if q.code == RefusalCode::NotPermitted)
        ),
        "{events:?}"
    );
    assert!(audited(&server, "p1", AuditAction::Refuse) >= 1);
    quiet(nina.sync(&server).await);
    assert!(nina.repo.get(&meds).unwrap().revision(&rid("v2")).is_none());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_detects_a_hand_edited_record() {
    let mut server = setup().await;
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
        json: true,
        command: server::admin_cli::AdminCommand::Audit {
            command: server::admin_cli::AuditCommand::Verify,
        },
    };
    assert!(
        server::admin_cli::run(args).is_err(),
        "audit verify passed an edited log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_assigns_enrolls_and_is_audited() {
    let mut server = setup().await;
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
    let mut server = setup().await;
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
    let mut server = setup().await;
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

/// S6: three days without signal, then a slow, lossy link cut mid-transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s6_three_days_offline_then_a_slow_lossy_link_cut_mid_transfer() {
    use nara_tests::net::{FaultProxy, LinkFaults};
    use sync_core::protocol::wire::ServerMessage;

    let limits = server::Limits {
        batch_bytes: 4 * 1024,
        ..server::Limits::default()
    };
    let mut server = nara_tests::net::TestServer::start_with(limits).await;
    let d = &server.directory;
    d.add_org("norr", "Hemtjänst Norr").unwrap();
    d.add_user(&uid("anna"), "Anna", Role::Carer, "norr")
        .unwrap();
    d.add_user(&uid("bo"), "Bo", Role::Carer, "norr").unwrap();
    d.add_user(&uid("nina"), "Nina", Role::Nurse, "norr")
        .unwrap();
    let patients: Vec<PatientId> = (0..10).map(|i| patient(&format!("p{i}"))).collect();
    for p in &patients {
        d.add_patient(p, p.as_str()).unwrap();
        for u in ["anna", "bo", "nina"] {
            d.assign(&uid(u), p).unwrap();
        }
    }
    server.state.refresh().unwrap();
    let mut anna = TestDevice::enroll(&server, "anna").await;
    let mut bo = TestDevice::enroll(&server, "bo").await;
    let mut nina = TestDevice::enroll(&server, "nina").await;

    // Every person has an order; everyone starts in sync.
    let nurse = nina.author.clone();
    for p in &patients {
        nina.repo
            .change(&DocumentId::medication(p), &nurse, at(6, 0), |e| {
                e.create(
                    rid("v1"),
                    Register::Order(rid("o1")),
                    order("1 tablet", at(6, 0)),
                    None,
                )
            })
            .unwrap();
    }
    for dev in [&mut nina, &mut anna, &mut bo] {
        quiet(dev.sync(&server).await);
    }

    // Three days: Anna is offline and records visits; Bo and Nina keep writing online.
    let (a, b) = (anna.author.clone(), bo.author.clone());
    for day in 24..27 {
        for (i, p) in patients.iter().enumerate() {
            let journal = journal(p);
            let log = DocumentId::administrations(p, november());
            let slot = format!("2026-11-{day}T08:00");
            anna.repo
                .change(&journal, &a, at(8, 0), |e| {
                    e.record(
                        rid(&format!("a-{day}-{i}-note")),
                        EventBody::Note {
                            body: format!("Day {day}: morning visit, all well."),
                            corrects: None,
                        },
                    )
                })
                .unwrap();
            anna.repo
                .change(&log, &a, at(8, 5), |e| {
                    e.record(
                        rid(&format!("a-{day}-{i}-dose")),
                        given("o1", &rid("v1"), &slot, at(8, 5)),
                    )
                })
                .unwrap();
            bo.repo
                .change(&journal, &b, at(14, 0), |e| {
                    e.record(
                        rid(&format!("b-{day}-{i}-note")),
                        EventBody::Note {
                            body: format!("Day {day}: afternoon visit."),
                            corrects: None,
                        },
                    )
                })
                .unwrap();
            // On the first day Bo also signs the 08:00 dose Anna signed offline: a double dose.
            if day == 24 {
                bo.repo
                    .change(&log, &b, at(14, 5), |e| {
                        e.record(
                            rid(&format!("b-{day}-{i}-dose")),
                            given("o1", &rid("v1"), &slot, at(14, 5)),
                        )
                    })
                    .unwrap();
            }
        }
        quiet(bo.sync(&server).await);
    }
    quiet(nina.sync(&server).await);
    let pending = anna.repo.pending().unwrap().len();
    assert_eq!(pending, 60);

    // Anna gets weak signal: 16 KB/s, a delay on every chunk, stalls, and the first connection
    // is cut in the middle of the transfer to her phone.
    let proxy = FaultProxy::start(
        server.addr,
        LinkFaults {
            bytes_per_second: 16 * 1024,
            delay: Duration::from_millis(5),
            stall_per_mille: 50,
            stall: Duration::from_millis(200),
            cut_after_down: Some(9 * 1024),
        },
        6,
    )
    .await;
    anna.via = Some(proxy.addr);
    anna.record = true;
    match anna.sync(&server).await {
        SyncEnd::Closed(_) => {}
        other => panic!("the first connection was meant to be cut: {other:?}"),
    }
    let after_cut = sync_core::protocol::DeviceSession::load_state(&anna.repo).unwrap();
    let acknowledged: Vec<u64> = anna
        .received
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Batch { docs, cursor, .. }
            | ServerMessage::Batch3 { docs, cursor, .. }
                if cursor.position <= after_cut.cursor.map_or(0, |c| c.position) =>
            {
                Some(
                    docs.iter()
                        .flat_map(|d| d.positions.clone())
                        .filter(|p| *p != 0)
                        .collect::<Vec<_>>(),
                )
            }
            _ => None,
        })
        .flatten()
        .collect();
    assert!(
        !acknowledged.is_empty(),
        "the cut came before any batch was acknowledged: move it later"
    );
    anna.received.clear();

    // The next connection (same bad link, no cut) finishes, without resending what was
    // acknowledged.
    quiet(anna.sync(&server).await);
    let resent: Vec<u64> = anna
        .received
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Batch { docs, .. } | ServerMessage::Batch3 { docs, .. } => Some(
                docs.iter()
                    .flat_map(|d| d.positions.clone())
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .filter(|p| acknowledged.contains(p))
        .collect();
    assert!(
        resent.is_empty(),
        "acknowledged positions were sent again: {resent:?}"
    );
    assert!(anna.repo.pending().unwrap().is_empty());
    anna.via = None;
    for dev in [&mut bo, &mut nina] {
        quiet(dev.sync(&server).await);
    }

    // Every record from both sides is on every device, and the double doses are flagged.
    for p in &patients {
        let expected_journal = 3 + 3; // Anna's and Bo's notes
        let expected_log = 3 + 1; // Anna's doses and Bo's first-day dose
        for dev in [&mut anna, &mut bo, &mut nina] {
            assert_eq!(
                dev.repo.get(&journal(p)).unwrap().events().len(),
                expected_journal,
                "{p} journal"
            );
            assert_eq!(
                dev.repo
                    .get(&DocumentId::administrations(p, november()))
                    .unwrap()
                    .events()
                    .len(),
                expected_log,
                "{p} log"
            );
            let chart = dev.repo.chart(p, &[]).unwrap();
            let flags = chart.flags();
            assert!(
                flags
                    .iter()
                    .any(|f| f.open && f.id == "double-dose/o1/2026-11-24T08:00"),
                "{p}: {flags:?}"
            );
        }
    }
    server.stop().await;
}
