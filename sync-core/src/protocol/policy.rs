//! The care policy: who may read and write whom, as a pure function of the access rows and the
//! time. The server holds these rows in its directory (shared by every node); the simulation
//! holds them in memory and applies the same transitions ([`AccessRows::assign`],
//! [`AccessRows::unassign`], [`AccessRows::withdrawal_sent`], [`AccessRows::told`]), so the
//! grace rules run under its seeds exactly as on the server.
//!
//! Sans-IO: no clock (the time is [`CareRules::now_ms`], set by the caller), no storage.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::server::{AccessPolicy, Peer};
use crate::{DeviceId, DocKind, DocumentId, PatientId, Role, UserId};

/// How long after being taken off a case a worker's phone may still upload the records it
/// made (S4: "A's pending notes for P are uploaded and kept").
pub const WRITE_GRACE_MS: i64 = 14 * 24 * 3600 * 1000;

/// A withdrawal sent on this many connections that each ended before the device said anything
/// after it ends the grace all the same: a link that dies once is weak signal, a device that
/// drops every connection as soon as it is told is avoiding it.
pub const MAX_UNHEARD_WITHDRAWALS: u32 = 3;

/// When an assignment ended: the server's time, and its feed head then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    pub at_ms: i64,
    /// Everything the user's devices could have received of the person was at or below this
    /// feed position: a record made while assigned builds on nothing above it.
    pub head: u64,
}

/// What the server did to tell one device of one withdrawal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawal {
    /// Told on a live connection (the device said anything after it): its grace is over.
    pub told: bool,
    /// Connections the withdrawal was sent on that ended before the device said anything.
    pub sent: u32,
}

impl Withdrawal {
    /// Whether the device's grace is over: told, or sent into
    /// [`MAX_UNHEARD_WITHDRAWALS`] connections that died.
    pub fn ends_grace(&self) -> bool {
        self.told || self.sent >= MAX_UNHEARD_WITHDRAWALS
    }
}

/// The access rows: assignments, ended assignments, and the withdrawals told or sent, by
/// (user, device, person).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessRows {
    pub assignments: BTreeMap<UserId, BTreeSet<PatientId>>,
    /// (user, person) -> when the assignment ended (absent while assigned).
    pub ended: BTreeMap<(UserId, PatientId), Ended>,
    pub withdrawals: BTreeMap<(UserId, DeviceId, PatientId), Withdrawal>,
}

impl AccessRows {
    pub fn is_assigned(&self, user: &UserId, patient: &PatientId) -> bool {
        self.assignments
            .get(user)
            .is_some_and(|ps| ps.contains(patient))
    }

    /// Assigns `user` to `patient`: an earlier end and its withdrawals are forgotten (a later
    /// withdrawal starts a new grace period).
    pub fn assign(&mut self, user: &UserId, patient: &PatientId) {
        self.assignments
            .entry(user.clone())
            .or_default()
            .insert(patient.clone());
        self.ended.remove(&(user.clone(), patient.clone()));
        self.withdrawals
            .retain(|(u, _, p), _| !(u == user && p == patient));
    }

    /// Ends the assignment (if there was one), recording when and the feed head then; ends
    /// older than [`WRITE_GRACE_MS`] before `ended.at_ms` are dropped, with their withdrawals.
    pub fn unassign(&mut self, user: &UserId, patient: &PatientId, ended: Ended) {
        let was = self
            .assignments
            .get_mut(user)
            .is_some_and(|ps| ps.remove(patient));
        if self.assignments.get(user).is_some_and(BTreeSet::is_empty) {
            self.assignments.remove(user);
        }
        if was {
            self.ended.insert((user.clone(), patient.clone()), ended);
        }
        let cutoff = ended.at_ms - WRITE_GRACE_MS;
        self.ended.retain(|_, e| e.at_ms >= cutoff);
        let ended_pairs = &self.ended;
        self.withdrawals
            .retain(|(u, _, p), _| ended_pairs.contains_key(&(u.clone(), p.clone())));
    }

    /// A withdrawal of `patient` was sent to `peer`'s device on one more connection.
    pub fn withdrawal_sent(&mut self, peer: &Peer, patient: &PatientId) {
        let w = self.withdrawals.entry(key(peer, patient)).or_default();
        if !w.told {
            w.sent = w.sent.saturating_add(1);
        }
    }

    /// `peer`'s device was told of the withdrawal of `patient` on a live connection. Returns
    /// whether that is news.
    pub fn told(&mut self, peer: &Peer, patient: &PatientId) -> bool {
        let w = self.withdrawals.entry(key(peer, patient)).or_default();
        !std::mem::replace(&mut w.told, true)
    }
}

/// The (user, device, person) key of a withdrawal row.
pub fn key(peer: &Peer, patient: &PatientId) -> (UserId, DeviceId, PatientId) {
    (
        peer.author.user.clone(),
        peer.author.device.clone(),
        patient.clone(),
    )
}

