//! The audit log: append-only and tamper-evident, as Patientdatalagen asks (every read and write
//! of a person's record is logged, the log can be checked, and a person may ask who accessed
//! their record).
//!
//! # Storage
//!
//! The log's tables live in the document store's file, `DATA/nara.db` (see
//! [`crate::admin_cli::audit_path`]), so that a stored upload and its audit records commit in
//! one transaction: the sync shell writes them with [`append_on`] on the store's own connection
//! inside the store group that stores the upload (`SqliteStore::with_group_connection`). A
//! change is never stored without its record, nor a record kept for a change that was not.
//! [`SqliteAudit`] is a second connection to the same file for the other writers (admin HTTP
//! actions, enrollment, `nara-server admin`) and for `verify`/`export`. The running server and
//! `nara-server admin` append at once (WAL, a 5 s busy timeout, `IMMEDIATE` transactions).
//! A log kept in a file of its own (`DATA/audit.db`, the earlier layout) is imported once, on
//! open, with its chain unchanged ([`schema::import_legacy`]).
//!
//! On PostgreSQL the log is `crate::pg::audit::PgAuditLog`, with the same chain (one for every
//! node on the database) and its own `append_on` for a `PgStore` group's transaction. The chain
//! itself (hashing, linking, verification) is in [`chain`], shared by both backends, and
//! `audit/conformance.rs` holds both to one suite of cases.
//!
//! # The hash chain
//!
//! Records are numbered from 1 (`seq`). Each record carries `prev`, the hash of the record
//! before it (64 zeros for the first), and its own `hash`:
//!
//! ```text
//! hash = SHA-256( "nara-audit-v1\0"
//!               || str(prev) || u64be(seq) || i64be(at_ms) || str(actor) || opt(device)
//!               || str(action) || opt(patient) || opt(document) || str(detail) )
//! str(s) = u64be(len(s)) || utf8(s);   opt(None) = 0x00;   opt(Some(s)) = 0x01 || str(s)
//! ```
//!
//! Every field is length-prefixed, so no two different records encode the same way. An append
//! is one transaction that inserts the record and updates a one-row head table (record count
//! and last hash).
//!
//! [`AuditLog::verify`] recomputes the whole chain and reports, without stopping at the first:
//! a record whose content no longer matches its hash (an edited field), a missing sequence
//! number or a broken `prev` link (a deleted or re-hashed record), and a head table that
//! disagrees with the last record (records deleted at the end).
//!
//! **Limit, and the signed head.** Someone with write access to the database who deletes
//! records at the end *and* rewrites the head row to match leaves a shorter chain that is
//! consistent in itself; so does someone who rewrites every hash after an edit. Neither can be
//! detected from the database alone, only against a copy of the head kept elsewhere. So the
//! server signs its head now and then (every 60 s when it moved, and at a clean shutdown) with
//! its audit key and appends it to a file outside the database ([`heads`]:
//! `DATA/audit-heads.jsonl`); [`AuditLog::verify_against`] (`nara-server admin audit verify`)
//! checks every signed head against the trusted public key and the chain: the record a head
//! names must still be there, with the head's hash. What was appended after the last exported
//! head is only as safe as the chain alone; a copy of the heads file and the public key kept
//! off the server make the check an auditor's.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sync_core::{DeviceId, PatientId};

use crate::db;

pub(crate) mod chain;
pub mod heads;
mod query;
pub mod schema;
mod sqlite;

pub use heads::{AuditHead, Checkpoints};
pub use schema::Imported;
pub use sqlite::{SqliteAudit, append_on};

/// The `prev` of the first record.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest `detail` kept; a longer one is cut (on a character boundary) and marked with `…`.
pub const MAX_DETAIL_LEN: usize = 4096;

/// Longest `actor` and `document` accepted.
pub const MAX_FIELD_LEN: usize = 200;

/// At most this many problems are listed by `verify`; the rest are counted.
const MAX_PROBLEMS: usize = 100;

