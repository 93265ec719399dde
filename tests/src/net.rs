//! Real-network fixtures: a `nara-server` running in process on a real TLS socket on 127.0.0.1,
//! and test devices that enroll over HTTPS and sync over WSS, with the server's certificate
//! pinned by its SHA-256 fingerprint. Nothing here is a mock: the server, the stores, TLS and the
//! WebSocket are the real ones.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use server::audit::SqliteAudit;
use server::directory::{Directory, SqliteDirectory};
use server::tls::TlsListener;
use server::{AppState, Limits};
use sync_core::protocol::{DeviceConfig, DeviceEvent, DeviceSession};
use sync_core::repo::Repo;
use sync_core::store::SqliteStore;
use sync_core::{Author, DeviceId, Timestamp, UserId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The device runtime's TLS configuration, pinned to `fingerprint` (the same verifier a phone
/// uses).
pub fn client_config(fingerprint: &str) -> Arc<rustls::ClientConfig> {
    nara_client::tls::client_config(nara_client::tls::Trust::Pinned(fingerprint.to_owned()))
        .expect("a TLS client configuration")
}

/// Where a test device finds a server: its address and its certificate's fingerprint (an
/// in-process [`TestServer`], or a `nara-server` process).
pub trait Reach {
    fn addr(&self) -> SocketAddr;
    fn fingerprint(&self) -> &str;
}

impl Reach for TestServer {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// A server at `addr` whose certificate has `fingerprint` (say a `nara-server` process).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub fingerprint: String,
}

impl Reach for Endpoint {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

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
        let store = SqliteStore::open(data.path().join("nara.db")).unwrap();
        let directory = Arc::new(
            SqliteDirectory::open(&server::admin_cli::directory_path(data.path())).unwrap(),
        );
        let audit =
            Arc::new(SqliteAudit::open(&server::admin_cli::audit_path(data.path())).unwrap());
        let tls = server::tls::load_or_create(data.path(), None, None).unwrap();
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
            server::web::SqliteSessions::open(&server::admin_cli::web_path(data.path())).unwrap();
        state.enable_web(server::web::Web::new(Arc::new(sessions), web_clock.clone()));
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

/// A phone: its own SQLite store, enrolled with the server.
pub struct TestDevice {
    pub author: Author,
    pub secret: String,
    pub repo: Repo<SqliteStore>,
    pub session: DeviceSession,
    /// Where to connect instead of the server itself (a fault-injecting proxy).
    pub via: Option<SocketAddr>,
    /// Every message received from the server, decoded, if `record` is set.
    pub record: bool,
    pub received: Vec<sync_core::protocol::wire::ServerMessage>,
    /// Every frame received from the server as it came (compressed or not), if `record` is set.
    pub frames: Vec<Vec<u8>>,
    /// The signing key it offers on connecting (`x-nara-signing-key`), if any.
    pub key: Option<sync_core::signing::DeviceKey>,
    /// Says how many changes it has waiting for upload on connecting (`x-nara-waiting`), as the
    /// device runtime does; off by default (a device of an older build).
    pub report_waiting: bool,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDevice")
            .field("author", &self.author)
            .finish()
    }
}

/// How a sync attempt ended.
#[derive(Debug)]
pub enum SyncEnd {
    /// Caught up with nothing in flight and nothing more arriving.
    Quiet(Vec<DeviceEvent>),
    /// The server refused the connection (HTTP status of the upgrade).
    Refused(u16),
    /// The connection closed (by the server, or the session).
    Closed(Vec<DeviceEvent>),
}

impl TestDevice {
    /// Enrolls over HTTPS with a one-time code issued for `user`, as a device that signs its
    /// uploads: its key (from `seed`) is registered at enrollment.
    pub async fn enroll_signed(server: &TestServer, user: &str, seed: [u8; 32]) -> Self {
        let key = sync_core::signing::DeviceKey::from_seed(seed);
        let mut device = Self::enroll_with(server, user, Some(&key.public().to_hex())).await;
        device.sign_with(key);
        device
    }

    /// Signs uploads with `key` from the next connection on, and offers it on connecting.
    pub fn sign_with(&mut self, key: sync_core::signing::DeviceKey) {
        self.session.set_signer(Some(sync_core::protocol::Signer {
            device: self.author.device.clone(),
            key: key.clone(),
        }));
        self.key = Some(key);
    }

    /// Enrolls over HTTPS with a one-time code issued for `user`.
    pub async fn enroll(server: &TestServer, user: &str) -> Self {
        Self::enroll_with(server, user, None).await
    }

    async fn enroll_with(server: &TestServer, user: &str, signing_key: Option<&str>) -> Self {
        let user = UserId::new(user).unwrap();
        let code = server.directory.enroll(&user, crate::now_ms()).unwrap();
        let role = server.directory.user(&user).unwrap().unwrap().role;
        Self::enroll_at(server, &code, user, role, signing_key).await
    }

    /// Enrolls over HTTPS at `server` with the one-time `code` issued for `user` (whose role
    /// is `role`), however it was issued (say by the admin API of a server process).
    pub async fn enroll_code(
        server: &impl Reach,
        code: &str,
        user: UserId,
        role: sync_core::Role,
    ) -> Self {
        Self::enroll_at(server, code, user, role, None).await
    }

    async fn enroll_at(
        server: &impl Reach,
        code: &str,
        user: UserId,
        role: sync_core::Role,
        signing_key: Option<&str>,
    ) -> Self {
        let (status, body) = https_at(
            server.addr(),
            server.fingerprint(),
            "POST",
            "/v1/enroll",
            None,
            Some(&match signing_key {
                Some(k) => format!("{{\"code\":\"{code}\",\"signing_key\":\"{k}\"}}"),
                None => format!("{{\"code\":\"{code}\"}}"),
            }),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let device = DeviceId::new(v["device"].as_str().unwrap()).unwrap();
        let secret = v["secret"].as_str().unwrap().to_owned();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("phone.db");
        let repo = Repo::new(SqliteStore::open(&path).unwrap());
        Self {
            author: Author::new(user, role, device),
            secret,
            repo,
            session: DeviceSession::new(DeviceConfig::default()),
            via: None,
            record: false,
            received: Vec::new(),
            frames: Vec::new(),
            key: None,
            report_waiting: false,
            path,
            _dir: dir,
        }
    }

    /// A second phone started from a copy of this one's store (the app's data moved with its
    /// credential and key): both run. The store is closed for the copy (SQLite folds its log
    /// into the file on the last close) and opened again.
    pub fn copied(&mut self) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("phone.db");
        let aside = dir.path().join("closing.db");
        self.repo = Repo::new(SqliteStore::open(&aside).unwrap());
        std::fs::copy(&self.path, &path).unwrap();
        self.reopen();
        let mut copy = Self {
            author: self.author.clone(),
            secret: self.secret.clone(),
            repo: Repo::new(SqliteStore::open(&path).unwrap()),
            session: DeviceSession::new(DeviceConfig::default()),
            via: None,
            record: false,
            received: Vec::new(),
            frames: Vec::new(),
            key: None,
            report_waiting: false,
            path,
            _dir: dir,
        };
        if let Some(key) = self.key.clone() {
            copy.sign_with(key);
        }
        copy
    }

    /// Closes and reopens the phone's store, as after an app restart.
    pub fn reopen(&mut self) {
        self.repo = Repo::new(SqliteStore::open(&self.path).unwrap());
    }

    /// Connects over WSS and runs the protocol until it is quiet (or `hold` says stay open
    /// until `until` returns true for the events so far).
    pub async fn sync(&mut self, server: &impl Reach) -> SyncEnd {
        self.sync_until(server, |_| false).await
    }

    /// Like [`TestDevice::sync`], but stays connected while quiet for up to `linger` (to see
    /// what the server pushes or does to a live connection).
    pub async fn sync_linger(&mut self, server: &impl Reach, linger: Duration) -> SyncEnd {
        self.run(server, |_| false, linger).await
    }

    pub async fn sync_until(
        &mut self,
        server: &impl Reach,
        until: impl FnMut(&[DeviceEvent]) -> bool,
    ) -> SyncEnd {
        self.run(server, until, Duration::from_millis(300)).await
    }

    /// Like [`TestDevice::sync_until`], but stays connected while quiet for up to `wait` (to
    /// see what the server pushes to a live connection, until `until` has seen it).
    pub async fn sync_waiting_for(
        &mut self,
        server: &impl Reach,
        until: impl FnMut(&[DeviceEvent]) -> bool,
        wait: Duration,
    ) -> SyncEnd {
        self.run(server, until, wait).await
    }

    /// Opens the sync connection and loses it at once, before the hello (a link that dropped
    /// right after connecting): the server learns only what the upgrade request said.
    pub async fn connect_and_drop(&mut self, server: &impl Reach) {
        let request = self.sync_request(server);
        let tcp = tokio::net::TcpStream::connect(self.via.unwrap_or(server.addr()))
            .await
            .unwrap();
        let connector = tokio_tungstenite::Connector::Rustls(client_config(server.fingerprint()));
        let (mut ws, _) =
            tokio_tungstenite::client_async_tls_with_config(request, tcp, None, Some(connector))
                .await
                .unwrap();
        let _ = ws.close(None).await;
        // The server has seen the close when it closes too.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
        }
    }

    fn sync_request(
        &self,
        server: &impl Reach,
    ) -> tokio_tungstenite::tungstenite::handshake::client::Request {
        let url = format!("wss://localhost:{}/v1/sync", server.addr().port());
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(
            "Authorization",
            format!("Bearer {}.{}", self.author.device, self.secret)
                .parse()
                .unwrap(),
        );
        if let Some(key) = &self.key {
            request
                .headers_mut()
                .insert("x-nara-signing-key", key.public().to_hex().parse().unwrap());
        }
        if self.report_waiting {
            let n = self.repo.pending().unwrap().len();
            request
                .headers_mut()
                .insert("x-nara-waiting", n.to_string().parse().unwrap());
        }
        request
    }

    async fn run(
        &mut self,
        server: &impl Reach,
        mut until: impl FnMut(&[DeviceEvent]) -> bool,
        linger: Duration,
    ) -> SyncEnd {
        let request = self.sync_request(server);
        let tcp = tokio::net::TcpStream::connect(self.via.unwrap_or(server.addr()))
            .await
            .unwrap();
        let connector = tokio_tungstenite::Connector::Rustls(client_config(server.fingerprint()));
        let (mut ws, _) = match tokio_tungstenite::client_async_tls_with_config(
            request,
            tcp,
            None,
            Some(connector),
        )
        .await
        {
            Ok(x) => x,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                return SyncEnd::Refused(response.status().as_u16());
            }
            Err(e) => panic!("connect failed: {e}"),
        };
        let now = || Timestamp(crate::now_ms());
        self.session.connect(&mut self.repo, now()).unwrap();
        let mut events = Vec::new();
        loop {
            while let Some(bytes) = self.session.poll_transmit() {
                if ws.send(Message::Binary(bytes.into())).await.is_err() {
                    self.session.disconnected();
                    return SyncEnd::Closed(events);
                }
            }
            events.extend(std::iter::from_fn(|| self.session.poll_event()));
            if events
                .iter()
                .any(|e| matches!(e, DeviceEvent::Closed { .. }))
            {
                self.session.disconnected();
                return SyncEnd::Closed(events);
            }
            if until(&events) {
                self.session.disconnected();
                return SyncEnd::Quiet(events);
            }
            let quiet = self.session.is_caught_up() && self.session.uploads_in_flight() == 0;
            let wait = if quiet {
                linger
            } else {
                Duration::from_secs(10)
            };
            match tokio::time::timeout(wait, ws.next()).await {
                Err(_) if quiet => {
                    let _ = ws.close(None).await;
                    self.session.disconnected();
                    return SyncEnd::Quiet(events);
                }
                Err(_) => panic!("the server went silent mid-sync"),
                Ok(Some(Ok(Message::Binary(bytes)))) => {
                    if self.record {
                        self.frames.push(bytes.to_vec());
                        if let Ok(m) = sync_core::protocol::wire::decode(&bytes) {
                            self.received.push(m);
                        }
                    }
                    self.session.handle_bytes(&mut self.repo, &bytes, now())
                }
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => {
                    events.extend(std::iter::from_fn(|| self.session.poll_event()));
                    self.session.disconnected();
                    return SyncEnd::Closed(events);
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

/// A TCP proxy on 127.0.0.1 that makes a link bad: a bandwidth cap, a delay per chunk, random
/// stalls (what loss looks like above TCP, which retransmits), and a cut after a number of
/// bytes towards the client. (The kernel here has no netem, so the proxy is ours.)
#[derive(Debug, Clone)]
pub struct LinkFaults {
    pub bytes_per_second: usize,
    pub delay: Duration,
    /// Per-mille chance that a chunk stalls for `stall`.
    pub stall_per_mille: u32,
    pub stall: Duration,
    /// Close the connection once this many bytes went from the server to the client.
    pub cut_after_down: Option<usize>,
}

#[derive(Debug)]
pub struct FaultProxy {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Proxies every connection to `upstream` through `faults` (the cut applies to the first
    /// connection only, so that a reconnect can finish).
    pub async fn start(upstream: SocketAddr, faults: LinkFaults, seed: u64) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut first = true;
            let mut n = 0u64;
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let mut faults = faults.clone();
                if !first {
                    faults.cut_after_down = None;
                }
                first = false;
                n += 1;
                tokio::spawn(pipe(client, server, faults, seed.wrapping_add(n)));
            }
        });
        Self { addr, task }
    }
}

async fn pipe(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    faults: LinkFaults,
    seed: u64,
) {
    use rand::SeedableRng;
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up_faults = faults.clone();
    let up = tokio::spawn(async move {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut buf = vec![0u8; 1024];
        while let Ok(n) = cr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            slow(&up_faults, n, &mut rng).await;
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let mut buf = vec![0u8; 1024];
    let mut sent = 0usize;
    while let Ok(n) = sr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let n = match faults.cut_after_down {
            Some(limit) if sent + n >= limit => {
                // Deliver up to the limit, mid-message, then cut both ways.
                let _ = cw.write_all(&buf[..limit.saturating_sub(sent)]).await;
                break;
            }
            _ => n,
        };
        slow(&faults, n, &mut rng).await;
        if cw.write_all(&buf[..n]).await.is_err() {
            break;
        }
        sent += n;
    }
    up.abort();
}

async fn slow(faults: &LinkFaults, n: usize, rng: &mut rand_chacha::ChaCha8Rng) {
    use rand::Rng;
    let mut wait =
        faults.delay + Duration::from_secs_f64(n as f64 / faults.bytes_per_second.max(1) as f64);
    if rng.random_range(0..1000) < faults.stall_per_mille {
        wait += faults.stall;
    }
    tokio::time::sleep(wait).await;
}
