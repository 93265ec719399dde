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

use std::collections::{BTreeMap, BTreeSet};

use automerge::transaction::{CommitOptions, Transactable, Transaction};
use automerge::{
    Automerge, Change, ChangeHash, ObjId, ObjType, Patch, PatchAction, PatchLog, ROOT, ReadDoc,
    Value,
};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::ids::{Author, DocKind, DocumentId, RecordId, Timestamp, genesis_actor};
use crate::model::records::Event;
use crate::model::records::{
    AdministrationOutcome, EventBody, MAX_LIST, MAX_LONG_TEXT, MAX_RECORD_BYTES, MAX_SHORT_TEXT,
    Register, RegisterValue, Revision, TextKey, WriteKind, is_date, is_slot, is_time_of_day,
    may_write,
};

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
#[derive(Debug)]
pub struct CareDocument {
    id: DocumentId,
    doc: Automerge,
    objs: Objs,
    index: Index,
    /// Automerge panicked while applying a foreign change: its state can no longer be trusted.
    /// See [`CareDocument::is_poisoned`].
    poisoned: bool,
}

/// Runs Automerge on foreign bytes. Automerge 0.12 asserts (panics) on some malformed changes
/// and documents instead of returning an error: a sequence number out of order, an operation
/// naming an actor the document does not know, operation ids that collide (found by fuzzing,
/// `fuzz/regressions/`). Such a panic is caught here and becomes `None`.
fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok()
}

#[derive(Debug, Clone)]
struct Objs {
    revisions: ObjId,
    events: ObjId,
    texts: ObjId,
}

/// The decoded, validated records of a document, kept in step with the Automerge state.
#[derive(Debug, Default, Clone)]
struct Index {
    revisions: BTreeMap<RecordId, Revision>,
    events: BTreeMap<RecordId, Event>,
    texts: BTreeMap<TextKey, ObjId>,
    by_register: BTreeMap<Register, BTreeSet<RecordId>>,
    /// revision -> the revisions that supersede it directly
    superseded_by: BTreeMap<RecordId, BTreeSet<RecordId>>,
    /// event -> the entered-in-error events that mark it
    marked: BTreeMap<RecordId, BTreeSet<RecordId>>,
}

impl Index {
    /// The revisions of `register` that no other revision supersedes.
    fn heads(&self, register: &Register) -> Vec<RecordId> {
        self.by_register
            .get(register)
            .into_iter()
            .flatten()
            .filter(|id| self.superseded_by.get(*id).is_none_or(|s| s.is_empty()))
            .cloned()
            .collect()
    }

    fn add_revision(&mut self, id: RecordId, rev: Revision) {
        for s in &rev.supersedes {
            self.superseded_by
                .entry(s.clone())
                .or_default()
                .insert(id.clone());
        }
        self.by_register
            .entry(rev.register.clone())
            .or_default()
            .insert(id.clone());
        self.revisions.insert(id, rev);
    }

    fn add_event(&mut self, id: RecordId, ev: Event) {
        if let EventBody::EnteredInError { target, .. } = &ev.body {
            self.marked
                .entry(target.clone())
                .or_default()
                .insert(id.clone());
        }
        self.events.insert(id, ev);
    }
}

/// The genesis document of `id`: the same bytes on every replica.
fn genesis(id: &DocumentId) -> Result<(Automerge, Objs), automerge::AutomergeError> {
    let mut doc = Automerge::new().with_actor(genesis_actor(id));
    let mut tx = doc.transaction();
    let meta = tx.put_object(ROOT, META, ObjType::Map)?;
    tx.put(&meta, "schema", SCHEMA_VERSION)?;
    tx.put(&meta, "kind", id.kind().as_str())?;
    tx.put(&meta, "patient", id.patient().as_str())?;
    if let Some(m) = id.month() {
        tx.put(&meta, "month", m.to_string())?;
    }
    let revisions = tx.put_object(ROOT, REVISIONS, ObjType::Map)?;
    let events = tx.put_object(ROOT, EVENTS, ObjType::Map)?;
    let texts = tx.put_object(ROOT, TEXTS, ObjType::Map)?;
    tx.commit_with(
        CommitOptions::default()
            .with_time(0)
            .with_message("genesis"),
    );
    Ok((
        doc,
        Objs {
            revisions,
            events,
            texts,
        },
    ))
}

/// The hash of the genesis change of `id`.
pub fn genesis_hash(id: &DocumentId) -> Result<ChangeHash, ModelError> {
    let (doc, _) = genesis(id).map_err(|source| ModelError::Automerge {
        doc: id.clone(),
        source: Box::new(source),
    })?;
    doc.get_heads()
        .into_iter()
        .next()
        .ok_or_else(|| ModelError::Invalid {
            doc: id.clone(),
            path: String::new(),
            reason: "genesis produced no change".into(),
        })
}

