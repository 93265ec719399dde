//! What a command prints for people (without `--json`): sentences a nurse reads, with names,
//! drugs and doses, local dates and times; never raw JSON or epoch milliseconds. Sync reports,
//! status, the clock warning, written records, alerts, corrections and a person's overview.

use sync_core::PatientId;
use sync_core::model::{
    AllergyStatus, Criticality, Delegation, EventBody, MedicationOrder, ObservationCode, PrnRule,
    RegisterValue, ResuscitationDecision,
};

use super::*;

pub(crate) fn written(
    device: &Device,
    r: &care::Recorded,
    human: String,
) -> anyhow::Result<Output> {
    let mut json = to_json(r)?;
    json["pending"] = json!(device.pending_count()?);
    Ok(Output { json, human })
}

pub(crate) fn order_written(device: &Device, w: &care::OrderWritten) -> anyhow::Result<Output> {
    let human = format!(
        "Order {} {}: {}; version {}",
        w.order,
        if w.created { "written" } else { "revised" },
        order_sentence(&w.value),
        w.version,
    );
    let mut json = to_json(w)?;
    json["pending"] = json!(device.pending_count()?);
    Ok(Output { json, human })
}

pub(crate) fn report_human(ctx: &Ctx, device: &Device, r: &SyncReport) -> String {
    let mut lines = vec![format!(
        "received {}, uploaded {}; {} waiting for upload",
        count(r.received, "change"),
        r.uploaded,
        r.pending
    )];
    for c in &r.conflicts_raised {
        lines.push(format!(
            "CONFLICT: {} of {}; a nurse resolves it (`nara conflicts`)",
            register_words(device, c.document.patient(), &c.register),
            patient_name(device, c.document.patient()),
        ));
    }
    for f in &r.flags_raised {
        lines.push(format!(
            "FLAG for {}: {} (`nara flags`)",
            patient_name(device, &f.patient),
            f.flag
        ));
    }
    for q in &r.refused {
        lines.push(format!(
            "REFUSED by the server ({:?}): a change to {}: {}",
            q.code, q.doc, q.detail
        ));
    }
    for i in &r.incoming_refused {
        lines.push(format!(
            "refused from the server: a change to {}: {}",
            i.document, i.detail
        ));
    }
    if !r.withdrawn.is_empty() {
        let names: Vec<String> = r.withdrawn.iter().map(ToString::to_string).collect();
        lines.push(format!("no longer on your case: {}", names.join(", ")));
    }
    if let Some(n) = r.reincarnated {
        lines.push(format!(
            "RESTORED OR COPIED: this phone's data was behind the server (a backup put back, or \
             copied from another phone); it goes on as incarnation {n}, and what it had not \
             uploaded is written again"
        ));
    }
    if r.rewritten > 0 {
        lines.push(format!("{} records written again", r.rewritten));
    }
    for i in &r.rewrite_refused {
        lines.push(format!(
            "NOT WRITTEN AGAIN: a record of {}: {}",
            i.document, i.detail
        ));
    }
    if let Some(at) = r.in_sync_at {
        lines.push(format!("in sync at {}", ctx.when(at)));
    }
    if let Some(offset) = r.clock_offset_ms.filter(|_| r.clock_off) {
        lines.push(clock_warning(offset).trim_start_matches("; ").to_owned());
    }
    lines.join("\n")
}

