//! Web devices (issue 15): the device each member of staff's browser sessions write as
//! (`web-<user>`), for [`SqliteDirectory`]'s [`Directory`] methods. A web device is a row in
//! `devices` like an enrolled phone's (so its signing key is registered and looked up as a
//! phone's is), with a credential nobody holds (it never connects), and a row in `web_devices`
//! that keeps its Ed25519 key's seed: the browser holds no key, so the server signs the
//! browser's changes with it, as a phone signs its uploads. Made on first use; never replaced.
//!
//! A person's web device (`web-<patient>`, their own browser sessions) is signed the same way,
//! but is not a row in `devices` (whose rows belong to staff users): its public key and seed are
//! a row in `person_web_devices`, and `signing_key` looks there too. An id is never in both.

use rusqlite::{OptionalExtension, params};
use sync_core::signing::DeviceKey;
use sync_core::{DeviceId, PatientId, UserId};

use super::{DirectoryError, SqliteDirectory};
use crate::db;

/// The seed of `device`'s signing key: the kept one, or else `seed`, kept now together with
/// the device's row and its registered public key, in one transaction.
pub(super) fn key(
    dir: &SqliteDirectory,
    device: &DeviceId,
    user: &UserId,
    seed: [u8; 32],
    now_ms: i64,
) -> Result<[u8; 32], DirectoryError> {
    let mut conn = dir.conn();
    let tx = db::write_tx(&mut conn)?;
    let kept: Option<Vec<u8>> = tx
        .prepare_cached("SELECT seed FROM web_devices WHERE device_id = ?1")?
        .query_row([device.as_str()], |r| r.get(0))
        .optional()?;
    if let Some(kept) = kept {
        return kept
            .try_into()
            .map_err(|_| DirectoryError::BadRow(format!("web device {device}: seed length")));
    }
    let owner: Option<String> = tx
        .prepare_cached("SELECT user_id FROM devices WHERE id = ?1")?
        .query_row([device.as_str()], |r| r.get(0))
        .optional()?;
    if owner.is_some() || person_device_exists(&tx, device)? {
        // An enrolled phone, or a person's web device, of that name: never taken over.
        return Err(DirectoryError::Exists {
            what: "device",
            id: device.to_string(),
        });
    }
    let public = DeviceKey::from_seed(seed).public();
    // A credential hash that no secret is known for: the web device cannot connect.
    let no_credential: [u8; 32] = rand::random();
    tx.prepare_cached(
        "INSERT INTO devices (id, user_id, secret_hash, created_ms, signing_key) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        device.as_str(),
        user.as_str(),
        &no_credential[..],
        now_ms,
        &public.0[..]
    ])?;
    tx.prepare_cached("INSERT INTO web_devices (device_id, seed, created_ms) VALUES (?1, ?2, ?3)")?
        .execute(params![device.as_str(), &seed[..], now_ms])?;
    tx.commit()?;
    tracing::info!(%device, %user, key = %public.to_hex(), "web device made, its key registered");
    Ok(seed)
}

fn person_device_exists(
    tx: &rusqlite::Transaction<'_>,
    device: &DeviceId,
) -> Result<bool, DirectoryError> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM person_web_devices WHERE device_id = ?1")?
        .query_row([device.as_str()], |_| Ok(()))
        .optional()?
        .is_some())
}

/// The seed of the person `patient`'s web device `device`: the kept one, or else `seed`, kept
/// now together with its registered public key, in one transaction. A device of that id in
/// `devices` (a phone or a member of staff's web device), or another id kept for the person
/// -> [`DirectoryError::Exists`]; an unknown person -> [`DirectoryError::NotFound`].
pub(super) fn person_key(
    dir: &SqliteDirectory,
    device: &DeviceId,
    patient: &PatientId,
    seed: [u8; 32],
    now_ms: i64,
) -> Result<[u8; 32], DirectoryError> {
    let mut conn = dir.conn();
    let tx = db::write_tx(&mut conn)?;
    let kept: Option<(String, Vec<u8>)> = tx
        .prepare_cached("SELECT device_id, seed FROM person_web_devices WHERE patient_id = ?1")?
        .query_row([patient.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((id, kept)) = kept {
        if id != device.as_str() {
            return Err(DirectoryError::Exists {
                what: "person's web device",
                id,
            });
        }
        return kept
            .try_into()
            .map_err(|_| DirectoryError::BadRow(format!("web device {device}: seed length")));
    }
    let taken = tx
        .prepare_cached("SELECT 1 FROM devices WHERE id = ?1")?
        .query_row([device.as_str()], |_| Ok(()))
        .optional()?
        .is_some();
    if taken || person_device_exists(&tx, device)? {
        return Err(DirectoryError::Exists {
            what: "device",
            id: device.to_string(),
        });
    }
    let known = tx
        .prepare_cached("SELECT 1 FROM patients WHERE id = ?1")?
        .query_row([patient.as_str()], |_| Ok(()))
        .optional()?
        .is_some();
    if !known {
        return Err(DirectoryError::NotFound {
            what: "patient",
            id: patient.to_string(),
        });
    }
    let public = DeviceKey::from_seed(seed).public();
    tx.prepare_cached(
        "INSERT INTO person_web_devices (device_id, patient_id, signing_key, seed, created_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        device.as_str(),
        patient.as_str(),
        &public.0[..],
        &seed[..],
        now_ms
    ])?;
    tx.commit()?;
    tracing::info!(%device, %patient, key = %public.to_hex(), "person's web device made, its key registered");
    Ok(seed)
}