impl CareDocument {
    /// The document `id` as it starts on every replica: genesis and nothing else.
    pub fn new(id: DocumentId) -> Result<Self, ModelError> {
        let (doc, objs) = genesis(&id).map_err(|source| ModelError::Automerge {
            doc: id.clone(),
            source: Box::new(source),
        })?;
        Ok(Self {
            id,
            doc,
            objs,
            index: Index::default(),
            poisoned: false,
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
                }
            }
            None => Self::new(id.clone())?,
        };
        let mut parsed = Vec::with_capacity(changes.len());
        for (hash, bytes) in changes {
            let change = Change::from_bytes(bytes.clone())
                .map_err(|e| corrupt(format!("change {hash}: {e}")))?;
            if change.hash() != *hash {
                return Err(corrupt(format!(
                    "change {hash}: bytes do not match the hash"
                )));
            }
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
        let genesis = genesis_hash(&id)?;
        if this.doc.get_change_by_hash(&genesis).is_none() {
            return Err(ModelError::WrongDocument { doc: id });
        }
        this.check_meta()?;
        this.reindex()?;
        Ok(this)
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

    /// The change with this hash, if the document holds it.
    pub fn automerge_change(&self, hash: &ChangeHash) -> Option<Change> {
        self.doc.get_change_by_hash(hash)
    }

    /// Changes that a replica at `heads` lacks.
    pub fn changes_since(&self, heads: &[ChangeHash]) -> Vec<Change> {
        self.doc.get_changes(heads)
    }

    /// Makes a local change as `author` at time `at`. The closure writes through [`Edit`]; each
    /// write is checked against the schema and the role rules before it is made, and the whole
    /// change is checked again after commit, by the same code that checks foreign changes.
    /// If the closure fails, nothing is written.
    pub fn change<T>(
        &mut self,
        author: &Author,
        at: Timestamp,
        f: impl FnOnce(&mut Edit<'_>) -> Result<T, ModelError>,
    ) -> Result<LocalChange<T>, ModelError> {
        if self.poisoned {
            return Err(self.poisoned_error());
        }
        let before = self.doc.get_heads();
        self.doc.set_actor(author.actor_id());
        let id = self.id.clone();
        let tx = self
            .doc
            .transaction_log_patches(PatchLog::active())
            .map_err(|e| ModelError::Invalid {
                doc: id.clone(),
                path: String::new(),
                reason: e.to_string(),
            })?;
        let mut edit = Edit {
            id: &self.id,
            objs: &self.objs,
            index: &self.index,
            author,
            at,
            tx,
            staged: Staged::default(),
        };
        let result = f(&mut edit);
        let (tx, staged) = edit.into_parts();
        let value = match result {
            Ok(v) => v,
            Err(e) => {
                tx.rollback();
                return Err(e);
            }
        };
        if staged.writes.is_empty() {
            tx.rollback();
            return Ok(LocalChange {
                value,
                change: None,
            });
        }
        let message = ChangeMessage {
            author: author.clone(),
            writes: staged.writes.clone(),
        };
        let message = serde_json::to_string(&message).map_err(|e| ModelError::Invalid {
            doc: id.clone(),
            path: "change message".into(),
            reason: e.to_string(),
        })?;
        let (hash, mut log) = tx.commit_with(
            CommitOptions::default()
                .with_message(message)
                .with_time(at.0),
        );
        let patches = self.doc.make_patches(&mut log);
        let Some(hash) = hash else {
            return Ok(LocalChange {
                value,
                change: None,
            });
        };
        // The backstop: the same structural check as for a foreign change.
        let checked = self
            .check_patches(&patches)
            .and_then(|touched| self.check_new_records(&touched, author, &staged.writes));
        match checked {
            Ok(new) => {
                self.commit_index(new);
                let change = self.doc.get_change_by_hash(&hash);
                Ok(LocalChange { value, change })
            }
            Err(e) => {
                self.rollback_to(&before)?;
                Err(e)
            }
        }
    }

    /// Applies foreign changes, each checked on its own: its author (from the change message)
    /// must match its actor, every operation must fit the layout (add a record, create a text
    /// with its entity, edit a text), every new record must validate and be permitted for the
    /// author's role. A refused change leaves no trace in the document, and neither does any
    /// change that depends on it.
    ///
    /// If Automerge itself fails on a change (it panics on some malformed changes), that change
    /// and every change not yet applied are refused as [`ModelError::Corrupt`], and the document
    /// is poisoned ([`CareDocument::is_poisoned`]): the changes in `applied` were validated and
    /// may be stored, but this copy must be dropped and loaded again.
    pub fn apply_changes(&mut self, changes: Vec<Change>) -> Result<ApplyOutcome, ModelError> {
        let mut outcome = ApplyOutcome::default();
        if self.poisoned {
            for c in changes {
                outcome.refused.push((c.hash(), self.poisoned_error()));
            }
            return Ok(outcome);
        }
        let mut pending: BTreeMap<ChangeHash, Change> = BTreeMap::new();
        for c in changes {
            if self.doc.get_change_by_hash(&c.hash()).is_some() {
                outcome.duplicates += 1;
            } else {
                pending.insert(c.hash(), c);
            }
        }
        let mut refused: BTreeSet<ChangeHash> = BTreeSet::new();
        loop {
            let ready: Vec<ChangeHash> = pending
                .values()
                .filter(|c| {
                    c.deps()
                        .iter()
                        .all(|d| self.doc.get_change_by_hash(d).is_some())
                })
                .map(Change::hash)
                .collect();
            let doomed: Vec<ChangeHash> = pending
                .values()
                .filter(|c| c.deps().iter().any(|d| refused.contains(d)))
                .map(Change::hash)
                .collect();
            if ready.is_empty() && doomed.is_empty() {
                break;
            }
            for h in doomed {
                pending.remove(&h);
                refused.insert(h);
                outcome.refused.push((
                    h,
                    ModelError::Invalid {
                        doc: self.id.clone(),
                        path: format!("change {h}"),
                        reason: "depends on a refused change".into(),
                    },
                ));
            }
            for h in ready {
                let Some(change) = pending.remove(&h) else {
                    continue;
                };
                if self.poisoned {
                    refused.insert(h);
                    outcome.refused.push((h, self.poisoned_error()));
                    continue;
                }
                match self.apply_one(change.clone()) {
                    Ok(()) => outcome.applied.push(change),
                    Err(e) => {
                        refused.insert(h);
                        outcome.refused.push((h, e));
                    }
                }
            }
        }
        for (h, _) in pending {
            outcome.refused.push((
                h,
                ModelError::MissingDependencies {
                    doc: self.id.clone(),
                    change: h.to_string(),
                },
            ));
        }
        Ok(outcome)
    }

    /// Whether Automerge failed on a foreign change applied to this copy (see
    /// [`CareDocument::apply_changes`]). A poisoned copy refuses every change; drop it and load
    /// the document again.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    fn poisoned_error(&self) -> ModelError {
        ModelError::Corrupt {
            doc: self.id.clone(),
            detail: "not applied: Automerge failed on an earlier change of this batch".into(),
        }
    }

    fn apply_one(&mut self, change: Change) -> Result<(), ModelError> {
        let hash = change.hash();
        let invalid = |reason: String| ModelError::Invalid {
            doc: self.id.clone(),
            path: format!("change {hash}"),
            reason,
        };
        // This crate never writes extra bytes (Automerge's author footer lives there, and a
        // footer on a change other than an actor's first makes Automerge panic).
        if !change.extra_bytes().is_empty() {
            return Err(invalid("the change carries unexpected extra bytes".into()));
        }
        let message: ChangeMessage = change
            .message()
            .ok_or_else(|| invalid("the change names no author".into()))
            .and_then(|m| {
                serde_json::from_str(m)
                    .map_err(|e| invalid(format!("unreadable change message: {e}")))
            })?;
        if *change.actor_id() != message.author.actor_id() {
            return Err(invalid(format!(
                "the change's actor is not the actor of device {}",
                message.author.device
            )));
        }
        let before = self.doc.get_heads();
        let mut log = PatchLog::active();
        let applied = guarded(|| self.doc.apply_changes_log_patches([change], &mut log));
        let Some(applied) = applied else {
            self.poisoned = true;
            return Err(ModelError::Corrupt {
                doc: self.id.clone(),
                detail: format!("change {hash}: Automerge could not apply it"),
            });
        };
        applied.map_err(|e| ModelError::Corrupt {
            doc: self.id.clone(),
            detail: e.to_string(),
        })?;
        // Automerge took some malformed changes into its graph and then panicked when reading
        // them back (to send them on): read it back now, while it can still be refused.
        if guarded(|| self.doc.get_change_by_hash(&hash))
            .flatten()
            .is_none()
        {
            self.poisoned = true;
            return Err(ModelError::Corrupt {
                doc: self.id.clone(),
                detail: format!("change {hash}: Automerge cannot read it back"),
            });
        }
        let patches = self.doc.make_patches(&mut log);
        let checked = self
            .check_patches(&patches)
            .and_then(|touched| self.check_new_records(&touched, &message.author, &message.writes));
        match checked {
            Ok(new) => {
                self.commit_index(new);
                Ok(())
            }
            Err(e) => {
                self.rollback_to(&before)?;
                Err(e)
            }
        }
    }

    fn rollback_to(&mut self, heads: &[ChangeHash]) -> Result<(), ModelError> {
        self.doc = self
            .doc
            .fork_at(heads)
            .map_err(|source| ModelError::Automerge {
                doc: self.id.clone(),
                source: Box::new(source),
            })?;
        Ok(())
    }

    /// Classifies what a change did from its patches. Only three shapes are allowed: a new key
    /// holding a string in `revisions` or `events`; a new key holding a text in `texts`; splices
    /// in an existing (or just created) text. Anything else is a violation: writing the root or
    /// `meta`, replacing or deleting a record, concurrent writes to one key, objects inside
    /// records, marks.
    fn check_patches(&self, patches: &[Patch]) -> Result<Touched, ModelError> {
        let mut touched = Touched::default();
        let mut new_text_objs: BTreeMap<ObjId, TextKey> = BTreeMap::new();
        let text_by_obj: BTreeMap<&ObjId, &TextKey> =
            self.index.texts.iter().map(|(k, o)| (o, k)).collect();
        for p in patches {
            let path = self.patch_path(p);
            let bad = |reason: &str| ModelError::Invalid {
                doc: self.id.clone(),
                path: path.clone(),
                reason: reason.into(),
            };
            let container = if p.obj == self.objs.revisions {
                Some(REVISIONS)
            } else if p.obj == self.objs.events {
                Some(EVENTS)
            } else {
                None
            };
            if let Some(container) = container {
                let PatchAction::PutMap {
                    key,
                    value: (value, _),
                    conflict,
                } = &p.action
                else {
                    return Err(bad("records are never deleted or changed"));
                };
                if *conflict {
                    return Err(bad("two writes to one record id"));
                }
                let id =
                    RecordId::new(key.as_str()).map_err(|e| bad(&format!("bad record id: {e}")))?;
                let exists = if container == REVISIONS {
                    self.index.revisions.contains_key(&id)
                } else {
                    self.index.events.contains_key(&id)
                };
                if exists {
                    return Err(bad(
                        "records are immutable; write a new revision or event instead",
                    ));
                }
                let Value::Scalar(s) = value else {
                    return Err(bad("a record must be one JSON string"));
                };
                let Some(json) = s.as_str() else {
                    return Err(bad("a record must be one JSON string"));
                };
                if json.len() > MAX_RECORD_BYTES {
                    return Err(bad("record too large"));
                }
                let target = if container == REVISIONS {
                    &mut touched.revisions
                } else {
                    &mut touched.events
                };
                if target.insert(id, json.to_owned()).is_some() {
                    return Err(bad("two writes to one record id"));
                }
            } else if p.obj == self.objs.texts {
                let PatchAction::PutMap {
                    key,
                    value: (value, obj),
                    conflict,
                } = &p.action
                else {
                    return Err(bad("text fields are never deleted"));
                };
                let tkey: TextKey = key.parse().map_err(|e: String| bad(&e))?;
                if *conflict || self.index.texts.contains_key(&tkey) {
                    return Err(bad("a text field is created once, with its entity"));
                }
                if !matches!(value, Value::Object(ObjType::Text)) {
                    return Err(bad("a text field must be text"));
                }
                new_text_objs.insert(obj.clone(), tkey.clone());
                touched.new_texts.insert(tkey);
            } else if let Some(key) = text_by_obj
                .get(&p.obj)
                .copied()
                .or_else(|| new_text_objs.get(&p.obj))
            {
                match &p.action {
                    PatchAction::SpliceText { .. } | PatchAction::DeleteSeq { .. } => {
                        touched.edited_texts.insert(key.clone());
                    }
                    _ => return Err(bad("only plain text edits are allowed in a text field")),
                }
            } else {
                return Err(bad("nothing but records and text fields may be written"));
            }
        }
        Ok(touched)
    }

    fn patch_path(&self, p: &Patch) -> String {
        let mut parts: Vec<String> = p.path.iter().map(|(_, prop)| prop.to_string()).collect();
        match &p.action {
            PatchAction::PutMap { key, .. } | PatchAction::DeleteMap { key } => {
                parts.push(key.clone())
            }
            PatchAction::Conflict { prop } => parts.push(prop.to_string()),
            _ => {}
        }
        if parts.is_empty() {
            "/".into()
        } else {
            parts.join("/")
        }
    }

    /// Decodes and validates the records a change added, against the index and each other.
    fn check_new_records(
        &self,
        touched: &Touched,
        author: &Author,
        claimed: &[String],
    ) -> Result<NewRecords, ModelError> {
        let mut new = NewRecords::default();
        for (id, json) in &touched.revisions {
            let path = format!("{REVISIONS}/{id}");
            let rev: Revision = serde_json::from_str(json).map_err(|e| ModelError::Invalid {
                doc: self.id.clone(),
                path: path.clone(),
                reason: e.to_string(),
            })?;
            check_revision(&self.id, &self.index, id, &rev, author)?;
            new.revisions.push((id.clone(), rev));
        }
        let lookup = |id: &RecordId| -> Option<Event> {
            self.index.events.get(id).cloned().or_else(|| {
                touched
                    .events
                    .get(id)
                    .and_then(|j| serde_json::from_str(j).ok())
            })
        };
        for (id, json) in &touched.events {
            let path = format!("{EVENTS}/{id}");
            let ev: Event = serde_json::from_str(json).map_err(|e| ModelError::Invalid {
                doc: self.id.clone(),
                path: path.clone(),
                reason: e.to_string(),
            })?;
            check_event(&self.id, id, &ev, author, &lookup)?;
            new.events.push((id.clone(), ev));
        }
        for key in touched.new_texts.iter().chain(touched.edited_texts.iter()) {
            check_text_write(&self.id, key, author)?;
        }
        for key in &touched.new_texts {
            let creates_entity = match key {
                TextKey::GoalDescription(g) => Some(Register::Goal(g.clone())),
                TextKey::InterventionDescription(i) => Some(Register::Intervention(i.clone())),
                TextKey::OrderInstructions(o) => Some(Register::Order(o.clone())),
                TextKey::NoteDraft(_) => None,
            };
            if let Some(reg) = creates_entity {
                let with_entity = new
                    .revisions
                    .iter()
                    .any(|(_, r)| r.register == reg && r.supersedes.is_empty());
                if !with_entity {
                    return Err(ModelError::Invalid {
                        doc: self.id.clone(),
                        path: format!("{TEXTS}/{key}"),
                        reason: format!("a text field is created only together with {reg}"),
                    });
                }
            }
            let obj = self
                .doc
                .get(&self.objs.texts, key.to_string())
                .ok()
                .flatten()
                .map(|(_, o)| o)
                .ok_or_else(|| ModelError::NotFound {
                    doc: self.id.clone(),
                    what: "text",
                    id: key.to_string(),
                })?;
            new.texts.push((key.clone(), obj));
        }
        // The message must say truthfully what the change wrote, so history can be trusted.
        let claimed: BTreeSet<&str> = claimed.iter().map(String::as_str).collect();
        let actual_records: BTreeSet<String> = touched
            .revisions
            .keys()
            .map(|id| format!("{REVISIONS}/{id}"))
            .chain(touched.events.keys().map(|id| format!("{EVENTS}/{id}")))
            .collect();
        let claimed_records: BTreeSet<&str> = claimed
            .iter()
            .copied()
            .filter(|c| !c.starts_with("texts/"))
            .collect();
        let texts_ok = touched
            .new_texts
            .iter()
            .chain(touched.edited_texts.iter())
            .all(|k| claimed.contains(format!("{TEXTS}/{k}").as_str()));
        if claimed_records != actual_records.iter().map(String::as_str).collect() || !texts_ok {
            return Err(ModelError::Invalid {
                doc: self.id.clone(),
                path: "change message".into(),
                reason: "the change message does not list what the change wrote".into(),
            });
        }
        Ok(new)
    }

    fn commit_index(&mut self, new: NewRecords) {
        for (id, rev) in new.revisions {
            self.index.add_revision(id, rev);
        }
        for (id, ev) in new.events {
            self.index.add_event(id, ev);
        }
        for (key, obj) in new.texts {
            self.index.texts.insert(key, obj);
        }
    }

    fn check_meta(&self) -> Result<(), ModelError> {
        let bad = |path: &str, reason: String| ModelError::Invalid {
            doc: self.id.clone(),
            path: path.into(),
            reason,
        };
        for (key, _) in self
            .doc
            .map_range(ROOT, ..)
            .map(|i| (i.key.into_owned(), ()))
        {
            if ![META, REVISIONS, EVENTS, TEXTS].contains(&key.as_str()) {
                return Err(bad(&key, "unknown root entry".into()));
            }
        }
        let meta = match self.doc.get(ROOT, META) {
            Ok(Some((Value::Object(ObjType::Map), o))) => o,
            _ => return Err(bad(META, "missing".into())),
        };
        let get_str = |k: &str| -> Option<String> {
            match self.doc.get(&meta, k) {
                Ok(Some((Value::Scalar(s), _))) => s.as_str().map(str::to_owned),
                _ => None,
            }
        };
        match self.doc.get(&meta, "schema") {
            Ok(Some((Value::Scalar(s), _))) if s.as_i64() == Some(SCHEMA_VERSION) => {}
            _ => {
                return Err(bad(
                    "meta/schema",
                    format!("expected schema {SCHEMA_VERSION}"),
                ));
            }
        }
        if get_str("kind").as_deref() != Some(self.id.kind().as_str())
            || get_str("patient").as_deref() != Some(self.id.patient().as_str())
            || get_str("month") != self.id.month().map(|m| m.to_string())
        {
            return Err(bad(META, "does not match the document id".into()));
        }
        Ok(())
    }

    /// Decodes and validates every record of the document (used after loading).
    fn reindex(&mut self) -> Result<(), ModelError> {
        let bad = |path: String, reason: String| ModelError::Invalid {
            doc: self.id.clone(),
            path,
            reason,
        };
        let read_records = |obj: &ObjId,
                            name: &str|
         -> Result<Vec<(RecordId, String)>, ModelError> {
            let mut out = Vec::new();
            for item in self.doc.map_range(obj, ..) {
                let path = format!("{name}/{}", item.key);
                if item.conflict {
                    return Err(bad(path, "two writes to one record id".into()));
                }
                let id = RecordId::new(item.key.as_ref())
                    .map_err(|e| bad(path.clone(), e.to_string()))?;
                let json = match &item.value {
                    automerge::ValueRef::Scalar(automerge::ScalarValueRef::Str(s)) => s.to_string(),
                    _ => return Err(bad(path, "a record must be one JSON string".into())),
                };
                out.push((id, json));
            }
            Ok(out)
        };
        let revisions = read_records(&self.objs.revisions, REVISIONS)?;
        let events = read_records(&self.objs.events, EVENTS)?;
        let mut index = Index::default();
        let mut decoded_revisions = Vec::new();
        for (id, json) in revisions {
            let rev: Revision = serde_json::from_str(&json)
                .map_err(|e| bad(format!("{REVISIONS}/{id}"), e.to_string()))?;
            decoded_revisions.push((id, rev));
        }
        // Insert all first, then check references (they may point either way in key order).
        for (id, rev) in &decoded_revisions {
            index.add_revision(id.clone(), rev.clone());
        }
        for (id, rev) in &decoded_revisions {
            check_revision_shape(&self.id, id, rev)?;
            check_supersedes(&self.id, &index, id, rev, true)?;
        }
        let mut decoded_events = BTreeMap::new();
        for (id, json) in events {
            let ev: Event = serde_json::from_str(&json)
                .map_err(|e| bad(format!("{EVENTS}/{id}"), e.to_string()))?;
            decoded_events.insert(id, ev);
        }
        let lookup = |id: &RecordId| decoded_events.get(id).cloned();
        for (id, ev) in &decoded_events {
            check_event(&self.id, id, ev, &ev.author, &lookup)?;
        }
        for (id, ev) in decoded_events {
            index.add_event(id, ev);
        }
        for item in self.doc.map_range(&self.objs.texts, ..) {
            let path = format!("{TEXTS}/{}", item.key);
            let key: TextKey = item.key.parse().map_err(|e: String| bad(path.clone(), e))?;
            if key.doc_kind() != self.id.kind() {
                return Err(bad(
                    path,
                    "this text field does not belong in this document".into(),
                ));
            }
            if item.value != automerge::ValueRef::Object(ObjType::Text) || item.conflict {
                return Err(bad(path, "a text field must be one text".into()));
            }
            index.texts.insert(key, item.id());
        }
        self.index = index;
        Ok(())
    }

    /// Automerge's sync message for a peer in `state` (the fallback path of the protocol).
    pub fn sync_generate(
        &self,
        state: &mut automerge::sync::State,
    ) -> Option<automerge::sync::Message> {
        use automerge::sync::SyncDoc;
        self.doc.generate_sync_message(state)
    }

    /// Takes the peer's sync message apart: the changes it carries are returned (to be applied
    /// through [`CareDocument::apply_changes`], which validates) and the rest updates `state`.
    /// Damaged chunks are an error naming the document.
    pub fn sync_receive(
        &mut self,
        state: &mut automerge::sync::State,
        mut message: automerge::sync::Message,
    ) -> Result<Vec<Change>, ModelError> {
        use automerge::sync::SyncDoc;
        let corrupt = |detail: String| ModelError::Corrupt {
            doc: self.id.clone(),
            detail,
        };
        let mut changes = Vec::new();
        for chunk in message.changes.iter() {
            match Change::from_bytes(chunk.to_vec()) {
                Ok(c) => changes.push(c),
                // A whole document (Automerge sends one when much is missing).
                Err(_) => {
                    let whole = guarded(|| Automerge::load(chunk).map(|d| d.get_changes(&[])))
                        .ok_or_else(|| corrupt("sync message: Automerge failed on it".into()))?
                        .map_err(|e| corrupt(format!("sync message: {e}")))?;
                    changes.extend(whole);
                }
            }
        }
        message.changes = automerge::sync::ChunkList::empty();
        guarded(|| self.doc.receive_sync_message(state, message))
            .ok_or_else(|| corrupt("sync message: Automerge failed on it".into()))?
            .map_err(|e| corrupt(format!("sync message: {e}")))?;
        Ok(changes)
    }

    // ---- reading ----

    /// Every revision, by id.
    pub fn revisions(&self) -> &BTreeMap<RecordId, Revision> {
        &self.index.revisions
    }

    pub fn revision(&self, id: &RecordId) -> Option<&Revision> {
        self.index.revisions.get(id)
    }

    /// The revisions that directly supersede `id`.
    pub fn superseded_by(&self, id: &RecordId) -> Vec<RecordId> {
        self.index
            .superseded_by
            .get(id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every revision that supersedes `id`, directly or through others.
    pub fn superseded_by_transitively(&self, id: &RecordId) -> Vec<RecordId> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![id.clone()];
        while let Some(next) = todo.pop() {
            for s in self.index.superseded_by.get(&next).into_iter().flatten() {
                if seen.insert(s.clone()) {
                    todo.push(s.clone());
                }
            }
        }
        seen.into_iter().collect()
    }

    /// 1 for a register's first revision; otherwise 1 + the highest version it supersedes.
    pub fn version(&self, id: &RecordId) -> u32 {
        // Iterative, memoised: revisions only supersede earlier ones, so this terminates.
        let mut memo: BTreeMap<&RecordId, u32> = BTreeMap::new();
        let mut stack = vec![id];
        while let Some(top) = stack.last().copied() {
            let Some(rev) = self.index.revisions.get(top) else {
                memo.insert(top, 0);
                stack.pop();
                continue;
            };
            let missing: Vec<&RecordId> = rev
                .supersedes
                .iter()
                .filter(|s| !memo.contains_key(s))
                .collect();
            if missing.is_empty() || stack.len() > self.index.revisions.len() + 1 {
                let v = 1 + rev
                    .supersedes
                    .iter()
                    .filter_map(|s| memo.get(s))
                    .max()
                    .copied()
                    .unwrap_or(0);
                memo.insert(top, v);
                stack.pop();
            } else {
                stack.extend(missing);
            }
        }
        memo.get(id).copied().unwrap_or(0)
    }

    fn view(&self, id: &RecordId) -> Option<RevisionView> {
        self.index.revisions.get(id).map(|r| RevisionView {
            id: id.clone(),
            revision: r.clone(),
            version: self.version(id),
        })
    }

    /// The revisions of `register` that no other revision supersedes.
    /// The current value of a register, or its conflict.
    pub fn register(&self, register: &Register) -> RegisterState {
        let mut views: Vec<RevisionView> = self
            .index
            .heads(register)
            .iter()
            .filter_map(|id| self.view(id))
            .collect();
        match views.len() {
            0 => RegisterState::Unset,
            1 => views
                .pop()
                .map_or(RegisterState::Unset, RegisterState::Value),
            _ => RegisterState::Conflict(views),
        }
    }

    /// Every register this document holds.
    pub fn registers(&self) -> Vec<Register> {
        self.index.by_register.keys().cloned().collect()
    }

    /// Registers with concurrent values, with both values, authors and times.
    pub fn conflicts(&self) -> Vec<Conflict> {
        self.index
            .by_register
            .keys()
            .filter_map(|reg| match self.register(reg) {
                RegisterState::Conflict(candidates) => Some(Conflict {
                    document: self.id.clone(),
                    register: reg.clone(),
                    candidates,
                }),
                _ => None,
            })
            .collect()
    }

    /// Every event, by id.
    pub fn events(&self) -> &BTreeMap<RecordId, Event> {
        &self.index.events
    }

    pub fn event(&self, id: &RecordId) -> Option<&Event> {
        self.index.events.get(id)
    }

    /// The entered-in-error events that mark `id`, if any.
    pub fn entered_in_error(&self, id: &RecordId) -> Vec<(&RecordId, &Event)> {
        self.index
            .marked
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|m| self.index.events.get_key_value(m))
            .collect()
    }

    /// The current content of a text field.
    pub fn text(&self, key: &TextKey) -> Option<String> {
        let obj = self.index.texts.get(key)?;
        self.doc.text(obj).ok()
    }

    /// Every change: who made it, when, and what it wrote.
    pub fn history(&self) -> Vec<HistoryEntry> {
        self.doc
            .get_changes(&[])
            .into_iter()
            .map(|c| {
                let msg: Option<ChangeMessage> =
                    c.message().and_then(|m| serde_json::from_str(m).ok());
                HistoryEntry {
                    change: c.hash(),
                    at: Timestamp(c.timestamp()),
                    author: msg.as_ref().map(|m| m.author.clone()),
                    writes: msg.map(|m| m.writes).unwrap_or_default(),
                }
            })
            .collect()
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
        })
    }
}

