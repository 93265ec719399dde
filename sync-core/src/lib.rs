//! Nära Sync core: shared care plans as Automerge documents, the rules that keep them safe to
//! merge, and the store that keeps them on a device or a server.
//!
//! - [`model`]: the document model (pure: no IO, no clock).
//! - [`store`]: the [`store::Store`] trait, with SQLite and in-memory implementations.
//! - [`repo`]: documents and a store together: every acknowledged write is durable.

pub mod error;
/// Fuzz entry points (the `fuzzing` feature): see `fuzz/README.md`.
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod ids;
pub mod model;
pub mod protocol;
pub mod repo;
pub mod signing;
pub mod store;

pub use automerge::ChangeHash;
pub use error::{IdError, ModelError, RepoError, StoreError};
pub use ids::{
    Author, DeviceId, DocKind, DocumentId, Month, PatientId, RecordId, Role, Timestamp, UserId,
};
