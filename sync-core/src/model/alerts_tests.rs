//! Allergy matching, and an allergy's revisions in conflict across two replicas.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::ids::{Author, DeviceId, DocumentId, PatientId, Role, Timestamp, UserId};

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

fn allergy(substance: &str, criticality: Criticality, status: AllergyStatus) -> RegisterValue {
    RegisterValue::Allergy {
        substance: substance.into(),
        criticality,
        status,
        reaction: Some("rash".into()),
    }
}

fn header() -> CareDocument {
    CareDocument::new(DocumentId::patient_header(&PatientId::new("p-1").unwrap())).unwrap()
}

/// `b` gets every change of `a` it lacks.
fn merge_into(b: &mut CareDocument, a: &CareDocument) {
    let out = b.apply_changes(a.changes_since(&[])).unwrap();
    assert!(out.refused.is_empty(), "{:?}", out.refused);
}

#[test]
fn substances_match_drug_names_by_letters_not_case() {
    assert!(substance_matches("Penicillin", "Fenoximetylpenicillin"));
    assert!(substance_matches("penicillin", "PENICILLIN V"));
    assert!(substance_matches(
        "Amoxicillin and clavulanic acid",
        "Amoxicillin"
    ));
    assert!(substance_matches("Metoprolol", "metoprolol-succinat"));
    assert!(!substance_matches("Penicillin", "Metoprolol"));
    // Too short to match anything but itself as a word: never inside a longer name.
    assert!(!substance_matches("Fe", "Ferrous sulfate"));
    assert!(!substance_matches("", "Metoprolol"));
    assert!(!substance_matches("Latex", ""));
}

#[test]
fn only_active_allergies_that_match_warn() {
    let nurse = author("nina", Role::Nurse);
    let mut h = header();
    h.change(&nurse, Timestamp(1), |e| {
        e.create(
            rid("al-1"),
            Register::Allergy(rid("a-pc")),
            allergy("Penicillin", Criticality::High, AllergyStatus::Active),
            None,
        )?;
        e.create(
            rid("al-2"),
            Register::Allergy(rid("a-su")),
            allergy("Sulfa", Criticality::Low, AllergyStatus::Inactive),
            None,
        )
    })
    .unwrap();
    let hits = allergy_matches(&h, "Fenoximetylpenicillin");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].allergy, rid("a-pc"));
    assert_eq!(hits[0].criticality, Criticality::High);
    assert!(!hits[0].conflicting);
    assert!(allergy_matches(&h, "Sulfametoxazol").is_empty(), "inactive");
    assert!(allergy_matches(&h, "Metoprolol").is_empty());

    // Entered in error: no longer warns.
    h.change(&nurse, Timestamp(2), |e| {
        e.update(
            rid("al-3"),
            Register::Allergy(rid("a-pc")),
            allergy(
                "Penicillin",
                Criticality::High,
                AllergyStatus::EnteredInError,
            ),
        )
    })
    .unwrap();
    assert!(allergy_matches(&h, "Penicillin").is_empty());
    assert_eq!(allergies_naming(&h, "penicillin"), vec![rid("a-pc")]);
}

#[test]
fn s10_two_revisions_of_one_allergy_conflict_and_still_warn() {
    let nurse = author("nina", Role::Nurse);
    let carer = author("cara", Role::Carer);
    let mut a = header();
    a.change(&nurse, Timestamp(1), |e| {
        e.create(
            rid("al-1"),
            Register::Allergy(rid("a-pc")),
            allergy("Penicillin", Criticality::Low, AllergyStatus::Active),
            None,
        )
    })
    .unwrap();
    let mut b = header();
    merge_into(&mut b, &a);
    // Offline: the nurse raises the criticality, the carer records a second substance and
    // revises the same entry's reaction.
    a.change(&nurse, Timestamp(2), |e| {
        e.update(
            rid("al-2"),
            Register::Allergy(rid("a-pc")),
            allergy("Penicillin", Criticality::High, AllergyStatus::Active),
        )
    })
    .unwrap();
    b.change(&carer, Timestamp(3), |e| {
        e.update(
            rid("al-3"),
            Register::Allergy(rid("a-pc")),
            allergy("Penicillin", Criticality::Low, AllergyStatus::Active),
        )?;
        e.create(
            rid("al-4"),
            Register::Allergy(rid("a-la")),
            allergy("Latex", Criticality::Low, AllergyStatus::Active),
            None,
        )
    })
    .unwrap();
    merge_into(&mut a, &b);
    merge_into(&mut b, &a);
    for doc in [&a, &b] {
        let conflicts = doc.conflicts();
        assert_eq!(conflicts.len(), 1, "one entry revised twice");
        assert_eq!(conflicts[0].register, Register::Allergy(rid("a-pc")));
        assert!(matches!(
            doc.register(&Register::Allergy(rid("a-la"))),
            RegisterState::Value(_)
        ));
        let hits = allergy_matches(doc, "Penicillin");
        assert_eq!(hits.len(), 1);
        assert!(hits[0].conflicting);
    }
    // A carer cannot resolve it: that is a nurse's.
    let refused = b.change(&carer, Timestamp(4), |e| {
        e.resolve(
            rid("al-x"),
            Register::Allergy(rid("a-pc")),
            allergy("Penicillin", Criticality::Low, AllergyStatus::Active),
        )
    });
    assert!(matches!(
        refused,
        Err(crate::ModelError::NotPermitted { .. })
    ));
    // A nurse resolves it: one value again, on both once merged.
    a.change(&nurse, Timestamp(4), |e| {
        e.resolve(
            rid("al-5"),
            Register::Allergy(rid("a-pc")),
            allergy("Penicillin", Criticality::High, AllergyStatus::Active),
        )
    })
    .unwrap();
    merge_into(&mut b, &a);
    assert!(b.conflicts().is_empty());
    assert!(!allergy_matches(&b, "Penicillin")[0].conflicting);
}

#[test]
fn carers_record_allergies_but_not_the_resuscitation_decision() {
    use crate::model::records::{ResuscitationDecision, WriteKind, may_write};
    let carer = author("cara", Role::Carer);
    assert!(may_write(
        Role::Carer,
        &WriteKind::Revision(&Register::Allergy(rid("a")))
    ));
    let mut h = header();
    let refused = h.change(&carer, Timestamp(1), |e| {
        e.update(
            rid("r-1"),
            Register::Resuscitation,
            RegisterValue::Resuscitation {
                decision: ResuscitationDecision::DoNotAttempt,
                comment: None,
            },
        )
    });
    assert!(matches!(
        refused,
        Err(crate::ModelError::NotPermitted { .. })
    ));
}
