//! What the sync runtime tells the app: status, enrollment, the sync report, refusals and
//! device events.

use nara_client::{Enrollment, IncomingRefusal, RaisedConflict, RaisedFlag, Status, SyncReport};
use sync_core::protocol::wire::{CloseReason, RefusalCode};
use sync_core::protocol::{DeviceEvent, QuarantinedChange};
use sync_core::{Author, Role};

use super::count;

/// What the device is doing, for the app's status line.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum FfiStatus {
    Offline,
    Connecting,
    /// "syncing 12 of 40": changes received so far in this connection, and still to come.
    Syncing {
        received: u64,
        remaining: u32,
    },
    /// Everything the server had is stored here and nothing of ours is in flight.
    /// `clock_off_by_ms`: this device's clock is more than 5 minutes off the server's, by this
    /// much (ms to add to the device's time to get the server's): the app should say so.
    InSync {
        at_ms: i64,
        clock_off_by_ms: Option<i64>,
    },
    Error {
        reason: String,
    },
    /// The server revoked this device: its data and credential were erased (ms since the
    /// epoch). The app should delete the store key and offer to enroll again.
    Wiped {
        at_ms: i64,
    },
}

impl From<Status> for FfiStatus {
    fn from(s: Status) -> Self {
        match s {
            // The clock's offset: `Device.clock_off()` (the offline status stays a plain value).
            Status::Offline { .. } => FfiStatus::Offline,
            Status::Connecting => FfiStatus::Connecting,
            Status::Syncing {
                received,
                remaining,
            } => FfiStatus::Syncing {
                received,
                remaining,
            },
            Status::InSync {
                at,
                clock_off_by_ms,
            } => FfiStatus::InSync {
                at_ms: at.0,
                clock_off_by_ms,
            },
            Status::Error { reason } => FfiStatus::Error { reason },
            Status::Wiped { at } => FfiStatus::Wiped { at_ms: at.0 },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum FfiRole {
    Carer,
    Nurse,
    Admin,
    /// The person receiving care (their own "what matters to me" entries).
    Person,
}

impl From<Role> for FfiRole {
    fn from(r: Role) -> Self {
        match r {
            Role::Carer => FfiRole::Carer,
            Role::Nurse => FfiRole::Nurse,
            Role::Admin => FfiRole::Admin,
            Role::Person => FfiRole::Person,
        }
    }
}

/// Who wrote a record: user, role and device.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiAuthor {
    pub user: String,
    /// The directory's name of `user` ("Nina Berg"), if this device holds one (the server
    /// sends the names of the staff a user works with: `refresh_round`).
    pub name: Option<String>,
    pub role: FfiRole,
    pub device: String,
}

impl From<Author> for FfiAuthor {
    fn from(a: Author) -> Self {
        Self {
            name: super::name_of(&a.user),
            user: a.user.into(),
            role: a.role.into(),
            device: a.device.into(),
        }
    }
}

/// This device's enrollment (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiEnrollment {
    pub server: String,
    pub device: String,
    pub user: String,
    pub role: FfiRole,
    /// What the server is trusted by: `spki-sha256:<base64url>` (its key), `ca-sha256:<hex>`
    /// (a private CA) or, for devices enrolled by an older build until they next connect,
    /// `certificate-sha256:<hex>`.
    pub pin: String,
}

impl From<&Enrollment> for FfiEnrollment {
    fn from(e: &Enrollment) -> Self {
        Self {
            server: e.server.clone(),
            device: e.device.to_string(),
            user: e.user.to_string(),
            role: e.role.into(),
            pin: e.pin.describe(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum FfiRefusalCode {
    NotPermitted,
    Invalid,
    ForeignAuthor,
    MissingDependencies,
    Malformed,
    BadSignature,
}

impl From<RefusalCode> for FfiRefusalCode {
    fn from(c: RefusalCode) -> Self {
        match c {
            RefusalCode::NotPermitted => FfiRefusalCode::NotPermitted,
            RefusalCode::Invalid => FfiRefusalCode::Invalid,
            RefusalCode::ForeignAuthor => FfiRefusalCode::ForeignAuthor,
            RefusalCode::MissingDependencies => FfiRefusalCode::MissingDependencies,
            RefusalCode::Malformed => FfiRefusalCode::Malformed,
            RefusalCode::BadSignature => FfiRefusalCode::BadSignature,
        }
    }
}

/// One of our changes the server refused: kept locally, never resent.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiQuarantined {
    pub document: String,
    pub change: String,
    pub code: FfiRefusalCode,
    pub detail: String,
}

impl From<QuarantinedChange> for FfiQuarantined {
    fn from(q: QuarantinedChange) -> Self {
        Self {
            document: q.doc.to_string(),
            change: q.change.to_string(),
            code: q.code.into(),
            detail: q.detail,
        }
    }
}

/// A register that became conflicting during a sync.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiRaisedConflict {
    pub document: String,
    pub register: String,
}

impl From<RaisedConflict> for FfiRaisedConflict {
    fn from(c: RaisedConflict) -> Self {
        Self {
            document: c.document.to_string(),
            register: c.register,
        }
    }
}

/// A flag that appeared (or reopened) during a sync.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiRaisedFlag {
    pub patient: String,
    pub flag: String,
}

impl From<RaisedFlag> for FfiRaisedFlag {
    fn from(f: RaisedFlag) -> Self {
        Self {
            patient: f.patient.into(),
            flag: f.flag,
        }
    }
}

/// A change from the server that this device refused to store.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiIncomingRefusal {
    pub document: String,
    pub change: String,
    pub detail: String,
}

impl From<IncomingRefusal> for FfiIncomingRefusal {
    fn from(r: IncomingRefusal) -> Self {
        Self {
            document: r.document.to_string(),
            change: r.change.to_string(),
            detail: r.detail,
        }
    }
}

/// What one sync did.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiSyncReport {
    /// Changes from others received and stored.
    pub received: u64,
    /// Our changes the server acknowledged as stored.
    pub uploaded: u64,
    pub documents_updated: Vec<String>,
    pub conflicts_raised: Vec<FfiRaisedConflict>,
    pub flags_raised: Vec<FfiRaisedFlag>,
    /// Our changes the server refused (quarantined).
    pub refused: Vec<FfiQuarantined>,
    pub incoming_refused: Vec<FfiIncomingRefusal>,
    /// Patients this user may no longer read.
    pub withdrawn: Vec<String>,
    pub purged: Vec<String>,
    /// Local changes still waiting for upload after the sync.
    pub pending: u64,
    /// When the device got in sync during this sync, if it did.
    pub in_sync_at_ms: Option<i64>,
    /// This device's clock offset from the server's (ms to add to its time), if told.
    pub clock_offset_ms: Option<i64>,
    /// The clock is more than 5 minutes off the server's.
    pub clock_off: bool,
    /// The server found this device's data behind what it holds from it (a backup put back,
    /// or copied from another phone): it goes on as this incarnation.
    pub reincarnated: Option<u32>,
    /// Records written again after that (those the server sent back are not counted).
    pub rewritten: u64,
    /// Records taken back then that could not be written again, and why.
    pub rewrite_refused: Vec<FfiIncomingRefusal>,
}