const DOMAIN: &[u8] = b"nara-audit-v1\0";

/// Errors of the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Another database underneath failed (PostgreSQL): which one, and its error as the source.
    #[error("audit database ({backend}): {}", sync_core::error::Chain(source.as_ref()))]
    Backend {
        backend: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A stored row that cannot be read back (see `verify` for what is wrong with the log).
    #[error("bad row in the audit log: {0}")]
    BadRow(String),
    /// An entry that cannot be logged (empty or over-long actor, over-long document).
    #[error("invalid audit entry: {0}")]
    Invalid(String),
    /// The log's head row is gone: the file was tampered with; appending stops.
    #[error("the audit log's head row is missing; run `nara-server admin audit verify`")]
    MissingHead,
    /// The file was written by a newer build; it is left untouched.
    #[error("audit schema version {found} is newer than this build supports ({supported})")]
    NewerSchema { found: i64, supported: i64 },
}

impl From<db::OpenError> for AuditError {
    fn from(e: db::OpenError) -> Self {
        match e {
            db::OpenError::Sqlite(e) => Self::Sqlite(e),
            db::OpenError::NewerSchema { found, supported } => {
                Self::NewerSchema { found, supported }
            }
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditAction {
    /// A document (or changes of it) was delivered to a device.
    Disclose,
    /// A change from a device was accepted.
    Accept,
    /// A change from a device was refused.
    Refuse,
    /// Something was read other than by sync (an export, an admin listing).
    Read,
    Enroll,
    Redeem,
    Assign,
    Unassign,
    Revoke,
    AddOrg,
    AddUser,
    AddPatient,
    AuthFailed,
    /// Access to a person was withdrawn from a device (its documents are to be removed).
    Withdraw,
    /// A device's sync connection was closed for breaking the protocol or a limit (malformed or
    /// oversize messages, too many messages, stalled, not reading).
    Disconnect,
    /// Enrollment attempts were refused because too many came at once.
    RateLimited,
    /// A consistent copy of the server's stores was made (`nara-server admin backup`).
    Backup,
    /// The stores were put back from a backup (`nara-server admin restore`).
    Restore,
    /// A device's clock was found more than 5 minutes off the server's (at its hello).
    ClockSkew,
    /// A device's store was behind what the server held from it (restored from a backup, or
    /// copied) and was told to go on under a new incarnation.
    Reincarnated,
    /// Two installations were found using one device credential (a copied store).
    CopyDetected,
    /// A device whose cursor the feed could not prove reconciled what it holds with the server
    /// (one record per recovery, with its counts).
    Recovery,
    /// A device had seen a feed history the server does not hold (its data went back in time
    /// without a restore): the feed moved to a new epoch.
    FeedDiverged,
    /// A one-time sign-in code for the web views was issued (never the code itself).
    LoginCode,
    /// A browser session began (a sign-in code redeemed).
    SignIn,
    /// A browser session ended (signed out, or revoked).
    SignOut,
    /// A person recorded their consent that a relative may read their record (web views).
    Consent,
    /// A person withdrew a relative's consent (the relative's web sessions end with it).
    ConsentWithdrawn,
    /// The feed moved to a new epoch because the database's history changed (a failover to a
    /// promoted standby, a restore: PostgreSQL, `crate::pg`), or because an operator asked
    /// (`nara-server admin new-epoch`): every device recovers at its next sync.
    NewEpoch,
}

impl AuditAction {
    pub const ALL: [AuditAction; 29] = [
        AuditAction::Disclose,
        AuditAction::Accept,
        AuditAction::Refuse,
        AuditAction::Read,
        AuditAction::Enroll,
        AuditAction::Redeem,
        AuditAction::Assign,
        AuditAction::Unassign,
        AuditAction::Revoke,
        AuditAction::AddOrg,
        AuditAction::AddUser,
        AuditAction::AddPatient,
        AuditAction::AuthFailed,
        AuditAction::Withdraw,
        AuditAction::Disconnect,
        AuditAction::RateLimited,
        AuditAction::Backup,
        AuditAction::Restore,
        AuditAction::ClockSkew,
        AuditAction::Reincarnated,
        AuditAction::CopyDetected,
        AuditAction::Recovery,
        AuditAction::FeedDiverged,
        AuditAction::LoginCode,
        AuditAction::SignIn,
        AuditAction::SignOut,
        AuditAction::Consent,
        AuditAction::ConsentWithdrawn,
        AuditAction::NewEpoch,
    ];

    /// The kebab-case name, as in JSON and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Disclose => "disclose",
            AuditAction::Accept => "accept",
            AuditAction::Refuse => "refuse",
            AuditAction::Read => "read",
            AuditAction::Enroll => "enroll",
            AuditAction::Redeem => "redeem",
            AuditAction::Assign => "assign",
            AuditAction::Unassign => "unassign",
            AuditAction::Revoke => "revoke",
            AuditAction::AddOrg => "add-org",
            AuditAction::AddUser => "add-user",
            AuditAction::AddPatient => "add-patient",
            AuditAction::AuthFailed => "auth-failed",
            AuditAction::Withdraw => "withdraw",
            AuditAction::Disconnect => "disconnect",
            AuditAction::RateLimited => "rate-limited",
            AuditAction::Backup => "backup",
            AuditAction::Restore => "restore",
            AuditAction::ClockSkew => "clock-skew",
            AuditAction::Reincarnated => "reincarnated",
            AuditAction::CopyDetected => "copy-detected",
            AuditAction::Recovery => "recovery",
            AuditAction::FeedDiverged => "feed-diverged",
            AuditAction::LoginCode => "login-code",
            AuditAction::SignIn => "sign-in",
            AuditAction::SignOut => "sign-out",
            AuditAction::Consent => "consent",
            AuditAction::ConsentWithdrawn => "consent-withdrawn",
            AuditAction::NewEpoch => "new-epoch",
        }
    }
}

impl FromStr for AuditAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        AuditAction::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown audit action {s:?}"))
    }
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing to log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Server time, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// A user id, or "admin" (the admin command line), or "system".
    pub actor: String,
    pub device: Option<DeviceId>,
    pub action: AuditAction,
    /// The person concerned; [`AuditLog::export_patient`] selects on it, so set it whenever
    /// the entry concerns a person's record (also when `document` is set).
    pub patient: Option<PatientId>,
    /// A document id (`patient/kind[/YYYY-MM]`) or another object the entry concerns.
    pub document: Option<String>,
    /// Free text: why (a refusal's reason), how much (change hashes), with what.
    pub detail: String,
}

