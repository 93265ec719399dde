//! [`PgDatabase`]: where `nara-server serve --database` finds PostgreSQL (a URL, and the CA
//! that signed the database's certificate, if TLS is used), and what opens each part of the
//! server on it: the document store on a connection per sync lane, the directory and the audit log each on
//! a pool of `pool_size` connections. [`PgHeadReader`]: the feed's head on a connection of its
//! own, reconnecting after a failure, for fan-out across nodes and for `/readyz`;
//! [`PgFeedListener`], the wake-up hint from other nodes.

use postgres::Config;
use postgres::config::SslMode;
use sync_core::StoreError;
use sync_core::store::Store;

use super::audit::PgAuditLog;
use super::pool::{DEFAULT_POOL_SIZE, MAX_POOL_SIZE};
use super::{PgDirectory, PgFeedListener, PgStore, Target, pg, tls_with_roots};
use crate::audit::AuditError;
use crate::directory::DirectoryError;
use crate::store::HeadReader;

/// A PostgreSQL database to run the server on.
#[derive(Clone)]
pub struct PgDatabase {
    config: Config,
    tls: Option<rustls::ClientConfig>,
    /// Connections in each pool (the directory's, the audit log's).
    pool_size: u32,
}

impl std::fmt::Debug for PgDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The configuration may hold a password.
        f.debug_struct("PgDatabase")
            .field("tls", &self.tls.is_some())
            .field("pool_size", &self.pool_size)
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
        Ok(Self {
            config,
            tls,
            pool_size: DEFAULT_POOL_SIZE,
        })
    }

    /// Pools of `size` connections (1 to [`MAX_POOL_SIZE`]) for the directory and for the
    /// audit log, instead of [`DEFAULT_POOL_SIZE`] (`serve --database-pool`). The document
    /// store is not pooled: a connection per sync lane (`serve --sync-lanes`), each lane's
    /// group commit one transaction on it; the head reader has one of its own.
    pub fn with_pool_size(mut self, size: u32) -> Result<Self, StoreError> {
        if size == 0 || size > MAX_POOL_SIZE {
            return Err(StoreError::backend(
                "postgresql",
                format!("a pool of {size} connections: give 1 to {MAX_POOL_SIZE}"),
            ));
        }
        self.pool_size = size;
        Ok(self)
    }

    /// Connections in each pool.
    pub fn pool_size(&self) -> u32 {
        self.pool_size
    }

    /// A connection for documents and the feed (migrating the schema first; a schema newer
    /// than this build's is refused).
    pub fn store(&self) -> Result<PgStore, StoreError> {
        match &self.tls {
            None => PgStore::open_config(self.config.clone()),
            Some(tls) => PgStore::open_config_tls(self.config.clone(), tls.clone()),
        }
    }

    /// The directory, on a pool of [`PgDatabase::pool_size`] connections.
    pub fn directory(&self) -> Result<PgDirectory, DirectoryError> {
        PgDirectory::open_pool(self.config.clone(), self.tls.clone(), self.pool_size)
    }

    /// The audit log, on a pool of [`PgDatabase::pool_size`] connections.
    pub fn audit(&self) -> Result<PgAuditLog, AuditError> {
        PgAuditLog::open_pool(self.config.clone(), self.tls.clone(), self.pool_size)
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
