//! Issue 14, readable output: the real `nara-server admin` prints its answer, and logs only
//! when asked (`-v`, `RUST_LOG`), never with colour codes off a terminal; `audit export`
//! prints times people read.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use nara_tests::procs::server_binary;

/// `nara-server [FLAGS] admin --data DATA ARGS`
fn admin(data: &Path, flags: &[&str], args: &[&str]) -> Output {
    let out = Command::new(server_binary())
        .args(flags)
        .arg("admin")
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn admin_commands_print_their_answer_without_log_lines_or_colour() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = admin(&data, &[], &["add-org", "--id", "norr", "--name", "Norr"]);
    assert_eq!(text(&out.stderr), "", "no log lines unless asked");
    assert!(!text(&out.stdout).is_empty(), "the answer is printed");
    let out = admin(
        &data,
        &[],
        &["add-patient", "--id", "p-17", "--name", "Dagny Berg"],
    );
    assert_eq!(text(&out.stderr), "");
    assert!(!text(&out.stdout).contains('\u{1b}'));

    // Asked for: log lines, still without colour codes into a pipe.
    let out = admin(&data, &["-v"], &["add-org", "--id", "syd", "--name", "Syd"]);
    let err = text(&out.stderr);
    assert!(err.contains("INFO"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "no colour codes off a terminal: {err:?}"
    );

    // The export's times read as dates, not epoch milliseconds.
    let out = admin(&data, &[], &["audit", "export", "--patient", "p-17"]);
    let export = text(&out.stdout);
    assert!(export.contains("add-patient"), "{export}");
    assert!(export.contains("T") && export.contains("Z #"), "{export}");
    let longest = export
        .split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    assert!(longest < 10, "an epoch time in: {export}");
}
