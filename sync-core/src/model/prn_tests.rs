//! "When needed" limits (per 24 hours, minimum interval) and follow-ups.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::ids::Role;
use crate::model::round::tests::{HOUR, MIN, T0, World, author, rid};

const RULE: PrnRule = PrnRule {
    max_per_day: 3,
    min_interval_minutes: 240,
    follow_up_minutes: 60,
};

fn slot(at: i64) -> String {
    crate::model::round::local_slot(Timestamp(at), 0)
}

#[test]
fn a_dose_too_soon_or_one_too_many_is_past_the_limits_and_flagged() {
    let mut w = World::new();
    w.order("o-p", &[], None, Some(RULE));
    let cara = author("cara", Role::Nurse);
    let o = rid("o-p");
    assert_eq!(
        check_dose(&w.chart(), &o, &RULE, Timestamp(T0 + 8 * HOUR)),
        Ok(())
    );
    let first = w.record(
        &cara,
        "o-p",
        &slot(T0 + 8 * HOUR),
        AdministrationOutcome::Given,
        None,
        T0 + 8 * HOUR,
    );
    // Two hours later: too soon.
    assert_eq!(
        check_dose(&w.chart(), &o, &RULE, Timestamp(T0 + 10 * HOUR)),
        Err(PrnProblem::TooSoon {
            last: Timestamp(T0 + 8 * HOUR),
            next: Timestamp(T0 + 12 * HOUR)
        })
    );
    // Given anyway (with a reason): kept, and flagged.
    let anyway = w.record(
        &cara,
        "o-p",
        &slot(T0 + 10 * HOUR),
        AdministrationOutcome::Given,
        Some("severe pain"),
        T0 + 10 * HOUR,
    );
    w.record(
        &cara,
        "o-p",
        &slot(T0 + 15 * HOUR),
        AdministrationOutcome::Given,
        None,
        T0 + 15 * HOUR,
    );
    // Three in 24 hours: a fourth is one too many, whatever the interval.
    assert_eq!(
        check_dose(&w.chart(), &o, &RULE, Timestamp(T0 + 20 * HOUR)),
        Err(PrnProblem::TooMany {
            given: 3,
            max_per_day: 3
        })
    );
    // 24 hours after the first, it no longer counts.
    assert_eq!(
        check_dose(&w.chart(), &o, &RULE, Timestamp(T0 + 32 * HOUR + MIN)),
        Ok(())
    );
    let flags: Vec<String> = w.chart().flags().into_iter().map(|f| f.id).collect();
    assert_eq!(flags, vec![format!("prn-limit/{anyway}")]);
    assert!(w.log.events().contains_key(&first));
}

#[test]
fn each_dose_opens_a_follow_up_that_is_flagged_when_late() {
    let mut w = World::new();
    w.order("o-p", &[], None, Some(RULE));
    let cara = author("cara", Role::Carer);
    let a = w.record(
        &author("nina", Role::Nurse),
        "o-p",
        &slot(T0 + 8 * HOUR),
        AdministrationOutcome::Given,
        None,
        T0 + 8 * HOUR,
    );
    let b = w.record(
        &author("nina", Role::Nurse),
        "o-p",
        &slot(T0 + 13 * HOUR),
        AdministrationOutcome::Given,
        None,
        T0 + 13 * HOUR,
    );
    let now = Timestamp(T0 + 13 * HOUR + 30 * MIN);
    let f = follow_ups(&w.chart(), now);
    assert_eq!(f.len(), 2);
    assert_eq!(
        (f[0].administration.clone(), f[0].due, f[0].overdue),
        (a.clone(), Timestamp(T0 + 9 * HOUR), true)
    );
    assert!(!f[1].overdue, "due at 14:00");
    let flags = crate::model::round::timed_flags(&w.chart(), now, 0, &[]);
    assert_eq!(
        flags.iter().map(|f| f.id.clone()).collect::<Vec<_>>(),
        vec![format!("follow-up/{a}")]
    );
    // Recording the effect (a carer may) ends it.
    w.effect(&cara, &a, now.0);
    let f = follow_ups(&w.chart(), Timestamp(T0 + 15 * HOUR));
    assert!(
        f[0].effect
            .as_ref()
            .is_some_and(|(_, e, _)| *e == DoseEffect::Good)
    );
    assert!(!f[0].overdue);
    assert!(f[1].overdue && f[1].administration == b);
}

#[test]
fn an_effect_must_name_an_administration_of_its_log() {
    let mut w = World::new();
    let err = w
        .log
        .change(&author("cara", Role::Carer), Timestamp(T0), |e| {
            e.record(
                rid("e-x"),
                EventBody::Effect {
                    administration: rid("nope"),
                    effect: DoseEffect::None,
                    note: None,
                    occurred_at: Timestamp(T0),
                },
            )
        })
        .unwrap_err();
    assert!(err.to_string().contains("no administration"), "{err}");
}

#[test]
fn two_doses_in_one_minute_are_past_the_interval_not_a_double_dose() {
    let mut w = World::new();
    w.order("o-p", &[], None, Some(RULE));
    let nina = author("nina", Role::Nurse);
    let at = T0 + 8 * HOUR;
    w.record(
        &nina,
        "o-p",
        &slot(at),
        AdministrationOutcome::Given,
        None,
        at,
    );
    let again = w.record(
        &nina,
        "o-p",
        &slot(at),
        AdministrationOutcome::Given,
        Some("x"),
        at,
    );
    let flags: Vec<String> = w.chart().flags().into_iter().map(|f| f.id).collect();
    assert_eq!(flags, vec![format!("prn-limit/{again}")]);
}
