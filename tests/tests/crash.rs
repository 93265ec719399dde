//! Crash test: a child process writes changes through the SQLite store and is killed with
//! SIGKILL at random moments, `CRASH_RUNS` times (default 200). After each kill the store is
//! reopened: every change the child reported saved is present, nothing is damaged
//! (`PRAGMA integrity_check`), and every document loads and validates. The seed is printed;
//! `CRASH_SEED=N` replays a run's schedule of kills.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use automerge::ReadDoc;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sync_core::repo::Repo;
use sync_core::store::{SqliteStore, Store};
use sync_core::{DocumentId, RecordId};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn changes_reported_saved_survive_sigkill() {
    let runs = env_u64("CRASH_RUNS", 200);
    let seed = env_u64("CRASH_SEED", rand::random());
    eprintln!("crash test: {runs} runs, CRASH_SEED={seed}");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("device.db");
    let mut saved: Vec<u64> = Vec::new();
    let mut next = 0u64;
    let mut runs_that_wrote = 0;

    for run in 0..runs {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
            .arg(&db)
            .arg(next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Let it run from 0 to 60 ms: sometimes it is killed while opening or migrating.
        std::thread::sleep(Duration::from_micros(rng.random_range(0..60_000)));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(
            status.code().is_none(),
            "run {run} (CRASH_SEED={seed}): writer exited by itself: {status} {err}"
        );
        let before = saved.len();
        for line in out.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            let n: u64 = line.trim().strip_prefix("saved ").unwrap().parse().unwrap();
            saved.push(n);
            next = next.max(n + 1);
        }
        if saved.len() > before {
            runs_that_wrote += 1;
        }
        // A change that was committed but not yet reported may exist under the next number;
        // skip past it so ids stay unique.
        next += 1;

        let store = SqliteStore::open(&db).unwrap();
        assert_eq!(
            store.integrity_check().unwrap(),
            Ok(()),
            "run {run} (CRASH_SEED={seed})"
        );
        let ids = store.documents().unwrap();
        let mut repo = Repo::new(store);
        let mut present = std::collections::BTreeSet::new();
        for id in &ids {
            let doc = repo.get(id).unwrap_or_else(|e| {
                panic!("run {run} (CRASH_SEED={seed}): {id} does not load: {e}")
            });
            present.extend(doc.events().keys().cloned());
        }
        for n in &saved {
            let id = RecordId::new(format!("n{n}")).unwrap();
            assert!(
                present.contains(&id),
                "run {run} (CRASH_SEED={seed}): note {n} was reported saved and is lost"
            );
        }
        // Pending marks point at stored changes.
        for (doc, hash) in repo.pending().unwrap() {
            let d = repo.get(&doc).unwrap();
            assert!(
                d.automerge().get_change_by_hash(&hash).is_some(),
                "pending mark of a missing change in {doc}"
            );
        }
        let _: Vec<DocumentId> = ids;
    }
    eprintln!(
        "crash test: {} changes reported saved over {runs} kills ({runs_that_wrote} runs wrote)",
        saved.len()
    );
    assert!(
        saved.len() as u64 >= runs / 4,
        "the writer hardly wrote anything: the test proves little"
    );
}
