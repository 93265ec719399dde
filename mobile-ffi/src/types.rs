//! FFI records and enums: separate from the core's types (which carry validated ids and are free
//! to change), each with a `From` impl. Identifiers cross as strings, times as milliseconds
//! since the Unix epoch.

use nara_client::care::{
    AckShown, Administered, ConflictShown, EntityShown, FlagShown, GoalWritten, JournalEntry,
    OrderInput, OrderWritten, Overview, PatientSummary, Recorded, RegisterShown, RevisionShown,
    SlotShown, SlotView,
};
use nara_client::{Enrollment, IncomingRefusal, RaisedConflict, RaisedFlag, Status, SyncReport};
use sync_core::model::{
    AdministrationOutcome, EventBody, MedicationOrder, ObservationCode, RegisterValue,
};
use sync_core::protocol::wire::{CloseReason, RefusalCode};
use sync_core::protocol::{DeviceEvent, QuarantinedChange};
use sync_core::{Author, Role};

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
}

impl From<Role> for FfiRole {
    fn from(r: Role) -> Self {
        match r {
            Role::Carer => FfiRole::Carer,
            Role::Nurse => FfiRole::Nurse,
            Role::Admin => FfiRole::Admin,
        }
    }
}

/// Who wrote a record: user, role and device.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiAuthor {
    pub user: String,
    pub role: FfiRole,
    pub device: String,
}

impl From<Author> for FfiAuthor {
    fn from(a: Author) -> Self {
        Self {
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
}

impl From<RefusalCode> for FfiRefusalCode {
    fn from(c: RefusalCode) -> Self {
        match c {
            RefusalCode::NotPermitted => FfiRefusalCode::NotPermitted,
            RefusalCode::Invalid => FfiRefusalCode::Invalid,
            RefusalCode::ForeignAuthor => FfiRefusalCode::ForeignAuthor,
            RefusalCode::MissingDependencies => FfiRefusalCode::MissingDependencies,
            RefusalCode::Malformed => FfiRefusalCode::Malformed,
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

/// A `usize` count as the FFI's `u64` (lossless on every platform Rust supports).
pub(crate) fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
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

/// A person with documents on this device.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiPatient {
    pub patient: String,
    pub display_name: Option<String>,
    pub documents: u64,
    pub conflicts: u64,
    pub open_flags: u64,
}

impl From<PatientSummary> for FfiPatient {
    fn from(p: PatientSummary) -> Self {
        Self {
            patient: p.patient.into(),
            display_name: p.display_name,
            documents: count(p.documents),
            conflicts: count(p.conflicts),
            open_flags: count(p.open_flags),
        }
    }
}

/// A written record and the document it went in.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiRecorded {
    pub document: String,
    pub record: String,
}

impl From<Recorded> for FfiRecorded {
    fn from(r: Recorded) -> Self {
        Self {
            document: r.document.to_string(),
            record: r.record.into(),
        }
    }
}

/// The outcome of a medication slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum FfiOutcome {
    Given,
    NotGiven,
    /// Handed over for self-administration.
    SelfAdministered,
}

impl From<FfiOutcome> for AdministrationOutcome {
    fn from(o: FfiOutcome) -> Self {
        match o {
            FfiOutcome::Given => AdministrationOutcome::Given,
            FfiOutcome::NotGiven => AdministrationOutcome::NotGiven,
            FfiOutcome::SelfAdministered => AdministrationOutcome::SelfAdministered,
        }
    }
}

/// A medication slot's status.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum FfiSlotStatus {
    Open,
    Given {
        administration: String,
        by: FfiAuthor,
    },
    NotGiven {
        administration: String,
        reason: Option<String>,
    },
    SelfAdministered {
        administration: String,
    },
    PossibleDoubleDose {
        administrations: Vec<String>,
    },
}

impl From<SlotView> for FfiSlotStatus {
    fn from(s: SlotView) -> Self {
        match s {
            SlotView::Open => FfiSlotStatus::Open,
            SlotView::Given { administration, by } => FfiSlotStatus::Given {
                administration: administration.into(),
                by: by.into(),
            },
            SlotView::NotGiven {
                administration,
                reason,
            } => FfiSlotStatus::NotGiven {
                administration: administration.into(),
                reason,
            },
            SlotView::SelfAdministered { administration } => FfiSlotStatus::SelfAdministered {
                administration: administration.into(),
            },
            SlotView::PossibleDoubleDose { administrations } => FfiSlotStatus::PossibleDoubleDose {
                administrations: administrations.into_iter().map(Into::into).collect(),
            },
        }
    }
}

/// An administration recorded against an order's current revision.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiAdministered {
    pub document: String,
    pub record: String,
    pub order: String,
    pub order_revision: String,
    pub order_version: u32,
    pub slot: String,
    /// The slot's status after this record, as this device sees it now.
    pub slot_status: FfiSlotStatus,
}

