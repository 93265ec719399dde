//! The web views' clock: the wall clock, or one a test sets (the dashboard's freshness and the
//! sessions' expiry are computed from it, so a test can let hours pass without waiting).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Milliseconds since the Unix epoch, from the system or from a value the owner sets.
#[derive(Debug, Clone, Default)]
pub struct Clock(Option<Arc<AtomicI64>>);

impl Clock {
    /// The server's wall clock.
    pub fn system() -> Self {
        Self(None)
    }

    /// A clock that reads `ms` until [`Clock::set`] or [`Clock::advance`] moves it.
    pub fn manual(ms: i64) -> Self {
        Self(Some(Arc::new(AtomicI64::new(ms))))
    }

    pub fn now_ms(&self) -> i64 {
        match &self.0 {
            Some(ms) => ms.load(Ordering::SeqCst),
            None => crate::app::now_ms(),
        }
    }

    /// Sets a manual clock (a system clock is left alone).
    pub fn set(&self, ms: i64) {
        if let Some(c) = &self.0 {
            c.store(ms, Ordering::SeqCst);
        }
    }

    /// Moves a manual clock on by `ms` (a system clock is left alone).
    pub fn advance(&self, ms: i64) {
        if let Some(c) = &self.0 {
            c.fetch_add(ms, Ordering::SeqCst);
        }
    }
}
