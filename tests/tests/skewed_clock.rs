//! Phones whose clock is two days off (issue 10, "Clocks"), through the real server over TLS
//! and the real device runtime with its own stores: the phone is told and shows it; the
//! given-on-superseded-order flag follows causality where it decides, and says "time
//! uncertain, review" where only the wrong clock could; a note filed in next month's journal
//! is listed; every record is on every device that may read it, once; the audit log names the
//! skewed device.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

use nara_client::care::{self, Clock, OrderInput};
use nara_client::{Device, Status, SyncOptions};
use nara_tests::care::{date_of, delegate_for_a_month, enroll_runtime};
use nara_tests::net::TestServer;
use nara_tests::{now_ms, patient};
use server::directory::Directory;
use sync_core::model::{AdministrationOutcome, EventBody, WriteContext};
use sync_core::{DocumentId, PatientId, RecordId, Role, Timestamp, UserId};

const DAY: i64 = 24 * 3_600_000;

fn ahead() -> Timestamp {
    Timestamp(now_ms() + 2 * DAY)
}

fn behind() -> Timestamp {
    Timestamp(now_ms() - 2 * DAY)
}

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn p1() -> PatientId {
    patient("p1")
}

/// The first day of the month after the one `date` is in.
fn next_month(date: &str) -> String {
    let y: i32 = date[..4].parse().unwrap();
    let m: u32 = date[5..7].parse().unwrap();
    if m == 12 {
        format!("{:04}-01-01", y + 1)
    } else {
        format!("{y:04}-{:02}-01", m + 1)
    }
}

fn clock_of(device: &Device) -> Clock {
    let now = device.now();
    Clock::new(now, date_of(now)).unwrap()
}

async fn setup() -> TestServer {
    let server = TestServer::start().await;
    let d = &server.directory;
    d.add_org("norr", "Hemtjänst Norr").unwrap();
    d.add_user(&uid("nina"), "Nina", Role::Nurse, "norr")
        .unwrap();
    d.add_user(&uid("anna"), "Anna", Role::Carer, "norr")
        .unwrap();
    d.add_user(&uid("bo"), "Bo", Role::Carer, "norr").unwrap();
    d.add_patient(&p1(), "p1").unwrap();
    for u in ["nina", "anna", "bo"] {
        d.assign(&uid(u), &p1()).unwrap();
    }
    server.state.refresh().unwrap();
    server
}

/// Enrolls `user` in `home`, its runtime reading time from `clock`.
async fn enroll(server: &TestServer, home: &Path, user: &str, clock: fn() -> Timestamp) -> Device {
    let options = SyncOptions {
        clock,
        ..SyncOptions::default()
    };
    enroll_runtime(server, home, user, options).await
}

/// Nina's order `o-1`, twice a day, running since three days ago.
fn order_input() -> OrderInput {
    OrderInput {
        drug: Some("Metoprolol".into()),
        strength: Some("50 mg".into()),
        dose: Some("1 tablet".into()),
        route: Some("oral".into()),
        times: Some(vec!["08:00".into(), "20:00".into()]),
        start: Some(date_of(Timestamp(now_ms() - 3 * DAY))),
        stop: None,
        delegated: Some(true),
        ..OrderInput::default()
    }
}

fn revise(nina: &Device, dose: &str) -> RecordId {
    let input = OrderInput {
        dose: Some(dose.into()),
        ..OrderInput::default()
    };
    care::write_order(nina, &p1(), &rid("o-1"), &input, &clock_of(nina))
        .unwrap()
        .revision
}

fn rid(s: &str) -> RecordId {
    RecordId::new(s).unwrap()
}

/// Today's slot (by the server's date) at `time`.
fn slot(time: &str) -> String {
    format!("{}T{time}", date_of(Timestamp(now_ms())))
}

fn give(device: &Device, time: &str) -> RecordId {
    care::give(
        device,
        &p1(),
        &rid("o-1"),
        &slot(time),
        AdministrationOutcome::Given,
        None,
        true,
        false,
        &clock_of(device),
    )
    .unwrap()
    .record
}

