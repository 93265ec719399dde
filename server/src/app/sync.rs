//! The `/v1/sync` WebSocket: moves bytes between the socket and a `ServerSession`, and audits
//! what the session did before anything of it is sent.
//!
//! Every step of the session (a message, pushed changes, changed access, a close) runs off the
//! async threads, in the group-commit worker (`commit.rs`), inside a store transaction: the
//! session's store writes, then the audit records of its events on the same connection, then
//! the commit (shared with the other sessions' steps that waited meanwhile). If any of it
//! fails, the step rolls back, nothing it queued is sent, and the session closes with
//! `CloseReason::Internal`. So a change is never stored unaudited, a disclosure is recorded
//! before its bytes leave, and `ReadLogAck` goes out only once the read records are durable.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use futures_util::SinkExt;
use sync_core::protocol::wire::{self, CloseReason, MAX_MESSAGE_BYTES};
use sync_core::protocol::{Peer, ServerConfig, ServerSession};
use sync_core::signing::{PublicKey, ROOT_SIGNATURES, ROOT_SIGNATURES_HEADER};
use sync_core::{Author, DeviceId, Timestamp};
use tokio::sync::watch;

use crate::audit::{AuditAction, AuditEntry};
use crate::directory::KeyRegistration;

use super::waiting::waiting_header;

use super::{AppState, Bucket, CarePolicy, ClientAddr, Limits, error, lock, logins, now_ms};

/// `Authorization: Bearer <device>.<secret>` -> the device's identity.
pub(super) fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Option<crate::directory::DeviceIdentity> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?;
    let (device, secret) = token.split_once('.')?;
    let device = DeviceId::new(device).ok()?;
    match state.inner.directory.authenticate(&device, secret) {
        Ok(identity) => identity,
        Err(e) => {
            tracing::error!(error = %e, "authentication lookup failed");
            None
        }
    }
}

/// The header in which a device enrolled before signed changes registers its public signing
/// key (64 hex digits) on its authenticated connection; every signing device sends it.
pub const SIGNING_KEY_HEADER: &str = "x-nara-signing-key";

