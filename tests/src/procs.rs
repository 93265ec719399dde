//! The real `nara-server` binary, for tests that run it as a child process.

use std::path::PathBuf;
use std::process::Command;

/// `target/<profile>/nara-server`, next to this test's `deps/` directory; built with the same
/// profile if missing (`cargo test --workspace` builds it for the server's own tests).
pub fn server_binary() -> PathBuf {
    #![allow(clippy::unwrap_used)]
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let bin = profile_dir.join(format!("nara-server{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        let profile = profile_dir
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let profile = if profile == "debug" {
            "dev".to_owned()
        } else {
            profile
        };
        eprintln!("building nara-server (profile {profile})");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "-p", "server", "--bin", "nara-server", "--profile"])
            .arg(&profile)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .unwrap();
        assert!(status.success(), "building nara-server failed");
    }
    assert!(bin.exists(), "no nara-server at {}", bin.display());
    bin
}

/// `n` distinct free ports on 127.0.0.1, for servers that keep their port across restarts
/// (devices know its address). Every listener is held until all are chosen: binding port 0
/// again after dropping a listener may hand back the same port, and two nodes given one
/// port made a node fail to start now and then.
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("a bound listener's address").port())
        .collect()
}
