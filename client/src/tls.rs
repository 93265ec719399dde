//! TLS to the server: the certificate is pinned by its SHA-256 fingerprint, not checked against
//! a CA. At enrollment without a fingerprint the device trusts the first certificate it sees
//! (TOFU) and pins that one from then on.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::error::{ClientError, Result};

/// SHA-256 of a certificate's DER bytes, lowercase hex (as `nara-server` prints it).
pub fn fingerprint(cert_der: &[u8]) -> String {
    hex::encode(Sha256::digest(cert_der))
}

/// Which server certificate to accept.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Exactly the certificate with this fingerprint (64 lowercase hex digits).
    Pinned(String),
    /// Any certificate; the one seen is recorded (trust on first use, enrollment only).
    FirstUse(Arc<Mutex<Option<String>>>),
}

/// Accepts the server's end-entity certificate by fingerprint (or records it, on first use).
/// Handshake signatures are always verified, so the server must hold the certificate's key.
#[derive(Debug)]
struct FingerprintVerifier {
    trust: Trust,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for FingerprintVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = fingerprint(end_entity.as_ref());
        match &self.trust {
            Trust::Pinned(pinned) if *pinned == seen => Ok(ServerCertVerified::assertion()),
            Trust::Pinned(_) => {
                tracing::warn!(seen = %seen, "server certificate does not match the pinned fingerprint");
                Err(rustls::Error::General(format!(
                    "the server's certificate (SHA-256 {seen}) is not the pinned one"
                )))
            }
            Trust::FirstUse(slot) => {
                if let Ok(mut s) = slot.lock() {
                    *s = Some(seen);
                }
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A rustls client configuration (ring, TLS 1.2 and 1.3) that trusts per `trust`.
pub fn client_config(trust: Trust) -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Connect {
            addr: String::new(),
            detail: format!("TLS setup: {e}"),
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(FingerprintVerifier { trust, provider }))
        .with_no_client_auth();
    Ok(Arc::new(config))
}
