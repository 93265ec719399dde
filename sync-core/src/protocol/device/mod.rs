//! The device side of the protocol, as a state machine.
//!
//! The transport (the device runtime's WebSocket client, or a test harness) calls:
//!
//! - [`DeviceSession::connect`] when a connection is up (the session queues its hello);
//! - [`DeviceSession::handle_bytes`] with each message received (or [`DeviceSession::decode`]
//!   then [`DeviceSession::handle_message`], to open the message's store transaction around
//!   it, relaxed where [`DeviceSession::commits_relaxed`] says so);
//! - [`DeviceSession::local_change`] after the app saved a change (live upload);
//! - [`DeviceSession::disconnected`] when the connection is gone;
//! - [`DeviceSession::tick`] now and then, with the current time;
//!
//! and after each call drains [`DeviceSession::poll_transmit`] and
//! [`DeviceSession::poll_event`]. What must survive a restart (the cursor into the server's
//! feed, what was received beyond it, refused changes) lives in the store, written before the
//! acknowledgement that depends on it is sent.
//!
//! A device whose cursor the server cannot match to its feed (version 3: the cursor's feed
//! proof) recovers: `recovery.rs`.

mod batch;
mod fallback;
mod flag_memo;
mod orphans;
mod purge;
mod read_log;
mod recovery;
mod reincarnate;
mod relaxed;
mod signed;
mod take_out;
mod text_merge;
mod together;
mod unproven;
mod upload;
mod urgency;
mod withdrawn;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use automerge::ChangeHash;
use serde::{Deserialize, Serialize};

use crate::error::RepoError;
use crate::ids::{DeviceId, DocKind, DocumentId, PatientId, Timestamp};
use crate::model::admit;
use crate::protocol::compress;
use crate::protocol::signatures::{self, StoredSignature};

use crate::protocol::wire::{
    self, BATCH_BYTES, Backfill, CloseReason, Cursor, DeviceMessage, DocChanges, HeadsSignature,
    Hello, IncarnationClaim, MAX_BATCH_CHANGES, MAX_IN_FLIGHT, MAX_LIST, ReadEntry, RefusalCode,
    ServerMessage, SignerKey, WireError,
};
use crate::repo::Repo;
use crate::signing::{self, DeviceKey, MAX_SIGNATURES, PublicKey};
use crate::store::{FeedProof, Store};
pub use signed::Signer;
pub use together::MAX_TOGETHER;

const STATE_KEY: &str = "sync.state";
const QUARANTINE_KEY: &str = "sync.quarantine";
const READ_LOG_KEY: &str = "sync.readlog";
const CLOCK_KEY: &str = "sync.clock";
/// When (device ms) the server last refused a compressed hello.
const PLAIN_SERVER_KEY: &str = "sync.plain_server";
/// The feed proof at the cursor: (cursor, proof), written with the cursor.
const PROOF_KEY: &str = "sync.proof";
/// Most read-log entries kept on the device before it must sync: past it, patient data is not
/// shown ([`DeviceSession::log_read`] fails) until the log has been uploaded.
pub const MAX_READ_LOG: usize = 100_000;

/// The `until` of the backfill a device asks for after forgetting a patient: up to its cursor,
/// whichever it is at the next hello.
const FORGOTTEN: u64 = u64::MAX;

/// What the device keeps across connections.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    pub cursor: Option<Cursor>,
    /// Feed positions above the cursor already held.
    pub received: BTreeSet<u64>,
    /// Backfills of earlier history under way: patient -> (progress, until).
    pub backfill: BTreeMap<PatientId, (u64, u64)>,
    /// Patients withdrawn from this device, to be forgotten once nothing of theirs waits for
    /// upload.
    pub purge: BTreeSet<PatientId>,
}

