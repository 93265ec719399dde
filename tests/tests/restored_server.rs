//! Issue 10, "nothing lost when state goes backwards", for the server: a server put back to an
//! earlier state (its data directory copied back while stopped, keeping the feed's epoch, or
//! `nara-server admin restore`, which gives a new one), through the real server over TLS. Every
//! device recovers once: what the server lost comes back from the devices that hold it (their
//! own changes, and others' that their authors' signatures vouch for), what was written since
//! reaches them, and the audit log holds one `recovery` record per device, never one per
//! document.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use nara_tests::hostile::{audit_rows, journal, note, quiet, uid};
use nara_tests::net::{TestDevice, TestServer};
use nara_tests::*;
use server::Limits;
use server::directory::Directory;
use sync_core::Role;
use sync_core::protocol::DeviceSession;
use sync_core::protocol::wire::ServerMessage;

/// Carers anna, bo, cy and dag, all caring for p1.
fn carers_of_p1(server: &TestServer) {
    let d = &server.directory;
    d.add_org("norr", "Hemtjänst Norr").unwrap();
    d.add_patient(&patient("p1"), "p1").unwrap();
    for u in ["anna", "bo", "cy", "dag"] {
        d.add_user(&uid(u), u, Role::Carer, "norr").unwrap();
        d.assign(&uid(u), &patient("p1")).unwrap();
    }
    server.state.refresh().unwrap();
}

/// Carers anna, bo and cy, all caring for p1, each with an enrolled phone.
async fn team() -> (TestServer, TestDevice, TestDevice, TestDevice) {
    let server = TestServer::start().await;
    carers_of_p1(&server);
    let anna = TestDevice::enroll(&server, "anna").await;
    let bo = TestDevice::enroll(&server, "bo").await;
    let cy = TestDevice::enroll(&server, "cy").await;
    (server, anna, bo, cy)
}

/// Stops the server; its data directory stays. Waits (up to 10 s) until the last connection to
/// its stores has closed (SQLite removes the write-ahead log then), as an operator copying a
/// stopped server's files would: connections that were ending may still hold the stores for a
/// moment after the listener stopped.
async fn stopped(mut server: TestServer) -> tempfile::TempDir {
    server.stop().await;
    let data = std::mem::replace(&mut server.data, tempfile::tempdir().unwrap());
    drop(server);
    for _ in 0..100 {
        let open = std::fs::read_dir(data.path())
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().ends_with("-wal"));
        if !open {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    data
}

/// Copies a directory tree; a file that vanishes during the copy (a log removed as its last
/// connection closes) starts the copy over.
fn copy_dir(from: &Path, to: &Path) {
    for _ in 0..50 {
        match try_copy_dir(from, to) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = std::fs::remove_dir_all(to);
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => panic!("copying {}: {e}", from.display()),
        }
    }
    panic!("copying {}: files kept vanishing", from.display());
}

fn try_copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            try_copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Empties `data` and puts the copy back.
fn put_back(copy: &Path, data: &Path) {
    for entry in std::fs::read_dir(data).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            std::fs::remove_dir_all(entry.path()).unwrap();
        } else {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
    copy_dir(copy, data);
}

/// How many changes p1's journal holds on a device (its genesis and one per note): a note
/// stored twice (written again, or a copy under another hash) would show here.
fn journal_changes(device: &mut TestDevice) -> usize {
    device
        .repo
        .get(&journal("p1"))
        .unwrap()
        .changes_since(&[])
        .len()
}

/// The notes of p1's journal on a device, sorted.
fn notes(device: &mut TestDevice) -> Vec<String> {
    let mut ids: Vec<String> = device
        .repo
        .get(&journal("p1"))
        .unwrap()
        .events()
        .keys()
        .map(|k| k.to_string())
        .collect();
    ids.sort();
    ids
}

