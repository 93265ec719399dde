//! Group commit of sync steps: a dedicated thread per sync lane (off the async threads) runs
//! the steps of all sessions waiting on that lane, in one store transaction on the lane's
//! connection, and commits once for all of them. Which lane takes a step is `lanes.rs`'s
//! business: a lane whose group waits (for a row another transaction holds, say) holds up the
//! others' steps only briefly; on PostgreSQL lanes are to each other as nodes are (below).
//!
//! Each step runs in a savepoint of that transaction (its session's store writes). A step that
//! fails is rolled back to its savepoint alone (its session closes with `Internal`, nothing it
//! queued is sent), and the others go on. The audit records of the steps that stay are then
//! appended on the same connection, once for the group, as its last statements (as `sync.rs`
//! describes): the audit log's head, on PostgreSQL one row for every node, is locked only from
//! there to the commit. Only once the transaction has committed does any session of the group
//! get its step back, so nothing a step queued (an acknowledgement, a batch, `ReadLogAck`)
//! leaves before it is durable with its audit records. If the audit append or the commit
//! fails, every step of the group is treated as failed.
//!
//! On PostgreSQL another node may store a change of a document between a step's validation
//! and its append (`RepoError::Raced`): that append is a group inside this one, a savepoint
//! that `PgStore` rolls back alone, and the repo validates it again once; if it races again,
//! only that step fails (its session closes with `Internal`) and the others commit.
//!
//! Every step's store writes are the session's, and the session checks its connection's lease
//! on the device first (`ServerSession`'s `lease.rs`), here, in the group: a step whose lease a
//! newer connection took (on any node) writes nothing and closes its session as `Superseded`,
//! audited like any close.
//!
//! After its steps, a group after which no step waits also steps for the feed, in the same
//! way, each of its sessions and each session parked on this node (`parked.rs`: connections waiting for their device) that
//! has not looked at the feed up to its head: a change goes out with its disclosure records in
//! the commit that stores it (or the next one), not in a group of its own after it.
//!
//! A group that is not alone (more than one step in it, or more waiting behind it) tells its
//! sessions the server is short of CPU (`ServerSession::server_busy`): what they send to a
//! device whose link has shown itself fast is compressed quickly, not for bytes (zstd at its
//! high level was 44% of this thread's work in a team's morning at base, session 32). A weak
//! link's batches are compressed for bytes whatever the load.
//!
//! Why: each step used to be its own transaction, and every stored upload wakes every session
//! whose device may read it; each of those steps wrote its disclosure records and committed
//! (an fsync) on its own, one after another under the store's lock. Now the steps that queue
//! while one group commits share the next commit, and the deliveries to parked sessions share
//! the upload's.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;

use std::sync::Arc;
use sync_core::error::{RepoError, StoreError};
use sync_core::protocol::ServerSession;
use sync_core::protocol::wire::CloseReason;
use sync_core::store::Store;
use sync_core::{Author, Timestamp};
use tokio::sync::oneshot;

use crate::audit::{AuditEntry, AuditError};

use super::lanes::Lanes;
use super::parked::Slot;
use super::step_audit::{Counts, audit_events};
use super::sync::StepFn;
use super::{AppState, lock, now_ms};

/// Most steps in one transaction (a group stays short, so the first step of it waits little).
const MAX_GROUP: usize = 64;

/// One session's step, handed to the worker.
pub(super) struct Job {
    pub state: AppState,
    pub author: Author,
    pub conn: u64,
    pub session: ServerSession,
    pub f: StepFn,
    /// Whether the group also stepped the session for the feed, up to its head (set by the
    /// group; the task then needs no feed step of its own for that head).
    pub fed: bool,
    /// The session after its step has committed, and `fed`; dropped (the connection ends) if
    /// the step panicked.
    pub done: oneshot::Sender<(ServerSession, bool)>,
}

/// Starts the worker thread of sync lane `lane`; it ends once `lanes` is closed and empty.
pub(super) fn start(lane: usize, lanes: Arc<Lanes>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(format!("nara-sync-commit-{lane}"))
        .spawn(move || run(lane, &lanes))
        .map(drop)
}

