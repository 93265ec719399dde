//! UniFFI bindings of the Nära Sync device runtime (`nara-client`) for Kotlin, Swift and Python.
//!
//! - [`NaraDevice`]: an enrolled device; every method is a one-line forward to
//!   [`nara_client::Device`] or [`nara_client::care`], blocking on an internal tokio runtime
//!   (call them off the UI thread).
//! - [`StatusListener`] and [`EventListener`] + [`SubscriptionHandle`]: status changes and sync
//!   events (documents updated, conflicts, flags, access withdrawn) pushed to the app; a
//!   subscription ends when its handle is cancelled or dropped.
//! - [`WatchHandle`]: background sync (stay connected, upload soon after each change,
//!   reconnect with backoff) until stopped or dropped.
//! - FFI records and enums in [`types`], separate from the core's, each with a `From` impl;
//!   one flat error, [`NaraError`].
//!
//! This crate holds no sync, model or care logic: only conversion and forwarding. Generate the
//! bindings with `cargo run -p uniffi-bindgen -- generate --library <libmobile_ffi.so>
//! --language kotlin|swift|python --out-dir DIR --no-format`.

/// mimalloc instead of the system's allocator on Linux and Android, as `nara-bench`'s devices
/// run (BENCHMARKS.md, "Session 27"; this crate's `Cargo.toml` says why not on Apple platforms).
#[cfg(any(target_os = "linux", target_os = "android"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod device;
mod device_alerts;
mod error;
mod handles;
mod round;
pub mod types;

pub use device::NaraDevice;
pub use error::NaraError;
pub use handles::{EventListener, StatusListener, SubscriptionHandle, WatchHandle};

uniffi::setup_scaffolding!();

/// A fresh record id (for a new order or goal): 27 hex digits, later ones sorting first
/// (`sync_core::RecordId::countdown` says why).
#[uniffi::export]
pub fn new_id() -> Result<String, NaraError> {
    Ok(nara_client::care::new_id()?.into())
}
