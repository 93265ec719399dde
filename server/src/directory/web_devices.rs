//! Web devices (issue 15), over any backend: the device each member of staff's browser
//! sessions write as (`web-<user>`). A web device is a row in `devices` like an enrolled
//! phone's (so its signing key is registered and looked up as a phone's is), with a credential
//! nobody holds (it never connects), and a row in `web_devices` that keeps its Ed25519 key's
//! seed: the browser holds no key, so the server signs the browser's changes with it, as a
//! phone signs its uploads. Made on first use; never replaced.
//!
//! A person's web device (`web-<patient>`, their own browser sessions) is signed the same way,
//! but is not a row in `devices` (whose rows belong to staff users): its public key and seed are
//! a row in `person_web_devices`, and `signing_key` looks there too. An id is never in both.

use sync_core::signing::DeviceKey;
use sync_core::{DeviceId, PatientId, UserId};

use super::rows::{Backend, NewDevice, NewPersonDevice};
use super::rules::bytes32;
use super::{DirectoryError, DirectoryService};

/// The seed of `device`'s signing key: the kept one, or else `seed`, kept now together with
/// the device's row and its registered public key, in one transaction.
pub(super) fn key<B: Backend>(
    dir: &DirectoryService<B>,
    device: &DeviceId,
    user: &UserId,
    seed: [u8; 32],
    now_ms: i64,
) -> Result<[u8; 32], DirectoryError> {
    let public = DeviceKey::from_seed(seed).public();
    let made = dir.backend.write(|rows| {
        if let Some(kept) = rows.web_device_seed(device.as_str())? {
            return Ok((bytes32(kept, &format!("web device {device}: seed"))?, false));
        }
        if rows.device_exists(device.as_str())? || rows.person_device_exists(device.as_str())? {
            // An enrolled phone, or a person's web device, of that name: never taken over.
            return Err(DirectoryError::Exists {
                what: "device",
                id: device.to_string(),
            });
        }
        // A credential hash that no secret is known for: the web device cannot connect.
        let no_credential: [u8; 32] = rand::random();
        rows.insert_device(&NewDevice {
            id: device.as_str(),
            user: user.as_str(),
            secret_hash: &no_credential,
            created_ms: now_ms,
            signing_key: Some(&public.0),
        })?;
        rows.insert_web_device(device.as_str(), &seed, now_ms)?;
        Ok((seed, true))
    })?;
    if made.1 {
        tracing::info!(%device, %user, key = %public.to_hex(), "web device made, its key registered");
    }
    Ok(made.0)
}

/// The seed of the person `patient`'s web device `device`: the kept one, or else `seed`, kept
/// now together with its registered public key, in one transaction. A device of that id in
/// `devices` (a phone or a member of staff's web device), or another id kept for the person
/// -> [`DirectoryError::Exists`]; an unknown person -> [`DirectoryError::NotFound`].
pub(super) fn person_key<B: Backend>(
    dir: &DirectoryService<B>,
    device: &DeviceId,
    patient: &PatientId,
    seed: [u8; 32],
    now_ms: i64,
) -> Result<[u8; 32], DirectoryError> {
    let public = DeviceKey::from_seed(seed).public();
    let made = dir.backend.write(|rows| {
        if let Some((id, kept)) = rows.person_device(patient.as_str())? {
            if id != device.as_str() {
                return Err(DirectoryError::Exists {
                    what: "person's web device",
                    id,
                });
            }
            return Ok((bytes32(kept, &format!("web device {device}: seed"))?, false));
        }
        if rows.device_exists(device.as_str())? || rows.person_device_exists(device.as_str())? {
            return Err(DirectoryError::Exists {
                what: "device",
                id: device.to_string(),
            });
        }
        if !rows.patient_exists(patient.as_str())? {
            return Err(DirectoryError::NotFound {
                what: "patient",
                id: patient.to_string(),
            });
        }
        rows.insert_person_device(&NewPersonDevice {
            device: device.as_str(),
            patient: patient.as_str(),
            signing_key: &public.0,
            seed: &seed,
            created_ms: now_ms,
        })?;
        Ok((seed, true))
    })?;
    if made.1 {
        tracing::info!(%device, %patient, key = %public.to_hex(), "person's web device made, its key registered");
    }
    Ok(made.0)
}
