//! The real server and the real device runtime on turmoil's simulated network: partitions that
//! come and go between devices and the server, held messages, a partition in the middle of a
//! backfill, server crashes during sync, and access withdrawn while a device is cut off.
//!
//! Nothing is mocked: `server::serve` runs with `AppState` over SQLite files in a temporary
//! directory, behind the server's own TLS listener (rustls), on a turmoil host; every phone is a
//! `nara_client::Device` with its own SQLite store whose TLS and WebSocket run over
//! `turmoil::net::TcpStream` (its dialer hook). Only the network and tokio's clock are simulated.
//!
//! A run is seeded: turmoil's network (latencies) and the schedule of edits and faults come from
//! one `u64` (`TURMOIL_SEED=N` to replay; a failing test prints its seed). TLS randomness, the
//! device's reconnection jitter and wall-clock timestamps are not seeded, so a replay takes the
//! same schedule, not necessarily the same bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

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
use server::audit::{AuditAction, AuditLog, AuditRecord, SqliteAudit};
use server::directory::{Directory, SqliteDirectory};
use server::tls::TlsListener;
use server::{AppState, Limits};
use sync_core::model::EventBody;
use sync_core::repo::Repo;
use sync_core::store::SqliteStore;
use sync_core::{ChangeHash, DocumentId, PatientId, RecordId, Role, Timestamp, UserId};

const SERVER: &str = "server";
const PORT: u16 = 443;

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

/// The seed of a run: `TURMOIL_SEED`, or the test's own default (CI runs the defaults).
fn seed(default: u64) -> u64 {
    std::env::var("TURMOIL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Prints the seed if the test fails.
struct SeedGuard(u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("turmoil test failed; replay with TURMOIL_SEED={}", self.0);
        }
    }
}

