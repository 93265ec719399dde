//! One Automerge document of a person's record, with its typed, validated view.
//!
//! # Layout inside Automerge
//!
//! Every kind has the same four root entries, all created by the genesis change:
//!
//! ```text
//! meta       map   schema, kind, patient, month        (written once, by genesis)
//! revisions  map   revision id -> JSON of a Revision   (add-only)
//! events     map   event id    -> JSON of an Event     (add-only)
//! texts      map   text key    -> Automerge Text       (created with its entity; then edited)
//! ```
//!
//! # One shared base, by construction
//!
//! Two Automerge replicas that each create the same root object conflict, and one side's edits
//! under it are lost. Here the genesis change is a pure function of the [`DocumentId`]: a fixed
//! actor derived from the id, time 0, the same operations. Every replica that creates "the
//! November journal of p-17" offline produces byte-identical genesis, with the same hash, so all
//! replicas share one base without having to fetch it. Nothing after genesis may write to the
//! root or `meta`, and a text object may only be created together with its entity; both are
//! checked for local and foreign changes alike. The constructor [`CareDocument::new`] is the
//! only way to start a document, so the mistake cannot be made through this API.

mod batch;
#[cfg(test)]
mod batch_tests;
mod causal;
#[cfg(test)]
mod causal_tests;
#[cfg(test)]
mod clock_tests;
mod edit;
mod genesis;
mod index;
mod ingest;
#[cfg(test)]
mod marks_tests;
mod sync;
#[cfg(test)]
mod test_support;
mod validate;

pub use edit::Edit;
use genesis::genesis_change;
pub use genesis::genesis_hash;
use index::Index;

use automerge::{Automerge, Change, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, Value};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::ids::{Author, DocKind, DocumentId, RecordId, Timestamp, genesis_actor};
use crate::model::records::{Register, Revision};

/// Version of the in-document layout written by genesis.
pub const SCHEMA_VERSION: i64 = 1;

const REVISIONS: &str = "revisions";
const EVENTS: &str = "events";
const TEXTS: &str = "texts";
const META: &str = "meta";

/// The metadata every change other than genesis carries as its Automerge message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeMessage {
    pub author: Author,
    /// What the change wrote: `revisions/<id>`, `events/<id>`, `texts/<key>`.
    pub writes: Vec<String>,
}

/// One entry of [`CareDocument::history`]: who changed what, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub change: ChangeHash,
    /// `None` for the genesis change, which nobody authored.
    pub author: Option<Author>,
    /// The author's time, as their device told it.
    pub at: Timestamp,
    pub writes: Vec<String>,
}

/// A revision together with what the document derives about it.
#[derive(Debug, Clone, PartialEq)]
pub struct RevisionView {
    pub id: RecordId,
    pub revision: Revision,
    /// 1 for the first revision of a register, then 1 + the highest version it supersedes.
    pub version: u32,
}

/// The current state of a register.
#[allow(clippy::large_enum_variant)] // a read result, not stored
#[derive(Debug, Clone, PartialEq)]
pub enum RegisterState {
    Unset,
    Value(RevisionView),
    /// Several revisions supersede the same earlier one (or none): nobody's value wins.
    Conflict(Vec<RevisionView>),
}

/// A register with concurrent values, to be resolved by a nurse.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub document: DocumentId,
    pub register: Register,
    pub candidates: Vec<RevisionView>,
}

/// What [`CareDocument::apply_changes`] did with a batch of foreign changes.
#[derive(Debug, Default)]
pub struct ApplyOutcome {
    /// Changes now in the document, in the order they were applied.
    pub applied: Vec<Change>,
    /// Changes the document already held.
    pub duplicates: usize,
    /// Changes refused, with the reason; none of their operations are in the document.
    pub refused: Vec<(ChangeHash, ModelError)>,
}

/// What a local change produced.
#[derive(Debug)]
pub struct LocalChange<T> {
    pub value: T,
    /// The new Automerge change, `None` if the edit wrote nothing.
    pub change: Option<Change>,
}

/// A validated Automerge document of one kind for one person.
#[derive(Debug, Clone)]
pub struct CareDocument {
    id: DocumentId,
    doc: Automerge,
    objs: Objs,
    index: Index,
    /// Automerge panicked while applying a foreign change: its state can no longer be trusted.
    /// See [`CareDocument::is_poisoned`].
    poisoned: bool,
    /// How many changes of each actor the document holds (its last sequence number), computed
    /// when first needed and kept up to date by foreign changes; `None` after anything else
    /// changed the document.
    actor_seqs: Option<std::collections::BTreeMap<automerge::ActorId, u64>>,
}

/// Runs Automerge on foreign bytes. Automerge 0.12 asserts (panics) on some malformed changes
/// and documents instead of returning an error: a sequence number out of order, an operation
/// naming an actor the document does not know, operation ids that collide (found by fuzzing,
/// `fuzz/regressions/`). Such a panic is caught here (`panic_guard`) and becomes `None`.
fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    super::panic_guard::catch(f).ok()
}

