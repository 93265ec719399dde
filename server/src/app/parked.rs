//! Sessions parked with the group-commit workers while their connections wait for the device,
//! the feed or a tick, so that the group that stores a change also delivers it.
//!
//! A stored change wakes every session whose device may read it, and each then ran a step of
//! its own (`feed_advanced`): a second group and a second commit (an fsync) between the upload
//! and the change leaving for the reader, whose disclosure record must be durable before the
//! bytes go. Now a connection task that waits leaves its session here ([`Slot::park`]), and a
//! group after which no step waits steps for the feed, after its own steps, the sessions parked
//! on this node that have not looked at the feed up to its head, in the same transaction,
//! before its audit records and its one commit (`commit.rs`); once it has committed it gives
//! each session back, marked stepped, and wakes its task, which sends what the step queued. A parked step that fails is rolled back
//! to its savepoint and the session is given back as it was parked; so is every parked session
//! of a group that fails.
//!
//! Nothing rests on this: it saves a commit and a hop on the way, no more. A session that is
//! not parked at that moment (its task is on a step or sending), or that is on another node,
//! is woken by the feed as before, and a session that was stepped is woken too and finds nothing
//! new. The task takes its session back ([`Slot::unpark`]) before it acts on anything; if a
//! worker holds it, the task waits for that group's commit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sync_core::Author;
use sync_core::protocol::ServerSession;
use tokio::sync::Notify;

use super::lock;

/// The slots of this node's connections.
#[derive(Default)]
pub(super) struct Parking {
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
}

impl Parking {
    /// A slot for connection `conn`, until [`Parking::close`].
    pub(super) fn open(&self, conn: u64, author: Author) -> Arc<Slot> {
        let slot = Arc::new(Slot {
            author,
            state: Mutex::new(SlotState::default()),
            returned: Notify::new(),
        });
        lock(&self.slots).insert(conn, slot.clone());
        slot
    }

    pub(super) fn close(&self, conn: u64) {
        lock(&self.slots).remove(&conn);
    }

    /// Sessions parked now (not held by their tasks or by a worker).
    pub(super) fn parked(&self) -> usize {
        let slots: Vec<Arc<Slot>> = lock(&self.slots).values().cloned().collect();
        slots
            .iter()
            .filter(|s| lock(&s.state).session.is_some())
            .count()
    }

    /// Takes at most `max` parked sessions that have not looked at the feed up to `head` (each
    /// marked as held by the caller, a worker), with their slots. Each must go back through
    /// [`Slot::give_back`].
    pub(super) fn take_behind(&self, head: u64, max: usize) -> Vec<(Arc<Slot>, ServerSession)> {
        if max == 0 {
            return Vec::new();
        }
        let slots: Vec<Arc<Slot>> = lock(&self.slots).values().cloned().collect();
        let mut taken = Vec::new();
        for slot in slots {
            if taken.len() >= max {
                break;
            }
            let mut state = lock(&slot.state);
            if state
                .session
                .as_ref()
                .is_some_and(|s| s.scanned_to() < head)
                && let Some(session) = state.session.take()
            {
                state.away = true;
                drop(state);
                taken.push((slot, session));
            }
        }
        taken
    }
}

/// Where one connection's session waits while its task does.
pub(super) struct Slot {
    /// The session's device (its audit records name it).
    pub(super) author: Author,
    state: Mutex<SlotState>,
    /// A worker gave the session back.
    returned: Notify,
}

#[derive(Default)]
struct SlotState {
    session: Option<ServerSession>,
    /// A worker holds the session.
    away: bool,
    /// A worker stepped the session since its task last took it: output may wait in it.
    stepped: bool,
}

impl Slot {
    /// Leaves the session here while the task waits.
    pub(super) fn park(&self, session: ServerSession) {
        lock(&self.state).session = Some(session);
    }

    /// Resolves once a worker gave the session back (it may have stepped it): the task's cue to
    /// take it and send what it queued.
    pub(super) async fn returned(&self) {
        self.returned.notified().await;
    }

    /// Takes the session back, waiting for a worker that holds it to give it back, with whether
    /// a worker stepped it meanwhile. `None` only if it was lost (never parked, or a worker did
    /// not give it back): the connection then ends.
    pub(super) async fn unpark(&self) -> Option<(ServerSession, bool)> {
        loop {
            let returned = self.returned.notified();
            tokio::pin!(returned);
            // Registered before looking, so that a give-back between the look and the wait is
            // not missed.
            returned.as_mut().enable();
            {
                let mut state = lock(&self.state);
                if let Some(session) = state.session.take() {
                    let stepped = std::mem::take(&mut state.stepped);
                    return Some((session, stepped));
                }
                if !state.away {
                    return None;
                }
            }
            returned.await;
        }
    }

    /// A worker gives back a session it took from [`Parking::take_behind`], `stepped` if it ran a step
    /// that committed (else the session is as it was taken), and wakes the task.
    pub(super) fn give_back(&self, session: ServerSession, stepped: bool) {
        {
            let mut state = lock(&self.state);
            state.session = Some(session);
            state.away = false;
            state.stepped |= stepped;
        }
        self.returned.notify_one();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use sync_core::protocol::{Peer, ServerConfig};
    use sync_core::{DeviceId, Role, UserId};

    fn author() -> Author {
        Author::new(
            UserId::new("anna").unwrap(),
            Role::Carer,
            DeviceId::new("phone-1").unwrap(),
        )
    }

    fn session() -> ServerSession {
        ServerSession::new(Peer { author: author() }, ServerConfig::default())
    }

    #[tokio::test]
    async fn a_task_waits_for_the_worker_that_holds_its_session_and_learns_it_was_stepped() {
        let parking = Parking::default();
        let slot = parking.open(1, author());
        slot.park(session());
        assert!(
            parking.take_behind(0, 8).is_empty(),
            "a session that has looked at the feed up to its head is left parked"
        );
        let mut taken = parking.take_behind(1, 8);
        assert_eq!(taken.len(), 1, "the parked session is taken");
        assert!(
            parking.take_behind(1, 8).is_empty(),
            "a held session is not taken twice"
        );
        let (held, s) = taken.pop().unwrap();
        let task = {
            let slot = slot.clone();
            tokio::spawn(async move { slot.unpark().await.map(|(_, stepped)| stepped) })
        };
        tokio::task::yield_now().await;
        assert!(
            !task.is_finished(),
            "the task waits while a worker holds its session"
        );
        held.give_back(s, true);
        assert_eq!(task.await.unwrap(), Some(true));
        // Taken back by its task: nothing is parked, and a second unpark finds it lost.
        assert!(parking.take_behind(1, 8).is_empty());
        assert!(slot.unpark().await.is_none());
    }

    #[tokio::test]
    async fn a_session_given_back_unstepped_wakes_its_task_but_is_not_marked() {
        let parking = Parking::default();
        let slot = parking.open(7, author());
        slot.park(session());
        let (held, s) = parking.take_behind(1, 1).pop().unwrap();
        held.give_back(s, false);
        // The wake-up is stored for the task's next wait.
        tokio::time::timeout(std::time::Duration::from_secs(5), slot.returned())
            .await
            .expect("the give-back wakes the task");
        assert_eq!(slot.unpark().await.map(|(_, s)| s), Some(false));
        parking.close(7);
        slot.park(session());
        assert!(
            parking.take_behind(1, 8).is_empty(),
            "a closed slot is not stepped"
        );
    }
}
