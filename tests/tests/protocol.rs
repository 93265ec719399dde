//! The sync protocol's state machines driven directly: catch-up, resumption after a cut,
//! priority, bounds, access, hostile bytes and the Automerge-sync fallback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use nara_tests::sim::Assignments;
use nara_tests::*;
use sync_core::model::EventBody;
use sync_core::protocol::wire::{self, CloseReason, DeviceMessage, ServerMessage};
use sync_core::protocol::{
    AccessPolicy, DeviceConfig, DeviceEvent, DeviceSession, Peer, ServerConfig, ServerEvent,
    ServerSession,
};
use sync_core::repo::Repo;
use sync_core::store::{MemoryStore, Store};
use sync_core::{Author, DocumentId, PatientId, Timestamp};

const NOW: Timestamp = Timestamp(1_795_478_400_000);

struct Phone {
    author: Author,
    repo: Repo<MemoryStore>,
    session: DeviceSession,
    events: Vec<DeviceEvent>,
}

impl Phone {
    fn new(author: Author) -> Self {
        Self {
            author,
            repo: Repo::new(MemoryStore::new()),
            session: DeviceSession::new(DeviceConfig::default()),
            events: Vec::new(),
        }
    }

    fn note(&mut self, p: &PatientId, id: &str, body: &str) {
        let doc = DocumentId::journal(p, november());
        self.repo
            .change(&doc, &self.author, at(9, 0), |e| {
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
}

struct Server {
    repo: Repo<MemoryStore>,
    policy: Assignments,
}

impl Server {
    fn new() -> Self {
        Self {
            repo: Repo::new(MemoryStore::new()),
            policy: Assignments::default(),
        }
    }
    fn assign(&mut self, who: &Author, patients: &[&PatientId]) {
        self.policy
            .by_user
            .entry(who.user.clone())
            .or_default()
            .extend(patients.iter().map(|p| (*p).clone()));
    }
}

/// Every message of one connection, as sent.
#[derive(Default)]
struct Wire {
    up: Vec<Vec<u8>>,
    down: Vec<Vec<u8>>,
    server_events: Vec<ServerEvent>,
}

/// Runs a connection until quiet, or until `cut_after` server messages were delivered (then the
/// connection breaks: everything in flight is lost).
fn run(
    phone: &mut Phone,
    server: &mut Server,
    config: ServerConfig,
    cut_after: Option<usize>,
) -> Wire {
    let mut w = Wire::default();
    let mut session = ServerSession::new(
        Peer {
            author: phone.author.clone(),
        },
        config,
    );
    phone.session.connect(&mut phone.repo, NOW).unwrap();
    let mut delivered_down = 0;
    loop {
        let mut moved = false;
        while let Some(b) = phone.session.poll_transmit() {
            moved = true;
            w.up.push(b.clone());
            session.handle_bytes(&mut server.repo, &server.policy, &b, NOW);
        }
        w.server_events
            .extend(std::iter::from_fn(|| session.poll_event()));
        while let Some(b) = session.poll_transmit() {
            if cut_after.is_some_and(|n| delivered_down >= n) {
                phone.session.disconnected();
                phone
                    .events
                    .extend(std::iter::from_fn(|| phone.session.poll_event()));
                return w;
            }
            moved = true;
            delivered_down += 1;
            w.down.push(b.clone());
            phone.session.handle_bytes(&mut phone.repo, &b, NOW);
        }
        phone
            .events
            .extend(std::iter::from_fn(|| phone.session.poll_event()));
        if !moved {
            phone.session.disconnected();
            return w;
        }
    }
}

/// (document, number of changes, feed positions) of each document in a batch.
type BatchDocs = Vec<(DocumentId, usize, Vec<u64>)>;

fn batches(w: &Wire) -> Vec<(u32, BatchDocs)> {
    w.down
        .iter()
        .filter_map(|b| match wire::decode::<ServerMessage>(b).unwrap() {
            ServerMessage::Batch { batch, docs, .. }
            | ServerMessage::Batch3 { batch, docs, .. } => Some((
                batch,
                docs.into_iter()
                    .map(|d| (d.doc, d.changes.len(), d.positions))
                    .collect(),
            )),
            _ => None,
        })
        .collect()
}

fn small_batches() -> ServerConfig {
    ServerConfig {
        batch_bytes: 600,
        max_in_flight: 2,
        stall_after_ms: None,
        compress: true,
    }
}

/// Fills the server with `n` notes for each patient, written by another phone.
fn seed_server(server: &mut Server, patients: &[&PatientId], n: usize) -> Phone {
    let mut writer = Phone::new(carer("writer"));
    server.assign(&writer.author, patients);
    for p in patients {
        for i in 0..n {
            writer.note(
                p,
                &format!("{p}-n{i}"),
                &format!("Note {i} about the morning visit, with enough words to weigh something."),
            );
        }
    }
    run(&mut writer, server, ServerConfig::default(), None);
    assert!(writer.repo.pending().unwrap().is_empty());
    writer
}

#[test]
fn catch_up_is_one_round_trip_and_an_upload_is_durable_before_its_ack() {
    let p = patient("p1");
    let mut server = Server::new();
    seed_server(&mut server, &[&p], 3);
    let mut phone = Phone::new(carer("anna"));
    server.assign(&phone.author, &[&p]);
    phone.note(&p, "mine", "Written offline.");
    let w = run(&mut phone, &mut server, ServerConfig::default(), None);
    // Hello up; the server's time, upload ack and one batch down; batch ack up.
    assert_eq!((w.up.len(), w.down.len()), (2, 3));
    assert!(matches!(
        wire::decode::<ServerMessage>(&w.down[0]).unwrap(),
        ServerMessage::Time {
            server_ms: 1_795_478_400_000,
            ..
        }
    ));
    assert!(phone.events.contains(&DeviceEvent::CaughtUp));
    assert!(
        phone
            .events
            .iter()
            .any(|e| matches!(e, DeviceEvent::UploadAcknowledged { changes: 1 }))
    );
    assert!(phone.repo.pending().unwrap().is_empty());
    let doc = DocumentId::journal(&p, november());
    assert!(server.repo.get(&doc).unwrap().event(&rid("mine")).is_some());
    assert_eq!(phone.repo.get(&doc).unwrap().events().len(), 4);
    // Reconnecting with nothing new costs a hello and an empty batch.
    let w = run(&mut phone, &mut server, ServerConfig::default(), None);
    assert_eq!(batches(&w).iter().map(|(_, d)| d.len()).sum::<usize>(), 0);
}

#[test]
fn a_cut_transfer_resumes_without_resending_acknowledged_batches() {
    let p = patient("p1");
    // For every cut point: the second connection sends nothing the first one got acknowledged.
    for cut in 1..8 {
        let mut server = Server::new();
        seed_server(&mut server, &[&p], 12);
        let mut phone = Phone::new(carer("anna"));
        server.assign(&phone.author, &[&p]);
        let first = run(&mut phone, &mut server, small_batches(), Some(cut));
        let acked: BTreeSet<u32> = first
            .up
            .iter()
            .filter_map(|b| match wire::decode::<DeviceMessage>(b).unwrap() {
                DeviceMessage::BatchAck { batch } => Some(batch),
                _ => None,
            })
            .collect();
        let positions_acked: BTreeSet<u64> = batches(&first)
            .into_iter()
            .filter(|(b, _)| acked.contains(b))
            .flat_map(|(_, docs)| docs.into_iter().flat_map(|d| d.2))
            .collect();
        assert!(!phone.session.is_caught_up() || positions_acked.len() == 12);
        let second = run(&mut phone, &mut server, small_batches(), None);
        let resent: Vec<u64> = batches(&second)
            .into_iter()
            .flat_map(|(_, docs)| docs.into_iter().flat_map(|d| d.2))
            .filter(|pos| positions_acked.contains(pos))
            .collect();
        assert!(
            resent.is_empty(),
            "cut after {cut}: acknowledged positions resent: {resent:?}"
        );
        let doc = DocumentId::journal(&p, november());
        assert_eq!(
            phone.repo.get(&doc).unwrap().events().len(),
            12,
            "cut after {cut}"
        );
        assert!(phone.session.is_caught_up());
    }
}

#[test]
fn batches_are_bounded_and_the_window_is_respected() {
    let p = patient("p1");
    let mut server = Server::new();
    seed_server(&mut server, &[&p], 20);
    let mut phone = Phone::new(carer("anna"));
    server.assign(&phone.author, &[&p]);
    // Deliver the hello, then look at what the server sends before any acknowledgement.
    let mut session = ServerSession::new(
        Peer {
            author: phone.author.clone(),
        },
        small_batches(),
    );
    phone.session.connect(&mut phone.repo, NOW).unwrap();
    let hello = phone.session.poll_transmit().unwrap();
    session.handle_bytes(&mut server.repo, &server.policy, &hello, NOW);
    let sent: Vec<Vec<u8>> = std::iter::from_fn(|| session.poll_transmit()).collect();
    let batch_count = sent
        .iter()
        .filter(|b| {
            matches!(
                wire::decode::<ServerMessage>(b).unwrap(),
                ServerMessage::Batch { .. } | ServerMessage::Batch3 { .. }
            )
        })
        .count();
    assert_eq!(
        batch_count, 2,
        "at most max_in_flight batches before an ack"
    );
    for b in &sent {
        if let ServerMessage::Batch {
            docs, remaining, ..
        }
        | ServerMessage::Batch3 {
            docs, remaining, ..
        } = wire::decode::<ServerMessage>(b).unwrap()
        {
            let bytes: usize = docs
                .iter()
                .flat_map(|d| d.changes.iter())
                .map(Vec::len)
                .sum();
            let changes: usize = docs.iter().map(|d| d.changes.len()).sum();
            assert!(changes == 1 || bytes <= 600 + 400, "batch of {bytes} bytes");
            assert!(remaining > 0);
        }
    }
}

#[test]
fn priority_patients_come_first() {
    let (a, b, c) = (patient("pa"), patient("pb"), patient("pc"));
    let mut server = Server::new();
    seed_server(&mut server, &[&a, &b, &c], 3);
    let mut phone = Phone::new(carer("anna"));
    phone.session.set_priority(vec![c.clone()]);
    server.assign(&phone.author, &[&a, &b, &c]);
    let w = run(&mut phone, &mut server, small_batches(), None);
    let order: Vec<PatientId> = batches(&w)
        .into_iter()
        .flat_map(|(_, docs)| docs.into_iter().map(|d| d.0.patient().clone()))
        .collect();
    assert_eq!(order.first(), Some(&c));
    let last_c = order.iter().rposition(|p| p == &c).unwrap();
    assert!(order[..=last_c].iter().all(|p| p == &c), "{order:?}");
}

#[test]
fn nothing_of_an_unassigned_patient_is_sent_and_withdrawal_is_told() {
    let (mine, other) = (patient("mine"), patient("other"));
    let mut server = Server::new();
    seed_server(&mut server, &[&mine, &other], 2);
    let mut phone = Phone::new(carer("anna"));
    server.assign(&phone.author, &[&mine]);
    let w = run(&mut phone, &mut server, ServerConfig::default(), None);
    for (_, docs) in batches(&w) {
        assert!(docs.iter().all(|d| d.0.patient() == &mine));
    }
    // Writing to someone else's journal is refused, audited and quarantined on the phone.
    phone.note(&other, "sneaky", "Not my patient.");
    let w = run(&mut phone, &mut server, ServerConfig::default(), None);
    assert!(w.server_events.iter().any(|e| matches!(
        e,
        ServerEvent::Refused {
            code: wire::RefusalCode::NotPermitted,
            ..
        }
    )));
    assert_eq!(DeviceSession::quarantined(&phone.repo).unwrap().len(), 1);
    assert!(
        server
            .repo
            .get(&DocumentId::journal(&other, november()))
            .unwrap()
            .event(&rid("sneaky"))
            .is_none()
    );
    // Unassigned: told on the next connection, and nothing more is sent.
    server
        .policy
        .by_user
        .get_mut(&phone.author.user)
        .unwrap()
        .remove(&mine);
    let w = run(&mut phone, &mut server, ServerConfig::default(), None);
    assert!(phone.events.iter().any(|e| matches!(e, DeviceEvent::AccessWithdrawn { patients } if patients == &vec![mine.clone()])));
    assert!(
        w.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Withdrawn { .. }))
    );
    // Assigned again: the whole history comes back, including what was written meanwhile.
    let mut writer = Phone::new(nurse("nina"));
    writer.note(&mine, "while-away", "Written while Anna was off the case.");
    server.assign(&writer.author, &[&mine]);
    run(&mut writer, &mut server, ServerConfig::default(), None);
    server.assign(&phone.author, &[&mine]);
    run(&mut phone, &mut server, ServerConfig::default(), None);
    let doc = DocumentId::journal(&mine, november());
    assert!(
        phone
            .repo
            .get(&doc)
            .unwrap()
            .event(&rid("while-away"))
            .is_some()
    );
}

#[test]
fn hostile_bytes_close_the_connection_with_a_reason() {
    let mut server = Server::new();
    let peer = Peer {
        author: carer("anna"),
    };
    let hello = wire::encode(&DeviceMessage::Hello(wire::Hello {
        cursor: None,
        received: vec![],
        priority: vec![],
        backfill: vec![],
        upload: vec![],
    }))
    .unwrap();
    let cases: Vec<(Vec<u8>, CloseReason)> = vec![
        (vec![], CloseReason::Malformed),
        (vec![9, 1, 2], CloseReason::UnsupportedVersion),
        (vec![1, 0xff, 0xff, 0xff], CloseReason::Malformed),
        (
            vec![1; wire::MAX_MESSAGE_BYTES + 1],
            CloseReason::MessageTooLarge,
        ),
        (
            wire::encode(&DeviceMessage::BatchAck { batch: 0 }).unwrap(),
            CloseReason::ProtocolViolation,
        ),
    ];
    for (bytes, reason) in cases {
        let mut s = ServerSession::new(peer.clone(), ServerConfig::default());
        s.handle_bytes(&mut server.repo, &server.policy, &bytes, NOW);
        let out: Vec<ServerMessage> = std::iter::from_fn(|| s.poll_transmit())
            .map(|b| wire::decode(&b).unwrap())
            .collect();
        assert!(
            matches!(out.last(), Some(ServerMessage::Close { reason: r, .. }) if *r == reason),
            "{out:?}"
        );
        assert!(s.is_closed());
        // Nothing more is accepted on a closed session.
        s.handle_bytes(&mut server.repo, &server.policy, &hello, NOW);
        assert!(s.poll_transmit().is_none());
    }
    // A second hello is a protocol violation.
    let mut s = ServerSession::new(peer, ServerConfig::default());
    s.handle_bytes(&mut server.repo, &server.policy, &hello, NOW);
    while s.poll_transmit().is_some() {}
    s.handle_bytes(&mut server.repo, &server.policy, &hello, NOW);
    let last: ServerMessage = wire::decode(&s.poll_transmit().unwrap()).unwrap();
    assert!(matches!(
        last,
        ServerMessage::Close {
            reason: CloseReason::ProtocolViolation,
            ..
        }
    ));
}

#[test]
fn a_silent_device_is_closed_as_stalled() {
    let mut s = ServerSession::new(
        Peer {
            author: carer("anna"),
        },
        ServerConfig {
            stall_after_ms: Some(1_000),
            ..ServerConfig::default()
        },
    );
    s.tick(NOW);
    s.tick(Timestamp(NOW.0 + 500));
    assert!(!s.is_closed());
    s.tick(Timestamp(NOW.0 + 1_500));
    assert!(s.is_closed());
    let msg: ServerMessage = wire::decode(&s.poll_transmit().unwrap()).unwrap();
    assert!(matches!(
        msg,
        ServerMessage::Close {
            reason: CloseReason::Stalled,
            ..
        }
    ));
}

#[test]
fn a_replaced_server_store_falls_back_to_automerge_sync_for_a_version_1_device() {
    let p = patient("p1");
    let mut server = Server::new();
    let mut phone = Phone::new(carer("anna"));
    phone.session = DeviceSession::new(DeviceConfig {
        tell_clock: false,
        ..DeviceConfig::default()
    });
    server.assign(&phone.author, &[&p]);
    phone.note(&p, "before", "Synced before the server was restored.");
    run(&mut phone, &mut server, ServerConfig::default(), None);
    // The server is restored from an empty backup: a new epoch, and it lost the note.
    let policy = server.policy.clone();
    let mut server = Server {
        repo: Repo::new(MemoryStore::new()),
        policy,
    };
    let w = run(&mut phone, &mut server, ServerConfig::default(), None);
    assert!(w.down.iter().any(|b| matches!(
        wire::decode::<ServerMessage>(b).unwrap(),
        ServerMessage::Resync { .. }
    )));
    assert!(w.up.iter().any(|b| matches!(
        wire::decode::<DeviceMessage>(b).unwrap(),
        DeviceMessage::AmSync { .. }
    )));
    let doc = DocumentId::journal(&p, november());
    assert!(
        server
            .repo
            .get(&doc)
            .unwrap()
            .event(&rid("before"))
            .is_some(),
        "the fallback restored the note on the server"
    );
    // And the next connection is back on the feed.
    let w = run(&mut phone, &mut server, ServerConfig::default(), None);
    assert!(!w.down.iter().any(|b| matches!(
        wire::decode::<ServerMessage>(b).unwrap(),
        ServerMessage::Resync { .. }
    )));
    let _ = server.repo.store().epoch().unwrap();
}

#[test]
fn assignments_policy_is_per_user() {
    let mut a = Assignments::default();
    let anna = carer("anna");
    a.by_user
        .entry(anna.user.clone())
        .or_default()
        .insert(patient("p1"));
    let peer = Peer { author: anna };
    assert!(a.may_read(&peer, &DocumentId::care_plan(&patient("p1"))));
    assert!(!a.may_read(&peer, &DocumentId::care_plan(&patient("p2"))));
    assert_eq!(a.readable_patients(&peer), vec![patient("p1")]);
}

#[test]
fn a_batch_out_of_order_closes_without_moving_the_cursor() {
    let (a, b) = (patient("pa"), patient("pb"));
    let mut server = Server::new();
    seed_server(&mut server, &[&a, &b], 4);
    let mut phone = Phone::new(carer("anna"));
    server.assign(&phone.author, &[&a, &b]);
    let mut session = ServerSession::new(
        Peer {
            author: phone.author.clone(),
        },
        small_batches(),
    );
    phone.session.connect(&mut phone.repo, NOW).unwrap();
    let hello = phone.session.poll_transmit().unwrap();
    session.handle_bytes(&mut server.repo, &server.policy, &hello, NOW);
    let batches: Vec<Vec<u8>> = std::iter::from_fn(|| session.poll_transmit())
        .filter(|b| {
            matches!(
                wire::decode::<ServerMessage>(b).unwrap(),
                ServerMessage::Batch { .. } | ServerMessage::Batch3 { .. }
            )
        })
        .collect();
    assert!(batches.len() >= 2);
    // The second batch arrives first (a transport that reorders): refused, nothing recorded.
    phone
        .session
        .handle_bytes(&mut phone.repo, &batches[1], NOW);
    assert!(!phone.session.is_connected());
    assert_eq!(DeviceSession::load_state(&phone.repo).unwrap().cursor, None);
    let events: Vec<DeviceEvent> = std::iter::from_fn(|| phone.session.poll_event()).collect();
    assert!(events.iter().any(|e| matches!(
        e,
        DeviceEvent::Closed {
            reason: CloseReason::ProtocolViolation,
            ..
        }
    )));
}

#[test]
fn the_read_log_reaches_the_server_and_is_cleared_once_acknowledged() {
    let p = patient("p1");
    let mut server = Server::new();
    let mut phone = Phone::new(carer("anna"));
    server.assign(&phone.author, &[&p]);
    for what in ["overview", "flags", "overview"] {
        DeviceSession::log_read(&mut phone.repo, &p, what, NOW).unwrap();
    }
    assert_eq!(DeviceSession::read_log(&phone.repo).unwrap().len(), 3);
    let w = run(&mut phone, &mut server, ServerConfig::default(), None);
    let reads: Vec<_> = w
        .server_events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::Read { entries } => Some(entries.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(reads.len(), 3);
    assert!(reads.iter().all(|r| r.patient == p && r.at_ms == NOW.0));
    assert_eq!(reads[1].what, "flags");
    assert!(DeviceSession::read_log(&phone.repo).unwrap().is_empty());
    // Nothing is sent again.
    let w = run(&mut phone, &mut server, ServerConfig::default(), None);
    assert!(
        !w.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Read { .. }))
    );
}

