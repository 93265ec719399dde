//! How the compressed frames' dictionary (`zstd-dict-1.bin`, codec 2) is made, and what it
//! pays. Test-only: the dictionary ships as bytes with the protocol; changing it needs a new
//! codec byte (peers that have the old one must still read what they are sent).
//!
//! It is trained on this protocol's own frames, made here deterministically: a care team's
//! days (visits, task outcomes, observations, doses, orders), as uploads of one change and as
//! batches, with notes of random letters, so that it learns the structure (Automerge's change
//! headers and columns, the records' JSON, the ids' shapes, postcard's framing) and nothing of
//! any workload's words. Regenerate with
//! `cargo test -p sync-core --lib -- --ignored train_the_dictionary`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::compress::{self, DICTIONARY, LEVEL};
use super::wire::{self, Cursor, DeviceMessage, DocChanges, ServerMessage};
use crate::ids::{
    Author, DeviceId, DocumentId, Month, PatientId, RecordId, Role, Timestamp, UserId,
};
use crate::model::{AdministrationOutcome, EventBody, ObservationCode};
use crate::repo::Repo;
use crate::store::{MemoryStore, Store};

/// The dictionary's size: larger ones were measured to gain nothing more.
const DICTIONARY_BYTES: usize = 16 * 1024;

const WORDS: &[&str] = &[
    "ate",
    "breakfast",
    "slept",
    "well",
    "walked",
    "to",
    "the",
    "kitchen",
    "with",
    "a",
    "frame",
    "pain",
    "in",
    "right",
    "knee",
    "daughter",
    "called",
    "skin",
    "intact",
    "drank",
    "water",
];

fn text(rng: &mut ChaCha8Rng, words: bool) -> String {
    let n = rng.random_range(200..=600usize);
    let mut s = String::new();
    while s.len() < n {
        if words {
            s.push_str(WORDS[rng.random_range(0..WORDS.len())]);
            s.push(' ');
        } else {
            s.push(char::from(b'a' + rng.random_range(0..26u8)));
            if rng.random_bool(0.15) {
                s.push(' ');
            }
        }
    }
    s
}

/// One worker's day: per person 4 visits, each one change to the journal and one to the
/// administration log; as (uploads of one change, batches of 32 KiB).
pub(super) fn day(user: &str, seed: u64, words: bool) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let author = Author::new(
        UserId::new(user).unwrap(),
        Role::Carer,
        DeviceId::new(format!("{user}-phone-{seed}")).unwrap(),
    );
    let mut repo = Repo::new(MemoryStore::new());
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let month: Month = "2026-11".parse().unwrap();
    let mut n = 0;
    let mut id = |rng: &mut ChaCha8Rng| {
        n += 1;
        RecordId::new(format!("{:016x}", rng.random::<u64>() ^ n)).unwrap()
    };
    for p in 0..10 {
        let patient = PatientId::new(format!("p-{}", rng.random_range(1..100_000))).unwrap();
        let docs = [
            DocumentId::journal(&patient, month),
            DocumentId::administrations(&patient, month),
        ];
        for v in 0..4i64 {
            let at = Timestamp(1_795_478_400_000 + (p * 4 + v) * 3_600_000);
            let visit = id(&mut rng);
            let mut journal = vec![(
                id(&mut rng),
                EventBody::VisitStart {
                    visit: visit.clone(),
                    occurred_at: at,
                },
            )];
            for t in 0..4 {
                let done = rng.random_bool(0.9);
                journal.push((
                    id(&mut rng),
                    EventBody::TaskOutcome {
                        visit: visit.clone(),
                        task: format!("task-{t}"),
                        done,
                        reason: (!done).then(|| "declined".to_owned()),
                        intervention: None,
                    },
                ));
            }
            journal.push((
                id(&mut rng),
                EventBody::Note {
                    body: text(&mut rng, words),
                    corrects: None,
                },
            ));
            journal.push((
                id(&mut rng),
                EventBody::Observation {
                    code: ObservationCode::HeartRate,
                    value: f64::from(rng.random_range(50..110u32)),
                    unit: "/min".into(),
                    occurred_at: at,
                },
            ));
            journal.push((
                id(&mut rng),
                EventBody::VisitStop {
                    visit,
                    occurred_at: at,
                },
            ));
            let doses: Vec<(RecordId, EventBody)> = (0..4)
                .map(|s| {
                    let order = RecordId::new(format!("o{}", rng.random_range(0..3))).unwrap();
                    (
                        id(&mut rng),
                        EventBody::Administration {
                            order: order.clone(),
                            order_revision: order,
                            slot: format!("2026-11-{:02}T{:02}:00", 1 + p, 8 + s),
                            outcome: AdministrationOutcome::Given,
                            reason: None,
                            occurred_at: at,
                        },
                    )
                })
                .collect();
            repo.change_together(&docs, &author, at, |d, e| {
                let records = if *d == docs[0] { &journal } else { &doses };
                for (rid, body) in records {
                    e.record(rid.clone(), body.clone())?;
                }
                Ok(())
            })
            .unwrap();
        }
    }
    let mut singles = Vec::new();
    let mut batches = Vec::new();
    let mut docs: Vec<DocChanges> = Vec::new();
    let mut bytes = 0;
    for (i, (doc, h)) in repo.pending().unwrap().into_iter().enumerate() {
        let change = repo.get(&doc).unwrap().automerge_change(&h).unwrap();
        let raw = change.raw_bytes().to_vec();
        let position = 1000 + i as u64;
        singles.push(
            wire::encode(&DeviceMessage::Upload {
                upload: i as u32,
                docs: vec![DocChanges {
                    doc: doc.clone(),
                    changes: vec![raw.clone()],
                    positions: vec![],
                }],
            })
            .unwrap(),
        );
        bytes += raw.len();
        docs.push(DocChanges {
            doc,
            changes: vec![raw],
            positions: vec![position],
        });
        if bytes >= 32 * 1024 {
            batches.push(batch(std::mem::take(&mut docs), position));
            bytes = 0;
        }
    }
    if let Some(last) = docs.last().and_then(|d| d.positions.last().copied()) {
        batches.push(batch(docs, last));
    }
    let _ = repo.store().documents().unwrap();
    (singles, batches)
}

