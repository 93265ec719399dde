//! "When needed" orders (PRN, vid behov): at most so many doses in any 24 hours, at least so
//! long between two, and each dose's effect followed up after a time the order sets.
//!
//! A dose past either limit is refused on the device unless given anyway with a reason, and
//! every replica flags it ([`FlagKind::PrnLimitExceeded`]) from the records alone. A follow-up
//! not recorded by its time is listed and flagged ([`FlagKind::FollowUpOverdue`], which needs
//! the time: raised with the round's timed flags). Pure: time is an argument.

use std::collections::BTreeMap;
use std::fmt;

use crate::ids::{DocKind, DocumentId, RecordId, Timestamp};
use crate::model::chart::{Chart, FlagKind, RaisedFlag};
use crate::model::records::{AdministrationOutcome, DoseEffect, EventBody, PrnRule, RegisterValue};

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 24 * 60 * MINUTE_MS;

/// Why a "when needed" dose is past the order's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrnProblem {
    /// `given` doses in the 24 hours before, the most the order allows.
    TooMany { given: u32, max_per_day: u32 },
    /// The last dose was at `last`; the next is allowed from `next`.
    TooSoon { last: Timestamp, next: Timestamp },
}

impl fmt::Display for PrnProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooMany { given, max_per_day } => write!(
                f,
                "{given} doses were given in the last 24 hours; the order allows at most {max_per_day}"
            ),
            Self::TooSoon { last, next } => {
                let mins = (next.0 - last.0) / MINUTE_MS;
                write!(
                    f,
                    "the last dose was less than {} h {:02} min ago",
                    mins / 60,
                    mins % 60
                )
            }
        }
    }
}