#[derive(Debug, Default)]
struct Touched {
    revisions: BTreeMap<RecordId, String>,
    events: BTreeMap<RecordId, String>,
    new_texts: BTreeSet<TextKey>,
    edited_texts: BTreeSet<TextKey>,
}

#[derive(Debug, Default)]
struct NewRecords {
    revisions: Vec<(RecordId, Revision)>,
    events: Vec<(RecordId, Event)>,
    texts: Vec<(TextKey, ObjId)>,
}

#[derive(Debug, Default)]
struct Staged {
    revisions: BTreeMap<RecordId, Revision>,
    events: BTreeMap<RecordId, Event>,
    texts: BTreeMap<TextKey, ObjId>,
    writes: Vec<String>,
}

/// Writes of one local change. Every method checks before it writes.
#[derive(Debug)]
pub struct Edit<'a> {
    id: &'a DocumentId,
    objs: &'a Objs,
    index: &'a Index,
    author: &'a Author,
    at: Timestamp,
    tx: Transaction<'a>,
    staged: Staged,
}

impl<'a> Edit<'a> {
    fn into_parts(self) -> (Transaction<'a>, Staged) {
        (self.tx, self.staged)
    }

    fn am(&self, source: automerge::AutomergeError) -> ModelError {
        ModelError::Automerge {
            doc: self.id.clone(),
            source: Box::new(source),
        }
    }

