//! Handover: for one person, what changed since this user last viewed them on this device (the
//! person's page, [`super::overview`], or a handover: [`super::seen`]), notes, observations,
//! doses, corrections, order and alert changes, flags, written by others. Causal, not by the
//! clock (`sync_core::model::handover`): a record written earlier on a phone that synced only
//! since is new. The view is logged as a read, and counts as viewing the person.

use sync_core::model::handover::written_since;

use super::seen::{last_viewed, mark_viewed};
use super::*;

/// At most this many records are listed; older ones are counted in `left_out`.
pub const MAX_HANDOVER_ITEMS: usize = 200;
/// A first handover (the user never viewed the person on this device) lists what was written
/// in this window.
pub const FIRST_HANDOVER_MS: i64 = 24 * 3_600_000;

/// What one new record is.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "what", rename_all = "kebab-case")]
pub enum HandoverWhat {
    /// An event: a note, an observation, a dose, a correction, a flag review, a visit.
    Event { body: EventBody },
    /// A new version of an order, an allergy, the resuscitation decision, the plan.
    Revision {
        register: String,
        version: u32,
        value: RegisterValue,
    },
}

/// One record written since the user last viewed the person.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HandoverItem {
    pub document: DocumentId,
    pub record: RecordId,
    /// `note`, `observation`, `dose`, `correction`, `flag-review`, `visit`, `order`,
    /// `allergy`, `resuscitation`, `plan` or `header`.
    pub kind: &'static str,
    pub author: Author,
    pub at: Timestamp,
    /// For a dose, or a correction of one: the drug and strength of the order version the dose
    /// names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drug: Option<String>,
    #[serde(flatten)]
    pub what: HandoverWhat,
}

/// What changed for one person since this user last viewed them on this device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Handover {
    pub patient: PatientId,
    pub display_name: Option<String>,
    /// When the user last viewed the person (their page or a handover; this device's clock);
    /// `None`: never, and the handover lists the last 24 hours.
    pub since: Option<Timestamp>,
    /// Newest first.
    pub items: Vec<HandoverItem>,
    /// Records beyond [`MAX_HANDOVER_ITEMS`], not listed.
    pub left_out: usize,
    /// Flags whose evidence or review is among the new records.
    pub flags: Vec<FlagShown>,
}

fn kind_of(body: &EventBody) -> &'static str {
    match body {
        EventBody::Note { .. } => "note",
        EventBody::Observation { .. } => "observation",
        EventBody::Administration { .. } => "dose",
        EventBody::Effect { .. } => "dose-effect",
        EventBody::WhatMatters { .. } => "what-matters",
        EventBody::EnteredInError { .. } => "correction",
        EventBody::FlagAcknowledgement { .. } => "flag-review",
        EventBody::VisitStart { .. }
        | EventBody::VisitStop { .. }
        | EventBody::TaskOutcome { .. } => "visit",
    }
}

fn kind_of_register(register: &Register) -> &'static str {
    match register {
        Register::Order(_) => "order",
        Register::Allergy(_) => "allergy",
        Register::Resuscitation => "resuscitation",
        Register::Delegation(_) => "delegation",
        Register::DisplayName | Register::Risk(_) => "header",
        _ => "plan",
    }
}

/// The handover of `patient`: logged as a read, then the user's place moved to now.
pub fn handover(device: &Device, patient: &PatientId, clock: &Clock) -> Result<Handover> {
    device.check_lease(clock.now)?;
    device.log_read(patient, "handover")?;
    let me = device.author().user;
    device.with_repo(|repo| {
        let seen = last_viewed(repo, &me, patient, &me)?;
        let docs: Vec<DocumentId> = repo
            .document_ids()?
            .into_iter()
            .filter(|d| d.patient() == patient)
            .collect();
        if docs.is_empty() {
            return Err(ClientError::Invalid(format!(
                "no documents for {patient} on this device (sync first?)"
            )));
        }
        let mut items = Vec::new();
        for doc_id in &docs {
            let d = repo.get(doc_id)?;
            let heads = seen.as_ref().map(|s| s.heads(doc_id)).unwrap_or_default();
            let since = written_since(d, &heads);
            for id in since.events {
                let Some(ev) = d.event(&id) else { continue };
                items.push(HandoverItem {
                    document: doc_id.clone(),
                    record: id.clone(),
                    kind: kind_of(&ev.body),
                    author: ev.author.clone(),
                    at: ev.at,
                    drug: None,
                    what: HandoverWhat::Event {
                        body: ev.body.clone(),
                    },
                });
            }
            for id in since.revisions {
                let Some(rev) = d.revision(&id) else { continue };
                items.push(HandoverItem {
                    document: doc_id.clone(),
                    record: id.clone(),
                    kind: kind_of_register(&rev.register),
                    author: rev.author.clone(),
                    at: rev.at,
                    drug: None,
                    what: HandoverWhat::Revision {
                        register: rev.register.to_string(),
                        version: d.version(&id),
                        value: rev.value.clone(),
                    },
                });
            }
        }
        // Others' records; on a first handover, of the last day only.
        items.retain(|i| i.author.user != me);
        if seen.is_none() {
            items.retain(|i| i.at.0 >= clock.now.0 - FIRST_HANDOVER_MS);
        }
        items.sort_by(|a, b| (b.at, &b.record).cmp(&(a.at, &a.record)));
        let left_out = items.len().saturating_sub(MAX_HANDOVER_ITEMS);
        items.truncate(MAX_HANDOVER_ITEMS);
        // The order version each dose (or corrected dose) names.
        let mut revisions = Vec::with_capacity(items.len());
        for item in &items {
            revisions.push(match &item.what {
                HandoverWhat::Event {
                    body: EventBody::Administration { order_revision, .. },
                } => Some(order_revision.clone()),
                HandoverWhat::Event {
                    body: EventBody::EnteredInError { target, .. },
                } => match super::corrections::holder(repo, patient, target) {
                    Ok(doc) => match repo.get(&doc)?.event(target).map(|e| &e.body) {
                        Some(EventBody::Administration { order_revision, .. }) => {
                            Some(order_revision.clone())
                        }
                        _ => None,
                    },
                    Err(_) => None,
                },
                _ => None,
            });
        }
        let meds = repo.get(&DocumentId::medication(patient))?;
        for (item, revision) in items.iter_mut().zip(revisions) {
            if let Some(RegisterValue::Order(o)) = revision
                .as_ref()
                .and_then(|r| meds.revision(r))
                .map(|r| &r.value)
            {
                item.drug = Some(format!("{} {}", o.drug, o.strength));
            }
        }
        let new: BTreeSet<&RecordId> = items.iter().map(|i| &i.record).collect();
        let flags = repo
            .chart(patient, &[])?
            .flags()
            .into_iter()
            .filter(|f| {
                f.evidence.iter().any(|e| new.contains(e))
                    || f.acknowledgements.iter().any(|a| new.contains(&a.event))
            })
            .map(|f| FlagShown::new(patient, f))
            .collect();
        let display_name = display_name(repo, patient)?;
        let out = Handover {
            patient: patient.clone(),
            display_name,
            since: seen.as_ref().and_then(|s| s.at).map(Timestamp),
            items,
            left_out,
            flags,
        };
        mark_viewed(repo, &me, patient, clock.now)?;
        Ok(out)
    })
}
