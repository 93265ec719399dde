//! Medication: recording a slot's administration, writing an order or its next revision,
//! and resolving an order's conflict (nurse).

use super::*;
use sync_core::model::dose::{self, DoseError};

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
/// if this device already shows the dose given (the app asks before a second dose); and,
/// unless `allergy_confirmed`, if the drug matches an active allergy
/// ([`ClientError::AllergyWarning`]: the app warns and asks).
#[allow(clippy::too_many_arguments)] // the fields of one administration
pub fn give(
    device: &Device,
    patient: &PatientId,
    order: &RecordId,
    slot: &str,
    outcome: AdministrationOutcome,
    reason: Option<&str>,
    again: bool,
    allergy_confirmed: bool,
    clock: &Clock,
) -> Result<Administered> {
    let (current, _) = check_dose(
        device,
        patient,
        order,
        slot,
        outcome,
        reason,
        again,
        allergy_confirmed,
        clock.now,
    )?;
    write_administration(
        device, patient, order, current, slot, outcome, reason, clock,
    )
}

/// The checks of one dose before it is written at `now` ([`give`], a visit's doses): the
/// order's current revision and the administration log the slot's month writes to.
#[allow(clippy::too_many_arguments)] // the fields of one administration
pub(super) fn check_dose(
    device: &Device,
    patient: &PatientId,
    order: &RecordId,
    slot: &str,
    outcome: AdministrationOutcome,
    reason: Option<&str>,
    again: bool,
    allergy_confirmed: bool,
    now: Timestamp,
) -> Result<(CurrentOrder, DocumentId)> {
    dose::check_record(slot, outcome, reason).map_err(|e| dose_refused(order, e))?;
    let current = current_order(device, patient, order)?;
    let o = &current.value;
    dose::check_scheduled(o, slot).map_err(|e| dose_refused(order, e))?;
    if outcome == AdministrationOutcome::Given {
        super::round::check_delegation(device, patient, o, now)?;
    }
    if outcome != AdministrationOutcome::NotGiven {
        super::alerts::check_allergies(device, patient, &o.drug, allergy_confirmed)?;
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
    Ok((current, document))
}

/// The model's refusal of a dose ([`dose::check_record`], [`dose::check_scheduled`]) as the
/// device says it, naming the order and what to give instead.
fn dose_refused(order: &RecordId, e: DoseError) -> ClientError {
    ClientError::Invalid(match e {
        DoseError::BadSlot { .. } => e.to_string(),
        DoseError::NeedsReason => format!("{e} (--reason)"),
        DoseError::WhenNeeded => format!(
            "order {order} is \"when needed\": record its dose with give_when_needed (nara give \
             without --slot)"
        ),
        DoseError::NotAtThisTime { .. } | DoseError::NotOnThisDate { .. } => {
            format!("order {order} {e}")
        }
    })
}

/// Records a dose of a "when needed" order now, in the slot of the local time at
/// `utc_offset_minutes`. Refused without a valid delegation where one is needed, and past the
/// order's limits (a day's maximum, the minimum interval) unless `anyway` gives the reason:
/// such a dose is kept with that reason and flagged for the nurse. Like [`give`], refused with
/// [`ClientError::AllergyWarning`] unless `allergy_confirmed` if the drug matches an active
/// allergy.
pub fn give_when_needed(
    device: &Device,
    patient: &PatientId,
    order: &RecordId,
    anyway: Option<&str>,
    allergy_confirmed: bool,
    utc_offset_minutes: i32,
    clock: &Clock,
) -> Result<Administered> {
    let current = current_order(device, patient, order)?;
    let Some(rule) = current.value.prn else {
        return Err(ClientError::Invalid(format!(
            "order {order} is scheduled, not \"when needed\": give it with --slot"
        )));
    };
    super::round::check_delegation(device, patient, &current.value, clock.now)?;
    super::round::check_prn(device, patient, order, &rule, anyway, clock.now)?;
    super::alerts::check_allergies(device, patient, &current.value.drug, allergy_confirmed)?;
    let slot = sync_core::model::round::local_slot(clock.now, utc_offset_minutes);
    write_administration(
        device,
        patient,
        order,
        current,
        &slot,
        AdministrationOutcome::Given,
        anyway,
        clock,
    )
}

#[allow(clippy::too_many_arguments)] // the fields of one administration
fn write_administration(
    device: &Device,
    patient: &PatientId,
    order: &RecordId,
    current: CurrentOrder,
    slot: &str,
    outcome: AdministrationOutcome,
    reason: Option<&str>,
    clock: &Clock,
) -> Result<Administered> {
    let document = DocumentId::administrations(patient, month_of(slot)?);
    let record = clock.new_id();
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

pub(super) struct CurrentOrder {
    pub(super) revision: RecordId,
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
    /// Minutes either side of a slot's time within which it is on time (default 60).
    pub window_minutes: Option<u32>,
    /// Makes the order "when needed" with these limits (it then has no times).
    pub prn: Option<sync_core::model::PrnRule>,
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
        let prn = self.prn.or(base.and_then(|b| b.prn));
        let times = match (&self.times, base) {
            (Some(t), _) => t.clone(),
            (None, Some(b)) => b.times.clone(),
            (None, None) if prn.is_some() => Vec::new(),
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
            window_minutes: self.window_minutes.or(base.and_then(|b| b.window_minutes)),
            prn,
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
    let revision = clock.new_id();
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
    let revision = clock.new_id();
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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
            window_minutes: None,
            prn: None,
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
}
