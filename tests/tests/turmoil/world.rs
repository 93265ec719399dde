//! The world of the turmoil tests: the real server on its turmoil host over SQLite files in a
//! temporary directory, behind its own TLS listener, and phones (`nara_client::Device`) on hosts
//! of their own dialing it over turmoil's TCP; the seeded schedule, the faults and the checks
//! every test ends with (convergence, nothing lost, audit and files intact).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nara_client::{Device, Dialer, Enrollment, Status, SyncOptions, Transport};
use nara_tests::{november, patient};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use server::audit::{AuditLog, AuditRecord, SqliteAudit};
use server::directory::{Directory, SqliteDirectory};
use server::tls::TlsListener;
use server::{AppState, Limits};
use sync_core::model::EventBody;
use sync_core::repo::Repo;
use sync_core::store::SqliteStore;
use sync_core::{ChangeHash, DocumentId, PatientId, RecordId, Role, Timestamp, UserId};

pub(crate) const SERVER: &str = "server";
pub(crate) const PORT: u16 = 443;

pub(crate) fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

/// The seed of a run: `TURMOIL_SEED`, or the test's own default (CI runs the defaults).
pub(crate) fn seed(default: u64) -> u64 {
    std::env::var("TURMOIL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Prints the seed if the test fails.
pub(crate) struct SeedGuard(pub(crate) u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("turmoil test failed; replay with TURMOIL_SEED={}", self.0);
        }
    }
}

/// `turmoil::net::TcpListener` as an axum listener, for the server's `TlsListener`.
pub(crate) struct SimListener(pub(crate) turmoil::net::TcpListener);

impl axum::serve::Listener for SimListener {
    type Io = turmoil::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok(conn) => return conn,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// The phones' way to the server: a turmoil TCP stream (TLS and WebSocket run on top).
/// Counts the connections made.
pub(crate) fn dialer(connections: Arc<AtomicUsize>) -> Dialer {
    Arc::new(move || {
        let connections = connections.clone();
        Box::pin(async move {
            let tcp = turmoil::net::TcpStream::connect((SERVER, PORT)).await?;
            connections.fetch_add(1, Ordering::SeqCst);
            Ok(Box::new(tcp) as Box<dyn Transport>)
        })
    })
}

/// A phone on its own turmoil host.
pub(crate) struct Phone {
    pub(crate) host: String,
    pub(crate) user: UserId,
    pub(crate) device: Arc<Device>,
    /// Every note this phone saved (durable before `change` returned).
    pub(crate) saved: Vec<(DocumentId, RecordId)>,
    /// TCP connections the phone opened to the server.
    pub(crate) connections: Arc<AtomicUsize>,
    pub(crate) _home: tempfile::TempDir,
}

/// The simulated world: the server host over its data directory, the phones, the directory
/// (a second handle on the server's `server.db`, as the admin command line uses), a seeded rng.
pub(crate) struct World {
    pub(crate) sim: turmoil::Sim<'static>,
    pub(crate) seed: u64,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) data: PathBuf,
    pub(crate) directory: SqliteDirectory,
    /// The server key's pin the phones keep.
    pub(crate) pin: String,
    pub(crate) phones: Vec<Phone>,
    pub(crate) notes: u64,
    pub(crate) _data: tempfile::TempDir,
}

/// Options of a phone in the simulation: short timeouts so that a dead link is noticed quickly
/// (all in simulated time).
pub(crate) fn phone_options() -> SyncOptions {
    SyncOptions {
        connect_timeout: Duration::from_secs(3),
        backoff_min: Duration::from_millis(200),
        backoff_max: Duration::from_secs(2),
        poll_every: Duration::from_millis(250),
        ping_after: Duration::from_secs(2),
        ..SyncOptions::default()
    }
}

