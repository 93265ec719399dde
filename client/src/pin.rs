//! What a device trusts the server by, and the enrollment string that carries it.
//!
//! A device pins the server's **public key** (the SHA-256 of the certificate's
//! SubjectPublicKeyInfo, "SPKI"), or a private CA certificate the app ships: never only the
//! leaf certificate, so that a certificate renewed with the same key (or issued by the same
//! CA) keeps working without enrolling every phone again.
//!
//! The enrollment code, the server's address and the pin travel together as one string an app
//! can show as a QR code (see `docs/protocol.md`):
//!
//! ```text
//! nara:<code>@<host>:<port>#<spki-sha256, base64url without padding>
//! nara:7K3QX9M2PA4B@127.0.0.1:7443#0b3Qx...43 characters
//! ```

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::ServerAddr;
use crate::error::{ClientError, Result};

/// The scheme of an enrollment string.
pub const SCHEME: &str = "nara:";

/// The SHA-256 of a certificate's SubjectPublicKeyInfo (DER), base64url without padding: the
/// pin of the key the certificate carries, as `nara-server admin enroll` prints it.
pub fn spki_pin(cert_der: &[u8]) -> Result<String> {
    let der = CertificateDer::from(cert_der);
    let cert = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| ClientError::BadPin(format!("the certificate cannot be parsed: {e:?}")))?;
    let spki = cert.subject_public_key_info();
    Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(spki.as_ref())))
}

/// Checks a pin's form (43 base64url characters, a SHA-256) and returns it as given.
pub fn normalize_pin(pin: &str) -> Result<String> {
    let pin = pin.trim();
    if pin.len() == 64 && pin.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ClientError::BadPin(
            "this looks like a certificate's SHA-256 in hex; devices pin the server's public key \
             now: use the pin (base64url) that `nara-server admin enroll` prints"
                .into(),
        ));
    }
    match URL_SAFE_NO_PAD.decode(pin) {
        Ok(bytes) if bytes.len() == 32 => Ok(pin.to_owned()),
        _ => Err(ClientError::BadPin(format!(
            "{:?} is not a SHA-256 in base64url (43 characters)",
            pin.chars().take(80).collect::<String>()
        ))),
    }
}

/// What this device trusts the server by; kept in `device.json` (nothing secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ServerPin {
    /// The server's public key: SHA-256 of its SPKI, base64url. Survives certificate renewals
    /// that keep the key.
    Spki { sha256: String },
    /// A private CA: any certificate it issued for the server's host name is accepted.
    Ca { pem: String },
    /// The leaf certificate's SHA-256 (hex): only devices enrolled before the key was pinned.
    /// Replaced by the key's pin at the first connection that passes it.
    Certificate { sha256: String },
}

impl ServerPin {
    /// A short description for people and the FFI: `spki-sha256:<pin>`, `ca-sha256:<hex of the
    /// CA certificate>` or `certificate-sha256:<hex>`.
    pub fn describe(&self) -> String {
        match self {
            ServerPin::Spki { sha256 } => format!("spki-sha256:{sha256}"),
            ServerPin::Ca { pem } => {
                let ders = ca_certificates(pem).unwrap_or_default();
                let first = ders
                    .first()
                    .map(|d| hex::encode(Sha256::digest(d.as_ref())));
                format!("ca-sha256:{}", first.unwrap_or_default())
            }
            ServerPin::Certificate { sha256 } => format!("certificate-sha256:{sha256}"),
        }
    }
}

/// The certificates of a PEM bundle (a private CA), at least one.
pub fn ca_certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| ClientError::BadPin(format!("the CA certificate is not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(ClientError::BadPin(
            "no certificate in the CA certificate file".into(),
        ));
    }
    Ok(certs)
}

/// An enrollment string: `nara:<code>@<host>:<port>[#<pin>]`. Without the pin, the app must
/// give a CA certificate, or ask for trust on first use explicitly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentLink {
    pub code: String,
    pub server: ServerAddr,
    /// The server key's pin (base64url SHA-256 of its SPKI).
    pub pin: Option<String>,
}

impl EnrollmentLink {
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |reason: &str| ClientError::BadEnrollment(reason.to_owned());
        let rest = s
            .trim()
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("an enrollment string starts with nara:"))?;
        let (rest, pin) = match rest.split_once('#') {
            Some((r, p)) => (r, Some(normalize_pin(p)?)),
            None => (rest, None),
        };
        let (code, authority) = rest
            .split_once('@')
            .ok_or_else(|| bad("expected nara:<code>@<host>:<port>#<pin>"))?;
        let code_ok = !code.is_empty()
            && code.len() <= 64
            && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !code_ok {
            return Err(bad("the enrollment code is missing or malformed"));
        }
        let server = ServerAddr::parse(&format!("https://{authority}"))?;
        if !authority.contains(':') {
            return Err(bad("the server's port is missing"));
        }
        Ok(Self {
            code: code.to_owned(),
            server,
            pin,
        })
    }

    /// The server's URL, as `device.json` keeps it.
    pub fn server_url(&self) -> String {
        format!("https://{}", self.server.authority())
    }
}

impl std::fmt::Display for EnrollmentLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SCHEME}{}@{}", self.code, self.server.authority())?;
        if let Some(pin) = &self.pin {
            write!(f, "#{pin}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn links_round_trip_and_refuse_junk() {
        let pin = URL_SAFE_NO_PAD.encode([7u8; 32]);
        for s in [
            format!("nara:7K3QX9M2PA4B@127.0.0.1:7443#{pin}"),
            format!("nara:7K3QX9M2PA4B@[::1]:8443#{pin}"),
            "nara:7K3QX9M2PA4B@sync.example.org:443".to_owned(),
        ] {
            let link = EnrollmentLink::parse(&s).unwrap();
            assert_eq!(link.to_string(), s);
            assert_eq!(EnrollmentLink::parse(&link.to_string()).unwrap(), link);
        }
        let link = EnrollmentLink::parse(&format!("nara:ABC@h:1#{pin}")).unwrap();
        assert_eq!(link.server_url(), "https://h:1");
        assert_eq!(link.pin.as_deref(), Some(pin.as_str()));
        for bad in [
            "https://h:1".to_owned(),
            format!("nara:@h:1#{pin}"),
            format!("nara:ABC@h#{pin}"),
            "nara:ABC@h:1#short".to_owned(),
            format!("nara:ABC@h:1#{}", "ab".repeat(32)),
            format!("nara:A/B@h:1#{pin}"),
            format!("nara:ABC@h:1/x#{pin}"),
        ] {
            assert!(EnrollmentLink::parse(&bad).is_err(), "{bad}");
        }
    }
}
