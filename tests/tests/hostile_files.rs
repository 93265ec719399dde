//! Issue 11, hole 6: the server's files are not readable by other local users. The real
//! `nara-server` binary is started on a data directory (a new one, and one an older version left
//! world-readable); the directory must be `0700` and every file in it (the databases with their
//! `-wal` and `-shm` files, the TLS key, the admin token) `0600`, also after an admin command.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nara_tests::procs::server_binary;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every entry of `data`: the directory `0700`, each file `0600`; returns the file names.
fn assert_owner_only(data: &Path) -> Vec<String> {
    assert_eq!(mode(data), 0o700, "{} is {:o}", data.display(), mode(data));
    let mut names = Vec::new();
    for entry in std::fs::read_dir(data).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        assert_eq!(
            mode(&entry.path()),
            0o600,
            "{name} is {:o}",
            mode(&entry.path())
        );
        names.push(name);
    }
    names.sort();
    names
}

/// Starts `nara-server serve` on `data` and waits until it has opened everything and listens
/// (it prints the admin token's path last); returns the child.
fn start(data: &Path) -> std::process::Child {
    let mut child = Command::new(server_binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the server did not start");
        match lines.next() {
            Some(Ok(line)) if line.starts_with("admin token:") => break,
            Some(Ok(_)) => {}
            _ => panic!("the server exited before it listened"),
        }
    }
    child
}

fn admin(data: &Path, args: &[&str]) {
    let out = Command::new(server_binary())
        .arg("admin")
        .arg("--data")
        .arg(data)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn hole6_a_new_data_directory_is_owner_only() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // The test process's own mask lets group and others read: the server must not rely on it.
    let mut server = start(&data);
    admin(&data, &["add-org", "--id", "norr", "--name", "Norr"]);
    let names = assert_owner_only(&data);
    server.kill().unwrap();
    server.wait().unwrap();
    // The audit log lives in nara.db, with the documents it records.
    for expected in ["nara.db", "nara.db-wal", "server.db", "admin-token"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing: {names:?}"
        );
    }
    assert!(
        names
            .iter()
            .any(|n| n.ends_with(".pem") || n.ends_with(".key")),
        "no TLS key file in {names:?}"
    );
}

#[test]
fn hole6_a_world_readable_data_directory_is_tightened_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // A directory as an older version left it: made with the default mask.
    let mut server = start(&data);
    server.kill().unwrap();
    server.wait().unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut server = start(&data);
    assert_owner_only(&data);
    server.kill().unwrap();
    server.wait().unwrap();
}
