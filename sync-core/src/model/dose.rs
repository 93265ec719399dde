//! The rules of one scheduled dose's record: its slot, its reason, and whether its order
//! schedules it. One place for them, used by every replica and by the device before it writes.
//!
//! - [`check_record`] (the slot is `YYYY-MM-DDTHH:MM`; a dose not given names a reason) needs
//!   nothing but the record: the model's validation runs it on every administration, local or
//!   received, so a record that breaks it is refused everywhere, the server included.
//! - [`check_scheduled`] (the order has a slot at that time, and runs on that date) needs the
//!   order, which lives in another document. The device refuses such a dose before writing it;
//!   one that still reaches a replica (an older app, an order revised meanwhile) is kept: a
//!   clinical record is never lost for the schedule it names. Pure: no clock.

use crate::model::records::{AdministrationOutcome, MedicationOrder, is_slot};

/// Why a dose cannot be recorded as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DoseError {
    /// The slot is not a local `YYYY-MM-DDTHH:MM`.
    #[error("bad slot {slot:?}: expected YYYY-MM-DDTHH:MM")]
    BadSlot { slot: String },
    /// A dose not given, without a reason (or with a blank one).
    #[error("a dose not given needs a reason")]
    NeedsReason,
    /// The order is "when needed": its doses have no scheduled slot.
    #[error("the order is \"when needed\": its doses have no scheduled slot")]
    WhenNeeded,
    /// The order has no slot at this time of day.
    #[error("has no slot at {time}; its times are {}", times.join(", "))]
    NotAtThisTime { time: String, times: Vec<String> },
    /// The order does not run on this date.
    #[error(
        "does not run on {date} (from {start}{})",
        stop.as_deref().map(|s| format!(" to {s}")).unwrap_or_default()
    )]
    NotOnThisDate {
        date: String,
        start: String,
        stop: Option<String>,
    },
}

/// The slot's date and time of day, if it is a local `YYYY-MM-DDTHH:MM`.
pub fn split_slot(slot: &str) -> Result<(&str, &str), DoseError> {
    match slot.split_once('T') {
        Some((date, time)) if is_slot(slot) => Ok((date, time)),
        _ => Err(DoseError::BadSlot {
            slot: slot.to_owned(),
        }),
    }
}

/// What one administration's record must hold whatever its order says: a well-formed slot and,
/// for a dose not given, a reason that is not blank.
pub fn check_record(
    slot: &str,
    outcome: AdministrationOutcome,
    reason: Option<&str>,
) -> Result<(), DoseError> {
    split_slot(slot)?;
    if outcome == AdministrationOutcome::NotGiven && reason.is_none_or(|r| r.trim().is_empty()) {
        return Err(DoseError::NeedsReason);
    }
    Ok(())
}

/// Whether `order` schedules a dose at `slot`: a scheduled (not "when needed") order with that
/// time of day, running on that date.
pub fn check_scheduled(order: &MedicationOrder, slot: &str) -> Result<(), DoseError> {
    let (date, time) = split_slot(slot)?;
    if order.prn.is_some() {
        return Err(DoseError::WhenNeeded);
    }
    if !order.times.iter().any(|t| t == time) {
        return Err(DoseError::NotAtThisTime {
            time: time.to_owned(),
            times: order.times.clone(),
        });
    }
    if !runs_on(order, date) {
        return Err(DoseError::NotOnThisDate {
            date: date.to_owned(),
            start: order.start.clone(),
            stop: order.stop.clone(),
        });
    }
    Ok(())
}

/// Whether `order` runs on `date` (`YYYY-MM-DD`): on or after its start, and not after its
/// stop.
pub fn runs_on(order: &MedicationOrder, date: &str) -> bool {
    date >= order.start.as_str() && order.stop.as_deref().is_none_or(|stop| date <= stop)
}

#[cfg(test)]
#[path = "dose_tests.rs"]
mod tests;
