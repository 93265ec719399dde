//! Issue 13, the slow link: compressed frames negotiated by the hello (both ways with older
//! peers), a compressed upload and batch through the real server over TLS, a decompression
//! bomb refused on that device's connection only, batches that grow on a fast link, a visit
//! saved as one change per document (whole or not at all after a SIGKILL), and uploads on a
//! short window: the most urgent first, and nothing acknowledged sent again after a cut.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use nara_tests::hostile::{World, audited, short, with_honest_pair, world};
use nara_tests::net::{SyncEnd, TestDevice, TestServer};
use nara_tests::raw::Raw;
use nara_tests::sim::Assignments;
use nara_tests::team::{add_team, assign, journal, note, quiet, uid};
use nara_tests::{at, given, november, patient, rid};
use rand::{Rng, SeedableRng};
use server::Limits;
use server::directory::Directory;
use sync_core::model::{EventBody, ObservationCode};
use sync_core::protocol::compress::{CODEC_ZSTD, COMPRESSED_FRAME};
use sync_core::protocol::wire::{self, CloseReason, DeviceMessage, DocChanges, ServerMessage};
use sync_core::protocol::{
    DeviceConfig, DeviceEvent, DeviceSession, Peer, ServerConfig, ServerSession,
};
use sync_core::repo::Repo;
use sync_core::store::{MemoryStore, SqliteStore};
use sync_core::{Author, ChangeHash, DocumentId, RecordId, Role, Timestamp};

const NOW: Timestamp = Timestamp(1_795_478_400_000);

fn many_notes(device: &mut TestDevice, p: &str, n: usize) {
    for i in 0..n {
        note(
            device,
            p,
            &format!("{}-{i}", device.author.user),
            "Visited at nine. Ate breakfast, took a short walk, slept well after lunch.",
        );
    }
}

fn held(device: &mut TestDevice, p: &str) -> usize {
    device.repo.get(&journal(p)).unwrap().events().len()
}

/// A server with `limits`, the team on it, Anna and Nina assigned to `p1`.
async fn anna_and_nina_on(limits: Limits) -> TestServer {
    let server = TestServer::start_with(limits).await;
    add_team(&server);
    assign(&server, "anna", "p1");
    assign(&server, "nina", "p1");
    server
}

/// The bytes of changes in each batch a recording device received, in order.
fn batch_sizes(device: &TestDevice) -> Vec<usize> {
    device
        .received
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Batch3 { docs, .. } => Some(
                docs.iter()
                    .flat_map(|d| &d.changes)
                    .map(Vec::len)
                    .sum::<usize>(),
            ),
            _ => None,
        })
        .collect()
}

// ---- negotiation and the real server over TLS ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_upload_and_batch_round_trip_through_the_server() {
    let server = anna_and_nina_on(Limits::default()).await;
    let mut anna = TestDevice::enroll(&server, "anna").await;
    let mut nina = TestDevice::enroll(&server, "nina").await;
    many_notes(&mut anna, "p1", 40);
    let events = quiet(anna.sync(&server).await);
    assert!(anna.session.is_compressing());
    let stored: usize = events
        .iter()
        .map(|e| match e {
            DeviceEvent::UploadAcknowledged { changes } => *changes,
            _ => 0,
        })
        .sum();
    assert_eq!(stored, 40, "{events:?}");
    assert!(anna.repo.pending().unwrap().is_empty());
    nina.record = true;
    quiet(nina.sync(&server).await);
    assert_eq!(held(&mut nina, "p1"), 40);
    // The batch came compressed, and far smaller than the changes it carries.
    let compressed: Vec<&Vec<u8>> = nina
        .frames
        .iter()
        .filter(|f| f.first() == Some(&COMPRESSED_FRAME))
        .collect();
    assert!(!compressed.is_empty(), "no compressed frame arrived");
    let batch_bytes: usize = batch_sizes(&nina).iter().sum();
    let wire_bytes: usize = compressed.iter().map(|f| f.len()).sum();
    assert!(
        wire_bytes * 3 < batch_bytes,
        "{wire_bytes} bytes on the wire for {batch_bytes} bytes of changes"
    );
}