    fn exists(&self, id: &RecordId) -> bool {
        self.index.revisions.contains_key(id)
            || self.index.events.contains_key(id)
            || self.staged.revisions.contains_key(id)
            || self.staged.events.contains_key(id)
    }

    fn fresh(&self, id: &RecordId) -> Result<(), ModelError> {
        if self.exists(id) {
            return Err(ModelError::Invalid {
                doc: self.id.clone(),
                path: id.to_string(),
                reason: "a record with this id exists; ids must be unique".into(),
            });
        }
        Ok(())
    }

    /// Writes revision `id` of `register`, superseding exactly `supersedes`.
    pub fn revise(
        &mut self,
        id: RecordId,
        register: Register,
        supersedes: Vec<RecordId>,
        value: RegisterValue,
    ) -> Result<(), ModelError> {
        self.fresh(&id)?;
        if self
            .staged
            .revisions
            .values()
            .any(|r| r.register == register)
        {
            return Err(ModelError::Invalid {
                doc: self.id.clone(),
                path: format!("{REVISIONS}/{id}"),
                reason: format!("{register} is already revised in this change"),
            });
        }
        let rev = Revision {
            register,
            supersedes,
            value,
            author: self.author.clone(),
            at: self.at,
        };
        check_revision(self.id, self.index, &id, &rev, self.author)?;
        let json = serde_json::to_string(&rev).map_err(|e| ModelError::Invalid {
            doc: self.id.clone(),
            path: format!("{REVISIONS}/{id}"),
            reason: e.to_string(),
        })?;
        self.tx
            .put(&self.objs.revisions, id.as_str(), json)
            .map_err(|e| self.am(e))?;
        self.staged.writes.push(format!("{REVISIONS}/{id}"));
        self.staged.revisions.insert(id, rev);
        Ok(())
    }

