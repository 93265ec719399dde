//! The web devices browser sessions write as, and their signing keys: a member of staff's
//! (`web-<user>`) and a person's own (`web-<patient>`, "what matters to me"). A key is made on
//! the server when the web device is first used (seed bytes from the OS), its public key
//! registered in the directory where a phone's is looked up, and its seed kept in the directory
//! (`Directory::web_device_key`, `Directory::person_device_key`): the browser holds no key, so
//! the server signs what the browser writes, as a phone signs its uploads.

use rand::TryRngCore;
use sync_core::signing::DeviceKey;
use sync_core::{Author, DeviceId, PatientId};

use super::Page;
use crate::app::AppState;
use crate::directory::User;

/// The author of `user`'s browser changes: the user, in their role, on their web device.
pub(crate) fn author(user: &User) -> Result<Author, Page> {
    let device =
        DeviceId::new(format!("web-{}", user.id)).map_err(|e| Page::Internal(e.to_string()))?;
    Ok(Author::new(user.id.clone(), user.role, device))
}

/// 32 seed bytes from the OS's random source.
fn os_seed() -> Result<[u8; 32], Page> {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| Page::Internal(format!("the OS random source failed: {e}")))?;
    Ok(seed)
}

/// The signing key of `author`'s web device: the one the directory keeps, or a new one made
/// from the OS's random source and registered now.
pub(crate) fn key(state: &AppState, author: &Author, now_ms: i64) -> Result<DeviceKey, Page> {
    let kept = state
        .directory()
        .web_device_key(&author.device, &author.user, os_seed()?, now_ms)
        .map_err(|e| Page::Internal(e.to_string()))?;
    Ok(DeviceKey::from_seed(kept))
}

/// The signing key of the person `patient`'s web device (`author`, from
/// [`super::person::person_author`]): the one the directory keeps, or a new one made from the
/// OS's random source and registered now.
pub(crate) fn person_key(
    state: &AppState,
    patient: &PatientId,
    author: &Author,
    now_ms: i64,
) -> Result<DeviceKey, Page> {
    let kept = state
        .directory()
        .person_device_key(&author.device, patient, os_seed()?, now_ms)
        .map_err(|e| Page::Internal(e.to_string()))?;
    Ok(DeviceKey::from_seed(kept))
}
