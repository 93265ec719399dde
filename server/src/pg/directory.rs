//! [`PgDirectory`]: the directory on PostgreSQL, for several server nodes on one database.
//! Rows only (tables in `migrations/0002_directory.sql`): the rules are the directory
//! service's, the same as SQLite's ([`crate::directory::DirectoryService`]).
//!
//! - One [`PgDirectory`] holds a bounded pool of connections (the blocking `postgres` client,
//!   `pool.rs`): each call takes one for its transaction, so web pages, admin reads and sync's
//!   access checks run side by side. Every call goes through `offload` (a blocking thread).
//! - Every write transaction first takes a transaction-scoped advisory lock, one for the whole
//!   directory: the writes of every node and of the admin CLI are serialised as SQLite's single
//!   writer serialises them, so what a write checks (a code unused, fewer than twenty consents,
//!   no key registered) stays true until it commits. Such writes are rare (an administrator's,
//!   a device's first connection); a device's activity (`record_connection`, `touch`:
//!   `UPDATE`s of its own row, checking nothing else) and reads take no lock.
//! - Reads run in one read-only `REPEATABLE READ` transaction: one snapshot.

use std::collections::HashMap;

use postgres::types::ToSql;
use postgres::{Config, Row, Statement, Transaction};
use sync_core::StoreError;

use crate::directory::{
    AuthRow, Backend, CodeRow, DeviceRow, DirectoryError, DirectoryService, EndedRow, NewDevice,
    NewPersonDevice, Rows, UserRow, WithdrawalRow,
};

use super::Target;
use super::pool::{DEFAULT_POOL_SIZE, Pool, Pooled};
use crate::offload::offload;

/// Held (transaction-scoped) by every directory write: one key for the whole directory.
pub(super) const DIRECTORY_LOCK: i64 = 0x6e61_7261_5f64_6972; // "nara_dir"

/// The directory on PostgreSQL.
pub type PgDirectory = DirectoryService<PgDirectoryBackend>;

/// The directory's rows in PostgreSQL: a pool of connections.
pub struct PgDirectoryBackend {
    pool: Pool,
}

impl std::fmt::Debug for PgDirectoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDirectoryBackend").finish_non_exhaustive()
    }
}

fn pg(e: postgres::Error) -> DirectoryError {
    DirectoryError::backend("postgresql", e)
}

fn from_store(e: StoreError) -> DirectoryError {
    match e {
        StoreError::NewerSchema { found, supported } => {
            DirectoryError::NewerSchema { found, supported }
        }
        other => DirectoryError::backend("postgresql", other),
    }
}

impl DirectoryService<PgDirectoryBackend> {
    /// Connects to the database named by `url` (a `postgres://` URL or libpq `key=value`
    /// pairs) and brings its schema up to date (the document store's and the directory's: one
    /// numbered list). A database migrated by a newer build is refused with
    /// [`DirectoryError::NewerSchema`].
    pub fn open(url: &str) -> Result<Self, DirectoryError> {
        let config: Config = url.parse().map_err(pg)?;
        Self::open_config(config)
    }

    /// As [`PgDirectory::open`], from a parsed configuration, without TLS, with a pool of
    /// [`DEFAULT_POOL_SIZE`] connections.
    pub fn open_config(config: Config) -> Result<Self, DirectoryError> {
        Self::open_pool(config, None, DEFAULT_POOL_SIZE)
    }

    /// As [`PgDirectory::open_config`], over TLS (rustls): required, the server's certificate
    /// verified by `tls` (see [`super::tls_with_roots`]).
    pub fn open_config_tls(
        config: Config,
        tls: rustls::ClientConfig,
    ) -> Result<Self, DirectoryError> {
        Self::open_pool(config, Some(tls), DEFAULT_POOL_SIZE)
    }

    /// The directory on a pool of at most `size` connections (1 to
    /// [`super::MAX_POOL_SIZE`]), over TLS if `tls` is given.
    pub fn open_pool(
        config: Config,
        tls: Option<rustls::ClientConfig>,
        size: u32,
    ) -> Result<Self, DirectoryError> {
        let pool = Pool::open(Target { config, tls }, size).map_err(from_store)?;
        Ok(Self::new(PgDirectoryBackend { pool }))
    }
}

