//! `nara allergy`, `nara resuscitation`, `nara correct`, `nara handover` and the readable
//! output, driving the real `nara` binary against a real server on a real TLS socket: each
//! command's `--json` is one exact object, and its human output reads as sentences (names,
//! drugs, local times), never raw JSON or epoch milliseconds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use nara_tests::net::TestServer;
use nara_tests::{now_ms, patient};
use serde_json::Value;
use server::directory::Directory;
use sync_core::{Role, UserId};

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

struct World {
    server: TestServer,
    _homes: tempfile::TempDir,
    root: PathBuf,
}

impl World {
    async fn new() -> Self {
        let server = TestServer::start().await;
        let d = &server.directory;
        d.add_org("norr", "Hemtjänst Norr").unwrap();
        for (u, name, role) in [
            ("anna", "Anna Lind", Role::Carer),
            ("nina", "Nina Berg", Role::Nurse),
            ("nils", "Nils Ek", Role::Nurse),
        ] {
            d.add_user(&uid(u), name, role, "norr").unwrap();
        }
        d.add_patient(&patient("p1"), "Dagny Berg").unwrap();
        for u in ["anna", "nina", "nils"] {
            d.assign(&uid(u), &patient("p1")).unwrap();
        }
        server.state.refresh().unwrap();
        let homes = tempfile::tempdir().unwrap();
        let root = homes.path().to_path_buf();
        let w = Self {
            server,
            _homes: homes,
            root,
        };
        for u in ["anna", "nina", "nils"] {
            w.enroll(u).await;
        }
        w
    }

    fn home(&self, user: &str) -> PathBuf {
        self.root.join(user)
    }

    async fn enroll(&self, user: &str) {
        let code = self.server.directory.enroll(&uid(user), now_ms()).unwrap();
        let url = format!("https://localhost:{}", self.server.addr.port());
        json(
            &self.home(user),
            &[
                "enroll",
                "--server",
                &url,
                "--code",
                &code,
                "--pin",
                &self.server.pin,
            ],
        )
        .await;
    }

    async fn sync_all(&self) {
        for _ in 0..2 {
            for u in ["anna", "nina", "nils"] {
                json(&self.home(u), &["sync"]).await;
            }
        }
    }
}

