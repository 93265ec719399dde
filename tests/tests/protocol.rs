//! The sync protocol's state machines driven directly: catch-up, resumption after a cut,
//! priority, bounds, access, hostile bytes and the Automerge-sync fallback. The harness is here
//! (a phone, a server, a connection run until quiet); the tests are in `protocol/`, by theme.

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

#[path = "protocol/access.rs"]
mod access;
#[path = "protocol/hostile.rs"]
mod hostile;
#[path = "protocol/pacing.rs"]
mod pacing;
#[path = "protocol/recovery.rs"]
mod recovery;
#[path = "protocol/serving.rs"]
mod serving;

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
        self.policy.assign(&who.user, patients.iter().copied());
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
        batch_bytes_fast: 600,
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
