//! The HTTP application: routes, shared state, and the sync WebSocket, which is only a shell
//! that moves bytes between a socket and `sync_core::protocol::ServerSession`.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use sync_core::protocol::wire::{CloseReason, MAX_MESSAGE_BYTES};
use sync_core::protocol::{AccessPolicy, Peer, ServerConfig, ServerEvent, ServerSession};
use sync_core::repo::Repo;
use sync_core::store::{SqliteStore, Store};
use sync_core::{Author, DeviceId, DocKind, DocumentId, PatientId, Role, Timestamp, UserId};
use tokio::sync::watch;

use crate::audit::{AuditAction, AuditEntry, AuditLog};
use crate::directory::Directory;

/// The server's clock, in one place: protocol and model never read it.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How long after being taken off a case a worker's phone may still upload the records it
/// made (S4: "A's pending notes for P are uploaded and kept").
pub const WRITE_GRACE_MS: i64 = 14 * 24 * 3600 * 1000;

/// Who may read and write whom: the care relationship. Admins see no clinical content.
///
/// A user taken off a case loses read access at once. For [`WRITE_GRACE_MS`] their devices may
/// still upload journal entries and administrations for that person (append-only records made
/// while they were on the case and not yet uploaded); they may not change the plan, orders or
/// alerts. Every such write is audited like any other.
#[derive(Debug, Clone, Default)]
pub struct CarePolicy {
    pub assignments: BTreeMap<UserId, BTreeSet<PatientId>>,
    /// (user, patient) -> when the assignment ended (server time).
    pub former: BTreeMap<(UserId, PatientId), i64>,
    /// Devices already told of a withdrawal: their grace is over (a later write is refused).
    pub told: BTreeSet<(UserId, DeviceId, PatientId)>,
    /// The server's time at the last refresh.
    pub now_ms: i64,
}

impl CarePolicy {
    /// Takes the new assignments, remembering which ended and when.
    fn update(&mut self, assignments: BTreeMap<UserId, BTreeSet<PatientId>>, now: i64) {
        for (user, patients) in &self.assignments {
            for p in patients {
                if !assignments.get(user).is_some_and(|s| s.contains(p)) {
                    self.former.insert((user.clone(), p.clone()), now);
                }
            }
        }
        for (user, patients) in &assignments {
            for p in patients {
                self.former.remove(&(user.clone(), p.clone()));
            }
        }
        // Assigned again: a later withdrawal starts a new grace period.
        self.told
            .retain(|(user, _, p)| !assignments.get(user).is_some_and(|ps| ps.contains(p)));
        self.former.retain(|_, at| now - *at <= WRITE_GRACE_MS);
        self.assignments = assignments;
        self.now_ms = now;
    }
}

