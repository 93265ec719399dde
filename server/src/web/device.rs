//! A member of staff's web device: the device their browser sessions write as
//! (`web-<user>`), and its signing key. The key is made on the server when the web device is
//! first used (seed bytes from the OS), its public key registered in the directory like a
//! phone's, and its seed kept in the directory (`Directory::web_device_key`): the browser holds
//! no key, so the server signs what the browser writes, as a phone signs its uploads.

use rand::TryRngCore;
use sync_core::signing::DeviceKey;
use sync_core::{Author, DeviceId};

use super::Page;
use crate::app::AppState;
use crate::directory::User;

/// The author of `user`'s browser changes: the user, in their role, on their web device.
pub(crate) fn author(user: &User) -> Result<Author, Page> {
    let device =
        DeviceId::new(format!("web-{}", user.id)).map_err(|e| Page::Internal(e.to_string()))?;
    Ok(Author::new(user.id.clone(), user.role, device))
}

/// The signing key of `author`'s web device: the one the directory keeps, or a new one made
/// from the OS's random source and registered now.
pub(crate) fn key(state: &AppState, author: &Author, now_ms: i64) -> Result<DeviceKey, Page> {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| Page::Internal(format!("the OS random source failed: {e}")))?;
    let kept = state
        .directory()
        .web_device_key(&author.device, &author.user, seed, now_ms)
        .map_err(|e| Page::Internal(e.to_string()))?;
    Ok(DeviceKey::from_seed(kept))
}
