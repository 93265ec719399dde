//! Who may read and write whom: the server's holder of the care policy. The rules are
//! `sync_core::protocol::policy::CareRules` (the simulation runs the same), a pure function of
//! the access rows and the time; the rows live in the directory, shared by every node
//! (assignments, ended assignments with their feed head, withdrawals told and sent). This node
//! keeps a copy, re-read whenever the directory's generation moves, and the key directory.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sync_core::protocol::policy::{AccessRows, CareRules, Withdrawal};
use sync_core::protocol::{AccessPolicy, Peer};
use sync_core::store::Store;
use sync_core::{DeviceId, DocumentId, PatientId, UserId};

pub use sync_core::protocol::policy::{Ended, WRITE_GRACE_MS};

use crate::directory::{Directory, DirectoryError};

/// The care policy of this node: [`CareRules`] over its copy of the directory's access rows.
#[derive(Debug, Clone, Default)]
pub struct CarePolicy {
    pub rules: CareRules,
    /// Where devices' signing keys are looked up (the directory), so that another device's
    /// change handed back in a recovery is taken when its author's signature vouches for it.
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
    /// Takes the directory's access rows as they are now, at `now`.
    pub(super) fn reload(
        &mut self,
        directory: &dyn Directory,
        now: i64,
    ) -> Result<(), DirectoryError> {
        self.rules.rows = directory.access()?;
        self.rules.now_ms = now;
        Ok(())
    }

    /// The device of `peer` was told of the withdrawal of `patient` on a live connection: its
    /// grace is over, in the directory (for every node) and in this copy at once.
    pub(super) fn told(
        &mut self,
        directory: &dyn Directory,
        peer: &Peer,
        patient: &PatientId,
    ) -> Result<(), DirectoryError> {
        let a = &peer.author;
        directory.withdrawal_told(&a.user, &a.device, patient)?;
        self.rules.rows.told(peer, patient);
        Ok(())
    }

    /// A withdrawal of `patient` was sent to the device of `peer` on one more connection; after
    /// [`sync_core::protocol::policy::MAX_UNHEARD_WITHDRAWALS`] its grace is over even if it never answered.
    pub(super) fn withdrawal_sent(
        &mut self,
        directory: &dyn Directory,
        peer: &Peer,
        patient: &PatientId,
    ) -> Result<(), DirectoryError> {
        let a = &peer.author;
        directory.withdrawal_sent(&a.user, &a.device, patient)?;
        self.rules.rows.withdrawal_sent(peer, patient);
        Ok(())
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
        self.rules.may_read(peer, doc)
    }
    fn may_write(&self, peer: &Peer, doc: &DocumentId) -> bool {
        self.rules.may_write(peer, doc)
    }
    fn write_horizon(&self, peer: &Peer, doc: &DocumentId) -> Option<u64> {
        self.rules.write_horizon(peer, doc)
    }
    fn readable_patients(&self, peer: &Peer) -> Vec<PatientId> {
        self.rules.readable_patients(peer)
    }
}

/// Where servers before access rows kept the policy (a JSON snapshot in the document store's
/// meta values): read once at start and moved into the directory ([`legacy_rows`]), then no
/// longer written.
pub(super) const POLICY_KEY: &str = "server.policy";

#[derive(Serialize, Deserialize)]
struct Snapshot {
    assignments: BTreeMap<UserId, BTreeSet<PatientId>>,
    former: Vec<((UserId, PatientId), Ended)>,
    told: BTreeSet<(UserId, DeviceId, PatientId)>,
    #[serde(default)]
    sent: Vec<((UserId, DeviceId, PatientId), u32)>,
}

/// The snapshot before ended assignments kept their feed head.
type OldSnapshot = (
    BTreeMap<UserId, BTreeSet<PatientId>>,
    Vec<((UserId, PatientId), i64)>,
    BTreeSet<(UserId, DeviceId, PatientId)>,
);

/// The access rows an old snapshot held: its ended assignments, and those it had as assigned
/// that `assigned_now` no longer has (ended while no server ran: at `now`), each with `head`
/// where the snapshot had none; its withdrawals told and sent. `None`: not a snapshot.
pub(super) fn legacy_rows(
    bytes: &[u8],
    assigned_now: &BTreeMap<UserId, BTreeSet<PatientId>>,
    now: i64,
    head: u64,
) -> Option<AccessRows> {
    let (assignments, former, told, sent) = match serde_json::from_slice::<Snapshot>(bytes) {
        Ok(s) => (s.assignments, s.former, s.told, s.sent),
        Err(_) => {
            let (assignments, former, told) = serde_json::from_slice::<OldSnapshot>(bytes).ok()?;
            let former = former
                .into_iter()
                .map(|(k, at_ms)| (k, Ended { at_ms, head }))
                .collect();
            (assignments, former, told, Vec::new())
        }
    };
    let mut rows = AccessRows::default();
    for ((user, patient), ended) in former {
        rows.ended.insert((user, patient), ended);
    }
    for (user, patients) in assignments {
        for p in patients {
            if !assigned_now.get(&user).is_some_and(|s| s.contains(&p)) {
                rows.ended
                    .entry((user.clone(), p))
                    .or_insert(Ended { at_ms: now, head });
            }
        }
    }
    for ((user, device, patient), n) in sent {
        rows.withdrawals
            .entry((user, device, patient))
            .or_default()
            .sent = n;
    }
    for key in told {
        rows.withdrawals.insert(
            key,
            Withdrawal {
                told: true,
                sent: 0,
            },
        );
    }
    Some(rows)
}