/// A local change the server refused: kept in the local document, visible, never resent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantinedChange {
    pub doc: DocumentId,
    pub change: ChangeHash,
    pub code: RefusalCode,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DeviceEvent {
    /// `received` changes so far in this connection; `remaining` still to come.
    Progress {
        received: u64,
        remaining: u32,
    },
    /// Changes from others were applied to `doc`.
    DocumentUpdated {
        doc: DocumentId,
    },
    /// A register of `doc` became conflicting.
    ConflictRaised {
        doc: DocumentId,
        register: String,
    },
    /// A safety flag appeared (or reopened) for a patient.
    FlagRaised {
        patient: PatientId,
        flag: String,
    },
    /// The server stored this many of our changes.
    UploadAcknowledged {
        changes: usize,
    },
    /// The server refused one of our changes; it is quarantined.
    ChangeRefused(QuarantinedChange),
    /// The server sent a change this device refuses (it is not stored).
    IncomingRefused {
        doc: DocumentId,
        change: ChangeHash,
        detail: String,
    },
    /// The user may no longer read these patients.
    AccessWithdrawn {
        patients: Vec<PatientId>,
    },
    /// A withdrawn patient's documents were removed from this device (after its pending
    /// changes were uploaded or refused).
    Purged {
        patient: PatientId,
    },
    /// Everything the server had for us has arrived and is stored.
    CaughtUp,
    /// The server told its time: this device's clock is `offset_ms` behind it (negative:
    /// ahead). `off` when that is more than [`wire::CLOCK_SKEW_LIMIT_MS`].
    ClockChecked {
        offset_ms: i64,
        off: bool,
    },
    /// The server holds more from this store's incarnation than the store does (it was
    /// restored from a backup, or copied): the store goes on as incarnation `incarnation`, and
    /// `records` records it had not had acknowledged will be written again once it is caught
    /// up (docs/protocol.md, "Incarnations").
    Reincarnated {
        incarnation: u32,
        records: usize,
    },
    /// Records taken back at a reincarnation were written again (those the server had sent
    /// back already are not counted).
    Rewritten {
        records: usize,
    },
    /// A record taken back at a reincarnation could not be written again: the model refuses it
    /// now.
    RewriteRefused {
        doc: DocumentId,
        detail: String,
    },
    Closed {
        reason: CloseReason,
        detail: String,
    },
}

#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Patients whose documents are needed first.
    pub priority: Vec<PatientId>,
    /// Close the connection if the server has said nothing for this long (ms) while the device
    /// waits for it. `None`: never.
    pub stall_after_ms: Option<i64>,
    /// Tell the server this device's clock, its store's incarnation and the proof of its
    /// cursor's feed history in the hello (protocol version 3's `Hello3`) and learn the offset
    /// from its answer. `false` speaks version 1 (a server not upgraded yet).
    pub tell_clock: bool,
    /// Send compressed frames (`compress.rs`), starting with the hello, unless this server
    /// refused one lately; and take them from the server. `false` speaks plain.
    pub compress: bool,
    /// Target bytes of one upload (raw changes, at least one change; at most
    /// [`wire::BATCH_BYTES`]): the unit of acknowledgement, so of what a cut can lose.
    pub upload_bytes: usize,
}

/// The default upload target: on a weak link a cut loses at most this much work (about 5 KB
/// on the wire, compressed), as the server's batches do the other way.
pub const UPLOAD_BYTES: usize = 32 * 1024;

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            priority: Vec::new(),
            stall_after_ms: Some(60_000),
            tell_clock: true,
            compress: true,
            upload_bytes: UPLOAD_BYTES,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Disconnected,
    Connected,
    Closed,
}

