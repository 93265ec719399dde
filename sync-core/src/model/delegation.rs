//! Delegations (HSLF-FS 2017:37, SOSFS 1997:14): a nurse lets a named worker do a medical task
//! (medication administration, insulin injection, ...) for a person, from one date until
//! another, at most a year, revocably.
//!
//! A delegation is a [`Register::Delegation`] in the person's header: versioned like every
//! clinical value, so two concurrent changes are a conflict and a revocation is a revision
//! (`revoked: true`, valid no more from the revision's time). Only nurses write it (the role
//! table in `records.rs`), so its author is the nurse who signs it.
//!
//! A dose of a delegated order recorded by a carer needs a delegation of `medication` to that
//! carer, valid at the dose's time: [`valid_delegation`] answers that, for the device (which
//! refuses the dose, offline too) and for every replica's flags (a dose that arrives without
//! one is kept and flagged [`FlagKind::NoValidDelegation`]). Pure: time is an argument.

use std::collections::BTreeMap;
use std::fmt;

use crate::ids::{Author, DocKind, RecordId, Role, Timestamp, UserId};
use crate::model::chart::{Chart, FlagKind, RaisedFlag};
use crate::model::document::RegisterState;
use crate::model::records::{
    AdministrationOutcome, Delegation, EventBody, MAX_LIST, MAX_SHORT_TEXT, MedicationOrder,
    Register, RegisterValue,
};

/// The longest a delegation may run: a year (366 days, for a leap year).
pub const MAX_DELEGATION_MS: i64 = 366 * 24 * 60 * 60 * 1000;

/// The scope entry that covers medication administration.
pub const MEDICATION: &str = "medication";

/// Why a dose has no valid delegation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DelegationProblem {
    /// No delegation of this task for anyone (or the person's header is not here).
    NoneRecorded,
    /// Delegations of this task exist, but to other workers.
    OtherWorkers { to: Vec<UserId> },
    /// The worker's delegation starts later.
    NotYetValid {
        delegation: RecordId,
        from: Timestamp,
    },
    /// The worker's delegation ended.
    Expired {
        delegation: RecordId,
        until: Timestamp,
    },
    /// A nurse revoked the worker's delegation.
    Revoked {
        delegation: RecordId,
        at: Timestamp,
        by: UserId,
    },
    /// The worker's delegation has concurrent revisions: a nurse must resolve them first.
    InConflict { delegation: RecordId },
}

impl fmt::Display for DelegationProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoneRecorded => f.write_str("no delegation is recorded for this task"),
            Self::OtherWorkers { to } => write!(
                f,
                "the delegations for this task are to {}, not to this worker",
                to.iter().map(|u| u.as_str()).collect::<Vec<_>>().join(", ")
            ),
            Self::NotYetValid { delegation, .. } => {
                write!(f, "delegation {delegation} is not valid yet")
            }
            Self::Expired { delegation, .. } => write!(f, "delegation {delegation} has ended"),
            Self::Revoked { delegation, by, .. } => {
                write!(f, "delegation {delegation} was revoked by {by}")
            }
            Self::InConflict { delegation } => write!(
                f,
                "delegation {delegation} is in conflict; a nurse must resolve it first"
            ),
        }
    }
}

/// Whether a dose of `order` recorded by `author` needs a delegation: a delegated order, given
/// by a carer (a nurse gives on her own licence).
pub fn needs_delegation(order: &MedicationOrder, author: &Author) -> bool {
    order.delegated && author.role == Role::Carer
}

/// Schema rules of a delegation (also run on every received revision).
pub fn check(d: &Delegation) -> Result<(), (&'static str, String)> {
    if d.scope.is_empty() || d.scope.len() > MAX_LIST {
        return Err(("value/scope", format!("must name 1 to {MAX_LIST} tasks")));
    }
    if let Some(s) = d
        .scope
        .iter()
        .find(|s| s.trim().is_empty() || s.len() > MAX_SHORT_TEXT)
    {
        return Err(("value/scope", format!("{s:?} is not a task name")));
    }
    if d.until <= d.from {
        return Err(("value/until", "must be after from".into()));
    }
    if d.until.0.saturating_sub(d.from.0) > MAX_DELEGATION_MS {
        return Err(("value/until", "a delegation runs at most a year".into()));
    }
    Ok(())
}

/// One delegation as it stands, for lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationView {
    pub id: RecordId,
    /// The current value; in a conflict, every candidate's.
    pub candidates: Vec<(RecordId, Author, Timestamp, Delegation)>,
    pub version: u32,
}

impl DelegationView {
    pub fn in_conflict(&self) -> bool {
        self.candidates.len() > 1
    }
}

/// Every delegation in the person's header, by id.
pub fn delegations(chart: &Chart<'_>) -> Vec<DelegationView> {
    let Some(header) = chart.of_kind(DocKind::Patient).next() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for register in header.registers() {
        let Register::Delegation(id) = &register else {
            continue;
        };
        let heads = match header.register(&register) {
            RegisterState::Unset => continue,
            RegisterState::Value(v) => vec![v],
            RegisterState::Conflict(c) => c,
        };
        let version = heads.iter().map(|h| h.version).max().unwrap_or(1);
        let candidates = heads
            .into_iter()
            .filter_map(|h| match h.revision.value {
                RegisterValue::Delegation(d) => Some((h.id, h.revision.author, h.revision.at, d)),
                _ => None,
            })
            .collect();
        out.push(DelegationView {
            id: id.clone(),
            candidates,
            version,
        });
    }
    out
}

