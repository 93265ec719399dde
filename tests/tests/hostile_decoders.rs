//! Issue 11, hole 1: no device input reaches Automerge's decoders unbounded. An enrolled but
//! hostile device (bo) attacks the real server over TLS with
//!
//! - a sync message whose Bloom filter asks for 2^27 probes per hash (Automerge 0.12 would
//!   allocate 512 MiB for every hash it checks; with `u32::MAX` it aborts the process),
//! - an upload of a "compressed change" chunk that inflates to 600 MiB,
//! - a fallback sync message carrying a "document" whose DEFLATE column inflates to 600 MiB,
//!
//! while an honest pair of devices keeps syncing and converges. Each is refused with a typed
//! reason (the connection's `Close` as `Malformed`, or the change's `Malformed` refusal), is
//! audited, and the process's peak resident memory (VmHWM, reset just before the attack through
//! `/proc/self/clear_refs`) stays within 256 MiB of its resident memory before the attack.
//! Without `sync_core::model::admit` each attack allocates more than twice that.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nara_tests::net::{SyncEnd, TestDevice, TestServer, client_config};
use nara_tests::*;
use rustls::pki_types::ServerName;
use server::Limits;
use server::audit::AuditLog;
use server::directory::Directory;
use sync_core::model::EventBody;
use sync_core::protocol::wire::{
    self, CloseReason, DeviceMessage, DocChanges, Hello, RefusalCode, ServerMessage,
};
use sync_core::{Author, DocumentId, Role, UserId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The attacks measure the whole process's memory: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How far above its idle figure the process's resident memory may go under an attack.
const MEMORY_HEADROOM: u64 = 256 * 1024 * 1024;

/// What each bomb inflates to (more than twice the headroom).
const BOMB_BYTES: usize = 600 * 1024 * 1024;

/// Generous bound on anything the tests wait for; reaching it fails the test.
const PATIENCE: Duration = Duration::from_secs(60);

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn journal(p: &str) -> DocumentId {
    DocumentId::journal(&patient(p), november())
}

/// Short timeouts so that the tests wait for outcomes, not for production defaults. The ping
/// interval stays above the 300 ms a `TestDevice` lingers when quiet.
fn short() -> Limits {
    Limits {
        handshake_timeout: Duration::from_millis(500),
        read_timeout: Duration::from_secs(3),
        ping_interval: Duration::from_millis(700),
        idle_timeout: Duration::from_secs(2),
        send_timeout: Duration::from_secs(1),
        ..Limits::default()
    }
}

/// Carers anna and bo (bo is the hostile one), nurse nina; patients p1, p2. Bo cares for p1;
/// the honest pair, nina and anna, for p2.
struct World {
    server: TestServer,
    nina: TestDevice,
    anna: TestDevice,
    bo: TestDevice,
}

async fn world(limits: Limits) -> World {
    let server = TestServer::start_with(limits).await;
    let d = &server.directory;
    d.add_org("norr", "Hemtjänst Norr").unwrap();
    d.add_user(&uid("anna"), "Anna", Role::Carer, "norr")
        .unwrap();
    d.add_user(&uid("bo"), "Bo", Role::Carer, "norr").unwrap();
    d.add_user(&uid("nina"), "Nina", Role::Nurse, "norr")
        .unwrap();
    for p in ["p1", "p2"] {
        d.add_patient(&patient(p), p).unwrap();
    }
    d.assign(&uid("bo"), &patient("p1")).unwrap();
    d.assign(&uid("nina"), &patient("p1")).unwrap();
    d.assign(&uid("nina"), &patient("p2")).unwrap();
    d.assign(&uid("anna"), &patient("p2")).unwrap();
    server.state.refresh().unwrap();
    let mut nina = TestDevice::enroll(&server, "nina").await;
    let mut anna = TestDevice::enroll(&server, "anna").await;
    let bo = TestDevice::enroll(&server, "bo").await;
    quiet(nina.sync(&server).await);
    quiet(anna.sync(&server).await);
    World {
        server,
        nina,
        anna,
        bo,
    }
}

fn quiet(end: SyncEnd) {
    assert!(
        matches!(end, SyncEnd::Quiet(_)),
        "an honest sync did not complete: {end:?}"
    );
}

fn note(device: &mut TestDevice, p: &str, id: &str, body: &str) {
    let author = device.author.clone();
    device
        .repo
        .change(&journal(p), &author, at(9, 0), |e| {
            e.record(
                rid(id),
                EventBody::Note {
                    body: body.into(),
                    corrects: None,
                },
            )
        })
        .unwrap();
}

/// Runs `hostile` while the honest pair keeps syncing: nina writes a note about p2, both sync,
/// and anna must have it, round after round until the hostile part is done (at least one
/// round during it, and one after). Returns the hostile part's result.
async fn with_honest_pair<T>(
    server: &TestServer,
    nina: &mut TestDevice,
    anna: &mut TestDevice,
    tag: &str,
    hostile: impl Future<Output = T>,
) -> T {
    let done = AtomicBool::new(false);
    let honest = async {
        let mut round = 0;
        loop {
            let finished = done.load(Ordering::SeqCst);
            round += 1;
            let id = format!("{tag}-{round}");
            note(nina, "p2", &id, "Visit during the attack: all well.");
            quiet(nina.sync(server).await);
            quiet(anna.sync(server).await);
            assert!(
                anna.repo
                    .get(&journal("p2"))
                    .unwrap()
                    .event(&rid(&id))
                    .is_some(),
                "the honest device did not receive note {id}"
            );
            if finished {
                return round;
            }
        }
    };
    let hostile = async {
        let out = hostile.await;
        done.store(true, Ordering::SeqCst);
        out
    };
    let (rounds, out) = tokio::time::timeout(PATIENCE, async { tokio::join!(honest, hostile) })
        .await
        .expect("the test did not finish in time");
    assert!(rounds >= 2);
    // Everyone converged: nina and anna hold the same journal of p2.
    let a = anna.repo.get(&journal("p2")).unwrap().events().len();
    let n = nina.repo.get(&journal("p2")).unwrap().events().len();
    assert_eq!(a, n);
    out
}
// ---- a raw client ----

type Tls = TlsStream<TcpStream>;

async fn tcp(server: &TestServer, recv_buffer: Option<u32>) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    socket.connect(server.addr).await.unwrap()
}

