//! Ingestion of foreign changes: each checked on its own, refused ones leave no trace. Ready
//! changes go through Automerge as one batch when all of them pass (`batch`).

use std::collections::{BTreeMap, BTreeSet};

use automerge::{Change, ChangeHash, ObjId, ObjType, Patch, PatchAction, PatchLog, ReadDoc, Value};

use crate::error::ModelError;
use crate::ids::{Author, RecordId};
use crate::model::records::Event;
use crate::model::records::{MAX_RECORD_BYTES, Register, Revision, TextKey};

use super::validate::{check_event, check_revision, check_text_write};
use super::{
    ApplyOutcome, CareDocument, ChangeMessage, ClockMeta, EVENTS, REVISIONS, TEXTS, carries_marks,
    guarded,
};

/// Where a batch of foreign changes that Automerge took is read back from it (Automerge 0.12
/// takes some malformed changes into its graph and then panics when reading them back, to send
/// them on or to save the document; `guarded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadBack {
    /// Here, once applied: changes from the device that wrote them (a server taking an upload).
    Here,
    /// Where they were stored: changes a server relayed, each of which that server read back
    /// when it took it from its writer, with this same code. Reading the batch back again costs
    /// its changes' encoding rebuilt from the op set (Automerge 0.12), about 7% of what thirty
    /// phones spent storing a team's morning. A copy that took such a change anyway (from a
    /// server that did not check) is caught where it matters: compaction keeps the change rows
    /// unless the snapshot saves without a panic and loads back to the same heads
    /// (`Repo::compact`), and an Automerge panic later poisons the copy, which is loaded again
    /// from the store. The `ingest` fuzz target takes its changes this way too, then compacts.
    Upstream,
}

