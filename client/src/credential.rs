//! The device's secrets, kept inside its store (SQLCipher-encrypted when the app gives a key),
//! never in `device.json`; and erasing everything when the server revokes the device.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sync_core::signing::DeviceKey;
use sync_core::store::{SqliteStore, Store};

use crate::config::{self, CONFIG_FILE, Enrollment, STORE_FILE, WIPED_FILE};
use crate::error::{ClientError, Result};

/// Store meta key of the credential (JSON).
const CREDENTIAL_KEY: &str = "client.credential";

/// What the device proves itself with. In the store, beside the documents it protects.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// The device secret the server issued at enrollment (sent as a bearer token).
    pub secret: String,
    /// Room for the device's signing key (a later issue); `None` until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<String>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("secret", &"<redacted>")
            .field(
                "signing_key",
                &self.signing_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Credential {
    pub fn new(secret: String) -> Self {
        Self {
            secret,
            signing_key: None,
        }
    }

    /// The credential in `store`, if any.
    pub fn load(store: &SqliteStore) -> Result<Option<Self>> {
        let Some(bytes) = store.meta(CREDENTIAL_KEY)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ClientError::ConfigDamaged {
                path: STORE_FILE.into(),
                detail: format!("the stored credential: {e}"),
            })
    }

    /// Writes the credential into `store` (one transaction, durable when it returns).
    /// A new credential with a new signing key (drawn from the OS's random source).
    pub fn with_new_key(secret: String) -> Result<Self> {
        Ok(Self {
            secret,
            signing_key: Some(hex::encode(new_device_key()?.seed())),
        })
    }

    /// The device's signing key, if it has one (a device enrolled before signed changes gets
    /// one on its first start, see [`Credential::ensure_key`]).
    pub fn device_key(&self) -> Result<Option<DeviceKey>> {
        let Some(text) = &self.signing_key else {
            return Ok(None);
        };
        let seed: [u8; 32] = hex::decode(text)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| ClientError::ConfigDamaged {
                path: STORE_FILE.into(),
                detail: "the stored signing key is not 32 bytes of hex".into(),
            })?;
        Ok(Some(DeviceKey::from_seed(seed)))
    }

    /// Makes the device's signing key if it has none (a device enrolled by an older build),
    /// and keeps it in the store with the secret. It is registered with the server on the next
    /// connection.
    pub fn ensure_key(&mut self, store: &mut SqliteStore) -> Result<DeviceKey> {
        if let Some(key) = self.device_key()? {
            return Ok(key);
        }
        let key = new_device_key()?;
        self.signing_key = Some(hex::encode(key.seed()));
        self.save(store)?;
        tracing::info!(public = %key.public().to_hex(), "made this device's signing key");
        Ok(key)
    }

    pub fn save(&self, store: &mut SqliteStore) -> Result<()> {
        let bytes = serde_json::to_vec(self).map_err(|e| ClientError::ConfigDamaged {
            path: STORE_FILE.into(),
            detail: e.to_string(),
        })?;
        store.set_meta(CREDENTIAL_KEY, &bytes)?;
        Ok(())
    }
}

/// Moves the secret an older build kept in `device.json` into `store`, then rewrites
/// `device.json` without it. Safe to repeat after a crash at any point: the store is written
/// first, and a secret still in `device.json` is moved again.
/// A new signing key from the OS's random source.
fn new_device_key() -> Result<DeviceKey> {
    use rand::TryRngCore;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| ClientError::Transport(format!("the OS random source failed: {e}")))?;
    Ok(DeviceKey::from_seed(seed))
}

pub fn migrate(
    home: &Path,
    enrollment: &Enrollment,
    legacy_secret: Option<String>,
    store: &mut SqliteStore,
) -> Result<()> {
    let Some(secret) = legacy_secret else {
        return Ok(());
    };
    let credential = match Credential::load(store)? {
        Some(mut c) => {
            c.secret = secret;
            c
        }
        None => Credential::new(secret),
    };
    credential.save(store)?;
    enrollment.save(home)?;
    tracing::info!(device = %enrollment.device, "moved the device secret from device.json into the store");
    Ok(())
}

/// Erases what this device holds: the store (documents, pending changes, cursors, the
/// credential) and `device.json`, leaving only `wiped.json` saying when and why. Called when
/// the server says the device is revoked. The caller must have closed the store.
pub fn wipe(home: &Path, at_ms: i64, why: &str) -> Result<()> {
    let marker = serde_json::json!({ "wiped_at_ms": at_ms, "reason": why }).to_string();
    config::write_private(home, WIPED_FILE, marker.as_bytes())?;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let path = home.join(format!("{STORE_FILE}{suffix}"));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ClientError::Io { path, source }),
        }
    }
    let path = home.join(CONFIG_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(ClientError::Io { path, source }),
    }
    if let Ok(dir) = std::fs::File::open(home) {
        let _ = dir.sync_all();
    }
    tracing::warn!(home = %home.display(), "device revoked: its store and credential were erased");
    Ok(())
}
