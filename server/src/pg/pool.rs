//! [`Pool`]: a bounded pool of blocking connections (r2d2) for the parts of the server that
//! are read concurrently with sync: the directory (web pages, admin reads, every sync's access
//! checks) and the audit log (exports, `audit verify`, admin writes). Each call takes one
//! connection for its transaction and gives it back; while all `size` are taken, a call waits
//! for one (at most [`CHECKOUT_TIMEOUT`], then it fails).
//!
//! A connection is checked (`is_valid`: one empty round trip) before it is handed out, and one
//! found closed when given back (the database restarted, the backend was terminated, the
//! network failed) is dropped from the pool, never handed out again; the pool connects anew as
//! calls need. The first connection, made when the pool opens, migrates the schema (and fails
//! at once with the reason: a newer schema, no such database); the pool's own connections only
//! connect.
//!
//! The document store is not pooled: its group commit is one transaction on one connection
//! (`PgStore`, one per node, used by the group-commit worker); the feed's head reader has a
//! connection of its own (`PgHeadReader`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use r2d2::{HandleError, ManageConnection, PooledConnection};
use scheduled_thread_pool::ScheduledThreadPool;
use sync_core::StoreError;

use super::{Conn, Target, connect_only};

/// The connections of one pool, unless configured (`--database-pool`).
pub const DEFAULT_POOL_SIZE: u32 = 4;
/// Most connections one pool may hold (PostgreSQL's own default `max_connections` is 100,
/// shared by every node).
pub const MAX_POOL_SIZE: u32 = 64;
/// How long a call waits for a connection (all taken, or the database unreachable).
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the check of a connection before it is handed out may take.
const VALID_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects the pool's connections (without migrating: the pool's first one did).
pub(crate) struct Manager {
    target: Target,
}

impl ManageConnection for Manager {
    type Connection = Conn;
    type Error = StoreError;

    fn connect(&self) -> Result<Conn, StoreError> {
        connect_only(self.target.clone()).map(|client| Conn::new(client, self.target.clone()))
    }

    fn is_valid(&self, conn: &mut Conn) -> Result<(), StoreError> {
        conn.client.is_valid(VALID_TIMEOUT).map_err(super::pg)
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.client.is_closed()
    }
}

/// The pool's failures (connecting anew), logged with `tracing`.
#[derive(Debug)]
struct LogErrors;

impl HandleError<StoreError> for LogErrors {
    fn handle_error(&self, error: StoreError) {
        tracing::warn!(%error, "a pooled connection to PostgreSQL could not be made");
    }
}

/// One thread for the upkeep of every pool in the process (r2d2 starts three per pool).
fn upkeep() -> Arc<ScheduledThreadPool> {
    static UPKEEP: OnceLock<Arc<ScheduledThreadPool>> = OnceLock::new();
    UPKEEP
        .get_or_init(|| {
            Arc::new(
                ScheduledThreadPool::builder()
                    .num_threads(1)
                    .thread_name_pattern("nara-pg-pool-{}")
                    .build(),
            )
        })
        .clone()
}

/// A bounded pool of connections to one database (see the module comment).
pub(crate) struct Pool {
    pool: r2d2::Pool<Manager>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("size", &self.pool.max_size())
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
        let pool = r2d2::Pool::builder()
            .max_size(size)
            .min_idle(Some(0))
            .connection_timeout(CHECKOUT_TIMEOUT)
            .test_on_check_out(true)
            .error_handler(Box::new(LogErrors))
            .thread_pool(upkeep())
            .build_unchecked(Manager { target });
        // The first connection is not the pool's (r2d2 takes none from outside): it only
        // migrated, and closes off the async threads (`OwnedClient`).
        drop(first);
        Ok(Self { pool })
    }

    /// A connection for one call, given back when dropped.
    pub(crate) fn get(&self) -> Result<PooledConnection<Manager>, StoreError> {
        self.pool
            .get()
            .map_err(|e| StoreError::backend("postgresql pool", e))
    }

    /// Most connections the pool holds.
    #[cfg(test)]
    pub(crate) fn size(&self) -> u32 {
        self.pool.max_size()
    }
}