/// The device end of the protocol.
#[derive(Debug)]
pub struct DeviceSession {
    config: DeviceConfig,
    state: State,
    outbox: VecDeque<Vec<u8>>,
    events: VecDeque<DeviceEvent>,
    sync: SyncState,
    /// Uploads sent and not yet acknowledged, by number.
    uploads: BTreeMap<u32, Vec<(DocumentId, ChangeHash)>>,
    /// Local changes not yet sent in this connection.
    to_upload: VecDeque<(DocumentId, ChangeHash)>,
    sent: BTreeSet<(DocumentId, ChangeHash)>,
    next_upload: u32,
    /// Read-log entries sent and not yet acknowledged.
    read_log_in_flight: usize,
    /// The batch number the server must send next (a stream never skips or reorders).
    next_batch: u32,
    received_now: u64,
    caught_up: bool,
    am_states: BTreeMap<DocumentId, automerge::sync::State>,
    /// This store's device, found at a `Resync` (`fallback.rs`).
    own_device: Option<DeviceId>,
    last_heard: Option<Timestamp>,
    signer: Option<Signer>,
    /// Verified signatures relayed for the next batch, kept with its changes.
    relayed: Vec<StoredSignature>,
    /// Checks relayed signatures, each upload's root once (`signing/root.rs`).
    verifier: crate::signing::Verifier,
    /// This connection's uploads are signed once each, over their root: the server said it
    /// takes that (`signed.rs`).
    root_signing: bool,
    /// This connection's uploads that were signed over their root.
    root_signed: BTreeSet<u32>,
    /// A recovery under way (version 3).
    recovering: Option<recovery::Recovering>,
    /// Changes acknowledged on this connection, proven by its next caught-up batch
    /// (`unproven.rs`).
    acked_now: BTreeSet<(DocumentId, ChangeHash)>,
    /// Patients this connection's hello said were forgotten, forgotten once the server's
    /// answer shows it was not put back (`purge.rs`).
    forgetting: BTreeSet<PatientId>,
    /// Changes a reincarnation took back, sent again as they were: the upload's number and
    /// what it holds (`reincarnate.rs`).
    originals: Option<(u32, Vec<(DocumentId, ChangeHash)>)>,
    /// This connection's frames are compressed (the hello was); compressed frames are taken.
    compressing: bool,
    /// Nothing but a plain-frame refusal can have come from the server yet on this connection.
    heard_nothing: bool,
    /// The server refused the compressed hello: the next connection speaks plain.
    fell_back: bool,
    /// Open flags each batch found, for the next batch's "before" (`flag_memo.rs`).
    flag_memo: flag_memo::FlagMemo,
}

impl DeviceSession {
    pub fn new(config: DeviceConfig) -> Self {
        Self {
            config,
            state: State::Disconnected,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            sync: SyncState::default(),
            uploads: BTreeMap::new(),
            to_upload: VecDeque::new(),
            sent: BTreeSet::new(),
            next_upload: 0,
            read_log_in_flight: 0,
            next_batch: 0,
            received_now: 0,
            caught_up: false,
            am_states: BTreeMap::new(),
            own_device: None,
            last_heard: None,
            signer: None,
            relayed: Vec::new(),
            verifier: crate::signing::Verifier::new(),
            root_signing: false,
            root_signed: BTreeSet::new(),
            recovering: None,
            acked_now: BTreeSet::new(),
            forgetting: BTreeSet::new(),
            originals: None,
            compressing: false,
            heard_nothing: false,
            fell_back: false,
            flag_memo: flag_memo::FlagMemo::default(),
        }
    }

    pub fn set_priority(&mut self, priority: Vec<PatientId>) {
        self.config.priority = priority;
    }

    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// True once everything the server had at connect time (and since) has been stored.
    pub fn is_caught_up(&self) -> bool {
        self.caught_up
    }

