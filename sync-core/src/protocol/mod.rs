//! The sync protocol as pure state machines: bytes and events in, bytes and events out.
//!
//! - [`policy`]: the care policy ([`policy::CareRules`]), a pure function of the access rows
//!   and the time, used by the server and the simulation alike;
//! - [`signatures`]: verified signatures over documents' heads, kept per document;
//! - [`wire`]: the messages and their versioned, size-limited encoding;
//! - [`compress`]: compressed frames (zstd), negotiated by the hello, inflated with a bound;
//! - [`device::DeviceSession`]: the device end;
//! - [`server::ServerSession`]: the server end of one device connection, with the
//!   [`server::AccessPolicy`] the server plugs in.
//!
//! Neither session reads a clock (time is an argument), opens a socket, spawns a thread or draws
//! a random number; their only IO is the [`crate::store::Store`] behind the [`crate::repo::Repo`]
//! passed to each call, which is an in-memory store in simulation. `docs/protocol.md` describes
//! the messages, states and invariants.

pub mod compress;
#[cfg(test)]
mod compress_dict;
pub mod device;
pub mod policy;
pub mod server;
pub mod signatures;
pub mod wire;

#[cfg(test)]
mod incarnation_tests;

pub use device::{
    DeviceConfig, DeviceEvent, DeviceSession, MAX_TOGETHER, QuarantinedChange, Signer, SyncState,
    UPLOAD_BYTES,
};
pub use server::{AccessPolicy, GRACE_UPLOADS, Peer, ServerConfig, ServerEvent, ServerSession};