fn run(lane: usize, lanes: &Lanes) {
    while let Some(first) = lanes.first(lane) {
        let state = first.state.clone();
        // The lane's store first, then every step already waiting: steps that queued while the
        // last group committed (or while someone else held the store) share this commit.
        let mut hub = lock(&state.inner.hubs[lane]);
        let mut jobs = vec![first];
        lanes.more(&mut jobs, MAX_GROUP);
        // After taking the steps: a step queued once its session heard of a change of access
        // runs under that change.
        state.current_policy(&mut hub);
        state
            .inner
            .metrics
            .steps_waiting
            .fetch_sub(jobs.len() as u64, Ordering::Relaxed);
        let outcomes = commit_group(&state, &mut hub, &mut jobs, &|| lanes.progress(lane));
        let stored = outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Committed(c) if c.stored));
        let head = stored.then(|| hub.repo.store().feed_head().unwrap_or(0));
        drop(hub);
        if let Some(head) = head {
            // Every session is woken, these too: the push also moves a device's cursor past
            // its own changes. Never backwards: another lane may have published a later head.
            state.publish_head(head);
        }
        finish(&state, jobs, outcomes);
        lanes.idle(lane);
    }
}

/// What became of one step.
enum Outcome {
    Committed(Counts),
    Failed,
    /// The step panicked: its session is dropped (its connection ends).
    Panicked,
}

/// Times a group is run: once, and once more if a step of it failed the first time and the
/// store says a conflict may pass (PostgreSQL: see `ServerStore::conflicts_pass`).
const ATTEMPTS: usize = 2;

/// Runs every job's step in one transaction, each in its own savepoint, and commits. If a step
/// fails (or the commit does), the first time the whole transaction is rolled back and the
/// group runs again from copies of the sessions as they came, on fresh copies of the
/// documents: a conflict with another node's transaction (a deadlock PostgreSQL broke by
/// failing a statement of this one, an append another node raced twice) is gone once this
/// transaction released its locks and the other committed. The second time, a step that fails
/// fails alone, as before.
///
/// `progress` is called as each step starts (and the audit append): a lane that calls it is not
/// stalled (`lanes.rs`).
fn commit_group(
    state: &AppState,
    hub: &mut super::Hub,
    jobs: &mut [Job],
    progress: &dyn Fn(),
) -> Vec<Outcome> {
    let attempts = if hub.repo.store().conflicts_pass() {
        ATTEMPTS
    } else {
        1
    };
    let copies: Vec<ServerSession> = if attempts > 1 {
        jobs.iter().map(|j| j.session.clone()).collect()
    } else {
        Vec::new()
    };
    let mut attempt = 1;
    loop {
        let last = attempt >= attempts;
        if let Some(outcomes) = try_group(state, hub, jobs, last, progress) {
            return outcomes;
        }
        tracing::warn!(
            steps = jobs.len(),
            attempt,
            "a step of a group of sync steps failed: the group is rolled back and runs again"
        );
        for (job, copy) in jobs.iter_mut().zip(&copies) {
            job.session = copy.clone();
        }
        hub.repo.unload_all();
        attempt += 1;
    }
}

