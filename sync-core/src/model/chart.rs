//! Derived state across a person's documents: medication slot status and safety flags.
//!
//! Nothing here is stored. A slot's status and every flag are computed from the events and
//! revisions each time, so they converge whenever the documents do. A flag is cleared only by a
//! nurse's acknowledgement event, and an acknowledgement covers the evidence it saw: a third
//! "given" arriving later reopens the flag.

use std::collections::{BTreeMap, BTreeSet};

use crate::ids::{Author, DocKind, DocumentId, PatientId, RecordId, Timestamp};
use crate::model::document::{CareDocument, Conflict};
use crate::model::records::{
    AdministrationOutcome, CLOCK_SKEW_LIMIT_MS, Event, EventBody, Register, RegisterValue,
};

/// The status of one medication slot (order, `YYYY-MM-DDTHH:MM`), derived from the events.
#[derive(Debug, Clone, PartialEq)]
pub enum SlotStatus {
    Open,
    Given {
        administration: RecordId,
        by: Author,
    },
    NotGiven {
        administration: RecordId,
        reason: Option<String>,
    },
    SelfAdministered {
        administration: RecordId,
    },
    /// Two or more "given" records for the slot.
    PossibleDoubleDose {
        administrations: Vec<RecordId>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum FlagKind {
    /// Two or more "given" records for one (order, slot).
    PossibleDoubleDose { order: RecordId, slot: String },
    /// An administration names an order version that a later version had replaced by the time
    /// it was given (the dose was written knowing the later version, or, the two being
    /// concurrent, the later version was valid from before the dose's time).
    GivenOnSupersededOrder {
        administration: RecordId,
        order: RecordId,
        revision: RecordId,
        superseded_by: Vec<RecordId>,
    },
    /// "Time uncertain, review": an administration names an order version that a concurrent
    /// later version may have replaced, and only the clocks could tell, but the dose's or the
    /// later version's writer had a clock known to be more than 5 minutes off the server's.
    SupersededOrderTimeUncertain {
        administration: RecordId,
        order: RecordId,
        revision: RecordId,
        superseded_by: Vec<RecordId>,
    },
    /// A delegated dose recorded by a worker without a valid delegation at its time
    /// (`delegation.rs`): kept, and shown to the nurse.
    NoValidDelegation {
        administration: RecordId,
        order: RecordId,
    },
    /// A "when needed" dose past the order's daily maximum or minimum interval (`prn.rs`).
    PrnLimitExceeded {
        administration: RecordId,
        order: RecordId,
    },
    /// A scheduled slot past its window with nothing recorded, while every phone that could
    /// have recorded it had synced since (`round.rs`; raised with the server's knowledge).
    OverdueSlot { order: RecordId, slot: String },
    /// The effect of a "when needed" dose not followed up in time (`prn.rs`).
    FollowUpOverdue {
        administration: RecordId,
        order: RecordId,
    },
}

/// Whether a later version of an order applied when a dose on an earlier one was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applies {
    Yes,
    No,
    /// Only time could tell, and a clock it would rest on was known to be off.
    Uncertain,
}

/// `heads` and every revision they supersede, directly or through others.
fn with_ancestors(medication: &CareDocument, heads: &[RecordId]) -> BTreeSet<RecordId> {
    let mut seen: BTreeSet<RecordId> = BTreeSet::new();
    let mut todo: Vec<RecordId> = heads.to_vec();
    while let Some(next) = todo.pop() {
        if !seen.insert(next.clone()) {
            continue;
        }
        if let Some(rev) = medication.revision(&next) {
            todo.extend(rev.supersedes.iter().cloned());
        }
    }
    seen
}

/// Did version `version` of the order (one of `later`, the versions superseding the one the
/// dose names) apply when dose `dose` was given? Causality first: a dose written knowing the
/// version (or one after it) was given on a superseded order whatever the clocks say; a version
/// written knowing the dose (or following one that was) came after it. Only for the two
/// concurrent does time decide (the version's `valid_from` against the dose's time), and not
/// when either writer's clock was known to be off by more than [`CLOCK_SKEW_LIMIT_MS`]: then
/// it is uncertain.
fn applies(
    medication: &CareDocument,
    later: &[RecordId],
    dose_id: &RecordId,
    dose: &Event,
    occurred_at: Timestamp,
    version: &RecordId,
) -> Applies {
    let Some(rev) = medication.revision(version) else {
        return Applies::No;
    };
    if with_ancestors(medication, &dose.context.after).contains(version) {
        return Applies::Yes;
    }
    let knew_dose = with_ancestors(medication, std::slice::from_ref(version))
        .iter()
        .filter(|r| later.contains(r))
        .filter_map(|r| medication.revision(r))
        .any(|r| r.context.after.contains(dose_id));
    if knew_dose {
        return Applies::No;
    }
    let RegisterValue::Order(o) = &rev.value else {
        return Applies::No;
    };
    if dose.context.clock_off(CLOCK_SKEW_LIMIT_MS) || rev.context.clock_off(CLOCK_SKEW_LIMIT_MS) {
        return Applies::Uncertain;
    }
    if o.valid_from <= occurred_at {
        Applies::Yes
    } else {
        Applies::No
    }
}

/// A nurse's acknowledgement of a flag.
#[derive(Debug, Clone, PartialEq)]
pub struct Acknowledgement {
    pub event: RecordId,
    pub author: Author,
    pub at: Timestamp,
    pub comment: Option<String>,
    pub covers: Vec<RecordId>,
}

/// A safety flag. It stays in the list once acknowledged, with its acknowledgements.
#[derive(Debug, Clone, PartialEq)]
pub struct Flag {
    /// Stable id, the same on every replica: `double-dose/<order>/<slot>`,
    /// `superseded-order/<administration>` or `time-uncertain/<administration>`.
    pub id: String,
    pub kind: FlagKind,
    /// The administration log where the evidence is, and where an acknowledgement goes.
    pub document: DocumentId,
    /// The administration events that raise the flag.
    pub evidence: Vec<RecordId>,
    pub acknowledgements: Vec<Acknowledgement>,
    /// True until an acknowledgement covers all of the evidence.
    pub open: bool,
}

/// A flag as raised, before its acknowledgements: its kind, the log where an acknowledgement
/// goes, and its evidence.
pub(crate) type RaisedFlag = (FlagKind, DocumentId, BTreeSet<RecordId>);

/// A person's documents seen together.
#[derive(Debug)]
pub struct Chart<'a> {
    patient: PatientId,
    docs: Vec<&'a CareDocument>,
}

