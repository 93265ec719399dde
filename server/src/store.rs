//! The server's document store, on either backend: [`ServerStore`] is `sync_core`'s `Store`
//! plus the one thing the server needs that differs between SQLite and PostgreSQL: writing its
//! own rows (the audit records of a sync step, the step's savepoints) inside the store group
//! that is open, so that they commit, or roll back, with what they record.
//!
//! - SQLite (`SqliteStore`): the audit tables live in the store's own file (created by
//!   [`ServerStore::prepare`]); records go through `audit::append_on` on the group's connection.
//! - PostgreSQL (`PgStore`): the audit tables come with the database's migrations; records go
//!   through `pg::audit::append_on` on the group's connection. Every call of a `PgStore` blocks
//!   on the network: the server makes them off the async threads (the group-commit thread,
//!   `spawn_blocking`, or [`crate::offload::offload`] around the hub's lock).
//!
//! The app holds one `Repo<Box<dyn ServerStore>>`; nothing above this module knows which
//! backend it is.

use sync_core::StoreError;
use sync_core::store::{SqliteStore, Store};

use crate::audit::{AuditEntry, AuditError};
use crate::pg::PgStore;

/// A document store the server can run on (see the module comment).
pub trait ServerStore: Store + Send {
    /// Readies the store for the server, once at start: on SQLite, the audit tables in the
    /// store's file.
    fn prepare(&mut self) -> Result<(), AuditError>;

    /// Appends `records` to the audit log inside the open store group: durable when the group
    /// commits, gone if it rolls back. Fails if no group is open.
    fn append_audit(&self, records: Vec<AuditEntry>) -> Result<(), AuditError>;

    /// Sets the savepoint of one sync step inside the open group (`app/commit.rs`).
    fn begin_step(&self) -> Result<(), StoreError>;

    /// Ends the step's savepoint: keeps what the step wrote (`keep`), or rolls it back.
    fn end_step(&self, keep: bool) -> Result<(), StoreError>;

    /// Whether a group that failed may pass if run again at once (`app/commit.rs`). On
    /// PostgreSQL another node's transaction can deadlock with a group or race its append, and
    /// it is gone once the group rolled back. SQLite has one writer, and a group that failed on
    /// a lock has already waited out the busy timeout: running it again only keeps the device
    /// waiting for as long again.
    fn conflicts_pass(&self) -> bool;
}

/// What a write inside the group meets when none is open, or when the group's transaction was
/// lost (an inner group, a savepoint, rolled back alone otherwise, could not be: SQLite rolled
/// the transaction back on an error, or PostgreSQL's connection went), so that the group can
/// only fail.
const NO_GROUP: &str = "no store group is open, or its transaction was lost";

/// The savepoint of one sync step.
const STEP: &str = "nara_step";

fn no_group() -> AuditError {
    AuditError::Invalid(NO_GROUP.into())
}

fn no_group_store() -> StoreError {
    StoreError::BadRow(NO_GROUP.into())
}

impl ServerStore for SqliteStore {
    fn prepare(&mut self) -> Result<(), AuditError> {
        let store_error = |e: StoreError| AuditError::Invalid(e.to_string());
        // The sync shell appends audit records on the store's connection: the audit tables
        // must be in the store's file (the `AuditLog` the app gets is a second connection to it).
        self.begin_group().map_err(store_error)?;
        let made = self
            .with_group_connection(crate::audit::schema::ensure)
            .unwrap_or_else(|| Err(no_group()));
        match made {
            Ok(()) => self.commit_group().map_err(store_error),
            Err(e) => {
                self.rollback_group();
                Err(e)
            }
        }
    }

    fn append_audit(&self, records: Vec<AuditEntry>) -> Result<(), AuditError> {
        self.with_group_connection(|conn| crate::audit::append_on(conn, records))
            .unwrap_or_else(|| Err(no_group()))
    }

    fn begin_step(&self) -> Result<(), StoreError> {
        self.with_group_connection(|conn| conn.execute_batch(&format!("SAVEPOINT {STEP}")))
            .ok_or_else(no_group_store)?
            .map_err(StoreError::from)
    }

    fn end_step(&self, keep: bool) -> Result<(), StoreError> {
        let sql = if keep {
            format!("RELEASE {STEP}")
        } else {
            format!("ROLLBACK TO {STEP}; RELEASE {STEP}")
        };
        self.with_group_connection(|conn| conn.execute_batch(&sql))
            .ok_or_else(no_group_store)?
            .map_err(StoreError::from)
    }

    fn conflicts_pass(&self) -> bool {
        false
    }
}

impl ServerStore for PgStore {
    fn prepare(&mut self) -> Result<(), AuditError> {
        // The audit tables are among the database's migrations, run when the store opened.
        Ok(())
    }

    fn append_audit(&self, records: Vec<AuditEntry>) -> Result<(), AuditError> {
        self.with_group_connection(|client| crate::pg::audit::append_on(client, records))
            .unwrap_or_else(|| Err(no_group()))
    }

    fn begin_step(&self) -> Result<(), StoreError> {
        // The store follows its own savepoints: the feed counter goes back with a rolled-back
        // step (`pg/counter.rs`).
        self.step_savepoint(STEP)
    }

    fn end_step(&self, keep: bool) -> Result<(), StoreError> {
        self.step_end(STEP, keep)
    }

    fn conflicts_pass(&self) -> bool {
        true
    }
}

/// Reads the feed's head apart from the server's store (whose lock a long group of sync steps
/// may hold): a node polls it to learn of changes other nodes stored, and `/readyz` asks it
/// whether the database answers. Blocking: call it off the async threads.
pub trait HeadReader: Send {
    fn feed_head(&mut self) -> Result<u64, StoreError>;
}

/// Tells a node at once when another node moved the feed (PostgreSQL's `LISTEN`): a hint that
/// makes waiting for the next poll of the head unnecessary; the poll stays as the fallback.
/// Blocking: runs on a thread of its own.
pub trait FeedWatcher: Send {
    /// Calls `moved` with the feed's head whenever it may have moved (it may repeat a head
    /// already told), until `stop()` (asked at least every second or so) returns true. Never
    /// gives up on a failure: connects again.
    fn watch(&mut self, moved: &dyn Fn(u64), stop: &dyn Fn() -> bool);
}
