//! [`NaraError`]: the one, flat error type every exported call fails with.

use nara_client::ClientError;
use sync_core::protocol::wire::CloseReason;
use sync_core::{IdError, ModelError, RepoError, StoreError};

/// Everything a call into the device library can fail with. Flat on purpose: the app decides
/// what to show from the variant, and `message` says it for a person.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum NaraError {
    /// The home directory holds no enrolled device: enroll first.
    #[error("{message}")]
    NotEnrolled { message: String },
    /// The home directory already holds an enrolled device.
    #[error("{message}")]
    AlreadyEnrolled { message: String },
    /// A bad argument: an identifier, a URL, a fingerprint, a slot, an unknown order.
    #[error("{message}")]
    InvalidArgument { message: String },
    /// The server could not be reached, or the connection failed or timed out: retry later.
    #[error("{message}")]
    Unreachable { message: String },
    /// The server answered with an HTTP error (e.g. an enrollment code that is used or expired).
    #[error("{message}")]
    Server { status: u16, message: String },
    /// The server no longer accepts this device (revoked or unknown): enroll again.
    #[error("{message}")]
    Revoked { message: String },
    /// The sync connection was closed by the protocol (either side).
    #[error("{message}")]
    ConnectionClosed { message: String },
    /// The user's role may not make this change.
    #[error("{message}")]
    NotPermitted { message: String },
    /// The value is in conflict; a nurse must resolve it first.
    #[error("{message}")]
    Conflicted { message: String },
    /// The change breaks the record's rules (validation).
    #[error("{message}")]
    Refused { message: String },
    /// The device store was opened with a wrong or missing key.
    #[error("{message}")]
    WrongKey { message: String },
    /// Out of contact longer than the offline lease: patient data is hidden until a sync.
    #[error("{message}")]
    LeaseExpired { message: String },
    /// Reading or writing the device's files or store failed, or they are damaged.
    #[error("{message}")]
    Storage { message: String },
    /// The library could not start its background runtime.
    #[error("{message}")]
    Internal { message: String },
}

impl From<ClientError> for NaraError {
    fn from(e: ClientError) -> Self {
        let message = e.to_string();
        match e {
            ClientError::NotEnrolled(_) => NaraError::NotEnrolled { message },
            ClientError::AlreadyEnrolled(_) => NaraError::AlreadyEnrolled { message },
            ClientError::BadUrl { .. }
            | ClientError::BadFingerprint(_)
            | ClientError::Invalid(_) => NaraError::InvalidArgument { message },
            ClientError::Id(e) => e.into(),
            ClientError::Io { .. } | ClientError::ConfigDamaged { .. } => {
                NaraError::Storage { message }
            }
            ClientError::Connect { .. } | ClientError::Transport(_) | ClientError::Timeout(_) => {
                NaraError::Unreachable { message }
            }
            ClientError::Http { status, .. } => NaraError::Server { status, message },
            ClientError::Unauthorized
            | ClientError::Closed {
                reason: CloseReason::Revoked,
                ..
            } => NaraError::Revoked { message },
            ClientError::Closed { .. } => NaraError::ConnectionClosed { message },
            ClientError::LeaseExpired { .. } => NaraError::LeaseExpired { message },
            ClientError::Repo(e) => e.into(),
        }
    }
}

impl From<IdError> for NaraError {
    fn from(e: IdError) -> Self {
        NaraError::InvalidArgument {
            message: e.to_string(),
        }
    }
}

impl From<RepoError> for NaraError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::Model(e) => e.into(),
            RepoError::Store(e) => e.into(),
            e @ RepoError::Forgotten { .. } => NaraError::NotPermitted {
                message: e.to_string(),
            },
        }
    }
}

impl From<ModelError> for NaraError {
    fn from(e: ModelError) -> Self {
        let message = e.to_string();
        match e {
            ModelError::NotPermitted { .. } => NaraError::NotPermitted { message },
            ModelError::Conflicted { .. } => NaraError::Conflicted { message },
            ModelError::Invalid { .. } | ModelError::NotFound { .. } => {
                NaraError::Refused { message }
            }
            ModelError::Corrupt { .. }
            | ModelError::WrongDocument { .. }
            | ModelError::MissingDependencies { .. }
            | ModelError::Automerge { .. } => NaraError::Storage { message },
        }
    }
}

impl From<StoreError> for NaraError {
    fn from(e: StoreError) -> Self {
        let message = e.to_string();
        match e {
            StoreError::WrongKey => NaraError::WrongKey { message },
            _ => NaraError::Storage { message },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_map_to_their_kind_and_keep_the_message() {
        let e = NaraError::from(ClientError::Invalid("bad slot".into()));
        assert!(matches!(&e, NaraError::InvalidArgument { message } if message == "bad slot"));
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