/// `turmoil::net::TcpListener` as an axum listener, for the server's `TlsListener`.
struct SimListener(turmoil::net::TcpListener);

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
fn dialer(connections: Arc<AtomicUsize>) -> Dialer {
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
struct Phone {
    host: String,
    user: UserId,
    device: Arc<Device>,
    /// Every note this phone saved (durable before `change` returned).
    saved: Vec<(DocumentId, RecordId)>,
    /// TCP connections the phone opened to the server.
    connections: Arc<AtomicUsize>,
    _home: tempfile::TempDir,
}

/// The simulated world: the server host over its data directory, the phones, the directory
/// (a second handle on the server's `server.db`, as the admin command line uses), a seeded rng.
struct World {
    sim: turmoil::Sim<'static>,
    seed: u64,
    rng: ChaCha8Rng,
    data: PathBuf,
    directory: SqliteDirectory,
    /// The server key's pin the phones keep.
    pin: String,
    phones: Vec<Phone>,
    notes: u64,
    _data: tempfile::TempDir,
}

/// Options of a phone in the simulation: short timeouts so that a dead link is noticed quickly
/// (all in simulated time).
fn phone_options() -> SyncOptions {
    SyncOptions {
        connect_timeout: Duration::from_secs(3),
        backoff_min: Duration::from_millis(200),
        backoff_max: Duration::from_secs(2),
        poll_every: Duration::from_millis(250),
        ping_after: Duration::from_secs(2),
        ..SyncOptions::default()
    }
}

async fn run_server(data: PathBuf, limits: Limits) -> turmoil::Result {
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
    fn new(seed: u64, limits: Limits) -> Self {
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

    fn connections(&self, i: usize) -> usize {
        self.phones[i].connections.load(Ordering::SeqCst)
    }

    fn assign(&self, user: &str, p: &str) {
        self.directory.assign(&uid(user), &patient(p)).unwrap();
    }

    /// Enrolls a phone for `user` (the directory's code, redeemed as `/v1/enroll` would) and
    /// starts it watching on host `host`.
    fn add_phone(&mut self, host: &str, user: &str) -> usize {
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
    fn now(&self) -> Timestamp {
        Timestamp(nara_tests::at(8, 0).0 + self.sim.elapsed().as_millis() as i64)
    }

    /// Phone `i` saves a note in `p`'s November journal.
    fn write_note(&mut self, i: usize, p: &str) {
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
    fn run_for(&mut self, d: Duration) {
        let until = self.sim.elapsed() + d;
        while self.sim.elapsed() < until {
            self.sim.step().unwrap();
        }
    }

    /// Runs the simulation for a random time in `ms` milliseconds.
    fn run_random(&mut self, ms: std::ops::Range<u64>) {
        let d = Duration::from_millis(self.rng.random_range(ms));
        self.run_for(d);
    }

    /// Runs until `done` holds (checked every `every` of simulated time), at most `limit`.
    fn run_until(&mut self, limit: Duration, what: &str, mut done: impl FnMut(&mut Self) -> bool) {
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
    fn server_repo(&self) -> Repo<SqliteStore> {
        Repo::new(SqliteStore::open(self.data.join("nara.db")).unwrap())
    }

    fn audit(&self) -> SqliteAudit {
        SqliteAudit::open(&server::admin_cli::audit_path(&self.data)).unwrap()
    }

    /// The patients `user` may read now.
    fn readable(&self, user: &UserId) -> BTreeSet<PatientId> {
        self.directory
            .assignments()
            .unwrap()
            .remove(user)
            .unwrap_or_default()
    }

    /// The heads of every document of a readable patient, on the server.
    fn server_heads(
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
    fn out_of_sync(&self, i: usize) -> Option<String> {
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
    fn converge(&mut self, limit: Duration) {
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
    fn check_nothing_lost(&self) {
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
    fn check_audit_and_files(&self) {
        let report = self.audit().verify().unwrap();
        assert!(report.ok, "audit chain: {:?}", report.problems);
        assert!(report.records > 0);
        for file in ["nara.db", "server.db", "audit.db"] {
            assert_eq!(integrity(&self.data.join(file)), "ok", "{file}");
        }
    }

    /// Audit records after sequence number `after`.
    fn audit_after(&self, after: u64) -> Vec<AuditRecord> {
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

fn sorted(mut heads: Vec<ChangeHash>) -> Vec<ChangeHash> {
    heads.sort();
    heads
}

fn integrity(path: &Path) -> String {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// Changes sent, from a `Disclose` audit record ("N changes sent").
fn disclosed(record: &AuditRecord) -> u64 {
    record
        .entry
        .detail
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected disclosure detail {:?}", record.entry.detail))
}

/// Two carers and a nurse write notes while the link between each phone and the server is cut
/// and repaired at random; after healing, every phone converges and no saved note is lost.
#[test]
fn partitions_come_and_go_between_phones_and_server() {
    let seed = seed(0x7a11);
    let _guard = SeedGuard(seed);
    let mut w = World::new(seed, Limits::default());
    w.assign("anna", "p1");
    w.assign("anna", "p2");
    w.assign("bo", "p1");
    w.assign("nina", "p1");
    w.assign("nina", "p2");
    for (host, user) in [
        ("anna-phone", "anna"),
        ("bo-phone", "bo"),
        ("nina-phone", "nina"),
    ] {
        w.add_phone(host, user);
    }
    let mut cut = [false; 3];
    let mut cuts = 0;
    let mut ever_cut = [false; 3];
    for _ in 0..120 {
        for i in 0..3 {
            if w.rng.random_bool(0.08) {
                let host = w.phones[i].host.clone();
                if cut[i] {
                    w.sim.repair(host.as_str(), SERVER);
                } else {
                    w.sim.partition(host.as_str(), SERVER);
                    cuts += 1;
                    ever_cut[i] = true;
                }
                cut[i] = !cut[i];
            }
            if w.rng.random_bool(0.3) {
                let p = if w.phones[i].user == uid("bo") || w.rng.random_bool(0.6) {
                    "p1"
                } else {
                    "p2"
                };
                w.write_note(i, p);
            }
        }
        let step = Duration::from_millis(w.rng.random_range(100..600));
        w.run_for(step);
    }
    assert!(cuts > 3, "the schedule cut links only {cuts} times");
    for i in 0..3 {
        let host = w.phones[i].host.clone();
        w.sim.repair(host.as_str(), SERVER);
    }
    w.converge(Duration::from_secs(120));
    for i in (0..3).filter(|i| ever_cut[*i]) {
        assert!(
            w.connections(i) > 1,
            "{} never reconnected",
            w.phones[i].host
        );
    }
    w.check_nothing_lost();
    w.check_audit_and_files();
}

/// Messages between phones and the server are held (delayed) and then delivered all at once,
/// briefly (the connection survives) and for longer than the phone's ping timeout (it gives up
/// on the connection and reconnects while the old messages are still in flight).
#[test]
fn held_messages_are_delivered_late_and_merge() {
    let seed = seed(0x401d);
    let _guard = SeedGuard(seed);
    let mut w = World::new(seed, Limits::default());
    w.assign("anna", "p1");
    w.assign("nina", "p1");
    w.add_phone("anna-phone", "anna");
    w.add_phone("nina-phone", "nina");
    w.converge(Duration::from_secs(30));
    for round in 0..6 {
        let i = round % 2;
        let host = w.phones[i].host.clone();
        w.sim.hold(host.as_str(), SERVER);
        for _ in 0..3 {
            w.write_note(0, "p1");
            w.write_note(1, "p1");
            w.run_for(Duration::from_millis(300));
        }
        // Short holds first, then holds past the ping timeout (2 s + 2 s).
        let held = if round < 3 {
            Duration::from_millis(w.rng.random_range(500..2000))
        } else {
            Duration::from_millis(w.rng.random_range(5000..8000))
        };
        w.run_for(held);
        w.sim.release(host.as_str(), SERVER);
        w.run_random(0..1500);
    }
    w.converge(Duration::from_secs(60));
    // The long holds outlasted the ping timeout: both phones gave up a connection.
    assert!(w.connections(0) > 1 && w.connections(1) > 1);
    w.check_nothing_lost();
    w.check_audit_and_files();
}

/// A long history of p1 is backfilled to bo's phone in small batches when bo is assigned to p1;
/// the link is cut in the middle. After the repair the backfill resumes where it stopped: the
/// server sends exactly the changes the phone did not store, nothing it already acknowledged.
#[test]
fn partition_mid_backfill_resumes_without_resending() {
    let seed = seed(0xbac4);
    let _guard = SeedGuard(seed);
    let limits = Limits {
        batch_bytes: 2 * 1024,
        ..Limits::default()
    };
    let mut w = World::new(seed, limits);
    w.assign("nina", "p1");
    w.assign("bo", "p2");
    let nina = w.add_phone("nina-phone", "nina");
    let bo = w.add_phone("bo-phone", "bo");
    for _ in 0..300 {
        w.write_note(nina, "p1");
    }
    w.write_note(bo, "p2");
    w.converge(Duration::from_secs(120));
    let history = {
        let mut repo = w.server_repo();
        let doc = DocumentId::journal(&patient("p1"), november());
        // The genesis is every replica's own; it is never sent.
        repo.get(&doc).unwrap().automerge().get_changes(&[]).len() - 1
    };
    assert_eq!(history, 300);

    // bo is assigned p1 while connected: the server starts the backfill on the live session.
    w.assign("bo", "p1");
    let p1_held = |w: &World| {
        w.phones[bo].device.with_repo(|repo| {
            let doc = DocumentId::journal(&patient("p1"), november());
            if !repo.document_ids().unwrap().contains(&doc) {
                return 0;
            }
            repo.get(&doc).unwrap().automerge().get_changes(&[]).len() - 1
        })
    };
    // Cut as soon as the first batches are stored (checked after every simulation step; a
    // bounded number of steps, so a backfill that never starts fails instead of hanging).
    let mut steps = 0;
    while p1_held(&w) == 0 {
        steps += 1;
        assert!(
            steps <= 30_000,
            "no backfill after {steps} steps (seed {seed})"
        );
        w.sim.step().unwrap();
    }
    w.sim.partition("bo-phone", SERVER);
    // Let what was in flight be lost and bo's phone give up the connection.
    w.run_for(Duration::from_secs(8));
    let held_at_cut = p1_held(&w);
    assert!(
        held_at_cut < history,
        "the backfill finished before the cut"
    );
    let audit_at_cut = w.audit().len().unwrap();
    let connections_at_cut = w.connections(bo);
    w.sim.repair("bo-phone", SERVER);
    w.converge(Duration::from_secs(120));
    assert_eq!(p1_held(&w), history);
    assert!(w.connections(bo) > connections_at_cut);

    let bo_device = w.phones[bo].device.author().device;
    let resent: u64 = w
        .audit_after(audit_at_cut)
        .iter()
        .filter(|r| {
            r.entry.action == AuditAction::Disclose
                && r.entry.device.as_ref() == Some(&bo_device)
                && r.entry.patient == Some(patient("p1"))
        })
        .map(disclosed)
        .sum();
    assert_eq!(
        resent,
        (history - held_at_cut) as u64,
        "after the cut the server sent {resent} changes of p1; bo's phone lacked {} of {history}",
        history - held_at_cut
    );
    w.check_nothing_lost();
    w.check_audit_and_files();
}

/// The server host crashes (its tasks and connections are gone; its SQLite files stay) while
/// phones upload and download, and comes back: nothing saved is lost, the files are intact,
/// everything converges and the audit chain verifies.
#[test]
fn server_crash_during_sync_loses_nothing() {
    let seed = seed(0xc4a5);
    let _guard = SeedGuard(seed);
    let mut w = World::new(seed, Limits::default());
    w.assign("anna", "p1");
    w.assign("bo", "p1");
    w.assign("nina", "p1");
    w.assign("nina", "p2");
    w.assign("anna", "p2");
    for (host, user) in [
        ("anna-phone", "anna"),
        ("bo-phone", "bo"),
        ("nina-phone", "nina"),
    ] {
        w.add_phone(host, user);
    }
    w.converge(Duration::from_secs(30));
    for _ in 0..4 {
        // A burst of edits, then a crash at a random moment while they sync.
        for _ in 0..w.rng.random_range(5..20) {
            let i = w.rng.random_range(0..3);
            let p = if i == 1 || w.rng.random_bool(0.5) {
                "p1"
            } else {
                "p2"
            };
            w.write_note(i, p);
        }
        let before_crash = Duration::from_millis(w.rng.random_range(0..400));
        w.run_for(before_crash);
        w.sim.crash(SERVER);
        for _ in 0..3 {
            let i = w.rng.random_range(0..3);
            w.write_note(i, "p1");
        }
        let down = Duration::from_millis(w.rng.random_range(200..3000));
        w.run_for(down);
        w.sim.bounce(SERVER);
        w.run_random(0..2000);
    }
    w.converge(Duration::from_secs(120));
    for i in 0..3 {
        assert!(
            w.connections(i) > 1,
            "{} never reconnected",
            w.phones[i].host
        );
    }
    w.check_nothing_lost();
    w.check_audit_and_files();
}

/// anna's phone is cut off; meanwhile she writes notes for p1 (still assigned), then is taken
/// off p1, and nina keeps writing. When the link returns, anna's notes are kept (the grace for
/// records made while assigned), nothing of p1 is sent to her phone once the server knows of the
/// withdrawal (it reads the directory every second), her phone is told (again: the first
/// `Withdrawn` went into the partition) and forgets p1, and p2 stays in sync.
#[test]
fn access_withdrawn_while_partitioned() {
    let seed = seed(0xacce);
    let _guard = SeedGuard(seed);
    let mut w = World::new(seed, Limits::default());
    w.assign("anna", "p1");
    w.assign("anna", "p2");
    w.assign("nina", "p1");
    w.assign("nina", "p2");
    let anna = w.add_phone("anna-phone", "anna");
    let nina = w.add_phone("nina-phone", "nina");
    for _ in 0..3 {
        w.write_note(anna, "p1");
        w.write_note(nina, "p1");
    }
    w.converge(Duration::from_secs(30));

    w.sim.partition("anna-phone", SERVER);
    w.run_random(0..3000);
    for _ in 0..4 {
        w.write_note(anna, "p1");
        w.write_note(anna, "p2");
        w.run_random(50..500);
    }
    w.directory.unassign(&uid("anna"), &patient("p1")).unwrap();
    // The server reads the directory every second (admin commands come from another process).
    w.run_for(Duration::from_millis(1500));
    let withdrawn_at = w.audit().len().unwrap();
    for _ in 0..4 {
        w.write_note(nina, "p1");
        w.write_note(nina, "p2");
        w.run_random(200..1500);
    }
    w.sim.repair("anna-phone", SERVER);
    w.run_until(Duration::from_secs(60), "anna's notes uploaded", |w| {
        w.phones[anna].device.pending_count().unwrap() == 0
    });
    // The device forgets a withdrawn patient once nothing of theirs waits for upload, at the
    // start of a connection: the next one after her notes went up (a short cut forces it).
    w.sim.partition("anna-phone", SERVER);
    w.run_for(Duration::from_secs(6));
    w.sim.repair("anna-phone", SERVER);
    w.converge(Duration::from_secs(60));

    // Her notes made while assigned reached the server and nina (check_nothing_lost also
    // covers them); no disclosure of p1 to her phone after the withdrawal.
    w.check_nothing_lost();
    let anna_device = w.phones[anna].device.author().device;
    let after = w.audit_after(withdrawn_at);
    let leaked: Vec<_> = after
        .iter()
        .filter(|r| {
            r.entry.action == AuditAction::Disclose
                && r.entry.device.as_ref() == Some(&anna_device)
                && r.entry.patient == Some(patient("p1"))
        })
        .collect();
    assert!(
        leaked.is_empty(),
        "p1 disclosed after withdrawal: {leaked:?}"
    );
    assert!(
        after.iter().any(|r| r.entry.action == AuditAction::Withdraw
            && r.entry.device.as_ref() == Some(&anna_device)),
        "the withdrawal is not in the audit log"
    );
    let (held, forgotten) = w.phones[anna].device.with_repo(|repo| {
        (
            repo.document_ids().unwrap(),
            repo.is_forgotten(&patient("p1")).unwrap(),
        )
    });
    assert!(forgotten, "anna's phone did not forget p1");
    assert!(
        held.iter().all(|d| d.patient() != &patient("p1")),
        "anna's phone still holds p1: {held:?}"
    );
    assert!(quarantined_none(&w, anna));
    w.check_audit_and_files();
}

/// No change of the phone was refused by the server.
fn quarantined_none(w: &World, i: usize) -> bool {
    let q = w.phones[i].device.quarantined().unwrap();
    assert!(q.is_empty(), "{}: refused changes {q:?}", w.phones[i].host);
    true
}
