//! Delegation validity: valid, expired, not yet, revoked, to another worker, in conflict; more
//! than a year refused; the no-delegation flag on a dose that arrives without one.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::ids::Role;
use crate::model::document::CareDocument;
use crate::model::round::tests::{DAY, HOUR, T0, World, author, rid};

fn to(user: &str, from: i64, until: i64) -> Delegation {
    Delegation {
        to: UserId::new(user).unwrap(),
        scope: vec![MEDICATION.into(), "insulin".into()],
        from: Timestamp(from),
        until: Timestamp(until),
        revoked: false,
    }
}

fn check_at(w: &World, user: &str, at: i64) -> Result<RecordId, DelegationProblem> {
    valid_delegation(
        &w.chart(),
        &UserId::new(user).unwrap(),
        MEDICATION,
        Timestamp(at),
    )
}

#[test]
fn a_delegation_is_valid_for_its_worker_within_its_dates() {
    let mut w = World::new();
    assert_eq!(
        check_at(&w, "cara", T0),
        Err(DelegationProblem::NoneRecorded)
    );
    w.delegate("del-1", to("cara", T0 - 30 * DAY, T0), T0 - 30 * DAY)
        .unwrap();
    assert_eq!(check_at(&w, "cara", T0 - HOUR), Ok(rid("del-1")));
    // Ended yesterday at midnight: a dose today is refused.
    assert_eq!(
        check_at(&w, "cara", T0 + 8 * HOUR),
        Err(DelegationProblem::Expired {
            delegation: rid("del-1"),
            until: Timestamp(T0)
        })
    );
    assert!(matches!(
        check_at(&w, "cara", T0 - 31 * DAY),
        Err(DelegationProblem::NotYetValid { .. })
    ));
    // The wrong person.
    assert_eq!(
        check_at(&w, "bo", T0 - HOUR),
        Err(DelegationProblem::OtherWorkers {
            to: vec![UserId::new("cara").unwrap()]
        })
    );
    // A task the delegation does not name.
    assert_eq!(
        valid_delegation(
            &w.chart(),
            &UserId::new("cara").unwrap(),
            "wound-care",
            Timestamp(T0 - HOUR)
        ),
        Err(DelegationProblem::NoneRecorded)
    );
}

#[test]
fn a_revoked_delegation_is_valid_until_its_revocation() {
    let mut w = World::new();
    w.delegate(
        "del-1",
        to("cara", T0 - 30 * DAY, T0 + 300 * DAY),
        T0 - 30 * DAY,
    )
    .unwrap();
    let mut revoked = to("cara", T0 - 30 * DAY, T0 + 300 * DAY);
    revoked.revoked = true;
    w.delegate("del-1", revoked, T0 + 12 * HOUR).unwrap();
    assert_eq!(check_at(&w, "cara", T0 + 11 * HOUR), Ok(rid("del-1")));
    assert!(matches!(
        check_at(&w, "cara", T0 + 13 * HOUR),
        Err(DelegationProblem::Revoked { ref by, .. }) if by.as_str() == "nina"
    ));
}

#[test]
fn more_than_a_year_or_no_scope_is_refused_by_the_model() {
    let mut w = World::new();
    let err = w
        .delegate("del-1", to("cara", T0, T0 + 367 * DAY), T0)
        .unwrap_err();
    assert!(err.to_string().contains("at most a year"), "{err}");
    let mut empty = to("cara", T0, T0 + DAY);
    empty.scope.clear();
    assert!(w.delegate("del-1", empty, T0).is_err());
    assert!(w.delegate("del-1", to("cara", T0, T0), T0).is_err());
    assert!(
        w.delegate("del-1", to("cara", T0, T0 + 365 * DAY), T0)
            .is_ok()
    );
}

#[test]
fn carers_may_not_write_delegations() {
    let mut w = World::new();
    let err = w
        .header
        .change(&author("cara", Role::Carer), Timestamp(T0), |e| {
            e.create(
                rid("d-x"),
                Register::Delegation(rid("del-x")),
                RegisterValue::Delegation(to("cara", T0, T0 + DAY)),
                None,
            )
        })
        .unwrap_err();
    assert!(
        matches!(err, crate::ModelError::NotPermitted { .. }),
        "{err}"
    );
}

