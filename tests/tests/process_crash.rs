//! Crash test of real processes: the real `nara-server` binary and three device processes
//! (`crash-device`, a real `nara_client::Device` writing through `nara_client::care`) sync over
//! TLS on 127.0.0.1 while the test SIGKILLs the server or a device at random moments,
//! `CRASH_KILLS` times (default 100), restarting each victim at once.
//!
//! After every kill the victim's SQLite files pass `PRAGMA integrity_check` and hold everything
//! it reported durable: a device every write it printed as saved, the server every change a
//! device saw acknowledged. At the end everything is restarted and every device syncs until a
//! round of syncs moves nothing; then: (1) every write printed as saved is on its device, on the
//! server and on every device whose user may read that person; (2) every acknowledged change is
//! in the server's `nara.db`; (3) every SQLite file passes `PRAGMA integrity_check`; (4) every
//! device holds every document of the people it may read, with the server's heads; (5) the
//! audit chain verifies (`nara-server admin audit verify`). Nothing was refused. Files are
//! checked on copies (with their write-ahead logs), so that each restarted process recovers its
//! own files as the kill left them.
//!
//! The server is `target/<profile>/nara-server` (Cargo names only this package's binaries to
//! its tests): `cargo test --workspace` builds it for the server's own tests; if it is missing
//! this test builds it. After changing the server, run `cargo build -p server` (or the
//! workspace's tests) so this test does not run an old binary.
//!
//! The seed is printed; `CRASH_SEED=N` replays a run's schedule of kills (the processes' own
//! timing still varies). `CRASH_KEEP=1` keeps the data directory and the processes' logs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nara_tests::procs::server_binary;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sync_core::repo::Repo;
use sync_core::store::{SqliteStore, Store};
use sync_core::{ChangeHash, DocumentId, PatientId, RecordId};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A running child process whose complete stdout lines are collected by a thread.
struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Proc {
    fn spawn(mut cmd: Command, log: &Path) -> Proc {
        let log = File::options().create(true).append(true).open(log).unwrap();
        let mut child = cmd
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match stdout.read_until(b'\n', &mut buf) {
                    // Only whole lines count: a line cut by the kill was not reported.
                    Ok(_) if buf.ends_with(b"\n") => sink
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf).trim_end().to_owned()),
                    _ => return,
                }
            }
        });
        Proc {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// Takes the lines read so far.
    fn take_lines(&self) -> Vec<String> {
        std::mem::take(&mut *self.lines.lock().unwrap())
    }

    fn has_exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// SIGKILL; returns the lines not taken yet.
    fn kill(mut self) -> Vec<String> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.reader.take().unwrap().join().unwrap();
        self.take_lines()
    }

    /// Waits for a process that ends by itself; panics if it fails.
    fn finish(mut self, what: &str, log: &Path) -> Vec<String> {
        let status = self.child.wait().unwrap();
        self.reader.take().unwrap().join().unwrap();
        assert!(status.success(), "{what}: {status}\n{}", tail(log));
        self.take_lines()
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

struct Device {
    user: &'static str,
    home: PathBuf,
    log: PathBuf,
    patients: Vec<PatientId>,
    proc: Option<Proc>,
}

/// What the processes reported.
#[derive(Default)]
struct Ledger {
    /// Per device: (document, record, change) printed as saved.
    saved: Vec<Vec<(DocumentId, RecordId, ChangeHash)>>,
    acked: BTreeSet<(DocumentId, ChangeHash)>,
    refused: Vec<String>,
    /// Per device: inside `sync_once` as of its last line.
    syncing: Vec<bool>,
}

impl Ledger {
    fn absorb(&mut self, device: usize, lines: Vec<String>) -> Vec<String> {
        let mut other = Vec::new();
        for line in lines {
            let words: Vec<&str> = line.split(' ').collect();
            match words[..] {
                ["saved", doc, record, hash] => self.saved[device].push((
                    doc.parse().unwrap(),
                    RecordId::new(record).unwrap(),
                    hash.parse().unwrap(),
                )),
                ["acked", doc, hash] => {
                    self.acked
                        .insert((doc.parse().unwrap(), hash.parse().unwrap()));
                }
                ["refused", ..] => self.refused.push(line.clone()),
                ["sync"] => self.syncing[device] = true,
                ["sync-end"] => self.syncing[device] = false,
                _ => other.push(line),
            }
        }
        other
    }
}

/// One document as a replica's store has it.
struct Doc {
    /// The ids of its events and revisions.
    records: BTreeSet<RecordId>,
    heads: Vec<ChangeHash>,
    changes: BTreeSet<ChangeHash>,
}

/// A replica's documents as its store has them.
struct Replica {
    docs: BTreeMap<DocumentId, Doc>,
}

impl Replica {
    /// Opens a store file after its process died: integrity first, then every document loads.
    fn open(path: &Path, context: &str) -> Replica {
        let store = SqliteStore::open(path).unwrap();
        assert_eq!(
            store.integrity_check().unwrap(),
            Ok(()),
            "{context}: {}",
            path.display()
        );
        let ids = store.documents().unwrap();
        let mut repo = Repo::new(store);
        let mut docs = BTreeMap::new();
        for id in ids {
            let doc = repo
                .get(&id)
                .unwrap_or_else(|e| panic!("{context}: {id} does not load: {e}"));
            let records = doc
                .events()
                .keys()
                .chain(doc.revisions().keys())
                .cloned()
                .collect();
            let changes = doc
                .automerge()
                .get_changes(&[])
                .iter()
                .map(|c| c.hash())
                .collect();
            docs.insert(
                id,
                Doc {
                    records,
                    heads: doc.heads(),
                    changes,
                },
            );
        }
        Replica { docs }
    }

    fn has_record(&self, doc: &DocumentId, record: &RecordId) -> bool {
        self.docs
            .get(doc)
            .is_some_and(|d| d.records.contains(record))
    }

    fn has_change(&self, doc: &DocumentId, hash: &ChangeHash) -> bool {
        self.docs.get(doc).is_some_and(|d| d.changes.contains(hash))
    }
}

/// A copy of a dead process's SQLite file with its write-ahead log, to check without
/// recovering the original: the restarted process finds its files exactly as the kill left them.
fn copy_of(path: &Path, scratch: &Path) -> PathBuf {
    std::fs::create_dir_all(scratch).unwrap();
    let name = path.file_name().unwrap().to_str().unwrap();
    let copy = scratch.join(name);
    for suffix in ["", "-wal"] {
        let (from, to) = (
            PathBuf::from(format!("{}{suffix}", path.display())),
            PathBuf::from(format!("{}{suffix}", copy.display())),
        );
        let _ = std::fs::remove_file(&to);
        if from.exists() {
            std::fs::copy(&from, &to).unwrap();
        }
    }
    let _ = std::fs::remove_file(format!("{}-shm", copy.display()));
    copy
}

fn integrity_ok(path: &Path, context: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let rows: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, ["ok"], "{context}: {}", path.display());
}

