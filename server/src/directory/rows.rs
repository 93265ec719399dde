//! What a directory backend provides: transactions ([`Backend`]) and, inside one, its rows
//! ([`Rows`]). Rows only: every check, every id, code and hash is the service's
//! ([`super::DirectoryService`]), so that SQLite and PostgreSQL behave alike.
//!
//! Values cross this boundary as stored (strings, integers, bytes); the service reads them
//! back into the directory's types and reports a row it cannot read as
//! [`DirectoryError::BadRow`].

use super::DirectoryError;

/// A user's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: String,
    pub name: String,
    pub role: String,
    pub org: String,
}

/// An enrollment code's row, found by its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRow {
    pub user: String,
    pub expires_ms: i64,
    pub used_ms: Option<i64>,
}

/// A device's row as authentication reads it: its user's role joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRow {
    pub user: String,
    pub role: String,
    pub secret_hash: Vec<u8>,
    pub revoked: bool,
}

/// A new row of `devices`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDevice<'a> {
    pub id: &'a str,
    pub user: &'a str,
    pub secret_hash: &'a [u8],
    pub created_ms: i64,
    pub signing_key: Option<&'a [u8]>,
}

/// A device's row as an administrator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRow {
    pub id: String,
    pub user: String,
    pub last_seen_ms: Option<i64>,
    pub revoked: bool,
    pub cursor: Option<i64>,
    pub copy_detected_ms: Option<i64>,
    pub copies: String,
}

/// A new row of `person_web_devices`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPersonDevice<'a> {
    pub device: &'a str,
    pub patient: &'a str,
    pub signing_key: &'a [u8],
    pub seed: &'a [u8],
    pub created_ms: i64,
}

/// A row of `ended_assignments`: when a user's assignment to a person ended, and the feed's
/// head then (the caller's, given to [`super::Directory::unassign`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedRow {
    pub user: String,
    pub patient: String,
    pub at_ms: i64,
    pub head: i64,
}

/// A row of `withdrawals`: what the server did to tell one device of one withdrawal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithdrawalRow {
    pub user: String,
    pub device: String,
    pub patient: String,
    pub told: bool,
    pub sent: i64,
}

/// The directory's rows, read and written inside one transaction of a [`Backend`]. A method
/// that updates or deletes by key says whether a row was there (`bool`); `Option` is a row
/// that may be absent.
pub trait Rows {
    fn org_exists(&mut self, id: &str) -> Result<bool, DirectoryError>;
    fn insert_org(&mut self, id: &str, name: &str) -> Result<(), DirectoryError>;
    fn orgs(&mut self) -> Result<Vec<(String, String)>, DirectoryError>;

    fn user(&mut self, id: &str) -> Result<Option<UserRow>, DirectoryError>;
    fn insert_user(&mut self, user: &UserRow) -> Result<(), DirectoryError>;
    /// Every user, by id.
    fn users(&mut self) -> Result<Vec<UserRow>, DirectoryError>;

    fn patient_exists(&mut self, id: &str) -> Result<bool, DirectoryError>;
    fn insert_patient(&mut self, id: &str, name: &str) -> Result<(), DirectoryError>;
    /// Every patient (id, name), by id.
    fn patients(&mut self) -> Result<Vec<(String, String)>, DirectoryError>;

    /// Inserts the assignment; `false` if it was there already.
    fn insert_assignment(&mut self, user: &str, patient: &str) -> Result<bool, DirectoryError>;
    fn delete_assignment(&mut self, user: &str, patient: &str) -> Result<bool, DirectoryError>;
    /// Every assignment (user, patient).
    fn assignments(&mut self) -> Result<Vec<(String, String)>, DirectoryError>;

