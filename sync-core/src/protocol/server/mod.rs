//! The server side of one device connection, as a state machine.
//!
//! The transport (the server's WebSocket handler, or a test harness) authenticates the device,
//! creates a [`ServerSession`] for it, and then only moves bytes and calls:
//!
//! - [`ServerSession::handle_bytes`] with each message received;
//! - [`ServerSession::feed_advanced`] when other devices' changes were stored (live push);
//! - [`ServerSession::access_changed`] when assignments changed;
//! - [`ServerSession::tick`] now and then, with the current time;
//!
//! and after each call drains [`ServerSession::poll_transmit`] (bytes to send) and
//! [`ServerSession::poll_event`] (what happened, for the audit log and for waking other
//! sessions). The session reads and writes documents through a [`Repo`], whose store is the
//! only IO it does; it never reads a clock, a socket or a random source.

mod event;
mod fallback;
mod feed;
mod hello;
mod incarnation;
mod installation;
mod lease;
mod orphans;
mod pace;
mod recovery;
mod signed;
mod upload;
mod withdraw;

pub use event::ServerEvent;
pub use incarnation::{DeviceIncarnations, MAX_INCARNATION, device_incarnations};
pub use pace::BATCH_WINDOW_MS;
pub use recovery::RecoveryCounts;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use automerge::ChangeHash;

use crate::error::{ModelError, RepoError};
use crate::ids::{Author, DeviceId, DocumentId, PatientId, Timestamp};
use crate::model::{ChangeMessage, admit, genesis_hash};
use crate::protocol::compress;
use crate::protocol::wire::{
    self, BATCH_BYTES, Backfill, CloseReason, Cursor, DeviceMessage, DocChanges, HeadsSignature,
    Hello, MAX_BATCH_CHANGES, MAX_CHANGE_BYTES, MAX_IN_FLIGHT, MAX_LIST, RefusalCode, Refused,
    ServerMessage, WireError,
};
use crate::repo::Repo;
use crate::store::{self, Epoch, FeedEntry, Store};

/// The authenticated device on a connection: who it is and what role its user has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub author: Author,
}

/// Uploads a device may still send on a connection after `Withdrawn` was sent on it, under a
/// write grace: up to [`MAX_IN_FLIGHT`] may have crossed the `Withdrawn` on the wire, and one
/// more carries what the device had not sent yet when it read it (`DeviceSession` sends that
/// at once). A device that goes on uploading past them is ignoring the withdrawal.
pub const GRACE_UPLOADS: u32 = MAX_IN_FLIGHT as u32 + 1;

/// Most priority patients kept from a `Hello` (after dropping those the device may not read,
/// and repeats); the rest of the list is ignored. Every re-sort of the queue looks patients up
/// in this list, so its cost stays that of a case load, whatever the device sends.
pub const MAX_PRIORITY: usize = 200;
/// Most bytes of a device's fallback sync messages one connection keeps (the last message of
/// each document: Automerge keeps its Bloom filters until the next). An honest device's
/// filters take a few hundred bytes a document; one of 3 MiB zeros compresses to a few KiB,
/// and 10,000 documents of them were 30 GiB.
pub const MAX_AM_STATE_BYTES: usize = 32 * 1024 * 1024;

/// Who may read and write what. The server plugs in its care-relationship rules; the protocol
/// never sends a document the peer may not read, and never applies a change to a document it
/// may not write.
pub trait AccessPolicy {
    fn may_read(&self, peer: &Peer, doc: &DocumentId) -> bool;
    fn may_write(&self, peer: &Peer, doc: &DocumentId) -> bool;
    /// Every patient whose documents the peer may read now.
    fn readable_patients(&self, peer: &Peer) -> Vec<PatientId>;
    /// Where [`AccessPolicy::may_write`] allows a write only by a grace after access ended: the
    /// feed position up to which the server held what such a write may build on. A change
    /// whose dependencies are not all at or below it (or earlier changes of the same upload
    /// that are) was made on the basis of something later, and is refused. `None`: no such
    /// limit.
    fn write_horizon(&self, _peer: &Peer, _doc: &DocumentId) -> Option<u64> {
        None
    }
    /// The signing key the server registered for `device` (see docs/protocol.md, "Signed
    /// changes"). A change of another device that a peer hands back (one the server lacks,
    /// in a recovery) is stored only if a signature of its author's device over heads in its
    /// history verifies against this key (`signing::vouched`). `None`: no key, so nothing of
    /// that device is taken from a relay (it comes back when its author recovers).
    fn signing_key(&self, _device: &DeviceId) -> Option<crate::signing::PublicKey> {
        None
    }
}

