//! [`SqliteDirectory`]: the directory in a SQLite file of its own. Rows only: the rules are
//! [`DirectoryService`]'s.
//!
//! Every write is one `IMMEDIATE` transaction: SQLite's single writer serialises the writes of
//! every handle and process on the file, as [`Backend::write`] asks.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::{Connection, OptionalExtension, params};

use crate::db;

use super::rows::{
    AuthRow, Backend, CodeRow, DeviceRow, EndedRow, NewDevice, NewPersonDevice, Rows, UserRow,
    WithdrawalRow,
};
use super::schema::MIGRATIONS;
use super::{DirectoryError, DirectoryService};

/// The directory in a SQLite file of its own.
pub type SqliteDirectory = DirectoryService<SqliteBackend>;

/// The directory's rows in a SQLite file: one connection.
#[derive(Debug)]
pub struct SqliteBackend {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl DirectoryService<SqliteBackend> {
    /// Opens (creating if needed) the directory at `path` and brings its schema up to date.
    /// A file written by a newer build is refused with [`DirectoryError::NewerSchema`].
    pub fn open(path: &Path) -> Result<Self, DirectoryError> {
        let conn = db::open(path, "directory", MIGRATIONS)?;
        Ok(Self::new(SqliteBackend {
            path: path.to_owned(),
            conn: Mutex::new(conn),
        }))
    }

    /// The file this directory lives in.
    pub fn path(&self) -> &Path {
        &self.backend.path
    }
}

impl SqliteBackend {
    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction half applied (an
        // uncommitted transaction rolls back when dropped), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Backend for SqliteBackend {
    fn read<T>(
        &self,
        f: impl FnOnce(&mut dyn Rows) -> Result<T, DirectoryError>,
    ) -> Result<T, DirectoryError> {
        let conn = self.conn();
        f(&mut SqliteRows(&conn))
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&mut dyn Rows) -> Result<T, DirectoryError>,
    ) -> Result<T, DirectoryError> {
        let mut conn = self.conn();
        let tx = db::write_tx(&mut conn)?;
        let out = f(&mut SqliteRows(&tx))?;
        tx.commit()?;
        Ok(out)
    }
}

/// The rows, over a connection or a transaction.
struct SqliteRows<'a>(&'a Connection);

impl SqliteRows<'_> {
    fn exists(&self, sql: &str, key: &str) -> Result<bool, DirectoryError> {
        Ok(self
            .0
            .prepare_cached(sql)?
            .query_row([key], |_| Ok(()))
            .optional()?
            .is_some())
    }

    fn execute(&self, sql: &str, params: impl rusqlite::Params) -> Result<usize, DirectoryError> {
        Ok(self.0.prepare_cached(sql)?.execute(params)?)
    }

    fn all<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, DirectoryError> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let rows = stmt.query_map(params, row)?.collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn one<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        row: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>, DirectoryError> {
        Ok(self
            .0
            .prepare_cached(sql)?
            .query_row(params, row)
            .optional()?)
    }
}

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        id: r.get(0)?,
        name: r.get(1)?,
        role: r.get(2)?,
        org: r.get(3)?,
    })
}

