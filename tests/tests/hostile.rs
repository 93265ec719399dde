//! Hostile clients against the real server, over real TLS sockets on 127.0.0.1 (issue 6):
//! oversize frames and messages, malformed protocol messages, invalid Automerge bytes, uploads to
//! unassigned people and under another device's actor, a device that never reads, clients that
//! send half of something and stall, and floods of connections, messages and enrollment codes.
//!
//! For each: the hostile connection gets a typed refusal (the protocol's `Close` reason, a change
//! refusal, or an HTTP status), only that connection is affected, an honest pair of devices keeps
//! syncing through it and converges, and the refusal is in the audit log. Clients that never
//! authenticate (a bare TCP connect, half a TLS record before any request) touch nobody's data:
//! they are closed after the timeout and not audited (a flood of them must not grow the log).
//!
//! The misbehaving clients are raw: TLS from the device runtime's pinned configuration, then
//! WebSocket frames written by hand, so that they can break the framing on purpose.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{AutoCommit, ReadDoc};
use nara_tests::hostile::*;
use nara_tests::net::{TestDevice, TestServer};
use nara_tests::raw::*;
use nara_tests::*;
use server::Limits;
use server::audit::AuditLog;
use server::directory::Directory;
use sync_core::Author;
use sync_core::model::{CareDocument, ChangeMessage, EventBody, TextKey, genesis_hash};
use sync_core::protocol::wire::{
    self, CloseReason, DeviceMessage, DocChanges, Hello, MAX_IN_FLIGHT, MAX_MESSAGE_BYTES,
    ReadEntry, RefusalCode, ServerMessage,
};
use tokio::io::AsyncWriteExt;