/// The authenticated device's signing key: the one it offers in [`SIGNING_KEY_HEADER`] is
/// registered if it has none yet (never replacing one); the registered one is returned.
fn signing_key(
    state: &AppState,
    identity: &crate::directory::DeviceIdentity,
    headers: &HeaderMap,
) -> Option<PublicKey> {
    let directory = &state.inner.directory;
    let device = &identity.device;
    let audit = |action, detail: &str| {
        let _ = state.audit(
            AuditEntry::new(now_ms(), identity.user.to_string(), action)
                .device(device)
                .detail(detail),
        );
    };
    let offered = headers
        .get(SIGNING_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(PublicKey::from_hex);
    match offered {
        Some(Ok(key)) => match directory.register_key(device, &key.0) {
            Ok(KeyRegistration::Registered) => {
                tracing::info!(%device, "signing key registered on connection");
                audit(AuditAction::Redeem, "signing key registered");
            }
            Ok(KeyRegistration::Unchanged) => {}
            Ok(KeyRegistration::Conflict) => {
                // The secret is right and the key is not: kept, refused, and audited.
                tracing::warn!(%device, "the device offers another signing key than its registered one");
                audit(
                    AuditAction::AuthFailed,
                    "another signing key than the registered one offered; the registered one stays",
                );
            }
            Err(e) => tracing::error!(%device, error = %e, "registering a signing key failed"),
        },
        Some(Err(_)) => tracing::warn!(%device, "the offered signing key is not an Ed25519 key"),
        None => {}
    }
    match directory.signing_key(device) {
        Ok(key) => key.map(PublicKey),
        Err(e) => {
            tracing::error!(%device, error = %e, "reading the signing key failed");
            None
        }
    }
}

/// The sync WebSocket's read buffer (see `sync_ws`).
const WS_READ_BUFFER: usize = 16 * 1024;

pub(super) async fn sync_ws(
    State(state): State<AppState>,
    client: Option<Extension<ConnectInfo<ClientAddr>>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let addr = client.map(|Extension(ConnectInfo(ClientAddr(a)))| a.ip());
    if let Some(refused) = logins::refusal(&state.inner.login_failures, addr) {
        return refused;
    }
    // Subscribed before the credential is checked: a revocation committed after this point
    // marks the channel changed, so a connection that authenticated just before it still sees
    // it (the session re-checks on every change, and once when it starts).
    let access = state.inner.access.subscribe();
    let Some(identity) = authenticate(&state, &headers) else {
        state
            .inner
            .metrics
            .auth_failures
            .fetch_add(1, Ordering::Relaxed);
        logins::failed(&state, &state.inner.login_failures, addr);
        return error(
            StatusCode::UNAUTHORIZED,
            "a valid device credential is required",
        );
    };
    if *state.inner.shutdown.borrow() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    let signing_key = signing_key(&state, &identity, &headers);
    let waiting = waiting_header(&headers);
    let reads_root = headers
        .get(ROOT_SIGNATURES_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == ROOT_SIGNATURES);
    let author = Author::new(identity.user, identity.role, identity.device);
    // The read buffer is allocated and filled per connection: tungstenite's default of 128 KiB
    // made an idle session cost ~150 KB of server memory (10,000 devices: 1.5 GB). One TLS
    // record's worth (16 KiB) reads a large message in more, equally cheap, steps.
    let device = Caller {
        author,
        signing_key,
        waiting,
        reads_root,
    };
    let mut answer = ws
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .read_buffer_size(WS_READ_BUFFER)
        .on_upgrade(move |socket| connection(state, device, access, socket));
    // This server takes uploads signed once over their root (`signing/root.rs`).
    answer.headers_mut().insert(
        ROOT_SIGNATURES_HEADER,
        axum::http::HeaderValue::from_static(ROOT_SIGNATURES),
    );
    answer
}

/// Who connected, as the sync request said.
struct Caller {
    author: Author,
    signing_key: Option<PublicKey>,
    waiting: Option<u64>,
    /// The device reads root signatures with their path.
    reads_root: bool,
}

/// Why reading from a sync socket failed: the device broke the WebSocket protocol (a frame or
/// message over the size limit, a bad frame), or the connection just went away.
fn socket_error(e: axum::Error) -> Option<(CloseReason, String)> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let inner = e.into_inner();
    match inner.downcast_ref::<WsError>() {
        Some(WsError::Capacity(c)) => Some((CloseReason::MessageTooLarge, c.to_string())),
        Some(WsError::Protocol(p)) => {
            use tokio_tungstenite::tungstenite::error::ProtocolError;
            match p {
                ProtocolError::ResetWithoutClosingHandshake
                | ProtocolError::SendAfterClosing
                | ProtocolError::ReceivedAfterClosing => None,
                other => Some((CloseReason::Malformed, format!("WebSocket: {other}"))),
            }
        }
        Some(WsError::Utf8(detail)) => {
            Some((CloseReason::Malformed, format!("WebSocket: {detail}")))
        }
        Some(WsError::Io(io)) if io.kind() == std::io::ErrorKind::TimedOut => Some((
            CloseReason::Stalled,
            "no data from the device within the read timeout".into(),
        )),
        _ => {
            tracing::debug!(error = %inner, "socket error");
            None
        }
    }
}

/// Sends one message within the send timeout; `false` if it could not be sent.
async fn send_within(socket: &mut WebSocket, limits: &Limits, message: Message) -> bool {
    within(limits, socket.send(message)).await
}

/// What woke a connection's task.
enum Wake {
    /// A message from the device, to handle in a step.
    Message(StepFn),
    /// A step to run.
    Step(StepFn),
    /// The feed's head moved to this position.
    Feed(u64),
    /// A frame that changes nothing in the session (its events are still audited).
    Audit,
    /// The session closes for this reason, audited in a step.
    Close(CloseReason, String),
    /// The device went: the connection ends.
    End,
    /// A worker gave the parked session back (it may have stepped it).
    Returned,
    Tick,
}

/// Sends what the session queued, while the socket takes it; whether it still does. Each
/// message is handed to the WebSocket within the send timeout; small ones queued together are
/// flushed together, in one write (`wire::flush_before`): a relayed change's signatures and
/// its batch reach the device at once, instead of in two writes that a busy server could pull
/// apart (`latency`).
async fn send_queued(
    socket: &mut WebSocket,
    limits: &Limits,
    metrics: &super::Metrics,
    session: &mut ServerSession,
    mut writable: bool,
) -> bool {
    let mut unflushed = 0;
    while writable && let Some(bytes) = session.poll_transmit() {
        if wire::flush_before(unflushed, bytes.len()) {
            writable = within(limits, socket.flush()).await;
            unflushed = 0;
            if !writable {
                break;
            }
        }
        metrics.messages_out.fetch_add(1, Ordering::Relaxed);
        // Counted at least 1: an empty message still needs its flush.
        unflushed += bytes.len().max(1);
        writable = within(limits, socket.feed(Message::Binary(bytes.into()))).await;
    }
    if writable && unflushed > 0 {
        writable = within(limits, socket.flush()).await;
    }
    writable
}