impl<'a> Chart<'a> {
    /// The chart of `patient` from whatever of their documents are given; others are ignored.
    pub fn new(patient: &PatientId, docs: impl IntoIterator<Item = &'a CareDocument>) -> Self {
        let docs = docs
            .into_iter()
            .filter(|d| d.id().patient() == patient)
            .collect();
        Self {
            patient: patient.clone(),
            docs,
        }
    }

    pub fn patient(&self) -> &PatientId {
        &self.patient
    }

    pub(crate) fn of_kind(&self, kind: DocKind) -> impl Iterator<Item = &'a CareDocument> + '_ {
        self.docs.iter().copied().filter(move |d| d.kind() == kind)
    }

    /// Every register in conflict, in every document of the chart.
    pub fn conflicts(&self) -> Vec<Conflict> {
        self.docs.iter().flat_map(|d| d.conflicts()).collect()
    }

    /// Administration events that are not marked entered-in-error, with their document.
    pub(crate) fn administrations(&self) -> Vec<(&'a CareDocument, &'a RecordId, &'a Event)> {
        self.of_kind(DocKind::MedicationAdministration)
            .flat_map(|d| {
                d.events()
                    .iter()
                    .filter(move |(id, ev)| {
                        matches!(ev.body, EventBody::Administration { .. })
                            && d.entered_in_error(id).is_empty()
                    })
                    .map(move |(id, ev)| (d, id, ev))
            })
            .collect()
    }

