//! The audit log under attack and under failure (issue 11, holes 2, 3, 5, 9 and 11), against
//! the real server in process over real TLS sockets, with the real SQLite files.
//!
//! - hole 2: an audit store that fails (its head row deleted, so every append fails while the
//!   document tables still take writes): nothing is stored, nothing is sent, the read log is
//!   not acknowledged, admin actions and enrollment answer an error and change nothing.
//! - hole 3: a device's read log only about people disclosed to it, sanitised, rate-limited.
//! - hole 5: revocations raced against fresh logins never leave a connection open.
//! - hole 9: failed sync logins are limited per address and audited once per run.
//! - hole 11: every accepted change is named in the log, and refusals carry no values.
//!
//! Each runs beside an honest pair of devices that keeps syncing and converges.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use nara_tests::hostile::*;
use nara_tests::net::{SyncEnd, TestDevice, TestServer};
use nara_tests::*;
use server::Limits;
use server::audit::{AuditAction, AuditLog, AuditRecord};
use server::directory::Directory;
use sync_core::Timestamp;
use sync_core::protocol::wire::CloseReason;
use sync_core::protocol::{DeviceEvent, DeviceSession};
use sync_core::store::Store;

/// The production limits: these tests wait for outcomes, not timeouts.
fn short() -> Limits {
    Limits::default()
}

fn records(server: &TestServer, p: &str) -> Vec<AuditRecord> {
    server.audit.export_patient(&patient(p)).unwrap()
}

fn closed_with(end: &SyncEnd) -> Option<CloseReason> {
    match end {
        SyncEnd::Closed(events) => events.iter().find_map(|e| match e {
            DeviceEvent::Closed { reason, .. } => Some(*reason),
            _ => None,
        }),
        _ => None,
    }
}

fn feed_len(server: &TestServer) -> i64 {
    raw_db(server)
        .query_row("SELECT count(*) FROM feed", [], |r| r.get(0))
        .unwrap()
}

/// The audit store fails as a real disk or a stuck process makes it fail: another connection
/// holds the database's write lock past the server's busy timeout. The sync step that would
/// store a note and its audit record fails as a whole: nothing stored, nothing sent, the
/// device keeps its note and sends it again once the store is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole2_a_locked_audit_store_stores_and_sends_nothing() {
    let World {
        server,
        mut nina,
        mut anna,
        ..
    } = world(short()).await;
    note(&mut nina, "p2", "while-locked", "Pulse 52.");
    let stored_before = feed_len(&server);
    let audited_before = server.audit.len().unwrap();
    let lock = raw_db(&server);
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let end = nina.sync(&server).await;
    assert_eq!(closed_with(&end), Some(CloseReason::Internal), "{end:?}");
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    assert_eq!(
        feed_len(&server),
        stored_before,
        "stored while the audit store failed"
    );
    assert_eq!(server.audit.len().unwrap(), audited_before);
    assert_eq!(nina.repo.store().pending().unwrap().len(), 1);
    // Once the store is free again the note goes up, with its record, and reaches anna.
    with_honest_pair(&server, &mut nina, &mut anna, "after-lock", async {}).await;
    assert!(has(&mut anna, "p2", "while-locked"));
    assert!(
        records(&server, "p2")
            .iter()
            .any(|r| r.entry.action == AuditAction::Accept)
    );
}