/// One run of the group: `None` if a step failed and, as this is not the `last` attempt, the
/// whole transaction was rolled back instead of committing the other steps.
fn try_group(
    state: &AppState,
    hub: &mut super::Hub,
    jobs: &mut [Job],
    last: bool,
    progress: &dyn Fn(),
) -> Option<Vec<Outcome>> {
    let super::Hub { repo, policy, .. } = hub;
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(jobs.len());
    let mut again = false;
    let mut parked: Vec<Parked> = Vec::new();
    // Short of CPU: other steps share this group or wait behind it. What this group sends to
    // devices on fast links is then compressed quickly (`ServerSession::server_busy`): they
    // wait on this thread, not on bytes.
    let busy = jobs.len() > 1 || !state.inner.lanes.is_idle();
    let committed = repo.grouped(|repo| {
        // The audit records of the steps that stay, appended once after the last step.
        let mut records = Vec::new();
        for job in jobs.iter_mut() {
            progress();
            job.fed = false;
            repo.store().begin_step().map_err(RepoError::Store)?;
            let mut counts = Counts::default();
            job.session.server_busy(busy);
            let ran = catch_unwind(AssertUnwindSafe(|| {
                (job.f)(&mut job.session, repo, policy);
                audit_events(state, &job.author, &mut job.session, policy, &mut counts)
            }));
            let failed = match &ran {
                Ok(Ok(_)) => counts.internal,
                Ok(Err(_)) | Err(_) => true,
            };
            if failed && !last {
                if let Ok(Err(e)) = &ran {
                    tracing::warn!(device = %job.author.device, error = %e,
                        "a sync step could not be stored with its audit records: its group runs again");
                }
                again = true;
                return Err(RepoError::Store(StoreError::BadRow(
                    "a step failed: the group runs again".into(),
                )));
            }
            match ran {
                Ok(Ok(step_records)) => {
                    repo.store().end_step(true).map_err(RepoError::Store)?;
                    records.extend(step_records);
                    outcomes.push(Outcome::Committed(counts));
                }
                Ok(Err(e)) => {
                    tracing::error!(device = %job.author.device, error = %e,
                        "a sync step could not be stored with its audit records: nothing of it is sent");
                    // Only this step goes; if the whole transaction went (the database
                    // rolled it back on an error), the group fails.
                    repo.store().end_step(false).map_err(RepoError::Store)?;
                    repo.unload_all();
                    outcomes.push(Outcome::Failed);
                }
                Err(_) => {
                    tracing::error!(device = %job.author.device, "a sync step panicked");
                    repo.store().end_step(false).map_err(RepoError::Store)?;
                    repo.unload_all();
                    outcomes.push(Outcome::Panicked);
                }
            }
        }
        // Only while no other step waits: under load the feed's wake-ups gather more changes
        // into each batch (a device pays per batch, in proportion to its document: S8 ran 10%
        // slower with every group delivering at once).
        if state.inner.lanes.is_idle() {
            deliver_in_group(state, repo, policy, jobs, &mut outcomes, &mut records, &mut parked, busy, progress)?;
        }
        // Last, so that the audit log's head (one row for every node, on PostgreSQL) is locked
        // only from here to the commit, and written once per group. If it fails, the group
        // fails: nothing of it is sent. Guarded as the steps are: a panic here must not end the
        // worker (every session's steps run on it).
        progress();
        match catch_unwind(AssertUnwindSafe(|| repo.store().append_audit(records))) {
            Ok(appended) => appended.map_err(audit_error),
            Err(_) => {
                tracing::error!(steps = jobs.len(), "appending a group's audit records panicked");
                Err(RepoError::Store(StoreError::BadRow(
                    "appending the audit records panicked".into(),
                )))
            }
        }
    });
    // Each parked session goes back: as stepped if the group committed, else as it was taken.
    for p in parked {
        match (committed.is_ok(), p.stepped) {
            (true, Some((session, counts))) => {
                counts.publish(state);
                state
                    .inner
                    .metrics
                    .parked_steps
                    .fetch_add(1, Ordering::Relaxed);
                p.slot.give_back(session, true);
            }
            _ => p.slot.give_back(p.taken, false),
        }
    }
    if committed.is_err() && !last {
        if !again && let Err(e) = &committed {
            tracing::warn!(error = %e, steps = jobs.len(),
                "a group of sync steps could not be committed: it runs again");
        }
        return None;
    }
    let m = &state.inner.metrics;
    m.sync_steps.fetch_add(jobs.len() as u64, Ordering::Relaxed);
    if committed.is_ok() {
        m.step_commits.fetch_add(1, Ordering::Relaxed);
    }
    if let Err(e) = committed {
        tracing::error!(error = %e, steps = jobs.len(),
            "a group of sync steps could not be committed: nothing of it is sent");
        outcomes.resize_with(jobs.len(), || Outcome::Failed);
        for o in &mut outcomes {
            if matches!(o, Outcome::Committed(_)) {
                *o = Outcome::Failed;
            }
        }
    }
    Some(outcomes)
}