impl CareDocument {
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
        self.apply_changes_read(changes, ReadBack::Here)
    }

    /// [`CareDocument::apply_changes`] for changes a server relayed: a batch that Automerge
    /// took is not read back here ([`ReadBack::Upstream`]); every other check is the same.
    pub fn apply_relayed_changes(
        &mut self,
        changes: Vec<Change>,
    ) -> Result<ApplyOutcome, ModelError> {
        self.apply_changes_read(changes, ReadBack::Upstream)
    }

    fn apply_changes_read(
        &mut self,
        changes: Vec<Change>,
        read_back: ReadBack,
    ) -> Result<ApplyOutcome, ModelError> {
        let mut outcome = ApplyOutcome::default();
        if self.poisoned {
            for c in changes {
                outcome.refused.push((c.hash(), self.poisoned_error()));
            }
            return Ok(outcome);
        }
        let mut pending: BTreeMap<ChangeHash, Change> = BTreeMap::new();
        let mut refused: BTreeSet<ChangeHash> = BTreeSet::new();
        for c in changes {
            // Presence by the change graph alone: `get_change_by_hash` rebuilds the change
            // from the whole op set (Automerge 0.12), a cost per change that grew with the
            // document and dominated a device's catch-up.
            if self.doc.get_change_meta_by_hash(&c.hash()).is_some() {
                outcome.duplicates += 1;
            } else if carries_marks(&c) {
                refused.insert(c.hash());
                outcome.refused.push((
                    c.hash(),
                    ModelError::Invalid {
                        doc: self.id.clone(),
                        path: format!("change {}", c.hash()),
                        reason: "a mark operation (text takes plain edits only)".into(),
                    },
                ));
            } else {
                pending.insert(c.hash(), c);
            }
        }
        let mut tried_chains = false;
        loop {
            let ready: Vec<ChangeHash> = pending
                .values()
                .filter(|c| {
                    c.deps()
                        .iter()
                        .all(|d| self.doc.get_change_meta_by_hash(d).is_some())
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
            // Once: every change that can go in now, with the changes built on them (a
            // device's run of changes is a chain), in one batch if every one passes.
            if !tried_chains {
                tried_chains = true;
                let chains = ready_with_dependants(&self.doc, &pending);
                if chains.len() > ready.len() && self.apply_batch(&chains, read_back) {
                    for c in &chains {
                        pending.remove(&c.hash());
                    }
                    outcome.applied.extend(chains);
                    continue;
                }
            }
            let batch: Vec<Change> = ready.iter().filter_map(|h| pending.remove(h)).collect();
            // All at once if every change passes; otherwise one at a time, below.
            if self.apply_batch(&batch, read_back) {
                outcome.applied.extend(batch);
                continue;
            }
            for change in batch {
                let h = change.hash();
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

    pub(super) fn poisoned_error(&self) -> ModelError {
        ModelError::Corrupt {
            doc: self.id.clone(),
            detail: "not applied: Automerge failed on an earlier change of this batch".into(),
        }
    }

    /// The last sequence number of `actor` in the document (0 if it wrote nothing): the
    /// change graph is read once, then kept up to date by foreign changes.
    pub fn actor_seq(&mut self, actor: &automerge::ActorId) -> u64 {
        let doc = &self.doc;
        let seqs = self.actor_seqs.get_or_insert_with(|| {
            let mut seqs = BTreeMap::new();
            for meta in doc.get_changes_meta(&[]) {
                let seq = seqs.entry(meta.actor.into_owned()).or_insert(0);
                *seq = std::cmp::max(*seq, meta.seq);
            }
            seqs
        });
        seqs.get(actor).copied().unwrap_or(0)
    }

    /// The checks of a foreign change that read nothing of the document but its actor's last
    /// sequence number and its dependencies' metadata: what it claims, who wrote it, its place
    /// in its actor's sequence and in the document's clock.
    pub(super) fn admit(&mut self, change: &Change) -> Result<Admitted, ModelError> {
        self.admit_after(change, &Earlier::default())
    }

    /// [`CareDocument::admit`] for a change of a batch that may build on `earlier` changes of
    /// the same batch (admitted before it, not yet in the document): their actors' sequence
    /// numbers and their operation counters count as the document's. A change that builds on
    /// a batch-mate other than through its own actor's previous change is refused here (the
    /// caller then applies the batch pass by pass, where the document answers).
    pub(super) fn admit_after(
        &mut self,
        change: &Change,
        earlier: &Earlier,
    ) -> Result<Admitted, ModelError> {
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
        // Every change of a document descends from its genesis (made byte-identical on every
        // replica). A change with no dependencies that is not the genesis writes into objects
        // outside its causal past (the genesis's maps), which Automerge 0.12 takes and then
        // fails (panics) loading the stored document. Found by fuzzing
        // (`fuzz/regressions/ingest/crash-2caf0521…`).
        if change.deps().is_empty() && hash != super::genesis_hash(&self.id)? {
            return Err(invalid(
                "the change has no dependencies and is not the document's genesis".into(),
            ));
        }
        // Automerge takes a change whose sequence number skips or repeats one of its actor's
        // into the open document, then fails (panics) loading the stored document: one device
        // could make a person's record unreadable for everyone. Found by fuzzing
        // (`fuzz/regressions/ingest/crash-941719f4…`).
        let actor = change.actor_id().clone();
        let expected = match earlier.seqs.get(&actor) {
            Some(seq) => *seq,
            None => self.actor_seq(&actor),
        } + 1;
        if change.seq() != expected {
            return Err(ModelError::Invalid {
                doc: self.id.clone(),
                path: format!("change {hash}"),
                reason: format!(
                    "sequence number {} of its actor, expected {expected}",
                    change.seq()
                ),
            });
        }
        let seq = change.seq();
        // Its actor's previous change must be in its history (Automerge loads changes in that
        // order and fails on a document where it is not): a change with no dependencies, or
        // built beside its own predecessor, is refused. Whether a dependency is a batch-mate
        // (not in the document yet):
        let in_batch = change
            .deps()
            .iter()
            .any(|d| earlier.changes.contains_key(d));
        if earlier.seqs.contains_key(&actor) {
            // Its actor's previous change is a batch-mate: it must name it directly.
            let on_own = change.deps().iter().any(|d| {
                earlier
                    .changes
                    .get(d)
                    .is_some_and(|e| e.actor == actor && e.seq + 1 == seq)
            });
            if !on_own {
                return Err(ModelError::Invalid {
                    doc: self.id.clone(),
                    path: format!("change {hash}"),
                    reason: format!(
                        "change {seq} of its actor does not build on change {} of its batch",
                        seq - 1
                    ),
                });
            }
        } else if seq > 1 {
            // Its actor's previous change is in the document: it must be in the history of
            // the dependencies the document holds (enough; a batch-mate's history is not
            // searched, and a change that needs it is refused here, to be applied pass by
            // pass by the caller).
            let held: Vec<ChangeHash> = change
                .deps()
                .iter()
                .filter(|d| !earlier.changes.contains_key(*d))
                .copied()
                .collect();
            // Usually it names its predecessor directly (a device's run of changes): read the
            // dependencies alone. Otherwise, every change not in their history: Automerge
            // builds the metadata of each, a cost that grows with the document (it was half of
            // a device's work in the 200-device morning).
            let direct = held.iter().any(|d| {
                self.doc
                    .get_change_meta_by_hash(d)
                    .is_some_and(|m| *m.actor == actor && m.seq == seq - 1)
            });
            let beside = !direct
                && (held.is_empty()
                    || self
                        .doc
                        .get_changes_meta(&held)
                        .iter()
                        .any(|m| *m.actor == actor && m.seq == seq - 1));
            if beside {
                return Err(ModelError::Invalid {
                    doc: self.id.clone(),
                    path: format!("change {hash}"),
                    reason: format!(
                        "change {seq} of its actor does not build on change {}",
                        seq - 1
                    ),
                });
            }
        }
        let meta = ClockMeta::of(change);
        let violation = if in_batch {
            // Its dependencies' last operation counter: the batch-mate's, or the document's.
            let seen = change
                .deps()
                .iter()
                .filter_map(|d| match earlier.changes.get(d) {
                    Some(e) => Some(e.max_op),
                    None => guarded(|| self.doc.get_change_meta_by_hash(d))
                        .flatten()
                        .map(|m| m.max_op),
                })
                .max()
                .unwrap_or(0);
            super::clock_violation_after(&meta, seen)
        } else {
            self.clock_violation(&meta)
        };
        if let Some(reason) = violation.or_else(|| self.outside_causal_past(change, earlier)) {
            return Err(ModelError::Invalid {
                doc: self.id.clone(),
                path: format!("change {hash}"),
                reason,
            });
        }
        Ok(Admitted {
            message,
            actor,
            seq,
        })
    }

    fn apply_one(&mut self, change: Change) -> Result<(), ModelError> {
        let hash = change.hash();
        let Admitted {
            message,
            actor,
            seq,
        } = self.admit(&change)?;
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
                if let Some(seqs) = self.actor_seqs.as_mut() {
                    seqs.insert(actor, seq);
                }
                Ok(())
            }
            Err(e) => {
                self.rollback_to(&before)?;
                Err(e)
            }
        }
    }

    pub(super) fn rollback_to(&mut self, heads: &[ChangeHash]) -> Result<(), ModelError> {
        self.actor_seqs = None;
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
    pub(super) fn check_patches(&self, patches: &[Patch]) -> Result<Touched, ModelError> {
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
    pub(super) fn check_new_records(
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

    pub(super) fn commit_index(&mut self, new: NewRecords) {
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
}

/// The changes of `pending` whose dependencies are each in `doc` or among them, each after its
/// dependencies.
fn ready_with_dependants(
    doc: &automerge::Automerge,
    pending: &BTreeMap<ChangeHash, Change>,
) -> Vec<Change> {
    // For each change, how many of its dependencies are pending; and who waits for whom.
    let mut waiting: BTreeMap<ChangeHash, usize> = BTreeMap::new();
    let mut dependants: BTreeMap<ChangeHash, Vec<ChangeHash>> = BTreeMap::new();
    let mut next: std::collections::VecDeque<ChangeHash> = std::collections::VecDeque::new();
    for (hash, change) in pending {
        let mut count = 0;
        let mut missing = false;
        for d in change.deps() {
            if pending.contains_key(d) {
                count += 1;
                dependants.entry(*d).or_default().push(*hash);
            } else if doc.get_change_meta_by_hash(d).is_none() {
                missing = true;
            }
        }
        // A change missing a dependency never gets ready, nor does anything built on it.
        if missing {
            continue;
        }
        if count == 0 {
            next.push_back(*hash);
        } else {
            waiting.insert(*hash, count);
        }
    }
    let mut out = Vec::new();
    while let Some(hash) = next.pop_front() {
        if let Some(change) = pending.get(&hash) {
            out.push(change.clone());
        }
        for d in dependants.get(&hash).into_iter().flatten() {
            if let Some(count) = waiting.get_mut(d) {
                *count -= 1;
                if *count == 0 {
                    waiting.remove(d);
                    next.push_back(*d);
                }
            }
        }
    }
    out
}

/// What [`CareDocument::admit`] read of a change that passed.
#[derive(Debug)]
pub(super) struct Admitted {
    pub(super) message: ChangeMessage,
    pub(super) actor: automerge::ActorId,
    pub(super) seq: u64,
}

/// The changes of a batch admitted so far ([`CareDocument::admit_after`]).
#[derive(Debug, Default)]
pub(super) struct Earlier {
    pub(super) changes: BTreeMap<ChangeHash, EarlierChange>,
    /// Each actor's last sequence number in the batch so far.
    pub(super) seqs: BTreeMap<automerge::ActorId, u64>,
}

#[derive(Debug)]
pub(super) struct EarlierChange {
    pub(super) actor: automerge::ActorId,
    pub(super) seq: u64,
    /// Its last operation counter.
    pub(super) max_op: u64,
}

impl Earlier {
    pub(super) fn add(&mut self, change: &Change) {
        let actor = change.actor_id().clone();
        self.seqs.insert(actor.clone(), change.seq());
        self.changes.insert(
            change.hash(),
            EarlierChange {
                actor,
                seq: change.seq(),
                max_op: change.max_op(),
            },
        );
    }
}

#[derive(Debug, Default)]
pub(super) struct Touched {
    pub(super) revisions: BTreeMap<RecordId, String>,
    pub(super) events: BTreeMap<RecordId, String>,
    pub(super) new_texts: BTreeSet<TextKey>,
    pub(super) edited_texts: BTreeSet<TextKey>,
}

#[derive(Debug, Default)]
pub(super) struct NewRecords {
    pub(super) revisions: Vec<(RecordId, Revision)>,
    pub(super) events: Vec<(RecordId, Event)>,
    pub(super) texts: Vec<(TextKey, ObjId)>,
}