impl AuditEntry {
    /// An entry with no device, patient, document or detail; add them with the builders.
    pub fn new(at_ms: i64, actor: impl Into<String>, action: AuditAction) -> Self {
        Self {
            at_ms,
            actor: actor.into(),
            device: None,
            action,
            patient: None,
            document: None,
            detail: String::new(),
        }
    }
    pub fn device(mut self, device: &DeviceId) -> Self {
        self.device = Some(device.clone());
        self
    }
    pub fn patient(mut self, patient: &PatientId) -> Self {
        self.patient = Some(patient.clone());
        self
    }
    pub fn document(mut self, document: impl Into<String>) -> Self {
        self.document = Some(document.into());
        self
    }
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

/// An entry as logged, with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    #[serde(flatten)]
    pub entry: AuditEntry,
    /// The previous record's hash (hex); 64 zeros for the first record.
    pub prev: String,
    /// This record's hash (hex).
    pub hash: String,
}

impl AuditRecord {
    /// The hash this record's fields and `prev` give under the chain's rule (see the module
    /// docs): what `hash` must be. For tools that check or, in tests, rewrite a chain.
    pub fn chain_hash(&self) -> String {
        let e = &self.entry;
        chain::record_hash(
            &self.prev,
            &chain::Fields {
                seq: self.seq,
                at_ms: e.at_ms,
                actor: &e.actor,
                device: e.device.as_ref().map(DeviceId::as_str),
                action: e.action.as_str(),
                patient: e.patient.as_ref().map(PatientId::as_str),
                document: e.document.as_deref(),
                detail: &e.detail,
            },
        )
    }
}