/// `1 change`, `2 changes`.
pub(crate) fn count(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// "; CLOCK OFF: ..." for a device clock more than 5 minutes off the server's.
pub(crate) fn clock_warning(offset_ms: i64) -> String {
    let minutes = offset_ms.unsigned_abs() / 60_000;
    let side = if offset_ms > 0 { "behind" } else { "ahead of" };
    format!(
        "; CLOCK OFF: this device's clock is {}h{:02}m {side} the server's (times it records are flagged for review)",
        minutes / 60,
        minutes % 60
    )
}

pub(crate) fn status_human(ctx: &Ctx, s: &Status, pending: usize) -> String {
    match s {
        Status::Offline { clock_off_by_ms } => {
            let clock = clock_off_by_ms.map(clock_warning).unwrap_or_default();
            format!("offline; {pending} changes waiting{clock}")
        }
        Status::Connecting => "connecting...".into(),
        Status::Syncing {
            received,
            remaining,
        } => format!("syncing {received} of {}", received + u64::from(*remaining)),
        Status::InSync {
            at,
            clock_off_by_ms,
        } => {
            let clock = clock_off_by_ms.map(clock_warning).unwrap_or_default();
            format!(
                "in sync at {}; {pending} changes waiting{clock}",
                ctx.when(*at)
            )
        }
        Status::Error { reason } => format!("error: {reason}; {pending} changes waiting"),
        Status::Wiped { .. } => "revoked by the server: this device's data was erased".into(),
    }
}

/// A register as words: `order/metoprolol` as `the order of Metoprolol 50 mg (metoprolol)`.
pub(crate) fn register_words(device: &Device, patient: &PatientId, register: &str) -> String {
    match register.split_once('/') {
        Some(("order", id)) => format!("the order of {}", order_name(device, patient, id)),
        Some((kind, id)) => format!("the {} {id}", kind.replace('-', " ")),
        None => format!("the {}", register.replace('-', " ")),
    }
}

/// An order as words: `Metoprolol 50 mg (metoprolol)`, or its id if this device holds none.
pub(crate) fn order_name(device: &Device, patient: &PatientId, order: &str) -> String {
    match care::order_names(device, patient)
        .ok()
        .and_then(|names| names.into_iter().find(|(id, _)| id.as_str() == order))
    {
        Some((_, name)) => format!("{name} ({order})"),
        None => order.to_owned(),
    }
}

/// `Dagny Berg (p-17)`, or the id alone if this device holds no name.
pub(crate) fn patient_name(device: &Device, patient: &PatientId) -> String {
    match care::name_of(device, patient) {
        Ok(Some(name)) => format!("{name} ({patient})"),
        _ => patient.to_string(),
    }
}

pub(crate) fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// `08:00`, `08:00 and 20:00`, `08:00, 12:00 and 20:00`.
pub(crate) fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

pub(crate) fn route_words(route: &str) -> String {
    match route.trim().to_lowercase().as_str() {
        "oral" | "po" | "by mouth" => "by mouth".into(),
        "sc" | "subcutaneous" => "under the skin".into(),
        "iv" | "intravenous" => "into a vein".into(),
        "im" | "intramuscular" => "into a muscle".into(),
        "topical" | "cutaneous" => "on the skin".into(),
        "inhaled" | "inhalation" => "inhaled".into(),
        "rectal" => "rectally".into(),
        other => format!("({other})"),
    }
}

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
fn prn_words(rule: &PrnRule) -> String {
    let hours = f64::from(rule.min_interval_minutes) / 60.0;
    format!(
        "when needed, at most {} a day, at least {hours} hours apart, effect followed up after {} minutes",
        rule.max_per_day, rule.follow_up_minutes
    )
}

/// A delegation as words: to whom, what, from and until when (dates in UTC; the round's
/// commands print them in local time).
fn delegation_words(ctx: &Ctx, d: &Delegation) -> String {
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

pub(crate) const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `2026-11-24` as `24 Nov 2026`; anything else as it is.
pub(crate) fn day(date: &str) -> String {
    let parts: Vec<&str> = date.split('-').collect();
    match parts.as_slice() {
        [y, m, d] => match (m.parse::<usize>(), d.parse::<u8>()) {
            (Ok(m @ 1..=12), Ok(d)) => format!("{d} {} {y}", MONTHS[m - 1]),
            _ => date.to_owned(),
        },
        _ => date.to_owned(),
    }
}

/// A slot `2026-11-24T08:00` as `24 Nov 2026 08:00`.
pub(crate) fn slot_words(slot: &str) -> String {
    match slot.split_once('T') {
        Some((d, t)) => format!("{} {t}", day(d)),
        None => slot.to_owned(),
    }
}

fn criticality_words(c: Criticality) -> &'static str {
    match c {
        Criticality::Low => "low criticality",
        Criticality::High => "HIGH criticality",
        Criticality::UnableToAssess => "criticality not assessed",
    }
}

pub(crate) fn allergy_status_word(s: AllergyStatus) -> &'static str {
    match s {
        AllergyStatus::Active => "active",
        AllergyStatus::Inactive => "inactive",
        AllergyStatus::Resolved => "resolved",
        AllergyStatus::Refuted => "refuted",
        AllergyStatus::EnteredInError => "entered in error",
    }
}

