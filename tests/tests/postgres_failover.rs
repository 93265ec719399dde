//! Failover and restores on PostgreSQL (issue 12): a database that went back in time moves the
//! feed to a new epoch when a node connects to it, so that devices recover from it.
//!
//! A real restore: `pg_dump` of the database the node served, restored with `pg_restore` into a
//! database of ANOTHER throwaway cluster (started here with `scripts/pg-test-server.sh`, beside
//! the one `NARA_TEST_DATABASE_URL` names), and the real `nara-server serve --database` started
//! on it. The restored database holds the old feed's epoch; only its cluster's identity says it
//! is another history (`server/src/pg/history.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use nara_tests::net::{SyncEnd, TestDevice};
use nara_tests::pg::{ServerProcess, TestDb};
use nara_tests::team::{has, note, uid};
use server::directory::Directory;
use server::offload::offload;
use server::pg::PgDatabase;
use sync_core::protocol::wire::ServerMessage;
use sync_core::{PatientId, Role};

/// PostgreSQL's programs (Debian's `postgresql`).
fn pg_bin(program: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: apt-get install postgresql (Debian)")
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|d| d.join(program).exists())
        .collect();
    dirs.sort();
    dirs.pop()
        .unwrap_or_else(|| panic!("no {program} under /usr/lib/postgresql"))
        .join(program)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A second throwaway cluster (`scripts/pg-test-server.sh start`), stopped when dropped.
struct OtherCluster {
    dir: String,
    /// libpq `key=value` pairs, without a database name.
    base: String,
}

impl OtherCluster {
    fn start() -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-test-server.sh");
        let exports = run(Command::new(&script).arg("start"));
        let var = |name: &str| {
            exports
                .lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}='")))
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or_else(|| panic!("{name} in {exports}"))
                .to_owned()
        };
        let url = var("NARA_TEST_DATABASE_URL");
        Self {
            dir: var("NARA_TEST_PG_DIR"),
            base: url.replace(" dbname=postgres", ""),
        }
    }
}

impl Drop for OtherCluster {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-test-server.sh");
        let _ = Command::new(script).args(["stop", &self.dir]).output();
    }
}

/// Carers anna, bo, cy and dag, all caring for p1.
fn add_team(url: &str) {
    offload(|| {
        let d = PgDatabase::new(url, None).unwrap().directory().unwrap();
        d.add_org("norr", "Hemtjänst Norr").unwrap();
        d.add_patient(&PatientId::new("p1").unwrap(), "P1").unwrap();
        for u in ["anna", "bo", "cy", "dag"] {
            d.add_user(&uid(u), u, Role::Carer, "norr").unwrap();
            d.assign(&uid(u), &PatientId::new("p1").unwrap()).unwrap();
        }
    });
}

