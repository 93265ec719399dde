//! Issue 14, part 1, through the real server over TLS and real device runtimes, each with its
//! own store: S10 (two allergy entries at once, and a dose that matches one warns), S13 (two
//! corrections at once) and S14 (handover since the user last viewed the person, logged as a
//! read).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use nara_client::care::{self, AllergyInput, HandoverWhat, OrderInput, RegisterShown};
use nara_client::{ClientError, Device, SyncOptions};
use nara_tests::care::{clock, delegate_for_a_month, enroll_runtime, sync};
use nara_tests::net::TestServer;
use nara_tests::patient;
use server::directory::Directory;
use sync_core::model::{AdministrationOutcome, AllergyStatus, Criticality, EventBody};
use sync_core::{PatientId, RecordId, RepoError, Role, UserId};

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn p1() -> PatientId {
    patient("p1")
}

fn rid(s: &str) -> RecordId {
    RecordId::new(s).unwrap()
}

fn today_slot(time: &str) -> String {
    format!("{}T{time}", clock().today)
}

async fn setup() -> TestServer {
    let server = TestServer::start().await;
    let d = &server.directory;
    d.add_org("norr", "Hemtjänst Norr").unwrap();
    for (u, role) in [
        ("nina", Role::Nurse),
        ("nils", Role::Nurse),
        ("anna", Role::Carer),
        ("bo", Role::Carer),
    ] {
        d.add_user(&uid(u), u, role, "norr").unwrap();
    }
    d.add_patient(&p1(), "Dagny Berg").unwrap();
    for u in ["nina", "nils", "anna", "bo"] {
        d.assign(&uid(u), &p1()).unwrap();
    }
    server.state.refresh().unwrap();
    server
}

struct World {
    server: TestServer,
    _homes: tempfile::TempDir,
    nina: Device,
    nils: Device,
    anna: Device,
    bo: Device,
}

impl World {
    async fn new() -> Self {
        let server = setup().await;
        let homes = tempfile::tempdir().unwrap();
        let nina = enroll_runtime(
            &server,
            &homes.path().join("nina"),
            "nina",
            SyncOptions::default(),
        )
        .await;
        let nils = enroll_runtime(
            &server,
            &homes.path().join("nils"),
            "nils",
            SyncOptions::default(),
        )
        .await;
        let anna = enroll_runtime(
            &server,
            &homes.path().join("anna"),
            "anna",
            SyncOptions::default(),
        )
        .await;
        let bo = enroll_runtime(
            &server,
            &homes.path().join("bo"),
            "bo",
            SyncOptions::default(),
        )
        .await;
        Self {
            server,
            _homes: homes,
            nina,
            nils,
            anna,
            bo,
        }
    }

    fn all(&self) -> [&Device; 4] {
        [&self.nina, &self.nils, &self.anna, &self.bo]
    }

    /// Everyone syncs twice over, so each has what the others uploaded.
    async fn sync_all(&self) {
        for _ in 0..2 {
            for d in self.all() {
                sync(d).await;
            }
        }
    }

    /// Nina orders `drug` at 08:00 from today, delegated to the carers Anna and Bo.
    fn order(&self, order: &str, drug: &str) {
        for carer in ["anna", "bo"] {
            delegate_for_a_month(&self.nina, &p1(), carer, &clock());
        }
        care::write_order(
            &self.nina,
            &p1(),
            &rid(order),
            &OrderInput {
                drug: Some(drug.into()),
                strength: Some("1 g".into()),
                dose: Some("1 tablet".into()),
                route: Some("oral".into()),
                times: Some(vec!["08:00".into(), "20:00".into()]),
                start: Some(clock().today),
                stop: None,
                delegated: Some(true),
                window_minutes: None,
                prn: None,
            },
            &clock(),
        )
        .unwrap();
    }
}

fn allergy(substance: &str, criticality: Criticality, reaction: Option<&str>) -> AllergyInput {
    AllergyInput {
        substance: substance.into(),
        criticality,
        reaction: reaction.map(str::to_owned),
        status: AllergyStatus::Active,
    }
}

