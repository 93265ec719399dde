//! What a sync step's session events become before the step commits: audit records (the
//! disclosures, accepted and refused changes, the device's read log, closes, recoveries), the
//! directory's access rows for withdrawals told and sent, and the step's metrics. `sync.rs`
//! runs the step; `commit.rs` appends these records in its transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

use sync_core::error::{RepoError, StoreError};
use sync_core::protocol::wire::{CLOCK_SKEW_LIMIT_MS, CloseReason};
use sync_core::protocol::{AccessPolicy, ServerEvent, ServerSession};
use sync_core::{Author, ChangeHash, DocumentId};

use crate::audit::{AuditAction, AuditEntry};

use super::{AppState, Bucket, CarePolicy, lock, now_ms};

/// Read-log entries one device may report: a burst, then this many per minute. The excess is
/// refused (acknowledged to the device but not recorded) and audited once per run.
const READ_LOG_BURST: f64 = 2_000.0;
const READ_LOG_PER_MINUTE: f64 = 120.0;
/// Longest `what` of a read-log entry kept, in characters; control characters are dropped.
const MAX_READ_WHAT_CHARS: usize = 64;
/// Change hashes per accept record (each 64 hex digits): records stay far under the detail
/// limit, and every accepted change is named in the log.
const HASHES_PER_RECORD: usize = 40;
/// Refusal records one step writes at most, one per document and code, then one for the rest.
const REFUSAL_RECORDS: usize = 64;

/// Metrics of a step, published once it is committed.
#[derive(Default)]
pub(super) struct Counts {
    pub(super) stored: bool,
    /// The step closed its session with `Internal` (a store error the session met itself,
    /// e.g. an append raced twice by another node): the group-commit worker may run it again.
    pub(super) internal: bool,
    disclosures: u64,
    pub(super) accepted: u64,
    pub(super) refused: u64,
}

impl Counts {
    /// Adds what another step of the same session did (its feed step in the group).
    pub(super) fn add(&mut self, other: Counts) {
        self.stored |= other.stored;
        self.internal |= other.internal;
        self.disclosures += other.disclosures;
        self.accepted += other.accepted;
        self.refused += other.refused;
    }

    pub(super) fn publish(&self, state: &AppState) {
        let m = &state.inner.metrics;
        m.disclosures.fetch_add(self.disclosures, Ordering::Relaxed);
        m.changes_accepted
            .fetch_add(self.accepted, Ordering::Relaxed);
        m.changes_refused.fetch_add(self.refused, Ordering::Relaxed);
    }
}

/// How much of the server's reason for closing a connection goes into the audit record.
const MAX_CLOSE_DETAIL_CHARS: usize = 200;

/// `what` of a read-log entry as it may go into the log: no control characters, bounded.
fn sanitize_what(what: &str) -> String {
    let clean: String = what
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '\u{2028}' | '\u{2029}'))
        .take(MAX_READ_WHAT_CHARS)
        .collect();
    if clean.is_empty() {
        "(unspecified)".into()
    } else {
        clean
    }
}

