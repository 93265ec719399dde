//! The sync connection: one sync (`sync_once`), watching (`watch`, reconnecting with backoff
//! and jitter), the TLS WebSocket, and driving a `DeviceSession` over it.
//!
//! The store work of each message (applying a batch, committing it) runs inline on the
//! connection's task: the task waits for it either way (it reads its socket only after), and
//! handing the worker thread's other tasks to another thread meanwhile (`block_in_place`, as
//! this did until session 25) cost a thread handoff per message: about 0.2 ms of a live edit's
//! path, and a quarter of the 200-device morning, where 200 devices share two worker threads
//! and the handoffs multiplied the threads contending for them (BENCHMARKS.md, session 25).
//! On a multi-threaded runtime (the mobile bindings', the bench's) the other worker takes the
//! runtime's other tasks meanwhile.

use std::sync::atomic::Ordering;

use futures_util::FutureExt;
use sync_core::protocol::MAX_TOGETHER;
use sync_core::protocol::wire;
use tokio_tungstenite::tungstenite::Bytes;

use super::*;

impl Device {
    /// Connects, uploads what is pending, stores what the server has for this device, and
    /// disconnects once caught up with nothing in flight and the connection quiet for
    /// [`SyncOptions::quiet_for`].
    pub async fn sync_once(&self) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        let result = self
            .connection(false, &mut report, &mut std::future::pending::<()>())
            .await;
        report.pending = self.pending_count()?;
        match result {
            Ok(_) => {
                self.set_status(self.offline());
                Ok(report)
            }
            Err(e) => {
                self.set_status(Status::Error {
                    reason: e.to_string(),
                });
                Err(e)
            }
        }
    }

    /// Stays connected until `shutdown` completes: uploads local changes as soon as they are
    /// saved (through [`Device::change`], or by another process into the same store), stores
    /// what arrives, and reconnects with jittered exponential backoff after a failure. Returns
    /// early only on a permanent error (the credential refused, the device revoked). Follow it
    /// with [`Device::subscribe`] (status) and [`Device::events`]; the report it returns adds
    /// up all its connections.
    pub async fn watch(&self, shutdown: impl Future<Output = ()>) -> Result<SyncReport> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut report = SyncReport::default();
        let mut failures: u32 = 0;
        loop {
            let before = report.clone();
            let result = self.connection(true, &mut report, &mut shutdown).await;
            match result {
                Ok(End::Shutdown) => {
                    self.set_status(self.offline());
                    report.pending = self.pending_count()?;
                    return Ok(report);
                }
                Ok(End::Quiet) => failures = 0,
                Err(e) if e.is_permanent() => {
                    tracing::error!(error = %e, "sync stopped");
                    self.set_status(Status::Error {
                        reason: e.to_string(),
                    });
                    return Err(e);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "sync connection failed; will retry");
                    self.set_status(Status::Error {
                        reason: e.to_string(),
                    });
                    // A connection that got in sync before it failed starts the backoff over.
                    if report.in_sync_at != before.in_sync_at {
                        failures = 0;
                    }
                    let delay = backoff(
                        failures,
                        self.options.backoff_min,
                        self.options.backoff_max,
                        &mut rand::rng(),
                    );
                    failures = failures.saturating_add(1);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = &mut shutdown => {
                            self.set_status(self.offline());
                            report.pending = self.pending_count()?;
                            return Ok(report);
                        }
                    }
                }
            }
        }
    }

    /// Whether this connection writes early frames: if the options say so, and the last
    /// connection that did was answered.
    fn early_frames(&self) -> bool {
        self.options.early_frames && !self.wait_for_upgrade.load(Ordering::SeqCst)
    }

    /// TLS, then the WebSocket upgrade request; with early frames (the default) the returned
    /// WebSocket takes frames at once and its first read waits for the upgrade's answer.
    async fn open_ws(&self) -> Result<Ws> {
        let url = format!("wss://{}/v1/sync", self.addr.authority());
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| ClientError::BadUrl {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let token = HeaderValue::from_str(&format!(
            "Bearer {}.{}",
            self.config.device, self.credential.secret
        ))
        .map_err(|_| ClientError::ConfigDamaged {
            path: Enrollment::path(&self.home),
            detail: "the device secret is not a valid header value".into(),
        })?;
        request.headers_mut().insert(header::AUTHORIZATION, token);
        // Registers the signing key of a device enrolled before signed changes; the server
        // never replaces a registered one.
        if let Ok(Some(key)) = self.credential.device_key() {
            if let Ok(value) = HeaderValue::from_str(&key.public().to_hex()) {
                request.headers_mut().insert(SIGNING_KEY_HEADER, value);
            }
        }
        // This device reads root signatures when relayed (`signing/root.rs`).
        request.headers_mut().insert(
            sync_core::signing::ROOT_SIGNATURES_HEADER,
            HeaderValue::from_static(sync_core::signing::ROOT_SIGNATURES),
        );
        // How many changes wait for upload, for the coordinator's dashboard (a server of an
        // older build ignores it).
        if let Ok(n) = self.pending_count() {
            request
                .headers_mut()
                .insert(WAITING_HEADER, HeaderValue::from(n as u64));
        }
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE_BYTES + 1024))
            .max_frame_size(Some(MAX_MESSAGE_BYTES + 1024));
        let (request, accept) = upgrade::request_bytes(&request)?;
        let connect = async {
            let tcp: Box<dyn Transport> = match &self.dialer {
                Some(dial) => dial().await.map_err(|e| ClientError::Connect {
                    addr: self.addr.authority(),
                    detail: e.to_string(),
                })?,
                None => Box::new(http::connect_tcp(&self.addr).await?),
            };
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(http::server_name(&self.addr)?, tcp)
                .await
                .map_err(|e| ClientError::Connect {
                    addr: self.addr.authority(),
                    detail: format!("TLS: {e}"),
                })?;
            let mut stream = upgrade::Upgrading::start(tls, &request, accept)
                .await
                .map_err(|e| ClientError::Connect {
                    addr: self.addr.authority(),
                    detail: e.to_string(),
                })?;
            // Without early frames, the upgrade is answered before anything else is written.
            if !self.early_frames() {
                stream.answered().await?;
            }
            Ok::<_, ClientError>(stream)
        };
        let stream = tokio::time::timeout(self.options.connect_timeout, connect)
            .await
            .map_err(|_| ClientError::Timeout("connecting to the server"))?
            .map_err(|e| {
                Self::connect_error(&self.observer, &self.addr, &self.config.pin.describe(), e)
            })?;
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            stream,
            tungstenite::protocol::Role::Client,
            Some(ws_config),
        )
        .await;
        self.upgrade_pin();
        Ok(ws)
    }

    /// One connection. `watch`: stay until `shutdown`; otherwise until quiet. A device the
    /// server says is revoked (it closes with `Revoked`, or refuses the credential) is erased.
    async fn connection<F: Future<Output = ()> + Unpin>(
        &self,
        watch: bool,
        report: &mut SyncReport,
        shutdown: &mut F,
    ) -> Result<End> {
        if let Some(why) = self.lock().wiped.clone() {
            return Err(ClientError::Wiped(why));
        }
        let mut result = self.connect_and_drive(watch, report, shutdown).await;
        // A server from before compressed frames refused the compressed hello: the session
        // speaks plain to it from now on; connect again at once.
        if matches!(
            result,
            Err(ClientError::Closed {
                reason: CloseReason::UnsupportedVersion,
                ..
            })
        ) && self.lock().session.fell_back_to_plain()
        {
            result = self.connect_and_drive(watch, report, shutdown).await;
        }
        match result {
            Err(
                e @ (ClientError::Unauthorized
                | ClientError::Closed {
                    reason: CloseReason::Revoked,
                    ..
                }),
            ) => Err(self.erase(&e)),
            other => other,
        }
    }

    async fn connect_and_drive<F: Future<Output = ()> + Unpin>(
        &self,
        watch: bool,
        report: &mut SyncReport,
        shutdown: &mut F,
    ) -> Result<End> {
        self.set_status(Status::Connecting);
        let mut ws = tokio::select! {
            ws = self.open_ws() => ws?,
            _ = &mut *shutdown, if watch => return Ok(End::Shutdown),
        };
        tracing::debug!(server = %self.addr.authority(), "sync connected");
        self.set_status(Status::Syncing {
            received: 0,
            remaining: 0,
        });
        let mut heard = false;
        let mut result = self
            .drive(&mut ws, watch, report, shutdown, &mut heard)
            .await;
        // With early frames, a refused upgrade shows as the connection failing (a read, or a
        // write the server no longer takes): its answer says why (401: the credential
        // refused), if it came.
        if result.is_err() {
            let answer = tokio::time::timeout(ANSWER_WAIT, ws.get_mut().answered()).await;
            if let Ok(Err(e @ (ClientError::Unauthorized | ClientError::Http { .. }))) = answer {
                result = Err(e);
            }
        }
        // A connection that failed before its upgrade was answered (the answer may have been
        // lost to the server closing on the early frames), or before the server said anything
        // after it (a proxy that answers the upgrade but drops the bytes written behind the
        // request), is followed by one that waits for the answer first.
        let wait = next_waits_for_upgrade(ws.get_ref().answer_read(), result.is_ok(), heard);
        self.wait_for_upgrade.store(wait, Ordering::SeqCst);
        self.lock().session.disconnected();
        // Say goodbye politely; the outcome is already decided and durable.
        if ws.close(None).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(Ok(_)) = ws.next().await {}
            })
            .await;
        }
        result
    }

    async fn drive<F: Future<Output = ()> + Unpin>(
        &self,
        ws: &mut Ws,
        watch: bool,
        report: &mut SyncReport,
        shutdown: &mut F,
        heard: &mut bool,
    ) -> Result<End> {
        let (mut out, mut events) = {
            let mut inner = self.lock();
            let inner = &mut *inner;
            inner.pick_up_external_changes()?;
            inner.session.connect(&mut inner.repo, self.now())?;
            inner.drain()
        };
        let mut ticks = tokio::time::interval(self.options.poll_every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = tokio::time::Instant::now();
        let mut pinged = false;
        let mut was_quiet = false;
        // The in-sync marks, when the message that made the session quiet wrote them.
        let mut marked: Option<Timestamp> = None;
        // A message read while taking the frames that were already here, not yet handled.
        let mut held = None;
        // Whether the session was told what the upgrade's answer said of root signatures.
        let mut told_root = false;
        loop {
            // The events first: what they tell is durable already, and the app hears of it
            // without waiting on this turn's frames (an acknowledgement, say); nor does a
            // frame that cannot be written (the connection cut) lose the news of what was
            // stored.
            let mut closed = None;
            for event in events.drain(..) {
                report.absorb(&event);
                if let DeviceEvent::ClockChecked { offset_ms, .. } = event {
                    *self.clock_off.lock().unwrap_or_else(|p| p.into_inner()) =
                        off_by(Some(offset_ms));
                }
                // Nobody listening is fine.
                let _ = self.events.send(event.clone());
                match event {
                    DeviceEvent::Closed { reason, detail } => {
                        closed.get_or_insert(ClientError::Closed { reason, detail });
                    }
                    DeviceEvent::Progress {
                        received,
                        remaining,
                    } if remaining > 0 => {
                        self.set_status(Status::Syncing {
                            received,
                            remaining,
                        });
                    }
                    _ => {}
                }
            }
            let written = write_frames(ws, &mut out).await;
            // A session that closed says why (its close frame written if it could be).
            if let Some(e) = closed {
                return Err(e);
            }
            written?;
            let (caught_up, in_flight) = {
                let inner = self.lock();
                (
                    inner.session.is_caught_up(),
                    inner.session.uploads_in_flight(),
                )
            };
            let quiet = caught_up && in_flight == 0;
            if quiet && !was_quiet {
                let at = match marked.take() {
                    // Written in the commit of the message that made the session quiet.
                    Some(at) => at,
                    None => {
                        let at = self.now();
                        // Both marks in one transaction (one commit).
                        self.lock()
                            .repo
                            .grouped(|repo| write_in_sync_marks(repo, at))?;
                        at
                    }
                };
                report.in_sync_at = Some(at);
                self.set_status(Status::InSync {
                    at,
                    clock_off_by_ms: self.clock_off_by(),
                });
            } else if !quiet && was_quiet {
                self.set_status(Status::Syncing {
                    received: report.received,
                    remaining: 0,
                });
            }
            was_quiet = quiet;

            tokio::select! {
                msg = async {
                    match held.take() {
                        Some(msg) => msg,
                        None => ws.next().await,
                    }
                } => {
                    last_heard = tokio::time::Instant::now();
                    pinged = false;
                    match msg {
                        Some(Ok(Message::Binary(bytes))) => {
                            *heard = true;
                            if !told_root {
                                if let Some(takes) = ws.get_ref().takes_root_signatures() {
                                    let mut inner = self.lock();
                                    let inner = &mut *inner;
                                    inner.session.server_takes_root_signatures(&mut inner.repo, takes)?;
                                    told_root = true;
                                }
                            }
                            // The frames already here are handled together (`together.rs` of
                            // the session: a run of batches is stored as one); the first
                            // other message waits for the next turn.
                            let mut frames = vec![bytes];
                            while frames.len() < MAX_TOGETHER {
                                match ws.next().now_or_never() {
                                    Some(Some(Ok(Message::Binary(bytes)))) => frames.push(bytes),
                                    Some(other) => {
                                        held = Some(other);
                                        break;
                                    }
                                    None => break,
                                }
                            }
                            (out, events, marked) = self.handle_frames(&frames, was_quiet)?;
                        }
                        Some(Ok(Message::Close(frame))) => {
                            let detail = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                            let mut inner = self.lock();
                            (_, events) = inner.drain();
                            drop(inner);
                            for e in &events {
                                report.absorb(e);
                                if let DeviceEvent::Closed { reason, detail } = e {
                                    return Err(ClientError::Closed { reason: *reason, detail: detail.clone() });
                                }
                            }
                            return Err(ClientError::Transport(format!("the server closed the connection {detail}")));
                        }
                        Some(Ok(Message::Text(_))) => {
                            return Err(ClientError::Closed {
                                reason: CloseReason::Malformed,
                                detail: "the server sent a text frame".into(),
                            });
                        }
                        Some(Ok(_)) => {} // ping, pong, raw frame
                        Some(Err(e)) => return Err(ClientError::Transport(e.to_string())),
                        None => return Err(ClientError::Transport("the connection was cut".into())),
                    }
                }
                _ = ticks.tick() => {
                    {
                        let mut inner = self.lock();
                        let inner = &mut *inner;
                        inner.session.tick(self.now());
                        if watch {
                            inner.pick_up_external_changes()?;
                        }
                        (out, events) = inner.drain();
                    }
                    let idle = last_heard.elapsed();
                    if watch && idle >= self.options.ping_after * 2 && pinged {
                        return Err(ClientError::Timeout("no answer from the server to a ping"));
                    }
                    if watch && idle >= self.options.ping_after && !pinged {
                        ws.send(Message::Ping(Vec::new().into()))
                            .await
                            .map_err(|e| ClientError::Transport(e.to_string()))?;
                        pinged = true;
                    }
                }
                _ = self.local.notified(), if watch => {
                    let mut inner = self.lock();
                    let inner = &mut *inner;
                    inner.session.local_change(&mut inner.repo)?;
                    (out, events) = inner.drain();
                }
                _ = &mut *shutdown, if watch => return Ok(End::Shutdown),
                _ = tokio::time::sleep(self.options.quiet_for), if quiet && !watch => {
                    let mut inner = self.lock();
                    // Idle upkeep: compact documents that are due.
                    if let Err(e) = inner.repo.maintain(16) {
                        tracing::warn!(error = %e, "compaction failed");
                    }
                    return Ok(End::Quiet);
                }
            }
        }
    }
}

