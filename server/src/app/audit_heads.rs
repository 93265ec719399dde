//! The server's export of its signed audit head ([`crate::audit::heads`]): every
//! [`HeadExport::every`] when the head moved, and once more at a clean shutdown, once the
//! sessions have closed (their last records are in). Storage and file work run off the async
//! threads. A failed export is logged and tried again at the next tick; the service goes on
//! (the chain itself is intact, and the next export covers it).

use std::sync::Mutex;

use crate::audit::heads::{Checkpoints, Exporter, HeadError, HeadExport};

use super::{AppState, lock, now_ms};

impl AppState {
    /// Signs and exports the audit head from now on (call it before [`super::serve`]). Returns
    /// `false` if an export was set already.
    pub fn export_audit_heads(&self, export: HeadExport) -> bool {
        self.inner
            .audit_heads
            .set(Mutex::new(Exporter::new(export)))
            .is_ok()
    }

    /// The signed heads this node exported, to verify the chain against (the admin API's and
    /// the dashboard's verification, as `nara-server admin audit verify` does with the data
    /// directory's heads file); none without an export. Blocking: off the async threads.
    pub(crate) fn signed_heads(&self) -> Result<Checkpoints, HeadError> {
        match self.inner.audit_heads.get() {
            Some(exporter) => lock(exporter).checkpoints(),
            None => Ok(Checkpoints::none()),
        }
    }

    /// Exports the head now if it moved since the last export (blocking: off the async
    /// threads). Without an export set, nothing.
    pub fn export_audit_head_now(&self) {
        let Some(exporter) = self.inner.audit_heads.get() else {
            return;
        };
        match lock(exporter).export(self.inner.audit.as_ref(), now_ms()) {
            Ok(Some(head)) => tracing::debug!(seq = head.seq, "signed audit head exported"),
            Ok(None) => {}
            Err(e) => tracing::error!(error = ?e, "exporting the signed audit head failed"),
        }
    }
}

/// The periodic export, if one is set: a task to abort at shutdown.
pub(super) fn spawn(state: &AppState) -> Option<tokio::task::JoinHandle<()>> {
    let every = lock(state.inner.audit_heads.get()?).every();
    let state = state.clone();
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let state = state.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || state.export_audit_head_now()).await
            {
                tracing::error!(error = %e, "the audit head export failed");
            }
        }
    }))
}

/// The export at a clean shutdown.
pub(super) async fn at_shutdown(state: &AppState) {
    if state.inner.audit_heads.get().is_none() {
        return;
    }
    let state = state.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || state.export_audit_head_now()).await {
        tracing::error!(error = %e, "the audit head export at shutdown failed");
    }
}
