//! What a care worker's app does with a person's record: write notes, observations and
//! administrations, write and resolve medication orders, edit goals, acknowledge flags, and
//! read it all back. Thin on purpose: the rules (who may write what, validation, conflicts,
//! flags) are `sync-core`'s model; this module only picks the document, the ids and the
//! current revisions, and shapes what is read into serialisable views.
//!
//! Time comes in as a [`Clock`]: the instant, and the local date that decides which monthly
//! document a journal entry goes in.

use std::collections::BTreeSet;

use rand::Rng;
use serde::Serialize;
use sync_core::model::{
    Acknowledgement, AdministrationOutcome, Chart, Conflict, Event, EventBody, Flag, FlagKind,
    GoalStatus, MedicationOrder, ObservationCode, Register, RegisterState, RegisterValue,
    RevisionView, SlotStatus, TextKey,
};
use sync_core::protocol::DeviceSession;
use sync_core::repo::Repo;
use sync_core::store::SqliteStore;
use sync_core::{Author, DocKind, DocumentId, Month, PatientId, RecordId, Timestamp};

use crate::device::Device;
use crate::error::{ClientError, Result};

/// The time of an edit: the instant, and today's local date (`YYYY-MM-DD`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clock {
    pub now: Timestamp,
    pub today: String,
}

impl Clock {
    pub fn new(now: Timestamp, today: impl Into<String>) -> Result<Self> {
        let today = today.into();
        month_of(&today)?;
        if today.len() != 10 {
            return Err(ClientError::Invalid(format!(
                "bad date {today:?}: expected YYYY-MM-DD"
            )));
        }
        Ok(Self { now, today })
    }

    /// The current month, whose journal takes today's entries.
    pub fn month(&self) -> Result<Month> {
        month_of(&self.today)
    }
}

/// The month of a `YYYY-MM-DD` date or a `YYYY-MM-DDTHH:MM` slot.
fn month_of(s: &str) -> Result<Month> {
    s.get(..7)
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| ClientError::Invalid(format!("bad date {s:?}: expected YYYY-MM-DD")))
}

/// A fresh record id: 16 random hex digits (64 bits).
pub fn new_id() -> Result<RecordId> {
    let bits: u64 = rand::rng().random();
    Ok(RecordId::new(format!("{bits:016x}"))?)
}

/// A written record and where it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recorded {
    pub document: DocumentId,
    pub record: RecordId,
}

// ---- writing ----

/// Signs a journal note in this month's journal.
pub fn add_note(
    device: &Device,
    patient: &PatientId,
    text: &str,
    clock: &Clock,
) -> Result<Recorded> {
    if text.trim().is_empty() {
        return Err(ClientError::Invalid("a note needs some text".into()));
    }
    let document = DocumentId::journal(patient, clock.month()?);
    let record = new_id()?;
    device.change(&document, clock.now, |e| {
        e.record(
            record.clone(),
            EventBody::Note {
                body: text.to_owned(),
                corrects: None,
            },
        )
    })?;
    Ok(Recorded { document, record })
}

/// Records an observation (vital sign) in this month's journal.
pub fn observe(
    device: &Device,
    patient: &PatientId,
    code: ObservationCode,
    value: f64,
    unit: &str,
    clock: &Clock,
) -> Result<Recorded> {
    if !value.is_finite() {
        return Err(ClientError::Invalid(format!(
            "{value} is not a measurement"
        )));
    }
    let document = DocumentId::journal(patient, clock.month()?);
    let record = new_id()?;
    device.change(&document, clock.now, |e| {
        e.record(
            record.clone(),
            EventBody::Observation {
                code,
                value,
                unit: unit.to_owned(),
                occurred_at: clock.now,
            },
        )
    })?;
    Ok(Recorded { document, record })
}

/// An administration recorded against an order's current revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Administered {
    pub document: DocumentId,
    pub record: RecordId,
    pub order: RecordId,
    pub order_revision: RecordId,
    pub order_version: u32,
    pub slot: String,
    /// The slot's status after this record (e.g. a possible double dose).
    pub slot_status: SlotView,
}

