//! A person's record as the app shows and writes it: people, orders, administrations,
//! journal entries, registers, conflicts, flags and the overview.

use nara_client::care::{
    AckShown, Administered, ConflictShown, EntityShown, FlagShown, GoalWritten, JournalEntry,
    OrderInput, OrderWritten, Overview, PatientSummary, Recorded, RegisterShown, RevisionShown,
    SlotView,
};
use sync_core::model::{
    AdministrationOutcome, EventBody, MedicationOrder, ObservationCode, RegisterValue,
};

use super::{FfiAuthor, all, count};

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
    /// Minutes either side of a slot within which a dose is on time (`None`: 60).
    pub window_minutes: Option<u32>,
    /// "When needed": its limits (then it has no times).
    pub prn: Option<super::FfiPrnRule>,
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
            window_minutes: o.window_minutes,
            prn: o.prn.map(Into::into),
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
    #[uniffi(default)]
    pub window_minutes: Option<u32>,
    /// Makes the order "when needed" with these limits (give no times).
    #[uniffi(default)]
    pub prn: Option<super::FfiPrnRule>,
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
            window_minutes: i.window_minutes,
            prn: i.prn.map(Into::into),
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

/// The value of one revision. Orders, display names, allergies and the resuscitation decision
/// are typed; the other kinds of value cross as their JSON form (`kind` is its `type` tag) until
/// an app needs them typed.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum FfiRegisterValue {
    Order {
        order: FfiMedicationOrder,
    },
    DisplayName {
        name: String,
    },
    Allergy {
        substance: String,
        criticality: super::FfiCriticality,
        status: super::FfiAllergyStatus,
        reaction: Option<String>,
    },
    Resuscitation {
        decision: super::FfiResuscitationDecision,
        comment: Option<String>,
    },
    Other {
        kind: String,
        json: String,
    },
}

impl From<RegisterValue> for FfiRegisterValue {
    fn from(v: RegisterValue) -> Self {
        match v {
            RegisterValue::Order(order) => FfiRegisterValue::Order {
                order: order.into(),
            },
            RegisterValue::DisplayName { name } => FfiRegisterValue::DisplayName { name },
            RegisterValue::Allergy {
                substance,
                criticality,
                status,
                reaction,
            } => FfiRegisterValue::Allergy {
                substance,
                criticality: criticality.into(),
                status: status.into(),
                reaction,
            },
            RegisterValue::Resuscitation { decision, comment } => FfiRegisterValue::Resuscitation {
                decision: decision.into(),
                comment,
            },
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
    /// `double-dose`, `superseded-order`, `time-uncertain` (review: only a clock known to be
    /// off could tell whether the dose was on a superseded order), `no-delegation`, `prn-limit`;
    /// raised by the server: `overdue`, `follow-up`.
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
    /// Every entered-in-error mark on it, oldest first.
    pub marks: Vec<super::FfiMark>,
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
            marks: all(e.marks),
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
    /// Today's medication slots, with the status the signing list gives them (open, overdue,
    /// unknown, given, ...: the same as `round`).
    pub today: Vec<super::FfiRoundSlot>,
    /// The latest journal entries (this month and last), newest first.
    pub journal: Vec<FfiJournalEntry>,
    pub conflicts: Vec<FfiConflict>,
    pub open_flags: Vec<FfiFlag>,
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