/// One change to send: from the feed after the device's cursor (it moves the cursor), or from
/// a patient's earlier history (a backfill, for a patient newly assigned or assigned again).
#[derive(Debug, Clone)]
enum Item {
    Feed(FeedEntry),
    Backfill(FeedEntry),
}

impl Item {
    fn entry(&self) -> &FeedEntry {
        match self {
            Item::Feed(e) | Item::Backfill(e) => e,
        }
    }
    fn doc(&self) -> &DocumentId {
        &self.entry().doc
    }
}

/// A patient's backfill in progress on this connection.
#[derive(Debug, Clone)]
struct BackfillState {
    /// Every entry of the patient up to here has been sent.
    progress: u64,
    until: u64,
    /// Entries still queued.
    left: usize,
    /// The device has not been told the current progress yet.
    unreported: bool,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Target bytes of one batch on a link not measured yet, or measured slow: the unit of
    /// resumption on a weak link.
    pub batch_bytes: usize,
    /// Target bytes of one batch on a link measured fast, at most (`pace.rs`): batches grow to
    /// what the device's link delivered in [`BATCH_WINDOW_MS`], up to this. At or below
    /// `batch_bytes`: every batch is of `batch_bytes`, nothing measured.
    pub batch_bytes_fast: usize,
    /// Batches sent and not yet acknowledged, at most.
    pub max_in_flight: usize,
    /// Close the connection if the device has sent nothing for this long (ms), while the server
    /// waits for an acknowledgement or the hello. `None`: never.
    pub stall_after_ms: Option<i64>,
    /// Take compressed frames, and compress what goes to a device whose hello came compressed
    /// (`compress.rs`). `false` serves as a server from before compressed frames did: a
    /// compressed frame closes the connection with `UnsupportedVersion`.
    pub compress: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            batch_bytes: BATCH_BYTES,
            batch_bytes_fast: BATCH_BYTES,
            max_in_flight: MAX_IN_FLIGHT,
            stall_after_ms: Some(60_000),
            compress: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitHello,
    Serving,
    Closed,
}

