//! Real-network fixtures: a `nara-server` running in process on a real TLS socket on 127.0.0.1,
//! and test devices that enroll over HTTPS and sync over WSS, with the server's certificate
//! pinned by its SHA-256 fingerprint. Nothing here is a mock: the server, the stores, TLS and the
//! WebSocket are the real ones.
//!
//! One module a concept: `test_server.rs` the server harness ([`TestServer`]), `test_device.rs`
//! the device harness ([`TestDevice`], [`SyncEnd`]), `fault_proxy.rs` a link made bad
//! ([`FaultProxy`], [`LinkFaults`]); the TLS client configuration they share is here.

use std::net::SocketAddr;
use std::sync::Arc;

mod fault_proxy;
mod test_device;
mod test_server;

pub use fault_proxy::{FaultProxy, LinkFaults};
pub use test_device::{SyncEnd, TestDevice};
pub use test_server::{TestServer, https_at};

/// The device runtime's TLS configuration, pinned to `fingerprint` (the same verifier a phone
/// uses).
pub fn client_config(fingerprint: &str) -> Arc<rustls::ClientConfig> {
    nara_client::tls::client_config(nara_client::tls::Trust::Pinned(fingerprint.to_owned()))
        .expect("a TLS client configuration")
}

/// Where a test device finds a server: its address and its certificate's fingerprint (an
/// in-process [`TestServer`], or a `nara-server` process).
pub trait Reach {
    fn addr(&self) -> SocketAddr;
    fn fingerprint(&self) -> &str;
}

impl Reach for TestServer {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// A server at `addr` whose certificate has `fingerprint` (say a `nara-server` process).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub fingerprint: String,
}

impl Reach for Endpoint {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}