impl From<SyncReport> for FfiSyncReport {
    fn from(r: SyncReport) -> Self {
        Self {
            received: r.received,
            uploaded: count(r.uploaded),
            documents_updated: r
                .documents_updated
                .iter()
                .map(ToString::to_string)
                .collect(),
            conflicts_raised: r.conflicts_raised.into_iter().map(Into::into).collect(),
            flags_raised: r.flags_raised.into_iter().map(Into::into).collect(),
            refused: r.refused.into_iter().map(Into::into).collect(),
            incoming_refused: r.incoming_refused.into_iter().map(Into::into).collect(),
            withdrawn: r.withdrawn.into_iter().map(Into::into).collect(),
            purged: r.purged.into_iter().map(Into::into).collect(),
            pending: count(r.pending),
            in_sync_at_ms: r.in_sync_at.map(|t| t.0),
            clock_offset_ms: r.clock_offset_ms,
            clock_off: r.clock_off,
            reincarnated: r.reincarnated,
            rewritten: count(r.rewritten),
            rewrite_refused: r.rewrite_refused.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum FfiCloseReason {
    UnsupportedVersion,
    MessageTooLarge,
    Malformed,
    ProtocolViolation,
    Stalled,
    Revoked,
    Shutdown,
    Internal,
    /// A newer connection of this device serves it now (the app may simply sync again).
    Superseded,
}

impl From<CloseReason> for FfiCloseReason {
    fn from(r: CloseReason) -> Self {
        match r {
            CloseReason::UnsupportedVersion => FfiCloseReason::UnsupportedVersion,
            CloseReason::MessageTooLarge => FfiCloseReason::MessageTooLarge,
            CloseReason::Malformed => FfiCloseReason::Malformed,
            CloseReason::ProtocolViolation => FfiCloseReason::ProtocolViolation,
            CloseReason::Stalled => FfiCloseReason::Stalled,
            CloseReason::Revoked => FfiCloseReason::Revoked,
            CloseReason::Shutdown => FfiCloseReason::Shutdown,
            CloseReason::Internal => FfiCloseReason::Internal,
            CloseReason::Superseded => FfiCloseReason::Superseded,
        }
    }
}

/// What the sync does, as it happens.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum FfiDeviceEvent {
    /// Changes received so far in this connection, and still to come.
    Progress {
        received: u64,
        remaining: u32,
    },
    /// Changes from others were stored in `document`: re-read what shows it.
    DocumentUpdated {
        document: String,
    },
    ConflictRaised {
        document: String,
        register: String,
    },
    FlagRaised {
        patient: String,
        flag: String,
    },
    /// The server stored this many of our changes.
    UploadAcknowledged {
        changes: u64,
    },
    /// The server refused one of our changes; it is quarantined.
    ChangeRefused {
        change: FfiQuarantined,
    },
    /// The server sent a change this device refused to store.
    IncomingRefused {
        document: String,
        change: String,
        detail: String,
    },
    /// The user may no longer read these patients.
    AccessWithdrawn {
        patients: Vec<String>,
    },
    /// A withdrawn person's data was removed from this device.
    Purged {
        patient: String,
    },
    /// Everything the server had for us has arrived and is stored.
    CaughtUp,
    Closed {
        reason: FfiCloseReason,
        detail: String,
    },
    /// The server told its time: this device's clock is `offset_ms` behind it (negative:
    /// ahead); `off` when more than 5 minutes.
    ClockChecked {
        offset_ms: i64,
        off: bool,
    },
    /// The server found this device's data behind what it holds from it (a backup put back,
    /// or copied from another phone): it goes on as incarnation `incarnation`, and `records`
    /// records it had not uploaded are written again once it is caught up.
    Reincarnated {
        incarnation: u32,
        records: u64,
    },
    /// Records taken back at a reincarnation were written again.
    Rewritten {
        records: u64,
    },
    /// A record taken back at a reincarnation could not be written again.
    RewriteRefused {
        document: String,
        detail: String,
    },
    /// The listener fell behind and `missed` events were dropped: re-read what is shown.
    Lagged {
        missed: u64,
    },
}

impl From<DeviceEvent> for FfiDeviceEvent {
    fn from(e: DeviceEvent) -> Self {
        match e {
            DeviceEvent::Progress {
                received,
                remaining,
            } => FfiDeviceEvent::Progress {
                received,
                remaining,
            },
            DeviceEvent::DocumentUpdated { doc } => FfiDeviceEvent::DocumentUpdated {
                document: doc.to_string(),
            },
            DeviceEvent::ConflictRaised { doc, register } => FfiDeviceEvent::ConflictRaised {
                document: doc.to_string(),
                register,
            },
            DeviceEvent::FlagRaised { patient, flag } => FfiDeviceEvent::FlagRaised {
                patient: patient.into(),
                flag,
            },
            DeviceEvent::UploadAcknowledged { changes } => FfiDeviceEvent::UploadAcknowledged {
                changes: count(changes),
            },
            DeviceEvent::ChangeRefused(q) => FfiDeviceEvent::ChangeRefused { change: q.into() },
            DeviceEvent::IncomingRefused {
                doc,
                change,
                detail,
            } => FfiDeviceEvent::IncomingRefused {
                document: doc.to_string(),
                change: change.to_string(),
                detail,
            },
            DeviceEvent::AccessWithdrawn { patients } => FfiDeviceEvent::AccessWithdrawn {
                patients: patients.into_iter().map(Into::into).collect(),
            },
            DeviceEvent::Purged { patient } => FfiDeviceEvent::Purged {
                patient: patient.into(),
            },
            DeviceEvent::CaughtUp => FfiDeviceEvent::CaughtUp,
            DeviceEvent::ClockChecked { offset_ms, off } => {
                FfiDeviceEvent::ClockChecked { offset_ms, off }
            }
            DeviceEvent::Closed { reason, detail } => FfiDeviceEvent::Closed {
                reason: reason.into(),
                detail,
            },
            DeviceEvent::Reincarnated {
                incarnation,
                records,
            } => FfiDeviceEvent::Reincarnated {
                incarnation,
                records: count(records),
            },
            DeviceEvent::Rewritten { records } => FfiDeviceEvent::Rewritten {
                records: count(records),
            },
            DeviceEvent::RewriteRefused { doc, detail } => FfiDeviceEvent::RewriteRefused {
                document: doc.to_string(),
                detail,
            },
        }
    }
}
