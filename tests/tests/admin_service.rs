//! The admin HTTP API and `nara-server admin` are thin callers of one admin service
//! (`server::admin`): the same action leaves the same audit record whichever way it came, and
//! neither acts, nor answers a read, when its record cannot be written (real server in
//! process, real TLS sockets, real SQLite files).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use nara_tests::hostile::*;
use nara_tests::net::TestServer;
use nara_tests::*;
use server::admin::texts;
use server::admin_cli::{AdminArgs, AdminCommand, run_to};
use server::audit::{AuditAction, AuditLog, AuditRecord};
use server::directory::{Directory, ENROLLMENT_TTL_MS};
use sync_core::{DeviceId, UserId};

/// `nara-server admin --json <command>` on the server's data directory.
fn cli(server: &TestServer, command: AdminCommand) -> Result<serde_json::Value, String> {
    let args = AdminArgs {
        data: server.data.path().to_path_buf(),
        database: None,
        database_ca: None,
        json: true,
        command,
    };
    let mut out = Vec::new();
    run_to(args, &mut out).map_err(|e| format!("{e:#}"))?;
    Ok(serde_json::from_slice(&out).unwrap())
}

async fn http(server: &TestServer, method: &str, path: &str, body: Option<&str>) -> u16 {
    let (status, answer) = server
        .https(method, path, Some(&server.admin_token), body)
        .await;
    assert!(status != 0, "{answer}");
    status
}

/// The records of `action`, oldest first.
fn of(server: &TestServer, action: AuditAction) -> Vec<AuditRecord> {
    let mut records = server.audit.latest(&[action], 1000).unwrap();
    records.reverse();
    records
}

/// What an admin record says, without when it was made.
fn said(r: &AuditRecord) -> (String, Option<String>, Option<String>, String) {
    let e = &r.entry;
    (
        e.actor.clone(),
        e.patient.as_ref().map(|p| p.to_string()),
        e.device.as_ref().map(|d| d.to_string()),
        e.detail.clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_action_over_http_and_over_the_cli_writes_the_same_audit_text() {
    let World { server, bo, .. } = world(short()).await;
    let assignment = r#"{"user": "anna", "patient": "p1"}"#;
    let anna = || UserId::new("anna").unwrap();
    let p1 = || patient("p1");
    let bo_device = bo.author.device.to_string();

    // Over HTTP, then the same over the command line.
    assert_eq!(
        http(&server, "POST", "/v1/admin/assignments", Some(assignment)).await,
        200
    );
    assert_eq!(
        http(&server, "DELETE", "/v1/admin/assignments", Some(assignment)).await,
        200
    );
    cli(
        &server,
        AdminCommand::Assign {
            user: anna(),
            patient: p1(),
        },
    )
    .unwrap();
    cli(
        &server,
        AdminCommand::Unassign {
            user: anna(),
            patient: p1(),
        },
    )
    .unwrap();
    let revoke = format!("/v1/admin/devices/{bo_device}/revoke");
    assert_eq!(http(&server, "POST", &revoke, None).await, 200);
    let device = DeviceId::new(bo_device.as_str()).unwrap();
    cli(&server, AdminCommand::Revoke { device }).unwrap();
    assert_eq!(http(&server, "GET", "/v1/admin/devices", None).await, 200);
    cli(&server, AdminCommand::Devices).unwrap();
    assert_eq!(
        http(
            &server,
            "POST",
            "/v1/admin/enrollments",
            Some(r#"{"user": "anna"}"#)
        )
        .await,
        200
    );
    let enroll = AdminCommand::Enroll {
        user: anna(),
        server: server.addr.to_string(),
        tls_cert: None,
    };
    cli(&server, enroll).unwrap();

    for (action, text) in [
        (AuditAction::Assign, texts::assignment(&anna(), true)),
        (AuditAction::Unassign, texts::assignment(&anna(), false)),
    ] {
        let records = of(&server, action);
        let ours: Vec<_> = records.iter().rev().take(2).map(said).collect();
        let expected = ("admin".to_owned(), Some("p1".to_owned()), None, text);
        assert_eq!(ours, vec![expected.clone(), expected], "{action}");
    }
    let revokes: Vec<_> = of(&server, AuditAction::Revoke).iter().map(said).collect();
    let expected = (
        "admin".to_owned(),
        None,
        Some(bo_device.clone()),
        texts::revoke(Some(&UserId::new("bo").unwrap())),
    );
    assert_eq!(revokes, vec![expected.clone(), expected]);
    let lists: Vec<_> = of(&server, AuditAction::Read)
        .iter()
        .filter(|r| r.entry.detail.starts_with("device list"))
        .map(said)
        .collect();
    let expected = ("admin".to_owned(), None, None, texts::device_list(3));
    assert_eq!(lists, vec![expected.clone(), expected]);
    // An enrollment's text holds its expiry, from the moment it was recorded: the same rule.
    let enrollments: Vec<_> = of(&server, AuditAction::Enroll)
        .into_iter()
        .filter(|r| r.entry.actor == "admin")
        .collect();
    assert_eq!(enrollments.len(), 2);
    for r in &enrollments {
        let expires = r.entry.at_ms + ENROLLMENT_TTL_MS;
        assert_eq!(r.entry.detail, texts::enroll(&anna(), expires));
    }
    assert!(server.audit.verify().unwrap().ok);
}

/// The audit log fails for real: the store's SQLite file refuses every new record (a trigger
/// raises, as a full disk would make SQLite fail). Neither caller then acts or answers; once
/// the log accepts records again, both do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neither_http_nor_the_cli_acts_when_the_audit_log_cannot_be_written() {
    let World { server, .. } = world(short()).await;
    let file = server::admin_cli::audit_path(server.data.path());
    let conn = rusqlite::Connection::open(&file).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER refuse BEFORE INSERT ON audit_log
             BEGIN SELECT RAISE(ABORT, 'the audit disk is full'); END;",
    )
    .unwrap();
    let before = server.audit.len().unwrap();
    let assignment = r#"{"user": "anna", "patient": "p1"}"#;
    let assign = || AdminCommand::Assign {
        user: UserId::new("anna").unwrap(),
        patient: patient("p1"),
    };
    let anna_has_p1 = || {
        server
            .directory
            .assignments()
            .unwrap()
            .get(&UserId::new("anna").unwrap())
            .is_some_and(|ps| ps.contains(&patient("p1")))
    };

    assert_eq!(
        http(&server, "POST", "/v1/admin/assignments", Some(assignment)).await,
        503
    );
    let err = cli(&server, assign()).unwrap_err();
    assert!(err.contains("could not be audited"), "{err}");
    assert!(!anna_has_p1(), "assigned unaudited");
    assert_eq!(http(&server, "GET", "/v1/admin/devices", None).await, 503);
    let err = cli(&server, AdminCommand::Devices).unwrap_err();
    assert!(err.contains("could not be audited"), "{err}");
    assert_eq!(server.audit.len().unwrap(), before);

    conn.execute_batch("DROP TRIGGER refuse").unwrap();
    cli(&server, assign()).unwrap();
    assert!(anna_has_p1());
    assert_eq!(
        http(&server, "DELETE", "/v1/admin/assignments", Some(assignment)).await,
        200
    );
    assert!(!anna_has_p1());
    assert_eq!(server.audit.len().unwrap(), before + 2);
    assert!(server.audit.verify().unwrap().ok);
}