/// Whether a write to the socket completed within the send timeout.
async fn within<E>(limits: &Limits, write: impl Future<Output = Result<(), E>>) -> bool {
    matches!(
        tokio::time::timeout(limits.send_timeout, write).await,
        Ok(Ok(()))
    )
}

/// What one step does to the session, given the store and the policy.
/// `Fn`: the group-commit worker runs a group's steps again, from copies of their sessions, when
/// one of them failed the first time (`commit.rs`).
pub(super) type StepFn =
    Box<dyn Fn(&mut ServerSession, &mut super::ServerRepo, &CarePolicy) + Send>;

/// Runs one step of the session in the group-commit worker (see the module documentation).
/// Returns the session once its step has committed, with whether the group also stepped it for
/// the feed, or `None` if the step died (the connection then ends).
async fn step(
    state: &AppState,
    author: &Author,
    conn: u64,
    session: ServerSession,
    f: StepFn,
) -> Option<(ServerSession, bool)> {
    let (done, committed) = tokio::sync::oneshot::channel();
    let job = super::commit::Job {
        state: state.clone(),
        author: author.clone(),
        conn,
        session,
        f,
        fed: false,
        done,
    };
    let waiting = &state.inner.metrics.steps_waiting;
    waiting.fetch_add(1, Ordering::Relaxed);
    // A lane's worker takes it (`lanes.rs`).
    state.inner.lanes.push(job);
    match committed.await {
        Ok(done) => Some(done),
        Err(_) => {
            tracing::error!(device = %author.device, "a sync step failed");
            None
        }
    }
}

/// Who claims a device's lease: this node (host and process) and the connection, for operators.
fn holder(conn: u64) -> String {
    static NODE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let node = NODE.get_or_init(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "node".into());
        format!("{host}:{}", std::process::id())
    });
    format!("{node}/conn-{conn}")
}

