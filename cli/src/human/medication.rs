//! Orders, "when needed" limits, delegations and doses as sentences.

use sync_core::model::{Delegation, MedicationOrder, PrnRule};

use super::*;

/// `Metoprolol 50 mg, 1 tablet by mouth at 08:00 and 20:00`, with its days and delegation.
pub(crate) fn order_sentence(o: &MedicationOrder) -> String {
    let mut s = format!(
        "{} {}, {} {} ",
        o.drug,
        o.strength,
        o.dose,
        route_words(&o.route),
    );
    match &o.prn {
        Some(rule) => s.push_str(&prn_words(rule)),
        None => s.push_str(&format!("at {}", and_list(&o.times))),
    }
    if let Some(w) = o.window_minutes {
        s.push_str(&format!(" (on time within {w} minutes)"));
    }
    s.push_str(&format!(", from {}", day(&o.start)));
    if let Some(stop) = &o.stop {
        s.push_str(&format!(" until {}", day(stop)));
    }
    if o.delegated {
        s.push_str(" (delegated)");
    }
    s
}

/// A "when needed" order's limits as words.
pub(super) fn prn_words(rule: &PrnRule) -> String {
    let hours = f64::from(rule.min_interval_minutes) / 60.0;
    format!(
        "when needed, at most {} a day, at least {hours} hours apart, effect followed up after {} minutes",
        rule.max_per_day, rule.follow_up_minutes
    )
}

/// A delegation as words: to whom, what, from and until when (dates in UTC; the round's
/// commands print them in local time).
pub(super) fn delegation_words(ctx: &Ctx, d: &Delegation) -> String {
    let date = |ms: i64| {
        time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
            .map(|t| {
                format!(
                    "{} {} {}",
                    t.day(),
                    MONTHS[usize::from(u8::from(t.month())) - 1],
                    t.year()
                )
            })
            .unwrap_or_else(|_| format!("{ms} ms"))
    };
    format!(
        "delegation to {} for {}, from {} until {}{}",
        ctx.who(&d.to),
        and_list(&d.scope),
        date(d.from.0),
        date(d.until.0 - 1),
        if d.revoked { " (revoked)" } else { "" }
    )
}

/// `Metoprolol 50 mg given for 24 Nov 2026 08:00` (`what` the drug, or the order's id).
pub(crate) fn dose_sentence(
    what: &str,
    outcome: sync_core::model::AdministrationOutcome,
    slot: &str,
    reason: Option<&str>,
) -> String {
    use sync_core::model::AdministrationOutcome as O;
    let done = match outcome {
        O::Given => "given",
        O::NotGiven => "not given",
        O::SelfAdministered => "self-administered",
    };
    let mut s = format!("{what} {done} for {}", slot_words(slot));
    if let Some(r) = reason {
        s.push_str(&format!(" ({r})"));
    }
    s
}
