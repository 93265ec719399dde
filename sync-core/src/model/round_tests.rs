//! The signing list's statuses (every one, unknown too), the time arithmetic, and a shared
//! fixture for the delegation and "when needed" tests.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::ids::{PatientId, Role};
use crate::model::document::CareDocument;
use crate::model::records::{AdministrationOutcome, Delegation, DoseEffect, EventBody, PrnRule};

pub(crate) const MIN: i64 = 60_000;
pub(crate) const HOUR: i64 = 60 * MIN;
pub(crate) const DAY: i64 = 24 * HOUR;
/// 2026-11-24 00:00 UTC.
pub(crate) const T0: i64 = 1_795_478_400_000;

pub(crate) fn rid(s: &str) -> RecordId {
    RecordId::new(s).unwrap()
}

pub(crate) fn author(user: &str, role: Role) -> Author {
    Author::new(
        UserId::new(user).unwrap(),
        role,
        DeviceId::new(format!("{user}-phone")).unwrap(),
    )
}

pub(crate) fn phone(user: &str, last: Option<i64>) -> PhoneSync {
    PhoneSync {
        device: DeviceId::new(format!("{user}-phone")).unwrap(),
        user: UserId::new(user).unwrap(),
        last_synced: last.map(Timestamp),
    }
}

/// One person's header, orders and November administration log.
pub(crate) struct World {
    pub p: PatientId,
    pub header: CareDocument,
    pub meds: CareDocument,
    pub log: CareDocument,
    next: u32,
}

impl World {
    pub fn new() -> Self {
        let p = PatientId::new("p-1").unwrap();
        Self {
            header: CareDocument::new(crate::ids::DocumentId::patient_header(&p)).unwrap(),
            meds: CareDocument::new(crate::ids::DocumentId::medication(&p)).unwrap(),
            log: CareDocument::new(crate::ids::DocumentId::administrations(
                &p,
                "2026-11".parse().unwrap(),
            ))
            .unwrap(),
            p,
            next: 0,
        }
    }

    pub fn chart(&self) -> Chart<'_> {
        Chart::new(&self.p, [&self.header, &self.meds, &self.log])
    }

    /// Order `id`, revision `r-<id>`, by a nurse.
    pub fn order(&mut self, id: &str, times: &[&str], window: Option<u32>, prn: Option<PrnRule>) {
        let value = MedicationOrder {
            drug: "Metoprolol".into(),
            strength: "50 mg".into(),
            dose: "1 tablet".into(),
            route: "oral".into(),
            times: times.iter().map(|t| (*t).to_owned()).collect(),
            start: "2026-11-01".into(),
            stop: None,
            delegated: true,
            window_minutes: window,
            prn,
            valid_from: Timestamp(T0 - DAY),
        };
        self.meds
            .change(&author("nina", Role::Nurse), Timestamp(T0 - DAY), |e| {
                e.create(
                    rid(&format!("r-{id}")),
                    Register::Order(rid(id)),
                    RegisterValue::Order(value),
                    None,
                )
            })
            .unwrap();
    }

    /// Records an administration by `who`; returns its id.
    pub fn record(
        &mut self,
        who: &Author,
        order: &str,
        slot: &str,
        outcome: AdministrationOutcome,
        reason: Option<&str>,
        at: i64,
    ) -> RecordId {
        self.next += 1;
        let id = rid(&format!("a-{}", self.next));
        self.log
            .change(who, Timestamp(at), |e| {
                e.record(
                    id.clone(),
                    EventBody::Administration {
                        order: rid(order),
                        order_revision: rid(&format!("r-{order}")),
                        slot: slot.into(),
                        outcome,
                        reason: reason.map(str::to_owned),
                        occurred_at: Timestamp(at),
                    },
                )
            })
            .unwrap();
        id
    }

    pub fn effect(&mut self, who: &Author, administration: &RecordId, at: i64) {
        self.next += 1;
        let id = rid(&format!("e-{}", self.next));
        self.log
            .change(who, Timestamp(at), |e| {
                e.record(
                    id,
                    EventBody::Effect {
                        administration: administration.clone(),
                        effect: DoseEffect::Good,
                        note: None,
                        occurred_at: Timestamp(at),
                    },
                )
            })
            .unwrap();
    }

    /// Writes delegation `id` (a new one or its next revision) by nurse Nina at `at`.
    pub fn delegate(&mut self, id: &str, d: Delegation, at: i64) -> Result<(), crate::ModelError> {
        let reg = Register::Delegation(rid(id));
        let exists = !matches!(self.header.register(&reg), RegisterState::Unset);
        self.next += 1;
        let rev = rid(&format!("d-{}", self.next));
        self.header
            .change(&author("nina", Role::Nurse), Timestamp(at), |e| {
                if exists {
                    e.update(rev, reg, RegisterValue::Delegation(d))
                } else {
                    e.create(rev, reg, RegisterValue::Delegation(d), None)
                }
            })
            .map(|_| ())
    }
}

