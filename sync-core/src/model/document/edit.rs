//! Local edits: a change made through [`Edit`], each write checked before it is made.

use std::collections::BTreeMap;

use automerge::transaction::{CommitOptions, Transactable, Transaction};
use automerge::{ObjId, ObjType, PatchLog, ReadDoc};

use crate::error::ModelError;
use crate::ids::{Author, DocumentId, RecordId, Timestamp};
use crate::model::records::Event;
use crate::model::records::{EventBody, Register, RegisterValue, Revision, TextKey, WriteContext};

use super::index::Index;
use super::validate::{check_event, check_revision, check_text_len, check_text_write};
use super::{CareDocument, ChangeMessage, EVENTS, LocalChange, Objs, REVISIONS, TEXTS};

impl CareDocument {
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
            context: WriteContext::default(),
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
        // A local change moves this device's sequence number: counted again when next needed.
        self.actor_seqs = None;
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
    context: WriteContext,
    tx: Transaction<'a>,
    staged: Staged,
}

impl<'a> Edit<'a> {
    /// What the records written after this call say the device knew (its clock offset, the
    /// records of other documents they follow).
    pub fn set_context(&mut self, context: WriteContext) {
        self.context = context;
    }

    /// The context records are written with.
    pub fn context(&self) -> &WriteContext {
        &self.context
    }

    fn into_parts(self) -> (Transaction<'a>, Staged) {
        (self.tx, self.staged)
    }

    /// Writes `record` as one JSON string under `id` in `obj` (the `map` of `revisions` or
    /// `events`) and lists the write in the change message.
    fn put_record(
        &mut self,
        obj: &ObjId,
        map: &str,
        id: &RecordId,
        record: &impl serde::Serialize,
    ) -> Result<(), ModelError> {
        let path = format!("{map}/{id}");
        let json = serde_json::to_string(record).map_err(|e| ModelError::Invalid {
            doc: self.id.clone(),
            path: path.clone(),
            reason: e.to_string(),
        })?;
        self.tx
            .put(obj, id.as_str(), json)
            .map_err(|e| self.am(e))?;
        self.staged.writes.push(path);
        Ok(())
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
            author: self.author.person(),
            at: self.at,
            context: self.context.clone(),
        };
        check_revision(self.id, self.index, &id, &rev, self.author)?;
        let objs = self.objs;
        self.put_record(&objs.revisions, REVISIONS, &id, &rev)?;
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

    pub(super) fn heads(&self, register: &Register) -> Vec<RecordId> {
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
            author: self.author.person(),
            at: self.at,
            context: self.context.clone(),
        };
        let index = self.index;
        let staged = &self.staged.events;
        let lookup = |t: &RecordId| index.events.get(t).or_else(|| staged.get(t)).cloned();
        check_event(self.id, &id, &ev, self.author, &lookup)?;
        let objs = self.objs;
        self.put_record(&objs.events, EVENTS, &id, &ev)?;
        self.staged.events.insert(id, ev);
        Ok(())
    }

    /// Writes revision `id` again exactly as it was written by an earlier incarnation of this
    /// device's store (same register, supersedes, value, author, time and context), checked
    /// like a new one. Used when a store restored from a backup writes its unacknowledged
    /// records again (docs/protocol.md, "Incarnations").
    pub fn rewrite_revision(&mut self, id: RecordId, rev: Revision) -> Result<(), ModelError> {
        self.fresh(&id)?;
        check_revision(self.id, self.index, &id, &rev, self.author)?;
        let objs = self.objs;
        self.put_record(&objs.revisions, REVISIONS, &id, &rev)?;
        self.staged.revisions.insert(id, rev);
        Ok(())
    }

    /// Writes event `id` again exactly as an earlier incarnation wrote it (see
    /// [`Edit::rewrite_revision`]).
    pub fn rewrite_event(&mut self, id: RecordId, ev: Event) -> Result<(), ModelError> {
        self.fresh(&id)?;
        let index = self.index;
        let staged = &self.staged.events;
        let lookup = |t: &RecordId| index.events.get(t).or_else(|| staged.get(t)).cloned();
        check_event(self.id, &id, &ev, self.author, &lookup)?;
        let objs = self.objs;
        self.put_record(&objs.events, EVENTS, &id, &ev)?;
        self.staged.events.insert(id, ev);
        Ok(())
    }

    /// Gives text `key` the value `text` an earlier incarnation left it with: creates it if
    /// the document has no such text (its entity is written in the same change), else edits it.
    pub fn rewrite_text(&mut self, key: &TextKey, text: &str) -> Result<(), ModelError> {
        if self.index.texts.contains_key(key) || self.staged.texts.contains_key(key) {
            self.set_text(key, text)
        } else {
            self.create_text(key.clone(), text)
        }
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

pub(super) fn register_has_entity(r: &Register) -> bool {
    !matches!(
        r,
        Register::DisplayName
            | Register::Resuscitation
            | Register::Responsibility
            | Register::FollowUp
    )
}
