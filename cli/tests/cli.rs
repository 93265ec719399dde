//! The `nara` binary end to end: two carers and two nurses, each a home directory, against a
//! real `nara-server` on a real TLS socket. Offline notes, a double dose, a conflict and its
//! resolution, flags acknowledged, status counting what waits, bad input, `sync --watch`.
//! The medication round, visits and the person's own words are in `round.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use nara_tests::now_ms;
use serde_json::Value;
use server::directory::Directory;

const SLOT: &str = "2026-11-24T08:00";
const FLAG: &str = "double-dose/metoprolol/2026-11-24T08:00";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_carers_and_two_nurses_offline_double_dose_and_conflict() {
    let mut w = World::new().await;
    for u in ["anna", "bo", "nina", "nils"] {
        let e = w.enroll(u).await;
        assert_eq!(e["user"], u);
        assert_eq!(e["pin"], format!("spki-sha256:{}", w.server.pin).as_str());
    }
    let [anna, bo, nina, nils] = ["anna", "bo", "nina", "nils"].map(|u| w.home(u));

    // The nurse sets up an order and a goal; everyone syncs.
    let order = order_metoprolol(&nina).await;
    assert_eq!(order["created"], true);
    assert_eq!(order["version"], 1);
    ok(
        &nina,
        &[
            "goal",
            "--patient",
            "p1",
            "--goal",
            "g1",
            "--text",
            "Walk to the kitchen unaided.",
        ],
    )
    .await;
    // A carer may not write orders: refused on the device, before anything is saved.
    let err = fails(
        &anna,
        &[
            "order",
            "--patient",
            "p1",
            "--order",
            "x",
            "--drug",
            "X",
            "--strength",
            "1",
            "--dose",
            "1",
            "--route",
            "oral",
            "--times",
            "08:00",
            "--start",
            "2026-11-01",
        ],
    )
    .await;
    assert!(err.contains("may not write"), "{err}");
    assert_eq!(pending(&anna).await, 0);

    let report = ok(&nina, &["sync"]).await;
    assert_eq!(report["uploaded"], 2);
    for h in [&anna, &bo, &nils] {
        // The order, the goal, and the person's name from the directory.
        let report = ok(h, &["sync"]).await;
        assert_eq!(report["received"], 3, "{report}");
    }
    let patients = ok(&anna, &["patients"]).await;
    assert_eq!(patients["patients"][0]["patient"], "p1");
    let show = ok(&bo, &["show", "--patient", "p1"]).await;
    assert_eq!(show["orders"][0]["id"], "metoprolol");
    assert_eq!(show["orders"][0]["value"]["version"], 1);
    assert_eq!(show["goals"][0]["text"], "Walk to the kitchen unaided.");

    // The nurse delegates medication for p1 to both carers (a delegated order's dose needs it).
    for carer in ["anna", "bo"] {
        let d = delegate_for_a_month(&nina, carer).await;
        assert_eq!(d["delegations"][0]["to"], carer, "{d}");
    }
    for h in [&nina, &anna, &bo, &nils] {
        ok(h, &["sync"]).await;
    }

    // Offline: both carers write a note and both give the same morning dose.
    ok(
        &anna,
        &["note", "--patient", "p1", "--text", "Anna: slept well."],
    )
    .await;
    ok(
        &bo,
        &["note", "--patient", "p1", "--text", "Bo: ate breakfast."],
    )
    .await;
    let given = ok(
        &anna,
        &[
            "give",
            "--patient",
            "p1",
            "--order",
            "metoprolol",
            "--slot",
            SLOT,
        ],
    )
    .await;
    assert_eq!(given["order_version"], 1);
    assert_eq!(given["slot_status"]["status"], "given");
    // The same device giving the slot twice is a slip, caught before it is saved.
    let err = fails(
        &anna,
        &[
            "give",
            "--patient",
            "p1",
            "--order",
            "metoprolol",
            "--slot",
            SLOT,
        ],
    )
    .await;
    assert!(err.contains("already recorded as given by anna"), "{err}");
    ok(
        &bo,
        &[
            "give",
            "--patient",
            "p1",
            "--order",
            "metoprolol",
            "--slot",
            SLOT,
        ],
    )
    .await;
    let err = fails(
        &bo,
        &[
            "give",
            "--patient",
            "p1",
            "--order",
            "metoprolol",
            "--slot",
            "2026-11-24T09:00",
        ],
    )
    .await;
    assert!(err.contains("no slot at 09:00"), "{err}");
    assert_eq!(pending(&anna).await, 2);
    assert_eq!(pending(&bo).await, 2);
    let status = ok(&anna, &["status"]).await;
    assert_eq!(status["role"], "carer");
    assert!(status["last_in_sync"].is_i64());

    // Offline: both nurses revise the dose of version 1.
    ok(
        &nina,
        &[
            "order",
            "--patient",
            "p1",
            "--order",
            "metoprolol",
            "--dose",
            "2 tablets",
        ],
    )
    .await;
    let nils_rev = ok(
        &nils,
        &[
            "order",
            "--patient",
            "p1",
            "--order",
            "metoprolol",
            "--dose",
            "half a tablet",
        ],
    )
    .await;
    assert_eq!(nils_rev["version"], 2);
    let nils_rev = nils_rev["revision"].as_str().unwrap().to_owned();

    // Everyone syncs, twice round, so every device has everything.
    for h in [&anna, &bo, &nina, &nils, &anna, &bo, &nina, &nils] {
        ok(h, &["sync"]).await;
    }
    for h in [&anna, &bo, &nina, &nils] {
        assert_eq!(pending(h).await, 0);
        let flags = ok(h, &["flags", "--patient", "p1"]).await;
        let flags = flags["flags"].as_array().unwrap();
        assert_eq!(flags.len(), 1, "{flags:?}");
        assert_eq!(flags[0]["id"], FLAG);
        assert_eq!(flags[0]["open"], true);
        assert_eq!(flags[0]["evidence"].as_array().unwrap().len(), 2);

        let conflicts = ok(h, &["conflicts"]).await;
        let conflicts = conflicts["conflicts"].as_array().unwrap();
        assert_eq!(conflicts.len(), 1, "{conflicts:?}");
        assert_eq!(conflicts[0]["register"], "order/metoprolol");
        let doses: Vec<&str> = conflicts[0]["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["value"]["dose"].as_str().unwrap())
            .collect();
        assert!(doses.contains(&"2 tablets") && doses.contains(&"half a tablet"));

        let show = ok(h, &["show", "--patient", "p1"]).await;
        let notes: Vec<&str> = show["journal"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|j| j["body"]["body"].as_str())
            .collect();
        assert!(
            notes.contains(&"Anna: slept well.") && notes.contains(&"Bo: ate breakfast."),
            "{notes:?}"
        );
        assert_eq!(show["orders"][0]["value"]["state"], "conflict");
    }

    // While the order is in conflict nobody can give it or simply revise it.
    let err = fails(
        &anna,
        &[
            "give",
            "--patient",
            "p1",
            "--order",
            "metoprolol",
            "--slot",
            "2026-11-24T20:00",
        ],
    )
    .await;
    assert!(err.contains("in conflict"), "{err}");
    let err = fails(
        &nina,
        &[
            "order",
            "--patient",
            "p1",
            "--order",
            "metoprolol",
            "--dose",
            "3 tablets",
        ],
    )
    .await;
    assert!(err.contains("in conflict"), "{err}");

    // Nina resolves it, taking Nils's version with her own dose; it is gone everywhere.
    let resolved = ok(
        &nina,
        &[
            "resolve",
            "--patient",
            "p1",
            "--order",
            "metoprolol",
            "--from",
            &nils_rev,
            "--dose",
            "1 tablet",
        ],
    )
    .await;
    assert_eq!(resolved["version"], 3);
    assert_eq!(resolved["supersedes"].as_array().unwrap().len(), 2);
    assert_eq!(resolved["value"]["dose"], "1 tablet");
    assert!(
        ok(&nina, &["conflicts"]).await["conflicts"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // And acknowledges the double dose.
    let err = fails(&anna, &["ack", "--patient", "p1", "--flag", FLAG]).await;
    assert!(err.contains("may not write"), "{err}");
    ok(
        &nina,
        &[
            "ack",
            "--patient",
            "p1",
            "--flag",
            FLAG,
            "--comment",
            "Called the GP; no harm.",
        ],
    )
    .await;
    ok(&nina, &["sync"]).await;
    for h in [&anna, &bo, &nils] {
        ok(h, &["sync"]).await;
        assert!(
            ok(h, &["conflicts", "--patient", "p1"]).await["conflicts"]
                .as_array()
                .unwrap()
                .is_empty()
        );
        let open = ok(h, &["flags", "--open"]).await;
        assert!(open["flags"].as_array().unwrap().is_empty(), "{open}");
        let all = ok(h, &["flags"]).await;
        assert_eq!(
            all["flags"][0]["acknowledgements"][0]["comment"],
            "Called the GP; no harm."
        );
    }
    // The evening dose can be given again, against version 3.
    let given = ok(
        &bo,
        &[
            "give",
            "--patient",
            "p1",
            "--order",
            "metoprolol",
            "--slot",
            "2026-11-24T20:00",
        ],
    )
    .await;
    assert_eq!(given["order_version"], 3);
    w.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_missing_enrollment_give_clear_errors() {
    let mut w = World::new().await;
    let nobody = w.home("nobody");
    let err = fails(&nobody, &["status"]).await;
    assert!(err.contains("enroll"), "{err}");

    // Without a pin, enrollment is refused, and the code is not spent...
    let code = w.server.directory.enroll(&uid("anna"), now_ms()).unwrap();
    let anna = w.home("anna");
    let err = fails(&anna, &["enroll", "--server", &w.url(), "--code", &code]).await;
    assert!(err.contains("--insecure-trust-first-use"), "{err}");
    let port = w.server.addr.port();
    let err = fails(&anna, &["enroll", &format!("nara:{code}@localhost:{port}")]).await;
    assert!(err.contains("without the server's pin"), "{err}");
    // ... unless trust on first use is asked for: the key seen is pinned and reported.
    let e = ok(
        &anna,
        &[
            "enroll",
            "--server",
            &w.url(),
            "--code",
            &code,
            "--insecure-trust-first-use",
        ],
    )
    .await;
    assert_eq!(e["trusted_on_first_use"], true);
    assert_eq!(e["pin"], format!("spki-sha256:{}", w.server.pin).as_str());

    let err = fails(&anna, &["note", "--patient", "p1", "--text", "  "]).await;
    assert!(err.contains("needs some text"), "{err}");
    let err = fails(
        &anna,
        &[
            "observe",
            "--patient",
            "p1",
            "--code",
            "mood",
            "--value",
            "1",
            "--unit",
            "x",
        ],
    )
    .await;
    assert!(err.contains("unknown observation code"), "{err}");
    ok(
        &anna,
        &[
            "observe",
            "--patient",
            "p1",
            "--code",
            "body-weight",
            "--value",
            "71.5",
            "--unit",
            "kg",
        ],
    )
    .await;
    let err = fails(
        &anna,
        &["give", "--patient", "p1", "--order", "none", "--slot", SLOT],
    )
    .await;
    assert!(err.contains("no order none"), "{err}");
    let err = fails(
        &anna,
        &[
            "give",
            "--patient",
            "p1",
            "--order",
            "none",
            "--slot",
            "tomorrow",
        ],
    )
    .await;
    assert!(err.contains("YYYY-MM-DDTHH:MM"), "{err}");
    assert_eq!(pending(&anna).await, 1);
    let report = ok(&anna, &["sync"]).await;
    assert_eq!(report["uploaded"], 1);
    assert_eq!(pending(&anna).await, 0);
    w.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_watch_uploads_notes_written_by_other_commands() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let mut w = World::new().await;
    w.enroll("anna").await;
    w.enroll("nina").await;
    let (anna, nina) = (w.home("anna"), w.home("nina"));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_nara"))
        .arg("--home")
        .arg(&anna)
        .args(["--json", "sync", "--watch"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_status = async || -> Value {
        let line = tokio::time::timeout(std::time::Duration::from_secs(60), lines.next_line())
            .await
            .expect("no status line in time")
            .unwrap()
            .expect("watch ended");
        serde_json::from_str(&line).unwrap()
    };
    // Connecting, then in sync: every change is printed, the first too, however quick.
    assert_eq!(next_status().await["status"]["state"], "connecting");
    loop {
        let s = next_status().await;
        if s["status"]["state"] == "in-sync" {
            break;
        }
        assert_ne!(s["status"]["state"], "error", "{s}");
    }
    // A note written by another `nara` process is picked up and uploaded by the watcher.
    ok(
        &anna,
        &[
            "note",
            "--patient",
            "p1",
            "--text",
            "Written while watching.",
        ],
    )
    .await;
    loop {
        let s = next_status().await;
        assert_ne!(s["status"]["state"], "error", "{s}");
        if s["status"]["state"] == "in-sync" && s["pending"] == 0 {
            break;
        }
    }
    ok(&nina, &["sync"]).await;
    let show = ok(&nina, &["show", "--patient", "p1"]).await;
    assert_eq!(
        show["journal"][0]["body"]["body"],
        "Written while watching."
    );

    // Ctrl-C ends the watch cleanly with a final report.
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut last = Value::Null;
    while let Ok(Some(line)) = lines.next_line().await {
        last = serde_json::from_str(&line).unwrap();
    }
    assert!(child.wait().await.unwrap().success());
    assert_eq!(last["stopped"], true, "{last}");
    assert_eq!(last["report"]["uploaded"], 1);
    w.server.stop().await;
}