    /// Creates the entity behind `register` (an order, goal, allergy, ...) with its first
    /// revision, and its free-text field if the kind has one.
    pub fn create(
        &mut self,
        id: RecordId,
        register: Register,
        value: RegisterValue,
        text: Option<&str>,
    ) -> Result<(), ModelError> {
        if !self.heads(&register).is_empty() {
            return Err(ModelError::Invalid {
                doc: self.id.clone(),
                path: register.to_string(),
                reason: "already exists; revise it instead".into(),
            });
        }
        let text_key = match &register {
            Register::Goal(g) => Some(TextKey::GoalDescription(g.clone())),
            Register::Intervention(i) => Some(TextKey::InterventionDescription(i.clone())),
            Register::Order(o) => Some(TextKey::OrderInstructions(o.clone())),
            _ => None,
        };
        self.revise(id, register, Vec::new(), value)?;
        if let Some(key) = text_key {
            self.create_text(key, text.unwrap_or(""))?;
        }
        Ok(())
    }

    fn heads(&self, register: &Register) -> Vec<RecordId> {
        self.index.heads(register)
    }

    /// Writes a new value of `register` over its one current value. Refused while the register
    /// is in conflict: a conflict is resolved explicitly, with [`Edit::resolve`].
    pub fn update(
        &mut self,
        id: RecordId,
        register: Register,
        value: RegisterValue,
    ) -> Result<(), ModelError> {
        let heads = self.heads(&register);
        if heads.len() > 1 {
            return Err(ModelError::Conflicted {
                doc: self.id.clone(),
                register: register.to_string(),
            });
        }
        if heads.is_empty() && register_has_entity(&register) {
            return Err(ModelError::NotFound {
                doc: self.id.clone(),
                what: "entity",
                id: register.to_string(),
            });
        }
        self.revise(id, register, heads, value)
    }