/// Whether a change carries a mark operation (or cannot be decoded to tell). Nära Sync writes
/// none (text fields take plain splices; a mark that applies is refused by its patch), but
/// Automerge 0.12 takes a mark operation that has no effect (an end before its begin) without
/// a patch and without complaint, and then saves a document that does not load: once the
/// change rows were compacted into that snapshot, the document was lost
/// (`fuzz/regressions/store_load/crash-mark-end-before-begin`).
fn carries_marks(change: &Change) -> bool {
    if let Some(marks) = crate::model::admit::marks_in_change(change.raw_bytes()) {
        return marks;
    }
    guarded(|| {
        change.decode().operations.iter().any(|op| {
            matches!(
                op.action,
                automerge::legacy::OpType::MarkBegin(_) | automerge::legacy::OpType::MarkEnd(_)
            )
        })
    })
    .unwrap_or(true)
}

/// [`CareDocument::clock_violation`] of a change whose dependencies' last operation counter is
/// `seen`.
fn clock_violation_after(change: &ClockMeta, seen: u64) -> Option<String> {
    let start_op = change.start_op;
    if start_op <= seen {
        return Some(format!(
            "its first operation counter {start_op} does not count past its dependencies' {seen}"
        ));
    }
    (change.ops == 0 && start_op != seen + 1).then(|| {
        format!(
            "it has no operations, and its first operation counter {start_op} does not \
             follow its dependencies' {seen}"
        )
    })
}

/// What [`CareDocument::clock_violation`] reads of a change.
struct ClockMeta {
    hash: ChangeHash,
    start_op: u64,
    /// How many operations it holds.
    ops: usize,
    deps: Vec<ChangeHash>,
}

impl ClockMeta {
    fn of(change: &Change) -> Self {
        Self {
            hash: change.hash(),
            start_op: change.start_op().get(),
            ops: change.len(),
            deps: change.deps().to_vec(),
        }
    }
}

#[derive(Debug, Clone)]
struct Objs {
    revisions: ObjId,
    events: ObjId,
    texts: ObjId,
    /// The actor of the document's genesis (`ids::genesis_actor`, a hash of the document's id:
    /// made once here rather than for every foreign change that ingestion checks).
    genesis_actor: automerge::ActorId,
}

impl CareDocument {
    /// The document `id` as it starts on every replica: genesis and nothing else.
    pub fn new(id: DocumentId) -> Result<Self, ModelError> {
        let genesis = genesis_change(&id)?;
        Self::from_genesis(id, genesis)
    }

    /// The document `id` holding only `genesis`, its genesis change.
    fn from_genesis(id: DocumentId, genesis: Change) -> Result<Self, ModelError> {
        let mut doc = Automerge::new().with_actor(genesis_actor(&id));
        doc.apply_changes([genesis])
            .map_err(|source| ModelError::Automerge {
                doc: id.clone(),
                source: Box::new(source),
            })?;
        let objs = Objs::find(&id, &doc)?;
        Ok(Self {
            id,
            doc,
            objs,
            index: Index::default(),
            poisoned: false,
            actor_seqs: None,
        })
    }

    /// Loads a document from an optional snapshot (as made by [`CareDocument::save`]) and raw
    /// changes with the hashes they were stored under, then validates the whole state. Bytes of
    /// another document, damaged bytes (a change whose bytes no longer match its hash, or that
    /// cannot be applied) or a state that breaks the schema give a typed error naming `id`.
    pub fn load(
        id: DocumentId,
        snapshot: Option<&[u8]>,
        changes: &[(ChangeHash, Vec<u8>)],
    ) -> Result<Self, ModelError> {
        let doc = id.clone();
        guarded(|| Self::load_unguarded(id, snapshot, changes)).unwrap_or_else(|| {
            Err(ModelError::Corrupt {
                doc,
                detail: "Automerge failed on the stored bytes".into(),
            })
        })
    }

