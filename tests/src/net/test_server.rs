//! The server harness: a `nara-server` in process on a real TLS socket on 127.0.0.1, with a
//! fresh data directory, and what tests ask of it over HTTPS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use server::audit::SqliteAudit;
use server::directory::SqliteDirectory;
use server::tls::TlsListener;
use server::{AppState, Limits};
use sync_core::UserId;
use sync_core::store::SqliteStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::client_config;

/// A server on 127.0.0.1 with a fresh data directory.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The admin API's own listener, if it has one (`start_with_admin`); else it is on `addr`.
    pub admin_addr: Option<SocketAddr>,
    pub fingerprint: String,
    /// The pin of the server's key (base64url SHA-256 of its SPKI), as devices keep it.
    pub pin: String,
    pub state: AppState,
    pub directory: Arc<SqliteDirectory>,
    pub audit: Arc<SqliteAudit>,
    pub data: tempfile::TempDir,
    pub admin_token: String,
    /// The web views' clock: starts at the wall clock, moved by tests (`web_clock.advance`).
    pub web_clock: server::web::Clock,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("addr", &self.addr)
            .finish()
    }
}

/// A test that fails with its server still running must fail, not hang. Its panic unwinds
/// through here, then the test's runtime shuts down and waits for its blocking tasks; one of
/// them may wait forever on what the test found broken (a sync lane held by a step that does
/// not end: the hello of `hole1_a_hello_claiming_four_billion_incarnations_is_refused`
/// without its bound). So a failing test's thread gets [`TEARDOWN`] to end, then the process
/// aborts, and the failure shows in seconds instead of at CI's time limit.
impl Drop for TestServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            watch_teardown();
        }
    }
}

/// How long a failed test's thread may take to end (its runtime to shut down).
const TEARDOWN: Duration = Duration::from_secs(60);

