//! What the audit log says of each admin action and read: one text per action, whichever
//! caller (HTTP API, web dashboard, command line) made it. Never a secret (a code), never a
//! person's name: the log is kept for good.

use sync_core::{Role, UserId};

use crate::admin_cli::format_ms;
use crate::web::sessions::Subject;

use super::AdminError;

pub fn add_org(id: &str) -> String {
    format!("org {id}")
}

pub fn add_user(id: &UserId, role: Role, org: &str) -> String {
    format!("user {id}, role {}, org {org}", role.as_str())
}

/// The person is the record's `patient`; their name is not logged.
pub fn add_patient() -> String {
    "patient added".into()
}

/// The person is the record's `patient`.
pub fn assignment(user: &UserId, assign: bool) -> String {
    let word = if assign { "assigned" } else { "unassigned" };
    format!("user {user} {word}")
}

pub fn enroll(user: &UserId, expires_ms: i64) -> String {
    format!(
        "enrollment code issued for user {user}, valid until {}",
        format_ms(expires_ms)
    )
}

/// The device is the record's `device`; `user` is its user, if it is known.
pub fn revoke(user: Option<&UserId>) -> String {
    match user {
        Some(user) => format!("device of user {user} revoked"),
        None => "device revoked".into(),
    }
}

pub fn device_list(n: usize) -> String {
    format!("device list ({n})")
}

/// The person is the record's `patient`.
pub fn audit_export(n: usize) -> String {
    format!("audit export ({n} records)")
}

pub fn audit_verified() -> String {
    "audit log verified".into()
}

pub fn login_code(subject: &Subject, expires_ms: i64) -> String {
    format!(
        "sign-in code issued for {}, valid until {}",
        subject.actor(),
        format_ms(expires_ms)
    )
}

pub fn revoke_sessions(subject: &Subject) -> String {
    format!("every web session of {} revoked", subject.actor())
}

/// An operator moved the feed to a new epoch (`admin new-epoch`).
pub fn new_epoch(old: &[u8], new: &[u8]) -> String {
    format!(
        "new feed epoch {} (was {}), asked for by an operator: every device recovers at its next \
         sync",
        hex::encode(new),
        hex::encode(old)
    )
}

/// The second record of an action that was recorded and then failed.
pub fn not_done(error: &AdminError, detail: &str) -> String {
    format!("NOT DONE ({error}): {detail}")
}