    fn insert_code(
        &mut self,
        hash: &[u8],
        user: &str,
        created_ms: i64,
        expires_ms: i64,
    ) -> Result<(), DirectoryError>;
    fn code(&mut self, hash: &[u8]) -> Result<Option<CodeRow>, DirectoryError>;
    fn mark_code_used(
        &mut self,
        hash: &[u8],
        now_ms: i64,
        device: &str,
    ) -> Result<(), DirectoryError>;
    /// Codes neither used nor expired at `now_ms` (user, created_ms, expires_ms), newest first,
    /// at most `limit`.
    fn open_codes(
        &mut self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<(String, i64, i64)>, DirectoryError>;

    /// Whether `devices` holds a row of that id (a phone or a member of staff's web device).
    fn device_exists(&mut self, id: &str) -> Result<bool, DirectoryError>;
    fn insert_device(&mut self, device: &NewDevice<'_>) -> Result<(), DirectoryError>;
    fn device_auth(&mut self, id: &str) -> Result<Option<AuthRow>, DirectoryError>;
    fn set_revoked(&mut self, id: &str) -> Result<bool, DirectoryError>;
    fn revoked(&mut self, id: &str) -> Result<Option<bool>, DirectoryError>;
    /// The signing key of a row of `devices`: `None` no such device, `Some(None)` none
    /// registered.
    fn device_key(&mut self, id: &str) -> Result<Option<Option<Vec<u8>>>, DirectoryError>;
    fn set_device_key(&mut self, id: &str, key: &[u8]) -> Result<(), DirectoryError>;
    /// The signing key of a device in `devices` or `person_web_devices`.
    fn any_signing_key(&mut self, id: &str) -> Result<Option<Vec<u8>>, DirectoryError>;
    /// Sets last seen, and the cursor unless `None`.
    fn touch(&mut self, id: &str, now_ms: i64, cursor: Option<i64>)
    -> Result<bool, DirectoryError>;
    /// The device's copies text (`None`: no such device).
    fn copies(&mut self, id: &str) -> Result<Option<String>, DirectoryError>;
    /// Sets the copies text, and when a copy was first found unless set already.
    fn set_copies(&mut self, id: &str, copies: &str, now_ms: i64) -> Result<(), DirectoryError>;
    /// Every row of `devices` but staff web devices, by id.
    fn devices(&mut self) -> Result<Vec<DeviceRow>, DirectoryError>;
    fn set_waiting(&mut self, id: &str, changes: i64, now_ms: i64) -> Result<bool, DirectoryError>;
    /// (device, changes, at_ms) of every device that reported.
    fn waiting(&mut self) -> Result<Vec<(String, i64, i64)>, DirectoryError>;

    /// The live consents of a patient (relative, granted_ms), by relative.
    fn live_consents(&mut self, patient: &str) -> Result<Vec<(String, i64)>, DirectoryError>;
    fn insert_consent(
        &mut self,
        patient: &str,
        relative: &str,
        now_ms: i64,
    ) -> Result<(), DirectoryError>;
    fn withdraw_consent(
        &mut self,
        patient: &str,
        relative: &str,
        now_ms: i64,
    ) -> Result<bool, DirectoryError>;

    /// The kept seed of a member of staff's web device.
    fn web_device_seed(&mut self, device: &str) -> Result<Option<Vec<u8>>, DirectoryError>;
    fn insert_web_device(
        &mut self,
        device: &str,
        seed: &[u8],
        now_ms: i64,
    ) -> Result<(), DirectoryError>;
    /// The person's web device (id, seed), if made.
    fn person_device(&mut self, patient: &str)
    -> Result<Option<(String, Vec<u8>)>, DirectoryError>;
    fn person_device_exists(&mut self, device: &str) -> Result<bool, DirectoryError>;
    fn insert_person_device(&mut self, row: &NewPersonDevice<'_>) -> Result<(), DirectoryError>;

    /// Inserts or replaces the end of (user, patient)'s assignment.
    fn put_ended(&mut self, row: &EndedRow) -> Result<(), DirectoryError>;
    fn delete_ended(&mut self, user: &str, patient: &str) -> Result<bool, DirectoryError>;
    /// Every ended assignment.
    fn ended(&mut self) -> Result<Vec<EndedRow>, DirectoryError>;
    /// Deletes the ends before `cutoff_ms`, and every withdrawal row whose (user, patient) has
    /// no end any more.
    fn delete_ended_before(&mut self, cutoff_ms: i64) -> Result<(), DirectoryError>;
    /// Deletes the withdrawal rows of (user, patient), every device's.
    fn delete_withdrawals(&mut self, user: &str, patient: &str) -> Result<(), DirectoryError>;
    fn withdrawal(
        &mut self,
        user: &str,
        device: &str,
        patient: &str,
    ) -> Result<Option<WithdrawalRow>, DirectoryError>;
    /// Inserts or replaces a withdrawal row.
    fn put_withdrawal(&mut self, row: &WithdrawalRow) -> Result<(), DirectoryError>;
    /// Every withdrawal row.
    fn withdrawals(&mut self) -> Result<Vec<WithdrawalRow>, DirectoryError>;

    fn generation(&mut self) -> Result<i64, DirectoryError>;
    fn bump_generation(&mut self) -> Result<(), DirectoryError>;
}

/// A directory backend: a place for [`Rows`], and transactions over them.
pub trait Backend: Send + Sync {
    /// Runs `f` over the rows as they are committed (a read: `f` writes nothing).
    fn read<T>(
        &self,
        f: impl FnOnce(&mut dyn Rows) -> Result<T, DirectoryError>,
    ) -> Result<T, DirectoryError>;
    /// Runs `f` in one write transaction, committed if `f` succeeds and rolled back otherwise.
    /// Write transactions are serialised with every other write transaction on the same
    /// directory, from any handle or process: what `f` reads stays true until it commits.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut dyn Rows) -> Result<T, DirectoryError>,
    ) -> Result<T, DirectoryError>;
    /// Runs `f`, one statement recording a device's activity (last seen, cursor, what it has
    /// waiting), in a write transaction that need not be serialised with the others: the
    /// statement checks nothing but its own row count. Devices report activity far more often
    /// than administrators change the directory, so a backend may let it pass the writers'
    /// queue; by default it joins it.
    fn activity<T>(
        &self,
        f: impl FnOnce(&mut dyn Rows) -> Result<T, DirectoryError>,
    ) -> Result<T, DirectoryError> {
        self.write(f)
    }
}