async fn connection(
    state: AppState,
    device: Caller,
    mut access: watch::Receiver<u64>,
    mut socket: WebSocket,
) {
    let Caller {
        author,
        signing_key,
        waiting,
        reads_root,
    } = device;
    let inner = &state.inner;
    let limits = &inner.limits;
    let conn = inner.next_conn.fetch_add(1, Ordering::Relaxed);
    let peer = Peer {
        author: author.clone(),
    };
    let mut session = ServerSession::new(
        peer,
        ServerConfig {
            batch_bytes: limits.batch_bytes,
            batch_bytes_fast: limits.batch_bytes_fast,
            compress: limits.compress,
            ..ServerConfig::default()
        },
    );
    session.set_signing_key(signing_key);
    session.set_reads_root_signatures(reads_root);
    // The device's lease (see `lease.rs` in the protocol), claimed in the step of the device's
    // first message, in its transaction, before the message is handled: one commit for both,
    // where the claim used to be a step (and a commit) of its own before the hello was read.
    // Until then the session writes nothing: it serves nothing before its hello.
    let mut claim = Some(claim_lease(holder(conn)));
    lock(&inner.live).insert(author.device.clone(), conn);
    inner
        .metrics
        .connections_open
        .fetch_add(1, Ordering::Relaxed);
    inner
        .metrics
        .connections_total
        .fetch_add(1, Ordering::Relaxed);
    // The device's activity (seen now, what it reports holding for upload): a durable write in
    // the directory, made while the first step commits in the store, not before it; awaited
    // before anything is sent to the device, and before the connection's last record.
    if waiting.is_some() {
        lock(&inner.uploaded).insert(conn, 0);
    }
    let mut activity = Some(record_connection(&state, &author.device, None, waiting));
    tracing::info!(device = %author.device, user = %author.user, conn, waiting, "sync connection");

    let mut session = Some(session);
    let mut feed = inner.feed.subscribe();
    let mut shutdown = inner.shutdown.subscribe();
    // Revoked between the credential check and now: the channel may already show the change
    // as seen by another path, so check once here, after subscribing.
    if inner.directory.is_revoked(&author.device).unwrap_or(true) {
        access.mark_changed();
    }
    // Ticks often enough to notice the idle timeout and to ping in time.
    let every = Duration::from_secs(1)
        .min(limits.idle_timeout / 4)
        .min(limits.ping_interval)
        .max(Duration::from_millis(10));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut bucket = Bucket::full(limits.message_burst);
    // The last frame of any kind from the device, and the last ping to it.
    let mut heard = tokio::time::Instant::now();
    let mut pinged = tokio::time::Instant::now();
    // Whether the socket can still take the protocol's Close message.
    let mut writable = true;

    // Where the session waits while this task does (`parked.rs`): a group that stores a change
    // may step it meanwhile, delivering the change in the commit that stores it.
    let slot = inner.parking.open(conn, author.clone());
    // A group stepped the session for the feed since it last ran a step that was not one.
    let mut fed = false;

    while let Some(current) = session.take() {
        let mut ping = false;
        slot.park(current);
        let wake = tokio::select! {
            msg = socket.recv() => {
                if matches!(msg, Some(Ok(_))) {
                    heard = tokio::time::Instant::now();
                }
                match msg {
                    Some(Ok(Message::Binary(bytes))) => {
                        inner.metrics.messages_in.fetch_add(1, Ordering::Relaxed);
                        if bucket.take(limits.messages_per_second, limits.message_burst) {
                            Wake::Message(Box::new(move |s, repo, policy| {
                                s.handle_bytes(repo, policy, &bytes, Timestamp(now_ms()));
                            }))
                        } else {
                            Wake::Close(CloseReason::ProtocolViolation, "too many messages: slow down".into())
                        }
                    }
                    Some(Ok(Message::Text(_))) => Wake::Close(CloseReason::Malformed, "text frames are not part of the protocol".into()),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Wake::Audit,
                    Some(Ok(Message::Close(_))) | None => Wake::End,
                    Some(Err(e)) => match socket_error(e) {
                        Some((reason, detail)) => {
                            // The read side is gone (its framing is lost), the write side may
                            // still carry the reason.
                            if reason == CloseReason::Stalled {
                                writable = false;
                            }
                            Wake::Close(reason, detail)
                        }
                        None => Wake::End,
                    },
                }
            },
            () = slot.returned() => Wake::Returned,
            Ok(()) = feed.changed() => Wake::Feed(*feed.borrow_and_update()),
            Ok(()) = access.changed() => {
                if inner.directory.is_revoked(&author.device).unwrap_or(true) {
                    Wake::Close(CloseReason::Revoked, "this device was revoked".into())
                } else {
                    Wake::Step(Box::new(|s, repo, policy| s.access_changed(repo, policy)))
                }
            },
            Ok(()) = shutdown.changed() => Wake::Close(CloseReason::Shutdown, "the server is shutting down".into()),
            _ = ticks.tick() => Wake::Tick,
        };
        // Back from its slot first (a worker holding it gives it back at its group's commit).
        let Some((mut current, stepped)) = slot.unpark().await else {
            tracing::error!(device = %author.device, "a parked session was lost");
            break;
        };
        fed |= stepped;
        // What it sends next is timed from now (the link's pace).
        current.at(Timestamp(now_ms()));
        if stepped {
            settle(&mut activity).await;
            // A group delivered to it: what that step queued is committed with its audit
            // records, and goes out before anything else.
            writable =
                send_queued(&mut socket, limits, &inner.metrics, &mut current, writable).await;
        }
        // What the step does with the store (None: no step; `Some` of a no-op: only audit what
        // the session did).
        let is_message = matches!(wake, Wake::Message(_));
        let work: Option<StepFn> = match wake {
            Wake::Message(f) | Wake::Step(f) => Some(f),
            // A group stepped this session for the feed up to this head, after everything
            // else it did: the same step again would change nothing.
            Wake::Feed(head) if fed && current.scanned_to() >= head => None,
            Wake::Feed(_) => Some(Box::new(|s, repo, policy| s.feed_advanced(repo, policy))),
            Wake::Audit => Some(Box::new(|_, _, _| {})),
            Wake::Close(reason, detail) => {
                current.close(reason, detail);
                Some(Box::new(|_, _, _| {}))
            }
            Wake::End => break,
            Wake::Returned => None,
            Wake::Tick => {
                let was_closed = current.is_closed();
                current.tick(Timestamp(now_ms()));
                if lock(&inner.live).get(&author.device) != Some(&conn) {
                    // The fast path on this node; on another node the lease fences it instead.
                    current.close(
                        CloseReason::Superseded,
                        "replaced by a newer connection of this device",
                    );
                }
                if heard.elapsed() > limits.idle_timeout {
                    current.close(
                        CloseReason::Stalled,
                        "no frame from the device within the idle timeout",
                    );
                } else if pinged.elapsed() >= limits.ping_interval {
                    ping = true;
                }
                // Nothing that is stored or audited happened: no step.
                (current.is_closed() != was_closed).then(|| -> StepFn { Box::new(|_, _, _| {}) })
            }
        };
        let work = match (work, &claim) {
            // The claim goes with the device's first message only: a step that closes an
            // unclaimed connection (superseded on this node, say) must not take the lease from
            // the connection that superseded it.
            (Some(f), Some(_)) if is_message => claim.take().map(|c| then(c, f)),
            (work, _) => work,
        };
        let mut current = match work {
            Some(f) => match step(&state, &author, conn, current, f).await {
                Some((s, stepped)) => {
                    fed = stepped;
                    s
                }
                None => break,
            },
            None => current,
        };
        settle(&mut activity).await;
        if ping {
            pinged = tokio::time::Instant::now();
            writable = send_within(&mut socket, limits, Message::Ping(Vec::new().into())).await;
        }
        writable = send_queued(&mut socket, limits, &inner.metrics, &mut current, writable).await;
        if !writable && !current.is_closed() {
            // A device that does not read (or a dead link) holds no more than what is already
            // written: the connection is closed and that is audited.
            current.close(
                CloseReason::Stalled,
                "the device did not read what was sent within the send timeout",
            );
            match step(&state, &author, conn, current, Box::new(|_, _, _| {})).await {
                Some((s, _)) => current = s,
                None => break,
            }
        }
        if current.is_closed() {
            if writable {
                let _ = send_within(
                    &mut socket,
                    limits,
                    Message::Close(Some(CloseFrame {
                        code: 1000,
                        reason: "closed".into(),
                    })),
                )
                .await;
            }
            session = Some(current);
            break;
        }
        session = Some(current);
    }
    inner.parking.close(conn);
    {
        let mut live = lock(&inner.live);
        if live.get(&author.device) == Some(&conn) {
            live.remove(&author.device);
        }
    }
    inner
        .metrics
        .connections_open
        .fetch_sub(1, Ordering::Relaxed);
    let acknowledged = session
        .as_ref()
        .and_then(ServerSession::acknowledged_position);
    // What the device reported, less what this connection then uploaded (stored or refused):
    // what it still holds that the server has not seen, as far as the server can tell.
    let uploaded = lock(&inner.uploaded).remove(&conn);
    let left = waiting
        .zip(uploaded)
        .map(|(n, uploaded)| n.saturating_sub(uploaded));
    // After the first record, never beside it (the last one written wins).
    settle(&mut activity).await;
    let _ = record_connection(&state, &author.device, acknowledged, left).await;
    tracing::info!(device = %author.device, conn, "sync connection ended");
}

