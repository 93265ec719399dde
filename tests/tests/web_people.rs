//! The web views for the people around a person's record (issue 15), in Debian's Chromium as in
//! `web.rs`: a relative who reads the person's view only with the person's recorded consent,
//! and the changes each phone last reported waiting for upload on the coordinator's dashboard.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use nara_tests::browser::Browser;
use nara_tests::net::{TestDevice, TestServer};
use nara_tests::web_world::*;
use nara_tests::*;
use server::audit::{AuditAction, AuditLog};
use server::directory::Directory;
use sync_core::model::EventBody;
use sync_core::{DocumentId, Timestamp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_sees_the_persons_view_only_with_consent() {
    let mut server = setup().await;
    assign(&server, "anna", "p1");
    assign(&server, "nina", "p1");
    let mut nina = TestDevice::enroll(&server, "nina").await;
    let mut anna = TestDevice::enroll(&server, "anna").await;
    record_of_p1(&server, &mut nina, &mut anna).await;
    let p1 = patient("p1");
    let relative_reads = |server: &TestServer| {
        server
            .audit
            .latest_for_patient(&p1, 200)
            .unwrap()
            .into_iter()
            .filter(|r| {
                r.entry.action == AuditAction::Read && r.entry.actor == "relative:p1:Erik Berg"
            })
            .count()
    };

    // Without the person's consent there is no code for a relative, by command or API.
    let refused = server.relative_login_code("p1", "Erik Berg").unwrap_err();
    assert!(refused.contains("has not authorised"), "{refused}");
    let body = serde_json::json!({"patient": "p1", "relative": "Erik Berg"}).to_string();
    let (status, _) = server
        .https_admin(
            "POST",
            "/v1/admin/login-codes",
            Some(&server.admin_token),
            Some(&body),
        )
        .await;
    assert_eq!(status, 403);

    // The person authorises Erik on their own page: their own consent, audited as theirs.
    let mut b = Browser::start(&server.pin).await;
    assert_eq!(sign_in(&mut b, &server, "p1", true).await, 200);
    b.fill("#relative-name", "Erik Berg").await;
    assert_eq!(b.submit("form.relative-form button").await, 200);
    assert!(b.text("ul.relatives").await.contains("Erik Berg"));
    let consent = actions(&server, AuditAction::Consent);
    assert_eq!(consent.len(), 1);
    assert_eq!(consent[0].entry.actor, "person:p1");
    assert_eq!(consent[0].entry.patient.as_ref(), Some(&p1));
    b.assert_accessible("person with a relative").await;
    b.screenshot("person-relatives").await;
    let person = server.web_sign_in(&server.login_code("p1", true)).await;

    // Erik signs in and reads the person's view, read only; every page is his read in the log.
    b.clear_cookies().await;
    let code = server.relative_login_code("p1", "Erik Berg").unwrap();
    b.goto(&server.web_url("/app/login")).await;
    b.fill("#code", &code).await;
    assert_eq!(b.submit("form.signin button").await, 200);
    assert!(b.text("p.relative-note").await.contains("närstående"));
    assert!(
        b.text("section[aria-labelledby=plan-h]")
            .await
            .contains("Gå till brevlådan själv")
    );
    assert!(b.text("table.medication").await.contains("Metoprolol"));
    assert_eq!(
        b.count("form.wish-form").await,
        0,
        "a relative does not write"
    );
    assert_eq!(b.count("form.relative-form").await, 0);
    assert_eq!(relative_reads(&server), 1);
    b.assert_accessible("relative").await;
    b.screenshot("relative").await;
    // Another person's page, a wish, or a consent of his own: refused.
    assert_eq!(b.goto(&server.web_url("/app/person/p2")).await, 403);
    let erik = server
        .web_sign_in(&server.relative_login_code("p1", "Erik Berg").unwrap())
        .await;
    for (action, form) in [
        ("/app/person/p1/what-matters", "text=skrivet+av+Erik"),
        ("/app/person/p1/relatives", "name=Eva"),
        ("/app/person/p1/relatives/withdraw", "name=Erik+Berg"),
    ] {
        assert_eq!(
            server.web_post(&erik, "/app/person/p1", action, form).await,
            403,
            "{action}"
        );
    }
    assert_eq!(server.directory.relatives(&p1).unwrap().len(), 1);
    let reads = relative_reads(&server);
    assert!(reads >= 4, "each page a read: {reads}");

    // The person sees Erik's reads in the access log, by name, as a relative.
    let (status, _, page) = server
        .https_request("GET", "/app/person/p1", &[("Cookie", &person)], "")
        .await;
    assert_eq!(status, 200);
    assert!(page.contains("Erik Berg</td><td>närstående"), "{page}");

    // The person withdraws the consent: Erik's sessions end at once, and no new code.
    assert_eq!(
        server
            .web_post(
                &person,
                "/app/person/p1",
                "/app/person/p1/relatives/withdraw",
                "name=Erik+Berg"
            )
            .await,
        303
    );
    assert_eq!(actions(&server, AuditAction::ConsentWithdrawn).len(), 1);
    assert!(server.directory.relatives(&p1).unwrap().is_empty());
    b.goto(&server.web_url("/app/person/p1")).await;
    assert!(
        b.text("h1").await.contains("Logga in"),
        "signed out at once"
    );
    let (status, head, _) = server
        .https_request("GET", "/app/person/p1", &[("Cookie", &erik)], "")
        .await;
    assert_eq!(status, 303, "{head}");
    assert!(head.contains("/app/login"), "{head}");
    assert_eq!(
        relative_reads(&server),
        reads,
        "nothing read after withdrawal"
    );
    let refused = server.relative_login_code("p1", "Erik Berg").unwrap_err();
    assert!(refused.contains("has not authorised"), "{refused}");

    // A consent withdrawn in the directory by any other way ends a live session too.
    server
        .directory
        .grant_relative(&p1, "Erik Berg", 1)
        .unwrap();
    let erik = server
        .web_sign_in(&server.relative_login_code("p1", "Erik Berg").unwrap())
        .await;
    let (status, _, _) = server
        .https_request("GET", "/app/person/p1", &[("Cookie", &erik)], "")
        .await;
    assert_eq!(status, 200);
    server
        .directory
        .withdraw_relative(&p1, "Erik Berg", 2)
        .unwrap();
    let (status, _, _) = server
        .https_request("GET", "/app/person/p1", &[("Cookie", &erik)], "")
        .await;
    assert_eq!(status, 403);
    let (status, _, _) = server
        .https_request("GET", "/app/person/p1", &[("Cookie", &erik)], "")
        .await;
    assert_eq!(status, 303, "the session ended with the consent");
    b.close().await;
    server.stop().await;
}

/// The dashboard's "waiting for upload" cell of `device`.
async fn to_upload(b: &mut Browser, device: &str) -> String {
    b.text(&format!("tr[data-device='{device}'] td.to-upload"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_sees_the_changes_a_phone_has_waiting_for_upload() {
    let mut server = setup().await;
    assign(&server, "anna", "p1");
    assign(&server, "bo", "p1");
    let p1 = patient("p1");
    // Anna's phone (of this build) holds three notes it has not uploaded.
    let mut anna = TestDevice::enroll(&server, "anna").await;
    anna.report_waiting = true;
    let now = Timestamp(server.web_clock.now_ms());
    let carer = anna.author.clone();
    for i in 0..3 {
        anna.repo
            .change(
                &DocumentId::journal(&p1, this_month(now.0)),
                &carer,
                now,
                |e| {
                    e.record(
                        rid(&format!("n-{i}")),
                        EventBody::Note {
                            body: format!("Anteckning {i}"),
                            corrects: None,
                        },
                    )
                },
            )
            .unwrap();
    }
    // Bo's phone is of an older build: it says nothing.
    let mut bo = TestDevice::enroll(&server, "bo").await;
    quiet(bo.sync(&server).await);
    // Nina's phone runs the device runtime, which reports on every connection.
    let home = tempfile::tempdir().unwrap();
    let request = nara_client::EnrollRequest {
        server: format!("https://localhost:{}", server.addr.port()),
        code: server
            .directory
            .enroll(&uid("nina"), nara_tests::now_ms())
            .unwrap(),
        pin: Some(server.pin.clone()),
        ..nara_client::EnrollRequest::default()
    };
    let (nina, _) = nara_client::Device::enroll(home.path(), &request)
        .await
        .unwrap();
    let report = nina.sync_once().await.unwrap();
    assert_eq!(report.pending, 0);

    // Anna's link drops right after she connects: the dashboard shows her three changes.
    anna.connect_and_drop(&server).await;
    let anna_id = anna.author.device.to_string();
    let waiting = server.directory.waiting().unwrap();
    assert_eq!(waiting[&anna.author.device].changes, 3);
    let mut b = Browser::start(&server.pin).await;
    assert_eq!(sign_in(&mut b, &server, "kim", false).await, 200);
    let cell = to_upload(&mut b, &anna_id).await;
    assert!(cell.starts_with("3 ("), "{cell}");
    assert_eq!(
        to_upload(&mut b, bo.author.device.as_str()).await,
        "ej rapporterat"
    );
    let nina_id = server
        .directory
        .devices()
        .unwrap()
        .into_iter()
        .find(|d| d.user.as_str() == "nina")
        .unwrap()
        .id;
    assert!(to_upload(&mut b, nina_id.as_str()).await.starts_with("0 ("));
    b.assert_accessible("dashboard with changes waiting").await;
    b.screenshot("dashboard-waiting").await;

    // She syncs: the three are uploaded, and nothing waits as far as the server can tell.
    quiet(anna.sync(&server).await);
    // The server writes it when the connection has ended on its side too.
    let mut left = 3;
    for _ in 0..600 {
        left = server.directory.waiting().unwrap()[&anna.author.device].changes;
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0);
    b.goto(&server.web_url("/app/coordinator")).await;
    assert!(to_upload(&mut b, &anna_id).await.starts_with("0 ("));
    b.close().await;
    server.stop().await;
}

const HOUR_MS: i64 = 60 * 60 * 1000;
const DAY_MS: i64 = 24 * HOUR_MS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nurses_queue_lists_delegations_ending_within_30_days_for_her_people_only() {
    let mut server = setup().await;
    for u in ["nina", "anna", "bo"] {
        assign(&server, u, "p1");
    }
    let mut nina = TestDevice::enroll(&server, "nina").await;
    quiet(nina.sync(&server).await);
    // Ending at noon UTC: the same date in Sweden.
    let now = server.web_clock.now_ms();
    let noon = |days: i64| (now.div_euclid(DAY_MS) + days) * DAY_MS + 12 * HOUR_MS;
    delegate_p1(
        &server,
        &mut nina,
        "del-anna",
        "anna",
        (now - 100 * DAY_MS, noon(10)),
    )
    .await;
    delegate_p1(&server, &mut nina, "del-bo", "bo", (now - DAY_MS, noon(60))).await;

    let mut b = Browser::start(&server.pin).await;
    assert_eq!(sign_in(&mut b, &server, "nina", false).await, 200);
    assert_eq!(b.count("tr.delegation").await, 1, "Bo's ends in 60 days");
    let row = b.text("tr.delegation[data-delegation='del-anna']").await;
    for expected in [
        "Anna Andersson (undersköterska, Hemtjänst Norr)",
        "läkemedelsöverlämning",
        "Astrid Berg",
        &sv_date(noon(10) - 1),
    ] {
        assert!(row.contains(expected), "{expected:?} not in: {row}");
    }
    b.assert_accessible("nurse's queue, delegations ending")
        .await;

    // Forty days on, Anna's has ended and Bo's ends within 30 days. (The session has ended
    // by then: sign in again.)
    server.web_clock.advance(40 * DAY_MS);
    b.goto(&server.web_url("/app/login")).await;
    let code = server.login_code_api("nina", false).await;
    b.fill("#code", &code).await;
    assert_eq!(b.submit("form.signin button").await, 200);
    assert_eq!(b.count("tr.delegation").await, 1);
    let row = b.text("tr.delegation[data-delegation='del-bo']").await;
    assert!(
        row.contains("Bo Berg") && row.contains(&sv_date(noon(60) - 1)),
        "{row}"
    );
    // A nurse who is not assigned to Astrid sees none of hers.
    b.submit("form.signout button").await;
    let code = server.login_code_api("nils", false).await;
    b.fill("#code", &code).await;
    assert_eq!(b.submit("form.signin button").await, 200);
    assert!(b.text("h1").await.contains("Sjuksköterskans kö"));
    assert_eq!(b.count("tr.delegation").await, 0);
    b.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overdue_dose_is_in_the_nurses_queue_in_words_and_acknowledged_there() {
    let mut server = setup().await;
    for u in ["nina", "anna"] {
        assign(&server, u, "p1");
    }
    let mut nina = TestDevice::enroll(&server, "nina").await;
    let mut anna = TestDevice::enroll(&server, "anna").await;
    // A dose due three hours ago (Swedish local time), its window closed an hour later; both
    // phones sync now, after it closed, and neither recorded it: overdue.
    let now = server.web_clock.now_ms();
    let local = |t: i64| {
        sync_core::model::round::local_slot(
            Timestamp(t),
            server::web::swedish_offset_minutes(Timestamp(t)),
        )
    };
    let slot = local(now - 3 * HOUR_MS);
    let mut value = order("1 tablett", Timestamp(now - 3 * DAY_MS));
    if let sync_core::model::RegisterValue::Order(o) = &mut value {
        o.start = local(now - 2 * DAY_MS)[..10].to_owned();
        o.times = vec![slot[11..].to_owned()];
    }
    let author = nina.author.clone();
    nina.repo
        .change(
            &DocumentId::medication(&patient("p1")),
            &author,
            Timestamp(now),
            |e| {
                e.create(
                    rid("o-1-v1"),
                    sync_core::model::Register::Order(rid("o-1")),
                    value,
                    None,
                )
            },
        )
        .unwrap();
    quiet(nina.sync(&server).await);
    quiet(anna.sync(&server).await);

    let mut b = Browser::start(&server.pin).await;
    assert_eq!(sign_in(&mut b, &server, "nina", false).await, 200);
    let flag = format!("overdue/o-1/{slot}");
    let card = format!("article.flag[data-flag='{flag}']");
    let text = b.text(&card).await;
    assert!(
        text.contains("Försenad: Metoprolol 50 mg den ")
            && text.contains(&format!(
                "kl. {} till Astrid Berg, inget är signerat.",
                &slot[11..]
            )),
        "{text}"
    );
    assert!(!b.text("main").await.contains(&slot), "no raw slot");
    b.assert_accessible("nurse's queue, overdue").await;

    // Acknowledged from the page: closed, and the acknowledgement reaches the phones.
    assert_eq!(b.submit(&format!("{card} button")).await, 200);
    assert_eq!(b.count(&card).await, 0);
    quiet(anna.sync(&server).await);
    let acks = anna
        .repo
        .chart(&patient("p1"), &[])
        .unwrap()
        .acknowledgements();
    let ack = &acks.get(&flag).expect("the acknowledgement on the phone")[0];
    assert_eq!(ack.author.device.as_str(), "web-nina");
    b.close().await;
    server.stop().await;
}
