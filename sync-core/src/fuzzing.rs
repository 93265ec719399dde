//! Fuzz entry points, shared by the cargo-fuzz targets in `fuzz/` and by the stable-toolchain
//! harness in `tests/tests/fuzz_harness.rs`. Built only with the `fuzzing` feature.
//!
//! - [`wire`]: bytes as a message in either direction; decoded messages must re-encode to bytes
//!   that decode to the same message; the bytes are also fed to both session state machines.
//! - [`ingest`]: bytes as foreign Automerge changes (raw, a mutated valid change, or a change
//!   forged through Automerge's API), run through the server's upload path and through
//!   [`Repo::apply_changes`] on a small deterministic record. A refused change leaves the
//!   document as it was; an accepted one survives a reload from the store, which validates.
//! - [`store_load`]: bytes as a stored snapshot or change row (or edits to valid ones) in a real
//!   SQLite store in a temporary file; opening and loading gives a document that validates or a
//!   typed error naming the document, and every other document still loads.
//!
//! Each entry point panics only when an invariant is broken, which is a bug. [`seeds`] gives
//! valid inputs built from real messages, changes and stored documents.

// The fixtures below are constant (they cannot fail on any input), and an entry point panics on
// purpose when an invariant breaks: that is how a fuzzer learns of a bug.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use automerge::legacy;
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{Automerge, Change, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, ScalarValue};

use crate::error::{ModelError, RepoError};
use crate::ids::{
    Author, DeviceId, DocumentId, Month, PatientId, RecordId, Role, Timestamp, UserId,
};
use crate::model::{
    AdministrationOutcome, AllergyStatus, CareDocument, ChangeMessage, Criticality, EventBody,
    GoalStatus, InterventionStatus, MedicationOrder, ObservationCode, Register, RegisterValue,
    TextKey,
};
use crate::protocol::wire::{
    self, Backfill, CloseReason, Cursor, DeviceMessage, DocChanges, Hello, ReadEntry, RefusalCode,
    Refused, ServerMessage,
};
use crate::protocol::{
    AccessPolicy, DeviceConfig, DeviceSession, Peer, ServerConfig, ServerEvent, ServerSession,
};
use crate::repo::Repo;
use crate::store::{MemoryStore, Origin, SqliteStore, Store};

// ---------------------------------------------------------------------------------------------
// Fixtures: one person's record, built once per process, deterministically.

/// A document of the fixture record: its base history and what it looks like saved.
#[derive(Debug)]
struct BaseDoc {
    id: DocumentId,
    /// Changes after genesis, in order.
    changes: Vec<Change>,
    /// `CareDocument::save` of the base state.
    snapshot: Vec<u8>,
}

/// A valid change that is not in the base: made on the base state by `author`.
#[derive(Debug)]
struct Template {
    doc: usize,
    author: usize,
    change: Change,
}

#[derive(Debug)]
struct Fixture {
    authors: Vec<Author>,
    docs: Vec<BaseDoc>,
    templates: Vec<Template>,
    /// Record JSON (revisions and events of the base and the templates, also re-signed by every
    /// author): values a forged change writes.
    values: Vec<String>,
    /// Record ids and text keys in use, and fresh ones: keys a forged change writes.
    keys: Vec<String>,
    text_keys: Vec<String>,
    /// For each document, a SQLite store holding every other base document (the first two
    /// compacted into snapshots), as file bytes.
    store_files: Vec<Vec<u8>>,
}

fn rid(s: &str) -> RecordId {
    RecordId::new(s).expect("fixture record id")
}

fn author(user: &str, role: Role) -> Author {
    Author::new(
        UserId::new(user).expect("fixture user"),
        role,
        DeviceId::new(format!("{user}-phone")).expect("fixture device"),
    )
}

/// 2026-11-24 at `hh:mm` UTC.
fn at(hh: i64, mm: i64) -> Timestamp {
    Timestamp(1_795_478_400_000 + (hh * 60 + mm) * 60_000)
}

fn order(dose: &str) -> RegisterValue {
    RegisterValue::Order(MedicationOrder {
        drug: "Metoprolol".into(),
        strength: "50 mg".into(),
        dose: dose.into(),
        route: "oral".into(),
        times: vec!["08:00".into(), "20:00".into()],
        start: "2026-11-01".into(),
        stop: None,
        delegated: true,
        valid_from: at(7, 0),
    })
}

const ANNA: usize = 0; // carer
const BO: usize = 1; // nurse
const CILLA: usize = 2; // nurse, another device
const ADA: usize = 3; // admin