    /// The latest "given" administrations of `order` (not entered in error), newest first by
    /// their time, at most `max`: what a new version of the order is written knowing.
    pub fn given_doses(&self, order: &RecordId, max: usize) -> Vec<RecordId> {
        let mut doses: Vec<(Timestamp, &RecordId)> = self
            .administrations()
            .into_iter()
            .filter_map(|(_, id, ev)| match &ev.body {
                EventBody::Administration {
                    order: o,
                    outcome: AdministrationOutcome::Given,
                    occurred_at,
                    ..
                } if o == order => Some((*occurred_at, id)),
                _ => None,
            })
            .collect();
        doses.sort_by(|a, b| b.cmp(a));
        doses
            .into_iter()
            .take(max)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// The status of one slot of one order.
    pub fn slot_status(&self, order: &RecordId, slot: &str) -> SlotStatus {
        let mut given = Vec::new();
        let mut other = Vec::new();
        for (_, id, ev) in self.administrations() {
            let EventBody::Administration {
                order: o,
                slot: s,
                outcome,
                reason,
                ..
            } = &ev.body
            else {
                continue;
            };
            if o != order || s != slot {
                continue;
            }
            match outcome {
                AdministrationOutcome::Given => given.push((id, ev)),
                _ => other.push((id, ev, *outcome, reason.clone())),
            }
        }
        match given.len() {
            0 => {}
            1 => {
                let (id, ev) = given[0];
                return SlotStatus::Given {
                    administration: id.clone(),
                    by: ev.author.clone(),
                };
            }
            _ => {
                return SlotStatus::PossibleDoubleDose {
                    administrations: given.into_iter().map(|(id, _)| id.clone()).collect(),
                };
            }
        }
        // Deterministic choice among the rest: self-administration first, then the latest.
        other.sort_by(|a, b| {
            (a.2 != AdministrationOutcome::SelfAdministered, b.1.at, b.0).cmp(&(
                b.2 != AdministrationOutcome::SelfAdministered,
                a.1.at,
                a.0,
            ))
        });
        match other.into_iter().next() {
            None => SlotStatus::Open,
            Some((id, _, AdministrationOutcome::SelfAdministered, _)) => {
                SlotStatus::SelfAdministered {
                    administration: id.clone(),
                }
            }
            Some((id, _, _, reason)) => SlotStatus::NotGiven {
                administration: id.clone(),
                reason,
            },
        }
    }

    /// Every safety flag, open or acknowledged, in a stable order.
    pub fn flags(&self) -> Vec<Flag> {
        let admins = self.administrations();
        let orders: Vec<&CareDocument> = self.of_kind(DocKind::MedicationRequest).collect();
        let mut raised: BTreeMap<String, RaisedFlag> = BTreeMap::new();

        let mut given_by_slot: BTreeMap<(&RecordId, &str), Vec<(&CareDocument, &RecordId)>> =
            BTreeMap::new();
        for (doc, id, ev) in &admins {
            let EventBody::Administration {
                order,
                order_revision,
                slot,
                outcome,
                occurred_at,
                ..
            } = &ev.body
            else {
                continue;
            };
            if *outcome != AdministrationOutcome::Given {
                continue;
            }
            // A "when needed" dose's slot is only its minute: two are judged by the order's
            // limits (`prn.rs`), not as a double dose.
            let prn = crate::model::prn::rule_of(self, order_revision).is_some();
            if !prn {
                given_by_slot
                    .entry((order, slot.as_str()))
                    .or_default()
                    .push((doc, id));
            }

            // Given on a superseded order: a later version that applied when the dose was given.
            for medication in &orders {
                let Some(rev) = medication.revision(order_revision) else {
                    continue;
                };
                if rev.register != Register::Order(order.clone()) {
                    continue;
                }
                let later = medication.superseded_by_transitively(order_revision);
                let (mut applied, mut uncertain) = (Vec::new(), Vec::new());
                for s in &later {
                    match applies(medication, &later, id, ev, *occurred_at, s) {
                        Applies::Yes => applied.push(s.clone()),
                        Applies::Uncertain => uncertain.push(s.clone()),
                        Applies::No => {}
                    }
                }
                let (key, kind) = if !applied.is_empty() {
                    (
                        format!("superseded-order/{id}"),
                        FlagKind::GivenOnSupersededOrder {
                            administration: (*id).clone(),
                            order: order.clone(),
                            revision: order_revision.clone(),
                            superseded_by: applied,
                        },
                    )
                } else if !uncertain.is_empty() {
                    (
                        format!("time-uncertain/{id}"),
                        FlagKind::SupersededOrderTimeUncertain {
                            administration: (*id).clone(),
                            order: order.clone(),
                            revision: order_revision.clone(),
                            superseded_by: uncertain,
                        },
                    )
                } else {
                    continue;
                };
                raised.insert(
                    key,
                    (kind, doc.id().clone(), BTreeSet::from([(*id).clone()])),
                );
            }
        }
        for ((order, slot), given) in given_by_slot {
            if given.len() < 2 {
                continue;
            }
            // The flag lives in the log of the slot's month; every given event of the slot is
            // in that same log, because logs are split by the slot's month.
            let document = given[0].0.id().clone();
            raised.insert(
                format!("double-dose/{order}/{slot}"),
                (
                    FlagKind::PossibleDoubleDose {
                        order: order.clone(),
                        slot: slot.to_owned(),
                    },
                    document,
                    given.into_iter().map(|(_, id)| id.clone()).collect(),
                ),
            );
        }
        raised.extend(crate::model::delegation::flags(self));
        raised.extend(crate::model::prn::limit_flags(self));
        self.finish(raised)
    }

    /// Every flag acknowledgement of the chart (not entered in error), by flag id.
    pub fn acknowledgements(&self) -> BTreeMap<String, Vec<Acknowledgement>> {
        let mut acks: BTreeMap<String, Vec<Acknowledgement>> = BTreeMap::new();
        for doc in self.of_kind(DocKind::MedicationAdministration) {
            for (id, ev) in doc.events() {
                if let EventBody::FlagAcknowledgement {
                    flag,
                    covers,
                    comment,
                } = &ev.body
                {
                    if !doc.entered_in_error(id).is_empty() {
                        continue;
                    }
                    acks.entry(flag.clone()).or_default().push(Acknowledgement {
                        event: id.clone(),
                        author: ev.author.clone(),
                        at: ev.at,
                        comment: comment.clone(),
                        covers: covers.clone(),
                    });
                }
            }
        }
        acks
    }

    /// Flags with their acknowledgements, from what raised them (flag id: kind, the log where
    /// an acknowledgement goes, the evidence).
    pub(crate) fn finish(&self, raised: BTreeMap<String, RaisedFlag>) -> Vec<Flag> {
        let mut acks = self.acknowledgements();
        raised
            .into_iter()
            .map(|(id, (kind, document, evidence))| {
                let acknowledgements = acks.remove(&id).unwrap_or_default();
                let covered: BTreeSet<&RecordId> = acknowledgements
                    .iter()
                    .flat_map(|a| a.covers.iter())
                    .collect();
                let open = !evidence.iter().all(|e| covered.contains(e));
                Flag {
                    id,
                    kind,
                    document,
                    evidence: evidence.into_iter().collect(),
                    acknowledgements,
                    open,
                }
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "chart_tests.rs"]
mod tests;
