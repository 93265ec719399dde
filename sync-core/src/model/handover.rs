//! Handover: what a document gained since a state of it someone last saw. Causal, not by the
//! clock: a record written before that view on a phone that synced only afterwards is new to
//! the reader, and is listed; a record the reader had already seen is not, whatever its time.

use automerge::ChangeHash;

use crate::ids::RecordId;
use crate::model::document::{CareDocument, ChangeMessage};

/// The records written since a state of a document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WrittenSince {
    pub revisions: Vec<RecordId>,
    pub events: Vec<RecordId>,
}

/// The revisions and events that changes not in the history of `heads` wrote, in the order
/// the document applied them. With no `heads` (never seen), everything.
pub fn written_since(doc: &CareDocument, heads: &[ChangeHash]) -> WrittenSince {
    let mut out = WrittenSince::default();
    let known: Vec<ChangeHash> = heads
        .iter()
        .filter(|h| doc.has_change(h))
        .copied()
        .collect();
    for change in doc.changes_since(&known) {
        let Some(msg) = change
            .message()
            .and_then(|m| serde_json::from_str::<ChangeMessage>(m).ok())
        else {
            continue;
        };
        for write in msg.writes {
            let (list, id) = match write.split_once('/') {
                Some(("revisions", id)) => (&mut out.revisions, id),
                Some(("events", id)) => (&mut out.events, id),
                _ => continue,
            };
            if let Ok(id) = RecordId::new(id)
                && !list.contains(&id)
            {
                list.push(id);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ids::{Author, DeviceId, DocumentId, PatientId, Role, Timestamp, UserId};
    use crate::model::records::EventBody;

    fn note(doc: &mut CareDocument, who: &Author, id: &str, at: i64) {
        doc.change(who, Timestamp(at), |e| {
            e.record(
                RecordId::new(id).unwrap(),
                EventBody::Note {
                    body: id.into(),
                    corrects: None,
                },
            )
        })
        .unwrap();
    }

    #[test]
    fn only_what_the_reader_has_not_seen_whatever_its_time() {
        let p = PatientId::new("p-1").unwrap();
        let id = DocumentId::journal(&p, "2026-11".parse().unwrap());
        let anna = Author::new(
            UserId::new("anna").unwrap(),
            Role::Carer,
            DeviceId::new("a").unwrap(),
        );
        let bo = Author::new(
            UserId::new("bo").unwrap(),
            Role::Carer,
            DeviceId::new("b").unwrap(),
        );
        let mut reader = CareDocument::new(id.clone()).unwrap();
        let mut other = CareDocument::new(id).unwrap();
        note(&mut reader, &anna, "n-1", 100);
        // Bo writes, offline, *before* the reader looks (by the clock) ...
        note(&mut other, &bo, "n-2", 150);
        let seen = reader.heads();
        assert_eq!(written_since(&reader, &seen), WrittenSince::default());
        assert_eq!(written_since(&reader, &[]).events.len(), 1);
        // ... and syncs after: new to the reader.
        reader.apply_changes(other.changes_since(&[])).unwrap();
        note(&mut reader, &anna, "n-3", 300);
        let since = written_since(&reader, &seen);
        assert_eq!(
            since.events,
            vec![RecordId::new("n-2").unwrap(), RecordId::new("n-3").unwrap()]
        );
    }
}
