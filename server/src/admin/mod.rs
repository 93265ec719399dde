//! The admin service: every administrative action and read, once, for both of its callers:
//! the admin HTTP API (`crate::app::admin`, and the coordinator's web dashboard) and the admin
//! command line (`crate::admin_cli`). The callers parse their input and shape their answers;
//! what is done, what is checked and what the audit log says is decided here, so an action
//! leaves the same record whichever way it came.
//!
//! It works over the [`Directory`] and [`AuditLog`] contracts, so it runs unchanged on SQLite
//! (`DATA/server.db` and the log in `DATA/nara.db`) and on PostgreSQL (`crate::pg`).
//!
//! # Fail closed, audit first
//!
//! An admin action is never done unaudited (issue 11). The directory and the audit log are
//! two stores (two SQLite files; on PostgreSQL two connections, so two transactions): they
//! cannot commit together. So every action records its intent first and is made only once
//! that record is durable; if the record cannot be written, nothing is changed and the caller
//! gets [`AdminError::Unaudited`] (HTTP 503, a failing command). If the action then fails, a
//! second record, `NOT DONE (<error>): <the first record's text>`, says so (best effort: the
//! log can then hold an intent without its outcome, never an action without its record).
//!
//! Admin reads (the device list, a person's audit export) are recorded before anything of
//! them is handed out; a read that cannot be recorded is not answered
//! ([`AdminError::UnauditedRead`]).
//!
//! This module reads no clock: each method takes the time its records carry.

use std::sync::Arc;

use sync_core::protocol::policy::Ended;
use sync_core::store::{Epoch, Store};
use sync_core::{DeviceId, PatientId, Role, UserId};

use crate::audit::{AuditAction, AuditEntry, AuditError, AuditLog, AuditRecord, VerifyReport};
use crate::directory::{DeviceInfo, Directory, DirectoryError, ENROLLMENT_TTL_MS};
use crate::web::sessions::{LOGIN_CODE_TTL_MS, SessionError, SqliteSessions, Subject};

pub mod texts;

/// Errors of an admin action or read.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The action's record could not be written: the action was not made.
    #[error("the action could not be audited and was not made: {0}")]
    Unaudited(#[source] AuditError),
    /// The read's record could not be written: nothing of it was handed out.
    #[error("the read could not be audited and was not answered: {0}")]
    UnauditedRead(#[source] AuditError),
    /// The directory refused or failed (the action was recorded as `NOT DONE`).
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// The web sessions refused or failed (the action was recorded as `NOT DONE`).
    #[error("web sessions: {0}")]
    Sessions(#[from] SessionError),
    /// Reading the audit log failed (an export or a verification).
    #[error("reading the audit log: {0}")]
    AuditRead(#[source] AuditError),
    /// The document store failed (the action was recorded as `NOT DONE`).
    #[error("document store: {0}")]
    Store(#[from] sync_core::StoreError),
    /// This node's signed audit heads could not be read for a verification.
    #[error("reading the signed audit heads: {0}")]
    Heads(#[from] crate::audit::heads::HeadError),
}

impl AdminError {
    /// Whether the caller's input is at fault (an unknown id, a duplicate, a broken rule), as
    /// opposed to a store that failed: what HTTP answers 400 for, and may say why.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::Directory(
                DirectoryError::NotFound { .. }
                    | DirectoryError::Exists { .. }
                    | DirectoryError::InvalidCode
                    | DirectoryError::NotAssignable(_)
                    | DirectoryError::Invalid(_)
            ) | Self::Sessions(SessionError::Full)
        )
    }

    /// Whether the audit log could not record the action or read (HTTP 503).
    pub fn is_unaudited(&self) -> bool {
        matches!(self, Self::Unaudited(_) | Self::UnauditedRead(_))
    }
}

/// A new enrollment code, shown once (never stored, never logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    pub code: String,
    pub expires_ms: i64,
    /// The record of its issue.
    pub record: AuditRecord,
}

/// A new web sign-in code, shown once (never stored, never logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginCode {
    pub code: String,
    pub expires_ms: i64,
    pub record: AuditRecord,
}

/// The admin actions and reads, each audited with one text (see the module comment).
/// A person's access log from `audit`, recorded there as read before it is returned: what
/// [`AdminService::audit_export`] does, for a caller that has the log alone (`nara-server
/// admin audit export` opens no directory).
pub fn audit_export(
    audit: &dyn AuditLog,
    actor: &str,
    at_ms: i64,
    patient: &PatientId,
) -> Result<Vec<AuditRecord>, AdminError> {
    let records = audit
        .export_patient(patient)
        .map_err(AdminError::AuditRead)?;
    audit
        .append(
            AuditEntry::new(at_ms, actor, AuditAction::Read)
                .patient(patient)
                .detail(texts::audit_export(records.len())),
        )
        .inspect_err(|e| tracing::error!(error = %e, "could not append to the audit log"))
        .map_err(AdminError::UnauditedRead)?;
    Ok(records)
}