/// The outcome of [`AuditLog::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Records read.
    pub records: u64,
    pub ok: bool,
    /// What is wrong, one line each (at most 100, then a count of the rest).
    pub problems: Vec<String>,
    /// The hash of the last record in the log (64 zeros if empty). Keep a copy elsewhere: it is
    /// what detects a log cut short with a rewritten head.
    pub head: String,
    /// Signed heads whose signature verified and that were checked against the chain
    /// ([`AuditLog::verify_against`]; 0 for [`AuditLog::verify`]).
    #[serde(default)]
    pub signed_heads: u64,
}

/// The audit log contract, so that a PostgreSQL backend can follow.
pub trait AuditLog: Send + Sync {
    /// Appends one entry, durably, and returns it as recorded.
    fn append(&self, entry: AuditEntry) -> Result<AuditRecord, AuditError>;
    /// Appends entries in order, durably and all together (one transaction where the backend
    /// has them): a sync step that discloses many documents costs one commit.
    fn append_all(&self, entries: Vec<AuditEntry>) -> Result<(), AuditError> {
        for e in entries {
            self.append(e)?;
        }
        Ok(())
    }
    /// Recomputes the whole chain; problems are reported, not returned as errors.
    fn verify(&self) -> Result<VerifyReport, AuditError> {
        self.verify_against(&Checkpoints::none())
    }
    /// [`AuditLog::verify`], and also against signed heads exported earlier: a record a head
    /// names must be in the chain with the head's hash ([`heads`]).
    fn verify_against(&self, heads: &Checkpoints) -> Result<VerifyReport, AuditError>;
    /// The chain's head as stored: how many records were appended, and the last one's hash
    /// (64 zeros when empty).
    fn head(&self) -> Result<AuditHead, AuditError>;
    /// Every record about `patient`, in order: who accessed or changed their record, when, and
    /// from which device.
    fn export_patient(&self, patient: &PatientId) -> Result<Vec<AuditRecord>, AuditError>;
    /// The latest records (at most `limit`, newest first) whose action is one of `actions`:
    /// what the coordinator's dashboard shows of refusals, clock skew and disconnections.
    fn latest(&self, actions: &[AuditAction], limit: usize)
    -> Result<Vec<AuditRecord>, AuditError>;
    /// The latest records about `patient` (at most `limit`, newest first): the person's own
    /// access log on the web.
    fn latest_for_patient(
        &self,
        patient: &PatientId,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, AuditError>;
    /// How many records have been appended (from the head table).
    fn len(&self) -> Result<u64, AuditError>;
    /// Whether nothing has been appended yet.
    fn is_empty(&self) -> Result<bool, AuditError> {
        Ok(self.len()? == 0)
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut.
fn cut(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    const MARK: &str = "…";
    let mut end = max.saturating_sub(MARK.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(MARK);
}

fn check_entry(entry: &mut AuditEntry) -> Result<(), AuditError> {
    if entry.actor.is_empty() || entry.actor.len() > MAX_FIELD_LEN {
        return Err(AuditError::Invalid(format!(
            "actor must be 1 to {MAX_FIELD_LEN} bytes"
        )));
    }
    if entry
        .document
        .as_ref()
        .is_some_and(|d| d.len() > MAX_FIELD_LEN)
    {
        return Err(AuditError::Invalid(format!(
            "document must be at most {MAX_FIELD_LEN} bytes"
        )));
    }
    cut(&mut entry.detail, MAX_DETAIL_LEN);
    Ok(())
}

/// `s` with every control character (newlines included) and backslash escaped (`\n`,
/// `\u{1b}`), for printing records one per line: a detail can never forge a line.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\\' || c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod conformance;
#[cfg(test)]
mod tests;
