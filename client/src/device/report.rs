//! What the device runtime reports and is configured with: its status, a sync's report, the
//! clock and incarnation it knows, and the sync options.

use super::*;

/// What the device is doing, for the app's status line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Status {
    /// Not connected. `clock_off_by_ms` as in [`Status::InSync`].
    Offline {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clock_off_by_ms: Option<i64>,
    },
    Connecting,
    /// "syncing 12 of 40": `received` changes so far in this connection, `remaining` to come.
    Syncing {
        received: u64,
        remaining: u32,
    },
    /// Everything the server had is stored here and nothing of ours is in flight.
    /// `clock_off_by_ms`: this device's clock is more than 5 minutes off the server's, by this
    /// much (ms to add to the device's time to get the server's); the app should say so.
    InSync {
        at: Timestamp,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clock_off_by_ms: Option<i64>,
    },
    Error {
        reason: String,
    },
    /// The server revoked this device: its data and credential were erased at `at`.
    Wiped {
        at: Timestamp,
    },
}

/// Which incarnation of the device's store is in use (docs/protocol.md, "Incarnations").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IncarnationState {
    /// 0 until the server first found this store behind it.
    pub number: u32,
    /// Changes this store has written under it.
    pub written: u64,
    /// Records taken back at the last reincarnation, still to be written again (after the
    /// next complete catch-up).
    pub rewrites_waiting: usize,
}

/// This device's clock against the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ClockState {
    /// Ms to add to this device's time to get the server's; `None` until a server told it.
    pub offset_ms: Option<i64>,
    /// More than 5 minutes off: times this device records are not to be trusted.
    pub off: bool,
}

/// Timings of the sync connection.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// `sync_once` ends once caught up, with nothing in flight, and nothing arriving for this long.
    pub quiet_for: Duration,
    /// Deadline for TCP connect + TLS + WebSocket upgrade. With early frames the upgrade's
    /// answer is read after the hello is written, so waiting for it falls under
    /// `stall_after_ms` (the server silent) instead.
    pub connect_timeout: Duration,
    /// Reconnection backoff in watch mode: first delay and cap (jittered).
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How often watch mode looks for changes written to the store by another process, ticks
    /// the session and checks the connection is alive.
    pub poll_every: Duration,
    /// An idle watch connection is pinged after this long without a message; without any
    /// answer for as long again it is considered dead.
    pub ping_after: Duration,
    /// Patients whose documents the server should send first.
    pub priority: Vec<PatientId>,
    /// The session closes if the server says nothing for this long while it waits (ms).
    pub stall_after_ms: Option<i64>,
    /// Encrypts the device store at rest (SQLCipher) with this key, which the host app keeps in
    /// the platform keystore. `None`: a plain store (the CLI, tests).
    pub store_key: Option<EncryptionKey>,
    /// The offline lease: after this long without being in sync with the server, patient data
    /// is no longer shown ([`Device::check_lease`]); sync, and so upload, still work.
    /// `None`: no lease. Default: [`DEFAULT_OFFLINE_LEASE`].
    pub offline_lease: Option<Duration>,
    /// This device's clock: [`now`] unless a host (or a test of a phone whose clock is off)
    /// says otherwise. The runtime reads time only through it.
    pub clock: fn() -> Timestamp,
    /// Compress what goes over the link (zstd frames, negotiated by the hello; a server that
    /// does not take them is spoken to plain). `false`: plain frames, as builds before them.
    pub compress: bool,
    /// Target bytes of changes in one upload: the unit the server acknowledges, so what a cut
    /// can cost (`sync_core::protocol::UPLOAD_BYTES` by default).
    pub upload_bytes: usize,
    /// Early frames: write the hello and the first uploads right behind the WebSocket upgrade
    /// request, without waiting a round trip for the server's answer (docs/protocol.md, "Early
    /// frames"). `false`: wait for the upgrade first, for a path whose proxy drops bytes that
    /// follow a request.
    pub early_frames: bool,
}

/// The offline lease unless set otherwise: 72 hours (a long weekend without signal).
pub const DEFAULT_OFFLINE_LEASE: Duration = Duration::from_secs(72 * 3600);

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            quiet_for: Duration::from_millis(300),
            connect_timeout: Duration::from_secs(20),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            poll_every: Duration::from_secs(1),
            ping_after: Duration::from_secs(30),
            priority: Vec::new(),
            stall_after_ms: Some(60_000),
            store_key: None,
            offline_lease: Some(DEFAULT_OFFLINE_LEASE),
            clock: now,
            compress: true,
            upload_bytes: sync_core::protocol::UPLOAD_BYTES,
            early_frames: true,
        }
    }
}

