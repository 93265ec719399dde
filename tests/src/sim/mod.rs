//! A deterministic simulation of several devices and one server running the real protocol
//! state machines over simulated links, in the style of TigerBeetle's VOPR and FoundationDB's
//! simulation: one `u64` seed decides everything (edits, connections, message delivery, faults,
//! crashes, access changes); collections are ordered; there is no wall clock.
//!
//! The server may be several nodes ([`SimConfig::nodes`]), each its own `Repo` (its own cache of
//! documents) over clones of one shared in-memory store, as `nara-server` processes on one
//! database: each connection goes to a node the seed picks, so devices move between nodes; a
//! server crash is one node's; the checkers read the shared store through a fresh repo. Each
//! connection then claims the device's lease, and a connection cut by a fault may linger on its
//! node while the device connects again (`linger.rs`): the old session must be fenced.
//!
//! Faults: a message lost (which on a stream means the connection breaks there), duplicated or
//! delivered out of order (which a stream never does: the receiving session must notice and
//! close, never apply out of order), connections cut at any message, partitions (no connection possible), device
//! and server crash-restarts (everything not committed to the store is lost), and assignments
//! withdrawn and given back. State going backwards (`faults.rs`, each behind a per-mille knob
//! of [`SimConfig`], off by default): a device's store put back to an earlier backup, the
//! server's store put back to an earlier backup (its feed epoch unchanged, as a restored disk or
//! virtual machine would be), and a copied phone (a second device runtime started from a copy of
//! one device's store, with the same credential) that writes too.
//!
//! Checkers (`check.rs`), run when the network has healed: every replica converges with the
//! server on every document it may read (a device may be ahead only by changes refused for a
//! permission their author lost); no change that a device reported saved is lost (it is on the
//! server or was refused and quarantined on one of its credential's installations, or, taken
//! back at a reincarnation, its records are
//! there with the same content, a text edit's token in its text, or in a refused change
//! quarantined on the device; a write that a restore took from every store that held it is
//! forgotten, since nothing can bring it back); the protocol goes quiet within a
//! bounded number of steps; recovery ends (every device, copies too, is caught up with nothing
//! pending and nothing quarantined but for a lost permission); no record id has two contents
//! across the server and every device; and, on every message as it is sent, no document reaches
//! a device that may not read it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use automerge::ChangeHash;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sync_core::model::{EventBody, Register, RegisterState, RegisterValue, TextKey};
use sync_core::protocol::policy::{CareRules, Ended};
use sync_core::protocol::wire::{self, ServerMessage};
use sync_core::protocol::{
    AccessPolicy, DeviceConfig, DeviceEvent, DeviceSession, Peer, ServerConfig, ServerEvent,
    ServerSession, Signer,
};
use sync_core::repo::Repo;
use sync_core::signing::{DeviceKey, PublicKey};
use sync_core::store::{MemoryStore, Store};
use sync_core::{Author, DeviceId, DocumentId, PatientId, RecordId, Role, Timestamp, UserId};

use crate::{at, given, november, order, rid};

mod check;
mod edits;
mod faults;
mod linger;
mod links;
mod records;

pub(crate) use records::SavedRecord;

/// Who may read and write whom: the server's own care policy
/// ([`sync_core::protocol::policy::CareRules`]) over access rows kept in memory, with the same
/// transitions the server's directory applies, so the write grace runs under every seed.
#[derive(Debug, Clone, Default)]
pub struct Assignments {
    pub rules: CareRules,
    /// Devices sign (see [`SimConfig::signing`]): the server knows their keys.
    pub signing: bool,
}

impl Assignments {
    /// Assigns `user` to each of `patients`.
    pub fn assign<'a>(&mut self, user: &UserId, patients: impl IntoIterator<Item = &'a PatientId>) {
        for p in patients {
            self.rules.rows.assign(user, p);
        }
    }

    /// Ends `user`'s assignment to `patient` at the rules' time, with `head` the feed's head
    /// then (as the server's directory records it).
    pub fn unassign(&mut self, user: &UserId, patient: &PatientId, head: u64) {
        let ended = Ended {
            at_ms: self.rules.now_ms,
            head,
        };
        self.rules.rows.unassign(user, patient, ended);
    }

    /// Every patient `user` is assigned to.
    pub fn patients_of(&self, user: &UserId) -> BTreeSet<PatientId> {
        self.rules
            .rows
            .assignments
            .get(user)
            .cloned()
            .unwrap_or_default()
    }
}