/// Batches follow the link (`protocol/server/pace.rs`) through the real server over TLS: a
/// phone catching up on localhost is sent batches of the floor first, then, once its
/// acknowledgements show the link fast, batches of up to the ceiling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_link_is_sent_larger_batches_through_the_server() {
    const FLOOR: usize = 2 * 1024;
    const CEILING: usize = 32 * 1024;
    let server = anna_and_nina_on(Limits {
        batch_bytes: FLOOR,
        batch_bytes_fast: CEILING,
        ..Limits::default()
    })
    .await;
    let mut anna = TestDevice::enroll(&server, "anna").await;
    let mut nina = TestDevice::enroll(&server, "nina").await;
    many_notes(&mut anna, "p1", 300);
    quiet(anna.sync(&server).await);
    nina.record = true;
    quiet(nina.sync(&server).await);
    assert_eq!(held(&mut nina, "p1"), 300);
    let batches: Vec<usize> = batch_sizes(&nina)
        .into_iter()
        .filter(|&bytes| bytes > 0)
        .collect();
    let largest_change = 2 * 1024;
    assert!(batches[0] < FLOOR + largest_change, "{batches:?}");
    assert!(
        batches.iter().any(|&b| b >= CEILING),
        "no batch grew to the ceiling: {batches:?}"
    );
    assert!(
        batches.iter().all(|&b| b < CEILING + largest_change),
        "{batches:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_device_is_never_sent_a_compressed_frame() {
    let server = TestServer::start().await;
    add_team(&server);
    assign(&server, "anna", "p1");
    assign(&server, "nina", "p1");
    let mut anna = TestDevice::enroll(&server, "anna").await;
    many_notes(&mut anna, "p1", 40);
    quiet(anna.sync(&server).await);
    // A device of a build before compressed frames: its hello goes plain.
    let mut old = TestDevice::enroll(&server, "nina").await;
    old.session = DeviceSession::new(DeviceConfig {
        compress: false,
        ..DeviceConfig::default()
    });
    old.record = true;
    quiet(old.sync(&server).await);
    assert_eq!(held(&mut old, "p1"), 40);
    assert!(!old.frames.is_empty());
    assert!(
        old.frames
            .iter()
            .all(|f| f.first() != Some(&COMPRESSED_FRAME)),
        "a compressed frame went to a device that did not ask for them"
    );
    // What the old device sends is taken as before.
    note(&mut old, "p1", "old-1", "Written by an old build.");
    quiet(old.sync(&server).await);
    assert!(old.repo.pending().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_compressed_frames_is_spoken_to_plain() {
    // A server that does not take compressed frames answers as one from before them did.
    let server = anna_and_nina_on(Limits {
        compress: false,
        ..Limits::default()
    })
    .await;
    let mut anna = TestDevice::enroll(&server, "anna").await;
    note(
        &mut anna,
        "p1",
        "a-1",
        "Written before the server was upgraded.",
    );
    // The compressed hello is refused as an unsupported version; nothing was stored.
    let end = anna.sync(&server).await;
    let SyncEnd::Closed(events) = end else {
        panic!("expected the compressed hello to be refused, got {end:?}");
    };
    assert!(
        events.iter().any(|e| matches!(
            e,
            DeviceEvent::Closed {
                reason: CloseReason::UnsupportedVersion,
                ..
            }
        )),
        "{events:?}"
    );
    assert!(anna.session.fell_back_to_plain());
    assert_eq!(anna.repo.pending().unwrap().len(), 1);
    // The next connection speaks plain, and works.
    quiet(anna.sync(&server).await);
    assert!(!anna.session.is_compressing());
    assert!(anna.repo.pending().unwrap().is_empty());
    let mut nina = TestDevice::enroll(&server, "nina").await;
    nina.session = DeviceSession::new(DeviceConfig {
        compress: false,
        ..DeviceConfig::default()
    });
    quiet(nina.sync(&server).await);
    assert_eq!(held(&mut nina, "p1"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_runtime_falls_back_to_plain_within_one_sync() {
    let server = TestServer::start_with(Limits {
        compress: false,
        ..Limits::default()
    })
    .await;
    add_team(&server);
    assign(&server, "anna", "p1");
    let home = tempfile::tempdir().unwrap();
    let code = server
        .directory
        .enroll(&uid("anna"), nara_tests::now_ms())
        .unwrap();
    let request = nara_client::EnrollRequest {
        server: format!("https://localhost:{}", server.addr.port()),
        code,
        pin: Some(server.pin.clone()),
        ..nara_client::EnrollRequest::default()
    };
    let (device, _) = nara_client::Device::enroll(home.path(), &request)
        .await
        .unwrap();
    device
        .change(&journal("p1"), at(9, 0), |e| {
            e.record(
                rid("n-1"),
                EventBody::Note {
                    body: "A note.".into(),
                    corrects: None,
                },
            )
        })
        .unwrap();
    let report = device.sync_once().await.unwrap();
    assert_eq!(report.uploaded, 1);
    assert_eq!(report.pending, 0);
}

// ---- a decompression bomb ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zstd_bomb_is_refused_and_the_honest_pair_keeps_syncing() {
    let World {
        server,
        mut nina,
        mut anna,
        mut bo,
    } = world(short()).await;
    // 256 MiB of zeros in a few kilobytes, as a compressed hello.
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        std::io::Write::write_all(&mut encoder, &zeros).unwrap();
    }
    let mut bomb = vec![COMPRESSED_FRAME, CODEC_ZSTD];
    bomb.extend(encoder.finish().unwrap());
    assert!(bomb.len() < 64 * 1024);
    let reason = with_honest_pair(&server, &mut nina, &mut anna, "zstd", async {
        let mut raw = Raw::connect(&server, &bo).await;
        raw.send_binary(&bomb).await;
        raw.refusal().await.0
    })
    .await;
    assert_eq!(reason, CloseReason::MessageTooLarge);
    let audited = audited(&server, "disconnect", &bo.author, 1).await;
    assert!(
        audited.iter().any(|d| d.contains("MessageTooLarge")),
        "{audited:?}"
    );
    // Bo's next, honest, connection is served as usual.
    note(&mut bo, "p1", "bo-1", "A visit.");
    quiet(bo.sync(&server).await);
    assert!(bo.repo.pending().unwrap().is_empty());
}

// ---- a visit saved together ----

/// Visits saved by a child process killed at random moments: each is in the store whole (its
/// journal change and its administration-log change) or not at all, and each reported saved is
/// there.
#[test]
fn a_visit_is_whole_or_absent_after_sigkill() {
    let runs: u64 = std::env::var("VISIT_CRASH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let seed: u64 = rand::random();
    eprintln!("visit crash test: {runs} runs, seed {seed}");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("device.db");
    let mut saved: Vec<u64> = Vec::new();
    let mut next = 0u64;
    let p = patient("p-1");
    let docs = [
        DocumentId::journal(&p, november()),
        DocumentId::administrations(&p, november()),
    ];
    for run in 0..runs {
        let mut child = Command::new(env!("CARGO_BIN_EXE_visit-writer"))
            .arg(&db)
            .arg(next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.random_range(0..120_000)));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(status.code().is_none(), "run {run}: the writer exited");
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        for line in out.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            let n: u64 = line.trim().strip_prefix("saved ").unwrap().parse().unwrap();
            saved.push(n);
            next = next.max(n + 1);
        }
        next += 1;
        let store = SqliteStore::open(&db).unwrap();
        assert_eq!(store.integrity_check().unwrap(), Ok(()));
        let mut repo = Repo::new(store);
        let mut present: BTreeSet<RecordId> = BTreeSet::new();
        for doc in &docs {
            if let Ok(d) = repo.get(doc) {
                present.extend(d.events().keys().cloned());
            }
        }
        for n in 0..next {
            let parts = ["start", "note", "stop", "dose-a", "dose-b"]
                .map(|s| present.contains(&rid(&format!("v{n}-{s}"))));
            assert!(
                parts.iter().all(|&x| x) || parts.iter().all(|&x| !x),
                "run {run} (seed {seed}): visit {n} is in the store in part: {parts:?}"
            );
            if saved.contains(&n) {
                assert!(parts[0], "run {run} (seed {seed}): visit {n} was lost");
            }
        }
    }
    assert!(
        saved.len() as u64 >= runs / 4,
        "the writer hardly wrote: the test proves little"
    );
}

#[test]
fn a_visit_refused_in_part_writes_nothing() {
    let author = Author::new(
        uid("anna"),
        Role::Carer,
        sync_core::DeviceId::new("anna-phone").unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("phone.db");
    let mut repo = Repo::new(SqliteStore::open(&path).unwrap());
    let p = patient("p1");
    let docs = [
        DocumentId::journal(&p, november()),
        DocumentId::administrations(&p, november()),
    ];
    // The second document's records are refused (a carer may not acknowledge flags): the
    // first document's change is not kept either, on disk or in memory.
    let refused = repo.change_together(&docs, &author, at(10, 0), |doc, e| {
        if *doc == docs[0] {
            e.record(
                rid("n-1"),
                EventBody::Note {
                    body: "Part of a visit.".into(),
                    corrects: None,
                },
            )
        } else {
            e.record(
                rid("ack-1"),
                EventBody::FlagAcknowledgement {
                    flag: "double-dose".into(),
                    covers: vec![],
                    comment: None,
                },
            )
        }
    });
    assert!(refused.is_err());
    assert!(repo.pending().unwrap().is_empty());
    assert!(repo.get(&docs[0]).unwrap().events().is_empty());
    // A whole visit: one change per document, durable once it returns.
    let saved = repo
        .change_together(&docs, &author, at(10, 0), |doc, e| {
            if *doc == docs[0] {
                for i in 0..3 {
                    e.record(
                        rid(&format!("n-{i}")),
                        EventBody::Note {
                            body: format!("Task {i} done."),
                            corrects: None,
                        },
                    )?;
                }
                Ok(())
            } else {
                e.record(
                    rid("dose-1"),
                    given("o1", &rid("o1"), "2026-11-24T08:00", at(9, 0)),
                )
            }
        })
        .unwrap();
    assert_eq!(saved.iter().flatten().count(), 2);
    drop(repo);
    let mut repo = Repo::new(SqliteStore::open(&path).unwrap());
    assert_eq!(repo.pending().unwrap().len(), 2);
    assert_eq!(repo.get(&docs[0]).unwrap().events().len(), 3);
    assert_eq!(repo.get(&docs[1]).unwrap().events().len(), 1);
    assert_eq!(repo.incarnation().unwrap().written, 2);
}

// ---- a short window: order, and nothing acknowledged sent again ----

struct Phone {
    author: Author,
    repo: Repo<MemoryStore>,
    session: DeviceSession,
}

struct Server {
    repo: Repo<MemoryStore>,
    policy: Assignments,
}

/// The changes a device message uploads, in order.
fn uploaded(bytes: &[u8]) -> Vec<(DocumentId, Vec<u8>)> {
    let docs: Vec<DocChanges> = match wire::decode::<DeviceMessage>(bytes).unwrap() {
        DeviceMessage::Hello(h)
        | DeviceMessage::TimedHello { hello: h, .. }
        | DeviceMessage::Hello3 { hello: h, .. } => h.upload,
        DeviceMessage::Upload { docs, .. } | DeviceMessage::Upload3 { docs, .. } => docs,
        _ => Vec::new(),
    };
    docs.into_iter()
        .flat_map(|d| d.changes.into_iter().map(move |c| (d.doc.clone(), c)))
        .collect()
}

fn hash_of(change: &[u8]) -> ChangeHash {
    automerge::Change::from_bytes(change.to_vec())
        .unwrap()
        .hash()
}

/// A day written offline: notes to p1's journal, then an observation in p2's journal, then a
/// dose for p1, then another note.
fn day(phone: &mut Phone) {
    let p1 = patient("p1");
    let p2 = patient("p2");
    let author = phone.author.clone();
    for i in 0..3 {
        phone
            .repo
            .change(&journal("p1"), &author, at(9, i), |e| {
                e.record(
                    rid(&format!("n-{i}")),
                    EventBody::Note {
                        body: format!("Note {i}."),
                        corrects: None,
                    },
                )
            })
            .unwrap();
    }
    phone
        .repo
        .change(
            &DocumentId::journal(&p2, november()),
            &author,
            at(10, 0),
            |e| {
                e.record(
                    rid("obs-1"),
                    EventBody::Observation {
                        code: ObservationCode::HeartRate,
                        value: 72.0,
                        unit: "/min".into(),
                        occurred_at: at(10, 0),
                    },
                )
            },
        )
        .unwrap();
    phone
        .repo
        .change(
            &DocumentId::administrations(&p1, november()),
            &author,
            at(11, 0),
            |e| {
                e.record(
                    rid("dose-1"),
                    given("o1", &rid("o1"), "2026-11-24T08:00", at(11, 0)),
                )
            },
        )
        .unwrap();
    phone
        .repo
        .change(&journal("p1"), &author, at(12, 0), |e| {
            e.record(
                rid("n-3"),
                EventBody::Note {
                    body: "Note 3.".into(),
                    corrects: None,
                },
            )
        })
        .unwrap();
}

fn setup() -> (Phone, Server) {
    let author = Author::new(
        uid("anna"),
        Role::Carer,
        sync_core::DeviceId::new("anna-phone").unwrap(),
    );
    let mut policy = Assignments::default();
    policy.assign(&author.user, [&patient("p1"), &patient("p2")]);
    let phone = Phone {
        author,
        repo: Repo::new(MemoryStore::new()),
        // One change per upload: each is acknowledged on its own.
        session: DeviceSession::new(DeviceConfig {
            upload_bytes: 1,
            ..DeviceConfig::default()
        }),
    };
    let server = Server {
        repo: Repo::new(MemoryStore::new()),
        policy,
    };
    (phone, server)
}

fn server_session(phone: &Phone) -> ServerSession {
    ServerSession::new(
        Peer {
            author: phone.author.clone(),
        },
        ServerConfig::default(),
    )
}

/// Delivers `bytes` to the server (as the server's shell does: the feed moved, every session
/// looks at it) and everything it answers to the phone; returns the phone's answers.
fn deliver(
    phone: &mut Phone,
    server: &mut Server,
    s: &mut ServerSession,
    bytes: &[u8],
) -> Vec<Vec<u8>> {
    s.handle_bytes(&mut server.repo, &server.policy, bytes, NOW);
    s.feed_advanced(&mut server.repo, &server.policy);
    let mut back = Vec::new();
    while let Some(down) = s.poll_transmit() {
        phone.session.handle_bytes(&mut phone.repo, &down, NOW);
        back.extend(std::iter::from_fn(|| phone.session.poll_transmit()));
    }
    back
}

#[test]
fn uploads_go_most_urgent_first_and_nothing_acknowledged_goes_again_after_a_cut() {
    let (mut phone, mut server) = setup();
    day(&mut phone);
    let all: Vec<(DocumentId, ChangeHash)> = phone.repo.pending().unwrap();
    assert_eq!(all.len(), 6);
    let mut s = server_session(&phone);
    phone.session.connect(&mut phone.repo, NOW).unwrap();
    let first: Vec<Vec<u8>> = std::iter::from_fn(|| phone.session.poll_transmit()).collect();
    // The hello and three more uploads (four awaiting acknowledgement), one change each:
    // the dose first, then the observation, then p1's notes in the order written.
    let order: Vec<DocumentId> = first
        .iter()
        .flat_map(|b| uploaded(b))
        .map(|(d, _)| d)
        .collect();
    assert_eq!(
        order,
        vec![
            DocumentId::administrations(&patient("p1"), november()),
            DocumentId::journal(&patient("p2"), november()),
            journal("p1"),
            journal("p1"),
        ]
    );
    // The window closes after the server got the hello and the first upload: both are
    // acknowledged (and the catch-up after each proves them); the rest is lost on the wire.
    let mut acked: BTreeSet<ChangeHash> = BTreeSet::new();
    for bytes in &first[..2] {
        acked.extend(uploaded(bytes).iter().map(|(_, c)| hash_of(c)));
        let answers = deliver(&mut phone, &mut server, &mut s, bytes);
        for a in answers {
            // Acknowledgements of batches reach the server; more uploads do not.
            if matches!(
                wire::decode::<DeviceMessage>(&a).unwrap(),
                DeviceMessage::BatchAck { .. }
            ) {
                deliver(&mut phone, &mut server, &mut s, &a);
            }
        }
    }
    phone.session.disconnected();
    assert_eq!(phone.repo.pending().unwrap().len(), 4);
    // The next window: only the rest goes up.
    let mut s = server_session(&phone);
    phone.session.connect(&mut phone.repo, NOW).unwrap();
    let mut sent: Vec<ChangeHash> = Vec::new();
    let mut queue: Vec<Vec<u8>> = std::iter::from_fn(|| phone.session.poll_transmit()).collect();
    while !queue.is_empty() {
        let mut next = Vec::new();
        for bytes in queue {
            sent.extend(uploaded(&bytes).iter().map(|(_, c)| hash_of(c)));
            next.extend(deliver(&mut phone, &mut server, &mut s, &bytes));
        }
        queue = next;
    }
    let sent_set: BTreeSet<ChangeHash> = sent.iter().copied().collect();
    assert_eq!(sent.len(), 4, "{sent:?}");
    assert!(
        sent_set.is_disjoint(&acked),
        "acknowledged changes went again"
    );
    let rest: BTreeSet<ChangeHash> = all
        .iter()
        .map(|(_, h)| *h)
        .filter(|h| !acked.contains(h))
        .collect();
    assert_eq!(sent_set, rest);
    assert!(phone.repo.pending().unwrap().is_empty());
    // The server holds the whole day.
    for (doc, hash) in &all {
        assert!(
            server
                .repo
                .get(doc)
                .unwrap()
                .automerge_change(hash)
                .is_some()
        );
    }
}
