//! A person's consent that a relative may read their record (issue 15): the rules of
//! [`Directory::grant_relative`](super::Directory::grant_relative) and its kin, over any
//! backend. A consent is the person's own act; staff cannot give it for them (the web views
//! give it only from the person's own session). A withdrawn consent stays as history.

use sync_core::PatientId;

use super::rows::Backend;
use super::rules::relative_name;
use super::{DirectoryError, DirectoryService, MAX_RELATIVES, RelativeConsent};

pub(super) fn grant<B: Backend>(
    dir: &DirectoryService<B>,
    patient: &PatientId,
    relative: &str,
    now_ms: i64,
) -> Result<RelativeConsent, DirectoryError> {
    let relative = relative_name(relative)?;
    dir.change(|rows| {
        if !rows.patient_exists(patient.as_str())? {
            return Err(DirectoryError::NotFound {
                what: "patient",
                id: patient.to_string(),
            });
        }
        let live = rows.live_consents(patient.as_str())?;
        if live.iter().any(|(r, _)| r == relative) {
            return Err(DirectoryError::Exists {
                what: "consent for relative",
                id: relative.to_owned(),
            });
        }
        if live.len() >= MAX_RELATIVES {
            return Err(DirectoryError::Invalid(format!(
                "a person may authorise at most {MAX_RELATIVES} relatives"
            )));
        }
        rows.insert_consent(patient.as_str(), relative, now_ms)
    })?;
    tracing::info!(patient = %patient, "relative's consent recorded");
    Ok(RelativeConsent {
        patient: patient.clone(),
        relative: relative.to_owned(),
        granted_ms: now_ms,
    })
}

pub(super) fn withdraw<B: Backend>(
    dir: &DirectoryService<B>,
    patient: &PatientId,
    relative: &str,
    now_ms: i64,
) -> Result<(), DirectoryError> {
    let relative = relative.trim();
    dir.change(|rows| {
        if !rows.withdraw_consent(patient.as_str(), relative, now_ms)? {
            return Err(DirectoryError::NotFound {
                what: "consent for relative",
                id: relative.to_owned(),
            });
        }
        Ok(())
    })?;
    tracing::info!(patient = %patient, "relative's consent withdrawn");
    Ok(())
}

pub(super) fn live<B: Backend>(
    dir: &DirectoryService<B>,
    patient: &PatientId,
) -> Result<Vec<RelativeConsent>, DirectoryError> {
    let rows = dir
        .backend
        .read(|rows| rows.live_consents(patient.as_str()))?;
    Ok(rows
        .into_iter()
        .map(|(relative, granted_ms)| RelativeConsent {
            patient: patient.clone(),
            relative,
            granted_ms,
        })
        .collect())
}
