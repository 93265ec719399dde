//! Alerts and corrections as the app writes and shows them: allergies, the resuscitation
//! decision, an allergy warning before a dose, and entered-in-error marks.

use nara_client::care::{AlertWritten, AllergyInput, AllergyWarning, Corrected, MarkShown};
use sync_core::model::{AllergyStatus, Criticality, ResuscitationDecision};

use super::{FfiAuthor, FfiEventBody, FfiRegisterValue, all};

/// How severe a reaction to the substance may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum FfiCriticality {
    Low,
    High,
    UnableToAssess,
}

impl From<FfiCriticality> for Criticality {
    fn from(c: FfiCriticality) -> Self {
        match c {
            FfiCriticality::Low => Criticality::Low,
            FfiCriticality::High => Criticality::High,
            FfiCriticality::UnableToAssess => Criticality::UnableToAssess,
        }
    }
}

impl From<Criticality> for FfiCriticality {
    fn from(c: Criticality) -> Self {
        match c {
            Criticality::Low => FfiCriticality::Low,
            Criticality::High => FfiCriticality::High,
            Criticality::UnableToAssess => FfiCriticality::UnableToAssess,
        }
    }
}

/// An allergy entry's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum FfiAllergyStatus {
    Active,
    Inactive,
    Resolved,
    Refuted,
    EnteredInError,
}

impl From<FfiAllergyStatus> for AllergyStatus {
    fn from(s: FfiAllergyStatus) -> Self {
        match s {
            FfiAllergyStatus::Active => AllergyStatus::Active,
            FfiAllergyStatus::Inactive => AllergyStatus::Inactive,
            FfiAllergyStatus::Resolved => AllergyStatus::Resolved,
            FfiAllergyStatus::Refuted => AllergyStatus::Refuted,
            FfiAllergyStatus::EnteredInError => AllergyStatus::EnteredInError,
        }
    }
}

impl From<AllergyStatus> for FfiAllergyStatus {
    fn from(s: AllergyStatus) -> Self {
        match s {
            AllergyStatus::Active => FfiAllergyStatus::Active,
            AllergyStatus::Inactive => FfiAllergyStatus::Inactive,
            AllergyStatus::Resolved => FfiAllergyStatus::Resolved,
            AllergyStatus::Refuted => FfiAllergyStatus::Refuted,
            AllergyStatus::EnteredInError => FfiAllergyStatus::EnteredInError,
        }
    }
}

/// The resuscitation decision (HLR-beslut).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum FfiResuscitationDecision {
    Attempt,
    DoNotAttempt,
}

impl From<FfiResuscitationDecision> for ResuscitationDecision {
    fn from(d: FfiResuscitationDecision) -> Self {
        match d {
            FfiResuscitationDecision::Attempt => ResuscitationDecision::Attempt,
            FfiResuscitationDecision::DoNotAttempt => ResuscitationDecision::DoNotAttempt,
        }
    }
}

impl From<ResuscitationDecision> for FfiResuscitationDecision {
    fn from(d: ResuscitationDecision) -> Self {
        match d {
            ResuscitationDecision::Attempt => FfiResuscitationDecision::Attempt,
            ResuscitationDecision::DoNotAttempt => FfiResuscitationDecision::DoNotAttempt,
        }
    }
}

/// An allergy's value to write.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiAllergyInput {
    pub substance: String,
    pub criticality: FfiCriticality,
    #[uniffi(default)]
    pub reaction: Option<String>,
    pub status: FfiAllergyStatus,
}

impl From<FfiAllergyInput> for AllergyInput {
    fn from(i: FfiAllergyInput) -> Self {
        Self {
            substance: i.substance,
            criticality: i.criticality.into(),
            reaction: i.reaction,
            status: i.status.into(),
        }
    }
}

/// A written alert revision (an allergy's or the resuscitation decision's).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiAlertWritten {
    pub document: String,
    /// `allergy/<id>` or `resuscitation`.
    pub register: String,
    /// The allergy entry; `None` for the resuscitation decision.
    pub allergy: Option<String>,
    pub revision: String,
    pub version: u32,
    pub created: bool,
    pub resolved: bool,
    pub supersedes: Vec<String>,
    pub value: FfiRegisterValue,
}

impl From<AlertWritten> for FfiAlertWritten {
    fn from(w: AlertWritten) -> Self {
        Self {
            document: w.document.to_string(),
            register: w.register,
            allergy: w.allergy.map(Into::into),
            revision: w.revision.into(),
            version: w.version,
            created: w.created,
            resolved: w.resolved,
            supersedes: all::<_, String>(w.supersedes),
            value: w.value.into(),
        }
    }
}

/// An active allergy that a drug about to be given matches.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiAllergyWarning {
    pub allergy: String,
    pub substance: String,
    pub criticality: FfiCriticality,
    pub reaction: Option<String>,
    /// The entry is in conflict (one of its values matches).
    pub conflicting: bool,
}

impl From<AllergyWarning> for FfiAllergyWarning {
    fn from(w: AllergyWarning) -> Self {
        Self {
            allergy: w.allergy.into(),
            substance: w.substance,
            criticality: w.criticality.into(),
            reaction: w.reaction,
            conflicting: w.conflicting,
        }
    }
}

/// One entered-in-error mark.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiMark {
    pub mark: String,
    pub author: FfiAuthor,
    pub at_ms: i64,
    pub reason: String,
}

impl From<MarkShown> for FfiMark {
    fn from(m: MarkShown) -> Self {
        Self {
            mark: m.mark.into(),
            author: m.author.into(),
            at_ms: m.at.0,
            reason: m.reason,
        }
    }
}

/// A record marked entered in error, with every mark this device holds.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct FfiCorrected {
    pub document: String,
    pub record: String,
    pub mark: String,
    pub body: FfiEventBody,
    pub marks: Vec<FfiMark>,
}

impl From<Corrected> for FfiCorrected {
    fn from(c: Corrected) -> Self {
        Self {
            document: c.document.to_string(),
            record: c.record.into(),
            mark: c.mark.into(),
            body: c.body.into(),
            marks: all(c.marks),
        }
    }
}

#[cfg(test)]
mod tests {
    use nara_client::ClientError;
    use sync_core::model::RegisterValue;

    use super::*;
    use crate::NaraError;

    #[test]
    fn alerts_cross_typed() {
        let v = FfiRegisterValue::from(RegisterValue::Allergy {
            substance: "Penicillin".into(),
            criticality: Criticality::High,
            status: AllergyStatus::Active,
            reaction: Some("rash".into()),
        });
        assert_eq!(
            v,
            FfiRegisterValue::Allergy {
                substance: "Penicillin".into(),
                criticality: FfiCriticality::High,
                status: FfiAllergyStatus::Active,
                reaction: Some("rash".into()),
            }
        );
        let input = AllergyInput::from(FfiAllergyInput {
            substance: "Latex".into(),
            criticality: FfiCriticality::Low,
            reaction: None,
            status: FfiAllergyStatus::EnteredInError,
        });
        assert_eq!(input.status, AllergyStatus::EnteredInError);
        let e = NaraError::from(ClientError::AllergyWarning {
            drug: "Kåvepenin".into(),
            allergies: vec!["allergy to penicillin (high criticality)".into()],
        });
        assert!(
            matches!(&e, NaraError::AllergyWarning { drug, allergies, .. }
                if drug == "Kåvepenin" && allergies.len() == 1),
            "{e:?}"
        );
    }
}
