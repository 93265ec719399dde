//! [`SqliteDirectory`]: the directory in a SQLite file of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use sha2::{Digest, Sha256};
use sync_core::{DeviceId, PatientId, Role, UserId};

use crate::db;

use super::schema::MIGRATIONS;
use super::*;

/// The directory in a SQLite file of its own.
#[derive(Debug)]
pub struct SqliteDirectory {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl SqliteDirectory {
    /// Opens (creating if needed) the directory at `path` and brings its schema up to date.
    /// A file written by a newer build is refused with [`DirectoryError::NewerSchema`].
    pub fn open(path: &Path) -> Result<Self, DirectoryError> {
        let conn = db::open(path, "directory", MIGRATIONS)?;
        Ok(Self {
            path: path.to_owned(),
            conn: Mutex::new(conn),
        })
    }

    /// The file this directory lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction half applied (an
        // uncommitted transaction rolls back when dropped), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` in one write transaction and bumps the generation in it.
    pub(super) fn change<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, DirectoryError>,
    ) -> Result<T, DirectoryError> {
        let mut conn = self.conn();
        let tx = db::write_tx(&mut conn)?;
        let out = f(&tx)?;
        tx.prepare_cached("UPDATE generation SET value = value + 1 WHERE id = 1")?
            .execute([])?;
        tx.commit()?;
        Ok(out)
    }
}

pub(super) fn check_name(what: &str, name: &str) -> Result<(), DirectoryError> {
    if name.trim().is_empty() {
        return Err(DirectoryError::Invalid(format!("{what} name is empty")));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(DirectoryError::Invalid(format!(
            "{what} name is longer than {MAX_NAME_LEN} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(DirectoryError::Invalid(format!(
            "{what} name contains control characters"
        )));
    }
    Ok(())
}

/// Organisation ids follow the rules of the other ids.
fn check_org_id(id: &str) -> Result<(), DirectoryError> {
    let ok = !id.is_empty()
        && id.len() <= sync_core::ids::MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(DirectoryError::Invalid(format!(
            "invalid org id {:?}: 1 to {} characters of A-Z a-z 0-9 - _ .",
            id.chars().take(80).collect::<String>(),
            sync_core::ids::MAX_ID_LEN
        )))
    }
}

fn hash_code(code: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"nara-enrollment-code\0")
        .chain_update(code.as_bytes())
        .finalize()
        .into()
}

fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"nara-device-secret\0")
        .chain_update(secret.as_bytes())
        .finalize()
        .into()
}

fn new_code() -> String {
    let bytes: [u8; CODE_LEN] = rand::random();
    // 256 is a multiple of 32, so the low five bits of a uniform byte are uniform.
    bytes
        .iter()
        .map(|b| char::from(CROCKFORD[usize::from(b & 31)]))
        .collect()
}

/// The canonical form of a typed code, or `None` if it cannot be one.
fn normalize_code(code: &str) -> Option<String> {
    let mut out = String::with_capacity(CODE_LEN);
    for c in code.chars() {
        let c = match c.to_ascii_uppercase() {
            '-' | ' ' => continue,
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        };
        if !c.is_ascii() || !CROCKFORD.contains(&(c as u8)) || out.len() >= CODE_LEN {
            return None;
        }
        out.push(c);
    }
    (out.len() == CODE_LEN).then_some(out)
}

pub(super) fn exists(tx: &Connection, sql: &str, key: &str) -> rusqlite::Result<bool> {
    Ok(tx
        .prepare_cached(sql)?
        .query_row([key], |_| Ok(()))
        .optional()?
        .is_some())
}

fn user_role(tx: &Connection, user: &UserId) -> Result<Option<Role>, DirectoryError> {
    let role: Option<String> = tx
        .prepare_cached("SELECT role FROM users WHERE id = ?1")?
        .query_row([user.as_str()], |r| r.get(0))
        .optional()?;
    role.map(|r| parse_role(&r)).transpose()
}

fn parse_role(s: &str) -> Result<Role, DirectoryError> {
    s.parse()
        .map_err(|e| DirectoryError::BadRow(format!("role: {e}")))
}

fn parse_user(s: String) -> Result<UserId, DirectoryError> {
    UserId::new(s).map_err(|e| DirectoryError::BadRow(e.to_string()))
}

pub(super) fn parse_patient(s: String) -> Result<PatientId, DirectoryError> {
    PatientId::new(s).map_err(|e| DirectoryError::BadRow(e.to_string()))
}