    fn load_unguarded(
        id: DocumentId,
        snapshot: Option<&[u8]>,
        changes: &[(ChangeHash, Vec<u8>)],
    ) -> Result<Self, ModelError> {
        let corrupt = |detail: String| ModelError::Corrupt {
            doc: id.clone(),
            detail,
        };
        let genesis = genesis_change(&id)?;
        let genesis_hash = genesis.hash();
        let mut this = match snapshot {
            Some(bytes) => {
                let doc = Automerge::load(bytes).map_err(|e| corrupt(format!("snapshot: {e}")))?;
                let objs = Objs::find(&id, &doc)?;
                Self {
                    id: id.clone(),
                    doc,
                    objs,
                    index: Index::default(),
                    poisoned: false,
                    actor_seqs: None,
                }
            }
            None => Self::from_genesis(id.clone(), genesis)?,
        };
        let mut parsed = Vec::with_capacity(changes.len());
        let mut parsed_meta = Vec::with_capacity(changes.len());
        for (hash, bytes) in changes {
            let change = Change::from_bytes(bytes.clone())
                .map_err(|e| corrupt(format!("change {hash}: {e}")))?;
            if change.hash() != *hash {
                return Err(corrupt(format!(
                    "change {hash}: bytes do not match the hash"
                )));
            }
            if carries_marks(&change) {
                return Err(corrupt(format!("change {hash}: a mark operation")));
            }
            parsed_meta.push(ClockMeta::of(&change));
            parsed.push(change);
        }
        this.doc
            .apply_changes(parsed)
            .map_err(|e| corrupt(e.to_string()))?;
        // A change whose dependencies are missing would sit in Automerge's queue, silently
        // invisible. Everything stored must be applied.
        if let Some((hash, _)) = changes
            .iter()
            .find(|(h, _)| this.doc.get_change_by_hash(h).is_none())
        {
            return Err(corrupt(format!(
                "change {hash}: depends on changes that are not stored"
            )));
        }
        // Damaged rows Automerge takes but cannot save (see `clock_violation`).
        for change in &parsed_meta {
            if let Some(reason) = this.clock_violation(change) {
                return Err(corrupt(format!("change {}: {reason}", change.hash)));
            }
        }
        if this.doc.get_change_meta_by_hash(&genesis_hash).is_none() {
            return Err(ModelError::WrongDocument { doc: id });
        }
        this.check_meta()?;
        this.reindex()?;
        Ok(this)
    }

    /// Why a change (its clock metadata; its dependencies are held by the document) breaks a
    /// rule of Automerge's clock that Automerge 0.12 does not check on apply, if it does. Both
    /// rules come from fuzzing a stored row; a hostile device could upload the same change:
    ///
    /// - its first operation must count past every operation of the changes it depends on.
    ///   Automerge applies a change that does not, then saves a document it cannot load
    ///   ("mismatching heads", `fuzz/regressions/store_load/crash-2b16fa27…`);
    /// - a change with no operations must start right after them. The document format stores a
    ///   change's last operation counter only and derives its first from its dependencies'; a
    ///   change with operations gives its own first counter back through them, an empty one
    ///   cannot, and Automerge saves a document it cannot load ("invalid changes: missing
    ///   ops", `fuzz/regressions/store_load/crash-6b74d89a…`). This crate never writes an
    ///   empty change (an edit that writes nothing makes none), and Automerge's own empty
    ///   changes start right after the heads they build on.
    fn clock_violation(&self, change: &ClockMeta) -> Option<String> {
        let seen = change
            .deps
            .iter()
            .filter_map(|d| guarded(|| self.doc.get_change_meta_by_hash(d)).flatten())
            .map(|m| m.max_op)
            .max()
            .unwrap_or(0);
        clock_violation_after(change, seen)
    }

    pub fn id(&self) -> &DocumentId {
        &self.id
    }

    pub fn kind(&self) -> DocKind {
        self.id.kind()
    }

    /// The Automerge document, read-only. Writes go through [`CareDocument::change`] and
    /// [`CareDocument::apply_changes`], which validate.
    pub fn automerge(&self) -> &Automerge {
        &self.doc
    }

    pub fn heads(&self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    /// The whole document, compressed.
    pub fn save(&self) -> Vec<u8> {
        self.doc.save()
    }

    /// Whether the document holds the change, by its change graph alone (cheap; reading the
    /// change itself with [`CareDocument::automerge_change`] costs the document's size).
    pub fn has_change(&self, hash: &ChangeHash) -> bool {
        self.doc.get_change_meta_by_hash(hash).is_some()
    }

    /// The changes the change with this hash depends on, if the document holds it: from its
    /// change graph, as cheap as [`CareDocument::has_change`].
    pub fn change_deps(&self, hash: &ChangeHash) -> Option<Vec<ChangeHash>> {
        self.doc.get_change_meta_by_hash(hash).map(|m| m.deps)
    }

    /// The change with this hash, if the document holds it (rebuilt from the op set: its cost
    /// grows with the document).
    pub fn automerge_change(&self, hash: &ChangeHash) -> Option<Change> {
        self.doc.get_change_by_hash(hash)
    }

    /// Changes that a replica at `heads` lacks.
    pub fn changes_since(&self, heads: &[ChangeHash]) -> Vec<Change> {
        self.doc.get_changes(heads)
    }
}

impl Objs {
    fn find(id: &DocumentId, doc: &Automerge) -> Result<Self, ModelError> {
        let get = |name: &str, ty: ObjType| match doc.get(ROOT, name) {
            Ok(Some((Value::Object(t), o))) if t == ty => Ok(o),
            _ => Err(ModelError::Invalid {
                doc: id.clone(),
                path: name.into(),
                reason: "missing or of the wrong type".into(),
            }),
        };
        Ok(Self {
            revisions: get(REVISIONS, ObjType::Map)?,
            events: get(EVENTS, ObjType::Map)?,
            texts: get(TEXTS, ObjType::Map)?,
            genesis_actor: genesis_actor(id),
        })
    }
}
