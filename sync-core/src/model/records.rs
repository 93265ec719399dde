//! The records a document holds: revisions of single-valued registers, and append-only events.
//!
//! Records are immutable once written. Each is stored as one JSON string under its unique id in
//! the document's `revisions` or `events` map, so the CRDT merges the *set* of records (an
//! add-only map keyed by unique ids) and never merges inside a record: field-level
//! last-writer-wins inside a clinical record is exactly what must not happen. Free text that
//! several people edit lives apart, as Automerge text (see [`TextKey`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::{Author, DocKind, RecordId, Role, Timestamp, UserId};

/// Longest free-text field inside a record (a note's body), in bytes.
pub const MAX_LONG_TEXT: usize = 16 * 1024;
/// Longest short field inside a record (a drug name, a reason), in bytes.
pub const MAX_SHORT_TEXT: usize = 512;
/// Longest encoded record, in bytes.
pub const MAX_RECORD_BYTES: usize = 32 * 1024;
/// Most entries in a list inside a record (order times, superseded revisions, flag evidence).
pub const MAX_LIST: usize = 64;

/// A single-valued clinical field. Its value is the set of revisions that no other revision of
/// the same register supersedes: one such head is a value, several are a conflict.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Register {
    /// Patient header: the display name.
    DisplayName,
    /// Patient header: the resuscitation decision (HLR-beslut).
    Resuscitation,
    /// Patient header: one allergy or intolerance (FHIR AllergyIntolerance).
    Allergy(RecordId),
    /// Patient header: one risk (falls, pressure ulcers, ...).
    Risk(RecordId),
    /// Care plan: who holds overall responsibility for the plan.
    Responsibility,
    /// Care plan: the follow-up date.
    FollowUp,
    /// Care plan: one participant (a person and their organisation).
    Participant(RecordId),
    /// Care plan: one goal's title and status (its description is free text).
    Goal(RecordId),
    /// Care plan: one intervention (FHIR CarePlan.activity).
    Intervention(RecordId),
    /// Medication: one order (FHIR MedicationRequest), versioned as a whole.
    Order(RecordId),
    /// Patient header: one delegation of medication tasks to a named worker (see `delegation.rs`).
    Delegation(RecordId),
}

impl Register {
    /// The document kind whose documents hold this register.
    pub fn doc_kind(&self) -> DocKind {
        match self {
            Register::DisplayName
            | Register::Resuscitation
            | Register::Allergy(_)
            | Register::Risk(_)
            | Register::Delegation(_) => DocKind::Patient,
            Register::Responsibility
            | Register::FollowUp
            | Register::Participant(_)
            | Register::Goal(_)
            | Register::Intervention(_) => DocKind::CarePlan,
            Register::Order(_) => DocKind::MedicationRequest,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Register::DisplayName => "display-name",
            Register::Resuscitation => "resuscitation",
            Register::Allergy(_) => "allergy",
            Register::Risk(_) => "risk",
            Register::Responsibility => "responsibility",
            Register::FollowUp => "follow-up",
            Register::Participant(_) => "participant",
            Register::Goal(_) => "goal",
            Register::Intervention(_) => "intervention",
            Register::Order(_) => "order",
            Register::Delegation(_) => "delegation",
        }
    }

    fn entity(&self) -> Option<&RecordId> {
        match self {
            Register::Allergy(id)
            | Register::Risk(id)
            | Register::Participant(id)
            | Register::Goal(id)
            | Register::Intervention(id)
            | Register::Order(id)
            | Register::Delegation(id) => Some(id),
            _ => None,
        }
    }
}

impl fmt::Display for Register {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.entity() {
            Some(id) => write!(f, "{}/{}", self.name(), id),
            None => f.write_str(self.name()),
        }
    }
}

impl FromStr for Register {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, entity) = match s.split_once('/') {
            Some((n, e)) => (n, Some(RecordId::new(e).map_err(|e| e.to_string())?)),
            None => (s, None),
        };
        let reg = match (name, entity) {
            ("display-name", None) => Register::DisplayName,
            ("resuscitation", None) => Register::Resuscitation,
            ("responsibility", None) => Register::Responsibility,
            ("follow-up", None) => Register::FollowUp,
            ("allergy", Some(id)) => Register::Allergy(id),
            ("risk", Some(id)) => Register::Risk(id),
            ("participant", Some(id)) => Register::Participant(id),
            ("goal", Some(id)) => Register::Goal(id),
            ("intervention", Some(id)) => Register::Intervention(id),
            ("order", Some(id)) => Register::Order(id),
            ("delegation", Some(id)) => Register::Delegation(id),
            _ => return Err(format!("unknown register {s:?}")),
        };
        Ok(reg)
    }
}

