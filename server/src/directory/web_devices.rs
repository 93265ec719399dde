//! Web devices (issue 15): the device each member of staff's browser sessions write as
//! (`web-<user>`), for [`SqliteDirectory`]'s [`Directory`] methods. A web device is a row in
//! `devices` like an enrolled phone's (so its signing key is registered and looked up as a
//! phone's is), with a credential nobody holds (it never connects), and a row in `web_devices`
//! that keeps its Ed25519 key's seed: the browser holds no key, so the server signs the
//! browser's changes with it, as a phone signs its uploads. Made on first use; never replaced.

use rusqlite::{OptionalExtension, params};
use sync_core::signing::DeviceKey;
use sync_core::{DeviceId, UserId};

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
    if owner.is_some() {
        // An enrolled phone of that name: never taken over.
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