/// The audit records of the session's events (and the withdrawals told and sent, written to the
/// directory's access rows, which every node reads).
pub(super) fn audit_events(
    state: &AppState,
    author: &Author,
    session: &mut ServerSession,
    policy: &mut CarePolicy,
    counts: &mut Counts,
) -> Result<Vec<AuditEntry>, RepoError> {
    let now = now_ms();
    let entry =
        |action| AuditEntry::new(now, author.user.to_string(), action).device(&author.device);
    let mut records = Vec::new();
    // The step's refusals by document and code: one record each (4,096 refused changes of an
    // upload were 4,096 records, at every message a device may send).
    let mut refusals: BTreeMap<(DocumentId, String), (usize, Vec<ChangeHash>)> = BTreeMap::new();
    while let Some(event) = session.poll_event() {
        match event {
            ServerEvent::Disclosed { doc, changes } => {
                counts.disclosures += 1;
                records.push(
                    entry(AuditAction::Disclose)
                        .patient(doc.patient())
                        .document(doc.to_string())
                        .detail(format!("{changes} changes sent")),
                );
            }
            ServerEvent::Accepted { doc, changes } => {
                counts.stored = true;
                counts.accepted += changes.len() as u64;
                // Every accepted change is named: several records if there are many.
                let parts = changes.len().div_ceil(HASHES_PER_RECORD);
                for (i, chunk) in changes.chunks(HASHES_PER_RECORD).enumerate() {
                    let hashes: Vec<String> = chunk.iter().map(|h| h.to_string()).collect();
                    let part = if parts > 1 {
                        format!(" (part {} of {parts})", i + 1)
                    } else {
                        String::new()
                    };
                    records.push(
                        entry(AuditAction::Accept)
                            .patient(doc.patient())
                            .document(doc.to_string())
                            .detail(format!("stored{part} {}", hashes.join(","))),
                    );
                }
            }
            ServerEvent::Refused {
                doc, change, code, ..
            } => {
                counts.refused += 1;
                let (n, named) = refusals.entry((doc, format!("{code:?}"))).or_default();
                *n += 1;
                named.extend(change);
            }
            ServerEvent::WithdrawalSent { ref patients }
            | ServerEvent::GraceEnded { ref patients } => {
                // The device's write grace ends when it went on uploading after being sent a
                // withdrawal, or after withdrawals sent into a few dead connections (and when it
                // confirms one, below): the server's word, never the device's.
                // Directory rows: every node's policy reads them.
                let ended = matches!(event, ServerEvent::GraceEnded { .. });
                let peer = session.peer().clone();
                let directory = state.directory().as_ref();
                for p in patients {
                    if ended {
                        policy.told(directory, &peer, p)
                    } else {
                        policy.withdrawal_sent(directory, &peer, p)
                    }
                    .map_err(access_error)?;
                }
            }
            ServerEvent::Withdrawn { patients } => {
                // Confirmed: the grace is over.
                let peer = session.peer().clone();
                for p in &patients {
                    policy
                        .told(state.directory().as_ref(), &peer, p)
                        .map_err(access_error)?;
                }
                for p in &patients {
                    records.push(
                        entry(AuditAction::Withdraw)
                            .patient(p)
                            .detail("access withdrawn; the device was told to forget"),
                    );
                }
            }
            ServerEvent::Read { entries } => {
                read_records(
                    state,
                    author,
                    session,
                    policy,
                    entries,
                    &entry,
                    &mut records,
                );
            }
            ServerEvent::Closed { reason, detail } => match reason {
                // A device that broke the protocol or its limits: refused, and audited. For a
                // message that did not decode, the reason only: a decoder's text can quote what
                // the device sent. The others' details are the server's own words.
                CloseReason::Malformed => records.push(
                    entry(AuditAction::Disconnect).detail(format!("connection closed: {reason:?}")),
                ),
                CloseReason::UnsupportedVersion
                | CloseReason::MessageTooLarge
                | CloseReason::ProtocolViolation
                | CloseReason::Stalled
                | CloseReason::Superseded => {
                    let detail: String = detail
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(MAX_CLOSE_DETAIL_CHARS)
                        .collect();
                    records.push(
                        entry(AuditAction::Disconnect)
                            .detail(format!("connection closed: {reason:?}: {detail}")),
                    )
                }
                CloseReason::Internal => counts.internal = true,
                // Audited where they happen (revocation), or not about the device.
                CloseReason::Revoked | CloseReason::Shutdown => {}
            },
            ServerEvent::CaughtUp => {}
            ServerEvent::Reincarnated { old, new } => {
                records.push(entry(AuditAction::Reincarnated).detail(format!(
                    "the device's store is behind what the server holds from incarnation {old}: \
                     it goes on as incarnation {new}"
                )));
            }
            ServerEvent::CopyDetected { incarnation, later } => {
                records.push(entry(AuditAction::CopyDetected).detail(format!(
                    "two installations use this device's credential: incarnation {incarnation} \
                     is in use after incarnation {later}; revoke the device and enroll the other \
                     phone again"
                )));
                // Shown to administrators (`admin devices`, the admin API) until settled; the
                // audit record above is the durable word if this write fails.
                if let Err(e) =
                    state
                        .inner
                        .directory
                        .copy_detected(&author.device, incarnation, later, now)
                {
                    tracing::error!(device = %author.device, error = %e,
                        "recording a copied device in the directory failed");
                }
            }
            ServerEvent::RecoveryDisclosed {
                patient,
                docs,
                changes,
            } => {
                counts.disclosures += 1;
                records.push(
                    entry(AuditAction::Disclose)
                        .patient(&patient)
                        .detail(format!(
                            "recovery: {changes} changes of {docs} documents sent"
                        )),
                );
            }
            ServerEvent::Recovered { counts: c } => {
                records.push(entry(AuditAction::Recovery).detail(format!(
                    "recovered: {} documents compared in {} chunks, {} changes sent, \
                     {} received, {} refused, the server lacked changes of {} documents",
                    c.docs, c.chunks, c.sent, c.received, c.refused, c.lacking
                )));
            }
            ServerEvent::FeedDiverged {
                old,
                new,
                head,
                seen,
            } => {
                records.push(entry(AuditAction::FeedDiverged).detail(format!(
                    "the device saw feed position {seen} of epoch {} but the feed's head is {head} \
                     or its history differs: the server went back in time; new feed epoch {}",
                    hex::encode(old),
                    hex::encode(new)
                )));
            }
            ServerEvent::DeviceClock { offset_ms } => {
                if offset_ms.unsigned_abs() > CLOCK_SKEW_LIMIT_MS.unsigned_abs() {
                    let side = if offset_ms > 0 { "behind" } else { "ahead of" };
                    records.push(entry(AuditAction::ClockSkew).detail(format!(
                        "device clock {} s {side} the server's",
                        offset_ms.unsigned_abs() / 1000
                    )));
                }
            }
        }
    }
    refusal_records(&mut records, refusals, entry);
    Ok(records)
}

