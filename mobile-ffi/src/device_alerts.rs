//! [`NaraDevice`]'s alerts, corrections and handover: allergies, the resuscitation decision,
//! the allergy check before a dose, entered-in-error marks, and what changed for a person since
//! this user last viewed them. One-line forwards to `nara_client::care`.

use nara_client::care;

use crate::NaraDevice;
use crate::device::{clock, patient, record};
use crate::error::NaraError;
use crate::types::{
    FfiAlertWritten, FfiAllergyInput, FfiAllergyWarning, FfiCorrected, FfiHandover,
    FfiJournalEntry, FfiResuscitationDecision, all, named,
};

#[uniffi::export]
impl NaraDevice {
    /// Records an allergy or a new value of one. The entry is `allergy` if given, else the one
    /// entry naming the same substance, else a new one. While the entry is in conflict only a
    /// nurse writes it, with `resolve` (`NaraError::InvalidArgument` otherwise).
    pub fn record_allergy(
        &self,
        patient: String,
        allergy: Option<String>,
        input: FfiAllergyInput,
        resolve: bool,
        today: String,
    ) -> Result<FfiAlertWritten, NaraError> {
        let allergy = allergy.map(record).transpose()?;
        Ok(care::record_allergy(
            &self.inner,
            &self::patient(patient)?,
            allergy.as_ref(),
            &input.into(),
            resolve,
            &clock(today)?,
        )?
        .into())
    }

    /// Records the resuscitation decision (nurse); `resolve` while it is in conflict.
    pub fn record_resuscitation(
        &self,
        patient: String,
        decision: FfiResuscitationDecision,
        comment: Option<String>,
        resolve: bool,
        today: String,
    ) -> Result<FfiAlertWritten, NaraError> {
        Ok(care::record_resuscitation(
            &self.inner,
            &self::patient(patient)?,
            decision.into(),
            comment.as_deref(),
            resolve,
            &clock(today)?,
        )?
        .into())
    }

    /// The active allergies of `patient` that `drug` matches (what `give` warns about).
    pub fn allergy_warnings(
        &self,
        patient: String,
        drug: String,
    ) -> Result<Vec<FfiAllergyWarning>, NaraError> {
        Ok(all(care::allergy_warnings(
            &self.inner,
            &self::patient(patient)?,
            &drug,
        )?))
    }

    /// Marks a note, an observation or an administration entered in error, with a reason.
    /// The record stays; two marks made at once are both kept.
    pub fn correct(
        &self,
        patient: String,
        record: String,
        reason: String,
        today: String,
    ) -> Result<FfiCorrected, NaraError> {
        let c = care::correct(
            &self.inner,
            &self::patient(patient)?,
            &self::record(record)?,
            &reason,
            &clock(today)?,
        )?;
        Ok(named(&self.inner, || c.into()))
    }

    /// One note, observation or administration of `patient`, with its entered-in-error marks.
    pub fn record(&self, patient: String, record: String) -> Result<FfiJournalEntry, NaraError> {
        let r = care::record(
            &self.inner,
            &self::patient(patient)?,
            &self::record(record)?,
        )?;
        Ok(named(&self.inner, || r.into()))
    }

    /// What others recorded for `patient` since this user last viewed them on this device
    /// ([`NaraDevice::overview`] or a handover; never: the last 24 hours), newest first; logged
    /// as a read, and counts as a view: the next handover starts from now.
    pub fn handover(&self, patient: String, today: String) -> Result<FfiHandover, NaraError> {
        let h = care::handover(&self.inner, &self::patient(patient)?, &clock(today)?)?;
        Ok(named(&self.inner, || h.into()))
    }
}
