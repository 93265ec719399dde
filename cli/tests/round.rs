//! The `nara` binary on the rest of a worker's day, against a real `nara-server` on a real TLS
//! socket: the medication round (a "when needed" order, a delegation, a dose past the limit
//! given anyway, its follow-up, the signing list), a visit saved together from JSON, and the
//! person's own "what matters to me" in `show`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use nara_tests::now_ms;
use sync_core::Timestamp;

/// The medication round on the command line: a nurse's "when needed" order and delegation, the
/// carer's dose refused past the limit then given anyway, its follow-up, and the signing list
/// with its JSON names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn medication_round_prn_delegation_and_signing_list() {
    let w = World::new().await;
    let (nina, anna) = (w.home("nina"), w.home("anna"));
    w.enroll("nina").await;
    w.enroll("anna").await;
    let day = |days: i64| {
        sync_core::model::round::local_slot(Timestamp(now_ms() + days * 86_400_000), 0)[..10]
            .to_owned()
    };
    let base = [
        "order",
        "--patient",
        "p1",
        "--drug",
        "Paracetamol",
        "--strength",
        "500 mg",
        "--dose",
        "2 tablets",
        "--route",
        "oral",
        "--delegated",
    ];
    let mut prn = base.to_vec();
    let start = day(-3);
    prn.extend([
        "--order",
        "para",
        "--start",
        &start,
        "--prn",
        "--max-per-day",
        "3",
        "--min-interval",
        "4",
        "--follow-up-minutes",
        "60",
    ]);
    let order = ok(&nina, &prn).await;
    assert_eq!(
        order["value"]["prn"]["min_interval_minutes"], 240,
        "{order}"
    );
    let mut scheduled = base.to_vec();
    scheduled.extend(["--order", "morning", "--start", &start, "--times", "00:00"]);
    ok(&nina, &scheduled).await;
    let (from, until) = (day(-1), day(20));
    ok(
        &nina,
        &[
            "delegate",
            "--to",
            "anna",
            "--scope",
            "medication,insulin",
            "--patient",
            "p1",
            "--from",
            &from,
            "--until",
            &until,
        ],
    )
    .await;
    let ending = ok(&nina, &["delegations", "--ending-within", "30"]).await;
    assert_eq!(ending["delegations"][0]["to"], "anna", "{ending}");
    assert_eq!(ending["delegations"][0]["scope"][1], "insulin");
    let none = ok(&nina, &["delegations", "--ending-within", "10"]).await;
    assert_eq!(none["delegations"].as_array().unwrap().len(), 0, "{none}");
    ok(&nina, &["sync"]).await;
    ok(&anna, &["sync"]).await;

    let give = ["give", "--patient", "p1", "--order", "para"];
    let first = ok(&anna, &give).await;
    let err = fails(&anna, &give).await;
    assert!(err.contains("--anyway"), "{err}");
    let mut anyway = give.to_vec();
    anyway.extend(["--anyway", "--reason", "pain after a fall"]);
    let second = ok(&anna, &anyway).await;
    let flags = ok(&anna, &["flags", "--patient", "p1"]).await;
    assert_eq!(flags["flags"][0]["kind"], "prn-limit", "{flags}");
    assert_eq!(flags["flags"][0]["evidence"][0], second["record"]);
    let a = first["record"].as_str().unwrap();
    ok(
        &anna,
        &[
            "effect",
            "--patient",
            "p1",
            "--administration",
            a,
            "--effect",
            "good",
            "--note",
            "slept after",
        ],
    )
    .await;

    let round = ok(
        &anna,
        &[
            "round",
            "--patient",
            "p1",
            "--from",
            "00:00",
            "--to",
            "23:59",
        ],
    )
    .await;
    assert_eq!(round["server_reached"], true, "{round}");
    assert_eq!(round["slots"][0]["order"], "morning", "{round}");
    assert!(
        ["open", "overdue", "unknown"].contains(&round["slots"][0]["status"].as_str().unwrap()),
        "{round}"
    );
    assert_eq!(round["follow_ups"][0]["effect"], "good", "{round}");
    assert_eq!(round["follow_ups"][1]["administration"], second["record"]);
    // The human list reads as sentences with local times, not JSON.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_nara"))
        .arg("--home")
        .arg(&anna)
        .args(["round", "--patient", "p1"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Signing list from"), "{text}");
    assert!(text.contains("Paracetamol given"), "{text}");
    assert!(
        text.contains("Paracetamol 500 mg, 2 tablets by mouth for Person 1 (p1)"),
        "{text}"
    );
    assert!(text.contains("effect good (slept after)"), "{text}");
    assert!(!text.contains('{'), "{text}");
}

/// `nara` for people (no `--json`): what it prints, after checking it succeeded.
async fn text(home: &std::path::Path, args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_nara"))
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "nara {args:?}: {text}");
    text
}

