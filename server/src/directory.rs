//! The server's directory: organisations, staff, the people cared for, who cares for whom
//! (assignments, the care relationship that access follows), and enrolled devices.
//!
//! [`Directory`] is the contract; [`SqliteDirectory`] keeps it in its own SQLite file
//! (`DATA/server.db`, see [`crate::admin_cli::directory_path`]), separate from the document
//! store, so that a PostgreSQL backend can follow without touching callers.
//!
//! # Enrollment and device credentials
//!
//! An administrator asks for an enrollment code for a user ([`Directory::enroll`]): 12
//! characters of Crockford base32 (60 random bits), valid for 24 hours, usable once. The phone
//! redeems it ([`Directory::redeem`]) and receives a new device id and a random 32-byte secret;
//! every connection then authenticates with both ([`Directory::authenticate`]).
//!
//! Neither codes nor secrets are stored: only their SHA-256 hashes, under distinct
//! domain-separation prefixes. A plain hash (no slow KDF) is enough because both are random
//! and long-ish rather than chosen by a person: a stolen database gives 256 bits to guess per
//! secret, and 60 bits per code that is at most 24 hours from expiry and useless once used.
//! Online guessing of codes must still be rate-limited by the caller (the server).
//!
//! # Several processes
//!
//! The running server and `nara-server admin` open the same file at once. Every change is one
//! `IMMEDIATE` transaction (the second writer waits up to 5 s) and bumps a durable generation
//! number in the same transaction; the server polls [`Directory::generation`] to notice changes
//! made by another process (a revocation, an assignment) and refresh what it enforces.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sync_core::{DeviceId, PatientId, Role, UserId};

use crate::db;

/// How long an enrollment code stays valid.
pub const ENROLLMENT_TTL_MS: i64 = 24 * 60 * 60 * 1000;

/// Length of an enrollment code, in characters.
pub const CODE_LEN: usize = 12;

/// Crockford's base32 alphabet: no I, L, O or U, so a code read aloud or typed is unambiguous.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Longest display name of an organisation, user or patient.
pub const MAX_NAME_LEN: usize = 200;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE orgs (
    id   TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE users (
    id   TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('carer', 'nurse', 'admin')),
    org  TEXT NOT NULL REFERENCES orgs (id)
) WITHOUT ROWID;

CREATE TABLE patients (
    id   TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL
) WITHOUT ROWID;

-- The care relationship: a user may read and write the patients assigned to them.
CREATE TABLE assignments (
    user_id    TEXT NOT NULL REFERENCES users (id),
    patient_id TEXT NOT NULL REFERENCES patients (id),
    PRIMARY KEY (user_id, patient_id)
) WITHOUT ROWID;

-- One-time enrollment codes, stored only as SHA-256 hashes.
CREATE TABLE enrollment_codes (
    code_hash  BLOB PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id),
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    used_ms    INTEGER,
    device_id  TEXT
) WITHOUT ROWID;

-- Enrolled devices; the secret is stored only as a SHA-256 hash.
CREATE TABLE devices (
    id           TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users (id),
    secret_hash  BLOB NOT NULL,
    created_ms   INTEGER NOT NULL,
    last_seen_ms INTEGER,
    cursor       INTEGER,
    revoked      INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1))
) WITHOUT ROWID;
CREATE INDEX devices_by_user ON devices (user_id);

-- Bumped by every change, in the change's transaction; polled by the running server.
CREATE TABLE generation (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO generation (id, value) VALUES (1, 0);
"#,
    r#"
-- Signed changes: each device's Ed25519 public key (32 bytes), registered at enrollment or,
-- for a device enrolled before, on its first connection after. NULL: an unsigned legacy device.
ALTER TABLE devices ADD COLUMN signing_key BLOB CHECK (signing_key IS NULL OR length(signing_key) = 32);
"#,
    r#"
-- Two installations found using one device credential (a store copied to another phone): when
-- first found, and the pairs of store incarnations seen in use together ("0-1,0-2"). Left for
-- an administrator to settle (revoke the device, enroll the other phone again).
ALTER TABLE devices ADD COLUMN copy_detected_ms INTEGER;
ALTER TABLE devices ADD COLUMN copies TEXT NOT NULL DEFAULT '';
"#,
];