/// What the feed holds for the group's sessions past what each has looked at (the changes this
/// group stored, or another group did since), and for the sessions parked on this node
/// (`parked.rs`): stepped in this transaction, with their disclosure records, before its audit
/// records and its one commit, instead of in a group of their own later. The parked sessions
/// taken go into `parked` before any of them is stepped, so that each goes back once the group
/// has ended, whatever happens here.
// The group's parts it steps, plus where its records and taken sessions go: `try_group`'s own
// state, split only to keep that function readable.
#[allow(clippy::too_many_arguments)]
fn deliver_in_group(
    state: &AppState,
    repo: &mut super::ServerRepo,
    policy: &mut super::CarePolicy,
    jobs: &mut [Job],
    outcomes: &mut [Outcome],
    records: &mut Vec<AuditEntry>,
    parked: &mut Vec<Parked>,
    busy: bool,
    progress: &dyn Fn(),
) -> Result<(), RepoError> {
    let head = repo.store().feed_head().map_err(RepoError::Store)?;
    for (job, outcome) in jobs.iter_mut().zip(outcomes.iter_mut()) {
        let Outcome::Committed(counts) = outcome else {
            continue;
        };
        if job.session.is_closed() || job.session.scanned_to() >= head {
            continue;
        }
        progress();
        // In place: a copy would copy what the step queued, a hello's batches say. If it fails,
        // so does the step (its session closes with `Internal`, nothing of it sent).
        match feed_step(state, repo, policy, &job.author, &mut job.session)? {
            Some((more, step_records)) => {
                job.fed = true;
                counts.add(more);
                records.extend(step_records);
            }
            None => *outcome = Outcome::Failed,
        }
    }
    let room = MAX_GROUP.saturating_sub(jobs.len());
    for (slot, taken) in state.inner.parking.take_behind(head, room) {
        parked.push(Parked {
            slot,
            taken,
            stepped: None,
        });
    }
    for p in parked.iter_mut() {
        progress();
        // A copy: the session as taken goes back if this or the group fails (its task sent what
        // it had queued before it parked it).
        let mut session = p.taken.clone();
        session.server_busy(busy);
        if let Some((counts, step_records)) =
            feed_step(state, repo, policy, &p.slot.author, &mut session)?
        {
            records.extend(step_records);
            p.stepped = Some((session, counts));
        }
    }
    Ok(())
}

/// A session a group took from its connection's slot (`parked.rs`): as taken, and as stepped.
struct Parked {
    slot: Arc<Slot>,
    taken: ServerSession,
    stepped: Option<(ServerSession, Counts)>,
}

/// Steps `session` for the feed (`feed_advanced`) in a savepoint of the group, with its audit
/// records. `None` if that failed: the savepoint is rolled back, and the session is left as the
/// failed step left it, for the caller to drop or close.
fn feed_step(
    state: &AppState,
    repo: &mut super::ServerRepo,
    policy: &mut super::CarePolicy,
    author: &Author,
    session: &mut ServerSession,
) -> Result<Option<(Counts, Vec<AuditEntry>)>, RepoError> {
    repo.store().begin_step().map_err(RepoError::Store)?;
    let mut counts = Counts::default();
    let ran = catch_unwind(AssertUnwindSafe(|| {
        session.at(Timestamp(now_ms()));
        session.feed_advanced(repo, policy);
        audit_events(state, author, session, policy, &mut counts)
    }));
    match ran {
        Ok(Ok(records)) if !counts.internal => {
            repo.store().end_step(true).map_err(RepoError::Store)?;
            Ok(Some((counts, records)))
        }
        _ => {
            tracing::warn!(device = %author.device, "a delivery in a group failed");
            repo.store().end_step(false).map_err(RepoError::Store)?;
            repo.unload_all();
            Ok(None)
        }
    }
}

/// Hands each session its step back (a failed one closed with `Internal`, nothing of it sent)
/// and publishes what the committed ones did.
fn finish(state: &AppState, jobs: Vec<Job>, outcomes: Vec<Outcome>) {
    for (job, outcome) in jobs.into_iter().zip(outcomes) {
        let Job {
            mut session,
            done,
            conn,
            fed,
            ..
        } = job;
        match outcome {
            Outcome::Committed(counts) => {
                counts.publish(state);
                if let Some(n) = lock(&state.inner.uploaded).get_mut(&conn) {
                    *n = n.saturating_add(counts.accepted.saturating_add(counts.refused));
                }
            }
            Outcome::Failed => {
                while session.poll_transmit().is_some() {}
                while session.poll_event().is_some() {}
                session.close(
                    CloseReason::Internal,
                    "the server could not complete the request",
                );
                // Only the close is left to send; its event is not audited.
                while session.poll_event().is_some() {}
            }
            Outcome::Panicked => continue,
        }
        // The connection may have gone meanwhile: nothing to hand back then.
        let _ = done.send((session, fed));
    }
}

fn audit_error(e: AuditError) -> RepoError {
    RepoError::Store(match e {
        AuditError::Sqlite(e) => StoreError::from(e),
        // The database's own failure (a deadlock PostgreSQL broke), not a bad row.
        AuditError::Backend { backend, source } => StoreError::Backend { backend, source },
        other => StoreError::BadRow(format!("audit: {other}")),
    })
}