fn shift(from_h: i64, to_h: i64) -> Shift {
    Shift {
        from: Timestamp(T0 + from_h * HOUR),
        to: Timestamp(T0 + to_h * HOUR),
        utc_offset_minutes: 0,
    }
}

fn statuses(w: &World, now: i64, phones: &[PhoneSync]) -> Vec<(String, RoundStatus)> {
    signing_list(&w.chart(), &shift(6, 23), Timestamp(now), Some(phones))
        .into_iter()
        .map(|s| (s.slot, s.status))
        .collect()
}

#[test]
fn every_status_of_the_signing_list() {
    let mut w = World::new();
    let cara = author("cara", Role::Carer);
    w.order(
        "o-1",
        &["07:00", "08:00", "09:00", "12:00", "14:00", "20:00"],
        None,
        None,
    );
    let given = w.record(
        &cara,
        "o-1",
        "2026-11-24T07:00",
        AdministrationOutcome::Given,
        None,
        T0 + 7 * HOUR,
    );
    let refused = w.record(
        &cara,
        "o-1",
        "2026-11-24T08:00",
        AdministrationOutcome::NotGiven,
        Some("refused"),
        T0 + 8 * HOUR,
    );
    let own = w.record(
        &cara,
        "o-1",
        "2026-11-24T09:00",
        AdministrationOutcome::SelfAdministered,
        None,
        T0 + 9 * HOUR,
    );
    // Now 15:30. Bo's phone synced at 14:30: 12:00 closed at 13:00, before his sync (overdue);
    // 14:00 closes at 15:00, after it (unknown, naming his phone); 20:00 is still open.
    let bo = phone("bo", Some(T0 + 14 * HOUR + 30 * MIN));
    let list = statuses(&w, T0 + 15 * HOUR + 30 * MIN, std::slice::from_ref(&bo));
    assert_eq!(
        list,
        vec![
            (
                "2026-11-24T07:00".into(),
                RoundStatus::Given {
                    administration: given,
                    by: cara.person()
                }
            ),
            (
                "2026-11-24T08:00".into(),
                RoundStatus::NotGiven {
                    administration: refused,
                    reason: Some("refused".into())
                }
            ),
            (
                "2026-11-24T09:00".into(),
                RoundStatus::SelfAdministered {
                    administration: own
                }
            ),
            ("2026-11-24T12:00".into(), RoundStatus::Overdue),
            (
                "2026-11-24T14:00".into(),
                RoundStatus::Unknown {
                    phones: vec![bo.clone()]
                }
            ),
            ("2026-11-24T20:00".into(), RoundStatus::Open),
        ]
    );
    // A phone that never synced leaves every closed, unrecorded slot unknown.
    let never = phone("dan", None);
    let list = statuses(&w, T0 + 15 * HOUR + 30 * MIN, std::slice::from_ref(&never));
    assert_eq!(
        list[3].1,
        RoundStatus::Unknown {
            phones: vec![never.clone()]
        }
    );
    // Two "given" for one slot.
    w.record(
        &cara,
        "o-1",
        "2026-11-24T20:00",
        AdministrationOutcome::Given,
        None,
        T0 + 20 * HOUR,
    );
    w.record(
        &author("bo", Role::Carer),
        "o-1",
        "2026-11-24T20:00",
        AdministrationOutcome::Given,
        None,
        T0 + 20 * HOUR,
    );
    let list = statuses(&w, T0 + 21 * HOUR, &[]);
    // Without word from the server on the other phones, a closed slot is unknown, not overdue.
    let unknown = signing_list(&w.chart(), &shift(6, 23), Timestamp(T0 + 21 * HOUR), None);
    assert_eq!(unknown[3].status, RoundStatus::Unknown { phones: vec![] });
    assert!(
        matches!(list[5].1, RoundStatus::PossibleDoubleDose { ref administrations } if administrations.len() == 2)
    );
}

#[test]
fn the_window_is_per_order_and_the_shift_bounds_the_list() {
    let mut w = World::new();
    w.order("o-1", &["08:00", "20:00"], Some(180), None);
    // 10:30, no other phones: within the 3-hour window, still open.
    let list = statuses(&w, T0 + 10 * HOUR + 30 * MIN, &[]);
    assert_eq!(list[0].1, RoundStatus::Open);
    assert_eq!(
        statuses(&w, T0 + 11 * HOUR + MIN, &[])[0].1,
        RoundStatus::Overdue
    );
    // A shift 06-12 holds only the morning slot; 06-23 holds both.
    let morning = signing_list(&w.chart(), &shift(6, 12), Timestamp(T0), Some(&[]));
    assert_eq!(morning.len(), 1);
    assert_eq!(morning[0].window_minutes, 180);
    assert_eq!(statuses(&w, T0, &[]).len(), 2);
    // A shift across midnight takes the next day's slots.
    let night = signing_list(&w.chart(), &shift(19, 33), Timestamp(T0), Some(&[]));
    assert_eq!(
        night.iter().map(|s| s.slot.as_str()).collect::<Vec<_>>(),
        vec!["2026-11-24T20:00", "2026-11-25T08:00"]
    );
}

