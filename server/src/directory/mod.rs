//! The server's directory: organisations, staff, the people cared for, who cares for whom
//! (assignments, the care relationship that access follows), and enrolled devices.
//!
//! [`Directory`] is the contract. [`DirectoryService`] implements it once, over any
//! [`Backend`]: the rules (ids, names, enrollment codes and their hashes, device credentials,
//! what each method checks before writing, the generation bump) are its, SQL-free
//! (`service.rs`, `rules.rs`, `consent.rs`, `waiting.rs`, `web_devices.rs`); a backend
//! provides transactions and rows ([`Rows`], `rows.rs`). [`SqliteDirectory`] keeps the rows
//! in a SQLite file of its own (`DATA/server.db`, see [`crate::admin_cli::directory_path`]),
//! separate from the document store; `crate::pg::PgDirectory` keeps them in PostgreSQL, for
//! several server nodes on one database. Both run one conformance suite (`conformance.rs`).
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
//! The running server and `nara-server admin` open the same file at once (or, on PostgreSQL,
//! several nodes one database). Every write is one transaction serialised with every other
//! write ([`Backend::write`]: SQLite's `IMMEDIATE` transactions, where a second writer waits up
//! to 5 s; a transaction-scoped advisory lock on PostgreSQL), and every change bumps a durable
//! generation number in the same transaction; the server polls [`Directory::generation`] to
//! notice changes.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sync_core::protocol::policy::{AccessRows, Ended};
use sync_core::{DeviceId, PatientId, Role, UserId};

use crate::db;

mod access;
#[cfg(test)]
pub(crate) mod conformance;
mod consent;
mod rows;
mod rules;
mod schema;
mod service;
mod sqlite;
#[cfg(test)]
mod tests;
mod waiting;
mod web_devices;

pub use rows::{
    AuthRow, Backend, CodeRow, DeviceRow, EndedRow, NewDevice, NewPersonDevice, Rows, UserRow,
    WithdrawalRow,
};
pub use service::DirectoryService;
pub use sqlite::{SqliteBackend, SqliteDirectory};

/// How long an enrollment code stays valid.
pub const ENROLLMENT_TTL_MS: i64 = 24 * 60 * 60 * 1000;

/// Length of an enrollment code, in characters.
pub const CODE_LEN: usize = 12;

/// Longest display name of an organisation, user or patient.
pub const MAX_NAME_LEN: usize = 200;

/// Errors of the directory.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// A failure of the database underneath (named by `backend`: "sqlite", "postgresql").
    #[error("directory database ({backend}): {}", sync_core::error::Chain(source.as_ref()))]
    Backend {
        backend: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
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

impl DirectoryError {
    /// A failure of the database named `backend`.
    pub fn backend(
        backend: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Backend {
            backend,
            source: source.into(),
        }
    }
}

impl From<rusqlite::Error> for DirectoryError {
    fn from(e: rusqlite::Error) -> Self {
        Self::backend("sqlite", e)
    }
}

impl From<db::OpenError> for DirectoryError {
    fn from(e: db::OpenError) -> Self {
        match e {
            db::OpenError::Sqlite(e) => e.into(),
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

/// An enrollment code waiting to be used: for whom, issued and valid until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenEnrollment {
    pub user: UserId,
    pub created_ms: i64,
    pub expires_ms: i64,
}

/// Relatives with live consent one person may have at most.
pub const MAX_RELATIVES: usize = 20;

/// A person's recorded consent that a relative may read their record (issue 15). The relative
/// is known by the name the person gave; the consent is the person's own, given and withdrawn
/// by them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelativeConsent {
    pub patient: PatientId,
    /// The relative's name, as the person wrote it (trimmed).
    pub relative: String,
    pub granted_ms: i64,
}

/// What a device last said it had waiting for upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    /// Local changes not yet acknowledged by the server.
    pub changes: u64,
    /// When the server learned it (server time).
    pub at_ms: i64,
}

/// A member of staff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub role: Role,
    pub org: String,
}

