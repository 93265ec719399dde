//! The world of the web views' browser tests (`tests/tests/web.rs`, `web_people.rs`): team
//! Norr, its people, and p1's record written by real phones.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use server::audit::{AuditAction, AuditLog};
use server::directory::Directory;
use sync_core::model::{EventBody, GoalStatus, InterventionStatus, Register, RegisterValue};
use sync_core::{DocumentId, Month, Role, Timestamp, UserId};

use crate::browser::Browser;
use crate::net::{SyncEnd, TestDevice, TestServer};
use crate::{order, patient, rid};

pub fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

/// Team Norr with carer anna, nurse nina and coordinator kim (the admin role); persons p1, p2.
pub async fn setup() -> TestServer {
    let server = TestServer::start().await;
    let d = &server.directory;
    d.add_org("norr", "Hemtjänst Norr").unwrap();
    d.add_user(&uid("anna"), "Anna Andersson", Role::Carer, "norr")
        .unwrap();
    d.add_user(&uid("nina"), "Nina Nilsson", Role::Nurse, "norr")
        .unwrap();
    d.add_user(&uid("kim"), "Kim Karlsson", Role::Admin, "norr")
        .unwrap();
    d.add_user(&uid("bo"), "Bo Berg", Role::Carer, "norr")
        .unwrap();
    d.add_user(&uid("nils"), "Nils Nord", Role::Nurse, "norr")
        .unwrap();
    d.add_patient(&patient("p1"), "Astrid Berg").unwrap();
    d.add_patient(&patient("p2"), "Gustav Lind").unwrap();
    server
}

pub fn assign(server: &TestServer, user: &str, p: &str) {
    server.directory.assign(&uid(user), &patient(p)).unwrap();
    server.state.refresh().unwrap();
}

pub fn actions(server: &TestServer, action: AuditAction) -> Vec<server::audit::AuditRecord> {
    server.audit.latest(&[action], 1000).unwrap()
}

/// Signs in with a fresh code for `id`; returns the page's status.
pub async fn sign_in(browser: &mut Browser, server: &TestServer, id: &str, person: bool) -> u16 {
    let code = server.login_code(id, person);
    browser.goto(&server.web_url("/app/login")).await;
    browser.fill("#code", &code).await;
    browser.submit("form.signin button").await
}

pub fn quiet(end: SyncEnd) {
    assert!(
        matches!(end, SyncEnd::Quiet(_)),
        "sync did not complete: {end:?}"
    );
}

/// The month the server's clock is in (the journal a note of now goes in).
pub fn this_month(ms: i64) -> Month {
    server::admin_cli::format_ms(ms)[..7].parse().unwrap()
}

/// Nina (nurse) writes p1's plan and medication, Anna (carer) a note of today; both sync.
pub async fn record_of_p1(server: &TestServer, nina: &mut TestDevice, anna: &mut TestDevice) {
    let p1 = patient("p1");
    let now = Timestamp(server.web_clock.now_ms());
    let author = nina.author.clone();
    nina.repo
        .change(&DocumentId::care_plan(&p1), &author, now, |e| {
            e.create(
                rid("g-1"),
                Register::Goal(rid("g-1")),
                RegisterValue::Goal {
                    title: "Gå till brevlådan själv".into(),
                    status: GoalStatus::Active,
                },
                Some("Med rollator, varje förmiddag"),
            )?;
            e.create(
                rid("i-1"),
                Register::Intervention(rid("i-1")),
                RegisterValue::Intervention {
                    title: "Promenadstöd".into(),
                    responsible_organisation: "Hemtjänst Norr".into(),
                    status: InterventionStatus::InProgress,
                    goal: Some(rid("g-1")),
                },
                Some("Två gånger i veckan"),
            )?;
            e.revise(
                rid("r-1"),
                Register::Responsibility,
                vec![],
                RegisterValue::Responsibility {
                    organisation: "Region Norrbotten, Vårdcentral Kalix".into(),
                    person: Some("Dr Lena Lind".into()),
                },
            )?;
            e.revise(
                rid("f-1"),
                Register::FollowUp,
                vec![],
                RegisterValue::FollowUp {
                    date: "2027-01-15".into(),
                },
            )
        })
        .unwrap();
    let mut current = order("1 tablett", now);
    if let RegisterValue::Order(o) = &mut current {
        // Started today, whatever today is on the machine running the test.
        o.start = server::admin_cli::format_ms(now.0)[..10].to_owned();
    }
    nina.repo
        .change(&DocumentId::medication(&p1), &author, now, |e| {
            e.create(rid("o-1"), Register::Order(rid("o-1")), current, None)
        })
        .unwrap();
    quiet(nina.sync(server).await);
    let carer = anna.author.clone();
    anna.repo
        .change(
            &DocumentId::journal(&p1, this_month(now.0)),
            &carer,
            now,
            |e| {
                e.record(
                    rid("n-1"),
                    EventBody::Note {
                        body: "Promenad till brevlådan, gick bra.".into(),
                        corrects: None,
                    },
                )
            },
        )
        .unwrap();
    quiet(anna.sync(server).await);
}

/// Nurse `nurse`'s delegation `id` of medication to `to` for p1, from `from` until `until`
/// (ms), written on her phone and synced.
pub async fn delegate_p1(
    server: &TestServer,
    nurse: &mut TestDevice,
    id: &str,
    to: &str,
    (from, until): (i64, i64),
) {
    let author = nurse.author.clone();
    let value = RegisterValue::Delegation(sync_core::model::Delegation {
        to: uid(to),
        scope: vec!["medication".into()],
        from: Timestamp(from),
        until: Timestamp(until),
        revoked: false,
    });
    nurse
        .repo
        .change(
            &DocumentId::patient_header(&patient("p1")),
            &author,
            Timestamp(server.web_clock.now_ms()),
            |e| {
                e.create(
                    rid(&format!("{id}-v1")),
                    Register::Delegation(rid(id)),
                    value,
                    None,
                )
            },
        )
        .unwrap();
    quiet(nurse.sync(server).await);
}

/// The UTC date of `ms` as the pages write a date in Swedish: `24 november 2026`.
pub fn sv_date(ms: i64) -> String {
    const MONTHS: [&str; 12] = [
        "januari",
        "februari",
        "mars",
        "april",
        "maj",
        "juni",
        "juli",
        "augusti",
        "september",
        "oktober",
        "november",
        "december",
    ];
    let d = server::admin_cli::format_ms(ms);
    let month: usize = d[5..7].parse().unwrap();
    let day: u32 = d[8..10].parse().unwrap();
    format!("{day} {} {}", MONTHS[month - 1], &d[..4])
}
