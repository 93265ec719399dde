//! What each device last reported it had waiting for upload (issue 15, the coordinator's
//! dashboard), over any backend. Written with the connection's activity
//! (`Directory::record_connection`): no generation bump.

use std::collections::BTreeMap;

use sync_core::DeviceId;

use super::rows::Backend;
use super::rules::{parse_device, stored_u64};
use super::{DirectoryError, DirectoryService, Waiting};

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
