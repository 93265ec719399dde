//! The decoded, validated index of a document's records, and the views read from it.

use std::collections::{BTreeMap, BTreeSet};

use automerge::{ChangeHash, ObjId, ObjType, ROOT, ReadDoc, Value};

use crate::error::ModelError;
use crate::ids::{RecordId, Timestamp};
use crate::model::records::Event;
use crate::model::records::{EventBody, Register, Revision, TextKey};

use super::validate::{check_event, check_revision_shape, check_supersedes};
use super::{
    CareDocument, ChangeMessage, Conflict, EVENTS, HistoryEntry, META, REVISIONS, RegisterState,
    RevisionView, SCHEMA_VERSION, TEXTS,
};

/// The decoded, validated records of a document, kept in step with the Automerge state.
#[derive(Debug, Default, Clone)]
pub(super) struct Index {
    pub(super) revisions: BTreeMap<RecordId, Revision>,
    pub(super) events: BTreeMap<RecordId, Event>,
    pub(super) texts: BTreeMap<TextKey, ObjId>,
    pub(super) by_register: BTreeMap<Register, BTreeSet<RecordId>>,
    /// revision -> the revisions that supersede it directly
    pub(super) superseded_by: BTreeMap<RecordId, BTreeSet<RecordId>>,
    /// event -> the entered-in-error events that mark it
    pub(super) marked: BTreeMap<RecordId, BTreeSet<RecordId>>,
}

impl Index {
    /// The revisions of `register` that no other revision supersedes.
    pub(super) fn heads(&self, register: &Register) -> Vec<RecordId> {
        self.by_register
            .get(register)
            .into_iter()
            .flatten()
            .filter(|id| self.superseded_by.get(*id).is_none_or(|s| s.is_empty()))
            .cloned()
            .collect()
    }

    pub(super) fn add_revision(&mut self, id: RecordId, rev: Revision) {
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

    pub(super) fn add_event(&mut self, id: RecordId, ev: Event) {
        if let EventBody::EnteredInError { target, .. } = &ev.body {
            self.marked
                .entry(target.clone())
                .or_default()
                .insert(id.clone());
        }
        self.events.insert(id, ev);
    }
}

impl CareDocument {
    pub(super) fn check_meta(&self) -> Result<(), ModelError> {
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
    pub(super) fn reindex(&mut self) -> Result<(), ModelError> {
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

    /// The content a text field had at `heads` (a state of this document's history), if it
    /// existed then.
    pub fn text_at(&self, key: &TextKey, heads: &[ChangeHash]) -> Option<String> {
        let obj = self.index.texts.get(key)?;
        self.doc.text_at(obj, heads).ok()
    }

    /// Every change: who made it (the person and device, without the store's incarnation and
    /// write number), when, and what it wrote.
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
                    author: msg.as_ref().map(|m| m.author.person()),
                    writes: msg.map(|m| m.writes).unwrap_or_default(),
                }
            })
            .collect()
    }
}