/// The step that claims the device's lease for connection `holder` (closing the session as
/// `Internal` if the store cannot).
fn claim_lease(holder: String) -> StepFn {
    Box::new(move |s, repo, _| {
        if let Err(e) = s.claim_lease(repo, &holder, Timestamp(now_ms())) {
            tracing::error!(error = %e, "claiming the device's lease failed");
            s.close(
                CloseReason::Internal,
                "the server could not complete the request",
            );
        }
    })
}

/// `first`, then `second` unless `first` closed the session: one step.
fn then(first: StepFn, second: StepFn) -> StepFn {
    Box::new(move |s, repo, policy| {
        first(s, repo, policy);
        if !s.is_closed() {
            second(s, repo, policy);
        }
    })
}

/// Records the device's activity in the directory ([`crate::directory::Directory::record_connection`])
/// on a blocking thread, beside what the connection does meanwhile.
fn record_connection(
    state: &AppState,
    device: &DeviceId,
    cursor: Option<u64>,
    waiting: Option<u64>,
) -> tokio::task::JoinHandle<()> {
    let state = state.clone();
    let device = device.clone();
    tokio::task::spawn_blocking(move || {
        let recorded = state
            .inner
            .directory
            .record_connection(&device, now_ms(), cursor, waiting);
        if let Err(e) = recorded {
            tracing::warn!(%device, error = %e, "recording the device's activity failed");
        }
    })
}

/// Waits for the activity record still being written, if any.
async fn settle(activity: &mut Option<tokio::task::JoinHandle<()>>) {
    if let Some(writing) = activity.take() {
        let _ = writing.await;
    }
}