impl Serialize for Register {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Register {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResuscitationDecision {
    Attempt,
    DoNotAttempt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Criticality {
    Low,
    High,
    UnableToAssess,
}

/// FHIR AllergyIntolerance clinical/verification status, flattened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AllergyStatus {
    Active,
    Inactive,
    Resolved,
    Refuted,
    EnteredInError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GoalStatus {
    Proposed,
    Active,
    Achieved,
    Cancelled,
}

/// FHIR CarePlan.activity status, reduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InterventionStatus {
    NotStarted,
    InProgress,
    OnHold,
    Completed,
    Cancelled,
}

/// One version of a medication order (FHIR MedicationRequest). An order is versioned as a
/// whole: a nurse signs dose, route and times together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MedicationOrder {
    pub drug: String,
    pub strength: String,
    pub dose: String,
    pub route: String,
    /// Local times of day, `HH:MM`, one slot each.
    pub times: Vec<String>,
    /// First day, `YYYY-MM-DD`.
    pub start: String,
    /// Last day, `YYYY-MM-DD`, if the order ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<String>,
    /// Whether administration is delegated to home-care staff.
    pub delegated: bool,
    /// Minutes either side of a slot's time within which its dose is on time; `None`: the
    /// default, [`crate::model::round::DEFAULT_WINDOW_MINUTES`]. Absent in older orders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_minutes: Option<u32>,
    /// "When needed" (PRN, vid behov): the order's limits; such an order has no `times`.
    /// Absent in older orders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prn: Option<PrnRule>,
    /// From when this version applies. An administration that names an earlier version and
    /// happened at or after this instant is given on a superseded order.
    pub valid_from: Timestamp,
}

/// The limits of a "when needed" (PRN) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrnRule {
    /// Most doses given in any 24 hours.
    pub max_per_day: u32,
    /// Least time between two doses, in minutes.
    pub min_interval_minutes: u32,
    /// When the effect of a dose is to be followed up, in minutes after it.
    pub follow_up_minutes: u32,
}

/// A nurse's delegation of tasks to a named worker for one person (HSLF-FS 2017:37): personal,
/// time-limited (at most [`crate::model::delegation::MAX_DELEGATION_MS`]) and revocable. Written
/// as revisions of [`Register::Delegation`] in the person's header, so it is versioned and two
/// concurrent changes are a conflict; its author is the nurse who signs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delegation {
    /// The worker it is given to.
    pub to: UserId,
    /// What it covers: `medication` (administration) and named tasks (`insulin`, ...).
    pub scope: Vec<String>,
    /// Valid from this instant...
    pub from: Timestamp,
    /// ...until this one (exclusive).
    pub until: Timestamp,
    /// Revoked by a nurse: valid no more, from this revision's time on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
}

/// The value of one revision. The variant must match the register it is written to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum RegisterValue {
    DisplayName {
        name: String,
    },
    Resuscitation {
        decision: ResuscitationDecision,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
    },
    Allergy {
        substance: String,
        criticality: Criticality,
        status: AllergyStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reaction: Option<String>,
    },
    Risk {
        description: String,
        active: bool,
    },
    Responsibility {
        organisation: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        person: Option<String>,
    },
    FollowUp {
        /// `YYYY-MM-DD`
        date: String,
    },
    Participant {
        name: String,
        organisation: String,
        role: String,
        active: bool,
    },
    Goal {
        title: String,
        status: GoalStatus,
    },
    Intervention {
        title: String,
        responsible_organisation: String,
        status: InterventionStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        goal: Option<RecordId>,
    },
    Order(MedicationOrder),
    Delegation(Delegation),
}

impl RegisterValue {
    /// Whether this value may be written to `register`.
    pub fn fits(&self, register: &Register) -> bool {
        matches!(
            (self, register),
            (RegisterValue::DisplayName { .. }, Register::DisplayName)
                | (RegisterValue::Resuscitation { .. }, Register::Resuscitation)
                | (RegisterValue::Allergy { .. }, Register::Allergy(_))
                | (RegisterValue::Risk { .. }, Register::Risk(_))
                | (
                    RegisterValue::Responsibility { .. },
                    Register::Responsibility
                )
                | (RegisterValue::FollowUp { .. }, Register::FollowUp)
                | (RegisterValue::Participant { .. }, Register::Participant(_))
                | (RegisterValue::Goal { .. }, Register::Goal(_))
                | (
                    RegisterValue::Intervention { .. },
                    Register::Intervention(_)
                )
                | (RegisterValue::Order(_), Register::Order(_))
                | (RegisterValue::Delegation(_), Register::Delegation(_))
        )
    }
}

