//! What a saved change wrote, as the write-lost checker compares it (see `check.rs`).

use automerge::ChangeHash;
use sync_core::model::TextKey;
use sync_core::repo::Repo;
use sync_core::store::MemoryStore;
use sync_core::{DocumentId, RecordId};

/// A revision or event as its change wrote it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SavedRecord {
    Revision(RecordId, sync_core::model::Revision),
    Event(RecordId, sync_core::model::Event),
    /// A text (its key as written in change messages) and the token an edit inserted in it.
    Text(String, String),
}

impl SavedRecord {
    /// The revisions and events change `hash` of `doc` wrote, as the document holds them.
    pub(super) fn of(
        repo: &mut Repo<MemoryStore>,
        doc: &DocumentId,
        hash: &ChangeHash,
    ) -> Vec<SavedRecord> {
        let Ok(d) = repo.get(doc) else {
            return Vec::new();
        };
        let Some(message) = d
            .automerge_change(hash)
            .and_then(|c| c.message().map(str::to_owned))
            .and_then(|m| serde_json::from_str::<sync_core::model::ChangeMessage>(&m).ok())
        else {
            return Vec::new();
        };
        message
            .writes
            .iter()
            .filter_map(|w| {
                let (map, key) = w.split_once('/')?;
                let id = RecordId::new(key).ok()?;
                match map {
                    "revisions" => d
                        .revision(&id)
                        .cloned()
                        .map(|r| SavedRecord::Revision(id, r)),
                    "events" => d.event(&id).cloned().map(|e| SavedRecord::Event(id, e)),
                    _ => None,
                }
            })
            .collect()
    }

    /// What change `hash` of `doc` wrote: its revisions and events, and its texts with their
    /// whole value as the document holds them now.
    pub(super) fn written(
        repo: &mut Repo<MemoryStore>,
        doc: &DocumentId,
        hash: &ChangeHash,
    ) -> Vec<SavedRecord> {
        let mut records = SavedRecord::of(repo, doc, hash);
        let Ok(d) = repo.get(doc) else {
            return records;
        };
        let history = d.history();
        let texts = history
            .iter()
            .filter(|h| h.change == *hash)
            .flat_map(|h| h.writes.iter())
            .filter_map(|w| w.strip_prefix("texts/"))
            .filter_map(|key| {
                let text = d.text(&key.parse::<TextKey>().ok()?)?;
                Some(SavedRecord::Text(key.to_string(), text))
            });
        records.extend(texts);
        records
    }

    /// Whether `other`, a record as a change wrote it (a text with its whole value), holds
    /// this one (a text: its token).
    pub(crate) fn covered_by(&self, other: &SavedRecord) -> bool {
        match (self, other) {
            (SavedRecord::Text(key, token), SavedRecord::Text(k, text)) => {
                key == k && text.contains(token.as_str())
            }
            _ => self == other,
        }
    }

    /// This record as `doc` holds it, if at all.
    pub(crate) fn as_held_by(&self, doc: &sync_core::model::CareDocument) -> Option<SavedRecord> {
        match self {
            SavedRecord::Revision(id, _) => doc
                .revision(id)
                .cloned()
                .map(|r| SavedRecord::Revision(id.clone(), r)),
            SavedRecord::Event(id, _) => doc
                .event(id)
                .cloned()
                .map(|e| SavedRecord::Event(id.clone(), e)),
            SavedRecord::Text(key, _) => key
                .parse::<TextKey>()
                .ok()
                .and_then(|k| doc.text(&k))
                .map(|t| SavedRecord::Text(key.clone(), t)),
        }
    }

    /// Whether `doc` holds this record with this content.
    pub(crate) fn held_by(&self, doc: &sync_core::model::CareDocument) -> bool {
        match self {
            SavedRecord::Revision(id, r) => doc.revision(id) == Some(r),
            SavedRecord::Event(id, e) => doc.event(id) == Some(e),
            // The edit's token is in the text: its content survived (a text taken back at a
            // reincarnation is written again with the value the store had, token included).
            SavedRecord::Text(key, token) => key
                .parse::<TextKey>()
                .ok()
                .and_then(|k| doc.text(&k))
                .is_some_and(|t| t.contains(token.as_str())),
        }
    }
}