fn decoded_down(w: &Wire) -> Vec<ServerMessage> {
    w.down
        .iter()
        .map(|b| wire::decode::<ServerMessage>(b).unwrap())
        .collect()
}

/// A version-3 device whose server lost its store (a new epoch) recovers: its note goes back
/// up, the other phone's note written since comes down, in a few messages, and the next
/// connection is on the feed again.
#[test]
fn a_replaced_server_store_recovers_a_version_3_device() {
    let p = patient("p1");
    let mut server = Server::new();
    let mut phone = Phone::new(carer("anna"));
    let mut other = Phone::new(carer("bo"));
    server.assign(&phone.author, &[&p]);
    server.assign(&other.author, &[&p]);
    phone.note(&p, "before", "Synced before the server was restored.");
    run(&mut phone, &mut server, ServerConfig::default(), None);
    let policy = server.policy.clone();
    let mut server = Server {
        repo: Repo::new(MemoryStore::new()),
        policy,
    };
    other.note(&p, "after", "Written on the new server first.");
    run(&mut other, &mut server, ServerConfig::default(), None);
    let w = run(&mut phone, &mut server, ServerConfig::default(), None);
    let down = decoded_down(&w);
    assert!(
        down.iter()
            .any(|m| matches!(m, ServerMessage::Recover { .. }))
    );
    assert!(!down.iter().any(|m| matches!(
        m,
        ServerMessage::Resync { .. } | ServerMessage::AmSync { .. }
    )));
    let up: Vec<DeviceMessage> = w.up.iter().map(|b| wire::decode(b).unwrap()).collect();
    assert!(
        w.down.len() + w.up.len() <= 14,
        "{} messages: {up:?} {down:?}",
        w.down.len() + w.up.len()
    );
    let doc = DocumentId::journal(&p, november());
    assert!(
        server
            .repo
            .get(&doc)
            .unwrap()
            .event(&rid("before"))
            .is_some()
    );
    assert!(phone.repo.get(&doc).unwrap().event(&rid("after")).is_some());
    assert_eq!(
        w.server_events
            .iter()
            .filter(|e| matches!(e, ServerEvent::Recovered { .. }))
            .count(),
        1
    );
    assert!(
        !w.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Disclosed { .. }))
    );
    // The next connection is on the feed, with a proof.
    let w = run(&mut phone, &mut server, ServerConfig::default(), None);
    let down = decoded_down(&w);
    assert!(
        !down
            .iter()
            .any(|m| matches!(m, ServerMessage::Recover { .. }))
    );
    assert!(
        down.iter()
            .any(|m| matches!(m, ServerMessage::Batch3 { .. }))
    );
}