/// A device clock further than this from the server's (ms) is off: flags that only its time
/// could decide say "time uncertain, review" instead.
pub const CLOCK_SKEW_LIMIT_MS: i64 = 5 * 60 * 1000;

/// What the writing device knew when it wrote a record, for the flags where order or time
/// decides (see `chart.rs`). Absent in records written before it existed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteContext {
    /// The device's clock offset from the server's when it wrote (ms: server minus device), as
    /// it last learned it from the server; `None`: not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<i64>,
    /// Records of other documents this one was written knowing (at most [`MAX_LIST`]): for an
    /// administration, the order's current revisions; for an order revision, the latest
    /// administrations of that order the device held.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<RecordId>,
}

impl WriteContext {
    pub fn is_empty(&self) -> bool {
        self.clock_offset_ms.is_none() && self.after.is_empty()
    }

    /// Whether the writer's clock was known to be more than `limit_ms` off the server's.
    pub fn clock_off(&self, limit_ms: i64) -> bool {
        self.clock_offset_ms
            .is_some_and(|o| o.unsigned_abs() > limit_ms.unsigned_abs())
    }
}

/// A revision of a register: immutable, naming the revisions it supersedes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revision {
    pub register: Register,
    pub supersedes: Vec<RecordId>,
    pub value: RegisterValue,
    pub author: Author,
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "WriteContext::is_empty")]
    pub context: WriteContext,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdministrationOutcome {
    Given,
    NotGiven,
    /// Handed over for self-administration.
    SelfAdministered,
}

/// The effect of a "when needed" dose, followed up after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DoseEffect {
    Good,
    Partial,
    None,
}

/// Vital signs and measurements home care takes (FHIR Observation, LOINC-free codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObservationCode {
    BodyWeight,
    BloodPressureSystolic,
    BloodPressureDiastolic,
    BodyTemperature,
    HeartRate,
    OxygenSaturation,
    BloodGlucose,
    Pain,
}

/// What an event records. Events are append-only; a mistake is corrected by an
/// [`EventBody::EnteredInError`] that names the original.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum EventBody {
    /// FHIR MedicationAdministration for one slot of one order version.
    Administration {
        order: RecordId,
        order_revision: RecordId,
        /// `YYYY-MM-DDTHH:MM`, the scheduled local slot.
        slot: String,
        outcome: AdministrationOutcome,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        occurred_at: Timestamp,
    },
    /// A nurse has reviewed a flag; `covers` names the events the review saw.
    FlagAcknowledgement {
        flag: String,
        covers: Vec<RecordId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
    },
    /// A signed journal note. `corrects` links a correction to the note it replaces, which
    /// may sit in another document (a note first signed on the wrong person).
    Note {
        body: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        corrects: Option<RecordRef>,
    },
    Observation {
        code: ObservationCode,
        value: f64,
        unit: String,
        occurred_at: Timestamp,
    },
    VisitStart {
        visit: RecordId,
        occurred_at: Timestamp,
    },
    VisitStop {
        visit: RecordId,
        occurred_at: Timestamp,
    },
    /// The outcome of one planned task during a visit (FHIR Task).
    TaskOutcome {
        visit: RecordId,
        task: String,
        done: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        intervention: Option<RecordId>,
    },
    /// Marks `target` (an event of the same document) as entered in error. The target stays.
    EnteredInError { target: RecordId, reason: String },
    /// The follow-up of a "when needed" dose: its effect. `administration` is an event of the
    /// same document.
    Effect {
        administration: RecordId,
        effect: DoseEffect,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        occurred_at: Timestamp,
    },
    /// "What matters to me": the person's own words in their care plan, written by the person
    /// ([`Role::Person`]) in their own record only; append-only, and no member of staff may
    /// write one (nor mark one entered in error: that lives in journals and logs only).
    WhatMatters { text: String },
}

