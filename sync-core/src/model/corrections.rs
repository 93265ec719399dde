//! Corrections: a note, an observation or an administration marked entered in error, with a
//! reason. The record stays; an [`EventBody::EnteredInError`] in the same document names it.
//! Marks are append-only events with unique ids, so two people marking one record at once both
//! keep their mark: the record is entered in error once, and its history names every mark.

use crate::ModelError;
use crate::ids::{Author, RecordId, Timestamp};
use crate::model::document::CareDocument;
use crate::model::records::MAX_SHORT_TEXT;
use crate::model::records::{Event, EventBody, EventKind};

/// One entered-in-error mark on a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub id: RecordId,
    pub author: Author,
    pub at: Timestamp,
    pub reason: String,
}

/// The kinds of record a care worker corrects this way.
pub fn correctable(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::Note | EventKind::Observation | EventKind::Administration
    )
}

/// Every mark on `target` in `doc`, oldest first (by time, then id: the same order on every
/// replica).
pub fn marks(doc: &CareDocument, target: &RecordId) -> Vec<Mark> {
    let mut out: Vec<Mark> = doc
        .entered_in_error(target)
        .into_iter()
        .filter_map(|(id, ev)| match &ev.body {
            EventBody::EnteredInError { reason, .. } => Some(Mark {
                id: id.clone(),
                author: ev.author.clone(),
                at: ev.at,
                reason: reason.clone(),
            }),
            _ => None,
        })
        .collect();
    out.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
    out
}

/// Whether `target` in `doc` may be marked entered in error now, by this replica's knowledge:
/// it exists, is a note, an observation or an administration, is not marked yet, and the
/// reason is given. A mark made concurrently elsewhere is not refused (nobody could know of
/// it): both are kept. Who may mark whose record is the role rule, checked on every write.
pub fn check_correction<'a>(
    doc: &'a CareDocument,
    target: &RecordId,
    reason: &str,
) -> Result<&'a Event, ModelError> {
    let invalid = |reason: String| ModelError::Invalid {
        doc: doc.id().clone(),
        path: format!("events/{target}"),
        reason,
    };
    let Some(event) = doc.event(target) else {
        return Err(ModelError::NotFound {
            doc: doc.id().clone(),
            what: "record",
            id: target.to_string(),
        });
    };
    if !correctable(event.body.kind()) {
        return Err(invalid(
            "only a note, an observation or an administration is marked entered in error".into(),
        ));
    }
    if reason.trim().is_empty() {
        return Err(invalid("a correction needs a reason".into()));
    }
    if reason.len() > MAX_SHORT_TEXT {
        return Err(invalid(format!(
            "the reason is longer than {MAX_SHORT_TEXT} bytes"
        )));
    }
    if let Some(m) = marks(doc, target).first() {
        return Err(invalid(format!(
            "already marked entered in error by {} ({})",
            m.author.user, m.reason
        )));
    }
    Ok(event)
}

#[cfg(test)]
#[path = "corrections_tests.rs"]
mod tests;