fn ids(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// `action` records about `device` in the audit log.
fn records(server: &TestServer, action: &str, device: &TestDevice) -> Vec<String> {
    let device = device.author.device.to_string();
    audit_rows(server)
        .into_iter()
        .filter(|r| r.action == action && r.device.as_deref() == Some(device.as_str()))
        .map(|r| r.detail)
        .collect()
}

/// Syncs and tells whether the server asked the device to recover.
async fn sync_recording(device: &mut TestDevice, server: &TestServer) -> bool {
    device.record = true;
    device.received.clear();
    quiet(device.sync(server).await);
    device.record = false;
    device
        .received
        .iter()
        .any(|m| matches!(m, ServerMessage::Recover { .. }))
}

/// The data directory copied back while stopped (the same feed epoch, a shorter feed). Bo's
/// cursor was above the restored head; cy, who synced at the backup, writes first, so the new
/// feed reaches past bo's cursor with other notes: bo's proof shows it saw another history, the
/// server moves to a new epoch (audited once), and everyone recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_server_copied_back_notices_a_reused_feed_and_loses_nothing() {
    let (server, mut anna, mut bo, mut cy) = team().await;
    note(&mut anna, "p1", "n1", "Before the backup.");
    quiet(anna.sync(&server).await);
    quiet(bo.sync(&server).await);
    quiet(cy.sync(&server).await);
    let data = stopped(server).await;
    let backup = tempfile::tempdir().unwrap();
    copy_dir(data.path(), backup.path());
    let server = TestServer::start_in(data, Limits::default()).await;
    note(&mut anna, "p1", "n2", "Lost by the server.");
    note(&mut anna, "p1", "n3", "Lost by the server too.");
    quiet(anna.sync(&server).await);
    quiet(bo.sync(&server).await);
    assert_eq!(notes(&mut bo), ids(&["n1", "n2", "n3"]));
    // Put back.
    let data = stopped(server).await;
    put_back(backup.path(), data.path());
    let server = TestServer::start_in(data, Limits::default()).await;
    // cy's cursor is the restored head: it proves the same history, and cy writes first.
    for n in ["c1", "c2", "c3"] {
        note(&mut cy, "p1", n, "Written after the restore.");
    }
    assert!(
        !sync_recording(&mut cy, &server).await,
        "cy's cursor is good"
    );
    // bo's cursor is now at or below the head, but what it saw there differs.
    assert!(sync_recording(&mut bo, &server).await, "bo must recover");
    let diverged: Vec<_> = audit_rows(&server)
        .into_iter()
        .filter(|r| r.action == "feed-diverged")
        .collect();
    assert_eq!(diverged.len(), 1, "{diverged:?}");
    // bo holds anna's lost notes but may not hand them back (not its own): anna does.
    assert!(
        sync_recording(&mut anna, &server).await,
        "anna must recover"
    );
    assert!(
        sync_recording(&mut cy, &server).await,
        "the new epoch makes cy recover too"
    );
    quiet(bo.sync(&server).await);
    quiet(cy.sync(&server).await);
    let all = ids(&["n1", "n2", "n3", "c1", "c2", "c3"]);
    for device in [&mut anna, &mut bo, &mut cy] {
        assert_eq!(notes(device), all, "{}", device.author.user);
    }
    // A phone enrolled now gets everything from the server, once.
    let mut dag = TestDevice::enroll(&server, "dag").await;
    quiet(dag.sync(&server).await);
    assert_eq!(notes(&mut dag), all);
    for device in [&mut anna, &mut bo, &mut cy, &mut dag] {
        assert_eq!(
            journal_changes(device),
            1 + all.len(),
            "{}",
            device.author.user
        );
    }
    for device in [&anna, &bo, &cy] {
        let rec = records(&server, "recovery", device);
        assert_eq!(rec.len(), 1, "{}: {rec:?}", device.author.user);
    }
    // Nothing audited per document: disclosures in a recovery are one record per patient and
    // chunk.
    for device in [&anna, &bo, &cy] {
        assert!(records(&server, "disclose", device).len() <= 3);
    }
    // The next syncs are on the feed again.
    for device in [&mut anna, &mut bo, &mut cy] {
        assert!(!sync_recording(device, &server).await);
    }
}