/// One day in milliseconds.
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

impl DelegationView {
    /// Whether this delegation ends within `days` of `now`: its current value (in a conflict,
    /// the first candidate's) is not revoked, still runs at `now`, and ends no later than
    /// `days` on. The one rule behind "delegations ending" lists (the device's, the web
    /// queue's), so the nurse sees the same list on the phone and in the browser.
    pub fn ends_within(&self, now: Timestamp, days: u32) -> bool {
        let horizon = now.0.saturating_add(i64::from(days).saturating_mul(DAY_MS));
        self.candidates
            .first()
            .is_some_and(|(.., d)| !d.revoked && d.until > now && d.until.0 <= horizon)
    }
}

/// The delegations in the person's header that end within `days` of `now`
/// ([`DelegationView::ends_within`]), the soonest end first.
pub fn ending_within(chart: &Chart<'_>, now: Timestamp, days: u32) -> Vec<DelegationView> {
    let mut out: Vec<DelegationView> = delegations(chart)
        .into_iter()
        .filter(|v| v.ends_within(now, days))
        .collect();
    out.sort_by_key(|v| (v.candidates.first().map(|(.., d)| d.until), v.id.clone()));
    out
}

/// The delegation that lets `user` do `task` at `at`, or why there is none.
pub fn valid_delegation(
    chart: &Chart<'_>,
    user: &UserId,
    task: &str,
    at: Timestamp,
) -> Result<RecordId, DelegationProblem> {
    let all = delegations(chart);
    let covering: Vec<&DelegationView> = all
        .iter()
        .filter(|v| {
            v.candidates
                .iter()
                .any(|(.., d)| d.scope.iter().any(|s| s == task))
        })
        .collect();
    let mine: Vec<&DelegationView> = covering
        .iter()
        .copied()
        .filter(|v| v.candidates.iter().any(|(.., d)| &d.to == user))
        .collect();
    if mine.is_empty() {
        let mut to: Vec<UserId> = covering
            .iter()
            .flat_map(|v| v.candidates.iter().map(|(.., d)| d.to.clone()))
            .collect();
        to.sort();
        to.dedup();
        return Err(if to.is_empty() {
            DelegationProblem::NoneRecorded
        } else {
            DelegationProblem::OtherWorkers { to }
        });
    }
    // The most telling problem if none is valid: conflict, revoked, expired, not yet.
    let mut problems = Vec::new();
    for v in mine {
        if v.in_conflict() {
            problems.push((
                0,
                DelegationProblem::InConflict {
                    delegation: v.id.clone(),
                },
            ));
            continue;
        }
        let Some((_, author, written, d)) = v.candidates.first() else {
            continue;
        };
        let until = if d.revoked {
            d.until.min(*written)
        } else {
            d.until
        };
        if d.from <= at && at < until {
            return Ok(v.id.clone());
        }
        problems.push(if d.revoked && at >= *written {
            (
                1,
                DelegationProblem::Revoked {
                    delegation: v.id.clone(),
                    at: *written,
                    by: author.user.clone(),
                },
            )
        } else if at >= until {
            (
                2,
                DelegationProblem::Expired {
                    delegation: v.id.clone(),
                    until,
                },
            )
        } else {
            (
                3,
                DelegationProblem::NotYetValid {
                    delegation: v.id.clone(),
                    from: d.from,
                },
            )
        });
    }
    problems.sort_by_key(|(rank, _)| *rank);
    Err(problems
        .into_iter()
        .next()
        .map(|(_, p)| p)
        .unwrap_or(DelegationProblem::NoneRecorded))
}

/// The no-delegation flags: every "given" dose of a delegated order version, recorded by a
/// carer, with no valid delegation at its time. Not decided (none raised) while the chart does
/// not hold the person's header, where delegations are.
pub(crate) fn flags(chart: &Chart<'_>) -> BTreeMap<String, RaisedFlag> {
    let mut raised = BTreeMap::new();
    if chart.of_kind(DocKind::Patient).next().is_none() {
        return raised;
    }
    let orders: Vec<_> = chart.of_kind(DocKind::MedicationRequest).collect();
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
        let delegated = orders.iter().any(|m| {
            m.revision(order_revision).is_some_and(
                |r| matches!(&r.value, RegisterValue::Order(o) if needs_delegation(o, &ev.author)),
            )
        });
        if !delegated {
            continue;
        }
        if valid_delegation(chart, &ev.author.user, MEDICATION, *occurred_at).is_ok() {
            continue;
        }
        raised.insert(
            format!("no-delegation/{id}"),
            (
                FlagKind::NoValidDelegation {
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

#[cfg(test)]
#[path = "delegation_tests.rs"]
mod tests;
