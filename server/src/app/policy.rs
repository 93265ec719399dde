//! Who may read and write whom: the care relationship, and what survives a restart of it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sync_core::protocol::{AccessPolicy, Peer};
use sync_core::store::Store;
use sync_core::{DeviceId, DocKind, DocumentId, PatientId, Role, UserId};

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

/// Who may read and write whom: the care relationship. Admins see no clinical content.
///
/// A user taken off a case loses read access at once. Their devices then have a write grace
/// for that person: journal entries and administrations only (append-only records made while
/// they were on the case and not yet uploaded), never the plan, orders or alerts; and only
/// changes that build on what the server held when the assignment ended (their dependencies
/// are all at or below [`Ended::head`]), so a device cannot write something new on the basis
/// of what came later. The grace of a device ends when the server has sent it `Withdrawn` for
/// that person on a live connection (the device said anything after it), or on
/// [`MAX_UNHEARD_WITHDRAWALS`] connections that died before it did, and after [`WRITE_GRACE_MS`]
/// at the latest: the server decides, not the device's acknowledgement. Every such write is
/// audited like any other.
#[derive(Debug, Clone, Default)]
pub struct CarePolicy {
    pub assignments: BTreeMap<UserId, BTreeSet<PatientId>>,
    /// (user, patient) -> when the assignment ended.
    pub former: BTreeMap<(UserId, PatientId), Ended>,
    /// Devices told of a withdrawal: their grace is over (a later write is refused).
    pub told: BTreeSet<(UserId, DeviceId, PatientId)>,
    /// Connections a withdrawal was sent on, per device and person, before it was told.
    pub sent: BTreeMap<(UserId, DeviceId, PatientId), u32>,
    /// The server's time at the last refresh.
    pub now_ms: i64,
    /// Where devices' signing keys are looked up (the directory), so that another device's
    /// change handed back in a recovery is taken when its author's signature vouches for it.
    /// Not part of the saved snapshot.
    pub keys: Option<KeyDirectory>,
}

/// The directory, as the source of devices' registered signing keys.
#[derive(Clone)]
pub struct KeyDirectory(pub std::sync::Arc<dyn crate::directory::Directory>);

impl std::fmt::Debug for KeyDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyDirectory")
    }
}

