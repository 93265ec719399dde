//! The `wire` entry point: bytes as a message in either direction.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use automerge::Change;

use crate::protocol::wire::{self, CloseReason, DeviceMessage, DocChanges, ServerMessage};
use crate::protocol::{
    DeviceConfig, DeviceSession, Peer, ServerConfig, ServerEvent, ServerSession,
};
use crate::repo::Repo;
use crate::store::MemoryStore;

use super::fixtures::{ANNA, Everyone, at, fixture};

/// Decodes `bytes` as a message in each direction; a decoded message must re-encode (no longer
/// than the input) to bytes that decode to the same message. Then the bytes go to a server
/// session awaiting a hello and to a connected device session: neither may panic, and the
/// server closes on bytes that do not decode, with the decoder's reason.
pub fn wire(bytes: &[u8]) {
    if let Ok(msg) = wire::decode::<DeviceMessage>(bytes) {
        round_trip(&msg, bytes.len());
        match &msg {
            DeviceMessage::Hello(h) => h.upload.iter().for_each(inner_changes),
            DeviceMessage::Upload { docs, .. } => docs.iter().for_each(inner_changes),
            DeviceMessage::AmSync { message, .. } => inner_sync(message),
            DeviceMessage::BatchAck { .. } | DeviceMessage::ReadLog { .. } => {}
        }
    }
    if let Ok(msg) = wire::decode::<ServerMessage>(bytes) {
        round_trip(&msg, bytes.len());
        match &msg {
            ServerMessage::Batch { docs, .. } => docs.iter().for_each(inner_changes),
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
}

fn round_trip<M>(msg: &M, input_len: usize)
where
    M: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
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
        if let Ok(c) = Change::from_bytes(bytes.clone()) {
            let again = Change::from_bytes(c.raw_bytes().to_vec())
                .expect("a parsed change's bytes parse again");
            assert_eq!(
                again.hash(),
                c.hash(),
                "change bytes round trip changed the hash"
            );
        }
    }
}

fn inner_sync(message: &[u8]) {
    if let Ok(m) = automerge::sync::Message::decode(message) {
        let again = automerge::sync::Message::decode(&m.clone().encode())
            .expect("an encoded sync message decodes");
        assert_eq!(again.heads, m.heads);
        assert_eq!(again.need, m.need);
    }
}