/// `nara-server admin backup` while serving, then `admin restore` (a new epoch): a device whose
/// cursor is below the restored head (cy, which writes first after the restore), one above it
/// (bo, which holds anna's lost note), and the note's author (anna).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_server_from_a_backup_recovers_devices_above_and_below_its_head() {
    let (server, mut anna, mut bo, mut cy) = team().await;
    note(&mut anna, "p1", "n1", "Before the backup.");
    quiet(anna.sync(&server).await);
    quiet(bo.sync(&server).await);
    quiet(cy.sync(&server).await);
    let backup = tempfile::tempdir().unwrap();
    let to = backup.path().join("b");
    let admin = |command| server::admin_cli::AdminArgs {
        data: server.data.path().to_path_buf(),
        database: None,
        database_ca: None,
        json: true,
        command,
    };
    server::admin_cli::run_to(
        admin(server::admin_cli::AdminCommand::Backup { to: to.clone() }),
        &mut Vec::new(),
    )
    .unwrap();
    note(&mut anna, "p1", "n2", "Lost by the server.");
    quiet(anna.sync(&server).await);
    quiet(bo.sync(&server).await);
    let data = stopped(server).await;
    server::admin_cli::run_to(
        server::admin_cli::AdminArgs {
            data: data.path().to_path_buf(),
            database: None,
            database_ca: None,
            json: true,
            command: server::admin_cli::AdminCommand::Restore { from: to },
        },
        &mut Vec::new(),
    )
    .unwrap();
    let server = TestServer::start_in(data, Limits::default()).await;
    note(&mut cy, "p1", "c1", "Written first after the restore.");
    assert!(sync_recording(&mut cy, &server).await);
    assert!(sync_recording(&mut bo, &server).await);
    assert!(sync_recording(&mut anna, &server).await);
    quiet(cy.sync(&server).await);
    quiet(bo.sync(&server).await);
    let all = ids(&["n1", "n2", "c1"]);
    for device in [&mut anna, &mut bo, &mut cy] {
        assert_eq!(notes(device), all, "{}", device.author.user);
    }
    let mut dag = TestDevice::enroll(&server, "dag").await;
    quiet(dag.sync(&server).await);
    assert_eq!(notes(&mut dag), all);
    for device in [&mut anna, &mut bo, &mut cy, &mut dag] {
        assert_eq!(
            journal_changes(device),
            1 + all.len(),
            "{}",
            device.author.user
        );
    }
    for device in [&anna, &bo, &cy] {
        let rec = records(&server, "recovery", device);
        assert_eq!(rec.len(), 1, "{}: {rec:?}", device.author.user);
    }
    // Bo tried to hand back anna's note: refused (not its own, not vouched for), audited.
    let refused = records(&server, "refuse", &bo);
    assert!(
        refused.iter().any(|d| d.starts_with("ForeignAuthor")),
        "{refused:?}"
    );
    assert!(
        audit_rows(&server)
            .iter()
            .all(|r| r.action != "feed-diverged"),
        "a restore gives a new epoch already"
    );
}

/// A recovery cut mid-way (the phone's link drops after a few messages) resumes at the next
/// sync and ends the same: one recovery record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_server_a_cut_recovery_resumes() {
    let (server, mut anna, _bo, _cy) = team().await;
    for i in 0..3 {
        note(&mut anna, "p1", &format!("n{i}"), "Before the restore.");
    }
    quiet(anna.sync(&server).await);
    let data = stopped(server).await;
    let backup = tempfile::tempdir().unwrap();
    copy_dir(data.path(), backup.path());
    let server = TestServer::start_in(data, Limits::default()).await;
    for i in 3..6 {
        note(&mut anna, "p1", &format!("n{i}"), "Lost by the server.");
    }
    quiet(anna.sync(&server).await);
    let data = stopped(server).await;
    put_back(backup.path(), data.path());
    let server = TestServer::start_in(data, Limits::default()).await;
    // Cut once the hello's upload is acknowledged: the recovery has started (its first chunk
    // of heads is on its way), nothing of it is answered yet.
    let end = anna
        .sync_until(&server, |events| {
            events.iter().any(|e| {
                matches!(
                    e,
                    sync_core::protocol::DeviceEvent::UploadAcknowledged { .. }
                )
            })
        })
        .await;
    drop(end);
    assert!(records(&server, "recovery", &anna).is_empty());
    assert!(sync_recording(&mut anna, &server).await, "resumed");
    let mut dag = TestDevice::enroll(&server, "dag").await;
    quiet(dag.sync(&server).await);
    let all: Vec<String> = (0..6).map(|i| format!("n{i}")).collect();
    let mut all = all;
    all.sort();
    assert_eq!(notes(&mut dag), all);
    assert_eq!(records(&server, "recovery", &anna).len(), 1);
}

