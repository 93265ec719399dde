//! One device cannot hurt anyone else (issue 11), holes 7 and 8, against the real server on
//! real TLS sockets on 127.0.0.1 with real device runtimes and stores:
//!
//! - hole 7: a lost or revoked phone stops showing data: a revoked phone erases itself, the
//!   offline lease hides data once it runs out, `device.json` holds no secret, and a device
//!   enrolled by an older build has its secret moved into the store;
//! - hole 8: enrollment pins the server's key (SPKI SHA-256), never only its certificate: a
//!   renewal with the same key keeps working, another key is refused, and enrolling without a
//!   pin needs explicit trust on first use.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nara_client::care::{self, Clock};
use nara_client::{
    ClientError, Credential, Device, Dialer, EnrollRequest, EnrollmentLink, ServerPin, Status,
    SyncOptions, Transport,
};
use nara_tests::net::TestServer;
use nara_tests::{now_ms, patient};
use server::directory::Directory;
use sync_core::store::{EncryptionKey, SqliteStore};
use sync_core::{Role, Timestamp, UserId};

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

async fn setup() -> TestServer {
    let server = TestServer::start().await;
    let d = &server.directory;
    d.add_org("norr", "Hemtjänst Norr").unwrap();
    d.add_user(&uid("anna"), "Anna", Role::Carer, "norr")
        .unwrap();
    d.add_user(&uid("bo"), "Bo", Role::Carer, "norr").unwrap();
    d.add_patient(&patient("p1"), "p1").unwrap();
    for u in ["anna", "bo"] {
        d.assign(&uid(u), &patient("p1")).unwrap();
    }
    server.state.refresh().unwrap();
    server
}

fn clock_at(now: Timestamp) -> Clock {
    Clock::new(now, "2026-11-24").unwrap()
}

/// Enrolls `user` in `home` with the enrollment string the admin command prints.
async fn enroll(server: &TestServer, home: &Path, user: &str, options: SyncOptions) -> Device {
    let request = EnrollRequest::from_link(&server.enrollment_string(user)).unwrap();
    Device::enroll_with(home, &request, options)
        .await
        .unwrap()
        .0
}

/// Connections to `addr` instead of the enrolled address (TLS and the pin still apply).
fn dial(addr: std::net::SocketAddr) -> Dialer {
    Arc::new(move || {
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            Ok(Box::new(tcp) as Box<dyn Transport>)
        })
    })
}