/// The server end of one device connection. `Clone` gives an independent session in the same
/// state (fuzzing starts each run from one session already serving).
#[derive(Debug, Clone)]
pub struct ServerSession {
    peer: Peer,
    config: ServerConfig,
    state: State,
    outbox: VecDeque<Vec<u8>>,
    events: VecDeque<ServerEvent>,
    epoch: Epoch,
    /// Changes to send, in sending order (priority patients first, histories before feed).
    queue: VecDeque<Item>,
    /// Backfills under way; a patient is complete on the device once its backfill is acknowledged.
    backfill: BTreeMap<PatientId, BackfillState>,
    /// Patients whose whole history the device holds (durable, per device).
    complete: BTreeSet<PatientId>,
    /// Where each of them was completed (durable beside them; see `feed.rs`).
    complete_at: BTreeMap<PatientId, u64>,
    /// Patients the device forgot, and up to which feed position its own changes of theirs are
    /// sent to it all the same (durable; see `feed.rs`).
    refetch: BTreeMap<PatientId, u64>,
    /// Positions queued but not yet sent: the cursor can only pass the smallest.
    unsent: BTreeSet<u64>,
    /// Feed entries up to here have been queued or found irrelevant.
    scanned_to: u64,
    /// The device's priority patients, readable ones only, at most [`MAX_PRIORITY`].
    priority: Vec<PatientId>,
    next_batch: u32,
    /// The upload number the device must send next.
    next_upload: u32,
    /// Batches awaiting acknowledgement, with their cursor and the patients they complete.
    in_flight: BTreeMap<u32, (u64, Vec<PatientId>)>,
    /// How large the next batch is, from how fast the device took the previous ones.
    pace: pace::Pace,
    /// The latest time the session was told (a message, a tick, [`ServerSession::at`]).
    now: Timestamp,
    /// The highest cursor the device has acknowledged on this connection.
    acknowledged: Option<u64>,
    caught_up: bool,
    disclosed: BTreeSet<PatientId>,
    /// Withdrawals sent on this connection and not yet known to have arrived: patient -> the
    /// first batch sent after the `Withdrawn` message (its acknowledgement proves receipt).
    withdrawing: BTreeMap<PatientId, u32>,
    /// Withdrawals sent on this connection: patient -> the number the device's next upload had
    /// then. Uploads up to [`GRACE_UPLOADS`] after it may still carry what the device made
    /// before it knew; one more ends the grace.
    withdrawn_at_upload: BTreeMap<PatientId, u32>,
    /// Patients whose write grace this connection ended.
    told: BTreeSet<PatientId>,
    am_states: BTreeMap<DocumentId, automerge::sync::State>,
    /// The size of the device's last sync message of each document in `am_states` (what
    /// Automerge keeps of it: its `have` Bloom filters, needs and heads), and their sum: at
    /// most [`MAX_AM_STATE_BYTES`].
    am_bytes: BTreeMap<DocumentId, usize>,
    am_total: usize,
    last_heard: Option<Timestamp>,
    /// The device's registered signing key (`None`: a device enrolled before signing, that has
    /// not registered one yet).
    signing_key: Option<crate::signing::PublicKey>,
    /// The device said `Hello3`: it is sent relayed signatures, and batches carry the feed
    /// proof.
    v3: bool,
    /// The device reads root signatures with their path (`signing/root.rs`): it is relayed
    /// those too (a device that does not would only drop them).
    reads_root_signatures: bool,
    /// Checks the signatures of this connection's uploads, each upload's root once.
    verifier: crate::signing::Verifier,
    /// The incarnation of the device's store on this connection (0 before version 3).
    incarnation: u32,
    /// The highest incarnation issued to the device, as of the hello.
    issued: u32,
    /// `Reincarnate` was sent: until the next hello, what the device sent before it read it
    /// (uploads, acknowledgements, its read log) is dropped.
    reincarnating: bool,
    /// This connection issued a new incarnation (at most one a connection).
    reincarnated: bool,
    /// A recovery under way (version 3).
    recovery: Option<recovery::Recovery>,
    /// The device's hello came compressed: what goes to it is compressed too.
    compressing: bool,
    /// The server is short of CPU (its shell says so before each step: [`ServerSession::server_busy`]).
    busy: bool,
    /// The write counters of the connection's incarnation the device holds: up to what its
    /// hello said it wrote, raised by what it uploads on this connection (`None`: a device
    /// that tells no incarnation holds every change of its actor). A change of its actor
    /// above them was written by another installation (a copy) and is sent to it.
    written_through: Option<u64>,
    /// The feed's head and the write counter the device claimed when the hello arrived, and
    /// the changes of the connection's incarnation under counters up to that claim stored
    /// from its uploads on this connection (bounded by what it had written before the hello):
    /// a change of its actor under such a counter stored after the hello by another
    /// connection was written by another installation (a copy), even under a counter this one
    /// has used too (see `holds_own`).
    hello_head: u64,
    hello_written: u64,
    stored_here: BTreeSet<ChangeHash>,
    /// The device's lease this connection claimed (`lease.rs`); `None`: never claimed, not
    /// checked.
    lease: Option<u64>,
}

