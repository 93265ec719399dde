//! [`PgFeedListener`]: the cross-node wake-up hint. Every transaction that moves the feed's
//! counter sends `NOTIFY nara_feed` with the new head (`store.rs`, `number`); PostgreSQL
//! delivers it to every listening connection once that transaction committed. Each node keeps
//! one connection of its own that `LISTEN`s, on a thread of its own (the blocking client),
//! and wakes its sessions when a notification arrives: a change stored through another node
//! reaches this node's devices at once instead of at the next poll of the head.
//!
//! Only a hint: sessions still read the feed from their cursors, and the poll stays as the
//! fallback. Listening connections are known to die silently, and a notification sent while
//! none listened is lost, so: any error closes the connection and connects again with a
//! backoff, every (re)connect reads the head once after `LISTEN`, and a quiet connection is
//! probed (`SELECT 1`, and TCP keepalives), so that a dead one shows as an error.

use std::time::{Duration, Instant};

use postgres::Client;
use postgres::fallible_iterator::FallibleIterator;
use sync_core::StoreError;

use super::{Target, connect, pg};
use crate::store::FeedWatcher;

/// The channel the feed's writers notify.
pub(crate) const CHANNEL: &str = "nara_feed";
/// The listening connection's `application_name` (to be told apart in `pg_stat_activity`).
pub const APPLICATION_NAME: &str = "nara-feed-listener";
/// The head as a listener reads it (after `LISTEN`, or for a notification without one).
const READ_HEAD: &str = "SELECT seq FROM feed_head";
/// What probes a quiet connection.
const PROBE: &str = "SELECT 1";
/// How long one wait for a notification lasts before the listener checks whether to stop.
const WAIT: Duration = Duration::from_secs(1);
/// A connection with no notification for this long is probed by reading the head.
const PROBE_AFTER: Duration = Duration::from_secs(10);
/// The first wait before connecting again, doubled on each failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// TCP keepalives on the listening connection: idle time, interval, probes.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;

/// Listens for `nara_feed` notifications on a connection of its own (see the module comment).
#[derive(Clone)]
pub struct PgFeedListener {
    target: Target,
}

impl std::fmt::Debug for PgFeedListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The configuration may hold a password.
        f.debug_struct("PgFeedListener").finish_non_exhaustive()
    }
}

/// Why a listening connection ended.
enum Ended {
    /// Asked to stop.
    Stopped,
    /// Connecting failed: try again after a backoff.
    Unreachable(StoreError),
    /// A connection that listened failed (or the database closed it): connect again.
    Lost(StoreError),
}

impl PgFeedListener {
    pub(super) fn new(mut target: Target) -> Self {
        target
            .config
            .application_name(APPLICATION_NAME)
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE)
            .keepalives_interval(KEEPALIVE_INTERVAL)
            .keepalives_retries(KEEPALIVE_RETRIES);
        Self { target }
    }

    /// One listening connection: `LISTEN`, the head once, then every notification, until it
    /// fails or `stop()`.
    fn listen_once(&self, moved: &dyn Fn(u64), stop: &dyn Fn() -> bool) -> Ended {
        let mut client = match connect(self.target.config.clone(), self.target.tls.clone()) {
            Ok(client) => client,
            Err(e) => return Ended::Unreachable(e),
        };
        if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")) {
            return Ended::Unreachable(pg(e));
        }
        tracing::debug!("listening for feed notifications");
        // A notification sent while no connection listened is lost: read the head once.
        match read_head(&mut client) {
            Ok(head) => moved(head),
            Err(e) => return Ended::Lost(e),
        }
        let mut heard = Instant::now();
        loop {
            if stop() {
                return Ended::Stopped;
            }
            match wait(&mut client) {
                Ok(Heard::Head(head)) => {
                    heard = Instant::now();
                    moved(head);
                }
                Ok(Heard::Unreadable) => {
                    heard = Instant::now();
                    match read_head(&mut client) {
                        Ok(head) => moved(head),
                        Err(e) => return Ended::Lost(e),
                    }
                }
                Ok(Heard::Nothing) => {
                    if client.is_closed() {
                        return Ended::Lost(StoreError::backend(
                            "postgresql",
                            "the listening connection was closed",
                        ));
                    }
                    if heard.elapsed() >= PROBE_AFTER {
                        // Quiet: is the connection still there? Only a probe: the poll of the
                        // head is the fallback for what a listener missed.
                        heard = Instant::now();
                        if let Err(e) = client.batch_execute(PROBE) {
                            return Ended::Lost(pg(e));
                        }
                    }
                }
                Err(e) => return Ended::Lost(e),
            }
        }
    }
}

/// What one wait brought.
enum Heard {
    /// The newest head among the notifications that arrived.
    Head(u64),
    /// A notification whose payload is not a head: read the head instead.
    Unreadable,
    /// Nothing within [`WAIT`] (or the connection closed: see `Client::is_closed`).
    Nothing,
}

/// Waits up to [`WAIT`] for a notification, then takes every one already buffered: one wake-up
/// for a burst.
fn wait(client: &mut Client) -> Result<Heard, StoreError> {
    let mut notifications = client.notifications();
    let Some(first) = notifications.timeout_iter(WAIT).next().map_err(pg)? else {
        return Ok(Heard::Nothing);
    };
    let mut newest = first.payload().parse::<u64>().ok();
    let mut unreadable = newest.is_none();
    let mut more = notifications.iter();
    while let Some(n) = more.next().map_err(pg)? {
        match n.payload().parse::<u64>() {
            Ok(head) => newest = Some(newest.map_or(head, |h| h.max(head))),
            Err(_) => unreadable = true,
        }
    }
    Ok(match newest {
        Some(head) if !unreadable => Heard::Head(head),
        _ => Heard::Unreadable,
    })
}

fn read_head(client: &mut Client) -> Result<u64, StoreError> {
    let seq: i64 = client.query_one(READ_HEAD, &[]).map_err(pg)?.get(0);
    u64::try_from(seq).map_err(|_| StoreError::BadRow(format!("feed head {seq}")))
}

impl FeedWatcher for PgFeedListener {
    fn watch(&mut self, moved: &dyn Fn(u64), stop: &dyn Fn() -> bool) {
        let mut backoff = FIRST_BACKOFF;
        let mut unreachable = false;
        loop {
            match self.listen_once(moved, stop) {
                Ended::Stopped => return,
                Ended::Lost(e) => {
                    tracing::warn!(error = %e, "the feed listener lost its connection: connecting again");
                    unreachable = false;
                    backoff = FIRST_BACKOFF;
                }
                Ended::Unreachable(e) => {
                    // Once per outage, not at every attempt.
                    if !unreachable {
                        tracing::warn!(error = %e, "the feed listener cannot connect: trying again");
                        unreachable = true;
                    }
                }
            }
            let until = Instant::now() + backoff;
            while Instant::now() < until {
                if stop() {
                    return;
                }
                std::thread::sleep(WAIT.min(until.saturating_duration_since(Instant::now())));
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}
