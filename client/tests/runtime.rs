//! The device runtime against a real `nara-server` on a real TLS socket: enrollment with and
//! without a pinned fingerprint, sync, watch mode and status, revocation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nara_client::care::{self, Clock};
use nara_client::{ClientError, Device, EnrollRequest, Enrollment, Status};
use nara_tests::care::has_note;
use nara_tests::net::TestServer;
use nara_tests::{now_ms, patient};
use server::directory::Directory;
use sync_core::protocol::DeviceEvent;
use sync_core::{DocumentId, Role, Timestamp, UserId};

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

async fn setup() -> TestServer {
    let server = TestServer::start().await;
    let d = &server.directory;
    d.add_org("norr", "Hemtjänst Norr").unwrap();
    d.add_user(&uid("anna"), "Anna", Role::Carer, "norr")
        .unwrap();
    d.add_user(&uid("nina"), "Nina", Role::Nurse, "norr")
        .unwrap();
    d.add_patient(&patient("p1"), "p1").unwrap();
    for u in ["anna", "nina"] {
        d.assign(&uid(u), &patient("p1")).unwrap();
    }
    server.state.refresh().unwrap();
    server
}

fn url(server: &TestServer) -> String {
    format!("https://localhost:{}", server.addr.port())
}

/// An enrollment with `code`, the server's key pinned by `pin`, or trusted on first use.
fn request(server: &TestServer, code: &str, pin: Option<&str>) -> EnrollRequest {
    EnrollRequest {
        server: url(server),
        code: code.to_owned(),
        pin: pin.map(str::to_owned),
        insecure_trust_first_use: pin.is_none(),
        ..EnrollRequest::default()
    }
}

/// Enrolls `user` in `home` with the server's key pinned.
async fn enroll(server: &TestServer, home: &Path, user: &str) -> Device {
    let code = server.directory.enroll(&uid(user), now_ms()).unwrap();
    let (device, enrolled) = Device::enroll(home, &request(server, &code, Some(&server.pin)))
        .await
        .unwrap();
    let role = server.directory.user(&uid(user)).unwrap().unwrap().role;
    if enrolled.role_from_server {
        assert_eq!(enrolled.role, role);
        return device;
    }
    // The server does not (yet) say the role at enrollment; set it as the app would have been
    // told it, so the nurse's changes carry the role the server knows.
    drop(device);
    let (mut e, _) = Enrollment::load(home).unwrap();
    e.role = role;
    e.save(home).unwrap();
    Device::open(home).unwrap()
}