impl AccessPolicy for CarePolicy {
    fn may_read(&self, peer: &Peer, doc: &DocumentId) -> bool {
        peer.author.role != Role::Admin
            && self
                .assignments
                .get(&peer.author.user)
                .is_some_and(|ps| ps.contains(doc.patient()))
    }
    fn may_write(&self, peer: &Peer, doc: &DocumentId) -> bool {
        if self.may_read(peer, doc) {
            return true;
        }
        let append_only = matches!(
            doc.kind(),
            DocKind::Journal | DocKind::MedicationAdministration
        );
        peer.author.role != Role::Admin
            && append_only
            && !self.told.contains(&(
                peer.author.user.clone(),
                peer.author.device.clone(),
                doc.patient().clone(),
            ))
            && self
                .former
                .get(&(peer.author.user.clone(), doc.patient().clone()))
                .is_some_and(|at| self.now_ms - at <= WRITE_GRACE_MS)
    }
    fn readable_patients(&self, peer: &Peer) -> Vec<PatientId> {
        if peer.author.role == Role::Admin {
            return Vec::new();
        }
        self.assignments
            .get(&peer.author.user)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Limits of the service.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    /// Messages per second a device may send, sustained, and the burst above it; past them
    /// the connection is closed as a flood. A device sends an upload per local change and an
    /// acknowledgement per batch: even the latency benchmark's back-to-back edits (about 800
    /// messages a second) stay within the burst; a flood does not.
    pub messages_per_second: f64,
    pub message_burst: f64,
    pub max_loaded_documents: usize,
    /// Target size of a batch to a device: the unit of resumption on a weak link.
    pub batch_bytes: usize,
    /// How long a client may take to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// A connection whose pending read makes no progress for this long is closed (a request
    /// sent by halves, half a TLS record, an idle keep-alive). Sync connections are pinged
    /// more often than this, so a live device always makes progress.
    pub read_timeout: Duration,
    /// How often the server pings a sync connection.
    pub ping_interval: Duration,
    /// A sync connection from which no frame at all (pongs included) arrived for this long is
    /// closed as stalled: a device gone silent, or one that sent half a frame.
    pub idle_timeout: Duration,
    /// A message to a device not written within this time closes the connection: a device
    /// that does not read holds at most its window of batches and one write buffer, not more.
    pub send_timeout: Duration,
    /// Enrollment attempts per second, sustained, across the server, and the burst above it.
    /// Enrollment is rare (a new phone, or a team's phones on the day they are handed out);
    /// codes carry 60 random bits, so even 5 guesses a second get nowhere: the limit keeps a
    /// flood of guesses cheap to refuse.
    pub enroll_per_second: f64,
    pub enroll_burst: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            messages_per_second: 1000.0,
            message_burst: 2000.0,
            max_loaded_documents: 512,
            batch_bytes: 32 * 1024,
            handshake_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(90),
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(30),
            enroll_per_second: 5.0,
            enroll_burst: 100.0,
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub connections_open: AtomicU64,
    pub connections_total: AtomicU64,
    pub auth_failures: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub changes_accepted: AtomicU64,
    pub changes_refused: AtomicU64,
    pub disclosures: AtomicU64,
}

const POLICY_KEY: &str = "server.policy";

type PolicySnapshot = (
    BTreeMap<UserId, BTreeSet<PatientId>>,
    Vec<((UserId, PatientId), i64)>,
    BTreeSet<(UserId, DeviceId, PatientId)>,
);

fn save_policy(repo: &mut Repo<SqliteStore>, policy: &CarePolicy) -> anyhow::Result<()> {
    let snapshot: PolicySnapshot = (
        policy.assignments.clone(),
        policy.former.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        policy.told.clone(),
    );
    repo.store_mut()
        .set_meta(POLICY_KEY, &serde_json::to_vec(&snapshot)?)?;
    Ok(())
}

struct Hub {
    repo: Repo<SqliteStore>,
    policy: CarePolicy,
}

struct Inner {
    hub: Mutex<Hub>,
    directory: Arc<dyn Directory>,
    audit: Arc<dyn AuditLog>,
    /// The feed head after the last stored upload: sessions push what is new.
    feed: watch::Sender<u64>,
    /// The directory's generation: sessions re-check access and revocation.
    access: watch::Sender<u64>,
    shutdown: watch::Sender<bool>,
    /// The connection currently serving each device (a newer one replaces it).
    live: Mutex<BTreeMap<DeviceId, u64>>,
    next_conn: AtomicU64,
    ready: AtomicBool,
    admin_token: String,
    limits: Limits,
    /// Enrollment attempts, across the server; and whether the last one was refused for it.
    enroll_limit: Mutex<(Bucket, bool)>,
    pub metrics: Metrics,
}

/// Everything the routes share.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves data that is still consistent on disk; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl AppState {
    pub fn new(
        store: SqliteStore,
        directory: Arc<dyn Directory>,
        audit: Arc<dyn AuditLog>,
        admin_token: String,
        limits: Limits,
    ) -> anyhow::Result<Self> {
        // What the policy knew when the server last ran, so that assignments ended while it was
        // down still get their grace period.
        let mut policy = CarePolicy::default();
        if let Some(bytes) = store.meta(POLICY_KEY)? {
            if let Ok((assignments, former, told)) =
                serde_json::from_slice::<PolicySnapshot>(&bytes)
            {
                policy.assignments = assignments;
                policy.former = former.into_iter().collect();
                policy.told = told;
            }
        }
        policy.update(directory.assignments()?, now_ms());
        let generation = directory.generation()?;
        let head = store.feed_head()?;
        let mut repo = Repo::new(store).with_max_loaded(limits.max_loaded_documents);
        save_policy(&mut repo, &policy)?;
        Ok(Self {
            inner: Arc::new(Inner {
                hub: Mutex::new(Hub { repo, policy }),
                directory,
                audit,
                feed: watch::channel(head).0,
                access: watch::channel(generation).0,
                shutdown: watch::channel(false).0,
                live: Mutex::new(BTreeMap::new()),
                next_conn: AtomicU64::new(1),
                ready: AtomicBool::new(true),
                admin_token,
                enroll_limit: Mutex::new((Bucket::full(limits.enroll_burst), false)),
                limits,
                metrics: Metrics::default(),
            }),
        })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Re-reads the directory if it changed (admin commands may come from another process):
    /// refreshes access and wakes every session, which closes revoked devices.
    pub fn refresh(&self) -> anyhow::Result<()> {
        let generation = self.inner.directory.generation()?;
        if generation == *self.inner.access.borrow() {
            lock(&self.inner.hub).policy.now_ms = now_ms();
            return Ok(());
        }
        let assignments = self.inner.directory.assignments()?;
        {
            let mut hub = lock(&self.inner.hub);
            let hub = &mut *hub;
            hub.policy.update(assignments, now_ms());
            save_policy(&mut hub.repo, &hub.policy)?;
        }
        self.inner.access.send_replace(generation);
        Ok(())
    }

    /// Background upkeep: compaction of documents that are due.
    fn maintain(&self) {
        if let Err(e) = lock(&self.inner.hub).repo.maintain(8) {
            tracing::error!(error = %e, "compaction failed");
        }
    }

    fn audit(&self, entry: AuditEntry) {
        if let Err(e) = self.inner.audit.append(entry) {
            // The audit log is a legal requirement: a failure is loud.
            tracing::error!(error = %e, "could not append to the audit log");
        }
    }

    /// Appends several records in one transaction.
    fn audit_all(&self, entries: Vec<AuditEntry>) {
        if entries.is_empty() {
            return;
        }
        if let Err(e) = self.inner.audit.append_all(entries) {
            tracing::error!(error = %e, "could not append to the audit log");
        }
    }
}

/// The routes, without a socket (tests can call them in process).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/enroll", post(enroll))
        .route("/v1/sync", get(sync_ws))
        .route("/v1/admin/devices", get(admin_devices))
        .route("/v1/admin/devices/{id}/revoke", post(admin_revoke))
        .route(
            "/v1/admin/assignments",
            post(admin_assign).delete(admin_unassign),
        )
        .route("/v1/admin/enrollments", post(admin_enroll))
        .route("/v1/admin/audit/verify", get(admin_audit_verify))
        .route("/v1/admin/audit/export", get(admin_audit_export))
        .with_state(state)
}

