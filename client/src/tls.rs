//! TLS to the server: trusted by the pinned public key (SPKI SHA-256) or a private CA, never by
//! a public CA. At enrollment with explicit trust on first use the device accepts the key it
//! sees and pins that one from then on.

use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::error::{ClientError, Result};
use crate::pin::{ServerPin, ca_certificates, spki_pin};

/// SHA-256 of a certificate's DER bytes, lowercase hex (as `nara-server` prints it).
pub fn fingerprint(cert_der: &[u8]) -> String {
    hex::encode(Sha256::digest(cert_der))
}

/// Which server certificate to accept.
#[derive(Debug, Clone)]
pub enum Trust {
    /// A certificate carrying the key with this pin (base64url SHA-256 of its SPKI).
    Key(String),
    /// A certificate for the server's name issued by one of these CA certificates.
    Ca(Vec<CertificateDer<'static>>),
    /// Exactly the certificate with this SHA-256 (64 lowercase hex digits): devices enrolled
    /// before keys were pinned, and protocol-level test fixtures.
    Pinned(String),
    /// Any certificate; the pin of the key seen is recorded (trust on first use, enrollment
    /// only, and only when asked for explicitly).
    FirstUse(Arc<Mutex<Option<String>>>),
}

impl Trust {
    /// The trust a device's stored pin stands for.
    pub fn from_pin(pin: &ServerPin) -> Result<Self> {
        Ok(match pin {
            ServerPin::Spki { sha256 } => Trust::Key(sha256.clone()),
            ServerPin::Ca { pem } => Trust::Ca(ca_certificates(pem)?),
            ServerPin::Certificate { sha256 } => Trust::Pinned(sha256.clone()),
        })
    }
}

/// What the verifier saw in the last handshake: the key's pin, and whether it was refused.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    /// Pin of the key of the last certificate the server presented.
    pub key: Option<String>,
    /// The last certificate was refused because it is not the pinned one.
    pub mismatch: bool,
}

/// Shared with the verifier: read it after a handshake.
pub type Observer = Arc<Mutex<Observed>>;

/// Accepts the server's end-entity certificate by its key's pin, its CA, or its fingerprint
/// (or records it, on first use). Handshake signatures are always verified, so the server must
/// hold the certificate's private key.
#[derive(Debug)]
struct PinVerifier {
    trust: Trust,
    ca: Option<Arc<WebPkiServerVerifier>>,
    observer: Observer,
    provider: Arc<CryptoProvider>,
}

impl PinVerifier {
    fn observe(&self, key: Option<String>, mismatch: bool) {
        if let Ok(mut o) = self.observer.lock() {
            *o = Observed { key, mismatch };
        }
    }

    fn refuse(&self, key: Option<String>, what: String) -> rustls::Error {
        tracing::warn!(key = ?key, "{what}");
        self.observe(key, true);
        rustls::Error::General(what)
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let key = spki_pin(end_entity.as_ref()).ok();
        match &self.trust {
            Trust::Key(pinned) if key.as_ref() == Some(pinned) => {}
            Trust::Key(pinned) => {
                return Err(self.refuse(
                    key.clone(),
                    format!(
                        "the server's public key (SPKI SHA-256 {}) is not the pinned one ({pinned})",
                        key.as_deref().unwrap_or("unreadable")
                    ),
                ));
            }
            Trust::Pinned(pinned) => {
                let seen = fingerprint(end_entity.as_ref());
                if *pinned != seen {
                    return Err(self.refuse(
                        key,
                        format!("the server's certificate (SHA-256 {seen}) is not the pinned one"),
                    ));
                }
            }
            Trust::Ca(_) => {
                let ca = self.ca.as_ref().ok_or_else(|| {
                    rustls::Error::General("no CA certificate to verify the server with".into())
                })?;
                if let Err(e) =
                    ca.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
                {
                    return Err(self.refuse(
                        key,
                        format!("the server's certificate is not from the pinned CA: {e}"),
                    ));
                }
            }
            Trust::FirstUse(slot) => {
                if let Ok(mut s) = slot.lock() {
                    s.clone_from(&key);
                }
            }
        }
        self.observe(key, false);
        Ok(ServerCertVerified::assertion())
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
    client_config_observed(trust, Observer::default())
}

/// [`client_config`], telling `observer` what each handshake saw.
pub fn client_config_observed(
    trust: Trust,
    observer: Observer,
) -> Result<Arc<rustls::ClientConfig>> {
    let setup = |detail: String| ClientError::BadPin(format!("TLS setup: {detail}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca = match &trust {
        Trust::Ca(certs) => {
            let mut roots = RootCertStore::empty();
            for cert in certs {
                roots.add(cert.clone()).map_err(|e| setup(e.to_string()))?;
            }
            let verifier =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| setup(e.to_string()))?;
            Some(verifier)
        }
        _ => None,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinVerifier {
            trust,
            ca,
            observer,
            provider,
        }))
        .with_no_client_auth();
    Ok(Arc::new(config))
}