/// Identity and care relationships: one contract for every backend.
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
    /// [`DirectoryError::Exists`]. An earlier end of the same assignment and its withdrawals
    /// are forgotten (a later end starts a new write grace).
    fn assign(&self, user: &UserId, patient: &PatientId) -> Result<(), DirectoryError>;
    /// Ends an assignment, recording `ended` (the caller's time and feed head: the write grace
    /// of `sync_core::protocol::policy`); [`DirectoryError::NotFound`] if there is none. Ends
    /// older than the grace are deleted in the same transaction.
    fn unassign(
        &self,
        user: &UserId,
        patient: &PatientId,
        ended: Ended,
    ) -> Result<(), DirectoryError>;
    /// The access rows (assignments, ended assignments, withdrawals told and sent), read in
    /// one transaction: what `sync_core::protocol::policy::CareRules` decides on.
    fn access(&self) -> Result<AccessRows, DirectoryError>;
    /// A withdrawal of `patient` was sent to `device` (of `user`) on one more connection
    /// (nothing if it was told already). Bumps the generation: every node re-reads the rows.
    fn withdrawal_sent(
        &self,
        user: &UserId,
        device: &DeviceId,
        patient: &PatientId,
    ) -> Result<(), DirectoryError>;
    /// `device` (of `user`) was told of the withdrawal of `patient`: its grace is over. Returns
    /// whether that is news; bumps the generation if so.
    fn withdrawal_told(
        &self,
        user: &UserId,
        device: &DeviceId,
        patient: &PatientId,
    ) -> Result<bool, DirectoryError>;
    /// Takes ended assignments and withdrawals kept elsewhere before (the server's old
    /// snapshot): each end of a pair not assigned now and not ended here already, and each
    /// withdrawal of such an end not recorded here already. Returns how many rows it added.
    fn import_access(&self, legacy: &AccessRows) -> Result<usize, DirectoryError>;
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
    /// What a sync connection records of its device when it opens and when it ends, in one
    /// durable write: [`Directory::touch`] and, with `waiting`, what the device reports it
    /// holds for upload (the last report wins; [`Directory::waiting`] reads them). All or
    /// nothing: an unknown device -> [`DirectoryError::NotFound`] and nothing written. Does
    /// not bump the generation.
    fn record_connection(
        &self,
        device: &DeviceId,
        now_ms: i64,
        cursor: Option<u64>,
        waiting: Option<u64>,
    ) -> Result<(), DirectoryError>;
    /// Registers the device's public signing key (32 bytes) if it has none yet; a registered
    /// key is never replaced (whoever holds a stolen secret cannot swap it). Does not bump the
    /// generation. Unknown device -> [`DirectoryError::NotFound`].
    fn register_key(
        &self,
        device: &DeviceId,
        key: &[u8; 32],
    ) -> Result<KeyRegistration, DirectoryError>;
    /// The device's registered signing key (`None`: a legacy device that registered none, or
    /// no such device), a person's web device's included.
    fn signing_key(&self, device: &DeviceId) -> Result<Option<[u8; 32]>, DirectoryError>;
    /// Every enrolled device (revoked ones included), by id; web devices left out (they never
    /// connect).
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
    /// Every member of staff, by id.
    fn users(&self) -> Result<Vec<User>, DirectoryError>;
    /// Every organisation: (id, name), by id.
    fn orgs(&self) -> Result<Vec<(String, String)>, DirectoryError>;
    /// Enrollment codes neither used nor expired at `now_ms`, newest first, at most `limit`
    /// (the codes themselves are not stored, only who they are for and until when).
    fn open_enrollments(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<OpenEnrollment>, DirectoryError>;
    /// user -> patients they are assigned to (the care relationship). Users without any
    /// assignment are absent.
    fn assignments(&self) -> Result<BTreeMap<UserId, BTreeSet<PatientId>>, DirectoryError>;
    /// Records the person's consent that `relative` may read their record. Unknown patient ->
    /// [`DirectoryError::NotFound`]; a live consent for that name already ->
    /// [`DirectoryError::Exists`]; more than [`MAX_RELATIVES`] -> [`DirectoryError::Invalid`].
    fn grant_relative(
        &self,
        patient: &PatientId,
        relative: &str,
        now_ms: i64,
    ) -> Result<RelativeConsent, DirectoryError>;
    /// Withdraws the consent (kept as history); none live -> [`DirectoryError::NotFound`].
    fn withdraw_relative(
        &self,
        patient: &PatientId,
        relative: &str,
        now_ms: i64,
    ) -> Result<(), DirectoryError>;
    /// The person's live consents, by relative.
    fn relatives(&self, patient: &PatientId) -> Result<Vec<RelativeConsent>, DirectoryError>;
    /// The last report of every device that ever reported, by device.
    fn waiting(&self) -> Result<BTreeMap<DeviceId, Waiting>, DirectoryError>;
    /// The seed of the signing key of `user`'s web device `device` (the device their browser
    /// sessions write as), made on first use: the device is entered like an enrolled phone,
    /// with no credential anyone holds, `seed`'s public key registered as its signing key, and
    /// the seed kept in the directory; later calls return the kept seed and ignore `seed`. A
    /// phone enrolled under that id -> [`DirectoryError::Exists`]. Does not bump the generation.
    fn web_device_key(
        &self,
        device: &DeviceId,
        user: &UserId,
        seed: [u8; 32],
        now_ms: i64,
    ) -> Result<[u8; 32], DirectoryError>;
    /// The seed of the signing key of the person `patient`'s web device `device` (the device
    /// their own browser sessions write as), made on first use like a member of staff's (see
    /// [`Directory::web_device_key`]) but kept apart from `devices`, whose rows belong to staff:
    /// its public key is found by [`Directory::signing_key`] as a phone's is. A device of that
    /// id already, or another web device of the person's -> [`DirectoryError::Exists`]; an
    /// unknown person -> [`DirectoryError::NotFound`]. Does not bump the generation.
    fn person_device_key(
        &self,
        device: &DeviceId,
        patient: &PatientId,
        seed: [u8; 32],
        now_ms: i64,
    ) -> Result<[u8; 32], DirectoryError>;
    /// Every patient with its display name, by id.
    fn patients(&self) -> Result<Vec<(PatientId, String)>, DirectoryError>;
    /// A number bumped (durably) by every change above (org, user, patient, assign, unassign,
    /// enroll, redeem, revoke); the running server polls it every second to refresh access and
    /// close revoked devices.
    fn generation(&self) -> Result<u64, DirectoryError>;
}