async fn tls(server: &TestServer, tcp: TcpStream) -> Tls {
    tokio_rustls::TlsConnector::from(client_config(&server.fingerprint))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// A WebSocket client whose frames are written by hand.
struct Raw {
    io: Tls,
}

impl Raw {
    /// TLS, then the WebSocket upgrade with `device`'s credential.
    async fn connect(server: &TestServer, device: &TestDevice) -> Raw {
        Self::connect_with(server, device, None).await
    }

    async fn connect_with(
        server: &TestServer,
        device: &TestDevice,
        recv_buffer: Option<u32>,
    ) -> Raw {
        let mut io = tls(server, tcp(server, recv_buffer).await).await;
        let request = format!(
            "GET /v1/sync HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {}.{}\r\n\r\n",
            device.author.device, device.secret
        );
        io.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(io.read_u8().await.unwrap());
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        Raw { io }
    }

    /// A masked frame header announcing `len` bytes (the payload is written separately).
    fn header(opcode: u8, fin: bool, len: u64) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match len {
            0..=125 => out.push(0x80 | len as u8),
            126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.push(0x80 | 127);
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
        out.extend_from_slice(&MASK);
        out
    }

    fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = Self::header(opcode, fin, payload.len() as u64);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        out
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
        self.io.flush().await.unwrap();
    }

    async fn send_binary(&mut self, payload: &[u8]) {
        self.write(&Self::frame(BINARY, true, payload)).await;
    }

    async fn send(&mut self, msg: &DeviceMessage) {
        self.send_binary(&wire::encode(msg).unwrap()).await;
    }

    async fn hello(&mut self, upload: Vec<DocChanges>) {
        self.send(&DeviceMessage::Hello(Hello {
            cursor: None,
            received: Vec::new(),
            priority: Vec::new(),
            backfill: Vec::new(),
            upload,
        }))
        .await;
    }

    /// The next frame from the server: (opcode, payload); `None` at the end of the stream.
    async fn frame_in(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut head = [0u8; 2];
        self.io.read_exact(&mut head).await.ok()?;
        let len = match head[1] & 0x7f {
            126 => u64::from(self.io.read_u16().await.ok()?),
            127 => self.io.read_u64().await.ok()?,
            n => u64::from(n),
        };
        let mut payload = vec![0; len as usize];
        self.io.read_exact(&mut payload).await.ok()?;
        Some((head[0] & 0x0f, payload))
    }

    /// The next protocol message (pings and pongs skipped); `None` once the connection ends.
    async fn message(&mut self) -> Option<ServerMessage> {
        loop {
            match tokio::time::timeout(PATIENCE, self.frame_in())
                .await
                .expect("the server neither answered nor closed")?
            {
                (BINARY, bytes) => return Some(wire::decode(&bytes).unwrap()),
                (CLOSE, _) => return None,
                _ => {}
            }
        }
    }

    /// Reads until the server closes; returns the protocol's reason and what came before it.
    async fn refusal(&mut self) -> (CloseReason, Vec<ServerMessage>) {
        let mut before = Vec::new();
        loop {
            match self.message().await {
                Some(ServerMessage::Close { reason, .. }) => {
                    // After the reason the connection ends.
                    assert!(self.message().await.is_none());
                    return (reason, before);
                }
                Some(other) => before.push(other),
                None => panic!("closed without a reason, after {before:?}"),
            }
        }
    }
}

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
// ---- the audit log ----