impl ServerSession {
    pub fn new(peer: Peer, config: ServerConfig) -> Self {
        let pace = pace::Pace::new(config.batch_bytes, config.batch_bytes_fast);
        Self {
            peer,
            config,
            state: State::AwaitHello,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            epoch: [0; 16],
            queue: VecDeque::new(),
            backfill: BTreeMap::new(),
            complete: BTreeSet::new(),
            complete_at: BTreeMap::new(),
            refetch: BTreeMap::new(),
            unsent: BTreeSet::new(),
            scanned_to: 0,
            priority: Vec::new(),
            next_batch: 0,
            next_upload: 0,
            in_flight: BTreeMap::new(),
            pace,
            now: Timestamp(0),
            acknowledged: None,
            caught_up: false,
            disclosed: BTreeSet::new(),
            withdrawing: BTreeMap::new(),
            withdrawn_at_upload: BTreeMap::new(),
            told: BTreeSet::new(),
            am_states: BTreeMap::new(),
            am_bytes: BTreeMap::new(),
            am_total: 0,
            last_heard: None,
            signing_key: None,
            v3: false,
            reads_root_signatures: false,
            verifier: crate::signing::Verifier::new(),
            incarnation: 0,
            issued: 0,
            reincarnating: false,
            reincarnated: false,
            recovery: None,
            compressing: false,
            busy: false,
            written_through: None,
            hello_head: 0,
            hello_written: 0,
            stored_here: BTreeSet::new(),
            lease: None,
        }
    }

    /// The device's signing key as the server registered it: its signed uploads are verified
    /// against it (see docs/protocol.md, "Signed changes").
    pub fn set_signing_key(&mut self, key: Option<crate::signing::PublicKey>) {
        self.signing_key = key;
    }

    /// Whether the device reads root signatures with their path (its shell says so: the sync
    /// request's `x-nara-signatures: root` header), and is relayed them.
    pub fn set_reads_root_signatures(&mut self, reads: bool) {
        self.reads_root_signatures = reads;
    }

