//! [`Pool`]: a bounded pool of blocking connections for the parts of the server that are read
//! concurrently with sync: the directory (web pages, admin reads, every sync's access checks)
//! and the audit log (exports, `audit verify`, admin writes). Each call takes one connection
//! for its transaction and gives it back when done.
//!
//! - At most `size` connections: an idle one is handed out, else a new one is made on the
//!   calling thread (its failure returned at once, as one connection's was: a database that
//!   is down fails calls, it does not hang them); while all `size` are taken, a call waits
//!   for one to come back, at most [`CHECKOUT_TIMEOUT`].
//! - An idle connection is checked (one empty round trip) before it is handed out; one found
//!   closed (the database restarted, the backend was terminated, the network failed), checked
//!   or given back, is dropped from the pool, never handed out again.
//! - The first connection, made when the pool opens, migrates the schema (and fails at once
//!   with the reason: a newer schema, no such database); later ones only connect.
//!
//! r2d2 (the usual pool for blocking clients) was tried first: with the database unreachable
//! it keeps connecting in the background and every call waits for its whole checkout timeout,
//! where a call should fail at once; so this is a small pool of its own, with no threads.
//!
//! The document store is not pooled: a lane's group commit is one transaction on one connection
//! (`PgStore`, one per sync lane, used by that lane's group-commit worker); the feed's head reader has a
//! connection of its own (`PgHeadReader`).

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sync_core::StoreError;

use super::{Conn, Target, connect_only};

/// The connections of one pool, unless configured (`--database-pool`).
pub const DEFAULT_POOL_SIZE: u32 = 4;
/// Most connections one pool may hold (PostgreSQL's own default `max_connections` is 100,
/// shared by every node).
pub const MAX_POOL_SIZE: u32 = 64;
/// How long a call waits for a connection while all are taken.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the check of an idle connection before it is handed out may take.
const VALID_TIMEOUT: Duration = Duration::from_secs(5);

/// The pool's connections not in use, and how many it holds in all.
struct Slots {
    idle: Vec<Conn>,
    open: usize,
}

/// A bounded pool of connections to one database (see the module comment).
pub(crate) struct Pool {
    target: Target,
    size: usize,
    slots: Mutex<Slots>,
    returned: Condvar,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool of at most `size` connections (1 to [`MAX_POOL_SIZE`]) to `target`, its first
    /// connection made (and the schema migrated) now.
    pub(crate) fn open(target: Target, size: u32) -> Result<Self, StoreError> {
        if size == 0 || size > MAX_POOL_SIZE {
            return Err(StoreError::backend(
                "postgresql",
                format!("a pool of {size} connections: give 1 to {MAX_POOL_SIZE}"),
            ));
        }
        let first = Conn::open(target.clone())?;
        Ok(Self {
            target,
            size: size as usize,
            slots: Mutex::new(Slots {
                idle: vec![first],
                open: 1,
            }),
            returned: Condvar::new(),
        })
    }

    /// The counters stay right through a panic elsewhere: a poisoned lock is taken as is.
    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection for one call, given back when dropped.
    pub(crate) fn get(&self) -> Result<Pooled<'_>, StoreError> {
        let deadline = Instant::now() + CHECKOUT_TIMEOUT;
        let mut slots = self.slots();
        loop {
            if let Some(mut conn) = slots.idle.pop() {
                drop(slots);
                match conn.client.is_valid(VALID_TIMEOUT) {
                    Ok(()) => return Ok(self.pooled(conn)),
                    Err(e) => {
                        tracing::warn!(error = %e, "a pooled connection to PostgreSQL was lost: dropped");
                        drop(conn);
                        slots = self.slots();
                        slots.open = slots.open.saturating_sub(1);
                        continue;
                    }
                }
            }
            if slots.open < self.size {
                slots.open += 1;
                drop(slots);
                return match connect_only(self.target.clone()) {
                    Ok(client) => Ok(self.pooled(Conn::new(client, self.target.clone()))),
                    Err(e) => {
                        self.slots().open -= 1;
                        self.returned.notify_one();
                        Err(e)
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(StoreError::backend(
                    "postgresql pool",
                    format!("all {} connections stayed in use", self.size),
                ));
            }
            slots = self
                .returned
                .wait_timeout(slots, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn pooled(&self, conn: Conn) -> Pooled<'_> {
        Pooled {
            pool: self,
            conn: Some(conn),
        }
    }

    /// Most connections the pool holds.
    #[cfg(test)]
    pub(crate) fn size(&self) -> usize {
        self.size
    }
}

/// A connection taken from a [`Pool`]; back to it when dropped (or dropped from it, if lost).
pub(crate) struct Pooled<'a> {
    pool: &'a Pool,
    /// Taken only in `drop`.
    conn: Option<Conn>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        match &self.conn {
            Some(conn) => conn,
            None => unreachable!("a pooled connection used after it was given back"),
        }
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        match &mut self.conn {
            Some(conn) => conn,
            None => unreachable!("a pooled connection used after it was given back"),
        }
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let mut slots = self.pool.slots();
        if conn.client.is_closed() {
            // Lost: never handed out again (closed off the async threads, `OwnedClient`).
            slots.open = slots.open.saturating_sub(1);
            drop(slots);
            drop(conn);
        } else {
            slots.idle.push(conn);
            drop(slots);
        }
        self.pool.returned.notify_one();
    }
}