/// Errors of the directory.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("directory database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{what} {id:?} not found")]
    NotFound { what: &'static str, id: String },
    #[error("{what} {id:?} exists already")]
    Exists { what: &'static str, id: String },
    /// Unknown, expired or already used enrollment code (deliberately not saying which).
    #[error("invalid, expired or already used enrollment code")]
    InvalidCode,
    #[error("not assignable: {0}")]
    NotAssignable(String),
    #[error("bad row in the directory: {0}")]
    BadRow(String),
    /// Input that breaks the directory's rules (an org id or a name that is not acceptable).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The file was written by a newer build; it is left untouched.
    #[error("directory schema version {found} is newer than this build supports ({supported})")]
    NewerSchema { found: i64, supported: i64 },
}

impl From<db::OpenError> for DirectoryError {
    fn from(e: db::OpenError) -> Self {
        match e {
            db::OpenError::Sqlite(e) => Self::Sqlite(e),
            db::OpenError::NewerSchema { found, supported } => {
                Self::NewerSchema { found, supported }
            }
        }
    }
}

/// What a redeemed enrollment code gives the phone. The secret is shown once, never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCredential {
    pub device: DeviceId,
    /// 64 hex characters (32 random bytes).
    pub secret: String,
    pub user: UserId,
}

/// Who is on an authenticated connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceIdentity {
    pub device: DeviceId,
    pub user: UserId,
    pub role: Role,
}

/// What [`Directory::register_key`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRegistration {
    /// The device had no key; this one is registered now.
    Registered,
    /// The device has this key already.
    Unchanged,
    /// The device has another key, which stays: a key is registered once, never replaced.
    Conflict,
}

/// An enrolled device as an administrator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub id: DeviceId,
    pub user: UserId,
    pub last_seen_ms: Option<i64>,
    pub revoked: bool,
    /// The last feed position the device acknowledged.
    pub cursor: Option<u64>,
    /// When two installations were first found using this device's credential (a copied
    /// store), if ever: an administrator should settle it.
    pub copy_detected_ms: Option<i64>,
    /// The pairs (earlier, later) of store incarnations seen in use together.
    pub copies: Vec<(u32, u32)>,
}

/// A member of staff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub role: Role,
    pub org: String,
}