type EditFn = Box<dyn Fn(&mut crate::model::Edit<'_>) -> Result<(), ModelError>>;

fn edit(f: impl Fn(&mut crate::model::Edit<'_>) -> Result<(), ModelError> + 'static) -> EditFn {
    Box::new(f)
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build_fixture)
}

fn build_fixture() -> Fixture {
    let authors = vec![
        author("anna", Role::Carer),
        author("bo", Role::Nurse),
        author("cilla", Role::Nurse),
        author("ada", Role::Admin),
    ];
    let p = PatientId::new("p-1").expect("fixture patient");
    let month: Month = "2026-11".parse().expect("fixture month");
    let ids = [
        DocumentId::patient_header(&p),
        DocumentId::care_plan(&p),
        DocumentId::medication(&p),
        DocumentId::administrations(&p, month),
        DocumentId::journal(&p, month),
    ];
    // (doc, author, edit): the base history, in order.
    let base: Vec<(usize, usize, EditFn)> = vec![
        (
            0,
            BO,
            edit(|e| {
                e.create(
                    rid("name-1"),
                    Register::DisplayName,
                    RegisterValue::DisplayName {
                        name: "Greta Andersson".into(),
                    },
                    None,
                )?;
                e.create(
                    rid("a1-1"),
                    Register::Allergy(rid("a1")),
                    RegisterValue::Allergy {
                        substance: "Penicillin".into(),
                        criticality: Criticality::High,
                        status: AllergyStatus::Active,
                        reaction: Some("Rash".into()),
                    },
                    None,
                )
            }),
        ),
        (
            1,
            BO,
            edit(|e| {
                e.create(
                    rid("g1-1"),
                    Register::Goal(rid("g1")),
                    RegisterValue::Goal {
                        title: "Walk daily".into(),
                        status: GoalStatus::Active,
                    },
                    Some("Ten minutes outdoors with support."),
                )
            }),
        ),
        (
            1,
            ANNA,
            edit(|e| {
                e.create(
                    rid("i1-1"),
                    Register::Intervention(rid("i1")),
                    RegisterValue::Intervention {
                        title: "Morning walk".into(),
                        responsible_organisation: "Hemtjänst Norr".into(),
                        status: InterventionStatus::InProgress,
                        goal: Some(rid("g1")),
                    },
                    Some("Use the walker."),
                )
            }),
        ),
        (
            2,
            BO,
            edit(|e| {
                e.create(
                    rid("o1-1"),
                    Register::Order(rid("o1")),
                    order("1 tablet"),
                    Some("With water."),
                )
            }),
        ),
        (
            3,
            ANNA,
            edit(|e| {
                e.record(
                    rid("adm-1"),
                    EventBody::Administration {
                        order: rid("o1"),
                        order_revision: rid("o1-1"),
                        slot: "2026-11-24T08:00".into(),
                        outcome: AdministrationOutcome::Given,
                        reason: None,
                        occurred_at: at(8, 5),
                    },
                )
            }),
        ),
        (
            4,
            ANNA,
            edit(|e| {
                e.record(
                    rid("n1"),
                    EventBody::Note {
                        body: "Ate breakfast, in good spirits.".into(),
                        corrects: None,
                    },
                )?;
                e.record(
                    rid("obs-1"),
                    EventBody::Observation {
                        code: ObservationCode::BodyWeight,
                        value: 61.5,
                        unit: "kg".into(),
                        occurred_at: at(8, 10),
                    },
                )?;
                e.start_draft(rid("n2"), "Slept badly, ")
            }),
        ),
    ];
    // (doc, author, edit): each made on the base state, not in the base.
    let templates: Vec<(usize, usize, EditFn)> = vec![
        (
            0,
            BO,
            edit(|e| {
                e.update(
                    rid("name-2"),
                    Register::DisplayName,
                    RegisterValue::DisplayName {
                        name: "Greta Andersson-Berg".into(),
                    },
                )
            }),
        ),
        (
            0,
            CILLA,
            edit(|e| {
                e.update(
                    rid("name-3"),
                    Register::DisplayName,
                    RegisterValue::DisplayName {
                        name: "Greta A.".into(),
                    },
                )?;
                e.create(
                    rid("res-1"),
                    Register::Resuscitation,
                    RegisterValue::Resuscitation {
                        decision: crate::model::ResuscitationDecision::Attempt,
                        comment: None,
                    },
                    None,
                )
            }),
        ),
        (
            1,
            ANNA,
            edit(|e| {
                e.set_text(
                    &TextKey::GoalDescription(rid("g1")),
                    "Twenty minutes outdoors.",
                )
            }),
        ),
        (
            1,
            BO,
            edit(|e| {
                e.update(
                    rid("g1-2"),
                    Register::Goal(rid("g1")),
                    RegisterValue::Goal {
                        title: "Walk daily".into(),
                        status: GoalStatus::Achieved,
                    },
                )?;
                e.create(
                    rid("fu-1"),
                    Register::FollowUp,
                    RegisterValue::FollowUp {
                        date: "2026-12-01".into(),
                    },
                    None,
                )
            }),
        ),
        (
            2,
            BO,
            edit(|e| {
                e.update(rid("o1-2"), Register::Order(rid("o1")), order("2 tablets"))?;
                e.set_text(
                    &TextKey::OrderInstructions(rid("o1")),
                    "With water, after food.",
                )
            }),
        ),
        (
            2,
            CILLA,
            edit(|e| {
                e.update(
                    rid("o1-3"),
                    Register::Order(rid("o1")),
                    order("half a tablet"),
                )
            }),
        ),
        (
            3,
            ANNA,
            edit(|e| {
                e.record(
                    rid("adm-2"),
                    EventBody::Administration {
                        order: rid("o1"),
                        order_revision: rid("o1-1"),
                        slot: "2026-11-24T20:00".into(),
                        outcome: AdministrationOutcome::NotGiven,
                        reason: Some("Asleep".into()),
                        occurred_at: at(20, 10),
                    },
                )
            }),
        ),
        (
            3,
            BO,
            edit(|e| {
                e.record(
                    rid("ack-1"),
                    EventBody::FlagAcknowledgement {
                        flag: "possible-double-dose/o1/2026-11-24T08:00".into(),
                        covers: vec![rid("adm-1")],
                        comment: None,
                    },
                )?;
                e.record(
                    rid("eie-1"),
                    EventBody::EnteredInError {
                        target: rid("adm-1"),
                        reason: "Wrong slot".into(),
                    },
                )
            }),
        ),
        (
            4,
            ANNA,
            edit(|e| {
                e.set_text(&TextKey::NoteDraft(rid("n2")), "Slept badly, woke at 3.")?;
                e.record(
                    rid("v1"),
                    EventBody::VisitStart {
                        visit: rid("visit-1"),
                        occurred_at: at(12, 0),
                    },
                )?;
                e.record(
                    rid("t1"),
                    EventBody::TaskOutcome {
                        visit: rid("visit-1"),
                        task: "Morning walk".into(),
                        done: true,
                        reason: None,
                        intervention: Some(rid("i1")),
                    },
                )
            }),
        ),
        (
            4,
            BO,
            edit(|e| {
                e.record(
                    rid("n3"),
                    EventBody::Note {
                        body: "Blood pressure checked.".into(),
                        corrects: Some(crate::model::RecordRef {
                            document: "p-1/journal/2026-11".into(),
                            record: rid("n1"),
                        }),
                    },
                )
            }),
        ),
    ];

    let mut docs: Vec<CareDocument> = ids
        .iter()
        .map(|id| CareDocument::new(id.clone()).expect("genesis"))
        .collect();
    let mut base_changes: Vec<Vec<Change>> = vec![Vec::new(); ids.len()];
    for (minute, (d, a, f)) in (0..).zip(&base) {
        let local = docs[*d]
            .change(&authors[*a], at(9, minute), |e| f(e))
            .expect("base edit");
        base_changes[*d].push(local.change.expect("base edit writes"));
    }
    let base_docs: Vec<BaseDoc> = ids
        .iter()
        .zip(&docs)
        .zip(&base_changes)
        .map(|((id, doc), changes)| BaseDoc {
            id: id.clone(),
            changes: changes.clone(),
            snapshot: doc.save(),
        })
        .collect();
    let mut values = BTreeSet::new();
    let mut collect_values = |doc: &CareDocument| {
        for rev in doc.revisions().values() {
            for a in &authors {
                let mut rev = rev.clone();
                rev.author = a.clone();
                values.insert(serde_json::to_string(&rev).expect("record json"));
            }
        }
        for ev in doc.events().values() {
            for a in &authors {
                let mut ev = ev.clone();
                ev.author = a.clone();
                values.insert(serde_json::to_string(&ev).expect("record json"));
            }
        }
    };
    let mut made = Vec::new();
    for (minute, (d, a, f)) in (0..).zip(&templates) {
        let mut doc =
            CareDocument::load(ids[*d].clone(), Some(&base_docs[*d].snapshot), &[]).expect("base");
        let local = doc
            .change(&authors[*a], at(10, minute), |e| f(e))
            .expect("template edit");
        collect_values(&doc);
        made.push(Template {
            doc: *d,
            author: *a,
            change: local.change.expect("template edit writes"),
        });
    }
    for doc in &docs {
        collect_values(doc);
    }
    let mut keys: Vec<String> = docs
        .iter()
        .flat_map(|d| {
            d.revisions()
                .keys()
                .chain(d.events().keys())
                .map(|k| k.as_str().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    keys.extend(["x1", "x2", "o1", "", "a/b", "n1 "].map(String::from));
    let text_keys: Vec<String> = [
        "draft/n2",
        "draft/n9",
        "goal/g1/description",
        "goal/g9/description",
        "intervention/i1/description",
        "order/o1/instructions",
        "order/o9/instructions",
        "bogus",
    ]
    .map(String::from)
    .to_vec();
    let store_files = (0..base_docs.len())
        .map(|skip| build_store_file(&base_docs, skip))
        .collect();
    Fixture {
        authors,
        docs: base_docs,
        templates: made,
        values: values.into_iter().collect(),
        keys,
        text_keys,
        store_files,
    }
}

/// A directory for temporary stores: tmpfs when the machine has one (fsync is free there).
fn temp_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    let made = if shm.is_dir() {
        tempfile::Builder::new().prefix("nara-fuzz").tempdir_in(shm)
    } else {
        tempfile::Builder::new().prefix("nara-fuzz").tempdir()
    };
    made.expect("temporary directory")
}

/// Every base document but `skip` in a fresh SQLite store; the first two compacted into
/// snapshots.
fn build_store_file(docs: &[BaseDoc], skip: usize) -> Vec<u8> {
    let dir = temp_dir();
    let path = dir.path().join("store.db");
    {
        let mut store = SqliteStore::open(&path).expect("fixture store");
        for (i, d) in docs.iter().enumerate().filter(|(i, _)| *i != skip) {
            let rows: Vec<(ChangeHash, &[u8])> = d
                .changes
                .iter()
                .map(|c| (c.hash(), c.raw_bytes()))
                .collect();
            store
                .append(&d.id, &rows, Origin::Remote)
                .expect("fixture rows");
            if i < 2 {
                let covered: Vec<ChangeHash> = rows.iter().map(|(h, _)| *h).collect();
                store
                    .compact(&d.id, &d.snapshot, &covered)
                    .expect("fixture snapshot");
            }
        }
    }
    // The last connection closed: SQLite checkpointed the WAL into the main file.
    std::fs::read(&path).expect("fixture store file")
}

/// The fixture's documents in a fresh in-memory store.
fn base_store() -> MemoryStore {
    let mut store = MemoryStore::new();
    for d in &fixture().docs {
        let rows: Vec<(ChangeHash, &[u8])> = d
            .changes
            .iter()
            .map(|c| (c.hash(), c.raw_bytes()))
            .collect();
        store
            .append(&d.id, &rows, Origin::Remote)
            .expect("memory store");
    }
    store
}

/// Everyone may read and write the fixture person (role rules are the model's business).
#[derive(Debug)]
struct Everyone;

impl AccessPolicy for Everyone {
    fn may_read(&self, _: &Peer, _: &DocumentId) -> bool {
        true
    }
    fn may_write(&self, peer: &Peer, _: &DocumentId) -> bool {
        peer.author.role != Role::Admin
    }
    fn readable_patients(&self, _: &Peer) -> Vec<PatientId> {
        vec![PatientId::new("p-1").expect("fixture patient")]
    }
}

/// For cargo-fuzz targets (call it in `init`): libFuzzer's panic hook aborts on every panic,
/// even one that `sync-core` catches (Automerge's asserts on malformed input, see
/// `model::document`). This hook lets panics raised inside Automerge unwind quietly to the
/// `catch_unwind` around the call; any other panic (an invariant of an entry point) prints and
/// aborts, so libFuzzer records the crash. An Automerge panic nobody catches still aborts
/// (libFuzzer catches it at the top); replay the input with the harness to see its message.
pub fn install_panic_hook() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_automerge = info
            .location()
            .is_some_and(|l| l.file().contains("/automerge-"));
        if !in_automerge {
            default_hook(info);
            std::process::abort();
        }
    }));
}

