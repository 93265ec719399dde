//! [`PgDatabase`]: where `nara-server serve --database` finds PostgreSQL (a URL, and the CA
//! that signed the database's certificate, if TLS is used), and what opens each part of the
//! server on it. [`PgHeadReader`]: the feed's head on a connection of its own, reconnecting
//! after a failure, for fan-out across nodes and for `/readyz`; [`PgFeedListener`], the
//! wake-up hint from other nodes.

use postgres::Config;
use postgres::config::SslMode;
use sync_core::StoreError;
use sync_core::store::Store;

use super::audit::PgAuditLog;
use super::{PgDirectory, PgFeedListener, PgStore, Target, pg, tls_with_roots};
use crate::audit::AuditError;
use crate::directory::DirectoryError;
use crate::store::HeadReader;

/// A PostgreSQL database to run the server on.
#[derive(Clone)]
pub struct PgDatabase {
    config: Config,
    tls: Option<rustls::ClientConfig>,
}

impl std::fmt::Debug for PgDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The configuration may hold a password.
        f.debug_struct("PgDatabase")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl PgDatabase {
    /// The database `url` names (a `postgres://` URL or libpq `key=value` pairs). With `ca` (a
    /// PEM file), TLS is required and the database's certificate must be signed by it; a URL
    /// saying `sslmode=disable` is then refused. Without `ca`, no TLS (a Unix socket, or a
    /// network only the nodes and the database share), and a URL asking for TLS is refused.
    pub fn new(url: &str, ca: Option<&std::path::Path>) -> Result<Self, StoreError> {
        let config: Config = url.parse().map_err(pg)?;
        let tls = match ca {
            Some(ca) => {
                if config.get_ssl_mode() == SslMode::Disable {
                    return Err(StoreError::backend(
                        "postgresql",
                        "the URL says sslmode=disable but a CA for TLS was given",
                    ));
                }
                Some(tls_with_roots(ca)?)
            }
            None => {
                if config.get_ssl_mode() == SslMode::Require {
                    return Err(StoreError::backend(
                        "postgresql",
                        "the URL says sslmode=require: give the CA that signed the database's \
                         certificate (--database-ca)",
                    ));
                }
                None
            }
        };
        Ok(Self { config, tls })
    }

    /// A connection for documents and the feed (migrating the schema first; a schema newer
    /// than this build's is refused).
    pub fn store(&self) -> Result<PgStore, StoreError> {
        match &self.tls {
            None => PgStore::open_config(self.config.clone()),
            Some(tls) => PgStore::open_config_tls(self.config.clone(), tls.clone()),
        }
    }

    /// A connection for the directory.
    pub fn directory(&self) -> Result<PgDirectory, DirectoryError> {
        match &self.tls {
            None => PgDirectory::open_config(self.config.clone()),
            Some(tls) => PgDirectory::open_config_tls(self.config.clone(), tls.clone()),
        }
    }

    /// A connection for the audit log.
    pub fn audit(&self) -> Result<PgAuditLog, AuditError> {
        match &self.tls {
            None => PgAuditLog::open_config(self.config.clone()),
            Some(tls) => PgAuditLog::open_config_tls(self.config.clone(), tls.clone()),
        }
    }

    /// A listener for other nodes' feed notifications, on a connection of its own with the same
    /// TLS settings (opened when it starts watching).
    pub fn feed_listener(&self) -> PgFeedListener {
        PgFeedListener::new(Target {
            config: self.config.clone(),
            tls: self.tls.clone(),
        })
    }

    /// A reader of the feed's head on a connection of its own (opened when first read).
    pub fn head_reader(&self) -> PgHeadReader {
        PgHeadReader {
            database: self.clone(),
            conn: None,
        }
    }
}

/// The feed's head, read on a connection of its own; after a failure the connection is
/// dropped and the next read connects again (a database restarted, a network back).
#[derive(Debug)]
pub struct PgHeadReader {
    database: PgDatabase,
    conn: Option<PgStore>,
}

impl HeadReader for PgHeadReader {
    fn feed_head(&mut self) -> Result<u64, StoreError> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.database.store()?,
        };
        // One row, by its primary key.
        let head = conn.feed_head()?;
        self.conn = Some(conn);
        Ok(head)
    }
}
