//! The `/v1/sync` WebSocket: moves bytes between the socket and a `ServerSession`, and audits
//! what the session did before anything of it is sent.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use sync_core::protocol::wire::{CloseReason, MAX_MESSAGE_BYTES};
use sync_core::protocol::{Peer, ServerConfig, ServerEvent, ServerSession};
use sync_core::store::Store;
use sync_core::{Author, DeviceId, Timestamp};

use crate::audit::{AuditAction, AuditEntry};

use super::{AppState, Bucket, Limits, error, lock, now_ms, save_policy};

/// `Authorization: Bearer <device>.<secret>` -> the device's identity.
fn authenticate(state: &AppState, headers: &HeaderMap) -> Option<crate::directory::DeviceIdentity> {
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

/// The sync WebSocket's read buffer (see `sync_ws`).
const WS_READ_BUFFER: usize = 16 * 1024;

pub(super) async fn sync_ws(
    State(state): State<AppState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(identity) = authenticate(&state, &headers) else {
        state
            .inner
            .metrics
            .auth_failures
            .fetch_add(1, Ordering::Relaxed);
        state.audit(AuditEntry {
            at_ms: now_ms(),
            actor: "unknown".into(),
            device: None,
            action: AuditAction::AuthFailed,
            patient: None,
            document: None,
            detail: "sync connection refused: no valid device credential".into(),
        });
        return error(
            StatusCode::UNAUTHORIZED,
            "a valid device credential is required",
        );
    };
    if *state.inner.shutdown.borrow() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    let author = Author::new(identity.user, identity.role, identity.device);
    // The read buffer is allocated and filled per connection: tungstenite's default of 128 KiB
    // made an idle session cost ~150 KB of server memory (10,000 devices: 1.5 GB). One TLS
    // record's worth (16 KiB) reads a large message in more, equally cheap, steps.
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .read_buffer_size(WS_READ_BUFFER)
        .on_upgrade(move |socket| connection(state, author, socket))
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
    matches!(
        tokio::time::timeout(limits.send_timeout, socket.send(message)).await,
        Ok(Ok(()))
    )
}

async fn connection(state: AppState, author: Author, mut socket: WebSocket) {
    let inner = &state.inner;
    let limits = &inner.limits;
    let conn = inner.next_conn.fetch_add(1, Ordering::Relaxed);
    lock(&inner.live).insert(author.device.clone(), conn);
    inner
        .metrics
        .connections_open
        .fetch_add(1, Ordering::Relaxed);
    inner
        .metrics
        .connections_total
        .fetch_add(1, Ordering::Relaxed);
    let _ = inner.directory.touch(&author.device, now_ms(), None);
    tracing::info!(device = %author.device, user = %author.user, conn, "sync connection");

    let peer = Peer {
        author: author.clone(),
    };
    let mut session = ServerSession::new(
        peer,
        ServerConfig {
            batch_bytes: limits.batch_bytes,
            ..ServerConfig::default()
        },
    );
    let mut feed = inner.feed.subscribe();
    let mut access = inner.access.subscribe();
    let mut shutdown = inner.shutdown.subscribe();
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

    loop {
        let mut ping = false;
        tokio::select! {
            msg = socket.recv() => {
                if matches!(msg, Some(Ok(_))) {
                    heard = tokio::time::Instant::now();
                }
                match msg {
                    Some(Ok(Message::Binary(bytes))) => {
                        inner.metrics.messages_in.fetch_add(1, Ordering::Relaxed);
                        if !bucket.take(limits.messages_per_second, limits.message_burst) {
                            session.close(CloseReason::ProtocolViolation, "too many messages: slow down");
                        } else {
                            let mut hub = lock(&inner.hub);
                            let hub = &mut *hub;
                            session.handle_bytes(&mut hub.repo, &hub.policy, &bytes, Timestamp(now_ms()));
                        }
                    }
                    Some(Ok(Message::Text(_))) => session.close(CloseReason::Malformed, "text frames are not part of the protocol"),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Err(e)) => match socket_error(e) {
                        Some((reason, detail)) => {
                            // The read side is gone (its framing is lost), the write side may
                            // still carry the reason.
                            if reason == CloseReason::Stalled {
                                writable = false;
                            }
                            session.close(reason, detail);
                        }
                        None => break,
                    },
                }
            },
            Ok(()) = feed.changed() => {
                let mut hub = lock(&inner.hub);
                let hub = &mut *hub;
                session.feed_advanced(&mut hub.repo, &hub.policy);
            },
            Ok(()) = access.changed() => {
                let revoked = inner.directory.is_revoked(&author.device).unwrap_or(true);
                if revoked {
                    session.close(CloseReason::Revoked, "this device was revoked");
                } else {
                    let mut hub = lock(&inner.hub);
                    let hub = &mut *hub;
                    session.access_changed(&mut hub.repo, &hub.policy);
                }
            },
            Ok(()) = shutdown.changed() => session.close(CloseReason::Shutdown, "the server is shutting down"),
            _ = ticks.tick() => {
                session.tick(Timestamp(now_ms()));
                if lock(&inner.live).get(&author.device) != Some(&conn) {
                    session.close(CloseReason::ProtocolViolation, "replaced by a newer connection of this device");
                }
                if heard.elapsed() > limits.idle_timeout {
                    session.close(CloseReason::Stalled, "no frame from the device within the idle timeout");
                } else if pinged.elapsed() >= limits.ping_interval {
                    ping = true;
                }
            },
        }
        let stored = handle_events(&state, &author, &mut session);
        if stored {
            let head = lock(&inner.hub).repo.store().feed_head().unwrap_or(0);
            // Every session is woken, this one too: another device's changes may have been
            // stored at the same moment, and the push also moves this device's cursor past its
            // own changes.
            inner.feed.send_replace(head);
        }
        if ping {
            pinged = tokio::time::Instant::now();
            writable = send_within(&mut socket, limits, Message::Ping(Vec::new().into())).await;
        }
        while writable && let Some(bytes) = session.poll_transmit() {
            inner.metrics.messages_out.fetch_add(1, Ordering::Relaxed);
            writable = send_within(&mut socket, limits, Message::Binary(bytes.into())).await;
        }
        if !writable && !session.is_closed() {
            // A device that does not read (or a dead link) holds no more than what is already
            // written: the connection is closed and that is audited.
            session.close(
                CloseReason::Stalled,
                "the device did not read what was sent within the send timeout",
            );
            handle_events(&state, &author, &mut session);
        }
        if session.is_closed() {
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
            break;
        }
    }
    let mut live = lock(&inner.live);
    if live.get(&author.device) == Some(&conn) {
        live.remove(&author.device);
    }
    drop(live);
    inner
        .metrics
        .connections_open
        .fetch_sub(1, Ordering::Relaxed);
    let _ = inner
        .directory
        .touch(&author.device, now_ms(), session.acknowledged_position());
    tracing::info!(device = %author.device, conn, "sync connection ended");
}

