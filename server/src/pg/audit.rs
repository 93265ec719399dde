//! [`PgAuditLog`]: the audit log on PostgreSQL, one chain for every node on the database
//! (migration `0003_audit.sql`; the chain itself is `crate::audit::chain`, shared with SQLite).
//!
//! - **One chain across nodes.** An append locks the one head row (`SELECT .. FOR UPDATE`),
//!   links its records to the head's hash, inserts them and moves the head, all in one
//!   transaction; the row lock is held to commit, so a second node's append waits and then
//!   reads the moved head (READ COMMITTED re-reads a row it waited for). `prev` is UNIQUE, so
//!   even a writer that bypassed the head could not fork the chain: no two records can follow
//!   the same record.
//! - **In the transaction of what it records.** [`append_on`] appends on a connection whose
//!   transaction the caller holds open: the document store's group
//!   ([`super::PgStore::with_group_connection`]), so that a stored upload and its records
//!   commit, or roll back, together. The head is locked there too; take it as the last lock
//!   of the transaction (after the feed's counter), as the sync shell does.
//! - **Fails closed.** Every failure (the connection lost, the head row gone, a constraint)
//!   is returned; nothing is retried or logged in its place.
//!
//! One [`PgAuditLog`] holds a bounded pool of connections (the blocking client, `pool.rs`):
//! exports and verifications run beside admin writes. Call it from a blocking thread.

use postgres::error::SqlState;
use postgres::{Config, GenericClient, IsolationLevel};
use sync_core::{DeviceId, PatientId, StoreError};

use super::Target;
use super::pool::{DEFAULT_POOL_SIZE, Pool, Pooled};
use crate::audit::chain::{self, Row, Verifier};
use crate::audit::{
    AuditAction, AuditEntry, AuditError, AuditHead, AuditLog, AuditRecord, Checkpoints,
    VerifyReport,
};
use crate::offload::offload;

/// Rows read per query by `verify` (each query is short; all run in one snapshot).
const VERIFY_BATCH: i64 = 1000;

const COLUMNS: &str = "seq, at_ms, actor, device, action, patient, document, detail, prev, hash";

fn pg(e: postgres::Error) -> AuditError {
    AuditError::Backend {
        backend: "postgresql",
        source: Box::new(e),
    }
}

fn from_store(e: StoreError) -> AuditError {
    match e {
        StoreError::NewerSchema { found, supported } => {
            AuditError::NewerSchema { found, supported }
        }
        other => AuditError::Backend {
            backend: "postgresql",
            source: Box::new(other),
        },
    }
}

/// The audit log on PostgreSQL: a pool of connections.
pub struct PgAuditLog {
    pool: Pool,
}

impl std::fmt::Debug for PgAuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgAuditLog").finish_non_exhaustive()
    }
}

impl PgAuditLog {
    /// Connects to the database named by `url` (as [`super::PgStore::open`]) and brings its schema up
    /// to date (the store's and the log's migrations are one numbered list).
    pub fn open(url: &str) -> Result<Self, AuditError> {
        let config: Config = url.parse().map_err(pg)?;
        Self::open_config(config)
    }

    /// As [`PgAuditLog::open`], from a parsed configuration, without TLS, with a pool of
    /// [`DEFAULT_POOL_SIZE`] connections.
    pub fn open_config(config: Config) -> Result<Self, AuditError> {
        Self::open_pool(config, None, DEFAULT_POOL_SIZE)
    }

    /// As [`PgAuditLog::open_config`], over TLS (see [`super::tls_with_roots`]).
    pub fn open_config_tls(config: Config, tls: rustls::ClientConfig) -> Result<Self, AuditError> {
        Self::open_pool(config, Some(tls), DEFAULT_POOL_SIZE)
    }

    /// The log on a pool of at most `size` connections (1 to [`super::MAX_POOL_SIZE`]), over
    /// TLS if `tls` is given.
    pub fn open_pool(
        config: Config,
        tls: Option<rustls::ClientConfig>,
        size: u32,
    ) -> Result<Self, AuditError> {
        let pool = Pool::open(Target { config, tls }, size).map_err(from_store)?;
        Ok(Self { pool })
    }

    /// A connection of the pool for one call (every call is a transaction of its own).
    fn conn(&self) -> Result<Pooled<'_>, AuditError> {
        self.pool.get().map_err(from_store)
    }

    /// `entries` in one transaction of their own.
    fn append_tx(&self, entries: Vec<AuditEntry>) -> Result<Vec<AuditRecord>, AuditError> {
        let mut conn = self.conn()?;
        let mut tx = conn.client.transaction().map_err(pg)?;
        let records = append_in(&mut tx, entries)?;
        tx.commit().map_err(pg)?;
        Ok(records)
    }

    /// The records `sql` selects (its only parameters `params`), parsed.
    fn select(
        &self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<AuditRecord>, AuditError> {
        let mut conn = self.conn()?;
        let q = conn.prep(sql).map_err(from_store)?;
        let rows = conn.client.query(&q, params).map_err(pg)?;
        rows.iter()
            .map(|r| read_row(r).map_err(pg).and_then(Row::into_record))
            .collect()
    }
}