impl CarePolicy {
    /// Takes the new assignments, remembering which ended, when, and the feed `head` then.
    pub(super) fn update(
        &mut self,
        assignments: BTreeMap<UserId, BTreeSet<PatientId>>,
        now: i64,
        head: u64,
    ) {
        for (user, patients) in &self.assignments {
            for p in patients {
                if !assignments.get(user).is_some_and(|s| s.contains(p)) {
                    self.former
                        .insert((user.clone(), p.clone()), Ended { at_ms: now, head });
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
        self.sent
            .retain(|(user, _, p), _| !assignments.get(user).is_some_and(|ps| ps.contains(p)));
        self.former.retain(|_, e| now - e.at_ms <= WRITE_GRACE_MS);
        self.assignments = assignments;
        self.now_ms = now;
    }

    /// The device of `peer` was told of the withdrawal of `patient` on a live connection: its
    /// grace is over. Returns whether that is news.
    pub(super) fn told(&mut self, peer: &Peer, patient: &PatientId) -> bool {
        self.sent.remove(&key(peer, patient));
        self.told.insert(key(peer, patient))
    }

    /// A withdrawal of `patient` was sent to the device of `peer` on one more connection; after
    /// [`MAX_UNHEARD_WITHDRAWALS`] its grace is over even if it never answered.
    pub(super) fn withdrawal_sent(&mut self, peer: &Peer, patient: &PatientId) {
        if self.told.contains(&key(peer, patient)) {
            return;
        }
        let n = self.sent.entry(key(peer, patient)).or_insert(0);
        *n += 1;
        if *n >= MAX_UNHEARD_WITHDRAWALS {
            self.told(peer, patient);
        }
    }

    /// `Some(ended)` if `peer` may write `doc` only by the write grace.
    fn grace(&self, peer: &Peer, doc: &DocumentId) -> Option<Ended> {
        let append_only = matches!(
            doc.kind(),
            DocKind::Journal | DocKind::MedicationAdministration
        );
        if peer.author.role == Role::Admin || !append_only {
            return None;
        }
        if self.told.contains(&key(peer, doc.patient())) {
            return None;
        }
        self.former
            .get(&(peer.author.user.clone(), doc.patient().clone()))
            .filter(|e| self.now_ms - e.at_ms <= WRITE_GRACE_MS)
            .copied()
    }

    /// The policy as stored between runs (in the document store's meta values).
    pub(super) fn snapshot(&self) -> anyhow::Result<Vec<u8>> {
        let snapshot = Snapshot {
            assignments: self.assignments.clone(),
            former: self.former.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            told: self.told.clone(),
            sent: self.sent.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        };
        Ok(serde_json::to_vec(&snapshot)?)
    }

    /// The policy as [`CarePolicy::snapshot`] stored it. A snapshot of an older version (whose
    /// ended assignments have no feed head) gets `head` for them: the grace then admits what
    /// builds on anything stored until now, as that version did.
    pub(super) fn restore(bytes: &[u8], head: u64) -> Option<Self> {
        let (assignments, former, told, sent) = match serde_json::from_slice::<Snapshot>(bytes) {
            Ok(s) => (s.assignments, s.former, s.told, s.sent),
            Err(_) => {
                let (assignments, former, told) =
                    serde_json::from_slice::<OldSnapshot>(bytes).ok()?;
                let former = former
                    .into_iter()
                    .map(|(k, at_ms)| (k, Ended { at_ms, head }))
                    .collect();
                (assignments, former, told, Vec::new())
            }
        };
        Some(Self {
            assignments,
            former: former.into_iter().collect(),
            told,
            sent: sent.into_iter().collect(),
            now_ms: 0,
            keys: None,
        })
    }
}

impl AccessPolicy for CarePolicy {
    fn signing_key(&self, device: &DeviceId) -> Option<sync_core::signing::PublicKey> {
        let KeyDirectory(directory) = self.keys.as_ref()?;
        match directory.signing_key(device) {
            Ok(key) => key.map(sync_core::signing::PublicKey),
            Err(e) => {
                tracing::error!(%device, error = %e, "reading a signing key failed");
                None
            }
        }
    }
    fn may_read(&self, peer: &Peer, doc: &DocumentId) -> bool {
        peer.author.role != Role::Admin
            && self
                .assignments
                .get(&peer.author.user)
                .is_some_and(|ps| ps.contains(doc.patient()))
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
        self.assignments
            .get(&peer.author.user)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

pub(super) const POLICY_KEY: &str = "server.policy";

#[derive(Serialize, Deserialize)]
struct Snapshot {
    assignments: BTreeMap<UserId, BTreeSet<PatientId>>,
    former: Vec<((UserId, PatientId), Ended)>,
    told: BTreeSet<(UserId, DeviceId, PatientId)>,
    #[serde(default)]
    sent: Vec<((UserId, DeviceId, PatientId), u32)>,
}

fn key(peer: &Peer, patient: &PatientId) -> (UserId, DeviceId, PatientId) {
    (
        peer.author.user.clone(),
        peer.author.device.clone(),
        patient.clone(),
    )
}

/// The snapshot before ended assignments kept their feed head.
type OldSnapshot = (
    BTreeMap<UserId, BTreeSet<PatientId>>,
    Vec<((UserId, PatientId), i64)>,
    BTreeSet<(UserId, DeviceId, PatientId)>,
);

pub(super) fn save_policy(repo: &mut super::ServerRepo, policy: &CarePolicy) -> anyhow::Result<()> {
    repo.store_mut().set_meta(POLICY_KEY, &policy.snapshot()?)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use sync_core::{Author, Month};

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
        let journal = DocumentId::journal(&p, Month::new(2026, 11).unwrap());
        let plan = DocumentId::care_plan(&p);
        let mut policy = CarePolicy::default();
        let assigned = BTreeMap::from([(peer().author.user.clone(), BTreeSet::from([p.clone()]))]);
        policy.update(assigned, 1_000, 5);
        assert!(policy.may_write(&peer(), &plan));
        assert_eq!(policy.write_horizon(&peer(), &journal), None);
        policy.update(BTreeMap::new(), 2_000, 9);
        assert!(!policy.may_read(&peer(), &journal));
        assert!(policy.may_write(&peer(), &journal));
        assert!(!policy.may_write(&peer(), &plan));
        assert_eq!(policy.write_horizon(&peer(), &journal), Some(9));
        // Survives a restart.
        let restored = CarePolicy::restore(&policy.snapshot().unwrap(), 50).unwrap();
        assert_eq!(restored.former, policy.former);
        // Sent into connections that died: the grace holds for a few.
        for _ in 1..MAX_UNHEARD_WITHDRAWALS {
            policy.withdrawal_sent(&peer(), &p);
        }
        assert!(policy.may_write(&peer(), &journal));
        policy.withdrawal_sent(&peer(), &p);
        assert!(!policy.may_write(&peer(), &journal));
        policy.update(
            BTreeMap::from([(peer().author.user.clone(), BTreeSet::from([p.clone()]))]),
            3_000,
            10,
        );
        policy.update(BTreeMap::new(), 4_000, 11);
        assert!(policy.may_write(&peer(), &journal));
        // Told on a live connection: over, whatever the device acknowledges.
        assert!(policy.told(&peer(), &p));
        assert!(!policy.may_write(&peer(), &journal));
        assert_eq!(policy.write_horizon(&peer(), &journal), None);
    }

    #[test]
    fn an_older_snapshot_is_read_with_the_current_head() {
        let p = PatientId::new("p-1").unwrap();
        let old: OldSnapshot = (
            BTreeMap::new(),
            vec![((peer().author.user.clone(), p.clone()), 7)],
            BTreeSet::new(),
        );
        let restored = CarePolicy::restore(&serde_json::to_vec(&old).unwrap(), 42).unwrap();
        assert_eq!(
            restored.former[&(peer().author.user.clone(), p)],
            Ended { at_ms: 7, head: 42 }
        );
    }
}
