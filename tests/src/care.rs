//! Steps through the device runtime's care API that many tests repeat.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use nara_client::Device;
use nara_client::care::{self, Clock, DelegationInput};
use sync_core::{PatientId, Timestamp, UserId};

use crate::now_ms;

const DAY_MS: i64 = 24 * 3_600_000;

/// The nurse on `nurse` delegates medication for `patient` to `user` for a month either side of
/// now (a carer's dose of a delegated order needs it, issue 14).
pub fn delegate_for_a_month(nurse: &Device, patient: &PatientId, user: &str, clock: &Clock) {
    let day = |t: i64| sync_core::model::round::local_slot(Timestamp(t), 0)[..10].to_owned();
    let input = DelegationInput::from_dates(
        UserId::new(user).unwrap(),
        vec!["medication".into()],
        &day(now_ms() - 30 * DAY_MS),
        &day(now_ms() + 30 * DAY_MS),
        0,
    )
    .unwrap();
    care::delegate(nurse, std::slice::from_ref(patient), &input, clock).unwrap();
}