impl From<Administered> for FfiAdministered {
    fn from(a: Administered) -> Self {
        Self {
            document: a.document.to_string(),
            record: a.record.into(),
            order: a.order.into(),
            order_revision: a.order_revision.into(),
            order_version: a.order_version,
            slot: a.slot,
            slot_status: a.slot_status.into(),
        }
    }
}

/// A medication order's value.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiMedicationOrder {
    pub drug: String,
    pub strength: String,
    pub dose: String,
    pub route: String,
    /// Local times of day, `HH:MM`, one slot each.
    pub times: Vec<String>,
    /// First day, `YYYY-MM-DD`.
    pub start: String,
    /// Last day, `YYYY-MM-DD`, if the order ends.
    pub stop: Option<String>,
    pub delegated: bool,
    pub valid_from_ms: i64,
}

impl From<MedicationOrder> for FfiMedicationOrder {
    fn from(o: MedicationOrder) -> Self {
        Self {
            drug: o.drug,
            strength: o.strength,
            dose: o.dose,
            route: o.route,
            times: o.times,
            start: o.start,
            stop: o.stop,
            delegated: o.delegated,
            valid_from_ms: o.valid_from.0,
        }
    }
}

/// Fields of a medication order to write; `None` keeps the current (or resolved-from) value.
/// A new order needs every field but `stop` and `delegated`.
#[derive(Debug, Clone, Default, PartialEq, Eq, uniffi::Record)]
pub struct FfiOrderInput {
    #[uniffi(default)]
    pub drug: Option<String>,
    #[uniffi(default)]
    pub strength: Option<String>,
    #[uniffi(default)]
    pub dose: Option<String>,
    #[uniffi(default)]
    pub route: Option<String>,
    #[uniffi(default)]
    pub times: Option<Vec<String>>,
    #[uniffi(default)]
    pub start: Option<String>,
    #[uniffi(default)]
    pub stop: Option<String>,
    #[uniffi(default)]
    pub delegated: Option<bool>,
}

impl From<FfiOrderInput> for OrderInput {
    fn from(i: FfiOrderInput) -> Self {
        Self {
            drug: i.drug,
            strength: i.strength,
            dose: i.dose,
            route: i.route,
            times: i.times,
            start: i.start,
            stop: i.stop,
            delegated: i.delegated,
        }
    }
}

/// A written order revision.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiOrderWritten {
    pub document: String,
    pub order: String,
    pub revision: String,
    pub version: u32,
    /// True if this created the order.
    pub created: bool,
    /// The revisions this one supersedes.
    pub supersedes: Vec<String>,
    pub value: FfiMedicationOrder,
}

impl From<OrderWritten> for FfiOrderWritten {
    fn from(w: OrderWritten) -> Self {
        Self {
            document: w.document.to_string(),
            order: w.order.into(),
            revision: w.revision.into(),
            version: w.version,
            created: w.created,
            supersedes: w.supersedes.into_iter().map(Into::into).collect(),
            value: w.value.into(),
        }
    }
}

/// The value of one revision. Orders and display names are typed; the other kinds of value
/// cross as their JSON form (`kind` is its `type` tag) until an app needs them typed.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum FfiRegisterValue {
    Order { order: FfiMedicationOrder },
    DisplayName { name: String },
    Other { kind: String, json: String },
}