impl AccessPolicy for Assignments {
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
    /// Every device signs (as every device of this build does), so a relay can hand a
    /// restored server the changes of others.
    fn signing_key(&self, device: &DeviceId) -> Option<PublicKey> {
        self.signing.then(|| device_key(device).public())
    }
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub devices: usize,
    pub patients: usize,
    pub steps: usize,
    /// Per-mille chances of each fault per delivered message.
    pub drop: u32,
    pub duplicate: u32,
    pub reorder: u32,
    pub cut: u32,
    /// Per-mille chances, per step, of state going backwards (see `faults.rs`): a device's
    /// store backed up or put back to a backup; the same for the server's store; a copied
    /// phone started. All 0 by default, so a seed's run is what it always was.
    pub device_restore: u32,
    pub server_restore: u32,
    pub copied_device: u32,
    /// Per-mille chance, per step, that a device loses power (`faults.rs`): its store goes
    /// back to its last durable commit, losing the relaxed commits after it (acknowledgements
    /// and cursors that the server tells again). 0 by default.
    pub device_power_loss: u32,
    /// Devices sign their uploads and the server knows their keys, as with every device of
    /// this build: a restored server takes others' changes back from a relay only when their
    /// author's signature vouches for them (docs/protocol.md, "Recovery"). Off by default (the
    /// runs of the seeds of the default faults are as they always were), on with state going
    /// backwards, where a relay is the only way back for a change its author no longer holds.
    pub signing: bool,
    /// Server nodes, each its own [`Repo`] (its own cache of documents) over clones of one
    /// shared store, as several `nara-server` processes on one database: each connection of a
    /// device goes to a node the seed picks, and a server crash is one node's (its cache
    /// dropped, its connections cut). 1 by default, which draws nothing for nodes, so a
    /// seed's run is what it always was.
    pub nodes: usize,
    /// Per-mille chance that a connection cut by a fault lingers on its node (`linger.rs`):
    /// the device has given it up, but the node has not noticed, and what the device sent on it
    /// still arrives there, while the device connects again (to any node). With several nodes,
    /// every connection claims the device's lease, so a lingering one is fenced. 0 by default.
    pub linger: u32,
}

impl SimConfig {
    /// The default faults on `nodes` server nodes over one shared store, with connections that
    /// linger on their node after the device gave them up.
    pub fn many_nodes(nodes: usize) -> Self {
        Self {
            nodes,
            linger: 500,
            ..Self::default()
        }
    }

    /// The default faults and state going backwards: devices and the server restored from
    /// backups, and copied phones.
    pub fn state_goes_backwards() -> Self {
        Self {
            device_restore: 20,
            server_restore: 8,
            copied_device: 6,
            signing: true,
            ..Self::default()
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            devices: 3,
            patients: 2,
            steps: 160,
            drop: 10,
            duplicate: 10,
            reorder: 10,
            cut: 20,
            device_restore: 0,
            server_restore: 0,
            copied_device: 0,
            device_power_loss: 0,
            signing: false,
            nodes: 1,
            linger: 0,
        }
    }
}

struct Link {
    /// Device to server, server to device.
    up: VecDeque<Vec<u8>>,
    down: VecDeque<Vec<u8>>,
    server: ServerSession,
    /// The server node this connection went to (an index into `World::nodes`).
    node: usize,
}

struct Device {
    author: Author,
    store: MemoryStore,
    repo: Repo<MemoryStore>,
    session: DeviceSession,
    link: Option<Link>,
    /// Every change this device reported saved.
    saved: BTreeSet<(DocumentId, ChangeHash)>,
    /// The revisions and events each saved change wrote, as saved: a change taken back at a
    /// reincarnation comes back as another change writing the same records.
    saved_records: BTreeMap<(DocumentId, ChangeHash), Vec<SavedRecord>>,
    /// What each change the server refused wrote, texts with their whole value, as the device
    /// held them when told (see [`SavedRecord::written`]).
    refused_records: BTreeMap<(DocumentId, ChangeHash), Vec<SavedRecord>>,
    next_id: u64,
    /// Earlier copies of `store`, oldest first (at most `faults::MAX_BACKUPS`).
    backups: Vec<MemoryStore>,
    /// The device whose store this one was copied from (a copied phone).
    copy_of: Option<usize>,
}

/// What happened, for the statistics a run reports.
#[derive(Debug, Default, Clone)]
pub struct SimStats {
    pub edits: usize,
    pub connections: usize,
    pub messages: usize,
    pub faults: usize,
    pub crashes: usize,
    pub withdrawals: usize,
    pub heal_steps: usize,
    /// Stores put back to a backup (devices and server), and copied phones started.
    pub restores: usize,
    pub copies: usize,
    /// Devices that lost power, and of those the ones whose store lost relaxed commits.
    pub power_losses: usize,
    pub power_losses_that_took: usize,
    /// Connections that lingered on their node, and lingering sessions fenced (`linger.rs`).
    pub lingered: usize,
    pub fenced: usize,
}