/// The person's page gives today's slots the status the signing list gives them: a slot past
/// its window with nothing recorded is overdue or unknown on both, never "open" on the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_gives_a_slot_the_status_the_signing_list_gives() {
    let w = World::new().await;
    let (nina, anna) = (w.home("nina"), w.home("anna"));
    w.enroll("nina").await;
    w.enroll("anna").await;
    let start = sync_core::model::round::local_slot(Timestamp(now_ms() - 3 * 86_400_000), 0)[..10]
        .to_owned();
    // No minutes either side: the midnight slot's window has closed by any time of the day.
    ok(
        &nina,
        &[
            "order",
            "--patient",
            "p1",
            "--order",
            "night",
            "--drug",
            "Metoprolol",
            "--strength",
            "50 mg",
            "--dose",
            "1 tablet",
            "--route",
            "oral",
            "--times",
            "00:00,23:59",
            "--window-minutes",
            "0",
            "--start",
            &start,
            "--delegated",
        ],
    )
    .await;
    ok(&nina, &["sync"]).await;
    ok(&anna, &["sync"]).await;

    let round = ok(&anna, &["round", "--patient", "p1"]).await;
    let show = ok(&anna, &["show", "--patient", "p1"]).await;
    let statuses = |slots: &serde_json::Value| -> Vec<(String, String)> {
        slots
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["slot"].as_str().unwrap().to_owned(),
                    s["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let listed = statuses(&round["slots"]);
    assert_eq!(listed.len(), 2, "{round}");
    assert_eq!(statuses(&show["today"]), listed, "{show}");
    let (midnight, status) = &listed[0];
    assert!(midnight.ends_with("T00:00"), "{listed:?}");
    assert!(
        ["overdue", "unknown"].contains(&status.as_str()),
        "{listed:?}"
    );

    // In words: the page says what the list says.
    let said = if status == "overdue" {
        "OVERDUE: nothing recorded"
    } else {
        "unknown: nothing recorded here"
    };
    let list = text(&anna, &["round", "--patient", "p1"]).await;
    assert!(
        list.contains(&format!("by mouth for Person 1 (p1): {said}")),
        "{list}"
    );
    let page = text(&anna, &["show", "--patient", "p1"]).await;
    assert!(
        page.contains(&format!("00:00 Metoprolol 50 mg: {said}")),
        "{page}"
    );
    assert!(!page.contains("00:00 Metoprolol 50 mg: open"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_prints_what_matters_to_the_person_with_who_wrote_it() {
    let mut w = World::new().await;
    w.enroll("anna").await;
    let anna = w.home("anna");
    // The person signs in to the web views (over HTTPS, no browser) and adds a wish.
    let code = w.server.login_code("p1", true);
    let cookie = w.server.web_sign_in(&code).await;
    let status = w
        .server
        .web_post(
            &cookie,
            "/app/person/p1",
            "/app/person/p1/what-matters",
            "text=Att+f%C3%A5+lyssna+p%C3%A5+radio+p%C3%A5+morgonen.",
        )
        .await;
    assert_eq!(status, 303);
    ok(&anna, &["sync"]).await;
    let show = ok(&anna, &["show", "--patient", "p1"]).await;
    let wishes = show["what_matters"].as_array().unwrap();
    assert_eq!(wishes.len(), 1, "{show}");
    assert_eq!(wishes[0]["text"], "Att få lyssna på radio på morgonen.");
    assert_eq!(wishes[0]["author"]["user"], "p1");
    assert_eq!(wishes[0]["author"]["role"], "person");
    // And in words, for people.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_nara"))
        .arg("--home")
        .arg(&anna)
        .args(["show", "--patient", "p1"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("Att få lyssna på radio på morgonen.")
            && text.contains("written by p1 as person"),
        "{text}"
    );
    w.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visit_is_saved_together_from_json() {
    let w = World::new().await;
    w.enroll("nina").await;
    w.enroll("anna").await;
    let [nina, anna] = ["nina", "anna"].map(|u| w.home(u));
    order_metoprolol(&nina).await;
    // A carer's dose of a delegated order needs her delegation (issue 14).
    delegate_for_a_month(&nina, "anna").await;
    ok(&nina, &["sync"]).await;
    ok(&anna, &["sync"]).await;
    let file = w.root.join("visit.json");
    std::fs::write(
        &file,
        r#"{"tasks": [{"task": "shower", "done": true}, {"task": "walk", "done": false, "reason": "rain"}],
            "notes": ["Calm, ate well."],
            "observations": [{"code": "heart-rate", "value": 72, "unit": "/min"}],
            "doses": [{"order": "metoprolol", "slot": "2026-11-24T08:00", "outcome": "given"}]}"#,
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let saved = ok(&anna, &["visit", "--patient", "p1", "--file", file]).await;
    // Start, two tasks, the note, the observation, stop; and the dose: in two changes.
    assert_eq!(saved["records"].as_array().unwrap().len(), 7, "{saved}");
    assert_eq!(saved["changes"], 2);
    assert_eq!(saved["pending"], 2);
    // A visit that does not parse, or whose dose is refused, saves nothing.
    std::fs::write(
        w.root.join("bad.json"),
        r#"{"notes": ["x"], "mood": "fine"}"#,
    )
    .unwrap();
    let bad = w.root.join("bad.json");
    fails(
        &anna,
        &["visit", "--patient", "p1", "--file", bad.to_str().unwrap()],
    )
    .await;
    std::fs::write(
        w.root.join("refused.json"),
        r#"{"notes": ["x"], "doses": [{"order": "metoprolol", "slot": "2026-11-24T09:00", "outcome": "given"}]}"#,
    )
    .unwrap();
    let refused = w.root.join("refused.json");
    let err = fails(
        &anna,
        &[
            "visit",
            "--patient",
            "p1",
            "--file",
            refused.to_str().unwrap(),
        ],
    )
    .await;
    assert!(err.contains("no slot at 09:00"), "{err}");
    assert_eq!(pending(&anna).await, 2);
    ok(&anna, &["sync"]).await;
    assert_eq!(pending(&anna).await, 0);
}