/// Records of a step's refusals: a code and where, never the refusal's text (it can quote the
/// rejected value); one record per document and code, naming the refused changes the session
/// named (up to [`HASHES_PER_RECORD`]); past [`REFUSAL_RECORDS`] documents, one record for the
/// rest.
fn refusal_records(
    records: &mut Vec<AuditEntry>,
    refusals: BTreeMap<(DocumentId, String), (usize, Vec<ChangeHash>)>,
    entry: impl Fn(AuditAction) -> AuditEntry,
) {
    let groups = refusals.len();
    let (mut rest_changes, mut rest_docs) = (0, BTreeSet::new());
    for (i, ((doc, code), (n, named))) in refusals.into_iter().enumerate() {
        if i >= REFUSAL_RECORDS && groups > REFUSAL_RECORDS + 1 {
            rest_changes += n;
            rest_docs.insert(doc);
            continue;
        }
        let mut detail = if n == 1 {
            code
        } else {
            format!("{code} {n} changes")
        };
        if !named.is_empty() {
            let shown: Vec<String> = named
                .iter()
                .take(HASHES_PER_RECORD)
                .map(ChangeHash::to_string)
                .collect();
            let more = named.len().saturating_sub(HASHES_PER_RECORD);
            detail.push_str(&format!(" change {}", shown.join(",")));
            if more > 0 {
                detail.push_str(&format!(" and {more} more"));
            }
        }
        records.push(
            entry(AuditAction::Refuse)
                .patient(doc.patient())
                .document(doc.to_string())
                .detail(detail),
        );
    }
    if rest_changes > 0 {
        records.push(entry(AuditAction::Refuse).detail(format!(
            "{rest_changes} more changes refused, of {} more documents",
            rest_docs.len()
        )));
    }
}

/// The device's own read log (who saw which person's data, and when, in device time): only
/// about people disclosed to this device, with sanitised text, at a bounded rate per device.
/// What is refused is acknowledged like the rest (the device cannot make it acceptable by
/// sending it again) and audited once, without naming anyone.
fn read_records(
    state: &AppState,
    author: &Author,
    session: &ServerSession,
    policy: &CarePolicy,
    entries: Vec<sync_core::protocol::wire::ReadEntry>,
    entry: &dyn Fn(AuditAction) -> AuditEntry,
    records: &mut Vec<AuditEntry>,
) {
    let disclosed = session.disclosed();
    let total = entries.len();
    let mut not_disclosed = 0usize;
    let mut over_rate = 0usize;
    let mut rates = lock(&state.inner.read_rates);
    let (bucket, limited) = rates
        .entry(author.device.clone())
        .or_insert_with(|| (Bucket::full(READ_LOG_BURST), false));
    for r in entries {
        // Disclosed to this device, or readable by its user now (a record opened while it
        // is still empty is an access too); anyone else's log is not the device's to write.
        let readable = || {
            policy.may_read(
                session.peer(),
                &sync_core::DocumentId::patient_header(&r.patient),
            )
        };
        if !disclosed.contains(&r.patient) && !readable() {
            not_disclosed += 1;
            continue;
        }
        if !bucket.take(READ_LOG_PER_MINUTE / 60.0, READ_LOG_BURST) {
            over_rate += 1;
            continue;
        }
        records.push(entry(AuditAction::Read).patient(&r.patient).detail(format!(
            "{} shown at {} (device time)",
            sanitize_what(&r.what),
            crate::admin_cli::format_ms(r.at_ms)
        )));
    }
    let first_over = over_rate > 0 && !*limited;
    *limited = over_rate > 0;
    drop(rates);
    if not_disclosed > 0 {
        records.push(entry(AuditAction::Refuse).detail(format!(
            "{not_disclosed} of {total} read-log entries refused: \
             about people never disclosed to this device and not in its user's care"
        )));
    }
    if first_over {
        records.push(entry(AuditAction::RateLimited).detail(format!(
            "read-log entries over {READ_LOG_PER_MINUTE} a minute refused \
             ({over_rate} in this message; further ones in this run are not recorded)"
        )));
    }
}

/// A failed write of the access rows fails the step (as a failed store write would).
fn access_error(e: crate::directory::DirectoryError) -> RepoError {
    RepoError::Store(StoreError::backend("directory", e))
}