/// Identity and care relationships, behind a trait so that a PostgreSQL backend can follow.
///
/// Every method that changes something is atomic and bumps [`Directory::generation`] in the
/// same transaction (except [`Directory::touch`], which only records activity).
pub trait Directory: Send + Sync {
    /// Adds an organisation. Its id follows the same rules as other ids (1 to 64 characters of
    /// `A-Z a-z 0-9 - _ .`).
    fn add_org(&self, id: &str, name: &str) -> Result<(), DirectoryError>;
    /// Adds a user to an existing organisation.
    fn add_user(
        &self,
        id: &UserId,
        name: &str,
        role: Role,
        org: &str,
    ) -> Result<(), DirectoryError>;
    fn add_patient(&self, id: &PatientId, name: &str) -> Result<(), DirectoryError>;
    /// Assigns a user to a patient. Both must exist; admins see no clinical content and cannot
    /// be assigned ([`DirectoryError::NotAssignable`]); an existing assignment is
    /// [`DirectoryError::Exists`].
    fn assign(&self, user: &UserId, patient: &PatientId) -> Result<(), DirectoryError>;
    /// Ends an assignment; [`DirectoryError::NotFound`] if there is none.
    fn unassign(&self, user: &UserId, patient: &PatientId) -> Result<(), DirectoryError>;
    /// A one-time enrollment code for `user` (12 chars of Crockford base32, human-typable),
    /// valid 24 h from `now_ms`; stored only as a SHA-256 hash.
    fn enroll(&self, user: &UserId, now_ms: i64) -> Result<String, DirectoryError>;
    /// Redeems a code once: creates a new device (id like "dev-<16 hex>") bound to the code's
    /// user, returns its id and a random 32-byte secret (hex) that is stored only hashed.
    /// Expired/used/unknown code -> [`DirectoryError::InvalidCode`]. Lower case, spaces and
    /// dashes in the code are accepted, as are O for 0 and I or L for 1.
    fn redeem(&self, code: &str, now_ms: i64) -> Result<DeviceCredential, DirectoryError>;
    /// The device's identity if `secret` matches and the device is not revoked; `Ok(None)`
    /// otherwise. Constant-time comparison of hashes.
    fn authenticate(
        &self,
        device: &DeviceId,
        secret: &str,
    ) -> Result<Option<DeviceIdentity>, DirectoryError>;
    /// Revokes a device for good (idempotent); unknown device -> [`DirectoryError::NotFound`].
    fn revoke(&self, device: &DeviceId) -> Result<(), DirectoryError>;
    /// Whether the device is revoked; unknown device -> [`DirectoryError::NotFound`].
    fn is_revoked(&self, device: &DeviceId) -> Result<bool, DirectoryError>;
    /// Records activity: last seen at `now_ms`, and, if `cursor` is `Some`, the last feed
    /// position the device acknowledged (`None` keeps the previous one). Does not bump the
    /// generation. Each call is a durable write: call it on connect and on acknowledgements,
    /// not per message.
    fn touch(
        &self,
        device: &DeviceId,
        now_ms: i64,
        cursor: Option<u64>,
    ) -> Result<(), DirectoryError>;
    /// Registers the device's public signing key (32 bytes) if it has none yet; a registered
    /// key is never replaced (whoever holds a stolen secret cannot swap it). Does not bump the
    /// generation. Unknown device -> [`DirectoryError::NotFound`].
    fn register_key(
        &self,
        device: &DeviceId,
        key: &[u8; 32],
    ) -> Result<KeyRegistration, DirectoryError>;
    /// The device's registered signing key (`None`: a legacy device that registered none).
    fn signing_key(&self, device: &DeviceId) -> Result<Option<[u8; 32]>, DirectoryError>;
    /// Every enrolled device (revoked ones included), by id.
    fn devices(&self) -> Result<Vec<DeviceInfo>, DirectoryError>;
    /// Records that incarnations `earlier` and `later` of the device's store were seen in use
    /// together: two installations of one credential (docs/protocol.md, "Incarnations").
    fn copy_detected(
        &self,
        device: &DeviceId,
        earlier: u32,
        later: u32,
        now_ms: i64,
    ) -> Result<(), DirectoryError>;
    fn user(&self, id: &UserId) -> Result<Option<User>, DirectoryError>;
    /// user -> patients they are assigned to (the care relationship). Users without any
    /// assignment are absent.
    fn assignments(&self) -> Result<BTreeMap<UserId, BTreeSet<PatientId>>, DirectoryError>;
    /// Every patient with its display name, by id.
    fn patients(&self) -> Result<Vec<(PatientId, String)>, DirectoryError>;
    /// A number bumped (durably) by every change above (org, user, patient, assign, unassign,
    /// enroll, redeem, revoke); the running server polls it every second to refresh access and
    /// close revoked devices.
    fn generation(&self) -> Result<u64, DirectoryError>;
}

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

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction half applied (an
        // uncommitted transaction rolls back when dropped), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` in one write transaction and bumps the generation in it.
    fn change<T>(
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

fn check_name(what: &str, name: &str) -> Result<(), DirectoryError> {
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

fn exists(tx: &Connection, sql: &str, key: &str) -> rusqlite::Result<bool> {
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

fn parse_patient(s: String) -> Result<PatientId, DirectoryError> {
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

fn parse_device(s: String) -> Result<DeviceId, DirectoryError> {
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
            .prepare_cached("SELECT signing_key FROM devices WHERE id = ?1")?
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
             FROM devices ORDER BY id",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }
    fn pid(s: &str) -> PatientId {
        PatientId::new(s).unwrap()
    }

    /// A directory with org "o1", carer "u-carer", nurse "u-nurse", admin "u-admin" and
    /// patients "p-1", "p-2".
    fn setup() -> (tempfile::TempDir, SqliteDirectory) {
        let dir = tempfile::tempdir().unwrap();
        let d = SqliteDirectory::open(&dir.path().join("server.db")).unwrap();
        d.add_org("o1", "Hemtjänst Norr").unwrap();
        d.add_user(&uid("u-carer"), "Anna", Role::Carer, "o1")
            .unwrap();
        d.add_user(&uid("u-nurse"), "Berit", Role::Nurse, "o1")
            .unwrap();
        d.add_user(&uid("u-admin"), "Cecilia", Role::Admin, "o1")
            .unwrap();
        d.add_patient(&pid("p-1"), "Dagny").unwrap();
        d.add_patient(&pid("p-2"), "Einar").unwrap();
        (dir, d)
    }

    #[test]
    fn users_patients_and_assignments_round_trip() {
        let (dir, d) = setup();
        assert_eq!(
            d.user(&uid("u-nurse")).unwrap(),
            Some(User {
                id: uid("u-nurse"),
                name: "Berit".into(),
                role: Role::Nurse,
                org: "o1".into()
            })
        );
        assert_eq!(d.user(&uid("nobody")).unwrap(), None);
        assert_eq!(
            d.patients().unwrap(),
            vec![(pid("p-1"), "Dagny".into()), (pid("p-2"), "Einar".into())]
        );
        d.assign(&uid("u-carer"), &pid("p-1")).unwrap();
        d.assign(&uid("u-carer"), &pid("p-2")).unwrap();
        d.assign(&uid("u-nurse"), &pid("p-2")).unwrap();
        d.unassign(&uid("u-carer"), &pid("p-2")).unwrap();
        drop(d);
        // Survives reopening.
        let d = SqliteDirectory::open(&dir.path().join("server.db")).unwrap();
        let a = d.assignments().unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[&uid("u-carer")], BTreeSet::from([pid("p-1")]));
        assert_eq!(a[&uid("u-nurse")], BTreeSet::from([pid("p-2")]));
        assert!(!a.contains_key(&uid("u-admin")));
    }

    #[test]
    fn bad_input_is_refused() {
        let (_dir, d) = setup();
        assert!(matches!(
            d.add_org("o1", "again"),
            Err(DirectoryError::Exists { what: "org", .. })
        ));
        assert!(matches!(
            d.add_org("bad id", "x"),
            Err(DirectoryError::Invalid(_))
        ));
        assert!(matches!(
            d.add_org("o2", "  "),
            Err(DirectoryError::Invalid(_))
        ));
        assert!(matches!(
            d.add_user(&uid("u-x"), "X", Role::Carer, "no-such-org"),
            Err(DirectoryError::NotFound { what: "org", .. })
        ));
        assert!(matches!(
            d.add_user(&uid("u-carer"), "X", Role::Carer, "o1"),
            Err(DirectoryError::Exists { what: "user", .. })
        ));
        assert!(matches!(
            d.add_patient(&pid("p-1"), "X"),
            Err(DirectoryError::Exists {
                what: "patient",
                ..
            })
        ));
        assert!(matches!(
            d.assign(&uid("nobody"), &pid("p-1")),
            Err(DirectoryError::NotFound { what: "user", .. })
        ));
        assert!(matches!(
            d.assign(&uid("u-carer"), &pid("p-404")),
            Err(DirectoryError::NotFound {
                what: "patient",
                ..
            })
        ));
        assert!(matches!(
            d.assign(&uid("u-admin"), &pid("p-1")),
            Err(DirectoryError::NotAssignable(_))
        ));
        d.assign(&uid("u-carer"), &pid("p-1")).unwrap();
        assert!(matches!(
            d.assign(&uid("u-carer"), &pid("p-1")),
            Err(DirectoryError::Exists {
                what: "assignment",
                ..
            })
        ));
        assert!(matches!(
            d.unassign(&uid("u-nurse"), &pid("p-1")),
            Err(DirectoryError::NotFound {
                what: "assignment",
                ..
            })
        ));
        assert!(matches!(
            d.enroll(&uid("nobody"), 0),
            Err(DirectoryError::NotFound { what: "user", .. })
        ));
        let ghost = DeviceId::new("dev-ghost").unwrap();
        assert!(matches!(
            d.revoke(&ghost),
            Err(DirectoryError::NotFound { what: "device", .. })
        ));
        assert!(matches!(
            d.is_revoked(&ghost),
            Err(DirectoryError::NotFound { .. })
        ));
        assert!(matches!(
            d.touch(&ghost, 0, None),
            Err(DirectoryError::NotFound { .. })
        ));
        // A failed change changes nothing, not even the generation.
        let g = d.generation().unwrap();
        let _ = d.assign(&uid("u-admin"), &pid("p-1"));
        assert_eq!(d.generation().unwrap(), g);
    }

    #[test]
    fn enrollment_code_works_once_and_only_within_a_day() {
        let (_dir, d) = setup();
        let t0 = 1_700_000_000_000;
        let code = d.enroll(&uid("u-carer"), t0).unwrap();
        assert_eq!(code.len(), CODE_LEN);
        assert!(code.bytes().all(|b| CROCKFORD.contains(&b)), "{code}");

        let cred = d.redeem(&code, t0 + 1000).unwrap();
        assert_eq!(cred.user, uid("u-carer"));
        let id = cred.device.as_str();
        assert!(id.starts_with("dev-") && id.len() == 20, "{id}");
        assert_eq!(cred.secret.len(), 64);
        assert!(matches!(
            d.redeem(&code, t0 + 2000),
            Err(DirectoryError::InvalidCode)
        ));

        // Expiry: valid until just before 24 h.
        let late = d.enroll(&uid("u-nurse"), t0).unwrap();
        assert!(matches!(
            d.redeem(&late, t0 + ENROLLMENT_TTL_MS),
            Err(DirectoryError::InvalidCode)
        ));
        let in_time = d.enroll(&uid("u-nurse"), t0).unwrap();
        // Typed by a person: lower case, grouped with a dash.
        let typed = format!(
            "{}-{}",
            in_time[..6].to_lowercase(),
            in_time[6..].to_lowercase()
        );
        let cred2 = d.redeem(&typed, t0 + ENROLLMENT_TTL_MS - 1).unwrap();
        assert_eq!(cred2.user, uid("u-nurse"));
        assert_ne!(cred2.device, cred.device);

        for bad in ["", "0000000000000", "ABC", "ÅÅÅÅÅÅÅÅÅÅÅÅ", "UUUUUUUUUUUU"] {
            assert!(
                matches!(d.redeem(bad, t0), Err(DirectoryError::InvalidCode)),
                "{bad:?}"
            );
        }
        assert!(matches!(
            d.redeem("000000000000", t0),
            Err(DirectoryError::InvalidCode)
        ));
        assert_eq!(d.devices().unwrap().len(), 2);
    }

    #[test]
    fn codes_and_secrets_are_stored_only_hashed() {
        let (dir, d) = setup();
        let code = d.enroll(&uid("u-carer"), 0).unwrap();
        let cred = d.redeem(&code, 1).unwrap();
        drop(d);
        let raw = std::fs::read(dir.path().join("server.db")).unwrap();
        let wal = std::fs::read(dir.path().join("server.db-wal")).unwrap_or_default();
        for hay in [&raw, &wal] {
            for needle in [code.as_bytes(), cred.secret.as_bytes()] {
                assert!(!hay.windows(needle.len()).any(|w| w == needle));
            }
        }
    }

    #[test]
    fn a_signing_key_is_registered_once_and_never_replaced() {
        let (_dir, d) = setup();
        let code = d.enroll(&uid("u-carer"), 0).unwrap();
        let cred = d.redeem(&code, 1).unwrap();
        // Enrolled without one (an older build): NULL, an unsigned legacy device.
        assert_eq!(d.signing_key(&cred.device).unwrap(), None);
        let generation = d.generation().unwrap();
        assert_eq!(
            d.register_key(&cred.device, &[1; 32]).unwrap(),
            KeyRegistration::Registered
        );
        assert_eq!(
            d.register_key(&cred.device, &[1; 32]).unwrap(),
            KeyRegistration::Unchanged
        );
        assert_eq!(
            d.register_key(&cred.device, &[2; 32]).unwrap(),
            KeyRegistration::Conflict
        );
        assert_eq!(d.signing_key(&cred.device).unwrap(), Some([1; 32]));
        assert_eq!(d.generation().unwrap(), generation);
        let unknown = DeviceId::new("dev-unknown").unwrap();
        assert!(matches!(
            d.register_key(&unknown, &[1; 32]),
            Err(DirectoryError::NotFound { .. })
        ));
    }

    #[test]
    fn authenticate_checks_secret_and_revocation() {
        let (_dir, d) = setup();
        let code = d.enroll(&uid("u-nurse"), 0).unwrap();
        let cred = d.redeem(&code, 0).unwrap();
        assert_eq!(
            d.authenticate(&cred.device, &cred.secret).unwrap(),
            Some(DeviceIdentity {
                device: cred.device.clone(),
                user: uid("u-nurse"),
                role: Role::Nurse
            })
        );
        let mut wrong = cred.secret.clone();
        wrong.replace_range(0..1, if wrong.starts_with('0') { "1" } else { "0" });
        assert_eq!(d.authenticate(&cred.device, &wrong).unwrap(), None);
        assert_eq!(d.authenticate(&cred.device, "").unwrap(), None);
        assert_eq!(
            d.authenticate(&DeviceId::new("dev-0").unwrap(), &cred.secret)
                .unwrap(),
            None
        );
        assert!(!d.is_revoked(&cred.device).unwrap());
        d.revoke(&cred.device).unwrap();
        assert!(d.is_revoked(&cred.device).unwrap());
        assert_eq!(d.authenticate(&cred.device, &cred.secret).unwrap(), None);
        // Revoking twice is fine.
        d.revoke(&cred.device).unwrap();
        assert!(d.devices().unwrap()[0].revoked);
    }

    #[test]
    fn touch_records_last_seen_and_cursor() {
        let (_dir, d) = setup();
        let code = d.enroll(&uid("u-carer"), 0).unwrap();
        let cred = d.redeem(&code, 0).unwrap();
        let info = &d.devices().unwrap()[0];
        assert_eq!((info.last_seen_ms, info.cursor), (None, None));
        let g = d.generation().unwrap();
        d.touch(&cred.device, 10, Some(42)).unwrap();
        d.touch(&cred.device, 20, None).unwrap();
        assert_eq!(
            d.devices().unwrap(),
            vec![DeviceInfo {
                id: cred.device.clone(),
                user: uid("u-carer"),
                last_seen_ms: Some(20),
                revoked: false,
                cursor: Some(42),
                copy_detected_ms: None,
                copies: Vec::new(),
            }]
        );
        assert_eq!(d.generation().unwrap(), g, "touch does not bump");
        assert!(matches!(
            d.touch(&cred.device, 30, Some(u64::MAX)),
            Err(DirectoryError::Invalid(_))
        ));
    }

    #[test]
    fn a_copy_is_recorded_once_per_pair_with_when_first_found() {
        let (_dir, d) = setup();
        let code = d.enroll(&uid("u-carer"), 0).unwrap();
        let cred = d.redeem(&code, 0).unwrap();
        d.copy_detected(&cred.device, 0, 1, 10).unwrap();
        d.copy_detected(&cred.device, 0, 1, 20).unwrap();
        d.copy_detected(&cred.device, 1, 2, 30).unwrap();
        let info = &d.devices().unwrap()[0];
        assert_eq!(info.copy_detected_ms, Some(10));
        assert_eq!(info.copies, vec![(0, 1), (1, 2)]);
        assert!(matches!(
            d.copy_detected(&DeviceId::new("nobody").unwrap(), 0, 1, 40),
            Err(DirectoryError::NotFound { .. })
        ));
    }

    #[test]
    fn every_change_bumps_the_generation() {
        let dir = tempfile::tempdir().unwrap();
        let d = SqliteDirectory::open(&dir.path().join("server.db")).unwrap();
        let mut last = d.generation().unwrap();
        assert_eq!(last, 0);
        let mut bumped = |what: &str| {
            let g = d.generation().unwrap();
            assert!(g > last, "{what} did not bump the generation");
            last = g;
        };
        d.add_org("o1", "Org").unwrap();
        bumped("add_org");
        d.add_user(&uid("u1"), "U", Role::Carer, "o1").unwrap();
        bumped("add_user");
        d.add_patient(&pid("p1"), "P").unwrap();
        bumped("add_patient");
        d.assign(&uid("u1"), &pid("p1")).unwrap();
        bumped("assign");
        d.unassign(&uid("u1"), &pid("p1")).unwrap();
        bumped("unassign");
        let code = d.enroll(&uid("u1"), 0).unwrap();
        bumped("enroll");
        let cred = d.redeem(&code, 0).unwrap();
        bumped("redeem");
        d.revoke(&cred.device).unwrap();
        bumped("revoke");
    }

    #[test]
    fn two_handles_on_one_file_see_each_others_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.db");
        let a = SqliteDirectory::open(&path).unwrap();
        let b = SqliteDirectory::open(&path).unwrap();
        a.add_org("o1", "Org").unwrap();
        b.add_user(&uid("u1"), "U", Role::Carer, "o1").unwrap();
        a.add_patient(&pid("p1"), "P").unwrap();
        b.assign(&uid("u1"), &pid("p1")).unwrap();
        assert_eq!(a.assignments().unwrap()[&uid("u1")].len(), 1);
        let code = a.enroll(&uid("u1"), 0).unwrap();
        let cred = b.redeem(&code, 1).unwrap();
        assert!(
            a.authenticate(&cred.device, &cred.secret)
                .unwrap()
                .is_some()
        );
        let g = a.generation().unwrap();
        b.revoke(&cred.device).unwrap();
        assert!(a.generation().unwrap() > g);
        assert!(a.is_revoked(&cred.device).unwrap());
        assert_eq!(a.authenticate(&cred.device, &cred.secret).unwrap(), None);
    }

    #[test]
    fn concurrent_writers_on_one_file_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.db");
        SqliteDirectory::open(&path).unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let path = &path;
                s.spawn(move || {
                    let d = SqliteDirectory::open(path).unwrap();
                    for i in 0..25 {
                        d.add_patient(&pid(&format!("p-{t}-{i}")), "P").unwrap();
                    }
                });
            }
        });
        let d = SqliteDirectory::open(&path).unwrap();
        assert_eq!(d.patients().unwrap().len(), 100);
        assert_eq!(d.generation().unwrap(), 100);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.db");
        SqliteDirectory::open(&path).unwrap();
        rusqlite::Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = SqliteDirectory::open(&path).unwrap_err();
        assert!(
            matches!(err, DirectoryError::NewerSchema { found: 99, .. }),
            "{err}"
        );
    }

    #[test]
    fn directory_is_usable_as_a_shared_trait_object() {
        let (_dir, d) = setup();
        let shared: std::sync::Arc<dyn Directory> = std::sync::Arc::new(d);
        let other = std::sync::Arc::clone(&shared);
        std::thread::spawn(move || other.add_patient(&pid("p-3"), "F").unwrap())
            .join()
            .unwrap();
        assert_eq!(shared.patients().unwrap().len(), 3);
    }
}