/// Serves the application on `listener` until `shutdown` completes, then closes every sync
/// session with a reason, lets them flush, and returns. A background task polls the directory
/// every second, so admin changes made by another process reach live connections within a second.
pub async fn serve<L>(
    listener: L,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let upkeep = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                if let Err(e) = state.refresh() {
                    tracing::error!(error = %e, "reading the directory failed");
                }
                state.maintain();
            }
        })
    };
    let stop = state.inner.shutdown.clone();
    let ready = state.clone();
    let result = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            shutdown.await;
            ready.inner.ready.store(false, Ordering::SeqCst);
            stop.send_replace(true);
        })
        .await;
    upkeep.abort();
    result
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.inner.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let m = &state.inner.metrics;
    let rows = [
        (
            "nara_connections_open",
            "gauge",
            "Open sync connections.",
            m.connections_open.load(Ordering::Relaxed),
        ),
        (
            "nara_connections_total",
            "counter",
            "Sync connections accepted.",
            m.connections_total.load(Ordering::Relaxed),
        ),
        (
            "nara_auth_failures_total",
            "counter",
            "Failed device authentications.",
            m.auth_failures.load(Ordering::Relaxed),
        ),
        (
            "nara_messages_in_total",
            "counter",
            "Sync messages received.",
            m.messages_in.load(Ordering::Relaxed),
        ),
        (
            "nara_messages_out_total",
            "counter",
            "Sync messages sent.",
            m.messages_out.load(Ordering::Relaxed),
        ),
        (
            "nara_changes_accepted_total",
            "counter",
            "Changes stored.",
            m.changes_accepted.load(Ordering::Relaxed),
        ),
        (
            "nara_changes_refused_total",
            "counter",
            "Changes refused.",
            m.changes_refused.load(Ordering::Relaxed),
        ),
        (
            "nara_disclosures_total",
            "counter",
            "Documents sent to devices.",
            m.disclosures.load(Ordering::Relaxed),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in rows {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}

/// A JSON error with a status; internal details are logged, never returned.
fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "request failed");
    error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

#[derive(Debug, Deserialize)]
struct EnrollRequest {
    code: String,
}

/// Redeems a one-time enrollment code for a device credential.
async fn enroll(
    State(state): State<AppState>,
    body: Result<Json<EnrollRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    // Every attempt counts, before the code is looked at: guessing codes is slow, and a flood
    // costs one comparison per request. The first refusal of a run is audited, not each one.
    let (allowed, first_refusal) = {
        let limits = &state.inner.limits;
        let mut guard = lock(&state.inner.enroll_limit);
        let (bucket, limited) = &mut *guard;
        let allowed = bucket.take(limits.enroll_per_second, limits.enroll_burst);
        let first = !allowed && !*limited;
        *limited = !allowed;
        (allowed, first)
    };
    if !allowed {
        if first_refusal {
            state.audit(AuditEntry {
                at_ms: now_ms(),
                actor: "unknown".into(),
                device: None,
                action: AuditAction::RateLimited,
                patient: None,
                document: None,
                detail: "enrollment attempts over the limit: refused until they slow down".into(),
            });
        }
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many enrollment attempts: try again later",
        );
    }
    let Ok(Json(req)) = body else {
        return error(StatusCode::BAD_REQUEST, "expected {\"code\": \"...\"}");
    };
    match state.inner.directory.redeem(req.code.trim(), now_ms()) {
        Ok(cred) => {
            state.audit(AuditEntry {
                at_ms: now_ms(),
                actor: cred.user.to_string(),
                device: Some(cred.device.clone()),
                action: AuditAction::Redeem,
                patient: None,
                document: None,
                detail: "device enrolled".into(),
            });
            let _ = state.refresh();
            let role = match state.inner.directory.user(&cred.user) {
                Ok(Some(user)) => user.role,
                Ok(None) => return internal("an enrolled device's user is missing"),
                Err(e) => return internal(e),
            };
            Json(json!({
                "device": cred.device,
                "secret": cred.secret,
                "user": cred.user,
                "role": role.as_str(),
            }))
            .into_response()
        }
        Err(crate::directory::DirectoryError::InvalidCode) => {
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
                detail: "enrollment refused: unknown, used or expired code".into(),
            });
            error(
                StatusCode::BAD_REQUEST,
                "the enrollment code is unknown, used or expired",
            )
        }
        Err(e) => internal(e),
    }
}

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