/// Signed changes (docs/protocol.md, "Signed changes"): anna's notes that the restored server
/// lost, and that anna's phone will never bring back (it is lost), come back from bo's phone,
/// which holds them with anna's signature as the server relayed it. A phone that does not sign
/// (cy) cannot hand back another's change: it is refused, and audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_server_takes_back_anothers_signed_notes_from_any_phone() {
    let server = TestServer::start().await;
    carers_of_p1(&server);
    let mut anna = TestDevice::enroll_signed(&server, "anna", [1; 32]).await;
    let mut bo = TestDevice::enroll_signed(&server, "bo", [2; 32]).await;
    let mut cy = TestDevice::enroll(&server, "cy").await;
    note(&mut anna, "p1", "n1", "Before the backup.");
    quiet(anna.sync(&server).await);
    quiet(bo.sync(&server).await);
    quiet(cy.sync(&server).await);
    let data = stopped(server).await;
    let backup = tempfile::tempdir().unwrap();
    copy_dir(data.path(), backup.path());
    let server = TestServer::start_in(data, Limits::default()).await;
    note(&mut anna, "p1", "n2", "Lost by the server.");
    note(&mut anna, "p1", "n3", "Lost by the server too.");
    quiet(anna.sync(&server).await);
    quiet(bo.sync(&server).await);
    quiet(cy.sync(&server).await);
    for device in [&mut bo, &mut cy] {
        assert_eq!(notes(device), ids(&["n1", "n2", "n3"]));
    }
    // Put back; anna's phone is gone for good.
    let data = stopped(server).await;
    put_back(backup.path(), data.path());
    let server = TestServer::start_in(data, Limits::default()).await;
    drop(anna);
    // cy recovers first: it holds anna's notes but cannot vouch for them.
    assert!(sync_recording(&mut cy, &server).await, "cy must recover");
    let refused = records(&server, "refuse", &cy);
    assert!(
        !refused.is_empty(),
        "cy's unsigned hand-back of anna's notes is refused and audited"
    );
    let mut dag = TestDevice::enroll(&server, "dag").await;
    quiet(dag.sync(&server).await);
    assert_eq!(notes(&mut dag), ids(&["n1"]), "not from an unsigned relay");
    // bo recovers: anna's signature, relayed to bo with her notes, vouches for them.
    assert!(sync_recording(&mut bo, &server).await, "bo must recover");
    assert!(
        records(&server, "refuse", &bo).is_empty(),
        "{:?}",
        records(&server, "refuse", &bo)
    );
    assert!(
        !records(&server, "accept", &bo).is_empty(),
        "the notes are audited as accepted from bo's connection"
    );
    quiet(dag.sync(&server).await);
    quiet(cy.sync(&server).await);
    let all = ids(&["n1", "n2", "n3"]);
    for device in [&mut bo, &mut cy, &mut dag] {
        assert_eq!(notes(device), all, "{}", device.author.user);
        assert_eq!(
            journal_changes(device),
            1 + all.len(),
            "{}",
            device.author.user
        );
    }
    assert_eq!(records(&server, "recovery", &bo).len(), 1);
}

/// The texts of p1's "what matters to me" entries on a device, sorted.
fn wishes(device: &mut TestDevice) -> Vec<String> {
    let plan = device
        .repo
        .get(&sync_core::DocumentId::care_plan(&patient("p1")))
        .unwrap();
    let mut texts: Vec<String> = sync_core::model::person::what_matters(plan)
        .into_iter()
        .map(|e| e.text)
        .collect();
    texts.sort();
    texts
}

/// The person adds a wish in the browser as their web device (`web-p1`).
async fn add_wish(server: &TestServer, form: &str) {
    let cookie = server.web_sign_in(&server.login_code("p1", true)).await;
    let status = server
        .web_post(
            &cookie,
            "/app/person/p1",
            "/app/person/p1/what-matters",
            form,
        )
        .await;
    assert_eq!(status, 303, "the wish is stored and the page shown again");
}

