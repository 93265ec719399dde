//! The service's limits, the token bucket that enforces rates, and the metrics counters with
//! their `/metrics` page.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::AppState;
use std::time::Duration;

/// The default of [`Limits::feed_poll`].
pub const FEED_POLL: Duration = Duration::from_millis(250);

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
    /// Target size of a batch to a device whose link is not measured yet, or measured slow:
    /// the unit of resumption on a weak link.
    pub batch_bytes: usize,
    /// Largest target size of a batch to a device whose link is measured fast (batches grow
    /// to what its link delivered in a few seconds, `sync_core::protocol::server::BATCH_WINDOW_MS`).
    pub batch_bytes_fast: usize,
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
    /// Take compressed frames from devices and compress what goes to a device whose hello came
    /// compressed (docs/protocol.md, "Compressed frames"). `false` serves as a server from before
    /// them (a compressed hello is closed with `UnsupportedVersion`; the device speaks plain).
    pub compress: bool,
    /// How often a node reads the feed's head to learn of changes stored by other nodes (or,
    /// on SQLite, by another process). On PostgreSQL the feed listener's notifications wake the
    /// sessions at once; this poll is the fallback for a notification that was lost.
    pub feed_poll: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            messages_per_second: 1000.0,
            message_burst: 2000.0,
            max_loaded_documents: 512,
            batch_bytes: 32 * 1024,
            batch_bytes_fast: sync_core::protocol::wire::BATCH_BYTES,
            handshake_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(90),
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(30),
            enroll_per_second: 5.0,
            enroll_burst: 100.0,
            compress: true,
            feed_poll: FEED_POLL,
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
    /// Sync steps run (each a message, a push or a close of one session).
    pub sync_steps: AtomicU64,
    /// Transactions that committed sync steps (several sessions' steps share one).
    pub step_commits: AtomicU64,
    /// Sync steps handed over and waiting for the store.
    pub steps_waiting: AtomicU64,
    /// Parked sessions stepped for the feed in the group that stored the change (`parked.rs`).
    pub parked_steps: AtomicU64,
}

/// `GET /metrics`: the counters above, and the sessions parked now, in Prometheus' text format.
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
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
        (
            "nara_sync_steps_total",
            "counter",
            "Sync steps run.",
            m.sync_steps.load(Ordering::Relaxed),
        ),
        (
            "nara_sync_step_commits_total",
            "counter",
            "Transactions that committed sync steps.",
            m.step_commits.load(Ordering::Relaxed),
        ),
        (
            "nara_sync_parked_steps_total",
            "counter",
            "Deliveries to parked sessions committed with the change that caused them.",
            m.parked_steps.load(Ordering::Relaxed),
        ),
        (
            "nara_sync_sessions_parked",
            "gauge",
            "Sync sessions parked while their connections wait.",
            state.parked_sessions() as u64,
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

/// A token bucket: at most `rate` a second, sustained, `burst` at once.
pub(super) struct Bucket {
    tokens: f64,
    last: tokio::time::Instant,
}

impl Bucket {
    pub(super) fn full(burst: f64) -> Self {
        Self {
            tokens: burst,
            last: tokio::time::Instant::now(),
        }
    }

    pub(super) fn take(&mut self, rate: f64, burst: f64) -> bool {
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
