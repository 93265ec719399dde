//! Corrections: which records may be marked, and two concurrent marks both kept.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::ids::{DeviceId, DocumentId, PatientId, Role, UserId};
use crate::model::records::ObservationCode;

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

fn journal() -> CareDocument {
    let p = PatientId::new("p-1").unwrap();
    CareDocument::new(DocumentId::journal(&p, "2026-11".parse().unwrap())).unwrap()
}

fn mark(doc: &mut CareDocument, who: &Author, id: &str, reason: &str, at: i64) {
    doc.change(who, Timestamp(at), |e| {
        e.record(
            rid(id),
            EventBody::EnteredInError {
                target: rid("n-1"),
                reason: reason.into(),
            },
        )
    })
    .unwrap();
}

#[test]
fn what_may_be_corrected() {
    let carer = author("cara", Role::Carer);
    let mut j = journal();
    j.change(&carer, Timestamp(1), |e| {
        e.record(
            rid("n-1"),
            EventBody::Note {
                body: "Wrong person".into(),
                corrects: None,
            },
        )?;
        e.record(
            rid("o-1"),
            EventBody::Observation {
                code: ObservationCode::HeartRate,
                value: 70.0,
                unit: "/min".into(),
                occurred_at: Timestamp(1),
            },
        )?;
        e.record(
            rid("v-1"),
            EventBody::VisitStart {
                visit: rid("visit-1"),
                occurred_at: Timestamp(1),
            },
        )
    })
    .unwrap();
    assert!(check_correction(&j, &rid("n-1"), "wrong person").is_ok());
    assert!(check_correction(&j, &rid("o-1"), "wrong person").is_ok());
    assert!(
        check_correction(&j, &rid("n-1"), "  ").is_err(),
        "no reason"
    );
    assert!(matches!(
        check_correction(&j, &rid("nope"), "x"),
        Err(ModelError::NotFound { .. })
    ));
    assert!(
        check_correction(&j, &rid("v-1"), "x").is_err(),
        "not a kind corrected"
    );
    mark(&mut j, &carer, "m-1", "wrong person", 2);
    let err = check_correction(&j, &rid("n-1"), "again").unwrap_err();
    assert!(err.to_string().contains("already marked"), "{err}");
    assert!(
        check_correction(&j, &rid("m-1"), "x").is_err(),
        "a mark is not marked"
    );
}

#[test]
fn s13_two_concurrent_marks_are_both_kept_and_the_record_is_marked_once() {
    let carer = author("cara", Role::Carer);
    let nina = author("nina", Role::Nurse);
    let olle = author("olle", Role::Nurse);
    let mut a = journal();
    a.change(&carer, Timestamp(1), |e| {
        e.record(
            rid("n-1"),
            EventBody::Note {
                body: "Signed on the wrong person".into(),
                corrects: None,
            },
        )
    })
    .unwrap();
    let mut b = journal();
    b.apply_changes(a.changes_since(&[])).unwrap();
    assert!(check_correction(&a, &rid("n-1"), "x").is_ok());
    assert!(check_correction(&b, &rid("n-1"), "x").is_ok());
    mark(&mut a, &nina, "m-a", "wrong person", 5);
    mark(&mut b, &olle, "m-b", "belongs to p-2", 6);
    let to_b = a.changes_since(&[]);
    let to_a = b.changes_since(&[]);
    assert!(b.apply_changes(to_b).unwrap().refused.is_empty());
    assert!(a.apply_changes(to_a).unwrap().refused.is_empty());
    for doc in [&a, &b] {
        let m = marks(doc, &rid("n-1"));
        assert_eq!(m.len(), 2, "both marks kept");
        assert_eq!(m[0].author.user.as_str(), "nina");
        assert_eq!(m[1].author.user.as_str(), "olle");
        assert_eq!(m[1].reason, "belongs to p-2");
        assert!(doc.event(&rid("n-1")).is_some(), "the record stays");
    }
}
