//! Crash test of many nodes (issue 12): three real `nara-server` processes on one PostgreSQL
//! database, each with its own data directory (certificate, admin token) and port, and a care
//! team of four phones (carers anna, bo and cilla, nurse nina) writing journal notes about the
//! people they are assigned and syncing, each against a node a seeded RNG picks for every sync.
//! Meanwhile a killer SIGKILLs a random node at a random moment, `CRASH_KILLS` times (default
//! 50), and restarts it at once on the same port. A phone whose node died (or cannot be
//! reached) just syncs again with another node.
//!
//! At the end every node runs and the phones sync in turn, each with the next node, until a
//! whole round moves nothing; then: (1) every change a phone saw acknowledged is in PostgreSQL's
//! document store; (2) every note written is on the server and on every phone whose user may
//! read that person (nothing acknowledged lost, nothing left pending); (3) each phone holds
//! exactly the server's documents of the people it may read, with the server's heads
//! (convergence); (4) no change was refused; (5) the audit chain in PostgreSQL verifies.
//!
//! Needs `NARA_TEST_DATABASE_URL` (see `nara_tests::pg`) and a current `nara-server` binary
//! (`cargo build -p server`, see `nara_tests::procs`). The seed is printed; `CRASH_SEED=N`
//! replays a run's schedule of kills and syncs (the processes' own timing still varies).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nara_tests::net::{Endpoint, SyncEnd, TestDevice};
use nara_tests::pg::{ServerProcess, TestDb};
use nara_tests::team::{journal, note, uid};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use server::audit::AuditLog;
use server::directory::Directory;
use server::offload::offload;
use server::pg::PgDatabase;
use sync_core::protocol::DeviceEvent;
use sync_core::repo::Repo;
use sync_core::store::Store;
use sync_core::{ChangeHash, DocumentId, PatientId, RecordId, Role};
use tokio::sync::Mutex;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn p(s: &str) -> PatientId {
    PatientId::new(s).unwrap()
}

/// One document as a replica holds it: its event and revision ids and its heads.
#[derive(Debug, PartialEq)]
struct Doc {
    records: BTreeSet<RecordId>,
    heads: Vec<ChangeHash>,
    changes: BTreeSet<ChangeHash>,
}

fn replica<S: Store>(repo: &mut Repo<S>) -> BTreeMap<DocumentId, Doc> {
    let ids = repo.store().documents().unwrap();
    let mut docs = BTreeMap::new();
    for id in ids {
        let doc = repo
            .get(&id)
            .unwrap_or_else(|e| panic!("{id} does not load: {e}"));
        docs.insert(
            id,
            Doc {
                records: doc
                    .events()
                    .keys()
                    .chain(doc.revisions().keys())
                    .cloned()
                    .collect(),
                heads: doc.heads(),
                changes: doc
                    .automerge()
                    .get_changes(&[])
                    .iter()
                    .map(|c| c.hash())
                    .collect(),
            },
        );
    }
    docs
}

/// A phone of the team and what it saw.
struct Phone {
    user: &'static str,
    patients: Vec<PatientId>,
    device: TestDevice,
    /// Notes written: (person, record).
    written: Vec<(PatientId, String)>,
    /// Changes whose pending mark an upload acknowledgement cleared.
    acked: BTreeSet<(DocumentId, ChangeHash)>,
    refused: Vec<String>,
    /// How its syncs ended: quiet, closed (why), connection lost, unreachable, refused.
    ends: BTreeMap<String, u64>,
    /// How its last sync ended, for the failure messages.
    last_end: String,
}

impl Phone {
    fn pending(&self) -> BTreeSet<(DocumentId, ChangeHash)> {
        self.device.repo.pending().unwrap().into_iter().collect()
    }

    /// One sync with `node`; records what it acknowledged and refused. Returns whether it
    /// completed, and whether anything moved (received, uploaded).
    async fn sync(&mut self, node: &Endpoint) -> (bool, bool) {
        let before = self.pending();
        let end = self.device.sync_or_lost(node).await;
        self.last_end = format!("{end:?}");
        let after = self.pending();
        self.acked.extend(before.difference(&after).cloned());
        let (how, completed, events) = match end {
            SyncEnd::Quiet(events) => ("quiet".to_owned(), true, events),
            SyncEnd::Closed(events) => {
                let how = events
                    .iter()
                    .find_map(|e| match e {
                        DeviceEvent::Closed { reason, .. } => Some(format!("closed {reason:?}")),
                        _ => None,
                    })
                    .unwrap_or_else(|| "connection lost".to_owned());
                (how, false, events)
            }
            SyncEnd::Refused(status) => {
                // A node starting (or its database connection being replaced) may answer the
                // upgrade with a 5xx; anything else is a bug.
                assert!(status >= 500, "{}: sync refused with {status}", self.user);
                (format!("refused {status}"), false, Vec::new())
            }
            SyncEnd::Unreachable(_) => ("unreachable".to_owned(), false, Vec::new()),
        };
        *self.ends.entry(how).or_default() += 1;
        let mut moved = before != after;
        for e in &events {
            match e {
                DeviceEvent::ChangeRefused(q) => self.refused.push(format!("{q:?}")),
                DeviceEvent::IncomingRefused { .. } => self.refused.push(format!("{e:?}")),
                DeviceEvent::DocumentUpdated { .. } => moved = true,
                DeviceEvent::UploadAcknowledged { changes } => moved |= *changes > 0,
                _ => {}
            }
        }
        (completed, moved)
    }
}

