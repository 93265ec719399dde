//! Failover and restores: a PostgreSQL database that went back in time moves the feed to a new
//! epoch.
//!
//! A device trusts its cursor `(epoch, position)` only while the feed of that epoch never loses
//! an entry (`docs/protocol.md`, "The feed and the cursor"). On SQLite only `nara-server admin
//! restore` puts the store back, and it gives the feed a new epoch. A PostgreSQL database can go
//! back without the server taking part: a standby promoted that lacked the last commits
//! (asynchronous replication), a restore from a base backup with point-in-time recovery, a
//! `pg_dump` restored. Each changes what names the database's history:
//!
//! - the **timeline** (a promotion, or the end of an archive recovery, starts a new one): the
//!   one WAL is written on now (`pg_walfile_name(pg_current_wal_lsn())`, which is up to date
//!   right after a promotion, where `pg_control_checkpoint()` waits for the next checkpoint);
//! - the cluster's **system identifier** (`pg_control_system()`; another cluster: a `pg_dump`
//!   restored elsewhere, a `pg_upgrade`);
//! - the **database's OID** (a `pg_dump` restored into a new database of the same cluster, a
//!   database made from another as its template).
//!
//! The row `feed_history` keeps them as the nodes last found them. Every new connection (a node
//! starting, a node connecting again after it lost its connection: `Conn::revive`, the head
//! reader) compares them with what the database says, in one query. If they differ, it moves
//! the feed to a new epoch (random, drawn here in the server, never in `sync-core`), records the
//! new identity and appends a `new-epoch` audit record, in one transaction that holds the row's
//! lock: of several nodes connecting at once, the first changes it and the others find the new
//! identity already recorded. The same transaction moves every device lease's fencing token
//! past any the lost history could have issued, so that no session still running on a node
//! from before writes on (`Store::check_lease`). A row never filled (a new database, or one an older build
//! migrated) is filled without a new epoch: that feed's epoch is its own.
//!
//! A new epoch is always safe: a device whose cursor names another epoch recovers (version 3:
//! it reconciles what it holds, one round trip or a few more) or resyncs (versions 1 and 2). So
//! a promotion of a synchronous standby, which lost nothing acknowledged, moves the epoch too:
//! the server cannot tell which kind of standby it was, and the cost is one recovery per device.
//!
//! What this cannot see: a data directory copied back as it was (the same cluster, timeline and
//! database: no recovery ran). There the feed proof catches version-3 devices that saw more
//! (`feed-diverged`), and an operator who put data back by other means runs `nara-server admin
//! new-epoch`.
//!
//! Privileges: on PostgreSQL 15 any role may call the functions used here (checked with a role
//! that is neither superuser nor `pg_monitor`). A server that refuses them (a managed service
//! that hides them) gets a warning in the log at every connection and no detection; the
//! operator then runs `admin new-epoch` after each failover or restore.

use postgres::Client;
use postgres::error::SqlState;
use sync_core::StoreError;
use sync_core::store::Epoch;

use super::pg;
use crate::audit::{AuditAction, AuditEntry};

/// Added to every lease's fencing token when the history changes: more claims than a lost
/// history can have made (2^32).
const LEASE_TOKENS_LOST: i64 = 1 << 32;

/// The actor of the audit record a detected change appends.
pub const ACTOR: &str = "server";

/// What names a database's history (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatabaseHistory {
    pub system_identifier: i64,
    pub timeline: i64,
    pub database_oid: i64,
}

impl std::fmt::Display for DatabaseHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "system identifier {}, timeline {}, database OID {}",
            self.system_identifier, self.timeline, self.database_oid
        )
    }
}

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryCheck {
    /// The history recorded is the database's.
    Same(DatabaseHistory),
    /// Nothing was recorded yet: now it is, and the epoch stays.
    Recorded(DatabaseHistory),
    /// Another history than the one recorded: the feed moved to `epoch` (audited).
    Moved {
        was: DatabaseHistory,
        now: DatabaseHistory,
        epoch: Epoch,
    },
    /// The database does not tell its history (privileges, or a server without the functions):
    /// nothing is checked.
    Unavailable(String),
}

/// The recorded history (if any) and the database's, in one round trip.
const READ: &str = "
    SELECT h.system_identifier, h.timeline, h.database_oid,
           s.system_identifier, c.timeline_id::bigint, d.oid::bigint,
           CASE WHEN pg_is_in_recovery() THEN NULL
                ELSE pg_walfile_name(pg_current_wal_lsn()) END
    FROM feed_history h, pg_control_system() s, pg_control_checkpoint() c, pg_database d
    WHERE d.datname = current_database()";

type Found = (Option<DatabaseHistory>, DatabaseHistory);

