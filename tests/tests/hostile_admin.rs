//! Issue 11: the admin API and the priority list cannot be turned against the service (real
//! server in process, real TLS sockets, real SQLite files).
//!
//! - hole 10: the admin API can have a listener of its own (`--admin-listen`), and then the
//!   device listener does not serve it; failed admin logins are limited per address and
//!   audited once per run; every admin read over HTTP is audited before it is answered, and
//!   not answered if it cannot be.
//! - hole 9 (priority): a `Hello` naming 10,000 priority patients is served, but only the
//!   people the device may read count, and at most `MAX_PRIORITY` of them.
//!
//! Each runs beside an honest pair of devices that keeps syncing and converges.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use nara_tests::hostile::*;
use nara_tests::net::{TestDevice, TestServer};
use nara_tests::*;
use server::audit::AuditLog;
use server::directory::Directory;
use sync_core::PatientId;
use sync_core::Role;
use sync_core::protocol::server::MAX_PRIORITY;
use sync_core::protocol::wire::{MAX_LIST, ServerMessage};

/// `world`, but with the admin API on a listener of its own.
async fn world_with_admin_listener() -> World {
    world_on(TestServer::start_with_admin(short()).await).await
}

fn count(server: &TestServer, action: &str, detail_has: &str) -> usize {
    audit_rows(server)
        .into_iter()
        .filter(|r| r.action == action && r.detail.contains(detail_has))
        .count()
}

