//! A PostgreSQL database per test, cloned from a template migrated once (as crates.io's test
//! databases do): `CREATE DATABASE t TEMPLATE tpl` copies files, no migration runs per test.
//!
//! The server comes from `NARA_TEST_DATABASE_URL` (`scripts/pg-test-server.sh start` starts a
//! throwaway one and prints it). Without it the tests fail, never skip: CI always has one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use postgres::{Client, Config, NoTls};
use sha2::{Digest, Sha256};

use super::{MIGRATIONS, PgStore};

/// The variable naming the test server (a URL or libpq `key=value` pairs).
pub(crate) const URL_VAR: &str = "NARA_TEST_DATABASE_URL";

/// Held (session-scoped) while building the template.
const TEMPLATE_LOCK: i64 = 0x6e61_7261_5f74_706c; // "nara_tpl"

/// The test server's configuration, or a failure saying how to start one.
pub(crate) fn server_config() -> Config {
    let Ok(url) = std::env::var(URL_VAR) else {
        panic!(
            "{URL_VAR} is not set: the PostgreSQL store's tests need a PostgreSQL server. \
             Run the tests with `scripts/test`, which starts a throwaway one (Debian: apt-get \
             install postgresql), or start one with `eval \"$(scripts/pg-test-server.sh start)\"`."
        );
    };
    url.parse()
        .unwrap_or_else(|e| panic!("{URL_VAR} does not parse: {e}"))
}

/// The test server over TCP with TLS, and its CA's certificate (PEM): what
/// `scripts/pg-test-server.sh start` prints as `NARA_TEST_DATABASE_TLS_URL` and
/// `NARA_TEST_DATABASE_CA`.
pub(crate) fn tls_server() -> (Config, std::path::PathBuf) {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: the PostgreSQL TLS test needs the test server on 127.0.0.1 \
                 with TLS. Run the tests with `scripts/test`, or start one with \
                 `eval \"$(scripts/pg-test-server.sh start)\"`."
            )
        })
    };
    let config = var("NARA_TEST_DATABASE_TLS_URL")
        .parse()
        .unwrap_or_else(|e| panic!("NARA_TEST_DATABASE_TLS_URL does not parse: {e}"));
    (config, var("NARA_TEST_DATABASE_CA").into())
}

fn admin() -> Client {
    server_config()
        .connect(NoTls)
        .unwrap_or_else(|e| panic!("connecting to the test server ({URL_VAR}): {e}"))
}

/// One empty, migrated database, dropped with this value.
#[derive(Debug)]
pub(crate) struct TestDatabase {
    name: String,
}

impl TestDatabase {
    pub(crate) fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let template = template();
        let name = format!(
            "nara_t_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = admin();
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .unwrap();
        retry_in_use(|| {
            admin.batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
        });
        Self { name }
    }

    /// This database's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The configuration that connects to this database.
    pub(crate) fn config(&self) -> Config {
        let mut c = server_config();
        c.dbname(&self.name);
        c
    }

    /// A new store handle (connection) on this database.
    pub(crate) fn open(&self) -> PgStore {
        PgStore::open_config(self.config()).unwrap()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let dropped = admin().batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
        if let Err(e) = dropped {
            eprintln!("dropping test database {}: {e}", self.name);
        }
    }
}

/// The template's name: one per set of migrations, built once (by whichever test process gets
/// there first, under an advisory lock) and kept on the server.
fn template() -> String {
    let mut h = Sha256::new();
    for m in MIGRATIONS {
        h.update(m.as_bytes());
    }
    let name = format!("nara_tpl_{}", &hex::encode(h.finalize())[..16]);
    let mut admin = admin();
    admin
        .execute("SELECT pg_advisory_lock($1)", &[&TEMPLATE_LOCK])
        .unwrap();
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .unwrap()
        .is_some();
    if !exists {
        // Built under another name and renamed when complete: a test run killed half way
        // leaves no half-migrated template behind.
        let building = format!("{name}_building");
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"))
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {building}"))
            .unwrap();
        let mut config = server_config();
        config.dbname(&building);
        drop(PgStore::open_config(config.clone()).unwrap());
        // The template is no history of its own: each clone records its own at its first
        // connection (`history.rs`), without moving its epoch.
        let mut template = config.connect(NoTls).unwrap();
        template
            .batch_execute(
                "UPDATE feed_history SET system_identifier = NULL, timeline = NULL, \
                 database_oid = NULL",
            )
            .unwrap();
        drop(template);
        retry_in_use(|| {
            admin.batch_execute(&format!("ALTER DATABASE {building} RENAME TO {name}"))
        });
    }
    admin
        .execute("SELECT pg_advisory_unlock($1)", &[&TEMPLATE_LOCK])
        .unwrap();
    name
}

/// Runs `f` until the database it needs is no longer in use by a connection just closed (a
/// backend takes a moment to exit), at most 100 times.
fn retry_in_use(mut f: impl FnMut() -> Result<(), postgres::Error>) {
    for _ in 0..100 {
        match f() {
            Ok(()) => return,
            Err(e) if e.code() == Some(&postgres::error::SqlState::OBJECT_IN_USE) => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("a database stayed in use");
}