/// Appends `entries`, in order, on `client` inside a transaction the caller holds open (the
/// document store's group, see [`super::PgStore::with_group_connection`]). Nothing is durable
/// until the caller commits; if it rolls back, the records go with what they record. On an
/// error nothing of `entries` is left in the transaction (a savepoint), and the caller must
/// not commit what the records were to record. Fails without a transaction open.
pub fn append_on(
    client: &mut postgres::Client,
    entries: Vec<AuditEntry>,
) -> Result<(), AuditError> {
    if let Err(e) = client.batch_execute("SAVEPOINT nara_audit") {
        return Err(if e.code() == Some(&SqlState::NO_ACTIVE_SQL_TRANSACTION) {
            AuditError::Invalid("append_on needs an open transaction".into())
        } else {
            pg(e)
        });
    }
    // Hot rows in one order: the feed counter, then the audit head. A group whose first
    // locking step is an audit append (a disclosure) would otherwise hold the audit head while
    // a later step of it waits for the counter, and another node's group the reverse: a
    // deadlock, which PostgreSQL breaks by failing a whole group of sync steps (measured: 33 in
    // four three-node morning runs). Taking the counter first is free for a group that writes
    // (it holds it to commit anyway).
    let ordered = if entries.is_empty() {
        Ok(0)
    } else {
        client.execute("SELECT 1 FROM feed_head FOR UPDATE", &[])
    };
    let appended = ordered.map_err(pg).and_then(|_| append_in(client, entries));
    match appended {
        Ok(_) => client
            .batch_execute("RELEASE SAVEPOINT nara_audit")
            .map_err(pg),
        Err(e) => {
            let undo = "ROLLBACK TO SAVEPOINT nara_audit; RELEASE SAVEPOINT nara_audit";
            if let Err(undo) = client.batch_execute(undo) {
                tracing::error!(error = %undo, "undoing a failed audit append failed");
            }
            Err(e)
        }
    }
}

/// Appends `entries` in the open transaction of `client`: locks the head, links the records,
/// inserts them in one statement and moves the head.
fn append_in(
    client: &mut impl GenericClient,
    entries: Vec<AuditEntry>,
) -> Result<Vec<AuditRecord>, AuditError> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let head = client
        .query_opt("SELECT count, hash FROM audit_head FOR UPDATE", &[])
        .map_err(pg)?
        .ok_or(AuditError::MissingHead)?;
    let mut count: i64 = head.try_get(0).map_err(pg)?;
    let mut prev: String = head.try_get(1).map_err(pg)?;
    let mut records = Vec::with_capacity(entries.len());
    for entry in entries {
        let record = chain::link(count, prev, entry)?;
        count = chain::seq_to_sql(&record)?;
        prev = record.hash.clone();
        records.push(record);
    }
    let column = |f: fn(&AuditRecord) -> Option<&str>| records.iter().map(f).collect::<Vec<_>>();
    let seqs = records
        .iter()
        .map(chain::seq_to_sql)
        .collect::<Result<Vec<_>, _>>()?;
    let at: Vec<i64> = records.iter().map(|r| r.entry.at_ms).collect();
    client
        .execute(
            "INSERT INTO audit_log (seq, at_ms, actor, device, action, patient, document, detail, prev, hash)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                                  $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])",
            &[
                &seqs,
                &at,
                &column(|r| Some(r.entry.actor.as_str())),
                &column(|r| r.entry.device.as_ref().map(DeviceId::as_str)),
                &column(|r| Some(r.entry.action.as_str())),
                &column(|r| r.entry.patient.as_ref().map(PatientId::as_str)),
                &column(|r| r.entry.document.as_deref()),
                &column(|r| Some(r.entry.detail.as_str())),
                &column(|r| Some(r.prev.as_str())),
                &column(|r| Some(r.hash.as_str())),
            ],
        )
        .map_err(pg)?;
    client
        .execute(
            "UPDATE audit_head SET count = $1, hash = $2",
            &[&count, &prev],
        )
        .map_err(pg)?;
    Ok(records)
}

fn read_row(r: &postgres::Row) -> Result<Row, postgres::Error> {
    Ok(Row {
        seq: r.try_get(0)?,
        at_ms: r.try_get(1)?,
        actor: r.try_get(2)?,
        device: r.try_get(3)?,
        action: r.try_get(4)?,
        patient: r.try_get(5)?,
        document: r.try_get(6)?,
        detail: r.try_get(7)?,
        prev: r.try_get(8)?,
        hash: r.try_get(9)?,
    })
}

/// The log's calls, run where they are called (see the `AuditLog` impl).
impl PgAuditLog {
    fn append_here(&self, entry: AuditEntry) -> Result<AuditRecord, AuditError> {
        let record = self
            .append_tx(vec![entry])?
            .pop()
            .ok_or_else(|| AuditError::BadRow("an append returned no record".into()))?;
        tracing::debug!(
            seq = record.seq,
            action = record.entry.action.as_str(),
            "audited"
        );
        Ok(record)
    }