/// Writes `out` (emptying it): small messages one turn queued leave in one write
/// (`wire::flush_before`), an upload and the acknowledgement of what came with it, say.
async fn write_frames(ws: &mut Ws, out: &mut Vec<Vec<u8>>) -> Result<()> {
    let mut unflushed = 0;
    for bytes in out.drain(..) {
        if wire::flush_before(unflushed, bytes.len()) {
            ws.flush()
                .await
                .map_err(|e| ClientError::Transport(e.to_string()))?;
            unflushed = 0;
        }
        // Counted at least 1: an empty message still needs its flush.
        unflushed += bytes.len().max(1);
        ws.feed(Message::Binary(bytes.into()))
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
    }
    if unflushed > 0 {
        ws.flush()
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
    }
    Ok(())
}

/// What handling one message gave: frames to send, events, and when the in-sync marks were
/// written with it (if they were).
type Handled = (Vec<Vec<u8>>, Vec<DeviceEvent>, Option<Timestamp>);

impl Device {
    /// Hands frames that arrived together to the session
    /// ([`DeviceSession::handle_messages`]). While the session is not quiet, they run in one
    /// store transaction together with the in-sync marks if they make the session quiet (an
    /// upload's acknowledgement, the batch that ends a catch-up): one commit instead of two.
    /// Nothing they queued is sent unless that commit succeeded; if it failed, the connection
    /// ends (the next one starts from what is stored). A frame that does not decode closes
    /// the session, and the frames with it are not handled (the server sends them again on
    /// the next connection). Returns what to send, the events, and when the marks were
    /// written.
    fn handle_frames(&self, frames: &[Bytes], was_quiet: bool) -> Result<Handled> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let now = self.now();
        let mut msgs = Vec::with_capacity(frames.len());
        for bytes in frames {
            let Some(msg) = inner.session.decode(bytes, now) else {
                let (out, events) = inner.drain();
                return Ok((out, events, None));
            };
            msgs.push(msg);
        }
        if was_quiet {
            inner.session.handle_messages(&mut inner.repo, msgs, now);
            let (out, events) = inner.drain();
            return Ok((out, events, None));
        }
        let session = &mut inner.session;
        // Acknowledgements and empty batches record only what the server tells again, and
        // the in-sync marks are a display: their commit skips the fsync (`relaxed.rs`).
        let relaxed = session.commit_relaxed_together(&msgs);
        // Indivisible (`Repo::indivisibly`: no savepoint for each document's write): a write
        // that fails in it closes the session, and the commit then fails.
        let marked = inner.repo.indivisibly(relaxed, |repo| {
            session.handle_messages(repo, msgs, now);
            let quiet = session.is_connected()
                && session.is_caught_up()
                && session.uploads_in_flight() == 0;
            if quiet {
                write_in_sync_marks(repo, now)?;
                return Ok(Some(now));
            }
            Ok(None)
        });
        let marked = match marked {
            Ok(marked) => marked,
            Err(e) => {
                // Nothing of the turn was stored: what it queued goes with it (acknowledgements
                // and events of what it stored, and the session's close, which the next
                // connection would otherwise read as its own). That connection starts from
                // what is stored.
                drop(inner.drain());
                return Err(e.into());
            }
        };
        let (out, events) = inner.drain();
        Ok((out, events, marked))
    }
}

