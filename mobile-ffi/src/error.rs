//! [`NaraError`]: the one, flat error type every exported call fails with.

use nara_client::ClientError;
use sync_core::protocol::wire::CloseReason;
use sync_core::{IdError, ModelError, RepoError, StoreError};

/// Everything a call into the device library can fail with. Flat on purpose: the app decides
/// what to show from the variant, and `detail` says it for a person (not `message`: that would clash with Kotlin's `Throwable.message`).
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum NaraError {
    /// The home directory holds no enrolled device: enroll first.
    #[error("{detail}")]
    NotEnrolled { detail: String },
    /// The home directory already holds an enrolled device.
    #[error("{detail}")]
    AlreadyEnrolled { detail: String },
    /// A bad argument: an identifier, a URL, a fingerprint, a slot, an unknown order.
    #[error("{detail}")]
    InvalidArgument { detail: String },
    /// The server could not be reached, or the connection failed or timed out: retry later.
    #[error("{detail}")]
    Unreachable { detail: String },
    /// The server answered with an HTTP error (e.g. an enrollment code that is used or expired).
    #[error("{detail}")]
    Server { status: u16, detail: String },
    /// The server no longer accepts this device (revoked or unknown): its data, pending
    /// changes and credential were erased from the device. Delete the store key and enroll
    /// again.
    #[error("{detail}")]
    Revoked { detail: String },
    /// The server presented a key that is not the pinned one (or a certificate not from the
    /// pinned CA): nothing was sent. Enrollment without any pin is refused the same way.
    #[error("{detail}")]
    ServerNotTrusted { detail: String },
    /// The sync connection was closed by the protocol (either side).
    #[error("{detail}")]
    ConnectionClosed { detail: String },
    /// The user's role may not make this change.
    #[error("{detail}")]
    NotPermitted { detail: String },
    /// The value is in conflict; a nurse must resolve it first.
    #[error("{detail}")]
    Conflicted { detail: String },
    /// The change breaks the record's rules (validation).
    #[error("{detail}")]
    Refused { detail: String },
    /// The device store was opened with a wrong or missing key.
    #[error("{detail}")]
    WrongKey { detail: String },
    /// Out of contact longer than the offline lease: patient data is hidden until a sync.
    #[error("{detail}")]
    LeaseExpired { detail: String },
    /// The drug of a dose matches an active allergy of the person (`allergies` says which,
    /// for a person): warn, and record the dose only if the giver confirms
    /// (`give(..., allergy_confirmed = true, ...)`).
    #[error("{detail}")]
    AllergyWarning {
        drug: String,
        allergies: Vec<String>,
        detail: String,
    },
    /// Reading or writing the device's files or store failed, or they are damaged.
    #[error("{detail}")]
    Storage { detail: String },
    /// The library could not start its background runtime.
    #[error("{detail}")]
    Internal { detail: String },
}

impl From<ClientError> for NaraError {
    fn from(e: ClientError) -> Self {
        let message = e.to_string();
        match e {
            ClientError::NotEnrolled(_) => NaraError::NotEnrolled { detail: message },
            ClientError::AlreadyEnrolled(_) => NaraError::AlreadyEnrolled { detail: message },
            ClientError::BadUrl { .. }
            | ClientError::BadPin(_)
            | ClientError::BadEnrollment(_)
            | ClientError::Invalid(_) => NaraError::InvalidArgument { detail: message },
            ClientError::PinRequired | ClientError::ServerKeyMismatch { .. } => {
                NaraError::ServerNotTrusted { detail: message }
            }
            ClientError::Id(e) => e.into(),
            ClientError::Io { .. } | ClientError::ConfigDamaged { .. } => {
                NaraError::Storage { detail: message }
            }
            ClientError::Connect { .. } | ClientError::Transport(_) | ClientError::Timeout(_) => {
                NaraError::Unreachable { detail: message }
            }
            ClientError::Http { status, .. } => NaraError::Server {
                status,
                detail: message,
            },
            ClientError::Unauthorized
            | ClientError::Wiped(_)
            | ClientError::Closed {
                reason: CloseReason::Revoked,
                ..
            } => NaraError::Revoked { detail: message },
            ClientError::Closed { .. } => NaraError::ConnectionClosed { detail: message },
            ClientError::LeaseExpired { .. } => NaraError::LeaseExpired { detail: message },
            ClientError::AllergyWarning { drug, allergies } => NaraError::AllergyWarning {
                drug,
                allergies,
                detail: message,
            },
            ClientError::Repo(e) => e.into(),
        }
    }
}

impl From<IdError> for NaraError {
    fn from(e: IdError) -> Self {
        NaraError::InvalidArgument {
            detail: e.to_string(),
        }
    }
}

impl From<RepoError> for NaraError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::Model(e) => e.into(),
            RepoError::Store(e) => e.into(),
            e @ RepoError::Raced { .. } => NaraError::Storage {
                detail: e.to_string(),
            },
            e @ RepoError::Forgotten { .. } => NaraError::NotPermitted {
                detail: e.to_string(),
            },
        }
    }
}

impl From<ModelError> for NaraError {
    fn from(e: ModelError) -> Self {
        let message = e.to_string();
        match e {
            ModelError::NotPermitted { .. } => NaraError::NotPermitted { detail: message },
            ModelError::Conflicted { .. } => NaraError::Conflicted { detail: message },
            ModelError::Invalid { .. } | ModelError::NotFound { .. } => {
                NaraError::Refused { detail: message }
            }
            ModelError::Corrupt { .. }
            | ModelError::WrongDocument { .. }
            | ModelError::MissingDependencies { .. }
            | ModelError::Automerge { .. } => NaraError::Storage { detail: message },
        }
    }
}

impl From<StoreError> for NaraError {
    fn from(e: StoreError) -> Self {
        let message = e.to_string();
        match e {
            StoreError::WrongKey => NaraError::WrongKey { detail: message },
            _ => NaraError::Storage { detail: message },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_map_to_their_kind_and_keep_the_message() {
        let e = NaraError::from(ClientError::Invalid("bad slot".into()));
        assert!(
            matches!(&e, NaraError::InvalidArgument { detail: message } if message == "bad slot")
        );
        assert!(matches!(
            NaraError::from(ClientError::Unauthorized),
            NaraError::Revoked { .. }
        ));
        assert!(matches!(
            NaraError::from(ClientError::Closed {
                reason: CloseReason::Revoked,
                detail: String::new()
            }),
            NaraError::Revoked { .. }
        ));
        assert!(matches!(
            NaraError::from(ClientError::Wiped("revoked".into())),
            NaraError::Revoked { .. }
        ));
        assert!(matches!(
            NaraError::from(ClientError::PinRequired),
            NaraError::ServerNotTrusted { .. }
        ));
        assert!(matches!(
            NaraError::from(ClientError::Closed {
                reason: CloseReason::Stalled,
                detail: String::new()
            }),
            NaraError::ConnectionClosed { .. }
        ));
        assert!(matches!(
            NaraError::from(ClientError::Http {
                status: 400,
                message: "code used".into()
            }),
            NaraError::Server { status: 400, .. }
        ));
        assert!(matches!(
            NaraError::from(ClientError::Timeout("connecting")),
            NaraError::Unreachable { .. }
        ));
        assert!(matches!(
            NaraError::from(ClientError::from(StoreError::WrongKey)),
            NaraError::WrongKey { .. }
        ));
        let id = sync_core::PatientId::new("no spaces allowed").map_err(ClientError::from);
        assert!(matches!(
            id.map_err(NaraError::from),
            Err(NaraError::InvalidArgument { .. })
        ));
    }
}