#[derive(Clone)]
pub struct AdminService {
    directory: Arc<dyn Directory>,
    audit: Arc<dyn AuditLog>,
}

impl std::fmt::Debug for AdminService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminService").finish_non_exhaustive()
    }
}

impl AdminService {
    pub fn new(directory: Arc<dyn Directory>, audit: Arc<dyn AuditLog>) -> Self {
        Self { directory, audit }
    }

    /// The directory acted on.
    pub fn directory(&self) -> &Arc<dyn Directory> {
        &self.directory
    }

    /// The audit log written to.
    pub fn audit_log(&self) -> &Arc<dyn AuditLog> {
        &self.audit
    }

    /// Records `entry`, then does `act`: nothing is done unless its record is durable. If `act`
    /// fails, a second record says it was not done (best effort), and its error is returned.
    pub fn audited<T, E>(
        &self,
        entry: AuditEntry,
        act: impl FnOnce() -> Result<T, E>,
    ) -> Result<(AuditRecord, T), AdminError>
    where
        E: Into<AdminError>,
    {
        let record = self
            .audit
            .append(entry.clone())
            .inspect_err(|e| tracing::error!(error = %e, "could not append to the audit log"))
            .map_err(AdminError::Unaudited)?;
        match act() {
            Ok(value) => Ok((record, value)),
            Err(e) => {
                let e: AdminError = e.into();
                let outcome = AuditEntry {
                    detail: texts::not_done(&e, &entry.detail),
                    ..entry
                };
                if let Err(a) = self.audit.append(outcome) {
                    tracing::error!(error = %a, "the failure of an audited admin action could not be recorded");
                }
                Err(e)
            }
        }
    }

    /// Records a read before it is answered.
    fn read(&self, entry: AuditEntry) -> Result<AuditRecord, AdminError> {
        self.audit
            .append(entry)
            .inspect_err(|e| tracing::error!(error = %e, "could not append to the audit log"))
            .map_err(AdminError::UnauditedRead)
    }

    pub fn add_org(
        &self,
        actor: &str,
        at_ms: i64,
        id: &str,
        name: &str,
    ) -> Result<AuditRecord, AdminError> {
        let entry = AuditEntry::new(at_ms, actor, AuditAction::AddOrg).detail(texts::add_org(id));
        Ok(self.audited(entry, || self.directory.add_org(id, name))?.0)
    }

    pub fn add_user(
        &self,
        actor: &str,
        at_ms: i64,
        id: &UserId,
        name: &str,
        role: Role,
        org: &str,
    ) -> Result<AuditRecord, AdminError> {
        let entry = AuditEntry::new(at_ms, actor, AuditAction::AddUser)
            .detail(texts::add_user(id, role, org));
        Ok(self
            .audited(entry, || self.directory.add_user(id, name, role, org))?
            .0)
    }

    /// Adds a person; the name stays out of the (never erased) audit log, the id is enough.
    pub fn add_patient(
        &self,
        actor: &str,
        at_ms: i64,
        id: &PatientId,
        name: &str,
    ) -> Result<AuditRecord, AdminError> {
        let entry = AuditEntry::new(at_ms, actor, AuditAction::AddPatient)
            .patient(id)
            .detail(texts::add_patient());
        Ok(self
            .audited(entry, || self.directory.add_patient(id, name))?
            .0)
    }

    /// Assigns (`assign`) or unassigns `user` and `patient`: the care relationship.
    ///
    /// `head` is the store's feed head now: an ended assignment keeps it with `at_ms`, and the
    /// write grace of the user's phones admits only what builds on no more (ignored when
    /// assigning).
    pub fn set_assignment(
        &self,
        actor: &str,
        at_ms: i64,
        head: u64,
        user: &UserId,
        patient: &PatientId,
        assign: bool,
    ) -> Result<AuditRecord, AdminError> {
        let action = if assign {
            AuditAction::Assign
        } else {
            AuditAction::Unassign
        };
        let entry = AuditEntry::new(at_ms, actor, action)
            .patient(patient)
            .detail(texts::assignment(user, assign));
        let act = || {
            if assign {
                self.directory.assign(user, patient)
            } else {
                self.directory
                    .unassign(user, patient, Ended { at_ms, head })
            }
        };
        Ok(self.audited(entry, act)?.0)
    }

    /// A one-time enrollment code for `user`'s new phone, valid [`ENROLLMENT_TTL_MS`] from
    /// `at_ms` (the record never holds the code).
    pub fn enroll(&self, actor: &str, at_ms: i64, user: &UserId) -> Result<Enrollment, AdminError> {
        let expires_ms = at_ms.saturating_add(ENROLLMENT_TTL_MS);
        let entry = AuditEntry::new(at_ms, actor, AuditAction::Enroll)
            .detail(texts::enroll(user, expires_ms));
        let (record, code) = self.audited(entry, || self.directory.enroll(user, at_ms))?;
        Ok(Enrollment {
            code,
            expires_ms,
            record,
        })
    }

