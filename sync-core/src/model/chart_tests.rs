//! The given-on-superseded-order flag where clocks are off: causality first, then time, and
//! "time uncertain, review" where only a clock known to be off could decide.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::ids::{DeviceId, Role, UserId};
use crate::model::records::{MedicationOrder, WriteContext};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// 2026-11-24 00:00 UTC.
const T0: i64 = 1_795_478_400_000;

fn author(user: &str, role: Role) -> Author {
    Author::new(
        UserId::new(user).unwrap(),
        role,
        DeviceId::new(format!("{user}-phone")).unwrap(),
    )
}

fn rid(s: &str) -> RecordId {
    RecordId::new(s).unwrap()
}

fn order(dose: &str, valid_from: i64) -> RegisterValue {
    RegisterValue::Order(MedicationOrder {
        drug: "Metoprolol".into(),
        strength: "50 mg".into(),
        dose: dose.into(),
        route: "oral".into(),
        times: vec!["08:00".into(), "20:00".into()],
        start: "2026-11-01".into(),
        stop: None,
        delegated: true,
        window_minutes: None,
        prn: None,
        valid_from: Timestamp(valid_from),
    })
}

fn context(offset: Option<i64>, after: &[&str]) -> WriteContext {
    WriteContext {
        clock_offset_ms: offset,
        after: after.iter().map(|s| rid(s)).collect(),
    }
}

struct Case {
    meds: CareDocument,
    log: CareDocument,
}

impl Case {
    /// Order `o-1`, version `r-1` valid from T0, then version `r-2` (dose 2 tablets) valid from
    /// T0 + 10 h, written by a nurse with `v2` as context.
    fn new(v2: WriteContext) -> Self {
        let p = PatientId::new("p-1").unwrap();
        let nurse = author("nina", Role::Nurse);
        let mut meds = CareDocument::new(DocumentId::medication(&p)).unwrap();
        let reg = Register::Order(rid("o-1"));
        meds.change(&nurse, Timestamp(T0), |e| {
            e.create(rid("r-1"), reg.clone(), order("1 tablet", T0), None)
        })
        .unwrap();
        meds.change(&nurse, Timestamp(T0 + 10 * HOUR), |e| {
            e.set_context(v2);
            e.update(rid("r-2"), reg.clone(), order("2 tablets", T0 + 10 * HOUR))
        })
        .unwrap();
        let log =
            CareDocument::new(DocumentId::administrations(&p, "2026-11".parse().unwrap())).unwrap();
        Self { meds, log }
    }

    /// Carer gives dose `a-1` on version `r-1`, at `at` by her clock, with `ctx`.
    fn give(&mut self, at: i64, ctx: WriteContext) {
        let carer = author("cara", Role::Carer);
        self.log
            .change(&carer, Timestamp(at), |e| {
                e.set_context(ctx);
                e.record(
                    rid("a-1"),
                    EventBody::Administration {
                        order: rid("o-1"),
                        order_revision: rid("r-1"),
                        slot: "2026-11-24T20:00".into(),
                        outcome: AdministrationOutcome::Given,
                        reason: None,
                        occurred_at: Timestamp(at),
                    },
                )
            })
            .unwrap();
    }

    fn flags(&self) -> Vec<(String, bool)> {
        let p = PatientId::new("p-1").unwrap();
        Chart::new(&p, [&self.meds, &self.log])
            .flags()
            .into_iter()
            .map(|f| (f.id, f.open))
            .collect()
    }
}

fn superseded() -> Vec<(String, bool)> {
    vec![("superseded-order/a-1".into(), true)]
}

fn uncertain() -> Vec<(String, bool)> {
    vec![("time-uncertain/a-1".into(), true)]
}

#[test]
fn concurrent_with_clocks_in_step_time_decides_as_before() {
    let mut late = Case::new(WriteContext::default());
    late.give(T0 + 20 * HOUR, context(Some(2_000), &["r-1"]));
    assert_eq!(late.flags(), superseded());
    let mut early = Case::new(WriteContext::default());
    early.give(T0 + 8 * HOUR, context(Some(-2_000), &["r-1"]));
    assert_eq!(early.flags(), vec![]);
    // Records from before the context existed: time decides.
    let mut old = Case::new(WriteContext::default());
    old.give(T0 + 20 * HOUR, WriteContext::default());
    assert_eq!(old.flags(), superseded());
}

#[test]
fn a_version_written_knowing_the_dose_never_supersedes_it_whatever_the_clock() {
    // The carer's phone is two days ahead: the dose says T0 + 2 days 8 h, long after the new
    // version's start; but the nurse wrote that version having seen the dose.
    let mut case = Case::new(context(Some(0), &["a-1"]));
    case.give(T0 + 8 * HOUR + 2 * DAY, context(Some(-2 * DAY), &["r-1"]));
    assert_eq!(case.flags(), vec![]);
}

#[test]
fn a_dose_written_knowing_the_new_version_is_on_a_superseded_order_whatever_the_clock() {
    // The phone is two days behind, so the dose's time is before the new version's start; but
    // the phone held version 2 when the dose was recorded on version 1.
    let mut case = Case::new(WriteContext::default());
    case.give(T0 + 20 * HOUR - 2 * DAY, context(Some(2 * DAY), &["r-2"]));
    assert_eq!(case.flags(), superseded());
}

#[test]
fn concurrent_with_a_clock_known_off_is_time_uncertain_not_raised_or_missed() {
    // Two days ahead: by its clock, after the new version (a false flag before).
    let mut ahead = Case::new(WriteContext::default());
    ahead.give(T0 + 8 * HOUR + 2 * DAY, context(Some(-2 * DAY), &["r-1"]));
    assert_eq!(ahead.flags(), uncertain());
    // Two days behind: by its clock, before the new version (a missed flag before).
    let mut behind = Case::new(WriteContext::default());
    behind.give(T0 + 20 * HOUR - 2 * DAY, context(Some(2 * DAY), &["r-1"]));
    assert_eq!(behind.flags(), uncertain());
    // The version's writer off: its start time cannot be trusted either.
    let mut nurse_off = Case::new(context(Some(3 * DAY), &[]));
    nurse_off.give(T0 + 20 * HOUR, context(Some(0), &["r-1"]));
    assert_eq!(nurse_off.flags(), uncertain());
    // Within five minutes is in step.
    let mut close = Case::new(WriteContext::default());
    close.give(T0 + 20 * HOUR, context(Some(4 * 60_000), &["r-1"]));
    assert_eq!(close.flags(), superseded());
}

#[test]
fn the_context_is_bounded_and_kept_in_the_record() {
    let mut case = Case::new(WriteContext::default());
    case.give(T0 + HOUR, context(Some(-7), &["r-1"]));
    let ev = &case.log.events()[&rid("a-1")];
    assert_eq!(ev.context, context(Some(-7), &["r-1"]));
    let carer = author("cara", Role::Carer);
    let many: Vec<String> = (0..=crate::model::records::MAX_LIST)
        .map(|i| format!("r-{i}"))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let err = case
        .log
        .change(&carer, Timestamp(T0), |e| {
            e.set_context(context(None, &many));
            e.record(
                rid("a-2"),
                EventBody::Administration {
                    order: rid("o-1"),
                    order_revision: rid("r-1"),
                    slot: "2026-11-24T08:00".into(),
                    outcome: AdministrationOutcome::Given,
                    reason: None,
                    occurred_at: Timestamp(T0),
                },
            )
        })
        .unwrap_err();
    assert!(err.to_string().contains("context/after"), "{err}");
}