impl PgDirectoryBackend {
    /// A connection of the pool for one call's transaction. A panic while it is out leaves at
    /// most an open transaction, which the `Transaction` rolled back when dropped.
    fn conn(&self) -> Result<Pooled<'_>, DirectoryError> {
        self.pool.get().map_err(from_store)
    }

    /// The pool's size.
    #[cfg(test)]
    pub(crate) fn pool_size(&self) -> usize {
        self.pool.size()
    }
}

/// The backend's calls, run where they are called (see the `Backend` impl).
impl PgDirectoryBackend {
    fn read_here<T>(
        &self,
        f: impl FnOnce(&mut dyn Rows) -> Result<T, DirectoryError>,
    ) -> Result<T, DirectoryError> {
        let mut guard = self.conn()?;
        let conn = &mut *guard;
        let tx = conn
            .client
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(pg)?;
        let mut rows = PgRows {
            tx,
            prepared: &mut conn.prepared,
        };
        let out = f(&mut rows)?;
        rows.tx.commit().map_err(pg)?;
        Ok(out)
    }

    fn write_here<T>(
        &self,
        f: impl FnOnce(&mut dyn Rows) -> Result<T, DirectoryError>,
    ) -> Result<T, DirectoryError> {
        let mut guard = self.conn()?;
        let conn = &mut *guard;
        let mut tx = conn.client.transaction().map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DIRECTORY_LOCK])
            .map_err(pg)?;
        let mut rows = PgRows {
            tx,
            prepared: &mut conn.prepared,
        };
        // On an error the transaction rolls back when dropped.
        let out = f(&mut rows)?;
        rows.tx.commit().map_err(pg)?;
        Ok(out)
    }

    /// Without the directory's lock: a device's activity is one `UPDATE` of its own row, which
    /// waits only for a write of that very row.
    fn activity_here<T>(
        &self,
        f: impl FnOnce(&mut dyn Rows) -> Result<T, DirectoryError>,
    ) -> Result<T, DirectoryError> {
        let mut guard = self.conn()?;
        let conn = &mut *guard;
        let tx = conn.client.transaction().map_err(pg)?;
        let mut rows = PgRows {
            tx,
            prepared: &mut conn.prepared,
        };
        let out = f(&mut rows)?;
        rows.tx.commit().map_err(pg)?;
        Ok(out)
    }
}

/// Every call through [`offload`]: the directory is reached from async routes, and the
/// blocking client must not run on an async thread.
impl Backend for PgDirectoryBackend {
    fn read<T>(
        &self,
        f: impl FnOnce(&mut dyn Rows) -> Result<T, DirectoryError>,
    ) -> Result<T, DirectoryError> {
        offload(|| self.read_here(f))
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&mut dyn Rows) -> Result<T, DirectoryError>,
    ) -> Result<T, DirectoryError> {
        offload(|| self.write_here(f))
    }

    fn activity<T>(
        &self,
        f: impl FnOnce(&mut dyn Rows) -> Result<T, DirectoryError>,
    ) -> Result<T, DirectoryError> {
        offload(|| self.activity_here(f))
    }
}

/// The rows, inside one transaction; statements prepared once per connection.
struct PgRows<'a> {
    tx: Transaction<'a>,
    prepared: &'a mut HashMap<&'static str, Statement>,
}

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

impl PgRows<'_> {
    fn prep(&mut self, sql: &'static str) -> Result<Statement, DirectoryError> {
        if let Some(s) = self.prepared.get(sql) {
            return Ok(s.clone());
        }
        let s = self.tx.prepare(sql).map_err(pg)?;
        self.prepared.insert(sql, s.clone());
        Ok(s)
    }

    fn execute(&mut self, sql: &'static str, params: Params<'_>) -> Result<u64, DirectoryError> {
        let s = self.prep(sql)?;
        self.tx.execute(&s, params).map_err(pg)
    }

    fn opt(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Option<Row>, DirectoryError> {
        let s = self.prep(sql)?;
        self.tx.query_opt(&s, params).map_err(pg)
    }

    fn all(&mut self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>, DirectoryError> {
        let s = self.prep(sql)?;
        self.tx.query(&s, params).map_err(pg)
    }

    fn exists(&mut self, sql: &'static str, key: &str) -> Result<bool, DirectoryError> {
        Ok(self.opt(sql, &[&key])?.is_some())
    }
}

fn get<'r, T: postgres::types::FromSql<'r>>(row: &'r Row, i: usize) -> Result<T, DirectoryError> {
    row.try_get(i).map_err(pg)
}

fn withdrawal_row(r: &Row) -> Result<WithdrawalRow, DirectoryError> {
    Ok(WithdrawalRow {
        user: get(r, 0)?,
        device: get(r, 1)?,
        patient: get(r, 2)?,
        told: get(r, 3)?,
        sent: get(r, 4)?,
    })
}

fn pair<'r, A, B>(row: &'r Row) -> Result<(A, B), DirectoryError>
where
    A: postgres::types::FromSql<'r>,
    B: postgres::types::FromSql<'r>,
{
    Ok((get(row, 0)?, get(row, 1)?))
}

