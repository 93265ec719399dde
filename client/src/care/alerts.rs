//! Alerts on a person's header: allergies and the resuscitation decision, written as revisions
//! (two concurrent revisions of one entry are a conflict a nurse resolves), and the allergy
//! check before a dose. The match and the conflict rules are the model's
//! (`sync_core::model::alerts`); this module picks the entry, the ids and the revisions.

use sync_core::model::alerts::{allergies_naming, allergy_matches};
use sync_core::model::{AllergyStatus, Criticality, ResuscitationDecision};

use super::*;

/// An allergy's value to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllergyInput {
    pub substance: String,
    pub criticality: Criticality,
    pub reaction: Option<String>,
    pub status: AllergyStatus,
}

/// A written alert revision (an allergy's, or the resuscitation decision's).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertWritten {
    pub document: DocumentId,
    /// `allergy/<id>` or `resuscitation`.
    pub register: String,
    /// The allergy entry; `None` for the resuscitation decision.
    pub allergy: Option<RecordId>,
    pub revision: RecordId,
    pub version: u32,
    /// True if this created the entry (or set a decision where there was none).
    pub created: bool,
    /// True if this resolved a conflict.
    pub resolved: bool,
    /// The revisions this one supersedes.
    pub supersedes: Vec<RecordId>,
    pub value: RegisterValue,
}

/// An active allergy that a drug about to be given matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AllergyWarning {
    pub allergy: RecordId,
    pub substance: String,
    pub criticality: Criticality,
    pub reaction: Option<String>,
    /// The allergy is in conflict (one of its values matches).
    pub conflicting: bool,
}

impl std::fmt::Display for AllergyWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let criticality = match self.criticality {
            Criticality::High => "high criticality",
            Criticality::Low => "low criticality",
            Criticality::UnableToAssess => "criticality not assessed",
        };
        write!(f, "allergy to {} ({criticality}", self.substance)?;
        if let Some(r) = &self.reaction {
            write!(f, ", reaction: {r}")?;
        }
        if self.conflicting {
            f.write_str(", entry in conflict")?;
        }
        f.write_str(")")
    }
}

/// The active allergies of `patient` this device holds that `drug` matches.
pub fn allergy_warnings(
    device: &Device,
    patient: &PatientId,
    drug: &str,
) -> Result<Vec<AllergyWarning>> {
    let header = DocumentId::patient_header(patient);
    device.with_repo(|repo| {
        Ok(allergy_matches(repo.get(&header)?, drug)
            .into_iter()
            .map(|m| AllergyWarning {
                allergy: m.allergy,
                substance: m.substance,
                criticality: m.criticality,
                reaction: m.reaction,
                conflicting: m.conflicting,
            })
            .collect())
    })
}

/// Refuses a dose of `drug` that matches an active allergy unless the giver `confirmed` it.
pub(super) fn check_allergies(
    device: &Device,
    patient: &PatientId,
    drug: &str,
    confirmed: bool,
) -> Result<()> {
    if confirmed {
        return Ok(());
    }
    let allergies = allergy_warnings(device, patient, drug)?;
    if allergies.is_empty() {
        return Ok(());
    }
    Err(ClientError::AllergyWarning {
        drug: drug.to_owned(),
        allergies: allergies.iter().map(ToString::to_string).collect(),
    })
}

/// Writes `value` to `register` over its current value: creates it, updates its one value, or,
/// only if `resolve`, resolves its conflict.
fn write_alert(
    device: &Device,
    patient: &PatientId,
    register: Register,
    value: RegisterValue,
    resolve: bool,
    clock: &Clock,
) -> Result<AlertWritten> {
    let document = DocumentId::patient_header(patient);
    let state = device.with_repo(|repo| -> Result<RegisterState> {
        Ok(repo.get(&document)?.register(&register))
    })?;
    let (supersedes, conflict) = match state {
        RegisterState::Unset => (Vec::new(), false),
        RegisterState::Value(v) => (vec![v.id], false),
        RegisterState::Conflict(c) => (c.into_iter().map(|c| c.id).collect::<Vec<_>>(), true),
    };
    if conflict && !resolve {
        return Err(ClientError::Invalid(format!(
            "{register} is in conflict (revisions {}); a nurse resolves it by writing the value \
             that holds, with --resolve",
            supersedes
                .iter()
                .map(RecordId::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let revision = clock.new_id();
    let written = value.clone();
    let has_entity = matches!(register, Register::Allergy(_));
    device.change(&document, clock.now, |e| {
        if supersedes.is_empty() && has_entity {
            e.create(revision.clone(), register.clone(), written, None)
        } else if conflict {
            e.resolve(revision.clone(), register.clone(), written)
        } else {
            e.update(revision.clone(), register.clone(), written)
        }
    })?;
    let version =
        device.with_repo(|repo| -> Result<u32> { Ok(repo.get(&document)?.version(&revision)) })?;
    Ok(AlertWritten {
        document,
        allergy: match &register {
            Register::Allergy(id) => Some(id.clone()),
            _ => None,
        },
        register: register.to_string(),
        revision,
        version,
        created: supersedes.is_empty(),
        resolved: conflict,
        supersedes,
        value,
    })
}

/// Records an allergy, or a new value of one (its criticality, reaction or status). The entry
/// is `allergy` if given, else the one entry whose value names the same substance, else a new
/// one. Refused while the entry is in conflict unless `resolve`; the model lets only a nurse
/// resolve (a carer records new entries and revises an entry that has one value).
pub fn record_allergy(
    device: &Device,
    patient: &PatientId,
    allergy: Option<&RecordId>,
    input: &AllergyInput,
    resolve: bool,
    clock: &Clock,
) -> Result<AlertWritten> {
    if input.substance.trim().is_empty() {
        return Err(ClientError::Invalid("an allergy needs a substance".into()));
    }
    let header = DocumentId::patient_header(patient);
    let entry = match allergy {
        Some(id) => id.clone(),
        None => {
            let named = device.with_repo(|repo| -> Result<Vec<RecordId>> {
                Ok(allergies_naming(repo.get(&header)?, &input.substance))
            })?;
            match named.as_slice() {
                [] => clock.new_id(),
                [one] => one.clone(),
                many => {
                    return Err(ClientError::Invalid(format!(
                        "{} entries name {}: {}; say which with --allergy",
                        many.len(),
                        input.substance,
                        many.iter()
                            .map(RecordId::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            }
        }
    };
    let value = RegisterValue::Allergy {
        substance: input.substance.trim().to_owned(),
        criticality: input.criticality,
        status: input.status,
        reaction: input
            .reaction
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned),
    };
    write_alert(
        device,
        patient,
        Register::Allergy(entry),
        value,
        resolve,
        clock,
    )
}

/// Records the resuscitation decision (nurse). Refused while it is in conflict unless
/// `resolve`.
pub fn record_resuscitation(
    device: &Device,
    patient: &PatientId,
    decision: ResuscitationDecision,
    comment: Option<&str>,
    resolve: bool,
    clock: &Clock,
) -> Result<AlertWritten> {
    let value = RegisterValue::Resuscitation {
        decision,
        comment: comment
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned),
    };
    write_alert(
        device,
        patient,
        Register::Resuscitation,
        value,
        resolve,
        clock,
    )
}