    fn append_all_here(&self, entries: Vec<AuditEntry>) -> Result<(), AuditError> {
        self.append_tx(entries).map(drop)
    }

    fn verify_here(&self, heads: &Checkpoints) -> Result<VerifyReport, AuditError> {
        let mut conn = self.conn()?;
        // One snapshot: the chain and the head as they were at one moment, while other nodes
        // append; read in batches so that no statement runs long.
        let mut tx = conn
            .client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(pg)?;
        let mut verifier = Verifier::new(heads);
        let batch = tx
            .prepare(&format!(
                "SELECT {COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
            ))
            .map_err(pg)?;
        let mut after = i64::MIN;
        loop {
            let rows = tx.query(&batch, &[&after, &VERIFY_BATCH]).map_err(pg)?;
            for r in &rows {
                // The primary key: always a readable bigint.
                after = r.try_get(0).map_err(pg)?;
                match read_row(r) {
                    Ok(row) => verifier.row(row),
                    Err(e) => verifier.unreadable(e),
                }
            }
            if i64::try_from(rows.len()).unwrap_or(i64::MAX) < VERIFY_BATCH {
                break;
            }
        }
        let stored = tx
            .query_opt("SELECT count, hash FROM audit_head", &[])
            .map_err(pg)?
            .and_then(|r| Some((r.try_get(0).ok()?, r.try_get(1).ok()?)));
        tx.commit().map_err(pg)?;
        Ok(verifier.finish(stored))
    }

    fn export_patient_here(&self, patient: &PatientId) -> Result<Vec<AuditRecord>, AuditError> {
        self.select(
            "SELECT seq, at_ms, actor, device, action, patient, document, detail, prev, hash
             FROM audit_log WHERE patient = $1 ORDER BY seq",
            &[&patient.as_str()],
        )
    }

    fn latest_here(
        &self,
        actions: &[AuditAction],
        limit: usize,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        let names: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
        self.select(
            "SELECT seq, at_ms, actor, device, action, patient, document, detail, prev, hash
             FROM audit_log WHERE action = ANY($1) ORDER BY seq DESC LIMIT $2",
            &[&names, &i64::try_from(limit).unwrap_or(i64::MAX)],
        )
    }

    fn latest_for_patient_here(
        &self,
        patient: &PatientId,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        self.select(
            "SELECT seq, at_ms, actor, device, action, patient, document, detail, prev, hash
             FROM audit_log WHERE patient = $1 ORDER BY seq DESC LIMIT $2",
            &[&patient.as_str(), &i64::try_from(limit).unwrap_or(i64::MAX)],
        )
    }

    fn head_here(&self) -> Result<AuditHead, AuditError> {
        let mut conn = self.conn()?;
        let q = conn
            .prep("SELECT count, hash FROM audit_head")
            .map_err(from_store)?;
        let row = conn
            .client
            .query_opt(&q, &[])
            .map_err(pg)?
            .ok_or(AuditError::MissingHead)?;
        let count: i64 = row.try_get(0).map_err(pg)?;
        Ok(AuditHead {
            seq: u64::try_from(count)
                .map_err(|_| AuditError::BadRow(format!("head count {count}")))?,
            hash: row.try_get(1).map_err(pg)?,
        })
    }

    fn len_here(&self) -> Result<u64, AuditError> {
        let mut conn = self.conn()?;
        let q = conn
            .prep("SELECT count FROM audit_head")
            .map_err(from_store)?;
        let count: i64 = conn
            .client
            .query_opt(&q, &[])
            .map_err(pg)?
            .ok_or(AuditError::MissingHead)?
            .try_get(0)
            .map_err(pg)?;
        u64::try_from(count).map_err(|_| AuditError::BadRow(format!("head count {count}")))
    }
}

/// Every call through [`offload`]: the log is reached from async routes, and the blocking
/// client must not run on an async thread.
impl AuditLog for PgAuditLog {
    fn append(&self, entry: AuditEntry) -> Result<AuditRecord, AuditError> {
        offload(|| self.append_here(entry))
    }

    fn append_all(&self, entries: Vec<AuditEntry>) -> Result<(), AuditError> {
        offload(|| self.append_all_here(entries))
    }

    fn verify_against(&self, heads: &Checkpoints) -> Result<VerifyReport, AuditError> {
        offload(|| self.verify_here(heads))
    }

    fn head(&self) -> Result<AuditHead, AuditError> {
        offload(|| self.head_here())
    }

    fn export_patient(&self, patient: &PatientId) -> Result<Vec<AuditRecord>, AuditError> {
        offload(|| self.export_patient_here(patient))
    }

    fn latest(
        &self,
        actions: &[AuditAction],
        limit: usize,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        offload(|| self.latest_here(actions, limit))
    }

    fn latest_for_patient(
        &self,
        patient: &PatientId,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        offload(|| self.latest_for_patient_here(patient, limit))
    }

    fn len(&self) -> Result<u64, AuditError> {
        offload(|| self.len_here())
    }
}

#[cfg(test)]
mod tests;
