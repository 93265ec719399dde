//! A visit saved at its end: its tasks, notes, observations and doses written together, one
//! Automerge change per document (the month's journal, the slot month's administration log),
//! all in one store transaction: after a crash the store holds all of the visit or none of it.
//! One change instead of one per record saves about 95 bytes of header and hash per record on
//! the wire (`../shared/LIMITS.md`); a record saved on its own ([`add_note`], [`give`]) stays
//! its own change, durable on its own.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::*;

/// Most records in one visit (a visit's tasks, notes, observations and doses).
pub const MAX_VISIT_RECORDS: usize = 200;

/// What the app saves at a visit's end. In JSON (the CLI's `nara visit`):
/// `{"started_ms": 1764000000000, "tasks": [{"task": "shower", "done": true}],
/// "notes": ["..."], "observations": [{"code": "heart-rate", "value": 72, "unit": "/min"}],
/// "doses": [{"order": "o1", "slot": "2026-11-24T08:00", "outcome": "given"}]}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Visit {
    /// When the visit started (device ms); the end is the time of saving.
    #[serde(default)]
    pub started_ms: Option<i64>,
    #[serde(default)]
    pub tasks: Vec<VisitTask>,
    #[serde(default)]
    pub notes: Vec<String>,
    #[serde(default)]
    pub observations: Vec<VisitObservation>,
    #[serde(default)]
    pub doses: Vec<VisitDose>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VisitTask {
    pub task: String,
    pub done: bool,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VisitObservation {
    pub code: ObservationCode,
    pub value: f64,
    pub unit: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VisitDose {
    pub order: RecordId,
    /// `YYYY-MM-DDTHH:MM`.
    pub slot: String,
    pub outcome: AdministrationOutcome,
    #[serde(default)]
    pub reason: Option<String>,
    /// A second dose of a slot this device already shows given.
    #[serde(default)]
    pub again: bool,
    /// The drug matches an active allergy of the person and the worker confirmed it (without,
    /// such a dose refuses the whole visit with [`ClientError::AllergyWarning`]).
    #[serde(default)]
    pub allergy_confirmed: bool,
}

/// A saved visit: its id, every record written (in the order of the input: start, tasks,
/// notes, observations, stop, then doses), and how many changes it took (one per document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VisitSaved {
    pub visit: RecordId,
    pub records: Vec<Recorded>,
    pub changes: usize,
}

/// One record to write, and the order version a dose follows.
struct Planned {
    record: RecordId,
    body: EventBody,
    after: Option<RecordId>,
}

/// Saves `visit` for `patient`: every record checked first (a dose as [`give`] checks it), then
/// all written together, or nothing.
pub fn visit(
    device: &Device,
    patient: &PatientId,
    visit: &Visit,
    clock: &Clock,
) -> Result<VisitSaved> {
    let count =
        visit.tasks.len() + visit.notes.len() + visit.observations.len() + visit.doses.len();
    if count > MAX_VISIT_RECORDS {
        return Err(ClientError::Invalid(format!(
            "a visit of {count} records (at most {MAX_VISIT_RECORDS})"
        )));
    }
    let id = clock.new_id();
    let journal = DocumentId::journal(patient, clock.month()?);
    let mut plan: BTreeMap<DocumentId, Vec<Planned>> = BTreeMap::new();
    let mut order: Vec<DocumentId> = vec![journal.clone()];
    let mut add = |doc: &DocumentId, body: EventBody, after: Option<RecordId>| -> Result<()> {
        let record = clock.new_id();
        if !plan.contains_key(doc) && *doc != journal {
            order.push(doc.clone());
        }
        plan.entry(doc.clone()).or_default().push(Planned {
            record,
            body,
            after,
        });
        Ok(())
    };
    let start = Timestamp(visit.started_ms.unwrap_or(clock.now.0));
    add(
        &journal,
        EventBody::VisitStart {
            visit: id.clone(),
            occurred_at: start,
        },
        None,
    )?;
    for t in &visit.tasks {
        add(
            &journal,
            EventBody::TaskOutcome {
                visit: id.clone(),
                task: t.task.clone(),
                done: t.done,
                reason: t.reason.clone(),
                intervention: None,
            },
            None,
        )?;
    }
    for n in &visit.notes {
        if n.trim().is_empty() {
            return Err(ClientError::Invalid("a note needs some text".into()));
        }
        add(
            &journal,
            EventBody::Note {
                body: n.clone(),
                corrects: None,
            },
            None,
        )?;
    }
    for o in &visit.observations {
        if !o.value.is_finite() {
            return Err(ClientError::Invalid(format!(
                "{} is not a measurement",
                o.value
            )));
        }
        add(
            &journal,
            EventBody::Observation {
                code: o.code,
                value: o.value,
                unit: o.unit.clone(),
                occurred_at: clock.now,
            },
            None,
        )?;
    }
    add(
        &journal,
        EventBody::VisitStop {
            visit: id.clone(),
            occurred_at: clock.now,
        },
        None,
    )?;
    for d in &visit.doses {
        let (current, document) = check_dose(
            device,
            patient,
            &d.order,
            &d.slot,
            d.outcome,
            d.reason.as_deref(),
            d.again,
            d.allergy_confirmed,
            clock.now,
        )?;
        add(
            &document,
            EventBody::Administration {
                order: d.order.clone(),
                order_revision: current.revision.clone(),
                slot: d.slot.clone(),
                outcome: d.outcome,
                reason: d.reason.clone(),
                occurred_at: clock.now,
            },
            Some(current.revision),
        )?;
    }
    let changes = device.change_together(&order, clock.now, |doc, e| {
        let base = e.context().clone();
        for p in plan.get(doc).into_iter().flatten() {
            // A dose follows the order version it names: what this device held as current.
            let mut context = base.clone();
            context.after = p.after.iter().cloned().collect();
            e.set_context(context);
            e.record(p.record.clone(), p.body.clone())?;
        }
        Ok(())
    })?;
    let records = order
        .iter()
        .flat_map(|doc| {
            plan.get(doc).into_iter().flatten().map(|p| Recorded {
                document: doc.clone(),
                record: p.record.clone(),
            })
        })
        .collect();
    Ok(VisitSaved {
        visit: id,
        records,
        changes: changes.iter().flatten().count(),
    })
}