    /// Our changes sent and not yet acknowledged in this connection.
    pub fn uploads_in_flight(&self) -> usize {
        self.uploads.values().map(Vec::len).sum()
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.outbox.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<DeviceEvent> {
        self.events.pop_front()
    }

    /// The durable sync state in `repo`'s store.
    pub fn load_state<S: Store>(repo: &Repo<S>) -> Result<SyncState, RepoError> {
        Ok(match repo.store().meta(STATE_KEY)? {
            Some(bytes) => postcard::from_bytes(&bytes).unwrap_or_default(),
            None => SyncState::default(),
        })
    }

    /// Local changes the server refused.
    pub fn quarantined<S: Store>(repo: &Repo<S>) -> Result<Vec<QuarantinedChange>, RepoError> {
        Ok(match repo.store().meta(QUARANTINE_KEY)? {
            Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            None => Vec::new(),
        })
    }

    /// A connection is up: queue the hello with the cursor and the first local changes.
    pub fn connect<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        now: Timestamp,
    ) -> Result<(), RepoError> {
        self.state = State::Connected;
        self.outbox.clear();
        self.uploads.clear();
        self.to_upload.clear();
        self.sent.clear();
        self.am_states.clear();
        self.recovering = None;
        self.next_upload = 0;
        self.next_batch = 0;
        self.received_now = 0;
        self.caught_up = false;
        self.last_heard = Some(now);
        self.sync = Self::load_state(repo)?;
        // Who is forgotten waits for the server's answer (`purge.rs`); the hello says so now.
        self.forgetting = self.purgeable(repo)?;
        self.relayed.clear();
        self.root_signing = Self::server_took_root_signatures(repo)?;
        self.root_signed.clear();
        self.acked_now.clear();
        self.originals = None;
        // A version-1 device (no `Hello3`) speaks as the builds before compressed frames did.
        self.compressing =
            self.config.compress && self.config.tell_clock && !Self::server_is_plain(repo, now)?;
        self.heard_nothing = true;
        self.fell_back = false;
        // Acknowledged changes no catch-up has proven yet go up first, then the pending ones.
        let mut to_upload: VecDeque<(DocumentId, ChangeHash)> =
            self.unproven_to_upload(repo)?.into();
        let resent: BTreeSet<(DocumentId, ChangeHash)> = to_upload.iter().cloned().collect();
        let pending: Vec<(DocumentId, ChangeHash)> = repo
            .pending()?
            .into_iter()
            .filter(|p| !resent.contains(p))
            .collect();
        // The most urgent first (administrations, then observations, then the rest).
        to_upload.extend(urgency::by_urgency(repo, pending)?);
        self.to_upload = to_upload;
        let (upload, signatures) = self.take_upload(repo)?;
        let told = self.as_told();
        let hello = Hello {
            cursor: told.cursor,
            // Within what the server takes: past it, the server sends again what the ranges
            // left out would have spared (applying a change held already changes nothing),
            // where a longer list would be refused, at every hello, for good. Batches of
            // priority patients first leave gaps, so a long catch-up cut short can leave many.
            received: ranges(&told.received)
                .into_iter()
                .take(crate::protocol::wire::MAX_LIST)
                .collect(),
            priority: self.config.priority.clone(),
            backfill: told
                .backfill
                .iter()
                .map(|(p, &(progress, until))| Backfill {
                    patient: p.clone(),
                    progress,
                    // A forgotten patient's backfill runs up to the cursor.
                    until: until.min(told.cursor.map_or(0, |c| c.position)),
                })
                // Within what the server takes (forgotten patients add one each).
                .take(crate::protocol::wire::MAX_LIST)
                .collect(),
            upload,
        };
        if self.config.tell_clock {
            let incarnation = repo.incarnation()?;
            let feed_proof = self.feed_proof(repo)?;
            // Compressed whatever its size: a compressed hello is what says this device
            // takes compressed frames.
            self.send_sealed(&DeviceMessage::Hello3 {
                hello,
                device_ms: now.0,
                incarnation: IncarnationClaim {
                    number: incarnation.number,
                    written: incarnation.written,
                    last: incarnation.last,
                },
                feed_proof,
                signatures,
            });
        } else {
            self.send(&DeviceMessage::Hello(hello));
        }
        // The rest of the upload window goes at once, behind the hello: on a slow link the
        // uploads are what takes the time, not waiting for the hello's answer.
        self.flush_uploads(repo)?;
        self.read_log_in_flight = 0;
        self.send_read_log(repo)
    }

    /// The server refused a compressed hello within [`compress::PLAIN_RETRY_MS`] before `now`.
    fn server_is_plain<S: Store>(repo: &Repo<S>, now: Timestamp) -> Result<bool, RepoError> {
        let Some(bytes) = repo.store().meta(PLAIN_SERVER_KEY)? else {
            return Ok(false);
        };
        let at: i64 = serde_json::from_slice(&bytes).unwrap_or(i64::MIN);
        Ok(now.0.saturating_sub(at) < compress::PLAIN_RETRY_MS && at <= now.0)
    }