/// Open flags of p1 on `device`: id -> kind.
fn flags(device: &Device) -> BTreeMap<String, &'static str> {
    care::flags(device, Some(&p1()))
        .unwrap()
        .into_iter()
        .filter(|f| f.open)
        .map(|f| (f.id, f.kind))
        .collect()
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

/// Every device holds every document of p1 in the same state (so every record, each once),
/// nothing waits for upload, and `records` are among them.
fn assert_everywhere(devices: &[&Device], records: &[&RecordId]) {
    let first = held(devices[0]);
    for d in devices {
        assert_eq!(d.pending_count().unwrap(), 0);
        assert_eq!(held(d), first, "{} differs", d.author().user);
    }
    let all: Vec<&RecordId> = first.values().flat_map(|(_, r)| r).collect();
    for r in records {
        assert_eq!(all.iter().filter(|x| **x == *r).count(), 1, "{r} once");
    }
}

/// The clock-skew entries of the audit log: (device, detail).
fn clock_audit(server: &TestServer) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(server.audit.path()).unwrap();
    let mut stmt = conn
        .prepare("SELECT device, detail FROM audit_log WHERE action = 'clock-skew' ORDER BY seq")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The skewed phone is told at its sync, shows it in its status, and says it in events.
async fn assert_told(device: &Device, sign: i64) {
    let report = device.sync_once().await.unwrap();
    assert!(report.clock_off, "{report:?}");
    let offset = report.clock_offset_ms.unwrap();
    assert!(
        (offset - sign * 2 * DAY).abs() < 3_600_000,
        "offset {offset}"
    );
    // After a one-off sync the device is offline, and its status still says it.
    match device.status() {
        Status::Offline {
            clock_off_by_ms: Some(off),
        } => assert!((off - sign * 2 * DAY).abs() < 3_600_000),
        other => panic!("status {other:?}"),
    }
    let clock = device.clock().unwrap();
    assert!(clock.off);
    assert_eq!(clock.offset_ms, Some(offset));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_clock_two_days_ahead() {
    let server = setup().await;
    let homes = tempfile::tempdir().unwrap();
    let nina = enroll(
        &server,
        &homes.path().join("nina"),
        "nina",
        nara_client::now,
    )
    .await;
    let anna = enroll(&server, &homes.path().join("anna"), "anna", ahead).await;

    care::write_order(&nina, &p1(), &rid("o-1"), &order_input(), &clock_of(&nina)).unwrap();
    delegate_for_a_month(&nina, &p1(), "anna", &clock_of(&nina));
    delegate_for_a_month(&nina, &p1(), "bo", &clock_of(&nina));
    let report = nina.sync_once().await.unwrap();
    assert!(!report.clock_off);
    assert!(!nina.clock().unwrap().off);
    assert_eq!(
        nina.status(),
        Status::Offline {
            clock_off_by_ms: None
        }
    );

    // Anna's phone, two days ahead, is told at its first sync and shows it.
    assert_told(&anna, -1).await;
    let audit = clock_audit(&server);
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].0, anna.author().device.to_string());
    assert!(audit[0].1.contains("ahead of the server"), "{audit:?}");

    // A dose correctly given before the order's revision: its time (by Anna's clock) is two
    // days after the revision's, but Nina revised having seen it. No flag.
    let before = give(&anna, "08:00");
    anna.sync_once().await.unwrap();
    nina.sync_once().await.unwrap();
    let v2 = revise(&nina, "2 tablets");
    nina.sync_once().await.unwrap();

    // A dose on version 1 that Anna gives before her phone has version 2: only time could say
    // whether version 2 applied, and her clock is known to be off. "Time uncertain, review".
    let concurrent = give(&anna, "20:00");

    // A note signed on a phone whose date is in next month (as on a month's last two days)
    // goes into next month's journal.
    let today = date_of(Timestamp(now_ms()));
    let note_clock = Clock::new(anna.now(), next_month(&today)).unwrap();
    let note = care::add_note(&anna, &p1(), "Slept well, ate breakfast.", &note_clock).unwrap();
    assert_eq!(
        note.document.month().unwrap().to_string(),
        next_month(&today)[..7]
    );
    anna.sync_once().await.unwrap();
    nina.sync_once().await.unwrap();
    anna.sync_once().await.unwrap();

    let expected = BTreeMap::from([(format!("time-uncertain/{concurrent}"), "time-uncertain")]);
    assert_eq!(flags(&nina), expected);
    assert_eq!(flags(&anna), expected);

    // Listed by its time in the current overview, whichever month's journal holds it.
    let nina_today = Clock::new(nara_client::now(), today.clone()).unwrap();
    for d in [&nina, &anna] {
        let shown = care::overview(d, &p1(), &nina_today, 0).unwrap();
        assert!(
            shown.journal.iter().any(|j| j.id == note.record),
            "{:?}",
            shown.journal
        );
    }

    assert_everywhere(&[&nina, &anna], &[&before, &concurrent, &note.record, &v2]);
    // Told once per connection that found it off: Anna's syncs, never Nina's.
    let audit = clock_audit(&server);
    assert!(audit.len() >= 4, "{audit:?}");
    assert!(
        audit
            .iter()
            .all(|(device, _)| *device == anna.author().device.to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_clock_two_days_behind() {
    let server = setup().await;
    let homes = tempfile::tempdir().unwrap();
    let nina = enroll(
        &server,
        &homes.path().join("nina"),
        "nina",
        nara_client::now,
    )
    .await;
    let bo = enroll(&server, &homes.path().join("bo"), "bo", behind).await;
    let anna = enroll(
        &server,
        &homes.path().join("anna"),
        "anna",
        nara_client::now,
    )
    .await;

    care::write_order(&nina, &p1(), &rid("o-1"), &order_input(), &clock_of(&nina)).unwrap();
    delegate_for_a_month(&nina, &p1(), "anna", &clock_of(&nina));
    delegate_for_a_month(&nina, &p1(), "bo", &clock_of(&nina));
    nina.sync_once().await.unwrap();
    assert_told(&bo, 1).await;
    let audit = clock_audit(&server);
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].0, bo.author().device.to_string());
    assert!(audit[0].1.contains("behind the server"), "{audit:?}");

    let v1 = care::flags(&nina, Some(&p1())).unwrap();
    assert!(v1.is_empty());
    let v1 = nina.with_repo(|repo| {
        repo.get(&DocumentId::medication(&p1()))
            .unwrap()
            .revisions()
            .keys()
            .next()
            .cloned()
            .unwrap()
    });
    let v2 = revise(&nina, "2 tablets");
    nina.sync_once().await.unwrap();

    // Bo, offline, gives on version 1 after the revision: by his clock two days before it.
    // Only time could decide and his clock is known off: "time uncertain, review", not missed.
    let concurrent = give(&bo, "08:00");
    bo.sync_once().await.unwrap();

    // Now Bo's phone holds version 2; a dose recorded on version 1 after that is on a
    // superseded order whatever his clock says (his record says it follows version 2). The
    // app names the current version; this is the record as the model takes it from any app.
    let after_v2 = rid("bo-dose-2");
    let offset = bo.clock().unwrap().offset_ms;
    let document = DocumentId::administrations(&p1(), slot("20:00")[..7].parse().unwrap());
    bo.change(&document, bo.now(), |e| {
        e.set_context(WriteContext {
            clock_offset_ms: offset,
            after: vec![v2.clone()],
        });
        e.record(
            after_v2.clone(),
            EventBody::Administration {
                order: rid("o-1"),
                order_revision: v1.clone(),
                slot: slot("20:00"),
                outcome: AdministrationOutcome::Given,
                reason: None,
                occurred_at: bo.now(),
            },
        )
    })
    .unwrap();
    bo.sync_once().await.unwrap();
    for d in [&nina, &anna, &bo] {
        d.sync_once().await.unwrap();
    }

    let expected = BTreeMap::from([
        (format!("time-uncertain/{concurrent}"), "time-uncertain"),
        (format!("superseded-order/{after_v2}"), "superseded-order"),
    ]);
    for d in [&nina, &anna, &bo] {
        assert_eq!(flags(d), expected, "{}", d.author().user);
    }
    assert_everywhere(&[&nina, &anna, &bo], &[&concurrent, &after_v2, &v1, &v2]);
    let audit = clock_audit(&server);
    assert!(
        audit
            .iter()
            .all(|(device, _)| *device == bo.author().device.to_string()),
        "{audit:?}"
    );
}
