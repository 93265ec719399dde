#![allow(clippy::unwrap_used)]

use nara_client::care::{OrderInput, SlotView};
use nara_client::{RaisedFlag, Status, SyncReport};
use sync_core::model::{
    AdministrationOutcome, EventBody, MedicationOrder, ObservationCode, RegisterValue,
};
use sync_core::protocol::DeviceEvent;
use sync_core::protocol::wire::CloseReason;
use sync_core::{Author, DeviceId, PatientId, RecordId, Role, Timestamp, UserId};

use super::*;

fn author() -> Author {
    Author::new(
        UserId::new("anna").unwrap(),
        Role::Carer,
        DeviceId::new("d1").unwrap(),
    )
}

#[test]
fn statuses() {
    assert_eq!(
        FfiStatus::from(Status::Offline {
            clock_off_by_ms: None
        }),
        FfiStatus::Offline
    );
    assert_eq!(
        FfiStatus::from(Status::Syncing {
            received: 12,
            remaining: 28
        }),
        FfiStatus::Syncing {
            received: 12,
            remaining: 28
        }
    );
    assert_eq!(
        FfiStatus::from(Status::InSync {
            at: Timestamp(7),
            clock_off_by_ms: None,
        }),
        FfiStatus::InSync {
            at_ms: 7,
            clock_off_by_ms: None,
        }
    );
    assert_eq!(
        FfiStatus::from(Status::Error { reason: "x".into() }),
        FfiStatus::Error { reason: "x".into() }
    );
}

#[test]
fn sync_reports() {
    let p1 = PatientId::new("p1").unwrap();
    let report = SyncReport {
        received: 3,
        uploaded: 2,
        flags_raised: vec![RaisedFlag {
            patient: p1.clone(),
            flag: "f".into(),
        }],
        withdrawn: vec![p1],
        pending: 1,
        in_sync_at: Some(Timestamp(9)),
        ..Default::default()
    };
    let r = FfiSyncReport::from(report);
    assert_eq!((r.received, r.uploaded, r.pending), (3, 2, 1));
    assert_eq!(r.withdrawn, vec!["p1".to_owned()]);
    assert_eq!(r.flags_raised[0].patient, "p1");
    assert_eq!(r.in_sync_at_ms, Some(9));
}

#[test]
fn journal_bodies() {
    let note = FfiEventBody::from(EventBody::Note {
        body: "Slept well.".into(),
        corrects: None,
    });
    assert_eq!(
        note,
        FfiEventBody::Note {
            body: "Slept well.".into(),
            corrects: None
        }
    );
    match FfiEventBody::from(EventBody::EnteredInError {
        target: RecordId::new("n1").unwrap(),
        reason: "wrong person".into(),
    }) {
        FfiEventBody::Other { kind, json } => {
            assert_eq!(kind, "entered-in-error");
            assert!(json.contains("wrong person"), "{json}");
        }
        other => panic!("{other:?}"),
    }
    for code in [FfiObservationCode::Pain, FfiObservationCode::HeartRate] {
        assert_eq!(FfiObservationCode::from(ObservationCode::from(code)), code);
    }
}

#[test]
fn events() {
    let p1 = PatientId::new("p1").unwrap();
    assert_eq!(
        FfiDeviceEvent::from(DeviceEvent::AccessWithdrawn { patients: vec![p1] }),
        FfiDeviceEvent::AccessWithdrawn {
            patients: vec!["p1".into()]
        }
    );
    assert_eq!(
        FfiDeviceEvent::from(DeviceEvent::Closed {
            reason: CloseReason::Revoked,
            detail: "bye".into()
        }),
        FfiDeviceEvent::Closed {
            reason: FfiCloseReason::Revoked,
            detail: "bye".into()
        }
    );
}

#[test]
fn slots_authors_and_outcomes() {
    let s = FfiSlotStatus::from(SlotView::Given {
        administration: RecordId::new("a1").unwrap(),
        by: author(),
    });
    assert_eq!(
        s,
        FfiSlotStatus::Given {
            administration: "a1".into(),
            by: FfiAuthor {
                user: "anna".into(),
                name: None,
                role: FfiRole::Carer,
                device: "d1".into()
            }
        }
    );
    assert_eq!(
        AdministrationOutcome::from(FfiOutcome::NotGiven),
        AdministrationOutcome::NotGiven
    );
}

#[test]
fn order_inputs_and_values() {
    let input = OrderInput::from(FfiOrderInput {
        dose: Some("2 tablets".into()),
        ..Default::default()
    });
    assert_eq!(input.dose.as_deref(), Some("2 tablets"));
    assert_eq!(input.drug, None);
    let order = MedicationOrder {
        drug: "Metoprolol".into(),
        strength: "50 mg".into(),
        dose: "1 tablet".into(),
        route: "oral".into(),
        times: vec!["08:00".into()],
        start: "2026-11-01".into(),
        stop: None,
        delegated: true,
        window_minutes: None,
        prn: None,
        valid_from: Timestamp(5),
    };
    match FfiRegisterValue::from(RegisterValue::Order(order)) {
        FfiRegisterValue::Order { order } => {
            assert_eq!(order.drug, "Metoprolol");
            assert_eq!(order.valid_from_ms, 5);
        }
        other => panic!("{other:?}"),
    }
    match FfiRegisterValue::from(RegisterValue::Risk {
        description: "falls".into(),
        active: true,
    }) {
        FfiRegisterValue::Other { kind, json } => {
            assert_eq!(kind, "risk");
            assert!(json.contains("falls"), "{json}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_visit_crosses_with_its_ids_checked() {
    let visit = FfiVisit {
        started_ms: Some(5),
        tasks: vec![FfiVisitTask {
            task: "shower".into(),
            done: true,
            reason: None,
        }],
        notes: vec!["Calm.".into()],
        observations: vec![FfiVisitObservation {
            code: FfiObservationCode::HeartRate,
            value: 72.0,
            unit: "/min".into(),
        }],
        doses: vec![FfiVisitDose {
            order: "o1".into(),
            slot: "2026-11-24T08:00".into(),
            outcome: FfiOutcome::Given,
            reason: None,
            again: false,
            allergy_confirmed: true,
        }],
    };
    let core: nara_client::care::Visit = visit.clone().try_into().unwrap();
    assert_eq!(core.started_ms, Some(5));
    assert_eq!(core.observations[0].code, ObservationCode::HeartRate);
    assert_eq!(core.doses[0].outcome, AdministrationOutcome::Given);
    assert!(core.doses[0].allergy_confirmed);
    let mut bad = visit;
    bad.doses[0].order = "not an id!".into();
    assert!(nara_client::care::Visit::try_from(bad).is_err());
}

#[test]
fn authors_carry_the_directory_name_within_a_named_conversion() {
    let staff = nara_client::StaffNames::new([nara_client::StaffMember {
        user: UserId::new("anna").unwrap(),
        name: "Anna Lind".into(),
        role: "carer".into(),
        organisation: "Hemtjänst Norr".into(),
    }]);
    let named = super::staff::with_names(staff, || FfiAuthor::from(author()));
    assert_eq!(named.user, "anna");
    assert_eq!(named.name.as_deref(), Some("Anna Lind"));
    // Outside a named conversion (and for staff the device holds no name of): the id alone.
    assert_eq!(FfiAuthor::from(author()).name, None);
}