/// Audits what the session did; returns whether changes were stored.
fn handle_events(state: &AppState, author: &Author, session: &mut ServerSession) -> bool {
    let m = &state.inner.metrics;
    let mut stored = false;
    // One transaction for all of this step's records (a batch discloses many documents),
    // committed before anything of the step is sent.
    let mut records = Vec::new();
    while let Some(event) = session.poll_event() {
        let (action, document, detail) = match &event {
            ServerEvent::Disclosed { doc, changes } => {
                m.disclosures.fetch_add(1, Ordering::Relaxed);
                (
                    AuditAction::Disclose,
                    Some(doc.clone()),
                    format!("{changes} changes sent"),
                )
            }
            ServerEvent::Accepted { doc, changes } => {
                stored = true;
                m.changes_accepted
                    .fetch_add(changes.len() as u64, Ordering::Relaxed);
                let hashes: Vec<String> = changes.iter().map(|h| h.to_string()).collect();
                (
                    AuditAction::Accept,
                    Some(doc.clone()),
                    format!("stored {}", hashes.join(",")),
                )
            }
            ServerEvent::Refused {
                doc,
                change,
                code,
                detail,
            } => {
                m.changes_refused.fetch_add(1, Ordering::Relaxed);
                let which = change.map(|h| h.to_string()).unwrap_or_default();
                (
                    AuditAction::Refuse,
                    Some(doc.clone()),
                    format!("{code:?} {which}: {detail}"),
                )
            }
            ServerEvent::WithdrawalSent { patients } | ServerEvent::GraceEnded { patients } => {
                // The device's write grace ends when it went on uploading after being sent a
                // withdrawal, or after withdrawals sent into a few dead connections (and when it
                // confirms one, below).
                let ended = matches!(event, ServerEvent::GraceEnded { .. });
                let mut hub = lock(&state.inner.hub);
                let hub = &mut *hub;
                let peer = session.peer().clone();
                for p in patients {
                    if ended {
                        hub.policy.told(&peer, p);
                    } else {
                        hub.policy.withdrawal_sent(&peer, p);
                    }
                }
                if let Err(e) = save_policy(&mut hub.repo, &hub.policy) {
                    tracing::error!(error = %e, "saving the access policy failed");
                }
                continue;
            }
            ServerEvent::Withdrawn { patients } => {
                {
                    // Confirmed: the grace is over.
                    let mut hub = lock(&state.inner.hub);
                    let hub = &mut *hub;
                    let peer = session.peer().clone();
                    for p in patients {
                        hub.policy.told(&peer, p);
                    }
                    if let Err(e) = save_policy(&mut hub.repo, &hub.policy) {
                        tracing::error!(error = %e, "saving the access policy failed");
                    }
                }
                for p in patients {
                    records.push(AuditEntry {
                        at_ms: now_ms(),
                        actor: author.user.to_string(),
                        device: Some(author.device.clone()),
                        action: AuditAction::Withdraw,
                        patient: Some(p.clone()),
                        document: None,
                        detail: "access withdrawn; the device was told to forget".into(),
                    });
                }
                continue;
            }
            ServerEvent::Read { entries } => {
                // The device's own read log: who saw which person's data, and when (device
                // time, as reported; the record's own time is the server's).
                for r in entries {
                    records.push(AuditEntry {
                        at_ms: now_ms(),
                        actor: author.user.to_string(),
                        device: Some(author.device.clone()),
                        action: AuditAction::Read,
                        patient: Some(r.patient.clone()),
                        document: None,
                        detail: format!("{} shown at {} (device time)", r.what, r.at_ms),
                    });
                }
                continue;
            }
            ServerEvent::Closed { reason, detail } => match reason {
                // A device that broke the protocol or its limits: refused, and audited.
                CloseReason::UnsupportedVersion
                | CloseReason::MessageTooLarge
                | CloseReason::Malformed
                | CloseReason::ProtocolViolation
                | CloseReason::Stalled => (
                    AuditAction::Disconnect,
                    None,
                    format!("connection closed: {reason:?}: {detail}"),
                ),
                // Audited where they happen (revocation), or not about the device.
                CloseReason::Revoked | CloseReason::Shutdown | CloseReason::Internal => continue,
            },
            ServerEvent::CaughtUp => continue,
        };
        records.push(AuditEntry {
            at_ms: now_ms(),
            actor: author.user.to_string(),
            device: Some(author.device.clone()),
            action,
            patient: document.as_ref().map(|d| d.patient().clone()),
            document: document.map(|d| d.to_string()),
            detail,
        });
    }
    state.audit_all(records);
    stored
}
