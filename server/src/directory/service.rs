//! [`DirectoryService`]: the [`Directory`] over any [`Backend`]. Every rule is here (and in
//! [`super::rules`], [`super::consent`], [`super::waiting`], [`super::web_devices`]): what is
//! checked before a write, ids, codes, hashes, the generation bump; the backend holds rows.

use std::collections::{BTreeMap, BTreeSet};

use sync_core::{DeviceId, PatientId, Role, UserId};

use super::rows::{Backend, NewDevice, Rows, UserRow};
use super::rules::{
    check_name, check_org_id, format_copies, hash_code, hash_secret, new_code, new_device,
    normalize_code, parse_copies, parse_device, parse_patient, parse_role, parse_user, stored_u64,
    to_stored,
};
use super::*;

/// The directory: its rules over a backend's rows.
#[derive(Debug)]
pub struct DirectoryService<B> {
    pub(super) backend: B,
}

impl<B: Backend> DirectoryService<B> {
    /// The directory over `backend`.
    pub fn new(backend: B) -> Self {
        Self { backend }
    }

    /// The backend underneath.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Runs `f` in one write transaction and bumps the generation in it: a failed change
    /// changes nothing, not even the generation.
    pub(super) fn change<T>(
        &self,
        f: impl FnOnce(&mut dyn Rows) -> Result<T, DirectoryError>,
    ) -> Result<T, DirectoryError> {
        self.backend.write(|rows| {
            let out = f(rows)?;
            rows.bump_generation()?;
            Ok(out)
        })
    }
}

fn not_found(what: &'static str, id: impl ToString) -> DirectoryError {
    DirectoryError::NotFound {
        what,
        id: id.to_string(),
    }
}

fn exists(what: &'static str, id: impl ToString) -> DirectoryError {
    DirectoryError::Exists {
        what,
        id: id.to_string(),
    }
}

fn user_from(row: UserRow) -> Result<User, DirectoryError> {
    Ok(User {
        id: parse_user(row.id)?,
        name: row.name,
        role: parse_role(&row.role)?,
        org: row.org,
    })
}