impl From<RegisterValue> for FfiRegisterValue {
    fn from(v: RegisterValue) -> Self {
        match v {
            RegisterValue::Order(order) => FfiRegisterValue::Order {
                order: order.into(),
            },
            RegisterValue::DisplayName { name } => FfiRegisterValue::DisplayName { name },
            other => {
                let json = serde_json::to_value(&other).unwrap_or_default();
                FfiRegisterValue::Other {
                    kind: json["type"].as_str().unwrap_or_default().to_owned(),
                    json: json.to_string(),
                }
            }
        }
    }
}

/// One revision of a register.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiRevision {
    pub revision: String,
    pub version: u32,
    pub author: FfiAuthor,
    pub at_ms: i64,
    pub value: FfiRegisterValue,
}

impl From<RevisionShown> for FfiRevision {
    fn from(r: RevisionShown) -> Self {
        Self {
            revision: r.revision.into(),
            version: r.version,
            author: r.author.into(),
            at_ms: r.at.0,
            value: r.value.into(),
        }
    }
}

/// A register in conflict, with every candidate value; a nurse resolves it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiConflict {
    pub patient: String,
    pub document: String,
    pub register: String,
    pub candidates: Vec<FfiRevision>,
}

impl From<ConflictShown> for FfiConflict {
    fn from(c: ConflictShown) -> Self {
        Self {
            patient: c.patient.into(),
            document: c.document.to_string(),
            register: c.register,
            candidates: c.candidates.into_iter().map(Into::into).collect(),
        }
    }
}

/// A nurse's acknowledgement of a flag.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiAck {
    pub event: String,
    pub author: FfiAuthor,
    pub at_ms: i64,
    pub comment: Option<String>,
    /// The evidence this acknowledgement covers; later evidence reopens the flag.
    pub covers: Vec<String>,
}

impl From<AckShown> for FfiAck {
    fn from(a: AckShown) -> Self {
        Self {
            event: a.event.into(),
            author: a.author.into(),
            at_ms: a.at.0,
            comment: a.comment,
            covers: a.covers.into_iter().map(Into::into).collect(),
        }
    }
}

/// A safety flag, open or acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiFlag {
    pub patient: String,
    pub id: String,
    /// `double-dose`, `superseded-order`, or `time-uncertain` (review: only a clock known to
    /// be off could tell whether the dose was on a superseded order).
    pub kind: String,
    pub order: String,
    pub slot: Option<String>,
    pub open: bool,
    pub document: String,
    pub evidence: Vec<String>,
    pub acknowledgements: Vec<FfiAck>,
}

impl From<FlagShown> for FfiFlag {
    fn from(f: FlagShown) -> Self {
        Self {
            patient: f.patient.into(),
            id: f.id,
            kind: f.kind.to_owned(),
            order: f.order.into(),
            slot: f.slot,
            open: f.open,
            document: f.document.to_string(),
            evidence: f.evidence.into_iter().map(Into::into).collect(),
            acknowledgements: f.acknowledgements.into_iter().map(Into::into).collect(),
        }
    }
}

/// A goal's text written.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiGoalWritten {
    pub document: String,
    pub goal: String,
    pub created: bool,
    pub text: String,
}

impl From<GoalWritten> for FfiGoalWritten {
    fn from(g: GoalWritten) -> Self {
        Self {
            document: g.document.to_string(),
            goal: g.goal.into(),
            created: g.created,
            text: g.text,
        }
    }
}

/// A vital sign or measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum FfiObservationCode {
    BodyWeight,
    BloodPressureSystolic,
    BloodPressureDiastolic,
    BodyTemperature,
    HeartRate,
    OxygenSaturation,
    BloodGlucose,
    Pain,
}