/// The same server, its store copied back from before the phone's last sync (same epoch): the
/// phone's cursor is above the head, so the server moves to a new epoch and the phone recovers;
/// a second phone whose cursor is below the head but whose proof is of the lost history
/// recovers too.
#[test]
fn a_store_copied_back_moves_to_a_new_epoch_and_every_device_that_saw_more_recovers() {
    let p = patient("p1");
    let store = MemoryStore::new();
    let mut server = Server {
        repo: Repo::new(store.clone()),
        policy: Assignments::default(),
    };
    let mut a = Phone::new(carer("anna"));
    let mut b = Phone::new(carer("bo"));
    server.assign(&a.author, &[&p]);
    server.assign(&b.author, &[&p]);
    a.note(&p, "a1", "First.");
    run(&mut a, &mut server, ServerConfig::default(), None);
    run(&mut b, &mut server, ServerConfig::default(), None);
    // The backup: a deep copy of the store now.
    let backup = Repo::new(MemoryStore::with_epoch(store.epoch().unwrap()));
    let mut backup = backup;
    for doc in server.repo.document_ids().unwrap() {
        let changes = server.repo.get(&doc).unwrap().changes_since(&[]);
        backup.apply_changes(&doc, changes).unwrap();
    }
    let epoch = store.epoch().unwrap();
    a.note(&p, "a2", "Lost by the server.");
    run(&mut a, &mut server, ServerConfig::default(), None);
    run(&mut b, &mut server, ServerConfig::default(), None);
    // Restored by copying: same epoch, shorter feed. Another phone writes first.
    let mut server = Server {
        repo: backup,
        policy: server.policy.clone(),
    };
    let mut c = Phone::new(carer("cy"));
    server.assign(&c.author, &[&p]);
    c.note(&p, "c1", "Written after the restore.");
    run(&mut c, &mut server, ServerConfig::default(), None);
    // b's cursor is at the old head, which the new feed reached again with other changes.
    let w = run(&mut b, &mut server, ServerConfig::default(), None);
    assert!(
        w.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::FeedDiverged { .. }))
    );
    assert_ne!(server.repo.store().epoch().unwrap(), epoch);
    let w = run(&mut a, &mut server, ServerConfig::default(), None);
    assert!(
        decoded_down(&w)
            .iter()
            .any(|m| matches!(m, ServerMessage::Recover { .. }))
    );
    // c catches up (its cursor is of the old epoch too now) and everyone holds everything.
    run(&mut c, &mut server, ServerConfig::default(), None);
    let doc = DocumentId::journal(&p, november());
    for phone in [&mut a, &mut b, &mut c] {
        for id in ["a1", "a2", "c1"] {
            assert!(
                phone.repo.get(&doc).unwrap().event(&rid(id)).is_some(),
                "{} lacks {id}",
                phone.author.user
            );
        }
    }
    for id in ["a1", "a2", "c1"] {
        assert!(server.repo.get(&doc).unwrap().event(&rid(id)).is_some());
    }
}

