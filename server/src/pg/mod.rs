//! The document store, the directory and the audit log on PostgreSQL, for several server
//! nodes on one database (issue 12): `nara-server serve --database postgres://..` runs on them
//! ([`PgDatabase`]). The audit log is
//! [`audit::PgAuditLog`], one hash chain for every node, appended in a store group's
//! transaction with [`audit::append_on`].
//!
//! [`PgStore`] implements `sync_core::store::Store` and passes its whole conformance suite
//! (`pg/tests.rs`). [`PgDirectory`] (`directory.rs`) holds the directory's rows for the one
//! directory service (`crate::directory::DirectoryService`, whose rules SQLite shares) and
//! passes the directory's conformance suite (`pg/directory_tests.rs`). `sync-core` goes to
//! phones, so PostgreSQL stays out of it: this module is the only one that knows PostgreSQL.
//!
//! - One [`PgStore`] is one connection (the blocking `postgres` client, which drives
//!   `tokio-postgres` on a runtime of its own): call it from a blocking thread, never from an
//!   async task. Its group commit is one transaction on it, so the server's store is one
//!   connection per node. [`PgDirectory`] and [`audit::PgAuditLog`] each hold a bounded pool
//!   (`pool.rs`; `serve --database-pool N`): concurrent reads do not wait for each
//!   other, and a connection lost is dropped from the pool.
//! - Numbered migrations (`pg/migrations/`: the store's, then the directory's), one list for
//!   the whole database, each in its own transaction with the bump of `schema_version`, under
//!   an advisory lock so that nodes starting together apply each once.
//!   A database migrated by a newer build is refused ([`StoreError::NewerSchema`]).
//! - Feed order: see [`store`]'s module comment; positions come from one counter row.
//! - Fan-out across nodes: every transaction that moves the feed notifies `nara_feed`; each
//!   node's [`PgFeedListener`] (`listen.rs`) wakes its sessions on it.
//! - TLS to PostgreSQL with rustls ([`PgStore::open_config_tls`], [`tls_with_roots`]): required
//!   when configured, the server's certificate verified; or none, over a Unix socket.

pub mod audit;
#[cfg(test)]
mod compaction_tests;
mod counter;
mod database;
mod directory;
#[cfg(test)]
mod directory_tests;
pub mod history;
#[cfg(test)]
mod history_tests;
mod listen;
mod pool;
#[cfg(test)]
mod pool_tests;
#[cfg(test)]
mod protocol_tests;
#[cfg(test)]
mod race_tests;
mod store;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use postgres::config::SslMode;
use postgres::{Client, Config, NoTls, Statement};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sync_core::StoreError;
use tokio_postgres_rustls::MakeRustlsConnect;

pub use database::{PgDatabase, PgHeadReader};
pub use directory::{PgDirectory, PgDirectoryBackend};
pub use listen::{APPLICATION_NAME as FEED_LISTENER_NAME, PgFeedListener};
pub use pool::{DEFAULT_POOL_SIZE, MAX_POOL_SIZE};

/// Numbered migrations; `schema_version` holds the number applied.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_store.sql"),
    include_str!("migrations/0002_directory.sql"),
    include_str!("migrations/0003_audit.sql"),
    include_str!("migrations/0004_device_leases.sql"),
    include_str!("migrations/0005_access.sql"),
    include_str!("migrations/0006_history.sql"),
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Held (transaction-scoped) while migrating: one key for this schema.
const MIGRATION_LOCK: i64 = 0x6e61_7261_5f6d_6967; // "nara_mig"

/// How long one statement may run (a lock wait included) before it fails.
const STATEMENT_TIMEOUT: &str = "30s";
/// How long a connection may sit in an open transaction: a stuck node must not hold the feed's
/// counter for ever.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "60s";
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A failure of PostgreSQL, as the shared store error.
pub(crate) fn pg(e: postgres::Error) -> StoreError {
    StoreError::backend("postgresql", e)
}

/// A blocking client that is closed off the async threads when dropped: closing it blocks on
/// the client's own runtime, which panics on a thread that runs async tasks (a server's
/// state, or a test's, is often dropped on one).
pub(crate) struct OwnedClient(Option<Client>);

impl OwnedClient {
    fn new(client: Client) -> Self {
        Self(Some(client))
    }
}

impl std::ops::Deref for OwnedClient {
    type Target = Client;
    fn deref(&self) -> &Client {
        match &self.0 {
            Some(client) => client,
            // Taken only in `drop`.
            None => unreachable!("a client used after it was dropped"),
        }
    }
}

impl std::ops::DerefMut for OwnedClient {
    fn deref_mut(&mut self) -> &mut Client {
        match &mut self.0 {
            Some(client) => client,
            None => unreachable!("a client used after it was dropped"),
        }
    }
}

impl Drop for OwnedClient {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            crate::offload::offload(move || drop(client));
        }
    }
}

/// Where a connection goes: to connect again after it was lost.
#[derive(Clone)]
pub(crate) struct Target {
    config: Config,
    tls: Option<rustls::ClientConfig>,
}