fn clock() -> Clock {
    Clock::new(Timestamp(now_ms()), "2026-11-24").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_pins_the_certificate_and_keeps_the_credential_private() {
    let mut server = setup().await;
    let homes = tempfile::tempdir().unwrap();

    // Trust on first use (asked for): the key seen is pinned.
    let home = homes.path().join("anna");
    let code = server.directory.enroll(&uid("anna"), now_ms()).unwrap();
    let (device, enrolled) = Device::enroll(&home, &request(&server, &code, None))
        .await
        .unwrap();
    assert!(enrolled.trusted_on_first_use);
    assert_eq!(enrolled.pin, format!("spki-sha256:{}", server.pin));
    assert_eq!(
        device.enrollment().pin,
        nara_client::ServerPin::Spki {
            sha256: server.pin.clone()
        }
    );
    assert_eq!(enrolled.user, uid("anna"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.join("device.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The secret is not in device.json (it is in the store).
    let json = std::fs::read_to_string(home.join("device.json")).unwrap();
    assert!(!json.contains("secret"), "{json}");
    device.sync_once().await.unwrap();

    // A second enrollment into the same home is refused.
    let code = server.directory.enroll(&uid("anna"), now_ms()).unwrap();
    let err = Device::enroll(&home, &request(&server, &code, None))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::AlreadyEnrolled(_)), "{err}");

    // A wrong pinned key: the TLS handshake fails, the code is not spent.
    let other = homes.path().join("other");
    let code = server.directory.enroll(&uid("anna"), now_ms()).unwrap();
    let wrong = "A".repeat(43);
    let err = Device::enroll(&other, &request(&server, &code, Some(&wrong)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::ServerKeyMismatch { .. }),
        "{err}"
    );
    assert!(!other.join("device.json").exists());
    // ... and the same code then works with the right one.
    Device::enroll(&other, &request(&server, &code, Some(&server.pin)))
        .await
        .unwrap();

    // A used code is refused with the server's message.
    let err = Device::enroll(&homes.path().join("x"), &request(&server, &code, None))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Http { status: 400, message } if message.contains("code")),
        "{err}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_edits_sync_and_status_tells_what_waits() {
    let mut server = setup().await;
    let homes = tempfile::tempdir().unwrap();
    let anna = enroll(&server, &homes.path().join("anna"), "anna").await;
    let nina = enroll(&server, &homes.path().join("nina"), "nina").await;
    assert_eq!(anna.last_in_sync().unwrap(), None);

    care::add_note(&anna, &patient("p1"), "Slept well.", &clock()).unwrap();
    care::add_note(&anna, &patient("p1"), "Ate breakfast.", &clock()).unwrap();
    assert_eq!(anna.pending_count().unwrap(), 2);

    let report = anna.sync_once().await.unwrap();
    assert_eq!(report.uploaded, 2);
    assert_eq!(report.pending, 0);
    assert!(report.in_sync_at.is_some());
    assert_eq!(anna.last_in_sync().unwrap(), report.in_sync_at);
    assert_eq!(anna.pending_count().unwrap(), 0);

    let mut statuses = nina.status_changes();
    let report = nina.sync_once().await.unwrap();
    assert_eq!(report.received, 2);
    assert!(has_note(&nina, "Slept well.") && has_note(&nina, "Ate breakfast."));

    // Every status the sync went through is told, in order, even though it is over before
    // anyone looked (the latest value alone would show only the last, offline).
    assert!(matches!(
        nina.subscribe().borrow().clone(),
        Status::Offline { .. }
    ));
    let mut kinds: Vec<&str> = Vec::new();
    loop {
        let status = tokio::time::timeout(Duration::from_secs(5), statuses.next())
            .await
            .expect("a status change was not told")
            .unwrap();
        let kind = match status {
            Status::Offline { .. } => "offline",
            Status::Connecting => "connecting",
            Status::Syncing { .. } => "syncing",
            Status::InSync { .. } => "in-sync",
            other => panic!("unexpected status {other:?}"),
        };
        if kinds.last() != Some(&kind) {
            kinds.push(kind);
        }
        if kinds.len() > 1 && kind == "offline" {
            break;
        }
    }
    assert_eq!(
        kinds,
        ["offline", "connecting", "syncing", "in-sync", "offline"]
    );

    // Per document too: Anna's journal was in sync when her sync ended.
    let j = sync_core::DocumentId::journal(&patient("p1"), "2026-11".parse().unwrap());
    let journal_at = anna.last_in_sync_of(&j).unwrap();
    assert!(journal_at.is_some());
    assert_eq!(journal_at, anna.last_in_sync().unwrap());

    // The last-in-sync time survives a restart.
    let at = anna.last_in_sync().unwrap();
    drop(anna);
    let anna = Device::open(&homes.path().join("anna")).unwrap();
    assert_eq!(anna.last_in_sync().unwrap(), at);

    // With an offline lease of a day, the device shows patient data for a day after its last
    // sync, then no more until it syncs again; uploading still works.
    let options = nara_client::SyncOptions {
        offline_lease: Some(std::time::Duration::from_secs(24 * 3600)),
        ..nara_client::SyncOptions::default()
    };
    let leased = Device::open_with(&homes.path().join("anna"), options).unwrap();
    let last = leased.last_in_sync().unwrap().unwrap();
    assert!(
        leased
            .check_lease(sync_core::Timestamp(last.0 + 3_600_000))
            .is_ok()
    );
    let expired = leased.check_lease(sync_core::Timestamp(last.0 + 25 * 3_600_000));
    assert!(
        matches!(expired, Err(nara_client::ClientError::LeaseExpired { .. })),
        "{expired:?}"
    );
    let late =
        care::Clock::new(sync_core::Timestamp(last.0 + 25 * 3_600_000), "2026-11-25").unwrap();
    assert!(matches!(
        care::overview(&leased, &patient("p1"), &late, 0),
        Err(nara_client::ClientError::LeaseExpired { .. })
    ));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_uploads_soon_after_a_local_change_and_stops_when_revoked() {
    let mut server = setup().await;
    let homes = tempfile::tempdir().unwrap();
    let anna = Arc::new(enroll(&server, &homes.path().join("anna"), "anna").await);
    let nina = enroll(&server, &homes.path().join("nina"), "nina").await;

    let mut status = anna.subscribe();
    let mut events = anna.events();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let watcher = {
        let anna = anna.clone();
        tokio::spawn(async move {
            anna.watch(async {
                let _ = stopped.await;
            })
            .await
        })
    };
    // Connected and in sync (nothing to do yet).
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if matches!(*status.borrow_and_update(), Status::InSync { .. }) {
                break;
            }
            status.changed().await.unwrap();
        }
    })
    .await
    .expect("watch never got in sync");

    // A change made while watching goes up without another sync call.
    care::add_note(&anna, &patient("p1"), "Live note.", &clock()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        while anna.pending_count().unwrap() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the live change was never acknowledged");
    nina.sync_once().await.unwrap();
    assert!(has_note(&nina, "Live note."));

    // Changes from others arrive while watching.
    care::add_note(&nina, &patient("p1"), "From the nurse.", &clock()).unwrap();
    nina.sync_once().await.unwrap();
    let journal = DocumentId::journal(&patient("p1"), "2026-11".parse().unwrap());
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match events.recv().await.unwrap() {
                DeviceEvent::DocumentUpdated { doc } if doc == journal => break,
                _ => {}
            }
        }
    })
    .await
    .expect("the nurse's note never arrived");
    assert!(has_note(&anna, "From the nurse."));

    // Revoking the device ends watch with a permanent error, erases the device, and says so in
    // the status.
    server.directory.revoke(&anna.enrollment().device).unwrap();
    server.state.refresh().unwrap();
    let result = tokio::time::timeout(Duration::from_secs(30), watcher)
        .await
        .expect("watch did not stop after revocation")
        .unwrap();
    match result {
        Err(ClientError::Wiped(why)) => assert!(why.contains("revoked"), "{why}"),
        other => panic!("expected revocation, got {other:?}"),
    }
    assert!(matches!(anna.status(), Status::Wiped { .. }));
    drop(stop);
    // An erased device does not connect again.
    let err = anna.sync_once().await.unwrap_err();
    assert!(matches!(err, ClientError::Wiped(_)), "{err}");
    server.stop().await;
}
