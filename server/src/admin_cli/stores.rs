//! Where `nara-server admin` acts: the data directory's SQLite files (the default), or the
//! server's PostgreSQL database (`--database`, or `NARA_DATABASE_URL`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use sync_core::DeviceId;
use sync_core::store::{SqliteStore, Store};

use super::{audit_path, directory_path, legacy_audit_path, open_audit, pending_in, store_path};
use crate::admin::AdminService;
use crate::audit::AuditLog;
use crate::directory::{DeviceInfo, Directory, SqliteDirectory};
use crate::pg::audit::PgAuditLog;
use crate::pg::{PgDirectory, PgStore};

/// The environment variable naming the database when `--database` is not given.
pub const DATABASE_VAR: &str = "NARA_DATABASE_URL";

/// The stores the commands act on.
pub(super) enum Stores {
    /// The SQLite files in this data directory.
    Sqlite(PathBuf),
    /// A PostgreSQL database (over TLS if `tls` is given).
    Postgres {
        config: Box<postgres::Config>,
        tls: Option<Box<rustls::ClientConfig>>,
    },
}

impl Stores {
    /// PostgreSQL if `database` names a database (the binary fills it from [`DATABASE_VAR`]
    /// when the flag is absent, see [`super::run`]); the data directory's SQLite files
    /// otherwise.
    pub(super) fn choose(
        data: &Path,
        database: Option<String>,
        ca: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let url = database.filter(|url| !url.trim().is_empty());
        let Some(url) = url else {
            if let Some(ca) = ca {
                anyhow::bail!(
                    "--database-ca {} is for a PostgreSQL database: give --database (or \
                     {DATABASE_VAR}) too",
                    ca.display()
                );
            }
            return Ok(Self::Sqlite(data.to_owned()));
        };
        // The URL may hold a password: it is never printed.
        let config: postgres::Config = url.parse().map_err(|e| {
            anyhow::anyhow!(
                "--database (or {DATABASE_VAR}) is neither a postgres:// URL nor libpq \
                 key=value pairs: {e}"
            )
        })?;
        let tls = match ca {
            Some(ca) => Some(
                crate::pg::tls_with_roots(&ca)
                    .with_context(|| format!("reading the database's CA from {}", ca.display()))?,
            ),
            None => None,
        };
        Ok(Self::Postgres {
            config: Box::new(config),
            tls: tls.map(Box::new),
        })
    }

    /// Refuses `command` on PostgreSQL, saying why and what to do instead.
    pub(super) fn sqlite_only(&self, command: &str, instead: &str) -> anyhow::Result<&Path> {
        match self {
            Self::Sqlite(data) => Ok(data),
            Self::Postgres { .. } => anyhow::bail!(
                "`nara-server admin {command}` works on the data directory's SQLite files and \
                 is not available with --database (or {DATABASE_VAR}): {instead}"
            ),
        }
    }

    /// The admin service over the directory and the audit log (on SQLite: the data directory
    /// prepared first, as the server prepares it).
    pub(super) fn service(&self) -> anyhow::Result<AdminService> {
        match self {
            Self::Sqlite(data) => {
                crate::datadir::prepare(data)
                    .with_context(|| format!("preparing the data directory {}", data.display()))?;
                let path = directory_path(data);
                let dir = SqliteDirectory::open(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                Ok(AdminService::new(
                    Arc::new(dir),
                    Arc::new(open_audit(data)?),
                ))
            }
            Self::Postgres { config, tls } => {
                let dir = match tls {
                    Some(tls) => PgDirectory::open_config_tls((**config).clone(), (**tls).clone()),
                    None => PgDirectory::open_config((**config).clone()),
                }
                .context("opening the directory in the PostgreSQL database")?;
                Ok(AdminService::new(Arc::new(dir), self.audit_log()?))
            }
        }
    }

    /// The audit log alone, never created here on SQLite: a missing log is itself something
    /// to report.
    pub(super) fn audit_log(&self) -> anyhow::Result<Arc<dyn AuditLog>> {
        match self {
            Self::Sqlite(data) => {
                let path = audit_path(data);
                anyhow::ensure!(
                    path.exists() || legacy_audit_path(data).exists(),
                    "no audit log at {}: wrong --data, nothing logged yet, or the log was deleted",
                    path.display()
                );
                Ok(Arc::new(open_audit(data)?))
            }
            Self::Postgres { config, tls } => {
                let audit = match tls {
                    Some(tls) => PgAuditLog::open_config_tls((**config).clone(), (**tls).clone()),
                    None => PgAuditLog::open_config((**config).clone()),
                }
                .context("opening the audit log in the PostgreSQL database")?;
                Ok(Arc::new(audit))
            }
        }
    }

    /// The document store, which must exist (on SQLite: a server ran on this data directory).
    pub(super) fn document_store(&self) -> anyhow::Result<Box<dyn Store>> {
        match self {
            Self::Sqlite(data) => {
                let path = store_path(data);
                anyhow::ensure!(
                    path.exists(),
                    "no document store at {}: wrong --data, or no server ran here yet",
                    path.display()
                );
                let store = SqliteStore::open(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                Ok(Box::new(store))
            }
            Self::Postgres { config, tls } => {
                let store = match tls {
                    Some(tls) => PgStore::open_config_tls((**config).clone(), (**tls).clone()),
                    None => PgStore::open_config((**config).clone()),
                }
                .context("opening the document store in the PostgreSQL database")?;
                Ok(Box::new(store))
            }
        }
    }

    /// The document store's feed head (0 if the server has no document store yet): where an
    /// assignment ended (see [`crate::app::Ended`]).
    pub(super) fn feed_head(&self) -> anyhow::Result<u64> {
        match self {
            Self::Sqlite(data) => {
                let path = store_path(data);
                if !path.exists() {
                    return Ok(0);
                }
                let store = SqliteStore::open(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                Ok(sync_core::store::Store::feed_head(&store)?)
            }
            Self::Postgres { config, tls } => {
                let store = match tls {
                    Some(tls) => PgStore::open_config_tls((**config).clone(), (**tls).clone()),
                    None => PgStore::open_config((**config).clone()),
                }
                .context("opening the document store in the PostgreSQL database")?;
                Ok(sync_core::store::Store::feed_head(&store)?)
            }
        }
    }

    /// For each device with a cursor, the feed entries it has yet to receive (see
    /// [`pending_in`]); empty if the server has no document store yet.
    pub(super) fn pending(
        &self,
        dir: &dyn Directory,
        devices: &[DeviceInfo],
    ) -> anyhow::Result<BTreeMap<DeviceId, u64>> {
        let assignments = dir.assignments()?;
        match self {
            Self::Sqlite(data) => {
                let path = store_path(data);
                if !path.exists() {
                    return Ok(BTreeMap::new());
                }
                let store = SqliteStore::open(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                Ok(pending_in(&store, &assignments, devices)?)
            }
            Self::Postgres { config, tls } => {
                let store = match tls {
                    Some(tls) => PgStore::open_config_tls((**config).clone(), (**tls).clone()),
                    None => PgStore::open_config((**config).clone()),
                }
                .context("opening the document store in the PostgreSQL database")?;
                Ok(pending_in(&store, &assignments, devices)?)
            }
        }
    }
}
