//! Failed logins, per client address: the sync WebSocket's device credentials and the admin
//! API's token each keep their own `LoginFailures` (so that a run against one does not lock
//! out the other). An address past its limit is refused with 429 before its credential is
//! looked at, and each run of failures is audited once, when it starts.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

use axum::http::StatusCode;
use axum::response::Response;

use crate::audit::{AuditAction, AuditEntry};

use super::{AppState, error, lock, now_ms};

/// Failed logins one address may make in a burst, and then per second.
const LOGIN_FAILURE_BURST: f64 = 20.0;
const LOGIN_FAILURES_PER_SECOND: f64 = 1.0;
/// Addresses tracked at most; beyond it, the quietest are forgotten.
const MAX_TRACKED_ADDRESSES: usize = 10_000;
/// A failure this long after the last one of an address starts a new run (audited again).
const LOGIN_RUN_GAP_MS: i64 = 60_000;

/// Failed logins of one kind, per client address: a token bucket (an empty one refuses the
/// address before its credential is looked at) and the current run (failures close together),
/// which is audited once, when it starts, with the count of the run before it.
#[derive(Debug)]
pub(crate) struct LoginFailures {
    /// What failed, as the audit record says it ("sync logins with no valid device credential").
    what: &'static str,
    by_addr: BTreeMap<IpAddr, FailureRun>,
}

#[derive(Debug)]
struct FailureRun {
    /// Failures the address may still make at once (refilled with time, server clock).
    tokens: f64,
    last_ms: i64,
    count: u64,
}

impl FailureRun {
    fn tokens_at(&self, now: i64) -> f64 {
        let elapsed = now.saturating_sub(self.last_ms).max(0) as f64 / 1000.0;
        (self.tokens + elapsed * LOGIN_FAILURES_PER_SECOND).min(LOGIN_FAILURE_BURST)
    }
}

impl LoginFailures {
    pub(crate) fn new(what: &'static str) -> Self {
        Self {
            what,
            by_addr: BTreeMap::new(),
        }
    }

    /// Whether `addr` may try to log in now.
    fn allowed(&self, addr: IpAddr, now: i64) -> bool {
        self.by_addr
            .get(&addr)
            .is_none_or(|run| run.tokens_at(now) >= 1.0)
    }

    /// Counts a failure; returns the detail of an audit record if this one starts a run.
    fn failed(&mut self, addr: IpAddr, now: i64) -> Option<String> {
        if !self.by_addr.contains_key(&addr) && self.by_addr.len() >= MAX_TRACKED_ADDRESSES {
            // Forget the address whose last failure is oldest.
            if let Some(oldest) = self
                .by_addr
                .iter()
                .min_by_key(|(_, r)| r.last_ms)
                .map(|(a, _)| *a)
            {
                self.by_addr.remove(&oldest);
            }
        }
        let run = self.by_addr.entry(addr).or_insert_with(|| FailureRun {
            tokens: LOGIN_FAILURE_BURST,
            last_ms: i64::MIN / 2,
            count: 0,
        });
        run.tokens = (run.tokens_at(now) - 1.0).max(0.0);
        let new_run = now.saturating_sub(run.last_ms) > LOGIN_RUN_GAP_MS;
        let before = run.count;
        run.last_ms = now;
        let what = self.what;
        if new_run {
            run.count = 1;
            Some(if before > 1 {
                format!(
                    "{what} from {addr} (the run before from this address: {before} failures); \
                     further failures in this run are counted, not recorded"
                )
            } else {
                format!(
                    "{what} from {addr}; further failures in this run are counted, not recorded"
                )
            })
        } else {
            run.count += 1;
            None
        }
    }
}

/// Whether `addr` may try to log in now (it has not used up its failed logins of this kind).
pub(crate) fn allowed(failures: &Mutex<LoginFailures>, addr: Option<IpAddr>) -> bool {
    addr.is_none_or(|a| lock(failures).allowed(a, now_ms()))
}

/// The 429 answer if `addr` used up its failed logins of this kind; `None`: it may try.
pub(super) fn refusal(failures: &Mutex<LoginFailures>, addr: Option<IpAddr>) -> Option<Response> {
    let addr = addr?;
    if lock(failures).allowed(addr, now_ms()) {
        return None;
    }
    Some(error(
        StatusCode::TOO_MANY_REQUESTS,
        "too many failed logins from this address: try again later",
    ))
}

/// Counts a failed login from `addr` and audits it if it starts a run (without an address,
/// every failure is recorded). Best effort: the login is refused whether or not this is
/// recorded.
pub(crate) fn failed(state: &AppState, failures: &Mutex<LoginFailures>, addr: Option<IpAddr>) {
    let first = match addr {
        Some(a) => lock(failures).failed(a, now_ms()),
        None => Some(lock(failures).what.to_owned()),
    };
    if let Some(detail) = first {
        let _ = state
            .audit(AuditEntry::new(now_ms(), "unknown", AuditAction::AuthFailed).detail(detail));
    }
}
