//! Journal entries: signed notes and observations (vital signs), in the month's journal.

use super::*;

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
    let record = clock.new_id();
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
    let record = clock.new_id();
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
