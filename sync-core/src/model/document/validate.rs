//! The schema and role checks of records, shared by local edits, ingestion and loading.

use std::collections::BTreeSet;

use crate::error::ModelError;
use crate::ids::{Author, DocKind, DocumentId, RecordId};
use crate::model::dose::{self, DoseError};
use crate::model::records::Event;
use crate::model::records::{
    EventBody, MAX_LIST, MAX_LONG_TEXT, MAX_SHORT_TEXT, RegisterValue, Revision, TextKey,
    WriteKind, is_date, is_time_of_day, may_supersede, may_write,
};

use super::index::Index;
use super::{EVENTS, REVISIONS, TEXTS};

pub(super) fn check_text_write(
    doc: &DocumentId,
    key: &TextKey,
    author: &Author,
) -> Result<(), ModelError> {
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

pub(super) fn check_text_len(
    doc: &DocumentId,
    key: &TextKey,
    text: &str,
) -> Result<(), ModelError> {
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
pub(super) fn check_revision_shape(
    doc: &DocumentId,
    id: &RecordId,
    rev: &Revision,
) -> Result<(), ModelError> {
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
    if rev.context.after.len() > MAX_LIST {
        return Err(bad(
            "context/after",
            format!("more than {MAX_LIST} entries"),
        ));
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
            crate::model::round::check_order(o).map_err(|(f, r)| bad(f, r))?;
        }
        RegisterValue::Delegation(d) => {
            crate::model::delegation::check(d).map_err(|(f, r)| bad(f, r))?;
        }
    }
    Ok(())
}

/// `supersedes` must name existing revisions of the same register. When the whole document is
/// being checked (`loaded`), the named revisions may sit anywhere in the index; for a new
/// revision they must already be in the document, which keeps the graph acyclic.
pub(super) fn check_supersedes(
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

pub(super) fn check_revision(
    doc: &DocumentId,
    index: &Index,
    id: &RecordId,
    rev: &Revision,
    author: &Author,
) -> Result<(), ModelError> {
    check_revision_shape(doc, id, rev)?;
    check_author(doc, &format!("{REVISIONS}/{id}"), &rev.author, author)?;
    if !may_write(author.role, &WriteKind::Revision(&rev.register))
        || !may_supersede(author.role, &rev.register, rev.supersedes.len())
    {
        return Err(ModelError::NotPermitted {
            doc: doc.clone(),
            path: format!("{REVISIONS}/{id}"),
            role: author.role,
        });
    }
    check_supersedes(doc, index, id, rev, false)
}

pub(super) fn check_author(
    doc: &DocumentId,
    path: &str,
    claimed: &Author,
    actual: &Author,
) -> Result<(), ModelError> {
    // A record names the person and device; the incarnation is the change's (a record
    // written again under a new incarnation keeps its exact content).
    if *claimed != actual.person() {
        return Err(ModelError::Invalid {
            doc: doc.clone(),
            path: format!("{path}/author"),
            reason: "the record's author is not the change's author".into(),
        });
    }
    Ok(())
}

pub(super) fn check_event(
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
    if ev.context.after.len() > MAX_LIST {
        return Err(bad(
            "context/after",
            format!("more than {MAX_LIST} entries"),
        ));
    }
    if !may_write(author.role, &WriteKind::Event(kind)) {
        return Err(ModelError::NotPermitted {
            doc: doc.clone(),
            path,
            role: author.role,
        });
    }
    // A person writes in their own record only.
    if author.role == crate::ids::Role::Person && author.user.as_str() != doc.patient().as_str() {
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
            // The rules of the record itself are the dose's (`model::dose`), the same the device
            // checks before it writes; whether its order schedules the slot is not checked
            // here: such a dose is kept (see `dose::check_scheduled`).
            dose::check_record(slot, *outcome, reason.as_deref()).map_err(|e| match e {
                DoseError::NeedsReason => bad("body/reason", e.to_string()),
                _ => bad("body/slot", e.to_string()),
            })?;
            if let Some(m) = doc.month() {
                if slot[..7] != m.to_string() {
                    return Err(bad("body/slot", format!("{slot} is not in {m}")));
                }
            }
            if let Some(r) = reason {
                short("body/reason", r)?;
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
        EventBody::Effect {
            administration,
            note,
            ..
        } => {
            if let Some(n) = note {
                short("body/note", n)?;
            }
            if lookup(administration)
                .is_none_or(|e| !matches!(e.body, EventBody::Administration { .. }))
            {
                return Err(bad(
                    "body/administration",
                    format!("no administration {administration} in this document"),
                ));
            }
        }
        EventBody::WhatMatters { text } => {
            if text.trim().is_empty() || text.len() > MAX_LONG_TEXT {
                return Err(bad(
                    "body/text",
                    format!("must hold 1 to {MAX_LONG_TEXT} bytes"),
                ));
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