/// Records the outcome of one medication slot (`YYYY-MM-DDTHH:MM`) in the administration log
/// of the slot's month, naming the order's current revision. Refused while the order is in
/// conflict, for a time the order does not schedule, or outside its days; and, unless `again`,
/// if this device already shows the dose given (the app asks before a second dose).
#[allow(clippy::too_many_arguments)] // the fields of one administration
pub fn give(
    device: &Device,
    patient: &PatientId,
    order: &RecordId,
    slot: &str,
    outcome: AdministrationOutcome,
    reason: Option<&str>,
    again: bool,
    clock: &Clock,
) -> Result<Administered> {
    let (date, time) = slot
        .split_once('T')
        .filter(|(d, t)| d.len() == 10 && t.len() == 5)
        .ok_or_else(|| {
            ClientError::Invalid(format!("bad slot {slot:?}: expected YYYY-MM-DDTHH:MM"))
        })?;
    if outcome == AdministrationOutcome::NotGiven && reason.is_none_or(|r| r.trim().is_empty()) {
        return Err(ClientError::Invalid(
            "a dose not given needs a reason (--reason)".into(),
        ));
    }
    let current = current_order(device, patient, order)?;
    let o = &current.value;
    if !o.times.iter().any(|t| t == time) {
        return Err(ClientError::Invalid(format!(
            "order {order} has no slot at {time}; its times are {}",
            o.times.join(", ")
        )));
    }
    if date < o.start.as_str() || o.stop.as_deref().is_some_and(|stop| date > stop) {
        return Err(ClientError::Invalid(format!(
            "order {order} does not run on {date} (from {}{})",
            o.start,
            o.stop
                .as_deref()
                .map(|s| format!(" to {s}"))
                .unwrap_or_default()
        )));
    }
    let document = DocumentId::administrations(patient, month_of(slot)?);
    if outcome == AdministrationOutcome::Given && !again {
        let status = device.with_repo(|repo| -> Result<SlotStatus> {
            Ok(repo
                .chart(patient, std::slice::from_ref(&document))?
                .slot_status(order, slot))
        })?;
        let who = match status {
            SlotStatus::Given { by, .. } => Some(format!(" by {}", by.user)),
            SlotStatus::PossibleDoubleDose { .. } => Some(" more than once".to_owned()),
            _ => None,
        };
        if let Some(who) = who {
            return Err(ClientError::Invalid(format!(
                "{order} at {slot} is already recorded as given{who}; a second dose needs --again"
            )));
        }
    }
    let record = new_id()?;
    device.change(&document, clock.now, |e| {
        // The dose follows the order version it names: what this device held as current.
        let mut context = e.context().clone();
        context.after = vec![current.revision.clone()];
        e.set_context(context);
        e.record(
            record.clone(),
            EventBody::Administration {
                order: order.clone(),
                order_revision: current.revision.clone(),
                slot: slot.to_owned(),
                outcome,
                reason: reason.map(str::to_owned),
                occurred_at: clock.now,
            },
        )
    })?;
    let slot_status = device.with_repo(|repo| -> Result<SlotView> {
        let chart = repo.chart(patient, &[])?;
        Ok(SlotView::from(chart.slot_status(order, slot)))
    })?;
    Ok(Administered {
        document,
        record,
        order: order.clone(),
        order_revision: current.revision,
        order_version: current.version,
        slot: slot.to_owned(),
        slot_status,
    })
}

struct CurrentOrder {
    revision: RecordId,
    version: u32,
    value: MedicationOrder,
}

