//! Streams across the FFI: a callback trait implemented by the app, and a handle that owns the
//! task feeding it. Dropping the handle (or calling its `cancel`/`stop`) ends the task.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nara_client::{ClientError, Device, SyncReport};
use tokio::runtime::Runtime;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

use crate::error::NaraError;
use crate::types::{FfiDeviceEvent, FfiStatus, FfiSyncReport};

/// Receives the device's status: once with the current status when subscribing, then every
/// change in order (a listener more than 256 changes behind skips to the current one). Called
/// on a background thread; do not call back into the device from it.
#[uniffi::export(callback_interface)]
pub trait StatusListener: Send + Sync {
    fn on_status(&self, status: FfiStatus);
}

/// Receives what the sync does as it happens (documents updated by others, conflicts and flags
/// raised, uploads acknowledged, refusals, access withdrawn), from `sync_now` and background
/// sync alike. Called on a background thread; do not call back into the device from it.
#[uniffi::export(callback_interface)]
pub trait EventListener: Send + Sync {
    fn on_event(&self, event: FfiDeviceEvent);
}

/// A subscription (status or events): ends when cancelled or dropped.
#[derive(Debug, uniffi::Object)]
pub struct SubscriptionHandle {
    task: JoinHandle<()>,
    /// Set on cancel; checked before every call to the listener, since an abort only takes
    /// effect when the task next yields.
    cancelled: Arc<AtomicBool>,
}

impl SubscriptionHandle {
    pub(crate) fn statuses(
        runtime: &Runtime,
        device: &Device,
        listener: Box<dyn StatusListener>,
    ) -> Self {
        let mut statuses = device.status_changes();
        let cancelled = Arc::new(AtomicBool::new(false));
        let stop = cancelled.clone();
        let task = runtime.spawn(async move {
            while let Some(status) = statuses.next().await {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                listener.on_status(status.into());
            }
        });
        Self { task, cancelled }
    }

    pub(crate) fn events(
        runtime: &Runtime,
        device: &Device,
        listener: Box<dyn EventListener>,
    ) -> Self {
        let mut events = device.events();
        let cancelled = Arc::new(AtomicBool::new(false));
        let stop = cancelled.clone();
        let task = runtime.spawn(async move {
            loop {
                let event = match events.recv().await {
                    Ok(event) => event.into(),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        FfiDeviceEvent::Lagged { missed }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if stop.load(Ordering::Acquire) {
                    break;
                }
                listener.on_event(event);
            }
        });
        Self { task, cancelled }
    }
}

#[uniffi::export]
impl SubscriptionHandle {
    /// Stops the subscription: once this returns the listener is not called again (a call
    /// already under way on the background thread may still finish).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.task.abort();
    }
}

impl Drop for SubscriptionHandle {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// Background sync: runs until stopped or dropped. Follow it with `subscribe` and
/// `subscribe_events`.
#[derive(Debug, uniffi::Object)]
pub struct WatchHandle {
    runtime: &'static Runtime,
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<Result<SyncReport, ClientError>>>>,
}

impl WatchHandle {
    pub(crate) fn spawn(runtime: &'static Runtime, device: Arc<Device>) -> Self {
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = runtime.spawn(async move {
            let stopped = async {
                let _ = stopped.await;
            };
            device.watch(stopped).await
        });
        Self {
            runtime,
            shutdown: Mutex::new(Some(shutdown)),
            task: Mutex::new(Some(task)),
        }
    }

    fn signal(&self) {
        if let Some(tx) = self
            .shutdown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = tx.send(());
        }
    }
}

#[uniffi::export]
impl WatchHandle {
    /// Stops background sync and waits until the connection is closed. Returns what it did,
    /// `None` if it was already stopped, or the permanent error that stopped it earlier (the
    /// device revoked). Blocks: call it off the UI thread.
    pub fn stop(&self) -> Result<Option<FfiSyncReport>, NaraError> {
        self.signal();
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(task) = task else {
            return Ok(None);
        };
        match self.runtime.block_on(task) {
            Ok(result) => Ok(Some(result?.into())),
            Err(join) => Err(NaraError::Internal {
                detail: format!("the sync task failed: {join}"),
            }),
        }
    }

    /// Whether background sync is still running (it ends by itself only on a permanent error).
    pub fn is_running(&self) -> bool {
        self.task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }
}

impl Drop for WatchHandle {
    /// Asks the connection to close; does not wait.
    fn drop(&mut self) {
        self.signal();
    }
}