struct Row {
    action: String,
    device: Option<String>,
    detail: String,
}

fn audit_rows(server: &TestServer) -> Vec<Row> {
    let conn =
        rusqlite::Connection::open(server::admin_cli::audit_path(server.data.path())).unwrap();
    let mut stmt = conn
        .prepare("SELECT action, device, detail FROM audit_log ORDER BY seq")
        .unwrap();
    stmt.query_map([], |r| {
        Ok(Row {
            action: r.get(0)?,
            device: r.get(1)?,
            detail: r.get(2)?,
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// The details of `action` records about `device`, waiting (within `PATIENCE`) until there are
/// at least `n` of them: the server audits a close just after sending it. The chain verifies.
async fn audited(server: &TestServer, action: &str, device: &Author, n: usize) -> Vec<String> {
    let device = device.device.to_string();
    let found = tokio::time::timeout(PATIENCE, async {
        loop {
            let rows: Vec<String> = audit_rows(server)
                .into_iter()
                .filter(|r| r.action == action && r.device.as_deref() == Some(device.as_str()))
                .map(|r| r.detail)
                .collect();
            if rows.len() >= n {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("fewer than {n} {action} records for {device}"));
    let report = server.audit.verify().unwrap();
    assert!(report.ok, "{report:?}");
    found
}

fn changes(doc: DocumentId, changes: Vec<Vec<u8>>) -> Vec<DocChanges> {
    vec![DocChanges {
        doc,
        changes,
        positions: Vec::new(),
    }]
}

// ---- memory ----

/// A field of `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kb * 1024
}

/// Runs `attack` and asserts that the process's peak resident memory during it stayed within
/// [`MEMORY_HEADROOM`] of its resident memory before it.
async fn within_memory<T>(attack: impl Future<Output = T>) -> T {
    let idle = status_bytes("VmRSS:");
    // Resets VmHWM to the current resident size (Linux 4.0 and later).
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let out = attack.await;
    let peak = status_bytes("VmHWM:");
    assert!(
        peak <= idle + MEMORY_HEADROOM,
        "resident memory peaked at {} MiB, {} MiB above idle",
        peak >> 20,
        (peak.saturating_sub(idle)) >> 20
    );
    out
}

// ---- the bombs ----

fn leb(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// `BOMB_BYTES` zeros, raw DEFLATE (about 600 KiB).
fn deflate_bomb() -> Vec<u8> {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..BOMB_BYTES >> 20 {
        enc.write_all(&zeros).unwrap();
    }
    enc.finish().unwrap()
}

/// An Automerge chunk: magic bytes, a checksum, the type, the length, the data.
fn chunk(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, kind];
    leb(&mut out, data.len() as u64);
    out.extend_from_slice(data);
    out
}

/// A sync message (v1): no heads, no needs, the given `have` blooms, the given chunks.
fn sync_message(blooms: &[Vec<u8>], chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![0x42, 0, 0];
    leb(&mut out, blooms.len() as u64);
    for bloom in blooms {
        out.push(0); // no last_sync hashes
        leb(&mut out, bloom.len() as u64);
        out.extend_from_slice(bloom);
    }
    leb(&mut out, chunks.len() as u64);
    for c in chunks {
        leb(&mut out, c.len() as u64);
        out.extend_from_slice(c);
    }
    out
}

/// One entry, 10 bits per entry, `probes` probes, and its two bytes of bits.
fn bloom(probes: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [1, 10, u64::from(probes)] {
        leb(&mut out, v);
    }
    out.extend([0xff, 0xff]);
    out
}

/// A document chunk with one change column, DEFLATE-compressed, holding `column`.
fn document_bomb(column: &[u8]) -> Vec<u8> {
    let mut data = vec![0, 0]; // no actors, no heads
    data.push(1); // one change column:
    leb(&mut data, 0x10 | 0b1000); // id 1, type 0, deflated
    leb(&mut data, column.len() as u64);
    data.push(0); // no op columns
    data.extend_from_slice(column);
    chunk(0, &data)
}

/// Sends hello, then `msg`, from bo's raw connection; returns the reason the server closed with.
async fn closed_for(server: &TestServer, bo: &TestDevice, msg: DeviceMessage) -> CloseReason {
    let mut raw = Raw::connect(server, bo).await;
    raw.hello(Vec::new()).await;
    raw.send(&msg).await;
    raw.refusal().await.0
}

// ---- the attacks ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole1_a_bloom_bomb_sync_message_is_refused() {
    let _one = ONE_AT_A_TIME.lock().await;
    let World {
        server,
        mut nina,
        mut anna,
        bo,
    } = world(short()).await;
    // The server holds changes of p1's journal to check against the filter.
    let mut bo = bo;
    note(&mut bo, "p1", "bo-1", "A visit.");
    quiet(bo.sync(&server).await);
    let bomb = sync_message(&[bloom(1 << 27)], &[]);
    let reason = within_memory(with_honest_pair(
        &server,
        &mut nina,
        &mut anna,
        "bloom",
        closed_for(
            &server,
            &bo,
            DeviceMessage::AmSync {
                doc: journal("p1"),
                message: bomb,
            },
        ),
    ))
    .await;
    assert_eq!(reason, CloseReason::Malformed);
    let audited = audited(&server, "disconnect", &bo.author, 1).await;
    assert!(audited.iter().any(|d| d.contains("Bloom")), "{audited:?}");
    // An honest filter is still answered: bo syncs normally afterwards.
    quiet(bo.sync(&server).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole1_a_compressed_change_inflation_bomb_upload_is_refused() {
    let _one = ONE_AT_A_TIME.lock().await;
    let World {
        server,
        mut nina,
        mut anna,
        bo,
    } = world(short()).await;
    let bomb = chunk(2, &deflate_bomb());
    assert!(bomb.len() < wire::MAX_CHANGE_BYTES);
    let codes = within_memory(with_honest_pair(
        &server,
        &mut nina,
        &mut anna,
        "inflate",
        async {
            let mut raw = Raw::connect(&server, &bo).await;
            raw.hello(changes(journal("p1"), vec![bomb])).await;
            loop {
                match raw.message().await {
                    Some(ServerMessage::UploadAck { upload: 0, refused }) => {
                        raw.write(&Raw::frame(CLOSE, true, &[])).await;
                        return refused.into_iter().map(|r| r.code).collect::<Vec<_>>();
                    }
                    Some(ServerMessage::Close { reason, detail }) => {
                        panic!("the connection was closed: {reason:?} {detail}")
                    }
                    Some(_) => {}
                    None => panic!("the connection ended before the upload was answered"),
                }
            }
        },
    ))
    .await;
    assert_eq!(codes, vec![RefusalCode::Malformed]);
    let audited = audited(&server, "refuse", &bo.author, 1).await;
    assert!(
        audited.iter().any(|d| d.contains("inflates")),
        "{audited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole1_a_fallback_document_bomb_is_refused() {
    let _one = ONE_AT_A_TIME.lock().await;
    let World {
        server,
        mut nina,
        mut anna,
        bo,
    } = world(short()).await;
    let bomb = sync_message(&[], &[document_bomb(&deflate_bomb())]);
    assert!(bomb.len() < wire::MAX_MESSAGE_BYTES);
    let reason = within_memory(with_honest_pair(
        &server,
        &mut nina,
        &mut anna,
        "document",
        closed_for(
            &server,
            &bo,
            DeviceMessage::AmSync {
                doc: journal("p1"),
                message: bomb,
            },
        ),
    ))
    .await;
    assert_eq!(reason, CloseReason::Malformed);
    let audited = audited(&server, "disconnect", &bo.author, 1).await;
    assert!(
        audited.iter().any(|d| d.contains("inflates")),
        "{audited:?}"
    );
}