    /// The incarnation of the device's store on this connection.
    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }

    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The highest feed position the device has acknowledged on this connection.
    pub fn acknowledged_position(&self) -> Option<u64> {
        self.acknowledged
    }

    /// The feed position up to which this session has looked for changes to push: each
    /// readable entry up to it is queued (and sent as its window allows), so right after
    /// [`ServerSession::feed_advanced`] a feed head at or below it holds nothing new for it.
    pub fn scanned_to(&self) -> u64 {
        self.scanned_to
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The patients whose data this device was sent (and not yet confirmed withdrawn).
    pub fn disclosed(&self) -> &BTreeSet<PatientId> {
        &self.disclosed
    }

    /// Bytes to send to the device, in order.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.outbox.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// Closes the session with `reason`, telling the device why.
    pub fn close(&mut self, reason: CloseReason, detail: impl Into<String>) {
        if self.state == State::Closed {
            return;
        }
        let detail = detail.into();
        tracing::info!(device = %self.peer.author.device, ?reason, %detail, "closing sync session");
        if let Ok(bytes) = wire::encode(&ServerMessage::Close {
            reason,
            detail: detail.clone(),
        }) {
            self.outbox.push_back(self.pack(bytes));
        }
        self.events
            .push_back(ServerEvent::Closed { reason, detail });
        self.state = State::Closed;
    }

    /// The time now, for a step that is not the device's message (a feed wake-up, a group's
    /// delivery): what it sends is timed from it, to measure the device's link (`pace.rs`).
    pub fn at(&mut self, now: Timestamp) {
        self.now = self.now.max(now);
    }

    /// Whether the server is short of CPU now (steps of other sessions queue behind this one):
    /// until told otherwise, what this step sends to a device on a fast link is compressed for
    /// the server's CPU instead of for bytes (`compress::Effort::Quick`). The shell tells it
    /// before each step; a session never told compresses for bytes.
    pub fn server_busy(&mut self, busy: bool) {
        self.busy = busy;
    }

    /// Time passes: a device that went quiet while the server waits for it is closed.
    pub fn tick(&mut self, now: Timestamp) {
        self.at(now);
        let waiting = self.state == State::AwaitHello || !self.in_flight.is_empty();
        match (self.last_heard, self.config.stall_after_ms) {
            (None, _) => self.last_heard = Some(now),
            (Some(t), Some(limit)) if waiting && now.0 - t.0 > limit => {
                self.close(CloseReason::Stalled, "no message from the device in time");
            }
            _ => {}
        }
    }

    /// Handles one message from the device.
    pub fn handle_bytes<S: Store, P: AccessPolicy>(
        &mut self,
        repo: &mut Repo<S>,
        policy: &P,
        bytes: &[u8],
        now: Timestamp,
    ) {
        if self.state == State::Closed || !self.leased(repo) {
            return;
        }
        self.last_heard = Some(now);
        self.at(now);
        if compress::is_compressed(bytes) {
            if !self.config.compress {
                let e = WireError::UnsupportedVersion(compress::COMPRESSED_FRAME);
                return self.close(e.close_reason(), e.to_string());
            }
            // The hello negotiates: a device that sends its hello compressed takes them.
            if self.state == State::AwaitHello {
                self.compressing = true;
            }
        }
        let msg: DeviceMessage = match wire::decode(bytes) {
            Ok(m) => m,
            Err(e) => return self.close(e.close_reason(), e.to_string()),
        };
        let result = match (self.state, msg) {
            (State::AwaitHello, DeviceMessage::Hello(hello)) => {
                self.on_hello(repo, policy, hello, &[], None)
            }
            (State::AwaitHello, DeviceMessage::TimedHello { hello, device_ms }) => self
                .on_clock(device_ms, now)
                .and_then(|()| self.on_hello(repo, policy, hello, &[], None)),
            (
                State::AwaitHello,
                DeviceMessage::Hello3 {
                    hello,
                    device_ms,
                    incarnation,
                    signatures,
                    feed_proof,
                    ..
                },
            ) => {
                self.v3 = true;
                self.on_clock(device_ms, now).and_then(|()| {
                    if self.check_incarnation(repo, &incarnation, &hello, feed_proof.as_ref())? {
                        self.on_hello(repo, policy, hello, &signatures, Some(feed_proof))
                    } else {
                        Ok(())
                    }
                })
            }
            (State::Serving, DeviceMessage::Heads { chunk, docs }) if self.v3 => {
                self.on_heads(repo, policy, chunk, docs)
            }
            (State::Serving, DeviceMessage::Recovered { cursor, patients }) if self.v3 => {
                self.on_recovered(repo, policy, cursor, patients)
            }
            (State::Serving, DeviceMessage::OrphansTaken { changes }) if self.v3 => {
                self.on_orphans_taken(repo, &changes)
            }
            // Sent before the device read `Reincarnate`: void, the next hello starts over.
            (
                State::AwaitHello,
                DeviceMessage::Upload { .. }
                | DeviceMessage::Upload3 { .. }
                | DeviceMessage::BatchAck { .. }
                | DeviceMessage::ReadLog { .. }
                | DeviceMessage::AmSync { .. }
                | DeviceMessage::Heads { .. }
                | DeviceMessage::Recovered { .. }
                | DeviceMessage::OrphansTaken { .. },
            ) if self.reincarnating => Ok(()),
            (State::Serving, DeviceMessage::Upload { upload, docs }) => {
                let from = self.events.len();
                let result = self.on_upload(repo, policy, upload, docs, &[]);
                self.count_recovery_upload(from);
                result
            }
            (
                State::Serving,
                DeviceMessage::Upload3 {
                    upload,
                    docs,
                    signatures,
                },
            ) => {
                let from = self.events.len();
                let result = self.on_upload(repo, policy, upload, docs, &signatures);
                self.count_recovery_upload(from);
                result
            }
            (State::Serving, DeviceMessage::BatchAck { batch }) => {
                let Some((position, completed)) = self.in_flight.remove(&batch) else {
                    return self.close(
                        CloseReason::ProtocolViolation,
                        format!("ack of unknown batch {batch}"),
                    );
                };
                self.pace.acknowledged(batch, self.now);
                self.acknowledged = Some(self.acknowledged.map_or(position, |p| p.max(position)));
                self.confirm_withdrawals(repo, policy, batch)
                    .and_then(|()| self.on_batch_ack(repo, policy, position, completed))
            }
            (State::Serving, DeviceMessage::AmSync { doc, message }) => {
                self.on_am_sync(repo, policy, doc, &message)
            }
            (State::Serving, DeviceMessage::ReadLog { entries }) => {
                if entries.len() > MAX_LIST {
                    return self.close(CloseReason::ProtocolViolation, "read log too long");
                }
                let count = u32::try_from(entries.len()).unwrap_or(u32::MAX);
                self.events.push_back(ServerEvent::Read { entries });
                self.send(&ServerMessage::ReadLogAck { count })
            }
            (_, other) => {
                let name = match other {
                    DeviceMessage::Hello(_)
                    | DeviceMessage::TimedHello { .. }
                    | DeviceMessage::Hello3 { .. } => "hello",
                    DeviceMessage::Upload { .. } | DeviceMessage::Upload3 { .. } => "upload",
                    DeviceMessage::BatchAck { .. } => "batch ack",
                    DeviceMessage::AmSync { .. } => "sync message",
                    DeviceMessage::ReadLog { .. } => "read log",
                    DeviceMessage::Heads { .. } => "heads",
                    DeviceMessage::Recovered { .. } => "recovered",
                    DeviceMessage::OrphansTaken { .. } => "orphans taken",
                };
                return self.close(CloseReason::ProtocolViolation, format!("unexpected {name}"));
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "sync session failed");
            self.close(
                CloseReason::Internal,
                "the server could not complete the request",
            );
        }
    }

    /// A frame as it goes to this device: compressed if its hello was; quickly, if the server
    /// is short of CPU and the device's link has shown itself fast (`compress::Effort`).
    fn pack(&self, frame: Vec<u8>) -> Vec<u8> {
        if !self.compressing {
            return frame;
        }
        let effort = match self.busy && self.pace.fast_link() {
            true => compress::Effort::Quick,
            false => compress::Effort::Full,
        };
        compress::pack_with(frame, effort)
    }

    fn send(&mut self, msg: &ServerMessage) -> Result<(), RepoError> {
        match wire::encode(msg) {
            Ok(bytes) => {
                let bytes = self.pack(bytes);
                self.outbox.push_back(bytes)
            }
            Err(e) => self.close(CloseReason::Internal, e.to_string()),
        }
        Ok(())
    }

    fn on_batch_ack<S: Store, P: AccessPolicy>(
        &mut self,
        repo: &mut Repo<S>,
        policy: &P,
        position: u64,
        completed: Vec<PatientId>,
    ) -> Result<(), RepoError> {
        // Only if access was not withdrawn since, and no newer backfill (after access was given
        // back) is under way: otherwise the changes in between would be missing.
        let completed: Vec<PatientId> = completed
            .into_iter()
            .filter(|p| {
                !self.backfill.contains_key(p)
                    && policy.may_read(&self.peer, &DocumentId::patient_header(p))
            })
            .collect();
        if !completed.is_empty() {
            for p in completed {
                self.complete_at.insert(p.clone(), position);
                self.complete.insert(p);
            }
            self.save_complete(repo)?;
        }
        self.pump(repo, policy)
    }

    /// Assignments changed: withdraw what the peer may no longer read, send the whole history
    /// of patients it may now read.
    pub fn access_changed<S: Store, P: AccessPolicy>(&mut self, repo: &mut Repo<S>, policy: &P) {
        if self.state != State::Serving || !self.leased(repo) {
            return;
        }
        if self.recovery.is_some() {
            // The feed (and backfills) start once the device has recovered.
            if let Err(e) = self.withdraw(repo, policy) {
                tracing::error!(error = %e, "withdrawing access failed");
                self.close(
                    CloseReason::Internal,
                    "the server could not complete the request",
                );
            }
            return;
        }
        let result = self
            .withdraw(repo, policy)
            .and_then(|()| self.queue_backfills(repo, policy, &BTreeMap::new()))
            .and_then(|()| self.pump(repo, policy));
        if let Err(e) = result {
            tracing::error!(error = %e, "withdrawing access failed");
            self.close(
                CloseReason::Internal,
                "the server could not complete the request",
            );
        }
    }

    /// Other devices' changes were stored: queue what this device may read and send it.
    pub fn feed_advanced<S: Store, P: AccessPolicy>(&mut self, repo: &mut Repo<S>, policy: &P) {
        // During a recovery the feed waits: it goes on from the recovery's cursor.
        if self.state != State::Serving || self.recovery.is_some() || !self.leased(repo) {
            return;
        }
        if let Err(e) = self
            .scan(repo, policy, &[])
            .and_then(|()| self.pump(repo, policy))
        {
            tracing::error!(error = %e, "pushing changes failed");
            self.close(
                CloseReason::Internal,
                "the server could not complete the request",
            );
        }
    }
}
