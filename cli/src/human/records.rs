//! A record as a sentence: a register's value (with its version and author, or its conflict)
//! and an event (a note, an observation, a dose, a visit, a correction).

use sync_core::model::{
    AllergyStatus, Criticality, EventBody, ObservationCode, RegisterValue, ResuscitationDecision,
};

use super::*;

pub(super) fn criticality_words(c: Criticality) -> &'static str {
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

pub(super) fn observation_words(code: ObservationCode) -> &'static str {
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
pub(super) fn by(ctx: &Ctx, v: &care::RevisionShown) -> String {
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
