//! A real browser for the web views' tests: Debian's Chromium (`/usr/bin/chromium`), driven by
//! `playwright-core` from `tests/web/driver.mjs`, one JSON command a line. Chromium starts with
//! a new empty profile and trusts the test server's key by its pin
//! (`--ignore-certificate-errors-spki-list`), nothing else.
//!
//! `tests/web/node_modules` is installed with `npm ci` (from the committed lock file) on first
//! use when it is missing; `.ci/run` installs Chromium itself.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How long one browser command may take before the test fails (generous: a busy CI machine).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

/// Where screenshots of each page type go: `target/web-screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("web-screenshots");
    std::fs::create_dir_all(&dir).expect("the screenshot directory");
    dir
}

/// Installs the driver's npm packages once (the lock file pins them).
fn ensure_node_modules() {
    static ONCE: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut done = ONCE.lock().unwrap_or_else(|e| e.into_inner());
    if *done || web_dir().join("node_modules/playwright-core").exists() {
        *done = true;
        return;
    }
    let status = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(web_dir())
        .status()
        .expect("npm (Node.js) is needed for the browser tests");
    assert!(status.success(), "npm ci in tests/web failed");
    *done = true;
}

/// The server's key pin as Chromium takes it: standard base64 of the SPKI's SHA-256 (the
/// server prints base64url).
fn chromium_pin(pin: &str) -> String {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(pin.trim_end_matches('='))
        .expect("a base64url pin");
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// One Chromium with its own profile.
pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    _profile: tempfile::TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").finish_non_exhaustive()
    }
}

impl Browser {
    /// Starts Chromium trusting the key with `pin` (base64url SPKI SHA-256, as `TestServer`).
    pub async fn start(pin: &str) -> Self {
        ensure_node_modules();
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut child = Command::new("node")
            .arg(web_dir().join("driver.mjs"))
            .arg(profile.path())
            .arg(chromium_pin(pin))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node, for the browser driver");
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self {
            child,
            stdin,
            lines,
            _profile: profile,
        }
    }

    /// Sends one command; panics with the driver's error if it failed.
    pub async fn cmd(&mut self, command: Value) -> Value {
        let line = format!("{command}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .expect("driver stdin");
        let answer = tokio::time::timeout(COMMAND_TIMEOUT, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("the browser did not answer {command}"))
            .expect("driver stdout")
            .unwrap_or_else(|| panic!("the browser driver exited at {command}"));
        let v: Value = serde_json::from_str(&answer).expect("a JSON answer");
        assert_eq!(v["ok"], true, "browser command {command} failed: {v}");
        v
    }

    /// Opens `url`; returns the HTTP status.
    pub async fn goto(&mut self, url: &str) -> u16 {
        let v = self.cmd(json!({"op": "goto", "url": url})).await;
        v["status"].as_u64().unwrap_or(0) as u16
    }

    pub async fn fill(&mut self, selector: &str, value: &str) {
        self.cmd(json!({"op": "fill", "selector": selector, "value": value}))
            .await;
    }

    pub async fn select(&mut self, selector: &str, value: &str) {
        self.cmd(json!({"op": "select", "selector": selector, "value": value}))
            .await;
    }

    /// Clicks a submit button and waits for the next page; returns its status.
    pub async fn submit(&mut self, selector: &str) -> u16 {
        let v = self
            .cmd(json!({"op": "submit", "selector": selector}))
            .await;
        v["status"].as_u64().unwrap_or(0) as u16
    }

    /// The visible text of `selector` (the whole page with `"body"`).
    pub async fn text(&mut self, selector: &str) -> String {
        let v = self.cmd(json!({"op": "text", "selector": selector})).await;
        v["text"].as_str().unwrap_or_default().to_owned()
    }

    pub async fn count(&mut self, selector: &str) -> u64 {
        let v = self.cmd(json!({"op": "count", "selector": selector})).await;
        v["count"].as_u64().unwrap_or(0)
    }

    pub async fn attr(&mut self, selector: &str, name: &str) -> Option<String> {
        let v = self
            .cmd(json!({"op": "attr", "selector": selector, "name": name}))
            .await;
        v["value"].as_str().map(str::to_owned)
    }

    pub async fn cookies(&mut self) -> Vec<Value> {
        let v = self.cmd(json!({"op": "cookies"})).await;
        v["cookies"].as_array().cloned().unwrap_or_default()
    }

    pub async fn clear_cookies(&mut self) {
        self.cmd(json!({"op": "clear_cookies"})).await;
    }

    /// A full-page screenshot into `target/web-screenshots/<name>.png`.
    pub async fn screenshot(&mut self, name: &str) -> PathBuf {
        let path = screenshot_dir().join(format!("{name}.png"));
        self.cmd(json!({"op": "screenshot", "path": path})).await;
        path
    }

    /// Runs axe-core on the page; panics listing every serious or critical violation.
    pub async fn assert_accessible(&mut self, page: &str) {
        let v = self.cmd(json!({"op": "axe"})).await;
        let bad = v["violations"].as_array().cloned().unwrap_or_default();
        assert!(
            bad.is_empty(),
            "axe-core found serious or critical violations on {page}: {}",
            serde_json::to_string_pretty(&bad).unwrap_or_default()
        );
    }

    pub async fn close(mut self) {
        let _ = self.cmd(json!({"op": "close"})).await;
        let _ = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
    }
}