/// The "given" doses of `order` that are not entered in error: (time, id, document).
fn doses(chart: &Chart<'_>, order: &RecordId) -> Vec<(Timestamp, RecordId, DocumentId)> {
    let mut out: Vec<_> = chart
        .administrations()
        .into_iter()
        .filter_map(|(doc, id, ev)| match &ev.body {
            EventBody::Administration {
                order: o,
                outcome: AdministrationOutcome::Given,
                occurred_at,
                ..
            } if o == order => Some((*occurred_at, id.clone(), doc.id().clone())),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

/// Whether a dose of `order` at `at` keeps within `rule`, given the doses before it (`before`
/// decides which doses count as earlier: those strictly before `at`, or also one at `at` with
/// a smaller id).
fn within(
    rule: &PrnRule,
    at: Timestamp,
    earlier: impl Iterator<Item = Timestamp>,
) -> Result<(), PrnProblem> {
    let earlier: Vec<Timestamp> = earlier.filter(|t| t.0 > at.0 - DAY_MS).collect();
    let given = u32::try_from(earlier.len()).unwrap_or(u32::MAX);
    if given >= rule.max_per_day {
        return Err(PrnProblem::TooMany {
            given,
            max_per_day: rule.max_per_day,
        });
    }
    if let Some(last) = earlier.iter().max() {
        let next = Timestamp(last.0 + i64::from(rule.min_interval_minutes) * MINUTE_MS);
        if at < next {
            return Err(PrnProblem::TooSoon { last: *last, next });
        }
    }
    Ok(())
}

/// Whether a new dose of `order` at `at` keeps within `rule`, with the doses the chart holds.
pub fn check_dose(
    chart: &Chart<'_>,
    order: &RecordId,
    rule: &PrnRule,
    at: Timestamp,
) -> Result<(), PrnProblem> {
    within(
        rule,
        at,
        doses(chart, order)
            .into_iter()
            .map(|(t, ..)| t)
            .filter(|t| *t <= at),
    )
}

/// The rule of the order version a dose names, if it is a "when needed" order.
pub(crate) fn rule_of(chart: &Chart<'_>, revision: &RecordId) -> Option<PrnRule> {
    chart
        .of_kind(DocKind::MedicationRequest)
        .find_map(|m| m.revision(revision))
        .and_then(|r| match &r.value {
            RegisterValue::Order(o) => o.prn,
            _ => None,
        })
}

/// The PRN-limit flags: every "given" dose of a "when needed" order version that was past its
/// limits, counting the doses before it.
pub(crate) fn limit_flags(chart: &Chart<'_>) -> BTreeMap<String, RaisedFlag> {
    let mut raised = BTreeMap::new();
    for (doc, id, ev) in chart.administrations() {
        let EventBody::Administration {
            order,
            order_revision,
            outcome: AdministrationOutcome::Given,
            occurred_at,
            ..
        } = &ev.body
        else {
            continue;
        };
        let Some(rule) = rule_of(chart, order_revision) else {
            continue;
        };
        let earlier = doses(chart, order)
            .into_iter()
            .filter(|(t, other, _)| *t < *occurred_at || (t == occurred_at && other < id))
            .map(|(t, ..)| t);
        if within(&rule, *occurred_at, earlier).is_ok() {
            continue;
        }
        raised.insert(
            format!("prn-limit/{id}"),
            (
                FlagKind::PrnLimitExceeded {
                    administration: id.clone(),
                    order: order.clone(),
                },
                doc.id().clone(),
                [id.clone()].into_iter().collect(),
            ),
        );
    }
    raised
}

/// The follow-up of one "when needed" dose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowUp {
    pub administration: RecordId,
    pub order: RecordId,
    pub document: DocumentId,
    pub given_at: Timestamp,
    pub due: Timestamp,
    /// The recorded effect (the latest, if several), with its event and note.
    pub effect: Option<(RecordId, DoseEffect, Option<String>)>,
    /// Not recorded and past its time.
    pub overdue: bool,
}

/// Every follow-up of the chart's "when needed" doses, by due time.
pub fn follow_ups(chart: &Chart<'_>, now: Timestamp) -> Vec<FollowUp> {
    let mut effects: BTreeMap<RecordId, (Timestamp, RecordId, DoseEffect, Option<String>)> =
        BTreeMap::new();
    for doc in chart.of_kind(DocKind::MedicationAdministration) {
        for (id, ev) in doc.events() {
            if let EventBody::Effect {
                administration,
                effect,
                note,
                occurred_at,
            } = &ev.body
            {
                if !doc.entered_in_error(id).is_empty() {
                    continue;
                }
                let entry = (*occurred_at, id.clone(), *effect, note.clone());
                let e = effects
                    .entry(administration.clone())
                    .or_insert(entry.clone());
                if (entry.0, &entry.1) > (e.0, &e.1) {
                    *e = entry;
                }
            }
        }
    }
    let mut out = Vec::new();
    for (doc, id, ev) in chart.administrations() {
        let EventBody::Administration {
            order,
            order_revision,
            outcome: AdministrationOutcome::Given,
            occurred_at,
            ..
        } = &ev.body
        else {
            continue;
        };
        let Some(rule) = rule_of(chart, order_revision) else {
            continue;
        };
        let due = Timestamp(occurred_at.0 + i64::from(rule.follow_up_minutes) * MINUTE_MS);
        let effect = effects
            .get(id)
            .map(|(_, e, x, n)| (e.clone(), *x, n.clone()));
        out.push(FollowUp {
            administration: id.clone(),
            order: order.clone(),
            document: doc.id().clone(),
            given_at: *occurred_at,
            due,
            overdue: effect.is_none() && now > due,
            effect,
        });
    }
    out.sort_by(|a, b| (a.due, &a.administration).cmp(&(b.due, &b.administration)));
    out
}

/// The follow-up-overdue flags at `now`.
pub(crate) fn follow_up_flags(chart: &Chart<'_>, now: Timestamp) -> BTreeMap<String, RaisedFlag> {
    follow_ups(chart, now)
        .into_iter()
        .filter(|f| f.overdue)
        .map(|f| {
            (
                format!("follow-up/{}", f.administration),
                (
                    FlagKind::FollowUpOverdue {
                        administration: f.administration.clone(),
                        order: f.order,
                    },
                    f.document,
                    [f.administration].into_iter().collect(),
                ),
            )
        })
        .collect()
}

#[cfg(test)]
#[path = "prn_tests.rs"]
mod tests;