/// Signed changes, a person's own: a wish the person wrote in the browser after the backup,
/// which the restored server lost and the person's web device will never hand back (it never
/// connects), comes back from bo's phone, which holds it with the signature of the person's web
/// device as the server relayed it (the key was made at the person's first wish, before the
/// backup, so the restored directory holds it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_server_takes_back_a_persons_signed_wish_from_a_carers_phone() {
    let server = TestServer::start().await;
    carers_of_p1(&server);
    let mut bo = TestDevice::enroll_signed(&server, "bo", [2; 32]).await;
    add_wish(&server, "text=Kaffe+p%C3%A5+altanen.").await;
    quiet(bo.sync(&server).await);
    let data = stopped(server).await;
    let backup = tempfile::tempdir().unwrap();
    copy_dir(data.path(), backup.path());
    let server = TestServer::start_in(data, Limits::default()).await;
    add_wish(&server, "text=Lost+by+the+server.").await;
    quiet(bo.sync(&server).await);
    let both = ids(&["Kaffe på altanen.", "Lost by the server."]);
    assert_eq!(wishes(&mut bo), both);
    // Put back.
    let data = stopped(server).await;
    put_back(backup.path(), data.path());
    let server = TestServer::start_in(data, Limits::default()).await;
    // bo recovers: the signature of web-p1, relayed to bo with the wish, vouches for it.
    assert!(sync_recording(&mut bo, &server).await, "bo must recover");
    assert!(
        records(&server, "refuse", &bo).is_empty(),
        "{:?}",
        records(&server, "refuse", &bo)
    );
    let mut dag = TestDevice::enroll(&server, "dag").await;
    quiet(dag.sync(&server).await);
    assert_eq!(wishes(&mut dag), both, "the lost wish came back from bo");
    assert_eq!(records(&server, "recovery", &bo).len(), 1);
}

/// Orphans (docs/protocol.md, "Incarnations"): anna's phone is copied, and the copy's note `c1`
/// reaches bo's phone before the server is put back to a backup from before it. Anna's first
/// phone, under the same incarnation, then writes `a1` under the same sequence number, and the
/// restored server stores it. Bo's phone, recovering, hands `c1` back with the copy's signature:
/// the server cannot store it beside `a1`, refuses it (audited) and keeps it for anna's device;
/// bo's phone takes it out and receives `a1`; anna's phone writes `c1`'s record again, and every
/// phone ends with both notes, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_server_gets_a_copys_lost_note_written_again_by_its_author() {
    let server = TestServer::start().await;
    carers_of_p1(&server);
    let mut anna = TestDevice::enroll_signed(&server, "anna", [1; 32]).await;
    let mut bo = TestDevice::enroll_signed(&server, "bo", [2; 32]).await;
    note(&mut bo, "p1", "b1", "Before the backup.");
    quiet(bo.sync(&server).await);
    quiet(anna.sync(&server).await);
    let data = stopped(server).await;
    let backup = tempfile::tempdir().unwrap();
    copy_dir(data.path(), backup.path());
    let server = TestServer::start_in(data, Limits::default()).await;
    let mut copy = anna.copied();
    note(&mut copy, "p1", "c1", "Written on the copy.");
    quiet(copy.sync(&server).await);
    quiet(bo.sync(&server).await);
    assert_eq!(notes(&mut bo), ids(&["b1", "c1"]));

    // Put back; anna's first phone writes under the numbers `c1` used.
    let data = stopped(server).await;
    put_back(backup.path(), data.path());
    let server = TestServer::start_in(data, Limits::default()).await;
    note(&mut anna, "p1", "a1", "Written on the first phone.");
    quiet(anna.sync(&server).await);

    // Bo's phone recovers: `c1` is refused (audited), taken out, and `a1` comes in its place.
    assert!(sync_recording(&mut bo, &server).await, "bo must recover");
    let refused = records(&server, "refuse", &bo);
    assert!(
        refused.len() == 1 && refused[0].starts_with("Invalid"),
        "{refused:?}"
    );
    for _ in 0..3 {
        quiet(bo.sync(&server).await);
    }
    assert!(
        DeviceSession::quarantined(&bo.repo).unwrap().is_empty(),
        "nothing stays quarantined on bo's phone"
    );
    // Anna's phone is given `c1` back and writes its record again; the copy goes on under a
    // new incarnation without writing it a second time.
    for _ in 0..2 {
        for device in [&mut anna, &mut copy, &mut bo] {
            quiet(device.sync(&server).await);
        }
    }
    let all = ids(&["b1", "a1", "c1"]);
    for device in [&mut anna, &mut copy, &mut bo] {
        assert_eq!(notes(device), all, "{:?}", device.author);
        assert_eq!(
            journal_changes(device),
            1 + all.len(),
            "{:?}",
            device.author
        );
    }
}

