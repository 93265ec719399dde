//! A phone restored from a backup, and a phone's data copied to a second phone (issue 10,
//! "Nothing lost when state goes backwards"), through the real server over TLS and the real
//! device runtime with its own stores. A restore is the device's data directory copied aside
//! (the device closed), more synced, and the copy put back; a copy is the same files opened as
//! a second device runtime. Every record ends up on every device that may read it, once; the
//! audit log says what happened.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

use nara_client::care::{self, OrderInput};
use nara_client::{Device, SyncOptions};
use nara_tests::care::{clock, date_of, delegate_for_a_month, enroll_runtime, sync};
use nara_tests::net::TestServer;
use nara_tests::{now_ms, patient};
use server::directory::Directory;
use sync_core::model::AdministrationOutcome;
use sync_core::{DocumentId, PatientId, RecordId, Role, Timestamp, UserId};

const DAY: i64 = 24 * 3_600_000;

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn p1() -> PatientId {
    patient("p1")
}

fn rid(s: &str) -> RecordId {
    RecordId::new(s).unwrap()
}

async fn setup() -> TestServer {
    let server = TestServer::start().await;
    let d = &server.directory;
    d.add_org("norr", "Hemtjänst Norr").unwrap();
    d.add_user(&uid("nina"), "Nina", Role::Nurse, "norr")
        .unwrap();
    d.add_user(&uid("anna"), "Anna", Role::Carer, "norr")
        .unwrap();
    d.add_patient(&p1(), "p1").unwrap();
    for u in ["nina", "anna"] {
        d.assign(&uid(u), &p1()).unwrap();
    }
    server.state.refresh().unwrap();
    server
}

fn open(home: &Path) -> Device {
    Device::open_with(home, SyncOptions::default()).unwrap()
}