async fn run(home: &Path, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_nara"))
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `nara --json ARGS`: one JSON object, success.
async fn json(home: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (ok, out, err) = run(home, &all).await;
    assert!(ok, "nara {args:?} failed: {out} {err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// `nara ARGS` for people: success, and no JSON or epoch milliseconds in what it prints.
async fn human(home: &Path, args: &[&str]) -> String {
    let (ok, out, err) = run(home, args).await;
    assert!(ok, "nara {args:?} failed: {out} {err}");
    readable(&out);
    out
}

fn readable(out: &str) {
    assert!(!out.contains("{\""), "raw JSON in: {out}");
    // A number of ten digits or more standing alone is an epoch time; digits inside a hex id
    // (a record or flag id) are not.
    let digits = out
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.bytes().all(|b| b.is_ascii_digit()))
        .map(str::len)
        .max()
        .unwrap_or(0);
    assert!(digits < 10, "an epoch time in: {out}");
}

/// Today's UTC date (the machines that run this are on UTC, as `nara` reads local time).
fn today() -> String {
    let days = now_ms().div_euclid(24 * 3_600_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allergy_warns_a_dose_corrections_and_handover_read_as_sentences() {
    let mut w = World::new().await;
    let (anna, nina, nils) = (w.home("anna"), w.home("nina"), w.home("nils"));
    // The order starts yesterday, so today's slot is in its range.
    let start = {
        let t = today();
        let day: u32 = t[8..].parse().unwrap();
        if day > 1 {
            format!("{}{:02}", &t[..8], day - 1)
        } else {
            t.clone()
        }
    };
    let slot = format!("{}T08:00", today());
    let order = human(
        &nina,
        &[
            "order",
            "--patient",
            "p1",
            "--order",
            "pc",
            "--drug",
            "Fenoximetylpenicillin",
            "--strength",
            "1 g",
            "--dose",
            "1 tablet",
            "--route",
            "oral",
            "--times",
            "08:00,20:00",
            "--start",
            &start,
            "--delegated",
        ],
    )
    .await;
    assert!(
        order.contains("Fenoximetylpenicillin 1 g, 1 tablet by mouth at 08:00 and 20:00"),
        "{order}"
    );
    // A delegated order's dose needs the carer's delegation (issue 14's round).
    let day = |days: i64| {
        sync_core::model::round::local_slot(sync_core::Timestamp(now_ms() + days * 86_400_000), 0)
            [..10]
            .to_owned()
    };
    human(
        &nina,
        &[
            "delegate",
            "--to",
            "anna",
            "--scope",
            "medication",
            "--patient",
            "p1",
            "--from",
            &day(-30),
            "--until",
            &day(30),
        ],
    )
    .await;
    let out = human(
        &nina,
        &[
            "allergy",
            "--patient",
            "p1",
            "--substance",
            "Penicillin",
            "--criticality",
            "high",
            "--reaction",
            "rash",
        ],
    )
    .await;
    assert!(
        out.contains("Allergy to Penicillin, HIGH criticality, reaction: rash recorded"),
        "{out}"
    );
    let v = json(
        &nina,
        &[
            "resuscitation",
            "--patient",
            "p1",
            "--decision",
            "do-not-attempt",
            "--comment",
            "decided with the family",
        ],
    )
    .await;
    assert_eq!(v["register"], "resuscitation");
    assert_eq!(v["value"]["decision"], "do-not-attempt");
    w.sync_all().await;

    // Staff by the directory's names (which `nara sync` brings), not their ids.
    let out = human(&nina, &["delegations"]).await;
    assert!(
        out.contains("Anna Lind may do medication for Dagny Berg (p1)"),
        "{out}"
    );
    assert!(out.contains("signed by Nina Berg on"), "{out}");

    // Anna's dose warns, records nothing, and is recorded once confirmed.
    let (ok, out, err) = run(
        &anna,
        &["give", "--patient", "p1", "--order", "pc", "--slot", &slot],
    )
    .await;
    assert!(!ok, "{out}");
    assert!(
        err.contains("matches the recorded allergy to Penicillin"),
        "{err}"
    );
    assert!(err.contains("--confirm-allergy"), "{err}");
    assert_eq!(json(&anna, &["status"]).await["pending"], 0);
    let v = json(
        &anna,
        &[
            "give",
            "--patient",
            "p1",
            "--order",
            "pc",
            "--slot",
            &slot,
            "--confirm-allergy",
        ],
    )
    .await;
    let dose = v["record"].as_str().unwrap().to_owned();
    assert_eq!(v["slot"], slot.as_str());
    w.sync_all().await;
    let out = human(&nina, &["round", "--patient", "p1"]).await;
    assert!(out.contains("given by Anna Lind"), "{out}");
    let out = human(&nina, &["show", "--patient", "p1"]).await;
    assert!(
        out.contains("08:00 Fenoximetylpenicillin 1 g: given by Anna Lind"),
        "{out}"
    );

    // Two nurses mark the dose entered in error at once; both marks kept.
    let out = human(
        &nina,
        &[
            "correct",
            "--patient",
            "p1",
            "--record",
            &dose,
            "--reason",
            "wrong person",
        ],
    )
    .await;
    assert!(
        out.starts_with("Marked entered in error: pc given for"),
        "{out}"
    );
    let v = json(
        &nils,
        &[
            "correct",
            "--patient",
            "p1",
            "--record",
            &dose,
            "--reason",
            "given to p2",
        ],
    )
    .await;
    assert_eq!(v["record"], dose.as_str());
    assert_eq!(v["marks"].as_array().unwrap().len(), 1);
    w.sync_all().await;

    // Handover: what the nurses did since Anna's last one.
    let out = human(&anna, &["handover", "--patient", "p1"]).await;
    assert!(
        out.contains(
            "Nils Ek, correction: marked entered in error: Fenoximetylpenicillin 1 g given for"
        ),
        "{out}"
    );
    assert!(out.contains("the directory, name: Dagny Berg"), "{out}");

    // The person's page: headed by her name (from `add-patient --name`), the alerts in words,
    // nothing recorded for the slot again (open, or past its window overdue or unknown, in the
    // signing list's words).
    let show = human(&anna, &["show", "--patient", "p1"]).await;
    assert!(show.starts_with("Dagny Berg (p1)\n"), "{show}");
    assert!(show.contains("Resuscitation: DO NOT attempt resuscitation (decided with the family); version 1 by Nina Berg,"), "{show}");
    assert!(
        show.contains(
            "Allergy to Penicillin, HIGH criticality, reaction: rash; version 1 by Nina Berg,"
        ),
        "{show}"
    );
    assert!(
        ["open (on time", "OVERDUE", "unknown: nothing recorded"]
            .iter()
            .any(|s| show.contains(&format!("08:00 Fenoximetylpenicillin 1 g: {s}"))),
        "{show}"
    );

    json(
        &nina,
        &[
            "note",
            "--patient",
            "p1",
            "--text",
            "Called the pharmacy about the mix-up.",
        ],
    )
    .await;
    json(&nina, &["sync"]).await;
    json(&anna, &["sync"]).await;
    let out = human(&anna, &["handover", "--patient", "p1"]).await;
    // The page counted as viewing her: only what came after it.
    assert!(out.contains("since you last viewed them"), "{out}");
    assert!(
        out.contains("Nina Berg, note: Called the pharmacy about the mix-up."),
        "{out}"
    );
    assert!(
        !out.contains("correction:"),
        "listed before the page: {out}"
    );
    let v = json(&anna, &["handover", "--patient", "p1"]).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 0, "{v}");
    assert!(v["since"].is_i64());

    // Two nurses decide at once: the conflict names them.
    for (home, decision) in [(&nina, "attempt"), (&nils, "do-not-attempt")] {
        json(
            home,
            &["resuscitation", "--patient", "p1", "--decision", decision],
        )
        .await;
    }
    w.sync_all().await;
    let out = human(&anna, &["conflicts"]).await;
    assert!(out.contains("by Nina Berg (nurse)"), "{out}");
    assert!(out.contains("by Nils Ek (nurse)"), "{out}");
    // Offline, the names stay: the device keeps what the server said.
    w.server.stop().await;
    let out = human(&anna, &["show", "--patient", "p1"]).await;
    assert!(out.contains("by Nina Berg,"), "{out}");
}