fn store_files(home: &Path) -> Vec<String> {
    std::fs::read_dir(home)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("device."))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole7_a_revoked_phone_is_wiped() {
    let mut server = setup().await;
    let homes = tempfile::tempdir().unwrap();
    let key = EncryptionKey([7; 32]);
    let options = || SyncOptions {
        store_key: Some(key.clone()),
        ..SyncOptions::default()
    };

    // Anna's phone is revoked while it is connected: the server closes with `Revoked`.
    let anna_home = homes.path().join("anna");
    let anna = Arc::new(enroll(&server, &anna_home, "anna", options()).await);
    care::add_note(
        &anna,
        &patient("p1"),
        "Synced note.",
        &clock_at(nara_client::now()),
    )
    .unwrap();
    anna.sync_once().await.unwrap();
    care::add_note(
        &anna,
        &patient("p1"),
        "Never synced.",
        &clock_at(nara_client::now()),
    )
    .unwrap();
    assert!(!care::patients(&anna).unwrap().is_empty());
    let watching = anna.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn(async move {
        watching
            .watch(async move {
                let _ = stopped.await;
            })
            .await
    });
    tokio::time::timeout(Duration::from_secs(30), async {
        while anna.pending_count().unwrap() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the watching phone never uploaded its note");
    care::add_note(
        &anna,
        &patient("p1"),
        "Written just before.",
        &clock_at(nara_client::now()),
    )
    .ok();
    server.directory.revoke(&anna.enrollment().device).unwrap();
    server.state.refresh().unwrap();
    let result = tokio::time::timeout(Duration::from_secs(30), watcher)
        .await
        .expect("watch did not stop after the revocation")
        .unwrap();
    drop(stop);
    assert!(matches!(result, Err(ClientError::Wiped(_))), "{result:?}");
    assert!(matches!(anna.status(), Status::Wiped { .. }));
    assert!(anna.is_wiped());
    // Nothing of the store or the credential is left on disk; only the note of why.
    assert!(
        store_files(&anna_home).is_empty(),
        "{:?}",
        store_files(&anna_home)
    );
    assert!(anna_home.join("wiped.json").exists());
    // Nothing is shown any more, and the device does not connect again.
    let shown = care::overview(&anna, &patient("p1"), &clock_at(nara_client::now()), 0);
    assert!(matches!(shown, Err(ClientError::Wiped(_))), "{shown:?}");
    assert!(matches!(care::patients(&anna), Err(ClientError::Wiped(_))));
    assert!(anna.with_repo(|repo| repo.document_ids().unwrap().is_empty()));
    assert!(matches!(anna.sync_once().await, Err(ClientError::Wiped(_))));
    let reopened = Device::open_with(&anna_home, options());
    assert!(
        matches!(reopened, Err(ClientError::Wiped(_))),
        "{reopened:?}"
    );

    // Bo's phone is revoked while it is offline: its next connection is refused (401), and
    // it erases itself as well, unsynced work included (by design).
    let bo_home = homes.path().join("bo");
    let bo = enroll(&server, &bo_home, "bo", options()).await;
    bo.sync_once().await.unwrap();
    care::add_note(
        &bo,
        &patient("p1"),
        "Offline note.",
        &clock_at(nara_client::now()),
    )
    .unwrap();
    server.directory.revoke(&bo.enrollment().device).unwrap();
    server.state.refresh().unwrap();
    let err = bo.sync_once().await.unwrap_err();
    assert!(matches!(err, ClientError::Wiped(_)), "{err}");
    assert!(matches!(bo.status(), Status::Wiped { .. }));
    assert!(store_files(&bo_home).is_empty());
    // What the server held before is kept.
    assert!(
        server
            .directory
            .is_revoked(&bo.enrollment().device)
            .unwrap()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole7_the_lease_blocks_reads_after_it_expires() {
    let mut server = setup().await;
    let homes = tempfile::tempdir().unwrap();
    // Default options: the 72-hour lease is on.
    let anna = enroll(
        &server,
        &homes.path().join("anna"),
        "anna",
        SyncOptions::default(),
    )
    .await;
    assert_eq!(anna.offline_lease(), Some(Duration::from_secs(72 * 3600)));
    care::add_note(
        &anna,
        &patient("p1"),
        "A note.",
        &clock_at(nara_client::now()),
    )
    .unwrap();
    anna.sync_once().await.unwrap();
    let last = anna.last_in_sync().unwrap().unwrap();
    let hours = |h: i64| Timestamp(last.0 + h * 3_600_000);

    care::overview(&anna, &patient("p1"), &clock_at(hours(71)), 0).unwrap();
    anna.check_lease(hours(72)).unwrap();
    let expired = care::overview(&anna, &patient("p1"), &clock_at(hours(73)), 0);
    assert!(
        matches!(expired, Err(ClientError::LeaseExpired { .. })),
        "{expired:?}"
    );
    assert!(matches!(
        anna.check_lease(hours(73)),
        Err(ClientError::LeaseExpired { .. })
    ));
    // Writing still works (and is uploaded at the next sync), which renews the lease.
    care::add_note(
        &anna,
        &patient("p1"),
        "Written later.",
        &clock_at(hours(73)),
    )
    .unwrap();
    // A shorter lease, as an app sets it.
    anna.set_offline_lease(Some(Duration::from_secs(3600)));
    assert!(anna.check_lease(hours(2)).is_err());
    anna.set_offline_lease(Some(Duration::from_secs(72 * 3600)));
    anna.sync_once().await.unwrap();
    let renewed = anna.last_in_sync().unwrap().unwrap();
    anna.check_lease(Timestamp(renewed.0 + 71 * 3_600_000))
        .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole7_device_json_holds_no_secret() {
    let mut server = setup().await;
    let homes = tempfile::tempdir().unwrap();
    let home = homes.path().join("anna");
    let key = EncryptionKey([9; 32]);
    let options = SyncOptions {
        store_key: Some(key.clone()),
        ..SyncOptions::default()
    };
    let anna = enroll(&server, &home, "anna", options).await;
    anna.sync_once().await.unwrap();
    drop(anna);

    let json = std::fs::read_to_string(home.join("device.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(value.get("secret").is_none(), "{json}");
    assert_eq!(value["pin"]["kind"], "spki");
    // The credential is in the encrypted store, and in clear nowhere.
    let store = SqliteStore::open_encrypted(home.join("device.db"), &key).unwrap();
    let credential = Credential::load(&store).unwrap().unwrap();
    drop(store);
    assert!(credential.secret.len() >= 32);
    assert!(!json.contains(&credential.secret));
    for name in store_files(&home) {
        let bytes = std::fs::read(home.join(&name)).unwrap();
        let clear = String::from_utf8_lossy(&bytes);
        assert!(!clear.contains(&credential.secret), "{name}");
        assert!(!clear.contains("SQLite format 3"), "{name}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole7_an_old_device_json_is_migrated() {
    let mut server = setup().await;
    let homes = tempfile::tempdir().unwrap();
    let home = homes.path().join("anna");
    // What an older build wrote: the secret in device.json, the leaf certificate pinned, and
    // no credential in the store.
    let code = server.directory.enroll(&uid("anna"), now_ms()).unwrap();
    let credential = server.directory.redeem(&code, now_ms()).unwrap();
    nara_client::config::create_home(&home).unwrap();
    let old = serde_json::json!({
        "server": format!("https://127.0.0.1:{}", server.addr.port()),
        "device": credential.device,
        "secret": credential.secret,
        "user": "anna",
        "role": "carer",
        "fingerprint": server.fingerprint,
    });
    std::fs::write(home.join("device.json"), old.to_string()).unwrap();

    let anna = Device::open(&home).unwrap();
    let json = std::fs::read_to_string(home.join("device.json")).unwrap();
    assert!(
        !json.contains("secret") && !json.contains(&credential.secret),
        "{json}"
    );
    assert!(
        matches!(anna.enrollment().pin, ServerPin::Certificate { .. }),
        "{:?}",
        anna.enrollment().pin
    );
    // The moved credential works, and the first connection pins the key instead.
    care::add_note(
        &anna,
        &patient("p1"),
        "After the update.",
        &clock_at(nara_client::now()),
    )
    .unwrap();
    let report = anna.sync_once().await.unwrap();
    assert_eq!(report.uploaded, 1);
    drop(anna);
    let reopened = Device::open(&home).unwrap();
    assert_eq!(
        reopened.enrollment().pin,
        ServerPin::Spki {
            sha256: server.pin.clone()
        }
    );
    let store = SqliteStore::open(home.join("device.db")).unwrap();
    let stored = Credential::load(&store).unwrap().unwrap();
    assert_eq!(stored.secret, credential.secret);
    drop(store);
    reopened.sync_once().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole8_the_pin_survives_a_renewal_with_the_same_key() {
    let server = setup().await;
    let homes = tempfile::tempdir().unwrap();
    let home = homes.path().join("anna");
    let anna = enroll(&server, &home, "anna", SyncOptions::default()).await;
    care::add_note(
        &anna,
        &patient("p1"),
        "Before.",
        &clock_at(nara_client::now()),
    )
    .unwrap();
    anna.sync_once().await.unwrap();
    drop(anna);
    let (old_fingerprint, pin) = (server.fingerprint.clone(), server.pin.clone());

    // The certificate is renewed on the same key, and the server restarted with it.
    server::tls::renew_dev_cert(server.data.path()).unwrap();
    let mut server = server.restart().await;
    assert_ne!(server.fingerprint, old_fingerprint);
    assert_eq!(server.pin, pin);
    let anna = Device::open(&home).unwrap().with_dialer(dial(server.addr));
    care::add_note(
        &anna,
        &patient("p1"),
        "After.",
        &clock_at(nara_client::now()),
    )
    .unwrap();
    let report = anna.sync_once().await.unwrap();
    assert_eq!(report.uploaded, 1);
    assert_eq!(anna.pending_count().unwrap(), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole8_a_different_key_is_refused() {
    let mut server = setup().await;
    let mut impostor = setup().await;
    assert_ne!(server.pin, impostor.pin);
    let homes = tempfile::tempdir().unwrap();
    let home = homes.path().join("anna");
    let anna = enroll(&server, &home, "anna", SyncOptions::default()).await;
    anna.sync_once().await.unwrap();
    care::add_note(
        &anna,
        &patient("p1"),
        "Not for them.",
        &clock_at(nara_client::now()),
    )
    .unwrap();
    drop(anna);

    // The enrolled phone, led to a server with another key, refuses it and sends nothing.
    let anna = Device::open(&home)
        .unwrap()
        .with_dialer(dial(impostor.addr));
    let err = anna.sync_once().await.unwrap_err();
    match &err {
        ClientError::ServerKeyMismatch { seen, pinned, .. } => {
            assert_eq!(seen, &impostor.pin);
            assert!(pinned.contains(&server.pin), "{pinned}");
        }
        other => panic!("expected a key mismatch, got {other}"),
    }
    assert!(err.to_string().contains("different public key"), "{err}");
    assert_eq!(anna.pending_count().unwrap(), 1);
    assert!(err.is_permanent());

    // Enrolling with one server's pin at the other's address is refused, the code unspent.
    let mut link = EnrollmentLink::parse(&impostor.enrollment_string("anna")).unwrap();
    link.pin = Some(server.pin.clone());
    let other = homes.path().join("other");
    let request = EnrollRequest::from_link(&link.to_string()).unwrap();
    let err = Device::enroll(&other, &request).await.unwrap_err();
    assert!(
        matches!(err, ClientError::ServerKeyMismatch { .. }),
        "{err}"
    );
    assert!(!other.join("device.json").exists());
    link.pin = Some(impostor.pin.clone());
    let request = EnrollRequest::from_link(&link.to_string()).unwrap();
    Device::enroll(&other, &request).await.unwrap();
    impostor.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole8_no_pin_and_no_explicit_trust_on_first_use_is_refused() {
    let mut server = setup().await;
    let homes = tempfile::tempdir().unwrap();
    let home = homes.path().join("anna");
    let mut link = EnrollmentLink::parse(&server.enrollment_string("anna")).unwrap();
    link.pin = None;
    let mut request = EnrollRequest::from_link(&link.to_string()).unwrap();
    let err = Device::enroll(&home, &request).await.unwrap_err();
    assert!(matches!(err, ClientError::PinRequired), "{err}");
    assert!(
        err.to_string().contains("--insecure-trust-first-use"),
        "{err}"
    );
    assert!(!home.exists() || store_files(&home).is_empty());

    // Asked for explicitly, the key seen is pinned (the code was not spent by the refusal).
    request.insecure_trust_first_use = true;
    let (anna, enrolled) = Device::enroll(&home, &request).await.unwrap();
    assert!(enrolled.trusted_on_first_use);
    assert_eq!(
        anna.enrollment().pin,
        ServerPin::Spki {
            sha256: server.pin.clone()
        }
    );
    anna.sync_once().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole8_the_enrollment_string_round_trips() {
    let mut server = setup().await;
    let printed = server.enrollment_string("anna");
    let link = EnrollmentLink::parse(&printed).unwrap();
    assert_eq!(link.to_string(), printed);
    assert_eq!(link.pin.as_deref(), Some(server.pin.as_str()));
    assert_eq!(link.server.port, server.addr.port());
    assert_eq!(link.server.host, "127.0.0.1");
    // The client computes the same pin from the certificate the server presents.
    let cert = std::fs::read_to_string(server.data.path().join("dev-cert.pem")).unwrap();
    let der = nara_client::pin::ca_certificates(&cert).unwrap();
    assert_eq!(
        nara_client::pin::spki_pin(der[0].as_ref()).unwrap(),
        server.pin
    );
    // The string is all a phone needs.
    let homes = tempfile::tempdir().unwrap();
    let request = EnrollRequest::from_link(&printed).unwrap();
    let (anna, enrolled) = Device::enroll(&homes.path().join("anna"), &request)
        .await
        .unwrap();
    assert!(!enrolled.trusted_on_first_use);
    assert_eq!(enrolled.pin, format!("spki-sha256:{}", server.pin));
    anna.sync_once().await.unwrap();
    server.stop().await;
}
