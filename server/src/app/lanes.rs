//! Sync lanes: which group-commit worker (`commit.rs`) takes a waiting sync step.
//!
//! Every step waits in one queue. The first lane takes steps whenever it is free, in groups, as
//! a node with one lane always did (its documents are cached, and steps that queue while it
//! commits share its next commit). A later lane takes steps only while every lane before it is
//! stalled: on one step for longer than [`STALL`] (a step that waits in the database for a row
//! another transaction holds, a long upload). So a device whose step waits holds up the others
//! for at most about that long, and under an ordinary load, where a group of many steps moves
//! from step to step, the lanes do not run side by side (on PostgreSQL, lanes that do contend
//! for the feed counter; each lane is a connection of its own, so they are to each other as
//! nodes are).
//!
//! Why not an mpsc channel per lane, each step to the least loaded: a step queued behind a
//! group that then stalls waits for it, and lanes sharing an ordinary load deadlocked on the
//! feed counter in the database (five times in a morning bench on four lanes, none on one),
//! and were slower. Nor a stall counted per group: a morning's groups of 64 steps took longer
//! than [`STALL`], so lanes ran side by side again (one deadlock a run, 15% fewer changes/s).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::commit::Job;

/// How long a lane may be on one step before the next lane starts taking steps.
pub(super) const STALL: Duration = Duration::from_millis(100);

/// A lane that is not on a group.
const IDLE: u64 = u64::MAX;

/// The queue of waiting steps and what each lane is doing.
pub(super) struct Lanes {
    queue: Mutex<Queue>,
    ready: Condvar,
    /// Per lane: when (milliseconds since `epoch`) it started the step it is on, or [`IDLE`].
    busy: Vec<AtomicU64>,
    epoch: Instant,
}

struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

impl Lanes {
    /// `count` lanes (at least one).
    pub(super) fn new(count: usize) -> Self {
        Self {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            busy: (0..count.max(1)).map(|_| AtomicU64::new(IDLE)).collect(),
            epoch: Instant::now(),
        }
    }

    pub(super) fn count(&self) -> usize {
        self.busy.len()
    }

    /// Queues a step. Bounded by the connections: each has at most one step in flight.
    pub(super) fn push(&self, job: Job) {
        self.lock().jobs.push_back(job);
        self.ready.notify_all();
    }

    /// No more steps: each worker ends once the queue is empty.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// Blocks until `lane` may take a step, and takes it: the lane is then on a group until
    /// [`Lanes::idle`]. `None` once closed and empty.
    pub(super) fn first(&self, lane: usize) -> Option<Job> {
        let mut queue = self.lock();
        loop {
            if !queue.jobs.is_empty() && self.eligible(lane) {
                let job = queue.jobs.pop_front();
                self.busy[lane].store(self.now(), Ordering::Relaxed);
                if lane > 0 {
                    tracing::debug!(
                        lane,
                        "the lanes before this one are stalled: it takes steps"
                    );
                }
                return job;
            }
            if queue.closed && queue.jobs.is_empty() {
                return None;
            }
            queue = if lane == 0 {
                self.ready
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner)
            } else {
                // Whether the lanes before it stalled is a matter of time: look again.
                self.ready
                    .wait_timeout(queue, STALL / 2)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            };
        }
    }

    /// Takes the steps waiting now, up to `max` in `jobs` in all, for the group `lane` is on.
    pub(super) fn more(&self, jobs: &mut Vec<Job>, max: usize) {
        let mut queue = self.lock();
        while jobs.len() < max {
            match queue.jobs.pop_front() {
                Some(job) => jobs.push(job),
                None => break,
            }
        }
    }

    /// No step waits for a lane.
    pub(super) fn is_idle(&self) -> bool {
        self.lock().jobs.is_empty()
    }

    /// `lane` starts a step of its group (or the group's last statements).
    pub(super) fn progress(&self, lane: usize) {
        self.busy[lane].store(self.now(), Ordering::Relaxed);
    }

    /// `lane` finished its group.
    pub(super) fn idle(&self, lane: usize) {
        self.busy[lane].store(IDLE, Ordering::Relaxed);
    }

    /// The first lane always; a later one while every lane before it is stalled.
    fn eligible(&self, lane: usize) -> bool {
        let now = self.now();
        let stall = STALL.as_millis() as u64;
        self.busy[..lane].iter().all(|since| {
            let since = since.load(Ordering::Relaxed);
            since != IDLE && now.saturating_sub(since) >= stall
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(IDLE - 1)
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
