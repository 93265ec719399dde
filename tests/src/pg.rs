//! PostgreSQL for tests that run the server on it: a fresh database per test on the server
//! `NARA_TEST_DATABASE_URL` names (`scripts/pg-test-server.sh start` starts a throwaway one;
//! CI's `scripts/test` does), dropped afterwards; and `nara-server serve --database` as a child
//! process. Without the variable these tests fail and say how to start one: they never skip.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::net::{Endpoint, Reach};

/// The variable naming the test server, in libpq `key=value` form.
const URL_VAR: &str = "NARA_TEST_DATABASE_URL";

fn server_url() -> String {
    let url = std::env::var(URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{URL_VAR} is not set: these tests run the server on PostgreSQL. Run them with \
             `scripts/test`, which starts a throwaway server (Debian: apt-get install \
             postgresql), or start one with `eval \"$(scripts/pg-test-server.sh start)\"`."
        )
    });
    assert!(
        !url.contains("://"),
        "{URL_VAR} must be libpq key=value pairs (as scripts/pg-test-server.sh prints)"
    );
    url
}

fn admin() -> postgres::Client {
    // Blocking client: off the async threads.
    server::offload::offload(|| {
        server_url()
            .parse::<postgres::Config>()
            .unwrap()
            .connect(postgres::NoTls)
            .unwrap_or_else(|e| panic!("connecting to the test server ({URL_VAR}): {e}"))
    })
}

/// An empty database (the server migrates it when it opens it), dropped with this value.
#[derive(Debug)]
pub struct TestDb {
    name: String,
}

impl TestDb {
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "nara_s_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = admin();
        server::offload::offload(|| {
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .unwrap();
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .unwrap();
            // Closing the client blocks too.
            drop(admin);
        });
        Self { name }
    }

    /// The connection string of this database (libpq `key=value` pairs).
    pub fn url(&self) -> String {
        format!("{} dbname={}", server_url(), self.name)
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `sql` on the test server as its administrator, connected to its default database
    /// (not this one): `ALTER DATABASE`, `pg_terminate_backend`, `pg_stat_activity`.
    pub fn admin_execute(&self, sql: &str) {
        let mut admin = admin();
        server::offload::offload(|| {
            admin
                .batch_execute(sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            drop(admin);
        });
    }

    /// The one bigint `sql` answers, run as [`TestDb::admin_execute`] runs it.
    pub fn admin_count(&self, sql: &str) -> i64 {
        let mut admin = admin();
        server::offload::offload(|| {
            let n: i64 = admin
                .query_one(sql, &[])
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .get(0);
            drop(admin);
            n
        })
    }

    /// Creates the database again (empty) after [`TestDb::drop_now`].
    pub fn create_again(&self) {
        let mut admin = admin();
        server::offload::offload(|| {
            admin
                .batch_execute(&format!("CREATE DATABASE {}", self.name))
                .unwrap();
            drop(admin);
        });
    }

    /// Drops the database now, closing every connection to it (a database that went away).
    pub fn drop_now(&self) {
        let mut admin = admin();
        server::offload::offload(|| {
            admin
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
                .unwrap();
            drop(admin);
        });
    }
}

impl Default for TestDb {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        self.drop_now();
    }
}

/// `nara-server serve --database URL` on 127.0.0.1 (a port of its own), killed when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    pub endpoint: Endpoint,
    pub admin_token: String,
    child: Child,
}

/// Connections in each of a server process's pools (`--database-pool`).
const POOL: u32 = 2;

impl ServerProcess {
    /// Starts the binary on `data` (its certificate, admin token and web sessions) and the
    /// database `url`, and waits until it listens.
    pub fn start(data: &Path, url: &str) -> Self {
        Self::start_on(data, url, "127.0.0.1:0")
    }

    /// Like [`ServerProcess::start`], listening on `listen` (say the port a node killed a
    /// moment ago had, so that its devices find it there again).
    pub fn start_on(data: &Path, url: &str, listen: &str) -> Self {
        Self::start_with::<&str>(data, url, listen, &[])
    }

    /// Like [`ServerProcess::start_on`], with more `serve` arguments (say `--feed-poll-ms`).
    pub fn start_with<A: AsRef<std::ffi::OsStr>>(
        data: &Path,
        url: &str,
        listen: &str,
        more: &[A],
    ) -> Self {
        let mut child = Command::new(crate::procs::server_binary())
            .args(["serve", "--listen", listen, "--data"])
            .arg(data)
            .args(["--database", url])
            // Small pools: several nodes share the test server's connections.
            .args(["--database-pool", &POOL.to_string()])
            .args(more)
            .env(
                "RUST_LOG",
                std::env::var("NARA_TEST_NODE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Nobody listens any more: keep draining so the server never blocks.
                    continue;
                }
            }
        });
        let (mut addr, mut fingerprint, mut pools) = (None, None, false);
        while addr.is_none() || fingerprint.is_none() {
            let line = match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => line,
                Err(e) => {
                    // Its stderr (inherited) says why; say how it ended beside it.
                    let status = child.try_wait();
                    panic!(
                        "nara-server serve --database {url} --listen {listen} did not start \
                         ({e}; exit: {status:?})"
                    )
                }
            };
            if let Some(rest) = line.strip_prefix("Nära Sync server on https://") {
                let a: SocketAddr = rest.split(' ').next().unwrap().parse().unwrap();
                addr = Some(a);
            }
            if let Some((_, f)) = line.split_once("SHA-256 fingerprint: ") {
                fingerprint = Some(f.trim().to_owned());
            }
            pools |= line.contains(&format!("pools of {POOL} connections each"));
        }
        assert!(pools, "the server did not say its pools' size");
        let admin_token = std::fs::read_to_string(data.join("admin-token"))
            .unwrap()
            .trim()
            .to_owned();
        Self {
            endpoint: Endpoint {
                addr: addr.unwrap(),
                fingerprint: fingerprint.unwrap(),
            },
            admin_token,
            child,
        }
    }

    /// An admin API request with this server's admin token; returns (status, JSON body).
    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let body = body.map(|b| b.to_string());
        let (status, text) = crate::net::https_at(
            self.endpoint.addr,
            &self.endpoint.fingerprint,
            method,
            path,
            Some(&self.admin_token),
            body.as_deref(),
        )
        .await;
        let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, value)
    }

    /// The status `GET path` answers (no credential).
    pub async fn status(&self, path: &str) -> u16 {
        crate::net::https_at(
            self.endpoint.addr,
            &self.endpoint.fingerprint,
            "GET",
            path,
            None,
            None,
        )
        .await
        .0
    }
}

impl Reach for ServerProcess {
    fn addr(&self) -> SocketAddr {
        self.endpoint.addr
    }
    fn fingerprint(&self) -> &str {
        &self.endpoint.fingerprint
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