    /// Resolves a conflict: a new value that supersedes every current value of `register`.
    pub fn resolve(
        &mut self,
        id: RecordId,
        register: Register,
        value: RegisterValue,
    ) -> Result<(), ModelError> {
        let heads = self.heads(&register);
        if heads.is_empty() {
            return Err(ModelError::NotFound {
                doc: self.id.clone(),
                what: "register",
                id: register.to_string(),
            });
        }
        self.revise(id, register, heads, value)
    }

    /// Appends event `id`.
    pub fn record(&mut self, id: RecordId, body: EventBody) -> Result<(), ModelError> {
        self.fresh(&id)?;
        let ev = Event {
            body,
            author: self.author.clone(),
            at: self.at,
        };
        let index = self.index;
        let staged = &self.staged.events;
        let lookup = |t: &RecordId| index.events.get(t).or_else(|| staged.get(t)).cloned();
        check_event(self.id, &id, &ev, self.author, &lookup)?;
        let json = serde_json::to_string(&ev).map_err(|e| ModelError::Invalid {
            doc: self.id.clone(),
            path: format!("{EVENTS}/{id}"),
            reason: e.to_string(),
        })?;
        self.tx
            .put(&self.objs.events, id.as_str(), json)
            .map_err(|e| self.am(e))?;
        self.staged.writes.push(format!("{EVENTS}/{id}"));
        self.staged.events.insert(id, ev);
        Ok(())
    }

    /// Starts a draft note whose body several people may edit before it is signed.
    pub fn start_draft(&mut self, note: RecordId, text: &str) -> Result<(), ModelError> {
        self.create_text(TextKey::NoteDraft(note), text)
    }