pub(crate) async fn run_server(data: PathBuf, limits: Limits) -> turmoil::Result {
    let store = SqliteStore::open(data.join("nara.db"))?;
    let directory = Arc::new(SqliteDirectory::open(&server::admin_cli::directory_path(
        &data,
    ))?);
    let audit = Arc::new(SqliteAudit::open(&server::admin_cli::audit_path(&data))?);
    let tls = server::tls::load_or_create(&data, None, None)?;
    let state = AppState::new(store, directory, audit, "admin-token".into(), limits)?;
    let tcp = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
    let listener = TlsListener::new(SimListener(tcp), tls.config.clone(), 100)?;
    server::serve(listener, state, std::future::pending()).await?;
    Ok(())
}

impl World {
    /// An organisation with carers anna and bo, nurse nina, patients p1 and p2, and the server
    /// running on its host.
    pub(crate) fn new(seed: u64, limits: Limits) -> Self {
        eprintln!("turmoil seed {seed} (TURMOIL_SEED={seed} to replay)");
        let sim = turmoil::Builder::new()
            .rng_seed(seed)
            .simulation_duration(Duration::from_secs(3600))
            .tick_duration(Duration::from_millis(1))
            .min_message_latency(Duration::from_millis(1))
            .max_message_latency(Duration::from_millis(40))
            .build();
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().to_path_buf();
        let directory = SqliteDirectory::open(&server::admin_cli::directory_path(&data)).unwrap();
        directory.add_org("hemtjanst", "Hemtjänst Norr").unwrap();
        for (user, role) in [
            ("anna", Role::Carer),
            ("bo", Role::Carer),
            ("nina", Role::Nurse),
        ] {
            directory
                .add_user(&uid(user), user, role, "hemtjanst")
                .unwrap();
        }
        for p in ["p1", "p2"] {
            directory.add_patient(&patient(p), p).unwrap();
        }
        let pin = server::tls::load_or_create(&data, None, None)
            .unwrap()
            .spki_pin;
        let mut world = Self {
            sim,
            seed,
            rng: ChaCha8Rng::seed_from_u64(seed),
            data: data.clone(),
            directory,
            pin,
            phones: Vec::new(),
            notes: 0,
            _data: tmp,
        };
        world
            .sim
            .host(SERVER, move || run_server(data.clone(), limits.clone()));
        world
    }

    pub(crate) fn connections(&self, i: usize) -> usize {
        self.phones[i].connections.load(Ordering::SeqCst)
    }

    pub(crate) fn assign(&self, user: &str, p: &str) {
        self.directory.assign(&uid(user), &patient(p)).unwrap();
    }

    /// Enrolls a phone for `user` (the directory's code, redeemed as `/v1/enroll` would) and
    /// starts it watching on host `host`.
    pub(crate) fn add_phone(&mut self, host: &str, user: &str) -> usize {
        let now = nara_client::now().0;
        let code = self.directory.enroll(&uid(user), now).unwrap();
        let credential = self.directory.redeem(&code, now).unwrap();
        let role = self.directory.user(&uid(user)).unwrap().unwrap().role;
        let home_dir = tempfile::tempdir().unwrap();
        let home = home_dir.path().join("phone");
        let enrollment = Enrollment {
            server: format!("https://localhost:{PORT}"),
            device: credential.device,
            user: uid(user),
            role,
            pin: nara_client::ServerPin::Spki {
                sha256: self.pin.clone(),
            },
        };
        let secret = nara_client::Credential::new(credential.secret);
        Device::install(&home, &enrollment, &secret, &phone_options()).unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let device = Arc::new(
            Device::open_with(&home, phone_options())
                .unwrap()
                .with_dialer(dialer(connections.clone())),
        );
        let running = device.clone();
        let name = host.to_owned();
        self.sim.client(host, async move {
            // Returns only on a permanent error (a revoked device), which these tests do
            // not provoke; the checks below would notice a phone that stopped.
            if let Err(e) = running.watch(std::future::pending::<()>()).await {
                eprintln!("{name}: watch stopped: {e}");
            }
            Ok(())
        });
        self.phones.push(Phone {
            host: host.to_owned(),
            user: uid(user),
            device,
            saved: Vec::new(),
            connections,
            _home: home_dir,
        });
        self.phones.len() - 1
    }

