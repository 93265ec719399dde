//! The device's enrollment: `DIR/device.json`, owner-only. It holds nothing secret: the
//! credential lives in the (encrypted) store, see [`crate::credential`].

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sync_core::{Author, DeviceId, Role, UserId};

use crate::error::{ClientError, Result};
use crate::pin::{ServerPin, normalize_pin};

pub const CONFIG_FILE: &str = "device.json";
pub const STORE_FILE: &str = "device.db";
/// Left in place of `device.json` once a revoked device erased itself: says when and why.
pub const WIPED_FILE: &str = "wiped.json";

/// What enrollment gave this device, except its secret. Stored in `device.json`, mode 0600.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enrollment {
    /// `https://host[:port]`
    pub server: String,
    pub device: DeviceId,
    pub user: UserId,
    pub role: Role,
    /// What the server is trusted by: its key's pin, or a private CA.
    pub pin: ServerPin,
}

/// `device.json` as this and earlier builds wrote it: earlier ones kept the device's `secret`
/// here and pinned the leaf certificate (`fingerprint`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    server: String,
    device: DeviceId,
    user: UserId,
    role: Role,
    #[serde(default)]
    pin: Option<ServerPin>,
    #[serde(default)]
    fingerprint: Option<String>,
    #[serde(default)]
    secret: Option<String>,
}

impl Enrollment {
    pub fn author(&self) -> Author {
        Author::new(self.user.clone(), self.role, self.device.clone())
    }

    pub fn path(home: &Path) -> PathBuf {
        home.join(CONFIG_FILE)
    }

    pub fn exists(home: &Path) -> bool {
        Self::path(home).exists()
    }

    /// Reads `device.json`; also returns the secret an older build kept there (to be moved
    /// into the store by [`crate::Device::open`]).
    pub fn load(home: &Path) -> Result<(Self, Option<String>)> {
        let path = Self::path(home);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Ok(wiped) = std::fs::read_to_string(home.join(WIPED_FILE)) {
                    return Err(ClientError::Wiped(wiped.trim().chars().take(300).collect()));
                }
                return Err(ClientError::NotEnrolled(home.to_path_buf()));
            }
            Err(source) => return Err(ClientError::Io { path, source }),
        };
        let damaged = |detail: String| ClientError::ConfigDamaged {
            path: path.clone(),
            detail,
        };
        let disk: OnDisk = serde_json::from_slice(&bytes).map_err(|e| damaged(e.to_string()))?;
        ServerAddr::parse(&disk.server)?;
        let pin = match (disk.pin, disk.fingerprint) {
            (Some(ServerPin::Spki { sha256 }), _) => ServerPin::Spki {
                sha256: normalize_pin(&sha256)
                    .map_err(|_| damaged("the pinned key is not a SHA-256 in base64url".into()))?,
            },
            (Some(pin), _) => pin,
            (None, Some(fingerprint)) => ServerPin::Certificate {
                sha256: normalize_fingerprint(&fingerprint).map_err(|_| {
                    damaged("the pinned fingerprint is not a SHA-256 in hex".into())
                })?,
            },
            (None, None) => return Err(damaged("no server pin".into())),
        };
        let enrollment = Enrollment {
            server: disk.server,
            device: disk.device,
            user: disk.user,
            role: disk.role,
            pin,
        };
        Ok((enrollment, disk.secret))
    }

    /// Writes `device.json` atomically (temporary file, fsync, rename), owner-only.
    pub fn save(&self, home: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| ClientError::ConfigDamaged {
            path: Self::path(home),
            detail: e.to_string(),
        })?;
        write_private(home, CONFIG_FILE, &json)
    }
}

/// Writes `home/name` atomically (temporary file, fsync, rename), owner-only.
pub(crate) fn write_private(home: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let path = home.join(name);
    let tmp = home.join(format!("{name}.tmp"));
    let io = |source| ClientError::Io {
        path: path.clone(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(io)?;
    #[cfg(unix)]
    {
        // `mode` applies only to a file it creates; a leftover temporary file keeps its own.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    file.write_all(bytes).map_err(io)?;
    file.write_all(b"\n").map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(io)?;
    if let Ok(dir) = std::fs::File::open(home) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Creates the home directory if needed and makes it owner-only (unix): it holds patient data.
pub fn create_home(home: &Path) -> Result<()> {
    let io = |source| ClientError::Io {
        path: home.to_path_buf(),
        source,
    };
    if !home.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(home).map_err(io)?;
    }
    #[cfg(unix)]
    {
        // Patient data lives here: owner only, also for a directory that existed before.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    Ok(())
}

/// A server address taken from an `https://host[:port][/]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    /// Host name or IP address, without brackets.
    pub host: String,
    pub port: u16,
}

impl ServerAddr {
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |reason: &str| ClientError::BadUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| bad("the server URL must start with https://"))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
            return Err(bad("expected https://host[:port] with no path"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in an IPv6 address"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = match port {
            None => 443,
            Some(p) => p.parse().map_err(|_| bad("the port is not a number"))?,
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }

    /// `host:port` as it goes in a URL (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A certificate's SHA-256 fingerprint as 64 lowercase hex digits; accepts upper case and
/// colons.
pub fn normalize_fingerprint(s: &str) -> Result<String> {
    let hexits: String = s
        .trim()
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hexits.len() == 64 && hexits.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hexits)
    } else {
        Err(ClientError::BadPin(format!(
            "{:?} is not a SHA-256 in hex",
            s.chars().take(120).collect::<String>()
        )))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn server_urls() {
        let a = ServerAddr::parse("https://localhost:7443").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("localhost", 7443));
        assert_eq!(ServerAddr::parse("https://example.org/").unwrap().port, 443);
        let v6 = ServerAddr::parse("https://[::1]:8443").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 8443));
        assert_eq!(v6.authority(), "[::1]:8443");
        for bad in [
            "http://localhost:1",
            "localhost:1",
            "https://",
            "https://h:x",
            "https://h/v1",
            "https://[::1",
        ] {
            assert!(ServerAddr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fingerprints() {
        let f = "AB:".repeat(31) + "AB";
        assert_eq!(normalize_fingerprint(&f).unwrap(), "ab".repeat(32));
        assert!(normalize_fingerprint("abc").is_err());
        assert!(normalize_fingerprint(&"zz".repeat(32)).is_err());
    }
}
