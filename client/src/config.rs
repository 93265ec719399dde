//! The device's enrollment: `DIR/device.json`, readable by its owner only (it holds the secret).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sync_core::{Author, DeviceId, Role, UserId};

use crate::error::{ClientError, Result};

pub const CONFIG_FILE: &str = "device.json";
pub const STORE_FILE: &str = "device.db";

/// What enrollment gave this device. Stored in `device.json`, mode 0600.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    /// `https://host[:port]`
    pub server: String,
    pub device: DeviceId,
    pub secret: String,
    pub user: UserId,
    pub role: Role,
    /// SHA-256 of the server's certificate (DER), lowercase hex.
    pub fingerprint: String,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment")
            .field("server", &self.server)
            .field("device", &self.device)
            .field("secret", &"<redacted>")
            .field("user", &self.user)
            .field("role", &self.role)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
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

    pub fn load(home: &Path) -> Result<Self> {
        let path = Self::path(home);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ClientError::NotEnrolled(home.to_path_buf()));
            }
            Err(source) => return Err(ClientError::Io { path, source }),
        };
        let config: Enrollment =
            serde_json::from_slice(&bytes).map_err(|e| ClientError::ConfigDamaged {
                path: path.clone(),
                detail: e.to_string(),
            })?;
        ServerAddr::parse(&config.server)?;
        normalize_fingerprint(&config.fingerprint).map_err(|_| ClientError::ConfigDamaged {
            path,
            detail: "the pinned fingerprint is not a SHA-256 in hex".into(),
        })?;
        Ok(config)
    }

    /// Writes `device.json` atomically (temporary file, fsync, rename), owner-only.
    pub fn save(&self, home: &Path) -> Result<()> {
        let path = Self::path(home);
        let tmp = home.join(format!("{CONFIG_FILE}.tmp"));
        let io = |source| ClientError::Io {
            path: path.clone(),
            source,
        };
        let json = serde_json::to_vec_pretty(self).map_err(|e| ClientError::ConfigDamaged {
            path: path.clone(),
            detail: e.to_string(),
        })?;
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
        file.write_all(&json).map_err(io)?;
        file.write_all(b"\n").map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(io)?;
        if let Ok(dir) = std::fs::File::open(home) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
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

/// A SHA-256 fingerprint as 64 lowercase hex digits; accepts upper case and colons.
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
        Err(ClientError::BadFingerprint(s.chars().take(120).collect()))
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