fn give(device: &Device, order: &str, confirmed: bool) -> Result<care::Administered, ClientError> {
    care::give(
        device,
        &p1(),
        &rid(order),
        &today_slot("08:00"),
        AdministrationOutcome::Given,
        None,
        true,
        confirmed,
        &clock(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s10_two_allergy_entries_at_once_conflict_until_a_nurse_resolves_and_a_dose_warns() {
    let w = World::new().await;
    w.order("pc", "Fenoximetylpenicillin");
    let first = care::record_allergy(
        &w.nina,
        &p1(),
        None,
        &allergy("Penicillin", Criticality::Low, None),
        false,
        &clock(),
    )
    .unwrap();
    assert!(first.created);
    let entry = first.allergy.clone().unwrap();
    w.sync_all().await;

    // Offline, the nurse raises the criticality and the carer adds the reaction to the same
    // entry (found by its substance), and the carer records a second substance.
    let nurse = care::record_allergy(
        &w.nina,
        &p1(),
        None,
        &allergy("penicillin", Criticality::High, None),
        false,
        &clock(),
    )
    .unwrap();
    assert_eq!((nurse.allergy.as_ref(), nurse.version), (Some(&entry), 2));
    let carer = care::record_allergy(
        &w.anna,
        &p1(),
        None,
        &allergy("Penicillin", Criticality::Low, Some("rash")),
        false,
        &clock(),
    )
    .unwrap();
    assert_eq!(carer.allergy.as_ref(), Some(&entry));
    let latex = care::record_allergy(
        &w.anna,
        &p1(),
        None,
        &allergy("Latex", Criticality::Low, None),
        false,
        &clock(),
    )
    .unwrap();
    assert!(latex.created);
    w.sync_all().await;

    for d in w.all() {
        let o = care::overview(d, &p1(), &clock(), 0).unwrap();
        assert_eq!(o.allergies.len(), 2, "both entries kept");
        let pc = o.allergies.iter().find(|a| a.id == entry).unwrap();
        assert!(
            matches!(&pc.value, RegisterShown::Conflict { candidates } if candidates.len() == 2),
            "{:?}",
            pc.value
        );
        assert_eq!(o.conflicts.len(), 1);
        // On every phone, a dose of the matching drug warns (the allergy in conflict too).
        let warnings = care::allergy_warnings(d, &p1(), "Fenoximetylpenicillin").unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].conflicting);
    }

    // Bo's dose: a warning, nothing written; confirmed, it is recorded.
    let pending = w.bo.pending_count().unwrap();
    match give(&w.bo, "pc", false) {
        Err(ClientError::AllergyWarning { drug, allergies }) => {
            assert_eq!(drug, "Fenoximetylpenicillin");
            assert!(
                allergies[0]
                    .to_lowercase()
                    .contains("allergy to penicillin"),
                "{allergies:?}"
            );
        }
        other => panic!("expected an allergy warning, got {other:?}"),
    }
    assert_eq!(w.bo.pending_count().unwrap(), pending, "nothing written");
    give(&w.bo, "pc", true).unwrap();

    // Without --resolve the conflict is not written over; a carer may not resolve it.
    let err = care::record_allergy(
        &w.anna,
        &p1(),
        Some(&entry),
        &allergy("Penicillin", Criticality::High, Some("rash")),
        false,
        &clock(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("in conflict"), "{err}");
    let err = care::record_allergy(
        &w.anna,
        &p1(),
        Some(&entry),
        &allergy("Penicillin", Criticality::High, Some("rash")),
        true,
        &clock(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Repo(RepoError::Model(sync_core::ModelError::NotPermitted { .. }))
        ),
        "{err:?}"
    );
    let resolved = care::record_allergy(
        &w.nina,
        &p1(),
        Some(&entry),
        &allergy("Penicillin", Criticality::High, Some("rash")),
        true,
        &clock(),
    )
    .unwrap();
    assert!(resolved.resolved);
    assert_eq!(resolved.supersedes.len(), 2);
    w.sync_all().await;
    for d in w.all() {
        assert!(care::conflicts(d, Some(&p1())).unwrap().is_empty());
        let warnings = care::allergy_warnings(d, &p1(), "Fenoximetylpenicillin").unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(!warnings[0].conflicting);
        assert_eq!(warnings[0].criticality, Criticality::High);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s13_two_corrections_at_once_are_both_kept_and_the_dose_shows_once_in_error() {
    let w = World::new().await;
    w.order("meto", "Metoprolol");
    w.sync_all().await;
    // Anna records a dose on the wrong person, and a note.
    let dose = give(&w.anna, "meto", false).unwrap().record;
    let note = care::add_note(&w.anna, &p1(), "Meant for p2.", &clock())
        .unwrap()
        .record;
    w.sync_all().await;

    // Offline, both nurses mark the dose entered in error; Nina also the note.
    care::correct(&w.nina, &p1(), &dose, "wrong person", &clock()).unwrap();
    care::correct(&w.nils, &p1(), &dose, "given to p2, not p1", &clock()).unwrap();
    care::correct(&w.nina, &p1(), &note, "wrong person", &clock()).unwrap();
    // A second mark on this phone is refused: it already holds one.
    let again = care::correct(&w.nina, &p1(), &dose, "again", &clock()).unwrap_err();
    assert!(again.to_string().contains("already marked"), "{again}");
    w.sync_all().await;

    for d in w.all() {
        let r = care::record(d, &p1(), &dose).unwrap();
        assert!(r.entered_in_error);
        let by: Vec<&str> = r.marks.iter().map(|m| m.author.user.as_str()).collect();
        assert_eq!(r.marks.len(), 2, "both marks kept: {by:?}");
        assert!(by.contains(&"nina") && by.contains(&"nils"), "{by:?}");
        // Shown once: nothing counts as recorded for the slot again (open, or past its window
        // overdue or unknown as the signing list says), no double dose.
        let o = care::overview(d, &p1(), &clock(), 0).unwrap();
        let slot = o
            .today
            .iter()
            .find(|s| s.slot == today_slot("08:00"))
            .unwrap();
        assert!(
            matches!(
                slot.status,
                care::RoundStatusView::Open
                    | care::RoundStatusView::Overdue
                    | care::RoundStatusView::Unknown { .. }
            ),
            "{:?}",
            slot.status
        );
        // The note: one journal entry, marked, with its mark; the marks are not entries.
        let entries: Vec<_> = o.journal.iter().filter(|j| j.id == note).collect();
        assert_eq!(entries.len(), 1);
        assert!(entries[0].entered_in_error);
        assert_eq!(entries[0].marks.len(), 1);
        assert!(
            o.journal
                .iter()
                .all(|j| !matches!(j.body, EventBody::EnteredInError { .. }))
        );
    }
}

/// The audit log's read entries of `device` about p1.
fn reads(server: &TestServer, device: &Device) -> Vec<String> {
    let conn = rusqlite::Connection::open(server.audit.path()).unwrap();
    let mut stmt = conn
        .prepare("SELECT detail FROM audit_log WHERE action = 'read' AND device = ?1 ORDER BY seq")
        .unwrap();
    stmt.query_map([device.enrollment().device.as_str()], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s14_handover_lists_what_others_wrote_since_the_last_view_and_is_logged_as_a_read() {
    let w = World::new().await;
    w.order("meto", "Metoprolol");
    w.sync_all().await;
    // Anna's first handover: what others wrote in the last day (Nina's order).
    let first = care::handover(&w.anna, &p1(), &clock()).unwrap();
    assert!(first.since.is_none());
    // The name `add-patient --name` gave reached the devices.
    assert_eq!(first.display_name.as_deref(), Some("Dagny Berg"));
    assert!(first.items.iter().any(|i| i.kind == "order"), "{first:?}");
    // Her own note is never listed.
    care::add_note(&w.anna, &p1(), "Slept well.", &clock()).unwrap();

    // Then the others write: a note, an order change, an allergy, a dose (a double dose with
    // Anna's own: a flag), a correction.
    let note = care::add_note(&w.bo, &p1(), "Fell in the hallway, no injury.", &clock())
        .unwrap()
        .record;
    care::write_order(
        &w.nina,
        &p1(),
        &rid("meto"),
        &OrderInput {
            dose: Some("2 tablets".into()),
            ..OrderInput::default()
        },
        &clock(),
    )
    .unwrap();
    care::record_allergy(
        &w.nina,
        &p1(),
        None,
        &allergy("Latex", Criticality::Low, None),
        false,
        &clock(),
    )
    .unwrap();
    let dose = give(&w.bo, "meto", false).unwrap().record;
    give(&w.anna, "meto", false).unwrap();
    w.sync_all().await;

    let h = care::handover(&w.anna, &p1(), &clock()).unwrap();
    assert!(h.since.is_some());
    let kinds: Vec<&str> = h.items.iter().map(|i| i.kind).collect();
    assert_eq!(h.items.len(), 4, "{kinds:?}");
    for kind in ["note", "order", "allergy", "dose"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    assert!(h.items.iter().all(|i| i.author.user.as_str() != "anna"));
    assert!(h.items.iter().any(|i| i.record == note));
    let bos = h.items.iter().find(|i| i.record == dose).unwrap();
    assert_eq!(bos.drug.as_deref(), Some("Metoprolol 1 g"));
    assert!(h.items.iter().any(|i| matches!(
        &i.what,
        HandoverWhat::Revision { version: 2, register, .. } if register == "order/meto"
    )));
    // Bo's and Anna's doses, given on the version Nina had replaced: a double dose (and doses
    // on a superseded order), among the flags the new records raised.
    assert!(
        h.flags
            .iter()
            .any(|f| f.kind == "double-dose" && f.evidence.contains(&dose)),
        "{:?}",
        h.flags
    );

    // Nothing new since: an empty handover.
    let again = care::handover(&w.anna, &p1(), &clock()).unwrap();
    assert!(again.items.is_empty(), "{:?}", again.items);
    // What another phone uploads afterwards is new to her at the next handover.
    care::add_note(&w.nils, &p1(), "Written offline earlier.", &clock()).unwrap();
    sync(&w.nils).await;
    sync(&w.anna).await;
    let late = care::handover(&w.anna, &p1(), &clock()).unwrap();
    assert_eq!(late.items.len(), 1);

    // Each view is in the server's audit log as a read, once Anna's phone has synced.
    sync(&w.anna).await;
    let logged = reads(&w.server, &w.anna);
    assert_eq!(
        logged.iter().filter(|r| r.starts_with("handover")).count(),
        4,
        "{logged:?}"
    );
}

/// S14's "since this user last viewed them": opening the person's page (`show`, the care API's
/// `overview`) counts as viewing them, so the handover after it lists only what others wrote
/// since the page, not a first handover's whole last day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s14_handover_after_viewing_the_persons_page_lists_only_what_came_since() {
    let w = World::new().await;
    w.order("meto", "Metoprolol");
    w.sync_all().await;
    // Anna opens Dagny's page: she has seen Nina's order and delegations.
    let page = care::overview(&w.anna, &p1(), &clock(), 0).unwrap();
    assert_eq!(page.orders.len(), 1);
    let note = care::add_note(&w.bo, &p1(), "Fell in the hallway, no injury.", &clock())
        .unwrap()
        .record;
    w.sync_all().await;

    let h = care::handover(&w.anna, &p1(), &clock()).unwrap();
    assert!(h.since.is_some(), "the page was a view");
    let listed: Vec<_> = h.items.iter().map(|i| (&i.record, i.kind)).collect();
    assert_eq!(listed, vec![(&note, "note")]);
    // The page and the handover are both in the audit log as reads.
    sync(&w.anna).await;
    let logged = reads(&w.server, &w.anna);
    assert!(
        logged.iter().any(|r| r.starts_with("overview")),
        "{logged:?}"
    );
    assert!(
        logged.iter().any(|r| r.starts_with("handover")),
        "{logged:?}"
    );
}

/// Staff names reach devices: the round's answer names the staff the user works with (their
/// organisation's and everyone on their people's care teams, with role and organisation), and
/// the device keeps them, so that views name "Nina Berg" offline where records carry `nina`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_names_reach_devices_with_role_and_organisation_and_stay_offline() {
    let mut server = TestServer::start().await;
    let d = &server.directory;
    d.add_org("norr", "Hemtjänst Norr").unwrap();
    d.add_org("syd", "Hemtjänst Syd").unwrap();
    for (u, name, role, org) in [
        ("anna", "Anna Lind", Role::Carer, "norr"),
        ("nina", "Nina Berg", Role::Nurse, "norr"),
        ("olle", "Olle Ek", Role::Carer, "norr"),
        ("sara", "Sara Holm", Role::Nurse, "syd"),
        ("sven", "Sven Dahl", Role::Carer, "syd"),
    ] {
        d.add_user(&uid(u), name, role, org).unwrap();
    }
    d.add_patient(&p1(), "Dagny Berg").unwrap();
    d.add_patient(&patient("p2"), "Erik Sund").unwrap();
    for u in ["anna", "nina", "sara"] {
        d.assign(&uid(u), &p1()).unwrap();
    }
    d.assign(&uid("sven"), &patient("p2")).unwrap();
    server.state.refresh().unwrap();
    let homes = tempfile::tempdir().unwrap();
    let anna = enroll_runtime(
        &server,
        &homes.path().join("anna"),
        "anna",
        SyncOptions::default(),
    )
    .await;

    // Before the server has said anything: ids only.
    assert_eq!(anna.staff().unwrap().name(&uid("nina")), None);
    assert_eq!(anna.staff().unwrap().display(&uid("nina")), "nina");

    // `refresh_staff` (what `nara sync` asks) keeps the names alone: the round's view of
    // the server stays as it was (none yet).
    let staff = anna.refresh_staff().await.unwrap();
    assert_eq!(staff.display(&uid("nina")), "Nina Berg");
    assert_eq!(anna.server_round().unwrap().now, None);

    let round = anna.refresh_round(0).await.unwrap();
    let named: Vec<&str> = round.staff.iter().map(|m| m.user.as_str()).collect();
    // Her organisation (Olle, not on a case of hers), her people's other carers (Sara, of
    // another organisation), herself, and the directory (the author of people's names); not
    // Sven, of another organisation and on none of her people's cases.
    assert_eq!(named, ["anna", "nina", "olle", "sara", "directory"]);
    let staff = anna.staff().unwrap();
    let nina = staff.get(&uid("nina")).unwrap();
    assert_eq!(
        (
            nina.name.as_str(),
            nina.role.as_str(),
            nina.organisation.as_str()
        ),
        ("Nina Berg", "nurse", "Hemtjänst Norr")
    );
    let sara = staff.get(&uid("sara")).unwrap();
    assert_eq!(sara.organisation, "Hemtjänst Syd");
    assert_eq!(staff.display(&uid("directory")), "the directory");
    assert_eq!(staff.name(&uid("sven")), None);

    // Offline, the device still names them.
    server.stop().await;
    assert_eq!(anna.staff().unwrap().display(&uid("nina")), "Nina Berg");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_dose_that_arrives_in_a_batch_is_reported_as_a_raised_flag() {
    let w = World::new().await;
    w.order("meto", "Metoprolol");
    w.sync_all().await;
    // Both carers give the 08:00 dose offline; Bo's phone uploads first.
    give(&w.bo, "meto", false).unwrap();
    give(&w.anna, "meto", false).unwrap();
    let first = sync(&w.bo).await;
    assert!(first.flags_raised.is_empty(), "{first:?}");
    // Anna's phone receives Bo's dose: the chart of the person now has a flag it had not.
    let report = sync(&w.anna).await;
    assert!(!report.flags_raised.is_empty(), "{report:?}");
    assert!(report.flags_raised.iter().all(|f| f.patient == p1()));
    // Nothing new at the next sync: no flag raised again.
    let again = sync(&w.anna).await;
    assert!(again.flags_raised.is_empty(), "{again:?}");
}