    fn note_plain_server<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        now: Timestamp,
    ) -> Result<(), RepoError> {
        tracing::info!("the server does not take compressed frames: speaking plain to it");
        self.fell_back = true;
        let bytes = serde_json::to_vec(&now.0).unwrap_or_default();
        repo.store_mut().set_meta(PLAIN_SERVER_KEY, &bytes)?;
        Ok(())
    }

    /// This connection's frames are compressed.
    pub fn is_compressing(&self) -> bool {
        self.compressing
    }

    /// The server refused this connection's compressed hello (a server from before compressed
    /// frames): the next connection speaks plain, and the transport should connect again now.
    pub fn fell_back_to_plain(&self) -> bool {
        self.fell_back
    }

    /// The feed proof kept with the current cursor, if it was kept with this very cursor.
    fn feed_proof<S: Store>(&self, repo: &Repo<S>) -> Result<Option<FeedProof>, RepoError> {
        let Some(bytes) = repo.store().meta(PROOF_KEY)? else {
            return Ok(None);
        };
        Ok(postcard::from_bytes::<(Cursor, FeedProof)>(&bytes)
            .ok()
            .filter(|(c, _)| Some(*c) == self.sync.cursor)
            .map(|(_, p)| p))
    }

    /// The connection is gone. Unacknowledged uploads stay pending in the store.
    pub fn disconnected(&mut self) {
        if self.state == State::Connected {
            self.state = State::Disconnected;
        }
        self.outbox.clear();
        self.uploads.clear();
    }

    /// A local change was saved: upload it now if connected.
    pub fn local_change<S: Store>(&mut self, repo: &mut Repo<S>) -> Result<(), RepoError> {
        if self.state != State::Connected {
            return Ok(());
        }
        let queued: BTreeSet<(DocumentId, ChangeHash)> = self.to_upload.iter().cloned().collect();
        for p in repo.pending()? {
            if !self.sent.contains(&p) && !queued.contains(&p) {
                self.to_upload.push_back(p);
            }
        }
        self.flush_uploads(repo)
    }

    pub fn tick(&mut self, now: Timestamp) {
        if self.state != State::Connected {
            return;
        }
        let waiting = !self.caught_up || !self.uploads.is_empty();
        if let (Some(t), Some(limit)) = (self.last_heard, self.config.stall_after_ms) {
            if waiting && now.0 - t.0 > limit {
                self.close(CloseReason::Stalled, "no answer from the server in time");
            }
        }
    }

    /// This device's clock offset from the server's (ms to add to the device's time to get the
    /// server's), as last learned from the server; `None` if it never told.
    pub fn clock_offset<S: Store>(repo: &Repo<S>) -> Result<Option<i64>, RepoError> {
        Ok(match repo.store().meta(CLOCK_KEY)? {
            Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            None => None,
        })
    }

    /// The server's answer to the timed hello: the offset, taking the round trip's midpoint as
    /// the moment the server read its clock. Kept durably, so records written offline later
    /// carry it.
    fn on_time<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        device_ms: i64,
        server_ms: i64,
        now: Timestamp,
    ) -> Result<(), RepoError> {
        let midpoint = device_ms.saturating_add(now.0.saturating_sub(device_ms) / 2);
        let offset_ms = server_ms.saturating_sub(midpoint);
        let bytes = serde_json::to_vec(&Some(offset_ms)).unwrap_or_default();
        repo.store_mut().set_meta(CLOCK_KEY, &bytes)?;
        self.events.push_back(DeviceEvent::ClockChecked {
            offset_ms,
            off: offset_ms.unsigned_abs() > wire::CLOCK_SKEW_LIMIT_MS.unsigned_abs(),
        });
        Ok(())
    }

    fn close(&mut self, reason: CloseReason, detail: impl Into<String>) {
        self.state = State::Closed;
        self.outbox.clear();
        self.events.push_back(DeviceEvent::Closed {
            reason,
            detail: detail.into(),
        });
    }

    /// Sends `msg` compressed (even if that does not make it smaller) on a compressing
    /// connection.
    fn send_sealed(&mut self, msg: &DeviceMessage) {
        match wire::encode(msg) {
            Ok(bytes) if self.compressing => self.outbox.push_back(compress::seal(bytes)),
            Ok(bytes) => self.outbox.push_back(bytes),
            Err(e) => self.close(CloseReason::Internal, e.to_string()),
        }
    }

    fn send(&mut self, msg: &DeviceMessage) {
        match wire::encode(msg) {
            Ok(bytes) if self.compressing => self.outbox.push_back(compress::pack(bytes)),
            Ok(bytes) => self.outbox.push_back(bytes),
            Err(e) => self.close(CloseReason::Internal, e.to_string()),
        }
    }

    /// Handles one message from the server: [`DeviceSession::decode`], then
    /// [`DeviceSession::handle_message`].
    pub fn handle_bytes<S: Store>(&mut self, repo: &mut Repo<S>, bytes: &[u8], now: Timestamp) {
        if let Some(msg) = self.decode(bytes, now) {
            self.handle_message(repo, msg, now);
        }
    }

    /// Decodes one frame from the server, received at `now`. `None` if the session is not
    /// connected, or if the frame cannot be taken (the session closes then).
    pub fn decode(&mut self, bytes: &[u8], now: Timestamp) -> Option<ServerMessage> {
        if self.state != State::Connected {
            return None;
        }
        self.last_heard = Some(now);
        // A compressed frame is taken only on a connection that said it takes them.
        if compress::is_compressed(bytes) && !self.compressing {
            let e = WireError::UnsupportedVersion(compress::COMPRESSED_FRAME);
            self.close(e.close_reason(), e.to_string());
            return None;
        }
        match wire::decode(bytes) {
            Ok(m) => Some(m),
            Err(e) => {
                self.close(e.close_reason(), e.to_string());
                None
            }
        }
    }

    /// Handles one decoded message from the server (from [`DeviceSession::decode`]).
    pub fn handle_message<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        msg: ServerMessage,
        now: Timestamp,
    ) {
        if self.state != State::Connected {
            return;
        }
        let first = std::mem::take(&mut self.heard_nothing);
        if let ServerMessage::Close {
            reason: CloseReason::UnsupportedVersion,
            ..
        } = &msg
        {
            if first && self.compressing {
                // A server from before compressed frames: speak plain to it for a while.
                if let Err(e) = self.note_plain_server(repo, now) {
                    tracing::error!(error = %e, "keeping the server's frame support failed");
                }
            }
        }
        let result = match msg {
            // What an acknowledgement changes (the changes marked uploaded, the unproven list,
            // a quarantine, withdrawn forks) commits together, and no crash between "uploaded"
            // and "kept as unproven"; without an fsync of its own if nothing was refused
            // (`relaxed.rs`).
            ServerMessage::UploadAck { upload, refused } => {
                let relaxed = self.ack_commits_relaxed(upload, &refused);
                repo.grouped_as(relaxed, |repo| self.on_upload_ack(repo, upload, refused))
            }
            msg @ (ServerMessage::Batch { .. } | ServerMessage::Batch3 { .. }) => {
                self.on_batch_message(repo, msg)
            }
            ServerMessage::Recover { cursor, proof } => {
                // Put back: nothing is forgotten before the recovery has asked about it.
                self.forgetting.clear();
                self.on_recover(repo, cursor, proof)
            }
            ServerMessage::Reconcile {
                chunk,
                docs,
                lacks,
                again,
            } => self.on_reconcile(repo, chunk, docs, lacks, again),
            ServerMessage::Withdrawn { patients } => {
                for p in &patients {
                    self.sync.backfill.remove(p);
                    self.sync.purge.insert(p.clone());
                }
                let flushed = self.flush_withdrawn(repo, &patients);
                self.events
                    .push_back(DeviceEvent::AccessWithdrawn { patients });
                flushed
                    .and_then(|()| self.save_state(repo))
                    .and_then(|()| self.try_purge(repo))
            }
            ServerMessage::Resync { .. } => {
                self.forgetting.clear();
                self.on_resync(repo)
            }
            ServerMessage::ReadLogAck { count } => self.on_read_log_ack(repo, count),
            ServerMessage::AmSync { doc, message } => self.on_am_sync(repo, doc, &message),
            ServerMessage::Close { reason, detail } => {
                self.close(reason, detail);
                Ok(())
            }
            ServerMessage::Time {
                device_ms,
                server_ms,
            } => self.on_time(repo, device_ms, server_ms, now),
            ServerMessage::Signatures { keys, signatures } => {
                self.on_signatures(keys, signatures);
                Ok(())
            }
            ServerMessage::Orphans { docs } => self.on_orphans(repo, docs),
            ServerMessage::Reincarnate { incarnation } => {
                self.on_reincarnate(repo, incarnation, now)
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "device sync failed");
            self.close(CloseReason::Internal, e.to_string());
        }
    }

    fn save_state<S: Store>(&self, repo: &mut Repo<S>) -> Result<(), RepoError> {
        // Plain data always encodes; were it ever to fail, an empty state only means the next
        // connection fetches everything again (applying changes is idempotent).
        let bytes = postcard::to_stdvec(&self.sync).unwrap_or_default();
        repo.store_mut().set_meta(STATE_KEY, &bytes)?;
        Ok(())
    }
}