impl From<FfiObservationCode> for ObservationCode {
    fn from(c: FfiObservationCode) -> Self {
        match c {
            FfiObservationCode::BodyWeight => ObservationCode::BodyWeight,
            FfiObservationCode::BloodPressureSystolic => ObservationCode::BloodPressureSystolic,
            FfiObservationCode::BloodPressureDiastolic => ObservationCode::BloodPressureDiastolic,
            FfiObservationCode::BodyTemperature => ObservationCode::BodyTemperature,
            FfiObservationCode::HeartRate => ObservationCode::HeartRate,
            FfiObservationCode::OxygenSaturation => ObservationCode::OxygenSaturation,
            FfiObservationCode::BloodGlucose => ObservationCode::BloodGlucose,
            FfiObservationCode::Pain => ObservationCode::Pain,
        }
    }
}

impl From<ObservationCode> for FfiObservationCode {
    fn from(c: ObservationCode) -> Self {
        match c {
            ObservationCode::BodyWeight => FfiObservationCode::BodyWeight,
            ObservationCode::BloodPressureSystolic => FfiObservationCode::BloodPressureSystolic,
            ObservationCode::BloodPressureDiastolic => FfiObservationCode::BloodPressureDiastolic,
            ObservationCode::BodyTemperature => FfiObservationCode::BodyTemperature,
            ObservationCode::HeartRate => FfiObservationCode::HeartRate,
            ObservationCode::OxygenSaturation => FfiObservationCode::OxygenSaturation,
            ObservationCode::BloodGlucose => FfiObservationCode::BloodGlucose,
            ObservationCode::Pain => FfiObservationCode::Pain,
        }
    }
}

impl From<AdministrationOutcome> for FfiOutcome {
    fn from(o: AdministrationOutcome) -> Self {
        match o {
            AdministrationOutcome::Given => FfiOutcome::Given,
            AdministrationOutcome::NotGiven => FfiOutcome::NotGiven,
            AdministrationOutcome::SelfAdministered => FfiOutcome::SelfAdministered,
        }
    }
}

/// What a journal or administration-log event records. Notes, observations and
/// administrations are typed; the other kinds cross as their JSON form (`kind` is its `type`
/// tag) until an app needs them typed.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum FfiEventBody {
    Note {
        body: String,
        /// The record this note corrects, as `document#record`.
        corrects: Option<String>,
    },
    Observation {
        code: FfiObservationCode,
        value: f64,
        unit: String,
        occurred_at_ms: i64,
    },
    Administration {
        order: String,
        order_revision: String,
        slot: String,
        outcome: FfiOutcome,
        reason: Option<String>,
        occurred_at_ms: i64,
    },
    Other {
        kind: String,
        json: String,
    },
}

impl From<EventBody> for FfiEventBody {
    fn from(b: EventBody) -> Self {
        match b {
            EventBody::Note { body, corrects } => FfiEventBody::Note {
                body,
                corrects: corrects.map(|r| format!("{}#{}", r.document, r.record)),
            },
            EventBody::Observation {
                code,
                value,
                unit,
                occurred_at,
            } => FfiEventBody::Observation {
                code: code.into(),
                value,
                unit,
                occurred_at_ms: occurred_at.0,
            },
            EventBody::Administration {
                order,
                order_revision,
                slot,
                outcome,
                reason,
                occurred_at,
            } => FfiEventBody::Administration {
                order: order.into(),
                order_revision: order_revision.into(),
                slot,
                outcome: outcome.into(),
                reason,
                occurred_at_ms: occurred_at.0,
            },
            other => {
                let json = serde_json::to_value(&other).unwrap_or_default();
                FfiEventBody::Other {
                    kind: json["type"].as_str().unwrap_or_default().to_owned(),
                    json: json.to_string(),
                }
            }
        }
    }
}

/// A journal entry.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct FfiJournalEntry {
    pub document: String,
    pub id: String,
    pub author: FfiAuthor,
    pub at_ms: i64,
    pub body: FfiEventBody,
    pub entered_in_error: bool,
}

impl From<JournalEntry> for FfiJournalEntry {
    fn from(e: JournalEntry) -> Self {
        Self {
            document: e.document.to_string(),
            id: e.id.into(),
            author: e.author.into(),
            at_ms: e.at.0,
            body: e.body.into(),
            entered_in_error: e.entered_in_error,
        }
    }
}