    fn create_text(&mut self, key: TextKey, text: &str) -> Result<(), ModelError> {
        check_text_write(self.id, &key, self.author)?;
        check_text_len(self.id, &key, text)?;
        if self.index.texts.contains_key(&key) || self.staged.texts.contains_key(&key) {
            return Err(ModelError::Invalid {
                doc: self.id.clone(),
                path: format!("{TEXTS}/{key}"),
                reason: "exists already".into(),
            });
        }
        let obj = self
            .tx
            .put_object(&self.objs.texts, key.to_string(), ObjType::Text)
            .map_err(|e| self.am(e))?;
        if !text.is_empty() {
            self.tx.update_text(&obj, text).map_err(|e| self.am(e))?;
        }
        self.staged.writes.push(format!("{TEXTS}/{key}"));
        self.staged.texts.insert(key, obj);
        Ok(())
    }

    /// Replaces the content of an existing text field. The edit is recorded as the smallest
    /// splices from the old content, so concurrent edits elsewhere in the text merge.
    pub fn set_text(&mut self, key: &TextKey, text: &str) -> Result<(), ModelError> {
        check_text_write(self.id, key, self.author)?;
        check_text_len(self.id, key, text)?;
        let obj = self
            .index
            .texts
            .get(key)
            .or_else(|| self.staged.texts.get(key))
            .cloned()
            .ok_or_else(|| ModelError::NotFound {
                doc: self.id.clone(),
                what: "text",
                id: key.to_string(),
            })?;
        self.tx.update_text(&obj, text).map_err(|e| self.am(e))?;
        let w = format!("{TEXTS}/{key}");
        if !self.staged.writes.contains(&w) {
            self.staged.writes.push(w);
        }
        Ok(())
    }

    /// The current content of a text field, as this change sees it.
    pub fn text(&self, key: &TextKey) -> Option<String> {
        let obj = self
            .index
            .texts
            .get(key)
            .or_else(|| self.staged.texts.get(key))?;
        self.tx.text(obj).ok()
    }
}

fn register_has_entity(r: &Register) -> bool {
    !matches!(
        r,
        Register::DisplayName
            | Register::Resuscitation
            | Register::Responsibility
            | Register::FollowUp
    )
}

fn check_text_write(doc: &DocumentId, key: &TextKey, author: &Author) -> Result<(), ModelError> {
    if key.doc_kind() != doc.kind() {
        return Err(ModelError::Invalid {
            doc: doc.clone(),
            path: format!("{TEXTS}/{key}"),
            reason: format!(
                "this text field does not belong in a {} document",
                doc.kind().as_str()
            ),
        });
    }
    if !may_write(author.role, &WriteKind::Text(key)) {
        return Err(ModelError::NotPermitted {
            doc: doc.clone(),
            path: format!("{TEXTS}/{key}"),
            role: author.role,
        });
    }
    Ok(())
}

fn check_text_len(doc: &DocumentId, key: &TextKey, text: &str) -> Result<(), ModelError> {
    if text.len() > MAX_LONG_TEXT {
        return Err(ModelError::Invalid {
            doc: doc.clone(),
            path: format!("{TEXTS}/{key}"),
            reason: format!("longer than {MAX_LONG_TEXT} bytes"),
        });
    }
    Ok(())
}