impl<B: Backend> Directory for DirectoryService<B> {
    fn add_org(&self, id: &str, name: &str) -> Result<(), DirectoryError> {
        check_org_id(id)?;
        check_name("org", name)?;
        self.change(|rows| {
            if rows.org_exists(id)? {
                return Err(exists("org", id));
            }
            rows.insert_org(id, name)
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
        self.change(|rows| {
            if rows.user(id.as_str())?.is_some() {
                return Err(exists("user", id));
            }
            if !rows.org_exists(org)? {
                return Err(not_found("org", org));
            }
            rows.insert_user(&UserRow {
                id: id.to_string(),
                name: name.to_owned(),
                role: role.as_str().to_owned(),
                org: org.to_owned(),
            })
        })?;
        tracing::info!(user = %id, role = role.as_str(), org, "user added");
        Ok(())
    }

    fn add_patient(&self, id: &PatientId, name: &str) -> Result<(), DirectoryError> {
        check_name("patient", name)?;
        self.change(|rows| {
            if rows.patient_exists(id.as_str())? {
                return Err(exists("patient", id));
            }
            rows.insert_patient(id.as_str(), name)
        })?;
        tracing::info!(patient = %id, "patient added");
        Ok(())
    }

    fn assign(&self, user: &UserId, patient: &PatientId) -> Result<(), DirectoryError> {
        self.change(|rows| {
            let row = rows
                .user(user.as_str())?
                .ok_or_else(|| not_found("user", user))?;
            if !rows.patient_exists(patient.as_str())? {
                return Err(not_found("patient", patient));
            }
            if parse_role(&row.role)? == Role::Admin {
                return Err(DirectoryError::NotAssignable(format!(
                    "{user} is an admin; admins see no clinical content"
                )));
            }
            if !rows.insert_assignment(user.as_str(), patient.as_str())? {
                return Err(exists("assignment", format!("{user} -> {patient}")));
            }
            access::assigned(rows, user.as_str(), patient.as_str())
        })?;
        tracing::info!(user = %user, patient = %patient, "assigned");
        Ok(())
    }

    fn unassign(
        &self,
        user: &UserId,
        patient: &PatientId,
        ended: Ended,
    ) -> Result<(), DirectoryError> {
        self.change(|rows| {
            if !rows.delete_assignment(user.as_str(), patient.as_str())? {
                return Err(not_found("assignment", format!("{user} -> {patient}")));
            }
            access::ended(rows, user.as_str(), patient.as_str(), ended)
        })?;
        tracing::info!(user = %user, patient = %patient, "unassigned");
        Ok(())
    }

    fn enroll(&self, user: &UserId, now_ms: i64) -> Result<String, DirectoryError> {
        let code = new_code();
        let expires = now_ms.saturating_add(ENROLLMENT_TTL_MS);
        self.change(|rows| {
            if rows.user(user.as_str())?.is_none() {
                return Err(not_found("user", user));
            }
            rows.insert_code(&hash_code(&code), user.as_str(), now_ms, expires)
        })?;
        tracing::info!(user = %user, expires_ms = expires, "enrollment code issued");
        Ok(code)
    }

    fn redeem(&self, code: &str, now_ms: i64) -> Result<DeviceCredential, DirectoryError> {
        let code = normalize_code(code).ok_or(DirectoryError::InvalidCode)?;
        let code_hash = hash_code(&code);
        let (device, secret) = new_device()?;
        let user = self.change(|rows| {
            let Some(row) = rows.code(&code_hash)? else {
                return Err(DirectoryError::InvalidCode);
            };
            if row.used_ms.is_some() || now_ms >= row.expires_ms {
                return Err(DirectoryError::InvalidCode);
            }
            if rows.device_exists(device.as_str())? || rows.person_device_exists(device.as_str())? {
                return Err(exists("device", &device));
            }
            rows.mark_code_used(&code_hash, now_ms, device.as_str())?;
            rows.insert_device(&NewDevice {
                id: device.as_str(),
                user: &row.user,
                secret_hash: &hash_secret(&secret),
                created_ms: now_ms,
                signing_key: None,
            })?;
            parse_user(row.user)
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
        let Some(row) = self
            .backend
            .read(|rows| rows.device_auth(device.as_str()))?
        else {
            tracing::debug!(device = %device, "authentication failed: unknown device");
            return Ok(None);
        };
        if !crate::db::constant_time_eq(&presented, &row.secret_hash) {
            tracing::debug!(device = %device, "authentication failed: wrong secret");
            return Ok(None);
        }
        if row.revoked {
            tracing::debug!(device = %device, "authentication failed: revoked");
            return Ok(None);
        }
        Ok(Some(DeviceIdentity {
            device: device.clone(),
            user: parse_user(row.user)?,
            role: parse_role(&row.role)?,
        }))
    }

    fn revoke(&self, device: &DeviceId) -> Result<(), DirectoryError> {
        self.change(|rows| {
            if !rows.set_revoked(device.as_str())? {
                return Err(not_found("device", device));
            }
            Ok(())
        })?;
        tracing::info!(device = %device, "device revoked");
        Ok(())
    }

    fn is_revoked(&self, device: &DeviceId) -> Result<bool, DirectoryError> {
        self.backend
            .read(|rows| rows.revoked(device.as_str()))?
            .ok_or_else(|| not_found("device", device))
    }

    fn touch(
        &self,
        device: &DeviceId,
        now_ms: i64,
        cursor: Option<u64>,
    ) -> Result<(), DirectoryError> {
        self.record_connection(device, now_ms, cursor, None)
    }

    fn record_connection(
        &self,
        device: &DeviceId,
        now_ms: i64,
        cursor: Option<u64>,
        waiting: Option<u64>,
    ) -> Result<(), DirectoryError> {
        let cursor = cursor.map(|c| to_stored(c, "cursor")).transpose()?;
        let waiting = waiting.map(|n| to_stored(n, "waiting")).transpose()?;
        self.backend.activity(|rows| {
            let found = rows.touch(device.as_str(), now_ms, cursor)?
                && match waiting {
                    Some(n) => rows.set_waiting(device.as_str(), n, now_ms)?,
                    None => true,
                };
            if !found {
                // Rolled back with the error: nothing of it is written.
                return Err(not_found("device", device));
            }
            Ok(())
        })
    }

    fn register_key(
        &self,
        device: &DeviceId,
        key: &[u8; 32],
    ) -> Result<KeyRegistration, DirectoryError> {
        // A device offers its key on every connection, and it is nearly always the registered
        // one: a read says so without the directory's write lock (which, on PostgreSQL, every
        // node's directory writes queue for). Anything else is decided in the write.
        if let Some(Some(k)) = self.backend.read(|rows| rows.device_key(device.as_str()))?
            && k == key[..]
        {
            return Ok(KeyRegistration::Unchanged);
        }
        self.backend
            .write(|rows| match rows.device_key(device.as_str())? {
                None => Err(not_found("device", device)),
                Some(Some(k)) if k == key[..] => Ok(KeyRegistration::Unchanged),
                Some(Some(_)) => Ok(KeyRegistration::Conflict),
                Some(None) => {
                    rows.set_device_key(device.as_str(), key)?;
                    Ok(KeyRegistration::Registered)
                }
            })
    }

    fn signing_key(&self, device: &DeviceId) -> Result<Option<[u8; 32]>, DirectoryError> {
        self.backend
            .read(|rows| rows.any_signing_key(device.as_str()))?
            .map(|k| rules::bytes32(k, &format!("signing key of {device}")))
            .transpose()
    }

    fn devices(&self) -> Result<Vec<DeviceInfo>, DirectoryError> {
        let rows = self.backend.read(|rows| rows.devices())?;
        rows.into_iter()
            .map(|row| {
                Ok(DeviceInfo {
                    copy_detected_ms: row.copy_detected_ms,
                    copies: parse_copies(&row.copies),
                    id: parse_device(row.id)?,
                    user: parse_user(row.user)?,
                    last_seen_ms: row.last_seen_ms,
                    revoked: row.revoked,
                    cursor: row.cursor.map(|c| stored_u64(c, "cursor")).transpose()?,
                })
            })
            .collect()
    }

    fn copy_detected(
        &self,
        device: &DeviceId,
        earlier: u32,
        later: u32,
        now_ms: i64,
    ) -> Result<(), DirectoryError> {
        self.change(|rows| {
            let copies = rows
                .copies(device.as_str())?
                .ok_or_else(|| not_found("device", device))?;
            let mut pairs = parse_copies(&copies);
            if !pairs.contains(&(earlier, later)) {
                pairs.push((earlier, later));
            }
            rows.set_copies(device.as_str(), &format_copies(&pairs), now_ms)
        })
    }

    fn user(&self, id: &UserId) -> Result<Option<User>, DirectoryError> {
        self.backend
            .read(|rows| rows.user(id.as_str()))?
            .map(user_from)
            .transpose()
    }

    fn users(&self) -> Result<Vec<User>, DirectoryError> {
        let rows = self.backend.read(|rows| rows.users())?;
        rows.into_iter().map(user_from).collect()
    }

    fn orgs(&self) -> Result<Vec<(String, String)>, DirectoryError> {
        self.backend.read(|rows| rows.orgs())
    }

    fn open_enrollments(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<OpenEnrollment>, DirectoryError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.backend.read(|rows| rows.open_codes(now_ms, limit))?;
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
        let rows = self.backend.read(|rows| rows.assignments())?;
        let mut out: BTreeMap<UserId, BTreeSet<PatientId>> = BTreeMap::new();
        for (user, patient) in rows {
            out.entry(parse_user(user)?)
                .or_default()
                .insert(parse_patient(patient)?);
        }
        Ok(out)
    }

    fn access(&self) -> Result<AccessRows, DirectoryError> {
        access::read(self)
    }

    fn withdrawal_sent(
        &self,
        user: &UserId,
        device: &DeviceId,
        patient: &PatientId,
    ) -> Result<(), DirectoryError> {
        access::sent(self, user, device, patient)
    }

    fn withdrawal_told(
        &self,
        user: &UserId,
        device: &DeviceId,
        patient: &PatientId,
    ) -> Result<bool, DirectoryError> {
        access::told(self, user, device, patient)
    }

    fn import_access(&self, legacy: &AccessRows) -> Result<usize, DirectoryError> {
        access::import(self, legacy)
    }

    fn grant_relative(
        &self,
        patient: &PatientId,
        relative: &str,
        now_ms: i64,
    ) -> Result<RelativeConsent, DirectoryError> {
        consent::grant(self, patient, relative, now_ms)
    }

    fn withdraw_relative(
        &self,
        patient: &PatientId,
        relative: &str,
        now_ms: i64,
    ) -> Result<(), DirectoryError> {
        consent::withdraw(self, patient, relative, now_ms)
    }

    fn relatives(&self, patient: &PatientId) -> Result<Vec<RelativeConsent>, DirectoryError> {
        consent::live(self, patient)
    }

    fn waiting(&self) -> Result<BTreeMap<DeviceId, Waiting>, DirectoryError> {
        waiting::all(self)
    }

    fn web_device_key(
        &self,
        device: &DeviceId,
        user: &UserId,
        seed: [u8; 32],
        now_ms: i64,
    ) -> Result<[u8; 32], DirectoryError> {
        web_devices::key(self, device, user, seed, now_ms)
    }

    fn person_device_key(
        &self,
        device: &DeviceId,
        patient: &PatientId,
        seed: [u8; 32],
        now_ms: i64,
    ) -> Result<[u8; 32], DirectoryError> {
        web_devices::person_key(self, device, patient, seed, now_ms)
    }

    fn patients(&self) -> Result<Vec<(PatientId, String)>, DirectoryError> {
        let rows = self.backend.read(|rows| rows.patients())?;
        rows.into_iter()
            .map(|(id, name)| Ok((parse_patient(id)?, name)))
            .collect()
    }

    fn generation(&self) -> Result<u64, DirectoryError> {
        let value = self.backend.read(|rows| rows.generation())?;
        stored_u64(value, "generation")
    }
}
