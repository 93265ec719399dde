//! Alerts on a person's header: allergies (FHIR AllergyIntolerance) and the resuscitation
//! decision, and the rule that a dose of a drug matching an active allergy needs the giver's
//! confirmation. Used by the device before it records a dose; pure, like the rest of the model.
//!
//! The match is by name, not by a drug database: a substance of at least
//! [`MIN_SUBSTANCE_CHARS`] letters or digits matches a drug whose name contains it ("penicillin"
//! matches "Fenoximetylpenicillin"), and a drug matches a substance that contains the drug's
//! first word ("Amoxicillin" matches "amoxicillin and clavulanic acid"), ignoring case, spaces
//! and punctuation. A brand name that does not contain its substance ("Kåvepenin") does not
//! match: the warning is an aid, never a guarantee.

use crate::ids::RecordId;
use crate::model::document::{CareDocument, RegisterState, RevisionView};
use crate::model::records::{AllergyStatus, Criticality, Register, RegisterValue};

/// The shortest substance (letters and digits) that is matched against drug names; shorter
/// ones ("C", "Fe") would match almost every drug.
pub const MIN_SUBSTANCE_CHARS: usize = 3;

/// An active allergy that a drug matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllergyMatch {
    pub allergy: RecordId,
    /// The revision whose value matched.
    pub revision: RecordId,
    pub substance: String,
    pub criticality: Criticality,
    pub reaction: Option<String>,
    /// The allergy is in conflict: at least one of its current values is active and matches.
    pub conflicting: bool,
}

fn letters(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether `substance` (an allergy's) and `drug` (an order's) name the same thing, by the
/// rule in the module's documentation.
pub fn substance_matches(substance: &str, drug: &str) -> bool {
    let s = letters(substance);
    let d = letters(drug);
    if s.chars().count() >= MIN_SUBSTANCE_CHARS && d.contains(&s) {
        return true;
    }
    let first = drug
        .split(|c: char| !c.is_alphanumeric())
        .find(|w| !w.is_empty())
        .map(letters)
        .unwrap_or_default();
    first.chars().count() >= MIN_SUBSTANCE_CHARS && s.contains(&first)
}

/// The allergy's value in one revision, if it is one.
pub fn allergy_value(
    view: &RevisionView,
) -> Option<(&str, Criticality, AllergyStatus, Option<&str>)> {
    match &view.revision.value {
        RegisterValue::Allergy {
            substance,
            criticality,
            status,
            reaction,
        } => Some((substance, *criticality, *status, reaction.as_deref())),
        _ => None,
    }
}

/// Every allergy of the person's header `header` that is active and matches `drug`. An
/// allergy in conflict matches if any of its current values is active and matches: while
/// nurses disagree, the giver is warned.
pub fn allergy_matches(header: &CareDocument, drug: &str) -> Vec<AllergyMatch> {
    let mut out = Vec::new();
    for register in header.registers() {
        let Register::Allergy(id) = &register else {
            continue;
        };
        let (heads, conflicting) = match header.register(&register) {
            RegisterState::Unset => continue,
            RegisterState::Value(v) => (vec![v], false),
            RegisterState::Conflict(c) => (c, true),
        };
        let hit = heads.iter().find_map(|v| {
            let (substance, criticality, status, reaction) = allergy_value(v)?;
            (status == AllergyStatus::Active && substance_matches(substance, drug)).then(|| {
                AllergyMatch {
                    allergy: id.clone(),
                    revision: v.id.clone(),
                    substance: substance.to_owned(),
                    criticality,
                    reaction: reaction.map(str::to_owned),
                    conflicting,
                }
            })
        });
        out.extend(hit);
    }
    out
}

/// The allergies of `header` whose current value (or one of whose values in conflict) names
/// `substance`, by the same match, for finding the entry a new value revises.
pub fn allergies_naming(header: &CareDocument, substance: &str) -> Vec<RecordId> {
    let want = letters(substance);
    header
        .registers()
        .into_iter()
        .filter_map(|register| {
            let Register::Allergy(id) = &register else {
                return None;
            };
            let heads = match header.register(&register) {
                RegisterState::Unset => Vec::new(),
                RegisterState::Value(v) => vec![v],
                RegisterState::Conflict(c) => c,
            };
            heads
                .iter()
                .filter_map(allergy_value)
                .any(|(s, ..)| letters(s) == want)
                .then(|| id.clone())
        })
        .collect()
}

#[cfg(test)]
#[path = "alerts_tests.rs"]
mod tests;