fn batch(docs: Vec<DocChanges>, position: u64) -> Vec<u8> {
    wire::encode(&ServerMessage::Batch3 {
        batch: 1,
        docs,
        cursor: Cursor {
            epoch: [7; 16],
            position,
        },
        backfill: vec![],
        remaining: 0,
        proof: [9; 32],
    })
    .unwrap()
}

fn training_samples() -> Vec<Vec<u8>> {
    let mut samples = Vec::new();
    for (i, user) in ["tom", "eva", "kim", "ali", "sara", "nils"]
        .iter()
        .enumerate()
    {
        let (singles, batches) = day(user, 100 + i as u64, false);
        samples.extend(singles);
        samples.extend(batches);
    }
    samples
}

#[test]
#[ignore = "regenerates the shipped dictionary"]
fn train_the_dictionary() {
    let dict = zstd::dict::from_samples(&training_samples(), DICTIONARY_BYTES).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/protocol/zstd-dict-1.bin");
    std::fs::write(path, &dict).unwrap();
}

/// What the shipped dictionary pays, on a day of other people and real words: much on small
/// frames (a live edit's upload), a little on 32 KiB uploads. Printed; asserted loosely.
#[test]
fn the_dictionary_pays_on_small_frames() {
    let (singles, batches) = day("anna", 1, true);
    for (name, frames) in [("one change", &singles), ("32 KiB", &batches)] {
        let raw: usize = frames.iter().map(Vec::len).sum();
        let plain: usize = frames
            .iter()
            .map(|f| zstd::bulk::compress(f, LEVEL).unwrap().len() + 2)
            .sum();
        let with: usize = frames.iter().map(|f| compress::pack(f.clone()).len()).sum();
        eprintln!(
            "{name}: {} frames, {raw} bytes; zstd {plain}; zstd with the dictionary {with}",
            frames.len()
        );
        assert!(with < plain, "{name}: the dictionary costs");
        if name == "one change" {
            assert!(with * 4 < plain * 3, "{name}: {with} against {plain}");
        }
        for f in frames {
            assert_eq!(
                compress::unpack(&compress::pack(f.clone()))
                    .unwrap()
                    .as_ref(),
                f.as_slice()
            );
        }
    }
    assert!(DICTIONARY.len() <= DICTIONARY_BYTES);
}
