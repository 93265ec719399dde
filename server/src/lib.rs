//! The Nära Sync server: a shell around `sync-core`.
//!
//! - [`tls`]: certificates and the TLS-only listener;
//! - [`app`]: routes, the sync WebSocket shell, admin API, metrics, `serve()`;
//! - [`directory`]: identity, enrollment and care relationships (SQLite, behind a trait);
//! - [`audit`]: the tamper-evident audit log (SQLite, behind a trait);
//! - [`datadir`]: the data directory, owner-only;
//! - [`backup`]: consistent backups of the stores and their restore;
//! - [`admin_cli`]: `nara-server admin`;
//! - [`openapi`]: the OpenAPI document;
//! - [`pg`]: the document store on PostgreSQL, for several nodes on one database (not yet used
//!   by `serve`).
//!
//! Protocol, validation and rules all come from `sync-core`; this crate moves bytes, checks
//! credentials, looks up assignments and writes the audit log.

pub mod admin;
pub mod admin_cli;
pub mod app;
pub mod audit;
pub mod backup;
pub mod datadir;
pub mod db;
pub mod directory;
pub mod offload;
pub mod openapi;
pub mod pg;
pub mod store;
pub mod tls;
pub mod web;

pub use app::{AppState, CarePolicy, Limits, router, serve};