/// The nodes: their processes (`None` while one is down) and where the phones find them.
struct Nodes {
    url: String,
    dirs: Vec<tempfile::TempDir>,
    listen: Vec<String>,
    procs: Vec<Option<ServerProcess>>,
}

impl Nodes {
    fn start(&mut self, i: usize) -> Endpoint {
        let node = ServerProcess::start_on(self.dirs[i].path(), &self.url, &self.listen[i]);
        let endpoint = node.endpoint.clone();
        self.procs[i] = Some(node);
        endpoint
    }

    /// SIGKILL (dropping a `ServerProcess` kills it and waits for it).
    fn kill(&mut self, i: usize) {
        drop(self.procs[i].take());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_postgresql_survive_sigkill() {
    let kills = env_u64("CRASH_KILLS", 50);
    let seed = env_u64("CRASH_SEED", rand::random());
    eprintln!("many-nodes crash test: {kills} kills, CRASH_SEED={seed}");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let started = Instant::now();

    // Who may read whom: bo cares for p1 only, cilla for p2 only.
    let staff: [(&'static str, Role, Vec<PatientId>); 4] = [
        ("anna", Role::Carer, vec![p("p1"), p("p2")]),
        ("bo", Role::Carer, vec![p("p1")]),
        ("cilla", Role::Carer, vec![p("p2")]),
        ("nina", Role::Nurse, vec![p("p1"), p("p2")]),
    ];
    let db = TestDb::new();
    let url = db.url();
    let codes: Vec<String> = offload(|| {
        let d = PgDatabase::new(&url, None).unwrap().directory().unwrap();
        d.add_org("norr", "Hemtjänst Norr").unwrap();
        for id in ["p1", "p2"] {
            d.add_patient(&p(id), id).unwrap();
        }
        staff
            .iter()
            .map(|(user, role, patients)| {
                d.add_user(&uid(user), user, *role, "norr").unwrap();
                for patient in patients {
                    d.assign(&uid(user), patient).unwrap();
                }
                d.enroll(&uid(user), nara_tests::now_ms()).unwrap()
            })
            .collect()
    });

    let mut nodes = Nodes {
        url: url.clone(),
        dirs: (0..3).map(|_| tempfile::tempdir().unwrap()).collect(),
        listen: nara_tests::procs::free_ports(3)
            .into_iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect(),
        procs: (0..3).map(|_| None).collect(),
    };
    // Each node has its own certificate (kept in its data directory across restarts): the
    // phones pin each node's.
    let endpoints: Arc<Vec<Endpoint>> = Arc::new((0..3).map(|i| nodes.start(i)).collect());

    let mut phones = Vec::new();
    for (i, ((user, role, patients), code)) in staff.iter().zip(&codes).enumerate() {
        let device = TestDevice::enroll_code(&endpoints[i % 3], code, uid(user), *role).await;
        phones.push(Arc::new(Mutex::new(Phone {
            user,
            patients: patients.clone(),
            device,
            written: Vec::new(),
            acked: BTreeSet::new(),
            refused: Vec::new(),
            ends: BTreeMap::new(),
            last_end: String::new(),
        })));
    }

    // The phones write and sync until the killer is done.
    let done = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for phone in &phones {
        let (phone, done, endpoints) = (phone.clone(), done.clone(), endpoints.clone());
        let mut rng = ChaCha8Rng::seed_from_u64(rng.random());
        tasks.push(tokio::spawn(async move {
            let mut phone = phone.lock().await;
            let mut n = 0u64;
            while !done.load(Ordering::Relaxed) {
                if rng.random_bool(0.6) {
                    let patient = phone.patients[rng.random_range(0..phone.patients.len())].clone();
                    let id = format!("{}-{n}", phone.user);
                    n += 1;
                    note(&mut phone.device, patient.as_str(), &id, "Visit done.");
                    phone.written.push((patient, id));
                }
                let node = &endpoints[rng.random_range(0..endpoints.len())];
                let (completed, _) = phone.sync(node).await;
                if !completed {
                    // Its node died (or was starting): another one next time.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }

    // The killer: a random node at a random moment, restarted at once on the same port.
    for k in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..400))).await;
        let victim = rng.random_range(0..3);
        let (node, again) = tokio::task::spawn_blocking(move || {
            nodes.kill(victim);
            let again = nodes.start(victim);
            (nodes, again)
        })
        .await
        .unwrap();
        nodes = node;
        assert_eq!(
            again.fingerprint, endpoints[victim].fingerprint,
            "node {victim} came back with another certificate"
        );
        assert_eq!(again.addr, endpoints[victim].addr);
        if (k + 1) % 100 == 0 {
            eprintln!("{} kills, {:.1?}", k + 1, started.elapsed());
        }
    }
    done.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!("{kills} kills in {:.1?}", started.elapsed());

    // The end: every node runs; the phones sync in turn, each with the next node, until a
    // whole round completes and moves nothing.
    let context = format!("CRASH_SEED={seed}");
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds <= 20, "{context}: still syncing after 20 rounds");
        let mut settled = true;
        for (i, phone) in phones.iter().enumerate() {
            let mut phone = phone.lock().await;
            let (completed, moved) = phone.sync(&endpoints[(i + rounds) % 3]).await;
            let pending = phone.pending().len();
            if rounds > 3 {
                eprintln!(
                    "round {rounds}: {} completed {completed} moved {moved} pending {pending}: {:.300}",
                    phone.user, phone.last_end
                );
            }
            settled &= completed && !moved && pending == 0;
        }
        if settled {
            break;
        }
    }

    let url2 = url.clone();
    let (server, verify) = offload(move || {
        let db = PgDatabase::new(&url2, None).unwrap();
        (
            replica(&mut Repo::new(db.store().unwrap())),
            db.audit().unwrap().verify().unwrap(),
        )
    });
    let mut phones: Vec<Phone> = phones
        .into_iter()
        .map(|p| Arc::try_unwrap(p).ok().unwrap().into_inner())
        .collect();
    let held: Vec<BTreeMap<DocumentId, Doc>> = phones
        .iter_mut()
        .map(|ph| {
            ph.device.reopen();
            replica(&mut ph.device.repo)
        })
        .collect();

    for ph in &phones {
        // (4) Nothing was refused.
        assert!(
            ph.refused.is_empty(),
            "{context}: {} saw refusals: {:?}",
            ph.user,
            ph.refused
        );
        // (1) Every acknowledged change is in PostgreSQL.
        for (doc, hash) in &ph.acked {
            assert!(
                server.get(doc).is_some_and(|d| d.changes.contains(hash)),
                "{context}: {hash} of {doc} was acknowledged to {} and the server lost it",
                ph.user
            );
        }
        // (2) Every note is on the server and every phone allowed to read it.
        for (patient, id) in &ph.written {
            let doc = journal(patient.as_str());
            let record = RecordId::new(id.clone()).unwrap();
            assert!(
                server
                    .get(&doc)
                    .is_some_and(|d| d.records.contains(&record)),
                "{context}: {id} by {} is not on the server",
                ph.user
            );
            for (j, other) in phones.iter().enumerate() {
                if other.patients.contains(patient) {
                    assert!(
                        held[j]
                            .get(&doc)
                            .is_some_and(|d| d.records.contains(&record)),
                        "{context}: {id} by {} is not on {}",
                        ph.user,
                        other.user
                    );
                }
            }
        }
    }
    // (3) Convergence: each phone holds exactly the server's documents of its people.
    for (j, ph) in phones.iter().enumerate() {
        let expected: BTreeMap<&DocumentId, &Vec<ChangeHash>> = server
            .iter()
            .filter(|(id, _)| ph.patients.contains(id.patient()))
            .map(|(id, d)| (id, &d.heads))
            .collect();
        let has: BTreeMap<&DocumentId, &Vec<ChangeHash>> =
            held[j].iter().map(|(id, d)| (id, &d.heads)).collect();
        assert_eq!(has, expected, "{context}: {} has not converged", ph.user);
    }
    // (5) One audit chain, and it verifies.
    assert!(verify.ok, "{context}: audit chain: {:?}", verify.problems);

    let written: usize = phones.iter().map(|p| p.written.len()).sum();
    let acked: usize = phones.iter().map(|p| p.acked.len()).sum();
    let mut ends: BTreeMap<&str, u64> = BTreeMap::new();
    for (how, n) in phones.iter().flat_map(|p| &p.ends) {
        *ends.entry(how).or_default() += n;
    }
    // Syncs whose connection a kill cut mid-way.
    let cut = ends.get("connection lost").copied().unwrap_or(0);
    eprintln!(
        "{written} notes written, {acked} changes acknowledged, syncs: {ends:?}, {rounds} rounds \
         to settle, {} audit records, {:.1?} in all",
        verify.records,
        started.elapsed()
    );
    // The phones did write and sync between the kills, or the test proves little.
    assert!(
        written as u64 >= kills / 2,
        "only {written} notes in {kills} kills"
    );
    assert!(cut > 0, "no sync was cut by a kill: the test proves little");
    drop(nodes);
    drop(db);
}
