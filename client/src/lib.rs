//! The Nära Sync device runtime (issue #5): the only async part of the device code.
//!
//! - [`Device`]: an enrolled device in a home directory: its documents in `DIR/device.db`
//!   (a [`sync_core::repo::Repo`] over SQLite, SQLCipher-encrypted when the app gives a key)
//!   with its credential inside, its server and pinned server key in `DIR/device.json`
//!   (owner-only, nothing secret), and its sync connection: [`Device::sync_once`], or
//!   [`Device::watch`] to stay connected, upload soon after every local change and reconnect
//!   with jittered exponential backoff, reporting a [`Status`].
//! - [`care`]: the edits and views a care worker's app makes (notes, administrations, orders,
//!   conflicts, flags), on top of `sync-core`'s model, so that app shells hold no logic.
//!
//! The protocol itself is `sync-core`'s sans-IO [`sync_core::protocol::DeviceSession`]; this
//! crate only moves its bytes over a WebSocket over TLS (rustls with ring) whose server key is
//! pinned ([`pin`]). A device the server revokes erases itself ([`credential::wipe`]).

pub mod care;
pub mod config;
pub mod credential;
mod device;
mod enroll;
pub mod error;
mod http;
pub mod pin;
pub mod tls;

pub use config::Enrollment;
pub use credential::Credential;
pub use device::{
    ClockState, DEFAULT_OFFLINE_LEASE, Device, Dialer, IncarnationState, IncomingRefusal,
    PatientRoundStatus, RaisedConflict, RaisedFlag, ServerRound, StaffMember, StaffNames, Status,
    StatusChanges, SyncOptions, SyncReport, Transport, backoff, now,
};
pub use enroll::{EnrollRequest, Enrolled};
pub use error::{ClientError, Result};
pub use pin::{EnrollmentLink, ServerPin};
