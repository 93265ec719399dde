//! Fan-out across nodes: how a node learns of feed entries that other nodes (or, on SQLite,
//! another process) stored, and wakes its sessions to push them ([`AppState::publish_head`]).
//!
//! - The poll: the feed's head (one row) read every [`Limits::feed_poll`](super::Limits), off
//!   the async threads. The fallback, and all there is on SQLite.
//! - The hint: with a [`FeedWatcher`](crate::store::FeedWatcher) (PostgreSQL's `LISTEN`, see
//!   `pg/listen.rs`), on a thread of its own, a head another node committed wakes the sessions
//!   at once.
//!
//! Correctness comes from the feed's rows, which each session reads from its cursor; both only
//! say when to look.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use super::{AppState, Inner, lock};

/// The running fan-out: stopped when serving ends.
pub(super) struct Fanout {
    poll: tokio::task::JoinHandle<()>,
    /// Tells the watcher's thread to return.
    stop: Arc<AtomicBool>,
}

impl Fanout {
    pub(super) fn stop(self) {
        self.poll.abort();
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Starts the poll, and the watcher's thread if one was set.
pub(super) fn start(state: &AppState) -> Fanout {
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = lock(&state.inner.feed_watcher).take();
    if let Some(mut watcher) = watcher {
        // The thread holds the state weakly: a state dropped without serving's end stops it too.
        let weak: Weak<Inner> = Arc::downgrade(&state.inner);
        let stopped = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("nara-feed-listener".into())
            .spawn(move || {
                let moved = |head: u64| {
                    if let Some(inner) = weak.upgrade() {
                        AppState { inner }.publish_head(head);
                    }
                };
                let stop = || stopped.load(Ordering::SeqCst) || weak.strong_count() == 0;
                watcher.watch(&moved, &stop);
            });
        if let Err(e) = spawned {
            // The poll still brings other nodes' changes, only later.
            tracing::error!(error = %e, "starting the feed listener failed");
        }
    }
    Fanout {
        poll: tokio::spawn(poll(state.clone())),
        stop,
    }
}

/// Reads the feed's head every [`Limits::feed_poll`](super::Limits), off the async threads, and
/// wakes the sessions when it moved.
async fn poll(state: AppState) {
    let mut every = tokio::time::interval(state.inner.limits.feed_poll);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        every.tick().await;
        let reader = state.clone();
        match tokio::task::spawn_blocking(move || reader.read_head()).await {
            Ok(Ok(head)) => {
                if failing {
                    tracing::info!("the feed's head can be read again");
                    failing = false;
                }
                state.publish_head(head);
            }
            Ok(Err(e)) => {
                // Once per outage, not at every poll.
                if !failing {
                    tracing::error!(error = %e, "reading the feed's head failed");
                    failing = true;
                }
            }
            Err(e) => tracing::error!(error = %e, "reading the feed's head failed"),
        }
    }
}