/// A register's state: unset, one current value, or values in conflict.
#[allow(clippy::large_enum_variant)] // a read result, lowered across the FFI at once
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum FfiRegisterState {
    Unset,
    Value { revision: FfiRevision },
    Conflict { candidates: Vec<FfiRevision> },
}

impl From<RegisterShown> for FfiRegisterState {
    fn from(s: RegisterShown) -> Self {
        match s {
            RegisterShown::Unset => FfiRegisterState::Unset,
            RegisterShown::Value(v) => FfiRegisterState::Value { revision: v.into() },
            RegisterShown::Conflict { candidates } => FfiRegisterState::Conflict {
                candidates: candidates.into_iter().map(Into::into).collect(),
            },
        }
    }
}

/// An allergy, risk, goal, intervention or order, with its free text.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiEntity {
    pub id: String,
    pub value: FfiRegisterState,
    pub text: Option<String>,
}

impl From<EntityShown> for FfiEntity {
    fn from(e: EntityShown) -> Self {
        Self {
            id: e.id.into(),
            value: e.value.into(),
            text: e.text,
        }
    }
}

/// One of today's medication slots.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiSlot {
    pub order: String,
    pub slot: String,
    pub status: FfiSlotStatus,
}

impl From<SlotShown> for FfiSlot {
    fn from(s: SlotShown) -> Self {
        Self {
            order: s.order.into(),
            slot: s.slot,
            status: s.status.into(),
        }
    }
}

/// A person's record as a care worker sees it today.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct FfiOverview {
    pub patient: String,
    pub display_name: Option<String>,
    pub resuscitation: FfiRegisterState,
    pub allergies: Vec<FfiEntity>,
    pub risks: Vec<FfiEntity>,
    pub goals: Vec<FfiEntity>,
    pub interventions: Vec<FfiEntity>,
    pub orders: Vec<FfiEntity>,
    /// Today's medication slots and their status.
    pub today: Vec<FfiSlot>,
    /// The latest journal entries (this month and last), newest first.
    pub journal: Vec<FfiJournalEntry>,
    pub conflicts: Vec<FfiConflict>,
    pub open_flags: Vec<FfiFlag>,
}

fn all<T, U: From<T>>(v: Vec<T>) -> Vec<U> {
    v.into_iter().map(Into::into).collect()
}