/// Who may read and write whom: the care relationship, from [`AccessRows`] at `now_ms`.
/// Admins see no clinical content.
///
/// A user taken off a case loses read access at once. Their devices then have a write grace
/// for that person: journal entries and administrations only (append-only records made while
/// they were on the case and not yet uploaded), never the plan, orders or alerts; and only
/// changes that build on what the server held when the assignment ended (their dependencies
/// are all at or below [`Ended::head`]), so a device cannot write something new on the basis
/// of what came later. The grace of a device ends when the server has sent it `Withdrawn` for
/// that person on a live connection (the device said anything after it), or on
/// [`MAX_UNHEARD_WITHDRAWALS`] connections that died before it did, and after [`WRITE_GRACE_MS`]
/// at the latest: the server decides, not the device's acknowledgement.
#[derive(Debug, Clone, Default)]
pub struct CareRules {
    pub rows: AccessRows,
    /// The time the rules are evaluated at (the server's clock, the simulation's).
    pub now_ms: i64,
}

impl CareRules {
    /// `Some(ended)` if `peer` may write `doc` only by the write grace.
    pub fn grace(&self, peer: &Peer, doc: &DocumentId) -> Option<Ended> {
        let append_only = matches!(
            doc.kind(),
            DocKind::Journal | DocKind::MedicationAdministration
        );
        if peer.author.role == Role::Admin || !append_only {
            return None;
        }
        if self.rows.is_assigned(&peer.author.user, doc.patient()) {
            return None;
        }
        if self
            .rows
            .withdrawals
            .get(&key(peer, doc.patient()))
            .is_some_and(Withdrawal::ends_grace)
        {
            return None;
        }
        self.rows
            .ended
            .get(&(peer.author.user.clone(), doc.patient().clone()))
            .filter(|e| self.now_ms - e.at_ms <= WRITE_GRACE_MS)
            .copied()
    }
}

impl AccessPolicy for CareRules {
    fn may_read(&self, peer: &Peer, doc: &DocumentId) -> bool {
        peer.author.role != Role::Admin && self.rows.is_assigned(&peer.author.user, doc.patient())
    }
    fn may_write(&self, peer: &Peer, doc: &DocumentId) -> bool {
        self.may_read(peer, doc) || self.grace(peer, doc).is_some()
    }
    fn write_horizon(&self, peer: &Peer, doc: &DocumentId) -> Option<u64> {
        if self.may_read(peer, doc) {
            return None;
        }
        self.grace(peer, doc).map(|e| e.head)
    }
    fn readable_patients(&self, peer: &Peer) -> Vec<PatientId> {
        if peer.author.role == Role::Admin {
            return Vec::new();
        }
        self.rows
            .assignments
            .get(&peer.author.user)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{Author, Month};

    fn peer() -> Peer {
        Peer {
            author: Author::new(
                UserId::new("anna").unwrap(),
                Role::Carer,
                DeviceId::new("anna-phone").unwrap(),
            ),
        }
    }

    #[test]
    fn the_grace_admits_old_dependencies_until_the_device_is_told() {
        let p = PatientId::new("p-1").unwrap();
        let user = peer().author.user.clone();
        let journal = DocumentId::journal(&p, Month::new(2026, 11).unwrap());
        let plan = DocumentId::care_plan(&p);
        let mut rules = CareRules::default();
        rules.rows.assign(&user, &p);
        rules.now_ms = 1_000;
        assert!(rules.may_write(&peer(), &plan));
        assert_eq!(rules.write_horizon(&peer(), &journal), None);
        rules.rows.unassign(
            &user,
            &p,
            Ended {
                at_ms: 2_000,
                head: 9,
            },
        );
        rules.now_ms = 2_000;
        assert!(!rules.may_read(&peer(), &journal));
        assert!(rules.may_write(&peer(), &journal));
        assert!(!rules.may_write(&peer(), &plan));
        assert_eq!(rules.write_horizon(&peer(), &journal), Some(9));
        // Sent into connections that died: the grace holds for a few.
        for _ in 1..MAX_UNHEARD_WITHDRAWALS {
            rules.rows.withdrawal_sent(&peer(), &p);
        }
        assert!(rules.may_write(&peer(), &journal));
        rules.rows.withdrawal_sent(&peer(), &p);
        assert!(!rules.may_write(&peer(), &journal));
        // Assigned again, then taken off again: a new grace.
        rules.rows.assign(&user, &p);
        rules.rows.unassign(
            &user,
            &p,
            Ended {
                at_ms: 4_000,
                head: 11,
            },
        );
        rules.now_ms = 4_000;
        assert!(rules.may_write(&peer(), &journal));
        // Told on a live connection: over, whatever the device acknowledges.
        assert!(rules.rows.told(&peer(), &p));
        assert!(!rules.rows.told(&peer(), &p));
        assert!(!rules.may_write(&peer(), &journal));
        assert_eq!(rules.write_horizon(&peer(), &journal), None);
    }

    #[test]
    fn the_grace_ends_with_time() {
        let p = PatientId::new("p-1").unwrap();
        let user = peer().author.user.clone();
        let journal = DocumentId::journal(&p, Month::new(2026, 11).unwrap());
        let mut rules = CareRules::default();
        rules.rows.assign(&user, &p);
        rules.rows.unassign(&user, &p, Ended { at_ms: 0, head: 1 });
        rules.now_ms = WRITE_GRACE_MS;
        assert!(rules.may_write(&peer(), &journal));
        rules.now_ms = WRITE_GRACE_MS + 1;
        assert!(!rules.may_write(&peer(), &journal));
    }
}
