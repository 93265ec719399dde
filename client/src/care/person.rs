//! "What matters to me" on a staff phone: the person's own entries in their plan, each with
//! who wrote it (`sync_core::model::person`). Read only: the model refuses such an entry from
//! any member of staff, so a phone can show them but never write or change one.

use super::*;

/// One of the person's own entries, as a phone shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WhatMattersShown {
    pub id: RecordId,
    /// The person (their patient id as the user, role `person`) and the device they wrote on.
    pub author: Author,
    pub at: Timestamp,
    pub text: String,
}

/// The person's own entries in their plan, oldest first; the read is logged like any other.
pub fn what_matters(device: &Device, patient: &PatientId) -> Result<Vec<WhatMattersShown>> {
    device.log_read(patient, "what matters to me")?;
    device.with_repo(|repo| {
        let plan = repo.get(&DocumentId::care_plan(patient))?;
        Ok(sync_core::model::person::what_matters(plan)
            .into_iter()
            .map(|e| WhatMattersShown {
                id: e.id,
                author: e.author,
                at: e.at,
                text: e.text,
            })
            .collect())
    })
}