/// Found with the PostgreSQL failover test (issue 12), the same on SQLite: a phone speaking
/// version 1 (no feed proof, so no recovery) whose server moved to a new epoch after going back
/// (`admin new-epoch` here; a restore or a PostgreSQL failover alike) gets `Resync`, and
/// Automerge's sync reconciles what it holds. It holds anna's n2, which the server lost and
/// takes only from anna, its own b1 (on n1) and b2, built on n2. Automerge sent these as
/// changes concatenated in one entry, which the server loaded as a document and refused
/// ("change's deps should already be in the document"), closing as `Malformed`, and the next
/// connection was on the new feed: b1 and b2 never went up. Now b1 goes up in the fallback,
/// and b2, refused until n2 is back, is kept unproven and goes up once anna recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_server_a_version_1_phone_hands_back_its_note_after_a_new_epoch() {
    let (server, mut anna, mut bo, mut cy) = team().await;
    bo.session = DeviceSession::new(sync_core::protocol::DeviceConfig {
        tell_clock: false,
        ..Default::default()
    });
    note(&mut anna, "p1", "n1", "Before the backup.");
    quiet(anna.sync(&server).await);
    quiet(bo.sync(&server).await);
    quiet(cy.sync(&server).await);
    let data = stopped(server).await;
    let backup = tempfile::tempdir().unwrap();
    copy_dir(data.path(), backup.path());
    let server = TestServer::start_in(data, Limits::default()).await;
    note(&mut anna, "p1", "n2", "After the backup, by anna.");
    quiet(anna.sync(&server).await);
    note(&mut bo, "p1", "b1", "After the backup, by bo.");
    quiet(bo.sync(&server).await);
    note(
        &mut bo,
        "p1",
        "b2",
        "After the backup, by bo, having read n2.",
    );
    quiet(bo.sync(&server).await);
    let data = stopped(server).await;
    put_back(backup.path(), data.path());
    server::admin_cli::run_to(
        server::admin_cli::AdminArgs {
            data: data.path().to_path_buf(),
            database: None,
            database_ca: None,
            json: true,
            command: server::admin_cli::AdminCommand::NewEpoch,
        },
        &mut Vec::new(),
    )
    .unwrap();
    let server = TestServer::start_in(data, Limits::default()).await;
    for n in ["c1", "c2", "c3"] {
        note(&mut cy, "p1", n, "Written after the restore.");
    }
    assert!(sync_recording(&mut cy, &server).await);
    // Resync: Automerge's sync, to the end (no longer closed as Malformed).
    bo.record = true;
    bo.received.clear();
    quiet(bo.sync(&server).await);
    bo.record = false;
    assert!(
        bo.received
            .iter()
            .any(|m| matches!(m, ServerMessage::Resync { .. })),
        "bo is told to resync"
    );
    assert!(
        records(&server, "disconnect", &bo)
            .iter()
            .all(|d| !d.contains("Malformed")),
        "{:?}",
        records(&server, "disconnect", &bo)
    );
    let mut dag = TestDevice::enroll(&server, "dag").await;
    quiet(dag.sync(&server).await);
    assert_eq!(
        notes(&mut dag),
        ids(&["n1", "b1", "c1", "c2", "c3"]),
        "b1 went up in the fallback; n2 is not bo's to hand back, nor b2 without it"
    );
    assert!(sync_recording(&mut anna, &server).await);
    quiet(bo.sync(&server).await);
    quiet(cy.sync(&server).await);
    quiet(dag.sync(&server).await);
    let all = ids(&["n1", "n2", "b1", "b2", "c1", "c2", "c3"]);
    assert_eq!(notes(&mut bo), all);
    assert_eq!(notes(&mut cy), all, "bo's notes reached the server");
    for device in [&mut anna, &mut bo, &mut cy, &mut dag] {
        quiet(device.sync(&server).await);
        assert_eq!(notes(device), all, "{}", device.author.user);
        assert_eq!(
            journal_changes(device),
            1 + all.len(),
            "{}",
            device.author.user
        );
    }
}