impl EventBody {
    pub fn kind(&self) -> EventKind {
        match self {
            EventBody::Administration { .. } => EventKind::Administration,
            EventBody::FlagAcknowledgement { .. } => EventKind::FlagAcknowledgement,
            EventBody::Note { .. } => EventKind::Note,
            EventBody::Observation { .. } => EventKind::Observation,
            EventBody::VisitStart { .. } => EventKind::VisitStart,
            EventBody::VisitStop { .. } => EventKind::VisitStop,
            EventBody::TaskOutcome { .. } => EventKind::TaskOutcome,
            EventBody::EnteredInError { .. } => EventKind::EnteredInError,
            EventBody::Effect { .. } => EventKind::Effect,
            EventBody::WhatMatters { .. } => EventKind::WhatMatters,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    Administration,
    FlagAcknowledgement,
    Note,
    Observation,
    VisitStart,
    VisitStop,
    TaskOutcome,
    EnteredInError,
    Effect,
    WhatMatters,
}

impl EventKind {
    /// The document kind whose documents hold events of this kind (entered-in-error: both).
    pub fn allowed_in(self, kind: DocKind) -> bool {
        match self {
            EventKind::Administration | EventKind::FlagAcknowledgement | EventKind::Effect => {
                kind == DocKind::MedicationAdministration
            }
            EventKind::Note
            | EventKind::Observation
            | EventKind::VisitStart
            | EventKind::VisitStop
            | EventKind::TaskOutcome => kind == DocKind::Journal,
            EventKind::EnteredInError => {
                matches!(kind, DocKind::Journal | DocKind::MedicationAdministration)
            }
            EventKind::WhatMatters => kind == DocKind::CarePlan,
        }
    }
}

/// A reference to a record in a document, possibly another one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordRef {
    /// The document's id in text form, e.g. `p-17/journal/2026-11`.
    pub document: String,
    pub record: RecordId,
}

/// An append-only clinical event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub body: EventBody,
    pub author: Author,
    /// When the author recorded it (device time; the server stamps its own receipt time).
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "WriteContext::is_empty")]
    pub context: WriteContext,
}

/// A free-text field that several people may edit at once; both sides' edits are kept.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TextKey {
    GoalDescription(RecordId),
    InterventionDescription(RecordId),
    OrderInstructions(RecordId),
    /// A journal note while it is being drafted (signing copies it into a [`EventBody::Note`]).
    NoteDraft(RecordId),
}

impl TextKey {
    pub fn doc_kind(&self) -> DocKind {
        match self {
            TextKey::GoalDescription(_) | TextKey::InterventionDescription(_) => DocKind::CarePlan,
            TextKey::OrderInstructions(_) => DocKind::MedicationRequest,
            TextKey::NoteDraft(_) => DocKind::Journal,
        }
    }
}

impl fmt::Display for TextKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextKey::GoalDescription(id) => write!(f, "goal/{id}/description"),
            TextKey::InterventionDescription(id) => write!(f, "intervention/{id}/description"),
            TextKey::OrderInstructions(id) => write!(f, "order/{id}/instructions"),
            TextKey::NoteDraft(id) => write!(f, "draft/{id}"),
        }
    }
}

impl FromStr for TextKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let id = |p: &str| RecordId::new(p).map_err(|e| e.to_string());
        match parts.as_slice() {
            ["goal", g, "description"] => Ok(TextKey::GoalDescription(id(g)?)),
            ["intervention", i, "description"] => Ok(TextKey::InterventionDescription(id(i)?)),
            ["order", o, "instructions"] => Ok(TextKey::OrderInstructions(id(o)?)),
            ["draft", n] => Ok(TextKey::NoteDraft(id(n)?)),
            _ => Err(format!("unknown text field {s:?}")),
        }
    }
}