fn read(client: &mut impl postgres::GenericClient, lock: bool) -> Result<Found, postgres::Error> {
    let sql = if lock {
        // Locks the history row only (not the catalogue's).
        format!("{READ} FOR UPDATE OF h")
    } else {
        READ.to_owned()
    };
    let row = client.query_one(sql.as_str(), &[])?;
    let recorded = match (
        row.get::<_, Option<i64>>(0),
        row.get::<_, Option<i64>>(1),
        row.get::<_, Option<i64>>(2),
    ) {
        (Some(system_identifier), Some(timeline), Some(database_oid)) => Some(DatabaseHistory {
            system_identifier,
            timeline,
            database_oid,
        }),
        _ => None,
    };
    let checkpoint_timeline: i64 = row.get(4);
    // A WAL file's name starts with its timeline, 8 hex digits.
    let timeline = row
        .get::<_, Option<&str>>(6)
        .and_then(|name| name.get(..8))
        .and_then(|hex| i64::from_str_radix(hex, 16).ok())
        .unwrap_or(checkpoint_timeline);
    let now = DatabaseHistory {
        system_identifier: row.get(3),
        timeline,
        database_oid: row.get(5),
    };
    Ok((recorded, now))
}

/// Whether `e` says the database will not tell its history (rather than that it failed).
fn unavailable(e: &postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(&SqlState::INSUFFICIENT_PRIVILEGE) | Some(&SqlState::UNDEFINED_FUNCTION)
    )
}

/// Compares the database's history with the one recorded, and moves the feed to a new epoch
/// if they differ (see the module comment). Called on every new connection, outside any
/// transaction; one query when nothing changed.
pub(crate) fn check(client: &mut Client) -> Result<HistoryCheck, StoreError> {
    match read(client, false) {
        Ok((Some(recorded), now)) if recorded == now => return Ok(HistoryCheck::Same(now)),
        Ok(_) => {}
        Err(e) if unavailable(&e) => {
            tracing::warn!(error = %e,
                "PostgreSQL does not tell this role its history (pg_control_system, \
                 pg_control_checkpoint, pg_current_wal_lsn): a failover or restore will not move \
                 the feed to a new epoch by itself; run `nara-server admin new-epoch` after one");
            return Ok(HistoryCheck::Unavailable(e.to_string()));
        }
        Err(e) => return Err(pg(e)),
    }
    client.batch_execute("BEGIN").map_err(pg)?;
    let found = move_if_changed(client).and_then(|found| {
        client.batch_execute("COMMIT").map_err(pg)?;
        Ok(found)
    });
    let found = match found {
        Ok(found) => found,
        Err(e) => {
            // After a failed COMMIT the transaction is over already: this is then a no-op.
            if let Err(undo) = client.batch_execute("ROLLBACK") {
                tracing::error!(error = %undo, "undoing a failed history check failed");
            }
            return Err(e);
        }
    };
    match &found {
        HistoryCheck::Moved { was, now, epoch } => tracing::warn!(
            was = %was, now = %now, epoch = %hex::encode(epoch),
            "the database's history changed (a failover or a restore): the feed moved to a new \
             epoch; every device recovers at its next sync"
        ),
        HistoryCheck::Recorded(now) => {
            tracing::info!(history = %now, "recorded the database's history")
        }
        _ => {}
    }
    Ok(found)
}

/// Inside the caller's transaction: reads the history under the row's lock and records it,
/// moving the feed to a new epoch if another was recorded.
fn move_if_changed(client: &mut Client) -> Result<HistoryCheck, StoreError> {
    let (recorded, now) = read(client, true).map_err(pg)?;
    Ok(match recorded {
        Some(recorded) if recorded == now => HistoryCheck::Same(now),
        None => {
            record(client, &now)?;
            HistoryCheck::Recorded(now)
        }
        Some(was) => {
            let epoch: Epoch = rand::random();
            let old = client
                .query_opt("SELECT value FROM meta WHERE key = 'epoch' FOR UPDATE", &[])
                .map_err(pg)?
                .map(|r| r.get::<_, Vec<u8>>(0))
                .unwrap_or_default();
            client
                .execute(
                    "INSERT INTO meta (key, value) VALUES ('epoch', $1)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    &[&&epoch[..]],
                )
                .map_err(pg)?;
            record(client, &now)?;
            // Lease tokens went back with the data: a session on a node that kept running may
            // hold a token the restored rows would hand out again. Past every token of the lost
            // history, every such session is fenced (it closes; its device connects again and
            // recovers).
            client
                .execute(
                    "UPDATE device_leases SET token = token + $1",
                    &[&LEASE_TOKENS_LOST],
                )
                .map_err(pg)?;
            let entry = AuditEntry::new(crate::app::now_ms(), ACTOR, AuditAction::NewEpoch)
                .detail(moved_text(&was, &now, &old, &epoch));
            super::audit::append_on(client, vec![entry])
                .map_err(|e| StoreError::backend("postgresql audit", e))?;
            HistoryCheck::Moved { was, now, epoch }
        }
    })
}

fn record(tx: &mut Client, now: &DatabaseHistory) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE feed_history SET system_identifier = $1, timeline = $2, database_oid = $3",
        &[&now.system_identifier, &now.timeline, &now.database_oid],
    )
    .map_err(pg)?;
    Ok(())
}

/// The `new-epoch` record's text for a detected change.
fn moved_text(was: &DatabaseHistory, now: &DatabaseHistory, old: &[u8], epoch: &Epoch) -> String {
    format!(
        "the database's history changed ({was} -> {now}): a promoted standby or a restore; \
         new feed epoch {} (was {}): every device recovers at its next sync",
        hex::encode(epoch),
        hex::encode(old)
    )
}