/// A register's value as words: an order, an allergy, the resuscitation decision, ...
pub(crate) fn value_sentence(ctx: &Ctx, v: &RegisterValue) -> String {
    match v {
        RegisterValue::Order(o) => order_sentence(o),
        RegisterValue::DisplayName { name } => name.clone(),
        RegisterValue::Delegation(d) => delegation_words(ctx, d),
        RegisterValue::Resuscitation { decision, comment } => {
            let d = match decision {
                ResuscitationDecision::Attempt => "attempt resuscitation",
                ResuscitationDecision::DoNotAttempt => "DO NOT attempt resuscitation",
            };
            match comment {
                Some(c) => format!("{d} ({c})"),
                None => d.into(),
            }
        }
        RegisterValue::Allergy {
            substance,
            criticality,
            reaction,
            ..
        } => {
            let mut s = format!(
                "allergy to {substance}, {}",
                criticality_words(*criticality)
            );
            if let Some(r) = reaction {
                s.push_str(&format!(", reaction: {r}"));
            }
            s
        }
        RegisterValue::Risk {
            description,
            active,
        } => format!(
            "{description}{}",
            if *active { "" } else { " (no longer a risk)" }
        ),
        RegisterValue::Responsibility {
            organisation,
            person,
        } => match person {
            Some(p) => format!("{p}, {organisation}"),
            None => organisation.clone(),
        },
        RegisterValue::FollowUp { date } => format!("follow-up on {}", day(date)),
        RegisterValue::Participant {
            name,
            organisation,
            role,
            active,
        } => format!(
            "{name}, {role} at {organisation}{}",
            if *active {
                ""
            } else {
                " (no longer taking part)"
            }
        ),
        RegisterValue::Goal { title, status } => format!("{title} ({})", kebab(status)),
        RegisterValue::Intervention { title, status, .. } => {
            format!("{title} ({})", kebab(status))
        }
    }
}

/// A serde enum's kebab-case name as words (`not-started` as `not started`).
fn kebab(v: &impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(|s| s.replace('-', " ")))
        .unwrap_or_default()
}

fn observation_words(code: ObservationCode) -> &'static str {
    match code {
        ObservationCode::BodyWeight => "weight",
        ObservationCode::BloodPressureSystolic => "blood pressure (systolic)",
        ObservationCode::BloodPressureDiastolic => "blood pressure (diastolic)",
        ObservationCode::BodyTemperature => "temperature",
        ObservationCode::HeartRate => "heart rate",
        ObservationCode::OxygenSaturation => "oxygen saturation",
        ObservationCode::BloodGlucose => "blood glucose",
        ObservationCode::Pain => "pain",
    }
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