/// A recovery cut after every possible number of server messages resumes and ends with both
/// sides holding everything; the documents the device reconciled are not asked about again.
#[test]
fn a_recovery_cut_anywhere_resumes() {
    let patients: Vec<PatientId> = (0..6).map(|i| patient(&format!("p{i}"))).collect();
    let refs: Vec<&PatientId> = patients.iter().collect();
    for cut in 0..8 {
        let mut server = Server::new();
        let mut phone = Phone::new(carer("anna"));
        server.assign(&phone.author, &refs);
        for (i, p) in patients.iter().enumerate() {
            phone.note(p, &format!("n{i}"), "Before the restore.");
        }
        run(&mut phone, &mut server, ServerConfig::default(), None);
        let policy = server.policy.clone();
        let mut server = Server {
            repo: Repo::new(MemoryStore::new()),
            policy,
        };
        for (i, p) in patients.iter().enumerate() {
            phone.note(p, &format!("m{i}"), "Pending at the restore.");
        }
        run(&mut phone, &mut server, ServerConfig::default(), Some(cut));
        let mut rounds = 0;
        loop {
            rounds += 1;
            assert!(rounds < 10, "cut {cut}: no end");
            let w = run(&mut phone, &mut server, ServerConfig::default(), None);
            if !decoded_down(&w)
                .iter()
                .any(|m| matches!(m, ServerMessage::Recover { .. }))
            {
                break;
            }
        }
        for (i, p) in patients.iter().enumerate() {
            let doc = DocumentId::journal(p, november());
            for id in [format!("n{i}"), format!("m{i}")] {
                assert!(
                    server.repo.get(&doc).unwrap().event(&rid(&id)).is_some(),
                    "cut {cut}: the server lacks {id}"
                );
            }
        }
        assert!(phone.repo.pending().unwrap().is_empty(), "cut {cut}");
    }
}