#[test]
fn overdue_slots_become_flags_that_a_nurse_acknowledges() {
    let mut w = World::new();
    w.order("o-1", &["08:00"], None, None);
    let now = Timestamp(T0 + 12 * HOUR);
    // Bo's phone has not synced since before the window closed: not overdue, no flag.
    assert!(timed_flags(&w.chart(), now, 0, &[phone("bo", Some(T0 + 8 * HOUR))]).is_empty());
    let flags = timed_flags(&w.chart(), now, 0, &[phone("bo", Some(T0 + 11 * HOUR))]);
    assert_eq!(flags.len(), 1);
    assert_eq!(flags[0].id, "overdue/o-1/2026-11-24T08:00");
    assert!(flags[0].open);
    assert_eq!(flags[0].evidence, vec![rid("r-o-1")]);
    w.log
        .change(&author("nina", Role::Nurse), now, |e| {
            e.record(
                rid("ack-1"),
                EventBody::FlagAcknowledgement {
                    flag: "overdue/o-1/2026-11-24T08:00".into(),
                    covers: vec![rid("r-o-1")],
                    comment: Some("phoned the daughter".into()),
                },
            )
        })
        .unwrap();
    let flags = timed_flags(&w.chart(), now, 0, &[]);
    assert!(!flags[0].open);
    // A dose recorded late clears it.
    w.record(
        &author("cara", Role::Carer),
        "o-1",
        "2026-11-24T08:00",
        AdministrationOutcome::Given,
        None,
        now.0,
    );
    assert!(timed_flags(&w.chart(), now, 0, &[]).is_empty());
}

#[test]
fn local_times_and_instants() {
    assert_eq!(slot_instant("2026-11-24T00:00", 0), Some(Timestamp(T0)));
    assert_eq!(
        slot_instant("2026-11-24T09:00", 60),
        Some(Timestamp(T0 + 8 * HOUR))
    );
    assert_eq!(local_slot(Timestamp(T0 + 8 * HOUR), 60), "2026-11-24T09:00");
    assert_eq!(local_slot(Timestamp(T0 - MIN), 0), "2026-11-23T23:59");
    assert_eq!(local_slot(Timestamp(0), 0), "1970-01-01T00:00");
    assert_eq!(
        slot_instant("2024-02-29T12:00", 0).map(|t| local_slot(t, 0)),
        Some("2024-02-29T12:00".into())
    );
    assert_eq!(slot_instant("2026-11-24 09:00", 0), None);
    // Slots in a shift at UTC+1 are the local times.
    let mut w = World::new();
    w.order("o-1", &["08:00"], None, None);
    let s = Shift {
        from: Timestamp(T0),
        to: Timestamp(T0 + 12 * HOUR),
        utc_offset_minutes: 60,
    };
    let list = signing_list(&w.chart(), &s, Timestamp(T0), Some(&[]));
    assert_eq!(list[0].due, Timestamp(T0 + 7 * HOUR));
}

#[test]
fn order_windows_and_prn_limits_are_checked() {
    let mut o = MedicationOrder {
        drug: "Paracetamol".into(),
        strength: "500 mg".into(),
        dose: "2 tablets".into(),
        route: "oral".into(),
        times: vec![],
        start: "2026-11-01".into(),
        stop: None,
        delegated: true,
        window_minutes: Some(MAX_WINDOW_MINUTES + 1),
        prn: None,
        valid_from: Timestamp(0),
    };
    assert!(check_order(&o).is_err());
    o.window_minutes = None;
    o.prn = Some(PrnRule {
        max_per_day: 0,
        min_interval_minutes: 240,
        follow_up_minutes: 60,
    });
    assert!(check_order(&o).is_err());
    o.prn = Some(PrnRule {
        max_per_day: 3,
        min_interval_minutes: 240,
        follow_up_minutes: 60,
    });
    assert!(check_order(&o).is_ok());
    o.times = vec!["08:00".into()];
    assert!(check_order(&o).is_err());
}

#[test]
fn old_orders_without_window_or_prn_still_read() {
    let old = r#"{"drug":"M","strength":"5 mg","dose":"1","route":"oral","times":["08:00"],"start":"2026-11-01","delegated":true,"valid_from":1}"#;
    let o: MedicationOrder = serde_json::from_str(old).unwrap();
    assert_eq!((o.window_minutes, o.prn), (None, None));
    assert_eq!(serde_json::to_string(&o).unwrap(), old);
}
