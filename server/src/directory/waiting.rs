//! What each device last reported it had waiting for upload (issue 15, the coordinator's
//! dashboard): `devices.waiting` and `devices.waiting_ms`, for [`SqliteDirectory`]'s
//! [`Directory`] methods. Activity, like `touch`: no generation bump.

use std::collections::BTreeMap;

use rusqlite::params;
use sync_core::DeviceId;

use super::sqlite::parse_device;
use super::{DirectoryError, SqliteDirectory, Waiting};
use crate::db;

pub(super) fn report(
    dir: &SqliteDirectory,
    device: &DeviceId,
    changes: u64,
    now_ms: i64,
) -> Result<(), DirectoryError> {
    let changes = db::to_i64(changes, "waiting").map_err(DirectoryError::Invalid)?;
    let n = dir
        .conn()
        .prepare_cached("UPDATE devices SET waiting = ?2, waiting_ms = ?3 WHERE id = ?1")?
        .execute(params![device.as_str(), changes, now_ms])?;
    if n == 0 {
        return Err(DirectoryError::NotFound {
            what: "device",
            id: device.to_string(),
        });
    }
    Ok(())
}

pub(super) fn all(dir: &SqliteDirectory) -> Result<BTreeMap<DeviceId, Waiting>, DirectoryError> {
    let conn = dir.conn();
    let mut stmt = conn.prepare_cached(
        "SELECT id, waiting, waiting_ms FROM devices \
         WHERE waiting IS NOT NULL AND waiting_ms IS NOT NULL",
    )?;
    let rows: Vec<(String, i64, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    rows.into_iter()
        .map(|(id, changes, at_ms)| {
            Ok((
                parse_device(id)?,
                Waiting {
                    changes: db::to_u64(changes, "waiting").map_err(DirectoryError::BadRow)?,
                    at_ms,
                },
            ))
        })
        .collect()
}
