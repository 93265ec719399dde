//! `idle`: `devices` authenticated, idle sync sessions held open to the real `nara-server`
//! process; its resident memory once all are connected and quiet.
//!
//! Credentials are made in bulk through `server::directory` (a code issued and redeemed per
//! device, as `/v1/enroll` does) before the server starts. Each device is a light client in
//! this process: TLS (pinned certificate), the WebSocket upgrade with its bearer token, and the
//! protocol's own `DeviceSession` over an in-memory store, which sends the Hello and handles
//! the answer until caught up; then the connection stays open and idle. A sample of connections
//! goes through a [`crate::meter::CountingProxy`] for the bytes per connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use server::directory::Directory;
use sync_core::protocol::{DeviceConfig, DeviceSession};
use sync_core::repo::Repo;
use sync_core::store::MemoryStore;
use sync_core::{Role, Timestamp};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::meter;
use crate::procs::ServerProc;
use crate::team;

#[derive(Debug, Clone)]
pub struct Params {
    pub devices: usize,
    /// Connections opening at once.
    pub parallel: usize,
    /// How long to hold all connections idle before measuring.
    pub idle_secs: u64,
    /// Connections that go through the counting proxy.
    pub sampled: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct IdleResult {
    pub system: String,
    pub devices: usize,
    pub connected: usize,
    pub seconds_to_connect_all: f64,
    /// Server VmRSS before any device connected, after all connected and idle, and VmHWM.
    pub server_rss_before_bytes: u64,
    pub server_rss_idle_bytes: u64,
    pub server_peak_rss_bytes: u64,
    /// (rss_idle - rss_before) / connected.
    pub server_rss_per_connection_bytes: f64,
    /// Mean bytes per sampled connection: setup (TLS, upgrade, Hello and answer) and then
    /// during the idle period.
    pub setup_bytes_per_connection: f64,
    pub idle_bytes_per_connection: f64,
    pub sampled_connections: usize,
    pub idle_secs: u64,
    pub under_1_gib: bool,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn run(p: &Params) -> Result<IdleResult> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("server");
    let dir = team::directory(&data)?;
    // A hundred devices per carer, each carer assigned one person.
    let users_n = p.devices.div_ceil(100).max(1);
    let users = team::users(&dir, "carer-", users_n, Role::Carer)?;
    let patients = team::patients(&dir, users_n)?;
    for (u, pt) in users.iter().zip(&patients) {
        dir.assign(u, pt)?;
    }
    let setup = Instant::now();
    let mut creds = Vec::with_capacity(p.devices);
    let now = nara_client::now().0;
    for i in 0..p.devices {
        let code = dir.enroll(&users[i % users_n], now)?;
        let c = dir.redeem(&code, now)?;
        creds.push(format!("Bearer {}.{}", c.device, c.secret));
    }
    tracing::info!(secs = setup.elapsed().as_secs_f64(), "credentials made");
    let max = (p.devices + 100).to_string();
    let server = ServerProc::start(&data, &["--max-connections", &max])?;
    let proxy = meter::start(server.addr).await?;
    let tls = nara_tests::net::client_config(&server.fingerprint);
    // Let the server settle, then its baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = server.rss();

    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(p.parallel.max(1)));
    let mut tasks = Vec::with_capacity(p.devices);
    for (i, token) in creds.into_iter().enumerate() {
        let addr = if i < p.sampled {
            proxy.addr
        } else {
            server.addr
        };
        let tls = tls.clone();
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await?;
            connect(addr, &token, tls).await
        }));
    }
    let mut held: Vec<Ws> = Vec::with_capacity(p.devices);
    let mut failed = 0usize;
    for t in tasks {
        match t.await {
            Ok(Ok(ws)) => held.push(ws),
            Ok(Err(e)) => {
                failed += 1;
                if failed <= 3 {
                    tracing::warn!(error = %format!("{e:#}"), "a device did not connect");
                }
            }
            Err(e) => bail!("a connecting task failed: {e}"),
        }
    }
    let seconds_to_connect_all = started.elapsed().as_secs_f64();
    let setup_traffic = proxy.traffic();
    proxy.reset();
    // Idle; the connections are held (nothing reads them, as an app in the background).
    tokio::time::sleep(Duration::from_secs(p.idle_secs)).await;
    let rss_idle = server.rss();
    let peak = server.peak_rss();
    let idle_traffic = proxy.traffic();
    let connected = held.len();
    let sampled = p.sampled.min(p.devices);
    let per = |t: meter::Traffic| {
        if sampled == 0 {
            0.0
        } else {
            (t.bytes_up + t.bytes_down) as f64 / sampled as f64
        }
    };
    drop(held);
    Ok(IdleResult {
        system: "nara".into(),
        devices: p.devices,
        connected,
        seconds_to_connect_all,
        server_rss_before_bytes: rss_before,
        server_rss_idle_bytes: rss_idle,
        server_peak_rss_bytes: peak,
        server_rss_per_connection_bytes: if connected > 0 {
            rss_idle.saturating_sub(rss_before) as f64 / connected as f64
        } else {
            0.0
        },
        setup_bytes_per_connection: per(setup_traffic),
        idle_bytes_per_connection: per(idle_traffic),
        sampled_connections: sampled,
        idle_secs: p.idle_secs,
        under_1_gib: rss_idle < (1 << 30) && peak < (1 << 30),
    })
}

/// One light device: TLS, upgrade, Hello, read until caught up; returns the open socket.
async fn connect(
    addr: std::net::SocketAddr,
    token: &str,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Ws> {
    let mut request = format!("wss://localhost:{}/v1/sync", addr.port()).into_client_request()?;
    request
        .headers_mut()
        .insert("Authorization", token.parse().context("token header")?);
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    // Small client buffers: this process holds thousands of these.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_tls_with_config(
        request,
        tcp,
        Some(config),
        Some(tokio_tungstenite::Connector::Rustls(tls)),
    )
    .await?;
    let mut repo = Repo::new(MemoryStore::new());
    let mut session = DeviceSession::new(DeviceConfig::default());
    let now = || Timestamp(nara_client::now().0);
    session.connect(&mut repo, now())?;
    loop {
        while let Some(bytes) = session.poll_transmit() {
            ws.send(Message::Binary(bytes.into())).await?;
        }
        while session.poll_event().is_some() {}
        if session.is_caught_up() {
            return Ok(ws);
        }
        match tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
            Err(_) => bail!("no answer to the Hello"),
            Ok(Some(Ok(Message::Binary(b)))) => session.handle_bytes(&mut repo, &b, now()),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(None) => bail!("closed during setup"),
        }
    }
}