/// Copies every file of a (closed) device's data directory to `to`, replacing what is there.
fn copy_home(from: &Path, to: &Path) {
    if to.exists() {
        std::fs::remove_dir_all(to).unwrap();
    }
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn note(device: &Device, text: &str) -> RecordId {
    care::add_note(device, &p1(), text, &clock())
        .unwrap()
        .record
}

/// Every document of p1 with its Automerge heads and its record ids.
type Held = BTreeMap<DocumentId, (Vec<String>, Vec<RecordId>)>;

fn held(device: &Device) -> Held {
    device.with_repo(|repo| {
        let ids: Vec<DocumentId> = repo
            .document_ids()
            .unwrap()
            .into_iter()
            .filter(|d| d.patient() == &p1())
            .collect();
        ids.into_iter()
            .map(|id| {
                let d = repo.get(&id).unwrap();
                let mut heads: Vec<String> = d.heads().iter().map(|h| h.to_string()).collect();
                heads.sort();
                let mut records: Vec<RecordId> = d.events().keys().cloned().collect();
                records.extend(d.revisions().keys().cloned());
                (id, (heads, records))
            })
            .collect()
    })
}

/// How many changes of p1's documents on `device` write record `id` (1: written once).
fn writes_of(device: &Device, id: &RecordId) -> usize {
    let paths = [format!("events/{id}"), format!("revisions/{id}")];
    device.with_repo(|repo| {
        let ids: Vec<DocumentId> = repo
            .document_ids()
            .unwrap()
            .into_iter()
            .filter(|d| d.patient() == &p1())
            .collect();
        ids.iter()
            .map(|doc| {
                repo.get(doc)
                    .unwrap()
                    .history()
                    .iter()
                    .filter(|h| h.writes.iter().any(|w| paths.contains(w)))
                    .count()
            })
            .sum()
    })
}

/// Every device holds every document of p1 in the same state, nothing waits for upload, and
/// each of `records` is held and was written by exactly one change.
fn assert_everywhere(devices: &[&Device], records: &[&RecordId]) {
    let first = held(devices[0]);
    for d in devices {
        assert_eq!(d.pending_count().unwrap(), 0);
        assert_eq!(held(d), first, "{} differs", d.author().user);
        for r in records {
            assert_eq!(
                writes_of(d, r),
                1,
                "{r} written once, on {}",
                d.author().user
            );
        }
    }
    let all: Vec<&RecordId> = first.values().flat_map(|(_, r)| r).collect();
    for r in records {
        assert_eq!(all.iter().filter(|x| **x == *r).count(), 1, "{r} once");
    }
}

/// The audit log's entries of `action`: (device, detail).
fn audit(server: &TestServer, action: &str) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(server.audit.path()).unwrap();
    let mut stmt = conn
        .prepare("SELECT device, detail FROM audit_log WHERE action = ?1 ORDER BY seq")
        .unwrap();
    stmt.query_map([action], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_phone_loses_no_note_and_is_never_stuck() {
    let server = setup().await;
    let homes = tempfile::tempdir().unwrap();
    let home = homes.path().join("anna");
    let backup = homes.path().join("anna-backup");
    let nina = enroll_runtime(
        &server,
        &homes.path().join("nina"),
        "nina",
        SyncOptions::default(),
    )
    .await;
    let anna = enroll_runtime(&server, &home, "anna", SyncOptions::default()).await;
    let device = anna.author().device.to_string();

    // A note synced, then the phone backed up (closed first).
    let n1 = note(&anna, "morning visit, all well");
    sync(&anna).await;
    drop(anna);
    copy_home(&home, &backup);
    // Two more notes synced after the backup.
    let anna = open(&home);
    let n2 = note(&anna, "lunch eaten");
    let n3 = note(&anna, "walked to the mailbox");
    sync(&anna).await;
    drop(anna);

    // The backup is put back; she writes two notes, then syncs.
    copy_home(&backup, &home);
    let anna = open(&home);
    assert_eq!(anna.incarnation().unwrap().number, 0);
    let n4 = note(&anna, "evening visit, slept well");
    let n5 = note(&anna, "pharmacy called");
    let report = sync(&anna).await;
    assert_eq!(report.reincarnated, Some(1), "{report:?}");
    assert_eq!(report.rewritten, 2, "{report:?}");
    let inc = anna.incarnation().unwrap();
    assert_eq!((inc.number, inc.rewrites_waiting), (1, 0));

    // Later notes of the month's journal go through: the phone is not stuck.
    let n6 = note(&anna, "night round, no remarks");
    let report = sync(&anna).await;
    assert_eq!(report.reincarnated, None);
    sync(&nina).await;
    sync(&anna).await;
    assert_everywhere(&[&anna, &nina], &[&n1, &n2, &n3, &n4, &n5, &n6]);

    let reincarnated = audit(&server, "reincarnated");
    assert_eq!(reincarnated.len(), 1, "{reincarnated:?}");
    assert_eq!(reincarnated[0].0, device);
    assert!(reincarnated[0].1.contains("incarnation 0"));
    assert!(reincarnated[0].1.contains("incarnation 1"));
    assert!(audit(&server, "copy-detected").is_empty());
    assert!(audit(&server, "refuse").is_empty(), "nothing refused");
    let info = server.directory.devices().unwrap();
    assert!(info.iter().all(|d| d.copy_detected_ms.is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_phone_twice_from_one_backup_is_taken_for_a_copy() {
    let server = setup().await;
    let homes = tempfile::tempdir().unwrap();
    let home = homes.path().join("anna");
    let backup = homes.path().join("anna-backup");
    let nina = enroll_runtime(
        &server,
        &homes.path().join("nina"),
        "nina",
        SyncOptions::default(),
    )
    .await;
    let anna = enroll_runtime(&server, &home, "anna", SyncOptions::default()).await;
    let n1 = note(&anna, "first");
    sync(&anna).await;
    drop(anna);
    copy_home(&home, &backup);
    let anna = open(&home);
    let n2 = note(&anna, "second");
    sync(&anna).await;
    drop(anna);
    copy_home(&backup, &home);
    let anna = open(&home);
    let n3 = note(&anna, "third");
    assert_eq!(sync(&anna).await.reincarnated, Some(1));
    drop(anna);
    // The same backup again: incarnation 0 comes back while 1 is in use.
    copy_home(&backup, &home);
    let anna = open(&home);
    let n4 = note(&anna, "fourth");
    assert_eq!(sync(&anna).await.reincarnated, Some(2));
    sync(&nina).await;
    sync(&anna).await;
    assert_everywhere(&[&anna, &nina], &[&n1, &n2, &n3, &n4]);
    assert_eq!(audit(&server, "reincarnated").len(), 2);
    // Indistinguishable from a second installation: the administrator is told.
    assert_eq!(audit(&server, "copy-detected").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copied_phone_is_reported_and_its_double_dose_is_flagged_everywhere() {
    let server = setup().await;
    let homes = tempfile::tempdir().unwrap();
    let home = homes.path().join("anna");
    let copy_dir = homes.path().join("anna-copy");
    let nina = enroll_runtime(
        &server,
        &homes.path().join("nina"),
        "nina",
        SyncOptions::default(),
    )
    .await;
    let anna = enroll_runtime(&server, &home, "anna", SyncOptions::default()).await;
    let device = anna.author().device.to_string();
    let order = OrderInput {
        drug: Some("Metoprolol".into()),
        strength: Some("50 mg".into()),
        dose: Some("1 tablet".into()),
        route: Some("oral".into()),
        times: Some(vec!["08:00".into(), "20:00".into()]),
        start: Some(date_of(Timestamp(now_ms() - 3 * DAY))),
        stop: None,
        delegated: Some(true),
        ..OrderInput::default()
    };
    care::write_order(&nina, &p1(), &rid("o-1"), &order, &clock()).unwrap();
    delegate_for_a_month(&nina, &p1(), "anna", &clock());
    sync(&nina).await;
    sync(&anna).await;
    drop(anna);

    // The phone's data copied to a second phone: both run.
    copy_home(&home, &copy_dir);
    let anna = open(&home);
    let copy = open(&copy_dir);
    let slot = format!("{}T08:00", date_of(Timestamp(now_ms())));
    let give = |d: &Device| {
        care::give(
            d,
            &p1(),
            &rid("o-1"),
            &slot,
            AdministrationOutcome::Given,
            None,
            true,
            false,
            &clock(),
        )
        .unwrap()
        .record
    };
    let first_dose = give(&anna);
    sync(&anna).await;
    let second_dose = give(&copy);
    let report = sync(&copy).await;
    assert_eq!(report.reincarnated, Some(1), "{report:?}");
    assert_eq!(report.rewritten, 1);
    // The first installation comes back while the copy's incarnation is in use.
    let n1 = note(&anna, "gave the morning dose");
    sync(&anna).await;
    sync(&copy).await;
    sync(&nina).await;
    sync(&anna).await;
    assert_everywhere(&[&anna, &copy, &nina], &[&first_dose, &second_dose, &n1]);

    // The double dose is flagged on every device.
    for d in [&anna, &copy, &nina] {
        let flags = care::flags(d, Some(&p1())).unwrap();
        assert!(
            flags.iter().any(|f| f.open && f.kind == "double-dose"),
            "{} sees {flags:?}",
            d.author().user
        );
    }

    // Audited as its own kind of event, once, and shown to administrators.
    let copies = audit(&server, "copy-detected");
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(copies[0].0, device);
    assert_eq!(audit(&server, "reincarnated").len(), 1);
    let info = server.directory.devices().unwrap();
    let listed = info.iter().find(|d| d.id.as_str() == device).unwrap();
    assert!(listed.copy_detected_ms.is_some());
    assert_eq!(listed.copies, vec![(0, 1)]);
    let (status, body) = server
        .https("GET", "/v1/admin/devices", Some(&server.admin_token), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let shown = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == device.as_str())
        .unwrap();
    assert_eq!(shown["copies"], serde_json::json!([[0, 1]]));
    assert!(shown["copy_detected_ms"].is_i64());
    // And `nara-server admin devices`.
    for json in [false, true] {
        let mut out = Vec::new();
        server::admin_cli::run_to(
            server::admin_cli::AdminArgs {
                data: server.data.path().to_owned(),
                database: None,
                database_ca: None,
                json,
                command: server::admin_cli::AdminCommand::Devices,
            },
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let line = text.lines().find(|l| l.contains(&device)).unwrap();
        if json {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let d = v["devices"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["id"] == device.as_str())
                .unwrap();
            assert_eq!(d["copies"], serde_json::json!([[0, 1]]), "{text}");
        } else {
            assert!(line.contains("COPIED"), "{line}");
            assert!(line.contains("0+1"), "{line}");
        }
    }
    // Nina's phone is not marked.
    let nina_id = nina.author().device.to_string();
    assert!(
        info.iter()
            .find(|d| d.id.as_str() == nina_id)
            .is_some_and(|d| d.copy_detected_ms.is_none())
    );
}

/// Waits (generously: a busy CI machine) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while !done() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} did not happen in time"));
}

/// Two installations of one credential both in step at their hellos: the copy stays connected
/// (watching) while the first writes and syncs, then writes under the same write counter on
/// its open connection. The server takes that upload for the fork it is, stores nothing of it,
/// reports the copy once and answers `Reincarnate` mid-connection; the copy goes on under a
/// new incarnation on the same connection and writes its note again. Nothing is lost or
/// written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copied_phone_forks_mid_connection_and_loses_nothing() {
    let server = setup().await;
    let homes = tempfile::tempdir().unwrap();
    let home = homes.path().join("anna");
    let copy_dir = homes.path().join("anna-copy");
    let nina = enroll_runtime(
        &server,
        &homes.path().join("nina"),
        "nina",
        SyncOptions::default(),
    )
    .await;
    let anna = enroll_runtime(&server, &home, "anna", SyncOptions::default()).await;
    let device = anna.author().device.to_string();
    let before = note(&anna, "before the copy");
    sync(&anna).await;
    drop(anna);
    copy_home(&home, &copy_dir);
    let anna = open(&home);
    let copy = std::sync::Arc::new(open(&copy_dir));

    // The copy connects and stays connected, in step with the server.
    let watching = copy.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn(async move {
        watching
            .watch(async move {
                let _ = stopped.await;
            })
            .await
    });
    until("the copy in sync", || {
        matches!(copy.status(), nara_client::Status::InSync { .. })
    })
    .await;
    // The first installation writes under the next write counter and uploads it...
    let first = note(&anna, "written on the first phone");
    sync(&anna).await;
    // ...and the copy, still connected, writes under the same one.
    let second = note(&copy, "written on the copy");
    until("the copy's note written again and uploaded", || {
        copy.pending_count().unwrap() == 0 && writes_of(&copy, &second) == 1
    })
    .await;
    drop(stop);
    let report = tokio::time::timeout(std::time::Duration::from_secs(60), watcher)
        .await
        .expect("watch did not stop")
        .unwrap()
        .unwrap();
    assert!(report.refused.is_empty(), "{report:?}");
    assert_eq!(report.reincarnated, Some(1), "{report:?}");
    assert_eq!(report.rewritten, 1, "{report:?}");

    sync(&anna).await;
    sync(&copy).await;
    sync(&nina).await;
    sync(&anna).await;
    assert_everywhere(&[&anna, &*copy, &nina], &[&before, &first, &second]);
    // Audited: the copy once, the new incarnation once, nothing refused.
    let copies = audit(&server, "copy-detected");
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(copies[0].0, device);
    assert_eq!(audit(&server, "reincarnated").len(), 1);
    assert!(audit(&server, "refuse").is_empty());
    let info = server.directory.devices().unwrap();
    let listed = info.iter().find(|d| d.id.as_str() == device).unwrap();
    assert!(listed.copy_detected_ms.is_some());
}