    /// Revokes a device for good; its record names the device and its user.
    pub fn revoke(
        &self,
        actor: &str,
        at_ms: i64,
        device: &DeviceId,
    ) -> Result<(AuditRecord, Option<UserId>), AdminError> {
        let user = self
            .directory
            .devices()?
            .into_iter()
            .find(|d| &d.id == device)
            .map(|d| d.user);
        let entry = AuditEntry::new(at_ms, actor, AuditAction::Revoke)
            .device(device)
            .detail(texts::revoke(user.as_ref()));
        let (record, ()) = self.audited(entry, || self.directory.revoke(device))?;
        Ok((record, user))
    }

    /// Every enrolled device, recorded as read before it is returned.
    pub fn devices(&self, actor: &str, at_ms: i64) -> Result<Vec<DeviceInfo>, AdminError> {
        let devices = self.directory.devices()?;
        self.read(
            AuditEntry::new(at_ms, actor, AuditAction::Read)
                .detail(texts::device_list(devices.len())),
        )?;
        Ok(devices)
    }

    /// A person's access log. Handing it out is itself an access to their record: recorded
    /// before it is returned (the export does not hold its own record).
    pub fn audit_export(
        &self,
        actor: &str,
        at_ms: i64,
        patient: &PatientId,
    ) -> Result<Vec<AuditRecord>, AdminError> {
        audit_export(self.audit.as_ref(), actor, at_ms, patient)
    }

    /// Verifies the chain, and against `heads` (the signed heads this node exported: see
    /// `AppState::signed_heads`), after recording that it was verified, so the report covers
    /// its own record (the HTTP API's and the dashboard's verification; `nara-server admin
    /// audit verify` examines the log without adding to it, and calls
    /// [`AuditLog::verify_against`] itself).
    pub fn audit_verify_recorded(
        &self,
        actor: &str,
        at_ms: i64,
        heads: &crate::audit::Checkpoints,
    ) -> Result<VerifyReport, AdminError> {
        self.read(
            AuditEntry::new(at_ms, actor, AuditAction::Read).detail(texts::audit_verified()),
        )?;
        self.audit
            .verify_against(heads)
            .map_err(AdminError::AuditRead)
    }

    /// A one-time web sign-in code for `subject` in `sessions`, issued at `now_ms` (the web
    /// views' clock) and recorded at `at_ms`; the caller has checked that the subject is known
    /// (`crate::web::known`).
    pub fn login_code(
        &self,
        actor: &str,
        at_ms: i64,
        sessions: &SqliteSessions,
        subject: &Subject,
        now_ms: i64,
    ) -> Result<LoginCode, AdminError> {
        let expires_ms = now_ms.saturating_add(LOGIN_CODE_TTL_MS);
        let mut entry = AuditEntry::new(at_ms, actor, AuditAction::LoginCode)
            .detail(texts::login_code(subject, expires_ms));
        if let Some(p) = subject.patient() {
            entry = entry.patient(p);
        }
        let (record, code) = self.audited(entry, || sessions.issue_code(subject, now_ms))?;
        Ok(LoginCode {
            code,
            expires_ms,
            record,
        })
    }

    /// Moves the document store's feed to the new epoch `epoch` (random, from the caller: this
    /// module draws no randomness), for a store put back by other means than `admin restore`
    /// (a PostgreSQL failover or restore the server could not see, a data directory copied
    /// back): every device's cursor names the old epoch, so each reconciles what it holds with
    /// the server at its next sync, and what the server lost comes back from the devices.
    /// Nothing is deleted. Returns the record and the old epoch.
    pub fn new_epoch(
        &self,
        actor: &str,
        at_ms: i64,
        store: &mut dyn Store,
        epoch: Epoch,
    ) -> Result<(AuditRecord, Epoch), AdminError> {
        let old = store.epoch()?;
        let entry = AuditEntry::new(at_ms, actor, AuditAction::NewEpoch)
            .detail(texts::new_epoch(&old, &epoch));
        let (record, ()) = self.audited(entry, || store.set_epoch(epoch))?;
        Ok((record, old))
    }

    /// Ends every web session of `subject`; returns how many there were.
    pub fn revoke_sessions(
        &self,
        actor: &str,
        at_ms: i64,
        sessions: &SqliteSessions,
        subject: &Subject,
    ) -> Result<(AuditRecord, usize), AdminError> {
        let mut entry = AuditEntry::new(at_ms, actor, AuditAction::SignOut)
            .detail(texts::revoke_sessions(subject));
        if let Some(p) = subject.patient() {
            entry = entry.patient(p);
        }
        self.audited(entry, || sessions.revoke_subject(subject, at_ms))
    }
}

#[cfg(test)]
mod tests;
