//! The device harness: a phone with its own SQLite store, enrolled over HTTPS, syncing over
//! WSS with the server's certificate pinned.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use server::directory::Directory;

use crate::net::{Reach, https_at};
use sync_core::protocol::{DeviceConfig, DeviceEvent, DeviceSession};
use sync_core::repo::Repo;
use sync_core::store::SqliteStore;
use sync_core::{Author, DeviceId, Timestamp, UserId};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::{TestServer, client_config};

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
    /// Says it reads root signatures (`x-nara-signatures: root`) and signs its uploads over their
    /// root when the server's answer says it takes them, as the device runtime does; off by
    /// default (a device of an older build, signing per document).
    pub root_signatures: bool,
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
    /// No connection: nothing listens, or the TLS or WebSocket handshake failed (a server
    /// killed a moment ago); only from [`TestDevice::sync_or_lost`].
    Unreachable(String),
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
            root_signatures: false,
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
            root_signatures: false,
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

    /// Like [`TestDevice::sync`], for a server that may die at any moment (a crash test): a
    /// connection that cannot be made ends as [`SyncEnd::Unreachable`] and a server silent
    /// mid-sync for 30 s as [`SyncEnd::Closed`], where `sync` would fail the test.
    pub async fn sync_or_lost(&mut self, server: &impl Reach) -> SyncEnd {
        self.run_with(server, |_| false, Duration::from_millis(300), true)
            .await
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
        if self.root_signatures {
            request.headers_mut().insert(
                sync_core::signing::ROOT_SIGNATURES_HEADER,
                sync_core::signing::ROOT_SIGNATURES.parse().unwrap(),
            );
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
        until: impl FnMut(&[DeviceEvent]) -> bool,
        linger: Duration,
    ) -> SyncEnd {
        self.run_with(server, until, linger, false).await
    }

    /// `lost_ok`: a connection that cannot be made, or a server gone silent, ends the sync
    /// instead of failing the test.
    async fn run_with(
        &mut self,
        server: &impl Reach,
        mut until: impl FnMut(&[DeviceEvent]) -> bool,
        linger: Duration,
        lost_ok: bool,
    ) -> SyncEnd {
        let request = self.sync_request(server);
        let tcp = match tokio::net::TcpStream::connect(self.via.unwrap_or(server.addr())).await {
            Ok(tcp) => tcp,
            Err(e) if lost_ok => return SyncEnd::Unreachable(e.to_string()),
            Err(e) => panic!("connect failed: {e}"),
        };
        let connector = tokio_tungstenite::Connector::Rustls(client_config(server.fingerprint()));
        let (mut ws, answer) = match tokio_tungstenite::client_async_tls_with_config(
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
            Err(e) if lost_ok => return SyncEnd::Unreachable(e.to_string()),
            Err(e) => panic!("connect failed: {e}"),
        };
        let now = || Timestamp(crate::now_ms());
        if self.root_signatures {
            let takes = answer
                .headers()
                .get(sync_core::signing::ROOT_SIGNATURES_HEADER)
                .is_some_and(|v| v == sync_core::signing::ROOT_SIGNATURES);
            self.session
                .server_takes_root_signatures(&mut self.repo, takes)
                .unwrap();
        }
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
            } else if lost_ok {
                Duration::from_secs(30)
            } else {
                Duration::from_secs(10)
            };
            match tokio::time::timeout(wait, ws.next()).await {
                Err(_) if quiet => {
                    let _ = ws.close(None).await;
                    self.session.disconnected();
                    return SyncEnd::Quiet(events);
                }
                Err(_) if lost_ok => {
                    self.session.disconnected();
                    return SyncEnd::Closed(events);
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
