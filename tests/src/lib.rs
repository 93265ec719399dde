//! Shared fixtures for Nära Sync's integration tests: people, authors, replicas over either
//! store, and a helper that exchanges changes between replicas the way sync will.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use automerge::ReadDoc;

use sync_core::model::{
    AdministrationOutcome, ApplyOutcome, CareDocument, EventBody, MedicationOrder, RegisterValue,
};
use sync_core::repo::Repo;
use sync_core::store::{MemoryStore, SqliteStore, Store};
use sync_core::{
    Author, DeviceId, DocumentId, Month, PatientId, RecordId, Role, Timestamp, UserId,
};

pub fn author(user: &str, role: Role) -> Author {
    Author::new(
        UserId::new(user).unwrap(),
        role,
        DeviceId::new(format!("{user}-phone")).unwrap(),
    )
}

pub fn carer(name: &str) -> Author {
    author(name, Role::Carer)
}

pub fn nurse(name: &str) -> Author {
    author(name, Role::Nurse)
}

pub fn rid(s: &str) -> RecordId {
    RecordId::new(s).unwrap()
}

pub fn patient(s: &str) -> PatientId {
    PatientId::new(s).unwrap()
}

pub const NOVEMBER: &str = "2026-11";

pub fn november() -> Month {
    NOVEMBER.parse().unwrap()
}

/// 2026-11-24 at `hh:mm` UTC.
pub fn at(hh: i64, mm: i64) -> Timestamp {
    Timestamp(1_795_478_400_000 + (hh * 60 + mm) * 60_000)
}

pub fn order(dose: &str, valid_from: Timestamp) -> RegisterValue {
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
        valid_from,
    })
}

pub fn given(order: &str, revision: &RecordId, slot: &str, when: Timestamp) -> EventBody {
    EventBody::Administration {
        order: rid(order),
        order_revision: revision.clone(),
        slot: slot.into(),
        outcome: AdministrationOutcome::Given,
        reason: None,
        occurred_at: when,
    }
}

/// Which store a replica keeps its documents in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Sqlite,
}

/// One device or server replica: a repo over a store that can be closed and reopened.
pub struct Replica {
    pub repo: Repo<Box<dyn Store>>,
    memory: MemoryStore,
    path: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica").field("path", &self.path).finish()
    }
}

impl Replica {
    pub fn new(backend: Backend) -> Self {
        let memory = MemoryStore::new();
        let (dir, path) = match backend {
            Backend::Memory => (None, None),
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("nara.db");
                (Some(dir), Some(path))
            }
        };
        let store = Self::open_store(&memory, path.as_ref());
        Self {
            repo: Repo::new(store),
            memory,
            path,
            _dir: dir,
        }
    }

    fn open_store(memory: &MemoryStore, path: Option<&PathBuf>) -> Box<dyn Store> {
        match path {
            Some(p) => Box::new(SqliteStore::open(p).unwrap()),
            None => Box::new(memory.clone()),
        }
    }

    /// Drops everything in memory and opens the store again, as after a restart.
    pub fn reopen(&mut self) {
        self.repo = Repo::new(Self::open_store(&self.memory, self.path.as_ref()));
    }

    pub fn doc(&mut self, id: &DocumentId) -> &CareDocument {
        self.repo.get(id).unwrap()
    }
}

/// Sends `doc`'s changes that `to` lacks from `from`, as sync would. Returns the outcome.
pub fn send(from: &mut Replica, to: &mut Replica, doc: &DocumentId) -> ApplyOutcome {
    let missing = from.doc(doc).changes_since(&[]);
    let to_doc = to.doc(doc);
    let missing: Vec<_> = missing
        .into_iter()
        .filter(|c| to_doc.automerge().get_change_by_hash(&c.hash()).is_none())
        .collect();
    to.repo.apply_changes(doc, missing).unwrap()
}

/// Exchanges `doc` both ways between two replicas and checks nothing was refused.
pub fn exchange(a: &mut Replica, b: &mut Replica, doc: &DocumentId) {
    for outcome in [send(a, b, doc), send(b, a, doc)] {
        assert!(outcome.refused.is_empty(), "refused: {:?}", outcome.refused);
    }
    assert_eq!(
        sorted(a.doc(doc).heads()),
        sorted(b.doc(doc).heads()),
        "replicas of {doc} differ after exchange"
    );
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

pub mod browser;
pub mod care;
pub mod hostile;
pub mod net;
pub mod nodes;
pub mod pg;
pub mod procs;
pub mod raw;
pub mod sim;
pub mod team;
pub mod web_world;

/// The wall clock, for the real-network tests only (the model and protocol never read it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