    /// Simulated time so far, as a timestamp in November 2026 (edits carry it).
    pub(crate) fn now(&self) -> Timestamp {
        Timestamp(nara_tests::at(8, 0).0 + self.sim.elapsed().as_millis() as i64)
    }

    /// Phone `i` saves a note in `p`'s November journal.
    pub(crate) fn write_note(&mut self, i: usize, p: &str) {
        self.notes += 1;
        let record = RecordId::new(format!("{:016x}", self.rng.random::<u64>())).unwrap();
        let doc = DocumentId::journal(&patient(p), november());
        let body = format!("note {} by {}", self.notes, self.phones[i].host);
        let at = self.now();
        let phone = &mut self.phones[i];
        let saved = phone
            .device
            .change(&doc, at, |e| {
                e.record(
                    record.clone(),
                    EventBody::Note {
                        body,
                        corrects: None,
                    },
                )
            })
            .unwrap();
        assert!(saved.change.is_some());
        phone.saved.push((doc, record));
    }

    /// Runs the simulation for `d` of simulated time.
    pub(crate) fn run_for(&mut self, d: Duration) {
        let until = self.sim.elapsed() + d;
        while self.sim.elapsed() < until {
            self.sim.step().unwrap();
        }
    }

    /// Runs the simulation for a random time in `ms` milliseconds.
    pub(crate) fn run_random(&mut self, ms: std::ops::Range<u64>) {
        let d = Duration::from_millis(self.rng.random_range(ms));
        self.run_for(d);
    }

    /// Runs until `done` holds (checked every `every` of simulated time), at most `limit`.
    pub(crate) fn run_until(
        &mut self,
        limit: Duration,
        what: &str,
        mut done: impl FnMut(&mut Self) -> bool,
    ) {
        let deadline = self.sim.elapsed() + limit;
        loop {
            if done(self) {
                return;
            }
            assert!(
                self.sim.elapsed() < deadline,
                "not {what} after {limit:?} of simulated time (seed {})",
                self.seed
            );
            self.run_for(Duration::from_millis(250));
        }
    }

    /// A fresh handle on the server's store (SQLite allows readers beside the server's writer).
    pub(crate) fn server_repo(&self) -> Repo<SqliteStore> {
        Repo::new(SqliteStore::open(self.data.join("nara.db")).unwrap())
    }

    pub(crate) fn audit(&self) -> SqliteAudit {
        SqliteAudit::open(&server::admin_cli::audit_path(&self.data)).unwrap()
    }

    /// The patients `user` may read now.
    pub(crate) fn readable(&self, user: &UserId) -> BTreeSet<PatientId> {
        self.directory
            .assignments()
            .unwrap()
            .remove(user)
            .unwrap_or_default()
    }

    /// The heads of every document of a readable patient, on the server.
    pub(crate) fn server_heads(
        &self,
        patients: &BTreeSet<PatientId>,
    ) -> BTreeMap<DocumentId, Vec<ChangeHash>> {
        let mut repo = self.server_repo();
        let ids = repo.document_ids().unwrap();
        ids.into_iter()
            .filter(|d| patients.contains(d.patient()))
            .map(|d| {
                let heads = sorted(repo.get(&d).unwrap().heads());
                (d, heads)
            })
            .collect()
    }