// ---- the cases ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_frames_and_messages_are_refused_as_too_large() {
    let World {
        server,
        mut nina,
        mut anna,
        bo,
    } = world(short()).await;
    let reasons = with_honest_pair(&server, &mut nina, &mut anna, "oversize", async {
        let mut reasons = Vec::new();
        // One frame announcing 5 MiB: refused on its header, before any of it is buffered.
        let mut raw = Raw::connect(&server, &bo).await;
        raw.hello(Vec::new()).await;
        let too_big = (MAX_MESSAGE_BYTES + 1024 * 1024) as u64;
        let mut bytes = Raw::header(BINARY, true, too_big);
        bytes.extend_from_slice(&[0u8; 1024]);
        raw.write(&bytes).await;
        reasons.push(raw.refusal().await.0);
        // A message of 1 MiB fragments, each frame within the limit, 5 MiB in all.
        let mut raw = Raw::connect(&server, &bo).await;
        raw.hello(Vec::new()).await;
        let chunk = vec![0x5a; 1024 * 1024];
        for i in 0..5 {
            let opcode = if i == 0 { BINARY } else { CONTINUATION };
            raw.write(&Raw::frame(opcode, i == 4, &chunk)).await;
        }
        reasons.push(raw.refusal().await.0);
        reasons
    })
    .await;
    assert_eq!(
        reasons,
        vec![CloseReason::MessageTooLarge, CloseReason::MessageTooLarge]
    );
    let audited = audited(&server, "disconnect", &bo.author, 2).await;
    assert!(
        audited.iter().all(|d| d.contains("MessageTooLarge")),
        "{audited:?}"
    );
    no_connections_left(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_protocol_messages_are_refused_with_a_reason() {
    let World {
        server,
        mut nina,
        mut anna,
        bo,
    } = world(short()).await;
    let hello = wire::encode(&DeviceMessage::Hello(Hello {
        cursor: None,
        received: Vec::new(),
        priority: vec![patient("p1")],
        backfill: Vec::new(),
        upload: Vec::new(),
    }))
    .unwrap();
    let mut wrong_version = hello.clone();
    wrong_version[0] = wire::PROTOCOL_VERSION + 1;
    let mut trailing = hello.clone();
    trailing.push(0);
    let cases: Vec<(&str, Vec<u8>, CloseReason)> = vec![
        (
            "garbage",
            b"\x01\xff\xff\xff\xff\xff\xff".to_vec(),
            CloseReason::Malformed,
        ),
        ("empty", Vec::new(), CloseReason::Malformed),
        (
            "wrong version",
            wrong_version,
            CloseReason::UnsupportedVersion,
        ),
        (
            "truncated",
            hello[..hello.len() / 2].to_vec(),
            CloseReason::Malformed,
        ),
        ("trailing bytes", trailing, CloseReason::Malformed),
    ];
    let expected: Vec<CloseReason> = cases
        .iter()
        .map(|c| c.2)
        .chain([CloseReason::Malformed; 3])
        .collect();
    let got = with_honest_pair(&server, &mut nina, &mut anna, "malformed", async {
        let mut got = Vec::new();
        for (_, bytes, _) in &cases {
            let mut raw = Raw::connect(&server, &bo).await;
            raw.send_binary(bytes).await;
            got.push(raw.refusal().await.0);
        }
        // Text instead of binary.
        let mut raw = Raw::connect(&server, &bo).await;
        raw.write(&Raw::frame(TEXT, true, b"{\"hello\":1}")).await;
        got.push(raw.refusal().await.0);
        // A frame with reserved bits set, and one the client did not mask: not WebSocket.
        let mut raw = Raw::connect(&server, &bo).await;
        let mut frame = Raw::frame(BINARY, true, &hello);
        frame[0] |= 0x40;
        raw.write(&frame).await;
        got.push(raw.refusal().await.0);
        let mut raw = Raw::connect(&server, &bo).await;
        let mut frame = vec![0x80 | BINARY, hello.len() as u8];
        frame.extend_from_slice(&hello);
        raw.write(&frame).await;
        got.push(raw.refusal().await.0);
        got
    })
    .await;
    assert_eq!(got, expected);
    let audited = audited(&server, "disconnect", &bo.author, expected.len()).await;
    assert_eq!(
        audited
            .iter()
            .filter(|d| d.contains("UnsupportedVersion"))
            .count(),
        1,
        "{audited:?}"
    );
    assert_eq!(
        audited.iter().filter(|d| d.contains("Malformed")).count(),
        expected.len() - 1,
        "{audited:?}"
    );
    no_connections_left(&server).await;
}

/// Uploads `upload` in a Hello from bo's raw connection while the honest pair syncs; returns
/// the refusals of the upload's acknowledgement (the connection itself stays usable: it is then
/// closed by bo).
async fn upload_refusals(
    server: &TestServer,
    nina: &mut TestDevice,
    anna: &mut TestDevice,
    bo: &TestDevice,
    upload: Vec<DocChanges>,
) -> Vec<RefusalCode> {
    with_honest_pair(server, nina, anna, "upload", async {
        let mut raw = Raw::connect(server, bo).await;
        raw.hello(upload).await;
        let refused = raw.upload_ack(0).await;
        // The connection is still served: a read-log entry is acknowledged.
        raw.send(&DeviceMessage::ReadLog {
            entries: vec![ReadEntry {
                patient: patient("p1"),
                what: "overview".into(),
                at_ms: 0,
            }],
        })
        .await;
        while !matches!(
            raw.message().await,
            Some(ServerMessage::ReadLogAck { count: 1 })
        ) {}
        raw.write(&Raw::frame(CLOSE, true, &[])).await;
        refused.into_iter().map(|r| r.code).collect()
    })
    .await
}

/// The audit log holds one refusal of `device`'s changes about `p`, with `code`.
fn refused_once(server: &TestServer, device: &Author, p: &str, code: RefusalCode) {
    let audited = refusals_of(server, device, p);
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert!(audited[0].contains(&format!("{code:?}")), "{audited:?}");
}

fn refusals_of(server: &TestServer, device: &Author, p: &str) -> Vec<String> {
    audit_rows(server)
        .into_iter()
        .filter(|r| {
            r.action == "refuse"
                && r.device.as_deref() == Some(device.device.as_str())
                && r.patient.as_deref() == Some(p)
        })
        .map(|r| r.detail)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_automerge_bytes_in_an_upload_are_refused() {
    let World {
        server,
        mut nina,
        mut anna,
        bo,
    } = world(short()).await;
    let upload = changes(
        journal("p1"),
        vec![
            b"not an automerge change".to_vec(),
            vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0],
        ],
    );
    let codes = upload_refusals(&server, &mut nina, &mut anna, &bo, upload).await;
    assert_eq!(codes, vec![RefusalCode::Malformed, RefusalCode::Malformed]);
    // One record for the document and code, counting both.
    let audited = refusals_of(&server, &bo.author, "p1");
    assert_eq!(audited, vec!["Malformed 2 changes".to_string()]);
    assert!(server.audit.verify().unwrap().ok);
    no_connections_left(&server).await;
}

/// A valid journal note about `p`, written under `author`, made outside any device's store
/// (what a tampered app would upload).
fn forged_note(author: &Author, p: &str, id: &str) -> Vec<u8> {
    let mut doc = CareDocument::new(journal(p)).unwrap();
    let change = doc
        .change(author, at(10, 0), |e| {
            e.record(
                rid(id),
                EventBody::Note {
                    body: "Forged.".into(),
                    corrects: None,
                },
            )
        })
        .unwrap()
        .change
        .unwrap();
    change.raw_bytes().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_to_an_unassigned_persons_document_is_refused() {
    let World {
        server,
        mut nina,
        mut anna,
        bo,
    } = world(short()).await;
    // Bo cares for p1, not p2.
    let upload = changes(
        journal("p2"),
        vec![forged_note(&bo.author, "p2", "intrusion")],
    );
    let codes = upload_refusals(&server, &mut nina, &mut anna, &bo, upload).await;
    assert_eq!(codes, vec![RefusalCode::NotPermitted]);
    refused_once(&server, &bo.author, "p2", RefusalCode::NotPermitted);
    // Nothing of it reached the honest devices.
    quiet(nina.sync(&server).await);
    assert!(!has(&mut nina, "p2", "intrusion"));
    no_connections_left(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_under_a_foreign_actor_is_refused() {
    let World {
        server,
        mut nina,
        mut anna,
        bo,
    } = world(short()).await;
    // Bo uploads a note about p1 (which he may write) authored as nina's phone.
    let upload = changes(
        journal("p1"),
        vec![forged_note(&nina.author, "p1", "as-nina")],
    );
    let codes = upload_refusals(&server, &mut nina, &mut anna, &bo, upload).await;
    assert_eq!(codes, vec![RefusalCode::ForeignAuthor]);
    refused_once(&server, &bo.author, "p1", RefusalCode::ForeignAuthor);
    quiet(nina.sync(&server).await);
    assert!(!has(&mut nina, "p1", "as-nina"));
    no_connections_left(&server).await;
}

/// Bo's splice into nina's draft about p1, made on the draft but claiming to depend on the
/// journal's genesis alone (a tampered app). Automerge would take it on the server, which holds
/// the draft, and pass it on; a phone meeting it before the draft failed inside Automerge and
/// stopped taking that person's journal. Refused as `Invalid` and audited; nina's draft stays
/// hers, and a phone catching up on p1 afterwards gets the draft.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_splice_into_a_text_outside_the_changes_past_is_refused() {
    let World {
        server,
        mut nina,
        mut anna,
        mut bo,
    } = world(short()).await;
    let draft = TextKey::NoteDraft(rid("d1"));
    let author = nina.author.clone();
    nina.repo
        .change(&journal("p1"), &author, at(9, 0), |e| {
            e.start_draft(rid("d1"), "Slept well.")
        })
        .unwrap();
    quiet(nina.sync(&server).await);

    let doc = nina.repo.get(&journal("p1")).unwrap().save();
    let mut fork = AutoCommit::load(&doc)
        .unwrap()
        .with_actor(bo.author.actor_id());
    let (_, texts) = fork.get(automerge::ROOT, "texts").unwrap().unwrap();
    let (_, text) = fork.get(&texts, draft.to_string()).unwrap().unwrap();
    fork.splice_text(&text, 0, 0, "Bo: ").unwrap();
    let message = serde_json::to_string(&ChangeMessage {
        author: bo.author.clone(),
        writes: vec![format!("texts/{draft}")],
    })
    .unwrap();
    let hash = fork
        .commit_with(CommitOptions::default().with_message(message).with_time(1))
        .unwrap();
    let mut forged = fork.get_change_by_hash(&hash).unwrap().decode();
    forged.deps = vec![genesis_hash(&journal("p1")).unwrap()];
    forged.hash = None;
    let forged = automerge::Change::from(forged);

    let upload = changes(journal("p1"), vec![forged.raw_bytes().to_vec()]);
    let codes = upload_refusals(&server, &mut nina, &mut anna, &bo, upload).await;
    assert_eq!(codes, vec![RefusalCode::Invalid]);
    refused_once(&server, &bo.author, "p1", RefusalCode::Invalid);

    quiet(nina.sync(&server).await);
    let text_of = |d: &mut TestDevice| d.repo.get(&journal("p1")).unwrap().text(&draft);
    assert_eq!(text_of(&mut nina).as_deref(), Some("Slept well."));
    quiet(bo.sync(&server).await);
    assert_eq!(text_of(&mut bo).as_deref(), Some("Slept well."));
    no_connections_left(&server).await;
}

/// An upload of more changes to one document than the server reads of its feed to find other
/// writers' changes (1,024) is stored whole. The check counted the upload's own changes as
/// another writer's, so such an upload was always "raced": never stored, its connection closed
/// as `Internal` (a phone back from days offline with many small records would have been stuck
/// for good), and on SQLite the failed inner group failed every other device's step of the
/// same group too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_of_thousands_of_changes_to_one_document_is_stored() {
    const NOTES: usize = 1_500;
    let World {
        server,
        mut nina,
        mut anna,
        mut bo,
    } = world(short()).await;
    for i in 0..NOTES {
        note(&mut bo, "p1", &format!("many-{i}"), "Visit: all well.");
    }
    let upload = pending(&mut bo, &journal("p1"));
    assert_eq!(upload.len(), NOTES);
    let refused = with_honest_pair(&server, &mut nina, &mut anna, "many", async {
        let mut raw = Raw::connect(&server, &bo).await;
        raw.hello(changes(journal("p1"), upload)).await;
        raw.upload_ack(0).await
    })
    .await;
    assert!(refused.is_empty(), "{refused:?}");
    // Nina, who cares for p1 too, receives every note.
    quiet(nina.sync(&server).await);
    for i in [0, NOTES / 2, NOTES - 1] {
        assert!(has(&mut nina, "p1", &format!("many-{i}")), "note {i}");
    }
    let notes = nina.repo.get(&journal("p1")).unwrap().events().len();
    assert_eq!(notes, NOTES);
    assert!(server.audit.verify().unwrap().ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_never_reads_is_closed_by_the_send_timeout() {
    use rand::{Rng, SeedableRng};
    // Batches of up to 1 MiB, so that the window of batches in flight is more than the socket
    // buffers hold; only the send timeout is short (the idle timeout is the production one).
    let limits = Limits {
        batch_bytes: 1024 * 1024,
        send_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let World {
        server,
        mut nina,
        mut anna,
        bo,
    } = world(limits).await;
    // About 6 MB of p1's journal on the server (incompressible text, 750 KB a change).
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
    let author = nina.author.clone();
    for c in 0..8 {
        nina.repo
            .change(&journal("p1"), &author, at(8, c), |e| {
                for n in 0..50 {
                    let body: String = (0..15_000)
                        .map(|_| char::from(rng.random_range(b'a'..=b'z')))
                        .collect();
                    e.record(
                        rid(&format!("big-{c}-{n}")),
                        EventBody::Note {
                            body,
                            corrects: None,
                        },
                    )?;
                }
                Ok(())
            })
            .unwrap();
    }
    quiet(nina.sync(&server).await);

    let received = with_honest_pair(&server, &mut nina, &mut anna, "reader", async {
        // Bo's phone asks for everything, with a small receive buffer, and never reads.
        let mut raw = Raw::connect_with(&server, &bo, Some(4096)).await;
        raw.hello(Vec::new()).await;
        let audited = audited(&server, "disconnect", &bo.author, 1).await;
        assert!(
            audited[0].contains("Stalled") && audited[0].contains("did not read"),
            "{audited:?}"
        );
        // What the server had written before it gave up: at most its window of batches; then
        // the connection ends (there was no room left for the reason).
        let mut batches = 0;
        while let Some((opcode, bytes)) = tokio::time::timeout(PATIENCE, raw.frame_in())
            .await
            .expect("the connection was not closed")
        {
            if opcode == BINARY
                && matches!(
                    wire::decode(&bytes),
                    Ok(ServerMessage::Batch { .. } | ServerMessage::Batch3 { .. })
                )
            {
                batches += 1;
            }
        }
        batches
    })
    .await;
    assert!(received <= MAX_IN_FLIGHT, "{received} batches");
    no_connections_left(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_writers_are_closed_after_a_timeout() {
    let limits = Limits {
        max_connections: 8,
        ..short()
    };
    let World {
        server,
        mut nina,
        mut anna,
        bo,
    } = world(limits.clone()).await;
    let hello = wire::encode(&DeviceMessage::Hello(Hello {
        cursor: None,
        received: Vec::new(),
        priority: Vec::new(),
        backfill: Vec::new(),
        upload: Vec::new(),
    }))
    .unwrap();
    with_honest_pair(&server, &mut nina, &mut anna, "writer", async {
        // Before authentication: only a TCP connection; half a TLS record in the handshake;
        // half a TLS record after it; half an HTTP request. Each is closed by the server.
        let tcp_only = tcp(&server, None).await;
        let mut half_hello = tcp(&server, None).await;
        half_hello.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
        let (mut half_record, _) = tls(&server, tcp(&server, None).await).await.into_inner();
        half_record
            .write_all(&[0x17, 0x03, 0x03, 0x00, 0x40, 1, 2, 3])
            .await
            .unwrap();
        let mut half_request = tls(&server, tcp(&server, None).await).await;
        half_request
            .write_all(b"GET /v1/sync HTTP/1.1\r\nHost: localhost\r\nUpgr")
            .await
            .unwrap();
        half_request.flush().await.unwrap();
        // After authentication: half a WebSocket frame; and, on another connection of bo's
        // (which replaces the first), half a TLS record.
        let mut half_frame = Raw::connect(&server, &bo).await;
        half_frame.send_binary(&hello).await;
        let mut bytes = Raw::frame(BINARY, true, &hello);
        bytes.truncate(bytes.len() / 2);
        half_frame.write(&bytes).await;
        let (reason, _) = half_frame.refusal().await;
        assert_eq!(reason, CloseReason::Stalled);
        let after_upgrade = Raw::connect(&server, &bo).await;
        let (mut after_upgrade, _) = after_upgrade.io.into_inner();
        after_upgrade
            .write_all(&[0x17, 0x03, 0x03, 0x10])
            .await
            .unwrap();

        closed_by_server(tcp_only).await;
        closed_by_server(half_hello).await;
        closed_by_server(half_record).await;
        closed_by_server(half_request).await;
        closed_by_server(after_upgrade).await;
    })
    .await;
    let audited = audited(&server, "disconnect", &bo.author, 2).await;
    assert_eq!(audited.len(), 2, "{audited:?}");
    assert!(audited.iter().all(|d| d.contains("Stalled")), "{audited:?}");
    no_connections_left(&server).await;
    // Nothing is held: every one of the server's connection permits can be taken at once.
    let all = (0..limits.max_connections).map(|_| server.https("GET", "/healthz", None, None));
    let statuses = tokio::time::timeout(PATIENCE, futures_util::future::join_all(all))
        .await
        .expect("a connection permit was still held");
    assert!(
        statuses.iter().all(|(status, _)| *status == 200),
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_and_message_floods_are_bounded_and_refused() {
    let limits = Limits {
        max_connections: 6,
        messages_per_second: 5.0,
        message_burst: 10.0,
        ..short()
    };
    let World {
        server,
        mut nina,
        mut anna,
        bo,
    } = world(limits.clone()).await;
    let (reason, acks) = with_honest_pair(&server, &mut nina, &mut anna, "flood", async {
        // Four times as many connections as the server takes, none of them saying anything:
        // at most `max_connections` are served at once, each is closed after the handshake
        // timeout, and the rest wait their turn (the honest devices among them).
        let mut flood = Vec::new();
        for _ in 0..4 * limits.max_connections {
            flood.push(tcp(&server, None).await);
        }
        // Bo's phone floods the sync connection with messages: 50 at once, 10 allowed.
        let mut raw = Raw::connect(&server, &bo).await;
        raw.hello(Vec::new()).await;
        let read_log = wire::encode(&DeviceMessage::ReadLog {
            entries: Vec::new(),
        })
        .unwrap();
        let mut bytes = Vec::new();
        for _ in 0..50 {
            bytes.extend(Raw::frame(BINARY, true, &read_log));
        }
        raw.write(&bytes).await;
        let (reason, before) = raw.refusal().await;
        let acks = before
            .iter()
            .filter(|m| matches!(m, ServerMessage::ReadLogAck { .. }))
            .count();
        for io in flood {
            closed_by_server(io).await;
        }
        (reason, acks)
    })
    .await;
    assert_eq!(reason, CloseReason::ProtocolViolation);
    // The burst was served (the Hello took one token), nothing beyond it.
    assert!((1..=10).contains(&acks), "{acks} messages served");
    let audited = audited(&server, "disconnect", &bo.author, 1).await;
    assert!(audited[0].contains("too many messages"), "{audited:?}");
    no_connections_left(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrollment_flood_with_wrong_codes_is_rate_limited() {
    let limits = Limits {
        enroll_per_second: 2.0,
        enroll_burst: 5.0,
        ..short()
    };
    // `world` enrolls three phones: the bucket starts with two attempts left.
    let World {
        server,
        mut nina,
        mut anna,
        ..
    } = world(limits).await;
    let statuses = with_honest_pair(&server, &mut nina, &mut anna, "enroll", async {
        let mut statuses = Vec::new();
        for i in 0..40 {
            let body = format!("{{\"code\":\"WRONGCODE{i:03}\"}}");
            let (status, _) = server.https("POST", "/v1/enroll", None, Some(&body)).await;
            statuses.push(status);
        }
        statuses
    })
    .await;
    assert!(
        statuses.iter().all(|s| *s == 400 || *s == 429),
        "{statuses:?}"
    );
    let wrong = statuses.iter().filter(|s| **s == 400).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(limited > 0 && wrong >= 2, "{statuses:?}");
    let rows = audit_rows(&server);
    let failures = rows
        .iter()
        .filter(|r| r.action == "auth-failed" && r.detail.contains("enrollment"))
        .count();
    assert_eq!(
        failures, wrong,
        "every wrong code that was looked at is audited"
    );
    let runs = statuses
        .windows(2)
        .filter(|w| w[0] != 429 && w[1] == 429)
        .count();
    let rate_limited = rows.iter().filter(|r| r.action == "rate-limited").count();
    assert_eq!(rate_limited, runs, "each run of refusals is audited once");
    // A real code goes through once the attempts slow down.
    let code = server.directory.enroll(&uid("anna"), now_ms()).unwrap();
    let body = format!("{{\"code\":\"{code}\"}}");
    tokio::time::timeout(PATIENCE, async {
        loop {
            match server.https("POST", "/v1/enroll", None, Some(&body)).await {
                (200, _) => return,
                (429, _) => tokio::time::sleep(Duration::from_millis(200)).await,
                other => panic!("{other:?}"),
            }
        }
    })
    .await
    .expect("enrollment stayed refused");
    assert!(server.audit.verify().unwrap().ok);
}
