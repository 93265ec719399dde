//! Fixtures: one person's record, built once per process, deterministically.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::OnceLock;

use automerge::{Change, ChangeHash};

use crate::error::ModelError;
use crate::ids::{
    Author, DeviceId, DocumentId, Month, PatientId, RecordId, Role, Timestamp, UserId,
};
use crate::model::{
    AdministrationOutcome, AllergyStatus, CareDocument, Criticality, EventBody, GoalStatus,
    InterventionStatus, MedicationOrder, ObservationCode, Register, RegisterValue, TextKey,
};
use crate::protocol::{AccessPolicy, Peer};
use crate::store::{MemoryStore, Origin, SqliteStore, Store};

// ---------------------------------------------------------------------------------------------
// Fixtures: one person's record, built once per process, deterministically.

/// A document of the fixture record: its base history and what it looks like saved.
#[derive(Debug)]
pub(super) struct BaseDoc {
    pub(super) id: DocumentId,
    /// Changes after genesis, in order.
    pub(super) changes: Vec<Change>,
    /// `CareDocument::save` of the base state.
    pub(super) snapshot: Vec<u8>,
}

/// A valid change that is not in the base: made on the base state by `author`.
#[derive(Debug)]
pub(super) struct Template {
    pub(super) doc: usize,
    pub(super) author: usize,
    pub(super) change: Change,
}

#[derive(Debug)]
pub(super) struct Fixture {
    pub(super) authors: Vec<Author>,
    pub(super) docs: Vec<BaseDoc>,
    pub(super) templates: Vec<Template>,
    /// Record JSON (revisions and events of the base and the templates, also re-signed by every
    /// author): values a forged change writes.
    pub(super) values: Vec<String>,
    /// Record ids and text keys in use, and fresh ones: keys a forged change writes.
    pub(super) keys: Vec<String>,
    pub(super) text_keys: Vec<String>,
    /// For each document, a SQLite store holding every other base document (the first two
    /// compacted into snapshots), as file bytes.
    pub(super) store_files: Vec<Vec<u8>>,
}

pub(super) fn rid(s: &str) -> RecordId {
    RecordId::new(s).expect("fixture record id")
}

pub(super) fn author(user: &str, role: Role) -> Author {
    Author::new(
        UserId::new(user).expect("fixture user"),
        role,
        DeviceId::new(format!("{user}-phone")).expect("fixture device"),
    )
}

/// 2026-11-24 at `hh:mm` UTC.
pub(super) fn at(hh: i64, mm: i64) -> Timestamp {
    Timestamp(1_795_478_400_000 + (hh * 60 + mm) * 60_000)
}

pub(super) fn order(dose: &str) -> RegisterValue {
    RegisterValue::Order(MedicationOrder {
        drug: "Metoprolol".into(),
        strength: "50 mg".into(),
        dose: dose.into(),
        route: "oral".into(),
        times: vec!["08:00".into(), "20:00".into()],
        start: "2026-11-01".into(),
        stop: None,
        delegated: true,
        window_minutes: None,
        prn: None,
        valid_from: at(7, 0),
    })
}

pub(super) const ANNA: usize = 0; // carer
pub(super) const BO: usize = 1; // nurse
pub(super) const CILLA: usize = 2; // nurse, another device
pub(super) const ADA: usize = 3; // admin

pub(super) type EditFn = Box<dyn Fn(&mut crate::model::Edit<'_>) -> Result<(), ModelError>>;

pub(super) fn edit(
    f: impl Fn(&mut crate::model::Edit<'_>) -> Result<(), ModelError> + 'static,
) -> EditFn {
    Box::new(f)
}

pub(super) fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build_fixture)
}

pub(super) fn build_fixture() -> Fixture {
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
pub(super) fn temp_dir() -> tempfile::TempDir {
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
pub(super) fn build_store_file(docs: &[BaseDoc], skip: usize) -> Vec<u8> {
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
pub(super) fn base_store() -> MemoryStore {
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
pub(super) struct Everyone;

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

/// The document's validated contents, to compare two replicas (heads are compared apart).
pub(super) fn contents(doc: &CareDocument) -> String {
    let texts: Vec<(String, Option<String>)> = fixture()
        .text_keys
        .iter()
        .filter_map(|k| k.parse::<TextKey>().ok())
        .map(|k| (k.to_string(), doc.text(&k)))
        .collect();
    format!("{:?}\n{:?}\n{:?}", doc.revisions(), doc.events(), texts)
}