/// Enrolls a device for `user` at `node`, the code from the admin API.
async fn enroll(node: &ServerProcess, user: &str) -> TestDevice {
    let (status, v) = node
        .admin(
            "POST",
            "/v1/admin/enrollments",
            Some(serde_json::json!({ "user": user })),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let code = v["code"].as_str().unwrap();
    TestDevice::enroll_code(node, code, uid(user), Role::Carer).await
}

fn quiet(end: SyncEnd) {
    assert!(matches!(end, SyncEnd::Quiet(_)), "{end:?}");
}

/// Syncs and tells whether the server asked the device to recover (version 3).
async fn sync_recording(device: &mut TestDevice, node: &ServerProcess) -> bool {
    device.record = true;
    device.received.clear();
    quiet(device.sync(node).await);
    device.record = false;
    device
        .received
        .iter()
        .any(|m| matches!(m, ServerMessage::Recover { .. }))
}

fn notes_missing(device: &mut TestDevice, ids: &[&str]) -> Vec<String> {
    ids.iter()
        .filter(|id| !has(device, "p1", id))
        .map(|id| id.to_string())
        .collect()
}

/// `(actor, detail)` of the audit records of `action` in the database `url`.
fn audit_of(url: &str, action: &str) -> Vec<(String, String)> {
    let action = action.to_owned();
    let url = url.to_owned();
    offload(move || {
        let mut c = url
            .parse::<postgres::Config>()
            .unwrap()
            .connect(postgres::NoTls)
            .unwrap();
        c.query(
            "SELECT actor, detail FROM audit_log WHERE action = $1 ORDER BY seq",
            &[&action],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    })
}

/// The database restored from a dump into another cluster keeps the feed's epoch; the node
/// that starts on it finds another cluster and moves the feed to a new epoch (audited once).
/// cy synced at the dump and writes first after the restore: its cursor is the restored head
/// with the very proof stored there, so only the new epoch tells it that the database went
/// back (without it, cy would go on from its cursor and no `new-epoch` record would exist).
/// anna wrote a note after the dump that only her phone still holds: it goes up again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restored_into_another_cluster_moves_the_feed_and_devices_recover() {
    let db = TestDb::new();
    add_team(&db.url());
    let data = tempfile::tempdir().unwrap();
    let node = ServerProcess::start(data.path(), &db.url());
    let mut anna = enroll(&node, "anna").await;
    let mut cy = enroll(&node, "cy").await;
    note(&mut anna, "p1", "n1", "Before the dump.");
    quiet(anna.sync(&node).await);
    quiet(cy.sync(&node).await);

    // The dump, as an operator's nightly pg_dump.
    let dumps = tempfile::tempdir().unwrap();
    let dump = dumps.path().join("nara.dump");
    run(Command::new(pg_bin("pg_dump"))
        .args(["--format=custom", "--file"])
        .arg(&dump)
        .args(["--dbname", &db.url()]));

    // Written after the dump: held by anna's phone and by the database that is then lost.
    note(&mut anna, "p1", "n2", "After the dump.");
    quiet(anna.sync(&node).await);
    drop(node);

    // The primary is lost; the dump is restored into a database of another cluster.
    let other = OtherCluster::start();
    let admin_url = format!("{} dbname=postgres", other.base);
    offload(move || {
        let mut c = admin_url
            .parse::<postgres::Config>()
            .unwrap()
            .connect(postgres::NoTls)
            .unwrap();
        c.batch_execute("CREATE DATABASE nara_restored").unwrap();
    });
    let restored = format!("{} dbname=nara_restored", other.base);
    run(Command::new(pg_bin("pg_restore"))
        .args([
            "--no-owner",
            "--exit-on-error",
            "--single-transaction",
            "--dbname",
        ])
        .arg(&restored)
        .arg(&dump));
    let node = ServerProcess::start(data.path(), &restored);

    // cy writes first; its cursor names the old epoch: it recovers.
    for n in ["c1", "c2", "c3"] {
        note(&mut cy, "p1", n, "Written after the restore.");
    }
    assert!(
        sync_recording(&mut cy, &node).await,
        "cy's cursor names the old epoch: it recovers"
    );
    // anna's too: her note written after the dump goes up again, cy's come down.
    assert!(
        sync_recording(&mut anna, &node).await,
        "anna's cursor names the old epoch: it recovers"
    );
    let moved = audit_of(&restored, "new-epoch");
    assert_eq!(moved.len(), 1, "the node moved the feed: {moved:?}");
    assert_eq!(moved[0].0, "server");

    quiet(cy.sync(&node).await);
    quiet(anna.sync(&node).await);
    let all = ["n1", "n2", "c1", "c2", "c3"];
    for device in [&mut anna, &mut cy] {
        assert_eq!(
            notes_missing(device, &all),
            Vec::<String>::new(),
            "{}",
            device.author.user
        );
    }
    // The restored database holds everything again: a phone enrolled now gets it all.
    let mut dag = enroll(&node, "dag").await;
    quiet(dag.sync(&node).await);
    assert_eq!(notes_missing(&mut dag, &all), Vec::<String>::new());
    // Moved by the history check, not by a device that saw more; and the next syncs are on
    // the feed again.
    assert_eq!(audit_of(&restored, "new-epoch").len(), 1);
    assert!(audit_of(&restored, "feed-diverged").is_empty());
    for device in [&mut anna, &mut cy] {
        assert!(!sync_recording(device, &node).await);
    }
    // Another node starting on it finds the history recorded: no second move.
    let data2 = tempfile::tempdir().unwrap();
    let node2 = ServerProcess::start(data2.path(), &restored);
    assert_eq!(node2.status("/readyz").await, 200);
    assert_eq!(audit_of(&restored, "new-epoch").len(), 1);
    drop(node2);
    drop(node);
}
