//! The medication round's methods of [`NaraDevice`]: the signing list, the server's view of the
//! other phones, "when needed" doses and their follow-ups, and delegations. Each forwards to
//! `nara-client`'s care API; nothing is decided here.

use nara_client::care::{self, DelegationInput};
use nara_client::now;
use sync_core::model::round::Shift;
use sync_core::{Timestamp, UserId};

use crate::device::{NaraDevice, clock, patient, record};
use crate::error::NaraError;
use crate::types::{
    FfiAdministered, FfiDelegation, FfiDoseEffect, FfiRecorded, FfiRound, FfiStaffMember, all,
    named,
};

#[uniffi::export]
impl NaraDevice {
    /// Asks the server which phones could record the doses of this user's people and when each
    /// last synced, and the flags it raised (overdue slots, follow-ups); kept for offline use.
    /// `utc_offset_minutes`: the local offset the slots' times are in.
    pub fn refresh_round(&self, utc_offset_minutes: i32) -> Result<(), NaraError> {
        self.runtime
            .block_on(self.inner.refresh_round(utc_offset_minutes))?;
        Ok(())
    }

    /// The signing list from `from_ms` to `to_ms` (slots' local times at `utc_offset_minutes`),
    /// of `patient` or everyone on this device: every due slot with its status, the "when
    /// needed" follow-ups, and the server's flags as it last said them.
    pub fn round(
        &self,
        patient: Option<String>,
        from_ms: i64,
        to_ms: i64,
        utc_offset_minutes: i32,
    ) -> Result<FfiRound, NaraError> {
        let patient = patient.map(self::patient).transpose()?;
        let shift = Shift {
            from: Timestamp(from_ms),
            to: Timestamp(to_ms),
            utc_offset_minutes,
        };
        let r = care::round(&self.inner, &shift, patient.as_ref(), now())?;
        Ok(named(&self.inner, || r.into()))
    }

    /// Gives a dose of a "when needed" order now. Refused past the order's limits unless
    /// `anyway_reason` says why (then kept and flagged), and without a valid delegation where
    /// one is needed; unless `allergy_confirmed`, refused with `NaraError::AllergyWarning` if
    /// the drug matches an active allergy.
    #[uniffi::method(default(allergy_confirmed = false))]
    pub fn give_when_needed(
        &self,
        patient: String,
        order: String,
        anyway_reason: Option<String>,
        utc_offset_minutes: i32,
        today: String,
        allergy_confirmed: bool,
    ) -> Result<FfiAdministered, NaraError> {
        Ok(care::give_when_needed(
            &self.inner,
            &self::patient(patient)?,
            &record(order)?,
            anyway_reason.as_deref(),
            allergy_confirmed,
            utc_offset_minutes,
            &clock(today)?,
        )?
        .into())
    }

    /// Records the effect of a "when needed" dose (its follow-up).
    pub fn record_effect(
        &self,
        patient: String,
        administration: String,
        effect: FfiDoseEffect,
        note: Option<String>,
        today: String,
    ) -> Result<FfiRecorded, NaraError> {
        Ok(care::record_effect(
            &self.inner,
            &self::patient(patient)?,
            &record(administration)?,
            effect.into(),
            note.as_deref(),
            &clock(today)?,
        )?
        .into())
    }

    /// Delegates `scope` (`medication`, named tasks) to worker `to` for `patients`, from the
    /// local date `from_date` to `until_date` (`YYYY-MM-DD`, both included; at most a year).
    #[allow(clippy::too_many_arguments)] // the fields of one delegation
    pub fn delegate(
        &self,
        patients: Vec<String>,
        to: String,
        scope: Vec<String>,
        from_date: String,
        until_date: String,
        utc_offset_minutes: i32,
        today: String,
    ) -> Result<Vec<FfiDelegation>, NaraError> {
        let patients = patients
            .into_iter()
            .map(self::patient)
            .collect::<Result<Vec<_>, _>>()?;
        let input = DelegationInput::from_dates(
            UserId::new(to)?,
            scope,
            &from_date,
            &until_date,
            utc_offset_minutes,
        )?;
        let list = care::delegate(&self.inner, &patients, &input, &clock(today)?)?;
        Ok(named(&self.inner, || all(list)))
    }

    /// Revokes a delegation for `patient` (nurse): valid no more from now on.
    pub fn revoke_delegation(
        &self,
        patient: String,
        delegation: String,
        today: String,
    ) -> Result<Vec<FfiDelegation>, NaraError> {
        let list = care::revoke_delegation(
            &self.inner,
            &self::patient(patient)?,
            &record(delegation)?,
            &clock(today)?,
        )?;
        Ok(named(&self.inner, || all(list)))
    }

    /// Delegations of `patient` or everyone on this device; with `ending_within_days`, only
    /// those ending within that many days.
    pub fn delegations(
        &self,
        patient: Option<String>,
        ending_within_days: Option<u32>,
    ) -> Result<Vec<FfiDelegation>, NaraError> {
        let patient = patient.map(self::patient).transpose()?;
        let list = care::delegations(&self.inner, patient.as_ref(), ending_within_days, now())?;
        Ok(named(&self.inner, || all(list)))
    }

    /// The staff this user works with (name, role, organisation), as the server last said
    /// (`refresh_round` or `refresh_staff`); empty before. The views name authors from it
    /// (`FfiAuthor.name`).
    pub fn staff(&self) -> Result<Vec<FfiStaffMember>, NaraError> {
        let staff = self.inner.staff()?;
        Ok(all(staff.members()))
    }

    /// Asks the server for the names of the staff this user works with and keeps them for
    /// offline use, without changing the signing list's view of the server (`refresh_round`).
    pub fn refresh_staff(&self) -> Result<(), NaraError> {
        self.runtime.block_on(self.inner.refresh_staff())?;
        Ok(())
    }
}