/// One connection and the statements prepared on it.
pub(crate) struct Conn {
    client: OwnedClient,
    prepared: HashMap<&'static str, Statement>,
    target: Target,
    /// The open transaction's view of the feed counter (`counter.rs`).
    feed: counter::TxFeed,
}

impl Conn {
    /// Connects to `target` (migrating the schema; see [`connect`]).
    fn open(target: Target) -> Result<Self, StoreError> {
        let client = connect(target.config.clone(), target.tls.clone())?;
        Ok(Self::new(client, target))
    }

    fn new(client: Client, target: Target) -> Self {
        Self {
            client: OwnedClient::new(client),
            prepared: HashMap::new(),
            target,
            feed: counter::TxFeed::default(),
        }
    }

    /// Connects again if the connection was lost (the database restarted, a backend was
    /// terminated, the network failed): the call that met the loss failed; the next one gets a
    /// new connection. Only outside a transaction (a group's is lost with its connection).
    fn revive(&mut self) -> Result<(), StoreError> {
        if self.client.is_closed() {
            tracing::warn!("the connection to PostgreSQL was lost: connecting again");
            let client = connect(self.target.config.clone(), self.target.tls.clone())?;
            self.client = OwnedClient::new(client);
            self.prepared.clear();
            self.feed.reset();
        }
        Ok(())
    }

    /// `sql` prepared on this connection (once).
    fn prep(&mut self, sql: &'static str) -> Result<Statement, StoreError> {
        if let Some(s) = self.prepared.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).map_err(pg)?;
        self.prepared.insert(sql, s.clone());
        Ok(s)
    }
}

/// The document store on PostgreSQL: one connection.
pub struct PgStore {
    conn: Mutex<Conn>,
    /// Groups opened and not yet closed: a group opened inside another one is a savepoint of
    /// its transaction, and only the outermost commit commits.
    group_depth: usize,
    /// An inner group could not be rolled back to its savepoint (so the whole transaction
    /// went): the outer commit must fail rather than commit what is left.
    group_failed: bool,
    /// Tests: what runs right after a load's first read of the database (another node's
    /// write at that moment).
    #[cfg(test)]
    after_first_read: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("group_depth", &self.group_depth)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to the database named by `url` (a `postgres://` URL or `key=value` pairs, as
    /// libpq takes them) and brings its schema up to date.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let config: Config = url.parse().map_err(pg)?;
        Self::open_config(config)
    }

    /// As [`PgStore::open`], from a parsed configuration, without TLS (a Unix socket, or a
    /// network only the database and the nodes share).
    pub fn open_config(config: Config) -> Result<Self, StoreError> {
        Self::open_with(config, None)
    }

    /// As [`PgStore::open_config`], over TLS (rustls): TLS is required, and the server's
    /// certificate is verified by `tls` (see [`tls_with_roots`]).
    pub fn open_config_tls(config: Config, tls: rustls::ClientConfig) -> Result<Self, StoreError> {
        Self::open_with(config, Some(tls))
    }

    fn open_with(config: Config, tls: Option<rustls::ClientConfig>) -> Result<Self, StoreError> {
        Ok(Self {
            conn: Mutex::new(Conn::open(Target { config, tls })?),
            group_depth: 0,
            group_failed: false,
            #[cfg(test)]
            after_first_read: Mutex::new(Vec::new()),
        })
    }

    /// Tests: `f` runs right after the next load's first read of the database.
    #[cfg(test)]
    pub(crate) fn after_first_read(&self, f: Box<dyn FnOnce() + Send>) {
        if let Ok(mut queue) = self.after_first_read.lock() {
            queue.push(f);
        }
    }

    #[cfg(test)]
    fn ran_first_read(&self) {
        let next = self.after_first_read.lock().ok().and_then(|mut q| q.pop());
        if let Some(f) = next {
            f();
        }
    }