/// Everything about a revision that needs no other record.
fn check_revision_shape(doc: &DocumentId, id: &RecordId, rev: &Revision) -> Result<(), ModelError> {
    let path = format!("{REVISIONS}/{id}");
    let bad = |field: &str, reason: String| ModelError::Invalid {
        doc: doc.clone(),
        path: if field.is_empty() {
            path.clone()
        } else {
            format!("{path}/{field}")
        },
        reason,
    };
    if rev.register.doc_kind() != doc.kind() {
        return Err(bad(
            "register",
            format!(
                "{} does not belong in a {} document",
                rev.register,
                doc.kind().as_str()
            ),
        ));
    }
    if !rev.value.fits(&rev.register) {
        return Err(bad(
            "value",
            format!("this value cannot be written to {}", rev.register),
        ));
    }
    if rev.supersedes.len() > MAX_LIST {
        return Err(bad("supersedes", format!("more than {MAX_LIST} entries")));
    }
    let short = |field: &str, s: &str, required: bool| -> Result<(), ModelError> {
        if s.len() > MAX_SHORT_TEXT {
            return Err(bad(field, format!("longer than {MAX_SHORT_TEXT} bytes")));
        }
        if required && s.trim().is_empty() {
            return Err(bad(field, "must not be empty".into()));
        }
        Ok(())
    };
    let opt =
        |field: &str, s: &Option<String>| s.as_deref().map_or(Ok(()), |s| short(field, s, false));
    match &rev.value {
        RegisterValue::DisplayName { name } => short("value/name", name, true)?,
        RegisterValue::Resuscitation { comment, .. } => opt("value/comment", comment)?,
        RegisterValue::Allergy {
            substance,
            reaction,
            ..
        } => {
            short("value/substance", substance, true)?;
            opt("value/reaction", reaction)?;
        }
        RegisterValue::Risk { description, .. } => short("value/description", description, true)?,
        RegisterValue::Responsibility {
            organisation,
            person,
        } => {
            short("value/organisation", organisation, true)?;
            opt("value/person", person)?;
        }
        RegisterValue::FollowUp { date } => {
            if !is_date(date) {
                return Err(bad("value/date", format!("{date:?} is not YYYY-MM-DD")));
            }
        }
        RegisterValue::Participant {
            name,
            organisation,
            role,
            ..
        } => {
            short("value/name", name, true)?;
            short("value/organisation", organisation, true)?;
            short("value/role", role, true)?;
        }
        RegisterValue::Goal { title, .. } => short("value/title", title, true)?,
        RegisterValue::Intervention {
            title,
            responsible_organisation,
            ..
        } => {
            short("value/title", title, true)?;
            short(
                "value/responsible_organisation",
                responsible_organisation,
                true,
            )?;
        }
        RegisterValue::Order(o) => {
            short("value/drug", &o.drug, true)?;
            short("value/strength", &o.strength, true)?;
            short("value/dose", &o.dose, true)?;
            short("value/route", &o.route, true)?;
            if o.times.len() > MAX_LIST {
                return Err(bad("value/times", format!("more than {MAX_LIST} entries")));
            }
            if let Some(t) = o.times.iter().find(|t| !is_time_of_day(t)) {
                return Err(bad("value/times", format!("{t:?} is not HH:MM")));
            }
            if !is_date(&o.start) {
                return Err(bad(
                    "value/start",
                    format!("{:?} is not YYYY-MM-DD", o.start),
                ));
            }
            if let Some(stop) = &o.stop {
                if !is_date(stop) || stop < &o.start {
                    return Err(bad(
                        "value/stop",
                        format!("{stop:?} is not a date on or after start"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// `supersedes` must name existing revisions of the same register. When the whole document is
/// being checked (`loaded`), the named revisions may sit anywhere in the index; for a new
/// revision they must already be in the document, which keeps the graph acyclic.
fn check_supersedes(
    doc: &DocumentId,
    index: &Index,
    id: &RecordId,
    rev: &Revision,
    loaded: bool,
) -> Result<(), ModelError> {
    let mut seen = BTreeSet::new();
    for s in &rev.supersedes {
        let path = format!("{REVISIONS}/{id}/supersedes");
        let reason = if !seen.insert(s) {
            Some(format!("{s} named twice"))
        } else if s == id {
            Some("a revision cannot supersede itself".into())
        } else {
            match index.revisions.get(s) {
                None => Some(format!("no revision {s}")),
                Some(r) if r.register != rev.register => Some(format!(
                    "{s} is a revision of {}, not {}",
                    r.register, rev.register
                )),
                Some(r) if loaded && r.supersedes.contains(id) => {
                    Some(format!("{s} and {id} supersede each other"))
                }
                Some(_) => None,
            }
        };
        if let Some(reason) = reason {
            return Err(ModelError::Invalid {
                doc: doc.clone(),
                path,
                reason,
            });
        }
    }
    Ok(())
}

fn check_revision(
    doc: &DocumentId,
    index: &Index,
    id: &RecordId,
    rev: &Revision,
    author: &Author,
) -> Result<(), ModelError> {
    check_revision_shape(doc, id, rev)?;
    check_author(doc, &format!("{REVISIONS}/{id}"), &rev.author, author)?;
    if !may_write(author.role, &WriteKind::Revision(&rev.register)) {
        return Err(ModelError::NotPermitted {
            doc: doc.clone(),
            path: format!("{REVISIONS}/{id}"),
            role: author.role,
        });
    }
    check_supersedes(doc, index, id, rev, false)
}

fn check_author(
    doc: &DocumentId,
    path: &str,
    claimed: &Author,
    actual: &Author,
) -> Result<(), ModelError> {
    if claimed != actual {
        return Err(ModelError::Invalid {
            doc: doc.clone(),
            path: format!("{path}/author"),
            reason: "the record's author is not the change's author".into(),
        });
    }
    Ok(())
}

fn check_event(
    doc: &DocumentId,
    id: &RecordId,
    ev: &Event,
    author: &Author,
    lookup: &dyn Fn(&RecordId) -> Option<Event>,
) -> Result<(), ModelError> {
    let path = format!("{EVENTS}/{id}");
    let bad = |field: &str, reason: String| ModelError::Invalid {
        doc: doc.clone(),
        path: format!("{path}/{field}"),
        reason,
    };
    let kind = ev.body.kind();
    if !kind.allowed_in(doc.kind()) {
        return Err(bad(
            "body",
            format!(
                "{kind:?} does not belong in a {} document",
                doc.kind().as_str()
            ),
        ));
    }
    check_author(doc, &path, &ev.author, author)?;
    if !may_write(author.role, &WriteKind::Event(kind)) {
        return Err(ModelError::NotPermitted {
            doc: doc.clone(),
            path,
            role: author.role,
        });
    }
    let short = |field: &str, s: &str| -> Result<(), ModelError> {
        if s.len() > MAX_SHORT_TEXT {
            return Err(bad(field, format!("longer than {MAX_SHORT_TEXT} bytes")));
        }
        if s.trim().is_empty() {
            return Err(bad(field, "must not be empty".into()));
        }
        Ok(())
    };
    match &ev.body {
        EventBody::Administration {
            slot,
            outcome,
            reason,
            ..
        } => {
            if !is_slot(slot) {
                return Err(bad(
                    "body/slot",
                    format!("{slot:?} is not YYYY-MM-DDTHH:MM"),
                ));
            }
            if let Some(m) = doc.month() {
                if slot[..7] != m.to_string() {
                    return Err(bad("body/slot", format!("{slot} is not in {m}")));
                }
            }
            match (outcome, reason) {
                (AdministrationOutcome::NotGiven, None) => {
                    return Err(bad("body/reason", "a dose not given needs a reason".into()));
                }
                (_, Some(r)) => short("body/reason", r)?,
                _ => {}
            }
        }
        EventBody::FlagAcknowledgement {
            flag,
            covers,
            comment,
        } => {
            short("body/flag", flag)?;
            if covers.is_empty() || covers.len() > MAX_LIST {
                return Err(bad(
                    "body/covers",
                    format!("must name 1 to {MAX_LIST} events"),
                ));
            }
            if let Some(c) = comment {
                short("body/comment", c)?;
            }
        }
        EventBody::Note { body, corrects } => {
            if body.trim().is_empty() || body.len() > MAX_LONG_TEXT {
                return Err(bad(
                    "body/body",
                    format!("must hold 1 to {MAX_LONG_TEXT} bytes"),
                ));
            }
            if let Some(r) = corrects {
                let target: DocumentId =
                    r.document.parse().map_err(|e: crate::error::IdError| {
                        bad("body/corrects/document", e.to_string())
                    })?;
                if target.kind() != DocKind::Journal {
                    return Err(bad(
                        "body/corrects/document",
                        "a note corrects a note in a journal".into(),
                    ));
                }
                if &target == doc
                    && lookup(&r.record).is_none_or(|e| !matches!(e.body, EventBody::Note { .. }))
                {
                    return Err(bad(
                        "body/corrects/record",
                        format!("no note {} in this document", r.record),
                    ));
                }
            }
        }
        EventBody::Observation { value, unit, .. } => {
            if !value.is_finite() {
                return Err(bad("body/value", "must be a finite number".into()));
            }
            short("body/unit", unit)?;
        }
        EventBody::VisitStart { .. } | EventBody::VisitStop { .. } => {}
        EventBody::TaskOutcome {
            task, done, reason, ..
        } => {
            short("body/task", task)?;
            match (done, reason) {
                (false, None) => {
                    return Err(bad("body/reason", "a task not done needs a reason".into()));
                }
                (_, Some(r)) => short("body/reason", r)?,
                _ => {}
            }
        }
        EventBody::EnteredInError { target, reason } => {
            short("body/reason", reason)?;
            let Some(original) = lookup(target) else {
                return Err(bad(
                    "body/target",
                    format!("no event {target} in this document"),
                ));
            };
            if matches!(original.body, EventBody::EnteredInError { .. }) {
                return Err(bad(
                    "body/target",
                    "an entered-in-error record cannot itself be marked".into(),
                ));
            }
            if author.role != crate::ids::Role::Nurse && original.author.user != author.user {
                return Err(ModelError::NotPermitted {
                    doc: doc.clone(),
                    path,
                    role: author.role,
                });
            }
        }
    }
    Ok(())
}