/// A failing audit store: an upload is not stored, nothing is sent (the session closes with
/// `Internal`), the read log is not acknowledged (the device keeps it), admin actions and
/// enrollment answer an error and change nothing. Repaired, everything goes through, audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole2_a_failing_audit_store_stores_and_sends_nothing() {
    let World {
        server,
        mut nina,
        mut anna,
        bo,
    } = world(short()).await;
    note(&mut nina, "p2", "while-broken", "Blood pressure 180/110.");
    let stored_before = feed_len(&server);
    let head = break_audit(&server);

    let end = nina.sync(&server).await;
    assert_eq!(closed_with(&end), Some(CloseReason::Internal), "{end:?}");
    assert_eq!(
        feed_len(&server),
        stored_before,
        "stored without its audit record"
    );
    assert_eq!(nina.repo.store().pending().unwrap().len(), 1);
    DeviceSession::log_read(&mut nina.repo, &patient("p2"), "overview", Timestamp(1)).unwrap();
    let end = nina.sync(&server).await;
    assert_eq!(closed_with(&end), Some(CloseReason::Internal), "{end:?}");
    assert_eq!(
        DeviceSession::read_log(&nina.repo).unwrap().len(),
        1,
        "the read log was acknowledged though it was not recorded"
    );
    // Nothing was disclosed to anna either (there was nothing new to send her, so her
    // connection may even stay up: nothing left unaudited).
    let end = anna.sync(&server).await;
    assert!(
        matches!(closed_with(&end), None | Some(CloseReason::Internal)),
        "{end:?}"
    );
    assert!(!has(&mut anna, "p2", "while-broken"));

    // Admin actions and enrollment: an error, and no change.
    let (status, body) = server
        .https(
            "POST",
            &format!("/v1/admin/devices/{}/revoke", bo.author.device),
            Some(&server.admin_token),
            None,
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(!server.directory.is_revoked(&bo.author.device).unwrap());
    let code = server.directory.enroll(&uid("anna"), now_ms()).unwrap();
    let (status, body) = server
        .https(
            "POST",
            "/v1/enroll",
            None,
            Some(&format!("{{\"code\":\"{code}\"}}")),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(!body.contains("secret"), "{body}");
    let (status, _) = server
        .https(
            "POST",
            "/v1/admin/assignments",
            Some(&server.admin_token),
            Some(r#"{"user":"bo","patient":"p2"}"#),
        )
        .await;
    assert_eq!(status, 503);
    assert!(
        !server
            .directory
            .assignments()
            .unwrap()
            .get(&uid("bo"))
            .is_some_and(|ps| ps.contains(&patient("p2"))),
        "assigned without an audit record"
    );

    repair_audit(&server, head);
    with_honest_pair(&server, &mut nina, &mut anna, "after", async {}).await;
    assert!(has(&mut anna, "p2", "while-broken"));
    assert!(DeviceSession::read_log(&nina.repo).unwrap().is_empty());
    let p2 = records(&server, "p2");
    assert!(p2.iter().any(|r| r.entry.action == AuditAction::Read
        && r.entry.device.as_ref() == Some(&nina.author.device)));
    assert!(p2.iter().any(|r| r.entry.action == AuditAction::Accept));
    assert!(server.audit.verify().unwrap().ok);
}

/// A device's read log is taken only about people disclosed to it, with its text sanitised,
/// and at a bounded rate: it cannot plant entries in someone else's access log, forge lines,
/// or grow the log without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole3_the_read_log_is_not_taken_on_the_devices_word() {
    let World {
        server,
        mut nina,
        mut anna,
        mut bo,
    } = world(short()).await;
    // p1 has a note, so p1 is disclosed to bo when he syncs; p2 never is.
    note(&mut nina, "p1", "for-bo", "Visit.");
    quiet(nina.sync(&server).await);
    quiet(bo.sync(&server).await);
    let p2_before = records(&server, "p2").len();
    // The tampered app's read log, written before the attack (3,000 durable writes on this
    // thread would stall the in-process server sharing the test's runtime).
    {
        let p2 = patient("p2");
        let p1 = patient("p1");
        for i in 0..20 {
            DeviceSession::log_read(&mut bo.repo, &p2, "overview", Timestamp(i)).unwrap();
        }
        DeviceSession::log_read(
            &mut bo.repo,
            &p1,
            "name\n2026-11-01 #1 read by u-nina on dev-x: forged",
            Timestamp(1),
        )
        .unwrap();
        for i in 0..3_000 {
            DeviceSession::log_read(&mut bo.repo, &p1, "overview", Timestamp(i)).unwrap();
        }
    }
    with_honest_pair(&server, &mut nina, &mut anna, "reads", async {
        for _ in 0..20 {
            let end = bo.sync(&server).await;
            assert!(matches!(end, SyncEnd::Quiet(_)), "{end:?}");
            if DeviceSession::read_log(&bo.repo).unwrap().is_empty() {
                break;
            }
        }
    })
    .await;
    let bo_reads_p2 = records(&server, "p2")
        .iter()
        .skip(p2_before)
        .filter(|r| r.entry.device.as_ref() == Some(&bo.author.device))
        .count();
    assert_eq!(bo_reads_p2, 0, "bo planted reads in p2's access log");
    let p1 = records(&server, "p1");
    let reads: Vec<_> = p1
        .iter()
        .filter(|r| r.entry.action == AuditAction::Read)
        .collect();
    assert!(!reads.is_empty());
    assert!(
        reads
            .iter()
            .all(|r| !r.entry.detail.chars().any(char::is_control))
    );
    assert!(reads.iter().all(|r| r.entry.detail.len() < 200));
    assert!(
        reads.len() < 2_500,
        "{} read records: the rate is not bounded",
        reads.len()
    );
    let all = server.audit.len().unwrap();
    let conn = raw_db(&server);
    let refused: i64 = conn
        .query_row(
            "SELECT count(*) FROM audit_log WHERE action = 'rate-limited' AND device = ?1",
            [bo.author.device.as_str()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(refused, 1, "the excess is audited once ({all} records)");
    // The export prints one line per record, whatever the records hold.
    let mut out = Vec::new();
    server::admin_cli::run_to(
        server::admin_cli::AdminArgs {
            data: server.data.path().to_owned(),
            database: None,
            database_ca: None,
            json: false,
            command: server::admin_cli::AdminCommand::Audit {
                command: server::admin_cli::AuditCommand::Export {
                    patient: patient("p1"),
                },
            },
        },
        &mut out,
    )
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    // One line per record (the export's own record is written before it prints, after the
    // records to print were read): a newline in a record cannot make a line of its own.
    assert_eq!(text.lines().count(), p1.len(), "an export line was forged");
    assert!(!text.contains("\n2026-11-01 #1 read by"), "{text}");
}

/// Revocations raced against fresh logins: the connection never stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole5_a_revocation_racing_a_login_is_never_missed() {
    let World {
        server,
        mut nina,
        mut anna,
        ..
    } = world(short()).await;
    with_honest_pair(&server, &mut nina, &mut anna, "race", async {
        for round in 0..25u64 {
            let mut device = TestDevice::enroll(&server, "bo").await;
            let id = device.author.device.clone();
            let delay = Duration::from_micros(round * 400);
            let revoke = async {
                tokio::time::sleep(delay).await;
                server.directory.revoke(&id).unwrap();
                server.state.refresh().unwrap();
            };
            let (end, ()) =
                tokio::join!(device.sync_linger(&server, Duration::from_secs(3)), revoke);
            match &end {
                SyncEnd::Refused(401) => {}
                other => assert_eq!(
                    closed_with(other),
                    Some(CloseReason::Revoked),
                    "round {round}: the revoked device's connection stayed open: {other:?}"
                ),
            }
        }
    })
    .await;
}

/// Failed sync logins from one address: refused once the address has used up its burst, and
/// one audit record for the run instead of one per attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole9_failed_logins_are_limited_and_audited_once() {
    let World {
        server,
        mut nina,
        mut anna,
        bo,
    } = world(short()).await;
    let count = || -> i64 {
        raw_db(&server)
            .query_row(
                "SELECT count(*) FROM audit_log WHERE action = 'auth-failed'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    let before = count();
    // The honest pair shares 127.0.0.1 with the attacker here, so it syncs before and after
    // the run, not during it (the limit is per address).
    with_honest_pair(&server, &mut nina, &mut anna, "before", async {}).await;
    let statuses = async {
        let mut statuses = Vec::new();
        let mut liar = TestDevice::enroll(&server, "bo").await;
        liar.author.device = bo.author.device.clone();
        liar.secret = "not-the-secret".into();
        for _ in 0..60 {
            match liar.sync(&server).await {
                SyncEnd::Refused(s) => statuses.push(s),
                other => panic!("a bad credential was not refused: {other:?}"),
            }
        }
        statuses
    }
    .await;
    assert!(statuses.contains(&401));
    tokio::time::sleep(Duration::from_secs(3)).await;
    with_honest_pair(&server, &mut nina, &mut anna, "after", async {}).await;
    assert!(statuses.contains(&429), "never rate-limited: {statuses:?}");
    assert_eq!(count() - before, 1, "one record for the run");
}

/// Every accepted change is named in the log (an upload of many changes too), and a refusal
/// carries a code, never the text of what was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole11_every_accepted_change_is_identified_and_refusals_carry_no_values() {
    let World {
        server,
        mut nina,
        mut anna,
        mut bo,
    } = world(short()).await;
    for i in 0..120 {
        note(&mut anna, "p2", &format!("many-{i}"), "Ate well.");
    }
    quiet(anna.sync(&server).await);
    let actor = anna.author.actor_id();
    let hashes: Vec<String> = anna
        .repo
        .get(&journal("p2"))
        .unwrap()
        .changes_since(&[])
        .into_iter()
        .filter(|c| *c.actor_id() == actor)
        .map(|c| c.hash().to_string())
        .collect();
    assert!(hashes.len() >= 120);
    let accepted: String = records(&server, "p2")
        .iter()
        .filter(|r| r.entry.action == AuditAction::Accept)
        .map(|r| r.entry.detail.clone())
        .collect::<Vec<_>>()
        .join(" ");
    for h in &hashes {
        assert!(
            accepted.contains(h.as_str()),
            "accepted change {h} is not in the log"
        );
    }
    // bo may not write p2: refused, and the refusal does not quote the note.
    with_honest_pair(&server, &mut nina, &mut anna, "leak", async {
        note(&mut bo, "p2", "leak", "Diagnosis: SECRET-VALUE");
        let _ = bo.sync(&server).await;
    })
    .await;
    let refusals: Vec<_> = records(&server, "p2")
        .into_iter()
        .filter(|r| r.entry.action == AuditAction::Refuse)
        .collect();
    assert!(!refusals.is_empty());
    assert!(refusals.iter().all(|r| !r.entry.detail.contains("SECRET")));
}

/// An upload of thousands of changes that are all refused wrote one audit record per change,
/// as often as a device may send one (and the record is the undeletable log). Now a step
/// writes one record per document and code, at most 64, and one for the rest: bo's upload of
/// 4,000 unreadable "changes" over 100 months' journals of p1 writes 65 records, and every
/// change is still counted in them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole3_thousands_of_refused_changes_in_one_upload_write_bounded_records() {
    use nara_tests::raw::Raw;
    use nara_tests::team::journal_of_month;
    use sync_core::protocol::wire::DocChanges;

    let World {
        server,
        mut nina,
        mut anna,
        bo,
    } = world(short()).await;
    const MONTHS: u16 = 100;
    const EACH: usize = 40;
    let docs: Vec<DocChanges> = (0..MONTHS)
        .map(|n| DocChanges {
            doc: journal_of_month("p1", n),
            changes: vec![vec![0xff]; EACH],
            positions: Vec::new(),
        })
        .collect();
    let refused = with_honest_pair(&server, &mut nina, &mut anna, "refusals", async {
        let mut raw = Raw::connect(&server, &bo).await;
        raw.hello(docs).await;
        raw.upload_ack(0).await.len()
    })
    .await;
    assert_eq!(refused, usize::from(MONTHS) * EACH);
    let rows = audited(&server, "refuse", &bo.author, 65).await;
    assert_eq!(rows.len(), 65, "{:?}", &rows[..3]);
    let per_document = rows
        .iter()
        .filter(|d| *d == &format!("Malformed {EACH} changes"))
        .count();
    assert_eq!(per_document, 64, "{:?}", &rows[..3]);
    let rest = format!(
        "{} more changes refused, of {} more documents",
        (usize::from(MONTHS) - 64) * EACH,
        usize::from(MONTHS) - 64
    );
    assert!(rows.contains(&rest), "{:?}", rows.last());
}