/// "0-1,0-2" as pairs; anything unreadable is skipped.
fn parse_copies(s: &str) -> Vec<(u32, u32)> {
    s.split(',')
        .filter_map(|p| {
            let (a, b) = p.split_once('-')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect()
}

pub(super) fn parse_device(s: String) -> Result<DeviceId, DirectoryError> {
    DeviceId::new(s).map_err(|e| DirectoryError::BadRow(e.to_string()))
}

impl Directory for SqliteDirectory {
    fn add_org(&self, id: &str, name: &str) -> Result<(), DirectoryError> {
        check_org_id(id)?;
        check_name("org", name)?;
        self.change(|tx| {
            if exists(tx, "SELECT 1 FROM orgs WHERE id = ?1", id)? {
                return Err(DirectoryError::Exists {
                    what: "org",
                    id: id.to_owned(),
                });
            }
            tx.prepare_cached("INSERT INTO orgs (id, name) VALUES (?1, ?2)")?
                .execute(params![id, name])?;
            Ok(())
        })?;
        tracing::info!(org = id, "org added");
        Ok(())
    }

    fn add_user(
        &self,
        id: &UserId,
        name: &str,
        role: Role,
        org: &str,
    ) -> Result<(), DirectoryError> {
        check_name("user", name)?;
        self.change(|tx| {
            if exists(tx, "SELECT 1 FROM users WHERE id = ?1", id.as_str())? {
                return Err(DirectoryError::Exists {
                    what: "user",
                    id: id.to_string(),
                });
            }
            if !exists(tx, "SELECT 1 FROM orgs WHERE id = ?1", org)? {
                return Err(DirectoryError::NotFound {
                    what: "org",
                    id: org.to_owned(),
                });
            }
            tx.prepare_cached("INSERT INTO users (id, name, role, org) VALUES (?1, ?2, ?3, ?4)")?
                .execute(params![id.as_str(), name, role.as_str(), org])?;
            Ok(())
        })?;
        tracing::info!(user = %id, role = role.as_str(), org, "user added");
        Ok(())
    }

    fn add_patient(&self, id: &PatientId, name: &str) -> Result<(), DirectoryError> {
        check_name("patient", name)?;
        self.change(|tx| {
            if exists(tx, "SELECT 1 FROM patients WHERE id = ?1", id.as_str())? {
                return Err(DirectoryError::Exists {
                    what: "patient",
                    id: id.to_string(),
                });
            }
            tx.prepare_cached("INSERT INTO patients (id, name) VALUES (?1, ?2)")?
                .execute(params![id.as_str(), name])?;
            Ok(())
        })?;
        tracing::info!(patient = %id, "patient added");
        Ok(())
    }

    fn assign(&self, user: &UserId, patient: &PatientId) -> Result<(), DirectoryError> {
        self.change(|tx| {
            let role = user_role(tx, user)?.ok_or_else(|| DirectoryError::NotFound {
                what: "user",
                id: user.to_string(),
            })?;
            if !exists(tx, "SELECT 1 FROM patients WHERE id = ?1", patient.as_str())? {
                return Err(DirectoryError::NotFound {
                    what: "patient",
                    id: patient.to_string(),
                });
            }
            if role == Role::Admin {
                return Err(DirectoryError::NotAssignable(format!(
                    "{user} is an admin; admins see no clinical content"
                )));
            }
            let added = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO assignments (user_id, patient_id) VALUES (?1, ?2)",
                )?
                .execute(params![user.as_str(), patient.as_str()])?;
            if added == 0 {
                return Err(DirectoryError::Exists {
                    what: "assignment",
                    id: format!("{user} -> {patient}"),
                });
            }
            Ok(())
        })?;
        tracing::info!(user = %user, patient = %patient, "assigned");
        Ok(())
    }

    fn unassign(&self, user: &UserId, patient: &PatientId) -> Result<(), DirectoryError> {
        self.change(|tx| {
            let removed = tx
                .prepare_cached("DELETE FROM assignments WHERE user_id = ?1 AND patient_id = ?2")?
                .execute(params![user.as_str(), patient.as_str()])?;
            if removed == 0 {
                return Err(DirectoryError::NotFound {
                    what: "assignment",
                    id: format!("{user} -> {patient}"),
                });
            }
            Ok(())
        })?;
        tracing::info!(user = %user, patient = %patient, "unassigned");
        Ok(())
    }

    fn enroll(&self, user: &UserId, now_ms: i64) -> Result<String, DirectoryError> {
        let code = new_code();
        let expires = now_ms.saturating_add(ENROLLMENT_TTL_MS);
        self.change(|tx| {
            if user_role(tx, user)?.is_none() {
                return Err(DirectoryError::NotFound {
                    what: "user",
                    id: user.to_string(),
                });
            }
            tx.prepare_cached(
                "INSERT INTO enrollment_codes (code_hash, user_id, created_ms, expires_ms) \
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                &hash_code(&code)[..],
                user.as_str(),
                now_ms,
                expires
            ])?;
            Ok(())
        })?;
        tracing::info!(user = %user, expires_ms = expires, "enrollment code issued");
        Ok(code)
    }

    fn redeem(&self, code: &str, now_ms: i64) -> Result<DeviceCredential, DirectoryError> {
        let code = normalize_code(code).ok_or(DirectoryError::InvalidCode)?;
        let code_hash = hash_code(&code);
        let device_bytes: [u8; 8] = rand::random();
        let device = DeviceId::new(format!("dev-{}", hex::encode(device_bytes)))
            .map_err(|e| DirectoryError::Invalid(e.to_string()))?;
        let secret = hex::encode(rand::random::<[u8; 32]>());
        let user = self.change(|tx| {
            let row: Option<(String, i64, Option<i64>)> = tx
                .prepare_cached(
                    "SELECT user_id, expires_ms, used_ms FROM enrollment_codes \
                     WHERE code_hash = ?1",
                )?
                .query_row([&code_hash[..]], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            let Some((user, expires_ms, used_ms)) = row else {
                return Err(DirectoryError::InvalidCode);
            };
            if used_ms.is_some() || now_ms >= expires_ms {
                return Err(DirectoryError::InvalidCode);
            }
            if exists(tx, "SELECT 1 FROM devices WHERE id = ?1", device.as_str())? {
                return Err(DirectoryError::Exists {
                    what: "device",
                    id: device.to_string(),
                });
            }
            tx.prepare_cached(
                "UPDATE enrollment_codes SET used_ms = ?2, device_id = ?3 WHERE code_hash = ?1",
            )?
            .execute(params![&code_hash[..], now_ms, device.as_str()])?;
            tx.prepare_cached(
                "INSERT INTO devices (id, user_id, secret_hash, created_ms) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                device.as_str(),
                user,
                &hash_secret(&secret)[..],
                now_ms
            ])?;
            parse_user(user)
        })?;
        tracing::info!(device = %device, user = %user, "enrollment code redeemed");
        Ok(DeviceCredential {
            device,
            secret,
            user,
        })
    }

    fn authenticate(
        &self,
        device: &DeviceId,
        secret: &str,
    ) -> Result<Option<DeviceIdentity>, DirectoryError> {
        let presented = hash_secret(secret);
        let row: Option<(String, String, Vec<u8>, bool)> = self
            .conn()
            .prepare_cached(
                "SELECT d.user_id, u.role, d.secret_hash, d.revoked \
                 FROM devices d JOIN users u ON u.id = d.user_id WHERE d.id = ?1",
            )?
            .query_row([device.as_str()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let Some((user, role, stored, revoked)) = row else {
            tracing::debug!(device = %device, "authentication failed: unknown device");
            return Ok(None);
        };
        if !db::constant_time_eq(&presented, &stored) {
            tracing::debug!(device = %device, "authentication failed: wrong secret");
            return Ok(None);
        }
        if revoked {
            tracing::debug!(device = %device, "authentication failed: revoked");
            return Ok(None);
        }
        Ok(Some(DeviceIdentity {
            device: device.clone(),
            user: parse_user(user)?,
            role: parse_role(&role)?,
        }))
    }

    fn revoke(&self, device: &DeviceId) -> Result<(), DirectoryError> {
        self.change(|tx| {
            let n = tx
                .prepare_cached("UPDATE devices SET revoked = 1 WHERE id = ?1")?
                .execute([device.as_str()])?;
            if n == 0 {
                return Err(DirectoryError::NotFound {
                    what: "device",
                    id: device.to_string(),
                });
            }
            Ok(())
        })?;
        tracing::info!(device = %device, "device revoked");
        Ok(())
    }

    fn register_key(
        &self,
        device: &DeviceId,
        key: &[u8; 32],
    ) -> Result<KeyRegistration, DirectoryError> {
        let mut conn = self.conn();
        let tx = db::write_tx(&mut conn)?;
        let current: Option<Option<Vec<u8>>> = tx
            .prepare_cached("SELECT signing_key FROM devices WHERE id = ?1")?
            .query_row([device.as_str()], |r| r.get(0))
            .optional()?;
        let outcome = match current {
            None => {
                return Err(DirectoryError::NotFound {
                    what: "device",
                    id: device.to_string(),
                });
            }
            Some(Some(k)) if k == key[..] => KeyRegistration::Unchanged,
            Some(Some(_)) => KeyRegistration::Conflict,
            Some(None) => {
                tx.prepare_cached("UPDATE devices SET signing_key = ?2 WHERE id = ?1")?
                    .execute(params![device.as_str(), &key[..]])?;
                KeyRegistration::Registered
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    fn signing_key(&self, device: &DeviceId) -> Result<Option<[u8; 32]>, DirectoryError> {
        let key: Option<Option<Vec<u8>>> = self
            .conn()
            .prepare_cached(
                "SELECT signing_key FROM devices WHERE id = ?1 \
                 UNION ALL SELECT signing_key FROM person_web_devices WHERE device_id = ?1 \
                 LIMIT 1",
            )?
            .query_row([device.as_str()], |r| r.get(0))
            .optional()?;
        match key.flatten() {
            None => Ok(None),
            Some(k) => k
                .try_into()
                .map(Some)
                .map_err(|_| DirectoryError::BadRow(format!("signing key of {device}"))),
        }
    }

    fn is_revoked(&self, device: &DeviceId) -> Result<bool, DirectoryError> {
        self.conn()
            .prepare_cached("SELECT revoked FROM devices WHERE id = ?1")?
            .query_row([device.as_str()], |r| r.get::<_, bool>(0))
            .optional()?
            .ok_or_else(|| DirectoryError::NotFound {
                what: "device",
                id: device.to_string(),
            })
    }

    fn touch(
        &self,
        device: &DeviceId,
        now_ms: i64,
        cursor: Option<u64>,
    ) -> Result<(), DirectoryError> {
        let cursor = cursor
            .map(|c| db::to_i64(c, "cursor"))
            .transpose()
            .map_err(DirectoryError::Invalid)?;
        let mut conn = self.conn();
        let tx = db::write_tx(&mut conn)?;
        let n = tx
            .prepare_cached(
                "UPDATE devices SET last_seen_ms = ?2, cursor = COALESCE(?3, cursor) WHERE id = ?1",
            )?
            .execute(params![device.as_str(), now_ms, cursor])?;
        if n == 0 {
            return Err(DirectoryError::NotFound {
                what: "device",
                id: device.to_string(),
            });
        }
        tx.commit()?;
        Ok(())
    }

    fn copy_detected(
        &self,
        device: &DeviceId,
        earlier: u32,
        later: u32,
        now_ms: i64,
    ) -> Result<(), DirectoryError> {
        self.change(|tx| {
            let copies: Option<String> = tx
                .query_row(
                    "SELECT copies FROM devices WHERE id = ?1",
                    params![device.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(copies) = copies else {
                return Err(DirectoryError::NotFound {
                    what: "device",
                    id: device.to_string(),
                });
            };
            let mut pairs = parse_copies(&copies);
            if !pairs.contains(&(earlier, later)) {
                pairs.push((earlier, later));
            }
            let text: Vec<String> = pairs.iter().map(|(a, b)| format!("{a}-{b}")).collect();
            tx.execute(
                "UPDATE devices SET copies = ?2, copy_detected_ms = COALESCE(copy_detected_ms, ?3)
                 WHERE id = ?1",
                params![device.as_str(), text.join(","), now_ms],
            )?;
            Ok(())
        })
    }

    fn devices(&self) -> Result<Vec<DeviceInfo>, DirectoryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, user_id, last_seen_ms, revoked, cursor, copy_detected_ms, copies
             FROM devices WHERE id NOT IN (SELECT device_id FROM web_devices) ORDER BY id",
        )?;
        type DeviceRow = (
            String,
            String,
            Option<i64>,
            bool,
            Option<i64>,
            Option<i64>,
            String,
        );
        let rows: Vec<DeviceRow> = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(
                |(id, user, last_seen_ms, revoked, cursor, copy_detected_ms, copies)| {
                    Ok(DeviceInfo {
                        copy_detected_ms,
                        copies: parse_copies(&copies),
                        id: parse_device(id)?,
                        user: parse_user(user)?,
                        last_seen_ms,
                        revoked,
                        cursor: cursor
                            .map(|c| db::to_u64(c, "cursor"))
                            .transpose()
                            .map_err(DirectoryError::BadRow)?,
                    })
                },
            )
            .collect()
    }

    fn user(&self, id: &UserId) -> Result<Option<User>, DirectoryError> {
        let row: Option<(String, String, String)> = self
            .conn()
            .prepare_cached("SELECT name, role, org FROM users WHERE id = ?1")?
            .query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        row.map(|(name, role, org)| {
            Ok(User {
                id: id.clone(),
                name,
                role: parse_role(&role)?,
                org,
            })
        })
        .transpose()
    }

    fn users(&self) -> Result<Vec<User>, DirectoryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT id, name, role, org FROM users ORDER BY id")?;
        let rows: Vec<(String, String, String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(id, name, role, org)| {
                Ok(User {
                    id: parse_user(id)?,
                    name,
                    role: parse_role(&role)?,
                    org,
                })
            })
            .collect()
    }

    fn orgs(&self) -> Result<Vec<(String, String)>, DirectoryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT id, name FROM orgs ORDER BY id")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn open_enrollments(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<OpenEnrollment>, DirectoryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT user_id, created_ms, expires_ms FROM enrollment_codes \
             WHERE used_ms IS NULL AND expires_ms >= ?1 ORDER BY created_ms DESC LIMIT ?2",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<(String, i64, i64)> = stmt
            .query_map(params![now_ms, limit], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(user, created_ms, expires_ms)| {
                Ok(OpenEnrollment {
                    user: parse_user(user)?,
                    created_ms,
                    expires_ms,
                })
            })
            .collect()
    }

    fn assignments(&self) -> Result<BTreeMap<UserId, BTreeSet<PatientId>>, DirectoryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT user_id, patient_id FROM assignments")?;
        let rows: Vec<(String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut out: BTreeMap<UserId, BTreeSet<PatientId>> = BTreeMap::new();
        for (user, patient) in rows {
            out.entry(parse_user(user)?)
                .or_default()
                .insert(parse_patient(patient)?);
        }
        Ok(out)
    }

    fn grant_relative(
        &self,
        patient: &PatientId,
        relative: &str,
        now_ms: i64,
    ) -> Result<RelativeConsent, DirectoryError> {
        super::consent::grant(self, patient, relative, now_ms)
    }

    fn withdraw_relative(
        &self,
        patient: &PatientId,
        relative: &str,
        now_ms: i64,
    ) -> Result<(), DirectoryError> {
        super::consent::withdraw(self, patient, relative, now_ms)
    }

    fn relatives(&self, patient: &PatientId) -> Result<Vec<RelativeConsent>, DirectoryError> {
        super::consent::live(self, patient)
    }

    fn report_waiting(
        &self,
        device: &DeviceId,
        changes: u64,
        now_ms: i64,
    ) -> Result<(), DirectoryError> {
        super::waiting::report(self, device, changes, now_ms)
    }

    fn waiting(&self) -> Result<BTreeMap<DeviceId, Waiting>, DirectoryError> {
        super::waiting::all(self)
    }

    fn web_device_key(
        &self,
        device: &DeviceId,
        user: &UserId,
        seed: [u8; 32],
        now_ms: i64,
    ) -> Result<[u8; 32], DirectoryError> {
        super::web_devices::key(self, device, user, seed, now_ms)
    }

    fn person_device_key(
        &self,
        device: &DeviceId,
        patient: &PatientId,
        seed: [u8; 32],
        now_ms: i64,
    ) -> Result<[u8; 32], DirectoryError> {
        super::web_devices::person_key(self, device, patient, seed, now_ms)
    }

    fn patients(&self) -> Result<Vec<(PatientId, String)>, DirectoryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT id, name FROM patients ORDER BY id")?;
        let rows: Vec<(String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(id, name)| Ok((parse_patient(id)?, name)))
            .collect()
    }

    fn generation(&self) -> Result<u64, DirectoryError> {
        let value: i64 = self
            .conn()
            .prepare_cached("SELECT value FROM generation WHERE id = 1")?
            .query_row([], |r| r.get(0))?;
        db::to_u64(value, "generation").map_err(DirectoryError::BadRow)
    }
}
