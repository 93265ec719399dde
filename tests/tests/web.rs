//! The web views (`/app/`, issue 15) in a real browser: Debian's Chromium driven by
//! `playwright-core` (`tests/src/browser.rs`) against the real server over TLS on 127.0.0.1,
//! with real phones (`TestDevice`) syncing beside it. Every page is checked with axe-core (no
//! serious or critical violation) and photographed into `target/web-screenshots/`.
//! Time passes on the server's web clock (`TestServer::web_clock`), never by waiting.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use nara_tests::browser::Browser;
use nara_tests::net::{TestDevice, TestServer};
use nara_tests::web_world::*;
use nara_tests::*;
use server::audit::{AuditAction, AuditLog};
use server::directory::Directory;
use sync_core::model::{
    AdministrationOutcome, CareDocument, EventBody, Register, RegisterState, RegisterValue,
};
use sync_core::protocol::DeviceSession;
use sync_core::protocol::signatures;
use sync_core::signing::{self, PublicKey};
use sync_core::{DeviceId, DocumentId, Role, Timestamp};

const HOUR_MS: i64 = 60 * 60 * 1000;
const DAY_MS: i64 = 24 * HOUR_MS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_sign_in_with_a_one_time_code_then_sign_out() {
    let mut server = setup().await;
    let mut b = Browser::start(&server.pin).await;

    // The sign-in page, Swedish first.
    assert_eq!(b.goto(&server.web_url("/app/")).await, 200);
    assert!(b.text("h1").await.contains("Logga in"));
    b.assert_accessible("sign-in").await;
    b.screenshot("signin").await;

    // A wrong code is refused and audited.
    b.fill("#code", "AAAA-BBBB-CCCC").await;
    assert_eq!(b.submit("form.signin button").await, 401);
    assert!(b.text("[role=alert]").await.contains("Koden är fel"));
    assert_eq!(actions(&server, AuditAction::AuthFailed).len(), 1);

    // The coordinator's code becomes a session: HttpOnly, Secure, SameSite=Strict, 8 hours.
    let code = server.login_code("kim", false);
    b.fill("#code", &code).await;
    assert_eq!(b.submit("form.signin button").await, 200);
    assert!(b.text("h1").await.contains("Översikt för samordnare"));
    let cookies = b.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c["name"] == "nara_session")
        .expect("a session cookie");
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["secure"], true);
    assert_eq!(session["sameSite"], "Strict");
    let lifetime = session["expires"].as_f64().unwrap() - (server::app::now_ms() / 1000) as f64;
    assert!(
        (7.9 * 3600.0..=8.0 * 3600.0 + 60.0).contains(&lifetime),
        "{lifetime}"
    );
    let signed_in = actions(&server, AuditAction::SignIn);
    assert_eq!(signed_in.len(), 1);
    assert_eq!(signed_in[0].entry.actor, "kim");

    // The same code does not work twice.
    let token = session["value"].as_str().unwrap().to_owned();
    b.clear_cookies().await;
    b.goto(&server.web_url("/app/login")).await;
    b.fill("#code", &code).await;
    assert_eq!(b.submit("form.signin button").await, 401);

    // A form without the session's CSRF token is refused.
    let cookie = format!("nara_session={token}");
    let (status, _, _) = server
        .https_request(
            "POST",
            "/app/coordinator/assignments",
            &[
                ("Cookie", &cookie),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            "csrf=forged&user=anna&patient=p1&op=assign",
        )
        .await;
    assert_eq!(status, 403);
    assert!(server.directory.assignments().unwrap().is_empty());

    // English on request; then sign out, which ends the session on the server.
    b.goto(&server.web_url("/app/login?lang=en")).await;
    let code = server.login_code("kim", false);
    b.fill("#code", &code).await;
    assert_eq!(b.submit("form.signin button").await, 200);
    assert!(b.text("h1").await.contains("Coordinator's dashboard"));
    let token = b
        .cookies()
        .await
        .iter()
        .find(|c| c["name"] == "nara_session")
        .and_then(|c| c["value"].as_str().map(str::to_owned))
        .unwrap();
    assert_eq!(b.submit("form.signout button").await, 200);
    assert!(b.text("h1").await.contains("Sign in"));
    assert_eq!(actions(&server, AuditAction::SignOut).len(), 1);
    let cookie = format!("nara_session={token}");
    let (status, head, _) = server
        .https_request("GET", "/app/coordinator", &[("Cookie", &cookie)], "")
        .await;
    assert_eq!(status, 303, "a revoked session is sent to sign in: {head}");
    assert!(head.to_lowercase().contains("location: /app/login"));

    b.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_failed_sign_ins_are_limited_per_address() {
    let mut server = setup().await;
    let (status, head, body) = server.https_request("GET", "/app/login", &[], "").await;
    assert_eq!(status, 200);
    let form_cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: nara_signin="))
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_owned();
    assert!(body.contains(&form_cookie));
    let cookie = format!("nara_signin={form_cookie}");
    let form = format!("form_token={form_cookie}&code=AAAABBBBCCCC");
    let headers = [
        ("Cookie", cookie.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    let mut statuses = Vec::new();
    for _ in 0..25 {
        let (status, _, _) = server
            .https_request("POST", "/app/login", &headers, &form)
            .await;
        statuses.push(status);
    }
    assert_eq!(statuses[0], 401);
    assert_eq!(*statuses.last().unwrap(), 429, "{statuses:?}");
    // Even a valid code is refused while the address is limited.
    let code = server.login_code("kim", false);
    let form = format!("form_token={form_cookie}&code={code}");
    let (status, _, _) = server
        .https_request("POST", "/app/login", &headers, &form)
        .await;
    assert_eq!(status, 429);
    // The run of failures is audited once.
    let failed = actions(&server, AuditAction::AuthFailed);
    assert_eq!(failed.len(), 1);
    assert!(failed[0].entry.detail.contains("web sign-ins"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_sees_a_phone_that_has_not_synced_turn_stale() {
    let mut server = setup().await;
    assign(&server, "anna", "p1");
    let mut phone = TestDevice::enroll(&server, "anna").await;
    quiet(phone.sync(&server).await);
    let device = phone.author.device.to_string();

    let mut b = Browser::start(&server.pin).await;
    assert_eq!(sign_in(&mut b, &server, "kim", false).await, 200);
    let row = format!("tr.device[data-device='{device}'] .badge");
    assert_eq!(b.attr(&row, "data-state").await.as_deref(), Some("fresh"));
    assert!(b.text("caption").await.contains("Hemtjänst Norr"));
    b.assert_accessible("dashboard").await;
    b.screenshot("dashboard").await;

    // Three hours without a sync: stale.
    server.web_clock.advance(3 * HOUR_MS);
    b.goto(&server.web_url("/app/coordinator")).await;
    assert_eq!(b.attr(&row, "data-state").await.as_deref(), Some("stale"));
    assert!(b.text(&row).await.contains("Efter"));
    b.screenshot("dashboard-stale").await;

    // A day: offline. The session (8 hours) has ended by then: sign in again.
    server.web_clock.advance(22 * HOUR_MS);
    b.goto(&server.web_url("/app/coordinator")).await;
    assert!(
        b.text("h1").await.contains("Logga in"),
        "the session expired"
    );
    let code = server.login_code_api("kim", false).await;
    b.fill("#code", &code).await;
    assert_eq!(b.submit("form.signin button").await, 200);
    assert_eq!(b.attr(&row, "data-state").await.as_deref(), Some("offline"));

    // Assignments changed from the page are the coordinator's, audited, and effective.
    b.select("#assign-user", "nina").await;
    b.select("#assign-patient", "p2").await;
    assert_eq!(b.submit("form.inline button:has-text('Koppla')").await, 200);
    assert!(
        server.directory.assignments().unwrap()[&uid("nina")].contains(&patient("p2")),
        "assigned from the page"
    );
    let assigned = actions(&server, AuditAction::Assign);
    assert_eq!(assigned[0].entry.actor, "kim");
    assert_eq!(assigned[0].entry.patient, Some(patient("p2")));
    assert_eq!(
        b.count("tr.assignment[data-user='nina'][data-patient='p2']")
            .await,
        1
    );

    // An enrollment code for a new phone, shown once; the audit chain verified.
    b.select("#enroll-user", "anna").await;
    assert_eq!(
        b.submit("form[action='/app/coordinator/enrollments'] button")
            .await,
        200
    );
    assert!(b.text("[role=status]").await.contains("anna"));
    assert!(
        b.text("table.open-codes").await.contains("Anna Andersson"),
        "the unused code is listed (never the code itself)"
    );
    assert_eq!(
        b.submit("form[action='/app/coordinator/audit'] button")
            .await,
        200
    );
    assert!(b.text("#chain-status").await.contains("Kedjan är hel"));
    b.assert_accessible("dashboard after actions").await;

    // The dashboard is operational only: it disclosed no document.
    assert!(
        server
            .audit
            .latest(&[AuditAction::Read], 100)
            .unwrap()
            .iter()
            .all(|r| r.entry.patient.is_none()),
        "the dashboard read no person's record"
    );
    b.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s15_person_sees_the_plan_and_the_nurses_read_adds_a_wish_and_a_carers_phone_shows_it() {
    let mut server = setup().await;
    assign(&server, "anna", "p1");
    assign(&server, "nina", "p1");
    let mut nina = TestDevice::enroll(&server, "nina").await;
    // Anna's phone signs its uploads and keeps the signatures relayed to it.
    let mut anna = TestDevice::enroll_signed(&server, "anna", [6; 32]).await;
    record_of_p1(&server, &mut nina, &mut anna).await;
    // The nurse reads the record on her phone: the read reaches the server's log.
    let p1 = patient("p1");
    DeviceSession::log_read(
        &mut nina.repo,
        &p1,
        "overview",
        Timestamp(server.web_clock.now_ms()),
    )
    .unwrap();
    quiet(nina.sync(&server).await);

    let mut b = Browser::start(&server.pin).await;
    assert_eq!(sign_in(&mut b, &server, "p1", true).await, 200);
    assert!(b.text("h1").await.contains("Min journal"));
    let plan = b.text("section[aria-labelledby=plan-h]").await;
    for expected in [
        "Gå till brevlådan själv",
        "Med rollator, varje förmiddag",
        "Promenadstöd",
        "Hemtjänst Norr",
        "Region Norrbotten, Vårdcentral Kalix",
        "Dr Lena Lind",
        "2027-01-15",
    ] {
        assert!(
            plan.contains(expected),
            "{expected:?} not in the plan: {plan}"
        );
    }
    assert!(b.text("table.medication").await.contains("Metoprolol"));
    assert!(
        b.text("section[aria-labelledby=recent-h]")
            .await
            .contains("Promenad till brevlådan, gick bra.")
    );
    let log = b.text("table.access-log").await;
    assert!(
        log.lines().any(|l| l.contains("Nina Nilsson")
            && l.contains("sjuksköterska")
            && l.contains("Hemtjänst Norr")
            && l.contains("läste")),
        "the nurse's read, by name, role and organisation: {log}"
    );
    // The page itself is a read in the log.
    assert!(
        server
            .audit
            .latest_for_patient(&p1, 50)
            .unwrap()
            .iter()
            .any(|r| r.entry.action == AuditAction::Read && r.entry.actor == "person:p1")
    );
    b.assert_accessible("person").await;
    b.screenshot("person").await;

    // What matters to me: written as the person, shown with who wrote it.
    b.fill("#wish", "Att få dricka kaffe på altanen när solen skiner.")
        .await;
    assert_eq!(b.submit("form.wish-form button").await, 200);
    let wish = b.text("blockquote.wish").await;
    assert!(wish.contains("Att få dricka kaffe på altanen"), "{wish}");
    assert!(wish.contains("Astrid Berg (du)"), "{wish}");
    b.assert_accessible("person with a wish").await;
    b.screenshot("person-wish").await;

    // The carer's phone has it after syncing, written by the person.
    quiet(anna.sync(&server).await);
    let plan_id = DocumentId::care_plan(&p1);
    let on_phone = sync_core::model::person::what_matters(anna.repo.get(&plan_id).unwrap());
    assert_eq!(on_phone.len(), 1);
    assert_eq!(
        on_phone[0].text,
        "Att få dricka kaffe på altanen när solen skiner."
    );
    assert_eq!(on_phone[0].author.role, Role::Person);
    assert_eq!(on_phone[0].author.user.as_str(), "p1");
    assert_eq!(on_phone[0].author.device.as_str(), "web-p1");
    // The wish was signed as a phone signs an upload, by the person's web device, whose key the
    // directory registered: the phone holds the relayed signature, and it vouches for the wish
    // (what a restored server takes back from any phone).
    assert_vouched_by_web_device(&server, &mut anna, &plan_id, "web-p1");
    // And staff cannot write the person's words (the model refuses it on the phone).
    let carer = anna.author.clone();
    assert!(
        anna.repo
            .change(
                &plan_id,
                &carer,
                Timestamp(server.web_clock.now_ms()),
                |e| {
                    e.record(
                        rid("wm-forged"),
                        EventBody::WhatMatters {
                            text: "written for them".into(),
                        },
                    )
                }
            )
            .is_err()
    );

    // Empty words are refused by the model, and the attempt is marked not done in the log.
    let cookie = server.web_sign_in(&server.login_code("p1", true)).await;
    assert_eq!(
        server
            .web_post(
                &cookie,
                "/app/person/p1",
                "/app/person/p1/what-matters",
                "text=+++"
            )
            .await,
        400
    );
    assert!(
        server
            .audit
            .latest_for_patient(&p1, 5)
            .unwrap()
            .iter()
            .any(|r| r.entry.detail.starts_with("NOT DONE"))
    );

    // The person cannot open another person's page.
    assert_eq!(b.goto(&server.web_url("/app/person/p2")).await, 403);
    b.assert_accessible("forbidden").await;
    b.screenshot("forbidden").await;
    b.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_cannot_open_clinical_pages() {
    let mut server = setup().await;
    assign(&server, "nina", "p1");
    let mut b = Browser::start(&server.pin).await;
    assert_eq!(sign_in(&mut b, &server, "kim", false).await, 200);
    assert_eq!(b.goto(&server.web_url("/app/person/p1")).await, 403);
    assert!(b.text("h1").await.contains("behörighet"));
    // Nothing of p1 was read on the coordinator's behalf.
    assert!(
        server
            .audit
            .latest_for_patient(&patient("p1"), 50)
            .unwrap()
            .iter()
            .all(|r| r.entry.action != AuditAction::Read),
    );
    b.close().await;
    server.stop().await;
}

/// Nina's order `o-1` for p1 (version `o-1-v1`, started today, 08:00 and 20:00), synced to the
/// phones given; returns today's date.
async fn order_for_p1(
    server: &TestServer,
    nina: &mut TestDevice,
    others: &mut [&mut TestDevice],
) -> String {
    let now = Timestamp(server.web_clock.now_ms());
    let today = server::admin_cli::format_ms(now.0)[..10].to_owned();
    let mut current = order("1 tablett", Timestamp(now.0 - 60 * 60 * 1000));
    if let RegisterValue::Order(o) = &mut current {
        o.start = today.clone();
    }
    let author = nina.author.clone();
    nina.repo
        .change(&DocumentId::medication(&patient("p1")), &author, now, |e| {
            e.create(rid("o-1-v1"), Register::Order(rid("o-1")), current, None)
        })
        .unwrap();
    quiet(nina.sync(server).await);
    for phone in others.iter_mut() {
        quiet(phone.sync(server).await);
    }
    today
}

fn give(phone: &mut TestDevice, id: &str, slot: &str, at: i64) {
    let p1 = patient("p1");
    let author = phone.author.clone();
    phone
        .repo
        .change(
            &DocumentId::administrations(&p1, this_month(at)),
            &author,
            Timestamp(at),
            |e| {
                e.record(
                    rid(id),
                    EventBody::Administration {
                        order: rid("o-1"),
                        order_revision: rid("o-1-v1"),
                        slot: slot.into(),
                        outcome: AdministrationOutcome::Given,
                        reason: None,
                        occurred_at: Timestamp(at),
                    },
                )
            },
        )
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phones_sign_the_same_dose_and_the_nurse_acknowledges_the_double_dose() {
    let mut server = setup().await;
    for u in ["anna", "bo", "nina"] {
        assign(&server, u, "p1");
    }
    let mut nina = TestDevice::enroll(&server, "nina").await;
    let mut anna = TestDevice::enroll(&server, "anna").await;
    let mut bo = TestDevice::enroll(&server, "bo").await;
    let today = order_for_p1(&server, &mut nina, &mut [&mut anna, &mut bo]).await;
    // Bo has a delegation, which ends in 20 days (at noon UTC: the same date in Sweden);
    // Anna has none.
    let now = server.web_clock.now_ms();
    let ends = (now.div_euclid(DAY_MS) + 20) * DAY_MS + 12 * HOUR_MS;
    delegate_p1(
        &server,
        &mut nina,
        "del-bo",
        "bo",
        (now - 300 * DAY_MS, ends),
    )
    .await;
    // Both carers, offline, sign the 08:00 dose; then both sync.
    let slot = format!("{today}T08:00");
    give(&mut anna, "a-anna", &slot, now);
    give(&mut bo, "a-bo", &slot, now + 1000);
    quiet(anna.sync(&server).await);
    quiet(bo.sync(&server).await);

    let mut b = Browser::start(&server.pin).await;
    assert_eq!(sign_in(&mut b, &server, "nina", false).await, 200);
    assert!(b.text("h1").await.contains("Sjuksköterskans kö"));
    let flag = format!("double-dose/o-1/{slot}");
    let card = format!("article.flag[data-flag='{flag}']");
    let text = b.text(&card).await;
    // What the flag means, in a sentence: the drug, the person, the local date and time.
    let sentence = format!(
        "Möjlig dubbeldos: Metoprolol 50 mg den {} kl. 08:00 till Astrid Berg är signerad 2 gånger.",
        sv_date(now)
    );
    assert!(text.contains(&sentence), "{sentence:?} not in: {text}");
    assert!(
        text.contains("Anna Andersson (undersköterska, Hemtjänst Norr)")
            && text.contains("Bo Berg (undersköterska, Hemtjänst Norr)"),
        "both authors by name, role and organisation: {text}"
    );
    // Anna's dose, without a delegation, is flagged in words too; Bo's is not.
    let no_delegation = b.text("article.flag[data-flag^='no-delegation/']").await;
    assert!(
        no_delegation.contains("Utan giltig delegering: en dos Metoprolol 50 mg till Astrid Berg")
            && no_delegation.contains("Anna Andersson"),
        "{no_delegation}"
    );
    assert_eq!(
        b.count("article.flag[data-flag^='no-delegation/']").await,
        1
    );
    // No raw kinds or slots anywhere on the page.
    let page = b.text("main").await;
    for raw in ["double-dose", "no-delegation", "T08:00", " UTC"] {
        assert!(!page.contains(raw), "{raw:?} shown raw: {page}");
    }
    // Delegations ending within 30 days for the nurse's people: Bo's, by name, task, person
    // and last day (the day before it ends).
    let row = b.text("tr.delegation[data-delegation='del-bo']").await;
    for expected in [
        "Bo Berg (undersköterska, Hemtjänst Norr)",
        "läkemedelsöverlämning",
        "Astrid Berg",
        &sv_date(ends),
    ] {
        assert!(row.contains(expected), "{expected:?} not in: {row}");
    }
    b.assert_accessible("nurse's queue").await;
    b.screenshot("nurse-queue").await;

    // The same in English.
    b.goto(&server.web_url("/app/nurse?lang=en")).await;
    let text = b.text(&card).await;
    assert!(
        text.contains("Possible double dose: Metoprolol 50 mg on")
            && text.contains("at 08:00 for Astrid Berg is signed 2 times."),
        "{text}"
    );
    assert!(
        text.contains("Anna Andersson (carer, Hemtjänst Norr)"),
        "{text}"
    );
    assert!(
        b.text("tr.delegation[data-delegation='del-bo']")
            .await
            .contains("medication administration")
    );
    b.assert_accessible("nurse's queue in English").await;

    // A nurse not assigned to p1 sees none of it and cannot acknowledge it.
    let nils = server.web_sign_in(&server.login_code("nils", false)).await;
    let (status, _, body) = server
        .https_request("GET", "/app/nurse", &[("Cookie", &nils)], "")
        .await;
    assert_eq!(status, 200);
    assert!(!body.contains(&flag) && !body.contains("Astrid"), "{body}");
    let form = format!(
        "patient=p1&flag={}",
        flag.replace(':', "%3A").replace('/', "%2F")
    );
    assert_eq!(
        server
            .web_post(&nils, "/app/nurse", "/app/nurse/flags", &form)
            .await,
        403
    );

    // Acknowledged from the page: the nurse's own change, on every phone after sync.
    assert_eq!(b.submit(&format!("{card} button")).await, 200);
    assert_eq!(b.count(&card).await, 0, "the flag is no longer open");
    let acks = server.audit.latest(&[AuditAction::Accept], 20).unwrap();
    assert!(acks.iter().any(|r| {
        r.entry.actor == "nina"
            && r.entry
                .device
                .as_ref()
                .is_some_and(|d| d.as_str() == "web-nina")
            && r.entry.detail.contains(&flag)
    }));
    quiet(nina.sync(&server).await);
    let flags = nina.repo.chart(&patient("p1"), &[]).unwrap().flags();
    let f = flags
        .iter()
        .find(|f| f.id == flag)
        .expect("the flag on the phone");
    assert!(!f.open, "acknowledged on the phone too");
    assert_eq!(f.acknowledgements[0].author.user.as_str(), "nina");
    // Nothing was deleted: both doses are still there.
    assert_eq!(f.evidence.len(), 2);
    b.close().await;
    server.stop().await;
}

/// The one change of web device `device` in `doc` on `phone` is vouched for by a signature
/// relayed to the phone: made with the key the directory registered for that device, verified
/// against it, and covering the change (`signing::vouched`, the seam a restored server uses).
fn assert_vouched_by_web_device(
    server: &TestServer,
    phone: &mut TestDevice,
    doc_id: &DocumentId,
    device: &str,
) {
    let web = DeviceId::new(device).unwrap();
    let key = PublicKey(
        server
            .directory
            .signing_key(&web)
            .unwrap()
            .unwrap_or_else(|| panic!("{device}'s key is registered")),
    );
    let held = signatures::stored(&phone.repo, doc_id).unwrap();
    let relayed = held
        .iter()
        .find(|s| s.signature.device == web)
        .unwrap_or_else(|| panic!("no signature of {device} on the phone: {held:?}"));
    assert_eq!(relayed.key, key);
    signing::verify(&relayed.signature, &key).unwrap();
    let doc = phone.repo.get(doc_id).unwrap();
    let incoming: Vec<automerge::Change> = doc
        .history()
        .iter()
        .filter_map(|h| doc.automerge_change(&h.change))
        .filter(|c| signing::author_device(c).is_some())
        .collect();
    let written: Vec<automerge::ChangeHash> = incoming
        .iter()
        .filter(|c| signing::author_device(c).as_ref() == Some(&web))
        .map(automerge::Change::hash)
        .collect();
    assert_eq!(written.len(), 1, "one change of {device}");
    let sigs: Vec<_> = held.iter().map(|s| s.signature.clone()).collect();
    let vouched = signing::vouched(
        &CareDocument::new(doc_id.clone()).unwrap(),
        &incoming,
        &sigs,
        |d| server.directory.signing_key(d).unwrap().map(PublicKey),
    );
    assert!(
        vouched.accepted.contains(&written[0]),
        "{device}'s change is vouched for: {vouched:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nurse_resolves_a_conflicting_dose_in_the_browser_and_a_phone_receives_it() {
    let mut server = setup().await;
    for u in ["anna", "nina", "nils"] {
        assign(&server, u, "p1");
    }
    let mut nina = TestDevice::enroll(&server, "nina").await;
    let mut nils = TestDevice::enroll(&server, "nils").await;
    // Anna's phone signs its uploads and keeps the signatures relayed to it.
    let mut anna = TestDevice::enroll_signed(&server, "anna", [5; 32]).await;
    order_for_p1(&server, &mut nina, &mut [&mut nils, &mut anna]).await;
    // Two nurses change the dose at once, offline: neither wins.
    let p1 = patient("p1");
    let meds = DocumentId::medication(&p1);
    let now = Timestamp(server.web_clock.now_ms());
    for (phone, id, dose) in [
        (&mut nina, "o-1-v2a", "2 tabletter"),
        (&mut nils, "o-1-v2b", "1/2 tablett"),
    ] {
        let author = phone.author.clone();
        let mut value = order(dose, now);
        let RegisterValue::Order(o) = &mut value else {
            unreachable!()
        };
        o.start = server::admin_cli::format_ms(now.0)[..10].to_owned();
        phone
            .repo
            .change(&meds, &author, now, |e| {
                e.update(rid(id), Register::Order(rid("o-1")), value)
            })
            .unwrap();
    }
    quiet(nina.sync(&server).await);
    quiet(nils.sync(&server).await);

    let mut b = Browser::start(&server.pin).await;
    assert_eq!(sign_in(&mut b, &server, "nina", false).await, 200);
    let conflict = b.text("article.conflict").await;
    assert!(
        conflict.contains("Astrid Berg: ordinationen av Metoprolol 50 mg"),
        "{conflict}"
    );
    assert!(
        conflict.contains("2 tabletter") && conflict.contains("Nina Nilsson"),
        "{conflict}"
    );
    assert!(
        conflict.contains("1/2 tablett") && conflict.contains("Nils Nord"),
        "{conflict}"
    );
    b.assert_accessible("nurse's queue with a conflict").await;
    b.screenshot("nurse-conflict").await;

    // The nurse chooses Nils's dose.
    assert_eq!(
        b.submit("li.candidate[data-revision='o-1-v2b'] button")
            .await,
        200
    );
    assert_eq!(b.count("article.conflict").await, 0);

    // Anna's phone receives the resolution: one value, superseding both.
    quiet(anna.sync(&server).await);
    match anna
        .repo
        .get(&meds)
        .unwrap()
        .register(&Register::Order(rid("o-1")))
    {
        RegisterState::Value(v) => {
            let RegisterValue::Order(o) = &v.revision.value else {
                panic!("not an order")
            };
            assert_eq!(o.dose, "1/2 tablett");
            assert_eq!(v.revision.author.user.as_str(), "nina");
            assert_eq!(v.revision.author.device.as_str(), "web-nina");
            let mut superseded = v.revision.supersedes.clone();
            superseded.sort();
            assert_eq!(superseded, vec![rid("o-1-v2a"), rid("o-1-v2b")]);
        }
        other => panic!("expected the resolved order, got {other:?}"),
    }
    // The resolution was signed as a phone signs an upload, by Nina's web device, whose key
    // the directory registered; the phone holds the relayed signature, and it vouches for the
    // resolution (what a restored server takes back from any phone).
    assert_vouched_by_web_device(&server, &mut anna, &meds, "web-nina");
    // A coordinator may not open the queue; a carer has no pages.
    b.submit("form.signout button").await;
    assert_eq!(sign_in(&mut b, &server, "kim", false).await, 200);
    assert_eq!(b.goto(&server.web_url("/app/nurse")).await, 403);
    b.close().await;
    server.stop().await;
}