#[test]
fn concurrent_changes_to_a_delegation_are_a_conflict_and_not_valid() {
    let mut w = World::new();
    w.delegate("del-1", to("cara", T0 - DAY, T0 + 30 * DAY), T0 - DAY)
        .unwrap();
    let saved = w.header.save();
    let mut other = CareDocument::load(w.header.id().clone(), Some(&saved), &[]).unwrap();
    let nurse = author("nina", Role::Nurse);
    let reg = Register::Delegation(rid("del-1"));
    w.header
        .change(&nurse, Timestamp(T0), |e| {
            e.update(
                rid("d-a"),
                reg.clone(),
                RegisterValue::Delegation(to("cara", T0 - DAY, T0 + 60 * DAY)),
            )
        })
        .unwrap();
    other
        .change(&author("nils", Role::Nurse), Timestamp(T0), |e| {
            e.update(
                rid("d-b"),
                reg.clone(),
                RegisterValue::Delegation(to("cara", T0 - DAY, T0 + 10 * DAY)),
            )
        })
        .unwrap();
    w.header.apply_changes(other.changes_since(&[])).unwrap();
    assert_eq!(
        check_at(&w, "cara", T0 + HOUR),
        Err(DelegationProblem::InConflict {
            delegation: rid("del-1")
        })
    );
}

#[test]
fn a_delegated_dose_without_a_delegation_is_kept_and_flagged() {
    let mut w = World::new();
    w.order("o-1", &["08:00", "20:00"], None, None);
    w.delegate("del-1", to("cara", T0 - 30 * DAY, T0), T0 - 30 * DAY)
        .unwrap();
    let cara = author("cara", Role::Carer);
    let ok = w.record(
        &cara,
        "o-1",
        "2026-11-23T20:00",
        AdministrationOutcome::Given,
        None,
        T0 - 4 * HOUR,
    );
    let late = w.record(
        &cara,
        "o-1",
        "2026-11-24T08:00",
        AdministrationOutcome::Given,
        None,
        T0 + 8 * HOUR,
    );
    // A nurse needs none.
    w.record(
        &author("nina", Role::Nurse),
        "o-1",
        "2026-11-24T20:00",
        AdministrationOutcome::Given,
        None,
        T0 + 20 * HOUR,
    );
    let flags = w.chart().flags();
    let ids: Vec<&str> = flags.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, vec![format!("no-delegation/{late}").as_str()]);
    assert_eq!(flags[0].evidence, vec![late]);
    assert!(w.log.events().contains_key(&ok));
    // Without the header (where delegations are) the chart cannot tell, and raises nothing.
    let p = w.p.clone();
    assert!(Chart::new(&p, [&w.meds, &w.log]).flags().is_empty());
}

#[test]
fn delegations_ending_within_a_number_of_days_leave_out_revoked_and_ended_ones() {
    let mut w = World::new();
    w.delegate(
        "del-soon",
        to("cara", T0 - 300 * DAY, T0 + 10 * DAY),
        T0 - 300 * DAY,
    )
    .unwrap();
    w.delegate("del-later", to("cara", T0 - DAY, T0 + 60 * DAY), T0 - DAY)
        .unwrap();
    w.delegate(
        "del-ended",
        to("dan", T0 - 30 * DAY, T0 - DAY),
        T0 - 30 * DAY,
    )
    .unwrap();
    w.delegate("del-next", to("dan", T0, T0 + 20 * DAY), T0)
        .unwrap();
    let mut revoked = to("eva", T0 - DAY, T0 + 5 * DAY);
    w.delegate("del-revoked", revoked.clone(), T0 - DAY)
        .unwrap();
    revoked.revoked = true;
    w.delegate("del-revoked", revoked, T0).unwrap();
    let ids = |days| {
        ending_within(&w.chart(), Timestamp(T0), days)
            .into_iter()
            .map(|v| v.id.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(30), ["del-soon", "del-next"], "soonest end first");
    assert_eq!(ids(15), ["del-soon"]);
    assert!(ids(5).is_empty());
}