impl Rows for SqliteRows<'_> {
    fn org_exists(&mut self, id: &str) -> Result<bool, DirectoryError> {
        self.exists("SELECT 1 FROM orgs WHERE id = ?1", id)
    }

    fn insert_org(&mut self, id: &str, name: &str) -> Result<(), DirectoryError> {
        self.execute(
            "INSERT INTO orgs (id, name) VALUES (?1, ?2)",
            params![id, name],
        )?;
        Ok(())
    }

    fn orgs(&mut self) -> Result<Vec<(String, String)>, DirectoryError> {
        self.all("SELECT id, name FROM orgs ORDER BY id", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
    }

    fn user(&mut self, id: &str) -> Result<Option<UserRow>, DirectoryError> {
        self.one(
            "SELECT id, name, role, org FROM users WHERE id = ?1",
            [id],
            user_row,
        )
    }

    fn insert_user(&mut self, u: &UserRow) -> Result<(), DirectoryError> {
        self.execute(
            "INSERT INTO users (id, name, role, org) VALUES (?1, ?2, ?3, ?4)",
            params![u.id, u.name, u.role, u.org],
        )?;
        Ok(())
    }

    fn users(&mut self) -> Result<Vec<UserRow>, DirectoryError> {
        self.all(
            "SELECT id, name, role, org FROM users ORDER BY id",
            [],
            user_row,
        )
    }

    fn patient_exists(&mut self, id: &str) -> Result<bool, DirectoryError> {
        self.exists("SELECT 1 FROM patients WHERE id = ?1", id)
    }

    fn insert_patient(&mut self, id: &str, name: &str) -> Result<(), DirectoryError> {
        self.execute(
            "INSERT INTO patients (id, name) VALUES (?1, ?2)",
            params![id, name],
        )?;
        Ok(())
    }

    fn patients(&mut self) -> Result<Vec<(String, String)>, DirectoryError> {
        self.all("SELECT id, name FROM patients ORDER BY id", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
    }

    fn insert_assignment(&mut self, user: &str, patient: &str) -> Result<bool, DirectoryError> {
        let n = self.execute(
            "INSERT OR IGNORE INTO assignments (user_id, patient_id) VALUES (?1, ?2)",
            params![user, patient],
        )?;
        Ok(n > 0)
    }

    fn delete_assignment(&mut self, user: &str, patient: &str) -> Result<bool, DirectoryError> {
        let n = self.execute(
            "DELETE FROM assignments WHERE user_id = ?1 AND patient_id = ?2",
            params![user, patient],
        )?;
        Ok(n > 0)
    }

    fn assignments(&mut self) -> Result<Vec<(String, String)>, DirectoryError> {
        self.all("SELECT user_id, patient_id FROM assignments", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
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
             VALUES (?1, ?2, ?3, ?4)",
            params![hash, user, created_ms, expires_ms],
        )?;
        Ok(())
    }

    fn code(&mut self, hash: &[u8]) -> Result<Option<CodeRow>, DirectoryError> {
        self.one(
            "SELECT user_id, expires_ms, used_ms FROM enrollment_codes WHERE code_hash = ?1",
            [hash],
            |r| {
                Ok(CodeRow {
                    user: r.get(0)?,
                    expires_ms: r.get(1)?,
                    used_ms: r.get(2)?,
                })
            },
        )
    }

    fn mark_code_used(
        &mut self,
        hash: &[u8],
        now_ms: i64,
        device: &str,
    ) -> Result<(), DirectoryError> {
        self.execute(
            "UPDATE enrollment_codes SET used_ms = ?2, device_id = ?3 WHERE code_hash = ?1",
            params![hash, now_ms, device],
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
             WHERE used_ms IS NULL AND expires_ms >= ?1 ORDER BY created_ms DESC LIMIT ?2",
            params![now_ms, limit],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
    }

    fn device_exists(&mut self, id: &str) -> Result<bool, DirectoryError> {
        self.exists("SELECT 1 FROM devices WHERE id = ?1", id)
    }

    fn insert_device(&mut self, d: &NewDevice<'_>) -> Result<(), DirectoryError> {
        self.execute(
            "INSERT INTO devices (id, user_id, secret_hash, created_ms, signing_key) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![d.id, d.user, d.secret_hash, d.created_ms, d.signing_key],
        )?;
        Ok(())
    }

    fn device_auth(&mut self, id: &str) -> Result<Option<AuthRow>, DirectoryError> {
        self.one(
            "SELECT d.user_id, u.role, d.secret_hash, d.revoked \
             FROM devices d JOIN users u ON u.id = d.user_id WHERE d.id = ?1",
            [id],
            |r| {
                Ok(AuthRow {
                    user: r.get(0)?,
                    role: r.get(1)?,
                    secret_hash: r.get(2)?,
                    revoked: r.get(3)?,
                })
            },
        )
    }

    fn set_revoked(&mut self, id: &str) -> Result<bool, DirectoryError> {
        Ok(self.execute("UPDATE devices SET revoked = 1 WHERE id = ?1", [id])? > 0)
    }

    fn revoked(&mut self, id: &str) -> Result<Option<bool>, DirectoryError> {
        self.one("SELECT revoked FROM devices WHERE id = ?1", [id], |r| {
            r.get(0)
        })
    }

    fn device_key(&mut self, id: &str) -> Result<Option<Option<Vec<u8>>>, DirectoryError> {
        self.one("SELECT signing_key FROM devices WHERE id = ?1", [id], |r| {
            r.get(0)
        })
    }

    fn set_device_key(&mut self, id: &str, key: &[u8]) -> Result<(), DirectoryError> {
        self.execute(
            "UPDATE devices SET signing_key = ?2 WHERE id = ?1",
            params![id, key],
        )?;
        Ok(())
    }

    fn any_signing_key(&mut self, id: &str) -> Result<Option<Vec<u8>>, DirectoryError> {
        let key: Option<Option<Vec<u8>>> = self.one(
            "SELECT signing_key FROM devices WHERE id = ?1 \
             UNION ALL SELECT signing_key FROM person_web_devices WHERE device_id = ?1 \
             LIMIT 1",
            [id],
            |r| r.get(0),
        )?;
        Ok(key.flatten())
    }

    fn touch(
        &mut self,
        id: &str,
        now_ms: i64,
        cursor: Option<i64>,
    ) -> Result<bool, DirectoryError> {
        let n = self.execute(
            "UPDATE devices SET last_seen_ms = ?2, cursor = COALESCE(?3, cursor) WHERE id = ?1",
            params![id, now_ms, cursor],
        )?;
        Ok(n > 0)
    }

    fn copies(&mut self, id: &str) -> Result<Option<String>, DirectoryError> {
        self.one("SELECT copies FROM devices WHERE id = ?1", [id], |r| {
            r.get(0)
        })
    }

    fn set_copies(&mut self, id: &str, copies: &str, now_ms: i64) -> Result<(), DirectoryError> {
        self.execute(
            "UPDATE devices SET copies = ?2, copy_detected_ms = COALESCE(copy_detected_ms, ?3) \
             WHERE id = ?1",
            params![id, copies, now_ms],
        )?;
        Ok(())
    }

    fn devices(&mut self) -> Result<Vec<DeviceRow>, DirectoryError> {
        self.all(
            "SELECT id, user_id, last_seen_ms, revoked, cursor, copy_detected_ms, copies \
             FROM devices WHERE id NOT IN (SELECT device_id FROM web_devices) ORDER BY id",
            [],
            |r| {
                Ok(DeviceRow {
                    id: r.get(0)?,
                    user: r.get(1)?,
                    last_seen_ms: r.get(2)?,
                    revoked: r.get(3)?,
                    cursor: r.get(4)?,
                    copy_detected_ms: r.get(5)?,
                    copies: r.get(6)?,
                })
            },
        )
    }

    fn set_waiting(&mut self, id: &str, changes: i64, now_ms: i64) -> Result<bool, DirectoryError> {
        let n = self.execute(
            "UPDATE devices SET waiting = ?2, waiting_ms = ?3 WHERE id = ?1",
            params![id, changes, now_ms],
        )?;
        Ok(n > 0)
    }

    fn waiting(&mut self) -> Result<Vec<(String, i64, i64)>, DirectoryError> {
        self.all(
            "SELECT id, waiting, waiting_ms FROM devices \
             WHERE waiting IS NOT NULL AND waiting_ms IS NOT NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
    }

    fn live_consents(&mut self, patient: &str) -> Result<Vec<(String, i64)>, DirectoryError> {
        self.all(
            "SELECT relative, granted_ms FROM relative_consents \
             WHERE patient_id = ?1 AND withdrawn_ms IS NULL ORDER BY relative",
            [patient],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    fn insert_consent(
        &mut self,
        patient: &str,
        relative: &str,
        now_ms: i64,
    ) -> Result<(), DirectoryError> {
        self.execute(
            "INSERT INTO relative_consents (patient_id, relative, granted_ms) VALUES (?1, ?2, ?3)",
            params![patient, relative, now_ms],
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
            "UPDATE relative_consents SET withdrawn_ms = ?3 \
             WHERE patient_id = ?1 AND relative = ?2 AND withdrawn_ms IS NULL",
            params![patient, relative, now_ms],
        )?;
        Ok(n > 0)
    }

    fn web_device_seed(&mut self, device: &str) -> Result<Option<Vec<u8>>, DirectoryError> {
        self.one(
            "SELECT seed FROM web_devices WHERE device_id = ?1",
            [device],
            |r| r.get(0),
        )
    }

    fn insert_web_device(
        &mut self,
        device: &str,
        seed: &[u8],
        now_ms: i64,
    ) -> Result<(), DirectoryError> {
        self.execute(
            "INSERT INTO web_devices (device_id, seed, created_ms) VALUES (?1, ?2, ?3)",
            params![device, seed, now_ms],
        )?;
        Ok(())
    }

    fn person_device(
        &mut self,
        patient: &str,
    ) -> Result<Option<(String, Vec<u8>)>, DirectoryError> {
        self.one(
            "SELECT device_id, seed FROM person_web_devices WHERE patient_id = ?1",
            [patient],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    fn person_device_exists(&mut self, device: &str) -> Result<bool, DirectoryError> {
        self.exists(
            "SELECT 1 FROM person_web_devices WHERE device_id = ?1",
            device,
        )
    }

    fn insert_person_device(&mut self, p: &NewPersonDevice<'_>) -> Result<(), DirectoryError> {
        self.execute(
            "INSERT INTO person_web_devices (device_id, patient_id, signing_key, seed, created_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![p.device, p.patient, p.signing_key, p.seed, p.created_ms],
        )?;
        Ok(())
    }

    fn put_ended(&mut self, e: &EndedRow) -> Result<(), DirectoryError> {
        self.execute(
            "INSERT OR REPLACE INTO ended_assignments (user_id, patient_id, ended_ms, feed_head) \
             VALUES (?1, ?2, ?3, ?4)",
            params![e.user, e.patient, e.at_ms, e.head],
        )?;
        Ok(())
    }

    fn delete_ended(&mut self, user: &str, patient: &str) -> Result<bool, DirectoryError> {
        let n = self.execute(
            "DELETE FROM ended_assignments WHERE user_id = ?1 AND patient_id = ?2",
            params![user, patient],
        )?;
        Ok(n > 0)
    }

    fn ended(&mut self) -> Result<Vec<EndedRow>, DirectoryError> {
        self.all(
            "SELECT user_id, patient_id, ended_ms, feed_head FROM ended_assignments",
            [],
            |r| {
                Ok(EndedRow {
                    user: r.get(0)?,
                    patient: r.get(1)?,
                    at_ms: r.get(2)?,
                    head: r.get(3)?,
                })
            },
        )
    }

    fn delete_ended_before(&mut self, cutoff_ms: i64) -> Result<(), DirectoryError> {
        self.execute(
            "DELETE FROM ended_assignments WHERE ended_ms < ?1",
            [cutoff_ms],
        )?;
        self.execute(
            "DELETE FROM withdrawals WHERE NOT EXISTS (SELECT 1 FROM ended_assignments e \
             WHERE e.user_id = withdrawals.user_id AND e.patient_id = withdrawals.patient_id)",
            [],
        )?;
        Ok(())
    }

    fn delete_withdrawals(&mut self, user: &str, patient: &str) -> Result<(), DirectoryError> {
        self.execute(
            "DELETE FROM withdrawals WHERE user_id = ?1 AND patient_id = ?2",
            params![user, patient],
        )?;
        Ok(())
    }

    fn withdrawal(
        &mut self,
        user: &str,
        device: &str,
        patient: &str,
    ) -> Result<Option<WithdrawalRow>, DirectoryError> {
        self.one(
            "SELECT user_id, device_id, patient_id, told, sent FROM withdrawals \
             WHERE user_id = ?1 AND device_id = ?2 AND patient_id = ?3",
            params![user, device, patient],
            withdrawal_row,
        )
    }

    fn put_withdrawal(&mut self, w: &WithdrawalRow) -> Result<(), DirectoryError> {
        self.execute(
            "INSERT OR REPLACE INTO withdrawals (user_id, device_id, patient_id, told, sent) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![w.user, w.device, w.patient, w.told, w.sent],
        )?;
        Ok(())
    }

    fn withdrawals(&mut self) -> Result<Vec<WithdrawalRow>, DirectoryError> {
        self.all(
            "SELECT user_id, device_id, patient_id, told, sent FROM withdrawals",
            [],
            withdrawal_row,
        )
    }

    fn generation(&mut self) -> Result<i64, DirectoryError> {
        self.one("SELECT value FROM generation WHERE id = 1", [], |r| {
            r.get(0)
        })?
        .ok_or_else(|| DirectoryError::BadRow("no generation row".into()))
    }

    fn bump_generation(&mut self) -> Result<(), DirectoryError> {
        self.execute("UPDATE generation SET value = value + 1 WHERE id = 1", [])?;
        Ok(())
    }
}

fn withdrawal_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<WithdrawalRow> {
    Ok(WithdrawalRow {
        user: r.get(0)?,
        device: r.get(1)?,
        patient: r.get(2)?,
        told: r.get(3)?,
        sent: r.get(4)?,
    })
}