impl From<Overview> for FfiOverview {
    fn from(o: Overview) -> Self {
        Self {
            patient: o.patient.into(),
            display_name: o.display_name,
            resuscitation: o.resuscitation.into(),
            allergies: all(o.allergies),
            risks: all(o.risks),
            goals: all(o.goals),
            interventions: all(o.interventions),
            orders: all(o.orders),
            today: all(o.today),
            journal: all(o.journal),
            conflicts: all(o.conflicts),
            open_flags: all(o.open_flags),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sync_core::{DeviceId, PatientId, RecordId, Timestamp, UserId};

    fn author() -> Author {
        Author::new(
            UserId::new("anna").unwrap(),
            Role::Carer,
            DeviceId::new("d1").unwrap(),
        )
    }

    #[test]
    fn statuses() {
        assert_eq!(
            FfiStatus::from(Status::Offline {
                clock_off_by_ms: None
            }),
            FfiStatus::Offline
        );
        assert_eq!(
            FfiStatus::from(Status::Syncing {
                received: 12,
                remaining: 28
            }),
            FfiStatus::Syncing {
                received: 12,
                remaining: 28
            }
        );
        assert_eq!(
            FfiStatus::from(Status::InSync {
                at: Timestamp(7),
                clock_off_by_ms: None,
            }),
            FfiStatus::InSync {
                at_ms: 7,
                clock_off_by_ms: None,
            }
        );
        assert_eq!(
            FfiStatus::from(Status::Error { reason: "x".into() }),
            FfiStatus::Error { reason: "x".into() }
        );
    }

    #[test]
    fn sync_reports() {
        let p1 = PatientId::new("p1").unwrap();
        let report = SyncReport {
            received: 3,
            uploaded: 2,
            flags_raised: vec![RaisedFlag {
                patient: p1.clone(),
                flag: "f".into(),
            }],
            withdrawn: vec![p1],
            pending: 1,
            in_sync_at: Some(Timestamp(9)),
            ..Default::default()
        };
        let r = FfiSyncReport::from(report);
        assert_eq!((r.received, r.uploaded, r.pending), (3, 2, 1));
        assert_eq!(r.withdrawn, vec!["p1".to_owned()]);
        assert_eq!(r.flags_raised[0].patient, "p1");
        assert_eq!(r.in_sync_at_ms, Some(9));
    }

    #[test]
    fn journal_bodies() {
        let note = FfiEventBody::from(EventBody::Note {
            body: "Slept well.".into(),
            corrects: None,
        });
        assert_eq!(
            note,
            FfiEventBody::Note {
                body: "Slept well.".into(),
                corrects: None
            }
        );
        match FfiEventBody::from(EventBody::EnteredInError {
            target: RecordId::new("n1").unwrap(),
            reason: "wrong person".into(),
        }) {
            FfiEventBody::Other { kind, json } => {
                assert_eq!(kind, "entered-in-error");
                assert!(json.contains("wrong person"), "{json}");
            }
            other => panic!("{other:?}"),
        }
        for code in [FfiObservationCode::Pain, FfiObservationCode::HeartRate] {
            assert_eq!(FfiObservationCode::from(ObservationCode::from(code)), code);
        }
    }

    #[test]
    fn events() {
        let p1 = PatientId::new("p1").unwrap();
        assert_eq!(
            FfiDeviceEvent::from(DeviceEvent::AccessWithdrawn { patients: vec![p1] }),
            FfiDeviceEvent::AccessWithdrawn {
                patients: vec!["p1".into()]
            }
        );
        assert_eq!(
            FfiDeviceEvent::from(DeviceEvent::Closed {
                reason: CloseReason::Revoked,
                detail: "bye".into()
            }),
            FfiDeviceEvent::Closed {
                reason: FfiCloseReason::Revoked,
                detail: "bye".into()
            }
        );
    }

    #[test]
    fn slots_authors_and_outcomes() {
        let s = FfiSlotStatus::from(SlotView::Given {
            administration: RecordId::new("a1").unwrap(),
            by: author(),
        });
        assert_eq!(
            s,
            FfiSlotStatus::Given {
                administration: "a1".into(),
                by: FfiAuthor {
                    user: "anna".into(),
                    role: FfiRole::Carer,
                    device: "d1".into()
                }
            }
        );
        assert_eq!(
            AdministrationOutcome::from(FfiOutcome::NotGiven),
            AdministrationOutcome::NotGiven
        );
    }

    #[test]
    fn order_inputs_and_values() {
        let input = OrderInput::from(FfiOrderInput {
            dose: Some("2 tablets".into()),
            ..Default::default()
        });
        assert_eq!(input.dose.as_deref(), Some("2 tablets"));
        assert_eq!(input.drug, None);
        let order = MedicationOrder {
            drug: "Metoprolol".into(),
            strength: "50 mg".into(),
            dose: "1 tablet".into(),
            route: "oral".into(),
            times: vec!["08:00".into()],
            start: "2026-11-01".into(),
            stop: None,
            delegated: true,
            valid_from: Timestamp(5),
        };
        match FfiRegisterValue::from(RegisterValue::Order(order)) {
            FfiRegisterValue::Order { order } => {
                assert_eq!(order.drug, "Metoprolol");
                assert_eq!(order.valid_from_ms, 5);
            }
            other => panic!("{other:?}"),
        }
        match FfiRegisterValue::from(RegisterValue::Risk {
            description: "falls".into(),
            active: true,
        }) {
            FfiRegisterValue::Other { kind, json } => {
                assert_eq!(kind, "risk");
                assert!(json.contains("falls"), "{json}");
            }
            other => panic!("{other:?}"),
        }
    }
}
