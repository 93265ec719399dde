//! The `nara-server` binary itself: `check` creates and checks the stores of a new data
//! directory, `admin` writes to the directory and the audit log, and `admin audit verify`
//! accepts the chain it wrote. (Also makes `cargo test --workspace` build the binary, which
//! the process crash test in `tests/` runs.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

/// `nara-server <command> --data DATA <args>`
fn run(data: &Path, command: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_nara-server"))
        .arg(command)
        .arg("--data")
        .arg(data)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nara-server {command} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn check_admin_and_audit_verify_on_a_new_data_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");

    let v: serde_json::Value = serde_json::from_str(&run(&data, "check", &["--json"])).unwrap();
    assert_eq!(v["integrity"], "ok");
    assert_eq!(v["documents"], 0);

    run(
        &data,
        "admin",
        &["add-org", "--id", "norr", "--name", "Norr"],
    );
    run(
        &data,
        "admin",
        &["add-patient", "--id", "p-1", "--name", "P"],
    );
    let v: serde_json::Value =
        serde_json::from_str(&run(&data, "admin", &["audit", "verify", "--json"])).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["records"], 2, "{v}");
}

#[test]
fn backup_then_restore_puts_the_directory_and_the_audit_log_back() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let backup = tmp.path().join("backup");
    run(
        &data,
        "admin",
        &["add-org", "--id", "norr", "--name", "Norr"],
    );
    let v: serde_json::Value = serde_json::from_str(&run(
        &data,
        "admin",
        &["--json", "backup", "--to", backup.to_str().unwrap()],
    ))
    .unwrap();
    assert_eq!(v["audit_records"], 2, "{v}");
    run(&data, "admin", &["add-org", "--id", "syd", "--name", "Syd"]);
    let v: serde_json::Value = serde_json::from_str(&run(
        &data,
        "admin",
        &["--json", "restore", "--from", backup.to_str().unwrap()],
    ))
    .unwrap();
    assert_eq!(v["audit_records_cut"], 1, "{v}");
    let v: serde_json::Value =
        serde_json::from_str(&run(&data, "admin", &["audit", "verify", "--json"])).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["records"], 3, "the backup's 2 and the restore: {v}");
    // The org added after the backup is gone; the one before it is back.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nara-server"))
        .args(["admin", "--data"])
        .arg(&data)
        .args(["add-org", "--id", "norr", "--name", "Norr"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    run(&data, "admin", &["add-org", "--id", "syd", "--name", "Syd"]);
}