struct World {
    server_bin: PathBuf,
    data: PathBuf,
    server_log: PathBuf,
    /// Where files are copied to be checked.
    scratch: PathBuf,
    listen: String,
    server: Option<Proc>,
    devices: Vec<Device>,
    ledger: Ledger,
}

impl World {
    fn admin(&self, args: &[&str]) -> String {
        let out = Command::new(&self.server_bin)
            .arg("admin")
            .arg("--data")
            .arg(&self.data)
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nara-server admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Starts the server and waits until it listens; returns its certificate's fingerprint.
    fn start_server(&mut self) -> String {
        let mut cmd = Command::new(&self.server_bin);
        cmd.arg("serve")
            .arg("--data")
            .arg(&self.data)
            .arg("--listen")
            .arg(&self.listen);
        let mut proc = Proc::spawn(cmd, &self.server_log);
        let started = Instant::now();
        let fingerprint = loop {
            let lines = proc.lines.lock().unwrap().clone();
            if let Some(f) = lines
                .iter()
                .find_map(|l| l.split_once("SHA-256 fingerprint: ").map(|(_, f)| f))
            {
                break f.trim().to_owned();
            }
            assert!(
                !proc.has_exited() && started.elapsed() < Duration::from_secs(60),
                "the server did not start\n{}",
                tail(&self.server_log)
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        self.server = Some(proc);
        fingerprint
    }

    /// SIGKILLs the server; then its three SQLite files pass the integrity check and its
    /// document store holds every change a device saw acknowledged.
    /// Also returns how many devices were inside a sync when it was killed.
    fn kill_server(&mut self, context: &str) -> (Replica, usize) {
        self.collect();
        let syncing = self.ledger.syncing.iter().filter(|s| **s).count();
        let mut proc = self.server.take().unwrap();
        assert!(
            !proc.has_exited(),
            "{context}: the server exited by itself\n{}",
            tail(&self.server_log)
        );
        let _ = proc.kill();
        self.collect();
        (self.check_server(context), syncing)
    }

    fn check_server(&self, context: &str) -> Replica {
        for file in ["server.db", "audit.db"] {
            integrity_ok(&copy_of(&self.data.join(file), &self.scratch), context);
        }
        let server = Replica::open(&copy_of(&self.data.join("nara.db"), &self.scratch), context);
        for (doc, hash) in &self.ledger.acked {
            assert!(
                server.has_change(doc, hash),
                "{context}: change {hash} of {doc} was acknowledged and the server lost it"
            );
        }
        server
    }

    /// Starts a device writing in `month` (`YYYY-MM`).
    fn start_device(&mut self, i: usize, seed: u64, month: &str) {
        let d = &self.devices[i];
        let patients: Vec<&str> = d.patients.iter().map(|p| p.as_str()).collect();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_crash-device"));
        cmd.arg("run")
            .arg(&d.home)
            .arg(patients.join(","))
            .arg(seed.to_string())
            .arg(month);
        let proc = Proc::spawn(cmd, &d.log);
        self.devices[i].proc = Some(proc);
    }

    /// Takes what the running devices printed so far.
    fn collect(&mut self) {
        for i in 0..self.devices.len() {
            if let Some(p) = &mut self.devices[i].proc {
                assert!(
                    !p.has_exited(),
                    "device {} exited by itself\n{}",
                    self.devices[i].user,
                    tail(&self.devices[i].log)
                );
                let lines = p.take_lines();
                let other = self.ledger.absorb(i, lines);
                assert!(other.is_empty(), "unexpected output: {other:?}");
            }
        }
    }

    /// SIGKILLs a device; then its store passes the integrity check and holds every write it
    /// printed as saved. Also returns whether it was inside a sync.
    fn kill_device(&mut self, i: usize, context: &str) -> (Replica, bool) {
        let mut proc = self.devices[i].proc.take().unwrap();
        assert!(
            !proc.has_exited(),
            "device {} exited by itself\n{}",
            self.devices[i].user,
            tail(&self.devices[i].log)
        );
        let lines = proc.kill();
        let other = self.ledger.absorb(i, lines);
        assert!(other.is_empty(), "unexpected output: {other:?}");
        let syncing = std::mem::take(&mut self.ledger.syncing[i]);
        (self.check_device(i, context), syncing)
    }

    fn check_device(&self, i: usize, context: &str) -> Replica {
        let d = &self.devices[i];
        let replica = Replica::open(&copy_of(&d.home.join("device.db"), &self.scratch), context);
        for (doc, record, hash) in &self.ledger.saved[i] {
            assert!(
                replica.has_record(doc, record) && replica.has_change(doc, hash),
                "{context}: {} printed {record} in {doc} as saved and lost it",
                d.user
            );
        }
        replica
    }
}

/// The month devices restarted after kill `k` write in: the next one every 50 kills, as
/// journals and administration logs are per month (and a month's documents stay small).
fn month_of(k: u64) -> String {
    let m = 10 + k / 50; // from 2026-11
    format!("{}-{:02}", 2026 + m / 12, m % 12 + 1)
}

#[test]
fn killed_server_and_devices_lose_nothing_acknowledged_and_converge() {
    let kills = env_u64("CRASH_KILLS", 100);
    let seed = env_u64("CRASH_SEED", rand::random());
    eprintln!("process crash test: {kills} kills, CRASH_SEED={seed}");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let tmp = tempfile::Builder::new()
        .prefix("nara-crash-")
        .tempdir()
        .unwrap();
    let root = tmp.path().to_path_buf();
    if std::env::var_os("CRASH_KEEP").is_some() {
        eprintln!("keeping {}", root.display());
        std::mem::forget(tmp);
    }
    let started = Instant::now();

    let p = |s: &str| PatientId::new(s).unwrap();
    // Who may read whom: Bo does not care for p-2 and Anna not for p-3.
    let staff: [(&str, &str, Vec<PatientId>); 3] = [
        ("anna", "carer", vec![p("p-1"), p("p-2")]),
        ("bo", "carer", vec![p("p-1"), p("p-3")]),
        ("nina", "nurse", vec![p("p-1"), p("p-2"), p("p-3")]),
    ];
    let mut world = World {
        server_bin: server_binary(),
        data: root.join("server"),
        server_log: root.join("server.log"),
        scratch: root.join("scratch"),
        listen: format!("127.0.0.1:{}", nara_tests::procs::free_ports(1)[0]),
        server: None,
        devices: staff
            .iter()
            .map(|(user, _, patients)| Device {
                user,
                home: root.join(user),
                log: root.join(format!("{user}.log")),
                patients: patients.clone(),
                proc: None,
            })
            .collect(),
        ledger: Ledger {
            saved: vec![Vec::new(); staff.len()],
            syncing: vec![false; staff.len()],
            ..Ledger::default()
        },
    };

    // The organisation, its staff and the people they care for; one enrolled phone each.
    world.admin(&["add-org", "--id", "norr", "--name", "Hemtjänst Norr"]);
    for id in ["p-1", "p-2", "p-3"] {
        world.admin(&["add-patient", "--id", id, "--name", id]);
    }
    for (user, role, patients) in &staff {
        world.admin(&[
            "add-user", "--id", user, "--name", user, "--role", role, "--org", "norr",
        ]);
        for patient in patients {
            world.admin(&["assign", "--user", user, "--patient", patient.as_str()]);
        }
    }
    world.start_server();
    let listen = world.listen.to_string();
    for i in 0..world.devices.len() {
        let out = world.admin(&[
            "enroll",
            "--user",
            world.devices[i].user,
            "--server",
            &listen,
            "--json",
        ]);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        // The code, the server and its key's pin in one string.
        let enrollment = v["enrollment"].as_str().unwrap();
        let d = &world.devices[i];
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_crash-device"));
        cmd.arg("enroll").arg(&d.home).arg(enrollment);
        Proc::spawn(cmd, &d.log).finish("enrolling", &d.log);
    }
    for i in 0..world.devices.len() {
        world.start_device(i, rng.random(), &month_of(0));
    }

    // Kill something at a random moment, check it, restart it; again.
    let (mut server_kills, mut device_kills) = (0u64, 0u64);
    // Kills of a device inside `sync_once`; devices inside one when the server was killed.
    let (mut device_kills_syncing, mut syncing_at_server_kills) = (0u64, 0usize);
    for k in 0..kills {
        std::thread::sleep(Duration::from_millis(rng.random_range(0..250)));
        let context = format!("kill {k} (CRASH_SEED={seed})");
        if rng.random_bool(0.3) {
            let (_, syncing) = world.kill_server(&context);
            server_kills += 1;
            syncing_at_server_kills += syncing;
            world.start_server();
        } else {
            let i = rng.random_range(0..world.devices.len());
            let (_, syncing) = world.kill_device(i, &context);
            device_kills += 1;
            device_kills_syncing += u64::from(syncing);
            world.start_device(i, rng.random(), &month_of(k));
        }
        if (k + 1) % 100 == 0 && kills > 100 {
            eprintln!("{} kills, {:.1?}", k + 1, started.elapsed());
        }
    }
    eprintln!(
        "{kills} kills in {:.1?}: {server_kills} of the server (with {syncing_at_server_kills} \
         devices inside a sync in all), {device_kills} of a device ({device_kills_syncing} \
         inside a sync)",
        started.elapsed()
    );

    // The end: every process killed once more, then restarted; the devices sync in turn until
    // a whole round moves nothing.
    let context = format!("the end (CRASH_SEED={seed})");
    for i in 0..world.devices.len() {
        world.kill_device(i, &context);
    }
    world.kill_server(&context);
    world.start_server();
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds <= 10, "{context}: still syncing after 10 rounds");
        let mut moved = false;
        for i in 0..world.devices.len() {
            let d = &world.devices[i];
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_crash-device"));
            cmd.arg("settle").arg(&d.home);
            let lines = Proc::spawn(cmd, &d.log).finish("settling", &d.log);
            let other = world.ledger.absorb(i, lines);
            let [line] = &other[..] else {
                panic!("{context}: settle printed {other:?}");
            };
            let n: Vec<u64> = line
                .strip_prefix("synced ")
                .unwrap()
                .split(' ')
                .map(|n| n.parse().unwrap())
                .collect();
            // received, uploaded, pending
            moved |= n.iter().any(|&n| n > 0);
        }
        if !moved {
            break;
        }
    }
    let (server, _) = world.kill_server(&context);
    let devices: Vec<Replica> = (0..world.devices.len())
        .map(|i| world.check_device(i, &context))
        .collect();

    let ledger = &world.ledger;
    assert!(
        ledger.refused.is_empty(),
        "{context}: refused: {:?}",
        ledger.refused
    );
    // (1) Every write printed as saved is on the server and on every device that may read it.
    for (i, saved) in ledger.saved.iter().enumerate() {
        for (doc, record, _) in saved {
            assert!(
                server.has_record(doc, record),
                "{context}: {record} in {doc} by {} is not on the server",
                world.devices[i].user
            );
            for (j, d) in world.devices.iter().enumerate() {
                if d.patients.contains(doc.patient()) {
                    assert!(
                        devices[j].has_record(doc, record),
                        "{context}: {record} in {doc} by {} is not on {}",
                        world.devices[i].user,
                        d.user
                    );
                }
            }
        }
    }
    // (4) Convergence: each device holds exactly the server's documents of the people it may
    // read, with the same heads.
    for (j, d) in world.devices.iter().enumerate() {
        let expected: BTreeMap<&DocumentId, &Vec<ChangeHash>> = server
            .docs
            .iter()
            .filter(|(id, _)| d.patients.contains(id.patient()))
            .map(|(id, v)| (id, &v.heads))
            .collect();
        let held: BTreeMap<&DocumentId, &Vec<ChangeHash>> = devices[j]
            .docs
            .iter()
            .map(|(id, v)| (id, &v.heads))
            .collect();
        assert_eq!(held, expected, "{context}: {} has not converged", d.user);
    }
    // (5) The audit chain verifies; `nara-server check` agrees on the store.
    world.admin(&["audit", "verify"]);
    let out = Command::new(&world.server_bin)
        .arg("check")
        .arg("--data")
        .arg(&world.data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{context}: nara-server check failed");

    let saved: usize = ledger.saved.iter().map(Vec::len).sum();
    eprintln!(
        "{saved} writes saved, {} changes acknowledged, {rounds} rounds to settle, {} documents \
         on the server, {:.1?} in all",
        ledger.acked.len(),
        server.docs.len(),
        started.elapsed()
    );
    // The devices did write and sync between the kills, or the test proves little.
    assert!(
        saved as u64 >= kills,
        "only {saved} writes in {kills} kills"
    );
    assert!(
        ledger.acked.len() as u64 >= kills / 2,
        "hardly anything acknowledged"
    );
    assert!(server_kills > 0 && device_kills > 0);
}