/// Sorted positions as inclusive ranges.
fn ranges(set: &BTreeSet<u64>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &n in set {
        match out.last_mut() {
            Some((_, end)) if *end + 1 == n => *end = n,
            _ => out.push((n, n)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_become_ranges() {
        let set: BTreeSet<u64> = [3, 4, 5, 9, 11, 12].into_iter().collect();
        assert_eq!(ranges(&set), vec![(3, 5), (9, 9), (11, 12)]);
        assert!(ranges(&BTreeSet::new()).is_empty());
    }

    /// A device holding more gaps above its cursor than a hello may list says hello within
    /// the list's bound (the lowest ranges), and the server takes it: before, its every hello
    /// was refused as too long, for good.
    #[test]
    fn a_hello_lists_at_most_what_the_server_takes_of_received_ranges() {
        use crate::protocol::wire::{self, DeviceMessage, MAX_LIST};
        use crate::store::MemoryStore;
        use crate::{Author, DeviceId, Role, UserId};

        let mut repo = Repo::new(MemoryStore::new());
        let epoch = repo.store().epoch().unwrap();
        // Every other position: one range each.
        let state = SyncState {
            cursor: Some(Cursor { epoch, position: 0 }),
            received: (1..=2 * MAX_LIST as u64).map(|n| 2 * n).collect(),
            ..SyncState::default()
        };
        repo.store_mut()
            .set_meta(STATE_KEY, &postcard::to_stdvec(&state).unwrap())
            .unwrap();
        let mut device = DeviceSession::new(DeviceConfig::default());
        device
            .connect(&mut repo, Timestamp(1_795_000_000_000))
            .unwrap();
        let bytes = device.poll_transmit().unwrap();
        let frame = crate::protocol::compress::unpack(&bytes).unwrap();
        let hello = match wire::decode::<DeviceMessage>(&frame).unwrap() {
            DeviceMessage::Hello(h) | DeviceMessage::Hello3 { hello: h, .. } => h,
            other => panic!("not a hello: {other:?}"),
        };
        assert_eq!(hello.received.len(), MAX_LIST);
        assert_eq!(hello.received.first(), Some(&(2, 2)));
        assert_eq!(
            hello.received.last(),
            Some(&(2 * MAX_LIST as u64, 2 * MAX_LIST as u64))
        );
        // The server takes it (it is past the server's head, so the server starts a
        // recovery), where it closed the connection before.
        let mut server = Repo::new(MemoryStore::new());
        let peer = crate::protocol::Peer {
            author: Author::new(
                UserId::new("anna").unwrap(),
                Role::Carer,
                DeviceId::new("phone-a").unwrap(),
            ),
        };
        let mut session =
            crate::protocol::ServerSession::new(peer, crate::protocol::ServerConfig::default());
        session.handle_bytes(&mut server, &NoAccess, &bytes, Timestamp(1_795_000_000_000));
        assert!(!session.is_closed());
    }

    /// Reads and writes nothing.
    struct NoAccess;

    impl crate::protocol::AccessPolicy for NoAccess {
        fn may_read(&self, _: &crate::protocol::Peer, _: &DocumentId) -> bool {
            false
        }
        fn may_write(&self, _: &crate::protocol::Peer, _: &DocumentId) -> bool {
            false
        }
        fn readable_patients(&self, _: &crate::protocol::Peer) -> Vec<crate::PatientId> {
            Vec::new()
        }
    }
}
