//! What each device last reported it had waiting for upload (issue 15, the coordinator's
//! dashboard), over any backend. Activity, like `touch`: no generation bump.

use std::collections::BTreeMap;

use sync_core::DeviceId;

use super::rows::Backend;
use super::rules::{parse_device, stored_u64, to_stored};
use super::{DirectoryError, DirectoryService, Waiting};

pub(super) fn report<B: Backend>(
    dir: &DirectoryService<B>,
    device: &DeviceId,
    changes: u64,
    now_ms: i64,
) -> Result<(), DirectoryError> {
    let changes = to_stored(changes, "waiting")?;
    dir.backend.activity(|rows| {
        if !rows.set_waiting(device.as_str(), changes, now_ms)? {
            return Err(DirectoryError::NotFound {
                what: "device",
                id: device.to_string(),
            });
        }
        Ok(())
    })
}

pub(super) fn all<B: Backend>(
    dir: &DirectoryService<B>,
) -> Result<BTreeMap<DeviceId, Waiting>, DirectoryError> {
    let rows = dir.backend.read(|rows| rows.waiting())?;
    rows.into_iter()
        .map(|(id, changes, at_ms)| {
            Ok((
                parse_device(id)?,
                Waiting {
                    changes: stored_u64(changes, "waiting")?,
                    at_ms,
                },
            ))
        })
        .collect()
}