fn triple<'r, A, B, C>(row: &'r Row) -> Result<(A, B, C), DirectoryError>
where
    A: postgres::types::FromSql<'r>,
    B: postgres::types::FromSql<'r>,
    C: postgres::types::FromSql<'r>,
{
    Ok((get(row, 0)?, get(row, 1)?, get(row, 2)?))
}

fn user_row(r: &Row) -> Result<UserRow, DirectoryError> {
    Ok(UserRow {
        id: get(r, 0)?,
        name: get(r, 1)?,
        role: get(r, 2)?,
        org: get(r, 3)?,
    })
}

impl Rows for PgRows<'_> {
    fn org_exists(&mut self, id: &str) -> Result<bool, DirectoryError> {
        self.exists("SELECT 1 FROM orgs WHERE id = $1", id)
    }

    fn insert_org(&mut self, id: &str, name: &str) -> Result<(), DirectoryError> {
        self.execute("INSERT INTO orgs (id, name) VALUES ($1, $2)", &[&id, &name])?;
        Ok(())
    }

    fn orgs(&mut self) -> Result<Vec<(String, String)>, DirectoryError> {
        self.all("SELECT id, name FROM orgs ORDER BY id", &[])?
            .iter()
            .map(pair)
            .collect()
    }

    fn user(&mut self, id: &str) -> Result<Option<UserRow>, DirectoryError> {
        self.opt(
            "SELECT id, name, role, org FROM users WHERE id = $1",
            &[&id],
        )?
        .as_ref()
        .map(user_row)
        .transpose()
    }

    fn insert_user(&mut self, u: &UserRow) -> Result<(), DirectoryError> {
        self.execute(
            "INSERT INTO users (id, name, role, org) VALUES ($1, $2, $3, $4)",
            &[&u.id, &u.name, &u.role, &u.org],
        )?;
        Ok(())
    }

    fn users(&mut self) -> Result<Vec<UserRow>, DirectoryError> {
        self.all("SELECT id, name, role, org FROM users ORDER BY id", &[])?
            .iter()
            .map(user_row)
            .collect()
    }

    fn patient_exists(&mut self, id: &str) -> Result<bool, DirectoryError> {
        self.exists("SELECT 1 FROM patients WHERE id = $1", id)
    }

    fn insert_patient(&mut self, id: &str, name: &str) -> Result<(), DirectoryError> {
        self.execute(
            "INSERT INTO patients (id, name) VALUES ($1, $2)",
            &[&id, &name],
        )?;
        Ok(())
    }

    fn patients(&mut self) -> Result<Vec<(String, String)>, DirectoryError> {
        self.all("SELECT id, name FROM patients ORDER BY id", &[])?
            .iter()
            .map(pair)
            .collect()
    }

    fn insert_assignment(&mut self, user: &str, patient: &str) -> Result<bool, DirectoryError> {
        let n = self.execute(
            "INSERT INTO assignments (user_id, patient_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&user, &patient],
        )?;
        Ok(n > 0)
    }

    fn delete_assignment(&mut self, user: &str, patient: &str) -> Result<bool, DirectoryError> {
        let n = self.execute(
            "DELETE FROM assignments WHERE user_id = $1 AND patient_id = $2",
            &[&user, &patient],
        )?;
        Ok(n > 0)
    }

    fn assignments(&mut self) -> Result<Vec<(String, String)>, DirectoryError> {
        self.all("SELECT user_id, patient_id FROM assignments", &[])?
            .iter()
            .map(pair)
            .collect()
    }

    fn insert_code(
        &mut self,
        hash: &[u8],
        user: &str,
        created_ms: i64,
        expires_ms: i64,
    ) -> Result<(), DirectoryError> {
        self.execute(
            "INSERT INTO enrollment_codes (code_hash, user_id, created_ms, expires_ms) \
             VALUES ($1, $2, $3, $4)",
            &[&hash, &user, &created_ms, &expires_ms],
        )?;
        Ok(())
    }

    fn code(&mut self, hash: &[u8]) -> Result<Option<CodeRow>, DirectoryError> {
        self.opt(
            "SELECT user_id, expires_ms, used_ms FROM enrollment_codes WHERE code_hash = $1",
            &[&hash],
        )?
        .map(|r| {
            Ok(CodeRow {
                user: get(&r, 0)?,
                expires_ms: get(&r, 1)?,
                used_ms: get(&r, 2)?,
            })
        })
        .transpose()
    }

    fn mark_code_used(
        &mut self,
        hash: &[u8],
        now_ms: i64,
        device: &str,
    ) -> Result<(), DirectoryError> {
        self.execute(
            "UPDATE enrollment_codes SET used_ms = $2, device_id = $3 WHERE code_hash = $1",
            &[&hash, &now_ms, &device],
        )?;
        Ok(())
    }

    fn open_codes(
        &mut self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<(String, i64, i64)>, DirectoryError> {
        self.all(
            "SELECT user_id, created_ms, expires_ms FROM enrollment_codes \
             WHERE used_ms IS NULL AND expires_ms >= $1 ORDER BY created_ms DESC LIMIT $2",
            &[&now_ms, &limit],
        )?
        .iter()
        .map(triple)
        .collect()
    }

    fn device_exists(&mut self, id: &str) -> Result<bool, DirectoryError> {
        self.exists("SELECT 1 FROM devices WHERE id = $1", id)
    }

    fn insert_device(&mut self, d: &NewDevice<'_>) -> Result<(), DirectoryError> {
        self.execute(
            "INSERT INTO devices (id, user_id, secret_hash, created_ms, signing_key) \
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &d.id,
                &d.user,
                &d.secret_hash,
                &d.created_ms,
                &d.signing_key,
            ],
        )?;
        Ok(())
    }

    fn device_auth(&mut self, id: &str) -> Result<Option<AuthRow>, DirectoryError> {
        self.opt(
            "SELECT d.user_id, u.role, d.secret_hash, d.revoked \
             FROM devices d JOIN users u ON u.id = d.user_id WHERE d.id = $1",
            &[&id],
        )?
        .map(|r| {
            Ok(AuthRow {
                user: get(&r, 0)?,
                role: get(&r, 1)?,
                secret_hash: get(&r, 2)?,
                revoked: get(&r, 3)?,
            })
        })
        .transpose()
    }

    fn set_revoked(&mut self, id: &str) -> Result<bool, DirectoryError> {
        Ok(self.execute("UPDATE devices SET revoked = true WHERE id = $1", &[&id])? > 0)
    }

    fn revoked(&mut self, id: &str) -> Result<Option<bool>, DirectoryError> {
        self.opt("SELECT revoked FROM devices WHERE id = $1", &[&id])?
            .map(|r| get(&r, 0))
            .transpose()
    }

    fn device_key(&mut self, id: &str) -> Result<Option<Option<Vec<u8>>>, DirectoryError> {
        self.opt("SELECT signing_key FROM devices WHERE id = $1", &[&id])?
            .map(|r| get(&r, 0))
            .transpose()
    }

    fn set_device_key(&mut self, id: &str, key: &[u8]) -> Result<(), DirectoryError> {
        self.execute(
            "UPDATE devices SET signing_key = $2 WHERE id = $1",
            &[&id, &key],
        )?;
        Ok(())
    }

    fn any_signing_key(&mut self, id: &str) -> Result<Option<Vec<u8>>, DirectoryError> {
        let key: Option<Option<Vec<u8>>> = self
            .opt(
                "SELECT signing_key FROM devices WHERE id = $1 \
                 UNION ALL SELECT signing_key FROM person_web_devices WHERE device_id = $1 \
                 LIMIT 1",
                &[&id],
            )?
            .map(|r| get(&r, 0))
            .transpose()?;
        Ok(key.flatten())
    }

    fn touch(
        &mut self,
        id: &str,
        now_ms: i64,
        cursor: Option<i64>,
    ) -> Result<bool, DirectoryError> {
        let n = self.execute(
            "UPDATE devices SET last_seen_ms = $2, cursor = COALESCE($3, cursor) WHERE id = $1",
            &[&id, &now_ms, &cursor],
        )?;
        Ok(n > 0)
    }

    fn copies(&mut self, id: &str) -> Result<Option<String>, DirectoryError> {
        self.opt("SELECT copies FROM devices WHERE id = $1", &[&id])?
            .map(|r| get(&r, 0))
            .transpose()
    }

    fn set_copies(&mut self, id: &str, copies: &str, now_ms: i64) -> Result<(), DirectoryError> {
        self.execute(
            "UPDATE devices SET copies = $2, copy_detected_ms = COALESCE(copy_detected_ms, $3) \
             WHERE id = $1",
            &[&id, &copies, &now_ms],
        )?;
        Ok(())
    }

    fn devices(&mut self) -> Result<Vec<DeviceRow>, DirectoryError> {
        self.all(
            "SELECT id, user_id, last_seen_ms, revoked, cursor, copy_detected_ms, copies \
             FROM devices WHERE id NOT IN (SELECT device_id FROM web_devices) ORDER BY id",
            &[],
        )?
        .iter()
        .map(|r| {
            Ok(DeviceRow {
                id: get(r, 0)?,
                user: get(r, 1)?,
                last_seen_ms: get(r, 2)?,
                revoked: get(r, 3)?,
                cursor: get(r, 4)?,
                copy_detected_ms: get(r, 5)?,
                copies: get(r, 6)?,
            })
        })
        .collect()
    }

    fn set_waiting(&mut self, id: &str, changes: i64, now_ms: i64) -> Result<bool, DirectoryError> {
        let n = self.execute(
            "UPDATE devices SET waiting = $2, waiting_ms = $3 WHERE id = $1",
            &[&id, &changes, &now_ms],
        )?;
        Ok(n > 0)
    }

    fn waiting(&mut self) -> Result<Vec<(String, i64, i64)>, DirectoryError> {
        self.all(
            "SELECT id, waiting, waiting_ms FROM devices \
             WHERE waiting IS NOT NULL AND waiting_ms IS NOT NULL",
            &[],
        )?
        .iter()
        .map(triple)
        .collect()
    }

    fn live_consents(&mut self, patient: &str) -> Result<Vec<(String, i64)>, DirectoryError> {
        self.all(
            "SELECT relative, granted_ms FROM relative_consents \
             WHERE patient_id = $1 AND withdrawn_ms IS NULL ORDER BY relative",
            &[&patient],
        )?
        .iter()
        .map(pair)
        .collect()
    }

    fn insert_consent(
        &mut self,
        patient: &str,
        relative: &str,
        now_ms: i64,
    ) -> Result<(), DirectoryError> {
        self.execute(
            "INSERT INTO relative_consents (patient_id, relative, granted_ms) VALUES ($1, $2, $3)",
            &[&patient, &relative, &now_ms],
        )?;
        Ok(())
    }

    fn withdraw_consent(
        &mut self,
        patient: &str,
        relative: &str,
        now_ms: i64,
    ) -> Result<bool, DirectoryError> {
        let n = self.execute(
            "UPDATE relative_consents SET withdrawn_ms = $3 \
             WHERE patient_id = $1 AND relative = $2 AND withdrawn_ms IS NULL",
            &[&patient, &relative, &now_ms],
        )?;
        Ok(n > 0)
    }

    fn web_device_seed(&mut self, device: &str) -> Result<Option<Vec<u8>>, DirectoryError> {
        self.opt(
            "SELECT seed FROM web_devices WHERE device_id = $1",
            &[&device],
        )?
        .map(|r| get(&r, 0))
        .transpose()
    }

    fn insert_web_device(
        &mut self,
        device: &str,
        seed: &[u8],
        now_ms: i64,
    ) -> Result<(), DirectoryError> {
        self.execute(
            "INSERT INTO web_devices (device_id, seed, created_ms) VALUES ($1, $2, $3)",
            &[&device, &seed, &now_ms],
        )?;
        Ok(())
    }

    fn person_device(
        &mut self,
        patient: &str,
    ) -> Result<Option<(String, Vec<u8>)>, DirectoryError> {
        self.opt(
            "SELECT device_id, seed FROM person_web_devices WHERE patient_id = $1",
            &[&patient],
        )?
        .as_ref()
        .map(pair)
        .transpose()
    }

    fn person_device_exists(&mut self, device: &str) -> Result<bool, DirectoryError> {
        self.exists(
            "SELECT 1 FROM person_web_devices WHERE device_id = $1",
            device,
        )
    }

    fn insert_person_device(&mut self, p: &NewPersonDevice<'_>) -> Result<(), DirectoryError> {
        self.execute(
            "INSERT INTO person_web_devices (device_id, patient_id, signing_key, seed, created_ms) \
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &p.device,
                &p.patient,
                &p.signing_key,
                &p.seed,
                &p.created_ms,
            ],
        )?;
        Ok(())
    }

    fn put_ended(&mut self, e: &EndedRow) -> Result<(), DirectoryError> {
        self.execute(
            "INSERT INTO ended_assignments (user_id, patient_id, ended_ms, feed_head) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, patient_id) \
             DO UPDATE SET ended_ms = excluded.ended_ms, feed_head = excluded.feed_head",
            &[&e.user, &e.patient, &e.at_ms, &e.head],
        )?;
        Ok(())
    }

    fn delete_ended(&mut self, user: &str, patient: &str) -> Result<bool, DirectoryError> {
        let n = self.execute(
            "DELETE FROM ended_assignments WHERE user_id = $1 AND patient_id = $2",
            &[&user, &patient],
        )?;
        Ok(n > 0)
    }

    fn ended(&mut self) -> Result<Vec<EndedRow>, DirectoryError> {
        self.all(
            "SELECT user_id, patient_id, ended_ms, feed_head FROM ended_assignments",
            &[],
        )?
        .iter()
        .map(|r| {
            Ok(EndedRow {
                user: get(r, 0)?,
                patient: get(r, 1)?,
                at_ms: get(r, 2)?,
                head: get(r, 3)?,
            })
        })
        .collect()
    }

    fn delete_ended_before(&mut self, cutoff_ms: i64) -> Result<(), DirectoryError> {
        self.execute(
            "DELETE FROM ended_assignments WHERE ended_ms < $1",
            &[&cutoff_ms],
        )?;
        self.execute(
            "DELETE FROM withdrawals w WHERE NOT EXISTS (SELECT 1 FROM ended_assignments e \
             WHERE e.user_id = w.user_id AND e.patient_id = w.patient_id)",
            &[],
        )?;
        Ok(())
    }

    fn delete_withdrawals(&mut self, user: &str, patient: &str) -> Result<(), DirectoryError> {
        self.execute(
            "DELETE FROM withdrawals WHERE user_id = $1 AND patient_id = $2",
            &[&user, &patient],
        )?;
        Ok(())
    }

    fn withdrawal(
        &mut self,
        user: &str,
        device: &str,
        patient: &str,
    ) -> Result<Option<WithdrawalRow>, DirectoryError> {
        self.opt(
            "SELECT user_id, device_id, patient_id, told, sent FROM withdrawals \
             WHERE user_id = $1 AND device_id = $2 AND patient_id = $3",
            &[&user, &device, &patient],
        )?
        .map(|r| withdrawal_row(&r))
        .transpose()
    }

    fn put_withdrawal(&mut self, w: &WithdrawalRow) -> Result<(), DirectoryError> {
        self.execute(
            "INSERT INTO withdrawals (user_id, device_id, patient_id, told, sent) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, device_id, patient_id) \
             DO UPDATE SET told = excluded.told, sent = excluded.sent",
            &[&w.user, &w.device, &w.patient, &w.told, &w.sent],
        )?;
        Ok(())
    }

    fn withdrawals(&mut self) -> Result<Vec<WithdrawalRow>, DirectoryError> {
        self.all(
            "SELECT user_id, device_id, patient_id, told, sent FROM withdrawals",
            &[],
        )?
        .iter()
        .map(withdrawal_row)
        .collect()
    }

    fn generation(&mut self) -> Result<i64, DirectoryError> {
        self.opt("SELECT value FROM directory_generation", &[])?
            .map(|r| get(&r, 0))
            .transpose()?
            .ok_or_else(|| DirectoryError::BadRow("no directory generation row".into()))
    }

    fn bump_generation(&mut self) -> Result<(), DirectoryError> {
        self.execute("UPDATE directory_generation SET value = value + 1", &[])?;
        Ok(())
    }
}
