//! The runtime's typed errors.

use std::path::PathBuf;

use sync_core::protocol::wire::CloseReason;
use sync_core::{IdError, ModelError, RepoError, StoreError};

/// Everything the device runtime can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The home directory holds no enrolled device.
    #[error("{0} holds no enrolled device; run `enroll` first")]
    NotEnrolled(PathBuf),
    /// The home directory already holds an enrolled device.
    #[error("{0} already holds an enrolled device; use another home directory")]
    AlreadyEnrolled(PathBuf),
    #[error("bad server URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// A server pin (or CA certificate) that cannot be one.
    #[error("bad server pin: {0}")]
    BadPin(String),
    /// An enrollment string that cannot be one.
    #[error("bad enrollment string: {0}")]
    BadEnrollment(String),
    /// Enrollment was asked without a pin, a CA certificate or explicit trust on first use.
    #[error(
        "enrollment without the server's pin is refused: use the whole enrollment string that \
         `nara-server admin enroll` prints (nara:<code>@<host:port>#<pin>), give a CA certificate, \
         or, only on a network you trust, ask for trust on first use explicitly \
         (--insecure-trust-first-use)"
    )]
    PinRequired,
    /// The server presented a key (or a certificate) that is not the pinned one.
    #[error(
        "the server at {addr} presented a different public key (SPKI SHA-256 {seen}) than the one \
         this device pinned ({pinned}): it is not the server this device enrolled with, or its \
         key was changed; nothing was sent"
    )]
    ServerKeyMismatch {
        addr: String,
        seen: String,
        pinned: String,
    },
    /// The server revoked this device, and its data and credential were erased from it.
    #[error(
        "the server revoked this device: its data, pending changes and credential were erased \
         from it; enroll again ({0})"
    )]
    Wiped(String),
    /// Reading or writing the device's files failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `device.json` does not hold what this build writes.
    #[error("{path} is damaged: {detail}")]
    ConfigDamaged { path: PathBuf, detail: String },
    /// The server could not be reached (DNS, TCP, TLS handshake, pinning).
    #[error("cannot reach the server at {addr}: {detail}")]
    Connect { addr: String, detail: String },
    /// The server answered an HTTP request with an error.
    #[error("the server answered HTTP {status}: {message}")]
    Http { status: u16, message: String },
    /// The server does not accept this device's credential (revoked or unknown).
    #[error("the server refused this device's credential (the device was revoked or is unknown)")]
    Unauthorized,
    /// The WebSocket failed mid-connection.
    #[error("the sync connection failed: {0}")]
    Transport(String),
    /// The protocol closed the connection (either side).
    #[error("the sync connection closed ({reason:?}): {detail}")]
    Closed { reason: CloseReason, detail: String },
    /// The server did not answer in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// A bad argument to a care operation (unknown order, wrong slot, ...).
    #[error("{0}")]
    Invalid(String),
    /// A dose of a drug that matches an active allergy of the person: the giver confirms it
    /// before it is recorded.
    #[error(
        "WARNING: {drug} matches the recorded {}; the dose is recorded only once the giver confirms it",
        allergies.join("; ")
    )]
    AllergyWarning {
        drug: String,
        allergies: Vec<String>,
    },
    /// The device has been out of contact with the server longer than its offline lease:
    /// patient data is not shown until it syncs (it still uploads what it holds).
    #[error(
        "no contact with the server since {last_contact_ms:?} (ms): patient data is hidden until the device syncs"
    )]
    LeaseExpired { last_contact_ms: Option<i64> },
    #[error(transparent)]
    Id(#[from] IdError),
    #[error(transparent)]
    Repo(#[from] RepoError),
}

impl From<StoreError> for ClientError {
    fn from(e: StoreError) -> Self {
        ClientError::Repo(RepoError::Store(e))
    }
}

impl From<ModelError> for ClientError {
    fn from(e: ModelError) -> Self {
        ClientError::Repo(RepoError::Model(e))
    }
}

impl ClientError {
    /// Whether retrying cannot help until a person acts (re-enrolls, fixes the setup).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            ClientError::NotEnrolled(_)
                | ClientError::AlreadyEnrolled(_)
                | ClientError::BadUrl { .. }
                | ClientError::BadPin(_)
                | ClientError::BadEnrollment(_)
                | ClientError::PinRequired
                | ClientError::ServerKeyMismatch { .. }
                | ClientError::Wiped(_)
                | ClientError::ConfigDamaged { .. }
                | ClientError::Unauthorized
                | ClientError::Closed {
                    reason: CloseReason::Revoked,
                    ..
                }
        )
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;