/// With `--admin-listen`, the admin API answers on its own port only: the device port answers
/// 404 for every admin path (with or without the token), and the admin port serves nothing
/// else. Devices sync on their port meanwhile, and admin changes reach them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole10_the_admin_api_can_have_a_listener_of_its_own() {
    let World {
        server,
        mut nina,
        mut anna,
        bo,
    } = world_with_admin_listener().await;
    let admin = server.admin_addr.expect("an admin listener");
    assert_ne!(admin, server.addr);
    let token = server.admin_token.clone();
    let revoke = format!("/v1/admin/devices/{}/revoke", bo.author.device);
    with_honest_pair(&server, &mut nina, &mut anna, "admin-port", async {
        for (method, path, body) in [
            ("GET", "/v1/admin/devices", None),
            ("GET", "/v1/admin/audit/verify", None),
            ("GET", "/v1/admin/audit/export?patient=p1", None),
            ("POST", revoke.as_str(), None),
            (
                "POST",
                "/v1/admin/assignments",
                Some(r#"{"user":"bo","patient":"p2"}"#),
            ),
            ("POST", "/v1/admin/enrollments", Some(r#"{"user":"bo"}"#)),
        ] {
            for auth in [Some(token.as_str()), None] {
                let (status, body) = server.https(method, path, auth, body).await;
                assert_eq!(status, 404, "{method} {path} on the device port: {body}");
            }
        }
        assert!(!server.directory.is_revoked(&bo.author.device).unwrap());
        // The admin port: the admin API, and nothing of the devices'.
        let (status, body) = server
            .https_to(admin, "GET", "/v1/admin/devices", Some(&token), None)
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(bo.author.device.as_str()), "{body}");
        let (status, _) = server
            .https_to(admin, "POST", "/v1/enroll", None, Some(r#"{"code":"x"}"#))
            .await;
        assert_eq!(status, 404, "enrollment on the admin port");
        let (status, _) = server.https_to(admin, "GET", "/v1/sync", None, None).await;
        assert_eq!(status, 404, "the sync route on the admin port");
        let (status, _) = server
            .https_to(admin, "GET", "/v1/admin/devices", Some("wrong"), None)
            .await;
        assert_eq!(status, 401);
        let (status, body) = server
            .https_to(admin, "POST", &revoke, Some(&token), None)
            .await;
        assert_eq!(status, 200, "{body}");
    })
    .await;
    assert!(server.directory.is_revoked(&bo.author.device).unwrap());
    let mut bo = bo;
    assert!(
        matches!(
            bo.sync(&server).await,
            nara_tests::net::SyncEnd::Refused(401)
        ),
        "a device revoked on the admin port still syncs"
    );
    // The device port still serves its own routes.
    let (status, _) = server.https("GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
}

/// Failed admin logins (a wrong token, or none) from one address: refused with 429 once the
/// address used up its burst, and one audit record for the run instead of one per attempt.
/// Devices behind the same address keep syncing meanwhile (the limits are kept apart), and
/// the right token works again once the address has waited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole10_failed_admin_logins_are_limited_and_audited_once() {
    let World {
        server,
        mut nina,
        mut anna,
        ..
    } = world(short()).await;
    let before = count(&server, "auth-failed", "admin");
    let statuses = with_honest_pair(&server, &mut nina, &mut anna, "guessing", async {
        let mut statuses = Vec::new();
        // Until refused a few times (the burst is 20; a bound in case it never is).
        for i in 0..300 {
            if statuses.iter().filter(|s| **s == 429).count() >= 5 {
                break;
            }
            let auth = (i % 3 != 0).then(|| format!("guess-{i}"));
            let path = if i % 2 == 0 {
                "/v1/admin/devices"
            } else {
                "/v1/admin/audit/export?patient=p2"
            };
            let (status, body) = server.https("GET", path, auth.as_deref(), None).await;
            assert!(!body.contains("p2"), "{body}");
            statuses.push(status);
        }
        statuses
    })
    .await;
    assert!(statuses.contains(&401), "{statuses:?}");
    assert!(
        statuses.contains(&429),
        "failed admin logins never rate-limited: {statuses:?}"
    );
    assert!(statuses.iter().all(|s| *s == 401 || *s == 429));
    assert_eq!(
        count(&server, "auth-failed", "admin") - before,
        1,
        "one record for the run: {:?}",
        audit_rows(&server)
            .iter()
            .filter(|r| r.action == "auth-failed")
            .map(|r| &r.detail)
            .collect::<Vec<_>>()
    );
    // The right token, once the address has waited for its bucket to refill a little.
    let ok = tokio::time::timeout(PATIENCE, async {
        loop {
            let (status, _) = server
                .https("GET", "/v1/admin/devices", Some(&server.admin_token), None)
                .await;
            if status == 200 {
                return;
            }
            assert_eq!(status, 429);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "the admin was locked out for good");
    assert!(server.audit.verify().unwrap().ok);
}

/// Every admin read over HTTP (the device list, a person's audit export, the log's
/// verification) is recorded before it is answered, like the CLI's; with the audit store
/// failing, none is answered (503) and nothing of it leaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole10_admin_reads_over_http_are_audited_first() {
    let World {
        server,
        mut nina,
        mut anna,
        ..
    } = world(short()).await;
    let token = server.admin_token.clone();
    with_honest_pair(&server, &mut nina, &mut anna, "reads", async {
        let before = audit_rows(&server).len();
        let (status, body) = server
            .https("GET", "/v1/admin/devices", Some(&token), None)
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = server
            .https(
                "GET",
                "/v1/admin/audit/export?patient=p2",
                Some(&token),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = server
            .https("GET", "/v1/admin/audit/verify", Some(&token), None)
            .await;
        assert_eq!(status, 200, "{body}");
        let reads: Vec<Row> = audit_rows(&server)
            .into_iter()
            .skip(before)
            .filter(|r| r.action == "read" && r.device.is_none())
            .collect();
        assert!(
            reads
                .iter()
                .any(|r| r.detail.starts_with("device list (3)") && r.patient.is_none()),
            "{reads:?}"
        );
        assert!(
            reads.iter().any(|r| r.detail.starts_with("audit export")
                && r.patient.as_deref() == Some("p2")),
            "{reads:?}"
        );
        assert!(
            reads.iter().any(|r| r.detail.contains("verified")),
            "{reads:?}"
        );
    })
    .await;

    // Fail closed: with the audit store broken, no read is answered.
    let head = break_audit(&server);
    for path in [
        "/v1/admin/devices",
        "/v1/admin/audit/export?patient=p2",
        "/v1/admin/audit/verify",
    ] {
        let (status, body) = server.https("GET", path, Some(&token), None).await;
        assert_eq!(status, 503, "{path} answered unaudited: {body}");
        assert!(!body.contains("p2") && !body.contains("nina"), "{body}");
    }
    repair_audit(&server, head);
    with_honest_pair(&server, &mut nina, &mut anna, "after", async {}).await;
    assert!(server.audit.verify().unwrap().ok);
}

/// The patients a document is about, in the order the device first received them.
fn received_order(device: &TestDevice) -> Vec<PatientId> {
    let mut order: Vec<PatientId> = Vec::new();
    for m in &device.received {
        if let ServerMessage::Batch { docs, .. } | ServerMessage::Batch3 { docs, .. } = m {
            for d in docs {
                let p = d.doc.patient();
                if !order.contains(p) {
                    order.push(p.clone());
                }
            }
        }
    }
    order
}

/// A `Hello` naming 10,000 priority patients, almost all of them people the device may not
/// read, is served (more than the cap is not an error), and the queue is ordered by the
/// readable ones only, the first `MAX_PRIORITY` of them: the strangers neither count against
/// the cap nor cost anything on every re-sort. The honest pair converges meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole9_priority_ten_thousand_entries_are_filtered_and_capped() {
    let World {
        server,
        mut nina,
        mut anna,
        ..
    } = world(short()).await;
    // Nils, a nurse with a case load of 250 people, each with a note.
    let load = MAX_PRIORITY + 50;
    let d = &server.directory;
    d.add_user(&uid("nils"), "Nils", Role::Nurse, "norr")
        .unwrap();
    let people: Vec<String> = (0..load).map(|i| format!("q{i:03}")).collect();
    for p in &people {
        d.add_patient(&patient(p), p).unwrap();
        d.assign(&uid("nils"), &patient(p)).unwrap();
    }
    server.state.refresh().unwrap();
    let mut writer = TestDevice::enroll(&server, "nils").await;
    for p in &people {
        note(&mut writer, p, &format!("{p}-note"), "Visit: all well.");
    }
    quiet(writer.sync(&server).await);
    // The order of the feed, as a device without priorities receives it.
    let mut plain = TestDevice::enroll(&server, "nils").await;
    plain.record = true;
    quiet(plain.sync(&server).await);
    let feed = received_order(&plain);
    assert_eq!(feed.len(), load, "{feed:?}");

    // The hostile Hello: strangers first, then the case load in reverse feed order.
    let mut priority: Vec<PatientId> = (0..MAX_LIST - load)
        .map(|i| PatientId::new(format!("stranger-{i}")).unwrap())
        .collect();
    priority.extend(feed.iter().rev().cloned());
    assert_eq!(priority.len(), MAX_LIST);
    let mut reader = TestDevice::enroll(&server, "nils").await;
    reader.record = true;
    reader.session.set_priority(priority);
    let end = with_honest_pair(&server, &mut nina, &mut anna, "priority", async {
        reader.sync(&server).await
    })
    .await;
    quiet(end);
    for p in &people {
        assert!(
            reader
                .repo
                .get(&journal(p))
                .unwrap()
                .event(&rid(&format!("{p}-note")))
                .is_some(),
            "{p} was not served"
        );
    }
    // The first MAX_PRIORITY readable ones listed come first, in the order listed; the rest
    // follow in feed order, as if not listed.
    let mut expected: Vec<PatientId> = feed.iter().rev().take(MAX_PRIORITY).cloned().collect();
    expected.extend(feed.iter().take(load - MAX_PRIORITY).cloned());
    assert_eq!(received_order(&reader), expected);
}
