//! The device's status, published two ways: the latest value (a status line, a test waiting for
//! "in sync") and every change in order (an app or a log that must hear each transition; the
//! latest value alone coalesces a quick "connecting, syncing, in sync" into its last step).

use tokio::sync::{broadcast, watch};

use super::{Device, Status};

/// Changes a subscriber of [`Device::status_changes`] may fall behind before it skips to the
/// current status. A catch-up reports its progress once a batch: this is 256 batches of it.
const CHANGE_BUFFER: usize = 256;

/// Where the status is kept and announced.
#[derive(Debug)]
pub(super) struct StatusCell {
    latest: watch::Sender<Status>,
    changes: broadcast::Sender<Status>,
}

impl StatusCell {
    pub(super) fn new(initial: Status) -> Self {
        let (latest, _) = watch::channel(initial);
        let (changes, _) = broadcast::channel(CHANGE_BUFFER);
        StatusCell { latest, changes }
    }

    fn set(&self, status: Status) {
        self.latest.send_if_modified(|s| {
            // An erased device stays so.
            if *s == status || matches!(s, Status::Wiped { .. }) {
                false
            } else {
                // Sent while the watch is write-locked, so a subscriber (which reads the watch
                // and subscribes under its read lock) hears each change exactly once.
                let _ = self.changes.send(status.clone());
                *s = status;
                true
            }
        });
    }

    /// The current status and a receiver of every change after it, taken atomically.
    fn current_and_changes(&self) -> (Status, broadcast::Receiver<Status>) {
        let current = self.latest.borrow();
        (current.clone(), self.changes.subscribe())
    }
}

/// Every status change of a device, in order, starting with the status when subscribing (see
/// [`Device::status_changes`]).
#[derive(Debug)]
pub struct StatusChanges {
    first: Option<Status>,
    changes: broadcast::Receiver<Status>,
    latest: watch::Receiver<Status>,
}

impl StatusChanges {
    /// The next status: the current one first, then each change as it happens. `None` once the
    /// device is gone. A subscriber that fell more than 256 changes behind gets the current
    /// status next and continues from there (the changes in between are skipped, never
    /// reordered).
    pub async fn next(&mut self) -> Option<Status> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        match self.changes.recv().await {
            Ok(status) => Some(status),
            Err(broadcast::error::RecvError::Closed) => None,
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // The watch's read lock orders this against `StatusCell::set`, as in
                // `current_and_changes`.
                let current = self.latest.borrow();
                self.changes = self.changes.resubscribe();
                Some(current.clone())
            }
        }
    }
}

impl Device {
    /// The current status.
    pub fn status(&self) -> Status {
        self.status.latest.borrow().clone()
    }

    /// The latest status, for the app's status line: quick successive changes may be seen
    /// only as their last one. For every change in order, take [`Device::status_changes`].
    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.status.latest.subscribe()
    }

    /// Every status change in order, starting with the current status.
    pub fn status_changes(&self) -> StatusChanges {
        let (first, changes) = self.status.current_and_changes();
        StatusChanges {
            first: Some(first),
            changes,
            latest: self.status.latest.subscribe(),
        }
    }

    /// The offline status, with the clock's offset if it is off.
    pub(super) fn offline(&self) -> Status {
        Status::Offline {
            clock_off_by_ms: self.clock_off_by(),
        }
    }

    pub(super) fn clock_off_by(&self) -> Option<i64> {
        *self.clock_off.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn set_status(&self, status: Status) {
        self.status.set(status);
    }
}
