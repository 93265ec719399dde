//! The rules of one scheduled dose: the record's own (every replica refuses a record that
//! breaks them) and the order's schedule (the device refuses; a replica keeps such a record).
#![allow(clippy::unwrap_used)]

use super::*;
use crate::ModelError;
use crate::ids::{Role, Timestamp};
use crate::model::document::CareDocument;
use crate::model::records::{EventBody, PrnRule};
use crate::model::round::tests::{T0, World, author, rid};

fn order(times: &[&str], stop: Option<&str>) -> MedicationOrder {
    MedicationOrder {
        drug: "Metoprolol".into(),
        strength: "50 mg".into(),
        dose: "1 tablet".into(),
        route: "oral".into(),
        times: times.iter().map(|t| (*t).to_owned()).collect(),
        start: "2026-11-01".into(),
        stop: stop.map(str::to_owned),
        delegated: true,
        window_minutes: None,
        prn: None,
        valid_from: Timestamp(0),
    }
}

#[test]
fn a_slot_is_a_local_date_and_time_of_day() {
    assert_eq!(split_slot("2026-11-24T08:00"), Ok(("2026-11-24", "08:00")));
    for bad in [
        "2026-11-24 08:00",
        "2026-11-24T8:00",
        "2026-11-24T24:00",
        "2026-13-24T08:00",
        "08:00",
        "",
    ] {
        let err = split_slot(bad).unwrap_err();
        assert_eq!(
            err,
            DoseError::BadSlot {
                slot: bad.to_owned()
            }
        );
        assert_eq!(
            err.to_string(),
            format!("bad slot {bad:?}: expected YYYY-MM-DDTHH:MM")
        );
        assert!(check_record(bad, AdministrationOutcome::Given, None).is_err());
    }
}

#[test]
fn a_dose_not_given_needs_a_reason() {
    let slot = "2026-11-24T08:00";
    for reason in [None, Some(""), Some("   ")] {
        assert_eq!(
            check_record(slot, AdministrationOutcome::NotGiven, reason),
            Err(DoseError::NeedsReason)
        );
    }
    assert_eq!(
        check_record(slot, AdministrationOutcome::NotGiven, Some("asleep")),
        Ok(())
    );
    assert_eq!(
        check_record(slot, AdministrationOutcome::Given, None),
        Ok(())
    );
    assert_eq!(
        check_record(slot, AdministrationOutcome::SelfAdministered, None),
        Ok(())
    );
    assert_eq!(
        DoseError::NeedsReason.to_string(),
        "a dose not given needs a reason"
    );
}

#[test]
fn the_order_must_have_a_slot_at_that_time() {
    let o = order(&["08:00", "20:00"], None);
    assert_eq!(check_scheduled(&o, "2026-11-24T08:00"), Ok(()));
    assert_eq!(check_scheduled(&o, "2026-11-24T20:00"), Ok(()));
    let err = check_scheduled(&o, "2026-11-24T09:00").unwrap_err();
    assert_eq!(
        err,
        DoseError::NotAtThisTime {
            time: "09:00".into(),
            times: vec!["08:00".into(), "20:00".into()]
        }
    );
    assert_eq!(
        err.to_string(),
        "has no slot at 09:00; its times are 08:00, 20:00"
    );
    assert!(matches!(
        check_scheduled(&o, "2026-11-24 08:00"),
        Err(DoseError::BadSlot { .. })
    ));
}

#[test]
fn the_order_must_run_on_that_date() {
    let o = order(&["08:00"], Some("2026-11-30"));
    assert_eq!(check_scheduled(&o, "2026-11-01T08:00"), Ok(()));
    assert_eq!(check_scheduled(&o, "2026-11-30T08:00"), Ok(()));
    let before = check_scheduled(&o, "2026-10-31T08:00").unwrap_err();
    assert_eq!(
        before.to_string(),
        "does not run on 2026-10-31 (from 2026-11-01 to 2026-11-30)"
    );
    assert!(matches!(
        check_scheduled(&o, "2026-12-01T08:00"),
        Err(DoseError::NotOnThisDate { .. })
    ));
    let open_ended = order(&["08:00"], None);
    assert_eq!(check_scheduled(&open_ended, "2030-01-01T08:00"), Ok(()));
    assert_eq!(
        check_scheduled(&open_ended, "2026-10-31T08:00")
            .unwrap_err()
            .to_string(),
        "does not run on 2026-10-31 (from 2026-11-01)"
    );
}

#[test]
fn a_when_needed_order_schedules_no_slot() {
    let mut o = order(&[], None);
    o.prn = Some(PrnRule {
        max_per_day: 3,
        min_interval_minutes: 240,
        follow_up_minutes: 60,
    });
    assert_eq!(
        check_scheduled(&o, "2026-11-24T08:00"),
        Err(DoseError::WhenNeeded)
    );
}

/// The model's validation of every administration (local, received, loaded) runs the record's
/// rules: the same refusal on the device and on the server.
#[test]
fn validation_refuses_a_record_that_breaks_the_dose_rules() {
    let mut w = World::new();
    w.order("o-1", &["08:00"], None, None);
    let cara = author("cara", Role::Carer);
    let write = |log: &mut CareDocument, slot: &str, outcome, reason: Option<&str>| {
        log.change(&cara, Timestamp(T0 + 8 * 3_600_000), |e| {
            e.record(
                rid("a-x"),
                EventBody::Administration {
                    order: rid("o-1"),
                    order_revision: rid("r-o-1"),
                    slot: slot.into(),
                    outcome,
                    reason: reason.map(str::to_owned),
                    occurred_at: Timestamp(T0 + 8 * 3_600_000),
                },
            )
        })
        .map(|_| ())
    };
    let refused = |r: Result<(), ModelError>| match r {
        Err(ModelError::Invalid { path, reason, .. }) => (path, reason),
        other => panic!("not refused as invalid: {other:?}"),
    };
    let (path, reason) = refused(write(
        &mut w.log,
        "2026-11-24 08:00",
        AdministrationOutcome::Given,
        None,
    ));
    assert!(path.ends_with("body/slot"), "{path}");
    assert_eq!(
        reason,
        "bad slot \"2026-11-24 08:00\": expected YYYY-MM-DDTHH:MM"
    );
    let (path, reason) = refused(write(
        &mut w.log,
        "2026-11-24T08:00",
        AdministrationOutcome::NotGiven,
        Some("  "),
    ));
    assert!(path.ends_with("body/reason"), "{path}");
    assert_eq!(reason, "a dose not given needs a reason");
    assert!(w.log.events().is_empty());
}

/// A dose for a time its order does not schedule is refused by the device before it writes
/// (`check_scheduled`), but a replica that receives one keeps it: a clinical record is never
/// lost for the schedule it names.
#[test]
fn a_received_dose_its_order_does_not_schedule_is_kept() {
    let mut w = World::new();
    w.order("o-1", &["08:00"], None, None);
    let cara = author("cara", Role::Carer);
    let id = w.record(
        &cara,
        "o-1",
        "2026-11-24T09:00",
        AdministrationOutcome::Given,
        None,
        T0 + 9 * 3_600_000,
    );
    let mut server = CareDocument::new(w.log.id().clone()).unwrap();
    let outcome = server.apply_changes(w.log.changes_since(&[])).unwrap();
    assert!(outcome.refused.is_empty(), "{:?}", outcome.refused);
    assert!(server.events().contains_key(&id));
}
