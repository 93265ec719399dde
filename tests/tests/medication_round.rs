//! The medication round (issue 14, part 2) through the real server over TLS and real device
//! runtimes with their own stores: the signing list across phones, "unknown" for a phone that
//! has not synced, then overdue once it has, the server's overdue flag reaching another phone
//! (S12); a delegated dose refused offline without a valid delegation, and one that reaches the
//! server without one kept and flagged (S9); a "when needed" dose refused past its limits,
//! given anyway and flagged, and a follow-up overdue (S11).
//!
//! The slots are placed around the real time (UTC, offset 0) so the server, which reads its own
//! clock, judges them as the phones do; nothing waits on a timer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use nara_client::care::{self, DelegationInput, OrderInput, RoundStatusView};
use nara_client::{Device, SyncOptions};
use nara_tests::care::{clock, clock_at, enroll_runtime};
use nara_tests::net::TestServer;
use nara_tests::{now_ms, patient};
use server::directory::Directory;
use sync_core::model::round::{Shift, local_slot};
use sync_core::model::{AdministrationOutcome, DoseEffect, EventBody, PrnRule};
use sync_core::{DocumentId, PatientId, RecordId, Role, Timestamp, UserId};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn rid(s: &str) -> RecordId {
    RecordId::new(s).unwrap()
}

fn p1() -> PatientId {
    patient("p1")
}

/// Nina (nurse), Anna and Bo (carers), all caring for p1.
async fn setup() -> TestServer {
    let server = TestServer::start().await;
    let d = &server.directory;
    d.add_org("norr", "Hemtjänst Norr").unwrap();
    d.add_user(&uid("nina"), "Nina Berg", Role::Nurse, "norr")
        .unwrap();
    d.add_user(&uid("anna"), "Anna", Role::Carer, "norr")
        .unwrap();
    d.add_user(&uid("bo"), "Bo", Role::Carer, "norr").unwrap();
    d.add_patient(&p1(), "Elsa Lind").unwrap();
    for u in ["nina", "anna", "bo"] {
        d.assign(&uid(u), &p1()).unwrap();
    }
    server.state.refresh().unwrap();
    server
}

fn scheduled(times: &[String]) -> OrderInput {
    OrderInput {
        drug: Some("Metoprolol".into()),
        strength: Some("50 mg".into()),
        dose: Some("1 tablet".into()),
        route: Some("oral".into()),
        times: Some(times.to_vec()),
        start: Some(local_slot(Timestamp(now_ms() - 3 * DAY), 0)[..10].to_owned()),
        delegated: Some(true),
        ..OrderInput::default()
    }
}

fn when_needed() -> OrderInput {
    OrderInput {
        drug: Some("Paracetamol".into()),
        strength: Some("500 mg".into()),
        dose: Some("2 tablets".into()),
        route: Some("oral".into()),
        start: Some(local_slot(Timestamp(now_ms() - 3 * DAY), 0)[..10].to_owned()),
        delegated: Some(true),
        prn: Some(PrnRule {
            max_per_day: 3,
            min_interval_minutes: 240,
            follow_up_minutes: 60,
        }),
        ..OrderInput::default()
    }
}

/// Nina delegates medication for p1 to `user` from `from` until `until` (local dates).
fn delegate(nina: &Device, user: &str, from: i64, until: i64) -> RecordId {
    let input = DelegationInput::from_dates(
        uid(user),
        vec!["medication".into()],
        &local_slot(Timestamp(from), 0)[..10],
        &local_slot(Timestamp(until), 0)[..10],
        0,
    )
    .unwrap();
    care::delegate(nina, &[p1()], &input, &clock()).unwrap()[0]
        .delegation
        .clone()
}

/// The shift from six hours ago to an hour from now, at UTC.
/// `user`'s phone, enrolled in `dir` with the runtime's default options.
async fn phone(server: &TestServer, dir: &tempfile::TempDir, user: &str) -> Device {
    enroll_runtime(server, &dir.path().join(user), user, SyncOptions::default()).await
}