/// A register that became conflicting during a sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RaisedConflict {
    pub document: DocumentId,
    pub register: String,
}

/// A flag that appeared (or reopened) during a sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RaisedFlag {
    pub patient: PatientId,
    pub flag: String,
}

/// A change from the server that this device refused to store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IncomingRefusal {
    pub document: DocumentId,
    pub change: ChangeHash,
    pub detail: String,
}

/// What one sync (or a watch session so far) did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SyncReport {
    /// Changes from others received and stored.
    pub received: u64,
    /// Our changes the server acknowledged as stored.
    pub uploaded: usize,
    pub documents_updated: BTreeSet<DocumentId>,
    pub conflicts_raised: Vec<RaisedConflict>,
    pub flags_raised: Vec<RaisedFlag>,
    /// Our changes the server refused (now quarantined: kept locally, never resent).
    pub refused: Vec<QuarantinedChange>,
    pub incoming_refused: Vec<IncomingRefusal>,
    /// Patients this user may no longer read.
    pub withdrawn: Vec<PatientId>,
    /// Withdrawn patients whose documents were removed from the device (after their pending
    /// changes were uploaded).
    pub purged: Vec<PatientId>,
    /// Local changes still waiting for upload after the sync.
    pub pending: usize,
    /// When the device was last in sync, if it was during this sync.
    pub in_sync_at: Option<Timestamp>,
    /// This device's clock offset from the server's (ms to add to the device's time), if the
    /// server told it during this sync.
    pub clock_offset_ms: Option<i64>,
    /// The clock is more than 5 minutes off the server's.
    pub clock_off: bool,
    /// The server found this device's store behind what it holds from it (restored from a
    /// backup, or copied to another phone): the store went on as this incarnation, and the
    /// records it had not had acknowledged are written again once it is caught up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reincarnated: Option<u32>,
    /// Records written again after a reincarnation (those the server sent back are not).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rewritten: usize,
    /// Records taken back at a reincarnation that the model refused to write again, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rewrite_refused: Vec<IncomingRefusal>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl SyncReport {
    pub(super) fn absorb(&mut self, event: &DeviceEvent) {
        match event {
            DeviceEvent::Progress { received, .. } => {
                // Per connection: a report spanning reconnections adds them up.
                self.received = self.received.max(*received);
            }
            DeviceEvent::DocumentUpdated { doc } => {
                self.documents_updated.insert(doc.clone());
            }
            DeviceEvent::ConflictRaised { doc, register } => {
                self.conflicts_raised.push(RaisedConflict {
                    document: doc.clone(),
                    register: register.clone(),
                })
            }
            DeviceEvent::FlagRaised { patient, flag } => self.flags_raised.push(RaisedFlag {
                patient: patient.clone(),
                flag: flag.clone(),
            }),
            DeviceEvent::UploadAcknowledged { changes } => self.uploaded += changes,
            DeviceEvent::ChangeRefused(q) => self.refused.push(q.clone()),
            DeviceEvent::IncomingRefused {
                doc,
                change,
                detail,
            } => self.incoming_refused.push(IncomingRefusal {
                document: doc.clone(),
                change: *change,
                detail: detail.clone(),
            }),
            DeviceEvent::AccessWithdrawn { patients } => {
                self.withdrawn.extend(patients.iter().cloned())
            }
            DeviceEvent::Purged { patient } => self.purged.push(patient.clone()),
            DeviceEvent::ClockChecked { offset_ms, off } => {
                self.clock_offset_ms = Some(*offset_ms);
                self.clock_off = *off;
            }
            DeviceEvent::Reincarnated { incarnation, .. } => self.reincarnated = Some(*incarnation),
            DeviceEvent::Rewritten { records } => self.rewritten += records,
            DeviceEvent::RewriteRefused { doc, detail } => {
                self.rewrite_refused.push(IncomingRefusal {
                    document: doc.clone(),
                    change: ChangeHash([0; 32]),
                    detail: detail.clone(),
                })
            }
            DeviceEvent::CaughtUp | DeviceEvent::Closed { .. } => {}
        }
    }
}