    fn conn(&self) -> Result<MutexGuard<'_, Conn>, StoreError> {
        let mut conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        if self.group_depth == 0 {
            conn.revive()?;
        }
        Ok(conn)
    }

    fn conn_mut(&mut self) -> Result<&mut Conn, StoreError> {
        let outside_group = self.group_depth == 0;
        let conn = self.conn.get_mut().map_err(|_| StoreError::Poisoned)?;
        if outside_group {
            conn.revive()?;
        }
        Ok(conn)
    }

    /// Runs `f` as one unit: its own transaction, or a savepoint inside an open group. On an
    /// error everything `f` wrote is undone.
    fn write<T>(
        &mut self,
        f: impl FnOnce(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let in_group = self.group_depth > 0;
        let conn = self.conn_mut()?;
        let (begin, commit, undo) = if in_group {
            (
                "SAVEPOINT store_write",
                "RELEASE SAVEPOINT store_write",
                "ROLLBACK TO SAVEPOINT store_write; RELEASE SAVEPOINT store_write",
            )
        } else {
            ("BEGIN", "COMMIT", "ROLLBACK")
        };
        conn.client.batch_execute(begin).map_err(pg)?;
        if in_group {
            conn.feed.savepoint();
        } else {
            // A transaction of its own: nothing of an earlier one counts.
            conn.feed.reset();
        }
        let done = f(conn).and_then(|v| {
            if !in_group {
                store::write_counter(conn)?;
            }
            conn.client.batch_execute(commit).map_err(pg).map(|()| v)
        });
        if done.is_err() {
            // After a failed COMMIT the transaction is over already: this is then a no-op.
            if let Err(e) = conn.client.batch_execute(undo) {
                tracing::error!(error = %e, "undoing a failed store write failed");
            }
        }
        match (in_group, done.is_ok()) {
            (true, true) => conn.feed.release(),
            (true, false) => conn.feed.rollback_to(),
            (false, _) => conn.feed.reset(),
        }
        done
    }

    fn rollback_open(&mut self) {
        if let Ok(conn) = self.conn_mut() {
            conn.feed.reset();
            if let Err(e) = conn.client.batch_execute("ROLLBACK") {
                tracing::error!(error = %e, "rolling back a group of writes failed");
            }
        }
    }

    /// Sets a savepoint of the open group (a sync step's, `crate::store::ServerStore`).
    pub(crate) fn step_savepoint(&self, name: &str) -> Result<(), StoreError> {
        let mut conn = self.open_group()?;
        conn.client
            .batch_execute(&format!("SAVEPOINT {name}"))
            .map_err(pg)?;
        conn.feed.savepoint();
        Ok(())
    }

    /// Releases the savepoint `name` of the open group (`keep`), or rolls the group back to it
    /// and releases it.
    pub(crate) fn step_end(&self, name: &str, keep: bool) -> Result<(), StoreError> {
        let mut conn = self.open_group()?;
        let sql = if keep {
            format!("RELEASE SAVEPOINT {name}")
        } else {
            format!("ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}")
        };
        let done = conn.client.batch_execute(&sql).map_err(pg);
        if keep && done.is_ok() {
            conn.feed.release();
        } else {
            conn.feed.rollback_to();
        }
        done
    }

    /// The connection, only while a group is open and whole.
    fn open_group(&self) -> Result<MutexGuard<'_, Conn>, StoreError> {
        if self.group_depth == 0 || self.group_failed {
            return Err(StoreError::BadRow(
                "no store group is open, or one inside it was rolled back".into(),
            ));
        }
        self.conn()
    }
}

/// A TLS configuration for PostgreSQL that trusts only the certificate authorities in the PEM
/// file `ca` (the database's own CA, as libpq's `sslrootcert`), with rustls and ring.
pub fn tls_with_roots(ca: &std::path::Path) -> Result<rustls::ClientConfig, StoreError> {
    let tls = |e: String| StoreError::backend("postgresql tls", format!("{}: {e}", ca.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| tls(e.to_string()))? {
        roots
            .add(cert.map_err(|e| tls(e.to_string()))?)
            .map_err(|e| tls(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(tls("no certificate".into()));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// One connection to the database `config` names (over TLS if `tls` is given: then required,
/// the server's certificate verified), with this module's timeouts set and the schema brought
/// up to date.
pub(crate) fn connect(
    config: Config,
    tls: Option<rustls::ClientConfig>,
) -> Result<Client, StoreError> {
    let mut client = connect_only(Target { config, tls })?;
    migrate(&mut client)?;
    history::check(&mut client)?;
    Ok(client)
}

/// As [`connect`], without migrating (a pool's further connections: its first one did).
fn connect_only(target: Target) -> Result<Client, StoreError> {
    let Target { mut config, tls } = target;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    let mut client = match tls {
        None => config.connect(NoTls),
        Some(tls) => {
            config.ssl_mode(SslMode::Require);
            config.connect(MakeRustlsConnect::new(tls))
        }
    }
    .map_err(pg)?;
    client
        .batch_execute(&format!(
            "SET statement_timeout = '{STATEMENT_TIMEOUT}';
             SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_TIMEOUT}';"
        ))
        .map_err(pg)?;
    Ok(client)
}

/// Applies the migrations not yet applied, each in its own transaction, under an advisory
/// lock; refuses a schema newer than this build's.
fn migrate(client: &mut Client) -> Result<(), StoreError> {
    loop {
        let mut tx = client.transaction().map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(pg)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_version (
                 id      boolean PRIMARY KEY DEFAULT true CHECK (id),
                 version bigint NOT NULL
             );
             INSERT INTO schema_version (version) VALUES (0) ON CONFLICT (id) DO NOTHING;",
        )
        .map_err(pg)?;
        let found: i64 = tx
            .query_one("SELECT version FROM schema_version", &[])
            .map_err(pg)?
            .get(0);
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        let Some(sql) = usize::try_from(found).ok().and_then(|n| MIGRATIONS.get(n)) else {
            return tx.commit().map_err(pg);
        };
        tx.batch_execute(sql).map_err(pg)?;
        tx.execute("UPDATE schema_version SET version = $1", &[&(found + 1)])
            .map_err(pg)?;
        tx.commit().map_err(pg)?;
        tracing::info!(version = found + 1, "postgresql store migrated");
    }
}