/// An event as words: a note's text, an observation, a dose, ...
pub(crate) fn event_sentence(ctx: &Ctx, body: &EventBody) -> String {
    match body {
        EventBody::Note { body, corrects } => match corrects {
            Some(r) => format!("{body} (corrects {})", r.record),
            None => body.clone(),
        },
        EventBody::Observation {
            code,
            value,
            unit,
            occurred_at,
        } => format!(
            "{} {value} {unit} at {}",
            observation_words(*code),
            ctx.when(*occurred_at)
        ),
        EventBody::Administration {
            order,
            slot,
            outcome,
            reason,
            ..
        } => dose_sentence(order.as_str(), *outcome, slot, reason.as_deref()),
        EventBody::Effect {
            administration,
            effect,
            note,
            ..
        } => format!(
            "effect of dose {administration}: {}{}",
            kebab(effect),
            note.as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        ),
        EventBody::WhatMatters { text } => format!("what matters to me: \"{text}\""),
        EventBody::FlagAcknowledgement { flag, comment, .. } => match comment {
            Some(c) => format!("flag {flag} reviewed: {c}"),
            None => format!("flag {flag} reviewed"),
        },
        EventBody::VisitStart { occurred_at, .. } => {
            format!("visit started at {}", ctx.when(*occurred_at))
        }
        EventBody::VisitStop { occurred_at, .. } => {
            format!("visit ended at {}", ctx.when(*occurred_at))
        }
        EventBody::TaskOutcome {
            task, done, reason, ..
        } => format!(
            "{task}: {}{}",
            if *done { "done" } else { "not done" },
            reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        EventBody::EnteredInError { target, reason } => {
            format!("marked {target} entered in error: {reason}")
        }
    }
}

/// `version 3 by Nina Berg, 24 Nov 09:12`
fn by(ctx: &Ctx, v: &care::RevisionShown) -> String {
    format!(
        "version {} by {}, {}",
        v.version,
        ctx.who(&v.author.user),
        ctx.when(v.at)
    )
}

/// A register's state as a line: its value, or every value in conflict.
pub(crate) fn register_sentence(ctx: &Ctx, r: &care::RegisterShown) -> String {
    use care::RegisterShown;
    match r {
        RegisterShown::Unset => "not recorded".into(),
        RegisterShown::Value(v) => format!("{}; {}", value_sentence(ctx, &v.value), by(ctx, v)),
        RegisterShown::Conflict { candidates } => format!(
            "IN CONFLICT, a nurse resolves it: {}",
            candidates
                .iter()
                .map(|c| format!(
                    "{} ({}, revision {})",
                    value_sentence(ctx, &c.value),
                    by(ctx, c),
                    c.revision
                ))
                .collect::<Vec<_>>()
                .join(" | ")
        ),
    }
}

fn allergy_line(ctx: &Ctx, e: &care::EntityShown) -> String {
    use care::RegisterShown;
    let status = match &e.value {
        RegisterShown::Value(v) => match &v.value {
            RegisterValue::Allergy { status, .. } if *status != AllergyStatus::Active => {
                format!(" [{}]", allergy_status_word(*status))
            }
            _ => String::new(),
        },
        _ => String::new(),
    };
    format!("{}{status}", capitalise(&register_sentence(ctx, &e.value)))
}

pub(crate) fn flag_sentence(
    ctx: &Ctx,
    f: &care::FlagShown,
    drug: &dyn Fn(&str) -> String,
) -> String {
    let what = match f.kind {
        "double-dose" => format!(
            "Possible double dose: {} at {}, {} records",
            drug(f.order.as_str()),
            f.slot.as_deref().map(slot_words).unwrap_or_default(),
            f.evidence.len()
        ),
        "superseded-order" => format!(
            "A dose of {} was given on an order version already replaced",
            drug(f.order.as_str())
        ),
        "time-uncertain" => format!(
            "Time uncertain, review: a dose of {} may have been given on a replaced order version \
             (a phone's clock was off)",
            drug(f.order.as_str())
        ),
        "overdue" => format!(
            "Overdue: {} at {}, nothing recorded",
            drug(f.order.as_str()),
            f.slot.as_deref().map(slot_words).unwrap_or_default()
        ),
        "follow-up" => format!(
            "Follow-up overdue: the effect of a \"when needed\" dose of {} is not recorded",
            drug(f.order.as_str())
        ),
        "no-delegation" => format!(
            "A dose of {} was given without a valid delegation",
            drug(f.order.as_str())
        ),
        "prn-limit" => format!(
            "A \"when needed\" dose of {} was given past the order's limits",
            drug(f.order.as_str())
        ),
        other => format!("{other} flag on {}", drug(f.order.as_str())),
    };
    let state = if f.open {
        "OPEN".to_owned()
    } else {
        match f.acknowledgements.last() {
            Some(a) => format!(
                "reviewed by {}, {}",
                ctx.who(&a.author.user),
                ctx.when(a.at)
            ),
            None => "reviewed".into(),
        }
    };
    format!("{what} ({state}; flag {})", f.id)
}

/// The person's own words ("what matters to me"), each with who wrote it; appended to `show`.
pub(crate) fn what_matters_human(ctx: &Ctx, entries: &[care::WhatMattersShown]) -> String {
    if entries.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nwhat matters to me (the person's own words):\n");
    for e in entries {
        out.push_str(&format!(
            "  \"{}\" (written by {} as {})\n",
            e.text,
            ctx.who(&e.author.user),
            e.author.role.as_str()
        ));
    }
    out
}

pub(crate) fn show_human(ctx: &Ctx, o: &care::Overview) -> anyhow::Result<String> {
    use care::RegisterShown;
    let drug = |order: &str| -> String {
        o.orders
            .iter()
            .find(|e| e.id.as_str() == order)
            .and_then(|e| match &e.value {
                RegisterShown::Value(v) => match &v.value {
                    RegisterValue::Order(m) => Some(format!("{} {}", m.drug, m.strength)),
                    _ => None,
                },
                RegisterShown::Conflict { candidates } => {
                    candidates.first().and_then(|c| match &c.value {
                        RegisterValue::Order(m) => Some(format!("{} {}", m.drug, m.strength)),
                        _ => None,
                    })
                }
                RegisterShown::Unset => None,
            })
            .unwrap_or_else(|| order.to_owned())
    };
    let mut l = vec![match &o.display_name {
        Some(n) => format!("{n} ({})", o.patient),
        None => format!("{} (no name on this device)", o.patient),
    }];
    l.push(format!(
        "Resuscitation: {}",
        register_sentence(ctx, &o.resuscitation)
    ));
    l.push("Allergies:".into());
    if o.allergies.is_empty() {
        l.push("  none recorded".into());
    }
    for e in &o.allergies {
        l.push(format!("  {}", allergy_line(ctx, e)));
    }
    for (title, list) in [
        ("Risks", &o.risks),
        ("Goals", &o.goals),
        ("Interventions", &o.interventions),
    ] {
        if list.is_empty() {
            continue;
        }
        l.push(format!("{title}:"));
        for e in list {
            l.push(format!(
                "  {}",
                capitalise(&register_sentence(ctx, &e.value))
            ));
            if let Some(text) = e.text.as_deref().filter(|t| !t.is_empty()) {
                l.push(format!("    {text}"));
            }
        }
    }
    if !o.orders.is_empty() {
        l.push("Medication:".into());
        for e in &o.orders {
            l.push(format!(
                "  {} (order {})",
                register_sentence(ctx, &e.value),
                e.id
            ));
            if let Some(text) = e.text.as_deref().filter(|t| !t.is_empty()) {
                l.push(format!("    {text}"));
            }
        }
    }
    if !o.today.is_empty() {
        l.push("Today:".into());
        for s in &o.today {
            // The signing list's status, in the signing list's words.
            let time = s.slot.split_once('T').map(|(_, t)| t).unwrap_or(&s.slot);
            l.push(format!(
                "  {time} {} {}: {}",
                s.drug,
                s.strength,
                crate::round::status_text(ctx, s)
            ));
        }
    }
    if !o.open_flags.is_empty() {
        l.push("OPEN FLAGS:".into());
        for f in &o.open_flags {
            l.push(format!("  {}", flag_sentence(ctx, f, &drug)));
        }
    }
    if !o.conflicts.is_empty() {
        l.push(format!(
            "{} value(s) in conflict: see `nara conflicts`",
            o.conflicts.len()
        ));
    }
    if !o.journal.is_empty() {
        l.push("Journal:".into());
        for j in &o.journal {
            l.push(format!(
                "  {} {}: {}",
                ctx.when(j.at),
                ctx.who(&j.author.user),
                event_sentence(ctx, &j.body)
            ));
            if j.entered_in_error {
                for m in &j.marks {
                    l.push(format!(
                        "    ENTERED IN ERROR: {} ({}, {})",
                        m.reason,
                        ctx.who(&m.author.user),
                        ctx.when(m.at)
                    ));
                }
            }
        }
    }
    Ok(l.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_read_as_a_nurse_writes_them() {
        let o = MedicationOrder {
            drug: "Metoprolol".into(),
            strength: "50 mg".into(),
            dose: "1 tablet".into(),
            route: "oral".into(),
            times: vec!["08:00".into(), "20:00".into()],
            start: "2026-11-24".into(),
            stop: None,
            delegated: false,
            window_minutes: None,
            prn: None,
            valid_from: sync_core::Timestamp(0),
        };
        assert_eq!(
            order_sentence(&o),
            "Metoprolol 50 mg, 1 tablet by mouth at 08:00 and 20:00, from 24 Nov 2026"
        );
        assert_eq!(
            and_list(&["a".into(), "b".into(), "c".into()]),
            "a, b and c"
        );
        assert_eq!(slot_words("2026-11-24T08:00"), "24 Nov 2026 08:00");
        assert_eq!(day("not a date"), "not a date");
        assert_eq!(capitalise("allergy"), "Allergy");
        let prn = MedicationOrder {
            drug: "Paracetamol".into(),
            strength: "500 mg".into(),
            dose: "2 tablets".into(),
            times: vec![],
            prn: Some(PrnRule {
                max_per_day: 4,
                min_interval_minutes: 360,
                follow_up_minutes: 60,
            }),
            ..o
        };
        assert_eq!(
            order_sentence(&prn),
            "Paracetamol 500 mg, 2 tablets by mouth when needed, at most 4 a day, at least 6 hours \
             apart, effect followed up after 60 minutes, from 24 Nov 2026"
        );
        let d = Delegation {
            to: sync_core::UserId::new("anna").unwrap(),
            scope: vec!["medication".into(), "insulin".into()],
            from: sync_core::Timestamp(1_795_996_800_000), // 30 Nov 2026 00:00 UTC
            until: sync_core::Timestamp(1_796_083_200_000), // 1 Dec 2026 00:00 UTC
            revoked: true,
        };
        let ctx = Ctx {
            offset: time::UtcOffset::UTC,
            json: false,
            staff: Default::default(),
        };
        let revoked = RegisterValue::Delegation(d);
        assert_eq!(
            value_sentence(&ctx, &revoked),
            "delegation to anna for medication and insulin, from 30 Nov 2026 until 30 Nov 2026 \
             (revoked)"
        );
        // With the directory's name of the member of staff, the name.
        *ctx.staff.borrow_mut() = nara_client::StaffNames::new([nara_client::StaffMember {
            user: sync_core::UserId::new("anna").unwrap(),
            name: "Anna Lind".into(),
            role: "carer".into(),
            organisation: "Hemtjänst Norr".into(),
        }]);
        assert!(value_sentence(&ctx, &revoked).starts_with("delegation to Anna Lind for"));
    }
}
