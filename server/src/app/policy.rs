//! Who may read and write whom: the care relationship, and what survives a restart of it.

use std::collections::{BTreeMap, BTreeSet};

use sync_core::protocol::{AccessPolicy, Peer};
use sync_core::repo::Repo;
use sync_core::store::{SqliteStore, Store};
use sync_core::{DeviceId, DocKind, DocumentId, PatientId, Role, UserId};

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
    pub(super) fn update(&mut self, assignments: BTreeMap<UserId, BTreeSet<PatientId>>, now: i64) {
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

pub(super) const POLICY_KEY: &str = "server.policy";

pub(super) type PolicySnapshot = (
    BTreeMap<UserId, BTreeSet<PatientId>>,
    Vec<((UserId, PatientId), i64)>,
    BTreeSet<(UserId, DeviceId, PatientId)>,
);

pub(super) fn save_policy(repo: &mut Repo<SqliteStore>, policy: &CarePolicy) -> anyhow::Result<()> {
    let snapshot: PolicySnapshot = (
        policy.assignments.clone(),
        policy.former.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        policy.told.clone(),
    );
    repo.store_mut()
        .set_meta(POLICY_KEY, &serde_json::to_vec(&snapshot)?)?;
    Ok(())
}