async fn sync_ws(
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

/// A token bucket: at most `rate` a second, sustained, `burst` at once.
struct Bucket {
    tokens: f64,
    last: tokio::time::Instant,
}

impl Bucket {
    fn full(burst: f64) -> Self {
        Self {
            tokens: burst,
            last: tokio::time::Instant::now(),
        }
    }

    fn take(&mut self, rate: f64, burst: f64) -> bool {
        let now = tokio::time::Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
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
            ServerEvent::Withdrawn { patients } => {
                {
                    let mut hub = lock(&state.inner.hub);
                    let hub = &mut *hub;
                    for p in patients {
                        hub.policy.told.insert((
                            author.user.clone(),
                            author.device.clone(),
                            p.clone(),
                        ));
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

// ---- admin API (JSON, admin credential) ----

fn admin_ok(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(token) = value.strip_prefix("Bearer ") else {
        return false;
    };
    // Compare in constant time.
    let a = token.as_bytes();
    let b = state.inner.admin_token.as_bytes();
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

macro_rules! require_admin {
    ($state:expr, $headers:expr) => {
        if !admin_ok(&$state, &$headers) {
            return error(StatusCode::UNAUTHORIZED, "the admin credential is required");
        }
    };
}

fn admin_audit(state: &AppState, action: AuditAction, patient: Option<PatientId>, detail: String) {
    state.audit(AuditEntry {
        at_ms: now_ms(),
        actor: "admin".into(),
        device: None,
        action,
        patient,
        document: None,
        detail,
    });
}

async fn admin_devices(State(state): State<AppState>, headers: HeaderMap) -> Response {
    require_admin!(state, headers);
    match state.inner.directory.devices() {
        Ok(devices) => Json(json!({ "devices": devices })).into_response(),
        Err(e) => internal(e),
    }
}

async fn admin_revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    require_admin!(state, headers);
    let Ok(device) = DeviceId::new(id) else {
        return error(StatusCode::BAD_REQUEST, "bad device id");
    };
    match state.inner.directory.revoke(&device) {
        Ok(()) => {
            state.audit(AuditEntry {
                at_ms: now_ms(),
                actor: "admin".into(),
                device: Some(device.clone()),
                action: AuditAction::Revoke,
                patient: None,
                document: None,
                detail: format!("device {device} revoked"),
            });
            let _ = state.refresh();
            Json(json!({ "revoked": device })).into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

#[derive(Debug, Deserialize)]
struct Assignment {
    user: String,
    patient: String,
}

fn parse_assignment(a: &Assignment) -> Option<(UserId, PatientId)> {
    Some((
        UserId::new(a.user.as_str()).ok()?,
        PatientId::new(a.patient.as_str()).ok()?,
    ))
}

async fn admin_assign(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(a): Json<Assignment>,
) -> Response {
    require_admin!(state, headers);
    change_assignment(&state, &a, true)
}

async fn admin_unassign(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(a): Json<Assignment>,
) -> Response {
    require_admin!(state, headers);
    change_assignment(&state, &a, false)
}

/// Assigns or unassigns, audits it, and makes it effective on live connections at once.
fn change_assignment(state: &AppState, a: &Assignment, assign: bool) -> Response {
    let Some((user, patient)) = parse_assignment(a) else {
        return error(StatusCode::BAD_REQUEST, "bad user or patient id");
    };
    let directory = &state.inner.directory;
    let (result, action, word) = if assign {
        (
            directory.assign(&user, &patient),
            AuditAction::Assign,
            "assigned",
        )
    } else {
        (
            directory.unassign(&user, &patient),
            AuditAction::Unassign,
            "unassigned",
        )
    };
    match result {
        Ok(()) => {
            admin_audit(
                state,
                action,
                Some(patient.clone()),
                format!("{user} {word}"),
            );
            let _ = state.refresh();
            Json(json!({ word: { "user": user, "patient": patient } })).into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

#[derive(Debug, Deserialize)]
struct EnrollmentRequest {
    user: String,
}

async fn admin_enroll(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(r): Json<EnrollmentRequest>,
) -> Response {
    require_admin!(state, headers);
    let Ok(user) = UserId::new(r.user) else {
        return error(StatusCode::BAD_REQUEST, "bad user id");
    };
    match state.inner.directory.enroll(&user, now_ms()) {
        Ok(code) => {
            admin_audit(
                &state,
                AuditAction::Enroll,
                None,
                format!("enrollment code issued for {user}"),
            );
            Json(json!({ "user": user, "code": code })).into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

async fn admin_audit_verify(State(state): State<AppState>, headers: HeaderMap) -> Response {
    require_admin!(state, headers);
    match state.inner.audit.verify() {
        Ok(report) => Json(json!(report)).into_response(),
        Err(e) => internal(e),
    }
}

#[derive(Debug, Deserialize)]
struct ExportQuery {
    patient: String,
}

async fn admin_audit_export(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ExportQuery>,
) -> Response {
    require_admin!(state, headers);
    let Ok(patient) = PatientId::new(q.patient) else {
        return error(StatusCode::BAD_REQUEST, "bad patient id");
    };
    match state.inner.audit.export_patient(&patient) {
        Ok(records) => {
            let mut lines = String::new();
            for r in records {
                lines.push_str(&serde_json::to_string(&r).unwrap_or_default());
                lines.push('\n');
            }
            ([(header::CONTENT_TYPE, "application/x-ndjson")], lines).into_response()
        }
        Err(e) => internal(e),
    }
}