/// An in-sync moment at `at` (`in_sync.rs`), inside the caller's group.
fn write_in_sync_marks(
    repo: &mut Repo<SqliteStore>,
    at: Timestamp,
) -> std::result::Result<(), sync_core::error::RepoError> {
    Ok(super::in_sync::record(repo.store_mut(), at)?)
}

/// How long a failed connection still waits for the answer to its upgrade, to tell a refusal.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// The delay before reconnection attempt `failures` (0-based): exponential from `min`, capped
/// at `max`, with "equal jitter" (half fixed, half random) so devices do not reconnect in step.
pub fn backoff(failures: u32, min: Duration, max: Duration, rng: &mut impl Rng) -> Duration {
    let exp = min
        .checked_mul(1u32 << failures.min(20))
        .unwrap_or(max)
        .min(max);
    let half = exp / 2;
    let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    half + Duration::from_millis(rng.random_range(0..=jitter_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let mut rng = rand::rng();
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
        for failures in 0..40 {
            let d = backoff(failures, min, max, &mut rng);
            let exp = (min * 2u32.pow(failures.min(20))).min(max);
            assert!(d >= exp / 2 && d <= exp, "{failures}: {d:?}");
        }
    }
}

/// Whether the connection after this one waits for the upgrade's answer before it writes: when
/// this one's answer was never read, or when it failed without the server saying anything
/// after the answer (a path that answers the upgrade but drops what was written behind the
/// request would otherwise stall every connection for good).
fn next_waits_for_upgrade(answer_read: bool, ended_well: bool, heard: bool) -> bool {
    !answer_read || (!ended_well && !heard)
}

#[cfg(test)]
mod early_frames_tests {
    use super::next_waits_for_upgrade;

    #[test]
    fn a_connection_that_heard_nothing_after_the_upgrade_makes_the_next_one_wait() {
        // The answer lost: wait, however it ended.
        assert!(next_waits_for_upgrade(false, true, false));
        assert!(next_waits_for_upgrade(false, false, true));
        // Answered, then silence until it failed (early frames dropped on the way): wait.
        assert!(next_waits_for_upgrade(true, false, false));
        // Answered and heard from, or ended well: early frames again.
        assert!(!next_waits_for_upgrade(true, false, true));
        assert!(!next_waits_for_upgrade(true, true, false));
        assert!(!next_waits_for_upgrade(true, true, true));
    }
}
