//! The server end to end, over real TLS WebSockets on 127.0.0.1: health and plain HTTP refused,
//! the write rules (a change under another device's actor, a carer changing a dose), and
//! scenario S6 (three days offline, then a slow lossy link cut mid-transfer). Access by care
//! relationship and the audit log are in `access_and_audit.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ROOT, ReadDoc};
use nara_tests::net::{SyncEnd, TestDevice};
use nara_tests::team::{add_staff, assign, audited, journal, note, quiet, refused, team, uid};
use nara_tests::*;
use server::audit::AuditAction;
use server::directory::Directory;
use sync_core::model::{ChangeMessage, EventBody, Register, Revision};
use sync_core::protocol::wire::RefusalCode;
use sync_core::store::{Origin, Store};
use sync_core::{DocumentId, PatientId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_over_https_and_plain_http_is_refused() {
    let mut server = team().await;
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
async fn a_change_under_another_devices_actor_is_refused() {
    let mut server = team().await;
    assign(&server, "anna", "p1");
    assign(&server, "bo", "p1");
    let mut anna = TestDevice::enroll(&server, "anna").await;
    let mut bo = TestDevice::enroll(&server, "bo").await;
    // Anna writes a note she has not uploaded; Bo's phone gets hold of its bytes and uploads
    // them as if they were its own.
    note(&mut anna, "p1", "n-anna", "Anna's note.");
    let doc = journal("p1");
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
    assert!(refused(&events, RefusalCode::ForeignAuthor), "{events:?}");
    assert!(audited(&server, "p1", AuditAction::Refuse) >= 1);
    // Anna's own phone uploads it fine.
    quiet(anna.sync(&server).await);
    quiet(bo.sync(&server).await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carer_changing_a_dose_is_refused() {
    let mut server = team().await;
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
    assert!(refused(&events, RefusalCode::NotPermitted), "{events:?}");
    assert!(audited(&server, "p1", AuditAction::Refuse) >= 1);
    quiet(nina.sync(&server).await);
    assert!(nina.repo.get(&meds).unwrap().revision(&rid("v2")).is_none());
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
    add_staff(&server);
    let d = &server.directory;
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
            let journal = DocumentId::journal(p, november());
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
    // Plain frames: the cut's byte count is set for them (compressed, the whole transfer
    // fits under it).
    anna.session = sync_core::protocol::DeviceSession::new(sync_core::protocol::DeviceConfig {
        compress: false,
        ..sync_core::protocol::DeviceConfig::default()
    });
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
                dev.repo
                    .get(&DocumentId::journal(p, november()))
                    .unwrap()
                    .events()
                    .len(),
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
