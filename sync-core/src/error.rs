//! Typed errors of `sync-core`. Every error about a document names the document.

use crate::ids::{DocumentId, Role};

/// An identifier that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("invalid {kind}: {value:?}")]
    Invalid { kind: &'static str, value: String },
}

/// Errors of the document model: schema, rules and Automerge.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The document's state (after a local change or after merging foreign changes) breaks the
    /// schema. `path` points into the document, e.g. `events/n-17` or `texts/goal/g1/description`.
    #[error("{doc}: invalid at {path}: {reason}")]
    Invalid {
        doc: DocumentId,
        path: String,
        reason: String,
    },
    /// The author's role may not make this write.
    #[error("{doc}: a {role} may not write {path}", role = role.as_str())]
    NotPermitted {
        doc: DocumentId,
        path: String,
        role: Role,
    },
    /// The register holds several concurrent values; only a resolving revision may write it.
    #[error(
        "{doc}: {register} is in conflict; resolve it with a revision that supersedes every current value"
    )]
    Conflicted { doc: DocumentId, register: String },
    /// A referenced record or text does not exist in the document.
    #[error("{doc}: no {what} {id}")]
    NotFound {
        doc: DocumentId,
        what: &'static str,
        id: String,
    },
    /// The stored bytes are damaged: not loadable, not matching their hash, or incomplete.
    #[error("{doc}: damaged or unreadable bytes: {detail}")]
    Corrupt { doc: DocumentId, detail: String },
    /// The bytes are a valid document, but not the document with this id.
    #[error("{doc}: the bytes belong to another document (genesis change missing)")]
    WrongDocument { doc: DocumentId },
    /// A change depends on changes that are neither in the document nor in the same batch.
    #[error("{doc}: change {change} depends on changes this replica does not have")]
    MissingDependencies { doc: DocumentId, change: String },
    /// Automerge refused an operation (a bug in this crate if it ever shows).
    #[error("{doc}: automerge: {source}")]
    Automerge {
        doc: DocumentId,
        #[source]
        source: Box<automerge::AutomergeError>,
    },
}

impl ModelError {
    /// The document the error is about.
    pub fn document(&self) -> &DocumentId {
        match self {
            ModelError::Invalid { doc, .. }
            | ModelError::NotPermitted { doc, .. }
            | ModelError::Conflicted { doc, .. }
            | ModelError::NotFound { doc, .. }
            | ModelError::Corrupt { doc, .. }
            | ModelError::WrongDocument { doc }
            | ModelError::MissingDependencies { doc, .. }
            | ModelError::Automerge { doc, .. } => doc,
        }
    }
}

/// Errors of a [`crate::store::Store`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database underneath failed (SQLite, PostgreSQL, ...): which one, and its error as
    /// the source. Shared across backends, so it carries no backend's types.
    #[error("{backend}: {}", Chain(source.as_ref()))]
    Backend {
        backend: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The database was written by a newer version of Nära Sync.
    #[error(
        "the store has schema version {found}, newer than this build supports ({supported}); upgrade the app"
    )]
    NewerSchema { found: i64, supported: i64 },
    /// The store is encrypted and the key is missing or wrong (or the file is not a store).
    #[error("the store cannot be read: wrong or missing encryption key, or not a Nära Sync store")]
    WrongKey,
    /// A row holds something that is not what this build wrote.
    #[error("the store holds an unreadable row: {0}")]
    BadRow(String),
    /// The device's lease `token` was superseded: a newer connection (perhaps on another server
    /// node) serves the device now, and this one may write nothing of it any more.
    #[error("{device} is served elsewhere now: its lease {token} was superseded")]
    Fenced {
        device: crate::ids::DeviceId,
        token: u64,
    },
    /// The in-memory store was poisoned by a panic in another thread.
    #[error("the in-memory store is poisoned")]
    Poisoned,
}

impl StoreError {
    /// A failure of the database named `backend`.
    pub fn backend(
        backend: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StoreError::Backend {
            backend,
            source: source.into(),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::backend("sqlite", e)
    }
}

/// Errors of a [`crate::repo::Repo`]: the model and the store together.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{0}")]
    Store(#[from] StoreError),
    /// This device forgot the patient (access withdrawn) and has not received their history
    /// back: writing now could reuse change sequence numbers of changes it no longer holds.
    #[error("{patient} is no longer on this device; their record cannot be written here")]
    Forgotten { patient: crate::ids::PatientId },
    /// Another writer of the same store (another server node) stored a change of `doc` between
    /// this repo's validation and its append: nothing was stored, and validating again against
    /// the document as stored now decides. Retried inside [`crate::repo::Repo::apply_changes`]
    /// unless it runs in a [`crate::repo::Repo::grouped`] write, which then fails whole.
    #[error("another writer stored a change of {doc} meanwhile; nothing was stored, try again")]
    Raced { doc: DocumentId },
}

/// An error and its sources, `: `-separated: a database driver's own text is often only its
/// kind (tokio-postgres says "db error" and keeps PostgreSQL's message, say "deadlock
/// detected", in its source), and a log line of the kind alone cannot be acted on.
#[derive(Debug)]
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        // Bounded: a cyclic chain of sources must not hang a log line.
        for _ in 0..8 {
            let Some(e) = next else { break };
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod chain_tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("deadlock detected")]
    struct Db;

    #[derive(Debug, thiserror::Error)]
    #[error("db error")]
    struct Driver(#[source] Db);

    #[test]
    fn a_backend_error_says_its_sources() {
        let e = StoreError::backend("postgresql", Driver(Db));
        assert_eq!(e.to_string(), "postgresql: db error: deadlock detected");
    }
}