pub struct World {
    rng: ChaCha8Rng,
    seed: u64,
    config: SimConfig,
    now: i64,
    server_store: MemoryStore,
    /// The server nodes ([`SimConfig::nodes`]), each a `Repo` over a clone of `server_store`.
    nodes: Vec<Repo<MemoryStore>>,
    policy: Assignments,
    devices: Vec<Device>,
    patients: Vec<PatientId>,
    partitioned: bool,
    /// Earlier copies of the server's store, oldest first.
    server_backups: Vec<MemoryStore>,
    /// Connections the devices gave up that their node still serves (`linger.rs`).
    lingering: Vec<Link>,
    pub stats: SimStats,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("seed", &self.seed)
            .field("stats", &self.stats)
            .finish()
    }
}

/// Rounds of reconnection after healing's two full rounds, for devices whose session closed.
const HEAL_RECONNECTS: usize = 8;

/// A device's session as the app starts it, signing its uploads with its device's key if
/// `signing` (a copied phone holds the same key: it is in the store that was copied).
fn device_session(author: &Author, signing: bool) -> DeviceSession {
    let mut session = DeviceSession::new(DeviceConfig {
        priority: vec![],
        stall_after_ms: Some(5_000),
        tell_clock: true,
        ..DeviceConfig::default()
    });
    if signing {
        session.set_signer(Some(Signer {
            device: author.device.clone(),
            key: device_key(&author.device),
        }));
    }
    session
}

/// The signing key of a device (derived from its id: the simulation draws nothing for it, so
/// a seed's run is what it was before devices signed).
fn device_key(device: &DeviceId) -> DeviceKey {
    let mut seed = [0u8; 32];
    for (i, b) in device.as_str().bytes().enumerate() {
        seed[i % 32] ^= b.rotate_left(i as u32 % 8);
    }
    seed[31] ^= 0x5a;
    DeviceKey::from_seed(seed)
}

fn docs_of(p: &PatientId) -> Vec<DocumentId> {
    vec![
        DocumentId::medication(p),
        DocumentId::administrations(p, november()),
        DocumentId::journal(p, november()),
        DocumentId::care_plan(p),
    ]
}

impl World {
    pub fn new(seed: u64, config: SimConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut epoch = [0u8; 16];
        rng.fill(&mut epoch);
        let server_store = MemoryStore::with_epoch(epoch);
        let nodes = (0..config.nodes.max(1))
            .map(|_| Repo::new(server_store.clone()))
            .collect();
        let patients: Vec<PatientId> = (0..config.patients)
            .map(|i| PatientId::new(format!("p{i}")).unwrap())
            .collect();
        let mut policy = Assignments {
            signing: config.signing,
            ..Assignments::default()
        };
        let devices = (0..config.devices)
            .map(|i| {
                let role = if i == 0 { Role::Nurse } else { Role::Carer };
                let author = crate::author(&format!("u{i}"), role);
                policy.assign(&author.user, &patients);
                let store = MemoryStore::with_epoch([i as u8 + 1; 16]);
                if config.device_power_loss > 0 {
                    store.track_power_loss().expect("a memory store");
                }
                Device {
                    repo: Repo::new(store.clone()),
                    store,
                    session: device_session(&author, config.signing),
                    author,
                    link: None,
                    saved: BTreeSet::new(),
                    saved_records: BTreeMap::new(),
                    refused_records: BTreeMap::new(),
                    next_id: 0,
                    backups: Vec::new(),
                    copy_of: None,
                }
            })
            .collect();
        let mut world = Self {
            rng,
            seed,
            config,
            now: 0,
            server_store,
            nodes,
            policy,
            devices,
            patients,
            partitioned: false,
            server_backups: Vec::new(),
            lingering: Vec::new(),
            stats: SimStats::default(),
        };
        // The nurse's phone creates every patient's order and goal before anyone syncs.
        for p in world.patients.clone() {
            let nurse = world.devices[0].author.clone();
            world.save(0, &DocumentId::medication(&p), &nurse, |e| {
                e.create(
                    rid("o1-v1"),
                    Register::Order(rid("o1")),
                    order("1 tablet", at(6, 0)),
                    None,
                )
            });
            world.save(0, &DocumentId::care_plan(&p), &nurse, |e| {
                e.create(
                    rid("g1-v1"),
                    Register::Goal(rid("g1")),
                    RegisterValue::Goal {
                        title: "Stay home".into(),
                        status: sync_core::model::GoalStatus::Active,
                    },
                    Some("Walk daily."),
                )
            });
        }
        world
    }

    /// The store every server node shares.
    pub fn server_store(&self) -> &MemoryStore {
        &self.server_store
    }