/// What a write touches, for the role rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteKind<'a> {
    Revision(&'a Register),
    Event(EventKind),
    Text(&'a TextKey),
}

/// The rules of who may write what. One table, run on the device (to refuse early) and on the
/// server (to enforce).
pub fn may_write(role: Role, what: &WriteKind<'_>) -> bool {
    // The person's own words are theirs alone.
    let persons = matches!(what, WriteKind::Event(EventKind::WhatMatters));
    match role {
        // The registrar: a person's name, from the directory (the server writes it).
        Role::Admin => matches!(what, WriteKind::Revision(Register::DisplayName)),
        Role::Person => persons,
        Role::Nurse => !persons,
        Role::Carer => match what {
            // Orders, the resuscitation decision, responsibility, participants, goals' status:
            // nurse only. An allergy a carer learns of is recorded at once (a nurse reviews it).
            WriteKind::Revision(reg) => {
                matches!(reg, Register::Intervention(_) | Register::Allergy(_))
            }
            WriteKind::Event(kind) => !matches!(
                kind,
                EventKind::FlagAcknowledgement | EventKind::WhatMatters
            ),
            WriteKind::Text(key) => !matches!(key, TextKey::OrderInstructions(_)),
        },
    }
}

/// Whether `role` may write a revision of `register` that supersedes `superseded` revisions:
/// resolving a conflict (superseding several) of an allergy is a nurse's, though a carer
/// records allergies.
pub fn may_supersede(role: Role, register: &Register, superseded: usize) -> bool {
    role == Role::Nurse || superseded <= 1 || !matches!(register, Register::Allergy(_))
}

/// `YYYY-MM-DD`
pub(crate) fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && [0, 1, 2, 3, 5, 6, 8, 9]
            .iter()
            .all(|&i| b[i].is_ascii_digit())
        && matches!(s[5..7].parse::<u8>(), Ok(1..=12))
        && matches!(s[8..10].parse::<u8>(), Ok(1..=31))
}

/// `HH:MM`
pub(crate) fn is_time_of_day(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 5
        && b[2] == b':'
        && matches!(s[0..2].parse::<u8>(), Ok(0..=23))
        && b[0].is_ascii_digit()
        && b[3].is_ascii_digit()
        && matches!(s[3..5].parse::<u8>(), Ok(0..=59))
}

/// `YYYY-MM-DDTHH:MM`
pub(crate) fn is_slot(s: &str) -> bool {
    s.len() == 16 && s.as_bytes()[10] == b'T' && is_date(&s[..10]) && is_time_of_day(&s[11..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_text_keys_round_trip() {
        let id = RecordId::new("o-1").unwrap();
        for r in [
            Register::DisplayName,
            Register::Resuscitation,
            Register::Order(id.clone()),
            Register::Allergy(id.clone()),
        ] {
            assert_eq!(r.to_string().parse::<Register>().unwrap(), r);
        }
        for t in [
            TextKey::GoalDescription(id.clone()),
            TextKey::NoteDraft(id.clone()),
        ] {
            assert_eq!(t.to_string().parse::<TextKey>().unwrap(), t);
        }
        assert!("order".parse::<Register>().is_err());
        assert!("resuscitation/x".parse::<Register>().is_err());
    }

    #[test]
    fn formats() {
        assert!(is_date("2026-11-24"));
        assert!(!is_date("2026-13-24"));
        assert!(!is_date("2026-1-245"));
        assert!(is_time_of_day("08:00"));
        assert!(!is_time_of_day("24:00"));
        assert!(!is_time_of_day("8:00"));
        assert!(is_slot("2026-11-24T08:00"));
        assert!(!is_slot("2026-11-24 08:00"));
    }

    #[test]
    fn carers_record_events_but_do_not_change_orders_or_alerts() {
        let id = RecordId::new("x").unwrap();
        assert!(may_write(
            Role::Carer,
            &WriteKind::Event(EventKind::Administration)
        ));
        assert!(!may_write(
            Role::Carer,
            &WriteKind::Event(EventKind::FlagAcknowledgement)
        ));
        assert!(!may_write(
            Role::Carer,
            &WriteKind::Revision(&Register::Order(id.clone()))
        ));
        assert!(!may_write(
            Role::Carer,
            &WriteKind::Revision(&Register::Resuscitation)
        ));
        assert!(may_write(
            Role::Carer,
            &WriteKind::Revision(&Register::Intervention(id.clone()))
        ));
        assert!(may_write(
            Role::Nurse,
            &WriteKind::Revision(&Register::Order(id.clone()))
        ));
        assert!(!may_write(Role::Admin, &WriteKind::Event(EventKind::Note)));
        // What matters to the person: theirs alone; they write nothing else.
        let wish = WriteKind::Event(EventKind::WhatMatters);
        assert!(may_write(Role::Person, &wish));
        for staff in [Role::Carer, Role::Nurse, Role::Admin] {
            assert!(!may_write(staff, &wish), "{staff:?}");
        }
        assert!(!may_write(Role::Person, &WriteKind::Event(EventKind::Note)));
        assert!(!may_write(
            Role::Person,
            &WriteKind::Revision(&Register::FollowUp)
        ));
    }
}