fn shift() -> Shift {
    Shift {
        from: Timestamp(now_ms() - 6 * HOUR),
        to: Timestamp(now_ms() + HOUR),
        utc_offset_minutes: 0,
    }
}

fn status_of(round: &care::Round, order: &str) -> RoundStatusView {
    round
        .slots
        .iter()
        .find(|s| s.order.as_str() == order)
        .unwrap_or_else(|| panic!("no slot of {order} in {:?}", round.slots))
        .status
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s12_signing_list_across_phones_unknown_until_a_phone_syncs_then_overdue_and_flagged() {
    let server = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let nina = phone(&server, &dir, "nina").await;
    let anna = phone(&server, &dir, "anna").await;
    let bo = phone(&server, &dir, "bo").await;

    // Two slots three hours ago (their windows closed two hours ago), one in half an hour.
    let past = Timestamp(now_ms() - 3 * HOUR);
    let slot_a = local_slot(past, 0);
    let slot_b = local_slot(Timestamp(past.0 + MIN), 0);
    let soon = local_slot(Timestamp(now_ms() + 30 * MIN), 0);
    for (order, slot) in [("o-a", &slot_a), ("o-b", &slot_b), ("o-c", &soon)] {
        care::write_order(
            &nina,
            &p1(),
            &rid(order),
            &scheduled(&[slot[11..].to_owned()]),
            &clock(),
        )
        .unwrap();
    }
    delegate(&nina, "anna", now_ms() - 30 * DAY, now_ms() + 30 * DAY);
    nina.sync_once().await.unwrap();
    anna.sync_once().await.unwrap();

    // Anna gives slot A on her phone.
    care::give(
        &anna,
        &p1(),
        &rid("o-a"),
        &slot_a,
        AdministrationOutcome::Given,
        None,
        false,
        false,
        &clock(),
    )
    .unwrap();
    anna.sync_once().await.unwrap();
    nina.sync_once().await.unwrap();

    // Before asking the server, Nina's phone knows nothing of the other phones: unknown.
    let round = care::round(&nina, &shift(), Some(&p1()), Timestamp(now_ms())).unwrap();
    assert_eq!(round.server_checked_at, None);
    assert_eq!(
        status_of(&round, "o-b"),
        RoundStatusView::Unknown { phones: vec![] }
    );

    // The server says Bo's phone has never synced: B is unknown, naming his phone.
    nina.refresh_round(0).await.unwrap();
    let round = care::round(&nina, &shift(), Some(&p1()), Timestamp(now_ms())).unwrap();
    assert!(round.server_checked_at.is_some());
    assert!(
        matches!(status_of(&round, "o-a"), RoundStatusView::Given { ref by, .. } if by.user == uid("anna")),
        "{round:?}"
    );
    match status_of(&round, "o-b") {
        RoundStatusView::Unknown { phones } => {
            assert_eq!(phones.len(), 1, "{phones:?}");
            assert_eq!(phones[0].user, uid("bo"));
            assert_eq!(phones[0].last_synced, None);
        }
        other => panic!("slot B should be unknown: {other:?}"),
    }
    assert_eq!(status_of(&round, "o-c"), RoundStatusView::Open);
    // Nor does the server raise an overdue flag while Bo's phone may hold the dose.
    assert!(
        round.flags.iter().all(|f| f.flag.kind != "overdue"),
        "{:?}",
        round.flags
    );

    // Bo's phone syncs (it holds nothing for B): now B is overdue, everywhere.
    bo.sync_once().await.unwrap();
    for phone in [&nina, &anna] {
        phone.refresh_round(0).await.unwrap();
        let round = care::round(phone, &shift(), Some(&p1()), Timestamp(now_ms())).unwrap();
        assert_eq!(status_of(&round, "o-b"), RoundStatusView::Overdue);
        // (Yesterday's slots of the orders, three days old, are overdue too: only today's B
        // is in question here.)
        let overdue: Vec<_> = round
            .flags
            .iter()
            .filter(|f| f.flag.kind == "overdue" && f.flag.slot.as_deref() == Some(&*slot_b))
            .collect();
        assert_eq!(overdue.len(), 1, "{:?}", round.flags);
        assert_eq!(overdue[0].flag.id, format!("overdue/o-b/{slot_b}"));
        assert!(overdue[0].flag.open);
        // And among the phone's flags, where a nurse acknowledges it.
        let flags = care::flags(phone, Some(&p1())).unwrap();
        assert!(
            flags
                .iter()
                .any(|f| f.id == format!("overdue/o-b/{slot_b}") && f.kind == "overdue" && f.open),
            "{flags:?}"
        );
    }

    // The nurse acknowledges it: closed on her phone at once, and on Anna's after a sync.
    care::ack_flag(
        &nina,
        &p1(),
        &format!("overdue/o-b/{slot_b}"),
        Some("called Elsa's daughter"),
        &clock(),
    )
    .unwrap();
    let round = care::round(&nina, &shift(), Some(&p1()), Timestamp(now_ms())).unwrap();
    let b_open: Vec<bool> = round
        .flags
        .iter()
        .filter(|f| f.flag.slot.as_deref() == Some(&*slot_b))
        .map(|f| f.flag.open)
        .collect();
    assert_eq!(b_open, vec![false], "acknowledged: {:?}", round.flags);
    nina.sync_once().await.unwrap();
    anna.sync_once().await.unwrap();
    anna.refresh_round(0).await.unwrap();
    let round = care::round(&anna, &shift(), Some(&p1()), Timestamp(now_ms())).unwrap();
    let b_open: Vec<bool> = round
        .flags
        .iter()
        .filter(|f| f.flag.slot.as_deref() == Some(&*slot_b))
        .map(|f| f.flag.open)
        .collect();
    assert_eq!(b_open, vec![false], "acknowledged: {:?}", round.flags);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s9_a_dose_without_a_valid_delegation_is_refused_offline_and_one_that_arrives_is_kept_and_flagged()
 {
    let mut server = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let nina = phone(&server, &dir, "nina").await;
    let anna = phone(&server, &dir, "anna").await;
    let bo = phone(&server, &dir, "bo").await;
    let slot = local_slot(Timestamp(now_ms() - HOUR), 0);
    let mut later = local_slot(Timestamp(now_ms() - HOUR + MIN), 0);
    if later[..10] != slot[..10] {
        later = local_slot(Timestamp(now_ms() - HOUR - MIN), 0);
    }
    let times = [slot[11..].to_owned(), later[11..].to_owned()];
    care::write_order(&nina, &p1(), &rid("o-1"), &scheduled(&times), &clock()).unwrap();
    // Anna's delegation covered p1 until yesterday; Bo's is valid.
    delegate(&nina, "anna", now_ms() - 60 * DAY, now_ms() - DAY);
    delegate(&nina, "bo", now_ms() - DAY, now_ms() + 60 * DAY);
    nina.sync_once().await.unwrap();
    anna.sync_once().await.unwrap();
    bo.sync_once().await.unwrap();

    // An older app on Anna's phone records it anyway (no check): written straight to the log.
    let month = slot[..7].parse().unwrap();
    let document = DocumentId::administrations(&p1(), month);
    let order_revision = {
        let o = care::overview(&anna, &p1(), &clock(), 0).unwrap();
        match &o.orders[0].value {
            care::RegisterShown::Value(v) => v.revision.clone(),
            other => panic!("{other:?}"),
        }
    };
    let sneaked = rid("a-old-app");
    anna.change(&document, Timestamp(now_ms()), |e| {
        e.record(
            sneaked.clone(),
            EventBody::Administration {
                order: rid("o-1"),
                order_revision: order_revision.clone(),
                slot: slot.clone(),
                outcome: AdministrationOutcome::Given,
                reason: None,
                occurred_at: Timestamp(now_ms()),
            },
        )
    })
    .unwrap();
    anna.sync_once().await.unwrap();
    nina.sync_once().await.unwrap();
    bo.sync_once().await.unwrap();

    // Kept, and flagged on another phone, by the model every replica runs, the server's too.
    let flags = care::flags(&nina, Some(&p1())).unwrap();
    let flag = flags
        .iter()
        .find(|f| f.id == format!("no-delegation/{sneaked}"))
        .unwrap_or_else(|| panic!("{flags:?}"));
    assert!(flag.open);
    assert!(
        care::flags(&nina, Some(&p1()))
            .unwrap()
            .iter()
            .all(|f| f.kind != "no-delegation" || f.evidence == vec![sneaked.clone()])
    );
    nina.refresh_round(0).await.unwrap();
    let round = care::round(&nina, &shift(), Some(&p1()), Timestamp(now_ms())).unwrap();
    assert!(
        round
            .flags
            .iter()
            .any(|f| f.flag.id == format!("no-delegation/{sneaked}")),
        "the server raises it too: {:?}",
        round.flags
    );

    // Offline (the server is gone), Anna's phone refuses her next dose and says why.
    server.stop().await;
    let err = care::give(
        &anna,
        &p1(),
        &rid("o-1"),
        &later,
        AdministrationOutcome::Given,
        None,
        false,
        false,
        &clock(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("delegation") && err.contains("ended"), "{err}");
    // A worker it was never given to is refused too; Bo's valid delegation lets him give it.
    let cara_err = care::give(
        &anna,
        &p1(),
        &rid("o-1"),
        &slot,
        AdministrationOutcome::Given,
        None,
        true,
        false,
        &clock(),
    )
    .unwrap_err()
    .to_string();
    assert!(cara_err.contains("delegation"), "{cara_err}");
    care::give(
        &bo,
        &p1(),
        &rid("o-1"),
        &later,
        AdministrationOutcome::Given,
        None,
        false,
        false,
        &clock(),
    )
    .unwrap();
    // Delegations ending within 30 days: none; within 61: Bo's.
    let listed = care::delegations(&nina, Some(&p1()), Some(30), Timestamp(now_ms())).unwrap();
    assert!(listed.is_empty(), "{listed:?}");
    let listed = care::delegations(&nina, Some(&p1()), Some(61), Timestamp(now_ms())).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].to, uid("bo"));
    assert_eq!(listed[0].by.user, uid("nina"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s11_a_when_needed_dose_past_its_limits_is_refused_then_given_anyway_and_flagged_and_its_follow_up_is_flagged_when_late()
 {
    let server = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let nina = phone(&server, &dir, "nina").await;
    let anna = phone(&server, &dir, "anna").await;
    care::write_order(&nina, &p1(), &rid("o-p"), &when_needed(), &clock()).unwrap();
    delegate(&nina, "anna", now_ms() - DAY, now_ms() + 30 * DAY);
    nina.sync_once().await.unwrap();
    anna.sync_once().await.unwrap();

    // Two hours ago (Anna's phone was offline then): a dose, whose follow-up was due an hour ago.
    let first = care::give_when_needed(
        &anna,
        &p1(),
        &rid("o-p"),
        None,
        false,
        0,
        &clock_at(now_ms() - 2 * HOUR),
    )
    .unwrap();
    // Now, two hours later: refused, the order wants four hours between doses.
    let err = care::give_when_needed(&anna, &p1(), &rid("o-p"), None, false, 0, &clock())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("less than 4 h") && err.contains("--anyway"),
        "{err}"
    );
    // Given anyway, with a reason: kept, and flagged.
    let anyway = care::give_when_needed(
        &anna,
        &p1(),
        &rid("o-p"),
        Some("pain 8/10 after a fall"),
        false,
        0,
        &clock(),
    )
    .unwrap();
    let flags = care::flags(&anna, Some(&p1())).unwrap();
    assert_eq!(
        flags.iter().map(|f| f.id.clone()).collect::<Vec<_>>(),
        vec![format!("prn-limit/{}", anyway.record)]
    );

    // The first dose's follow-up is overdue on the phone; the second's is not due yet.
    let round = care::round(&anna, &shift(), Some(&p1()), Timestamp(now_ms())).unwrap();
    assert_eq!(round.follow_ups.len(), 2, "{:?}", round.follow_ups);
    assert_eq!(round.follow_ups[0].administration, first.record);
    assert!(round.follow_ups[0].overdue);
    assert!(!round.follow_ups[1].overdue);
    assert_eq!(round.follow_ups[0].drug.as_deref(), Some("Paracetamol"));

    // After a sync the server raises it, and the nurse's phone shows it, with the limit flag.
    anna.sync_once().await.unwrap();
    nina.sync_once().await.unwrap();
    nina.refresh_round(0).await.unwrap();
    let round = care::round(&nina, &shift(), Some(&p1()), Timestamp(now_ms())).unwrap();
    let ids: Vec<&str> = round
        .flags
        .iter()
        .filter(|f| f.flag.open)
        .map(|f| f.flag.id.as_str())
        .collect();
    assert!(
        ids.contains(&format!("follow-up/{}", first.record).as_str()),
        "{ids:?}"
    );
    assert!(
        ids.contains(&format!("prn-limit/{}", anyway.record).as_str()),
        "{ids:?}"
    );
    assert!(
        care::flags(&nina, Some(&p1()))
            .unwrap()
            .iter()
            .any(|f| f.id == format!("prn-limit/{}", anyway.record))
    );

    // The effect recorded: the follow-up is done.
    care::record_effect(
        &anna,
        &p1(),
        &first.record,
        DoseEffect::Partial,
        Some("still some pain"),
        &clock(),
    )
    .unwrap();
    let round = care::round(&anna, &shift(), Some(&p1()), Timestamp(now_ms())).unwrap();
    assert_eq!(round.follow_ups[0].effect, Some(DoseEffect::Partial));
    assert!(!round.follow_ups[0].overdue);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_status_needs_a_device_credential_and_tells_only_of_the_users_people() {
    let server = setup().await;
    server
        .directory
        .add_patient(&patient("p2"), "Karl Ek")
        .unwrap();
    server
        .directory
        .assign(&uid("nina"), &patient("p2"))
        .unwrap();
    server.state.refresh().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let anna = phone(&server, &dir, "anna").await;
    let nina = phone(&server, &dir, "nina").await;

    assert_eq!(server.https("GET", "/v1/round", None, None).await.0, 401);
    let (status, _) = server
        .https("GET", "/v1/round", Some("dev-nobody.00"), None)
        .await;
    assert_eq!(status, 401);
    let err = anna.refresh_round(20 * 60).await.unwrap_err().to_string();
    assert!(err.contains("400"), "{err}");

    let round = anna.refresh_round(60).await.unwrap();
    let people: Vec<&str> = round.patients.iter().map(|p| p.patient.as_str()).collect();
    assert_eq!(people, vec!["p1"]);
    let mut phones: Vec<&str> = round.patients[0]
        .phones
        .iter()
        .map(|p| p.user.as_str())
        .collect();
    phones.sort_unstable();
    assert_eq!(
        phones,
        vec!["anna", "nina"],
        "every enrolled phone of p1's team"
    );
    let round = nina.refresh_round(60).await.unwrap();
    assert_eq!(round.patients.len(), 2);
    // Kept in the store: the same answer offline.
    assert_eq!(nina.server_round().unwrap(), round);
}
