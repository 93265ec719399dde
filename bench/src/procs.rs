//! Real processes for the benchmarks: building a workspace binary with the profile the bench
//! itself was built with, and reading a process's memory from `/proc`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Builds `bin` of workspace `package` (`cargo build -p <package> --bin <bin>`, `--release` when
/// the bench runs from a release build) and returns its path, next to the current executable.
/// From a test harness (`target/<profile>/deps/`) a binary already there is used as it is.
pub fn binary(package: &str, bin: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("the path of the bench executable")?;
    // target/<profile>/nara-bench (or target/<profile>/deps/... for a test harness).
    let mut dir = exe
        .parent()
        .context("the bench executable has no directory")?
        .to_path_buf();
    let in_test_harness = dir.file_name().is_some_and(|n| n == "deps");
    if in_test_harness {
        dir.pop();
    }
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("the bench's target directory has no profile name")?
        .to_string();
    let path = dir.join(bin);
    // NARA_BENCH_NO_BUILD=1: use the binary as built (for iterating while others edit).
    // A test harness uses the binary `cargo test --workspace` built beside it, as `tests/` does:
    // `cargo build -p <package>` resolves the features of that package alone, not the
    // workspace's, so it rebuilt the dependencies (minutes of CI) and replaced the binary.
    if (in_test_harness || std::env::var_os("NARA_BENCH_NO_BUILD").is_some()) && path.exists() {
        return Ok(path);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", package, "--bin", bin]);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    if let Some(target_dir) = dir.parent() {
        cmd.env("CARGO_TARGET_DIR", target_dir);
    }
    let status = cmd
        .status()
        .with_context(|| format!("running cargo build -p {package} --bin {bin}"))?;
    if !status.success() {
        bail!("cargo build -p {package} --bin {bin} failed: {status}");
    }
    if !path.exists() {
        bail!("{} was not built", path.display());
    }
    Ok(path)
}

/// A field of `/proc/PID/status` in kB, as bytes (0 when the process or field is gone).
fn status_kb(pid: u32, field: &str) -> u64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Peak resident memory of a process (VmHWM), in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    status_kb(pid, "VmHWM")
}

/// Resident memory of a process now (VmRSS), in bytes.
pub fn rss(pid: u32) -> u64 {
    status_kb(pid, "VmRSS")
}

/// A running `nara-server serve` process on 127.0.0.1 (an ephemeral port), killed on drop.
#[derive(Debug)]
pub struct ServerProc {
    child: std::process::Child,
    pub pid: u32,
    pub addr: std::net::SocketAddr,
    /// SHA-256 of its (development) certificate, to pin.
    pub fingerprint: String,
    /// The server key's pin (what devices enroll with).
    pub pin: String,
}

impl ServerProc {
    /// Starts the real server binary on `data` (set up beforehand, see `team.rs`) and waits
    /// until it listens. Its log (warnings and up unless `RUST_LOG` says otherwise) goes to
    /// `data/server.log`.
    pub fn start(data: &std::path::Path, extra_args: &[&str]) -> Result<ServerProc> {
        use std::io::BufRead;
        let bin = binary("server", "nara-server")?;
        std::fs::create_dir_all(data)?;
        let log = std::fs::File::create(data.join("server.log"))?;
        let mut child = Command::new(&bin)
            .arg("serve")
            .arg("--data")
            .arg(data)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra_args)
            .env(
                "RUST_LOG",
                std::env::var("NARA_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        let stdout = child.stdout.take().context("the server's stdout")?;
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Nobody listens any more: keep draining so the server never blocks.
                    continue;
                }
            }
        });
        let mut addr = None;
        let mut fingerprint = None;
        let mut pin = None;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while addr.is_none() || fingerprint.is_none() || pin.is_none() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!(
                        "nara-server did not start (see {})",
                        data.join("server.log").display()
                    );
                }
            };
            if let Some(rest) = line.split("https://").nth(1) {
                let a = rest.split_whitespace().next().unwrap_or_default();
                addr = a.parse().ok();
            }
            if let Some((_, f)) = line.split_once("fingerprint: ") {
                fingerprint = Some(f.trim().to_string());
            }
            if let Some((_, p)) = line.split_once("key pin (SPKI SHA-256): ") {
                pin = Some(p.trim().to_string());
            }
        }
        let (Some(addr), Some(fingerprint), Some(pin)) = (addr, fingerprint, pin) else {
            bail!("nara-server printed no address");
        };
        Ok(ServerProc {
            child,
            pid,
            addr,
            fingerprint,
            pin,
        })
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn peak_rss(&self) -> u64 {
        peak_rss(self.pid)
    }

    pub fn rss(&self) -> u64 {
        rss(self.pid)
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