/// Moves an old snapshot under [`POLICY_KEY`] into the directory's access rows (once: the value
/// is then emptied), so that a grace that began before the upgrade goes on.
pub(super) fn migrate_snapshot(
    store: &mut impl Store,
    directory: &dyn Directory,
    now: i64,
) -> anyhow::Result<()> {
    let Some(bytes) = store.meta(POLICY_KEY)? else {
        return Ok(());
    };
    if bytes.is_empty() {
        return Ok(());
    }
    let head = store.feed_head()?;
    match legacy_rows(&bytes, &directory.assignments()?, now, head) {
        Some(rows) => {
            let added = directory.import_access(&rows)?;
            tracing::info!(added, "the old access snapshot moved into the directory");
        }
        None => tracing::warn!("an unreadable access snapshot was dropped"),
    }
    store.set_meta(POLICY_KEY, &[])?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use sync_core::{Author, Role};

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
    fn an_older_snapshot_is_read_with_the_current_head() {
        let p = PatientId::new("p-1").unwrap();
        let old: OldSnapshot = (
            BTreeMap::new(),
            vec![((peer().author.user.clone(), p.clone()), 7)],
            BTreeSet::new(),
        );
        let rows = legacy_rows(
            &serde_json::to_vec(&old).unwrap(),
            &BTreeMap::new(),
            100,
            42,
        )
        .unwrap();
        assert_eq!(
            rows.ended[&(peer().author.user.clone(), p)],
            Ended { at_ms: 7, head: 42 }
        );
    }

    #[test]
    fn a_snapshot_gives_its_ends_withdrawals_and_what_ended_while_down() {
        let p = PatientId::new("p-1").unwrap();
        let q = PatientId::new("p-2").unwrap();
        let user = peer().author.user.clone();
        let device = peer().author.device.clone();
        let snapshot = Snapshot {
            assignments: BTreeMap::from([(user.clone(), BTreeSet::from([q.clone()]))]),
            former: vec![((user.clone(), p.clone()), Ended { at_ms: 5, head: 3 })],
            told: BTreeSet::new(),
            sent: vec![((user.clone(), device.clone(), p.clone()), 2)],
        };
        let rows = legacy_rows(
            &serde_json::to_vec(&snapshot).unwrap(),
            &BTreeMap::new(),
            100,
            9,
        )
        .unwrap();
        assert_eq!(
            rows.ended[&(user.clone(), p.clone())],
            Ended { at_ms: 5, head: 3 }
        );
        assert_eq!(
            rows.ended[&(user.clone(), q)],
            Ended {
                at_ms: 100,
                head: 9
            }
        );
        assert_eq!(rows.withdrawals[&(user, device, p)].sent, 2);
        assert!(legacy_rows(b"not json", &BTreeMap::new(), 0, 0).is_none());
    }

    #[test]
    fn the_old_snapshot_moves_into_the_directory_once_at_start() {
        use crate::directory::SqliteDirectory;
        let dir = tempfile::tempdir().unwrap();
        let mut store = sync_core::store::SqliteStore::open(dir.path().join("nara.db")).unwrap();
        let directory = SqliteDirectory::open(&dir.path().join("server.db")).unwrap();
        let (p, q) = (
            PatientId::new("p-1").unwrap(),
            PatientId::new("p-2").unwrap(),
        );
        let user = peer().author.user.clone();
        let device = peer().author.device.clone();
        directory.add_org("o1", "Org").unwrap();
        directory
            .add_user(&user, "Anna", Role::Carer, "o1")
            .unwrap();
        directory.add_patient(&p, "P").unwrap();
        directory.add_patient(&q, "Q").unwrap();
        directory.assign(&user, &q).unwrap();
        // The server last ran with Anna on both; p-1 ended while it was down, and its
        // withdrawal had been sent into two dead connections.
        let snapshot = Snapshot {
            assignments: BTreeMap::from([(user.clone(), BTreeSet::from([p.clone(), q.clone()]))]),
            former: Vec::new(),
            told: BTreeSet::new(),
            sent: vec![((user.clone(), device.clone(), p.clone()), 2)],
        };
        store
            .set_meta(POLICY_KEY, &serde_json::to_vec(&snapshot).unwrap())
            .unwrap();
        migrate_snapshot(&mut store, &directory, 1_000).unwrap();
        let rows = directory.access().unwrap();
        assert_eq!(
            rows.ended[&(user.clone(), p.clone())],
            Ended {
                at_ms: 1_000,
                head: 0
            }
        );
        assert!(!rows.ended.contains_key(&(user.clone(), q)));
        assert_eq!(rows.withdrawals[&(user, device, p)].sent, 2);
        // Read once: the snapshot is gone, and a second start changes nothing.
        assert_eq!(store.meta(POLICY_KEY).unwrap(), Some(Vec::new()));
        let generation = directory.generation().unwrap();
        migrate_snapshot(&mut store, &directory, 2_000).unwrap();
        assert_eq!(directory.generation().unwrap(), generation);
        assert_eq!(directory.access().unwrap(), rows);
    }
}
