//! The `wire` entry point: bytes as a message in either direction.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use crate::model::admit;

use crate::protocol::wire::{self, CloseReason, DeviceMessage, DocChanges, ServerMessage};
use crate::protocol::{
    DeviceConfig, DeviceSession, Peer, ServerConfig, ServerEvent, ServerSession,
};
use crate::repo::Repo;
use crate::store::MemoryStore;

use super::fixtures::{ANNA, Everyone, at, fixture};
use super::prepared::prepared;

/// Decodes `bytes` as a message in each direction; a decoded message must re-encode (no longer
/// than the input) to bytes that decode to the same message. Then the bytes go to a server
/// session awaiting a hello, to a connected device session and to a server session already serving
/// the fixture (as a message, as an `AmSync` payload, as an uploaded change): none may panic, the
/// server closes on bytes that do not decode with the decoder's reason, never as `Internal`.
pub fn wire(bytes: &[u8]) {
    if let Ok(msg) = wire::decode::<DeviceMessage>(bytes) {
        round_trip(&msg, bytes.len());
        match &msg {
            DeviceMessage::Hello(h)
            | DeviceMessage::TimedHello { hello: h, .. }
            | DeviceMessage::Hello3 { hello: h, .. } => h.upload.iter().for_each(inner_changes),
            DeviceMessage::Upload { docs, .. } | DeviceMessage::Upload3 { docs, .. } => {
                docs.iter().for_each(inner_changes)
            }
            DeviceMessage::AmSync { message, .. } => inner_sync(message),
            DeviceMessage::BatchAck { .. }
            | DeviceMessage::ReadLog { .. }
            | DeviceMessage::Heads { .. }
            | DeviceMessage::Recovered { .. }
            | DeviceMessage::OrphansTaken { .. } => {}
        }
    }
    if let Ok(msg) = wire::decode::<ServerMessage>(bytes) {
        round_trip(&msg, bytes.len());
        match &msg {
            ServerMessage::Batch { docs, .. }
            | ServerMessage::Batch3 { docs, .. }
            | ServerMessage::Reconcile { docs, .. }
            | ServerMessage::Orphans { docs } => docs.iter().for_each(inner_changes),
            ServerMessage::AmSync { message, .. } => inner_sync(message),
            _ => {}
        }
    }

    let expected_close = wire::decode::<DeviceMessage>(bytes)
        .err()
        .map(|e| e.close_reason());
    let peer = Peer {
        author: fixture().authors[ANNA].clone(),
    };
    let mut server = ServerSession::new(peer, ServerConfig::default());
    let mut repo = Repo::new(MemoryStore::new());
    server.handle_bytes(&mut repo, &Everyone, bytes, at(12, 0));
    let mut closed = None;
    while let Some(ev) = server.poll_event() {
        if let ServerEvent::Closed { reason, .. } = ev {
            closed = Some(reason);
        }
    }
    while server.poll_transmit().is_some() {}
    if let Some(reason) = expected_close {
        assert_eq!(
            closed,
            Some(reason),
            "undecodable bytes must close the session"
        );
    }
    assert_ne!(
        closed,
        Some(CloseReason::Internal),
        "hostile bytes are the peer's fault, never an internal error"
    );

    let mut device = DeviceSession::new(DeviceConfig::default());
    let mut repo = Repo::new(MemoryStore::new());
    device
        .connect(&mut repo, at(12, 0))
        .expect("connect on an empty in-memory store");
    while device.poll_transmit().is_some() {}
    device.handle_bytes(&mut repo, bytes, at(12, 1));
    while device.poll_transmit().is_some() {}
    while device.poll_event().is_some() {}

    // A session already serving, over the fixture's documents: the bytes as a message, then
    // as the Automerge sync message of a document and as an uploaded change, so that the
    // fallback and upload decoders are reached without the fuzzer having to find the framing.
    serving(bytes);
    let doc = fixture().docs
        [usize::from(bytes.first().copied().unwrap_or(0)) % fixture().docs.len()]
    .id
    .clone();
    if let Ok(msg) = wire::encode(&DeviceMessage::AmSync {
        doc: doc.clone(),
        message: bytes.to_vec(),
    }) {
        serving(&msg);
    }
    if let Ok(msg) = wire::encode(&DeviceMessage::Upload {
        upload: 1,
        docs: vec![DocChanges {
            doc,
            changes: vec![bytes.to_vec()],
            positions: Vec::new(),
        }],
    }) {
        serving(&msg);
    }
}

/// Feeds `message` to a server session that has accepted a valid hello and serves the fixture's
/// documents (a clone of the one prepared once, over a deep copy of its repo); it may close, but
/// never as an internal error, and never panic.
fn serving(message: &[u8]) {
    let p = prepared();
    let mut server = p.serving.clone();
    let mut repo = p.serving_repo.deep_copy().expect("memory store");
    server.handle_bytes(&mut repo, &Everyone, message, at(12, 1));
    let mut closed = None;
    while let Some(ev) = server.poll_event() {
        if let ServerEvent::Closed { reason, .. } = ev {
            closed = Some(reason);
        }
    }
    while server.poll_transmit().is_some() {}
    assert_ne!(
        closed,
        Some(CloseReason::Internal),
        "hostile bytes are the peer's fault, never an internal error"
    );
}

fn round_trip<M>(msg: &M, input_len: usize)
where
    M: serde::Serialize
        + serde::de::DeserializeOwned
        + wire::Versioned
        + PartialEq
        + std::fmt::Debug,
{
    let again = wire::encode(msg).expect("a decoded message encodes");
    assert!(
        again.len() <= input_len,
        "re-encoding is longer ({}) than the input ({input_len})",
        again.len()
    );
    let back: M = wire::decode(&again).expect("an encoded message decodes");
    assert_eq!(&back, msg, "wire round trip changed the message");
}

fn inner_changes(d: &DocChanges) {
    for bytes in &d.changes {
        if let Ok(c) = admit::change(bytes) {
            let again = admit::change(c.raw_bytes()).expect("a parsed change's bytes parse again");
            assert_eq!(
                again.hash(),
                c.hash(),
                "change bytes round trip changed the hash"
            );
        }
    }
}

fn inner_sync(message: &[u8]) {
    if let Ok(m) = admit::sync_message(message) {
        let again =
            admit::sync_message(&m.clone().encode()).expect("an encoded sync message decodes");
        assert_eq!(again.heads, m.heads);
        assert_eq!(again.need, m.need);
    }
}