fn current_order(device: &Device, patient: &PatientId, order: &RecordId) -> Result<CurrentOrder> {
    let doc = DocumentId::medication(patient);
    let state = device.with_repo(|repo| -> Result<RegisterState> {
        Ok(repo.get(&doc)?.register(&Register::Order(order.clone())))
    })?;
    match state {
        RegisterState::Unset => Err(ClientError::Invalid(format!(
            "no order {order} for {patient} on this device"
        ))),
        RegisterState::Conflict(candidates) => Err(ClientError::Invalid(format!(
            "order {order} is in conflict (revisions {}); a nurse must resolve it first",
            candidates
                .iter()
                .map(|c| c.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        RegisterState::Value(v) => match v.revision.value {
            RegisterValue::Order(value) => Ok(CurrentOrder {
                revision: v.id,
                version: v.version,
                value,
            }),
            _ => Err(ClientError::Invalid(format!("{order} is not an order"))),
        },
    }
}

/// Fields of a medication order; `None` keeps the current (or resolved-from) value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrderInput {
    pub drug: Option<String>,
    pub strength: Option<String>,
    pub dose: Option<String>,
    pub route: Option<String>,
    pub times: Option<Vec<String>>,
    pub start: Option<String>,
    pub stop: Option<String>,
    pub delegated: Option<bool>,
}

impl OrderInput {
    /// The order with these fields over `base`; without a base, every field but `stop` and
    /// `delegated` (default: not delegated) must be given.
    fn build(
        &self,
        base: Option<&MedicationOrder>,
        valid_from: Timestamp,
    ) -> Result<MedicationOrder> {
        let mut missing = Vec::new();
        let mut pick = |name: &'static str, given: &Option<String>, base: Option<&String>| {
            given.clone().or_else(|| base.cloned()).unwrap_or_else(|| {
                missing.push(name);
                String::new()
            })
        };
        let drug = pick("--drug", &self.drug, base.map(|b| &b.drug));
        let strength = pick("--strength", &self.strength, base.map(|b| &b.strength));
        let dose = pick("--dose", &self.dose, base.map(|b| &b.dose));
        let route = pick("--route", &self.route, base.map(|b| &b.route));
        let start = pick("--start", &self.start, base.map(|b| &b.start));
        let times = match (&self.times, base) {
            (Some(t), _) => t.clone(),
            (None, Some(b)) => b.times.clone(),
            (None, None) => {
                missing.push("--times");
                Vec::new()
            }
        };
        if !missing.is_empty() {
            return Err(ClientError::Invalid(format!(
                "a new order needs {}",
                missing.join(", ")
            )));
        }
        Ok(MedicationOrder {
            drug,
            strength,
            dose,
            route,
            times,
            start,
            stop: self
                .stop
                .clone()
                .or_else(|| base.and_then(|b| b.stop.clone())),
            delegated: self
                .delegated
                .or(base.map(|b| b.delegated))
                .unwrap_or(false),
            valid_from,
        })
    }
}

/// A written order revision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderWritten {
    pub document: DocumentId,
    pub order: RecordId,
    pub revision: RecordId,
    pub version: u32,
    /// True if this created the order.
    pub created: bool,
    /// The revisions this one supersedes.
    pub supersedes: Vec<RecordId>,
    pub value: MedicationOrder,
}

/// Adds an order, or revises its current version (nurse). Refused while it is in conflict.
pub fn write_order(
    device: &Device,
    patient: &PatientId,
    order: &RecordId,
    input: &OrderInput,
    clock: &Clock,
) -> Result<OrderWritten> {
    let document = DocumentId::medication(patient);
    let register = Register::Order(order.clone());
    let state = device.with_repo(|repo| -> Result<RegisterState> {
        Ok(repo.get(&document)?.register(&register))
    })?;
    let revision = new_id()?;
    let (value, supersedes) = match state {
        RegisterState::Unset => (input.build(None, clock.now)?, Vec::new()),
        RegisterState::Value(v) => match &v.revision.value {
            RegisterValue::Order(base) => (input.build(Some(base), clock.now)?, vec![v.id]),
            _ => return Err(ClientError::Invalid(format!("{order} is not an order"))),
        },
        RegisterState::Conflict(c) => {
            return Err(ClientError::Invalid(format!(
                "order {order} is in conflict (revisions {}); resolve it instead",
                c.iter()
                    .map(|c| c.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    };
    let created = supersedes.is_empty();
    let written = value.clone();
    let doses = latest_doses(device, patient, order)?;
    device.change(&document, clock.now, |e| {
        // The new version follows the doses of the order this device held: those were given
        // before it, whatever any clock says.
        let mut context = e.context().clone();
        context.after = doses;
        e.set_context(context);
        if created {
            e.create(
                revision.clone(),
                register.clone(),
                RegisterValue::Order(written),
                None,
            )
        } else {
            e.update(
                revision.clone(),
                register.clone(),
                RegisterValue::Order(written),
            )
        }
    })?;
    let version =
        device.with_repo(|repo| -> Result<u32> { Ok(repo.get(&document)?.version(&revision)) })?;
    Ok(OrderWritten {
        document,
        order: order.clone(),
        revision,
        version,
        created,
        supersedes,
        value,
    })
}

/// The latest given administrations of `order` this device holds (at most the model's list
/// limit), newest first by their time.
fn latest_doses(device: &Device, patient: &PatientId, order: &RecordId) -> Result<Vec<RecordId>> {
    device.with_repo(|repo| -> Result<Vec<RecordId>> {
        let chart = repo.chart(patient, &[])?;
        Ok(chart.given_doses(order, sync_core::model::MAX_LIST))
    })
}

/// Resolves an order's conflict (nurse): a new version superseding every current one. Fields
/// not given come from the candidate revision `from`; without `from`, all must be given.
pub fn resolve_order(
    device: &Device,
    patient: &PatientId,
    order: &RecordId,
    from: Option<&RecordId>,
    input: &OrderInput,
    clock: &Clock,
) -> Result<OrderWritten> {
    let document = DocumentId::medication(patient);
    let register = Register::Order(order.clone());
    let heads = device.with_repo(|repo| -> Result<Vec<RevisionView>> {
        Ok(match repo.get(&document)?.register(&register) {
            RegisterState::Unset => Vec::new(),
            RegisterState::Value(v) => vec![v],
            RegisterState::Conflict(c) => c,
        })
    })?;
    if heads.is_empty() {
        return Err(ClientError::Invalid(format!(
            "no order {order} for {patient} on this device"
        )));
    }
    let base = match from {
        None => None,
        Some(id) => {
            let head = heads.iter().find(|h| &h.id == id).ok_or_else(|| {
                ClientError::Invalid(format!(
                    "{id} is not a current revision of order {order} (current: {})",
                    heads
                        .iter()
                        .map(|h| h.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            match &head.revision.value {
                RegisterValue::Order(o) => Some(o.clone()),
                _ => None,
            }
        }
    };
    let value = input.build(base.as_ref(), clock.now).map_err(|e| {
        ClientError::Invalid(format!(
            "{e}, or --from one of the current revisions ({})",
            heads
                .iter()
                .map(|h| h.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let revision = new_id()?;
    let written = value.clone();
    let doses = latest_doses(device, patient, order)?;
    device.change(&document, clock.now, |e| {
        let mut context = e.context().clone();
        context.after = doses;
        e.set_context(context);
        e.resolve(
            revision.clone(),
            register.clone(),
            RegisterValue::Order(written),
        )
    })?;
    let version =
        device.with_repo(|repo| -> Result<u32> { Ok(repo.get(&document)?.version(&revision)) })?;
    Ok(OrderWritten {
        document,
        order: order.clone(),
        revision,
        version,
        created: false,
        supersedes: heads.into_iter().map(|h| h.id).collect(),
        value,
    })
}

/// A goal's text written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GoalWritten {
    pub document: DocumentId,
    pub goal: RecordId,
    pub created: bool,
    pub text: String,
}

/// Edits a goal's description (anyone on the case; concurrent edits merge), or creates the
/// goal with it (nurse; the title defaults to the text's first line).
pub fn set_goal(
    device: &Device,
    patient: &PatientId,
    goal: &RecordId,
    text: &str,
    title: Option<&str>,
    clock: &Clock,
) -> Result<GoalWritten> {
    let document = DocumentId::care_plan(patient);
    let register = Register::Goal(goal.clone());
    let exists = device.with_repo(|repo| -> Result<bool> {
        Ok(!matches!(
            repo.get(&document)?.register(&register),
            RegisterState::Unset
        ))
    })?;
    let key = TextKey::GoalDescription(goal.clone());
    let revision = new_id()?;
    device.change(&document, clock.now, |e| {
        if exists {
            e.set_text(&key, text)?;
            if let Some(t) = title {
                e.update(
                    revision,
                    register.clone(),
                    RegisterValue::Goal {
                        title: t.to_owned(),
                        status: GoalStatus::Active,
                    },
                )?;
            }
            Ok(())
        } else {
            let title = title
                .map(str::to_owned)
                .unwrap_or_else(|| first_line(text, 80));
            e.create(
                revision,
                register.clone(),
                RegisterValue::Goal {
                    title,
                    status: GoalStatus::Active,
                },
                Some(text),
            )
        }
    })?;
    let text = device
        .with_repo(|repo| -> Result<Option<String>> { Ok(repo.get(&document)?.text(&key)) })?
        .unwrap_or_default();
    Ok(GoalWritten {
        document,
        goal: goal.clone(),
        created: !exists,
        text,
    })
}

fn first_line(text: &str, max_chars: usize) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    let line = if line.is_empty() { "Goal" } else { line };
    line.chars().take(max_chars).collect()
}

/// Acknowledges a flag (nurse), covering the evidence seen now; later evidence reopens it.
pub fn ack_flag(
    device: &Device,
    patient: &PatientId,
    flag: &str,
    comment: Option<&str>,
    clock: &Clock,
) -> Result<Recorded> {
    let found = device.with_repo(|repo| -> Result<Option<Flag>> {
        Ok(repo
            .chart(patient, &[])?
            .flags()
            .into_iter()
            .find(|f| f.id == flag))
    })?;
    let found = found.ok_or_else(|| {
        ClientError::Invalid(format!("no flag {flag:?} for {patient} on this device"))
    })?;
    let record = new_id()?;
    device.change(&found.document, clock.now, |e| {
        e.record(
            record.clone(),
            EventBody::FlagAcknowledgement {
                flag: found.id.clone(),
                covers: found.evidence.clone(),
                comment: comment.map(str::to_owned),
            },
        )
    })?;
    Ok(Recorded {
        document: found.document,
        record,
    })
}

// ---- reading ----

/// A person with documents on this device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatientSummary {
    pub patient: PatientId,
    pub display_name: Option<String>,
    pub documents: usize,
    pub conflicts: usize,
    pub open_flags: usize,
}

/// Every person with documents on this device. Each name shown is recorded in the read log.
pub fn patients(device: &Device) -> Result<Vec<PatientSummary>> {
    device.check_lease(crate::now())?;
    device.with_repo(|repo| {
        let docs = repo.document_ids()?;
        let ids: BTreeSet<PatientId> = docs.iter().map(|d| d.patient().clone()).collect();
        let mut out = Vec::new();
        for patient in ids {
            let documents = docs.iter().filter(|d| d.patient() == &patient).count();
            let display_name = display_name(repo, &patient)?;
            if display_name.is_some() {
                // A name is patient data: logged, durably, before it is shown.
                DeviceSession::log_read(repo, &patient, "name", crate::now())?;
            }
            let chart = repo.chart(&patient, &[])?;
            out.push(PatientSummary {
                conflicts: chart.conflicts().len(),
                open_flags: chart.flags().iter().filter(|f| f.open).count(),
                patient,
                display_name,
                documents,
            });
        }
        Ok(out)
    })
}

fn stored_patients(repo: &Repo<SqliteStore>) -> Result<BTreeSet<PatientId>> {
    Ok(repo
        .document_ids()?
        .into_iter()
        .map(|d| d.patient().clone())
        .collect())
}

fn display_name(repo: &mut Repo<SqliteStore>, patient: &PatientId) -> Result<Option<String>> {
    if !repo
        .document_ids()?
        .contains(&DocumentId::patient_header(patient))
    {
        return Ok(None);
    }
    Ok(
        match repo
            .get(&DocumentId::patient_header(patient))?
            .register(&Register::DisplayName)
        {
            RegisterState::Value(v) => match v.revision.value {
                RegisterValue::DisplayName { name } => Some(name),
                _ => None,
            },
            _ => None,
        },
    )
}

/// One revision of a register, as shown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RevisionShown {
    pub revision: RecordId,
    pub version: u32,
    pub author: Author,
    pub at: Timestamp,
    pub value: RegisterValue,
}

impl From<RevisionView> for RevisionShown {
    fn from(v: RevisionView) -> Self {
        Self {
            revision: v.id,
            version: v.version,
            author: v.revision.author,
            at: v.revision.at,
            value: v.revision.value,
        }
    }
}

/// A register's state, as shown.
#[allow(clippy::large_enum_variant)] // a read result, not stored
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum RegisterShown {
    Unset,
    Value(RevisionShown),
    Conflict { candidates: Vec<RevisionShown> },
}

impl From<RegisterState> for RegisterShown {
    fn from(s: RegisterState) -> Self {
        match s {
            RegisterState::Unset => RegisterShown::Unset,
            RegisterState::Value(v) => RegisterShown::Value(v.into()),
            RegisterState::Conflict(c) => RegisterShown::Conflict {
                candidates: c.into_iter().map(Into::into).collect(),
            },
        }
    }
}

/// A register in conflict, with every candidate value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConflictShown {
    pub patient: PatientId,
    pub document: DocumentId,
    pub register: String,
    pub candidates: Vec<RevisionShown>,
}

impl ConflictShown {
    fn new(patient: &PatientId, c: Conflict) -> Self {
        Self {
            patient: patient.clone(),
            document: c.document,
            register: c.register.to_string(),
            candidates: c.candidates.into_iter().map(Into::into).collect(),
        }
    }
}

/// Every conflict of `patient`, or of everyone on this device.
pub fn conflicts(device: &Device, patient: Option<&PatientId>) -> Result<Vec<ConflictShown>> {
    device.check_lease(crate::now())?;
    device.with_repo(|repo| {
        let mut out = Vec::new();
        for p in which(repo, patient)? {
            DeviceSession::log_read(repo, &p, "conflicts", crate::now())?;
            let chart = repo.chart(&p, &[])?;
            out.extend(
                chart
                    .conflicts()
                    .into_iter()
                    .map(|c| ConflictShown::new(&p, c)),
            );
        }
        Ok(out)
    })
}

fn which(repo: &Repo<SqliteStore>, patient: Option<&PatientId>) -> Result<Vec<PatientId>> {
    Ok(match patient {
        Some(p) => vec![p.clone()],
        None => stored_patients(repo)?.into_iter().collect(),
    })
}

/// A nurse's acknowledgement, as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AckShown {
    pub event: RecordId,
    pub author: Author,
    pub at: Timestamp,
    pub comment: Option<String>,
    pub covers: Vec<RecordId>,
}

impl From<Acknowledgement> for AckShown {
    fn from(a: Acknowledgement) -> Self {
        Self {
            event: a.event,
            author: a.author,
            at: a.at,
            comment: a.comment,
            covers: a.covers,
        }
    }
}

/// A safety flag, as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlagShown {
    pub patient: PatientId,
    pub id: String,
    /// `double-dose`, `superseded-order`, or `time-uncertain` ("time uncertain, review": a
    /// dose on an order version a concurrent later one may have replaced, where only a clock
    /// known to be off could tell).
    pub kind: &'static str,
    pub order: RecordId,
    pub slot: Option<String>,
    pub open: bool,
    pub document: DocumentId,
    pub evidence: Vec<RecordId>,
    pub acknowledgements: Vec<AckShown>,
}

impl FlagShown {
    fn new(patient: &PatientId, f: Flag) -> Self {
        let (kind, order, slot) = match f.kind {
            FlagKind::PossibleDoubleDose { order, slot } => ("double-dose", order, Some(slot)),
            FlagKind::GivenOnSupersededOrder { order, .. } => ("superseded-order", order, None),
            FlagKind::SupersededOrderTimeUncertain { order, .. } => ("time-uncertain", order, None),
        };
        Self {
            patient: patient.clone(),
            id: f.id,
            kind,
            order,
            slot,
            open: f.open,
            document: f.document,
            evidence: f.evidence,
            acknowledgements: f.acknowledgements.into_iter().map(Into::into).collect(),
        }
    }
}

/// Every flag, open or acknowledged, of `patient` or of everyone on this device.
pub fn flags(device: &Device, patient: Option<&PatientId>) -> Result<Vec<FlagShown>> {
    device.check_lease(crate::now())?;
    device.with_repo(|repo| {
        let mut out = Vec::new();
        for p in which(repo, patient)? {
            DeviceSession::log_read(repo, &p, "flags", crate::now())?;
            let chart = repo.chart(&p, &[])?;
            out.extend(chart.flags().into_iter().map(|f| FlagShown::new(&p, f)));
        }
        Ok(out)
    })
}

/// A slot's status, as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum SlotView {
    Open,
    Given {
        administration: RecordId,
        by: Author,
    },
    NotGiven {
        administration: RecordId,
        reason: Option<String>,
    },
    SelfAdministered {
        administration: RecordId,
    },
    PossibleDoubleDose {
        administrations: Vec<RecordId>,
    },
}

impl From<SlotStatus> for SlotView {
    fn from(s: SlotStatus) -> Self {
        match s {
            SlotStatus::Open => SlotView::Open,
            SlotStatus::Given { administration, by } => SlotView::Given { administration, by },
            SlotStatus::NotGiven {
                administration,
                reason,
            } => SlotView::NotGiven {
                administration,
                reason,
            },
            SlotStatus::SelfAdministered { administration } => {
                SlotView::SelfAdministered { administration }
            }
            SlotStatus::PossibleDoubleDose { administrations } => {
                SlotView::PossibleDoubleDose { administrations }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntityShown {
    pub id: RecordId,
    pub value: RegisterShown,
    /// The entity's free text (a goal's or intervention's description, order instructions).
    pub text: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotShown {
    pub order: RecordId,
    pub slot: String,
    #[serde(flatten)]
    pub status: SlotView,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JournalEntry {
    pub document: DocumentId,
    pub id: RecordId,
    pub author: Author,
    pub at: Timestamp,
    pub body: EventBody,
    pub entered_in_error: bool,
}

/// A person's record as a care worker sees it today.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overview {
    pub patient: PatientId,
    pub display_name: Option<String>,
    pub resuscitation: RegisterShown,
    pub allergies: Vec<EntityShown>,
    pub risks: Vec<EntityShown>,
    pub goals: Vec<EntityShown>,
    pub interventions: Vec<EntityShown>,
    pub orders: Vec<EntityShown>,
    /// Today's medication slots and their status.
    pub today: Vec<SlotShown>,
    /// The latest journal entries (from last month's journal on, this month's and any later
    /// month's: a phone whose clock ran ahead files in the month it believed), newest first.
    pub journal: Vec<JournalEntry>,
    pub conflicts: Vec<ConflictShown>,
    pub open_flags: Vec<FlagShown>,
}

/// Picks the entities of one kind out of a document's registers, with their text field.
type EntityOf = fn(&Register) -> Option<(RecordId, Option<TextKey>)>;

/// Journal entries shown by [`overview`].
pub const RECENT_JOURNAL: usize = 20;

/// Everything `show` prints for `patient`.
pub fn overview(device: &Device, patient: &PatientId, clock: &Clock) -> Result<Overview> {
    device.check_lease(clock.now)?;
    device.log_read(patient, "overview")?;
    let month = clock.month()?;
    let last_month = if month.month() == 1 {
        Month::new(month.year() - 1, 12)?
    } else {
        Month::new(month.year(), month.month() - 1)?
    };
    device.with_repo(|repo| {
        let stored: BTreeSet<DocumentId> = repo
            .document_ids()?
            .into_iter()
            .filter(|d| d.patient() == patient)
            .collect();
        if stored.is_empty() {
            return Err(ClientError::Invalid(format!(
                "no documents for {patient} on this device (sync first?)"
            )));
        }
        let display_name = display_name(repo, patient)?;
        let header = DocumentId::patient_header(patient);
        let plan = DocumentId::care_plan(patient);
        let meds = DocumentId::medication(patient);
        let entities = |repo: &mut Repo<SqliteStore>,
                        doc: &DocumentId,
                        want: EntityOf|
         -> Result<Vec<EntityShown>> {
            let d = repo.get(doc)?;
            Ok(d.registers()
                .iter()
                .filter_map(|r| want(r).map(|(id, key)| (r, id, key)))
                .map(|(r, id, key)| EntityShown {
                    id,
                    value: d.register(r).into(),
                    text: key.and_then(|k| d.text(&k)),
                })
                .collect())
        };
        let resuscitation = repo.get(&header)?.register(&Register::Resuscitation).into();
        let allergies = entities(repo, &header, |r| match r {
            Register::Allergy(id) => Some((id.clone(), None)),
            _ => None,
        })?;
        let risks = entities(repo, &header, |r| match r {
            Register::Risk(id) => Some((id.clone(), None)),
            _ => None,
        })?;
        let goals = entities(repo, &plan, |r| match r {
            Register::Goal(id) => Some((id.clone(), Some(TextKey::GoalDescription(id.clone())))),
            _ => None,
        })?;
        let interventions = entities(repo, &plan, |r| match r {
            Register::Intervention(id) => Some((
                id.clone(),
                Some(TextKey::InterventionDescription(id.clone())),
            )),
            _ => None,
        })?;
        let orders = entities(repo, &meds, |r| match r {
            Register::Order(id) => Some((id.clone(), Some(TextKey::OrderInstructions(id.clone())))),
            _ => None,
        })?;

        // By their time, whichever month's journal holds them: last month's, this month's,
        // and any later one (a note from a phone whose clock ran ahead lands in next month's).
        let mut journal = Vec::new();
        let journals: Vec<DocumentId> = stored
            .iter()
            .filter(|d| d.kind() == DocKind::Journal && d.month().is_some_and(|m| m >= last_month))
            .cloned()
            .collect();
        for doc in journals {
            let d = repo.get(&doc)?;
            journal.extend(
                d.events()
                    .iter()
                    .map(|(id, ev): (&RecordId, &Event)| JournalEntry {
                        document: doc.clone(),
                        id: id.clone(),
                        author: ev.author.clone(),
                        at: ev.at,
                        body: ev.body.clone(),
                        entered_in_error: !d.entered_in_error(id).is_empty(),
                    }),
            );
        }
        journal.sort_by(|a, b| (b.at, &b.id).cmp(&(a.at, &a.id)));
        journal.truncate(RECENT_JOURNAL);

        let also = [DocumentId::administrations(patient, month)];
        let chart: Chart<'_> = repo.chart(patient, &also)?;
        let mut today = Vec::new();
        for o in &orders {
            // Slots of the current version; a conflicting order shows no slots (it cannot be
            // given until resolved).
            let RegisterShown::Value(RevisionShown {
                value: RegisterValue::Order(order),
                ..
            }) = &o.value
            else {
                continue;
            };
            let runs = order.start.as_str() <= clock.today.as_str()
                && order
                    .stop
                    .as_deref()
                    .is_none_or(|s| clock.today.as_str() <= s);
            if !runs {
                continue;
            }
            for t in &order.times {
                let slot = format!("{}T{t}", clock.today);
                today.push(SlotShown {
                    order: o.id.clone(),
                    status: chart.slot_status(&o.id, &slot).into(),
                    slot,
                });
            }
        }
        let conflicts = chart
            .conflicts()
            .into_iter()
            .map(|c| ConflictShown::new(patient, c))
            .collect();
        let open_flags = chart
            .flags()
            .into_iter()
            .filter(|f| f.open)
            .map(|f| FlagShown::new(patient, f))
            .collect();
        Ok(Overview {
            patient: patient.clone(),
            display_name,
            resuscitation,
            allergies,
            risks,
            goals,
            interventions,
            orders,
            today,
            journal,
            conflicts,
            open_flags,
        })
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ids_are_16_hex_digits_and_differ() {
        let a = new_id().unwrap();
        let b = new_id().unwrap();
        assert_eq!(a.as_str().len(), 16);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn order_input_needs_every_field_for_a_new_order() {
        let partial = OrderInput {
            drug: Some("Metoprolol".into()),
            ..Default::default()
        };
        let err = partial.build(None, Timestamp(0)).unwrap_err().to_string();
        assert!(err.contains("--dose") && err.contains("--times"), "{err}");
        let base = OrderInput {
            drug: Some("Metoprolol".into()),
            strength: Some("50 mg".into()),
            dose: Some("1 tablet".into()),
            route: Some("oral".into()),
            times: Some(vec!["08:00".into()]),
            start: Some("2026-11-01".into()),
            stop: None,
            delegated: Some(true),
        }
        .build(None, Timestamp(1))
        .unwrap();
        let revised = OrderInput {
            dose: Some("2 tablets".into()),
            ..Default::default()
        }
        .build(Some(&base), Timestamp(2))
        .unwrap();
        assert_eq!(revised.dose, "2 tablets");
        assert_eq!(revised.drug, "Metoprolol");
        assert!(revised.delegated);
        assert_eq!(revised.valid_from, Timestamp(2));
    }

    #[test]
    fn clock_months() {
        let c = Clock::new(Timestamp(0), "2026-11-24").unwrap();
        assert_eq!(c.month().unwrap().to_string(), "2026-11");
        assert!(Clock::new(Timestamp(0), "2026-1").is_err());
    }
}
