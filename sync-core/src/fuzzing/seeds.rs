//! Valid inputs for every entry point, built from real messages, changes and stored documents.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use crate::ids::{DocumentId, PatientId};
use crate::protocol::wire::{
    self, Backfill, CloseReason, Cursor, DeviceMessage, DocChanges, DocHeads, Hello, ReadEntry,
    RefusalCode, Refused, ServerMessage,
};
use crate::repo::Repo;

use super::fixtures::{ADA, ANNA, BO, Template, at, base_store, fixture};

/// The fixture record's documents, in the order the entry points number them.
pub fn documents() -> Vec<DocumentId> {
    fixture().docs.iter().map(|d| d.id.clone()).collect()
}

/// Valid inputs for each entry point, built from real messages, changes and stored documents.
#[derive(Debug, Clone, Default)]
pub struct Seeds {
    pub wire: Vec<Vec<u8>>,
    pub ingest: Vec<Vec<u8>>,
    pub store_load: Vec<Vec<u8>>,
}

pub fn seeds() -> Seeds {
    let fx = fixture();
    let mut s = Seeds::default();

    // wire: one of every message, carrying real changes and a real sync message.
    let doc_changes = |t: &Template| DocChanges {
        doc: fx.docs[t.doc].id.clone(),
        changes: vec![t.change.raw_bytes().to_vec()],
        positions: vec![],
    };
    let mut repo = Repo::new(base_store());
    let mut state = automerge::sync::State::new();
    let sync = repo
        .sync_generate(&fx.docs[2].id, &mut state)
        .expect("sync message")
        .map(|m| m.encode())
        .unwrap_or_default();
    let cursor = Cursor {
        epoch: [3; 16],
        position: 42,
    };
    let p1 = PatientId::new("p-1").expect("fixture patient");
    let device_msgs = [
        DeviceMessage::Hello(Hello {
            cursor: Some(cursor),
            received: vec![(44, 46)],
            priority: vec![p1.clone()],
            backfill: vec![Backfill {
                patient: p1.clone(),
                progress: 3,
                until: 9,
            }],
            upload: fx.templates.iter().take(3).map(doc_changes).collect(),
        }),
        DeviceMessage::Upload {
            upload: 1,
            docs: fx.templates.iter().skip(3).map(doc_changes).collect(),
        },
        DeviceMessage::BatchAck { batch: 2 },
        DeviceMessage::AmSync {
            doc: fx.docs[2].id.clone(),
            message: sync.clone(),
        },
        DeviceMessage::ReadLog {
            entries: vec![ReadEntry {
                patient: p1.clone(),
                what: "overview".into(),
                at_ms: at(12, 0).0,
            }],
        },
        DeviceMessage::Heads {
            chunk: 0,
            docs: fx
                .docs
                .iter()
                .map(|d| DocHeads {
                    doc: d.id.clone(),
                    heads: d.changes.last().map(|c| c.hash().0).into_iter().collect(),
                })
                .collect(),
        },
        DeviceMessage::Recovered {
            cursor,
            patients: vec![p1.clone()],
        },
        DeviceMessage::OrphansTaken {
            changes: vec![[8; 32]],
        },
    ];
    let server_msgs = [
        ServerMessage::UploadAck {
            upload: 0,
            refused: vec![Refused {
                index: 1,
                code: RefusalCode::NotPermitted,
                detail: "a carer may not write order/o1".into(),
            }],
        },
        ServerMessage::Batch {
            batch: 0,
            docs: fx
                .docs
                .iter()
                .map(|d| DocChanges {
                    doc: d.id.clone(),
                    changes: d.changes.iter().map(|c| c.raw_bytes().to_vec()).collect(),
                    positions: (1..=d.changes.len() as u64).collect(),
                })
                .collect(),
            cursor,
            backfill: vec![],
            remaining: 0,
        },
        ServerMessage::Withdrawn {
            patients: vec![p1.clone()],
        },
        ServerMessage::Resync { epoch: [9; 16] },
        ServerMessage::AmSync {
            doc: fx.docs[2].id.clone(),
            message: sync,
        },
        ServerMessage::Close {
            reason: CloseReason::Revoked,
            detail: "revoked".into(),
        },
        ServerMessage::ReadLogAck { count: 1 },
        ServerMessage::Recover {
            cursor,
            proof: [5; 32],
        },
        ServerMessage::Reconcile {
            chunk: 0,
            docs: fx
                .docs
                .iter()
                .map(|d| DocChanges {
                    doc: d.id.clone(),
                    changes: d.changes.iter().map(|c| c.raw_bytes().to_vec()).collect(),
                    positions: vec![],
                })
                .collect(),
            lacks: vec![DocHeads {
                doc: fx.docs[0].id.clone(),
                heads: vec![[6; 32]],
            }],
            again: vec![fx.docs[1].id.clone()],
        },
        ServerMessage::Batch3 {
            batch: 0,
            docs: vec![],
            cursor,
            backfill: vec![],
            remaining: 0,
            proof: [7; 32],
        },
        ServerMessage::Orphans {
            docs: fx
                .docs
                .iter()
                .take(1)
                .map(|d| DocChanges {
                    doc: d.id.clone(),
                    changes: d.changes.iter().map(|c| c.raw_bytes().to_vec()).collect(),
                    positions: vec![],
                })
                .collect(),
        },
    ];
    s.wire.extend(
        device_msgs
            .iter()
            .map(|m| wire::encode(m).expect("seed message")),
    );
    s.wire.extend(
        server_msgs
            .iter()
            .map(|m| wire::encode(m).expect("seed message")),
    );

    // ingest: every template as raw bytes, unmutated, and as a forged change; two concurrent
    // templates together.
    for (i, t) in fx.templates.iter().enumerate() {
        let mut raw = vec![0, t.doc as u8, t.author as u8];
        raw.extend_from_slice(t.change.raw_bytes());
        s.ingest.push(raw);
        s.ingest.push(vec![2, i as u8, 0, 0]);
        s.ingest.push(vec![2, i as u8, 1, 2, 10, 3]);
    }
    let mut pair = vec![1, 2, BO as u8];
    for t in fx.templates.iter().filter(|t| t.doc == 2) {
        let b = t.change.raw_bytes();
        pair.extend_from_slice(&(b.len() as u16).to_le_bytes());
        pair.extend_from_slice(b);
    }
    s.ingest.push(pair);
    for doc in 0..fx.docs.len() as u8 {
        for who in [ANNA as u8, BO as u8, ADA as u8] {
            s.ingest.push(vec![3, doc, who, 0, 2, 0, 3, 5]);
            s.ingest
                .push(vec![3, doc, who, 0, 0, 2, 2, 6, b'h', b'e', b'j']);
        }
    }

    // store_load: every document's snapshot and change rows as they are stored.
    for (i, d) in fx.docs.iter().enumerate() {
        let mut snap = vec![0, i as u8];
        snap.extend_from_slice(&d.snapshot);
        s.store_load.push(snap);
        for c in &d.changes {
            let mut row = vec![1, i as u8];
            row.extend_from_slice(c.raw_bytes());
            s.store_load.push(row);
        }
        s.store_load.push(vec![2, i as u8, 0, 40, 0, 1]);
        s.store_load.push(vec![3, i as u8, 0, 1, 0, 20, 0, 4]);
        s.store_load.push(vec![4, i as u8, 60, 0]);
    }
    s
}
