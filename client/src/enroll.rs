//! Enrollment: a one-time code redeemed over HTTPS with the server trusted by its key's pin,
//! a private CA, or (only when asked for explicitly) the first key seen.

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use sync_core::{DeviceId, Role, UserId};

use crate::config::{self, Enrollment, ServerAddr};
use crate::credential::Credential;
use crate::device::{Device, SyncOptions};
use crate::error::{ClientError, Result};
use crate::http;
use crate::pin::{EnrollmentLink, ServerPin, ca_certificates, normalize_pin};
use crate::tls::{self, Observer, Trust};

/// What to enroll with: the server, the one-time code, and what the server is trusted by.
/// Exactly one of `pin`, `ca_pem` and `insecure_trust_first_use`.
#[derive(Debug, Clone, Default)]
pub struct EnrollRequest {
    /// `https://host:port`
    pub server: String,
    pub code: String,
    /// The server key's pin (base64url SHA-256 of its SPKI).
    pub pin: Option<String>,
    /// A private CA certificate (PEM) that issued the server's certificate.
    pub ca_pem: Option<String>,
    /// Accept and pin whatever key the server presents now. Only on a network you trust.
    pub insecure_trust_first_use: bool,
}

impl EnrollRequest {
    /// From an enrollment string `nara:<code>@<host:port>[#<pin>]`.
    pub fn from_link(link: &str) -> Result<Self> {
        let link = EnrollmentLink::parse(link)?;
        Ok(Self {
            server: link.server_url(),
            code: link.code,
            pin: link.pin,
            ..Self::default()
        })
    }

    /// The TLS trust for enrollment and the pin to keep (`None`: trust on first use, the pin
    /// is the key seen).
    fn trust(&self) -> Result<(Trust, Option<ServerPin>)> {
        let given = [
            self.pin.is_some(),
            self.ca_pem.is_some(),
            self.insecure_trust_first_use,
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(ClientError::BadPin(
                "give one of a pin, a CA certificate, or trust on first use".into(),
            ));
        }
        if let Some(pin) = &self.pin {
            let sha256 = normalize_pin(pin)?;
            return Ok((Trust::Key(sha256.clone()), Some(ServerPin::Spki { sha256 })));
        }
        if let Some(pem) = &self.ca_pem {
            let certs = ca_certificates(pem)?;
            return Ok((Trust::Ca(certs), Some(ServerPin::Ca { pem: pem.clone() })));
        }
        if self.insecure_trust_first_use {
            return Ok((Trust::FirstUse(Arc::new(Mutex::new(None))), None));
        }
        Err(ClientError::PinRequired)
    }
}

/// What enrollment did.
#[derive(Debug, Clone, Serialize)]
pub struct Enrolled {
    pub device: DeviceId,
    pub user: UserId,
    pub role: Role,
    pub server: String,
    /// What the server is trusted by from now on ([`ServerPin::describe`]).
    pub pin: String,
    /// True if no pin was given and the key seen at enrollment was pinned (asked for
    /// explicitly).
    pub trusted_on_first_use: bool,
    /// False if the server did not say the user's role and `carer` was assumed.
    pub role_from_server: bool,
}

impl Device {
    /// Enrolls a new device in `home` (default options).
    pub async fn enroll(home: &Path, request: &EnrollRequest) -> Result<(Device, Enrolled)> {
        Self::enroll_with(home, request, SyncOptions::default()).await
    }

    /// Enrolls a new device in `home` with a one-time code, the server trusted as `request`
    /// says; its store is opened with `options` (an encryption key, say).
    pub async fn enroll_with(
        home: &Path,
        request: &EnrollRequest,
        options: SyncOptions,
    ) -> Result<(Device, Enrolled)> {
        if Enrollment::exists(home) || home.join(config::STORE_FILE).exists() {
            return Err(ClientError::AlreadyEnrolled(home.to_path_buf()));
        }
        let (trust, pin) = request.trust()?;
        let addr = ServerAddr::parse(&request.server)?;
        let server = format!("https://{}", addr.authority());
        let observer = Observer::default();
        let tls = tls::client_config_observed(trust, observer.clone())?;
        // The signing key is made here, on the device, and only its public half leaves it.
        let credential = Credential::with_new_key(String::new())?;
        let public = credential
            .device_key()?
            .map(|k| k.public().to_hex())
            .unwrap_or_default();
        let body =
            serde_json::json!({ "code": request.code.trim(), "signing_key": public }).to_string();
        let pinned = pin.as_ref().map(ServerPin::describe).unwrap_or_default();
        let (status, response) = http::post_json(&addr, tls, "/v1/enroll", &body)
            .await
            .map_err(|e| Device::connect_error(&observer, &addr, &pinned, e))?;
        let json: serde_json::Value = serde_json::from_str(&response).unwrap_or_default();
        if status != 200 {
            let message = json["error"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| response.chars().take(200).collect());
            return Err(ClientError::Http { status, message });
        }
        let field = |name: &str| {
            json[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| ClientError::Http {
                    status,
                    message: format!("the enrollment response has no {name:?}"),
                })
        };
        let device = DeviceId::new(field("device")?)?;
        let secret = field("secret")?;
        let user = UserId::new(field("user")?)?;
        let (role, role_from_server) = match json["role"].as_str() {
            Some(r) => (r.parse::<Role>()?, true),
            None => {
                tracing::warn!("the server did not say the user's role; assuming carer");
                (Role::Carer, false)
            }
        };
        let trusted_on_first_use = pin.is_none();
        let pin = match pin {
            Some(pin) => pin,
            None => {
                let key = observer.lock().ok().and_then(|o| o.key.clone());
                ServerPin::Spki {
                    sha256: key.ok_or_else(|| ClientError::Connect {
                        addr: addr.authority(),
                        detail: "no server key was seen".into(),
                    })?,
                }
            }
        };
        let enrollment = Enrollment {
            server: server.clone(),
            device: device.clone(),
            user: user.clone(),
            role,
            pin,
        };
        let credential = Credential {
            secret,
            ..credential
        };
        Device::install(home, &enrollment, &credential, &options)?;
        tracing::info!(%device, %user, role = role.as_str(), "device enrolled");
        let device_handle = Device::open_with(home, options)?;
        // A server that takes root signatures says so (a server of an older build says
        // nothing): the first upload is then signed once, not once per document.
        if json["signatures"].as_str() == Some(sync_core::signing::ROOT_SIGNATURES) {
            device_handle.server_takes_root_signatures(true)?;
        }
        Ok((
            device_handle,
            Enrolled {
                device,
                user,
                role,
                server,
                pin: enrollment.pin.describe(),
                trusted_on_first_use,
                role_from_server,
            },
        ))
    }

    /// Writes an enrolled device into `home`: the credential into the store (opened with
    /// `options`' key), then `device.json` (nothing secret). For enrollment, and for tests that
    /// redeem a code themselves.
    pub fn install(
        home: &Path,
        enrollment: &Enrollment,
        credential: &Credential,
        options: &SyncOptions,
    ) -> Result<()> {
        config::create_home(home)?;
        let path = home.join(config::STORE_FILE);
        let mut store = match &options.store_key {
            Some(key) => sync_core::store::SqliteStore::open_encrypted(&path, key)?,
            None => sync_core::store::SqliteStore::open(&path)?,
        };
        credential.save(&mut store)?;
        drop(store);
        enrollment.save(home)?;
        // A home erased after a revocation may be enrolled again.
        let _ = std::fs::remove_file(home.join(config::WIPED_FILE));
        Ok(())
    }
}