/// A device that claims to have seen more of the feed than the server holds moves the server to
/// a new epoch once; claiming it again of the new epoch, with nothing stored since, does not
/// move it again (an enrolled device could otherwise make every device recover at will).
#[test]
fn a_claim_of_more_moves_the_epoch_once_per_head() {
    let p = patient("p1");
    let mut server = Server::new();
    let mut phone = Phone::new(carer("anna"));
    server.assign(&phone.author, &[&p]);
    phone.note(&p, "n1", "A note.");
    run(&mut phone, &mut server, ServerConfig::default(), None);
    let head = server.repo.store().feed_head().unwrap();
    // The phone's incarnation as it is: only the feed is claimed falsely.
    let inc = phone.repo.incarnation().unwrap();
    let claim = |epoch| {
        wire::encode(&DeviceMessage::Hello3 {
            hello: sync_core::protocol::wire::Hello {
                cursor: Some(sync_core::protocol::wire::Cursor {
                    epoch,
                    position: head + 10,
                }),
                received: vec![],
                priority: vec![],
                backfill: vec![],
                upload: vec![],
            },
            device_ms: NOW.0,
            incarnation: sync_core::protocol::wire::IncarnationClaim {
                number: inc.number,
                written: inc.written,
                last: inc.last,
            },
            feed_proof: Some([1; 32]),
            signatures: vec![],
        })
        .unwrap()
    };
    let mut moves = 0;
    for _ in 0..3 {
        let epoch = server.repo.store().epoch().unwrap();
        let mut s = ServerSession::new(
            Peer {
                author: phone.author.clone(),
            },
            ServerConfig::default(),
        );
        s.handle_bytes(&mut server.repo, &server.policy, &claim(epoch), NOW);
        let events: Vec<ServerEvent> = std::iter::from_fn(|| s.poll_event()).collect();
        moves += events
            .iter()
            .filter(|e| matches!(e, ServerEvent::FeedDiverged { .. }))
            .count();
        let sent: Vec<ServerMessage> = std::iter::from_fn(|| s.poll_transmit())
            .map(|b| wire::decode(&b).unwrap())
            .collect();
        assert!(
            sent.iter()
                .any(|m| matches!(m, ServerMessage::Recover { .. }))
        );
    }
    assert_eq!(moves, 1);
}