    fn time(&self) -> Timestamp {
        Timestamp(1_795_996_800_000 + self.now)
    }

    fn chance(&mut self, per_mille: u32) -> bool {
        self.rng.random_range(0..1000) < per_mille
    }

    fn change_access(&mut self) {
        // A carer loses one patient, or gets all back.
        let d = self
            .rng
            .random_range(1..self.devices.len().max(2))
            .min(self.devices.len() - 1);
        let user = self.devices[d].author.user.clone();
        let p = self.patients[self.rng.random_range(0..self.patients.len())].clone();
        if self.policy.rules.rows.is_assigned(&user, &p) && self.rng.random_bool(0.5) {
            // As the server's unassign: the end's time and the shared feed's head then.
            let head = self.server_store.feed_head().unwrap_or(0);
            let ended = Ended {
                at_ms: self.time().0,
                head,
            };
            self.policy.rules.rows.unassign(&user, &p, ended);
            self.stats.withdrawals += 1;
        } else {
            self.policy.rules.rows.assign(&user, &p);
        }
        for d in 0..self.devices.len() {
            if let Some(link) = self.devices[d].link.as_mut() {
                link.server
                    .access_changed(&mut self.nodes[link.node], &self.policy);
            }
            self.pump_outboxes(d);
        }
    }

    /// One random step of the faulty world.
    pub fn step(&mut self) {
        self.now += self.rng.random_range(1..400);
        self.policy.rules.now_ms = self.time().0;
        let n = self.devices.len();
        let d = self.rng.random_range(0..n);
        let what = self.rng.random_range(0..100);
        if std::env::var_os("SIM_TRACE").is_some() {
            eprintln!(
                "step: device {d}, action {what}, partitioned {}, access {:?}",
                self.partitioned, self.policy.rules.rows.assignments
            );
        }
        match what {
            0..=24 => self.random_edit(d),
            25..=34 => self.connect(d),
            35..=37 => self.cut(d),
            38..=79 => {
                self.deliver(d, true);
            }
            80..=87 => self.tick_all(),
            88..=90 => {
                self.partitioned = !self.partitioned;
                if self.partitioned {
                    for d in 0..n {
                        self.disconnect(d);
                    }
                }
            }
            91..=92 => self.crash_device(d),
            93 => self.crash_server(),
            94..=95 => self.change_access(),
            _ => {
                for _ in 0..10 {
                    self.deliver(d, true);
                }
            }
        }
        self.backwards_step();
        self.lingering_step();
    }

    /// Heals the network and runs until nothing moves. Panics if that takes more than `bound`
    /// steps (the protocol must go quiet).
    pub fn heal(&mut self, bound: usize) {
        self.partitioned = false;
        // The nodes notice the connections their devices gave up.
        self.lingering.clear();
        // Two full rounds: a device that caught up before another uploaded gets the rest live or
        // on its second connection. Then, as an app would, devices whose session closed itself
        // (to recover from a store gone back, say) reconnect, a bounded number of times.
        for round in 0..2 + HEAL_RECONNECTS {
            if round >= 2 && (0..self.devices.len()).all(|d| self.devices[d].session.is_connected())
            {
                break;
            }
            for d in 0..self.devices.len() {
                if round == 1 {
                    self.disconnect(d);
                }
                // A device whose session closed itself is reconnected.
                if !self.devices[d].session.is_connected() {
                    self.disconnect(d);
                }
                self.connect(d);
            }
            let mut steps = 0;
            loop {
                let mut moved = false;
                for d in 0..self.devices.len() {
                    while self.deliver(d, false) {
                        moved = true;
                        steps += 1;
                        assert!(
                            steps <= bound,
                            "SIM_SEED={}: [quiescence] the protocol did not go quiet within {bound} steps",
                            self.seed
                        );
                    }
                }
                if !moved {
                    break;
                }
            }
            self.stats.heal_steps += steps;
        }
    }

    /// Runs a whole seed: faulty steps, heal, check.
    pub fn run(seed: u64, config: SimConfig) -> SimStats {
        let steps = config.steps;
        let mut world = World::new(seed, config);
        for _ in 0..steps {
            world.step();
        }
        world.heal(20_000);
        if world.nodes.len() > 1 {
            // The checkers read the shared store through node 0, started afresh: what the
            // store holds, not what some node's cache remembers.
            world.nodes[0] = Repo::new(world.server_store.clone());
        }
        world.check();
        world.stats
    }
}

/// Drains and returns the device events (for tests that look at them).
pub fn drain_device_events(session: &mut DeviceSession) -> Vec<DeviceEvent> {
    std::iter::from_fn(|| session.poll_event()).collect()
}