    /// Why phone `i` is not in sync with the server, or `None` if it is: in sync and quiet,
    /// nothing pending, and holding exactly the server's documents of the patients it may read,
    /// with the same heads.
    pub(crate) fn out_of_sync(&self, i: usize) -> Option<String> {
        let phone = &self.phones[i];
        if !matches!(phone.device.status(), Status::InSync { .. }) {
            return Some(format!(
                "{}: status {:?}",
                phone.host,
                phone.device.status()
            ));
        }
        let pending = phone.device.pending_count().unwrap();
        if pending > 0 {
            return Some(format!("{}: {pending} changes pending", phone.host));
        }
        let patients = self.readable(&phone.user);
        let server = self.server_heads(&patients);
        let held = phone.device.with_repo(|repo| {
            let ids = repo.document_ids().unwrap();
            ids.into_iter()
                .map(|d| {
                    let heads = sorted(repo.get(&d).unwrap().heads());
                    (d, heads)
                })
                .collect::<BTreeMap<_, _>>()
        });
        (held != server).then(|| {
            format!(
                "{}: holds {:?}, the server has {:?}",
                phone.host,
                held.keys().collect::<Vec<_>>(),
                server.keys().collect::<Vec<_>>()
            )
        })
    }

    /// Runs until every phone is in sync with the server.
    pub(crate) fn converge(&mut self, limit: Duration) {
        let deadline = self.sim.elapsed() + limit;
        loop {
            let why = (0..self.phones.len())
                .filter_map(|i| self.out_of_sync(i))
                .collect::<Vec<_>>();
            if why.is_empty() {
                return;
            }
            assert!(
                self.sim.elapsed() < deadline,
                "not converged after {limit:?} of simulated time (seed {}): {}",
                self.seed,
                why.join("; ")
            );
            self.run_for(Duration::from_millis(250));
        }
    }

    /// Nothing saved is lost: every note saved by any phone is on the server and on every phone
    /// whose user may read its patient.
    pub(crate) fn check_nothing_lost(&self) {
        let mut server = self.server_repo();
        for phone in &self.phones {
            for (doc, record) in &phone.saved {
                let on_server = server.get(doc).unwrap().events().contains_key(record);
                assert!(
                    on_server,
                    "{}'s note {record} in {doc} is not on the server (seed {})",
                    phone.host, self.seed
                );
                for reader in &self.phones {
                    if !self.readable(&reader.user).contains(doc.patient()) {
                        continue;
                    }
                    let held = reader
                        .device
                        .with_repo(|r| r.get(doc).unwrap().events().contains_key(record));
                    assert!(
                        held,
                        "{}'s note {record} in {doc} did not reach {} (seed {})",
                        phone.host, reader.host, self.seed
                    );
                }
            }
        }
    }

    /// The audit chain verifies, and the server's SQLite files pass `integrity_check`.
    pub(crate) fn check_audit_and_files(&self) {
        let report = self.audit().verify().unwrap();
        assert!(report.ok, "audit chain: {:?}", report.problems);
        assert!(report.records > 0);
        for file in ["nara.db", "server.db", "audit.db"] {
            assert_eq!(integrity(&self.data.join(file)), "ok", "{file}");
        }
    }

    /// Audit records after sequence number `after`.
    pub(crate) fn audit_after(&self, after: u64) -> Vec<AuditRecord> {
        let mut records = Vec::new();
        for p in ["p1", "p2"] {
            records.extend(
                self.audit()
                    .export_patient(&patient(p))
                    .unwrap()
                    .into_iter()
                    .filter(|r| r.seq > after),
            );
        }
        records
    }
}

pub(crate) fn sorted(mut heads: Vec<ChangeHash>) -> Vec<ChangeHash> {
    heads.sort();
    heads
}

pub(crate) fn integrity(path: &Path) -> String {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// Changes sent, from a `Disclose` audit record ("N changes sent").
pub(crate) fn disclosed(record: &AuditRecord) -> u64 {
    record
        .entry
        .detail
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected disclosure detail {:?}", record.entry.detail))
}

/// No change of the phone was refused by the server.
pub(crate) fn quarantined_none(w: &World, i: usize) -> bool {
    let q = w.phones[i].device.quarantined().unwrap();
    assert!(q.is_empty(), "{}: refused changes {q:?}", w.phones[i].host);
    true
}