/// Aborts the process unless the current thread (a failing test's: libtest runs each test on
/// a thread of its own) ends within [`TEARDOWN`].
fn watch_teardown() {
    /// Set when the thread's locals are destroyed: the thread is ending.
    struct Ended(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Ended {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    thread_local! {
        static ENDED: Ended = Ended(Arc::default());
    }
    let Ok(ended) = ENDED.try_with(|e| e.0.clone()) else {
        return;
    };
    let name = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + TEARDOWN;
        while std::time::Instant::now() < deadline {
            if ended.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Straight to the process's stderr: libtest captures `eprintln!`, in this thread too,
        // and what it captured is lost with the abort (rerun with `--nocapture` to see the
        // panic).
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "{name} failed, and its runtime did not shut down within {TEARDOWN:?} (a blocking \
             task still waits on the server): aborting, so that the failure is reported; rerun \
             it with --nocapture to see its panic"
        );
        std::process::abort();
    });
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(Limits::default()).await
    }

    pub async fn start_with(limits: Limits) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), limits).await
    }

    /// Stops this server and starts another on the same data directory (its stores, its
    /// certificate as it is now: renewed, say), on a new port.
    pub async fn restart(mut self) -> Self {
        self.stop().await;
        let data = std::mem::replace(&mut self.data, tempfile::tempdir().unwrap());
        Self::start_in(data, Limits::default()).await
    }

    /// A one-time code for `user` as `nara-server admin enroll` prints it: the enrollment
    /// string `nara:<code>@127.0.0.1:<port>#<key pin>`.
    pub fn enrollment_string(&self, user: &str) -> String {
        let args = server::admin_cli::AdminArgs {
            data: self.data.path().to_path_buf(),
            database: None,
            database_ca: None,
            json: true,
            command: server::admin_cli::AdminCommand::Enroll {
                user: UserId::new(user).unwrap(),
                server: self.addr.to_string(),
                tls_cert: None,
            },
        };
        let mut out = Vec::new();
        server::admin_cli::run_to(args, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        v["enrollment"].as_str().unwrap().to_owned()
    }

    /// A one-time sign-in code for the web views, as `nara-server admin login-code --user U`
    /// (or `--patient P` when `person` is set) prints it.
    pub fn login_code(&self, id: &str, person: bool) -> String {
        let (user, patient) = if person {
            (None, Some(sync_core::PatientId::new(id).unwrap()))
        } else {
            (Some(UserId::new(id).unwrap()), None)
        };
        let args = server::admin_cli::AdminArgs {
            data: self.data.path().to_path_buf(),
            database: None,
            database_ca: None,
            json: true,
            command: server::admin_cli::AdminCommand::LoginCode {
                user,
                patient,
                relative: None,
                server: self.addr.to_string(),
            },
        };
        let mut out = Vec::new();
        server::admin_cli::run_to(args, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        v["code"].as_str().unwrap().to_owned()
    }

    /// A one-time sign-in code for a relative of `patient` (`nara-server admin login-code
    /// --relative NAME --patient P`), or the command's refusal.
    pub fn relative_login_code(&self, patient: &str, relative: &str) -> Result<String, String> {
        let args = server::admin_cli::AdminArgs {
            data: self.data.path().to_path_buf(),
            database: None,
            database_ca: None,
            json: true,
            command: server::admin_cli::AdminCommand::LoginCode {
                user: None,
                patient: Some(sync_core::PatientId::new(patient).unwrap()),
                relative: Some(relative.to_owned()),
                server: self.addr.to_string(),
            },
        };
        let mut out = Vec::new();
        server::admin_cli::run_to(args, &mut out).map_err(|e| format!("{e:#}"))?;
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        Ok(v["code"].as_str().unwrap().to_owned())
    }

    /// A one-time sign-in code from the admin API (`POST /v1/admin/login-codes`), which reads
    /// the server's web clock (so it works after a test moved that clock on).
    pub async fn login_code_api(&self, id: &str, person: bool) -> String {
        let body = if person {
            serde_json::json!({ "patient": id })
        } else {
            serde_json::json!({ "user": id })
        };
        let (status, answer) = self
            .https_admin(
                "POST",
                "/v1/admin/login-codes",
                Some(&self.admin_token),
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
        v["code"].as_str().unwrap().to_owned()
    }

    /// The web views' address: `https://127.0.0.1:<port>`.
    pub fn web_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }

    /// An HTTPS request with extra headers (cookies, a form body); returns (status, the
    /// response's header block, body).
    pub async fn https_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String, String) {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(client_config(&self.fingerprint));
        let mut tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let extra: String = headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        let _ = tls.read_to_end(&mut response).await;
        let text = String::from_utf8_lossy(&response).to_string();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .map(|(h, b)| (h.to_owned(), b.to_owned()))
            .unwrap_or_default();
        (status, head, body)
    }

    /// Signs in to the web views with `code` over plain HTTPS (no browser); returns the
    /// session's `Cookie` header value.
    pub async fn web_sign_in(&self, code: &str) -> String {
        let (_, head, _) = self.https_request("GET", "/app/login", &[], "").await;
        let token = set_cookie(&head, "nara_signin").expect("the sign-in form's cookie");
        let cookie = format!("nara_signin={token}");
        let form = format!("form_token={token}&code={code}");
        let (status, head, _) = self
            .https_request(
                "POST",
                "/app/login",
                &[
                    ("Cookie", &cookie),
                    ("Content-Type", "application/x-www-form-urlencoded"),
                ],
                &form,
            )
            .await;
        assert_eq!(status, 303, "sign-in refused: {head}");
        format!(
            "nara_session={}",
            set_cookie(&head, "nara_session").unwrap()
        )
    }

    /// Posts a form of a web page as the session in `cookie`, with the page's CSRF token
    /// (read from the page at `page` first). `form` is already URL-encoded.
    pub async fn web_post(&self, cookie: &str, page: &str, action: &str, form: &str) -> u16 {
        let (status, _, body) = self
            .https_request("GET", page, &[("Cookie", cookie)], "")
            .await;
        assert_eq!(status, 200, "{page}");
        let csrf = body
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("a CSRF token on the page")
            .to_owned();
        let form = format!("csrf={csrf}&{form}");
        let (status, _, _) = self
            .https_request(
                "POST",
                action,
                &[
                    ("Cookie", cookie),
                    ("Content-Type", "application/x-www-form-urlencoded"),
                ],
                &form,
            )
            .await;
        status
    }

    /// A server with the admin API on a second listener of its own (`--admin-listen`).
    pub async fn start_with_admin(limits: Limits) -> Self {
        Self::start_on(tempfile::tempdir().unwrap(), limits, true).await
    }

    /// A server on 127.0.0.1 on the data directory `data` (fresh or used).
    pub async fn start_in(data: tempfile::TempDir, limits: Limits) -> Self {
        Self::start_on(data, limits, false).await
    }

    async fn start_on(data: tempfile::TempDir, limits: Limits, admin_listener: bool) -> Self {
        let files = data.path().to_path_buf();
        Self::start_at(&files, data, limits, admin_listener).await
    }

    /// A server on a fresh data directory that signs its audit head with the data directory's
    /// audit key (made now) and exports it to `DATA/audit-heads.jsonl` every `every` when it
    /// moved, and at [`TestServer::stop`], as `nara-server serve` does every 60 s.
    pub async fn start_exporting_audit_heads(every: Duration) -> Self {
        let data = tempfile::tempdir().unwrap();
        let files = data.path().to_path_buf();
        Self::start_full(&files, data, Limits::default(), false, Some(every)).await
    }

    /// A server on the files in `files`; the value keeps `data` (the same directory, or another).
    pub(crate) async fn start_at(
        files: &std::path::Path,
        data: tempfile::TempDir,
        limits: Limits,
        admin_listener: bool,
    ) -> Self {
        Self::start_full(files, data, limits, admin_listener, None).await
    }

    async fn start_full(
        files: &std::path::Path,
        data: tempfile::TempDir,
        limits: Limits,
        admin_listener: bool,
        audit_heads_every: Option<Duration>,
    ) -> Self {
        let store = SqliteStore::open(files.join("nara.db")).unwrap();
        let directory =
            Arc::new(SqliteDirectory::open(&server::admin_cli::directory_path(files)).unwrap());
        let audit = Arc::new(SqliteAudit::open(&server::admin_cli::audit_path(files)).unwrap());
        let tls = server::tls::load_or_create(files, None, None).unwrap();
        let admin_token = "test-admin-token".to_string();
        let state = AppState::new(
            store,
            directory.clone(),
            audit.clone(),
            admin_token.clone(),
            limits.clone(),
        )
        .unwrap();
        let web_clock = server::web::Clock::manual(server::app::now_ms());
        let sessions =
            server::web::SqliteSessions::open(&server::admin_cli::web_path(files)).unwrap();
        state.enable_web(server::web::Web::new(Arc::new(sessions), web_clock.clone()));
        if let Some(every) = audit_heads_every {
            use server::audit::heads::{AuditKey, HEADS_FILE, HeadExport, KEY_FILE};
            let (key, _) = AuditKey::load_or_create(&files.join(KEY_FILE)).unwrap();
            state.export_audit_heads(HeadExport {
                key,
                file: files.join(HEADS_FILE),
                every,
            });
        }
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let listener =
            TlsListener::with_limits(server::tls::no_delay(tcp), tls.config.clone(), &limits)
                .unwrap();
        let (admin, admin_addr) = if admin_listener {
            let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = tcp.local_addr().unwrap();
            let listener =
                TlsListener::with_limits(server::tls::no_delay(tcp), tls.config.clone(), &limits)
                    .unwrap();
            (Some(listener), Some(addr))
        } else {
            (None, None)
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server::app::serve_with_admin(
            listener,
            admin,
            state.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            admin_addr,
            fingerprint: tls.fingerprint,
            pin: tls.spki_pin,
            state,
            directory,
            audit,
            data,
            admin_token,
            web_clock,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Graceful shutdown. The data directory stays until the value is dropped.
    pub async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }

    /// An HTTPS request with a raw HTTP/1.1 exchange; returns (status, body).
    pub async fn https(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        self.https_to(self.addr, method, path, auth, body).await
    }

    /// [`TestServer::https`] to the admin API's listener (its own, or the devices').
    pub async fn https_admin(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        let addr = self.admin_addr.unwrap_or(self.addr);
        self.https_to(addr, method, path, auth, body).await
    }

    /// [`TestServer::https`] to `addr` (one of this server's listeners).
    pub async fn https_to(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        https_at(addr, &self.fingerprint, method, path, auth, body).await
    }
}

/// An HTTPS request to `addr` (a server whose certificate has `fingerprint`) with a raw
/// HTTP/1.1 exchange; returns (status, body).
pub async fn https_at(
    addr: SocketAddr,
    fingerprint: &str,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_config(fingerprint));
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let body = body.unwrap_or("");
    let auth = auth
        .map(|a| format!("Authorization: Bearer {a}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value a `Set-Cookie` header of `head` gives `name`.
fn set_cookie(head: &str, name: &str) -> Option<String> {
    head.lines()
        .filter_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
}
