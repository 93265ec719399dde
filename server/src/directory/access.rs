//! Access state as rows (issue 12): when an assignment ended (with the feed's head then), and
//! what each device was told of a withdrawal, over any backend. The decisions on these rows are
//! `sync_core::protocol::policy::CareRules`, the same in the server and the simulation; here
//! only their transitions, in the directory's transactions, so every node reads the same.

use std::collections::BTreeMap;

use sync_core::protocol::policy::{AccessRows, Ended, WRITE_GRACE_MS, Withdrawal};
use sync_core::{DeviceId, PatientId, UserId};

use super::rows::{Backend, EndedRow, Rows, WithdrawalRow};
use super::rules::{parse_device, parse_patient, parse_user, stored_u64, to_stored};
use super::{DirectoryError, DirectoryService};

/// After an assignment was made: its earlier end and withdrawals are forgotten.
pub(super) fn assigned(
    rows: &mut dyn Rows,
    user: &str,
    patient: &str,
) -> Result<(), DirectoryError> {
    rows.delete_ended(user, patient)?;
    rows.delete_withdrawals(user, patient)
}

/// After an assignment was deleted: its end recorded, ends past the grace dropped.
pub(super) fn ended(
    rows: &mut dyn Rows,
    user: &str,
    patient: &str,
    ended: Ended,
) -> Result<(), DirectoryError> {
    rows.put_ended(&EndedRow {
        user: user.to_owned(),
        patient: patient.to_owned(),
        at_ms: ended.at_ms,
        head: to_stored(ended.head, "feed head")?,
    })?;
    rows.delete_ended_before(ended.at_ms.saturating_sub(WRITE_GRACE_MS))?;
    // A withdrawal of an earlier end of this pair (one assigned again through another way)
    // belongs to that end.
    rows.delete_withdrawals(user, patient)
}

pub(super) fn read<B: Backend>(dir: &DirectoryService<B>) -> Result<AccessRows, DirectoryError> {
    let (assignments, ended, withdrawals) = dir
        .backend
        .read(|rows| Ok((rows.assignments()?, rows.ended()?, rows.withdrawals()?)))?;
    let mut out = AccessRows::default();
    for (user, patient) in assignments {
        out.assignments
            .entry(parse_user(user)?)
            .or_default()
            .insert(parse_patient(patient)?);
    }
    for e in ended {
        out.ended.insert(
            (parse_user(e.user)?, parse_patient(e.patient)?),
            Ended {
                at_ms: e.at_ms,
                head: stored_u64(e.head, "feed head")?,
            },
        );
    }
    for w in withdrawals {
        out.withdrawals.insert(
            (
                parse_user(w.user)?,
                parse_device(w.device)?,
                parse_patient(w.patient)?,
            ),
            Withdrawal {
                told: w.told,
                sent: u32::try_from(w.sent.max(0)).unwrap_or(u32::MAX),
            },
        );
    }
    Ok(out)
}

fn row_of(
    rows: &mut dyn Rows,
    user: &UserId,
    device: &DeviceId,
    patient: &PatientId,
) -> Result<WithdrawalRow, DirectoryError> {
    Ok(rows
        .withdrawal(user.as_str(), device.as_str(), patient.as_str())?
        .unwrap_or_else(|| WithdrawalRow {
            user: user.to_string(),
            device: device.to_string(),
            patient: patient.to_string(),
            told: false,
            sent: 0,
        }))
}

pub(super) fn sent<B: Backend>(
    dir: &DirectoryService<B>,
    user: &UserId,
    device: &DeviceId,
    patient: &PatientId,
) -> Result<(), DirectoryError> {
    dir.change(|rows| {
        let mut row = row_of(rows, user, device, patient)?;
        if !row.told {
            row.sent = row.sent.saturating_add(1);
            rows.put_withdrawal(&row)?;
        }
        Ok(())
    })
}

pub(super) fn told<B: Backend>(
    dir: &DirectoryService<B>,
    user: &UserId,
    device: &DeviceId,
    patient: &PatientId,
) -> Result<bool, DirectoryError> {
    // Read first: a device told again (every later connection confirms it) writes nothing.
    let known = dir.backend.read(|rows| {
        Ok(rows
            .withdrawal(user.as_str(), device.as_str(), patient.as_str())?
            .is_some_and(|w| w.told))
    })?;
    if known {
        return Ok(false);
    }
    dir.change(|rows| {
        let mut row = row_of(rows, user, device, patient)?;
        if row.told {
            return Ok(false);
        }
        row.told = true;
        rows.put_withdrawal(&row)?;
        Ok(true)
    })
}

pub(super) fn import<B: Backend>(
    dir: &DirectoryService<B>,
    legacy: &AccessRows,
) -> Result<usize, DirectoryError> {
    if legacy.ended.is_empty() && legacy.withdrawals.is_empty() {
        return Ok(0);
    }
    dir.change(|rows| {
        let assigned: std::collections::BTreeSet<(String, String)> =
            rows.assignments()?.into_iter().collect();
        let mut ends: BTreeMap<(String, String), ()> = rows
            .ended()?
            .into_iter()
            .map(|e| ((e.user, e.patient), ()))
            .collect();
        let known: std::collections::BTreeSet<(String, String, String)> = rows
            .withdrawals()?
            .into_iter()
            .map(|w| (w.user, w.device, w.patient))
            .collect();
        let mut added = 0;
        for ((user, patient), e) in &legacy.ended {
            let pair = (user.to_string(), patient.to_string());
            if assigned.contains(&pair) || ends.contains_key(&pair) {
                continue;
            }
            rows.put_ended(&EndedRow {
                user: pair.0.clone(),
                patient: pair.1.clone(),
                at_ms: e.at_ms,
                head: to_stored(e.head, "feed head")?,
            })?;
            ends.insert(pair, ());
            added += 1;
        }
        for ((user, device, patient), w) in &legacy.withdrawals {
            let pair = (user.to_string(), patient.to_string());
            let key = (pair.0.clone(), device.to_string(), pair.1.clone());
            if !ends.contains_key(&pair) || known.contains(&key) {
                continue;
            }
            rows.put_withdrawal(&WithdrawalRow {
                user: key.0,
                device: key.1,
                patient: key.2,
                told: w.told,
                sent: i64::from(w.sent),
            })?;
            added += 1;
        }
        Ok(added)
    })
}