// ---------------------------------------------------------------------------------------------
// Reading structure out of fuzzer bytes.

#[derive(Debug)]
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data }
    }
    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }
    fn index(&mut self, len: usize) -> usize {
        if len == 0 {
            0
        } else {
            self.byte() as usize % len
        }
    }
    fn pick<'b, T>(&mut self, items: &'b [T]) -> &'b T {
        &items[self.index(items.len())]
    }
    /// A length byte, then that many bytes (fewer if the input ends).
    fn bytes(&mut self) -> &'a [u8] {
        let n = (self.byte() as usize).min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }
    fn string(&mut self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

// ---------------------------------------------------------------------------------------------
// wire

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

// ---------------------------------------------------------------------------------------------
// ingest

/// Interprets `bytes` as foreign changes to one document of the fixture record and runs them
/// through the server's upload path (as a given device) and through [`Repo::apply_changes`]
/// (as a device receiving them from the server).
///
/// Layout: a mode byte, then
/// - mode 0: document, peer, then the rest is one change's bytes;
/// - mode 1: document, peer, then changes as (u16 length, bytes)...;
/// - mode 2: template, peer offset, then mutations of the template's decoded change;
/// - mode 3: document, author, flags, then operations of a change forged through Automerge.
pub fn ingest(bytes: &[u8]) {
    let fx = fixture();
    let mut r = Reader::new(bytes);
    let mode = r.byte() % 4;
    let (doc, peer, changes) = match mode {
        0 => {
            let doc = r.index(fx.docs.len());
            let peer = r.index(fx.authors.len());
            (doc, peer, vec![r.rest().to_vec()])
        }
        1 => {
            let doc = r.index(fx.docs.len());
            let peer = r.index(fx.authors.len());
            let mut changes = Vec::new();
            while !r.is_empty() && changes.len() < 16 {
                let n = (r.u16() as usize).min(r.data.len());
                let (head, rest) = r.data.split_at(n);
                r.data = rest;
                changes.push(head.to_vec());
            }
            (doc, peer, changes)
        }
        2 => {
            let t = r.pick(&fx.templates);
            let peer = (t.author + r.index(fx.authors.len())) % fx.authors.len();
            let mut changes = vec![mutate_change(&t.change, &mut r).raw_bytes().to_vec()];
            // Any bytes left: another template or its mutation, to combine changes.
            if !r.is_empty() {
                let t2 = r.pick(&fx.templates);
                changes.push(mutate_change(&t2.change, &mut r).raw_bytes().to_vec());
            }
            (t.doc, peer, changes)
        }
        _ => {
            let doc = r.index(fx.docs.len());
            let who = r.index(fx.authors.len());
            let change = forge(doc, who, &mut r);
            (doc, who, vec![change.raw_bytes().to_vec()])
        }
    };
    check_upload(doc, peer, &changes);
    check_apply(doc, &changes);
}

/// Decodes a valid change, changes it as the bytes say, and encodes it again (with a valid
/// checksum, so the mutation reaches the model rather than the checksum test).
fn mutate_change(template: &Change, r: &mut Reader<'_>) -> Change {
    let fx = fixture();
    let mut c: legacy::Change = template.decode();
    let steps = r.byte() % 6;
    for _ in 0..steps {
        match r.byte() % 12 {
            0 => c.message = Some(r.string()),
            1 => {
                // Another author in an otherwise honest message.
                if let Some(mut m) = c
                    .message
                    .as_deref()
                    .and_then(|m| serde_json::from_str::<ChangeMessage>(m).ok())
                {
                    m.author = r.pick(&fx.authors).clone();
                    c.message = serde_json::to_string(&m).ok();
                }
            }
            2 => {
                // Writes listed differently.
                if let Some(mut m) = c
                    .message
                    .as_deref()
                    .and_then(|m| serde_json::from_str::<ChangeMessage>(m).ok())
                {
                    match r.byte() % 3 {
                        0 => m.writes.clear(),
                        1 => m.writes.push(format!("events/{}", r.pick(&fx.keys))),
                        _ => {
                            m.writes.pop();
                        }
                    }
                    c.message = serde_json::to_string(&m).ok();
                }
            }
            3 => c.actor_id = r.pick(&fx.authors).actor_id(),
            4 => c.seq = u64::from(r.u16()),
            5 => {
                let v = u64::from(r.u16()).max(1);
                c.start_op = std::num::NonZeroU64::new(v).unwrap_or(std::num::NonZeroU64::MIN);
            }
            6 => match r.byte() % 3 {
                0 => c.deps.clear(),
                1 => {
                    let d = r.pick(&fx.docs);
                    let h = d
                        .changes
                        .get(r.index(d.changes.len()))
                        .map(Change::hash)
                        .unwrap_or(ChangeHash([7; 32]));
                    c.deps.push(h);
                }
                _ => c.deps.push(ChangeHash([r.byte(); 32])),
            },
            7 => c.time = i64::from(r.u16() as i16) * 1_000_000,
            8 => c.extra_bytes = r.bytes().to_vec(),
            9 => {
                if !c.operations.is_empty() {
                    let i = r.index(c.operations.len());
                    if r.byte() % 2 == 0 {
                        c.operations.remove(i);
                    } else {
                        let op = c.operations[i].clone();
                        c.operations.push(op);
                    }
                }
            }
            _ => {
                if !c.operations.is_empty() {
                    let i = r.index(c.operations.len());
                    mutate_op(&mut c.operations[i], r);
                }
            }
        }
    }
    Change::from(c)
}

fn mutate_op(op: &mut legacy::Op, r: &mut Reader<'_>) {
    let fx = fixture();
    match r.byte() % 8 {
        0 => op.key = legacy::Key::Map(r.pick(&fx.keys).as_str().into()),
        1 => op.key = legacy::Key::Map(r.string().into()),
        2 => op.action = legacy::OpType::Put(ScalarValue::Str(r.pick(&fx.values).as_str().into())),
        3 => {
            // A record's JSON with some bytes spliced in.
            let mut v = r.pick(&fx.values).clone().into_bytes();
            let at = r.index(v.len() + 1);
            let cut = r.index(8);
            let end = (at + cut).min(v.len());
            v.splice(at..end, r.bytes().iter().copied());
            op.action = legacy::OpType::Put(ScalarValue::Str(
                String::from_utf8_lossy(&v).into_owned().into(),
            ));
        }
        4 => {
            op.action = match r.byte() % 5 {
                0 => legacy::OpType::Delete,
                1 => legacy::OpType::Make(ObjType::Map),
                2 => legacy::OpType::Make(ObjType::Text),
                3 => legacy::OpType::Put(ScalarValue::Int(i64::from(r.byte()))),
                _ => legacy::OpType::Increment(1),
            }
        }
        5 => op.insert = !op.insert,
        6 => op.obj = legacy::ObjectId::Root,
        _ => op.pred = legacy::SortedVec::new(),
    }
}

/// A change made through Automerge's API on the base state, as a hostile or buggy peer could:
/// the operations, author, actor and listed writes come from the bytes.
fn forge(doc: usize, who: usize, r: &mut Reader<'_>) -> Change {
    let fx = fixture();
    let base = &fx.docs[doc];
    let flags = r.byte();
    let actor = if flags & 1 == 0 {
        fx.authors[who].actor_id()
    } else {
        r.pick(&fx.authors).actor_id()
    };
    let mut am = Automerge::load(&base.snapshot)
        .expect("fixture snapshot")
        .with_actor(actor);
    let obj = |am: &Automerge, name: &str| -> ObjId {
        match am.get(ROOT, name) {
            Ok(Some((_, id))) => id,
            _ => ROOT,
        }
    };
    let (revisions, events, texts, meta) = (
        obj(&am, "revisions"),
        obj(&am, "events"),
        obj(&am, "texts"),
        obj(&am, "meta"),
    );
    let mut writes = Vec::new();
    let mut tx = am.transaction();
    let ops = 1 + r.byte() % 4;
    for _ in 0..ops {
        // Errors from Automerge (e.g. a splice out of range) just leave the op out.
        match r.byte() % 9 {
            0 | 1 => {
                let (map, name) = if r.byte() % 2 == 0 {
                    (&revisions, "revisions")
                } else {
                    (&events, "events")
                };
                let key = r.pick(&fx.keys).clone();
                let value = r.pick(&fx.values).clone();
                if tx.put(map, key.as_str(), value).is_ok() {
                    writes.push(format!("{name}/{key}"));
                }
            }
            2 => {
                let key = r.pick(&fx.text_keys).clone();
                let text = r.string();
                if let Ok(t) = tx.put_object(&texts, key.as_str(), ObjType::Text) {
                    let _ = tx.splice_text(&t, 0, 0, &text);
                    writes.push(format!("texts/{key}"));
                }
            }
            3 => {
                let key = r.pick(&fx.text_keys).clone();
                let pos = r.index(16);
                let del = (r.byte() % 4) as isize;
                let text = r.string();
                if let Ok(Some((_, t))) = tx.get(&texts, key.as_str()) {
                    let len = tx.length(&t);
                    let pos = pos.min(len);
                    if tx
                        .splice_text(&t, pos, del.min((len - pos) as isize), &text)
                        .is_ok()
                    {
                        writes.push(format!("texts/{key}"));
                    }
                }
            }
            4 => {
                let map = if r.byte() % 2 == 0 {
                    &revisions
                } else {
                    &events
                };
                let key = r.pick(&fx.keys).clone();
                let _ = tx.put(map, key.as_str(), i64::from(r.byte()));
            }
            5 => {
                let map = if r.byte() % 2 == 0 {
                    &revisions
                } else {
                    &events
                };
                let key = r.pick(&fx.keys).clone();
                let _ = tx.delete(map, key.as_str());
            }
            6 => {
                let target = if r.byte() % 2 == 0 { &meta } else { &ROOT };
                let key = r
                    .pick(&["kind", "patient", "schema", "events", "x"])
                    .to_string();
                let _ = tx.put(target, key.as_str(), r.string());
            }
            7 => {
                let key = r.pick(&fx.keys).clone();
                if let Ok(m) = tx.put_object(&events, key.as_str(), ObjType::Map) {
                    let _ = tx.put(&m, "body", r.string());
                    writes.push(format!("events/{key}"));
                }
            }
            _ => {
                // A text object where a record belongs.
                let key = r.pick(&fx.keys).clone();
                let _ = tx.put_object(&revisions, key.as_str(), ObjType::Text);
                writes.push(format!("revisions/{key}"));
            }
        }
    }
    if flags & 2 != 0 {
        writes.push(format!("events/{}", r.pick(&fx.keys)));
    }
    if flags & 4 != 0 {
        writes.reverse();
        writes.pop();
    }
    let message = ChangeMessage {
        author: if flags & 8 == 0 {
            fx.authors[who].clone()
        } else {
            r.pick(&fx.authors).clone()
        },
        writes,
    };
    let message = serde_json::to_string(&message).expect("message json");
    let (hash, _) = tx.commit_with(
        CommitOptions::default()
            .with_message(message)
            .with_time(at(12, 0).0),
    );
    match hash.and_then(|h| am.get_change_by_hash(&h)) {
        Some(c) => c,
        // Nothing written: an empty change still goes through the pipeline.
        None => {
            let mut c = fx.templates[0].change.decode();
            c.operations.clear();
            Change::from(c)
        }
    }
}

/// The document's validated contents, to compare two replicas (heads are compared apart).
fn contents(doc: &CareDocument) -> String {
    let texts: Vec<(String, Option<String>)> = fixture()
        .text_keys
        .iter()
        .filter_map(|k| k.parse::<TextKey>().ok())
        .map(|k| (k.to_string(), doc.text(&k)))
        .collect();
    format!("{:?}\n{:?}\n{:?}", doc.revisions(), doc.events(), texts)
}

/// Uploads `changes` to `doc` as device `peer`, through the server session.
fn check_upload(doc: usize, peer: usize, changes: &[Vec<u8>]) {
    let fx = fixture();
    let id = &fx.docs[doc].id;
    let store = base_store();
    let mut repo = Repo::new(store.clone());
    let before = repo.get(id).expect("base loads").heads();
    let hello = DeviceMessage::Hello(Hello {
        cursor: None,
        received: vec![],
        priority: vec![],
        backfill: vec![],
        upload: vec![DocChanges {
            doc: id.clone(),
            changes: changes.to_vec(),
            positions: vec![],
        }],
    });
    let Ok(bytes) = wire::encode(&hello) else {
        return;
    };
    let mut session = ServerSession::new(
        Peer {
            author: fx.authors[peer].clone(),
        },
        ServerConfig::default(),
    );
    session.handle_bytes(&mut repo, &Everyone, &bytes, at(12, 0));
    while let Some(ev) = session.poll_event() {
        if let ServerEvent::Closed { reason, detail } = ev {
            panic!("upload closed the session: {reason:?}: {detail}");
        }
    }
    let mut refused: Option<Vec<Refused>> = None;
    while let Some(out) = session.poll_transmit() {
        if let Ok(ServerMessage::UploadAck {
            upload: 0,
            refused: r,
        }) = wire::decode(&out)
        {
            refused = Some(r);
        }
    }
    let refused = refused.expect("the upload is acknowledged");
    let refused_at: BTreeMap<u32, RefusalCode> =
        refused.iter().map(|r| (r.index, r.code)).collect();
    let now = repo.get(id).expect("document after upload");
    let heads_after = now.heads();
    let base_holds = |h: &ChangeHash| fx.docs[doc].changes.iter().any(|c| c.hash() == *h);
    let mut any_accepted = false;
    for (i, bytes) in (0u32..).zip(changes) {
        let parsed = Change::from_bytes(bytes.clone()).ok();
        match (refused_at.get(&i), &parsed) {
            (Some(_), Some(c)) => {
                // Refused: not in the document, unless it was there before or another copy of
                // it in the same upload was accepted.
                let accepted_copy = changes
                    .iter()
                    .zip(0u32..)
                    .any(|(b, j)| j != i && b == bytes && !refused_at.contains_key(&j));
                if !base_holds(&c.hash()) && !accepted_copy {
                    assert!(
                        now.automerge_change(&c.hash()).is_none(),
                        "a refused change is in the document"
                    );
                }
            }
            (Some(_), None) => {}
            (None, Some(c)) => {
                assert!(
                    now.automerge_change(&c.hash()).is_some(),
                    "an accepted change is not in the document"
                );
                any_accepted |= !base_holds(&c.hash());
            }
            (None, None) => panic!("unparsable change {i} was not refused"),
        }
    }
    if !any_accepted {
        assert_eq!(heads_after, before, "refused changes moved the document");
    }
    let contents_now = contents(now);
    // Accepted changes are durable and validate when the document is loaded again.
    let mut reloaded = Repo::new(store);
    let again = reloaded
        .get(id)
        .unwrap_or_else(|e| panic!("accepted changes do not reload: {e}"));
    assert_eq!(
        again.heads(),
        heads_after,
        "the store lost an accepted change"
    );
    assert_eq!(contents(again), contents_now, "reloaded contents differ");
}

/// Applies `changes` to `doc` as a device receiving them (any author), with [`Repo::apply_changes`].
fn check_apply(doc: usize, changes: &[Vec<u8>]) {
    let fx = fixture();
    let id = &fx.docs[doc].id;
    let store = base_store();
    let mut repo = Repo::new(store.clone());
    let before_doc = repo.get(id).expect("base loads");
    let before = before_doc.heads();
    let contents_before = contents(before_doc);
    let mut unique: BTreeSet<ChangeHash> = BTreeSet::new();
    let parsed: Vec<Change> = changes
        .iter()
        .filter_map(|b| Change::from_bytes(b.clone()).ok())
        .filter(|c| unique.insert(c.hash()))
        .collect();
    let outcome = match repo.apply_changes(id, parsed) {
        Ok(o) => o,
        Err(e) => panic!("apply_changes failed as a whole: {e}"),
    };
    assert_eq!(
        outcome.applied.len() + outcome.refused.len() + outcome.duplicates,
        unique.len(),
        "every change is applied, refused or a duplicate"
    );
    let now = repo.get(id).expect("document after apply");
    for (h, e) in &outcome.refused {
        assert_eq!(e.document(), id, "a refusal names the document");
        assert!(
            now.automerge_change(h).is_none(),
            "a refused change is in the document"
        );
    }
    for c in &outcome.applied {
        assert!(
            now.automerge_change(&c.hash()).is_some(),
            "an applied change is missing"
        );
    }
    if outcome.applied.is_empty() {
        assert_eq!(now.heads(), before, "refused changes moved the document");
        assert_eq!(
            contents(now),
            contents_before,
            "refused changes changed the contents"
        );
    }
    let heads = now.heads();
    let contents_now = contents(now);
    let mut reloaded = Repo::new(store);
    let again = reloaded
        .get(id)
        .unwrap_or_else(|e| panic!("applied changes do not reload: {e}"));
    assert_eq!(again.heads(), heads, "the store lost an applied change");
    assert_eq!(contents(again), contents_now, "reloaded contents differ");
}

// ---------------------------------------------------------------------------------------------
// store_load

/// Writes bytes as a stored snapshot or change row of one document into a real SQLite store
/// (holding the whole fixture record) in a temporary file, then opens the store and loads
/// every document.
///
/// Layout: a mode byte, a document byte, then
/// - mode 0: the rest is the document's snapshot;
/// - mode 1: the rest is one more change row (stored under its own hash if it parses);
/// - mode 2: edits `(u16 position, xor byte)...` of the document's valid snapshot;
/// - mode 3: a row byte, a flag byte, then edits of that valid change row (the flag: keep the
///   stored hash, or store under the edited bytes' hash);
/// - mode 4: the document's valid snapshot truncated to a u16 length, then the rest appended.
pub fn store_load(bytes: &[u8]) {
    let fx = fixture();
    let mut r = Reader::new(bytes);
    let mode = r.byte() % 5;
    let target = r.index(fx.docs.len());
    let base = &fx.docs[target];
    let id = &base.id;
    let dir = temp_dir();
    let path = dir.path().join("store.db");
    std::fs::write(&path, &fx.store_files[target]).expect("write the fixture store");
    {
        let mut store = SqliteStore::open(&path).expect("open the fixture store");
        let valid_rows = || -> Vec<(ChangeHash, &[u8])> {
            base.changes
                .iter()
                .map(|c| (c.hash(), c.raw_bytes()))
                .collect()
        };
        let written = match mode {
            0 => store.compact(id, r.rest(), &[]),
            1 => {
                let row = r.rest();
                let hash = Change::from_bytes(row.to_vec())
                    .map(|c| c.hash())
                    .unwrap_or(ChangeHash([0xab; 32]));
                let mut rows = valid_rows();
                rows.push((hash, row));
                store.append(id, &rows, Origin::Remote)
            }
            2 => {
                let mut snap = base.snapshot.clone();
                apply_edits(&mut snap, &mut r);
                store.compact(id, &snap, &[])
            }
            3 => {
                let n = r.index(base.changes.len());
                let rehash = r.byte() % 2 == 1;
                let mut rows = valid_rows();
                let Some(&(hash, bytes)) = rows.get(n) else {
                    return;
                };
                let mut row = bytes.to_vec();
                apply_edits(&mut row, &mut r);
                let hash = if rehash {
                    Change::from_bytes(row.clone()).map_or(hash, |c| c.hash())
                } else {
                    hash
                };
                rows[n] = (hash, &row[..]);
                store.append(id, &rows, Origin::Remote)
            }
            _ => {
                let mut snap = base.snapshot.clone();
                snap.truncate(r.u16() as usize);
                snap.extend_from_slice(r.rest());
                store.compact(id, &snap, &[])
            }
        };
        written.expect("the store takes any bytes");
    }
    let store = SqliteStore::open(&path).expect("the store reopens");
    let mut repo = Repo::new(store);
    match repo.get(id) {
        Ok(doc) => {
            // Whatever loaded validates, and survives its own save and load.
            let saved = doc.save();
            let heads = doc.heads();
            let contents_now = contents(doc);
            let again = CareDocument::load(id.clone(), Some(&saved), &[])
                .unwrap_or_else(|e| panic!("a loaded document does not reload from its save: {e}"));
            assert_eq!(again.heads(), heads, "save and load changed the heads");
            assert_eq!(
                contents(&again),
                contents_now,
                "save and load changed the contents"
            );
        }
        Err(RepoError::Model(e)) => {
            assert_eq!(e.document(), id, "the error names the document");
            assert!(
                !matches!(e, ModelError::Automerge { .. }),
                "damaged bytes must be a typed refusal, not an Automerge failure: {e}"
            );
        }
        Err(e) => panic!("loading damaged bytes gave a store error: {e}"),
    }
    for other in fx.docs.iter().filter(|d| d.id != *id) {
        let doc = repo
            .get(&other.id)
            .unwrap_or_else(|e| panic!("another document no longer loads: {e}"));
        let expected = CareDocument::load(other.id.clone(), Some(&other.snapshot), &[])
            .expect("fixture snapshot")
            .heads();
        assert_eq!(doc.heads(), expected, "another document changed");
    }
}

fn apply_edits(buf: &mut Vec<u8>, r: &mut Reader<'_>) {
    while !r.is_empty() {
        let op = r.byte();
        let pos = r.u16() as usize;
        match op % 4 {
            0 | 1 => {
                let i = pos % buf.len().max(1);
                if let Some(b) = buf.get_mut(i) {
                    *b ^= r.byte() | 1;
                }
            }
            2 => buf.truncate(pos % (buf.len() + 1)),
            _ => {
                let at = pos % (buf.len() + 1);
                let b = r.byte();
                buf.insert(at, b);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// seeds

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
